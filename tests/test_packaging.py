"""The sdist and the wheel built from it carry the manifest, install in a clean virtual environment and
validate with npe2; the base install needs neither napari nor Qt; the version has one source."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


MANIFEST = ROOT / "src" / "napari_seg_uncertainty" / "napari.yaml"


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_manifest_is_a_regular_file_inside_the_package():
    # a symlink breaks on Windows checkouts (git writes it as a text file holding the target path)
    assert MANIFEST.is_file() and not MANIFEST.is_symlink()
    root_copy = ROOT / "napari.yaml"
    if root_copy.exists():
        assert root_copy.read_text() == MANIFEST.read_text(), "napari.yaml at the root differs from the package's"


def test_version_has_one_source():
    import napari_seg_uncertainty

    project = _pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    attr = _pyproject()["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "napari_seg_uncertainty.__version__"
    from importlib.metadata import version

    assert version("napari-seg-uncertainty") == napari_seg_uncertainty.__version__


def test_base_install_has_no_qt_or_napari():
    """The base dependencies let training run on a headless node; the GUI stack lives in the extras."""
    import re

    project = _pyproject()["project"]
    names = {re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower() for requirement in project["dependencies"]}
    gui = {"napari", "magicgui", "qtpy", "superqt", "napari-matplotlib", "npe2", "pyqt5", "pyqt6", "pyside2", "pyside6"}
    assert not names & gui, names & gui
    extra = " ".join(project["optional-dependencies"]["napari"])
    for name in ("napari", "magicgui", "qtpy", "superqt", "napari-matplotlib"):
        assert name in extra, name
    assert any("[napari]" in r for r in project["optional-dependencies"]["all"])
    assert any("[all]" in r for r in project["optional-dependencies"]["test"])


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """``python -m build``: the sdist, then the wheel built from that sdist (as PyPI users get them)."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        cwd=out,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def _parent_site_dirs() -> list[str]:
    """The running interpreter's site-packages folders: a virtual environment's when pytest runs in one."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    dirs += [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _new_venv(env_dir: Path) -> Path:
    """A new virtual environment that sees the packages of the interpreter running the tests (venv or not)
    through a ``.pth`` file, behind its own site-packages; without pip or setuptools of its own (an old
    setuptools there would hide the project's build backend, setuptools >= 77). ``system_site_packages``
    would show the base interpreter's packages instead, not those of an active venv."""
    venv.create(env_dir, with_pip=False, clear=True)
    py = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # plain folders, not site dirs: the parent's .pth files (its editable install of this project) stay out
    Path(purelib, "_parent_site_packages.pth").write_text("\n".join(_parent_site_dirs()) + "\n")
    return py


def _install_and_validate(artifact: Path, env_dir: Path) -> None:
    """Install ``artifact`` without dependencies into a new venv (the test interpreter's packages visible)
    and validate it."""
    py = _new_venv(env_dir)
    install = subprocess.run(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            str(artifact),
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run(
        [str(py), "-c", "import napari_seg_uncertainty as m; print(m.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=env_dir,
        env=env,
    ).stdout
    assert str(env_dir) in where  # the installed copy, not the editable checkout
    result = subprocess.run(
        [str(py), "-m", "npe2", "validate", "napari-seg-uncertainty"],
        capture_output=True,
        text=True,
        cwd=env_dir,
        env=env,
    )
    assert result.returncode == 0 and "valid" in result.stdout, result.stdout + result.stderr


@pytest.mark.slow
def test_wheel_installs_and_validates(dist, tmp_path):
    wheel = next(dist.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "napari_seg_uncertainty/napari.yaml" in names
        assert "napari_seg_uncertainty/widgets/guide.py" in names
        manifest = zf.read("napari_seg_uncertainty/napari.yaml").decode()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert manifest == MANIFEST.read_text()
    # napari hub reads these from the package metadata
    assert "Classifier: Framework :: napari" in metadata
    assert "License-Expression: BSD-3-Clause" in metadata
    for label in ("Source Code", "Bug Tracker", "Documentation", "User Support"):
        assert f"Project-URL: {label}," in metadata
    _install_and_validate(wheel, tmp_path / "venv")


@pytest.mark.slow
def test_sdist_carries_docs_tests_and_manifest_and_installs(dist, tmp_path):
    sdist = next(dist.glob("*.tar.gz"))
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}
        manifest = members["src/napari_seg_uncertainty/napari.yaml"]
        assert manifest.isfile()
        assert tar.extractfile(manifest).read().decode() == MANIFEST.read_text()
    for path in (
        "LICENSE",
        "README.md",
        "docs/user-guide.md",
        "docs/scripting.md",
        "docs/cli.md",
        "docs/images/01-raters.png",
        "scripts/make_screenshots.py",
        "tests/test_e2e.py",
        ".ci/run",
    ):
        assert path in members, path
    _install_and_validate(sdist, tmp_path / "venv")
