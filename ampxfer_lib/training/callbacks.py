"""Hooks into a training run: progress lines, the run folder's ``train.log``, a progress bar.

A callback sees the run through a :class:`RunView`, a read-only snapshot made afresh for
every hook, never through the trainer's own objects: what it may read is listed here, and
nothing it does can change the run (except raising, which stops it like a kill would).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple

from ampxfer_lib import __version__
from ampxfer_lib.errors import TrainingDiverged
from ampxfer_lib.fileio import PathLike
from ampxfer_lib.training.checkpoint import MODEL_BEST
from ampxfer_lib.training.config import TrainConfig


@dataclass(frozen=True)
class RunView:
    """What a callback may know of a run, as of the hook being called.

    ``history``: the run's records so far (see the run folder's ``history.json``), epoch 0
    first when the starting model was validated. ``start_epoch``/``start_batch``: where this
    session began (1 and 0 for a new run; later when it resumed). ``best_val_loss`` is
    ``inf`` until an epoch has been validated. ``already_complete``: the folder held a
    finished run, so this session trained nothing (only ``on_end`` is called then).
    """

    out_dir: Path
    config: TrainConfig
    device: str
    threads: int
    warnings: Tuple[dict, ...]  # {"code", "file", "message", ...}: the data's and the trainer's
    n_segments: int  # training segments of config.segment_seconds each
    train_seconds_audio: float
    start_epoch: int
    start_batch: int
    history: Tuple[dict, ...]
    best_epoch: int
    best_val_loss: float
    already_complete: bool = False


class Callback:
    """Hooks into the training loop; each gets the run's :class:`RunView` as ``run``."""

    def on_start(self, run: RunView) -> None: ...

    def on_batch(self, run: RunView, batch: int, n_batches: int) -> None: ...

    def on_epoch(self, run: RunView, record: dict) -> None: ...

    def on_end(self, run: RunView, summary: dict) -> None: ...

    def on_error(self, run: RunView, message: str) -> None:
        """The run stopped early (diverged, interrupted); ``message`` is one line."""


#: A best validation ESR at or above this: the run learnt next to nothing of the device (ESR 1
#: is what a silent output scores). Seen on real gear: a random start on a Soldano high-gain
#: capture sat at 1.00 for 89 epochs under every recipe tried (bench/RESULTS_real_gear.md).
NOT_LEARNT_ESR = 0.9


def _fmt(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.5f}"


class LogLines(Callback):
    """One plain line per epoch (the command line's progress)."""

    def __init__(self, write=print):
        self.write = write

    def on_start(self, run):
        what = "resuming" if run.start_epoch > 1 or run.start_batch else "training"
        self.write(f"{what} {run.out_dir} on {run.device} ({run.threads} thread(s)): "
                   f"{run.train_seconds_audio:.1f} s of training audio, {run.n_segments} segments")
        if run.history and run.history[0]["epoch"] == 0:
            self.write(f"epoch    0  val {run.history[0]['val_loss']:.5f}  (starting model)")

    def on_epoch(self, run, record):
        val = "" if record["val_loss"] is None else f"  val {record['val_loss']:.5f}"
        best = "  *" if record["epoch"] == run.best_epoch and record["val_loss"] is not None else ""
        self.write(f"epoch {record['epoch']:4d}  train {record['train_loss']:.5f}{val}  "
                   f"lr {record['lr']:.2e}  {record['elapsed_s']:.1f} s{best}")

    def on_end(self, run, summary):
        what = "already complete" if run.already_complete else "done"
        self.write(f"{what} ({summary['stop_reason']}): best val {_fmt(summary['best_val_loss'])} at epoch "
                   f"{summary['best_epoch']} of {summary['epochs']}, test ESR {_fmt(summary['test_esr'])}, "
                   f"{summary['train_seconds']:.1f} s; model: {Path(run.out_dir) / MODEL_BEST}")
        esr = summary.get("best_val_esr")
        if esr is not None and esr >= NOT_LEARNT_ESR:
            self.write(f"warning: the model plays almost nothing of the target (best validation ESR {esr:.2f}); "
                       + ("a random start can stay there on a hard high-gain capture: start from a model "
                          "(--init-from, or `ampxfer capture`, which ranks starting models)"
                          if not summary.get("init_from") else "check that the recordings belong together"))


class WarningLines(Callback):
    """The run's warnings, one ``warning: FILE: MESSAGE`` line each, when it starts."""

    def __init__(self, write=print):
        self.write = write

    def on_start(self, run):
        for w in run.warnings:
            self.write(f"warning: {w['file']}: {w['message']}")


class LogFile(LogLines):
    """The same lines, appended to the run folder's ``train.log`` (one line per epoch), so a
    run on a Google Drive folder keeps its record across disconnects. Nothing is written
    before the trainer has accepted the folder, so a refused command leaves no log behind.
    ``train()`` adds one unless asked not to: a run folder has exactly one writer of its log."""

    def __init__(self, path: PathLike):
        super().__init__(self.append)
        self.path = Path(path)
        self.started = False

    def append(self, line: str) -> None:
        # Opened per line: the file survives the session's end (a Colab disconnect) line by line.
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")

    def _header(self) -> None:
        self.started = True
        self.append(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} ampxfer {__version__}")

    def on_start(self, run):
        self._header()
        WarningLines(self.append).on_start(run)
        super().on_start(run)

    def on_end(self, run, summary):
        if not self.started:  # a finished run asked again
            self._header()
        super().on_end(run, summary)

    def on_error(self, run, message: str) -> None:
        """Record why the run stopped (divergence, interruption), once the run had started."""
        if self.started:
            self.append(message)


class TqdmProgress(Callback):
    """A progress bar over epochs (tqdm.auto: a widget in notebooks, text elsewhere)."""

    def __init__(self, leave: bool = True):
        self.leave = leave
        self.bar = None

    def on_start(self, run):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=run.config.max_epochs, initial=run.start_epoch - 1, unit="epoch",
                        desc=Path(run.out_dir).name, leave=self.leave)

    def on_epoch(self, run, record):
        post = {"train": f"{record['train_loss']:.4f}"}
        if run.best_val_loss < math.inf:
            post["best val"] = f"{run.best_val_loss:.4f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def on_end(self, run, summary):
        if self.bar is not None:
            self.bar.close()


class Report:
    """A run's callbacks, each told of an event with a fresh :class:`RunView`.

    ``state``: the trainer's progress (``history``, ``best_epoch``, ``best_val_loss``,
    ``epoch`` and ``batch`` done), read here and never changed; ``facts``: the view's fields
    that stay fixed for the session (``out_dir``, ``config``, ``device``, ``threads``,
    ``warnings``, ``n_segments``, ``train_seconds_audio``).
    """

    def __init__(self, callbacks: Sequence[Callback], state, **facts):
        self.callbacks = list(callbacks)
        self.state = state
        self.facts = facts
        self.start_epoch, self.start_batch = 1, 0

    def view(self, already_complete: bool = False) -> RunView:
        s = self.state
        return RunView(start_epoch=self.start_epoch, start_batch=self.start_batch, history=tuple(s.history),
                       best_epoch=s.best_epoch, best_val_loss=s.best_val_loss, already_complete=already_complete,
                       **self.facts)

    def start(self) -> None:
        self.start_epoch, self.start_batch = self.state.epoch + 1, self.state.batch
        for c in self.callbacks:
            c.on_start(self.view())

    def batch(self, batch: int, n_batches: int) -> None:
        for c in self.callbacks:
            c.on_batch(self.view(), batch, n_batches)

    def epoch(self, record: dict) -> None:
        for c in self.callbacks:
            c.on_epoch(self.view(), record)

    def end(self, summary: dict, already_complete: bool = False) -> None:
        for c in self.callbacks:
            c.on_end(self.view(already_complete), summary)

    @contextmanager
    def stops(self) -> Iterator[None]:
        """Tell the callbacks why the run stopped early (``on_error``), then let it stop."""
        try:
            yield
        except TrainingDiverged as exc:
            self._error(f"error: {exc}")
            raise
        except KeyboardInterrupt:
            self._error("interrupted: run it again to resume from the last checkpoint")
            raise

    def _error(self, message: str) -> None:
        for c in self.callbacks:
            hook = getattr(c, "on_error", None)  # callbacks written before on_error existed lack it
            if hook is not None:
                hook(self.view(), message)
