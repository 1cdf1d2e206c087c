"""The AGAM / NeuralPi / Proteus LSTM JSON format: the native format of every run.

Layout (one line, ``json.dumps`` default separators, no trailing newline)::

    {"model_data": {"model": "SimpleRNN", "input_size": C, "skip": 1|0, "output_size": 1,
                    "unit_type": "LSTM", "num_layers": 1, "hidden_size": H, "bias_fl": true
                    [, "sample_rate": SR]},
     "state_dict": {"rec.weight_ih_l0": [4H x C], "rec.weight_hh_l0": [4H x H],
                    "rec.bias_ih_l0": [4H], "rec.bias_hh_l0": [4H],
                    "lin.weight": [1 x H], "lin.bias": [1]}}

Weights are float32 values written as the shortest decimal of their float64 widening,
which is what ``json.dumps`` of ``tensor.tolist()`` produces; reading into float32 and
writing back therefore reproduces such files byte for byte. ``sample_rate`` is written
only when it is not 44100 (absent means 44100, the rate every plugin assumes).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict

import numpy as np

from ampxfer_lib.errors import ModelFormatError
from ampxfer_lib.fileio import PathLike, atomic_write_text
from ampxfer_lib.model.formats.jsonfile import read_json_file
from ampxfer_lib.model.weights import PARAM_NAMES, ModelConfig, ModelWeights
from ampxfer_lib.validate import MAX_HIDDEN, number

FORMAT_NAME = "neuralpi"
DEFAULT_RATE = 44100
_CANONICAL_KEYS = ("model", "input_size", "skip", "output_size", "unit_type", "num_layers",
                   "hidden_size", "bias_fl")


def is_neuralpi(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("model_data"), dict) and "state_dict" in obj


def from_json_obj(obj: Any, source: str = "model") -> ModelWeights:
    """Parse an already-decoded AGAM JSON object; ``source`` names the file in errors."""
    if not is_neuralpi(obj):
        raise ModelFormatError(f"{source}: not an AGAM/NeuralPi model (no 'model_data' and "
                               "'state_dict'); convert other formats with `ampxfer import`")
    md = obj["model_data"]
    unit = str(md.get("unit_type", "")).upper()
    if unit != "LSTM":
        raise ModelFormatError(f"{source}: a {md.get('unit_type')!r} model; ampxfer trains and plays "
                               "LSTM models only: use an LSTM capture")
    if md.get("model", "SimpleRNN") != "SimpleRNN":
        raise ModelFormatError(f"{source}: model type {md.get('model')!r} is not supported "
                               "(expected 'SimpleRNN', the AGAM LSTM)")
    _check_model_data(md, source)
    if int(md.get("num_layers", 1)) != 1:
        raise ModelFormatError(f"{source}: {md.get('num_layers')} LSTM layers; only single-layer "
                               "models (NeuralPi/Proteus) are supported")
    if int(md.get("output_size", 1)) != 1:
        raise ModelFormatError(f"{source}: output_size {md.get('output_size')}; only mono output (1) "
                               "is supported")
    if md.get("bias_fl", True) is not True:
        raise ModelFormatError(f"{source}: bias_fl is false; models without biases are not supported")
    try:
        config = ModelConfig(
            input_size=int(md["input_size"]),
            hidden_size=int(md["hidden_size"]),
            skip=bool(int(md.get("skip", 1))),
            sample_rate=int(md.get("sample_rate", DEFAULT_RATE)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{source}: bad model_data ({exc}); the file is damaged") from None
    sd = obj["state_dict"]
    if not isinstance(sd, dict):
        raise ModelFormatError(f"{source}: 'state_dict' is not an object; the file is damaged")
    unknown = sorted(set(sd) - set(PARAM_NAMES))
    if unknown:
        raise ModelFormatError(f"{source}: unexpected weights {unknown[:3]}; not a single-layer "
                               "AGAM LSTM model")
    params: Dict[str, np.ndarray] = {}
    for name, shape in config.param_shapes().items():
        if name not in sd:
            raise ModelFormatError(f"{source}: weight {name!r} is missing; the file is incomplete")
        try:
            with np.errstate(over="ignore"):  # beyond float32: inf, refused below
                arr = np.asarray(sd[name], dtype=np.float32)
        except (TypeError, ValueError):
            raise ModelFormatError(f"{source}: weight {name!r} is not a numeric array; the file "
                                   "is damaged") from None
        if arr.shape != shape:
            raise ModelFormatError(f"{source}: weight {name!r} has shape {arr.shape}, expected "
                                   f"{shape} for hidden_size {config.hidden_size} and input_size "
                                   f"{config.input_size}")
        if not np.all(np.isfinite(arr)):
            raise ModelFormatError(f"{source}: weight {name!r} holds NaN or infinite values; the "
                                   "model is broken")
        params[name] = arr
    extra = {k: v for k, v in md.items() if k not in _CANONICAL_KEYS and k != "sample_rate"}
    metadata = {"neuralpi_extra": extra} if extra else {}
    return ModelWeights(config, params, metadata)


def _check_model_data(md: dict, source: str) -> None:
    """Type and range of the numbers in ``model_data`` (a hand-edited file may hold text,
    NaN or a zero rate), each refused with one line naming the field."""
    where = f"{source}: model_data"
    for key, lo, hi in (("num_layers", 1, 64), ("output_size", 1, 64), ("input_size", 1, 64),
                        ("hidden_size", 1, MAX_HIDDEN), ("sample_rate", 8000, 192000), ("skip", 0, 1)):
        if key in md or key in ("input_size", "hidden_size"):
            number(md.get(key), f"{where}.{key}", integer=True, lo=lo, hi=hi, error=ModelFormatError)


def to_json_obj(weights: ModelWeights) -> dict:
    cfg = weights.config
    md: Dict[str, Any] = {
        "model": "SimpleRNN",
        "input_size": cfg.input_size,
        "skip": int(cfg.skip),
        "output_size": 1,
        "unit_type": "LSTM",
        "num_layers": 1,
        "hidden_size": cfg.hidden_size,
        "bias_fl": True,
    }
    if cfg.sample_rate != DEFAULT_RATE:
        md["sample_rate"] = cfg.sample_rate
    md.update(weights.metadata.get("neuralpi_extra", {}) or {})
    return {"model_data": md, "state_dict": {k: weights.params[k].tolist() for k in PARAM_NAMES}}


def dumps(weights: ModelWeights) -> str:
    return json.dumps(to_json_obj(weights))


def json_sha256(weights: ModelWeights) -> str:
    """sha256 (hex) of :func:`dumps` of ``weights``: the ``init_fingerprint`` that run folders
    written before :meth:`ModelWeights.fingerprint` store. It changes with the bias split and
    the extra ``model_data`` keys, so it only serves to recognise those folders."""
    return hashlib.sha256(dumps(weights).encode("utf-8")).hexdigest()


def loads(text: str, source: str = "model") -> ModelWeights:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}); the "
                               "file is truncated or not a model") from None
    return from_json_obj(obj, source)


def load(path: PathLike) -> ModelWeights:
    return from_json_obj(read_json_file(path), str(path))


def save(weights: ModelWeights, path: PathLike) -> None:
    atomic_write_text(path, dumps(weights))


#: Hidden sizes compiled into the plugins (their RTNeural LSTM templates, 1-3 inputs each):
#: NeuralPi has hidden 20 (later versions also 40), Proteus hidden 40. Both add the input
#: signal to the network output, i.e. they play skip models only.
NEURALPI_HIDDEN_SIZES = (20,)
PROTEUS_HIDDEN_SIZES = (40,)
PLUGIN_MAX_INPUTS = 3


def compatibility(weights: ModelWeights) -> list:
    """Lines saying which plugins load ``weights`` saved in this format."""
    cfg = weights.config
    lines = []
    fits_inputs = cfg.input_size <= PLUGIN_MAX_INPUTS
    for plugin, sizes in (("NeuralPi", NEURALPI_HIDDEN_SIZES), ("Proteus", PROTEUS_HIDDEN_SIZES)):
        if cfg.skip and fits_inputs and cfg.hidden_size in sizes:
            knobs = f", {cfg.num_knobs} knob(s) on the plugin's controls" if cfg.num_knobs else ""
            lines.append(f"{plugin} loads it (LSTM {cfg.hidden_size}, skip on{knobs}).")
        else:
            why = []
            if cfg.hidden_size not in sizes:
                why.append(f"needs hidden size {' or '.join(map(str, sizes))}, this is {cfg.hidden_size}")
            if not cfg.skip:
                why.append("always adds the input to the output, so it needs skip on (this model has --no-skip)")
            if not fits_inputs:
                why.append(f"takes 1-{PLUGIN_MAX_INPUTS} inputs, this has {cfg.input_size}")
            lines.append(f"{plugin} will NOT play it correctly: {'; '.join(why)}.")
    lines.append("ampxfer itself (train --init-from, render, evaluate) reads it, as does the AGAM/Automated-"
                 "GuitarAmpModelling tooling; other plugins: export --format rtneural (AIDA-X) or nam.")
    if cfg.sample_rate != DEFAULT_RATE:
        lines.append(f"Trained at {cfg.sample_rate} Hz: NeuralPi/Proteus assume 44100 Hz models; run the host at "
                     f"{cfg.sample_rate} Hz.")
    return lines
