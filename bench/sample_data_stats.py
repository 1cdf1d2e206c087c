"""Measure the sample data: render time, committed size, levels, pair ESR, DI realism.

Run: .venv/bin/python bench/sample_data_stats.py [--render-time]
Compares the synthesised DI with the real DI clips in ../shared/realdata/di when present.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ampxfer_lib.sample_data import files as sd  # noqa: E402
from ampxfer_lib.sample_data.devices import DEVICES, PAIRS, render_device  # noqa: E402

# <repo>/../shared in the main checkout; a git worktree one level deeper sees it at ../../shared
REAL_DI = next((p for p in (ROOT / ".." / "shared" / "realdata" / "di",
                            ROOT / ".." / ".." / "shared" / "realdata" / "di") if p.is_dir()),
               ROOT / ".." / "shared" / "realdata" / "di")


def stats(x: np.ndarray, sr: int) -> str:
    x = x.astype(np.float64)
    peak = 20 * np.log10(np.abs(x).max())
    rms = 10 * np.log10(np.mean(x ** 2))
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / sr)
    centroid = (f * spec).sum() / spec.sum()
    w = sr // 20
    n = x.size // w
    win = 10 * np.log10(np.mean(x[: n * w].reshape(n, w) ** 2, axis=1) + 1e-24)
    bands = [(0, 100), (100, 300), (300, 1000), (1000, 3000), (3000, 6000), (6000, sr / 2)]
    tot = spec.sum()
    b = " ".join(f"{10 * np.log10(spec[(f >= lo) & (f < hi)].sum() / tot):6.1f}" for lo, hi in bands)
    return (f"peak {peak:6.1f} dBFS  rms {rms:6.1f} dBFS  crest {peak - rms:5.1f} dB  centroid "
            f"{centroid:5.0f} Hz  50ms-rms p10/p50/p90 {np.percentile(win, 10):6.1f} "
            f"{np.percentile(win, 50):6.1f} {np.percentile(win, 90):6.1f}  bands(dB) {b}")


def thd(name: str, f: float, amp: float = 0.1, sr: int = 48000) -> tuple:
    t = np.arange(int(1.5 * sr)) / sr
    y = render_device(name, amp * np.sin(2 * np.pi * f * t), sr)[sr // 2:].astype(np.float64)
    s = np.abs(np.fft.rfft(y * np.blackman(sr)))
    h = np.array([s[int(k * f)] for k in range(1, 11)])
    return float(np.sqrt(np.sum(h[1:] ** 2)) / h[0]), float(h[1] / h[0]), float(h[2] / h[0])


def esr(t: np.ndarray, s: np.ndarray) -> float:
    g = (t @ s) / (s @ s)
    return float(np.sum((t - g * s) ** 2) / np.sum(t ** 2))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--render-time", action="store_true", help="time a full fresh render")
    args = p.parse_args()
    committed = [q for q in sd.CHECKOUT_SAMPLE_DIR.rglob("*") if q.is_file() and "rendered" not in q.parts]
    print(f"committed: {sum(q.stat().st_size for q in committed) / 1e6:.2f} MB in {len(committed)} files")
    if args.render_time:
        from ampxfer_lib.sample_data.guitar_synth import synth_di

        t0 = time.perf_counter()
        synth_di(sd.SECONDS, sd.SAMPLE_RATE, sd.SEED)
        print(f"synth_di(210 s): {time.perf_counter() - t0:.1f} s")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / sd.DI_NAME).write_bytes((sd.CHECKOUT_SAMPLE_DIR / sd.DI_NAME).read_bytes())
            t0 = time.perf_counter()
            sd.ensure_sample_data(tmp, progress=False)
            print(f"render + verify all four recordings: {time.perf_counter() - t0:.1f} s")
    data = sd.ensure_sample_data(progress=False)
    di, sr = sf.read(str(data.di), dtype="float32")
    print(f"\nsynth DI   {stats(di, sr)}")
    if REAL_DI.is_dir():
        for path in sorted(REAL_DI.glob("*.flac")):
            x, r = sf.read(str(path), dtype="float32")
            print(f"{path.stem[:10]:10s} {stats(x if x.ndim == 1 else x[:, 0], r)}")
    outs = {}
    for name, path in data.targets.items():
        y, _ = sf.read(str(path), dtype="float32")
        outs[name] = y[data.latency_samples[name]:].astype(np.float64)
        print(f"{name:10s} {stats(y, sr)}")
    print()
    x = di.astype(np.float64)
    for src, tgt in PAIRS:
        n = min(outs[src].size, outs[tgt].size)
        print(f"ESR({tgt} | {src}, level-matched) = {esr(outs[tgt][:n], outs[src][:n]):.3f}   "
              f"ESR({tgt} | DI) = {esr(outs[tgt][:n], x[:n]):.3f}   "
              f"ESR({src} | DI) = {esr(outs[src][:n], x[:n]):.3f}")
    for name in DEVICES:
        for f in (220, 1000):
            t, h2, h3 = thd(name, f)
            print(f"{name:8s} sine {f:4d} Hz at -20 dBFS: THD {100 * t:5.1f} %  h2 {20 * np.log10(h2):6.1f} dB"
                  f"  h3 {20 * np.log10(h3):6.1f} dB")


if __name__ == "__main__":
    main()
