"""Transfer learning is a config: ``init_from`` names a model JSON or a run folder.

The starting model's architecture must match the new run's, with one allowed change: a
snapshot model (input_size 1) may start a knob-conditioned model. Its new input weights are
set to zero, so at the start the conditioned model equals the snapshot at every knob value
(:func:`~ampxfer_lib.model.weights.expand_inputs`). The reverse, a conditioned model frozen
at chosen knob values as a snapshot, is :func:`~ampxfer_lib.model.weights.fold_knobs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ampxfer_lib.training.checkpoint import CHECKPOINT, MODEL_BEST, is_run_folder, load_checkpoint
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.model.formats import load_model
from ampxfer_lib.model.weights import ModelConfig, ModelWeights, expand_inputs


@dataclass
class InitSource:
    """A resolved ``init_from``: the weights, and the optimiser state when asked for."""

    path: str
    weights: ModelWeights
    run_dir: Optional[Path] = None
    optimizer_state: Optional[dict] = None


def resolve_init(init_from: str, keep_optimizer: bool = False) -> InitSource:
    """Load the starting model from a JSON file or a run folder (its ``model_best.json``)."""
    p = Path(init_from)
    if p.is_dir():
        if not is_run_folder(p):
            raise ConfigError(f"{p}: not a run folder (no config.json); give a model .json or a training run's folder")
        model_path = p / MODEL_BEST
        if not model_path.exists():
            raise ConfigError(f"{p}: the run has no {MODEL_BEST} yet; train it for at least one validation first")
        weights = load_model(model_path)
        opt = None
        if keep_optimizer:
            if not (p / CHECKPOINT).exists():
                raise ConfigError(f"{p}: no {CHECKPOINT} to take the optimiser state from; drop --keep-optimizer")
            opt = load_checkpoint(p)["optimizer"]
        return InitSource(str(p), weights, p, opt)
    if keep_optimizer:
        raise ConfigError(f"--keep-optimizer needs a run folder as --init-from, not the model file {p}")
    if not p.exists():
        raise ConfigError(f"{p}: no such model file or run folder for --init-from")
    return InitSource(str(p), load_model(p))


def adapt_to(source: InitSource, target: ModelConfig) -> ModelWeights:
    """Check that ``source`` can start a model of shape ``target`` and return fitting weights."""
    src = source.weights.config
    name = source.path
    if src.hidden_size != target.hidden_size:
        raise ConfigError(f"{name}: hidden size {src.hidden_size} cannot start a hidden-{target.hidden_size} model; "
                          f"use --hidden-size {src.hidden_size} or another starting model")
    if src.skip != target.skip:
        have = "has" if src.skip else "has no"
        raise ConfigError(f"{name}: {have} skip connection, unlike the new model; "
                          + ("drop --no-skip" if src.skip else "train with --no-skip"))
    if src.input_size == target.input_size:
        return source.weights
    if src.input_size == 1:
        return expand_inputs(source.weights, target.input_size)
    raise ConfigError(f"{name}: takes {src.input_size - 1} knob(s) but the data have {target.input_size - 1}; "
                      "start from a snapshot model or one with the same knobs")


def shrink_towards(start: ModelWeights, fresh: ModelWeights, keep: float) -> ModelWeights:
    """Shrink and perturb a start (Ash & Adams, "On Warm-Starting Neural Network Training",
    NeurIPS 2020): every parameter becomes ``keep * start + (1 - keep) * fresh``, with ``fresh`` a
    newly initialised model of the same shape. ``keep`` 1 returns ``start``'s values unchanged.

    A warm start that keeps every weight can leave a fine-tune in its start's basin; shrinking
    moves the gates back towards their unsaturated range and the fresh part breaks the start's
    symmetries, while most of what the start knows stays (the level is matched afterwards).
    """
    if start.config != fresh.config:
        raise ValueError(f"shapes differ: {start.config} and {fresh.config}")
    if keep == 1.0:
        return start
    k = np.float32(keep)
    params = {name: k * start.params[name] + (np.float32(1.0) - k) * fresh.params[name] for name in start.params}
    return ModelWeights(start.config, params, dict(start.metadata))
