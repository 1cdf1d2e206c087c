"""Checks of single values, shared by the command line, the configs and the file readers.

A value from a flag, a ``--set`` override, a study config or a model file may be text, a
bool, NaN, an infinity, zero, negative or absurdly large. Every such value is checked here
before any arithmetic sees it, so that a bad one ends in a one-line :class:`ConfigError`
naming the flag or field and the range, never in a ``TypeError`` deep inside training.

Two faces of the same rule:

* :func:`number` checks a value already parsed (a dataclass field, a JSON field) and
  raises ``error`` (default :class:`ConfigError`) with ``name`` in the message;
* :func:`arg_float` / :func:`arg_int` are argparse ``type=`` callables: argparse itself
  adds ``argument --flag:`` to their message and exits with status 2 and its usage line.
"""

from __future__ import annotations

import argparse
import math
import numbers
from typing import Any, Callable, Dict, Iterable, Optional, Type

from ampxfer_lib.errors import AmpxferError, ConfigError

#: The largest whole number any setting may hold: above it a count (epochs, samples, hidden
#: units) is a typo, and float arithmetic on it stops being exact.
MAX_INT = 2 ** 31 - 1
#: Absurd-size limits: beyond them a value is a typo, not a choice (a hidden size of 100000
#: would allocate 160 GB of weights before failing).
MAX_HIDDEN = 1024
MAX_THREADS = 1024
MAX_CHANNEL = 255


def _range_text(lo: Optional[float], hi: Optional[float], lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return ""


def number(value, name: str, *, integer: bool = False, lo: Optional[float] = None, hi: Optional[float] = None,
           lo_open: bool = False, hi_open: bool = False, optional: bool = False,
           error: Type[AmpxferError] = ConfigError, where: str = ""):
    """``value`` checked as a finite number (``integer``: a whole one) within the bounds.

    Returns the value as ``int`` or ``float`` (an integral float such as ``3.0`` is accepted
    where a whole number is wanted; JSON writers produce those). ``None`` passes when
    ``optional``. Text, bools, NaN and infinities are refused with a one-line ``error``
    naming ``name`` (prefixed with ``where``, e.g. the file, when given).
    """
    prefix = f"{where}: " if where else ""
    kind = "a whole number" if integer else ("a number" if lo is not None or hi is not None else "a finite number")
    want = f"{kind} {_range_text(lo, hi, lo_open, hi_open)}".rstrip()
    if value is None and optional:
        return None
    # bool is an int subclass: true/false in a JSON file or --set is a typo for a number.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise error(f"{prefix}{name} must be {want}, not {value!r}")
    # numpy scalars (np.float32 is no float subclass) become plain Python numbers.
    raw = value  # messages show the value as given
    value = int(value) if isinstance(value, numbers.Integral) and integer else float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise error(f"{prefix}{name} must be {want}, not {value!r}")
    if integer:
        if isinstance(value, float):
            if value != int(value):
                raise error(f"{prefix}{name} must be {want}, not {raw!r}")
            value = int(value)
        if abs(value) > MAX_INT:
            raise error(f"{prefix}{name} {raw} is absurdly large; it must be {want}")
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and (value >= hi if hi_open else value > hi)
    if too_low or too_high:
        raise error(f"{prefix}{name} must be {want}, not {raw!r}")
    return value


def choice(value, name: str, options, error: Type[AmpxferError] = ConfigError):
    """``value`` if it is one of ``options`` (compared as given, text or not)."""
    if not isinstance(value, str) or value not in options:
        raise error(f"{name} must be one of {', '.join(options)}, not {value!r}")
    return value


def flag_bool(value, name: str, optional: bool = False, error: Type[AmpxferError] = ConfigError):
    """A real ``True``/``False`` (``None`` when ``optional``): ``"no"`` would otherwise be true."""
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise error(f"{name} must be true or false, not {value!r}")
    return value


def text(value, name: str, optional: bool = False, error: Type[AmpxferError] = ConfigError):
    """A string (``None`` when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise error(f"{name} must be text, not {value!r}")
    return value


def check_fields(obj, rules: Dict[str, Dict[str, Any]], flags: Iterable[str] = (),
                 error: Type[AmpxferError] = ConfigError, where: str = "") -> None:
    """Check each field of a dataclass instance ``obj`` against ``rules`` (see :func:`number`;
    ``kind="text"`` / ``"bool"`` for the others). Fields in ``flags`` are named as their
    command-line flag (``--max-epochs``), the rest as the setting (``batch_size``)."""
    flags = set(flags)
    for name, rule in rules.items():
        rule = dict(rule)
        kind = rule.pop("kind", "number")
        label = f"--{name.replace('_', '-')}" if name in flags else name
        value = getattr(obj, name)
        if kind == "text":
            text(value, label, rule.get("optional", False), error)
        elif kind == "bool":
            flag_bool(value, label, rule.get("optional", False), error)
        else:
            checked = number(value, label, error=error, where=where, **rule)
            if checked is not value and checked is not None:
                # 3.0 for a count becomes 3, 1 for a rate 1.0: torch and the JSON record see one
                # type per field (the dataclass is frozen, so past its own __setattr__).
                object.__setattr__(obj, name, checked)


def _arg(integer: bool, lo, hi, lo_open, hi_open) -> Callable[[str], object]:
    def parse(raw: str):
        kind = int if integer else float
        try:
            value = kind(raw)
        except ValueError:
            if not integer:
                raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
            try:  # "3.0" for a count is fine, "2.5" is not
                f = float(raw)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
            value = f
        try:
            return number(value, "the value", integer=integer, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).replace("the value must be", "must be")) from None

    parse.__name__ = "whole number" if integer else "number"  # argparse's fallback wording
    return parse


def arg_float(lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False,
              hi_open: bool = False) -> Callable[[str], float]:
    """argparse ``type=``: a finite float within the bounds (NaN and infinities refused)."""
    return _arg(False, lo, hi, lo_open, hi_open)


def arg_int(lo: Optional[int] = None, hi: Optional[int] = MAX_INT) -> Callable[[str], int]:
    """argparse ``type=``: a whole number within the bounds."""
    return _arg(True, lo, hi, False, False)


# --------------------------------------------------------------------------- prepare

#: PrepareConfig's fields as ``prepare`` flags: type and range (see :func:`check_fields`).
PREPARE_FIELD_RULES: Dict[str, Dict[str, Any]] = {
    "rate": dict(integer=True, lo=8000, hi=192000),
    "align": dict(kind="text"),
    "val_seconds": dict(lo=0, hi=86400, lo_open=True),
    "test_seconds": dict(lo=0, hi=86400, lo_open=True),
    "limited_seconds": dict(lo=0, hi=86400, lo_open=True),
    "channel": dict(integer=True, lo=0, hi=MAX_CHANNEL, optional=True),
    "input_channel": dict(integer=True, lo=0, hi=MAX_CHANNEL, optional=True),
    "target_channel": dict(integer=True, lo=0, hi=MAX_CHANNEL, optional=True),
    "flip_polarity": dict(kind="bool"),
    "gap_seconds": dict(lo=0, hi=60),
    "segment_seconds": dict(lo=0, hi=60, lo_open=True),
    "holdout_knob": dict(lo=0, hi=1, optional=True),
}
CHECK_FIELD_RULES: Dict[str, Dict[str, Any]] = {
    "latency_window_seconds": dict(lo=0, hi=10, lo_open=True),
    "silence_dbfs": dict(lo=-300, hi=0),
    "clip_level": dict(lo=0, hi=1, lo_open=True),
    "clip_run": dict(integer=True, lo=1),
    "dc_offset": dict(lo=0),
    "bypass_esr": dict(lo=0),
    "polarity_correlation": dict(lo=0, hi=1),
}
#: CheckConfig fields that are prepare flags under another name.
CHECK_FLAGS = {"latency_window_seconds": "--latency-window", "silence_dbfs": "--silence-dbfs"}


def check_prepare_config(config) -> None:
    """Types and ranges of a PrepareConfig and its CheckConfig; then the split lengths.

    A validation or test split shorter than one training segment rounds to a handful of
    samples (0.00001 s is none at all) and its ESR means nothing, so it is refused.
    """
    check_fields(config, PREPARE_FIELD_RULES, flags=[k for k in PREPARE_FIELD_RULES if k not in
                                                      ("gap_seconds", "segment_seconds")])
    checks = config.checks
    for name, rule in CHECK_FIELD_RULES.items():
        number(getattr(checks, name), CHECK_FLAGS.get(name, name), **rule)
    for name in ("val_seconds", "test_seconds", "limited_seconds"):
        value = getattr(config, name)
        if value < config.segment_seconds:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} {value:g} is shorter than one {config.segment_seconds:g} s training segment; "
                              f"give at least {config.segment_seconds:g} s (a few seconds or more for a "
                              "meaningful ESR)")


# --------------------------------------------------------------------------- study

def check_study_config(config, train_rules: Dict[str, Dict[str, Any]]) -> None:
    """Types and ranges of a StudyConfig's own fields and of its ``train``/``transfer``
    overrides (each checked by its rule in ``train_rules``, TrainConfig's), named as in the
    JSON file."""
    text(config.preset, "preset")
    text(config.name, "name")
    for i, seed in enumerate(config.seeds):
        number(seed, f"seeds[{i}]", integer=True, lo=0)
    for i, size in enumerate(config.data_sizes):
        text(size, f"data_sizes[{i}]")
    number(config.threads, "threads", integer=True, lo=1, hi=MAX_THREADS)
    number(config.smoke_epochs, "smoke_epochs", integer=True, lo=1, hi=MAX_INT)
    number(config.source_seed, "source_seed", integer=True, lo=0)
    number(config.patience, "patience", integer=True, lo=0, optional=True)
    for what in ("train", "transfer"):
        for key, value in getattr(config, what).items():
            rule = dict(train_rules.get(key, {"kind": "unknown"}))
            kind = rule.pop("kind", "number")
            if kind == "text":
                text(value, f"{what}.{key}", rule.get("optional", False))
            elif kind == "bool":
                flag_bool(value, f"{what}.{key}", rule.get("optional", False))
            elif kind == "number":
                number(value, f"{what}.{key}", **rule)
