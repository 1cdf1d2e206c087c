import json

import numpy as np
import pytest
import soundfile as sf

from ampxfer_lib.cli.main import main
from ampxfer_lib.transfer.conditioning import (di_excerpt, knob_label, knob_table, realdata_dir, render_knob_captures,
                                      synthetic_di, virtual_drive)
from ampxfer_lib.data.dataset import load_dataset
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.model.network import new_model
from ampxfer_lib.model.weights import ModelConfig
from ampxfer_lib.model.render import render

from conftest import plucked_notes


def _clips(folder, lengths, rate=48000):
    paths = []
    for i, seconds in enumerate(lengths):
        p = folder / f"clip{i}.flac"
        sf.write(p, plucked_notes(seconds, rate, seed=i), rate, subtype="PCM_24")
        paths.append(p)
    return paths


def test_di_excerpt_puts_a_piece_of_every_clip_in_each_split(tmp_path):
    from ampxfer_lib.data.audio import read_audio, resample

    paths = _clips(tmp_path, [3.0, 2.5, 4.0])
    di = di_excerpt(paths, rate=44100, seconds_per_clip=2.0, skip_seconds=0.25)
    n = 2 * 44100
    n_val = n_test = int(round(n * 0.15))
    n_train = n - n_val - n_test
    assert len(di.audio) == 3 * n and di.audio.dtype == np.float32
    assert di.val_seconds == 3 * n_val / 44100 and di.test_seconds == 3 * n_test / 44100
    windows = []
    for p in paths:
        clip = read_audio(p)
        windows.append(resample(clip.samples, clip.sample_rate, 44100)[11025:11025 + n].astype(np.float32))
    train = np.concatenate([w[:n_train] for w in windows])
    val = np.concatenate([w[n_train:n_train + n_val] for w in windows])
    test = np.concatenate([w[n_train + n_val:] for w in windows])
    np.testing.assert_array_equal(di.audio, np.concatenate([train, val, test]))


def test_di_excerpt_refuses_short_clips_and_bad_fractions(tmp_path):
    paths = _clips(tmp_path, [1.0])
    with pytest.raises(ConfigError, match="too short for a 2.0 s excerpt"):
        di_excerpt(paths, seconds_per_clip=2.0)
    with pytest.raises(ConfigError, match="leave room for training"):
        di_excerpt(paths, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match="no DI clips"):
        di_excerpt([])


def test_rendered_captures_prepare_into_a_conditioned_data_set(tmp_path):
    x = synthetic_di(6.0, seed=1)
    spec = render_knob_captures(virtual_drive, x, [0.0, 0.5, 1.0], tmp_path / "renders", rate=44100,
                                name="drive", knob_names=["gain"])
    obj = json.loads(spec.read_text())
    assert obj["input"] == "di.wav" and obj["knob_names"] == ["gain"]
    assert [c["knobs"] for c in obj["captures"]] == [[0.0], [0.5], [1.0]]
    assert obj["captures"][1]["target"] == "drive_k0.50.wav"
    y, rate = sf.read(tmp_path / "renders" / "drive_k1.00.wav", dtype="float32")
    assert rate == 44100 and np.array_equal(y, virtual_drive(x, 1.0))
    # The spec is what `prepare --conditioned` reads.
    assert main(["prepare", "--conditioned", str(spec), "--out", str(tmp_path / "data"), "--align", "off",
                 "--val-seconds", "1", "--test-seconds", "1", "--holdout-knob", "0.5"]) == 0
    data = load_dataset(tmp_path / "data")
    assert data.input_size == 2
    assert [s.knobs for s in data.split("train")] == [(0.0,), (1.0,)]
    assert [s.knobs for s in data.split("test")] == [(0.0,), (0.5,), (1.0,)]
    assert np.all(data.split("val")[1].input[:, 1] == 1.0)


def test_renders_are_reused_and_models_render_exactly(tmp_path):
    model = new_model(ModelConfig(input_size=2, hidden_size=6), seed=0).weights()
    x = synthetic_di(1.0, seed=2)
    spec = render_knob_captures(model, x, [0.2, 0.8], tmp_path, rate=44100, name="m")
    target = tmp_path / "m_k0.80.wav"
    y, _ = sf.read(target, dtype="float32")
    assert np.array_equal(y, render(model, x, [0.8]))
    stamp = target.stat().st_mtime_ns
    assert render_knob_captures(model, x, [0.2, 0.8], tmp_path, rate=44100, name="m") == spec
    assert target.stat().st_mtime_ns == stamp  # nothing rendered again
    other = new_model(ModelConfig(input_size=2, hidden_size=6), seed=1).weights()
    render_knob_captures(other, x, [0.2, 0.8], tmp_path, rate=44100, name="m")
    assert np.array_equal(sf.read(target, dtype="float32")[0], render(other, x, [0.8]))


def test_render_refuses_mismatched_models(tmp_path):
    model = new_model(ModelConfig(input_size=2, hidden_size=4), seed=0).weights()
    with pytest.raises(ConfigError, match="has 1 knob"):
        render_knob_captures(model, np.zeros(100, np.float32), [(0.1, 0.2)], tmp_path, rate=44100)
    with pytest.raises(ConfigError, match="runs at 44100 Hz but the DI is at 48000 Hz"):
        render_knob_captures(model, np.zeros(100, np.float32), [0.1], tmp_path, rate=48000)
    with pytest.raises(ConfigError, match="sample rate"):
        render_knob_captures(model, np.zeros(100, np.float32), [0.1], tmp_path)


def test_virtual_drive_knob_and_state():
    x = synthetic_di(2.0, seed=3)
    clean, dirty = virtual_drive(x, 0.0), virtual_drive(x, 1.0)
    assert np.all(np.isfinite(dirty)) and np.max(np.abs(dirty)) < 0.5
    # More gain, more distortion: the level-matched difference from the clean setting grows.
    g = np.dot(clean, dirty) / np.dot(clean, clean)
    assert np.sum((dirty - g * clean) ** 2) / np.sum(dirty ** 2) > 0.05
    # The input high-pass is stateful: a held DC input dies away to silence.
    dc = virtual_drive(np.full(88200, 0.5), 1.0)
    assert abs(dc[200]) > 0.05 and abs(dc[-1]) < 1e-4
    with pytest.raises(ConfigError, match="0..1"):
        virtual_drive(x, 1.5)


def test_synthetic_di_is_deterministic_and_normalised():
    a, b = synthetic_di(1.5, seed=4), synthetic_di(1.5, seed=4)
    assert a.shape == (66150,) and np.array_equal(a, b)
    assert np.max(np.abs(a)) == pytest.approx(0.5, abs=1e-7)
    assert not np.array_equal(a, synthetic_di(1.5, seed=5))


def test_knob_table_and_label():
    result = {"test_esr": 0.1, "captures": [
        {"capture": 2, "knobs": [1.0], "esr": 0.3, "seconds": 1.0},
        {"capture": 0, "knobs": [0.0], "esr": 0.1, "seconds": 1.0},
        {"capture": 1, "knobs": [0.5], "esr": 0.2, "seconds": 1.0}]}
    rows = knob_table(result, holdout=0.5)
    assert [r["knobs"] for r in rows] == [[0.0], [0.5], [1.0]]
    assert [r["held_out"] for r in rows] == [False, True, False]
    assert knob_label((0.25, 1)) == "0.25_1.00"


def test_realdata_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AMPXFER_REALDATA", str(tmp_path))
    assert realdata_dir() == tmp_path
    monkeypatch.setenv("AMPXFER_REALDATA", str(tmp_path / "absent"))
    assert realdata_dir() is None


def test_virtual_knob_dataset_and_a_snapshot_from_one_capture(tmp_path):
    from ampxfer_lib.transfer.conditioning import prepare_knob_dataset, train_snapshot

    ds = prepare_knob_dataset("virtual", [0.0, 0.5, 1.0], tmp_path, holdout=0.5, seconds_per_clip=0.5)
    assert ds.kind == "virtual" and ds.snapshot is None and not ds.flipped
    data = load_dataset(ds.data)
    assert data.input_size == 2 and data.manifest["captures"][1]["holdout"]
    # 4 s per knob value: 15 % validation and test each from the end of every capture.
    assert data.seconds("val") == pytest.approx(2 * 0.6, abs=1e-4)
    assert data.seconds("test") == pytest.approx(3 * 0.6, abs=1e-4)
    again = prepare_knob_dataset("virtual", [0.0, 0.5, 1.0], tmp_path, holdout=0.5, seconds_per_clip=0.5)
    assert again.data == ds.data and (ds.data / "manifest.json").read_bytes() == (again.data / "manifest.json").read_bytes()
    model = train_snapshot(ds, 1.0, tmp_path / "snap", hidden_size=4, max_epochs=1)
    snap = load_dataset(tmp_path / "snap" / "data")
    assert snap.input_size == 1 and model.exists()
    y, _ = sf.read(ds.spec.parent / "virtual_k1.00.wav", dtype="float32")
    n = len(snap.split("train")[0].target)
    np.testing.assert_allclose(snap.split("train")[0].target, y[:n], atol=1e-7)
    with pytest.raises(ConfigError, match="no capture at knob 0.3"):
        train_snapshot(ds, 0.3, tmp_path / "snap2")


def test_real_knob_dataset_matches_the_snapshot_polarity(tmp_path):
    from ampxfer_lib.transfer.conditioning import prepare_knob_dataset

    from conftest import realdata_or_skip

    realdata_or_skip()
    ds = prepare_knob_dataset("TS9", [0.0, 1.0], tmp_path, seconds_per_clip=0.5)
    # The shared TS9_FullD snapshot has the opposite polarity of the TS9 knob capture.
    assert ds.kind == "real" and ds.snapshot.name == "TS9_FullD.json"
    assert ds.snapshot_correlation < -0.5 and ds.flipped and ds.data.name == "TS9_flipped"
    data = load_dataset(ds.data)
    assert data.manifest["config"]["flip_polarity"] is True and data.manifest["config"]["align"] == "off"
    y, _ = sf.read(ds.spec.parent / "TS9_k1.00.wav", dtype="float32")
    train = data.split("train")[1]
    np.testing.assert_allclose(train.target, -y[:train.samples], atol=1e-7)
    plain = prepare_knob_dataset("TS9", [0.0, 1.0], tmp_path, seconds_per_clip=0.5, flip=False)
    assert plain.data.name == "TS9" and not plain.flipped
