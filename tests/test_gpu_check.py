"""bench/gpu_check.py on the CPU (`--device cpu --tiny`): the code path a GPU run takes, with the
CPU as the device; every comparison is then CPU against CPU and must agree exactly."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import gpu_check  # noqa: E402

from ampxfer_lib.data.dataset import load_dataset, segment  # noqa: E402
from ampxfer_lib.training.config import DEFAULT_PRESET  # noqa: E402
from ampxfer_lib.training.tbptt import tbptt_windows  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    rc = gpu_check.main(["--device", "cpu", "--tiny", "--out", str(out), "--json", str(out / "result.json"),
                         "--report", str(out / "report.md")])
    return rc, out, json.loads((out / "result.json").read_text())


def _segments(data_dir, seconds):
    data = load_dataset(data_dir)
    seg_len = int(round(seconds * data.sample_rate))
    return segment(data.split("train"), seg_len)[0].shape[0], seg_len


def test_format_and_exact_agreement_on_the_cpu(result):
    rc, out, r = result
    assert rc == 0
    assert sorted(r) == ["batch_sweep", "command", "data", "device", "epoch_time", "equivalence", "render", "schema"]
    assert r["schema"] == gpu_check.SCHEMA == 1
    assert r["command"] == (f"python bench/gpu_check.py --device cpu --tiny --out {out} --json {out / 'result.json'} "
                            f"--report {out / 'report.md'}")
    assert sorted(r["device"]) == ["cpu_count", "cuda", "cudnn", "kind", "memory_gib", "name", "python", "torch"]
    assert (r["device"]["kind"], r["device"]["cudnn"], r["device"]["memory_gib"]) == ("cpu", None, None)
    assert r["device"]["torch"] == torch.__version__
    data_dir = Path(r["data"]["path"])
    assert data_dir == out / "data_tiny" and r["data"]["sample_rate"] == 44100

    eq = r["equivalence"]
    assert sorted(eq) == ["agree", "epochs", "gradient_max_rel", "rows", "tolerances"]
    assert eq["agree"] is True and eq["epochs"] == 1
    assert eq["gradient_max_rel"] == 0.0  # same kernel, same weights, same batch
    assert [row["epoch"] for row in eq["rows"]] == [0, 1]
    assert eq["rows"][0]["device_train"] is None and eq["rows"][0]["cpu_train"] is None
    for row in eq["rows"]:
        assert sorted(row) == ["cpu_train", "cpu_val", "device_train", "device_val", "epoch", "rel_val"]
        assert row["device_val"] == row["cpu_val"] and row["device_train"] == row["cpu_train"]
        assert row["rel_val"] == 0.0
    assert eq["tolerances"] == {"gradient": 1e-3, "epoch0_val": 1e-4, "last_val": 0.1}

    segments, _ = _segments(data_dir, 0.5)
    assert [row["preset"] for row in r["epoch_time"]] == [DEFAULT_PRESET, "agam"]
    for row in r["epoch_time"]:
        assert sorted(row) == ["audio_per_s", "batches", "first_train_s", "preset", "segments", "train_s", "val_s"]
        assert row["segments"] == segments and row["batches"] == math.ceil(segments / 50)
        assert row["train_s"] > 0 and row["val_s"] > 0 and row["first_train_s"] > 0
        assert row["audio_per_s"] == pytest.approx(segments * 0.5 / row["train_s"], rel=1e-3)

    sweep = r["batch_sweep"]
    assert sorted(sweep) == ["budget_s", "epochs", "rows", "target_val"]
    assert (sweep["epochs"], sweep["budget_s"]) == (1, 90.0)
    assert [(row["batch"], row["segment_s"], row["lr"]) for row in sweep["rows"]] == [(4, 0.5, 0.01), (8, 0.25, 0.02)]
    for row in sweep["rows"]:
        n, seg_len = _segments(data_dir, row["segment_s"])
        assert row["segments"] == n
        assert row["updates_per_epoch"] == math.ceil(n / row["batch"]) * len(tbptt_windows(seg_len, 200, 500))
        assert row["epochs"] == 1
    assert sweep["target_val"] == sweep["rows"][0]["best_val"]
    assert sweep["rows"][0]["time_to_target_s"] is not None

    rd = r["render"]
    assert sorted(rd) == ["device_s", "library_cpu_s", "max_abs_diff", "seconds", "threads"]
    assert rd["seconds"] == 2.0 and rd["threads"] == 1
    assert rd["max_abs_diff"] < 1e-4  # the chunked renderer against one whole sequence


def test_report_lists_every_figure(result):
    _, out, r = result
    text = (out / "report.md").read_text()
    assert text == gpu_check.report(r)
    assert [line for line in text.splitlines() if line.startswith("#")] == [
        "# GPU check", "## Same results on the device and on the CPU", "## One epoch",
        "## Batch and segment size (default preset)", "## Rendering"]
    assert "Verdict: **agree**" in text
    assert "| 0 | - | - | " in text  # epoch 0: no training loss
    assert text.count(f"\n| {DEFAULT_PRESET} |") == 1 and text.count("\n| agam |") == 1
    assert text.count("\n| 4 | 0.5 | 0.01 |") == 1 and text.count("\n| 8 | 0.25 | 0.02 |") == 1


def test_cuda_without_a_gpu_is_refused_in_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as info:
        gpu_check.main(["--device", "cuda", "--tiny"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "error: --device cuda, but torch sees no CUDA GPU here; use --device cpu (or auto)")
