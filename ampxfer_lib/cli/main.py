"""Command line: ``python -m ampxfer_lib COMMAND`` (also installed as ``ampxfer``).

One thin function per command; the work is done by the library, so a notebook, a script
and a test call the same code. ``main(argv)`` returns the exit status instead of exiting,
so tests call it in-process. Errors print one line on stderr (``--debug`` for a traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ampxfer_lib import __version__
from ampxfer_lib.errors import AmpxferError, ConfigError


def _eprint(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _key_values(items: Optional[Sequence[str]], what: str) -> Dict[str, object]:
    out: Dict[str, object] = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"{what} {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except ValueError:
            out[key.strip().replace("-", "_")] = value
    return out


# --------------------------------------------------------------------------- prepare

def add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="check, align and split recordings into a data folder",
                       description="Check, resample and align clean/device recordings and write training, "
                                   "validation and test splits with a manifest.json.")
    p.add_argument("--input", action="append", default=[], metavar="IN", help="clean DI recording (repeat for several pairs)")
    p.add_argument("--target", action="append", default=[], metavar="TGT", help="the same signal through the device")
    p.add_argument("--conditioned", metavar="SPEC.json", help="knob-conditioned captures described in a JSON spec")
    p.add_argument("--out", required=True, help="data folder to write")
    p.add_argument("--rate", type=int, default=44100, help="model sample rate (44100 or 48000)")
    p.add_argument("--align", default="auto", help="latency compensation: auto, off, or N samples")
    p.add_argument("--val-seconds", type=float, default=40.0)
    p.add_argument("--test-seconds", type=float, default=20.0)
    p.add_argument("--limited-seconds", type=float, default=30.0, help="training audio of the 'limited' subset")
    p.add_argument("--channel", type=int, default=None, help="channel of multi-channel files to use (0-based)")
    p.add_argument("--flip-polarity", action="store_true", help="invert the target's polarity")
    p.add_argument("--holdout-knob", type=float, default=None, help="conditioned data: keep this knob value for testing only")
    p.add_argument("--latency-window", type=float, default=0.2, help="largest latency accepted, seconds")
    p.add_argument("--silence-dbfs", type=float, default=-60.0, help="RMS below which a recording counts as silent")
    p.add_argument("--overwrite", action="store_true", help="replace a data folder prepared from other recordings")
    p.set_defaults(func=run_prepare)


def run_prepare(args) -> int:
    from ampxfer_lib.data.audio import CheckConfig
    from ampxfer_lib.data.dataset import CaptureSpec, PrepareConfig, prepare, read_conditioned_spec

    config = PrepareConfig(
        rate=args.rate, align=str(args.align), val_seconds=args.val_seconds, test_seconds=args.test_seconds,
        limited_seconds=args.limited_seconds, channel=args.channel, flip_polarity=args.flip_polarity,
        holdout_knob=args.holdout_knob,
        checks=CheckConfig(latency_window_seconds=args.latency_window, silence_dbfs=args.silence_dbfs),
    )
    knob_names: List[str] = []
    if args.conditioned:
        if args.input or args.target:
            raise ConfigError("give either --conditioned SPEC.json or --input/--target pairs, not both")
        captures, knob_names = read_conditioned_spec(args.conditioned)
    else:
        if not args.input or not args.target:
            raise ConfigError("prepare needs --input IN --target TGT (or --conditioned SPEC.json)")
        if len(args.input) != len(args.target):
            raise ConfigError(f"{len(args.input)} --input but {len(args.target)} --target; give them in pairs")
        captures = [CaptureSpec(tuple(args.input), tuple(args.target))]
    manifest = prepare(captures, args.out, config, overwrite=args.overwrite, knob_names=knob_names, log=print)
    for w in manifest["warnings"]:
        _eprint(f"warning: {w['file']}: {w['message']}")
    s = manifest["splits"]
    print(f"wrote {args.out}: train {s['train']['seconds']:.1f} s (limited "
          f"{manifest['subsets']['limited']['train_seconds']:.1f} s), val {s['val']['seconds']:.1f} s, "
          f"test {s['test']['seconds']:.1f} s at {manifest['sample_rate']} Hz")
    return 0


# --------------------------------------------------------------------------- train

def add_train(sub) -> None:
    from ampxfer_lib.training.loop import DEFAULT_PRESET, PRESETS

    p = sub.add_parser("train", help="train a model (from scratch or --init-from a model)",
                       description="Train into a run folder; the same command on a folder with a checkpoint resumes.")
    p.add_argument("--data", required=True, help="prepared data folder")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS))
    p.add_argument("--subset", default="full", choices=["full", "limited"])
    p.add_argument("--init-from", default=None, metavar="MODEL_OR_RUN", help="start from this model JSON or run folder")
    p.add_argument("--hidden-size", type=int, default=None)
    p.add_argument("--no-skip", action="store_true", help="train without the skip connection (for NAM export)")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--patience", type=int, default=None, help="validations without improvement before stopping")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--freeze-lstm-epochs", type=int, default=None, help="train only the dense layer for N epochs (-1: all)")
    p.add_argument("--keep-optimizer", action="store_true", help="keep the optimiser state of the --init-from run")
    p.add_argument("--grad-clip", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default 1 on CPU)")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any training setting (see train.json)")
    p.add_argument("--overwrite", action="store_true", help="replace a different run in --out")
    p.add_argument("--progress", default="lines", choices=["lines", "bar", "none"])
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from ampxfer_lib.training.loop import LogLines, TqdmProgress, WarningLines, make_config, train

    overrides = dict(
        subset=args.subset, init_from=args.init_from, hidden_size=args.hidden_size,
        skip=False if args.no_skip else None, max_epochs=args.max_epochs, patience=args.patience, lr=args.lr,
        freeze_lstm_epochs=args.freeze_lstm_epochs, keep_optimizer=args.keep_optimizer or None,
        grad_clip=args.grad_clip, seed=args.seed, threads=args.threads, device=args.device,
    )
    overrides.update(_key_values(args.set, "--set"))
    config = make_config(args.data, args.preset, **overrides)
    callbacks = {"lines": [LogLines()], "bar": [TqdmProgress()], "none": []}[args.progress]
    callbacks.insert(0, WarningLines(_eprint))
    # train() also appends these lines to the run folder's train.log (it may be on a Google
    # Drive that outlives the session), with the error that stopped a run.
    summary = train(config, args.out, callbacks, overwrite=args.overwrite)
    if args.progress == "none":
        print(json.dumps(summary))
    return 0


# --------------------------------------------------------------------------- render

def add_render(sub) -> None:
    p = sub.add_parser("render", help="play a recording through a model",
                       description="Render a DI recording through a model; output at the model's rate, same duration.")
    p.add_argument("--model", required=True, help="model JSON (AGAM/NeuralPi), or a run folder")
    p.add_argument("--input", required=True)
    p.add_argument("--out", required=True, help="output .wav or .flac")
    p.add_argument("--knob", type=float, action="append", default=[], metavar="V", help="knob value 0..1 (repeat per knob)")
    p.add_argument("--channel", type=int, default=None)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run_render)


def resolve_model_path(path: str) -> Path:
    """A model JSON, or a run folder (its model_best.json)."""
    p = Path(path)
    if p.is_dir():
        from ampxfer_lib.training.checkpoint import MODEL_BEST

        if not (p / MODEL_BEST).exists():
            raise ConfigError(f"{p}: no {MODEL_BEST} in this folder; give a model .json file")
        return p / MODEL_BEST
    return p


def run_render(args) -> int:
    from ampxfer_lib.data.audio import check_finite, read_audio, resample, write_audio
    from ampxfer_lib.model.formats import load_model
    from ampxfer_lib.model.render import render

    model_path = resolve_model_path(args.model)
    weights = load_model(model_path)
    out = Path(args.out)
    if out.exists() and os.path.samefile(out, args.input):
        raise ConfigError(f"{out}: is the input recording; choose another --out")
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out}: exists; choose another --out or pass --overwrite")
    if out.suffix.lower() not in (".wav", ".flac"):
        raise ConfigError(f"{out}: the output must end in .wav or .flac")
    if len(args.knob) != weights.config.num_knobs:
        n = weights.config.num_knobs
        raise ConfigError(f"{model_path}: the model takes {n} knob value(s) but {len(args.knob)} were given; "
                          + ("pass --knob V for each knob (0..1)" if n else "drop --knob"))
    clip = read_audio(args.input, args.channel, role="input")
    check_finite(clip, "input")
    rate = weights.config.sample_rate
    x = resample(clip.samples, clip.sample_rate, rate)
    y = render(weights, x, args.knob)
    write_audio(out, y, rate, subtype="FLOAT" if out.suffix.lower() == ".wav" else "PCM_24")
    print(f"wrote {out}: {len(y) / rate:.2f} s at {rate} Hz")
    return 0


# --------------------------------------------------------------------------- evaluate

def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="test ESR of a model on prepared data")
    p.add_argument("--model", required=True, help="model JSON, or a run folder")
    p.add_argument("--data", required=True, help="prepared data folder")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--json", action="store_true", help='print {"test_esr": ...}')
    p.set_defaults(func=run_evaluate)


def run_evaluate(args) -> int:
    from ampxfer_lib.training.evaluate import evaluate

    result = evaluate(resolve_model_path(args.model), args.data, split=args.split)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.split} ESR {result[f'{args.split}_esr']:.6f}")
        for c in result.get("captures", []) if len(result.get("captures", [])) > 1 else []:
            print(f"  knobs {c['knobs']}: ESR {c['esr']:.6f}")
    return 0


# --------------------------------------------------------------------------- main

#: Each command: (add_parser function). Other modules' commands are registered here too.
COMMANDS: List[Callable] = [add_prepare, add_train, add_render, add_evaluate]

from ampxfer_lib.cli.export import add_export, add_import  # noqa: E402  (the module does not import cli at load time)

COMMANDS += [add_export, add_import]


def add_study(sub) -> None:
    from ampxfer_lib.study.plan import add_study as add

    add(sub)


def add_rank(sub) -> None:
    from ampxfer_lib.transfer.rank import add_rank as add

    add(sub)


COMMANDS += [add_study, add_rank]
from ampxfer_lib.cli.capture import add_capture, add_library  # noqa: E402
COMMANDS += [add_capture, add_library]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ampxfer", description="Capture guitar pedals and amps as LSTM models.")
    parser.add_argument("--version", action="version", version=f"ampxfer {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its usage line
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AmpxferError as exc:
        if debug:
            raise
        _eprint(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        _eprint("interrupted: rerun the same command to resume from the last checkpoint")
        return 130
    except Exception as exc:  # a bug: one line, and the way to the details
        if debug:
            raise
        _eprint(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback, and please report it)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
