"""The plugin files of a capture: every format its model fits, and which plugins load each."""

from __future__ import annotations

from typing import List, Tuple

from ampxfer_lib import __version__
from ampxfer_lib.fileio import PathLike, atomic_write_text, make_dirs

#: (format, file name suffix): NeuralPi/Proteus take the AGAM JSON; AIDA-X reads RTNeural JSON.
PLUGIN_FILES = (("neuralpi", ".json"), ("rtneural", ".aidax.json"), ("nam", ".nam"))


def export_plugins(weights, folder: PathLike, name: str) -> Tuple[List[dict], List[dict]]:
    """Write ``weights`` in every plugin format it fits into ``folder``.

    Returns ``(files, skipped)``: ``[{"file", "format", "notes"}]`` (file names relative to
    ``folder``; notes say which plugins load each file) and ``[{"format", "why"}]`` for the
    formats that cannot hold this model (NAM needs a model without the skip connection).
    Also writes ``folder/README.txt`` with the same information.
    """
    from ampxfer_lib.errors import ModelFormatError
    from ampxfer_lib.library.index import slug
    from ampxfer_lib.model.formats import export_model

    folder = make_dirs(folder)
    stem = slug(name)
    files, skipped = [], []
    for fmt, suffix in PLUGIN_FILES:
        path = folder / f"{stem}{suffix}"
        try:
            notes = export_model(weights, fmt, path, metadata={"name": name}, source=name)
        except ModelFormatError as exc:
            skipped.append({"format": fmt, "why": str(exc).split(": ", 1)[-1]})
            continue
        files.append({"file": path.name, "format": fmt, "notes": notes})
    lines = [f"Plugin files of the capture {name!r} (written by ampxfer {__version__}).", ""]
    for f in files:
        lines.append(f"{f['file']}  ({f['format']})")
        lines += [f"  - {n}" for n in f["notes"]]
    for s in skipped:
        lines.append(f"no {s['format']} file: {s['why']}")
    atomic_write_text(folder / "README.txt", "\n".join(lines) + "\n")
    return files, skipped
