"""Faults end to end: the whole catalogue through the real command line, and SIGKILLed runs.

Usage::

    python bench/faults.py [--seeds 0 1 2] [--kills 10] [--epochs 4] [--hidden 8]
                           [--skip-catalogue] [--skip-resume] [--only NAME ...] [--keep DIR]

1. Catalogue: every case of ``tests/support/faults.py`` (bad recordings, bad model files, bad
   folders, warnings, accepted formats) through ``python -m ampxfer_lib ...`` in a fresh
   interpreter, checked like ``tests/test_faults.py`` does in-process: exit status, one
   ``error:`` line matching the expected words, no traceback, warnings recorded, nothing
   written to the output on an error, sources byte-identical and never opened for writing
   (the guard covers this process; children are covered by the hashes and read-only files).
   The notebooks' cases are Python calls and run in this process, as in a notebook.
2. Kill and resume: per seed, an uninterrupted reference run, then the same command killed
   with SIGKILL at random moments of its training (``--kills`` in all, spread over the
   seeds), each time resumed by the same command. Every kill point is also checked on its
   own: the folder as the kill left it is copied and resumed to the end in a fresh process.
   A resumed run must end with the reference's history (elapsed_s aside), byte-identical
   model_best.json and model_last.json, the same summary figures and no temporary files.

The last line is the summary, e.g. ``catalogue: 104/104 expected answers; resume: 10/10
kill points identical, 3/3 runs identical``. Results: bench/RESULTS_faults.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import faults  # noqa: E402


def _checkpoint_position(run: Path) -> str:
    import torch

    try:
        state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return "no checkpoint yet"
    except Exception as exc:  # noqa: BLE001 - reported, the resume must cope
        return f"unreadable checkpoint ({type(exc).__name__})"
    where = f"epoch {state['epoch']} done" if state["batch"] == 0 else f"epoch {state['epoch'] + 1} batch {state['batch']}"
    return where + ("" if state.get("status") == "running" else f", {state['status']}")


def run_catalogue(root: Path, only) -> tuple:
    fx = faults.Fixtures(root / "shared")
    rows, ok = [], 0
    cases = [c for c in faults.CASES if not only or c.name in only]
    print(f"## Catalogue: {len(cases)} cases through the real command line\n")
    print("| case | entry point | input | expected | got (paths cut to file names) | ok |")
    print("|---|---|---|---|---|---|")
    t0 = time.monotonic()
    for c in cases:
        result = faults.run_case(c, fx, root / "cases" / c.name, mode="subprocess")
        problems = faults.check_result(c, result)
        ok += not problems
        got = result.got_text()
        if problems:
            got += " -- " + "; ".join(problems)
        row = f"| {c.name} | {c.entry}{' (API)' if c.entry == 'notebook' else ''} | {c.what} | " \
              f"{c.kind}: {c.expected_text} | {got.replace('|', '/')} | {'yes' if not problems else 'NO'} |"
        print(row, flush=True)
        rows.append(row)
    print(f"\n{ok}/{len(cases)} expected answers in {time.monotonic() - t0:.0f} s\n")
    return ok, len(cases)


def run_resume(root: Path, seeds, kills: int, epochs: int, hidden: int) -> tuple:
    fx = faults.Fixtures(root / "shared")
    data = fx.data()
    plan = [kills // len(seeds) + (i < kills % len(seeds)) for i in range(len(seeds))]
    print(f"## Kill and resume: {kills} SIGKILLs over {len(seeds)} runs (hidden {hidden}, {epochs} epochs, "
          "a checkpoint at every batch boundary)\n")
    print("| seed | kill | after training started | checkpoint at the kill | temp files left | resumed alone |")
    print("|---|---|---|---|---|---|")
    points_ok = points = runs_ok = 0
    for seed, n_kills in zip(seeds, plan):
        rng = random.Random(seed)
        ref = root / f"ref_{seed}"
        code, _, err = faults.run_subprocess(faults.resume_argv(data, ref, seed, hidden, epochs))
        if code != 0:
            raise SystemExit(f"reference run failed: {err}")
        train_s = json.loads((ref / "summary.json").read_text())["train_seconds"]
        run = root / f"killed_{seed}"
        argv = faults.resume_argv(data, run, seed, hidden, epochs)
        done = 0
        attempts = 0
        while done < n_kills and attempts < 4 * n_kills:
            attempts += 1
            # spread the kills over the run: each within the next 1/n of its training time
            delay = rng.uniform(0.0, train_s / n_kills)
            if not faults.kill_during(argv, run, delay):
                break  # the run finished first
            done += 1
            position = _checkpoint_position(run)
            tmps = sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp"))
            # this kill point on its own: resume a copy of the folder as the kill left it
            alone = root / f"alone_{seed}_{done}"
            shutil.copytree(run, alone)
            code, _, err = faults.run_subprocess(faults.resume_argv(data, alone, seed, hidden, epochs))
            problems = [f"exit {code}: {err.strip()[:80]}"] if code else faults.compare_runs(ref, alone)
            points += 1
            points_ok += not problems
            print(f"| {seed} | {done} | {delay:.2f} s | {position} | {', '.join(tmps) or '-'} | "
                  f"{'identical' if not problems else '; '.join(problems)} |", flush=True)
        code, _, err = faults.run_subprocess(argv)
        problems = [f"exit {code}: {err.strip()[:80]}"] if code else faults.compare_runs(ref, run)
        runs_ok += not problems
        print(f"| {seed} | all {done} | | final resume of the repeatedly killed run | | "
              f"{'identical' if not problems else '; '.join(problems)} |", flush=True)
    print()
    return points_ok, points, runs_ok, len(seeds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--kills", type=int, default=10, help="SIGKILLs in all, spread over the seeds")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=8)
    ap.add_argument("--skip-catalogue", action="store_true")
    ap.add_argument("--skip-resume", action="store_true")
    ap.add_argument("--only", nargs="*", help="catalogue cases to run (default all)")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    root = args.keep or Path(tempfile.mkdtemp(prefix="ampxfer_faults_"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"# bench/faults.py\n\n{time.strftime('%Y-%m-%d %H:%M')}, Python {sys.version.split()[0]}, "
          f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    summary, all_good = [], True
    try:
        if not args.skip_catalogue:
            ok, n = run_catalogue(root, args.only)
            summary.append(f"catalogue: {ok}/{n} expected answers")
            all_good &= ok == n
        if not args.skip_resume:
            pok, pn, rok, rn = run_resume(root, args.seeds, args.kills, args.epochs, args.hidden)
            summary.append(f"resume: {pok}/{pn} kill points identical, {rok}/{rn} runs identical")
            all_good &= pok == pn and rok == rn
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print("; ".join(summary))
    return 0 if all_good else 1


if __name__ == "__main__":
    sys.exit(main())
