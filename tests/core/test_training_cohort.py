"""Streaming training on a cohort: split by case, worker-independent patches, resume, target cache, normalization."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from napari_seg_uncertainty.core.checkpoint import load_checkpoint
from napari_seg_uncertainty.core.cohort import load_cohort, make_phantom_cohort
from napari_seg_uncertainty.core.training import (
    TrainConfig,
    load_trained_model,
    loop,
    predict,
    streaming,
    target_cache,
    train,
)
from napari_seg_uncertainty.core.training.inference import ensemble_probabilities
from napari_seg_uncertainty.core.training.normalization import (
    RunningMoments,
    normalization_parameters,
    normalize_image,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


@pytest.fixture(scope="module")
def cohort2d(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort2d")
    return load_cohort(make_phantom_cohort(6, folder / "c", ndim=2, shape=(24, 24), seed=3))


@pytest.fixture(scope="module")
def cohort3d(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort3d")
    return load_cohort(make_phantom_cohort(4, folder / "c", ndim=3, shape=(12, 16, 16), seed=4))


def config(tmp_path, **overrides):
    values = dict(
        channels=(4, 8), strides=(2,), epochs=2, steps_per_epoch=2, batch_size=2, patches_per_case=2,
        device="cpu", num_workers=0, val_fraction=0.2, test_fraction=0.2, output_dir=str(tmp_path / "run"),
        seed=0,
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


def run(gen):
    records = []
    try:
        while True:
            records.append(next(gen))
    except StopIteration as stop:
        return records, stop.value


@pytest.fixture
def loaded_ids(monkeypatch):
    """Case ids the training loader's deterministic chain read (in this process)."""
    seen: list[str] = []
    original = streaming._LoadCase.__call__

    def spy(self, data):
        out = original(self, data)
        seen.append(out["case_id"])
        return out

    monkeypatch.setattr(streaming._LoadCase, "__call__", spy)
    return seen


@pytest.mark.parametrize("fixture", ["cohort2d", "cohort3d"])
def test_cohort_training_uses_train_cases_and_validates_on_val(fixture, tmp_path, request, loaded_ids):
    cohort = request.getfixturevalue(fixture)
    cfg = config(tmp_path, target="svls", background_mask="likelihood", augment_spatial=True,
                 augment_intensity=True)  # fmt: skip
    records, result = run(train(cfg, cohort))
    split = cohort.split(val=0.2, test=0.2, seed=0)
    assert split["val"] and split["test"]
    steps = [r for r in records if r.kind == "step"]
    assert all(np.isfinite(r.loss) for r in steps)
    assert all(0.0 <= r.data_wait <= 1.0 for r in steps)
    assert [r.cases_seen for r in steps] == [1, 2, 3, 4]  # 2 patches per step, 2 per case
    epochs = [r for r in records if r.kind == "epoch"]
    assert all(np.isfinite(r.val_nll) and 0.0 <= r.val_dice <= 1.0 for r in epochs)
    # the training loader read training cases only (never a validation or test case)
    assert loaded_ids and set(loaded_ids) <= set(split["train"])
    saved = load_checkpoint(result.checkpoint)
    assert saved["cohort"]["split"] == split
    assert saved["cohort"]["source"] == cohort.source
    assert saved["model"]["in_channels"] == cohort.channels
    assert saved["class_names"] == ["background", "class 1"]


def test_validation_streams_the_val_cases_only(cohort2d, tmp_path, monkeypatch):
    validated: list[list[str]] = []
    original = loop.evaluate

    def spy(model, cases, *args, **kwargs):
        validated.append(list(cases.case_ids))
        return original(model, cases, *args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", spy)
    split = {"train": cohort2d.case_ids[:4], "val": cohort2d.case_ids[4:5], "test": cohort2d.case_ids[5:]}
    run(train(config(tmp_path, target="random_rater", epochs=1), cohort2d, split=split))
    assert validated == [split["val"]]


def test_same_seed_same_weights_with_zero_and_two_workers(cohort2d, tmp_path):
    digests = []
    for workers in (0, 2):
        cfg = config(tmp_path / str(workers), num_workers=workers, target="mean", epochs=1, augment_spatial=True)
        digests.append(run(train(cfg, cohort2d))[1].weights_digest)
        assert not multiprocessing.active_children()  # the workers were shut down at the end
    assert digests[0] == digests[1]


def test_resume_mid_epoch_gives_the_uninterrupted_weights(cohort2d, tmp_path):
    cfg = config(tmp_path / "a", target="random_rater", epochs=2, steps_per_epoch=3, augment=True)
    _, full = run(train(cfg, cohort2d))
    cfg_b = config(tmp_path / "b", target="random_rater", epochs=2, steps_per_epoch=3, augment=True)
    gen = train(cfg_b, cohort2d)
    record = next(gen)
    while record.global_step < 4:  # stop in the middle of the second epoch
        record = gen.send(None)
    cancelled = gen.send("cancel")
    assert cancelled.kind == "cancelled" and load_checkpoint(cancelled.checkpoint)["global_step"] == 4
    records, resumed = run(train(cfg_b, cohort2d, resume=cancelled.checkpoint))
    assert records[-2].cases_seen == 6  # counted from the start of the run (1 case per step)
    assert resumed.weights_digest == full.weights_digest


def test_resume_refuses_a_different_split(cohort2d, tmp_path):
    cfg = config(tmp_path, target="random_rater", epochs=1, val_fraction=0.0)
    _, result = run(train(cfg, cohort2d))
    longer = config(tmp_path, target="random_rater", epochs=2, val_fraction=0.0)
    with pytest.raises(ValueError, match=r"different split of the cohort: .*\d+ case\(s\) now in val \(.case_"):
        next(train(longer, cohort2d, resume=result.checkpoint, split={"val": 0.5, "test": 0.0}))


def test_targets_are_cached_on_disk_once(cohort2d, tmp_path, monkeypatch):
    computed = []
    original = target_cache.fused_target

    def counting(*args, **kwargs):
        computed.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(target_cache, "fused_target", counting)
    cache = tmp_path / "targets"
    n_train = len(cohort2d.split(val=0.2, test=0.2, seed=0)["train"])
    run(train(config(tmp_path / "1", target="svls", epochs=1, target_cache_dir=str(cache)), cohort2d))
    first = sorted(cache.glob("*.npy"))
    assert len(computed) == len(first) <= n_train and first
    mtimes = [p.stat().st_mtime_ns for p in first]
    run(train(config(tmp_path / "2", target="svls", epochs=1, target_cache_dir=str(cache)), cohort2d))
    assert len(computed) == len(first)  # the second run read the cache
    assert [p.stat().st_mtime_ns for p in first] == mtimes
    # a changed parameter of the target gives new files
    run(train(config(tmp_path / "3", target="svls", svls_sigma=2.0, epochs=1, target_cache_dir=str(cache)), cohort2d))
    assert len(sorted(cache.glob("*.npy"))) == 2 * len(first)
    # a cached target is the fused target of the case's raters
    case = cohort2d.load_case(cohort2d.case_ids[0])
    cfg = TrainConfig(target="svls")
    cached = target_cache.TargetCache(cache, cfg, num_classes=2).get(
        cohort2d.content_digest(case.case_id), case.raters, case.spacing
    )
    np.testing.assert_array_equal(cached, original(case.raters, 2, cfg, case.spacing))


def test_target_cache_key_depends_on_method_parameters_and_content():
    key = target_cache.target_cache_key
    base = key(TrainConfig(target="msvls"), num_classes=2, content_digest="a")
    assert base != key(TrainConfig(target="msvls", svls_sigma=0.5), num_classes=2, content_digest="a")
    assert base != key(TrainConfig(target="msvls"), num_classes=3, content_digest="a")
    assert base != key(TrainConfig(target="msvls"), num_classes=2, content_digest="b")
    assert base != key(TrainConfig(target="msvls"), num_classes=2, content_digest="a", target_spacing=(1, 1))
    assert base == key(TrainConfig(target="msvls", label_smoothing=0.3), num_classes=2, content_digest="a")
    with pytest.raises(ValueError, match="random_rater"):
        key(TrainConfig(target="random_rater"), num_classes=2, content_digest="a")


def numpy_zscore(image):
    body = np.any(image != 0, axis=0)
    if not body.any():
        body[:] = True
    out = np.empty_like(image, dtype=np.float64)
    for c in range(image.shape[0]):
        values = image[c][body].astype(np.float64)
        std = values.std()
        out[c] = (image[c] - values.mean()) / (std if std > 1e-8 else 1.0)
    return out


def numpy_percentile(image, low, high):
    out = np.empty_like(image, dtype=np.float64)
    for c in range(image.shape[0]):
        lo, hi = np.percentile(image[c], [low, high])
        clipped = np.clip(image[c].astype(np.float64), lo, hi)
        out[c] = (clipped - clipped.mean()) / clipped.std()
    return out


def test_normalization_modes_equal_numpy():
    rng = np.random.default_rng(0)
    image = rng.normal(3.0, 2.0, size=(2, 10, 12)).astype(np.float32)
    image[:, :3] = 0.0  # background outside the body
    image[1, 5, 5] = 500.0  # an outlier the percentile clip removes
    np.testing.assert_allclose(normalize_image(image, {"mode": "zscore"}), numpy_zscore(image), rtol=1e-5, atol=1e-5)
    params = normalization_parameters("percentile", clip_percentiles=(1.0, 99.0))
    np.testing.assert_allclose(normalize_image(image, params), numpy_percentile(image, 1.0, 99.0), rtol=1e-5, atol=1e-5)
    dataset = normalization_parameters("dataset", mean=[1.0, 2.0], std=[2.0, 0.0])
    expected = (image - np.array([1.0, 2.0])[:, None, None]) / np.array([2.0, 1.0])[:, None, None]
    np.testing.assert_allclose(normalize_image(image, dataset), expected, rtol=1e-6)
    # an old checkpoint's normalization (no "mode") means "dataset"
    np.testing.assert_array_equal(normalize_image(image, {"mean": [1.0, 2.0], "std": [2.0, 1.0]}),
                                  normalize_image(image, dataset))  # fmt: skip
    # an empty body mask z-scores over every voxel
    np.testing.assert_allclose(normalize_image(np.zeros((1, 4, 4), np.float32), {"mode": "zscore"}), 0.0)
    with pytest.raises(ValueError, match="mode"):
        normalization_parameters("minmax")
    with pytest.raises(ValueError, match="channel"):
        normalize_image(image, {"mean": [0.0], "std": [1.0]})


def test_running_moments_equal_numpy_on_all_voxels():
    rng = np.random.default_rng(1)
    images = [rng.normal(i, 1 + i, size=(2, 5 + i, 7)) for i in range(4)]
    moments = RunningMoments().extend(images)
    stacked = np.concatenate([im.reshape(2, -1) for im in images], axis=1)
    np.testing.assert_allclose(moments.mean, stacked.mean(axis=1))
    np.testing.assert_allclose(moments.std, stacked.std(axis=1))


def test_cohort_dataset_normalization_is_the_training_cases_statistics(cohort2d):
    train_ids = cohort2d.split(val=0.2, test=0.2, seed=0)["train"]
    params = streaming.cohort_normalization(cohort2d, train_ids, TrainConfig())
    stacked = np.concatenate([cohort2d.load_case(c).image.reshape(cohort2d.channels, -1) for c in train_ids], axis=1)
    np.testing.assert_allclose(params["mean"], stacked.astype(np.float64).mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(params["std"], stacked.astype(np.float64).std(axis=1), rtol=1e-6)
    assert params["mode"] == "dataset"


@pytest.mark.parametrize("mode", ["zscore", "percentile"])
def test_predict_normalizes_like_training(cohort2d, tmp_path, mode):
    cfg = config(tmp_path, target="random_rater", epochs=1, steps_per_epoch=1, normalization=mode,
                 clip_percentiles=(2.0, 98.0), val_fraction=0.0)  # fmt: skip
    _, result = run(train(cfg, cohort2d))
    trained = load_trained_model(result.checkpoint)
    assert trained.info["normalization"]["mode"] == mode
    image = cohort2d.load_case(cohort2d.case_ids[-1]).image
    manual = numpy_zscore(image) if mode == "zscore" else numpy_percentile(image, 2.0, 98.0)
    expected = ensemble_probabilities(trained.model, manual.astype(np.float32), trained.info, trained.device,
                                      trained.config, num_samples=0)  # fmt: skip
    got = predict(result.checkpoint, image[0], num_samples=0)  # (1, Y, X) would read as one slice
    np.testing.assert_allclose(got.probabilities, expected.numpy(), atol=1e-5)


def test_array_training_accepts_the_normalization_modes():
    raters = np.zeros((2, 16, 16), dtype=int)
    raters[:, 4:12, 4:12] = 1
    image = np.random.default_rng(0).random((16, 16)) + raters[0]
    cfg = TrainConfig(target="random_rater", channels=(4, 8), strides=(2,), epochs=1, steps_per_epoch=1,
                      batch_size=1, val_fraction=0.0, device="cpu", normalization="zscore")  # fmt: skip
    records, _ = run(train(cfg, (image, raters)))
    assert np.isfinite(records[-2].loss)
    with pytest.raises(ValueError, match="cohort"):
        next(train(cfg, (image, raters), split={"val": 0.2}))


def test_memory_cache_stays_within_its_budget(cohort3d, tmp_path):
    cfg = TrainConfig(target="mean", patch_size=(8, 8, 8), patches_per_case=1, num_workers=0, cache_mb=0.0)
    ids = cohort3d.case_ids
    normalization = streaming.cohort_normalization(cohort3d, ids, cfg)
    cache = target_cache.TargetCache(tmp_path / "targets", cfg, num_classes=2)

    def make_loader():
        return streaming.CohortPatchLoader(
            cohort3d, ids, config=cfg, num_classes=2, patch_size=(8, 8, 8), normalization=normalization,
            target_cache=cache, patches_per_step=1,
        )  # fmt: skip

    sizes = [streaming._prepared_nbytes(make_loader().prepared.dataset[i]) for i in range(len(ids))]
    for budget in (0, int(1.5 * max(sizes)), int(2.5 * max(sizes)), 10 * sum(sizes)):
        cfg.cache_mb = budget / 2**20
        loader = make_loader()
        prepared = loader.prepared
        for _ in range(3 * len(ids)):
            loader.sample(1)
            held = sum(streaming._prepared_nbytes(item) for item, _ in prepared._items.values())
            assert held == prepared.held_bytes <= prepared.budget_bytes
        assert prepared.peak_bytes <= prepared.budget_bytes <= budget
        assert prepared.misses + prepared.hits == 3 * len(ids)
        if budget == 0:
            assert prepared.hits == 0  # nothing fits: every read goes to disk
        if budget > sum(sizes):
            assert prepared.misses == len(ids)  # everything fits: each case read once
        loader.close()


def test_case_key_sampler_skips_consumed_keys_and_splits_ranks():
    from itertools import islice

    full = list(islice(iter(streaming.CaseKeySampler(5, seed=2)), 13))
    assert list(islice(iter(streaming.CaseKeySampler(5, seed=2, start=7)), 6)) == full[7:]
    assert sorted(i for i, _ in full[:5]) == list(range(5))  # a pass visits every case once
    assert full[:5] != full[5:10]  # passes are shuffled differently
    ranks = [list(islice(iter(streaming.CaseKeySampler(4, seed=2, rank=r, world=2)), 2)) for r in (0, 1)]
    assert sorted(i for keys in ranks for i, _ in keys) == [0, 1, 2, 3]


def test_patch_depends_only_on_its_key(cohort2d):
    cfg = TrainConfig(target="random_rater", patch_size=(16, 16), augment_spatial=True, augment_intensity=True)
    ids = cohort2d.case_ids[:3]
    normalization = streaming.cohort_normalization(cohort2d, ids, cfg)
    kwargs = dict(config=cfg, num_classes=2, patch_size=(16, 16), normalization=normalization, target_cache=None,
                  patches_per_step=4)  # fmt: skip
    a = streaming.CohortPatchLoader(cohort2d, ids, **kwargs)
    b = streaming.CohortPatchLoader(cohort2d, ids, **kwargs)
    b.dataset[(2, 99)]  # another read in between changes nothing
    key = (1, 12345)
    for first, second in zip(a.dataset[key], b.dataset[key]):
        torch.testing.assert_close(first["image"], second["image"])
        torch.testing.assert_close(first["target"], second["target"])
    x, t, m = a.sample(3)
    assert x.shape == (3, 1, 16, 16) and t.shape == (3, 2, 16, 16) and m is None
    torch.testing.assert_close(t.sum(1), torch.ones(3, 16, 16))
    assert a.cases_seen == 1  # ceil(3 / 4 patches per case)
    a.close()
    b.close()


TORCHRUN_SCRIPT = """
import sys, torch, torch.distributed as dist
from napari_seg_uncertainty.core.cohort import load_cohort
from napari_seg_uncertainty.core.training import TrainConfig, train
torch.set_num_threads(1)
dist.init_process_group("gloo")
cfg = TrainConfig(channels=(4, 8), strides=(2,), epochs=1, steps_per_epoch=2, batch_size=2, patches_per_case=2,
                  device="cpu", num_workers=0, target="mean", output_dir=sys.argv[2], seed=0)
gen = train(cfg, load_cohort(sys.argv[1]))
try:
    while True:
        record = next(gen)
except StopIteration as stop:
    result = stop.value
print(f"rank {dist.get_rank()}/2 cases {record.cases_seen} weights sha256 {result.weights_digest}", flush=True)
dist.barrier()  # as the CLI does: no rank tears gloo down while another still talks to it
dist.destroy_process_group()
"""


def test_torchrun_two_cpu_processes_on_a_cohort_agree_on_weights(tmp_path):
    source = make_phantom_cohort(5, tmp_path / "c", ndim=2, shape=(24, 24), seed=5)
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(TORCHRUN_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               str(source), str(tmp_path / "ddp")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    digests = dict(re.findall(r"rank (\d)/2 cases \d+ weights sha256 ([0-9a-f]{64})", output))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], output
    assert re.search(r"rank 0/2 cases 4 ", output), output  # 2 steps × 1 case × 2 ranks
    assert load_checkpoint(tmp_path / "ddp" / "last.pt")["cohort"]["split"]["train"]


def test_cases_on_different_grids_train_as_patches_and_resample_when_asked(tmp_path):
    import shutil

    source = make_phantom_cohort(3, tmp_path / "a", ndim=2, shape=(24, 24), seed=6)
    other = make_phantom_cohort(2, tmp_path / "b", ndim=2, shape=(20, 32), seed=7)
    for i, case in enumerate(sorted(p for p in os.listdir(other) if os.path.isdir(os.path.join(other, p)))):
        shutil.copytree(os.path.join(other, case), os.path.join(source, f"case_9{i}"))
    cohort = load_cohort(source)
    assert len({c.shape for c in cohort.cases}) == 2
    _, result = run(train(config(tmp_path / "grids", target="mean", epochs=1, val_fraction=0.2), cohort))
    saved = load_checkpoint(result.checkpoint)
    train_shapes = [cohort[c].shape for c in saved["cohort"]["split"]["train"]]
    assert all(p <= min(s[a] for s in train_shapes) for a, p in enumerate(saved["model"]["patch_size"]))
    assert saved["spacing"] is None  # every case on its own grid
    resampled = load_cohort(source, target_spacing=(1.0, 1.0))
    _, result = run(train(config(tmp_path / "resampled", target="mean", epochs=1), resampled))
    saved = load_checkpoint(result.checkpoint)
    assert saved["spacing"] == [1.0, 1.0] and saved["cohort"]["target_spacing"] == [1.0, 1.0]


def test_slice_training_on_a_3d_cohort(cohort3d, tmp_path):
    records, result = run(train(config(tmp_path, target="random_rater", epochs=1, spatial_dims=2), cohort3d))
    assert load_trained_model(result.checkpoint).info["spatial_dims"] == 2
    assert len(load_trained_model(result.checkpoint).info["patch_size"]) == 2
    epoch = [r for r in records if r.kind == "epoch"][-1]
    assert np.isfinite(epoch.loss) and np.isfinite(epoch.val_nll)


def test_cancel_shuts_the_loader_workers_down(cohort2d, tmp_path):
    gen = train(config(tmp_path, target="random_rater", num_workers=2, epochs=3), cohort2d)
    next(gen)
    record = gen.send(None)
    assert record.kind == "step" and multiprocessing.active_children()
    assert gen.send("cancel").kind == "cancelled"
    gen.close()
    assert not multiprocessing.active_children()
    gen = train(config(tmp_path / "closed", target="random_rater", num_workers=2, epochs=3), cohort2d)
    next(gen)
    gen.send(None)
    gen.close()  # GeneratorExit
    assert not multiprocessing.active_children()


def test_array_slice_training_normalizes_whole_volumes():
    from napari_seg_uncertainty.core.training.data import TrainingData, prepare_cases

    rng = np.random.default_rng(2)
    raters = np.zeros((2, 6, 16, 16), dtype=int)
    raters[:, 1:5, 4:12, 4:12] = 1
    image = rng.normal(5.0, 1.0, size=(6, 16, 16)) * np.arange(1, 7)[:, None, None]
    data = TrainingData.from_arrays(image, raters)
    params = {"mode": "zscore"}
    train_cases, val_cases = prepare_cases(data, TrainConfig(val_fraction=0.2), 2, params)
    whole = normalize_image(data.images[0], params)
    np.testing.assert_array_equal(np.stack([c.normed for c in train_cases + val_cases], axis=1), whole)


def test_every_cohort_run_writes_its_split_and_epoch_records_carry_the_loader_figures(cohort2d, tmp_path):
    records, result = run(train(config(tmp_path), cohort2d, split={"val": 0.2, "test": 0.2}))
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split == load_checkpoint(result.checkpoint)["cohort"]["split"]
    assert set(split) == {"train", "val", "test"} and split["val"] and split["test"]
    steps = [r for r in records if r.kind == "step"]
    epochs = [r for r in records if r.kind == "epoch"]
    assert all(0.0 <= r.data_wait <= 1.0 and r.throughput > 0 for r in epochs)
    for e, epoch in enumerate(epochs):  # the epoch's share: the steps' waits weighted by their time
        own = steps[2 * e : 2 * e + 2]
        seconds = [2 / s.throughput for s in own]  # patches per step (batch_size 2) / patches per second
        expected = sum(s.data_wait * t for s, t in zip(own, seconds)) / sum(seconds)
        assert epoch.data_wait == pytest.approx(expected, rel=1e-6, abs=1e-9)
        assert epoch.throughput == pytest.approx(4 / sum(seconds), rel=1e-6)
