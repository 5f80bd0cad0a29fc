"""Loading multi-rater annotations and inter-rater statistics (core.raters)."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import SimpleITK as sitk

from napari_seg_uncertainty.core.io import write_image
from napari_seg_uncertainty.core.raters import (
    RaterSet,
    agreement_map,
    load_raters,
    pairwise_dice,
    rater_entropy,
)


@pytest.fixture
def three_raters():
    rng = np.random.default_rng(3)
    base = np.zeros((12, 14), np.uint8)
    base[2:9, 3:11] = 1
    base[4:7, 5:8] = 2
    raters = np.stack([base.copy() for _ in range(3)])
    raters[1][8, 3:11] = 0
    raters[2][rng.random(base.shape) < 0.1] = 1
    return raters


def _write_raters(folder, raters, names, spacing=(1.0, 1.0)):
    folder.mkdir(parents=True, exist_ok=True)
    for name, r in zip(names, raters):
        write_image(folder / name, r, spacing=spacing)


# ---------------------------------------------------------------------------------------------------
# statistics against independent computations
# ---------------------------------------------------------------------------------------------------
def test_pairwise_dice_matches_set_definition(three_raters):
    dice = pairwise_dice(three_raters, num_classes=3)
    assert dice.shape == (3, 3, 3)
    for k, i, j in itertools.product(range(3), range(3), range(3)):
        a = {tuple(p) for p in np.argwhere(three_raters[i] == k)}
        b = {tuple(p) for p in np.argwhere(three_raters[j] == k)}
        expected = 2 * len(a & b) / (len(a) + len(b))
        assert dice[k, i, j] == pytest.approx(expected)


def test_pairwise_dice_empty_classes():
    r = np.zeros((2, 4, 4), np.uint8)
    r[0, 0, 0] = 1
    d = pairwise_dice(r, num_classes=3)
    assert d[2, 0, 1] == 1.0  # both empty: agree the class is absent
    assert d[1, 0, 1] == 0.0  # one empty, one not
    assert np.isnan(pairwise_dice(r, num_classes=3, empty_value=np.nan)[2, 0, 1])


def test_agreement_and_entropy_against_hand_counts():
    r = np.array([[[0, 1, 2, 1]], [[0, 1, 1, 2]], [[0, 1, 0, 0]]])
    agree = agreement_map(r, num_classes=3)
    assert agree.dtype == np.float32
    np.testing.assert_allclose(agree[:, 0, 0], [1, 0, 0])
    np.testing.assert_allclose(agree[:, 0, 1], [0, 1, 0])
    np.testing.assert_allclose(agree[:, 0, 2], [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(agree.sum(0), 1.0)
    ent = rater_entropy(r, num_classes=3)
    # voxel 2: uniform over 3 classes -> 1; voxel 3: p = (1/3, 1/3, 1/3) -> 1; voxel 0/1 -> 0
    np.testing.assert_allclose(ent[0], [0, 0, 1, 1], atol=1e-6)
    r2 = np.array([[[0]], [[1]], [[1]], [[1]]])
    p = np.array([0.25, 0.75])
    np.testing.assert_allclose(rater_entropy(r2, num_classes=2)[0, 0], -(p * np.log(p)).sum() / np.log(2), rtol=1e-6)


def test_summary_table(three_raters):
    rs = load_raters(three_raters, spacing=(2.0, 0.5))
    table = rs.summary()
    assert table.columns == ["class", "name", "mean_volume", "std_volume", "raters_empty",
                             "mean_pairwise_dice", "min_pairwise_dice"]
    counts = np.array([[np.count_nonzero(r == k) for r in three_raters] for k in range(3)])
    np.testing.assert_allclose(table.column("mean_volume"), counts.mean(1) * 1.0)
    d = pairwise_dice(three_raters, num_classes=3)
    expected = [np.mean([d[k, 0, 1], d[k, 0, 2], d[k, 1, 2]]) for k in range(3)]
    np.testing.assert_allclose(table.column("mean_pairwise_dice"), expected)
    text = str(table)
    assert "mean_pairwise_dice" in text and "class 2" in text


# ---------------------------------------------------------------------------------------------------
# layouts
# ---------------------------------------------------------------------------------------------------
def test_array_and_list_sources(three_raters):
    rs = load_raters(three_raters)
    assert rs.labels.shape == (3, 12, 14) and rs.num_classes == 3
    assert rs.rater_names == ["rater 1", "rater 2", "rater 3"]
    rs2 = load_raters(list(three_raters), spacing=(1.0, 2.0))
    np.testing.assert_array_equal(rs2.labels, three_raters)
    assert rs2.spacing == (1.0, 2.0) and rs2.scale == (1.0, 2.0)
    assert load_raters(rs2) is rs2


def test_folder_of_files_keeps_spacing_and_names(tmp_path, three_raters):
    _write_raters(tmp_path / "case", three_raters, ["r1.nii.gz", "r2.nii.gz", "r10.nii.gz"], spacing=(0.7, 0.7))
    write_image(tmp_path / "case" / "image.nii.gz", np.ones((12, 14), np.float32), spacing=(0.7, 0.7))
    rs = load_raters(tmp_path / "case")
    assert rs.rater_names == ["r1", "r2", "r10"]  # natural order, image left out
    assert rs.spacing == pytest.approx((0.7, 0.7))
    assert rs.image is not None and rs.image.shape == (12, 14)
    np.testing.assert_array_equal(rs.labels, three_raters)


def test_glob_and_file_list(tmp_path, three_raters):
    _write_raters(tmp_path, three_raters, ["a_1.nrrd", "a_2.nrrd", "a_3.nrrd"])
    rs = load_raters(str(tmp_path / "a_*.nrrd"))
    assert rs.num_raters == 3
    rs = load_raters([tmp_path / "a_3.nrrd", tmp_path / "a_1.nrrd"])
    assert rs.rater_names == ["a_3", "a_1"]
    np.testing.assert_array_equal(rs.labels[0], three_raters[2])


@pytest.mark.parametrize("suffix", [".mha", ".tif", ".png"])
def test_other_formats(tmp_path, three_raters, suffix):
    _write_raters(tmp_path, three_raters, [f"x{i}{suffix}" for i in range(3)])
    rs = load_raters(tmp_path)
    np.testing.assert_array_equal(rs.labels, three_raters)


def test_qubiq_layout(tmp_path, three_raters):
    case = tmp_path / "case01"
    binary = (three_raters > 0).astype(np.uint8)
    _write_raters(case, binary, [f"task01_seg0{i + 1}.nii.gz" for i in range(3)], spacing=(0.5, 0.5))
    _write_raters(case, (three_raters == 2).astype(np.uint8)[:2], ["task02_seg01.nii.gz", "task02_seg02.nii.gz"],
                  spacing=(0.5, 0.5))
    write_image(case / "image.nii.gz", np.full((12, 14), 3.0, np.float32), spacing=(0.5, 0.5))
    with pytest.warns(UserWarning, match="tasks"):
        rs = load_raters(case)
    assert rs.num_raters == 3 and rs.rater_names[0] == "task01_seg01"
    np.testing.assert_array_equal(rs.labels, binary)
    assert rs.image is not None and float(rs.image.mean()) == 3.0
    rs2 = load_raters(case, task=2)
    assert rs2.num_raters == 2
    with pytest.raises(ValueError, match="task=5"):
        load_raters(case, task=5)


def test_msseg_layout(tmp_path, three_raters):
    case = tmp_path / "01016SACH"
    binary = (three_raters > 0).astype(np.uint8)
    masks = case / "Masks"
    _write_raters(masks, binary, [f"ManualSegmentation_{i}.nii.gz" for i in (1, 2, 3)], spacing=(1.0, 1.0))
    write_image(masks / "Consensus.nii.gz", binary[0], spacing=(1.0, 1.0))
    write_image(case / "FLAIR_preprocessed.nii.gz", np.ones((12, 14), np.float32))
    rs = load_raters(case)
    assert rs.rater_names == ["ManualSegmentation_1", "ManualSegmentation_2", "ManualSegmentation_3"]
    assert rs.image is not None


def test_lidc_npz(tmp_path, three_raters):
    masks = (three_raters > 0).astype(np.uint8)
    masks[1] = 0  # an empty mask, as in ~40 % of LIDC masks
    np.savez(tmp_path / "lidc_0001.npz", image=np.ones((12, 14), np.float32), masks=masks)
    rs = load_raters(tmp_path / "lidc_0001.npz")
    assert rs.num_raters == 3 and rs.image is not None
    assert rs.summary().column("raters_empty")[1] == 1


def test_npz_with_pickle_is_refused(tmp_path):
    np.savez(tmp_path / "evil.npz", masks=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        load_raters(tmp_path / "evil.npz")


def test_gapped_labels_are_mapped(tmp_path):
    r = np.zeros((2, 6, 6), np.uint8)
    r[:, 1:3, 1:3] = 1
    r[:, 3:5, 3:5] = 4  # BraTS-style 0, 1, 2, 4
    r[0, 0, 0] = 2
    rs = load_raters(r)
    assert rs.label_values == [0, 1, 2, 4]
    assert rs.class_names == ["background", "label 1", "label 2", "label 4"]
    assert rs.labels.max() == 3 and np.count_nonzero(rs.labels == 3) == 8


def test_three_d_with_anisotropic_spacing(tmp_path):
    r = np.zeros((2, 4, 5, 6), np.uint8)
    r[:, 1:3, 1:4, 1:5] = 1
    for i in range(2):
        write_image(tmp_path / f"r{i}.nii.gz", r[i], spacing=(3.0, 0.8, 0.8))
    rs = load_raters(tmp_path)
    assert rs.ndim == 3 and rs.spacing == pytest.approx((3.0, 0.8, 0.8))
    assert rs.voxel_volume == pytest.approx(3.0 * 0.8 * 0.8)


def test_trailing_singleton_axis_is_dropped(tmp_path):
    img = sitk.GetImageFromArray(np.zeros((1, 5, 6, 7), np.uint8), isVector=False)  # 4-D, singleton time axis
    sitk.WriteImage(img, str(tmp_path / "a.nii.gz"))
    sitk.WriteImage(img, str(tmp_path / "b.nii.gz"))
    rs = load_raters(tmp_path)
    assert rs.shape == (5, 6, 7)


# ---------------------------------------------------------------------------------------------------
# validation: one test per error message
# ---------------------------------------------------------------------------------------------------
def test_error_shape_mismatch(tmp_path):
    write_image(tmp_path / "a.nii.gz", np.zeros((4, 4), np.uint8))
    write_image(tmp_path / "b.nii.gz", np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"different shapes \(a: \(4, 4\); b: \(4, 5\)\)"):
        load_raters(tmp_path)


def test_error_spacing_mismatch(tmp_path):
    write_image(tmp_path / "a.nii.gz", np.zeros((4, 4), np.uint8), spacing=(1.0, 1.0))
    write_image(tmp_path / "b.nii.gz", np.zeros((4, 4), np.uint8), spacing=(1.0, 2.0))
    with pytest.raises(ValueError, match="different voxel spacings"):
        load_raters(tmp_path)
    assert load_raters(tmp_path, spacing=(1.0, 1.0)).spacing == (1.0, 1.0)  # override resolves it


def test_error_non_integer_labels():
    with pytest.raises(ValueError, match="non-integer values"):
        load_raters(np.array([[[0.0, 0.5]], [[0.0, 1.0]]]))


def test_error_negative_labels():
    with pytest.raises(ValueError, match="negative labels"):
        load_raters(np.array([[[0, -1]], [[0, 1]]]))


def test_error_nan():
    with pytest.raises(ValueError, match="NaN"):
        load_raters(np.array([[[0.0, np.nan]], [[0.0, 1.0]]]))


def test_error_inconsistent_label_sets():
    a = np.zeros((4, 4), np.uint8)
    a[1:3, 1:3] = 1
    b = np.where(a > 0, 255, 0).astype(np.uint8)
    with pytest.raises(ValueError, match=r"uses labels \[255\] but the other raters use \[1\]"):
        load_raters([a, a, b], rater_names=["x", "y", "z"])


def test_error_empty_sources(tmp_path):
    with pytest.raises(ValueError, match="empty list"):
        load_raters([])
    with pytest.raises(FileNotFoundError, match="no label file"):
        load_raters(tmp_path)
    with pytest.raises(FileNotFoundError, match="matches no file"):
        load_raters(str(tmp_path / "*.nii.gz"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_raters(tmp_path / "nope")
    with pytest.raises(ValueError, match="no rater found"):
        load_raters(np.zeros((0, 4, 4), np.uint8))


def test_error_four_d():
    with pytest.raises(ValueError, match="4-D"):
        load_raters(np.zeros((2, 3, 4, 5, 6), np.uint8))
    with pytest.raises(ValueError, match="4-D"):
        load_raters([np.zeros((3, 4, 5, 6), np.uint8)] * 2)


def test_error_types_and_unsupported_files(tmp_path):
    with pytest.raises(TypeError, match="source must be"):
        load_raters(42)
    with pytest.raises(TypeError, match="only file paths or only arrays"):
        load_raters([np.zeros((2, 2)), "x.nii.gz"])
    (tmp_path / "r.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ValueError, match="unsupported format '.jpg'"):
        load_raters([tmp_path / "r.jpg"])
    with pytest.raises(ValueError, match="stack raters"):
        load_raters(np.zeros((4, 4), np.uint8))


def test_error_names_count(three_raters):
    with pytest.raises(ValueError, match="rater_names has 2 names but 3 raters"):
        load_raters(three_raters, rater_names=["a", "b"])
    with pytest.raises(ValueError, match="class_names has 2 names"):
        load_raters(three_raters, class_names=["bg", "x"])


def test_single_rater_warns():
    with pytest.warns(UserWarning, match="only one rater"):
        rs = load_raters(np.zeros((1, 4, 4), np.uint8))
    assert rs.num_raters == 1
    assert np.isnan(rs.summary().column("mean_pairwise_dice")[0])


def test_multiple_raters_do_not_warn(three_raters):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_raters(three_raters)


def test_raterset_validation():
    with pytest.raises(ValueError, match="image has shape"):
        RaterSet(labels=np.zeros((2, 4, 4), np.uint8), image=np.zeros((5, 5)))
    with pytest.raises(ValueError, match="spacing must have 2 entries"):
        RaterSet(labels=np.zeros((2, 4, 4), np.uint8), spacing=(1.0, 1.0, 1.0))


# ---------------------------------------------------------------------------------------------------
# rater entropy, the keyword convention, label dtype, CSV writing
# ---------------------------------------------------------------------------------------------------
def test_rater_entropy_in_nats_and_normalized():
    r = np.array([[[0, 1, 2]], [[0, 1, 1]], [[0, 0, 2]], [[0, 1, 1]]])
    nats = rater_entropy(r, num_classes=3, normalize=False)
    expected = [0.0, -(0.25 * np.log(0.25) + 0.75 * np.log(0.75)), np.log(2.0)]
    np.testing.assert_allclose(nats[0], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rater_entropy(r, num_classes=3)[0], np.array(expected) / np.log(3), rtol=1e-6)
    assert nats.dtype == np.float32
    np.testing.assert_array_equal(rater_entropy(np.zeros((2, 3, 3), np.uint8), num_classes=1), 0.0)
    rs = load_raters(r)
    np.testing.assert_array_equal(rs.entropy_map(), rater_entropy(r, num_classes=3))
    with pytest.raises(TypeError, match="normalize"):
        rater_entropy(r, normalize="yes")


def test_num_classes_is_keyword_only(three_raters):
    for function in (pairwise_dice, agreement_map, rater_entropy):
        with pytest.raises(TypeError):
            function(three_raters, 3)


def test_label_dtype_follows_the_number_of_classes():
    labels = np.arange(257)[None, None]
    few = load_raters(np.concatenate([labels[..., :256]] * 2))
    assert few.labels.dtype == np.uint8 and few.num_classes == 256
    many = load_raters(np.concatenate([labels] * 2))
    assert many.labels.dtype == np.uint16 and many.num_classes == 257
    np.testing.assert_array_equal(many.labels[0, 0], np.arange(257))
    gapped = load_raters(np.array([[[0, 1000]], [[1000, 4]]]))
    assert gapped.labels.dtype == np.uint8 and gapped.label_values == [0, 4, 1000]
    np.testing.assert_array_equal(gapped.labels, [[[0, 2]], [[2, 1]]])


def test_summary_csv_is_written_whole_and_respects_overwrite(tmp_path, three_raters):
    table = load_raters(three_raters).summary()
    path = tmp_path / "summary.csv"
    assert table.to_csv(path) == str(path)
    first = path.read_text()
    assert first.splitlines()[0] == ",".join(table.columns) and len(first.splitlines()) == 4
    with pytest.raises(FileExistsError, match="summary.csv"):
        table.to_csv(path, overwrite=False)
    table.to_csv(path)  # replaces by default
    assert path.read_text() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv"]


def test_docstring_examples_run():
    import doctest

    from napari_seg_uncertainty.core import phantom
    from napari_seg_uncertainty.core.raters import loading, rater_set, statistics

    attempted = 0
    for module in (statistics, rater_set, loading, phantom):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted > 5
