"""Listening tools: BS.1770 loudness, matching, null tests, clips, ABX logic and widget."""

import csv
import io
import math

import numpy as np
import pytest
import soundfile as sf

from ampxfer_lib.notebooks import listening
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.model.network import new_model
from ampxfer_lib.model.weights import ModelConfig
from ampxfer_lib.model.render import render


def sine(freq, seconds, rate, amp=1.0):
    t = np.arange(int(seconds * rate)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def test_k_weighting_at_48k_is_the_published_filter():
    (b1, a1), (b2, a2) = listening.k_weighting(48000)
    # ITU-R BS.1770-4, tables 1 and 2.
    np.testing.assert_allclose(b1, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-9)
    np.testing.assert_allclose(a1, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-9)
    np.testing.assert_allclose(b2, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(a2, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-9)


@pytest.mark.parametrize("rate", [44100, 48000])
def test_full_scale_997_hz_sine_is_minus_3_01_lufs(rate):
    # BS.1770: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS.
    assert listening.integrated_loudness(sine(997, 5, rate), rate) == pytest.approx(-3.01, abs=0.02)


def test_loudness_follows_gain_exactly():
    x = sine(440, 3, 44100, 0.3) + sine(3000, 3, 44100, 0.1)
    l0 = listening.integrated_loudness(x, 44100)
    assert listening.integrated_loudness(0.1 * x, 44100) == pytest.approx(l0 - 20.0, abs=1e-9)


def test_gating_ignores_silence_and_quiet_passages():
    rate = 48000
    loud = sine(997, 10, rate)
    # Ungated, 10 s of silence would halve the mean power (-3 dB); the gates drop it.
    assert listening.integrated_loudness(np.concatenate([loud, np.zeros(10 * rate)]), rate) == pytest.approx(-3.01, abs=0.2)
    # -40 dB is far below the relative gate (10 LU under the gated level).
    quiet = sine(997, 10, rate, 0.01)
    assert listening.integrated_loudness(np.concatenate([loud, quiet]), rate) == pytest.approx(-3.01, abs=0.2)
    assert listening.integrated_loudness(np.zeros(rate), rate) == -math.inf
    assert listening.integrated_loudness(np.zeros(0), rate) == -math.inf


def test_short_clip_is_one_block():
    rate = 48000
    x = sine(997, 0.2, rate)
    assert listening.integrated_loudness(x, rate) == pytest.approx(-3.01, abs=0.1)


def test_loudness_gains_match_levels_exactly():
    rate = 44100
    clips = {"a": sine(500, 2, rate, 0.5), "b": sine(500, 2, rate, 0.05), "silent": np.zeros(rate)}
    gains, level = listening.loudness_gains(clips, rate, target_lufs=-20.0)
    assert gains["b"] / gains["a"] == pytest.approx(10.0, rel=1e-9)
    assert gains["silent"] == 1.0
    assert level == -20.0
    matched = listening.match_loudness(clips, rate, target_lufs=-20.0)
    assert listening.integrated_loudness(matched["a"], rate) == pytest.approx(-20.0, abs=1e-4)
    assert listening.integrated_loudness(matched["b"], rate) == pytest.approx(-20.0, abs=1e-4)


def test_loudness_gains_lower_everything_to_keep_peaks_under_the_ceiling():
    rate = 44100
    spiky = np.zeros(2 * rate)
    spiky[:: rate // 10] = 0.5  # a click train: loud peaks, little loudness
    clips = {"spiky": spiky, "sine": sine(500, 2, rate, 0.1)}
    gains, level = listening.loudness_gains(clips, rate, target_lufs=-10.0, ceiling_dbfs=-1.0)
    assert level < -10.0
    matched = listening.match_loudness(clips, rate, target_lufs=-10.0, ceiling_dbfs=-1.0)
    assert np.max(np.abs(matched["spiky"])) == pytest.approx(10 ** (-1 / 20), rel=1e-5)
    assert listening.integrated_loudness(matched["sine"], rate) == pytest.approx(level, abs=1e-3)
    assert listening.integrated_loudness(matched["spiky"], rate) == pytest.approx(level, abs=1e-3)


def test_players_are_matched_and_not_normalised():
    rate = 44100
    players = listening.players({"quiet": sine(500, 1, rate, 0.01), "loud": sine(500, 1, rate, 3.0)}, rate)
    peaks = {}
    for name, player in players.items():
        y, r = sf.read(io.BytesIO(player.data))
        assert r == rate
        peaks[name] = np.max(np.abs(y))
    # both at the same level (a browser normalising would also give this, but then 0 dBFS)
    assert peaks["quiet"] == pytest.approx(peaks["loud"], abs=2 / 32768)
    level = listening.loudness_gains({"x": sine(500, 1, rate)}, rate)[1]
    expected = 10 ** ((level - listening.integrated_loudness(sine(500, 1, rate), rate)) / 20)
    assert peaks["loud"] == pytest.approx(expected, abs=2 / 32768)
    assert peaks["loud"] < 0.99
    html = listening.player_table({"a": sine(500, 1, rate, 0.1)}, rate, caption="c & d").data
    assert "<audio" in html and "c &amp; d" in html


def test_null_test_and_esr():
    rate = 44100
    t = sine(300, 1, rate, 0.5)
    diff, level = listening.null_test(t, 0.9 * t)
    np.testing.assert_allclose(diff, 0.1 * t, atol=1e-7)
    assert level == pytest.approx(-20.0, abs=1e-9)
    assert listening.esr(pred=0.9 * t, target=t) == pytest.approx(0.01, rel=1e-9)
    assert listening.null_test(t, t)[1] == -math.inf
    assert listening.esr(pred=t, target=t) == 0.0
    with pytest.raises(ValueError):
        listening.null_test(t, t[:-1])
    rows = listening.esr_rows({"c1": t, "c2": 2 * t}, {"m": {"c1": 0.9 * t, "c2": 0.0 * t}})
    assert rows == [{"clip": "c1", "m": pytest.approx(0.01)}, {"clip": "c2", "m": pytest.approx(1.0)}]
    assert "-20.0 dB" in listening.null_table(t, {"m": 0.9 * t}, rate).data


def test_pick_clips_takes_the_loudest_windows_in_time_order():
    rate = 1000
    x = np.full(10 * rate, 0.01)
    x[7000:8000] = 0.9
    x[2000:3000] = 0.5
    x[2500] = 1.0
    assert listening.pick_clips(x, rate, seconds=1.0, count=2) == [(2000, 3000), (7000, 8000)]
    assert listening.pick_clips(x, rate, seconds=1.0, count=1) == [(7000, 8000)]
    assert listening.pick_clips(x[:500], rate, seconds=1.0) == [(0, 500)]


def test_render_clip_matches_rendering_the_whole_file():
    w = new_model(ModelConfig(), seed=1).weights()
    x = sine(220, 0.5, 44100, 0.4).astype(np.float32)
    whole = render(w, x)
    np.testing.assert_allclose(listening.render_clip(w, x, 1000, 5000, warmup=2000), whole[1000:5000], atol=1e-5)
    assert listening.render_clip(w, x, 3000, 5000, warmup=100).shape == (2000,)


def test_abx_trials_are_seeded_and_balanced_over_identities():
    t1 = listening.abx_trials(("scratch", "transfer"), ["c1", "c2", "c3"], 40, seed=7)
    assert t1 == listening.abx_trials(("scratch", "transfer"), ["c1", "c2", "c3"], 40, seed=7)
    assert t1 != listening.abx_trials(("scratch", "transfer"), ["c1", "c2", "c3"], 40, seed=8)
    assert [t.index for t in t1] == list(range(1, 41))
    assert [t.clip for t in t1[:4]] == ["c1", "c2", "c3", "c1"]
    for t in t1:
        assert {t.a, t.b} == {"scratch", "transfer"}
        assert t.x in ("A", "B")
        assert t.x_model == (t.a if t.x == "A" else t.b)
    # both orders and both answers occur (40 fair coin flips each)
    assert {t.a for t in t1} == {"scratch", "transfer"} and {t.x for t in t1} == {"A", "B"}
    with pytest.raises(ConfigError):
        listening.abx_trials(("a", "a"), ["c"], 3)
    with pytest.raises(ConfigError):
        listening.abx_trials(("a", "b"), [], 3)


def test_binomial_p_value_closed_forms():
    assert listening.binomial_p_value(5, 5) == 1 / 32
    assert listening.binomial_p_value(0, 7) == 1.0
    assert listening.binomial_p_value(8, 10) == (45 + 10 + 1) / 1024
    assert listening.binomial_p_value(9, 12) == (220 + 66 + 12 + 1) / 4096
    with pytest.raises(ValueError):
        listening.binomial_p_value(4, 3)
    s = listening.abx_score([True] * 9 + [False] * 3)
    assert (s.correct, s.answered) == (9, 12) and s.p_value == pytest.approx(299 / 4096)
    assert "not distinguishable" in s.summary()
    assert "you hear a difference" in listening.abx_score([True] * 10).summary()
    assert listening.abx_score([]).summary() == "no answers yet"


def test_abx_session_records_answers_to_csv(tmp_path):
    trials = listening.abx_trials(("scratch", "transfer"), ["c1"], 4, seed=0)
    path = tmp_path / "runs" / "abx.csv"
    s = listening.AbxSession(trials, path, listener="me", session="s1")
    answers = [t.x for t in trials[:3]] + ["B" if trials[3].x == "A" else "A"]
    assert [s.answer(a) for a in answers] == [True, True, True, False]
    assert s.done and s.current is None
    with pytest.raises(ConfigError, match="finished"):
        s.answer("A")
    rows = list(csv.DictReader(path.open()))
    assert [r["correct"] for r in rows] == ["1", "1", "1", "0"]
    assert rows[0]["listener"] == "me" and rows[0]["session"] == "s1"
    assert [r["x"] for r in rows] == [t.x for t in trials]
    assert s.score().correct == 3 and s.score().p_value == pytest.approx(5 / 16)
    assert [r["X"] for r in s.reveal()] == [t.x_model for t in trials]
    # a second session appends; the file scores both, or one
    s2 = listening.AbxSession(trials[:1], path, session="s2")
    s2.answer(trials[0].x)
    assert listening.score_file(path).answered == 5
    assert listening.score_file(path, session="s2").correct == 1
    with pytest.raises(ConfigError):
        s2.answer("C")


def test_abx_session_refuses_a_foreign_csv(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="not an ampxfer ABX answers file"):
        listening.AbxSession(listening.abx_trials(("a", "b"), ["c"], 1), path)
    assert path.read_text() == "a,b\n1,2\n"


def test_abx_widget_hides_identities_and_plays_the_right_sound(tmp_path):
    pytest.importorskip("ipywidgets")
    rate = 8000
    sounds = {("c1", "scratch"): sine(300, 0.2, rate, 0.2), ("c1", "transfer"): sine(600, 0.2, rate, 0.2)}
    trials = listening.abx_trials(("scratch", "transfer"), ["c1"], 3, seed=1)
    w = listening.AbxWidget(listening.AbxSession(trials, tmp_path / "abx.csv"), sounds, rate)
    for t in trials:
        assert "scratch" not in w.status.value and "transfer" not in w.status.value
        assert w.players["X"].value == w.players[t.x].value
        assert w.players["A"].value == w._wav[("c1", t.a)]
        w.choose(t.x)
    assert w.buttons["A"].disabled and "3 of 3 right" in w.status.value
    assert "scratch" in w.result.value and "transfer" in w.result.value
    with pytest.raises(ConfigError, match="no sound"):
        listening.AbxWidget(listening.AbxSession(trials, tmp_path / "abx2.csv"), {("c1", "scratch"): sounds[("c1", "scratch")]}, rate)
