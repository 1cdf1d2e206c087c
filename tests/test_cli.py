"""The command line, called in-process (``cli.main``) except for a few real subprocesses."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from ampxfer_lib.cli.main import main
from ampxfer_lib.model.formats import load_model
from ampxfer_lib.model.render import render_sequential

from conftest import REPO, SMALL_SPLITS, file_hashes, plucked_notes, realdata_or_skip, write_pair


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err):
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_new_user_flow(tmp_path, capsys):
    """prepare a pair, train a baseline, train --init-from it on another device, render, evaluate."""
    a_in, a_out = write_pair(tmp_path / "rec", seconds=8.0, name="a")
    b_in, b_out = write_pair(tmp_path / "rec", seconds=8.0, name="b", seed=4, drive=12.0)
    sources = file_hashes(a_in, a_out, b_in, b_out)
    for name, (i, t) in {"a": (a_in, a_out), "b": (b_in, b_out)}.items():
        code, out, err = run(capsys, "prepare", "--input", i, "--target", t, "--out", tmp_path / f"data_{name}", *SMALL_SPLITS)
        assert code == 0 and "wrote" in out, err
    code, out, _ = run(capsys, "train", "--data", tmp_path / "data_a", "--out", tmp_path / "run_a",
                       "--hidden-size", "6", "--max-epochs", "3")
    assert code == 0 and "epoch    3" in out and "done (max_epochs)" in out
    code, out, _ = run(capsys, "train", "--data", tmp_path / "data_b", "--out", tmp_path / "run_b",
                       "--init-from", tmp_path / "run_a", "--max-epochs", "2", "--subset", "limited",
                       "--freeze-lstm-epochs", "1", "--lr", "0.002")
    assert code == 0, out
    summary = json.loads((tmp_path / "run_b" / "summary.json").read_text())
    assert summary["init_from"] == str(tmp_path / "run_a") and summary["subset"] == "limited"
    code, out, _ = run(capsys, "render", "--model", tmp_path / "run_b" / "model_best.json", "--input", b_in,
                       "--out", tmp_path / "b_model.wav")
    assert code == 0
    y, rate = sf.read(tmp_path / "b_model.wav", dtype="float32")
    x, _ = sf.read(b_in, dtype="float64")
    assert rate == 44100 and len(y) == len(x)
    weights = load_model(tmp_path / "run_b" / "model_best.json")
    assert np.allclose(y, render_sequential(weights, x), atol=1e-5)
    code, out, _ = run(capsys, "evaluate", "--model", tmp_path / "run_b", "--data", tmp_path / "data_b", "--json")
    assert code == 0
    assert json.loads(out)["test_esr"] == pytest.approx(summary["test_esr"], rel=1e-4)
    # the result is a NeuralPi/Proteus model file
    obj = json.loads((tmp_path / "run_b" / "model_best.json").read_text())
    assert obj["model_data"]["unit_type"] == "LSTM" and obj["model_data"]["hidden_size"] == 6
    assert file_hashes(a_in, a_out, b_in, b_out) == sources


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    code, _, err = run(capsys, "prepare", "--input", tmp_path / "nope.wav", "--target", tmp_path / "nope2.wav",
                       "--out", tmp_path / "d")
    assert code == 2 and "nope.wav: no such file" in one_error_line(err)
    assert not (tmp_path / "d").exists()
    code, _, err = run(capsys, "train", "--data", tmp_path / "d", "--out", tmp_path / "r")
    assert code == 2 and "run `ampxfer prepare" in one_error_line(err)
    code, _, err = run(capsys, "render", "--model", tmp_path / "m.json", "--input", tmp_path / "x.wav", "--out",
                       tmp_path / "y.wav")
    assert code == 2 and "m.json: no such file" in one_error_line(err)
    code, _, err = run(capsys, "prepare", "--input", "a.wav", "--out", tmp_path / "d")
    assert code == 2 and "--target" in one_error_line(err)


def test_render_refuses_to_overwrite_and_takes_knobs(tmp_path, capsys):
    from ampxfer_lib.model.formats import save_model
    from ampxfer_lib.model.network import new_model
    from ampxfer_lib.model.weights import ModelConfig

    x = plucked_notes(0.5, 48000)
    sf.write(tmp_path / "di.wav", x, 48000)
    w = new_model(ModelConfig(input_size=2, hidden_size=5), seed=0).weights()
    save_model(w, tmp_path / "m.json")
    code, _, err = run(capsys, "render", "--model", tmp_path / "m.json", "--input", tmp_path / "di.wav", "--out",
                       tmp_path / "o.wav")
    assert code == 2 and "--knob" in one_error_line(err)
    code, out, _ = run(capsys, "render", "--model", tmp_path / "m.json", "--input", tmp_path / "di.wav", "--out",
                       tmp_path / "o.wav", "--knob", "0.5")
    assert code == 0
    y, rate = sf.read(tmp_path / "o.wav")
    assert rate == 44100 and len(y) == int(0.5 * 44100)  # resampled to the model rate, same duration
    before = file_hashes(tmp_path / "o.wav")
    code, _, err = run(capsys, "render", "--model", tmp_path / "m.json", "--input", tmp_path / "di.wav", "--out",
                       tmp_path / "o.wav", "--knob", "0.9")
    assert code == 2 and "--overwrite" in one_error_line(err)
    assert file_hashes(tmp_path / "o.wav") == before
    code, _, err = run(capsys, "render", "--model", tmp_path / "m.json", "--input", tmp_path / "di.wav", "--out",
                       tmp_path / "di.wav", "--knob", "0.9", "--overwrite")
    assert code == 2 and "is the input recording" in one_error_line(err)


def test_evaluate_rejects_a_model_that_does_not_fit(small_data, capsys):
    models = realdata_or_skip() / "models" / "neuralpi"
    code, _, err = run(capsys, "evaluate", "--model", models / "TS9.json", "--data", small_data)
    assert code == 2 and "takes 1 knob input(s) but the data" in one_error_line(err)
    code, out, _ = run(capsys, "evaluate", "--model", models / "TS9_FullD.json", "--data", small_data, "--json")
    assert code == 0 and json.loads(out)["test_esr"] > 0


def test_real_subprocesses(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    help_out = subprocess.run([sys.executable, "-m", "ampxfer_lib", "--help"], capture_output=True, text=True, env=env)
    assert help_out.returncode == 0
    for cmd in ("prepare", "train", "render", "evaluate"):
        assert cmd in help_out.stdout
    bad = subprocess.run([sys.executable, "-m", "ampxfer_lib", "train", "--data", str(tmp_path), "--out",
                          str(tmp_path / "r")], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.startswith("error: ")
    debug = subprocess.run([sys.executable, "-m", "ampxfer_lib", "--debug", "train", "--data", str(tmp_path),
                            "--out", str(tmp_path / "r")], capture_output=True, text=True, env=env)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
