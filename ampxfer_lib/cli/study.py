"""``ampxfer study``: train a study config's runs (scratch vs transfer) and write its report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import List

from ampxfer_lib.errors import ConfigError
from ampxfer_lib.study.config import STUDIES_DIR, StudyConfig, load_study, prepare_sample_pairs, shipped_studies
from ampxfer_lib.study.executors import make_executor
from ampxfer_lib.study.plan import plan_study, run_state
from ampxfer_lib.study.run import run_study
from ampxfer_lib.validate import MAX_THREADS, arg_int


def add_study(sub) -> None:
    p = sub.add_parser("study", help="transfer-learning study: scratch vs transfer on device pairs",
                       description="Train every target of a study config from scratch and from its source "
                                   "model (same preset, budget and validation audio), then write results.csv, "
                                   "table1.md and figures/. Rerun the same command to resume.")
    p.add_argument("--config", required=True, metavar="STUDY.json",
                   help="study config (or the name of a shipped one: " + ", ".join(shipped_studies()) + ")")
    p.add_argument("--out", required=True, help="study folder")
    p.add_argument("--data-root", default=None, help="resolve the config's relative paths against this folder "
                                                     "(default: the config file's folder)")
    p.add_argument("--smoke", action="store_true", help="a few epochs per run (a quick check of the pipeline)")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local: one run after the other here; ray: runs as Ray tasks")
    p.add_argument("--address", default=None, help="Ray cluster address (default: a Ray instance on this machine)")
    p.add_argument("--seeds", type=arg_int(0), nargs="+", default=None, help="override the config's seeds")
    p.add_argument("--max-epochs", type=arg_int(1), default=None, help="override the config's epoch budget")
    p.add_argument("--threads", type=arg_int(1, MAX_THREADS), default=None, help="torch threads per run (default: the config's, 1)")
    p.add_argument("--prepare-sample-data", action="store_true",
                   help="first prepare the sample devices (ts9, mt2, bluesjr, ht40) into --data-root")
    p.add_argument("--dry-run", action="store_true", help="print the planned runs and their state, train nothing")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.add_argument("--progress", default="bar", choices=["bar", "none"])
    p.set_defaults(func=run_study_cli)


def _config_folders(path: Path) -> List[str]:
    config = StudyConfig.from_dict(json.loads(path.read_text()), str(path))
    return [f for p in config.pairs for f in (p.target, p.source.data) if f]


def run_study_cli(args) -> int:
    path = Path(args.config)
    if not path.exists() and args.config in shipped_studies():
        path = shipped_studies()[args.config]
    if args.prepare_sample_data:
        if args.data_root is None:
            raise ConfigError("--prepare-sample-data needs --data-root FOLDER to prepare the sample devices into")
        prepare_sample_pairs(args.data_root, progress=args.progress == "bar")
    if args.data_root is None and path.resolve().parent == STUDIES_DIR:
        raise ConfigError(f"{path.name}: a shipped study names prepared sample data folders "
                          f"({', '.join(sorted({Path(p).name for p in _config_folders(path)}))}); "
                          "pass --data-root FOLDER that holds them (--prepare-sample-data prepares them there)")
    config = load_study(path, args.data_root)
    overrides = {k: v for k, v in (("seeds", tuple(args.seeds) if args.seeds else None),
                                   ("max_epochs", args.max_epochs), ("threads", args.threads)) if v is not None}
    if overrides:
        config = replace(config, **overrides)
    if args.dry_run:
        for spec in plan_study(config, args.out, args.smoke):
            after = f"  after {', '.join(spec.after)}" if spec.after else ""
            print(f"{run_state(spec):8s} {spec.run_id}  ({spec.config.data}, {spec.config.subset}, "
                  f"max {spec.config.max_epochs} epochs){after}")
        return 0
    executor = make_executor(args.executor, args.address, progress=args.progress == "bar")
    outcome = run_study(config, args.out, executor, smoke=args.smoke, progress=args.progress == "bar",
                        figures=not args.no_figures)
    print(f"wrote {outcome.results_csv}, {outcome.table1}"
          + (f" and {len(outcome.figures)} figure(s) in {outcome.out_dir / 'figures'}" if outcome.figures else ""))
    print(outcome.table1.read_text())
    return 0
