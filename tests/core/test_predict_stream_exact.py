"""How exactly the streamed predict equals MONAI's sliding_window_inference over the whole image (review #19).

The wording in streamed.py and predict's docstring: a 3-D net's blended network output is bit for bit MONAI's
with ``sw_batch_size=1``; with ``sw_batch_size > 1`` a window row starts a new batch where MONAI's global
batching would not, and the results differ within 1e-6 (float32 rounding of differently composed batches);
the probabilities (a softmax on blocks of planes) agree within 1e-6 in either case; a 2-D net on a volume is
bit for bit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_predict_stream import VOLUME, fit, full_probabilities, make_case, net2d, net3d  # noqa: F401

from napari_seg_uncertainty.core.training import normalization as N
from napari_seg_uncertainty.core.training import predict
from napari_seg_uncertainty.core.training import streamed as S
from napari_seg_uncertainty.core.training.inference import _prediction_image, _sliding_raw, normalize_image

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = [VOLUME, (41, 22, 18), (37, 19, 23)]


def with_batch(trained, size):
    return dataclasses.replace(trained, config=dataclasses.replace(trained.config, sw_batch_size=size))


def raw_outputs(trained, image):
    """The blended raw output of the row stream, and MONAI's over the whole normalized image."""
    arr = _prediction_image(trained, image)
    normed = normalize_image(arr, trained.info["normalization"])
    net = trained.model.members[0]
    whole = _sliding_raw(net, torch.from_numpy(normed[None]), roi_size=trained.info["patch_size"],
                         overlap=trained.config.sw_overlap, sw_batch_size=trained.config.sw_batch_size)[0]
    run = S._Run(trained, arr, N.SlabNormalizer(arr, trained.info["normalization"]),
                 S._layout(trained, arr.shape[1:]), 0, 0)
    blocks = [raw[0] for _, _, raw in S._row_stream(run, net, None)]
    return torch.cat(blocks, dim=1).numpy(), whole.float().numpy()


@pytest.mark.parametrize("shape", SHAPES)
def test_3d_blended_output_is_monai_bit_for_bit_with_sw_batch_size_1(net3d, shape):  # noqa: F811
    trained = with_batch(net3d, 1)
    image = make_case(shape, seed=4)[0]
    streamed, whole = raw_outputs(trained, image)
    np.testing.assert_array_equal(streamed, whole)
    np.testing.assert_allclose(predict(trained, image).probabilities, full_probabilities(trained, image),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_3d_with_sw_batch_size_3_within_1e6(net3d, shape):  # noqa: F811
    trained = with_batch(net3d, 3)
    image = make_case(shape, seed=4)[0]
    streamed, whole = raw_outputs(trained, image)
    np.testing.assert_allclose(streamed, whole, atol=1e-6, rtol=0)
    np.testing.assert_allclose(predict(trained, image).probabilities, full_probabilities(trained, image),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("batch", [1, 3])
def test_2d_net_on_a_volume_is_bit_for_bit(net2d, batch):  # noqa: F811
    trained = with_batch(net2d, batch)
    for shape in SHAPES:
        image = make_case(shape, seed=4)[0]
        for slab in (None, 5):
            np.testing.assert_array_equal(predict(trained, image, slab_planes=slab).probabilities,
                                          full_probabilities(trained, image))
