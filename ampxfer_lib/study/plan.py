"""The transfer-learning study: scratch vs transfer on device pairs, as independent runs.

A study config (:class:`StudyConfig`, a JSON file) names device pairs. For every pair,
data size (``full``, ``limited``) and seed the target device is trained twice with the same
preset, epoch budget, early-stopping rule and validation audio: from scratch, and starting
from the source device's model. The source is either a model file (``{"model": path}``,
optionally with ``"knobs"`` to fold a conditioned model into a snapshot) or a data folder
(``{"data": folder}``), in which case a *source run* is trained from scratch on its full data
first; the transfers of that pair wait for it.

Planning (:func:`plan_study`) turns a config into :class:`RunSpec` units, each one training
run with its own run folder under ``OUT/runs``. Units are dispatched by an executor:
:class:`InProcessExecutor` (sequential, the default) or :class:`RayExecutor` (optional
dependency; a local or remote Ray cluster). Each unit pins torch to ``threads`` threads, so
runs side by side do not oversubscribe the cores, and a unit's result does not depend on
where it ran. A run whose folder already holds its finished summary is skipped without being
dispatched; an interrupted one resumes from its checkpoint.

Scratch runs depend only on the target, so pairs that share a target share its scratch runs.

Layout of a study folder::

    plan.json                       the config and every planned run (written first)
    sources/<pair>.json             a conditioned source model folded at its knobs
    runs/source/<pair>/             source runs (trained from the source's data)
    runs/scratch/<target>/<data>/seed<k>/
    runs/transfer/<pair>/<data>/seed<k>/
    results.csv, table1.md, figures/<pair>_<data>.png|svg     (see :mod:`ampxfer_lib.study.report`)
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ampxfer_lib.training import checkpoint as ckpt
from ampxfer_lib.errors import ConfigError, RunFolderError, TrainingDiverged
from ampxfer_lib.fileio import PathLike, atomic_write_json
from ampxfer_lib.training.loop import PRESETS, TrainConfig, make_config

ROLES = ("source", "scratch", "transfer")
DATA_SIZES = ("full", "limited")
PLAN = "plan.json"
#: What a study folder holds; anything else means --out points at someone's files.
STUDY_FILES = {PLAN, "runs", "sources", "figures", "results.csv", "table1.md"}
#: Settings a study may override for every run (the rest of TrainConfig belongs to it).
_RESERVED = {"data", "subset", "preset", "init_from", "seed", "max_epochs", "patience", "threads"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


# --------------------------------------------------------------------------- config

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
    name = p.get("name") or f"{_stem(source.model or source.data)}_to_{target_name or Path(tgt['data']).name}"
    for what, value in (("name", name), ("target name", target_name or Path(tgt["data"]).name)):
        if not _NAME.match(str(value)):
            raise ConfigError(f"{where}: pairs[{i}] {what} {value!r} must be letters, digits, '_', '-', '.' or '+' "
                              "(it names folders)")
    return PairSpec(name=str(name), source=source, target=tgt["data"], target_name=target_name)


def _stem(path: str) -> str:
    return Path(path).stem if path.endswith(".json") else Path(path).name


def load_study(path: PathLike, data_root: Optional[PathLike] = None) -> StudyConfig:
    """Read a study JSON; relative paths resolve against ``data_root`` or the file's folder."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such study config; see ampxfer_lib/study/studies/ for examples") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable JSON study config ({exc})") from None
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
    folder = Path(__file__).resolve().parent / "studies"
    return {p.stem: p for p in sorted(folder.glob("*.json"))}


# --------------------------------------------------------------------------- planning

@dataclass(frozen=True)
class RunSpec:
    """One training run of a study: an independent unit of work.

    ``after`` lists the run ids this one needs finished first (a transfer needs its
    trained source). ``pairs`` lists every pair the run serves (scratch runs are shared by
    pairs with the same target).
    """

    run_id: str
    role: str
    pairs: Tuple[str, ...]
    target: str
    data_size: str
    seed: int
    config: TrainConfig
    run_dir: str
    after: Tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "role": self.role, "pairs": list(self.pairs), "target": self.target,
                "data_size": self.data_size, "seed": self.seed, "config": self.config.to_dict(),
                "run_dir": self.run_dir, "after": list(self.after)}

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        return cls(run_id=d["run_id"], role=d["role"], pairs=tuple(d["pairs"]), target=d["target"],
                   data_size=d["data_size"], seed=int(d["seed"]), config=TrainConfig.from_dict(d["config"]),
                   run_dir=d["run_dir"], after=tuple(d.get("after", ())))


def folded_source_path(out_dir: PathLike, pair: str) -> Path:
    return Path(out_dir) / "sources" / f"{pair}.json"


def plan_study(config: StudyConfig, out_dir: PathLike, smoke: bool = False) -> List[RunSpec]:
    """Every run of the study, sources first (a valid execution order). No side effects."""
    out = Path(out_dir).resolve()
    common = dict(config.train, patience=config.patience, threads=config.threads)

    def budget(subset: str, source: bool = False) -> Optional[int]:
        if smoke:
            return config.smoke_epochs
        if source and config.source_max_epochs is not None:
            return config.source_max_epochs
        if isinstance(config.max_epochs, dict):
            return config.max_epochs.get(subset, config.max_epochs.get("full"))
        return config.max_epochs

    def cfg(data: str, subset: str, seed: int, source: bool = False, **extra) -> TrainConfig:
        return make_config(data, config.preset, **dict(common, subset=subset, seed=seed,
                                                        max_epochs=budget(subset, source), **extra))

    specs: List[RunSpec] = []
    source_runs: Dict[str, str] = {}  # resolved source data -> run id (pairs may share a source)
    for pair in config.pairs:
        if pair.source.data is not None and pair.source.data not in source_runs:
            run_id = f"source/{pair.name}"
            specs.append(RunSpec(run_id, "source", (pair.name,), _stem(pair.source.data), "full", config.source_seed,
                                 cfg(pair.source.data, "full", config.source_seed, source=True),
                                 str(out / "runs" / run_id)))
            source_runs[pair.source.data] = run_id
        elif pair.source.data is not None:
            i = next(i for i, s in enumerate(specs) if s.run_id == source_runs[pair.source.data])
            specs[i] = replace(specs[i], pairs=specs[i].pairs + (pair.name,))

    targets: Dict[str, str] = {}
    for pair in config.pairs:
        key = pair.target_key()
        if targets.setdefault(key, pair.target) != pair.target:
            raise ConfigError(f"two different target folders are both named {key!r} ({targets[key]} and "
                              f"{pair.target}); give one of them \"name\" in its target")

    scratch: Dict[tuple, int] = {}
    for pair in config.pairs:
        if pair.source.data is not None:
            init, after = str(out / "runs" / source_runs[pair.source.data]), (source_runs[pair.source.data],)
        elif pair.source.knobs:
            init, after = str(folded_source_path(out, pair.name)), ()
        else:
            init, after = pair.source.model, ()
        for data_size in config.data_sizes:
            for seed in config.seeds:
                key = (pair.target_key(), data_size, seed)
                if key in scratch:
                    i = scratch[key]
                    specs[i] = replace(specs[i], pairs=specs[i].pairs + (pair.name,))
                else:
                    run_id = f"scratch/{key[0]}/{data_size}/seed{seed}"
                    scratch[key] = len(specs)
                    specs.append(RunSpec(run_id, "scratch", (pair.name,), key[0], data_size, seed,
                                         cfg(pair.target, data_size, seed), str(out / "runs" / run_id)))
                run_id = f"transfer/{pair.name}/{data_size}/seed{seed}"
                specs.append(RunSpec(run_id, "transfer", (pair.name,), key[0], data_size, seed,
                                     cfg(pair.target, data_size, seed, **dict(config.transfer, init_from=init)),
                                     str(out / "runs" / run_id), after))
    return specs


def run_state(spec: RunSpec) -> str:
    """``done`` (finished: its summary is final), ``partial`` (resumable), ``new`` or ``other``.

    ``other``: the folder holds a different run; the trainer will refuse it with the reason.
    A run stopped at ``max_epochs`` is not done when the spec allows more epochs (it is
    extended). ``diverged`` runs count as done: training them again gives the same result.
    """
    d = Path(spec.run_dir)
    record = ckpt.read_json(d / ckpt.CONFIG) if d.is_dir() else None
    if record is None:
        return "new"
    try:
        theirs = TrainConfig.from_dict(record.get("train", {})).identity()
    except Exception:
        return "other"
    if theirs != spec.config.identity():
        return "other"
    summary = ckpt.read_summary(d)
    if not summary or summary.get("status") not in ("complete", "diverged"):
        return "partial"
    if summary.get("stop_reason") == "max_epochs" and summary.get("epochs", 0) < spec.config.max_epochs:
        return "partial"
    return "done"


def execute_run(spec: RunSpec, progress: bool = False) -> dict:
    """Train one unit (resuming it if interrupted) and return its summary.

    The run's per-epoch lines go to ``train.log`` in its folder. A run that diverges is a
    result of the study, not an error: its summary (status ``diverged``) is returned.
    """
    from ampxfer_lib.training.loop import LogLines, TqdmProgress, train

    log_path = Path(spec.run_dir) / ckpt.LOG

    def write(line: str) -> None:
        # Opened per line: the trainer clears a fresh folder's leftovers (train.log among
        # them) when it claims it, after this function has started.
        with open(log_path, "a") as log:
            log.write(line + "\n")

    callbacks = [LogLines(write)]
    if progress:
        callbacks.append(TqdmProgress(leave=False))
    try:
        summary = train(spec.config, spec.run_dir, callbacks)
        # A run killed between its final checkpoint and summary.json comes back as
        # "already complete" without the file; the study reads summaries from disk.
        if ckpt.read_summary(spec.run_dir) is None:
            ckpt.write_json(Path(spec.run_dir) / ckpt.SUMMARY, summary)
        return summary
    except TrainingDiverged as exc:
        write(f"diverged: {exc}")
        summary = ckpt.read_summary(spec.run_dir)
        if summary is None:
            raise
        return summary


# --------------------------------------------------------------------------- executors

class Executor:
    """Runs units; ``run`` returns {run_id: summary} and honours ``after`` dependencies."""

    def run(self, specs: Sequence[RunSpec], on_done: Optional[Callable[[RunSpec, dict], None]] = None) -> Dict[str, dict]:
        raise NotImplementedError


def _check_dependencies(specs: Sequence[RunSpec], done: Iterable[str] = ()) -> None:
    seen = set(done)
    for s in specs:
        missing = [a for a in s.after if a not in seen]
        if missing:
            raise ConfigError(f"run {s.run_id} needs {missing[0]}, which is not planned before it")
        seen.add(s.run_id)


class InProcessExecutor(Executor):
    """One run after the other in this process (Colab, a laptop). ``progress``: a bar per run."""

    def __init__(self, progress: bool = False):
        self.progress = progress

    def run(self, specs, on_done=None):
        # Dependencies outside ``specs`` are runs finished earlier (the study skips those).
        ids = {s.run_id for s in specs}
        _check_dependencies(specs, done=[a for s in specs for a in s.after if a not in ids])
        results = {}
        for spec in specs:
            results[spec.run_id] = execute_run(spec, progress=self.progress)
            if on_done:
                on_done(spec, results[spec.run_id])
        return results


def _ray_task(spec_dict: dict, *dependencies) -> dict:
    # ``dependencies`` are the summaries of the runs this one waits for; Ray resolves them
    # before the task starts, which is all the ordering needs.
    return execute_run(RunSpec.from_dict(spec_dict))


class RayExecutor(Executor):
    """Runs units as Ray tasks, each reserving ``threads`` CPUs (its torch thread count).

    ``address``: None starts (or reuses) a Ray instance on this machine; ``"auto"`` or
    ``"ray://host:10001"`` joins a cluster. Every node must have ampxfer installed and see
    the data and study folders at the same paths (a shared file system). Extra keyword
    arguments go to ``ray.init``.
    """

    def __init__(self, address: Optional[str] = None, **init_kwargs):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'ray>=2.9' (or use the default "
                              "--executor local)") from None
        self.address = address
        self.init_kwargs = init_kwargs

    def run(self, specs, on_done=None):
        import ray

        _check_dependencies(specs)
        if not ray.is_initialized():
            ray.init(address=self.address, **self.init_kwargs)
        task = ray.remote(_ray_task)
        refs: Dict[str, object] = {}
        by_ref = {}
        for spec in specs:
            deps = [refs[a] for a in spec.after if a in refs]
            ref = task.options(num_cpus=spec.config.threads or 1, max_retries=0,
                               name=spec.run_id).remote(spec.to_dict(), *deps)
            refs[spec.run_id] = ref
            by_ref[ref] = spec
        results: Dict[str, dict] = {}
        pending = list(refs.values())
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                spec = by_ref[ref]
                try:
                    results[spec.run_id] = ray.get(ref)
                except Exception as exc:
                    # Surface the run's own one-line error instead of Ray's wrapper.
                    cause = getattr(exc, "cause", None) or exc
                    if not isinstance(cause, Exception):
                        cause = exc
                    for r in pending:
                        ray.cancel(r)
                    if isinstance(cause, (ConfigError, RunFolderError)):
                        raise type(cause)(f"{spec.run_id}: {cause}") from None
                    raise
                if on_done:
                    on_done(spec, results[spec.run_id])
        return results


def make_executor(name: str = "local", address: Optional[str] = None, progress: bool = False) -> Executor:
    if name in ("local", "inprocess"):
        if address:
            raise ConfigError("--address is for --executor ray")
        return InProcessExecutor(progress=progress)
    if name == "ray":
        return RayExecutor(address=address)
    raise ConfigError(f"unknown executor {name!r}; use local or ray")


# --------------------------------------------------------------------------- running

def check_sources(config: StudyConfig, specs: Sequence[RunSpec]) -> None:
    """Fail before any training when a source model cannot start its target's model."""
    from ampxfer_lib.data.dataset import load_dataset
    from ampxfer_lib.model.formats import load_model
    from ampxfer_lib.model.weights import ModelConfig, fold_knobs
    from ampxfer_lib.transfer.init_from import InitSource, adapt_to

    inputs: Dict[str, int] = {}
    for pair in config.pairs:
        if pair.target not in inputs:
            inputs[pair.target] = load_dataset(pair.target).input_size
        if pair.source.data is not None:
            load_dataset(pair.source.data)
            continue
        if config.transfer.get("keep_optimizer"):
            raise ConfigError(f"pair {pair.name}: keep_optimizer needs a source trained by the study "
                              "(source {\"data\": ...}); a model file has no optimiser state")
        weights = load_model(pair.source.model)
        if pair.source.knobs:
            weights = fold_knobs(weights, pair.source.knobs)
        hidden = config.train.get("hidden_size") or weights.config.hidden_size
        skip = config.train.get("skip")
        shape = ModelConfig(inputs[pair.target], int(hidden), weights.config.skip if skip is None else bool(skip),
                            weights.config.sample_rate)
        adapt_to(InitSource(pair.source.model, weights), shape)


def materialize_sources(config: StudyConfig, out_dir: PathLike) -> None:
    """Write conditioned source models folded at their knobs (never touching the originals)."""
    from ampxfer_lib.model.formats import load_model, save_model
    from ampxfer_lib.model.weights import fold_knobs

    for pair in config.pairs:
        if pair.source.model is None or not pair.source.knobs:
            continue
        path = folded_source_path(out_dir, pair.name)
        folded = fold_knobs(load_model(pair.source.model), pair.source.knobs)
        if path.exists():
            old = load_model(path)
            if old.equal(folded):
                continue
            raise ConfigError(f"{path}: holds a different folded source model; use another --out for this study")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(folded, path)


def write_plan(config: StudyConfig, specs: Sequence[RunSpec], out_dir: PathLike, smoke: bool) -> None:
    atomic_write_json(Path(out_dir) / PLAN, {"config": config.to_dict(), "smoke": smoke,
                                             "runs": [s.to_dict() for s in specs]})


def read_plan(out_dir: PathLike) -> Tuple[StudyConfig, List[RunSpec]]:
    path = Path(out_dir) / PLAN
    d = ckpt.read_json(path)
    if d is None:
        raise RunFolderError(f"{path}: no study plan here; run `ampxfer study --config STUDY.json --out {out_dir}`")
    return StudyConfig.from_dict(d["config"], str(path)), [RunSpec.from_dict(r) for r in d["runs"]]


@dataclass
class StudyOutcome:
    out_dir: Path
    specs: List[RunSpec]
    summaries: Dict[str, dict]
    skipped: List[str]
    results_csv: Path
    table1: Path
    figures: List[Path]


def run_study(config: StudyConfig, out_dir: PathLike, executor: Optional[Executor] = None, smoke: bool = False,
              progress: bool = True, log: Callable[[str], None] = print, figures: bool = True,
              roles: Optional[Sequence[str]] = None) -> StudyOutcome:
    """Plan, run what is not finished, and write results.csv, table1.md and figures/.

    ``roles`` limits the training to runs of those roles (e.g. ``("source", "scratch")``
    first, ``("transfer",)`` later, as the notebooks do); the runs they wait for must be
    finished already. The report always covers every run on disk.
    """
    from ampxfer_lib.study.report import load_results, write_report

    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; choose another --out")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in STUDY_FILES and not p.name.startswith(".")) \
        if out.is_dir() else []
    if foreign:
        raise ConfigError(f"{out}: the folder holds other files ({foreign[0]}, ...); choose a new or empty --out "
                          "folder for the study")
    specs = plan_study(config, out, smoke)
    check_sources(config, specs)
    out.mkdir(parents=True, exist_ok=True)
    materialize_sources(config, out)
    write_plan(config, specs, out, smoke)

    states = {s.run_id: run_state(s) for s in specs}
    other = [s for s in specs if states[s.run_id] == "other"]
    if other:
        raise RunFolderError(f"{other[0].run_dir}: holds a run with other settings than this study's; use a new "
                             "--out folder (or delete that run folder)")
    if roles is not None:
        unknown = sorted(set(roles) - set(ROLES))
        if unknown or not roles:
            raise ConfigError(f"roles must be some of {', '.join(ROLES)}, not {list(roles)}")
        chosen = {s.run_id for s in specs if s.role in roles}
        waiting = [(s, a) for s in specs if s.run_id in chosen for a in s.after
                   if a not in chosen and states[a] != "done"]
        if waiting:
            raise ConfigError(f"{waiting[0][0].run_id} starts from {waiting[0][1]}, which is not trained yet; "
                              f"train the {waiting[0][1].split('/')[0]} runs first")
        specs_run = [s for s in specs if s.run_id in chosen]
    else:
        specs_run = specs
    todo = [s for s in specs_run if states[s.run_id] != "done"]
    skipped = [s.run_id for s in specs if states[s.run_id] == "done"]
    log(f"study {out}: {len(specs_run)} runs" + (f" ({', '.join(roles)})" if roles is not None else "")
        + f", {len(specs_run) - len(todo)} already complete, {len(todo)} to train"
        + (" (smoke test)" if smoke else ""))

    executor = executor or InProcessExecutor(progress=progress)
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="run", desc="study")
    t0 = time.monotonic()

    def on_done(spec: RunSpec, summary: dict) -> None:
        best = summary.get("best_val_loss")
        log(f"  {spec.run_id}: best val {best if best is None else round(best, 6)} at epoch "
            f"{summary.get('best_epoch')} of {summary.get('epochs')} ({summary.get('status')}, "
            f"{summary.get('train_seconds', 0):.0f} s)")
        if bar is not None:
            bar.update(1)

    # Runs already done keep their dependents free to start at once.
    _check_dependencies(todo, done=skipped)
    try:
        summaries = executor.run(todo, on_done) if todo else {}
    finally:
        if bar is not None:
            bar.close()
    if todo:
        log(f"trained {len(todo)} run(s) in {time.monotonic() - t0:.0f} s")
    results = load_results(out, specs)
    paths = write_report(results, out, figures=figures)
    all_summaries = {r.run_id: r.summary for r in results}
    all_summaries.update(summaries)
    return StudyOutcome(out, specs, all_summaries, skipped, paths["results_csv"], paths["table1"], paths["figures"])


# --------------------------------------------------------------------------- command line

def add_study(sub) -> None:
    p = sub.add_parser("study", help="transfer-learning study: scratch vs transfer on device pairs",
                       description="Train every target of a study config from scratch and from its source "
                                   "model (same preset, budget and validation audio), then write results.csv, "
                                   "table1.md and figures/. Rerun the same command to resume.")
    p.add_argument("--config", required=True, metavar="STUDY.json",
                   help="study config (or the name of a shipped one: " + ", ".join(shipped_studies()) + ")")
    p.add_argument("--out", required=True, help="study folder")
    p.add_argument("--data-root", default=None, help="resolve the config's relative paths against this folder "
                                                     "(default: the config file's folder)")
    p.add_argument("--smoke", action="store_true", help="a few epochs per run (a quick check of the pipeline)")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local: one run after the other here; ray: runs as Ray tasks")
    p.add_argument("--address", default=None, help="Ray cluster address (default: a Ray instance on this machine)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the config's seeds")
    p.add_argument("--max-epochs", type=int, default=None, help="override the config's epoch budget")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: the config's, 1)")
    p.add_argument("--prepare-sample-data", action="store_true",
                   help="first prepare the sample devices (ts9, mt2, bluesjr, ht40) into --data-root")
    p.add_argument("--dry-run", action="store_true", help="print the planned runs and their state, train nothing")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.add_argument("--progress", default="bar", choices=["bar", "none"])
    p.set_defaults(func=run_study_cli)


def _config_folders(path: Path) -> List[str]:
    config = StudyConfig.from_dict(json.loads(path.read_text()), str(path))
    return [f for p in config.pairs for f in (p.target, p.source.data) if f]


def run_study_cli(args) -> int:
    path = Path(args.config)
    if not path.exists() and args.config in shipped_studies():
        path = shipped_studies()[args.config]
    if args.prepare_sample_data:
        if args.data_root is None:
            raise ConfigError("--prepare-sample-data needs --data-root FOLDER to prepare the sample devices into")
        prepare_sample_pairs(args.data_root, progress=args.progress == "bar")
    if args.data_root is None and path.resolve().parent == Path(__file__).resolve().parent / "studies":
        raise ConfigError(f"{path.name}: a shipped study names prepared sample data folders "
                          f"({', '.join(sorted({Path(p).name for p in _config_folders(path)}))}); "
                          "pass --data-root FOLDER that holds them (--prepare-sample-data prepares them there)")
    config = load_study(path, args.data_root)
    overrides = {k: v for k, v in (("seeds", tuple(args.seeds) if args.seeds else None),
                                   ("max_epochs", args.max_epochs), ("threads", args.threads)) if v is not None}
    if overrides:
        config = replace(config, **overrides)
    if args.dry_run:
        for spec in plan_study(config, args.out, args.smoke):
            after = f"  after {', '.join(spec.after)}" if spec.after else ""
            print(f"{run_state(spec):8s} {spec.run_id}  ({spec.config.data}, {spec.config.subset}, "
                  f"max {spec.config.max_epochs} epochs){after}")
        return 0
    executor = make_executor(args.executor, args.address, progress=args.progress == "bar")
    outcome = run_study(config, args.out, executor, smoke=args.smoke, progress=args.progress == "bar",
                        figures=not args.no_figures)
    print(f"wrote {outcome.results_csv}, {outcome.table1}"
          + (f" and {len(outcome.figures)} figure(s) in {outcome.out_dir / 'figures'}" if outcome.figures else ""))
    print(outcome.table1.read_text())
    return 0
