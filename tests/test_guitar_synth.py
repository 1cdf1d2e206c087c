"""Tests of the guitar DI synthesiser: tuning, bends, decay, pickup, determinism, levels."""

import numpy as np
import pytest
from scipy import signal

from ampxfer_lib.errors import ConfigError
from ampxfer_lib.sample_data.guitar_synth import (PICKUPS, loss_filter, midi_to_hz, pickup_filter, render_notes,
                                                  sustain_t60, synth_di)
from ampxfer_lib.sample_data.phrases import PHRASE_KINDS, STANDARD_TUNING, Note, plan_phrases

SR = 48000


def measured_pitch(y, f_expect, sr=SR):
    """Frequency (Hz) of the strongest peak within +-6 % of f_expect (Hann, parabolic on log)."""
    n = 1 << 21
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size), n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    band = (freqs > f_expect * 0.94) & (freqs < f_expect * 1.06)
    k = int(np.argmax(np.where(band, spec, 0.0)))
    a, b, c = np.log(spec[k - 1:k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / n


@pytest.mark.parametrize("string,fret", [(0, 0), (1, 5), (3, 9), (5, 12), (5, 20)])
def test_single_note_is_in_tune_within_half_a_cent(string, fret):
    pitch = STANDARD_TUNING[string] + fret
    y = render_notes([Note(string, 0.02, 2.0, pitch, 0.8)], 1.3, SR)
    f0 = float(midi_to_hz(pitch))
    cents = 1200 * np.log2(measured_pitch(y[int(0.2 * SR):], f0) / f0)
    assert abs(cents) < 0.5


def test_bend_reaches_its_target_pitch():
    pitch = 69.0  # B string, fret 10
    note = Note(4, 0.02, 2.0, pitch, 0.8, curve=[(0.0, pitch), (0.05, pitch), (0.2, pitch + 2)])
    y = render_notes([note], 1.4, SR)
    f_target = float(midi_to_hz(pitch + 2))
    cents = 1200 * np.log2(measured_pitch(y[int(0.4 * SR):], f_target) / f_target)
    assert abs(cents) < 1.0


def test_loss_filter_gives_the_requested_decay_per_period():
    f0, t60, t60_hf = 110.0, 5.0, 0.8
    g, a = loss_filter(f0, t60, t60_hf, SR)
    w0, wh = 2 * np.pi * f0 / SR, 2 * np.pi * 3000.0 / SR
    mag = lambda w: g * (1 - a) / np.sqrt(1 - 2 * a * np.cos(w) + a * a)
    assert mag(w0) == pytest.approx(10 ** (-3 / (f0 * t60)), rel=1e-9)
    assert mag(wh) == pytest.approx(10 ** (-3 / (f0 * t60_hf)), rel=1e-6)


def test_rendered_fundamental_decays_at_the_designed_rate():
    # A2 open: measure the fundamental's level over time against the designed T60
    f0 = 110.0
    y = render_notes([Note(1, 0.0, 5.0, 45, 0.8)], 3.0, SR)
    t60 = sustain_t60(f0)
    def level(t):
        seg = y[int(t * SR):int(t * SR) + SR // 4]
        n = np.arange(seg.size) / SR
        return 20 * np.log10(abs(np.sum(seg * np.exp(-2j * np.pi * f0 * n) * np.hanning(seg.size))))
    slope = (level(2.5) - level(0.5)) / 2.0
    assert slope == pytest.approx(-60.0 / t60, rel=0.15)


def test_palm_mute_dies_much_faster_than_an_open_note():
    ring = render_notes([Note(0, 0.0, 3.0, 40, 0.8)], 0.8, SR)
    mute = render_notes([Note(0, 0.0, 3.0, 40, 0.8, palm_mute=True)], 0.8, SR)
    def drop(y):
        return 10 * np.log10(np.mean(y[int(0.6 * SR):] ** 2) / np.mean(y[:int(0.1 * SR)] ** 2))
    assert drop(mute) < drop(ring) - 20


def test_pickup_resonance_sits_at_its_frequency_with_unit_dc_gain():
    for pu in PICKUPS.values():
        b, a = pickup_filter(pu, SR)
        w, h = signal.freqz(b, a, worN=np.arange(1.0, 12000.0), fs=SR)
        assert abs(h[0]) == pytest.approx(1.0, abs=1e-4)
        # second-order low-pass: peak at f0*sqrt(1 - 1/(2Q^2)), height Q/sqrt(1 - 1/(4Q^2))
        q = pu.q
        assert w[np.argmax(abs(h))] == pytest.approx(pu.resonance_hz * np.sqrt(1 - 0.5 / q ** 2), rel=0.01)
        assert abs(h).max() == pytest.approx(q / np.sqrt(1 - 0.25 / q ** 2), rel=0.02)


def test_synth_is_deterministic_and_prefix_stable():
    a = synth_di(3.0, SR, seed=3)
    b = synth_di(3.0, SR, seed=3)
    c = synth_di(3.0, SR, seed=4)
    longer = synth_di(5.0, SR, seed=3)
    assert a.dtype == np.float32 and a.shape == (3 * SR,)
    assert a.tobytes() == b.tobytes()
    assert np.abs(a - c).max() > 0.01
    assert longer[: a.size].tobytes() == a.tobytes()


def test_levels_look_like_a_real_di():
    x = synth_di(20.0, SR, seed=0).astype(np.float64)
    peak_db = 20 * np.log10(np.abs(x).max())
    rms_db = 10 * np.log10(np.mean(x ** 2))
    assert -14.0 < peak_db <= -0.99
    assert -30.0 < rms_db < -16.0
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    centroid = float((freqs * spec).sum() / spec.sum())
    assert 200.0 < centroid < 1500.0  # real DI clips: 250..1000 Hz


def test_plan_covers_all_phrase_kinds_and_the_whole_neck():
    plans = plan_phrases(210.0, SR, seed=0)
    assert {p.kind for p in plans} == set(PHRASE_KINDS)
    pitches = [nt.pitch for p in plans for nt in p.notes]
    assert min(pitches) <= 41 and max(pitches) >= 76  # low E riffs and high lead lines
    assert any(nt.palm_mute for p in plans for nt in p.notes)
    assert any(nt.legato for p in plans for nt in p.notes)
    assert any(nt.curve for p in plans for nt in p.notes)
    starts = [p.start for p in plans]
    assert starts == sorted(starts) and starts[-1] < 210 * SR


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ConfigError, match="seconds"):
        synth_di(0.0)
    with pytest.raises(ConfigError, match="pickup"):
        render_notes([], 0.1, SR, pickup="piezo")
