"""``ampxfer prepare``: recordings -> a prepared data folder (checked, aligned, split)."""

from __future__ import annotations

from typing import List

from ampxfer_lib.cli.common import eprint
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.validate import MAX_CHANNEL, arg_float, arg_int


def add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="check, align and split recordings into a data folder",
                       description="Check, resample and align clean/device recordings and write training, "
                                   "validation and test splits with a manifest.json.")
    p.add_argument("--input", action="append", default=[], metavar="IN", help="clean DI recording (repeat for several pairs)")
    p.add_argument("--target", action="append", default=[], metavar="TGT", help="the same signal through the device")
    p.add_argument("--conditioned", metavar="SPEC.json", help="knob-conditioned captures described in a JSON spec")
    p.add_argument("--out", required=True, help="data folder to write")
    p.add_argument("--rate", type=arg_int(8000, 192000), default=44100, help="model sample rate (44100 or 48000)")
    p.add_argument("--align", default="auto", help="latency compensation: auto, off, or N samples")
    p.add_argument("--val-seconds", type=arg_float(0, lo_open=True), default=40.0)
    p.add_argument("--test-seconds", type=arg_float(0, lo_open=True), default=20.0)
    p.add_argument("--limited-seconds", type=arg_float(0, lo_open=True), default=30.0, help="training audio of the 'limited' subset")
    p.add_argument("--channel", type=arg_int(0, MAX_CHANNEL), default=None,
                   help="channel of multi-channel files to use (0-based), for both files")
    p.add_argument("--input-channel", type=arg_int(0, MAX_CHANNEL), default=None,
                   help="channel of the --input files (overrides --channel; DI and device in one stereo file)")
    p.add_argument("--target-channel", type=arg_int(0, MAX_CHANNEL), default=None,
                   help="channel of the --target files (overrides --channel)")
    p.add_argument("--flip-polarity", action="store_true", help="invert the target's polarity")
    p.add_argument("--holdout-knob", type=arg_float(0, 1), default=None, help="conditioned data: keep this knob value for testing only")
    p.add_argument("--latency-window", type=arg_float(0, 10, lo_open=True), default=0.2, help="largest latency accepted, seconds")
    p.add_argument("--silence-dbfs", type=arg_float(-300, 0), default=-60.0, help="RMS below which a recording counts as silent")
    p.add_argument("--overwrite", action="store_true", help="replace a data folder prepared from other recordings")
    p.set_defaults(func=run_prepare)


def run_prepare(args) -> int:
    from ampxfer_lib.data.audio import CheckConfig
    from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare, read_conditioned_spec

    config = PrepareConfig(
        rate=args.rate, align=str(args.align), val_seconds=args.val_seconds, test_seconds=args.test_seconds,
        limited_seconds=args.limited_seconds, channel=args.channel,
        input_channel=args.input_channel, target_channel=args.target_channel, flip_polarity=args.flip_polarity,
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
        eprint(f"warning: {w['file']}: {w['message']}")
    s = manifest["splits"]
    print(f"wrote {args.out}: train {s['train']['seconds']:.1f} s (limited "
          f"{manifest['subsets']['limited']['train_seconds']:.1f} s), val {s['val']['seconds']:.1f} s, "
          f"test {s['test']['seconds']:.1f} s at {manifest['sample_rate']} Hz")
    return 0
