import dataclasses
import json
import re

import numpy as np
import pytest

from ampxfer_lib.errors import ModelFormatError
from ampxfer_lib.model.formats import export_model, import_model, nam, sniff
from ampxfer_lib.model.network import new_model
from ampxfer_lib.model.weights import ModelConfig, ModelWeights
from ampxfer_lib.model.render import render_sequential

from conftest import plucked_notes
from real_guitar import real_guitar, shared_model


def nam_lstm_forward(obj: dict, x: np.ndarray) -> np.ndarray:
    """NAM's LSTM equations, read from the flat ``weights`` list of a .nam file, in float64.

    Per layer: [W_ih | W_hh] (4H x (in+H), row-major), b (4H), h0 (H), c0 (H); then the
    head's w (H) and b (1). Gates (i, f, g, o); y = w . h + b, no skip.
    """
    assert obj["architecture"] == "LSTM"
    cfg = obj["config"]
    n_in, h_size = cfg["input_size"], cfg["hidden_size"]
    assert cfg["num_layers"] == 1 and n_in == 1
    flat = np.asarray(obj["weights"], dtype=np.float64)
    k = 4 * h_size * (n_in + h_size)
    mat = flat[:k].reshape(4 * h_size, n_in + h_size)
    b = flat[k:k + 4 * h_size]
    h = flat[k + 4 * h_size:k + 5 * h_size].copy()
    c = flat[k + 5 * h_size:k + 6 * h_size].copy()
    head_w = flat[k + 6 * h_size:k + 7 * h_size]
    head_b = flat[k + 7 * h_size]
    assert len(flat) == k + 7 * h_size + 1
    w_x, w_h = mat[:, :n_in], mat[:, n_in:]
    pre = np.asarray(x, dtype=np.float64)[:, None] @ w_x.T + b
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    y = np.empty(len(x))
    for t in range(len(x)):
        z = pre[t] + w_h @ h
        i, f = sig(z[:h_size]), sig(z[h_size:2 * h_size])
        g, o = np.tanh(z[2 * h_size:3 * h_size]), sig(z[3 * h_size:])
        c = f * c + i * g
        h = o * np.tanh(c)
        y[t] = head_w @ h + head_b
    return y


def no_skip(weights: ModelWeights) -> ModelWeights:
    """The same weights with the skip connection off (a different sound, real weights)."""
    return ModelWeights(dataclasses.replace(weights.config, skip=False), weights.params)


def _export_obj(weights, tmp_path, **kw) -> dict:
    path = tmp_path / "m.nam"
    export_model(weights, "nam", path, **kw)
    return json.loads(path.read_text())


def test_reference_forward_matches_render_on_real_guitar(tmp_path):
    weights = no_skip(shared_model("BluesJR_FullD"))
    x = real_guitar(1.5, clip="Hammer_Lead")
    ref = nam_lstm_forward(_export_obj(weights, tmp_path), x)
    ours = render_sequential(weights, x)
    assert np.max(np.abs(ref - ours)) <= 1e-5
    assert np.sqrt(np.mean(ours ** 2)) > 0.01


def test_reference_forward_matches_render_synthetic(tmp_path):
    weights = new_model(ModelConfig(hidden_size=10, skip=False), seed=7).weights()
    x = plucked_notes(0.3, seed=2).astype(np.float32)
    ref = nam_lstm_forward(_export_obj(weights, tmp_path), x)
    assert np.max(np.abs(ref - render_sequential(weights, x))) <= 1e-5


def test_a_conditioned_model_exports_with_its_knob_frozen(tmp_path):
    cond = no_skip(shared_model("TS9"))
    x = real_guitar(1.0, clip="Pop_Punk", offset=5.0)
    obj = _export_obj(cond, tmp_path, knobs=[0.75])
    assert obj["config"]["input_size"] == 1
    assert np.max(np.abs(nam_lstm_forward(obj, x) - render_sequential(cond, x, [0.75]))) <= 1e-5


def test_layout_of_the_flat_weights(tmp_path):
    w = new_model(ModelConfig(hidden_size=3, skip=False, sample_rate=48000), seed=1).weights()
    obj = _export_obj(w, tmp_path, metadata={"name": "Test amp"})
    assert obj["version"] == "0.5.4" and obj["architecture"] == "LSTM"
    assert obj["config"] == {"input_size": 1, "hidden_size": 3, "num_layers": 1}
    assert obj["sample_rate"] == 48000 and obj["metadata"] == {"name": "Test amp"}
    flat = np.float32(obj["weights"])
    p = w.params
    expected = np.concatenate([
        np.concatenate([p["rec.weight_ih_l0"], p["rec.weight_hh_l0"]], axis=1).ravel(),  # 12 x 4, row-major
        p["rec.bias_ih_l0"] + p["rec.bias_hh_l0"],
        np.zeros(6, np.float32),  # initial hidden and cell state
        p["lin.weight"][0], p["lin.bias"],
    ])
    assert flat.shape == (12 * 4 + 12 + 6 + 3 + 1,)
    np.testing.assert_array_equal(flat, expected)
    assert sniff(obj) == "nam"


def test_a_skip_model_is_refused_naming_no_skip(tmp_path):
    path = tmp_path / "m.nam"
    with pytest.raises(ModelFormatError, match="--no-skip"):
        export_model(new_model(ModelConfig(hidden_size=4), seed=0).weights(), "nam", path, source="run/model.json")
    assert not path.exists()
    with pytest.raises(ModelFormatError, match=r"^run/model.json: has a skip connection"):
        export_model(new_model(ModelConfig(hidden_size=4), seed=0).weights(), "nam", path, source="run/model.json")


def test_a_conditioned_model_without_knobs_is_refused(tmp_path):
    w = new_model(ModelConfig(input_size=2, hidden_size=4, skip=False), seed=0).weights()
    with pytest.raises(ModelFormatError, match=r"--knob V"):
        export_model(w, "nam", tmp_path / "m.nam")


def test_round_trip_keeps_weights_exactly(tmp_path):
    w = new_model(ModelConfig(hidden_size=6, skip=False), seed=4).weights()
    first = tmp_path / "a.nam"
    export_model(w, "nam", first, metadata={"name": "Round trip", "gear_type": "pedal"})
    back = import_model(first)
    assert back.config == w.config
    for name in ("rec.weight_ih_l0", "rec.weight_hh_l0", "lin.weight", "lin.bias"):
        assert np.array_equal(back.params[name], w.params[name])
    assert np.array_equal(back.bias, w.bias) and np.all(back.params["rec.bias_hh_l0"] == 0)
    assert back.metadata["name"] == "Round trip" and "import_notes" not in back.metadata
    second = tmp_path / "b.nam"
    export_model(back, "nam", second)
    assert second.read_bytes() == first.read_bytes()


def test_nam_trainer_files_import_with_notes(tmp_path):
    # What NAM's trainer writes: a warmed-up initial state, float sample rate, its metadata.
    w = new_model(ModelConfig(hidden_size=4, skip=False), seed=2).weights()
    obj = nam.to_json_obj(w)
    flat = obj["weights"]
    k = 16 * 5 + 16
    flat[k:k + 8] = [0.1] * 8
    obj.update(version="0.5.4", sample_rate=48000.0, metadata={"date": {"year": 2024}, "loudness": -20.0})
    imported = nam.from_json_obj(obj, "trainer.nam")
    assert imported.config.sample_rate == 48000 and not imported.config.skip
    assert np.array_equal(imported.weight_hh, w.weight_hh)
    assert "initial LSTM state" in imported.metadata["import_notes"][0]
    del obj["sample_rate"]
    assert nam.from_json_obj(obj, "old.nam").config.sample_rate == 48000
    assert "assumed NAM's default 48000 Hz" in nam.from_json_obj(obj, "old.nam").metadata["import_notes"][-1]


def _valid_obj():
    return nam.to_json_obj(new_model(ModelConfig(hidden_size=4, skip=False), seed=0).weights())


@pytest.mark.parametrize("mutate, message", [
    (lambda o: o.update(architecture="WaveNet"), "a NAM 'WaveNet' model"),
    (lambda o: o["config"].update(num_layers=2), "a 2-layer LSTM"),
    (lambda o: o["weights"].pop(), "108 weights, expected 109"),
    (lambda o: o["config"].update(hidden_size=5), "109 weights, expected 156"),
    (lambda o: o["weights"].__setitem__(3, float("nan")), "NaN"),
    (lambda o: o["weights"].__setitem__(3, "x"), "not numbers"),
    (lambda o: o.pop("config"), "'config' is missing"),
    (lambda o: o["config"].update(hidden_size="20"), "config.hidden_size is '20'"),
    (lambda o: o.update(sample_rate=44100.5), "sample_rate 44100.5"),
])
def test_wrong_content_is_a_clear_error(tmp_path, mutate, message):
    obj = _valid_obj()
    mutate(obj)
    path = tmp_path / "bad.nam"
    path.write_text(json.dumps(obj))
    with pytest.raises(ModelFormatError, match=re.escape(message)) as info:
        import_model(path)
    assert str(path) in str(info.value)


def test_compatibility_names_nam():
    lines = nam.compatibility(new_model(ModelConfig(hidden_size=16, skip=False), seed=0).weights())
    assert lines[0].startswith("Neural Amp Modeler (plugin") and "hidden size 16" in lines[0]


def test_nam_package_reproduces_our_output(tmp_path):
    """NAM's own loader (neural-amp-modeler >= 0.12.1) plays our file as our renderer does."""
    pytest.importorskip("nam", minversion="0.12.1", reason="neural-amp-modeler (0.12.1+) is not installed")
    import torch
    from nam.models import init_from_nam

    try:
        weights = no_skip(shared_model("TS9_FullD"))
        x = real_guitar(1.5)
    except pytest.skip.Exception:
        weights = new_model(ModelConfig(hidden_size=20, skip=False), seed=1).weights()
        x = plucked_notes(1.0).astype(np.float32)
    obj = _export_obj(weights, tmp_path)
    model = init_from_nam(obj)
    model.eval()
    with torch.no_grad():
        y = model(torch.from_numpy(x)[None])[0].numpy()
    assert model.sample_rate == weights.config.sample_rate
    assert np.max(np.abs(y - render_sequential(weights, x))) <= 1e-5
