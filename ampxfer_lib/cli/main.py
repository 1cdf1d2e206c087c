"""Command line: ``python -m ampxfer_lib COMMAND`` (also installed as ``ampxfer``).

One thin function per command; the work is done by the library, so a notebook, a script
and a test call the same code. ``main(argv)`` returns the exit status instead of exiting,
so tests call it in-process. Errors print one line on stderr (``--debug`` for a traceback).

The commands live beside this module, one per command group: :mod:`~ampxfer_lib.cli.data`
(prepare), :mod:`~ampxfer_lib.cli.train` (train, render, evaluate),
:mod:`~ampxfer_lib.cli.models` (export, import, rank), :mod:`~ampxfer_lib.cli.study` (study).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, List, Optional, Sequence

from ampxfer_lib import __version__
from ampxfer_lib.cli.capture import add_capture, add_library
from ampxfer_lib.cli.common import eprint
from ampxfer_lib.cli.data import add_prepare
from ampxfer_lib.cli.models import add_export, add_import, add_rank
from ampxfer_lib.cli.study import add_study
from ampxfer_lib.cli.train import add_evaluate, add_render, add_train
from ampxfer_lib.errors import AmpxferError

#: Each command's add-parser function, in the order ``--help`` lists them.
COMMANDS: List[Callable] = [add_capture, add_prepare, add_train, add_render, add_evaluate, add_export, add_import,
                            add_study, add_rank, add_library]


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag like every other error: one ``error:`` line naming the
    flag, the value and the range, exit status 2 (the usage text is a ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="ampxfer", description="Capture guitar pedals and amps as LSTM models.")
    parser.add_argument("--version", action="version", version=f"ampxfer {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its usage line
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AmpxferError as exc:
        if debug:
            raise
        eprint(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        eprint("interrupted: rerun the same command to resume from the last checkpoint")
        return 130
    except Exception as exc:  # a bug: one line, and the way to the details
        if debug:
            raise
        eprint(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback, and please report it)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
