"""The real-gear benchmark: does a recipe capture real gear well, fast, and from 30 seconds?

    python bench/real_gear.py [--realdata DIR] [--out out/real_gear] [--recipe NAME ...]
                              [--devices a,b] [--runs scratch_full,quick] [--seeds 0 1] [--jobs 2]
                              [--max-epochs N] [--agam-max-epochs 500] [--dry-run]
                              [--library DIR]   (quick/transfer_full start from DIR's pick)
    python bench/real_gear.py --starts-table [--library DIR] [--devices a,b]
    python bench/real_gear.py --report [--figures] [--results bench/RESULTS_real_gear.md]

Devices are real-gear captures (``DEVICES`` below: clean, crunch and high-gain amps,
overdrive, distortion, fuzz, two knob-conditioned NeuralPi captures at a knob value each),
each played over the real DI of ``REALDATA/di``: the eight clips joined in name order with
0.25 s of silence between them, resampled to 44.1 kHz (175.2 s). Each device's data folder
holds 30 s of validation and 20 s of test audio at the end; ``full`` trains on the rest
(125.2 s, 250 segments of 0.5 s), ``limited`` on its first 30 s; the validation audio is the
same for both. Per device and seed, four runs, each its own process on one thread:

* ``scratch_full``  the recipe from a random start on full data, until it stops by itself;
* ``agam_full``     the ``agam`` preset (the article's recipe) on full data until early
                    stopping, capped at ``--agam-max-epochs``: the reference, shared by all recipes;
* ``quick``         the recipe on the limited 30 s from the start that ``rank_library`` picks
                    from the capture library without the device (leave-one-out);
* ``transfer_full`` the recipe on full data from the same start;
* ``scratch_limited`` (only when asked with ``--runs``) the recipe from a random start on the
                    same limited 30 s and validation audio as ``quick``: what the start buys.

``--library PATH`` makes ``quick`` and ``transfer_full`` start from what ``rank_library`` picks
from that folder (e.g. the shipped starting models, ``ampxfer_lib/starting_models``) instead
of the leave-one-out real library; those runs get their own folders and are labelled
``quick[LABEL]`` (LABEL: ``shipped`` for the shipped models, else the folder's name).
``--starts-table`` prints, from what is on disk, scratch_limited against quick[LABEL] per
device (test ESR, CPU and wall seconds, the pick and the ratio) as Markdown.

Every run records per epoch the CPU seconds of training (``time.process_time`` of its process,
setup and the epoch-0 validation excluded) and the plain validation ESR, so the report can
say how long each run took to reach ESR 0.10/0.05/0.02/0.01 and compare runs on one clock.
The ranking's CPU time is measured the same way and counts towards the quick capture.

Everything is cached and resumable under ``--out``: the rendered audio and prepared data are
reused, a finished run is skipped, an interrupted one is resumed by the trainer (Ctrl-C
stops the workers cleanly; run the same command again). ``--report`` and ``--figures`` only
read what is on disk and never train: they rewrite the generated part of
``bench/RESULTS_real_gear.md`` (between its markers) and the PNGs of
``bench/figures/real_gear/``. Recipes are named entries of ``RECIPES``; runs of different
recipes go to different folders, so ``--recipe default --recipe candidate`` compares them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))  # this checkout's ampxfer_lib, also in the worker processes

# --- every library name the harness uses, in one place (the layout may still move) ---------
from ampxfer_lib.data.audio import read_audio, resample, write_audio  # noqa: E402
from ampxfer_lib.capture.record import capture_splits  # noqa: E402
from ampxfer_lib.data.dataset import SPREAD_PIECE_SECONDS, Dataset, spread_spans  # noqa: E402
from ampxfer_lib.data.prepare import CaptureSpec, PrepareConfig, prepare  # noqa: E402
from ampxfer_lib.fileio import atomic_write_json, atomic_write_text, sha256_file  # noqa: E402
from ampxfer_lib.interrupts import stop_on_signals  # noqa: E402
from ampxfer_lib.library.index import library_model_paths  # noqa: E402
from ampxfer_lib.model.formats import load_model, save_model  # noqa: E402
from ampxfer_lib.model.render import render  # noqa: E402
from ampxfer_lib.training.callbacks import Callback, LogLines
from ampxfer_lib.training.config import TrainConfig, make_config
from ampxfer_lib.training.loop import train  # noqa: E402
from ampxfer_lib.model.weights import fold_knobs  # noqa: E402
from ampxfer_lib.transfer.rank import RankConfig, rank_library, starting_model  # noqa: E402
# ---------------------------------------------------------------------------------------------

import real_gear_report as rep  # noqa: E402

RATE = 44100
GAP_SECONDS = 0.25
VAL_SECONDS = 30.0
TEST_SECONDS = 20.0
LIMITED_SECONDS = 30.0
DEFAULT_OUT = REPO / "out" / "real_gear"
DEFAULT_RESULTS = BENCH / "RESULTS_real_gear.md"
FIGURES = BENCH / "figures" / "real_gear"


@dataclass(frozen=True)
class Device:
    """A capture used as a device: ``model`` relative to ``REALDATA/models``, knobs folded."""

    name: str
    model: str
    knobs: Tuple[float, ...]
    category: str
    why: str


#: Chosen for spread (category, level, how far from linear, whether the library keeps a
#: capture of the same gear) from the levels and linearity measured over the real DI
#: (bench/RESULTS_real_gear.md, "Devices"). Order = the order of the report.
DEVICES: Tuple[Device, ...] = (
    Device("princeton_clean", "tonelibrary_h20/FenderPrinceton_clean.json", (), "clean amp",
           "quietest capture (-23 dBFS RMS), mostly linear; the library keeps the same amp at high level"),
    Device("mk2b_crunch", "tonelibrary_h20/MesaBoogieMk2b_Crunch.json", (), "crunch amp",
           "a crunch amp whose clean and high-gain channels stay in the library"),
    Device("soldano_hg", "tonelibrary_h20/Soldano_highGain.json", (), "high-gain amp",
           "hardest clipping (peaks +6 dBFS, no linear part); the library keeps its crunch channel"),
    Device("tumnus", "tonelibrary_h20/WamplerTumnus_highGain.json", (), "overdrive",
           "a Klon-style overdrive with no capture of the same pedal in the library"),
    Device("ts9", "neuralpi/TS9_FullD.json", (), "overdrive",
           "the article's pedal; its identical Tone Library copy is left out too, the conditioned "
           "TS9 stays (another capture of the same pedal: the easy, realistic case)"),
    Device("mt2", "tonelibrary_h20/BossMetalZoneMt2_highGain.json", (), "distortion",
           "the issue's example (4.4x worse from 30 s); no other MT-2 in the library"),
    Device("rat", "tonelibrary_h20/ProCoRat.json", (), "distortion",
           "the longest memory of the pedals (its state needs ~15000 samples to forget a start)"),
    Device("bigmuff", "tonelibrary_h20/LittleBigMuff.json", (), "fuzz",
           "fuzz, with the largest output offset (dense bias +0.26)"),
    Device("ht40_d025", "neuralpi/HT40_Overdrive.json", (0.25,), "conditioned amp (drive 0.25)",
           "the article's amp target; no other HT40 capture in the library"),
    Device("bluesjr_d075", "neuralpi/BluesJr.json", (0.75,), "conditioned amp (drive 0.75)",
           "a second conditioned capture at another knob value; BluesJR_FullD stays (another capture)"),
)

#: Named recipes. ``preset`` (None: the library's default) and ``train`` are passed to
#: make_config for the recipe's runs; ``transfer`` adds to them for quick and transfer_full,
#: ``quick`` for quick alone. ``start``: "model" (the picked library model as it is) or
#: "refit_head" (its dense layer refitted by least squares to the target, matching level and
#: polarity). ``rank``: RankConfig overrides (the ranking is cached per distinct setting).
#: ``scratch_of``: another recipe whose scratch_full this one shares (same preset and
#: ``train``: only the start or the transfer settings differ), or "reference" for the agam
#: reference (a recipe on the plain agam preset). The agam reference does not depend on the
#: recipe. Add variants below; give a changed definition a new name (a run folder refuses a
#: different definition under the old one).
#: The default's fine-tune settings that later sessions changed, as the lever recipes measured
#: against the older defaults pin them (so each definition still names its runs): until the
#: sixth session the preset's weight decay, until the seventh a fixed update window.
FIFTH_FINETUNE = {"weight_decay": 1e-4, "tbptt_grow": False}
SIXTH_FINETUNE = {"tbptt_grow": False}
RECIPES: Dict[str, dict] = {
    "default": {
        "about": "the library's defaults as shipped: default preset, the picked start as it is (since the fourth "
                 "session a fine-tune on more than a minute of audio starts at 1e-2; since the sixth every "
                 "fine-tune runs without weight decay, so quick is default_wd0's computation; since the seventh "
                 "a fine-tune on more than a minute grows its update window as its rate falls, so "
                 "transfer_full is default_ftgrow's, before default_wd0's)",
        "preset": None, "train": {}, "transfer": {}, "quick": {}, "start": "model", "rank": {},
    },
    "default_wd4": {
        "about": "the fifth session's default: fine-tuned with the preset's weight decay, 1e-4",
        "preset": None, "train": {}, "transfer": {**FIFTH_FINETUNE}, "quick": {}, "start": "model",
        "rank": {}, "scratch_of": "default",
    },
    "default_refit": {
        "about": "the defaults, but the start's dense layer refitted to the target (level and polarity matched)",
        "preset": None, "train": {}, "transfer": {**FIFTH_FINETUNE}, "quick": {}, "start": "refit_head", "rank": {},
        "scratch_of": "default",
    },
    "default_l2sp3": {
        "about": "the defaults, fine-tuning pulled towards the start by L2-SP alpha 1e-3 (quick overfits 30 s)",
        "preset": None, "train": {}, "transfer": {**FIFTH_FINETUNE, "l2_sp": 1e-3},
        "quick": {}, "start": "model", "rank": {},
        "scratch_of": "default",
    },
    "default_l2sp4": {
        "about": "the defaults, fine-tuning pulled towards the start by L2-SP alpha 1e-4",
        "preset": None, "train": {}, "transfer": {**FIFTH_FINETUNE, "l2_sp": 1e-4},
        "quick": {}, "start": "model", "rank": {},
        "scratch_of": "default",
    },
    "default_spread": {
        "about": "the defaults, but the 30 s of quick and scratch_limited are six 5 s pieces spread over the "
                 "training audio (what a guitarist who plays varied material for 30 s records), ranked on them",
        "preset": None, "train": {}, "transfer": {**FIFTH_FINETUNE}, "quick": {}, "start": "model", "rank": {},
        "scratch_of": "default", "limited": "spread",
    },
    "default_selfval": {
        "about": "the defaults on a 30 s recording that must validate itself: quick and scratch_limited train "
                 "on its first 21 s and validate on the next 6 s (ampxfer capture's split), ranked on them",
        "preset": None, "train": {}, "transfer": {**FIFTH_FINETUNE}, "quick": {}, "start": "model", "rank": {},
        "scratch_of": "default", "limited": "selfval",
    },
    "default_spread_selfval": {
        "about": "the defaults on a varied 30 s recording that must validate itself: default_spread's six pieces "
                 "back to back, split like default_selfval (first 21 s train, next 6 s validate)",
        "preset": None, "train": {}, "transfer": {**FIFTH_FINETUNE}, "quick": {}, "start": "model", "rank": {},
        "scratch_of": "default", "limited": "spread_selfval",
    },
    "default_freeze": {
        "about": "the defaults, the start's LSTM frozen for the first 20 epochs of a fine-tune (head first)",
        "preset": None, "train": {}, "transfer": {**FIFTH_FINETUNE, "freeze_lstm_epochs": 20},
        "quick": {}, "start": "model",
        "rank": {}, "scratch_of": "default",
    },
    "default_spread_freeze": {
        "about": "default_spread with default_freeze's fine-tune (LSTM frozen for its first 20 epochs)",
        "preset": None, "train": {}, "transfer": {**FIFTH_FINETUNE, "freeze_lstm_epochs": 20},
        "quick": {}, "start": "model",
        "rank": {}, "scratch_of": "default", "limited": "spread",
    },
    "default_ft2": {
        "about": "the defaults, fine-tuned at 2e-3 instead of 5e-3 (a lower, longer fine-tune)",
        "preset": None, "train": {}, "transfer": {**FIFTH_FINETUNE, "finetune_lr": 2e-3}, "quick": {}, "start": "model",
        "rank": {}, "scratch_of": "default",
    },
    "default_ft5": {
        "about": "the third session's default: every fine-tune at 5e-3, also on 125 s (the default now starts a "
                 "fine-tune on more than a minute of audio at 1e-2)",
        "preset": None, "train": {}, "transfer": {**FIFTH_FINETUNE, "finetune_lr": 5e-3}, "quick": {}, "start": "model",
        "rank": {}, "scratch_of": "default",
    },
    "default_ft10": {
        "about": "the defaults, fine-tuned at scratch's 1e-2 instead of 5e-3 (can a full-data fine-tune leave "
                 "the start's basin?)",
        "preset": None, "train": {}, "transfer": {**FIFTH_FINETUNE, "finetune_lr": 1e-2}, "quick": {}, "start": "model",
        "rank": {}, "scratch_of": "default",
    },
    "default_shrink5": {
        "about": "the defaults, the start shrunk and perturbed before its level is matched (Ash & Adams 2020): "
                 "half the start plus half a fresh init (can a full-data fine-tune leave the start's basin?)",
        "preset": None, "train": {}, "transfer": {**FIFTH_FINETUNE, "shrink_start": 0.5}, "quick": {}, "start": "model",
        "rank": {}, "scratch_of": "default",
    },
    "default_shrink8": {
        "about": "default_shrink5 with 0.8 of the start kept",
        "preset": None, "train": {}, "transfer": {**FIFTH_FINETUNE, "shrink_start": 0.8}, "quick": {}, "start": "model",
        "rank": {}, "scratch_of": "default",
    },
    "default_wd0": {
        "about": "the defaults, fine-tuned without weight decay (the preset's 1e-4, coupled into Adam as in AGAM, "
                 "pulls a start's weights towards zero, not towards the start)",
        "preset": None, "train": {}, "transfer": {**SIXTH_FINETUNE, "weight_decay": 0.0}, "quick": {}, "start": "model",
        "rank": {}, "scratch_of": "default",
    },
    "default_spread_wd0": {
        "about": "default_spread fine-tuned without weight decay (default_wd0 on the varied 30 s)",
        "preset": None, "train": {}, "transfer": {**SIXTH_FINETUNE, "weight_decay": 0.0}, "quick": {}, "start": "model",
        "rank": {}, "scratch_of": "default", "limited": "spread",
    },
    "default_nowd": {
        "about": "the defaults without weight decay in any run (scratch too): the preset's 1e-4, coupled into "
                 "Adam as in AGAM, pulls every weight towards zero",
        "preset": None, "train": {"weight_decay": 0.0}, "transfer": {**SIXTH_FINETUNE},
        "quick": {}, "start": "model", "rank": {},
    },
    "default_grow": {
        "about": "the defaults with the update window growing as the rate falls (tbptt_grow: 500 samples x "
                 "start rate / rate, up to the segment), every run",
        "preset": None, "train": {"tbptt_grow": True}, "transfer": {"weight_decay": 1e-4},
        "quick": {}, "start": "model", "rank": {},
    },
    "default_nowd_grow": {
        "about": "default_grow without weight decay (default_nowd): both fixes of the fifth session together",
        "preset": None, "train": {"tbptt_grow": True, "weight_decay": 0.0}, "transfer": {}, "quick": {},
        "start": "model", "rank": {},
    },
    "default_rebase": {
        "about": "the defaults with a rebased plateau (plateau_rebase: after a decay, improvement counts from the "
                 "best since it, so a run recovering from a validation spike keeps its rate), every run",
        "preset": None, "train": {"plateau_rebase": True}, "transfer": {**SIXTH_FINETUNE},
        "quick": {}, "start": "model",
        "rank": {},
    },
    "default_spread_rebase": {
        "about": "default_rebase on default_spread's varied 30 s",
        "preset": None, "train": {"plateau_rebase": True}, "transfer": {**SIXTH_FINETUNE},
        "quick": {}, "start": "model",
        "rank": {}, "limited": "spread",
    },
    "default_ftgrow": {
        "about": "the defaults with the fine-tune's update window growing as its rate falls (tbptt_grow in quick "
                 "and transfer_full only; scratch is the default's)",
        "preset": None, "train": {}, "transfer": {"tbptt_grow": True}, "quick": {}, "start": "model", "rank": {},
        "scratch_of": "default",
    },
    "default_spread_ftgrow": {
        "about": "default_ftgrow on default_spread's varied 30 s",
        "preset": None, "train": {}, "transfer": {"tbptt_grow": True}, "quick": {}, "start": "model", "rank": {},
        "scratch_of": "default", "limited": "spread",
    },
    "default_restart": {
        "about": "the defaults, each fall of the rate restarting from the best weights so far (decay_from_best), "
                 "every run",
        "preset": None, "train": {"decay_from_best": True}, "transfer": {**SIXTH_FINETUNE},
        "quick": {}, "start": "model", "rank": {},
    },
    "article": {
        "about": "the article's recipe (agam preset) for every run, the picked start as it is",
        "preset": "agam", "train": {}, "transfer": {}, "quick": {}, "start": "model", "rank": {},
        "scratch_of": "reference",
    },
}
#: Recipes a device figure draws unless --figure-recipe names them: the default and one lever.
FIGURE_RECIPES = 2
DEVICE_INDEX = {d.name: i for i, d in enumerate(DEVICES)}
RECIPE_KEYS = {"about", "preset", "train", "transfer", "quick", "start", "rank", "scratch_of", "limited"}
#: ``limited`` of a recipe: "head" (the first 30 s of the training audio, the issue's definition)
#: "spread" (the library's ``spread`` subset: 5 s pieces spread evenly over it, cut into a data
#: folder of its own so that the ranking sees only those 30 s too),
#: "selfval" (a 30 s recording validated on its own tail, as ``ampxfer capture`` would) or
#: "spread_selfval" (both: the spread pieces as one recording that validates itself).
LIMITED_KINDS = ("head", "spread", "selfval", "spread_selfval")
#: The report's four runs, the default of ``--runs``; scratch_limited only when named.
TRAIN_RUNS = rep.RUNS + ("scratch_limited",)
#: Longest first, so two workers finish together.
RUN_ORDER = {"agam_full": 0, "scratch_full": 1, "transfer_full": 2, "scratch_limited": 3, "quick": 4}


# --------------------------------------------------------------------------- pure helpers

def split_plan(clips: Sequence[Tuple[str, int]], rate: int = RATE, gap_seconds: float = GAP_SECONDS,
               val_seconds: float = VAL_SECONDS, test_seconds: float = TEST_SECONDS,
               limited_seconds: float = LIMITED_SECONDS, segment_seconds: float = 0.5) -> dict:
    """Where ``prepare`` cuts the joined clips: sample bounds and each split's clip content.

    ``clips``: (name, samples) in join order. Returns ``total`` samples, ``bounds`` {split:
    (start, stop)} for train, limited, val and test (time order: train, then val, then test;
    limited is the head of train), ``segments`` {full, limited}: whole training segments
    the trainer cuts, and ``clips`` {split: [(name, samples inside)]}.
    """
    gap = int(round(gap_seconds * rate))
    spans, pos = [], 0
    for i, (name, n) in enumerate(clips):
        if i:
            pos += gap
        spans.append((name, pos, pos + n))
        pos += n
    n_val, n_test = int(round(val_seconds * rate)), int(round(test_seconds * rate))
    n_train = pos - n_val - n_test
    if n_train <= 0:
        raise ValueError(f"{pos / rate:.1f} s of audio leave no training audio after {val_seconds:g} s "
                         f"validation and {test_seconds:g} s test")
    n_lim = min(n_train, int(round(limited_seconds * rate)))
    bounds = {"train": (0, n_train), "limited": (0, n_lim), "val": (n_train, n_train + n_val),
              "test": (n_train + n_val, pos)}
    seg = int(round(segment_seconds * rate))
    cover = {}
    for split, (a, b) in bounds.items():
        cover[split] = [(name, min(b, e) - max(a, s)) for name, s, e in spans if min(b, e) > max(a, s)]
    return {"total": pos, "bounds": bounds, "segments": {"full": n_train // seg, "limited": n_lim // seg},
            "clips": cover}


def weights_key(weights) -> tuple:
    """What decides a model's sound, hashable: config, weights, the summed LSTM bias, the head."""
    def h(a):
        a = np.ascontiguousarray(a, dtype=np.float32)
        return a.shape, hashlib.sha256(a.tobytes()).hexdigest()
    return (weights.config.input_size, weights.config.hidden_size, weights.config.skip,
            h(weights.weight_ih), h(weights.weight_hh), h(weights.bias), h(weights.params["lin.weight"]),
            h(weights.params["lin.bias"]))


def leave_one_out(device_model: Path, knobs: Sequence[float], library: Sequence[Path],
                  load: Callable = None) -> Tuple[List[Path], List[Path]]:
    """The library without the device: (kept, left out), both sorted.

    Left out: the device's own file (for a conditioned device, the conditioned file itself)
    and any file with the same network, i.e. a copy of the device under another name
    (compared as played: a snapshot equal to the conditioned device folded at its knobs is
    a copy too). Other captures of the same gear stay.
    """
    load = load or load_model
    own = load(device_model)
    same = {weights_key(own)}
    if knobs:
        same.add(weights_key(fold_knobs(own, list(knobs))))
    real = os.path.realpath(device_model)
    kept, out = [], []
    for path in sorted(Path(p) for p in library):
        if os.path.realpath(path) == real or weights_key(load(path)) in same:
            out.append(path)
        else:
            kept.append(path)
    return kept, out


def recipe_overrides(recipe: dict, run: str) -> dict:
    """make_config overrides of a recipe's run (later groups win)."""
    out = dict(recipe.get("train", {}))
    if run in ("quick", "transfer_full"):
        out.update(recipe.get("transfer", {}))
    if run == "quick":
        out.update(recipe.get("quick", {}))
    return out


def rank_tag(rank_overrides: dict) -> str:
    if not rank_overrides:
        return "default"
    blob = json.dumps(rank_overrides, sort_keys=True).encode()
    return "r" + hashlib.sha256(blob).hexdigest()[:10]


def check_recipes(names: Sequence[str]) -> None:
    for name in names:
        if name not in RECIPES:
            raise SystemExit(f"error: --recipe {name}: unknown; one of {', '.join(RECIPES)} "
                             f"(add it to RECIPES in {__file__})")
        unknown = set(RECIPES[name]) - RECIPE_KEYS
        if unknown:
            raise SystemExit(f"error: recipe {name}: unknown key(s) {', '.join(sorted(unknown))}; "
                             f"use {', '.join(sorted(RECIPE_KEYS))}")
        if RECIPES[name].get("limited", "head") not in LIMITED_KINDS:
            raise SystemExit(f"error: recipe {name}: limited must be one of {', '.join(LIMITED_KINDS)}")
        if RECIPES[name].get("start", "model") not in ("model", "refit_head"):
            raise SystemExit(f"error: recipe {name}: start must be 'model' or 'refit_head'")
        RankConfig(**_rank_kwargs(RECIPES[name].get("rank", {})))  # raises on a bad setting
        other = RECIPES[name].get("scratch_of")
        if other is not None:
            mine = (RECIPES[name].get("preset"), RECIPES[name].get("train", {}))
            theirs = ("agam", {}) if other == "reference" else (
                (RECIPES[other].get("preset"), RECIPES[other].get("train", {})) if other in RECIPES else None)
            if theirs is None or other == name or RECIPES.get(other, {}).get("scratch_of"):
                raise SystemExit(f"error: recipe {name}: scratch_of {other!r} must name another recipe that runs "
                                 "its own scratch_full, or 'reference'")
            if mine != theirs:
                raise SystemExit(f"error: recipe {name}: scratch_of {other!r}, but their preset or train settings "
                                 "differ, so their scratch runs would too; drop scratch_of")


def _rank_kwargs(overrides: dict) -> dict:
    d = dict(overrides)
    if "knob_values" in d:
        d["knob_values"] = tuple(d["knob_values"])
    return d


def config_identity(config: dict) -> dict:
    """A TrainConfig dict without what may change on resume (max_epochs, threads, ...). A field
    newer than the run counts at its default: fields are added with defaults that change nothing."""
    d = {**TrainConfig().to_dict(), **config}
    for k in TrainConfig.RESUMABLE:
        d.pop(k, None)
    return d


# --------------------------------------------------------------------------- data

def di_clips(real: Path) -> List[Path]:
    clips = sorted((real / "di").glob("*.flac"))
    if not clips:
        raise SystemExit(f"error: {real / 'di'}: no .flac DI clips; --realdata must name the shared realdata folder")
    return clips


def joined_di(real: Path, out: Path) -> Tuple[Path, List[Tuple[str, int]]]:
    """``out/audio/di_44100.wav``: the DI clips joined in name order, resampled; and (name, samples)."""
    wav, table = out / "audio" / f"di_{RATE}.wav", out / "audio" / f"di_{RATE}.json"
    if wav.exists() and table.exists():
        return wav, [tuple(c) for c in json.loads(table.read_text())["clips"]]
    pieces, clips = [], []
    for i, path in enumerate(di_clips(real)):
        clip = read_audio(path)
        x = resample(clip.samples, clip.sample_rate, RATE)
        if i:
            pieces.append(np.zeros(int(round(GAP_SECONDS * RATE))))
        pieces.append(x)
        clips.append((path.stem, int(len(x))))
    wav.parent.mkdir(parents=True, exist_ok=True)
    write_audio(wav, np.concatenate(pieces).astype(np.float32), RATE)
    atomic_write_json(table, {"clips": clips, "gap_seconds": GAP_SECONDS, "rate": RATE})
    return wav, clips


def device_weights(real: Path, device: Device):
    path = real / "models" / device.model
    if not path.exists():
        raise SystemExit(f"error: {path}: missing; --realdata must name the shared realdata folder "
                         f"(or remove device {device.name} from DEVICES)")
    weights = load_model(path)
    return fold_knobs(weights, list(device.knobs)) if device.knobs else weights


def device_data(real: Path, out: Path, device: Device, log=print) -> Path:
    """The device's prepared data folder (cached): the joined DI and the capture played over it."""
    folder = out / "data" / device.name
    definition = {"model": device.model, "knobs": list(device.knobs),
                  "model_sha256": sha256_file(real / "models" / device.model)}
    stamp = out / "audio" / f"{device.name}.json"
    if stamp.exists() and json.loads(stamp.read_text()) != definition:
        raise SystemExit(f"error: {stamp}: {device.name} was rendered from another capture or knob setting; "
                         f"use another --out, or remove {out / 'audio' / device.name}.* and {folder}")
    if (folder / "manifest.json").exists() and stamp.exists():
        return folder
    di, _ = joined_di(real, out)
    target = out / "audio" / f"{device.name}.wav"
    if not target.exists() or not stamp.exists():
        log(f"rendering {device.name} ({device.model}{' at ' + str(list(device.knobs)) if device.knobs else ''})")
        x = read_audio(di).samples.astype(np.float32)
        # numba: one exact sequential pass on one core (no chunking), the same on every machine
        write_audio(target, render(device_weights(real, device), x, method="numba"), RATE)
        atomic_write_json(stamp, definition)
    config = PrepareConfig(rate=RATE, align="0", val_seconds=VAL_SECONDS, test_seconds=TEST_SECONDS,
                           limited_seconds=LIMITED_SECONDS)
    prepare([CaptureSpec((str(di),), (str(target),))], folder, config)
    return folder


def device_data_limited(real: Path, out: Path, device: Device, kind: str, log=print) -> Path:
    """The device's data folder for a recipe's ``limited`` kind other than "head" (cached):

    * "spread": training audio = the pieces of the library's ``spread`` subset, cut from the full
      data's training audio (input and target alike: each piece is what the device played there);
    * "selfval": the 30 s recording of a guitarist who has nothing else, split the way
      ``ampxfer capture`` splits it (``capture_splits``): training audio its head, validation
      the part after it; the 30 s's own test part is not used.
    * "spread_selfval": both at once, the real guitarist's case: the spread pieces played back
      to back as one 30 s recording, split like "selfval" (its last pieces validate).

    The test audio is always the very samples of the full data's (and for "spread" the
    validation audio as well), so every kind is scored on the same 20 s.
    """
    full = Dataset(device_data(real, out, device, log))
    folder = out / "data" / f"{device.name}@{kind}"
    if (folder / "manifest.json").exists():
        return folder
    (train,), (val,), (test,) = (full.split(n) for n in ("train", "val", "test"))
    rate = full.sample_rate
    if kind == "spread":
        spans = spread_spans(train.samples, int(round(LIMITED_SECONDS * rate)), int(round(0.5 * rate)),
                             int(round(SPREAD_PIECE_SECONDS * rate)))
        pieces = [(train, a, b) for a, b in spans]
        pieces += [(val, 0, val.samples), (test, 0, test.samples)]
        val_seconds, same = VAL_SECONDS, ("val", "test")
    elif kind in ("selfval", "spread_selfval"):
        val_seconds, user_test = capture_splits(LIMITED_SECONDS)
        n_fit = int(round((LIMITED_SECONDS - user_test) * rate))  # training + validation of the 30 s
        if kind == "selfval":
            spans = [(0, n_fit)]
        else:  # the varied 30 s recorded in one go: the spread pieces back to back, cut like one recording
            spans, left = [], n_fit
            for a, b in spread_spans(train.samples, int(round(LIMITED_SECONDS * rate)), int(round(0.5 * rate)),
                                     int(round(SPREAD_PIECE_SECONDS * rate))):
                spans.append((a, a + min(b - a, left)))
                left -= spans[-1][1] - a
        pieces, same = [(train, a, b) for a, b in spans if b > a] + [(test, 0, test.samples)], ("test",)
    else:
        raise ValueError(f"unknown limited kind {kind!r}")
    stem = out / "audio" / f"{device.name}@{kind}"
    write_audio(f"{stem}_di.wav", np.concatenate([s.input[a:b, 0] for s, a, b in pieces]), rate)
    write_audio(f"{stem}_target.wav", np.concatenate([s.target[a:b] for s, a, b in pieces]), rate)
    config = PrepareConfig(rate=RATE, align="0", val_seconds=val_seconds, test_seconds=TEST_SECONDS,
                           limited_seconds=LIMITED_SECONDS)
    prepare([CaptureSpec((f"{stem}_di.wav",), (f"{stem}_target.wav",))], folder, config)
    mine = Dataset(folder)
    for name in same:  # the comparison with the head-30 s runs rests on this
        a, b = mine.split(name)[0], full.split(name)[0]
        if not (np.array_equal(a.input, b.input) and np.array_equal(a.target, b.target)):
            raise SystemExit(f"error: {folder}: its {name} audio differs from {full.path}'s; remove {folder} and retry")
    return folder


def library_files(real: Path) -> List[Path]:
    return sorted(p for p in (real / "models").rglob("*.json") if p.is_file())


# --------------------------------------------------------------------------- tasks

@dataclass(eq=False)  # hashed by identity: the pool keys its processes by task
class Task:
    kind: str  # "rank" or "train"
    device: str
    run: str  # run name, or "rank"
    recipe: Optional[str]  # None: the agam reference / the ranking
    seed: int
    folder: Path
    payload: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        who = f"{self.device} {self.run}" + ("" if self.kind == "rank" else f" s{self.seed}")
        return who + (f" [{self.recipe}]" if self.recipe else "")


def library_label(path) -> str:
    """How runs ranked over ``--library PATH`` are labelled: ``shipped`` for the shipped
    starting models, else the folder's name."""
    from ampxfer_lib.library.index import SHIPPED_MODELS

    p = Path(path).expanduser().resolve()
    return "shipped" if p == SHIPPED_MODELS.resolve() else p.name


def run_folder_name(run: str, seed: int, label: Optional[str] = None) -> str:
    """``quick_s0``, or ``quick@shipped_s0`` for a run that starts from a ``--library`` pick."""
    return f"{run}@{label}_s{seed}" if label and run in ("quick", "transfer_full") else f"{run}_s{seed}"


def train_task(out: Path, device: Device, data: Path, run: str, recipe_name: Optional[str], seed: int,
               args, init_from: Optional[Path] = None, ranking: Optional[Path] = None) -> Task:
    if run == "agam_full":
        folder = out / "reference" / device.name / f"agam_full_s{seed}"
        cap = args.agam_max_epochs if args.max_epochs is None else min(args.agam_max_epochs, args.max_epochs)
        config = make_config(data, "agam", subset="full", seed=seed, max_epochs=cap, device="cpu", threads=1)
    else:
        recipe = RECIPES[recipe_name]
        label = getattr(args, "library_label", None)
        folder = out / "recipes" / recipe_name / device.name / run_folder_name(run, seed, label)
        overrides = recipe_overrides(recipe, run)
        if args.max_epochs is not None:
            overrides["max_epochs"] = min(args.max_epochs, overrides.get("max_epochs", args.max_epochs))
        subset = "limited" if run in ("quick", "scratch_limited") else "full"
        config = make_config(data, recipe.get("preset"), subset=subset, seed=seed,
                             init_from=None if init_from is None else str(init_from), device="cpu", threads=1,
                             **overrides)
    payload = {"config": config.to_dict(), "ranking": None if ranking is None else str(ranking)}
    if run in ("quick", "transfer_full") and getattr(args, "library_label", None):
        payload["library"] = args.library_label
    return Task("train", device.name, run, recipe_name, seed, folder, payload)


def task_state(task: Task) -> Tuple[str, str]:
    """("done" | "resume" | "new" | "conflict", words) for a training task, from its folder."""
    folder = task.folder
    old = _read_json(folder / "task.json")
    if old is not None and config_identity(old["config"]) != config_identity(task.payload["config"]):
        diff = sorted(k for k, v in config_identity(task.payload["config"]).items()
                      if config_identity(old["config"]).get(k) != v)
        return "conflict", (f"{folder}: holds a run of another definition ({', '.join(diff[:4])}); give the changed "
                            "recipe a new name in RECIPES, or remove the folder")
    result = _read_json(folder / "result.json")
    if result is not None:
        stop = (result.get("summary") or {}).get("stop_reason")
        want = task.payload["config"]["max_epochs"]
        if stop != "max_epochs" or result.get("max_epochs", 0) >= want:
            return "done", _result_words(result)
        return "resume", f"extend from {result['summary']['epochs']} to {want} epochs"
    if (folder / "train" / "checkpoint.pt").exists() or (folder / "metrics.jsonl").exists():
        return "resume", "interrupted run"
    return "new", ""


def _result_words(result: dict) -> str:
    s = result.get("summary") or {}
    m = rep.run_metrics(result)
    return (f"test ESR {rep._f(s.get('test_esr'))}, {s.get('epochs')} epochs ({s.get('stop_reason')}), "
            f"{rep._t(m['cpu_s'])} s CPU")


def model_label(path) -> str:
    """``folder/name.json`` of a library model: names repeat across folders (TS9_FullD)."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


# --------------------------------------------------------------------------- worker side

class BenchClock(Callback):
    """CPU seconds and plain validation ESR per epoch, kept beside the run folder.

    ``metrics.jsonl`` gets one line per epoch after the trainer has checkpointed it (the
    trainer calls ``on_epoch`` after its save), so a resumed run continues the same clock.
    CPU time counts training and the trainer's own validations; this callback's extra pass
    for the ESR (when the trainer's records carry no ``val_esr``) is excluded, and so are
    setup and the epoch-0 validation. Where the trainer records ``cpu_s``/``val_esr`` itself,
    those are used. A kill between a checkpoint and the line after it loses that epoch's
    CPU seconds: the curve then marks ``cpu_gap`` and the run's CPU is a lower bound.
    """

    def __init__(self, folder: Path):
        self.metrics = folder / "metrics.jsonl"
        self.progress = folder / "progress.json"
        self.curve: List[dict] = []
        self.started = False

    # the clock
    def now(self) -> float:
        return self.base + time.process_time() - self.t0 - self.excluded

    def _esr(self, run) -> float:
        raise RuntimeError("the trainer records val_esr in every validated epoch; this bench needs a library "
                           "that does (ampxfer 0.1.0 after the trainer split)")

    def _append(self, rec: dict) -> None:
        self.curve.append(rec)
        with open(self.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _load(self) -> List[dict]:
        if not self.metrics.exists():
            return []
        out = []
        for line in self.metrics.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # a line cut by a kill
                pass
        return out

    def on_start(self, run) -> None:
        self.started = True
        self.excluded = 0.0
        done = run.start_epoch - 1
        curve = [c for c in self._load() if c["epoch"] <= done]
        have = {c["epoch"] for c in curve}
        gap = False
        for h in run.history:  # epochs checkpointed without their line: CPU unknown
            if h["epoch"] <= done and h["epoch"] not in have and h["epoch"] > 0:
                curve.append({"epoch": h["epoch"], "cpu_s": h.get("cpu_s"), "val_loss": h["val_loss"],
                              "val_esr": h.get("val_esr"), "train_loss": h["train_loss"], "lr": h["lr"],
                              "cpu_gap": h.get("cpu_s") is None})
                gap = gap or h.get("cpu_s") is None
        curve.sort(key=lambda c: c["epoch"])
        self.metrics.write_text("".join(json.dumps(c) + "\n" for c in curve))
        self.curve = curve
        self.base = next((c["cpu_s"] for c in reversed(curve) if c.get("cpu_s") is not None), 0.0)
        self.pending_gap = gap
        if run.start_batch:
            prog = _read_json(self.progress)
            if prog and prog.get("epoch") == run.start_epoch and prog.get("batch") == run.start_batch:
                self.base = prog["cpu_s"]
            else:
                self.pending_gap = True
        self.epoch = run.start_epoch
        self.t0 = time.process_time()
        if not curve and run.history and run.history[0]["epoch"] == 0:
            h = run.history[0]
            esr = h.get("val_esr")
            if esr is None:
                esr = self._esr(run)
            self._append({"epoch": 0, "cpu_s": 0.0, "val_loss": h["val_loss"], "val_esr": esr,
                          "train_loss": None, "lr": h["lr"]})

    def on_batch(self, run, batch: int, n_batches: int) -> None:
        atomic_write_text(self.progress, json.dumps({"epoch": self.epoch, "batch": batch, "cpu_s": self.now()}))

    def on_epoch(self, run, record: dict) -> None:
        cpu = record.get("cpu_s")
        if cpu is None:
            cpu = self.now()
        esr = record.get("val_esr")
        if esr is None and record.get("val_loss") is not None:
            esr = self._esr(run)
        rec = {"epoch": record["epoch"], "cpu_s": round(cpu, 3), "val_loss": record.get("val_loss"), "val_esr": esr,
               "train_loss": record.get("train_loss"), "lr": record.get("lr")}
        if self.pending_gap:
            rec["cpu_gap"], self.pending_gap = True, False
        self._append(rec)
        self.epoch = record["epoch"] + 1

    def on_end(self, run, summary: dict) -> None:
        if not self.started:  # a finished run asked again: its curve is on disk
            self.curve = self._load()


def work(folder: Path) -> int:
    """Run one task (``folder/task.json``) in this process, one thread."""
    import torch

    torch.set_num_threads(1)
    task = json.loads((folder / "task.json").read_text())
    if task["kind"] == "rank":
        config = RankConfig(**_rank_kwargs(task["rank"]))
        w0, c0 = time.monotonic(), time.process_time()
        entries = rank_library([Path(p) for p in task["library"]], task["data"], config, progress=False)
        cpu, wall = time.process_time() - c0, time.monotonic() - w0
        ranked = [e for e in entries if e["score"] is not None]
        if not ranked:
            print(f"error: no library model could be scored for {task['data']}")
            return 1
        for e in entries[1:]:
            e.pop("head", None)  # 21 numbers a model; only the pick's (for a refit_head start) is kept
        atomic_write_json(folder / "ranking.json", {
            "device": task["device"], "cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "rank": task["rank"],
            "library": task["library"], "left_out": task["left_out"], "best": ranked[0], "entries": entries})
        print(f"picked {Path(ranked[0]['model']).name} {ranked[0]['knobs'] or ''} in {cpu:.1f} s CPU")
        return 0
    config = TrainConfig.from_dict(task["config"])
    clock = BenchClock(folder)
    summary = train(config, folder / "train", [clock, LogLines(lambda line: print(line, flush=True))])
    atomic_write_json(folder / "result.json", {
        "device": task["device"], "run": task["run"], "recipe": task["recipe"], "seed": task["seed"],
        "command": task["command"], "config": task["config"], "max_epochs": config.max_epochs,
        "ranking": task.get("ranking"), "library": task.get("library"), "summary": summary, "curve": clock.curve,
        "cpu_exact": not any(c.get("cpu_gap") for c in clock.curve),
        "wall_s": summary.get("train_seconds"), "process_cpu_s": round(time.process_time(), 3)})
    return 0


# --------------------------------------------------------------------------- the pool

def worker_env() -> dict:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[name] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def run_pool(tasks: Sequence[Task], jobs: int, on_done: Callable[[Task], str]) -> List[Task]:
    """Run tasks as worker processes, ``jobs`` at a time; returns the failed ones."""
    pending = list(tasks)
    running: Dict[Task, subprocess.Popen] = {}
    failed: List[Task] = []
    total, finished = len(tasks), 0
    env = worker_env()
    try:
        while pending or running:
            while pending and len(running) < jobs:
                task = pending.pop(0)
                log = open(task.folder / "worker.log", "a", encoding="utf-8")
                running[task] = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker",
                                                  str(task.folder)], stdout=log, stderr=subprocess.STDOUT,
                                                 env=env, start_new_session=True)
                log.close()
                print(f"{time.strftime('%H:%M:%S')} start {task.label}", flush=True)
            time.sleep(0.5)
            for task, proc in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[task]
                finished += 1
                if proc.returncode == 0:
                    words = on_done(task)
                    print(f"{time.strftime('%H:%M:%S')} done  {task.label} [{finished}/{total}]: {words}", flush=True)
                else:
                    failed.append(task)
                    print(f"{time.strftime('%H:%M:%S')} FAILED {task.label} (exit {proc.returncode}): "
                          f"{_last_line(task.folder / 'worker.log')}  (log: {task.folder / 'worker.log'})", flush=True)
    except KeyboardInterrupt:
        # the workers are in their own sessions: stop them (the trainer checkpoints on the way out)
        for proc in running.values():
            proc.send_signal(signal.SIGINT)
        for proc in running.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        print("interrupted: run the same command again to resume", flush=True)
        raise
    return failed


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


# --------------------------------------------------------------------------- main flow

def select_devices(spec: Optional[str]) -> List[Device]:
    if not spec:
        return list(DEVICES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    known = {d.name: d for d in DEVICES}
    bad = [n for n in names if n not in known]
    if bad:
        raise SystemExit(f"error: --devices {','.join(bad)}: unknown; one of {','.join(known)}")
    return [known[n] for n in names]


def select_runs(spec: Optional[str]) -> List[str]:
    if not spec:
        return list(rep.RUNS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in TRAIN_RUNS]
    if bad:
        raise SystemExit(f"error: --runs {','.join(bad)}: unknown; one of {','.join(TRAIN_RUNS)}")
    return names


def write_task(task: Task, command: str) -> None:
    task.folder.mkdir(parents=True, exist_ok=True)
    payload = {"kind": task.kind, "device": task.device, "run": task.run, "recipe": task.recipe,
               "seed": task.seed, "command": command, **task.payload}
    atomic_write_json(task.folder / "task.json", payload)


def export_start(ranking: dict, path: Path, how: str) -> Path:
    """The recipe's starting model for a device, written once (never replaced by another one)."""
    weights = starting_model(ranking["best"], refit_head=(how == "refit_head"))
    if path.exists():
        if not load_model(path).equal(weights):
            raise SystemExit(f"error: {path}: holds another starting model than the ranking now picks; "
                             "remove the recipe's device folder to start its runs again")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(weights, path)
    return path


def benchmark(args, command: str) -> int:
    real = Path(args.realdata)
    out = Path(args.out)
    devices, runs = select_devices(args.devices), select_runs(args.runs)
    recipes = args.recipe or ["default"]
    check_recipes(recipes)
    transfer_runs = [r for r in runs if r in ("quick", "transfer_full")]
    recipe_runs = [r for r in runs if r != "agam_full"]
    dry = args.dry_run
    print(f"real-gear benchmark: {len(devices)} device(s), runs {','.join(runs)}, recipe(s) {','.join(recipes)}, "
          f"seed(s) {' '.join(map(str, args.seeds))}, {args.jobs} job(s), out {out}")
    if dry:
        for d in devices:
            knobs = f" knobs {list(d.knobs)}" if d.knobs else ""
            print(f"  device {d.name:14s} {d.category:30s} {d.model}{knobs}")
        for name in recipes:
            print(f"  recipe {name}: {json.dumps({k: v for k, v in RECIPES[name].items() if k != 'about'})}")

    rank_tasks: Dict[Tuple[str, str], Task] = {}
    label = getattr(args, "library_label", None)

    # 1. data (a recipe with another ``limited`` kind trains quick and scratch_limited on its own folder)
    data: Dict[str, Path] = {}
    data_kind: Dict[Tuple[str, str], Path] = {}
    kinds = sorted({RECIPES[n].get("limited", "head") for n in recipes} - {"head"}) \
        if any(r in ("quick", "scratch_limited") for r in runs) else []
    for d in devices:
        folder = out / "data" / d.name
        if dry:
            data[d.name] = folder
            data_kind.update({(d.name, k): out / "data" / f"{d.name}@{k}" for k in kinds})
            print(f"  data {folder}: {'cached' if (folder / 'manifest.json').exists() else 'to prepare'}")
        else:
            data[d.name] = device_data(real, out, d)
            data_kind.update({(d.name, k): device_data_limited(real, out, d, k) for k in kinds})

    def kind_of(recipe: Optional[str], run: str) -> str:
        if recipe is None or run not in ("quick", "scratch_limited"):
            return "head"
        return RECIPES[recipe].get("limited", "head")

    def data_of(device: str, recipe: Optional[str], run: str) -> Path:
        kind = kind_of(recipe, run)
        return data[device] if kind == "head" else data_kind[(device, kind)]

    def suffix_of(recipe: str, run: str) -> str:
        """``@LIBRARY`` and ``@KIND`` where a run's start comes from another library or data."""
        kind = kind_of(recipe, run)
        return ("" if label is None else f"@{label}") + ("" if kind == "head" else f"@{kind}")

    def tag_of(recipe: str, run: str) -> str:
        """The ranking a recipe's transfer run starts from: per rank setting, library and data."""
        return rank_tag(RECIPES[recipe].get("rank", {})) + suffix_of(recipe, run)

    # 2. rankings (leave-one-out), one per device and distinct rank setting
    if transfer_runs:
        library = library_files(real) if label is None else library_model_paths([args.library])
        for d in devices:
            if label is None:
                kept, left = leave_one_out(real / "models" / d.model, d.knobs, library)
            else:  # another library: nothing of the real library in it to leave out
                kept, left = sorted(library), []
            for name in recipes:
                overrides = RECIPES[name].get("rank", {})
                for run in transfer_runs:
                    tag = tag_of(name, run)
                    if (d.name, tag) in rank_tasks:
                        continue
                    task = Task("rank", d.name, "rank", None, 0, out / "rank" / d.name / tag,
                                {"rank": overrides, "data": str(data_of(d.name, name, run)),
                                 "library": [str(p) for p in kept], "left_out": [str(p) for p in left]})
                    rank_tasks[(d.name, tag)] = task
    todo_rank = [t for t in rank_tasks.values() if not (t.folder / "ranking.json").exists()]
    for t in rank_tasks.values():
        if dry:
            state = "done" if t not in todo_rank else "to run"
            print(f"  rank {t.device} [{t.folder.name}]: {state} ({len(t.payload['library'])} models; left out "
                  f"{', '.join(model_label(p) for p in t.payload['left_out'])})")
    failed: List[Task] = []
    if todo_rank and not dry:
        for t in todo_rank:
            write_task(t, command)

        def rank_done(task):
            r = _read_json(task.folder / "ranking.json")
            return f"{Path(r['best']['model']).name} {r['best']['knobs'] or ''} ({r['cpu_s']:.1f} s CPU)"

        failed += run_pool(todo_rank, args.jobs, rank_done)

    # 3. training tasks
    tasks: List[Task] = []
    for d in devices:
        for seed in args.seeds:
            if "agam_full" in runs:
                tasks.append(train_task(out, d, data[d.name], "agam_full", None, seed, args))
            for name in recipes:
                recipe = RECIPES[name]
                for run in recipe_runs:
                    if run == "scratch_full" and recipe.get("scratch_of"):
                        other = recipe["scratch_of"]  # a shared run: planned once, under its owner
                        tasks.append(train_task(out, d, data[d.name], "agam_full" if other == "reference"
                                                else "scratch_full", None if other == "reference" else other,
                                                seed, args))
                        continue
                    init, ranking = None, None
                    if run in transfer_runs:
                        tag = tag_of(name, run)
                        ranking = rank_tasks[(d.name, tag)].folder / "ranking.json"
                        init = (out / "recipes" / name / d.name /
                                f"start_{recipe.get('start', 'model')}{suffix_of(name, run)}.json")
                        if not dry:
                            r = _read_json(ranking)
                            if r is None:
                                continue  # its ranking failed (reported above)
                            export_start(r, init, recipe.get("start", "model"))
                    tasks.append(train_task(out, d, data_of(d.name, name, run), run, name, seed, args, init, ranking))
    tasks = list({str(t.folder): t for t in tasks}.values())  # a shared run once
    tasks.sort(key=lambda t: (RUN_ORDER[t.run], DEVICE_INDEX[t.device], t.recipe or "", t.seed))
    todo = []
    for t in tasks:
        state, words = task_state(t)
        if dry:
            print(f"  run {t.label}: {state}{': ' + words if words else ''}")
        if state == "conflict":
            print(f"error: {words}")
            failed.append(t)
        elif state != "done":
            todo.append(t)
    if dry:
        print(f"{len(todo)} run(s) and {len(todo_rank)} ranking(s) would run")
        return 0
    for t in todo:
        write_task(t, command)
    failed += run_pool(todo, args.jobs, lambda t: _result_words(_read_json(t.folder / "result.json")))
    if failed:
        print(f"{len(failed)} task(s) failed: {', '.join(t.label for t in failed)}")
        return 1
    print(f"all done; report: python bench/real_gear.py --out {out} --report --figures")
    return 0


# --------------------------------------------------------------------------- report

def collect(out: Path, recipes: Optional[Sequence[str]], devices: Sequence[Device]) -> dict:
    """What is on disk: {"reference": {(device, seed): result}, "recipes": {name: {(device, run, seed): result}}}."""
    ref = {}
    for d in devices:
        for f in sorted((out / "reference" / d.name).glob("agam_full_s*/result.json")):
            r = json.loads(f.read_text())
            ref[(d.name, r["seed"])] = r
    on_disk = sorted(p.name for p in (out / "recipes").glob("*") if p.is_dir())
    names = recipes or [n for n in RECIPES if n in on_disk] + [n for n in on_disk if n not in RECIPES]
    found = {}
    for name in names:
        found[name] = {}
        for d in devices:
            for f in sorted((out / "recipes" / name / d.name).glob("*_s*/result.json")):
                r = json.loads(f.read_text())
                run = r["run"] if not r.get("library") else f"{r['run']}[{r['library']}]"
                found[name][(d.name, run, r["seed"])] = r
            other = RECIPES.get(name, {}).get("scratch_of")
            if other == "reference":
                shared = {seed: r for (dev, seed), r in ref.items() if dev == d.name}
            elif other:
                shared = {}
                for f in sorted((out / "recipes" / other / d.name).glob("scratch_full_s*/result.json")):
                    r = json.loads(f.read_text())
                    shared[r["seed"]] = r
            else:
                shared = {}
            for seed, r in shared.items():
                found[name].setdefault((d.name, "scratch_full", seed), dict(r, run="scratch_full"))
    return {"reference": ref, "recipes": found}


def starts_table(found: dict, devices: Sequence[Device], label: str) -> List[str]:
    """Markdown rows: per device and seed, scratch_limited against quick[label] (the same 30 s,
    validation and test audio; quick's CPU and wall seconds include its ranking's)."""
    lines = [f"| device | seed | scratch_limited test ESR | CPU s | wall s | quick[{label}] test ESR | CPU s "
             "(incl. ranking) | wall s (incl. ranking) | picked start | quick/scratch test ESR |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for name, runs in found["recipes"].items():
        for d in devices:
            seeds = sorted({s for (dev, run, s) in runs if dev == d.name and run == "scratch_limited"}
                           | {s for (dev, run, s) in runs if dev == d.name and run == f"quick[{label}]"})
            for seed in seeds:
                a, b = runs.get((d.name, "scratch_limited", seed)), runs.get((d.name, f"quick[{label}]", seed))
                ma = rep.run_metrics(a) if a else None
                mb = rep.run_metrics(b) if b else None
                ranking = ranking_of(b) if b else None
                cpu_b = wall_b = pick = None
                if mb is not None:
                    cpu_b, wall_b = mb["cpu_s"], mb["wall_s"]
                    if ranking is not None:
                        cpu_b = None if cpu_b is None else cpu_b + ranking["cpu_s"]
                        wall_b = None if wall_b is None else wall_b + ranking["wall_s"]
                        pick = Path(ranking["best"]["model"]).stem
                ratio = (mb["test_esr"] / ma["test_esr"] if ma and mb and ma["test_esr"] and mb["test_esr"] is not None
                         else None)
                prefix = "" if len(found["recipes"]) == 1 else f"[{name}] "
                lines.append(f"| {prefix}{d.name} | {seed} | {rep._f(ma and ma['test_esr'])} | "
                             f"{rep._t(ma and ma['cpu_s'])} | {rep._t(ma and ma['wall_s'])} | "
                             f"{rep._f(mb and mb['test_esr'])} | {rep._t(cpu_b)} | {rep._t(wall_b)} | "
                             f"{pick or '–'} | {rep._f(ratio, 3)} |")
    return lines


def ranking_of(result: dict) -> Optional[dict]:
    return _read_json(Path(result["ranking"])) if result.get("ranking") else None


def report_text(out: Path, found: dict, devices: Sequence[Device], figures: Dict[str, Path], results_path: Path,
                report_command: str) -> str:
    lines = ["## Results (generated)", "",
             f"Generated by `{report_command}` from the run folders under `{_rel(out)}`."]
    commands = sorted({r.get("command") for r in _all_results(found) if r.get("command")})
    if commands:
        lines += ["The runs were produced by:", ""] + [f"    {c}" for c in commands]
    lines += ["", "### Devices", "", "| device | category | capture | knobs | why |", "|---|---|---|---|---|"]
    for d in devices:
        lines.append(f"| {d.name} | {d.category} | `{d.model}` | {_knobs(d.knobs)} | {d.why} |")
    for name, runs in found["recipes"].items():
        lines += ["", f"### Recipe `{name}`", ""]
        definition = RECIPES.get(name)
        if definition:
            spec = json.dumps({k: v for k, v in definition.items() if k != "about"})
            lines += [f"{definition.get('about', '')}: `{spec}`", ""]
            if definition.get("scratch_of"):
                owner = ("the agam reference (agam_full)" if definition["scratch_of"] == "reference"
                         else f"recipe `{definition['scratch_of']}`'s")
                lines += [f"Its scratch_full is {owner} run (the same settings), not a run of its own.", ""]
        per_device, table_rows, starts = {}, [], []
        seeds_by_device: Dict[str, set] = {}
        for (dev, run, seed) in runs:
            seeds_by_device.setdefault(dev, set()).add(seed)
        for (dev, seed) in found["reference"]:
            if dev in seeds_by_device:
                seeds_by_device[dev].add(seed)
        for d in devices:
            per_seed = []
            for seed in sorted(seeds_by_device.get(d.name, ())):
                metrics = {}
                ref = found["reference"].get((d.name, seed))
                if ref is not None:
                    metrics["agam_full"] = rep.run_metrics(ref)
                    table_rows.append(("reference", d.name, "agam_full", seed, metrics["agam_full"]))
                rank_cpu = None
                for run in ("scratch_full", "quick", "transfer_full"):
                    r = runs.get((d.name, run, seed))
                    if r is None:
                        continue
                    metrics[run] = rep.run_metrics(r)
                    table_rows.append((name, d.name, run, seed, metrics[run]))
                    ranking = ranking_of(r)
                    if ranking is not None:
                        rank_cpu = ranking["cpu_s"]
                        if not any(dev == d.name for dev, _ in starts):
                            starts.append((d.name, ranking))
                per_seed.append(rep.device_ratios(metrics, rank_cpu))
            if per_seed:
                per_device[d.name] = rep.combine_seeds(per_seed)
        if starts:
            lines += ["Starting models picked by `rank_library` from the library without the device:", "",
                      "| device | start | knobs | score (by) | ranking CPU s | library size | left out |",
                      "|---|---|---|---:|---:|---:|---|"]
            for dev, r in starts:
                b = r["best"]
                lines.append(f"| {dev} | {model_label(b['model'])} | {_knobs(b['knobs'])} | "
                             f"{b['score']:.4f} ({b['scored_by']}) | {r['cpu_s']:.1f} | {len(r['library'])} | "
                             f"{', '.join(model_label(p) for p in r['left_out'])} |")
            lines.append("")
        lines += ["#### Targets (medians over devices, CPU seconds on one thread)", ""]
        capped = [f"{dev} {run} s{seed}" for rec, dev, run, seed, m in table_rows
                  if rec != "reference" and m["cap_hit"]]
        agam_cap = sorted({dev for rec, dev, run, seed, m in table_rows if rec == "reference" and m["cap_hit"]})
        if capped:
            lines += [f"**Provisional:** {len(capped)} run(s) of this recipe stopped at an epoch cap, not by "
                      f"themselves ({', '.join(capped[:6])}{', ...' if len(capped) > 6 else ''}).", ""]
        if agam_cap:
            lines += [f"agam_full reached its epoch cap on: {', '.join(agam_cap)}.", ""]
        for t in rep.evaluate_targets(per_device):
            lines.append(f"- **{t['target']}** {'met' if t['met'] else 'not met'}: {t['text']}")
        lines += ["", "#### Per device (median over seeds)", ""] + rep.ratio_table(per_device)
        lines += ["", "#### Runs", "",
                  "CPU s: training CPU seconds of the run's process (one thread; '+': a kill lost some, a lower "
                  "bound). t(ESR≤x): CPU seconds until the validation ESR first reached x (0: the start already "
                  "had). **cap**: stopped by its epoch cap, not by itself.", ""]
        lines += rep.run_table(table_rows)
    if figures:
        lines += ["", "### Figures", "", "Validation ESR and learning rate against CPU seconds, every run of a device "
                  "(the first seed; the first recipe solid).", ""]
        for dev, path in figures.items():
            lines.append(f"![{dev}]({os.path.relpath(path, results_path.parent)})")
    return "\n".join(lines) + "\n"


def _knobs(knobs) -> str:
    return ", ".join(f"{k:g}" for k in knobs) or "–"


def _all_results(found: dict):
    yield from found["reference"].values()
    for runs in found["recipes"].values():
        yield from runs.values()


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def make_figures(found: dict, devices: Sequence[Device], folder: Path,
                 recipes: Optional[Sequence[str]] = None) -> Dict[str, Path]:
    """One PNG per device: agam's curve and the runs of ``recipes`` (default: the first
    FIGURE_RECIPES of those found; seventeen recipes' curves on one plot read as noise)."""
    recipes = list(found["recipes"])[:FIGURE_RECIPES] if recipes is None else list(recipes)
    paths = {}
    for d in devices:
        curves = []
        seeds = sorted({s for (dev, s) in found["reference"] if dev == d.name}
                       | {s for runs in found["recipes"].values() for (dev, _, s) in runs if dev == d.name})
        if not seeds:
            continue
        seed = seeds[0]
        ref = found["reference"].get((d.name, seed))
        if ref is not None:
            curves.append(("reference", "agam_full", ref["curve"]))
        for name in recipes:
            runs = found["recipes"].get(name, {})
            for run in ("scratch_full", "quick", "transfer_full"):
                r = runs.get((d.name, run, seed))
                if r is not None and r.get("recipe") == name:  # a scratch run shared with another recipe: drawn there
                    curves.append((name, run, r["curve"]))
        if curves:
            paths[d.name] = rep.device_figure(f"{d.name} (seed {seed})", curves, folder / f"{d.name}.png")
    return paths


def report(args, command: str) -> int:
    out = Path(args.out)
    devices = select_devices(args.devices)
    found = collect(out, args.recipe, devices)
    n = sum(1 for _ in _all_results(found))
    if not n:
        print(f"nothing to report: no finished runs under {out}")
        return 1
    figures = {}
    if args.figures:
        unknown = [r for r in args.figure_recipe or () if r not in found["recipes"]]
        if unknown:
            print(f"error: --figure-recipe {unknown[0]}: not among the reported recipes; name one given with --recipe",
                  file=sys.stderr)
            return 2
        figures = make_figures(found, devices, Path(args.figures_dir), args.figure_recipe)
        print(f"wrote {len(figures)} figure(s) to {args.figures_dir}")
    elif Path(args.figures_dir).is_dir():
        figures = {d.name: Path(args.figures_dir) / f"{d.name}.png" for d in devices
                   if (Path(args.figures_dir) / f"{d.name}.png").exists()}
    if args.report:
        path = Path(args.results)
        text = report_text(out, found, devices, figures, path, command)
        old = path.read_text() if path.exists() else None
        atomic_write_text(path, rep.replace_report(old, text, "Real-gear benchmark (`bench/real_gear.py`)"))
        print(f"wrote {path} ({n} run(s))")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--realdata", default=os.environ.get("AMPXFER_REALDATA"),
                   help="the shared realdata folder (di/, models/); default $AMPXFER_REALDATA")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="cache and run folders (default %(default)s)")
    p.add_argument("--recipe", action="append", default=None,
                   help=f"recipe to run (repeatable; default: default). Known: {', '.join(RECIPES)}")
    p.add_argument("--devices", default=None, help=f"comma-separated subset of {','.join(d.name for d in DEVICES)}")
    p.add_argument("--runs", default=None, help=f"comma-separated subset of {','.join(TRAIN_RUNS)}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each (default 2)")
    p.add_argument("--max-epochs", type=int, default=None, help="cap every run (smoke checks)")
    p.add_argument("--agam-max-epochs", type=int, default=500, help="cap of the agam reference (default 500)")
    p.add_argument("--dry-run", action="store_true", help="list what would run; prepare and train nothing")
    p.add_argument("--report", action="store_true", help="rewrite --results from the runs on disk (trains nothing)")
    p.add_argument("--figures", action="store_true", help="write one PNG per device (trains nothing)")
    p.add_argument("--figure-recipe", action="append", default=None,
                   help=f"recipe whose runs the figures draw beside agam (repeatable; default: the first "
                        f"{FIGURE_RECIPES} of --recipe)")
    p.add_argument("--results", default=str(DEFAULT_RESULTS), help="report file (default %(default)s)")
    p.add_argument("--figures-dir", default=str(FIGURES), help="figure folder (default %(default)s)")
    p.add_argument("--library", default=None,
                   help="rank this folder of models for quick/transfer_full instead of the leave-one-out real "
                        "library (runs labelled quick[LABEL])")
    p.add_argument("--starts-table", action="store_true",
                   help="print scratch_limited against quick[LABEL] per device from the runs on disk (trains nothing)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.library_label = None
    if args.worker:
        stop_on_signals()
        try:
            return work(Path(args.worker))
        except KeyboardInterrupt:
            print("interrupted: the run resumes from its last checkpoint", flush=True)
            return 130
    command = "python bench/real_gear.py " + " ".join(shlex.quote(a) for a in argv)
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    if args.max_epochs is not None and args.max_epochs < 1 or args.agam_max_epochs < 1:
        p.error("--max-epochs and --agam-max-epochs must be at least 1")
    if args.library is not None:
        if not Path(args.library).expanduser().is_dir():
            p.error(f"--library {args.library}: no such folder; name a folder of model JSON files "
                    "(e.g. ampxfer_lib/starting_models)")
        args.library_label = library_label(args.library)
    if args.starts_table:
        found = collect(Path(args.out), args.recipe, select_devices(args.devices))
        print("\n".join(starts_table(found, select_devices(args.devices), args.library_label or "shipped")))
        return 0
    if args.report or args.figures:
        return report(args, command)
    if not args.realdata:
        p.error("--realdata DIR is needed (or set AMPXFER_REALDATA): the folder with di/ and models/")
    if not (Path(args.realdata) / "models").is_dir():
        p.error(f"--realdata {args.realdata}: no models/ folder there; name the shared realdata folder")
    import torch

    torch.set_num_threads(1)
    stop_on_signals()
    try:
        return benchmark(args, command)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
