"""ProcessExecutor: runs side by side in worker processes, identical to running them here."""

from pathlib import Path

import pytest

from ampxfer_lib.training import checkpoint as ckpt
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.model.formats import load_model
from ampxfer_lib.study.config import StudyConfig
from ampxfer_lib.study.executors import InProcessExecutor, ProcessExecutor
from ampxfer_lib.study.plan import plan_study
from ampxfer_lib.study.run import run_study


def tiny_study(a, b) -> StudyConfig:
    return StudyConfig.from_dict({"pairs": [{"name": "ab", "source": {"data": str(a)}, "target": {"data": str(b)}}],
                                  "data_sizes": ["limited"], "max_epochs": 2, "train": {"hidden_size": 4}})


def test_process_executor_gives_identical_results(small_data, small_data_b, tmp_path):
    cfg = tiny_study(small_data, small_data_b)
    here = run_study(cfg, tmp_path / "here", InProcessExecutor(), progress=False, log=lambda m: None)
    polled, order = [], []
    executor = ProcessExecutor(workers=2, poll=polled.append, poll_seconds=0.5)
    run = executor.run
    executor.run = lambda specs, on_done: run(specs, lambda s, r: (order.append(s.run_id), on_done(s, r)))
    there = run_study(cfg, tmp_path / "there", executor, progress=False, log=lambda m: None)
    assert order.index("source/ab") < order.index("transfer/ab/limited/seed0")  # the transfer waits for its source
    assert sorted(there.summaries) == sorted(s.run_id for s in there.specs) == ["scratch/data/limited/seed0",
                                                                                "source/ab",
                                                                                "transfer/ab/limited/seed0"]
    for spec in here.specs:
        a, b = Path(spec.run_dir), tmp_path / "there" / "runs" / spec.run_id
        ha, hb = ckpt.read_history(a), ckpt.read_history(b)
        assert [h["val_loss"] for h in ha] == [h["val_loss"] for h in hb]
        assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]
        assert load_model(a / ckpt.MODEL_BEST).equal(load_model(b / ckpt.MODEL_BEST))
        assert ckpt.read_summary(b)["threads"] == 1
    assert polled and polled[-1] == []  # the last poll comes after every run finished


def test_a_failing_run_raises_its_own_error(small_data, small_data_b, tmp_path):
    specs = plan_study(tiny_study(small_data, small_data_b), tmp_path)
    bad = [s for s in specs if s.role == "scratch"][0]
    broken = type(bad)(**{**bad.__dict__, "config": type(bad.config)(**{**bad.config.to_dict(),
                                                                        "data": str(tmp_path / "nowhere")})})
    with pytest.raises(ConfigError, match="nowhere: no such folder"):
        ProcessExecutor(workers=1).run([broken])


def test_bad_settings():
    with pytest.raises(ConfigError, match="at least 1"):
        ProcessExecutor(workers=0)
    assert ProcessExecutor(workers=2).run([]) == {}
