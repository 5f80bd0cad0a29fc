"""The sdist and the wheel built from it carry the manifest (through the symlink), install in a clean
virtual environment and validate with npe2."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_symlink_points_to_root_manifest():
    link = ROOT / "src" / "napari_seg_uncertainty" / "napari.yaml"
    assert link.is_symlink() and link.resolve() == (ROOT / "napari.yaml").resolve()


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """``python -m build``: the sdist, then the wheel built from that sdist (as PyPI users get them)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        cwd=out,
    )
    return out


def _install_and_validate(artifact: Path, env_dir: Path) -> None:
    """Install ``artifact`` without dependencies into a new venv (system packages visible) and validate it."""
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    py = env_dir / "bin" / "python"
    # an sdist builds with the project's build backend (setuptools >= 77, the system's): older Pythons put
    # an old setuptools into new venvs, which would hide it
    subprocess.run([str(py), "-m", "pip", "uninstall", "-y", "-q", "setuptools"], capture_output=True)
    subprocess.run(
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
        check=True,
        capture_output=True,
    )
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
    assert manifest == (ROOT / "napari.yaml").read_text()
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
        assert manifest.isfile()  # the symlink is stored as the file it points to
        assert tar.extractfile(manifest).read().decode() == (ROOT / "napari.yaml").read_text()
    for path in (
        "napari.yaml",
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
