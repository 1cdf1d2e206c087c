"""Training losses of the AGAM recipe, as small functions of (pred, target).

All functions take tensors of shape (B, T, 1) or (B, T) (any shape whose second axis is
time, batch first) and return a scalar tensor. The normalisation follows Wright et al.,
"Real-time guitar amplifier emulation with deep learning" (2020), used by AGAM:

    ESR = sum((y - p)^2) / (sum(y^2) + eps')        error-to-signal ratio
    DC  = mean_b(mean_t(y) - mean_t(p))^2 / (mean(y^2) + eps)

both computed over the whole batch at once; ``eps = 1e-5`` as in AGAM guards silent
targets. The pre-emphasis filter H(z) = 1 - a z^-1 (a = 0.85) is a first-order high-pass
that weights the error towards the upper mids, where distortion lives.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch

EPS = 1e-5
DEFAULT_PRE_EMPHASIS = 0.85


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


def esr_numpy(pred, target) -> float:
    """Plain ESR (no eps, no pre-emphasis) of two numpy signals: the ``test_esr`` metric.

    Returns ``inf`` for a silent target with a non-silent prediction, 0 when both are silent.
    """
    import numpy as np

    p = np.asarray(pred, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    err = float(np.sum(np.square(y - p)))
    energy = float(np.sum(np.square(y)))
    if energy == 0.0:
        return 0.0 if err == 0.0 else float("inf")
    return err / energy
