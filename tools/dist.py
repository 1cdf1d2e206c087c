"""Build what a user installs before (or without) a release: ``make dist``.

Writes into ``dist/`` (or ``--out``):

* ``ampxfer-<version>-py3-none-any.whl``: the library (every sub-package, the study files, the
  shipped starting models ``ampxfer_lib/starting_models/``);
  ``pip install`` it anywhere. It carries no sample data and no notebooks.
* ``ampxfer-<version>.zip``: one folder ``ampxfer-<version>/`` holding the source
  (``pyproject.toml``, ``requirements.txt``, ``README.md``, ``ampxfer_lib/``), the notebooks,
  the committed sample data and ``bench/gpu_check.py`` (so a Colab GPU can run it): what a
  clone of the tag has, minus tests, the other benchmarks and CI (the same layout as GitHub's
  "Download ZIP" of a tag). ``pip install -e`` the unpacked folder and
  the library finds ``sample_data/`` and ``notebooks/`` beside it, as in a clone. The Colab
  set-up cell does exactly that with an uploaded zip.

Both are built from the files git tracks or would track (untracked files that are not
ignored are included, so a new module is shipped before it is committed), read from the
working tree; outside a git checkout, from the folders as they are, minus caches and the
rendered sample recordings (``sample_data/rendered/``, regenerated on first use). The wheel
is built by ``pip wheel --no-deps`` from a clean copy of the source (no stale ``build/``
folder can leak old modules into it) and then checked: every module and data file of the
source must be in it.

Usage::

    python tools/dist.py [--out dist]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import List, Sequence

REPO = Path(__file__).resolve().parents[1]
#: What the zip carries, relative to the repository (files, or folders taken whole).
ZIP_CONTENT = ("pyproject.toml", "requirements.txt", "README.md", "LICENSE", "ampxfer_lib", "notebooks",
               "sample_data", "bench/gpu_check.py")
#: What the wheel is built from (pyproject.toml reads the other two).
WHEEL_SOURCE = ("pyproject.toml", "requirements.txt", "README.md", "LICENSE", "ampxfer_lib")
_SKIP_PARTS = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache"}
_SKIP_PREFIXES = ("sample_data/rendered/",)
# A fixed timestamp makes the zip depend on the files' content only.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


class DistError(Exception):
    """Building the distribution failed; the message says why and what to do."""


def version(root: Path = REPO) -> str:
    """The package version, read from ampxfer_lib/__init__.py (nothing is imported)."""
    text = (root / "ampxfer_lib" / "__init__.py").read_text(encoding="utf-8")
    m = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if not m:
        raise DistError(f"{root / 'ampxfer_lib' / '__init__.py'}: no __version__ = \"...\" line")
    return m.group(1)


def _keep(rel: str) -> bool:
    parts = rel.split("/")
    return not (_SKIP_PARTS & set(parts) or rel.endswith((".pyc", ".pyo")) or rel.startswith(_SKIP_PREFIXES))


def source_files(root: Path = REPO, top: Sequence[str] = ZIP_CONTENT) -> List[str]:
    """Files under ``top`` (relative paths, sorted) that git tracks or would track."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                              "--", *top], check=True, capture_output=True).stdout
        rels = [p for p in out.decode("utf-8").split("\0") if p]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an unpacked zip)
        rels = []
        for name in top:
            path = root / name
            if path.is_file():
                rels.append(name)
            elif path.is_dir():
                rels += [p.relative_to(root).as_posix() for p in path.rglob("*") if p.is_file()]
    # A file deleted in the working tree but not yet in git is not shipped.
    return sorted({r for r in rels if _keep(r) and (root / r).is_file()})


def build_zip(root: Path, out_dir: Path, ver: str) -> Path:
    files = source_files(root, ZIP_CONTENT)
    missing = [n for n in ("pyproject.toml", "ampxfer_lib/__init__.py", "sample_data/CHECKSUMS.json")
               if n not in files]
    if missing:
        raise DistError(f"{root}: {', '.join(missing)} missing; build the distribution from a complete checkout")
    dest = out_dir / f"ampxfer-{ver}.zip"
    partial = out_dir / f".{dest.name}.part"
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
        for rel in files:
            info = zipfile.ZipInfo(f"ampxfer-{ver}/{rel}", _ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, (root / rel).read_bytes())
    os.replace(partial, dest)
    return dest


def _pip_wheel_command(src: Path, out: Path) -> List[str]:
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)]
    spec = importlib.util.find_spec("setuptools")
    if spec is not None:
        import setuptools

        major = int(setuptools.__version__.split(".")[0])
        if major >= 64:  # pyproject.toml's build requirement is met here: no download needed
            cmd.insert(5, "--no-build-isolation")
    return cmd


def build_wheel(root: Path, out_dir: Path, ver: str) -> Path:
    files = source_files(root, WHEEL_SOURCE)
    with tempfile.TemporaryDirectory(prefix="ampxfer-dist-") as tmp:
        src, built = Path(tmp) / "src", Path(tmp) / "wheel"
        for rel in files:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, src / rel)
        result = subprocess.run(_pip_wheel_command(src, built), capture_output=True, text=True)
        if result.returncode != 0:
            raise DistError(f"pip wheel failed for {root}:\n{result.stdout}{result.stderr}")
        wheels = list(built.glob("ampxfer-*.whl"))
        if len(wheels) != 1 or wheels[0].name != f"ampxfer-{ver}-py3-none-any.whl":
            raise DistError(f"pip wheel made {[w.name for w in wheels]}, expected ampxfer-{ver}-py3-none-any.whl")
        check_wheel(wheels[0], [r for r in files if r.startswith("ampxfer_lib/")])
        dest = out_dir / wheels[0].name
        partial = out_dir / f".{dest.name}.part"
        shutil.copyfile(wheels[0], partial)
        os.replace(partial, dest)
    return dest


def check_wheel(wheel: Path, package_files: Sequence[str]) -> None:
    """Raise DistError unless every file of the package's source is in the wheel."""
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    missing = sorted(set(package_files) - names)
    if missing:
        raise DistError(f"{wheel.name} lacks {len(missing)} file(s) of ampxfer_lib, e.g. {missing[0]}: add its "
                        "folder to [tool.setuptools.package-data] in pyproject.toml (data files), or an "
                        "__init__.py (packages)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Build the wheel and the zip (source, notebooks, sample data).")
    p.add_argument("--out", default=str(REPO / "dist"), help="output folder (default: dist/)")
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        ver = version(REPO)
        wheel = build_wheel(REPO, out, ver)
        archive = build_zip(REPO, out, ver)
    except (DistError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in (wheel, archive):
        print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
