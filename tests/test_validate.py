"""ampxfer_lib.validate: one-line refusals of values that are not numbers, out of range or
of the wrong type, and the configs that use them (issue 13, class 3)."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

from ampxfer_lib.errors import ConfigError, ModelFormatError
from ampxfer_lib.validate import MAX_INT, arg_float, arg_int, number


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), "1", None, True, False, [1], {}])
def test_number_refuses_what_is_not_a_finite_number(value):
    with pytest.raises(ConfigError) as exc:
        number(value, "--x")
    assert str(exc.value) == f"--x must be a finite number, not {value!r}"


def test_number_bounds_and_their_wording():
    assert number(0.5, "k", lo=0, hi=1) == 0.5
    assert number(0, "k", lo=0, hi=1) == 0 and number(1, "k", lo=0, hi=1) == 1
    with pytest.raises(ConfigError, match=r"^k must be a number in \(0, 1\], not 0$"):
        number(0, "k", lo=0, hi=1, lo_open=True)
    with pytest.raises(ConfigError, match=r"^k must be a number >= 2, not 1\.5$"):
        number(1.5, "k", lo=2)
    with pytest.raises(ConfigError, match=r"^k must be a number < 3, not 3$"):
        number(3, "k", hi=3, hi_open=True)


def test_whole_numbers_integral_floats_numpy_and_absurd_sizes():
    assert number(3.0, "n", integer=True) == 3 and type(number(3.0, "n", integer=True)) is int
    assert type(number(np.int64(4), "n", integer=True)) is int
    assert type(number(np.float32(0.25), "x")) is float and number(np.float32(0.25), "x") == 0.25
    with pytest.raises(ConfigError, match=r"^n must be a whole number, not 2\.5$"):
        number(2.5, "n", integer=True)
    with pytest.raises(ConfigError, match=r"absurdly large"):
        number(MAX_INT + 1, "n", integer=True)
    assert number(None, "n", optional=True) is None
    with pytest.raises(ModelFormatError, match=r"^f\.json: n must be"):
        number("x", "n", error=ModelFormatError, where="f.json")


def test_argparse_types_parse_and_refuse():
    f, i = arg_float(0, 1), arg_int(1, 8)
    assert f("0.25") == 0.25 and f(".5") == 0.5 and i("3") == 3 and i("3.0") == 3
    for bad, parse, msg in (("nan", f, "must be a number in [0, 1], not nan"), ("inf", f, "not inf"),
                            ("abc", f, "'abc' is not a number"), ("1.5", f, "not 1.5"), ("0", i, "not 0"),
                            ("2.5", i, "not 2.5"), ("x", i, "'x' is not a whole number")):
        with pytest.raises(argparse.ArgumentTypeError) as exc:
            parse(bad)
        assert msg in str(exc.value), (bad, str(exc.value))


def test_train_config_fields_typed_and_normalised():
    from ampxfer_lib.training.config import TrainConfig, make_config

    cfg = make_config("d", threads=2.0, max_epochs=5.0, esr_weight=1)
    assert (type(cfg.threads), type(cfg.max_epochs), type(cfg.esr_weight)) == (int, int, float)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    for bad, msg in ((dict(lr="0.001x"), r"^--lr must be a number > 0, not '0\.001x'$"),
                     (dict(lr=float("nan")), r"^--lr must be a number > 0, not nan$"),
                     (dict(batch_size=True), r"^batch_size must be a whole number in \[1, 100000\], not True$"),
                     (dict(threads=-1), r"^--threads must be a whole number in \[1, 1024\], not -1$"),
                     (dict(hidden_size=10 ** 6), r"^--hidden-size must be a whole number in \[1, 1024\]"),
                     (dict(skip="no"), r"^skip must be true or false, not 'no'$"),
                     (dict(weight_decay=float("inf")), r"^weight_decay must be a number in \[0, 1\], not inf$"),
                     (dict(checkpoint_seconds=-1), r"^checkpoint_seconds must be a number >= 0, not -1$")):
        with pytest.raises(ConfigError, match=msg):
            make_config("d", **bad)


def test_set_values_are_numbers_where_a_user_means_one():
    from ampxfer_lib.cli.common import key_values

    assert key_values(["lr=.001", "max-epochs=3", "x=1.", "name=abc", "l=[1, 2]"]) == \
        {"lr": 0.001, "max_epochs": 3, "x": 1.0, "name": "abc", "l": [1, 2]}


def test_prepare_config_ranges_and_split_lengths():
    from ampxfer_lib.data.audio import CheckConfig
    from ampxfer_lib.data.prepare import PrepareConfig

    with pytest.raises(ConfigError, match=r"^--test-seconds 1e-05 is shorter than one 0\.5 s training segment"):
        PrepareConfig(test_seconds=0.00001)
    with pytest.raises(ConfigError, match=r"^--val-seconds must be a number in \(0, 86400\], not nan$"):
        PrepareConfig(val_seconds=float("nan"))
    with pytest.raises(ConfigError, match=r"^--latency-window must be a number in \(0, 10\], not 0$"):
        PrepareConfig(checks=CheckConfig(latency_window_seconds=0))
    with pytest.raises(ConfigError, match=r"^--target-channel must be a whole number in \[0, 255\], not -1$"):
        PrepareConfig(target_channel=-1)
    c = PrepareConfig(input_channel=0, target_channel=1)
    assert PrepareConfig.from_dict(c.to_dict()) == c


def test_study_config_fields_and_overrides():
    from ampxfer_lib.study.config import StudyConfig

    base = {"pairs": [{"name": "p", "source": {"model": "m.json"}, "target": {"data": "t"}}]}
    assert StudyConfig.from_dict(base).threads == 1
    for extra, msg in (({"threads": "2"}, r"^threads must be a whole number in \[1, 1024\], not '2'$"),
                       ({"seeds": [-1]}, r"^seeds\[0\] must be a whole number >= 0, not -1$"),
                       ({"smoke_epochs": math.inf}, r"^smoke_epochs must be a whole number"),
                       ({"train": {"lr": "fast"}}, r"^train\.lr must be a number > 0, not 'fast'$"),
                       ({"transfer": {"batch_size": 0}}, r"^transfer\.batch_size must be a whole number in \[1, "),
                       ({"preset": ["agam"]}, r"^preset must be text, not \['agam'\]$")):
        with pytest.raises(ConfigError, match=msg):
            StudyConfig.from_dict({**base, **extra})


def test_render_refuses_knobs_outside_the_trained_range():
    from ampxfer_lib.model.network import new_model
    from ampxfer_lib.model.weights import ModelConfig
    from ampxfer_lib.model.render import render

    weights = new_model(ModelConfig(2, 4), seed=0).weights()
    x = np.zeros(64, dtype=np.float32)
    assert render(weights, x, [0.5]).shape == (64,)
    for bad in (float("nan"), 1.5, -0.1):
        with pytest.raises(ConfigError, match=r"^knob 1 must be a number in \[0, 1\]"):
            render(weights, x, [bad])


def test_temporary_names_fit_name_max(tmp_path):
    from ampxfer_lib import fileio

    name = "é" * 120 + ".json"  # 245 bytes in UTF-8: legal, its temporary would not be
    fileio.atomic_write_text(tmp_path / name, "x")
    assert (tmp_path / name).read_text() == "x" and [p.name for p in tmp_path.iterdir()] == [name]
    stem = fileio._tmp_stem(name)
    assert len(("." + stem + ".abcdefgh.tmp").encode()) <= 255 and name.startswith(stem)
