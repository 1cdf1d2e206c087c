"""A capture folder's record (``capture.json``): its file names, stages and small helpers."""

from __future__ import annotations

import datetime as _dt
import math
import os
from pathlib import Path
from typing import Callable, Mapping, Optional, Tuple

from ampxfer_lib.errors import AudioError
from ampxfer_lib.fileio import PathLike, sha256_file

RECORD = "capture.json"
CAPTURE_FORMAT = "ampxfer-capture"
CAPTURE_VERSION = 1
DATA, RUN, SCRATCH, START, RANKING, PLUGINS = "data", "run", "scratch", "start.json", "ranking.json", "plugins"
STAGES = ("prepare", "rank", "train", "scratch", "evaluate", "export", "listen", "register")
#: Names that belong to a capture folder; with capture.json absent, only data/ may already be
#: there (a first prepare that was interrupted after writing it).
OWN_NAMES = (RECORD, DATA, RUN, SCRATCH, START, RANKING, PLUGINS, "listen", "listen.html")
#: Validation and test audio (seconds) of a long recording, as ``ampxfer prepare`` keeps them ...
VAL_SECONDS, TEST_SECONDS = 40.0, 20.0
#: ... and the fractions kept from a shorter one, so that a one-minute recording still trains.
VAL_FRACTION, TEST_FRACTION = 0.2, 0.1

Log = Callable[[str], None]
#: How a ranking score was measured, in words (see ampxfer_lib.transfer.rank).
SCORE_WORDS = {"finetune_probe": "validation ESR after a short fine-tune probe",
               "esr_level_matched": "level-matched ESR as it plays", "esr": "ESR as it plays",
               "esr_head_refit": "ESR after refitting its output layer"}


def capture_splits(seconds: float) -> Tuple[float, float]:
    """Validation and test seconds for a recording of ``seconds``: 40 s and 20 s from 200 s on,
    20% and 10% of a shorter one (rounded to 0.1 s), so training keeps 70% or more."""
    val = min(VAL_SECONDS, round(VAL_FRACTION * seconds, 1))
    test = min(TEST_SECONDS, round(TEST_FRACTION * seconds, 1))
    return max(val, 0.1), max(test, 0.1)


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def _source(path: PathLike, role: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"{p}: no such file; check the --{role} path")
    return {"path": os.path.abspath(p), "sha256": sha256_file(p)}


def _fmt(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _finite(obj):
    """``obj`` with every NaN or infinite float replaced by None (JSON has no infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _first_difference(a: Mapping, b: Mapping) -> Optional[str]:
    """``"KEY OLD -> NEW"`` for the first key (in ``b``'s order, then the rest) whose values differ."""
    for key in list(b) + sorted(set(a) - set(b)):
        if a.get(key) != b.get(key):
            return f"{key} {a.get(key)!r} -> {b.get(key)!r}"
    return None
