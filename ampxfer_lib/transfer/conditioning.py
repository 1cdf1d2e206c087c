"""Knob-conditioned data sets without a studio: play a DI through a device at several knob values.

A knob-conditioned capture is several recordings of one device at different knob settings
(``prepare --conditioned SPEC.json``). When the "device" is itself a conditioned model (a
real-gear NeuralPi capture with a knob input, or a virtual pedal), the recordings can be
rendered instead of recorded. This module builds such sets the same way for the notebook,
the benchmark and the tests:

* :func:`di_excerpt` cuts a DI from several clips and arranges it so that the validation and
  test parts of every capture hold a little of every clip (prepare takes them from the end);
* :func:`render_knob_captures` plays it through a model at each knob value and writes the
  audio and the conditioned spec JSON;
* :func:`virtual_drive` is a small stand-in drive pedal with a gain knob, used when neither
  the real-gear models nor the sample data are at hand (CI);
* :func:`knob_table` turns ``evaluate()``'s per-capture results into rows per knob value.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ampxfer_lib.errors import ConfigError
from ampxfer_lib.fileio import PathLike, atomic_write_json
from ampxfer_lib.paths import realdata_dir

if TYPE_CHECKING:
    from ampxfer_lib.model.weights import ModelWeights

Knobs = Union[float, Sequence[float]]


@dataclass
class DIExcerpt:
    """A DI arranged as [training parts][validation parts][test parts], each part from every clip.

    ``audio`` is (T,) float32 at ``rate``; prepare with ``val_seconds`` and ``test_seconds``
    to cut exactly at the part boundaries.
    """

    audio: np.ndarray
    rate: int
    val_seconds: float
    test_seconds: float
    sources: List[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.rate


def di_excerpt(paths: Sequence[PathLike], rate: int = 44100, seconds_per_clip: Optional[float] = None,
               skip_seconds: float = 0.5, val_fraction: float = 0.15, test_fraction: float = 0.15) -> DIExcerpt:
    """Read ``paths``, resample to ``rate`` and take ``seconds_per_clip`` from each (after
    ``skip_seconds``; None: the rest of the clip), split each window into training,
    validation and test parts, and join all training parts, then all validation parts,
    then all test parts."""
    from ampxfer_lib.data.audio import read_audio, resample

    if not paths:
        raise ConfigError("no DI clips given")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError("val_fraction and test_fraction must be positive and leave room for training")
    parts: Tuple[list, list, list] = ([], [], [])
    for p in paths:
        clip = read_audio(p, None, role="input")
        x = resample(clip.samples, clip.sample_rate, rate)
        a = int(round(skip_seconds * rate))
        b = len(x) if seconds_per_clip is None else a + int(round(seconds_per_clip * rate))
        if b > len(x) or b - a < rate // 10:
            raise ConfigError(f"{p}: {len(x) / rate:.1f} s is too short for a {seconds_per_clip} s excerpt after "
                              f"{skip_seconds} s; use fewer seconds per clip")
        w = x[a:b]
        n_val, n_test = int(round(len(w) * val_fraction)), int(round(len(w) * test_fraction))
        n_train = len(w) - n_val - n_test
        for i, piece in enumerate((w[:n_train], w[n_train:n_train + n_val], w[n_train + n_val:])):
            parts[i].append(piece)
    train, val, test = (np.concatenate(p) for p in parts)
    audio = np.concatenate([train, val, test]).astype(np.float32)
    return DIExcerpt(audio, rate, len(val) / rate, len(test) / rate, [os.fspath(p) for p in paths])


def _knob_tuple(k: Knobs) -> Tuple[float, ...]:
    return tuple(float(v) for v in (k if isinstance(k, (list, tuple)) else (k,)))


def knob_label(knobs: Knobs) -> str:
    return "_".join(f"{v:.2f}" for v in _knob_tuple(knobs))


def render_knob_captures(device: Union["ModelWeights", Callable[[np.ndarray, Tuple[float, ...]], np.ndarray]],
                         di: Union[DIExcerpt, np.ndarray], knobs: Sequence[Knobs], out_dir: PathLike,
                         rate: Optional[int] = None, name: str = "device",
                         knob_names: Sequence[str] = ()) -> Path:
    """Play ``di`` through ``device`` at every knob setting; write the audio and a spec.

    ``device`` is a conditioned model (ModelWeights, rendered from the zero state) or a
    function ``(audio (T,), knobs) -> (T,)``. Writes ``di.wav`` and ``<name>_k<knobs>.wav``
    (32-bit float) and ``spec.json`` (the ``prepare --conditioned`` format) into ``out_dir``
    and returns the spec's path. A folder that already holds the same renders (same DI,
    knobs and device) is reused as it is, so reruns cost nothing.
    """
    from ampxfer_lib.data.audio import write_audio
    from ampxfer_lib.model.weights import ModelWeights
    from ampxfer_lib.model.render import render

    audio = di.audio if isinstance(di, DIExcerpt) else np.asarray(di, dtype=np.float32)
    rate = rate or (di.rate if isinstance(di, DIExcerpt) else None)
    if rate is None:
        raise ConfigError("give the DI's sample rate (rate=...)")
    settings = [_knob_tuple(k) for k in knobs]
    if not settings:
        raise ConfigError("no knob values given")
    if isinstance(device, ModelWeights):
        if device.config.num_knobs != len(settings[0]):
            raise ConfigError(f"{name}: the model has {device.config.num_knobs} knob(s) but the settings give "
                              f"{len(settings[0])} value(s) each")
        if device.config.sample_rate != rate:
            raise ConfigError(f"{name}: the model runs at {device.config.sample_rate} Hz but the DI is at {rate} Hz")
        weights = device

        def play(x, k):
            return render(weights, x, k)
        identity = {"model": weights.fingerprint()}
    else:
        play = device
        identity = {"function": getattr(device, "__qualname__", repr(device))}

    out = Path(out_dir)
    spec_path = out / "spec.json"
    di_path = out / "di.wav"
    captures = [{"target": f"{name}_k{knob_label(k)}.wav", "knobs": list(k)} for k in settings]
    spec = {"input": "di.wav", "captures": captures,
            "knob_names": list(knob_names) or [f"knob{i + 1}" for i in range(len(settings[0]))],
            "rendered": {"device": name, "rate": rate, **identity,
                         "di_sha256": _array_sha(audio)}}
    if spec_path.exists():
        try:
            old = json.loads(spec_path.read_text())
        except ValueError:
            old = None
        if old == spec and di_path.exists() and all((out / c["target"]).exists() for c in captures):
            return spec_path
    out.mkdir(parents=True, exist_ok=True)
    write_audio(di_path, audio, rate)
    for cap, k in zip(captures, settings):
        y = np.asarray(play(audio, k), dtype=np.float32)
        if y.shape != audio.shape or not np.all(np.isfinite(y)):
            raise ConfigError(f"{name}: rendering at knobs {list(k)} gave shape {y.shape} or non-finite values")
        write_audio(out / cap["target"], y, rate)
    atomic_write_json(spec_path, spec)  # last: a spec means every file is complete
    return spec_path


def _array_sha(x: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes()).hexdigest()


def virtual_drive(x: np.ndarray, knobs: Knobs, rate: int = 44100) -> np.ndarray:
    """A stand-in drive pedal with one gain knob (0..1): (T,) -> (T,) float32.

    High-pass 100 Hz -> asymmetric soft clipping with drive 2..40 (exponential in the knob)
    -> low-pass (4.5 kHz at gain 0 down to 2.5 kHz at gain 1) -> level. Stateful (the filters)
    and nonlinear, so the LSTM has something to learn at every knob value.
    """
    import scipy.signal as ss

    (gain,) = _knob_tuple(knobs)
    if not 0.0 <= gain <= 1.0:
        raise ConfigError(f"gain must lie in 0..1, got {gain}")
    x = np.asarray(x, dtype=np.float64)
    b, a = ss.butter(1, 100.0 / (rate / 2), "high")
    drive = 2.0 * 20.0 ** gain
    v = drive * ss.lfilter(b, a, x)
    y = np.tanh(v + 0.2) - np.tanh(0.2)  # the offset makes the clipping asymmetric (even harmonics)
    b, a = ss.butter(2, (4500.0 - 2000.0 * gain) / (rate / 2))
    y = ss.lfilter(b, a, y)
    return (0.5 * y / (1.0 + 0.5 * gain)).astype(np.float32)


def synthetic_di(seconds: float, rate: int = 44100, seed: int = 0) -> np.ndarray:
    """Plucked-string-like notes and chords (decaying harmonics, random pitches): (T,) float32.

    A stand-in for a DI when no recordings are at hand; real DI is better for real use.
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    x = np.zeros(n)
    t = np.arange(int(2.0 * rate)) / rate
    pos = 0
    while pos < n:
        for _ in range(int(rng.integers(1, 4))):  # a note or a small chord
            f0 = 82.4 * 2 ** (rng.integers(0, 30) / 12)
            note = sum(rng.uniform(0.3, 1.0) / h * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
                       for h in range(1, 9))
            note *= np.exp(-t * rng.uniform(1.5, 5.0)) * rng.uniform(0.3, 1.0)
            m = min(len(note), n - pos)
            x[pos:pos + m] += note[:m]
        pos += int(rng.uniform(0.15, 0.6) * rate)
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def knob_table(result: dict, holdout: Optional[Knobs] = None) -> List[dict]:
    """Rows ``{"knobs", "esr", "held_out"}`` from ``evaluate()``'s result, sorted by knob value."""
    held = _knob_tuple(holdout) if holdout is not None else None
    rows = []
    for c in result.get("captures", []):
        k = tuple(c["knobs"])
        rows.append({"knobs": list(k), "esr": float(c["esr"]),
                     "held_out": held is not None and len(k) == len(held)
                     and all(abs(a - b) < 1e-9 for a, b in zip(k, held))})
    return sorted(rows, key=lambda r: r["knobs"])


# --------------------------------------------------------------------------- ready-made knob data sets

#: Real-gear conditioned captures in the shared data, each with the snapshot capture that
#: makes the natural starting model (same pedal at full drive; another amp for the HT40).
REAL_DEVICES = {"TS9": "TS9_FullD", "BluesJr": "BluesJR_FullD", "HT40_Overdrive": "BluesJR_FullD"}
SAMPLE_PREFIX = "sample:"
#: DI seconds per knob value for the virtual device, per "clip second" (as 8 real clips).
_VIRTUAL_CLIPS = 8


@dataclass
class KnobDataset:
    """A prepared knob-conditioned data set and where it came from.

    ``snapshot`` is a snapshot model to transfer from when the source has one (real gear),
    ``snapshot_correlation`` the mean correlation of its output with the device's over the
    knob values (negative: opposite polarity), ``flipped`` whether the targets were
    polarity-inverted to match it.
    """

    data: Path
    spec: Path
    device: str
    kind: str  # real | sample | virtual
    knobs: List[float]
    holdout: Optional[float]
    snapshot: Optional[Path] = None
    snapshot_correlation: Optional[float] = None
    flipped: bool = False
    description: str = ""


def resolve_device(name: str) -> str:
    """``auto`` -> ``TS9`` with the shared real data, else ``sample:ts9`` with the sample data,
    else ``virtual``; other names are checked and returned."""
    if name == "auto":
        real = realdata_dir()
        if real is not None and (real / "models" / "neuralpi" / "TS9.json").exists():
            return "TS9"
        if _sample_renderer() is not None:
            return SAMPLE_PREFIX + "ts9"
        return "virtual"
    if name in REAL_DEVICES or name == "virtual" or name.startswith(SAMPLE_PREFIX):
        return name
    raise ConfigError(f"unknown device {name!r}; one of auto, virtual, {', '.join(REAL_DEVICES)}, "
                      f"{SAMPLE_PREFIX}<virtual device>")


def _sample_renderer():
    try:
        from ampxfer_lib.sample_data import files as sample_data  # written by the sample-data work; optional here
    except ImportError:
        return None
    return getattr(sample_data, "render_conditioned_captures", None)


def _read(path: Path) -> np.ndarray:
    import soundfile as sf

    return sf.read(str(path), dtype="float32")[0]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b)) / den if den > 0 else 0.0


def prepare_knob_dataset(device: str, knobs: Sequence[float], out_dir: PathLike, holdout: Optional[float] = None,
                         seconds_per_clip: float = 2.5, rate: int = 44100, flip: Optional[bool] = None,
                         log: Optional[Callable[[str], None]] = None) -> KnobDataset:
    """Render (or record, for the sample data) ``device`` at each knob value and prepare it.

    ``device``: a real-gear name (:data:`REAL_DEVICES`; needs the shared real data),
    ``sample:<name>`` (a virtual device of the sample data), ``virtual`` (:func:`virtual_drive`
    on :func:`synthetic_di`) or ``auto``. The DI is ``8 * seconds_per_clip`` seconds per knob
    value; validation and test are the last 15 % each of every capture, and ``holdout`` is
    a knob value kept for testing only. For real gear, ``flip=None`` inverts the targets'
    polarity when the snapshot's is opposite (polarity is inaudible, but a skip model cannot
    invert itself, so a transfer would start far off). Files go to ``out_dir/renders`` and
    ``out_dir/data``; reruns reuse them.
    """
    from ampxfer_lib.data.prepare import PrepareConfig, prepare, read_conditioned_spec
    from ampxfer_lib.model.formats import load_model
    from ampxfer_lib.model.render import render

    log = log or (lambda msg: None)
    device = resolve_device(device)
    knobs = [float(k) for k in knobs]
    out = Path(out_dir)
    snapshot = corr = None
    if device in REAL_DEVICES:
        real = realdata_dir()
        if real is None:
            raise ConfigError(f"{device}: the shared real data is absent; set AMPXFER_REALDATA to its folder "
                              "or use device 'virtual' / 'sample:<name>'")
        models = real / "models" / "neuralpi"
        clips = sorted((real / "di").glob("*.flac"))
        di = di_excerpt(clips, rate=rate, seconds_per_clip=seconds_per_clip)
        model = load_model(models / f"{device}.json")
        log(f"rendering {di.seconds:.1f} s of real DI through {device} at knob values {knobs}")
        spec = render_knob_captures(model, di, knobs, out / "renders" / device, name=device, knob_names=["gain"])
        snapshot = models / f"{REAL_DEVICES[device]}.json"
        start = render(load_model(snapshot), di.audio)
        corr = float(np.mean([_correlation(start, _read(spec.parent / c["target"]))
                              for c in json.loads(spec.read_text())["captures"]]))
        kind, align, val_s, test_s = "real", "off", di.val_seconds, di.test_seconds
        what = f"real-gear capture {device} rendered from {len(clips)} real DI clips"
    elif device.startswith(SAMPLE_PREFIX):
        renderer = _sample_renderer()
        if renderer is None:
            raise ConfigError("the sample data module (ampxfer_lib.sample_data.files) is not available; use device "
                              "'virtual' or a real-gear name")
        name = device[len(SAMPLE_PREFIX):]
        seconds = _VIRTUAL_CLIPS * seconds_per_clip
        log(f"recording {seconds:.1f} s of the sample DI through the virtual {name} at gains {knobs}")
        spec = Path(renderer(name, knobs, out / "renders" / f"sample_{name}", seconds=seconds))
        kind, align, val_s, test_s = "sample", "auto", 0.15 * seconds, 0.15 * seconds
        what = f"virtual device {name} of the sample data (its own latency, found by prepare)"
    else:
        seconds = _VIRTUAL_CLIPS * seconds_per_clip
        log(f"playing {seconds:.1f} s of synthetic DI through the virtual drive at gains {knobs}")
        spec = render_knob_captures(lambda x, k: virtual_drive(x, k, rate), synthetic_di(seconds, rate), knobs,
                                    out / "renders" / "virtual", rate=rate, name="virtual", knob_names=["gain"])
        kind, align = "virtual", "off"
        val_s = test_s = int(round(0.15 * seconds * rate)) / rate
        what = "virtual drive pedal (conditioning.virtual_drive) on synthetic DI"
    flipped = bool(flip) if flip is not None else (corr is not None and corr < -0.3)
    captures, names = read_conditioned_spec(spec)
    config = PrepareConfig(rate=rate, align=align, val_seconds=val_s, test_seconds=test_s, holdout_knob=holdout,
                           flip_polarity=flipped)
    label = device.replace(SAMPLE_PREFIX, "sample_") + ("_flipped" if flipped else "")
    data = out / "data" / label
    prepare(captures, data, config, knob_names=names, overwrite=True, log=log)
    desc = what
    if corr is not None:
        desc += f"; snapshot {snapshot.name} correlates {corr:+.2f} with it"
    if flipped:
        desc += "; targets polarity-inverted to match the snapshot"
    return KnobDataset(data, Path(spec), device, kind, knobs, holdout, snapshot, corr, flipped, desc)


def train_snapshot(ds: KnobDataset, knob: float, out_dir: PathLike, callbacks: Sequence = (), overwrite: bool = False,
                   **train_overrides) -> Path:
    """Train a snapshot model on the capture of ``ds`` at ``knob`` (a stand-in for an earlier
    snapshot capture of the device); returns its model_best.json path. A finished run with
    the same settings is reused (``overwrite`` retrains)."""
    from ampxfer_lib.data.dataset import load_dataset
    from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare, read_conditioned_spec
    from ampxfer_lib.training.config import make_config
    from ampxfer_lib.training.loop import train

    captures, _ = read_conditioned_spec(ds.spec)
    match = [c for c in captures if c.knobs and abs(c.knobs[0] - knob) < 1e-9]
    if not match:
        raise ConfigError(f"{ds.spec}: no capture at knob {knob:g}; one of {[c.knobs[0] for c in captures]}")
    cfg = load_dataset(ds.data).manifest["config"]
    out = Path(out_dir)
    config = PrepareConfig(rate=cfg["rate"], align=cfg["align"], val_seconds=cfg["val_seconds"],
                           test_seconds=cfg["test_seconds"], flip_polarity=cfg["flip_polarity"])
    prepare([CaptureSpec(match[0].inputs, match[0].targets)], out / "data", config, overwrite=True)
    overrides = {"seed": 0, **train_overrides}
    train(make_config(out / "data", **overrides), out / "run", callbacks, overwrite=overwrite)
    return out / "run" / "model_best.json"
