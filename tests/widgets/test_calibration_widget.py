"""The "Calibration" dock widget, driven in a real viewer: numbers, themed plots, live updates, export."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_seg_uncertainty.widgets import _common
from napari_seg_uncertainty.widgets import calibration as calibration_module
from napari_seg_uncertainty.widgets.calibration import ENTROPY_SCATTER, RELIABILITY, CalibrationWidget

SHAPE = (40, 48)


@pytest.fixture
def errors(monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(_common, "show_error", messages.append)
    monkeypatch.setattr(calibration_module, "show_error", messages.append)
    return messages


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=0))
    return (e / e.sum(axis=0)).astype(np.float32)


@pytest.fixture
def case():
    """Three raters of a disc with uncertain borders and two models: a sharp and a smooth one."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    radius = np.hypot(yy - 20, xx - 24)
    raters = np.stack([(radius < r).astype(np.int32) for r in (9.0, 10.5, 12.0)])
    raters[1][(radius < 4)] = 2
    signed = 10.5 - radius
    logits = np.stack([-signed, signed, np.where(radius < 4, 2.0, -4.0)]) + rng.normal(
        scale=0.5, size=(3, *SHAPE)
    )
    return {
        "raters": raters,
        "sharp": _softmax(4 * logits),
        "smooth": _softmax(0.7 * logits),
    }


def _setup(viewer, case, *, target=("rater 1",)):
    for name in ("sharp", "smooth"):
        viewer.add_image(case[name], name=name, scale=(1, 0.8, 0.8))
    for i, r in enumerate(case["raters"]):
        viewer.add_labels(r, name=f"rater {i + 1}", scale=(0.8, 0.8))
    widget = CalibrationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._probabilities.value = ["sharp", "smooth"]
    widget._target.value = list(target)
    return widget


def _independent_bins(probs, target, n_bins=10):
    """Per-bin count, accuracy, confidence and ECE with np.digitize-style right-closed bins."""
    conf = probs.max(axis=0).ravel().astype(np.float64)
    pred = probs.argmax(axis=0).ravel()
    if target.ndim == probs.ndim - 1:
        acc = (pred == target.ravel()).astype(np.float64)
    else:  # rater stack: accuracy = share of raters agreeing with the prediction
        acc = np.mean([pred == r.ravel() for r in target], axis=0)
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    acc_bin = np.array([acc[idx == b].mean() if count[b] else np.nan for b in range(n_bins)])
    conf_bin = np.array([conf[idx == b].mean() if count[b] else np.nan for b in range(n_bins)])
    filled = count > 0
    ece = float(np.sum(count[filled] / count.sum() * np.abs(acc_bin[filled] - conf_bin[filled])))
    return count, acc_bin, conf_bin, ece


def _canvas_pixels(widget) -> np.ndarray:
    widget.plot.canvas.draw()
    return np.asarray(widget.plot.canvas.buffer_rgba()).copy()


def _is_drawn(pixels: np.ndarray) -> bool:
    """Not blank: many colours, and a good share of pixels differ from the dominant background."""
    flat = pixels.reshape(-1, 4)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    return len(colours) > 50 and 1 - counts.max() / counts.sum() > 0.03


def _compute(widget, qtbot):
    widget.results = []
    widget._compute.native.click()
    qtbot.waitUntil(lambda: bool(widget.results), timeout=30000)
    qtbot.waitUntil(lambda: widget._compute.enabled, timeout=10000)


def test_reliability_diagram_numbers_and_pixels(make_napari_viewer, qtbot, case, errors):
    viewer = make_napari_viewer()
    widget = _setup(viewer, case)
    blank = _canvas_pixels(widget)
    _compute(widget, qtbot)
    assert errors == []
    reference = case["raters"][0]
    table = widget._table.value
    assert list(table["index"]) == ["sharp", "smooth"]
    for row, name in enumerate(("sharp", "smooth")):
        count, acc_bin, conf_bin, ece = _independent_bins(case[name], reference)
        assert table["data"][row][0] == pytest.approx(100 * ece, abs=1e-3)  # ECE in %
        assert f"on {reference.size:,} voxels" in widget._status.value
        # Brier (mean over classes), independently: one-hot difference squared
        onehot = np.stack([reference == c for c in range(3)]).astype(np.float64)
        assert table["data"][row][3] == pytest.approx(np.mean((case[name] - onehot) ** 2), abs=1e-5)
        nll = -np.mean(np.log(np.maximum(np.take_along_axis(case[name], reference[None], 0), 1e-7)))
        assert table["data"][row][2] == pytest.approx(nll, abs=1e-4)
        # the accuracy bars drawn are the per-bin accuracies (empty bins drawn at 0)
        bars = widget.plot.artists["accuracy_bars"][name]
        np.testing.assert_allclose([b.get_height() for b in bars], np.nan_to_num(acc_bin), atol=1e-9)
    legend = [t.get_text() for t in widget.plot.artists["reliability"].get_legend().get_texts()]
    assert any(t.startswith("sharp: ECE") for t in legend) and any(
        t.startswith("smooth: ECE") for t in legend
    )
    pixels = _canvas_pixels(widget)
    assert _is_drawn(pixels)
    assert np.mean(np.any(pixels != blank, axis=-1)) > 0.05


def test_soft_target_and_entropy_scatter(make_napari_viewer, qtbot, case, errors):
    viewer = make_napari_viewer()
    widget = _setup(viewer, case, target=("rater 1", "rater 2", "rater 3"))
    widget._plot_kind.value = ENTROPY_SCATTER
    _compute(widget, qtbot)
    assert errors == []
    raters = case["raters"]
    share = np.stack([(raters == c).mean(axis=0) for c in range(3)])
    with np.errstate(divide="ignore", invalid="ignore"):
        h_raters = -np.nansum(np.where(share > 0, share * np.log(share), 0), axis=0) / np.log(3)
    for row, name in enumerate(("sharp", "smooth")):
        p = case[name].astype(np.float64)
        h_pred = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=0) / np.log(3)
        mae = np.mean(np.abs(h_pred - h_raters))
        assert widget._table.value["data"][row][4] == pytest.approx(mae, abs=1e-4)
        points = widget.plot.artists["points"][name].get_offsets()
        np.testing.assert_allclose(np.sort(points[:, 0]), np.sort(h_raters.ravel()), atol=1e-5)
        np.testing.assert_allclose(np.sort(points[:, 1]), np.sort(h_pred.ravel()), atol=1e-5)
        # ECE against the soft target: accuracy = share of raters agreeing with the prediction
        _, _, _, ece = _independent_bins(case[name], raters)
        assert widget._table.value["data"][row][0] == pytest.approx(100 * ece, abs=1e-3)
    assert _is_drawn(_canvas_pixels(widget))
    # switching the plot back redraws the reliability diagram from the same results
    widget._plot_kind.value = RELIABILITY  # drawn in a worker, then shown
    qtbot.waitUntil(lambda: not widget.plot.rendering, timeout=30000)
    assert "reliability" in widget.plot.artists
    assert _is_drawn(_canvas_pixels(widget))


def test_plot_updates_when_layer_data_changes(make_napari_viewer, qtbot, case, errors):
    viewer = make_napari_viewer()
    widget = _setup(viewer, case)
    _compute(widget, qtbot)
    before = widget.results
    reference = case["raters"][0]
    # replace the sharp model by a perfectly confident one-hot of the reference: ECE -> 0
    onehot = np.stack([reference == c for c in range(3)]).astype(np.float32)
    viewer.layers["sharp"].data = onehot
    qtbot.waitUntil(lambda: widget.results is not before and widget._compute.enabled, timeout=30000)
    assert errors == []
    assert widget._table.value["data"][0][0] == pytest.approx(0.0, abs=1e-9)
    # a settings change recomputes too: 5 bins
    before = widget.results
    widget._num_bins.value = 5
    qtbot.waitUntil(lambda: widget.results is not before and widget._compute.enabled, timeout=30000)
    assert widget.results[1].summary.bins.num_bins == 5
    _, _, _, ece5 = _independent_bins(case["smooth"], reference, n_bins=5)
    assert widget._table.value["data"][1][0] == pytest.approx(100 * ece5, abs=1e-3)


def test_restrict_to_dilated_foreground_box(make_napari_viewer, qtbot, case, errors):
    viewer = make_napari_viewer()
    widget = _setup(viewer, case)
    widget._restrict.value = True
    widget._margin.value = 1.6  # 2 voxels at 0.8 mm
    _compute(widget, qtbot)
    assert errors == []
    reference = case["raters"][0]
    ys, xs = np.nonzero(reference)
    box = np.zeros(SHAPE, bool)
    box[max(ys.min() - 2, 0) : ys.max() + 3, max(xs.min() - 2, 0) : xs.max() + 3] = True
    _, _, _, ece = _independent_bins(case["smooth"][:, box][:, None, :], reference[box][None, :])
    assert f"on {int(box.sum()):,} voxels" in widget._status.value
    assert widget._table.value["data"][1][0] == pytest.approx(100 * ece, abs=1e-3)


def test_export_png_svg_and_csv(make_napari_viewer, qtbot, case, errors, tmp_path, monkeypatch):
    import matplotlib.image
    from qtpy.QtWidgets import QFileDialog

    viewer = make_napari_viewer()
    widget = _setup(viewer, case)
    _compute(widget, qtbot)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "fig.png"), ""))
    widget._save_figure.native.click()
    png = matplotlib.image.imread(tmp_path / "fig.png")
    assert png.shape[0] > 100 and np.unique(png.reshape(-1, png.shape[-1]), axis=0).shape[0] > 50
    svg = widget.export_figure(tmp_path / "fig.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "Reliability diagram" in svg
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "cal.csv"), ""))
    widget._save_csv.native.click()
    assert errors == []
    with open(tmp_path / "cal.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    count, acc_bin, _, ece = _independent_bins(case["smooth"], case["raters"][0])
    smooth = [r for r in rows if r["model"] == "smooth"]
    assert [int(r["count"]) for r in smooth] == count.tolist()
    for r, a in zip(smooth, acc_bin):
        assert (np.isnan(a) and r["accuracy"] == "nan") or float(r["accuracy"]) == pytest.approx(a, abs=1e-9)
    with open(tmp_path / "cal_metrics.csv", newline="") as handle:
        metrics = {r["model"]: r for r in csv.DictReader(handle)}
    assert float(metrics["smooth"]["ece"]) == pytest.approx(ece, abs=1e-9)
    with pytest.raises(ValueError, match="png"):
        widget.export_figure(tmp_path / "fig.jpg")


def test_plot_follows_napari_theme(make_napari_viewer, qtbot, case, errors):
    from napari.utils.theme import get_theme

    viewer = make_napari_viewer()
    widget = _setup(viewer, case)
    _compute(widget, qtbot)
    for theme in ("light", "dark"):
        viewer.theme = theme
        label = widget.plot.artists["reliability"].yaxis.label
        assert label.get_color() == get_theme(theme).text.as_hex()
        assert _is_drawn(_canvas_pixels(widget))


def test_errors_become_notifications(make_napari_viewer, qtbot, case, errors):
    viewer = make_napari_viewer()
    widget = _setup(viewer, case)
    widget._probabilities.value = []
    widget._compute.native.click()
    assert errors and "Calibration failed" in errors[-1] and "probability layer" in errors[-1]
    # a probability layer on another grid: the layer name and the expected shape are in the message
    viewer.add_image(np.full((3, 10, 10), 1 / 3, np.float32), name="small")
    widget._probabilities.value = ["small"]
    widget._compute.native.click()
    qtbot.waitUntil(lambda: widget._compute.enabled and len(errors) >= 2, timeout=30000)
    assert "'small'" in errors[-1] and "(40, 48)" in errors[-1]
    assert widget.results == []


def test_fit_temperature_adds_rescaled_layers_and_compares(make_napari_viewer, qtbot, case, errors):
    viewer = make_napari_viewer()
    widget = _setup(viewer, case)
    widget._fit_temperature.native.click()
    qtbot.waitUntil(lambda: len(widget.results) == 4 and widget._compute.enabled, timeout=60000)
    assert errors == []
    reference = case["raters"][0]
    grid = np.linspace(0.2, 5.0, 961)
    for name in ("sharp", "smooth"):
        logits = np.log(np.maximum(case[name].astype(np.float64), 1e-12))

        def nll(t, logits=logits):
            z = logits / t
            lse = np.log(np.exp(z - z.max(0)).sum(0)) + z.max(0)
            return float(np.mean(lse - np.take_along_axis(z, reference[None], 0)[0]))

        t_fit = widget.temperatures[name]
        values = [nll(t) for t in grid]
        assert abs(t_fit - grid[int(np.argmin(values))]) <= grid[1] - grid[0]
        assert nll(t_fit) <= min(values) + 1e-9
        layer = viewer.layers[f"{name} temperature-scaled"]
        assert layer.metadata["temperature"] == t_fit
        expected = np.exp(logits / t_fit - (logits / t_fit).max(0))
        np.testing.assert_allclose(layer.data, expected / expected.sum(0), atol=1e-6)
    table = widget._table.value
    assert list(table["index"]) == [
        "sharp",
        "smooth",
        "sharp temperature-scaled",
        "smooth temperature-scaled",
    ]
    # in-sample, the fitted temperature can only lower the NLL (T = 1 is one of the candidates)
    assert table["data"][2][2] <= table["data"][0][2] + 1e-4
    assert table["data"][3][2] <= table["data"][1][2] + 1e-4


def test_public_compute_and_fit_temperatures_emit_computed(make_napari_viewer, qtbot, case, errors):
    """The public methods set their inputs, compute once and emit ``computed`` when tables and plot are shown."""
    viewer = make_napari_viewer()
    widget = _setup(viewer, case)
    emitted: list = []
    widget.computed.connect(emitted.append)
    with qtbot.waitSignal(widget.computed, timeout=30000):
        worker = widget.compute(probabilities=["smooth"], target=["rater 2"], num_bins=5, plot=RELIABILITY)
        assert worker is not None and widget.busy and not widget._compute.enabled
    results = emitted[-1]
    assert results is widget.results and [r.name for r in results] == ["smooth"]
    assert not widget.busy and widget._compute.enabled and not widget.plot.rendering
    *_, ece = _independent_bins(case["smooth"], case["raters"][1], n_bins=5)
    assert results[0].summary.ece == pytest.approx(ece, abs=1e-6)
    qtbot.wait(400)  # a live recomputation would come 300 ms after a change: none, the settings came at once
    assert len(emitted) == 1 and errors == []

    with qtbot.waitSignals([widget.computed, widget.computed], timeout=60000):
        assert widget.fit_temperatures(probabilities=["sharp"]) is not None
    temperatures, compared = emitted[1], emitted[2]
    assert [t.source for t in temperatures] == ["sharp"] and temperatures[0].temperature > 0
    assert [r.name for r in compared] == ["sharp", "sharp temperature-scaled"]

    assert widget.compute(probabilities=["no such layer"]) is None
    assert "no layer named 'no such layer'" in errors[-1]
