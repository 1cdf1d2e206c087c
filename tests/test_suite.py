"""The notebook suite's library side: data preparation, budgets, own recordings, live plot."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ampxfer_lib.notebooks import suite
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.training.config import TrainConfig

from conftest import file_hashes, write_pair


def test_markdown_table():
    rows = [{"a": 1, "b": 0.123456}, {"a": "x", "b": None}]
    assert suite.markdown_table(rows) == "| a | b |\n|---|---|\n| 1 | 0.1235 |\n| x | None |"
    assert suite.markdown_table([]) == "(nothing)"


def test_trim_recording_keeps_the_first_seconds(tmp_path):
    rate = 8000
    x = np.linspace(-0.5, 0.5, 3 * rate)
    sf.write(tmp_path / "in.wav", x, rate, subtype="FLOAT")
    before = file_hashes(tmp_path / "in.wav")
    out = suite.trim_recording(tmp_path / "in.wav", tmp_path / "cut" / "in_1s.flac", 1.0)
    y, r = sf.read(out)
    assert r == rate and len(y) == rate
    np.testing.assert_allclose(y, x[:rate], atol=2 ** -23)
    mtime = out.stat().st_mtime_ns
    suite.trim_recording(tmp_path / "in.wav", out, 1.0)  # same content: not rewritten
    assert out.stat().st_mtime_ns == mtime
    assert file_hashes(tmp_path / "in.wav") == before


def test_prepare_devices_and_findings(tmp_path):
    xin, tgt = write_pair(tmp_path / "rec", seconds=8.0, delay=25)
    before = file_hashes(xin, tgt)
    config = suite.prepare_config(True)
    assert (config.val_seconds, config.test_seconds, config.limited_seconds) == (2.0, 2.0, 4.0)
    manifests = suite.prepare_devices({"dev": (str(xin), str(tgt))}, tmp_path / "work", config,
                                      seconds=6.0, log=lambda m: None)
    assert manifests["dev"]["captures"][0]["seconds"] == pytest.approx(6.0, abs=0.01)
    rows = suite.findings_rows({"dev": tmp_path / "work" / "data" / "dev"}, {"dev": 25})
    assert rows[0]["device"] == "dev" and rows[0]["true latency (samples)"] == 25.0
    assert abs(rows[0]["latency (samples)"] - 25) <= 2
    assert rows[0]["model rate (Hz)"] == 44100 and rows[0]["warnings"] == "none"
    assert file_hashes(xin, tgt) == before


def test_sample_pairs_and_study_file(tmp_path):
    pairs = suite.sample_pairs()
    assert [(p["name"], p["source"]["data"], p["target"]["data"]) for p in pairs] == [
        ("pedal", "data/ts9", "data/mt2"), ("amp", "data/bluesjr", "data/ht40")]
    path = suite.write_study_file(tmp_path, pairs)
    assert json.loads(path.read_text())["pairs"] == pairs


def test_budgets(tmp_path):
    with pytest.raises(ConfigError, match="run notebook 01"):
        suite.suite_study(tmp_path, "demo")
    suite.write_study_file(tmp_path, suite.sample_pairs())
    demo = suite.suite_study(tmp_path, "demo")
    assert demo.preset == "agam"  # the article's recipe, capped
    assert demo.max_epochs == {"full": 60, "limited": 100} and demo.source_max_epochs == 60
    assert demo.pairs[0].target == str(tmp_path / "data" / "mt2")
    article = suite.suite_study(tmp_path, "article")
    assert (article.preset, article.max_epochs, article.source_max_epochs, article.patience) == ("agam", None, None, None)
    capped = suite.suite_study(tmp_path, "demo", epochs_full=5)
    assert capped.max_epochs == {"full": 5, "limited": 100} and capped.source_max_epochs == 5
    capped = suite.suite_study(tmp_path, "article", epochs_limited=7)
    assert capped.max_epochs == {"full": TrainConfig.max_epochs, "limited": 7} and capped.source_max_epochs is None
    with pytest.raises(ConfigError, match="BUDGET"):
        suite.suite_study(tmp_path, "quick")


def test_find_recordings_from_local_paths(tmp_path):
    xin, tgt = write_pair(tmp_path / "rec", seconds=2.0)
    src = tmp_path / "rec" / "dev_out.wav"
    roles = suite.find_recordings(str(xin), str(src), str(tgt), "local paths", tmp_path)
    assert roles == {"di": str(xin), "source": str(src), "target": str(tgt)}
    assert suite.find_recordings(str(xin), "", str(tgt), "local paths", tmp_path)["source"] == ""
    with pytest.raises(ConfigError, match="MY_DI and MY_TARGET"):
        suite.find_recordings(str(xin), "", "", "local paths", tmp_path)
    with pytest.raises(ConfigError, match=r"missing.wav: no such file \(MY_TARGET\)"):
        suite.find_recordings(str(xin), "", str(tmp_path / "missing.wav"), "local paths", tmp_path)
    with pytest.raises(ConfigError, match="Colab only"):
        suite.find_recordings(str(xin), "", str(tgt), "upload (Colab)", tmp_path)
    with pytest.raises(ConfigError, match="GET_FILES"):
        suite.find_recordings(str(xin), "", str(tgt), "ftp", tmp_path)


def test_live_study_plot_draws_a_panel_per_target_and_data_size(tmp_path):
    from ampxfer_lib.study.config import StudyConfig
    from ampxfer_lib.study.plan import plan_study

    cfg = StudyConfig.from_dict({"pairs": [{"name": "p", "source": {"data": str(tmp_path / "a")},
                                            "target": {"data": str(tmp_path / "b")}}]})
    specs = plan_study(cfg, tmp_path / "study")
    run = Path(specs[1].run_dir)  # scratch/b/full
    run.mkdir(parents=True)
    (run / "history.json").write_text(json.dumps([{"epoch": 0, "train_loss": None, "val_loss": 0.7, "elapsed_s": 0},
                                                  {"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "elapsed_s": 1}]))
    plot = suite.LiveStudyPlot([s for s in specs if s.role != "transfer"])
    assert not plot.display
    panels = plot.panels()
    assert sorted(panels) == [("b", "full"), ("b", "limited"), ("sources", "full")]
    assert len(panels[("b", "full")]["scratch"]) == 2
    plot.update([specs[1]])
    axes = plot.figure.axes
    assert len(axes) == 3
    titles = [ax.get_title() for ax in axes]
    assert "b, full data (training)" in titles and "b, limited data" in titles
    line = [ax for ax in axes if ax.get_title().startswith("b, full")][0].get_lines()[0]
    assert list(line.get_ydata()) == [0.7, 0.4]


def test_run_units_trains_the_chosen_roles_only(small_data, small_data_b, tmp_path):
    suite.write_study_file(tmp_path, [{"name": "ab", "source": {"data": str(small_data)},
                                       "target": {"data": str(small_data_b)}}])
    cfg = suite.suite_study(tmp_path, "demo", epochs_full=1, epochs_limited=1, train={"hidden_size": 4})
    with pytest.raises(ConfigError, match="starts from source/ab, which is not trained yet"):
        suite.run_units(cfg, tmp_path, ("transfer",), workers=1, live=False, log=lambda m: None)
    out = suite.run_units(cfg, tmp_path, ("source", "scratch"), workers=0, live=False, log=lambda m: None)
    assert sorted(k for k, v in out.summaries.items() if v) == ["scratch/data/full/seed0", "scratch/data/limited/seed0",
                                                               "source/ab"]
    assert not (tmp_path / "study" / "runs" / "transfer").exists()
    lines = []
    out = suite.run_units(cfg, tmp_path, ("transfer",), workers=0, live=False, log=lines.append)
    assert "2 runs (transfer), 0 already complete, 2 to train" in lines[0]
    assert (tmp_path / "study" / "runs" / "transfer" / "ab" / "limited" / "seed0" / "model_best.json").exists()
    assert "| ab | limited |" in out.table1.read_text()
