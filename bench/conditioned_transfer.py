"""Knob-conditioned capture: transfer (from a snapshot, from another conditioned model) vs scratch.

For each real-gear conditioned capture in ../shared/realdata/models/neuralpi (TS9, BluesJr,
HT40_Overdrive: one knob each) the shared real DI (all 8 clips, 48 kHz -> 44.1 kHz, an
excerpt of each) is rendered through the model at several knob values; that is the
"device" to capture. One knob value is held out of training and validation entirely and
only tested (interpolation). Three runs per device train on the same data, epochs and seed:

* ``scratch``: a fresh conditioned model;
* ``snapshot``: transfer from a snapshot capture (input_size 1; widened with zero knob
  weights, so it starts equal to the snapshot at every knob value);
* ``conditioned``: transfer from the conditioned capture of another device.

When the snapshot's polarity is opposite to the device's (TS9_FullD vs TS9 and
BluesJR_FullD vs HT40_Overdrive are), the device is also captured with its targets flipped
to the snapshot's polarity (``prepare --flip-polarity``; polarity is inaudible), with its
own scratch and snapshot runs.

Every run uses 1 torch thread. The table gives the starting (epoch 0) and best validation
loss, the pooled test ESR, the test ESR per knob value (``*`` = held out) and training time.
Rerunning reuses finished renders, data and runs (pass --fresh to start over).

    python bench/conditioned_transfer.py                 # about 20 minutes on 1 thread
    python bench/conditioned_transfer.py --epochs 2 --seconds-per-clip 1 --devices TS9   # a quick look

Sample data (virtual devices with gain knobs, ``ampxfer_lib.sample_data.files``) is benchmarked too
when that module provides ``render_conditioned_captures``; otherwise that part is skipped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from ampxfer_lib.transfer.conditioning import knob_table, prepare_knob_dataset, realdata_dir  # noqa: E402
from ampxfer_lib.training.evaluate import evaluate  # noqa: E402
from ampxfer_lib.training.config import make_config  # noqa: E402
from ampxfer_lib.training.loop import train  # noqa: E402

#: Another device's conditioned capture to transfer from (the snapshots: conditioning.REAL_DEVICES).
CONDITIONED = {"TS9": "BluesJr", "BluesJr": "TS9", "HT40_Overdrive": "TS9"}


def run_arm(data: Path, run_dir: Path, init_from, epochs: int, seed: int, holdout) -> dict:
    # agam: the recipe RESULTS_conditioned.md was measured with.
    config = make_config(data, "agam", max_epochs=epochs, patience=10_000, val_every=1, seed=seed, threads=1,
                         init_from=str(init_from) if init_from else None, hidden_size=20)
    summary = train(config, run_dir)
    result = evaluate(run_dir / "model_best.json", data)
    return {"summary": summary, "knobs": knob_table(result, holdout)}


def fmt(x, digits=4):
    return "n/a" if x is None else f"{x:.{digits}f}"


def table(rows, knobs, holdout) -> str:
    heads = [f"k{k:g}{'*' if holdout is not None and abs(k - holdout) < 1e-9 else ''}" for k in knobs]
    out = ["| device | start | epoch-0 val | best val | test ESR | " + " | ".join(heads) + " | train s |",
           "|---|---|---|---|---|" + "---|" * len(heads) + "---|"]
    for r in rows:
        s = r["summary"]
        per = {round(row["knobs"][0], 6): row["esr"] for row in r["knobs"]}
        cells = [fmt(per.get(round(k, 6))) for k in knobs]
        out.append(f"| {r['device']} | {r['arm']} | {fmt(s['initial_val_loss'])} | {fmt(s['best_val_loss'])} | "
                   f"{fmt(s['test_esr'])} | " + " | ".join(cells) + f" | {s['train_seconds']:.0f} |")
    return "\n".join(out)


def sample_data_sets(out: Path, knobs, holdout, seconds_per_clip):
    """(name, data folder) per virtual device of the sample data, when it can render conditioned captures."""
    from ampxfer_lib.transfer.conditioning import SAMPLE_PREFIX, _sample_renderer

    if _sample_renderer() is None:
        print("sample data: ampxfer_lib.sample_data.files (render_conditioned_captures) is not available; skipping")
        return []
    sets = []
    for device in ("ts9", "ht40"):
        ds = prepare_knob_dataset(SAMPLE_PREFIX + device, knobs, out, holdout=holdout,
                                  seconds_per_clip=seconds_per_clip)
        sets.append((f"sample:{device}", ds.data))
    return sets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "out" / "bench" / "conditioned"))
    p.add_argument("--devices", default="TS9,BluesJr,HT40_Overdrive")
    p.add_argument("--knobs", default="0,0.25,0.5,0.75,1")
    p.add_argument("--holdout", type=float, default=0.5, help="knob value kept for testing only (-1: none)")
    p.add_argument("--seconds-per-clip", type=float, default=2.5, help="DI seconds taken from each of the 8 clips")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="delete earlier results in --out first")
    p.add_argument("--no-polarity-match", dest="polarity_match", action="store_false",
                   help="do not add the runs on polarity-flipped targets")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    real = realdata_dir()
    if real is None:
        print("../shared/realdata is absent (set AMPXFER_REALDATA); nothing to benchmark")
        return 1
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    knobs = [float(k) for k in args.knobs.split(",")]
    holdout = None if args.holdout < 0 else args.holdout
    models = real / "models" / "neuralpi"
    t0 = time.monotonic()
    print(f"DI: {8 * args.seconds_per_clip:.1f} s per knob value from the 8 real clips (15 % validation, 15 % test); "
          f"knobs {knobs}, held out {holdout}; {args.epochs} epochs per run")

    rows = []

    def run(device_label, data, arm, init):
        run_dir = out / "runs" / device_label.replace(" (flipped)", "_flipped").replace(":", "_") / arm.split()[0]
        r = run_arm(data, run_dir, init, args.epochs, args.seed, holdout)
        rows.append({"device": device_label, "arm": arm, **r})
        print(f"{device_label:20s} {arm:28s} epoch-0 val {fmt(r['summary']['initial_val_loss'])}  best val "
              f"{fmt(r['summary']['best_val_loss'])}  test ESR {fmt(r['summary']['test_esr'])}  "
              f"{r['summary']['train_seconds']:.0f} s", flush=True)

    for device in args.devices.split(","):
        ds = prepare_knob_dataset(device, knobs, out, holdout=holdout, seconds_per_clip=args.seconds_per_clip, flip=False)
        snap = ds.snapshot
        run(device, ds.data, "scratch", None)
        run(device, ds.data, f"snapshot {snap.stem}", snap)
        run(device, ds.data, f"conditioned {CONDITIONED[device]}", models / f"{CONDITIONED[device]}.json")
        # Polarity is inaudible but a skip model cannot invert itself: when the snapshot's
        # polarity is opposite to the device's, also capture with the targets flipped to match
        # it (prepare --flip-polarity), scratch and snapshot on that data.
        print(f"{device}: correlation of {snap.stem} with the device over the knobs {ds.snapshot_correlation:+.2f}")
        if args.polarity_match and ds.snapshot_correlation < -0.3:
            flipped = prepare_knob_dataset(device, knobs, out, holdout=holdout, seconds_per_clip=args.seconds_per_clip,
                                           flip=True)
            run(f"{device} (flipped)", flipped.data, "scratch", None)
            run(f"{device} (flipped)", flipped.data, f"snapshot {snap.stem}", snap)
    for name, data in sample_data_sets(out, knobs, holdout, args.seconds_per_clip):
        run(name, data, "scratch", None)
        snap = "TS9_FullD" if "ts9" in name else "BluesJR_FullD"  # real-gear snapshots of the kind
        run(name, data, f"snapshot {snap}", models / f"{snap}.json")

    text = table(rows, knobs, holdout)
    print()
    print(text)
    print(f"\ntotal {time.monotonic() - t0:.0f} s (epochs {args.epochs}, seed {args.seed}, 1 thread; * = held-out knob)")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
