"""The real-gear benchmark's arithmetic (bench/real_gear_report.py) and harness (bench/real_gear.py):
time to threshold, ratios, medians, targets, split arithmetic, leave-one-out, resumable CPU clock."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare
from ampxfer_lib.data.audio import write_audio
from ampxfer_lib.model.formats import load_model, save_model
from ampxfer_lib.model.network import AmpLSTM, new_model
from ampxfer_lib.model.weights import ModelConfig, ModelWeights
from ampxfer_lib.training.config import make_config
from ampxfer_lib.training.evaluate import evaluate
from ampxfer_lib.model.weights import fold_knobs

from conftest import realdata_or_skip

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import real_gear as rg  # noqa: E402
import real_gear_report as rep  # noqa: E402


def curve(*points):
    """(epoch, cpu_s, val_esr) -> curve records (val_loss = val_esr here, lr fixed)."""
    return [{"epoch": e, "cpu_s": c, "val_esr": v, "val_loss": v, "train_loss": None, "lr": 1e-3} for e, c, v in points]


def result(points, best_epoch, test_esr, stop="early_stop"):
    epochs = points[-1][0]
    return {"summary": {"best_epoch": best_epoch, "test_esr": test_esr, "epochs": epochs, "stop_reason": stop,
                        "best_val_loss": None}, "curve": curve(*points), "wall_s": 10.0, "cpu_exact": True}


# --------------------------------------------------------------------------- one run

def test_time_to_thresholds_takes_the_first_crossing_and_none_when_never():
    c = curve((0, 0.0, 0.9), (1, 10.0, 0.2), (2, 20.0, None), (3, 30.0, 0.04), (4, 40.0, 0.06), (5, 50.0, 0.015))
    assert rep.time_to_thresholds(c) == {0.10: 30.0, 0.05: 30.0, 0.02: 50.0, 0.01: None}
    # exactly at the level counts as reached; a start already there takes no time
    assert rep.time_to_thresholds(curve((0, 0.0, 0.05), (1, 5.0, 0.01))) == {0.10: 0.0, 0.05: 0.0, 0.02: 5.0, 0.01: 5.0}


def test_run_metrics_reads_best_epoch_start_and_cap():
    m = rep.run_metrics(result([(0, 0.0, 1.2), (1, 3.0, 0.5), (2, 6.0, 0.3), (3, 9.0, 0.4)], 2, 0.31, "max_epochs"))
    assert (m["best_val_esr"], m["cpu_to_best"], m["cpu_s"]) == (0.3, 6.0, 9.0)
    assert (m["start_val_esr"], m["start_val_loss"], m["epochs"], m["cap_hit"]) == (1.2, 1.2, 3, True)
    assert m["ttq"][0.10] is None


# --------------------------------------------------------------------------- ratios

def test_speedup_to_level_closed_form():
    c = curve((0, 0.0, 1.0), (1, 20.0, 0.3), (2, 40.0, 0.1))
    assert rep.speedup_to_level(120.0, c, 0.1) == 3.0
    assert rep.speedup_to_level(120.0, c, 0.05) == 0.0  # never reached: the worst speed-up
    assert rep.speedup_to_level(120.0, c, 1.0) == math.inf  # the start is already there
    assert rep.speedup_to_level(None, c, 0.1) is None


def test_device_ratios_on_hand_made_runs():
    agam = rep.run_metrics(result([(0, 0.0, 1.0), (2, 100.0, 0.08), (4, 300.0, 0.05), (6, 400.0, 0.06)], 4, 0.06))
    scratch = rep.run_metrics(result([(0, 0.0, 1.0), (1, 25.0, 0.2), (2, 50.0, 0.05), (3, 75.0, 0.04)], 3, 0.048))
    quick = rep.run_metrics(result([(0, 0.0, 0.5), (1, 10.0, 0.08), (2, 20.0, 0.07)], 2, 0.072))
    transfer = rep.run_metrics(result([(0, 0.0, 0.5), (1, 25.0, 0.045), (2, 50.0, 0.03)], 2, 0.036))
    r = rep.device_ratios({"scratch_full": scratch, "agam_full": agam, "quick": quick, "transfer_full": transfer},
                          rank_cpu_s=15.0)
    assert r["default_vs_agam_test"] == pytest.approx(0.048 / 0.06)
    assert r["default_speedup_vs_agam"] == 300.0 / 50.0  # agam's best (ESR 0.05 at 300 s); scratch gets there at 50 s
    assert r["transfer_start_vs_scratch"] == 0.5
    assert r["quick_vs_scratch_test"] == pytest.approx(1.5)
    assert r["quick_cpu_s"] == 35.0  # ranking + the whole quick run
    assert r["transfer_vs_scratch_test"] == pytest.approx(0.75)
    assert r["transfer_speedup"] == 75.0 / 50.0  # scratch's best (0.04 at 75 s); transfer reaches it at 50 s
    assert r["transfer_cpu_ratio"] == pytest.approx(50.0 / 75.0)
    # missing runs give None, never an error
    only = rep.device_ratios({"scratch_full": scratch}, None)
    assert only["default_vs_agam_test"] is None and only["transfer_speedup"] is None and only["quick_cpu_s"] is None


def test_median_ignores_missing_and_keeps_inf():
    assert rep.median([3.0, None, 1.0, 2.0]) == 2.0
    assert rep.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert rep.median([None, None]) is None
    assert rep.median([1.0, math.inf]) == math.inf
    assert rep.median([0.0, 2.0, math.inf]) == 2.0
    seeds = rep.combine_seeds([{"quick_vs_scratch_test": 1.2}, {"quick_vs_scratch_test": 1.6}])
    assert seeds["quick_vs_scratch_test"] == pytest.approx(1.4) and seeds["transfer_speedup"] is None


def ratios(**kw):
    base = dict(default_vs_agam_test=0.8, default_speedup_vs_agam=4.0, transfer_start_vs_scratch=0.5,
                quick_vs_scratch_test=1.3, quick_cpu_s=200.0, transfer_vs_scratch_test=0.9, transfer_speedup=2.0,
                transfer_cpu_ratio=0.7, scratch_test_esr=0.001)
    base.update(kw)
    return base


def test_targets_met_and_missed():
    good = {"a": ratios(), "b": ratios(), "c": ratios()}
    assert [t["met"] for t in rep.evaluate_targets(good)] == [True, True, True, True]
    bad = {"a": ratios(default_vs_agam_test=1.05, transfer_start_vs_scratch=1.0, transfer_vs_scratch_test=1.01),
           "b": ratios(quick_vs_scratch_test=1.6, default_speedup_vs_agam=0.0),
           "c": ratios(quick_vs_scratch_test=1.7, default_speedup_vs_agam=2.0)}
    t = rep.evaluate_targets(bad)
    assert [x["met"] for x in t] == [False, False, False, False]
    assert "worse on 1 (a)" in t[0]["text"] and "seed noise" in t[0]["text"] and "2.00x" in t[0]["text"]
    assert "not below scratch on 1 (a)" in t[1]["text"]
    assert "median 1.6000" in t[2]["text"]
    # target 3 also needs the 5-minute budget
    slow = {"a": ratios(quick_cpu_s=301.0)}
    assert [x["met"] for x in rep.evaluate_targets(slow)] == [True, True, False, True]
    # a device whose scratch_full learnt nothing is left out of targets 3 and 4, and named
    odd = {"a": ratios(scratch_test_esr=0.001), "b": ratios(scratch_test_esr=0.002, quick_vs_scratch_test=1.8),
           "c": ratios(scratch_test_esr=1.01, quick_vs_scratch_test=0.04, transfer_vs_scratch_test=0.02)}
    t = rep.evaluate_targets(odd)
    assert "median 1.5500" in t[2]["text"] and t[2]["text"].endswith("left out: c (scratch_full learnt nothing: "
                                                                     "test ESR >= 0.9)")
    assert "median 0.9000" in t[3]["text"] and "left out: c" in t[3]["text"]
    assert [x["met"] for x in t] == [True, True, False, True]
    table = "\n".join(rep.ratio_table(odd))
    assert "| c (scratch learnt nothing) |" in table and "| **median** | 0.800 | 4.00x | 0.500 | 1.550 |" in table
    # a device without the runs makes a target incomplete, never met
    partial = {"a": ratios(), "b": ratios(transfer_start_vs_scratch=None)}
    t = rep.evaluate_targets(partial)
    assert not t[1]["met"] and t[1]["text"].startswith("incomplete: 1 of 2")


def test_replace_report_keeps_what_is_outside_the_markers():
    assert rep.replace_report(None, "body", "T") == f"# T\n\n{rep.REPORT_BEGIN}\nbody\n{rep.REPORT_END}\n"
    first = rep.replace_report("# Hand\n\ncalibration\n", "one", "T")
    assert first == f"# Hand\n\ncalibration\n\n{rep.REPORT_BEGIN}\none\n{rep.REPORT_END}\n"
    second = rep.replace_report(first + "\nafter\n", "two", "T")
    assert second == f"# Hand\n\ncalibration\n\n{rep.REPORT_BEGIN}\ntwo\n{rep.REPORT_END}\n\nafter\n"


# --------------------------------------------------------------------------- split arithmetic

def test_split_plan_closed_form():
    plan = rg.split_plan([("a", 10), ("b", 6), ("c", 8)], rate=4, gap_seconds=0.5, val_seconds=2.5,
                         test_seconds=1.5, limited_seconds=2.0, segment_seconds=1.0)
    # a [0, 10), gap 2, b [12, 18), gap 2, c [20, 28): 28 samples; val 10, test 6, train 12
    assert plan["total"] == 28
    assert plan["bounds"] == {"train": (0, 12), "limited": (0, 8), "val": (12, 22), "test": (22, 28)}
    assert plan["segments"] == {"full": 3, "limited": 2}
    assert plan["clips"] == {"train": [("a", 10)], "limited": [("a", 8)], "val": [("b", 6), ("c", 2)],
                             "test": [("c", 6)]}
    with pytest.raises(ValueError):
        rg.split_plan([("a", 10)], rate=4, val_seconds=2.0, test_seconds=1.0)


def test_split_plan_agrees_with_prepare(tmp_path):
    rate = 8000
    plan = rg.split_plan([("a", 13000), ("b", 9000), ("c", 17001)], rate=rate, gap_seconds=0.25, val_seconds=1.1,
                         test_seconds=0.7, limited_seconds=0.9)
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal(plan["total"])).astype(np.float32)
    write_audio(tmp_path / "in.wav", x, rate)
    write_audio(tmp_path / "out.wav", np.tanh(3 * x).astype(np.float32), rate)
    m = prepare([CaptureSpec((str(tmp_path / "in.wav"),), (str(tmp_path / "out.wav"),))], tmp_path / "data",
                PrepareConfig(rate=rate, align="0", val_seconds=1.1, test_seconds=0.7, limited_seconds=0.9))
    for split in ("train", "val", "test"):
        a, b = plan["bounds"][split]
        assert m["splits"][split]["files"][0]["samples"] == b - a
    a, b = plan["bounds"]["limited"]
    assert m["subsets"]["limited"]["train_seconds"] == round((b - a) / rate, 6)


# --------------------------------------------------------------------------- leave-one-out

def snapshot(seed):
    return new_model(ModelConfig(hidden_size=4), seed=seed).weights()


def test_leave_one_out_removes_the_device_and_its_copies(tmp_path):
    a, b = snapshot(1), snapshot(2)
    cond = new_model(ModelConfig(input_size=2, hidden_size=4), seed=3).weights()
    save_model(a, tmp_path / "a.json")
    (tmp_path / "other").mkdir()
    # the same network with the LSTM bias split differently between bias_ih and bias_hh: a copy
    params = dict(a.params)
    params["rec.bias_ih_l0"] = a.params["rec.bias_ih_l0"] + a.params["rec.bias_hh_l0"]
    params["rec.bias_hh_l0"] = np.zeros_like(a.params["rec.bias_hh_l0"])
    save_model(ModelWeights(a.config, params), tmp_path / "other" / "a_copy.json")
    save_model(b, tmp_path / "b.json")
    save_model(cond, tmp_path / "cond.json")
    save_model(fold_knobs(cond, [0.25]), tmp_path / "cond_at_025.json")
    save_model(fold_knobs(cond, [0.75]), tmp_path / "cond_at_075.json")
    library = sorted(tmp_path.rglob("*.json"))
    kept, out = rg.leave_one_out(tmp_path / "a.json", (), library)
    assert [p.name for p in out] == ["a.json", "a_copy.json"]
    assert [p.name for p in kept] == ["b.json", "cond.json", "cond_at_025.json", "cond_at_075.json"]
    kept, out = rg.leave_one_out(tmp_path / "cond.json", (0.25,), library)
    assert [p.name for p in out] == ["cond.json", "cond_at_025.json"]  # the other knob value is another capture
    assert [p.name for p in kept] == ["a.json", "b.json", "cond_at_075.json", "a_copy.json"]


def test_leave_one_out_on_the_real_library_drops_both_ts9_fulld_files():
    real = realdata_or_skip()
    library = rg.library_files(real)
    kept, out = rg.leave_one_out(real / "models" / "neuralpi" / "TS9_FullD.json", (), library)
    assert [rg.model_label(p) for p in out] == ["neuralpi/TS9_FullD.json", "tonelibrary_h20/TS9_FullD.json"]
    assert len(kept) == len(library) - 2 and (real / "models" / "neuralpi" / "TS9.json") in kept
    for d in rg.DEVICES:  # every device file is present, and never its own start
        kept, out = rg.leave_one_out(real / "models" / d.model, d.knobs, library)
        assert real / "models" / d.model in out and real / "models" / d.model not in kept


# --------------------------------------------------------------------------- recipes and run folders

def test_recipe_overrides_and_rank_tag():
    recipe = {"train": {"lr": 1e-3, "patience": 10}, "transfer": {"lr": 5e-4}, "quick": {"patience": 40}}
    assert rg.recipe_overrides(recipe, "scratch_full") == {"lr": 1e-3, "patience": 10}
    assert rg.recipe_overrides(recipe, "transfer_full") == {"lr": 5e-4, "patience": 10}
    assert rg.recipe_overrides(recipe, "quick") == {"lr": 5e-4, "patience": 40}
    assert rg.rank_tag({}) == "default"
    assert rg.rank_tag({"finetune_top": 3, "probe_seconds": 4}) == rg.rank_tag({"probe_seconds": 4, "finetune_top": 3})
    assert rg.rank_tag({"finetune_top": 3}) != rg.rank_tag({"finetune_top": 4})
    rg.check_recipes(list(rg.RECIPES))
    with pytest.raises(SystemExit, match="unknown"):
        rg.check_recipes(["no_such_recipe"])


def test_a_shared_scratch_run_needs_the_same_settings(monkeypatch):
    recipes = {"base": {"preset": None, "train": {"lr": 1e-3}},
               "refit": {"preset": None, "train": {"lr": 1e-3}, "start": "refit_head", "scratch_of": "base"},
               "other_lr": {"preset": None, "train": {"lr": 5e-4}, "scratch_of": "base"},
               "agam_like": {"preset": "agam", "train": {}, "scratch_of": "reference"},
               "chained": {"preset": None, "train": {"lr": 1e-3}, "scratch_of": "refit"}}
    monkeypatch.setattr(rg, "RECIPES", recipes)
    rg.check_recipes(["base", "refit", "agam_like"])
    with pytest.raises(SystemExit, match="differ"):
        rg.check_recipes(["other_lr"])
    with pytest.raises(SystemExit, match="runs its own scratch_full"):
        rg.check_recipes(["chained"])


def task_for(folder, data, **overrides):
    config = make_config(data, None, subset="full", device="cpu", threads=1, **overrides)
    return rg.Task("train", "dev", "scratch_full", "default", 0, folder, {"config": config.to_dict(), "ranking": None})


def test_task_state_done_resume_and_conflict(tmp_path, small_data):
    folder = tmp_path / "run"
    task = task_for(folder, small_data, max_epochs=3)
    assert rg.task_state(task)[0] == "new"
    rg.write_task(task, "cmd")
    res = {"summary": {"stop_reason": "max_epochs", "epochs": 3, "test_esr": 0.5}, "max_epochs": 3, "curve": []}
    (folder / "result.json").write_text(json.dumps(res))
    assert rg.task_state(task)[0] == "done"
    assert rg.task_state(task_for(folder, small_data, max_epochs=5)) == ("resume", "extend from 3 to 5 epochs")
    res["summary"]["stop_reason"] = "early_stop"
    (folder / "result.json").write_text(json.dumps(res))
    assert rg.task_state(task_for(folder, small_data, max_epochs=5))[0] == "done"  # it stopped by itself
    state, words = rg.task_state(task_for(folder, small_data, max_epochs=3, lr=1e-3))
    assert state == "conflict" and "lr" in words and str(folder) in words


# --------------------------------------------------------------------------- the worker's clock

def test_worker_records_cpu_and_validation_esr_and_resumes_the_clock(tmp_path, small_data):
    folder = tmp_path / "run"
    rg.write_task(task_for(folder, small_data, max_epochs=2), "cmd one")
    assert rg.work(folder) == 0
    first = json.loads((folder / "result.json").read_text())
    c = first["curve"]
    assert [r["epoch"] for r in c] == [0, 1, 2] and c[0]["cpu_s"] == 0.0
    assert 0 < c[1]["cpu_s"] < c[2]["cpu_s"] <= first["process_cpu_s"]
    assert first["cpu_exact"] and first["summary"]["epochs"] == 2
    best = first["summary"]["best_epoch"]
    # the curve's ESR is plain validation ESR: the kept model scores it again exactly
    model = AmpLSTM.from_weights(load_model(folder / "train" / "model_best.json"))
    from ampxfer_lib.data.dataset import load_dataset
    assert c[best]["val_esr"] == pytest.approx(evaluate(model, load_dataset(small_data), "val")["val_esr"], rel=1e-6)
    # extended: the clock continues from the recorded epochs, which stay as they were
    rg.write_task(task_for(folder, small_data, max_epochs=3), "cmd two")
    assert rg.work(folder) == 0
    second = json.loads((folder / "result.json").read_text())
    assert second["curve"][:3] == c
    assert second["curve"][3]["epoch"] == 3 and second["curve"][3]["cpu_s"] > c[2]["cpu_s"]
    assert second["command"] == "cmd two" and second["max_epochs"] == 3


def test_command_line_refuses_unknown_names():
    with pytest.raises(SystemExit, match="--devices nope: unknown"):
        rg.select_devices("mt2,nope")
    with pytest.raises(SystemExit, match="unknown"):
        rg.select_runs("scratch_full,fast_full")
    assert [d.name for d in rg.select_devices("rat,mt2")] == ["rat", "mt2"]


def test_report_from_hand_made_run_folders(tmp_path):
    out = tmp_path / "out"

    def put(folder, res, run, recipe, ranking=None):
        folder.mkdir(parents=True)
        res.update({"run": run, "recipe": recipe, "seed": 0, "command": "python bench/real_gear.py --devices mt2",
                    "ranking": None if ranking is None else str(ranking)})
        (folder / "result.json").write_text(json.dumps(res))

    ranking = out / "rank" / "mt2" / "default" / "ranking.json"
    ranking.parent.mkdir(parents=True)
    ranking.write_text(json.dumps({"cpu_s": 15.0, "library": ["a", "b"], "left_out": ["/x/tonelibrary_h20/m.json"],
                                   "best": {"model": "/x/tonelibrary_h20/start.json", "knobs": [], "score": 0.25,
                                            "scored_by": "finetune_probe"}}))
    put(out / "reference" / "mt2" / "agam_full_s0",
        result([(0, 0.0, 1.0), (2, 100.0, 0.08), (4, 300.0, 0.05), (6, 400.0, 0.06)], 4, 0.06, "max_epochs"),
        "agam_full", None)
    runs = out / "recipes" / "default" / "mt2"
    put(runs / "scratch_full_s0", result([(0, 0.0, 1.0), (1, 25.0, 0.2), (2, 50.0, 0.05), (3, 75.0, 0.04)], 3, 0.048),
        "scratch_full", "default")
    put(runs / "quick_s0", result([(0, 0.0, 0.5), (1, 10.0, 0.08), (2, 20.0, 0.07)], 2, 0.072), "quick", "default",
        ranking)
    put(runs / "transfer_full_s0", result([(0, 0.0, 0.5), (1, 25.0, 0.045), (2, 50.0, 0.03)], 2, 0.036),
        "transfer_full", "default", ranking)
    results = tmp_path / "R.md"
    results.write_text("# Mine\n\nhand-written calibration\n")
    assert rg.main(["--out", str(out), "--report", "--results", str(results)]) == 0
    text = results.read_text()
    assert text.startswith("# Mine\n\nhand-written calibration\n\n" + rep.REPORT_BEGIN)
    assert "| mt2 | 0.800 | 6.00x | 0.500 | 1.500 | 35 | 0.750 | 1.50x | 0.667 |" in text
    assert ("| mt2 | tonelibrary_h20/start.json | – | 0.2500 (finetune_probe) | 15.0 | 2 | "
            "tonelibrary_h20/m.json |") in text
    assert "- **1** met" in text and "- **2** met" in text and "- **3** met" in text and "- **4** met" in text
    assert "agam_full reached its epoch cap on: mt2." in text and "Provisional" not in text
    assert "| reference | mt2 | agam_full | 0 | 0.0600 | 6 (**cap**) | 4 | 400 | 300 |" in text
    assert "    python bench/real_gear.py --devices mt2" in text


def test_scratch_limited_and_library_runs_get_their_own_folders_and_data(tmp_path, small_data):
    assert rg.select_runs(None) == list(rep.RUNS)  # scratch_limited only when asked for
    assert rg.select_runs("scratch_limited,quick") == ["scratch_limited", "quick"]
    assert rg.run_folder_name("quick", 0) == "quick_s0"
    assert rg.run_folder_name("quick", 1, "shipped") == "quick@shipped_s1"
    assert rg.run_folder_name("transfer_full", 0, "lib") == "transfer_full@lib_s0"
    assert rg.run_folder_name("scratch_limited", 0, "shipped") == "scratch_limited_s0"  # no start: no label
    from ampxfer_lib.library.index import SHIPPED_MODELS
    assert rg.library_label(SHIPPED_MODELS) == "shipped" and rg.library_label(tmp_path) == tmp_path.name

    class Args:
        max_epochs, agam_max_epochs, library_label = None, 500, "shipped"

    device = rg.DEVICES[0]
    t = rg.train_task(tmp_path, device, small_data, "scratch_limited", "default", 0, Args())
    assert t.payload["config"]["subset"] == "limited" and t.payload["config"]["init_from"] is None
    assert t.folder == tmp_path / "recipes" / "default" / device.name / "scratch_limited_s0" and "library" not in t.payload
    q = rg.train_task(tmp_path, device, small_data, "quick", "default", 0, Args(), init_from=tmp_path / "s.json")
    assert q.payload["config"]["subset"] == "limited" and q.payload["library"] == "shipped"
    assert q.folder.name == "quick@shipped_s0"
    with pytest.raises(SystemExit):  # one line naming the flag
        rg.main(["--library", str(tmp_path / "nope"), "--starts-table"])


def test_starts_table_from_hand_made_run_folders(tmp_path, capsys):
    out = tmp_path / "out"
    runs = out / "recipes" / "default" / "mt2"
    ranking = out / "rank" / "mt2" / "default@shipped" / "ranking.json"
    ranking.parent.mkdir(parents=True)
    ranking.write_text(json.dumps({"cpu_s": 5.0, "wall_s": 8.0, "library": ["a"], "left_out": [],
                                   "best": {"model": "/x/starting_models/distortion.json", "knobs": [], "score": 0.3,
                                            "scored_by": "finetune_probe"}}))
    for name, res, run, library in (
            ("scratch_limited_s0", result([(0, 0.0, 1.0), (1, 100.0, 0.02)], 1, 0.02), "scratch_limited", None),
            ("quick@shipped_s0", result([(0, 0.0, 0.4), (1, 50.0, 0.01)], 1, 0.005), "quick", "shipped"),
            ("quick_s0", result([(0, 0.0, 0.4), (1, 40.0, 0.01)], 1, 0.004), "quick", None)):
        (runs / name).mkdir(parents=True)
        res.update({"run": run, "recipe": "default", "seed": 0, "library": library,
                    "ranking": str(ranking) if run == "quick" else None})
        (runs / name / "result.json").write_text(json.dumps(res))
    found = rg.collect(out, None, rg.select_devices("mt2"))
    assert set(found["recipes"]["default"]) == {("mt2", "scratch_limited", 0), ("mt2", "quick[shipped]", 0),
                                                ("mt2", "quick", 0)}
    assert rg.main(["--out", str(out), "--devices", "mt2", "--starts-table"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # quick's seconds include its ranking's (5 s CPU, 8 s wall); ratio 0.005 / 0.02
    assert lines[-1] == "| mt2 | 0 | 0.0200 | 100 | 10 | 0.0050 | 55 | 18 | distortion | 0.250 |"


def test_limited_data_kinds_keep_the_test_audio_and_cut_their_training_audio(tmp_path, monkeypatch):
    rate = 8000
    monkeypatch.setattr(rg, "RATE", rate)
    monkeypatch.setattr(rg, "VAL_SECONDS", 1.0)
    monkeypatch.setattr(rg, "TEST_SECONDS", 0.5)
    monkeypatch.setattr(rg, "LIMITED_SECONDS", 3.0)
    total = int(6.5 * rate)
    x = (0.3 * np.random.default_rng(1).standard_normal(total)).astype(np.float32)
    write_audio(tmp_path / "in.wav", x, rate)
    write_audio(tmp_path / "out.wav", np.tanh(3 * x).astype(np.float32), rate)
    full = tmp_path / "out_dir" / "data" / "dev"
    cfg = PrepareConfig(rate=rate, align="0", val_seconds=1.0, test_seconds=0.5, limited_seconds=3.0)
    prepare([CaptureSpec((str(tmp_path / "in.wav"),), (str(tmp_path / "out.wav"),))], full, cfg)
    monkeypatch.setattr(rg, "device_data", lambda real, out, device, log=print: full)
    device = rg.Device("dev", "x.json", (), "test", "test")
    from ampxfer_lib.data.dataset import Dataset
    # 5 s of training audio = 10 segments of 0.5 s; six pieces of one segment each start at
    # segments 0, 1.8, 3.6, 5.4, 7.2 and 9, rounded
    monkeypatch.setattr(rg, "SPREAD_PIECE_SECONDS", 0.5)
    folder = rg.device_data_limited(tmp_path, tmp_path / "out_dir", device, "spread")
    ds = Dataset(folder)
    (train,) = ds.split("train")
    spans = [(a * 4000, (a + 1) * 4000) for a in (0, 2, 4, 5, 7, 9)]
    assert train.samples == 3 * rate
    assert np.array_equal(train.input[:, 0], np.concatenate([x[a:b] for a, b in spans]))
    assert np.array_equal(train.target, np.concatenate([np.tanh(3 * x)[a:b] for a, b in spans]).astype(np.float32))
    assert np.array_equal(ds.split("val")[0].input[:, 0], x[5 * rate:6 * rate])
    assert np.array_equal(ds.split("test")[0].target, np.tanh(3 * x[6 * rate:]).astype(np.float32))
    # selfval: a 3 s "recording" split as ampxfer capture splits it (20% validation, 10% test,
    # the latter unused here): 2.1 s training, the next 0.6 s validation, the full data's test
    own = Dataset(rg.device_data_limited(tmp_path, tmp_path / "out_dir", device, "selfval"))
    assert np.array_equal(own.split("train")[0].input[:, 0], x[:int(2.1 * rate)])
    assert np.array_equal(own.split("val")[0].target, np.tanh(3 * x[int(2.1 * rate):int(2.7 * rate)]).astype(np.float32))
    assert np.array_equal(own.split("test")[0].input[:, 0], x[6 * rate:])
    # spread_selfval: the six spread pieces back to back (3 s), cut at 2.7 s like one recording:
    # training the first 2.1 s (pieces 1-4 and 0.1 s of the fifth), validation the next 0.6 s
    both = Dataset(rg.device_data_limited(tmp_path, tmp_path / "out_dir", device, "spread_selfval"))
    played = np.concatenate([x[a:b] for a, b in spans])
    assert np.array_equal(both.split("train")[0].input[:, 0], played[:int(2.1 * rate)])
    assert np.array_equal(both.split("val")[0].input[:, 0], played[int(2.1 * rate):int(2.7 * rate)])
    assert np.array_equal(both.split("test")[0].input[:, 0], x[6 * rate:])
    with pytest.raises(ValueError):
        rg.device_data_limited(tmp_path, tmp_path / "out_dir", device, "tail")


def test_figures_draw_agam_and_the_named_recipes_each_run_once(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(rep, "device_figure", lambda title, curves, path: drawn.setdefault(title, curves) and path)
    curve = [{"epoch": 0, "cpu_s": 0.0, "val_esr": 1.0}]

    def run(recipe, name):
        return {"recipe": recipe, "run": name, "seed": 0, "curve": curve}

    shared_scratch = dict(run("default", "scratch_full"))
    found = {"reference": {("mt2", 0): {"seed": 0, "curve": curve}},
             "recipes": {"default": {("mt2", "scratch_full", 0): run("default", "scratch_full"),
                                     ("mt2", "transfer_full", 0): run("default", "transfer_full")},
                         "default_wd0": {("mt2", "scratch_full", 0): shared_scratch,
                                         ("mt2", "quick", 0): run("default_wd0", "quick")},
                         "default_nowd": {("mt2", "scratch_full", 0): run("default_nowd", "scratch_full")}}}
    rg.make_figures(found, rg.select_devices("mt2"), tmp_path)
    assert [(r, n) for r, n, _ in drawn["mt2 (seed 0)"]] == [
        ("reference", "agam_full"), ("default", "scratch_full"), ("default", "transfer_full"), ("default_wd0", "quick")]
    drawn.clear()
    rg.make_figures(found, rg.select_devices("mt2"), tmp_path, ["default_nowd"])
    assert [(r, n) for r, n, _ in drawn["mt2 (seed 0)"]] == [("reference", "agam_full"), ("default_nowd", "scratch_full")]


def test_a_figure_recipe_that_is_not_reported_is_refused(tmp_path, capsys):
    run = tmp_path / "out" / "recipes" / "default" / "mt2" / "scratch_full_s0"
    run.mkdir(parents=True)
    res = result([(0, 0.0, 1.0), (1, 25.0, 0.2)], 1, 0.2)
    res.update({"run": "scratch_full", "recipe": "default", "seed": 0, "command": "c", "ranking": None})
    (run / "result.json").write_text(json.dumps(res))
    argv = ["--out", str(tmp_path / "out"), "--figures", "--figures-dir", str(tmp_path / "fig")]
    assert rg.main(argv + ["--figure-recipe", "default_nowd"]) == 2
    assert "--figure-recipe default_nowd: not among the reported recipes" in capsys.readouterr().err
    assert not (tmp_path / "fig").exists()


def test_a_run_older_than_a_config_field_has_that_field_at_its_default():
    from ampxfer_lib.training.config import TrainConfig

    new = TrainConfig(lr=1e-2, shrink_start=1.0).to_dict()
    old = {k: v for k, v in new.items() if k not in ("shrink_start", "tbptt_grow")}
    assert rg.config_identity(old) == rg.config_identity(new)
    assert rg.config_identity(old) != rg.config_identity(dict(new, shrink_start=0.5))
    assert rg.config_identity(dict(new, max_epochs=7)) == rg.config_identity(new)  # resumable fields drop out
