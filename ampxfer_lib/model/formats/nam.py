"""Neural Amp Modeler ``.nam`` files with the LSTM architecture.

A ``.nam`` file is JSON::

    {"version": "0.5.4", "metadata": {...}, "architecture": "LSTM",
     "config": {"input_size": 1, "hidden_size": H, "num_layers": 1},
     "sample_rate": SR, "weights": [...]}

``weights`` is one flat list. For each LSTM layer: the matrix ``[weight_ih | weight_hh]``
(4H x (in + H), row-major, gate order i, f, g, o as in PyTorch), then ``bias_ih + bias_hh``
(4H), then the initial hidden state (H) and the initial cell state (H); after the layers the
head's weight (H) and bias (1). NAM's LSTM is ``y = head(lstm(x))``: it has no skip path, so
only models trained with ``--no-skip`` can be written, and NAM plugins feed it the guitar
signal alone (input_size 1), so a knob-conditioned model must have its knobs frozen first
(``export --knob V``; the folding is exact).

We write zeros as the initial state, so the plugin starts from the state our renderer
starts from. NAM's own trainer writes the state after 48000 samples of silence instead;
importing such a file keeps the weights exactly and drops that state (ampxfer always starts
from zeros), which changes only the first moments of the output.

The ``version`` is the .nam schema version, not NAM's package version. ``0.5.4`` is a schema
version NAM's trainer wrote for years (current ones write 0.7.0); plugin cores accept it all
alike: older ones accept only 0.5.x, current ones 0.5.0 to 0.7.0.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Optional

import numpy as np

from ampxfer_lib.errors import ModelFormatError
from ampxfer_lib.fileio import PathLike, atomic_write_text
from ampxfer_lib.model.formats.jsonfile import read_json_file
from ampxfer_lib.model.weights import ModelConfig, ModelWeights

FORMAT_NAME = "nam"
NAM_FILE_VERSION = "0.5.4"
#: NAM's default rate; old .nam files without a ``sample_rate`` were trained at it.
NAM_DEFAULT_RATE = 48000


def is_nam(obj: Any) -> bool:
    return isinstance(obj, dict) and "architecture" in obj and "weights" in obj


def check_exportable(weights: ModelWeights, source: str = "model") -> None:
    """Raise ModelFormatError when ``weights`` cannot be a NAM LSTM (skip on, or knob inputs)."""
    cfg = weights.config
    if cfg.skip:
        raise ModelFormatError(
            f"{source}: has a skip connection (output = network + input), which NAM's LSTM does not have; "
            "train the model with --no-skip to export it to NAM (or export --format rtneural / neuralpi)")
    if cfg.input_size != 1:
        raise ModelFormatError(
            f"{source}: takes {cfg.num_knobs} knob input(s) but NAM plugins feed the guitar signal only; "
            "freeze the knob(s) with --knob V (one per knob) to export a snapshot at that setting")


def flat_weights(weights: ModelWeights) -> np.ndarray:
    """The ``weights`` list of a NAM LSTM file, zero initial state: (4H(C+H) + 4H + 2H + H + 1,) float32."""
    h = weights.config.hidden_size
    parts = [
        np.concatenate([weights.weight_ih, weights.weight_hh], axis=1).reshape(-1),
        weights.bias,
        np.zeros(h, dtype=np.float32),  # initial hidden state
        np.zeros(h, dtype=np.float32),  # initial cell state
        weights.head_weight,
        weights.params["lin.bias"],
    ]
    return np.concatenate(parts).astype(np.float32)


def to_json_obj(weights: ModelWeights, metadata: Optional[Dict[str, Any]] = None,
                source: str = "model") -> dict:
    """The .nam object for a no-skip snapshot model. ``metadata`` adds to (and overrides)
    the metadata carried by ``weights`` (e.g. ``{"name": "My TS9"}``)."""
    check_exportable(weights, source)
    cfg = weights.config
    md: Dict[str, Any] = dict(weights.metadata.get("nam_metadata") or {})
    if "name" not in md and isinstance(weights.metadata.get("name"), str):
        md["name"] = weights.metadata["name"]
    md.update(metadata or {})
    return {
        "version": NAM_FILE_VERSION,
        "metadata": md,
        "architecture": "LSTM",
        "config": {"input_size": cfg.input_size, "hidden_size": cfg.hidden_size, "num_layers": 1},
        "sample_rate": cfg.sample_rate,
        "weights": flat_weights(weights).tolist(),
    }


def _int_field(config: dict, key: str, source: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ModelFormatError(f"{source}: config.{key} is {value!r}, expected a positive whole number; the file is "
                               "damaged")
    return value


def from_json_obj(obj: Any, source: str = "model") -> ModelWeights:
    """Parse a decoded .nam object with the LSTM architecture (one layer)."""
    if not is_nam(obj):
        raise ModelFormatError(f"{source}: not a Neural Amp Modeler file (no 'architecture' and 'weights')")
    arch = obj["architecture"]
    if arch != "LSTM":
        raise ModelFormatError(f"{source}: a NAM {arch!r} model; ampxfer converts NAM LSTM models only "
                               "(WaveNet and other architectures play in NAM itself)")
    config = obj.get("config")
    if not isinstance(config, dict):
        raise ModelFormatError(f"{source}: 'config' is missing or not an object; the file is damaged")
    n_in = _int_field(config, "input_size", source)
    h = _int_field(config, "hidden_size", source)
    layers = _int_field(config, "num_layers", source)
    if layers != 1:
        raise ModelFormatError(f"{source}: a {layers}-layer LSTM; ampxfer supports single-layer LSTM models only")
    flat = obj["weights"]
    if not isinstance(flat, list):
        raise ModelFormatError(f"{source}: 'weights' is not a list; the file is damaged")
    try:
        w = np.asarray(flat, dtype=np.float32)
    except (TypeError, ValueError):
        raise ModelFormatError(f"{source}: 'weights' holds values that are not numbers; the file is damaged") from None
    n_matrix = 4 * h * (n_in + h)
    expected = n_matrix + 4 * h + 2 * h + h + 1
    if w.ndim != 1 or w.shape[0] != expected:
        raise ModelFormatError(f"{source}: {w.shape[0] if w.ndim == 1 else w.shape} weights, expected {expected} for "
                               f"an LSTM with input_size {n_in} and hidden_size {h}; the file is truncated or "
                               "damaged")
    if not np.all(np.isfinite(w)):
        raise ModelFormatError(f"{source}: 'weights' holds NaN or infinite values; the model is broken")
    rate = obj.get("sample_rate", None)
    if rate is None:
        rate = NAM_DEFAULT_RATE
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not math.isfinite(rate) \
            or rate != int(rate) or not 8000 <= rate <= 192000:
        raise ModelFormatError(f"{source}: sample_rate {rate!r} is not a usable audio rate; the file is damaged")

    i = 0
    matrix = w[i:i + n_matrix].reshape(4 * h, n_in + h)
    i += n_matrix
    bias = w[i:i + 4 * h]
    i += 4 * h
    initial = w[i:i + 2 * h]
    i += 2 * h
    head_w = w[i:i + h]
    head_b = w[i + h:i + h + 1]
    params = {
        "rec.weight_ih_l0": matrix[:, :n_in],
        "rec.weight_hh_l0": matrix[:, n_in:],
        "rec.bias_ih_l0": bias,
        "rec.bias_hh_l0": np.zeros_like(bias),
        "lin.weight": head_w[None, :],
        "lin.bias": head_b,
    }
    metadata: Dict[str, Any] = {}
    md = obj.get("metadata")
    if isinstance(md, dict) and md:
        metadata["nam_metadata"] = md
        if isinstance(md.get("name"), str):
            metadata["name"] = md["name"]
    notes = []
    if np.any(initial != 0):
        notes.append(f"the file's initial LSTM state (max |value| {float(np.max(np.abs(initial))):.3g}) was dropped: "
                     "ampxfer starts from silence (zero state), which changes only the first moments of the output")
    if "sample_rate" not in obj:
        notes.append(f"no sample_rate in the file; assumed NAM's default {NAM_DEFAULT_RATE} Hz")
    if notes:
        metadata["import_notes"] = notes
    return ModelWeights(ModelConfig(n_in, h, skip=False, sample_rate=int(rate)), params, metadata)


def dumps(weights: ModelWeights, metadata: Optional[Dict[str, Any]] = None, source: str = "model") -> str:
    return json.dumps(to_json_obj(weights, metadata, source))


def load(path: PathLike) -> ModelWeights:
    return from_json_obj(read_json_file(path), str(path))


def save(weights: ModelWeights, path: PathLike, metadata: Optional[Dict[str, Any]] = None) -> None:
    atomic_write_text(path, dumps(weights, metadata, str(path)))


def compatibility(weights: ModelWeights) -> List[str]:
    """Lines saying which plugins load an export of ``weights``."""
    cfg = weights.config
    return [
        f"Neural Amp Modeler (plugin, and NAM-based hosts such as neural-amp-modeler-lv2) loads it: LSTM, hidden size "
        f"{cfg.hidden_size}, no skip connection.",
        f"Records sample_rate {cfg.sample_rate} Hz; NAM plugins that resample play it at that rate, older ones need the "
        f"host at {cfg.sample_rate} Hz.",
        "Initial state is zero (as in ampxfer's renderer); NAM plugins warm a model up on silence when loading it, "
        "which only settles the state before the first note.",
    ]
