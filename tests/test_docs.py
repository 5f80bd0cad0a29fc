"""The documentation's code runs as written, covers the whole console API, and its links and images exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import napari_seg_uncertainty as nsu

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_scripting_guide_names_every_public_function():
    text = (DOCS / "scripting.md").read_text()
    missing = [name for name in nsu.__all__ if name != "__version__" and f"nsu.{name}" not in text]
    assert missing == []


def test_scripting_guide_runs_in_a_napari_console_session(make_napari_viewer, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace = {"viewer": make_napari_viewer(), "__name__": "__console__"}
    try:
        for number, block in enumerate(python_blocks(DOCS / "scripting.md"), start=1):
            try:
                exec(compile(block, f"docs/scripting.md block {number}", "exec"), namespace)
            except Exception as exc:  # noqa: BLE001 - say which block failed
                pytest.fail(
                    f"block {number} of docs/scripting.md failed: {type(exc).__name__}: {exc}\n{block}"
                )
    finally:
        torch.set_num_threads(previous)
    viewer = namespace["viewer"]
    for name in (
        "image",
        "rater entropy",
        "mSVLS organ",
        "U-Net entropy",
        "SSN samples",
        "SSN mutual information",
    ):
        assert name in viewer.layers
    assert viewer.layers["SSN samples"].data.shape == (10, 128, 128)


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")) + ["../README.md"])
def test_links_and_images_of_the_docs_exist(page):
    path = (DOCS / page).resolve()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        assert (path.parent / target).exists(), f"{page} links to missing {target}"


def test_screenshots_are_small_pngs_taken_by_the_script():
    images = sorted((DOCS / "images").glob("*.png"))
    script = (ROOT / "scripts" / "make_screenshots.py").read_text()
    assert len(images) >= 5
    for image in images:
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert image.stat().st_size < 300 * 1024, image.name
        assert f'"{image.name}"' in script, f"{image.name} is not made by scripts/make_screenshots.py"
