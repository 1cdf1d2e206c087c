"""The run-folder policy: whose folder it is, where a run starts from, and what it writes.

A command names a folder (``--out``); :meth:`RunFolder.claim` decides what happens there:

* no folder, or an empty one (hidden temporaries of a run killed before its ``config.json``
  are removed): a fresh start;
* a folder holding other files: refused, whatever the flags (nothing of the user's is
  ever deleted); files with a run's names (``model_best.json``) but no ``config.json`` to
  prove a run wrote them are the user's: refused, or replaced with ``--overwrite``;
* the same run (same identity, data and starting model compared by content): resume from
  its checkpoint; a finished run is not retrained, unless ``max_epochs`` was raised above
  the epochs done (it is extended), and a diverged one says so;
* a different run: refused, or replaced with ``--overwrite``.

:class:`RunState` is what a checkpoint holds (model, optimiser, best model, counters,
history, RNG states); the files themselves are listed in :mod:`.checkpoint`.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from ampxfer_lib import __version__
from ampxfer_lib.errors import ConfigError, RunFolderError
from ampxfer_lib.fileio import make_dirs, remove_stale_temporaries
from ampxfer_lib.model.formats import neuralpi
from ampxfer_lib.model.network import AmpLSTM
from ampxfer_lib.model.weights import ModelConfig, ModelWeights
from ampxfer_lib.training import checkpoint as ckpt
from ampxfer_lib.training.config import TrainConfig
from ampxfer_lib.transfer.init_from import InitSource, resolve_init


def start_fingerprints(weights: ModelWeights) -> Tuple[str, ...]:
    """The fingerprints a run folder may have stored for its starting model: today's
    :meth:`ModelWeights.fingerprint` first, then the sha256 of its AGAM JSON that folders made
    before it stored (so they still resume)."""
    return weights.fingerprint(), neuralpi.json_sha256(weights)


# --------------------------------------------------------------------------- the starting model

def starting_model(config: TrainConfig, out_dir: Path) -> Tuple[Optional[InitSource], Optional[str]]:
    """The model ``config.init_from`` names and its :meth:`ModelWeights.fingerprint` (None, None:
    a run from scratch).

    When it cannot be read but ``out_dir`` holds this very run, the run's own checkpoint
    stands in (without a fingerprint): resuming needs only the checkpoint, so a starting
    model that was on the lost disk of a Colab session (or was moved) does not block it.
    """
    if not config.init_from:
        return None, None
    src, out = os.path.realpath(config.init_from), os.path.realpath(out_dir)
    if src == out or os.path.dirname(src) == out:
        raise ConfigError(f"{out_dir}: is the --init-from run; train into another --out (a new run folder) "
                          "so the starting model is kept")
    try:
        init = resolve_init(config.init_from, config.keep_optimizer)
    except ConfigError:
        own = _own_checkpoint_as_start(config, out_dir)
        if own is None:
            raise
        return own, None
    return init, init.weights.fingerprint()


def _own_checkpoint_as_start(config: TrainConfig, out_dir: Path) -> Optional[InitSource]:
    try:
        old = ckpt.read_json(out_dir / ckpt.CONFIG) if out_dir.is_dir() else None
        if not old or TrainConfig.from_dict(old.get("train", {})).identity() != config.identity():
            return None
        if not (out_dir / ckpt.CHECKPOINT).exists():
            return None
        state = ckpt.load_checkpoint(out_dir)
    except (ConfigError, RunFolderError, TypeError):
        return None
    m = AmpLSTM(ModelConfig.from_dict(state["model_config"]))
    m.load_state_dict(state["best_model"])
    return InitSource(config.init_from, m.weights(), None, None)


# --------------------------------------------------------------------------- what a checkpoint holds

@dataclass
class RunState:
    """A run's progress, everything :meth:`RunFolder.save` writes to ``checkpoint.pt``.

    ``epoch``: epochs done; ``batch``: batches of the next epoch done (a checkpoint inside an
    epoch), with ``loss_sum`` their summed losses (0-d, on the run's device). ``from_model``:
    the run started from ``init_from``, whose model counts as the best one until a validated
    epoch replaces it. ``train_seconds``/``cpu_seconds``: wall and CPU time spent training,
    across sessions.
    """

    model: AmpLSTM
    optimizer: torch.optim.Optimizer
    scheduler: Optional[torch.optim.lr_scheduler.ReduceLROnPlateau]
    from_model: bool
    best_state: Dict[str, torch.Tensor]
    loss_sum: torch.Tensor
    history: List[dict] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    bad_validations: int = 0
    train_seconds: float = 0.0
    cpu_seconds: float = 0.0
    epoch: int = 0
    batch: int = 0
    status: str = "running"  # running | complete | diverged
    stop_reason: Optional[str] = None  # early_stop | converged | max_epochs | diverged
    #: The weight average (``ema_decay``), the weights validated and kept; None when off.
    average: Optional[Dict[str, torch.Tensor]] = None
    average_updates: int = 0
    #: The starting model's weights after level matching (the L2-SP anchor); None from scratch.
    start_state: Optional[Dict[str, torch.Tensor]] = None
    #: What level matching did to the start (:func:`ampxfer_lib.transfer.level_match.match_level`).
    start_match: Optional[dict] = None

    @classmethod
    def begin(cls, model: AmpLSTM, optimizer, scheduler, from_model: bool, averaged: bool = False,
              start_match: Optional[dict] = None) -> "RunState":
        device = next(model.parameters()).device
        start = _copy(model.state_dict())
        return cls(model, optimizer, scheduler, from_model, start, torch.zeros((), device=device),
                   average=_copy(start) if averaged else None,
                   start_state=_copy(start) if from_model else None, start_match=start_match)

    def validated_weights(self) -> Dict[str, torch.Tensor]:
        """The weights that are validated and kept as the best model: the average when there is one."""
        return self.average if self.average is not None else self.model.state_dict()

    @property
    def has_best_model(self) -> bool:
        return self.best_epoch > 0 or self.from_model

    def validated(self, epoch: int, val_loss: float) -> None:
        """Best-model and early-stopping bookkeeping after ``epoch``'s validation."""
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.best_epoch = val_loss, epoch
            self.bad_validations = 0
            self.best_state = _copy(self.validated_weights())
        else:
            self.bad_validations += 1

    def restart_from_best(self) -> None:
        """Carry on from the best weights so far: the model and its average become the kept
        best model (the average's, where there is one); the optimiser's moments stay."""
        self.model.load_state_dict(self.best_state)
        if self.average is not None:
            self.average = _copy(self.best_state)

    def to_checkpoint(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "best_model": self.best_state,
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "bad_validations": self.bad_validations,
            "history": self.history,
            "train_seconds": self.train_seconds,
            "cpu_seconds": self.cpu_seconds,
            "epoch": self.epoch,
            "batch": self.batch,
            "partial_loss_sum": self.loss_sum.detach().cpu(),
            "rng": {"torch": torch.get_rng_state(), "python": _lists(random.getstate())},
            "status": self.status,
            "stop_reason": self.stop_reason,
            "average": self.average,
            "average_updates": self.average_updates,
            "start_model": self.start_state,
            "start_match": self.start_match,
        }

    def restore(self, saved: dict) -> None:
        """Continue from a checkpoint: weights, optimiser, counters and RNG states."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None and saved.get("scheduler") is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        self.best_state = saved["best_model"]
        self.best_val_loss = float(saved["best_val_loss"])
        self.best_epoch = int(saved["best_epoch"])
        self.bad_validations = int(saved["bad_validations"])
        self.history = list(saved["history"])
        self.train_seconds = float(saved["train_seconds"])
        self.cpu_seconds = float(saved.get("cpu_seconds", 0.0))  # older checkpoints: CPU time counts from here
        self.epoch = int(saved["epoch"])
        self.batch = int(saved["batch"])
        self.loss_sum = saved["partial_loss_sum"].to(self.loss_sum.device)
        torch.set_rng_state(saved["rng"]["torch"])
        random.setstate(_tuples(saved["rng"]["python"]))
        self.status = saved.get("status", "running")
        self.stop_reason = saved.get("stop_reason")
        # Checkpoints from before weight averaging and level matching hold none of these.
        if saved.get("average") is not None:
            self.average = {k: v.to(self.loss_sum.device) for k, v in saved["average"].items()}
        self.average_updates = int(saved.get("average_updates", 0))
        if saved.get("start_model") is not None:
            self.start_state = {k: v.to(self.loss_sum.device) for k, v in saved["start_model"].items()}
        self.start_match = saved.get("start_match", self.start_match)


def _copy(state_dict: dict) -> dict:
    return {k: v.detach().clone() for k, v in state_dict.items()}


def _lists(state):
    # random.getstate() nests tuples; weights_only checkpoints keep lists
    return [_lists(s) for s in state] if isinstance(state, tuple) else state


def _tuples(state):
    return tuple(_tuples(s) for s in state) if isinstance(state, list) else state


# --------------------------------------------------------------------------- the folder

class RunFolder:
    """One run's folder. ``record`` is what ``config.json`` holds for this run: ``train``
    (the TrainConfig), ``model`` (its shape), ``data_fingerprint``, ``init_fingerprint``,
    ``warnings`` and ``library_version``; a folder whose record differs holds another run."""

    def __init__(self, out_dir: Path, config: TrainConfig, model_config: ModelConfig, data_fingerprint: str,
                 init_fingerprint: Optional[str], warnings: List[dict], init_aliases: Tuple[str, ...] = ()):
        self.path = Path(out_dir)
        #: Other fingerprints of the same starting model (see :func:`start_fingerprints`).
        self.init_aliases = init_aliases
        self.config = config
        self.model_config = model_config
        self.record = {"train": config.to_dict(), "model": model_config.to_dict(),
                       "data_fingerprint": data_fingerprint, "init_fingerprint": init_fingerprint,
                       "warnings": warnings, "library_version": __version__}
        self.saved_at = time.monotonic()

    def claim(self, overwrite: bool, device: torch.device) -> Optional[dict]:
        """Decide between a fresh start and a resume; returns the checkpoint to resume from."""
        out = self.path
        if out.exists() and not out.is_dir():
            raise RunFolderError(f"{out}: exists and is not a folder; choose another --out")
        old = ckpt.read_json(out / ckpt.CONFIG) if out.exists() else None
        if old is None:
            if out.exists():
                # Without config.json nothing here is provably a run's: config.json is the first
                # file a run writes, so a kill before it leaves only hidden temporaries.
                visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
                foreign = [n for n in visible if n not in ckpt.RUN_FILES]
                if foreign:
                    raise RunFolderError(f"{out}: the folder holds other files ({foreign[0]}, ...); choose a new --out "
                                         "folder for the run")
                if visible and not overwrite:
                    raise RunFolderError(f"{out}: holds {visible[0]}, which no ampxfer run wrote here (there is no "
                                         f"{ckpt.CONFIG}); move it away or choose a new --out folder, or pass "
                                         "--overwrite to replace it")
                self._remove_run_files()
            return None
        differences = self._differences(old)
        if differences:
            if not overwrite:
                raise RunFolderError(f"{out}: holds a different run ({differences}); use another --out, or "
                                     "--overwrite to replace it")
            self._remove_run_files()
            return None
        if overwrite:
            self._remove_run_files()
            return None
        remove_stale_temporaries(out, ckpt.RUN_FILES)  # what a kill during a write left behind
        if not (out / ckpt.CHECKPOINT).exists():
            return None
        return ckpt.load_checkpoint(out, map_location=str(device))

    def _differences(self, old: dict) -> str:
        try:
            theirs = TrainConfig.from_dict(old.get("train", {})).identity()
        except (ConfigError, TypeError):
            return "settings from another version of ampxfer"
        mine = self.config.identity()
        diffs = []
        for k, v in mine.items():
            if theirs.get(k) != v:
                # init_from is compared as set or not (its content below); show the paths
                a, b = (old["train"].get("init_from"), self.config.init_from) if k == "init_from" else (theirs.get(k), v)
                diffs.append(f"{k} {a!r} -> {b!r}")
        if old.get("data_fingerprint") != self.record["data_fingerprint"]:
            diffs.append("the prepared data changed")
        theirs_init, mine_init = old.get("init_fingerprint"), self.record["init_fingerprint"]
        if theirs_init and mine_init and theirs_init not in (mine_init,) + tuple(self.init_aliases):
            diffs.append("the --init-from model changed")
        elif self.config.init_from and not theirs_init and old.get("train", {}).get("init_from"):
            # runs from before init fingerprints: compare where the model was
            if os.path.realpath(old["train"]["init_from"]) != os.path.realpath(self.config.init_from):
                diffs.append(f"init_from {old['train']['init_from']!r} -> {self.config.init_from!r}")
        if old.get("model") and old["model"] != self.record["model"]:
            diffs.append("model shape")
        return ", ".join(diffs[:4])

    def _remove_run_files(self) -> None:
        remove_stale_temporaries(self.path, ckpt.RUN_FILES)
        for name in ckpt.RUN_FILES:
            try:
                (self.path / name).unlink()
            except FileNotFoundError:
                pass

    def create(self) -> None:
        """A fresh run: the folder and its ``config.json``."""
        make_dirs(self.path)
        ckpt.write_json(self.path / ckpt.CONFIG, self.record)

    def checkpoint_due(self) -> bool:
        return time.monotonic() - self.saved_at >= self.config.checkpoint_seconds

    def save(self, state: RunState) -> None:
        """Write the checkpoint: the run's source of truth, from which every other file follows."""
        ckpt.save_checkpoint(self.path, {"config": self.config.to_dict(), "model_config": self.model_config.to_dict(),
                                         **state.to_checkpoint()})
        self.saved_at = time.monotonic()

    def write_outputs(self, state: RunState) -> None:
        """history.json, model_last.json and (once there is one) model_best.json."""
        ckpt.write_json(self.path / ckpt.HISTORY, state.history)
        last = state.model.state_dict()
        # After a divergence the weights may be NaN: keep the previous model_last.json then.
        if all(bool(torch.isfinite(v).all()) for v in last.values()):
            neuralpi.save(self.weights(last), self.path / ckpt.MODEL_LAST)
        if state.has_best_model:
            neuralpi.save(self.weights(state.best_state), self.path / ckpt.MODEL_BEST)

    def weights(self, state_dict: dict) -> ModelWeights:
        m = AmpLSTM(self.model_config)
        m.load_state_dict({k: v.detach().cpu() for k, v in state_dict.items()})
        return m.weights()

    def finish(self, state: RunState, reason: str) -> None:
        """The final checkpoint (status complete, or diverged) and the outputs."""
        state.status, state.stop_reason = ("diverged" if reason == "diverged" else "complete"), reason
        state.batch = 0
        self.save(state)
        self.write_outputs(state)

    def kept_model_words(self, state: RunState) -> str:
        if state.best_epoch > 0:
            return f"the best model so far (epoch {state.best_epoch}) is kept in {ckpt.MODEL_BEST}"
        if state.from_model:
            return f"the best model so far (the starting model) is kept in {ckpt.MODEL_BEST}"
        return "no epoch was validated before, so there is no model to keep"

    def read_summary(self) -> Optional[dict]:
        return ckpt.read_summary(self.path)

    def write_summary(self, summary: dict) -> None:
        ckpt.write_json(self.path / ckpt.SUMMARY, summary)


def make_summary(state: RunState, config: TrainConfig, model_config: ModelConfig, test_esr: Optional[float],
                 train_seconds_audio: float, device: torch.device, threads: int) -> dict:
    """summary.json: the run's outcome (best validation, test ESR of the best model, stop reason)
    and what it ran on. ``best_val_esr``: plain ESR of the best epoch's validation."""
    validations = [h for h in state.history if h["val_loss"] is not None]
    first = next((h for h in validations if h["epoch"] > 0), None)
    best = next((h for h in state.history if h["epoch"] == state.best_epoch), {}) if state.best_epoch else {}
    return {
        "best_val_loss": None if state.best_val_loss == math.inf else state.best_val_loss,
        "best_val_esr": best.get("val_esr"),  # None for histories from before val_esr
        "best_epoch": state.best_epoch,
        "epochs": state.epoch,
        "train_seconds": round(state.train_seconds, 3),
        "test_esr": test_esr,
        "init_from": config.init_from,
        "preset": config.preset,
        "initial_val_loss": validations[0]["val_loss"] if validations and validations[0]["epoch"] == 0 else None,
        "first_val_loss": first["val_loss"] if first else None,
        "status": state.status,
        "stop_reason": state.stop_reason,
        "start_match": state.start_match,
        "subset": config.subset,
        "train_seconds_audio": round(train_seconds_audio, 3),
        "seed": config.seed,
        "hidden_size": model_config.hidden_size,
        "input_size": model_config.input_size,
        "device": str(device),
        "threads": threads,
        "library_version": __version__,
    }
