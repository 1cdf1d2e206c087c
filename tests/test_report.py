"""Report: time to quality, Table 1 ratios, results.csv, figures and the live plot, on hand-made runs."""

import csv
import io
from pathlib import Path

import pytest

from ampxfer_lib.study.report import (RESULT_COLUMNS, LiveLossPlot, RunResult, figure_png, plot_val_curves, results_csv,
                                results_table, save_figure, study_figures, table1_markdown, table1_rows,
                                time_to_quality, write_report)


def hist(*points):
    """History records from (epoch, val_loss or None, elapsed_s)."""
    return [{"epoch": e, "train_loss": None if e == 0 else 1.0, "val_loss": v, "lr": 5e-3, "elapsed_s": t}
            for e, v, t in points]


SCRATCH = hist((0, 0.9, 0.0), (1, None, 10.0), (2, 0.5, 21.0), (3, None, 30.0), (4, 0.3, 42.0),
               (5, None, 50.0), (6, 0.3, 63.0), (7, None, 70.0), (8, 0.35, 84.0))
TRANSFER = hist((0, 0.4, 0.0), (1, None, 9.0), (2, 0.32, 20.0), (3, None, 29.0), (4, 0.29, 40.0),
                (5, None, 49.0), (6, 0.2, 60.0))


def test_time_to_quality_on_a_known_history():
    t = time_to_quality(TRANSFER, SCRATCH)
    # scratch's best (epochs > 0) is 0.3, first reached at epoch 4 after 42 s; transfer
    # first gets to <= 0.3 at epoch 4 (0.29) after 40 s
    assert t == {"target_loss": 0.3, "scratch_epoch": 4, "scratch_seconds": 42.0, "transfer_epoch": 4,
                 "transfer_seconds": 40.0, "seconds_ratio": 40.0 / 42.0, "epochs_ratio": 1.0, "reached": True}
    # a starting model already better than scratch's best reaches it at epoch 0, in no time
    early = time_to_quality(hist((0, 0.25, 0.0), (2, 0.2, 5.0)), SCRATCH)
    assert (early["transfer_epoch"], early["transfer_seconds"], early["seconds_ratio"]) == (0, 0.0, 0.0)
    never = time_to_quality(hist((0, 0.8, 0.0), (2, 0.31, 5.0)), SCRATCH)
    assert never["reached"] is False and never["transfer_epoch"] is None and never["seconds_ratio"] is None
    # scratch's epoch-0 validation (its random start) never sets the bar
    assert time_to_quality(TRANSFER, hist((0, 0.01, 0.0), (2, 0.5, 3.0)))["target_loss"] == 0.5
    assert time_to_quality(TRANSFER, hist((0, 0.9, 0.0)))["target_loss"] is None


def summary(best, first, start, epochs, seconds, esr, audio=30.0, best_epoch=None):
    return {"best_val_loss": best, "first_val_loss": first, "initial_val_loss": start, "epochs": epochs,
            "best_epoch": best_epoch or epochs, "train_seconds": seconds, "test_esr": esr,
            "train_seconds_audio": audio, "status": "complete", "stop_reason": "max_epochs"}


def results(tmp_path, seeds=(0,)):
    out = []
    for seed in seeds:
        k = 1 + seed  # the second seed's values are doubled: means are 1.5x the first seed's
        out.append(RunResult(f"scratch/t/limited/seed{seed}", "pair", "t", "scratch", "limited", seed,
                             tmp_path / "s", summary(0.3 * k, 0.5 * k, 0.9 * k, 8, 84.0 * k, 0.2 * k, best_epoch=4),
                             SCRATCH))
        out.append(RunResult(f"transfer/pair/limited/seed{seed}", "pair", "t", "transfer", "limited", seed,
                             tmp_path / "t", summary(0.2 * k, 0.32 * k, 0.4 * k, 6, 60.0 * k, 0.1 * k), TRANSFER))
    out.append(RunResult("source/pair", "pair", "s", "source", "full", 0, tmp_path / "src",
                         summary(0.1, 0.2, 0.9, 8, 99.0, 0.1), SCRATCH))
    return out


def test_table1_ratios_are_transfer_over_scratch(tmp_path):
    rows = table1_rows(results(tmp_path))
    assert len(rows) == 1
    r = rows[0]
    assert (r["pair"], r["data"], r["seeds"], r["train_seconds_audio"]) == ("pair", "limited", [0], 30.0)
    assert r["ratios"]["best_val_loss"] == pytest.approx(0.2 / 0.3)
    assert r["ratios"]["initial_val_loss"] == pytest.approx(0.4 / 0.9)
    assert r["ratios"]["train_seconds"] == pytest.approx(60 / 84)
    assert r["ratios"]["epochs"] == pytest.approx(6 / 8)
    assert r["ttq"][0]["transfer_epoch"] == 4
    md = table1_markdown(results(tmp_path))
    assert "| pair | limited | 30.0 | scratch | 0.9 | 0.5 | 0.3 | 4 | 8 | 84.0 | 0.2 |" in md
    assert "| pair | limited | 30.0 | transfer | 0.4 | 0.32 | 0.2 | 6 | 6 | 60.0 | 0.1 |" in md
    assert "| pair | limited | 0.444 | 0.640 | 0.667 | 0.500 | 0.714 | 0.750 |" in md
    assert "| pair | limited | 0 | 0.3 | 4, 42.0 | 4, 40.0 | 0.952 | 1.000 |" in md
    assert "source" not in md.split("## Transfer")[0].split("|---|")[1]  # source runs are not rows


def test_table1_means_over_seeds(tmp_path):
    r = table1_rows(results(tmp_path, seeds=(0, 1)))[0]
    assert r["seeds"] == [0, 1] and r["scratch"]["n"] == 2
    assert r["scratch"]["best_val_loss"] == pytest.approx(0.45)  # mean of 0.3 and 0.6
    assert r["ratios"]["best_val_loss"] == pytest.approx(0.3 / 0.45)
    assert len(r["ttq"]) == 2
    assert "| seeds |" in table1_markdown(results(tmp_path, seeds=(0, 1)))


def test_results_csv_columns_and_rows(tmp_path):
    rows = results_table(results(tmp_path))
    assert [r["init"] for r in rows] == ["scratch", "transfer"]
    text = results_csv(rows)
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames) == RESULT_COLUMNS
    got = list(reader)
    assert got[1]["best_val_loss"] == "0.2" and got[1]["train_seconds_audio"] == "30.0" and got[1]["seed"] == "0"
    for needed in ("pair", "target", "init", "data", "train_seconds_audio", "seed", "first_val_loss",
                   "best_val_loss", "best_epoch", "epochs", "train_seconds", "test_esr"):
        assert needed in RESULT_COLUMNS
    missing = RunResult("scratch/x", "p", "x", "scratch", "full", 0, tmp_path, None, [])
    assert missing.row()["status"] == "not started" and missing.row()["best_val_loss"] is None


def test_figures_one_per_pair_and_size(tmp_path):
    figs = study_figures(results(tmp_path))
    assert list(figs) == ["pair_limited"]
    ax = figs["pair_limited"].axes[0]
    lines = {l.get_label(): l for l in ax.get_lines()}
    assert list(lines) == ["scratch", "transfer", "scratch best"]
    assert list(lines["scratch"].get_xdata()) == [0, 2, 4, 6, 8]
    assert list(lines["transfer"].get_ydata()) == [0.4, 0.32, 0.29, 0.2]
    assert list(lines["scratch best"].get_ydata()) == [0.3, 0.3]
    assert figure_png(figs["pair_limited"])[:8] == b"\x89PNG\r\n\x1a\n"
    paths = save_figure(figs["pair_limited"], tmp_path / "figs" / "x")
    assert [p.name for p in paths] == ["x.png", "x.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in paths[1].read_bytes()[:400]
    written = write_report(results(tmp_path), tmp_path / "study")
    assert written["table1"].read_text().startswith("# Table 1")
    assert sorted(p.name for p in written["figures"]) == ["pair_limited.png", "pair_limited.svg"]


class FakeRun:
    def __init__(self, history):
        self.history = list(history)
        self.out_dir = Path("runs/fake")


def test_live_plot_follows_the_validations_outside_notebooks():
    plot = LiveLossPlot(reference={"scratch": SCRATCH}, label="transfer")
    assert plot.display is False  # not in a notebook: nothing is displayed, nothing fails
    run = FakeRun(TRANSFER[:1])
    plot.on_start(run)
    for record in TRANSFER[1:5]:
        run.history.append(record)
        plot.on_epoch(run, record)
    lines = {l.get_label(): l for l in plot.figure.axes[0].get_lines()}
    assert list(lines["transfer"].get_ydata()) == [0.4, 0.32, 0.29]
    assert list(lines["scratch"].get_ydata()) == [0.9, 0.5, 0.3, 0.3, 0.35]
    assert plot.figure.axes[0].get_title() == "fake"
    run.history = list(TRANSFER)
    plot.on_end(run, {})
    lines = {l.get_label(): l for l in plot.figure.axes[0].get_lines()}
    assert list(lines["transfer"].get_xdata()) == [0, 2, 4, 6]


def test_plot_accepts_an_axis_and_linear_scale():
    fig = plot_val_curves({"transfer seed 1": TRANSFER}, title="t", log_y=False)
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear" and ax.get_title() == "t"
    plot_val_curves({"scratch": SCRATCH}, ax=ax)
    assert [l.get_label() for l in ax.get_lines()] == ["transfer seed 1", "scratch"]
