"""What the notebook suite does, as library functions (the notebooks hold parameters and prose).

The notebooks 01-04 share one work folder and hand work to each other through files only::

    OUT_DIR/
      recordings/           trimmed copies of the recordings (smoke mode), downloads, uploads
      data/<device>/        prepared data, one folder per device (full and limited are
                            subsets of it: ``Dataset.split("train", "limited")``)
      models/               starting models fetched from the catalogue (ampxfer_lib.colab)
      study.json            the study: device pairs (written by 01, read by 02 and 03)
      study/                the study folder (ampxfer_lib.study): runs/, results.csv,
                            table1.md, figures/
      listening/            rendered clips, null tests, ABX answers (04)

Budgets (:data:`BUDGETS`): ``demo`` caps the epochs so the whole suite runs in about 30-45
minutes on two CPU cores and still shows transfer starting and ending lower; ``article`` is
the published recipe (early stopping, no cap that matters: hours on a CPU). Smoke mode
(``AMPXFER_SMOKE=1``) cuts every recording to a few seconds and trains two epochs per run.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .data import MANIFEST, CaptureSpec, PrepareConfig, load_dataset, prepare
from .errors import ConfigError
from .fileio import PathLike, atomic_write_json

SMOKE_ENV = "AMPXFER_SMOKE"
STUDY_FILE = "study.json"
#: Seconds of every recording kept in smoke mode, and the split lengths used then.
SMOKE_SECONDS = 14.0
SMOKE_PREPARE = dict(val_seconds=2.0, test_seconds=2.0, limited_seconds=4.0)


def smoke_mode() -> bool:
    """True when AMPXFER_SMOKE=1 (CI): tiny data, two epochs per run."""
    return os.environ.get(SMOKE_ENV) == "1"


def cpu_threads(threads: int = 1) -> str:
    """Pin torch to ``threads`` threads on a CPU-only machine (a small LSTM runs fastest on one;
    more threads only fight each other and other runs). Returns a line to print."""
    import torch

    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    torch.set_num_threads(threads)
    return f"CPU only: torch uses {threads} thread(s) in this notebook, {os.cpu_count()} core(s) available"


# --------------------------------------------------------------------------- data preparation

def trim_recording(src: PathLike, dest: PathLike, seconds: float) -> Path:
    """Write the first ``seconds`` of ``src`` to ``dest`` (same rate, 24-bit FLAC or float WAV)."""
    import soundfile as sf

    from .audio import write_audio

    dest = Path(dest)
    info = sf.info(str(src))
    n = min(info.frames, int(round(seconds * info.samplerate)))
    x, rate = sf.read(str(src), frames=n, dtype="float64", always_2d=True)
    if dest.exists():
        old, old_rate = sf.read(str(dest), dtype="float64", always_2d=True)
        if old_rate == rate and old.shape == x[:, :1].shape and np.allclose(old[:, 0], x[:, 0], atol=2 ** -22):
            return dest
    write_audio(dest, x[:, 0], rate, subtype="PCM_24" if dest.suffix.lower() == ".flac" else "FLOAT")
    return dest


def prepare_config(smoke: bool = False, **overrides) -> PrepareConfig:
    """The suite's PrepareConfig: the library defaults (40 s validation, 20 s test, 30 s
    limited training set), or the smoke-mode splits."""
    values = dict(SMOKE_PREPARE) if smoke else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return PrepareConfig(**values)


def prepare_devices(recordings: Dict[str, Tuple[str, str]], out_dir: PathLike, config: PrepareConfig,
                    seconds: Optional[float] = None, overwrite: bool = False,
                    log: Callable[[str], None] = print) -> Dict[str, dict]:
    """Prepare one data folder per device: ``recordings`` maps name -> (DI path, device path).

    Writes ``out_dir/data/<name>/``; with ``seconds`` the recordings are first cut to their
    first ``seconds`` (copies in ``out_dir/recordings/``; the originals are only read).
    Returns name -> manifest. A folder already prepared from the same files and settings is
    left as it is.
    """
    out = Path(out_dir)
    manifests = {}
    for name, (di, target) in recordings.items():
        if seconds is not None:
            cut = out / "recordings"
            di = str(trim_recording(di, cut / f"{Path(di).stem}_{seconds:g}s.flac", seconds))
            target = str(trim_recording(target, cut / f"{name}_{seconds:g}s.flac", seconds))
        manifests[name] = prepare([CaptureSpec((di,), (target,))], out / "data" / name, config,
                                  overwrite=overwrite, log=log)
    return manifests


def prepare_sample_devices(out_dir: PathLike, devices: Optional[Sequence[str]] = None, smoke: bool = False,
                           config: Optional[PrepareConfig] = None,
                           log: Callable[[str], None] = print) -> Dict[str, dict]:
    """The shipped sample data (rendered on first use) prepared into ``out_dir/data/<device>``."""
    from .sample_data import ensure_sample_data

    sample = ensure_sample_data(devices=devices)
    recordings = {name: (str(sample.di), str(path)) for name, path in sample.targets.items()}
    return prepare_devices(recordings, out_dir, config or prepare_config(smoke),
                           seconds=SMOKE_SECONDS if smoke else None, log=log)


def findings_rows(data_dirs: Dict[str, PathLike], expected_latency: Optional[Dict[str, int]] = None) -> List[dict]:
    """What the checks found, one row per device: rate, latency, polarity, levels, warnings.

    ``expected_latency``: known latencies (samples at the recordings' rate) to compare with,
    e.g. the sample data's ground truth.
    """
    from .audio import peak_dbfs, rms_dbfs

    rows = []
    for name, folder in data_dirs.items():
        ds = load_dataset(folder)
        m = ds.manifest
        pair = m["captures"][0]["pairs"][0]
        lat = pair["latency"]
        det = lat["detected"]
        tgt = np.concatenate([s.target for split in ("train", "val", "test") for s in ds.split(split)])
        row = {
            "device": name,
            "recorded at (Hz)": pair["target"]["sample_rate"],
            "model rate (Hz)": m["sample_rate"],
            "seconds": round(pair["seconds_aligned"], 1),
            "latency (samples)": lat["samples"],
            "latency (ms)": round(1000.0 * lat["samples"] / m["sample_rate"], 2),
            "confidence": round(float(det.get("confidence", 0.0)), 2),
            "polarity": "inverted" if det.get("polarity", 1) < 0 else "normal",
            "target peak (dBFS)": round(peak_dbfs(tgt), 1),
            "target RMS (dBFS)": round(rms_dbfs(tgt), 1),
            "clipping": sum(w["details"].get("count", 0) for w in m["warnings"] if w["code"] == "clipping"),
            "warnings": "; ".join(w["code"] for w in m["warnings"]) or "none",
        }
        if expected_latency and name in expected_latency:
            true = expected_latency[name] * m["sample_rate"] / pair["target"]["sample_rate"]
            row["true latency (samples)"] = round(true, 1)
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[dict]) -> str:
    """A list of equal-keyed dicts as a Markdown table (for notebooks' ``display(Markdown(...))``)."""
    if not rows:
        return "(nothing)"
    keys = list(rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the suite's study

def write_study_file(out_dir: PathLike, pairs: Sequence[dict], name: str = "notebooks") -> Path:
    """Write ``out_dir/study.json``: the device pairs 02 and 03 train (study config format,
    paths relative to ``out_dir``). ``pairs``: [{"name", "source": {"data"|"model"}, "target": {"data"}}]."""
    path = Path(out_dir) / STUDY_FILE
    atomic_write_json(path, {"name": name, "preset": "agam", "data_sizes": ["full", "limited"], "seeds": [0],
                             "threads": 1, "pairs": list(pairs)})
    return path


def sample_pairs() -> List[dict]:
    """The sample data's two pairs (ts9 -> mt2, bluesjr -> ht40), as study.json entries."""
    from .devices import DEVICES, PAIRS

    return [{"name": DEVICES[s].pair, "source": {"data": f"data/{s}"}, "target": {"data": f"data/{t}"}}
            for s, t in PAIRS]
