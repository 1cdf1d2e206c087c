"""Colab helpers: fail-fast downloads, Drive links, the starting-model catalogue, set-up cells."""

import functools
import http.server
import json
import re
import threading
import time
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
