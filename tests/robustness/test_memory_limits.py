"""Sizes that cannot fit in memory are refused before anything is allocated.

Two kinds of checks: absurd parameters (``num_classes=10**12``, ``n=10**12`` samples, a 10**6 x 10**6
phantom) that no machine can hold, and realistic sizes refused after the available memory is patched to a
small value. ``tracemalloc`` (which sees numpy's and Python's allocations) shows that the refusal comes
before the allocation. Inputs that would be large are made with ``np.broadcast_to`` (no memory).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from napari_seg_uncertainty.core import _memory, phantom, raters, ssn
from napari_seg_uncertainty.core import labels as soft_labels
from napari_seg_uncertainty.core._memory import OutputTooLargeError, check_allocation
from napari_seg_uncertainty.core.ssn import metrics as ssn_metrics

HUGE = 10**12
LABELS = np.zeros((16, 16), dtype=np.uint8)
LABELS[4:12, 4:12] = 1
RATERS = np.stack([LABELS, LABELS.T])
DIST = ssn.synthetic_distribution((16, 16), num_classes=3, rank=2)

ABSURD = [
    pytest.param(lambda: soft_labels.one_hot(LABELS, num_classes=HUGE), "num_classes", id="one_hot"),
    pytest.param(
        lambda: soft_labels.label_smoothing(LABELS, num_classes=HUGE, alpha=0.1), "num_classes", id="label_smoothing"
    ),
    pytest.param(lambda: soft_labels.svls(LABELS, num_classes=HUGE), "num_classes", id="svls"),
    pytest.param(lambda: soft_labels.msvls(RATERS, num_classes=HUGE), "num_classes", id="msvls"),
    pytest.param(lambda: soft_labels.rater_mean(RATERS, num_classes=HUGE), "num_classes", id="rater_mean"),
    pytest.param(
        lambda: soft_labels.majority_vote(RATERS, num_classes=HUGE), "num_classes", id="majority_vote"
    ),
    pytest.param(lambda: soft_labels.staple(RATERS, num_classes=HUGE), "num_classes", id="staple"),
    pytest.param(
        lambda: soft_labels.compute_soft_labels(RATERS, num_classes=HUGE, method="svls"),
        "num_classes",
        id="compute_soft_labels",
    ),
    pytest.param(
        lambda: soft_labels.RandomRaterSampler(RATERS, num_classes=HUGE).sample(), "num_classes", id="sampler"
    ),
    pytest.param(lambda: raters.agreement_map(RATERS, num_classes=HUGE), "num_classes", id="agreement_map"),
    pytest.param(lambda: raters.rater_entropy(RATERS, num_classes=HUGE), "num_classes", id="rater_entropy"),
    pytest.param(lambda: raters.pairwise_dice(RATERS, num_classes=HUGE), "num_classes", id="pairwise_dice"),
    pytest.param(
        lambda: ssn_metrics.pairwise_iou_distance(RATERS, num_classes=HUGE),
        "num_classes",
        id="pairwise_iou_distance",
    ),
    pytest.param(
        lambda: ssn_metrics.sample_diversity(RATERS, num_classes=HUGE), "num_classes", id="sample_diversity"
    ),
    pytest.param(lambda: DIST.sample(HUGE), "n=", id="ssn-sample"),
    pytest.param(lambda: DIST.sample_labels(HUGE), "n=", id="ssn-sample_labels"),
    pytest.param(lambda: ssn.synthetic_distribution((10**6, 10**6), num_classes=3), "shape", id="synthetic-shape"),
    pytest.param(lambda: ssn.synthetic_distribution((16, 16), num_classes=3, rank=HUGE), "rank", id="synthetic-rank"),
    pytest.param(
        lambda: ssn.synthetic_distribution((16, 16), num_classes=10**9), "num_classes", id="synthetic-classes"
    ),
    pytest.param(lambda: phantom.make_phantom_raters(2, shape=(10**6, 10**6)), "shape", id="phantom"),
    pytest.param(
        lambda: phantom.simulate_raters([LABELS > 0], num_raters=HUGE), "num_raters", id="simulate_raters"
    ),
]


@pytest.mark.parametrize(("call", "name"), ABSURD)
def test_absurd_sizes_are_refused_before_allocating(call, name):
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError) as excinfo:
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(excinfo.value, ValueError), "callers catching ValueError must see the refusal too"
    message = str(excinfo.value)
    assert name in message and "memory available" in message, message
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB were allocated before the refusal"


@pytest.fixture
def little_memory(monkeypatch):
    """Pretend only 8 MiB of memory are available."""
    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: 8 * 2**20)


BIG_LABELS = np.broadcast_to(np.uint8(1), (2048, 2048))  # 4 Mi voxels, no memory of its own
BIG_RATERS = np.broadcast_to(np.uint8(1), (2, 2048, 2048))


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: soft_labels.one_hot(BIG_LABELS, num_classes=2), id="one_hot"),
        pytest.param(lambda: soft_labels.svls(BIG_LABELS, num_classes=2), id="svls"),
        pytest.param(lambda: soft_labels.rater_mean(BIG_RATERS, num_classes=2), id="rater_mean"),
        pytest.param(lambda: soft_labels.staple(BIG_RATERS), id="staple"),
        pytest.param(lambda: ssn.synthetic_distribution((512, 512), num_classes=3, rank=4), id="synthetic"),
        pytest.param(lambda: DIST.sample(20_000), id="ssn-sample"),
        pytest.param(lambda: phantom.make_phantom_raters(2, shape=(1024, 1024)), id="phantom"),
        pytest.param(lambda: ssn.SampleLabelStack(DIST, range(100_000))[:], id="sample-stack-all"),
    ],
)
def test_realistic_sizes_are_refused_when_memory_is_short(little_memory, call):
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError, match="memory available"):
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


def test_dense_covariance_is_refused_when_memory_is_short(monkeypatch):
    distribution = ssn.synthetic_distribution((128, 128), num_classes=3, rank=4)
    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: 2**20)
    with pytest.raises(MemoryError, match="to_torch_distribution is meant for small maps"):
        distribution.to_torch_distribution()


def test_small_work_still_runs_when_memory_is_short(little_memory):
    assert soft_labels.svls(LABELS, num_classes=2).shape == (2, 16, 16)
    assert DIST.sample(3).shape == (3, 3, 16, 16)
    assert phantom.make_phantom_raters(2, shape=(32, 32))[1].num_raters == 4


def test_check_allocation_message_and_types(monkeypatch):
    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: 2**30)
    check_allocation(2**29, what="half the memory", cause="n=1")  # fits under MEMORY_FRACTION
    with pytest.raises(OutputTooLargeError) as excinfo:
        check_allocation(2**31, what="the thing", cause="n=2", advice="ask for less")
    text = str(excinfo.value)
    assert text.startswith("n=2: the thing would need 2.0 GiB, more than the 1.0 GiB of memory available")
    assert text.endswith("ask for less.")
    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: None)  # platform says nothing: no refusal
    check_allocation(2**80, what="anything", cause="n=3")


def test_available_memory_respects_a_container_limit(tmp_path, monkeypatch):
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text("1073741824\n")
    usage.write_text("268435456\n")
    monkeypatch.setattr(_memory, "_CGROUP_FILES", ((str(limit), str(usage)),))
    assert _memory.available_memory_bytes() <= 2**30 - 2**28
    limit.write_text("max\n")  # no limit: the machine's free memory
    free = _memory.available_memory_bytes()
    assert free is None or free > 0
    assert _memory.array_bytes((HUGE, HUGE), np.float64) == 8 * HUGE * HUGE  # exact, no overflow
