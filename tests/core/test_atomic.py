"""Files written atomically get an ordinary file's permissions (0o666 less the umask), not mkstemp's 0o600."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from napari_seg_uncertainty.core._atomic import atomic_write, current_umask
from napari_seg_uncertainty.core.checkpoint import save_checkpoint
from napari_seg_uncertainty.core.io import write_image


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_reads_without_changing_it(umask):
    assert current_umask() == umask
    assert current_umask() == umask


def test_written_files_have_the_mode_open_would_give(tmp_path, umask):
    expected = 0o666 & ~umask
    with open(tmp_path / "plain.txt", "w") as handle:  # what an ordinary write gives, as the reference
        handle.write("x")
    assert _mode(tmp_path / "plain.txt") == expected
    with atomic_write(tmp_path / "table.csv", overwrite=False) as temporary:
        temporary.write_text("a,b\n")
    assert _mode(tmp_path / "table.csv") == expected
    write_image(tmp_path / "labels.nii.gz", np.zeros((4, 5, 6), np.uint8), spacing=(2.0, 1.0, 1.0))
    assert _mode(tmp_path / "labels.nii.gz") == expected
    save_checkpoint(tmp_path / "last.pt", {"note": "x"})
    assert _mode(tmp_path / "last.pt") == expected
