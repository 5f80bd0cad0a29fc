"""Rater statistics from count vectors and vote patterns (core.raters.votes) against direct computations.

The entropy, agreement, rater mean and majority vote are computed from a lookup table over the possible
count vectors (or slab by slab beyond its limit); both paths must give exactly today's full-array formulas,
and the entropy must match scipy.stats.entropy. Pairwise Dice and the summary come from overlap counts.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy

from napari_seg_uncertainty.core._numeric import entropy_nats
from napari_seg_uncertainty.core.labels import majority_vote, rater_mean
from napari_seg_uncertainty.core.raters import RaterSet, agreement_map, pairwise_dice, rater_entropy, votes


def random_stack(seed: int, num_raters: int, num_classes: int, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, num_classes, size=shape)
    return np.stack([np.where(rng.random(shape) < 0.3, rng.integers(0, num_classes, size=shape), truth)
                     for _ in range(num_raters)])


def full_fractions(stack: np.ndarray, num_classes: int) -> np.ndarray:
    """The rater mean as it was computed before: float32 one-hot counts over the whole volume / R."""
    counts = np.stack([(stack == c).sum(axis=0) for c in range(num_classes)]).astype(np.float32)
    counts /= np.float32(stack.shape[0])
    return counts


def full_entropy(stack: np.ndarray, num_classes: int, normalize: bool = True) -> np.ndarray:
    p = full_fractions(stack, num_classes)
    h = entropy_nats(p, axis=0)
    if normalize:
        h = np.clip(h / np.log(num_classes), 0.0, 1.0)
    return h.astype(np.float32)


CASES = [(2, 2, (9, 11)), (4, 3, (3, 17, 19)), (7, 5, (4, 6, 5)), (3, 9, (13, 7)), (300, 3, (5, 6))]


@pytest.fixture(params=["patterns", "counts", "slabs"])
def path(request, monkeypatch):
    if request.param in ("counts", "slabs"):
        monkeypatch.setattr(votes, "PATTERN_TABLE_LIMIT", 1)
    if request.param == "slabs":
        monkeypatch.setattr(votes, "COUNT_TABLE_LIMIT", 1)
    monkeypatch.setattr(votes, "SLAB_VOXELS", 37)  # many slabs, one cut inside a plane
    return request.param


@pytest.mark.parametrize(("num_raters", "num_classes", "shape"), CASES)
def test_entropy_agreement_mean_and_vote_equal_the_full_formulas(path, num_raters, num_classes, shape):
    stack = random_stack(num_raters, num_raters, num_classes, shape)
    expected_p = full_fractions(stack, num_classes)
    np.testing.assert_array_equal(agreement_map(stack, num_classes=num_classes), expected_p)
    np.testing.assert_array_equal(rater_mean(stack, num_classes=num_classes), expected_p)
    for normalize in (True, False):
        np.testing.assert_array_equal(rater_entropy(stack, num_classes=num_classes, normalize=normalize),
                                      full_entropy(stack, num_classes, normalize))
    counts = np.stack([(stack == c).sum(axis=0) for c in range(num_classes)])
    np.testing.assert_array_equal(majority_vote(stack, num_classes=num_classes), np.argmax(counts, axis=0))


@pytest.mark.parametrize(("num_raters", "num_classes", "shape"), CASES)
def test_entropy_equals_scipy(num_raters, num_classes, shape):
    stack = random_stack(10 + num_raters, num_raters, num_classes, shape)
    p = np.stack([(stack == c).mean(axis=0) for c in range(num_classes)])
    expected = scipy_entropy(p, axis=0) / np.log(num_classes)
    np.testing.assert_allclose(rater_entropy(stack, num_classes=num_classes), expected, atol=1e-6)


def test_count_dtype_is_the_smallest():
    assert votes.count_dtype(4) == np.uint8 and votes.count_dtype(255) == np.uint8
    assert votes.count_dtype(256) == np.uint16
    counts = votes.slab_class_counts(random_stack(0, 4, 3, (5, 5)), 3)
    assert counts.dtype == np.uint8


def test_results_of_a_non_contiguous_stack():
    stack = random_stack(3, 4, 3, (6, 10))
    wide = np.zeros((4, 6, 20), dtype=np.int64)
    wide[:, :, 1::2] = stack
    view = wide[:, :, 1::2]
    np.testing.assert_array_equal(rater_entropy(view, num_classes=3), rater_entropy(stack, num_classes=3))
    np.testing.assert_array_equal(agreement_map(view, num_classes=3), agreement_map(stack, num_classes=3))


@pytest.mark.parametrize("dense_limit", [votes.DENSE_PATTERN_LIMIT, 1])
@pytest.mark.parametrize(("num_raters", "num_classes", "shape"), CASES[:4])
def test_pairwise_dice_equals_the_pair_by_pair_count(num_raters, num_classes, shape, dense_limit, monkeypatch):
    monkeypatch.setattr(votes, "SLAB_VOXELS", 29)
    monkeypatch.setattr(votes, "DENSE_PATTERN_LIMIT", dense_limit)  # pattern histogram, or mask products
    stack = random_stack(20 + num_raters, num_raters, num_classes, shape)
    stack[stack == num_classes - 1] = 0  # a class nobody uses: empty pairs
    dice = pairwise_dice(stack, num_classes=num_classes, empty_value=np.nan)
    for c in range(num_classes):
        for i in range(num_raters):
            for j in range(num_raters):
                a, b = stack[i] == c, stack[j] == c
                denominator = a.sum() + b.sum()
                expected = 2.0 * (a & b).sum() / denominator if denominator else np.nan
                np.testing.assert_allclose(dice[c, i, j], expected, rtol=1e-15)


def test_summary_counts_volumes_and_dice():
    stack = random_stack(4, 4, 3, (3, 8, 9))
    raters = RaterSet(labels=stack, spacing=(2.0, 0.5, 0.5))
    table = raters.summary()
    for k in range(3):
        vols = np.array([(stack[r] == k).sum() for r in range(4)]) * 0.5
        np.testing.assert_allclose(table.column("mean_volume")[k], vols.mean())
        np.testing.assert_allclose(table.column("std_volume")[k], vols.std())
        iu = np.triu_indices(4, k=1)
        pair = pairwise_dice(stack, num_classes=3, empty_value=np.nan)[k][iu]
        np.testing.assert_allclose(table.column("mean_pairwise_dice")[k], pair.mean())
        np.testing.assert_allclose(table.column("min_pairwise_dice")[k], pair.min())


def test_vote_patterns_histogram(monkeypatch):
    stack = random_stack(5, 4, 3, (6, 7))
    for limit in (votes.DENSE_PATTERN_LIMIT, 8):
        monkeypatch.setattr(votes, "DENSE_PATTERN_LIMIT", limit)
        found = votes.vote_patterns(stack, 3)
        rows = stack.reshape(4, -1).T
        unique, counts = np.unique(rows, axis=0, return_counts=True)
        order = np.lexsort(found.patterns.T[::-1])
        np.testing.assert_array_equal(found.patterns[order], unique)
        np.testing.assert_array_equal(found.counts[order], counts)
        (mapped,) = found.to_voxels(np.arange(len(found.counts)))
        np.testing.assert_array_equal(found.patterns[mapped.reshape(-1)], rows)


def wide_code_stack() -> np.ndarray:
    """An int64 stack of 36 raters and 3 classes (3**36 > 2**53 codes): random rows, all-zero rows that differ
    only in the last rater, and all-2 rows, so codes near 0 and near 3**36 both occur."""
    stack = random_stack(12, 36, 3, (7, 9)).astype(np.int64)
    stack[:, 0, :] = 0
    stack[-1, 0, :3] = [0, 1, 2]
    stack[:, 1, :] = 2
    stack[-1, 1, :3] = [0, 1, 2]
    stack[0, 2, :] = 2
    stack[1:-1, 2, :] = 0
    stack[-1, 2, :] = np.arange(9) % 3  # (2, 0, ..., 0, 1) and (2, 0, ..., 0, 2): codes above 2**53, 1 apart
    return stack


def test_vote_patterns_of_signed_labels_beyond_float64_precision():
    """Codes above 2**53 must stay exact: the patterns equal numpy.unique of the voxel rows, for any dtype."""
    stack = wide_code_stack()
    rows = stack.reshape(36, -1).T
    unique, counts = np.unique(rows, axis=0, return_counts=True)
    for dtype in (np.int64, np.int32, np.int8, np.uint8, np.uint64):
        found = votes.vote_patterns(stack.astype(dtype), 3)
        order = np.lexsort(found.patterns.T[::-1])
        np.testing.assert_array_equal(found.patterns[order], unique, err_msg=str(dtype))
        np.testing.assert_array_equal(found.counts[order], counts, err_msg=str(dtype))
        (mapped,) = found.to_voxels(np.arange(len(found.counts)))
        np.testing.assert_array_equal(found.patterns[mapped.reshape(-1)], rows, err_msg=str(dtype))


@pytest.mark.parametrize("table_limit", [votes.PATTERN_TABLE_LIMIT, 1])
def test_map_count_vectors_into_a_non_contiguous_out(table_limit, monkeypatch):
    monkeypatch.setattr(votes, "PATTERN_TABLE_LIMIT", table_limit)
    monkeypatch.setattr(votes, "COUNT_TABLE_LIMIT", table_limit)
    stack = random_stack(3, 4, 3, (6, 5))
    expected = full_fractions(stack, 3)
    out = np.empty((3, 6, 5), dtype=np.float32).transpose(0, 2, 1)  # (3, 5, 6), not C-contiguous
    result = votes.map_count_vectors(stack.transpose(0, 2, 1), 3, lambda c: votes.vote_fractions(c, 4), out)
    assert result is out
    np.testing.assert_array_equal(out, expected.transpose(0, 2, 1))


def test_too_many_patterns_for_a_code_is_a_clear_error():
    with pytest.raises(ValueError, match="simpleitk"):
        votes.vote_patterns(np.zeros((30, 2, 2), dtype=np.uint8), 5)


@pytest.mark.parametrize("values", [[0, 1, 2, 4], [0, 3, 255], [0, 300, 70000], [0, 7, 2**40]])
@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_load_raters_label_values_and_remap_equal_numpy_unique(values, dtype):
    from napari_seg_uncertainty.core.raters import load_raters

    rng = np.random.default_rng(len(values))
    stack = np.asarray(values, dtype=dtype)[rng.integers(0, len(values), size=(3, 4, 9, 8))]
    stack[0, 0, 0, 0] = values[-1]  # every value present somewhere
    raters = load_raters(stack)
    expected = np.unique(stack)
    if expected.tolist() == list(range(len(expected))):
        assert raters.label_values is None
    else:
        assert raters.label_values == expected.tolist()
    np.testing.assert_array_equal(raters.labels, np.searchsorted(expected, stack))
    assert raters.labels.dtype == np.uint8


def test_raterset_voxel_counts():
    stack = random_stack(8, 3, 4, (5, 6))
    counts = RaterSet(labels=stack, class_names=["a", "b", "c", "d"]).voxel_counts()
    np.testing.assert_array_equal(counts, [[np.count_nonzero(stack[r] == c) for r in range(3)] for c in range(4)])


def test_statistics_share_one_overlap_pass():
    from napari_seg_uncertainty.workflow.rater_statistics import compute_statistics

    stack = random_stack(9, 4, 3, (3, 6, 7))
    stats = compute_statistics(stack)
    masks = np.stack([stack == c for c in range(3)])  # (C, R, *spatial)
    for c, i, j in np.ndindex(3, 4, 4):  # independent of overlap_counts: pair-by-pair voxel counts
        both = np.count_nonzero(masks[c, i] & masks[c, j])
        total = np.count_nonzero(masks[c, i]) + np.count_nonzero(masks[c, j])
        assert stats.dice[c, i, j] == pytest.approx(2.0 * both / total if total else 1.0, rel=1e-15)
    np.testing.assert_array_equal(stats.dice, pairwise_dice(stack, num_classes=3))
    assert str(stats.summary) == str(RaterSet(labels=stack).summary())
    with pytest.raises(ValueError, match="overlaps must have shape"):
        stats.raters.summary(overlaps=np.zeros((2, 4, 4)))
