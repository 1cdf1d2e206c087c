"""Learning rates as pure functions of what a run has recorded, so a resumed run needs no scheduler state.

* :func:`exponential_lr`: ``max(lr * decay ** (epoch - 1), min_lr)``, a function of the epoch alone.
* :func:`adaptive_lr`: a plateau schedule replayed from the validation losses recorded so far:
  after ``patience`` validations without a relative improvement of ``threshold`` over the best,
  the rate is multiplied by ``factor``, never below ``min_lr``; once it sits at ``min_lr``,
  another ``patience`` such validations mean the run has converged. The floor is where a run
  *ends*, not where it waits for early stopping to notice it: on real gear the decay-per-epoch
  schedule reached its floor at epoch 29 and then sat there until the noise of the validation
  loss happened to stop it (issue 11).
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple


def exponential_lr(lr: float, decay: float, min_lr: float, epoch: int) -> float:
    """The rate of a 1-based ``epoch``: ``max(lr * decay ** (epoch - 1), min_lr)``."""
    return max(lr * decay ** (epoch - 1), min_lr)


def adaptive_lr(lr: float, factor: float, patience: int, min_lr: float, val_losses: Sequence[float],
                threshold: float = 1e-3, rebase: bool = False) -> Tuple[float, bool]:
    """The rate after the validations ``val_losses`` (oldest first), and whether the run has converged.

    A validation improves when it is below ``best * (1 - threshold)``; the count of validations
    without improvement restarts after each decay. ``rebase``: after each decay ``best`` is the
    best validation since it, not of the whole run, so a run climbing back down from a spike is
    improving, not stalled (without it, the rate halves all the way down while it recovers: on
    real gear a 30 s capture then ended at its floor above its pre-spike best).
    Returns ``(rate, converged)``.
    """
    rate, best, bad = lr, math.inf, 0
    for v in val_losses:
        if v < best * (1.0 - threshold):
            best, bad = v, 0
            continue
        bad += 1
        if bad >= patience:
            if rate <= min_lr:
                return rate, True
            rate, bad = max(rate * factor, min_lr), 0
            if rebase:
                best = math.inf
    return rate, False
