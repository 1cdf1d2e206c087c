"""The model library: index round trip, names and files never clobbered, damage named, ranking input, CLI."""

import json
import os
from pathlib import Path

import pytest

from ampxfer_lib.cli.main import main
from ampxfer_lib.errors import ConfigError
from ampxfer_lib.library.index import (INDEX, LibraryEntry, ModelLibrary, find_models, library_model_paths,
                                       model_digest, parse_knobs, user_library_dir)
from ampxfer_lib.model.formats import export_model, import_model, load_model, save_model
from ampxfer_lib.model.network import new_model
from ampxfer_lib.model.weights import ModelConfig
from ampxfer_lib.transfer.rank import RankConfig, rank_library

from conftest import file_hashes


def model_file(folder: Path, name: str, seed: int, **config) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    save_model(new_model(ModelConfig(hidden_size=6, **config), seed=seed).weights(), path)
    return path


def one_error_line(err):
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_index_round_trip(tmp_path):
    src = model_file(tmp_path / "src", "a.json", 1)
    lib = ModelLibrary(tmp_path / "lib")
    assert lib.entries() == [] and not (tmp_path / "lib").exists()  # reading creates nothing
    a = lib.add(src, "Blues Jr", kind="amp", knobs=["gain=7", "tone=noon"], test_esr=0.0123,
                source="my capture", licence="CC-BY-4.0", date="2024-05-01")
    b = lib.add(model_file(tmp_path / "src", "b.json", 2, skip=False), "fuzz", kind="fuzz")
    assert a == LibraryEntry(name="Blues Jr", file="Blues_Jr.json", kind="amp", knobs=(("gain", "7"), ("tone", "noon")),
                             sample_rate=44100, hidden_size=6, skip=True, knob_inputs=0, test_esr=0.0123,
                             date="2024-05-01", source="my capture", licence="CC-BY-4.0",
                             sha256=model_digest(src), capture=None)
    assert b.skip is False and b.source == os.path.abspath(tmp_path / "src" / "b.json") and b.licence == ""
    again = ModelLibrary(tmp_path / "lib")
    assert again.entries() == [a, b]
    assert LibraryEntry.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    index = json.loads((tmp_path / "lib" / INDEX).read_text())
    assert index["format"] == "ampxfer-model-library" and index["version"] == 1
    assert index["models"][0]["knobs"] == {"gain": "7", "tone": "noon"}
    assert load_model(again.model_path(a)).equal(load_model(src))


def test_same_name_same_model_is_kept_and_another_model_is_refused(tmp_path):
    src = model_file(tmp_path, "a.json", 1)
    lib = ModelLibrary(tmp_path / "lib")
    first = lib.add(src, "amp")
    before = file_hashes(*(tmp_path / "lib").iterdir())
    assert lib.add(src, "amp") == first
    with pytest.raises(ConfigError, match=r"already holds a model named 'amp'; choose another --name, or "
                                          r"`ampxfer library remove amp` first"):
        lib.add(model_file(tmp_path, "b.json", 2), "amp")
    assert file_hashes(*(tmp_path / "lib").iterdir()) == before
    assert lib.free_name("amp") == "amp-2" and lib.free_name("other") == "other"


def test_files_in_the_way_are_never_overwritten(tmp_path):
    folder = tmp_path / "lib"
    folder.mkdir()
    (folder / "amp.json").write_text("my own notes")
    lib = ModelLibrary(folder)
    e1 = lib.add(model_file(tmp_path, "a.json", 1), "amp")
    e2 = lib.add(model_file(tmp_path, "b.json", 2), "index")  # would be index.json
    assert (e1.file, e2.file) == ("amp-2.json", "index-2.json")
    assert (folder / "amp.json").read_text() == "my own notes"
    assert json.loads((folder / INDEX).read_text())["format"] == "ampxfer-model-library"


def test_remove(tmp_path):
    lib = ModelLibrary(tmp_path / "lib")
    a = lib.add(model_file(tmp_path, "a.json", 1), "a")
    b = lib.add(model_file(tmp_path, "b.json", 2), "b")
    assert lib.remove("a") == a
    assert lib.entries() == [b] and not (tmp_path / "lib" / a.file).exists() and (tmp_path / "lib" / b.file).exists()
    with pytest.raises(ConfigError, match=r"no model named 'zz' \(the library holds: b\)"):
        lib.remove("zz")


@pytest.mark.parametrize("content, words", [
    ("{not json", "damaged model library index (not valid JSON"),
    ('{"format": "something else", "models": []}', "not an ampxfer model library index"),
    ('{"format": "ampxfer-model-library", "version": 1, "models": [{"name": "a"}]}', "without 'name' and 'file'"),
    ('{"format": "ampxfer-model-library", "version": 1, "models": [{"name": "a", "file": "a.json"},'
     ' {"name": "a", "file": "b.json"}]}', "the name 'a' appears twice"),
    ('{"format": "ampxfer-model-library", "version": 9, "models": []}', "written by a newer ampxfer"),
    ('{"format": "ampxfer-model-library", "version": 1, "models": [{"name": "a", "file": "a.json", "knobs": 5}]}',
     "entry 'a' has knobs that are not NAME: SETTING pairs"),
])
def test_a_damaged_index_is_named_in_one_line(tmp_path, content, words):
    (tmp_path / INDEX).write_text(content)
    with pytest.raises(ConfigError) as exc:
        ModelLibrary(tmp_path).entries()
    msg = str(exc.value)
    assert msg.startswith(str(tmp_path / INDEX) + ": ") and words in msg and "\n" not in msg
    with pytest.raises(ConfigError):  # nothing is added to a library whose index cannot be read
        ModelLibrary(tmp_path).add(model_file(tmp_path / "src", "a.json", 1), "x")
    assert (tmp_path / INDEX).read_text() == content


def test_find_models_for_ranking(tmp_path, small_data):
    indexed = ModelLibrary(tmp_path / "mine")
    e1 = indexed.add(model_file(tmp_path / "src", "a.json", 1), "first")
    e2 = indexed.add(model_file(tmp_path / "src", "b.json", 2), "second")
    (tmp_path / "mine" / e2.file).unlink()  # a file lost behind the index's back
    (tmp_path / "mine" / "stray.json").write_text("{}")  # not indexed: ignored
    plain = tmp_path / "shipped"
    model_file(plain / "amps", "clean.json", 3)
    model_file(plain / ".hidden", "x.json", 4)
    messages = []
    found = find_models([tmp_path / "mine", plain, tmp_path / "mine"], log=messages.append)
    assert [(m.name, m.path) for m in found] == [("first", tmp_path / "mine" / e1.file),
                                                 ("clean", plain / "amps" / "clean.json")]
    assert found[0].entry == e1 and found[1].entry is None
    assert len(messages) == 1 and "'second'" in messages[0] and "missing" in messages[0]
    with pytest.raises(ConfigError, match="no such folder"):
        find_models([tmp_path / "absent"])
    assert find_models([tmp_path / "absent"], missing_ok=True) == []
    paths = library_model_paths([tmp_path / "mine", plain])
    ranking = rank_library(paths, small_data, RankConfig(probe_seconds=1.0, probe_chunks=2, finetune_top=0),
                           progress=False)
    assert sorted(e["model"] for e in ranking) == sorted(str(p) for p in paths)
    assert all(e["score"] is not None for e in ranking)


def test_user_library_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("AMPXFER_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_library_dir() == tmp_path / "home" / ".ampxfer" / "models"
    assert user_library_dir(tmp_path / "out", colab=False) == tmp_path / "home" / ".ampxfer" / "models"
    assert user_library_dir(tmp_path / "out", colab=True) == tmp_path / "out" / "library"
    monkeypatch.setenv("AMPXFER_MODELS", str(tmp_path / "env"))
    assert user_library_dir(tmp_path / "out", colab=True) == tmp_path / "env"


def test_parse_knobs():
    assert parse_knobs({"gain": 7}) == (("gain", "7"),)
    assert parse_knobs([("tone", 0.5), "level = 3"]) == (("tone", "0.5"), ("level", "3"))
    with pytest.raises(ConfigError, match="expected NAME=SETTING"):
        parse_knobs(["gain"])
    with pytest.raises(ConfigError, match="needs a name"):
        parse_knobs(["=3"])


def test_other_formats_are_stored_as_agam_json(tmp_path):
    src = model_file(tmp_path, "a.json", 5)
    export_model(load_model(src), "rtneural", tmp_path / "a_aidax.json")
    entry = ModelLibrary(tmp_path / "lib").add(tmp_path / "a_aidax.json", "from aida-x")
    # RTNeural keeps the two LSTM biases summed: the library holds exactly what import reads
    assert load_model(tmp_path / "lib" / entry.file).equal(import_model(tmp_path / "a_aidax.json"))
    assert entry.sha256 == model_digest(tmp_path / "a_aidax.json")


def test_library_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AMPXFER_MODELS", str(tmp_path / "lib"))
    src = model_file(tmp_path, "a.json", 1)
    assert main(["library", "list"]) == 0
    assert "no models yet" in capsys.readouterr().out
    assert main(["library", "add", str(src), "--name", "TS9 clone", "--kind", "overdrive", "--knob", "drive=5",
                 "--test-esr", "0.02", "--licence", "MIT"]) == 0
    assert "added 'TS9 clone'" in capsys.readouterr().out
    assert main(["library", "list"]) == 0
    out = capsys.readouterr().out
    assert "TS9 clone" in out and "overdrive" in out and "0.02" in out and "MIT" in out and "[drive 5]" in out
    assert main(["library", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [LibraryEntry.from_dict(d) for d in listed] == ModelLibrary(tmp_path / "lib").entries()
    assert main(["library", "add", str(src), "--name", "other", "--test-esr", "-1"]) == 2
    assert "--test-esr" in one_error_line(capsys.readouterr().err)
    assert main(["library", "remove", "TS9 clone"]) == 0
    assert ModelLibrary(tmp_path / "lib").entries() == []
    capsys.readouterr()
    (tmp_path / "lib" / INDEX).write_text("[1, 2")
    assert main(["library", "list"]) == 2
    assert one_error_line(capsys.readouterr().err).startswith(f"error: {tmp_path / 'lib' / INDEX}: damaged")
    assert main(["library"]) == 2  # an action is required: argparse's usage line
