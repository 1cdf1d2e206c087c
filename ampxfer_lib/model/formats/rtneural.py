"""RTNeural / AIDA-X Keras-style JSON: plays in AIDA-X and other RTNeural-based plugins.

Layout (RTNeural's ``json_parser`` reads ``in_shape`` and ``layers``; AIDA-X adds ``in_skip``)::

    {"in_shape": [null, null, C], "in_skip": 1|0,
     "layers": [{"type": "lstm", "activation": "", "shape": [null, null, H],
                 "weights": [W (C x 4H), U (H x 4H), b (4H)]},
                {"type": "dense", "activation": "", "shape": [null, null, 1],
                 "weights": [Wd (H x 1), bd (1)]}]}

``W`` is PyTorch's ``weight_ih`` transposed, ``U`` is ``weight_hh`` transposed and ``b`` is
``bias_ih + bias_hh``. The gate order is Keras's (i, f, c, o), which is PyTorch's (i, f, g, o):
RTNeural's LSTM splits the 4H columns into input, forget, cell and output blocks in that
order, so no reordering is needed. One step of the network is::

    z = x[t] @ W + h @ U + b;  i, f, g, o = split(z, 4)
    c = sigmoid(f) * c + sigmoid(i) * tanh(g);  h = sigmoid(o) * tanh(c)
    y[t] = h @ Wd + bd  (+ x[t, 0] when in_skip is 1; the host adds it, as AIDA-X does)

The two biases are stored summed, so importing gives ``bias_ih = b`` and ``bias_hh = 0``:
the same network, and a file that exports back byte for byte. ``sample_rate`` is written
(top level) only when it is not 44100; RTNeural and AIDA-X ignore it.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

import numpy as np

from ampxfer_lib.errors import ModelFormatError
from ampxfer_lib.validate import number
from ampxfer_lib.fileio import PathLike, atomic_write_text
from ampxfer_lib.model.formats.jsonfile import read_json_file
from ampxfer_lib.model.weights import ModelConfig, ModelWeights

FORMAT_NAME = "rtneural"
DEFAULT_RATE = 44100
#: Hidden sizes AIDA-X has compiled models for (its model_variant.hpp), with 1-3 inputs.
AIDAX_HIDDEN_SIZES = (8, 12, 16, 20, 32, 40, 64, 80)
AIDAX_MAX_INPUTS = 3
_LINEAR = ("", "linear", None)


def is_rtneural(obj: Any) -> bool:
    return isinstance(obj, dict) and "layers" in obj and "in_shape" in obj


def to_json_obj(weights: ModelWeights) -> dict:
    cfg = weights.config
    h = cfg.hidden_size
    obj: Dict[str, Any] = {
        "in_shape": [None, None, cfg.input_size],
        "in_skip": int(cfg.skip),
        "layers": [
            {"type": "lstm", "activation": "", "shape": [None, None, h],
             "weights": [weights.weight_ih.T.tolist(), weights.weight_hh.T.tolist(), weights.bias.tolist()]},
            {"type": "dense", "activation": "", "shape": [None, None, 1],
             "weights": [weights.params["lin.weight"].T.tolist(), weights.params["lin.bias"].tolist()]},
        ],
    }
    if cfg.sample_rate != DEFAULT_RATE:
        obj["sample_rate"] = cfg.sample_rate
    return obj


def _array(value: Any, shape: tuple, what: str, source: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise ModelFormatError(f"{source}: {what} is not a numeric array; the file is damaged") from None
    if arr.shape != shape:
        raise ModelFormatError(f"{source}: {what} has shape {arr.shape}, expected {shape}; the file does not "
                               "match its in_shape/shape entries")
    if not np.all(np.isfinite(arr)):
        raise ModelFormatError(f"{source}: {what} holds NaN or infinite values; the model is broken")
    return arr


def _last_int(shape: Any, what: str, source: str) -> int:
    if not isinstance(shape, list) or not shape or not isinstance(shape[-1], int) or isinstance(shape[-1], bool) \
            or shape[-1] < 1:
        raise ModelFormatError(f"{source}: {what} must be a list ending in a positive size, like [null, null, 1]")
    return shape[-1]


def from_json_obj(obj: Any, source: str = "model") -> ModelWeights:
    """Parse a decoded RTNeural JSON object (one LSTM layer and one dense layer)."""
    if not is_rtneural(obj):
        raise ModelFormatError(f"{source}: not an RTNeural/AIDA-X model (no 'in_shape' and 'layers')")
    n_in = _last_int(obj["in_shape"], "in_shape", source)
    layers = obj["layers"]
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise ModelFormatError(f"{source}: 'layers' must be a list of layer objects; the file is damaged")
    types = [str(layer.get("type", "?")) for layer in layers]
    if "gru" in types:
        raise ModelFormatError(f"{source}: a GRU model; ampxfer trains and plays LSTM models only")
    if types.count("lstm") > 1:
        raise ModelFormatError(f"{source}: {types.count('lstm')} LSTM layers; only single-layer LSTM models "
                               "(one 'lstm' then one 'dense' layer) are supported")
    if types != ["lstm", "dense"]:
        raise ModelFormatError(f"{source}: layers {types}; only an 'lstm' layer followed by one 'dense' layer "
                               "(the NeuralPi/AIDA-X LSTM) is supported")
    lstm, dense = layers
    for layer in layers:
        if layer.get("activation") not in _LINEAR:
            raise ModelFormatError(f"{source}: the {layer['type']} layer has activation {layer['activation']!r}; "
                                   "only a linear ('') output layer is supported")
        if not isinstance(layer.get("weights"), list):
            raise ModelFormatError(f"{source}: the {layer['type']} layer has no 'weights' list; the file is damaged")
    h = _last_int(lstm.get("shape"), "the lstm layer's shape", source)
    if _last_int(dense.get("shape"), "the dense layer's shape", source) != 1:
        raise ModelFormatError(f"{source}: the dense layer has {dense['shape'][-1]} outputs; only mono output (1) "
                               "is supported")
    if len(lstm["weights"]) != 3 or len(dense["weights"]) != 2:
        raise ModelFormatError(f"{source}: expected 3 lstm weight arrays (W, U, b) and 2 dense ones (W, b), got "
                               f"{len(lstm['weights'])} and {len(dense['weights'])}")
    w = _array(lstm["weights"][0], (n_in, 4 * h), "the lstm kernel W", source)
    u = _array(lstm["weights"][1], (h, 4 * h), "the lstm recurrent kernel U", source)
    b = _array(lstm["weights"][2], (4 * h,), "the lstm bias", source)
    wd = _array(dense["weights"][0], (h, 1), "the dense kernel", source)
    bd = _array(dense["weights"][1], (1,), "the dense bias", source)

    skip = obj.get("in_skip", 0)
    if skip not in (0, 1) or isinstance(skip, bool):
        raise ModelFormatError(f"{source}: in_skip {skip!r}; only 0 or 1 is supported (as in AIDA-X)")
    for key in ("in_gain", "out_gain"):
        gain = obj.get(key, 0)
        if not isinstance(gain, (int, float)) or gain != 0:
            raise ModelFormatError(f"{source}: {key} {gain!r} dB is not supported; set it to 0 (or remove it) and "
                                   "adjust the level in the plugin")
    rate = number(obj.get("sample_rate", DEFAULT_RATE), f"{source}: sample_rate", integer=True, lo=8000, hi=192000,
                  error=ModelFormatError)
    try:
        config = ModelConfig(input_size=n_in, hidden_size=h, skip=bool(skip), sample_rate=rate)
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"{source}: bad model description ({exc}); the file is damaged") from None
    params = {
        "rec.weight_ih_l0": w.T,
        "rec.weight_hh_l0": u.T,
        "rec.bias_ih_l0": b,
        "rec.bias_hh_l0": np.zeros_like(b),
        "lin.weight": wd.T,
        "lin.bias": bd,
    }
    return ModelWeights(config, params)


def dumps(weights: ModelWeights) -> str:
    return json.dumps(to_json_obj(weights))


def load(path: PathLike) -> ModelWeights:
    return from_json_obj(read_json_file(path), str(path))


def save(weights: ModelWeights, path: PathLike) -> None:
    atomic_write_text(path, dumps(weights))


def compatibility(weights: ModelWeights) -> List[str]:
    """Lines saying which plugins load an export of ``weights`` and what to watch for."""
    cfg = weights.config
    lines = []
    aidax_ok = cfg.hidden_size in AIDAX_HIDDEN_SIZES and cfg.input_size <= AIDAX_MAX_INPUTS
    if aidax_ok:
        knobs = ""
        if cfg.num_knobs:
            knobs = (f"; its {cfg.num_knobs} knob(s) map to AIDA-X's PARAM1/PARAM2 controls (recent AIDA-X; "
                     "early versions load snapshot models only)")
        lines.append(f"AIDA-X (and aidadsp-lv2 on MOD devices) loads it: LSTM {cfg.hidden_size}, {cfg.input_size} "
                     f"input(s){knobs}.")
    else:
        why = (f"hidden size {cfg.hidden_size} (AIDA-X has {', '.join(map(str, AIDAX_HIDDEN_SIZES))})"
               if cfg.hidden_size not in AIDAX_HIDDEN_SIZES else f"{cfg.input_size} inputs (AIDA-X takes 1-3)")
        lines.append(f"AIDA-X will NOT load it: {why}. Hosts with RTNeural's run-time JSON loader can.")
    lines.append("in_skip=1: the host adds the guitar signal to the network output (AIDA-X does; a bare RTNeural "
                 "host must do it itself)." if cfg.skip else
                 "in_skip=0: the network output is the whole signal (no skip connection).")
    lines.append(f"Trained at {cfg.sample_rate} Hz: run the host at {cfg.sample_rate} Hz (AIDA-X runs the model at "
                 "the host's rate).")
    return lines
