"""From two recordings to a plugin-ready model: ``ampxfer capture`` and the API behind it.

One call does the whole job, in stages, each recorded in ``DIR/capture.json`` when it is
done, so rerunning the same call continues where the last one stopped (a finished stage is
skipped; an interrupted training run resumes through the trainer's own checkpoint)::

    prepare    all the recording checks of ``ampxfer prepare``, then alignment and splits -> DIR/data/
    rank       score every model of the libraries as a start for this device  -> DIR/ranking.json
    train      train from the best start with the default recipe               -> DIR/run/
    scratch    (optional) the same training from scratch, for the comparison   -> DIR/scratch/
    evaluate   test ESR on the test split and the verdict in words (capture.verdict)
    export     every plugin format the model fits, and which plugins load it   -> DIR/plugins/
    listen     the listening page                                              -> DIR/listen.html
    register   add the model to the user's library (ampxfer_lib.library.index)

A capture folder is only ever continued by a call with the same recordings (compared by
content) and the same data settings; anything else is refused with the file and the fix,
and a non-empty folder that is not a capture folder is never written into. Settings of a
later stage (the starting model, the training recipe) may still change until that stage is
done; after it, a different request is refused, since honouring it would mean replacing
finished work.

The notebooks call the stages one by one (:class:`Capture`), e.g. to show the ranking
before training or to train the scratch baseline first; :func:`capture` runs them all.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Union

from ampxfer_lib import __version__
from ampxfer_lib.data.dataset import Dataset
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.capture.plugins import export_plugins
from ampxfer_lib.capture.record import (CAPTURE_FORMAT, CAPTURE_VERSION, DATA, PLUGINS, RECORD, RUN, SCORE_WORDS, SCRATCH,
                                        STAGES, START, Log, _finite, _first_difference, _fmt, _now, _source,
                                        capture_splits)
from ampxfer_lib.capture.start import RankStage
from ampxfer_lib.folders import FolderLock
from ampxfer_lib.fileio import PathLike, atomic_write_json

# --------------------------------------------------------------------------- the capture

class Capture(RankStage):
    """One capture folder and its stages. Creating it checks the folder and writes nothing.

    ``input``/``target``: the DI and the same DI through the device. ``out``: the capture
    folder. ``name``: the model's name in plugin file names and the library (default: the
    target file's name). ``libraries``: folders to rank starting models from (default:
    ``user_library``, then the shipped starting models; these two may be absent).
    ``seconds``: train on N seconds of the training audio only (a quick capture), cut as 5 s
    pieces spread over it (the dataset's ``spread`` subset: varied audio beats the first N s).
    ``knobs``/``kind``/``licence``: what the library records about the device. ``start``:
    ``None``/``"auto"`` (the ranking's best), a rank (``2``), ``"scratch"``, or a model file.
    ``preset``/``train_overrides``: the training recipe (``make_config`` keywords, e.g.
    ``{"max_epochs": 2}``). ``user_library``: where ``register`` adds the model (default
    :func:`~ampxfer_lib.library.index.user_library_dir`; a notebook passes
    ``user_library_dir(OUT_DIR)``); ``register=False`` skips it.
    ``progress``: receives one line per step. ``train_callbacks``: extra trainer callbacks.
    """

    def __init__(self, input: PathLike, target: PathLike, out: PathLike, name: Optional[str] = None,
                 libraries: Sequence[PathLike] = (), seconds: Optional[float] = None, knobs=(),
                 kind: str = "", licence: str = "", scratch_baseline: bool = False,
                 start: Union[None, int, str, PathLike] = None, preset: Optional[str] = None,
                 train_overrides: Optional[Mapping[str, object]] = None, rank_config=None,
                 rate: int = 44100, user_library: Optional[PathLike] = None, register: bool = True,
                 progress: Optional[Log] = print, train_callbacks: Sequence = ()):
        from ampxfer_lib.library import index as library_index
        from ampxfer_lib.training.config import DEFAULT_PRESET, PRESETS
        from ampxfer_lib.transfer.rank import RankConfig

        self.out = Path(out)
        self.log: Log = progress or (lambda line: None)
        if seconds is not None and not (isinstance(seconds, (int, float)) and seconds > 0 and math.isfinite(seconds)):
            raise ConfigError(f"--seconds must be a positive number of seconds, not {seconds!r}")
        self.seconds = None if seconds is None else float(seconds)
        self.knobs = library_index.parse_knobs(knobs)
        self.kind, self.licence = str(kind or ""), str(licence or "")
        self.scratch_baseline = bool(scratch_baseline)
        self.start = start
        self.preset = preset or DEFAULT_PRESET
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; one of {', '.join(sorted(PRESETS))}")
        self.train_overrides = dict(train_overrides or {})
        for key in ("data", "init_from", "subset", "preset"):
            if key in self.train_overrides:
                raise ConfigError(f"--set {key}=...: the capture sets {key} itself"
                                  + ("; use --start" if key == "init_from" else ""))
        self.rank_config = rank_config or RankConfig()
        self.user_library = Path(user_library).expanduser() if user_library else library_index.user_library_dir()
        # The user's library and the shipped models may not exist (yet); any other folder must.
        self.optional_libraries = {os.path.realpath(self.user_library), os.path.realpath(library_index.SHIPPED_MODELS)}
        libraries = libraries or [self.user_library, library_index.SHIPPED_MODELS]
        self.libraries = [Path(p).expanduser().absolute() for p in libraries]
        for p in self.libraries:  # before any work, not after the prepare stage
            if not p.is_dir() and os.path.realpath(p) not in self.optional_libraries:
                raise ConfigError(f"{p}: no such folder; --library takes a folder of models or a model library")
        self.register_model = bool(register)
        self.train_callbacks = list(train_callbacks)

        self.input = _source(input, "input")
        self.target = _source(target, "target")
        self.prepare_config = self._prepare_config(rate)
        self.record = self._open(name)
        self.name = self.record["name"]
        self._reported: set = set()
        self._ranking: Optional[List[dict]] = None
        self._check_name_is_free()

    # ----------------------------------------------------------- opening
    def _prepare_config(self, rate: int):
        from ampxfer_lib.data.prepare import PrepareConfig

        try:
            import soundfile as sf

            seconds = float(sf.info(self.target["path"]).duration)
        except Exception:  # prepare reads it again and says what is wrong with it
            seconds = 3600.0
        val, test = capture_splits(seconds)
        limited = self.seconds if self.seconds is not None else PrepareConfig.limited_seconds
        return PrepareConfig(rate=rate, val_seconds=val, test_seconds=test, limited_seconds=limited)

    def _identity(self) -> dict:
        # The flags first, so a refusal names the flag that changed rather than the whole config.
        return {"input_sha256": self.input["sha256"], "target_sha256": self.target["sha256"],
                "seconds": self.seconds, "rate": self.prepare_config.rate, "prepare": self.prepare_config.to_dict()}

    def _open(self, name: Optional[str]) -> dict:
        """The folder's record, or a new one (not written yet); refuses folders that are not this capture."""
        from ampxfer_lib.library.index import slug

        out, path = self.out, self.out / RECORD
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out}: exists and is not a folder; choose another --out folder for the capture")
        if path.exists():
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                if record.get("format") != CAPTURE_FORMAT:
                    raise ValueError("not a capture record")
            except (OSError, ValueError):
                raise ConfigError(f"{path}: not a readable capture record; choose another --out folder") from None
            theirs = record.get("identity", {})
            if (theirs.get("input_sha256"), theirs.get("target_sha256")) != (self.input["sha256"], self.target["sha256"]):
                was = f"{Path(record['input']['path']).name} + {Path(record['target']['path']).name}"
                raise ConfigError(f"{out}: holds the capture of other recordings ({was}); choose another --out "
                                  "folder for these")
            diff = _first_difference(theirs, self._identity())
            if diff:
                raise ConfigError(f"{out}: holds a capture of these recordings with other settings ({diff}); "
                                  "rerun with the same settings to continue it, or choose another --out")
            if name is not None and name != record["name"]:
                raise ConfigError(f"{out}: is the capture named {record['name']!r}; drop --name (or give "
                                  f"--name {record['name']!r}) to continue it, or choose another --out")
            return record
        if out.exists():
            foreign = sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and p.name != DATA)
            if not foreign and (out / DATA).is_dir():
                foreign = self._foreign_data(out / DATA)
            if foreign:
                raise ConfigError(f"{out}: the folder holds other files ({foreign[0]}, ...) and is not a capture "
                                  "folder; choose a new or empty --out folder")
        return {"format": CAPTURE_FORMAT, "version": CAPTURE_VERSION, "library_version": __version__,
                "name": name or slug(Path(self.target["path"]).stem), "explicit_name": name is not None,
                "created": _now(),
                "input": self.input, "target": self.target, "identity": self._identity(), "stages": {}}

    def _foreign_data(self, data: Path) -> List[str]:
        """[] when ``data`` is empty or a prepare of these recordings that stopped before capture.json."""
        from ampxfer_lib.data.dataset import MANIFEST

        entries = [p for p in data.iterdir() if not p.name.startswith(".")]
        if not entries:
            return []
        try:
            manifest = json.loads((data / MANIFEST).read_text())
            pairs = [p for c in manifest["captures"] for p in c["pairs"]]
            mine = [(p["input"]["sha256"], p["target"]["sha256"]) for p in pairs] == \
                [(self.input["sha256"], self.target["sha256"])]
        except (OSError, ValueError, KeyError, TypeError):
            # no manifest: a prepare killed while writing its audio files (it writes the manifest last)
            return [] if all(p.suffix == ".wav" for p in entries) else [f"{DATA}/{entries[0].name}"]
        return [] if mine else [f"{DATA}/{MANIFEST} of other recordings"]

    def _check_name_is_free(self) -> None:
        """An explicit --name taken in the library by another model: say so before any work."""
        from ampxfer_lib.library.index import ModelLibrary

        if not self.register_model or self.done("register"):
            return
        entry = ModelLibrary(self.user_library).get(self.name)
        if entry is not None and entry.capture != os.path.abspath(self.out) and self._explicit_name:
            raise ConfigError(f"{self.user_library}: already holds a model named {self.name!r}; choose another "
                              f"--name, or `ampxfer library remove {self.name}` first")

    @property
    def _explicit_name(self) -> bool:
        return self.record.get("explicit_name", False)

    # ----------------------------------------------------------- record
    def done(self, stage: str) -> bool:
        return stage in self.record["stages"]

    def stage(self, stage: str) -> dict:
        return self.record["stages"].get(stage, {})

    def _finish(self, stage: str, info: dict) -> None:
        self.record["stages"][stage] = _finite(dict(info, done=_now()))
        self.record["updated"] = _now()
        atomic_write_json(self.out / RECORD, self.record)
        self._reported.add(stage)

    def _done_before(self, stage: str, text: str) -> None:
        """Say once per session that a stage was done by an earlier run (later stages ask again)."""
        if stage not in self._reported:
            self._reported.add(stage)
            self._say(stage, f"done before ({text})")

    def _stages(self) -> List[str]:
        return [s for s in STAGES if (s != "scratch" or self.scratch_baseline or self.done("scratch"))
                and (s != "register" or self.register_model)]

    def _say(self, stage: str, text: str) -> None:
        stages = self._stages()
        n = stages.index(stage) + 1 if stage in stages else "-"
        self.log(f"[{n}/{len(stages)}] {stage}: {text}")

    # ----------------------------------------------------------- stages
    def prepare(self) -> dict:
        """Check, align and split the recordings into DIR/data; returns the data manifest."""
        from ampxfer_lib.data.dataset import MANIFEST
        from ampxfer_lib.data.prepare import CaptureSpec, prepare

        data = self.out / DATA
        if self.done("prepare") and (data / MANIFEST).exists():
            self._done_before("prepare", self._data_line(self.stage("prepare")))
            return json.loads((data / MANIFEST).read_text())
        self._say("prepare", f"checking and aligning {self.input['path']} + {self.target['path']}")
        spec = CaptureSpec((self.input["path"],), (self.target["path"],))
        manifest = prepare([spec], data, self.prepare_config, log=lambda m: self.log(f"  {m}"))
        for w in manifest["warnings"]:
            self.log(f"  warning: {w['file']}: {w['message']}")
        splits = manifest["splits"]
        full = splits["train"]["seconds"]
        used = Dataset(data).seconds("train", "spread") if self.seconds is not None else full
        if self.seconds is not None and self.seconds > full:
            self.log(f"  --seconds {self.seconds:g}: the recording has {full:.1f} s of training audio; all of it is used")
        info = {"train_seconds": full, "train_seconds_used": used, "val_seconds": splits["val"]["seconds"],
                "test_seconds": splits["test"]["seconds"],
                "latency_samples": manifest["captures"][0]["pairs"][0]["latency"]["samples"],
                "warnings": [w["message"] for w in manifest["warnings"]]}
        self._finish("prepare", info)
        self._say("prepare", self._data_line(info))
        return manifest

    @staticmethod
    def _data_line(info: dict) -> str:
        return (f"{info['train_seconds_used']:.1f} s of training audio, {info['val_seconds']:.1f} s validation, "
                f"{info['test_seconds']:.1f} s test")

    def _subset(self) -> str:
        return "spread" if self.seconds is not None else "full"

    def _train_config(self, init_from: Optional[str], **extra):
        from ampxfer_lib.training.config import make_config

        overrides = dict(self.train_overrides)
        overrides.update(extra)
        return make_config(self.out / DATA, self.preset, subset=self._subset(), init_from=init_from, **overrides)

    def _callbacks(self) -> list:
        from ampxfer_lib.training.callbacks import Callback, LogLines

        log = self.log
        from ampxfer_lib.data.dataset import load_dataset

        data_warnings = load_dataset(self.out / DATA).manifest.get("warnings", [])

        class TrainerWarnings(Callback):
            # The data's own warnings were printed by the prepare stage; only the trainer's are new.
            def on_start(self, run):
                for w in run.warnings:
                    if w not in data_warnings:
                        log(f"  warning: {w['file']}: {w['message']}")

        return [TrainerWarnings(), LogLines(lambda m: log(f"  {m}"))] + self.train_callbacks

    def _settings(self, start: Optional[dict]) -> dict:
        s = {"preset": self.preset, "subset": self._subset(), "overrides": self.train_overrides,
             "start": None if start is None else {"model": os.path.realpath(start["model"]),
                                                  "knobs": list(start.get("knobs") or [])}}
        return json.loads(json.dumps(s))

    def train(self) -> dict:
        """Train the capture from the chosen start (resuming an interrupted run); returns its summary."""
        from ampxfer_lib.training.loop import train
        from ampxfer_lib.transfer.rank import export_starting_model

        self.prepare()
        if self.done("train"):
            rec = self.stage("train")
            if self.start is not None:  # an explicit request must match what was trained
                diff = _first_difference({"start": rec["settings"]["start"]},
                                         {"start": self._settings(self.choose_start())["start"]})
                if diff:
                    raise ConfigError(f"{self.out}: the capture was trained already from "
                                      f"{self.start_words(rec['start'])}; choose another --out to train from another start")
            self._done_before("train", f"from {self.start_words(rec['start'])}, test ESR "
                                       f"{_fmt(rec['summary']['test_esr'])}")
            return rec["summary"]
        start = self.choose_start()
        settings = self._settings(start)
        if start is None and self.done("scratch") and self.stage("scratch").get("settings") == settings:
            # The scratch baseline is this very run: no need to train it twice.
            rec = self.stage("scratch")
            self._finish("train", {"run": rec["run"], "start": None, "settings": settings, "summary": rec["summary"]})
            self._say("train", "no starting model: the capture is the scratch baseline")
            return rec["summary"]
        init = None
        if start is not None:
            init = str(export_starting_model(start, self.out / START))
        self._say("train", f"from {self.start_words(start)} ({self.preset} recipe, {self._subset()} training audio)")
        summary = train(self._train_config(init), self.out / RUN, self._callbacks())
        summary = {k: summary[k] for k in ("test_esr", "best_val_loss", "best_epoch", "epochs", "train_seconds",
                                           "initial_val_loss", "stop_reason", "hidden_size", "device")}
        self._finish("train", {"run": RUN, "start": start, "settings": settings, "summary": summary})
        return summary

    @staticmethod
    def start_words(start: Optional[dict]) -> str:
        """A start (a ranking entry, as recorded by train) in words: name, library, score, who chose it."""
        if not start:
            return "scratch (no starting model)"
        words = start.get("name") or Path(start["model"]).stem
        if start.get("knobs"):
            words += f" with its knob(s) at {', '.join(f'{k:g}' for k in start['knobs'])}"
        if start.get("library"):
            words += f" (library {start['library']}" + (f", licence {start['licence']})" if start.get("licence") else ")")
        if start.get("score") is not None:
            how = SCORE_WORDS.get(start.get("scored_by"), start.get("scored_by"))
            words += f"; {how} {start['score']:.4g}"
        return f"{words}; chosen by {start.get('chosen_by', 'ranking')}"

    def train_scratch(self) -> dict:
        """The scratch baseline: the capture's recipe and architecture from random weights."""
        from ampxfer_lib.training.loop import train

        self.prepare()
        if self.done("scratch"):
            rec = self.stage("scratch")
            self._done_before("scratch", f"test ESR {_fmt(rec['summary']['test_esr'])}")
            return rec["summary"]
        if self.done("train") and self.stage("train")["start"] is None:
            rec = self.stage("train")
            self._finish("scratch", {"run": rec["run"], "settings": rec["settings"], "summary": rec["summary"],
                                     "same_as_capture": True})
            self._say("scratch", "the capture itself trained from scratch (no starting model): it is the baseline")
            return rec["summary"]
        extra = {}
        if self.done("train"):  # the capture's architecture, so only the start differs
            from ampxfer_lib.model.formats import load_model

            cfg = load_model(self._model_path()).config
            extra = {"hidden_size": cfg.hidden_size, "skip": cfg.skip}
        self._say("scratch", f"training from scratch for the comparison ({self.preset} recipe)")
        summary = train(self._train_config(None, **extra), self.out / SCRATCH, self._callbacks())
        summary = {k: summary[k] for k in ("test_esr", "best_val_loss", "best_epoch", "epochs", "train_seconds",
                                           "initial_val_loss", "stop_reason", "hidden_size", "device")}
        self._finish("scratch", {"run": SCRATCH, "settings": self._settings(None), "summary": summary})
        return summary

    def _model_path(self) -> Path:
        from ampxfer_lib.training.checkpoint import MODEL_BEST

        return self.out / self.stage("train")["run"] / MODEL_BEST

    def evaluate(self) -> dict:
        """Test ESR and verdict (and the scratch comparison when there is a baseline)."""
        from ampxfer_lib.capture.verdict import comparison, verdict
        from ampxfer_lib.training.checkpoint import MODEL_BEST
        from ampxfer_lib.training.evaluate import evaluate

        self.train()
        with_scratch = self.done("scratch")
        if self.done("evaluate") and self.stage("evaluate")["with_scratch"] == with_scratch:
            rec = self.stage("evaluate")
            self._done_before("evaluate", rec["line"])
            return rec
        esr = evaluate(self._model_path(), self.out / DATA)["test_esr"]
        v = verdict(esr)
        info = {"test_esr": esr, "verdict": v.to_dict(), "line": v.line(), "with_scratch": with_scratch,
                "scratch_test_esr": None, "comparison": None}
        if with_scratch:
            scratch = self.out / self.stage("scratch")["run"] / MODEL_BEST
            info["scratch_test_esr"] = evaluate(scratch, self.out / DATA)["test_esr"]
            start = self.stage("train")["start"]
            if start is not None:
                info["comparison"] = comparison(esr, info["scratch_test_esr"], start.get("name"))
                h_run = self.stage("train")["summary"]["hidden_size"]
                h_scratch = self.stage("scratch")["summary"]["hidden_size"]
                if h_run != h_scratch:  # the baseline was trained before the start was known
                    info["comparison"] += f" (the baseline is an LSTM {h_scratch}, the capture an LSTM {h_run})"
        self._finish("evaluate", info)
        self._say("evaluate", v.line())
        if info["comparison"]:
            self.log(f"  {info['comparison']}")
        return info

    def export(self) -> dict:
        """Every plugin format the model fits, into DIR/plugins."""
        from ampxfer_lib.model.formats import load_model

        self.train()
        if self.done("export"):
            rec = self.stage("export")
            self._done_before("export", ", ".join(f["file"] for f in rec["files"]))
            return rec
        files, skipped = export_plugins(load_model(self._model_path()), self.out / PLUGINS, self.name)
        info = {"files": [dict(f, file=f"{PLUGINS}/{f['file']}") for f in files], "skipped": skipped}
        self._finish("export", info)
        for f in info["files"]:
            self._say("export", f"{self.out / f['file']}: {f['notes'][0]}")
        for s in skipped:
            self._say("export", f"no {s['format']} file: {s['why']}")
        return info

    def listen(self) -> Path:
        """The listening page DIR/listen.html (rewritten when a scratch baseline was added)."""
        from ampxfer_lib.capture.listen_page import PAGE, PageInfo, write_listen_page
        from ampxfer_lib.capture.verdict import verdict
        from ampxfer_lib.data.dataset import load_dataset
        from ampxfer_lib.model.formats import load_model

        ev = self.evaluate()
        ex = self.export()
        if self.done("listen") and self.stage("listen")["with_scratch"] == ev["with_scratch"]:
            self._done_before("listen", str(self.out / PAGE))
            return self.out / PAGE
        prep, tr = self.stage("prepare"), self.stage("train")
        details = [("test ESR", f"{ev['test_esr']:.4g} on {prep['test_seconds']:.1f} s of the test split"),
                   ("training audio", f"{prep['train_seconds_used']:.1f} s"
                    + (f" (the first {self.seconds:g} s asked for)" if self.seconds is not None else "")),
                   ("training", f"{tr['summary']['epochs']} epochs, best at {tr['summary']['best_epoch']}, "
                                f"{tr['summary']['train_seconds']:.0f} s on {tr['summary']['device']}")]
        if self.knobs:
            details.append(("device settings", ", ".join(f"{k} {v}" for k, v in self.knobs)))
        details += [("recordings", f"{self.input['path']} + {self.target['path']}")]
        details += [("warning", w) for w in prep.get("warnings", [])]
        info = PageInfo(name=self.name, verdict=verdict(ev["test_esr"]), start=self.start_words(tr["start"]),
                        plugins=tuple((f["file"], f["format"], tuple(f["notes"])) for f in ex["files"]),
                        skipped=tuple((s["format"], s["why"]) for s in ex["skipped"]),
                        comparison=ev["comparison"], details=tuple(details))
        page = write_listen_page(self.out, load_model(self._model_path()), load_dataset(self.out / DATA), info)
        self._finish("listen", {"page": PAGE, "with_scratch": ev["with_scratch"]})
        self._say("listen", f"{page} (open it in a browser)")
        return page

    def register(self) -> dict:
        """Add the model to the user's library (once; a rerun finds it there)."""
        from ampxfer_lib.library.index import ModelLibrary, model_digest

        ev = self.evaluate()
        if self.done("register"):
            rec = self.stage("register")
            self._done_before("register", f"as {rec['name']!r} in {rec['library']}")
            return rec
        lib = ModelLibrary(self.user_library)
        model = self._model_path()
        digest = model_digest(model)
        here = os.path.abspath(self.out)
        mine = next((e for e in lib.entries() if e.capture == here and e.sha256 == digest), None)
        if mine is not None:  # registered by a run that stopped before recording it
            name = mine.name
        else:
            name = self.name if self._explicit_name else lib.free_name(self.name)
            start = self.stage("train")["start"]
            source = (f"ampxfer capture of {Path(self.target['path']).name} (DI {Path(self.input['path']).name})"
                      + (f", started from {start.get('name') or Path(start['model']).stem}" if start else "")
                      + (f" ({start['licence']})" if start and start.get("licence") else ""))
            lib.add(model, name, kind=self.kind, knobs=self.knobs, test_esr=ev["test_esr"], source=source,
                    licence=self.licence, capture=self.out)
        info = {"library": str(lib.path), "name": name}
        self._finish("register", info)
        self._say("register", f"added to {lib.path} as {name!r}"
                  + ("" if name == self.name else f" ({self.name!r} was taken)"))
        return info

    # ----------------------------------------------------------- all of it
    def run(self, stop_after: Optional[str] = None) -> dict:
        """Every stage in order (each skipped when done); ``stop_after``: the last stage to run."""
        if stop_after is not None and stop_after not in STAGES:
            raise ConfigError(f"unknown stage {stop_after!r}; one of {', '.join(STAGES)}")
        steps = {"prepare": self.prepare, "rank": self._rank_if_needed, "train": self.train,
                 "scratch": self.train_scratch, "evaluate": self.evaluate, "export": self.export,
                 "listen": self.listen, "register": self.register}
        # One process per capture folder (a second `ampxfer capture` on it stops with the holder
        # named); its data and run folders are held again, nested, by prepare and train.
        with FolderLock(self.out, "capture"):
            for stage in STAGES:
                if stage == "scratch" and not self.scratch_baseline:
                    continue
                if stage == "register" and not self.register_model:
                    continue
                steps[stage]()
                if stage == stop_after:
                    break
        return self.record

    def _rank_if_needed(self):
        start = self.start
        if start is None or (isinstance(start, str) and start.strip().lower() == "auto") or \
                isinstance(start, int) or (isinstance(start, str) and start.strip().isdigit()):
            return self.rank()
        if self.done("rank"):
            return self.rank()
        self._say("rank", f"skipped: the start is given ({start})")
        return None


def capture(input: PathLike, target: PathLike, out: PathLike, name: Optional[str] = None,
            libraries: Sequence[PathLike] = (), seconds: Optional[float] = None, knobs=(),
            scratch_baseline: bool = False, progress: Optional[Log] = print, stop_after: Optional[str] = None,
            **options) -> dict:
    """Capture a device from a DI and a recording of it through the device; returns ``capture.json``'s content.

    Rerunning the same call continues an interrupted capture. ``options`` are the other
    keywords of :class:`Capture` (``start``, ``preset``, ``train_overrides``, ``rank_config``,
    ``kind``, ``licence``, ``user_library``, ``register``, ``train_callbacks``, ``rate``).
    """
    cap = Capture(input, target, out, name=name, libraries=libraries, seconds=seconds, knobs=knobs,
                  scratch_baseline=scratch_baseline, progress=progress, **options)
    return cap.run(stop_after)


def summary_lines(record: dict) -> List[str]:
    """What a finished (or partly finished) capture gave, in a few lines for the end of the command."""
    st = record["stages"]
    lines = [f"capture {record['name']!r}:"]
    if "evaluate" in st:
        lines.append(f"  {st['evaluate']['line']}")
        if st["evaluate"].get("comparison"):
            lines.append(f"  {st['evaluate']['comparison']}")
    if "train" in st:
        lines.append(f"  started from: {Capture.start_words(st['train']['start'])}")
    if "export" in st:
        for f in st["export"]["files"]:
            lines.append(f"  plugin file: {f['file']} ({f['format']})")
    if "listen" in st:
        lines.append(f"  listen: {st['listen']['page']} (open it in a browser)")
    if "register" in st:
        lines.append(f"  in your model library as {st['register']['name']!r} ({st['register']['library']})")
    return lines
