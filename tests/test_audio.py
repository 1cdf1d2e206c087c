import math

import numpy as np
import pytest
import soundfile as sf

from ampxfer_lib.data.audio import (AudioClip, CheckConfig, check_recording, clipping_runs, peak_dbfs, read_audio,
                               resample, rms_dbfs, write_audio)
from ampxfer_lib.errors import AudioError

from conftest import plucked_notes

RATE = 44100


@pytest.mark.parametrize("fmt, subtype, tol", [
    ("WAV", "PCM_U8", 2 / 256), ("WAV", "PCM_16", 2 / 32768), ("WAV", "PCM_24", 2 / 2 ** 23),
    ("WAV", "PCM_32", 1e-7), ("WAV", "FLOAT", 1e-7), ("WAV", "DOUBLE", 0.0), ("FLAC", "PCM_16", 2 / 32768),
    ("FLAC", "PCM_24", 2 / 2 ** 23),
])
def test_reads_every_common_format(tmp_path, fmt, subtype, tol):
    x = plucked_notes(0.5, RATE, seed=1)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, x, RATE, subtype=subtype, format=fmt)
    clip = read_audio(path)
    assert clip.sample_rate == RATE and clip.channels == 1 and clip.subtype == subtype
    assert clip.samples.shape == x.shape
    assert np.max(np.abs(clip.samples - x)) <= tol + 1e-12


def test_stereo_with_identical_channels_is_accepted(tmp_path):
    x = plucked_notes(0.3, RATE)
    path = tmp_path / "s.wav"
    sf.write(path, np.stack([x, x], axis=1), RATE, subtype="FLOAT")
    clip = read_audio(path)
    assert clip.channels == 2 and np.allclose(clip.samples, x, atol=1e-7)


def test_stereo_with_different_channels_needs_channel(tmp_path):
    x = plucked_notes(0.3, RATE)
    path = tmp_path / "s.wav"
    sf.write(path, np.stack([x, -0.5 * x], axis=1), RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="--channel N") as info:
        read_audio(path, role="target")
    assert str(path) in str(info.value)
    right = read_audio(path, channel=1)
    assert np.allclose(right.samples, -0.5 * x, atol=1e-7) and right.channel_used == 1
    with pytest.raises(AudioError, match="must be 0..1"):
        read_audio(path, channel=2)


def test_unusable_files_are_named(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        read_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        read_audio(empty)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    with pytest.raises(AudioError, match="not an audio file"):
        read_audio(text)
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros(0), RATE)
    with pytest.raises(AudioError, match="zero length"):
        read_audio(zero)
    with pytest.raises(AudioError, match="is a folder"):
        read_audio(tmp_path)


def test_check_errors(tmp_path):
    checks = CheckConfig()
    x = plucked_notes(1.0, RATE)
    bad = x.copy()
    bad[100] = np.nan
    with pytest.raises(AudioError, match="NaN or infinite"):
        check_recording(AudioClip("t.wav", bad, RATE, 1, "FLOAT"), "target", checks)
    quiet = x * 10 ** (-70 / 20) / np.sqrt(np.mean(x ** 2))  # RMS exactly -70 dBFS
    assert rms_dbfs(quiet) == pytest.approx(-70.0)
    with pytest.raises(AudioError, match="silent .* switched on"):
        check_recording(AudioClip("t.wav", quiet, RATE, 1, "FLOAT"), "target", checks)
    with pytest.raises(AudioError, match="silent"):
        check_recording(AudioClip("i.wav", np.zeros(RATE), RATE, 1, "FLOAT"), "input", checks)


def test_clipping_runs_exact():
    x = np.zeros(100)
    x[10:12] = 1.0          # 2 samples: below the 3-sample rule
    x[20:23] = -0.9995      # 3 samples at |x| >= 0.999
    x[50:60] = 1.0          # 10 samples
    assert clipping_runs(x) == [(20, 3), (50, 10)]
    assert clipping_runs(x, min_run=2) == [(10, 2), (20, 3), (50, 10)]
    assert clipping_runs(np.zeros(10)) == []


def test_clipping_and_dc_are_warnings_with_times():
    x = plucked_notes(2.0, RATE)
    x[RATE:RATE + 5] = 1.0
    findings = check_recording(AudioClip("t.wav", x + 0.02, RATE, 1, "FLOAT"), "target", CheckConfig())
    codes = {f.code: f for f in findings}
    assert set(codes) == {"clipping", "dc_offset"}
    assert codes["clipping"].details["count"] >= 1 and 1.0 in codes["clipping"].details["times_s"]
    assert codes["dc_offset"].details["mean"] == pytest.approx(np.mean(x + 0.02))


def test_resample_keeps_a_tone_and_length():
    t = np.arange(48000) / 48000
    x = 0.5 * np.sin(2 * np.pi * 1000 * t)
    y = resample(x, 48000, 44100)
    assert len(y) == 44100
    ref = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(44100) / 44100)
    # away from the edges the band-limited resampler is accurate to better than -80 dB
    mid = slice(2000, -2000)
    assert np.max(np.abs(y[mid] - ref[mid])) < 1e-4
    # a tone above the new Nyquist is removed, not aliased
    z = resample(0.5 * np.sin(2 * np.pi * 23000 * t), 48000, 44100)
    assert np.sqrt(np.mean(z[mid] ** 2)) < 1e-3
    assert resample(x, 44100, 44100) is not None and np.array_equal(resample(x, 44100, 44100), x)


def test_write_audio_round_trip(tmp_path):
    x = plucked_notes(0.2, RATE).astype(np.float32)
    write_audio(tmp_path / "a.wav", x, RATE)
    y, rate = sf.read(tmp_path / "a.wav", dtype="float32")
    assert rate == RATE and np.array_equal(x, y)
    assert peak_dbfs(np.array([0.5])) == pytest.approx(20 * math.log10(0.5))


# --------------------------------------------------------------------------- issue 13: over-range float, per-file channels

def test_float_audio_over_full_scale_is_over_range_not_clipping(tmp_path):
    import soundfile as sf

    from ampxfer_lib.data.audio import CheckConfig, check_recording, read_audio

    t = np.arange(44100) / 44100
    x = 8.0 * np.sin(2 * np.pi * 110 * t)
    sf.write(str(tmp_path / "hot.wav"), x, 44100, subtype="FLOAT")
    findings = check_recording(read_audio(tmp_path / "hot.wav"), "target", CheckConfig())
    assert [f.code for f in findings] == ["over_range"]
    assert findings[0].details["peak"] == pytest.approx(8.0, rel=1e-6)
    assert "peaking at 8.00 (+18.1 dBFS)" in findings[0].message and "at least 19 dB" in findings[0].message
    # flat tops at the file's own peak are still clipping
    sf.write(str(tmp_path / "hot_clipped.wav"), np.clip(x, -6.0, 6.0), 44100, subtype="FLOAT")
    codes = [f.code for f in check_recording(read_audio(tmp_path / "hot_clipped.wav"), "target", CheckConfig())]
    assert codes == ["over_range", "clipping"]


def test_channel_error_names_the_flag_that_picks_it(tmp_path):
    import soundfile as sf

    from ampxfer_lib.data.audio import read_audio
    from ampxfer_lib.errors import AudioError

    sf.write(str(tmp_path / "st.wav"), np.random.default_rng(0).normal(0, 0.1, (1000, 2)), 44100)
    assert read_audio(tmp_path / "st.wav", 1, flag="--target-channel").channel_used == 1
    with pytest.raises(AudioError, match=r"has 2 channels, so --target-channel must be 0\.\.1, not 2$"):
        read_audio(tmp_path / "st.wav", 2, flag="--target-channel")
