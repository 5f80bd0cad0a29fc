"""Bad input through the dock widgets: a napari notification, never a traceback; the viewer stays usable.

Each test drives one widget in a real viewer with a series of bad inputs (missing, corrupt, forged or
pickled files, mismatched layers, NaN probabilities, absurd sizes, exports onto existing files), checks
that each produced one error notification saying what went wrong, and then runs a valid action whose
numbers are checked against an independent computation, to show the viewer and the widget still work.
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from napari_seg_uncertainty.core import _memory, models
from napari_seg_uncertainty.core.io import write_image
from napari_seg_uncertainty.core.ssn import save_distribution, synthetic_distribution
from napari_seg_uncertainty.widgets import _common
from napari_seg_uncertainty.widgets import load_raters as load_raters_module
from napari_seg_uncertainty.widgets import soft_labels as soft_labels_module
from napari_seg_uncertainty.widgets import train as train_module
from napari_seg_uncertainty.widgets.calibration import CalibrationWidget
from napari_seg_uncertainty.widgets.load_raters import LoadRatersWidget
from napari_seg_uncertainty.widgets.soft_labels import SoftLabelsWidget
from napari_seg_uncertainty.widgets.ssn_samples import (
    SAMPLES_LAYER,
    SOURCE_SAVED,
    SOURCE_SYNTHETIC,
    SSNSamplesWidget,
)
from napari_seg_uncertainty.widgets.uncertainty import UncertaintyWidget
from napari_seg_uncertainty.workflow.ssn import EXPORT_ALL

TIMEOUT_MS = 60_000
BASE = np.zeros((12, 14), dtype=np.uint8)
BASE[3:9, 2:11] = 1
BASE[5:7, 4:7] = 2
RATERS = np.stack([BASE, np.roll(BASE, 1, axis=1), np.where(BASE == 2, 1, BASE)])


@pytest.fixture
def errors(monkeypatch) -> list[str]:
    messages: list[str] = []
    for module in (_common, load_raters_module, soft_labels_module, train_module):
        monkeypatch.setattr(module, "show_error", messages.append)
    return messages


def expect_error(qtbot, errors: list[str], action, *words: str) -> str:
    """Run ``action``; exactly one new notification must arrive and mention every word."""
    before = len(errors)
    action()
    qtbot.waitUntil(lambda: len(errors) > before, timeout=TIMEOUT_MS)
    qtbot.wait(20)
    assert len(errors) == before + 1, errors[before:]
    message = errors[-1]
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    return message


def forged_nifti(path):
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    path.write_bytes(header.binaryblock + b"\x00" * 68)
    return path


def pickled_npz(path, keys=("masks",)):
    payload = np.array([{"evil": 1}, None], dtype=object)
    np.savez(path, **dict.fromkeys(keys, payload))
    return path


def entropy_of(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=0)


# ---------------------------------------------------------------------------------------------- Load raters
def test_load_raters_widget(make_napari_viewer, qtbot, tmp_path, errors):
    viewer = make_napari_viewer()
    widget = LoadRatersWidget(viewer)
    viewer.window.add_dock_widget(widget)

    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b" + bytes(40))
    mismatched = tmp_path / "mismatched"
    mismatched.mkdir()
    write_image(mismatched / "r1.nii.gz", BASE)
    write_image(mismatched / "r2.nii.gz", BASE[:, :9])
    unsupported = tmp_path / "scan.jpg"
    unsupported.write_bytes(b"\xff\xd8\xff" + bytes(20))

    def load(path):
        def action():
            widget._path.value = str(path)
            widget._load_files.native.click()

        return action

    expect_error(qtbot, errors, load(tmp_path / "missing"), "Load raters failed", "does not exist")
    qtbot.waitUntil(lambda: widget._load_files.enabled, timeout=TIMEOUT_MS)
    for path, words in [
        (corrupt, ("corrupt.nii.gz", "corrupt")),
        (unsupported, ("unsupported",)),
        (mismatched, ("different shapes",)),
        (pickled_npz(tmp_path / "evil.npz"), ("pickle",)),
        (forged_nifti(tmp_path / "bomb.nii"), ("bomb.nii", "memory available")),
    ]:
        expect_error(qtbot, errors, load(path), "Load raters failed", *words)
        qtbot.waitUntil(lambda: widget._load_files.enabled, timeout=TIMEOUT_MS)
    widget._spacing.value = "2.5, x"
    expect_error(qtbot, errors, load(mismatched), "spacing")
    widget._spacing.value = "1, 0"
    expect_error(qtbot, errors, lambda: widget.load_from_layers(["nothing"]), "Load raters from layers")
    viewer.add_labels(BASE, name="a")
    viewer.add_labels(BASE[:8], name="b")
    viewer.add_labels(BASE, name="c", scale=(2.0, 1.0))
    expect_error(qtbot, errors, lambda: widget.load_from_layers(["a"]), "spacing")
    widget._spacing.value = ""
    expect_error(qtbot, errors, lambda: widget.load_from_layers(["a", "b"]), "different shapes")
    expect_error(qtbot, errors, lambda: widget.load_from_layers(["a", "c"]), "different scales")
    assert widget.statistics is None

    # still usable: a valid folder loads and the entropy map is the entropy of the raters' votes
    good = tmp_path / "good"
    good.mkdir()
    for i, r in enumerate(RATERS):
        write_image(good / f"rater{i + 1}.nii.gz", r, spacing=(0.5, 0.25))
    count = len(errors)
    widget._path.value = str(good)
    widget._load_files.native.click()
    qtbot.waitUntil(lambda: widget.statistics is not None, timeout=TIMEOUT_MS)
    assert len(errors) == count
    votes = np.stack([(RATERS == k).mean(axis=0) for k in range(3)])
    np.testing.assert_allclose(viewer.layers["rater entropy"].data, entropy_of(votes) / np.log(3), atol=1e-6)
    np.testing.assert_allclose(viewer.layers["rater entropy"].scale, (0.5, 0.25))


# ---------------------------------------------------------------------------------------------- Soft labels
def test_soft_labels_widget(make_napari_viewer, qtbot, tmp_path, errors):
    viewer = make_napari_viewer()
    for i, r in enumerate(RATERS):
        viewer.add_labels(r, name=f"rater{i + 1}")
    viewer.add_labels(BASE[:8], name="short")
    viewer.add_labels(np.full(BASE.shape, 1000, np.int32), name="many classes")
    viewer.add_labels(BASE, name="coarse", scale=(3.0, 1.0))
    widget = SoftLabelsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._live.value = False

    def compute_with(names):
        def action():
            widget._raters.value = names
            widget._compute.native.click()

        return action

    expect_error(qtbot, errors, compute_with([]), "Soft labels failed", "no rater layer")
    expect_error(qtbot, errors, compute_with(["rater1", "short"]), "different shapes")
    expect_error(qtbot, errors, compute_with(["rater1", "coarse"]), "different scales")
    expect_error(qtbot, errors, compute_with(["many classes"]), "64 classes")
    expect_error(qtbot, errors, widget.export, "nothing computed")

    # still usable: rater mean of the three raters, checked against an independent vote count
    widget._method.value = "rater_mean"
    widget._raters.value = ["rater1", "rater2", "rater3"]
    count = len(errors)
    widget._compute.native.click()
    qtbot.waitUntil(lambda: widget.result is not None and not widget.busy, timeout=TIMEOUT_MS)
    assert len(errors) == count
    for k, name in enumerate(["class 1", "class 2"], start=1):
        np.testing.assert_allclose(
            viewer.layers[f"soft A: {name}"].data, (RATERS == k).mean(axis=0), atol=1e-6
        )

    # exporting onto an existing file is refused and the file stays as it was
    existing = tmp_path / "soft.nii.gz"
    existing.write_bytes(b"user data")
    expect_error(qtbot, errors, lambda: widget.export(path=existing), "Export soft labels failed", "exists")
    qtbot.waitUntil(lambda: not widget.exporting, timeout=TIMEOUT_MS)
    assert existing.read_bytes() == b"user data"


# ---------------------------------------------------------------------------------------------- Calibration
def test_calibration_widget(make_napari_viewer, qtbot, tmp_path, errors):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    raw = rng.random((3, *BASE.shape)) + 3.0 * np.eye(3)[BASE].transpose(2, 0, 1)
    probs = (raw / raw.sum(axis=0)).astype(np.float32)
    nan_probs = probs.copy()
    nan_probs[1, 4, 4] = np.nan
    viewer.add_image(probs, name="model")
    viewer.add_image(nan_probs, name="nan model")
    viewer.add_image((probs * 255).astype(np.uint8), name="8-bit model")
    viewer.add_image(probs * 0.5, name="unnormalised")
    viewer.add_labels(BASE, name="reference")
    viewer.add_labels(BASE[:10], name="short reference")
    widget = CalibrationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._live.value = False

    def compute(models, target):
        def action():
            widget._probabilities.value = models
            widget._target.value = target
            widget.compute()

        return action

    for models_, target, words in [
        (["nan model"], ["reference"], ("nan model", "NaN")),
        (["8-bit model"], ["reference"], ("uint8", "float Image layer")),
        (["unnormalised"], ["reference"], ("sum to 1",)),
        (["model"], ["short reference"], ("target",)),
        (["model"], ["reference", "short reference"], ("different shapes",)),
        ([], ["reference"], ("no probability layer",)),
    ]:
        expect_error(qtbot, errors, compute(models_, target), "Calibration failed", *words)
        qtbot.waitUntil(lambda: widget._compute.enabled, timeout=TIMEOUT_MS)

    # still usable: ECE of the valid model against an independent 10-bin computation
    count = len(errors)
    compute(["model"], ["reference"])()
    qtbot.waitUntil(lambda: bool(widget.results) and widget._compute.enabled, timeout=TIMEOUT_MS)
    assert len(errors) == count
    confidence, correct = probs.max(axis=0).ravel(), (probs.argmax(axis=0) == BASE).ravel()
    bins = np.clip(np.ceil(confidence * 10).astype(int) - 1, 0, 9)
    ece = sum(
        abs(correct[bins == m].mean() - confidence[bins == m].mean()) * (bins == m).mean()
        for m in range(10)
        if (bins == m).any()
    )
    assert widget.results[0].summary.ece == pytest.approx(ece, abs=1e-6)

    # exports refuse to replace files unless told to
    (tmp_path / "fig.png").write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        widget.export_figure(tmp_path / "fig.png")
    (tmp_path / "table_metrics.csv").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="table_metrics.csv"):
        widget.export_csv(tmp_path / "table.csv")
    assert not (tmp_path / "table.csv").exists()
    assert (tmp_path / "fig.png").read_bytes() == b"mine" == (tmp_path / "table_metrics.csv").read_bytes()
    widget.export_csv(tmp_path / "table.csv", overwrite=True)
    assert (tmp_path / "table_metrics.csv").read_text().startswith("model,")


# ---------------------------------------------------------------------------------------------- Uncertainty
def test_uncertainty_widget(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(1)
    raw = rng.random((3, *BASE.shape)) + 0.1
    probs = (raw / raw.sum(axis=0)).astype(np.float32)
    viewer.add_image(probs, name="model")
    viewer.add_image(np.where(BASE > 0, np.nan, probs).astype(np.float32), name="nan model")
    viewer.add_image(np.stack([probs, probs[::-1]])[:, :2], name="two-class members")
    widget = UncertaintyWidget(viewer)
    viewer.window.add_dock_widget(widget)

    def compute(names, layout="classes"):
        def action():
            widget._probabilities.value = names
            widget._layout.value = layout
            widget._compute_maps.native.click()

        return action

    expect_error(qtbot, errors, compute(["nan model"]), "Uncertainty maps failed", "NaN")
    qtbot.waitUntil(lambda: widget._compute_maps.enabled, timeout=TIMEOUT_MS)
    expect_error(qtbot, errors, compute(["model"], "members"), "(M, C, *spatial)")
    qtbot.waitUntil(lambda: widget._compute_maps.enabled, timeout=TIMEOUT_MS)
    expect_error(qtbot, errors, compute(["two-class members"], "classes"), "sum to 1")
    qtbot.waitUntil(lambda: widget._compute_maps.enabled, timeout=TIMEOUT_MS)

    # still usable: the entropy map of the valid layer
    widget.maps = []
    compute(["model"])()
    qtbot.waitUntil(lambda: bool(widget.maps), timeout=TIMEOUT_MS)
    np.testing.assert_allclose(viewer.layers["model entropy"].data, entropy_of(probs) / np.log(3), atol=1e-6)
    assert len(errors) == 3


# ---------------------------------------------------------------------------------------------- SSN samples
def test_ssn_samples_widget(make_napari_viewer, qtbot, tmp_path, errors, monkeypatch):
    viewer = make_napari_viewer()
    widget = SSNSamplesWidget(viewer)
    viewer.window.add_dock_widget(widget)
    distribution = synthetic_distribution((20, 24), num_classes=3, rank=3, seed=4)
    good = save_distribution(tmp_path / "good.npz", distribution)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:300])
    np.savez(tmp_path / "keys.npz", mean=np.zeros((2, 3, 3)))
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w") as archive, archive.open("mean.npy", "w") as member:
        from numpy.lib import format as npy_format

        npy_format.write_array_header_2_0(
            member, {"descr": "<f4", "fortran_order": False, "shape": (100_000, 100_000, 100_000)}
        )

    def load(path):
        def action():
            widget._distribution_file.value = path
            widget._load_button.changed.emit(True)

        return action

    for path, words in [
        (tmp_path / "missing.npz", ("existing",)),
        (truncated, ("truncated.npz", "not a readable")),
        (tmp_path / "keys.npz", ("lacks",)),
        (pickled_npz(tmp_path / "evil.npz", ("mean", "cov_factor", "cov_diag")), ("pickle",)),
        (bomb, ("bomb.npz", "memory available")),
    ]:
        expect_error(qtbot, errors, load(path), "SSN distribution failed", *words)
        qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert widget.stack is None

    # a synthetic distribution on a layer too big for the memory left is refused, not attempted
    viewer.add_image(np.zeros((64, 256, 256), np.float32), name="big volume", contrast_limits=(0, 1))
    with monkeypatch.context() as patch:
        patch.setattr(_memory, "available_memory_bytes", lambda: 2**20)
        widget._source.value = SOURCE_SYNTHETIC
        widget._image_layer.value = "big volume"
        expect_error(qtbot, errors, lambda: widget._load_button.changed.emit(True), "memory available")
        qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)

    # still usable: the saved distribution loads and the samples are the argmax of its logit samples
    widget._source.value = SOURCE_SAVED
    load(good)()
    qtbot.waitUntil(lambda: widget.stack is not None, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    samples = np.asarray(viewer.layers[SAMPLES_LAYER].data[:])
    for entry, index in enumerate(widget.stack.sample_indices):
        logits = distribution.sample_at(index, seed=widget.stack.seed)
        assert (samples[entry] == np.argmax(logits, axis=0)).mean() > 0.999

    # exporting onto an existing file is refused unless "Overwrite existing file" is ticked
    existing = tmp_path / "samples.npy"
    existing.write_bytes(b"user data")
    widget._export_what.value = EXPORT_ALL
    widget._export_file.value = existing
    expect_error(
        qtbot,
        errors,
        lambda: widget._export_button.changed.emit(True),
        "Exporting SSN samples failed",
        "already exists",
    )
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert existing.read_bytes() == b"user data"
    widget._export_overwrite.value = True
    count = len(errors)
    widget._export_button.changed.emit(True)
    qtbot.waitUntil(lambda: not widget.busy and existing.read_bytes() != b"user data", timeout=TIMEOUT_MS)
    np.testing.assert_array_equal(np.load(existing, allow_pickle=False), samples)
    assert len(errors) == count


# ---------------------------------------------------------------------------------------------- Train
def test_train_widget_out_of_memory_and_bad_settings(
    make_napari_viewer, qtbot, tmp_path, errors, monkeypatch
):
    viewer = make_napari_viewer()
    image = np.random.default_rng(2).random(BASE.shape).astype(np.float32)
    viewer.add_image(image, name="image")
    for i, r in enumerate(RATERS[:2]):
        viewer.add_labels(r, name=f"rater{i + 1}")
    viewer.add_labels(BASE[:8], name="short")
    widget = train_module.TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._model_size.value = "tiny (8-16-32)"
    widget._epochs.value, widget._steps.value, widget._batch.value = 1, 2, 1
    widget._device.value = "cpu"
    widget._output.value = str(tmp_path)
    widget.select_layers("image", ["rater1", "short"])
    expect_error(qtbot, errors, widget.start, "Start training failed", "shape")
    widget.select_layers("image", ["rater1", "rater2"])
    widget._patch.value = "sixteen"
    expect_error(qtbot, errors, widget.start, "Start training failed", "patch")
    widget._patch.value = "8, 8"
    assert widget.state == "idle" and widget._start.enabled

    def out_of_memory(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")

    monkeypatch.setattr(models.SegmentationEnsemble, "forward", out_of_memory)
    expect_error(qtbot, errors, widget.start, "Training failed", "CUDA out of memory", "lower the batch size")
    qtbot.waitUntil(lambda: widget.state == "idle", timeout=TIMEOUT_MS)
    assert widget._start.enabled and "prediction labels" not in viewer.layers
    # the viewer and the widget still work: the data the next run would train on is what the layers hold
    viewer.add_labels(RATERS[2], name="rater3")
    widget._raters.value = ["rater1", "rater2", "rater3"]
    data = widget.collect_data()
    np.testing.assert_array_equal(data.raters[0], RATERS)
    np.testing.assert_array_equal(data.images[0][0], image)
