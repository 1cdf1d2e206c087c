"""Build the starting models that ship with the package: ``ampxfer_lib/starting_models/``.

Seven LSTM-20 models (AGAM/NeuralPi JSON with the skip connection, 44.1 kHz, ~40 kB each), one
per kind of device a user is likely to capture, each trained by this project on one of its own
virtual devices (:mod:`ampxfer_lib.sample_data.devices`) played with the project's synthesised
guitar DI (``sample_data/di.flac``, resampled from 48 to 44.1 kHz). Everything they are made from is this project's own
work, so they carry its licence (MIT). :data:`MODELS` says which device and knob each is.

Per model: the first :data:`DI_SECONDS` s of the sample DI are rendered through the device
(:func:`render_device`), prepared into a data folder (the last :data:`VAL_SECONDS` s of them
for validation and :data:`TEST_SECONDS` s for testing, no latency to remove: ``align=0``), and
trained from scratch with the library's default recipe, seed :data:`SEED`, one thread, capped
at :data:`MAX_EPOCHS` epochs (measured: 13.7 min of one CPU core for all seven, 90-170 s each). The best
model is added to the folder's ``index.json`` with its name, kind, knob, test ESR, licence and
source (:class:`ampxfer_lib.library.index.ModelLibrary`, which writes every file atomically).

Resumable and idempotent: the work (rendered audio, data and run folders) is kept under
``--work`` (default ``out/starting_models_build``); a model already in the index is skipped
(``--force`` rebuilds it), and an interrupted training run resumes from its checkpoint.

Usage::

    python tools/build_starting_models.py [--only fuzz overdrive] [--force] [--work DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from ampxfer_lib.data.audio import read_audio, resample, write_audio  # noqa: E402
from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare  # noqa: E402
from ampxfer_lib.errors import AmpxferError  # noqa: E402
from ampxfer_lib.interrupts import stop_on_signals  # noqa: E402
from ampxfer_lib.library.index import SHIPPED_MODELS, ModelLibrary  # noqa: E402
from ampxfer_lib.sample_data.devices import render_device  # noqa: E402
from ampxfer_lib.training.callbacks import LogLines  # noqa: E402
from ampxfer_lib.training.checkpoint import MODEL_BEST  # noqa: E402
from ampxfer_lib.training.config import make_config  # noqa: E402
from ampxfer_lib.training.loop import train  # noqa: E402

# The rate `ampxfer capture` and `prepare` use by default: ranking skips a model at another rate
# than the data's, so 48 kHz models (the sample DI's rate) would never be offered as starts.
# The devices are rate-independent by construction (prewarped bilinear filters).
RATE = 44100
DI_SECONDS = 80.0  # 60 s of training audio, then validation, then test
VAL_SECONDS = 10.0
TEST_SECONDS = 10.0
SEED = 0
MAX_EPOCHS = 60
LICENCE = "MIT"
SOURCE = "built by tools/build_starting_models.py"
DEFAULT_WORK = REPO / "out" / "starting_models_build"


@dataclass(frozen=True)
class StartingModel:
    """One shipped model: ``device`` at knob ``gain`` (0..1) of the virtual devices."""

    name: str
    kind: str
    device: str
    gain: float
    about: str


#: The shipped set. The index keeps the kind; the knob is recorded as the device's gain knob.
MODELS: Sequence[StartingModel] = (
    StartingModel("clean_amp", "clean amp", "bluesjr", 0.0,
                  "Blues-Jr-style combo at its lowest volume: the cleanest setting, edge of breakup"),
    StartingModel("crunch_amp", "crunch amp", "bluesjr", 0.6,
                  "the same combo at its default crunch setting"),
    StartingModel("high_gain_amp", "high-gain amp", "ht40_amp", 0.9,
                  "HT40-style overdrive channel near full gain, line out (no cabinet or microphone)"),
    StartingModel("micd_amp", "mic'd amp", "ht40", 0.5,
                  "HT40-style overdrive channel into a 4x12-like cabinet and a close microphone"),
    StartingModel("overdrive", "overdrive", "ts9", 0.5, "TS9-style overdrive at noon"),
    StartingModel("distortion", "distortion", "mt2", 0.5, "MT-2-style distortion at noon"),
    StartingModel("fuzz", "fuzz", "fuzz", 0.7, "Big-Muff-like fuzz, sustain at 0.7"),
)


def sample_di(seconds: float = DI_SECONDS) -> np.ndarray:
    """The first ``seconds`` of the committed sample DI at :data:`RATE`: (T,) float32."""
    from ampxfer_lib.sample_data.files import CHECKOUT_SAMPLE_DIR, DI_NAME, SAMPLE_RATE

    path = CHECKOUT_SAMPLE_DIR / DI_NAME
    if not path.exists():
        raise SystemExit(f"error: {path}: missing; this script runs in a source checkout (the sample DI is "
                         "committed there)")
    clip = read_audio(path)
    if clip.sample_rate != SAMPLE_RATE:
        raise SystemExit(f"error: {path}: {clip.sample_rate} Hz, not the sample DI's {SAMPLE_RATE} Hz; restore it "
                         "from git")
    x = clip.samples[: int(round(seconds * SAMPLE_RATE))]
    return resample(x, SAMPLE_RATE, RATE).astype(np.float32)


def data_folder(model: StartingModel, work: Path, log=print) -> Path:
    """``work/data/<name>``: the DI and the device's rendering of it, prepared (cached)."""
    folder = work / f"sr{RATE}" / "data" / model.name
    if (folder / "manifest.json").exists():
        return folder
    audio = work / f"sr{RATE}" / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    di_path, target = audio / "di.wav", audio / f"{model.name}.wav"
    x = sample_di()
    if not di_path.exists():
        write_audio(di_path, x, RATE)
    if not target.exists():
        log(f"  rendering {model.device} at gain {model.gain:g} ({x.shape[0] / RATE:g} s)")
        write_audio(target, render_device(model.device, x, RATE, model.gain), RATE)
    config = PrepareConfig(rate=RATE, align="0", val_seconds=VAL_SECONDS, test_seconds=TEST_SECONDS)
    prepare([CaptureSpec((str(di_path),), (str(target),))], folder, config)
    return folder


def build_one(model: StartingModel, library: ModelLibrary, work: Path, max_epochs: int, log=print) -> dict:
    """Train one model and add it to the library; returns the run's summary."""
    data = data_folder(model, work, log)
    run = work / f"sr{RATE}" / "runs" / model.name
    config = make_config(data, None, subset="full", seed=SEED, max_epochs=max_epochs, hidden_size=20,
                         skip=True, device="cpu", threads=1)
    def every_tenth(line: str) -> None:  # progress without 60 lines a model
        words = line.split()
        if not (words[0] == "epoch" and words[1].isdigit() and int(words[1]) % 10):
            log("    " + line)

    quiet = LogLines(every_tenth)
    summary = train(config, run, [quiet], log=True)
    library.add(run / MODEL_BEST, model.name, kind=model.kind, knobs={"gain": f"{model.gain:g}"},
                test_esr=round(float(summary["test_esr"]), 6), source=f"{SOURCE}: {model.about}; virtual device "
                f"{model.device!r} (ampxfer_lib.sample_data.devices) at gain {model.gain:g}", licence=LICENCE)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(SHIPPED_MODELS), help="the model folder to write (default %(default)s)")
    p.add_argument("--work", default=str(DEFAULT_WORK), help="rendered audio, data and runs (default %(default)s)")
    p.add_argument("--only", nargs="+", choices=[m.name for m in MODELS], default=None, metavar="NAME",
                   help=f"build only these (of {', '.join(m.name for m in MODELS)})")
    p.add_argument("--force", action="store_true", help="rebuild models already in the folder (their runs too)")
    p.add_argument("--max-epochs", type=int, default=MAX_EPOCHS, help="epoch cap of each run (default %(default)s)")
    args = p.parse_args(argv)
    if args.max_epochs < 1:
        p.error("--max-epochs must be at least 1")
    import torch

    torch.set_num_threads(1)

    stop_on_signals()
    try:
        return build(args)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume (the training run continues from its checkpoint)")
        return 130


def build(args) -> int:
    library, work = ModelLibrary(args.out), Path(args.work)
    t_all = time.process_time()
    for model in [m for m in MODELS if not args.only or m.name in args.only]:
        old = library.get(model.name)
        if old is not None and library.model_path(old).exists() and not args.force:
            print(f"{model.name}: in {library.path} already (test ESR {old.test_esr}); --force rebuilds it")
            continue
        if old is not None:
            library.remove(model.name)
        if args.force:
            shutil.rmtree(work / f"sr{RATE}" / "runs" / model.name, ignore_errors=True)
        print(f"{model.name} ({model.kind}): {model.device} at gain {model.gain:g}", flush=True)
        c0, w0 = time.process_time(), time.monotonic()
        try:
            s = build_one(model, library, work, args.max_epochs)
        except AmpxferError as exc:
            print(f"error: {model.name}: {exc}")
            return 1
        print(f"{model.name}: best val ESR {s.get('best_val_esr') or float('nan'):.4f}, test ESR {s['test_esr']:.4f}, "
              f"{s['epochs']} epochs ({s['stop_reason']}), {time.process_time() - c0:.0f} s CPU, "
              f"{time.monotonic() - w0:.0f} s wall", flush=True)
    print(f"done: {library.path} ({time.process_time() - t_all:.0f} s CPU this session)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
