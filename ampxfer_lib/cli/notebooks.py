"""``python -m ampxfer_lib.notebooks``: run the notebook suite, and keep its committed copies tidy.

Command line::

    python -m ampxfer_lib.notebooks run --all --out out/demo [--smoke] [--budget demo|article]
    python -m ampxfer_lib.notebooks run 01 02 --out out/demo --set EPOCHS_FULL=4 [--quiet]
    python -m ampxfer_lib.notebooks strip [notebooks/*.ipynb]      outputs out, before committing
    python -m ampxfer_lib.notebooks check                           no outputs, one parameters cell
    python -m ampxfer_lib.notebooks sync                            Colab set-up cells = colab.setup_cell_source()

Each command takes ``--notebooks DIR``, the folder of the suite's notebooks (default: the
source checkout's ``notebooks/``, :data:`ampxfer_lib.notebooks.runner.NOTEBOOK_DIR`).
``run`` prints a line per notebook on stdout and, unless ``--quiet``, the cells' progress on
stderr as they run (the cell executing, what it prints, a line every 30 s while it is silent).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from ampxfer_lib.cli.common import eprint, key_values
from ampxfer_lib.errors import AmpxferError, ConfigError
from ampxfer_lib.validate import arg_float
from ampxfer_lib.notebooks.runner import (BUDGETS, NOTEBOOK_DIR, find_notebooks, has_outputs, problems, read_notebook,
                                          run_suite, strip_outputs, sync_setup_cell, write_notebook)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ampxfer_lib.notebooks", description="Run and tidy the notebook suite.")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--notebooks", default=None, metavar="DIR",
                       help="folder of the suite's notebooks (default: the source checkout's notebooks/)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="execute notebooks into an output folder", parents=[where])
    p.add_argument("names", nargs="*", help="notebooks by number or name (default with --all: the whole suite)")
    p.add_argument("--all", action="store_true", help="the whole suite, in order")
    p.add_argument("--out", required=True, help="output folder: executed notebooks and everything they write")
    p.add_argument("--smoke", action="store_true", help="AMPXFER_SMOKE=1: tiny data and budgets (CI)")
    p.add_argument("--budget", choices=BUDGETS, default=None, help="training budget (default: the notebooks' own, demo)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a notebook parameter")
    p.add_argument("--timeout", type=arg_float(0, lo_open=True), default=None, help="seconds per cell (default 600 smoke, 6 h otherwise)")
    p.add_argument("--quiet", action="store_true",
                   help="only a line per notebook: no cell progress on stderr")
    for name, text in (("strip", "remove outputs (before committing)"), ("check", "report notebooks with outputs "
                       "or without the set-up/parameters cells"), ("sync", "rewrite the Colab set-up cells")):
        q = sub.add_parser(name, help=text, parents=[where])
        q.add_argument("paths", nargs="*", help="notebooks (default: the suite)")
    return parser


def say(line: str) -> None:
    # Flushed, so that it keeps its place among the progress lines on stderr when stdout is a pipe.
    print(line, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    folder = Path(args.notebooks) if args.notebooks else NOTEBOOK_DIR
    try:
        if args.command == "run":
            if not args.all and not args.names:
                raise ConfigError("name the notebooks to run, or pass --all")
            timeout = args.timeout or (600 if args.smoke else 6 * 3600)
            run_suite(args.out, None if args.all else args.names, smoke=args.smoke, budget=args.budget,
                      extra=key_values(args.set, name="NAME", dashes_to_underscores=False), timeout=timeout,
                      folder=folder, log=say, progress=None if args.quiet else eprint)
            return 0
        paths = [Path(p) for p in args.paths] or find_notebooks(folder=folder)
        if args.command == "strip":
            for path in paths:
                nb = read_notebook(path)
                if has_outputs(nb) or "widgets" in nb.metadata:
                    write_notebook(strip_outputs(nb), path)
                    print(f"stripped {path}")
        elif args.command == "sync":
            for path in paths:
                if sync_setup_cell(path):
                    print(f"updated the set-up cell of {path}")
        else:
            found = [line for path in paths for line in problems(path)]
            print("\n".join(found) or f"{len(paths)} notebook(s) ok")
            return 1 if found else 0
    except AmpxferError as exc:
        eprint(f"error: {exc}")
        return exc.exit_code
    return 0
