"""The training generator, checkpoints, resume and prediction (CPU, tiny models)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from napari_seg_uncertainty.core import checkpoint as checkpoint_module
from napari_seg_uncertainty.core.checkpoint import load_checkpoint, save_checkpoint
from napari_seg_uncertainty.core.models import mc_dropout
from napari_seg_uncertainty.core.training import (
    TARGETS,
    TrainConfig,
    TrainingData,
    load_trained_model,
    predict,
    predict_ssn_distribution,
    resolve_device,
    train,
    weights_digest,
)

TINY = dict(channels=(4, 8), strides=(2,), num_res_units=0, device="cpu", batch_size=2)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def make_case(shape=(24, 24), raters=3, seed=0):
    """A bright disc (class 1) with a smaller core (class 2); raters disagree at the borders."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s) - s / 2 for s in shape], indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grids))
    stack = []
    for r in range(raters):
        labels = np.zeros(shape, np.uint8)
        labels[radius < shape[-1] * 0.3 + r - 1] = 1
        labels[radius < shape[-1] * 0.12] = 2
        stack.append(labels)
    image = (
        (radius < shape[-1] * 0.3).astype(np.float32)
        + (radius < shape[-1] * 0.12)
        + 0.1 * rng.normal(size=shape)
    )
    return image.astype(np.float32), np.stack(stack)


def run(config, data, **kwargs):
    gen = train(config, data, **kwargs)
    records = []
    try:
        while True:
            records.append(next(gen))
    except StopIteration as stop:
        return records, stop.value


# ------------------------------------------------------------------------------------------- config
def test_config_roundtrip_yaml_and_json(tmp_path):
    cfg = TrainConfig(
        head="ssn",
        loss="ssn",
        target="random_rater",
        channels=(8, 16, 32),
        strides=(2, 2),
        patch_size=(32, 32),
        ensemble_size=2,
        dropout=0.1,
        output_dir=str(tmp_path),
    )
    for name in ("cfg.yaml", "cfg.json"):
        path = cfg.save(tmp_path / name)
        assert TrainConfig.load(path) == cfg
    assert TrainConfig.from_dict(cfg.to_dict()).channels == (8, 16, 32)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(head="ssn", loss="ce"), ValueError, "do not fit"),
        (dict(loss="ssn"), ValueError, "do not fit"),
        (dict(target="vote"), ValueError, "target must be one of"),
        (dict(ssn_samples=5), ValueError, "ssn_samples must be even"),
        (dict(patch_size=(30, 32)), ValueError, "divisible by 4"),
        (dict(epochs=0), ValueError, "epochs must be at least 1"),
        (dict(learning_rate=-1.0), ValueError, "learning_rate must lie in"),
        (dict(batch_size=2.5), TypeError, "batch_size must be an integer"),
        (dict(spatial_dims=4), ValueError, "spatial_dims must be 2, 3 or None"),
        (dict(val_fraction=1.0), ValueError, "val_fraction must lie in"),
        (dict(channels=(8,), strides=()), TypeError, "strides must be a non-empty list"),
    ],
)
def test_config_validates(kwargs, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**kwargs)


def test_config_from_dict_rejects_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match="unknown training setting"):
        TrainConfig.from_dict({"epochs": 2, "learnign_rate": 0.1})
    with pytest.raises(ValueError, match=".yaml, .yml or .json"):
        TrainConfig().save(tmp_path / "cfg.txt")


# --------------------------------------------------------------------------------------------- data
def test_training_data_from_arrays_shapes_and_errors():
    image, raters = make_case()
    data = TrainingData.from_arrays(image, raters, spacing=(0.5, 0.5))
    assert data.images[0].shape == (1, 24, 24) and data.num_classes == 3 and data.spacing == (0.5, 0.5)
    two_channel = TrainingData.from_arrays(np.stack([image, image]), raters)
    assert two_channel.in_channels == 2
    with pytest.raises(ValueError, match="image must have the raters' spatial shape"):
        TrainingData.from_arrays(image[:20], raters)
    with pytest.raises(ValueError, match="raters contain label 2, outside 0..1"):
        TrainingData.from_arrays(image, raters, num_classes=2)
    with pytest.raises(ValueError, match="class_names must have at least 3 entries"):
        TrainingData.from_arrays(image, raters, class_names=["a", "b"])
    with pytest.raises(ValueError, match="class_names must have 4 entries"):
        TrainingData.from_arrays(image, raters, num_classes=4, class_names=["a", "b", "c"])
    with pytest.raises(TypeError, match="data must be a TrainingData"):
        run(TrainConfig(**TINY), "data")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu please")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


# ---------------------------------------------------------------------------------------- the loop
def test_records_sequence_and_progress():
    image, raters = make_case()
    cfg = TrainConfig(epochs=2, steps_per_epoch=3, **TINY)
    records, result = run(cfg, (image, raters))
    kinds = [r.kind for r in records]
    assert kinds == ["start"] + (["step"] * 3 + ["epoch"]) * 2 + ["done"]
    steps = [r for r in records if r.kind == "step"]
    assert [r.global_step for r in steps] == list(range(1, 7))
    assert [(r.epoch, r.step) for r in steps] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert all(math.isfinite(r.loss) and r.throughput > 0 for r in steps)
    epochs = [r for r in records if r.kind == "epoch"]
    # epoch loss = mean of that epoch's step losses
    assert epochs[0].loss == pytest.approx(np.mean([r.loss for r in steps[:3]]))
    assert all(r.val_nll is not None and 0 <= r.val_dice <= 1 for r in epochs)
    assert records[-1].fraction == 1.0
    assert result.checkpoint is None and not result.cancelled and len(result.history) == 2


def test_training_learns_an_easy_problem():
    image, raters = make_case(shape=(32, 32), raters=1)
    cfg = TrainConfig(
        epochs=4, steps_per_epoch=25, learning_rate=1e-2, patch_size=(16, 16), val_fraction=0.0, **TINY
    )
    records, _ = run(cfg, (image, raters))
    epochs = [r.loss for r in records if r.kind == "epoch"]
    assert epochs[-1] < 0.5 * epochs[0]


def test_validation_metrics_match_an_independent_computation(tmp_path):
    cases = [make_case(seed=s) for s in range(3)]
    data = TrainingData.from_arrays([c[0] for c in cases], [c[1] for c in cases])
    cfg = TrainConfig(epochs=1, steps_per_epoch=3, val_fraction=0.3, output_dir=str(tmp_path), **TINY)
    records, result = run(cfg, data)
    epoch = [r for r in records if r.kind == "epoch"][-1]
    val_image, val_raters = cases[-1]  # the last case is held out
    probs = predict(result.checkpoint, val_image, num_samples=0).probabilities
    reference = np.stack([(val_raters == k).mean(0) for k in range(3)])
    nll = -(reference * np.log(np.clip(probs, 1e-7, None))).sum(0).mean()
    majority = reference.argmax(0)
    predicted = probs.argmax(0)
    dices = []
    for k in (1, 2):
        p, t = predicted == k, majority == k
        if p.sum() + t.sum():
            dices.append(2 * np.logical_and(p, t).sum() / (p.sum() + t.sum()))
    assert epoch.val_nll == pytest.approx(nll, rel=1e-4)
    assert epoch.val_dice == pytest.approx(np.mean(dices), rel=1e-6)


def test_same_seed_same_weights_different_seed_different():
    image, raters = make_case()
    cfg = TrainConfig(epochs=1, steps_per_epoch=3, dropout=0.2, target="random_rater", **TINY)
    _, a = run(cfg, (image, raters))
    _, b = run(cfg, (image, raters))
    _, c = run(TrainConfig(**{**cfg.to_dict(), "seed": 1}), (image, raters))
    assert a.weights_digest == b.weights_digest
    assert a.weights_digest != c.weights_digest


@pytest.mark.parametrize("target", [t for t in TARGETS if t != "random_rater"])
def test_fused_targets_train(target):
    pytest.importorskip("napari_seg_uncertainty.core.labels")
    image, raters = make_case()
    records, _ = run(
        TrainConfig(target=target, epochs=1, steps_per_epoch=1, val_fraction=0.0, **TINY), (image, raters)
    )
    assert math.isfinite(records[-2].loss)


@pytest.mark.parametrize(
    ("head", "loss"),
    [
        ("softmax", "dice"),
        ("softmax", "ce_dice"),
        ("softseg", "adaptive_wing"),
        ("softseg", "ce"),
        ("ssn", "ssn"),
    ],
)
def test_heads_and_losses_train(head, loss):
    image, raters = make_case()
    cfg = TrainConfig(
        head=head,
        loss=loss,
        ssn_rank=3,
        ssn_samples=4,
        target="random_rater",
        epochs=1,
        steps_per_epoch=2,
        background_mask="covariance" if head == "ssn" else "likelihood",
        **TINY,
    )
    records, _ = run(cfg, (image, raters))
    assert all(math.isfinite(r.loss) for r in records if r.kind == "step")


# ------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_contents_weights_only_and_best(tmp_path):
    image, raters = make_case()
    cfg = TrainConfig(epochs=2, steps_per_epoch=2, output_dir=str(tmp_path), **TINY)
    data = TrainingData.from_arrays(image, raters, class_names=["bg", "disc", "core"], spacing=(0.7, 0.7))
    records, result = run(cfg, data)
    assert result.checkpoint == str(tmp_path / "last.pt") and result.best_checkpoint == str(
        tmp_path / "best.pt"
    )
    raw = torch.load(result.checkpoint, weights_only=True)  # loads without pickled classes
    assert raw["class_names"] == ["bg", "disc", "core"] and raw["spacing"] == [0.7, 0.7]
    assert raw["config"] == cfg.to_dict() and raw["reason"] == "final" and raw["global_step"] == 4
    assert [e["epoch"] for e in raw["history"]] == [1.0, 2.0]
    best = load_checkpoint(result.best_checkpoint)
    assert best["reason"] == "best"
    dices = [e["val_dice"] for e in raw["history"]]
    assert best["best_metric"] == pytest.approx(max(dices))
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    trained = load_trained_model(result.checkpoint)
    assert weights_digest(trained.model) == result.weights_digest
    assert trained.spacing == (0.7, 0.7)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", {"value": torch.ones(3)})

    def failing_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"value": torch.zeros(3)})
    monkeypatch.undo()
    assert load_checkpoint(path)["value"].tolist() == [1.0, 1.0, 1.0]  # the old file is intact
    assert os.listdir(tmp_path) == ["c.pt"]  # no temporary file left behind


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a napari-seg-uncertainty checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="could not be read"):
        load_checkpoint(tmp_path / "junk.pt")


def test_cancel_mid_epoch_leaves_a_loadable_checkpoint(tmp_path):
    image, raters = make_case()
    cfg = TrainConfig(epochs=3, steps_per_epoch=4, output_dir=str(tmp_path), **TINY)
    gen = train(cfg, (image, raters))
    assert next(gen).kind == "start"
    next(gen)
    record = next(gen)
    assert (record.kind, record.global_step) == ("step", 2)
    cancelled = gen.send("cancel")
    assert cancelled.kind == "cancelled" and cancelled.checkpoint == str(tmp_path / "last.pt")
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value.cancelled and stop.value.value.global_step == 2
    state = load_checkpoint(cancelled.checkpoint)
    assert state["reason"] == "cancelled" and state["global_step"] == 2
    out = predict(cancelled.checkpoint, image)
    assert out.probabilities.shape == (3, 24, 24)


def test_close_saves_a_checkpoint(tmp_path):
    image, raters = make_case()
    gen = train(TrainConfig(epochs=2, steps_per_epoch=3, output_dir=str(tmp_path), **TINY), (image, raters))
    for _ in range(3):
        next(gen)
    gen.close()
    assert load_checkpoint(tmp_path / "last.pt")["global_step"] == 2


def test_resume_after_cancel_reproduces_an_uninterrupted_run(tmp_path):
    image, raters = make_case()
    common = dict(epochs=2, steps_per_epoch=3, dropout=0.2, target="random_rater", **TINY)
    _, straight = run(TrainConfig(output_dir=str(tmp_path / "a"), **common), (image, raters))
    gen = train(TrainConfig(output_dir=str(tmp_path / "b"), **common), (image, raters))
    record = next(gen)
    while not (record.kind == "step" and record.global_step == 4):  # stop inside the second epoch
        record = next(gen)
    gen.send("cancel")
    gen.close()
    _, resumed = run(
        TrainConfig(output_dir=str(tmp_path / "b"), **common),
        (image, raters),
        resume=tmp_path / "b" / "last.pt",
    )
    assert resumed.global_step == straight.global_step == 6
    assert resumed.weights_digest == straight.weights_digest
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight.history])


def test_resume_rejects_other_model_settings(tmp_path):
    image, raters = make_case()
    _, result = run(
        TrainConfig(epochs=1, steps_per_epoch=1, output_dir=str(tmp_path), **TINY), (image, raters)
    )
    with pytest.raises(ValueError, match="different model settings"):
        run(TrainConfig(**{**TINY, "channels": (8, 16)}, epochs=2), (image, raters), resume=result.checkpoint)
    with pytest.raises(ValueError, match="raise epochs"):
        run(TrainConfig(epochs=1, steps_per_epoch=1, **TINY), (image, raters), resume=result.checkpoint)


# ---------------------------------------------------------------------------------------- inference
def test_ensemble_prediction_is_the_mean_of_its_members(tmp_path):
    image, raters = make_case()
    cfg = TrainConfig(ensemble_size=3, epochs=1, steps_per_epoch=2, output_dir=str(tmp_path), **TINY)
    _, result = run(cfg, (image, raters))
    out = predict(result.checkpoint, image, num_samples=0)
    trained = load_trained_model(result.checkpoint)
    norm = trained.info["normalization"]
    x = torch.from_numpy(((image - norm["mean"][0]) / norm["std"][0])[None, None].astype(np.float32))
    with torch.no_grad():  # image 24 = 8 + 16: compare on the exact window grid via MONAI's padding
        from monai.inferers import sliding_window_inference

        members = [
            torch.softmax(
                sliding_window_inference(x, trained.info["patch_size"], 4, m, overlap=0.25, mode="gaussian"),
                1,
            )[0].numpy()
            for m in trained.model.members
        ]
    np.testing.assert_allclose(out.probabilities, np.mean(members, axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(out.labels, out.probabilities.argmax(0))
    p = out.probabilities
    entropy = -(p * np.log(np.clip(p, 1e-12, None))).sum(0) / np.log(3)
    np.testing.assert_allclose(out.entropy, entropy, rtol=1e-5, atol=1e-6)
    assert 0 <= out.entropy.min() and out.entropy.max() <= 1 + 1e-6


def test_mc_dropout_prediction_averages_stochastic_passes(tmp_path):
    image, raters = make_case()
    cfg = TrainConfig(dropout=0.3, epochs=1, steps_per_epoch=2, output_dir=str(tmp_path), **TINY)
    _, result = run(cfg, (image, raters))
    off = predict(result.checkpoint, image, num_samples=0).probabilities
    a = predict(result.checkpoint, image, num_samples=4, seed=1).probabilities
    b = predict(result.checkpoint, image, num_samples=4, seed=1).probabilities
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, off)
    trained = load_trained_model(result.checkpoint)
    with mc_dropout(trained.model) as layers:
        assert layers > 0


def test_ssn_distribution_and_sampled_prediction(tmp_path):
    image, raters = make_case()
    cfg = TrainConfig(
        head="ssn",
        loss="ssn",
        ssn_rank=4,
        ssn_samples=4,
        target="random_rater",
        epochs=1,
        steps_per_epoch=2,
        output_dir=str(tmp_path),
        **TINY,
    )
    _, result = run(cfg, (image, raters))
    dist = predict_ssn_distribution(result.checkpoint, image)
    assert dist.mean.shape == (3, 24, 24) and dist.cov_factor.shape == (4, 3, 24, 24)
    assert dist.cov_diag.shape == (3, 24, 24) and dist.cov_diag.min() > 0
    mean_only = predict(result.checkpoint, image, num_samples=0)
    logits = dist.mean - dist.mean.max(0)
    softmax = np.exp(logits) / np.exp(logits).sum(0)
    np.testing.assert_allclose(mean_only.probabilities, softmax, rtol=1e-4, atol=1e-6)
    sampled = predict(result.checkpoint, image, num_samples=6, seed=2)
    np.testing.assert_allclose(sampled.probabilities.sum(0), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="needs a model trained with head='ssn'"):
        _, plain = run(
            TrainConfig(epochs=1, steps_per_epoch=1, output_dir=str(tmp_path / "p"), **TINY), (image, raters)
        )
        predict_ssn_distribution(plain.checkpoint, image)


def test_3d_patch_training_and_2d_slice_training(tmp_path):
    image, raters = make_case(shape=(8, 16, 16))
    _, volume = run(
        TrainConfig(epochs=1, steps_per_epoch=2, output_dir=str(tmp_path / "3d"), **TINY), (image, raters)
    )
    assert load_checkpoint(volume.checkpoint)["model"]["spatial_dims"] == 3
    out = predict(volume.checkpoint, image)
    assert out.probabilities.shape == (3, 8, 16, 16)
    _, slices = run(
        TrainConfig(spatial_dims=2, epochs=1, steps_per_epoch=2, output_dir=str(tmp_path / "2d"), **TINY),
        (image, raters),
    )
    state = load_checkpoint(slices.checkpoint)
    assert state["model"]["spatial_dims"] == 2 and len(state["model"]["patch_size"]) == 2
    out2 = predict(slices.checkpoint, image)
    assert out2.labels.shape == (8, 16, 16)
    ssn = run(
        TrainConfig(
            head="ssn",
            loss="ssn",
            ssn_rank=2,
            ssn_samples=2,
            spatial_dims=2,
            epochs=1,
            steps_per_epoch=1,
            output_dir=str(tmp_path / "s"),
            **TINY,
        ),
        (image, raters),
    )[1]
    dist = predict_ssn_distribution(ssn.checkpoint, image)
    assert dist.cov_factor.shape == (2, 3, 8, 16, 16)


def test_too_small_data_and_bad_patch_size():
    image, raters = make_case(shape=(1, 16, 16))
    with pytest.raises(ValueError, match="too small for a U-Net"):
        run(TrainConfig(epochs=1, steps_per_epoch=1, val_fraction=0.0, **TINY), (image, raters))
    image2, raters2 = make_case(shape=(16, 16))
    with pytest.raises(ValueError, match="larger than the training data"):
        run(TrainConfig(patch_size=(32, 32), val_fraction=0.0, **TINY), (image2, raters2))
    with pytest.raises(ValueError, match="must have 2 entries"):
        run(TrainConfig(patch_size=(8, 8, 8), val_fraction=0.0, **TINY), (image2, raters2))
