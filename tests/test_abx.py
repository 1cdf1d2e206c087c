"""The blind ABX test: trials, sessions and their CSV, the double-click guard, the widget."""

import csv

import numpy as np
import pytest

from ampxfer_lib.errors import ConfigError
from ampxfer_lib.notebooks import abx, listening
from tests.test_listening import embedded_audio, sine


def test_abx_trials_are_seeded_and_balanced_over_identities():
    t1 = abx.abx_trials(("scratch", "transfer"), ["c1", "c2", "c3"], 40, seed=7)
    assert t1 == abx.abx_trials(("scratch", "transfer"), ["c1", "c2", "c3"], 40, seed=7)
    assert t1 != abx.abx_trials(("scratch", "transfer"), ["c1", "c2", "c3"], 40, seed=8)
    assert [t.index for t in t1] == list(range(1, 41))
    assert [t.clip for t in t1[:4]] == ["c1", "c2", "c3", "c1"]
    for t in t1:
        assert {t.a, t.b} == {"scratch", "transfer"}
        assert t.x in ("A", "B")
        assert t.x_model == (t.a if t.x == "A" else t.b)
    # both orders and both answers occur (40 fair coin flips each)
    assert {t.a for t in t1} == {"scratch", "transfer"} and {t.x for t in t1} == {"A", "B"}
    with pytest.raises(ConfigError):
        abx.abx_trials(("a", "a"), ["c"], 3)
    with pytest.raises(ConfigError):
        abx.abx_trials(("a", "b"), [], 3)


def test_binomial_p_value_closed_forms():
    assert abx.binomial_p_value(5, 5) == 1 / 32
    assert abx.binomial_p_value(0, 7) == 1.0
    assert abx.binomial_p_value(8, 10) == (45 + 10 + 1) / 1024
    assert abx.binomial_p_value(9, 12) == (220 + 66 + 12 + 1) / 4096
    with pytest.raises(ValueError):
        abx.binomial_p_value(4, 3)
    s = abx.abx_score([True] * 9 + [False] * 3)
    assert (s.correct, s.answered) == (9, 12) and s.p_value == pytest.approx(299 / 4096)
    assert "not distinguishable" in s.summary()
    assert "you hear a difference" in abx.abx_score([True] * 10).summary()
    assert abx.abx_score([]).summary() == "no answers yet"


def test_abx_session_records_answers_to_csv(tmp_path):
    trials = abx.abx_trials(("scratch", "transfer"), ["c1"], 4, seed=0)
    path = tmp_path / "runs" / "abx.csv"
    s = abx.AbxSession(trials, path, listener="me", session="s1")
    answers = [t.x for t in trials[:3]] + ["B" if trials[3].x == "A" else "A"]
    assert [s.answer(a) for a in answers] == [True, True, True, False]
    assert s.done and s.current is None
    with pytest.raises(ConfigError, match="finished"):
        s.answer("A")
    rows = list(csv.DictReader(path.open()))
    assert [r["correct"] for r in rows] == ["1", "1", "1", "0"]
    assert rows[0]["listener"] == "me" and rows[0]["session"] == "s1"
    assert [r["x"] for r in rows] == [t.x for t in trials]
    assert s.score().correct == 3 and s.score().p_value == pytest.approx(5 / 16)
    assert [r["X"] for r in s.reveal()] == [t.x_model for t in trials]
    # a second session appends; the file scores both, or one
    s2 = abx.AbxSession(trials[:1], path, session="s2")
    s2.answer(trials[0].x)
    assert abx.score_file(path).answered == 5
    assert abx.score_file(path, session="s2").correct == 1
    with pytest.raises(ConfigError):
        s2.answer("C")


def _answer_all(path, session, n, barrier, results):
    trials = abx.abx_trials(("scratch", "transfer"), ["c1"], n, seed=0)
    s = abx.AbxSession(trials, path, listener=session, session=session)
    barrier.wait()
    for t in trials:
        s.answer(t.x)
    results.put(session)


def test_two_kernels_answering_at_the_same_moment_keep_every_row(tmp_path):
    # Each answer rewrites the whole file; without the folder's lock two writers read the
    # same old file and the later write drops the other's row.
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    path, n, sessions = tmp_path / "listening" / "abx.csv", 30, ("k1", "k2", "k3")
    barrier, results = ctx.Barrier(len(sessions)), ctx.Queue()
    procs = [ctx.Process(target=_answer_all, args=(path, k, n, barrier, results)) for k in sessions]
    for p in procs:
        p.start()
    assert sorted(results.get(timeout=120) for _ in sessions) == list(sessions)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    rows = list(csv.DictReader(path.open()))
    assert sorted((r["session"], int(r["trial"])) for r in rows) == \
        sorted((k, i) for k in sessions for i in range(1, n + 1))
    assert sorted(p.name for p in path.parent.iterdir()) == ["abx.csv"]  # no lock or temporary left


def test_abx_session_refuses_a_foreign_csv(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="not an ampxfer ABX answers file"):
        abx.AbxSession(abx.abx_trials(("a", "b"), ["c"], 1), path)
    assert path.read_text() == "a,b\n1,2\n"


def test_abx_session_reveal_has_the_answers(tmp_path):
    trials = abx.abx_trials(("m1", "m2"), ["c1", "c2"], 2, seed=3)
    s = abx.AbxSession(trials, tmp_path / "abx.csv", session="s")
    s.answer(trials[0].x)
    assert s.reveal() == [{"trial": 1, "clip": "c1", "A": trials[0].a, "B": trials[0].b, "X": trials[0].x_model,
                           "answer": trials[0].x, "right": True}]


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_abx_test_refuses_answers_too_soon_after_a_trial_loads(tmp_path):
    clock = FakeClock()
    path = tmp_path / "abx.csv"
    test = abx.AbxTest(("scratch", "transfer"), ["c1", "c2"], 3, path, listener="me", seed=5, clock=clock)
    trials = abx.abx_trials(("scratch", "transfer"), ["c1", "c2"], 3, seed=5)
    assert test.session.trials == trials and len(test.sessions) == 1
    assert test.status() == ("Trial 1 of 3 \u2014 c1. Listen to A, B and X; is X the same as A or as B?")
    # a click at the moment the trial appears is not taken, nor one just under the limit
    assert not test.accepts_answer() and test.answer("A") is None
    clock.now += abx.MIN_ANSWER_SECONDS - 0.01
    assert test.answer("A") is None and not path.exists()
    clock.now += 0.01
    assert test.accepts_answer()
    assert test.answer(trials[0].x) is True
    # the second click of a double click (0.2 s later) finds trial 2 just loaded: refused
    clock.now += 0.2
    assert test.answer(trials[0].x) is None
    assert test.status().startswith("Trial 2 of 3 \u2014 c2.")
    assert len(read_rows(path)) == 1
    clock.now += 5.0
    assert test.answer("B" if trials[1].x == "A" else "A") is False
    clock.now += 5.0
    assert test.answer(trials[2].x) is True
    assert test.done and not test.accepts_answer()
    clock.now += 5.0
    assert test.answer("A") is None
    score = "2 of 3 right; p = 0.5 (chance of doing this well by guessing): not distinguishable from guessing (p >= 0.05)"
    assert test.status() == f"Finished: {score}."
    rows = read_rows(path)
    assert [(r["trial"], r["correct"], r["listener"]) for r in rows] == [("1", "1", "me"), ("2", "0", "me"), ("3", "1", "me")]
    # a new session: new trials from seed + 1, same file, a session id of its own
    first = test.session.session
    test.new_session()
    assert test.session.trials == abx.abx_trials(("scratch", "transfer"), ["c1", "c2"], 3, seed=6)
    assert len(test.sessions) == 2 and test.session.session != first
    assert test.session.session.endswith("-2") and first.endswith("-1")
    assert test.answer(test.session.trials[0].x) is None  # just loaded
    clock.now += 1.0
    assert test.answer(test.session.trials[0].x) is True
    rows = read_rows(path)
    assert len(rows) == 4 and rows[3]["session"] == test.session.session
    assert abx.score_file(path, session=first).correct == 2


def read_rows(path):
    return list(csv.DictReader(path.open())) if path.exists() else []


def test_reveal_table_has_labelled_columns():
    rows = [{"trial": 1, "clip": "clip 1, 0.0 s", "A": "scratch", "B": "trans<fer", "X": "scratch", "answer": "A",
             "right": True}]
    assert abx.reveal_html(rows) == (
        "<table><thead><tr>" + "".join(f"<th style='text-align:left;padding-right:1em'>{h}</th>" for h in
                                       ("Trial", "Clip", "A was", "B was", "X was", "You said X is", "Result")) +
        "</tr></thead><tbody><tr>" + "".join(f"<td style='text-align:left;padding-right:1em'>{v}</td>" for v in
                                             ("1", "clip 1, 0.0 s", "scratch", "trans&lt;fer", "scratch", "A", "right")) +
        "</tr></tbody></table>")


def abx_widget(tmp_path, n_trials=3, clock=None):
    rate = 8000
    sounds = {("c1", "scratch"): sine(300, 0.2, rate, 0.2), ("c1", "transfer"): sine(600, 0.2, rate, 0.2)}
    test = abx.AbxTest(("scratch", "transfer"), ["c1"], n_trials, tmp_path / "abx.csv", seed=1,
                             clock=clock or FakeClock())
    return abx.AbxWidget(test, sounds, rate), sounds, rate


def test_abx_widget_hides_identities_and_plays_the_right_sound(tmp_path):
    pytest.importorskip("ipywidgets")
    clock = FakeClock()
    w, sounds, rate = abx_widget(tmp_path, clock=clock)
    matched = listening.match_loudness({m: sounds[("c1", m)] for m in ("scratch", "transfer")}, rate)
    trials = w.session.trials
    for t in trials:
        assert "scratch" not in w.status.value and "transfer" not in w.status.value
        assert w.status.value == f"Trial {t.index} of 3 \u2014 c1. Listen to A, B and X; is X the same as A or as B?"
        assert w.players["X"].value == w.players[t.x].value
        for k, model in (("A", t.a), ("B", t.b)):
            y, r, mime = embedded_audio(w.players[k].value)
            np.testing.assert_allclose(y, matched[model], atol=1 / 32768)
        assert not any(b.disabled for b in w.buttons.values())
        assert w.again.layout.display == "none"
        assert w.choose(t.x) is None  # the trial just loaded: a stray click is not taken
        clock.now += 1.0
        assert w.choose(t.x) is True
    assert all(b.disabled for b in w.buttons.values())
    assert w.status.value.startswith("Finished: 3 of 3 right")
    assert "<th style='text-align:left;padding-right:1em'>X was</th>" in w.result.value
    assert "scratch" in w.result.value and "transfer" in w.result.value
    assert all(p.value == "" for p in w.players.values()) and w.player_row.layout.display == "none"
    assert w.again.layout.display is None and w.again.description == "New session (3 new trials)"
    assert len(read_rows(tmp_path / "abx.csv")) == 3
    # the new-session button: trials from seed + 1, buttons back, players loaded
    w.again.click()
    assert len(w.test.sessions) == 2 and w.session.trials == abx.abx_trials(("scratch", "transfer"), ["c1"], 3, seed=2)
    assert w.status.value.startswith("Trial 1 of 3 ") and w.result.value == ""
    assert not any(b.disabled for b in w.buttons.values()) and w.again.layout.display == "none"
    assert w.player_row.layout.display is None
    assert w.players["A"].value.startswith("<audio controls")
    w.again.click()  # not finished: does nothing
    assert len(w.test.sessions) == 2


def test_abx_widget_buttons_record_one_trial_per_accepted_click(tmp_path):
    pytest.importorskip("ipywidgets")
    clock = FakeClock()
    w, _, _ = abx_widget(tmp_path, n_trials=2, clock=clock)
    clock.now += 1.0
    w.buttons["A"].click()
    w.buttons["A"].click()  # a double click: the second lands on trial 2, just loaded
    assert len(w.session.results) == 1 and len(read_rows(tmp_path / "abx.csv")) == 1
    assert w.status.value.startswith("Trial 2 of 2 ")
    assert w.result.value == f"Trial 1: {'right' if w.session.trials[0].x == 'A' else 'wrong'}."


def test_abx_widget_shows_a_hint_without_a_kernel(tmp_path):
    pytest.importorskip("ipywidgets")
    w, _, _ = abx_widget(tmp_path)
    bundle = w._repr_mimebundle_()
    assert bundle == {"text/plain": abx.AbxWidget.HINT,
                      "application/vnd.jupyter.widget-view+json": {"version_major": 2, "version_minor": 0,
                                                                   "model_id": w.box.model_id}}
    assert "\n" not in w.HINT and "run this cell" in w.HINT
    assert "ampxfer-abx" in w.box._dom_classes and listening.PLAYER_GROUP_CLASS in w.box._dom_classes


def test_abx_widget_needs_every_sound(tmp_path):
    pytest.importorskip("ipywidgets")
    rate = 8000
    test = abx.AbxTest(("scratch", "transfer"), ["c1"], 3, tmp_path / "abx.csv")
    with pytest.raises(ConfigError, match="no sound for model 'transfer' on clip 'c1'"):
        abx.AbxWidget(test, {("c1", "scratch"): sine(300, 0.2, rate)}, rate)
