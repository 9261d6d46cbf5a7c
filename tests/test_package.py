"""The package as a user installs it: a wheel, without the source tree, runs `fakesegment report`.

Slow (marked): builds the wheel (~10 s), installs it into a folder of its own, and runs a report
in a fresh kernel (~1 min on the tiny store that the notebook tests share).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from support import REPO, tiny_store

# what a kernel started over TCP, or with frozen modules under debugpy, prints on the way
TRANSPORT_WARNINGS = re.compile(r"without encryption|frozen.modules|Debugger warning|PYDEVD", re.IGNORECASE)


def _can_build_offline() -> bool:
    # setuptools >= 70.1 builds wheels itself; older ones need the `wheel` package
    if importlib.util.find_spec("setuptools") is None:
        return False
    return (importlib.util.find_spec("setuptools.command.bdist_wheel") is not None
            or importlib.util.find_spec("wheel") is not None)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from a copy of the package's sources, installed with --target."""
    if not _can_build_offline():
        pytest.skip("building the wheel offline needs setuptools>=70.1 in this environment (`make setup` installs it)")
    root = tmp_path_factory.mktemp("package")
    src = root / "src"  # only what the wheel is built from: nothing else of the tree can leak in
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "fakesegment_nb", src / "fakesegment_nb",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    run = dict(capture_output=True, text=True, timeout=600)
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(src)], **run)
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next((root / "dist").glob("fakesegment_nb-*.whl"))
    assert "fakesegment_nb/report.ipynb" in zipfile.ZipFile(wheel).namelist()
    target = root / "site"
    done = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)], **run)
    assert done.returncode == 0, done.stdout + done.stderr
    return target


@pytest.mark.slow
def test_installed_wheel_writes_a_report_from_another_folder(installed, tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": str(installed)}  # the installed copy, not the source tree
    where = subprocess.run([sys.executable, "-c", "import fakesegment_nb; print(fakesegment_nb.__file__)"],
                           cwd=cwd, env=env, capture_output=True, text=True)
    assert Path(where.stdout.strip()).parent == installed / "fakesegment_nb", where.stderr
    out = tmp_path / "out" / "report.html"
    p = subprocess.run([sys.executable, "-m", "fakesegment_nb.cli", "report", "--store", str(tiny_store()),
                        "--out", str(out), "--quiet"], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    html = out.read_text(encoding="utf-8")
    assert str(tiny_store()) in html and "ssd300_vgg16" in html and "Gap profile" in html
    assert "Missing from this report" not in html and "Traceback" not in html
    assert not TRANSPORT_WARNINGS.search(p.stdout + p.stderr), p.stderr
    assert not TRANSPORT_WARNINGS.search(re.sub(r"base64,[A-Za-z0-9+/=]+", "", html))
    assert not list(cwd.iterdir())  # nothing written where the command ran
