"""The blind ABX test: is the difference between two models audible to you?

Per trial the listener hears A and B (the two models, in random order) and X (one of them,
at random), and says whether X is A or B. The logic is plain Python, tested without a
browser: :func:`abx_trials` draws the trials from a seed (per trial: which model is A, which
is B, and whether X is A or B), :class:`AbxSession` records answers to a CSV file (rewritten
atomically), :class:`AbxTest` runs sessions one after another and refuses an answer that
comes too soon after its trial loaded (the second click of a double click), and
:func:`abx_score` reports the number right with its one-sided binomial p-value (the chance
of doing at least that well by guessing). :class:`AbxWidget` is the browser side
(ipywidgets): loudness-matched players that pause each other, two answer buttons, the reveal
table and a new session at the end.
"""

from __future__ import annotations

import csv
import datetime as _dt
import html
import io
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ampxfer_lib.errors import ConfigError
from ampxfer_lib.fileio import PathLike, atomic_write_text
from ampxfer_lib.folders import hold_when_free
from ampxfer_lib.notebooks.listening import AUDIO_FORMAT, PLAYER_GROUP_CLASS, audio_html, match_loudness, widget_bundle


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
    is rewritten atomically, so a crash never leaves half a row, and under the folder's lock,
    so two listeners' kernels answering at the same moment both keep their rows) and moves
    to the next.
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
        with hold_when_free(self.csv_path.parent, "ABX answers"):
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
