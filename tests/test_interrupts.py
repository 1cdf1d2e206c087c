import os
import signal

import pytest

from ampxfer_lib.interrupts import stop_on_signals


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_raise_keyboard_interrupt(sig):
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell leaves it for a background job
    try:
        stop_on_signals()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), sig)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
