"""A prepared data folder, read back: its splits as sections, and cutting them for training.

A data folder is the hand-off between data preparation (:mod:`ampxfer_lib.data.prepare`)
and training: notebooks, the command line and tests all read it with :func:`load_dataset`.
Its layout::

    manifest.json                   sources (sha256), rate, latency, gains, warnings, splits
    train_input.wav, train_target.wav, val_*.wav, test_*.wav          (one capture)
    train_c00_input.wav, train_c00_target.wav, ...                     (several captures)

The audio files are 32-bit float WAV at the model rate, so they can be listened to as they
are; ``manifest.json`` is written last, so a folder without one is an unfinished prepare.
A knob-conditioned data set has a capture per knob setting; each section of a split is one
capture's part of it, with the knob values as constant extra input channels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ampxfer_lib.errors import ConfigError
from ampxfer_lib.fileio import PathLike, sha256_file

MANIFEST = "manifest.json"
DATA_FORMAT = "ampxfer-data"
DATA_FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
#: "limited": the first ``limited_seconds`` of each training section (the small-data case, as
#: the article cuts it); "spread": as many seconds, cut as pieces of about SPREAD_PIECE_SECONDS
#: spread evenly over each training section (what a short but varied recording holds: on the
#: real-gear benchmark 30 s captures from it had 1.4-5.6x lower test ESR than from the first
#: 30 s on seven of eight devices, 2.3x higher on the eighth; bench/RESULTS_real_gear.md).
SUBSETS = ("full", "limited", "spread")
SPREAD_PIECE_SECONDS = 5.0


@dataclass
class Section:
    """One capture's part of one split: ``input`` (T, C) float32 with knob channels, ``target`` (T,)."""

    input: np.ndarray
    target: np.ndarray
    knobs: Tuple[float, ...]
    capture: int

    @property
    def samples(self) -> int:
        return len(self.target)


class Dataset:
    """A prepared data folder, read back. ``split(name, subset)`` gives its sections."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        mpath = self.path / MANIFEST
        if not mpath.exists():
            if not self.path.exists():
                raise ConfigError(f"{self.path}: no such folder; run `ampxfer prepare --out {self.path}` first")
            raise ConfigError(f"{self.path}: not a prepared data folder (no {MANIFEST}); run `ampxfer prepare` first")
        try:
            self.manifest = json.loads(mpath.read_text())
        except (OSError, ValueError):
            raise ConfigError(f"{mpath}: unreadable; prepare the data again") from None
        if self.manifest.get("format") != DATA_FORMAT:
            raise ConfigError(f"{mpath}: not an ampxfer data manifest")
        self.sample_rate = int(self.manifest["sample_rate"])
        self.input_size = int(self.manifest["input_size"])
        self._cache: Dict[str, List[Section]] = {}

    @property
    def num_knobs(self) -> int:
        return self.input_size - 1

    def fingerprint(self) -> str:
        """sha256 of the manifest: changes whenever the data are prepared differently."""
        return sha256_file(self.path / MANIFEST)

    def split(self, name: str, subset: str = "full") -> List[Section]:
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; one of {', '.join(SPLITS)}")
        if subset not in SUBSETS:
            raise ConfigError(f"unknown subset {subset!r}; one of {', '.join(SUBSETS)}")
        if name not in self._cache:
            self._cache[name] = [self._read(e) for e in self.manifest["splits"][name]["files"]]
        sections = self._cache[name]
        if name == "train" and subset != "full":
            config = self.manifest["config"]
            n = int(round(config["limited_seconds"] * self.sample_rate))
            if subset == "limited":
                return [replace(s, input=s.input[:n], target=s.target[:n]) for s in sections]
            seg = int(round(config.get("segment_seconds", 0.5) * self.sample_rate))
            out = []
            for s in sections:
                spans = spread_spans(s.samples, n, seg, int(round(SPREAD_PIECE_SECONDS * self.sample_rate)))
                out.append(replace(s, input=np.concatenate([s.input[a:b] for a, b in spans]),
                                   target=np.concatenate([s.target[a:b] for a, b in spans])))
            return out
        return sections

    def _read(self, entry: dict) -> Section:
        import soundfile as sf

        arrays = []
        for role in ("input", "target"):
            p = self.path / entry[role]
            try:
                a, rate = sf.read(str(p), dtype="float32", always_2d=False)
            except Exception:
                raise ConfigError(f"{p}: missing or unreadable; prepare the data again") from None
            if rate != self.sample_rate or a.ndim != 1:
                raise ConfigError(f"{p}: does not match {MANIFEST}; prepare the data again")
            bad = int(np.count_nonzero(~np.isfinite(a)))
            if bad:  # prepare refuses such audio: the file was changed afterwards
                raise ConfigError(f"{p}: {bad} NaN or infinite samples; prepare the data again")
            arrays.append(a)
        x, y = arrays
        if len(x) != len(y):
            raise ConfigError(f"{self.path / entry['input']}: length differs from its target; prepare again")
        knobs = tuple(float(k) for k in entry.get("knobs", []))
        inp = np.empty((len(x), self.input_size), dtype=np.float32)
        inp[:, 0] = x
        for i, k in enumerate(knobs):
            inp[:, i + 1] = k
        return Section(inp, y, knobs, int(entry.get("capture", 0)))

    def seconds(self, split: str, subset: str = "full") -> float:
        return sum(s.samples for s in self.split(split, subset)) / self.sample_rate


def spread_spans(total: int, wanted: int, segment: int, piece: int) -> List[Tuple[int, int]]:
    """(start, stop) sample spans of about ``wanted`` samples in all, cut from ``total`` as
    ``round(wanted / piece)`` (at least one) equal pieces spread evenly: the first starts at 0,
    the last ends within a segment of the end.

    Each piece is a whole number of ``segment``-sample segments and starts on a segment
    boundary, so the segments cut from the joined pieces (:func:`segment`) are segments of the
    original audio: none straddles a join. Audio shorter than ``wanted`` is returned whole,
    as one span.
    """
    if total <= wanted:
        return [(0, total)]
    pieces = max(1, int(round(wanted / piece)))
    per = max(1, int(round(wanted / pieces)) // segment)  # segments per piece
    slots = total // segment - per  # the last segment a piece may start at
    if pieces * per > total // segment:
        return [(0, total)]
    starts = [int(round(i * slots / (pieces - 1))) if pieces > 1 else 0 for i in range(pieces)]
    return [(a * segment, (a + per) * segment) for a in starts]


def load_dataset(path: PathLike) -> Dataset:
    return Dataset(path)


def segment(sections: Sequence[Section], length: int) -> Tuple[np.ndarray, np.ndarray]:
    """Cut sections into non-overlapping training segments, dropping each one's remainder.

    Returns ``x`` (N, length, C) and ``y`` (N, length, 1) float32; segments never straddle
    two captures, so a knob value is constant within every segment.
    """
    xs, ys = [], []
    for s in sections:
        n = s.samples // length
        if n:
            xs.append(s.input[: n * length].reshape(n, length, -1))
            ys.append(s.target[: n * length].reshape(n, length, 1))
    if not xs:
        raise ConfigError(f"the training audio is shorter than one segment ({length} samples)")
    return np.concatenate(xs), np.concatenate(ys)


def stack_sequences(sections: Sequence[Section]) -> Tuple[np.ndarray, np.ndarray]:
    """Whole sections as one batch for validation/test: (B, T, C), (B, T, 1).

    Sections of a split have equal lengths by construction; shorter ones (a holdout, a
    hand-made folder) are cut to the shortest so the batch stays rectangular.
    """
    n = min(s.samples for s in sections)
    x = np.stack([s.input[:n] for s in sections])
    y = np.stack([s.target[:n, None] for s in sections])
    return x, y
