"""Build the device-space starting model: ``ampxfer_lib/starting_models/device_space.json``.

One LSTM-20 (skip connection, 44.1 kHz) trained over :data:`SETTINGS`, every virtual device of
:mod:`ampxfer_lib.sample_data.devices` at three gain values (18 device settings), with a learned
3-value embedding per setting as virtual knobs (:mod:`ampxfer_lib.transfer.device_space`,
after Open-Amp, Wright et al. 2024). The model file is an ordinary knob-conditioned NeuralPi JSON
with 3 knobs; ``device_space.meta.json`` beside it gives the training settings, each one's
fitted embedding and validation ESR, the mean embedding (a start for ``fit_knobs``), the
training CPU seconds, licence (MIT: the DI, the devices and the code are this project's own
work) and source.

Data follow ``tools/build_starting_models.py``: the committed synthetic sample DI resampled from
48 to 44.1 kHz, its first :data:`DI_SECONDS` s rendered through each setting and prepared with
no latency to remove (``align=0``): :data:`VAL_SECONDS` s for validation, :data:`TEST_SECONDS` s
for testing, the rest for training. Training runs in one thread until :data:`CPU_BUDGET` s of
CPU (``--cpu-budget``) or the epoch cap, keeping the epoch with the best mean validation ESR.

Resumable: rendered audio, data folders and the training checkpoint live under ``--work``
(default ``out/device_space_build``); run the same command again after an interruption. A
lower ``--cpu-budget`` on a rerun finishes from the checkpoint at once.

Not added to ``starting_models/index.json``: whether it ships as a ranked start is decided
from the real-gear measurement (``bench/device_space.py``).

Usage::

    python tools/build_device_space.py [--cpu-budget 1200] [--work DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import numpy as np  # noqa: E402

from build_starting_models import RATE, sample_di  # noqa: E402  (the same DI, rate and conventions)

from ampxfer_lib.data.audio import write_audio  # noqa: E402
from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare  # noqa: E402
from ampxfer_lib.errors import AmpxferError  # noqa: E402
from ampxfer_lib.interrupts import stop_on_signals  # noqa: E402
from ampxfer_lib.fileio import atomic_write_text  # noqa: E402
from ampxfer_lib.library.index import SHIPPED_MODELS  # noqa: E402
from ampxfer_lib.model.formats import save_model  # noqa: E402
from ampxfer_lib.sample_data.devices import DEVICES, EXTRA_DEVICES, render_device  # noqa: E402
from ampxfer_lib.transfer.device_space import DeviceSpaceConfig, train_device_space  # noqa: E402

DI_SECONDS = 50.0  # 40 s of training audio per setting, then validation, then test
VAL_SECONDS = 5.0
TEST_SECONDS = 5.0
GAINS = (0.1, 0.5, 0.9)
#: (device, gain) of every training setting: each device at low, middle and high gain.
SETTINGS: Sequence[Tuple[str, float]] = tuple((d, g) for d in (*DEVICES, *EXTRA_DEVICES) for g in GAINS)
CPU_BUDGET = 1200.0
MAX_EPOCHS = 300
NAME = "device_space"
LICENCE = "MIT"
SOURCE = "built by tools/build_device_space.py"
DEFAULT_WORK = REPO / "out" / "device_space_build"


def setting_name(device: str, gain: float) -> str:
    return f"{device}_g{int(round(gain * 100)):02d}"


def data_folder(device: str, gain: float, work: Path, x: np.ndarray, log=print) -> Path:
    """``work/data/<device>_g<gain>``: the DI and the setting's rendering of it, prepared (cached)."""
    name = setting_name(device, gain)
    folder = work / "data" / name
    if (folder / "manifest.json").exists():
        return folder
    audio = work / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    di_path, target = audio / "di.wav", audio / f"{name}.wav"
    if not di_path.exists():
        write_audio(di_path, x, RATE)
    if not target.exists():
        log(f"  rendering {device} at gain {gain:g} ({x.shape[0] / RATE:g} s)")
        write_audio(target, render_device(device, x, RATE, gain), RATE)
    config = PrepareConfig(rate=RATE, align="0", val_seconds=VAL_SECONDS, test_seconds=TEST_SECONDS)
    prepare([CaptureSpec((str(di_path),), (str(target),))], folder, config)
    return folder


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(SHIPPED_MODELS), help="the folder to write into (default %(default)s)")
    p.add_argument("--work", default=str(DEFAULT_WORK), help="audio, data and checkpoint (default %(default)s)")
    p.add_argument("--cpu-budget", type=float, default=CPU_BUDGET, help="training CPU seconds (default %(default)s)")
    p.add_argument("--max-epochs", type=int, default=MAX_EPOCHS, help="epoch cap (default %(default)s)")
    args = p.parse_args(argv)
    if args.cpu_budget <= 0 or args.max_epochs < 1:
        p.error("--cpu-budget must be positive and --max-epochs at least 1")
    import torch

    torch.set_num_threads(1)

    stop_on_signals()
    try:
        return build(args)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume from the last epoch's checkpoint")
        return 130
    except AmpxferError as exc:
        print(f"error: {exc}")
        return 1


def build(args) -> int:
    work, out = Path(args.work), Path(args.out)
    c0 = time.process_time()
    x = sample_di(DI_SECONDS)
    folders = {setting_name(d, g): data_folder(d, g, work, x) for d, g in SETTINGS}
    print(f"{len(folders)} device settings prepared ({time.process_time() - c0:.0f} s CPU)", flush=True)
    config = DeviceSpaceConfig(max_epochs=args.max_epochs, cpu_budget_seconds=args.cpu_budget)
    r = train_device_space(folders, config, work / "train", log=lambda m: print(m, flush=True))
    settings = dict(zip(folders, SETTINGS))
    devices = [{"name": n, "device": settings[n][0], "gain": settings[n][1],
                "embedding": [round(float(v), 6) for v in r.embeddings[i]], "val_esr": round(r.val_esr[n], 6)}
               for i, n in enumerate(r.names)]
    meta = {
        "name": NAME, "kind": "device space", "knobs": config.embed_dim,
        "about": "one LSTM-20 over the project's virtual devices; its knobs are a learned device embedding: "
                 "fit them to a new device (ampxfer_lib.transfer.device_space.fit_knobs) and fold them",
        "devices": devices,
        "mean_embedding": [round(float(v), 6) for v in r.embeddings.mean(axis=0)],
        "mean_val_esr": round(float(np.mean(list(r.val_esr.values()))), 6),
        "best_epoch": r.best_epoch, "epochs": r.epochs, "train_cpu_seconds": round(r.cpu_seconds, 1),
        "config": config.to_dict(), "data": {"di_seconds": DI_SECONDS, "val_seconds": VAL_SECONDS,
                                             "test_seconds": TEST_SECONDS, "rate": RATE},
        "licence": LICENCE,
        "source": f"{SOURCE}: the project's synthetic sample DI through its own virtual devices "
                  "(ampxfer_lib.sample_data.devices)",
    }
    out.mkdir(parents=True, exist_ok=True)
    r.weights.metadata.update({"name": NAME})
    save_model(r.weights, out / f"{NAME}.json")
    atomic_write_text(out / f"{NAME}.meta.json", json.dumps(meta, indent=1) + "\n")
    size = (out / f"{NAME}.json").stat().st_size
    print(f"done: {out / (NAME + '.json')} ({size / 1000:.0f} kB), best epoch {r.best_epoch} of {r.epochs}, "
          f"mean val ESR {meta['mean_val_esr']:.4f}, training {r.cpu_seconds:.0f} s CPU "
          f"({time.process_time() - c0:.0f} s CPU this session)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
