"""Benchmark: streaming a cohort's evaluation (issue 14) — pooled reliability and evaluate_checkpoints.

Run ``python benchmarks/bench_evaluate_stream.py`` (``--part pooled`` or ``--part pipeline``).

pooled
    :class:`ReliabilityAccumulator` over ``--cases`` synthetic cases of ``--shape`` with ``--classes``
    classes (random probabilities, hard labels), one case in memory at a time: seconds per case and the
    peak of Python/numpy allocations (tracemalloc) over the whole loop, which must not grow with the
    number of cases — it is compared with the peak of a run over a tenth of the cases. With ``--check``
    the pooled counts are compared with :func:`reliability_bins` on all voxels concatenated (only for
    sizes that fit in memory). Issue 14 target: 100 cases of 155 x 240 x 240, 4 classes, exact and in a
    fixed memory bound.
pipeline
    :func:`evaluate_checkpoints` of a tiny checkpoint (trained here for 2 x 2 steps) on the test cases
    of a generated 3-D cohort: seconds per case (reading, inference, every metric of ``evaluate_case``,
    the reliability update) from the progress records, with inference alone timed on the same cases
    for comparison, and the allocation peak over the evaluation.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def _case(rng: np.random.Generator, shape: tuple[int, ...], classes: int) -> tuple[np.ndarray, np.ndarray]:
    logits = rng.standard_normal((classes, *shape), dtype=np.float32) * 2.0
    logits -= logits.max(axis=0, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=0, keepdims=True)
    labels = (logits.argmax(axis=0) + (rng.random(shape) < 0.2)).astype(np.uint8) % classes
    return logits, labels


def _pooled_run(cases: int, shape: tuple[int, ...], classes: int, bins: int) -> tuple[float, int, object]:
    from napari_seg_uncertainty.core.calibration import ReliabilityAccumulator

    rng = np.random.default_rng(0)
    accumulator = ReliabilityAccumulator(num_bins=bins)
    tracemalloc.start()
    spent = 0.0
    for _ in range(cases):
        probs, labels = _case(rng, shape, classes)
        start = time.perf_counter()
        accumulator.update(probs, labels, target_kind="labels")
        spent += time.perf_counter() - start
        del probs, labels
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return spent, peak, accumulator.aggregate()


def bench_pooled(args: argparse.Namespace) -> None:
    from napari_seg_uncertainty.core.calibration import reliability_bins

    shape = tuple(args.shape)
    voxels = int(np.prod(shape))
    case_mb = (args.classes * 4 + 1) * voxels / 2**20
    few = max(1, args.cases // 10)
    _pooled_run(1, shape, args.classes, args.bins)  # warm-up: first-call allocations of numpy and the binning
    spent_few, peak_few, _ = _pooled_run(few, shape, args.classes, args.bins)
    spent, peak, pooled = _pooled_run(args.cases, shape, args.classes, args.bins)
    print(f"pooled reliability: {args.cases} cases of {shape}, {args.classes} classes ({case_mb:.0f} MB per case)")
    per_case = spent / args.cases
    print(f"  update: {1000 * per_case:.1f} ms per case ({voxels / per_case / 1e6:.0f} M voxels/s)")
    print(f"  allocation peak: {peak / 2**20:.0f} MB over {args.cases} cases, {peak_few / 2**20:.0f} MB over {few} "
          f"(ratio {peak / max(peak_few, 1):.2f}; one case's arrays are {case_mb:.0f} MB)")
    ece = 100 * pooled.expected_calibration_error
    print(f"  voxels counted: {pooled.total} (expected {args.cases * voxels}), ECE {ece:.3f}%")
    if args.check:
        rng = np.random.default_rng(0)
        probs, labels = zip(*[_case(rng, shape, args.classes) for _ in range(args.cases)], strict=True)
        direct = reliability_bins(np.concatenate(probs, axis=1), np.concatenate(labels, axis=0), num_bins=args.bins)
        same = np.array_equal(direct.count, pooled.count)
        gap = np.nanmax(np.abs(direct.accuracy - pooled.accuracy))
        print(f"  against the concatenated voxels: counts equal {same}, largest accuracy difference {gap:.1e}")


def bench_pipeline(args: argparse.Namespace) -> None:
    import torch

    from napari_seg_uncertainty.core.cohort import load_cohort, make_phantom_cohort
    from napari_seg_uncertainty.core.training import TrainConfig, load_trained_model, predict, train
    from napari_seg_uncertainty.workflow.evaluation import evaluate_checkpoints

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp())
    shape = tuple(args.shape)
    source = make_phantom_cohort(args.cases, root / "cohort", ndim=3, num_classes=args.classes, num_raters=3,
                                 shape=shape, seed=0)
    cohort = load_cohort(source)
    split = cohort.split(val=0.1, test=0.8, seed=0)
    config = TrainConfig(target="mean", channels=(8, 16), strides=(2,), num_res_units=0, epochs=2, steps_per_epoch=2,
                         batch_size=2, patch_size=(16, 32, 32), num_workers=0, device="cpu", output_dir=str(root / "m"))
    *_, last = train(config, cohort, split=split)
    tracemalloc.start()
    gen = evaluate_checkpoints(last.checkpoint, cohort, num_resamples=10000, device="cpu")
    seconds = []
    try:
        while True:
            seconds.append(next(gen).seconds)
    except StopIteration as stop:
        result = stop.value
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    model = load_trained_model(last.checkpoint)
    inference = []
    for case_id in result.candidates[0].case_ids:
        image = cohort.load_case(case_id).image[0]
        start = time.perf_counter()
        predict(model, image)
        inference.append(time.perf_counter() - start)
    n = len(seconds)
    print(f"pipeline: {n} test cases of {shape}, {args.classes} classes, 3 raters, {args.threads} torch thread(s)")
    print(f"  per case (read + inference + metrics + reliability): median {np.median(seconds):.3f} s")
    print(f"  inference alone: median {np.median(inference):.3f} s "
          f"(metrics and the rest: {np.median(seconds) - np.median(inference):.3f} s)")
    print(f"  allocation peak over the evaluation: {peak / 2**20:.1f} MB; "
          f"{len(result.candidates[0].rows)} rows, {len(result.candidates[0].summary)} summarized metrics")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["pooled", "pipeline", "all"], default="all")
    parser.add_argument("--cases", type=int, default=None, help="cases (pooled: 100; pipeline: 10)")
    parser.add_argument("--shape", type=int, nargs="+", default=None,
                        help="spatial shape (pooled: 155 240 240; pipeline: 32 64 64)")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--bins", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--check", action="store_true", help="pooled: compare with the concatenation (small sizes)")
    args = parser.parse_args()
    if args.part in ("pooled", "all"):
        bench_pooled(argparse.Namespace(**{**vars(args), "cases": args.cases or 100,
                                           "shape": args.shape or [155, 240, 240]}))
    if args.part in ("pipeline", "all"):
        bench_pipeline(argparse.Namespace(**{**vars(args), "cases": args.cases or 10,
                                             "shape": args.shape or [32, 64, 64]}))


if __name__ == "__main__":
    main()
