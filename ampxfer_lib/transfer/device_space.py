"""A device-space starting model: one LSTM over many devices, each device a point in a small space.

After Open-Amp (A. Wright, A. Carson, L. Juvela, "Open-Amp: synthetic data framework for audio
effect foundation models", 2024): one network is trained on many devices at once, with a
learned embedding per device as extra inputs. Here the embedding has ``E`` values, each the
sigmoid of a free logit so that it lies in [0, 1]; the trained network therefore IS an
ordinary knob-conditioned NeuralPi model with ``E`` virtual knobs (``input_size = 1 + E``),
saved in the usual JSON format. For a new device only the ``E`` knob values are fitted
(:func:`fit_knobs`, network frozen), and :func:`~ampxfer_lib.model.weights.fold_knobs`
folds them exactly into the LSTM bias: a plain snapshot that the normal trainer fine-tunes
(``make_config(..., init_from=path)``).

Training and fitting use the project's own TBPTT step and loss
(:func:`~ampxfer_lib.training.tbptt.tbptt_batch`, :func:`~ampxfer_lib.training.losses.make_loss`):
:class:`EmbeddedLSTM` looks to them like an :class:`AmpLSTM` taking the audio channel only.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ampxfer_lib.data.dataset import Dataset, load_dataset, segment, stack_sequences
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.fileio import PathLike, atomic_write_bytes
from ampxfer_lib.model.network import AmpLSTM, new_model
from ampxfer_lib.model.weights import ModelConfig, ModelWeights, fold_knobs
from ampxfer_lib.training.losses import LossConfig, esr_numpy, make_loss
from ampxfer_lib.training.tbptt import tbptt_batch, tbptt_windows

CHECKPOINT = "device_space_checkpoint.pt"


@dataclass(frozen=True)
class DeviceSpaceConfig:
    """Training of the device-space model (first block) and fitting of a new device's knobs (second)."""

    embed_dim: int = 3  # E: virtual knobs
    hidden_size: int = 20
    skip: bool = True
    segment_seconds: float = 0.5
    batch_size: int = 40  # segments per batch, drawn from all devices at once
    warmup_samples: int = 200
    tbptt_samples: int = 500  # the adaptive preset's update window
    lr: float = 5e-3
    embed_lr: float = 1e-2
    weight_decay: float = 1e-4  # network only: a decay on logits would pull every device to 0.5
    plateau_patience: int = 4  # epochs without a better mean val ESR before the rates halve
    max_epochs: int = 200
    cpu_budget_seconds: float = 900.0  # training stops after the epoch that passes it
    seed: int = 0
    # fit_knobs
    fit_grid: Tuple[float, ...] = (0.15, 0.5, 0.85)  # per knob: E = 3 gives 27 starts to score
    fit_epochs: int = 4  # passes of gradient over the training audio (all segments, one batch)
    fit_lr: float = 0.05  # Adam on the logits
    fit_level_match: bool = True  # score and fit after the trainer's start match (dense-path gain)
    threads: int = 1

    def __post_init__(self):
        if not (isinstance(self.embed_dim, int) and 1 <= self.embed_dim <= 8):
            raise ConfigError(f"embed_dim must be a whole number 1..8, got {self.embed_dim!r}")
        if self.hidden_size < 1 or self.batch_size < 1 or self.tbptt_samples < 1 or self.max_epochs < 1:
            raise ConfigError("hidden_size, batch_size, tbptt_samples and max_epochs must be at least 1")
        if not (self.segment_seconds > 0 and self.lr > 0 and self.embed_lr > 0 and self.fit_lr > 0):
            raise ConfigError("segment_seconds and the learning rates must be positive")
        if self.warmup_samples < 0 or self.fit_epochs < 0 or self.cpu_budget_seconds <= 0:
            raise ConfigError("warmup_samples and fit_epochs must be >= 0, cpu_budget_seconds positive")
        if not self.fit_grid or any(not 0 < g < 1 for g in self.fit_grid):
            raise ConfigError(f"fit_grid must be values strictly inside (0, 1), got {self.fit_grid}")
        if len(self.fit_grid) ** self.embed_dim > 4096:
            raise ConfigError("fit_grid has too many points for embed_dim knobs; use fewer grid values")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fit_grid"] = list(self.fit_grid)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DeviceSpaceConfig":
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown device-space setting(s): {', '.join(unknown)}; remove them")
        return cls(**{**d, **({"fit_grid": tuple(map(float, d["fit_grid"]))} if "fit_grid" in d else {})})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DeviceSpaceConfig":
        try:
            d = json.loads(text)
            assert isinstance(d, dict)
        except (ValueError, AssertionError):
            raise ConfigError("device-space config: not JSON of an object; write it with DeviceSpaceConfig.to_json") from None
        return cls.from_dict(d)


def logit(p) -> np.ndarray:
    """Inverse sigmoid, clipped so that knob values of exactly 0 or 1 stay finite."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


class EmbeddedLSTM(nn.Module):
    """An :class:`AmpLSTM` with ``1 + E`` inputs whose knob channels come from a learned table.

    ``net``: the conditioned network; ``logits`` (D, E): one row per device, knobs =
    sigmoid(logits). Set ``ids`` (B,) (long) to the device of each segment before a call;
    the time-major methods then take the audio channel alone, x (T, 1, B), and the knob
    channels are built inside so their gradient reaches ``logits`` (with the current values
    after every optimiser step, which a precomputed input would not have).
    """

    def __init__(self, net: AmpLSTM, logits: np.ndarray):
        super().__init__()
        self.net = net
        self.logits = nn.Parameter(torch.as_tensor(np.asarray(logits, dtype=np.float32)))
        self.ids: Optional[torch.Tensor] = None
        self.last_input: Optional[torch.Tensor] = None  # the audio of the last forward_tm (the skip)

    def knobs(self) -> torch.Tensor:
        """(D, E) knob values in (0, 1)."""
        return torch.sigmoid(self.logits)

    def _with_knobs(self, x: torch.Tensor) -> torch.Tensor:
        k = self.knobs()[self.ids].t()  # (E, B)
        return torch.cat([x, k.unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1).contiguous()

    def forward_tm(self, x: torch.Tensor, state=None):
        """x (T, 1, B) -> y (T, B) and the state (see :meth:`AmpLSTM.forward_tm`)."""
        self.last_input = x
        return self.net.forward_tm(self._with_knobs(x), state)

    def advance_tm(self, x: torch.Tensor, state=None):
        with torch.no_grad():
            full = self._with_knobs(x)
        return self.net.advance_tm(full, state)

    detached = staticmethod(AmpLSTM.detached)

    @torch.no_grad()
    def play(self, x: np.ndarray, device: int) -> np.ndarray:
        """Whole sequences from a zero state at device ``device``'s knobs: x (B, T, 1) -> (B, T)."""
        k = self.knobs()[device]
        xt = torch.from_numpy(np.ascontiguousarray(x[..., :1], dtype=np.float32))
        full = torch.cat([xt, k.expand(xt.shape[0], xt.shape[1], -1)], dim=2).contiguous()
        return self.net.infer(full)[..., 0].numpy()


def _open(folder, rate: Optional[int]) -> Dataset:
    ds = folder if isinstance(folder, Dataset) else load_dataset(folder)
    if ds.num_knobs:
        raise ConfigError(f"{ds.path}: has {ds.num_knobs} knob channel(s); the device space needs one "
                          "snapshot data folder per device setting (prepare each capture on its own)")
    if rate is not None and ds.sample_rate != rate:
        raise ConfigError(f"{ds.path}: prepared at {ds.sample_rate} Hz, the model runs at {rate} Hz; "
                          f"prepare it again with --rate {rate}")
    return ds


def _time_major(sections, length: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Training segments as the trainer holds them: x (L, 1, N), y (L, N)."""
    x, y = segment(sections, length)  # (N, L, C), (N, L, 1)
    return (torch.from_numpy(np.ascontiguousarray(x[..., :1].transpose(1, 2, 0))),
            torch.from_numpy(np.ascontiguousarray(y[..., 0].T)))


def _matched(pred: torch.Tensor, skip, target: torch.Tensor) -> torch.Tensor:
    """``pred`` as the trainer's start match leaves it (``level_match`` ``gain``): with the skip
    connection fixed, the dense path ``d = pred - skip`` scaled and offset, ``skip + a d + c``,
    (a, c) the least-squares fit of ``target - skip``. Any shape; ``skip`` 0 without the skip.

    A capture's level and polarity are arbitrary and the trainer undoes them this way before
    fine-tuning: knobs fitted to the raw level would be spent on loudness, and a gain on the
    whole output (which the trainer cannot apply) would pick knobs that start it badly.
    """
    d, r = pred - skip, target - skip
    dm, rm = d.mean(), r.mean()
    a = ((d - dm) * (r - rm)).sum() / (((d - dm) ** 2).sum() + 1e-12)
    return skip + a * d + (rm - a * dm)


def _level_matched(loss_fn: Callable, model: "EmbeddedLSTM") -> Callable:
    """``loss_fn`` (pred, target (B, T)) applied after :func:`_matched`; the skip is the model's input."""
    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        skip = model.last_input[:, 0].t() if model.net.config.skip else 0.0
        return loss_fn(_matched(pred, skip, target), target)

    return loss


@dataclass
class DeviceSpaceResult:
    """The best model over training: ``weights`` (conditioned, input_size 1 + E), ``embeddings``
    (D, E) knob values of the training devices in ``names`` order, their validation ESRs."""

    weights: ModelWeights
    names: List[str]
    embeddings: np.ndarray
    val_esr: Dict[str, float]
    best_epoch: int
    epochs: int
    cpu_seconds: float
    history: List[dict] = field(default_factory=list)


def _identity(config: DeviceSpaceConfig) -> dict:
    """The settings a resumed run must share (the stopping rules and threads may change)."""
    return {k: v for k, v in config.to_dict().items() if k not in ("max_epochs", "cpu_budget_seconds", "threads")}


def train_device_space(folders: Dict[str, PathLike], config: DeviceSpaceConfig = DeviceSpaceConfig(),
                       work: Optional[PathLike] = None, log: Callable[[str], None] = print) -> DeviceSpaceResult:
    """Train one model over ``folders`` ({device name: prepared snapshot data folder}).

    Every epoch draws mixed batches of ``segment_seconds`` segments from all devices
    (:func:`tbptt_batch` per batch: warm-up, then an Adam step per ``tbptt_samples``), then
    plays each device's val split and keeps the model with the best mean val ESR. Stops at
    ``max_epochs`` or after the epoch that passes ``cpu_budget_seconds`` (process CPU time,
    summed over sessions). With ``work`` a checkpoint is saved after every epoch and resumed.
    """
    if len(folders) < 2:
        raise ConfigError("the device space needs at least two data folders (one per device setting)")
    names = list(folders)
    first = _open(folders[names[0]], None)
    rate = first.sample_rate
    sets = [first] + [_open(folders[n], rate) for n in names[1:]]
    length = int(round(config.segment_seconds * rate))
    xs, ys, ids = [], [], []
    for d, ds in enumerate(sets):
        x, y = _time_major(ds.split("train"), length)
        xs.append(x), ys.append(y), ids.append(torch.full((x.shape[2],), d, dtype=torch.long))
    x_all, y_all, id_all = torch.cat(xs, 2), torch.cat(ys, 1), torch.cat(ids)
    vals = [stack_sequences(ds.split("val")) for ds in sets]
    windows = tbptt_windows(length, config.warmup_samples, config.tbptt_samples)
    if not windows:
        raise ConfigError(f"segment_seconds {config.segment_seconds} leaves no update window after the warm-up")

    old_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        gen = torch.Generator().manual_seed(config.seed)
        net = new_model(ModelConfig(1 + config.embed_dim, config.hidden_size, config.skip, rate), seed=config.seed)
        # Spread the devices over the space from the start: identical rows would get identical
        # gradients only through the network, and separate slowly.
        start = torch.randn(len(names), config.embed_dim, generator=gen).numpy()
        model = EmbeddedLSTM(net, start)
        opt = torch.optim.Adam([{"params": net.parameters(), "weight_decay": config.weight_decay},
                                {"params": [model.logits], "lr": config.embed_lr, "weight_decay": 0.0}],
                               lr=config.lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=config.plateau_patience)
        loss_fn = make_loss(LossConfig())
        st = {"epoch": 0, "cpu": 0.0, "best": math.inf, "best_epoch": 0, "best_state": None, "history": []}
        path = Path(work) / CHECKPOINT if work is not None else None
        if path is not None and path.exists():
            saved = torch.load(path, weights_only=False)
            if saved["names"] != names or saved["config"] != _identity(config):
                raise ConfigError(f"{path}: a checkpoint of other devices or settings; delete it or use another --work")
            model.load_state_dict(saved["model"]), opt.load_state_dict(saved["opt"]), sched.load_state_dict(saved["sched"])
            gen.set_state(saved["gen"])
            st = saved["st"]
            log(f"resumed at epoch {st['epoch']} ({st['cpu']:.0f} s CPU so far)")
        n = x_all.shape[2]
        while st["epoch"] < config.max_epochs and st["cpu"] < config.cpu_budget_seconds:
            c0 = time.process_time()
            order = torch.randperm(n, generator=gen)
            total = torch.zeros(())
            batches = range(0, n, config.batch_size)
            for b in batches:
                idx = order[b:b + config.batch_size]
                model.ids = id_all[idx]
                total = total + tbptt_batch(model, opt, loss_fn, x_all.index_select(2, idx), y_all.index_select(1, idx),
                                            config.warmup_samples, windows)
            train_loss = float(total) / len(batches)
            if not math.isfinite(train_loss):
                raise ConfigError(f"device-space training diverged at epoch {st['epoch'] + 1}; lower lr in the config")
            esrs = [esr_numpy(model.play(x, d), y[..., 0]) for d, (x, y) in enumerate(vals)]
            mean = float(np.mean(esrs))
            sched.step(mean)
            st["epoch"] += 1
            if mean < st["best"]:
                st["best"], st["best_epoch"] = mean, st["epoch"]
                st["best_state"] = {k: v.clone() for k, v in model.state_dict().items()}
            st["cpu"] += time.process_time() - c0
            st["history"].append({"epoch": st["epoch"], "train_loss": train_loss, "mean_val_esr": mean,
                                  "val_esr": dict(zip(names, esrs)), "cpu_seconds": round(st["cpu"], 1)})
            log(f"epoch {st['epoch']}: train loss {train_loss:.4f}, mean val ESR {mean:.4f} "
                f"(best {st['best']:.4f} at {st['best_epoch']}), {st['cpu']:.0f} s CPU")
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                buf = io.BytesIO()
                torch.save({"names": names, "config": _identity(config), "model": model.state_dict(),
                            "opt": opt.state_dict(), "sched": sched.state_dict(), "gen": gen.get_state(), "st": st}, buf)
                atomic_write_bytes(path, buf.getvalue())
        model.load_state_dict(st["best_state"])
        best = st["history"][st["best_epoch"] - 1]
        return DeviceSpaceResult(model.net.weights({"name": "device_space"}), names, model.knobs().detach().numpy().copy(),
                                 best["val_esr"], st["best_epoch"], st["epoch"], st["cpu"], st["history"])
    finally:
        torch.set_num_threads(old_threads)


@dataclass
class KnobFit:
    """``knobs`` fitted to a device; ``esr`` (plain) and ``esr_level_matched`` of the model at
    them on the fitting audio; ``start`` the grid point or mean it began from; ``network``: the
    network weights after the fit (unchanged: only the knobs were free)."""

    knobs: Tuple[float, ...]
    esr: float
    esr_level_matched: float
    start: Tuple[float, ...]
    start_esr: float
    cpu_seconds: float
    network: ModelWeights


def _score(model: EmbeddedLSTM, x: torch.Tensor, y: torch.Tensor, warmup: int) -> Dict[str, float]:
    """Plain ESR, and ESR after :func:`_matched`, of the first device's knobs on segments
    x (L, 1, N), y (L, N), each played from a zero state, the warm-up unscored."""
    model.ids = torch.zeros(x.shape[2], dtype=torch.long)
    with torch.no_grad():
        pred, _ = model.forward_tm(x)
    p, t = pred[warmup:].double(), y[warmup:].double()
    skip = x[warmup:, 0].double() if model.net.config.skip else 0.0
    return {"esr": esr_numpy(p.numpy(), t.numpy()), "esr_level_matched": esr_numpy(_matched(p, skip, t).numpy(), t.numpy())}


def fit_knobs(weights: ModelWeights, data, config: DeviceSpaceConfig = DeviceSpaceConfig(), subset: str = "limited",
              starts: Sequence[Sequence[float]] = ()) -> KnobFit:
    """Fit only the ``E`` knob values of a device-space model to a new device (a data folder).

    Every point of ``config.fit_grid`` ** E and each of ``starts`` (e.g. the mean of the
    training embeddings) is scored on the ``subset`` training audio (0.5 s segments from a
    zero state, the warm-up unscored); from the best, ``fit_epochs`` passes of
    :func:`tbptt_batch` move the knobs' logits by Adam while every network weight is frozen.
    The objective is the training loss, after the trainer's start match (:func:`_matched`)
    when ``fit_level_match``, so the knobs are those the fine-tune will start best from.
    """
    if weights.config.num_knobs != config.embed_dim:
        raise ConfigError(f"the model has {weights.config.num_knobs} knob(s) but embed_dim is {config.embed_dim}; "
                          f"set embed_dim={weights.config.num_knobs} or load the device-space model")
    ds = _open(data, weights.config.sample_rate)
    c0 = time.process_time()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        length = int(round(config.segment_seconds * ds.sample_rate))
        x, y = _time_major(ds.split("train", subset), length)
        net = AmpLSTM.from_weights(weights)
        for p in net.parameters():
            p.requires_grad_(False)
        key = "esr_level_matched" if config.fit_level_match else "esr"
        points = [tuple(float(v) for v in s) for s in starts]
        if any(len(s) != config.embed_dim for s in points):
            raise ConfigError(f"a start for fit_knobs needs {config.embed_dim} values; give one per knob")
        points += list(itertools.product(config.fit_grid, repeat=config.embed_dim))
        best = None
        for p in points:
            s = _score(EmbeddedLSTM(net, logit(p)[None]), x, y, config.warmup_samples)[key]
            if best is None or s < best[1]:
                best = (p, s)
        model = EmbeddedLSTM(net, logit(best[0])[None])
        model.ids = torch.zeros(x.shape[2], dtype=torch.long)
        opt = torch.optim.Adam([model.logits], lr=config.fit_lr)
        loss_fn = make_loss(LossConfig())
        if config.fit_level_match:
            loss_fn = _level_matched(loss_fn, model)
        windows = tbptt_windows(length, config.warmup_samples, config.tbptt_samples)
        for _ in range(config.fit_epochs):
            tbptt_batch(model, opt, loss_fn, x, y, config.warmup_samples, windows)
        end = _score(model, x, y, config.warmup_samples)
        knobs = tuple(float(k) for k in model.knobs()[0].detach().numpy().astype(np.float64))
        return KnobFit(knobs, end["esr"], end["esr_level_matched"], best[0], best[1],
                       time.process_time() - c0, net.weights(dict(weights.metadata)))
    finally:
        torch.set_num_threads(old_threads)


def folded_start(weights: ModelWeights, data, config: DeviceSpaceConfig = DeviceSpaceConfig(),
                 subset: str = "limited", starts: Sequence[Sequence[float]] = ()) -> Tuple[ModelWeights, KnobFit]:
    """The snapshot start for a new device: :func:`fit_knobs`, then ``fold_knobs`` (exact)."""
    fit = fit_knobs(weights, data, config, subset, starts)
    snap = fold_knobs(weights, fit.knobs)
    snap.metadata.update({"name": f"{weights.metadata.get('name', 'device_space')} folded",
                          "folded_knobs": [round(k, 6) for k in fit.knobs]})
    return snap, fit
