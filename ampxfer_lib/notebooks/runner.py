"""Run the notebook suite from the command line (``make demo``, ``make smoke``, CI).

Each notebook is executed top to bottom in a fresh kernel by nbclient. Parameters are
injected papermill-style: a cell tagged ``injected-parameters`` is inserted right after the
cell tagged ``parameters`` and overrides its values, so a notebook's defaults stay what a
user sees in Colab. The executed copy (outputs included, also when a cell fails) is written
to the output folder.

The suite shares one work folder between notebooks 01-04, which hand work to each other
through files only (01 writes prepared data, 02 and 03 train into a study folder, 04 reads the
runs); notebook 05 gets a folder of its own inside it.

While a notebook runs, :class:`CellProgress` reports to a ``progress`` callable (the command
line: stderr) which cell is executing, the lines the cell prints as they arrive, and a line
every :data:`HEARTBEAT_SECONDS` while a cell runs silently (training in worker processes
prints only when a run finishes), so a long run never looks hung. The executed copy is the
same with or without it.

The suite's notebooks are found in :data:`NOTEBOOK_DIR`, the ``notebooks/`` folder of the
source checkout this package runs from; an installed package has no such folder, so pass
``folder=`` (the command line's ``--notebooks DIR``). The command line is
:mod:`ampxfer_lib.cli.notebooks` (``python -m ampxfer_lib.notebooks``).
"""

from __future__ import annotations

import contextlib
import copy
import html
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

from ampxfer_lib.errors import AmpxferError, ConfigError
from ampxfer_lib.fileio import PathLike, atomic_write_text
from ampxfer_lib.notebooks.suite import SMOKE_ENV
from ampxfer_lib.paths import checkout_dir

#: The suite's notebooks in a source checkout (the default ``folder``).
NOTEBOOK_DIR = checkout_dir("notebooks")
#: The suite, in the order the notebooks depend on each other.
SUITE = ("01_data_prep.ipynb", "02_baseline_training.ipynb", "03_transfer_training.ipynb",
         "04_ab_listening.ipynb", "05_conditioned_transfer.ipynb")
#: Notebooks that keep their files in a sub-folder of the suite's work folder.
OWN_FOLDER = {"05_conditioned_transfer.ipynb": "05_conditioned"}
#: Training budgets a notebook's BUDGET parameter accepts (see the notebooks' prose).
BUDGETS = ("demo", "article")
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
#: nbclient's default tag for code cells it does not execute.
SKIP_TAG = "skip-execution"
#: Seconds of silence from a running cell before the progress says it is still running.
HEARTBEAT_SECONDS = 30.0
#: Progress lines are cut to this many characters (a cell's label, a printed line).
PROGRESS_WIDTH = 100
#: Characters of an unfinished printed line kept for the progress (its latest redraw fits).
PARTIAL_CHARS = 4096


class NotebookError(AmpxferError):
    """A notebook cell raised; the executed copy shows where."""


@dataclass
class NotebookRun:
    name: str
    source: Path
    executed: Path
    seconds: float


# --------------------------------------------------------------------------- notebook files

def read_notebook(path: PathLike):
    """A notebook file as an nbformat v4 node (ConfigError naming the file when it is unreadable)."""
    import nbformat

    try:
        return nbformat.read(str(path), as_version=4)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such notebook") from None
    except Exception as exc:  # nbformat's validation and JSON errors
        raise ConfigError(f"{path}: not a readable notebook ({type(exc).__name__}: {exc})") from None


def write_notebook(nb, path: PathLike) -> None:
    """Write ``nb`` to ``path`` atomically."""
    import nbformat

    atomic_write_text(path, nbformat.writes(nb))


def find_notebooks(names: Optional[Sequence[str]] = None, folder: PathLike = NOTEBOOK_DIR) -> List[Path]:
    """Suite notebooks by file name or number prefix ("01", "03_transfer"); all when ``names`` is empty."""
    folder = Path(folder)
    by_path = bool(names) and all(Path(n).suffix == ".ipynb" for n in names)
    if not folder.is_dir() and not by_path:
        from ampxfer_lib import __version__

        raise ConfigError(f"{folder}: no notebooks folder; ampxfer installed as a package (from its wheel) "
                          f"carries no notebooks: unpack ampxfer-{__version__}.zip (from `make dist`), "
                          "`pip install -e` its folder and run from there, or give notebook files by path")
    if not names:
        return [folder / n for n in SUITE if (folder / n).exists()]
    out = []
    for name in names:
        p = Path(name)
        if p.suffix == ".ipynb" and p.exists():
            out.append(p)
            continue
        hits = [folder / n for n in SUITE if n.startswith(name)]
        if len(hits) != 1:
            raise ConfigError(f"{name!r}: names {'no' if not hits else 'several'} notebook(s); one of {', '.join(SUITE)}")
        out.append(hits[0])
    return out


def parameters_cell(nb) -> int:
    """Index of the one code cell tagged ``parameters``."""
    hits = [i for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])]
    if len(hits) != 1:
        raise ConfigError(f"a notebook needs exactly one code cell tagged {PARAMETERS_TAG!r}, found {len(hits)}")
    return hits[0]


def parameter_names(nb) -> List[str]:
    """Names assigned at the top level of the parameters cell."""
    import ast

    src = nb.cells[parameters_cell(nb)].source
    names = []
    for node in ast.parse(src).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def inject_parameters(nb, params: Dict[str, object]):
    """A copy of ``nb`` with a cell setting ``params`` right after the parameters cell.

    Raises ConfigError for a name the parameters cell does not define (a typo would
    otherwise be ignored silently).
    """
    import nbformat

    nb = copy.deepcopy(nb)
    index = parameters_cell(nb)
    known = set(parameter_names(nb))
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"unknown notebook parameter(s) {', '.join(unknown)}; the notebook has {', '.join(sorted(known))}")
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    if params:
        lines = ["# Parameters injected by ampxfer_lib.notebooks"] + [f"{k} = {v!r}" for k, v in params.items()]
        cell = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": [INJECTED_TAG]})
        nb.cells.insert(index + 1, cell)
    return nb


def strip_outputs(nb):
    """``nb`` without outputs, execution counts and widget state (what is committed)."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in ("execution", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
    nb.metadata.pop("widgets", None)
    return nb


def has_outputs(nb) -> bool:
    return any(c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None) for c in nb.cells)


def setup_cell(nb) -> int:
    """Index of the first code cell (the Colab set-up cell)."""
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code":
            return i
    raise ConfigError("the notebook has no code cell")


def problems(path: PathLike) -> List[str]:
    """What is wrong with a committed notebook: outputs, parameters cell, set-up cell."""
    from ampxfer_lib.notebooks.colab import setup_cell_source

    nb = read_notebook(path)
    found = []
    if has_outputs(nb):
        found.append(f"{path}: has outputs or execution counts; run `python -m ampxfer_lib.notebooks strip {path}`")
    try:
        parameters_cell(nb)
    except ConfigError as exc:
        found.append(f"{path}: {exc}")
    if nb.cells[setup_cell(nb)].source != setup_cell_source():
        found.append(f"{path}: the first code cell is not the Colab set-up cell of ampxfer_lib.notebooks.colab; run "
                     "`python -m ampxfer_lib.notebooks sync`")
    return found


def sync_setup_cell(path: PathLike) -> bool:
    """Make the first code cell the canonical Colab set-up cell; True if the file changed."""
    from ampxfer_lib.notebooks.colab import setup_cell_source

    nb = read_notebook(path)
    cell = nb.cells[setup_cell(nb)]
    if cell.source == setup_cell_source():
        return False
    cell.source = setup_cell_source()
    write_notebook(nb, path)
    return True


# --------------------------------------------------------------------------- progress

def executed_cells(nb) -> List[int]:
    """Indexes of the cells nbclient executes: code cells with source, not tagged to skip."""
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()
            and SKIP_TAG not in c.get("metadata", {}).get("tags", [])]


def cell_label(source: str, width: int = 60) -> str:
    """A cell's first non-blank line, without a leading comment sign, cut to ``width``."""
    for line in source.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return _cut(line, width)
    return ""


def section_titles(nb) -> Dict[int, str]:
    """Cell index -> the last markdown heading above it ("1. The recordings"), where there is one."""
    titles: Dict[int, str] = {}
    title = ""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    title = line.lstrip("#").strip()
        elif title:
            titles[i] = title
    return titles


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def _plain(markup: str) -> str:
    """The text of a widget's HTML value, spaces collapsed (tqdm pads with figure spaces)."""
    return " ".join(html.unescape(re.sub(r"<[^>]*>", "", str(markup))).replace("\u2007", " ").split())


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class CellProgress:
    """Progress lines for one notebook run, for someone waiting at a terminal.

    ``cell_started``/``cell_finished`` bracket each executed cell (``cell i/n (section): label``:
    the markdown heading above it and its first line);
    ``stream`` takes the text a cell prints, in whatever pieces the kernel sends it, and
    passes on each complete line (``    | line``); ``widget`` takes the kernel's widget
    messages, to follow tqdm's notebook progress bars. A cell silent for ``heartbeat`` seconds
    gets ``cell i/n still running, T: what shows`` (the last partial line, e.g. a text progress
    bar redrawn with carriage returns, and the unfinished progress bars: ``study: 33% 2/6
    [00:40<01:20, 20.00s/run]``). ``log`` may be called from the heartbeat's thread;
    ``close()`` stops that thread.
    """

    def __init__(self, nb, log: Callable[[str], None], heartbeat: float = HEARTBEAT_SECONDS,
                 width: int = PROGRESS_WIDTH):
        cells = executed_cells(nb)
        self.number = {index: k for k, index in enumerate(cells, 1)}
        self.section = section_titles(nb)
        self.total = len(cells)
        self.log = log
        self.heartbeat = heartbeat
        self.width = width
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._cell: Optional[int] = None  # index of the running cell
        self._started = 0.0
        self._last_line = 0.0
        self._partial: Dict[str, str] = {}  # stream name -> text after its last newline
        self._widgets: Dict[str, dict] = {}  # comm id -> the state keys a progress bar needs
        self._closed = False
        self._thread: Optional[threading.Thread] = None

    def cell_started(self, cell_index: int, source: str) -> None:
        with self._lock:
            self._cell = cell_index
            self._started = self._last_line = time.monotonic()
            self._partial = {}
            self._widgets = {}  # a cell's bars are its own; an abandoned one must not linger
            section, label = self.section.get(cell_index), cell_label(source)
            # The heading says where in the notebook; the first line, what the cell does.
            self._say(f"  cell {self.number.get(cell_index, '?')}/{self.total}"
                      + (f" ({_cut(section, 40)})" if section else "") + (f": {label}" if label else ""))
            if self._thread is None and self.heartbeat > 0:
                self._thread = threading.Thread(target=self._beat, name="ampxfer-notebook-progress", daemon=True)
                self._thread.start()
            self._wake.notify_all()

    def stream(self, text: str, name: str = "stdout") -> None:
        with self._lock:
            lines = (self._partial.get(name, "") + text).split("\n")
            # A text bar redrawn for hours never ends its line: its last draw is all that counts.
            self._partial[name] = lines.pop()[-PARTIAL_CHARS:]
            for line in lines:
                self._line(line)

    def widget(self, msg_type: str, comm_id: str, state: Optional[dict]) -> None:
        """A ``comm_open``/``comm_msg``/``comm_close`` of the kernel's widgets."""
        with self._lock:
            if msg_type == "comm_close":
                self._widgets.pop(comm_id, None)
            elif state:
                kept = {k: v for k, v in state.items() if k in ("_model_name", "value", "max", "children")}
                self._widgets.setdefault(comm_id, {}).update(kept)

    def bars(self) -> List[str]:
        """The text of each unfinished tqdm notebook bar (an HBox of HTML, progress, HTML)."""
        with self._lock:
            return self._bars()

    def _bars(self) -> List[str]:
        found = []
        for state in self._widgets.values():
            children = state.get("children")
            if state.get("_model_name") != "HBoxModel" or not isinstance(children, list) or len(children) != 3:
                continue
            left, bar, right = (self._widgets.get(str(c).replace("IPY_MODEL_", "", 1), {}) for c in children)
            if not str(bar.get("_model_name", "")).endswith("ProgressModel"):
                continue
            if not bar.get("value", 0) < bar.get("max", 0):  # finished, or no total to show
                continue
            text = " ".join(t for t in (_plain(left.get("value", "")), _plain(right.get("value", ""))) if t)
            if text:
                found.append(text)
        return found

    def cell_finished(self, cell_index: int) -> None:
        with self._lock:
            for rest in self._partial.values():
                if rest:
                    self._line(rest)
            self._partial = {}
            self._cell = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._cell = None
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _line(self, line: str) -> None:
        # A text progress bar redraws itself with carriage returns: what shows is the last draw.
        line = line.rstrip("\r").rsplit("\r", 1)[-1].rstrip()
        if line:
            self._say(f"    | {line}")
            self._last_line = time.monotonic()

    def _say(self, line: str) -> None:
        self.log(_cut(line, self.width))

    def _beat(self) -> None:
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                due = self._last_line + self.heartbeat
                if self._cell is None or now < due:
                    self._wake.wait(timeout=None if self._cell is None else due - now)
                    continue
                partial = [p.rsplit("\r", 1)[-1].strip() for p in self._partial.values()]
                shown = "; ".join([p for p in partial if p] + self._bars())
                self._say(f"  cell {self.number.get(self._cell, '?')}/{self.total} still running, "
                          f"{_duration(now - self._started)}" + (f": {shown}" if shown else ""))
                self._last_line = now


def _progress_client(nb, progress: Optional[CellProgress], **kw):
    """An nbclient NotebookClient for ``nb`` that tells ``progress`` what the kernel does."""
    from nbclient import NotebookClient

    if progress is None:
        return NotebookClient(nb, **kw)

    class ProgressClient(NotebookClient):
        def output(self, outs, msg, display_id, cell_index):
            out = super().output(outs, msg, display_id, cell_index)
            if msg["msg_type"] == "stream":
                progress.stream(msg["content"].get("text", ""), msg["content"].get("name", "stdout"))
            return out

        def handle_comm_msg(self, outs, msg, cell_index):
            super().handle_comm_msg(outs, msg, cell_index)
            content = msg["content"]
            progress.widget(msg["msg_type"], content.get("comm_id", ""), (content.get("data") or {}).get("state"))

    def started(cell, cell_index, **_):
        progress.cell_started(cell_index, cell.source)

    def finished(cell_index, **_):
        progress.cell_finished(cell_index)

    return ProgressClient(nb, on_cell_execute=started, on_cell_executed=finished, **kw)


# --------------------------------------------------------------------------- execution

@contextlib.contextmanager
def _environment(values: Dict[str, Optional[str]]) -> Iterator[None]:
    """Set (or unset, for None) environment variables for the kernels started inside."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _failure(nb, exc: Exception) -> str:
    """'cell N: Error: message' from an executed notebook's first error output."""
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") == "error":
                return f"cell {i}: {out.get('ename')}: {out.get('evalue')}"
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"


def run_notebook(path: PathLike, out_path: PathLike, params: Optional[Dict[str, object]] = None,
                 smoke: bool = False, cwd: Optional[PathLike] = None, timeout: float = 3600,
                 kernel: str = "python3", progress: Optional[Callable[[str], None]] = None,
                 heartbeat: float = HEARTBEAT_SECONDS) -> float:
    """Execute one notebook into ``out_path``; returns its wall time in seconds.

    ``params`` are injected after the parameters cell; ``smoke`` sets AMPXFER_SMOKE=1 for the
    kernel (tiny data and budgets); ``cwd`` is the kernel's working folder; ``timeout`` is
    per cell. ``progress``, when given, gets the lines of :class:`CellProgress` as the cells
    run (``heartbeat``: seconds of silence before a "still running" line). Raises
    NotebookError naming the failing cell (the executed copy is written first).
    """
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = inject_parameters(read_notebook(path), params or {})
    out_path = Path(out_path)
    cwd = Path(cwd or os.getcwd())
    sockets = None
    km = None
    if os.name == "posix":
        # Talk to the kernel over local sockets rather than TCP (no open port, and no
        # "running over TCP without encryption" warning); they live in a folder removed after.
        from jupyter_client import KernelManager

        sockets = tempfile.mkdtemp(prefix="ampxfer-kernel-")
        km = KernelManager(kernel_name=kernel, transport="ipc", ip=os.path.join(sockets, "kernel"))
    watch = CellProgress(nb, progress, heartbeat) if progress is not None else None
    client = _progress_client(nb, watch, km=km, timeout=int(timeout), kernel_name=kernel,
                              resources={"metadata": {"path": str(cwd)}})
    t0 = time.monotonic()
    env = {SMOKE_ENV: "1" if smoke else None}
    try:
        with _environment(env):
            client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        write_notebook(nb, out_path)
        raise NotebookError(f"{Path(path).name} failed at {_failure(nb, exc)}; the executed copy is {out_path}") from None
    finally:
        if watch is not None:
            watch.close()
        # nbclient only stops kernels it started itself; ours would linger until we exit.
        if km is not None and km.has_kernel:
            km.shutdown_kernel(now=False)  # also removes its connection file
        if sockets:
            shutil.rmtree(sockets, ignore_errors=True)
    write_notebook(nb, out_path)
    return time.monotonic() - t0


def suite_params(name: str, out_dir: Path, budget: Optional[str], nb) -> Dict[str, object]:
    """The suite-level parameters of one notebook: its work folder and budget, where it has them."""
    names = set(parameter_names(nb))
    params: Dict[str, object] = {}
    if "OUT_DIR" in names:
        params["OUT_DIR"] = str(out_dir / OWN_FOLDER[name]) if name in OWN_FOLDER else str(out_dir)
    if budget is not None and "BUDGET" in names:
        params["BUDGET"] = budget
    return params


def run_suite(out_dir: PathLike, names: Optional[Sequence[str]] = None, smoke: bool = False,
              budget: Optional[str] = None, extra: Optional[Dict[str, object]] = None, timeout: float = 3600,
              log: Callable[[str], None] = print, folder: PathLike = NOTEBOOK_DIR,
              progress: Optional[Callable[[str], None]] = None,
              heartbeat: float = HEARTBEAT_SECONDS) -> List[NotebookRun]:
    """Run notebooks in suite order into ``out_dir`` (executed copies and all their files).

    ``extra`` parameters go to every notebook that defines them (at least one must);
    ``folder`` holds the suite's notebooks. ``log`` gets a line as each notebook starts and
    ends; ``progress`` (None: nothing) the cells' progress in between (see :func:`run_notebook`).
    """
    if budget is not None and budget not in BUDGETS:
        raise ConfigError(f"--budget must be one of {', '.join(BUDGETS)}, not {budget!r}")
    paths = find_notebooks(names, folder)  # before making the folder: a bad name leaves nothing behind
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    notebooks = [(p, read_notebook(p)) for p in paths]
    unused = set(extra) - {n for _, nb in notebooks for n in parameter_names(nb)}
    if unused:
        raise ConfigError(f"no notebook has the parameter(s) {', '.join(sorted(unused))}")
    runs = []
    t_all = time.monotonic()
    for path, nb in notebooks:
        params = suite_params(path.name, out, budget, nb)
        own = set(parameter_names(nb))
        params.update({k: v for k, v in extra.items() if k in own})
        target = out / path.name
        log(f"running {path.name} -> {target}" + (" (smoke)" if smoke else ""))
        seconds = run_notebook(path, target, params, smoke=smoke, cwd=out, timeout=timeout,
                               progress=progress, heartbeat=heartbeat)
        log(f"  done in {seconds:.0f} s")
        runs.append(NotebookRun(path.name, path, target, seconds))
    log(f"{len(runs)} notebook(s) in {time.monotonic() - t_all:.0f} s; outputs in {out}")
    return runs
