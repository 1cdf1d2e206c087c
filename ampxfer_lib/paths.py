"""Folders outside the package: given to the library, never guessed from where it is installed.

* The shared real-gear data (DI clips and captures of real amps and pedals, not shipped with
  the package): :func:`realdata_dir` takes the folder as an argument, or reads it from the
  ``AMPXFER_REALDATA`` environment variable (set by the tests, the benchmarks, or a notebook
  parameter). Without either there is none, and callers fall back to the sample data.
* The source checkout's own folders (``notebooks/``, ``sample_data/``): :func:`checkout_dir`
  is only a *default* for running from a clone of the repository; an installed wheel has no
  such folders, so every function that reads one also takes the folder as an argument.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ampxfer_lib.fileio import PathLike

REALDATA_ENV = "AMPXFER_REALDATA"
#: The folder that holds the ``ampxfer_lib`` package: the repository root in a source checkout.
_CHECKOUT = Path(__file__).resolve().parents[1]


def realdata_dir(folder: Optional[PathLike] = None) -> Optional[Path]:
    """The real-gear data folder: ``folder``, else ``$AMPXFER_REALDATA``; None when neither
    names an existing folder."""
    given = folder if folder is not None else os.environ.get(REALDATA_ENV)
    if not given:
        return None
    path = Path(given).expanduser()
    return path if path.is_dir() else None


def checkout_dir(name: str) -> Path:
    """``<checkout>/name``: a folder of the source checkout this package runs from (it may not
    exist: an installed package has none)."""
    return _CHECKOUT / name
