"""A single-layer LSTM for training on one CPU core, with a hand-written backward pass.

PyTorch's CPU LSTM (oneDNN) spends about 1.1 us per sample and time step on forward plus
backward for the hidden-20 network, five times its inference cost; the work per step is
tiny (a 50 x 20 x 80 matrix product for a batch of 50), so what matters is how little
else happens per step. Here each time step is one small BLAS product plus one loop over
the step's elements that numba/LLVM turns into AVX code, in a *time-major, batch-innermost*
layout::

    z (T+1, H+C+1, B)  = [h_{t-1}; x_t; 1] per step   gates, d_gates (T, 4H, B)
    c (T+1, H, B)      tanh(c) (T, H, B)

Stacking ``h``, ``x`` and a row of ones makes the gate pre-activations one product
``[W_hh | W_ih | b] @ z_t`` and the weight gradient one accumulated product
``sum_t d_gates_t @ z_t^T``. With the batch innermost, every element-wise operation runs
over ``H * B`` contiguous floats. Gate order is PyTorch's (i, f, g, o); results match
``nn.LSTM`` to float32 rounding (``tests/test_lstm_cpu.py``).

The activations are the float32 ones of :mod:`ampxfer_lib.model.f32math`, shared with the
render kernel: numba cannot vectorise calls to ``math.exp`` without Intel's SVML.

Speed, measured on one core for the hidden-20 network (bench/RESULTS_train.md, "What each
implementation change is worth"; the figures the rest of the library refers to): forward
plus backward 3.1-3.4x ``nn.LSTM``'s at batch 50; one validation sequence (:func:`infer`)
4.0x.

Only float32 CPU tensors take this path (:func:`available` says whether numba is
importable); GPUs keep ``nn.LSTM`` (cuDNN).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

State = Tuple[torch.Tensor, torch.Tensor]
_kernels = None
_unavailable: Optional[str] = None


def available() -> bool:
    """True when the numba kernels can be used (numba imports; compiled on first use)."""
    return _load() is not None


def _load():
    global _kernels, _unavailable
    if _kernels is None and _unavailable is None:
        try:  # numba is a runtime requirement, but a broken install must not stop training
            from ampxfer_lib.model import training_kernels as _lstm_kernels
            _kernels = _lstm_kernels
        except Exception as exc:  # pragma: no cover - only without a working numba
            _unavailable = f"{type(exc).__name__}: {exc}"
    return _kernels


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def _augmented(w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    """[W_hh | W_ih | b_ih + b_hh]: (4H, H + C + 1)."""
    return torch.cat([w_hh, w_ih, (b_ih + b_hh)[:, None]], dim=1).detach().contiguous()


def _stack_inputs(x: torch.Tensor, h0: torch.Tensor, n_h: int) -> torch.Tensor:
    """z (T+1, H+C+1, B) with the inputs, a row of ones and h_0 in place."""
    n_t, n_in, n_b = x.shape
    z = torch.empty((n_t + 1, n_h + n_in + 1, n_b), dtype=torch.float32)
    z[0, :n_h] = h0
    z[:n_t, n_h:n_h + n_in] = x
    z[:n_t, n_h + n_in] = 1.0
    z[n_t, n_h:] = 0.0
    return z


class _LSTMHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_out):
        n_t, n_in, n_b = x.shape
        n_h = w_hh.shape[1]
        z = _stack_inputs(x.detach(), h0.detach(), n_h)
        cs = torch.empty((n_t + 1, n_h, n_b), dtype=torch.float32)
        cs[0] = c0
        acts = torch.empty((n_t, 4 * n_h, n_b), dtype=torch.float32)
        tcs = torch.empty((n_t, n_h, n_b), dtype=torch.float32)
        y = torch.empty((n_t, n_b), dtype=torch.float32)
        w_out_ = w_out.detach().reshape(-1).contiguous()
        _load()._forward(_np(_augmented(w_ih, w_hh, b_ih, b_hh)), _np(w_out_), _np(z), _np(cs), _np(acts), _np(tcs), _np(y))
        ctx.save_for_backward(w_ih, w_hh, w_out)
        ctx.buffers = (z, cs, acts, tcs)
        return y, z[n_t, :n_h].clone(), cs[n_t].clone()

    @staticmethod
    def backward(ctx, d_y, d_hn, d_cn):
        w_ih, w_hh, w_out = ctx.saved_tensors
        z, cs, acts, tcs = ctx.buffers
        ctx.buffers = None
        n_t, n_g, n_b = acts.shape
        n_h = n_g // 4
        n_in = w_ih.shape[1]
        dy = d_y.contiguous() if d_y is not None else torch.zeros((n_t, n_b))
        dh = d_hn.clone().contiguous() if d_hn is not None else torch.zeros((n_h, n_b))
        dc = d_cn.clone().contiguous() if d_cn is not None else torch.zeros((n_h, n_b))
        da = torch.empty((n_t, n_g, n_b), dtype=torch.float32)
        dw = torch.zeros((n_g, n_h + n_in + 1), dtype=torch.float32)
        dw_out = torch.zeros((n_h, n_b), dtype=torch.float32)
        _load()._backward(_np(w_hh.t().contiguous()), _np(w_out.detach().reshape(-1).contiguous()), _np(z), _np(cs),
                  _np(acts), _np(tcs), _np(dy), _np(dh), _np(dc), _np(da), _np(dw), _np(dw_out))
        g_x = torch.matmul(w_ih.t(), da) if ctx.needs_input_grad[0] else None
        g_b = dw[:, n_h + n_in]
        return (g_x, dh, dc, dw[:, n_h:n_h + n_in], dw[:, :n_h], g_b, g_b.clone(),
                dw_out.sum(dim=1).reshape(w_out.shape))


def lstm_head(x: torch.Tensor, state: Optional[State], w_ih: torch.Tensor, w_hh: torch.Tensor,
              b_ih: torch.Tensor, b_hh: torch.Tensor, w_out: torch.Tensor) -> Tuple[torch.Tensor, State]:
    """``w_out . h_t`` of an LSTM over a time-major, batch-innermost input.

    ``x`` (T, C, B) float32 on the CPU; ``state`` (h, c), each (H, B), or None for zeros;
    ``w_out`` (1, H) or (H,), the weights of a one-output linear layer on the hidden state
    (its bias and any skip connection are left to the caller). Returns y (T, B) and the
    final state (h_T, c_T); differentiable w.r.t. the weights, the input and the state.
    """
    n_h = w_hh.shape[1]
    if state is None:
        h0 = x.new_zeros((n_h, x.shape[2]))
        state = (h0, h0)
    y, h_n, c_n = _LSTMHead.apply(x, state[0], state[1], w_ih, w_hh, b_ih, b_hh, w_out)
    return y, (h_n, c_n)


@torch.no_grad()
def advance(x: torch.Tensor, state: Optional[State], w_ih: torch.Tensor, w_hh: torch.Tensor,
            b_ih: torch.Tensor, b_hh: torch.Tensor) -> State:
    """The state (h, c) (H, B) after running over ``x`` (T, C, B) from ``state``; no gradient."""
    n_t, n_in, n_b = x.shape
    n_h = w_hh.shape[1]
    z = torch.zeros((n_h + n_in + 1, n_b), dtype=torch.float32)
    z[n_h + n_in] = 1.0
    c = torch.zeros((n_h, n_b), dtype=torch.float32)
    if state is not None:
        z[:n_h] = state[0]
        c.copy_(state[1])
    _load()._advance(_np(_augmented(w_ih, w_hh, b_ih, b_hh)), _np(z), _np(x.contiguous()), _np(c))
    return z[:n_h].clone(), c


@torch.no_grad()
def infer(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor,
          w_out: torch.Tensor) -> torch.Tensor:
    """``w_out . h_t`` over whole sequences from a zero state: x (B, T, C) -> (B, T).

    The sequences are run one after another (each one's steps are serial anyway); this is
    the validation and evaluation path (speed: see the module docstring).
    """
    w_t = _augmented(w_ih, w_hh, b_ih, b_hh).t().contiguous()
    w_out_ = w_out.detach().reshape(-1).contiguous()
    n_b, n_t, _ = x.shape
    n_h = w_hh.shape[1]
    y = torch.empty((n_b, n_t), dtype=torch.float32)
    for b in range(n_b):
        h = np.zeros(n_h, dtype=np.float32)
        c = np.zeros(n_h, dtype=np.float32)
        _load()._infer(_np(w_t), _np(w_out_), _np(x[b].contiguous()), _np(y[b]), h, c)
    return y


def warm_up() -> bool:
    """Compile (first run) or load (later runs, from numba's cache) every kernel now, so
    the cost falls outside the first epoch. Returns :func:`available`."""
    if not available():
        return False
    w_ih = torch.zeros((8, 1), requires_grad=True)
    w_hh = torch.zeros((8, 2), requires_grad=True)
    b = torch.zeros(8, requires_grad=True)
    w_out = torch.zeros((1, 2), requires_grad=True)
    x = torch.zeros((3, 1, 2))
    state = advance(x, None, w_ih, w_hh, b, b)
    y, _ = lstm_head(x, state, w_ih, w_hh, b, b, w_out)
    y.sum().backward()
    infer(torch.zeros((1, 3, 1)), w_ih, w_hh, b, b, w_out)
    return True
