"""Rendering speed, memory and exactness: every render path against the sequential reference.

Renders ``--seconds`` (default 180) of real guitar DI (the shared clips joined and looped,
48k -> 44.1k with soxr; synthetic guitar-like audio when the shared folder is absent) through

* a hidden-20 model: the real capture neuralpi/TS9_FullD.json (a seeded random model with
  capture-like weights when absent), and
* a hidden-40 model: seeded random weights drawn with the spread of the real captures
  (``realdata.scaled_like_captures``; nobody has trained a hidden-40 capture here),

with (a) the reference, ``render_sequential`` (one nn.LSTM call over the file,
torch.set_num_threads(1)) and (b) each path of ``ampxfer_lib.model.render``: "numba" (one pass,
one core), "chunked" on one core and on every core, and "auto" (what ``render()`` does by
default). Each run is its own subprocess so its peak memory is its own: the peak resident
set above the process's size just before rendering (VmHWM reset through
/proc/self/clear_refs; ru_maxrss delta where that is not allowed) and the tracemalloc peak
(numpy allocations; PyTorch's are invisible to it). Each subprocess warms up first (2 s of
audio, which also compiles or loads the kernels), then renders the whole file once; the
paths take turns for ``--repeats`` rounds and each reports its best wall time, so load
from other processes hits all paths alike. CPU seconds (user + sys of the render) are shown
too. The ESR of each output against the reference output is computed in the parent. Should
PyTorch's one-call LSTM fail on the whole file (oneDNN "could not create a primitive" when it
cannot get the ~1 KB per sample a hidden-40 model needs), the reference is fed in 2**20-sample
segments instead, which gives the same output bit for bit, and the table says so.

Also measures the numba compile time: cold (empty cache) and cached (second process).

The last line is the headline: ``render speed-up vs sequential (hidden 20): <ratio>x``, the
ratio of the reference's time to ``render()``'s default path on the hidden-20 model.

Usage: python bench/render_speed.py [--seconds 180] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

PATHS = [  # (label, method, threads)  "all": every core this process may use; None: render()'s
    # own choice in a process left at torch's default thread count (as `ampxfer render` runs)
    ("reference: nn.LSTM, 1 call", "reference", 1),
    ("numba, one pass", "numba", 1),
    ("chunked, 1 core", "chunked", 1),
    ("chunked, all cores", "chunked", "all"),
    ("render() default", "auto", None),
]


# --------------------------------------------------------------------------- worker
def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(args) -> int:
    import resource
    import tracemalloc

    import torch

    from ampxfer_lib.model import render as R
    from ampxfer_lib.model.formats import load_model

    if args.threads == "all":
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    else:
        threads = int(args.threads) if args.threads else None
    if threads is not None:  # the default path keeps torch's own thread count, as a user's process does
        torch.set_num_threads(threads)
    x = np.load(args.audio)
    w = load_model(args.model)
    method = args.method

    note = ""

    def run(audio):
        nonlocal note
        if method == "reference":
            try:
                return R.render_sequential(w, audio), {}
            except RuntimeError as exc:
                note = f"one call failed ({exc}); fed in 2**20-sample segments"
                return R.render_sequential(w, audio, segment=1 << 20), {}
        stats = {}
        return R.render(w, audio, method=method, threads=threads, stats=stats), stats

    run(x[: 2 * 44100])  # warm-up: compiles (or loads) the kernels, sizes thread pools
    clean = _reset_peak()
    base = _rss_kb("VmRSS") if clean else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    c0, t0 = os.times(), time.perf_counter()
    y, stats = run(x)
    wall, c1 = time.perf_counter() - t0, os.times()
    peak_np = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    top = _rss_kb("VmHWM") if clean else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.out:
        np.save(args.out, y)
    print(json.dumps({"time": wall, "cpu": (c1.user - c0.user) + (c1.system - c0.system),
                      "peak_rss_mb": (top - base) / 1024, "peak_numpy_mb": peak_np / 2**20,
                      "clean_peak": clean, "stats": stats, "threads": R._n_threads(threads), "note": note}))
    return 0


# --------------------------------------------------------------------------- parent
def compile_times(env) -> dict:
    code = ("import time; t0 = time.perf_counter(); from ampxfer_lib.model import render_kernels; "
            "t1 = time.perf_counter(); from ampxfer_lib.model import render; render.compile_kernels(); "
            "t2 = time.perf_counter(); print(t1 - t0, t2 - t1)")
    with tempfile.TemporaryDirectory() as cache:
        e = dict(env, NUMBA_CACHE_DIR=cache)
        out = {}
        for label in ("cold", "cached"):
            r = subprocess.run([sys.executable, "-c", code], env=e, cwd=REPO, capture_output=True, text=True)
            if r.returncode:
                return {"error": r.stderr.strip().splitlines()[-1]}
            imp, comp = map(float, r.stdout.split())
            out[label] = (imp, comp)
    return out


def esr(y, ref) -> float:
    from ampxfer_lib.training.losses import esr_numpy

    return esr_numpy(y, ref)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="30 s of audio, 2 rounds, hidden 20 only")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--audio", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--threads", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker(a)
    if a.quick:
        a.seconds, a.repeats = 30.0, 2

    from realdata import RATE, REALDATA, guitar_di, scaled_like_captures, seeded_model

    from ampxfer_lib.model import render as R
    from ampxfer_lib.model.formats import load_model, save_model
    from ampxfer_lib.model.network import new_model
    from ampxfer_lib.model.weights import ModelConfig

    x, desc = guitar_di(a.seconds)
    print(f"audio: {desc}; {x.size} samples")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    print(f"cpu: {os.cpu_count()} logical cores, {R._n_threads(None)} usable; the reference and 1-core paths run with torch pinned to 1 thread")
    if not R.numba_available():
        print("note: numba is not importable; only the reference and 'auto' (= torch) run")

    ct = compile_times(env) if R.numba_available() else {"error": "numba missing"}
    if "error" in ct:
        print(f"numba compile: {ct['error']}")
    else:
        print("numba: import {:.2f} s; compile all kernels cold {:.2f} s, from cache {:.2f} s".format(
            ct["cold"][0], ct["cold"][1], ct["cached"][1]))

    tmp = Path(tempfile.mkdtemp(prefix="render_speed_"))
    np.save(tmp / "audio.npy", x)
    ts9 = REALDATA / "models" / "neuralpi" / "TS9_FullD.json"
    models = []
    if ts9.is_file():
        models.append(("hidden 20", "real capture neuralpi/TS9_FullD", ts9))
    else:
        print(f"note: {ts9} not found; hidden 20 is a seeded random model with capture-like weights")
        save_model(seeded_model(20, seed=20), tmp / "h20.json")
        models.append(("hidden 20", "seeded random (capture-like scale)", tmp / "h20.json"))
    if not a.quick:
        save_model(scaled_like_captures(new_model(ModelConfig(hidden_size=40), seed=40).weights(), seed=40),
                   tmp / "h40.json")
        models.append(("hidden 40", "seeded random, capture-like scale", tmp / "h40.json"))

    def load() -> str:
        try:
            return "load average %.1f %.1f %.1f" % os.getloadavg()
        except OSError:
            return "load average n/a"

    print(f"machine {load()} (other processes share these cores; paths take turns)")
    paths = [p for p in PATHS if p[1] in ("reference", "auto") or R.numba_available()]
    results = {}  # (model tag, label) -> list of worker results
    outputs = {}
    for rnd in range(a.repeats):
        for tag, what, path in models:
            for label, method, threads in paths:
                out = tmp / f"y_{tag[-2:]}_{method}_{threads}.npy"
                cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--audio", str(tmp / "audio.npy"),
                       "--model", str(path), "--method", method, "--threads", str(threads or ""),
                       "--out", str(out) if rnd == 0 else ""]
                r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
                if r.returncode:
                    print(f"  {tag} {label}: FAILED: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
                    continue
                results.setdefault((tag, label), []).append(json.loads(r.stdout.strip().splitlines()[-1]))
                if rnd == 0:
                    outputs[(tag, label)] = np.load(out)
        print(f"round {rnd + 1}/{a.repeats} done; {load()}", flush=True)

    rows, headline = [], None
    for tag, what, path in models:
        print(f"\n{tag}: {what}")
        ref_label = paths[0][0]
        if (tag, ref_label) not in results:
            print("  reference failed; no ratios")
        ref = outputs.get((tag, ref_label))
        ref_time = min(r["time"] for r in results[(tag, ref_label)]) if ref is not None else None
        for label, method, threads in paths:
            if (tag, label) not in results:
                continue
            res = results[(tag, label)]
            best = min(r["time"] for r in res)
            cpu = min(r["cpu"] for r in res)
            st, last = res[0]["stats"], res[0]
            note = last["note"]
            if st.get("method") == "chunked":
                note = (f"{st['chunks']} chunks, warm-up {st['warmup']}, {len(st['rerendered'])} re-rendered"
                        + (f" ({st['rerendered_samples']} samples)" if st["rerendered"] else ""))
            elif st.get("method"):
                note = st["method"]
            row = dict(model=tag, path=label, threads=last["threads"] if method != "reference" else 1,
                       rt=x.size / RATE / best, speedup=(ref_time / best) if ref_time else float("nan"),
                       seconds=best, cpu=cpu, rss=max(r["peak_rss_mb"] for r in res),
                       npk=max(r["peak_numpy_mb"] for r in res),
                       esr=esr(outputs[(tag, label)], ref) if ref is not None else float("nan"), note=note)
            rows.append(row)
            print(f"  {label:28s} {row['rt']:7.1f}x real time  {row['speedup']:5.2f}x  "
                  f"peak RSS +{row['rss']:.0f} MB  ESR {row['esr']:.1e}  {note}", flush=True)
            if tag == "hidden 20" and method == "auto":
                headline = row["speedup"]

    print("\n| model | path | threads | wall (s) | real time | vs reference | CPU (s) | audio s per CPU s "
          "| peak RSS (MB) | numpy peak (MB) | ESR vs reference | notes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['path']} | {r['threads']} | {r['seconds']:.2f} | {r['rt']:.1f}x | "
              f"{r['speedup']:.2f}x | {r['cpu']:.2f} | {x.size / RATE / r['cpu']:.0f} | {r['rss']:.0f} | "
              f"{r['npk']:.0f} | {r['esr']:.1e} | {r['note']} |")
    print("(wall: best of %d turns; CPU: user+sys seconds of the render, all its threads; peak RSS: "
          "resident memory above the process before rendering; numpy peak: tracemalloc, numpy only; "
          "%s; %s)" % (a.repeats, desc, load()))
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    if headline is None:
        print("render speed-up vs sequential (hidden 20): n/a")
        return 1
    print(f"render speed-up vs sequential (hidden 20): {headline:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
