"""GPU check: does training on a GPU give what training on the CPU gives, how fast is it, and
which batch and segment sizes keep a GPU busy.

Usage::

    python bench/gpu_check.py [--device auto|cuda|cpu] [--data DIR] [--out DIR]
                              [--report bench/RESULTS_gpu.md] [--json FILE] [--tiny]

On a CUDA machine (``--device auto`` picks it), in one short run (about 5-10 minutes):

1. **Same results.** Gradients of one update window from the same weights and batch, on the
   device (nn.LSTM, cuDNN) and on the CPU (the trainer's numba kernel); then ``--epochs``
   epochs of the default preset from the same seed on both, epoch by epoch (training and
   validation loss, relative differences). Float32 sums in another order make the two
   trajectories drift apart slowly, so the verdict uses tolerances: gradients within
   ``GRAD_TOL``, the untrained model's validation loss within ``VAL0_TOL`` and the last
   epoch's validation loss within ``LAST_TOL`` (relative).
2. **Epoch time.** Two epochs of the default preset and of ``agam`` on the data (150 s of
   training audio by default); the first includes cuDNN's start-up, the second is the
   steady state. Training and validation are timed apart (the GPU is synchronised at the
   end of each).
3. **Keeping the GPU busy.** An LSTM of 20 units at batch 50 leaves a GPU mostly idle
   (latency-bound: every one of the 24000 steps of a 0.5 s segment is a kernel launch
   whatever the batch). The default preset is trained at several batch sizes and segment
   lengths (shorter segments: more of them, so larger batches fit the same audio), each up
   to ``--sweep-epochs`` epochs or ``--sweep-seconds``; reported per setting: seconds per
   epoch, best validation loss, and the time (validation included) until the validation
   loss first reaches the batch-50 run's best (time to quality).
4. **Rendering.** 3 minutes of audio through the trained model: the library's renderer
   (CPU, the production path) and ``AmpLSTM.infer`` on the device, timed, with the largest
   difference between the two outputs.

``--device cpu`` runs the same code with the CPU as "the device" (every comparison is then
CPU against CPU, and the two trainings agree exactly); CI runs it with ``--tiny`` (seconds of
audio, one or two epochs) and checks the output's format. Nothing here assumes a GPU.

The report (Markdown, also printed) records the device, the versions and every figure;
``--json`` writes the same figures for machines (the format CI checks, ``SCHEMA``).

Data: ``--data DIR`` (a prepared data folder), else the sample data's TS9-style device
prepared with the library's defaults (150 s of training audio, rendered on first use); with
``--tiny``, 8 s of the sample DI through the same device.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ampxfer_lib.data.dataset import load_dataset, segment
from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare  # noqa: E402
from ampxfer_lib.model.formats import load_model  # noqa: E402
from ampxfer_lib.model.network import AmpLSTM, new_model  # noqa: E402
from ampxfer_lib.model.weights import ModelConfig  # noqa: E402
from ampxfer_lib.model.render import compile_kernels, render  # noqa: E402
from ampxfer_lib.training.checkpoint import MODEL_BEST  # noqa: E402
from ampxfer_lib.training.callbacks import Callback  # noqa: E402
from ampxfer_lib.training.config import DEFAULT_PRESET, make_config  # noqa: E402
from ampxfer_lib.training.tbptt import tbptt_windows  # noqa: E402
from ampxfer_lib.training.loop import train  # noqa: E402
from ampxfer_lib.training.losses import make_loss  # noqa: E402

SCHEMA = 1
GRAD_TOL = 1e-3
VAL0_TOL = 1e-4
LAST_TOL = 0.1
RENDER_SECONDS = 180.0
#: (batch size, segment seconds, learning-rate factor) tried by the sweep; the first is the
#: default recipe and sets the quality to reach. 150 s of audio make 300 segments of 0.5 s.
SWEEP = ((50, 0.5, 1.0), (100, 0.5, 1.0), (300, 0.5, 1.0), (300, 0.5, 2.0), (600, 0.25, 2.0), (1200, 0.125, 2.0))
TINY_SWEEP = ((4, 0.5, 1.0), (8, 0.25, 2.0))


class _Budget(Exception):
    """Raised by a callback to end a sweep run at its time budget (checkpoint already saved)."""


class Recorder(Callback):
    """Keeps the run's epoch records (epoch 0 included) and times training and validation."""

    def __init__(self, budget_s: Optional[float] = None):
        self.history: List[dict] = []
        self.train_s: List[float] = []
        self.val_s: List[float] = []
        self.budget_s = budget_s

    def _now(self, run) -> float:
        device = torch.device(run.device)
        if device.type == "cuda":  # the trainer queues work; wait for it before reading the clock
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def on_start(self, run):
        self.history = [dict(h) for h in run.history]
        self.segments = run.n_segments
        self.batches = math.ceil(run.n_segments / run.config.batch_size)
        self.audio_s = run.train_seconds_audio
        rate = load_dataset(run.config.data).sample_rate
        self.windows = len(tbptt_windows(int(round(run.config.segment_seconds * rate)), run.config.warmup_samples,
                                         run.config.tbptt_samples))
        self.t0 = self.t_epoch = self._now(run)

    def on_batch(self, run, batch, n_batches):
        if batch == n_batches:
            self.t_trained = self._now(run)

    def on_epoch(self, run, record):
        now = self._now(run)
        self.history.append(dict(record))
        self.train_s.append(self.t_trained - self.t_epoch)
        self.val_s.append(now - self.t_trained)
        self.t_epoch = now
        if self.budget_s is not None and now - self.t0 >= self.budget_s:
            raise _Budget()


# --------------------------------------------------------------------------- data

def tiny_data(out: Path, seconds: float = 8.0) -> Path:
    """``seconds`` of the sample DI through the TS9-style device, prepared (about 5 s to train on)."""
    import soundfile as sf

    from ampxfer_lib.data.audio import write_audio
    from ampxfer_lib.sample_data.files import DI_NAME, SAMPLE_RATE, record_device, sample_dir

    data = out / "data_tiny"
    if (data / "manifest.json").exists():
        return data
    di, rate = sf.read(str(sample_dir() / DI_NAME), frames=int(seconds * SAMPLE_RATE), dtype="float32")
    rec = out / "recordings_tiny"
    rec.mkdir(parents=True, exist_ok=True)
    write_audio(rec / "di.wav", di, rate)
    write_audio(rec / "ts9.wav", record_device("ts9", di), rate)
    prepare([CaptureSpec((str(rec / "di.wav"),), (str(rec / "ts9.wav"),))], data,
            PrepareConfig(val_seconds=1.0, test_seconds=1.0, limited_seconds=2.0))
    return data


def default_data(out: Path) -> Path:
    from ampxfer_lib.notebooks.suite import prepare_sample_devices

    prepare_sample_devices(out / "sample", devices=["ts9"], log=lambda m: None)
    return out / "sample" / "data" / "ts9"


# --------------------------------------------------------------------------- the checks

def device_info(device: torch.device) -> dict:
    cuda = device.type == "cuda"
    return {
        "kind": device.type,
        "name": torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine()),
        "memory_gib": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1) if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def gradient_check(data_dir: Path, device: torch.device, batch: int = 50, seed: int = 0) -> float:
    """Largest relative difference (per parameter tensor, L2) between the gradients of one
    update window computed on ``device`` and on the CPU from the same weights and batch."""
    cfg = make_config(data_dir)
    data = load_dataset(data_dir)
    seg_len = int(round(cfg.segment_seconds * data.sample_rate))
    x, y = segment(data.split("train"), seg_len)
    n = min(batch, x.shape[0])
    x_tm = torch.from_numpy(np.ascontiguousarray(x[:n].transpose(1, 2, 0)))  # (L, C, B)
    y_tm = torch.from_numpy(np.ascontiguousarray(y[:n, :, 0].T))  # (L, B)
    start, stop = cfg.warmup_samples, min(cfg.warmup_samples + cfg.tbptt_samples, seg_len)
    loss_fn = make_loss(cfg.loss_config())
    grads = []
    for dev in (device, torch.device("cpu")):
        model = new_model(ModelConfig(data.input_size, 20, True, data.sample_rate), seed=seed).to(dev)
        xb, yb = x_tm.to(dev), y_tm.to(dev)
        state = model.advance_tm(xb[:start])
        pred, _ = model.forward_tm(xb[start:stop], state)
        loss_fn(pred.t(), yb[start:stop].t()).backward()
        grads.append({k: p.grad.detach().cpu().double() for k, p in model.named_parameters()})
    dev_g, cpu_g = grads
    return max(float((dev_g[k] - cpu_g[k]).norm() / cpu_g[k].norm().clamp_min(1e-30)) for k in cpu_g)


def _train(data_dir: Path, out_dir: Path, device: torch.device, budget_s: Optional[float] = None,
           **overrides) -> Recorder:
    rec = Recorder(budget_s)
    cfg = make_config(data_dir, device=str(device), seed=0, **overrides)
    try:
        train(cfg, out_dir, callbacks=[rec], overwrite=True, log=False)
    except _Budget:
        pass
    return rec


def equivalence(data_dir: Path, out: Path, device: torch.device, epochs: int) -> dict:
    runs = {name: _train(data_dir, out / f"same_{name}", dev, max_epochs=epochs)
            for name, dev in (("device", device), ("cpu", torch.device("cpu")))}
    rows = []
    for d, c in zip(runs["device"].history, runs["cpu"].history):
        rows.append({"epoch": d["epoch"], "device_train": d["train_loss"], "cpu_train": c["train_loss"],
                     "device_val": d["val_loss"], "cpu_val": c["val_loss"],
                     "rel_val": _rel(d["val_loss"], c["val_loss"])})
    grad = gradient_check(data_dir, device)
    ok = grad <= GRAD_TOL and rows[0]["rel_val"] <= VAL0_TOL and rows[-1]["rel_val"] <= LAST_TOL
    return {"epochs": epochs, "gradient_max_rel": grad, "rows": rows, "agree": ok,
            "tolerances": {"gradient": GRAD_TOL, "epoch0_val": VAL0_TOL, "last_val": LAST_TOL}}


def epoch_times(data_dir: Path, out: Path, device: torch.device) -> List[dict]:
    rows = []
    for preset in (DEFAULT_PRESET, "agam"):
        rec = _train(data_dir, out / f"time_{preset}", device, preset=preset, max_epochs=2)
        rows.append({"preset": preset, "segments": rec.segments, "batches": rec.batches,
                     "first_train_s": rec.train_s[0], "train_s": rec.train_s[1], "val_s": rec.val_s[1],
                     "audio_per_s": rec.audio_s / rec.train_s[1]})
    return rows


def batch_sweep(data_dir: Path, out: Path, device: torch.device, settings: Sequence[tuple], epochs: int,
                budget_s: float) -> dict:
    base_lr = make_config(data_dir).lr
    runs = []
    for batch, seg, lr_factor in settings:
        rec = _train(data_dir, out / f"sweep_b{batch}_s{seg:g}_lr{lr_factor:g}", device, budget_s=budget_s,
                     batch_size=batch, segment_seconds=seg, lr=base_lr * lr_factor, max_epochs=epochs)
        runs.append((batch, seg, lr_factor, rec))
    validated = [h for h in runs[0][3].history if h["epoch"] > 0 and h["val_loss"] is not None]
    target = min(h["val_loss"] for h in validated)
    rows = []
    for batch, seg, lr_factor, rec in runs:
        trained = [h for h in rec.history if h["epoch"] > 0]
        reached = [h["elapsed_s"] for h in trained if h["val_loss"] is not None and h["val_loss"] <= target]
        rows.append({"batch": batch, "segment_s": seg, "lr": base_lr * lr_factor, "segments": rec.segments,
                     "updates_per_epoch": rec.batches * rec.windows, "epochs": len(trained),
                     "train_s_per_epoch": float(np.median(rec.train_s)),
                     "best_val": min(h["val_loss"] for h in trained if h["val_loss"] is not None),
                     "time_to_target_s": reached[0] if reached else None})
    return {"target_val": target, "epochs": epochs, "budget_s": budget_s, "rows": rows}


def render_check(model_file: Path, data_dir: Path, device: torch.device, seconds: float) -> dict:
    weights = load_model(model_file)
    data = load_dataset(data_dir)
    rate = data.sample_rate
    pieces = [s.input[:, 0] for split in ("train", "val", "test") for s in data.split(split)]
    audio = np.concatenate(pieces)
    audio = np.tile(audio, math.ceil(seconds * rate / audio.size))[: int(seconds * rate)].astype(np.float32)
    compile_kernels()  # compile or load the renderer's kernels before the clock starts
    t = time.perf_counter()
    lib = render(weights, audio)
    lib_s = time.perf_counter() - t
    model = AmpLSTM.from_weights(weights).to(device)
    x = torch.from_numpy(audio)[None, :, None].to(device)
    model.infer(x[:, : rate // 10])  # start-up (cuDNN) outside the timing
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    out = model.infer(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dev_s = time.perf_counter() - t
    dev = out[0, :, 0].cpu().numpy()
    return {"seconds": audio.size / rate, "library_cpu_s": lib_s, "device_s": dev_s,
            "threads": torch.get_num_threads(), "max_abs_diff": float(np.max(np.abs(dev - lib)))}


# --------------------------------------------------------------------------- report

def _f(x, fmt: str = ".4g") -> str:
    return "-" if x is None else format(x, fmt)


def report(result: dict) -> str:
    d, eq = result["device"], result["equivalence"]
    memory = f", {d['memory_gib']} GiB" if d["memory_gib"] else ""
    lines = [
        "# GPU check",
        "",
        f"Device: {d['kind']} ({d['name']}{memory}); "
        f"torch {d['torch']}, CUDA {d['cuda'] or '-'}, cuDNN {d['cudnn'] or '-'}, Python {d['python']}, "
        f"{d['cpu_count']} CPU cores.",
        f"Data: {result['data']['path']} ({result['data']['train_seconds']:.1f} s of training audio at "
        f"{result['data']['sample_rate']} Hz). Command: `{result['command']}`.",
        "",
        "## Same results on the device and on the CPU",
        "",
        f"Gradients of one update window (batch 50, same weights): largest relative difference "
        f"{eq['gradient_max_rel']:.2e}. Default preset, seed 0, {eq['epochs']} epoch(s):",
        "",
        "| epoch | train loss (device) | train loss (CPU) | val loss (device) | val loss (CPU) | val rel. diff |",
        "|---|---|---|---|---|---|",
    ]
    for r in eq["rows"]:
        lines.append(f"| {r['epoch']} | {_f(r['device_train'])} | {_f(r['cpu_train'])} | {_f(r['device_val'])} | "
                     f"{_f(r['cpu_val'])} | {r['rel_val']:.2e} |")
    t = eq["tolerances"]
    lines += ["", f"Verdict: **{'agree' if eq['agree'] else 'DIFFER'}** (tolerances: gradients {t['gradient']:g}, "
                  f"untrained validation loss {t['epoch0_val']:g}, last validation loss {t['last_val']:g}).", "",
              "## One epoch", "",
              "| preset | segments | batches | first epoch, training (s) | second epoch, training (s) | "
              "validation (s) | audio seconds per second |",
              "|---|---|---|---|---|---|---|"]
    for r in result["epoch_time"]:
        lines.append(f"| {r['preset']} | {r['segments']} | {r['batches']} | {r['first_train_s']:.2f} | "
                     f"{r['train_s']:.2f} | {r['val_s']:.2f} | {r['audio_per_s']:.1f} |")
    sw = result["batch_sweep"]
    lines += ["", "## Batch and segment size (default preset)", "",
              f"Each up to {sw['epochs']} epochs or {sw['budget_s']:g} s; quality to reach: the first row's best "
              f"validation loss, {sw['target_val']:.4g}.", "",
              "| batch | segment (s) | lr | segments | updates per epoch | epochs | training s per epoch | "
              "best val loss | time to quality (s) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in sw["rows"]:
        lines.append(f"| {r['batch']} | {r['segment_s']:g} | {r['lr']:g} | {r['segments']} | {r['updates_per_epoch']} | "
                     f"{r['epochs']} | {r['train_s_per_epoch']:.2f} | {r['best_val']:.4g} | "
                     f"{_f(r['time_to_target_s'], '.1f') if r['time_to_target_s'] is not None else 'not reached'} |")
    rd = result["render"]
    lines += ["", "## Rendering", "",
              f"{rd['seconds']:.0f} s of audio: the library's renderer (CPU, {rd['threads']} thread(s)) "
              f"{rd['library_cpu_s']:.2f} s, `AmpLSTM.infer` on the device {rd['device_s']:.2f} s; largest "
              f"difference between the two outputs {rd['max_abs_diff']:.2e}.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto (CUDA when there is one), cuda, cuda:N or cpu")
    p.add_argument("--data", help="a prepared data folder (default: the sample data's TS9-style device)")
    p.add_argument("--out", default=str(REPO / "out" / "gpu_check"), help="working folder (runs, data)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of the same-results check (default 3; tiny 1)")
    p.add_argument("--sweep-epochs", type=int, default=None, help="epochs per sweep setting (default 10; tiny 1)")
    p.add_argument("--sweep-seconds", type=float, default=90.0, help="time budget per sweep setting")
    p.add_argument("--render-seconds", type=float, default=None, help="audio to render (default 180; tiny 2)")
    p.add_argument("--tiny", action="store_true", help="seconds of audio and one epoch: checks the code path (CI)")
    p.add_argument("--report", help="also write the Markdown report here (e.g. bench/RESULTS_gpu.md)")
    p.add_argument("--json", help="also write the figures as JSON here")
    args = p.parse_args(argv)

    if args.device not in ("auto", "cpu", "cuda") and not args.device.startswith("cuda:"):
        p.error(f"--device must be auto, cpu, cuda or cuda:N, not {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no CUDA GPU here; use --device cpu (or auto)")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    torch.set_num_threads(torch.get_num_threads() if device.type == "cuda" else 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data) if args.data else tiny_data(out) if args.tiny else default_data(out)
    data = load_dataset(data_dir)
    epochs = args.epochs or (1 if args.tiny else 3)
    sweep_epochs = args.sweep_epochs or (1 if args.tiny else 10)
    render_s = args.render_seconds or (2.0 if args.tiny else RENDER_SECONDS)

    result: Dict[str, object] = {
        "schema": SCHEMA,
        "command": " ".join(["python bench/gpu_check.py"] + list(sys.argv[1:] if argv is None else argv)),
        "device": device_info(device),
        "data": {"path": str(data_dir), "sample_rate": data.sample_rate,
                 "train_seconds": round(sum(s.samples for s in data.split("train")) / data.sample_rate, 3)},
    }
    print(f"device {device}: same-results check ({epochs} epoch(s) here and on the CPU)", flush=True)
    result["equivalence"] = equivalence(data_dir, out, device, epochs)
    print("epoch times (fast, agam)", flush=True)
    result["epoch_time"] = epoch_times(data_dir, out, device)
    print("batch and segment sweep", flush=True)
    result["batch_sweep"] = batch_sweep(data_dir, out, device, TINY_SWEEP if args.tiny else SWEEP, sweep_epochs,
                                        args.sweep_seconds)
    print(f"rendering {render_s:g} s", flush=True)
    result["render"] = render_check(out / "same_device" / MODEL_BEST, data_dir, device, render_s)
    text = report(result)
    print(text)
    if args.report:
        Path(args.report).write_text(text, encoding="utf-8")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0 if result["equivalence"]["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
