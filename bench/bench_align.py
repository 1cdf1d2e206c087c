"""Run time of latency detection on a 3-minute take at 44.1 kHz, side by side with a plain
full-length FFT cross-correlation of the same pair (the naive method it replaces).

Uses the real DI clips from ../shared/realdata (looped to 3 minutes) when present, else a
synthetic plucked take. Prints seconds per call (first call and best of 5) and ratios.

    .venv/bin/python bench/bench_align.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.signal

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from ampxfer_lib.data.align import estimate_latency  # noqa: E402

RATE = 44100
SECONDS = 180
REALDATA = Path(os.environ.get("AMPXFER_REALDATA") or REPO.parent / "shared" / "realdata")


def take() -> tuple:
    clips = sorted((REALDATA / "di").glob("*.flac"))
    if clips:
        import soundfile as sf
        import soxr
        parts = [soxr.resample(sf.read(str(p), always_2d=True)[0][:, 0], 48000, RATE, quality="VHQ")
                 for p in clips]
        return np.resize(np.concatenate(parts), SECONDS * RATE), "real DI (looped)"
    from test_align import pluck_take
    return pluck_take(SECONDS), "synthetic plucked take"


def device(x: np.ndarray) -> np.ndarray:
    b, a = scipy.signal.butter(2, 5000, fs=RATE)
    return np.concatenate([np.zeros(123), scipy.signal.lfilter(b, a, np.tanh(20 * x))])


def naive_xcorr(x: np.ndarray, y: np.ndarray, window: int) -> int:
    n = 1 << int(np.ceil(np.log2(len(x) + len(y))))
    c = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n)), n)
    lags = np.arange(-window, window + 1)
    return int(lags[np.argmax(np.abs(c[lags % n]))])


def timed(fn, repeats: int = 5):
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    best = first
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return out, first, best


def main() -> None:
    x, what = take()
    y = device(x)
    est, first, best = timed(lambda: estimate_latency(x, y, RATE))
    lag, nfirst, nbest = timed(lambda: naive_xcorr(x, y, int(0.2 * RATE)))
    print(f"{SECONDS} s of {what} at {RATE} Hz, device with a pure delay of 123 samples")
    print(f"estimate_latency: {est.samples} samples (xcorr peak {est.xcorr_lag}), "
          f"first call {first:.3f} s, best {best:.3f} s, {SECONDS / best:.0f}x real time")
    print(f"plain full-length cross-correlation: peak {lag}, first call {nfirst:.3f} s, best {nbest:.3f} s")
    print(f"ratio estimate_latency / plain cross-correlation: {best / nbest:.2f}")


if __name__ == "__main__":
    main()
