"""export/import end to end: the CLI, aliases, format sniffing, and a trained model per format."""

import json

import numpy as np
import pytest

from ampxfer_lib.cli.main import main
from ampxfer_lib.errors import ModelFormatError
from ampxfer_lib.model.formats import (canonical_format, export_model, import_model, load_model, neuralpi,
                                 save_model)
from ampxfer_lib.model.network import new_model
from ampxfer_lib.model.weights import ModelConfig
from ampxfer_lib.model.render import render_sequential
from ampxfer_lib.training.config import make_config
from ampxfer_lib.training.loop import train

from conftest import file_hashes, plucked_notes
from real_guitar import real_guitar, shared_model
from test_formats_nam import nam_lstm_forward
from test_formats_rtneural import keras_lstm_forward


def agam_forward(obj: dict, x: np.ndarray, knobs=()) -> np.ndarray:
    """The AGAM/PyTorch equations read from the state_dict, in float64.

    gates = W_ih x + b_ih + W_hh h + b_hh, order (i, f, g, o); y = lin(h) (+ x[:, 0] if skip).
    """
    sd = {k: np.asarray(v, dtype=np.float64) for k, v in obj["state_dict"].items()}
    h_size = obj["model_data"]["hidden_size"]
    inputs = np.empty((len(x), obj["model_data"]["input_size"]))
    inputs[:, 0] = x
    inputs[:, 1:] = knobs
    pre = inputs @ sd["rec.weight_ih_l0"].T + sd["rec.bias_ih_l0"] + sd["rec.bias_hh_l0"]
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    h, c = np.zeros(h_size), np.zeros(h_size)
    y = np.empty(len(x))
    for t in range(len(x)):
        z = pre[t] + sd["rec.weight_hh_l0"] @ h
        i, f = sig(z[:h_size]), sig(z[h_size:2 * h_size])
        g, o = np.tanh(z[2 * h_size:3 * h_size]), sig(z[3 * h_size:])
        c = f * c + i * g
        h = o * np.tanh(c)
        y[t] = sd["lin.weight"][0] @ h + sd["lin.bias"][0]
    if obj["model_data"].get("skip", 1):
        y = y + inputs[:, 0]
    return y


def _audio(seconds=1.0):
    """Real guitar when the shared data is there, plucked notes otherwise."""
    try:
        return real_guitar(seconds)
    except pytest.skip.Exception:
        return plucked_notes(seconds).astype(np.float32)


@pytest.fixture(scope="module")
def runs(small_data, tmp_path_factory):
    """A notebook-style run (skip on) and a --no-skip run, trained briefly on the toy device."""
    root = tmp_path_factory.mktemp("export_runs")
    train(make_config(small_data, hidden_size=8, max_epochs=2, seed=0), root / "skip")
    train(make_config(small_data, hidden_size=8, max_epochs=2, seed=0, skip=False), root / "noskip")
    return root


def test_trained_models_export_to_every_format_and_play_the_same(runs, tmp_path, capsys):
    x = _audio(1.0)
    skip_model = load_model(runs / "skip" / "model_best.json")
    assert main(["export", "--model", str(runs / "skip"), "--format", "neuralpi", "--out",
                 str(tmp_path / "np.json")]) == 0
    assert main(["export", "--model", str(runs / "skip"), "--format", "rtneural", "--out",
                 str(tmp_path / "rt.json")]) == 0
    assert main(["export", "--model", str(runs / "noskip"), "--format", "nam", "--out",
                 str(tmp_path / "m.nam")]) == 0
    ours = render_sequential(skip_model, x)
    assert np.max(np.abs(agam_forward(json.loads((tmp_path / "np.json").read_text()), x) - ours)) <= 1e-5
    assert np.max(np.abs(keras_lstm_forward(json.loads((tmp_path / "rt.json").read_text()), x) - ours)) <= 1e-5
    noskip = load_model(runs / "noskip" / "model_best.json")
    ref = nam_lstm_forward(json.loads((tmp_path / "m.nam").read_text()), x)
    assert np.max(np.abs(ref - render_sequential(noskip, x))) <= 1e-5
    out = capsys.readouterr().out
    # hidden 8: neither NeuralPi (20) nor Proteus (40) has that size; AIDA-X has.
    assert "NeuralPi will NOT play it correctly: needs hidden size 20, this is 8" in out
    assert "AIDA-X (and aidadsp-lv2 on MOD devices) loads it: LSTM 8" in out
    assert "Neural Amp Modeler (plugin" in out


def test_neuralpi_reference_on_real_guitar(tmp_path):
    # The native format, read with the AGAM equations: a real snapshot and a real knob model.
    for name, knobs in (("BluesJR_FullD", ()), ("BluesJr", (0.25,))):
        w = shared_model(name)
        x = real_guitar(1.5, clip="Jazz_Trot", offset=3.0)
        export_model(w, "agam", tmp_path / f"{name}.json")
        ref = agam_forward(json.loads((tmp_path / f"{name}.json").read_text()), x, knobs)
        assert np.max(np.abs(ref - render_sequential(w, x, knobs))) <= 1e-5


def test_neuralpi_export_of_a_shared_model_is_byte_identical(tmp_path):
    src = shared_model("TS9_FullD")  # skips without real data
    from conftest import REALDATA

    path = REALDATA / "models" / "neuralpi" / "TS9_FullD.json"
    for alias in ("neuralpi", "agam", "proteus", "AGAM"):
        out = tmp_path / f"{alias}.json"
        assert main(["export", "--model", str(path), "--format", alias, "--out", str(out)]) == 0
        assert out.read_bytes() == path.read_bytes()
    assert src.config.hidden_size == 20


def test_aliases():
    assert canonical_format("agam") == canonical_format("proteus") == canonical_format("NeuralPi") == "neuralpi"
    assert canonical_format("aidax") == canonical_format("AIDA-X") == "rtneural"
    assert canonical_format("nam") == "nam"
    with pytest.raises(ModelFormatError, match="unknown model format 'onnx'"):
        canonical_format("onnx")


def test_aidax_alias_writes_rtneural(tmp_path, capsys):
    model = tmp_path / "m.json"
    save_model(new_model(ModelConfig(hidden_size=20), seed=0).weights(), model)
    assert main(["export", "--model", str(model), "--format", "aidax", "--out", str(tmp_path / "a.json")]) == 0
    assert main(["export", "--model", str(model), "--format", "rtneural", "--out", str(tmp_path / "r.json")]) == 0
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "r.json").read_bytes()
    out = capsys.readouterr().out
    assert "wrote" in out and "(rtneural)" in out and "NeuralPi" not in out


@pytest.mark.parametrize("fmt, kind", [("neuralpi", "neuralpi"), ("rtneural", "rtneural"), ("nam", "nam")])
def test_import_recognises_each_format(tmp_path, capsys, fmt, kind):
    w = new_model(ModelConfig(hidden_size=6, skip=False), seed=1).weights()
    src = tmp_path / f"model.{'nam' if fmt == 'nam' else 'json'}"
    export_model(w, fmt, src)
    before = file_hashes(src)
    out = tmp_path / "back.json"
    assert main(["import", "--model", str(src), "--out", str(out)]) == 0
    assert file_hashes(src) == before  # the source is only read
    assert f"{kind} model -> AGAM/NeuralPi JSON (LSTM 6, 1 input(s), skip off, 44100 Hz)" in capsys.readouterr().out
    back = load_model(out)
    assert np.array_equal(back.weight_ih, w.weight_ih) and np.array_equal(back.bias, w.bias)
    x = plucked_notes(0.2).astype(np.float32)
    assert np.max(np.abs(render_sequential(back, x) - render_sequential(w, x))) <= 1e-6


def test_import_of_an_agam_file_is_byte_identical(tmp_path):
    w = new_model(ModelConfig(input_size=2, hidden_size=5), seed=3).weights()
    src = tmp_path / "src.json"
    neuralpi.save(w, src)
    assert main(["import", "--model", str(src), "--out", str(tmp_path / "out.json")]) == 0
    assert (tmp_path / "out.json").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("content, message", [
    ({"activation": "gated", "dilation_depth": 9, "num_channels": 12}, "WaveNet (PedalNetRT)"),
    ({"hello": 1}, "not a model ampxfer knows"),
    ({"version": "0.5.4", "architecture": "WaveNet", "config": {}, "weights": []}, "NAM 'WaveNet' model"),
])
def test_import_refuses_other_models(tmp_path, capsys, content, message):
    src = tmp_path / "other.json"
    src.write_text(json.dumps(content))
    assert main(["import", "--model", str(src), "--out", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(src) in err and "Traceback" not in err
    assert not (tmp_path / "out.json").exists()


def test_export_refuses_to_overwrite(tmp_path, capsys):
    model = tmp_path / "m.json"
    save_model(new_model(ModelConfig(hidden_size=4), seed=0).weights(), model)
    out = tmp_path / "out.json"
    out.write_text("keep me")
    assert main(["export", "--model", str(model), "--format", "rtneural", "--out", str(out)]) == 2
    assert "exists; choose another --out or pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    assert main(["export", "--model", str(model), "--format", "rtneural", "--out", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text())["in_skip"] == 1
    assert main(["export", "--model", str(model), "--format", "neuralpi", "--out", str(model), "--overwrite"]) == 2
    assert "is the --model file itself" in capsys.readouterr().err
    assert main(["import", "--model", str(out), "--out", str(out), "--overwrite"]) == 2


def test_nam_export_of_a_skip_model_fails_cleanly(tmp_path, capsys):
    model = tmp_path / "m.json"
    save_model(new_model(ModelConfig(hidden_size=4), seed=0).weights(), model)
    assert main(["export", "--model", str(model), "--format", "nam", "--out", str(tmp_path / "m.nam")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {model}: has a skip connection") and "--no-skip" in err
    assert not (tmp_path / "m.nam").exists()


def test_export_with_knobs(tmp_path, capsys):
    model = tmp_path / "cond.json"
    cond = new_model(ModelConfig(input_size=2, hidden_size=6, skip=False), seed=2).weights()
    save_model(cond, model)
    assert main(["export", "--model", str(model), "--format", "nam", "--out", str(tmp_path / "m.nam"),
                 "--knob", "0.3", "--name", "Cond at 0.3"]) == 0
    assert "knob(s) frozen at 0.3" in capsys.readouterr().out
    obj = json.loads((tmp_path / "m.nam").read_text())
    assert obj["metadata"] == {"name": "Cond at 0.3"}
    x = plucked_notes(0.3).astype(np.float32)
    assert np.max(np.abs(nam_lstm_forward(obj, x) - render_sequential(cond, x, [0.3]))) <= 1e-5
    assert main(["export", "--model", str(model), "--format", "nam", "--out", str(tmp_path / "n.nam"),
                 "--knob", "0.3", "--knob", "0.1"]) == 2
    assert "has 1 knob(s) but 2 --knob value(s)" in capsys.readouterr().err
    assert main(["export", "--model", str(model), "--format", "nam", "--out", str(tmp_path / "n.nam"),
                 "--knob", "1.5"]) == 2
    assert "argument --knob: must be a number in [0, 1], not 1.5" in capsys.readouterr().err


def test_import_of_a_truncated_file(tmp_path, capsys):
    src = tmp_path / "m.nam"
    export_model(new_model(ModelConfig(hidden_size=4, skip=False), seed=0).weights(), "nam", src)
    src.write_bytes(src.read_bytes()[:100])
    assert main(["import", "--model", str(src), "--out", str(tmp_path / "o.json")]) == 2
    assert "truncated" in capsys.readouterr().err
    with pytest.raises(ModelFormatError, match="no such file"):
        import_model(tmp_path / "missing.nam")
