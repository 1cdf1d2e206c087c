"""The network: a stateful LSTM, a dense layer and a skip connection.

This is the architecture of the AGAM training code and of the NeuralPi / Proteus plugins::

    y[t] = lin(h[t]) + x[t, 0]        (skip on; x[t, 0] is the guitar signal)
    h[t], c[t] = LSTM(x[t], (h[t-1], c[t-1])),  h[-1] = c[-1] = 0

Extra input channels carry knob positions (0..1), held constant over a capture, so
``input_size = 1 + number of knobs``. Gate order inside the LSTM weights is PyTorch's
(i, f, g, o), which is also the order of the AGAM JSON files.

:class:`ModelWeights` is the framework-free form (numpy float32 arrays in PyTorch layout)
that every file format, the renderer and the exporters read and write; :class:`AmpLSTM`
is the torch module used for training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ampxfer_lib.model import cpu_lstm as lstm_cpu

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

    def to_module(self) -> "AmpLSTM":
        model = AmpLSTM(self.config)
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in self.params.items()})
        return model

    @classmethod
    def from_module(cls, model: "AmpLSTM", metadata: Optional[dict] = None) -> "ModelWeights":
        sd = model.state_dict()
        params = {k: sd[k].detach().to("cpu", torch.float32).numpy().copy() for k in PARAM_NAMES}
        return cls(model.config, params, dict(metadata or {}))

    def equal(self, other: "ModelWeights") -> bool:
        """True when config and every parameter are bit-for-bit identical."""
        return self.config == other.config and all(
            np.array_equal(self.params[k], other.params[k]) for k in PARAM_NAMES
        )


class AmpLSTM(nn.Module):
    """LSTM -> Linear with an optional skip connection, stateful across calls.

    ``forward(x)`` takes ``x`` of shape (B, T, C) and returns (B, T, 1). The LSTM state
    is kept between calls so that a long signal may be fed in chunks; call
    :meth:`reset_state` before a new signal and :meth:`detach_state` between truncated
    back-propagation windows.
    """

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        self.rec = nn.LSTM(config.input_size, config.hidden_size, num_layers=1, batch_first=True)
        self.lin = nn.Linear(config.hidden_size, 1)
        self.state: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.config.input_size:
            raise ValueError(
                f"expected input of shape (batch, time, {self.config.input_size}), got {tuple(x.shape)}"
            )
        out, self.state = self.rec(x, self.state)
        y = self.lin(out)
        if self.config.skip:
            y = y + x[..., :1]
        return y

    def reset_state(self) -> None:
        self.state = None

    # Time-major path of the trainer. Its state is passed in and out explicitly and its
    # layout depends on the device, so callers treat it as opaque (``None`` = zeros).
    def uses_cpu_kernel(self) -> bool:
        """True when :meth:`forward_tm` runs the numba LSTM kernel (float32 on the CPU)."""
        w = self.rec.weight_hh_l0
        return w.device.type == "cpu" and w.dtype == torch.float32 and lstm_cpu.available()

    def forward_tm(self, x: torch.Tensor, state=None) -> Tuple[torch.Tensor, object]:
        """The same network on a time-major, batch-innermost input: x (T, C, B) -> y (T, B).

        Returns the output and the state after the last step. On the CPU this is the
        hand-written kernel of :mod:`ampxfer_lib.model.cpu_lstm` (its speed against nn.LSTM is
        given there); elsewhere nn.LSTM (cuDNN on a GPU) on a batch-first copy.
        """
        if x.dim() != 3 or x.shape[1] != self.config.input_size:
            raise ValueError(f"expected input of shape (time, {self.config.input_size}, batch), got {tuple(x.shape)}")
        rec = self.rec
        if self.uses_cpu_kernel():
            y, state = lstm_cpu.lstm_head(x, state, rec.weight_ih_l0, rec.weight_hh_l0, rec.bias_ih_l0,
                                          rec.bias_hh_l0, self.lin.weight)
            y = y + self.lin.bias
        else:
            out, state = rec(x.permute(2, 0, 1).contiguous(), state)
            y = self.lin(out)[..., 0].t()
        if self.config.skip:
            y = y + x[:, 0]
        return y, state

    def advance_tm(self, x: torch.Tensor, state=None):
        """The state after running over x (T, C, B) from ``state``, without gradient."""
        rec = self.rec
        if self.uses_cpu_kernel():
            return lstm_cpu.advance(x, state, rec.weight_ih_l0, rec.weight_hh_l0, rec.bias_ih_l0, rec.bias_hh_l0)
        with torch.no_grad():
            return rec(x.permute(2, 0, 1).contiguous(), state)[1]

    @torch.no_grad()
    def infer(self, x: torch.Tensor, chunk: int = 100_000) -> torch.Tensor:
        """Whole sequences from a zero state, leaving ``self.state`` alone: (B, T, C) -> (B, T, 1).

        On the CPU the numba kernel of :mod:`ampxfer_lib.model.cpu_lstm` (speed given there);
        elsewhere nn.LSTM in chunks of ``chunk`` samples to bound memory.
        """
        if self.uses_cpu_kernel():
            rec = self.rec
            y = lstm_cpu.infer(x, rec.weight_ih_l0, rec.weight_hh_l0, rec.bias_ih_l0, rec.bias_hh_l0, self.lin.weight)
            y = (y + self.lin.bias)[..., None]
            return y + x[..., :1] if self.config.skip else y
        saved, self.state = self.state, None
        try:
            return torch.cat([self(x[:, i:i + chunk]) for i in range(0, x.shape[1], chunk)], dim=1)
        finally:
            self.state = saved

    @staticmethod
    def detached(state):
        """``state`` cut from the autograd graph (truncated back-propagation)."""
        return None if state is None else tuple(s.detach() for s in state)

    def detach_state(self) -> None:
        if self.state is not None:
            self.state = (self.state[0].detach(), self.state[1].detach())

    def weights(self, metadata: Optional[dict] = None) -> ModelWeights:
        return ModelWeights.from_module(self, metadata)


def new_model(config: ModelConfig, seed: Optional[int] = None) -> AmpLSTM:
    """A freshly initialised model (PyTorch's default init), reproducible for a seed."""
    if seed is None:
        return AmpLSTM(config)
    devices = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return AmpLSTM(config)
