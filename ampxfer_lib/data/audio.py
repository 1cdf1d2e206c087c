"""Reading, writing and resampling audio, and the checks on a single recording.

Everything here speaks in files and seconds, because its messages go to guitarists:
every problem is one line naming the file, what is wrong and what to do about it.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from ampxfer_lib.errors import AudioError
from ampxfer_lib.fileio import PathLike, atomic_write_bytes


#: A float recording peaking above this (1 dB over full scale) is reported as over range
#: rather than as clipping: a level a little over 1.0 is ordinary clipping's business.
OVER_RANGE_PEAK = 10 ** (1 / 20)


@dataclass(frozen=True)
class CheckConfig:
    """Thresholds of the recording checks (the defaults of the core library issue)."""

    latency_window_seconds: float = 0.2
    silence_dbfs: float = -60.0
    clip_level: float = 0.999
    clip_run: int = 3
    dc_offset: float = 0.01
    # Aligned, gain-matched target vs input: an ESR below this means the device did nothing.
    bypass_esr: float = 0.01
    # Inverted polarity is reported only when the low-passed input and target correlate at
    # least this strongly with a negative sign: heavy distortion leaves little linear
    # correlation, and its sign then says nothing (measured on real high-gain captures).
    polarity_correlation: float = 0.3

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Finding:
    """A warning about a recording: recorded in the manifest, printed, never fatal."""

    code: str
    file: str
    message: str
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"code": self.code, "file": self.file, "message": self.message, "details": self.details}

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class AudioClip:
    """A mono recording as read from disk. ``samples`` is (T,) float64 in [-1, 1] (a float file may exceed it)."""

    path: str
    samples: np.ndarray
    sample_rate: int
    channels: int
    subtype: str
    channel_used: Optional[int] = None

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def read_audio(path: PathLike, channel: Optional[int] = None, role: str = "audio",
               flag: str = "--channel") -> AudioClip:
    """Read any file soundfile can decode (WAV 8/16/24/32-bit int or float, FLAC, ...).

    Mono files are returned as they are. For multi-channel files ``channel`` (0-based)
    picks one; without it, channels must be identical (a mono signal saved as stereo),
    otherwise the file is refused, since picking one silently could pick the wrong mic.
    ``role`` ("input", "target") and ``flag`` (the option that picks the channel) only word
    the messages.
    """
    import soundfile as sf

    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(f"{path}: no such file; check the {role} path")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a folder; give the {role} recording's file")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: the file is empty (0 bytes); export the {role} recording again")
    errors = (sf.LibsndfileError, RuntimeError, TypeError, ValueError)
    try:
        f = sf.SoundFile(path, "r")
    except errors as exc:
        detail = str(exc).split("\n")[0]
        detail = detail.split("': ", 1)[-1][:120]  # libsndfile repeats the path: "Error opening 'PATH': why"
        raise AudioError(
            f"{path}: not an audio file ampxfer can read ({detail}); export the {role} as WAV or FLAC"
        ) from None
    with f:
        rate, n_channels, subtype = int(f.samplerate), int(f.channels), str(f.subtype)
        try:
            data = f.read(dtype="float64", always_2d=True)
        except errors as exc:  # a header that reads, then damaged data (a cut-off FLAC)
            detail = str(exc).split("\n")[0].removeprefix("Error : ")[:120]
            raise AudioError(f"{path}: the audio data is damaged ({detail}); copy or export the {role} "
                             "again") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: contains no audio (zero length); export the {role} recording again")
    if n_channels == 1:
        return AudioClip(path, data[:, 0].copy(), rate, 1, subtype, None)
    if channel is not None:
        if not 0 <= channel < n_channels:
            raise AudioError(f"{path}: has {n_channels} channels, so {flag} must be 0..{n_channels - 1}, "
                             f"not {channel}")
        return AudioClip(path, data[:, channel].copy(), rate, n_channels, subtype, channel)
    peak = float(np.max(np.abs(data))) if data.size else 0.0
    spread = float(np.max(np.abs(data - data[:, :1])))
    if spread > 1e-6 * max(peak, 1e-12):
        raise AudioError(f"{path}: is {n_channels}-channel and the channels differ; choose the one that "
                         f"holds the {role} with {flag} N (0 = left, 1 = right)")
    return AudioClip(path, data[:, 0].copy(), rate, n_channels, subtype, None)


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling (soxr, very high quality). (T,) -> (T * to / from,)."""
    if from_rate == to_rate:
        return np.asarray(x, dtype=np.float64)
    import soxr

    # soxr through librosa's "soxr_vhq" is this same call; calling soxr directly avoids
    # importing librosa (and numba's JIT warm-up) on every command.
    return np.asarray(soxr.resample(np.asarray(x, dtype=np.float64), from_rate, to_rate, quality="VHQ"))


def write_audio(path: PathLike, x: np.ndarray, sample_rate: int, subtype: str = "FLOAT") -> None:
    """Write mono audio atomically. ``subtype`` is a soundfile subtype (FLOAT, PCM_24, ...)."""
    import soundfile as sf

    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"write_audio expects mono (T,), got {x.shape}")
    fmt = "FLAC" if os.fspath(path).lower().endswith(".flac") else "WAV"
    buf = io.BytesIO()
    sf.write(buf, x, sample_rate, subtype=subtype, format=fmt)
    atomic_write_bytes(path, buf.getvalue())


def rms_dbfs(x: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def peak_dbfs(x: np.ndarray) -> float:
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def clipping_runs(x: np.ndarray, level: float = 0.999, min_run: int = 3) -> List[Tuple[int, int]]:
    """Runs of at least ``min_run`` consecutive samples with |x| >= level: [(start, length)]."""
    hot = np.abs(x) >= level
    if not hot.any():
        return []
    edges = np.diff(np.concatenate(([0], hot.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    lengths = ends - starts
    keep = lengths >= min_run
    return list(zip(starts[keep].tolist(), lengths[keep].tolist()))


def check_finite(clip: AudioClip, role: str) -> None:
    """Refuse NaN or infinite samples (only float files can hold them): a damaged export."""
    x = clip.samples
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        first = int(np.flatnonzero(~np.isfinite(x))[0])
        raise AudioError(f"{clip.path}: {bad} NaN or infinite samples (first at {first / clip.sample_rate:.3f} s); "
                         f"the file is damaged: export the {role} again as 24-bit or float WAV")


def check_recording(clip: AudioClip, role: str, checks: CheckConfig) -> List[Finding]:
    """Errors (raised) and warnings (returned) that concern one recording on its own."""
    x = clip.samples
    check_finite(clip, role)
    level = rms_dbfs(x)
    if level < checks.silence_dbfs:
        hint = ("is the device switched on and the track armed?" if role == "target"
                else "was the DI track armed and the guitar plugged in?")
        lvl = "-inf" if math.isinf(level) else f"{level:.1f}"
        raise AudioError(f"{clip.path}: the {role} is silent (RMS {lvl} dBFS, below {checks.silence_dbfs:g}); {hint}")
    findings: List[Finding] = []
    peak = float(np.max(np.abs(x)))
    clip_level = checks.clip_level
    if peak > OVER_RANGE_PEAK:  # only float files hold values beyond full scale
        findings.append(Finding(
            "over_range", clip.path,
            f"the {role} is float audio peaking at {peak:.2f} ({peak_dbfs(x):+.1f} dBFS), above full scale: nothing "
            "clipped in the file, but a plugin or interface playing this level would; lower both recordings by the "
            f"same gain (at least {peak_dbfs(x) + 1:.0f} dB) in the DAW and export again",
            {"peak": peak},
        ))
        # Flat tops at the file's own peak are still clipping (a DAW bus that clipped before
        # the float export); values beyond 1.0 alone are not. Float keeps a flat top exact, so
        # only samples at the peak itself count (0.999 of it would catch a slow sine's crest).
        clip_level = peak * (1.0 - 1e-6)
    runs = clipping_runs(x, clip_level, checks.clip_run)
    if runs:
        times = [round(s / clip.sample_rate, 3) for s, _ in runs]
        shown = ", ".join(f"{t:.2f} s" for t in times[:5]) + (" ..." if len(times) > 5 else "")
        findings.append(Finding(
            "clipping", clip.path,
            f"the {role} clips in {len(runs)} place(s) (at {shown}); record with a few dB more headroom "
            "(peaks around -6 dBFS)",
            {"count": len(runs), "times_s": times[:100], "samples": int(sum(n for _, n in runs))},
        ))
    dc = float(np.mean(x))
    if abs(dc) > checks.dc_offset:
        findings.append(Finding(
            "dc_offset", clip.path,
            f"the {role} has a DC offset of {dc:+.3f}; check the interface, or high-pass the recording at ~10 Hz",
            {"mean": dc},
        ))
    return findings
