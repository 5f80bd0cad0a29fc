"""Cost of training through the Train widget's thread worker, against calling the generator directly.

Both paths run the same :class:`~napari_seg_uncertainty.core.training.TrainConfig` on the 2-D demo
phantom: *direct* consumes :func:`~napari_seg_uncertainty.core.training.train` in a plain loop;
*worker* clicks Start in a :class:`~napari_seg_uncertainty.widgets.train.TrainWidget` of a real
(hidden) napari viewer and waits for the ``done`` record while the Qt event loop runs, with the
progress bar and the live plot updating. Runs alternate and the figures are medians of several
repeats. A 10 ms ``QTimer`` measures the longest event-loop stall while the worker trains.

Run (a virtual display is started when there is none)::

    python benchmarks/bench_training.py            # 5 repeats
    python benchmarks/bench_training.py --repeats 3 --steps 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def _ensure_display() -> object | None:
    if os.environ.get("DISPLAY"):
        return None
    from pyvirtualdisplay import Display

    display = Display(visible=False, size=(1280, 1024))
    display.start()
    return display


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=25, help="steps per epoch")
    parser.add_argument("--size", type=int, default=96, help="phantom side length")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for both paths (default 1: on a small shared machine two OpenMP "
        "threads spin against other processes and make timings erratic)",
    )
    args = parser.parse_args(argv)
    display = _ensure_display()
    try:
        return _run(args)
    finally:
        if display is not None:
            display.stop()


def _run(args: argparse.Namespace) -> int:
    import napari
    import numpy as np
    import torch
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    from napari_seg_uncertainty._sample_data import rater_layer_data
    from napari_seg_uncertainty.core.phantom import make_phantom_raters
    from napari_seg_uncertainty.core.training import TrainConfig, train
    from napari_seg_uncertainty.widgets.train import TrainWidget

    torch.set_num_threads(args.threads)
    # MONAI imported here first: the widget's warm-up thread and direct() must not import it at once
    import monai.inferers  # noqa: F401
    import monai.losses  # noqa: F401
    import monai.networks.nets  # noqa: F401

    viewer = napari.Viewer(show=False)
    image, raters = make_phantom_raters(2, shape=(args.size, args.size), seed=0)
    for data, kwargs, layer_type in rater_layer_data(image, raters, prefix="phantom "):
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._model_size.value = "small (16-32-64)"
    widget._epochs.value = args.epochs
    widget._steps.value = args.steps
    widget._batch.value = 4
    widget._patch.value = "64, 64"
    widget._device.value = "cpu"
    out = tempfile.mkdtemp(prefix="bench-training-")
    widget._output.value = out
    app = QApplication.instance()
    data = widget.collect_data()

    def direct() -> float:
        config = TrainConfig(
            **{**widget.build_config(out).to_dict(), "output_dir": tempfile.mkdtemp(dir=out)}
        )
        start = time.perf_counter()
        for _ in train(config, data):
            pass
        return time.perf_counter() - start

    def worker() -> tuple[float, float]:
        ticks: list[float] = []
        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
        done: list[float] = []
        loop = QEventLoop()  # block in Qt's C++ event loop, as napari does (no Python polling)

        def on_record(record: object) -> None:
            if record.kind == "done":
                done.append(time.perf_counter())
                loop.quit()

        timer.start()
        start = time.perf_counter()
        widget.start()
        widget.worker.yielded.connect(on_record)
        loop.exec()
        elapsed = done[0] - start
        while widget.state != "idle":  # let the prediction layers arrive before the next run
            app.processEvents()
            time.sleep(0.005)
        timer.stop()
        inside = [t for t in ticks if start <= t <= done[0]]
        stall = max(np.diff([start, *inside, done[0]])) if inside else elapsed
        return elapsed, 1000 * stall

    direct()  # warm-up (first-call kernel set-up)
    settle = time.perf_counter() + 1.0
    while time.perf_counter() < settle:  # draw the widget and the plot once before timing
        app.processEvents()
        time.sleep(0.005)
    direct_times, worker_times, stalls = [], [], []
    for _ in range(args.repeats):
        direct_times.append(direct())
        elapsed, stall = worker()
        worker_times.append(elapsed)
        stalls.append(stall)
    d, w = statistics.median(direct_times), statistics.median(worker_times)
    steps = args.epochs * args.steps
    print(
        f"training {steps} steps (batch 4, 64x64 patches, U-Net 16-32-64) on {args.size}x{args.size}, "
        f"torch threads {torch.get_num_threads()}, {args.repeats} repeats"
    )
    print(f"  direct generator : median {d:.3f} s  (runs {', '.join(f'{t:.2f}' for t in direct_times)})")
    print(f"  widget worker    : median {w:.3f} s  (runs {', '.join(f'{t:.2f}' for t in worker_times)})")
    print(f"  overhead         : {100 * (w / d - 1):+.1f} %  (ratio {w / d:.3f}; target <= 10 %)")
    print(
        f"  event-loop stall : max {max(stalls):.1f} ms over the runs "
        f"({', '.join(f'{s:.0f}' for s in stalls)} ms; target < 100 ms)"
    )
    widget.close()
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
