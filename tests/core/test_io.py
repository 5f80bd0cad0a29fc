"""Reading and writing images with geometry (core.io)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from skimage import io as skio

from napari_seg_uncertainty.core.io import file_suffix, read_image, write_image

SUFFIXES = [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_roundtrip_keeps_values_and_geometry(tmp_path, suffix):
    data = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    path = write_image(tmp_path / f"seg{suffix}", data, spacing=(2.5, 1.0, 0.5), origin=(10.0, -3.0, 7.0))
    arr, meta = read_image(path)
    np.testing.assert_array_equal(arr, data)
    assert meta.spacing == pytest.approx((2.5, 1.0, 0.5))
    assert meta.origin == pytest.approx((10.0, -3.0, 7.0))


def test_axis_order_matches_simpleitk_convention(tmp_path):
    """A file written by SimpleITK directly: spacing (x, y, z) comes back reversed as (z, y, x)."""
    img = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.uint8))
    img.SetSpacing((0.5, 1.0, 2.5))  # x, y, z
    p = tmp_path / "a.nii.gz"
    sitk.WriteImage(img, str(p))
    arr, meta = read_image(p)
    assert arr.shape == (3, 4, 5)
    assert meta.spacing == pytest.approx((2.5, 1.0, 0.5))


def test_direction_is_reversed_into_numpy_order(tmp_path):
    img = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.uint8))
    # x axis flipped: direction diag(-1, 1, 1) in (x, y, z)
    img.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    p = tmp_path / "flip.nrrd"
    sitk.WriteImage(img, str(p))
    _, meta = read_image(p)
    np.testing.assert_allclose(np.diag(meta.direction), [1, 1, -1])


def test_probability_vector_image_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.random((3, 4, 5, 6)).astype(np.float32)
    p = write_image(tmp_path / "p.nii.gz", probs, channel_axis=0, spacing=(2.0, 1.0, 1.0))
    arr, meta = read_image(p)
    assert meta.channel_axis == 0
    np.testing.assert_allclose(arr, probs)
    assert meta.spacing == pytest.approx((2.0, 1.0, 1.0))


def test_tiff_and_png(tmp_path):
    vol = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = write_image(tmp_path / "v.tif", vol, spacing=(3.0, 0.5, 0.25))
    arr, meta = read_image(p)
    np.testing.assert_array_equal(arr, vol)
    assert meta.spacing == pytest.approx((3.0, 0.5, 0.25))
    img = np.array([[0, 1], [2, 1]], np.uint8)
    arr, meta = read_image(write_image(tmp_path / "m.png", img))
    np.testing.assert_array_equal(arr, img)
    assert meta.spacing is None


def test_grey_rgb_png_collapses_and_colour_png_is_refused(tmp_path):
    grey = np.zeros((4, 4, 3), np.uint8)
    grey[1:3, 1:3] = 1
    skio.imsave(tmp_path / "grey.png", grey, check_contrast=False)
    arr, _ = read_image(tmp_path / "grey.png")
    assert arr.shape == (4, 4) and arr.max() == 1
    colour = grey.copy()
    colour[0, 0] = (255, 0, 0)
    skio.imsave(tmp_path / "colour.png", colour, check_contrast=False)
    with pytest.raises(ValueError, match="colour PNG"):
        read_image(tmp_path / "colour.png")


def test_plain_tiff_without_resolution_has_no_spacing(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((5, 6), np.uint8))
    _, meta = read_image(tmp_path / "plain.tif")
    assert meta.spacing is None


def test_write_refuses_to_overwrite(tmp_path):
    p = write_image(tmp_path / "x.nii.gz", np.zeros((4, 4), np.uint8))
    before = (tmp_path / "x.nii.gz").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_image(p, np.ones((4, 4), np.uint8))
    assert (tmp_path / "x.nii.gz").read_bytes() == before
    write_image(p, np.ones((4, 4), np.uint8), overwrite=True)
    assert read_image(p)[0].max() == 1


def test_no_temporary_files_left(tmp_path):
    write_image(tmp_path / "x.nii.gz", np.zeros((4, 4), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["x.nii.gz"]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"path": "x.jpg"}, ValueError, "unsupported suffix"),
        ({"array": np.zeros((2, 2, 2, 2))}, ValueError, "spatial axes"),
        ({"array": np.array([["a"]])}, TypeError, "numeric"),
        ({"spacing": (1.0,)}, ValueError, "spacing must have 2 entries"),
        ({"spacing": (1.0, -1.0)}, ValueError, "finite and > 0"),
    ],
)
def test_write_errors(tmp_path, kwargs, exc, match):
    args = {"path": "x.nii.gz", "array": np.zeros((3, 3), np.uint8)}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        write_image(tmp_path / args.pop("path"), args.pop("array"), **args)


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_image(tmp_path / "missing.nii.gz")
    with pytest.raises(ValueError, match="is a folder"):
        read_image(tmp_path)
    (tmp_path / "a.xyz").write_text("x")
    with pytest.raises(ValueError, match="unsupported format"):
        read_image(tmp_path / "a.xyz")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".tif", ".png"])
def test_corrupt_files_give_clear_errors(tmp_path, suffix):
    good = write_image(tmp_path / f"good{suffix}", np.zeros((16, 16), np.uint8))
    raw = open(good, "rb").read()
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ValueError, match="could not read"):
        read_image(bad)


def test_file_suffix():
    assert file_suffix("a/b.NII.GZ") == ".nii.gz"
    assert file_suffix("b.nrrd") == ".nrrd"
    assert file_suffix("noext") == ""


def test_docstring_examples_run():
    import doctest

    from napari_seg_uncertainty.core import _file_checks, io

    for module in (io, _file_checks):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, module.__name__
