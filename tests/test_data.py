import json
import os

import numpy as np
import pytest
import soundfile as sf

from ampxfer_lib.data.dataset import load_dataset, segment, spread_spans, stack_sequences
from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare, read_conditioned_spec
from ampxfer_lib.errors import AudioError, ConfigError

from conftest import file_hashes, plucked_notes, toy_device, write_pair

RATE = 44100
SMALL = dict(val_seconds=1.5, test_seconds=1.0, limited_seconds=2.0)


def one(xin, tgt):
    return [CaptureSpec((str(xin),), (str(tgt),))]


def test_splits_are_exact_and_in_time_order(tmp_path):
    xin, tgt = write_pair(tmp_path / "rec", seconds=8.0, subtype="FLOAT")
    m = prepare(one(xin, tgt), tmp_path / "d", PrepareConfig(align="off", **SMALL))
    n = 8 * RATE
    n_val, n_test = int(1.5 * RATE), RATE
    files = {s: m["splits"][s]["files"][0] for s in ("train", "val", "test")}
    assert [files[s]["samples"] for s in ("train", "val", "test")] == [n - n_val - n_test, n_val, n_test]
    assert m["subsets"]["limited"]["train_seconds"] == 2.0
    # the splits are consecutive pieces of the recording, training first
    x, _ = sf.read(xin, dtype="float32")
    joined = np.concatenate([sf.read(tmp_path / "d" / files[s]["input"], dtype="float32")[0] for s in ("train", "val", "test")])
    assert np.array_equal(joined, x)
    ds = load_dataset(tmp_path / "d")
    assert ds.input_size == 1 and ds.sample_rate == RATE
    assert ds.split("train", "limited")[0].samples == 2 * RATE
    assert ds.split("val")[0].input.shape == (n_val, 1)
    assert m["captures"][0]["pairs"][0]["input"]["sha256"] == file_hashes(xin)[str(xin)]


def test_spread_spans_closed_form():
    # 100 samples of 4-sample segments, 24 wanted in pieces of 8: three pieces of two segments;
    # 25 segments, the last start slot 23, so starts 0, 11.5 -> 12 (round half to even), 23
    assert spread_spans(100, 24, 4, 8) == [(0, 8), (48, 56), (92, 100)]
    # the benchmark's case: 125.15 s at 44.1 kHz, 30 s in 5 s pieces of 0.5 s segments
    total, seg = 44100 * 125 + 6615, 22050
    spans = spread_spans(total, 30 * 44100, seg, 5 * 44100)
    assert [b - a for a, b in spans] == [10 * seg] * 6 and all(a % seg == 0 for a, _ in spans)
    assert spans[0][0] == 0 and total - seg < spans[-1][1] <= total
    assert all(b <= c for (_, b), (c, _) in zip(spans, spans[1:]))
    assert spread_spans(50, 60, 4, 8) == [(0, 50)]  # shorter than wanted: all of it
    assert spread_spans(100, 10, 4, 8) == [(0, 8)]  # one piece: round(10 / 8) = 1, two segments


def test_spread_subset_joins_the_pieces_of_the_training_audio(tmp_path, monkeypatch):
    xin, tgt = write_pair(tmp_path / "rec", seconds=8.0, subtype="FLOAT")
    prepare(one(xin, tgt), tmp_path / "d", PrepareConfig(align="off", **SMALL))
    ds = load_dataset(tmp_path / "d")
    (train,) = ds.split("train")  # 5.5 s: 11 segments; 2 s wanted in pieces of 5 s: one piece, 4 segments
    (spread,) = ds.split("train", "spread")
    assert spread.samples == 2 * RATE
    assert np.array_equal(spread.input, train.input[:2 * RATE])
    import ampxfer_lib.data.dataset as dataset_module
    monkeypatch.setattr(dataset_module, "SPREAD_PIECE_SECONDS", 0.5)  # four pieces of one segment:
    (spread,) = load_dataset(tmp_path / "d").split("train", "spread")  # starts 0, 3.33, 6.67, 10
    half = RATE // 2
    want = np.concatenate([train.target[a * half:(a + 1) * half] for a in (0, 3, 7, 10)])
    assert np.array_equal(spread.target, want)
    with pytest.raises(ConfigError, match="subset"):
        ds.split("train", "middle")


def test_latency_is_removed_from_the_target(tmp_path):
    xin, tgt = write_pair(tmp_path / "rec", seconds=8.0, subtype="FLOAT", delay=40)
    m = prepare(one(xin, tgt), tmp_path / "d", PrepareConfig(**SMALL))
    lat = m["captures"][0]["pairs"][0]["latency"]["samples"]
    assert 0 < lat <= 40
    ds = load_dataset(tmp_path / "d")
    y, _ = sf.read(tgt, dtype="float32")
    train = ds.split("train")[0]
    assert np.array_equal(train.target, y[lat:lat + train.samples])
    fixed = prepare(one(xin, tgt), tmp_path / "d2", PrepareConfig(align="40", **SMALL))
    assert fixed["captures"][0]["pairs"][0]["latency"]["samples"] == 40
    assert np.array_equal(load_dataset(tmp_path / "d2").split("train")[0].target, y[40:40 + train.samples])


def test_several_pairs_are_joined_with_a_quarter_second_gap(tmp_path):
    a = write_pair(tmp_path / "rec", seconds=4.0, seed=1, name="a", subtype="FLOAT")
    b = write_pair(tmp_path / "rec", seconds=5.0, seed=2, name="b", subtype="FLOAT")
    caps = [CaptureSpec((str(a[0]), str(b[0])), (str(a[1]), str(b[1])))]
    m = prepare(caps, tmp_path / "d", PrepareConfig(align="off", val_seconds=1.0, test_seconds=1.0))
    total = sum(m["splits"][s]["files"][0]["samples"] for s in ("train", "val", "test"))
    assert total == 9 * RATE + RATE // 4
    train = load_dataset(tmp_path / "d").split("train")[0].input[:, 0]
    assert np.all(train[4 * RATE:4 * RATE + RATE // 4] == 0.0)
    assert len(m["captures"][0]["pairs"]) == 2


def test_other_rates_are_resampled(tmp_path):
    xin, tgt = write_pair(tmp_path / "rec", seconds=6.0, rate=48000)
    m = prepare(one(xin, tgt), tmp_path / "d", PrepareConfig(align="off", **SMALL))
    assert m["sample_rate"] == RATE
    assert sum(m["splits"][s]["files"][0]["samples"] for s in ("train", "val", "test")) == 6 * RATE
    m48 = prepare(one(xin, tgt), tmp_path / "d48", PrepareConfig(rate=48000, align="off", **SMALL))
    assert m48["sample_rate"] == 48000


def _nothing_written(path):
    return not path.exists() or not any(path.iterdir())


def test_rate_mismatch_is_an_error_and_writes_nothing(tmp_path):
    x = plucked_notes(5.0, 48000)
    sf.write(tmp_path / "in.wav", x, 48000)
    sf.write(tmp_path / "out.wav", toy_device(plucked_notes(5.0, 44100), 44100), 44100)
    with pytest.raises(AudioError, match="44100 Hz but the input .* 48000 Hz") as info:
        prepare(one(tmp_path / "in.wav", tmp_path / "out.wav"), tmp_path / "d", PrepareConfig(**SMALL))
    assert "out.wav" in str(info.value)
    assert _nothing_written(tmp_path / "d")


def test_length_mismatch_too_short_and_silence(tmp_path):
    x = plucked_notes(6.0, RATE)
    sf.write(tmp_path / "in.wav", x, RATE)
    sf.write(tmp_path / "long.wav", np.concatenate([toy_device(x), np.zeros(RATE)]), RATE)
    with pytest.raises(AudioError, match="differ by 1.00 s"):
        prepare(one(tmp_path / "in.wav", tmp_path / "long.wav"), tmp_path / "d", PrepareConfig(**SMALL))
    sf.write(tmp_path / "silent.wav", np.zeros_like(x), RATE)
    with pytest.raises(AudioError, match="silent.wav: the target is silent"):
        prepare(one(tmp_path / "in.wav", tmp_path / "silent.wav"), tmp_path / "d", PrepareConfig(**SMALL))
    sf.write(tmp_path / "dev.wav", toy_device(x), RATE)
    with pytest.raises(AudioError, match="too short .* lower --val-seconds"):
        prepare(one(tmp_path / "in.wav", tmp_path / "dev.wav"), tmp_path / "d", PrepareConfig())
    assert _nothing_written(tmp_path / "d")


def test_bypass_and_polarity_warnings(tmp_path):
    x = plucked_notes(6.0, RATE)
    sf.write(tmp_path / "in.wav", x, RATE, subtype="FLOAT")
    sf.write(tmp_path / "same.wav", 0.8 * x, RATE, subtype="FLOAT")
    m = prepare(one(tmp_path / "in.wav", tmp_path / "same.wav"), tmp_path / "d1", PrepareConfig(**SMALL))
    assert [w["code"] for w in m["warnings"]] == ["bypass"]
    sf.write(tmp_path / "inv.wav", -toy_device(x), RATE, subtype="FLOAT")
    m = prepare(one(tmp_path / "in.wav", tmp_path / "inv.wav"), tmp_path / "d2", PrepareConfig(**SMALL))
    assert [w["code"] for w in m["warnings"]] == ["inverted_polarity"]
    m = prepare(one(tmp_path / "in.wav", tmp_path / "inv.wav"), tmp_path / "d3",
                PrepareConfig(flip_polarity=True, **SMALL))
    assert m["warnings"] == [] and m["captures"][0]["pairs"][0]["gains"]["target"] == -1.0
    y, _ = sf.read(tmp_path / "inv.wav", dtype="float64")
    lat = m["captures"][0]["pairs"][0]["latency"]["samples"]
    t = load_dataset(tmp_path / "d3").split("train")[0].target
    assert np.allclose(t, -y[lat:lat + len(t)], atol=1e-7)


def test_rerun_keeps_data_and_other_settings_need_overwrite(tmp_path):
    xin, tgt = write_pair(tmp_path / "rec", seconds=6.0)
    os.chmod(xin, 0o444)
    os.chmod(tgt, 0o444)
    before = file_hashes(xin, tgt)
    out = tmp_path / "d"
    prepare(one(xin, tgt), out, PrepareConfig(**SMALL))
    stamp = (out / "manifest.json").stat().st_mtime_ns
    prepare(one(xin, tgt), out, PrepareConfig(**SMALL))
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="--overwrite"):
        prepare(one(xin, tgt), out, PrepareConfig(val_seconds=1.0, test_seconds=1.0))
    m = prepare(one(xin, tgt), out, PrepareConfig(val_seconds=1.0, test_seconds=1.0), overwrite=True)
    assert json.loads((out / "manifest.json").read_text()) == m
    assert file_hashes(xin, tgt) == before


def test_a_folder_with_other_files_is_refused(tmp_path):
    xin, tgt = write_pair(tmp_path / "rec", seconds=6.0)
    with pytest.raises(ConfigError, match="holds other files"):
        prepare(one(xin, tgt), tmp_path / "rec", PrepareConfig(**SMALL))


def test_conditioned_spec_and_holdout(tmp_path):
    x = plucked_notes(6.0, RATE)
    sf.write(tmp_path / "di.wav", x, RATE, subtype="FLOAT")
    caps = []
    for i, g in enumerate((0.0, 0.5, 1.0)):
        sf.write(tmp_path / f"g{i}.wav", toy_device(x, drive=2 + 8 * g), RATE, subtype="FLOAT")
        caps.append({"target": f"g{i}.wav", "knobs": [g]})
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"input": "di.wav", "captures": caps, "knob_names": ["gain"]}))
    captures, names = read_conditioned_spec(spec)
    assert names == ["gain"] and [c.knobs for c in captures] == [(0.0,), (0.5,), (1.0,)]
    m = prepare(captures, tmp_path / "d", PrepareConfig(**SMALL), knob_names=names)
    assert m["input_size"] == 2 and len(m["splits"]["val"]["files"]) == 3
    ds = load_dataset(tmp_path / "d")
    val = ds.split("val")
    assert [s.knobs for s in val] == [(0.0,), (0.5,), (1.0,)]
    assert np.all(val[1].input[:, 1] == 0.5)
    vx, vy = stack_sequences(val)
    assert vx.shape == (3, int(1.5 * RATE), 2) and vy.shape == (3, int(1.5 * RATE), 1)
    held = prepare(captures, tmp_path / "h", PrepareConfig(holdout_knob=0.5, **SMALL))
    assert [f["knobs"] for f in held["splits"]["train"]["files"]] == [[0.0], [1.0]]
    assert [f["knobs"] for f in held["splits"]["test"]["files"]] == [[0.0], [0.5], [1.0]]
    with pytest.raises(ConfigError, match="no capture has that knob"):
        prepare(captures, tmp_path / "h2", PrepareConfig(holdout_knob=0.25, **SMALL))


def test_segments_never_straddle_captures():
    from ampxfer_lib.data.dataset import Section

    a = Section(np.arange(25, dtype=np.float32)[:, None], np.arange(25, dtype=np.float32), (), 0)
    b = Section(np.arange(100, 112, dtype=np.float32)[:, None], np.arange(100, 112, dtype=np.float32), (), 1)
    x, y = segment([a, b], 10)
    assert x.shape == (3, 10, 1) and y.shape == (3, 10, 1)
    assert x[:, 0, 0].tolist() == [0, 10, 100]


def test_missing_data_folder_is_explained(tmp_path):
    with pytest.raises(ConfigError, match="run `ampxfer prepare"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="not a prepared data folder"):
        load_dataset(tmp_path)


def test_lowpass_correlation_closed_form():
    from ampxfer_lib.data.prepare import lowpass_correlation

    t = np.arange(RATE) / RATE
    x = np.sin(2 * np.pi * 110 * t)
    assert lowpass_correlation(x, -0.5 * x, RATE) == pytest.approx(-1.0, abs=1e-12)
    assert lowpass_correlation(x, 3.0 * x, RATE) == pytest.approx(1.0, abs=1e-12)
    # a tone two octaves up is orthogonal to the fundamental over whole periods
    assert abs(lowpass_correlation(x, np.sin(2 * np.pi * 440 * t), RATE)) < 0.01
    assert lowpass_correlation(x, np.zeros_like(x), RATE) == 0.0
