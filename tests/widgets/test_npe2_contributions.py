"""The npe2 manifest, reader, writers and sample data through napari itself."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from npe2 import PluginManager

from napari_seg_uncertainty._reader import get_reader
from napari_seg_uncertainty.core.io import read_image, write_image
from napari_seg_uncertainty.core.raters import rater_entropy

PLUGIN = "napari-seg-uncertainty"


def test_manifest_validates():
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", PLUGIN], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_manifest_is_discovered_with_widgets_and_samples():
    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest(PLUGIN)
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert "Load raters" in widgets
    assert "Cohort review" in widgets
    samples = {s.key for s in manifest.contributions.sample_data}
    assert {"phantom_2d", "phantom_3d", "real_ct_2d", "real_mr_3d"} <= samples


@pytest.mark.parametrize("key", ["phantom_2d", "real_ct_2d", "real_mr_3d"])
def test_sample_data_opens_in_viewer(make_napari_viewer, key):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, key)
    labels = [layer for layer in viewer.layers if layer._type_string == "labels"]
    images = [layer for layer in viewer.layers if layer._type_string == "image"]
    assert len(labels) == 4 and len(images) == 1
    # every layer carries the same physical scale as the image
    for layer in labels:
        np.testing.assert_allclose(layer.scale, images[0].scale)
    if key == "real_ct_2d":
        np.testing.assert_allclose(images[0].scale, (0.661468, 0.661468), rtol=1e-5)
    # one case: every layer tagged with it; each rater in its own colour, the first one shown
    assert len({layer.metadata["nsu_case"] for layer in viewer.layers}) == 1
    colours = {tuple(np.round(layer.colormap.map(np.array([1]))[0], 3)) for layer in labels}
    assert len(colours) == 4
    assert [layer.visible for layer in labels] == [True, False, False, False]


def test_reader_opens_rater_folder_and_single_files(make_napari_viewer, tmp_path):
    r = np.zeros((2, 6, 8), np.uint8)
    r[:, 2:4, 2:6] = 1
    r[1, 2, 2] = 0
    for i in range(2):
        write_image(tmp_path / f"seg{i}.nii.gz", r[i], spacing=(0.5, 2.0))
    write_image(tmp_path / "image.nii.gz", np.random.default_rng(0).random((6, 8)).astype(np.float32),
                spacing=(0.5, 2.0))
    assert get_reader(str(tmp_path)) is not None
    assert get_reader(str(tmp_path / "x.czi")) is None
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    assert get_reader(str(tmp_path / "photos")) is None  # a folder without label files is not ours
    np.savez(tmp_path / "dist.npz", mean=np.zeros((2, 6, 8)), cov_diag=np.ones((2, 6, 8)))
    assert get_reader(str(tmp_path / "dist.npz")) is None  # an SSN distribution, not raters
    np.savez(tmp_path / "lidc.npz", masks=r)
    assert get_reader(str(tmp_path / "lidc.npz")) is not None
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path), plugin=PLUGIN)
    names = [layer.name for layer in viewer.layers]
    assert names == ["image", "agreement: class 1", "rater entropy", "seg0", "seg1"]  # as Load raters shows them
    np.testing.assert_allclose(viewer.layers["seg0"].scale, (0.5, 2.0))
    assert {layer.metadata["nsu_case"] for layer in viewer.layers} == {tmp_path.name}
    viewer.layers.clear()
    viewer.open(str(tmp_path / "seg1.nii.gz"), plugin=PLUGIN)
    assert viewer.layers["seg1"]._type_string == "labels"
    viewer.open(str(tmp_path / "image.nii.gz"), plugin=PLUGIN)
    assert viewer.layers["image"]._type_string == "image"


def test_writers_keep_spacing_and_refuse_overwrite(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1:3, 1:4, 2:5] = 2
    viewer.add_labels(labels, name="seg", scale=(2.5, 0.7, 0.7))
    probs = np.random.default_rng(1).random((3, 4, 5, 6)).astype(np.float32)
    entropy = rater_entropy(np.stack([labels, labels * 0]), num_classes=3)
    viewer.add_image(entropy, name="entropy", scale=(2.5, 0.7, 0.7))
    viewer.add_image(probs, name="probs", scale=(1, 2.5, 0.7, 0.7))
    out = tmp_path / "seg.nii.gz"
    viewer.layers["seg"].save(str(out), plugin=PLUGIN)
    arr, meta = read_image(out)
    np.testing.assert_array_equal(arr, labels)
    assert meta.spacing == pytest.approx((2.5, 0.7, 0.7))
    viewer.layers["entropy"].save(str(tmp_path / "ent.nrrd"), plugin=PLUGIN)
    arr, meta = read_image(tmp_path / "ent.nrrd")
    np.testing.assert_allclose(arr, entropy)
    viewer.layers["probs"].save(str(tmp_path / "probs.nii.gz"), plugin=PLUGIN)
    arr, meta = read_image(tmp_path / "probs.nii.gz")
    np.testing.assert_allclose(arr, probs)
    assert meta.channel_axis == 0 and meta.spacing == pytest.approx((2.5, 0.7, 0.7))
    before = out.read_bytes()
    with pytest.raises(Exception, match="already exists"):
        viewer.layers["seg"].save(str(out), plugin=PLUGIN)
    assert out.read_bytes() == before
