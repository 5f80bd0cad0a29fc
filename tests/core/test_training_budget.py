"""Memory estimates behind the refusals of absurd training settings, against torch's own counts."""

from __future__ import annotations

import pytest
import torch

from napari_seg_uncertainty.core.models import build_model, estimate_parameters
from napari_seg_uncertainty.core.training.budget import check_batch_memory, estimate_batch_bytes

SHAPES = [
    ((16, 32, 64), (2, 2), 1, "softmax"),
    ((4, 8), (2,), 1, "ssn"),
    ((32, 64, 128, 256), (2, 2, 2), 2, "softmax"),
    ((8, 16), (2,), 0, "softseg"),
    ((16, 32, 64, 128), (2, 2, 2), 3, "ssn"),
]


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize(("channels", "strides", "res_units", "head"), SHAPES)
def test_parameter_estimate_is_within_a_factor_of_the_real_count(spatial_dims, channels, strides, res_units, head):
    model = build_model(
        spatial_dims=spatial_dims, in_channels=2, num_classes=3, channels=channels, strides=strides,
        num_res_units=res_units, head=head,
    )  # fmt: skip
    real = sum(p.numel() for p in model.parameters())
    estimate = estimate_parameters(
        spatial_dims=spatial_dims, in_channels=2, num_classes=3, channels=channels, num_res_units=res_units,
        head=head,
    )  # fmt: skip
    assert real / 1.5 <= estimate <= real * 1.5


def _saved_activation_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward pass of one forward (an independent count)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum().backward()
    return sum(seen.values())


@pytest.mark.parametrize(
    ("patch", "channels", "strides"),
    [((64, 64), (16, 32, 64), (2, 2)), ((16, 32, 32), (8, 16, 32), (2, 2))],
)
def test_batch_estimate_is_within_a_factor_of_autograd_saved_tensors(patch, channels, strides):
    model = build_model(spatial_dims=len(patch), in_channels=1, num_classes=2, channels=channels, strides=strides)
    x = torch.zeros(1, 2, 1, *patch)  # (members, batch, channels, *patch)
    saved = _saved_activation_bytes(model, x)
    estimate = estimate_batch_bytes(
        batch_size=2, ensemble_size=1, patch_size=patch, in_channels=1, num_classes=2, channels=channels,
        strides=strides, num_res_units=1,
    )  # fmt: skip
    assert saved / 3 <= estimate <= saved * 3


def test_absurd_batch_is_refused_naming_batch_size():
    with pytest.raises(MemoryError, match="batch_size=1000000000"):
        check_batch_memory(
            batch_size=10**9, ensemble_size=1, patch_size=(64, 64), in_channels=1, num_classes=2,
            channels=(16, 32, 64), strides=(2, 2), num_res_units=1,
        )  # fmt: skip


def test_ordinary_batch_passes():
    check_batch_memory(
        batch_size=4, ensemble_size=2, patch_size=(32, 32, 32), in_channels=1, num_classes=3,
        channels=(16, 32, 64), strides=(2, 2), num_res_units=1,
    )  # fmt: skip
