import numpy as np
import pytest

from ampxfer_lib.data.dataset import load_dataset
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.training.evaluate import evaluate
from ampxfer_lib.training.losses import esr_numpy
from ampxfer_lib.model.weights import ModelConfig, ModelWeights
from ampxfer_lib.model.render import render


def identity(input_size=1, rate=44100, bias=0.0):
    cfg = ModelConfig(input_size=input_size, hidden_size=3, sample_rate=rate)
    params = {k: np.zeros(s, np.float32) for k, s in cfg.param_shapes().items()}
    params["lin.bias"][0] = bias
    return ModelWeights(cfg, params)


def test_evaluate_is_plain_esr(small_data):
    ds = load_dataset(small_data)
    test = ds.split("test")[0]
    # an all-zero LSTM with skip passes the input through: ESR(input, target), by hand
    expected = esr_numpy(test.input[:, 0], test.target)
    result = evaluate(identity(), small_data)
    assert result["test_esr"] == pytest.approx(expected, rel=1e-9)
    assert result["captures"][0]["esr"] == pytest.approx(expected, rel=1e-9)
    # a constant 0.1 offset adds exactly T * 0.01 + 2 * 0.1 * sum(x - y) to the error
    r = test.input[:, 0].astype(np.float64) - test.target
    shifted = (np.sum(r ** 2) + 0.2 * np.sum(r) + 0.01 * len(r)) / np.sum(test.target.astype(np.float64) ** 2)
    assert evaluate(identity(bias=0.1), small_data)["test_esr"] == pytest.approx(shifted, rel=1e-6)
    val = evaluate(identity(), ds, split="val")
    assert "val_esr" in val


def test_model_must_fit_the_data(small_data):
    with pytest.raises(ConfigError, match="takes 1 knob input"):
        evaluate(identity(input_size=2), small_data)
    with pytest.raises(ConfigError, match="--rate 48000"):
        evaluate(identity(rate=48000), small_data)


def test_a_module_its_weights_and_its_file_score_the_same(small_data, tmp_path):
    """One path for the trainer's test_esr (a module) and the evaluate command (a file)."""
    from ampxfer_lib.model.formats import save_model
    from ampxfer_lib.model.network import new_model

    module = new_model(ModelConfig(hidden_size=5), seed=7)
    save_model(module.weights(), tmp_path / "m.json")
    by_module = evaluate(module, small_data)
    assert by_module == evaluate(module.weights(), small_data) == evaluate(tmp_path / "m.json", small_data)
    test = load_dataset(small_data).split("test")[0]
    pred = render(module.weights(), test.input[:, 0], method="numba")  # the renderer, sample by sample
    assert by_module["test_esr"] == pytest.approx(esr_numpy(pred, test.target), rel=1e-5)
