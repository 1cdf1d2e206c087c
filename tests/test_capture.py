"""``ampxfer capture`` end to end on a small synthetic pair, resuming, refusals, library registration.

Budgets are tiny (8 s of audio, hidden-8 models, 1-2 epochs): these tests check what the
pipeline does with its stages and files, not how good a two-epoch model is.
"""

import contextlib
import io
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from ampxfer_lib.capture.listen_page import PAGE
from ampxfer_lib.capture.pipeline import STAGES, Capture, capture, export_plugins, summary_lines
from ampxfer_lib.capture.verdict import comparison, verdict
from ampxfer_lib.cli.main import main
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.library import index as library_index
from ampxfer_lib.library.index import ModelLibrary, model_digest
from ampxfer_lib.model.formats import import_model, load_model, save_model
from ampxfer_lib.model.network import new_model
from ampxfer_lib.model.weights import ModelConfig, ModelWeights
from ampxfer_lib.model.render import render_sequential
from ampxfer_lib.training.evaluate import evaluate
from ampxfer_lib.training.callbacks import Callback
from ampxfer_lib.training.config import make_config
from ampxfer_lib.training.loop import train
from ampxfer_lib.transfer.rank import RankConfig

from conftest import file_hashes, plucked_notes, write_pair

TINY_FLAGS = ["--set", "max_epochs=2", "--finetune-top", "1"]
TINY = dict(train_overrides={"max_epochs": 2}, rank_config=RankConfig(finetune_top=1))


def loud(weights: ModelWeights, gain: float) -> ModelWeights:
    params = dict(weights.params)
    params["lin.weight"] = params["lin.weight"] * gain
    return ModelWeights(weights.config, params)


def one_error_line(err):
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def tree_hashes(*folders):
    return file_hashes(*sorted(p for f in folders for p in Path(f).rglob("*") if p.is_file()))


def relative_hashes(folder):
    return {str(Path(k).relative_to(folder)): v for k, v in tree_hashes(folder).items()}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """8 s of plucked notes through the toy device: ``pedal_di.wav`` and ``pedal_out.wav``."""
    return write_pair(tmp_path_factory.mktemp("capture_rec"), seconds=8.0, name="pedal")


@pytest.fixture(scope="module")
def start_library(tmp_path_factory, small_data_b):
    """A folder of starting models: one trained on a similar device, two random ones."""
    root = tmp_path_factory.mktemp("start_lib")
    train(make_config(small_data_b, hidden_size=8, max_epochs=3), root / "run", log=False)
    lib = root / "lib"
    lib.mkdir()
    shutil.copy(root / "run" / "model_best.json", lib / "similar.json")
    for i in range(2):
        save_model(loud(new_model(ModelConfig(hidden_size=8), seed=20 + i).weights(), 4.0), lib / f"random{i}.json")
    return lib


def capture_argv(di, tgt, out, *extra):
    return [str(a) for a in ("capture", "--input", di, "--target", tgt, "--out", out, *extra)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, recordings, start_library):
    """The command run once to the end, with a scratch baseline, into a user library of its own."""
    root = tmp_path_factory.mktemp("finished")
    di, tgt = recordings
    argv = capture_argv(di, tgt, root / "cap", "--library", start_library, "--scratch-baseline", "--knob", "gain=7",
                        "--kind", "overdrive", *TINY_FLAGS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AMPXFER_MODELS", str(root / "mylib"))
        out, err = io.StringIO(), io.StringIO()
        sources = file_hashes(di, tgt)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in argv])
    assert file_hashes(di, tgt) == sources
    return SimpleNamespace(code=code, out=root / "cap", mylib=root / "mylib", stdout=out.getvalue(),
                           stderr=err.getvalue(), argv=[str(a) for a in argv],
                           record=json.loads((root / "cap" / "capture.json").read_text()))


def test_capture_command_end_to_end(finished, start_library):
    assert finished.code == 0, finished.stderr
    out, rec = finished.out, finished.record
    assert set(rec["stages"]) == set(STAGES)
    for i, stage in enumerate(STAGES, start=1):
        assert f"[{i}/8] {stage}: " in finished.stdout

    # rank: the model of a similar device beats the random ones, and the capture starts from it
    ranking = json.loads((out / "ranking.json").read_text())["ranking"]
    assert [e["name"] for e in ranking][0] == "similar" and len(ranking) == 3
    start = rec["stages"]["train"]["start"]
    assert start["name"] == "similar" and start["chosen_by"] == "ranking"
    assert load_model(out / "start.json").equal(load_model(start_library / "similar.json"))
    run_cfg = json.loads((out / "run" / "config.json").read_text())["train"]
    assert run_cfg["init_from"] == str(out / "start.json") and run_cfg["max_epochs"] == 2 and run_cfg["subset"] == "full"
    scratch_cfg = json.loads((out / "scratch" / "config.json").read_text())
    assert scratch_cfg["train"]["init_from"] is None and scratch_cfg["model"]["hidden_size"] == 8
    run_hist = json.loads((out / "run" / "history.json").read_text())
    scratch_hist = json.loads((out / "scratch" / "history.json").read_text())
    assert run_hist[0]["epoch"] == 0 and run_hist[0]["val_loss"] < scratch_hist[0]["val_loss"]

    # evaluate: the plain test ESR of the model file, its verdict, the comparison
    esr = evaluate(out / "run" / "model_best.json", out / "data")["test_esr"]
    scratch_esr = evaluate(out / "scratch" / "model_best.json", out / "data")["test_esr"]
    ev = rec["stages"]["evaluate"]
    assert ev["test_esr"] == esr and ev["scratch_test_esr"] == scratch_esr
    assert ev["verdict"]["label"] == verdict(esr).label and ev["line"] == verdict(esr).line()
    assert ev["comparison"] == comparison(esr, scratch_esr, "similar")

    # export: NeuralPi/AGAM and AIDA-X files of the very model; NAM refused with the reason
    best = load_model(out / "run" / "model_best.json")
    files = rec["stages"]["export"]["files"]
    assert [(f["file"], f["format"]) for f in files] == [("plugins/pedal_out.json", "neuralpi"),
                                                         ("plugins/pedal_out.aidax.json", "rtneural")]
    assert load_model(out / "plugins" / "pedal_out.json").equal(best)
    x = plucked_notes(0.5, seed=3).astype(np.float32)
    assert np.allclose(render_sequential(import_model(out / "plugins" / "pedal_out.aidax.json"), x),
                       render_sequential(best, x), atol=1e-6)
    assert any("AIDA-X" in n for n in files[1]["notes"])
    skipped = rec["stages"]["export"]["skipped"]
    assert [s["format"] for s in skipped] == ["nam"] and "skip connection" in skipped[0]["why"]
    assert "pedal_out.aidax.json" in (out / "plugins" / "README.txt").read_text()

    # the listening page's players all play files that exist beside it
    page = (out / PAGE).read_text()
    srcs = [s.split('"')[0] for s in page.split('<audio controls preload="none" src="')[1:]]
    assert len(srcs) == 4 and all((out / s).is_file() for s in srcs)
    assert ev["comparison"] in page and "similar" in page and "plugins/pedal_out.json" in page

    # register: the user's library knows the capture
    (entry,) = ModelLibrary(finished.mylib).entries()
    assert (entry.name, entry.kind, entry.knobs, entry.test_esr) == ("pedal_out", "overdrive", (("gain", "7"),), esr)
    assert entry.capture == os.path.abspath(out) and entry.sha256 == model_digest(out / "run" / "model_best.json")
    assert load_model(finished.mylib / entry.file).equal(best) and "started from similar" in entry.source
    assert finished.stdout.rstrip().endswith("\n".join(summary_lines(rec)))


def test_rerun_skips_every_finished_stage_and_changes_nothing(finished, monkeypatch, capsys):
    assert finished.code == 0
    monkeypatch.setenv("AMPXFER_MODELS", str(finished.mylib))
    before = tree_hashes(finished.out, finished.mylib)
    assert main(finished.argv) == 0
    out = capsys.readouterr().out
    for i, stage in enumerate(STAGES, start=1):
        assert f"[{i}/8] {stage}: done before (" in out
        assert out.count(f"] {stage}: ") == 1
    assert tree_hashes(finished.out, finished.mylib) == before


class StopAtEpoch(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch(self, run, record):
        if record["epoch"] == self.epoch:
            raise KeyboardInterrupt


def test_interrupted_training_resumes_and_ends_like_an_uninterrupted_one(tmp_path, recordings, start_library,
                                                                         finished, monkeypatch):
    monkeypatch.setenv("AMPXFER_MODELS", str(tmp_path / "mylib"))
    di, tgt = recordings
    out = tmp_path / "cap"
    with pytest.raises(KeyboardInterrupt):
        capture(di, tgt, out, libraries=[start_library], progress=None, train_callbacks=[StopAtEpoch(1)], **TINY)
    record = json.loads((out / "capture.json").read_text())
    assert set(record["stages"]) == {"prepare", "rank"} and (out / "run" / "checkpoint.pt").exists()
    ranking = (out / "ranking.json").read_bytes()

    lines = []
    record = capture(di, tgt, out, libraries=[start_library], progress=lines.append, stop_after="train", **TINY)
    assert set(record["stages"]) == {"prepare", "rank", "train"}
    assert any(l.strip().startswith("resuming") for l in lines)
    assert [h["epoch"] for h in json.loads((out / "run" / "history.json").read_text())] == [0, 1, 2]
    assert (out / "ranking.json").read_bytes() == ranking
    # same recordings, start and recipe as the uninterrupted capture: the same model, bit for bit
    assert (out / "run" / "model_best.json").read_bytes() == (finished.out / "run" / "model_best.json").read_bytes()
    assert not (tmp_path / "mylib").exists()  # registration is the last stage

    record = capture(di, tgt, out, libraries=[start_library], progress=lines.append, **TINY)
    assert set(record["stages"]) == set(STAGES) - {"scratch"}
    assert ModelLibrary(tmp_path / "mylib").entries()[0].name == "pedal_out"


def test_a_failing_recording_stops_before_anything_is_written(tmp_path, recordings, capsys, monkeypatch):
    monkeypatch.setenv("AMPXFER_MODELS", str(tmp_path / "mylib"))
    di, _ = recordings
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8 * 44100), 44100, subtype="PCM_24")
    assert main(capture_argv(di, silent, tmp_path / "cap")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {silent}: the target is silent")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["silent.wav"]
    assert main(capture_argv(di, tmp_path / "missing.wav", tmp_path / "cap")) == 2
    assert "missing.wav: no such file; check the --target path" in one_error_line(capsys.readouterr().err)


def test_folders_that_are_not_this_capture_are_refused(tmp_path, recordings, finished, capsys, monkeypatch):
    monkeypatch.setenv("AMPXFER_MODELS", str(tmp_path / "mylib"))
    di, tgt = recordings
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(capture_argv(di, tgt, other)) == 2
    assert f"{other}: the folder holds other files (notes.txt, ...) and is not a capture folder" in \
        one_error_line(capsys.readouterr().err)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]

    before = tree_hashes(finished.out)
    di2, tgt2 = write_pair(tmp_path / "rec2", seconds=8.0, seed=5, name="fuzz")
    assert main(capture_argv(di2, tgt2, finished.out)) == 2
    assert "holds the capture of other recordings (pedal_di.wav + pedal_out.wav); choose another --out" in \
        one_error_line(capsys.readouterr().err)
    assert main(capture_argv(di, tgt, finished.out, "--seconds", "3")) == 2
    assert "with other settings (seconds None -> 3.0)" in one_error_line(capsys.readouterr().err)
    assert main(capture_argv(di, tgt, finished.out, "--name", "other")) == 2
    assert "is the capture named 'pedal_out'" in one_error_line(capsys.readouterr().err)
    assert main(capture_argv(di, tgt, tmp_path / "new", "--library", tmp_path / "nowhere")) == 2
    assert f"{tmp_path / 'nowhere'}: no such folder" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "new").exists()
    assert main(capture_argv(di, tgt, finished.out, "--library", tmp_path, "--start", "auto")) == 2
    assert "ranked already with other settings (libraries" in one_error_line(capsys.readouterr().err)
    assert tree_hashes(finished.out) == before

    # a folder holding only data/ is a first prepare that stopped before capture.json: of these
    # recordings it is continued, of others it is refused
    half = tmp_path / "half"
    shutil.copytree(finished.out / "data", half / "data")
    assert main(capture_argv(di2, tgt2, half)) == 2
    assert "holds other files (data/manifest.json of other recordings, ...)" in one_error_line(capsys.readouterr().err)
    record = capture(di, tgt, half, progress=None, stop_after="prepare")
    assert set(record["stages"]) == {"prepare"}
    assert relative_hashes(half / "data") == relative_hashes(finished.out / "data")
    assert not (tmp_path / "mylib").exists()


def test_no_starting_models_means_scratch_and_seconds_limit_the_training_audio(tmp_path, recordings, monkeypatch):
    monkeypatch.setenv("AMPXFER_MODELS", str(tmp_path / "mylib"))  # absent: a first-time user
    monkeypatch.setattr(library_index, "SHIPPED_MODELS", tmp_path / "no_shipped_models")
    di, tgt = recordings
    out = tmp_path / "cap"
    lines = []
    record = capture(di, tgt, out, seconds=2, scratch_baseline=True, progress=lines.append,
                     train_overrides={"max_epochs": 1})
    assert any(f"rank: no starting models in {tmp_path / 'mylib'}, {tmp_path / 'no_shipped_models'}: the capture "
               "trains from scratch" in l for l in lines)
    st = record["stages"]
    assert st["train"]["start"] is None and not (out / "start.json").exists()
    assert st["scratch"]["same_as_capture"] and not (out / "scratch").exists()
    assert st["evaluate"]["comparison"] is None
    assert st["prepare"]["train_seconds_used"] == 2.0
    run = json.loads((out / "run" / "summary.json").read_text())
    assert run["subset"] == "spread" and run["train_seconds_audio"] == 2.0
    assert "scratch (no starting model)" in (out / PAGE).read_text()
    assert ModelLibrary(tmp_path / "mylib").entries()[0].source.endswith("(DI pedal_di.wav)")


def test_names_in_the_library(tmp_path, recordings, monkeypatch, capsys):
    monkeypatch.setenv("AMPXFER_MODELS", str(tmp_path / "mylib"))
    lib = ModelLibrary(tmp_path / "mylib")
    other = tmp_path / "other.json"
    save_model(new_model(ModelConfig(hidden_size=8), seed=1).weights(), other)
    lib.add(other, "pedal_out")
    lib.add(other, "taken")
    di, tgt = recordings
    assert main(capture_argv(di, tgt, tmp_path / "cap", "--name", "taken", "--start", "scratch")) == 2
    assert f"{tmp_path / 'mylib'}: already holds a model named 'taken'" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "cap").exists()
    record = capture(di, tgt, tmp_path / "cap", start="scratch", progress=None,
                     train_overrides={"max_epochs": 1, "hidden_size": 6})
    assert record["stages"]["register"]["name"] == "pedal_out-2"
    assert [e.name for e in lib.entries()] == ["pedal_out", "taken", "pedal_out-2"]
    assert "rank" not in record["stages"]  # --start scratch needs no ranking


def test_start_override(tmp_path, recordings, start_library, monkeypatch):
    monkeypatch.setenv("AMPXFER_MODELS", str(tmp_path / "mylib"))
    di, tgt = recordings
    out = tmp_path / "cap"
    opts = dict(libraries=[start_library], progress=None, train_overrides={"max_epochs": 1},
                rank_config=RankConfig(finetune_top=0), stop_after="train")
    with pytest.raises(ConfigError, match=r"--start 9: the ranking has 3 usable model\(s\); give 1\.\.3"):
        capture(di, tgt, out, start=9, **opts)
    record = capture(di, tgt, out, start="2", **opts)
    ranking = json.loads((out / "ranking.json").read_text())["ranking"]
    start = record["stages"]["train"]["start"]
    assert start["model"] == ranking[1]["model"] and start["chosen_by"] == "you (rank 2)"
    assert load_model(out / "start.json").equal(load_model(ranking[1]["model"]))
    with pytest.raises(ConfigError, match="the capture was trained already from"):
        capture(di, tgt, out, start="scratch", **opts)
    assert capture(di, tgt, out, start=2, **opts)["stages"]["train"] == record["stages"]["train"]


def test_export_plugins_writes_nam_for_a_model_without_skip(tmp_path):
    no_skip = new_model(ModelConfig(hidden_size=20, skip=False), seed=2).weights()
    files, skipped = export_plugins(no_skip, tmp_path / "a", "My Amp")
    assert [f["file"] for f in files] == ["My_Amp.json", "My_Amp.aidax.json", "My_Amp.nam"] and skipped == []
    x = plucked_notes(0.3, seed=1).astype(np.float32)
    assert np.allclose(render_sequential(import_model(tmp_path / "a" / "My_Amp.nam"), x),
                       render_sequential(no_skip, x), atol=1e-6)
    assert any("NeuralPi will NOT" in n for n in files[0]["notes"])  # NeuralPi always adds the input
    with_skip = new_model(ModelConfig(hidden_size=20), seed=2).weights()
    files, skipped = export_plugins(with_skip, tmp_path / "b", "My Amp")
    assert [f["file"] for f in files] == ["My_Amp.json", "My_Amp.aidax.json"]
    assert any(n.startswith("NeuralPi loads it") for n in files[0]["notes"])
    assert skipped[0]["format"] == "nam" and skipped[0]["why"].startswith("has a skip connection")
    assert "no nam file: has a skip connection" in (tmp_path / "b" / "README.txt").read_text()


def test_capture_object_stages_for_the_notebooks(tmp_path, recordings, start_library, monkeypatch):
    """The notebooks' order: scratch baseline first, ranking shown, then the transfer run."""
    monkeypatch.setenv("AMPXFER_MODELS", str(tmp_path / "mylib"))
    di, tgt = recordings
    opts = dict(libraries=[start_library], progress=None, train_overrides={"max_epochs": 1},
                rank_config=RankConfig(finetune_top=0), scratch_baseline=True)
    cap = Capture(di, tgt, tmp_path / "cap", **opts)
    assert not (tmp_path / "cap").exists()  # opening writes nothing
    scratch = cap.train_scratch()
    assert set(cap.record["stages"]) == {"prepare", "scratch"}
    assert json.loads((tmp_path / "cap" / "scratch" / "config.json").read_text())["model"]["hidden_size"] == 20
    ranking = Capture(di, tgt, tmp_path / "cap", **opts).rank()
    assert ranking[0]["name"] == "similar"
    cap = Capture(di, tgt, tmp_path / "cap", **opts)
    record = cap.run()
    assert set(record["stages"]) == set(STAGES)
    assert record["stages"]["scratch"]["summary"] == scratch
    assert record["stages"]["evaluate"]["comparison"].startswith("starting from similar: ")
    assert record["stages"]["evaluate"]["comparison"].endswith("(the baseline is an LSTM 20, the capture an LSTM 8)")
