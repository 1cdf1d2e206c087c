"""Catalogue cases of issue 13 classes 3, 4 and 5, registered into :mod:`tests.support.faults`.

Class 3, values that are not numbers, out of range or of the wrong type; class 4, inputs
that used to end in "internal error"; class 5, recordings that pass the per-file checks
but are wrong (swapped, on two clocks, float over full scale, a needless polarity flip,
DI and device on the two channels of one file). Every case runs through the real command
line, like the rest of the catalogue.
"""

from __future__ import annotations

import codecs
import re
import json
from pathlib import Path

import numpy as np

from tests.support.faults import (RATE, SMALL_SPLITS, Fixtures, Setup, _di, _export, _import, _pair, _prepare,
                                  _render, case, fixture_amp, make_read_only, write_audio_file)


def _model_variant(fx: Fixtures, d: Path, name: str, edit=None, text=None, prefix: bytes = b"") -> Path:
    """A copy of the fixture model with ``edit(obj)`` applied (or ``text`` as the whole file)."""
    obj = json.loads(fx.model().read_text())
    if edit:
        edit(obj)
    path = d / name
    path.write_bytes(prefix + (text if text is not None else json.dumps(obj)).encode())
    make_read_only(path)
    return path


# ----------------------------------------------------------- class 3: values

@case("render_knob_nan", "render", "error", "render --knob nan on a one-knob model",
      error=r"^error: ampxfer render: argument --knob: must be a number in \[0, 1\], not nan \(see ampxfer render "
            r"--help\)$")
def _(fx, d):
    return _render(fx.model("k1.json", input_size=2), _di(fx, d), d / "out.wav", "--knob", "nan")


@case("render_knob_out_of_range", "render", "error", "render --knob 1.5 (export refuses it too)",
      error=r"^error: ampxfer render: argument --knob: must be a number in \[0, 1\], not 1\.5")
def _(fx, d):
    return _render(fx.model("k1.json", input_size=2), _di(fx, d), d / "out.wav", "--knob", "1.5")


@case("prepare_test_seconds_rounds_to_nothing", "prepare", "error", "--test-seconds 0.00001 (zero samples)",
      error=r"^error: --test-seconds 1e-05 is shorter than one 0\.5 s training segment; give at least 0\.5 s")
def _(fx, d):
    xin, tgt = _pair(d, fx)
    return _prepare(xin, tgt, d / "data", "--test-seconds", "0.00001")


@case("train_set_not_a_number", "train", "error", "--set batch_size=fifty",
      error=r"^error: batch_size must be a whole number in \[1, 100000\], not 'fifty'$")
def _(fx, d):
    from tests.support.faults import _train

    return _train(fx, d / "run", "--set", "batch_size=fifty")


@case("import_bom", "import", "accepted", "a model JSON saved with a UTF-8 byte-order mark (Windows Notepad)")
def _(fx, d):
    src = _model_variant(fx, d, "notepad.json", prefix=codecs.BOM_UTF8)
    out = d / "m.json"

    def verify(result):
        return None if out.read_bytes() == fx.model().read_bytes() else "the imported model differs from the original"
    return _import(src, out, verify=verify)


@case("export_long_name", "export", "accepted", "an --out name of 250 characters (legal; the temporary is longer)")
def _(fx, d):
    out = d / ("m" * 245 + ".json")
    return _export(fx.model(), out, "neuralpi", verify=lambda r: None if out.is_file() else "not written")


# ----------------------------------------------------------- class 4: formerly internal errors

@case("render_missing_input_existing_out", "render", "error", "a missing --input rendered onto an existing --out",
      error=r"^error: \S*missing\.wav: no such file; check the input path$")
def _(fx, d):
    out = d / "out.wav"
    out.write_bytes(b"the user's file")
    return _render(fx.model(), d / "missing.wav", out, "--overwrite")


@case("train_threads_negative", "train", "error", "--threads -1",
      error=r"^error: ampxfer train: argument --threads: must be a whole number in \[1, 1024\], not -1")
def _(fx, d):
    from tests.support.faults import _train

    return _train(fx, d / "run", "--threads", "-1")


@case("prepare_latency_window_zero", "prepare", "error", "--latency-window 0",
      error=r"^error: ampxfer prepare: argument --latency-window: must be a number in \(0, 10\], not 0\.0")
def _(fx, d):
    xin, tgt = _pair(d, fx)
    return _prepare(xin, tgt, d / "data", "--latency-window", "0")


for _rate in (0, -44100):
    def _rate_case(fx, d, _rate=_rate):
        model = _model_variant(fx, d, "rate.json", lambda o: o["model_data"].__setitem__("sample_rate", _rate))
        return _render(model, _di(fx, d), d / "out.wav")
    case(f"model_sample_rate_{'zero' if _rate == 0 else 'negative'}", "render", "error",
         f"a model JSON with sample_rate {_rate}",
         error=r"^error: \S*rate\.json: model_data\.sample_rate must be a whole number in \[8000, 192000\], not "
               + str(_rate) + "$")(_rate_case)


@case("model_num_layers_text", "export", "error", "a model JSON with num_layers \"one\"",
      error=r"^error: \S*layers\.json: model_data\.num_layers must be a whole number in \[1, 64\], not 'one'$")
def _(fx, d):
    model = _model_variant(fx, d, "layers.json", lambda o: o["model_data"].__setitem__("num_layers", "one"))
    return _export(model, d / "out.json", "rtneural")


@case("model_deeply_nested", "import", "error", "a JSON file nested 100000 levels deep",
      error=r"^error: \S*nested\.json: JSON nested far too deeply for a model file; not a model$")
def _(fx, d):
    return _import(_model_variant(fx, d, "nested.json", text="[" * 100000 + "]" * 100000), d / "m.json")


# ----------------------------------------------------------- class 5: wrong recordings that pass

@case("swapped_pair", "prepare", "warning", "input and target swapped (the target leads)", warnings=["swapped"])
def _(fx, d):
    xin, tgt = _pair(d, fx, names=("amp.wav", "di.wav"), source=lambda x: fixture_amp(x),
                     target=lambda x, y: x)
    return _prepare(xin, tgt, d / "data")


#: Samples the fixture's clock drift adds to the delay from start to end of the 8 s pair.
DRIFT = 6


@case("clock_drift", "prepare", "warning", f"target on another clock: the delay grows {DRIFT} samples",
      warnings=["clock_drift"])
def _(fx, d):
    import soxr

    def drifted(x, y):
        return soxr.resample(y, RATE, RATE * (1 + DRIFT / len(y)), quality="VHQ")[:len(y)]

    def verify(result):
        drift = [w for w in json.loads((d / "data" / "manifest.json").read_text())["warnings"]
                 if w["code"] == "clock_drift"][0]["details"]["drift_samples"]
        return None if abs(drift - DRIFT) <= 0.5 else f"drift {drift}, expected {DRIFT} +- 0.5"
    xin, tgt = _pair(d, fx, target=drifted)
    return _prepare(xin, tgt, d / "data", verify=verify)


@case("float_over_range", "prepare", "warning", "float recordings peaking at 8.0 (not clipping)",
      warnings=["over_range", "over_range"])
def _(fx, d):
    xin, tgt = _pair(d, fx, subtype="FLOAT", source=lambda x: 16.0 * x, target=lambda x, y: 20.0 * y)
    return _prepare(xin, tgt, d / "data")


@case("flip_polarity_needless", "prepare", "warning", "--flip-polarity on a target whose polarity is right",
      warnings=["flip_polarity_worse"])
def _(fx, d):
    xin, tgt = _pair(d, fx)
    return _prepare(xin, tgt, d / "data", "--flip-polarity")


@case("stereo_di_and_device", "prepare", "accepted",
      "one stereo file: DI left, device right (--input-channel 0 --target-channel 1)")
def _(fx, d):
    x, y = fx.pair_signals()
    both = write_audio_file(d / "both.wav", np.column_stack([x, y]), RATE, "PCM_24")
    make_read_only(both)

    def verify(result):
        text = (d / "data" / "manifest.json").read_text()
        used = [int(v) for v in re.findall(r'"channel_used": (\d+)', text)]
        return None if used == [0, 1] else f"channels used {used}, expected input 0 then target 1"
    return Setup(["prepare", "--input", str(both), "--target", str(both), "--out", str(d / "data"),
                  *SMALL_SPLITS, "--input-channel", "0", "--target-channel", "1"], [both], d / "data", verify=verify)
