"""Colab helpers, and the one place for every URL the notebooks use.

Notebooks run in three places: Google Colab (a GPU maybe, files uploaded or on Google
Drive, internet), a local Jupyter, and CI (no internet at all). Everything that depends on
the place goes through here, and everything that needs the internet fails *fast* with a
:class:`~ampxfer_lib.errors.DownloadError` saying so, so a notebook can fall back to the
shipped sample data instead of hanging.

* :data:`REPO_URL`, :data:`REPO_REF`: the repository and the tag (or commit) the notebooks'
  Colab set-up cell installs when no uploaded wheel or zip is found
  (:func:`find_ampxfer_package`, :func:`install_ampxfer`); :func:`setup_cell_source` is that
  cell, word for word.
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
#
# The set-up cell runs before ampxfer is installed, so it cannot import it: the two functions
# below are copied into the cell (``inspect.getsource``, docstrings cut to their first line)
# and must use nothing but the standard library, imported inside them, and their arguments.
# They are tested here, as plain functions, on temporary folders.

#: Where the set-up cell looks for an uploaded wheel or zip (from ``make dist``), in this order:
#: Colab's working folder (the file browser's upload target), then a folder on Google Drive
#: (searched only when Drive is mounted).
UPLOAD_FOLDERS = ("/content", "/content/drive/MyDrive/ampxfer")


def find_ampxfer_package(folders, version):
    """The uploaded ampxfer package to install from: a path, or None when there is none.

    ``folders``: where to look, in order of preference; ``version``: the version the notebooks
    were written for ("0.1.0"). Candidates are files named ``ampxfer-<version>...whl`` (the
    wheel of ``make dist``) or ``ampxfer-<version>...zip`` (its zip: the source, notebooks
    and sample data; GitHub's "Download ZIP" of a tag has the same layout), also as a browser
    renames a second download ("ampxfer-0.1.0 (1).zip"). Best first: the notebooks' version
    over any other, a zip over a wheel (only the zip brings the sample data), an earlier
    folder over a later one, a newer file over an older one.
    """
    import os
    import re

    name_re = re.compile(r"ampxfer-(\d+(?:\.\d+)*(?:(?:a|b|rc|\.post|\.dev)\d+)?)"
                         r"(?:-py3-none-any)?(?: \(\d+\))?\.(whl|zip)")
    best, best_key = None, None
    for rank, folder in enumerate(folders):
        try:
            names = sorted(os.listdir(folder))
        except OSError:  # absent, e.g. Drive not mounted
            continue
        for name in names:
            m = name_re.fullmatch(name)
            path = os.path.join(folder, name)
            if not m or not os.path.isfile(path):
                continue
            key = (m.group(1) == version, m.group(2) == "zip", -rank, os.path.getmtime(path), name)
            if best_key is None or key > best_key:
                best, best_key = path, key
    return best


def install_ampxfer(package, checkout, repo, ref, version, folders, run, log=print):
    """Install ampxfer in Colab; returns how ("checkout", "zip", "wheel" or "clone").

    * ``checkout`` (e.g. /content/ampxfer) already holds ampxfer (this cell ran before):
      ``pip install -e`` it again;
    * ``package`` is a zip (from :func:`find_ampxfer_package`): unpack it to ``checkout``
      and ``pip install -e`` it (library, notebooks and sample data, as a clone has them);
    * ``package`` is a wheel: ``pip install`` it (the library alone: no sample data);
    * no package: clone ``repo`` at ``ref`` (a tag, or a 40-hex commit) into ``checkout``.

    ``run(argv)`` runs a command and raises on failure (``subprocess.run(..., check=True)``).
    Raises RuntimeError saying what to upload when nothing works. Colab's own torch (its
    CUDA build) satisfies ampxfer's requirement and is left as it is.
    """
    import os
    import re
    import shutil
    import subprocess
    import sys
    import tempfile
    import zipfile

    pip = [sys.executable, "-m", "pip", "install", "-q"]
    if os.path.isfile(os.path.join(checkout, "pyproject.toml")):
        run(pip + ["-e", checkout])
        log(f"ampxfer: using {checkout} from an earlier run of this cell (delete that folder to install "
            "another version)")
        return "checkout"
    if os.path.exists(checkout):
        raise RuntimeError(f"{checkout}: exists but holds no ampxfer (no pyproject.toml); rename or delete it "
                           "and rerun this cell")
    if package and package.endswith(".zip"):
        with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(checkout))) as tmp:
            with zipfile.ZipFile(package) as z:
                z.extractall(tmp)
            tops = os.listdir(tmp)
            # make dist's zip and GitHub's "Download ZIP" hold one folder, ampxfer-<version>/
            root = os.path.join(tmp, tops[0]) if len(tops) == 1 else tmp
            if not os.path.isfile(os.path.join(root, "pyproject.toml")):
                raise RuntimeError(f"{package}: not an ampxfer zip (no pyproject.toml inside); upload the "
                                   f"dist/ampxfer-{version}.zip that `make dist` writes and rerun this cell")
            os.makedirs(checkout)
            for name in os.listdir(root):
                os.replace(os.path.join(root, name), os.path.join(checkout, name))
        run(pip + ["-e", checkout])
        log(f"ampxfer: installed from {package}, unpacked to {checkout} (library, notebooks, sample data)")
        return "zip"
    if package and package.endswith(".whl"):
        # pip needs the wheel's own name; a browser's "ampxfer-0.1.0-py3-none-any (1).whl" is not one.
        with tempfile.TemporaryDirectory() as tmp:
            wheel = os.path.join(tmp, re.sub(r" \(\d+\)", "", os.path.basename(package)))
            shutil.copyfile(package, wheel)
            run(pip + [wheel])
        log(f"ampxfer: installed from {package} (the library only: for the sample data upload "
            f"ampxfer-{version}.zip too and rerun this cell, or use your own recordings)")
        return "wheel"
    try:
        if len(ref) == 40 and all(c in "0123456789abcdef" for c in ref):  # a commit: fetch just that one
            for cmd in (["init", "-q", checkout], ["-C", checkout, "fetch", "-q", "--depth", "1", repo, ref],
                        ["-C", checkout, "checkout", "-q", "FETCH_HEAD"]):
                run(["git"] + cmd)
        else:
            run(["git", "clone", "-q", "--depth", "1", "--branch", ref, repo, checkout])
    except (OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(checkout, ignore_errors=True)  # a half-made clone would pass for a checkout
        why = f"git exit status {exc.returncode}" if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        what = "the commit" if len(ref) == 40 else "the tag"
        raise RuntimeError(
            f"no ampxfer wheel or zip found in {' or '.join(folders)}, and {what} {ref} could not be cloned from "
            f"{repo} ({why}): upload dist/ampxfer-{version}.zip (or dist/ampxfer-{version}-py3-none-any.whl) "
            "from `make dist` via the file browser on the left and rerun this cell") from None
    run(pip + ["-e", checkout])
    log(f"ampxfer: cloned {repo} at {ref} into {checkout}")
    return "clone"


def setup_cell_source(url: str = REPO_URL, ref: str = REPO_REF) -> str:
    """The first code cell of every notebook: install ampxfer in Colab (from an uploaded
    wheel or zip, else the pinned tag) and optionally mount Google Drive; nothing elsewhere.

    It cannot import ampxfer (it installs it), hence the literals and the copies of
    :func:`find_ampxfer_package` and :func:`install_ampxfer`.
    """
    import inspect

    from ampxfer_lib import __version__

    def copy(fn) -> str:  # the function's source, its docstring cut to the first line
        source = inspect.getsource(fn)
        doc = inspect.getdoc(fn)
        start = source.index('"""')
        end = source.index('"""', start + 3) + 3
        return source[:start] + '"""' + doc.splitlines()[0] + '"""' + source[end:]

    helpers = "\n\n".join(copy(f) for f in (find_ampxfer_package, install_ampxfer))
    return f'''# Colab set-up: install ampxfer, check for a GPU. Elsewhere (your Jupyter, CI) it does nothing:
# there ampxfer is installed by `make venv`. In Colab it installs, in this order: the ampxfer
# zip or wheel of `make dist` uploaded to /content (or in MyDrive/ampxfer on a mounted Drive),
# else the version these notebooks were written for from GitHub.
import sys
AMPXFER_REPO = "{url}"
AMPXFER_REF = "{ref}"  # a tag or a commit
AMPXFER_VERSION = "{__version__}"
MOUNT_DRIVE = False  #@param {{type:"boolean"}}


{helpers}

if "google.colab" in sys.modules:
    import importlib, subprocess
    if MOUNT_DRIVE:  # keep OUT_DIR on Drive (e.g. /content/drive/MyDrive/ampxfer): runs survive the runtime
        from google.colab import drive
        drive.mount("/content/drive")
    folders = {UPLOAD_FOLDERS!r}
    how = install_ampxfer(find_ampxfer_package(folders, AMPXFER_VERSION), "{COLAB_CHECKOUT}", AMPXFER_REPO,
                          AMPXFER_REF, AMPXFER_VERSION, folders, lambda argv: subprocess.run(argv, check=True))
    if how != "wheel":
        sys.path.insert(0, "{COLAB_CHECKOUT}")  # importable now, without restarting the runtime
    importlib.invalidate_caches()
    import torch
    print("GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available()
          else "none (Runtime > Change runtime type > T4 GPU makes training faster)")'''
