"""The console API: ``import napari_seg_uncertainty as nsu``."""

from __future__ import annotations

import subprocess
import sys

import napari_seg_uncertainty as nsu


def test_every_export_resolves_and_has_a_docstring():
    for name in nsu.__all__:
        obj = getattr(nsu, name)
        if name != "__version__":
            assert obj.__doc__, name


def test_import_does_not_pull_in_qt_napari_or_torch():
    code = ("import sys, napari_seg_uncertainty as nsu; nsu.load_raters; "
            "print(sorted(m for m in ('napari', 'qtpy', 'PyQt6', 'magicgui') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_core_never_imports_qt_or_napari():
    import pathlib
    import re

    core = pathlib.Path(nsu.__file__).parent / "core"
    pattern = re.compile(r"^\s*(from|import)\s+(qtpy|napari|magicgui|PyQt\d|PySide\d)\b", re.MULTILINE)
    offenders = [p.name for p in core.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
