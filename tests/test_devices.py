"""Tests of the virtual devices: harmonics, designed linear responses, state, pairs, levels."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from ampxfer_lib.sample_data import devices as dev
from ampxfer_lib.sample_data.devices import (DEVICES, EXTRA_DEVICES, PAIRS, cabinet_ir, fmv_tone_stack,
                                             render_device)
from ampxfer_lib.errors import AmpxferError, ConfigError

SR = 48000
DI_PATH = Path(__file__).resolve().parents[1] / "sample_data" / "di.flac"


def harmonics(name, f, amp=0.1, gain=None, sr=SR):
    """Amplitudes of harmonics 1..10 of a steady sine through the device, relative to the 1st."""
    t = np.arange(int(1.5 * sr)) / sr
    y = render_device(name, amp * np.sin(2 * np.pi * f * t), sr, gain)[sr // 2:].astype(np.float64)
    spec = np.abs(np.fft.rfft(y * np.blackman(sr)))  # 1 Hz bins
    h = np.array([spec[k * f] for k in range(1, 11)])
    return h / h[0]


def thd(name, f, gain=None):
    h = harmonics(name, f, gain=gain)
    return float(np.sqrt(np.sum(h[1:] ** 2)))


def small_signal_db(name, sr=SR, gain=None):
    """Magnitude (dB, 1 Hz bins) of the device's response to a tiny impulse (linear regime)."""
    x = np.zeros(sr)
    x[100] = 1e-4
    y = render_device(name, x, sr, gain).astype(np.float64) / 1e-4
    return 20 * np.log10(np.abs(np.fft.rfft(y[100:100 + sr // 2], sr)) + 1e-12)


def esr(target, source):
    g = (target @ source) / (source @ source)
    return float(np.sum((target - g * source) ** 2) / np.sum(target ** 2))


def test_unknown_device_and_bad_knob_are_clear_errors():
    with pytest.raises(AmpxferError, match="ts9, mt2, bluesjr, ht40"):
        render_device("rat", np.zeros(10), SR)
    with pytest.raises(ConfigError, match="0..1"):
        render_device("ts9", np.zeros(10), SR, gain=1.5)
    with pytest.raises(ConfigError, match="mono"):
        render_device("ts9", np.zeros((10, 2)), SR)


def test_registry_describes_two_source_target_pairs():
    assert list(DEVICES) == ["ts9", "mt2", "bluesjr", "ht40"]
    for src, tgt in PAIRS:
        assert DEVICES[src].role == "source" and DEVICES[tgt].role == "target"
        assert DEVICES[src].pair == DEVICES[tgt].pair
    for d in DEVICES.values():
        assert 0.0 <= d.default_gain <= 1.0 and d.description
    # the starting models' extra devices stay out of the sample data and its study
    assert list(EXTRA_DEVICES) == ["fuzz", "ht40_amp"] and not set(EXTRA_DEVICES) & set(DEVICES)
    for d in EXTRA_DEVICES.values():
        assert 0.0 <= d.default_gain <= 1.0 and d.description and d.pair == d.role == ""


def test_fuzz_clips_hard_and_asymmetrically():
    h = harmonics("fuzz", 1000)
    assert h[1] > 0.01  # asymmetric: 2nd harmonic above -40 dB
    assert h[2] > 0.4 and h[4] > 0.2  # hard: close to a square wave's 1/3 and 1/5
    # the sustain knob: a quiet note (-60 dBFS) is clean at 0 and fuzzed at full gain
    quiet = [float(np.sqrt(np.sum(harmonics("fuzz", 440, amp=0.001, gain=g)[1:] ** 2))) for g in (0.0, 0.5, 1.0)]
    assert quiet[0] < 0.05 and quiet[1] > 0.2 and quiet[2] > 0.4, quiet


def test_ht40_amp_thd_grows_with_gain_and_differs_from_the_miked_ht40():
    values = [thd("ht40_amp", 440, g) for g in (0.0, 0.5, 1.0)]
    assert all(b > a for a, b in zip(values, values[1:])), values
    # same amp, no cabinet reflections or microphone: the responses differ above 3 kHz
    assert np.max(np.abs(small_signal_db("ht40_amp")[3000:8000] - small_signal_db("ht40")[3000:8000])) > 2.0


def test_ts9_asymmetric_clipping_makes_even_harmonics():
    h = harmonics("ts9", 1000)
    assert h[1] > 0.01  # 2nd harmonic above -40 dB
    assert h[2] > 0.05  # and the 3rd of a soft clipper


def test_mt2_distorts_much_more_than_ts9_at_default_gain():
    assert thd("mt2", 1000) > 3 * thd("ts9", 1000)


@pytest.mark.parametrize("name", list(DEVICES))
def test_thd_grows_with_the_gain_knob(name):
    values = [thd(name, 440, g) for g in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(b > a for a, b in zip(values, values[1:])), values


def test_ts9_small_signal_response_is_the_designed_mid_hump():
    h = small_signal_db("ts9")
    assert 600 <= np.argmax(h[20:10000]) + 20 <= 900
    assert h[100] < h[720] - 10 and h[5000] < h[720] - 6
    # with the clipper in its linear region the pedal is exactly its filter chain
    fs = float(SR)
    k = 1.0 + (51e3 + 500e3 * dev._taper(DEVICES["ts9"].default_gain, 2.0)) / 4.7e3
    f = np.array([50.0, 100, 200, 400, 720, 1000, 2000, 4000, 8000])
    resp = lambda ba: signal.freqz(ba[0], ba[1], worN=f, fs=fs)[1]
    lp723 = resp(dev.lowpass1(723.0, fs))
    expect = (0.78 * resp(dev.highpass1(20.0, fs))
              * (1 + k * resp(dev.highpass1(720.0, fs)) * resp(dev.lowpass1(6000.0, fs)))
              * (lp723 + 0.22 * (1 - lp723)) * resp(dev.lowpass1(9000.0, fs))
              * resp(dev.highpass1(10.0, fs)))
    np.testing.assert_allclose(h[f.astype(int)], 20 * np.log10(np.abs(expect)), atol=0.05)


def test_mt2_scoops_the_mids_relative_to_ts9():
    diff = small_signal_db("mt2") - small_signal_db("ts9")
    assert diff[800] < diff[150] - 3 and diff[800] < diff[3000] - 3


def test_devices_are_stateful():
    rng = np.random.default_rng(0)
    burst = 0.3 * np.sin(2 * np.pi * 196 * np.arange(SR // 10) / SR)
    quiet = np.zeros(SR // 5)
    loud = 0.5 * rng.standard_normal(SR // 5)
    for name in list(DEVICES) + list(EXTRA_DEVICES):
        a = render_device(name, np.concatenate([quiet, burst]), SR)[-burst.size:]
        b = render_device(name, np.concatenate([loud, burst]), SR)[-burst.size:]
        again = render_device(name, np.concatenate([quiet, burst]), SR)[-burst.size:]
        assert a.tobytes() == again.tobytes()
        assert np.sqrt(np.mean((a - b) ** 2)) > 0.01 * np.sqrt(np.mean(a ** 2)), name


def test_design_holds_across_sample_rates():
    base = small_signal_db("ts9", 48000)
    for sr in (44100, 96000):
        other = small_signal_db("ts9", sr)
        for f in (100, 720, 2000, 8000):
            assert other[f] == pytest.approx(base[f], abs=0.25)


def test_tone_stack_matches_its_network():
    # the digital filter (closed form from determinants, bilinear) vs solving the network
    fs = 192000.0
    f = np.array([30.0, 100, 300, 700, 1500, 4000])
    for knobs in ((0.5, 0.5, 0.5), (0.2, 0.8, 0.3), (0.9, 0.1, 0.7)):
        b, a = fmv_tone_stack(*knobs, fs)
        got = np.abs(signal.freqz(b, a, worN=f, fs=fs)[1])
        G, C, g_in, c_in = dev.tone_stack_network(*knobs)
        want = [abs(np.linalg.solve(G + 2j * np.pi * fi * C, g_in + 2j * np.pi * fi * c_in)[1]) for fi in f]
        np.testing.assert_allclose(20 * np.log10(got), 20 * np.log10(want), atol=0.02)
    level = lambda knobs, fi: abs(signal.freqz(*fmv_tone_stack(*knobs, fs), worN=[fi], fs=fs)[1][0])
    assert level((0.5, 0.5, 1.0), 60) > 1.5 * level((0.5, 0.5, 0.1), 60)  # bass knob
    assert level((1.0, 0.5, 0.5), 5000) > 1.5 * level((0.1, 0.5, 0.5), 5000)  # treble knob
    assert level((0.5, 1.0, 0.5), 500) > 1.5 * level((0.5, 0.1, 0.5), 500)  # mid knob


def test_cabinet_ir_is_short():
    for sr in (44100, 48000):
        h = cabinet_ir(sr)
        assert h.size < 0.01 * sr
        e = np.cumsum(h ** 2) / np.sum(h ** 2)
        assert e[int(0.004 * sr)] > 0.97  # most of the energy within 4 ms


@pytest.fixture(scope="module")
def di_excerpt():
    if not DI_PATH.exists():
        pytest.skip("sample_data/di.flac not present")
    x, sr = sf.read(str(DI_PATH), dtype="float64")
    assert sr == SR
    return x


def test_pairs_are_closer_to_each_other_than_to_the_dry_signal(di_excerpt):
    x = di_excerpt[20 * SR:28 * SR]
    out = {n: render_device(n, x, SR).astype(np.float64) for n in DEVICES}
    for src, tgt in PAIRS:
        pair = esr(out[tgt], out[src])
        assert pair < 0.5, (src, tgt, pair)
        assert esr(out[tgt], x) > pair + 0.2


def test_output_stays_below_full_scale_at_any_gain(di_excerpt):
    k = int(np.argmax(np.abs(di_excerpt)))
    x = di_excerpt[max(k - SR, 0):k + SR]
    for name in list(DEVICES) + list(EXTRA_DEVICES):
        peaks = [np.abs(render_device(name, x, SR, g)).max() for g in (0.0, 0.5, 1.0)]
        assert max(peaks) < 0.97, (name, peaks)
        if name in ("mt2", "ht40"):  # saturating devices: loud already at the default knob
            assert np.abs(render_device(name, x, SR)).max() > 10 ** (-4 / 20)
