"""``ampxfer train``, ``render`` and ``evaluate``: a model from data, and a model played or scored."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ampxfer_lib.cli.common import eprint, key_values, resolve_model_path
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.validate import MAX_CHANNEL, MAX_HIDDEN, MAX_THREADS, arg_float, arg_int


def add_train(sub) -> None:
    from ampxfer_lib.data.dataset import SUBSETS
    from ampxfer_lib.training.config import DEFAULT_PRESET, PRESETS

    p = sub.add_parser("train", help="train a model (from scratch or --init-from a model)",
                       description="Train into a run folder; the same command on a folder with a checkpoint resumes.")
    p.add_argument("--data", required=True, help="prepared data folder")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS))
    p.add_argument("--subset", default="full", choices=list(SUBSETS),
                   help="training audio: full, limited (its first --limited-seconds of prepare) or spread "
                        "(as many seconds in 5 s pieces spread over it)")
    p.add_argument("--init-from", default=None, metavar="MODEL_OR_RUN", help="start from this model JSON or run folder")
    p.add_argument("--hidden-size", type=arg_int(1, MAX_HIDDEN), default=None)
    p.add_argument("--no-skip", action="store_true", help="train without the skip connection (for NAM export)")
    p.add_argument("--max-epochs", type=arg_int(1), default=None)
    p.add_argument("--patience", type=arg_int(0), default=None, help="validations without improvement before stopping")
    p.add_argument("--lr", type=arg_float(0, lo_open=True), default=None)
    p.add_argument("--freeze-lstm-epochs", type=arg_int(-1), default=None, help="train only the dense layer for N epochs (-1: all)")
    p.add_argument("--keep-optimizer", action="store_true", help="keep the optimiser state of the --init-from run")
    p.add_argument("--grad-clip", type=arg_float(0, lo_open=True), default=None)
    p.add_argument("--seed", type=arg_int(0), default=None)
    p.add_argument("--threads", type=arg_int(1, MAX_THREADS), default=None, help="torch threads (default 1 on CPU)")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any training setting (see train.json)")
    p.add_argument("--overwrite", action="store_true", help="replace a different run in --out")
    p.add_argument("--progress", default="lines", choices=["lines", "bar", "none"])
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from ampxfer_lib.training.callbacks import LogLines, TqdmProgress, WarningLines
    from ampxfer_lib.training.config import make_config
    from ampxfer_lib.training.loop import train

    overrides = dict(
        subset=args.subset, init_from=args.init_from, hidden_size=args.hidden_size,
        skip=False if args.no_skip else None, max_epochs=args.max_epochs, patience=args.patience, lr=args.lr,
        freeze_lstm_epochs=args.freeze_lstm_epochs, keep_optimizer=args.keep_optimizer or None,
        grad_clip=args.grad_clip, seed=args.seed, threads=args.threads, device=args.device,
    )
    sets = key_values(args.set)
    for key in ("data", "preset"):
        if key in sets:
            raise ConfigError(f"--set {key}=...: {key} has its own flag; pass --{key} instead")
    overrides.update(sets)
    config = make_config(args.data, args.preset, **overrides)
    callbacks = {"lines": [LogLines()], "bar": [TqdmProgress()], "none": []}[args.progress]
    callbacks.insert(0, WarningLines(eprint))
    # train() also appends these lines to the run folder's train.log (it may be on a Google
    # Drive that outlives the session), with the error that stopped a run.
    summary = train(config, args.out, callbacks, overwrite=args.overwrite)
    if args.progress == "none":
        print(json.dumps(summary))
    return 0


def add_render(sub) -> None:
    p = sub.add_parser("render", help="play a recording through a model",
                       description="Render a DI recording through a model; output at the model's rate, same duration.")
    p.add_argument("--model", required=True, help="model JSON (AGAM/NeuralPi), or a run folder")
    p.add_argument("--input", required=True)
    p.add_argument("--out", required=True, help="output .wav or .flac")
    p.add_argument("--knob", type=arg_float(0, 1), action="append", default=[], metavar="V", help="knob value 0..1 (repeat per knob)")
    p.add_argument("--channel", type=arg_int(0, MAX_CHANNEL), default=None)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run_render)


def run_render(args) -> int:
    from ampxfer_lib.data.audio import check_finite, read_audio, resample
    from ampxfer_lib.model.formats import load_model
    from ampxfer_lib.model.render import render, write_render

    model_path = resolve_model_path(args.model)
    weights = load_model(model_path)
    out = Path(args.out)
    if not Path(args.input).is_file():
        read_audio(args.input, role="input")  # says what is wrong with it (missing, a folder)
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
    clipped = write_render(out, y, rate)
    print(f"wrote {out}: {len(y) / rate:.2f} s at {rate} Hz")
    if clipped:
        eprint(f"warning: {clipped}")
    return 0


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
