"""Which model should I start from? Rank a library of pretrained models for a target.

The article left picking the source model as future work. Here every model in a folder of
AGAM/NeuralPi JSON files is scored on the target's own prepared data, cheapest signal first:

1. **Zero-shot scores** (one pass of each model over a few seconds of the target's training
   input, short chunks spread over the recording, each after an unscored warm-up; no
   training): ``esr`` as the model plays; ``esr_level_matched`` after the best single output
   gain ``g = <p, y> / <p, p>`` (i.e. ``1 - cos^2(p, y)``: a capture's level and polarity are
   arbitrary); ``esr_head_refit`` after refitting the dense layer by least squares on the
   model's own LSTM features (how far the features carry without touching the LSTM).
2. **Fine-tune probe** of the best ``finetune_top`` by the zero-shot score: each is
   fine-tuned for a few dozen updates on a few seconds of the target's training audio with
   the ``agam`` recipe and scored by ESR on held-out validation audio. This measures what
   the choice is for, how well a model *learns* the target, at a fraction of a run's cost.

Measured on real gear (``bench/RESULTS_rank.md``: 29 real captures, 7 targets rendered from
captures outside the library, ground truth = every library model fine-tuned with a fixed
short budget): the level-matched zero-shot choice beat the library median 6/7 times (mean
ground-truth rank 7.6 of 29); the head-refit score correlated best with the ground truth
(Spearman 0.52 vs 0.34 and 0.30); the probe of the level-matched top 5 beat the median 7/7
times with a mean rank of 1.6, for about 1.5x the zero-shot cost. Hence the defaults:
``esr_level_matched`` to shortlist, a probe of the top 5 to decide.

A knob-conditioned library model is tried at several knob values (folded into a snapshot with
:func:`ampxfer_lib.transfer.init_from.fold_knobs`, which is exact) when the target has no knobs, and
used with the target's own knob values when their counts match. Lower scores are better.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ampxfer_lib.data.dataset import Dataset, load_dataset
from ampxfer_lib.errors import AmpxferError, ConfigError
from ampxfer_lib.fileio import PathLike
from ampxfer_lib.model.formats import load_model, save_model
from ampxfer_lib.training.losses import LossConfig, esr_numpy, make_loss
from ampxfer_lib.model.network import AmpLSTM
from ampxfer_lib.transfer.level_match import least_squares
from ampxfer_lib.model.weights import ModelWeights, expand_inputs, fold_knobs
from ampxfer_lib.training.tbptt import tbptt_batch, tbptt_windows


#: Zero-shot scores, cheapest signal first (all come from one pass of the model):
#: ``esr`` as it plays; ``esr_level_matched`` after the best output gain; ``esr_head_refit``
#: after refitting the dense layer by least squares on the model's own LSTM features (what
#: the first fine-tuning steps can reach without touching the LSTM; polarity included).
SCORES = ("esr", "esr_level_matched", "esr_head_refit")


@dataclass(frozen=True)
class RankConfig:
    """How models are scored. Times are seconds of audio at the data's rate."""

    probe_seconds: float = 6.0  # target training audio scored zero-shot, in probe_chunks chunks
    probe_chunks: int = 6
    warmup_seconds: float = 0.1  # played before each chunk, not scored (the LSTM settles)
    knob_values: Tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    score: str = "esr_level_matched"  # esr | esr_level_matched | esr_head_refit (see SCORES)
    finetune_top: int = 5  # fine-tune probe for the best N by the zero-shot score (0: off)
    finetune_seconds: float = 5.0  # training audio of the probe, as 0.5 s segments
    finetune_epochs: int = 2  # passes over it; each pass is ~22 weight updates (agam windows)
    finetune_lr: float = 5e-3
    eval_seconds: float = 6.0  # held-out validation audio that scores the probe
    threads: int = 1

    def __post_init__(self):
        if self.probe_seconds <= 0 or self.probe_chunks < 1 or self.warmup_seconds < 0:
            raise ConfigError("probe_seconds and probe_chunks must be positive")
        if self.finetune_top < 0 or self.finetune_epochs < 1 or self.finetune_seconds < 0.5:
            raise ConfigError("finetune_top >= 0, finetune_epochs >= 1 and finetune_seconds >= 0.5 are needed")
        if not self.knob_values or any(not 0 <= k <= 1 for k in self.knob_values):
            raise ConfigError("knob_values must be values in 0..1")
        if self.score not in SCORES:
            raise ConfigError(f"unknown score {self.score!r}; one of {', '.join(SCORES)}")

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- audio

@dataclass
class ProbeAudio:
    """Chunks of a split, batched: ``x`` (B, W+L, C), ``y`` (B, W+L); the first W are warm-up."""

    x: np.ndarray
    y: np.ndarray
    warmup: int
    knobs: List[Tuple[float, ...]]


def probe_audio(data: Dataset, split: str, seconds: float, chunks: int, warmup_seconds: float) -> ProbeAudio:
    """``chunks`` equal chunks per capture, spread evenly over the split's audio."""
    rate = data.sample_rate
    warm = int(round(warmup_seconds * rate))
    xs, ys, knobs = [], [], []
    for section in data.split(split):
        n = section.samples
        length = max(1, int(round(seconds * rate / chunks)))
        k = chunks
        if warm + length > n:
            length = max(1, n - warm)
            k = 1
        starts = np.linspace(0, n - warm - length, k).round().astype(int)
        for s in starts:
            xs.append(section.input[s:s + warm + length])
            ys.append(section.target[s:s + warm + length])
            knobs.append(section.knobs)
    # Captures of a split have equal lengths by construction; keep the batch rectangular anyway.
    m = min(len(y) for y in ys)
    return ProbeAudio(np.stack([x[:m] for x in xs]), np.stack([y[:m] for y in ys]), warm, knobs)


@torch.no_grad()
def _play(model, x: torch.Tensor) -> torch.Tensor:
    model.reset_state()
    out = model(x)[..., 0]
    model.reset_state()
    return out


def esr_scores(pred: np.ndarray, target: np.ndarray) -> Dict[str, float]:
    """Plain ESR, and ESR after the best output gain, of pooled signals (any equal shapes)."""
    p = pred.astype(np.float64).ravel()
    y = target.astype(np.float64).ravel()
    yy, pp, py = float(y @ y), float(p @ p), float(p @ y)
    if yy == 0:
        return {"esr": math.inf, "esr_level_matched": math.inf, "gain": 1.0}
    esr = esr_numpy(p, y)
    gain = py / pp if pp > 0 else 0.0
    matched = max(0.0, 1.0 - (py * py / (pp * yy) if pp > 0 else 0.0))
    return {"esr": esr, "esr_level_matched": matched, "gain": gain}


def refit_head(hidden: np.ndarray, x: np.ndarray, y: np.ndarray, skip: bool) -> Dict[str, object]:
    """Least-squares dense layer on LSTM features: ``y ~ x*skip + hidden @ w + b``.

    ``hidden`` (N, H), ``x``/``y`` (N,). Returns ``esr_head_refit`` (plain ESR of the refit
    output) and ``head`` ([w_1..w_H, b]). A tiny ridge keeps dead features harmless.
    """
    h = hidden.astype(np.float64)
    a = np.concatenate([h, np.ones((len(h), 1))], axis=1)
    r = y.astype(np.float64) - (x.astype(np.float64) if skip else 0.0)
    coef = least_squares(a, r, ridge=1e-9)
    pred = a @ coef + (x if skip else 0.0)
    yy = float(np.dot(y.astype(np.float64), y))
    esr = float(np.sum(np.square(y - pred))) / yy if yy > 0 else math.inf
    return {"esr_head_refit": esr, "head": coef.tolist()}


def zero_shot(weights: ModelWeights, audio: ProbeAudio) -> Dict[str, object]:
    """All zero-shot scores of ``weights`` (already shaped for the data) on probe audio."""
    model = AmpLSTM.from_weights(weights).eval()
    x = torch.from_numpy(np.ascontiguousarray(audio.x))
    with torch.no_grad():
        hidden, _ = model.rec(x)  # from a zero state, as the model plays a file
        pred = model.lin(hidden)[..., 0]
        if weights.config.skip:
            pred = pred + x[..., 0]
    w = audio.warmup
    scores: Dict[str, object] = dict(esr_scores(pred[:, w:].numpy(), audio.y[:, w:]))
    scores.update(refit_head(hidden[:, w:].reshape(-1, hidden.shape[-1]).numpy(), audio.x[:, w:, 0].ravel(),
                             audio.y[:, w:].ravel(), weights.config.skip))
    return scores


# --------------------------------------------------------------------------- fine-tune probe

def finetune_probe(weights: ModelWeights, train: ProbeAudio, evaluate: ProbeAudio, epochs: int = 2,
                   lr: float = 5e-3, segment_samples: int = 22050, warmup_samples: int = 200,
                   window: int = 1000) -> Dict[str, float]:
    """Fine-tune a copy of ``weights`` briefly (agam recipe, no shuffling) and score it.

    ``train``'s chunks are cut into ``segment_samples`` segments (one batch); every epoch is
    one :func:`~ampxfer_lib.training.tbptt.tbptt_batch`, the trainer's own step:
    ``warmup_samples`` without gradient, then one Adam step per ``window`` samples. Returns
    ``probe_esr`` (plain ESR on ``evaluate`` after the probe), ``probe_start_esr`` (before)
    and ``probe_updates``.
    """
    model = AmpLSTM.from_weights(weights)
    x = train.x[:, train.warmup:]
    y = train.y[:, train.warmup:]
    n = x.shape[1] // segment_samples
    if n == 0:
        segment_samples, n = x.shape[1], 1
    # (chunks, n * L, C) -> segments (S, L, C) -> time-major (L, C, S), as the trainer holds them
    xs = x[:, :n * segment_samples].reshape(-1, segment_samples, x.shape[-1]).transpose(1, 2, 0)
    ys = y[:, :n * segment_samples].reshape(-1, segment_samples).T
    xs, ys = torch.from_numpy(np.ascontiguousarray(xs)), torch.from_numpy(np.ascontiguousarray(ys))
    ex = torch.from_numpy(np.ascontiguousarray(evaluate.x))
    w = evaluate.warmup
    before = esr_scores(_play(model, ex).numpy()[:, w:], evaluate.y[:, w:])["esr"]
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = make_loss(LossConfig())
    windows = tbptt_windows(segment_samples, warmup_samples, window)
    if windows:
        for _ in range(epochs):
            tbptt_batch(model, opt, loss_fn, xs, ys, warmup_samples, windows)
    after = esr_scores(_play(model, ex).numpy()[:, w:], evaluate.y[:, w:])["esr"]
    return {"probe_esr": after if math.isfinite(after) else math.inf, "probe_start_esr": before,
            "probe_updates": epochs * len(windows)}


# --------------------------------------------------------------------------- ranking

def library_models(library: PathLike) -> List[Path]:
    """The model files of ``library``: a model library's indexed models (its ``index.json`` is
    no model), else every ``*.json`` under the folder (recursively), sorted."""
    from ampxfer_lib.library.index import INDEX, find_models

    root = Path(library)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such folder; --library takes a folder of model .json files")
    if (root / INDEX).is_file():
        paths = [m.path for m in find_models([root])]
        if not paths:
            raise ConfigError(f"{root / INDEX}: the library indexes no model files")
        return paths
    paths = sorted(p for p in root.rglob("*.json") if p.is_file() and not p.name.startswith("."))
    if not paths:
        raise ConfigError(f"{root}: holds no .json model files")
    return paths


def candidates(weights: ModelWeights, data: Dataset, knob_values: Sequence[float]) -> List[Tuple[Tuple[float, ...], ModelWeights]]:
    """The ways ``weights`` can start a model for ``data``: [(folded knobs, weights shaped for data)].

    A snapshot starts any data (widened with zero knob weights); a conditioned model with
    the data's knob count is used as it is; one with knobs for snapshot data is folded at
    every combination of ``knob_values``. Raises ConfigError when the shapes cannot meet.
    """
    k_model, k_data = weights.config.num_knobs, data.num_knobs
    if weights.config.sample_rate != data.sample_rate:
        raise ConfigError(f"runs at {weights.config.sample_rate} Hz, the data at {data.sample_rate} Hz")
    if k_model == 0:
        return [((), weights if k_data == 0 else expand_inputs(weights, data.input_size))]
    if k_model == k_data:
        return [((), weights)]
    if k_data == 0:
        if len(knob_values) ** k_model > 1000:
            raise ConfigError(f"has {k_model} knobs: too many combinations to try")
        return [(tuple(k), fold_knobs(weights, k)) for k in itertools.product(knob_values, repeat=k_model)]
    raise ConfigError(f"takes {k_model} knob(s) but the data have {k_data}")


def rank_library(library: Union[PathLike, Sequence[PathLike]], data: Union[PathLike, Dataset],
                 config: RankConfig = RankConfig(), progress: bool = True,
                 log: Optional[Callable[[str], None]] = None) -> List[dict]:
    """Score every model of ``library`` (a folder, or a list of model files) for ``data``.

    Returns dicts best first: ``model`` (path), ``score`` (lower is better), ``scored_by``,
    ``rank`` (1-based), ``knobs`` (folded knob values, [] if none), ``esr``,
    ``esr_level_matched``, ``gain``, ``hidden_size``, ``input_size`` and, for probed models,
    ``probe_esr``/``probe_start_esr``/``probe_updates``. Models that cannot start a model
    for the data (unreadable, other rate, knob mismatch) follow with ``score`` None and
    ``skipped`` giving the reason.
    """
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    paths = library_models(library) if isinstance(library, (str, os.PathLike)) else [Path(p) for p in library]
    old_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _rank(paths, ds, config, progress, log or (lambda m: None))
    finally:
        torch.set_num_threads(old_threads)


def _rank(paths: Sequence[Path], ds: Dataset, config: RankConfig, progress: bool, log) -> List[dict]:
    audio = probe_audio(ds, "train", config.probe_seconds, config.probe_chunks, config.warmup_seconds)
    key = config.score
    scored, skipped = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paths), unit="model", desc="ranking", leave=False)
    try:
        for path in paths:
            try:
                weights = load_model(path)
                options = candidates(weights, ds, config.knob_values)
            except AmpxferError as exc:
                msg = str(exc)
                skipped.append({"model": str(path), "score": None, "skipped": msg.split(": ", 1)[-1]
                                if msg.startswith(str(path)) else msg})
                if bar is not None:
                    bar.update(1)
                continue
            best = None
            for knobs, w in options:
                s = zero_shot(w, audio)
                if best is None or s[key] < best[1][key]:
                    best = (knobs, s)
            knobs, s = best
            scored.append({"model": str(path), "score": s[key], "scored_by": key, "knobs": list(knobs),
                           "esr": s["esr"], "esr_level_matched": s["esr_level_matched"], "gain": s["gain"],
                           "esr_head_refit": s["esr_head_refit"], "head": s["head"],
                           "hidden_size": weights.config.hidden_size, "input_size": weights.config.input_size})
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    scored.sort(key=lambda e: (e["score"], e["model"]))

    if config.finetune_top and scored:
        train_audio = probe_audio(ds, "train", config.finetune_seconds, max(1, int(config.finetune_seconds / 0.5)),
                                  config.warmup_seconds)
        eval_audio = probe_audio(ds, "val", config.eval_seconds, config.probe_chunks, config.warmup_seconds)
        seg = int(round(0.5 * ds.sample_rate))
        top = scored[:config.finetune_top]
        for entry in top:
            log(f"fine-tune probe: {Path(entry['model']).name}")
            w = starting_model(entry, ds)
            entry.update(finetune_probe(w, train_audio, eval_audio, config.finetune_epochs, config.finetune_lr,
                                        segment_samples=seg))
            entry["score"], entry["scored_by"] = entry["probe_esr"], "finetune_probe"
        top.sort(key=lambda e: (e["score"], e["model"]))
        scored = top + scored[config.finetune_top:]
    for i, entry in enumerate(scored):
        entry["rank"] = i + 1
    return scored + skipped


def starting_model(entry: dict, data: Optional[Union[PathLike, Dataset]] = None,
                   refit_head: bool = False) -> ModelWeights:
    """The weights a ranking entry stands for: folded at its knobs, widened for the data's knobs.

    ``refit_head``: with the entry's least-squares dense layer (``head``) instead of the
    model's own, so the start already matches the target's level and polarity as far as the
    dense layer can.
    """
    weights = load_model(entry["model"])
    if entry.get("knobs"):
        weights = fold_knobs(weights, entry["knobs"])
    if refit_head:
        head = np.asarray(entry["head"], dtype=np.float32)
        params = dict(weights.params)
        params["lin.weight"] = head[None, :-1].copy()
        params["lin.bias"] = head[-1:].copy()
        weights = ModelWeights(weights.config, params)
    if data is not None:
        ds = data if isinstance(data, Dataset) else load_dataset(data)
        if weights.config.input_size == 1 and ds.input_size > 1:
            weights = expand_inputs(weights, ds.input_size)
    return weights


def export_starting_model(entry: dict, path: PathLike, refit_head: bool = False) -> Path:
    """Write a ranking entry's starting model (knobs folded) as a model JSON for --init-from."""
    path = Path(path)
    if path.exists() and os.path.realpath(path) == os.path.realpath(entry["model"]):
        raise ConfigError(f"{path}: is the library model itself; choose another file name")
    save_model(starting_model(entry, refit_head=refit_head), path)
    return path
