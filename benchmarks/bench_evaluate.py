"""Benchmark: the evaluation of a study — study statistics, per-case metrics, pooled reliability.

Run ``python benchmarks/bench_evaluate.py`` (``--part bootstrap|metrics|pooled``; ``--cases`` /
``--metrics`` / ``--resamples`` / ``--repeats`` / ``--shape`` to change).

bootstrap
    :func:`bootstrap_ci` on 100 cases x 20 metrics with 10,000 resamples (median of 5 runs), complete
    and with 10 % missing values (NaN, left out per metric); against two baselines measured in the same
    run: fancy indexing of the same index draw (``values[idx].mean(axis=1)``, NaN-aware with
    ``nanmean``) and :func:`scipy.stats.bootstrap` (``method="percentile"``, vectorized, one call per
    metric). Also :func:`compare_candidates` for 4 candidates (Wilcoxon and paired bootstrap).
    Target: 10,000 resamples over 100 cases x 20 metrics <= 2 s on a 2-core CPU.

metrics
    :func:`evaluate_case` (all per-case metrics, surface distances included) on a 155x240x240, 4-class
    phantom with 4 raters (``--shape`` to change), median of 3 runs, against :func:`predict` with the
    default 3-D U-Net on the same volume on the CPU, in the same run.
    Target: metrics <= 25 % of inference time.

pooled
    The pooled reliability diagram of ``--cases`` cases of 155x240x240 with 4 classes (``--shape``),
    accumulated case by case (:class:`ReliabilityAccumulator`): each case's probabilities and labels
    are generated, counted and dropped. Run in a fresh subprocess for 10 and for 100 cases, each
    reporting its peak resident memory (``ru_maxrss``), so the two peaks show whether memory grows
    with the number of cases. That the pooled counts equal :func:`reliability_bins` on all voxels
    concatenated is asserted in ``tests/core/test_evaluation_pooled.py`` on small cases (the same
    :func:`pooled_reliability`), not here.
    Target: 100 such cases exact and within a fixed memory bound.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np

from napari_seg_uncertainty.core.evaluation import bootstrap_ci, compare_candidates


def median_time(func: Callable[[], object], repeats: int) -> tuple[float, list[float], object]:
    times = []
    result: object = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def _row(name: str, median: float, runs: list[float], note: str = "") -> None:
    print(f"{name:<38} {median:>9.3f}  {', '.join(f'{t:.3f}' for t in runs):<42} {note}")


def bench_bootstrap(args: argparse.Namespace) -> None:
    from scipy import stats

    rng = np.random.default_rng(0)
    values = rng.normal(0.8, 0.1, size=(args.cases, args.metrics))
    holes = values.copy()
    holes[rng.random(holes.shape) < 0.1] = np.nan
    b, n = args.resamples, args.cases
    print(f"bootstrap: {b:,} resamples x {n} cases x {args.metrics} metrics, median of {args.repeats} runs")
    print(f"{'method':<38} {'median s':>9}  {'runs (s)':<42} note")

    bootstrap_ci(values[:5, :2], num_resamples=10)  # warm-up (imports)
    ours, ours_runs, ci = median_time(lambda: bootstrap_ci(values, num_resamples=b), args.repeats)
    _row("bootstrap_ci (complete)", ours, ours_runs, f"target <= 2 s: {'met' if ours <= 2.0 else 'MISSED'}")
    nan_t, nan_runs, _ = median_time(lambda: bootstrap_ci(holes, num_resamples=b), args.repeats)
    _row("bootstrap_ci (10 % NaN)", nan_t, nan_runs, f"target <= 2 s: {'met' if nan_t <= 2.0 else 'MISSED'}")

    def fancy_indexing(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.random.default_rng(0).integers(0, n, (b, n))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means = np.nanmean(data[idx], axis=1)
        return tuple(np.nanpercentile(means, [2.5, 97.5], axis=0))

    base, base_runs, (low, high) = median_time(lambda: fancy_indexing(values), max(3, args.repeats // 2))
    same = np.allclose(low, ci.low, rtol=1e-12) and np.allclose(high, ci.high, rtol=1e-12)
    _row("baseline: values[idx] nanmean", base, base_runs, f"{base / ours:.1f}x slower; same CI: {same}")
    base_nan, base_nan_runs, _ = median_time(lambda: fancy_indexing(holes), max(3, args.repeats // 2))
    _row("baseline: values[idx] nanmean (NaN)", base_nan, base_nan_runs, f"{base_nan / nan_t:.1f}x slower")

    def scipy_bootstrap() -> None:
        for j in range(args.metrics):
            stats.bootstrap((values[:, j],), np.mean, method="percentile", n_resamples=b,
                            random_state=np.random.default_rng(j))

    sp, sp_runs, _ = median_time(scipy_bootstrap, max(3, args.repeats // 2))
    _row("scipy.stats.bootstrap (per metric)", sp, sp_runs, f"{sp / ours:.1f}x slower")

    table = {f"candidate {k}": values + 0.01 * k + rng.normal(0, 0.02, values.shape) for k in range(4)}
    directions = ["higher"] * args.metrics
    for test in ("wilcoxon", "bootstrap"):
        t, runs, _ = median_time(
            lambda test=test: compare_candidates(table, metric_directions=directions, test=test, num_resamples=b),
            max(3, args.repeats // 2),
        )
        _row(f"compare_candidates 4 cand. ({test})", t, runs, f"{3 * args.metrics} paired tests")


def bench_metrics(args: argparse.Namespace) -> None:
    """evaluate_case on one 4-class volume against a predict with the default 3-D U-Net on the same volume."""
    import tempfile

    from napari_seg_uncertainty.core.evaluation import evaluate_case
    from napari_seg_uncertainty.core.phantom import make_phantom_raters
    from napari_seg_uncertainty.core.training import TrainConfig, predict, train

    shape = tuple(args.shape)
    runs = 3
    image, rater_set = make_phantom_raters(3, shape=shape, num_raters=4, seed=0)
    raters = np.asarray(rater_set.labels)
    num_classes = 4
    spacing = tuple(rater_set.spacing) if rater_set.spacing is not None else None
    # a smooth prediction: the first rater's one-hot map blurred (sigma 1.5 voxels) and renormalized (not timed)
    from scipy import ndimage

    probs = np.empty((num_classes, *shape), dtype=np.float32)
    for c in range(num_classes):
        ndimage.gaussian_filter((raters[0] == c).astype(np.float32), sigma=1.5, output=probs[c])
    probs += 1e-3
    probs /= probs.sum(axis=0)
    print(f"metrics: evaluate_case on {'x'.join(map(str, shape))} x {num_classes} classes, {len(raters)} raters, "
          f"spacing {spacing}; median of {runs} runs, against predict with the default 3-D U-Net")
    print(f"{'method':<38} {'median s':>9}  {'runs (s)':<42} note")

    def metrics() -> object:
        return evaluate_case(probs, raters, spacing=spacing, num_classes=num_classes, tolerance_mm=1.0)

    small = (slice(None), slice(0, 16), slice(0, 48), slice(0, 48))
    evaluate_case(probs[small] / probs[small].sum(0), raters[small], num_classes=num_classes)  # warm-up (imports)
    ours, ours_runs, result = median_time(metrics, runs)

    with tempfile.TemporaryDirectory() as tmp:
        crop = (slice(None), *(slice((s - 32) // 2, (s - 32) // 2 + 32) for s in shape))
        config = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=1, val_fraction=0.0, device="cpu",
                             output_dir=tmp, spatial_dims=3)
        *_, last = train(config, (image[crop[1:]], raters[crop]))  # weights do not change the cost
        predict(last.checkpoint, image[crop[1:]])  # warm-up
        infer, infer_runs, _ = median_time(lambda: predict(last.checkpoint, image, device="cpu"), runs)
    _row("predict (default 3-D U-Net, CPU)", infer, infer_runs)
    ratio = ours / infer
    _row("evaluate_case", ours, ours_runs, f"{100 * ratio:.1f} % of inference; target <= 25 %: "
         f"{'met' if ratio <= 0.25 else 'MISSED'}")
    dice = result.per_class["dice"]
    print(f"  (check: Dice vs majority {np.round(dice[1:], 3).tolist()}, HD95 mm "
          f"{np.round(result.per_class['hd95'][1:], 2).tolist()}, {len(result.rows())} CSV rows)")


def synthetic_case(rng: np.random.Generator, shape: tuple[int, ...], classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities ``(classes, *shape)`` of random logits and labels that follow them 80 % of the time."""
    probs = rng.standard_normal((classes, *shape), dtype=np.float32) * 2.0
    probs -= probs.max(axis=0, keepdims=True)
    np.exp(probs, out=probs)
    probs /= probs.sum(axis=0, keepdims=True)
    labels = (probs.argmax(axis=0) + (rng.random(shape, dtype=np.float32) < 0.2)).astype(np.uint8) % classes
    return probs, labels


def pooled_reliability(cases: int, shape: tuple[int, ...], *, classes: int = 4, num_bins: int = 15,
                       seed: int = 0) -> tuple[object, float]:
    """Reliability bins pooled over ``cases`` generated cases, one in memory at a time; also the update time."""
    from napari_seg_uncertainty.core.calibration import ReliabilityAccumulator

    rng = np.random.default_rng(seed)
    accumulator = ReliabilityAccumulator(num_bins=num_bins)
    spent = 0.0
    for _ in range(cases):
        probs, labels = synthetic_case(rng, shape, classes)
        start = time.perf_counter()
        accumulator.update(probs, labels, target_kind="labels")
        spent += time.perf_counter() - start
        del probs, labels
    return accumulator.aggregate(), spent


def _pooled_worker(args: argparse.Namespace) -> None:
    """One pooled run in this process; prints one JSON line with its peak resident memory."""
    import json
    import resource

    shape = tuple(args.shape)
    start = time.perf_counter()
    bins, spent = pooled_reliability(args.cases, shape, num_bins=15)
    print(json.dumps({"cases": args.cases, "seconds": time.perf_counter() - start, "update_seconds": spent,
                      "voxels": int(bins.total), "ece": bins.expected_calibration_error,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def bench_pooled(args: argparse.Namespace) -> None:
    """Pooled reliability over 10 and over ``--cases`` cases, each in a fresh process: peak RSS and time."""
    import json
    import subprocess
    import sys

    shape = tuple(args.shape)
    voxels = int(np.prod(shape))
    case_mb = (4 * 4 + 1) * voxels / 2**20
    print(f"pooled: reliability over cases of {'x'.join(map(str, shape))} x 4 classes ({case_mb:.0f} MB of "
          "probabilities and labels per case), each run in a fresh process")
    print(f"{'cases':>6} {'seconds':>9} {'update s/case':>14} {'voxels':>14} {'peak RSS MB':>12}  note")
    peaks = {}
    for cases in sorted({min(10, args.cases), args.cases}):
        out = subprocess.run([sys.executable, __file__, "--part", "pooled-worker", "--cases", str(cases),
                              "--shape", *map(str, shape)], check=True, capture_output=True, text=True)
        run = json.loads(out.stdout.strip().splitlines()[-1])
        peaks[cases] = run["peak_rss_mb"]
        note = "all voxels counted" if run["voxels"] == cases * voxels else "VOXELS MISSING"
        print(f"{cases:>6} {run['seconds']:>9.1f} {run['update_seconds'] / cases:>14.3f} {run['voxels']:>14,} "
              f"{run['peak_rss_mb']:>12.0f}  {note}; pooled ECE {100 * run['ece']:.3f} %")
    few, many = min(peaks), max(peaks)
    print(f"  peak RSS {many} cases / {few} cases: {peaks[many] / peaks[few]:.3f} "
          f"({'fixed bound: met' if peaks[many] <= 1.05 * peaks[few] else 'GROWS'})")


PARTS: dict[str, Callable[[argparse.Namespace], None]] = {
    "bootstrap": bench_bootstrap, "metrics": bench_metrics, "pooled": bench_pooled,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=[*PARTS, "all", "pooled-worker"], default="all")
    parser.add_argument("--cases", type=int, default=100, help="bootstrap: cases; pooled: cases of the long run")
    parser.add_argument("--metrics", type=int, default=20)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shape", type=int, nargs=3, default=[155, 240, 240], help="metrics, pooled: volume (Z Y X)")
    args = parser.parse_args()
    if args.part == "pooled-worker":
        _pooled_worker(args)
        return
    for name, part in PARTS.items():
        if args.part in (name, "all"):
            part(args)


if __name__ == "__main__":
    main()
