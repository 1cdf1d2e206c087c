"""The notebook runner's progress lines: which cell runs, what it prints, and that it is alive."""

import re

import pytest

from ampxfer_lib.cli.notebooks import main as notebooks_main
from ampxfer_lib.notebooks import runner as nbrun

nbformat = pytest.importorskip("nbformat")


def talking_notebook():
    """A parameters cell, a cell that prints (stdout in pieces, a redrawn bar, stderr, an
    unfinished line) and a cell that prints half a line and then waits silently."""
    v4 = nbformat.v4
    return v4.new_notebook(cells=[
        v4.new_markdown_cell("# talking"),
        v4.new_code_cell("X = 2", metadata={"tags": ["parameters"]}),
        v4.new_code_cell("# say hello\nimport sys\nfor i in range(X):\n    print(f'line {i}')\n"
                         "print('bar 1\\rbar 2\\rbar 3')\nsys.stdout.flush()\n"
                         "print('to stderr', file=sys.stderr)\nsys.stderr.flush()\nprint('no newline', end='')"),
        v4.new_code_cell("   "),  # blank: nbclient skips it, so it is not counted
        v4.new_markdown_cell("Now wait.\n\n## waiting\nfor nothing"),
        # A tqdm bar: a widget where ipywidgets is installed, else text redrawn on stderr.
        v4.new_code_cell("#  wait\nimport time\nfrom tqdm.auto import tqdm\nprint('waiting', end='', flush=True)\n"
                         "bar = tqdm(total=4, desc='epochs', leave=False)\nbar.update(2)\nbar.refresh()\n"
                         "time.sleep(2.0)\nbar.close()"),
    ])


def test_cell_labels_and_lines_in_pieces():
    assert nbrun.cell_label("\n  \n#  Colab set-up: install ampxfer\nimport sys") == "Colab set-up: install ampxfer"
    assert nbrun.cell_label("x = 1  # one\ny = 2") == "x = 1  # one"
    assert nbrun.cell_label("a" * 80, width=10) == "aaaaaaa..."
    assert nbrun.cell_label("") == ""
    nb = talking_notebook()
    assert nbrun.executed_cells(nb) == [1, 2, 5]
    assert nbrun.section_titles(nb) == {1: "talking", 2: "talking", 3: "talking", 5: "waiting"}
    lines = []
    progress = nbrun.CellProgress(nb, lines.append, heartbeat=0, width=32)
    progress.cell_started(2, nb.cells[2].source)
    for piece in ("li", "ne 0\nline", " 1\n\nbar 1\rbar 2\r", "bar 3\r\n", "a rather long line of output\n"):
        progress.stream(piece)
    progress.stream("err", name="stderr")
    progress.stream("half")
    progress.cell_finished(2)
    progress.cell_started(99, "")  # a cell nbclient added: numbered '?'
    progress.close()
    assert lines == ["  cell 2/3 (talking): say hello", "    | line 0", "    | line 1", "    | bar 3",
                     "    | a rather long line of o...", "    | half", "    | err", "  cell ?/3"]


def test_tqdm_notebook_bars_show_while_unfinished():
    """The widget messages of tqdm.notebook (an HBox of HTML, FloatProgress, HTML), as the kernel sends them."""
    progress = nbrun.CellProgress(nbformat.v4.new_notebook(), [].append, heartbeat=0)
    progress.widget("comm_open", "l", {"_model_name": "HTMLModel", "value": ""})
    progress.widget("comm_open", "p", {"_model_name": "FloatProgressModel", "value": 0, "max": 6, "style": "x"})
    progress.widget("comm_open", "r", {"_model_name": "HTMLModel", "value": ""})
    progress.widget("comm_open", "box", {"_model_name": "HBoxModel", "children": ["IPY_MODEL_l", "IPY_MODEL_p",
                                                                                 "IPY_MODEL_r"]})
    progress.widget("comm_open", "img", {"_model_name": "ImageModel", "value": "..."})
    progress.widget("comm_msg", "l", {"value": "study:\u2007\u200733%"})
    progress.widget("comm_msg", "p", {"value": 2})
    progress.widget("comm_msg", "r", {"value": "\u20072/6\u2007[00:40&lt;01:20,\u2007\u200720.00s/run]"})
    assert progress.bars() == ["study: 33% 2/6 [00:40<01:20, 20.00s/run]"]
    progress.widget("comm_msg", "p", {"value": 6})  # finished (leave=True keeps it on the page)
    assert progress.bars() == []
    progress.widget("comm_msg", "p", {"value": 5})
    assert len(progress.bars()) == 1
    progress.widget("comm_close", "box", None)  # closed (leave=False)
    assert progress.bars() == []


def test_run_notebook_reports_cells_output_and_silence(tmp_path):
    pytest.importorskip("nbclient")
    src = tmp_path / "talking.ipynb"
    nbformat.write(talking_notebook(), str(src))
    lines = []
    nbrun.run_notebook(src, tmp_path / "out.ipynb", {"X": 3}, cwd=tmp_path, timeout=60,
                       progress=lines.append, heartbeat=0.5)
    assert lines[:10] == ["  cell 1/4 (talking): X = 2",
                          "  cell 2/4 (talking): Parameters injected by ampxfer_lib.notebooks",
                          "  cell 3/4 (talking): say hello", "    | line 0", "    | line 1", "    | line 2", "    | bar 3",
                          "    | to stderr", "    | no newline", "  cell 4/4 (waiting): wait"]
    beats, last = lines[10:-1], lines[-1]
    # 2 s of silence at one line per 0.5 s: at least one, however slow the machine.
    assert 1 <= len(beats) <= 4
    assert all(re.fullmatch(r"  cell 4/4 still running, [0-2] s: waiting; epochs: 50%.*2/4 \[.*\]", b)
               for b in beats), beats
    assert last == "    | waiting"
    # The executed copy records what the kernel printed, as without progress.
    executed = nbformat.read(str(tmp_path / "out.ipynb"), 4)
    assert [(o["name"], o["text"]) for o in executed.cells[3].outputs] == [
        ("stdout", "line 0\nline 1\nline 2\nbar 1\rbar 2\rbar 3\n"), ("stderr", "to stderr\n"), ("stdout", "no newline")]


def test_cli_progress_goes_to_stderr_and_quiet_silences_it(tmp_path, capsys):
    pytest.importorskip("nbclient")
    src = tmp_path / "talking.ipynb"
    nb = talking_notebook()
    del nb.cells[4:]  # no waiting here
    nbformat.write(nb, str(src))
    assert notebooks_main(["run", str(src), "--out", str(tmp_path / "loud")]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == ["  cell 1/2 (talking): X = 2", "  cell 2/2 (talking): say hello", "    | line 0", "    | line 1",
                                "    | bar 3", "    | to stderr", "    | no newline"]
    assert out.splitlines()[0] == f"running talking.ipynb -> {tmp_path / 'loud' / 'talking.ipynb'}"
    assert notebooks_main(["run", str(src), "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert [line.split(" ")[0] for line in out.splitlines()] == ["running", "", "1"]
