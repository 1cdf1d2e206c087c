import json

import numpy as np
import pytest
import torch

from ampxfer_lib.errors import ConfigError
from ampxfer_lib.model.network import new_model
from ampxfer_lib.model.weights import ModelConfig, expand_inputs, fold_knobs
from ampxfer_lib.model.render import render_sequential
from ampxfer_lib.training.config import make_config
from ampxfer_lib.training.loop import train
from ampxfer_lib.transfer.init_from import InitSource, adapt_to, resolve_init, shrink_towards

from conftest import plucked_notes


def test_snapshot_starts_a_conditioned_model_exactly():
    snap = new_model(ModelConfig(hidden_size=8), seed=0).weights()
    wide = expand_inputs(snap, 3)
    assert wide.config.input_size == 3 and np.all(wide.weight_ih[:, 1:] == 0)
    x = plucked_notes(0.2)
    ref = render_sequential(snap, x)
    for knobs in ([0.0, 0.0], [0.3, 1.0], [1.0, 0.5]):
        assert np.array_equal(render_sequential(wide, x, knobs), ref)


def test_folding_knobs_is_exact():
    cond = new_model(ModelConfig(input_size=2, hidden_size=8), seed=1).weights()
    x = plucked_notes(0.2)
    for k in (0.0, 0.25, 1.0):
        snap = fold_knobs(cond, [k])
        assert snap.config.input_size == 1
        assert np.allclose(render_sequential(snap, x), render_sequential(cond, x, [k]), atol=2e-6)


def test_architecture_mismatches_are_explained(tmp_path):
    src = InitSource("src.json", new_model(ModelConfig(hidden_size=8), seed=0).weights())
    with pytest.raises(ConfigError, match="hidden size 8 cannot start a hidden-20 model"):
        adapt_to(src, ModelConfig(hidden_size=20))
    with pytest.raises(ConfigError, match="--no-skip"):
        adapt_to(src, ModelConfig(hidden_size=8, skip=False))
    cond = InitSource("c.json", new_model(ModelConfig(input_size=3, hidden_size=8), seed=0).weights())
    with pytest.raises(ConfigError, match="takes 2 knob"):
        adapt_to(cond, ModelConfig(input_size=2, hidden_size=8))
    with pytest.raises(ConfigError, match="no such model file"):
        resolve_init(str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="needs a run folder"):
        resolve_init(str(tmp_path / "missing.json"), keep_optimizer=True)
    with pytest.raises(ConfigError, match="not a run folder"):
        resolve_init(str(tmp_path))


def test_transfer_starts_and_ends_below_scratch(small_data, small_data_b, tmp_path):
    train(make_config(small_data, hidden_size=8, max_epochs=12, seed=0), tmp_path / "source")
    budget = dict(hidden_size=8, max_epochs=4, seed=1)
    scratch = train(make_config(small_data_b, **budget), tmp_path / "scratch")
    transfer = train(make_config(small_data_b, init_from=str(tmp_path / "source"), **budget), tmp_path / "transfer")
    assert transfer["initial_val_loss"] < scratch["initial_val_loss"] / 3
    assert transfer["best_val_loss"] < scratch["best_val_loss"]
    assert transfer["init_from"] == str(tmp_path / "source")


def test_keep_optimizer_takes_the_source_state(small_data, tmp_path):
    train(make_config(small_data, hidden_size=4, max_epochs=1), tmp_path / "src")
    src = resolve_init(str(tmp_path / "src"), keep_optimizer=True)
    assert src.optimizer_state is not None and src.optimizer_state["state"]
    s = train(make_config(small_data, init_from=str(tmp_path / "src"), keep_optimizer=True, lr=1e-3, max_epochs=1),
              tmp_path / "kept")
    assert s["hidden_size"] == 4
    hist = json.loads((tmp_path / "kept" / "history.json").read_text())
    assert hist[-1]["lr"] == 1e-3


def test_a_run_from_a_model_resumes_with_the_fingerprint_its_folder_stored(small_data, tmp_path):
    """Run folders written before ModelWeights.fingerprint store the sha256 of the starting
    model's AGAM JSON as init_fingerprint; such a run must still resume (and be extended),
    while a changed starting model is still refused."""
    from ampxfer_lib.errors import RunFolderError
    from ampxfer_lib.fileio import atomic_write_json
    from ampxfer_lib.model.formats import neuralpi, save_model

    start = new_model(ModelConfig(hidden_size=4), seed=0).weights()
    save_model(start, tmp_path / "start.json")
    run = tmp_path / "run"
    train(make_config(small_data, init_from=str(tmp_path / "start.json"), hidden_size=4, max_epochs=1), run)
    stored = json.loads((run / "config.json").read_text())
    assert stored["init_fingerprint"] in (neuralpi.json_sha256(start), start.fingerprint())
    stored["init_fingerprint"] = neuralpi.json_sha256(start)
    atomic_write_json(run / "config.json", stored)
    longer = train(make_config(small_data, init_from=str(tmp_path / "start.json"), hidden_size=4, max_epochs=2), run)
    assert longer["epochs"] == 2

    save_model(new_model(ModelConfig(hidden_size=4), seed=1).weights(), tmp_path / "start.json")
    with pytest.raises(RunFolderError, match="the --init-from model changed"):
        train(make_config(small_data, init_from=str(tmp_path / "start.json"), hidden_size=4, max_epochs=3), run)


def test_shrink_towards_is_the_weighted_sum_of_start_and_fresh_init():
    start = new_model(ModelConfig(hidden_size=6), seed=3).weights({"name": "start"})
    fresh = new_model(ModelConfig(hidden_size=6), seed=4).weights()
    mixed = shrink_towards(start, fresh, 0.25)
    for name, value in mixed.params.items():
        assert value.dtype == np.float32
        assert np.array_equal(value, np.float32(0.25) * start.params[name] + np.float32(0.75) * fresh.params[name])
    assert mixed.metadata == {"name": "start"}
    assert shrink_towards(start, fresh, 1.0).equal(start)
    with pytest.raises(ValueError, match="shapes differ"):
        shrink_towards(start, new_model(ModelConfig(hidden_size=5), seed=4).weights(), 0.5)


def test_a_shrunk_start_is_what_the_run_begins_from(small_data, tmp_path):
    from ampxfer_lib.data.dataset import Dataset
    from ampxfer_lib.model.formats import save_model
    from ampxfer_lib.training.loop import build_model

    start = new_model(ModelConfig(hidden_size=4), seed=0).weights()
    save_model(start, tmp_path / "start.json")
    config = make_config(small_data, init_from=str(tmp_path / "start.json"), hidden_size=4, shrink_start=0.5,
                         match_level="none", seed=7)
    model, _ = build_model(config, start.config, InitSource(str(tmp_path / "start.json"), start), Dataset(small_data))
    fresh = new_model(start.config, seed=7).weights()
    for name, value in model.weights().params.items():
        assert np.array_equal(value, np.float32(0.5) * start.params[name] + np.float32(0.5) * fresh.params[name])
    assert config.identity()["shrink_start"] == 0.5


def test_shrink_start_is_checked(small_data):
    with pytest.raises(ConfigError, match=r"shrink_start must be a number in \(0, 1\], not 0.0"):
        make_config(small_data, init_from="x.json", shrink_start=0.0)
    with pytest.raises(ConfigError, match="shrink_start shrinks a starting model: it needs --init-from"):
        make_config(small_data, shrink_start=0.5)
