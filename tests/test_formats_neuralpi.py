import json
import re

import numpy as np
import pytest

from ampxfer_lib.errors import ModelFormatError
from ampxfer_lib.model.formats import load_model, neuralpi, save_model, sniff
from ampxfer_lib.model.formats.jsonfile import read_json_file
from ampxfer_lib.model.network import new_model
from ampxfer_lib.model.weights import ModelConfig

from conftest import realdata_or_skip


def test_every_shared_model_round_trips_byte_for_byte(tmp_path):
    models = sorted((realdata_or_skip() / "models").glob("*/*.json"))
    assert len(models) >= 30
    for path in models:
        original = path.read_bytes()
        weights = load_model(path)
        out = tmp_path / path.name
        save_model(weights, out)
        assert out.read_bytes() == original, path.name
        assert weights.config.hidden_size == 20 and weights.config.skip


def test_conditioned_shared_model_has_knob_input():
    w = load_model(realdata_or_skip() / "models" / "neuralpi" / "HT40_Overdrive.json")
    assert w.config.input_size == 2 and w.weight_ih.shape == (80, 2)


def test_round_trip_of_a_trained_layout(tmp_path):
    w = new_model(ModelConfig(input_size=3, hidden_size=40, skip=False), seed=0).weights()
    path = tmp_path / "m.json"
    save_model(w, path)
    again = load_model(path)
    assert again.equal(w)
    text = path.read_text()
    assert not text.endswith("\n") and '"sample_rate"' not in text
    assert json.loads(text)["model_data"] == {"model": "SimpleRNN", "input_size": 3, "skip": 0, "output_size": 1,
                                              "unit_type": "LSTM", "num_layers": 1, "hidden_size": 40,
                                              "bias_fl": True}
    save_model(again, tmp_path / "m2.json")
    assert (tmp_path / "m2.json").read_bytes() == path.read_bytes()


def test_sample_rate_written_only_when_not_44100(tmp_path):
    w = new_model(ModelConfig(sample_rate=48000), seed=0).weights()
    obj = neuralpi.to_json_obj(w)
    assert obj["model_data"]["sample_rate"] == 48000
    assert neuralpi.loads(neuralpi.dumps(w)).config.sample_rate == 48000


def _valid_obj():
    return neuralpi.to_json_obj(new_model(ModelConfig(hidden_size=4), seed=0).weights())


@pytest.mark.parametrize("mutate, message", [
    (lambda o: o["model_data"].update(unit_type="GRU"), "'GRU' model"),
    (lambda o: o["model_data"].update(num_layers=2), "2 LSTM layers"),
    (lambda o: o["state_dict"].pop("lin.bias"), "'lin.bias' is missing"),
    (lambda o: o["state_dict"].update({"rec.weight_hh_l0": [[0.0] * 3] * 16}), "has shape (16, 3)"),
    (lambda o: o["model_data"].update(hidden_size=5), "expected (20, 1)"),
    (lambda o: o["state_dict"]["lin.bias"].__setitem__(0, float("nan")), "NaN"),
    (lambda o: o["state_dict"].update({"rec.weight_ih_l1": [[0.0]]}), "unexpected weights"),
    (lambda o: o["state_dict"].update({"lin.weight": "zeros"}), "not a numeric array"),
])
def test_wrong_content_is_a_clear_error(tmp_path, mutate, message):
    obj = _valid_obj()
    mutate(obj)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ModelFormatError, match=re.escape(message)) as info:
        load_model(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("obj, kind, message", [
    ({"in_shape": [None, None, 1], "in_skip": 1, "layers": []}, "rtneural", "RTNeural"),
    ({"version": "0.5.0", "architecture": "LSTM", "config": {}, "weights": []}, "nam", "Neural Amp Modeler"),
    ({"activation": "gated", "dilation_depth": 9, "num_channels": 12, "state_dict": {}}, "wavenet", "WaveNet"),
    ({"hello": 1}, "unknown", "not an AGAM"),
])
def test_other_formats_are_named(tmp_path, obj, kind, message):
    assert sniff(obj) == kind
    path = tmp_path / "other.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ModelFormatError, match=message):
        load_model(path)


def test_truncated_empty_missing_and_binary_files(tmp_path):
    good = tmp_path / "good.json"
    save_model(new_model(ModelConfig(hidden_size=4), seed=0).weights(), good)
    cut = tmp_path / "cut.json"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ModelFormatError, match="truncated"):
        load_model(cut)
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty file"):
        load_model(empty)
    with pytest.raises(ModelFormatError, match="no such file"):
        load_model(tmp_path / "nope.json")
    binary = tmp_path / "bin.json"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(ModelFormatError, match="not a text file"):
        read_json_file(binary)
    with pytest.raises(ModelFormatError, match="is a folder"):
        load_model(tmp_path)


def test_values_survive_exactly():
    w = new_model(ModelConfig(hidden_size=6), seed=2).weights()
    again = neuralpi.loads(neuralpi.dumps(w))
    for k in w.params:
        assert np.array_equal(w.params[k], again.params[k]) and again.params[k].dtype == np.float32
