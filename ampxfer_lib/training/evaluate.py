"""How good is a model on prepared data: plain ESR on a split (``test_esr`` on the test split).

ESR here is the metric, not the training loss: :func:`~ampxfer_lib.training.losses.esr_numpy`
(no pre-emphasis, no DC term, no epsilon), pooled over all captures (sum of squared errors
over sum of target energy), and also reported per capture for knob-conditioned data. The
trainer's ``test_esr`` and the ``evaluate`` command are this one function on the same
model, so they agree to the last digit.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

from ampxfer_lib.data.dataset import Dataset, load_dataset
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.fileio import PathLike
from ampxfer_lib.model.formats import load_model
from ampxfer_lib.model.network import AmpLSTM
from ampxfer_lib.model.weights import ModelConfig, ModelWeights
from ampxfer_lib.training.losses import esr_numpy


def check_fits(config: ModelConfig, data: Dataset, model_name: str = "model") -> None:
    """Refuse a model whose inputs or rate do not fit the data, in words."""
    if config.input_size != data.input_size:
        raise ConfigError(
            f"{model_name}: takes {config.input_size - 1} knob input(s) but the data in {data.path} have "
            f"{data.input_size - 1}; use a model trained on data of this kind"
        )
    if config.sample_rate != data.sample_rate:
        raise ConfigError(
            f"{model_name}: runs at {config.sample_rate} Hz but the data in {data.path} are at "
            f"{data.sample_rate} Hz; prepare the data with --rate {config.sample_rate}"
        )


@torch.no_grad()
def predict(model: AmpLSTM, x: torch.Tensor, chunk: int = 100_000) -> torch.Tensor:
    """Whole sequences from a zero state (see :meth:`AmpLSTM.infer`): (B, T, C) -> (B, T, 1).

    On the CPU the numba kernel, one sequence after the other (about 4x nn.LSTM's speed for
    one sequence); elsewhere nn.LSTM in chunks of ``chunk`` samples.
    """
    model.reset_state()
    return model.infer(x, chunk)


def evaluate(model: Union[PathLike, ModelWeights, AmpLSTM], data: Union[PathLike, Dataset],
             split: str = "test") -> dict:
    """{"<split>_esr": pooled ESR, "captures": [{"capture", "knobs", "esr", "seconds"}]}.

    ``model``: a model file, weights, or a module (evaluated on its own device). Each capture
    is played whole from a zero state, as a plugin plays a recording.
    """
    if isinstance(model, AmpLSTM):
        name, module = "model", model
    else:
        name = "model" if isinstance(model, ModelWeights) else str(model)
        module = AmpLSTM.from_weights(model if isinstance(model, ModelWeights) else load_model(model))
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    check_fits(module.config, ds, name)
    device = next(module.parameters()).device
    preds, targets, captures = [], [], []
    for s in ds.split(split):
        x = torch.from_numpy(np.ascontiguousarray(s.input[None])).to(device)  # (1, T, C)
        pred = predict(module, x)[0, :, 0].cpu().numpy()
        preds.append(pred)
        targets.append(s.target)
        captures.append({"capture": s.capture, "knobs": list(s.knobs), "esr": esr_numpy(pred, s.target),
                         "seconds": s.samples / ds.sample_rate})
    none = [np.zeros(0, np.float32)]  # a split without captures scores 0, like silence against silence
    pooled = esr_numpy(np.concatenate(preds or none), np.concatenate(targets or none))
    return {f"{split}_esr": pooled, "captures": captures}
