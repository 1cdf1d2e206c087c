"""Listening to captures fairly: loudness matching, players, null tests, per-clip ESR, blind ABX.

Louder sounds better to everyone, so every comparison here is **loudness-matched** first:
each clip is scaled to the same integrated loudness (ITU-R BS.1770: K-weighting, 400 ms
blocks, absolute gate at -70 LUFS, relative gate 10 LU below the ungated level), then all of
them together are lowered, if needed, until the loudest peak sits at the ceiling, so no clip
clips. Players embed the audio as lossless FLAC (:data:`AUDIO_FORMAT`) and play it as is, so
the browser plays exactly these levels; starting one player pauses the others of its table.

The blind ABX test has a browser part (:class:`AbxWidget`, ipywidgets) and a plain part that
holds all the logic and is tested without one: :func:`abx_trials` draws the trials from a
seed (per trial: which model is A, which is B, and whether X is A or B), :class:`AbxSession`
records answers to a CSV file (rewritten atomically), :class:`AbxTest` runs sessions one
after another and refuses an answer that comes too soon after its trial loaded (a double
click), and :func:`abx_score` reports the number right with its one-sided binomial p-value
(the chance of doing at least that well by guessing). :class:`KnobPlayer` plays a
knob-conditioned model at the setting of a slider.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
import math
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ampxfer_lib.errors import ConfigError
from ampxfer_lib.fileio import PathLike, atomic_write_text

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
    extra = {"onplay": _PAUSE_OTHERS, **dict(attrs or {})}
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


def esr(target: np.ndarray, output: np.ndarray) -> float:
    """Plain error-to-signal ratio sum((t - o)^2) / sum(t^2) of two (T,) signals."""
    _, level = null_test(target, output)
    return 10.0 ** (level / 10.0) if math.isfinite(level) else (0.0 if level < 0 else math.inf)


def esr_rows(targets: Mapping[str, np.ndarray], outputs: Mapping[str, Mapping[str, np.ndarray]]) -> List[dict]:
    """Per-clip ESR: one row per clip, ``{"clip": name, <model>: esr, ...}``.

    ``targets``: clip -> (T,) target; ``outputs``: model -> {clip -> (T,) output}.
    """
    rows = []
    for clip, t in targets.items():
        row = {"clip": clip}
        for model, outs in outputs.items():
            row[model] = esr(t, outs[clip])
        rows.append(row)
    return rows


def render_clip(weights, x: np.ndarray, start: int, stop: int, warmup: int = 4410,
                knobs: Sequence[float] = ()) -> np.ndarray:
    """Render ``x[start:stop]`` through a model, after playing up to ``warmup`` earlier samples
    (so the model's state has settled, as it would have in a plugin). Returns (stop-start,)."""
    from ampxfer_lib.model.render import render

    a = max(0, start - warmup)
    y = render(weights, np.asarray(x[a:stop], dtype=np.float32), knobs)
    return y[start - a:]


# --------------------------------------------------------------------------- ABX

@dataclass(frozen=True)
class AbxTrial:
    """One ABX trial: the models behind A and B, and which of them X is ("A" or "B")."""

    index: int
    clip: str
    a: str
    b: str
    x: str

    @property
    def x_model(self) -> str:
        return self.a if self.x == "A" else self.b


def abx_trials(models: Sequence[str], clips: Sequence[str], n_trials: int, seed: int = 0) -> List[AbxTrial]:
    """``n_trials`` trials over two models, cycling through ``clips``; per trial the seed
    decides which model is A (the other is B) and whether X is A or B."""
    if len(models) != 2 or models[0] == models[1]:
        raise ConfigError(f"ABX compares two different models, got {list(models)}")
    if not clips:
        raise ConfigError("ABX needs at least one clip")
    if n_trials < 1:
        raise ConfigError("ABX needs at least one trial")
    rng = np.random.default_rng(seed)
    trials = []
    for i in range(n_trials):
        swap, x_is_b = (int(v) for v in rng.integers(0, 2, size=2))
        a, b = (models[1], models[0]) if swap else (models[0], models[1])
        trials.append(AbxTrial(i + 1, clips[i % len(clips)], a, b, "B" if x_is_b else "A"))
    return trials


def binomial_p_value(correct: int, trials: int) -> float:
    """P(at least ``correct`` right out of ``trials`` by guessing): sum_{i>=k} C(n, i) / 2^n."""
    if not 0 <= correct <= trials:
        raise ValueError(f"{correct} correct out of {trials} trials")
    return sum(math.comb(trials, i) for i in range(correct, trials + 1)) / 2 ** trials


@dataclass(frozen=True)
class AbxScore:
    correct: int
    answered: int
    p_value: float

    def summary(self) -> str:
        if self.answered == 0:
            return "no answers yet"
        verdict = ("you hear a difference (p < 0.05)" if self.p_value < 0.05
                   else "not distinguishable from guessing (p >= 0.05)")
        return (f"{self.correct} of {self.answered} right; p = {self.p_value:.3g} "
                f"(chance of doing this well by guessing): {verdict}")


def abx_score(results: Sequence[bool]) -> AbxScore:
    """Score of a list of right/wrong answers."""
    k, n = int(sum(bool(r) for r in results)), len(results)
    return AbxScore(k, n, binomial_p_value(k, n))


ABX_COLUMNS = ("time", "session", "listener", "trial", "clip", "a", "b", "x", "answer", "correct")


def read_abx_csv(path: PathLike) -> List[dict]:
    """Rows of an ABX answers file (empty when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != ABX_COLUMNS:
            raise ConfigError(f"{path}: not an ampxfer ABX answers file (columns {reader.fieldnames}); "
                              "choose another file name")
        return list(reader)


class AbxSession:
    """The state of one listener's ABX test; answers go to ``csv_path`` as they are given.

    ``answer("A"|"B")`` scores the current trial, appends its row to the CSV (the whole file
    is rewritten atomically, so a crash never leaves half a row) and moves to the next.
    """

    def __init__(self, trials: Sequence[AbxTrial], csv_path: PathLike, listener: str = "",
                 session: Optional[str] = None):
        self.trials = list(trials)
        self.csv_path = Path(csv_path)
        self.listener = listener
        self.session = session or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.results: List[bool] = []
        self.answers: List[str] = []
        read_abx_csv(self.csv_path)  # refuse a foreign file before the first answer

    @property
    def done(self) -> bool:
        return len(self.results) >= len(self.trials)

    @property
    def current(self) -> Optional[AbxTrial]:
        return None if self.done else self.trials[len(self.results)]

    def answer(self, choice: str) -> bool:
        """Record that the listener thinks X is ``choice`` ("A" or "B"); returns whether right."""
        choice = choice.upper()
        if choice not in ("A", "B"):
            raise ConfigError(f"an ABX answer is A or B, not {choice!r}")
        trial = self.current
        if trial is None:
            raise ConfigError("the ABX test is finished; start a new session for more trials")
        right = choice == trial.x
        row = {"time": _dt.datetime.now().isoformat(timespec="seconds"), "session": self.session,
               "listener": self.listener, "trial": trial.index, "clip": trial.clip, "a": trial.a, "b": trial.b,
               "x": trial.x, "answer": choice, "correct": int(right)}
        self._append(row)
        self.results.append(right)
        self.answers.append(choice)
        return right

    def _append(self, row: dict) -> None:
        rows = read_abx_csv(self.csv_path) + [row]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(ABX_COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(self.csv_path, buf.getvalue())

    def score(self) -> AbxScore:
        return abx_score(self.results)

    def reveal(self) -> List[dict]:
        """After the test: what A, B and X were in each answered trial, and the answer given."""
        return [{"trial": t.index, "clip": t.clip, "A": t.a, "B": t.b, "X": t.x_model, "answer": a, "right": r}
                for t, a, r in zip(self.trials, self.answers, self.results)]


def score_file(path: PathLike, session: Optional[str] = None) -> AbxScore:
    """Score of the answers in an ABX CSV (all sessions, or one)."""
    rows = [r for r in read_abx_csv(path) if session is None or r["session"] == session]
    return abx_score([r["correct"] == "1" for r in rows])


#: An answer this soon after its trial was loaded is not taken: it is the second click of a
#: double click (or a click already on its way before the buttons were disabled), and nobody
#: has heard X in that time.
MIN_ANSWER_SECONDS = 0.6


class AbxTest:
    """Blind ABX sessions one after another on one answers file: the logic of :class:`AbxWidget`.

    Session ``k`` (from 0) draws its trials with ``abx_trials(models, clips, n_trials, seed + k)``,
    so every new session is a new order. ``clock`` (seconds, monotonic) is injectable for tests.
    Thread-safe: a kernel may handle the two clicks of a double click at the same time (comm
    messages on subshells), and both must not pass the check before either is recorded.
    """

    def __init__(self, models: Sequence[str], clips: Sequence[str], n_trials: int, csv_path: PathLike,
                 listener: str = "", seed: int = 0, clock: Callable[[], float] = time.monotonic):
        self.models = tuple(models)
        self.clips = list(clips)
        self.n_trials = n_trials
        self.csv_path = Path(csv_path)
        self.listener = listener
        self.seed = seed
        self.clock = clock
        self.sessions: List[AbxSession] = []
        self.loaded_at = -math.inf
        self.lock = threading.RLock()
        self.new_session()

    @property
    def session(self) -> AbxSession:
        """The session being answered (or just finished)."""
        return self.sessions[-1]

    @property
    def done(self) -> bool:
        return self.session.done

    def new_session(self) -> AbxSession:
        """Start the next session (its first trial counts as loaded now)."""
        with self.lock:
            k = len(self.sessions)
            trials = abx_trials(self.models, self.clips, self.n_trials, seed=self.seed + k)
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            # the stamp alone repeats when a session is started within the second another ended
            self.sessions.append(AbxSession(trials, self.csv_path, self.listener, session=f"{stamp}-{k + 1}"))
            self.loaded_at = self.clock()
            return self.session

    def accepts_answer(self) -> bool:
        """Whether an answer now would be taken (a trial is loaded, not just now)."""
        return not self.done and self.clock() - self.loaded_at >= MIN_ANSWER_SECONDS

    def answer(self, choice: str) -> Optional[bool]:
        """Record an answer; returns whether it was right, or None when it is not taken
        (the session is finished, or the trial was loaded under :data:`MIN_ANSWER_SECONDS` ago)."""
        with self.lock:
            if not self.accepts_answer():
                return None
            right = self.session.answer(choice)
            self.loaded_at = self.clock()
            return right

    def status(self) -> str:
        """One plain line: the trial and clip, or the session's score when it is over."""
        trial = self.session.current
        if trial is None:
            return f"Finished: {self.session.score().summary()}."
        return (f"Trial {trial.index} of {len(self.session.trials)} \u2014 {trial.clip}. "
                "Listen to A, B and X; is X the same as A or as B?")


#: Column headings of the ABX reveal table, for the keys of :meth:`AbxSession.reveal`.
REVEAL_COLUMNS = (("trial", "Trial"), ("clip", "Clip"), ("A", "A was"), ("B", "B was"), ("X", "X was"),
                  ("answer", "You said X is"), ("right", "Result"))


def reveal_html(rows: Sequence[Mapping[str, object]]) -> str:
    """The reveal table (:meth:`AbxSession.reveal`) as HTML with labelled columns."""
    head = "".join(f"<th style='text-align:left;padding-right:1em'>{label}</th>" for _, label in REVEAL_COLUMNS)
    body = "".join("<tr>" + "".join(
        f"<td style='text-align:left;padding-right:1em'>"
        f"{('right' if r[k] else 'wrong') if k == 'right' else html.escape(str(r[k]))}</td>"
        for k, _ in REVEAL_COLUMNS) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class AbxWidget:
    """The browser side of an :class:`AbxTest`: players for A, B and X, two answer buttons.

    ``sounds[(clip, model)]`` is the (T,) audio of a model on a clip; each clip's sounds are
    loudness-matched together. Model names are never shown until a session is over. Starting
    one player pauses the other two; the answer buttons are disabled while the next trial
    loads; after the last trial the reveal table and a "new session" button appear.
    """

    HINT = "Blind ABX test: run this cell to start it (its players and buttons need a running kernel)."

    def __init__(self, test: AbxTest, sounds: Mapping[Tuple[str, str], np.ndarray], rate: int,
                 fmt: str = AUDIO_FORMAT):
        import ipywidgets as widgets

        self.test = test
        self.rate = rate
        self._audio: Dict[Tuple[str, str], str] = {}
        for clip in test.clips:
            models = [m for (c, m) in sounds if c == clip]
            matched = match_loudness({m: sounds[(clip, m)] for m in models}, rate)
            for m in models:
                self._audio[(clip, m)] = audio_html(matched[m], rate, fmt)
        missing = [(c, m) for c in test.clips for m in test.models if (c, m) not in self._audio]
        if missing:
            raise ConfigError(f"no sound for model {missing[0][1]!r} on clip {missing[0][0]!r}")
        self.status = widgets.HTML()
        self.players = {k: widgets.HTML() for k in ("A", "B", "X")}
        self.buttons = {k: widgets.Button(description=f"X is {k}", button_style="info") for k in ("A", "B")}
        for k, button in self.buttons.items():
            button.on_click(lambda _b, k=k: self.choose(k))
        self.again = widgets.Button(description="New session", button_style="success",
                                    layout=widgets.Layout(display="none", width="auto"))
        self.again.on_click(lambda _b: self.new_session())
        self.result = widgets.HTML()
        boxes = [widgets.VBox([widgets.HTML(f"<b>{k}</b>"), self.players[k]]) for k in ("A", "B", "X")]
        self.player_row = widgets.HBox(boxes)
        self.box = widgets.VBox([self.status, self.player_row,
                                 widgets.HBox([*self.buttons.values(), self.again]), self.result])
        self.box.add_class(PLAYER_GROUP_CLASS)
        self.box.add_class("ampxfer-abx")
        self._show()

    @property
    def session(self) -> AbxSession:
        return self.test.session

    def _show(self) -> None:
        trial = self.session.current
        self.status.value = html.escape(self.test.status())
        if trial is None:
            self.player_row.layout.display = "none"
            for k in self.players:
                self.players[k].value = ""
            for b in self.buttons.values():
                b.disabled = True
            self.result.value = (reveal_html(self.session.reveal()) +
                                 f"<p>Answers saved to {html.escape(str(self.session.csv_path))}</p>")
            self.again.description = f"New session ({self.test.n_trials} new trials)"
            self.again.layout.display = None
            return
        self.again.layout.display = "none"
        self.player_row.layout.display = None
        self.players["A"].value = self._audio[(trial.clip, trial.a)]
        self.players["B"].value = self._audio[(trial.clip, trial.b)]
        self.players["X"].value = self._audio[(trial.clip, trial.x_model)]
        for b in self.buttons.values():
            b.disabled = False

    def choose(self, choice: str) -> Optional[bool]:
        """What an answer button does (also callable directly); None when the click is not taken."""
        with self.test.lock:
            if not self.test.accepts_answer():
                return None
            # The browser shows the buttons disabled as soon as this reaches it; a click already
            # on its way is refused by the test's MIN_ANSWER_SECONDS.
            for b in self.buttons.values():
                b.disabled = True
            right = self.test.answer(choice)
            self.result.value = "" if self.session.done else \
                f"Trial {len(self.session.results)}: {'right' if right else 'wrong'}."
            self._show()
            return right

    def new_session(self) -> None:
        """What the "new session" button does: new trials, same answers file."""
        with self.test.lock:
            if not self.test.done:
                return
            self.test.new_session()
            self.result.value = ""
            self._show()

    def _repr_mimebundle_(self, include=None, exclude=None):
        return widget_bundle(self.box, self.HINT)


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
        attrs = {"ontimeupdate": remember, "onplay": remember, "onpause": remember, "onloadedmetadata": resume}
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
