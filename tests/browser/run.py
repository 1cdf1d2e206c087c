"""`make browser-test`: notebooks 04 and 05 run and used in JupyterLab in headless Chromium.

    python -m tests.browser.run [--out out/browser] [--only 04 05 broken]

1. prepares a smoke-mode study with the notebook runner (01-03), where notebook 04 finds it
   with its default ``OUT_DIR``: ``LAB/out/notebooks`` beside the copies of the notebooks;
2. starts JupyterLab on 127.0.0.1 with AMPXFER_SMOKE=1 in its environment (so the kernels
   run in smoke mode) and opens each notebook in Chromium: Run All, then every check of
   :mod:`tests.browser.harness`;
3. runs the same checks on a deliberately broken notebook (:mod:`tests.browser.broken`) and
   requires that each of its faults is reported, in its cell: the harness must be able to
   fail; and on the broken notebook's control (the same cells without the faults), which
   must pass.

Prints one report per notebook and ``N passed, N failed``; exits non-zero on any failure.
Screenshots and the server's log are in the output folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tests.browser import broken
from tests.browser.harness import REPO, Lab, Report, find_chromium, jupyterlab

NOTEBOOKS = {"04": "04_ab_listening.ipynb", "05": "05_conditioned_transfer.ipynb"}
PARTS = {**NOTEBOOKS, "control": broken.CONTROL_NAME, "broken": broken.NAME}
#: Where the suite's notebooks keep their work by default (their OUT_DIR parameter).
DEFAULT_OUT_DIR = Path("out") / "notebooks"


def prepare_study(lab: Path, log=print) -> None:
    """01-03 in smoke mode into LAB/out/notebooks (a rerun skips finished training runs)."""
    cmd = [sys.executable, "-m", "ampxfer_lib.notebooks", "run", "01", "02", "03",
           "--out", str(lab / DEFAULT_OUT_DIR), "--smoke"]
    log("preparing the smoke-mode study: " + " ".join(cmd[1:]))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    subprocess.run(cmd, cwd=REPO, env=env, check=True)


def lay_out(lab: Path, names: Sequence[str]) -> None:
    """Fresh copies of the notebooks (no outputs, as committed) in the server's root."""
    lab.mkdir(parents=True, exist_ok=True)
    for name in (n for n in names if n in NOTEBOOKS):
        shutil.copyfile(REPO / "notebooks" / NOTEBOOKS[name], lab / NOTEBOOKS[name])
    if "05" in names:
        shutil.rmtree(lab / DEFAULT_OUT_DIR / "05", ignore_errors=True)  # 05 trains anew each time
    if "control" in names:
        broken.write(lab / broken.CONTROL_NAME, faults=False)
    if "broken" in names:
        broken.write(lab / broken.NAME)


def check_broken(report: Report) -> List[str]:
    """What is wrong with the harness's verdict on the broken notebook (empty when it caught
    every fault, and only those)."""
    problems = []
    missed = sorted(set(broken.EXPECTED) - report.kinds)
    if missed:
        problems.append(f"the harness missed the broken notebook's {', '.join(missed)}")
    extra = sorted(report.kinds - set(broken.EXPECTED))
    if extra:
        problems.append(f"the harness reported faults the broken notebook does not have: {', '.join(extra)}")
    for kind, where in broken.EXPECTED.items():
        if kind in report.kinds and not any(f.kind == kind and f.where.startswith(where) for f in report.failures):
            problems.append(f"{kind} was reported, but not for {where}")
    return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.browser.run", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "out" / "browser"), help="screenshots, logs, the lab folder")
    parser.add_argument("--only", nargs="*", default=list(PARTS), choices=list(PARTS))
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    out = Path(args.out).resolve()
    lab = out / "lab"
    chromium = find_chromium()
    t0 = time.monotonic()
    if "04" in args.only:
        prepare_study(lab)
    lay_out(lab, args.only)
    results: Dict[str, List[str]] = {}
    env = {"AMPXFER_SMOKE": "1", "OMP_NUM_THREADS": "1"}
    with jupyterlab(lab, out / "server", env=env) as url, sync_playwright() as pw:
        browser = Lab(pw, url, lab, out, chromium)
        try:
            for name in args.only:
                notebook = PARTS[name]
                abx_csv = lab / DEFAULT_OUT_DIR / "listening" / "abx_answers.csv" if name == "04" else \
                    lab / broken.ABX_CSV if name in ("control", "broken") else None
                report = browser.check_notebook(notebook, abx_csv=abx_csv)
                print(report.summary(), flush=True)
                if name == "broken":
                    results[notebook + " (must fail)"] = check_broken(report)
                else:
                    results[notebook] = [str(f) for f in report.failures]
        finally:
            browser.close()
    failed = [k for k, v in results.items() if v]
    print(f"\nbrowser test in {time.monotonic() - t0:.0f} s; screenshots in {out}")
    for name, problems in results.items():
        print(f"{'FAILED' if problems else 'ok    '} {name}" + "".join(f"\n         {p}" for p in problems))
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
