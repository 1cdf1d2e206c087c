"""Whose folder it is: one ampxfer process at a time, and which files ampxfer wrote.

**The lock.** A folder ampxfer writes (data, run, study, capture, listening) is held by one
process at a time through a hidden file ``.ampxfer-lock`` in it, created with
``O_CREAT | O_EXCL`` (atomic on local disks and on the Google Drive mount in Colab, which
has no ``fcntl``/``flock`` locks and no hard links). It holds the holder's pid, host, start
time and a heartbeat that a background thread renews every :data:`HEARTBEAT_SECONDS` while
the work runs. A second process refuses with :class:`FolderInUseError`, naming the holder. A
holder that died does not block for ever: on the same host a lock whose pid is gone is
stale at once; from another host (a lost Colab runtime) once its heartbeat is older than
:data:`STALE_SECONDS`. A stale lock is taken over by renaming it away (only one process can
rename a given file), never by deleting a lock that might have been renewed meanwhile.

While a folder is held no other ampxfer process writes in it, so the hidden temporaries a
killed write left (``.NAME.XXXXXXXX.tmp``, see :mod:`ampxfer_lib.fileio`) are removed on
taking the lock.

**The record of ampxfer's files.** ``.ampxfer-files.json`` lists the files ampxfer wrote in a
folder with their sha256, so a later process can tell its own leftovers from the user's
files of the same name: only a file listed with its current content is ampxfer's to replace.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import re
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, Optional

from ampxfer_lib.errors import AmpxferError, ConfigError, OutputError
from ampxfer_lib.fileio import PathLike, atomic_write_json, make_dirs, sha256_file

LOCK = ".ampxfer-lock"
FILES = ".ampxfer-files.json"
FILES_FORMAT = "ampxfer-files"
#: How often a holder renews its heartbeat.
HEARTBEAT_SECONDS = 60.0
#: A lock from another host whose heartbeat is older than this is a dead holder's.
STALE_SECONDS = 600.0
#: What tempfile.mkstemp names fileio's temporaries: ``.NAME.`` + 8 characters + ``.tmp``.
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


class FolderInUseError(AmpxferError):
    """Another live ampxfer process holds the folder."""


def _now() -> float:
    return time.time()


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, killed but not yet reaped, does not)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there; rely on the heartbeat
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): alive as far as we can tell


def _read_lock(path: Path) -> Optional[dict]:
    """The lock's record; {} while it is being written (or damaged); None when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        d = json.loads(text)
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}


def stale_reason(holder: dict, mtime: float, now: Optional[float] = None) -> Optional[str]:
    """Why a lock's holder is gone (None: it may still run). ``mtime``: the lock file's."""
    now = _now() if now is None else now
    try:
        beat = float(holder.get("heartbeat", mtime))
        pid = int(holder.get("pid", 0))
    except (TypeError, ValueError):
        beat, pid = mtime, 0
    if holder.get("host") == socket.gethostname() and pid:
        if not pid_alive(pid):
            return f"pid {pid} is no longer running"
        if pid == os.getpid():
            # FolderLock.acquire asks only about folders this process does not hold: a lock with
            # its pid is from an earlier process that had the same pid (a restarted container).
            return f"pid {pid} is this process, which does not hold the folder"
    if now - beat > STALE_SECONDS:
        return f"no heartbeat for {now - beat:.0f} s"
    return None


def _holder_words(folder: Path, holder: dict, now: float) -> str:
    if not holder.get("pid"):
        return f"{folder}: another ampxfer process is taking this folder (its lock {folder / LOCK} is being written)"
    beat = float(holder.get("heartbeat", holder.get("since", now)))
    return (f"{folder}: in use by another ampxfer process ({holder.get('purpose', '?')}: pid {holder['pid']} on "
            f"{holder.get('host', '?')}, since {_when(float(holder.get('since', now)))}, last heartbeat "
            f"{max(0, now - beat):.0f} s ago); wait for it to finish or stop it, then rerun. A holder that died "
            f"is taken over at once on its own machine, or {STALE_SECONDS / 60:g} minutes after its last heartbeat")


#: Folders this process holds: resolved path -> (lock, depth), so a nested hold is not a deadlock.
_HELD: Dict[str, list] = {}
_HELD_GUARD = threading.Lock()


class FolderLock:
    """Hold ``folder`` for this process: ``with FolderLock(folder, "train"): ...``.

    Creates the folder if needed (and removes it again on release if it is left empty).
    Holding a folder this process already holds nests. ``purpose`` names the work in the
    message another process gets.
    """

    def __init__(self, folder: PathLike, purpose: str, heartbeat_seconds: float = HEARTBEAT_SECONDS):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.purpose = purpose
        self.heartbeat_seconds = heartbeat_seconds
        self.token = uuid.uuid4().hex
        self.created_folder = False
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._key: Optional[str] = None
        self.took_over: Optional[str] = None  # the reason a stale lock was taken over

    # ------------------------------------------------------------------ acquire / release

    def acquire(self) -> "FolderLock":
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"{self.folder}: exists and is not a folder; choose another --out")
        self._key = os.path.realpath(self.folder)
        with _HELD_GUARD:
            held = _HELD.get(self._key)
            if held is not None and held[0].pid == os.getpid():
                held[1] += 1
                return self
        self.created_folder = not self.folder.exists()
        # The folders this call creates, innermost first: each is removed again if left empty.
        self.created_folders = []
        missing = self.folder
        while not missing.exists():
            self.created_folders.append(missing)
            missing = missing.parent
        make_dirs(self.folder)
        self.pid = os.getpid()
        for _ in range(20):
            if self._create():
                break
            holder = _read_lock(self.path)
            # {}: the winner of a race is still writing its record (a few bytes): read again
            # rather than name a holder without a pid; a lock damaged for good is judged below.
            deadline = time.monotonic() + 2.0
            while holder == {} and time.monotonic() < deadline:
                time.sleep(0.02)
                holder = _read_lock(self.path)
            if holder is None:
                continue  # released meanwhile
            try:
                mtime = self.path.stat().st_mtime
            except FileNotFoundError:
                continue
            reason = stale_reason(holder, mtime)
            if reason is None:
                self._forget_folder()
                raise FolderInUseError(_holder_words(self.folder, holder, _now()))
            self._take_over(holder, reason)
        else:
            self._forget_folder()
            raise FolderInUseError(f"{self.folder}: other processes keep taking this folder; stop them and rerun")
        with _HELD_GUARD:
            _HELD[self._key] = [self, 1]
        self._remove_stale_temporaries()
        self._thread = threading.Thread(target=self._beat, name=f"ampxfer-lock {self.folder}", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        with _HELD_GUARD:
            held = _HELD.get(self._key or "")
            if held is None or held[0] is not self:
                if held is not None and held[0].pid == os.getpid():
                    held[1] -= 1  # a nested hold of a folder another FolderLock of ours holds
                return
            held[1] -= 1
            if held[1] > 0:
                return
            del _HELD[self._key]
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = _read_lock(self.path)
        if holder and holder.get("token") == self.token:
            try:
                self.path.unlink()
            except OSError:
                pass
        self._forget_folder()

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------------ the lock file

    def _record(self, since: Optional[float] = None) -> bytes:
        now = _now()
        self.since = since if since is not None else getattr(self, "since", now)
        return json.dumps({"pid": self.pid, "host": socket.gethostname(), "purpose": self.purpose,
                           "since": self.since, "heartbeat": now, "token": self.token,
                           "argv": sys.argv[:1]}).encode("utf-8")

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        except FileNotFoundError:
            make_dirs(self.folder)  # the last holder made the folder and removed it on release
            return False
        except OSError as exc:
            raise OutputError(f"{self.folder}: cannot create its lock file ({exc.strerror or exc}); check that "
                              "the folder is writable") from None
        try:
            os.write(fd, self._record(since=_now()))
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _take_over(self, holder: dict, reason: str) -> None:
        # Renaming the stale lock aside succeeds for one process only; the one that did checks
        # that it moved the lock it judged (not one a faster process created meanwhile).
        aside = self.folder / f"{LOCK}.{self.token}.stale"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise OutputError(f"{self.path}: a stale lock ({reason}) that cannot be removed ({exc.strerror or exc}); "
                              "delete it and rerun") from None
        moved = _read_lock(aside)
        if moved is not None and moved.get("token") != holder.get("token"):
            try:
                os.rename(aside, self.path)  # not ours to remove: put the live lock back
            except OSError:
                pass
            return
        try:
            aside.unlink()
        except OSError:
            pass
        self.took_over = reason

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            self.refresh()

    def refresh(self) -> bool:
        """Renew the heartbeat (the thread does it; long work may call it too). False when the
        lock is no longer this process's (someone removed it by hand)."""
        holder = _read_lock(self.path)
        if not holder or holder.get("token") != self.token:
            return False
        tmp = self.folder / f"{LOCK}.{self.token}.tmp"
        try:
            tmp.write_bytes(self._record())
            os.replace(tmp, self.path)
        except OSError:
            try:  # a Drive hiccup: the next beat tries again
                tmp.unlink()
            except OSError:
                pass
        return True

    def _remove_stale_temporaries(self) -> None:
        for p in self.folder.iterdir():
            if _TEMPORARY.match(p.name) or (p.name.startswith(LOCK + ".") and p.name.endswith((".stale", ".tmp"))):
                try:
                    p.unlink()
                except OSError:
                    pass

    def _forget_folder(self) -> None:
        for folder in getattr(self, "created_folders", []):
            try:
                folder.rmdir()  # only when empty: nothing was written
            except OSError:
                break


def holds_folder(argument: str, purpose: str) -> Callable:
    """Decorator: the function holds the folder its ``argument`` names for the whole call."""

    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def held(*args, **kwargs):
            folder = sig.bind(*args, **kwargs).arguments[argument]
            with FolderLock(folder, purpose):
                return fn(*args, **kwargs)

        return held

    return wrap


@contextlib.contextmanager
def hold_when_free(folder: PathLike, purpose: str, wait_seconds: float = 60.0) -> Iterator[FolderLock]:
    """Hold ``folder`` for one short update, waiting for another process's update to finish
    rather than refusing: for writes that take milliseconds and must all land (a library
    index entry, an ABX answer), where two processes at the same moment are normal. After
    ``wait_seconds`` the holder is named as :class:`FolderLock` names it."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            lock = FolderLock(folder, purpose).acquire()
            break
        except FolderInUseError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield lock
    finally:
        lock.release()


# --------------------------------------------------------------------------- ampxfer's own files

def _read_files(folder: Path) -> Dict[str, str]:
    try:
        d = json.loads((folder / FILES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = d.get("files") if isinstance(d, dict) else None
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(files, dict) else {}


def record_files(folder: PathLike, names: Iterable[str]) -> None:
    """Add ``names`` (files just written in ``folder``) with their sha256 to ``.ampxfer-files.json``."""
    folder = Path(folder)
    files = _read_files(folder)
    for name in names:
        files[name] = sha256_file(folder / name)
    atomic_write_json(folder / FILES, {"format": FILES_FORMAT, "files": dict(sorted(files.items()))})


def ours(folder: PathLike, name: str) -> bool:
    """Whether ``folder/name`` is a file ampxfer wrote and nobody changed since."""
    folder = Path(folder)
    want = _read_files(folder).get(name)
    try:
        return want is not None and sha256_file(folder / name) == want
    except OSError:
        return False


def check_leftovers(folder: PathLike, is_our_name: Callable[[str], bool], overwrite: bool,
                    sources: Iterable[str] = (), what: str = "prepared data") -> None:
    """Refuse a folder without the file that proves a finished write (a data set's manifest)
    unless everything visible in it is ampxfer's: files with names ampxfer gives, listed in
    ``.ampxfer-files.json`` with their content (the leftovers of an interrupted write, which
    are then replaced). A file with one of ampxfer's names but not proven is the user's: refused,
    or replaced with ``overwrite``. Other files and the ``sources`` (resolved paths) are
    refused whatever the flags."""
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []
    foreign = [n for n in names if not is_our_name(n)]
    if foreign:
        raise ConfigError(f"{folder}: the folder holds other files ({foreign[0]}, ...); choose a new or empty "
                          f"--out folder for {what}")
    src = set(sources)
    inside = [n for n in names if os.path.realpath(folder / n) in src]
    if inside:
        raise ConfigError(f"{folder}: holds the source recording {inside[0]}; choose another --out")
    unproven = [n for n in names if not ours(folder, n)]
    if unproven and not overwrite:
        raise ConfigError(f"{folder}: holds {unproven[0]}, which ampxfer did not write (it is not in {FILES}); "
                          "move it away or choose a new --out folder, or pass --overwrite to replace it")
