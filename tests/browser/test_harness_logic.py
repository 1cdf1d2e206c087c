"""The browser harness's bookkeeping, without a browser (the browser run is `make browser-test`)."""

import ast
import re

import nbformat

from tests.browser import broken, harness, run


def test_the_broken_notebook_has_one_fault_per_documented_check(tmp_path):
    documented = set(re.findall(r"^\* ``([a-z-]+)``", harness.__doc__, flags=re.M))
    assert documented == {"run", "cell-error", "js-error", "player-source", "player-play", "player-exclusive",
                          "abx", "slider", "knob-resume"}
    # ``run`` failing means no other check ran, so the broken notebook provokes all the others
    assert set(broken.EXPECTED) == documented - {"run"}
    path = broken.write(tmp_path / broken.NAME)
    control = broken.write(tmp_path / broken.CONTROL_NAME, faults=False)
    nb, ok = (nbformat.read(str(p), as_version=4) for p in (path, control))
    for notebook in (nb, ok):
        nbformat.validate(notebook)
        assert len(notebook.cells) == len(broken.CELLS) == 10
        for cell in notebook.cells:
            if cell.cell_type == "code":
                ast.parse(cell.source)
    # each fault's cell holds what the fault needs (cells are counted from 1, as the harness
    # does), and the control differs from the broken notebook in exactly those cells
    marks = {"player-source": "base64,\"", "player-play": "this.pause()", "player-exclusive": "re.sub",
             "abx": "callbacks.clear()", "slider": "FloatSlider", "knob-resume": "onloadedmetadata",
             "js-error": "onerror", "cell-error": "raise RuntimeError"}
    cells = {int(w.split()[1]) for w in broken.EXPECTED.values() if w.startswith("cell")}
    for kind, mark in marks.items():
        where = broken.EXPECTED[kind]
        if where.startswith("cell"):
            assert mark in nb.cells[int(where.split()[1]) - 1].source, kind
        else:
            assert any(mark in c.source for c in nb.cells), kind
    differ = {i + 1 for i, (a, b) in enumerate(zip(nb.cells, ok.cells)) if a.source != b.source}
    assert differ == cells | {9}  # cell 9: the JavaScript error, reported for the page


def test_broken_notebook_verdict_needs_every_fault_in_its_cell():
    def report(failures):
        r = harness.Report(broken.NAME)
        for kind, where in failures:
            r.fail(kind, where, "x")
        return r

    exact = [(k, w + (", player 1" if k.startswith("player") else "")) for k, w in broken.EXPECTED.items()]
    assert run.check_broken(report(exact)) == []
    assert run.check_broken(report(exact[1:])) == ["the harness missed the broken notebook's player-source"]
    moved = [("abx", "cell 3 ABX") if k == "abx" else (k, w) for k, w in exact]
    assert run.check_broken(report(moved)) == ["abx was reported, but not for cell 6"]
    assert run.check_broken(report(exact + [("run", "Run All")])) == [
        "the harness reported faults the broken notebook does not have: run"]


def test_report_summary_lists_failures():
    r = harness.Report("n.ipynb", seconds=3.2)
    r.count("players", 2)
    assert r.summary() == "n.ipynb: checked 2 players in 3 s; no failures"
    r.fail("abx", "cell 4 ABX", "stuck")
    assert r.summary() == "n.ipynb: checked 2 players in 3 s; 1 failure(s):\n  abx [cell 4 ABX]: stuck"
    assert r.kinds == {"abx"}
