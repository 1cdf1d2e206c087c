"""Does following the truncated (TBPTT) gradient with small steps make the training loss rise?

    python bench/tbptt_bias.py --data DATA_FOLDER [--out out/tbptt_bias] [--base-epochs 40] [--epochs 20]

One model is trained from scratch for ``--base-epochs`` at 1e-2 (the default preset, but
with no learning-rate schedule, no weight average and no weight decay, so that nothing but
the step size and the update window changes below). From its final state, with its
optimiser's moments, it is trained on for ``--epochs`` in four ways side by side:

* ``1e-2, 500``   the same rate and 500-sample update windows (the default preset's);
* ``1e-3, 500``   a tenth of the rate, the same windows (what a plateau schedule does);
* ``1e-3, 4000``  a tenth of the rate, 4000-sample windows;
* ``1e-3, whole`` a tenth of the rate, one update per 0.5 s segment (no truncation).

It prints each continuation's training loss per epoch and, side by side, the first, the
lowest and the last epoch's loss and last / lowest: a ratio above 1 is a loss that rose
under the run's own updates. The truncated gradient ignores what a window's weights do to
the state carried into the next window; the claim tested is that this bias, hidden by the
noise of large steps, takes over once the rate is small, and that longer windows remove it
(``TrainConfig.tbptt_grow``). Results: ``bench/RESULTS_real_gear.md``. Use a data folder
prepared by ``bench/real_gear.py`` (``OUT/data/DEVICE``) or by ``ampxfer prepare``. One thread;
CPU seconds of this process and wall seconds per continuation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ampxfer_lib.training.config import make_config  # noqa: E402
from ampxfer_lib.training.loop import train  # noqa: E402

#: (label, learning rate, update window in samples; None: the whole segment)
CONTINUATIONS = (("1e-2, 500", 1e-2, 500), ("1e-3, 500", 1e-3, 500),
                 ("1e-3, 4000", 1e-3, 4000), ("1e-3, whole", 1e-3, None))
#: Only the step size and the window may differ between the continuations.
FIXED = dict(device="cpu", threads=1, weight_decay=0.0, ema_decay=0.0, scheduler="none", patience=10 ** 6,
             seed=0, match_level="none")


def train_losses(folder: Path) -> list:
    return [r["train_loss"] for r in json.loads((folder / "history.json").read_text())
            if r.get("train_loss") is not None]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a prepared data folder (manifest.json, train/val wavs)")
    ap.add_argument("--out", default="out/tbptt_bias", help="run folders (reused: a finished run is not redone)")
    ap.add_argument("--base-epochs", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not (data / "manifest.json").exists():
        raise SystemExit(f"error: --data {data}: not a prepared data folder (no manifest.json); "
                         "prepare one with `ampxfer prepare` or bench/real_gear.py")
    out = Path(args.out) / data.name
    base = out / "base"
    t = time.process_time()
    train(make_config(data, lr=1e-2, max_epochs=args.base_epochs, **FIXED), base, log=False)
    print(f"base: {args.base_epochs} epochs at 1e-2, last training loss {train_losses(base)[-1]:.4f} "
          f"({time.process_time() - t:.0f} s CPU)", flush=True)
    rate = json.loads((data / "manifest.json").read_text())["sample_rate"]
    segment = int(round(make_config(data).segment_seconds * rate))
    rows = []
    for label, lr, window in CONTINUATIONS:
        folder = out / f"lr{lr:g}_w{window or 'whole'}"
        t, wall = time.process_time(), time.perf_counter()
        train(make_config(data, init_from=str(base), keep_optimizer=True, lr=lr, max_epochs=args.epochs,
                          tbptt_samples=window or segment, **FIXED), folder, log=False)
        losses = train_losses(folder)
        cpu, wall = time.process_time() - t, time.perf_counter() - wall
        print(f"{label:12s} " + " ".join(f"{v:.4f}" for v in losses), flush=True)
        rows.append((label, losses[0], min(losses), losses[-1], losses[-1] / min(losses), cpu, wall))
    print(f"\n{data.name}: training loss of {args.epochs} epochs continued from the same state\n")
    print("| rate, window | first | lowest | last | last / lowest | CPU s | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, first, low, last, ratio, cpu, wall in rows:
        print(f"| {label} | {first:.4f} | {low:.4f} | {last:.4f} | {ratio:.3f} | {cpu:.0f} | {wall:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
