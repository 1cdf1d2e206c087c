"""A model library: a folder of AGAM/NeuralPi model files and the ``index.json`` that describes them.

Every finished capture is added to the user's library, so the next capture of a similar
device can start from it: ranking (:func:`ampxfer_lib.transfer.rank.rank_library`) takes the
model files of one or several libraries from :func:`library_model_paths`. Layout::

    index.json       {"format": "ampxfer-model-library", "version": 1, "models": [ENTRY, ...]}
    <name>.json      one model file per entry, always AGAM/NeuralPi JSON (what training reads)

An entry (:class:`LibraryEntry`) says what the model is (name, kind of device, knob settings
when it was recorded, sample rate, test ESR), when it was added, where it came from and
under which licence it may be used. ``index.json`` is rewritten atomically after the model
file is in place, so a kill leaves either the old library or the new one; a model file that
no entry names is ignored.

Where the user's library lives (:func:`user_library_dir`): ``$AMPXFER_MODELS`` when set,
else ``~/.ampxfer/models`` on a local machine; in Colab ``OUT_DIR/library`` instead, because
the home folder of a Colab runtime is lost with it while ``OUT_DIR`` may be on Google Drive.
A folder without ``index.json`` (such as the shipped starting models, or a plain folder of
JSON files) is read as a library of all its ``*.json`` files.
"""

from __future__ import annotations


import datetime as _dt
import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ampxfer_lib.errors import ConfigError
from ampxfer_lib.fileio import PathLike, atomic_write_json, atomic_write_text, make_dirs
from ampxfer_lib.folders import hold_when_free

INDEX = "index.json"
LIBRARY_FORMAT = "ampxfer-model-library"
LIBRARY_VERSION = 1
#: Environment variable that moves the user's library (tests point it at a temporary folder).
LIBRARY_ENV = "AMPXFER_MODELS"
DEFAULT_LIBRARY = Path("~/.ampxfer/models")
#: The starting models that ship with the package (a plain folder of model files, maybe absent).
SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "starting_models"


def user_library_dir(out_dir: Optional[PathLike] = None, colab: Optional[bool] = None) -> Path:
    """The folder of the user's model library.

    ``$AMPXFER_MODELS`` wins; in Colab (``colab`` None: detected) with an ``out_dir`` it is
    ``out_dir/library``, so the library lives beside the notebooks' work (on Drive when
    OUT_DIR is); otherwise ``~/.ampxfer/models``. The notebooks call this with their OUT_DIR.
    """
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return Path(env).expanduser()
    if colab is None:
        import sys

        colab = "google.colab" in sys.modules
    if colab and out_dir is not None:
        return Path(out_dir) / "library"
    return DEFAULT_LIBRARY.expanduser()


def default_libraries(out_dir: Optional[PathLike] = None) -> List[Path]:
    """Where a capture looks for starting models by default: the user's library, then the shipped models."""
    return [user_library_dir(out_dir), SHIPPED_MODELS]


# --------------------------------------------------------------------------- entries

def parse_knobs(items: Union[None, Mapping[str, object], Iterable]) -> Tuple[Tuple[str, str], ...]:
    """Knob settings as ``(("gain", "7"), ...)`` from ``{"gain": 7}``, ``["gain=7"]`` or pairs.

    These describe the device as it was recorded (a snapshot capture); they are not model inputs.
    """
    if not items:
        return ()
    pairs = items.items() if isinstance(items, Mapping) else items
    out = []
    for item in pairs:
        if isinstance(item, str):
            if "=" not in item:
                raise ConfigError(f"--knob {item!r}: expected NAME=SETTING, e.g. --knob gain=7")
            key, value = item.split("=", 1)
        else:
            key, value = item
        key, value = str(key).strip(), str(value).strip()
        if not key:
            raise ConfigError(f"--knob {item!r}: the knob needs a name, e.g. --knob gain=7")
        out.append((key, value))
    return tuple(out)


@dataclass(frozen=True)
class LibraryEntry:
    """One model of a library; ``file`` is relative to the library folder."""

    name: str
    file: str
    kind: str = ""  # "overdrive", "amp", "fuzz", ...: free text
    knobs: Tuple[Tuple[str, str], ...] = ()  # the device's settings when it was recorded
    sample_rate: int = 44100
    hidden_size: int = 20
    skip: bool = True
    knob_inputs: int = 0  # knob inputs of a conditioned model (ranking folds them); 0 for a snapshot
    test_esr: Optional[float] = None
    date: str = ""  # ISO date the model was added
    source: str = ""  # where it came from: a capture, a URL, a file
    licence: str = ""  # "" = not stated
    sha256: str = ""  # of the model file, to notice a file changed behind the index's back
    capture: Optional[str] = None  # the capture folder it was made in (absolute), if any

    def to_dict(self) -> dict:
        d = asdict(self)
        d["knobs"] = dict(self.knobs)
        return d

    @classmethod
    def from_dict(cls, d: Mapping, where: str = INDEX) -> "LibraryEntry":
        known = {f for f in cls.__dataclass_fields__}
        if not isinstance(d, Mapping) or "name" not in d or "file" not in d:
            raise ConfigError(f"{where}: an entry without 'name' and 'file'; fix or delete that entry")
        values = {k: v for k, v in d.items() if k in known}
        try:
            values["knobs"] = parse_knobs(values.get("knobs") or ())
        except (TypeError, ValueError, ConfigError):
            raise ConfigError(f"{where}: entry {d['name']!r} has knobs that are not NAME: SETTING pairs; "
                              "fix or delete that entry") from None
        esr = values.get("test_esr")
        if esr is not None and not isinstance(esr, (int, float)):
            raise ConfigError(f"{where}: entry {d['name']!r} has a test_esr that is not a number; fix or delete it")
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"{where}: entry {d['name']!r} is damaged ({exc}); fix or delete that entry") from None


def slug(name: str) -> str:
    """A file-name-safe form of a model name: letters, digits, ``-``, ``_`` and ``.``."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip()).strip("._")
    return s or "model"


# --------------------------------------------------------------------------- the library

class ModelLibrary:
    """A library folder. Reading never writes; :meth:`add` and :meth:`remove` rewrite the index."""

    def __init__(self, path: PathLike):
        self.path = Path(path).expanduser()
        self.index_path = self.path / INDEX

    def __repr__(self) -> str:
        return f"ModelLibrary({str(self.path)!r})"

    def entries(self) -> List[LibraryEntry]:
        """The index's entries, in the order they were added ([] for a folder without an index)."""
        if not self.index_path.exists():
            return []
        fix = ("restore it from a backup, or delete it and add the models again with `ampxfer library add`")
        try:
            obj = json.loads(self.index_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.index_path}: unreadable model library index ({exc}); {fix}") from None
        except ValueError as exc:
            raise ConfigError(f"{self.index_path}: damaged model library index (not valid JSON: {exc}); {fix}") from None
        if not isinstance(obj, dict) or obj.get("format") != LIBRARY_FORMAT or not isinstance(obj.get("models"), list):
            raise ConfigError(f"{self.index_path}: not an ampxfer model library index; {fix}")
        if obj.get("version", 0) > LIBRARY_VERSION:
            raise ConfigError(f"{self.index_path}: written by a newer ampxfer (index version {obj['version']}); "
                              "upgrade ampxfer")
        entries = [LibraryEntry.from_dict(e, str(self.index_path)) for e in obj["models"]]
        names = [e.name for e in entries]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ConfigError(f"{self.index_path}: the name {dup!r} appears twice; {fix}")
        return entries

    def get(self, name: str) -> Optional[LibraryEntry]:
        return next((e for e in self.entries() if e.name == name), None)

    def model_path(self, entry: LibraryEntry) -> Path:
        return self.path / entry.file

    def _write(self, entries: Sequence[LibraryEntry]) -> None:
        atomic_write_json(self.index_path, {"format": LIBRARY_FORMAT, "version": LIBRARY_VERSION,
                                            "models": [e.to_dict() for e in entries]})

    def free_name(self, name: str) -> str:
        """``name``, or ``name-2``, ``name-3``, ... whichever is not taken yet."""
        taken = {e.name for e in self.entries()}
        if name not in taken:
            return name
        i = 2
        while f"{name}-{i}" in taken:
            i += 1
        return f"{name}-{i}"

    def add(self, model: PathLike, name: str, kind: str = "", knobs=(), test_esr: Optional[float] = None,
            source: str = "", licence: str = "", capture: Optional[PathLike] = None,
            date: Optional[str] = None) -> LibraryEntry:
        """Copy a model into the library (as AGAM/NeuralPi JSON) and index it; returns the entry.

        ``model``: any file ``ampxfer import`` reads (AGAM/NeuralPi, RTNeural/AIDA-X, NAM LSTM).
        A name already in the library is refused, unless the entry holds this very model
        (same weights): then the existing entry is returned and nothing is written.
        """
        from ampxfer_lib.model.formats import import_model, neuralpi

        name = str(name).strip()
        if not name:
            raise ConfigError("a library model needs a name (--name)")
        if test_esr is not None and not (isinstance(test_esr, (int, float)) and math.isfinite(test_esr) and test_esr >= 0):
            raise ConfigError(f"--test-esr must be a non-negative number, not {test_esr!r}")
        weights = import_model(model)
        text = neuralpi.dumps(weights)
        # Two captures finishing at once must not lose an entry: the read-modify-write of the
        # index holds the library folder.
        with hold_when_free(self.path, "library"):
            return self._add(model, weights, text, name, kind, knobs, test_esr, source, licence, capture, date)

    def _add(self, model, weights, text, name, kind, knobs, test_esr, source, licence, capture, date) -> LibraryEntry:
        entries = self.entries()  # refuses a damaged index before anything is written
        digest = _sha256_text(text)
        old = next((e for e in entries if e.name == name), None)
        if old is not None:
            if old.sha256 == digest:
                return old
            raise ConfigError(f"{self.path}: already holds a model named {name!r}; choose another --name, or "
                              f"`ampxfer library remove {name}` first")
        file = self._free_file(slug(name), entries)
        entry = LibraryEntry(
            name=name, file=file, kind=str(kind or ""), knobs=parse_knobs(knobs),
            sample_rate=weights.config.sample_rate, hidden_size=weights.config.hidden_size,
            skip=weights.config.skip, knob_inputs=weights.config.num_knobs, test_esr=None if test_esr is None else float(test_esr),
            date=date or _dt.date.today().isoformat(), source=str(source or os.path.abspath(model)),
            licence=str(licence or ""), sha256=digest,
            capture=None if capture is None else os.path.abspath(capture))
        make_dirs(self.path)
        atomic_write_text(self.path / file, text)
        self._write(entries + [entry])
        return entry

    def _free_file(self, stem: str, entries: Sequence[LibraryEntry]) -> str:
        used = {e.file for e in entries} | {INDEX}
        candidate, i = f"{stem}.json", 2
        # A file left by a removed entry or put there by hand is never overwritten either.
        while candidate in used or (self.path / candidate).exists():
            candidate, i = f"{stem}-{i}.json", i + 1
        return candidate

    def remove(self, name: str) -> LibraryEntry:
        """Drop an entry and delete its model file (the library's own copy); returns the entry."""
        with hold_when_free(self.path, "library"):
            return self._remove(name)

    def _remove(self, name: str) -> LibraryEntry:
        entries = self.entries()
        entry = next((e for e in entries if e.name == name), None)
        if entry is None:
            names = ", ".join(e.name for e in entries) or "none"
            raise ConfigError(f"{self.path}: no model named {name!r} (the library holds: {names})")
        self._write([e for e in entries if e.name != name])
        try:
            (self.path / entry.file).unlink()
        except FileNotFoundError:
            pass
        return entry


def _sha256_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- for ranking

@dataclass(frozen=True)
class FoundModel:
    """A model file found in a library, with what its index says about it (if anything)."""

    path: Path
    library: Path
    name: str
    entry: Optional[LibraryEntry] = None


def find_models(libraries: Sequence[PathLike], missing_ok: bool = False,
                log: Optional[Callable[[str], None]] = None) -> List[FoundModel]:
    """Every model of ``libraries``, in their order, each file once.

    A folder with ``index.json`` gives its indexed models (an entry whose file is gone is
    reported through ``log`` and left out); a folder without one gives all its ``*.json``
    files (recursively, hidden ones excepted). A missing folder is an error unless
    ``missing_ok`` (the default libraries may not exist yet).
    """
    log = log or (lambda msg: None)
    found: List[FoundModel] = []
    seen, seen_roots = set(), set()
    for lib in libraries:
        root = Path(lib).expanduser()
        if os.path.realpath(root) in seen_roots:
            continue
        seen_roots.add(os.path.realpath(root))
        if not root.is_dir():
            if missing_ok:
                continue
            raise ConfigError(f"{root}: no such folder; --library takes a folder of models (or a model library)")
        library = ModelLibrary(root)
        if library.index_path.exists():
            items = []
            for e in library.entries():
                p = library.model_path(e)
                if not p.is_file():
                    log(f"{library.index_path}: the file of {e.name!r} ({e.file}) is missing; left out")
                    continue
                items.append(FoundModel(p, root, e.name, e))
        else:
            items = [FoundModel(p, root, p.stem) for p in sorted(root.rglob("*.json"))
                     if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)]
        for item in items:
            key = os.path.realpath(item.path)
            if key not in seen:
                seen.add(key)
                found.append(item)
    return found


def library_model_paths(libraries: Sequence[PathLike], missing_ok: bool = False) -> List[Path]:
    """The model files of one or several libraries, for ``rank_library``."""
    return [m.path for m in find_models(libraries, missing_ok)]


def model_digest(path: PathLike) -> str:
    """sha256 of a model as the library stores it (AGAM/NeuralPi JSON): equal for equal weights."""
    from ampxfer_lib.model.formats import import_model, neuralpi

    return _sha256_text(neuralpi.dumps(import_model(path)))
