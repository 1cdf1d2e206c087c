"""Small file helpers: atomic writes, folders and hashes.

Everything ampxfer writes goes through :func:`atomic_write_bytes` (temporary file in the
same folder, fsync, rename), so a kill at any moment leaves either the old file or the new
one, never half of one; what a kill can leave is a hidden ``.NAME.*.tmp`` next to it, which
readers ignore and :func:`remove_stale_temporaries` clears. Sources are only ever opened
for reading.

Network file systems (a Google Drive mount in Colab) keep the rename atomic within a folder
but may refuse ``chmod`` or a folder ``fsync`` and may fail a write now and then: those
are skipped or retried, and a write that keeps failing raises :class:`OutputError` with the
path, so the command line says what happened instead of showing an ``OSError``.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

from ampxfer_lib.errors import OutputError

PathLike = Union[str, os.PathLike]

_UMASK = os.umask(0)
os.umask(_UMASK)

#: errno values worth a retry: a network or FUSE file system that hiccups (Drive in Colab).
_TRANSIENT = {errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.EINTR,
              getattr(errno, "ENOTCONN", -1), getattr(errno, "ESTALE", -1)}
#: Seconds to wait before each retry of a failed write.
RETRY_DELAYS = (0.5, 2.0)
#: A function called at three moments of every atomic write, ``observer(stage, path)``:
#: ``partial`` (half the temporary file written and flushed), ``written`` (the temporary file
#: complete) and ``renamed`` (the new file in place). None in production; a test installs one
#: to simulate a crash at an exact point of a write (tests/support/killing_run.py).
write_observer: Optional[Callable[[str, Path], None]] = None


def _tmp_stem(name: str) -> str:
    """``name`` cut so that ``.STEM.XXXXXXXX.tmp`` fits NAME_MAX (255 bytes) like the name itself."""
    return os.fsencode(name)[:255 - 14].decode("utf-8", errors="ignore")


def _write_once(path: Path, data: bytes) -> None:
    observe = write_observer
    fd, tmp = tempfile.mkstemp(prefix=f".{_tmp_stem(path.name)}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            # mkstemp creates 0600; give the file the permissions a plain open() would.
            os.chmod(tmp, 0o666 & ~_UMASK)
        except OSError:
            pass  # some FUSE mounts (Google Drive) have no permissions to set
        with os.fdopen(fd, "wb") as f:
            if observe is None:
                f.write(data)
            else:
                f.write(data[: len(data) // 2])
                f.flush()
                observe("partial", path)
                f.write(data[len(data) // 2:])
            f.flush()
            os.fsync(f.fileno())
        if observe is not None:
            observe("written", path)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if observe is not None:
        observe("renamed", path)
    _fsync_dir(path.parent)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically (the folder is created if needed)."""
    path = Path(path)
    make_dirs(path.parent)
    for attempt in range(len(RETRY_DELAYS) + 1):
        try:
            _write_once(path, data)
            return
        except OSError as exc:
            if exc.errno in _TRANSIENT and attempt < len(RETRY_DELAYS):
                time.sleep(RETRY_DELAYS[attempt])
                continue
            raise OutputError(f"{path}: cannot write ({exc.strerror or exc}); check that the folder is writable "
                              "and the disk (or Google Drive) has space, then rerun the same command") from None


def make_dirs(folder: PathLike) -> Path:
    """``mkdir -p`` that explains a failure (a file in the way, no permission) in one line."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else (exc.strerror or str(exc))
        raise OutputError(f"{folder}: cannot create the folder ({why}); choose another --out") from None
    return folder


def _fsync_dir(folder: Path) -> None:
    # The rename is only durable once the folder entry is on disk; not possible on Windows,
    # and refused by some FUSE mounts.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: PathLike, names: Iterable[str]) -> list:
    """Delete ``.NAME.*.tmp`` files a killed write left in ``folder`` for the given names."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for name in names:
        for tmp in folder.glob(f".{glob.escape(_tmp_stem(name))}.*.tmp"):
            try:
                tmp.unlink()
                removed.append(tmp.name)
            except OSError:
                pass
    return removed


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays reach manifests and summaries from the analysis code.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def atomic_write_json(path: PathLike, obj: Any, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False, default=_json_default) + "\n")


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def read_json_config(path: PathLike, missing: str, what: str) -> Any:
    """A user's JSON file (a study config, a conditioned spec), decoded, or one ConfigError line.

    ``missing`` follows "PATH: " when the file does not exist; ``what`` names the file in the
    message for an unreadable one. A byte-order mark (Windows Notepad saves UTF-8 with one) is
    accepted; JSON nested deeper than Python's recursion limit is refused like any bad JSON.
    """
    from ampxfer_lib.errors import ConfigError

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: {missing}") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{path}: not a readable JSON {what} ({exc})") from None

