"""A study's config: which device pairs, which data sizes and seeds, and the training budget.

A study config (:class:`StudyConfig`, a JSON file; examples in ``ampxfer_lib/study/studies/``)
names device pairs. Each pair's target is a prepared data folder; its source is either a
model file (``{"model": path}``, optionally with ``"knobs"`` to fold a conditioned model into
a snapshot) or a data folder (``{"data": folder}``) that a source run is first trained on.
:func:`load_study` reads and checks one; :mod:`ampxfer_lib.study.plan` turns it into runs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

from ampxfer_lib.errors import ConfigError
from ampxfer_lib.fileio import PathLike, read_json_config
from ampxfer_lib.training.config import PRESETS, TRAIN_FIELD_RULES, TrainConfig
from ampxfer_lib.validate import check_study_config

DATA_SIZES = ("full", "limited")
#: Settings a study may override for every run (the rest of TrainConfig belongs to it).
_RESERVED = {"data", "subset", "preset", "init_from", "seed", "max_epochs", "patience", "threads"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
#: The study configs installed with the package.
STUDIES_DIR = Path(__file__).resolve().parent / "studies"


@dataclass(frozen=True)
class SourceSpec:
    """Where a pair's starting model comes from: a model file or a data folder to train on."""

    model: Optional[str] = None
    data: Optional[str] = None
    knobs: Tuple[float, ...] = ()  # fold a conditioned model at these knob values

    def to_dict(self) -> dict:
        if self.model is not None:
            d = {"model": self.model}
            if self.knobs:
                d["knobs"] = list(self.knobs)
            return d
        return {"data": self.data}


@dataclass(frozen=True)
class PairSpec:
    """A source -> target device pair. ``target`` is a prepared data folder."""

    name: str
    source: SourceSpec
    target: str
    target_name: str = ""  # names the target's scratch runs (default: the folder's name)

    def target_key(self) -> str:
        return self.target_name or Path(self.target).name

    def to_dict(self) -> dict:
        d = {"name": self.name, "source": self.source.to_dict(), "target": {"data": self.target}}
        if self.target_name:
            d["target"]["name"] = self.target_name
        return d


@dataclass(frozen=True)
class StudyConfig:
    """A study: pairs, and the training budget both arms share.

    ``train`` overrides TrainConfig fields for every run (e.g. ``hidden_size``); ``transfer``
    overrides them for the transfer runs only (the fine-tuning recipe, e.g. ``lr``,
    ``freeze_lstm_epochs``). ``max_epochs``/``patience`` default to the preset's;
    ``max_epochs`` may also be ``{"full": N, "limited": M}`` (equal wall-clock budgets: an
    epoch on limited data is cheaper), and ``source_max_epochs`` budgets the source runs
    (default: the full-data budget).
    Paths are kept as written; :func:`load_study` resolves them.
    """

    pairs: Tuple[PairSpec, ...]
    preset: str = "agam"
    data_sizes: Tuple[str, ...] = DATA_SIZES
    seeds: Tuple[int, ...] = (0,)
    max_epochs: Union[None, int, Dict[str, int]] = None
    source_max_epochs: Optional[int] = None
    patience: Optional[int] = None
    threads: int = 1
    train: Dict[str, object] = field(default_factory=dict)
    transfer: Dict[str, object] = field(default_factory=dict)
    source_seed: int = 0
    smoke_epochs: int = 2
    name: str = ""

    def __post_init__(self):
        if not self.pairs:
            raise ConfigError("the study has no pairs; add {\"name\", \"source\", \"target\"} entries to \"pairs\"")
        check_study_config(self, TRAIN_FIELD_RULES)
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; one of {', '.join(sorted(PRESETS))}")
        bad = [d for d in self.data_sizes if d not in DATA_SIZES]
        if bad or not self.data_sizes:
            raise ConfigError(f"data_sizes must be a non-empty list of {' / '.join(DATA_SIZES)}, not {list(self.data_sizes)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be a non-empty list of distinct integers, not {list(self.seeds)}")
        if self.threads < 1:
            raise ConfigError("threads must be at least 1")
        if self.smoke_epochs < 1:
            raise ConfigError("smoke_epochs must be at least 1")
        budgets = self.max_epochs if isinstance(self.max_epochs, dict) else {"full": self.max_epochs}
        if isinstance(self.max_epochs, dict) and sorted(self.max_epochs) != sorted(self.data_sizes):
            raise ConfigError(f"max_epochs names {sorted(self.max_epochs)}; give a budget for each of the "
                              f"data_sizes {list(self.data_sizes)} (or one number)")
        for n in list(budgets.values()) + [self.source_max_epochs]:
            if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
                raise ConfigError(f"max_epochs must be a whole number of at least 1, not {n!r}")
        names = [p.name for p in self.pairs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"pair name {dup[0]!r} is used twice; give every pair its own name")
        for what, overrides in (("train", self.train), ("transfer", self.transfer)):
            known = {f.name for f in fields(TrainConfig)}
            unknown = sorted(set(overrides) - known)
            if unknown:
                raise ConfigError(f"{what}: unknown training setting(s) {', '.join(unknown)}")
            reserved = sorted(set(overrides) & _RESERVED)
            if reserved:
                raise ConfigError(f"{what}: {', '.join(reserved)} is set by the study itself "
                                  "(use the study's preset/max_epochs/patience/seeds/threads)")

    def to_dict(self) -> dict:
        d = {"pairs": [p.to_dict() for p in self.pairs], "preset": self.preset,
             "data_sizes": list(self.data_sizes), "seeds": list(self.seeds), "max_epochs": (dict(self.max_epochs) if isinstance(self.max_epochs, dict)
                                                            else self.max_epochs),
             "source_max_epochs": self.source_max_epochs, "patience": self.patience, "threads": self.threads, "train": dict(self.train),
             "transfer": dict(self.transfer), "source_seed": self.source_seed, "smoke_epochs": self.smoke_epochs}
        if self.name:
            d["name"] = self.name
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "study config") -> "StudyConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a JSON object with \"pairs\"")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(d)
        if not isinstance(d.get("pairs") or [], list):
            raise ConfigError(f"{where}: pairs must be a list of {{\"name\", \"source\", \"target\"}} objects")
        values["pairs"] = tuple(_pair_from_dict(p, i, where) for i, p in enumerate(d.get("pairs") or []))
        for key in ("data_sizes", "seeds"):
            if key in values:
                if not isinstance(values[key], list):
                    raise ConfigError(f"{where}: {key} must be a list")
                values[key] = tuple(values[key])
        if "seeds" in values and not all(isinstance(s, int) and not isinstance(s, bool) for s in values["seeds"]):
            raise ConfigError(f"{where}: seeds must be integers")
        for key in ("train", "transfer"):
            if key in values and not isinstance(values[key], dict):
                raise ConfigError(f"{where}: {key} must be an object of training settings")
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def resolve(self, base: PathLike) -> "StudyConfig":
        """The config with relative data/model paths made absolute against ``base``."""
        base = Path(base)

        def res(p: Optional[str]) -> Optional[str]:
            if p is None:
                return None
            q = Path(os.path.expanduser(p))
            # abspath, not resolve(): a symlinked folder keeps the name the user gave it
            return os.path.abspath(q if q.is_absolute() else base / q)

        pairs = tuple(replace(p, target=res(p.target),
                              source=replace(p.source, model=res(p.source.model), data=res(p.source.data)))
                      for p in self.pairs)
        return replace(self, pairs=pairs)


def _pair_from_dict(p, i: int, where: str) -> PairSpec:
    if not isinstance(p, dict):
        raise ConfigError(f"{where}: pairs[{i}] must be an object with name, source and target")
    unknown = sorted(set(p) - {"name", "source", "target"})
    if unknown:
        raise ConfigError(f"{where}: pairs[{i}] has unknown key(s) {', '.join(unknown)}")
    src, tgt = p.get("source"), p.get("target")
    if isinstance(tgt, str):
        tgt = {"data": tgt}
    if not isinstance(tgt, dict) or not isinstance(tgt.get("data"), str):
        raise ConfigError(f"{where}: pairs[{i}].target must be {{\"data\": \"prepared data folder\"}}")
    if not isinstance(src, dict) or (("model" in src) == ("data" in src)):
        raise ConfigError(f"{where}: pairs[{i}].source must be {{\"model\": \"model.json\"}} or "
                          "{\"data\": \"prepared data folder\"} (one of the two)")
    for key in ("model", "data"):
        if key in src and not isinstance(src[key], str):
            raise ConfigError(f"{where}: pairs[{i}].source.{key} must be a path (text), not {src[key]!r}")
    if "name" in tgt and not isinstance(tgt["name"], str):
        raise ConfigError(f"{where}: pairs[{i}].target.name must be text, not {tgt['name']!r}")
    if "knobs" in src and "model" not in src:
        raise ConfigError(f"{where}: pairs[{i}].source.knobs applies to a source model, not to data")
    unknown = sorted(set(src) - {"model", "data", "knobs"}) + sorted(set(tgt) - {"data", "name"})
    if unknown:
        raise ConfigError(f"{where}: pairs[{i}] has unknown key(s) {', '.join(unknown)}")
    knobs = src.get("knobs", [])
    if not isinstance(knobs, list) or not all(isinstance(k, (int, float)) and 0 <= k <= 1 for k in knobs):
        raise ConfigError(f"{where}: pairs[{i}].source.knobs must be a list of numbers in 0..1")
    source = SourceSpec(model=src.get("model"), data=src.get("data"), knobs=tuple(float(k) for k in knobs))
    target_name = str(tgt.get("name", ""))
    name = p.get("name") or f"{path_stem(source.model or source.data)}_to_{target_name or Path(tgt['data']).name}"
    for what, value in (("name", name), ("target name", target_name or Path(tgt["data"]).name)):
        if not _NAME.match(str(value)):
            raise ConfigError(f"{where}: pairs[{i}] {what} {value!r} must be letters, digits, '_', '-', '.' or '+' "
                              "(it names folders)")
    return PairSpec(name=str(name), source=source, target=tgt["data"], target_name=target_name)


def path_stem(path: str) -> str:
    """What names a source or target in run ids: a model file's stem, or a folder's name."""
    return Path(path).stem if path.endswith(".json") else Path(path).name


def load_study(path: PathLike, data_root: Optional[PathLike] = None) -> StudyConfig:
    """Read a study JSON; relative paths resolve against ``data_root`` or the file's folder."""
    path = Path(path)
    d = read_json_config(path, "no such study config; see ampxfer_lib/study/studies/ for examples", "study config")
    config = StudyConfig.from_dict(d, where=str(path))
    return config.resolve(data_root if data_root is not None else path.parent)


def prepare_sample_pairs(data_root: PathLike, config=None, progress: bool = True,
                         log: Callable[[str], None] = print) -> Dict[str, Path]:
    """Prepare the four sample devices into ``data_root/<device>`` (what the shipped studies name).

    Renders the sample recordings on first use (:func:`ampxfer_lib.sample_data.files.ensure_sample_data`)
    and runs the ordinary ``prepare`` on each (latency detected, 44.1 kHz, 40 s validation,
    20 s test, 30 s limited subset by default). Folders already prepared from the same
    recordings and settings are left as they are. Returns {device: data folder}.
    """
    from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare
    from ampxfer_lib.sample_data.files import ensure_sample_data

    sample = ensure_sample_data(progress=progress)
    config = config or PrepareConfig()
    out = {}
    for name, target in sample.targets.items():
        folder = Path(data_root) / name
        prepare([CaptureSpec((str(sample.di),), (str(target),))], folder, config)
        log(f"prepared {folder}")
        out[name] = folder
    return out


def shipped_studies() -> Dict[str, Path]:
    """The study configs installed with the package, by name (``sample_pairs``, ...)."""
    return {p.stem: p for p in sorted(STUDIES_DIR.glob("*.json"))}
