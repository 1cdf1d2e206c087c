"""Colab helpers, and the one place for every URL the notebooks use.

Notebooks run in three places: Google Colab (a GPU maybe, files uploaded or on Google
Drive, internet), a local Jupyter, and CI (no internet at all). Everything that depends on
the place goes through here, and everything that needs the internet fails *fast* with a
:class:`~ampxfer_lib.errors.DownloadError` saying so, so a notebook can fall back to the
shipped sample data instead of hanging.

* :data:`REPO_URL`, :data:`REPO_REF`: the repository and the tag (or commit) the notebooks'
  Colab set-up cell installs; :func:`setup_cell_source` is that cell, word for word.
* :data:`STARTING_MODELS`: public captures of real gear (GuitarML NeuralPi models, AGAM JSON,
  LSTM 20) that can start a transfer, by URL pinned to a commit.
* :func:`in_colab`, :func:`gpu_report`, :func:`mount_drive`, :func:`upload_files`.
* :func:`download` (any URL), :func:`download_shared_drive` (a Google Drive share link, via
  gdown when it is installed, as it is in Colab), :func:`fetch_starting_model`.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ampxfer_lib.errors import AmpxferError, ConfigError, DownloadError
from ampxfer_lib.fileio import PathLike, atomic_write_bytes
from ampxfer_lib.paths import realdata_dir

#: The project's repository and the tag or commit the notebooks are pinned to. The Colab
#: set-up cell of every notebook holds these two literals (it runs before ampxfer is
#: installed); ``python -m ampxfer_lib.notebooks sync`` rewrites the cells after a change.
REPO_URL = "https://github.com/ampxfer/ampxfer"
REPO_REF = "v0.1.0"
#: Where the set-up cell clones the repository in Colab (sample_data/ comes with it).
COLAB_CHECKOUT = "/content/ampxfer"
#: Seconds a download may take before it is given up (the whole transfer, name lookup included).
DEFAULT_TIMEOUT = 20.0
MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class StartingModel:
    """A public capture that can start a transfer."""

    name: str
    url: str
    description: str
    knobs: int  # 0: a snapshot; 1: conditioned on one knob (fold it to a snapshot to start from)
    source: str  # the repository it comes from, and its licence

    @property
    def file_name(self) -> str:
        return Path(urllib.parse.urlparse(self.url).path).name


def _neuralpi(commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/GuitarML/NeuralPi/{commit}/{path}"


_NEURALPI = "GuitarML/NeuralPi (GPL-3.0)"
#: Captures of real gear from the NeuralPi plugin's repository, pinned to commits.
STARTING_MODELS: Dict[str, StartingModel] = {m.name: m for m in (
    StartingModel("TS9_FullD", _neuralpi("059817ec03559b0559f0c27136dfb49bf8a89d3f", "models/TS9_FullD.json"),
                  "Ibanez TS9 Tube Screamer, drive full (snapshot)", 0, _NEURALPI),
    StartingModel("BluesJR_FullD", _neuralpi("059817ec03559b0559f0c27136dfb49bf8a89d3f", "models/BluesJR_FullD.json"),
                  "Fender Blues Junior, drive full (snapshot)", 0, _NEURALPI),
    StartingModel("TS9", _neuralpi("e88a8ec94c679f1562ff911880b3d855ae712ab1", "models/TS9.json"),
                  "Ibanez TS9 with its drive knob as an input (conditioned)", 1, _NEURALPI),
    StartingModel("BluesJr", _neuralpi("7d6376bc33f9f505884fe1f91b449c73ad43a3da", "models/BluesJr.json"),
                  "Fender Blues Junior with its gain knob as an input (conditioned)", 1, _NEURALPI),
    StartingModel("HT40_Overdrive", _neuralpi("7d6376bc33f9f505884fe1f91b449c73ad43a3da", "models/HT40_Overdrive.json"),
                  "Blackstar HT40, overdrive channel, gain knob as an input (conditioned)", 1, _NEURALPI),
)}


# --------------------------------------------------------------------------- the place

def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


def gpu_report() -> str:
    """One line: the GPU training will use, or why there is none."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB); training runs on it"
    hint = " (Runtime > Change runtime type > T4 GPU makes training faster)" if in_colab() else ""
    return f"no GPU: training runs on the CPU, {os.cpu_count()} core(s){hint}"


def mount_drive(mount_point: str = "/content/drive", log: Callable[[str], None] = print) -> Optional[Path]:
    """Mount Google Drive in Colab (asks for permission); elsewhere do nothing and return None."""
    if not in_colab():
        log("Google Drive mounting works in Colab only; here, give local paths instead")
        return None
    from google.colab import drive  # type: ignore[import-not-found]

    drive.mount(mount_point)
    return Path(mount_point) / "MyDrive"


def upload_files(dest: PathLike, log: Callable[[str], None] = print) -> List[Path]:
    """Colab's upload dialog; the chosen files are written to ``dest``. Returns their paths.

    Outside Colab there is no dialog: raises ConfigError (give local paths instead).
    """
    if not in_colab():
        raise ConfigError("uploading works in Colab only; here, copy the files somewhere and give their paths")
    from google.colab import files  # type: ignore[import-not-found]

    dest = Path(dest)
    paths = []
    for name, data in files.upload().items():
        path = dest / Path(name).name
        atomic_write_bytes(path, data)
        log(f"uploaded {path} ({len(data) / 1e6:.1f} MB)")
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- downloads

def _with_deadline(fn: Callable[[], object], timeout: float, what: str):
    """Run ``fn`` in a daemon thread and give up after ``timeout`` seconds.

    Socket timeouts do not cover the name lookup, which can hang far longer on a machine
    without a network; a deadline on the whole call does.
    """
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name=f"ampxfer-download")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise DownloadError(f"{what}: no answer within {timeout:g} s; are you offline? "
                            "(the notebooks fall back to the shipped sample data)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return f"{type(exc).__name__}: {exc}"


def download(url: str, dest: PathLike, timeout: float = DEFAULT_TIMEOUT, overwrite: bool = False) -> Path:
    """Download ``url`` to the file ``dest`` (atomically); returns ``dest``.

    Raises DownloadError within about ``timeout`` seconds when offline, on an HTTP error or
    a bad URL. An existing ``dest`` is kept (no download) unless ``overwrite``.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        return dest
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: not an http(s) URL; give a link that starts with https://")

    def fetch() -> bytes:
        request = urllib.request.Request(url, headers={"User-Agent": "ampxfer"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(MAX_DOWNLOAD_BYTES + 1)
        if len(data) > MAX_DOWNLOAD_BYTES:
            raise DownloadError(f"{url}: larger than {MAX_DOWNLOAD_BYTES // 2**20} MiB; download it yourself")
        return data

    try:
        data = _with_deadline(fetch, timeout, url)
    except DownloadError:
        raise
    except (OSError, ValueError, urllib.error.URLError) as exc:
        raise DownloadError(f"{url}: download failed ({_reason(exc)}); check the link and the internet "
                            "connection (the notebooks fall back to the shipped sample data)") from None
    atomic_write_bytes(dest, data)
    return dest


_DRIVE_PATTERNS = (
    re.compile(r"drive\.google\.com/file/d/([A-Za-z0-9_-]{10,})"),
    re.compile(r"drive\.google\.com/(?:open|uc)\?(?:.*&)?id=([A-Za-z0-9_-]{10,})"),
    re.compile(r"docs\.google\.com/\w+/d/([A-Za-z0-9_-]{10,})"),
)


def drive_file_id(link: str) -> str:
    """The file id of a Google Drive share link (or the id itself)."""
    link = link.strip()
    for pattern in _DRIVE_PATTERNS:
        m = pattern.search(link)
        if m:
            return m.group(1)
    if re.fullmatch(r"[A-Za-z0-9_-]{20,}", link):
        return link
    raise ConfigError(f"{link!r}: not a Google Drive file link; share the file (Anyone with the link) and copy "
                      "a link like https://drive.google.com/file/d/FILE_ID/view")


def download_shared_drive(link: str, dest_dir: PathLike, name: Optional[str] = None,
                          timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Download a file shared on Google Drive ("Anyone with the link") into ``dest_dir``.

    Uses gdown when installed (Colab has it; it handles large-file confirmation pages),
    plain HTTP otherwise. ``name`` defaults to the id. Raises DownloadError when offline.
    """
    file_id = drive_file_id(link)
    dest = Path(dest_dir) / (name or file_id)
    try:
        import gdown  # type: ignore[import-not-found]
    except ImportError:
        gdown = None
    if gdown is None:
        return download(f"https://drive.google.com/uc?export=download&id={file_id}", dest, timeout)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.part")

    def fetch():
        return gdown.download(id=file_id, output=str(partial), quiet=True)

    try:
        result = _with_deadline(fetch, timeout, link)
    except DownloadError:
        raise
    except Exception as exc:  # gdown raises its own types
        raise DownloadError(f"{link}: download failed ({_reason(exc)}); is the file shared with 'Anyone with "
                            "the link', and are you online?") from None
    if not result or not partial.exists():
        raise DownloadError(f"{link}: nothing was downloaded; is the file shared with 'Anyone with the link'?")
    os.replace(partial, dest)
    return dest


def local_model_dirs() -> List[Path]:
    """Folders searched for a catalogue model's file before/instead of downloading it.

    ``$AMPXFER_MODELS`` (a folder of model JSON files), then the real-gear captures of the
    shared real data (``models/neuralpi`` in :func:`ampxfer_lib.paths.realdata_dir`), when present.
    """
    dirs = []
    env = os.environ.get("AMPXFER_MODELS")
    if env:
        dirs.append(Path(env).expanduser())
    realdata = realdata_dir()
    if realdata is not None:
        dirs.append(realdata / "models" / "neuralpi")
    return [d for d in dirs if d.is_dir()]


def fetch_starting_model(name: str, dest_dir: PathLike, timeout: float = DEFAULT_TIMEOUT,
                         log: Callable[[str], None] = print) -> Path:
    """A catalogue model as a local file: already in ``dest_dir``, downloaded, or a local copy.

    The download is checked by loading it as a model. Raises DownloadError (offline and no
    local copy) or ConfigError (unknown name).
    """
    from ampxfer_lib.model.formats import load_model

    if name not in STARTING_MODELS:
        raise ConfigError(f"unknown starting model {name!r}; one of {', '.join(STARTING_MODELS)}")
    entry = STARTING_MODELS[name]
    dest = Path(dest_dir) / entry.file_name
    if dest.exists():
        return dest
    try:
        download(entry.url, dest, timeout)
        try:
            load_model(dest)
        except AmpxferError:
            dest.unlink()
            raise DownloadError(f"{entry.url}: the download is not a model file (the link may have moved)") from None
        log(f"downloaded {entry.name}: {entry.description} -> {dest}")
        return dest
    except DownloadError as exc:
        for folder in local_model_dirs():
            local = folder / entry.file_name
            if local.is_file():
                log(f"{exc}\nusing the local copy {local}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(local, dest)
                return dest
        raise


# --------------------------------------------------------------------------- set-up cell

def setup_cell_source(url: str = REPO_URL, ref: str = REPO_REF) -> str:
    """The first code cell of every notebook: install ampxfer in Colab (and optionally mount
    Google Drive), do nothing elsewhere.

    It cannot import ampxfer (it installs it), hence the literals. A clone (not a pip URL
    install) brings sample_data/ along; ``pip install -e`` keeps Colab's own CUDA torch.
    """
    return f'''# Colab set-up: install ampxfer at the version these notebooks were written for, check for a GPU.
# Elsewhere (your Jupyter, CI) it does nothing: there ampxfer is installed by `make venv`.
import sys
AMPXFER_REPO = "{url}"
AMPXFER_REF = "{ref}"  # a tag or a commit
MOUNT_DRIVE = False  #@param {{type:"boolean"}}
if "google.colab" in sys.modules:
    import os, subprocess
    where = "{COLAB_CHECKOUT}"
    if not os.path.isdir(where):
        if len(AMPXFER_REF) == 40:  # a commit: fetch just that one
            for cmd in (["init", "-q", where], ["-C", where, "fetch", "-q", "--depth", "1", AMPXFER_REPO, AMPXFER_REF],
                        ["-C", where, "checkout", "-q", "FETCH_HEAD"]):
                subprocess.run(["git", *cmd], check=True)
        else:
            subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", AMPXFER_REF, AMPXFER_REPO, where], check=True)
    # Colab's own (CUDA) torch satisfies ampxfer's requirement and is left as it is.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", where], check=True)
    sys.path.insert(0, where)  # importable now, without restarting the runtime
    if MOUNT_DRIVE:  # keep OUT_DIR on Drive (e.g. /content/drive/MyDrive/ampxfer): runs survive the runtime
        from google.colab import drive
        drive.mount("/content/drive")
    import torch
    print("GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available()
          else "none (Runtime > Change runtime type > T4 GPU makes training faster)")'''
