"""Pieces shared by the numba LSTM kernels (training: ``_lstm_kernels``, rendering:
``lstm_kernels``): the compile options, and what an ``exp`` in float32 needs so that its
loops vectorise (no libm call).

``exp(v) = 2**n * exp(r)`` with ``n = round(v / ln 2)`` and ``r = v - n ln 2``; ln 2 is split
in two (Cody & Waite) so that ``n * LN2_HI`` is exact for ``|n| < 2**11``, and ``2**n`` is
built directly from its bits by :func:`float32_from_bits`.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

# contract: allow fused multiply-add (more accurate, not less); no other fast-math licence,
# since reassociation would undo the Cody-Waite split. error_model numpy: float division by
# zero must not raise (it cannot happen in these kernels, and the check blocks vectorisation).
JIT = dict(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")

F32 = np.float32
LOG2E = F32(1.4426950408889634)
LN2_HI = F32(0.693359375)
LN2_LO = F32(-2.12194440e-4)


@intrinsic
def float32_from_bits(typingctx, bits):
    """Reinterpret an int32 as the float32 with the same bits (for 2**n); LLVM vectorises it."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen
