"""Atomic writes on unfriendly file systems: retries, refusals in words, leftovers cleared."""

import errno
import os

import pytest

from ampxfer_lib import fileio
from ampxfer_lib.errors import AmpxferError, OutputError
from ampxfer_lib.fileio import atomic_write_bytes, make_dirs, remove_stale_temporaries


@pytest.fixture
def no_sleep(monkeypatch):
    waits = []
    monkeypatch.setattr(fileio.time, "sleep", waits.append)
    return waits


def test_a_transient_failure_is_retried(tmp_path, monkeypatch, no_sleep):
    """A Drive mount that fails a rename once (EIO) still gets the file, after one pause."""
    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", flaky)
    atomic_write_bytes(tmp_path / "f", b"data")
    assert (tmp_path / "f").read_bytes() == b"data" and len(calls) == 2
    assert no_sleep == [fileio.RETRY_DELAYS[0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_a_lasting_failure_is_one_line_naming_the_file(tmp_path, monkeypatch, no_sleep):
    (tmp_path / "f").write_bytes(b"old")

    def broken(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(fileio.os, "replace", broken)
    with pytest.raises(OutputError, match=r"f: cannot write \(Input/output error\); check that the folder is "
                                          r"writable .*Google Drive.* rerun the same command") as info:
        atomic_write_bytes(tmp_path / "f", b"new")
    assert isinstance(info.value, AmpxferError) and "\n" not in str(info.value)
    assert len(no_sleep) == len(fileio.RETRY_DELAYS)
    assert (tmp_path / "f").read_bytes() == b"old"  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # and no temporary file is left


def test_a_full_disk_is_not_retried(tmp_path, monkeypatch, no_sleep):
    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "replace", full)
    with pytest.raises(OutputError, match="No space left on device"):
        atomic_write_bytes(tmp_path / "f", b"new")
    assert no_sleep == []


def test_mounts_without_permissions_or_folder_fsync(tmp_path, monkeypatch):
    """FUSE mounts may refuse chmod and fsync on a folder: neither is needed for atomicity."""
    def refuse(*a, **k):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    real_fsync = os.fsync

    def fsync(fd):
        if os.path.isdir(f"/proc/self/fd/{fd}") or not os.path.exists(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_fsync(fd)

    monkeypatch.setattr(fileio.os, "chmod", refuse)
    monkeypatch.setattr(fileio.os, "fsync", fsync)
    atomic_write_bytes(tmp_path / "f", b"data")
    assert (tmp_path / "f").read_bytes() == b"data"


def test_make_dirs_explains_a_file_in_the_way(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OutputError, match=r"notes\.txt/run: cannot create the folder \(\S*notes\.txt is a file, "
                                          r"not a folder\); choose another --out"):
        make_dirs(tmp_path / "notes.txt" / "run")
    assert make_dirs(tmp_path / "a" / "b").is_dir()


def test_stale_temporaries_are_removed_by_name(tmp_path):
    for name in (".checkpoint.pt.abc123.tmp", ".history.json.x.tmp", ".mine.txt.y.tmp", "checkpoint.pt"):
        (tmp_path / name).write_bytes(b"")
    removed = remove_stale_temporaries(tmp_path, ("checkpoint.pt", "history.json"))
    assert sorted(removed) == [".checkpoint.pt.abc123.tmp", ".history.json.x.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mine.txt.y.tmp", "checkpoint.pt"]
    assert remove_stale_temporaries(tmp_path / "absent", ("x",)) == []
