"""Study results: run folders -> results.csv, the article's Table 1, loss-curve figures.

Everything here reads run folders (``summary.json``, ``history.json``) and never trains, so
the command line, the notebooks and a reader of someone else's study folder get the same
tables and figures from the same functions. Figures are plain matplotlib ``Figure`` objects
(no pyplot state, safe under the Agg backend and in threads); notebooks display them as
they are.

Time to quality, per (pair, data size, seed): scratch's best validation loss is the bar;
the transfer run reaches it at the first validation (the starting model's, epoch 0,
included) whose loss is at or below it. Times are the runs' own training clocks
(``elapsed_s`` in history.json, validation included), so the ratio compares like with like.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ampxfer_lib.training import checkpoint as ckpt
from ampxfer_lib.fileio import PathLike, atomic_write_bytes, atomic_write_text
from ampxfer_lib.study.plan import read_plan
from ampxfer_lib.training.callbacks import Callback

#: results.csv columns, in order.
RESULT_COLUMNS = ("pair", "target", "init", "data", "train_seconds_audio", "seed", "initial_val_loss",
                  "first_val_loss", "best_val_loss", "best_epoch", "epochs", "train_seconds", "test_esr",
                  "status", "stop_reason", "run_id")


@dataclass
class RunResult:
    """One run as a study row. ``init`` is scratch, transfer or source."""

    run_id: str
    pair: str
    target: str
    init: str
    data: str
    seed: int
    run_dir: Path
    summary: Optional[dict]
    history: List[dict] = field(default_factory=list)

    def row(self) -> dict:
        s = self.summary or {}
        row = {"pair": self.pair, "target": self.target, "init": self.init, "data": self.data, "seed": self.seed,
               "run_id": self.run_id}
        for key in ("train_seconds_audio", "initial_val_loss", "first_val_loss", "best_val_loss", "best_epoch",
                    "epochs", "train_seconds", "test_esr", "stop_reason"):
            row[key] = s.get(key)
        row["status"] = s.get("status", "incomplete" if self.history else "not started")
        return row

    def validations(self, include_start: bool = True) -> List[Tuple[int, float, float]]:
        """(epoch, val_loss, elapsed_s) of every validation, in order."""
        return validations(self.history, include_start)


def validations(history: Sequence[Mapping], include_start: bool = True) -> List[Tuple[int, float, float]]:
    return [(int(h["epoch"]), float(h["val_loss"]), float(h.get("elapsed_s") or 0.0)) for h in history
            if h.get("val_loss") is not None and (include_start or h["epoch"] > 0)]


def load_results(study_dir: PathLike, specs=None) -> List[RunResult]:
    """Every (run, pair) of a study folder: one RunResult per pair a run serves."""
    if specs is None:
        _, specs = read_plan(study_dir)
    out = []
    for spec in specs:
        run_dir = Path(spec.run_dir)
        summary = ckpt.read_summary(run_dir) if run_dir.is_dir() else None
        history = ckpt.read_history(run_dir) if run_dir.is_dir() else []
        for pair in spec.pairs:
            out.append(RunResult(spec.run_id, pair, spec.target, spec.role, spec.data_size, spec.seed, run_dir,
                                 summary, history))
    return out


def results_table(results: Iterable[RunResult]) -> List[dict]:
    """results.csv rows (scratch and transfer runs; source runs are not compared)."""
    return [r.row() for r in results if r.init in ("scratch", "transfer")]


def results_csv(rows: Sequence[Mapping]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(RESULT_COLUMNS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in RESULT_COLUMNS})
    return buf.getvalue()


def time_to_quality(transfer_history: Sequence[Mapping], scratch_history: Sequence[Mapping]) -> dict:
    """When transfer first reaches scratch's best validation loss, and how that compares.

    Returns ``target_loss`` (scratch's best, epochs > 0), ``scratch_epoch``/``scratch_seconds``
    (when scratch got there), ``transfer_epoch``/``transfer_seconds`` (None if never
    reached), ``seconds_ratio`` and ``epochs_ratio`` (transfer / scratch; None if not reached
    or scratch's time is 0).
    """
    sv = validations(scratch_history, include_start=False)
    out = {"target_loss": None, "scratch_epoch": None, "scratch_seconds": None, "transfer_epoch": None,
           "transfer_seconds": None, "seconds_ratio": None, "epochs_ratio": None, "reached": False}
    if not sv:
        return out
    best = min(v for _, v, _ in sv)
    s_epoch, _, s_sec = next(x for x in sv if x[1] == best)
    out.update(target_loss=best, scratch_epoch=s_epoch, scratch_seconds=s_sec)
    hit = next((x for x in validations(transfer_history) if x[1] <= best), None)
    if hit is None:
        return out
    out.update(transfer_epoch=hit[0], transfer_seconds=hit[2], reached=True,
               seconds_ratio=hit[2] / s_sec if s_sec > 0 else None,
               epochs_ratio=hit[0] / s_epoch if s_epoch > 0 else None)
    return out


def _ratio(a, b) -> Optional[float]:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _fmt(x, kind: str = "loss") -> str:
    """loss: 4 significant digits; ratio: 3 decimals; seconds: 1 decimal; count: integer."""
    if x is None:
        return "–"
    x = float(x)
    if math.isinf(x) or math.isnan(x):
        return str(x)
    if kind == "count":
        return str(int(x)) if x == int(x) else f"{x:.1f}"
    if kind == "ratio":
        return f"{x:.3f}"
    if kind == "seconds":
        return f"{x:.1f}"
    return f"{x:.4g}"


_TABLE_FIELDS = ("initial_val_loss", "first_val_loss", "best_val_loss", "best_epoch", "epochs", "train_seconds",
                 "test_esr")


def table1_rows(results: Sequence[RunResult]) -> List[dict]:
    """Per (pair, data size): each arm's means over seeds, transfer/scratch ratios, time to quality.

    Each dict: pair, target, data, seeds, train_seconds_audio, ``scratch``/``transfer`` (field ->
    mean over seeds of summary values), ``ratios`` (field -> transfer mean / scratch mean), and
    ``ttq`` (list of :func:`time_to_quality` dicts, one per seed, with ``seed``).
    """
    groups: Dict[Tuple[str, str], Dict[str, Dict[int, RunResult]]] = {}
    pair_order: Dict[str, int] = {}
    for r in results:
        if r.init not in ("scratch", "transfer"):
            continue
        pair_order.setdefault(r.pair, len(pair_order))
        groups.setdefault((r.pair, r.data), {"scratch": {}, "transfer": {}})[r.init][r.seed] = r
    rows = []
    data_order = {"full": 0, "limited": 1}
    for (pair, data), arms in sorted(groups.items(), key=lambda kv: (pair_order[kv[0][0]], data_order.get(kv[0][1], 2))):
        seeds = sorted(set(arms["scratch"]) & set(arms["transfer"]))
        row = {"pair": pair, "data": data, "seeds": seeds,
               "target": next(iter(arms["transfer"].values() or arms["scratch"].values())).target}
        for arm in ("scratch", "transfer"):
            runs = [arms[arm][s] for s in seeds if arms[arm][s].summary]
            row[arm] = {k: _mean(r.summary.get(k) for r in runs) for k in _TABLE_FIELDS}
            row[arm]["n"] = len(runs)
        audio = [arms[a][s].summary.get("train_seconds_audio") for a in arms for s in seeds if arms[a][s].summary]
        row["train_seconds_audio"] = _mean(audio)
        row["ratios"] = {k: _ratio(row["transfer"][k], row["scratch"][k]) for k in _TABLE_FIELDS}
        row["ttq"] = [dict(time_to_quality(arms["transfer"][s].history, arms["scratch"][s].history), seed=s)
                      for s in seeds]
        rows.append(row)
    return rows


def table1_markdown(results: Sequence[RunResult], title: str = "Table 1: training from scratch vs transfer learning",
                    note: str = "") -> str:
    """The article's Table 1, with transfer/scratch ratios and time to quality, as Markdown."""
    rows = table1_rows(results)
    lines = [f"# {title}", ""]
    if note:
        lines += [note, ""]
    multi = any(len(r["seeds"]) > 1 for r in rows)
    lines += ["Validation losses are the training loss (0.75 ESR + 0.25 DC for `agam`) on the target's "
              "validation audio; start = the starting model before any training (epoch 0); test ESR is "
              "the plain ESR of the best model on the test audio." + (" Values are means over seeds." if multi else ""),
              "",
              "| pair | data | train audio (s) | init | start loss | first val loss | best val loss | best epoch | "
              "epochs | train time (s) | test ESR |" + (" seeds |" if multi else ""),
              "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if multi else "")]
    for r in rows:
        for arm in ("scratch", "transfer"):
            a = r[arm]
            lines.append(f"| {r['pair']} | {r['data']} | {_fmt(r['train_seconds_audio'], 'seconds')} | {arm} | "
                         f"{_fmt(a['initial_val_loss'])} | {_fmt(a['first_val_loss'])} | {_fmt(a['best_val_loss'])} | "
                         f"{_fmt(a['best_epoch'], 'count')} | {_fmt(a['epochs'], 'count')} | {_fmt(a['train_seconds'], 'seconds')} | "
                         f"{_fmt(a['test_esr'])} |" + (f" {a['n']} |" if multi else ""))
    lines += ["", "## Transfer / scratch (below 1: transfer is lower, i.e. better or faster)", "",
              "| pair | data | start loss | first val loss | best val loss | test ESR | train time | epochs |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        q = r["ratios"]
        lines.append(f"| {r['pair']} | {r['data']} | {_fmt(q['initial_val_loss'], 'ratio')} | {_fmt(q['first_val_loss'], 'ratio')} | "
                     f"{_fmt(q['best_val_loss'], 'ratio')} | {_fmt(q['test_esr'], 'ratio')} | {_fmt(q['train_seconds'], 'ratio')} | "
                     f"{_fmt(q['epochs'], 'ratio')} |")
    lines += ["", "## Time to quality: when transfer reaches scratch's best validation loss", "",
              "| pair | data | seed | scratch best loss | scratch: epoch, time (s) | transfer: epoch, time (s) | "
              "time ratio | epochs ratio |",
              "|---|---|---:|---:|---|---|---:|---:|"]
    for r in rows:
        for t in r["ttq"]:
            if t["target_loss"] is None:
                continue
            reached = (f"{t['transfer_epoch']}, {_fmt(t['transfer_seconds'], 'seconds')}" if t["reached"]
                       else "not reached")
            lines.append(f"| {r['pair']} | {r['data']} | {t['seed']} | {_fmt(t['target_loss'])} | "
                         f"{t['scratch_epoch']}, {_fmt(t['scratch_seconds'], 'seconds')} | {reached} | "
                         f"{_fmt(t['seconds_ratio'], 'ratio')} | {_fmt(t['epochs_ratio'], 'ratio')} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- figures

_COLORS = {"scratch": "#d62728", "transfer": "#1f77b4", "source": "#7f7f7f"}


def plot_val_curves(curves: Mapping[str, Sequence[Mapping]], title: str = "", ax=None, log_y: bool = True,
                    mark: Optional[float] = None):
    """Validation loss vs epoch, one line per ``curves`` entry (label -> history list).

    Labels starting with ``scratch``/``transfer`` get that arm's colour. ``mark`` draws a
    dashed horizontal line (e.g. scratch's best loss). Returns the matplotlib Figure.
    """
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=(6.4, 4.0), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    for label, history in curves.items():
        pts = validations(history)
        if not pts:
            continue
        color = next((c for k, c in _COLORS.items() if label.startswith(k)), None)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=label, color=color,
                alpha=0.9 if label.endswith("seed 0") or "seed" not in label else 0.55)
    if mark is not None:
        ax.axhline(mark, color=_COLORS["scratch"], linestyle="--", linewidth=0.8, label="scratch best")
    if log_y:
        ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss")
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    return fig


def figure_png(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (for notebooks: ``IPython.display.Image(data=...)``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figure(fig, stem: PathLike, formats: Sequence[str] = ("png", "svg")) -> List[Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically; returns the paths."""
    paths = []
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=120)
        path = Path(f"{stem}.{fmt}")
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


def study_figures(results: Sequence[RunResult]) -> Dict[str, object]:
    """One figure per (pair, data size): {"<pair>_<data>": Figure}."""
    groups: Dict[Tuple[str, str], List[RunResult]] = {}
    for r in results:
        if r.init in ("scratch", "transfer") and r.history:
            groups.setdefault((r.pair, r.data), []).append(r)
    figs = {}
    for (pair, data), runs in groups.items():
        seeds = sorted({r.seed for r in runs})
        curves = {}
        for r in sorted(runs, key=lambda r: (r.init, r.seed)):
            curves[r.init if len(seeds) == 1 else f"{r.init} seed {r.seed}"] = r.history
        mark = None
        scratch = [r for r in runs if r.init == "scratch" and r.seed == seeds[0]]
        if scratch and validations(scratch[0].history, include_start=False):
            mark = min(v for _, v, _ in validations(scratch[0].history, include_start=False))
        target = runs[0].target
        audio = next((r.summary.get("train_seconds_audio") for r in runs if r.summary), None)
        title = f"{pair} ({target}), {data} data" + (f", {audio:.0f} s" if audio else "")
        figs[f"{pair}_{data}"] = plot_val_curves(curves, title=title, mark=mark)
    return figs


def write_report(results: Sequence[RunResult], out_dir: PathLike, figures: bool = True,
                 note: str = "") -> dict:
    """Write results.csv, table1.md and figures/ into a study folder; returns their paths."""
    out = Path(out_dir)
    csv_path, table_path = out / "results.csv", out / "table1.md"
    atomic_write_text(csv_path, results_csv(results_table(results)))
    atomic_write_text(table_path, table1_markdown(results, note=note))
    fig_paths: List[Path] = []
    if figures:
        for stem, fig in study_figures(results).items():
            fig_paths += save_figure(fig, out / "figures" / stem)
    return {"results_csv": csv_path, "table1": table_path, "figures": fig_paths}


# --------------------------------------------------------------------------- live plot

def in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


class LiveLossPlot(Callback):
    """Training callback: the validation curve, redrawn in place after every validation.

    ``reference``: other runs' histories drawn alongside (e.g. ``{"scratch": history}``).
    In a notebook the figure is shown once and updated through its display handle; outside
    one nothing is displayed, and ``figure`` still holds the up-to-date plot.
    """

    def __init__(self, reference: Optional[Mapping[str, Sequence[Mapping]]] = None, label: str = "this run",
                 title: str = "", display: Optional[bool] = None):
        self.reference = dict(reference or {})
        self.label = label
        self.title = title
        self.display = in_notebook() if display is None else display
        self.figure = None
        self.history: List[dict] = []
        self._handle = None

    def _draw(self) -> None:
        curves = dict(self.reference)
        curves[self.label] = self.history
        if self.figure is None:
            self.figure = plot_val_curves(curves, title=self.title)
        else:
            ax = self.figure.axes[0]
            ax.clear()
            plot_val_curves(curves, title=self.title, ax=ax)
        if self.display:
            # A PNG rather than the Figure itself: a bare Figure (no pyplot) only renders where
            # the inline backend happens to be active; an image shows everywhere (Colab too).
            from IPython.display import Image, display

            image = Image(data=figure_png(self.figure), format="png")
            if self._handle is None:
                self._handle = display(image, display_id=True)
            else:
                self._handle.update(image)

    def on_start(self, run):
        self.history = list(run.history)
        if not self.title:
            self.title = Path(run.out_dir).name
        self._draw()

    def on_epoch(self, run, record):
        self.history.append(record)
        if record.get("val_loss") is not None:
            self._draw()

    def on_end(self, run, summary):
        self.history = list(run.history)
        self._draw()
