"""From recordings to a prepared data folder: checks, resampling, alignment, splits.

``prepare`` reads pairs of recordings (clean DI input, device output), checks them, resamples
both to the model rate, finds and removes the latency between them, and cuts the result in
time order into training, validation and test splits, written as the data folder that
:mod:`ampxfer_lib.data.dataset` describes and reads back. Nothing is written until every
check has passed, and ``manifest.json`` is written last.

A data set is a list of *captures*: a snapshot data set has one (all pairs joined with
0.25 s of silence between them); a knob-conditioned one has a capture per knob setting
(listed in a spec read by :func:`read_conditioned_spec`), each split on its own so that
validation and test come from the end of every capture.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ampxfer_lib import __version__
from ampxfer_lib.data.align import compensate, estimate_latency
from ampxfer_lib.data.checks_pair import drift_findings, flip_findings, swap_findings
from ampxfer_lib.data.audio import (AudioClip, CheckConfig, Finding, check_recording, read_audio, resample,
                                    write_audio)
from ampxfer_lib.data.dataset import DATA_FORMAT, DATA_FORMAT_VERSION, MANIFEST, SPLITS
from ampxfer_lib.errors import AudioError, ConfigError
from ampxfer_lib.fileio import PathLike, atomic_write_json, make_dirs, read_json_config, sha256_file
from ampxfer_lib.folders import check_leftovers, holds_folder, record_files
from ampxfer_lib.validate import check_prepare_config


@dataclass(frozen=True)
class PrepareConfig:
    """Settings of ``prepare`` (command-line flags of the same names)."""

    rate: int = 44100
    align: str = "auto"  # "auto", "off", or a fixed latency in samples at the model rate
    val_seconds: float = 40.0
    test_seconds: float = 20.0
    limited_seconds: float = 30.0
    channel: Optional[int] = None
    flip_polarity: bool = False
    # One stereo file with the DI on one channel and the device on the other: a channel per role.
    input_channel: Optional[int] = None  # None: ``channel``
    target_channel: Optional[int] = None
    gap_seconds: float = 0.25
    segment_seconds: float = 0.5
    holdout_knob: Optional[float] = None  # conditioned data: a knob value kept for testing only
    checks: CheckConfig = CheckConfig()

    def __post_init__(self):
        check_prepare_config(self)
        if self.rate < 8000 or self.rate > 192000:
            raise ConfigError(f"--rate {self.rate} is not a usable model rate (44100 or 48000)")
        if self.align not in ("auto", "off"):
            try:
                int(self.align)
            except (TypeError, ValueError):
                raise ConfigError(f"--align must be auto, off or a whole number of samples, not {self.align!r}") from None
        for name in ("val_seconds", "test_seconds", "limited_seconds", "segment_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["checks"] = self.checks.to_dict()
        for key in ("input_channel", "target_channel"):  # absent unless set: older manifests still match
            if d[key] is None:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PrepareConfig":
        d = dict(d)
        checks = CheckConfig(**d.pop("checks", {}))
        return cls(checks=checks, **d)


@dataclass(frozen=True)
class CaptureSpec:
    """One device recording: the DI that was played into it, and its knob positions."""

    inputs: Tuple[str, ...]
    targets: Tuple[str, ...]
    knobs: Tuple[float, ...] = ()


@dataclass
class PreparedPair:
    """An input/target pair after checks, resampling and alignment (both (T,) float64)."""

    input: np.ndarray
    target: np.ndarray
    info: dict
    findings: List[Finding] = field(default_factory=list)


# --------------------------------------------------------------------------- checks & pairs

def _source_info(clip: AudioClip) -> dict:
    return {
        "path": os.path.abspath(clip.path),
        "sha256": sha256_file(clip.path),
        "sample_rate": clip.sample_rate,
        "channels": clip.channels,
        "channel_used": clip.channel_used,
        "subtype": clip.subtype,
        "seconds": round(clip.seconds, 6),
    }


def _channel(own: Optional[int], shared: Optional[int]) -> Optional[int]:
    return shared if own is None else own


def prepare_pair(input_path: PathLike, target_path: PathLike, config: PrepareConfig) -> PreparedPair:
    """Read, check, resample and align one recording pair (raises AudioError on errors)."""
    checks = config.checks
    x_clip = read_audio(input_path, _channel(config.input_channel, config.channel), role="input",
                        flag="--input-channel" if config.input_channel is not None else "--channel")
    y_clip = read_audio(target_path, _channel(config.target_channel, config.channel), role="target",
                        flag="--target-channel" if config.target_channel is not None else "--channel")
    findings = check_recording(x_clip, "input", checks) + check_recording(y_clip, "target", checks)
    if x_clip.sample_rate != y_clip.sample_rate:
        raise AudioError(
            f"{y_clip.path}: recorded at {y_clip.sample_rate} Hz but the input {x_clip.path} is at "
            f"{x_clip.sample_rate} Hz; record (or export) both at one rate"
        )
    rate = x_clip.sample_rate
    window = checks.latency_window_seconds
    diff = abs(len(x_clip.samples) - len(y_clip.samples)) / rate
    if diff > window:
        raise AudioError(
            f"{y_clip.path}: {y_clip.seconds:.2f} s long but the input {x_clip.path} is {x_clip.seconds:.2f} s; "
            f"they differ by {diff:.2f} s (more than {window:g} s): export both from the same start to the same end"
        )
    x = resample(x_clip.samples, rate, config.rate)
    y = resample(y_clip.samples, rate, config.rate)

    est = estimate_latency(x, y, config.rate, max_seconds=window)
    if config.align == "auto":
        if not est.in_window:
            raise AudioError(
                f"{y_clip.path}: no consistent delay within +-{window:g} s of the input {x_clip.path}; check "
                "that the target is a recording of this input, or set the latency with --align N"
            )
        latency = est.samples
    elif config.align == "off":
        latency = 0
    else:
        latency = int(config.align)
        if abs(latency) > window * config.rate:
            raise AudioError(f"--align {latency}: more than the {window:g} s latency window")
    findings += swap_findings(est, x, y, config.rate, y_clip.path, x_clip.path)
    x, y = compensate(x, y, latency)

    findings += drift_findings(x, y, config.rate, y_clip.path)
    rho = lowpass_correlation(x, y, config.rate)
    findings += flip_findings(config.flip_polarity, est, rho, checks.polarity_correlation, y_clip.path)
    gain = -1.0 if config.flip_polarity else 1.0
    if (not config.flip_polarity and est.in_window and est.polarity < 0
            and rho <= -checks.polarity_correlation):
        findings.append(Finding(
            "inverted_polarity", y_clip.path,
            f"the target's polarity is inverted relative to the input (correlation {rho:+.2f}); "
            "--flip-polarity fixes it",
            {"correlation": rho, "confidence": est.confidence},
        ))
    if gain != 1.0:
        y = y * gain

    # A device that changes nothing (bypass on, wrong track exported) fits the input with
    # a single gain; a real pedal or amp leaves a large residual even after gain matching.
    xx = float(np.dot(x, x))
    if xx > 0:
        g = float(np.dot(x, y)) / xx
        residual = float(np.sum(np.square(y - g * x))) / max(float(np.dot(y, y)), 1e-30)
        if residual < checks.bypass_esr:
            findings.append(Finding(
                "bypass", y_clip.path,
                f"the target is nearly identical to the input (ESR {residual:.1e} after level matching); "
                "was the device bypassed, or the DI track exported twice?",
                {"esr": residual, "gain": g},
            ))
    info = {
        "input": _source_info(x_clip),
        "target": _source_info(y_clip),
        "latency": {"samples": int(latency), "mode": config.align, "detected": est.to_dict(),
                    "rate": config.rate},
        "gains": {"input": 1.0, "target": gain},
        "lowpass_correlation": rho,
        "seconds_aligned": round(len(x) / config.rate, 6),
    }
    return PreparedPair(x, y, info, findings)


def lowpass_correlation(x: np.ndarray, y: np.ndarray, rate: int, cutoff: float = 1000.0) -> float:
    """Normalised correlation of aligned input and target below ``cutoff``: -1..1.

    Below 1 kHz a pedal or amp mostly keeps the fundamental of what is played, so the
    sign of this correlation is the device's polarity whenever its size is clear.
    """
    import scipy.signal as ss

    sos = ss.butter(2, cutoff / (rate / 2), output="sos")
    xl, yl = ss.sosfilt(sos, x), ss.sosfilt(sos, y)
    den = float(np.sqrt(np.dot(xl, xl) * np.dot(yl, yl)))
    return float(np.dot(xl, yl) / den) if den > 0 else 0.0


def _join(pieces: Sequence[np.ndarray], gap: int) -> np.ndarray:
    if len(pieces) == 1:
        return pieces[0]
    out: List[np.ndarray] = []
    for i, p in enumerate(pieces):
        if i:
            out.append(np.zeros(gap))
        out.append(p)
    return np.concatenate(out)


# --------------------------------------------------------------------------- prepare

def _split_bounds(n: int, config: PrepareConfig, names: str) -> Dict[str, Tuple[int, int]]:
    rate = config.rate
    n_val = int(round(config.val_seconds * rate))
    n_test = int(round(config.test_seconds * rate))
    n_seg = int(round(config.segment_seconds * rate))
    need = n_seg + n_val + n_test
    if n < need:
        raise AudioError(
            f"{names}: {n / rate:.1f} s of aligned audio is too short for one {config.segment_seconds:g} s training "
            f"segment plus {config.val_seconds:g} s validation and {config.test_seconds:g} s test "
            f"(needs {need / rate:.1f} s); record longer (3+ minutes is best) or lower --val-seconds/--test-seconds"
        )
    n_train = n - n_val - n_test
    return {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}


def is_data_file_name(name: str) -> bool:
    """Whether ``name`` is one :func:`_file_name` gives (``train_input.wav``, ``val_c01_target.wav``)."""
    return name.endswith(".wav") and name.split("_")[0] in SPLITS


def _file_name(split: str, capture: int, n_captures: int, role: str) -> str:
    if n_captures == 1:
        return f"{split}_{role}.wav"
    return f"{split}_c{capture:02d}_{role}.wav"


def _check_out_dir(out: Path, sources: Sequence[str], overwrite: bool) -> Optional[dict]:
    """Decide whether ``out`` may receive a data set; returns the old manifest if any."""
    src = {os.path.realpath(s) for s in sources}
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; choose another --out")
    if not out.exists():
        return None
    manifest_path = out / MANIFEST
    entries = [p for p in out.iterdir() if not p.name.startswith(".")]
    if not entries:
        return None
    if not manifest_path.exists():
        check_leftovers(out, is_data_file_name, overwrite, src)
        return None  # leftovers of an interrupted prepare, proven by the record of ampxfer's files
    try:
        old = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        raise ConfigError(f"{manifest_path}: unreadable manifest; remove the folder or pass --overwrite") from None
    if any(os.path.realpath(out / f) in src for f in _manifest_files(old)):
        raise ConfigError(f"{out}: a source recording lies among this folder's data files; choose another --out")
    return old


def _manifest_files(manifest: dict) -> List[str]:
    files = []
    for split in manifest.get("splits", {}).values():
        for entry in split.get("files", []):
            files += [entry["input"], entry["target"]]
    return files


@holds_folder("out_dir", "prepare")
def prepare(captures: Sequence[CaptureSpec], out_dir: PathLike, config: PrepareConfig = PrepareConfig(),
            overwrite: bool = False, knob_names: Sequence[str] = (),
            log: Optional[Callable[[str], None]] = None) -> dict:
    """Check, align and split recordings into a data folder; returns the manifest.

    Nothing is written until every check has passed. Re-running with the same sources and
    settings leaves an existing data set untouched; different ones need ``overwrite``.
    """
    log = log or (lambda msg: None)
    if not captures:
        raise ConfigError("no recordings given; pass --input IN --target TGT")
    n_knobs = len(captures[0].knobs)
    for cap in captures:
        if len(cap.knobs) != n_knobs:
            raise ConfigError("every capture must give the same number of knob values")
        if any(not (0.0 <= k <= 1.0) or not math.isfinite(k) for k in cap.knobs):
            raise ConfigError(f"knob values must lie in 0..1, got {list(cap.knobs)} for {cap.targets[0]}")
        if len(cap.inputs) != len(cap.targets):
            raise ConfigError(f"{len(cap.inputs)} --input but {len(cap.targets)} --target; give them in pairs")
    if config.holdout_knob is not None:
        if n_knobs == 0:
            raise ConfigError("--holdout-knob needs conditioned data (prepare --conditioned SPEC.json)")
        held = [c for c in captures if abs(c.knobs[0] - config.holdout_knob) < 1e-9]
        if not held:
            raise ConfigError(f"--holdout-knob {config.holdout_knob:g}: no capture has that knob value")
        if len(held) == len(captures):
            raise ConfigError("--holdout-knob would hold out every capture; keep at least one for training")

    out = Path(out_dir)
    sources = [p for c in captures for p in (*c.inputs, *c.targets)]
    old = _check_out_dir(out, sources, overwrite)

    gap = int(round(config.gap_seconds * config.rate))
    findings: List[Finding] = []
    cap_records = []
    cap_audio = []
    for ci, cap in enumerate(captures):
        pairs = []
        for inp, tgt in zip(cap.inputs, cap.targets):
            log(f"reading {inp} + {tgt}")
            pair = prepare_pair(inp, tgt, config)
            findings += pair.findings
            lat = pair.info["latency"]["samples"]
            log(f"  latency {lat} samples ({1000 * lat / config.rate:.2f} ms), "
                f"{pair.info['seconds_aligned']:.1f} s aligned")
            pairs.append(pair)
        x = _join([p.input for p in pairs], gap)
        y = _join([p.target for p in pairs], gap)
        names = " + ".join(os.path.basename(t) for t in cap.targets)
        bounds = _split_bounds(len(x), config, names)
        cap_audio.append((x, y, bounds))
        cap_records.append({"knobs": list(cap.knobs), "pairs": [p.info for p in pairs],
                            "seconds": round(len(x) / config.rate, 6),
                            "holdout": config.holdout_knob is not None
                            and abs(cap.knobs[0] - config.holdout_knob) < 1e-9})

    manifest = {
        "format": DATA_FORMAT,
        "version": DATA_FORMAT_VERSION,
        "library_version": __version__,
        "sample_rate": config.rate,
        "input_size": 1 + n_knobs,
        "knob_names": list(knob_names) or [f"knob{i + 1}" for i in range(n_knobs)],
        "config": config.to_dict(),
        "captures": cap_records,
        "warnings": [f.to_dict() for f in findings],
        "splits": {},
        "subsets": {},
    }
    n_lim = int(round(config.limited_seconds * config.rate))
    for split in SPLITS:
        files = []
        for ci, (x, y, bounds) in enumerate(cap_audio):
            rec = cap_records[ci]
            if rec["holdout"] and split != "test":
                continue
            a, b = bounds[split]
            files.append({"input": _file_name(split, ci, len(captures), "input"),
                          "target": _file_name(split, ci, len(captures), "target"),
                          "capture": ci, "knobs": rec["knobs"], "samples": b - a,
                          "seconds": round((b - a) / config.rate, 6)})
        manifest["splits"][split] = {"seconds": round(sum(f["seconds"] for f in files), 6), "files": files}
    train_files = manifest["splits"]["train"]["files"]
    manifest["subsets"] = {
        "full": {"train_seconds": manifest["splits"]["train"]["seconds"]},
        "limited": {"train_seconds": round(sum(min(f["samples"], n_lim) for f in train_files) / config.rate, 6),
                    "limited_seconds": config.limited_seconds},
    }

    if old is not None:
        if _same_dataset(old, manifest):
            log(f"{out}: already prepared from the same recordings and settings; left as it is")
            return old
        if not overwrite:
            raise ConfigError(f"{out}: holds data prepared from other recordings or settings; "
                              "choose another --out or pass --overwrite")
        for name in _manifest_files(old) + [MANIFEST]:
            try:
                (out / name).unlink()
            except FileNotFoundError:
                pass

    make_dirs(out)
    for split in SPLITS:
        for entry in manifest["splits"][split]["files"]:
            x, y, bounds = cap_audio[entry["capture"]]
            a, b = bounds[split]
            write_audio(out / entry["input"], x[a:b].astype(np.float32), config.rate)
            write_audio(out / entry["target"], y[a:b].astype(np.float32), config.rate)
            record_files(out, (entry["input"], entry["target"]))  # a kill from here on leaves provable leftovers
    atomic_write_json(out / MANIFEST, manifest)
    record_files(out, (MANIFEST,))
    return manifest


def _same_dataset(a: dict, b: dict) -> bool:
    def key(m):
        return (m.get("config"), m.get("input_size"),
                [[(p["input"]["sha256"], p["target"]["sha256"]) for p in c["pairs"]] + [c["knobs"]]
                 for c in m.get("captures", [])])
    return key(a) == key(b)


def read_conditioned_spec(path: PathLike) -> Tuple[List[CaptureSpec], List[str]]:
    """Parse ``{"input": "di.wav", "captures": [{"target": "g0.wav", "knobs": [0.0]}, ...]}``.

    A capture may name its own ``input``; relative paths are relative to the spec's folder.
    An optional ``knob_names`` list names the knobs.
    """
    path = Path(path)
    spec = read_json_config(path, "no such file; check the --conditioned path", "spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("captures"), list) or not spec["captures"]:
        raise ConfigError(f'{path}: expected {{"input": "di.wav", "captures": [{{"target": "...", "knobs": [0.5]}}]}}')
    base = path.parent

    def resolve(p: str) -> str:
        return str(p if os.path.isabs(p) else base / p)

    captures = []
    for i, cap in enumerate(spec["captures"]):
        if not isinstance(cap, dict) or "target" not in cap or "knobs" not in cap:
            raise ConfigError(f"{path}: capture {i} needs 'target' and 'knobs'")
        inp = cap.get("input", spec.get("input"))
        if inp is None:
            raise ConfigError(f"{path}: capture {i} has no 'input' and the spec has no shared 'input'")
        for key, value in (("input", inp), ("target", cap["target"])):
            if not isinstance(value, str):
                raise ConfigError(f"{path}: capture {i} {key} must be a file name (text), not {value!r}")
        knobs = cap["knobs"] if isinstance(cap["knobs"], list) else [cap["knobs"]]
        try:
            knobs = tuple(float(k) for k in knobs)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: capture {i} knobs must be numbers in 0..1") from None
        captures.append(CaptureSpec((resolve(inp),), (resolve(cap["target"]),), knobs))
    names = spec.get("knob_names") or []
    if not isinstance(names, list):
        raise ConfigError(f"{path}: knob_names must be a list of names, not {names!r}")
    return captures, [str(n) for n in names]
