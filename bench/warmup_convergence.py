"""How long must a chunk warm up before its LSTM state matches sequential processing?

For every shared capture (knob models at knob 0, 0.5 and 1) and two seeded random models
(hidden 20 and 40, capture-like scale), on the real DI clips joined: at boundaries every
``--every`` seconds, start one copy of the model from the true sequential state and one from
the zero state ``--max-warmup`` samples before the boundary, run both side by side, and
record how many samples the zero-state copy needs until its state agrees with the true one
for good (checked every ``--block`` samples) to within STATE_TOL (the tolerance the chunked
renderer checks) and to within 1e-6, and how far apart the two copies still are at the end of
the window ("floor": two float32 trajectories never merge bit for bit; for comparison, the
PyTorch reference and the compiled kernel, both exact, differ by up to about 2.5e-6 in state
on this material).

``--sweep`` measures what matters in the end instead: the chunked renderer's ESR against
the PyTorch reference and how many chunks it had to re-render, on ``--sweep-seconds`` of the
DI in 32 chunks, for each warm-up length and state tolerance in the grid (and the one-pass
compiled kernel's ESR, the floor any float32 implementation reaches).

``render.DEFAULT_WARMUP`` and ``render.STATE_TOL`` are chosen from these two tables.
Usage: python bench/warmup_convergence.py [--every 2] [--max-warmup 32768] [--block 32]
       python bench/warmup_convergence.py --sweep [--sweep-seconds 60]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realdata import RATE, guitar_di, real_model_paths, seeded_model  # noqa: E402

from ampxfer_lib.model import render_kernels as K  # noqa: E402
from ampxfer_lib.model import render as R  # noqa: E402
from ampxfer_lib.model.formats import load_model  # noqa: E402
from ampxfer_lib.model.render import STATE_TOL, pack_model  # noqa: E402
from ampxfer_lib.training.losses import esr_numpy  # noqa: E402

SWEEP_WARMUPS = (2048, 4096, 8192, 16384)
SWEEP_TOLS = (1e-5, 1e-4, 1e-3)


def agree(h_a, c_a, h_b, c_b, tol):
    return (np.all(np.abs(h_a - h_b) <= tol * np.maximum(1, np.abs(h_b)))
            and np.all(np.abs(c_a - c_b) <= tol * np.maximum(1, np.abs(c_b))))


def study(packed, x, every: int, max_warmup: int, block: int):
    """-> dict tol -> array of samples needed per boundary (max_warmup+1 = not converged)."""
    Hp, Hq = packed.Hp, packed.Hq
    args = (packed.skipf, packed.w_in, packed.bias[0], packed.w_hhT, packed.g_rows, packed.head_w,
            packed.head_b)
    y = np.empty_like(x)
    starts = list(range(every, x.size - max_warmup - 1, every))
    h, c = np.zeros(Hp, np.float32), np.zeros(Hq, np.float32)
    sh, sc = np.zeros((1, Hp), np.float32), np.zeros((1, Hq), np.float32)  # unused checkpoint
    pos, true_states = 0, []
    for s in starts:  # the exact state at each start, from one sequential pass
        K.lstm_one(x, y, pos, pos, s - pos, *args, h, c, 1 << 30, sh, sc)
        pos = s
        true_states.append((h.copy(), c.copy()))
    tols = {"tol": STATE_TOL, "1e-6": 1e-6}
    needed = {k: [] for k in tols}
    floor = []
    for s, (ht, ct) in zip(starts, true_states):
        ht, ct = ht.copy(), ct.copy()
        hz, cz = np.zeros(Hp, np.float32), np.zeros(Hq, np.float32)
        last_bad = {k: 0 for k in tols}
        for b0 in range(0, max_warmup, block):
            K.lstm_one(x, y, s + b0, s + max_warmup, block, *args, ht, ct, 1 << 30, sh, sc)
            K.lstm_one(x, y, s + b0, s + max_warmup, block, *args, hz, cz, 1 << 30, sh, sc)
            for k, tol in tols.items():
                if not agree(hz, cz, ht, ct, tol):
                    last_bad[k] = b0 + block
        floor.append(max(np.abs(hz - ht).max(), (np.abs(cz - ct) / np.maximum(1, np.abs(ct))).max()))
        for k in tols:
            # a copy that still disagrees in the last block never converged within max_warmup
            needed[k].append(max_warmup + 1 if last_bad[k] >= max_warmup else last_bad[k])
    out = {k: np.asarray(v) for k, v in needed.items()}
    out["floor"] = np.asarray(floor)
    return out


def sweep(models, x, seconds: float) -> None:
    """Chunked ESR vs the reference and re-render count over the (warm-up, tolerance) grid."""
    import torch

    torch.set_num_threads(1)
    x = x[: int(seconds * RATE)]
    print(f"\nchunked render of {x.size / RATE:.0f} s in 32 chunks: ESR vs render_sequential / "
          f"chunks re-rendered (of 31), per warm-up W and state tolerance")
    head = " ".join(f"{'W%d tol%g' % (w, t):>15s}" for w in SWEEP_WARMUPS for t in SWEEP_TOLS)
    print(f"{'model':44s} {'one pass':>9s} {head}")
    worst = {}
    saved = R.STATE_TOL
    try:
        for name, w, knobs in models:
            ref = R.render_sequential(w, x, knobs, segment=1 << 20)
            cells = [f"{esr_numpy(R.render(w, x, knobs, method='numba'), ref):9.1e}"]
            for warm in SWEEP_WARMUPS:
                for tol in SWEEP_TOLS:
                    R.STATE_TOL = tol
                    stats = {}
                    e = esr_numpy(R.render(w, x, knobs, method="chunked", threads=1, chunks=32, warmup=warm, stats=stats), ref)
                    n = len(stats["rerendered"])
                    old = worst.get((warm, tol), (0.0, 0))
                    worst[(warm, tol)] = (max(old[0], e), old[1] + n)
                    cells.append(f"{e:10.1e}/{n:2d}  ")
            print(f"{name:44s} {' '.join(cells)}", flush=True)
    finally:
        R.STATE_TOL = saved
    print("worst ESR / total re-rendered chunks per setting:")
    for (warm, tol), (e, n) in worst.items():
        print(f"  W={warm:5d} tol={tol:g}: worst ESR {e:.1e}, {n} chunks re-rendered of {31 * len(models)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--every", type=float, default=2.0, help="seconds between boundaries")
    ap.add_argument("--max-warmup", type=int, default=32768)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--limit", type=int, default=0, help="only the first N models (quick look)")
    ap.add_argument("--sweep", action="store_true", help="ESR/re-renders over the warm-up x tolerance grid")
    ap.add_argument("--sweep-seconds", type=float, default=60.0)
    a = ap.parse_args(argv)
    x, desc = guitar_di()
    print(f"audio: {desc}")
    models = []
    for p in real_model_paths():
        w = load_model(p)
        name = f"{p.parent.name}/{p.stem}"
        if w.config.input_size == 1:
            models.append((name, w, ()))
        else:
            models += [(f"{name} knob={k}", w, (k,) * (w.config.input_size - 1)) for k in (0.0, 0.5, 1.0)]
    if not models:
        print("note: no real captures found; only seeded models")
    models += [("seeded h20", seeded_model(20, seed=1), ()), ("seeded h40", seeded_model(40, seed=2), ())]
    if a.limit:
        models = models[: a.limit]
    if a.sweep:
        sweep(models, x, a.sweep_seconds)
        return 0
    every = int(a.every * RATE)
    print(f"boundaries every {a.every} s, warm-up window {a.max_warmup} samples, checked every "
          f"{a.block}; samples needed until the state agrees for good (median / 99% / max)")
    print(f"{'model':44s} {'n':>4s} {'STATE_TOL=%g' % STATE_TOL:>22s} {'1e-6':>22s} {'floor med/max':>18s}")
    worst = {"tol": 0, "1e-6": 0, "floor": 0.0}
    t0 = time.time()
    for name, w, knobs in models:
        r = study(pack_model(w, [knobs]), x, every, a.max_warmup, a.block)
        cells = []
        for k in ("tol", "1e-6"):
            v = r[k]
            worst[k] = max(worst[k], int(v.max()))
            fmt = lambda n: ">max" if n > a.max_warmup else str(int(n))  # noqa: E731
            cells.append(f"{fmt(np.median(v))} / {fmt(np.quantile(v, 0.99))} / {fmt(v.max())}")
        worst["floor"] = max(worst["floor"], float(r["floor"].max()))
        fl = f"{np.median(r['floor']):.1e}/{r['floor'].max():.1e}"
        print(f"{name:44s} {len(r['tol']):4d} {cells[0]:>22s} {cells[1]:>22s} {fl:>18s}", flush=True)
    fmt = lambda n: f">{a.max_warmup}" if n > a.max_warmup else str(n)  # noqa: E731
    print(f"worst case over all models and boundaries: {fmt(worst['tol'])} samples to STATE_TOL, "
          f"{fmt(worst['1e-6'])} to 1e-6; largest floor {worst['floor']:.1e} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
