"""A model as plain numbers: its shape (:class:`ModelConfig`) and weights (:class:`ModelWeights`).

This is the framework-free form (numpy float32 arrays in PyTorch's layout, gate order
i, f, g, o) that every file format, the renderer and the exporters read and write; the torch
module that trains it is :class:`ampxfer_lib.model.network.AmpLSTM`. The two exact
transforms of a model's inputs live here too, beside the weights they rewrite:
:func:`expand_inputs` (a snapshot widened to take knobs) and :func:`fold_knobs` (a
knob-conditioned model frozen at one setting).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np

from ampxfer_lib.errors import ConfigError

#: Parameter names, in the order of the AGAM JSON ``state_dict``.
PARAM_NAMES = (
    "rec.weight_ih_l0",
    "rec.weight_hh_l0",
    "rec.bias_ih_l0",
    "rec.bias_hh_l0",
    "lin.weight",
    "lin.bias",
)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network. ``input_size`` is 1 for a snapshot, 1 + knobs otherwise."""

    input_size: int = 1
    hidden_size: int = 20
    skip: bool = True
    sample_rate: int = 44100

    def __post_init__(self):
        if self.input_size < 1:
            raise ValueError(f"input_size must be >= 1, got {self.input_size}")
        if self.hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {self.hidden_size}")

    @property
    def num_knobs(self) -> int:
        return self.input_size - 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def param_shapes(self) -> Dict[str, Tuple[int, ...]]:
        h, c = self.hidden_size, self.input_size
        return {
            "rec.weight_ih_l0": (4 * h, c),
            "rec.weight_hh_l0": (4 * h, h),
            "rec.bias_ih_l0": (4 * h,),
            "rec.bias_hh_l0": (4 * h,),
            "lin.weight": (1, h),
            "lin.bias": (1,),
        }


@dataclass
class ModelWeights:
    """A model as plain numpy arrays (float32, PyTorch layout, gate order i, f, g, o).

    ``params`` maps each name in :data:`PARAM_NAMES` to its array; shapes are
    ``ModelConfig.param_shapes()``. ``metadata`` is free-form text carried by formats that
    have room for it (name, device, knob names); it never affects the sound.
    """

    config: ModelConfig
    params: Dict[str, np.ndarray]
    metadata: Dict[str, object] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        shapes = self.config.param_shapes()
        missing = [k for k in shapes if k not in self.params]
        if missing:
            raise ValueError(f"missing parameters: {', '.join(missing)}")
        fixed = {}
        for name, shape in shapes.items():
            arr = np.asarray(self.params[name], dtype=np.float32)
            if arr.shape != shape:
                raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")
            fixed[name] = arr
        self.params = fixed

    # Convenience views, named for what they are in the LSTM equations.
    @property
    def weight_ih(self) -> np.ndarray:
        """(4H, C) input-to-gates weights."""
        return self.params["rec.weight_ih_l0"]

    @property
    def weight_hh(self) -> np.ndarray:
        """(4H, H) recurrent weights."""
        return self.params["rec.weight_hh_l0"]

    @property
    def bias(self) -> np.ndarray:
        """(4H,) bias_ih + bias_hh, the only combination that affects the output."""
        return self.params["rec.bias_ih_l0"] + self.params["rec.bias_hh_l0"]

    @property
    def head_weight(self) -> np.ndarray:
        """(H,) dense-layer weights."""
        return self.params["lin.weight"][0]

    @property
    def head_bias(self) -> float:
        return float(self.params["lin.bias"][0])

    def equal(self, other: "ModelWeights") -> bool:
        """True when config and every parameter are bit-for-bit identical."""
        return self.config == other.config and all(
            np.array_equal(self.params[k], other.params[k]) for k in PARAM_NAMES
        )

    def fingerprint(self) -> str:
        """sha256 (hex) of the network these weights compute, the same from any file format.

        Hashed, in this order: the config as sorted JSON (input size, hidden size, skip,
        sample rate), then for weight_ih (4H, C), weight_hh (4H, H), bias (4H,), lin.weight
        (1, H) and lin.bias (1,) the name, the shape and the little-endian float32 bytes
        (row-major), where bias is ``bias_ih + bias_hh`` in float32 and -0.0 counts as 0.0.
        So it is stable across files and formats: RTNeural and NAM store only the bias sum
        (importing gives ``bias_ih = sum, bias_hh = 0``, whose float32 sum is the same
        number), the float32 values of every format round-trip exactly, and neither JSON
        spelling nor ``metadata`` (names, notes: never the sound) enters the hash.
        """
        h = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True).encode("utf-8"))
        arrays = (("weight_ih", self.weight_ih), ("weight_hh", self.weight_hh), ("bias", self.bias),
                  ("lin.weight", self.params["lin.weight"]), ("lin.bias", self.params["lin.bias"]))
        zero = np.float32(0.0)
        for name, arr in arrays:
            h.update(f"{name}{list(arr.shape)}".encode("utf-8"))
            h.update(np.ascontiguousarray(arr + zero, dtype="<f4").tobytes())  # -0.0 + 0.0 = 0.0
        return h.hexdigest()


def expand_inputs(weights: ModelWeights, input_size: int) -> ModelWeights:
    """A snapshot (input_size 1) widened to ``input_size`` with zero knob weights.

    At every knob value the result computes exactly what the snapshot does, so it is the
    start of a knob-conditioned model trained from a snapshot.
    """
    if weights.config.input_size != 1:
        raise ValueError("only a snapshot model can be widened")
    params = dict(weights.params)
    w = np.zeros((weights.weight_ih.shape[0], input_size), dtype=np.float32)
    w[:, :1] = weights.weight_ih
    params["rec.weight_ih_l0"] = w
    config = ModelConfig(input_size, weights.config.hidden_size, weights.config.skip, weights.config.sample_rate)
    return ModelWeights(config, params, dict(weights.metadata))


def fold_knobs(weights: ModelWeights, knobs: Sequence[float]) -> ModelWeights:
    """A conditioned model frozen at ``knobs``, as a snapshot model (input_size 1).

    Exact: the knob inputs are constant, so ``W_ih[:, 1:] @ knobs`` is one more constant
    input to every gate and joins ``bias_ih`` (summed in float64, rounded once).
    """
    knobs = np.asarray(list(knobs), dtype=np.float64)
    if len(knobs) != weights.config.num_knobs:
        raise ConfigError(f"the model has {weights.config.num_knobs} knob(s); {len(knobs)} value(s) given")
    params = dict(weights.params)
    w = weights.weight_ih.astype(np.float64)
    params["rec.weight_ih_l0"] = weights.weight_ih[:, :1].copy()
    params["rec.bias_ih_l0"] = (weights.params["rec.bias_ih_l0"].astype(np.float64) + w[:, 1:] @ knobs).astype(np.float32)
    config = ModelConfig(1, weights.config.hidden_size, weights.config.skip, weights.config.sample_rate)
    return ModelWeights(config, params, dict(weights.metadata))
