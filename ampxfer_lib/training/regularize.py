"""What keeps a fine-tune close to where it started, and what smooths the weights it ends with.

* :func:`l2_sp`: the L2-SP penalty of Li, Grandvalet & Davoine, "Explicit inductive bias for
  transfer learning with convolutional networks" (ICML 2018): ``alpha / 2 * |w - w0|^2`` summed
  over the parameters, with ``w0`` the starting model. Plain weight decay pulls towards zero,
  i.e. away from what transfer brought; this pulls towards the start, which matters when 30 s
  of audio cannot pin every weight down.
* :func:`ema_update_`: an exponential moving average of the weights (Polyak averaging), updated
  after every optimiser step; validating and keeping the average instead of the last iterate
  removes most of the step-to-step noise that made early stopping a lottery on real gear.
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping

import torch


def l2_sp(params: Iterable[torch.Tensor], start: Iterable[torch.Tensor], alpha: float) -> torch.Tensor:
    """``alpha / 2 * sum |p - p0|^2`` over matching ``params`` and ``start`` tensors (a scalar).

    Its gradient with respect to each ``p`` is ``alpha * (p - p0)``; ``start`` carries no gradient.
    """
    total = None
    for p, p0 in zip(params, start):
        term = (p - p0.detach()).pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("l2_sp needs at least one parameter")
    return 0.5 * alpha * total


@torch.no_grad()
def ema_update_(average: Dict[str, torch.Tensor], current: Mapping[str, torch.Tensor], decay: float) -> None:
    """In place: ``average[k] = decay * average[k] + (1 - decay) * current[k]`` for every key of ``average``.

    After ``n`` updates with a constant ``current = c`` from ``a0``: ``c + decay**n * (a0 - c)``;
    the average spans about ``1 / (1 - decay)`` updates.
    """
    for k, a in average.items():
        a.mul_(decay).add_(current[k].detach(), alpha=1.0 - decay)
