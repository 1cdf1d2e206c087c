"""What the notebook suite does, as library functions (the notebooks hold parameters and prose).

The notebooks 01-04 share one work folder and hand work to each other through files only::

    OUT_DIR/
      recordings/           trimmed copies of the recordings (smoke mode), downloads, uploads
      data/<device>/        prepared data, one folder per device (full and limited are
                            subsets of it: ``Dataset.split("train", "limited")``)
      models/               starting models fetched from the catalogue (ampxfer_lib.notebooks.colab)
      study.json            the study: device pairs (written by 01, read by 02 and 03)
      study/                the study folder (ampxfer_lib.study): runs/, results.csv,
                            table1.md, figures/
      listening/            rendered clips, null tests, ABX answers (04)
      suite.json            which data 01 prepared: the sample study, or your device
                            (ampxfer_lib.notebooks.mine: captures/<name>/, capture folders)

Budgets (:data:`BUDGETS`): ``demo`` caps the epochs so the whole suite runs in about 30-45
minutes on two CPU cores and still shows transfer starting and ending lower; ``article`` is
the published recipe (early stopping, no cap that matters: hours on a CPU). Smoke mode
(``AMPXFER_SMOKE=1``) cuts every recording to a few seconds and trains two epochs per run.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ampxfer_lib.data.dataset import load_dataset
from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.fileio import PathLike, atomic_write_json

#: Smoke mode's switch, for the notebooks and the runner that starts their kernels.
SMOKE_ENV = "AMPXFER_SMOKE"
STUDY_FILE = "study.json"
#: Seconds of every recording kept in smoke mode, and the split lengths used then.
SMOKE_SECONDS = 30.0
SMOKE_PREPARE = dict(val_seconds=2.0, test_seconds=2.0, limited_seconds=4.0)


def smoke_mode() -> bool:
    """True when AMPXFER_SMOKE=1 (CI, ``python -m ampxfer_lib.notebooks run --smoke``): tiny data,
    two epochs per run. Every notebook reads smoke mode through this one function."""
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

    from ampxfer_lib.data.audio import write_audio

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
    from ampxfer_lib.sample_data.files import ensure_sample_data

    sample = ensure_sample_data(devices=devices)
    recordings = {name: (str(sample.di), str(path)) for name, path in sample.targets.items()}
    return prepare_devices(recordings, out_dir, config or prepare_config(smoke),
                           seconds=SMOKE_SECONDS if smoke else None, log=log)


def findings_rows(data_dirs: Dict[str, PathLike], expected_latency: Optional[Dict[str, int]] = None) -> List[dict]:
    """What the checks found, one row per device: rate, latency, polarity, levels, warnings.

    ``expected_latency``: known latencies (samples at the recordings' rate) to compare with,
    e.g. the sample data's ground truth.
    """
    from ampxfer_lib.data.audio import peak_dbfs, rms_dbfs

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
    from ampxfer_lib.sample_data.devices import DEVICES, PAIRS

    return [{"name": DEVICES[s].pair, "source": {"data": f"data/{s}"}, "target": {"data": f"data/{t}"}}
            for s, t in PAIRS]


# --------------------------------------------------------------------------- budgets and runs

#: Training budgets of the notebooks, both with the published AGAM recipe (so the notebooks show
#: the article's setting, not a faster one). ``demo``: epoch caps that fit the whole suite in
#: 15-30 minutes on two CPU cores (measured: 12 min on an idle machine) and still show transfer
#: starting and ending lower on both pairs; ``article``: run until early stopping (hours on a
#: CPU). Smoke mode trains 2 epochs per run.
BUDGETS: Dict[str, dict] = {
    "demo": {"preset": "agam", "max_epochs": {"full": 60, "limited": 100}, "source_max_epochs": 60,
             "patience": None},
    "article": {"preset": "agam", "max_epochs": None, "source_max_epochs": None, "patience": None},
}
STUDY_DIR = "study"


def suite_study(out_dir: PathLike, budget: str = "demo", epochs_full: int = 0, epochs_limited: int = 0, **overrides):
    """The study of ``out_dir/study.json`` (written by notebook 01) with a budget applied.

    ``epochs_full``/``epochs_limited`` (> 0) replace the budget's epoch caps (the full-data
    cap also caps the source runs); ``overrides`` are StudyConfig fields (``None`` ignored).
    """
    from ampxfer_lib.study.config import load_study
    from ampxfer_lib.training.config import DEFAULT_PRESET, TrainConfig

    if budget not in BUDGETS:
        raise ConfigError(f"BUDGET must be one of {', '.join(BUDGETS)}, not {budget!r}")
    path = Path(out_dir) / STUDY_FILE
    if not path.exists():
        raise ConfigError(f"{path}: missing; run notebook 01 (data preparation) with the same OUT_DIR first")
    config = load_study(path)
    values = dict(BUDGETS[budget])
    values["preset"] = values["preset"] or DEFAULT_PRESET
    if epochs_full > 0 or epochs_limited > 0:
        caps = values["max_epochs"] if isinstance(values["max_epochs"], dict) else \
            {"full": TrainConfig.max_epochs, "limited": TrainConfig.max_epochs}
        caps = dict(caps)
        if epochs_full > 0:
            caps["full"] = int(epochs_full)
            values["source_max_epochs"] = int(epochs_full)
        if epochs_limited > 0:
            caps["limited"] = int(epochs_limited)
        values["max_epochs"] = caps
    values.update({k: v for k, v in overrides.items() if v is not None})
    return replace(config, **values)


def run_units(config, out_dir: PathLike, roles: Sequence[str], workers: int = 2, smoke: bool = False,
              live: bool = True, log: Callable[[str], None] = print):
    """Train the study's runs of the given roles (``source``, ``scratch``, ``transfer``) into
    ``out_dir/study``, ``workers`` at a time in worker processes, with a live loss plot in a
    notebook (``workers=0``: one after the other in this process, with progress bars); finished runs are skipped, interrupted ones resume. Returns the StudyOutcome
    (results.csv, table1.md and figures/ are rewritten from every run on disk)."""
    from ampxfer_lib.study.executors import InProcessExecutor, ProcessExecutor
    from ampxfer_lib.study.plan import plan_study
    from ampxfer_lib.study.run import run_study

    folder = Path(out_dir) / STUDY_DIR
    specs = [s for s in plan_study(config, folder, smoke) if s.role in roles]
    if workers < 1:  # in this process: a progress bar per run, no live plot (the kernel is busy)
        plot = None
        executor = InProcessExecutor(progress=live)
    else:
        plot = LiveStudyPlot(specs) if live else None
        executor = ProcessExecutor(workers, poll=plot.update if plot else None, poll_seconds=15.0)
    outcome = run_study(config, folder, executor, smoke=smoke, log=log, roles=roles)
    if plot is not None:
        plot.update([])
    return outcome


class LiveStudyPlot:
    """Validation curves of a set of runs, redrawn from their ``history.json`` files.

    One panel per (target, data size); in a notebook the figure is shown once and updated in
    place (as a PNG, which renders everywhere, Colab included). ``update(running)`` is the
    ProcessExecutor's poll hook; ``figure`` always holds the latest drawing.
    """

    def __init__(self, specs, title: str = "validation loss while training"):
        from ampxfer_lib.study.report import in_notebook

        self.specs = list(specs)
        self.title = title
        self.display = in_notebook()
        self.figure = None
        self._handle = None

    def panels(self) -> Dict[Tuple[str, str], Dict[str, list]]:
        from ampxfer_lib.training import checkpoint as ckpt

        out: Dict[Tuple[str, str], Dict[str, list]] = {}
        for s in self.specs:
            label = s.role if s.role != "source" else f"source ({s.target})"
            key = (s.target if s.role != "source" else "sources", s.data_size)
            hist = ckpt.read_history(s.run_dir) if Path(s.run_dir).is_dir() else []
            out.setdefault(key, {})[label] = hist
        return out

    def update(self, running=()) -> None:
        from matplotlib.figure import Figure

        from ampxfer_lib.study.report import figure_png, plot_val_curves

        panels = self.panels()
        n = max(1, len(panels))
        cols = min(2, n)
        rows = math.ceil(n / cols)
        fig = Figure(figsize=(6.0 * cols, 3.6 * rows), layout="constrained")
        busy = {s.run_id for s in running}
        for i, ((target, data), curves) in enumerate(sorted(panels.items())):
            ax = fig.add_subplot(rows, cols, i + 1)
            now = [s.run_id for s in self.specs if s.run_id in busy and
                   (s.target if s.role != "source" else "sources", s.data_size) == (target, data)]
            plot_val_curves(curves, title=f"{target}, {data} data" + (" (training)" if now else ""), ax=ax)
        fig.suptitle(self.title)
        self.figure = fig
        if self.display:
            from IPython.display import Image, display

            image = Image(data=figure_png(fig), format="png")
            if self._handle is None:
                self._handle = display(image, display_id=True)
            else:
                self._handle.update(image)


# --------------------------------------------------------------------------- your own recordings

HOW = ("local paths", "upload (Colab)", "Google Drive (Colab)", "shared Drive links")


def find_recordings(di: str, source: str, target: str, how: str, out_dir: PathLike,
                    log: Callable[[str], None] = print) -> Dict[str, str]:
    """Notebook 01's recordings as local files: ``{"di", "source", "target"}`` (``source`` may be "").

    ``di``: the clean DI; ``source``: that DI through a device like the new one (optional: it
    becomes a starting model); ``target``: the DI through the new device. ``how``: one of
    :data:`HOW`: plain paths; names of files chosen in Colab's upload dialog; paths relative
    to "My Drive" after mounting Google Drive; or Drive share links (downloaded into
    ``out_dir/recordings``). A file that is not there is a ConfigError naming its parameter.
    """
    from ampxfer_lib.notebooks import colab

    if how not in HOW:
        raise ConfigError(f"GET_FILES must be one of {', '.join(HOW)}, not {how!r}")
    if not di or not target:
        raise ConfigError("MY_DI and MY_TARGET are needed: the clean DI and the same DI recorded through the new device")
    folder = Path(out_dir) / "recordings"
    roles = {"di": di, "source": source, "target": target}
    if how == "upload (Colab)":
        colab.upload_files(folder, log=log)
        roles = {k: str(folder / Path(v).name) if v else "" for k, v in roles.items()}
    elif how == "Google Drive (Colab)":
        root = colab.mount_drive(log=log)
        if root is not None:
            roles = {k: (v if not v or os.path.isabs(v) else str(root / v)) for k, v in roles.items()}
    elif how == "shared Drive links":
        roles = {k: str(colab.download_shared_drive(v, folder, name=f"{k}_download")) if v else ""
                 for k, v in roles.items()}
    for k, v in roles.items():
        if v and not Path(v).is_file():
            raise ConfigError(f"{v}: no such file (MY_{k.upper()})")
    return roles


#: What notebook 01 says after a check of your recordings failed (appended to the error's line).
OWN_RECORDINGS_FIX = ('fix that in the parameters cell (or the file) and run this notebook again; DATA = "sample" '
                      "runs the suite on the sample data instead")
