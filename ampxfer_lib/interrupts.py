"""Long work that stops cleanly on Ctrl-C and on ``kill``."""

from __future__ import annotations

import signal


def stop_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, so a trainer checkpoints
    and a worker pool stops its workers on the way out: also where a shell started the process
    in the background with SIGINT ignored, and for a plain ``kill``."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
