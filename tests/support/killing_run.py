"""The ampxfer command line in a process that SIGKILLs itself at a chosen atomic write.

A kill point ``N[:STAGE]`` is the process's N-th atomic write (counted from 1) at STAGE
``partial`` (half the temporary file written), ``written`` (the temporary file complete, the
default) or ``renamed`` (the new file in place): the moments
:data:`ampxfer_lib.fileio.write_observer` reports. The library knows nothing of kills; this
module installs the observer that does it. In a forked child::

    install("3:partial"); ampxfer_lib.cli.main.main(argv)

and as a launcher in a fresh interpreter (from the repository root)::

    python -m tests.support.killing_run 3:partial -- train --data DATA --out RUN ...
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from ampxfer_lib import fileio

STAGES = ("partial", "written", "renamed")


def kill_point(spec: str) -> Callable[[str, Path], None]:
    """A write observer that SIGKILLs this process at the write and stage ``spec`` names."""
    n_text, _, stage = spec.partition(":")
    n, stage = int(n_text), stage or "written"
    if n < 1 or stage not in STAGES:
        raise ValueError(f"kill point {spec!r}: expected N[:STAGE], N >= 1, STAGE one of {', '.join(STAGES)}")
    writes = 0

    def observe(at: str, path: Path) -> None:
        nonlocal writes
        if at == "partial":  # the first moment of every write
            writes += 1
        if writes == n and at == stage:
            os.kill(os.getpid(), signal.SIGKILL)

    return observe


def install(spec: Optional[str]) -> None:
    """Kill this process at ``spec`` (None: no kill point; the writes are left alone)."""
    fileio.write_observer = kill_point(spec) if spec else None


def main(argv: Sequence[str]) -> int:
    args: List[str] = list(argv)
    if len(args) < 2 or args[1] != "--":
        print("usage: python -m tests.support.killing_run N[:STAGE] -- AMPXFER_ARGS...", file=sys.stderr)
        return 2
    from ampxfer_lib.cli.main import main as ampxfer

    install(args[0])
    return ampxfer(args[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
