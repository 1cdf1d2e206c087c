"""The embedded sample data: a synthesised guitar DI and four virtual devices recorded from it.

What is committed (``sample_data/`` in the repository, about 8 MB):

* ``di.flac``: 210 s of guitar DI at 48 kHz, 16-bit, exactly ``synth_di(210, 48000, seed=0)``
  quantised to 16 bits;
* ``preview/<device>.flac``: 10 s of each device's recording, for listening;
* ``CHECKSUMS.json``: for every file the sha256 of its float32 samples and the RMS of every
  second, plus the settings (gain, latency) each recording was made with.

What is rendered on first use, into ``sample_data/rendered/`` (git-ignored): the four full
recordings ``<device>.flac`` (48 kHz, 24-bit). Each is the DI through
:func:`ampxfer_lib.sample_data.devices.render_device` at the device's default gain, then delayed by a fixed
number of samples (``LATENCY_SAMPLES``): the round trip of an audio interface, so the latency
detection in data preparation has something real to find.

A rendered file is accepted when its samples hash to the stored sha256 (same platform) or,
failing that, when every per-second RMS is within a relative ``1e-4`` of the stored value (other
CPUs and library builds round differently in the last bits). A file that verifies is never
rewritten; one that does not is reported with the command that regenerates it.

Public: :data:`SAMPLE_DIR`, :class:`SampleData`, :func:`ensure_sample_data`,
:func:`render_conditioned_captures`, :func:`record_device`; command line
``python -m ampxfer_lib.sample_data [--check | --render | --rebuild-reference]``
(:mod:`ampxfer_lib.cli.sample_data`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile as sf

from ampxfer_lib.sample_data.devices import DEVICES, PAIRS, render_device
from ampxfer_lib.errors import AmpxferError, AudioError, ConfigError
from ampxfer_lib.fileio import atomic_write_bytes, atomic_write_json
from ampxfer_lib.paths import checkout_dir

SAMPLE_RATE = 48000
SECONDS = 210.0
SEED = 0
# Interface round trip added to each recording, in samples at 48 kHz (ground truth for the
# latency detection; also stored in CHECKSUMS.json).
LATENCY_SAMPLES: Dict[str, int] = {"ts9": 37, "mt2": 52, "bluesjr": 44, "ht40": 61}
PREVIEW_SECONDS = 10.0
RMS_TOLERANCE = 1e-4  # max relative difference of a per-second RMS across platforms
RMS_FLOOR = 1e-4  # seconds quieter than this (-80 dBFS) are compared against the floor
DI_NAME = "di.flac"
CHECKSUMS_NAME = "CHECKSUMS.json"
RENDERED_DIR = "rendered"
PREVIEW_DIR = "preview"
#: The sample data of a source checkout (an installed package has none: pass ``root``).
CHECKOUT_SAMPLE_DIR = checkout_dir("sample_data")
_REGENERATE = "python -m ampxfer_lib.sample_data --render"

PathLike = Union[str, os.PathLike]


def sample_dir() -> Path:
    """The sample data folder: $AMPXFER_SAMPLE_DIR if set, else the repository's sample_data/."""
    env = os.environ.get("AMPXFER_SAMPLE_DIR")
    return Path(env).expanduser() if env else CHECKOUT_SAMPLE_DIR


SAMPLE_DIR: Path = sample_dir()


@dataclass(frozen=True)
class SampleData:
    """Where the sample recordings are, and what they are."""

    di: Path
    targets: Dict[str, Path]  # device name -> its recording of the DI (48 kHz)
    sample_rate: int
    latency_samples: Dict[str, int]
    pairs: List[Tuple[str, str]] = field(default_factory=lambda: [tuple(p) for p in PAIRS])
    gains: Dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Fingerprints and verification.

def fingerprint(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> dict:
    """sha256 of the float32 little-endian samples, sample count and per-second RMS of (T,) x."""
    x = np.ascontiguousarray(x, dtype="<f4")
    n_sec = int(np.ceil(x.size / sample_rate))
    rms = []
    for k in range(n_sec):
        seg = x[k * sample_rate:(k + 1) * sample_rate].astype(np.float64)
        rms.append(float(f"{np.sqrt(np.mean(seg * seg)):.8g}"))
    return {"samples": int(x.size), "sha256": hashlib.sha256(x.tobytes()).hexdigest(),
            "rms_per_second": rms}


def compare_fingerprint(x: np.ndarray, ref: dict, sample_rate: int = SAMPLE_RATE) -> Optional[str]:
    """None if x matches the reference (exactly, or within the RMS tolerance), else why not."""
    x = np.asarray(x, dtype=np.float32)
    if x.size != ref["samples"]:
        return f"it has {x.size} samples, the reference has {ref['samples']}"
    got = fingerprint(x, sample_rate)
    if got["sha256"] == ref["sha256"]:
        return None
    a = np.asarray(got["rms_per_second"])
    b = np.asarray(ref["rms_per_second"])
    rel = np.abs(a - b) / np.maximum(b, RMS_FLOOR)
    k = int(np.argmax(rel))
    if rel[k] > RMS_TOLERANCE:
        return (f"its level differs from the reference by up to {rel[k]:.2g} (relative RMS, "
                f"second {k}; tolerance {RMS_TOLERANCE:g})")
    return None


def _read_float32(path: Path) -> np.ndarray:
    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except Exception as exc:  # soundfile raises its own error types
        raise AudioError(f"{path}: cannot be read as audio ({exc}); delete it and run "
                         f"`{_REGENERATE}`") from None
    if sr != SAMPLE_RATE or x.ndim != 1:
        raise AudioError(f"{path}: expected mono {SAMPLE_RATE} Hz, found {sr} Hz with shape "
                         f"{x.shape}; delete it and run `{_REGENERATE}`")
    return x


def verify_file(path: PathLike, ref: dict, fix: str = "", what: str = "rendered file") -> None:
    """Raise AudioError naming ``path`` unless its samples match the reference fingerprint."""
    path = Path(path)
    why = compare_fingerprint(_read_float32(path), ref)
    if why:
        fix = fix or f"delete it and run `{_REGENERATE}` to regenerate it"
        raise AudioError(f"{path}: the {what} differs from the reference sample data "
                         f"({why}); {fix}")


def _encode(x: np.ndarray, subtype: str) -> Tuple[bytes, np.ndarray]:
    """FLAC bytes of (T,) x and the float32 samples a reader gets back from them."""
    buf = io.BytesIO()
    sf.write(buf, np.asarray(x, dtype=np.float32), SAMPLE_RATE, format="FLAC", subtype=subtype)
    data = buf.getvalue()
    back, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return data, back


def load_reference(root: Optional[PathLike] = None) -> dict:
    """The stored checksums: ``root``/CHECKSUMS.json, else the repository's copy."""
    for folder in ([Path(root)] if root else []) + [CHECKOUT_SAMPLE_DIR]:
        path = folder / CHECKSUMS_NAME
        if path.is_file():
            with open(path, "r", encoding="utf-8") as f:
                return json.load(f)
    if not CHECKOUT_SAMPLE_DIR.is_dir():
        # Installed from the wheel: the library alone, with no repository around it.
        from ampxfer_lib import __version__

        given = root is not None and Path(root) != CHECKOUT_SAMPLE_DIR
        where = f"{root} holds no {CHECKSUMS_NAME}, and " if given else ""
        raise AmpxferError(f"no sample data: {where}ampxfer is installed as a package (from its wheel), which "
                           f"carries no sample data; unpack ampxfer-{__version__}.zip (from `make dist`) and "
                           "`pip install -e` its folder (in Colab: upload the zip and rerun the set-up cell), "
                           "or set AMPXFER_SAMPLE_DIR to its sample_data folder, or use your own recordings")
    raise AmpxferError(f"{CHECKOUT_SAMPLE_DIR / CHECKSUMS_NAME}: missing; the sample data checksums "
                       "ship with the repository: restore it with `git checkout -- sample_data`")


# --------------------------------------------------------------------------------------------
# Rendering.

def delay(x: np.ndarray, samples: int) -> np.ndarray:
    """Pure delay keeping the length: (T,) -> (T,), ``samples`` zeros in front."""
    out = np.zeros_like(x)
    if samples < x.shape[0]:
        out[samples:] = x[: x.shape[0] - samples]
    return out


def record_device(name: str, di: np.ndarray, gain: Optional[float] = None) -> np.ndarray:
    """What the interface records when the 48 kHz ``di`` (T,) is played through device ``name``:
    the device's output delayed by its round-trip latency. -> (T,) float32."""
    y = render_device(name, di, SAMPLE_RATE, gain)
    lat = LATENCY_SAMPLES[name]
    return delay(y, lat)


def _synth_di_samples() -> np.ndarray:
    from ampxfer_lib.sample_data.guitar_synth import synth_di

    return synth_di(SECONDS, SAMPLE_RATE, SEED)


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="file")


def _ensure_di(root: Path, ref: dict) -> Path:
    """The DI file under root: verified if present, synthesised (and verified) if missing."""
    path = root / DI_NAME
    entry = ref["files"][DI_NAME]
    fix = ("restore it with `git checkout -- sample_data/di.flac` (or delete it to synthesise it "
           "again); check that no Git LFS or line-ending filter rewrites .flac files")
    if path.exists():
        verify_file(path, entry, fix, what="sample DI")
        return path
    data, back = _encode(_synth_di_samples(), entry.get("subtype", "PCM_16"))
    why = compare_fingerprint(back, entry)
    if why:
        raise AudioError(f"{path}: the DI synthesised on this machine differs from the reference "
                         f"({why}); copy sample_data/di.flac from the repository instead")
    atomic_write_bytes(path, data)
    return path


def ensure_sample_data(root: Optional[PathLike] = None, progress: bool = True,
                       rerender: bool = False,
                       devices: Optional[Sequence[str]] = None) -> SampleData:
    """Make sure the DI and the four device recordings exist under ``root`` and verify them.

    root defaults to :data:`SAMPLE_DIR` (``$AMPXFER_SAMPLE_DIR`` or the repository's
    sample_data/). Missing recordings are rendered (about 20 s on a laptop core) and written
    atomically; files that verify are never rewritten. A file that fails verification raises
    AudioError, unless ``rerender`` is set, in which case a failing file in ``rendered/`` is
    rendered again (the DI is never touched). ``devices`` limits the work (and ``targets``) to
    some devices, e.g. one pair; default all four."""
    root = Path(root).expanduser() if root is not None else sample_dir()
    ref = load_reference(root)
    devices = list(DEVICES) if devices is None else list(devices)
    for name in devices:
        if name not in DEVICES:
            raise AmpxferError(f"unknown device {name!r}; the virtual devices are: {', '.join(DEVICES)}")
    bar = _progress(1 + len(devices), progress, "sample data")
    try:
        di_path = _ensure_di(root, ref)
        if bar is not None:
            bar.update(1)
        di = None
        targets: Dict[str, Path] = {}
        gains: Dict[str, float] = {}
        for name in devices:
            rel = f"{RENDERED_DIR}/{name}.flac"
            entry = ref["files"][rel]
            path = root / RENDERED_DIR / f"{name}.flac"
            targets[name] = path
            gains[name] = float(entry["gain"])
            if path.exists():
                try:
                    verify_file(path, entry)
                    if bar is not None:
                        bar.update(1)
                    continue
                except AudioError:
                    if not rerender:
                        raise
            if bar is not None:
                bar.set_postfix_str(f"rendering {name}")
            if di is None:
                di = _read_float32(di_path).astype(np.float64)
            y = record_device(name, di, entry["gain"])
            data, back = _encode(y, entry.get("subtype", "PCM_24"))
            why = compare_fingerprint(back, entry)
            if why:
                raise AudioError(f"{path}: rendering {name} on this machine gives a different "
                                 f"recording than the reference ({why}); please report it with "
                                 "your platform (numpy/scipy versions)")
            atomic_write_bytes(path, data)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return SampleData(di=di_path, targets=targets, sample_rate=SAMPLE_RATE,
                      latency_samples=dict(LATENCY_SAMPLES),
                      pairs=[tuple(p) for p in PAIRS], gains=gains)


def render_conditioned_captures(device: str, gains: Sequence[float], out_dir: PathLike,
                                seconds: Optional[float] = None,
                                root: Optional[PathLike] = None) -> Path:
    """Record the sample DI through ``device`` at several gain knob values, for knob conditioning.

    Writes ``<device>_gain<g>.flac`` per gain (48 kHz, 24-bit, with the device's latency), the
    input (the DI itself, or its first ``seconds`` as ``di_<seconds>s.flac``) and the spec
    ``<device>_conditioned.json``: ``{"input": ..., "captures": [{"target": ..., "knobs":
    [g]}, ...]}`` with paths relative to out_dir (the full DI by absolute path). A capture whose
    file already matches the spec's sha256 is not rendered again. Returns the spec's path."""
    if device not in DEVICES:
        raise AmpxferError(f"unknown device {device!r}; the virtual devices are: {', '.join(DEVICES)}")
    gains = [float(g) for g in gains]
    if not gains:
        raise ConfigError("render_conditioned_captures needs at least one gain value (0..1)")
    for g in gains:
        if not 0.0 <= g <= 1.0:
            raise ConfigError(f"gain values must be in 0..1, got {g}")
    if len({round(g, 6) for g in gains}) != len(gains):
        raise ConfigError(f"gain values must differ, got {gains}")
    root_path = Path(root).expanduser() if root is not None else sample_dir()
    ref = load_reference(root_path)
    di_path = _ensure_di(root_path, ref)
    di = _read_float32(di_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if seconds is not None:
        n = int(round(float(seconds) * SAMPLE_RATE))
        if not 0 < n <= di.size:
            raise ConfigError(f"seconds must be in (0, {di.size / SAMPLE_RATE:g}], got {seconds}")
        di = di[:n]
        in_name = f"di_{float(seconds):g}s.flac"
        data, _ = _encode(di, "PCM_16")  # the DI is 16-bit, so this is lossless
        in_path = out_dir / in_name
        if not in_path.exists() or in_path.read_bytes() != data:
            atomic_write_bytes(in_path, data)
        input_ref = in_name
    else:
        input_ref = str(di_path.resolve())
    spec_path = out_dir / f"{device}_conditioned.json"
    old = {}
    if spec_path.exists():
        try:
            with open(spec_path, "r", encoding="utf-8") as f:
                old = {c["target"]: c.get("sha256") for c in json.load(f).get("captures", [])}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            old = {}
    x = di.astype(np.float64)
    captures = []
    for g in gains:
        name = f"{device}_gain{g:.3f}.flac"
        path = out_dir / name
        digest = None
        if path.exists() and old.get(name):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != old[name]:
                digest = None
        if digest is None:
            data, _ = _encode(record_device(device, x, g), "PCM_24")
            atomic_write_bytes(path, data)
            digest = hashlib.sha256(data).hexdigest()
        captures.append({"target": name, "knobs": [g], "sha256": digest})
    spec = {"input": input_ref, "captures": captures, "device": device,
            "sample_rate": SAMPLE_RATE, "latency_samples": LATENCY_SAMPLES[device],
            "note": "virtual device recordings of the ampxfer sample DI (gain knob 0..1)"}
    atomic_write_json(spec_path, spec)
    return spec_path


# --------------------------------------------------------------------------------------------
# Maintainer: build the committed reference.

def preview_start(seconds: float = SECONDS) -> float:
    """Start (s) of the listening previews: the first riff, so they show the most gain."""
    from ampxfer_lib.sample_data.phrases import plan_phrases

    for plan in plan_phrases(seconds, SAMPLE_RATE, SEED):
        if plan.kind == "riff":
            return float(np.floor(plan.start / SAMPLE_RATE * 10) / 10)
    return 0.0


def rebuild_reference(root: PathLike, progress: bool = True) -> dict:
    """Synthesise the DI, record all devices, write di.flac, previews and CHECKSUMS.json.

    For maintainers after a deliberate change of the synthesiser or the devices; it overwrites
    the reference in ``root`` (normally the repository's sample_data/)."""
    root = Path(root)
    bar = _progress(2 + 2 * len(DEVICES), progress, "rebuilding sample data")

    def step():
        if bar is not None:
            bar.update(1)

    files: Dict[str, dict] = {}
    data, di = _encode(_synth_di_samples(), "PCM_16")
    atomic_write_bytes(root / DI_NAME, data)
    files[DI_NAME] = {"role": "input", "subtype": "PCM_16", **fingerprint(di)}
    step()
    start = preview_start()
    a = int(round(start * SAMPLE_RATE))
    b = a + int(round(PREVIEW_SECONDS * SAMPLE_RATE))
    x = di.astype(np.float64)
    for name in DEVICES:
        gain = DEVICES[name].default_gain
        data, y = _encode(record_device(name, x, gain), "PCM_24")
        atomic_write_bytes(root / RENDERED_DIR / f"{name}.flac", data)
        files[f"{RENDERED_DIR}/{name}.flac"] = {
            "role": "target", "device": name, "gain": gain,
            "latency_samples": LATENCY_SAMPLES[name], "subtype": "PCM_24", **fingerprint(y)}
        step()
        data, p = _encode(y[a:b], "PCM_24")
        atomic_write_bytes(root / PREVIEW_DIR / f"{name}.flac", data)
        files[f"{PREVIEW_DIR}/{name}.flac"] = {
            "role": "preview", "device": name, "gain": gain, "start_s": start,
            "subtype": "PCM_24", **fingerprint(p)}
        step()
    ref = {
        "format": 1,
        "about": "ampxfer sample data: sha256 of the float32 samples as read by soundfile, "
                 "sample count, RMS of each second (relative tolerance rms_tolerance across "
                 "platforms)",
        "sample_rate": SAMPLE_RATE, "seconds": SECONDS, "seed": SEED,
        "rms_tolerance": RMS_TOLERANCE, "rms_floor": RMS_FLOOR,
        "latency_samples": dict(LATENCY_SAMPLES),
        "pairs": [list(p) for p in PAIRS],
        "files": files,
    }
    atomic_write_json(root / CHECKSUMS_NAME, ref)
    step()
    if bar is not None:
        bar.close()
    return ref


def check(root: Optional[PathLike] = None) -> List[str]:
    """Verify what exists without rendering anything; returns lines to print (raises on a mismatch)."""
    root = Path(root).expanduser() if root is not None else sample_dir()
    ref = load_reference(root)
    lines = []
    for rel, entry in ref["files"].items():
        path = root / rel
        if not path.exists():
            lines.append(f"missing   {rel}" + ("  (rendered on first use)" if rel.startswith(RENDERED_DIR) else ""))
            continue
        if rel.startswith(RENDERED_DIR):
            verify_file(path, entry)
        else:
            verify_file(path, entry, "restore it with `git checkout -- sample_data`",
                        what="committed file")
        lines.append(f"ok        {rel}")
    return lines
