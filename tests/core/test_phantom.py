"""Phantom and real-image sample data (core.phantom)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_uncertainty.core.phantom import make_phantom_raters, make_real_raters, simulate_raters


@pytest.mark.parametrize("ndim", [2, 3])
def test_phantom_raters_disagree_at_boundaries_and_miss_the_nodule(ndim):
    image, rs = make_phantom_raters(ndim, seed=0)
    assert image.shape == rs.shape and image.dtype == np.float32
    assert rs.class_names == ["background", "organ", "lesion", "nodule"]
    assert rs.num_raters == 4 and rs.ndim == ndim
    # raters are not identical but agree on the bulk of the organ
    dice = rs.pairwise_dice()
    off_diag = dice[1][~np.eye(4, dtype=bool)]
    assert 0.8 < off_diag.min() < 1.0
    # disagreement sits at boundaries: every uncertain voxel is near a boundary of the rater mean
    from scipy import ndimage as ndi

    ent = rs.entropy_map()
    consensus = rs.agreement_map().argmax(0)
    edges = np.zeros(rs.shape, bool)
    for k in range(4):
        m = consensus == k
        edges |= m ^ ndi.binary_erosion(m, iterations=1)
    near = ndi.binary_dilation(edges, iterations=6)
    assert ent[~near].max() == 0.0
    assert ent.max() >= 0.5  # at least a 2:2 split between two classes somewhere


def test_phantom_nodule_is_missed_by_some_raters_across_seeds():
    empties = [make_phantom_raters(2, seed=s)[1].summary().column("raters_empty")[3] for s in range(10)]
    rate = sum(empties) / (10 * 4)
    assert 0.15 < rate < 0.65  # LIDC-like: a sizeable share of masks leave the nodule out
    assert max(empties) < 4  # at least one rater always draws it


def test_phantom_is_deterministic():
    a = make_phantom_raters(2, seed=5)[1].labels
    b = make_phantom_raters(2, seed=5)[1].labels
    c = make_phantom_raters(2, seed=6)[1].labels
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("ndim", [2, 3])
def test_real_image_with_simulated_raters(ndim):
    image, rs, description = make_real_raters(ndim)
    assert image.shape == rs.shape and rs.num_raters == 4
    assert ("CT" in description) if ndim == 2 else ("MR" in description)
    assert rs.spacing is not None and all(s > 0 for s in rs.spacing)
    counts = rs.summary().column("mean_volume")
    assert all(c > 0 for c in counts)


def test_simulate_raters_without_noise_reproduces_structures():
    disk = np.hypot(*np.mgrid[-15:15, -15:15]) < 9
    raters = simulate_raters([disk], num_raters=2, boundary_noise=0.0, rater_bias=0.0)
    np.testing.assert_array_equal(raters[0] > 0, disk)
    with pytest.raises(ValueError, match="one value per structure"):
        simulate_raters([disk], miss_probability=(0.1, 0.2))
    with pytest.raises(ValueError, match="ndim must be 2 or 3"):
        make_phantom_raters(4)
