"""Four virtual guitar devices, in two pairs like the published transfer experiment.

``ts9`` -> ``mt2`` (overdrive pedal -> high-gain distortion pedal) and ``bluesjr`` -> ``ht40``
(clean-to-crunch combo -> high-gain amp recorded through a cabinet and a microphone). Each pair
shares its front end, so a model of the source starts much closer to the target than a random
one, while the target has more gain (and, for ht40, a cabinet and a microphone), i.e. is harder.

The DSP is written from circuit knowledge, not copied:

* every linear part is an analog prototype (corner frequency, Q, or the RC values of a tone
  stack) turned into a digital filter by the bilinear transform at the sample rate in use, with
  the corner prewarped, so a device sounds the same at 44.1, 48 or 96 kHz;
* every strong nonlinearity runs oversampled (polyphase FIR, ``scipy.signal.resample_poly``)
  and memoryless in between filters, so its harmonics above Nyquist do not fold back;
* the state is real: coupling-capacitor high-passes and low-passes before and after each
  clipper (an LSTM has to remember ~10 ms of history), and the amps' power supply sags with a
  40 ms envelope of the power stage's drive.

Signal levels: 1.0 at the input is full scale of the DI; clip thresholds are in the same units.
Each device ends with a fixed output gain chosen so the sample DI peaks at -2.1 to -1.3 dBFS at the
default knob; its output never reaches 1.0 for any knob on that DI (tested).

Two more devices, ``EXTRA_DEVICES``, are not part of the sample data or its study (the
committed checksums and the study's pairs cover ``DEVICES`` alone); the shipped starting
models (``tools/build_starting_models.py``) are trained on them and on the four above:

* ``fuzz``: a Big-Muff-like fuzz, written from the published analysis of that circuit (a
  transistor booster, two cascaded clipping stages of about 40 dB each with diodes in their
  feedback, the passive tone control that mixes a ~400 Hz low-pass with a ~1.2 kHz high-pass
  and so scoops the mids, a recovery stage); here the clipping is hard and asymmetric (a
  transistor saturates sooner than it cuts off), so it adds even harmonics as well;
* ``ht40_amp``: the ``ht40`` amp without its cabinet and microphone: the same three triode
  stages, tone stack and power amp, heard like ``bluesjr`` through a line-level speaker
  emulation (what a load box's line out gives).

Public: ``DEVICES`` (name -> :class:`Device`), ``EXTRA_DEVICES``, :func:`render_device`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from scipy import signal

from ampxfer_lib.errors import AmpxferError, ConfigError


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    pair: str  # "pedal" or "amp": which transfer pair it belongs to
    role: str  # "source" or "target" in that pair
    default_gain: float


DEVICES: Dict[str, Device] = {
    "ts9": Device("ts9", "TS9-style overdrive: 720 Hz pre-emphasis, asymmetric diode clipping in "
                  "the op-amp feedback, tone low-pass (mid hump)", "pedal", "source", 0.5),
    "mt2": Device("mt2", "MT-2-style distortion: the ts9 front end with more gain, a second hard "
                  "clipping stage and a scooped EQ (bass and treble up, mids down)", "pedal",
                  "target", 0.5),
    "bluesjr": Device("bluesjr", "Blues Jr-style combo at crunch: two triode stages, Fender tone "
                      "stack, recovery stage, push-pull power amp with sag, transformer and "
                      "speaker response", "amp", "source", 0.6),
    "ht40": Device("ht40", "HT40-style overdrive channel into a miked cabinet: three cascaded "
                   "triode stages, tone stack, power amp with sag, 4x12-like cabinet impulse "
                   "response and microphone", "amp", "target", 0.5),
}
PAIRS: Tuple[Tuple[str, str], ...] = (("ts9", "mt2"), ("bluesjr", "ht40"))
#: Devices outside the sample data and its study (``pair`` and ``role`` empty): see the docstring.
EXTRA_DEVICES: Dict[str, Device] = {
    "fuzz": Device("fuzz", "Big-Muff-like fuzz: two cascaded ~40 dB hard asymmetric clipping stages, "
                   "the passive low-pass/high-pass tone mix (mid scoop), recovery stage", "", "", 0.7),
    "ht40_amp": Device("ht40_amp", "the HT40-style overdrive channel and power amp without cabinet or "
                       "microphone, through a line-level speaker emulation", "", "", 0.5),
}


# --------------------------------------------------------------------------------------------
# Linear building blocks. Each returns (b, a) for scipy.signal.lfilter at sample rate fs.

def _warp(f: float, fs: float) -> float:
    """Analog angular frequency that lands on ``f`` Hz after the bilinear transform."""
    f = min(f, 0.49 * fs)
    return 2.0 * fs * np.tan(np.pi * f / fs)


def lowpass1(f: float, fs: float):
    w = _warp(f, fs)
    return signal.bilinear([w], [1.0, w], fs=fs)


def highpass1(f: float, fs: float):
    w = _warp(f, fs)
    return signal.bilinear([1.0, 0.0], [1.0, w], fs=fs)


def lowpass2(f: float, q: float, fs: float):
    w = _warp(f, fs)
    return signal.bilinear([w * w], [1.0, w / q, w * w], fs=fs)


def peaking(f: float, gain_db: float, q: float, fs: float):
    """Second-order peak/notch: analog (s^2 + s*A*w/q + w^2) / (s^2 + s*w/(A*q) + w^2)."""
    w = _warp(f, fs)
    a = 10 ** (gain_db / 40)
    return signal.bilinear([1.0, a * w / q, w * w], [1.0, w / (a * q), w * w], fs=fs)


def low_shelf(f: float, gain_db: float, fs: float):
    """First-order shelf: gain_db below f, 0 dB above (analog (s + w*g) / (s + w))."""
    w = _warp(f, fs)
    g = 10 ** (gain_db / 20)
    # poles/zeros placed symmetrically around f so the transition is centred there
    r = np.sqrt(g)
    return signal.bilinear([1.0, w * r], [1.0, w / r], fs=fs)


def high_shelf(f: float, gain_db: float, fs: float):
    """First-order shelf: 0 dB below f, gain_db above."""
    w = _warp(f, fs)
    g = 10 ** (gain_db / 20)
    r = np.sqrt(g)
    return signal.bilinear([r, w], [1.0 / r, w], fs=fs)


# Nodes of the tone stack network: A top of the treble pot, W its wiper (the output), X the
# bottom of the treble pot and top of the bass pot, B the slope resistor's far end, Z the
# bottom of the bass pot and top of the mid pot.
_TS_NODES = ("A", "W", "X", "B", "Z")


def tone_stack_network(treble: float, mid: float, bass: float, r1=250e3, r2=1e6, r3=25e3,
                       r4=56e3, c1=250e-12, c2=20e-9, c3=20e-9):
    """Nodal matrices of the Fender/Marshall passive tone stack, knobs 0..1.

    Vin -> c1 -> A; A -(1-t)r1- W -t*r1- X (treble pot, wiper W is the output); Vin -> r4 -> B;
    B -c2- X; B -c3- Z; X -l*r2- Z (bass pot); Z -m*r3- ground (mid pot). Driven by a low
    impedance (cathode follower or plate through the stack's own slope resistor), unloaded.
    Returns (G, C, g_in, c_in): Y(s) = G + s*C (5x5) and source I(s) = (g_in + s*c_in) * Vin.
    """
    idx = {n: i for i, n in enumerate(_TS_NODES)}
    G = np.zeros((5, 5))
    C = np.zeros((5, 5))
    g_in = np.zeros(5)
    c_in = np.zeros(5)
    eps = 1.0  # a pot turned fully to one end still has about an ohm
    t, m, l = float(treble), float(mid), float(bass)

    def branch(mat, vec, n1, n2, y):
        for a, b in ((n1, n2), (n2, n1)):
            if a in ("in", "gnd"):
                continue
            mat[idx[a], idx[a]] += y
            if b == "in":
                vec[idx[a]] += y
            elif b != "gnd":
                mat[idx[a], idx[b]] -= y

    branch(C, c_in, "in", "A", c1)
    branch(G, g_in, "A", "W", 1.0 / max((1.0 - t) * r1, eps))
    branch(G, g_in, "W", "X", 1.0 / max(t * r1, eps))
    branch(G, g_in, "in", "B", 1.0 / r4)
    branch(C, c_in, "B", "X", c2)
    branch(C, c_in, "B", "Z", c3)
    branch(G, g_in, "X", "Z", 1.0 / max(l * r2, eps))
    branch(G, g_in, "Z", "gnd", 1.0 / max(m * r3, eps))
    return G, C, g_in, c_in


def tone_stack_analog(treble: float, mid: float, bass: float, **parts):
    """Analog transfer function Vout/Vin of the tone stack: (b, a) in descending powers of s.

    By Cramer's rule Vout = det(Y with the output column replaced by I) / det(Y); both are
    polynomials in s of degree <= 3 (three capacitors), recovered exactly by interpolating the
    determinants at a few real points of the normalised variable s / (2*pi*1 kHz)."""
    G, C, g_in, c_in = tone_stack_network(treble, mid, bass, **parts)
    w_ref = 2 * np.pi * 1000.0
    xs = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
    num, den = [], []
    out = _TS_NODES.index("W")
    for xv in xs:
        y = G + (xv * w_ref) * C
        i = g_in + (xv * w_ref) * c_in
        yw = y.copy()
        yw[:, out] = i
        den.append(np.linalg.det(y))
        num.append(np.linalg.det(yw))
    pn = np.polyfit(xs, num, 5)
    pd = np.polyfit(xs, den, 5)
    # back from x = s / w_ref to s; drop the (numerically zero) degrees above 3
    scale = w_ref ** np.arange(5, -1, -1, dtype=np.float64)
    bn, ad = (pn / scale)[2:], (pd / scale)[2:]
    return bn / ad[-1], ad / ad[-1]


def fmv_tone_stack(treble: float, mid: float, bass: float, fs: float, **parts):
    """The tone stack as a digital filter (b, a) at fs (bilinear transform)."""
    b, a = tone_stack_analog(treble, mid, bass, **parts)
    return signal.bilinear(b, a, fs=fs)


def _lf(ba, x):
    return signal.lfilter(ba[0], ba[1], x)


def _cascade(x, *filters):
    for ba in filters:
        x = signal.lfilter(ba[0], ba[1], x)
    return x


# --------------------------------------------------------------------------------------------
# Nonlinear building blocks (memoryless; run oversampled).

def soft_clip_asym(x, pos: float, neg: float):
    """Diode-pair-like soft clipping with different knees for the two polarities (even harmonics)."""
    return np.where(x >= 0.0, pos * np.tanh(x / pos), neg * np.tanh(x / neg))


def hard_clip(x, level: float, sharpness: float = 8.0):
    """Nearly hard clipping with a smooth knee: x / (1 + |x/level|^p)^(1/p)."""
    return x / (1.0 + np.abs(x / level) ** sharpness) ** (1.0 / sharpness)


def triode(x, grid: float = 1.0, cutoff: float = 1.6):
    """Triode-like stage transfer, slope 1 at rest: grid conduction softly limits the positive
    swing at ``grid``; the negative swing runs into cutoff with an exponential knee at
    ``cutoff``. The two curvatures differ, so it adds 2nd harmonic even at small signals."""
    return np.where(x >= 0.0, grid * np.tanh(x / grid), cutoff * np.expm1(np.minimum(x, 0.0) / cutoff))


_OS_CHUNK = 1 << 16
_OS_MARGIN = 64  # base-rate samples each side; the polyphase FIR reaches 10 of them


def oversampled(x: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], factor: int) -> np.ndarray:
    """Apply a memoryless ``fn`` at ``factor`` times the rate: (T,) -> (T,) float64.

    Runs in fixed chunks with margins wider than the resampling filters, so memory stays small
    and the result does not depend on the signal's length beyond its last few samples."""
    n = x.shape[0]
    out = np.empty(n)
    for s in range(0, n, _OS_CHUNK):
        e = min(s + _OS_CHUNK, n)
        a, b = max(s - _OS_MARGIN, 0), min(e + _OS_MARGIN, n)
        up = signal.resample_poly(x[a:b], factor, 1)
        down = signal.resample_poly(fn(up), 1, factor)
        out[s:e] = down[s - a: e - a]
    return out


def _taper(g: float, decades: float) -> float:
    """Audio-taper pot: 0..1 -> 0..1, logarithmic over ``decades`` (0 -> 0, 1 -> 1)."""
    return (10 ** (decades * g) - 1.0) / (10 ** decades - 1.0)


def _envelope(x, tau_s: float, fs: float):
    """Mean absolute level with a one-pole smoother of time constant tau_s."""
    p = np.exp(-1.0 / (tau_s * fs))
    return signal.lfilter([1.0 - p], [1.0, -p], np.abs(x))


# --------------------------------------------------------------------------------------------
# The devices. Each maps (T,) float64 at fs to (T,) float64 before the output gain.

def _ts_front(x, fs, drive_k: float, clip_pos: float, clip_neg: float, os: int):
    """Tube-Screamer gain stage: the op-amp passes the dry signal at unity and adds the
    720 Hz-high-passed, gain-boosted part, which the feedback diodes clip."""
    x = _cascade(x, highpass1(20.0, fs))  # input buffer coupling cap
    boosted = _cascade(x, highpass1(720.0, fs), lowpass1(6000.0, fs)) * drive_k
    return x + oversampled(boosted, lambda v: soft_clip_asym(v, clip_pos, clip_neg), os)


def _ts9(x, fs, gain):
    k = 1.0 + (51e3 + 500e3 * _taper(gain, 2.0)) / 4.7e3
    y = _ts_front(x, fs, k, 0.55, 0.42, 4)
    # tone section at noon: passive 723 Hz low-pass with part of the treble restored
    lo = _lf(lowpass1(723.0, fs), y)
    y = lo + 0.22 * (y - lo)
    return _cascade(y, lowpass1(9000.0, fs), highpass1(10.0, fs))


def _mt2(x, fs, gain):
    k = 1.0 + (51e3 + 500e3 * _taper(0.35 + 0.65 * gain, 2.0)) / 4.7e3
    y = _ts_front(x, fs, k, 0.55, 0.42, 4)
    lo = _lf(lowpass1(723.0, fs), y)
    y = lo + 0.22 * (y - lo)
    # second stage: more gain into nearly hard clipping, band-limited around it
    y = _cascade(y, highpass1(90.0, fs), lowpass1(5500.0, fs))
    k2 = 10 ** ((8.0 + 14.0 * gain) / 20)
    y = oversampled(y * k2, lambda v: hard_clip(v + 0.03, 0.5) - hard_clip(np.asarray(0.03), 0.5), 8)
    # the scooped EQ: bass and treble up, mids down
    y = _cascade(y, low_shelf(180.0, 4.0, fs), peaking(800.0, -5.0, 0.9, fs),
                 high_shelf(2500.0, 2.5, fs), lowpass2(7000.0, 0.707, fs), highpass1(15.0, fs))
    return y


def _power_amp(x, fs, sag: float, level: float):
    """Push-pull power stage: near-symmetric soft clipping; the supply sags with the drive."""
    env = _envelope(x, 0.04, fs)
    x = x / (1.0 + sag * env)
    return oversampled(x, lambda v: level * np.tanh(v / level + 0.05) - level * np.tanh(0.05), 4)


def _amp_front(x, fs, volume: float):
    """Shared preamp front end of both amps: V1 and V2 triode stages with coupling caps."""
    x = _cascade(x * 2.2, lowpass1(14000.0, fs))  # grid stopper and Miller capacitance
    x = oversampled(x, lambda v: 1.0 * triode(v, 1.0, 1.6), 4)
    x = _cascade(x, highpass1(35.0, fs), lowpass1(12000.0, fs)) * volume
    x = oversampled(x * 6.0, lambda v: triode(v, 1.0, 1.6), 4)
    return _cascade(x, highpass1(60.0, fs))


def _speaker_body(x, fs):
    """Output transformer low cut and a broad speaker resonance bump (long-ringing, so IIR).

    Kept first-order and broad on purpose: a second-order 70 Hz high-pass with a sharp 110 Hz
    resonance, right where a DI has most of its energy, stalled an LSTM-20 at ESR ~0.5 in a
    quick fit (0.3 with this response, 0.18 without any), far from what real amps allow."""
    return _cascade(x, highpass1(45.0, fs), peaking(115.0, 1.5, 0.7, fs))


def _speaker_cone(x, fs):
    """The speaker's breakup peaks and steep roll-off above 5 kHz (short-ringing)."""
    return _cascade(x, peaking(1700.0, 3.0, 3.0, fs), peaking(2900.0, 4.0, 4.0, fs),
                    peaking(4300.0, -5.0, 3.0, fs), lowpass2(5000.0, 0.8, fs),
                    lowpass2(6500.0, 0.6, fs))


def _bluesjr(x, fs, gain):
    vol = 0.12 + 1.1 * _taper(gain, 1.5)
    y = _amp_front(x, fs, vol)
    y = _lf(fmv_tone_stack(0.55, 0.5, 0.5, fs), y) * 4.0
    y = oversampled(y, lambda v: triode(v, 1.2, 2.0), 4)  # recovery stage
    y = _cascade(y, highpass1(40.0, fs))
    y = _power_amp(y * 1.1, fs, sag=0.35, level=1.0)
    # the combo's own 12" speaker, heard from its line-level speaker emulation
    return _speaker_cone(_speaker_body(y, fs), fs)


def cabinet_ir(fs: float, seconds: float = 0.008) -> np.ndarray:
    """A synthetic close-miked 4x12-like cabinet impulse response, (round(seconds*fs),) float64.

    The speaker cone (breakup peaks at 1.7 and 2.9 kHz, a dip at 4.3 kHz, steep roll-off above
    5 kHz) plus the cabinet's back-wall and floor reflections reaching the microphone 0.45 and
    1.9 ms after the direct sound; faded out over its last 2 ms. The cone's low resonance rings
    longer than a short IR can hold, so it stays an IIR filter in front of the IR."""
    n = int(round(seconds * fs))
    imp = np.zeros(n)
    imp[0] = 1.0
    h = _speaker_cone(imp, fs)
    out = h.copy()
    for delay_ms, amp in ((0.45, 0.25), (1.9, -0.1)):
        d = int(round(delay_ms * 1e-3 * fs))
        out[d:] += amp * h[: n - d]
    fade = int(round(0.002 * fs))
    out[n - fade:] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(fade) / fade)
    return out


def _ht40_head(x, fs, gain):
    """The HT40-style amp up to its speaker's low end (no cone, cabinet or microphone)."""
    vol = 0.2 + 1.6 * _taper(gain, 1.5)
    y = _amp_front(x, fs, vol)
    # a third cascaded stage with a bright cap: the overdrive channel
    y = _cascade(y, high_shelf(1500.0, 3.0, fs))
    y = oversampled(y * 3.0, lambda v: triode(v, 1.0, 1.4), 4)
    y = _cascade(y, highpass1(80.0, fs), lowpass1(10000.0, fs))
    y = _lf(fmv_tone_stack(0.6, 0.45, 0.5, fs, r1=220e3, r2=1e6, r3=22e3, r4=33e3,
                           c1=470e-12, c2=22e-9, c3=22e-9), y) * 3.0
    y = oversampled(y, lambda v: triode(v, 1.2, 2.0), 4)
    y = _cascade(y, highpass1(40.0, fs))
    y = _power_amp(y * 1.3, fs, sag=0.25, level=1.0)
    return _speaker_body(y, fs)


def _ht40(x, fs, gain):
    y = _ht40_head(x, fs, gain)
    y = signal.oaconvolve(y, cabinet_ir(fs))[: y.shape[0]]
    # dynamic microphone close to the grille: proximity bass, presence peak, top roll-off
    return _cascade(y, low_shelf(200.0, 2.0, fs), peaking(4500.0, 2.5, 1.5, fs),
                    lowpass2(9000.0, 0.7, fs))


def _ht40_amp(x, fs, gain):
    # the cone without the cabinet's reflections and the microphone: a load box's speaker emulation
    return _speaker_cone(_ht40_head(x, fs, gain), fs)


def _fuzz_clip(v, pos: float, neg: float):
    """Hard asymmetric clipping: the positive swing stops at ``pos``, the negative at ``-neg``."""
    return np.where(v >= 0.0, hard_clip(v, pos, 6.0), hard_clip(v, neg, 6.0))


def _fuzz(x, fs, gain):
    # input booster: a small coupling cap cuts the lows before they can muddy the clipping
    x = _cascade(x, highpass1(80.0, fs))
    k1 = 10 ** ((18.0 + 22.0 * gain) / 20)  # the sustain pot sets the first stage's gain
    y = oversampled(x * k1, lambda v: _fuzz_clip(v, 0.55, 0.35), 8)
    # each stage's feedback cap and the coupling cap between the stages
    y = _cascade(y, lowpass1(4500.0, fs), highpass1(100.0, fs))
    y = oversampled(y * 10 ** (34.0 / 20), lambda v: _fuzz_clip(v + 0.05, 0.5, 0.4) - _fuzz_clip(np.asarray(0.05), 0.5, 0.4), 8)
    y = _cascade(y, lowpass1(6000.0, fs))
    # the tone control at noon: half a 400 Hz low-pass plus half a 1.2 kHz high-pass (mid scoop)
    y = 0.5 * _lf(lowpass1(400.0, fs), y) + 0.5 * _lf(highpass1(1200.0, fs), y)
    return _cascade(y, highpass1(20.0, fs), lowpass1(9000.0, fs))


_DSP: Dict[str, Tuple[Callable, float]] = {
    # name -> (dsp, fixed output gain)
    # Output gains: the sample DI then peaks at -2.1 to -1.3 dBFS at the default knob and
    # below -0.8 dBFS at any knob setting.
    "ts9": (_ts9, 0.78),
    "mt2": (_mt2, 0.80),
    "bluesjr": (_bluesjr, 0.56),
    "ht40": (_ht40, 0.39),
    "fuzz": (_fuzz, 2.35),
    "ht40_amp": (_ht40_amp, 0.50),
}


def render_device(name: str, x: np.ndarray, sample_rate: int,
                  gain: Optional[float] = None) -> np.ndarray:
    """Play mono audio ``x`` (T,) through the named device from rest. -> (T,) float32.

    ``gain`` is the device's gain/drive knob in 0..1 (None: the device's default)."""
    known = {**DEVICES, **EXTRA_DEVICES}
    if name not in known:
        raise AmpxferError(f"unknown device {name!r}; the virtual devices are: "
                           f"{', '.join(known)}")
    g = known[name].default_gain if gain is None else float(gain)
    if not 0.0 <= g <= 1.0:
        raise ConfigError(f"gain for {name} must be in 0..1, got {gain}")
    if sample_rate < 22050:
        raise ConfigError(f"sample_rate {sample_rate} is too low for the devices; use 44100 or 48000")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ConfigError(f"render_device expects mono audio of shape (T,), got {x.shape}")
    dsp, level = _DSP[name]
    return (dsp(x, float(sample_rate), g) * level).astype(np.float32)
