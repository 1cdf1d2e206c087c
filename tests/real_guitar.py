"""Short excerpts of the shared real DI guitar, for checks that need real playing.

Skips the calling test cleanly when ../shared/realdata is absent.
"""

from __future__ import annotations

import numpy as np

from conftest import realdata_or_skip


def real_guitar(seconds: float = 1.5, clip: str = "Mayer", offset: float = 2.0, rate: int = 44100) -> np.ndarray:
    """``seconds`` of a real DI clip from ``offset`` on, at ``rate``: (T,) float32."""
    from ampxfer_lib.data.audio import read_audio, resample

    path = realdata_or_skip() / "di" / f"{clip}.flac"
    audio = read_audio(path, None, role="input")
    x = resample(audio.samples, audio.sample_rate, rate)
    a = int(round(offset * rate))
    out = np.asarray(x[a:a + int(round(seconds * rate))], dtype=np.float32)
    assert len(out) == int(round(seconds * rate)) and np.sqrt(np.mean(out ** 2)) > 0.01, "excerpt is silent"
    return out


def shared_model(name: str):
    """A real-gear AGAM model from ../shared/realdata/models/neuralpi (skips when absent)."""
    from ampxfer_lib.model.formats import load_model

    return load_model(realdata_or_skip() / "models" / "neuralpi" / f"{name}.json")
