"""``ampxfer capture`` (two recordings in, a plugin-ready model out) and ``ampxfer library``.

The work is done by :mod:`ampxfer_lib.capture.pipeline` and :mod:`ampxfer_lib.library.index`;
these functions only turn flags into calls and results into lines.
"""

from __future__ import annotations

import json
import math
import sys

from ampxfer_lib.validate import arg_float, arg_int
from ampxfer_lib.errors import ConfigError


def _set_values(items, what: str) -> dict:
    out = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"{what} {item!r}: expected KEY=VALUE, e.g. {what} max_epochs=50")
        key, value = item.split("=", 1)
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except ValueError:
            out[key.strip().replace("-", "_")] = value
    return out


# --------------------------------------------------------------------------- capture

def add_capture(sub) -> None:
    from ampxfer_lib.training.config import DEFAULT_PRESET, PRESETS
    from ampxfer_lib.transfer.rank import RankConfig

    p = sub.add_parser(
        "capture", help="DI + device recording -> a model, its verdict, plugin files and a listening page",
        description="Capture a device from two recordings: check and align them, pick the best starting model "
                    "from your library and the shipped ones, train, say how good the result is, write every plugin "
                    "format it fits and a listening page, and add it to your model library. Rerun the same "
                    "command to continue an interrupted capture.")
    p.add_argument("--input", required=True, metavar="DI", help="the clean DI recording")
    p.add_argument("--target", required=True, metavar="DEVICE", help="the same DI recorded through the device")
    p.add_argument("--out", required=True, metavar="DIR", help="capture folder (new or empty, or this capture's own)")
    p.add_argument("--name", default=None, help="model name in plugin files and the library (default: the --target "
                                                "file's name)")
    p.add_argument("--library", action="append", default=[], metavar="DIR",
                   help="rank the models of this folder or model library (repeat; default: your library, then the "
                        "shipped starting models)")
    p.add_argument("--seconds", type=arg_float(0, lo_open=True), default=None, metavar="N",
                   help="train on N seconds of the training audio only, in 5 s pieces spread over it (a quick capture)")
    p.add_argument("--knob", action="append", default=[], metavar="NAME=SETTING",
                   help="a knob setting of the device as recorded, for the library (repeat), e.g. --knob gain=7")
    p.add_argument("--kind", default="", help="kind of device for the library: amp, overdrive, fuzz, ...")
    p.add_argument("--licence", default="", help="licence of the model in the library (default: not stated)")
    p.add_argument("--scratch-baseline", action="store_true",
                   help="also train from scratch and compare (about twice the time)")
    p.add_argument("--start", default=None, metavar="auto|scratch|N|MODEL",
                   help="the starting model: the ranking's best (auto, the default), its N-th, none (scratch), or a "
                        "model file")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS), help="training recipe")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a training setting (see a run's config.json), e.g. --set max_epochs=100")
    p.add_argument("--finetune-top", type=arg_int(0, 1000), default=RankConfig.finetune_top, metavar="N",
                   help="fine-tune probe of the best N starting models by the zero-shot score (0: off)")
    p.add_argument("--rate", type=arg_int(8000, 192000), default=44100, help="model sample rate (44100 or 48000)")
    p.add_argument("--no-register", action="store_true", help="do not add the model to your library")
    p.add_argument("--stop-after", default=None, metavar="STAGE",
                   help="stop after this stage (prepare, rank, train, scratch, evaluate, export, listen); rerun "
                        "without it to continue")
    p.set_defaults(func=run_capture)


def run_capture(args) -> int:
    from ampxfer_lib.capture.pipeline import capture, summary_lines
    from ampxfer_lib.transfer.rank import RankConfig

    rank_config = RankConfig(finetune_top=args.finetune_top)
    record = capture(args.input, args.target, args.out, name=args.name, libraries=args.library,
                     seconds=args.seconds, knobs=args.knob, scratch_baseline=args.scratch_baseline,
                     progress=lambda line: print(line, flush=True), stop_after=args.stop_after, start=args.start,
                     preset=args.preset, train_overrides=_set_values(args.set, "--set"), rank_config=rank_config,
                     kind=args.kind, licence=args.licence, rate=args.rate, register=not args.no_register)
    print()
    for line in summary_lines(record):
        print(line)
    return 0


# --------------------------------------------------------------------------- library

def add_library(sub) -> None:
    p = sub.add_parser("library", help="list, add or remove models of your model library",
                       description="Your model library: every finished capture is added to it, and captures rank "
                                   "its models as starting points. Default folder: $AMPXFER_MODELS, else "
                                   "~/.ampxfer/models.")
    actions = p.add_subparsers(dest="library_action", metavar="ACTION")
    actions.required = True

    ls = actions.add_parser("list", help="the library's models")
    ls.add_argument("--library", default=None, metavar="DIR", help="library folder (default: yours)")
    ls.add_argument("--json", action="store_true", help="print the index entries as JSON")
    ls.set_defaults(func=run_library_list)

    add = actions.add_parser("add", help="copy a model into the library (AGAM/NeuralPi, AIDA-X or NAM LSTM file)")
    add.add_argument("model", help="model file")
    add.add_argument("--name", required=True)
    add.add_argument("--kind", default="", help="kind of device: amp, overdrive, fuzz, ...")
    add.add_argument("--knob", action="append", default=[], metavar="NAME=SETTING", help="device setting (repeat)")
    add.add_argument("--test-esr", type=arg_float(0), default=None, help="its test ESR, if known")
    add.add_argument("--source", default="", help="where it came from (default: the file's path)")
    add.add_argument("--licence", default="", help="its licence (default: not stated)")
    add.add_argument("--library", default=None, metavar="DIR", help="library folder (default: yours)")
    add.set_defaults(func=run_library_add)

    rm = actions.add_parser("remove", help="remove a model (and the library's copy of its file)")
    rm.add_argument("name")
    rm.add_argument("--library", default=None, metavar="DIR", help="library folder (default: yours)")
    rm.set_defaults(func=run_library_remove)


def _library(args):
    from ampxfer_lib.library.index import ModelLibrary, user_library_dir

    return ModelLibrary(args.library or user_library_dir())


def run_library_list(args) -> int:
    lib = _library(args)
    entries = lib.entries()
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    if not entries:
        print(f"{lib.path}: no models yet (`ampxfer capture` adds every capture; `ampxfer library add` adds a file)")
        return 0
    print(f"{lib.path}: {len(entries)} model(s)")
    print(f"{'name':<24} {'kind':<12} {'rate':>6} {'test ESR':>9}  {'date':<10}  licence / source")
    for e in entries:
        esr = "-" if e.test_esr is None or not math.isfinite(e.test_esr) else f"{e.test_esr:.4g}"
        knobs = f" [{', '.join(f'{k} {v}' for k, v in e.knobs)}]" if e.knobs else ""
        print(f"{e.name:<24} {e.kind or '-':<12} {e.sample_rate:>6} {esr:>9}  {e.date:<10}  "
              f"{e.licence or 'not stated'} / {e.source}{knobs}")
    return 0


def run_library_add(args) -> int:
    lib = _library(args)
    entry = lib.add(args.model, args.name, kind=args.kind, knobs=args.knob, test_esr=args.test_esr,
                    source=args.source, licence=args.licence)
    print(f"added {entry.name!r} to {lib.path} ({entry.file}; LSTM {entry.hidden_size}, {entry.sample_rate} Hz)")
    return 0


def run_library_remove(args) -> int:
    lib = _library(args)
    entry = lib.remove(args.name)
    print(f"removed {entry.name!r} from {lib.path} (deleted the library's copy {entry.file})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `ampxfer capture` or `ampxfer library`")
