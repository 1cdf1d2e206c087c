"""Real material for the benchmarks: the shared DI clips and captures, with fallbacks.

The shared folder (``<repo>/../shared/realdata``, read only) is absent on most machines; every
loader then returns synthetic or seeded material and says so, so the scripts still run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

# <repo>/../shared/realdata; AMPXFER_REALDATA overrides it (e.g. from a git worktree).
REALDATA = Path(os.environ.get("AMPXFER_REALDATA")
                or Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata")
RATE = 44100


def guitar_di(seconds: Optional[float] = None, seed: int = 0) -> Tuple[np.ndarray, str]:
    """(T,) float32 at 44.1 kHz and a description: the DI clips joined, or synthetic guitar."""
    di = REALDATA / "di"
    files = sorted(di.glob("*.flac")) if di.is_dir() else []
    if files:
        import soundfile as sf
        import soxr

        parts = []
        for f in files:
            a, sr = sf.read(str(f), dtype="float32", always_2d=True)
            parts.append(soxr.resample(a.mean(axis=1), sr, RATE, quality="HQ").astype(np.float32))
        x = np.concatenate(parts)
        desc = f"{len(files)} real DI clips joined ({x.size / RATE:.0f} s, 48k->44.1k soxr)"
        if seconds is not None:
            reps = int(np.ceil(seconds * RATE / x.size))
            x = np.tile(x, reps)[: int(seconds * RATE)]
            desc += f", first {seconds:.0f} s" + (" (looped)" if reps > 1 else "")
        return x, desc
    print(f"note: {di} not found; using synthetic guitar-like audio instead of real DI")
    seconds = 30.0 if seconds is None else seconds
    return synthetic_guitar(seconds, seed), f"synthetic guitar-like audio ({seconds:.0f} s)"


def synthetic_guitar(seconds: float, seed: int = 0) -> np.ndarray:
    """Plucked notes: decaying harmonic tones at random pitches, onsets and levels, plus noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    x = np.zeros(n, dtype=np.float64)
    t = 0
    while t < n:
        dur = int(rng.uniform(0.15, 1.2) * RATE)
        f0 = 82.4 * 2 ** (rng.integers(0, 36) / 12)
        tt = np.arange(min(dur, n - t)) / RATE
        env = np.exp(-tt * rng.uniform(2, 8)) * rng.uniform(0.05, 0.6)
        note = sum(np.sin(2 * np.pi * f0 * h * tt + rng.uniform(0, 6.3)) / h ** 1.3 for h in range(1, 9))
        x[t:t + tt.size] += env * note
        t += int(dur * rng.uniform(0.5, 1.0))
    x += 1e-4 * rng.standard_normal(n)
    return (x / max(1e-9, np.abs(x).max()) * 0.7).astype(np.float32)


def real_model_paths() -> List[Path]:
    models = REALDATA / "models"
    return sorted(models.rglob("*.json")) if models.is_dir() else []


def seeded_model(hidden_size: int, input_size: int = 1, seed: int = 0):
    """A seeded random model with capture-like weights (see ``scaled_like_captures``)."""
    from ampxfer_lib.model.network import new_model
    from ampxfer_lib.model.weights import ModelConfig

    cfg = ModelConfig(input_size=input_size, hidden_size=hidden_size)
    return scaled_like_captures(new_model(cfg, seed=seed).weights(), seed)


def scaled_like_captures(weights, seed: int = 0):
    """Redraw the weights with the spread of trained hidden-20 captures.

    Measured over the 34 shared captures (NeuralPi + Tone Library): recurrent weights std
    0.14-0.32 (mean 0.2), input weights std 0.2-0.9 (0.4), gate biases std 0.4-1.6 with the
    forget-gate biases mostly positive (mean +0.9, so the cells remember for a while), dense
    weights std 0.2-0.8 (0.45). Recurrent and dense weights shrink with sqrt(20/H) so a
    wider model keeps the captures' gain. This matches the captures' weight statistics, not
    their memory: trained captures forget in 300-8000 samples, such random models in about
    150 (bench/warmup_convergence.py), so chunked-render re-render counts for them are
    optimistic; the speed of a render does not depend on it.
    """
    from ampxfer_lib.model.weights import ModelWeights

    rng = np.random.default_rng(seed)
    H = weights.config.hidden_size
    C = weights.config.input_size
    shrink = np.sqrt(20 / H)
    b = rng.standard_normal(4 * H) * 0.7
    b[H:2 * H] += 0.9
    p = {
        "rec.weight_ih_l0": rng.standard_normal((4 * H, C)) * 0.4,
        "rec.weight_hh_l0": rng.standard_normal((4 * H, H)) * 0.2 * shrink,
        "rec.bias_ih_l0": b,
        "rec.bias_hh_l0": np.zeros(4 * H),
        "lin.weight": rng.standard_normal((1, H)) * 0.45 * shrink,
        "lin.bias": rng.standard_normal(1) * 0.01,
    }
    p = {k: v.astype(np.float32) for k, v in p.items()}
    return ModelWeights(weights.config, p, {"name": f"seeded random h{H} (capture-like scale)"})
