"""Compiled per-sample LSTM kernels (numba) behind :mod:`ampxfer_lib.model.render`.

Importing this module imports numba; :mod:`ampxfer_lib.model.render` does so lazily and falls
back to PyTorch when numba is missing. Nothing here validates its arguments: the caller
(:func:`ampxfer_lib.model.render.pack_model` and the planners in ``render``) builds every array.

Packed layout (see ``render.pack_model``), with ``Hp`` the hidden size rounded up to an even
number and ``Hq`` rounded up to a multiple of 16:

* ``w_in`` (G,), ``bias`` (G,) or (4, G), ``w_hhT`` (Hp, G) with ``G = 4 * Hp``: the gate rows
  in PyTorch's order i, f, g, o, each block ``Hp`` long; ``g_rows`` (G,) bool marks the g
  block (a mask is faster than splitting the loop). The rows of the g gate are pre-scaled
  by 2 (exact in binary floating point) so that one function, :func:`gate32`, evaluates
  all four gates from the same ``exp(-|z|)``: sigmoid(z) for i, f, o and tanh(z / 2) for
  the pre-scaled g rows.
* Padding units have zero weights and bias, so their cell and hidden state stay exactly 0.
* ``h`` (Hp,) and ``c`` (Hq,) carry the state in and out; ``c``'s tail beyond ``Hp`` stays 0
  and only lets the cell tanh loop run over a multiple of the vector width.

Why these shapes: one LSTM step of a hidden-20 model is an 80 x 20 matrix-vector product
followed by 100 tanh evaluations. The loops run over contiguous gate rows so LLVM
vectorises them, and the recurrent product is accumulated two hidden units per pass to
halve the loads and stores of the accumulator. The activations are the float32 ones of
:mod:`ampxfer_lib.model.f32math` (no libm call, so the loops vectorise; accuracy there).
Computing sigmoid as 0.5 + 0.5 tanh(z / 2) instead is cheaper but only accurate in absolute
terms, and doubled the ESR against PyTorch on the most sensitive capture (HT40 at full
gain: 6.7e-10 instead of 3.6e-10).

One step depends on the previous one, so a single sequence is latency bound; the four-stream
kernel advances four independent sequences (chunks of one file, or one file at four knob
settings) in the same loops, which fills the pipeline: a sample of one stream then costs
about 0.6 of the one-stream kernel's (``render.FOUR_STREAM_COST``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ampxfer_lib.model.f32math import JIT, SIGMOID_CLAMP, exp_parts, tanh32

_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)


@njit(inline="always", **JIT)
def gate32(z, tanh_row):
    """sigmoid(z), or tanh(z / 2) when ``tanh_row``; both from e = exp(-|z|), 1 + e shared.

    On the sigmoid rows this is :func:`~.f32math.sigmoid32` bit for bit.
    """
    a = abs(z)
    if a > SIGMOID_CLAMP:
        a = SIGMOID_CLAMP
    s, p = exp_parts(-a)
    e = s * p + s             # exp(-|z|), accurate relative to its size
    em1 = s * p + (s - _ONE)  # exp(-|z|) - 1, no cancellation
    if tanh_row:
        num = -em1 if z >= _ZERO else em1  # tanh(|z|/2) = (1 - e) / (1 + e), signed
    else:
        num = _ONE if z >= _ZERO else e    # sigmoid(z) = 1 / (1 + e) or e / (1 + e)
    return num / (_ONE + e)


@njit(**JIT)
def gate32_array(z, tanh_row, out):
    """Elementwise :func:`gate32`: (N,) float32 -> out (N,) float32 (tests, accuracy checks)."""
    for i in range(z.shape[0]):
        out[i] = gate32(z[i], tanh_row)


@njit(**JIT)
def lstm_one(x, y, begin, first_out, n, skipf, w_in, bias, w_hhT, g_rows, head_w, head_b,
             h, c, stride, h_ck, c_ck):
    """Advance one sequence over x[begin : begin + n].

    x (T,) float32 input; y (T,) float32 output, written for t >= first_out only;
    h (Hp,), c (Hq,) state in/out. Checkpoints: the state just before sample
    ``first_out + m * stride`` is copied into h_ck[m] (M, Hp), c_ck[m] (M, Hq) for m < M
    (those past the end are left as they were).
    """
    Hp = h.shape[0]
    Hq = c.shape[0]
    G = 4 * Hp
    z = np.empty(G, np.float32)
    tc = np.empty(Hq, np.float32)
    n_ck = h_ck.shape[0]
    m = 0
    next_ck = first_out
    for i in range(n):
        t = begin + i
        if t == next_ck and m < n_ck:
            for j in range(Hp):
                h_ck[m, j] = h[j]
            for j in range(Hq):
                c_ck[m, j] = c[j]
            m += 1
            next_ck += stride
        xt = x[t]
        for k in range(G):
            z[k] = bias[k] + w_in[k] * xt
        for j in range(0, Hp, 2):
            h0 = h[j]
            h1 = h[j + 1]
            for k in range(G):
                z[k] += w_hhT[j, k] * h0 + w_hhT[j + 1, k] * h1
        for k in range(G):
            z[k] = gate32(z[k], g_rows[k])
        for j in range(Hp):
            c[j] = z[Hp + j] * c[j] + z[j] * z[2 * Hp + j]
        for j in range(Hq):
            tc[j] = tanh32(c[j])
        acc = head_b
        for j in range(Hp):
            hj = z[3 * Hp + j] * tc[j]
            h[j] = hj
            acc += head_w[j] * hj
        if t >= first_out:
            y[t] = acc + skipf * xt


@njit(**JIT)
def lstm_four(x, y, begin, first_out, row, n, skipf, w_in, bias, w_hhT, g_rows, head_w,
              head_b, h, c, stride, h_ck, c_ck):
    """Advance four independent sequences in lockstep, n steps each.

    Stream s reads x[begin[s] + i] for i < n, writes y[row[s], t] for t >= first_out[s],
    and checkpoints its state before samples first_out[s] + m * stride into h_ck[s, m],
    c_ck[s, m]. x (T,), y (R, T), begin/first_out/row (4,) int64, bias (4, G) (one row per
    stream, so the streams may be one file at four knob settings), h (4, Hp), c (4, Hq)
    in/out, h_ck (4, M, Hp), c_ck (4, M, Hq). Per stream, the arithmetic is the same
    expression as in :func:`lstm_one`.
    """
    Hp = h.shape[1]
    Hq = c.shape[1]
    G = 4 * Hp
    z = np.empty((4, G), np.float32)
    tc = np.empty((4, Hq), np.float32)
    xs = np.empty(4, np.float32)
    n_ck = h_ck.shape[1]
    m = np.zeros(4, np.int64)
    next_ck = first_out.copy()
    for i in range(n):
        for s in range(4):
            t = begin[s] + i
            if t == next_ck[s] and m[s] < n_ck:
                for j in range(Hp):
                    h_ck[s, m[s], j] = h[s, j]
                for j in range(Hq):
                    c_ck[s, m[s], j] = c[s, j]
                m[s] += 1
                next_ck[s] += stride
            xs[s] = x[t]
        x0 = xs[0]
        x1 = xs[1]
        x2 = xs[2]
        x3 = xs[3]
        for k in range(G):
            wk = w_in[k]
            z[0, k] = bias[0, k] + wk * x0
            z[1, k] = bias[1, k] + wk * x1
            z[2, k] = bias[2, k] + wk * x2
            z[3, k] = bias[3, k] + wk * x3
        for j in range(0, Hp, 2):
            a0 = h[0, j]
            a1 = h[0, j + 1]
            b0 = h[1, j]
            b1 = h[1, j + 1]
            c0 = h[2, j]
            c1 = h[2, j + 1]
            d0 = h[3, j]
            d1 = h[3, j + 1]
            for k in range(G):
                w0 = w_hhT[j, k]
                w1 = w_hhT[j + 1, k]
                z[0, k] += w0 * a0 + w1 * a1
                z[1, k] += w0 * b0 + w1 * b1
                z[2, k] += w0 * c0 + w1 * c1
                z[3, k] += w0 * d0 + w1 * d1
        for k in range(G):
            g = g_rows[k]
            z[0, k] = gate32(z[0, k], g)
            z[1, k] = gate32(z[1, k], g)
            z[2, k] = gate32(z[2, k], g)
            z[3, k] = gate32(z[3, k], g)
        for s in range(4):
            for j in range(Hp):
                c[s, j] = z[s, Hp + j] * c[s, j] + z[s, j] * z[s, 2 * Hp + j]
        for j in range(Hq):
            tc[0, j] = tanh32(c[0, j])
            tc[1, j] = tanh32(c[1, j])
            tc[2, j] = tanh32(c[2, j])
            tc[3, j] = tanh32(c[3, j])
        for s in range(4):
            acc = head_b
            for j in range(Hp):
                hj = z[s, 3 * Hp + j] * tc[s, j]
                h[s, j] = hj
                acc += head_w[j] * hj
            t = begin[s] + i
            if t >= first_out[s]:
                y[row[s], t] = acc + skipf * xs[s]
