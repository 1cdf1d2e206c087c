"""The numba kernels behind :mod:`ampxfer_lib.model.cpu_lstm` (imported on first use).

Array layouts and the maths are described there. Every loop runs over 0-based indices of
contiguous 1-D views and touches few arrays: numba wraps an index that might be negative,
and LLVM gives up vectorising a loop that needs many run-time overlap checks.
"""

import numba
import numpy as np

from ampxfer_lib.model.f32math import JIT, sigmoid32, tanh32

_ONE = np.float32(1.0)


@numba.njit(**JIT)
def _activate(g, n):
    """(i, f, g, o) pre-activations -> activations, in place; g (4n,), one step."""
    gi = g[:2 * n]
    for e in range(2 * n):
        gi[e] = sigmoid32(gi[e])
    gg = g[2 * n:3 * n]
    for e in range(n):
        gg[e] = tanh32(gg[e])
    go = g[3 * n:]
    for e in range(n):
        go[e] = sigmoid32(go[e])


@numba.njit(**JIT)
def _forward(w_aug, w_out, z, cs, acts, tcs, y):
    """Run the steps t = 0..T-1 and keep what the backward pass needs.

    w_aug (4H, Z) = [W_hh | W_ih | b_ih + b_hh]; z (T+1, Z, B), Z = H + C + 1, holds
    [h_{t-1}; x_t; 1] in z[t]: on entry the input rows, the ones and z[0, :H] = h_0;
    on return z[t + 1, :H] = h_t. cs (T+1, H, B) with cs[0] = c_0 on entry; acts
    (T, 4H, B) receives (i, f, g, o) after their non-linearities, tcs (T, H, B) tanh(c_t),
    y (T, B) the head's output w_out . h_t (w_out (H,)).
    """
    n_t, n_g, n_b = acts.shape
    n_h = n_g // 4
    n = n_h * n_b
    for t in range(n_t):
        np.dot(w_aug, z[t], acts[t])
        g = acts[t].reshape(-1)
        _activate(g, n)
        gi = g[:n]
        gf = g[n:2 * n]
        gg = g[2 * n:3 * n]
        go = g[3 * n:]
        c_prev = cs[t].reshape(-1)
        c = cs[t + 1].reshape(-1)
        tc = tcs[t].reshape(-1)
        h = z[t + 1].reshape(-1)
        for e in range(n):
            c[e] = gf[e] * c_prev[e] + gi[e] * gg[e]
        for e in range(n):
            tc[e] = tanh32(c[e])
        for e in range(n):
            h[e] = go[e] * tc[e]
        yt = y[t]
        for b in range(n_b):
            yt[b] = 0.0
        for k in range(n_h):
            w = w_out[k]
            hk = h[k * n_b:(k + 1) * n_b]
            for b in range(n_b):
                yt[b] += w * hk[b]


@numba.njit(**JIT)
def _advance(w_aug, z, x, c):
    """Advance the state without keeping anything: z (Z, B) holds [h; x; 1] with h the
    state on entry and on return; x (T, C, B); c (H, B) updated in place."""
    n_t, n_in, n_b = x.shape
    n_g = w_aug.shape[0]
    n_h = n_g // 4
    n = n_h * n_b
    a = np.empty((n_g, n_b), dtype=np.float32)
    g = a.reshape(-1)
    gi = g[:n]
    gf = g[n:2 * n]
    gg = g[2 * n:3 * n]
    go = g[3 * n:]
    h = z.reshape(-1)
    cf = c.reshape(-1)
    for t in range(n_t):
        z[n_h:n_h + n_in] = x[t]
        np.dot(w_aug, z, a)
        _activate(g, n)
        for e in range(n):
            cf[e] = gf[e] * cf[e] + gi[e] * gg[e]
        for e in range(n):
            h[e] = go[e] * tanh32(cf[e])


@numba.njit(**JIT)
def _backward(w_hh_t, w_out, z, cs, acts, tcs, dy, dh, dc, da, dw, dw_out):
    """Back-propagate through the T steps of :func:`_forward`.

    w_hh_t (H, 4H) = W_hh^T; dy (T, B) is the gradient w.r.t. the head's output y;
    dh, dc (H, B) hold the gradient w.r.t. the final state on entry and w.r.t. the
    initial state on return. Writes da (T, 4H, B), the gradient w.r.t. the gate
    pre-activations, adds sum_t da_t @ z_t^T to dw (4H, Z) and sum_t h_t * dy_t
    (summed over the batch by the caller) to dw_out (H, B).
    """
    n_t, n_g, n_b = acts.shape
    n_h = n_g // 4
    n = n_h * n_b
    tmp = np.empty(dw.shape, dtype=np.float32)
    tmpf = tmp.reshape(-1)
    dwf = dw.reshape(-1)
    dhf = dh.reshape(-1)
    dcf = dc.reshape(-1)
    for t in range(n_t - 1, -1, -1):
        g = acts[t].reshape(-1)
        gi = g[:n]
        gf = g[n:2 * n]
        gg = g[2 * n:3 * n]
        go = g[3 * n:]
        d = da[t].reshape(-1)
        di = d[:n]
        df = d[n:2 * n]
        dg = d[2 * n:3 * n]
        do = d[3 * n:]
        c_prev = cs[t].reshape(-1)
        tc = tcs[t].reshape(-1)
        dyt = dy[t]
        h = z[t + 1].reshape(-1)
        for k in range(n_h):  # through the head y = w_out . h
            w = w_out[k]
            dhk = dhf[k * n_b:(k + 1) * n_b]
            hk = h[k * n_b:(k + 1) * n_b]
            dwk = dw_out[k]
            for b in range(n_b):
                dhk[b] += w * dyt[b]
            for b in range(n_b):
                dwk[b] += hk[b] * dyt[b]
        for e in range(n):  # through h = o * tanh(c) into o and c
            do[e] = dhf[e] * tc[e] * go[e] * (_ONE - go[e])
        for e in range(n):
            dcf[e] += dhf[e] * go[e] * (_ONE - tc[e] * tc[e])
        for e in range(n):  # through c = f * c_prev + i * g into i, f, g and c_prev
            di[e] = dcf[e] * gg[e] * gi[e] * (_ONE - gi[e])
        for e in range(n):
            df[e] = dcf[e] * c_prev[e] * gf[e] * (_ONE - gf[e])
        for e in range(n):
            dg[e] = dcf[e] * gi[e] * (_ONE - gg[e] * gg[e])
        for e in range(n):
            dcf[e] *= gf[e]
        np.dot(w_hh_t, da[t], dh)
        np.dot(da[t], z[t].T, tmp)
        for e in range(tmpf.shape[0]):
            dwf[e] += tmpf[e]


@numba.njit(**JIT)
def _infer(w_t, w_out, x, y, h, c):
    """Run one sequence and write the head's output: the inference path, batch of one.

    w_t (H+C+1, 4H) = [W_hh | W_ih | b]^T; w_out (H,); x (T, C); y (T,) receives
    w_out . h_t; h, c (H,) hold the state on entry and on return. With no batch to run
    along, the loops run along the 4H gates instead.
    """
    n_t, n_in = x.shape
    n_g = w_t.shape[1]
    n_h = n_g // 4
    a = np.empty(n_g, dtype=np.float32)
    gi = a[:n_h]
    gf = a[n_h:2 * n_h]
    gg = a[2 * n_h:3 * n_h]
    go = a[3 * n_h:]
    bias = w_t[n_h + n_in]
    for t in range(n_t):
        for g in range(n_g):
            a[g] = bias[g]
        for k in range(n_h):
            hk = h[k]
            row = w_t[k]
            for g in range(n_g):
                a[g] += hk * row[g]
        for j in range(n_in):
            xj = x[t, j]
            row = w_t[n_h + j]
            for g in range(n_g):
                a[g] += xj * row[g]
        _activate(a, n_h)
        for k in range(n_h):
            c[k] = gf[k] * c[k] + gi[k] * gg[k]
        for k in range(n_h):
            h[k] = go[k] * tanh32(c[k])
        acc = np.float32(0.0)
        for k in range(n_h):
            acc += w_out[k] * h[k]
        y[t] = acc
