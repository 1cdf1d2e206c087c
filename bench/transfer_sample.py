"""The transfer-learning study on the shipped sample data (the article's two pairs).

    python bench/transfer_sample.py [--out out/bench/sample_study] [--epochs-full 30 --epochs-limited 60
                                    --source-epochs 60] [--seeds 0 1] [--executor ray]

Prepares the four sample devices into ``out/data`` (rendered on first use), then runs the
shipped ``sample_pairs`` study: TS9-style -> MT-2-style (pedal) and Blues Jr-style ->
HT40-style (amp), sources trained from scratch on their full data first, every target trained
from scratch and from its source with the ``agam`` preset on the full (150 s) and limited
(30 s) training audio. The same as ``ampxfer study --config sample_pairs --data-root out/data
--prepare-sample-data`` with the budgets given here. Prints Table 1 (also in OUT/table1.md).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "out" / "bench" / "sample_study"))
    p.add_argument("--data-root", default=str(REPO / "out" / "data"))
    p.add_argument("--epochs-full", type=int, default=30)
    p.add_argument("--epochs-limited", type=int, default=60)
    p.add_argument("--source-epochs", type=int, default=60)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--address", default=None)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from ampxfer_lib.study.config import load_study, prepare_sample_pairs, shipped_studies
    from ampxfer_lib.study.executors import make_executor
    from ampxfer_lib.study.run import run_study

    prepare_sample_pairs(args.data_root)
    config = load_study(shipped_studies()["sample_pairs"], data_root=args.data_root)
    config = replace(config, max_epochs={"full": args.epochs_full, "limited": args.epochs_limited},
                     source_max_epochs=args.source_epochs, seeds=tuple(args.seeds))
    outcome = run_study(config, args.out, make_executor(args.executor, args.address))
    print(f"\ncommand: python bench/transfer_sample.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(outcome.table1.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
