"""Matching a starting model to the target's level and polarity before fine-tuning.

A capture's output level and polarity are arbitrary (the interface gain, a re-amp box, an
inverting stage), so another device's model, however similar its sound, usually starts far from
the target: on real gear its first validation loss was above a random start's (1.4 and 3.3
against 0.9-1.0, issue 11). Two closed-form fixes, both on the model's dense layer only, so the
LSTM (what transfer is for) is untouched; with the skip connection, ``y = x + w.h + b``, they
fit the residual ``r = y - x`` (without it, ``r = y``):

* ``gain``: ``r ~ a * (w.h + b) + c``: one scale (sign included) and one offset, least squares;
* ``refit``: ``r ~ w'.h + b'``: the whole dense layer refitted by (lightly ridged) least squares
  on the model's own LSTM features, as ``rank``'s ``esr_head_refit`` score does.

``refit`` is never worse than ``gain`` on the fitted audio (``gain`` is a special case of it),
and neither is worse than the unchanged model. Features come from ``chunks`` stretches spread
evenly over the training audio, each after an unscored warm-up from a zero state (how the
model plays a file), so the fit costs a second or two, not a pass over the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np
import torch

from ampxfer_lib.errors import ConfigError
from ampxfer_lib.model.network import AmpLSTM
from ampxfer_lib.training.losses import esr_numpy
from ampxfer_lib.model.weights import ModelWeights

METHODS = ("none", "gain", "refit")


@dataclass(frozen=True)
class Stretches:
    """Stretches of training audio, batched: ``x`` (B, W+L, C), ``y`` (B, W+L); the first W samples warm up."""

    x: np.ndarray
    y: np.ndarray
    warmup: int


def spread_stretches(sections: Sequence, rate: int, seconds: float = 30.0, chunks: int = 16,
                     warmup_seconds: float = 0.1) -> Stretches:
    """``chunks`` equal stretches (warm-up included) spread evenly over ``sections``' audio.

    ``sections``: objects with ``input`` (T, C) and ``target`` (T,) (the data's sections of a
    split and subset). The stretches are shared out over the sections in proportion to their
    length; a section too short for a stretch plus its warm-up gives none.
    """
    warm = int(round(warmup_seconds * rate))
    length = max(1, int(round(seconds * rate / chunks)))
    total = sum(len(s.target) for s in sections)
    xs, ys = [], []
    for s in sections:
        n = len(s.target)
        if n < warm + length:
            continue
        k = max(1, int(round(chunks * n / total)))
        # A section shorter than k stretches is scored as one contiguous run instead.
        k = min(k, (n - warm) // length)
        for start in np.linspace(0, n - warm - length, k).round().astype(int):
            xs.append(s.input[start:start + warm + length])
            ys.append(s.target[start:start + warm + length])
    if not xs:
        raise ConfigError("the training audio is too short to match the starting model's level "
                          f"(needs {(warm + length) / rate:.2f} s in one piece)")
    return Stretches(np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32), warm)


@torch.no_grad()
def lstm_features(weights: ModelWeights, x: np.ndarray) -> np.ndarray:
    """The LSTM's hidden states from a zero state: x (B, T, C) -> (B, T, H) float64."""
    model = AmpLSTM.from_weights(weights).eval()
    hidden, _ = model.rec(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return hidden.double().numpy()


def least_squares(a: np.ndarray, r: np.ndarray, ridge: float) -> np.ndarray:
    """argmin_c |a c - r|^2 + ridge * trace(a'a)/k * |c|^2 for a (N, k), r (N,): (k,) float64.

    The ridge is relative to the mean diagonal of a'a, so it does not depend on the level of
    the features; it keeps the weights of dead (constant) features at zero instead of letting
    them blow up, which a fine-tune would then have to undo.
    """
    gram = a.T @ a
    k = gram.shape[0]
    scale = float(np.trace(gram)) / k if k else 0.0
    return np.linalg.solve(gram + ridge * scale * np.eye(k), a.T @ r)


def match_level(weights: ModelWeights, stretches: Stretches, method: str = "refit",
                ridge: float = 1e-4) -> Tuple[ModelWeights, Dict[str, float]]:
    """``weights`` with its dense layer fitted to the target (see the module docstring).

    Returns the new weights and what was done: ``method``, ``esr_before`` and ``esr_after`` (plain
    ESR on the stretches after their warm-up), and for ``gain`` the fitted ``gain`` and ``offset``.
    ``none`` returns ``weights`` itself.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown level matching {method!r}; one of {', '.join(METHODS)}")
    w = stretches.warmup
    x = stretches.x[:, w:, 0].astype(np.float64).ravel()
    y = stretches.y[:, w:].astype(np.float64).ravel()
    hidden = lstm_features(weights, stretches.x)[:, w:].reshape(len(x), -1)
    lin_w = weights.params["lin.weight"].astype(np.float64)[0]  # (H,)
    lin_b = float(weights.params["lin.bias"][0])
    skip = x if weights.config.skip else 0.0
    dense = hidden @ lin_w + lin_b
    before = esr_numpy(dense + skip, y)
    info: Dict[str, float] = {"method": method, "esr_before": before}
    if method == "none":
        info["esr_after"] = before
        return weights, info
    r = y - skip
    if method == "gain":
        a, c = least_squares(np.stack([dense, np.ones_like(dense)], axis=1), r, ridge=0.0)
        new_w, new_b = a * lin_w, a * lin_b + c
        info.update(gain=float(a), offset=float(c))
    else:
        coef = least_squares(np.concatenate([hidden, np.ones((len(x), 1))], axis=1), r, ridge)
        new_w, new_b = coef[:-1], coef[-1]
    info["esr_after"] = esr_numpy(hidden @ new_w + new_b + skip, y)
    params = dict(weights.params)
    params["lin.weight"] = np.asarray(new_w, dtype=np.float32)[None, :]
    params["lin.bias"] = np.asarray([new_b], dtype=np.float32)
    return ModelWeights(weights.config, params), info
