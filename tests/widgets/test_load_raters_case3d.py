"""Load raters and the reader on a clinical-like 3-D case: 4 rater NIfTI files of 40×128×128 voxels,
spacing (3, 0.8, 0.8) mm, origin (10, −40, −50) and a flipped Y axis, written with SimpleITK here.

Every number is checked against a computation in this file (world positions from origin + direction ·
spacing · index, volumes from spacing × voxel count, Dice from the masks)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_seg_uncertainty.widgets import _common
from napari_seg_uncertainty.widgets import load_raters as load_raters_module
from napari_seg_uncertainty.widgets.load_raters import LoadRatersWidget

PLUGIN = "napari-seg-uncertainty"
SHAPE = (40, 128, 128)
SPACING = (3.0, 0.8, 0.8)  # numpy order (Z, Y, X)
ORIGIN = (10.0, -40.0, -50.0)
DIRECTION = np.diag([1.0, -1.0, 1.0])  # Y runs the other way (numpy order)
CLASSES = "background, organ, lesion"
TIMEOUT_MS = 60_000


def write_nifti(path, array, *, spacing=SPACING, origin=ORIGIN, direction=DIRECTION):
    """SimpleITK wants (x, y, z): reverse every numpy-order geometry."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    image.SetOrigin(tuple(float(o) for o in reversed(origin)))
    image.SetDirection(tuple(np.asarray(direction, float)[::-1, ::-1].ravel()))
    sitk.WriteImage(image, str(path))


def make_raters(seed: int = 0, num_raters: int = 4, shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    centre = np.array(shape) / 2
    d = np.sqrt(((z - centre[0]) / (0.3 * shape[0])) ** 2 + ((y - centre[1]) / (0.3 * shape[1])) ** 2
                + ((x - centre[2]) / (0.25 * shape[2])) ** 2)
    image = (100 * (d < 1) + rng.normal(0, 10, shape)).astype(np.float32)
    raters = np.zeros((num_raters, *shape), np.uint8)
    for r in range(num_raters):
        raters[r][d < 1.0 + 0.06 * (r - 1.5)] = 1
        raters[r][d < 0.35 + 0.05 * r] = 2
    return image, raters


def write_case(folder, seed: int = 0, num_raters: int = 4) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True)
    image, raters = make_raters(seed, num_raters)
    write_nifti(folder / "image.nii.gz", image)
    for i, r in enumerate(raters):
        write_nifti(folder / f"rater{i + 1}.nii.gz", r)
    return image, raters


def world(index) -> np.ndarray:
    """World position of a voxel index (numpy order), the ITK way: origin + D · (spacing ∘ index)."""
    return np.asarray(ORIGIN) + DIRECTION @ (np.asarray(SPACING) * np.asarray(index, float))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture
def messages(monkeypatch):
    out: dict[str, list[str]] = {"error": [], "warning": []}
    monkeypatch.setattr(_common, "show_error", out["error"].append)
    monkeypatch.setattr(load_raters_module, "show_error", out["error"].append)
    monkeypatch.setattr(load_raters_module, "show_warning", out["warning"].append)
    return out


@pytest.fixture
def case(tmp_path):
    image, raters = write_case(tmp_path / "case01")
    return tmp_path / "case01", image, raters


def load(qtbot, widget, path, **kwargs) -> None:
    widget.load_from_path(str(path), **kwargs)
    qtbot.waitUntil(lambda: widget.statistics is not None and not widget.busy, timeout=TIMEOUT_MS)


def check_lines_up(layer) -> None:
    """The layer's voxel corners land where the files put them (scale, translate and direction)."""
    np.testing.assert_allclose(layer.scale[-3:], SPACING)
    np.testing.assert_allclose(layer.translate[-3:], ORIGIN)
    last = np.array(SHAPE) - 1
    for corner in ([0, 0, 0], last, [0, last[1], 0], [last[0], 0, last[2]]):
        np.testing.assert_allclose(layer.data_to_world(corner), world(corner), atol=1e-6, err_msg=layer.name)


@pytest.fixture
def loaded(make_napari_viewer, qtbot, case, messages):
    """The case loaded through the docked widget, with class names typed in."""
    folder, _, _ = case
    viewer = make_napari_viewer()
    widget = LoadRatersWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._class_names.value = CLASSES
    load(qtbot, widget, folder)
    assert messages["error"] == []
    return viewer, widget


def test_every_layer_lines_up_with_the_image(loaded, case):
    (viewer, _), (_, image, raters) = loaded, case
    names = [layer.name for layer in viewer.layers]
    # the raters on top, so that their outlines are drawn over the entropy map
    assert names == ["image", "agreement: organ", "agreement: lesion", "rater entropy", "rater1", "rater2", "rater3",
                     "rater4"]
    for layer in viewer.layers:
        check_lines_up(layer)
        np.testing.assert_allclose(layer.extent.world, viewer.layers["image"].extent.world)
        assert layer.metadata["nsu_case"] == "case01"
    np.testing.assert_allclose(viewer.layers["image"].data, image)
    for i in range(4):
        np.testing.assert_array_equal(viewer.layers[f"rater{i + 1}"].data, raters[i])
    np.testing.assert_allclose(viewer.layers["agreement: lesion"].data, (raters == 2).mean(axis=0))


def test_tables_status_colours_and_dice_choices(loaded, case):
    (viewer, widget), (_, _, raters) = loaded, case
    assert widget._status.value == ("4 raters · 3 classes (background, organ, lesion) · 40×128×128 voxels of "
                                    "3 × 0.8 × 0.8 mm")
    # volumes in ml from spacing × voxel count, class names as rows
    summary = widget._summary_table.value
    assert list(summary["index"]) == ["background", "organ", "lesion"]
    assert list(summary["columns"]) == ["ml", "± sd", "empty", "Dice", "min"]
    voxel_ml = 3.0 * 0.8 * 0.8 / 1000.0
    for k in range(3):
        volumes = np.array([np.count_nonzero(r == k) for r in raters]) * voxel_ml
        shown = [float(v.replace(",", "")) for v in summary["data"][k][:2]]
        assert shown[0] == pytest.approx(volumes.mean(), rel=5e-3, abs=5e-3)
        assert shown[1] == pytest.approx(volumes.std(), rel=5e-3, abs=5e-3)
        assert "e+" not in "".join(summary["data"][k])
        pairs = [dice(raters[i] == k, raters[j] == k) for i in range(4) for j in range(i + 1, 4)]
        assert float(summary["data"][k][3]) == pytest.approx(np.mean(pairs), abs=1e-3)
        assert float(summary["data"][k][4]) == pytest.approx(np.min(pairs), abs=1e-3)
    # the Dice dropdown names classes; its table holds the pairwise Dice of the chosen class
    combo = widget._dice_class.native
    assert [combo.itemText(i) for i in range(combo.count())] == ["background", "organ", "lesion"]
    widget._dice_class.value = 2
    table = widget._dice_table.value
    assert list(table["columns"]) == ["R1", "R2", "R3", "R4"]
    for i in range(4):
        for j in range(4):
            assert table["data"][i][j] == pytest.approx(dice(raters[i] == 2, raters[j] == 2), abs=1e-4)
    # a distinct colour per rater, every class of a rater in that rater's hue, and the legend says which
    hues = []
    for i in range(4):
        layer = viewer.layers[f"rater{i + 1}"]
        assert layer.contour == 1
        rgba = np.asarray(layer.colormap.map(np.array([1, 2])))
        assert rgba[:, 3].min() == 1.0 and layer.colormap.map(np.array([0]))[0][3] == 0.0
        hues.append(tuple(np.round(rgba[0, :3], 3)))
        assert f"rater{i + 1}" in widget._legend.value
        assert layer.metadata["rater_color"] in widget._legend.value
    assert len(set(hues)) == 4
    # the Dice dropdown keeps its classes when other layers come and go (napari resets dock choices)
    viewer.add_image(np.zeros((5, 5)), name="other")
    widget.reset_choices()
    viewer.layers.remove("other")
    widget.reset_choices()
    assert widget._dice_class.value == 2 and len(widget._dice_class.choices) == 3


def test_second_case_replaces_the_first_or_keeps_it_hidden(make_napari_viewer, qtbot, tmp_path, messages):
    from napari_seg_uncertainty.widgets._common import upsert_layer

    write_case(tmp_path / "caseA", seed=0)
    _, raters_b = write_case(tmp_path / "caseB", seed=1, num_raters=3)
    viewer = make_napari_viewer()
    widget = LoadRatersWidget(viewer)
    mine = viewer.add_points(np.zeros((1, 3)), name="my notes")  # the user's own layer
    load(qtbot, widget, tmp_path / "caseA")
    # a layer another widget derived from case A (soft labels, predictions …) carries its case
    upsert_layer(viewer, np.zeros((2, *SHAPE), np.float32), name="soft A", layer_type="image",
                 geometry=viewer.layers["image"], leading_axes=1, case="caseA")
    load(qtbot, widget, tmp_path / "caseB")
    names = [layer.name for layer in viewer.layers]
    assert names == ["my notes", "image", "agreement: class 1", "agreement: class 2", "rater entropy", "rater1",
                     "rater2", "rater3"]
    assert viewer.layers["my notes"] is mine and "nsu_case" not in mine.metadata
    np.testing.assert_array_equal(viewer.layers["rater3"].data, raters_b[2])
    assert {layer.metadata["nsu_case"] for layer in viewer.layers if layer is not mine} == {"caseB"}
    # keep previous case: case B stays, hidden and renamed; case A comes back under the plain names
    widget._keep_previous.value = True
    load(qtbot, widget, tmp_path / "caseA")
    kept = [layer for layer in viewer.layers if layer.name.startswith("caseB: ")]
    assert sorted(layer.name for layer in kept) == sorted(
        f"caseB: {n}" for n in ["image", "rater1", "rater2", "rater3", "agreement: class 1",
                                "agreement: class 2", "rater entropy"])
    assert not any(layer.visible for layer in kept)
    assert viewer.layers["rater4"].metadata["nsu_case"] == "caseA" and viewer.layers["rater entropy"].visible
    assert messages["error"] == []


def test_layer_choices_follow_renames_and_user_layers_are_untouched(make_napari_viewer, qtbot, case, messages):
    folder, _, raters = case
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(np.zeros(SHAPE, np.float32), name="scan")
    for i in range(2):
        viewer.add_labels(raters[i], name=f"mine {i}", scale=SPACING, translate=ORIGIN)
    widget = LoadRatersWidget(viewer)
    widget._layers.value = ["mine 0", "mine 1"]
    viewer.layers["mine 1"].name = "reader B"
    assert [layer.name for layer in widget._layers.value] == ["mine 0", "reader B"]  # the selection survives
    shown = widget._layers.native
    assert [shown.item(i).text() for i in range(shown.count())] == ["mine 0", "reader B"]  # offered as renamed
    widget._use_layers.native.click()
    qtbot.waitUntil(lambda: widget.statistics is not None and not widget.busy, timeout=TIMEOUT_MS)
    assert widget.raters.rater_names == ["mine 0", "reader B"]
    assert widget._dice_table.value["data"][0][1] == pytest.approx(dice(raters[0] == 1, raters[1] == 1), abs=1e-4)
    for i, name in enumerate(["mine 0", "reader B"]):  # neither changed, tagged nor recoloured
        layer = viewer.layers[name]
        np.testing.assert_array_equal(layer.data, raters[i])
        assert "nsu_case" not in layer.metadata and "rater_color" not in layer.metadata
    entropy = viewer.layers["rater entropy"]
    np.testing.assert_allclose(entropy.scale, SPACING)
    np.testing.assert_allclose(entropy.translate, ORIGIN)
    # loading a case from files afterwards removes the derived maps but none of the user's layers
    load(qtbot, widget, folder)
    assert {"scan", "mine 0", "reader B"} <= {layer.name for layer in viewer.layers}
    assert viewer.layers["scan"] is image_layer
    assert messages["error"] == []


def test_qubiq_task_choice(make_napari_viewer, qtbot, tmp_path, messages):
    folder = tmp_path / "qubiq_case"
    folder.mkdir()
    image, raters = make_raters(0)
    write_nifti(folder / "image.nii.gz", image)
    for seg in range(2):
        write_nifti(folder / f"task01_seg{seg + 1:02d}.nii.gz", (raters[seg] > 0).astype(np.uint8))
    for seg in range(3):
        write_nifti(folder / f"task02_seg{seg + 1:02d}.nii.gz", (raters[seg] == 2).astype(np.uint8))
    viewer = make_napari_viewer()
    widget = LoadRatersWidget(viewer)
    assert not widget._task.enabled
    widget._path.value = str(folder)
    assert widget._task.enabled and widget._task.choices == (1, 2)
    widget._task.value = 2
    widget._load_files.native.click()
    qtbot.waitUntil(lambda: widget.statistics is not None and not widget.busy, timeout=TIMEOUT_MS)
    assert widget.raters.rater_names == ["task02_seg01", "task02_seg02", "task02_seg03"]
    np.testing.assert_array_equal(viewer.layers["task02_seg03"].data, raters[2] == 2)
    assert viewer.layers["image"].metadata["nsu_case"] == "qubiq_case task 02"
    assert not any("task=" in m for m in messages["warning"])  # the choice was made, no "Pass task=N"
    widget._path.value = str(tmp_path)  # not a QUBIQ folder
    assert not widget._task.enabled


def test_bad_input_is_a_notification_and_the_case_on_show_stays(make_napari_viewer, qtbot, case, messages):
    folder, _, _ = case
    viewer = make_napari_viewer()
    widget = LoadRatersWidget(viewer)
    load(qtbot, widget, folder)
    before = [layer.name for layer in viewer.layers]
    widget._class_names.value = "background, organ"  # one name short
    widget.load_from_path(str(folder))
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert "class_names" in messages["error"][-1] and "one name per class" in messages["error"][-1]
    widget._class_names.value = "background,,lesion"
    widget.load_from_path(str(folder))
    assert "empty name" in messages["error"][-1]
    assert [layer.name for layer in viewer.layers] == before and widget.statistics is not None


# ---------------------------------------------------------------------------------------------- reader
def test_reader_opens_the_folder_as_load_raters_shows_it(make_napari_viewer, qtbot, case):
    folder, _, raters = case
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin=PLUGIN)
    reference = make_napari_viewer()
    widget = LoadRatersWidget(reference)
    load(qtbot, widget, folder)
    assert [layer.name for layer in viewer.layers] == [layer.name for layer in reference.layers]
    for layer in viewer.layers:
        other = reference.layers[layer.name]
        assert type(layer) is type(other)
        check_lines_up(layer)
        np.testing.assert_allclose(layer.affine.affine_matrix, other.affine.affine_matrix)
        np.testing.assert_allclose(layer.extent.world, other.extent.world)
        np.testing.assert_allclose(np.asarray(layer.data), np.asarray(other.data))
        assert layer.metadata["nsu_case"] == "case01"
        if layer._type_string == "image":
            assert layer.colormap.name == other.colormap.name
            assert layer.blending == other.blending
        else:
            np.testing.assert_allclose(layer.colormap.map(np.array([1, 2])), other.colormap.map(np.array([1, 2])))
    p = (raters == 1).mean(axis=0)
    np.testing.assert_allclose(viewer.layers["agreement: class 1"].data, p)


def test_opening_a_folder_offers_this_reader(make_napari_viewer, case):
    """napari 0.9 hands a folder to every reader that accepts directories; ours is one of them. A script
    names the plugin; the GUI asks (or uses the reader remembered for such folders)."""
    from napari.errors import MultipleReaderError
    from napari.plugins._npe2 import get_readers
    from napari.settings import get_settings

    folder, _, _ = case
    assert PLUGIN in get_readers(str(folder))
    viewer = make_napari_viewer()
    with pytest.raises(MultipleReaderError) as info:
        viewer.open(str(folder), plugin=None)  # what File → Open Folder… does: napari shows its reader choice
    assert PLUGIN in info.value.available_plugins
    settings = get_settings().plugins
    previous = dict(settings.extension2reader)
    try:
        settings.extension2reader = {**previous, f"{folder.parent}{os.sep}*": PLUGIN}  # "remember this choice"
        viewer.open(str(folder), plugin=None)
    finally:
        settings.extension2reader = previous
    assert "rater entropy" in viewer.layers and len(viewer.layers) == 8


def test_tables_fit_the_dock_without_horizontal_scrolling(make_napari_viewer, qtbot, case, messages):
    """Four raters at the dock's default width: every column shows its widest cell in full."""
    folder, _, _ = case
    viewer = make_napari_viewer(show=True)
    widget = LoadRatersWidget(viewer)
    dock = viewer.window.add_dock_widget(widget, name="Load raters")
    widget._class_names.value = CLASSES
    load(qtbot, widget, folder)
    qtbot.wait(100)
    scroll = widget.scroll_area
    assert widget.content.native.width() <= scroll.viewport().width() <= dock.width()  # nothing cut off
    for table in (widget._dice_table, widget._summary_table):
        view = table.native
        assert view.horizontalHeader().length() <= view.viewport().width()
        for column in range(view.columnCount()):
            assert view.columnWidth(column) >= view.sizeHintForColumn(column), (table, column)
