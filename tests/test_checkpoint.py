import os

import pytest
import torch

from ampxfer_lib.training import checkpoint as ckpt
from ampxfer_lib.errors import RunFolderError
from ampxfer_lib.fileio import atomic_write_bytes, atomic_write_json, sha256_file


def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.bin"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())

    with pytest.raises(TypeError):
        atomic_write_bytes(path, 123)  # not bytes: the old file stays, no temp file is left
    assert path.read_bytes() == b"two" and len(list(path.parent.iterdir())) == 1


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_json_and_hash(tmp_path):
    import numpy as np

    atomic_write_json(tmp_path / "a.json", {"x": np.float32(0.5), "n": np.int64(3), "arr": np.arange(2)})
    assert (tmp_path / "a.json").read_text() == '{\n  "x": 0.5,\n  "n": 3,\n  "arr": [\n    0,\n    1\n  ]\n}\n'
    (tmp_path / "h").write_bytes(b"abc")
    assert sha256_file(tmp_path / "h") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_checkpoint_round_trip_and_damage(tmp_path):
    state = {"model": {"w": torch.arange(4.0)}, "history": [{"epoch": 1, "val_loss": None}], "epoch": 1}
    ckpt.save_checkpoint(tmp_path, state)
    back = ckpt.load_checkpoint(tmp_path)
    assert torch.equal(back["model"]["w"], torch.arange(4.0)) and back["history"] == state["history"]
    assert back["format"] == ckpt.CHECKPOINT_FORMAT
    data = (tmp_path / ckpt.CHECKPOINT).read_bytes()
    (tmp_path / ckpt.CHECKPOINT).write_bytes(data[: len(data) // 2])
    with pytest.raises(RunFolderError, match="unreadable checkpoint"):
        ckpt.load_checkpoint(tmp_path)
    with pytest.raises(RunFolderError, match="no checkpoint"):
        ckpt.load_checkpoint(tmp_path / "none")
    torch.save({"something": 1}, tmp_path / ckpt.CHECKPOINT)
    with pytest.raises(RunFolderError, match="not an ampxfer checkpoint"):
        ckpt.load_checkpoint(tmp_path)
