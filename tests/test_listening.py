"""Listening tools: BS.1770 loudness, matching, null tests, clips, ABX logic and widgets."""

import base64
import io
import math
import re

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


def embedded_audio(element):
    """(audio, rate, mime) of the data URI in an <audio> element's HTML."""
    m = re.search(r'src="data:(audio/[a-z]+);base64,([A-Za-z0-9+/=]+)"', element)
    y, r = sf.read(io.BytesIO(base64.b64decode(m.group(2))))
    return y, r, m.group(1)


def test_players_are_matched_lossless_flac_and_not_normalised():
    rate = 44100
    players = listening.players({"quiet": sine(500, 1, rate, 0.01), "loud": sine(500, 1, rate, 3.0)}, rate)
    peaks = {}
    for name, player in players.items():
        y, r, mime = embedded_audio(player)
        assert (r, mime, len(y)) == (rate, "audio/flac", rate)
        peaks[name] = np.max(np.abs(y))
    # both at the same level (a browser normalising would also give this, but then 0 dBFS)
    assert peaks["quiet"] == pytest.approx(peaks["loud"], abs=2 / 32768)
    level = listening.loudness_gains({"x": sine(500, 1, rate)}, rate)[1]
    expected = 10 ** ((level - listening.integrated_loudness(sine(500, 1, rate), rate)) / 20)
    assert peaks["loud"] == pytest.approx(expected, abs=2 / 32768)
    assert peaks["loud"] < 0.99
    html = listening.player_table({"a": sine(500, 1, rate, 0.1)}, rate, caption="c & d").data
    assert html.count("<audio") == 1 and "c &amp; d" in html
    # the table is a group whose players pause each other
    assert f"<table class='{listening.PLAYER_GROUP_CLASS}'>" in html
    assert f"onplay=\"var g=this.closest(&#x27;.{listening.PLAYER_GROUP_CLASS}&#x27;)" in html
    assert "onerror=\"if(this.error&amp;&amp;this.error.code===2&amp;&amp;!this.dataset.reloaded)" in html


def test_encode_audio_is_lossless_16_bit_and_smaller_than_wav():
    rate = 44100
    x = np.round(sine(220, 1, rate, 0.5) * 32767) / 32768  # exactly representable in 16 bits
    flac = listening.encode_audio(x, rate)
    wav = listening.encode_audio(x, rate, "wav")
    for data in (flac, wav):
        y, r = sf.read(io.BytesIO(data))
        assert r == rate
        np.testing.assert_array_equal(y, x)
    assert flac[:4] == b"fLaC" and wav[:4] == b"RIFF"
    assert len(flac) < len(wav) / 3
    y, _ = sf.read(io.BytesIO(listening.encode_audio(np.array([2.0, -2.0]), rate)))
    np.testing.assert_array_equal(y, [32767 / 32768, -1.0])  # clipped, not wrapped
    with pytest.raises(ConfigError, match="audio format 'ogg'"):
        listening.encode_audio(x, rate, "ogg")


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
    table = listening.null_table(t, {"m": 0.9 * t}, rate).data
    assert "target - m (-20.0 dB)" in table and table.count("<audio") == 2


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


def test_knob_note_names_the_setting():
    assert listening.knob_note(0.5, "gain", [0.0, 1.0], 0.5) == "gain 0.5: held out of training (the model never heard this setting)"
    assert listening.knob_note(1.0, "gain", [0.0, 1.0], 0.5) == "gain 1: a trained setting"
    assert listening.knob_note(0.25, "gain", [0.0, 1.0], 0.5) == "gain 0.25: between trained settings"
    assert listening.knob_note(0.25, "drive") == "drive 0.25"


def test_knob_player_renders_each_setting_once_and_keeps_the_position(tmp_path):
    pytest.importorskip("ipywidgets")
    rate = 8000
    calls = []

    def sound(k):
        return sine(200, 0.5, rate, 0.1 + 0.5 * k)

    def render_at(k):
        calls.append(k)
        return sound(k)

    p = listening.KnobPlayer(render_at, rate, knob="gain", value=0.5, held_out=0.5, trained=[0.0, 1.0])
    assert calls == [0.5]
    assert p.slider.description == "gain" and p.slider.value == 0.5
    assert p.note.value == "gain 0.5: held out of training (the model never heard this setting)"
    assert p.legend.value == "<small>trained at gain = 0, 1; held out of training: 0.5</small>"
    y, r, mime = embedded_audio(p.player.value)
    assert (r, mime) == (rate, "audio/flac")
    np.testing.assert_allclose(y, sound(0.5), atol=1 / 32768)
    first = p.player.value
    assert ' loop data-knob="0.5"' in first
    # the position memory is keyed per player and survives the element being replaced
    assert f"(window.ampxferKnob=window.ampxferKnob||{{}})[&#x27;{p.key}&#x27;]" in first
    assert "onloadedmetadata=" in first and "this.currentTime=s.t" in first
    # a network error gets one reload, other errors stand
    assert "onerror=\"if(this.error&amp;&amp;this.error.code===2&amp;&amp;!this.dataset.reloaded)" in first
    p.slider.value = 1.0
    assert calls == [0.5, 1.0]
    assert p.note.value == "gain 1: a trained setting" and p.player.value != first
    np.testing.assert_allclose(embedded_audio(p.player.value)[0], sound(1.0), atol=1 / 32768)
    p.slider.value = 0.5
    assert p.player.value == first and calls == [0.5, 1.0]  # from the cache, not rendered again
    p.looping.value = False
    assert " loop " not in p.player.value and 'data-knob="0.5"' in p.player.value
    assert p._repr_mimebundle_()["text/plain"] == listening.KnobPlayer.HINT
    assert "ampxfer-knob" in p.box._dom_classes


def _hold_then_write(folder, acquired, marker):
    from ampxfer_lib.folders import FolderLock

    with FolderLock(folder, "listening clips"):
        acquired.set()
        import time

        time.sleep(0.5)
        (folder / marker).write_text("written while holding the folder")


def test_write_clips_writes_every_sound_and_null_test_and_waits_for_the_folders_holder(tmp_path):
    import multiprocessing

    import soundfile as sf

    from ampxfer_lib.folders import LOCK

    rate = 8000
    t, m = sine(220, 0.5, rate, 0.5), sine(220, 0.5, rate, 0.25)
    clips = {"clip 1, 0.0 s": {"input": m, "target": t, "scratch": m},
             "clip 2, 3.0 s": {"input": m, "target": t, "scratch": t}}
    folder = tmp_path / "listening" / "amp_full"
    folder.mkdir(parents=True)
    ctx = multiprocessing.get_context("fork")
    acquired = ctx.Event()
    other = ctx.Process(target=_hold_then_write, args=(folder, acquired, "other_kernel.txt"))
    other.start()
    assert acquired.wait(30)
    written = listening.write_clips(folder, clips, ["scratch"], rate)
    # it waited for the other kernel: that one's last write, made while holding, is there
    assert (folder / "other_kernel.txt").exists()
    other.join(30)
    names = ["input", "target", "scratch", "null_scratch"]
    assert [p.name for p in written] == [f"clip{i}_{k}.wav" for i in (1, 2) for k in names]
    assert sorted(p.name for p in folder.iterdir()) == sorted([p.name for p in written] + ["other_kernel.txt"])
    assert not (folder / LOCK).exists()
    null1, r = sf.read(folder / "clip1_null_scratch.wav")
    assert r == rate
    np.testing.assert_allclose(null1, t - m, atol=1e-6)
    null2, _ = sf.read(folder / "clip2_null_scratch.wav")
    assert np.abs(null2).max() == 0.0  # target - itself
