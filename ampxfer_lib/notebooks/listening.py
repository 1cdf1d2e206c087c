"""Listening to captures fairly: loudness matching, players, null tests, per-clip ESR, a knob player.

Louder sounds better to everyone, so every comparison here is **loudness-matched** first:
each clip is scaled to the same integrated loudness (ITU-R BS.1770: K-weighting, 400 ms
blocks, absolute gate at -70 LUFS, relative gate 10 LU below the ungated level), then all of
them together are lowered, if needed, until the loudest peak sits at the ceiling, so no clip
clips. Players embed the audio as lossless FLAC (:data:`AUDIO_FORMAT`) and play it as is, so
the browser plays exactly these levels; starting one player pauses the others of its table.
:class:`KnobPlayer` plays a knob-conditioned model at the setting of a slider. The blind ABX
test is :mod:`ampxfer_lib.notebooks.abx`.
"""

from __future__ import annotations

import base64
import html
import io
import math
import threading
import uuid
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ampxfer_lib.errors import ConfigError
from ampxfer_lib.training.losses import esr_numpy

#: Integrated loudness clips are matched to (LUFS), unless that would push a peak past the ceiling.
TARGET_LUFS = -20.0
#: Highest sample peak after matching (dBFS).
CEILING_DBFS = -1.0
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = 10.0
BLOCK_SECONDS = 0.4
BLOCK_STEP_SECONDS = 0.1


# --------------------------------------------------------------------------- loudness

def k_weighting(rate: int) -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """BS.1770 K-weighting at ``rate``: (b, a) of the high shelf, then of the high-pass.

    Both stages are the analog prototypes behind the standard's 48 kHz coefficients (shelf
    +4 dB around 1.68 kHz; high-pass at 38 Hz), mapped by the bilinear transform, so any
    rate gets the same curve; at 48 kHz they equal the published coefficients.
    """
    # Stage 1: the acoustic effect of the head, a high shelf.
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / rate)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh ** 0.4996667741545416
    a0 = 1.0 + k / q + k * k
    b1 = np.array([(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0])
    a1 = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    # Stage 2: the "revised low-frequency B" curve, a second-order high-pass.
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / rate)
    a0 = 1.0 + k / q + k * k
    b2 = np.array([1.0, -2.0, 1.0])
    a2 = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    return (b1, a1), (b2, a2)


def integrated_loudness(x: np.ndarray, rate: int) -> float:
    """Integrated loudness of mono (T,) audio in LUFS (-inf for silence), BS.1770-4 gating.

    A clip shorter than one 400 ms block is measured as a single block.
    """
    import scipy.signal as ss

    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"integrated_loudness expects mono (T,), got {x.shape}")
    if x.size == 0:
        return -math.inf
    (b1, a1), (b2, a2) = k_weighting(rate)
    y = ss.lfilter(b2, a2, ss.lfilter(b1, a1, x))
    block = int(round(BLOCK_SECONDS * rate))
    step = int(round(BLOCK_STEP_SECONDS * rate))
    sq = np.concatenate(([0.0], np.cumsum(y * y)))
    if y.size <= block:
        z = np.array([sq[-1] / y.size])
    else:
        starts = np.arange(0, y.size - block + 1, step)
        z = (sq[starts + block] - sq[starts]) / block
    with np.errstate(divide="ignore"):
        loud = -0.691 + 10.0 * np.log10(z)
    z = z[loud > ABSOLUTE_GATE_LUFS]
    if z.size == 0:
        return -math.inf
    relative = -0.691 + 10.0 * math.log10(float(np.mean(z))) - RELATIVE_GATE_LU
    with np.errstate(divide="ignore"):
        z = z[-0.691 + 10.0 * np.log10(z) > relative]
    return -0.691 + 10.0 * math.log10(float(np.mean(z)))


def peak_db(x: np.ndarray) -> float:
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def loudness_gains(clips: Mapping[str, np.ndarray], rate: int, target_lufs: float = TARGET_LUFS,
                   ceiling_dbfs: float = CEILING_DBFS) -> Tuple[Dict[str, float], float]:
    """Linear gains that give every clip the same loudness, no peak above the ceiling.

    Returns ``(gains, level)``: ``level`` (LUFS) is ``target_lufs`` or lower, as low as the
    clip with the least headroom needs. Silent clips get gain 1.
    """
    loud = {k: integrated_loudness(v, rate) for k, v in clips.items()}
    level = target_lufs
    for k, v in clips.items():
        if math.isfinite(loud[k]):
            # after a gain of (level - L) dB the peak is peak + level - L; keep it <= ceiling
            level = min(level, ceiling_dbfs - peak_db(v) + loud[k])
    gains = {k: (10.0 ** ((level - loud[k]) / 20.0) if math.isfinite(loud[k]) else 1.0) for k in clips}
    return gains, level


def match_loudness(clips: Mapping[str, np.ndarray], rate: int, target_lufs: float = TARGET_LUFS,
                   ceiling_dbfs: float = CEILING_DBFS) -> Dict[str, np.ndarray]:
    """The clips scaled by :func:`loudness_gains`: (T,) float32 each, same loudness, no clipping."""
    gains, _ = loudness_gains(clips, rate, target_lufs, ceiling_dbfs)
    return {k: (np.asarray(v, dtype=np.float64) * gains[k]).astype(np.float32) for k, v in clips.items()}


# --------------------------------------------------------------------------- players

#: How clips are embedded in the page. FLAC is lossless (a blind test must not hear a codec)
#: and about a fifth of a 16-bit WAV for guitar; every current browser plays it (Chrome,
#: Firefox, Safari 11+, Edge, VS Code's webview). "wav" is the fallback.
AUDIO_FORMAT = "flac"
AUDIO_MIME = {"flac": "audio/flac", "wav": "audio/wav"}
#: Class of an element whose players pause each other (a table of players, the ABX widget).
PLAYER_GROUP_CLASS = "ampxfer-players"
# Starting one player pauses the others of its group. An inline handler, because it stays in
# a saved notebook and works wherever the HTML is shown (JupyterLab, Colab, VS Code) without
# a front-end extension; where a front end strips it, the players still play, just not
# exclusively.
_PAUSE_OTHERS = ("var g=this.closest('." + PLAYER_GROUP_CLASS + "');if(g){g.querySelectorAll('audio')"
                 ".forEach(function(a){if(a!==this){a.pause();}},this);}")
# A network error on a data URI is transient (the bytes are in the page): Chromium raised
# one, rarely, on a knob player seeking under load. One reload, then the error stands.
_RELOAD_ON_NETWORK_ERROR = "if(this.error&&this.error.code===2&&!this.dataset.reloaded){this.dataset.reloaded='1';this.load();}"


def encode_audio(x: np.ndarray, rate: int, fmt: str = AUDIO_FORMAT) -> bytes:
    """(T,) audio as a 16-bit FLAC or WAV file's bytes (values beyond +-1 are clipped)."""
    import soundfile as sf

    if fmt not in AUDIO_MIME:
        raise ConfigError(f"audio format {fmt!r}: one of {', '.join(AUDIO_MIME)}")
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0), rate, format=fmt.upper(), subtype="PCM_16")
    return buf.getvalue()


def audio_html(x: np.ndarray, rate: int, fmt: str = AUDIO_FORMAT, attrs: Optional[Mapping[str, str]] = None) -> str:
    """An ``<audio controls>`` element playing (T,) audio embedded as a data URI, as is (no
    normalising). It pauses the other players of its group (:data:`PLAYER_GROUP_CLASS`) when it
    starts; ``attrs`` are further attributes (event handlers, ``loop``), escaped here."""
    data = base64.b64encode(encode_audio(x, rate, fmt)).decode("ascii")
    extra = {"onplay": _PAUSE_OTHERS, "onerror": _RELOAD_ON_NETWORK_ERROR, **dict(attrs or {})}
    more = "".join(f' {k}="{html.escape(v, quote=True)}"' if v else f" {k}" for k, v in extra.items())
    return f'<audio controls preload="metadata" src="data:{AUDIO_MIME[fmt]};base64,{data}"{more}></audio>'


def players(clips: Mapping[str, np.ndarray], rate: int, match: bool = True, target_lufs: float = TARGET_LUFS,
            ceiling_dbfs: float = CEILING_DBFS, fmt: str = AUDIO_FORMAT) -> Dict[str, str]:
    """Label -> ``<audio>`` element (:func:`audio_html`), loudness-matched unless ``match`` is False."""
    scaled = match_loudness(clips, rate, target_lufs, ceiling_dbfs) if match else \
        {k: np.clip(np.asarray(v, dtype=np.float32), -1.0, 1.0) for k, v in clips.items()}
    return {k: audio_html(v, rate, fmt) for k, v in scaled.items()}


def _table(rows: Sequence[Tuple[str, str]], caption: str):
    from IPython.display import HTML

    cells = "".join(f"<tr><td style='text-align:left;padding-right:1em'><b>{html.escape(k)}</b></td>"
                    f"<td>{player}</td></tr>" for k, player in rows)
    head = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    return HTML(f"<table class='{PLAYER_GROUP_CLASS}'>{head}{cells}</table>")


def player_table(clips: Mapping[str, np.ndarray], rate: int, caption: str = "", match: bool = True, **kwargs):
    """One HTML table of labelled players (IPython ``HTML``); stays playable in a saved notebook."""
    return _table(list(players(clips, rate, match, **kwargs).items()), caption)


def null_table(target: np.ndarray, outputs: Mapping[str, np.ndarray], rate: int, caption: str = "",
               fmt: str = AUDIO_FORMAT):
    """Players of the null tests ``target - output``, all at the gain that brings the target to
    the matching level (:func:`loudness_gains`), so a quieter difference means a closer model.
    Labels carry the difference's level relative to the target (dB)."""
    gains, _ = loudness_gains({"target": target}, rate)
    g = gains["target"]
    rows = [("target (for reference)", np.asarray(target, dtype=np.float64) * g)]
    for name, out in outputs.items():
        diff, level = null_test(target, out)
        rows.append((f"target - {name} ({level:+.1f} dB)", diff.astype(np.float64) * g))
    return _table([(k, audio_html(v, rate, fmt)) for k, v in rows], caption)


def widget_bundle(widget, hint: str) -> Dict[str, object]:
    """The display bundle of an ipywidgets widget whose plain-text form is ``hint``.

    A front end without the widget's state (a notebook opened without running it: GitHub,
    nbviewer, VS Code before the kernel starts) shows the text instead of the widget; by
    default that is ``VBox(children=(HTML(...`` and means nothing to a reader.
    """
    return {"text/plain": hint,
            "application/vnd.jupyter.widget-view+json": {"version_major": 2, "version_minor": 0,
                                                         "model_id": widget.model_id}}


# --------------------------------------------------------------------------- clips and errors

def pick_clips(x: np.ndarray, rate: int, seconds: float = 4.0, count: int = 3) -> List[Tuple[int, int]]:
    """The ``count`` loudest (by RMS) of the consecutive ``seconds``-long windows of (T,) x.

    Returns (start, stop) sample indices in time order; fewer when x is shorter.
    """
    n = int(round(seconds * rate))
    if n < 1:
        raise ConfigError("clips must be longer than one sample")
    windows = [(i, i + n) for i in range(0, len(x) - n + 1, n)]
    if not windows:
        return [(0, len(x))] if len(x) else []
    rms = [float(np.mean(np.square(x[a:b], dtype=np.float64))) for a, b in windows]
    order = sorted(range(len(windows)), key=lambda i: (-rms[i], i))[:count]
    return [windows[i] for i in sorted(order)]


def null_test(target: np.ndarray, output: np.ndarray) -> Tuple[np.ndarray, float]:
    """The difference ``target - output`` (T,) float32 and its level relative to the target in dB.

    The level is ``10 log10(ESR)``: -20 dB means the error is 1 % of the target's energy.
    """
    t = np.asarray(target, dtype=np.float64)
    o = np.asarray(output, dtype=np.float64)
    if t.shape != o.shape:
        raise ValueError(f"target {t.shape} and output {o.shape} differ in length")
    d = t - o
    energy = float(np.dot(t, t))
    err = float(np.dot(d, d))
    if energy == 0:
        level = -math.inf if err == 0 else math.inf
    else:
        level = 10.0 * math.log10(err / energy) if err > 0 else -math.inf
    return d.astype(np.float32), level


def esr(*, pred: np.ndarray, target: np.ndarray) -> float:
    """Plain error-to-signal ratio sum((t - p)^2) / sum(t^2) of a model's output ``pred`` and
    the device's ``target``, both (T,): :func:`ampxfer_lib.training.losses.esr_numpy`.

    Keyword-only, so that no call can swap the two: ESR is not symmetric.
    """
    return esr_numpy(pred, target)


def esr_rows(targets: Mapping[str, np.ndarray], outputs: Mapping[str, Mapping[str, np.ndarray]]) -> List[dict]:
    """Per-clip ESR: one row per clip, ``{"clip": name, <model>: esr, ...}``.

    ``targets``: clip -> (T,) target; ``outputs``: model -> {clip -> (T,) output}.
    """
    rows = []
    for clip, t in targets.items():
        row = {"clip": clip}
        for model, outs in outputs.items():
            row[model] = esr(pred=outs[clip], target=t)
        rows.append(row)
    return rows


def write_clips(folder, clips: Mapping[str, Mapping[str, np.ndarray]], models: Sequence[str], rate: int) -> List:
    """The listening clips as WAV files in ``folder``: ``clip{i}_{sound}.wav`` for every sound
    of the i-th clip (1-based, in order) and ``clip{i}_null_{model}.wav`` (target - model) for
    each of ``models``. ``clips``: clip name -> sound name -> (T,) audio, with a "target".

    Written under the folder's lock (waiting for another kernel's writes rather than refusing),
    so two notebooks writing the same clips never interleave. Returns the paths written."""
    from pathlib import Path

    from ampxfer_lib.data.audio import write_audio
    from ampxfer_lib.folders import hold_when_free

    folder = Path(folder)
    written = []
    with hold_when_free(folder, "listening clips"):
        for i, sounds in enumerate(clips.values(), start=1):
            outputs = dict(sounds) | {f"null_{k}": null_test(sounds["target"], sounds[k])[0] for k in models}
            for name, audio in outputs.items():
                path = folder / f"clip{i}_{name}.wav"
                write_audio(path, audio, rate)
                written.append(path)
    return written


def render_clip(weights, x: np.ndarray, start: int, stop: int, warmup: int = 4410,
                knobs: Sequence[float] = ()) -> np.ndarray:
    """Render ``x[start:stop]`` through a model, after playing up to ``warmup`` earlier samples
    (so the model's state has settled, as it would have in a plugin). Returns (stop-start,)."""
    from ampxfer_lib.model.render import render

    a = max(0, start - warmup)
    y = render(weights, np.asarray(x[a:stop], dtype=np.float32), knobs)
    return y[start - a:]


# --------------------------------------------------------------------------- knob player

def knob_note(value: float, knob: str, trained: Sequence[float] = (), held_out: Optional[float] = None) -> str:
    """What the knob value is to the model: a trained value, the held-out one, or in between."""
    def near(a: float, b: float) -> bool:
        return abs(a - b) < 1e-9

    where = f"{knob} {value:g}"
    if held_out is not None and near(value, held_out):
        return f"{where}: held out of training (the model never heard this setting)"
    if any(near(value, k) for k in trained):
        return f"{where}: a trained setting"
    if trained:
        return f"{where}: between trained settings"
    return where


class KnobPlayer:
    """A slider for a conditioned model's knob and a player of the model at that setting.

    ``render_at(value)`` returns the (T,) audio at a knob value (e.g. ``lambda k: render(model,
    clip, [k])``); levels are as the model plays them (clipped to +-1, no normalising). When
    the knob moves while the clip plays, the new rendering carries on from the same position;
    with ``loop`` (a checkbox) the clip repeats, so the knob can be swept while listening.
    The slider is named after the knob, and the held-out value is marked under it.
    """

    HINT = "Knob player: run this cell to use it (the slider needs a running kernel)."

    def __init__(self, render_at: Callable[[float], np.ndarray], rate: int, knob: str = "knob",
                 value: float = 0.5, held_out: Optional[float] = None, trained: Sequence[float] = (),
                 knob_range: Tuple[float, float] = (0.0, 1.0), step: float = 0.05, loop: bool = True,
                 fmt: str = AUDIO_FORMAT):
        import ipywidgets as widgets

        self.render_at = render_at
        self.rate = rate
        self.knob = knob
        self.held_out = held_out
        self.trained = [float(k) for k in trained]
        self.fmt = fmt
        # keys the position memory of this player's <audio> elements in the page
        self.key = uuid.uuid4().hex[:12]
        self._audio: Dict[float, str] = {}
        # knob moves may be handled concurrently; one at a time, so the last one shown is the last value
        self._lock = threading.Lock()
        self.slider = widgets.FloatSlider(value=value, min=knob_range[0], max=knob_range[1], step=step, description=knob,
                                          continuous_update=False, style={"description_width": "initial"},
                                          layout=widgets.Layout(width="420px"))
        self.looping = widgets.Checkbox(value=loop, description="loop", indent=False,
                                        layout=widgets.Layout(width="auto"))
        self.note = widgets.HTML()
        marks = ", ".join(f"{k:g}" for k in self.trained)
        legend = []
        if marks:
            legend.append(f"trained at {html.escape(knob)} = {marks}")
        if held_out is not None:
            legend.append(f"held out of training: {held_out:g}")
        self.legend = widgets.HTML(f"<small>{'; '.join(legend)}</small>" if legend else "")
        self.player = widgets.HTML()
        self.slider.observe(lambda _c: self._update(), names="value")
        self.looping.observe(lambda _c: self._update(), names="value")
        self.box = widgets.VBox([widgets.HBox([self.slider, self.looping]), self.note, self.player, self.legend])
        self.box.add_class("ampxfer-knob")
        self._update()

    def audio_at(self, value: float) -> str:
        """The ``<audio>`` element of the model at ``value``, rendered once per value."""
        value = round(float(value), 9)
        if value not in self._audio:
            self._audio[value] = base64.b64encode(encode_audio(self.render_at(value), self.rate, self.fmt)).decode("ascii")
        data = self._audio[value]
        # Position memory across renderings: the playing element writes its position and
        # state under this player's key; a new one (after a knob move) seeks there and plays
        # on if the old one was playing. The old element's "pause" on removal is ignored
        # (it is no longer connected), so it does not stop the new one.
        remember = f"if(this.isConnected){{(window.ampxferKnob=window.ampxferKnob||{{}})['{self.key}']=" \
                   "{t:this.currentTime,p:!this.paused};}"
        resume = (f"var s=(window.ampxferKnob||{{}})['{self.key}'];if(s){{if(s.t<this.duration){{this.currentTime=s.t;}}"
                  "if(s.p){var q=this.play();if(q){q.catch(function(){});}}}")
        attrs = {"ontimeupdate": remember, "onplay": remember, "onpause": remember, "onloadedmetadata": resume,
                 "onerror": _RELOAD_ON_NETWORK_ERROR}
        loop = " loop" if self.looping.value else ""
        more = "".join(f' {k}="{html.escape(v, quote=True)}"' for k, v in attrs.items())
        return (f'<audio controls preload="metadata"{loop} data-knob="{value:g}" '
                f'src="data:{AUDIO_MIME[self.fmt]};base64,{data}"{more}></audio>')

    def _update(self) -> None:
        with self._lock:
            value = float(self.slider.value)
            self.note.value = html.escape(knob_note(value, self.knob, self.trained, self.held_out))
            self.player.value = self.audio_at(value)

    def _repr_mimebundle_(self, include=None, exclude=None):
        return widget_bundle(self.box, self.HINT)
