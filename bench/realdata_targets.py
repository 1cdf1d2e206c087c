"""Real DI through real-gear models, as prepared data folders (shared by the study benches).

The DI is ``../shared/realdata/di``: eight real guitar clips at 48 kHz, joined in name order
with 0.25 s of silence between them and resampled to 44.1 kHz (about 173 s). A "device" is
a model file of a real capture, played over the whole DI from a zero state (knob values for
conditioned models). The recording has no latency, so data are prepared with ``align 0``.
Everything is cached under ``out/bench/realdata`` (git-ignored) and reused when present.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "out" / "bench" / "realdata"
RATE = 44100
GAP_SECONDS = 0.25


def realdata_dir() -> Optional[Path]:
    """``$AMPXFER_REALDATA`` or ``<repo>/../shared/realdata``; None when absent."""
    path = Path(os.environ.get("AMPXFER_REALDATA") or REPO.parent / "shared" / "realdata")
    return path if path.is_dir() else None


def require_realdata() -> Path:
    path = realdata_dir()
    if path is None:
        print(f"skipped: {REPO.parent / 'shared' / 'realdata'} is absent (set AMPXFER_REALDATA to its location)")
        raise SystemExit(0)
    return path


def joined_di(real: Path, work: Path = WORK, seconds: Optional[float] = None) -> Path:
    """All DI clips joined and resampled: ``work/di_44100.wav`` (float32); the first
    ``seconds`` of it when given."""
    import soundfile as sf

    from ampxfer_lib.data.audio import read_audio, resample

    out = work / (f"di_{RATE}.wav" if seconds is None else f"di_{RATE}_{seconds:g}s.wav")
    if out.exists():
        return out
    if seconds is not None:
        x, _ = sf.read(joined_di(real, work), dtype="float32")
        sf.write(out, x[:int(round(seconds * RATE))], RATE, subtype="FLOAT")
        return out
    pieces = []
    for i, path in enumerate(sorted((real / "di").glob("*.flac"))):
        clip = read_audio(path)
        if i:
            pieces.append(np.zeros(int(round(GAP_SECONDS * RATE))))
        pieces.append(resample(clip.samples, clip.sample_rate, RATE))
    work.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.wav")
    sf.write(tmp, np.concatenate(pieces).astype(np.float32), RATE, subtype="FLOAT")
    os.replace(tmp, out)
    return out


def slug(model: Path, knobs: Sequence[float]) -> str:
    name = re.sub(r"[^A-Za-z0-9_]+", "_", model.stem)
    return name + "".join(f"_k{round(k * 100):03d}" for k in knobs)


def device_data(real: Path, model: Path, knobs: Sequence[float] = (), work: Path = WORK,
                val_seconds: float = 40.0, test_seconds: float = 20.0, limited_seconds: float = 30.0,
                seconds: Optional[float] = None) -> Path:
    """A prepared data folder of the DI (its first ``seconds``) through ``model`` at ``knobs``."""
    import soundfile as sf

    from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare
    from ampxfer_lib.model.formats import load_model
    from ampxfer_lib.model.render import render

    di = joined_di(real, work, seconds)
    name = slug(model, knobs) + ("" if seconds is None else f"_{seconds:g}s")
    target = work / "rendered" / f"{name}.wav"
    if not target.exists():
        x, _ = sf.read(di, dtype="float32")
        y = render(load_model(model), x, knobs)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp.wav")
        sf.write(tmp, y, RATE, subtype="FLOAT")
        os.replace(tmp, target)
    tag = f"v{val_seconds:g}_t{test_seconds:g}_l{limited_seconds:g}"
    out = work / "data" / tag / name
    if (out / "manifest.json").exists():
        # a cache: the audio is a pure function of (DI, model, knobs, splits); a newer library
        # that adds a check setting must not invalidate the runs trained on it
        return out
    config = PrepareConfig(rate=RATE, align="0", val_seconds=val_seconds, test_seconds=test_seconds,
                           limited_seconds=limited_seconds)
    prepare([CaptureSpec((str(di),), (str(target),))], out, config)
    return out
