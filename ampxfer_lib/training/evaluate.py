"""How good is a model on prepared data: plain ESR on a split (``test_esr`` on the test split).

ESR here is the metric, not the training loss: no pre-emphasis, no DC term, no epsilon,
pooled over all captures (sum of squared errors over sum of target energy), and also
reported per capture for knob-conditioned data.
"""

from __future__ import annotations

from typing import Union

from ampxfer_lib.data.dataset import Dataset, load_dataset
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.fileio import PathLike
from ampxfer_lib.model.formats import load_model
from ampxfer_lib.training.losses import error_and_energy, esr_from_sums
from ampxfer_lib.model.weights import ModelWeights
from ampxfer_lib.model.render import render


def check_fits(weights: ModelWeights, data: Dataset, model_name: str = "model") -> None:
    """Refuse a model whose inputs or rate do not fit the data, in words."""
    if weights.config.input_size != data.input_size:
        raise ConfigError(
            f"{model_name}: takes {weights.config.input_size - 1} knob input(s) but the data in {data.path} have "
            f"{data.input_size - 1}; use a model trained on data of this kind"
        )
    if weights.config.sample_rate != data.sample_rate:
        raise ConfigError(
            f"{model_name}: runs at {weights.config.sample_rate} Hz but the data in {data.path} are at "
            f"{data.sample_rate} Hz; prepare the data with --rate {weights.config.sample_rate}"
        )


def evaluate(model: Union[PathLike, ModelWeights], data: Union[PathLike, Dataset], split: str = "test") -> dict:
    """{"<split>_esr": pooled ESR, "captures": [{"capture", "knobs", "esr", "seconds"}]}."""
    name = "model" if isinstance(model, ModelWeights) else str(model)
    weights = model if isinstance(model, ModelWeights) else load_model(model)
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    check_fits(weights, ds, name)
    err = energy = 0.0
    captures = []
    for s in ds.split(split):
        e, en = error_and_energy(render(weights, s.input[:, 0], s.knobs), s.target)
        err, energy = err + e, energy + en
        captures.append({"capture": s.capture, "knobs": list(s.knobs), "esr": esr_from_sums(e, en),
                         "seconds": s.samples / ds.sample_rate})
    return {f"{split}_esr": esr_from_sums(err, energy), "captures": captures}
