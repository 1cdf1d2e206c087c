"""Level matching of a starting model: closed-form fits checked on signals made to fit exactly."""

from types import SimpleNamespace

import numpy as np
import pytest

from ampxfer_lib.errors import ConfigError
from ampxfer_lib.model.network import new_model
from ampxfer_lib.model.weights import ModelConfig
from ampxfer_lib.transfer.level_match import Stretches, least_squares, lstm_features, match_level, spread_stretches

from conftest import plucked_notes

RATE = 44100


def _model(seed=0, skip=True):
    return new_model(ModelConfig(1, 8, skip, RATE), seed=seed).weights()


def _stretches(weights, make_target, seconds=1.0, batch=3, warm=441):
    """Stretches whose target is ``make_target(x, hidden)`` of the model's own features."""
    x = np.stack([plucked_notes(seconds, RATE, seed=i)[:, None] for i in range(batch)]).astype(np.float32)
    h = lstm_features(weights, x)
    y = make_target(x[..., 0].astype(np.float64), h).astype(np.float32)
    return Stretches(x, y, warm)


def test_gain_recovers_scale_offset_and_polarity():
    w = _model()
    lw, lb = w.params["lin.weight"][0].astype(np.float64), float(w.params["lin.bias"][0])
    for a, c in ((3.0, 0.05), (-2.0, 0.0)):
        st = _stretches(w, lambda x, h: x + a * (h @ lw + lb) + c)
        new, info = match_level(w, st, "gain")
        assert info["gain"] == pytest.approx(a, rel=1e-4)
        assert info["offset"] == pytest.approx(c, abs=1e-5)
        np.testing.assert_allclose(new.params["lin.weight"][0], a * lw, rtol=1e-4, atol=1e-7)
        assert info["esr_after"] < 1e-8 < info["esr_before"]
        # the LSTM is untouched
        for k in ("rec.weight_ih_l0", "rec.weight_hh_l0", "rec.bias_ih_l0", "rec.bias_hh_l0"):
            assert np.array_equal(new.params[k], w.params[k])


def test_refit_recovers_another_dense_layer_without_ridge():
    w = _model(seed=1)
    rng = np.random.default_rng(0)
    true_w, true_b = rng.normal(size=8), 0.01
    st = _stretches(w, lambda x, h: x + h @ true_w + true_b)
    new, info = match_level(w, st, "refit", ridge=0.0)
    np.testing.assert_allclose(new.params["lin.weight"][0], true_w, rtol=1e-3, atol=1e-4)
    assert float(new.params["lin.bias"][0]) == pytest.approx(true_b, abs=1e-4)
    assert info["esr_after"] < 1e-7


def test_without_skip_the_whole_output_is_fitted():
    w = _model(seed=2, skip=False)
    lw, lb = w.params["lin.weight"][0].astype(np.float64), float(w.params["lin.bias"][0])
    st = _stretches(w, lambda x, h: -0.5 * (h @ lw + lb))
    _, info = match_level(w, st, "gain")
    assert info["gain"] == pytest.approx(-0.5, rel=1e-4)


def test_refit_is_never_worse_than_gain_nor_gain_than_none():
    w = _model(seed=3)
    rng = np.random.default_rng(1)
    st = _stretches(w, lambda x, h: np.tanh(4 * x) * 0.3 + 0.01 * rng.normal(size=x.shape))
    e = {m: match_level(w, st, m)[1]["esr_after"] for m in ("none", "gain", "refit")}
    assert e["refit"] <= e["gain"] + 1e-9 and e["gain"] <= e["none"] + 1e-9
    assert match_level(w, st, "none")[0] is w


def test_least_squares_ridge_is_relative_to_the_features_level():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    r = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(least_squares(a, r, 0.0), [1.0, 2.0], atol=1e-12)
    # gram = [[2,1],[1,2]], mean diagonal 2: ridge 0.5 adds 1 to the diagonal -> [[3,1],[1,3]] c = [4, 5]
    np.testing.assert_allclose(least_squares(a, r, 0.5), np.linalg.solve([[3, 1], [1, 3]], [4, 5]))
    # scaling the features by 10 scales the solution by 1/10 (the ridge scales with them)
    np.testing.assert_allclose(least_squares(10 * a, r, 0.5), least_squares(a, r, 0.5) / 10)


def test_spread_stretches_shares_chunks_by_length():
    def sec(n, v):
        return SimpleNamespace(input=np.full((n, 1), v, np.float32), target=np.full(n, v, np.float32))

    st = spread_stretches([sec(3000, 1.0), sec(1000, 2.0)], rate=1000, seconds=0.8, chunks=4, warmup_seconds=0.1)
    # 4 stretches of 200 samples (+100 warm-up): 3 from the first section, 1 from the second
    assert st.x.shape == (4, 300, 1) and st.warmup == 100
    assert st.y[:, 0].tolist() == [1.0, 1.0, 1.0, 2.0]
    with pytest.raises(ConfigError, match="too short"):
        spread_stretches([sec(250, 1.0)], rate=1000, seconds=0.8, chunks=4, warmup_seconds=0.1)
    with pytest.raises(ConfigError, match="unknown level matching"):
        match_level(_model(), st, "loud")
