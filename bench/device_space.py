"""Does the device-space start beat the best single library start on leave-one-out real gear?

Per real device (a prepared data folder ``<data>/<device>``): the device-space model's 3 knobs are
fitted on the ``limited`` 30 s of training audio (:func:`ampxfer_lib.transfer.device_space.folded_start`,
starting from the best of the 27-point grid and the training devices' mean embedding), folded into
a snapshot, and that snapshot is fine-tuned with the library's default recipe on the same 30 s::

    make_config(data, None, subset="limited", seed=0, init_from=<snapshot>, device="cpu", threads=1)

One thread. Recorded: the epoch-0 validation ESR of the folded start (after the trainer's default
level match), the test ESR of the best model, epochs, and CPU seconds (``time.process_time``) of
the fit and of the fine-tune. Each device's ``result.json`` is kept under ``--out``; a device
with one is not run again, so the command resumes. ``--table`` prints the Markdown table from
what is on disk, beside the numbers this repository measured on the same data, recipe and seed
(bench/RESULTS_real_gear.md): the quick capture from the best real-library start (leave-one-out),
the random start (``scratch_limited``) and the start ranked from the seven shipped models.

Usage::

    python bench/device_space.py --data /work/rg/data --out /work/ds_runs [--devices ts9,rat] [--table]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ampxfer_lib.fileio import atomic_write_json  # noqa: E402
from ampxfer_lib.library.index import SHIPPED_MODELS  # noqa: E402
from ampxfer_lib.model.formats import load_model, save_model  # noqa: E402
from ampxfer_lib.training.checkpoint import read_history  # noqa: E402
from ampxfer_lib.training.config import make_config  # noqa: E402
from ampxfer_lib.training.loop import train  # noqa: E402
from ampxfer_lib.transfer.device_space import DeviceSpaceConfig, folded_start  # noqa: E402

DEVICES = ("princeton_clean", "mt2", "ts9", "rat", "tumnus", "bigmuff", "ht40_d025", "soldano_hg")
#: Test ESRs measured by bench/real_gear.py on the same data, recipe and seed 0 (RESULTS_real_gear.md).
BEST_LIBRARY = {"princeton_clean": 0.0036, "mt2": 0.00078, "ts9": 0.0013, "rat": 0.0018, "tumnus": 0.0076,
                "bigmuff": 0.0086, "ht40_d025": 0.0092, "soldano_hg": 0.060}
#: The same runs' epoch-0 validation ESR (after the level match) and CPU seconds (the run's own).
LIBRARY_EPOCH0 = {"princeton_clean": 0.8944, "mt2": 0.3012, "ts9": 0.6680, "rat": 0.2562, "tumnus": 0.3178,
                  "bigmuff": 0.6968, "ht40_d025": 0.7254, "soldano_hg": 0.9540}
LIBRARY_CPU = {"princeton_clean": 155, "mt2": 391, "ts9": 218, "rat": 79, "tumnus": 84, "bigmuff": 146,
               "ht40_d025": 186, "soldano_hg": 87}
SCRATCH = {"princeton_clean": 0.0100, "mt2": 0.0012, "ts9": 0.0219, "rat": 0.0048, "tumnus": 0.0018,
           "bigmuff": 0.0032, "ht40_d025": 0.0083, "soldano_hg": 0.186}
SHIPPED = {"princeton_clean": 0.0022, "mt2": 0.0010, "ts9": 0.0152, "rat": 0.0005, "tumnus": 0.0015,
           "bigmuff": 0.0035, "ht40_d025": 0.0289, "soldano_hg": 0.3403}
RESULT = "result.json"


def run_device(device: str, data: Path, out: Path, model: Path) -> dict:
    """Fit, fold, fine-tune one device; returns (and writes) its result."""
    import torch

    torch.set_num_threads(1)
    folder = out / device
    folder.mkdir(parents=True, exist_ok=True)
    weights = load_model(model)
    meta = json.loads(model.with_name(model.stem + ".meta.json").read_text())
    config = DeviceSpaceConfig.from_dict(meta["config"])
    c0 = time.process_time()
    snap, fit = folded_start(weights, data / device, config, subset="limited", starts=[meta["mean_embedding"]])
    fit_cpu = time.process_time() - c0
    start = folder / "start.json"
    save_model(snap, start)
    c1 = time.process_time()
    tc = make_config(data / device, None, subset="limited", seed=0, init_from=str(start), device="cpu", threads=1)
    summary = train(tc, folder / "run")
    tune_cpu = time.process_time() - c1
    epoch0 = next(h for h in read_history(folder / "run") if h["epoch"] == 0)
    result = {"device": device, "knobs": list(fit.knobs), "fit_start": list(fit.start), "fit_start_esr": fit.start_esr,
              "fit_esr": fit.esr, "fit_esr_level_matched": fit.esr_level_matched, "fit_cpu_seconds": round(fit_cpu, 1),
              "epoch0_val_esr": epoch0["val_esr"], "test_esr": summary["test_esr"], "epochs": summary["epochs"],
              "best_epoch": summary["best_epoch"], "stop_reason": summary["stop_reason"],
              "finetune_cpu_seconds": round(tune_cpu, 1), "cpu_seconds": round(fit_cpu + tune_cpu, 1)}
    atomic_write_json(folder / RESULT, result)
    return result


def table(out: Path, devices: Sequence[str]) -> str:
    rows = ["| device | fitted knobs | fit ESR (level-matched) | epoch-0 val ESR | library epoch-0 val ESR | "
            "device-space test ESR | epochs | CPU s (fit + fine-tune) | library CPU s | best library (LOO) | "
            "scratch_limited | quick[shipped] | ds / library | ds / scratch | ds / shipped |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for d in devices:
        path = out / d / RESULT
        if not path.exists():
            rows.append(f"| {d} | not run | | | {LIBRARY_EPOCH0[d]:.4f} | | | | {LIBRARY_CPU[d]} | {BEST_LIBRARY[d]:.4g} | {SCRATCH[d]:.4g} | {SHIPPED[d]:.4g} | | | |")
            continue
        r = json.loads(path.read_text())
        t = r["test_esr"]
        rows.append(f"| {d} | {', '.join(f'{k:.2f}' for k in r['knobs'])} | {r['fit_esr_level_matched']:.4f} | "
                    f"{r['epoch0_val_esr']:.4f} | {LIBRARY_EPOCH0[d]:.4f} | {t:.4g} | {r['epochs']} | "
                    f"{r['fit_cpu_seconds']:.0f} + {r['finetune_cpu_seconds']:.0f} | {LIBRARY_CPU[d]} | {BEST_LIBRARY[d]:.4g} | {SCRATCH[d]:.4g} | {SHIPPED[d]:.4g} | "
                    f"{t / BEST_LIBRARY[d]:.2f} | {t / SCRATCH[d]:.2f} | {t / SHIPPED[d]:.2f} |")
    return "\n".join(rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder of prepared real-gear data folders, one per device")
    p.add_argument("--out", required=True, help="where the runs and results go")
    p.add_argument("--model", default=str(SHIPPED_MODELS / "device_space.json"), help="the device-space model")
    p.add_argument("--devices", default=",".join(DEVICES), help="comma-separated, run in this order")
    p.add_argument("--table", action="store_true", help="only print the table from the results on disk")
    args = p.parse_args(argv)
    devices = [d for d in args.devices.split(",") if d]
    unknown = [d for d in devices if d not in DEVICES]
    if unknown:
        p.error(f"unknown device(s) {', '.join(unknown)}; these have comparison numbers: {', '.join(DEVICES)}")
    out, data, model = Path(args.out), Path(args.data), Path(args.model)
    if not args.table:
        for d in devices:
            if (out / d / RESULT).exists():
                continue
            r = run_device(d, data, out, model)
            print(f"{d}: test ESR {r['test_esr']:.4g}, epoch-0 val ESR {r['epoch0_val_esr']:.4f}, {r['epochs']} epochs, "
                  f"{r['cpu_seconds']:.0f} s CPU (fit {r['fit_cpu_seconds']:.0f})", flush=True)
    print(table(out, devices))
    return 0


if __name__ == "__main__":
    sys.exit(main())
