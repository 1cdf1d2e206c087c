"""Shared fixtures: seconds of synthetic guitar-like audio and a toy stateful device.

The full guitar synthesiser and virtual devices live in the library (sample data); the
tests here use a tiny, fast stand-in so every test module stays within seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.signal as ss
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
# AMPXFER_REALDATA points elsewhere (e.g. from a git worktree whose parent has no shared/).
REALDATA = Path(os.environ.get("AMPXFER_REALDATA") or REPO.parent / "shared" / "realdata")
# The library never guesses where the real data is: tell it (and the notebook kernels and
# subprocesses the tests start) through the environment.
if REALDATA.is_dir():
    os.environ.setdefault("AMPXFER_REALDATA", str(REALDATA))

# Tests run single-threaded like training runs; two pytest workers would otherwise fight.
torch.set_num_threads(1)


def realdata_or_skip() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"{REALDATA} is absent (real data is optional)")
    return REALDATA


def plucked_notes(seconds: float, rate: int = 44100, seed: int = 0, level: float = 0.5) -> np.ndarray:
    """Decaying harmonic notes at random times and pitches: (T,) float64, peak = level."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    x = np.zeros(n)
    t_note = np.arange(int(1.5 * rate)) / rate
    for _ in range(max(1, int(seconds * 3))):
        start = int(rng.integers(0, max(1, n - rate // 4)))
        f0 = rng.uniform(82.0, 660.0)
        note = np.zeros_like(t_note)
        for h in range(1, 7):
            note += rng.uniform(0.2, 1.0) / h * np.sin(2 * np.pi * h * f0 * t_note + rng.uniform(0, 2 * np.pi))
        note *= np.exp(-t_note * rng.uniform(2.0, 6.0)) * rng.uniform(0.2, 1.0)
        m = min(len(note), n - start)
        x[start:start + m] += note[:m]
    return level * x / np.max(np.abs(x))


def toy_device(x: np.ndarray, rate: int = 44100, drive: float = 6.0, delay: int = 0,
               cutoff: float = 4000.0) -> np.ndarray:
    """High-pass -> tanh -> low-pass, then a pure delay: stateful and causal."""
    b, a = ss.butter(1, 120.0 / (rate / 2), "high")
    y = np.tanh(drive * ss.lfilter(b, a, x))
    b, a = ss.butter(2, cutoff / (rate / 2))
    y = 0.4 * ss.lfilter(b, a, y)
    if delay:
        y = np.concatenate([np.zeros(delay), y[:-delay]])
    return y


def write_pair(folder: Path, seconds: float = 8.0, rate: int = 44100, seed: int = 0, name: str = "dev",
               subtype: str = "PCM_24", **device) -> tuple:
    folder.mkdir(parents=True, exist_ok=True)
    x = plucked_notes(seconds, rate, seed)
    y = toy_device(x, rate, **device)
    xin, tgt = folder / f"{name}_di.wav", folder / f"{name}_out.wav"
    sf.write(xin, x, rate, subtype=subtype)
    sf.write(tgt, y, rate, subtype=subtype)
    return xin, tgt


SMALL_SPLITS = ["--val-seconds", "1.5", "--test-seconds", "1", "--limited-seconds", "2"]


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    """A prepared data folder: ~5.5 s of training audio from the toy device."""
    from ampxfer_lib.cli.main import main

    root = tmp_path_factory.mktemp("small")
    xin, tgt = write_pair(root / "rec", seconds=8.0)
    assert main(["prepare", "--input", str(xin), "--target", str(tgt), "--out", str(root / "data")] + SMALL_SPLITS) == 0
    return root / "data"


@pytest.fixture(scope="session")
def small_data_b(tmp_path_factory):
    """Same notes through a similar but harder device (more drive, darker): a transfer target."""
    from ampxfer_lib.cli.main import main

    root = tmp_path_factory.mktemp("small_b")
    xin, tgt = write_pair(root / "rec", seconds=8.0, drive=12.0, cutoff=3000.0)
    assert main(["prepare", "--input", str(xin), "--target", str(tgt), "--out", str(root / "data")] + SMALL_SPLITS) == 0
    return root / "data"


def file_hashes(*paths) -> dict:
    from ampxfer_lib.fileio import sha256_file

    return {os.fspath(p): sha256_file(p) for p in paths}
