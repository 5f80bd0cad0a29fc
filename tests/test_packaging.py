"""The wheel carries the manifest (through the symlink) and validates with npe2 when installed."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_symlink_points_to_root_manifest():
    link = ROOT / "src" / "napari_seg_uncertainty" / "napari.yaml"
    assert link.is_symlink() and link.resolve() == (ROOT / "napari.yaml").resolve()


@pytest.mark.slow
def test_wheel_installs_and_validates(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, cwd=tmp_path)
    wheel = next(dist.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "napari_seg_uncertainty/napari.yaml" in names
        manifest = zf.read("napari_seg_uncertainty/napari.yaml").decode()
    assert manifest == (ROOT / "napari.yaml").read_text()
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(py), "-c", "import napari_seg_uncertainty as m; print(m.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path, env=env).stdout
    assert str(env_dir) in where  # the wheel, not the editable checkout
    result = subprocess.run([str(py), "-m", "npe2", "validate", "napari-seg-uncertainty"],
                            capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0 and "valid" in result.stdout, result.stdout + result.stderr
