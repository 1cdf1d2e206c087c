"""Float32 exp, sigmoid and tanh for the numba LSTM kernels, rendering and training alike.

LLVM vectorises a loop only when it calls no libm function (numba cannot vectorise
``math.exp`` without Intel's SVML), so both kernel families (:mod:`.render_kernels`,
:mod:`.training_kernels`) compute their activations here, inline, from one exponential::

    exp(v) = 2**n * (1 + p),   n = round(v / ln 2),   r = v - n ln 2,   p = expm1(r)

ln 2 is split in two (Cody & Waite) so that ``n * LN2_HI`` is exact for ``|n| < 2**11``;
``p`` is the Taylor series of ``expm1`` to ``r**8`` (for ``|r| <= ln 2 / 2`` the next term is
below 2e-9 relative); ``2**n`` is built from its bits by :func:`float32_from_bits`. Keeping
``p = expm1(r)`` rather than ``exp(r)`` gives ``exp(v) - 1 = 2**n p + (2**n - 1)`` without
cancellation, which tanh needs near 0 and sigmoid does not mind.

Errors against float64 (tests/test_render.py, tests/test_lstm_cpu.py): tanh at most 2.5 ulp,
sigmoid at most 2.3 ulp *relative*, also where it is tiny (down to sigmoid(-87) = 1.6e-38;
``2**n`` must stay a normal float32 to be built from its bits). The render kernel's
:func:`~.render_kernels.gate32` is the same sigmoid, fused with tanh for its pre-scaled rows.

numba's on-disk cache is keyed on each kernel module's own source file: after editing this
file, touch the kernel modules (or delete their ``__pycache__``) so they are recompiled.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# contract: allow fused multiply-add (more accurate, not less); no other fast-math licence,
# since reassociation would undo the Cody-Waite split. error_model numpy: float division by
# zero must not raise (it cannot happen in these kernels, and the check blocks vectorisation).
JIT = dict(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")

F32 = np.float32
LOG2E = F32(1.4426950408889634)
LN2_HI = F32(0.693359375)
LN2_LO = F32(-2.12194440e-4)
#: exp's argument is clamped to [EXP_MIN, EXP_MAX] so that 2**n stays a normal float32.
EXP_MIN = F32(-87.0)
EXP_MAX = F32(88.0)
#: |z| beyond which sigmoid is evaluated at the clamp: sigmoid(-87) = 1.6e-38, still normal.
SIGMOID_CLAMP = -EXP_MIN
#: tanh(9) = 1 - 3e-8 already computes as 1.0 in float32; beyond it the result cannot change.
TANH_CLAMP = F32(9.0)

_HALF = F32(0.5)
_ONE = F32(1.0)
_TWO = F32(2.0)
_ZERO = F32(0.0)
# 1/k! for the expm1 series
_E2, _E3, _E4, _E5, _E6, _E7, _E8 = (F32(1.0 / f) for f in (2, 6, 24, 120, 720, 5040, 40320))


@intrinsic
def float32_from_bits(typingctx, bits):
    """Reinterpret an int32 as the float32 with the same bits (for 2**n); LLVM vectorises it."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@njit(inline="always", **JIT)
def _reduced(v, n):
    """``(s, p)`` = (2**n, expm1(v - n ln 2)) for ``n = round(v / ln 2)``, given."""
    nf = np.float32(n)
    r = (v - nf * LN2_HI) - nf * LN2_LO
    p = r * (_ONE + r * (_E2 + r * (_E3 + r * (_E4 + r * (_E5 + r * (_E6 + r * (_E7 + r * _E8)))))))
    s = float32_from_bits((n + np.int32(127)) << np.int32(23))
    return s, p


@njit(inline="always", **JIT)
def exp_parts(v):
    """``(s, p)`` with ``exp(v) = s * p + s`` and ``expm1(v) = s * p + (s - 1)``, s = 2**n.

    ``v`` float32 in [EXP_MIN, 0] (not checked): every activation needs only exp(-|z|),
    and for v <= 0 truncating ``v / ln 2 - 1/2`` rounds to nearest in one conversion (a
    rounding for either sign, as in :func:`exp32`, made the render kernel about 5 % and
    validation about 10 % slower).
    Both results are accurate relative to their size.
    """
    return _reduced(v, np.int32(v * LOG2E - _HALF))


@njit(inline="always", **JIT)
def exp32(x):
    """exp of any float32, ``x`` clamped to [EXP_MIN, EXP_MAX]; within 2 ulp.

    The same reduction and polynomial as :func:`exp_parts`, over the whole range (the
    kernels themselves need only :func:`exp_parts`; this is where the range is tested).
    """
    x = min(max(x, EXP_MIN), EXP_MAX)
    s, p = _reduced(x, np.int32(np.floor(x * LOG2E + _HALF)))
    return s * p + s


@njit(inline="always", **JIT)
def sigmoid32(z):
    """sigmoid of a float32 from e = exp(-|z|): 1 / (1 + e), or e / (1 + e) for z < 0."""
    a = abs(z)
    if a > SIGMOID_CLAMP:
        a = SIGMOID_CLAMP
    s, p = exp_parts(-a)
    e = s * p + s
    return (_ONE if z >= _ZERO else e) / (_ONE + e)


@njit(inline="always", **JIT)
def tanh32(x):
    """tanh of a float32 via expm1(-2|x|): within 2.5 ulp, odd exactly, saturates to +-1."""
    a = abs(x)
    if a > TANH_CLAMP:
        a = TANH_CLAMP
    s, p = exp_parts(-_TWO * a)
    em1 = s * p + (s - _ONE)  # exp(-2|x|) - 1, no cancellation
    t = -em1 / (_TWO + em1)
    return t if x >= _ZERO else -t


@njit(**JIT)
def tanh32_array(x, out):
    """Elementwise :func:`tanh32`: (N,) float32 -> out (N,) float32 (accuracy tests)."""
    for i in range(x.shape[0]):
        out[i] = tanh32(x[i])


@njit(**JIT)
def sigmoid32_array(z, out):
    """Elementwise :func:`sigmoid32`: (N,) float32 -> out (N,) float32 (accuracy tests)."""
    for i in range(z.shape[0]):
        out[i] = sigmoid32(z[i])
