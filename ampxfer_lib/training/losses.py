"""Losses and the ESR metric: small functions of ``(pred, target)``, always in that order.

The error-to-signal ratio (ESR) and its pre-emphasised and DC companions are those of
A. Wright, E.-P. Damskägg and V. Välimäki, "Real-time black-box modelling with recurrent
neural networks", DAFx 2019, and A. Wright, E.-P. Damskägg, L. Juvela and V. Välimäki,
"Real-time guitar amplifier emulation with deep learning", Applied Sciences 10(3) 766, 2020
(the AGAM recipe); the pre-emphasis filter is discussed in A. Wright and V. Välimäki,
"Perceptual loss function for neural modeling of audio systems", ICASSP 2020::

    ESR = sum((y - p)^2) / sum(y^2)                          error-to-signal ratio
    DC  = mean_b(mean_t(y) - mean_t(p))^2 / mean(y^2)        DC error, relative

**Training losses** (torch): tensors of shape (B, T, 1) or (B, T), batch first, time on
axis 1; each returns a scalar tensor, computed over the whole batch at once, with
``eps = 1e-5`` added to the energy as in AGAM so a silent target cannot divide by zero.
The pre-emphasis filter H(z) = 1 - a z^-1 (a = 0.85) is a first-order high-pass that weights
the error towards the upper mids, where distortion lives.

**The metric** (numpy, :func:`esr_numpy`): plain ESR, no epsilon, no pre-emphasis, in
float64: what ``test_esr``, evaluation, model ranking and the listening notebook report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional, Tuple

import numpy as np
import torch

EPS = 1e-5
DEFAULT_PRE_EMPHASIS = 0.85


# --------------------------------------------------------------------------- training losses
def esr(pred: torch.Tensor, target: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Error-to-signal ratio mean((y - p)^2) / (mean(y^2) + eps) over all elements."""
    err = torch.mean(torch.square(target - pred))
    return err / (torch.mean(torch.square(target)) + eps)


def dc_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Squared difference of the per-sequence means (along time, axis 1), normalised by energy."""
    diff = torch.mean(target, dim=1) - torch.mean(pred, dim=1)
    return torch.mean(torch.square(diff)) / (torch.mean(torch.square(target)) + eps)


def pre_emphasis(x: torch.Tensor, coeff: float = DEFAULT_PRE_EMPHASIS) -> torch.Tensor:
    """First-order high-pass y[t] = x[t] - coeff * x[t-1] along axis 1; drops the first sample.

    (B, T, ...) -> (B, T - 1, ...). Dropping t = 0 (which has no predecessor) matches a
    valid-mode convolution, so no edge value is invented.
    """
    return x[:, 1:] - coeff * x[:, :-1]


def pre_emphasized_esr(pred: torch.Tensor, target: torch.Tensor,
                       coeff: float = DEFAULT_PRE_EMPHASIS, eps: float = EPS) -> torch.Tensor:
    """:func:`esr` of both signals after :func:`pre_emphasis`."""
    return esr(pre_emphasis(pred, coeff), pre_emphasis(target, coeff), eps)


@dataclass(frozen=True)
class LossConfig:
    """``esr_weight * ESR(pre-emphasised if pre_emphasis) + dc_weight * DC``.

    The AGAM preset (the article's runs) is 0.75 * ESR + 0.25 * DC without pre-emphasis.
    """

    esr_weight: float = 0.75
    dc_weight: float = 0.25
    pre_emphasis: Optional[float] = None

    def to_dict(self) -> dict:
        return asdict(self)


def make_loss(config: LossConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The weighted training loss as one function of (pred, target)."""
    coeff = config.pre_emphasis
    w_esr, w_dc = float(config.esr_weight), float(config.dc_weight)

    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # One error signal and one energy serve both terms (mean_t(y) - mean_t(p) is
        # mean_t(y - p)): the loss runs after every update window of every batch.
        energy = torch.mean(torch.square(target)) + EPS
        err = target - pred
        if coeff is None:
            total = w_esr * torch.mean(torch.square(err))
        else:
            total = (w_esr * energy) * esr(pre_emphasis(pred, coeff), pre_emphasis(target, coeff))
        if w_dc:
            total = total + w_dc * torch.mean(torch.square(torch.mean(err, dim=1)))
        return total / energy

    return loss


# --------------------------------------------------------------------------- the metric
def error_and_energy(pred, target) -> Tuple[float, float]:
    """``sum((y - p)^2)`` and ``sum(y^2)`` in float64, for arrays of one shape (any).

    ESR is their ratio (:func:`esr_from_sums`); the pooled ESR of several signals (the
    captures of a split) is the ratio of their summed errors and energies.
    """
    p = np.asarray(pred, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if p.shape != y.shape:
        raise ValueError(f"prediction {p.shape} and target {y.shape} differ in shape")
    return float(np.sum(np.square(y - p))), float(np.sum(np.square(y)))


def esr_from_sums(err: float, energy: float) -> float:
    """``err / energy``; for a silent target 0 when the prediction is silent too, else inf."""
    if energy == 0.0:
        return 0.0 if err == 0.0 else float("inf")
    return err / energy


def esr_numpy(pred, target) -> float:
    """Plain ESR ``sum((y - p)^2) / sum(y^2)`` of two numpy signals: the ``test_esr`` metric.

    No epsilon, no pre-emphasis, float64. Returns ``inf`` for a silent target with a
    non-silent prediction, 0 when both are silent.
    """
    return esr_from_sums(*error_and_energy(pred, target))
