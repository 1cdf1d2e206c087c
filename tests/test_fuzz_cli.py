"""No input a user can type or save reaches an "internal error" (issue 13, classes 3 and 4).

Three searches, each seeded so a failure reproduces:

* the argument parser: random flags of each command, taken from that command's own parser
  definition, given values from a pool of careless ones (NaN, infinities, zero, negatives,
  text, huge numbers, JSON), plus random ``--set KEY=VALUE`` overrides of every training
  setting; every run must end in exit 0 or 2, with no traceback and no "internal error";
  on exit 2 exactly one ``error:`` line and the output file or folder not created;
* the model-JSON readers: mutations of a real model file (a field's type swapped, a key
  dropped, deep nesting, a byte-order mark, truncation) through ``load_model`` and
  ``import_model``: a model or an :class:`AmpxferError`, never another exception;
* a table of the issue's own cases with the exact one-line answer each must give.
"""

from __future__ import annotations

import argparse
import codecs
import json
import random
from pathlib import Path

import numpy as np
import pytest

from ampxfer_lib.cli.main import build_parser
from ampxfer_lib.errors import AmpxferError
from ampxfer_lib.training.config import TrainConfig
from tests.support import faults

#: Values people type by mistake, or that a script computes wrongly.
CARELESS = ["nan", "NaN", "inf", "-inf", "1e309", "0", "-0", "-1", "-0.5", "1e-9", "0.00001", "2", "1.5",
            "99999999999999999999", "abc", "", " ", "true", "null", "[1]", "{}", "3.0", ".5", "1e6", "-1e6",
            "0x10", "1,5", "½"]
#: Flags whose value is a path or a free name: fuzzing them finds missing files, not values.
PATH_FLAGS = {"--input", "--target", "--conditioned", "--out", "--data", "--model", "--init-from", "--library",
              "--knob", "--kind", "--licence", "--start", "--stop-after", "--preset",
              "--export-best", "--config", "--data-root", "--address", "--name", "--set", "--align"}


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return faults.Fixtures(tmp_path_factory.mktemp("fuzz_fixtures"))


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _base_argv(command: str, fx, d: Path):
    """A command that fails fast on its input files, so each fuzzed value is parsed and
    checked but no long work (training, a full prepare) starts."""
    short = faults.write_audio_file(d / "short.wav", fx.di(0.3, seed=5))
    model = fx.model()
    return {
        "prepare": ["prepare", "--input", str(short), "--target", str(short), "--out", str(d / "data")],
        "train": ["train", "--data", str(d / "no_data"), "--out", str(d / "run")],
        "render": ["render", "--model", str(model), "--input", str(short), "--out", str(d / "out.wav")],
        "evaluate": ["evaluate", "--model", str(model), "--data", str(d / "no_data")],
        "export": ["export", "--model", str(model), "--format", "neuralpi", "--out", str(d / "e.json")],
        "import": ["import", "--model", str(model), "--out", str(d / "i.json")],
        "study": ["study", "--config", str(d / "no_study.json"), "--out", str(d / "study")],
        "rank": ["rank", "--library", str(model.parent), "--data", str(d / "no_data")],
        "capture": ["capture", "--input", str(short), "--target", str(short), "--out", str(d / "cap"),
                    "--library", str(d / "no_library"), "--no-register"],
        "library": ["library", "list", "--library", str(d / "no_library")],
    }[command], {"capture": d / "cap", "library": None, "prepare": d / "data", "train": d / "run", "render": None, "evaluate": None,
                 "export": d / "e.json", "import": d / "i.json", "study": d / "study", "rank": None}[command]


def _value_flags(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if a.option_strings and a.nargs != 0
            and not set(a.option_strings) & PATH_FLAGS and a.dest != "help"]


def _check_run(argv, out, code, stdout, stderr):
    where = f"argv {argv}"
    assert "internal error" not in stderr, f"{where}: {stderr.strip()}"
    assert "Traceback" not in stderr + stdout, f"{where}: {stderr}"
    assert code in (0, 2), f"{where}: exit {code}: {stderr.strip()}"
    if code == 2:
        errors = [line for line in stderr.splitlines() if "error:" in line]
        assert len(errors) == 1, f"{where}: {stderr}"
        if out is not None and out.exists():
            assert out.is_dir(), f"{where}: {out} written on error"
            left = [p.name for p in out.rglob("*") if p.name not in faults.ALLOWED_ON_ERROR]
            assert not left, f"{where}: {left} written on error"


def test_fuzzed_flags_never_reach_an_internal_error(fx, tmp_path):
    rng = random.Random(13)
    commands = _commands()
    settings = sorted(f.name for f in TrainConfig.__dataclass_fields__.values())
    runs = 0
    for i in range(240):
        name = rng.choice(sorted(commands))
        d = tmp_path / f"c{i}"
        d.mkdir()
        argv, out = _base_argv(name, fx, d)
        flags = _value_flags(commands[name])
        for action in rng.sample(flags, min(len(flags), rng.randint(1, 3))):
            values = [rng.choice(CARELESS) for _ in range(1 if action.nargs in (None, "?") else rng.randint(1, 2))]
            argv += [action.option_strings[-1], *values]
        if name == "train":
            for _ in range(rng.randint(0, 3)):
                argv += ["--set", f"{rng.choice(settings)}={rng.choice(CARELESS)}"]
        code, stdout, stderr = faults.run_inprocess(argv)
        _check_run(argv, out, code, stdout, stderr)
        runs += 1
    assert runs == 240


@pytest.mark.parametrize("setting", sorted(TrainConfig.__dataclass_fields__))
def test_every_training_setting_refuses_careless_values_in_one_line(setting, tmp_path):
    """``--set KEY=V`` for every key and every careless value: accepted or one error line
    naming the setting (the data folder does not exist, so an accepted value ends there)."""
    for value in CARELESS:
        argv = ["train", "--data", str(tmp_path / "no_data"), "--out", str(tmp_path / "run"), "--set",
                f"{setting}={value}"]
        code, stdout, stderr = faults.run_inprocess(argv)
        _check_run(argv, tmp_path / "run", code, stdout, stderr)
        line = stderr.strip()
        if "no_data" not in line and "needs --init-from" not in line and "keep-optimizer" not in line:
            assert setting in line or setting.replace("_", "-") in line, f"{setting}={value!r}: {line}"


# --------------------------------------------------------------------------- model JSON readers

def _mutations(obj: dict, rng: random.Random):
    """(label, text) variants of a model JSON."""
    swaps = [None, "x", "", [], {}, True, False, -1, 0, 1e308, float("nan"), float("inf"), 2 ** 70, [[1]], {"a": 1}]
    md = obj["model_data"]
    for key in list(md) + ["sample_rate"]:
        for v in swaps:
            o = json.loads(json.dumps(obj))
            o["model_data"][key] = v
            yield f"model_data.{key}={v!r}", json.dumps(o)
        o = json.loads(json.dumps(obj))
        o["model_data"].pop(key, None)
        yield f"drop model_data.{key}", json.dumps(o)
    for key in list(obj["state_dict"]):
        for v in swaps + [[["a"]], [[None] * 3]]:
            o = json.loads(json.dumps(obj))
            o["state_dict"][key] = v
            yield f"state_dict.{key}={v!r}", json.dumps(o)
    for top in ("model_data", "state_dict"):
        for v in swaps:
            o = dict(obj)
            o[top] = v
            yield f"{top}={v!r}", json.dumps(o)
    text = json.dumps(obj)
    for depth in (100, 5000, 200000):
        yield f"nested {depth}", "[" * depth + "]" * depth
        yield f"nested object {depth}", '{"model_data": ' * depth + "1" + "}" * depth
    for _ in range(20):
        yield "truncated", text[: rng.randrange(1, len(text))]
    yield "array", json.dumps([obj])
    yield "number", "3"
    yield "string", '"model"'


def _read_all(path: Path):
    from ampxfer_lib.model.formats import import_model, load_model

    for reader in (load_model, import_model):
        try:
            reader(path)
        except AmpxferError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc), str(exc)


def test_mutated_model_files_give_a_model_or_one_clear_line(fx, tmp_path):
    rng = random.Random(7)
    src = json.loads(fx.model().read_text())
    n = 0
    for label, text in _mutations(src, rng):
        path = tmp_path / f"m{n}.json"
        path.write_text(text)
        try:
            _read_all(path)
        except AssertionError:
            raise
        except Exception as exc:  # the failure message is the finding
            pytest.fail(f"{label}: {type(exc).__name__}: {exc}")
        n += 1
    assert n > 300


def test_other_formats_mutated(fx, tmp_path):
    from ampxfer_lib.model.formats import import_model, load_model, rtneural

    weights = load_model(fx.model())
    path = tmp_path / "r.json"
    rtneural.save(weights, path)
    obj = json.loads(path.read_text())
    swaps = [None, "x", [], {}, True, -1, 0, 1e308, float("nan"), 2 ** 70]
    n = 0
    places = [(None, key) for key in obj] + [(i, key) for i, layer in enumerate(obj["layers"]) for key in layer]
    for layer, key in places:
        for v in swaps:
            o = json.loads(json.dumps(obj))
            (o if layer is None else o["layers"][layer])[key] = v
            p = tmp_path / f"r{n}.json"
            p.write_text(json.dumps(o))
            n += 1
            try:
                import_model(p)
            except AmpxferError:
                pass
            except Exception as exc:
                pytest.fail(f"rtneural {key}={v!r}: {type(exc).__name__}: {exc}")
    assert n >= 50


def test_a_model_saved_with_a_byte_order_mark_loads(fx, tmp_path):
    from ampxfer_lib.model.formats import load_model

    path = tmp_path / "notepad.json"
    path.write_bytes(codecs.BOM_UTF8 + fx.model().read_bytes())
    a, b = load_model(path), load_model(fx.model())
    assert a.config == b.config
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


# --------------------------------------------------------------------------- study configs and knob specs

_SWAPS = [None, "x", "", [], {}, True, -1, 0, 1.5, float("nan"), 2 ** 70, [None], [{}], {"a": 1}, "DROP"]


def _json_variants(obj):
    """``obj`` with each value anywhere in it replaced by each of :data:`_SWAPS` (or dropped)."""
    def paths(o, at):
        items = o.items() if isinstance(o, dict) else enumerate(o) if isinstance(o, list) else ()
        for k, v in items:
            yield at + [k]
            yield from paths(v, at + [k])

    for path in list(paths(obj, [])):
        for value in _SWAPS:
            o = json.loads(json.dumps(obj))
            parent = o
            for k in path[:-1]:
                parent = parent[k]
            if value == "DROP":
                parent.pop(path[-1])
            else:
                parent[path[-1]] = value
            yield o


@pytest.mark.parametrize("kind", ["study", "spec"])
def test_mutated_study_configs_and_knob_specs_give_one_clear_line(kind, tmp_path):
    study = {"pairs": [{"name": "p", "source": {"model": "m.json"}, "target": {"data": "t", "name": "t"}}],
             "seeds": [0, 1], "max_epochs": 3, "train": {"lr": 0.01}}
    spec = {"input": "di.wav", "captures": [{"target": "a.wav", "knobs": [0.5]}], "knob_names": ["gain"]}
    n = 0
    for i, obj in enumerate(_json_variants(study if kind == "study" else spec)):
        path = tmp_path / f"{kind}{i}.json"
        path.write_text(json.dumps(obj))
        argv = (["study", "--config", str(path), "--out", str(tmp_path / "s"), "--data-root", str(tmp_path),
                 "--dry-run"] if kind == "study" else
                ["prepare", "--conditioned", str(path), "--out", str(tmp_path / "o")])
        code, stdout, stderr = faults.run_inprocess(argv)
        _check_run(argv, None, code, stdout, stderr)
        n += 1
    assert n >= 100
