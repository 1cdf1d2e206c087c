"""The training loop: one function, :func:`train`, for every preset and every start.

Fine-tuning is just another config (``init_from=...``), as in minGPT/nanoGPT, and resuming
is one explicit branch: the run folder's checkpoint replaces the fresh model, optimiser,
counters and RNG states (:mod:`.run_folder`). Each epoch then trains on the segments in a
shuffle drawn from a generator seeded by (seed, epoch), so a resumed run sees the same
batches, with truncated back-propagation per batch (:mod:`.tbptt`); validates; keeps the
best model; checkpoints; and tells the callbacks (:mod:`.callbacks`). An extra validation
before the first epoch ("epoch 0") is recorded for the transfer curves; it never counts
towards the best model, the scheduler or early stopping. The recipes are in :mod:`.config`.

Speed, shared by every preset: on the CPU the LSTM runs the numba kernels (training and
validation) on data held time-major on the run's device; Adam's update is the fused one,
the loss computes one error signal for both terms, and the epoch's loss stays a tensor
until the epoch ends, so a GPU is never made to wait for the host within an epoch; on a GPU
the same loop calls nn.LSTM (cuDNN). Measured by ``bench/train_speed.py``
(bench/RESULTS_train.md), one thread: the ``agam`` recipe trains about 3x faster here than
in a loop written like AGAM's own (53 against 17-19 seconds of audio per second).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from functools import partial
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ampxfer_lib.data.dataset import Dataset, load_dataset, segment, stack_sequences
from ampxfer_lib.errors import ConfigError, TrainingDiverged
from ampxfer_lib.fileio import PathLike
from ampxfer_lib.model import cpu_lstm
from ampxfer_lib.model.network import AmpLSTM, new_model
from ampxfer_lib.model.weights import ModelConfig
from ampxfer_lib.training import checkpoint as ckpt
from ampxfer_lib.training.callbacks import Callback, LogFile, Report, RunView
from ampxfer_lib.training.config import TrainConfig, epoch_lr
from ampxfer_lib.training.regularize import ema_update_, l2_sp
from ampxfer_lib.training.schedule import adaptive_lr
from ampxfer_lib.training.evaluate import evaluate, predict
from ampxfer_lib.training.losses import esr_numpy, make_loss
from ampxfer_lib.folders import holds_folder
from ampxfer_lib.training.run_folder import RunFolder, RunState, make_summary, start_fingerprints, starting_model
from ampxfer_lib.training.tbptt import grown_window, tbptt_batch, tbptt_windows
from ampxfer_lib.transfer.init_from import InitSource, adapt_to, shrink_towards
from ampxfer_lib.transfer.level_match import match_level, spread_stretches


@holds_folder("out_dir", "train")
def train(config: TrainConfig, out_dir: PathLike, callbacks: Sequence[Callback] = (), overwrite: bool = False,
          log: bool = True) -> dict:
    """Train a run into ``out_dir``, resuming it if the folder holds its checkpoint; returns
    its summary (summary.json's content).

    A finished run is not trained again (its summary comes back), unless ``max_epochs`` was
    raised above the epochs it did: then it is extended. ``log``: also append the run's
    lines to ``out_dir/train.log`` (unless a :class:`LogFile` is among the callbacks), so the
    folder keeps a record of every session.
    """
    out_dir = Path(out_dir)
    callbacks = list(callbacks)
    if log and not any(isinstance(c, LogFile) for c in callbacks):
        callbacks.append(LogFile(out_dir / ckpt.LOG))
    device = pick_device(config.device)
    with run_threads(device, config.threads) as threads:
        # The data, the starting model and the folder; nothing is written before the claim.
        data = TrainingData.load(config, device)
        init, init_fingerprint = starting_model(config, out_dir)
        model_config = model_shape(config, data.dataset, init)
        warnings = data.warnings + rate_warnings(config, data.dataset, init, init_fingerprint)
        folder = RunFolder(out_dir, config, model_config, data.fingerprint, init_fingerprint, warnings,
                           start_fingerprints(init.weights) if init_fingerprint else ())
        saved = folder.claim(overwrite, device)  # the checkpoint to resume from; None: a fresh start

        model, start_match = build_model(config, model_config, init, data.dataset)
        model = model.to(device)
        optimizer = make_optimizer(config, model, init)
        scheduler = make_scheduler(config, optimizer)
        loss_fn = make_loss(config.loss_config())
        state = RunState.begin(model, optimizer, scheduler, from_model=init is not None,
                               averaged=config.ema_decay > 0, start_match=start_match)
        validated = AmpLSTM(model_config).to(device) if config.ema_decay > 0 else model
        report = Report(callbacks, state, out_dir=out_dir, config=config, device=str(device), threads=threads,
                        warnings=tuple(warnings), n_segments=data.n_segments,
                        train_seconds_audio=data.train_seconds_audio)

        def summary() -> dict:
            return make_summary(state, config, model_config, best_test_esr(state, model_config, data.dataset),
                                data.train_seconds_audio, device, threads)

        with report.stops():
            if saved is None:
                folder.create()
                if config.initial_validation:
                    val_loss, val_esr = validate(model, loss_fn, data)
                    state.history.append(epoch_record(state, 0, None, val_loss, val_esr))
            else:  # resume
                state.restore(saved)
                if state.status == "diverged":
                    folder.write_outputs(state)
                    raise TrainingDiverged(
                        f"{out_dir}: this run stopped earlier because its loss diverged; "
                        f"{folder.kept_model_words(state)}. Rerun with --overwrite and a lower --lr or --grad-clip 1")
                if state.status == "complete" and not (state.stop_reason == "max_epochs"
                                                       and config.max_epochs > state.epoch):
                    done = folder.read_summary()
                    if done is None:  # killed between the final checkpoint and summary.json
                        done = summary()
                        folder.write_summary(done)
                    folder.write_outputs(state)
                    report.end(done, already_complete=True)
                    return done
                state.status, state.stop_reason = "running", None  # a finished run extended

            penalty, after_step = weight_terms(config, state)
            folder.saved_at = time.monotonic()  # the first mid-epoch checkpoint: checkpoint_seconds from here
            report.start()
            for epoch in range(state.epoch + 1, config.max_epochs + 1):
                clock = Stopwatch(state)
                set_lstm_trainable(model, not config.lstm_frozen(epoch))
                if config.scheduler in ("exponential", "adaptive"):
                    for group in optimizer.param_groups:
                        group["lr"] = scheduled_lr(config, epoch, state.history)[0]
                if state.batch == 0 and restarts_from_best(config, optimizer.param_groups[0]["lr"], state):
                    state.restart_from_best()

                windows = epoch_windows(config, data, optimizer.param_groups[0]["lr"])
                # An epoch of batches, resumed at state.batch after a checkpoint inside it.
                order = shuffle(config, epoch, data.n_segments, device)
                n_batches = math.ceil(data.n_segments / config.batch_size)
                if state.batch == 0:
                    state.loss_sum = torch.zeros((), device=device)
                for b in range(state.batch, n_batches):
                    x, y = data.batch(order[b * config.batch_size:(b + 1) * config.batch_size])
                    state.loss_sum = state.loss_sum + tbptt_batch(model, optimizer, loss_fn, x, y,
                                                                  config.warmup_samples, windows,
                                                                  config.grad_clip, penalty, after_step)
                    state.batch = b + 1
                    report.batch(b + 1, n_batches)
                    if b + 1 < n_batches and folder.checkpoint_due():
                        clock.lap()
                        folder.save(state)
                train_loss = float(state.loss_sum / n_batches)
                if not math.isfinite(train_loss):
                    raise diverged(folder, state, clock, summary, epoch, "training", train_loss)

                val_loss = val_esr = None
                # The last epoch is always validated so that every run ends with a best model.
                if epoch % config.val_every == 0 or epoch >= config.max_epochs:
                    if state.average is not None:
                        validated.load_state_dict(state.average)
                    val_loss, val_esr = validate(validated, loss_fn, data)
                    if not math.isfinite(val_loss):
                        raise diverged(folder, state, clock, summary, epoch, "validation", val_loss)
                    if scheduler is not None:
                        scheduler.step(val_loss)
                    state.validated(epoch, val_loss)
                clock.lap()
                record = epoch_record(state, epoch, train_loss, val_loss, val_esr)
                state.history.append(record)
                state.epoch, state.batch = epoch, 0

                stop = None
                if state.bad_validations > config.patience:
                    stop = "early_stop"
                elif config.scheduler == "adaptive" and scheduled_lr(config, epoch + 1, state.history)[1]:
                    stop = "converged"
                elif epoch >= config.max_epochs:
                    stop = "max_epochs"
                if stop:
                    folder.finish(state, stop)
                else:
                    folder.save(state)
                    folder.write_outputs(state)
                report.epoch(record)
                if stop:
                    break
            if state.status == "running":  # max_epochs lowered to the epochs already done
                folder.finish(state, "max_epochs")
            result = summary()
            folder.write_summary(result)
            report.end(result)
            return result


class Trainer(Callback):
    """:func:`train` as an object, for callers that ask afterwards whether the folder held a
    finished run (``already_complete``). Adds no ``train.log`` (``train(..., log=False)``)."""

    def __init__(self, config: TrainConfig, out_dir: PathLike, callbacks: Sequence[Callback] = (),
                 overwrite: bool = False):
        self.config, self.out_dir, self.overwrite = config, Path(out_dir), overwrite
        self.callbacks = list(callbacks)
        self.already_complete = False

    def run(self) -> dict:
        return train(self.config, self.out_dir, self.callbacks + [self], self.overwrite, log=False)

    def on_end(self, run: RunView, summary: dict) -> None:
        self.already_complete = run.already_complete


# --------------------------------------------------------------------------- setup

def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda but no CUDA GPU is available; use --device auto or cpu")
    return torch.device(name)


@contextmanager
def run_threads(device: torch.device, threads: Optional[int]) -> Iterator[int]:
    """The run's threads (default: 1 on the CPU, torch's setting on a GPU), restored after it:
    ``set_num_threads`` is process-wide, and a notebook kernel keeps its own setting."""
    old = torch.get_num_threads()
    blas = None
    if device.type == "cpu":
        n = threads or 1
        torch.set_num_threads(n)
        # The CPU LSTM kernel calls BLAS (numba -> scipy's OpenBLAS) for its small
        # products; keep that pool to the run's threads as well.
        blas = _limit_blas_threads(n)
        cpu_lstm.warm_up()  # compile or load the kernels before the clock starts
    else:
        n = threads or torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
    try:
        yield n
    finally:
        torch.set_num_threads(old)
        if blas is not None:
            blas.restore_original_limits()


def _limit_blas_threads(threads: int):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it BLAS keeps its own default
        return None
    return threadpool_limits(limits=threads, user_api="blas")


@dataclass(frozen=True)
class TrainingData:
    """A run's audio on its device. Training segments time-major and batch-innermost:
    ``x_train`` (L, C, N), ``y_train`` (L, N), so a batch is one ``index_select`` and every
    update window a contiguous slice; the validation captures whole: ``x_val`` (B, T, C),
    ``y_val`` (B, T, 1), and ``y_val_host`` the same as a numpy array (for the plain ESR)."""

    dataset: Dataset
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    y_val_host: np.ndarray
    windows: List[Tuple[int, int]]
    segment_len: int

    @classmethod
    def load(cls, config: TrainConfig, device: torch.device) -> "TrainingData":
        data = load_dataset(config.data)
        rate = data.sample_rate
        seg_len = int(round(config.segment_seconds * rate))
        if seg_len <= config.warmup_samples:
            raise ConfigError(f"segments of {seg_len} samples leave nothing after {config.warmup_samples} "
                              "warm-up samples")
        sections = data.split("train", config.subset)
        longest = max(s.samples for s in sections)
        if longest < seg_len:
            raise ConfigError(f"{data.path}: the training audio ({longest / rate:.1f} s) is shorter than one "
                              f"{config.segment_seconds:g} s segment; prepare more audio or lower segment_seconds")
        x, y = segment(sections, seg_len)  # (N, L, C), (N, L, 1)
        vx, vy = stack_sequences(data.split("val"))
        return cls(data,
                   torch.from_numpy(np.ascontiguousarray(x.transpose(1, 2, 0))).to(device),
                   torch.from_numpy(np.ascontiguousarray(y[..., 0].T)).to(device),
                   torch.from_numpy(vx).to(device), torch.from_numpy(vy).to(device), vy[..., 0],
                   tbptt_windows(seg_len, config.warmup_samples, config.tbptt_samples), seg_len)

    @property
    def n_segments(self) -> int:
        return self.x_train.shape[2]

    @property
    def train_seconds_audio(self) -> float:
        return self.n_segments * self.segment_len / self.dataset.sample_rate

    @property
    def fingerprint(self) -> str:
        return self.dataset.fingerprint()

    @property
    def warnings(self) -> List[dict]:
        """The prepared data's own warnings ({"code", "file", "message"}): never fatal."""
        return list(self.dataset.manifest.get("warnings", []))

    def batch(self, idx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The segments ``idx`` (B,): x (L, C, B), y (L, B)."""
        return self.x_train.index_select(2, idx), self.y_train.index_select(1, idx)


def model_shape(config: TrainConfig, data: Dataset, init: Optional[InitSource]) -> ModelConfig:
    """The run's network: the data's inputs and rate; hidden size and skip from the config, else
    the starting model's, else 20 and on."""
    start = init.weights.config if init else None
    hidden = config.hidden_size or (start.hidden_size if start else 20)
    skip = config.skip if config.skip is not None else (start.skip if start else True)
    return ModelConfig(data.input_size, hidden, skip, data.sample_rate)


def rate_warnings(config: TrainConfig, data: Dataset, init: Optional[InitSource],
                  init_fingerprint: Optional[str]) -> List[dict]:
    """A starting model at another sample rate than the data's is trained on at the data's rate."""
    start = init.weights.config if init else None
    if start is None or start.sample_rate == data.sample_rate or not init_fingerprint:
        return []
    return [{"code": "init_rate", "file": str(config.init_from),
             "message": f"the starting model runs at {start.sample_rate} Hz but the data are at {data.sample_rate} "
                        f"Hz; it is trained on at {data.sample_rate} Hz (a starting point only: prepare the data "
                        f"with --rate {start.sample_rate} to keep its rate)",
             "details": {"init_rate": start.sample_rate, "data_rate": data.sample_rate}}]


def build_model(config: TrainConfig, model_config: ModelConfig, init: Optional[InitSource],
                data: Dataset) -> Tuple[AmpLSTM, Optional[dict]]:
    """The run's first model and, for a start matched to the data's level, what the match did.

    From a model (shrunk towards a fresh init first when ``shrink_start`` < 1), its dense layer
    is fitted to the training audio (``match_level``): a capture's level and polarity are
    arbitrary, and an unmatched start began above a random one on real gear
    (:mod:`ampxfer_lib.transfer.level_match`). The fit sees the run's own
    subset only, so a limited-data run never looks at the rest."""
    if init is None:
        return new_model(model_config, seed=config.seed), None
    weights = adapt_to(init, model_config)
    if config.shrink_start < 1.0:
        weights = shrink_towards(weights, new_model(model_config, seed=config.seed).weights(), config.shrink_start)
    if config.match_level == "none":
        return AmpLSTM.from_weights(weights), None
    stretches = spread_stretches(data.split("train", config.subset), data.sample_rate)
    weights, info = match_level(weights, stretches, config.match_level)
    return AmpLSTM.from_weights(weights), info


def make_optimizer(config: TrainConfig, model: AmpLSTM, init: Optional[InitSource]) -> torch.optim.Adam:
    """Adam with the fused (single-kernel) update where this torch has it: four times faster
    than the per-parameter update for six small tensors on a CPU. ``keep_optimizer``: the
    starting run's moments, at this run's learning rate."""
    settings = dict(lr=config.start_lr(), weight_decay=config.weight_decay)
    params = list(model.parameters())
    try:
        optimizer = torch.optim.Adam(params, fused=True, **settings)
    except (RuntimeError, TypeError, ValueError):
        optimizer = torch.optim.Adam(params, **settings)
    if init is not None and init.optimizer_state is not None:
        try:
            optimizer.load_state_dict(init.optimizer_state)
        except (ValueError, KeyError):
            raise ConfigError(f"{config.init_from}: its optimiser state does not fit this model; "
                              "drop --keep-optimizer") from None
        for group in optimizer.param_groups:
            group["lr"] = config.start_lr()
    return optimizer


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer):
    """ReduceLROnPlateau for ``plateau``; None otherwise (``exponential`` is :func:`epoch_lr`)."""
    if config.scheduler != "plateau":
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=config.plateau_factor,
                                                      patience=config.plateau_patience)


# --------------------------------------------------------------------------- the epoch's parts

def epoch_windows(config: TrainConfig, data: "TrainingData", lr: float) -> List[Tuple[int, int]]:
    """The update windows of an epoch at rate ``lr``: ``tbptt_samples`` long, or with
    ``tbptt_grow`` :func:`grown_window` long (a function of the rate, so of the recorded
    validations: a resumed epoch uses the same windows)."""
    if not config.tbptt_grow:
        return data.windows
    # A window longer than the segment is one window to its end (tbptt_windows clamps it).
    window = grown_window(config.tbptt_samples, config.start_lr(), lr)
    return tbptt_windows(data.segment_len, config.warmup_samples, window)


def scheduled_lr(config: TrainConfig, epoch: int, history: Sequence[dict]) -> Tuple[float, bool]:
    """The learning rate of ``epoch`` (1-based) under the ``exponential`` or ``adaptive`` scheduler,
    and (adaptive) whether the validations so far say the run has converged. A function of the
    config and the recorded history alone, so a resumed run needs no scheduler state."""
    if config.scheduler == "exponential":
        return epoch_lr(config, epoch), False
    losses = [h["val_loss"] for h in history if h["epoch"] > 0 and h["val_loss"] is not None]
    return adaptive_lr(config.start_lr(), config.plateau_factor, config.plateau_patience, config.min_lr, losses,
                       config.plateau_threshold, config.plateau_rebase)


def restarts_from_best(config: TrainConfig, lr: float, state: RunState) -> bool:
    """Whether an epoch at rate ``lr`` starts from the best weights so far (``decay_from_best``):
    when the adaptive rate has just fallen. A function of the recorded history, so a resumed run
    restarts at the same epochs; a resumed epoch (``state.batch`` > 0) has already restarted."""
    if not (config.decay_from_best and config.scheduler == "adaptive" and state.has_best_model):
        return False
    trained = [h for h in state.history if h["epoch"] > 0]
    return bool(trained) and lr < trained[-1]["lr"]


def weight_terms(config: TrainConfig, state: RunState):
    """The L2-SP penalty towards the start and the weight-average update, as
    :func:`~ampxfer_lib.training.tbptt.tbptt_batch` takes them (None where off)."""
    penalty = average_step = None
    if config.l2_sp > 0 and state.start_state is not None:
        named = list(state.model.named_parameters())
        penalty = partial(l2_sp, [p for _, p in named], [state.start_state[n] for n, _ in named], config.l2_sp)
    if state.average is not None:
        average_step = partial(update_average, state, config.ema_decay)
    return penalty, average_step


def update_average(state: RunState, decay: float) -> None:
    """One weight-average update after an optimiser step. The average starts short and
    lengthens to ``1 / (1 - decay)`` updates, so the first epochs are not dragged back towards
    the random or transferred start."""
    state.average_updates += 1
    n = state.average_updates
    ema_update_(state.average, state.model.state_dict(), min(decay, (1 + n) / (10 + n)))


def shuffle(config: TrainConfig, epoch: int, n_segments: int, device: torch.device) -> torch.Tensor:
    """The epoch's order of the segments (N,): a function of (seed, epoch) alone."""
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    return torch.randperm(n_segments, generator=gen).to(device)


def set_lstm_trainable(model: AmpLSTM, trainable: bool) -> None:
    for p in model.rec.parameters():
        p.requires_grad_(trainable)
        if not trainable:
            p.grad = None


def validate(model: AmpLSTM, loss_fn, data: TrainingData) -> Tuple[float, Optional[float]]:
    """The training loss and the plain ESR of the validation captures, each played whole from a
    zero state: one prediction for both. The ESR is None where it is not finite (silence)."""
    out = predict(model, data.x_val)
    val_loss = float(loss_fn(out, data.y_val))
    val_esr = esr_numpy(out[..., 0].cpu().numpy(), data.y_val_host)
    return val_loss, (val_esr if math.isfinite(val_esr) else None)


def epoch_record(state: RunState, epoch: int, train_loss: Optional[float], val_loss: Optional[float],
                 val_esr: Optional[float]) -> dict:
    """One line of history.json; the times are the run's totals so far, resumed sessions included."""
    return {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_esr": val_esr,
            "lr": state.optimizer.param_groups[0]["lr"], "elapsed_s": round(state.train_seconds, 3),
            "cpu_s": round(state.cpu_seconds, 3)}


class Stopwatch:
    """Adds the wall-clock and CPU time since it started (or its last lap) to the run's totals."""

    def __init__(self, state: RunState):
        self.state = state
        self.wall, self.cpu = time.monotonic(), time.process_time()

    def lap(self) -> None:
        wall, cpu = time.monotonic(), time.process_time()
        self.state.train_seconds += wall - self.wall
        self.state.cpu_seconds += cpu - self.cpu
        self.wall, self.cpu = wall, cpu


def diverged(folder: RunFolder, state: RunState, clock: Stopwatch, summary, epoch: int, which: str,
             loss: float) -> TrainingDiverged:
    """Stop on a NaN/inf loss, keeping the best model so far; the error says what to try."""
    clock.lap()
    folder.finish(state, "diverged")  # the checkpoint of the last whole epoch's counters
    folder.write_summary(summary())
    return TrainingDiverged(f"{folder.path}: the {which} loss became {loss} at epoch {epoch}; "
                            f"{folder.kept_model_words(state)}. Try a lower --lr or --grad-clip 1")


def best_test_esr(state: RunState, model_config: ModelConfig, data: Dataset) -> Optional[float]:
    """Plain ESR of the best model on the test split (None before there is a best model)."""
    if not state.has_best_model:
        return None
    best = AmpLSTM(model_config).to(next(state.model.parameters()).device)
    best.load_state_dict(state.best_state)
    return evaluate(best, data, "test")["test_esr"]
