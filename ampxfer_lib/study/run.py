"""Run a study: plan it, check it, train what is not finished, and write its report.

:func:`run_study` walks down the pipeline once, in order: the plan
(:func:`~ampxfer_lib.study.plan.plan_study`), the checks that must pass before any training
(:func:`check_sources`, the output folder, runs of other settings in the way), the folded
source models and ``plan.json``, the training (an executor of
:mod:`ampxfer_lib.study.executors`), and the report (:mod:`ampxfer_lib.study.report`). A run
whose folder already holds its finished summary is skipped without being dispatched; an
interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ampxfer_lib.data.dataset import load_dataset
from ampxfer_lib.errors import ConfigError, RunFolderError
from ampxfer_lib.fileio import PathLike
from ampxfer_lib.model.formats import load_model, save_model
from ampxfer_lib.model.weights import ModelConfig
from ampxfer_lib.study.config import StudyConfig
from ampxfer_lib.study.executors import Executor, InProcessExecutor, check_dependencies
from ampxfer_lib.folders import holds_folder
from ampxfer_lib.study.plan import ROLES, STUDY_FILES, RunSpec, folded_source_path, plan_study, run_state, write_plan
from ampxfer_lib.study.report import load_results, write_report
from ampxfer_lib.model.weights import fold_knobs
from ampxfer_lib.transfer.init_from import InitSource, adapt_to


def study_folder(out_dir: PathLike) -> Path:
    """``out_dir`` resolved, if it is new, empty or a study folder (else ConfigError: someone's files)."""
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; choose another --out")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in STUDY_FILES and not p.name.startswith(".")) \
        if out.is_dir() else []
    if foreign:
        raise ConfigError(f"{out}: the folder holds other files ({foreign[0]}, ...); choose a new or empty --out "
                          "folder for the study")
    return out


def check_sources(config: StudyConfig, specs: Sequence[RunSpec]) -> None:
    """Fail before any training when a source model cannot start its target's model."""
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


@dataclass
class StudyOutcome:
    out_dir: Path
    specs: List[RunSpec]
    summaries: Dict[str, dict]
    skipped: List[str]
    results_csv: Path
    table1: Path
    figures: List[Path]


def runs_to_train(specs: Sequence[RunSpec], states: Dict[str, str],
                  roles: Optional[Sequence[str]] = None) -> List[RunSpec]:
    """The planned runs of the chosen ``roles`` (all when None), after checking that a run's
    folder holds no run of other settings and that the runs they wait for are trained."""
    other = [s for s in specs if states[s.run_id] == "other"]
    if other:
        raise RunFolderError(f"{other[0].run_dir}: holds a run with other settings than this study's; use a new "
                             "--out folder (or delete that run folder)")
    if roles is None:
        return list(specs)
    unknown = sorted(set(roles) - set(ROLES))
    if unknown or not roles:
        raise ConfigError(f"roles must be some of {', '.join(ROLES)}, not {list(roles)}")
    chosen = {s.run_id for s in specs if s.role in roles}
    waiting = [(s, a) for s in specs if s.run_id in chosen for a in s.after
               if a not in chosen and states[a] != "done"]
    if waiting:
        raise ConfigError(f"{waiting[0][0].run_id} starts from {waiting[0][1]}, which is not trained yet; "
                          f"train the {waiting[0][1].split('/')[0]} runs first")
    return [s for s in specs if s.run_id in chosen]


def train_runs(todo: Sequence[RunSpec], done: Sequence[str], executor: Executor, progress: bool,
               log: Callable[[str], None]) -> Dict[str, dict]:
    """Train ``todo`` with ``executor`` (``done``: run ids finished earlier), a line per finished
    run and a bar counting them; returns {run_id: summary}."""
    if not todo:
        return {}
    bar = None
    if progress:
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
    check_dependencies(todo, done=done)
    try:
        summaries = executor.run(todo, on_done)
    finally:
        if bar is not None:
            bar.close()
    log(f"trained {len(todo)} run(s) in {time.monotonic() - t0:.0f} s")
    return summaries


@holds_folder("out_dir", "study")
def run_study(config: StudyConfig, out_dir: PathLike, executor: Optional[Executor] = None, smoke: bool = False,
              progress: bool = True, log: Callable[[str], None] = print, figures: bool = True,
              roles: Optional[Sequence[str]] = None) -> StudyOutcome:
    """Plan, run what is not finished, and write results.csv, table1.md and figures/.

    ``roles`` limits the training to runs of those roles (e.g. ``("source", "scratch")``
    first, ``("transfer",)`` later, as the notebooks do); the runs they wait for must be
    finished already. The report always covers every run on disk.
    """
    out = study_folder(out_dir)
    specs = plan_study(config, out, smoke)
    check_sources(config, specs)
    out.mkdir(parents=True, exist_ok=True)
    materialize_sources(config, out)
    write_plan(config, specs, out, smoke)

    states = {s.run_id: run_state(s) for s in specs}
    chosen = runs_to_train(specs, states, roles)
    todo = [s for s in chosen if states[s.run_id] != "done"]
    skipped = [s.run_id for s in specs if states[s.run_id] == "done"]
    log(f"study {out}: {len(chosen)} runs" + (f" ({', '.join(roles)})" if roles is not None else "")
        + f", {len(chosen) - len(todo)} already complete, {len(todo)} to train"
        + (" (smoke test)" if smoke else ""))
    summaries = train_runs(todo, skipped, executor or InProcessExecutor(progress=progress), progress, log)

    results = load_results(out, specs)
    paths = write_report(results, out, figures=figures)
    all_summaries = {r.run_id: r.summary for r in results}
    all_summaries.update(summaries)
    return StudyOutcome(out, specs, all_summaries, skipped, paths["results_csv"], paths["table1"], paths["figures"])
