"""A guitar DI synthesiser: plucked-string waveguides and a magnetic pickup playing phrases.

It exists so that a fresh clone with no recordings (and CI) has realistic clean guitar to push
through the virtual devices. Nothing here is a toy sine: every string is a digital waveguide
(Karplus-Strong family) with

* a circular delay line read with cubic Lagrange interpolation, so the loop length is
  fractional and may change every sample (slides, bends, vibrato, hammer-ons);
* a one-pole loss filter whose gain and pole give a chosen decay time (T60) at the fundamental
  and at 3 kHz, so highs die faster than lows, palm mutes die in a few hundred ms;
* a first-order allpass for the stiffness of wound strings (slightly sharp upper partials);
* tuning compensation: the read delay is the period minus the phase delays of the loss filter
  and allpass at the played frequency, so a note sounds at its pitch within a cent;
* a pluck: a raised-cosine pulse (narrower and louder with velocity, i.e. brighter) through the
  pick-position comb ``1 - z^-beta*P``.

The pickup sees each string through its own position comb (a fixed travel time from the
bridge, so fretted notes move the notches like on a real guitar), then the pickup coil and
cable capacitance give a resonant low-pass (2.5-5 kHz, Q 1.5-3). A DC blocker, a small hum
and a noise floor near -88 dBFS finish the "DI box".

What is played (notes, phrases, their levels and timing) comes from
:mod:`ampxfer_lib.sample_data.phrases`; this module is the instrument that plays it.

Everything is deterministic from the seed: phrase ``k`` is planned from
``numpy.random.default_rng((seed, k))`` and rendered on its own, so ``synth_di(10)`` is
exactly the first 10 s of ``synth_di(210)`` (same seed and rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import numba
import numpy as np
from scipy import signal

from ampxfer_lib.errors import ConfigError
from ampxfer_lib.sample_data.phrases import STANDARD_TUNING, TAIL_SECONDS, Note, PhrasePlan, plan_phrases

# Stiffness allpass coefficient per string (negative: upper partials slightly sharp). Wound
# strings are stiffer; the plain top strings barely.
_DISPERSION = (-0.22, -0.18, -0.14, -0.08, -0.04, -0.03)
# Frequency where the second decay time of the loss filter is specified.
_HF_REF_HZ = 3000.0


def midi_to_hz(m):
    return 440.0 * np.power(2.0, (np.asarray(m, dtype=np.float64) - 69.0) / 12.0)


@dataclass(frozen=True)
class Pickup:
    """A magnetic pickup: distance from the bridge (fraction of the scale) and coil resonance."""

    name: str
    position: float  # distance from the bridge / scale length
    resonance_hz: float
    q: float


PICKUPS = {
    "bridge_humbucker": Pickup("bridge_humbucker", 0.07, 3300.0, 2.0),
    "neck_humbucker": Pickup("neck_humbucker", 0.24, 2700.0, 1.6),
    "bridge_single": Pickup("bridge_single", 0.065, 4600.0, 2.8),
    "neck_single": Pickup("neck_single", 0.22, 4900.0, 2.4),
}


# --------------------------------------------------------------------------------------------
# The string: one waveguide loop per string, per-sample control arrays.

@numba.njit(cache=True)
def _string_loop(exc, delay, gain, pole, disp, buf_len):
    """Run one string. exc, delay, gain, pole: (T,) float64 -> (T,) float64 loop signal.

    delay is the read distance in samples (>= 3), gain/pole the loss filter
    ``gain*(1-pole)/(1-pole z^-1)``, disp the allpass coefficient.
    """
    n_samples = exc.shape[0]
    buf = np.zeros(buf_len)
    mask = buf_len - 1
    out = np.empty(n_samples)
    lp = 0.0
    ap_in = 0.0
    ap_out = 0.0
    for n in range(n_samples):
        pos = n - delay[n]
        i = int(math.floor(pos))
        f = pos - i
        xm1 = buf[(i - 1) & mask]
        x0 = buf[i & mask]
        x1 = buf[(i + 1) & mask]
        x2 = buf[(i + 2) & mask]
        # cubic Lagrange through the points at -1, 0, 1, 2, evaluated at f
        v = (-f * (f - 1.0) * (f - 2.0) / 6.0 * xm1
             + (f + 1.0) * (f - 1.0) * (f - 2.0) / 2.0 * x0
             - (f + 1.0) * f * (f - 2.0) / 2.0 * x1
             + (f + 1.0) * f * (f - 1.0) / 6.0 * x2)
        a = pole[n]
        lp = gain[n] * (1.0 - a) * v + a * lp
        ap = disp * lp + ap_in - disp * ap_out
        ap_in = lp
        ap_out = ap
        y = exc[n] + ap
        buf[n & mask] = y
        out[n] = y
    return out


def _loss_phase_delay(w, pole):
    """Phase delay (samples) of (1-a)/(1-a z^-1) at normalised angular frequency w."""
    return np.arctan2(pole * np.sin(w), 1.0 - pole * np.cos(w)) / w


def _allpass_phase_delay(w, c):
    """Phase delay (samples) of (c + z^-1)/(1 + c z^-1) at w."""
    return 1.0 - 2.0 * np.arctan2(c * np.sin(w), 1.0 + c * np.cos(w)) / w


def _onepole_mag(w, pole):
    return (1.0 - pole) / np.sqrt(1.0 - 2.0 * pole * np.cos(w) + pole * pole)


def sustain_t60(f0: float) -> float:
    """Decay time (s, -60 dB) of a freely ringing note's fundamental: low notes ring longest
    (open low E about 12 s), notes high on the neck a few seconds."""
    return float(np.clip(12.0 * (82.0 / f0) ** 0.5, 2.5, 14.0))


def loss_filter(f0: float, t60: float, t60_hf: float, sample_rate: int) -> Tuple[float, float]:
    """(gain, pole) of the loop filter so partials near f0 decay in t60 s and near 3 kHz in t60_hf s.

    Per period the fundamental must lose 60 dB * (1 / (f0 * t60)); the ratio of the two loop
    gains fixes the pole (bisection: the magnitude ratio falls monotonically with the pole).
    """
    w0 = 2 * np.pi * f0 / sample_rate
    wh = 2 * np.pi * min(_HF_REF_HZ, 0.45 * sample_rate) / sample_rate
    g0 = 10.0 ** (-3.0 / (f0 * t60))
    gh = 10.0 ** (-3.0 / (f0 * max(min(t60_hf, t60), 1e-3)))
    target = gh / g0
    lo, hi = 0.0, 0.995
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _onepole_mag(wh, mid) / _onepole_mag(w0, mid) > target:
            lo = mid
        else:
            hi = mid
    pole = 0.5 * (lo + hi)
    gain = min(g0 / _onepole_mag(w0, pole), 0.99995)
    return float(gain), float(pole)


def _pluck(width: float, comb: float) -> np.ndarray:
    """Pick excitation: a step minus the step ``comb`` samples later (the pick-position comb
    applied to a plucked string's initial kink), smoothed by a raised cosine of ``width``
    samples (the pick's contact time: narrower = brighter). Harmonics fall as 1/k, like a real
    plucked string seen by a velocity-sensing pickup."""
    n = max(int(round(width)), 2)
    d = max(int(round(comb)), 1)
    kernel = 0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(n) + 0.5) / n)
    kernel /= kernel.sum()
    return np.convolve(np.ones(d), kernel)


def _render_string(notes: Sequence[Note], string: int, n_samples: int, sample_rate: int,
                   pickup: Pickup, rng: np.random.Generator) -> np.ndarray:
    """All notes of one string -> (n_samples,) float64 pickup signal (before coil filter)."""
    sr = sample_rate
    open_pitch = STANDARD_TUNING[string]
    f_open = float(midi_to_hz(open_pitch))
    notes = sorted(notes, key=lambda nt: nt.onset)
    pitch = np.full(n_samples, float(open_pitch))
    # a string nobody touched yet is silent; keep its loop well damped
    g_d, a_d = loss_filter(f_open, 0.05, 0.02, sr)
    gain = np.full(n_samples, g_d)
    pole = np.full(n_samples, a_d)
    exc = np.zeros(n_samples)
    slide_noise = np.zeros(n_samples)
    predamp = int(0.004 * sr)
    onsets = [int(round(nt.onset * sr)) for nt in notes]
    for k, nt in enumerate(notes):
        n0 = onsets[k]
        if n0 >= n_samples:
            break
        n_next = onsets[k + 1] if k + 1 < len(notes) else n_samples
        n_next = min(n_next, n_samples)
        f0 = float(midi_to_hz(nt.pitch))
        if not nt.legato:
            gp, ap = loss_filter(f0, 0.03, 0.01, sr)
            a = max(n0 - predamp, 0)
            # the pick touches the still-vibrating string just before the new note (the
            # previous note keeps its pitch meanwhile; later notes overwrite earlier ones)
            gain[a:n0] = gp
            pole[a:n0] = ap
        if nt.palm_mute:
            t60, t60_hf = 0.18 + 0.15 * (1 - nt.velocity), 0.03
        else:
            t60 = sustain_t60(f0)
            t60_hf = 0.55 * t60 ** 0.5 * (0.6 + 0.4 * nt.velocity)
        g, a = loss_filter(f0, t60, t60_hf, sr)
        seg = slice(n0, n_next)
        gain[seg] = g
        pole[seg] = a
        n_rel = min(n0 + int(round(nt.duration * sr)), n_next)
        if n_rel < n_next:
            gr, ar = loss_filter(f0, 0.09, 0.03, sr)
            gain[n_rel:n_next] = gr
            pole[n_rel:n_next] = ar
        # pitch curve over the note's life on this string
        t = np.arange(n_next - n0) / sr
        if nt.curve:
            ct = np.array([c[0] for c in nt.curve])
            cp = np.array([c[1] for c in nt.curve])
            p = np.interp(t, ct, cp)
        else:
            p = np.full(t.shape, float(nt.pitch))
        if nt.legato and n0 > 0:
            # the fretting finger lands in about 2 ms; a jump in loop length would click
            ramp = min(int(0.002 * sr), p.size)
            prev = pitch[n0 - 1]
            p[:ramp] = prev + (p[:ramp] - prev) * (np.arange(1, ramp + 1) / ramp)
        if nt.vibrato:
            depth, rate, start = nt.vibrato
            env = np.clip((t - start) / 0.15, 0.0, 1.0)
            p = p + depth * env * np.sin(2 * np.pi * rate * np.maximum(t - start, 0.0))
        pitch[seg] = p
        if nt.curve and p.size > 1:
            # fret and winding noise while the finger slides: band-limited noise, scaled by speed
            speed = np.abs(np.diff(p, prepend=p[0])) * sr  # semitones / s
            amp = 0.004 * nt.velocity * np.clip(speed / 40.0, 0.0, 1.0)
            if string <= 2:
                amp *= 2.0  # wound strings squeak more
            slide_noise[seg] += amp * rng.standard_normal(p.size)
        # the pluck: narrower pulse = brighter; the pick position comb is a fixed travel time
        v = float(np.clip(nt.velocity, 0.05, 1.0))
        scale = 0.35 if nt.legato else 1.0
        width_ms = 0.15 + 1.2 * (1.0 - v) ** 1.5 + (0.6 if nt.palm_mute else 0.0)
        if nt.legato:
            width_ms += 0.6
        comb = nt.pick_position * sr / f_open
        e = _pluck(width_ms * 1e-3 * sr, comb) * (scale * v ** 1.4)
        # pick scrape: a millisecond of noise on the attack
        e += 0.03 * scale * v * rng.standard_normal(e.size) * np.exp(-np.arange(e.size) / (0.0007 * sr))
        end = min(n0 + e.size, n_samples)
        exc[n0:end] += e[:end - n0]
    f = midi_to_hz(pitch)
    w = 2 * np.pi * f / sr
    period = sr / f
    c = _DISPERSION[string]
    delay = period - _loss_phase_delay(w, pole) - _allpass_phase_delay(w, c)
    buf_len = 1 << int(np.ceil(np.log2(delay.max() + 8)))
    y = _string_loop(exc, delay, gain, pole, c, buf_len)
    # pickup position comb: wave travel bridge -> pickup -> bridge is a fixed time per string
    d_pu = pickup.position * sr / f_open
    idx = np.arange(n_samples) - d_pu
    delayed = np.interp(idx, np.arange(n_samples), y, left=0.0)
    out = y - delayed
    if np.any(slide_noise):
        b, a = signal.butter(2, [1200.0, min(6000.0, 0.45 * sr)], btype="bandpass", fs=sr)
        out += signal.lfilter(b, a, slide_noise)
    return out


def pickup_filter(pickup: Pickup, sample_rate: int) -> Tuple[np.ndarray, np.ndarray]:
    """Coil inductance with cable capacitance: a resonant 2nd-order low-pass (bilinear, prewarped).

    Returns (b, a) for ``scipy.signal.lfilter``; unity gain at DC, peak near resonance_hz.
    """
    fs = float(sample_rate)
    # prewarp so the resonance lands exactly at resonance_hz after the bilinear transform
    w0 = 2 * fs * np.tan(np.pi * pickup.resonance_hz / fs)
    b, a = signal.bilinear([w0 * w0], [1.0, w0 / pickup.q, w0 * w0], fs=fs)
    return b, a


def render_notes(notes: Sequence[Note], seconds: float, sample_rate: int = 48000,
                 pickup: str = "bridge_humbucker", seed: int = 0) -> np.ndarray:
    """Render notes through the strings and a pickup, no level normalisation. -> (T,) float64."""
    if pickup not in PICKUPS:
        raise ConfigError(f"unknown pickup {pickup!r}; choose one of {sorted(PICKUPS)}")
    pu = PICKUPS[pickup]
    n = int(round(seconds * sample_rate))
    rng = np.random.default_rng(seed)
    out = np.zeros(n)
    for s in range(6):
        ns = [nt for nt in notes if nt.string == s]
        if ns:
            out += _render_string(ns, s, n, sample_rate, pu, rng)
    b, a = pickup_filter(pu, sample_rate)
    out = signal.lfilter(b, a, out)
    # DC blocker / input coupling of the interface
    bh, ah = signal.butter(1, 20.0, btype="highpass", fs=sample_rate)
    return signal.lfilter(bh, ah, out)


_PEAK_LIMIT = 10 ** (-1.0 / 20)


def _render_phrase(plan: PhrasePlan, sample_rate: int, seed: int, index: int) -> np.ndarray:
    y = render_notes(plan.notes, plan.length / sample_rate, sample_rate, plan.pickup,
                     seed=int(np.random.default_rng((seed, index, 1)).integers(2**31)))
    body = y[: max(plan.length - int(TAIL_SECONDS * sample_rate), 1)]
    rms = float(np.sqrt(np.mean(body ** 2))) + 1e-12
    y *= 10 ** (plan.level_db / 20) / rms
    peak = float(np.max(np.abs(y)))
    if peak > _PEAK_LIMIT:
        y *= _PEAK_LIMIT / peak
    return y


def _noise_floor(n: int, sample_rate: int, seed: int) -> np.ndarray:
    """Hiss near -88 dBFS and a trace of mains hum, made per second so any prefix is stable."""
    out = np.empty(n)
    for b0 in range(0, n, sample_rate):
        b1 = min(b0 + sample_rate, n)
        rng = np.random.default_rng((seed, b0 // sample_rate, 2))
        out[b0:b1] = rng.standard_normal(b1 - b0) * 10 ** (-90 / 20)
    t = np.arange(n) / sample_rate
    hum = sum(a * np.sin(2 * np.pi * 60.0 * h * t + h) for h, a in ((1, 1.0), (2, 0.4), (3, 0.6), (5, 0.3)))
    bh, ah = signal.butter(1, 20.0, btype="highpass", fs=sample_rate)
    return signal.lfilter(bh, ah, out) + hum * 10 ** (-86 / 20)


def synth_di(seconds: float, sample_rate: int = 48000, seed: int = 0) -> np.ndarray:
    """A clean electric-guitar DI recording. -> (round(seconds*sample_rate),) float32 in [-1, 1].

    Deterministic for (seconds, sample_rate, seed); a shorter call is a prefix of a longer one.
    """
    if not seconds > 0:
        raise ConfigError(f"seconds must be positive, got {seconds}")
    if sample_rate < 22050:
        raise ConfigError(f"sample_rate {sample_rate} is too low for guitar; use 44100 or 48000")
    total = int(round(seconds * sample_rate))
    out = _noise_floor(total, sample_rate, seed)
    for k, plan in enumerate(plan_phrases(seconds, sample_rate, seed)):
        y = _render_phrase(plan, sample_rate, seed, k)
        end = min(plan.start + y.size, total)
        out[plan.start:end] += y[: end - plan.start]
    return out.astype(np.float32)
