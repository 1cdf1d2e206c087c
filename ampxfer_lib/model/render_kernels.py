"""Compiled per-sample LSTM kernels (numba) behind :mod:`ampxfer_lib.model.render`.

Importing this module imports numba; :mod:`ampxfer_lib.model.render` does so lazily and falls
back to PyTorch when numba is missing. Nothing here validates its arguments: the caller
(:func:`ampxfer_lib.model.render.pack_model` and the planners in ``render``) builds every array.

Packed layout (see ``render.pack_model``), with ``Hp`` the hidden size rounded up to an even
number and ``Hq`` rounded up to a multiple of 16:

* ``w_in`` (G,), ``bias`` (G,) or (4, G), ``w_hhT`` (Hp, G) with ``G = 4 * Hp``: the gate rows
  in PyTorch's order i, f, g, o, each block ``Hp`` long; ``g_rows`` (G,) bool marks the g
  block (a mask is faster than splitting the loop). The rows of the g gate are pre-scaled by 2 (exact in binary floating point) so that one function, :func:`gate32`,
  evaluates all four gates from the same ``exp(-|z|)``: sigmoid(z) for i, f, o and
  tanh(z / 2) for the pre-scaled g rows.
* Padding units have zero weights and bias, so their cell and hidden state stay exactly 0.
* ``h`` (Hp,) and ``c`` (Hq,) carry the state in and out; ``c``'s tail beyond ``Hp`` stays 0
  and only lets the cell tanh loop run over a multiple of the vector width.

Why these shapes: one LSTM step of a hidden-20 model is an 80 x 20 matrix-vector product
followed by 100 tanh evaluations. The loops run over contiguous gate rows so LLVM
vectorises them, the recurrent product is accumulated two hidden units per pass to halve
the loads and stores of the accumulator, and the activations are computed from ``exp`` and
``expm1`` in float32 with the power of two built from its bits (no libm call, so the loops
vectorise). Errors against float64: tanh at most 2.5 ulp (mean 0.5), sigmoid at most 2 ulp
*relative* (also where it is tiny). Computing sigmoid as 0.5 + 0.5 tanh(z / 2) instead is
cheaper but only accurate in absolute terms, and doubled the ESR against PyTorch on the most
sensitive capture (HT40 at full gain: 6.7e-10 instead of 3.6e-10).

One step depends on the previous one, so a single sequence is latency bound; the four-stream
kernel advances four independent sequences (chunks of one file, or one file at four knob
settings) in the same loops, which fills the pipeline and nearly doubles the throughput.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ampxfer_lib.model.f32math import JIT as _JIT
from ampxfer_lib.model.f32math import LN2_HI as _LN2_HI
from ampxfer_lib.model.f32math import LN2_LO as _LN2_LO
from ampxfer_lib.model.f32math import LOG2E as _LOG2E
from ampxfer_lib.model.f32math import float32_from_bits as _float32_from_bits

_F = np.float32
_HALF = _F(0.5)
_ONE = _F(1.0)
_TWO = _F(2.0)
# tanh(9) rounds to 1 in float32; beyond it the result no longer changes.
_TANH_CLAMP = _F(9.0)
# sigmoid(-30) = 9e-14: clamping |z| there errs by less than that; exp(-30) stays normal.
_GATE_CLAMP = _F(30.0)
# 1/k! for the expm1 series on |r| <= ln2/2; the r**9 term is below 2e-9 relative.
_E2, _E3, _E4, _E5, _E6, _E7, _E8 = (_F(1.0 / f) for f in (2, 6, 24, 120, 720, 5040, 40320))


@njit(inline="always", **_JIT)
def tanh32(x):
    """tanh of a float32 via expm1(-2|x|); vectorises, max error 2.5 ulp."""
    a = abs(x)
    if a > _TANH_CLAMP:
        a = _TANH_CLAMP
    v = -_TWO * a
    # v <= 0, so truncating v * log2(e) - 0.5 rounds to nearest: n in [-26, 0]
    n = np.int32(v * _LOG2E - _HALF)
    nf = np.float32(n)
    r = (v - nf * _LN2_HI) - nf * _LN2_LO
    p = r * (_ONE + r * (_E2 + r * (_E3 + r * (_E4 + r * (_E5 + r * (_E6 + r * (_E7 + r * _E8)))))))
    scale = _float32_from_bits((n + np.int32(127)) << np.int32(23))
    em1 = scale * p + (scale - _ONE)  # exp(v) - 1, exact to an ulp (no cancellation)
    t = -em1 / (_TWO + em1)
    return t if x >= 0 else -t


@njit(inline="always", **_JIT)
def gate32(z, tanh_row):
    """sigmoid(z), or tanh(z / 2) when ``tanh_row``; both from e = exp(-|z|), 1 + e shared."""
    a = abs(z)
    if a > _GATE_CLAMP:
        a = _GATE_CLAMP
    v = -a
    n = np.int32(v * _LOG2E - _HALF)  # round to nearest, n in [-44, 0]
    nf = np.float32(n)
    r = (v - nf * _LN2_HI) - nf * _LN2_LO
    p = r * (_ONE + r * (_E2 + r * (_E3 + r * (_E4 + r * (_E5 + r * (_E6 + r * (_E7 + r * _E8)))))))
    scale = _float32_from_bits((n + np.int32(127)) << np.int32(23))
    e = scale * p + scale             # exp(-|z|), accurate relative to its size
    em1 = scale * p + (scale - _ONE)  # exp(-|z|) - 1, no cancellation
    if tanh_row:
        num = -em1 if z >= 0 else em1  # tanh(|z|/2) = (1 - e) / (1 + e), signed
    else:
        num = _ONE if z >= 0 else e    # sigmoid(z) = 1 / (1 + e) or e / (1 + e)
    return num / (_ONE + e)


@njit(**_JIT)
def gate32_array(z, tanh_row, out):
    """Elementwise :func:`gate32`: (N,) float32 -> out (N,) float32 (tests, accuracy checks)."""
    for i in range(z.shape[0]):
        out[i] = gate32(z[i], tanh_row)


@njit(**_JIT)
def tanh32_array(x, out):
    """Elementwise :func:`tanh32`: (N,) float32 -> out (N,) float32 (tests, accuracy checks)."""
    for i in range(x.shape[0]):
        out[i] = tanh32(x[i])


@njit(**_JIT)
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


@njit(**_JIT)
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
