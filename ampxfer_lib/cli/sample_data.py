"""``python -m ampxfer_lib.sample_data``: check or render the sample recordings."""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ampxfer_lib.cli.common import eprint
from ampxfer_lib.errors import AmpxferError
from ampxfer_lib.sample_data.files import CHECKOUT_SAMPLE_DIR, check, ensure_sample_data, rebuild_reference


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ampxfer_lib.sample_data",
                                     description="Check or render the ampxfer sample data.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="verify existing files, render nothing")
    mode.add_argument("--render", action="store_true",
                      help="render missing recordings and re-render ones that fail verification (default)")
    mode.add_argument("--rebuild-reference", action="store_true",
                      help="maintainers: rebuild di.flac, previews and CHECKSUMS.json in --root")
    parser.add_argument("--root", default=None, help="sample data folder (default: $AMPXFER_SAMPLE_DIR "
                        "or the repository's sample_data/)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.rebuild_reference:
            rebuild_reference(args.root or CHECKOUT_SAMPLE_DIR)
            print(f"rebuilt the reference in {args.root or CHECKOUT_SAMPLE_DIR}")
        elif args.check:
            print("\n".join(check(args.root)))
        else:
            data = ensure_sample_data(args.root, rerender=True)
            print(f"DI: {data.di}")
            for name, path in data.targets.items():
                print(f"{name}: {path} (latency {data.latency_samples[name]} samples)")
    except AmpxferError as exc:
        eprint(f"error: {exc}")
        return exc.exit_code
    return 0
