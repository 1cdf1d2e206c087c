"""Run a study's units side by side in worker processes on this machine.

A training run of this small LSTM uses one CPU core well and a second one badly, so two
runs side by side on two cores finish in about half the wall time of one after the other.
:class:`ProcessExecutor` starts up to ``workers`` runs at once, each in its own process
(the ``spawn`` start method: a fresh interpreter, safe from a notebook kernel and with
CUDA), honours the ``after`` dependencies of the plan, and returns the same summaries as
:class:`~ampxfer_lib.study.InProcessExecutor`: a unit's result does not depend on where it
ran (each pins torch to its config's thread count and seeds everything itself).

The caller's process stays free while the workers train: ``poll(running_specs)`` is
called every ``poll_seconds`` (a notebook redraws its live loss plot from the runs'
``history.json`` there). When the caller is interrupted, or a run fails, the other workers
are terminated; every run resumes from its last checkpoint next time.
"""

from __future__ import annotations

import multiprocessing
import time
from multiprocessing.connection import wait
from typing import Callable, Dict, List, Optional, Sequence

from .errors import ConfigError
from .study import Executor, RunSpec, _check_dependencies, execute_run


def _child(spec_dict: dict, conn) -> None:
    """Worker process: train one unit, send back ("ok", summary) or ("error", exception)."""
    try:
        summary = execute_run(RunSpec.from_dict(spec_dict))
        conn.send(("ok", summary))
    except BaseException as exc:  # sent to the parent, which raises it
        try:
            conn.send(("error", exc))
        except Exception:  # an exception that does not pickle: keep its words
            conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
    finally:
        conn.close()


class ProcessExecutor(Executor):
    """Up to ``workers`` units at once, each in a spawned process (see the module notes)."""

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
        ctx = multiprocessing.get_context("spawn")
        pending = list(specs)
        running: Dict[object, tuple] = {}  # sentinel -> (process, connection, spec)
        finished: set = set()
        results: Dict[str, dict] = {}
        last_poll = 0.0
        try:
            while pending or running:
                for spec in list(pending):
                    if len(running) >= self.workers:
                        break
                    if all(a in finished or a not in ids for a in spec.after):
                        parent, child = ctx.Pipe(duplex=False)
                        proc = ctx.Process(target=_child, args=(spec.to_dict(), child), daemon=True,
                                           name=f"ampxfer-{spec.run_id}")
                        proc.start()
                        child.close()
                        running[proc.sentinel] = (proc, parent, spec)
                        pending.remove(spec)
                if not running:
                    raise ConfigError(f"run {pending[0].run_id} waits for a run that is not planned")
                timeout = self.poll_seconds if self.poll else None
                for sentinel in wait(list(running), timeout=timeout):
                    proc, conn, spec = running.pop(sentinel)
                    proc.join()
                    try:
                        status, value = conn.recv() if conn.poll() else ("error", None)
                    except EOFError:
                        status, value = "error", None
                    conn.close()
                    if status != "ok":
                        if value is None:
                            value = RuntimeError(f"the worker training {spec.run_id} died (exit code "
                                                 f"{proc.exitcode}); rerun to resume it from its checkpoint")
                        raise value
                    results[spec.run_id] = value
                    finished.add(spec.run_id)
                    if on_done:
                        on_done(spec, value)
                if self.poll and (time.monotonic() - last_poll >= self.poll_seconds or not running):
                    last_poll = time.monotonic()
                    self.poll([s for _, _, s in running.values()])
        finally:
            for proc, conn, _ in running.values():
                proc.terminate()
            for proc, conn, _ in running.values():
                proc.join(10)
                conn.close()
        return results
