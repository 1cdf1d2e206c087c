"""Notebooks 01-04 with DATA = "my recordings", in smoke mode: the user's device captured end to end.

The recordings are written here: 8 s of the sample DI through the virtual MT-2 (the device to
capture) and the virtual TS9 (a similar device, the source recording). The user's model library
is a temporary folder ($AMPXFER_MODELS) holding one tiny model, and the shipped starting models
are left out (SHIPPED_MODELS = False), so what is ranked is known exactly.
"""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ampxfer_lib.capture.record import RECORD, SCORE_WORDS
from ampxfer_lib.data.dataset import MANIFEST
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.library.index import LIBRARY_ENV, ModelLibrary
from ampxfer_lib.notebooks import mine
from ampxfer_lib.notebooks import runner as nbrun

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

FIX = 'fix that in the parameters cell (or the file) and run this notebook again; DATA = "sample" runs the suite ' \
      "on the sample data instead"


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """di.wav, mt2.wav (the new device, 20 samples of latency at 48 kHz) and ts9.wav (a similar device)."""
    from ampxfer_lib.sample_data.devices import render_device
    from ampxfer_lib.sample_data.files import ensure_sample_data

    folder = tmp_path_factory.mktemp("my_recordings")
    di = ensure_sample_data(devices=[], progress=False).di
    rate = sf.info(str(di)).samplerate  # 48 kHz: the capture resamples to the plugins' 44.1 kHz
    x, _ = sf.read(str(di), frames=8 * rate, dtype="float64")
    paths = {"di": folder / "di.wav", "mt2": folder / "mt2.wav", "ts9": folder / "ts9.wav"}
    sf.write(str(paths["di"]), x, rate, subtype="PCM_24")
    sf.write(str(paths["mt2"]), np.concatenate([np.zeros(20), render_device("mt2", x, rate)[:-20]]), rate,
             subtype="PCM_24")
    sf.write(str(paths["ts9"]), render_device("ts9", x, rate), rate, subtype="PCM_24")
    return paths


def tiny_library(folder: Path) -> Path:
    """A user library with one model, ``tiny_start`` (an LSTM 8 with random weights)."""
    from ampxfer_lib.model.formats import save_model
    from ampxfer_lib.model.network import new_model
    from ampxfer_lib.model.weights import ModelConfig

    save_model(new_model(ModelConfig(hidden_size=8), seed=3).weights(), folder.parent / "tiny.json")
    ModelLibrary(folder).add(folder.parent / "tiny.json", "tiny_start", kind="overdrive")
    return folder


def notebook_text(path: Path) -> str:
    nb = nbformat.read(str(path), 4)
    assert not any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    return "".join(o.get("text", "") + o.get("data", {}).get("text/markdown", "")
                   for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def run(work: Path, names, **params):
    return nbrun.run_suite(work, names=names, smoke=True, timeout=300, log=lambda m: None,
                           extra={"DATA": "my recordings", "STARTING_MODELS": "", "SHIPPED_MODELS": False, **params})


@pytest.mark.slow
def test_notebooks_01_to_04_capture_my_device(tmp_path, recordings, monkeypatch):
    lib = tiny_library(tmp_path / "mylib")
    monkeypatch.setenv(LIBRARY_ENV, str(lib))
    work = tmp_path / "work"
    t0 = time.monotonic()
    runs = run(work, ["01", "02", "03", "04"], MY_DI=str(recordings["di"]), MY_TARGET=str(recordings["mt2"]),
               SCRATCH_BASELINE=True, START="")
    assert time.monotonic() - t0 < 400  # about 150 s on one free core
    text = {r.name[:2]: notebook_text(r.executed) for r in runs}
    cap = work / "captures" / "mt2"

    # 01: the capture's own preparation, handed to 02-04; no sample study in its place
    choice = json.loads((work / mine.SUITE_FILE).read_text())
    assert choice == {"data": "my recordings", "user_library": str(lib), "libraries": [str(lib)], "source": None,
                      "target": {"input": str(recordings["di"]), "target": str(recordings["mt2"]), "out": str(cap)}}
    assert json.loads((cap / "data" / MANIFEST).read_text())["captures"][0]["pairs"][0]["latency"]["samples"] > 0
    assert not (work / "study.json").exists() and not (work / "data").exists() and not (work / "study").exists()
    assert f"prepared: {cap / 'data'}" in text["01"] and "| mt2 |" in text["01"]

    record = json.loads((cap / RECORD).read_text())
    stages = record["stages"]
    assert set(stages) == {"prepare", "scratch", "rank", "train", "evaluate", "export", "register"}
    # 02: the scratch baseline
    assert (cap / "scratch" / "model_best.json").exists() and stages["scratch"]["summary"]["epochs"] == 2
    assert f"scratch baseline of mt2: test ESR {stages['scratch']['summary']['test_esr']:.4g}" in text["02"]
    # 03: the ranking shown, and the capture trained from its top
    ranking = json.loads((cap / "ranking.json").read_text())["ranking"]
    assert [e["name"] for e in ranking] == ["tiny_start"] and ranking[0]["score"] is not None
    assert "**Starting points for mt2**" in text["03"] and "| 1 | tiny_start |" in text["03"]
    start = stages["train"]["start"]
    assert (start["name"], start["chosen_by"], start["score"]) == ("tiny_start", "ranking", ranking[0]["score"])
    assert (f"starting point: tiny_start (library {lib}); {SCORE_WORDS[start['scored_by']]} {start['score']:.4g}; "
            "chosen by ranking") in text["03"]
    assert stages["train"]["summary"]["hidden_size"] == 8 and stages["train"]["summary"]["epochs"] == 2
    assert stages["evaluate"]["with_scratch"] and stages["evaluate"]["comparison"].startswith("starting from tiny_start")
    # 04: players, null tests and ABX on the device against the capture, then export and library
    clips = sorted(p.name for p in (work / "listening" / "mt2").glob("clip1_*.wav"))
    assert clips == ["clip1_capture.wav", "clip1_input.wav", "clip1_null_capture.wav", "clip1_null_scratch.wav",
                     "clip1_scratch.wav", "clip1_target.wav"]
    assert "no answers yet" in text["04"]
    assert stages["evaluate"]["line"] in text["04"]
    files = stages["export"]["files"]
    assert [(f["file"], f["format"]) for f in files] == [("plugins/mt2.json", "neuralpi"),
                                                         ("plugins/mt2.aidax.json", "rtneural")]
    assert [s["format"] for s in stages["export"]["skipped"]] == ["nam"]  # a skip connection NAM cannot hold
    for f in files:
        assert (cap / f["file"]).exists() and f"{cap / f['file']}  ({f['format']})" in text["04"]
        assert all(f"    {note}" in text["04"] for note in f["notes"])
    entries = ModelLibrary(lib).entries()
    assert [e.name for e in entries] == ["tiny_start", "mt2"]
    assert entries[1].test_esr == stages["evaluate"]["test_esr"] and entries[1].capture == str(cap)
    assert f"in your model library as 'mt2': {lib}" in text["04"]
    # 03 again with another START: refused in the notebook's words, the trained capture untouched
    again = mine.open_capture(work, smoke=True, log=None)
    with pytest.raises(ConfigError) as info:
        mine.set_start(again, "scratch", ranking)
    assert str(info.value) == (f"START = 'scratch': {cap} was trained already from {again.start_words(start)}; leave "
                               "START empty to continue with it, or move that folder away to train again from "
                               "another start")
    mine.set_start(again, "", ranking)
    mine.set_start(again, "tiny_start", ranking)
    assert json.loads((cap / RECORD).read_text()) == record


@pytest.mark.slow
def test_a_source_recording_becomes_a_library_entry_and_start_overrides_the_ranking(tmp_path, recordings,
                                                                                     monkeypatch):
    lib = tiny_library(tmp_path / "mylib")
    monkeypatch.setenv(LIBRARY_ENV, str(lib))
    work = tmp_path / "work"
    runs = run(work, ["01", "02", "03"], MY_DI=str(recordings["di"]), MY_SOURCE=str(recordings["ts9"]),
               MY_TARGET=str(recordings["mt2"]), SCRATCH_BASELINE=False, START="2")
    text = {r.name[:2]: notebook_text(r.executed) for r in runs}
    cap, source = work / "captures" / "mt2", work / "captures" / "ts9"
    assert "scratch baseline skipped (SCRATCH_BASELINE is off)" in text["02"] and not (cap / "scratch").exists()
    # the source recording: prepared by 01, trained from scratch and registered by 03
    assert json.loads((work / mine.SUITE_FILE).read_text())["source"]["out"] == str(source)
    src_stages = json.loads((source / RECORD).read_text())["stages"]
    assert src_stages["train"]["start"] is None
    entries = {e.name: e for e in ModelLibrary(lib).entries()}
    assert sorted(entries) == ["tiny_start", "ts9"] and entries["ts9"].capture == str(source)
    assert f"your MY_SOURCE recording is in your model library as 'ts9' ({lib})" in text["03"]
    # both ranked; START = "2" trains from the second
    ranking = json.loads((cap / "ranking.json").read_text())["ranking"]
    assert sorted(e["name"] for e in ranking) == ["tiny_start", "ts9"]
    start = json.loads((cap / RECORD).read_text())["stages"]["train"]["start"]
    assert (start["name"], start["chosen_by"]) == (ranking[1]["name"], "you (rank 2)")
    assert f"starting point: {ranking[1]['name']} (library {lib})" in text["03"]


def test_start_names_ranks_files_and_mistakes():
    ranking = [{"model": "/lib/a.json", "name": "a", "score": 0.1}, {"model": "/lib/b.json", "name": "b", "score": 0.2},
               {"model": "/lib/c.json", "name": "c", "score": None, "skipped": "48 kHz"}]
    assert mine.resolve_start("", ranking) is None and mine.resolve_start(" best ", ranking) is None
    assert mine.resolve_start("scratch", ranking) == "scratch"
    assert mine.resolve_start("2", ranking) == 2
    assert mine.resolve_start("b", ranking) == "/lib/b.json"
    assert mine.resolve_start(__file__, ranking) == str(Path(__file__).absolute())
    with pytest.raises(ConfigError) as info:
        mine.resolve_start("3", ranking)
    assert str(info.value) == ("START = '3': the ranking has 2 usable model(s); give a rank 1..2, a name from the "
                               "table, or leave START empty for the top-ranked one")
    with pytest.raises(ConfigError) as info:
        mine.resolve_start("c", ranking)  # listed, but it cannot start this capture
    assert str(info.value) == ("START = 'c': no model of that name in the ranking (a, b) and no such file; leave "
                               "START empty for the top-ranked model, or give a name from the table, a rank, "
                               "scratch or a model .json file")


def test_a_silent_recording_stops_01_with_one_line_and_nothing_prepared(tmp_path, recordings, monkeypatch):
    monkeypatch.setenv(LIBRARY_ENV, str(tmp_path / "mylib"))
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(8 * 48000), 48000, subtype="PCM_24")
    work = tmp_path / "work"
    with pytest.raises(nbrun.NotebookError) as info:
        run(work, ["01"], MY_DI=str(recordings["di"]), MY_TARGET=str(silent))
    out = work / "01_data_prep.ipynb"
    assert str(info.value) == (f"01_data_prep.ipynb failed at cell 7: AudioError: your recordings cannot be used: "
                               f"{silent}: the target is silent (RMS -inf dBFS, below -60); is the device switched on and the "
                               f"track armed?; "
                               f"{FIX}; the executed copy is {out}")
    executed = nbformat.read(str(out), 4)
    assert not any(c.get("outputs") for c in executed.cells[8:] if c.cell_type == "code")
    assert sorted(p.name for p in work.iterdir()) == ["01_data_prep.ipynb"]  # no capture, no suite.json, no data
