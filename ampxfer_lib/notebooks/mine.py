"""Notebooks 01-04 with ``DATA = "my recordings"``: your device, captured by the capture pipeline.

The numbered notebooks capture your device with the stages of ``ampxfer capture``
(:class:`ampxfer_lib.capture.pipeline.Capture`), one notebook a step, so a capture made in the
notebooks and one made on the command line are the same thing (same folder, same record, a
rerun continues either)::

    01  find and check the recordings, prepare them     Capture.prepare (the source's too)
    02  the scratch baseline (SCRATCH_BASELINE)         Capture.train_scratch
    03  the source recording's model (if any), added    a Capture of the source, from scratch,
        to your library; rank the libraries; train      registered; Capture.rank, Capture.train
        from the top-ranked start (or START)
    04  listen, ABX against the device, the verdict,    Capture.evaluate, export, register
        the plugin files, your library

01 writes ``OUT_DIR/suite.json``: which data the suite runs on (``sample`` or ``my
recordings``) and, for yours, where the capture folders are and which libraries rank the
starts; 02-04 read it. An OUT_DIR without it is a sample run (as written by earlier versions).
Captures live in ``OUT_DIR/captures/<name>``, one folder per recording (a second recording
with the same file name gets ``<name>_2``), so nothing of an earlier capture is written over.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

from ampxfer_lib.errors import AmpxferError, ConfigError
from ampxfer_lib.fileio import PathLike, atomic_write_json

SUITE_FILE = "suite.json"
SAMPLE, MINE = "sample", "my recordings"
CAPTURES = "captures"
#: Smoke mode (CI): two epochs per training run and a ranking on a second or two of audio.
SMOKE_TRAIN = {"max_epochs": 2}
SMOKE_RANK = dict(probe_seconds=2.0, probe_chunks=2, finetune_top=1, finetune_seconds=1.0, finetune_epochs=1,
                  eval_seconds=1.0)


# --------------------------------------------------------------------------- which data the suite runs on

def write_choice(out_dir: PathLike, data: str, **info) -> Path:
    """``OUT_DIR/suite.json``: what notebook 01 prepared, for 02-04."""
    if data not in (SAMPLE, MINE):
        raise ConfigError(f'DATA must be "{SAMPLE}" or "{MINE}", not {data!r}')
    path = Path(out_dir) / SUITE_FILE
    atomic_write_json(path, {"data": data, **info})
    return path


def read_choice(out_dir: PathLike) -> dict:
    """What 01 prepared in ``out_dir``: ``{"data": "sample"}`` or the capture hand-off of yours."""
    path = Path(out_dir) / SUITE_FILE
    if not path.exists():  # an OUT_DIR of an earlier version, or 01 not run yet: 02 says what is missing
        return {"data": SAMPLE}
    try:
        choice = json.loads(path.read_text(encoding="utf-8"))
        if choice.get("data") not in (SAMPLE, MINE):
            raise ValueError(choice.get("data"))
    except (OSError, ValueError, AttributeError):
        raise ConfigError(f"{path}: not what notebook 01 writes; run notebook 01 with this OUT_DIR again") from None
    return choice


def is_mine(out_dir: PathLike) -> bool:
    return read_choice(out_dir)["data"] == MINE


# --------------------------------------------------------------------------- 01: prepare

def capture_folder(out_dir: PathLike, di: PathLike, recording: PathLike, taken: Sequence[str] = ()) -> Path:
    """``OUT_DIR/captures/<recording's name>``, or ``..._2``, ``..._3`` when a folder of that name
    holds the capture of other recordings or is in ``taken`` (a capture folder is never written over)."""
    from ampxfer_lib.capture.record import RECORD
    from ampxfer_lib.fileio import sha256_file
    from ampxfer_lib.library.index import slug

    base = Path(out_dir).absolute() / CAPTURES / slug(Path(recording).stem)
    ours = None
    for k in range(1, 1000):
        folder = base if k == 1 else base.with_name(f"{base.name}_{k}")
        if str(folder) in taken:
            continue
        if not (folder / RECORD).exists():
            # new, or a prepare stopped before its record: Capture refuses it if it is foreign
            return folder
        try:
            ident = json.loads((folder / RECORD).read_text(encoding="utf-8"))["identity"]
        except (OSError, ValueError, KeyError):
            continue
        ours = ours or (sha256_file(di), sha256_file(recording))
        if (ident.get("input_sha256"), ident.get("target_sha256")) == ours:
            return folder
    raise ConfigError(f"{base.parent}: holds 999 captures named {base.name}; rename MY_TARGET's file")


def libraries(out_dir: PathLike, shipped: bool = True) -> List[str]:
    """Where the starts are ranked from: your library (``user_library_dir(OUT_DIR)``), the
    shipped starting models (``shipped``), and the real-gear captures 01 fetched into OUT_DIR/models."""
    from ampxfer_lib.library.index import SHIPPED_MODELS, user_library_dir

    found = [user_library_dir(out_dir)] + ([SHIPPED_MODELS] if shipped else [])
    fetched = Path(out_dir) / "models"
    if any(fetched.glob("*.json")):
        found.append(fetched)
    return [str(Path(p).absolute()) for p in found]


def prepare_mine(di: str, source: str, target: str, how: str, out_dir: PathLike,
                 log: Callable[[str], None] = print) -> dict:
    """Notebook 01 with ``DATA = "my recordings"``: find, check and prepare your recordings.

    The checks and the preparation are those of ``ampxfer capture`` (:meth:`Capture.prepare`),
    for the new device and, when ``source`` is given, for the similar one. Returns what
    :func:`hand_off` writes for 02-04 (01 writes it last, so they never see half of it).

    A recording that fails a check (or a missing file) raises that error, of the same class,
    as one line: ``your recordings cannot be used: <the error>; <what to do>``. Nothing is
    prepared in their place: a capture of a device that is not yours would look like an
    answer and be none.
    """
    from ampxfer_lib.fileio import sha256_file
    from ampxfer_lib.library.index import user_library_dir
    from ampxfer_lib.notebooks.suite import OWN_RECORDINGS_FIX, find_recordings

    out = Path(out_dir).absolute()
    try:
        roles = find_recordings(di, source, target, how, out, log=log)
        choice = {"user_library": str(user_library_dir(out).absolute()),
                  "target": {"input": os.path.abspath(roles["di"]), "target": os.path.abspath(roles["target"]),
                             "out": str(capture_folder(out, roles["di"], roles["target"]))},
                  "source": None}
        if roles["source"]:
            if sha256_file(roles["source"]) == sha256_file(roles["target"]):
                raise ConfigError("MY_SOURCE and MY_TARGET are the same recording; MY_SOURCE is a similar device")
            folder = capture_folder(out, roles["di"], roles["source"], taken=[choice["target"]["out"]])
            choice["source"] = {"input": os.path.abspath(roles["di"]), "target": os.path.abspath(roles["source"]),
                                "out": str(folder)}
        for role in ("target", "source"):
            if choice[role] is not None:
                _open(choice, role, log=log).prepare()
    except AmpxferError as exc:
        # Same class, so an `except AudioError` still holds.
        raise type(exc)(f"your recordings cannot be used: {exc}; {OWN_RECORDINGS_FIX}") from None
    return choice


def hand_off(out_dir: PathLike, choice: dict, shipped: bool = True) -> Path:
    """Write ``OUT_DIR/suite.json`` for 02-04: the captures :func:`prepare_mine` prepared and the
    libraries to rank (decided now, after 01 fetched its starting models, and kept: a ranking
    is only ever continued with the libraries it started with)."""
    return write_choice(out_dir, MINE, **dict(choice, libraries=libraries(out_dir, shipped)))


# --------------------------------------------------------------------------- 02-04: the capture

def _open(choice: dict, role: str, smoke: bool = False, epochs: int = 0, start=None,
          log: Optional[Callable[[str], None]] = print, **options):
    from ampxfer_lib.capture.pipeline import Capture
    from ampxfer_lib.transfer.rank import RankConfig

    rec = choice[role]
    overrides = dict(SMOKE_TRAIN) if smoke else {}
    if epochs:
        if not (isinstance(epochs, int) and epochs > 0):
            raise ConfigError(f"EPOCHS_FULL must be a whole number of epochs (0: the recipe's own), not {epochs!r}")
        overrides["max_epochs"] = epochs
    return Capture(rec["input"], rec["target"], rec["out"], libraries=choice.get("libraries") or (),
                   user_library=choice["user_library"], start=start, train_overrides=overrides,
                   rank_config=RankConfig(**SMOKE_RANK) if smoke else None, progress=log, **options)


def open_capture(out_dir: PathLike, smoke: bool = False, epochs: int = 0, scratch_baseline: bool = False,
                 log: Optional[Callable[[str], None]] = print):
    """The capture of your new device that notebook 01 prepared (a :class:`Capture`).

    ``epochs`` > 0 caps the training (EPOCHS_FULL); ``scratch_baseline``: 02 trains it (the
    stage counts in the progress lines). Its ``start`` is the ranking's best until 03 sets it
    from :func:`resolve_start`.
    """
    choice = read_choice(out_dir)
    if choice["data"] != MINE:
        raise ConfigError(f'{Path(out_dir) / SUITE_FILE}: notebook 01 ran with DATA = "sample" here; run it with '
                          'DATA = "my recordings" first')
    return _open(choice, "target", smoke, epochs, log=log, scratch_baseline=scratch_baseline)


def train_source(out_dir: PathLike, smoke: bool = False, epochs: int = 0,
                 log: Optional[Callable[[str], None]] = print) -> Optional[dict]:
    """The model of MY_SOURCE (your similar device), trained from scratch and added to your
    library, where the ranking finds it like any other model. None without a source recording."""
    choice = read_choice(out_dir)
    if choice.get("source") is None:
        return None
    cap = _open(choice, "source", smoke, epochs, start="scratch", log=log)
    cap.train()
    return cap.register()


def ranking_rows(ranking: Sequence[dict]) -> List[dict]:
    """The ranking as table rows, best first: rank, model, library, knob, score and how it was measured."""
    from ampxfer_lib.capture.record import SCORE_WORDS

    rows = []
    for e in ranking:
        scored = e.get("score") is not None
        rows.append({"rank": e.get("rank", "-") if scored else "-", "model": e.get("name", Path(e["model"]).stem),
                     "library": e.get("library", str(Path(e["model"]).parent)),
                     "knob folded at": ", ".join(f"{k:g}" for k in e.get("knobs") or []),
                     "score": e["score"] if scored else "-",
                     "scored by": SCORE_WORDS.get(e.get("scored_by"), e.get("scored_by", "")) if scored
                     else f"not usable: {e.get('skipped', 'no score')}"})
    return rows


def resolve_start(start: Union[str, int, None], ranking: Sequence[dict]) -> Union[None, int, str]:
    """Notebook 03's START as the Capture's ``start``: "" the top-ranked model (None), "scratch",
    a rank (int), a model's name in the ranking or a model file (its path)."""
    text = "" if start is None else str(start).strip()
    usable = [e for e in ranking if e.get("score") is not None]
    if text.lower() in ("", "best", "auto"):
        return None
    if text.lower() == "scratch":
        return "scratch"
    if text.isdigit():
        if not 1 <= int(text) <= len(usable):
            raise ConfigError(f"START = {start!r}: the ranking has {len(usable)} usable model(s); give a rank "
                              f"1..{len(usable)}, a name from the table, or leave START empty for the top-ranked one")
        return int(text)
    named = [e for e in usable if e.get("name") == text]
    if named:
        return named[0]["model"]
    if Path(text).expanduser().is_file():
        return str(Path(text).expanduser().absolute())
    names = ", ".join(e.get("name", Path(e["model"]).stem) for e in usable) or "none"
    raise ConfigError(f"START = {start!r}: no model of that name in the ranking ({names}) and no such file; leave "
                      "START empty for the top-ranked model, or give a name from the table, a rank, scratch or a "
                      "model .json file")


def set_start(cap, start: Union[str, int, None], ranking: Sequence[dict]) -> None:
    """Give the capture 03's START (see :func:`resolve_start`). A capture trained already keeps
    its start: another START is refused here, in the notebook's words, before any work."""
    cap.start = resolve_start(start, ranking)
    if not cap.done("train") or cap.start is None:
        return
    key = lambda s: None if not s else (os.path.realpath(s["model"]), list(s.get("knobs") or []))  # noqa: E731
    trained = cap.stage("train").get("start")
    if key(trained) != key(cap.choose_start()):
        raise ConfigError(f"START = {start!r}: {cap.out} was trained already from {cap.start_words(trained)}; "
                          "leave START empty to continue with it, or move that folder away to train again from "
                          "another start")


def chosen_line(cap) -> str:
    """The start the capture will train from, before it does: its name, score and who chose it."""
    return f"starting point: {cap.start_words(cap.choose_start())}"


def start_line(cap) -> str:
    """Where the capture started from, in words (its score and who chose it)."""
    return f"started from {cap.start_words(cap.stage('train').get('start'))}"


def export_lines(info: dict, out: PathLike) -> List[str]:
    """Capture.export's record as lines: each file with the plugins that load it, and the formats left out."""
    lines = []
    for f in info["files"]:
        lines.append(f"{Path(out) / f['file']}  ({f['format']})")
        lines += [f"    {n}" for n in f["notes"]]
    lines += [f"no {s['format']} file: {s['why']}" for s in info["skipped"]]
    return lines


def models_to_compare(cap) -> Dict[str, Path]:
    """The capture's model and, when 02 trained it, the scratch baseline's (model_best.json paths)."""
    from ampxfer_lib.training.checkpoint import MODEL_BEST

    if not cap.done("train"):
        raise ConfigError(f"{cap.out}: the capture is not trained yet; run notebook 03 first")
    found = {"capture": cap.out / cap.stage("train")["run"] / MODEL_BEST}
    if cap.done("scratch") and not cap.stage("scratch").get("same_as_capture"):
        found["scratch"] = cap.out / cap.stage("scratch")["run"] / MODEL_BEST
    return found
