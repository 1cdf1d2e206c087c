"""Model file formats, one module each. ``neuralpi`` (AGAM/Proteus JSON) is the native one.

:func:`sniff` names the format of a decoded JSON object so that errors can say what a
file is ("this is an RTNeural file: use `ampxfer import`") instead of failing on a key.
:func:`export_model` writes any supported plugin format and says which plugins load it;
:func:`import_model` reads any of them back, recognising the format from the content.

Formats: ``neuralpi`` (aliases ``agam``, ``proteus``), ``rtneural`` (alias ``aidax``) and
``nam`` (LSTM models trained with ``--no-skip``).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

from ampxfer_lib.errors import ModelFormatError
from ampxfer_lib.fileio import PathLike

#: The largest model file we read (a hidden-128 LSTM is about 3 MB of JSON).
MAX_MODEL_BYTES = 64 * 1024 * 1024


def read_json_file(path: PathLike) -> Any:
    """Decode a JSON model file, turning every failure into one clear line."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFormatError(f"{path}: no such file; check the path")
    if os.path.isdir(path):
        raise ModelFormatError(f"{path}: is a folder; give a model .json file (in a run folder, "
                               "model_best.json)")
    size = os.path.getsize(path)
    if size == 0:
        raise ModelFormatError(f"{path}: empty file; the model was not saved completely")
    if size > MAX_MODEL_BYTES:
        raise ModelFormatError(f"{path}: {size} bytes is far too large for an LSTM model file")
    try:
        with open(path, "rb") as f:
            # utf-8-sig: Windows Notepad saves UTF-8 with a byte-order mark in front.
            text = f.read().decode("utf-8-sig")
        return json.loads(text)
    except RecursionError:
        raise ModelFormatError(f"{path}: JSON nested far too deeply for a model file; not a model") from None
    except UnicodeDecodeError:
        raise ModelFormatError(f"{path}: not a text file; expected a JSON model") from None
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column "
                               f"{exc.colno}); the file is truncated or not a model") from None


def sniff(obj: Any) -> str:
    """Name the model format of a decoded JSON object.

    Returns one of ``neuralpi``, ``rtneural``, ``nam``, ``wavenet`` (PedalNetRT / GuitarML
    WaveNet) or ``unknown``.
    """
    if not isinstance(obj, dict):
        return "unknown"
    if isinstance(obj.get("model_data"), dict) and "state_dict" in obj:
        return "neuralpi"
    if "layers" in obj and "in_shape" in obj:
        return "rtneural"
    if "architecture" in obj and "weights" in obj:
        return "nam"
    keys = set(obj)
    if {"dilation_depth", "num_channels"} & keys or "wavenet" in json.dumps(sorted(keys)).lower():
        return "wavenet"
    return "unknown"


def load_model(path: PathLike):
    """Load a model that must be in the native AGAM/NeuralPi format (the training input).

    Other known formats are refused with a message that names them and the converter.
    """
    from ampxfer_lib.model.formats import neuralpi

    obj = read_json_file(path)
    kind = sniff(obj)
    if kind == "neuralpi":
        return neuralpi.from_json_obj(obj, os.fspath(path))
    hints = {
        "rtneural": "an RTNeural/AIDA-X file: convert it first with `ampxfer import --model FILE --out M.json`",
        "nam": "a Neural Amp Modeler file: convert an LSTM .nam with `ampxfer import --model FILE --out M.json`",
        "wavenet": "a WaveNet (PedalNetRT) model: ampxfer trains LSTM models only",
        "unknown": "not an AGAM/NeuralPi LSTM model (expected 'model_data' and 'state_dict')",
    }
    raise ModelFormatError(f"{os.fspath(path)}: {hints[kind]}")


def save_model(weights, path: PathLike) -> None:
    from ampxfer_lib.model.formats import neuralpi

    neuralpi.save(weights, path)


#: Export formats and the names users know them by.
FORMATS = ("neuralpi", "rtneural", "nam")
ALIASES: Dict[str, str] = {"agam": "neuralpi", "proteus": "neuralpi", "aidax": "rtneural", "aida-x": "rtneural"}
#: The file extension each format is usually saved with.
EXTENSIONS = {"neuralpi": ".json", "rtneural": ".json", "nam": ".nam"}


def canonical_format(name: str) -> str:
    """``neuralpi``, ``rtneural`` or ``nam`` for a format name or alias (case-insensitive)."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in FORMATS:
        names = ", ".join(list(FORMATS) + sorted(ALIASES))
        raise ModelFormatError(f"unknown model format {name!r}; one of {names}")
    return key


def _module(fmt: str):
    from ampxfer_lib.model.formats import nam, neuralpi, rtneural

    return {"neuralpi": neuralpi, "rtneural": rtneural, "nam": nam}[fmt]


def compatibility(weights, fmt: str) -> List[str]:
    """Lines saying which plugins load ``weights`` written as ``fmt`` (and what to watch for)."""
    return _module(canonical_format(fmt)).compatibility(weights)


def export_model(weights, fmt: str, path: PathLike, knobs: Optional[Sequence[float]] = None,
                 metadata: Optional[Dict[str, Any]] = None, source: Optional[str] = None) -> List[str]:
    """Write ``weights`` to ``path`` as ``fmt``; returns the plugin-compatibility notes.

    ``knobs`` freezes a knob-conditioned model at those values first (exact: the knob
    inputs become part of the LSTM bias), giving a snapshot any plugin can play.
    ``metadata`` (e.g. ``{"name": ...}``) is written where the format has room for it (NAM).
    Nothing is written when the model cannot be represented in ``fmt``; ``source`` names
    the model in that error (default: ``path``).
    """
    fmt = canonical_format(fmt)
    notes: List[str] = []
    if knobs:
        from ampxfer_lib.transfer.init_from import fold_knobs

        weights = fold_knobs(weights, knobs)
        notes.append(f"knob(s) frozen at {', '.join(f'{k:g}' for k in knobs)}: the file is a snapshot model")
    module = _module(fmt)
    if fmt == "nam":
        module.check_exportable(weights, source or os.fspath(path))
        module.save(weights, path, metadata)
    else:
        if metadata:
            weights = type(weights)(weights.config, weights.params, {**weights.metadata, **metadata})
        module.save(weights, path)
    return notes + module.compatibility(weights)


def import_model(path: PathLike):
    """Read a model in any supported format (recognised from the content) as ModelWeights.

    Notes about what could not be carried over (e.g. a NAM file's initial state) are in
    ``weights.metadata["import_notes"]``.
    """
    from ampxfer_lib.model.formats import nam, neuralpi, rtneural

    obj = read_json_file(path)
    kind = sniff(obj)
    source = os.fspath(path)
    if kind == "neuralpi":
        return neuralpi.from_json_obj(obj, source)
    if kind == "rtneural":
        return rtneural.from_json_obj(obj, source)
    if kind == "nam":
        return nam.from_json_obj(obj, source)
    if kind == "wavenet":
        raise ModelFormatError(f"{source}: a WaveNet (PedalNetRT) model; ampxfer converts LSTM models only")
    raise ModelFormatError(f"{source}: not a model ampxfer knows (expected AGAM/NeuralPi JSON, RTNeural/AIDA-X JSON "
                           "or a NAM LSTM .nam file)")
