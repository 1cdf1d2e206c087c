"""The notebook suite: committed clean, runner mechanics, and the whole suite in smoke mode."""

import json
import os
import time
from pathlib import Path

import pytest

from ampxfer_lib.cli.notebooks import main as notebooks_main
from ampxfer_lib.notebooks import runner as nbrun
from ampxfer_lib.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
nbformat = pytest.importorskip("nbformat")


def test_committed_notebooks_are_clean():
    paths = sorted((REPO / "notebooks").glob("*.ipynb"))
    assert [p.name for p in paths] == list(nbrun.SUITE)
    for path in paths:
        assert nbrun.problems(path) == [], path.name
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, path.name
        assert "widgets" not in nb["metadata"]


def tiny_notebook(source_after: str = "print(f'x={X} y={Y}')"):
    v4 = nbformat.v4
    return v4.new_notebook(cells=[
        v4.new_markdown_cell("# tiny"),
        v4.new_code_cell("import sys"),
        v4.new_code_cell("X = 1\nY: str = 'a'  #@param", metadata={"tags": ["parameters"]}),
        v4.new_code_cell(source_after),
    ])


def test_parameters_are_injected_after_the_parameters_cell():
    nb = tiny_notebook()
    assert nbrun.parameter_names(nb) == ["X", "Y"]
    out = nbrun.inject_parameters(nb, {"X": 5, "Y": "b"})
    assert [c.source for c in out.cells][3] == "# Parameters injected by ampxfer_lib.notebooks\nX = 5\nY = 'b'"
    assert out.cells[3].metadata["tags"] == ["injected-parameters"]
    assert len(nb.cells) == 4  # the original is untouched
    again = nbrun.inject_parameters(out, {"X": 6})
    assert len(again.cells) == 5 and again.cells[3].source.endswith("X = 6")
    with pytest.raises(ConfigError, match="unknown notebook parameter"):
        nbrun.inject_parameters(nb, {"Z": 1})
    two = tiny_notebook()
    two.cells[1].metadata["tags"] = ["parameters"]
    with pytest.raises(ConfigError, match="exactly one"):
        nbrun.parameters_cell(two)


def test_strip_outputs():
    nb = tiny_notebook()
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hi")]
    nb.cells[1].execution_count = 3
    nb.metadata["widgets"] = {"state": {}}
    assert nbrun.has_outputs(nb)
    clean = nbrun.strip_outputs(nb)
    assert not nbrun.has_outputs(clean) and "widgets" not in clean.metadata
    assert nbrun.has_outputs(nb)


def test_find_notebooks():
    assert [p.name for p in nbrun.find_notebooks()] == list(nbrun.SUITE)
    assert [p.name for p in nbrun.find_notebooks(["03", "01_data"])] == ["03_transfer_training.ipynb", "01_data_prep.ipynb"]
    with pytest.raises(ConfigError, match="names no notebook"):
        nbrun.find_notebooks(["09"])
    with pytest.raises(ConfigError, match="several"):
        nbrun.find_notebooks(["0"])


def kernels_of_this_process():
    """Live ipykernel processes started by this process (Linux /proc; [] elsewhere)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc") if os.path.isdir("/proc") else []):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        ppid, state = int(stat.rsplit(")", 1)[1].split()[1]), stat.rsplit(")", 1)[1].split()[0]
        if ppid == os.getpid() and state != "Z" and b"ipykernel" in cmdline:
            found.append(int(pid))
    return found


def test_run_notebook_injects_parameters_and_reports_failures(tmp_path):
    pytest.importorskip("nbclient")
    src = tmp_path / "tiny.ipynb"
    nbformat.write(tiny_notebook("import os\nprint(f'x={X} y={Y} smoke={os.environ.get(\"AMPXFER_SMOKE\")} "
                                 "cwd={os.getcwd()}')\nassert X < 10, 'X too large'"), str(src))
    out = tmp_path / "out" / "tiny.ipynb"
    nbrun.run_notebook(src, out, {"X": 7}, smoke=True, cwd=tmp_path, timeout=60)
    text = nbformat.read(str(out), 4).cells[4].outputs[0]["text"]
    assert text == f"x=7 y=a smoke=1 cwd={tmp_path}\n"
    assert kernels_of_this_process() == []  # stopped, not left until the caller exits
    with pytest.raises(nbrun.NotebookError, match=r"tiny.ipynb failed at cell 4: AssertionError: X too large") as info:
        nbrun.run_notebook(src, out, {"X": 11}, cwd=tmp_path, timeout=60)
    assert str(out) in str(info.value)
    assert any(o.get("output_type") == "error" for o in nbformat.read(str(out), 4).cells[4].outputs)


def test_cli_check_and_strip(tmp_path, capsys):
    path = tmp_path / "n.ipynb"
    nb = tiny_notebook()
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hi")]
    nbformat.write(nb, str(path))
    assert notebooks_main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "has outputs" in out and "not the Colab set-up cell" in out
    assert notebooks_main(["strip", str(path)]) == 0
    assert notebooks_main(["sync", str(path)]) == 0
    assert notebooks_main(["check", str(path)]) == 0
    assert notebooks_main(["run", "--out", str(tmp_path)]) == 2  # nothing named
    assert "--all" in capsys.readouterr().err


@pytest.mark.slow
def test_the_whole_suite_runs_in_smoke_mode(tmp_path):
    """CI: every notebook, in order, from fresh kernels, sharing one work folder."""
    pytest.importorskip("nbclient")
    t0 = time.monotonic()
    runs = nbrun.run_suite(tmp_path, smoke=True, timeout=600, log=lambda m: None)
    assert [r.name for r in runs] == list(nbrun.SUITE)
    assert time.monotonic() - t0 < 600
    study = tmp_path / "study"
    assert (study / "table1.md").read_text().startswith("# Table 1")
    rows = (study / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 8  # 2 pairs x 2 data sizes x (scratch, transfer)
    figures = sorted(p.name for p in (study / "figures").glob("*.png"))
    assert figures == ["amp_full.png", "amp_limited.png", "pedal_full.png", "pedal_limited.png"]
    listening = sorted(p.name for p in (tmp_path / "listening" / "amp_limited").glob("*.wav"))
    assert "clip1_transfer.wav" in listening and "clip1_null_scratch.wav" in listening
    assert (tmp_path / "05_conditioned" / "model_aidax.json").exists()
    text = {}
    for run in runs:
        nb = nbformat.read(str(run.executed), 4)
        text[run.name] = "".join(o.get("text", "") + o.get("data", {}).get("text/markdown", "")
                                 for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        assert not any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "(smoke mode)" in text["01_data_prep.ipynb"] and "| mt2 |" in text["01_data_prep.ipynb"]
    assert "6 runs (source, scratch)" in text["02_baseline_training.ipynb"]
    assert "Starting points for mt2" in text["03_transfer_training.ipynb"]
    assert "transfer starts lower" in text["03_transfer_training.ipynb"]
    assert "no answers yet" in text["04_ab_listening.ipynb"]


def own_pair(folder, target_rate=48000):
    """A DI and a source recording at 44.1 kHz, and a target recorded at ``target_rate``."""
    import soundfile as sf

    from conftest import write_pair

    di, src = write_pair(folder, seconds=8.0)
    y, rate = sf.read(str(src))
    tgt = folder / "new_out.wav"
    sf.write(str(tgt), y, target_rate if target_rate else rate, subtype="PCM_24")
    return di, src, tgt


def test_own_recordings_that_fail_a_check_stop_with_what_to_do(tmp_path, monkeypatch):
    import soundfile as sf

    from ampxfer_lib.errors import AudioError
    from ampxfer_lib.notebooks import mine

    monkeypatch.setenv("AMPXFER_MODELS", str(tmp_path / "mylib"))
    di, src, tgt = own_pair(tmp_path / "rec")
    work = tmp_path / "work"
    fix = ('fix that in the parameters cell (or the file) and run this notebook again; DATA = "sample" runs the '
           "suite on the sample data instead")
    with pytest.raises(AudioError) as info:
        mine.prepare_mine(str(di), str(src), str(tgt), "local paths", work, log=lambda m: None)
    assert str(info.value) == (f"your recordings cannot be used: {tgt}: recorded at 48000 Hz but the input {di} is "
                               f"at 44100 Hz; record (or export) both at one rate; {fix}")
    missing = tmp_path / "rec" / "missing.wav"
    with pytest.raises(ConfigError) as info:
        mine.prepare_mine(str(di), str(src), str(missing), "local paths", work)
    assert str(info.value) == f"your recordings cannot be used: {missing}: no such file (MY_TARGET); {fix}"
    with pytest.raises(ConfigError) as info:
        mine.prepare_mine(str(di), str(src), str(src), "local paths", work)
    assert str(info.value) == ("your recordings cannot be used: MY_SOURCE and MY_TARGET are the same recording; "
                               f"MY_SOURCE is a similar device; {fix}")
    assert not work.exists()  # nothing prepared, the sample data least of all
    choice = mine.prepare_mine(str(di), "", str(src), "local paths", work, log=lambda m: None)
    assert choice == {"user_library": str(tmp_path / "mylib"), "source": None,
                      "target": {"input": str(di), "target": str(src), "out": str(work / "captures" / "dev_out")}}
    assert sorted(p.name for p in (work / "captures" / "dev_out").iterdir()) == ["capture.json", "data"]
    assert not (work / mine.SUITE_FILE).exists()  # 01 writes it last, after its other cells
    # a source recording with the target's file name gets a folder of its own
    same_name = tmp_path / "other" / "dev_out.wav"
    same_name.parent.mkdir()
    sf.write(str(same_name), 0.5 * sf.read(str(src))[0], 44100, subtype="PCM_24")
    choice = mine.prepare_mine(str(di), str(same_name), str(src), "local paths", work, log=lambda m: None)
    assert (choice["target"]["out"], choice["source"]["out"]) == (str(work / "captures" / "dev_out"),
                                                                 str(work / "captures" / "dev_out_2"))


def test_notebook_01_stops_at_a_failing_recording(tmp_path):
    """Run All with DATA = "my recordings" and a target at another rate: 01 stops at the
    preparation cell with the one-line error, and nothing after it runs."""
    pytest.importorskip("nbclient")
    di, src, tgt = own_pair(tmp_path / "rec")
    work = tmp_path / "work"
    params = {"DATA": "my recordings", "MY_DI": str(di), "MY_SOURCE": str(src), "MY_TARGET": str(tgt),
              "OUT_DIR": str(work)}
    out = tmp_path / "01.ipynb"
    with pytest.raises(nbrun.NotebookError) as info:
        nbrun.run_notebook(REPO / "notebooks" / "01_data_prep.ipynb", out, params, smoke=True, cwd=tmp_path,
                           timeout=300)
    assert str(info.value).startswith(f"01_data_prep.ipynb failed at cell 7: AudioError: your recordings cannot be "
                                      f"used: {tgt}: recorded at 48000 Hz")
    assert str(info.value).endswith(f'DATA = "sample" runs the suite on the sample data instead; the executed copy is '
                                    f"{out}")
    executed = nbformat.read(str(out), 4)
    assert not any(c.get("outputs") for c in executed.cells[8:] if c.cell_type == "code")
    assert not (work / "data").exists() and not (work / "study.json").exists()
