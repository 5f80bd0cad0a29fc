"""SSN training and prediction: the background mask (covariance as the reference code, or likelihood),
typed results and independent low-rank noise per plane for a 2-D SSN on a volume."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from napari_seg_uncertainty.core.losses import mask_covariance, sample_low_rank_logits, ssn_loss
from napari_seg_uncertainty.core.models import SegmentationNet
from napari_seg_uncertainty.core.ssn import LowRankLogits
from napari_seg_uncertainty.core.training import (
    BACKGROUND_MASKS,
    Prediction,
    TrainConfig,
    predict,
    predict_ssn_distribution,
    train,
)
from napari_seg_uncertainty.core.training.loop import member_loss

TINY = dict(channels=(4, 8), strides=(2,), num_res_units=0, device="cpu", batch_size=1, val_fraction=0.0)
EPS = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def ssn_config(**overrides):
    settings = dict(head="ssn", loss="ssn", target="random_rater", ssn_rank=3, ssn_samples=4, epochs=1,
                    steps_per_epoch=1, ssn_eps=EPS, **TINY)  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


def masked_case(shape=(16, 16)):
    """An image that is 0 outside a central square (the background) and its two raters."""
    image = np.zeros(shape, np.float32)
    inside = (slice(None),) * (len(shape) - 2) + (slice(4, 12), slice(4, 12))
    image[inside] = 1.0 + np.random.default_rng(0).random(image[inside].shape, dtype=np.float32)
    raters = np.zeros((2, *shape), dtype=int)
    raters[(slice(None), *inside)] = 1
    return image, raters


# ------------------------------------------------------------------------------------- config
def test_background_mask_setting():
    assert TrainConfig().background_mask == "none"
    assert BACKGROUND_MASKS == ("none", "covariance", "likelihood")
    assert TrainConfig(background_mask="likelihood").background_mask == "likelihood"
    with pytest.raises(ValueError, match="needs head='ssn'"):
        TrainConfig(background_mask="covariance")
    with pytest.raises(ValueError, match="background_mask must be one of"):
        ssn_config(background_mask=True)


# ------------------------------------------------------------------------------------- mask_covariance
def test_mask_covariance_zeroes_factor_and_leaves_eps_outside():
    gen = torch.Generator().manual_seed(0)
    factor = torch.randn(2, 3, 2, 6, 6, generator=gen)
    diag = torch.rand(2, 2, 6, 6, generator=gen) + 0.5
    mask = torch.zeros(2, 6, 6, dtype=torch.bool)
    mask[:, 1:4, 2:5] = True
    masked_factor, masked_diag = mask_covariance(factor, diag, mask, eps=EPS)
    outside = ~mask
    assert bool((masked_factor.permute(0, 3, 4, 1, 2)[outside] == 0).all())
    assert bool((masked_diag.permute(0, 2, 3, 1)[outside] == EPS).all())
    torch.testing.assert_close(masked_factor.permute(0, 3, 4, 1, 2)[mask], factor.permute(0, 3, 4, 1, 2)[mask])
    torch.testing.assert_close(masked_diag.permute(0, 2, 3, 1)[mask], diag.permute(0, 2, 3, 1)[mask])
    # samples carry no noise outside (up to sqrt(eps)) and the full noise inside
    mean = torch.zeros(2, 2, 6, 6)
    noise = sample_low_rank_logits(mean, masked_factor, masked_diag, num_samples=400, generator=gen)
    spread = noise.std(dim=0)  # (B, C, *S)
    assert float(spread.permute(0, 2, 3, 1)[outside].max()) < 10 * EPS**0.5
    assert float(spread.permute(0, 2, 3, 1)[mask].min()) > 0.5


def test_mask_covariance_refuses_a_mask_of_another_shape():
    with pytest.raises(ValueError, match="mask must have shape"):
        mask_covariance(torch.ones(1, 2, 3, 4), torch.ones(1, 3, 4), torch.ones(1, 5, dtype=torch.bool), eps=EPS)


# ------------------------------------------------------------------------------------- the loss
def _member_losses(mode: str, target: torch.Tensor, mask: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    config = ssn_config(background_mask=mode)
    return member_loss(_ssn_net(), raw, target, mask, config, torch.Generator().manual_seed(5))


@functools.cache
def _ssn_net() -> SegmentationNet:
    return SegmentationNet(spatial_dims=2, in_channels=1, num_classes=2, head="ssn", channels=(4, 8), strides=(2,),
                           num_res_units=0, ssn_rank=3, ssn_eps=EPS)  # fmt: skip


def test_covariance_mode_keeps_every_voxel_in_the_likelihood():
    gen = torch.Generator().manual_seed(1)
    raw = torch.randn(1, 2 * 5, 8, 8, generator=gen, requires_grad=True)
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, 2:6, 2:6] = True
    target = torch.nn.functional.one_hot(torch.randint(2, (1, 8, 8), generator=gen), 2).permute(0, 3, 1, 2).float()
    flipped = target.clone()
    flipped[:, :, 0, 0] = 1 - flipped[:, :, 0, 0]  # a background voxel's label changes
    covariance = _member_losses("covariance", target, mask, raw)
    assert float(_member_losses("covariance", flipped, mask, raw).detach()) != pytest.approx(float(covariance.detach()))
    likelihood = _member_losses("likelihood", target, mask, raw).detach()
    assert float(_member_losses("likelihood", flipped, mask, raw).detach()) == pytest.approx(float(likelihood))
    # the covariance loss is the unmasked SSN loss of the masked covariance, per voxel of the whole patch
    net_parts = raw.detach()
    mean, diag = net_parts[:, :2], torch.exp(net_parts[:, 2:4]) + EPS
    factor = net_parts[:, 4:].reshape(1, 3, 2, 8, 8)
    masked_factor, masked_diag = mask_covariance(factor, diag, mask, eps=EPS)
    expected = ssn_loss(mean, masked_factor, masked_diag, target, num_samples=4,
                        generator=torch.Generator().manual_seed(5))  # fmt: skip
    assert float(covariance.detach()) == pytest.approx(float(expected), rel=1e-5)
    # no gradient reaches the covariance factor outside the mask
    covariance.backward()
    factor_grad = raw.grad[:, 4:].reshape(1, 3, 2, 8, 8).permute(0, 3, 4, 1, 2)
    assert bool((factor_grad[~mask] == 0).all()) and bool((factor_grad[mask] != 0).any())


@pytest.mark.parametrize("mode", ["covariance", "likelihood"])
def test_ssn_trains_with_either_background_mask(mode, tmp_path):
    image, raters = masked_case()
    records = list(train(ssn_config(background_mask=mode, steps_per_epoch=2), (image, raters)))
    assert all(np.isfinite(r.loss) for r in records if r.kind == "step")


# ------------------------------------------------------------------------------------- typed results
def test_covariance_model_predicts_no_covariance_in_the_background(tmp_path):
    image, raters = masked_case()
    *_, last = train(ssn_config(background_mask="covariance", output_dir=str(tmp_path)), (image, raters))
    dist = predict_ssn_distribution(last.checkpoint, image)
    assert isinstance(dist, LowRankLogits) and not dist.independent_planes
    outside = image == 0
    assert np.all(dist.cov_factor[:, :, outside] == 0)
    np.testing.assert_allclose(dist.cov_diag[:, outside], EPS, rtol=1e-5)
    assert np.all(dist.cov_diag[:, ~outside] > EPS)
    prediction = predict(last.checkpoint, image, num_samples=4)
    assert isinstance(prediction, Prediction)
    np.testing.assert_allclose(prediction.probabilities.sum(0), 1.0, rtol=1e-5)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_2d_ssn_on_a_volume_draws_independent_noise_per_plane(tmp_path):
    image, raters = masked_case((4, 16, 16))
    image[:] = image[0]  # every plane the same image: a shared factor would give identical noise
    *_, last = train(ssn_config(spatial_dims=2, output_dir=str(tmp_path)), (image, raters))
    dist = predict_ssn_distribution(last.checkpoint, image)
    assert dist.independent_planes and dist.cov_factor.shape == (3, 2, 4, 16, 16)
    low_rank_only = dict(mean=dist.mean, cov_factor=dist.cov_factor, cov_diag=np.full_like(dist.cov_diag, 1e-10))
    factor = dist.cov_factor[:, 0, 0]  # (K, Y, X): class 0, plane 0
    a = (8, 8)
    cosine = np.einsum("k,kyx->yx", factor[:, a[0], a[1]], factor)
    cosine /= np.linalg.norm(factor[:, a[0], a[1]]) * np.linalg.norm(factor, axis=0)
    cosine[a] = 0.0
    b = np.unravel_index(np.argmax(np.abs(cosine)), cosine.shape)
    assert abs(cosine[b]) > 0.5

    def correlations(independent: bool) -> tuple[float, float]:
        samples = LowRankLogits(**low_rank_only, independent_planes=independent).sample(1500, seed=3)
        noise = samples[:, 0] - dist.mean[0]  # (n, Z, Y, X), class 0
        return _correlation(noise[:, 0, a[0], a[1]], noise[:, 0, b[0], b[1]]), _correlation(
            noise[:, 0, a[0], a[1]], noise[:, 1, a[0], a[1]]
        )

    within, across = correlations(True)
    assert within == pytest.approx(cosine[b], abs=0.1)  # the low-rank part correlates within a plane
    assert abs(across) < 0.1  # and not across planes
    _, shared = correlations(False)  # what the untyped dict gave before: one noise for all planes
    assert shared > 0.99
