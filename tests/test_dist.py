"""`make dist`: the wheel holds the whole library and works installed on its own (not editable);
the zip is a checkout a Colab user (or anyone) can install from, sample data included."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ampxfer_lib import __version__
from ampxfer_lib.notebooks import colab

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import dist  # noqa: E402

WHEEL = f"ampxfer-{__version__}-py3-none-any.whl"
ZIP = f"ampxfer-{__version__}.zip"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    assert dist.main(["--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [WHEEL, ZIP]
    return out


def _package_files():
    """Every file the library is made of: its modules and the data files it reads."""
    return sorted(p.relative_to(REPO).as_posix() for p in (REPO / "ampxfer_lib").rglob("*")
                  if p.is_file() and p.suffix in (".py", ".json") and "__pycache__" not in p.parts)


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMPXFER_SAMPLE_DIR")}
    env.update(extra)
    return env


def test_wheel_holds_the_whole_library_and_its_requirements(built):
    with zipfile.ZipFile(built / WHEEL) as z:
        names = z.namelist()
        meta = z.read(f"ampxfer-{__version__}.dist-info/METADATA").decode()
        entry_points = z.read(f"ampxfer-{__version__}.dist-info/entry_points.txt").decode()
    info = f"ampxfer-{__version__}.dist-info/"
    assert sorted(n for n in names if not n.startswith(info)) == _package_files()
    assert "ampxfer_lib/study/studies/sample_pairs.json" in names
    # the shipped starting models and their index (pyproject's package-data)
    shipped = {n for n in names if n.startswith("ampxfer_lib/starting_models/")}
    assert shipped == {f"ampxfer_lib/starting_models/{m}.json" for m in
                       ("index", "clean_amp", "crunch_amp", "high_gain_amp", "micd_amp", "overdrive", "distortion",
                        "fuzz", "device_space", "device_space.meta")}  # the last two unindexed (build_device_space.py)
    requirements = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert [line[len("Requires-Dist: "):] for line in meta.splitlines()
            if line.startswith("Requires-Dist: ") and "extra ==" not in line] == requirements
    assert "ampxfer = ampxfer_lib.cli.main:main" in entry_points


def test_zip_is_the_source_notebooks_and_sample_data(built):
    top = f"ampxfer-{__version__}/"
    expected = (["README.md", "bench/gpu_check.py", "pyproject.toml", "requirements.txt"] + _package_files()
                + [p.relative_to(REPO).as_posix() for p in sorted((REPO / "notebooks").glob("0*.ipynb"))]
                + ["sample_data/CHECKSUMS.json", "sample_data/README.md", "sample_data/di.flac"]
                + [f"sample_data/preview/{d}.flac" for d in ("bluesjr", "ht40", "mt2", "ts9")])
    with zipfile.ZipFile(built / ZIP) as z:
        names = z.namelist()
        assert z.read(top + "sample_data/di.flac") == (REPO / "sample_data" / "di.flac").read_bytes()
    assert sorted(names) == sorted(top + rel for rel in expected)
    assert len(expected) > 40


def test_installed_wheel_works_without_the_repository(built, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    str(built / WHEEL)], check=True, env=_clean_env())
    modules = sorted(rel[:-3].replace("/", ".").replace(".__init__", "") for rel in _package_files()
                     if rel.endswith(".py") and not rel.endswith("__main__.py"))
    code = ("import importlib, ampxfer_lib\n"
            f"assert ampxfer_lib.__file__.startswith({str(site)!r}), ampxfer_lib.__file__\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            # the installed package finds its own starting models, all seven indexed
            "from ampxfer_lib.library.index import SHIPPED_MODELS, find_models\n"
            f"assert str(SHIPPED_MODELS).startswith({str(site)!r}), SHIPPED_MODELS\n"
            "found = find_models([SHIPPED_MODELS])\n"
            "assert len(found) == 7 and all(f.entry.licence == 'MIT' for f in found), found\n")
    env = _clean_env(PYTHONPATH=str(site))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env)

    out = subprocess.run([sys.executable, str(site / "bin" / "ampxfer"), "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("usage: ampxfer"), out.stderr

    # No sample data and no notebooks come with the wheel: say where they are.
    sample = subprocess.run([sys.executable, "-c", "from ampxfer_lib.sample_data.files import ensure_sample_data\n"
                             "ensure_sample_data(progress=False)"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert sample.returncode != 0
    assert sample.stderr.strip().splitlines()[-1] == (
        "ampxfer_lib.errors.AmpxferError: no sample data: ampxfer is installed as a package (from its wheel), which "
        f"carries no sample data; unpack ampxfer-{__version__}.zip (from `make dist`) and `pip install -e` its "
        "folder (in Colab: upload the zip and rerun the set-up cell), or set AMPXFER_SAMPLE_DIR to its sample_data "
        "folder, or use your own recordings")
    notebooks = subprocess.run([sys.executable, "-m", "ampxfer_lib.notebooks", "run", "--all", "--out", "x"],
                               cwd=tmp_path, env=env, capture_output=True, text=True)
    assert notebooks.returncode != 0 and not (tmp_path / "x").exists()
    assert notebooks.stderr.strip() == (
        f"error: {site / 'notebooks'}: no notebooks folder; ampxfer installed as a package (from its wheel) carries "
        f"no notebooks: unpack ampxfer-{__version__}.zip (from `make dist`), `pip install -e` its folder and run "
        "from there, or give notebook files by path")


def test_the_colab_cell_installs_from_the_zip_into_a_working_checkout(built, tmp_path):
    # The set-up cell's own install function on the real zip (pip stubbed): the unpacked
    # folder is a checkout in which the library finds its sample data and notebooks.
    checkout = tmp_path / "ampxfer"
    calls = []
    how = colab.install_ampxfer(str(built / ZIP), str(checkout), colab.REPO_URL, colab.REPO_REF, __version__,
                                colab.UPLOAD_FOLDERS, calls.append, log=lambda m: None)
    assert how == "zip" and calls == [[sys.executable, "-m", "pip", "install", "-q", "-e", str(checkout)]]
    code = ("from ampxfer_lib.sample_data import files\n"
            "from ampxfer_lib.notebooks import runner\n"
            "import ampxfer_lib\n"
            f"assert ampxfer_lib.__file__ == {str(checkout / 'ampxfer_lib' / '__init__.py')!r}\n"
            f"assert files.sample_dir() == files.Path({str(checkout / 'sample_data')!r})\n"
            "ref = files.load_reference()\n"
            "assert 'di.flac' in ref['files']\n"
            "print(len(runner.find_notebooks()))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_clean_env(PYTHONPATH=str(checkout)),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "5"
