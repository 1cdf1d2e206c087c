"""Run a study's units side by side in worker processes on this machine.

A training run of this small LSTM uses one CPU core well and a second one badly, so two
runs side by side on two cores finish in about half the wall time of one after the other.
:class:`ProcessExecutor` trains up to ``workers`` runs at once in a pool of worker processes
(the ``spawn`` start method: fresh interpreters, safe from a notebook kernel and with CUDA;
each worker imports torch once and trains one run after another), honours the ``after`` dependencies of the plan, and returns the same summaries as
:class:`~ampxfer_lib.study.plan.InProcessExecutor`: a unit's result does not depend on where it
ran (each pins torch to its config's thread count and seeds everything itself).

The caller's process stays free while the workers train: ``poll(running_specs)`` is
called every ``poll_seconds`` (a notebook redraws its live loss plot from the runs'
``history.json`` there). When the caller is interrupted, or a run fails, the other workers
are terminated; every run resumes from its last checkpoint next time.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Dict, List, Optional, Sequence

from ampxfer_lib.errors import ConfigError
from ampxfer_lib.study.plan import Executor, RunSpec, _check_dependencies, execute_run


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
        _check_dependencies(specs, done=[a for s in specs for a in s.after if a not in ids])
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
