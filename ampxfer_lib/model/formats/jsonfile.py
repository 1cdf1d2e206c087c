"""Reading a model JSON file and telling which format it is in, before any format parses it."""

from __future__ import annotations

import json
import os
from typing import Any

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
