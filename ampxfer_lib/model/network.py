"""The network as a torch module: a stateful LSTM, a dense layer and a skip connection.

This is the architecture of the AGAM training code and of the NeuralPi / Proteus plugins::

    y[t] = lin(h[t]) + x[t, 0]        (skip on; x[t, 0] is the guitar signal)
    h[t], c[t] = LSTM(x[t], (h[t-1], c[t-1])),  h[-1] = c[-1] = 0

Extra input channels carry knob positions (0..1), held constant over a capture, so
``input_size = 1 + number of knobs``. Gate order inside the LSTM weights is PyTorch's
(i, f, g, o), which is also the order of the AGAM JSON files.

The framework-free form of a model, which every file format, the renderer and the
exporters read and write, is :class:`~ampxfer_lib.model.weights.ModelWeights`;
:class:`AmpLSTM` is the torch module that trains it (:meth:`AmpLSTM.from_weights`,
:meth:`AmpLSTM.weights` convert between the two).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ampxfer_lib.model import cpu_lstm as lstm_cpu
from ampxfer_lib.model.weights import PARAM_NAMES, ModelConfig, ModelWeights


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

    @classmethod
    def from_weights(cls, weights: ModelWeights) -> "AmpLSTM":
        """A module holding ``weights`` (copied), in train mode, with no state."""
        model = cls(weights.config)
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.params.items()})
        return model

    def weights(self, metadata: Optional[dict] = None) -> ModelWeights:
        """The module's current parameters as float32 numpy copies."""
        sd = self.state_dict()
        params = {k: sd[k].detach().to("cpu", torch.float32).numpy().copy() for k in PARAM_NAMES}
        return ModelWeights(self.config, params, dict(metadata or {}))


def new_model(config: ModelConfig, seed: Optional[int] = None) -> AmpLSTM:
    """A freshly initialised model (PyTorch's default init), reproducible for a seed."""
    if seed is None:
        return AmpLSTM(config)
    devices = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return AmpLSTM(config)
