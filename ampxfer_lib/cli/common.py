"""What several commands share: printing to stderr, ``--set KEY=VALUE`` lists, ``--model`` paths."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

from ampxfer_lib.errors import ConfigError


def eprint(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def key_values(items: Optional[Sequence[str]], flag: str = "--set", name: str = "KEY",
               dashes_to_underscores: bool = True) -> Dict[str, object]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``: values are JSON where they parse, else text.

    ``dashes_to_underscores``: training settings may be spelled like flags (``batch-size``).
    """
    out: Dict[str, object] = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"{flag} {item!r}: expected {name}=VALUE")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_") if dashes_to_underscores else key.strip()
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = _number_or_text(value)
    return out


def _number_or_text(value: str) -> object:
    """``.001``, ``1.`` and ``+3`` are numbers to a user though not to JSON; the rest stays text
    (the setting's own check then says what it expected)."""
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def resolve_model_path(path: str) -> Path:
    """A model JSON, or a run folder (its model_best.json)."""
    p = Path(path)
    if p.is_dir():
        from ampxfer_lib.training.checkpoint import MODEL_BEST

        if not (p / MODEL_BEST).exists():
            raise ConfigError(f"{p}: no {MODEL_BEST} in this folder; give a model .json file")
        return p / MODEL_BEST
    return p
