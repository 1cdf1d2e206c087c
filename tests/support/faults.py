"""The catalogue of bad (and good) inputs, each with the answer ampxfer must give.

Every case writes its own fixture files into a folder, names the command that is run on
them (the same argv for ``cli.main`` in-process and for ``python -m ampxfer_lib`` in a
subprocess, or a Python call for the notebooks' path) and says what must come back:

* errors: a non-zero exit, exactly one ``error: ...`` line on stderr matching a pattern
  that names the file (or the flag), what is wrong and the fix, no traceback, and nothing
  written to the output (a ``train.log`` at most);
* warnings: exit 0, the run goes on, and the manifest records the expected warning codes
  (each also printed as a ``warning: ...`` line);
* accepted: exit 0 with a result that passes the case's own check.

Every source file (recordings, model files, prepared data, run folders read by a command)
is made read-only and must hash the same after the command as before it.
:func:`check_result` turns a run into a list of problems (empty: the expected answer);
``tests/test_faults.py`` runs the catalogue in-process and ``bench/faults.py`` through the
real command line.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ampxfer_lib.fileio import sha256_file

RATE = 44100
#: prepare flags that fit 8 s of audio (1.5 s validation, 1 s test, 2 s limited subset).
SMALL_SPLITS = ("--val-seconds", "1.5", "--test-seconds", "1", "--limited-seconds", "2")
#: Interface round trip of the fixture device, in samples.
FIXTURE_LATENCY = 24
#: Files an error may leave in an output folder (a run folder's log).
ALLOWED_ON_ERROR = ("train.log",)


# --------------------------------------------------------------------------- fixture audio

def guitar_like(seconds: float, rate: int = RATE, seed: int = 0, level: float = 0.5) -> np.ndarray:
    """Decaying harmonic notes at random times and pitches: (T,) float64 with peak ``level``."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    x = np.zeros(n)
    t = np.arange(int(1.2 * rate)) / rate
    for _ in range(max(1, int(seconds * 3))):
        start = int(rng.integers(0, max(1, n - rate // 4)))
        f0 = rng.uniform(82.0, 660.0)
        note = sum(rng.uniform(0.2, 1.0) / h * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
                   for h in range(1, 7))
        note = note * np.exp(-t * rng.uniform(2.0, 6.0))
        m = min(len(t), n - start)
        x[start:start + m] += note[:m]
    return level * x / np.max(np.abs(x))


def fixture_amp(x: np.ndarray, rate: int = RATE, latency: int = FIXTURE_LATENCY) -> np.ndarray:
    """A small overdrive: 120 Hz high-pass, tanh, 4 kHz low-pass, then the interface delay."""
    import scipy.signal as ss

    b, a = ss.butter(1, 120.0 / (rate / 2), "high")
    y = np.tanh(6.0 * ss.lfilter(b, a, x))
    b, a = ss.butter(2, 4000.0 / (rate / 2))
    y = 0.4 * ss.lfilter(b, a, y)
    if latency:
        y = np.concatenate([np.zeros(latency), y[:-latency]])
    return y


def write_audio_file(path: Path, x: np.ndarray, rate: int = RATE, subtype: str = "PCM_24") -> Path:
    """(T,) or (T, channels) samples as WAV, or FLAC when the name ends in .flac."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    sf.write(str(path), x, rate, subtype=subtype, format=fmt)
    return path


def make_read_only(*paths: Path) -> None:
    """chmod a-w every file (recursively for folders); proves sources are opened read-only."""
    for p in paths:
        p = Path(p)
        files = [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p]
        for f in files:
            os.chmod(f, stat.S_IMODE(f.stat().st_mode) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _copy_tree_writable(src: Path, dst: Path) -> Path:
    """A writable copy of a folder (an output folder made from a shared fixture)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("."):
            shutil.copyfile(f, dst / f.name)
    return dst


# --------------------------------------------------------------------------- shared fixtures

class Fixtures:
    """Fixture files shared between cases (built once, on first use), under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._cache: Dict[str, object] = {}

    def _once(self, key: str, make: Callable[[], object]):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def di(self, seconds: float = 8.0, rate: int = RATE, seed: int = 0) -> np.ndarray:
        return self._once(f"di{seconds},{rate},{seed}", lambda: guitar_like(seconds, rate, seed))

    def pair_signals(self, seconds: float = 8.0, rate: int = RATE) -> Tuple[np.ndarray, np.ndarray]:
        x = self.di(seconds, rate)
        return x, self._once(f"amp{seconds},{rate}", lambda: fixture_amp(x, rate))

    def data(self) -> Path:
        """A prepared data folder (8 s at 44.1 kHz through the fixture amp), read-only files."""
        def make():
            from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare

            x, y = self.pair_signals()
            rec = self.root / "shared_rec"
            xin = write_audio_file(rec / "di.wav", x)
            tgt = write_audio_file(rec / "amp.wav", y)
            out = self.root / "shared_data"
            prepare([CaptureSpec((str(xin),), (str(tgt),))], out,
                    PrepareConfig(val_seconds=1.5, test_seconds=1.0, limited_seconds=2.0))
            make_read_only(out, rec)
            return out
        return self._once("data", make)

    def run(self) -> Path:
        """A finished run folder (hidden 4, one epoch) trained on :meth:`data`, read-only files."""
        def make():
            from ampxfer_lib.training.config import make_config
            from ampxfer_lib.training.loop import train

            out = self.root / "shared_run"
            train(make_config(self.data(), **RUN_SETTINGS), out)
            make_read_only(out)
            return out
        return self._once("run", make)

    def model(self, name: str = "h4.json", hidden: int = 4, input_size: int = 1, rate: int = RATE,
              skip: bool = True) -> Path:
        """A (randomly initialised) AGAM/NeuralPi model JSON."""
        def make():
            from ampxfer_lib.model.formats import neuralpi
            from ampxfer_lib.model.network import new_model
            from ampxfer_lib.model.weights import ModelConfig

            path = self.root / "models" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            neuralpi.save(new_model(ModelConfig(input_size, hidden, skip, rate), seed=1).weights(), path)
            make_read_only(path)
            return path
        return self._once(f"model {name}", make)

    def foreign_model(self, kind: str) -> Path:
        """A model file ampxfer must refuse where an AGAM LSTM is expected.

        ``gru``: an AGAM JSON of a GRU; ``wavenet``: a PedalNetRT WaveNet JSON; ``rtneural``:
        an AIDA-X/RTNeural LSTM (importable, not loadable as is); ``truncated``: the first
        half of an AGAM JSON; ``empty``: 0 bytes; ``binary``: non-text bytes.
        """
        def make():
            path = self.root / "models" / f"{kind}.json"
            src = self.model()
            obj = json.loads(src.read_text())
            if kind == "gru":
                obj["model_data"]["unit_type"] = "GRU"
                text = json.dumps(obj)
            elif kind == "wavenet":
                text = json.dumps({"num_channels": 4, "dilation_depth": 9, "num_repeat": 2, "kernel_size": 3,
                                   "variables": [{"layer_idx": 0, "name": "W", "data": [0.0] * 8}]})
            elif kind == "rtneural":
                from ampxfer_lib.model.formats import rtneural
                from ampxfer_lib.model.formats import load_model

                rtneural.save(load_model(src), path)
                make_read_only(path)
                return path
            elif kind == "truncated":
                full = src.read_text()
                text = full[: len(full) // 2]
            elif kind == "empty":
                text = ""
            elif kind == "binary":
                path.write_bytes(bytes(range(256)) * 4)
                make_read_only(path)
                return path
            else:
                raise ValueError(kind)
            path.write_text(text)
            make_read_only(path)
            return path
        return self._once(f"foreign {kind}", make)


#: Settings of the shared run (a case that repeats them resumes/reuses that run).
RUN_SETTINGS = dict(hidden_size=4, max_epochs=1, seed=0)
RUN_ARGS = ("--hidden-size", "4", "--max-epochs", "1", "--seed", "0")


# --------------------------------------------------------------------------- cases

@dataclass
class Setup:
    """What a case's builder made: the command, the files it must not change, its output."""

    argv: List[str] = field(default_factory=list)
    sources: List[Path] = field(default_factory=list)
    out: Optional[Path] = None
    #: Python call for the notebooks' path instead of a command: (function, kwargs).
    call: Optional[Tuple[Callable, dict]] = None
    #: Extra check of a successful result: returns a problem, or None.
    verify: Optional[Callable[["Result"], Optional[str]]] = None
    #: Errors that happen after the run started (divergence) may leave a run folder.
    may_write: bool = False


@dataclass(frozen=True)
class Expected:
    code: int = 0
    error: Optional[str] = None  # regex the single "error: ..." line must match
    warnings: Tuple[str, ...] = ()  # warning codes recorded (manifest.json, a run's config.json), sorted


@dataclass(frozen=True)
class Case:
    name: str
    entry: str  # prepare | train | render | evaluate | export | import | notebook
    kind: str  # error | warning | accepted
    what: str
    build: Callable[[Fixtures, Path], Setup]
    expected: Expected

    @property
    def expected_text(self) -> str:
        if self.kind == "error":
            return f"exit {self.expected.code}"
        if self.expected.warnings:
            return "exit 0, warn " + ",".join(self.expected.warnings)
        return "exit 0"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    setup: Setup
    source_hashes_before: Dict[str, Tuple[str, int, int]]  # path -> (sha256, mtime_ns, mode)
    out_before: Optional[Dict[str, str]]
    write_opens: List[str] = field(default_factory=list)

    def got_text(self, width: int = 220) -> str:
        """Exit status, warnings recorded and the last stderr line, paths cut to file names."""
        lines = [l for l in self.stderr.splitlines() if l.strip()]
        warns = _warning_codes(self.setup)
        text = f"exit {self.code}"
        if warns:
            text += ", warn " + ",".join(warns)
        if lines and self.code != 0:
            line = re.sub(r"(?<![\w.])/(?:[^\s/]+/)+([^\s/]+)", r"\1", lines[-1])
            text += f": {line[:width]}" + ("..." if len(line) > width else "")
        return text


CASES: List[Case] = []


def case(name: str, entry: str, kind: str, what: str, code: int = 0, error: Optional[str] = None,
         warnings: Sequence[str] = ()):
    """Register a builder as a catalogue case."""
    def register(build):
        if any(c.name == name for c in CASES):
            raise ValueError(f"duplicate case {name}")
        CASES.append(Case(name, entry, kind, what, build,
                          Expected(code or (2 if kind == "error" else 0), error, tuple(sorted(warnings)))))
        return build
    return register


# ----------------------------------------------------------- prepare: recordings

def _pair(d: Path, fx: Fixtures, target=None, source=None, rate: int = RATE, subtype: str = "PCM_24",
          seconds: float = 8.0, names=("di.wav", "amp.wav"), target_rate: Optional[int] = None,
          target_subtype: Optional[str] = None) -> Tuple[Path, Path]:
    """Write an input/target pair; ``target(x, y)``/``source(x)`` alter the clean signals."""
    x, y = fx.pair_signals(seconds, rate)
    if target_rate and target_rate != rate:
        _, y = fx.pair_signals(seconds, target_rate)
    xin = write_audio_file(d / names[0], source(x) if source else x, rate, subtype)
    tgt = write_audio_file(d / names[1], target(x, y) if target else y, target_rate or rate,
                           target_subtype or subtype)
    make_read_only(xin, tgt)
    return xin, tgt


def _prepare(xin: Path, tgt: Path, out: Path, *extra: str, verify=None) -> Setup:
    return Setup(["prepare", "--input", str(xin), "--target", str(tgt), "--out", str(out), *SMALL_SPLITS, *extra],
                 [xin, tgt], out, verify=verify)


def _manifest(result: Result) -> dict:
    return json.loads((result.setup.out / "manifest.json").read_text())


def _verify_prepared(rate: int = RATE, source_rate: int = RATE, seconds: float = 8.0, channels: int = 1):
    def verify(result: Result) -> Optional[str]:
        m = _manifest(result)
        pair = m["captures"][0]["pairs"][0]
        if m["sample_rate"] != rate:
            return f"data at {m['sample_rate']} Hz, expected {rate}"
        if pair["target"]["sample_rate"] != source_rate or pair["target"]["channels"] != channels:
            return f"source recorded as {pair['target']['sample_rate']} Hz / {pair['target']['channels']} ch"
        lat = pair["latency"]["samples"]
        want = FIXTURE_LATENCY * rate / source_rate
        if not (want - 3 <= lat <= want):
            return f"latency {lat} samples, expected about {want:.0f}"
        total = sum(m["splits"][s]["seconds"] for s in ("train", "val", "test"))
        if not seconds - (lat + 2) / rate <= total <= seconds + 1e-6:  # the latency is cut off, at most
            return f"{total:.4f} s prepared from {seconds} s"
        from ampxfer_lib.data.dataset import load_dataset

        sec = load_dataset(result.setup.out).split("train")[0]
        if not (np.all(np.isfinite(sec.target)) and np.max(np.abs(sec.target)) > 0.05):
            return "prepared target is not plausible audio"
        return None
    return verify


@case("missing_file", "prepare", "error", "input path that does not exist",
      error=r"^error: \S*missing_di\.wav: no such file; check the input path$")
def _(fx, d):
    _, tgt = _pair(d, fx)
    return _prepare(d / "missing_di.wav", tgt, d / "data")


@case("not_audio", "prepare", "error", "target is a text file named .wav",
      error=r"^error: \S*notes\.wav: not an audio file ampxfer can read .*; export the target as WAV or FLAC$")
def _(fx, d):
    xin, _ = _pair(d, fx)
    (d / "notes.wav").write_text("take 3 was the good one\n")
    make_read_only(d / "notes.wav")
    return _prepare(xin, d / "notes.wav", d / "data")


@case("empty_file", "prepare", "error", "target file of 0 bytes",
      error=r"^error: \S*empty\.wav: the file is empty \(0 bytes\); export the target recording again$")
def _(fx, d):
    xin, _ = _pair(d, fx)
    (d / "empty.wav").write_bytes(b"")
    make_read_only(d / "empty.wav")
    return _prepare(xin, d / "empty.wav", d / "data")


@case("zero_length", "prepare", "error", "valid WAV header, no samples",
      error=r"^error: \S*zero\.wav: contains no audio \(zero length\); export the input recording again$")
def _(fx, d):
    _, tgt = _pair(d, fx)
    z = write_audio_file(d / "zero.wav", np.zeros(0))
    make_read_only(z)
    return _prepare(z, tgt, d / "data")


@case("folder_as_file", "prepare", "error", "a folder given as the input recording",
      error=r"^error: \S*takes: is a folder; give the input recording's file$")
def _(fx, d):
    _, tgt = _pair(d, fx)
    (d / "takes").mkdir()
    return _prepare(d / "takes", tgt, d / "data")


def _truncate(path: Path) -> Path:
    """Cut a file to half its bytes, as an interrupted copy or download leaves it."""
    data = path.read_bytes()
    os.chmod(path, 0o644)
    path.write_bytes(data[: len(data) // 2])
    make_read_only(path)
    return path


@case("truncated_flac", "prepare", "error", "target FLAC cut in half (an interrupted copy)",
      error=r"^error: \S*amp\.flac: the audio data is damaged \(flac decoder lost sync\.\); copy or export the "
            r"target again$")
def _(fx, d):
    xin, tgt = _pair(d, fx, names=("di.flac", "amp.flac"))
    return _prepare(xin, _truncate(tgt), d / "data")


@case("truncated_wav", "prepare", "error", "target WAV cut in half: its header promises more than is there",
      error=r"^error: \S*amp\.wav: 4\.00 s long but the input \S*di\.wav is 8\.00 s; they differ by 4\.00 s")
def _(fx, d):
    xin, tgt = _pair(d, fx)
    return _prepare(xin, _truncate(tgt), d / "data")


@case("rate_mismatch", "prepare", "error", "input at 48 kHz, target at 44.1 kHz",
      error=r"^error: \S*amp\.wav: recorded at 44100 Hz but the input \S*di\.wav is at 48000 Hz; "
            r"record \(or export\) both at one rate$")
def _(fx, d):
    xin, tgt = _pair(d, fx, rate=48000, target_rate=44100)
    return _prepare(xin, tgt, d / "data")


@case("length_mismatch", "prepare", "error", "target 1 s longer than the input",
      error=r"^error: \S*amp\.wav: 9\.00 s long but the input \S*di\.wav is 8\.00 s; they differ by 1\.00 s "
            r"\(more than 0\.2 s\): export both from the same start to the same end$")
def _(fx, d):
    xin, tgt = _pair(d, fx, target=lambda x, y: np.concatenate([y, np.zeros(RATE)]))
    return _prepare(xin, tgt, d / "data")


@case("silent_target", "prepare", "error", "device off: the target is digital silence",
      error=r"^error: \S*amp\.wav: the target is silent \(RMS -inf dBFS, below -60\); "
            r"is the device switched on and the track armed\?$")
def _(fx, d):
    xin, tgt = _pair(d, fx, target=lambda x, y: np.zeros_like(y))
    return _prepare(xin, tgt, d / "data")


@case("quiet_target", "prepare", "error", "track not armed: only -80 dBFS of hiss",
      error=r"^error: \S*amp\.wav: the target is silent \(RMS -8\d\.\d dBFS, below -60\); "
            r"is the device switched on")
def _(fx, d):
    noise = np.random.default_rng(5).standard_normal(8 * RATE) * 1e-4
    xin, tgt = _pair(d, fx, target=lambda x, y: noise[: len(y)])
    return _prepare(xin, tgt, d / "data")


@case("silent_input", "prepare", "error", "DI track not armed: the input is silent",
      error=r"^error: \S*di\.wav: the input is silent \(RMS -inf dBFS, below -60\); "
            r"was the DI track armed and the guitar plugged in\?$")
def _(fx, d):
    xin, tgt = _pair(d, fx, source=lambda x: np.zeros_like(x))
    return _prepare(xin, tgt, d / "data")


@case("nan_samples", "prepare", "error", "float WAV target with NaN samples",
      error=r"^error: \S*amp\.wav: 10 NaN or infinite samples \(first at 2\.000 s\); the file is damaged: "
            r"export the target again as 24-bit or float WAV$")
def _(fx, d):
    def poison(x, y):
        y = y.copy()
        y[2 * RATE:2 * RATE + 10] = np.nan
        return y
    xin, tgt = _pair(d, fx, target=poison, subtype="FLOAT")
    return _prepare(xin, tgt, d / "data")


@case("inf_samples", "prepare", "error", "float WAV input with infinite samples",
      error=r"^error: \S*di\.wav: 2 NaN or infinite samples \(first at 1\.000 s\); the file is damaged")
def _(fx, d):
    def poison(x):
        x = x.copy()
        x[RATE] = np.inf
        x[RATE + 5] = -np.inf
        return x
    xin, tgt = _pair(d, fx, source=poison, subtype="FLOAT")
    return _prepare(xin, tgt, d / "data")


@case("too_short", "prepare", "error", "3 s of audio with the default 40 s + 20 s validation/test",
      error=r"^error: amp\.wav: 3\.0 s of aligned audio is too short for one 0\.5 s training segment plus 40 s "
            r"validation and 20 s test \(needs 60\.5 s\); record longer .* or lower --val-seconds/--test-seconds$")
def _(fx, d):
    xin, tgt = _pair(d, fx, seconds=3.0)
    return Setup(["prepare", "--input", str(xin), "--target", str(tgt), "--out", str(d / "data")],
                 [xin, tgt], d / "data")


@case("latency_beyond_window", "prepare", "error", "target delayed by 0.25 s (window 0.2 s)",
      error=r"^error: \S*amp\.wav: no consistent delay within \+-0\.2 s of the input \S*di\.wav; check that the "
            r"target is a recording of this input, or set the latency with --align N$")
def _(fx, d):
    lag = int(0.25 * RATE)
    xin, tgt = _pair(d, fx, target=lambda x, y: np.concatenate([np.zeros(lag), y[:-lag]]))
    return _prepare(xin, tgt, d / "data")


@case("align_beyond_window", "prepare", "error", "--align 20000 samples (0.45 s)",
      error=r"^error: --align 20000: more than the 0\.2 s latency window")
def _(fx, d):
    xin, tgt = _pair(d, fx)
    return _prepare(xin, tgt, d / "data", "--align", "20000")


@case("stereo_differs", "prepare", "error", "stereo target with two different channels, no --channel",
      error=r"^error: \S*amp\.wav: is 2-channel and the channels differ; choose the one that holds the target "
            r"with --channel N \(0 = left, 1 = right\)$")
def _(fx, d):
    xin, tgt = _pair(d, fx, target=lambda x, y: np.column_stack([y, 0.5 * x]))
    return _prepare(xin, tgt, d / "data")


@case("channel_out_of_range", "prepare", "error", "--channel 2 on a stereo file",
      error=r"^error: \S*amp\.wav: has 2 channels, so --channel must be 0\.\.1, not 2$")
def _(fx, d):
    xin, tgt = _pair(d, fx, target=lambda x, y: np.column_stack([y, 0.5 * x]))
    return _prepare(xin, tgt, d / "data", "--channel", "2")


@case("unpaired", "prepare", "error", "two --input, one --target",
      error=r"^error: 2 --input but 1 --target; give them in pairs$")
def _(fx, d):
    xin, tgt = _pair(d, fx)
    return Setup(["prepare", "--input", str(xin), "--input", str(xin), "--target", str(tgt), "--out",
                  str(d / "data"), *SMALL_SPLITS], [xin, tgt], d / "data")


@case("prepare_out_other_files", "prepare", "error", "--out folder holding the user's own files",
      error=r"^error: \S*mine: the folder holds other files \(notes\.txt, \.\.\.\); choose a new or empty --out folder")
def _(fx, d):
    xin, tgt = _pair(d, fx)
    (d / "mine").mkdir()
    (d / "mine" / "notes.txt").write_text("keep me")
    return _prepare(xin, tgt, d / "mine")


@case("prepare_out_other_data", "prepare", "error", "--out holds data prepared with other settings",
      error=r"^error: \S*data: holds data prepared from other recordings or settings; choose another --out "
            r"or pass --overwrite$")
def _(fx, d):
    out = _copy_tree_writable(fx.data(), d / "data")
    rec = fx.data().parent / "shared_rec"
    return Setup(["prepare", "--input", str(rec / "di.wav"), "--target", str(rec / "amp.wav"), "--out", str(out),
                  "--val-seconds", "2", "--test-seconds", "1"], [rec / "di.wav", rec / "amp.wav"], out)


@case("prepare_out_under_file", "prepare", "error", "--out inside a file, not a folder",
      error=r"^error: \S*notes\.txt\S*: cannot (create|write)")
def _(fx, d):
    xin, tgt = _pair(d, fx)
    (d / "notes.txt").write_text("x")
    return _prepare(xin, tgt, d / "notes.txt" / "data")


@case("conditioned_spec_missing", "prepare", "error", "--conditioned spec that does not exist",
      error=r"^error: \S*spec\.json: no such file; check the --conditioned path$")
def _(fx, d):
    return Setup(["prepare", "--conditioned", str(d / "spec.json"), "--out", str(d / "data"), *SMALL_SPLITS], [],
                 d / "data")


@case("conditioned_knob_range", "prepare", "error", "--conditioned spec with a knob value of 7 (not 0..1)",
      error=r"^error: knob values must lie in 0\.\.1, got \[7\.0\] for \S*amp\.wav$")
def _(fx, d):
    xin, tgt = _pair(d, fx)
    (d / "spec.json").write_text(json.dumps({"input": "di.wav", "captures": [{"target": "amp.wav", "knobs": [7]}]}))
    make_read_only(d / "spec.json")
    return Setup(["prepare", "--conditioned", str(d / "spec.json"), "--out", str(d / "data"), *SMALL_SPLITS],
                 [xin, tgt, d / "spec.json"], d / "data")


@case("conditioned_spec_not_json", "prepare", "error", "--conditioned spec that is not JSON",
      error=r"^error: \S*spec\.json: not a readable JSON spec \(.*\)$")
def _(fx, d):
    (d / "spec.json").write_text("input: di.wav\n")
    make_read_only(d / "spec.json")
    return Setup(["prepare", "--conditioned", str(d / "spec.json"), "--out", str(d / "data"), *SMALL_SPLITS],
                 [d / "spec.json"], d / "data")


# ----------------------------------------------------------- prepare: warnings

@case("clipping", "prepare", "warning", "target clipped flat in many places", warnings=["clipping"])
def _(fx, d):
    xin, tgt = _pair(d, fx, target=lambda x, y: np.clip(4.0 * y, -1.0, 1.0), subtype="FLOAT")

    def verify(result):
        w = _manifest(result)["warnings"][0]
        if not (w["details"]["count"] > 5 and len(w["details"]["times_s"]) == min(100, w["details"]["count"])):
            return f"clipping details {w['details']}"
        if not re.search(r"clips in \d+ place\(s\) \(at \d+\.\d\d s", result.stderr):
            return "clipping warning without counts and times"
        return None
    return _prepare(xin, tgt, d / "data", verify=verify)


@case("dc_offset", "prepare", "warning", "target with a +0.05 DC offset", warnings=["dc_offset"])
def _(fx, d):
    xin, tgt = _pair(d, fx, target=lambda x, y: y + 0.05)

    def verify(result):
        m = _manifest(result)["warnings"][0]["details"]["mean"]
        return None if abs(m - 0.05) < 0.01 else f"dc mean {m}"
    return _prepare(xin, tgt, d / "data", verify=verify)


@case("bypass", "prepare", "warning", "target is the input at a lower level (bypass on)", warnings=["bypass"])
def _(fx, d):
    xin, tgt = _pair(d, fx, target=lambda x, y: 0.7 * x)

    def verify(result):
        return None if "bypassed" in result.stderr else "no bypass hint on stderr"
    return _prepare(xin, tgt, d / "data", verify=verify)


@case("inverted_polarity", "prepare", "warning", "target recorded with inverted polarity",
      warnings=["inverted_polarity"])
def _(fx, d):
    xin, tgt = _pair(d, fx, target=lambda x, y: -y)

    def verify(result):
        return None if "--flip-polarity" in result.stderr else "no --flip-polarity hint on stderr"
    return _prepare(xin, tgt, d / "data", verify=verify)


# ----------------------------------------------------------- prepare: accepted formats

def _accepted(name: str, what: str, subtype: str, suffix: str = ".wav", rate: int = RATE, extra=(),
              stereo: Optional[str] = None):
    @case(name, "prepare", "accepted", what)
    def _(fx, d):
        def tgt(x, y):
            if stereo == "same":
                return np.column_stack([y, y])
            if stereo == "differ":
                return np.column_stack([0.3 * x, y])
            return y

        def src(x):
            return np.column_stack([x, 0.3 * x]) if stereo == "differ" else x
        xin, t = _pair(d, fx, target=tgt, source=src, rate=rate, subtype=subtype,
                       names=(f"di{suffix}", f"amp{suffix}"))
        return _prepare(xin, t, d / "data", *extra,
                        verify=_verify_prepared(source_rate=rate, channels=2 if stereo else 1))


_accepted("wav_8bit", "8-bit unsigned WAV", "PCM_U8")
_accepted("wav_16bit", "16-bit WAV", "PCM_16")
_accepted("wav_24bit", "24-bit WAV", "PCM_24")
_accepted("wav_float", "32-bit float WAV", "FLOAT")
_accepted("flac_24bit", "24-bit FLAC", "PCM_24", suffix=".flac")
_accepted("rate_48k", "48 kHz material, resampled to 44.1 kHz", "PCM_24", rate=48000)
_accepted("stereo_same", "stereo files with identical channels", "PCM_16", stereo="same")
_accepted("stereo_channel", "stereo, channels differ, --channel 1", "PCM_16", stereo="differ",
          extra=("--channel", "1"))


@case("length_within_window", "prepare", "accepted", "target 0.1 s longer than the input (inside the window)")
def _(fx, d):
    xin, tgt = _pair(d, fx, target=lambda x, y: np.concatenate([y, np.zeros(RATE // 10)]))
    return _prepare(xin, tgt, d / "data", verify=_verify_prepared())


@case("flip_polarity", "prepare", "accepted", "inverted target with --flip-polarity: no warning")
def _(fx, d):
    xin, tgt = _pair(d, fx, target=lambda x, y: -y)
    return _prepare(xin, tgt, d / "data", "--flip-polarity", verify=_verify_prepared())


# ----------------------------------------------------------- train

def _train(fx: Fixtures, out: Path, *extra: str, data: Optional[Path] = None, sources=(), verify=None,
           may_write: bool = False) -> Setup:
    data = data or fx.data()
    return Setup(["train", "--data", str(data), "--out", str(out), *extra], [data, *sources], out,
                 verify=verify, may_write=may_write)


@case("train_ok", "train", "accepted", "tiny model, one epoch; writes train.log")
def _(fx, d):
    def verify(result):
        run = result.setup.out
        for name in ("config.json", "checkpoint.pt", "model_best.json", "model_last.json", "history.json",
                     "summary.json", "train.log"):
            if not (run / name).exists():
                return f"{name} missing"
        log = (run / "train.log").read_text().splitlines()
        if not (any(l.startswith("epoch    1") for l in log) and log[-1].startswith("done (max_epochs)")):
            return f"train.log does not record the epochs: {log}"
        return None
    return _train(fx, d / "run", *RUN_ARGS, verify=verify)


@case("train_rerun_complete", "train", "accepted", "same command on a finished run: nothing retrained")
def _(fx, d):
    run = _copy_tree_writable(fx.run(), d / "run")
    before = {n: (run / n).read_bytes() for n in ("checkpoint.pt", "history.json", "model_best.json",
                                                   "model_last.json", "summary.json")}

    def verify(result):
        changed = [n for n, b in before.items() if (run / n).read_bytes() != b]
        if changed:
            return f"{changed} changed"
        return None if "already complete" in result.stdout else "no 'already complete'"
    return _train(fx, run, *RUN_ARGS, verify=verify)


@case("train_no_data", "train", "error", "--data folder that does not exist",
      error=r"^error: \S*nodata: no such folder; run `ampxfer prepare --out \S*nodata` first$")
def _(fx, d):
    return Setup(["train", "--data", str(d / "nodata"), "--out", str(d / "run"), *RUN_ARGS], [], d / "run")


@case("train_not_prepared", "train", "error", "--data is a folder of recordings, not prepared data",
      error=r"^error: \S*rec: not a prepared data folder \(no manifest\.json\); run `ampxfer prepare` first$")
def _(fx, d):
    xin, tgt = _pair(d / "rec", fx)
    return _train(fx, d / "run", *RUN_ARGS, data=d / "rec", sources=[xin, tgt])


@case("train_data_damaged", "train", "error", "a prepared split file overwritten with text",
      error=r"^error: \S*train_target\.wav: missing or unreadable; prepare the data again$")
def _(fx, d):
    data = _copy_tree_writable(fx.data(), d / "data")
    (data / "train_target.wav").write_text("oops")
    make_read_only(data)
    return _train(fx, d / "run", *RUN_ARGS, data=data)


@case("train_data_nan", "train", "error", "a prepared split file holding NaN samples",
      error=r"^error: \S*val_target\.wav: \d+ NaN or infinite samples; prepare the data again$")
def _(fx, d):
    import soundfile as sf

    data = _copy_tree_writable(fx.data(), d / "data")
    y, rate = sf.read(str(data / "val_target.wav"), dtype="float32")
    y[100:110] = np.nan
    (data / "val_target.wav").unlink()
    sf.write(str(data / "val_target.wav"), y, rate, subtype="FLOAT")
    make_read_only(data)
    return _train(fx, d / "run", *RUN_ARGS, data=data)


@case("init_hidden_mismatch", "train", "error", "--init-from a hidden-4 model with --hidden-size 6",
      error=r"^error: \S*h4\.json: hidden size 4 cannot start a hidden-6 model; use --hidden-size 4 or another "
            r"starting model$")
def _(fx, d):
    m = fx.model()
    return _train(fx, d / "run", "--init-from", str(m), "--hidden-size", "6", "--max-epochs", "1", sources=[m])


@case("init_run_hidden_mismatch", "train", "error", "--init-from a hidden-4 run folder with --hidden-size 8",
      error=r"^error: \S*shared_run: hidden size 4 cannot start a hidden-8 model; use --hidden-size 4")
def _(fx, d):
    run = fx.run()
    return _train(fx, d / "run", "--init-from", str(run), "--hidden-size", "8", "--max-epochs", "1",
                  sources=[run])


for _kind, _msg in (("gru", r"gru\.json: a 'GRU' model; ampxfer trains and plays LSTM models only"),
                    ("wavenet", r"wavenet\.json: a WaveNet \(PedalNetRT\) model: ampxfer trains LSTM models only"),
                    ("rtneural", r"rtneural\.json: an RTNeural/AIDA-X file: convert it first with `ampxfer import "),
                    ("truncated", r"truncated\.json: not valid JSON \(.*\); the file is truncated or not a model")):
    def _init_foreign(fx, d, _kind=_kind):
        m = fx.foreign_model(_kind)
        return _train(fx, d / "run", "--init-from", str(m), "--max-epochs", "1", sources=[m])
    case(f"init_{_kind}", "train", "error", f"--init-from a {_kind} model file",
         error=r"^error: \S*" + _msg)(_init_foreign)


@case("init_knob_model", "train", "error", "--init-from a 1-knob model on snapshot data",
      error=r"^error: \S*knob1\.json: takes 1 knob\(s\) but the data have 0; start from a snapshot model or one "
            r"with the same knobs$")
def _(fx, d):
    m = fx.model("knob1.json", input_size=2)
    return _train(fx, d / "run", "--init-from", str(m), "--max-epochs", "1", sources=[m])


@case("init_rate_mismatch", "train", "warning", "--init-from a 48 kHz model on 44.1 kHz data: trained on at 44.1 kHz",
      warnings=["init_rate"])
def _(fx, d):
    m = fx.model("h4_48k.json", rate=48000)

    def verify(result):
        from ampxfer_lib.model.formats import load_model

        rate = load_model(result.setup.out / "model_best.json").config.sample_rate
        if rate != RATE:
            return f"model_best.json at {rate} Hz"
        return None if "warning: " in (result.setup.out / "train.log").read_text() else "warning not in train.log"
    return _train(fx, d / "run", "--init-from", str(m), "--max-epochs", "1", sources=[m], verify=verify)


@case("train_data_warnings", "train", "warning", "training on data prepared with a warning repeats it",
      warnings=["clipping"])
def _(fx, d):
    xin, tgt = _pair(d / "rec", fx, target=lambda x, y: np.clip(4.0 * y, -1.0, 1.0), subtype="FLOAT")
    _api_prepare(xin, tgt, d / "data")
    make_read_only(d / "data")
    return _train(fx, d / "run", *RUN_ARGS, data=d / "data", sources=[xin, tgt])


@case("init_is_out", "train", "error", "--out is the --init-from run folder, with --overwrite",
      error=r"^error: \S*run: is the --init-from run; train into another --out")
def _(fx, d):
    run = _copy_tree_writable(fx.run(), d / "run")
    return _train(fx, run, "--init-from", str(run), "--max-epochs", "2", "--overwrite")


@case("train_different_run", "train", "error", "--out holds a run with other settings, no --overwrite",
      error=r"^error: \S*run: holds a different run \(lr 0\.01 -> 0\.001, finetune_lr 0\.005 -> None\); use another "
            r"--out, or --overwrite "
            r"to replace it$")
def _(fx, d):
    run = _copy_tree_writable(fx.run(), d / "run")
    return _train(fx, run, *RUN_ARGS, "--lr", "0.001")


@case("train_other_data", "train", "error", "--out holds a run trained on other data",
      error=r"^error: \S*run: holds a different run \(the prepared data changed\); use another --out")
def _(fx, d):
    run = _copy_tree_writable(fx.run(), d / "run")
    xin, tgt = _pair(d / "rec", fx, target=lambda x, y: 0.5 * y)
    from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare

    prepare([CaptureSpec((str(xin),), (str(tgt),))], d / "data2",
            PrepareConfig(val_seconds=1.5, test_seconds=1.0, limited_seconds=2.0))
    make_read_only(d / "data2")
    return _train(fx, run, *RUN_ARGS, data=d / "data2", sources=[xin, tgt])


@case("train_out_other_files", "train", "error", "--out folder holding the user's own files",
      error=r"^error: \S*mine: the folder holds other files \(notes\.txt, \.\.\.\); choose a new --out folder")
def _(fx, d):
    (d / "mine").mkdir()
    (d / "mine" / "notes.txt").write_text("keep me")
    return _train(fx, d / "mine", *RUN_ARGS, "--overwrite")


@case("train_out_under_file", "train", "error", "--out inside a file, not a folder",
      error=r"^error: \S*notes\.txt\S*: cannot (create|write)")
def _(fx, d):
    (d / "notes.txt").write_text("x")
    return _train(fx, d / "notes.txt" / "run", *RUN_ARGS)


@case("train_damaged_checkpoint", "train", "error", "resume with a truncated checkpoint.pt",
      error=r"^error: \S*checkpoint\.pt: unreadable checkpoint \(\w+\); delete it to restart the run, or pass "
            r"--overwrite$")
def _(fx, d):
    run = _copy_tree_writable(fx.run(), d / "run")
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    return _train(fx, run, *RUN_ARGS)


@case("train_damaged_config", "train", "error", "a run folder whose config.json was cut short",
      error=r"^error: \S*config\.json: unreadable or damaged JSON; restore it or rerun with --overwrite$")
def _(fx, d):
    run = _copy_tree_writable(fx.run(), d / "run")
    text = (run / "config.json").read_text()
    (run / "config.json").write_text(text[:40])
    return _train(fx, run, *RUN_ARGS)


@case("train_segment_too_long", "train", "error", "segments longer than the training audio",
      error=r"^error: \S*shared_data: the training audio \(5\.\d s\) is shorter than one 30 s segment; ")
def _(fx, d):
    return _train(fx, d / "run", *RUN_ARGS, "--set", "segment_seconds=30")


def _verify_diverged(init: Optional[Path]):
    def verify(result):
        from ampxfer_lib.model.formats import load_model

        run = result.setup.out
        summary = json.loads((run / "summary.json").read_text())
        if summary["status"] != "diverged":
            return f"status {summary['status']}"
        for name in ("model_best.json", "model_last.json"):
            if (run / name).exists():
                load_model(run / name)  # raises on NaN weights
        if init is not None:
            # the starting model as the run began: its LSTM as it is, its dense layer matched to
            # the data's level (the default recipe's match_level)
            kept, start = load_model(run / "model_best.json"), load_model(init)
            if any(not np.array_equal(kept.params[k], start.params[k]) for k in kept.params if k.startswith("rec.")):
                return "model_best.json is not the starting model"
        elif (run / "model_best.json").exists():
            return "a model_best.json without any validated epoch"
        json.loads((run / "history.json").read_text())
        if "error:" not in (run / "train.log").read_text():
            return "train.log does not record the error"
        return None
    return verify


@case("train_diverged", "train", "error", "--lr 1e30: the loss becomes NaN in epoch 1",
      error=r"^error: \S*run: the training loss became nan at epoch 1; no epoch was validated before, so there "
            r"is no model to keep\. Try a lower --lr or --grad-clip 1$")
def _(fx, d):
    return _train(fx, d / "run", *RUN_ARGS, "--lr", "1e30", verify=_verify_diverged(None), may_write=True)


@case("train_diverged_init", "train", "error", "--init-from a model, --lr 1e30: the starting model is kept",
      error=r"^error: \S*run: the training loss became nan at epoch 1; the best model so far \(the starting "
            r"model\) is kept in model_best\.json\. Try a lower --lr or --grad-clip 1$")
def _(fx, d):
    m = fx.model()
    return _train(fx, d / "run", "--init-from", str(m), "--max-epochs", "1", "--lr", "1e30", sources=[m],
                  verify=_verify_diverged(m), may_write=True)


@case("train_diverged_rerun", "train", "error", "the same command again on a run that diverged",
      error=r"^error: \S*run: this run stopped earlier because its loss diverged; no epoch was validated before, so "
            r"there is no model to keep\. Rerun with --overwrite and a lower --lr or --grad-clip 1$")
def _(fx, d):
    from ampxfer_lib.cli.main import main

    argv = ["train", "--data", str(fx.data()), "--out", str(d / "run"), *RUN_ARGS, "--lr", "1e30"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 2
    return Setup(argv[:], [fx.data()], d / "run")


# ----------------------------------------------------------- render

def _render(model: Path, xin: Path, out: Path, *extra: str, sources=(), verify=None) -> Setup:
    return Setup(["render", "--model", str(model), "--input", str(xin), "--out", str(out), *extra],
                 [model, xin, *sources], out, verify=verify)


def _di(fx: Fixtures, d: Path, name: str = "di.wav", rate: int = RATE, subtype: str = "PCM_24",
        seconds: float = 2.0, transform=None) -> Path:
    x = fx.di(seconds, rate, seed=3)
    p = write_audio_file(d / name, transform(x) if transform else x, rate, subtype)
    make_read_only(p)
    return p


def _verify_render(seconds: float = 2.0, rate: int = RATE):
    def verify(result):
        import soundfile as sf

        y, r = sf.read(str(result.setup.out), dtype="float32")
        if r != rate or abs(len(y) - seconds * rate) > 1:
            return f"rendered {len(y)} samples at {r} Hz"
        return None if np.all(np.isfinite(y)) and np.max(np.abs(y)) > 0.01 else "rendered audio not plausible"
    return verify


@case("render_ok_48k", "render", "accepted", "48 kHz DI through a 44.1 kHz model (resampled)")
def _(fx, d):
    return _render(fx.model(), _di(fx, d, rate=48000), d / "out.wav", verify=_verify_render())


@case("render_ok_8bit", "render", "accepted", "8-bit WAV DI through a model")
def _(fx, d):
    return _render(fx.model(), _di(fx, d, subtype="PCM_U8"), d / "out.wav", verify=_verify_render())


@case("render_ok_flac_run", "render", "accepted", "16-bit FLAC DI through a run folder's model")
def _(fx, d):
    run = fx.run()
    return _render(run, _di(fx, d, "di.flac", subtype="PCM_16"), d / "out.flac", verify=_verify_render())


@case("render_model_missing", "render", "error", "--model path that does not exist",
      error=r"^error: \S*nomodel\.json: no such file; check the path$")
def _(fx, d):
    return _render(d / "nomodel.json", _di(fx, d), d / "out.wav")


for _kind, _msg in (("gru", r"gru\.json: a 'GRU' model; ampxfer trains and plays LSTM models only"),
                    ("wavenet", r"wavenet\.json: a WaveNet \(PedalNetRT\) model"),
                    ("rtneural", r"rtneural\.json: an RTNeural/AIDA-X file: convert it first with `ampxfer import "),
                    ("truncated", r"truncated\.json: not valid JSON \(.*\); the file is truncated or not a model"),
                    ("empty", r"empty\.json: empty file; the model was not saved completely"),
                    ("binary", r"binary\.json: not a text file; expected a JSON model")):
    def _render_foreign(fx, d, _kind=_kind):
        return _render(fx.foreign_model(_kind), _di(fx, d), d / "out.wav")
    case(f"render_{_kind}", "render", "error", f"--model is a {_kind} file", error=r"^error: \S*" + _msg)(
        _render_foreign)


@case("render_input_not_audio", "render", "error", "--input is a text file",
      error=r"^error: \S*take\.wav: not an audio file ampxfer can read .*; export the input as WAV or FLAC$")
def _(fx, d):
    (d / "take.wav").write_text("not audio")
    make_read_only(d / "take.wav")
    return _render(fx.model(), d / "take.wav", d / "out.wav")


@case("render_input_missing", "render", "error", "--input that does not exist",
      error=r"^error: \S*nodi\.wav: no such file; check the input path$")
def _(fx, d):
    return _render(fx.model(), d / "nodi.wav", d / "out.wav")


@case("render_input_empty", "render", "error", "--input of 0 bytes",
      error=r"^error: \S*di\.wav: the file is empty \(0 bytes\)")
def _(fx, d):
    (d / "di.wav").write_bytes(b"")
    make_read_only(d / "di.wav")
    return _render(fx.model(), d / "di.wav", d / "out.wav")


@case("render_input_zero_length", "render", "error", "--input with a header and no samples",
      error=r"^error: \S*di\.wav: contains no audio \(zero length\)")
def _(fx, d):
    return _render(fx.model(), _di(fx, d, transform=lambda x: x[:0]), d / "out.wav")


@case("render_input_nan", "render", "error", "--input float WAV holding NaN samples",
      error=r"^error: \S*di\.wav: 5 NaN or infinite samples \(first at 0\.500 s\); the file is damaged: export "
            r"the input again")
def _(fx, d):
    def poison(x):
        x = x.copy()
        x[RATE // 2:RATE // 2 + 5] = np.nan
        return x
    return _render(fx.model(), _di(fx, d, subtype="FLOAT", transform=poison), d / "out.wav")


@case("render_stereo_differs", "render", "error", "stereo --input with different channels, no --channel",
      error=r"^error: \S*di\.wav: is 2-channel and the channels differ; choose the one that holds the input with "
            r"--channel N")
def _(fx, d):
    return _render(fx.model(), _di(fx, d, transform=lambda x: np.column_stack([x, 0.2 * x[::-1]])),
                   d / "out.wav")


@case("render_knob_missing", "render", "error", "1-knob model rendered without --knob",
      error=r"^error: \S*knob1\.json: the model takes 1 knob value\(s\) but 0 were given; pass --knob V for each "
            r"knob \(0\.\.1\)$")
def _(fx, d):
    return _render(fx.model("knob1.json", input_size=2), _di(fx, d), d / "out.wav")


@case("render_out_exists", "render", "error", "--out exists, no --overwrite",
      error=r"^error: \S*mix\.wav: exists; choose another --out or pass --overwrite$")
def _(fx, d):
    write_audio_file(d / "mix.wav", np.zeros(100))
    return _render(fx.model(), _di(fx, d), d / "mix.wav")


@case("render_out_is_input", "render", "error", "--out is the input recording (with --overwrite)",
      error=r"^error: \S*di\.wav: is the input recording; choose another --out$")
def _(fx, d):
    xin = _di(fx, d)
    return _render(fx.model(), xin, xin, "--overwrite")


@case("render_out_bad_ext", "render", "error", "--out with an .mp3 name",
      error=r"^error: \S*out\.mp3: the output must end in \.wav or \.flac$")
def _(fx, d):
    return _render(fx.model(), _di(fx, d), d / "out.mp3")


# ----------------------------------------------------------- evaluate

def _evaluate(fx: Fixtures, model: Path, data: Optional[Path] = None, sources=(), verify=None) -> Setup:
    data = data or fx.data()
    return Setup(["evaluate", "--model", str(model), "--data", str(data), "--json"], [model, data, *sources],
                 None, verify=verify)


@case("evaluate_ok", "evaluate", "accepted", "the shared run's model on its data")
def _(fx, d):
    def verify(result):
        esr = json.loads(result.stdout)["test_esr"]
        want = json.loads((fx.run() / "summary.json").read_text())["test_esr"]
        return None if abs(esr - want) <= 1e-4 * want else f"test ESR {esr} != summary {want}"
    return _evaluate(fx, fx.run(), verify=verify)


@case("evaluate_knob_model", "evaluate", "error", "a 1-knob model on snapshot data",
      error=r"^error: \S*knob1\.json: takes 1 knob input\(s\) but the data in \S*shared_data have 0; use a model "
            r"trained on data of this kind$")
def _(fx, d):
    return _evaluate(fx, fx.model("knob1.json", input_size=2))


@case("evaluate_rate_mismatch", "evaluate", "error", "a 48 kHz model on 44.1 kHz data",
      error=r"^error: \S*h4_48k\.json: runs at 48000 Hz but the data in \S*shared_data are at 44100 Hz; "
            r"prepare the data with --rate 48000$")
def _(fx, d):
    return _evaluate(fx, fx.model("h4_48k.json", rate=48000))


@case("evaluate_wavenet", "evaluate", "error", "a WaveNet model file",
      error=r"^error: \S*wavenet\.json: a WaveNet \(PedalNetRT\) model: ampxfer trains LSTM models only$")
def _(fx, d):
    return _evaluate(fx, fx.foreign_model("wavenet"))


@case("evaluate_no_data", "evaluate", "error", "--data folder that does not exist",
      error=r"^error: \S*nodata: no such folder; run `ampxfer prepare")
def _(fx, d):
    return _evaluate(fx, fx.model(), data=d / "nodata")


# ----------------------------------------------------------- export / import

def same_network(a, b) -> Optional[str]:
    """None when two ModelWeights compute the same function (biases may be split differently)."""
    if a.config != b.config:
        return f"config {a.config} != {b.config}"
    for name in ("weight_ih", "weight_hh", "head_weight"):
        if not np.array_equal(getattr(a, name), getattr(b, name)):
            return f"{name} differs"
    if not (np.allclose(a.bias, b.bias, rtol=0, atol=1e-6) and a.head_bias == b.head_bias):
        return "biases differ"
    return None


def _export(model: Path, out: Path, fmt: str, *extra: str, verify=None) -> Setup:
    return Setup(["export", "--model", str(model), "--format", fmt, "--out", str(out), *extra], [model], out,
                 verify=verify)


def _import(model: Path, out: Path, *extra: str, verify=None) -> Setup:
    return Setup(["import", "--model", str(model), "--out", str(out), *extra], [model], out, verify=verify)


@case("export_ok", "export", "accepted", "AIDA-X export of the shared run")
def _(fx, d):
    def verify(result):
        from ampxfer_lib.model.formats import import_model, load_model

        return same_network(import_model(result.setup.out), load_model(fx.run() / "model_best.json"))
    return _export(fx.run(), d / "aidax.json", "aidax", verify=verify)


for _kind, _msg in (("gru", r"gru\.json: a 'GRU' model"),
                    ("truncated", r"truncated\.json: not valid JSON"),
                    ("rtneural", r"rtneural\.json: an RTNeural/AIDA-X file: convert it first with `ampxfer import ")):
    def _export_foreign(fx, d, _kind=_kind):
        return _export(fx.foreign_model(_kind), d / "out.json", "neuralpi")
    case(f"export_{_kind}", "export", "error", f"--model is a {_kind} file", error=r"^error: \S*" + _msg)(
        _export_foreign)


@case("export_nam_skip", "export", "error", "NAM export of a model with a skip connection",
      error=r"^error: \S*h4\.json: has a skip connection .*; train the model with --no-skip to export it to NAM")
def _(fx, d):
    return _export(fx.model(), d / "out.nam", "nam")


@case("export_knob_count", "export", "error", "--knob on a snapshot model",
      error=r"^error: \S*h4\.json: the model has 0 knob\(s\) but 1 --knob value\(s\) were given$")
def _(fx, d):
    return _export(fx.model(), d / "out.json", "neuralpi", "--knob", "0.5")


@case("export_out_exists", "export", "error", "--out exists, no --overwrite",
      error=r"^error: \S*out\.json: exists; choose another --out or pass --overwrite$")
def _(fx, d):
    (d / "out.json").write_text("{}")
    return _export(fx.model(), d / "out.json", "neuralpi")


@case("import_ok", "import", "accepted", "an AIDA-X/RTNeural file back to AGAM JSON")
def _(fx, d):
    def verify(result):
        from ampxfer_lib.model.formats import load_model

        return same_network(load_model(result.setup.out), load_model(fx.model()))
    return _import(fx.foreign_model("rtneural"), d / "m.json", verify=verify)


for _kind, _msg in (("wavenet", r"wavenet\.json: a WaveNet \(PedalNetRT\) model; ampxfer converts LSTM models only"),
                    ("gru", r"gru\.json: a 'GRU' model"),
                    ("truncated", r"truncated\.json: not valid JSON"),
                    ("empty", r"empty\.json: empty file"),
                    ("binary", r"binary\.json: not a text file")):
    def _import_foreign(fx, d, _kind=_kind):
        return _import(fx.foreign_model(_kind), d / "m.json")
    case(f"import_{_kind}", "import", "error", f"--model is a {_kind} file", error=r"^error: \S*" + _msg)(
        _import_foreign)


@case("import_missing", "import", "error", "--model that does not exist",
      error=r"^error: \S*nothere\.nam: no such file; check the path$")
def _(fx, d):
    return _import(d / "nothere.nam", d / "m.json")


# ----------------------------------------------------------- notebooks (Python API)

def _api_prepare(xin: Path, tgt: Path, out: Path, **settings):
    from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare

    cfg = PrepareConfig(val_seconds=1.5, test_seconds=1.0, limited_seconds=2.0, **settings)
    return prepare([CaptureSpec((str(xin),), (str(tgt),))], out, cfg)


@case("notebook_prepare_ok", "notebook", "accepted", "data.prepare() on a good pair")
def _(fx, d):
    xin, tgt = _pair(d, fx)
    return Setup([], [xin, tgt], d / "data", call=(_api_prepare, dict(xin=xin, tgt=tgt, out=d / "data")),
                 verify=_verify_prepared())


@case("notebook_prepare_rate_mismatch", "notebook", "error", "data.prepare() with 48 kHz input, 44.1 kHz target",
      error=r"^error: \S*amp\.wav: recorded at 44100 Hz but the input \S*di\.wav is at 48000 Hz")
def _(fx, d):
    xin, tgt = _pair(d, fx, rate=48000, target_rate=44100)
    return Setup([], [xin, tgt], d / "data", call=(_api_prepare, dict(xin=xin, tgt=tgt, out=d / "data")))


@case("notebook_prepare_silent", "notebook", "error", "data.prepare() with a silent target",
      error=r"^error: \S*amp\.wav: the target is silent")
def _(fx, d):
    xin, tgt = _pair(d, fx, target=lambda x, y: np.zeros_like(y))
    return Setup([], [xin, tgt], d / "data", call=(_api_prepare, dict(xin=xin, tgt=tgt, out=d / "data")))


@case("notebook_prepare_stereo", "notebook", "error", "data.prepare() with a 2-channel target",
      error=r"^error: \S*amp\.wav: is 2-channel and the channels differ")
def _(fx, d):
    xin, tgt = _pair(d, fx, target=lambda x, y: np.column_stack([y, 0.5 * x]))
    return Setup([], [xin, tgt], d / "data", call=(_api_prepare, dict(xin=xin, tgt=tgt, out=d / "data")))


def _api_train(data: Path, out: Path, **settings):
    from ampxfer_lib.training.config import make_config
    from ampxfer_lib.training.loop import train

    return train(make_config(data, **settings), out)


@case("notebook_train_ok", "notebook", "accepted", "train.train() as a notebook calls it: keeps train.log too")
def _(fx, d):
    def verify(result):
        log = (result.setup.out / "train.log").read_text()
        return None if "epoch    1" in log and "done (max_epochs)" in log else f"train.log: {log!r}"
    return Setup([], [fx.data()], d / "run", call=(_api_train, dict(data=fx.data(), out=d / "run", **RUN_SETTINGS)),
                 verify=verify)


@case("notebook_train_init_mismatch", "notebook", "error", "train.train() from a hidden-4 model with hidden_size 6",
      error=r"^error: \S*h4\.json: hidden size 4 cannot start a hidden-6 model; use --hidden-size 4")
def _(fx, d):
    m = fx.model()
    return Setup([], [fx.data(), m], d / "run", call=(_api_train, dict(data=fx.data(), out=d / "run", init_from=str(m),
                                                                        hidden_size=6, max_epochs=1)))


def _api_sample_data(root: Path):
    from ampxfer_lib.sample_data.files import ensure_sample_data

    return ensure_sample_data(root, progress=False, devices=[])


@case("notebook_sample_data_damaged", "notebook", "error", "sample_data with a damaged di.flac",
      error=r"^error: \S*di\.flac: (the sample DI differs from the reference|cannot be read as audio) .*"
            r"restore it with `git checkout -- sample_data/di\.flac`")
def _(fx, d):
    from ampxfer_lib.sample_data.files import CHECKSUMS_NAME, DI_NAME, CHECKOUT_SAMPLE_DIR

    root = d / "sample"
    root.mkdir()
    shutil.copyfile(CHECKOUT_SAMPLE_DIR / CHECKSUMS_NAME, root / CHECKSUMS_NAME)
    x = fx.di(2.0, 48000)
    write_audio_file(root / DI_NAME, x, 48000, "PCM_16")
    make_read_only(root)
    return Setup([], [root], None, call=(_api_sample_data, dict(root=root)))


from tests.support import faults_inputs  # noqa: E402,F401  (issue 13 classes 3-5: registers its cases)


# --------------------------------------------------------------------------- running

def _snapshot(path: Optional[Path]) -> Optional[Dict[str, str]]:
    """sha256 of every file under ``path`` (or of ``path`` itself); None when absent."""
    if path is None or not path.exists():
        return None
    if path.is_file():
        return {".": sha256_file(path)}
    return {str(f.relative_to(path)): sha256_file(f) for f in sorted(path.rglob("*")) if f.is_file()}


def _source_state(paths: Sequence[Path]) -> Dict[str, Tuple[str, int, int]]:
    state = {}
    for p in paths:
        p = Path(p)
        if not p.exists():
            continue
        files = [f for f in sorted(p.rglob("*")) if f.is_file()] if p.is_dir() else [p]
        for f in files:
            st = f.stat()
            state[str(f)] = (sha256_file(f), st.st_mtime_ns, stat.S_IMODE(st.st_mode))
    return state


class WriteGuard:
    """Records every attempt of this process to open a source for writing, replace, remove,
    truncate or chmod it (Python's audit events; the C library soundfile uses opens read-only
    by its mode). Works even as root, where read-only permissions do not stop a write."""

    _installed = False
    _active: Optional["WriteGuard"] = None
    _EVENTS = {"open", "os.remove", "os.rename", "os.replace", "os.truncate", "os.chmod", "shutil.rmtree",
               "os.rmdir", "os.unlink"}

    def __init__(self, sources: Sequence[Path]):
        self.files = set()
        self.dirs = []
        for p in sources:
            p = Path(p)
            if p.is_dir():
                self.dirs.append(os.path.realpath(p) + os.sep)
                self.files.update(os.path.realpath(f) for f in p.rglob("*") if f.is_file())
            elif p.exists():
                self.files.add(os.path.realpath(p))
        self.violations: List[str] = []

    def _hit(self, path) -> bool:
        try:
            real = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return False
        return real in self.files

    @staticmethod
    def _hook(event, args):
        guard = WriteGuard._active
        if guard is None or event not in WriteGuard._EVENTS:
            return
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            if isinstance(path, int) or path is None:
                return
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND))
            if writing and guard._hit(path):
                guard.violations.append(f"open({path!r}, {mode!r})")
        else:
            for a in args[:2]:
                if isinstance(a, (str, bytes, os.PathLike)) and guard._hit(a):
                    guard.violations.append(f"{event}({a!r})")

    def __enter__(self):
        if not WriteGuard._installed:
            sys.addaudithook(WriteGuard._hook)
            WriteGuard._installed = True
        WriteGuard._active = self
        return self

    def __exit__(self, *exc):
        WriteGuard._active = None
        return False


def _run_call(call) -> Tuple[int, str, str]:
    """The notebooks' path: call the library function; an AmpxferError is shown as one line."""
    from ampxfer_lib.errors import AmpxferError

    fn, kwargs = call
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            fn(**kwargs)
            code = 0
        except AmpxferError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = exc.exit_code
    return code, out.getvalue(), err.getvalue()


def run_inprocess(argv: Sequence[str], debug: bool = False) -> Tuple[int, str, str]:
    """``cli.main(argv)`` with stdout and stderr captured."""
    from ampxfer_lib.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main((["--debug"] if debug else []) + list(argv))
    return code, out.getvalue(), err.getvalue()


def run_subprocess(argv: Sequence[str], debug: bool = False, timeout: float = 300.0,
                   env: Optional[dict] = None) -> Tuple[int, str, str]:
    """``python -m ampxfer_lib ARGV`` in a fresh interpreter (one thread, like a training run)."""
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = str(repo) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "ampxfer_lib", *(["--debug"] if debug else []), *argv],
                          capture_output=True, text=True, timeout=timeout, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def run_case(c: Case, fx: Fixtures, folder: Path, mode: str = "inprocess") -> Result:
    """Build the case's fixtures in ``folder`` and run it (``inprocess`` or ``subprocess``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    setup = c.build(fx, folder)
    sources = _source_state(setup.sources)
    out_before = _snapshot(setup.out)
    with WriteGuard(setup.sources) as guard:
        if setup.call is not None:
            code, out, err = _run_call(setup.call)
        elif mode == "subprocess":
            code, out, err = run_subprocess(setup.argv)
        else:
            code, out, err = run_inprocess(setup.argv)
    result = Result(code, out, err, setup, sources, out_before, list(guard.violations))
    return result


def _warning_codes(setup: Setup) -> List[str]:
    """Warning codes recorded by the command: a data folder's manifest, a run's config.json."""
    if setup.out is None or not setup.out.is_dir():
        return []
    for name in ("manifest.json", "config.json"):
        if (setup.out / name).is_file():
            try:
                return sorted(w["code"] for w in json.loads((setup.out / name).read_text()).get("warnings", []))
            except (OSError, ValueError, KeyError, AttributeError):
                return []
    return []


def _output_changed(before: Optional[Dict[str, str]], after: Optional[Dict[str, str]]) -> Optional[str]:
    """On an error the output must be as it was, apart from a log (an absent one stays absent)."""
    if before is None:
        if after is None:
            return None
        extra = sorted(set(after) - set(ALLOWED_ON_ERROR))
        return f"the output was created on error ({extra[:4] or 'an empty folder'})" if extra or not after else None
    after = after or {}
    changed = sorted(k for k in set(after) | set(before) if after.get(k) != before.get(k) and k not in ALLOWED_ON_ERROR)
    return f"the output changed on error: {changed[:4]}" if changed else None


def check_result(c: Case, result: Result) -> List[str]:
    """Problems with a case's result: empty when it gave the expected answer."""
    problems: List[str] = []
    exp, setup = c.expected, result.setup
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    if result.code != exp.code:
        problems.append(f"exit {result.code}, expected {exp.code}")
    if "Traceback" in result.stderr or "Traceback" in result.stdout:
        problems.append("a traceback was printed")
    if c.kind == "error":
        if len(lines) != 1:
            problems.append(f"{len(lines)} stderr lines, expected one: {lines[:3]}")
        if not lines or not re.search(exp.error, lines[-1]):
            problems.append(f"error line {lines[-1] if lines else None!r} does not match {exp.error!r}")
        if not setup.may_write:
            problem = _output_changed(result.out_before, _snapshot(setup.out))
            if problem:
                problems.append(problem)
    else:
        bad = [l for l in lines if not l.startswith("warning: ")]
        if bad:
            problems.append(f"unexpected stderr: {bad[:3]}")
        got = tuple(_warning_codes(setup))
        if got != exp.warnings:
            problems.append(f"warnings {list(got)}, expected {list(exp.warnings)}")
        if setup.out is not None and setup.out.is_dir() and len([l for l in lines if l.startswith("warning: ")]) != len(got):
            problems.append("each manifest warning must be printed once")
    if result.code == exp.code and setup.verify is not None:
        try:
            why = setup.verify(result)
        except Exception as exc:  # a failed check is a finding, not a crash of the catalogue
            why = f"check failed: {type(exc).__name__}: {exc}"
        if why:
            problems.append(why)
    after_sources = _source_state(setup.sources)
    changed = sorted(k for k in result.source_hashes_before if after_sources.get(k) != result.source_hashes_before[k])
    if changed:
        problems.append(f"source files changed: {changed[:3]}")
    if result.write_opens:
        problems.append(f"sources opened for writing: {result.write_opens[:3]}")
    return problems


def cases(entry: Optional[str] = None) -> List[Case]:
    return [c for c in CASES if entry is None or c.entry == entry]


# --------------------------------------------------------------------------- kill and resume

#: Files a resumed run must reproduce byte for byte (history.json: apart from its clock readings).
RESUME_FILES = ("model_best.json", "model_last.json")


def resume_argv(data: Path, out: Path, seed: int = 0, hidden: int = 6, epochs: int = 3,
                batch_size: int = 4) -> List[str]:
    """A small training command that checkpoints at every batch boundary (several per epoch)."""
    return ["train", "--data", str(data), "--out", str(out), "--hidden-size", str(hidden), "--max-epochs",
            str(epochs), "--seed", str(seed), "--threads", "1", "--set", f"batch_size={batch_size}",
            "--set", "checkpoint_seconds=0", "--progress", "none"]


def strip_elapsed(history: list) -> list:
    """History without its clock readings (elapsed_s, cpu_s), which no two runs share."""
    return [{k: v for k, v in h.items() if k not in ("elapsed_s", "cpu_s")} for h in history]


def compare_runs(reference: Path, run: Path) -> List[str]:
    """Differences between a resumed run and an uninterrupted one (empty: identical)."""
    problems = []
    for name in ("history.json", "summary.json", *RESUME_FILES):
        if not (run / name).is_file():
            problems.append(f"{name} missing")
    if problems:
        return problems
    if strip_elapsed(json.loads((run / "history.json").read_text())) != strip_elapsed(
            json.loads((reference / "history.json").read_text())):
        problems.append("history.json differs (elapsed_s aside)")
    for name in RESUME_FILES:
        if (run / name).read_bytes() != (reference / name).read_bytes():
            problems.append(f"{name} differs")
    a = json.loads((run / "summary.json").read_text())
    b = json.loads((reference / "summary.json").read_text())
    for key in ("best_val_loss", "best_epoch", "epochs", "test_esr", "status", "stop_reason"):
        if a.get(key) != b.get(key):
            problems.append(f"summary {key} {a.get(key)} != {b.get(key)}")
    leftovers = sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp"))
    if leftovers:
        problems.append(f"temporary files left: {leftovers}")
    return problems


def kill_during(argv: Sequence[str], out: Path, delay: float, cwd: Optional[Path] = None,
                env: Optional[dict] = None, timeout: float = 300.0) -> bool:
    """Run ``python -m ampxfer_lib ARGV`` (a training run into ``out``) and SIGKILL it ``delay``
    seconds after it has started training (its train.log grew: the run folder was accepted,
    restored if resuming, and the epochs begin). Returns False when it ended before that."""
    import signal
    import time

    log = Path(out) / "train.log"
    size0 = log.stat().st_size if log.exists() else 0
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = str(repo) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen([sys.executable, "-m", "ampxfer_lib", *argv], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + timeout
    while proc.poll() is None and not (log.exists() and log.stat().st_size > size0):
        if time.monotonic() > end:
            proc.kill()
            raise TimeoutError(f"{argv}: no training after {timeout} s")
        time.sleep(0.002)
    deadline = time.monotonic() + delay
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


from tests.support import faults_folders  # noqa: E402,F401  (issue 13's folder cases join CASES)
