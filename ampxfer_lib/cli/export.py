"""``ampxfer export`` and ``ampxfer import``: from a run to a plugin, and back.

``export --model M.json|RUN --format neuralpi|rtneural|nam --out FILE`` writes a model for a
plugin and prints which plugins load the result; ``import --model FILE --out M.json`` turns
any supported file (format recognised from its content) into the native AGAM JSON that
training, rendering and evaluation read.
"""

from __future__ import annotations

import os
from pathlib import Path

from ampxfer_lib.errors import ConfigError

FORMAT_CHOICES = ("neuralpi", "rtneural", "nam", "agam", "proteus", "aidax")


def _check_out(out: Path, model_path: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise ConfigError(f"{out}: is a folder; give a file name for --out")
    if out.exists() and model_path.exists() and os.path.samefile(out, model_path):
        raise ConfigError(f"{out}: is the --model file itself; choose another --out")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: exists; choose another --out or pass --overwrite")


def add_export(sub) -> None:
    p = sub.add_parser("export", help="write a model for a plugin (NeuralPi/Proteus, AIDA-X/RTNeural, NAM)",
                       description="Write a model in a plugin's format and say which plugins load it. "
                                   "agam and proteus are aliases of neuralpi, aidax of rtneural.")
    p.add_argument("--model", required=True, help="model JSON (AGAM/NeuralPi), or a run folder")
    p.add_argument("--format", required=True, type=str.lower, choices=FORMAT_CHOICES, dest="fmt",
                   help="neuralpi (=agam, proteus), rtneural (=aidax) or nam (models trained with --no-skip)")
    p.add_argument("--out", required=True, help="file to write (.json; .nam for NAM)")
    p.add_argument("--knob", type=float, action="append", default=[], metavar="V",
                   help="freeze a knob-conditioned model at this value (repeat per knob): exports a snapshot")
    p.add_argument("--name", default=None, help="model name stored in the file where the format has room (NAM)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from ampxfer_lib.cli.main import resolve_model_path
    from ampxfer_lib.model.formats import canonical_format, export_model, load_model

    model_path = resolve_model_path(args.model)
    out = Path(args.out)
    _check_out(out, model_path, args.overwrite)
    weights = load_model(model_path)
    fmt = canonical_format(args.fmt)
    if args.knob and len(args.knob) != weights.config.num_knobs:
        raise ConfigError(f"{model_path}: the model has {weights.config.num_knobs} knob(s) but {len(args.knob)} "
                          "--knob value(s) were given")
    if any(not 0.0 <= k <= 1.0 for k in args.knob):
        raise ConfigError(f"--knob values must lie in 0..1, got {args.knob}")
    metadata = {"name": args.name} if args.name else None
    notes = export_model(weights, fmt, out, knobs=args.knob or None, metadata=metadata, source=str(model_path))
    print(f"wrote {out} ({fmt})")
    for line in notes:
        print(f"  {line}")
    return 0


def add_import(sub) -> None:
    p = sub.add_parser("import", help="convert a NeuralPi/AIDA-X/NAM LSTM file into ampxfer's model JSON",
                       description="Read an RTNeural/AIDA-X JSON, a NAM LSTM .nam or an AGAM JSON (recognised from "
                                   "the content) and write it as AGAM/NeuralPi JSON, the format training reads.")
    p.add_argument("--model", required=True, help="model file to convert")
    p.add_argument("--out", required=True, help="AGAM/NeuralPi .json to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run_import)


def run_import(args) -> int:
    from ampxfer_lib.model.formats import import_model, neuralpi, read_json_file, sniff

    src = Path(args.model)
    out = Path(args.out)
    _check_out(out, src, args.overwrite)
    weights = import_model(src)
    kind = sniff(read_json_file(src))
    neuralpi.save(weights, out)
    cfg = weights.config
    print(f"wrote {out}: {kind} model -> AGAM/NeuralPi JSON (LSTM {cfg.hidden_size}, {cfg.input_size} input(s), "
          f"skip {'on' if cfg.skip else 'off'}, {cfg.sample_rate} Hz)")
    for line in weights.metadata.get("import_notes", []):
        print(f"  note: {line}")
    return 0
