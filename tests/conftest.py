"""Shared test configuration."""

from __future__ import annotations

import os

import pytest

# Keep torch from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture
def one_thread():
    """One torch thread for tests of tiny models: much faster than two on a shared 2-core machine.

    Modules that train use it for every test with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


#: Fixtures that start Qt or a napari viewer: a test that uses one needs a display.
_GUI_FIXTURES = {"make_napari_viewer", "make_napari_viewer_proxy", "qtbot", "qapp", "viewer_model"}


def pytest_collection_modifyitems(config, items):
    """Mark every test that needs a display ``gui``, so that ``pytest -m "not gui"`` runs on a headless node.

    A test needs one when it uses a Qt/napari fixture, lives under ``tests/widgets`` or is a docstring
    example of a widget module; a test that starts napari in a subprocess carries the mark itself.
    """
    for item in items:
        path = str(getattr(item, "path", item.fspath)).replace(os.sep, "/")
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _GUI_FIXTURES or "/tests/widgets/" in path or "/napari_seg_uncertainty/widgets/" in path:
            item.add_marker(pytest.mark.gui)
