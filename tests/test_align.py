"""Latency and polarity detection (ampxfer_lib.data.align).

Synthetic devices are written here with a known pure delay ``d``: the first output sample
that answers an input impulse is exactly ``d`` samples late (every filter's first tap is
non-zero). The estimate must never be later than ``d`` (the model is causal) and at most
two samples earlier. Real captures from ../shared/realdata are used where present.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.signal

from ampxfer_lib.data.align import LatencyEstimate, compensate, estimate_latency

RATE = 44100
# <repo>/../shared/realdata; AMPXFER_REALDATA points elsewhere (e.g. from a git worktree).
REALDATA = Path(os.environ.get("AMPXFER_REALDATA") or Path(__file__).resolve().parents[1].parent / "shared" / "realdata")


# --------------------------------------------------------------------------- material

def pluck_take(seconds: float, seed: int = 0, rate: int = RATE) -> np.ndarray:
    """A guitar-like take (T,): plucked notes of decaying harmonics with a pick transient."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    out = np.zeros(n)
    start = 0
    while start < n:
        f0 = 82.4 * 2 ** (rng.integers(0, 36) / 12)  # E2 .. E5
        hop = int(rate * rng.uniform(0.15, 0.9))
        m = min(3 * hop, n - start)
        t = np.arange(m) / rate
        k = np.arange(1, int(min(10000.0, rate / 2.2) // f0) + 1)
        amp = rng.uniform(0.2, 1.0) / k ** rng.uniform(0.8, 1.5)
        tau = rng.uniform(0.3, 1.5) / (1 + 0.3 * k)
        phase = rng.uniform(0, 2 * np.pi, len(k))
        note = (amp[:, None] * np.exp(-t / tau[:, None])
                * np.sin(2 * np.pi * f0 * k[:, None] * t + phase[:, None])).sum(0)
        pick = int(0.004 * rate)
        note[:pick] += 0.5 * rng.standard_normal(min(pick, m)) * np.exp(-np.arange(min(pick, m)) / (0.001 * rate))
        out[start:start + m] += rng.uniform(0.05, 0.3) * note / np.abs(note).max()
        start += hop
    return out


def delayed(y: np.ndarray, d: int) -> np.ndarray:
    """``y`` delayed by ``d`` samples (negative: advanced); the length changes by ``d``."""
    return np.concatenate([np.zeros(d), y]) if d >= 0 else y[-d:]


def _butter(order, hz, kind="lowpass"):
    return scipy.signal.butter(order, hz, kind, fs=RATE)


def _peaking(hz, gain_db, q):
    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * hz / RATE
    alpha = np.sin(w) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w), 1 - alpha / a])
    return b / den[0], den / den[0]


def _f(ba, x):
    return scipy.signal.lfilter(ba[0], ba[1], x)


# Pure delay 0 each; minimum-phase IIR filters and one linear-phase FIR around a tanh or a
# hard clipper, from a gentle overdrive to a fuzz into a cabinet-like filter.
DEVICES = {
    "screamer": lambda x: _f(_butter(1, 5000), np.tanh(30 * _f(_butter(1, 720, "highpass"), x))),
    "hard_clip": lambda x: _f(_butter(2, 6000), np.clip(100 * _f(_butter(1, 100, "highpass"), x), -1, 1)),
    "amp_cab": lambda x: _f(_butter(2, 5000), _f(_peaking(2500, 8, 1.5), _f(_peaking(110, 6, 1),
                           np.tanh(20 * _f(_butter(1, 80, "highpass"), x))))),
    "linear_phase": lambda x: _f(_butter(1, 8000), np.tanh(8 * np.convolve(x, [0.25, 0.5, 0.25])[: len(x)])),
    "mild": lambda x: _f(_butter(2, 8000), np.tanh(2 * x)),
    "fuzz_cab": lambda x: _f(_butter(2, 4000), _f(_peaking(1200, 10, 2),
                            np.clip(300 * _f(_butter(1, 200, "highpass"), x), -1, 1))),
}


@pytest.fixture(scope="module")
def take():
    return pluck_take(8.0, seed=1)


@pytest.fixture(scope="module")
def renders(take):
    return {name: dev(take) for name, dev in DEVICES.items()}


def assert_pure_delay(est: LatencyEstimate, d: int):
    assert est.in_window, est
    assert d - 2 <= est.samples <= d, f"estimate {est.samples} for a pure delay of {d}"


# ------------------------------------------------------------------ synthetic devices

@pytest.mark.parametrize("name", sorted(DEVICES))
@pytest.mark.parametrize("d", [0, 1, 5, 37, 2000, -1, -25, -3000])
def test_synthetic_device_pure_delay(take, renders, name, d):
    est = estimate_latency(take, delayed(renders[name], d), RATE)
    assert_pure_delay(est, d)
    assert est.polarity == 1
    assert 0.0 < est.confidence <= 1.0


@pytest.mark.parametrize("d", [8000, 8800, -8800])
def test_delay_near_window_edge(take, renders, d):
    est = estimate_latency(take, delayed(renders["amp_cab"], d), RATE, max_seconds=0.2)
    assert_pure_delay(est, d)


@pytest.mark.parametrize("name", sorted(DEVICES))
def test_added_delay_is_found_exactly(take, renders, name):
    base = estimate_latency(take, renders[name], RATE)
    more = estimate_latency(take, delayed(renders[name], 37), RATE)
    assert base.in_window and more.in_window
    assert abs((more.samples - base.samples) - 37) <= 1


def test_xcorr_peak_is_reported_and_lands_late_on_a_distorted_device(take, renders):
    # The reason this module exists: the plain correlation peak includes the device's own
    # filter delay (amp_cab: 2nd-order 5 kHz low-pass, resonances), the onset does not.
    est = estimate_latency(take, delayed(renders["amp_cab"], 100), RATE)
    assert est.xcorr_lag > 100
    assert_pure_delay(est, 100)


# ------------------------------------------------------------------------- polarity

@pytest.mark.parametrize("name", ["screamer", "amp_cab", "fuzz_cab"])
@pytest.mark.parametrize("d", [0, 37, -25])
def test_inverted_target_same_latency_opposite_polarity(take, renders, name, d):
    y = delayed(renders[name], d)
    up = estimate_latency(take, y, RATE)
    down = estimate_latency(take, -y, RATE)
    assert (up.polarity, down.polarity) == (1, -1)
    assert down.samples == up.samples
    assert down.confidence == pytest.approx(up.confidence)
    assert down.xcorr_lag == up.xcorr_lag


# --------------------------------------------------------------------- hard material

@pytest.mark.parametrize("variant", ["quiet", "silences", "dc_offset", "noise_50db", "target_12db_louder"])
def test_difficult_material(variant, renders, take):
    rng = np.random.default_rng(7)
    x, y = take.copy(), renders["amp_cab"].copy()
    if variant == "quiet":  # a DI recorded 40 dB too low, and its render
        x = x * 0.01
        y = DEVICES["amp_cab"](x)
    elif variant == "silences":  # long pauses between phrases
        gap = np.zeros(6 * RATE)
        half = len(x) // 2
        x = np.concatenate([gap, x[:half], gap, gap, x[half:], gap])
        y = DEVICES["amp_cab"](x)
    elif variant == "dc_offset":
        x = x + 0.05
        y = y - 0.2
    elif variant == "noise_50db":
        x = x + 10 ** (-50 / 20) * np.std(x) * rng.standard_normal(len(x))
        y = y + 10 ** (-50 / 20) * np.std(y) * rng.standard_normal(len(y))
    elif variant == "target_12db_louder":
        y = y * 10 ** (12 / 20)
    for d in (0, 37, -25):
        assert_pure_delay(estimate_latency(x, delayed(y, d), RATE), d)


def test_lengths_may_differ_by_up_to_the_window(take, renders):
    y = delayed(renders["screamer"], 37)
    assert_pure_delay(estimate_latency(take, y[: len(take) - 8000], RATE), 37)
    assert_pure_delay(estimate_latency(take, np.concatenate([y, np.zeros(8000)]), RATE), 37)
    # The target's recording started 3000 samples late: it now leads by 3000 - 37.
    assert_pure_delay(estimate_latency(take, y[3000:], RATE), 37 - 3000)
    assert_pure_delay(estimate_latency(take[: len(take) - 6000], y, RATE), 37)


def test_other_sample_rate(take):
    x = scipy.signal.resample_poly(take, 160, 147)  # 48 kHz
    y = _f(scipy.signal.butter(2, 6000, fs=48000), np.tanh(10 * x))
    assert_pure_delay(estimate_latency(x, delayed(y, 48), 48000), 48)


# ------------------------------------------------------------------------ the window

@pytest.mark.parametrize("seconds", [0.25, 0.29, -0.25])
def test_delay_beyond_window_is_reported_out_of_window(take, renders, seconds):
    d = int(round(seconds * RATE))
    est = estimate_latency(take, delayed(renders["amp_cab"], d), RATE, max_seconds=0.2)
    assert not est.in_window
    assert est.confidence == 0.0
    # Not silently clipped to the edge: the lag found beyond it is reported.
    assert abs(est.samples - d) <= 50


def test_delay_far_beyond_window_is_out_of_window(take, renders):
    est = estimate_latency(take, delayed(renders["amp_cab"], RATE), RATE, max_seconds=0.2)
    assert not est.in_window
    assert abs(est.samples) != int(0.2 * RATE)


def test_wider_window_finds_it(take, renders):
    d = int(0.25 * RATE)
    assert_pure_delay(estimate_latency(take, delayed(renders["amp_cab"], d), RATE, max_seconds=0.3), d)


# ------------------------------------------------------------------ silence and junk

@pytest.mark.parametrize("which", ["input", "target", "both"])
def test_silence(take, which):
    x = np.zeros_like(take) if which in ("input", "both") else take
    y = np.zeros_like(take) if which in ("target", "both") else take
    est = estimate_latency(x, y, RATE)
    assert not est.in_window
    assert est.confidence == 0.0


def test_unrelated_recordings_are_out_of_window(take):
    other = DEVICES["amp_cab"](pluck_take(8.0, seed=99))
    est = estimate_latency(take, other, RATE)
    assert not est.in_window
    assert est.confidence == 0.0


@pytest.mark.parametrize("n", [0, 1, 100, 1000, 20000])
def test_tiny_inputs(n):
    x = pluck_take(1.0)[:n]
    est = estimate_latency(x, x, RATE)
    if n < 2:
        assert est == LatencyEstimate(0, 1, 0.0, 0, False)
    else:  # a take against itself, however short: no delay
        assert (est.samples, est.polarity, est.in_window) == (0, 1, True)


def test_non_finite_samples_count_as_silence(take, renders):
    x = take.copy()
    x[1000:1010] = np.nan
    y = delayed(renders["amp_cab"], 37)
    y[5000] = np.inf
    assert_pure_delay(estimate_latency(x, y, RATE), 37)


def test_float32_input(take, renders):
    est = estimate_latency(take.astype(np.float32), delayed(renders["amp_cab"], 37).astype(np.float32), RATE)
    assert_pure_delay(est, 37)


def test_programmer_errors_raise(take):
    with pytest.raises(ValueError):
        estimate_latency(np.stack([take, take]), take, RATE)
    with pytest.raises(ValueError):
        estimate_latency(take, take, 0)


def test_to_dict_is_plain_json(take, renders):
    est = estimate_latency(take, delayed(renders["mild"], 12), RATE)
    d = est.to_dict()
    assert set(d) == {"samples", "polarity", "confidence", "xcorr_lag", "in_window"}
    assert json.loads(json.dumps(d)) == d
    assert type(d["samples"]) is int and type(d["xcorr_lag"]) is int and type(d["polarity"]) is int
    assert type(d["in_window"]) is bool and type(d["confidence"]) is float
    assert LatencyEstimate(**d) == est


# ------------------------------------------------------------------------ compensate

@pytest.mark.parametrize("d", [0, 3, 37, -1, -25])
def test_compensate_aligns_a_pure_delay_exactly(d):
    x = np.arange(1000, dtype=np.float64)
    y = delayed(x * 2.0, d)
    xa, ya = compensate(x, y, d)
    assert len(xa) == len(ya) == 1000 - max(-d, 0)
    np.testing.assert_array_equal(ya, 2.0 * xa)


def test_compensate_semantics_and_lengths():
    x = np.arange(10.0)
    y = np.arange(100.0, 112.0)
    xa, ya = compensate(x, y, 3)  # drop the target's first 3, trim both to 9
    np.testing.assert_array_equal(xa, np.arange(9.0))
    np.testing.assert_array_equal(ya, np.arange(103.0, 112.0))
    xa, ya = compensate(x, y, -4)  # drop the input's first 4
    np.testing.assert_array_equal(xa, np.arange(4.0, 10.0))
    np.testing.assert_array_equal(ya, np.arange(100.0, 106.0))
    xa, ya = compensate(x, y, 0)
    assert len(xa) == len(ya) == 10
    xa, ya = compensate(x, y, 50)
    assert len(xa) == len(ya) == 0


def test_compensate_with_estimate_round_trip(take, renders):
    y = delayed(renders["screamer"], 37)
    est = estimate_latency(take, y, RATE)
    xa, ya = compensate(take, y, est.samples)
    assert len(xa) == len(ya)
    # A compensation short by k samples leaves the target k samples late, never early.
    lag = 37 - est.samples
    assert 0 <= lag <= 2
    np.testing.assert_allclose(ya[lag:], renders["screamer"][: len(ya) - lag])


# ---------------------------------------------------------------- real DI and captures

def _real_di(seconds_per_clip: float) -> np.ndarray:
    sf = pytest.importorskip("soundfile")
    soxr = pytest.importorskip("soxr")
    clips = sorted((REALDATA / "di").glob("*.flac"))
    if not clips:
        pytest.skip(f"no real DI clips in {REALDATA / 'di'}")
    parts = []
    for path in clips:
        audio, rate = sf.read(str(path), dtype="float64", always_2d=True)
        assert rate == 48000
        parts.append(soxr.resample(audio[:, 0], 48000, RATE, quality="VHQ")[: int(seconds_per_clip * RATE)])
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def real_di():
    if not REALDATA.is_dir():
        pytest.skip(f"{REALDATA} is absent")
    return _real_di(8.0)


#: Captures from a clean amp to high-gain amps and distortion pedals. On this material
#: (8 s of each DI clip) 30 of the 37 shared captures/settings land in [0, 2]; of the
#: other seven, six come out 1-3 samples early (harmless: the model learns the rest) and
#: one (Rockman_Ultimatum_highGain) 5 late: captures whose output is coherent with the
#: input only below ~2 kHz, where the onset cannot be pinned to a sample.
REAL_CAPTURES = [
    ("neuralpi/BluesJr.json", [1.0]),
    ("neuralpi/HT40_Overdrive.json", [0.25]),
    ("neuralpi/TS9_FullD.json", []),
    ("tonelibrary_h20/FenderPrinceton_clean.json", []),
    ("tonelibrary_h20/EH_CockFight_highDrive.json", []),
    ("tonelibrary_h20/Goat_DistortionGen_highDist.json", []),
    ("tonelibrary_h20/MesaBoogie_Studio22_highGain.json", []),
    ("tonelibrary_h20/Soldano_highGain.json", []),
]


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("path,knobs", REAL_CAPTURES, ids=[f"{p.split('/')[-1][:-5]}{k}" for p, k in REAL_CAPTURES])
def test_real_capture_aligned_render(real_di, path, knobs):
    torch = pytest.importorskip("torch")
    from ampxfer_lib.model.formats import load_model
    from ampxfer_lib.model.render import render

    torch.set_num_threads(1)
    y = render(load_model(REALDATA / "models" / path), real_di.astype(np.float32), knobs).astype(np.float64)
    aligned = estimate_latency(real_di, y, RATE)
    assert aligned.in_window
    assert 0 <= aligned.samples <= 2, aligned  # a causal render: never shifted before 0
    late = estimate_latency(real_di, delayed(y, 37), RATE)
    assert abs((late.samples - aligned.samples) - 37) <= 1
    assert 37 <= late.samples <= 39
    inverted = estimate_latency(real_di, -y, RATE)
    assert inverted.polarity == -aligned.polarity and inverted.samples == aligned.samples


@pytest.mark.realdata
def test_real_di_through_synthetic_devices(real_di):
    x = real_di
    for name, dev in DEVICES.items():
        y = dev(x)
        for d in (0, 37, -25):
            est = estimate_latency(x, delayed(y, d), RATE)
            assert_pure_delay(est, d)
            assert est.polarity == 1, name


# --------------------------------------------------------------------------- clock drift, swapped pairs (issue 13)

def _drifted_pair(drift: int, seconds: float = 20.0, latency: int = 24):
    """A fixture-amp pair whose target runs on a clock ``drift`` samples fast over the file."""
    import soxr

    from tests.support.faults import fixture_amp, guitar_like

    rate = 44100
    x = guitar_like(seconds, rate, seed=2)
    y = fixture_amp(x, rate, latency=latency)
    if drift:
        y = soxr.resample(y, rate, rate * (1 + drift / len(y)), quality="VHQ")[:len(x)]
    return x, y, rate


@pytest.mark.parametrize("drift", [0, 1, 3, 10, -5])
def test_measured_drift_is_the_drift_put_in(drift):
    from ampxfer_lib.data.align import compensate, estimate_latency, measure_drift

    x, y, rate = _drifted_pair(drift)
    est = estimate_latency(x, y, rate)
    a, b = compensate(x, y, est.samples)
    got = measure_drift(a, b, rate)
    assert got.points == 7
    # within a quarter sample plus 5 %: the windows' peaks are read to a fraction of a sample
    assert abs(got.drift_samples - drift) <= 0.25 + 0.05 * abs(drift), got
    assert got.ppm == pytest.approx(got.drift_samples / len(a) * 1e6, abs=0.05)


def test_drift_of_silence_or_short_audio_claims_nothing():
    from ampxfer_lib.data.align import measure_drift

    assert measure_drift(np.zeros(44100 * 5), np.zeros(44100 * 5), 44100).points == 0
    assert measure_drift(np.ones(1000), np.ones(1000), 44100).drift_samples == 0.0


def test_a_swapped_pair_reads_as_a_target_that_leads():
    from ampxfer_lib.data.align import estimate_latency
    from ampxfer_lib.data.checks_pair import SWAP_MARGIN, drift_findings, swap_findings

    x, y, rate = _drifted_pair(0)
    est = estimate_latency(y, x, rate)  # the device's recording given as the input
    # the device's inverse is no causal filter: its onset reads a few samples before -24
    assert est.in_window and -40 <= est.samples <= -22 < -SWAP_MARGIN
    assert [f.code for f in swap_findings(est, y, x, rate, "di.wav", "amp.wav")] == ["swapped"]
    right = estimate_latency(x, y, rate)
    assert [f.code for f in swap_findings(right, x, y, rate, "amp.wav", "di.wav")] == []
    a, b = compensate(x, y, right.samples)
    assert drift_findings(a, b, rate, "amp.wav") == []
