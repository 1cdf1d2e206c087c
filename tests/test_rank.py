"""Ranking a model library: closed-form scores, the rendering model ranks first, knobs, probe, CLI."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from ampxfer_lib.cli.main import main
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.model.formats import load_model, save_model
from ampxfer_lib.model.network import new_model
from ampxfer_lib.model.weights import ModelConfig, ModelWeights, fold_knobs
from ampxfer_lib.transfer.rank import (RankConfig, candidates, esr_scores, export_starting_model, probe_audio, rank_library,
                              starting_model)
from ampxfer_lib.model.render import render_sequential

from conftest import SMALL_SPLITS, file_hashes, plucked_notes, realdata_or_skip

FAST = RankConfig(probe_seconds=1.0, probe_chunks=4, finetune_top=0)


def loud(weights: ModelWeights, gain: float) -> ModelWeights:
    """A model whose LSTM path is ``gain`` times louder: random models differ clearly."""
    params = dict(weights.params)
    params["lin.weight"] = params["lin.weight"] * gain
    return ModelWeights(weights.config, params)


def render_target(tmp_path, weights, knobs=(), name="t", seconds=7.0):
    """Prepared data: plucked notes rendered through ``weights`` (no latency, float WAV)."""
    x = plucked_notes(seconds, seed=7).astype(np.float32)
    y = render_sequential(weights, x, knobs)
    rec = tmp_path / "rec"
    rec.mkdir(exist_ok=True)
    sf.write(rec / f"{name}_di.wav", x, 44100, subtype="FLOAT")
    sf.write(rec / f"{name}_out.wav", y, 44100, subtype="FLOAT")
    assert main(["prepare", "--input", str(rec / f"{name}_di.wav"), "--target", str(rec / f"{name}_out.wav"),
                 "--out", str(tmp_path / name), "--align", "0"] + SMALL_SPLITS) == 0
    return tmp_path / name


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("lib")
    lib = root / "library"
    (lib / "amps").mkdir(parents=True)
    for i in range(4):
        save_model(loud(new_model(ModelConfig(hidden_size=8), seed=i).weights(), 4.0), lib / f"snap{i}.json")
    cond = loud(new_model(ModelConfig(input_size=2, hidden_size=8), seed=10).weights(), 4.0)
    params = dict(cond.params)
    params["rec.weight_ih_l0"] = params["rec.weight_ih_l0"] * np.array([1.0, 6.0], dtype=np.float32)  # a strong knob
    cond = ModelWeights(cond.config, params)
    save_model(cond, lib / "amps" / "cond.json")
    (lib / "broken.json").write_text("{not json")
    return root, lib


def test_esr_scores_closed_form():
    y = np.sin(np.linspace(0, 20, 1000))
    s = esr_scores(2 * y, y)
    assert s["esr"] == pytest.approx(1.0) and s["esr_level_matched"] == pytest.approx(0.0, abs=1e-12)
    assert s["gain"] == pytest.approx(0.5)
    orth = esr_scores(np.cos(np.linspace(0, 20 * np.pi, 1000)), np.sin(np.linspace(0, 20 * np.pi, 1000)))
    assert orth["esr_level_matched"] == pytest.approx(1.0, abs=1e-6)
    assert esr_scores(y, np.zeros_like(y))["esr"] == float("inf")


def test_the_rendering_model_ranks_first(library):
    root, lib = library
    data = render_target(root, load_model(lib / "snap2.json"), name="via_snap2")
    hashes = file_hashes(*sorted(lib.rglob("*.json")))
    ranked = rank_library(lib, data, FAST, progress=False)
    assert file_hashes(*sorted(lib.rglob("*.json"))) == hashes  # the library is only read
    scored = [e for e in ranked if e["score"] is not None]
    assert Path(scored[0]["model"]).name == "snap2.json" and scored[0]["rank"] == 1
    assert scored[0]["esr"] < 1e-4 and scored[0]["gain"] == pytest.approx(1.0, abs=1e-3)
    assert all(e["score"] > 100 * scored[0]["score"] + 1e-3 for e in scored[1:])
    assert [e["score"] for e in scored] == sorted(e["score"] for e in scored)
    assert [e["rank"] for e in scored] == list(range(1, len(scored) + 1))
    assert len(scored) == 5 and all(e["scored_by"] == "esr_level_matched" for e in scored)
    skipped = [e for e in ranked if e["score"] is None]
    assert [Path(e["model"]).name for e in skipped] == ["broken.json"] and skipped[0]["skipped"]
    for score in ("esr", "esr_head_refit"):
        other = rank_library(lib, data, RankConfig(probe_seconds=1.0, probe_chunks=4, score=score, finetune_top=0), progress=False)
        assert Path(other[0]["model"]).name == "snap2.json" and other[0]["scored_by"] == score
        assert other[0]["score"] < 1e-4
    with pytest.raises(ConfigError, match="unknown score"):
        RankConfig(score="vibes")


def test_head_refit_recovers_a_dense_layer(library, tmp_path):
    """Same LSTM, another dense layer (inverted, scaled): refitting the head finds the target's."""
    root, lib = library
    true = load_model(lib / "snap0.json")
    params = dict(true.params)
    params["lin.weight"] = -0.3 * params["lin.weight"] + 0.05
    params["lin.bias"] = params["lin.bias"] + 0.1
    save_model(ModelWeights(true.config, params), tmp_path / "other_head.json")
    data = render_target(root, true, name="via_snap0_refit")
    entry, = rank_library([tmp_path / "other_head.json"], data, RankConfig(probe_seconds=1.0, probe_chunks=4,
                                                                           score="esr_head_refit", finetune_top=0), progress=False)
    assert entry["esr"] > 0.05 and entry["esr_head_refit"] < 1e-5
    refit = starting_model(entry, refit_head=True)
    assert np.array_equal(refit.params["rec.weight_hh_l0"], true.params["rec.weight_hh_l0"])
    # the features may be collinear, so the weights need not be the same; what they play must be
    from ampxfer_lib.data.dataset import load_dataset
    from ampxfer_lib.training.losses import esr_numpy

    test = load_dataset(data).split("test")[0]
    assert esr_numpy(render_sequential(refit, test.input[:, 0]), test.target) < 1e-4
    assert esr_numpy(render_sequential(load_model(tmp_path / "other_head.json"), test.input[:, 0]), test.target) > 0.05


def test_a_conditioned_model_is_tried_at_its_knob_values(library, tmp_path):
    root, lib = library
    cond = load_model(lib / "amps" / "cond.json")
    data = render_target(root, cond, knobs=[0.75], name="via_cond")
    ranked = rank_library(lib, data, FAST, progress=False)
    assert Path(ranked[0]["model"]).name == "cond.json" and ranked[0]["knobs"] == [0.75]
    assert ranked[0]["esr"] < 1e-4 and ranked[0]["input_size"] == 2
    start = starting_model(ranked[0])
    assert start.config.input_size == 1 and start.equal(fold_knobs(cond, [0.75]))
    out = export_starting_model(ranked[0], tmp_path / "start.json")
    assert load_model(out).equal(ModelWeights(start.config, start.params))


def test_candidates_fit_the_data_shape():
    snap = new_model(ModelConfig(hidden_size=4), seed=0).weights()
    two = new_model(ModelConfig(input_size=3, hidden_size=4), seed=0).weights()
    plain = SimpleNamespace(num_knobs=0, input_size=1, sample_rate=44100)
    knobbed = SimpleNamespace(num_knobs=2, input_size=3, sample_rate=44100)
    assert [k for k, _ in candidates(snap, plain, (0, 1))] == [()]
    (k, w), = candidates(snap, knobbed, (0, 1))
    assert w.config.input_size == 3 and np.all(w.weight_ih[:, 1:] == 0)
    assert [k for k, _ in candidates(two, plain, (0.0, 1.0))] == [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]
    assert candidates(two, knobbed, (0, 1))[0][1] is two
    with pytest.raises(ConfigError, match="takes 2 knob"):
        candidates(two, SimpleNamespace(num_knobs=1, input_size=2, sample_rate=44100), (0, 1))
    with pytest.raises(ConfigError, match="48000 Hz"):
        candidates(snap, SimpleNamespace(num_knobs=0, input_size=1, sample_rate=48000), (0, 1))


def test_probe_audio_spreads_chunks(library):
    root, lib = library
    from ampxfer_lib.data.dataset import load_dataset

    ds = load_dataset(render_target(root, load_model(lib / "snap0.json"), name="via_snap0"))
    audio = probe_audio(ds, "train", seconds=2.0, chunks=4, warmup_seconds=0.1)
    assert audio.x.shape == (4, 4410 + 22050, 1) and audio.y.shape == (4, 4410 + 22050) and audio.warmup == 4410
    train = ds.split("train")[0]
    n = train.samples
    assert np.array_equal(audio.y[0], train.target[:4410 + 22050])
    assert np.array_equal(audio.y[-1], train.target[n - 4410 - 22050:])


def test_finetune_probe_reranks_the_best_few(library):
    root, lib = library
    data = render_target(root, load_model(lib / "snap1.json"), name="via_snap1")
    ranked = rank_library(lib, data, RankConfig(probe_seconds=1.0, probe_chunks=4, finetune_top=2,
                                                finetune_seconds=1.0, finetune_epochs=2, eval_seconds=1.0),
                          progress=False)
    probed = [e for e in ranked if e.get("scored_by") == "finetune_probe"]
    assert [e["rank"] for e in probed] == [1, 2]
    assert all(e["probe_updates"] == 2 * 22 for e in probed)  # 2 epochs x ceil((22050 - 200) / 1000)
    assert probed[0]["score"] <= probed[1]["score"] and probed[0]["score"] == probed[0]["probe_esr"]
    assert Path(probed[0]["model"]).name == "snap1.json" and probed[0]["probe_start_esr"] < 1e-4


def test_cli_rank_json_top_and_export(library, capsys, tmp_path):
    root, lib = library
    data = render_target(root, load_model(lib / "snap3.json"), name="via_snap3")
    capsys.readouterr()
    assert main(["rank", "--library", str(lib), "--data", str(data), "--json", "--top", "2",
                 "--probe-seconds", "1", "--finetune-top", "0"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert len(got) == 2 and Path(got[0]["model"]).name == "snap3.json" and got[0]["score"] <= got[1]["score"]
    assert main(["rank", "--library", str(lib), "--data", str(data), "--probe-seconds", "1",
                 "--export-best", str(tmp_path / "best.json")]) == 0
    out = capsys.readouterr().out
    assert "snap3.json" in out.splitlines()[1] and "skipped broken.json" in out
    assert out.count("probe ") == 5  # the default: a fine-tune probe of the best five
    assert load_model(tmp_path / "best.json").equal(
        ModelWeights(load_model(lib / "snap3.json").config, load_model(lib / "snap3.json").params))
    assert main(["rank", "--library", str(tmp_path / "nothing"), "--data", str(data)]) == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_library_model_ranks_first_for_its_own_rendering(tmp_path):
    real = realdata_or_skip()
    from ampxfer_lib.data.audio import read_audio, resample

    clip = read_audio(real / "di" / "Mayer.flac")
    x = resample(clip.samples, clip.sample_rate, 44100)[:44100 * 12].astype(np.float32)
    lib = real / "models" / "tonelibrary_h20"
    y = render_sequential(load_model(lib / "ProCoRat.json"), x)
    sf.write(tmp_path / "di.wav", x, 44100, subtype="FLOAT")
    sf.write(tmp_path / "rat.wav", y, 44100, subtype="FLOAT")
    assert main(["prepare", "--input", str(tmp_path / "di.wav"), "--target", str(tmp_path / "rat.wav"),
                 "--out", str(tmp_path / "data"), "--align", "0", "--val-seconds", "2", "--test-seconds", "1"]) == 0
    ranked = rank_library(lib, tmp_path / "data", RankConfig(probe_seconds=2.0, probe_chunks=4, finetune_top=0),
                          progress=False)
    assert len(ranked) == 29 and all(e["score"] is not None for e in ranked)
    assert Path(ranked[0]["model"]).name == "ProCoRat.json" and ranked[0]["esr"] < 1e-3
    assert ranked[1]["score"] > 10 * ranked[0]["score"]
