import json
import math

import numpy as np
import pytest
import torch

from ampxfer_lib.training import checkpoint as ckpt
from ampxfer_lib.errors import ConfigError, RunFolderError, TrainingDiverged
from ampxfer_lib.training.callbacks import Callback
from ampxfer_lib.training.config import PRESETS, TrainConfig, make_config
from ampxfer_lib.training.loop import Trainer, train
from ampxfer_lib.training.tbptt import tbptt_windows


def test_agam_preset_is_the_article_recipe():
    cfg = make_config("d", "agam")
    assert PRESETS["agam"] == {}
    assert (cfg.segment_seconds, cfg.batch_size, cfg.warmup_samples, cfg.tbptt_samples) == (0.5, 50, 200, 1000)
    assert (cfg.esr_weight, cfg.dc_weight, cfg.pre_emphasis) == (0.75, 0.25, None)
    assert (cfg.lr, cfg.weight_decay, cfg.scheduler, cfg.plateau_factor, cfg.plateau_patience) == (5e-3, 1e-4, "plateau", 0.5, 5)
    assert (cfg.val_every, cfg.patience) == (2, 25)


def test_config_round_trips_through_json():
    cfg = make_config("data", "agam", lr=1e-3, grad_clip=0.5, init_from="m.json", freeze_lstm_epochs=-1)
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ConfigError, match="unknown training setting"):
        TrainConfig.from_dict({"data": "d", "learning_rate": 1})
    with pytest.raises(ConfigError, match="unknown preset"):
        make_config("d", "fastest")
    with pytest.raises(ConfigError, match="--keep-optimizer needs"):
        make_config("d", keep_optimizer=True)


def test_tbptt_windows_per_batch():
    w = tbptt_windows(22050, 200, 1000)
    assert len(w) == 22  # ceil((22050 - 200) / 1000)
    assert w[0] == (200, 1200) and w[-1] == (21200, 22050)
    assert sum(b - a for a, b in w) == 22050 - 200


def test_weight_updates_per_epoch(small_data, tmp_path, monkeypatch):
    steps = []
    original = torch.optim.Adam.step

    def counting_step(self, *a, **k):
        steps.append(1)
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", counting_step)
    cfg = make_config(small_data, "agam", hidden_size=4, max_epochs=1, batch_size=4)
    summary = train(cfg, tmp_path / "run")
    from ampxfer_lib.data.dataset import load_dataset

    n_segments = load_dataset(small_data).split("train")[0].samples // 22050
    assert n_segments in (10, 11) and summary["train_seconds_audio"] == n_segments * 0.5
    assert len(steps) == math.ceil(n_segments / 4) * 22


def test_tiny_model_fits_tiny_device(small_data, tmp_path):
    cfg = make_config(small_data, hidden_size=8, max_epochs=10, val_every=1, seed=0)
    summary = train(cfg, tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[0]["epoch"] == 0 and history[0]["train_loss"] is None
    assert summary["best_val_loss"] < history[0]["val_loss"] / 10
    assert [h["epoch"] for h in history] == list(range(11))
    assert summary["test_esr"] < 0.5 and summary["status"] == "complete" and summary["stop_reason"] == "max_epochs"
    for name in ("config.json", "checkpoint.pt", "model_best.json", "model_last.json", "history.json", "summary.json"):
        assert (tmp_path / "run" / name).exists()


class StopAt(Callback):
    """Simulates a kill: raises after the given epoch (after its checkpoint) or batch."""

    def __init__(self, epoch, batch=None):
        self.epoch, self.batch = epoch, batch

    def on_batch(self, run, batch, n_batches):
        if self.batch is not None and len(run.history) - 1 == self.epoch - 1 and batch == self.batch:
            raise KeyboardInterrupt

    def on_epoch(self, run, record):
        if self.batch is None and record["epoch"] == self.epoch:
            raise KeyboardInterrupt


def _strip(history):
    """History without its clock readings (wall and CPU seconds), which no two runs share."""
    return [{k: v for k, v in h.items() if k not in ("elapsed_s", "cpu_s")} for h in history]


@pytest.mark.parametrize("stop", [StopAt(3), StopAt(4, batch=2)])
def test_resume_gives_the_same_history_and_model(small_data, tmp_path, stop):
    cfg = make_config(small_data, hidden_size=6, max_epochs=6, batch_size=4, checkpoint_seconds=0, seed=3)
    train(cfg, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", callbacks=[stop])
    state = ckpt.load_checkpoint(tmp_path / "killed")
    assert state["status"] == "running"
    summary = train(cfg, tmp_path / "killed")
    whole = json.loads((tmp_path / "whole" / "history.json").read_text())
    resumed = json.loads((tmp_path / "killed" / "history.json").read_text())
    assert _strip(resumed) == _strip(whole)
    for name in ("model_best.json", "model_last.json"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert summary["epochs"] == 6


def test_finished_run_is_not_retrained_and_can_be_extended(small_data, tmp_path):
    cfg = make_config(small_data, hidden_size=4, max_epochs=2)
    first = train(cfg, tmp_path / "run")
    stamp = (tmp_path / "run" / "checkpoint.pt").stat().st_mtime_ns
    again = Trainer(cfg, tmp_path / "run")
    assert again.run() == first and again.already_complete
    assert (tmp_path / "run" / "checkpoint.pt").stat().st_mtime_ns == stamp
    longer = train(make_config(small_data, hidden_size=4, max_epochs=4), tmp_path / "run")
    assert longer["epochs"] == 4
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2, 3, 4]


def test_a_different_run_is_refused_unless_overwrite(small_data, tmp_path):
    train(make_config(small_data, "agam", hidden_size=4, max_epochs=1), tmp_path / "run")
    with pytest.raises(RunFolderError, match=r"lr 0.005 -> 0.001.*--overwrite"):
        train(make_config(small_data, "agam", hidden_size=4, max_epochs=1, lr=1e-3), tmp_path / "run")
    s = train(make_config(small_data, "agam", hidden_size=4, max_epochs=1, lr=1e-3), tmp_path / "run", overwrite=True)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["lr"] == 1e-3
    assert s["epochs"] == 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="holds other files"):
        train(make_config(small_data, hidden_size=4, max_epochs=1), tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_frozen_lstm_trains_only_the_head(small_data, tmp_path):
    from ampxfer_lib.model.formats import load_model

    train(make_config(small_data, hidden_size=4, max_epochs=1), tmp_path / "src")
    cfg = make_config(small_data, init_from=str(tmp_path / "src" / "model_best.json"), max_epochs=2,
                      freeze_lstm_epochs=-1)
    train(cfg, tmp_path / "frozen")
    a = load_model(tmp_path / "src" / "model_best.json")
    b = load_model(tmp_path / "frozen" / "model_last.json")
    for k in ("rec.weight_ih_l0", "rec.weight_hh_l0", "rec.bias_ih_l0", "rec.bias_hh_l0"):
        assert (a.params[k] == b.params[k]).all(), k
    assert not (a.params["lin.weight"] == b.params["lin.weight"]).all()


def test_nan_loss_stops_and_keeps_the_best_model(small_data, tmp_path, monkeypatch):
    import ampxfer_lib.training.loop as train_mod

    real = train_mod.make_loss

    def poisoned(config):
        loss = real(config)
        calls = {"n": 0}

        def f(p, y):
            calls["n"] += 1
            out = loss(p, y)
            return out * float("nan") if calls["n"] > 60 else out  # 22 windows an epoch, plus validations

        return f

    monkeypatch.setattr(train_mod, "make_loss", poisoned)
    with pytest.raises(TrainingDiverged, match="best model so far"):
        train(make_config(small_data, hidden_size=4, max_epochs=10, val_every=1), tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["best_epoch"] >= 1
    assert (tmp_path / "run" / "model_best.json").exists()


def test_grad_clip_and_data_errors(small_data, tmp_path):
    s = train(make_config(small_data, hidden_size=4, max_epochs=1, grad_clip=0.1), tmp_path / "run")
    assert math.isfinite(s["best_val_loss"])
    with pytest.raises(ConfigError, match="no such folder"):
        train(make_config(tmp_path / "nodata", max_epochs=1), tmp_path / "r2")


def test_fast_preset_round_trips_and_decays_to_its_floor():
    from ampxfer_lib.training.config import epoch_lr

    cfg = make_config("d", "fast")
    assert cfg.preset == "fast"
    assert (cfg.segment_seconds, cfg.batch_size, cfg.warmup_samples, cfg.tbptt_samples) == (0.5, 50, 200, 500)
    assert (cfg.lr, cfg.scheduler, cfg.lr_decay, cfg.min_lr, cfg.val_every) == (1e-2, "exponential", 0.85, 1e-4, 1)
    assert (cfg.esr_weight, cfg.dc_weight, cfg.pre_emphasis, cfg.weight_decay) == (0.75, 0.25, None, 1e-4)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    # lr * 0.85 ** (epoch - 1), floored at min_lr (reached after 1 + log(0.01) / log(0.85) = 29.3 epochs)
    assert epoch_lr(cfg, 1) == 1e-2
    assert epoch_lr(cfg, 2) == pytest.approx(8.5e-3, rel=1e-12)
    assert epoch_lr(cfg, 11) == pytest.approx(1e-2 * 0.85 ** 10, rel=1e-12)
    assert epoch_lr(cfg, 29) == pytest.approx(1e-2 * 0.85 ** 28, rel=1e-12) and epoch_lr(cfg, 29) > 1e-4
    assert epoch_lr(cfg, 30) == 1e-4 and epoch_lr(cfg, 500) == 1e-4
    assert epoch_lr(make_config("d", "agam"), 7) == 5e-3  # lr_decay 1: constant
    with pytest.raises(ConfigError, match="lr-decay"):
        make_config("d", lr_decay=1.5)
    with pytest.raises(ConfigError, match="unknown scheduler"):
        make_config("d", scheduler="cosine")


def test_exponential_schedule_sets_each_epochs_learning_rate(small_data, tmp_path):
    cfg = make_config(small_data, "fast", hidden_size=4, max_epochs=3, lr=4e-3, lr_decay=0.5, min_lr=1.5e-3)
    train(cfg, tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["lr"] for h in history[1:]] == [4e-3, 2e-3, 1.5e-3]
    assert all(h["val_loss"] is not None for h in history)


def _reference_agam_epoch(data_dir, hidden, seed, epochs, batch_size):
    """A plain AGAM-style loop with the library's documented choices: batch-first
    nn.LSTM, warm-up without gradient, shuffles from Generator(seed * 1000003 + epoch)."""
    import numpy as np

    from ampxfer_lib.data.dataset import load_dataset, segment
    from ampxfer_lib.training.losses import LossConfig, make_loss
    from ampxfer_lib.model.network import new_model
    from ampxfer_lib.model.weights import ModelConfig

    data = load_dataset(data_dir)
    x, y = segment(data.split("train"), 22050)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    model = new_model(ModelConfig(1, hidden, True, data.sample_rate), seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3, weight_decay=1e-4)
    loss_fn = make_loss(LossConfig())
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        for b in range(0, len(x), batch_size):
            idx = order[b:b + batch_size]
            xb, yb = x[idx], y[idx]
            model.reset_state()
            with torch.no_grad():
                model(xb[:, :200])
            for start in range(200, 22050, 1000):
                opt.zero_grad()
                loss = loss_fn(model(xb[:, start:start + 1000]), yb[:, start:start + 1000])
                loss.backward()
                opt.step()
                model.detach_state()
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}, np


def test_agam_trajectory_matches_a_plain_nn_lstm_loop(small_data, tmp_path):
    """The fast kernel and time-major loop change the implementation, not the recipe."""
    from ampxfer_lib.model.formats import load_model

    expected, np = _reference_agam_epoch(small_data, hidden=5, seed=2, epochs=2, batch_size=4)
    cfg = make_config(small_data, "agam", hidden_size=5, seed=2, max_epochs=2, batch_size=4)
    train(cfg, tmp_path / "run")
    got = load_model(tmp_path / "run" / "model_last.json").params
    from ampxfer_lib.model.network import new_model
    from ampxfer_lib.model.weights import ModelConfig

    start = new_model(ModelConfig(hidden_size=5), seed=2).state_dict()
    assert max(float(np.abs(expected[k] - start[k].numpy()).max()) for k in expected) > 0.05  # it trained
    for name, value in expected.items():
        # 66 Adam steps later, float32 rounding apart: far below one step (lr 5e-3)
        np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-5, err_msg=name)


def test_train_log_keeps_every_session(small_data, tmp_path):
    """train.log (written by train() unless log=False): one block per session, the reason a
    session stopped, one line per epoch; a refused command adds nothing."""
    cfg = make_config(small_data, hidden_size=4, max_epochs=2, batch_size=4, checkpoint_seconds=0)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, callbacks=[StopAt(2, batch=1)])
    train(cfg, run)
    lines = (run / "train.log").read_text().splitlines()
    starts = ["---", "training ", "epoch    0  val", "epoch    1  train", "interrupted: run it again to resume",
              "---", "resuming ", "epoch    0  val", "epoch    2  train", "done (max_epochs)"]
    assert len(lines) == len(starts) and all(l.startswith(s) for l, s in zip(lines, starts)), lines
    before = (run / "train.log").read_bytes()
    with pytest.raises(RunFolderError):
        train(make_config(small_data, hidden_size=5, max_epochs=2), run)
    assert (run / "train.log").read_bytes() == before
    train(make_config(small_data, hidden_size=4, max_epochs=1), tmp_path / "quiet", log=False)
    assert not (tmp_path / "quiet" / "train.log").exists()


def test_summary_is_rewritten_when_a_kill_lost_it(small_data, tmp_path):
    cfg = make_config(small_data, hidden_size=4, max_epochs=1)
    first = train(cfg, tmp_path / "run")
    (tmp_path / "run" / "summary.json").unlink()
    again = train(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == again
    assert {k: v for k, v in again.items() if k != "train_seconds"} == {k: v for k, v in first.items() if k != "train_seconds"}


def test_train_log_has_each_line_once_for_plain_and_study_runs(small_data, tmp_path):
    """A run folder has one writer of its train.log, whoever starts the run: a plain
    train() and a study's unit (plan.execute_run) both leave exactly one block of
    header, start line, epoch 0 and 1 and 2, end line."""
    from ampxfer_lib.study.executors import execute_run
    from ampxfer_lib.study.plan import RunSpec

    cfg = make_config(small_data, hidden_size=4, max_epochs=2, batch_size=4)
    expected = ["---", "training ", "epoch    0  val", "epoch    1  train", "epoch    2  train", "done (max_epochs)"]
    train(cfg, tmp_path / "plain")
    spec = RunSpec("scratch/x/full/seed0", "scratch", ("x",), "x", "full", 0, cfg, str(tmp_path / "study"))
    execute_run(spec)
    for name in ("plain", "study"):
        lines = (tmp_path / name / "train.log").read_text().splitlines()
        assert len(lines) == 6 and all(l.startswith(s) for l, s in zip(lines, expected)), (name, lines)
    # a finished run asked again adds one block of two lines: header, "already complete"
    execute_run(spec)
    lines = (tmp_path / "study" / "train.log").read_text().splitlines()
    assert len(lines) == 8 and lines[6].startswith("---") and lines[7].startswith("already complete"), lines


def test_history_records_val_esr_and_cpu_time(small_data, tmp_path):
    """val_esr is the plain ESR of the validation the record comes from (None where none ran),
    the same number as evaluating the saved model; cpu_s accumulates like elapsed_s."""
    from ampxfer_lib.training.evaluate import evaluate

    cfg = make_config(small_data, "agam", hidden_size=4, max_epochs=3, batch_size=4, seed=1)
    summary = train(cfg, tmp_path / "run", log=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["val_esr"] is None for h in history] == [h["val_loss"] is None for h in history] == \
        [False, True, False, False]  # epoch 0, every 2nd epoch, and the last one
    assert summary["best_val_esr"] == history[summary["best_epoch"]]["val_esr"]
    assert summary["best_val_esr"] == evaluate(tmp_path / "run" / "model_best.json", small_data, "val")["val_esr"]
    assert history[-1]["val_esr"] == evaluate(tmp_path / "run" / "model_last.json", small_data, "val")["val_esr"]
    assert summary["test_esr"] == evaluate(tmp_path / "run" / "model_best.json", small_data)["test_esr"]
    cpu = [h["cpu_s"] for h in history]
    assert cpu[0] == 0.0 and all(b > a for a, b in zip(cpu, cpu[1:])), cpu


def test_resumed_runs_continue_the_cpu_count_and_old_checkpoints_still_load(small_data, tmp_path):
    cfg = make_config(small_data, hidden_size=4, max_epochs=4, batch_size=4, seed=2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", callbacks=[StopAt(2)], log=False)
    train(cfg, tmp_path / "run", log=False)
    cpu = [h["cpu_s"] for h in json.loads((tmp_path / "run" / "history.json").read_text())]
    assert all(b > a for a, b in zip(cpu, cpu[1:])), cpu  # epoch 3 counts on from epoch 2

    # A checkpoint written before val_esr and cpu_s existed resumes; its records keep their keys.
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "old", callbacks=[StopAt(2)], log=False)
    state = ckpt.load_checkpoint(tmp_path / "old")
    del state["cpu_seconds"]
    state["history"] = [{k: v for k, v in h.items() if k not in ("val_esr", "cpu_s")} for h in state["history"]]
    ckpt.save_checkpoint(tmp_path / "old", state)
    summary = train(cfg, tmp_path / "old", log=False)
    history = json.loads((tmp_path / "old" / "history.json").read_text())
    assert [("val_esr" in h, "cpu_s" in h) for h in history] == [(False, False)] * 3 + [(True, True)] * 2
    assert _strip(history) == [{k: v for k, v in h.items() if k != "val_esr"} for h in
                               _strip(json.loads((tmp_path / "run" / "history.json").read_text()))][:3] + \
        _strip(json.loads((tmp_path / "run" / "history.json").read_text()))[3:]
    assert summary["best_val_esr"] == (history[summary["best_epoch"]].get("val_esr"))


def test_callbacks_see_a_read_only_view_of_the_run(small_data, tmp_path):
    import dataclasses

    from ampxfer_lib.training.callbacks import RunView

    class Record(Callback):
        def __init__(self):
            self.calls = []

        def on_start(self, run):
            self.calls.append(("start", run.start_epoch, run.start_batch, len(run.history), run.best_epoch))

        def on_epoch(self, run, record):
            assert isinstance(run, RunView) and run.history[-1] == record
            with pytest.raises(dataclasses.FrozenInstanceError):
                run.best_epoch = 0
            validated = [h for h in run.history if h["epoch"] > 0 and h["val_loss"] is not None]
            best = min(validated, key=lambda h: h["val_loss"])
            self.calls.append(("epoch", record["epoch"], (run.best_epoch, run.best_val_loss) == (best["epoch"], best["val_loss"])))

        def on_end(self, run, summary):
            self.calls.append(("end", run.already_complete, len(run.history), run.n_segments))

    cfg = make_config(small_data, hidden_size=4, max_epochs=2, batch_size=4)
    seen = Record()
    first = train(cfg, tmp_path / "run", [seen], log=False)
    n = seen.calls[-1][3]
    assert n in (10, 11)  # 0.5 s segments of about 5.5 s
    assert seen.calls == [("start", 1, 0, 1, 0), ("epoch", 1, True), ("epoch", 2, True), ("end", False, 3, n)]
    seen = Record()
    train(make_config(small_data, hidden_size=4, max_epochs=3, batch_size=4), tmp_path / "run", [seen], log=False)
    assert seen.calls[0] == ("start", 3, 0, 3, first["best_epoch"]) and seen.calls[-1] == ("end", False, 4, n)
    seen = Record()
    train(make_config(small_data, hidden_size=4, max_epochs=3, batch_size=4), tmp_path / "run", [seen], log=False)
    assert seen.calls == [("end", True, 4, n)]


def test_tbptt_batch_carries_the_state_across_windows():
    """With a learning rate of 0 the weights never move, so each window's loss is the loss of
    the same slice of one uninterrupted pass after the warm-up: the state is carried, the
    warm-up is scored nowhere, and there is one optimiser step per window."""
    from ampxfer_lib.model.network import new_model
    from ampxfer_lib.model.weights import ModelConfig
    from ampxfer_lib.training.losses import LossConfig, make_loss
    from ampxfer_lib.training.tbptt import tbptt_batch

    model = new_model(ModelConfig(hidden_size=5), seed=4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(900, 1, 3, generator=gen) * 0.3  # (L, C, B)
    y = torch.tanh(3 * x[:, 0])  # (L, B)
    loss_fn = make_loss(LossConfig())
    windows = tbptt_windows(900, 100, 300)
    assert windows == [(100, 400), (400, 700), (700, 900)]
    with torch.no_grad():
        pred, _ = model.forward_tm(x[100:], model.advance_tm(x[:100]))
    expected = sum(float(loss_fn(pred[a - 100:b - 100].t(), y[a:b].t())) for a, b in windows) / 3
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    steps = []
    opt.register_step_post_hook(lambda *a: steps.append(1))
    got = tbptt_batch(model, opt, loss_fn, x, y, 100, windows)
    assert float(got) == pytest.approx(expected, rel=1e-6) and len(steps) == 3


def test_adaptive_preset_is_the_default_and_round_trips():
    from ampxfer_lib.training.config import DEFAULT_PRESET

    assert DEFAULT_PRESET == "adaptive"
    cfg = make_config("d")
    assert cfg.preset == "adaptive" and cfg.to_dict() == make_config("d", "adaptive").to_dict()
    assert (cfg.segment_seconds, cfg.batch_size, cfg.warmup_samples, cfg.tbptt_samples) == (0.5, 50, 200, 500)
    assert (cfg.lr, cfg.finetune_lr, cfg.scheduler, cfg.min_lr, cfg.val_every) == (1e-2, 5e-3, "adaptive", 1e-5, 1)
    assert (cfg.plateau_factor, cfg.plateau_patience, cfg.plateau_threshold) == (0.5, 8, 1e-3)
    assert (cfg.ema_decay, cfg.match_level, cfg.l2_sp, cfg.patience) == (0.995, "gain", 0.0, 60)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.start_lr() == 1e-2 and make_config("d", init_from="m.json").start_lr() == 5e-3
    # an explicit lr is every run's rate; finetune_lr only when given too
    assert make_config("d", init_from="m.json", lr=2e-3).start_lr() == 2e-3
    assert make_config("d", init_from="m.json", lr=2e-3, finetune_lr=1e-3).start_lr() == 1e-3
    # no readable data folder: the preset's rate stands (training then fails on the data itself)
    assert make_config("d", init_from="m.json").finetune_lr == 5e-3
    for bad, match in ((dict(match_level="loud"), "match-level"), (dict(ema_decay=1.0), "ema-decay"),
                       (dict(l2_sp=0.1), "needs --init-from"), (dict(finetune_lr=0.0), "finetune-lr"),
                       (dict(plateau_factor=1.0), "plateau_factor")):
        with pytest.raises(ConfigError, match=match):
            make_config("d", **bad)


def test_the_old_default_sits_on_its_floor_while_the_adaptive_rate_follows_progress():
    """The stall of issue 11 in closed form: ``fast`` is at its 1e-4 floor from epoch 30 whatever
    the validations say, and early stopping then ends it at the first 26 flat validations;
    ``adaptive`` keeps its rate while the validations improve and ends only at its floor."""
    from ampxfer_lib.training.config import epoch_lr
    from ampxfer_lib.training.loop import scheduled_lr

    fast, adaptive = make_config("d", "fast"), make_config("d")
    improving = [{"epoch": e, "val_loss": 1.0 / e} for e in range(1, 101)]
    assert all(epoch_lr(fast, e) == 1e-4 for e in range(30, 101))
    assert scheduled_lr(adaptive, 101, improving) == (1e-2, False)
    # a plateau: the first validation sets the best; then one halving per 8 flat validations,
    # and converged 8 flat validations after reaching 1e-5
    flat = [{"epoch": e, "val_loss": 1.0} for e in range(1, 200)]
    halvings = math.ceil(math.log2(1e-2 / 1e-5))  # 10: 1e-2 * 0.5**10 < 1e-5, so the 10th lands on the floor
    assert scheduled_lr(adaptive, 9, flat[:8]) == (1e-2, False)
    assert scheduled_lr(adaptive, 10, flat[:9]) == (5e-3, False)
    assert scheduled_lr(adaptive, 0, flat[:1 + 8 * halvings]) == (1e-5, False)
    assert scheduled_lr(adaptive, 0, flat[:1 + 8 * halvings + 7]) == (1e-5, False)
    assert scheduled_lr(adaptive, 0, flat[:1 + 8 * halvings + 8]) == (1e-5, True)
    # epoch 0 (the starting model's validation) and unvalidated epochs do not count
    with_start = [{"epoch": 0, "val_loss": 0.5}, {"epoch": 1, "val_loss": None}] + improving[1:]
    assert scheduled_lr(adaptive, 101, with_start) == (1e-2, False)


def test_adaptive_run_stops_as_converged_and_resumes_identically(small_data, tmp_path):
    # a rate that cannot help (1e-9) makes every validation flat: patience 2, floor 2.5e-10 -> 2 halvings
    cfg = make_config(small_data, hidden_size=4, batch_size=4, lr=1e-9, min_lr=2.5e-10, plateau_patience=2,
                      max_epochs=50, checkpoint_seconds=0, seed=1)
    summary = train(cfg, tmp_path / "whole")
    history = json.loads((tmp_path / "whole" / "history.json").read_text())
    assert summary["stop_reason"] == "converged" and summary["status"] == "complete"
    # epoch e trains at the rate of the e - 1 validations before it: the first sets the best,
    # two flat ones halve the rate; two more at the floor and the run has converged
    assert [h["lr"] for h in history[1:]] == [1e-9] * 3 + [5e-10] * 2 + [2.5e-10] * 2
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", callbacks=[StopAt(3, batch=1)])
    train(cfg, tmp_path / "killed")
    resumed = json.loads((tmp_path / "killed" / "history.json").read_text())
    assert _strip(resumed) == _strip(history)
    for name in ("model_best.json", "model_last.json"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_the_kept_model_is_the_weight_average(small_data, tmp_path):
    from ampxfer_lib.model.formats import load_model

    cfg = make_config(small_data, hidden_size=4, batch_size=4, max_epochs=3, ema_decay=0.9, seed=2)
    summary = train(cfg, tmp_path / "run")
    state = ckpt.load_checkpoint(tmp_path / "run")
    # every optimiser step updated the average: epochs x batches x windows
    windows = len(tbptt_windows(22050, cfg.warmup_samples, cfg.tbptt_samples))
    n_segments = round(summary["train_seconds_audio"] / 0.5)
    assert state["average_updates"] == 3 * math.ceil(n_segments / 4) * windows
    best = load_model(tmp_path / "run" / "model_best.json")
    source = state["average"] if state["best_epoch"] == 3 else state["best_model"]
    for k, v in source.items():
        assert np.array_equal(best.params[k], v.numpy())
    last = load_model(tmp_path / "run" / "model_last.json")
    assert not all(np.array_equal(last.params[k], v.numpy()) for k, v in state["average"].items())


def test_a_transferred_start_is_matched_to_the_target_level(tmp_path):
    """Data made from a model's own output at -2x its dense contribution (and an offset): the
    gain match finds it exactly, so the start's validation loss is ~0; unmatched it is large."""
    from ampxfer_lib.data.audio import write_audio
    from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare
    from ampxfer_lib.model.formats import save_model
    from ampxfer_lib.model.network import new_model
    from ampxfer_lib.model.weights import ModelConfig
    from ampxfer_lib.transfer.level_match import lstm_features

    from conftest import plucked_notes

    source = new_model(ModelConfig(1, 6, True, 44100), seed=4).weights()
    x = plucked_notes(10.0, 44100, seed=5).astype(np.float32)
    h = lstm_features(source, x[None, :, None])[0]
    dense = h @ source.params["lin.weight"][0].astype(np.float64) + float(source.params["lin.bias"][0])
    y = (x + -2.0 * dense + 0.003).astype(np.float32)
    write_audio(tmp_path / "di.wav", x, 44100)
    write_audio(tmp_path / "dev.wav", y, 44100)
    prepare([CaptureSpec((str(tmp_path / "di.wav"),), (str(tmp_path / "dev.wav"),))], tmp_path / "data",
            PrepareConfig(align="0", val_seconds=2.0, test_seconds=1.0, limited_seconds=3.0))
    save_model(source, tmp_path / "source.json")
    runs = {}
    for match in ("none", "gain"):
        cfg = make_config(tmp_path / "data", init_from=str(tmp_path / "source.json"), match_level=match, max_epochs=1)
        runs[match] = train(cfg, tmp_path / match)
    assert runs["gain"]["start_match"]["gain"] == pytest.approx(-2.0, rel=1e-3)
    assert runs["gain"]["initial_val_loss"] < 1e-4 < 0.5 < runs["none"]["initial_val_loss"]
    assert runs["none"]["start_match"] is None


def test_end_line_warns_when_the_model_learnt_nothing(tmp_path):
    from ampxfer_lib.training.callbacks import NOT_LEARNT_ESR, LogLines, RunView
    from ampxfer_lib.training.config import make_config

    view = RunView(tmp_path, make_config(""), "cpu", 1, (), 10, 5.0, 1, 0, (), 3, 0.75)
    base = {"stop_reason": "converged", "best_val_loss": 0.75, "best_epoch": 3, "epochs": 9,
            "test_esr": 1.0, "train_seconds": 1.0, "init_from": None}
    for esr, init_from, want in ((NOT_LEARNT_ESR, None, "--init-from"), (1.0, "start.json", "belong together"),
                                 (0.89, None, None), (None, None, None)):
        lines = []
        LogLines(lines.append).on_end(view, dict(base, best_val_esr=esr, init_from=init_from))
        assert lines[0].startswith("done (converged): best val 0.75000 at epoch 3 of 9")
        if want is None:
            assert len(lines) == 1
        else:
            assert len(lines) == 2 and lines[1].startswith("warning: the model plays almost nothing of the target "
                                                           f"(best validation ESR {esr:.2f})") and want in lines[1]


def test_a_fine_tune_on_more_than_a_minute_of_audio_starts_at_the_full_rate_and_grows_its_window(small_data,
                                                                                                  monkeypatch):
    from ampxfer_lib.data.dataset import Dataset
    from ampxfer_lib.training import config as config_module

    seconds = Dataset(small_data).seconds("train")
    limited = Dataset(small_data).seconds("train", "limited")
    assert limited < seconds
    monkeypatch.setattr(config_module, "FULL_RATE_FINETUNE_SECONDS", (limited + seconds) / 2)
    full = make_config(small_data, init_from="m.json")
    assert (full.finetune_lr, full.start_lr(), full.tbptt_grow) == (1e-2, 1e-2, True)
    short = make_config(small_data, init_from="m.json", subset="limited")
    assert (short.finetune_lr, short.start_lr(), short.tbptt_grow) == (5e-3, 5e-3, False)
    # exactly at the limit still counts as short; an explicit setting always stands; scratch is untouched
    monkeypatch.setattr(config_module, "FULL_RATE_FINETUNE_SECONDS", seconds)
    at_limit = make_config(small_data, init_from="m.json")
    assert (at_limit.finetune_lr, at_limit.tbptt_grow) == (5e-3, False)
    monkeypatch.setattr(config_module, "FULL_RATE_FINETUNE_SECONDS", limited)
    assert make_config(small_data, init_from="m.json", finetune_lr=2e-3).finetune_lr == 2e-3
    assert make_config(small_data, init_from="m.json", tbptt_grow=False).tbptt_grow is False
    assert make_config(small_data, init_from="m.json", lr=3e-3).tbptt_grow is True  # the window rule is not the rate's
    assert make_config(small_data).to_dict() == make_config("d").to_dict() | {"data": str(small_data)}
    assert make_config(small_data).tbptt_grow is False
    # agam and fast have no fine-tune settings of their own: nothing to switch
    agam = make_config(small_data, "agam", init_from="m.json")
    assert (agam.finetune_lr, agam.tbptt_grow) == (None, False)


def test_a_fine_tune_of_the_default_has_no_weight_decay_and_scratch_keeps_it(small_data):
    from ampxfer_lib.training.config import FINETUNE_WEIGHT_DECAY, PRESETS

    assert FINETUNE_WEIGHT_DECAY == 0.0 and "weight_decay" not in PRESETS["adaptive"]
    assert make_config(small_data).weight_decay == 1e-4
    for subset in ("full", "limited"):
        assert make_config(small_data, init_from="m.json", subset=subset).weight_decay == 0.0
    # an explicit --lr or a cut of the fine-tune rate does not bring the decay back; an explicit decay stands
    assert make_config(small_data, init_from="m.json", lr=3e-3).weight_decay == 0.0
    assert make_config(small_data, init_from="m.json", weight_decay=1e-4).weight_decay == 1e-4
    # agam stays exact for reproductions, and fast has no fine-tune settings of its own
    assert make_config(small_data, "agam", init_from="m.json").weight_decay == 1e-4
    assert make_config(small_data, "fast", init_from="m.json").weight_decay == 1e-4


def test_the_update_window_grows_as_the_rate_falls(small_data):
    from ampxfer_lib.training.loop import TrainingData, epoch_windows
    from ampxfer_lib.training.tbptt import grown_window, tbptt_windows

    assert grown_window(500, 1e-2, 1e-2) == 500
    assert grown_window(500, 1e-2, 2.5e-3) == 2000
    assert grown_window(500, 5e-3, 1e-2) == 500  # never shorter than the configured window
    fixed = make_config(small_data, tbptt_samples=500, device="cpu")
    grown = make_config(small_data, tbptt_samples=500, tbptt_grow=True, device="cpu")
    data = TrainingData.load(grown, torch.device("cpu"))
    seg = data.segment_len
    assert epoch_windows(fixed, data, 1e-3) == tbptt_windows(seg, fixed.warmup_samples, 500)
    assert epoch_windows(grown, data, grown.lr) == tbptt_windows(seg, grown.warmup_samples, 500)
    assert epoch_windows(grown, data, grown.lr / 4) == tbptt_windows(seg, grown.warmup_samples, 2000)
    assert epoch_windows(grown, data, 1e-7) == [(grown.warmup_samples, seg)]  # the whole segment at most


def test_restarts_from_best_only_in_the_epoch_whose_adaptive_rate_fell():
    from ampxfer_lib.training.loop import restarts_from_best

    history = [{"epoch": 0, "lr": 1e-2}, {"epoch": 1, "lr": 1e-2}, {"epoch": 2, "lr": 1e-2}]
    on = TrainConfig(scheduler="adaptive", decay_from_best=True)

    class State:  # what restarts_from_best reads of a RunState
        has_best_model = True

    state = State()
    state.history = history
    assert restarts_from_best(on, 5e-3, state)  # the rate after epoch 2 fell: restart
    assert not restarts_from_best(on, 1e-2, state)  # the same rate: carry on
    assert not restarts_from_best(TrainConfig(scheduler="adaptive"), 5e-3, state)  # off (the default)
    assert not restarts_from_best(TrainConfig(scheduler="exponential", decay_from_best=True), 5e-3, state)
    state.history = history[:1]  # epoch 1: only the start's validation is recorded, nothing to restart from
    assert not restarts_from_best(on, 5e-3, state)
    state.history, state.has_best_model = history, False
    assert not restarts_from_best(on, 5e-3, state)


def test_a_run_that_restarts_from_best_at_each_decay_resumes_identically(small_data, tmp_path):
    # a rate too high for the toy device (5e-2) and patience 1: the rate halves within a few epochs
    common = dict(hidden_size=4, batch_size=4, lr=5e-2, plateau_patience=1, max_epochs=8, checkpoint_seconds=0,
                  seed=1)
    train(make_config(small_data, **common), tmp_path / "plain")
    plain = json.loads((tmp_path / "plain" / "history.json").read_text())
    cfg = make_config(small_data, decay_from_best=True, **common)
    train(cfg, tmp_path / "whole")
    history = json.loads((tmp_path / "whole" / "history.json").read_text())
    decay = next(h["epoch"] for h in history[2:] if h["lr"] < 5e-2)
    best = min(history[1:decay], key=lambda h: h["val_loss"])
    assert best["epoch"] < decay - 1  # the epoch before the decay was not the best: the restart moves the weights
    # identical until the decay, then the restarted run's first epoch differs
    assert _strip(history[:decay]) == _strip(plain[:decay])
    assert history[decay]["train_loss"] != plain[decay]["train_loss"]
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", callbacks=[StopAt(decay, batch=1)])
    train(cfg, tmp_path / "killed")
    assert _strip(json.loads((tmp_path / "killed" / "history.json").read_text())) == _strip(history)
    for name in ("model_best.json", "model_last.json"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
