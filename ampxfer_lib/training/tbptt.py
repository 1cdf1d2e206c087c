"""Truncated back-propagation through time: one batch of segments, one weight update per window.

Shared by the trainer and the ranking's fine-tune probe. Per batch: ``warmup`` samples run
without gradient to settle the state from zeros (AGAM lets the first window's gradient leak
into its warm-up; here it is explicit), then one optimiser step after each window, the
state carried from window to window and cut from the graph in between.

Data are time-major and batch-innermost, (time, channel, segment) as
:meth:`AmpLSTM.forward_tm` takes them: a batch is one ``index_select`` and every window a
contiguous slice. On the CPU that path is the numba kernel of
:mod:`ampxfer_lib.model.cpu_lstm` (forward plus a hand-written backward, 3.4x nn.LSTM's
training speed at batch 50); elsewhere nn.LSTM (cuDNN on a GPU).
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch

from ampxfer_lib.model.network import AmpLSTM


def tbptt_windows(segment_len: int, warmup: int, window: int) -> List[Tuple[int, int]]:
    """(start, stop) of each weight-update window after the warm-up: ceil((L - warmup) / window)."""
    return [(s, min(s + window, segment_len)) for s in range(warmup, segment_len, window)]


def grown_window(window: int, start_lr: float, lr: float) -> int:
    """The update window at rate ``lr`` when it grows as the rate falls: ``window * start_lr / lr``
    samples, never shorter than ``window``.

    The truncated gradient ignores what a window's weights do to the state carried into the next
    window, so it is biased. While the steps are large the noise hides it; once the rate has
    fallen, following it precisely made the training loss *rise* on real gear (a mic'd high-gain
    amp, bench/RESULTS_real_gear.md: 0.045 to 0.049 in 20 epochs at 1e-3 with 500-sample windows,
    falling to 0.043 with whole segments). Growing the window as the rate falls keeps the
    noise-versus-bias balance of the first epochs.
    """
    return max(window, int(round(window * start_lr / lr)))


def tbptt_batch(model: AmpLSTM, optimizer: torch.optim.Optimizer,
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                x: torch.Tensor, y: torch.Tensor, warmup: int, windows: Sequence[Tuple[int, int]],
                grad_clip: Optional[float] = None, penalty: Optional[Callable[[], torch.Tensor]] = None,
                after_step: Optional[Callable[[], None]] = None) -> torch.Tensor:
    """Train on one batch: ``x`` (L, C, B), ``y`` (L, B), from a zero state.

    ``windows``: the update windows (non-empty), e.g. :func:`tbptt_windows`. ``grad_clip``:
    the largest gradient norm of the trainable parameters. ``penalty``: a term on the weights
    added to every window's loss (e.g. L2-SP), not to the returned loss; ``after_step``: called
    after every optimiser step (e.g. a weight average). Returns the mean of the windows' data
    losses as a 0-d tensor on the data's device: reading it would make a GPU wait for the host
    after every update, so the caller decides when to.
    """
    state = model.advance_tm(x[:warmup]) if warmup else None
    params = [p for p in model.parameters() if p.requires_grad] if grad_clip is not None else []
    total = torch.zeros((), device=x.device)
    for start, stop in windows:
        optimizer.zero_grad(set_to_none=True)
        pred, state = model.forward_tm(x[start:stop], state)
        # (T, B) -> (B, T): the losses take batch first, time second
        loss = loss_fn(pred.t(), y[start:stop].t())
        (loss + penalty() if penalty is not None else loss).backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        if after_step is not None:
            after_step()
        state = model.detached(state)
        total = total + loss.detach()
    return total / len(windows)
