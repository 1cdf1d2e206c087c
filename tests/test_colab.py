"""Colab helpers: fail-fast downloads, Drive links, the starting-model catalogue, set-up cells."""

import functools
import http.server
import inspect
import json
import os
import re
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from ampxfer_lib.notebooks import colab
from ampxfer_lib.errors import ConfigError, DownloadError
from ampxfer_lib.model.formats import load_model, neuralpi
from ampxfer_lib.model.network import new_model
from ampxfer_lib.model.weights import ModelConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def http_folder(tmp_path):
    """A local HTTP server serving tmp_path/www: (base URL, folder)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", www
    server.shutdown()
    server.server_close()


def test_download_writes_the_served_bytes(http_folder, tmp_path):
    base, www = http_folder
    (www / "model.json").write_bytes(b'{"x": 1}' * 1000)
    dest = colab.download(f"{base}/model.json", tmp_path / "got" / "model.json", timeout=10)
    assert dest.read_bytes() == b'{"x": 1}' * 1000


def test_download_keeps_an_existing_file_unless_asked(http_folder, tmp_path):
    base, www = http_folder
    (www / "a.json").write_bytes(b"new")
    dest = tmp_path / "a.json"
    dest.write_bytes(b"old")
    assert colab.download(f"{base}/a.json", dest).read_bytes() == b"old"
    assert colab.download(f"{base}/a.json", dest, overwrite=True).read_bytes() == b"new"


def test_download_http_error_is_a_download_error(http_folder, tmp_path):
    base, _ = http_folder
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        colab.download(f"{base}/missing.json", tmp_path / "x.json", timeout=10)
    assert f"{base}/missing.json" in str(info.value)
    assert not (tmp_path / "x.json").exists()


def test_download_unresolvable_host_fails_fast_with_a_clear_message(tmp_path):
    # .invalid never resolves (RFC 2606): offline or not, this is the no-internet path.
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="download failed|no answer within") as info:
        colab.download("https://ampxfer-test.invalid/model.json", tmp_path / "m.json", timeout=3)
    assert time.monotonic() - t0 < 5
    assert "ampxfer-test.invalid" in str(info.value) and "sample data" in str(info.value)


def test_download_gives_up_at_the_deadline(monkeypatch, tmp_path):
    # A connection that never answers (a blackholed network): the deadline covers the whole call.
    def hang(*args, **kwargs):
        time.sleep(30)

    monkeypatch.setattr(colab.urllib.request, "urlopen", hang)
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match=r"no answer within 1 s; are you offline\?"):
        colab.download("https://example.org/model.json", tmp_path / "m.json", timeout=1)
    assert 0.9 < time.monotonic() - t0 < 3


def test_download_refuses_other_schemes(tmp_path):
    with pytest.raises(DownloadError, match="not an http"):
        colab.download("file:///etc/passwd", tmp_path / "x")


@pytest.mark.parametrize("link", [
    "https://drive.google.com/file/d/1AbCdEfGhIjKlMnOpQrStUvWxYz012345/view?usp=sharing",
    "https://drive.google.com/open?id=1AbCdEfGhIjKlMnOpQrStUvWxYz012345",
    "https://drive.google.com/uc?export=download&id=1AbCdEfGhIjKlMnOpQrStUvWxYz012345",
    "1AbCdEfGhIjKlMnOpQrStUvWxYz012345",
])
def test_drive_file_id(link):
    assert colab.drive_file_id(link) == "1AbCdEfGhIjKlMnOpQrStUvWxYz012345"


def test_drive_file_id_rejects_other_links():
    with pytest.raises(ConfigError, match="not a Google Drive file link"):
        colab.drive_file_id("https://example.org/file.wav")


def test_shared_drive_without_gdown_uses_the_direct_link(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "gdown", None)  # import gdown -> ImportError
    seen = {}

    def fake(url, dest, timeout=0):
        seen["url"], seen["dest"] = url, dest
        return Path(dest)

    monkeypatch.setattr(colab, "download", fake)
    got = colab.download_shared_drive("https://drive.google.com/file/d/1AbCdEfGhIjKlMnOpQrStUvWxYz012345/view",
                                      tmp_path, name="di")
    assert seen["url"] == "https://drive.google.com/uc?export=download&id=1AbCdEfGhIjKlMnOpQrStUvWxYz012345"
    assert got == tmp_path / "di"


def test_catalogue_urls_are_pinned_to_commits():
    assert colab.STARTING_MODELS
    for name, entry in colab.STARTING_MODELS.items():
        assert entry.name == name
        assert re.fullmatch(r"https://raw\.githubusercontent\.com/GuitarML/NeuralPi/[0-9a-f]{40}/models/" + re.escape(name)
                            + r"\.json", entry.url), entry.url
        assert entry.file_name == f"{name}.json"
        assert entry.knobs in (0, 1)


def _model_file(path: Path) -> Path:
    neuralpi.save(new_model(ModelConfig(), seed=0).weights(), path)
    return path


def test_fetch_starting_model_offline_falls_back_to_a_local_copy(monkeypatch, tmp_path):
    def offline(url, dest, timeout=0, overwrite=False):
        raise DownloadError(f"{url}: download failed (offline)")

    monkeypatch.setattr(colab, "download", offline)
    local = tmp_path / "library"
    local.mkdir()
    _model_file(local / "TS9_FullD.json")
    monkeypatch.setenv("AMPXFER_MODELS", str(local))
    monkeypatch.setenv("AMPXFER_REALDATA", str(tmp_path / "none"))
    lines = []
    got = colab.fetch_starting_model("TS9_FullD", tmp_path / "models", log=lines.append)
    assert got == tmp_path / "models" / "TS9_FullD.json"
    assert got.read_bytes() == (local / "TS9_FullD.json").read_bytes()
    assert "offline" in lines[0] and "local copy" in lines[0]
    with pytest.raises(DownloadError, match="offline"):
        colab.fetch_starting_model("BluesJR_FullD", tmp_path / "models", log=lines.append)


def test_fetch_starting_model_checks_the_download(monkeypatch, tmp_path):
    def not_a_model(url, dest, timeout=0, overwrite=False):
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        Path(dest).write_text("<html>moved</html>")
        return Path(dest)

    monkeypatch.setattr(colab, "download", not_a_model)
    monkeypatch.setenv("AMPXFER_REALDATA", str(tmp_path / "none"))
    monkeypatch.delenv("AMPXFER_MODELS", raising=False)
    with pytest.raises(DownloadError, match="not a model file"):
        colab.fetch_starting_model("TS9", tmp_path / "models", log=lambda m: None)
    assert not (tmp_path / "models" / "TS9.json").exists()


def test_fetch_starting_model_downloads_and_loads(monkeypatch, tmp_path, http_folder):
    base, www = http_folder
    _model_file(www / "TS9_FullD.json")
    entry = colab.STARTING_MODELS["TS9_FullD"]
    monkeypatch.setitem(colab.STARTING_MODELS, "TS9_FullD",
                        colab.StartingModel(entry.name, f"{base}/TS9_FullD.json", entry.description, 0, entry.source))
    got = colab.fetch_starting_model("TS9_FullD", tmp_path / "models", log=lambda m: None)
    assert load_model(got).config.hidden_size == 20


def test_unknown_starting_model():
    with pytest.raises(ConfigError, match="unknown starting model 'X'"):
        colab.fetch_starting_model("X", "unused")


def test_outside_colab():
    assert not colab.in_colab()
    assert colab.mount_drive(log=lambda m: None) is None
    with pytest.raises(ConfigError, match="Colab only"):
        colab.upload_files("unused")
    assert colab.gpu_report().startswith(("GPU:", "no GPU"))


def test_every_notebook_has_the_canonical_setup_cell():
    cell = colab.setup_cell_source()
    assert f'AMPXFER_REPO = "{colab.REPO_URL}"' in cell and f'AMPXFER_REF = "{colab.REPO_REF}"' in cell
    compile(cell, "setup", "exec")
    paths = sorted((REPO / "notebooks").glob("*.ipynb"))
    assert len(paths) >= 5
    for path in paths:
        nb = json.loads(path.read_text())
        first = next(c for c in nb["cells"] if c["cell_type"] == "code")
        assert "".join(first["source"]) == cell, path.name


def test_setup_cell_does_nothing_outside_colab(capsys):
    namespace = {}
    exec(colab.setup_cell_source(), namespace)
    assert namespace["AMPXFER_REF"] == colab.REPO_REF
    assert capsys.readouterr().out == ""


def test_readme_colab_link_follows_the_pinned_version():
    owner_repo = colab.REPO_URL.split("github.com/", 1)[1]
    link = f"https://colab.research.google.com/github/{owner_repo}/blob/{colab.REPO_REF}/notebooks/01_data_prep.ipynb"
    assert link in (REPO / "README.md").read_text()


# --------------------------------------------------------------------------- installing in Colab

def _touch(path: Path, mtime: float, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def test_find_package_nothing_uploaded(tmp_path):
    content = tmp_path / "content"
    content.mkdir()
    (content / "ampxfer-notes.zip").write_bytes(b"")  # not a version
    (content / "other-0.1.0-py3-none-any.whl").write_bytes(b"")
    (content / "ampxfer-0.1.0.zip").mkdir()  # a folder, not a file
    (content / "ampxfer-0.1.0.tar.gz").write_bytes(b"")
    assert colab.find_ampxfer_package([str(content), str(tmp_path / "drive-not-mounted")], "0.1.0") is None


def test_find_package_order_of_preference(tmp_path):
    content, drive = tmp_path / "content", tmp_path / "drive"
    folders = [str(content), str(drive)]
    wheel = _touch(content / "ampxfer-0.1.0-py3-none-any.whl", 100)
    assert colab.find_ampxfer_package(folders, "0.1.0") == str(wheel)
    drive_zip = _touch(drive / "ampxfer-0.1.0.zip", 200)
    assert colab.find_ampxfer_package(folders, "0.1.0") == str(drive_zip)  # a zip over a wheel
    content_zip = _touch(content / "ampxfer-0.1.0.zip", 50)
    assert colab.find_ampxfer_package(folders, "0.1.0") == str(content_zip)  # /content over Drive, even if older
    renamed = _touch(content / "ampxfer-0.1.0 (1).zip", 60)
    assert colab.find_ampxfer_package(folders, "0.1.0") == str(renamed)  # the newer upload
    _touch(content / "ampxfer-0.2.0.zip", 300)
    assert colab.find_ampxfer_package(folders, "0.1.0") == str(renamed)  # the notebooks' version first
    assert colab.find_ampxfer_package(folders, "0.2.0") == str(content / "ampxfer-0.2.0.zip")
    assert colab.find_ampxfer_package(folders, "0.3.0") == str(content / "ampxfer-0.2.0.zip")  # newest otherwise


class _Commands:
    """A stand-in for subprocess.run(argv, check=True): records argv, runs an action per program."""

    def __init__(self, actions=None):
        self.calls = []
        self.actions = actions or {}

    def __call__(self, argv):
        self.calls.append(list(argv))
        action = self.actions.get(argv[0])
        if action:
            action(argv)


def _pip(*args):
    return [sys.executable, "-m", "pip", "install", "-q", *args]


def _zip(path: Path, files: dict) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


INSTALL = dict(repo="https://github.com/ampxfer/ampxfer", ref="v0.1.0", version="0.1.0",
               folders=("/content", "/content/drive/MyDrive/ampxfer"))


def test_install_from_the_zip(tmp_path):
    (tmp_path / "up").mkdir()
    package = _zip(tmp_path / "up" / "ampxfer-0.1.0.zip", {
        "ampxfer-0.1.0/pyproject.toml": "[project]\n", "ampxfer-0.1.0/sample_data/di.flac": b"fLaC",
        "ampxfer-0.1.0/notebooks/01_data_prep.ipynb": "{}"})
    checkout = tmp_path / "ampxfer"
    run, lines = _Commands(), []
    how = colab.install_ampxfer(str(package), str(checkout), run=run, log=lines.append, **INSTALL)
    assert how == "zip"
    assert run.calls == [_pip("-e", str(checkout))]
    assert sorted(p.relative_to(checkout).as_posix() for p in checkout.rglob("*") if p.is_file()) == [
        "notebooks/01_data_prep.ipynb", "pyproject.toml", "sample_data/di.flac"]
    assert lines == [f"ampxfer: installed from {package}, unpacked to {checkout} (library, notebooks, sample data)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ampxfer", "up"]  # no temporary folder left


def test_install_again_uses_the_checkout(tmp_path):
    checkout = tmp_path / "ampxfer"
    _touch(checkout / "pyproject.toml", 1)
    run, lines = _Commands(), []
    assert colab.install_ampxfer(None, str(checkout), run=run, log=lines.append, **INSTALL) == "checkout"
    assert run.calls == [_pip("-e", str(checkout))]
    assert lines == [f"ampxfer: using {checkout} from an earlier run of this cell (delete that folder to install "
                     "another version)"]


def test_install_never_touches_a_foreign_folder(tmp_path):
    checkout = tmp_path / "ampxfer"
    mine = _touch(checkout / "my_recording.wav", 1, b"keep")
    run = _Commands()
    with pytest.raises(RuntimeError) as info:
        colab.install_ampxfer(None, str(checkout), run=run, **INSTALL)
    assert str(info.value) == (f"{checkout}: exists but holds no ampxfer (no pyproject.toml); rename or delete it "
                               "and rerun this cell")
    assert run.calls == [] and mine.read_bytes() == b"keep"


def test_install_refuses_a_zip_without_ampxfer(tmp_path):
    package = _zip(tmp_path / "ampxfer-0.1.0.zip", {"photos/a.jpg": b"x", "photos/b.jpg": b"y"})
    checkout = tmp_path / "ampxfer"
    with pytest.raises(RuntimeError) as info:
        colab.install_ampxfer(str(package), str(checkout), run=_Commands(), **INSTALL)
    assert str(info.value) == (f"{package}: not an ampxfer zip (no pyproject.toml inside); upload the "
                               "dist/ampxfer-0.1.0.zip that `make dist` writes and rerun this cell")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ampxfer-0.1.0.zip"]


def test_install_from_a_renamed_wheel(tmp_path):
    package = _touch(tmp_path / "ampxfer-0.1.0-py3-none-any (1).whl", 1, b"wheel bytes")
    seen = {}

    def pip(argv):  # pip is given the wheel under its own name, with the uploaded bytes
        seen["name"], seen["bytes"] = Path(argv[-1]).name, Path(argv[-1]).read_bytes()

    run, lines = _Commands({sys.executable: pip}), []
    how = colab.install_ampxfer(str(package), str(tmp_path / "ampxfer"), run=run, log=lines.append, **INSTALL)
    assert how == "wheel"
    assert len(run.calls) == 1 and run.calls[0][:-1] == _pip()
    assert seen == {"name": "ampxfer-0.1.0-py3-none-any.whl", "bytes": b"wheel bytes"}
    assert not Path(run.calls[0][-1]).exists()  # the renamed copy was temporary
    assert lines == [f"ampxfer: installed from {package} (the library only: for the sample data upload "
                     "ampxfer-0.1.0.zip too and rerun this cell, or use your own recordings)"]


def test_install_clones_the_tag_when_nothing_is_uploaded(tmp_path):
    checkout = tmp_path / "ampxfer"
    run = _Commands({"git": lambda argv: _touch(Path(argv[-1]) / "pyproject.toml", 1)})
    lines = []
    assert colab.install_ampxfer(None, str(checkout), run=run, log=lines.append, **INSTALL) == "clone"
    assert run.calls == [["git", "clone", "-q", "--depth", "1", "--branch", "v0.1.0", INSTALL["repo"], str(checkout)],
                         _pip("-e", str(checkout))]
    assert lines == [f"ampxfer: cloned {INSTALL['repo']} at v0.1.0 into {checkout}"]


def test_install_fetches_a_pinned_commit(tmp_path):
    checkout = str(tmp_path / "ampxfer")
    commit = "0123456789abcdef0123456789abcdef01234567"
    run = _Commands()
    settings = dict(INSTALL, ref=commit)
    assert colab.install_ampxfer(None, checkout, run=run, log=lambda m: None, **settings) == "clone"
    assert run.calls == [["git", "init", "-q", checkout],
                         ["git", "-C", checkout, "fetch", "-q", "--depth", "1", INSTALL["repo"], commit],
                         ["git", "-C", checkout, "checkout", "-q", "FETCH_HEAD"], _pip("-e", checkout)]


def test_install_says_what_to_upload_when_nothing_works(tmp_path):
    checkout = tmp_path / "ampxfer"

    def unpublished(argv):  # git leaves a partial folder, then fails
        (checkout / ".git").mkdir(parents=True)
        raise subprocess.CalledProcessError(128, argv)

    run = _Commands({"git": unpublished})
    with pytest.raises(RuntimeError) as info:
        colab.install_ampxfer(None, str(checkout), run=run, **INSTALL)
    assert str(info.value) == (
        "no ampxfer wheel or zip found in /content or /content/drive/MyDrive/ampxfer, and the tag v0.1.0 could "
        "not be cloned from https://github.com/ampxfer/ampxfer (git exit status 128): upload "
        "dist/ampxfer-0.1.0.zip (or dist/ampxfer-0.1.0-py3-none-any.whl) from `make dist` via the file browser "
        "on the left and rerun this cell")
    assert not checkout.exists()  # the partial clone is gone, so a rerun does not take it for a checkout
    assert len(run.calls) == 1


def test_setup_cell_carries_the_tested_install_functions(tmp_path):
    namespace = {}
    exec(colab.setup_cell_source(), namespace)
    assert namespace["AMPXFER_VERSION"] == __import__("ampxfer_lib").__version__
    content = tmp_path / "content"
    _touch(content / "ampxfer-0.1.0-py3-none-any.whl", 1)
    zip_path = _touch(content / "ampxfer-0.1.0.zip", 2)
    assert namespace["find_ampxfer_package"]([str(content)], "0.1.0") == str(zip_path)
    cell = colab.setup_cell_source()
    for fn in (colab.find_ampxfer_package, colab.install_ampxfer):
        body = inspect.getsource(fn).split('"""', 2)[2]  # the code after the docstring
        assert body in cell
    assert f"folders = {colab.UPLOAD_FOLDERS!r}" in cell


# --------------------------------------------------------------------------- Colab's package stack

def _colab_pins() -> dict:
    """constraints/colab.txt as {normalised name: version}, plus the recorded (not installed) torch."""
    text = (REPO / "constraints" / "colab.txt").read_text()
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")  # only exact pins belong in the file
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    recorded = re.search(r"^#\s+torch==(\S+)", text, re.M)
    return pins, recorded.group(1)


def test_colab_constraints_never_install_colabs_torch_and_satisfy_every_requirement():
    from packaging.requirements import Requirement

    pins, colab_torch = _colab_pins()
    assert "torch" not in pins and colab_torch == "2.11.0+cu128"
    installed = dict(pins, torch=colab_torch)
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            # Colab already has a version that satisfies it, so installing ampxfer there replaces nothing.
            assert req.specifier.contains(installed[req.name.lower()], prereleases=True), (line, installed[req.name])


def test_readme_names_the_colab_stack_that_was_checked():
    pins, colab_torch = _colab_pins()
    readme = (REPO / "README.md").read_text()
    stated = re.search(r"Last checked on \S+ against Colab's GPU runtime of [^(]+\(([^)]+)\)", readme.replace("\n", " "))
    assert stated, "README: the 'Last checked on ...' sentence of the Colab section"
    for item in stated.group(1).split(", "):
        name, version = item.rsplit(" ", 1)
        key = {"IPython": "ipython"}.get(name, name).lower()
        if name == "Python":
            assert f"Python {version}" in (REPO / "constraints" / "colab.txt").read_text()
        elif name == "torch":
            assert version == colab_torch
        else:
            assert pins[key] == version, name
