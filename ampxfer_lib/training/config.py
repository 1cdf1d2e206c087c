"""What defines a training run: :class:`TrainConfig`, the named presets, the learning rate per epoch.

The ``agam`` preset (the :class:`TrainConfig` defaults) is the recipe of the AGAM training
code as the article's runs used it, kept exact for reproductions:

* 0.5 s segments cut from the training audio, shuffled, mini-batches of 50;
* per batch: 200 samples of warm-up (state only), then a weight update after every
  1000 samples (truncated back-propagation through time), state carried across windows;
* loss 0.75 * ESR + 0.25 * DC, no pre-emphasis; Adam(lr 5e-3, weight decay 1e-4);
* validation every 2 epochs on the whole validation audio from a zero state;
  ReduceLROnPlateau(factor 0.5, patience 5 validations) on the validation loss;
* early stop once more than 25 validations in a row bring no improvement (AGAM's
  ``patience_counter > validation_p``); the best model is kept.

The ``fast`` preset (the default until issue 11) keeps the network, the data, the loss and the
optimiser and changes the recipe so that a given validation loss comes sooner:

* a weight update after every 500 samples instead of 1000: twice the updates per second
  of audio for the same cost per sample (an update is cheap next to the LSTM itself);
* Adam's learning rate starts at 1e-2 and is multiplied by 0.85 every epoch down to 1e-4
  (reached at epoch 30): large steps while far from a minimum, small ones near it. The
  rate is a function of the epoch alone (:func:`epoch_lr`), so resuming needs no
  scheduler state;
* a validation after every epoch (about 5% of an epoch's time), so the best model and
  early stopping (25 validations without improvement) see every epoch.

Measured side by side by ``bench/train_speed.py`` (bench/RESULTS_train.md), one thread,
10 epochs against a reference written like AGAM's own training loop: on the sample data's
TS9-style device (150 s of training audio) ``fast`` reaches the reference's epoch-10 loss
at epoch 5, and on three other data sets (real DI through a real TS9 capture, the sample
MT-2- and HT40-style devices) at epoch 4, 5 and 9, ending every time below it.

The default, ``adaptive`` (since issue 11, measured on real gear in bench/RESULTS_real_gear.md),
keeps ``fast``'s updates per second and replaces its blind decay, which reached its 1e-4 floor
at epoch 30 and then waited there for noise to stop the run: the rate falls only when the
validations stop improving and its floor ends the run (:mod:`.schedule`); the weights are
averaged and the average is what is validated and kept (:mod:`.regularize`); a start from
another model is matched to the data's level first, fine-tuned without weight decay
(:data:`FINETUNE_WEIGHT_DECAY`), and at half the rate when it has at most a minute of training
audio (:data:`FULL_RATE_FINETUNE_SECONDS`); on more, its update window grows as its rate falls.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional

from ampxfer_lib.data.dataset import SUBSETS, Dataset
from ampxfer_lib.errors import AmpxferError, ConfigError
from ampxfer_lib.fileio import PathLike
from ampxfer_lib.training.losses import LossConfig
from ampxfer_lib.validate import MAX_HIDDEN, MAX_THREADS, check_fields


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. The defaults are the ``agam`` preset."""

    data: str = ""
    subset: str = "full"
    preset: str = "agam"
    # model (None: 20 / skip on, or the init_from model's)
    hidden_size: Optional[int] = None
    skip: Optional[bool] = None
    # recipe
    segment_seconds: float = 0.5
    batch_size: int = 50
    warmup_samples: int = 200
    tbptt_samples: int = 1000
    tbptt_grow: bool = False  # the window grows as the rate falls (tbptt.grown_window), up to the segment
    lr: float = 5e-3
    weight_decay: float = 1e-4
    esr_weight: float = 0.75
    dc_weight: float = 0.25
    pre_emphasis: Optional[float] = None
    scheduler: str = "plateau"  # plateau | adaptive | exponential | none
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    plateau_threshold: float = 1e-3  # adaptive: the relative improvement that counts
    plateau_rebase: bool = False  # adaptive: after a decay, improvement counts from the best since it
    decay_from_best: bool = False  # adaptive: an epoch whose rate fell starts from the best weights so far
    lr_decay: float = 1.0  # exponential: the learning rate's factor per epoch ...
    min_lr: float = 0.0  # ... down to this floor (adaptive: where the run ends)
    ema_decay: float = 0.0  # weight average per update, validated and kept (0: off)
    val_every: int = 2
    patience: int = 25
    max_epochs: int = 2000
    initial_validation: bool = True
    # transfer: the starting model is a setting like any other (a model JSON or a run folder)
    init_from: Optional[str] = None
    finetune_lr: Optional[float] = None  # the learning rate when starting from init_from (None: lr)
    match_level: str = "none"  # none | gain | refit: the starting model's dense layer fitted to the data
    l2_sp: float = 0.0  # L2-SP: pull towards the starting weights (alpha)
    shrink_start: float = 1.0  # the start's share of the first weights, the rest a fresh init (1: all start)
    freeze_lstm_epochs: int = 0
    keep_optimizer: bool = False
    grad_clip: Optional[float] = None
    # execution
    seed: int = 0
    threads: Optional[int] = None  # None: 1 per run on CPU, torch's default on GPU
    device: str = "auto"
    checkpoint_seconds: float = 60.0

    #: Fields that may change when a run is resumed (the rest define the run).
    RESUMABLE = ("max_epochs", "patience", "threads", "device", "checkpoint_seconds")

    def __post_init__(self):
        check_fields(self, TRAIN_FIELD_RULES, FLAG_FIELDS)
        if self.subset not in SUBSETS:
            raise ConfigError(f"--subset must be one of {', '.join(SUBSETS)}, not {self.subset!r}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"unknown scheduler {self.scheduler!r}; one of {', '.join(SCHEDULERS)}")
        if self.match_level not in MATCH_LEVELS:
            raise ConfigError(f"--match-level must be one of {', '.join(MATCH_LEVELS)}, not {self.match_level!r}")
        if not (0.0 <= self.ema_decay < 1.0):
            raise ConfigError(f"--ema-decay must lie in [0, 1), got {self.ema_decay}")
        if not (self.l2_sp >= 0.0) or self.l2_sp == float("inf"):
            raise ConfigError(f"--l2-sp must be a finite number >= 0, got {self.l2_sp}")
        if self.l2_sp > 0 and not self.init_from:
            raise ConfigError("--l2-sp pulls towards a starting model: it needs --init-from")
        if not (0.0 < self.shrink_start <= 1.0):
            raise ConfigError(f"shrink_start must lie in (0, 1], not {self.shrink_start}")
        if self.shrink_start < 1.0 and not self.init_from:
            raise ConfigError("shrink_start shrinks a starting model: it needs --init-from")
        if self.finetune_lr is not None and not (0.0 < self.finetune_lr < float("inf")):
            raise ConfigError(f"--finetune-lr must be positive, got {self.finetune_lr}")
        if not (0.0 < self.plateau_factor < 1.0) or self.plateau_patience < 1 or not (0.0 <= self.plateau_threshold < 1.0):
            raise ConfigError("plateau_factor must lie in (0, 1), plateau_patience be at least 1 and "
                              "plateau_threshold lie in [0, 1)")
        if not (0.0 < self.lr_decay <= 1.0) or self.min_lr < 0:
            raise ConfigError("--lr-decay must lie in (0, 1] and --min-lr must not be negative")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"--device must be auto, cpu or cuda, not {self.device!r}")
        for name in ("batch_size", "tbptt_samples", "max_epochs", "val_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.warmup_samples < 0 or self.patience < 0:
            raise ConfigError("warmup_samples and patience must not be negative")
        if not (self.lr > 0):
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.freeze_lstm_epochs < -1:
            raise ConfigError("--freeze-lstm-epochs is a number of epochs, or -1 for all")
        if self.keep_optimizer and not self.init_from:
            raise ConfigError("--keep-optimizer needs --init-from RUN_FOLDER")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError("--grad-clip must be positive")
        if self.hidden_size is not None and self.hidden_size < 1:
            raise ConfigError("--hidden-size must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**d)

    def loss_config(self) -> LossConfig:
        return LossConfig(self.esr_weight, self.dc_weight, self.pre_emphasis)

    def identity(self) -> dict:
        """The settings that define the run; a resumed run must match them.

        The data folder and the starting model are compared by content (the manifest's and
        the model's fingerprints, checked by the run folder), not by how their paths were
        spelled, so a run may be resumed from another working directory or after the folders
        were moved together.
        """
        d = self.to_dict()
        for k in self.RESUMABLE + ("data",):
            d.pop(k)
        d["init_from"] = bool(d["init_from"])
        return d

    def start_lr(self) -> float:
        """The learning rate the run starts at: ``finetune_lr`` when it starts from a model, else ``lr``."""
        return self.finetune_lr if (self.init_from and self.finetune_lr is not None) else self.lr

    def lstm_frozen(self, epoch: int) -> bool:
        """Whether the LSTM's weights stay fixed in ``epoch`` (1-based): only the head trains."""
        return self.freeze_lstm_epochs == -1 or epoch <= self.freeze_lstm_epochs


#: Type and range of every field, checked before the rules between fields above: a value from
#: ``--set``, train.json or a study config may be text, a bool, NaN or absurd. Keys of
#: :func:`ampxfer_lib.validate.number` (``integer``, ``lo``, ``hi``, ``lo_open``, ``hi_open``,
#: ``optional``), or ``"text"`` / ``"bool"`` (with ``optional``).
TRAIN_FIELD_RULES: Dict[str, Dict[str, Any]] = {
    "data": dict(kind="text"), "subset": dict(kind="text"), "preset": dict(kind="text"),
    "hidden_size": dict(integer=True, lo=1, hi=MAX_HIDDEN, optional=True),
    "skip": dict(kind="bool", optional=True),
    "segment_seconds": dict(lo=0, hi=60, lo_open=True),
    "batch_size": dict(integer=True, lo=1, hi=100000),
    "warmup_samples": dict(integer=True, lo=0, hi=10 ** 7),
    "tbptt_samples": dict(integer=True, lo=1, hi=10 ** 7),
    "tbptt_grow": dict(kind="bool"),
    "lr": dict(lo=0, lo_open=True),  # no ceiling: a rate too high diverges, and says so
    "weight_decay": dict(lo=0, hi=1),
    "esr_weight": dict(lo=0), "dc_weight": dict(lo=0),
    "pre_emphasis": dict(lo=-1, hi=1, optional=True),
    "scheduler": dict(kind="text"),
    "plateau_factor": dict(), "plateau_patience": dict(integer=True), "plateau_threshold": dict(),
    "plateau_rebase": dict(kind="bool"),
    "decay_from_best": dict(kind="bool"),
    "lr_decay": dict(), "min_lr": dict(), "ema_decay": dict(), "l2_sp": dict(),
    "shrink_start": dict(lo=0, hi=1, lo_open=True),
    "val_every": dict(integer=True), "patience": dict(integer=True), "max_epochs": dict(integer=True),
    "initial_validation": dict(kind="bool"),
    "init_from": dict(kind="text", optional=True),
    "finetune_lr": dict(optional=True),
    "match_level": dict(kind="text"),
    "freeze_lstm_epochs": dict(integer=True),
    "keep_optimizer": dict(kind="bool"),
    "grad_clip": dict(optional=True),
    "seed": dict(integer=True, lo=0),
    "threads": dict(integer=True, lo=1, hi=MAX_THREADS, optional=True),
    "device": dict(kind="text"),
    "checkpoint_seconds": dict(lo=0),
}
#: Fields the train command also takes as flags: errors name the flag, others the setting.
FLAG_FIELDS = ("subset", "hidden_size", "max_epochs", "patience", "lr", "freeze_lstm_epochs", "grad_clip",
               "seed", "threads", "device", "init_from")

SCHEDULERS = ("plateau", "adaptive", "exponential", "none")
MATCH_LEVELS = ("none", "gain", "refit")

#: Named recipes: field overrides on top of the TrainConfig defaults (which are ``agam``).
PRESETS: Dict[str, Dict[str, Any]] = {
    "agam": {},
    # Twice the weight updates per second of audio, a higher peak learning rate that
    # decays by 15% an epoch, and a validation every epoch; see the module docstring.
    "fast": {
        "tbptt_samples": 500,
        "lr": 1e-2,
        "scheduler": "exponential",
        "lr_decay": 0.85,
        "min_lr": 1e-4,
        "val_every": 1,
    },
    # The default since issue 11 (bench/RESULTS_real_gear.md): the same updates per second
    # as ``fast``, a rate that only falls when the validations stop improving and whose
    # floor is where the run ends, the weights averaged over the last few hundred updates
    # (validated and kept), and a start from another model matched to the data's level and,
    # on a minute of audio or less, fine-tuned at half the rate (FULL_RATE_FINETUNE_SECONDS;
    # on more, at the full rate with a window that grows as the rate falls), and without
    # weight decay (FINETUNE_WEIGHT_DECAY).
    "adaptive": {
        "tbptt_samples": 500,
        "lr": 1e-2,
        "finetune_lr": 5e-3,
        "scheduler": "adaptive",
        "plateau_factor": 0.5,
        "plateau_patience": 8,
        "plateau_threshold": 1e-3,
        "min_lr": 1e-5,
        "ema_decay": 0.995,
        "match_level": "gain",
        "val_every": 1,
        "patience": 60,
    },
}
DEFAULT_PRESET = "adaptive"
#: A start from another model is fine-tuned at the preset's ``finetune_lr`` only when the run
#: trains on at most this many seconds of audio; on more it starts at ``lr``, like scratch. On
#: real gear (bench/RESULTS_real_gear.md) the lower rate won on 30 s (2e-3 beat 5e-3) and lost on
#: 125 s, where 5e-3 kept the fine-tune in its start's basin and ended above scratch; 1e-2 ended
#: lower on eight of ten devices (median 0.78x). 60 s lies between the two lengths measured.
#: Such a fine-tune also grows its update window as its rate falls (``tbptt_grow``): once the
#: steps are small the 500-sample truncated gradient's bias made the training loss of full-data
#: fine-tunes climb (bench/tbptt_bias.py), and on real gear (recipe default_ftgrow) the growing
#: window ended a Blues Jr's fine-tune below its scratch on three seeds of three (it was above on
#: the median before). A 30 s capture keeps the fixed window: measured only on 125 s.
FULL_RATE_FINETUNE_SECONDS = 60.0
#: The weight decay of a start from another model under a preset with a fine-tune rate of its
#: own (``adaptive``), whatever the length of the audio. AGAM's 1e-4 is coupled into Adam: it
#: pulls every weight towards zero, which for a fine-tune is away from the start it was given.
#: On real gear (bench/RESULTS_real_gear.md, recipe default_wd0) a fine-tune without it ended
#: lower on eight of ten devices with full data (median 0.87x), and on eight and nine of ten
#: 30 s quick captures (the first 30 s, median 0.71x; varied 30 s, 0.90x). Scratch keeps the
#: preset's decay.
FINETUNE_WEIGHT_DECAY = 0.0


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """The learning rate of an epoch (1-based) under the ``exponential`` scheduler:
    ``max(lr * lr_decay ** (epoch - 1), min_lr)``. A function of the epoch alone, so a
    resumed run needs no scheduler state."""
    return max(config.lr * config.lr_decay ** (epoch - 1), config.min_lr)


def make_config(data: PathLike = "", preset: Optional[str] = None, **overrides) -> TrainConfig:
    """A TrainConfig from a preset plus explicit overrides (``None`` values are ignored).

    A start from another model (``init_from``) under a preset with fine-tune settings of its own
    (``adaptive``) gets them unless they are given: on more than :data:`FULL_RATE_FINETUNE_SECONDS`
    of audio its rate is the full one and its update window grows as the rate falls
    (``tbptt_grow``), and its weight decay is :data:`FINETUNE_WEIGHT_DECAY`.
    """
    preset = preset or DEFAULT_PRESET
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; one of {', '.join(sorted(PRESETS))}")
    values = dict(PRESETS[preset])
    given = {k: v for k, v in overrides.items() if v is not None}
    if "lr" in given and "finetune_lr" not in given:
        values.pop("finetune_lr", None)  # an explicit --lr is the rate of every run, from a model too
    values.update(given)
    values["preset"] = preset
    values["data"] = os.fspath(data)
    fine_tune = bool(values.get("init_from")) and "finetune_lr" in PRESETS[preset]
    if fine_tune:
        seconds = training_seconds(data, values.get("subset", "full"))
        long_audio = seconds is not None and seconds > FULL_RATE_FINETUNE_SECONDS
        if long_audio and "finetune_lr" in values and "finetune_lr" not in given:  # not dropped by an explicit lr
            values["finetune_lr"] = values.get("lr", TrainConfig.lr)
        if long_audio and "tbptt_grow" not in given:
            values["tbptt_grow"] = True
        if "weight_decay" not in given:
            values["weight_decay"] = FINETUNE_WEIGHT_DECAY
    return TrainConfig.from_dict(values)


def training_seconds(data: PathLike, subset: str) -> Optional[float]:
    """Seconds of training audio in ``subset`` of the data folder, or None where it cannot be read
    (training then fails on it with the data's own error)."""
    if not os.fspath(data) or not os.path.isdir(data) or subset not in SUBSETS:
        return None
    try:
        return Dataset(data).seconds("train", subset)
    except (AmpxferError, OSError, ValueError):
        return None
