"""The study runner: config round trip, planning, execution, resume/skip, executors, CLI."""

import csv
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ampxfer_lib.training import checkpoint as ckpt
from ampxfer_lib.cli.main import main
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.model.formats import load_model, save_model
from ampxfer_lib.model.network import new_model
from ampxfer_lib.model.weights import ModelConfig, fold_knobs
from ampxfer_lib.study.report import RESULT_COLUMNS
from ampxfer_lib.study.config import StudyConfig, load_study, shipped_studies
from ampxfer_lib.study.executors import InProcessExecutor, make_executor
from ampxfer_lib.study.plan import plan_study, run_state
from ampxfer_lib.study.run import run_study
from ampxfer_lib.training.callbacks import Callback
from ampxfer_lib.training.config import make_config
from ampxfer_lib.training.loop import Trainer

from conftest import file_hashes

TINY = {"hidden_size": 4}


def tiny_study(a, b, **kw) -> StudyConfig:
    values = dict(pairs=[{"name": "ab", "source": {"data": str(a)}, "target": {"data": str(b)}}],
                  data_sizes=["limited"], max_epochs=2, train=TINY)
    values.update(kw)
    return StudyConfig.from_dict(values)


# --------------------------------------------------------------------------- config and plan

def test_config_round_trips_and_resolves_paths(tmp_path):
    d = {"name": "x", "pairs": [{"name": "p", "source": {"model": "m/src.json", "knobs": [0.5]},
                                 "target": {"data": "data/t", "name": "tt"}},
                                {"source": {"data": "data/s"}, "target": {"data": "data/t2"}}],
         "preset": "agam", "data_sizes": ["full"], "seeds": [3, 1], "max_epochs": 7, "patience": 4, "threads": 2,
         "train": {"hidden_size": 8}, "transfer": {"lr": 1e-3}, "source_seed": 5, "smoke_epochs": 1}
    cfg = StudyConfig.from_dict(d)
    assert StudyConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.pairs[1].name == "s_to_t2"  # default name from the source and target
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "s.json").write_text(json.dumps(d))
    here = load_study(tmp_path / "cfg" / "s.json")
    assert here.pairs[0].target == str(tmp_path / "cfg" / "data" / "t")
    assert here.pairs[0].source.model == str(tmp_path / "cfg" / "m" / "src.json")
    rooted = load_study(tmp_path / "cfg" / "s.json", data_root=tmp_path / "root")
    assert rooted.pairs[1].source.data == str(tmp_path / "root" / "data" / "s")


@pytest.mark.parametrize("change, message", [
    ({"pairs": []}, "no pairs"),
    ({"pairs": [{"source": {"data": "a", "model": "m.json"}, "target": {"data": "b"}}]}, "one of the two"),
    ({"pairs": [{"source": {"data": "a", "knobs": [1]}, "target": {"data": "b"}}]}, "applies to a source model"),
    ({"pairs": [{"name": "a b", "source": {"data": "a"}, "target": {"data": "b"}}]}, "names folders"),
    ({"data_sizes": ["half"]}, "data_sizes"),
    ({"seeds": [1, 1]}, "distinct"),
    ({"train": {"max_epochs": 3}}, "set by the study"),
    ({"transfer": {"learning_rate": 3}}, "unknown training setting"),
    ({"epochs": 3}, "unknown setting"),
    ({"preset": "nope"}, "unknown preset"),
])
def test_bad_configs_are_explained(change, message):
    d = {"pairs": [{"source": {"data": "a"}, "target": {"data": "b"}}]}
    d.update(change)
    with pytest.raises(ConfigError, match=message):
        StudyConfig.from_dict(d)


def test_plan_shares_scratch_runs_and_orders_sources_first(tmp_path):
    cfg = StudyConfig.from_dict({
        "pairs": [{"name": "p1", "source": {"data": "/d/s1"}, "target": {"data": "/d/t"}},
                  {"name": "p2", "source": {"model": "/m/s2.json"}, "target": {"data": "/d/t"}},
                  {"name": "p3", "source": {"data": "/d/s1"}, "target": {"data": "/d/u"}}],
        "seeds": [0, 1], "max_epochs": 9, "patience": 3, "threads": 2, "transfer": {"lr": 1e-3}})
    specs = plan_study(cfg, tmp_path / "out")
    by_role = {r: [s for s in specs if s.role == r] for r in ("source", "scratch", "transfer")}
    # one source run for the shared source data; scratch per (target, size, seed); transfer per pair
    assert len(by_role["source"]) == 1 and by_role["source"][0].pairs == ("p1", "p3")
    assert len(by_role["scratch"]) == 2 * 2 * 2 and len(by_role["transfer"]) == 3 * 2 * 2
    shared = [s for s in by_role["scratch"] if s.target == "t"]
    assert all(s.pairs == ("p1", "p2") for s in shared)
    seen = set()
    for s in specs:
        assert set(s.after) <= seen
        seen.add(s.run_id)
        assert (s.config.preset, s.config.max_epochs, s.config.patience, s.config.threads) == ("agam", 9, 3, 2)
    src_dir = by_role["source"][0].run_dir
    for t in by_role["transfer"]:
        scratch = next(s for s in by_role["scratch"] if (s.target, s.data_size, s.seed) == (t.target, t.data_size, t.seed))
        # same data, subset, seed, budget and validation audio: only the start and the recipe differ
        assert replace(t.config, init_from=None, lr=scratch.config.lr) == scratch.config
        assert t.config.lr == 1e-3
        if t.pairs == ("p2",):
            assert t.config.init_from == "/m/s2.json" and t.after == ()
        else:
            assert t.config.init_from == src_dir and t.after == ("source/p1",)
    assert {s.config.max_epochs for s in plan_study(cfg, tmp_path / "out", smoke=True)} == {cfg.smoke_epochs}


def test_budgets_per_data_size_and_for_sources(tmp_path):
    cfg = StudyConfig.from_dict({"pairs": [{"name": "p", "source": {"data": "/d/s"}, "target": {"data": "/d/t"}}],
                                 "max_epochs": {"full": 6, "limited": 20}, "source_max_epochs": 50})
    assert StudyConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    budgets = {(s.role, s.data_size): s.config.max_epochs for s in plan_study(cfg, tmp_path)}
    assert budgets == {("source", "full"): 50, ("scratch", "full"): 6, ("transfer", "full"): 6,
                       ("scratch", "limited"): 20, ("transfer", "limited"): 20}
    with pytest.raises(ConfigError, match="give a budget for each"):
        StudyConfig.from_dict({"pairs": cfg.to_dict()["pairs"], "max_epochs": {"full": 6}})
    with pytest.raises(ConfigError, match="whole number"):
        StudyConfig.from_dict({"pairs": cfg.to_dict()["pairs"], "max_epochs": 0})


def test_shipped_config_names_the_sample_pairs():
    path = shipped_studies()["sample_pairs"]
    cfg = load_study(path, data_root="/data")
    assert [(p.name, p.source.data, p.target) for p in cfg.pairs] == [
        ("pedal", "/data/ts9", "/data/mt2"), ("amp", "/data/bluesjr", "/data/ht40")]
    assert cfg.preset == "agam" and cfg.data_sizes == ("full", "limited") and cfg.seeds == (0,)


# --------------------------------------------------------------------------- running

@pytest.fixture(scope="module")
def tiny_run(small_data, small_data_b, tmp_path_factory):
    """A study trained once in-process: a data source, a folded conditioned model source, one target."""
    root = tmp_path_factory.mktemp("study")
    cond = new_model(ModelConfig(input_size=2, hidden_size=4), seed=3).weights()
    save_model(cond, root / "cond.json")
    cfg = tiny_study(small_data, small_data_b, pairs=[
        {"name": "ab", "source": {"data": str(small_data)}, "target": {"data": str(small_data_b)}},
        {"name": "cond", "source": {"model": str(root / "cond.json"), "knobs": [0.25]},
         "target": {"data": str(small_data_b)}}])
    hashes = file_hashes(root / "cond.json")
    outcome = run_study(cfg, root / "out", InProcessExecutor(), progress=False, log=lambda m: None)
    return cfg, outcome, root, hashes


def test_study_writes_results_table_and_figures(tiny_run):
    cfg, outcome, root, hashes = tiny_run
    assert file_hashes(root / "cond.json") == hashes  # the source model is read, never written
    folded = load_model(root / "out" / "sources" / "cond.json")
    assert folded.equal(fold_knobs(load_model(root / "cond.json"), [0.25]))
    with open(outcome.results_csv) as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == RESULT_COLUMNS
    assert sorted((r["pair"], r["init"], r["data"]) for r in rows) == [
        ("ab", "scratch", "limited"), ("ab", "transfer", "limited"),
        ("cond", "scratch", "limited"), ("cond", "transfer", "limited")]
    for r in rows:
        s = ckpt.read_summary(root / "out" / "runs" / r["run_id"])
        assert float(r["best_val_loss"]) == s["best_val_loss"] and int(r["epochs"]) == 2 == s["epochs"]
        assert float(r["train_seconds_audio"]) == 2.0  # the limited subset of the fixture
        assert r["status"] == "complete" and r["seed"] == "0"
    scratch = [r for r in rows if r["init"] == "scratch"]
    assert scratch[0]["run_id"] == scratch[1]["run_id"]  # both pairs share the target's scratch run
    transfer = ckpt.read_summary(root / "out" / "runs" / "transfer" / "ab" / "limited" / "seed0")
    assert transfer["init_from"] == str(root / "out" / "runs" / "source" / "ab")
    cond = ckpt.read_summary(root / "out" / "runs" / "transfer" / "cond" / "limited" / "seed0")
    assert cond["init_from"] == str(root / "out" / "sources" / "cond.json")
    table = outcome.table1.read_text()
    ratio = transfer["best_val_loss"] / ckpt.read_summary(root / "out" / "runs" / scratch[0]["run_id"])["best_val_loss"]
    assert f"| ab | limited | " in table and f"{ratio:.3f}" in table
    assert sorted(p.name for p in outcome.figures) == ["ab_limited.png", "ab_limited.svg",
                                                      "cond_limited.png", "cond_limited.svg"]
    assert all(p.stat().st_size > 1000 for p in outcome.figures)
    log = (root / "out" / "runs" / "source" / "ab" / "train.log").read_text()
    assert "epoch    2" in log
    # the study folder alone is enough to rebuild the report (plan.json names every run)
    from ampxfer_lib.study.report import load_results, results_table

    again = results_table(load_results(root / "out"))
    assert [(r["pair"], r["init"], r["best_val_loss"]) for r in again] == \
        [(r["pair"], r["init"], float(r["best_val_loss"])) for r in rows]


def test_complete_runs_are_skipped_not_retrained(tiny_run):
    cfg, outcome, root, _ = tiny_run
    stamps = {s.run_id: os.stat(Path(s.run_dir) / ckpt.CHECKPOINT).st_mtime_ns for s in outcome.specs}
    messages = []
    again = run_study(cfg, root / "out", InProcessExecutor(), progress=False, log=messages.append)
    assert sorted(again.skipped) == sorted(stamps) and "0 to train" in messages[0]
    assert {s.run_id: os.stat(Path(s.run_dir) / ckpt.CHECKPOINT).st_mtime_ns for s in outcome.specs} == stamps
    assert all(run_state(s) == "done" for s in again.specs)


class Interrupt(Callback):
    def on_epoch(self, run, record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt


def test_interrupted_and_extended_runs_resume(small_data, small_data_b, tmp_path):
    cfg = tiny_study(small_data, small_data_b, pairs=[
        {"name": "m", "source": {"model": str(tmp_path / "src.json")}, "target": {"data": str(small_data_b)}}])
    save_model(new_model(ModelConfig(hidden_size=4), seed=1).weights(), tmp_path / "src.json")
    specs = plan_study(cfg, tmp_path / "out")
    scratch = next(s for s in specs if s.role == "scratch")
    with pytest.raises(KeyboardInterrupt):  # killed after epoch 1 (its checkpoint is on disk)
        Trainer(scratch.config, scratch.run_dir, [Interrupt()]).run()
    first = ckpt.read_history(scratch.run_dir)
    assert run_state(scratch) == "partial"
    out = run_study(cfg, tmp_path / "out", progress=False, log=lambda m: None)
    assert out.skipped == []
    resumed = ckpt.read_history(scratch.run_dir)
    assert resumed[:2] == first and [h["epoch"] for h in resumed] == [0, 1, 2]
    # a larger budget extends finished runs instead of starting over
    longer = run_study(replace(cfg, max_epochs=3), tmp_path / "out", progress=False, log=lambda m: None)
    assert longer.skipped == []
    extended = ckpt.read_history(scratch.run_dir)
    assert extended[:3] == resumed and extended[-1]["epoch"] == 3


def test_sources_are_checked_before_any_training(small_data, small_data_b, tmp_path):
    save_model(new_model(ModelConfig(hidden_size=8), seed=1).weights(), tmp_path / "h8.json")
    cfg = tiny_study(small_data, small_data_b, pairs=[
        {"name": "m", "source": {"model": str(tmp_path / "h8.json")}, "target": {"data": str(small_data_b)}}])
    with pytest.raises(ConfigError, match="hidden size 8 cannot start a hidden-4 model"):
        run_study(cfg, tmp_path / "out", progress=False, log=lambda m: None)
    assert not (tmp_path / "out" / "runs").exists()
    keep = replace(cfg, train={}, transfer={"keep_optimizer": True})
    with pytest.raises(ConfigError, match="keep_optimizer needs a source trained by the study"):
        run_study(keep, tmp_path / "out2", progress=False, log=lambda m: None)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files"):
        run_study(cfg, tmp_path / "busy", progress=False, log=lambda m: None)


def test_ray_executor_gives_identical_results(tiny_run):
    ray = pytest.importorskip("ray")
    cfg, outcome, root, _ = tiny_run
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False)
    try:
        other = run_study(cfg, root / "out_ray", make_executor("ray"), progress=False, log=lambda m: None)
    finally:
        ray.shutdown()
    assert other.skipped == []
    for spec in outcome.specs:
        a, b = Path(spec.run_dir), root / "out_ray" / "runs" / spec.run_id
        ha, hb = ckpt.read_history(a), ckpt.read_history(b)
        assert [h["val_loss"] for h in ha] == [h["val_loss"] for h in hb]
        assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]
        assert load_model(a / ckpt.MODEL_BEST).equal(load_model(b / ckpt.MODEL_BEST))
        assert ckpt.read_summary(b)["threads"] == 1


def test_cli_study_smoke_and_errors(small_data, small_data_b, tmp_path, capsys):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"pairs": [{"name": "ab", "source": {"data": "a"}, "target": {"data": "b"}}],
                                "data_sizes": ["limited"], "train": TINY, "smoke_epochs": 1}))
    os.symlink(small_data, tmp_path / "a")
    os.symlink(small_data_b, tmp_path / "b")
    assert main(["study", "--config", str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [l.split()[:2] for l in lines] == [["new", "source/ab"], ["new", "scratch/b/limited/seed0"],
                                              ["new", "transfer/ab/limited/seed0"]]
    assert main(["study", "--config", str(path), "--out", str(tmp_path / "o"), "--smoke", "--progress", "none",
                 "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "3 to train" in out and "Table 1" in out and "| ab | limited |" in out
    assert main(["study", "--config", "sample_pairs", "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: sample_pairs.json: a shipped study") and "--data-root" in err
    assert main(["study", "--config", "sample_pairs", "--out", str(tmp_path / "o2"), "--prepare-sample-data"]) == 2
    assert "--prepare-sample-data needs --data-root" in capsys.readouterr().err
    assert main(["study", "--config", str(path), "--out", str(tmp_path / "o3"), "--executor", "local",
                 "--address", "x"]) == 2
    assert "--address is for --executor ray" in capsys.readouterr().err
