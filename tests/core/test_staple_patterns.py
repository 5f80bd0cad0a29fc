"""STAPLE by EM over vote patterns (the default) against SimpleITK's own filters, run here directly.

Random multi-rater stacks, binary and multi-label, 3-7 raters, 2-D and 3-D, including all-agree volumes, a
class no rater uses, ties, and the large-pattern-space path. Tolerance 1e-6 (the issue's bound); labels and
undecided voxels must be identical.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
import SimpleITK as sitk

from napari_seg_uncertainty.core.labels import StapleResult, staple
from napari_seg_uncertainty.core.labels.fusion import STAPLE_METHODS
from napari_seg_uncertainty.core.raters import votes

ATOL = 1e-6


def sitk_binary(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SimpleITK's STAPLEImageFilter on 0/1 masks: float64 posterior, sensitivities, specificities."""
    staple_filter = sitk.STAPLEImageFilter()
    staple_filter.SetForegroundValue(1)
    image = staple_filter.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks])
    return (sitk.GetArrayFromImage(image), np.array(staple_filter.GetSensitivity()),
            np.array(staple_filter.GetSpecificity()))


def sitk_multilabel(raters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK's MultiLabelSTAPLEImageFilter: labels (255 = undecided) and raw (R, L + 1, L) matrices."""
    fusion = sitk.MultiLabelSTAPLEImageFilter()
    fusion.SetLabelForUndecidedPixels(255)
    fused = sitk.GetArrayFromImage(fusion.Execute([sitk.GetImageFromArray(r.astype(np.uint8)) for r in raters]))
    present = int(raters.max()) + 1
    raw = np.stack([np.reshape(fusion.GetConfusionMatrix(r), (present + 1, present)) for r in range(len(raters))])
    return fused, raw


def noisy_stack(rng: np.random.Generator, num_raters: int, num_classes: int, shape: tuple[int, ...]) -> np.ndarray:
    """Raters who each relabel a different share of a blocky truth at random."""
    truth = np.zeros(shape, dtype=np.int64)
    for c in range(1, num_classes):
        corner = [int(rng.integers(0, max(s - 2, 1))) for s in shape]
        truth[tuple(slice(a, a + max(s // 2, 1)) for a, s in zip(corner, shape))] = c
    raters = []
    for r in range(num_raters):
        flip = rng.random(shape) < 0.05 + 0.04 * r
        raters.append(np.where(flip, rng.integers(0, num_classes, size=shape), truth))
    return np.stack(raters)


def check_against_simpleitk(raters: np.ndarray, num_classes: int) -> StapleResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = staple(raters, num_classes=num_classes)
    assert result.probabilities.dtype == np.float32 and result.class_probabilities.dtype == np.float32
    for c in range(num_classes):
        masks = raters == c
        if not masks.any() or masks.all():  # the documented special cases (SimpleITK divides by zero there)
            continue
        posterior, sensitivity, specificity = sitk_binary(masks)
        np.testing.assert_allclose(result.class_probabilities[c], posterior, atol=ATOL)
        np.testing.assert_allclose(result.sensitivities[:, c], sensitivity, atol=ATOL)
        np.testing.assert_allclose(result.specificities[:, c], specificity, atol=ATOL)
    fused, raw = sitk_multilabel(raters)
    decided = fused != 255
    np.testing.assert_array_equal(result.undecided, ~decided)
    np.testing.assert_array_equal(result.labels[decided], fused[decided])
    present = raw.shape[2]
    defined = result.confusion_defined[:present]
    np.testing.assert_allclose(result.confusion_matrices[:, :present, :present][:, :, defined],
                               raw[:, :present][:, :, defined], atol=ATOL)
    np.testing.assert_allclose(result.confusion_matrices[:, num_classes, :present][:, defined],
                               raw[:, present][:, defined], atol=ATOL)
    np.testing.assert_array_equal(raw[:, :, ~defined], 0.0)
    # and the whole result equals method="simpleitk" (the package's SimpleITK path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = staple(raters, num_classes=num_classes, method="simpleitk")
    for name in ("probabilities", "class_probabilities", "sensitivities", "specificities", "confusion_matrices"):
        np.testing.assert_allclose(getattr(result, name), getattr(reference, name), atol=ATOL, err_msg=name)
    for name in ("labels", "undecided", "confusion_defined"):
        np.testing.assert_array_equal(getattr(result, name), getattr(reference, name), err_msg=name)
    assert result.degenerate == reference.degenerate
    return result


@pytest.mark.parametrize("num_raters", [3, 4, 5, 6, 7])
@pytest.mark.parametrize("ndim", [2, 3])
def test_binary_staple_equals_simpleitk(num_raters, ndim):
    rng = np.random.default_rng(100 * num_raters + ndim)
    shape = (17, 23) if ndim == 2 else (4, 9, 11)
    raters = noisy_stack(rng, num_raters, 2, shape)
    result = check_against_simpleitk(raters, 2)
    np.testing.assert_allclose(result.probabilities[1], result.class_probabilities[1], atol=0)
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-6)


@pytest.mark.parametrize("num_raters", [3, 4, 5, 6, 7])
@pytest.mark.parametrize(("ndim", "num_classes"), [(2, 3), (3, 4), (2, 5)])
def test_multilabel_staple_equals_simpleitk(num_raters, ndim, num_classes):
    rng = np.random.default_rng(1000 * num_raters + 10 * ndim + num_classes)
    shape = (19, 21) if ndim == 2 else (5, 8, 9)
    raters = noisy_stack(rng, num_raters, num_classes, shape)
    result = check_against_simpleitk(raters, num_classes)
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_uniformly_random_stacks_with_ties_equal_simpleitk(seed):
    """Pure noise: many ties in the initial vote (ITK's off-by-one row) and undecided voxels."""
    rng = np.random.default_rng(seed)
    num_raters, num_classes = int(rng.integers(3, 8)), int(rng.integers(2, 5))
    raters = rng.integers(0, num_classes, size=(num_raters, 7, 9))
    check_against_simpleitk(raters, num_classes)


def test_a_class_no_rater_uses_equals_simpleitk():
    rng = np.random.default_rng(7)
    raters = noisy_stack(rng, 4, 4, (4, 10, 10))
    raters[raters == 2] = 1  # class 2 lies below the largest label but nobody draws it
    result = check_against_simpleitk(raters, 5)  # class 4 above the largest label, unused too
    assert np.all(np.isnan(result.sensitivities[:, [2, 4]]))
    np.testing.assert_array_equal(result.class_probabilities[[2, 4]], 0.0)
    assert not result.confusion_defined[2] and not result.confusion_defined[4]


@pytest.mark.parametrize("label", [0, 1, 2])
def test_all_agree_volume(label):
    raters = np.full((5, 3, 4, 4), label)
    result = staple(raters, num_classes=3)
    reference = staple(raters, num_classes=3, method="simpleitk")
    for name in ("probabilities", "class_probabilities", "sensitivities", "specificities", "confusion_matrices"):
        np.testing.assert_allclose(getattr(result, name), getattr(reference, name), atol=ATOL, err_msg=name)
    np.testing.assert_array_equal(result.labels, label)
    np.testing.assert_array_equal(result.probabilities[label], 1.0)
    fused, _ = sitk_multilabel(raters)
    np.testing.assert_array_equal(result.labels, fused)


def test_every_voxel_a_tie_is_degenerate_as_simpleitk():
    raters = np.array([[[0, 1], [1, 0]], [[1, 0], [0, 1]], [[2, 2], [2, 2]]])
    with pytest.warns(RuntimeWarning, match="every voxel is a tie"):
        result = staple(raters)
    assert result.degenerate and result.undecided.all()
    fused, raw = sitk_multilabel(raters)
    assert np.all(fused == 255) and np.all(raw == 0)


def test_max_iterations_and_confidence_weight_follow_simpleitk():
    rng = np.random.default_rng(3)
    raters = noisy_stack(rng, 4, 2, (12, 12))
    for iterations in (1, 2, 5):
        result = staple(raters, max_iterations=iterations, confidence_weight=0.7)
        staple_filter = sitk.STAPLEImageFilter()
        staple_filter.SetMaximumIterations(iterations)
        staple_filter.SetConfidenceWeight(0.7)
        posterior = sitk.GetArrayFromImage(staple_filter.Execute([sitk.GetImageFromArray(m.astype(np.uint8))
                                                                 for m in raters == 1]))
        np.testing.assert_allclose(result.class_probabilities[1], posterior, atol=ATOL)
        fusion = sitk.MultiLabelSTAPLEImageFilter()
        fusion.SetMaximumNumberOfIterations(iterations)
        fusion.SetLabelForUndecidedPixels(255)
        fusion.Execute([sitk.GetImageFromArray(r.astype(np.uint8)) for r in raters])
        np.testing.assert_allclose(result.confusion_matrices[0, :3], np.reshape(fusion.GetConfusionMatrix(0), (3, 2)),
                                   atol=ATOL)


def test_large_pattern_space_path_equals_the_dense_one(monkeypatch):
    rng = np.random.default_rng(11)
    raters = noisy_stack(rng, 5, 4, (3, 9, 10))
    dense = staple(raters, num_classes=4)
    monkeypatch.setattr(votes, "DENSE_PATTERN_LIMIT", 16)
    sparse = staple(raters, num_classes=4)
    for name in ("probabilities", "class_probabilities", "sensitivities", "specificities", "confusion_matrices"):
        np.testing.assert_array_equal(getattr(sparse, name), getattr(dense, name), err_msg=name)
    np.testing.assert_array_equal(sparse.labels, dense.labels)


def test_signed_labels_with_codes_beyond_float64_precision_equal_uint8():
    """36 raters, 3 classes (3**36 > 2**53 pattern codes): an int64 stack gives uint8's numbers exactly."""
    rng = np.random.default_rng(36)
    raters = noisy_stack(rng, 36, 3, (12, 13))
    raters[-1, :2] = rng.integers(0, 3, size=(2, 13))  # neighbouring codes differing in the last rater only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = staple(raters.astype(np.uint8), num_classes=3)
        for dtype in (np.int64, np.int16):
            result = staple(raters.astype(dtype), num_classes=3)
            for name in ("probabilities", "class_probabilities", "sensitivities", "specificities",
                         "confusion_matrices", "labels", "undecided"):
                np.testing.assert_array_equal(getattr(result, name), getattr(expected, name), err_msg=name)


def test_result_pickles_before_class_probabilities_are_read_and_makes_them_once():
    import pickle
    import threading

    raters = noisy_stack(np.random.default_rng(4), 4, 3, (9, 10))
    reference = staple(raters, num_classes=3, method="simpleitk")
    loaded = pickle.loads(pickle.dumps(staple(raters, num_classes=3)))  # class probabilities not read yet
    assert isinstance(loaded.class_probabilities_source, np.ndarray)
    np.testing.assert_allclose(loaded.class_probabilities, reference.class_probabilities, atol=ATOL)
    np.testing.assert_array_equal(loaded.labels, reference.labels)

    result = staple(raters, num_classes=3)
    barrier, seen = threading.Barrier(4), []

    def read() -> None:
        barrier.wait()
        seen.append(result.class_probabilities)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(maps is seen[0] for maps in seen)  # made once, the same array for every reader
    np.testing.assert_array_equal(seen[0], loaded.class_probabilities)


def test_method_is_checked_and_staple_stays_importable_from_fusion():
    assert STAPLE_METHODS == ("patterns", "simpleitk")
    staple_module = importlib.import_module("napari_seg_uncertainty.core.labels.staple")
    fusion_module = importlib.import_module("napari_seg_uncertainty.core.labels.fusion")
    assert fusion_module.staple is staple_module.staple is staple
    assert fusion_module.StapleResult is staple_module.StapleResult is StapleResult
    with pytest.raises(ValueError, match="method must be one of"):
        staple(np.zeros((2, 3, 3), dtype=int), method="itk")


def test_non_contiguous_and_list_input():
    rng = np.random.default_rng(5)
    raters = noisy_stack(rng, 4, 3, (10, 12))
    expected = staple(raters, num_classes=3)
    wide = np.zeros((4, 10, 24), dtype=np.int64)
    wide[:, :, ::2] = raters
    for given in (wide[:, :, ::2], list(raters)):
        result = staple(given, num_classes=3)
        np.testing.assert_array_equal(result.probabilities, expected.probabilities)
        np.testing.assert_array_equal(result.labels, expected.labels)


def ct_like_raters(shape: tuple[int, int, int], num_raters: int = 4, seed: int = 0) -> np.ndarray:
    """Nested ellipsoids (organ 1, lesion 2) whose boundaries each rater moves by a smooth random field."""
    rng = np.random.default_rng(seed)
    z, y, x = (np.linspace(-1, 1, s)[(slice(None),) + (None,) * (2 - i)] for i, s in enumerate(shape))
    raters = np.zeros((num_raters, *shape), dtype=np.uint8)
    for r in range(num_raters):
        wobble = rng.normal(0, 0.05, 3)
        organ = (y / 0.6) ** 2 + ((x + 0.1) / 0.5) ** 2 + (z / 0.8) ** 2 + wobble[0] * np.cos(3 * y + r)
        lesion = ((y - 0.1) / 0.2) ** 2 + ((x + 0.2) / 0.2) ** 2 + (z / 0.3) ** 2 + wobble[1] * np.cos(4 * x)
        raters[r][organ < 1.0] = 1
        raters[r][lesion < 1.0 + wobble[2]] = 2
    return raters


@pytest.mark.slow
def test_ct_like_volume_equals_simpleitk():
    """A smooth CT-like 3-D case with 2.4 M voxels, large consensus regions and thin disagreement shells."""
    raters = ct_like_raters((24, 224, 224))
    check_against_simpleitk(raters, 3)


def test_outputs_are_refused_before_allocation_when_memory_is_short(monkeypatch):
    from napari_seg_uncertainty.core import _memory
    from napari_seg_uncertainty.core._memory import OutputTooLargeError

    raters = noisy_stack(np.random.default_rng(2), 3, 3, (6, 7))
    result = staple(raters, num_classes=3)  # class probabilities not made yet
    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: 100)  # fewer bytes than the maps
    with pytest.raises(OutputTooLargeError, match="class probabilities"):
        _ = result.class_probabilities
    with pytest.raises(OutputTooLargeError, match="STAPLE"):
        staple(raters, num_classes=3)
    monkeypatch.undo()
    np.testing.assert_array_equal(result.class_probabilities,
                                  staple(raters, num_classes=3, method="simpleitk").class_probabilities)
