"""Cohort benchmarks: header scan, loader throughput and data wait, peak memory against the cache budget.

Three parts, each on synthetic cohorts written by ``make_phantom_cohort`` into a temporary folder:

* **scan** — ``load_cohort`` on a CSV manifest of ``--scan-cases`` (1,000) small cases: header scan
  only (target ≤ 10 s), against the baseline of reading every file's voxels (``read_image``).
* **loader** — training patches per second from ``CohortPatchLoader`` (the loader ``train`` uses) with
  ``num_workers`` 0, 1 and 2 on 3-D cases on disk, every case read from disk (``cache_mb=0``) and
  with the cases cached; ratios against 0 workers. Then the share of each training step spent
  waiting for data (``TrainProgress.data_wait``) while ``train(config, cohort)`` trains the default
  2-D and 3-D U-Nets on the CPU (target ≤ 10 %; ``--device cuda`` for a GPU, busy ≈ 1 − data wait).
* **memory** — peak memory of a fresh process (and its loader workers) training on a cohort whose
  files on disk are 4× ``cache_mb`` (target: peak ≤ budget + 1 GiB). The process tree is sampled
  every 50 ms (PSS, so pages shared by the forked workers count once; RSS summed as well).

Figures are medians of ``--repeats`` runs. Run::

    python benchmarks/bench_cohort.py                       # everything (several minutes on 2 cores)
    python benchmarks/bench_cohort.py --quick               # smaller cohorts, fewer steps
    python benchmarks/bench_cohort.py --only scan --scan-cases 1000 --json scan.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

GIB = 2**30
MIB = 2**20


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _runs(values: list[float], unit: str = "s", digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values) + f" {unit}"


def _folder_bytes(folder: str | os.PathLike) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------
# (a) header scan
# ----------------------------------------------------------------------------------------------


def bench_scan(n_cases: int = 1000, *, repeats: int = 3, folder: str | None = None, baseline: bool = True,
               shape: tuple[int, ...] = (8, 16, 16)) -> dict[str, Any]:
    """Seconds to ``load_cohort`` a CSV manifest of ``n_cases`` small cases (header scan only).

    ``baseline``: also time reading every image and rater file in full (``read_image``), once.
    """
    from napari_seg_uncertainty.core.cohort import load_cohort
    from napari_seg_uncertainty.core.cohort.phantom import make_phantom_cohort
    from napari_seg_uncertainty.core.io import read_image

    with tempfile.TemporaryDirectory(prefix="bench-cohort-scan-", dir=folder) as root:
        t0 = time.perf_counter()
        source = make_phantom_cohort(n_cases, root, ndim=len(shape), shape=shape, layout="manifest", num_raters=3)
        generate = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            cohort = load_cohort(source)
            times.append(time.perf_counter() - t0)
        assert len(cohort) == n_cases, (len(cohort), n_cases)
        full = None
        if baseline:
            t0 = time.perf_counter()
            for info in cohort:
                for f in (*info.image_files, *info.rater_files):
                    read_image(f)
            full = time.perf_counter() - t0
        files = sum(len(i.image_files) + len(i.rater_files) for i in cohort)
        disk = _folder_bytes(root)
    return {"cases": n_cases, "files": files, "shape": list(shape), "disk_bytes": disk, "generate_s": generate,
            "scan_s": times, "scan_median_s": _median(times), "first_scan_s": times[0],
            "full_read_s": full, "target_s": 10.0}


def _print_scan(r: dict[str, Any]) -> None:
    print(f"(a) header scan: CSV manifest of {r['cases']} cases ({r['files']} files, {r['disk_bytes'] / MIB:.1f} MiB, "
          f"cases {tuple(r['shape'])}; written in {r['generate_s']:.1f} s)")
    print(f"    load_cohort          : median {r['scan_median_s']:.2f} s  (runs {_runs(r['scan_s'])}; "
          f"{1000 * r['scan_median_s'] / r['cases']:.2f} ms/case; target <= {r['target_s']:.0f} s) "
          f"{'OK' if r['scan_median_s'] <= r['target_s'] else 'OVER'}")
    if r["full_read_s"] is not None:
        print(f"    baseline, full read  : {r['full_read_s']:.2f} s  (read_image of every file; scan is "
              f"{r['full_read_s'] / r['scan_median_s']:.1f}x faster)")


# ----------------------------------------------------------------------------------------------
# (b) loader throughput and data wait
# ----------------------------------------------------------------------------------------------


def _config(**kwargs: Any) -> Any:
    from napari_seg_uncertainty.core.training import TrainConfig

    base = {"device": "cpu", "amp": False, "seed": 0}
    return TrainConfig(**{**base, **kwargs})


def bench_loader(source: str, *, workers: tuple[int, ...] = (0, 1, 2), steps: int = 20, repeats: int = 3,
                 cache_mb: tuple[float, ...] = (0.0, 1024.0), batch_size: int = 4) -> dict[str, Any]:
    """Patches per second from ``CohortPatchLoader`` (default target, soft targets cached on disk first)."""
    from napari_seg_uncertainty.core.cohort import load_cohort
    from napari_seg_uncertainty.core.training.data import resolve_patch_size_for_shapes
    from napari_seg_uncertainty.core.training.streaming import CohortPatchLoader, cohort_normalization
    from napari_seg_uncertainty.core.training.target_cache import TargetCache

    cohort = load_cohort(source)
    case_ids = cohort.case_ids
    results: dict[str, Any] = {"cases": len(cohort), "shape": list(cohort[0].shape), "steps": steps,
                               "batch_size": batch_size, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="bench-cohort-targets-") as cache_dir:
        for budget in cache_mb:
            for n_workers in workers:
                config = _config(num_workers=n_workers, cache_mb=budget, batch_size=batch_size,
                                 target_cache_dir=cache_dir)
                num_classes = cohort.num_classes()
                patch = resolve_patch_size_for_shapes(config, [i.shape for i in cohort], cohort.ndim,
                                                      math.prod(config.strides))
                normalization = cohort_normalization(cohort, case_ids, config)
                rates = []
                for repeat in range(repeats):
                    cache = TargetCache(cache_dir, config, num_classes=num_classes, target_spacing=None)
                    loader = CohortPatchLoader(cohort, case_ids, config=config, num_classes=num_classes,
                                               patch_size=patch, normalization=normalization, target_cache=cache,
                                               patches_per_step=batch_size)
                    try:
                        # warm-up: workers started, soft targets on disk (first run), and with a budget every
                        # case in each worker's cache (each worker caches the cases it is handed: a new
                        # loader's workers start empty)
                        warm = len(case_ids) * max(1, n_workers) if budget > 0 else len(case_ids) if repeat == 0 else 2
                        for _ in range(warm):
                            loader.sample(batch_size)
                        t0 = time.perf_counter()
                        for _ in range(steps):
                            loader.sample(batch_size)
                        rates.append(steps * batch_size / (time.perf_counter() - t0))
                    finally:
                        loader.close()
                results["runs"][f"cache{budget:g}_workers{n_workers}"] = {
                    "cache_mb": budget, "num_workers": n_workers, "patches_per_s": rates,
                    "median_patches_per_s": _median(rates), "patch_size": list(patch)}
    return results


def _print_loader(r: dict[str, Any]) -> None:
    runs = r["runs"]
    first = next(iter(runs.values()))
    print(f"(b) loader throughput: {r['cases']} 3-D cases of {tuple(r['shape'])} on disk, patches "
          f"{tuple(first['patch_size'])}, batches of {r['batch_size']}, {r['steps']} batches per run")
    for budget in sorted({v["cache_mb"] for v in runs.values()}):
        base = next(v for v in runs.values() if v["cache_mb"] == budget and v["num_workers"] == 0)
        label = "every case from disk (cache_mb=0)" if budget == 0 else f"cases cached (cache_mb={budget:g})"
        print(f"    {label}:")
        for v in runs.values():
            if v["cache_mb"] != budget:
                continue
            ratio = v["median_patches_per_s"] / base["median_patches_per_s"]
            print(f"      num_workers={v['num_workers']}: median {v['median_patches_per_s']:8.1f} patches/s "
                  f"(runs {_runs(v['patches_per_s'], '', 1).strip()}; {ratio:.2f}x of 0 workers)")


def bench_data_wait(source: str, *, steps: int = 30, warmup: int = 5, num_workers: int = 2,
                    out: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """``TrainProgress.data_wait`` while ``train`` trains the default U-Net for this cohort's ndim on ``device``."""
    import numpy as np

    from napari_seg_uncertainty.core.cohort import load_cohort
    from napari_seg_uncertainty.core.training import train

    cohort = load_cohort(source)
    with tempfile.TemporaryDirectory(prefix="bench-cohort-train-", dir=out) as folder:
        config = _config(epochs=1, steps_per_epoch=steps, val_fraction=0.0, test_fraction=0.0, device=device,
                         amp=device != "cpu", num_workers=num_workers,
                         target_cache_dir=str(Path(folder) / "targets"))
        waits, durations = [], []
        last = None
        t0 = time.perf_counter()
        for record in train(config, cohort):
            if record.kind != "step":
                continue
            now = time.perf_counter()
            if last is not None and record.global_step > warmup:
                waits.append(float(record.data_wait))
                durations.append(now - last)
            last = now
        total = time.perf_counter() - t0
    weighted = float(np.dot(waits, durations) / np.sum(durations)) if durations else float("nan")
    return {"ndim": cohort.ndim, "device": device, "cases": len(cohort), "shape": list(cohort[0].shape),
            "steps": steps,
            "warmup_steps": warmup, "num_workers": num_workers, "data_wait": waits,
            "median_data_wait": _median(waits), "time_weighted_data_wait": weighted,
            "median_step_s": _median(durations), "total_s": total, "target": 0.10}


def _print_data_wait(r: dict[str, Any]) -> None:
    ok = "OK" if r["time_weighted_data_wait"] <= r["target"] else "OVER"
    print(f"    {r['ndim']}-D default U-Net on {r['device']}, {r['cases']} cases of {tuple(r['shape'])}, num_workers="
          f"{r['num_workers']}: waiting for data {100 * r['time_weighted_data_wait']:.1f} % of step time "
          f"(median per step {100 * r['median_data_wait']:.1f} %, step {1000 * r['median_step_s']:.0f} ms, "
          f"steps {r['warmup_steps'] + 1}-{r['steps']}; target <= {100 * r['target']:.0f} %) {ok}")


# ----------------------------------------------------------------------------------------------
# (c) peak memory against the cache budget, in a fresh process
# ----------------------------------------------------------------------------------------------


def _tree_memory() -> tuple[int, int]:
    """PSS and RSS summed over this process and its children (loader workers), bytes."""
    import psutil

    me = psutil.Process()
    pss = rss = 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        pss += getattr(info, "pss", info.rss)
        rss += info.rss
    return pss, rss


def memory_child(source: str, cache_mb: float, steps: int, num_workers: int, folder: str) -> None:
    """Train on ``source`` with ``cache_mb`` in this fresh process; print the peak memory as JSON."""
    import torch

    from napari_seg_uncertainty.core.cohort import load_cohort
    from napari_seg_uncertainty.core.training import train

    torch.set_num_threads(1)
    cohort = load_cohort(source)
    # one patch per case: each step reads batch_size cases, so a pass over the cohort takes few steps
    config = _config(epochs=1, steps_per_epoch=steps, val_fraction=0.0, test_fraction=0.0, cache_mb=cache_mb,
                     num_workers=num_workers, patches_per_case=1, target_cache_dir=str(Path(folder) / "targets"))
    start_pss, start_rss = _tree_memory()
    peak = {"pss": start_pss, "rss": start_rss}
    running = threading.Event()
    running.set()

    def sample() -> None:
        while running.is_set():
            pss, rss = _tree_memory()
            peak["pss"], peak["rss"] = max(peak["pss"], pss), max(peak["rss"], rss)
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    cases_seen = 0
    try:
        for record in train(config, cohort):
            cases_seen = record.cases_seen or cases_seen
    finally:
        running.clear()
        thread.join()
    hwm = 0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    except OSError:
        pass
    print(json.dumps({"start_pss": start_pss, "start_rss": start_rss, "peak_pss": peak["pss"],
                      "peak_rss": peak["rss"], "main_hwm": hwm, "cases_seen": cases_seen,
                      "cohort_bytes": sum(i.nbytes for i in cohort), "cases": len(cohort)}))


def bench_memory(*, cache_mb: float = 64.0, factor: float = 4.0, shape: tuple[int, ...] = (48, 128, 128),
                 num_workers: int = 2, passes: float = 1.2, out: str | None = None) -> dict[str, Any]:
    """Write a cohort of ``factor × cache_mb`` on disk, train over it ``passes`` times in a subprocess."""
    from napari_seg_uncertainty.core.cohort.phantom import make_phantom_cohort

    with tempfile.TemporaryDirectory(prefix="bench-cohort-memory-", dir=out) as root:
        probe = make_phantom_cohort(1, Path(root) / "probe", shape=shape)
        per_case = _folder_bytes(probe)
        n_cases = max(2, int(factor * cache_mb * MIB / per_case) + 1)
        source = make_phantom_cohort(n_cases, Path(root) / "cohort", shape=shape, layout="manifest", split=False)
        disk = _folder_bytes(Path(root) / "cohort")
        steps = max(1, math.ceil(passes * n_cases / 4))  # four cases per step (batch 4, 1 patch per case)
        command = [sys.executable, os.path.abspath(__file__), "--memory-child", source, str(cache_mb), str(steps),
                   str(num_workers), root]
        t0 = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - t0
        if completed.returncode != 0:
            raise RuntimeError(f"the memory child failed:\n{completed.stderr[-4000:]}")
        child = json.loads(completed.stdout.strip().splitlines()[-1])
    budget = cache_mb * MIB
    return {**child, "cache_mb": cache_mb, "disk_bytes": disk, "disk_over_budget": disk / budget, "steps": steps,
            "num_workers": num_workers, "shape": list(shape), "elapsed_s": elapsed, "limit_bytes": budget + GIB}


def _print_memory(r: dict[str, Any]) -> None:
    ok = "OK" if r["peak_pss"] <= r["limit_bytes"] else "OVER"
    print(f"(c) peak memory: cache_mb={r['cache_mb']:g}, cohort of {r['cases']} cases {tuple(r['shape'])}: "
          f"{r['disk_bytes'] / MIB:.0f} MiB on disk ({r['disk_over_budget']:.1f}x the budget), "
          f"{r['cohort_bytes'] / MIB:.0f} MiB in memory; {r['steps']} steps, {r['cases_seen']} cases read, "
          f"num_workers={r['num_workers']} ({r['elapsed_s']:.0f} s)")
    print(f"    process tree at start (imports, cohort scanned): PSS {r['start_pss'] / MIB:.0f} MiB")
    print(f"    peak PSS of the tree {r['peak_pss'] / MIB:.0f} MiB (RSS summed {r['peak_rss'] / MIB:.0f} MiB; "
          f"main process VmHWM {r['main_hwm'] / MIB:.0f} MiB); limit budget + 1 GiB = "
          f"{r['limit_bytes'] / MIB:.0f} MiB {ok}")


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("scan", "loader", "wait", "memory"), action="append",
                        help="run only these parts (repeatable); default all")
    parser.add_argument("--quick", action="store_true", help="smaller cohorts and fewer steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scan-cases", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=None, help="loader batches / training steps per run")
    parser.add_argument("--cache-mb", type=float, default=None, help="budget of the memory part (default 64)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the training process")
    parser.add_argument("--device", default="cpu", help="device of the data-wait part (e.g. cuda; default cpu)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--memory-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        source, cache_mb, steps, workers, folder = args.memory_child
        memory_child(source, float(cache_mb), int(steps), int(workers), folder)
        return 0
    import torch

    from napari_seg_uncertainty.core.cohort.phantom import make_phantom_cohort

    if args.threads:
        torch.set_num_threads(args.threads)
    parts = args.only or ["scan", "loader", "wait", "memory"]
    quick = args.quick
    steps = args.steps or (10 if quick else 30)
    report: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "quick": quick}
    print(f"cohort benchmarks: torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
          f"{args.repeats} repeats{' (quick)' if quick else ''}")
    if "scan" in parts:
        report["scan"] = bench_scan(args.scan_cases, repeats=args.repeats)
        _print_scan(report["scan"])
    if "loader" in parts or "wait" in parts:
        with tempfile.TemporaryDirectory(prefix="bench-cohort-") as root:
            if "loader" in parts:
                source = make_phantom_cohort(8 if quick else 16, Path(root) / "loader",
                                             shape=(32, 64, 64) if quick else (48, 128, 128))
                report["loader"] = bench_loader(source, steps=steps, repeats=args.repeats)
                _print_loader(report["loader"])
            if "wait" in parts:
                print("(b) data wait while training (TrainProgress.data_wait):")
                report["data_wait"] = []
                for ndim, shape in ((2, (128, 128) if quick else (192, 192)),
                                    (3, (32, 64, 64) if quick else (48, 128, 128))):
                    source = make_phantom_cohort(8 if quick else 16, Path(root) / f"wait{ndim}", ndim=ndim,
                                                 shape=shape)
                    result = bench_data_wait(source, steps=steps, warmup=min(5, steps // 3), device=args.device)
                    report["data_wait"].append(result)
                    _print_data_wait(result)
    if "memory" in parts:
        cache_mb = args.cache_mb or (16.0 if quick else 64.0)
        report["memory"] = bench_memory(cache_mb=cache_mb, shape=(32, 64, 64) if quick else (48, 128, 128))
        _print_memory(report["memory"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
