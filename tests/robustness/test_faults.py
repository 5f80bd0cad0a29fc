"""Faults: writes interrupted half-way, processes killed, exports onto existing files.

* Every writer (images, label maps, SSN distributions and samples, checkpoints, CSV tables) goes through a
  temporary file that is renamed into place: interrupting the write (an exception, Ctrl-C, a full disk)
  leaves the previous file intact and no temporary file behind; a ``kill -9`` leaves a file that loads.
* No exporter replaces an existing file unless told to (``overwrite=True``).
"""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_seg_uncertainty import _writer
from napari_seg_uncertainty.core import io as nio
from napari_seg_uncertainty.core import ssn
from napari_seg_uncertainty.core.checkpoint import load_checkpoint, save_checkpoint
from napari_seg_uncertainty.core.io import read_image, write_image
from napari_seg_uncertainty.workflow import tables
from napari_seg_uncertainty.workflow.ssn import (
    EXPORT_ALL,
    EXPORT_CURRENT,
    EXPORT_DISTRIBUTION,
    export_samples,
)

OLD = np.zeros((4, 6, 7), dtype=np.uint8)
NEW = np.ones((4, 6, 7), dtype=np.uint8)
INTERRUPTIONS = [
    pytest.param(KeyboardInterrupt, id="ctrl-c"),
    pytest.param(lambda: OSError(errno.ENOSPC, "No space left on device"), id="disk-full"),
    pytest.param(lambda: RuntimeError("writer crashed"), id="crash"),
]


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def _half_writer(interruption):
    """A stand-in for a format writer that writes half a file, then fails."""

    def write(path, array, *args, **kwargs):
        Path(path).write_bytes(b"\x00" * 100)
        raise interruption()

    return write


@pytest.mark.parametrize("interruption", INTERRUPTIONS)
@pytest.mark.parametrize(
    ("suffix", "writer"),
    [
        (".nii.gz", "_write_sitk"),
        (".nrrd", "_write_sitk"),
        (".mhd", "_write_sitk"),
        (".tif", "_write_tiff"),
        (".png", "_write_png"),
    ],
)
def test_interrupted_image_write_keeps_the_previous_file(tmp_path, monkeypatch, suffix, writer, interruption):
    old = OLD[1] if suffix == ".png" else OLD
    path = Path(write_image(tmp_path / f"labels{suffix}", old))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(nio, writer, _half_writer(interruption))
    with pytest.raises(BaseException) as excinfo:
        write_image(path, NEW[1] if suffix == ".png" else NEW, overwrite=True)
    assert not isinstance(excinfo.value, AssertionError)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # untouched, nothing left behind
    monkeypatch.undo()
    np.testing.assert_array_equal(read_image(path)[0], old)


@pytest.mark.parametrize("interruption", INTERRUPTIONS)
def test_interrupted_first_write_leaves_no_file(tmp_path, monkeypatch, interruption):
    monkeypatch.setattr(nio, "_write_sitk", _half_writer(interruption))
    with pytest.raises(BaseException):  # noqa: B017 - KeyboardInterrupt included on purpose
        write_image(tmp_path / "labels.nii.gz", NEW)
    assert _leftovers(tmp_path, set()) == []


@pytest.mark.parametrize("interruption", INTERRUPTIONS)
def test_interrupted_distribution_save_keeps_the_previous_file(tmp_path, monkeypatch, interruption):
    first = ssn.synthetic_distribution((6, 7), num_classes=3, rank=2, seed=1)
    path = ssn.save_distribution(tmp_path / "dist.npz", first)
    before = path.read_bytes()

    def half_savez(stream, **arrays):
        stream.write(b"PK\x03\x04" + b"\x00" * 50)
        raise interruption()

    monkeypatch.setattr(np, "savez", half_savez)
    with pytest.raises(BaseException):  # noqa: B017
        ssn.save_distribution(path, ssn.synthetic_distribution((6, 7), num_classes=3, rank=2, seed=2), overwrite=True)
    monkeypatch.undo()
    assert path.read_bytes() == before and _leftovers(tmp_path, {"dist.npz"}) == []
    np.testing.assert_array_equal(ssn.load_distribution(path).mean, first.mean)


@pytest.mark.parametrize("interruption", INTERRUPTIONS)
def test_interrupted_checkpoint_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, interruption):
    path = save_checkpoint(tmp_path / "last.pt", {"step": 1, "weights": torch.arange(1000.0)})

    def half_save(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04" + b"\x00" * 50)
        raise interruption()

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(BaseException):  # noqa: B017
        save_checkpoint(path, {"step": 2, "weights": torch.zeros(1000)})
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["weights"], torch.arange(1000.0))
    assert _leftovers(tmp_path, {"last.pt"}) == []


@pytest.mark.parametrize("interruption", INTERRUPTIONS)
def test_interrupted_sample_export_keeps_the_previous_file(tmp_path, monkeypatch, interruption):
    stack = ssn.SampleLabelStack(ssn.synthetic_distribution((6, 7), num_classes=3, rank=2), [0, 1, 2])
    path = export_samples(tmp_path / "samples.npy", stack, what=EXPORT_ALL)
    before = path.read_bytes()

    def half_save(stream, array, *args, **kwargs):
        stream.write(b"\x93NUMPY" + b"\x00" * 20)
        raise interruption()

    monkeypatch.setattr(np, "save", half_save)
    with pytest.raises(BaseException):  # noqa: B017
        export_samples(path, stack, what=EXPORT_CURRENT, overwrite=True)
    monkeypatch.undo()
    assert path.read_bytes() == before and _leftovers(tmp_path, {"samples.npy"}) == []


_KILL_SCRIPT = """
import sys, torch
from napari_seg_uncertainty.core.checkpoint import save_checkpoint
from napari_seg_uncertainty.core.io import write_image
import numpy as np
out = sys.argv[1]
step = 0
while True:
    step += 1
    weights = torch.full((2_000_000,), float(step))
    save_checkpoint(out + "/last.pt", {"step": step, "weights": weights})
    write_image(out + "/labels.nii", np.full((40, 100, 100), step % 250, np.uint8), overwrite=True)
    print(step, flush=True)
"""


def test_kill_during_repeated_writes_leaves_loadable_files(tmp_path):
    """``kill -9`` at random moments of a process that keeps rewriting a checkpoint and an image."""
    rng = np.random.default_rng(0)
    for attempt in range(3):
        process = subprocess.Popen(
            [sys.executable, "-c", _KILL_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert process.stdout is not None
            first = process.stdout.readline()  # one checkpoint and one image written
            assert first.strip(), "the writer process did not start"
            time.sleep(float(rng.uniform(0.05, 0.6)))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        state = load_checkpoint(tmp_path / "last.pt")
        assert torch.all(state["weights"] == float(state["step"])), f"attempt {attempt}: mixed checkpoint"
        labels, _ = read_image(tmp_path / "labels.nii")
        assert labels.shape == (40, 100, 100) and np.unique(labels).size == 1
    # a killed process cannot clean up its temporary file; it never shadows the real one
    assert all(p.name.startswith(".") for p in tmp_path.iterdir() if p.name not in ("last.pt", "labels.nii"))


# ---------------------------------------------------------------------------------------------- no overwrite
def _exporters(tmp_path: Path):
    stack = ssn.SampleLabelStack(ssn.synthetic_distribution((6, 7), num_classes=3, rank=2), [0, 1])
    rows = [{"bin": 1, "count": 3}]
    meta = {"scale": (1.0, 1.0, 1.0), "translate": (0.0, 0.0, 0.0)}
    return {
        "write_image.nii.gz": lambda p, **kw: write_image(p, NEW, **kw),
        "write_image.tif": lambda p, **kw: write_image(p, NEW, **kw),
        "write_image.mha": lambda p, **kw: write_image(p, NEW, **kw),
        "writer_labels.nii.gz": lambda p, **kw: _writer.write_labels_layer(str(p), NEW, meta),
        "writer_image.nrrd": lambda p, **kw: _writer.write_image_layer(str(p), NEW.astype(np.float32), meta),
        "save_distribution.npz": lambda p, **kw: ssn.save_distribution(p, stack.distribution, **kw),
        "samples_current.npy": lambda p, **kw: export_samples(p, stack, what=EXPORT_CURRENT, **kw),
        "samples_all.npz": lambda p, **kw: export_samples(p, stack, what=EXPORT_ALL, **kw),
        "samples_all.nii.gz": lambda p, **kw: export_samples(p, stack, what=EXPORT_ALL, **kw),
        "samples_dist.npz": lambda p, **kw: export_samples(p, stack, what=EXPORT_DISTRIBUTION, **kw),
        "calibration.csv": lambda p, **kw: tables.write_csv(p, rows, **kw),
    }


@pytest.mark.parametrize(
    "name",
    [
        "write_image.nii.gz",
        "write_image.tif",
        "write_image.mha",
        "writer_labels.nii.gz",
        "writer_image.nrrd",
        "save_distribution.npz",
        "samples_current.npy",
        "samples_all.npz",
        "samples_all.nii.gz",
        "samples_dist.npz",
        "calibration.csv",
    ],
)
def test_exports_never_overwrite_without_the_flag(tmp_path, name):
    export = _exporters(tmp_path)[name]
    path = tmp_path / name
    path.write_bytes(b"the user's own file")
    with pytest.raises((FileExistsError, ValueError), match="exist"):
        export(path)
    assert path.read_bytes() == b"the user's own file"
    assert _leftovers(tmp_path, {name}) == []
    if not name.startswith("writer_"):  # napari's writers never replace files (napari asks for a new name)
        export(path, overwrite=True)
        assert path.read_bytes() != b"the user's own file"


def test_header_and_data_export_never_replaces_a_users_data_file(tmp_path):
    """Writing ``scan.mhd`` must not replace an unrelated ``scan.raw`` that the header would claim."""
    (tmp_path / "scan.raw").write_bytes(b"someone's raw data")
    with pytest.raises(FileExistsError, match="scan.raw"):
        write_image(tmp_path / "scan.mhd", NEW)
    assert (tmp_path / "scan.raw").read_bytes() == b"someone's raw data"
    assert _leftovers(tmp_path, {"scan.raw"}) == []
    write_image(tmp_path / "scan.mhd", NEW, overwrite=True)
    np.testing.assert_array_equal(read_image(tmp_path / "scan.mhd")[0], NEW)
