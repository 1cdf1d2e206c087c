"""Run folders: what a training run leaves on disk, written so that no kill loses it.

A run folder holds::

    config.json        the run's settings (TrainConfig), model shape, data fingerprint
    checkpoint.pt      everything needed to resume: weights, optimiser, scheduler, best
                       weights, counters, history, RNG states, library version
    model_best.json    the best model so far (AGAM/NeuralPi JSON), model_last.json the latest
    history.json       [{epoch, train_loss, val_loss and val_esr (null where no validation ran),
                       lr, elapsed_s, cpu_s}, ...]; runs from before val_esr/cpu_s lack them
    summary.json       {best_val_loss, best_val_esr, best_epoch, epochs, train_seconds, test_esr, ...}
    train.log          the command line's lines, appended per epoch (and the error that stopped it)

The policy (fresh start, resume, extend, refuse) is :mod:`.run_folder`'s. Every file is
replaced atomically. ``checkpoint.pt`` is the source of truth; the JSON files are derived
from it and rewritten on resume, so a kill between two writes is harmless.
Checkpoints hold tensors and plain Python values only (``torch.load(weights_only=True)``),
never pickled modules.

What a kill costs: a checkpoint is written after every epoch and, within an epoch, at the
first batch boundary once ``checkpoint_seconds`` (60 s) have passed since the last one, so a
kill (a Colab disconnect, SIGKILL, a power cut) loses at most the work since then: one epoch
or a minute and one batch, whichever is shorter. The same command resumes, also from another
working directory or after the run, data and starting model moved together (they are
compared by content), and even when the starting model itself is gone. On a Google Drive
mount add Drive's own upload delay: files written just before a disconnect may not have
reached Drive yet (``drive.flush_and_unmount()`` forces it), and the older checkpoint Drive
kept is then what resumes. ``tests/test_resume_kill.py`` and
``bench/faults.py`` kill runs at every write and at random moments and check that the
resumed run ends exactly like an uninterrupted one.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from ampxfer_lib import __version__
from ampxfer_lib.errors import RunFolderError
from ampxfer_lib.fileio import PathLike, atomic_write_bytes, atomic_write_json

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"
SUMMARY = "summary.json"
MODEL_BEST = "model_best.json"
MODEL_LAST = "model_last.json"
LOG = "train.log"
RUN_FILES = (CONFIG, CHECKPOINT, HISTORY, SUMMARY, MODEL_BEST, MODEL_LAST, LOG)
CHECKPOINT_FORMAT = 1


def save_checkpoint(run_dir: PathLike, state: Dict[str, Any]) -> None:
    state = dict(state, format=CHECKPOINT_FORMAT, library_version=__version__)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(Path(run_dir) / CHECKPOINT, buf.getvalue())


def load_checkpoint(run_dir: PathLike, map_location: Optional[str] = "cpu") -> Dict[str, Any]:
    path = Path(run_dir) / CHECKPOINT
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise RunFolderError(f"{path}: no checkpoint; the run has not saved one yet") from None
    except Exception as exc:  # a truncated or foreign file: say so, never a deep torch trace
        raise RunFolderError(f"{path}: unreadable checkpoint ({type(exc).__name__}); delete it to restart the run, "
                             "or pass --overwrite") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RunFolderError(f"{path}: not an ampxfer checkpoint (or from an incompatible version); "
                             "start the run in a new folder")
    return state


def read_json(path: PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise RunFolderError(f"{path}: unreadable or damaged JSON; restore it or rerun with --overwrite") from None


def write_json(path: PathLike, obj: Any) -> None:
    atomic_write_json(path, obj)


def is_run_folder(path: PathLike) -> bool:
    return (Path(path) / CONFIG).exists()


def read_summary(run_dir: PathLike) -> Optional[dict]:
    return read_json(Path(run_dir) / SUMMARY)


def read_history(run_dir: PathLike) -> list:
    return read_json(Path(run_dir) / HISTORY) or []
