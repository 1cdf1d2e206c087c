"""Listening to captures fairly: loudness matching, players, null tests, per-clip ESR, blind ABX.

Louder sounds better to everyone, so every comparison here is **loudness-matched** first:
each clip is scaled to the same integrated loudness (ITU-R BS.1770: K-weighting, 400 ms
blocks, absolute gate at -70 LUFS, relative gate 10 LU below the ungated level), then all of
them together are lowered, if needed, until the loudest peak sits at the ceiling, so no clip
clips. Players are built with ``normalize=False`` so the browser plays exactly these levels.

The blind ABX test has a browser part (:class:`AbxWidget`, ipywidgets) and a plain part that
holds all the logic and is tested without one: :func:`abx_trials` draws the trials from a
seed (per trial: which model is A, which is B, and whether X is A or B), :class:`AbxSession`
records answers to a CSV file (rewritten atomically), and :func:`abx_score` reports the
number right with its one-sided binomial p-value (the chance of doing at least that well by
guessing).
"""

from __future__ import annotations

import csv
import datetime as _dt
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ampxfer_lib.errors import ConfigError
from ampxfer_lib.fileio import PathLike, atomic_write_text
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

def wav_bytes(x: np.ndarray, rate: int) -> bytes:
    """16-bit PCM WAV of (T,) audio (values beyond +-1 are clipped), for ipywidgets.Audio."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def players(clips: Mapping[str, np.ndarray], rate: int, match: bool = True, target_lufs: float = TARGET_LUFS,
            ceiling_dbfs: float = CEILING_DBFS) -> Dict[str, object]:
    """IPython ``Audio`` players, label -> player, loudness-matched, ``normalize=False``."""
    from IPython.display import Audio

    scaled = match_loudness(clips, rate, target_lufs, ceiling_dbfs) if match else \
        {k: np.clip(np.asarray(v, dtype=np.float32), -1.0, 1.0) for k, v in clips.items()}
    return {k: Audio(v, rate=rate, normalize=False) for k, v in scaled.items()}


def player_table(clips: Mapping[str, np.ndarray], rate: int, caption: str = "", match: bool = True, **kwargs):
    """One HTML table of labelled players (IPython ``HTML``); stays playable in a saved notebook."""
    from IPython.display import HTML

    rows = "".join(f"<tr><td style='text-align:left;padding-right:1em'><b>{html.escape(k)}</b></td>"
                   f"<td>{p._repr_html_()}</td></tr>" for k, p in players(clips, rate, match, **kwargs).items())
    head = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    return HTML(f"<table>{head}{rows}</table>")


def null_table(target: np.ndarray, outputs: Mapping[str, np.ndarray], rate: int, caption: str = ""):
    """Players of the null tests ``target - output``, all at the gain that brings the target to
    the matching level (:func:`loudness_gains`), so a quieter difference means a closer model.
    Labels carry the difference's level relative to the target (dB)."""
    from IPython.display import HTML, Audio

    gains, _ = loudness_gains({"target": target}, rate)
    g = gains["target"]
    rows = [("target (for reference)", np.asarray(target, dtype=np.float64) * g)]
    for name, out in outputs.items():
        diff, level = null_test(target, out)
        rows.append((f"target - {name} ({level:+.1f} dB)", diff.astype(np.float64) * g))
    cells = "".join(f"<tr><td style='text-align:left;padding-right:1em'><b>{html.escape(k)}</b></td>"
                    f"<td>{Audio(np.clip(v, -1.0, 1.0), rate=rate, normalize=False)._repr_html_()}</td></tr>"
                    for k, v in rows)
    head = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    return HTML(f"<table>{head}{cells}</table>")


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
        """After the test: what A, B and X were in each answered trial."""
        return [{"trial": t.index, "clip": t.clip, "A": t.a, "B": t.b, "X": t.x_model, "right": r}
                for t, r in zip(self.trials, self.results)]


def score_file(path: PathLike, session: Optional[str] = None) -> AbxScore:
    """Score of the answers in an ABX CSV (all sessions, or one)."""
    rows = [r for r in read_abx_csv(path) if session is None or r["session"] == session]
    return abx_score([r["correct"] == "1" for r in rows])


class AbxWidget:
    """The browser side of an :class:`AbxSession`: players for A, B and X, two answer buttons.

    ``sounds[(clip, model)]`` is the (T,) audio of a model on a clip; each clip's sounds are
    loudness-matched together. Model names are never shown until the test is over.
    """

    def __init__(self, session: AbxSession, sounds: Mapping[Tuple[str, str], np.ndarray], rate: int):
        import ipywidgets as widgets

        self.session = session
        self.rate = rate
        self._wav: Dict[Tuple[str, str], bytes] = {}
        for clip in {t.clip for t in session.trials}:
            models = [m for (c, m) in sounds if c == clip]
            matched = match_loudness({m: sounds[(clip, m)] for m in models}, rate)
            for m in models:
                self._wav[(clip, m)] = wav_bytes(matched[m], rate)
        missing = [(t.clip, m) for t in session.trials for m in (t.a, t.b) if (t.clip, m) not in self._wav]
        if missing:
            raise ConfigError(f"no sound for model {missing[0][1]!r} on clip {missing[0][0]!r}")
        self.status = widgets.HTML()
        self.players = {k: widgets.Audio(format="wav", autoplay=False, loop=False) for k in ("A", "B", "X")}
        self.buttons = {k: widgets.Button(description=f"X is {k}", button_style="info") for k in ("A", "B")}
        for k, button in self.buttons.items():
            button.on_click(lambda _b, k=k: self.choose(k))
        self.result = widgets.HTML()
        boxes = [widgets.VBox([widgets.HTML(f"<b>{k}</b>"), self.players[k]]) for k in ("A", "B", "X")]
        self.box = widgets.VBox([self.status, widgets.HBox(boxes),
                                 widgets.HBox(list(self.buttons.values())), self.result])
        self._show()

    def _show(self) -> None:
        trial = self.session.current
        if trial is None:
            for b in self.buttons.values():
                b.disabled = True
            reveal = "".join(f"<tr><td>{r['trial']}</td><td>{html.escape(r['clip'])}</td><td>{html.escape(r['A'])}</td>"
                             f"<td>{html.escape(r['B'])}</td><td>{html.escape(r['X'])}</td>"
                             f"<td>{'right' if r['right'] else 'wrong'}</td></tr>" for r in self.session.reveal())
            self.status.value = f"<b>Done.</b> {html.escape(self.session.score().summary())}"
            self.result.value = ("<table><tr><th>trial</th><th>clip</th><th>A was</th><th>B was</th><th>X was</th>"
                                 f"<th></th></tr>{reveal}</table><p>Answers saved to {html.escape(str(self.session.csv_path))}</p>")
            return
        self.status.value = (f"Trial {trial.index} of {len(self.session.trials)} (clip {html.escape(trial.clip)}): "
                             "listen to A, B and X; is X the same as A or as B?")
        self.players["A"].value = self._wav[(trial.clip, trial.a)]
        self.players["B"].value = self._wav[(trial.clip, trial.b)]
        self.players["X"].value = self._wav[(trial.clip, trial.x_model)]

    def choose(self, choice: str) -> None:
        """What a button click does (also callable directly)."""
        if self.session.done:
            return
        right = self.session.answer(choice)
        self.result.value = "" if self.session.done else f"Trial {len(self.session.results)}: {'right' if right else 'wrong'}."
        self._show()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.box)
