"""One process per folder, the user's own files, leftovers and a portable study folder.

The lock tests use real processes: a holder in a fresh interpreter (the lock is a file, so
what one process sees is what any other would), and several forked contenders started at
one instant.
"""

import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ampxfer_lib import folders
from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare
from ampxfer_lib.errors import ConfigError, RunFolderError
from ampxfer_lib.folders import FILES, LOCK, FolderInUseError, FolderLock

from conftest import write_pair

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(val_seconds=1.5, test_seconds=1.0, limited_seconds=2.0)
HOST = socket.gethostname()
SINCE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
AFTER = (r"; wait for it to finish or stop it, then rerun\. A holder that died is taken over at once on its own "
         r"machine, or 10 minutes after its last heartbeat$")

HOLDER = """
import sys
from ampxfer_lib.folders import FolderLock
with FolderLock(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    sys.stdin.read()
"""


def busy(folder, purpose, pid, host=HOST) -> str:
    return (re.escape(f"{folder}: in use by another ampxfer process ({purpose}: pid {pid} on {host}, since ")
            + SINCE + r", last heartbeat \d+ s ago\)" + AFTER)


@pytest.fixture
def holder():
    """Start a process that holds a folder until the test ends (or kills it)."""
    procs = []

    def start(folder, purpose="train"):
        env = dict(os.environ, PYTHONPATH=str(REPO))
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), purpose], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
        procs.append(p)
        assert p.stdout.readline() == "held\n"
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.stdin.close()
            p.wait(timeout=30)


def one(xin, tgt):
    return [CaptureSpec((str(xin),), (str(tgt),))]


# --------------------------------------------------------------------------- class 1: one process per folder

def test_a_second_process_is_refused_with_the_holder_named(tmp_path, holder):
    p = holder(tmp_path / "run", "train")
    lock = json.loads((tmp_path / "run" / LOCK).read_text())
    assert (lock["pid"], lock["host"], lock["purpose"]) == (p.pid, HOST, "train")
    with pytest.raises(FolderInUseError, match=busy(tmp_path / "run", "train", p.pid)):
        FolderLock(tmp_path / "run", "prepare").acquire()
    assert json.loads((tmp_path / "run" / LOCK).read_text())["token"] == lock["token"]  # untouched
    p.stdin.close()
    assert p.wait(timeout=30) == 0
    assert not (tmp_path / "run" / LOCK).exists()  # released on exit
    assert not (tmp_path / "run").exists()  # the holder made the folder and wrote nothing: removed
    with FolderLock(tmp_path / "run", "prepare") as mine:
        assert json.loads((tmp_path / "run" / LOCK).read_text())["pid"] == os.getpid()
        assert mine.took_over is None


def test_the_commands_refuse_a_held_folder(tmp_path, holder, small_data, capsys):
    from ampxfer_lib.cli.main import main

    xin, tgt = write_pair(tmp_path / "rec", seconds=6.0)
    p = holder(tmp_path / "data", "prepare")
    code = main(["prepare", "--input", str(xin), "--target", str(tgt), "--out", str(tmp_path / "data")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert re.match("^error: " + busy(tmp_path / "data", "prepare", p.pid)[:-1], err[0]) and err[0].endswith("heartbeat")
    assert sorted(os.listdir(tmp_path / "data")) == [LOCK]  # nothing written

    q = holder(tmp_path / "run", "train")
    code = main(["train", "--data", str(small_data), "--out", str(tmp_path / "run"), "--hidden-size", "4",
                 "--max-epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and re.match("^error: " + busy(tmp_path / "run", "train", q.pid), err[0])
    assert sorted(os.listdir(tmp_path / "run")) == [LOCK]


def _contend(folder, barrier, results):
    barrier.wait()
    try:
        with FolderLock(folder, "train"):
            results.put(("won", os.getpid()))
            time.sleep(3.0)  # hold while the others try
    except FolderInUseError as exc:
        results.put(("refused", str(exc)))


def test_of_processes_started_together_exactly_one_wins(tmp_path):
    ctx = multiprocessing.get_context("fork")
    n = 4
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(tmp_path / "run", barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in range(n)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    winners = [pid for what, pid in got if what == "won"]
    assert len(winners) == 1
    refusals = [msg for what, msg in got if what == "refused"]
    assert len(refusals) == n - 1
    assert all(re.match(busy(tmp_path / "run", "train", winners[0]), m) for m in refusals)
    assert not (tmp_path / "run").exists()


def test_a_sigkilled_holders_lock_is_taken_over(tmp_path, holder):
    (tmp_path / "run").mkdir()
    p = holder(tmp_path / "run")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert (tmp_path / "run" / LOCK).exists()  # a kill leaves the lock behind
    with FolderLock(tmp_path / "run", "train") as lock:
        assert lock.took_over == f"pid {p.pid} is no longer running"
        assert json.loads((tmp_path / "run" / LOCK).read_text())["pid"] == os.getpid()
    assert os.listdir(tmp_path / "run") == []  # the folder existed: kept, the lock gone


def _plant(folder: Path, **holder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK).write_text(json.dumps(holder))


def test_another_hosts_lock_is_stale_only_after_its_heartbeat_stops(tmp_path):
    now = time.time()
    _plant(tmp_path / "a", pid=4242, host="colab-vm-1", purpose="train", since=now - 3600, heartbeat=now - 30,
           token="t")
    with pytest.raises(FolderInUseError, match=busy(tmp_path / "a", "train", 4242, "colab-vm-1")):
        FolderLock(tmp_path / "a", "train").acquire()
    _plant(tmp_path / "b", pid=4242, host="colab-vm-1", purpose="train", since=now - 3600,
           heartbeat=now - folders.STALE_SECONDS - 5, token="t")
    with FolderLock(tmp_path / "b", "train") as lock:
        assert re.fullmatch(r"no heartbeat for 60\d s", lock.took_over)


def test_a_lock_with_this_processes_pid_that_it_does_not_hold_is_stale(tmp_path):
    # a restarted container: same host name, and the new process got the old one's pid
    _plant(tmp_path / "a", pid=os.getpid(), host=HOST, purpose="train", since=time.time(), heartbeat=time.time(),
           token="old")
    with FolderLock(tmp_path / "a", "train") as lock:
        assert lock.took_over == f"pid {os.getpid()} is this process, which does not hold the folder"


def test_the_heartbeat_is_renewed_while_the_work_runs(tmp_path):
    with FolderLock(tmp_path / "a", "train", heartbeat_seconds=0.05):
        first = json.loads((tmp_path / "a" / LOCK).read_text())
        time.sleep(0.5)
        later = json.loads((tmp_path / "a" / LOCK).read_text())
    assert later["heartbeat"] > first["heartbeat"] and later["since"] == first["since"]
    assert later["token"] == first["token"]


def test_a_process_may_hold_a_folder_it_holds_again(tmp_path):
    with FolderLock(tmp_path / "a", "study"):
        with FolderLock(tmp_path / "a", "train"):
            pass
        assert (tmp_path / "a" / LOCK).exists()  # still held by the outer hold
    assert not (tmp_path / "a").exists()


def test_a_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(folders.OutputError, match=r"f: exists and is not a folder; choose another --out$"):
        FolderLock(tmp_path / "f", "train").acquire()


# --------------------------------------------------------------------------- class 2: the user's files

def test_prepare_never_replaces_the_users_own_data_file(tmp_path):
    xin, tgt = write_pair(tmp_path / "rec", seconds=6.0)
    out = tmp_path / "data"
    out.mkdir()
    sf.write(out / "train_input.wav", np.full(100, 0.25, np.float32), 44100, subtype="FLOAT")
    mine = (out / "train_input.wav").read_bytes()
    with pytest.raises(ConfigError) as e:
        prepare(one(xin, tgt), out, PrepareConfig(**SMALL))
    assert str(e.value) == (f"{out}: holds train_input.wav, which ampxfer did not write (it is not in {FILES}); "
                            "move it away or choose a new --out folder, or pass --overwrite to replace it")
    assert (out / "train_input.wav").read_bytes() == mine and sorted(os.listdir(out)) == ["train_input.wav"]
    prepare(one(xin, tgt), out, PrepareConfig(**SMALL), overwrite=True)
    assert (out / "train_input.wav").read_bytes() != mine
    record = json.loads((out / FILES).read_text())["files"]
    assert sorted(record) == sorted(n for n in os.listdir(out) if not n.startswith("."))
    assert all(record[n] == folders.sha256_file(out / n) for n in record)


def test_the_leftovers_of_an_interrupted_prepare_are_proven_by_the_record(tmp_path):
    xin, tgt = write_pair(tmp_path / "rec", seconds=6.0)
    out = tmp_path / "data"
    first = prepare(one(xin, tgt), out, PrepareConfig(**SMALL))
    (out / "manifest.json").unlink()  # as a kill before the manifest leaves it
    assert prepare(one(xin, tgt), out, PrepareConfig(**SMALL)) == first
    (out / "manifest.json").unlink()
    sf.write(out / "val_target.wav", np.zeros(10, np.float32), 44100)  # the user replaced one
    with pytest.raises(ConfigError, match=r"holds val_target\.wav, which ampxfer did not write"):
        prepare(one(xin, tgt), out, PrepareConfig(**SMALL))


def test_train_never_replaces_the_users_own_model(small_data, tmp_path):
    from ampxfer_lib.training.config import make_config
    from ampxfer_lib.training.loop import train

    out = tmp_path / "run"
    out.mkdir()
    (out / "model_best.json").write_text('{"mine": true}')
    cfg = make_config(small_data, "agam", hidden_size=4, max_epochs=1)
    with pytest.raises(RunFolderError) as e:
        train(cfg, out)
    assert str(e.value) == (f"{out}: holds model_best.json, which no ampxfer run wrote here (there is no config.json); "
                            "move it away or choose a new --out folder, or pass --overwrite to replace it")
    assert sorted(os.listdir(out)) == ["model_best.json"] and (out / "model_best.json").read_text() == '{"mine": true}'
    train(cfg, out, overwrite=True)
    assert "model_data" in json.loads((out / "model_best.json").read_text())


# --------------------------------------------------------------------------- class 6: leftovers, FLAC, portability

def test_a_killed_writers_temporaries_are_removed_at_the_next_start(tmp_path):
    xin, tgt = write_pair(tmp_path / "rec", seconds=6.0)
    out = tmp_path / "data"
    out.mkdir()
    (out / ".train_input.wav.k2x_9abc.tmp").write_bytes(b"half a file")
    (out / ".notes").write_text("the user's hidden file")
    prepare(one(xin, tgt), out, PrepareConfig(**SMALL))
    assert not (out / ".train_input.wav.k2x_9abc.tmp").exists() and (out / ".notes").exists()


def test_a_render_to_flac_above_full_scale_says_so(tmp_path):
    from ampxfer_lib.model.render import write_render

    y = np.concatenate([np.full(3, 2.0), np.full(5, -1.25), np.full(4, 1.0), np.zeros(100)]).astype(np.float32)
    (tmp_path / ".out.flac.abcd1234.tmp").write_bytes(b"from a killed render")
    msg = write_render(tmp_path / "out.flac", y, 44100)
    assert msg == (f"{tmp_path / 'out.flac'}: the render peaks at +6.0 dBFS (2.00x full scale) and FLAC clipped its "
                   "8 sample(s) above full scale; write a .wav (32-bit float keeps them) or lower the input level "
                   "by 6.0 dB")
    assert not (tmp_path / ".out.flac.abcd1234.tmp").exists()
    back, _ = sf.read(tmp_path / "out.flac", dtype="float32")
    assert back.max() <= 1.0 and back.min() >= -1.0
    assert write_render(tmp_path / "out.wav", y, 44100) is None
    assert sf.read(tmp_path / "out.wav", dtype="float32")[0].max() == 2.0
    assert write_render(tmp_path / "quiet.flac", 0.5 * y, 44100) is None


def test_plan_json_is_portable(tmp_path):
    from ampxfer_lib.study.config import StudyConfig
    from ampxfer_lib.study.plan import PLAN, plan_study, read_plan, write_plan

    cfg = StudyConfig.from_dict({"pairs": [{"name": "p", "source": {"data": str(tmp_path / "s" / "src")},
                                            "target": {"data": str(tmp_path / "s" / "tgt")}},
                                           {"name": "q", "source": {"data": "/elsewhere/src"},
                                            "target": {"data": "/elsewhere/tgt2"}}],
                                 "data_sizes": ["limited"], "max_epochs": 2})
    specs = plan_study(cfg, tmp_path / "s")
    write_plan(cfg, specs, tmp_path / "s", smoke=False)
    stored = json.loads((tmp_path / "s" / PLAN).read_text())
    assert str(tmp_path) not in json.dumps(stored)  # nothing absolute inside the folder
    t = next(r for r in stored["runs"] if r["run_id"] == "transfer/p/limited/seed0")
    assert (t["run_dir"], t["config"]["data"], t["config"]["init_from"]) == \
        ("runs/transfer/p/limited/seed0", "tgt", "runs/source/p")
    assert next(r for r in stored["runs"] if r["run_id"] == "source/q")["config"]["data"] == "/elsewhere/src"

    shutil.move(str(tmp_path / "s"), str(tmp_path / "moved"))
    cfg2, specs2 = read_plan(tmp_path / "moved")
    new = tmp_path / "moved"
    assert [s.run_dir for s in specs2] == [str(new / Path(s.run_dir).relative_to(tmp_path / "s").as_posix())
                                          for s in specs]
    t2 = next(s for s in specs2 if s.run_id == "transfer/p/limited/seed0")
    assert (t2.config.data, t2.config.init_from) == (str(new / "tgt"), str(new / "runs/source/p"))
    assert cfg2.pairs[0].target == str(new / "tgt") and cfg2.pairs[1].source.data == "/elsewhere/src"

    # a plan from before: absolute paths, loaded as they are
    old = dict(stored, runs=[dict(r, run_dir="/old/place/" + r["run_dir"]) for r in stored["runs"]])
    (new / PLAN).write_text(json.dumps(old))
    assert all(s.run_dir.startswith("/old/place/runs/") for s in read_plan(new)[1])


def test_export_and_import_remove_a_killed_writes_temporary(tmp_path, capsys):
    from ampxfer_lib.cli.main import main
    from ampxfer_lib.model.formats import neuralpi
    from ampxfer_lib.model.network import AmpLSTM
    from ampxfer_lib.model.weights import ModelConfig

    neuralpi.save(AmpLSTM(ModelConfig(hidden_size=4)).weights(), tmp_path / "m.json")
    (tmp_path / ".out.json.abc_1234.tmp").write_text("{half")
    assert main(["export", "--model", str(tmp_path / "m.json"), "--format", "rtneural",
                 "--out", str(tmp_path / "out.json")]) == 0
    (tmp_path / ".back.json.zz99xx00.tmp").write_text("{half")
    assert main(["import", "--model", str(tmp_path / "out.json"), "--out", str(tmp_path / "back.json")]) == 0
    assert sorted(os.listdir(tmp_path)) == ["back.json", "m.json", "out.json"]


def test_a_capture_folder_held_by_another_process_is_refused(tmp_path, holder, capsys):
    from ampxfer_lib.cli.main import main

    xin, tgt = write_pair(tmp_path / "rec", seconds=6.0)
    (tmp_path / "lib").mkdir()
    p = holder(tmp_path / "cap", "capture")
    code = main(["capture", "--input", str(xin), "--target", str(tgt), "--out", str(tmp_path / "cap"),
                 "--library", str(tmp_path / "lib"), "--no-register"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and re.match("^error: " + busy(tmp_path / "cap", "capture", p.pid), err[0])
    assert sorted(os.listdir(tmp_path / "cap")) == [LOCK]  # nothing written


def _add_to_library(library, model, name, barrier, results):
    from ampxfer_lib.library.index import ModelLibrary

    barrier.wait()
    try:
        ModelLibrary(library).add(model, name)
        results.put(("added", name))
    except FolderInUseError as exc:
        results.put(("refused", str(exc)))


def test_library_additions_at_the_same_moment_are_never_lost(tmp_path):
    from ampxfer_lib.library.index import ModelLibrary
    from ampxfer_lib.model.formats import save_model
    from ampxfer_lib.model.network import new_model
    from ampxfer_lib.model.weights import ModelConfig

    models = []
    for i in range(4):
        models.append(tmp_path / f"m{i}.json")
        save_model(new_model(ModelConfig(1, 4, True, 44100), seed=i).weights(), models[-1])
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_add_to_library, args=(tmp_path / "lib", m, f"model {i}", barrier, results))
             for i, m in enumerate(models)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    # each update waits for the one in progress: all four land, none is lost or refused
    assert outcomes == [("added", f"model {i}") for i in range(4)]
    assert sorted(e.name for e in ModelLibrary(tmp_path / "lib").entries()) == [f"model {i}" for i in range(4)]
