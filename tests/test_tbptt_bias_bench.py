"""bench/tbptt_bias.py: one trained state continued four ways, only the rate and the window differing."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import tbptt_bias as tb  # noqa: E402


def test_one_state_is_continued_at_two_rates_and_three_windows(small_data, tmp_path, capsys):
    assert tb.main(["--data", str(small_data), "--out", str(tmp_path), "--base-epochs", "1", "--epochs", "2"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1e-")]
    assert [r.split(" | ")[0] for r in rows] == ["| 1e-2, 500", "| 1e-3, 500", "| 1e-3, 4000", "| 1e-3, whole"]
    runs = tmp_path / small_data.name
    base = json.loads((runs / "base" / "config.json").read_text())["train"]
    for folder, lr, window in (("lr0.01_w500", 1e-2, 500), ("lr0.001_w500", 1e-3, 500),
                               ("lr0.001_w4000", 1e-3, 4000), ("lr0.001_wwhole", 1e-3, 22050)):
        train = json.loads((runs / folder / "config.json").read_text())["train"]
        assert (train["lr"], train["tbptt_samples"], train["keep_optimizer"]) == (lr, window, True)
        assert train["init_from"] == str(runs / "base")
        differs = {k for k in train if train[k] != base[k]}
        assert differs <= {"lr", "tbptt_samples", "init_from", "keep_optimizer", "max_epochs"}
        history = json.loads((runs / folder / "history.json").read_text())
        assert [r["lr"] for r in history if r.get("train_loss") is not None] == [lr, lr]


def test_a_folder_that_is_not_prepared_data_is_refused(tmp_path):
    with pytest.raises(SystemExit, match=r"--data .*: not a prepared data folder \(no manifest.json\)"):
        tb.main(["--data", str(tmp_path)])
