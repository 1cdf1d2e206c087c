import json
import math

import pytest
import torch

from ampxfer_lib.training import checkpoint as ckpt
from ampxfer_lib.errors import ConfigError, RunFolderError, TrainingDiverged
from ampxfer_lib.training.loop import PRESETS, Callback, TrainConfig, Trainer, make_config, tbptt_windows, train


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
    return [{k: v for k, v in h.items() if k != "elapsed_s"} for h in history]


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


def test_fast_preset_is_the_default_and_round_trips():
    from ampxfer_lib.training.loop import DEFAULT_PRESET, epoch_lr

    assert DEFAULT_PRESET == "fast"
    cfg = make_config("d")
    assert cfg.preset == "fast" and cfg.to_dict() == make_config("d", "fast").to_dict()
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
