"""A study's plan: every training run it needs, as independent units with their own folders.

For every pair, data size (``full``, ``limited``) and seed of a :class:`StudyConfig` the target
device is trained twice with the same preset, epoch budget, early-stopping rule and
validation audio: from scratch, and starting from the source device's model. A pair whose
source is a data folder gets a *source run* trained from scratch on its full data first; the
transfers of that pair wait for it (``RunSpec.after``). Scratch runs depend only on the
target, so pairs that share a target share its scratch runs.

:func:`plan_study` turns a config into :class:`RunSpec` units (no side effects); the plan is
written to ``plan.json`` so the study folder alone says what its runs are (:func:`read_plan`).
:func:`run_state` says whether a run is finished, resumable or new. Executors
(:mod:`ampxfer_lib.study.executors`) train the units and :func:`ampxfer_lib.study.run.run_study`
ties it all together.

Layout of a study folder::

    plan.json                       the config and every planned run (written first)
    sources/<pair>.json             a conditioned source model folded at its knobs
    runs/source/<pair>/             source runs (trained from the source's data)
    runs/scratch/<target>/<data>/seed<k>/
    runs/transfer/<pair>/<data>/seed<k>/
    results.csv, table1.md, figures/<pair>_<data>.png|svg     (see :mod:`ampxfer_lib.study.report`)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ampxfer_lib.errors import ConfigError, RunFolderError
from ampxfer_lib.fileio import PathLike, atomic_write_json
from ampxfer_lib.study.config import StudyConfig, path_stem
from ampxfer_lib.training import checkpoint as ckpt
from ampxfer_lib.training.config import TrainConfig, make_config

ROLES = ("source", "scratch", "transfer")
PLAN = "plan.json"
#: What a study folder holds; anything else means --out points at someone's files.
STUDY_FILES = {PLAN, "runs", "sources", "figures", "results.csv", "table1.md"}


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
            specs.append(RunSpec(run_id, "source", (pair.name,), path_stem(pair.source.data), "full", config.source_seed,
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


def _inside(path: str, out: Path) -> str:
    """``path`` relative to ``out`` (posix separators) when it lies inside, else unchanged."""
    if not isinstance(path, str) or not os.path.isabs(path):
        return path
    for base in (out, Path(os.path.abspath(out)), out.resolve()):
        try:
            return Path(path).relative_to(base).as_posix()
        except ValueError:
            continue
    return path


def _portable(obj, out: Path):
    # Every absolute path inside the study folder becomes relative to it, wherever it sits.
    if isinstance(obj, dict):
        return {k: _portable(v, out) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_portable(v, out) for v in obj]
    return _inside(obj, out)


def _located(path: Optional[str], out: Path) -> Optional[str]:
    return path if not path or os.path.isabs(path) else str(out / path)


def write_plan(config: StudyConfig, specs: Sequence[RunSpec], out_dir: PathLike, smoke: bool) -> None:
    """``out_dir/plan.json``: the config and every planned run (written before any training).

    Paths inside the study folder are stored relative to it, so the folder still works
    moved, copied to Google Drive or unzipped on another machine; paths outside it (data
    the study only reads) stay as they are."""
    out = Path(out_dir)
    atomic_write_json(out / PLAN, _portable({"config": config.to_dict(), "smoke": smoke,
                                             "runs": [s.to_dict() for s in specs]}, out))


def read_plan(out_dir: PathLike) -> Tuple[StudyConfig, List[RunSpec]]:
    """The config and the runs a study folder was planned with (its ``plan.json``); relative
    paths resolve against the folder where it is now (plans with absolute paths still load)."""
    out = Path(os.path.abspath(out_dir))
    path = out / PLAN
    d = ckpt.read_json(path)
    if d is None:
        raise RunFolderError(f"{path}: no study plan here; run `ampxfer study --config STUDY.json --out {out_dir}`")
    specs = []
    for r in d["runs"]:
        r = dict(r, run_dir=_located(r["run_dir"], out))
        r["config"] = dict(r["config"], **{k: _located(r["config"].get(k), out) for k in ("data", "init_from")})
        specs.append(RunSpec.from_dict(r))
    return StudyConfig.from_dict(d["config"], str(path)).resolve(out), specs
