"""Runs killed with SIGKILL resume with the same command and end exactly like uninterrupted ones.

Training runs here are real processes killed by a real SIGKILL: forked children of the test
process (cheap: torch and the LSTM kernels are already loaded) that kill themselves at a
chosen atomic write (a kill point that ``tests/support/killing_run.py`` installs as the file
writes' observer: half-way through the temporary file, with it complete, or just after the
rename), plus ``python -m ampxfer_lib`` subprocesses killed
from outside at a moment given by the clock. The reference is the same command run without
interruption, in-process; a resumed run must end with the same history (elapsed_s aside),
byte-identical model_best.json and model_last.json, the same summary, and no temporary files.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sys

import pytest

from ampxfer_lib.training import checkpoint as ckpt
from ampxfer_lib import fileio
from ampxfer_lib.cli.main import main
from tests.support import killing_run
from tests.support.faults import compare_runs, kill_during, resume_argv

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork (POSIX)")

STAGES = killing_run.STAGES


def _child(argv, kill=None, cwd=None) -> int:
    """Run ``cli.main(argv)`` in a forked child; returns its exit status, or -SIGNAL."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 99
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            killing_run.install(kill)
            if cwd:
                os.chdir(cwd)
            code = main(argv)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


@pytest.fixture(scope="module")
def reference(small_data, tmp_path_factory, monkeypatch_module):
    """The uninterrupted run, and the names of the files it wrote, in write order."""
    out = tmp_path_factory.mktemp("reference") / "run"
    written = []
    real = fileio._write_once

    def recording(path, data):
        written.append(path.name)
        return real(path, data)

    monkeypatch_module.setattr(fileio, "_write_once", recording)
    assert main(resume_argv(small_data, out, seed=3)) == 0
    monkeypatch_module.setattr(fileio, "_write_once", real)
    return out, written


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_the_reference_checkpoints_at_every_batch(reference):
    _, written = reference
    # 10 segments in batches of 4: 3 batches, so 2 mid-epoch checkpoints per epoch, then the
    # epoch's checkpoint and its three JSON files; the last epoch adds summary.json.
    epoch = ["checkpoint.pt"] * 3 + ["history.json", "model_last.json", "model_best.json"]
    assert written == ["config.json"] + epoch * 3 + ["summary.json"]


def _state(folder):
    """What a resume starts from: the run files' contents (temporary files and the log aside)."""
    if not folder.exists():
        return {}
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name in ckpt.RUN_FILES and p.name != ckpt.LOG}


def test_a_kill_at_every_write_resumes_identically(small_data, reference, tmp_path):
    """A chain of processes, each killed at its second write (at a rotating stage: half-way
    through the temporary file, with it complete, just after the rename), so the resumes pass
    every write of the run, including the gap between checkpoint.pt and the JSON files derived
    from it and the gap before summary.json. A process whose kill left the run files as they
    were (a finished run rewriting its outputs) hands the next one a later kill point."""
    ref, written = reference
    out = tmp_path / "run"
    argv = resume_argv(small_data, out, seed=3)
    kills, nth, cut_short = 0, 2, set()
    for k in range(3 * len(written)):
        before = _state(out)
        status = _child(argv, kill=f"{nth}:{STAGES[k % 3]}")
        if status == 0:
            break
        assert status == -signal.SIGKILL, status
        kills += 1
        # a kill before the rename leaves the temporary file .NAME.XXXX.tmp behind
        cut_short |= {p.name[1:].split(".tmp")[0].rsplit(".", 1)[0] for p in out.iterdir() if p.name.endswith(".tmp")}
        nth = nth + 1 if _state(out) == before else 2
    else:
        pytest.fail("the run never finished")
    assert kills >= len(written) // 2  # at most two writes of progress per process
    assert cut_short >= {"checkpoint.pt", "history.json", "model_last.json", "model_best.json"}  # summary: below
    assert compare_runs(ref, out) == []
    assert "interrupted" not in (out / "train.log").read_text()  # SIGKILL leaves no goodbye


@pytest.mark.parametrize("name,nth,stage", [
    ("checkpoint.pt", 7, "renamed"),    # last epoch's checkpoint in place, none of its JSON files
    ("history.json", 3, "written"),     # the final checkpoint says complete, history.json is stale
    ("summary.json", 1, "partial"),     # everything but summary.json
    ("config.json", 1, "renamed"),      # a config and no checkpoint: starts afresh
])
def test_kills_between_the_final_writes(small_data, reference, tmp_path, name, nth, stage):
    ref, written = reference
    index = [i for i, n in enumerate(written, 1) if n == name][nth - 1]
    out = tmp_path / "run"
    argv = resume_argv(small_data, out, seed=3)
    assert _child(argv, kill=f"{index}:{stage}") == -signal.SIGKILL
    if stage != "renamed":
        assert any(p.name.startswith(f".{name}.") and p.name.endswith(".tmp") for p in out.iterdir())
    assert _child(argv) == 0
    assert compare_runs(ref, out) == []


def test_resume_after_a_move_from_another_folder_without_the_starting_model(small_data, tmp_path):
    """Colab: the run folder (on Drive) outlives the session; the starting model downloaded to
    the session's disk is gone, the paths are spelled differently, the cwd is another one."""
    src = tmp_path / "models" / "start.json"
    assert main(["train", "--data", str(small_data), "--out", str(tmp_path / "base"), "--hidden-size", "6",
                 "--max-epochs", "1", "--progress", "none"]) == 0
    src.parent.mkdir()
    shutil.copyfile(tmp_path / "base" / "model_best.json", src)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    shutil.copytree(small_data, a / "data")
    extra = ["--init-from", str(src), "--lr", "0.005"]
    argv = resume_argv("data", "run", seed=1) + extra
    assert main(resume_argv(a / "data", tmp_path / "ref", seed=1) + extra) == 0
    assert _child(argv, kill="9:written", cwd=a) == -signal.SIGKILL
    os.rename(a, b)
    os.unlink(src)
    assert _child(argv, cwd=b) == 0
    assert compare_runs(tmp_path / "ref", b / "run") == []
    # the same model under another name is the same starting point; another model is not
    shutil.copyfile(tmp_path / "base" / "model_best.json", tmp_path / "copy.json")
    again = resume_argv(b / "data", b / "run", seed=1) + ["--init-from", str(tmp_path / "copy.json"), "--lr", "0.005"]
    assert _child(again) == 0
    assert main(again[:-4] + ["--init-from", str(tmp_path / "ref" / "model_best.json"), "--lr", "0.005"]) == 2


def test_sigkill_from_outside_at_random_moments(small_data, reference, tmp_path):
    """``python -m ampxfer_lib train`` killed from outside at a random moment of its training
    (a fresh interpreter each time), then resumed by the same command."""
    from tests.support.faults import run_subprocess

    ref, _ = reference
    out = tmp_path / "run"
    argv = resume_argv(small_data, out, seed=3)
    rng = random.Random(7)
    # one kill here (a fresh interpreter costs seconds); bench/faults.py kills many more
    assert kill_during(argv, out, rng.uniform(0.0, 0.5))
    assert (out / ckpt.CONFIG).exists() and not (out / ckpt.SUMMARY).exists()
    code, _, err = run_subprocess(argv)
    assert code == 0, err
    assert compare_runs(ref, out) == []


def test_the_launcher_kills_a_fresh_interpreter_at_the_same_point(small_data, reference, tmp_path):
    """``python -m tests.support.killing_run N:STAGE -- ARGV``: the kill point from outside the
    test process (as a benchmark would run it), here just after config.json is in place."""
    import subprocess
    from pathlib import Path

    ref, written = reference
    assert written[0] == "config.json"
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    argv = resume_argv(small_data, out, seed=3)
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "tests.support.killing_run", "1:renamed", "--", *argv], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (out / ckpt.CONFIG).is_file() and not (out / "checkpoint.pt").exists()
    assert _child(argv) == 0
    assert compare_runs(ref, out) == []


@pytest.mark.parametrize("spec", ["0", "2:later", "x"])
def test_a_bad_kill_point_is_refused(spec):
    with pytest.raises(ValueError):
        killing_run.kill_point(spec)
