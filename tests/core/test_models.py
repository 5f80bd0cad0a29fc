"""U-Net backbones, heads (softmax, SoftSeg, SSN), ensembles and MC dropout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from napari_seg_uncertainty.core.models import (
    SegmentationEnsemble,
    SegmentationNet,
    build_model,
    enable_mc_dropout,
    flatten_cov_factor,
    mc_dropout,
    normalized_relu,
)

TINY = dict(channels=(4, 8), strides=(2,), num_res_units=0)


def test_normalized_relu_matches_relu_over_sum():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)
    x[:, 0] = np.abs(x[:, 0]) + 0.5  # every voxel has a positive activation
    out = normalized_relu(torch.from_numpy(x), dim=1, eps=1e-12).numpy()
    rect = np.maximum(x, 0)
    expected = rect / rect.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)


def test_normalized_relu_all_negative_is_uniform_and_sums_to_one():
    out = normalized_relu(-torch.ones(1, 4, 3, 3))
    np.testing.assert_allclose(out.numpy(), 0.25, rtol=1e-6)
    x = torch.randn(3, 5, 7)
    np.testing.assert_allclose(normalized_relu(x).sum(1).numpy(), 1.0, rtol=1e-5)


def test_normalized_relu_validates():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        normalized_relu(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="eps"):
        normalized_relu(torch.zeros(1, 2), eps=0)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("head", ["softmax", "softseg", "ssn"])
def test_heads_shapes_and_probabilities(dims, head):
    torch.manual_seed(0)
    net = SegmentationNet(spatial_dims=dims, in_channels=2, num_classes=3, head=head, ssn_rank=4, **TINY)
    assert isinstance(net.backbone, UNet)  # MONAI backbone, not hand-written
    size = (8,) * dims
    raw = net(torch.randn(2, 2, *size)).detach()
    expected_channels = 3 if head != "ssn" else 3 * (2 + 4)
    assert raw.shape == (2, expected_channels, *size)
    assert net.num_outputs == expected_channels
    probs = net.probabilities(raw)
    assert probs.shape == (2, 3, *size)
    np.testing.assert_allclose(probs.sum(1).detach().numpy(), 1.0, rtol=1e-5)
    assert float(probs.min()) >= 0


def test_ssn_split_layout_and_positive_diagonal():
    torch.manual_seed(0)
    net = SegmentationNet(
        spatial_dims=2, in_channels=1, num_classes=3, head="ssn", ssn_rank=5, ssn_eps=1e-3, **TINY
    )
    raw = net(torch.randn(2, 1, 8, 8)).detach()
    parts = net.ssn_parameters(raw)
    raw_np = raw.numpy()
    np.testing.assert_array_equal(parts.mean.numpy(), raw_np[:, :3])
    np.testing.assert_allclose(parts.cov_diag.numpy(), np.exp(raw_np[:, 3:6]) + 1e-3, rtol=1e-6)
    assert parts.cov_factor.shape == (2, 5, 3, 8, 8)
    # factor rank r, class c is raw channel 6 + r*3 + c
    for r in range(5):
        for c in range(3):
            np.testing.assert_array_equal(parts.cov_factor[:, r, c].numpy(), raw_np[:, 6 + r * 3 + c])
    assert float(parts.cov_diag.min()) > 0
    np.testing.assert_allclose(
        net.probabilities(raw).numpy(), torch.softmax(raw[:, :3], 1).numpy(), rtol=1e-6
    )


def test_split_rejects_wrong_shape():
    net = SegmentationNet(spatial_dims=2, in_channels=1, num_classes=2, head="ssn", ssn_rank=2, **TINY)
    with pytest.raises(ValueError, match="raw must be"):
        net.ssn_parameters(torch.zeros(1, 3, 8, 8))


def test_flatten_cov_factor_row_order_matches_flattened_mean():
    factor = torch.arange(2 * 3 * 2 * 4 * 5, dtype=torch.float32).reshape(2, 3, 2, 4, 5)  # (B, R, C, Y, X)
    flat = flatten_cov_factor(factor)
    assert flat.shape == (2, 2 * 4 * 5, 3)
    for b in range(2):
        for r in range(3):
            for c in range(2):
                for y in range(4):
                    for x in range(5):
                        row = c * 20 + y * 5 + x  # index of mean[b].reshape(-1) for (c, y, x)
                        assert flat[b, row, r] == factor[b, r, c, y, x]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(head="sigmoid"), ValueError, "head must be one of"),
        (dict(num_classes=1), ValueError, "num_classes must be at least 2"),
        (dict(channels=(4, 8), strides=(2, 2)), ValueError, "len\\(strides\\)"),
        (dict(dropout=1.0), ValueError, "dropout must be < 1"),
        (dict(spatial_dims=4), ValueError, "spatial_dims must be 2 or 3"),
        (dict(ssn_rank=0), ValueError, "ssn_rank must be at least 1"),
        (dict(in_channels=1.5), TypeError, "in_channels must be an integer"),
    ],
)
def test_segmentation_net_validates(kwargs, error, match):
    options = dict(spatial_dims=2, in_channels=1, num_classes=2, channels=(4, 8), strides=(2,))
    options.update(kwargs)
    with pytest.raises(error, match=match):
        SegmentationNet(**options)


def test_ensemble_members_differ_and_forward_routes_batches():
    model = build_model(spatial_dims=2, in_channels=1, num_classes=2, ensemble_size=3, seed=5, **TINY)
    assert isinstance(model, SegmentationEnsemble) and model.size == 3
    w = [m.mean_head.weight.detach().clone() for m in model.members]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    x = torch.randn(3, 2, 1, 8, 8)
    out = model(x)
    assert out.shape == (3, 2, 2, 8, 8)
    for i, member in enumerate(model.members):
        np.testing.assert_allclose(out[i].detach().numpy(), member(x[i]).detach().numpy(), rtol=1e-6)
    shared = model.forward_shared(x[0])
    np.testing.assert_allclose(shared[2].detach().numpy(), model.members[2](x[0]).detach().numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="one batch per member"):
        model(torch.zeros(2, 1, 1, 8, 8))


def test_build_model_seed_is_reproducible_and_leaves_global_rng():
    a = build_model(spatial_dims=3, in_channels=1, num_classes=2, seed=3, **TINY)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    b = build_model(spatial_dims=3, in_channels=1, num_classes=2, seed=3, **TINY)
    after = torch.rand(1)
    assert torch.equal(before, after)  # the seeded build does not consume the global RNG
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    with pytest.raises(ValueError, match="ensemble_size"):
        build_model(spatial_dims=2, in_channels=1, num_classes=2, ensemble_size=0, **TINY)


def test_mc_dropout_samples_vary_and_modes_are_restored():
    torch.manual_seed(0)
    net = SegmentationNet(spatial_dims=2, in_channels=1, num_classes=2, dropout=0.5, **TINY)
    expected_layers = sum(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in net.modules())
    net.eval()
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))  # eval: deterministic
        with mc_dropout(net) as count:
            a, b = net(x), net(x)
        assert count == expected_layers > 0
        assert not torch.equal(a, b)
        assert torch.equal(net(x), net(x))  # eval restored
    assert not any(m.training for m in net.modules())
    assert enable_mc_dropout(SegmentationNet(spatial_dims=2, in_channels=1, num_classes=2, **TINY)) == 0
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        enable_mc_dropout("net")
