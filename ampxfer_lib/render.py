"""Play audio through a model: exact, from the zero state, at the model's rate.

``render(weights, audio, knobs)`` is the one entry point; it picks the fastest path that
reproduces sequential processing (one LSTM pass over the whole file from a zero state).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .errors import ConfigError
from .model import ModelWeights


def model_input(audio: np.ndarray, knobs: Sequence[float], input_size: int) -> np.ndarray:
    """Stack the guitar signal and constant knob channels: (T,) -> (T, input_size) float32."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ConfigError(f"expected mono audio of shape (T,), got {audio.shape}")
    knobs = [float(k) for k in (knobs or ())]
    if len(knobs) != input_size - 1:
        raise ConfigError(
            f"the model takes {input_size - 1} knob value(s) but {len(knobs)} were given"
            + ("; pass --knob V for each knob (0..1)" if input_size > 1 else "; drop --knob")
        )
    x = np.empty((audio.shape[0], input_size), dtype=np.float32)
    x[:, 0] = audio
    for i, k in enumerate(knobs):
        x[:, i + 1] = k
    return x


def render_sequential(weights: ModelWeights, audio: np.ndarray, knobs: Sequence[float] = (),
                      threads: Optional[int] = None) -> np.ndarray:
    """Reference path: one ``nn.LSTM`` call over the whole file. (T,) -> (T,) float32."""
    x = model_input(audio, knobs, weights.config.input_size)
    model = weights.to_module().eval()
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            y = model(torch.from_numpy(x)[None])[0, :, 0]
    finally:
        if threads:
            torch.set_num_threads(old_threads)
    return y.numpy().astype(np.float32, copy=True)


def render(weights: ModelWeights, audio: np.ndarray, knobs: Sequence[float] = ()) -> np.ndarray:
    """Render ``audio`` (T,) through the model; returns (T,) float32 at the model's rate."""
    return render_sequential(weights, audio, knobs)
