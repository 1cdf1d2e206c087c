"""Fault-catalogue cases of issue 13's classes 1, 2 and 6: a folder another process holds, the
user's own files under ampxfer's names, and what killed writes leave behind.

Registered into :data:`tests.support.faults.CASES` when that module imports this one. A live
holder is stood in for by a lock naming the parent of the process that runs the case (alive
for as long as the case runs, whether it runs in process or in a fresh interpreter).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ampxfer_lib.folders import LOCK
from tests.support.faults import RUN_ARGS, _di, _pair, _prepare, _render, _train, case, make_read_only

HELD = (r"in use by another ampxfer process \({purpose}: pid \d+ on \S+, since \S+ \S+ UTC, last heartbeat \d+ s "
        r"ago\); wait for it to finish or stop it, then rerun\. A holder that died is taken over at once on its own "
        r"machine, or 10 minutes after its last heartbeat$")


def _lock(folder: Path, pid: int, host: str, purpose: str, heartbeat_age: float = 0.0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    (folder / LOCK).write_text(json.dumps({"pid": pid, "host": host, "purpose": purpose, "since": now - 60,
                                           "heartbeat": now - heartbeat_age, "token": "planted"}))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _verify_taken_over(result):
    out = result.setup.out
    if (out / LOCK).exists():
        return "the lock was not released"
    return None if (out / "manifest.json").exists() or (out / "config.json").exists() else "nothing was written"


# --------------------------------------------------------------------------- class 1: one process per folder

@case("prepare_out_held", "prepare", "error", "--out folder a live ampxfer process holds (a training on it)",
      error=r"^error: \S*data: " + HELD.format(purpose="train"))
def _(fx, d):
    xin, tgt = _pair(d, fx)
    _lock(d / "data", os.getppid(), socket.gethostname(), "train")
    return _prepare(xin, tgt, d / "data")


@case("train_out_held", "train", "error", "--out run folder a live ampxfer process holds (a notebook's kernel)",
      error=r"^error: \S*run: " + HELD.format(purpose="train"))
def _(fx, d):
    _lock(d / "run", os.getppid(), socket.gethostname(), "train")
    return _train(fx, d / "run", *RUN_ARGS)


@case("prepare_out_dead_holder", "prepare", "accepted", "--out folder locked by a process that was SIGKILLed")
def _(fx, d):
    xin, tgt = _pair(d, fx)
    _lock(d / "data", _dead_pid(), socket.gethostname(), "prepare")
    return _prepare(xin, tgt, d / "data", verify=_verify_taken_over)


@case("train_out_lost_colab_runtime", "train", "accepted",
      "--out run folder locked by another host whose heartbeat stopped 20 minutes ago (a lost Colab runtime)")
def _(fx, d):
    _lock(d / "run", 12345, "colab-runtime-gone", "train", heartbeat_age=1200.0)
    return _train(fx, d / "run", *RUN_ARGS, verify=_verify_taken_over)


# --------------------------------------------------------------------------- class 2: the user's own files

@case("prepare_out_users_wav", "prepare", "error", "--out folder holding the user's own train_input.wav",
      error=r"^error: \S*mine: holds train_input\.wav, which ampxfer did not write \(it is not in "
            r"\.ampxfer-files\.json\); move it away or choose a new --out folder, or pass --overwrite to replace it$")
def _(fx, d):
    xin, tgt = _pair(d, fx)
    (d / "mine").mkdir()
    own = _di(fx, d / "mine", "train_input.wav")
    setup = _prepare(xin, tgt, d / "mine")
    setup.sources.append(own)
    return setup


@case("train_out_users_model", "train", "error", "--out folder holding the user's own model_best.json",
      error=r"^error: \S*mine: holds model_best\.json, which no ampxfer run wrote here \(there is no config\.json\); "
            r"move it away or choose a new --out folder, or pass --overwrite to replace it$")
def _(fx, d):
    (d / "mine").mkdir()
    own = d / "mine" / "model_best.json"
    own.write_text(Path(fx.model()).read_text())
    make_read_only(own)
    return _train(fx, d / "mine", *RUN_ARGS, sources=[own])


# --------------------------------------------------------------------------- class 6: leftovers

def _verify_no_temporary(name: str):
    def verify(result):
        out = result.setup.out
        folder = out if out.is_dir() else out.parent
        return f"{name} is still there" if (folder / name).exists() else None
    return verify


@case("prepare_out_killed_temporary", "prepare", "accepted",
      "--out folder holding the half-written temporary of a killed prepare")
def _(fx, d):
    xin, tgt = _pair(d, fx)
    (d / "data").mkdir()
    (d / "data" / ".train_target.wav.x7_k2m9q.tmp").write_bytes(b"RIFF half a file")
    return _prepare(xin, tgt, d / "data", verify=_verify_no_temporary(".train_target.wav.x7_k2m9q.tmp"))


@case("render_flac_over_full_scale", "render", "accepted",
      "render to FLAC of a model whose output goes above full scale (and a killed render's temporary)")
def _(fx, d):
    from ampxfer_lib.model.formats import load_model, neuralpi

    w = load_model(fx.model())
    w.params["lin.bias"] = w.params["lin.bias"] + np.float32(1.5)  # every output sample above full scale
    neuralpi.save(w, d / "hot.json")
    make_read_only(d / "hot.json")
    (d / ".out.flac.p0k3m2zz.tmp").write_bytes(b"fLaC half a file")
    check_temp = _verify_no_temporary(".out.flac.p0k3m2zz.tmp")

    def verify(result):
        warned = [l for l in result.stderr.splitlines() if l.startswith("warning: ")]
        if len(warned) != 1 or "FLAC clipped" not in warned[0] or "write a .wav" not in warned[0]:
            return f"expected one FLAC clipping warning, got {warned}"
        return check_temp(result)

    return _render(d / "hot.json", _di(fx, d), d / "out.flac", verify=verify)
