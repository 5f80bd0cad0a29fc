"""STAPLE (core.labels.fusion.staple) against SimpleITK's own filters, including the degenerate cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_seg_uncertainty.core.labels import StapleResult, staple


def sitk_binary_staple(masks: np.ndarray) -> tuple[np.ndarray, tuple, tuple]:
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1)
    image = f.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks])
    return sitk.GetArrayFromImage(image), f.GetSensitivity(), f.GetSpecificity()


def noisy_raters(truth: np.ndarray, num_classes: int, num_raters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raters = []
    for r in range(num_raters):
        rater = truth.copy()
        flip = rng.random(truth.shape) < 0.05 * (r + 1)
        rater[flip] = rng.integers(0, num_classes, size=int(flip.sum()))
        raters.append(rater)
    return np.stack(raters)


def test_staple_binary_matches_simpleitk():
    truth = np.zeros((24, 24), dtype=int)
    truth[6:18, 5:20] = 1
    raters = noisy_raters(truth, 2, 3, seed=0)
    result = staple(raters)
    assert isinstance(result, StapleResult)
    probability, sensitivity, specificity = sitk_binary_staple(raters == 1)
    np.testing.assert_allclose(result.probabilities[1], probability, atol=1e-6)
    np.testing.assert_allclose(result.probabilities[0], 1 - probability, atol=1e-6)
    np.testing.assert_allclose(result.sensitivities[:, 1], sensitivity, rtol=1e-12)
    np.testing.assert_allclose(result.specificities[:, 1], specificity, rtol=1e-12)
    # class 0 as foreground is SimpleITK run on the complement
    _, sensitivity0, specificity0 = sitk_binary_staple(raters == 0)
    np.testing.assert_allclose(result.sensitivities[:, 0], sensitivity0, rtol=1e-12)
    np.testing.assert_allclose(result.specificities[:, 0], specificity0, rtol=1e-12)
    assert result.probabilities.dtype == np.float32
    assert result.num_raters == 3 and result.num_classes == 2


def test_staple_multilabel_matches_simpleitk():
    truth = np.zeros((6, 20, 20), dtype=int)
    truth[:, 4:16, 4:16] = 1
    truth[:, 8:12, 8:12] = 2
    truth[2:4, 1:4, 1:4] = 3
    raters = noisy_raters(truth, 4, 4, seed=1)
    result = staple(raters, num_classes=4)

    # one-vs-rest probabilities are SimpleITK's binary STAPLE, normalised over classes
    raw = np.stack([sitk_binary_staple(raters == c)[0] for c in range(4)])
    np.testing.assert_allclose(result.class_probabilities, raw, atol=1e-6)
    np.testing.assert_allclose(result.probabilities, raw / raw.sum(axis=0), atol=1e-6)
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-6)
    for c in range(4):
        _, sensitivity, specificity = sitk_binary_staple(raters == c)
        np.testing.assert_allclose(result.sensitivities[:, c], sensitivity, rtol=1e-12)
        np.testing.assert_allclose(result.specificities[:, c], specificity, rtol=1e-12)

    # labels and confusion matrices are MultiLabelSTAPLE's
    fusion = sitk.MultiLabelSTAPLEImageFilter()
    fusion.SetLabelForUndecidedPixels(99)
    expected = sitk.GetArrayFromImage(fusion.Execute([sitk.GetImageFromArray(r.astype(np.uint8)) for r in raters]))
    decided = expected != 99
    np.testing.assert_array_equal(result.labels[decided], expected[decided])
    np.testing.assert_array_equal(result.undecided, ~decided)
    for r in range(4):
        matrix = np.array(fusion.GetConfusionMatrix(r)).reshape(5, 4)
        # the pattern EM sums over vote patterns, ITK over voxels: equal to rounding (1e-12 relative, and
        # entries of ~1e-80 within 1e-15 absolute)
        np.testing.assert_allclose(result.confusion_matrices[r], matrix, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(result.confusion_matrices[r].sum(axis=0), 1.0, atol=1e-9)
    # most voxels recover the truth
    assert np.mean(result.labels == truth) > 0.95


def test_staple_undecided_voxels_take_the_most_probable_class():
    raters = np.array([[[0, 1], [2, 2]], [[0, 2], [2, 1]]])
    result = staple(raters, num_classes=3)
    assert result.undecided.any()
    argmax = np.argmax(result.probabilities, axis=0)
    np.testing.assert_array_equal(result.labels[result.undecided], argmax[result.undecided])


def test_staple_absent_class_and_unused_label_range():
    truth = np.zeros((10, 10), dtype=int)
    truth[2:8, 2:8] = 1
    raters = noisy_raters(truth, 2, 3, seed=4)
    result = staple(raters, num_classes=4)  # classes 2 and 3 never drawn
    np.testing.assert_array_equal(result.class_probabilities[2:], 0.0)
    assert np.all(np.isnan(result.sensitivities[:, 2:]))
    np.testing.assert_array_equal(result.specificities[:, 2:], 1.0)
    assert np.all(np.isnan(result.confusion_matrices[:, :, 2:]))
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-6)
    assert result.confusion_matrices.shape == (3, 5, 4)


def test_staple_all_raters_foreground_everywhere():
    raters = np.ones((2, 4, 4), dtype=int)
    result = staple(raters)
    np.testing.assert_array_equal(result.probabilities[1], 1.0)
    np.testing.assert_array_equal(result.labels, 1)


def sitk_multilabel(raters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK's own multi-label output: labels (99 = undecided) and raw confusion matrices (R, L + 1, L)."""
    fusion_filter = sitk.MultiLabelSTAPLEImageFilter()
    fusion_filter.SetLabelForUndecidedPixels(99)
    images = [sitk.GetImageFromArray(r.astype(np.uint8)) for r in raters]
    fused = sitk.GetArrayFromImage(fusion_filter.Execute(images))
    present = int(raters.max()) + 1
    matrices = np.stack(
        [np.reshape(fusion_filter.GetConfusionMatrix(r), (present + 1, present)) for r in range(len(raters))]
    )
    return fused, matrices


def test_staple_every_voxel_a_tie_is_reported_as_degenerate():
    raters = np.array([[[0, 1], [1, 0]], [[1, 0], [0, 1]]])  # two raters who disagree everywhere
    fused, raw = sitk_multilabel(raters)
    assert np.all(fused == 99) and np.all(raw == 0)  # SimpleITK: all-zero "confusion matrices"
    with pytest.warns(RuntimeWarning, match="every voxel is a tie"):
        result = staple(raters)
    assert result.degenerate
    assert not result.confusion_defined.any()
    assert np.all(np.isnan(result.confusion_matrices))
    assert result.undecided.all()
    np.testing.assert_array_equal(result.labels, np.argmax(result.probabilities, axis=0))
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-6)  # the soft labels stay valid


@pytest.mark.parametrize(
    ("raters", "num_classes", "defined"),
    [
        # all raters agree on one class everywhere: classes 0 and 1 are drawn by nobody
        (np.full((3, 4, 4), 2), 3, [False, False, True]),
        # class 1 lies below the largest label but nobody draws it
        (np.stack([np.tile([0, 2], (4, 2))] * 3), 3, [True, False, True]),
        # class 2 is drawn, by one rater only, and so never wins the vote
        (np.stack([np.tile([0, 1], (4, 2)), np.tile([0, 1], (4, 2)), np.tile([0, 2], (4, 2))]), 3,
         [True, True, False]),
        # everybody draws class 1 everywhere: class 0 (below it) has no estimate
        (np.ones((2, 4, 4), dtype=int), 2, [False, True]),
    ],
)
def test_staple_confusion_columns_without_an_estimate_are_nan(raters, num_classes, defined):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty column alone is not degenerate: no warning
        result = staple(raters, num_classes=num_classes)
    assert not result.degenerate
    assert result.confusion_defined.tolist() == defined
    columns = result.confusion_matrices.sum(axis=1)  # (R, C)
    np.testing.assert_allclose(columns[:, result.confusion_defined], 1.0, atol=1e-9)
    assert np.all(np.isnan(result.confusion_matrices[:, :, ~result.confusion_defined]))
    _, raw = sitk_multilabel(raters)
    present = raw.shape[2]
    undefined = ~result.confusion_defined[:present]
    np.testing.assert_array_equal(raw[:, :, undefined], 0.0)  # what SimpleITK returned there
    np.testing.assert_allclose(result.confusion_matrices[:, :present, :present][:, :, ~undefined],
                               raw[:, :present][:, :, ~undefined], rtol=1e-12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    num_raters=st.integers(1, 4),
    num_classes=st.integers(2, 4),
    shape=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    seed=st.integers(0, 2**16),
)
def test_staple_confusion_columns_sum_to_one_or_are_nan(num_raters, num_classes, shape, seed):
    raters = np.random.default_rng(seed).integers(0, num_classes, size=(num_raters, *shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = staple(raters, num_classes=num_classes)
    sums = result.confusion_matrices.sum(axis=1)
    defined = result.confusion_defined
    np.testing.assert_allclose(sums[:, defined], 1.0, atol=1e-9)
    assert np.all(np.isnan(sums[:, ~defined]))
    assert result.degenerate == (not defined.any())
    assert result.degenerate == bool(result.undecided.all())
