"""``ampxfer export``, ``import`` and ``rank``: models to and from plugins, and which model to start from.

``export --model M.json|RUN --format neuralpi|rtneural|nam --out FILE`` writes a model for a
plugin and prints which plugins load the result; ``import --model FILE --out M.json`` turns
any supported file (format recognised from its content) into the native AGAM JSON that
training, rendering and evaluation read; ``rank --library DIR --data DATA`` scores a folder of
models as starting points for a target (:mod:`ampxfer_lib.transfer.rank`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ampxfer_lib.cli.common import resolve_model_path
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.fileio import remove_stale_temporaries
from ampxfer_lib.validate import MAX_THREADS, arg_float, arg_int

FORMAT_CHOICES = ("neuralpi", "rtneural", "nam", "agam", "proteus", "aidax")


def _check_out(out: Path, model_path: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise ConfigError(f"{out}: is a folder; give a file name for --out")
    if out.exists() and model_path.exists() and os.path.samefile(out, model_path):
        raise ConfigError(f"{out}: is the --model file itself; choose another --out")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: exists; choose another --out or pass --overwrite")
    remove_stale_temporaries(out.parent, [out.name])  # what a killed earlier write of this file left


def add_export(sub) -> None:
    p = sub.add_parser("export", help="write a model for a plugin (NeuralPi/Proteus, AIDA-X/RTNeural, NAM)",
                       description="Write a model in a plugin's format and say which plugins load it. "
                                   "agam and proteus are aliases of neuralpi, aidax of rtneural.")
    p.add_argument("--model", required=True, help="model JSON (AGAM/NeuralPi), or a run folder")
    p.add_argument("--format", required=True, type=str.lower, choices=FORMAT_CHOICES, dest="fmt",
                   help="neuralpi (=agam, proteus), rtneural (=aidax) or nam (models trained with --no-skip)")
    p.add_argument("--out", required=True, help="file to write (.json; .nam for NAM)")
    p.add_argument("--knob", type=arg_float(0, 1), action="append", default=[], metavar="V",
                   help="freeze a knob-conditioned model at this value (repeat per knob): exports a snapshot")
    p.add_argument("--name", default=None, help="model name stored in the file where the format has room (NAM)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from ampxfer_lib.model.formats import canonical_format, export_model, load_model

    model_path = resolve_model_path(args.model)
    out = Path(args.out)
    _check_out(out, model_path, args.overwrite)
    weights = load_model(model_path)
    fmt = canonical_format(args.fmt)
    if args.knob and len(args.knob) != weights.config.num_knobs:
        raise ConfigError(f"{model_path}: the model has {weights.config.num_knobs} knob(s) but {len(args.knob)} "
                          "--knob value(s) were given")
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
    from ampxfer_lib.model.formats import import_model, neuralpi, sniff
    from ampxfer_lib.model.formats.jsonfile import read_json_file

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


def add_rank(sub) -> None:
    from ampxfer_lib.transfer.rank import SCORES, RankConfig

    p = sub.add_parser("rank", help="rank a folder of pretrained models as starting points for your data",
                       description="Score every model JSON in --library on the prepared --data (zero-shot "
                                   "ESR after output-level matching; optionally a short fine-tune probe of "
                                   "the best few) and list them best first.")
    p.add_argument("--library", required=True, help="folder of AGAM/NeuralPi model .json files (searched recursively)")
    p.add_argument("--data", required=True, help="prepared data folder of the target device")
    p.add_argument("--top", type=arg_int(1), default=None, help="show only the best K")
    p.add_argument("--json", action="store_true", help='print a JSON list of {"model", "score", ...}, best first')
    p.add_argument("--probe-seconds", type=arg_float(0, 3600, lo_open=True), default=RankConfig.probe_seconds,
                   help="seconds of training audio scored zero-shot")
    p.add_argument("--score", default=RankConfig.score, choices=SCORES,
                   help="zero-shot score: plain ESR, after output-level matching, or after refitting the "
                        "dense layer (default %(default)s)")
    p.add_argument("--finetune-top", type=arg_int(0), default=RankConfig.finetune_top,
                   help="fine-tune probe for the best N (slower, more reliable; 0: off)")
    p.add_argument("--knob-values", type=arg_float(0, 1), nargs="+", default=list(RankConfig.knob_values),
                   help="knob values tried for conditioned models")
    p.add_argument("--export-best", default=None, metavar="MODEL.json",
                   help="write the best starting model (knobs folded) for train --init-from")
    p.add_argument("--refit-head", action="store_true",
                   help="--export-best with the least-squares dense layer (matches level and polarity; "
                        "helped 5 of 7 real targets in bench/RESULTS_rank.md)")
    p.add_argument("--threads", type=arg_int(1, MAX_THREADS), default=1)
    p.set_defaults(func=run_rank)


def run_rank(args) -> int:
    from ampxfer_lib.transfer.rank import RankConfig, export_starting_model, rank_library

    config = RankConfig(probe_seconds=args.probe_seconds, score=args.score,
                        finetune_top=args.finetune_top, knob_values=tuple(args.knob_values), threads=args.threads)
    entries = rank_library(args.library, args.data, config, progress=not args.json)
    ranked = [e for e in entries if e["score"] is not None]
    shown = ranked[:args.top] if args.top else ranked
    if args.export_best:
        if not ranked:
            raise ConfigError(f"{args.library}: no model could be scored for {args.data}; nothing to export")
        if Path(args.export_best).exists():
            raise ConfigError(f"{args.export_best}: exists; choose another --export-best file")
        export_starting_model(ranked[0], args.export_best, refit_head=args.refit_head)
    if args.json:
        print(json.dumps(shown + ([] if args.top else [e for e in entries if e["score"] is None])))
        return 0
    print(f"{'rank':>4}  {'score':>9}  {'ESR':>9}  {'gain':>7}  model")
    for e in shown:
        knobs = f"  (knobs {', '.join(f'{k:g}' for k in e['knobs'])})" if e["knobs"] else ""
        probe = f"  probe {e['probe_esr']:.4f}" if "probe_esr" in e else ""
        print(f"{e['rank']:>4}  {e['score']:9.4f}  {e['esr']:9.4f}  {e['gain']:7.3f}  {Path(e['model']).name}{knobs}{probe}")
    for e in entries:
        if e["score"] is None:
            print(f"   -  skipped {Path(e['model']).name}: {e['skipped']}")
    if args.export_best:
        print(f"wrote {args.export_best}: start a run with train --init-from {args.export_best}")
    return 0
