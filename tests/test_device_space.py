"""The device-space model: folding is exact, fit_knobs recovers known knobs and touches nothing else,
the config round-trips, training runs and resumes, bad input gives one-line ConfigErrors."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.model.network import AmpLSTM, new_model
from ampxfer_lib.model.render import render_sequential
from ampxfer_lib.model.weights import ModelConfig, ModelWeights, fold_knobs
from ampxfer_lib.transfer.device_space import (CHECKPOINT, DeviceSpaceConfig, EmbeddedLSTM, fit_knobs, folded_start,
                                               logit, train_device_space)

from conftest import plucked_notes

SMALL = dict(align="0", val_seconds=1.0, test_seconds=0.5, limited_seconds=3.0)
KNOBS = (0.3, 0.7)  # the "unknown" device the fit must find


def conditioned(seed: int = 3, hidden: int = 6) -> ModelWeights:
    """A random 2-knob model whose knobs are heard apart: each drives the gates of its own half
    of the units (random knob columns may nearly cancel, leaving a valley no fit can resolve)."""
    w = new_model(ModelConfig(input_size=3, hidden_size=hidden), seed=seed).weights()
    params = dict(w.params)
    wih = params["rec.weight_ih_l0"].copy()
    unit = np.arange(4 * hidden) % hidden  # gate rows i, f, g, o of unit u are u, H + u, ...
    wih[:, 0] *= 2.0
    wih[:, 1] = np.where(unit < hidden // 2, 1.2 * np.sign(wih[:, 1]), 0.0)
    wih[:, 2] = np.where(unit >= hidden // 2, 1.2 * np.sign(wih[:, 2]), 0.0)
    params["rec.weight_ih_l0"] = wih
    params["lin.weight"] = params["lin.weight"] * 1.5
    return ModelWeights(w.config, params)


def data_folder(tmp_path, name, weights, knobs, seconds=5.0, rate=44100, seed=7):
    """Plucked notes through ``weights`` at ``knobs``, prepared (no latency) at ``rate``."""
    x = plucked_notes(seconds, seed=seed).astype(np.float32)
    y = render_sequential(weights, x, knobs)
    rec = tmp_path / "rec"
    rec.mkdir(exist_ok=True)
    sf.write(rec / f"{name}_di.wav", x, 44100, subtype="FLOAT")
    sf.write(rec / f"{name}_out.wav", y, 44100, subtype="FLOAT")
    prepare([CaptureSpec((str(rec / f"{name}_di.wav"),), (str(rec / f"{name}_out.wav"),))], tmp_path / name,
            PrepareConfig(rate=rate, **SMALL))
    return tmp_path / name


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ds")
    w = conditioned()
    data = data_folder(tmp, "dev", w, KNOBS)
    config = DeviceSpaceConfig(embed_dim=2, fit_epochs=5, fit_lr=0.08, fit_level_match=False)
    snap, fit = folded_start(w, data, config, subset="limited")
    return w, data, config, snap, fit


def test_folding_the_fitted_knobs_plays_exactly_like_the_conditioned_model(fitted):
    w, _, _, snap, fit = fitted
    assert snap.config.input_size == 1 and snap.equal(fold_knobs(w, fit.knobs))
    x = plucked_notes(2.0, seed=11).astype(np.float32)
    y_cond = render_sequential(w, x, fit.knobs)
    y_fold = render_sequential(snap, x, ())
    # Same network up to where W_k @ k is summed: float32 rounding of one gate input (~1e-7
    # relative), which the contracting LSTM does not amplify; outputs are ~0.5 in size.
    assert np.max(np.abs(y_cond - y_fold)) < 1e-5
    # The embedding path (knob channels built from logits) is the same conditioned network.
    emb = EmbeddedLSTM(AmpLSTM.from_weights(w), logit(fit.knobs)[None])
    y_emb = emb.play(x[None, :, None], 0)[0]
    assert np.max(np.abs(y_emb - y_cond)) < 1e-5


def test_fit_knobs_recovers_the_knobs_that_made_the_audio(fitted):
    w, data, config, _, fit = fitted
    assert fit.start in [(a, b) for a in config.fit_grid for b in config.fit_grid]
    assert fit.esr < fit.start_esr
    # Tolerance from the local curvature of the objective: ESR(k) ~ 1/2 (k - k*)' H (k - k*) >=
    # 1/2 lambda_min |k - k*|^2, so the ESR reached bounds the distance to the true knobs.
    # H by central differences of the plain ESR of the model's own audio (exactly 0 at k*).
    from ampxfer_lib.data.dataset import load_dataset

    sec = load_dataset(data).split("train", "limited")[0]
    x, y = sec.input[:, 0], sec.target

    def esr(k):
        p = render_sequential(w, x, k)
        return float(np.sum((y - p) ** 2) / np.sum(y.astype(np.float64) ** 2))

    h, k0 = 0.02, np.array(KNOBS)
    e = np.eye(2) * h
    hess = np.array([[(esr(k0 + e[i] + e[j]) - esr(k0 + e[i] - e[j]) - esr(k0 - e[i] + e[j])
                       + esr(k0 - e[i] - e[j])) / (4 * h * h) for j in range(2)] for i in range(2)])
    lam = float(np.min(np.linalg.eigvalsh(hess)))
    assert lam > 0
    bound = np.sqrt(2 * max(fit.esr, 1e-12) / lam) * 1.5  # 1.5: the quadratic is only local
    dist = float(np.linalg.norm(np.array(fit.knobs) - k0))
    assert dist <= max(bound, 1e-3), (fit.knobs, dist, bound, fit.esr)
    assert dist < 0.05 and fit.esr < 1e-3


def test_only_the_knobs_change_during_the_fit(fitted):
    w, _, _, _, fit = fitted
    assert fit.network.equal(w)  # bit for bit: the network was frozen
    assert fit.cpu_seconds > 0


def test_config_json_round_trip_and_unknown_settings():
    c = DeviceSpaceConfig(embed_dim=4, fit_grid=(0.2, 0.8), cpu_budget_seconds=12.5, fit_level_match=False)
    text = c.to_json()
    assert DeviceSpaceConfig.from_json(text) == c
    assert json.loads(text)["fit_grid"] == [0.2, 0.8]
    d = c.to_dict()
    d["embed_size"] = 3
    with pytest.raises(ConfigError, match="embed_size"):
        DeviceSpaceConfig.from_dict(d)
    with pytest.raises(ConfigError, match="not JSON"):
        DeviceSpaceConfig.from_json("{oops")
    with pytest.raises(ConfigError, match="fit_grid"):
        DeviceSpaceConfig(fit_grid=(0.0, 0.5))


def one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_bad_inputs_raise_one_line_config_errors(fitted, tmp_path):
    w, data, config, _, _ = fitted
    with pytest.raises(ConfigError) as exc:
        fit_knobs(w, data, DeviceSpaceConfig(embed_dim=3))
    assert "embed_dim=2" in one_line(exc)
    other = data_folder(tmp_path, "slow", w, KNOBS, rate=22050)
    with pytest.raises(ConfigError) as exc:
        fit_knobs(w, other, config)
    msg = one_line(exc)
    assert str(other) in msg and "22050 Hz" in msg and "--rate 44100" in msg
    with pytest.raises(ConfigError) as exc:
        train_device_space({"a": data, "b": other}, DeviceSpaceConfig(embed_dim=2, hidden_size=4))
    assert "--rate 44100" in one_line(exc)
    with pytest.raises(ConfigError) as exc:
        fit_knobs(w, data, config, starts=[(0.5,)])
    assert "2 values" in one_line(exc)


def test_training_learns_two_devices_and_resumes(tmp_path):
    torch.set_num_threads(1)
    w = conditioned(seed=5, hidden=4)
    folders = {n: data_folder(tmp_path, n, w, k, seconds=3.0) for n, k in (("lo", (0.1, 0.2)), ("hi", (0.9, 0.8)))}
    config = DeviceSpaceConfig(embed_dim=2, hidden_size=4, max_epochs=1, batch_size=8)
    work = tmp_path / "work"
    r1 = train_device_space(folders, config, work, log=lambda m: None)
    assert (work / CHECKPOINT).exists() and r1.epochs == 1 and r1.best_epoch == 1
    assert r1.weights.config.input_size == 3 and r1.names == ["lo", "hi"]
    assert r1.embeddings.shape == (2, 2) and np.all((r1.embeddings > 0) & (r1.embeddings < 1))
    lines = []
    with pytest.raises(ConfigError, match="other devices or settings"):
        train_device_space(folders, DeviceSpaceConfig(embed_dim=2, hidden_size=4, max_epochs=2, batch_size=4),
                           work, log=lines.append)
    import dataclasses

    r2 = train_device_space(folders, dataclasses.replace(config, max_epochs=2), work, log=lines.append)
    assert lines[0].startswith("resumed at epoch 1") and r2.epochs == 2
    assert r2.history[0] == r1.history[0]
    # Folding a training device's embedding gives that device's model exactly as trained.
    x = plucked_notes(1.0, seed=3).astype(np.float32)
    for d in range(2):
        k = r2.embeddings[d]
        np.testing.assert_allclose(render_sequential(fold_knobs(r2.weights, k), x), render_sequential(r2.weights, x, k),
                                   atol=1e-5)


def test_level_matched_fit_sees_what_the_trainer_starts_from(fitted, tmp_path):
    """A device whose dense path is the model's at -0.5 x level plus an offset (another level,
    inverted polarity): the trainer's start match undoes exactly that, so the matched fit must
    still find the knobs, and its matched ESR is the trainer's ``match_level('gain')`` ESR."""
    from ampxfer_lib.data.dataset import load_dataset
    from ampxfer_lib.transfer.device_space import _score
    from ampxfer_lib.transfer.level_match import Stretches, match_level

    w, _, _, _, _ = fitted
    params = dict(w.params)
    params["lin.weight"] = params["lin.weight"] * -0.5
    params["lin.bias"] = params["lin.bias"] * -0.5 + 0.01
    data = data_folder(tmp_path, "quiet", ModelWeights(w.config, params), KNOBS)
    config = DeviceSpaceConfig(embed_dim=2, fit_epochs=5, fit_lr=0.08, fit_level_match=True)
    fit = fit_knobs(w, data, config)
    assert fit.esr > 0.1  # unmatched, the model is far off ...
    assert fit.esr_level_matched < 1e-3  # ... matched, it is the device
    assert np.linalg.norm(np.array(fit.knobs) - KNOBS) < 0.05

    sec = load_dataset(data).split("train", "limited")[0]
    n = 8820
    x = sec.input[: 4 * n, :1].reshape(4, n, 1)
    y = sec.target[: 4 * n].reshape(4, n)
    trainer = match_level(fold_knobs(w, fit.knobs), Stretches(x, y, 200), "gain")[1]["esr_after"]
    emb = EmbeddedLSTM(AmpLSTM.from_weights(w), logit(fit.knobs)[None])
    ours = _score(emb, torch.from_numpy(np.ascontiguousarray(x.transpose(1, 2, 0))),
                  torch.from_numpy(np.ascontiguousarray(y.T)), 200)["esr_level_matched"]
    assert ours == pytest.approx(trainer, rel=1e-3, abs=1e-9)  # float32 LSTM paths differ in rounding only
