"""Soft-target CE, soft Dice, Adaptive Wing and the SSN Monte-Carlo loss against independent computations."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_seg_uncertainty.core.losses import (
    adaptive_wing_loss,
    dice_loss,
    sample_low_rank_logits,
    soft_cross_entropy,
    ssn_log_likelihoods,
    ssn_loss,
)

ROOT = Path(__file__).resolve().parents[2]


def _np_log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _soft_target(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    t = rng.random(shape) + 0.05
    return (t / t.sum(axis=1, keepdims=True)).astype(np.float32)


# ----------------------------------------------------------------------------------------------- CE
def test_soft_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    target = _soft_target(rng, (2, 3, 4, 5))
    expected = -(target * _np_log_softmax(logits, 1)).sum(1).mean()
    got = soft_cross_entropy(torch.from_numpy(logits), torch.from_numpy(target))
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_soft_cross_entropy_mask_and_probability_input():
    rng = np.random.default_rng(1)
    probs = _soft_target(rng, (1, 2, 3, 3))
    target = _soft_target(rng, (1, 2, 3, 3))
    mask = np.zeros((1, 3, 3), bool)
    mask[0, 1:, :2] = True
    per_voxel = -(target * np.log(probs + 1e-7)).sum(1)
    expected = per_voxel[mask].mean()
    got = soft_cross_entropy(
        torch.from_numpy(probs),
        torch.from_numpy(target),
        from_probabilities=True,
        mask=torch.from_numpy(mask),
    )
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_validates():
    with pytest.raises(ValueError, match="target must have the shape"):
        soft_cross_entropy(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, 3))
    with pytest.raises(TypeError, match="prediction must be a torch.Tensor"):
        soft_cross_entropy(np.zeros((1, 2, 3)), torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="mask must have shape"):
        soft_cross_entropy(
            torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), mask=torch.ones(1, 2, 3, dtype=bool)
        )


# --------------------------------------------------------------------------------------------- Dice
def test_dice_loss_hard_targets_matches_classic_formula():
    rng = np.random.default_rng(2)
    probs = _soft_target(rng, (2, 3, 6, 6))
    labels = rng.integers(0, 3, size=(2, 6, 6))
    target = np.eye(3, dtype=np.float32)[labels].transpose(0, 3, 1, 2)
    inter = (probs * target).sum(axis=(2, 3))
    denominator = probs.sum(axis=(2, 3)) + target.sum(axis=(2, 3))
    expected = (1 - (2 * inter + 1e-5) / (denominator + 1e-5)).mean()
    got = dice_loss(torch.from_numpy(probs), torch.from_numpy(target))
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_dice_loss_soft_targets_is_zero_for_a_perfect_soft_prediction():
    rng = np.random.default_rng(3)
    soft = torch.from_numpy(_soft_target(rng, (1, 3, 5, 5)))
    assert float(dice_loss(soft, soft)) < 1e-5
    # the soft-label overlap |p| + |t| - |p - t| (halved) from the JDT-loss paper
    other = torch.from_numpy(_soft_target(rng, (1, 3, 5, 5)))
    p, t = soft.numpy(), other.numpy()
    tp = (p.sum((2, 3)) + t.sum((2, 3)) - np.abs(p - t).sum((2, 3))) / 2
    expected = (1 - (2 * tp + 1e-5) / (p.sum((2, 3)) + t.sum((2, 3)) + 1e-5)).mean()
    assert float(dice_loss(soft, other)) == pytest.approx(expected, rel=1e-5)


def test_dice_loss_mask_ignores_masked_voxels():
    rng = np.random.default_rng(4)
    probs = torch.from_numpy(_soft_target(rng, (1, 2, 4, 4)))
    target = torch.from_numpy(_soft_target(rng, (1, 2, 4, 4)))
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[:, :2] = True
    changed = target.clone()
    changed[:, :, 2:] = torch.flip(changed[:, :, 2:], dims=[1])
    a = dice_loss(probs, target, mask=mask)
    b = dice_loss(probs, changed, mask=mask)
    assert float(a) == pytest.approx(float(b), rel=1e-6)
    assert float(dice_loss(probs, target)) != pytest.approx(float(dice_loss(probs, changed)), rel=1e-3)


# ---------------------------------------------------------------------------------------- Adaptive Wing
def _awing_scalar(y: float, yhat: float, theta=0.5, alpha=2.1, omega=14.0, eps=1.0) -> float:
    d = abs(y - yhat)
    power = alpha - y
    if d < theta:
        return omega * math.log(1 + (d / eps) ** power)
    a = omega * (1 / (1 + (theta / eps) ** power)) * power * ((theta / eps) ** (power - 1)) * (1 / eps)
    c = theta * a - omega * math.log(1 + (theta / eps) ** power)
    return a * d - c


def test_adaptive_wing_matches_scalar_formula_on_both_branches():
    rng = np.random.default_rng(5)
    pred = rng.random((2, 3, 4, 4)).astype(np.float32)
    target = rng.random((2, 3, 4, 4)).astype(np.float32)
    target[0, 0] = 1.0
    pred[0, 0] = 0.0  # d = 1 > θ: linear branch
    expected = np.mean([_awing_scalar(float(t), float(p)) for t, p in zip(target.ravel(), pred.ravel())])
    got = adaptive_wing_loss(torch.from_numpy(pred), torch.from_numpy(target))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert sum(abs(t - p) >= 0.5 for t, p in zip(target.ravel(), pred.ravel())) > 0
    assert sum(abs(t - p) < 0.5 for t, p in zip(target.ravel(), pred.ravel())) > 0


def test_adaptive_wing_is_continuous_at_theta_and_zero_at_target():
    t = torch.full((1, 1, 1, 2), 0.3)
    p = torch.tensor([[[[0.3 + 0.5 - 1e-6, 0.3 + 0.5 + 1e-6]]]])
    below = adaptive_wing_loss(p[..., :1], t[..., :1])
    above = adaptive_wing_loss(p[..., 1:], t[..., 1:])
    assert float(below) == pytest.approx(float(above), abs=1e-3)
    assert float(adaptive_wing_loss(t, t)) == 0.0


def test_adaptive_wing_mask_and_validation():
    pred = torch.zeros(1, 1, 2, 2)
    target = torch.zeros(1, 1, 2, 2)
    target[0, 0, 1, 1] = 1.0
    mask = torch.tensor([[[True, True], [True, False]]])
    assert float(adaptive_wing_loss(pred, target, mask=mask)) == 0.0
    assert float(adaptive_wing_loss(pred, target)) == pytest.approx(_awing_scalar(1.0, 0.0) / 4, rel=1e-5)
    with pytest.raises(ValueError, match="alpha must be > 1"):
        adaptive_wing_loss(pred, target, alpha=1.0)
    with pytest.raises(ValueError, match="omega"):
        adaptive_wing_loss(pred, target, omega=-1)


# ----------------------------------------------------------------------------------------------- SSN
def test_low_rank_samples_have_the_requested_covariance():
    rng = np.random.default_rng(6)
    mean = torch.from_numpy(rng.normal(size=(1, 2, 3)).astype(np.float32))
    factor = torch.from_numpy(rng.normal(size=(1, 2, 2, 3)).astype(np.float32))  # rank 2
    diag = torch.from_numpy((rng.random((1, 2, 3)) + 0.1).astype(np.float32))
    samples = sample_low_rank_logits(
        mean, factor, diag, num_samples=200_000, generator=torch.Generator().manual_seed(0)
    )
    flat = samples.reshape(200_000, 6).double().numpy()
    p = factor.reshape(2, 6).T.double().numpy()  # (C*S, R)
    expected_cov = p @ p.T + np.diag(diag.reshape(6).double().numpy())
    np.testing.assert_allclose(
        np.cov(flat, rowvar=False), expected_cov, atol=0.05 * np.abs(expected_cov).max()
    )
    np.testing.assert_allclose(flat.mean(0), mean.reshape(6).numpy(), atol=1e-5)  # antithetic: exact mean


def test_low_rank_samples_antithetic_pairs_seed_and_rank_zero():
    mean = torch.zeros(2, 2, 4)
    factor = torch.ones(2, 1, 2, 4)
    diag = torch.full((2, 2, 4), 0.5)
    a = sample_low_rank_logits(mean, factor, diag, num_samples=6, generator=torch.Generator().manual_seed(1))
    b = sample_low_rank_logits(mean, factor, diag, num_samples=6, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert torch.allclose(a[:3], -a[3:])
    diagonal_only = sample_low_rank_logits(mean, torch.zeros(2, 0, 2, 4), diag, num_samples=4)
    assert diagonal_only.shape == (4, 2, 2, 4)
    with pytest.raises(ValueError, match="even for antithetic"):
        sample_low_rank_logits(mean, factor, diag, num_samples=3)
    with pytest.raises(ValueError, match="cov_factor must be"):
        sample_low_rank_logits(mean, torch.ones(2, 1, 3, 4), diag, num_samples=2)


def test_ssn_log_likelihoods_match_numpy():
    rng = np.random.default_rng(7)
    samples = rng.normal(size=(5, 2, 3, 4, 4)).astype(np.float32)
    labels = rng.integers(0, 3, size=(2, 4, 4))
    target = np.eye(3, dtype=np.float32)[labels].transpose(0, 3, 1, 2)
    expected = (target[None] * _np_log_softmax(samples, 2)).sum(axis=(2, 3, 4))
    got = ssn_log_likelihoods(torch.from_numpy(samples), torch.from_numpy(target))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_ssn_loss_is_the_monte_carlo_log_likelihood():
    rng = np.random.default_rng(8)
    mean = torch.from_numpy(rng.normal(size=(2, 3, 4, 4)).astype(np.float32))
    factor = torch.from_numpy(rng.normal(size=(2, 2, 3, 4, 4)).astype(np.float32))
    diag = torch.from_numpy((rng.random((2, 3, 4, 4)) + 0.1).astype(np.float32))
    labels = rng.integers(0, 3, size=(2, 4, 4))
    target = torch.from_numpy(np.eye(3, dtype=np.float32)[labels].transpose(0, 3, 1, 2))
    loss = ssn_loss(
        mean, factor, diag, target, num_samples=8, per_voxel=False, generator=torch.Generator().manual_seed(3)
    )
    samples = sample_low_rank_logits(
        mean, factor, diag, num_samples=8, generator=torch.Generator().manual_seed(3)
    )
    ll = (target.numpy()[None] * _np_log_softmax(samples.numpy(), 2)).sum(axis=(2, 3, 4))  # (M, B)
    top = ll.max(0)
    expected = -(top + np.log(np.exp(ll - top).sum(0)) - np.log(8)).mean()
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    per_voxel = ssn_loss(
        mean, factor, diag, target, num_samples=8, generator=torch.Generator().manual_seed(3)
    )
    assert float(per_voxel) == pytest.approx(expected / 16, rel=1e-5)


def test_ssn_loss_deterministic_limit_is_cross_entropy():
    rng = np.random.default_rng(9)
    mean = rng.normal(size=(1, 2, 6)).astype(np.float32)
    labels = rng.integers(0, 2, size=(1, 6))
    target = np.eye(2, dtype=np.float32)[labels].transpose(0, 2, 1)
    loss = ssn_loss(
        torch.from_numpy(mean),
        torch.zeros(1, 3, 2, 6),
        torch.full((1, 2, 6), 1e-12),
        torch.from_numpy(target),
        num_samples=4,
        per_voxel=False,
    )
    expected = -(target * _np_log_softmax(mean, 1)).sum()
    assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_ssn_loss_background_mask_removes_voxels_and_their_gradient():
    rng = np.random.default_rng(10)
    mean = torch.from_numpy(rng.normal(size=(1, 2, 4, 4)).astype(np.float32)).requires_grad_(True)
    factor = torch.from_numpy(rng.normal(size=(1, 2, 2, 4, 4)).astype(np.float32))
    diag = torch.full((1, 2, 4, 4), 0.3)
    target = torch.zeros(1, 2, 4, 4)
    target[:, 0] = 1
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    mask[:, :, :2] = False
    loss = ssn_loss(mean, factor, diag, target, mask=mask, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.all(mean.grad[:, :, :, :2] == 0)
    assert torch.any(mean.grad[:, :, :, 2:] != 0)
    flipped = target.clone()
    flipped[:, :, :, :2] = flipped[:, :, :, :2].flip(1)
    again = ssn_loss(mean, factor, diag, flipped, mask=mask, generator=torch.Generator().manual_seed(0))
    assert float(again.detach()) == pytest.approx(float(loss.detach()), rel=1e-6)


def _load_toy():
    spec = importlib.util.spec_from_file_location("ssn_toy", ROOT / "benchmarks" / "ssn_toy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ssn_toy_problem_low_rank_beats_diagonal(one_thread):
    """Fast version of the SSN paper's toy problem (section 5.1; benchmarks/ssn_toy.py)."""
    toy = _load_toy()
    maps = toy.toy_label_maps()
    assert maps.shape == (2, 2, 21)
    # the two label maps differ exactly in the middle third
    np.testing.assert_array_equal(np.flatnonzero((maps[0, 1] != maps[1, 1]).numpy()), np.arange(7, 14))
    settings = dict(
        iterations=1200, num_samples=20, pretrain_iterations=300, eval_every=400, eval_samples=2000
    )
    diagonal = toy.run_toy(0, **settings)["log_likelihood"]
    low_rank = toy.run_toy(2, **settings)["log_likelihood"]
    independent_bound = 7 * math.log(0.5)  # best a model with independent middle pixels can do
    optimum = math.log(0.5)
    assert diagonal <= independent_bound + 0.05
    assert low_rank > independent_bound + 3.0  # clearly higher (paper: -0.93 vs -4.87)
    assert optimum - 1.0 < low_rank <= optimum + 0.05
