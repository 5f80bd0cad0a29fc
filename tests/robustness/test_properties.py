"""Property-based bad input (hypothesis): any value of a parameter, any label or probability array.

Each test compares the function's verdict with an independent rule written here: a value the rule calls
valid must be accepted (and give a correct result), any other must raise ValueError/TypeError whose message
names the argument. Examples are capped (``max_examples``) to keep the suite fast on two cores.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from numbers import Integral, Real

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from napari_seg_uncertainty.core import calibration as cal
from napari_seg_uncertainty.core import labels as sl
from napari_seg_uncertainty.core import ssn
from napari_seg_uncertainty.core import uncertainty as unc

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LABELS = np.zeros((5, 6), dtype=np.int64)
LABELS[1:4, 2:5] = 1
LABELS[2, 3] = 2
PROBS = np.stack([(LABELS == k) * 0.7 + 0.1 for k in range(3)]).astype(np.float32)
PROBS /= PROBS.sum(axis=0)
LOGITS = np.log(PROBS)
DIST = ssn.synthetic_distribution((6, 6), num_classes=3, rank=2)

#: Anything a user (or a widget bug) might pass as a scalar parameter.
ANY_SCALAR = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-2.0, max_value=2.0),
    st.integers(min_value=-10, max_value=10),
    st.sampled_from([0, 1, 10**12, -(10**12), 0.0, 1.0, -0.0, 1e-300, 5e-324, 1e300, True, False]),
    st.none(),
    st.text(max_size=4),
    st.lists(st.floats(0, 1), max_size=2),
    st.sampled_from([np.float32(0.5), np.int64(3), np.float64("nan"), np.array(0.5), np.bool_(True)]),
)


def is_real(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, (bool, np.bool_))


def is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))


def check_verdict(call, valid: bool, name: str):
    """Run ``call``; a valid value must work, an invalid one must raise naming ``name``."""
    if valid:
        return call()
    with pytest.raises((ValueError, TypeError)) as excinfo:
        call()
    assert name in str(excinfo.value), str(excinfo.value)
    return None


@FAST
@given(alpha=ANY_SCALAR)
def test_label_smoothing_alpha(alpha):
    valid = is_real(alpha) and math.isfinite(float(alpha)) and 0.0 <= float(alpha) <= 1.0
    out = check_verdict(lambda: sl.label_smoothing(LABELS, num_classes=3, alpha=alpha), valid, "alpha")
    if out is not None:
        expected = np.eye(3)[LABELS].transpose(2, 0, 1) * (1 - float(alpha)) + float(alpha) / 3
        np.testing.assert_allclose(out, expected, atol=1e-6)


def decimal_kernel(sigma: float, spacing: tuple[float, float]) -> np.ndarray:
    """The SVLS kernel with exact decimal arithmetic (no overflow or underflow at any finite σ)."""
    with localcontext() as context:
        context.prec = 60
        context.Emax, context.Emin = 10**8, -(10**8)
        distance2 = {
            (dy, dx): (Decimal(dy) * Decimal(spacing[0])) ** 2 + (Decimal(dx) * Decimal(spacing[1])) ** 2
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if dy or dx
        }
        nearest = min(distance2.values())  # Gaussian weights relative to the nearest neighbour's
        weights = {key: (-(d2 - nearest) / (2 * Decimal(sigma) ** 2)).exp() for key, d2 in distance2.items()}
        total = sum(weights.values())
        kernel = np.full((3, 3), 0.5)
        for (dy, dx), w in weights.items():
            kernel[dy + 1, dx + 1] = float(w / total / 2)
    return kernel


@FAST
@given(
    sigma=ANY_SCALAR,
    spacing=st.one_of(st.none(), st.tuples(st.floats(1e-300, 1e300), st.floats(1e-300, 1e300))),
)
def test_svls_sigma_and_spacing_any_magnitude(sigma, spacing):
    valid = is_real(sigma) and math.isfinite(float(sigma)) and float(sigma) > 0
    kernel = check_verdict(lambda: sl.svls_kernel(2, sigma=sigma, spacing=spacing), valid, "sigma")
    if kernel is not None:
        assert np.all(np.isfinite(kernel)) and kernel[1, 1] == 0.5
        np.testing.assert_allclose(kernel.sum(), 1.0, atol=1e-12)
        np.testing.assert_allclose(kernel, decimal_kernel(float(sigma), spacing or (1.0, 1.0)), atol=1e-9)
        soft = sl.svls(LABELS, num_classes=3, sigma=sigma, spacing=spacing)
        np.testing.assert_allclose(soft.sum(axis=0), 1.0, atol=1e-5)


@FAST
@given(temperature=ANY_SCALAR)
def test_temperature(temperature):
    valid = is_real(temperature) and math.isfinite(float(temperature)) and float(temperature) > 0
    probs = check_verdict(
        lambda: cal.apply_temperature(LOGITS, temperature=temperature), valid, "temperature"
    )
    if probs is not None:
        assert np.all(np.isfinite(probs))
        np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    ssn_valid = is_real(temperature) and math.isfinite(float(temperature)) and float(temperature) >= 0
    check_verdict(lambda: DIST.with_temperature(temperature), ssn_valid, "temperature")


@FAST
@given(weight=ANY_SCALAR, class_index=ANY_SCALAR)
def test_ssn_class_scale(weight, class_index):
    index_ok = is_int(class_index) and 0 <= class_index < 3
    weight_ok = is_real(weight) and math.isfinite(float(weight))
    name = "class_index" if not index_ok else "weight"
    scaled = check_verdict(lambda: DIST.scale_class(class_index, weight), index_ok and weight_ok, name)
    if scaled is not None:
        assert scaled.class_scales[class_index] == pytest.approx(float(weight))


@FAST
@given(num_bins=ANY_SCALAR, threshold=ANY_SCALAR)
def test_calibration_bins_and_threshold(num_bins, threshold):
    bins_ok = is_int(num_bins) and 1 <= num_bins <= 10_000
    check_verdict(lambda: cal.expected_calibration_error(PROBS, LABELS, num_bins=num_bins), bins_ok, "num_bins")
    threshold_ok = is_real(threshold) and 0.0 <= float(threshold) < 1.0
    tace = check_verdict(
        lambda: cal.thresholded_adaptive_ce(PROBS, LABELS, threshold=threshold), threshold_ok, "threshold"
    )
    if tace is not None:
        assert math.isnan(tace) or 0.0 <= tace <= 1.0


@FAST
@given(eps=ANY_SCALAR, margin=ANY_SCALAR, slice_margin=ANY_SCALAR)
def test_nll_eps_and_box_margins(eps, margin, slice_margin):
    eps_ok = is_real(eps) and math.isfinite(float(eps)) and 0.0 < float(eps) < 1.0
    nll = check_verdict(lambda: cal.negative_log_likelihood(PROBS, LABELS, eps=eps), eps_ok, "eps")
    if nll is not None:
        assert nll >= 0.0
    margin_ok = is_real(margin) and math.isfinite(float(margin)) and float(margin) >= 0
    slice_ok = is_int(slice_margin) and slice_margin >= 0
    name = "in_plane_margin" if not margin_ok else "slice_margin"
    box = check_verdict(
        lambda: cal.foreground_box_mask(
            LABELS[None].repeat(3, 0), in_plane_margin=margin, slice_margin=slice_margin
        ),
        margin_ok and slice_ok,
        name,
    )
    if box is not None:
        assert box[1][LABELS > 0].all()


@FAST
@given(rank=ANY_SCALAR, n=ANY_SCALAR)
def test_ssn_rank_and_sample_count(rank, n):
    rank_ok = is_int(rank) and rank >= 1
    if rank_ok and rank > 64:
        rank_ok = False  # absurd ranks are refused by the memory check, which names 'rank' as well
        assume(rank >= 10**9)
    dist = check_verdict(lambda: ssn.synthetic_distribution((6, 6), num_classes=2, rank=rank), rank_ok, "rank")
    if dist is not None:
        assert dist.rank == rank
    n_ok = is_int(n) and n >= 1
    if n_ok and n > 1000:
        n_ok = False
        assume(n >= 10**9)
    samples = check_verdict(lambda: DIST.sample_labels(n, seed=1), n_ok, "n")
    if samples is not None:
        assert samples.shape == (n, 6, 6) and samples.max() < 3


def label_verdict(arr: np.ndarray, num_classes: int) -> bool:
    """Whether ``arr`` is a valid label map for ``num_classes`` classes (independent of the package)."""
    if arr.ndim not in (2, 3) or arr.size == 0:
        return False
    if arr.dtype == bool:
        values = arr.astype(np.int64)
    elif np.issubdtype(arr.dtype, np.integer):
        values = arr.astype(object) if arr.dtype == np.uint64 else arr
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or not (arr == np.round(arr)).all():
            return False
        values = arr
    else:
        return False
    return bool(values.min() >= 0 and values.max() < num_classes)


LABEL_DTYPES = st.sampled_from(
    [
        np.int8,
        np.uint8,
        np.int16,
        np.int32,
        np.int64,
        np.uint64,
        np.float32,
        np.float64,
        np.bool_,
        np.complex64,
        np.float16,
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    labels=hnp.arrays(
        dtype=LABEL_DTYPES, shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
    ),
    num_classes=st.integers(1, 4),
)
def test_any_label_array(labels, num_classes):
    valid = label_verdict(labels, num_classes)
    out = check_verdict(lambda: sl.one_hot(labels, num_classes=num_classes), valid, "labels")
    if out is not None:
        expected = np.eye(num_classes, dtype=np.float32)[labels.astype(np.int64)]
        np.testing.assert_array_equal(out, np.moveaxis(expected, -1, 0))
        soft = sl.svls(labels, num_classes=num_classes)
        np.testing.assert_allclose(soft.sum(axis=0), 1.0, atol=1e-5)


@settings(max_examples=80, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=4),
    num_classes=st.integers(2, 3),
    data=st.data(),
)
def test_raters_of_any_shapes(shapes, num_classes, data):
    maps = [data.draw(hnp.arrays(np.int64, s, elements=st.integers(0, num_classes))) for s in shapes]
    same_grid = len(set(shapes)) == 1
    in_range = all(m.max() < num_classes for m in maps)
    out = check_verdict(lambda: sl.msvls(maps, num_classes=num_classes), same_grid and in_range, "raters")
    if out is not None:
        stack = np.stack(maps)
        expected = np.mean([sl.svls(m, num_classes=num_classes) for m in stack], axis=0)
        np.testing.assert_allclose(out, expected, atol=1e-5)
    if not same_grid:
        with pytest.raises(ValueError, match="shape"):
            sl.rater_mean(maps, num_classes=num_classes + 1)


@st.composite
def corrupted_probabilities(draw) -> tuple[np.ndarray, bool]:
    """Valid random probabilities, or the same with one defect; returns (array, valid)."""
    num_classes = draw(st.integers(1, 4))
    shape = draw(st.tuples(st.integers(1, 5), st.integers(1, 5)))
    raw = draw(hnp.arrays(np.float64, (num_classes, *shape), elements=st.floats(0.01, 1.0)))
    probs = (raw / raw.sum(axis=0)).astype(np.float32)
    defect = draw(
        st.sampled_from(["none", "nan", "inf", "negative", "scale", "integer", "ndim", "empty", "complex"])
    )
    if defect == "nan":
        probs.flat[draw(st.integers(0, probs.size - 1))] = np.nan
    elif defect == "inf":
        probs.flat[draw(st.integers(0, probs.size - 1))] = np.inf
    elif defect == "negative":
        probs = np.concatenate([probs, np.zeros_like(probs[:1])])
        probs[-1, 0, 0], probs[0, 0, 0] = -0.5, probs[0, 0, 0] + 0.5
    elif defect == "scale":
        probs = probs * draw(st.sampled_from([0.5, 1.5, 2.0, 0.0]))
    elif defect == "integer":
        probs = (probs > 0.5).astype(np.int64)
    elif defect == "ndim":
        probs = probs[0] if draw(st.booleans()) else probs[None, None]
    elif defect == "empty":
        probs = probs[:, :0]
    elif defect == "complex":
        probs = probs.astype(np.complex64)
    return probs, defect == "none"


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_probability_array(data):
    probs, valid = data.draw(corrupted_probabilities())
    entropy = check_verdict(lambda: unc.entropy(probs), valid, "probs")
    if entropy is None:
        return
    assert np.all((entropy >= 0) & (entropy <= 1 + 1e-6))
    labels = probs.argmax(axis=0)
    ece = cal.expected_calibration_error(probs, labels)
    assert 0.0 <= ece <= 1.0
    # accuracy is 1 everywhere (target = prediction), so ECE = 1 - mean confidence
    assert ece == pytest.approx(1.0 - float(probs.max(axis=0).mean()), abs=1e-5)
    members = np.stack([probs, probs])
    np.testing.assert_allclose(unc.mutual_information(members), 0.0, atol=1e-5)


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    from scipy.special import log_softmax

    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # T near 0: -inf logits, inf NLL
        scaled = (logits - logits.max(axis=0)) / temperature
        log_p = log_softmax(np.nan_to_num(scaled, neginf=-1e308), axis=0)
        return float(-np.take_along_axis(log_p, labels[None], axis=0).mean())


@FAST
@given(low=ANY_SCALAR, high=ANY_SCALAR)
def test_temperature_fit_bounds(low, high):
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=3.0, size=(3, 8, 8))
    labels = rng.integers(0, 3, (8, 8))
    valid = is_real(low) and is_real(high) and 0 < float(low) < float(high) and math.isfinite(float(high))
    fitted = check_verdict(lambda: cal.fit_temperature(logits, labels, bounds=(low, high)), valid, "bounds")
    if fitted is None:
        return
    assert float(low) <= fitted <= float(high) and math.isfinite(fitted)
    best_bound = min(_nll(logits, labels, float(low)), _nll(logits, labels, float(high)))
    assert _nll(logits, labels, fitted) <= best_bound + 1e-9
