"""Cohorts: loading per layout and manifest form, the header scan, problems by case and file, load_case,
resampling, digests and label values (core/cohort)."""

from __future__ import annotations

import csv
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from napari_seg_uncertainty.core.cohort import LAYOUTS, CaseData, CaseInfo, Cohort, CohortProblem, load_cohort
from napari_seg_uncertainty.core.cohort.resample import resample_array, resample_case
from napari_seg_uncertainty.core.cohort.scan import read_header
from napari_seg_uncertainty.core.io import read_image, write_image
from napari_seg_uncertainty.core.raters import load_raters

SPACING3 = (2.5, 0.8, 0.7)
SHAPE3 = (6, 12, 10)


def _origin(i: int) -> tuple[float, ...]:
    return (-40.0 + i, 12.5, -7.0 - 0.5 * i)


def _raters(rng: np.random.Generator, shape, num_raters: int = 3, num_classes: int = 2) -> list[np.ndarray]:
    base = np.zeros(shape, np.uint8)
    base[tuple(slice(s // 4, 3 * s // 4) for s in shape)] = 1
    out = []
    for _ in range(num_raters):
        noise = rng.random(shape) < 0.1
        out.append(np.where(noise, rng.integers(0, num_classes, shape), base).astype(np.uint8))
    return out


def write_case(folder: Path, i: int, *, ndim: int = 3, channels=("image",), num_raters: int = 3,
               suffix: str = ".nii.gz", rater_prefix: str = "rater", num_classes: int = 2) -> Path:
    """A generic case folder: image channel files + rater files with anisotropic spacing and a non-zero origin."""
    rng = np.random.default_rng(i)
    folder.mkdir(parents=True, exist_ok=True)
    shape = SHAPE3 if ndim == 3 else SHAPE3[1:]
    spacing = SPACING3 if ndim == 3 else SPACING3[1:]
    origin = _origin(i)[-ndim:]
    for name in channels:
        write_image(folder / f"{name}{suffix}", rng.normal(size=shape).astype(np.float32), spacing=spacing,
                    origin=origin)
    for r, lab in enumerate(_raters(rng, shape, num_raters, num_classes)):
        write_image(folder / f"{rater_prefix}{r + 1}{suffix}", lab, spacing=spacing, origin=origin)
    return folder


def generic_cohort(root: Path, n: int = 3, **kwargs) -> Path:
    for i in range(n):
        write_case(root / f"case{i + 1}", i, **kwargs)
    return root


# ----------------------------------------------------------------------------------------------
# layouts
# ----------------------------------------------------------------------------------------------
def test_generic_folder_3d(tmp_path):
    root = generic_cohort(tmp_path / "c", n=3, channels=("flair", "t1"))
    cohort = load_cohort(root)
    assert isinstance(cohort, Cohort) and len(cohort) == 3
    assert cohort.case_ids == ["case1", "case2", "case3"]
    assert cohort.source == str(root.resolve())
    assert (cohort.ndim, cohort.channels, cohort.num_raters) == (3, 2, 3)
    info = cohort["case2"]
    assert isinstance(info, CaseInfo) and info.layout == "generic" and info.layout in LAYOUTS
    assert [Path(f).name for f in info.image_files] == ["flair.nii.gz", "t1.nii.gz"]
    assert [Path(f).name for f in info.rater_files] == ["rater1.nii.gz", "rater2.nii.gz", "rater3.nii.gz"]
    assert info.shape == SHAPE3 and np.allclose(info.spacing, SPACING3) and np.allclose(info.origin, _origin(1))
    assert info.nbytes == int(np.prod(SHAPE3)) * (4 * 2 + 3)
    assert cohort[1] == info and cohort[-1].case_id == "case3"
    case = cohort.load_case("case2")
    assert isinstance(case, CaseData)
    assert case.image.shape == (2, *SHAPE3) and case.image.dtype == np.float32
    assert case.raters.shape == (3, *SHAPE3) and case.raters.dtype == np.uint8
    assert case.direction.shape == (3, 3) and np.allclose(case.origin, _origin(1))
    assert cohort.problems == ()


def test_generic_folder_2d_and_natural_order(tmp_path):
    root = tmp_path / "c"
    for i in (10, 2, 1):
        write_case(root / f"case{i}", i, ndim=2)
    cohort = load_cohort(root)
    assert cohort.case_ids == ["case1", "case2", "case10"]
    assert cohort.ndim == 2 and cohort[0].shape == SHAPE3[1:]
    assert cohort.load_case(0).image.shape == (1, *SHAPE3[1:])


def test_single_case_folder_is_a_one_case_cohort(tmp_path):
    folder = write_case(tmp_path / "only", 0)
    cohort = load_cohort(folder)
    assert cohort.case_ids == ["only"]


def test_qubiq_layout_and_task(tmp_path):
    root = tmp_path / "qubiq"
    for i in range(2):
        case = root / f"case{i:02d}"
        case.mkdir(parents=True)
        rng = np.random.default_rng(i)
        write_image(case / "image.nii.gz", rng.normal(size=(12, 10)).astype(np.float32), spacing=(0.5, 0.5))
        for task, n in ((1, 3), (2, 2)):
            for r, lab in enumerate(_raters(rng, (12, 10), n)):
                write_image(case / f"task{task:02d}_seg{r + 1:02d}.nii.gz", lab, spacing=(0.5, 0.5))
    with pytest.warns(UserWarning, match="task"):
        cohort = load_cohort(root)
    assert cohort[0].layout == "qubiq" and cohort.num_raters == 3 and cohort.channels == 1
    cohort2 = load_cohort(root, task=2)
    assert cohort2.num_raters == 2
    assert all("task02" in Path(f).name for f in cohort2[0].rater_files)
    with pytest.raises(ValueError, match="case00.*task 5"):
        load_cohort(root, task=5)


def test_msseg_layout(tmp_path):
    root = tmp_path / "msseg"
    for i in range(2):
        case = root / f"patient{i}"
        (case / "Masks").mkdir(parents=True)
        (case / "Preprocessed_Data").mkdir()
        rng = np.random.default_rng(i)
        write_image(case / "Preprocessed_Data" / "FLAIR_preprocessed.nii.gz",
                    rng.normal(size=SHAPE3).astype(np.float32), spacing=SPACING3, origin=_origin(i))
        for r, lab in enumerate(_raters(rng, SHAPE3, 4)):
            write_image(case / "Masks" / f"ManualSegmentation_{r + 1}.nii.gz", lab, spacing=SPACING3,
                        origin=_origin(i))
    cohort = load_cohort(root)
    assert [c.layout for c in cohort] == ["msseg", "msseg"]
    assert cohort.num_raters == 4 and cohort.channels == 1
    assert Path(cohort[0].image_files[0]).name == "FLAIR_preprocessed.nii.gz"
    assert cohort.load_case(1).raters.shape == (4, *SHAPE3)


def test_npz_stacked_form(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 16, 16)).astype(np.float32)
    masks = (rng.random((4, 3, 16, 16)) < 0.3).astype(np.uint8)
    path = tmp_path / "lidc.npz"
    np.savez_compressed(path, images=images, masks=masks, case_ids=np.array(["LIDC-2", "LIDC-10", "LIDC-1", "x"]),
                        spacing=np.array([0.6, 0.7]))
    cohort = load_cohort(path)
    assert cohort.case_ids == ["LIDC-1", "LIDC-2", "LIDC-10", "x"]
    info = cohort["LIDC-10"]
    assert info.layout == "npz" and info.rater_files == (str(path.resolve()),) and info.image_files == ()
    assert info.spacing == (0.6, 0.7) and info.num_raters == 3 and info.channels == 1
    case = cohort.load_case("LIDC-10")
    np.testing.assert_array_equal(case.raters, masks[1])
    np.testing.assert_allclose(case.image[0], images[1])
    # without case_ids: case000…
    np.savez(tmp_path / "plain.npz", images=images, masks=masks)
    plain = load_cohort(tmp_path / "plain.npz")
    assert plain.case_ids == ["case000", "case001", "case002", "case003"]
    # uncompressed members are memory-mapped: the case's slice only
    np.testing.assert_array_equal(plain.load_case(2).raters, masks[2])
    np.testing.assert_allclose(plain.load_case(2).image[0], images[2])


def test_npz_per_case_form_3d(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {}
    for cid in ("b", "a"):
        arrays[f"{cid}/image"] = rng.normal(size=(4, 8, 8)).astype(np.float32)
        arrays[f"{cid}/masks"] = (rng.random((2, 4, 8, 8)) < 0.4).astype(np.uint8)
    path = tmp_path / "cases.npz"
    np.savez(path, **arrays)
    cohort = load_cohort(path)
    assert cohort.case_ids == ["a", "b"] and cohort.ndim == 3 and cohort.num_raters == 2
    case = cohort.load_case("b")
    np.testing.assert_array_equal(case.raters, arrays["b/masks"])
    np.testing.assert_allclose(case.image[0], arrays["b/image"])


def test_folder_of_single_case_npz_folders(tmp_path):
    rng = np.random.default_rng(2)
    for cid in ("n2", "n1"):
        (tmp_path / cid).mkdir()
        masks = (rng.random((4, 8, 8)) < 0.3).astype(np.uint8)
        np.savez(tmp_path / cid / "nodule.npz", image=rng.normal(size=(8, 8)), masks=masks, spacing=[0.5, 0.5])
    cohort = load_cohort(tmp_path)
    assert cohort.case_ids == ["n1", "n2"] and cohort[0].layout == "npz" and cohort.num_raters == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rs = load_raters(tmp_path / "n2")
    case = cohort.load_case("n2")
    np.testing.assert_array_equal(case.raters, rs.labels)
    np.testing.assert_allclose(case.image[0], rs.image)
    assert case.spacing == rs.spacing == (0.5, 0.5)


def _manifest_cases(root: Path, n: int, channels=("t1", "t2")) -> list[dict]:
    rows = []
    for i in range(n):
        folder = write_case(root / "data" / f"p{i}", i, channels=channels)
        rows.append({
            "case_id": f"p{i}",
            "image": [os.path.relpath(folder / f"{c}.nii.gz", root) for c in channels],
            "raters": [os.path.relpath(folder / f"rater{r + 1}.nii.gz", root) for r in range(3)],
            "split": ["train", "val", "test"][i % 3],
        })
    return rows


def write_csv(path: Path, rows: list[dict], *, split: bool = True) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_id", "image", "raters"] + (["split"] if split else []))
        for row in rows:
            image = row["image"] if isinstance(row["image"], str) else ";".join(row["image"])
            raters = row["raters"] if isinstance(row["raters"], str) else ";".join(row["raters"])
            writer.writerow([row["case_id"], image, raters] + ([row["split"]] if split else []))
    return path


def test_csv_manifest_several_channels_and_split(tmp_path):
    rows = _manifest_cases(tmp_path, 4)
    cohort = load_cohort(write_csv(tmp_path / "cohort.csv", rows))
    assert cohort.case_ids == ["p0", "p1", "p2", "p3"] and cohort.channels == 2 and cohort[0].layout == "manifest"
    assert [c.split for c in cohort] == ["train", "val", "test", "train"]
    assert cohort.manifest_split() == {"train": ["p0", "p3"], "val": ["p1"], "test": ["p2"]}
    case = cohort.load_case("p1")
    t1, _ = read_image(tmp_path / "data" / "p1" / "t1.nii.gz")
    t2, _ = read_image(tmp_path / "data" / "p1" / "t2.nii.gz")
    np.testing.assert_array_equal(case.image, np.stack([t1, t2]))
    assert cohort.table()[1] == {"case_id": "p1", "shape": SHAPE3, "spacing": cohort[1].spacing, "channels": 2,
                                 "raters": 3, "split": "val"}


def test_yaml_manifest_lists_folder_glob_and_class_names(tmp_path):
    rows = _manifest_cases(tmp_path, 3)
    rows[1]["raters"] = "data/p1"  # a folder
    rows[2]["raters"] = ["data/p2/rater*.nii.gz"]  # a glob
    path = tmp_path / "cohort.yaml"
    path.write_text(yaml.safe_dump({"cases": rows, "class_names": ["background", "lesion"]}))
    cohort = load_cohort(path)
    assert cohort.class_names == ["background", "lesion"] and cohort.num_classes() == 2
    assert [c.num_raters for c in cohort] == [3, 3, 3] and cohort.channels == 2
    assert [Path(f).name for f in cohort["p2"].rater_files] == ["rater1.nii.gz", "rater2.nii.gz", "rater3.nii.gz"]
    assert load_cohort(path, class_names=["bg", "fg"]).class_names == ["bg", "fg"]
    # .yml and a bare list of cases
    (tmp_path / "c.yml").write_text(yaml.safe_dump(rows))
    assert len(load_cohort(tmp_path / "c.yml")) == 3


def test_manifest_without_split_column(tmp_path):
    cohort = load_cohort(write_csv(tmp_path / "c.csv", _manifest_cases(tmp_path, 3), split=False))
    assert all(c.split is None for c in cohort)
    with pytest.raises(ValueError, match="no split column"):
        cohort.manifest_split()


def test_manifest_missing_columns_refused(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("id,image\na,b.nii.gz\n")
    with pytest.raises(ValueError, match="case_id"):
        load_cohort(path)


# ----------------------------------------------------------------------------------------------
# header scan
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_header_scan_equals_read_image_3d(tmp_path, suffix):
    angle = 0.3
    direction = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    path = write_image(tmp_path / f"a{suffix}", np.zeros(SHAPE3, np.int16), spacing=SPACING3,
                       origin=(-40.0, 12.5, -7.0), direction=direction)
    header = read_header(path)
    arr, meta = read_image(path)
    assert header.shape == arr.shape
    np.testing.assert_allclose(header.spacing, meta.spacing)
    np.testing.assert_allclose(header.origin, meta.origin)
    np.testing.assert_allclose(np.reshape(header.direction, (3, 3)), meta.direction)
    np.testing.assert_allclose(np.reshape(header.direction, (3, 3)), direction, atol=1e-6)


def test_header_scan_equals_read_image_2d_tiff_png_npy(tmp_path):
    lab = np.zeros((12, 10), np.uint8)
    for suffix in (".nii.gz", ".tif", ".png"):
        path = write_image(tmp_path / f"b{suffix}", lab, spacing=(0.5, 0.25) if suffix != ".png" else None,
                           origin=(3.0, -2.0) if suffix == ".nii.gz" else None)
        header = read_header(path)
        arr, meta = read_image(path)
        assert header.shape == arr.shape == (12, 10)
        if meta.spacing is not None:
            np.testing.assert_allclose(header.spacing, meta.spacing)
        if meta.origin is not None:
            np.testing.assert_allclose(header.origin, meta.origin)
    np.save(tmp_path / "c.npy", np.zeros((1, 12, 10)))
    assert read_header(tmp_path / "c.npy").shape == (12, 10)


def test_cohort_geometry_is_read_images_geometry(tmp_path):
    root = generic_cohort(tmp_path / "c", n=2)
    cohort = load_cohort(root)
    for info in cohort:
        arr, meta = read_image(info.image_files[0])
        assert info.shape == arr.shape
        np.testing.assert_allclose(info.spacing, meta.spacing)
        np.testing.assert_allclose(info.origin, meta.origin)
        np.testing.assert_allclose(np.reshape(info.direction, (3, 3)), meta.direction)


def test_manifest_of_200_tiny_cases_scans(tmp_path):
    rows = []
    lab = np.zeros((4, 4, 4), np.uint8)
    for i in range(200):
        for name in ("img", "r1", "r2"):
            write_image(tmp_path / f"{name}_{i}.nii.gz", lab, spacing=(2.0, 1.0, 1.0), origin=(float(i), 0.0, 0.0))
        rows.append({"case_id": f"c{i}", "image": f"img_{i}.nii.gz", "raters": f"r1_{i}.nii.gz;r2_{i}.nii.gz",
                     "split": "train"})
    path = write_csv(tmp_path / "big.csv", rows)
    start = time.perf_counter()
    cohort = load_cohort(path)
    elapsed = time.perf_counter() - start
    assert len(cohort) == 200 and cohort[199].origin == (199.0, 0.0, 0.0)
    assert elapsed < 30.0  # the ≤ 10 s for 1,000 cases is measured in benchmarks/bench_cohort.py


# ----------------------------------------------------------------------------------------------
# problems: raised naming case and file, skipped with on_error="skip"
# ----------------------------------------------------------------------------------------------
def _problem_check(source, case_id: str, file_part: str, message: str, good: int, kept: bool = False):
    with pytest.raises(ValueError) as info:
        load_cohort(source)
    text = str(info.value)
    assert repr(case_id) in text and file_part in text and message in text, text
    cohort = load_cohort(source, on_error="skip")
    assert len(cohort) == good and (case_id in cohort.case_ids) == kept
    assert any(isinstance(p, CohortProblem) and p.case_id == case_id and file_part in str(p.file)
               and message in p.message for p in cohort.problems), cohort.problems
    return cohort


def test_problem_missing_file(tmp_path):
    rows = _manifest_cases(tmp_path, 3)
    rows[1]["raters"] = rows[1]["raters"] + ["data/p1/rater9.nii.gz"]
    _problem_check(write_csv(tmp_path / "c.csv", rows), "p1", "rater9.nii.gz", "does not exist", good=2)


def test_problem_rater_on_another_grid(tmp_path):
    root = generic_cohort(tmp_path / "c", n=3)
    write_image(root / "case2" / "rater2.nii.gz", np.zeros(SHAPE3, np.uint8), spacing=(1.0, 0.8, 0.7),
                origin=_origin(1), overwrite=True)
    _problem_check(root, "case2", "rater2.nii.gz", "another grid", good=2)
    write_image(root / "case3" / "rater3.nii.gz", np.zeros(SHAPE3, np.uint8), spacing=SPACING3,
                origin=(0.0, 0.0, 0.0), overwrite=True)
    cohort = load_cohort(root, on_error="skip")
    assert cohort.case_ids == ["case1"]
    assert "origin" in str(cohort.problems[1]) and "rater3" in str(cohort.problems[1])


def test_problem_shape_mismatch(tmp_path):
    root = generic_cohort(tmp_path / "c", n=2)
    write_image(root / "case1" / "image.nii.gz", np.zeros((6, 12, 9), np.float32), spacing=SPACING3,
                origin=_origin(0), overwrite=True)
    _problem_check(root, "case1", "image.nii.gz", "shape", good=1)


def test_problem_wrong_channel_count(tmp_path):
    rows = _manifest_cases(tmp_path, 3)
    rows[2]["image"] = rows[2]["image"][:1]
    _problem_check(write_csv(tmp_path / "c.csv", rows), "p2", "t1.nii.gz", "1 image channel", good=2)


def test_problem_unreadable_file(tmp_path):
    root = generic_cohort(tmp_path / "c", n=3)
    (root / "case1" / "rater1.nii.gz").write_bytes(b"not a nifti file at all" * 10)
    _problem_check(root, "case1", "rater1.nii.gz", "cannot be read", good=2)


def test_problem_truncated_file_found_by_the_scan(tmp_path):
    root = generic_cohort(tmp_path / "c", n=2)
    data = (root / "case2" / "image.nii.gz").read_bytes()
    (root / "case2" / "image.nii.gz").write_bytes(data[: len(data) // 2])
    _problem_check(root, "case2", "image.nii.gz", "truncated", good=1)


def test_problem_duplicate_case_id(tmp_path):
    rows = _manifest_cases(tmp_path, 3)
    rows[2]["case_id"] = "p0"
    cohort = _problem_check(write_csv(tmp_path / "c.csv", rows), "p0", "c.csv", "more than once", good=2, kept=True)
    assert cohort.case_ids == ["p0", "p1"]


def test_problem_no_rater_and_bad_split(tmp_path):
    rows = _manifest_cases(tmp_path, 3)
    rows[0]["raters"] = ""
    rows[1]["split"] = "holdout"
    cohort = load_cohort(write_csv(tmp_path / "c.csv", rows), on_error="skip")
    assert cohort.case_ids == ["p2"]
    messages = {p.case_id: p.message for p in cohort.problems}
    assert "no rater" in messages["p0"] and "holdout" in messages["p1"]


def test_no_good_case_raises(tmp_path):
    root = generic_cohort(tmp_path / "c", n=1)
    (root / "case1" / "rater1.nii.gz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no usable case"):
        load_cohort(root, on_error="skip")


def test_folder_without_labels_is_a_problem(tmp_path):
    root = generic_cohort(tmp_path / "c", n=2)
    (root / "empty").mkdir()
    cohort = _problem_check(root, "empty", "empty", "no label file", good=2)
    assert len(cohort.problems) == 1


# ----------------------------------------------------------------------------------------------
# load_case
# ----------------------------------------------------------------------------------------------
def test_load_case_equals_load_raters(tmp_path):
    root = generic_cohort(tmp_path / "c", n=2, num_classes=3)
    cohort = load_cohort(root)
    for info in cohort:
        case = cohort.load_case(info.case_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rs = load_raters(root / info.case_id)
        np.testing.assert_array_equal(case.raters, rs.labels)
        assert case.raters.dtype == rs.labels.dtype
        np.testing.assert_allclose(case.spacing, rs.spacing)
        np.testing.assert_allclose(case.origin, rs.origin)
        np.testing.assert_allclose(case.direction, rs.direction)
        np.testing.assert_allclose(case.image[0], rs.image)


def test_load_case_keeps_file_label_values_across_cases(tmp_path):
    root = tmp_path / "c"
    for i, labels in enumerate(([0, 1, 4], [0, 1, 2, 4])):
        case = root / f"case{i}"
        case.mkdir(parents=True)
        lab = np.zeros((8, 8), np.uint8)
        for k, v in enumerate(labels):
            lab[k] = v
        for r in range(2):
            write_image(case / f"r{r}.nii.gz", lab)
    cohort = load_cohort(root)
    assert cohort.label_values() == [0, 1, 2, 4] and cohort.num_classes() == 5
    assert set(np.unique(cohort.load_case("case0").raters)) == {0, 1, 4}


def test_single_rater_and_no_image(tmp_path):
    root = generic_cohort(tmp_path / "c", n=2, channels=(), num_raters=1)
    cohort = load_cohort(root)
    assert cohort.channels == 0 and cohort.num_raters == 1
    case = cohort.load_case(0)
    assert case.image is None and case.raters.shape == (1, *SHAPE3)


def test_getitem_errors(tmp_path):
    cohort = load_cohort(generic_cohort(tmp_path / "c", n=2))
    with pytest.raises(KeyError, match="nope"):
        cohort["nope"]
    with pytest.raises(IndexError, match="5"):
        cohort[5]
    with pytest.raises(TypeError, match="key"):
        cohort[1.0]


# ----------------------------------------------------------------------------------------------
# resampling
# ----------------------------------------------------------------------------------------------
def _sitk_reference(array, spacing, origin, target, interpolator):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(reversed(spacing)))
    image.SetOrigin(tuple(reversed(origin)))
    f = sitk.ResampleImageFilter()
    f.SetOutputSpacing(tuple(reversed(target)))
    f.SetOutputOrigin(image.GetOrigin())
    f.SetOutputDirection(image.GetDirection())
    f.SetSize([int(round(n * s / t)) for n, s, t in zip(reversed(array.shape), reversed(spacing), reversed(target))])
    f.SetInterpolator(interpolator)
    f.SetDefaultPixelValue(0)
    return sitk.GetArrayFromImage(f.Execute(image))


def test_resampling_matches_simpleitk_and_keeps_origin(tmp_path):
    root = generic_cohort(tmp_path / "c", n=2)
    target = (1.25, 1.6, 1.4)
    cohort = load_cohort(root, target_spacing=target)
    assert cohort.target_spacing == target
    raw = load_cohort(root).load_case("case2")
    case = cohort.load_case("case2")
    assert case.spacing == target and np.allclose(case.origin, _origin(1))
    expected_shape = tuple(int(round(n * s / t)) for n, s, t in zip(SHAPE3, SPACING3, target))
    assert case.raters.shape == (3, *expected_shape) and case.image.shape == (1, *expected_shape)
    ref_img = _sitk_reference(raw.image[0], SPACING3, raw.origin, target, sitk.sitkLinear)
    ref_lab = _sitk_reference(raw.raters[1], SPACING3, raw.origin, target, sitk.sitkNearestNeighbor)
    np.testing.assert_allclose(case.image[0], ref_img, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(case.raters[1], ref_lab)
    assert case.raters.dtype == np.uint8 and case.image.dtype == np.float32


def test_resample_functions_validate():
    with pytest.raises(ValueError, match="target_spacing"):
        resample_array(np.zeros((4, 4)), spacing=(1.0, 1.0), origin=(0.0, 0.0), direction=None,
                       target_spacing=(1.0, -1.0))
    with pytest.raises(ValueError, match="interpolation"):
        resample_array(np.zeros((4, 4)), spacing=(1.0, 1.0), origin=(0.0, 0.0), direction=None,
                       target_spacing=(1.0, 1.0), interpolation="cubic")
    with pytest.raises(ValueError, match="grid"):
        resample_case(np.zeros((1, 4, 5)), np.zeros((2, 4, 4), np.uint8), spacing=(1.0, 1.0), origin=(0.0, 0.0),
                      direction=None, target_spacing=(2.0, 2.0))


def test_target_spacing_validated(tmp_path):
    root = generic_cohort(tmp_path / "c", n=1)
    with pytest.raises(ValueError, match="target_spacing"):
        load_cohort(root, target_spacing=(1.0, 1.0))
    assert load_cohort(root, target_spacing=2.0).target_spacing == (2.0, 2.0, 2.0)


# ----------------------------------------------------------------------------------------------
# digests, labels, subsets, dicts, validation
# ----------------------------------------------------------------------------------------------
def test_content_digest(tmp_path):
    root = generic_cohort(tmp_path / "c", n=2)
    cohort = load_cohort(root)
    d1 = cohort.content_digest("case1")
    assert len(d1) == 64 and d1 == cohort.content_digest(0) and d1 != cohort.content_digest("case2")
    write_image(root / "case1" / "rater1.nii.gz", np.ones(SHAPE3, np.uint8), spacing=SPACING3, origin=_origin(0),
                overwrite=True)
    assert cohort.content_digest("case1") == d1  # cached per instance
    assert load_cohort(root).content_digest("case1") != d1


def test_label_values_and_num_classes(tmp_path):
    cohort = load_cohort(generic_cohort(tmp_path / "c", n=2, num_classes=3))
    assert cohort.label_values() == [0, 1, 2] and cohort.num_classes() == 3
    empty = tmp_path / "e"
    generic_cohort(empty, n=1, num_raters=2, num_classes=1)
    assert load_cohort(empty).num_classes() == 2


def test_subset_and_to_dict(tmp_path):
    root = generic_cohort(tmp_path / "c", n=3)
    cohort = load_cohort(root, class_names=["bg", "fg"], target_spacing=(2.0, 2.0, 2.0))
    sub = cohort.subset(["case3", "case1"])
    assert sub.case_ids == ["case1", "case3"] and sub.class_names == ["bg", "fg"]
    assert sub.target_spacing == cohort.target_spacing
    with pytest.raises(KeyError, match="case9"):
        cohort.subset(["case9"])
    d = cohort.to_dict()
    assert d == {"source": str(root.resolve()), "class_names": ["bg", "fg"], "target_spacing": [2.0, 2.0, 2.0]}
    again = load_cohort(**d)
    assert again.case_ids == cohort.case_ids and again.target_spacing == cohort.target_spacing
    assert load_cohort(cohort) is cohort
    assert "cases=3" in repr(cohort)


def test_cohort_pickles_for_loader_workers(tmp_path):
    import pickle

    cohort = load_cohort(generic_cohort(tmp_path / "c", n=2), target_spacing=(2.0, 2.0, 2.0))
    again = pickle.loads(pickle.dumps(cohort))
    assert again.case_ids == cohort.case_ids and again.target_spacing == cohort.target_spacing
    np.testing.assert_array_equal(again.load_case(1).raters, cohort.load_case(1).raters)


def test_load_cohort_validates_arguments(tmp_path):
    root = generic_cohort(tmp_path / "c", n=1)
    with pytest.raises(ValueError, match="on_error"):
        load_cohort(root, on_error="ignore")
    with pytest.raises(TypeError, match="source"):
        load_cohort(42)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_cohort(tmp_path / "nowhere")
    with pytest.raises(TypeError, match="class_names"):
        load_cohort(root, class_names="bg")
    with pytest.raises(TypeError, match="task"):
        load_cohort(root, task="1")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="manifest"):
        load_cohort(tmp_path / "x.txt")


def test_a_case_with_fewer_raters_than_the_others_is_kept_with_a_warning(tmp_path):
    from napari_seg_uncertainty.core.cohort import make_phantom_cohort

    source = make_phantom_cohort(4, tmp_path / "c", ndim=2, layout="generic", num_raters=3, seed=2)
    missing = sorted((tmp_path / "c" / "case_002").glob("rater_2*"))
    assert missing
    for path in missing:
        path.unlink()
    with pytest.warns(UserWarning, match=r"fewer raters than the usual 3: 'case_002' \(2\)"):
        cohort = load_cohort(source)
    assert len(cohort) == 4 and cohort["case_002"].num_raters == 2
