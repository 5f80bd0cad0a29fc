"""Benchmark: SSN sampling (LowRankLogits) against torch's LowRankMultivariateNormal on the same sizes.

Three figures, each the median of several repeats, with ours and the baseline interleaved so that load
from other processes on the (shared, 2-core) machine hits both alike:

1. one 512×512, 4-class, rank-10 sample (logits, and label map = argmax), target ≤ 16 ms;
2. slider redraw end-to-end in a napari viewer (class-scale slider moved → sample on screen recomputed →
   canvas repainted), target ≤ 33 ms; baselines: the same viewer update with a precomputed array
   (napari's own cost) and a full redraw with torch (sample + argmax + ``layer.data =``);
3. one 2-D slice of a 3-D 155×240×240, 4-class, rank-10 sample, target ≤ 16 ms; baseline: torch's
   full-volume sample (the only way torch gives a slice).

Run (a display is needed for figure 2; ``xvfb-run`` provides one on a headless machine)::

    xvfb-run -a python benchmarks/bench_ssn.py            # full sizes
    xvfb-run -a python benchmarks/bench_ssn.py --quick    # small sizes, smoke test
    python benchmarks/bench_ssn.py --no-viewer            # figures 1 and 3 only
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from napari_seg_uncertainty.core.ssn import LowRankLogits, synthetic_distribution


def _time_ms(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    function()
    return (time.perf_counter() - start) * 1e3


def _report(name: str, ours: list[float], baseline: list[float] | None, target: float | None) -> None:
    ours_ms = statistics.median(ours)
    line = f"{name:<48} ours {ours_ms:8.2f} ms"
    if baseline:
        base_ms = statistics.median(baseline)
        line += f" | baseline {base_ms:9.2f} ms | speed-up {base_ms / ours_ms:6.1f}x"
    if target is not None:
        line += f" | target <= {target:.0f} ms: {'met' if ours_ms <= target else 'NOT met'}"
    print(line + f"  (median of {len(ours)})", flush=True)


def _random_distribution(
    num_classes: int, spatial: tuple[int, ...], rank: int, *, layout: str, seed: int = 0
) -> tuple[LowRankLogits, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random parameters (fast to make at full size), plus the flat torch views of the same memory."""
    generator = torch.Generator().manual_seed(seed)
    size = num_classes * int(np.prod(spatial))
    mean = torch.randn((num_classes, *spatial), generator=generator)
    diag = torch.rand((num_classes, *spatial), generator=generator) * 0.2 + 0.05
    if layout == "flat":
        factor = torch.randn((size, rank), generator=generator) * 0.5
    else:
        factor = torch.randn((rank, num_classes, *spatial), generator=generator) * 0.5
    return LowRankLogits(mean, factor, diag), mean.reshape(size), factor, diag.reshape(size)


def bench_2d_sample(shape: tuple[int, int], num_classes: int, rank: int, repeats: int) -> None:
    dist = synthetic_distribution(shape, num_classes, rank=rank, seed=0)
    baseline = dist.to_torch_distribution()
    dist.sample_at(0, seed=0), baseline.sample()  # warm-up
    ours_logits, ours_labels, torch_logits, torch_labels = [], [], [], []
    for i in range(repeats):
        ours_logits.append(_time_ms(lambda i=i: dist.sample_at(i, seed=1)))
        torch_logits.append(_time_ms(baseline.sample))
        ours_labels.append(_time_ms(lambda i=i: dist.sample_labels_at(i, seed=2)))
        torch_labels.append(_time_ms(lambda: baseline.sample().reshape(num_classes, *shape).argmax(0)))
    size = f"{shape[0]}x{shape[1]}, {num_classes} classes, rank {rank}"
    _report(f"2-D sample, logits ({size})", ours_logits, torch_logits, 16.0)
    _report(f"2-D sample, label map ({size})", ours_labels, torch_labels, 16.0)


def _bench_3d_flat(
    shape: tuple[int, int, int], num_classes: int, rank: int, planes: np.ndarray, size: str
) -> None:
    dist, loc, factor, diag = _random_distribution(num_classes, shape, rank, layout="flat")
    # exactness check once: the slice is the plane of the full-volume sample
    full = dist.sample_at(0, seed=3)
    same = all(np.array_equal(dist.slice(int(z), seed=3), full[:, int(z)]) for z in planes[:5])
    print(f"3-D slice equals the full-volume sample's plane: {same}", flush=True)
    full = None
    baseline = torch.distributions.LowRankMultivariateNormal(loc, factor, diag)
    ours_slice, ours_labels, torch_full = [], [], []
    baseline_repeats = max(2, len(planes) // 10)
    for i, z in enumerate(planes):
        ours_slice.append(_time_ms(lambda z=z, i=i: dist.slice(int(z), seed=4, sample_index=i)))
        ours_labels.append(_time_ms(lambda z=z, i=i: dist.slice_labels(int(z), seed=5, sample_index=i)))
        if i < baseline_repeats:
            torch_full.append(_time_ms(lambda z=z: baseline.sample().reshape(num_classes, *shape)[:, int(z)]))
    _report(f"3-D slice, flat factor, logits ({size})", ours_slice, torch_full, 16.0)
    _report(f"3-D slice, flat factor, label map ({size})", ours_labels, torch_full, 16.0)
    full_volume = [_time_ms(lambda: dist.sample_labels_at(0, seed=6)) for _ in range(2)]
    _report("3-D full volume label map, plane by plane", full_volume, None, None)


def _bench_3d_stacked(
    shape: tuple[int, int, int], num_classes: int, rank: int, planes: np.ndarray, size: str
) -> None:
    dist, *_ = _random_distribution(num_classes, shape, rank, layout="stacked")
    times = [
        _time_ms(lambda z=z, i=i: dist.slice(int(z), seed=4, sample_index=i)) for i, z in enumerate(planes)
    ]
    _report(f"3-D slice, (R, C, *S) factor, logits ({size})", times, None, 16.0)


def bench_3d_slice(shape: tuple[int, int, int], num_classes: int, rank: int, repeats: int) -> None:
    size = f"{shape[0]}x{shape[1]}x{shape[2]}, {num_classes} classes, rank {rank}"
    planes = np.random.default_rng(0).integers(0, shape[0], size=repeats)
    _bench_3d_flat(shape, num_classes, rank, planes, size)  # each helper frees its arrays on return
    gc.collect()
    _bench_3d_stacked(shape, num_classes, rank, planes, size)
    gc.collect()


def bench_viewer_redraw(shape: tuple[int, int], num_classes: int, rank: int, repeats: int) -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_seg_uncertainty.widgets.ssn_samples import SAMPLES_LAYER, SSNSamplesWidget

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    widget = SSNSamplesWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._num_samples.value = 10
    dist = synthetic_distribution(shape, num_classes, rank=rank, seed=0)
    widget.set_distribution(dist)

    def settle() -> None:
        deadline = time.perf_counter() + 60
        while widget.busy and time.perf_counter() < deadline:
            app.processEvents()
            time.sleep(0.005)
        app.processEvents()

    settle()
    viewer.dims.set_current_step(0, 3)
    settle()
    slider = widget._class_sliders[1]
    values = np.linspace(-3.0, 3.0, 13)
    ours = []
    for i in range(repeats):
        value = float(values[i % len(values)])
        start = time.perf_counter()
        slider.value = value  # changed -> new distribution -> layer.refresh -> lazy plane recomputed
        app.processEvents()  # slicing done; the canvas repaints
        ours.append((time.perf_counter() - start) * 1e3)
    settle()
    first_draws = []
    for _ in range(max(3, repeats // 5)):
        start = time.perf_counter()
        widget._new_sample_button.changed.emit(True)  # a sample never drawn before: new random numbers
        app.processEvents()
        first_draws.append((time.perf_counter() - start) * 1e3)
        settle()
    # baselines: napari alone (precomputed array) and a full torch redraw
    frames = dist.sample_labels(4, seed=9)
    plain = viewer.add_labels(frames[0], name="baseline frame")
    viewer.layers[SAMPLES_LAYER].visible = False
    app.processEvents()
    napari_only, torch_redraw = [], []
    torch_dist = dist.to_torch_distribution()
    for i in range(repeats):
        start = time.perf_counter()
        plain.data = frames[i % 4]
        app.processEvents()
        napari_only.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        plain.data = torch_dist.sample().reshape(num_classes, *shape).argmax(0).to(torch.uint8).numpy()
        app.processEvents()
        torch_redraw.append((time.perf_counter() - start) * 1e3)
    size = f"{shape[0]}x{shape[1]}, {num_classes} classes, rank {rank}"
    _report(f"slider redraw in viewer ({size})", ours, torch_redraw, 33.0)
    _report("  'new sample' redraw in viewer (fresh noise)", first_draws, torch_redraw, 33.0)
    _report("  napari alone: layer.data = precomputed array", napari_only, None, None)
    viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per figure (default 40, quick 5)")
    parser.add_argument("--no-viewer", action="store_true", help="skip the napari redraw figure")
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.quick else 40)
    shape_2d = (128, 128) if args.quick else (512, 512)
    shape_3d = (20, 64, 64) if args.quick else (155, 240, 240)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} (other processes share the machine)",
        flush=True,
    )
    bench_2d_sample(shape_2d, 4, 10, repeats)
    if not args.no_viewer:
        bench_viewer_redraw(shape_2d, 4, 10, repeats)
    bench_3d_slice(shape_3d, 4, 10, repeats)


if __name__ == "__main__":
    main()
