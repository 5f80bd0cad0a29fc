"""Benchmark: streaming a cohort's evaluation through :func:`evaluate_checkpoints`.

Run ``python benchmarks/bench_evaluate_stream.py``. The pooled reliability over 100 large cases is
``python benchmarks/bench_evaluate.py --part pooled``.

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
    parser.add_argument("--cases", type=int, default=10, help="cases of the generated cohort")
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 64, 64], help="spatial shape (Z Y X)")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    bench_pipeline(parser.parse_args())


if __name__ == "__main__":
    main()
