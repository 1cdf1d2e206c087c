"""How good is the ranking? Real library, real DI, targets rendered through other captures.

    python bench/rank_library.py [--gt-seconds 10 --gt-epochs 2] [--probe-top 5] [--out DIR]

Library: ../shared/realdata/models/tonelibrary_h20 (29 real-gear snapshots, hidden 20).
Targets: the first 80 s of the real DI (eight clips joined, 44.1 kHz; 60 s train, 15 s
validation) played through captures that are NOT in the library (NeuralPi TS9 at knob 1.0
and 0.5, HT40 overdrive at 0.25, 0.5 and 1.0, Blues Jr at 0.5, the Blues Jr full-drive
snapshot), plus three library models as sanity checks (each must rank itself first) and one
conditioned sanity check (the library plus the conditioned HT40 model: it must rank first, at
the target's knob value).

Signals, cheapest first: the three zero-shot scores of ``ampxfer_lib.transfer.rank`` (``esr``,
``esr_level_matched``, ``esr_head_refit``), and a fine-tune probe of the top ``--probe-top``
by level-matched or by head-refit score. The ground truth is what the choice is for: every
library model is fine-tuned on the target with the same fixed short budget (``--gt-seconds``
of training audio as 0.5 s segments, ``--gt-epochs`` passes of the agam recipe: Adam 5e-3,
200-sample warm-up, an update every 1000 samples) and scored by ESR on 10 s of the
validation audio. A ranking is good when its first choice ends below the library's median
model, ideally near the best. The probe is a smaller version of the same measurement (5 s,
scored on 6 s), so its agreement with the ground truth is expected; the zero-shot scores are
the independent predictors. Also measured: the same fine-tune started from the head-refit
first choice with its least-squares dense layer (``rank --export-best --refit-head``).

Prints a Markdown report and writes all numbers to OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realdata_targets import REPO, device_data, require_realdata  # noqa: E402

DI_SECONDS = 80.0


def targets(real: Path):
    npi, lib = real / "models" / "neuralpi", real / "models" / "tonelibrary_h20"
    return [
        # (name, model, knobs, kind, same-gear library models, sanity model or None)
        ("TS9 knob 1.0", npi / "TS9.json", [1.0], "overdrive pedal", ["TS9_FullD"], None),
        ("TS9 knob 0.5", npi / "TS9.json", [0.5], "overdrive pedal", ["TS9_FullD"], None),
        ("HT40 OD knob 0.25", npi / "HT40_Overdrive.json", [0.25], "amp, overdrive", [], None),
        ("HT40 OD knob 0.5", npi / "HT40_Overdrive.json", [0.5], "amp, overdrive", [], None),
        ("HT40 OD knob 1.0", npi / "HT40_Overdrive.json", [1.0], "amp, high gain", [], None),
        ("BluesJr knob 0.5", npi / "BluesJr.json", [0.5], "amp, crunch", [], None),
        ("BluesJR_FullD", npi / "BluesJR_FullD.json", [], "amp, full drive", [], None),
        ("sanity: ProCoRat", lib / "ProCoRat.json", [], "distortion pedal", [], "ProCoRat"),
        ("sanity: MesaBoogieMk2b_Crunch", lib / "MesaBoogieMk2b_Crunch.json", [], "amp, crunch", [],
         "MesaBoogieMk2b_Crunch"),
        ("sanity: Soldano_highGain", lib / "Soldano_highGain.json", [], "amp, high gain", [], "Soldano_highGain"),
    ]


def ground_truth(lib_paths, ds, seconds: float, epochs: int):
    from ampxfer_lib.model.formats import load_model
    from ampxfer_lib.transfer.rank import finetune_probe, probe_audio

    train = probe_audio(ds, "train", seconds, int(round(seconds / 0.5)), 0.1)
    evaluate = probe_audio(ds, "val", 10.0, 10, 0.1)
    out = {}
    for path in lib_paths:
        r = finetune_probe(load_model(path), train, evaluate, epochs=epochs, segment_samples=22050)
        out[path.stem] = r["probe_esr"]
    return out


SIGNALS = ("esr", "esr_level_matched", "esr_head_refit")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "out" / "bench" / "rank_library"))
    p.add_argument("--gt-seconds", type=float, default=10.0)
    p.add_argument("--gt-epochs", type=int, default=2)
    p.add_argument("--probe-top", type=int, default=5)
    p.add_argument("--only", nargs="*", default=None, help="target names to run (default: all)")
    p.add_argument("--long-epochs", type=int, default=0,
                   help="also train the probe's choice, the zero-shot choice and the GT-median model with the "
                        "real trainer (agam, 30 s limited data) for this many epochs on --long-targets")
    p.add_argument("--long-targets", nargs="*", default=["TS9 knob 1.0", "HT40 OD knob 0.25"])
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from ampxfer_lib.data.dataset import load_dataset
    from ampxfer_lib.model.formats import load_model
    from ampxfer_lib.transfer.rank import RankConfig, finetune_probe, library_models, probe_audio, rank_library, starting_model

    real = require_realdata()
    lib = real / "models" / "tonelibrary_h20"
    lib_paths = library_models(lib)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "results.json"
    results = json.loads(cache.read_text()) if cache.exists() else {}

    def save():
        cache.write_text(json.dumps(results, indent=1))

    for name, model, knobs, kind, same, sanity in targets(real):
        if args.only and name not in args.only:
            continue
        data = device_data(real, model, knobs, val_seconds=15.0, test_seconds=5.0, seconds=DI_SECONDS)
        ds = load_dataset(data)
        key = f"{name}|v2|top{args.probe_top}"
        gt_key = f"{name}|gt{args.gt_seconds:g}x{args.gt_epochs}"
        if key not in results:
            entry = {"target": name, "model": str(model), "knobs": knobs, "kind": kind, "same_gear": same,
                     "sanity": sanity, "scores": {}, "probe": {}, "seconds": {}}
            t0 = time.perf_counter()
            ranked = rank_library(lib, ds, RankConfig(), progress=False)
            entry["seconds"]["zero_shot"] = time.perf_counter() - t0
            for e in ranked:
                entry["scores"][Path(e["model"]).stem] = {k: e[k] for k in SIGNALS + ("gain",)}
            heads = {Path(e["model"]).stem: e for e in ranked}
            if sanity is None:
                for signal in ("esr_level_matched", "esr_head_refit"):
                    t0 = time.perf_counter()
                    probed = rank_library(lib, ds, RankConfig(score=signal, finetune_top=args.probe_top),
                                          progress=False)
                    entry["seconds"][f"probe_{signal}"] = time.perf_counter() - t0
                    entry["probe"][signal] = [(Path(e["model"]).stem, e["score"]) for e in probed[:args.probe_top]]
                # does starting from the refit dense layer help the same short fine-tune?
                first = min(heads.values(), key=lambda e: e["esr_head_refit"])
                train = probe_audio(ds, "train", args.gt_seconds, int(round(args.gt_seconds / 0.5)), 0.1)
                evaluate = probe_audio(ds, "val", 10.0, 10, 0.1)
                refit = finetune_probe(starting_model(first, refit_head=True), train, evaluate,
                                       epochs=args.gt_epochs, segment_samples=22050)
                entry["refit_start"] = {"model": Path(first["model"]).stem, **refit}
            results[key] = entry
            save()
        if sanity is None and gt_key not in results:
            t0 = time.perf_counter()
            gt = ground_truth(lib_paths, ds, args.gt_seconds, args.gt_epochs)
            results[gt_key] = {"esr": gt, "seconds": time.perf_counter() - t0}
            save()
        print(f"{name}: done", flush=True)

    # the conditioned sanity check: the library plus a knob-conditioned model
    cond_key = "conditioned sanity"
    if cond_key not in results and not args.only:
        npi = real / "models" / "neuralpi"
        data = device_data(real, npi / "HT40_Overdrive.json", [0.25], val_seconds=15.0, test_seconds=5.0,
                           seconds=DI_SECONDS)
        ranked = rank_library(lib_paths + [npi / "HT40_Overdrive.json"], data, RankConfig(), progress=False)
        results[cond_key] = {"first": Path(ranked[0]["model"]).stem, "knobs": ranked[0]["knobs"],
                             "esr": ranked[0]["esr"], "second": Path(ranked[1]["model"]).stem,
                             "second_score": ranked[1]["score"]}
        save()
    if args.long_epochs:
        long_check(results, args, real, lib, out, save)
    print(report(results, args))
    return 0


def long_check(results, args, real, lib, out, save) -> None:
    """Do the short-budget choices hold over a longer fine-tune with the real trainer?"""
    from ampxfer_lib.training.callbacks import LogLines
    from ampxfer_lib.training.config import make_config
    from ampxfer_lib.training.loop import train

    for name, model, knobs, kind, same, sanity in targets(real):
        if name not in args.long_targets or sanity:
            continue
        key = f"{name}|long{args.long_epochs}"
        if key in results:
            continue
        e = results[f"{name}|v2|top{args.probe_top}"]
        gt = results[f"{name}|gt{args.gt_seconds:g}x{args.gt_epochs}"]["esr"]
        by_gt = sorted(gt, key=gt.get)
        picks = {"probe choice": e["probe"]["esr_level_matched"][0][0],
                 "zero-shot choice": min(e["scores"], key=lambda m: e["scores"][m]["esr_level_matched"]),
                 "GT-median model": by_gt[len(by_gt) // 2]}
        data = device_data(real, model, knobs, val_seconds=15.0, test_seconds=5.0, seconds=DI_SECONDS)
        rows = {}
        for label, m in picks.items():
            cfg = make_config(data, "agam", subset="limited", max_epochs=args.long_epochs,
                              init_from=str(lib / f"{m}.json"))
            s = train(cfg, out / "long" / name.replace(" ", "_") / m, [LogLines(write=lambda line: None)])
            rows[label] = {"model": m, "best_val": s["best_val_loss"], "test_esr": s["test_esr"]}
            print(f"{name} long {label} {m}: best val {s['best_val_loss']:.4f}", flush=True)
        results[key] = rows
        save()


def report(results: dict, args) -> str:
    from scipy.stats import spearmanr

    lines = [f"command: python bench/rank_library.py --gt-seconds {args.gt_seconds:g} --gt-epochs {args.gt_epochs} "
             f"--probe-top {args.probe_top}", ""]
    choices = {s: [] for s in SIGNALS}
    choices.update({f"probe_{s}": [] for s in ("esr_level_matched", "esr_head_refit")})
    rho = {s: [] for s in SIGNALS}
    lines += ["| target | kind | top 3 by esr / esr_level_matched / esr_head_refit | same-gear rank (lm / refit) | "
              "sanity rank (all three) | GT median | GT best |",
              "|---|---|---|---|---|---:|---|"]
    detail = ["", "Ground-truth ESR after the fixed fine-tune of each signal's first choice (GT rank of 29 in brackets):",
              "", "| target | " + " | ".join(choices) + " | refit-head start |",
              "|---|" + "---|" * (len(choices) + 1)]
    for key, e in results.items():
        if not key.endswith(f"|v2|top{args.probe_top}"):
            continue
        names = list(e["scores"])
        order = {s: sorted(names, key=lambda m: e["scores"][m][s]) for s in SIGNALS}
        top3 = " / ".join(", ".join(order[s][:3]) for s in SIGNALS)
        same = ", ".join(f"{m}: {order['esr_level_matched'].index(m) + 1} / {order['esr_head_refit'].index(m) + 1}"
                         for m in e["same_gear"]) or "–"
        sanity = " / ".join(str(order[s].index(e["sanity"]) + 1) for s in SIGNALS) if e["sanity"] else "–"
        gt = None if e["sanity"] else results.get(f"{e['target']}|gt{args.gt_seconds:g}x{args.gt_epochs}", {}).get("esr")
        if not gt:
            lines.append(f"| {e['target']} | {e['kind']} | {top3} | {same} | {sanity} | – | – |")
            continue
        med = statistics.median(gt.values())
        ranked_gt = sorted(gt.values())
        best = min(gt, key=gt.get)
        lines.append(f"| {e['target']} | {e['kind']} | {top3} | {same} | {sanity} | {med:.4f} | "
                     f"{gt[best]:.4f} ({best}) |")
        firsts = {s: order[s][0] for s in SIGNALS}
        firsts.update({f"probe_{s}": e["probe"][s][0][0] for s in e["probe"]})
        cells = []
        for label, m in firsts.items():
            choices[label].append((gt[m], med, ranked_gt.index(gt[m]) + 1))
            cells.append(f"{gt[m]:.4f} [{ranked_gt.index(gt[m]) + 1}]")
        for s in SIGNALS:
            rho[s].append(spearmanr([e["scores"][m][s] for m in names], [gt[m] for m in names]).correlation)
        r = e["refit_start"]
        detail.append(f"| {e['target']} | " + " | ".join(cells)
                      + f" | {r['model']}: {r['probe_esr']:.4f} (plain start {gt[r['model']]:.4f}) |")
    n = len(choices["esr"])
    lines += detail
    if n:
        lines += ["", f"Over {n} targets (GT = ESR on 10 s of validation audio after {args.gt_epochs} epochs on "
                      f"{args.gt_seconds:g} s, the library median is the bar):", "",
                  "| signal | first choice below median | mean GT rank of first choice | mean GT ESR / median |",
                  "|---|---:|---:|---:|"]
        for label, rows in choices.items():
            lines.append(f"| {label} | {sum(g < m for g, m, _ in rows)}/{n} | "
                         f"{statistics.fmean(r for _, _, r in rows):.1f} | "
                         f"{statistics.fmean(g / m for g, m, _ in rows):.3f} |")
        lines += ["", "Spearman correlation of each zero-shot score with GT over the 29 models, mean over targets: "
                  + ", ".join(f"{s} {statistics.fmean(v):.2f}" for s, v in rho.items())]
    times = [e["seconds"] for k, e in results.items() if k.endswith(f"|v2|top{args.probe_top}") and not e["sanity"]]
    if times:
        lines.append("Mean ranking time per target (s, one core shared with other jobs): " + ", ".join(
            f"{k} {statistics.fmean(t[k] for t in times):.1f}" for k in times[0]))
    long = {k: v for k, v in results.items() if f"|long{args.long_epochs}" in k} if args.long_epochs else {}
    if long:
        lines += ["", f"Longer check: the real trainer (agam, 30 s limited data, {args.long_epochs} epochs) from each "
                      "choice; best validation loss (test ESR):", "",
                  "| target | probe choice | zero-shot choice | GT-median model |", "|---|---|---|---|"]
        for k, rows in long.items():
            lines.append(f"| {k.split('|')[0]} | " + " | ".join(
                f"{r['model']}: {r['best_val']:.4f} ({r['test_esr']:.4f})" for r in rows.values()) + " |")
    c = results.get("conditioned sanity")
    if c:
        lines.append(f"Conditioned sanity (library + NeuralPi HT40_Overdrive, target HT40 at 0.25): first "
                     f"{c['first']} at knobs {c['knobs']} (ESR {c['esr']:.2e}); second {c['second']} "
                     f"(score {c['second_score']:.4f})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
