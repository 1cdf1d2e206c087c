"""Where a study's runs train: :func:`execute_run` trains one unit, executors dispatch many.

Every executor's ``run(specs, on_done)`` returns ``{run_id: summary}`` and honours the
``after`` dependencies of the plan; a unit's result does not depend on where it ran (each pins
torch to its config's thread count and seeds everything itself).

* :class:`InProcessExecutor`: one run after the other in this process (Colab, a laptop).
* :class:`ProcessExecutor`: up to ``workers`` runs side by side in worker processes on this
  machine. A training run of this small LSTM uses one CPU core well and a second one badly,
  so two runs on two cores finish in about half the wall time of one after the other. The
  pool uses the ``spawn`` start method (fresh interpreters, safe from a notebook kernel and
  with CUDA); each worker imports torch once and trains one run after another. The caller's
  process stays free: ``poll(running_specs)`` is called every ``poll_seconds`` (a notebook
  redraws its live loss plot from the runs' ``history.json`` there). When the caller is
  interrupted, or a run fails, the other workers are terminated; every run resumes from its
  last checkpoint next time.
* :class:`RayExecutor`: Ray tasks (optional dependency; a local or remote Ray cluster).
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from ampxfer_lib.errors import ConfigError, RunFolderError, TrainingDiverged
from ampxfer_lib.study.plan import RunSpec
from ampxfer_lib.training import checkpoint as ckpt
from ampxfer_lib.training.callbacks import TqdmProgress
from ampxfer_lib.training.loop import train


def execute_run(spec: RunSpec, progress: bool = False) -> dict:
    """Train one unit (resuming it if interrupted) and return its summary.

    The run's lines go to ``train.log`` in its folder, written by ``train()`` itself (the
    error that stopped a run included). A run that diverges is a result of the study, not
    an error: its summary (status ``diverged``) is returned.
    """
    callbacks = [TqdmProgress(leave=False)] if progress else []
    try:
        summary = train(spec.config, spec.run_dir, callbacks)
        # A run killed between its final checkpoint and summary.json comes back as
        # "already complete" without the file; the study reads summaries from disk.
        if ckpt.read_summary(spec.run_dir) is None:
            ckpt.write_json(Path(spec.run_dir) / ckpt.SUMMARY, summary)
        return summary
    except TrainingDiverged:
        summary = ckpt.read_summary(spec.run_dir)
        if summary is None:
            raise
        return summary


class Executor:
    """Runs units; ``run`` returns {run_id: summary} and honours ``after`` dependencies."""

    def run(self, specs: Sequence[RunSpec], on_done: Optional[Callable[[RunSpec, dict], None]] = None) -> Dict[str, dict]:
        raise NotImplementedError


def check_dependencies(specs: Sequence[RunSpec], done: Iterable[str] = ()) -> None:
    """Raise ConfigError unless every run comes after the runs it needs (or they are in ``done``)."""
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
        check_dependencies(specs, done=[a for s in specs for a in s.after if a not in ids])
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

        check_dependencies(specs)
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


def _task(spec_dict: dict) -> dict:
    """Worker side: train one unit (resuming it if interrupted) and return its summary."""
    return execute_run(RunSpec.from_dict(spec_dict))


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Stop the runs still training (shutdown alone would wait for them to finish)."""
    # ``_processes`` is the pool's own table of worker processes (stable since Python 3.8);
    # Python 3.14 adds terminate_workers() for exactly this.
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.terminate()


class ProcessExecutor(Executor):
    """Up to ``workers`` units at once in a pool of spawned worker processes (see the module
    notes); each worker imports torch once and trains one unit after another."""

    def __init__(self, workers: int = 2, poll: Optional[Callable[[List[RunSpec]], None]] = None,
                 poll_seconds: float = 10.0):
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self.poll = poll
        self.poll_seconds = poll_seconds

    def run(self, specs: Sequence[RunSpec], on_done=None) -> Dict[str, dict]:
        ids = {s.run_id for s in specs}
        # Dependencies outside ``specs`` are runs finished earlier (the study skips those).
        check_dependencies(specs, done=[a for s in specs for a in s.after if a not in ids])
        results: Dict[str, dict] = {}
        if not specs:
            return results
        pending = list(specs)
        running: Dict[object, RunSpec] = {}
        finished: set = set()
        last_poll = 0.0
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(specs)),
                                   mp_context=multiprocessing.get_context("spawn"))
        clean = False
        try:
            while pending or running:
                for spec in list(pending):
                    if len(running) >= self.workers:
                        break
                    if all(a in finished or a not in ids for a in spec.after):
                        running[pool.submit(_task, spec.to_dict())] = spec
                        pending.remove(spec)
                if not running:
                    raise ConfigError(f"run {pending[0].run_id} waits for a run that is not planned")
                done, _ = wait(list(running), timeout=self.poll_seconds if self.poll else None,
                               return_when=FIRST_COMPLETED)
                for future in done:
                    spec = running.pop(future)
                    try:
                        summary = future.result()
                    except BrokenProcessPool:
                        raise RuntimeError(f"the worker process training {spec.run_id} died; rerun to resume "
                                           "it from its last checkpoint") from None
                    results[spec.run_id] = summary
                    finished.add(spec.run_id)
                    if on_done:
                        on_done(spec, summary)
                if self.poll and (time.monotonic() - last_poll >= self.poll_seconds or not running):
                    last_poll = time.monotonic()
                    self.poll(list(running.values()))
            clean = True
        finally:
            if not clean:
                _kill_workers(pool)
            pool.shutdown(wait=clean, cancel_futures=True)
        return results


def make_executor(name: str = "local", address: Optional[str] = None, progress: bool = False) -> Executor:
    if name in ("local", "inprocess"):
        if address:
            raise ConfigError("--address is for --executor ray")
        return InProcessExecutor(progress=progress)
    if name == "ray":
        return RayExecutor(address=address)
    raise ConfigError(f"unknown executor {name!r}; use local or ray")
