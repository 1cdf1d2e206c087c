"""Training speed: the AGAM recipe as AGAM's code runs it, against ampxfer's trainer.

Usage::

    python bench/train_speed.py [--data DIR] [--quick] [--epochs N] [--seed S]

Three runs on the same prepared data, one after another, each in a fresh child process
at one thread (so each has its own peak memory, and no run warms caches for another):

(a) ``reference``: a straightforward implementation of the AGAM recipe written here, the
    way AGAM's training code does it (see REFERENCE_NOTES below);
(b) ``agam``: ampxfer's trainer with the ``agam`` preset (the same recipe);
(c) the library's default preset, trained from scratch.

Then a fourth child trains the default preset on 4 minutes of audio and reports its peak
resident memory. The table gives, per run, seconds per epoch (training only), seconds of
audio trained per second, peak RSS and the validation loss at every validation; the
summary gives the throughput ratio agam / reference (same recipe, so the implementation
alone) and the time-to-quality of the default preset: the reference's time for N epochs
(validations included) divided by the time the default preset needs (validations
included) until its validation loss first reaches the reference's loss after N epochs.

Times are process CPU seconds (all threads); on an otherwise idle machine a one-thread
run's CPU time is its wall time, and on a shared one CPU time is what stays comparable, so
the ratios are computed from it. Wall times are printed too, with the load average.

Data: ``--data DIR`` (a prepared data folder), else the library's sample data when
``ampxfer_lib.sample_data.files`` exists, else a stand-in built once under out/bench/: the real
DI clips of ../shared/realdata/di (48 kHz, resampled to 44.1 kHz and joined; set
AMPXFER_REALDATA to find them elsewhere) rendered through the real Ibanez TS9 capture
(drive full) in ../shared/realdata/models, prepared with 15 s of validation and 10 s of
test audio (148 s of training audio). (A high-gain capture such as the Boss MT-2 makes a
poor benchmark: every recipe sits on a plateau for a random number of epochs.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "out" / "bench"
REALDATA = Path(os.environ.get("AMPXFER_REALDATA", REPO.parent / "shared" / "realdata"))
STANDIN_MODEL = "neuralpi/TS9_FullD.json"

REFERENCE_NOTES = [
    "seq-first nn.LSTM(1, 20) -> nn.Linear(20, 1) + input skip, stateful (AGAM's SimpleRNN)",
    "data held as (time, segments, 1); each batch gathered by fancy indexing (a copy), as AGAM does",
    "one global torch.randperm shuffle per epoch, batches of 50 segments of 0.5 s",
    "warm-up: the first 200 samples run WITH autograd, then zero_grad (AGAM: its graph stays "
    "attached to the first window's state, so the first update back-propagates into the warm-up)",
    "per 1000-sample window: forward, loss, backward, Adam step, hidden.clone().detach(), zero_grad",
    "batch_loss += loss as tensors (graph-holding), .item() once per epoch",
    "loss: separate ESR and DC modules (target energy computed twice), 0.75 ESR + 0.25 DC, no pre-emphasis",
    "Adam(lr 5e-3, weight_decay 1e-4); ReduceLROnPlateau(0.5, patience 5) on the validation loss",
    "validation every 2 epochs over the whole validation audio in chunks of 100000 samples, no_grad",
    "same initial weights as ampxfer (torch.manual_seed(seed), LSTM then Linear)",
    "not reproduced: AGAM's validation leaves the last sample of the output unwritten (torch.empty), "
    "a bug that can make its loss garbage",
]


# --------------------------------------------------------------------------- data

def standin_data(root: Path, model_file: str = STANDIN_MODEL, log=print) -> Path:
    """Build (once) the real-DI-through-a-real-capture stand-in data folder."""
    import numpy as np
    import torch

    from ampxfer_lib.data.audio import read_audio, resample, write_audio
    from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare
    from ampxfer_lib.model.formats import load_model
    from ampxfer_lib.model.network import AmpLSTM

    data = root / "data"
    if (data / "manifest.json").exists():
        return data
    if not (REALDATA / "di").is_dir():
        raise SystemExit(f"no --data given and {REALDATA} is absent: pass --data DIR (a prepared data folder) "
                         "or set AMPXFER_REALDATA to the real-data folder")
    log(f"building the stand-in data in {root} (once)")
    clips = [read_audio(p) for p in sorted((REALDATA / "di").glob("*.flac"))]
    x = np.concatenate([resample(c.samples, c.sample_rate, 44100) for c in clips]).astype(np.float32)
    model = AmpLSTM.from_weights(load_model(REALDATA / "models" / model_file))
    torch.set_num_threads(1)
    y = model.infer(torch.from_numpy(x)[None, :, None])[0, :, 0].numpy()
    rec = root / "recordings"
    rec.mkdir(parents=True, exist_ok=True)
    write_audio(rec / "di.wav", x, 44100)
    write_audio(rec / "device.wav", y, 44100)
    # The capture has no latency of its own; "off" keeps the cross-correlation of a
    # high-gain pedal from inventing one.
    prepare([CaptureSpec((str(rec / "di.wav"),), (str(rec / "device.wav"),))], data,
            PrepareConfig(val_seconds=15.0, test_seconds=10.0, align="off"), log=log)
    return data


def memory_data(root: Path, base: Path, seconds: float = 240.0) -> Path:
    """A data folder with ``seconds`` of training audio: the base data's audio, repeated."""
    import numpy as np

    from ampxfer_lib.data.audio import write_audio
    from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare

    data = root / f"data_{int(seconds)}s"
    if (data / "manifest.json").exists():
        return data
    from ampxfer_lib.data.dataset import load_dataset

    base_data = load_dataset(base)
    rate = base_data.sample_rate
    sections = [sec for split in ("train", "val", "test") for sec in base_data.split(split)]
    x = np.concatenate([sec.input[:, 0] for sec in sections])
    y = np.concatenate([sec.target for sec in sections])
    reps = math.ceil((seconds + 30.0) * rate / len(x))
    rec = root / "recordings"
    rec.mkdir(parents=True, exist_ok=True)
    write_audio(rec / "mem_di.wav", np.tile(x, reps), rate)
    write_audio(rec / "mem_out.wav", np.tile(y, reps), rate)
    prepare([CaptureSpec((str(rec / "mem_di.wav"),), (str(rec / "mem_out.wav"),))], data,
            PrepareConfig(val_seconds=15.0, test_seconds=10.0, limited_seconds=seconds, align="off"))
    return data


def find_data(arg) -> tuple:
    if arg == "standin":  # the data of the first recorded run (RESULTS_train.md)
        path = standin_data(OUT / "train_standin_ts9")
        return path, f"data: stand-in: the real DI clips through the real capture {STANDIN_MODEL}, in {path}"
    if arg:
        return Path(arg), f"data: {arg}"
    from ampxfer_lib.notebooks.suite import prepare_sample_devices

    # The shipped sample DI through the TS9-style device (rendered on first use), prepared
    # with the defaults: 150 s of training audio, 40 s of validation.
    prepare_sample_devices(OUT / "train_sample", devices=["ts9"], log=lambda m: None)
    path = OUT / "train_sample" / "data" / "ts9"
    return path, f"data: the sample data's TS9-style device, prepared in {path}"


# --------------------------------------------------------------------------- reference

def reference_run(data_dir: str, epochs: int, seed: int) -> dict:
    """The AGAM recipe as AGAM's code runs it (see REFERENCE_NOTES)."""
    import torch
    from torch import nn

    from ampxfer_lib.data.dataset import load_dataset, segment, stack_sequences

    torch.set_num_threads(1)
    data = load_dataset(data_dir)
    seg_len = int(round(0.5 * data.sample_rate))
    x, y = segment(data.split("train"), seg_len)
    train_in = torch.from_numpy(x).transpose(0, 1).contiguous()  # (time, segments, 1)
    train_tg = torch.from_numpy(y).transpose(0, 1).contiguous()
    vx, vy = stack_sequences(data.split("val"))
    val_in = torch.from_numpy(vx).transpose(0, 1).contiguous()
    val_tg = torch.from_numpy(vy).transpose(0, 1).contiguous()

    class SimpleRNN(nn.Module):
        def __init__(self, hidden=20):
            super().__init__()
            self.rec = nn.LSTM(1, hidden)
            self.lin = nn.Linear(hidden, 1)
            self.hidden = None

        def forward(self, x):
            res = x[:, :, 0:1]
            out, self.hidden = self.rec(x, self.hidden)
            return self.lin(out) + res

        def detach_hidden(self):
            self.hidden = tuple(h.clone().detach() for h in self.hidden)

        def reset_hidden(self):
            self.hidden = None

    class ESRLoss(nn.Module):
        def forward(self, output, target):
            err = torch.mean(torch.pow(target - output, 2))
            return err / (torch.mean(torch.pow(target, 2)) + 1e-5)

    class DCLoss(nn.Module):
        def forward(self, output, target):
            err = torch.mean(torch.pow(torch.mean(target, 0) - torch.mean(output, 0), 2))
            return err / (torch.mean(torch.pow(target, 2)) + 1e-5)

    esr_loss, dc_loss = ESRLoss(), DCLoss()

    def loss_fn(output, target):
        return 0.75 * esr_loss(output, target) + 0.25 * dc_loss(output, target)

    torch.manual_seed(seed)
    net = SimpleRNN()
    opt = torch.optim.Adam(net.parameters(), lr=5e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, "min", factor=0.5, patience=5)
    bs, init_len, up_fr = 50, 200, 1000

    def train_epoch():
        shuffle = torch.randperm(train_in.shape[1])
        ep_loss = 0
        for batch_i in range(math.ceil(shuffle.shape[0] / bs)):
            input_batch = train_in[:, shuffle[batch_i * bs:(batch_i + 1) * bs], :]
            target_batch = train_tg[:, shuffle[batch_i * bs:(batch_i + 1) * bs], :]
            net(input_batch[0:init_len, :, :])
            net.zero_grad()
            start_i = init_len
            batch_loss = 0
            for k in range(math.ceil((input_batch.shape[0] - init_len) / up_fr)):
                output = net(input_batch[start_i:start_i + up_fr, :, :])
                loss = loss_fn(output, target_batch[start_i:start_i + up_fr, :, :])
                loss.backward()
                opt.step()
                net.detach_hidden()
                net.zero_grad()
                start_i += up_fr
                batch_loss += loss
            ep_loss += batch_loss / (k + 1)
            net.reset_hidden()
        return ep_loss / (batch_i + 1)

    def validate(chunk=100_000):
        with torch.no_grad():
            output = torch.empty_like(val_tg)
            for i in range(0, val_in.shape[0], chunk):
                output[i:i + chunk] = net(val_in[i:i + chunk])
                net.detach_hidden()
            net.reset_hidden()
            return loss_fn(output, val_tg).item()

    records = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for epoch in range(1, epochs + 1):
        c, w = time.process_time(), time.perf_counter()
        train_loss = train_epoch().item()
        train_cpu, train_wall = time.process_time() - c, time.perf_counter() - w
        val = None
        if epoch % 2 == 0:
            val = validate()
            sched.step(val)
        records.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val,
                        "train_cpu": train_cpu, "train_wall": train_wall,
                        "cpu": time.process_time() - cpu0, "wall": time.perf_counter() - wall0})
    return {"name": "reference", "records": records, "segments": int(train_in.shape[1]),
            "train_audio_s": train_in.shape[0] * train_in.shape[1] / data.sample_rate}


# --------------------------------------------------------------------------- library

def library_run(data_dir: str, preset: str, epochs: int, seed: int, out_dir: str, subset: str = "full",
                overrides: dict = None) -> dict:
    """ampxfer's trainer with a preset; times taken by a callback (training and validation)."""
    import torch

    from ampxfer_lib.model import cpu_lstm as lstm_cpu
    from ampxfer_lib.training.callbacks import Callback
    from ampxfer_lib.training.config import make_config
    from ampxfer_lib.training.loop import train

    torch.set_num_threads(1)
    c0 = time.process_time()
    lstm_cpu.warm_up()  # loads the compiled kernels (compiles them on the very first run)
    warm = time.process_time() - c0

    class Clock(Callback):
        def __init__(self):
            self.records = []
            self.batch_cpu = self.batch_wall = None

        def on_start(self, run):
            self.n_segments, self.train_audio_s = run.n_segments, run.train_seconds_audio
            self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
            self.last_cpu, self.last_wall = self.cpu0, self.wall0

        def on_batch(self, run, batch, n_batches):
            if batch == n_batches:
                self.batch_cpu, self.batch_wall = time.process_time(), time.perf_counter()

        def on_epoch(self, run, record):
            cpu, wall = time.process_time(), time.perf_counter()
            self.records.append({"epoch": record["epoch"], "train_loss": record["train_loss"],
                                 "val_loss": record["val_loss"],
                                 "train_cpu": self.batch_cpu - self.last_cpu,
                                 "train_wall": self.batch_wall - self.last_wall,
                                 "cpu": cpu - self.cpu0, "wall": wall - self.wall0})
            self.last_cpu, self.last_wall = cpu, wall

    clock = Clock()
    settings = dict(seed=seed, threads=1, device="cpu", subset=subset, max_epochs=epochs)
    settings.update(overrides or {})
    cfg = make_config(data_dir, preset, **settings)
    train(cfg, out_dir, callbacks=[clock], overwrite=True)
    return {"name": preset, "records": clock.records, "segments": clock.n_segments,
            "train_audio_s": clock.train_audio_s, "kernel_load_cpu": warm, "config": cfg.to_dict()}


# --------------------------------------------------------------------------- children

def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, because ru_maxrss survives exec on
    Linux and would report the parent's peak for a child."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024.0 if sys.platform != "darwin" else 1024.0 ** 2)


def child(args) -> None:
    if args.child == "reference":
        result = reference_run(args.data, args.epochs, args.seed)
    else:
        overrides = json.loads(args.overrides) if args.overrides else None
        result = library_run(args.data, args.child, args.epochs, args.seed, args.run_dir, args.subset, overrides)
    result["peak_rss_mb"] = peak_rss_mb()
    Path(args.json).write_text(json.dumps(result))


def spawn(kind: str, data: Path, epochs: int, seed: int, tag: str, subset: str = "full",
          overrides: dict = None) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    result_path = OUT / f"train_speed_{tag}.json"
    cmd = [sys.executable, __file__, "--child", kind, "--data", str(data), "--epochs", str(epochs),
           "--seed", str(seed), "--json", str(result_path), "--run-dir", str(OUT / f"run_{tag}"),
           "--subset", subset]
    if overrides:
        cmd += ["--overrides", json.dumps(overrides)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(cmd, check=True, env=env)
    return json.loads(result_path.read_text())


# --------------------------------------------------------------------------- report

def validations(run: dict) -> list:
    return [r for r in run["records"] if r["val_loss"] is not None]


def per_epoch(run: dict, key: str) -> float:
    return sum(r[key] for r in run["records"]) / len(run["records"])


def time_to(run: dict, level: float, key: str):
    for r in validations(run):
        if r["val_loss"] <= level:
            return r[key], r["epoch"]
    return None, None


def report(runs: list, epochs: int, memory: dict, notes: list) -> str:
    ref = runs[0]
    lines = []
    lines += notes
    lines.append("")
    head = f"{'run':<12}{'s/epoch cpu':>12}{'s/epoch wall':>13}{'audio s/s':>10}{'peak RSS MB':>12}  validation loss (epoch: loss)"
    lines.append(head)
    lines.append("-" * len(head))
    for run in runs:
        sec = per_epoch(run, "train_cpu")
        vals = "  ".join(f"{r['epoch']}: {r['val_loss']:.5f}" for r in validations(run))
        lines.append(f"{run['name']:<12}{sec:>12.2f}{per_epoch(run, 'train_wall'):>13.2f}"
                     f"{run['train_audio_s'] / sec:>10.1f}{run['peak_rss_mb']:>12.0f}  {vals}")
    lines.append("")
    ref_end = ref["records"][-1]
    ref_val = validations(ref)[-1]["val_loss"]
    lines.append(f"reference after {epochs} epochs: val loss {ref_val:.5f}, {ref_end['cpu']:.1f} s cpu "
                 f"({ref_end['wall']:.1f} s wall), validations included")
    agam = runs[1]
    thr = per_epoch(ref, "train_cpu") / per_epoch(agam, "train_cpu")
    thr_wall = per_epoch(ref, "train_wall") / per_epoch(agam, "train_wall")
    agam_val = validations(agam)[-1]["val_loss"]
    lines.append(f"agam preset: {thr:.2f}x the reference's training throughput (cpu; wall {thr_wall:.2f}x), "
                 f"val loss after {epochs} epochs {agam_val:.5f}")
    default = runs[2]
    d_val = validations(default)[-1]["val_loss"]
    t_cpu, ep = time_to(default, ref_val, "cpu")
    t_wall, _ = time_to(default, ref_val, "wall")
    ttq = ttq_wall = float("nan")
    if t_cpu is not None:
        ttq, ttq_wall = ref_end["cpu"] / t_cpu, ref_end["wall"] / t_wall
        lines.append(f"{default['name']} preset: reaches the reference's epoch-{epochs} loss at epoch {ep}, "
                     f"{t_cpu:.1f} s cpu ({t_wall:.1f} s wall); val loss after {epochs} epochs {d_val:.5f} "
                     f"({'no worse than' if d_val <= ref_val else 'WORSE than'} the reference's {ref_val:.5f})")
    else:
        lines.append(f"{default['name']} preset: did NOT reach the reference's epoch-{epochs} loss "
                     f"{ref_val:.5f} within {epochs} epochs (best {min(r['val_loss'] for r in validations(default)):.5f})")
    if memory:
        lines.append(f"memory: {memory['train_audio_s']:.0f} s of training audio with the {memory['name']} preset: "
                     f"peak RSS {memory['peak_rss_mb']:.0f} MB (target < 2048 MB)")
    lines.append(f"load average during the runs: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores")
    lines.append(f"summary: agam throughput {thr:.2f}x, val after {epochs} epochs {d_val:.5f} vs "
                 f"{ref_val:.5f}, wall time-to-quality {ttq_wall:.2f}x, time-to-quality: {ttq:.2f}x")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="a prepared data folder, or 'standin' (real DI through a real TS9 capture; "
                                  "needs ../shared/realdata); default: the sample data's TS9-style device")
    p.add_argument("--quick", action="store_true", help="a short smoke run: 2 epochs, no memory run")
    p.add_argument("--epochs", type=int, default=None, help="epoch budget N (default 10; --quick 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--subset", default="full", help=argparse.SUPPRESS)
    p.add_argument("--overrides", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    epochs = args.epochs or (2 if args.quick else 10)
    data, note = find_data(args.data)
    from ampxfer_lib.training.config import DEFAULT_PRESET

    notes = [f"train_speed: {note}", "reference = AGAM's training code as written, reproducing:"]
    notes += [f"  - {n}" for n in REFERENCE_NOTES]
    print("\n".join(notes), flush=True)
    t0 = time.perf_counter()
    runs = []
    for kind in ("reference", "agam", DEFAULT_PRESET):
        print(f"running {kind} for {epochs} epochs ...", flush=True)
        runs.append(spawn(kind, data, epochs, args.seed, kind))
    memory = None
    if not (args.quick or args.skip_memory):
        print("running the 4-minute memory check ...", flush=True)
        import hashlib

        key = hashlib.sha256(str(Path(data).resolve()).encode()).hexdigest()[:10]
        mem_data = memory_data(OUT / f"train_memory_{key}", data)
        memory = spawn(DEFAULT_PRESET, mem_data, 1, args.seed, "memory", subset="limited")
    text = report(runs, epochs, memory, [f"total bench time {time.perf_counter() - t0:.0f} s wall"])
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
