"""Fine-tuning recipes compared side by side: which transfer default trains best and fastest?

    python bench/finetune_recipes.py [--epochs 10] [--cases real_pedal real_amp sample_pedal sample_amp]
                                     [--sample-data out/data] [--out DIR]

Recipes (all start from the same source run folder, agam preset otherwise, same epoch budget,
same limited training audio and validation audio as the target's scratch run):

* ``plain``      fine-tune everything at the preset lr (5e-3), fresh Adam: the article's setting
* ``lr_1e-3``    the same at lr 1e-3
* ``lr_5e-4``    the same at lr 5e-4
* ``freeze_2``   dense layer only for 2 epochs (LSTM frozen), then everything at 5e-3
* ``keep_opt``   like plain, but Adam's moment estimates carried over from the source run

Cases: real DI through real captures (``real_pedal``: TS9_FullD -> BossMetalZoneMt2_highGain,
``real_amp``: BluesJR_FullD -> HT40_Overdrive at 0.25), and the sample data pairs
(``sample_pedal``: ts9 -> mt2, ``sample_amp``: bluesjr -> ht40) when ``--sample-data`` holds
prepared folders of those names (with ``--sample-study``, the source runs of that study are
reused, otherwise sources are trained from scratch on their full data). On real data the source model file is first trained for two
epochs on its own device's limited data, so that a source *run folder* with an optimiser state
exists; every recipe then starts from that run's best model. Scratch runs on the same budget
are the reference. Results: a Markdown table (best validation loss, loss after the first
validation, time to reach plain's best loss) and OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realdata_targets import REPO, device_data, realdata_dir  # noqa: E402

RECIPES = {
    "plain": {},
    "lr_1e-3": {"lr": 1e-3},
    "lr_5e-4": {"lr": 5e-4},
    "freeze_2": {"freeze_lstm_epochs": 2},
    "keep_opt": {"keep_optimizer": True},
}


def cases(args):
    out = {}
    real = realdata_dir()
    if real is not None:
        npi, lib = real / "models" / "neuralpi", real / "models" / "tonelibrary_h20"
        out["real_pedal"] = {"source_model": npi / "TS9_FullD.json",
                             "source_data": lambda: device_data(real, npi / "TS9_FullD.json"),
                             "target": lambda: device_data(real, lib / "BossMetalZoneMt2_highGain.json")}
        out["real_amp"] = {"source_model": npi / "BluesJR_FullD.json",
                           "source_data": lambda: device_data(real, npi / "BluesJR_FullD.json"),
                           "target": lambda: device_data(real, npi / "HT40_Overdrive.json", [0.25])}
    if args.sample_data:
        root = Path(args.sample_data)
        pairs = {"sample_pedal": ("ts9", "mt2", "pedal"), "sample_amp": ("bluesjr", "ht40", "amp")}
        for name, (src, tgt, pair) in pairs.items():
            if (root / src / "manifest.json").exists() and (root / tgt / "manifest.json").exists():
                run = Path(args.sample_study) / "runs" / "source" / pair if args.sample_study else None
                out[name] = {"source_model": None, "source_data": lambda s=src: root / s,
                             "target": lambda t=tgt: root / t,
                             "source_run": run if run is not None and (run / "summary.json").exists() else None}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "out" / "bench" / "finetune_recipes"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--source-epochs", type=int, default=None,
                   help="epochs of a source trained from scratch (sample data; default 3x --epochs)")
    p.add_argument("--cases", nargs="*", default=None)
    p.add_argument("--recipes", nargs="*", default=list(RECIPES))
    p.add_argument("--sample-data", default=None, help="folder with prepared ts9/mt2/bluesjr/ht40 data")
    p.add_argument("--sample-study", default=None,
                   help="a finished sample study (bench/transfer_sample.py): its source runs are the sources")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from ampxfer_lib.training.checkpoint import read_history
    from ampxfer_lib.study.report import time_to_quality
    from ampxfer_lib.training.callbacks import LogLines
    from ampxfer_lib.training.config import make_config
    from ampxfer_lib.training.loop import train

    available = cases(args)
    chosen = args.cases or list(available)
    missing = [c for c in chosen if c not in available]
    if missing:
        print(f"skipped {', '.join(missing)}: data absent (real data: ../shared/realdata; sample: --sample-data)")
    out = Path(args.out)
    results = {}
    quiet = LogLines(write=lambda line: None)
    for case in [c for c in chosen if c in available]:
        spec = available[case]
        target = spec["target"]()
        src_dir = out / case / "source"
        if spec.get("source_run") is not None:
            src_dir = spec["source_run"]  # a finished source run of the sample study: reused as it is
        elif spec["source_model"] is not None:
            # two epochs of the capture on its own device: a run folder with an optimiser state
            src_cfg = make_config(spec["source_data"](), "agam", subset="limited", max_epochs=2,
                                  init_from=str(spec["source_model"]))
        else:
            src_cfg = make_config(spec["source_data"](), "agam", subset="full",
                                  max_epochs=args.source_epochs or 3 * args.epochs)
        if spec.get("source_run") is None:
            train(src_cfg, src_dir, [quiet])
        budget = dict(subset="limited", max_epochs=args.epochs)
        runs = {"scratch": make_config(target, "agam", **budget)}
        for name in args.recipes:
            runs[name] = make_config(target, "agam", init_from=str(src_dir), **budget, **RECIPES[name])
        summaries = {}
        for name, cfg in runs.items():
            summaries[name] = train(cfg, out / case / name, [quiet])
            print(f"{case} {name}: best val {summaries[name]['best_val_loss']:.5f} "
                  f"({summaries[name]['train_seconds']:.0f} s)", flush=True)
        hist = {name: read_history(out / case / name) for name in runs}
        ref = hist.get("plain", hist["scratch"])
        results[case] = {}
        for name in runs:
            s = summaries[name]
            ttq = time_to_quality(hist[name], ref)
            results[case][name] = {
                "start": hist[name][0]["val_loss"], "first_val": s["first_val_loss"], "best_val": s["best_val_loss"],
                "best_epoch": s["best_epoch"], "test_esr": s["test_esr"], "train_seconds": s["train_seconds"],
                "ttq_epoch": ttq["transfer_epoch"], "ttq_seconds": ttq["transfer_seconds"],
                "ttq_ratio": ttq["seconds_ratio"], "curve": [(h["epoch"], h["val_loss"]) for h in hist[name]
                                                            if h["val_loss"] is not None]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(report(results, args))
    return 0


def report(results, args) -> str:
    lines = [f"command: python bench/finetune_recipes.py --epochs {args.epochs}"
             + (f" --sample-data {args.sample_data}" if args.sample_data else "")
             + (f" --sample-study {args.sample_study}" if args.sample_study else "")
             + (f" --cases {' '.join(args.cases)}" if args.cases else ""), ""]
    for case, rows in results.items():
        lines += [f"### {case} (limited data, {args.epochs} epochs)", "",
                  "| recipe | start loss | loss at epoch 2 | best val loss | best epoch | test ESR | train time (s) | "
                  "reaches plain's best at epoch (s) | time ratio vs plain |",
                  "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
        for name, r in rows.items():
            ttq = f"{r['ttq_epoch']} ({r['ttq_seconds']:.0f})" if r["ttq_epoch"] is not None else "not reached"
            ratio = f"{r['ttq_ratio']:.2f}" if r["ttq_ratio"] is not None else "–"
            lines.append(f"| {name} | {r['start']:.4f} | {r['first_val']:.4f} | {r['best_val']:.4f} | "
                         f"{r['best_epoch']} | {r['test_esr']:.4f} | {r['train_seconds']:.0f} | {ttq} | {ratio} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
