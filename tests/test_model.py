import numpy as np
import pytest
import torch

from ampxfer_lib.model.network import AmpLSTM, new_model
from ampxfer_lib.model.weights import PARAM_NAMES, ModelConfig, ModelWeights


def test_config_round_trip_and_validation():
    cfg = ModelConfig(input_size=3, hidden_size=12, skip=False, sample_rate=48000)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.num_knobs == 2
    with pytest.raises(ValueError):
        ModelConfig(input_size=0)


def test_one_call_equals_chunked_calls():
    torch.manual_seed(0)
    model = new_model(ModelConfig(input_size=2, hidden_size=9), seed=3)
    x = torch.randn(2, 1000, 2)
    with torch.no_grad():
        model.reset_state()
        whole = model(x)
        model.reset_state()
        parts = torch.cat([model(x[:, a:b]) for a, b in [(0, 1), (1, 250), (250, 251), (251, 1000)]], dim=1)
    assert torch.allclose(whole, parts, atol=1e-6)
    # and the state really carries: a fresh state on the second half gives another answer
    with torch.no_grad():
        model.reset_state()
        fresh = model(x[:, 500:])
    assert not torch.allclose(fresh, whole[:, 500:], atol=1e-4)


def test_skip_connection_and_zero_state():
    cfg = ModelConfig(input_size=2, hidden_size=4)
    zeros = {k: np.zeros(s, np.float32) for k, s in cfg.param_shapes().items()}
    zeros["lin.bias"] = np.array([0.25], np.float32)
    model = AmpLSTM.from_weights(ModelWeights(cfg, zeros))
    x = torch.randn(1, 50, 2)
    with torch.no_grad():
        y = model(x)
    # all-zero LSTM: h = o * tanh(c) = 0.5 * tanh(0) = 0, so y = bias + x[..., 0] exactly
    assert torch.equal(y[..., 0], x[..., 0] + 0.25)
    no_skip = AmpLSTM.from_weights(ModelWeights(ModelConfig(2, 4, skip=False), zeros))
    with torch.no_grad():
        assert torch.equal(no_skip(x)[..., 0], torch.full((1, 50), 0.25))


def test_weights_round_trip_bit_exact():
    model = new_model(ModelConfig(hidden_size=7), seed=1)
    w = model.weights()
    assert list(w.params) == list(PARAM_NAMES)
    again = AmpLSTM.from_weights(w).weights()
    assert again.equal(w)
    assert np.array_equal(w.bias, w.params["rec.bias_ih_l0"] + w.params["rec.bias_hh_l0"])
    assert w.weight_ih.shape == (28, 1) and w.head_weight.shape == (7,)


def test_seeded_init_is_reproducible_and_leaves_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = new_model(ModelConfig(), seed=5).weights()
    after = torch.rand(1)
    assert torch.equal(before, after)
    assert a.equal(new_model(ModelConfig(), seed=5).weights())
    assert not a.equal(new_model(ModelConfig(), seed=6).weights())


def test_bad_shapes_are_refused():
    cfg = ModelConfig(hidden_size=4)
    params = {k: np.zeros(s, np.float32) for k, s in cfg.param_shapes().items()}
    params["rec.weight_hh_l0"] = np.zeros((16, 5), np.float32)
    with pytest.raises(ValueError, match="rec.weight_hh_l0"):
        ModelWeights(cfg, params)
    with pytest.raises(ValueError, match="expected input of shape"):
        AmpLSTM(cfg)(torch.zeros(1, 10, 2))


def test_fingerprint_is_the_documented_hash_of_the_network():
    """sha256 of the sorted-JSON config, then per tensor name, shape and little-endian float32
    bytes, the two biases summed and -0.0 counted as 0.0; metadata is not the sound."""
    import hashlib
    import json

    cfg = ModelConfig(input_size=1, hidden_size=1, skip=True, sample_rate=48000)
    params = {k: np.zeros(s, np.float32) for k, s in cfg.param_shapes().items()}
    params["rec.bias_ih_l0"][:] = [1.0, -0.5, 0.25, 2.0]
    params["rec.bias_hh_l0"][:] = [0.5, 0.5, -0.25, -0.0]
    params["rec.weight_hh_l0"][:, 0] = [-0.0, 1.0, 0.0, 3.0]
    params["lin.bias"][0] = -1.5
    w = ModelWeights(cfg, params, {"name": "unit"})
    h = hashlib.sha256(b'{"hidden_size": 1, "input_size": 1, "sample_rate": 48000, "skip": true}')
    for name, shape, values in (("weight_ih", [4, 1], [0, 0, 0, 0]), ("weight_hh", [4, 1], [0, 1, 0, 3]),
                                ("bias", [4], [1.5, 0, 0, 2]), ("lin.weight", [1, 1], [0]),
                                ("lin.bias", [1], [-1.5])):
        h.update(f"{name}{shape}".encode())
        h.update(np.array(values, "<f4").tobytes())
    assert w.fingerprint() == h.hexdigest()
    assert json.dumps(cfg.to_dict(), sort_keys=True) == '{"hidden_size": 1, "input_size": 1, "sample_rate": 48000, "skip": true}'

    split = dict(params, **{"rec.bias_ih_l0": params["rec.bias_ih_l0"] + params["rec.bias_hh_l0"],
                            "rec.bias_hh_l0": np.zeros(4, np.float32)})
    assert ModelWeights(cfg, split).fingerprint() == w.fingerprint()  # only the sum plays
    nudged = dict(params, **{"lin.bias": np.nextafter(params["lin.bias"], np.float32(0))})
    assert ModelWeights(cfg, nudged).fingerprint() != w.fingerprint()  # one ulp of one weight
    assert ModelWeights(ModelConfig(1, 1, True, 44100), params).fingerprint() != w.fingerprint()
