"""Geometry: layer arguments, world positions and derived grids, checked against SimpleITK."""

import numpy as np
import pytest
import SimpleITK as sitk

from napari_seg_uncertainty.core.geometry import Geometry


def _sitk_point(spacing, origin, direction, index):
    """SimpleITK's world point of ``index`` (numpy order in, numpy order out)."""
    img = sitk.Image([4, 5, 6], sitk.sitkUInt8)  # size irrelevant for the transform
    img.SetSpacing(tuple(reversed(spacing)))
    img.SetOrigin(tuple(reversed(origin)))
    img.SetDirection(tuple(np.asarray(direction)[::-1, ::-1].ravel()))
    return np.array(img.TransformContinuousIndexToPhysicalPoint(tuple(float(i) for i in reversed(index))))[::-1]


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([1.0, -1.0, -1.0]),
                                       np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])])
def test_index_to_world_matches_simpleitk(direction):
    g = Geometry(spacing=(3.0, 0.8, 0.7), origin=(10.0, -40.0, -50.0), direction=direction)
    for index in [(0, 0, 0), (1, 2, 3), (5.5, 0.25, 9)]:
        np.testing.assert_allclose(g.index_to_world(index),
                                   _sitk_point(g.spacing, g.origin, direction, index), atol=1e-9)


def test_layer_kwargs_leading_axes_and_identity_direction_dropped():
    g = Geometry(spacing=(3, 0.8, 0.8), origin=(10, -40, -50), direction=np.eye(3))
    assert g.direction is None
    kw = g.layer_kwargs(leading_axes=2)
    assert kw == {"scale": (1.0, 1.0, 3.0, 0.8, 0.8), "translate": (0.0, 0.0, 10.0, -40.0, -50.0)}


def test_affine_for_direction_reproduces_itk_convention():
    d = np.diag([1.0, -1.0, 1.0])
    g = Geometry(spacing=(2.0, 1.0, 0.5), origin=(1.0, 2.0, 3.0), direction=d)
    kw = g.layer_kwargs(leading_axes=1)
    matrix, scale, shift = kw["affine"], np.asarray(kw["scale"]), np.asarray(kw["translate"])
    index = np.array([1.0, 2.0, 3.0, 4.0])
    world = (matrix @ np.append(scale * index + shift, 1.0))[:-1]
    np.testing.assert_allclose(world[1:], g.index_to_world(index[1:]))
    assert world[0] == 1.0


def test_cropped_and_resampled_match_simpleitk_region_and_resample():
    g = Geometry(spacing=(3.0, 0.8, 0.8), origin=(10.0, -40.0, -50.0))
    img = sitk.Image([20, 16, 8], sitk.sitkFloat32)
    img.SetSpacing(tuple(reversed(g.spacing)))
    img.SetOrigin(tuple(reversed(g.origin)))
    crop = sitk.RegionOfInterest(img, [4, 3, 2], [5, 6, 1])  # size, index in (x, y, z)
    np.testing.assert_allclose(g.cropped((1, 6, 5)).origin, np.array(crop.GetOrigin())[::-1])
    r = g.resampled((6.0, 1.6, 1.6))
    # corner alignment: the first voxel's outer corner stays where it was
    np.testing.assert_allclose(np.asarray(r.origin) - np.asarray(r.spacing) / 2,
                               np.asarray(g.origin) - np.asarray(g.spacing) / 2)


def test_bad_geometry_messages():
    with pytest.raises(ValueError, match="spacing must be positive"):
        Geometry(spacing=(0.0, 1.0), origin=(0.0, 0.0))
    with pytest.raises(ValueError, match="different lengths"):
        Geometry(spacing=(1.0, 1.0), origin=(0.0,))
    with pytest.raises(TypeError, match="cannot read a geometry"):
        Geometry.of(object())


def test_same_grid_and_world_extent():
    a = Geometry(spacing=(1.0, 2.0), origin=(5.0, -3.0))
    assert a.same_grid(Geometry(spacing=(1.0, 2.0), origin=(5.0, -3.0)))
    assert not a.same_grid(Geometry(spacing=(1.0, 2.0), origin=(5.0, -2.0)))
    np.testing.assert_allclose(a.world_extent((10, 4)), [[5.0, -3.0], [14.0, 3.0]])
