"""Monte-Carlo dropout passes and ensemble members of a 3-D net run one after another when that is smaller.

Reference: the side-by-side path (every stream's row buffers alive at once, ``_in_sequence`` forced off),
which tests/core/test_predict_stream.py checks against MONAI over the whole image.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_predict_stream import IMAGE, VOLUME, fit

from napari_seg_uncertainty.core.training import predict
from napari_seg_uncertainty.core.training import prediction_estimate as E
from napari_seg_uncertainty.core.training import streamed as S
from napari_seg_uncertainty.core.training.inference import predict_steps

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dropout_net():
    return fit(3, VOLUME, patch_size=(16, 16, 16), dropout=0.3)


@pytest.fixture(scope="module")
def ensemble_net():
    return fit(3, VOLUME, patch_size=(16, 16, 16), ensemble_size=2, dropout=0.3)


def side_by_side(monkeypatch, trained, **options):
    with monkeypatch.context() as patch:
        patch.setattr(S, "_in_sequence", lambda *args: False)
        return predict(trained, IMAGE, **options)


@pytest.mark.parametrize("model", ["dropout_net", "ensemble_net"])
@pytest.mark.parametrize("options", [{}, {"dtype": "float16", "keep_members": True}, {"out": "npy"}])
def test_in_sequence_equals_side_by_side_bit_for_bit(model, options, request, monkeypatch, tmp_path):
    trained = request.getfixturevalue(model)
    options = {"num_samples": 4, "seed": 3, **options}
    if options.get("out") == "npy":
        options["out"] = str(tmp_path / "p.npy")
    calls = []
    original = S._run_in_sequence
    monkeypatch.setattr(S, "_run_in_sequence", lambda *a: (calls.append(1), (yield from original(*a)))[1])
    result = predict(trained, IMAGE, **options)
    assert calls  # the sequence path ran
    if "out" in options:
        options["out"] = str(tmp_path / "q.npy")
    reference = side_by_side(monkeypatch, trained, **options)
    np.testing.assert_array_equal(np.asarray(result.probabilities), np.asarray(reference.probabilities))
    np.testing.assert_array_equal(result.entropy, reference.entropy)
    np.testing.assert_array_equal(result.labels, reference.labels)
    if options.get("keep_members"):
        np.testing.assert_array_equal(result.member_probabilities, reference.member_probabilities)


def test_progress_counts_every_pass(dropout_net):
    steps = predict_steps(dropout_net, IMAGE, num_samples=3)
    records = []
    try:
        while True:
            records.append(next(steps))
    except StopIteration:
        pass
    assert records[-1].planes == 3 * VOLUME[0] and records[-1].planes_done == records[-1].planes
    assert [r.planes_done for r in records] == sorted(r.planes_done for r in records)


def test_working_memory_no_longer_grows_with_the_passes(dropout_net):
    layout = E._layout(dropout_net, (300, 64, 64))
    raw, rows, plane = 3, 16, 64 * 64  # 3 classes, the window depth
    for passes in (2, 10):
        one = E._slab_bytes(dropout_net, layout, 1, 1)
        many = E._slab_bytes(dropout_net, layout, 1, passes, in_place=True)
        assert many == one  # the float32 probabilities are the sum: one row buffer
        copied = E._slab_bytes(dropout_net, layout, 1, passes, in_place=False)
        side = passes * (raw + 1) * rows
        assert copied - one == (min(side, (raw + 1) * rows + 3 * 300) - (raw + 1) * rows) * plane * 4
    parts = E.estimate_prediction_bytes(dropout_net, (300, 64, 64), streams=10)
    assert parts.working == E._slab_bytes(dropout_net, layout, 1, 1)
