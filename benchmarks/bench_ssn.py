"""Benchmark: SSN sampling (LowRankLogits) against torch's LowRankMultivariateNormal on the same sizes.

Three figures, each the median of several repeats, with ours and the baseline interleaved so that load
from other processes on the (shared, 2-core) machine hits both alike:

1. one 512×512, 4-class, rank-10 sample (logits, and label map = argmax), target ≤ 16 ms;
2. slider redraw end-to-end in a napari viewer (class-scale slider moved → sample on screen recomputed →
   canvas repainted), target ≤ 33 ms; baselines: the same viewer update with a precomputed array
   (napari's own cost) and a full redraw with torch (sample + argmax + ``layer.data =``);
3. one 2-D slice of a 3-D 155×240×240, 4-class, rank-10 sample, target ≤ 16 ms; baseline: torch's
   full-volume sample (the only way torch gives a slice);
4. the *SSN samples* widget in 3-D display on a 155×240×240, 4-class, rank-10 case (spacing 3×0.8×0.8,
   origin (10, −40, −50)): switching to 3-D (target ≤ 1 s), a class-scale or temperature slider move
   until the whole new sample is on screen (target ≤ 100 ms), and the longest event-loop stall of each
   (a 20 ms QTimer probe, target ≤ 100 ms); plus the parts: the cached-noise recomputation alone
   (scaling + argmax) against a full recomputation plane by plane, and napari's own refresh of a
   155×240×240 Labels volume;
5. the widget on a generated 300×512×512 CT case with a 2-D SSN (default architecture, rank 10), planes
   computed as they are shown: first view of 50 planes (target ≤ 1 s), a cached plane (≤ 16 ms), slider
   moves and "new sample", the longest event-loop stall of each (≤ 100 ms) and the peak RSS (≤ 4 GB).

Run (a display is needed for figure 2; ``xvfb-run`` provides one on a headless machine)::

    xvfb-run -a python benchmarks/bench_ssn.py            # full sizes
    xvfb-run -a python benchmarks/bench_ssn.py --quick    # small sizes, smoke test
    python benchmarks/bench_ssn.py --no-viewer            # figures 1 and 3 only
    xvfb-run -a python benchmarks/bench_ssn.py --only-3d-slider   # figure 4 only
    xvfb-run -a python benchmarks/bench_ssn.py --only-redraw      # figure 2 only
    xvfb-run -a python benchmarks/memcap.py 5 -- python benchmarks/bench_ssn.py --ct   # figure 5 only (CT)
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
    dist = synthetic_distribution(shape, num_classes=num_classes, rank=rank, seed=0)
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
    _report(f"3-D slice, (K, C, *S) factor, logits ({size})", times, None, 16.0)


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
    dist = synthetic_distribution(shape, num_classes=num_classes, rank=rank, seed=0)
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
    # "New sample": a sample never shown before. The widget draws the next one's random numbers ahead, in a
    # worker, once the previous redraw is painted; interleaved with the same click without that (the noise
    # drawn on the GUI thread at the click, as before), so that load from other processes hits both alike.
    first_draws, not_ahead = [], []
    for i in range(max(6, repeats // 2)):
        ahead = i % 2 == 0
        if not ahead:  # skip the sample whose noise is drawn already
            widget._next_sample_index += 1
        start = time.perf_counter()
        widget._new_sample_button.changed.emit(True)  # a sample never drawn before: new random numbers
        app.processEvents()
        (first_draws if ahead else not_ahead).append((time.perf_counter() - start) * 1e3)
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
    _report("  'new sample' redraw, noise drawn at the click", not_ahead, None, 33.0)
    _report("  napari alone: layer.data = precomputed array", napari_only, None, None)
    viewer.close()


def _blob_distribution(shape: tuple[int, int, int], num_classes: int, rank: int) -> LowRankLogits:
    """Nested shells around the centre with random low-rank noise: made in seconds at full size."""
    generator = torch.Generator().manual_seed(0)
    axes = [torch.arange(s, dtype=torch.float32) - (s - 1) / 2 for s in shape]
    grids = torch.meshgrid(*axes, indexing="ij")
    radius = torch.sqrt(sum(g**2 for g in grids))
    outer = 0.4 * min(shape[1:])
    mean = torch.empty((num_classes, *shape))
    for k in range(num_classes):
        centre = outer * (1 - (k + 0.5) / num_classes) if k else outer * 1.3
        mean[k] = -((radius - centre).abs() / (outer / num_classes))
    factor = torch.randn((rank, num_classes, *shape), generator=generator) * 0.3
    diag = torch.full((num_classes, *shape), 0.05)
    return LowRankLogits(mean, factor, diag, class_names=[f"class {k}" for k in range(num_classes)])


class _StallProbe:
    """A 20 ms QTimer whose ticks show how long the event loop was blocked."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(20)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.timer.start()

    def longest(self, start: float, end: float) -> float:
        inside = [t for t in self.ticks if start <= t <= end]
        return 1e3 * max(np.diff([start, *inside, end])) if len(inside) else 1e3 * (end - start)


def _wait(app: Any, condition: Callable[[], bool], timeout: float = 120.0) -> float:
    """Run the event loop until ``condition()``; the time it became true."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    found: list[float] = []

    def check() -> None:
        if condition():
            found.append(time.perf_counter())
            loop.quit()

    poll = QTimer()
    poll.setInterval(2)
    poll.timeout.connect(check)
    poll.start()
    QTimer.singleShot(int(timeout * 1e3), loop.quit)
    loop.exec()
    poll.stop()
    if not found:
        raise TimeoutError("the viewer did not finish in time")
    return found[0]


def bench_3d_slider(shape: tuple[int, int, int], num_classes: int, rank: int, repeats: int) -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_seg_uncertainty.core.geometry import Geometry
    from napari_seg_uncertainty.core.ssn import SampleLabelStack
    from napari_seg_uncertainty.widgets.ssn_samples import SAMPLES_LAYER, SSNSamplesWidget

    size = f"{shape[0]}x{shape[1]}x{shape[2]}, {num_classes} classes, rank {rank}"
    dist = _blob_distribution(shape, num_classes, rank)

    # the parts, outside the viewer: cached-noise redraw vs plane-by-plane recomputation
    stack = SampleLabelStack(dist, range(2), seed=0)
    stack.sample(0)  # draws and keeps the noise
    cached, full = [], []
    for i in range(repeats):
        moved = dist.with_class_scales([1.0, 1.0 + 0.1 * (i % 7), -1.0, 1.0]).with_temperature(0.9)
        stack.set_distribution(moved)
        cached.append(_time_ms(lambda: stack.sample(0)))
        if i < 3:
            full.append(_time_ms(lambda moved=moved: moved.sample_labels_at(0, seed=0)))
    _report(f"3-D slider, whole sample recomputed ({size})", cached, full, 100.0)
    stack = None
    gc.collect()

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    probe = _StallProbe()
    image = viewer.add_image(
        np.zeros(shape, np.float32), name="image", scale=(3.0, 0.8, 0.8), translate=(10.0, -40.0, -50.0)
    )
    widget = SSNSamplesWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SSN samples")
    widget.set_distribution(dist, geometry=Geometry.of(image))
    _wait(app, lambda: widget.stack is not None and not widget.busy)
    layer = viewer.layers[SAMPLES_LAYER]
    shown: list[float] = []
    layer.events.set_data.connect(lambda _e=None: shown.append(time.perf_counter()))

    def on_screen() -> bool:
        entry = widget.current_entry()
        return (
            not widget._volume_running
            and widget.stack.cached_sample(entry) is not None
            and layer.data.stack.cached_sample(entry) is not None
            and np.shares_memory(np.asarray(layer._slice.image.raw), widget.stack.cached_sample(entry))
        )

    def timed(action: Callable[[], None]) -> tuple[float, float]:
        _wait(app, lambda: True)
        start = time.perf_counter()
        action()
        end = _wait(app, on_screen)
        app.processEvents()
        end = max([end, *(t for t in shown[-1:] if t >= start)])
        return (end - start) * 1e3, probe.longest(start, time.perf_counter())

    first_switch, first_stall = timed(lambda: setattr(viewer.dims, "ndisplay", 3))
    viewer.dims.ndisplay = 2
    _wait(app, lambda: not widget.busy)
    warm_switch, warm_stall = timed(lambda: setattr(viewer.dims, "ndisplay", 3))
    viewer.dims.ndisplay = 2
    _wait(app, lambda: not widget.busy)
    widget._new_sample_button.changed.emit(True)  # a sample never drawn: its noise is not cached
    _wait(app, lambda: not widget._volume_running)
    cold_switch, cold_stall = timed(lambda: setattr(viewer.dims, "ndisplay", 3))
    _report("  first switch to 3-D in this viewer, sample ready (ms)", [first_switch], None, 1000.0)
    _report("    longest event-loop stall meanwhile", [first_stall], None, 100.0)
    _report("  switch to 3-D again, sample ready (ms)", [warm_switch], None, 1000.0)
    _report("    longest event-loop stall meanwhile", [warm_stall], None, 100.0)
    _report("  switch to 3-D, sample never drawn: until it is on screen (ms)", [cold_switch], None, 1000.0)
    _report("    longest event-loop stall meanwhile", [cold_stall], None, 100.0)

    # what runs on the GUI thread per move: the widget's slider handler, and napari's refresh (slicing and
    # texture data, then the repaint) when the worker's result arrives
    handler, napari_refresh = [], []
    original_refresh = widget._refresh_samples_layer

    def timed_refresh(**kwargs: Any) -> None:
        start = time.perf_counter()
        original_refresh(**kwargs)
        napari_refresh.append((time.perf_counter() - start) * 1e3)

    widget._refresh_samples_layer = timed_refresh
    moves, stalls = [], []
    sliders = [widget._class_sliders[1], widget._temperature, widget._class_sliders[2]]
    for i in range(repeats):
        slider = sliders[i % len(sliders)]
        value = float(np.round(0.5 + (i % 9) * 0.25 + (0.05 if i >= 9 else 0.0), 2))

        def move(slider: Any = slider, value: float = value) -> None:
            start = time.perf_counter()
            slider.value = value
            handler.append((time.perf_counter() - start) * 1e3)

        latency, stall = timed(move)
        moves.append(latency)
        stalls.append(stall)
    widget._refresh_samples_layer = original_refresh
    _report(f"3-D slider move until the whole sample is on screen ({size})", moves, None, 100.0)
    print(f"    first move {moves[0]:.1f} ms; all: {', '.join(f'{m:.0f}' for m in moves)}")
    _report("  longest event-loop stall per move (repaint included)", stalls, None, 100.0)
    _report("  GUI thread: the widget's slider handler", handler, None, 100.0)
    _report("  GUI thread: napari's layer refresh (slicing, set_data)", napari_refresh, None, None)
    paint = []
    for _ in range(min(repeats, 5)):
        viewer.camera.angles = tuple(a + 5 for a in viewer.camera.angles)
        start = time.perf_counter()
        app.processEvents()
        paint.append((time.perf_counter() - start) * 1e3)
    _report("  napari alone: one repaint of the 3-D canvas (camera turned)", paint, None, None)
    refresh = []
    for _ in range(min(repeats, 5)):
        start = time.perf_counter()
        layer.refresh(extent=False)
        app.processEvents()
        refresh.append((time.perf_counter() - start) * 1e3)
    _report("  napari alone: refresh + repaint of the 3-D Labels volume", refresh, None, None)
    probe.timer.stop()
    _wait(app, lambda: not widget.busy)
    viewer.close()


def _trained_2d_ssn(case: Any, output_dir: str) -> str:
    """A 2-D SSN with the default architecture (rank 10), trained for a few steps on the case's planes."""
    from napari_seg_uncertainty.core.training import TrainConfig, train

    middle = slice(case.image.shape[0] // 2 - 2, case.image.shape[0] // 2 + 2)
    config = TrainConfig(head="ssn", loss="ssn", ssn_rank=10, ssn_samples=4, target="random_rater", spatial_dims=2,
                         epochs=1, steps_per_epoch=2, batch_size=2, val_fraction=0.0, device="cpu",
                         output_dir=output_dir)
    *_, last = train(config, (case.image[middle], case.raters[:, middle]))
    return str(last.checkpoint)


def bench_ct_lazy(shape: tuple[int, int, int], repeats: int) -> None:
    """Figure 5: the widget on a CT case with a 2-D SSN, planes computed as they are shown (lazy)."""
    import resource
    import sys
    import tempfile

    import napari
    from qtpy.QtWidgets import QApplication

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from ct_case import make_ct_case

    from napari_seg_uncertainty.widgets.ssn_samples import SAMPLES_LAYER, SOURCE_CHECKPOINT, SSNSamplesWidget

    case = make_ct_case(shape)
    checkpoint = _trained_2d_ssn(case, tempfile.mkdtemp())
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    probe = _StallProbe()
    viewer.add_image(case.image, name="CT", scale=case.spacing, translate=case.origin)
    widget = SSNSamplesWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SSN samples")
    start = time.perf_counter()
    widget.load(source=SOURCE_CHECKPOINT, path=checkpoint, image="CT", num_samples=10)
    _wait(app, lambda: widget.stack is not None and not widget.busy)
    loaded = (time.perf_counter() - start) * 1e3
    layer = viewer.layers[SAMPLES_LAYER]
    depth = shape[0]

    def timed(action: Callable[[], None], ready: Callable[[], bool]) -> tuple[float, float]:
        _wait(app, lambda: True)
        begin = time.perf_counter()
        action()
        end = _wait(app, ready)
        app.processEvents()
        return (end - begin) * 1e3, probe.longest(begin, time.perf_counter())

    first, first_stalls = [], []
    planes = np.random.default_rng(1).choice(depth, size=min(depth, max(repeats, 50)), replace=False)

    def on_screen(z: int) -> bool:
        """The plane of the sample on screen is shown (not the placeholder)."""
        if z not in widget.distribution.cached_planes or widget._plane_running:
            return False
        return np.array_equal(np.asarray(layer._slice.image.raw), widget.stack[widget.current_entry(), z])

    for z in planes:  # browse 50 planes never shown
        latency, stall = timed(lambda z=z: viewer.dims.set_current_step(1, int(z)), lambda z=z: on_screen(int(z)))
        first.append(latency)
        first_stalls.append(stall)
        _wait(app, lambda: not widget.busy)
    # steps between two cached planes, interleaved with napari alone on the same view: the SSN layers hidden and
    # two precomputed numpy Labels layers of the same grid shown in their place
    mean_layer = viewer.layers["SSN mean prediction"]
    plain = [viewer.add_labels(np.zeros(shape, np.uint8), name=f"plain {k}", scale=case.spacing,
                               translate=case.origin, visible=False) for k in range(2)]
    cached, cached_stalls, napari_three = [], [], []
    for i in range(2 * max(5, repeats)):
        ours = i % 2 == 0
        for extra in plain:
            extra.visible = not ours
        layer.visible = mean_layer.visible = ours
        _wait(app, lambda: not widget.busy)
        z = int(planes[-1 - i % 2])  # the last two planes shown (both in the cache), alternately: a step each time
        latency, stall = timed(lambda z=z: viewer.dims.set_current_step(1, z), lambda: True)
        (cached if ours else napari_three).append(latency)
        if ours:
            cached_stalls.append(stall)
    for extra in plain:
        viewer.layers.remove(extra)
    plain = None
    layer.visible = mean_layer.visible = True
    _wait(app, lambda: not widget.busy)
    moves, move_stalls, draws = [], [], []
    for i in range(min(repeats, 10)):
        value = float(np.round(0.5 + 0.25 * (i % 6), 2))
        latency, stall = timed(lambda value=value: setattr(widget._class_sliders[1], "value", value),
                               lambda: True)  # the plane on screen is redrawn before the handler returns
        moves.append(latency)
        move_stalls.append(stall)
        _wait(app, lambda: not widget.busy)
        begin = time.perf_counter()
        widget._new_sample_button.changed.emit(True)
        app.processEvents()
        draws.append((time.perf_counter() - begin) * 1e3)
        _wait(app, lambda: not widget.busy)
    # the core part of a first view, for comparison: the network on one plane (ssn-core's SlicePredictor)
    source = widget.distribution.source
    network = [_time_ms(lambda z=z: source.plane_parameters(int(z))) for z in planes[:5]]
    size = f"{shape[0]}x{shape[1]}x{shape[2]}, 2-D SSN rank 10, {case.num_classes} classes"
    _report(f"CT lazy: load checkpoint until samples layer idle ({size})", [loaded], None, None)
    _report("  first view of a plane (network on it, in a worker)", first, None, 1000.0)
    _report("    core alone: the network on one plane (plane_parameters)", network, None, None)
    _report("    longest event-loop stall meanwhile", first_stalls, None, 100.0)
    print(f"    worst stall over {len(first)} first views: {max(first_stalls):.0f} ms")
    _report("  browsing back to a cached plane", cached, None, 16.0)
    _report("    longest event-loop stall meanwhile", cached_stalls, None, 100.0)
    _report("    napari alone, interleaved: image + two numpy Labels layers", napari_three, None, None)
    _report("  class slider move, plane on screen redrawn", moves, None, 33.0)
    _report("    longest event-loop stall meanwhile", move_stalls, None, 100.0)
    _report("  'new sample' redraw of a 512² plane", draws, None, 33.0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"  peak RSS of the process (image {case.image.nbytes / 2**30:.2f} GiB included): {peak:.2f} GiB "
          f"(target <= 4 GiB); planes computed: {widget.distribution.planes_computed} for {len(planes)} shown",
          flush=True)
    probe.timer.stop()
    viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per figure (default 40, quick 5)")
    parser.add_argument("--no-viewer", action="store_true", help="skip the napari figures (2 and 4)")
    parser.add_argument("--only-3d-slider", action="store_true", help="figure 4 only")
    parser.add_argument("--only-redraw", action="store_true", help="figure 2 only (slider and 'new sample')")
    parser.add_argument("--ct", action="store_true", help="figure 5 only: the widget on a CT case, lazy 2-D SSN")
    parser.add_argument("--ct-shape", type=int, nargs=3, default=(300, 512, 512), help="CT shape (Z Y X)")
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.quick else 40)
    shape_2d = (128, 128) if args.quick else (512, 512)
    shape_3d = (20, 64, 64) if args.quick else (155, 240, 240)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} (other processes share the machine)",
        flush=True,
    )
    if args.ct:
        bench_ct_lazy(tuple(args.ct_shape), repeats)
        return
    if args.only_redraw:
        bench_viewer_redraw(shape_2d, 4, 10, repeats)
        return
    if args.only_3d_slider:
        bench_3d_slider(shape_3d, 4, 10, min(repeats, 15))
        return
    bench_2d_sample(shape_2d, 4, 10, repeats)
    if not args.no_viewer:
        bench_viewer_redraw(shape_2d, 4, 10, repeats)
    bench_3d_slice(shape_3d, 4, 10, repeats)
    gc.collect()
    if not args.no_viewer:
        bench_3d_slider(shape_3d, 4, 10, min(repeats, 15))


if __name__ == "__main__":
    main()
