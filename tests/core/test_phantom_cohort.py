"""The synthetic cohort generator (core/cohort/phantom.py) and real-image cases (core/cohort/real_cases.py)."""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_seg_uncertainty.core.cohort.phantom import RATER_HABITS, make_phantom_cohort, phantom_class_names
from napari_seg_uncertainty.core.io import read_image
from napari_seg_uncertainty.core.raters import load_raters

FOLDER_LAYOUTS = ("generic", "qubiq", "msseg")


def _case_folders(root: str) -> list[Path]:
    return sorted(p for p in Path(root).iterdir() if p.is_dir())


def _load(folder: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one-rater warnings are not the point here
        return load_raters(folder)


@pytest.mark.parametrize("layout", FOLDER_LAYOUTS)
@pytest.mark.parametrize("ndim", [2, 3])
def test_every_case_folder_loads_with_load_raters(tmp_path, layout, ndim):
    source = make_phantom_cohort(3, tmp_path, ndim=ndim, layout=layout, num_raters=3, seed=2)
    assert source == str(tmp_path)
    folders = _case_folders(source)
    assert [f.name for f in folders] == ["case_000", "case_001", "case_002"]
    expected_shape = (48, 48) if ndim == 2 else (16, 40, 40)
    spacings, origins = set(), set()
    for folder in folders:
        raters = _load(folder)
        assert raters.labels.shape == (3, *expected_shape)
        assert raters.image is not None and raters.image.shape == expected_shape
        assert raters.image.dtype == np.float32
        spacings.add(raters.spacing)
        origins.add(tuple(raters.origin))
        sp = raters.spacing
        assert max(sp) / min(sp) > 1.15  # anisotropic
        if ndim == 3:
            assert 2.0 < sp[0] < 3.0 and 0.6 < sp[1] == sp[2] < 1.0
    assert len(spacings) == 3 and len(origins) == 3  # every case on its own grid
    assert all(any(v != 0 for v in o) for o in origins)


def test_layout_file_names(tmp_path):
    make_phantom_cohort(1, tmp_path / "q", layout="qubiq", num_raters=2, ndim=2)
    assert sorted(os.listdir(tmp_path / "q" / "case_000")) == ["image.nii.gz", "task01_seg01.nii.gz",
                                                               "task01_seg02.nii.gz"]
    make_phantom_cohort(1, tmp_path / "m", layout="msseg", num_raters=2, ndim=2)
    case = tmp_path / "m" / "case_000"
    assert sorted(os.listdir(case / "Masks")) == ["ManualSegmentation_1.nii.gz", "ManualSegmentation_2.nii.gz"]
    assert os.listdir(case / "Preprocessed_Data") == ["FLAIR_preprocessed.nii.gz"]
    make_phantom_cohort(1, tmp_path / "g", layout="generic", num_raters=2, ndim=2)
    assert sorted(os.listdir(tmp_path / "g" / "case_000")) == ["image.nii.gz", "rater_1.nii.gz", "rater_2.nii.gz"]


def test_geometry_in_the_files_is_exact(tmp_path):
    """Spacings are multiples of 1/128 mm and origins of 0.5 mm: a float32 NIfTI header holds them exactly."""
    make_phantom_cohort(4, tmp_path, ndim=3, seed=5)
    for folder in _case_folders(tmp_path):
        _, image_meta = read_image(folder / "image.nii.gz")
        for rater in ("rater_1.nii.gz", "rater_2.nii.gz", "rater_3.nii.gz"):
            _, meta = read_image(folder / rater)
            assert meta.spacing == image_meta.spacing and meta.origin == image_meta.origin
        assert all(float(s) * 128 == round(float(s) * 128) for s in image_meta.spacing)
        assert all(float(o) * 2 == round(float(o) * 2) for o in image_meta.origin)
        assert all(-60 <= o <= 60 for o in image_meta.origin)


def test_npz_layout_stacks_every_case(tmp_path):
    source = make_phantom_cohort(5, tmp_path, ndim=2, layout="npz", num_raters=4, num_classes=3, seed=1)
    assert source == str(tmp_path / "cohort.npz")
    with np.load(source, allow_pickle=False) as data:
        assert set(data.files) == {"images", "masks", "case_ids", "spacing"}
        assert data["images"].shape == (5, 48, 48) and data["images"].dtype == np.float32
        assert data["masks"].shape == (5, 4, 48, 48) and data["masks"].dtype == np.uint8
        assert data["case_ids"].tolist() == [f"case_{i:03d}" for i in range(5)]
        assert data["spacing"].shape == (2,)
        assert set(np.unique(data["masks"]).tolist()) == {0, 1, 2}
        # same anatomy as the folder layouts (only the spacing is shared in the archive)
        masks = data["masks"]
    folder = make_phantom_cohort(5, tmp_path / "folders", ndim=2, layout="generic", num_raters=4,
                                 num_classes=3, seed=1)
    assert _load(Path(folder) / "case_003").labels.shape == masks[3].shape


@pytest.mark.parametrize("channels", [1, 3])
def test_manifest_layout(tmp_path, channels):
    source = make_phantom_cohort(10, tmp_path, ndim=2, layout="manifest", channels=channels, num_raters=2, seed=4)
    assert source == str(tmp_path / "cohort.csv")
    with open(source, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["case_id", "image", "raters", "split"]
    assert [r["case_id"] for r in rows] == [f"case_{i:03d}" for i in range(10)]
    splits = [r["split"] for r in rows]
    assert splits.count("train") == 6 and splits.count("val") == 2 and splits.count("test") == 2
    for row in rows:
        images = row["image"].split(";")
        raters = row["raters"].split(";")
        assert len(images) == channels and len(raters) == 2
        assert not any(os.path.isabs(p) for p in images + raters)
        grids = [read_image(tmp_path / p)[1] for p in images + raters]
        assert all(g.spacing == grids[0].spacing and g.origin == grids[0].origin for g in grids)
        if channels > 1:
            assert images == [f"{row['case_id']}/image_{c:04d}.nii.gz" for c in range(channels)]
            first, second = (read_image(tmp_path / p)[0] for p in images[:2])
            assert not np.allclose(first, second)  # different contrasts
    # the split is deterministic for a seed
    again = make_phantom_cohort(10, tmp_path / "again", ndim=2, layout="manifest", channels=channels,
                                num_raters=2, seed=4)
    with open(again, newline="", encoding="utf-8") as handle:
        assert [r["split"] for r in csv.DictReader(handle)] == splits


def test_manifest_without_split_and_small_cohorts(tmp_path):
    source = make_phantom_cohort(2, tmp_path, ndim=2, layout="manifest", split=False)
    with open(source, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["case_id", "image", "raters"]
    one = make_phantom_cohort(1, tmp_path / "one", ndim=2, layout="manifest")
    with open(one, newline="", encoding="utf-8") as handle:
        assert [r["split"] for r in csv.DictReader(handle)] == ["train"]


def test_same_seed_same_cases_other_seed_other_cases(tmp_path):
    a = make_phantom_cohort(2, tmp_path / "a", ndim=2, seed=3)
    b = make_phantom_cohort(2, tmp_path / "b", ndim=2, seed=3)
    c = make_phantom_cohort(2, tmp_path / "c", ndim=2, seed=4)
    ra, rb, rc = (_load(Path(s) / "case_001") for s in (a, b, c))
    np.testing.assert_array_equal(ra.labels, rb.labels)
    np.testing.assert_array_equal(ra.image, rb.image)
    assert ra.spacing == rb.spacing and ra.origin == rb.origin
    assert not np.array_equal(ra.labels, rc.labels)


def test_cases_vary_in_anatomy_and_contrast(tmp_path):
    source = make_phantom_cohort(6, tmp_path, ndim=2, num_classes=2)
    volumes, means = [], []
    for folder in _case_folders(source):
        raters = _load(folder)
        volumes.append(int((raters.labels[1] > 0).sum()))
        means.append(float(raters.image[raters.image > 0].mean()))
        assert (raters.image == 0).any() and (raters.image > 0).mean() > 0.5  # a body, zero outside
    assert len(set(volumes)) == 6 and np.std(volumes) > 10
    assert np.std(means) > 10


def test_rater_habits(tmp_path):
    """Over-segmenting raters outline more than under-segmenting ones; the third misses the nodule."""
    assert RATER_HABITS == ("over-segments", "under-segments", "misses small structures")
    from scipy import ndimage as ndi

    source = make_phantom_cohort(8, tmp_path, ndim=2, num_raters=6, num_classes=2, seed=0)
    over, under, components = [], [], np.zeros(6)
    for folder in _case_folders(source):
        labels = _load(folder).labels > 0
        over += [labels[0].sum(), labels[3].sum()]
        under += [labels[1].sum(), labels[4].sum()]
        components += [ndi.label(labels[r])[1] for r in range(6)]
    assert np.mean(over) > 1.15 * np.mean(under)
    # raters 2 and 5 miss the small satellite most of the time: fewer connected components
    assert components[2] + components[5] < components[1] + components[4]
    assert components[2] < 8 * 2


@pytest.mark.parametrize("num_classes", [2, 3, 4])
def test_num_classes_and_nesting(tmp_path, num_classes):
    source = make_phantom_cohort(3, tmp_path, ndim=3, num_classes=num_classes, num_raters=3, seed=1)
    seen = set()
    for folder in _case_folders(source):
        labels = _load(folder).labels
        seen |= set(np.unique(labels).tolist())
        if num_classes >= 3:
            # nested: every lesion/core voxel lies inside the rater's organ outline (labels > 0 there)
            from scipy import ndimage as ndi

            for r in range(3):
                inner = labels[r] >= 2
                filled = ndi.binary_fill_holes(labels[r] > 0)
                assert not (inner & ~filled).any()
    assert seen == set(range(num_classes))
    assert phantom_class_names(num_classes) == ["background", "organ", "lesion", "core"][:num_classes]


def test_shape_argument_and_defaults(tmp_path):
    make_phantom_cohort(1, tmp_path / "a", ndim=2, shape=(20, 24))
    assert read_image(tmp_path / "a" / "case_000" / "rater_1.nii.gz")[0].shape == (20, 24)
    make_phantom_cohort(1, tmp_path / "b", ndim=3, shape=(8, 16, 12), num_raters=1)
    assert read_image(tmp_path / "b" / "case_000" / "rater_1.nii.gz")[0].shape == (8, 16, 12)
    width = make_phantom_cohort(1000, tmp_path / "w", ndim=2, shape=(8, 8), num_raters=1, layout="npz")
    with np.load(width) as data:
        assert data["case_ids"][-1] == "case_999"


def test_never_overwrites_without_permission(tmp_path):
    make_phantom_cohort(3, tmp_path, ndim=2, num_raters=3)
    before = (tmp_path / "case_001" / "rater_2.nii.gz").read_bytes()
    with pytest.raises(FileExistsError, match="case_000"):
        make_phantom_cohort(3, tmp_path, ndim=2, num_raters=3, seed=9)
    assert (tmp_path / "case_001" / "rater_2.nii.gz").read_bytes() == before
    # overwrite: new content, and files of a larger earlier cohort removed
    make_phantom_cohort(2, tmp_path, ndim=2, num_raters=2, seed=9, overwrite=True)
    assert sorted(p.name for p in _case_folders(tmp_path)) == ["case_000", "case_001"]
    assert sorted(os.listdir(tmp_path / "case_001")) == ["image.nii.gz", "rater_1.nii.gz", "rater_2.nii.gz"]
    # a file that is not ours stays
    (tmp_path / "case_000" / "notes.txt").write_text("keep")
    make_phantom_cohort(1, tmp_path, ndim=2, num_raters=2, overwrite=True)
    assert (tmp_path / "case_000" / "notes.txt").read_text() == "keep"
    # overwrite never deletes outside the case folders, nor for the archive layout
    make_phantom_cohort(1, tmp_path, ndim=2, num_raters=2, layout="manifest", overwrite=True)
    make_phantom_cohort(1, tmp_path, ndim=2, num_raters=2, layout="npz", overwrite=True)
    assert (tmp_path / "cohort.csv").is_file() and (tmp_path / "cohort.npz").is_file()
    assert (tmp_path / "case_000" / "rater_2.nii.gz").is_file()
    # the manifest and the archive are protected as well
    make_phantom_cohort(1, tmp_path / "m", ndim=2, layout="manifest")
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "cohort.npz").write_bytes(b"not mine")
    with pytest.raises(FileExistsError, match="cohort.npz"):
        make_phantom_cohort(1, tmp_path / "n", ndim=2, layout="npz")
    assert (tmp_path / "n" / "cohort.npz").read_bytes() == b"not mine"
    (tmp_path / "m" / "case_000").rename(tmp_path / "m" / "moved")
    with pytest.raises(FileExistsError, match="cohort.csv"):
        make_phantom_cohort(1, tmp_path / "m", ndim=2, layout="manifest")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_cases": 0}, ValueError, "n_cases"),
        ({"n_cases": 2.5}, TypeError, "n_cases"),
        ({"ndim": 4}, ValueError, "ndim"),
        ({"layout": "lidc"}, ValueError, "layout"),
        ({"num_raters": 0}, ValueError, "num_raters"),
        ({"num_classes": 5}, ValueError, "num_classes"),
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"shape": (8, 8)}, ValueError, "shape"),
        ({"shape": (4, 16, 16)}, ValueError, "shape"),
        ({"shape": "big"}, TypeError, "shape"),
        ({"channels": 0}, ValueError, "channels"),
        ({"channels": 2, "layout": "qubiq"}, ValueError, "channels=2 needs layout"),
        ({"channels": 2, "layout": "msseg"}, ValueError, "channels"),
        ({"seed": -1}, ValueError, "seed"),
        ({"overwrite": "yes"}, TypeError, "overwrite"),
        ({"split": 1}, TypeError, "split"),
    ],
)
def test_arguments_are_validated(tmp_path, kwargs, error, match):
    args = {"n_cases": 2, "ndim": 3, **kwargs}
    n_cases = args.pop("n_cases")
    with pytest.raises(error, match=match):
        make_phantom_cohort(n_cases, tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


def test_out_dir_is_checked(tmp_path):
    with pytest.raises(TypeError, match="out_dir"):
        make_phantom_cohort(1, 3)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="out_dir"):
        make_phantom_cohort(1, tmp_path / "file")


# ----------------------------------------------------------------------------------------------
# with load_cohort
# ----------------------------------------------------------------------------------------------


def _expected_geometry(seed: int, index: int, ndim: int, layout: str):
    from napari_seg_uncertainty.core.cohort.phantom import _case_geometry, _case_spacing

    shared = _case_spacing(np.random.default_rng([seed, 0]), ndim) if layout == "npz" else None
    spacing, origin = _case_geometry(np.random.default_rng([seed, index]), ndim, shared)
    return spacing, ((0.0,) * ndim if layout == "npz" else origin)  # the archive holds no origin


@pytest.mark.parametrize("layout", ["generic", "qubiq", "msseg", "npz", "manifest"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_every_layout_loads_with_load_cohort(tmp_path, layout, ndim):
    from napari_seg_uncertainty.core.cohort import load_cohort

    shape = (20, 24) if ndim == 2 else (8, 16, 20)
    source = make_phantom_cohort(5, tmp_path, ndim=ndim, layout=layout, num_raters=3, num_classes=3,
                                 shape=shape, seed=6)
    cohort = load_cohort(source)
    assert len(cohort) == 5 and cohort.problems == ()
    assert cohort.case_ids == [f"case_{i:03d}" for i in range(5)]
    assert cohort.ndim == ndim and cohort.channels == 1 and cohort.num_raters == 3
    assert cohort.num_classes() == 3
    for i, info in enumerate(cohort):
        assert info.layout == layout
        assert info.shape == shape
        spacing, origin = _expected_geometry(6, i, ndim, layout)
        assert info.spacing == pytest.approx(spacing, abs=1e-9)
        assert info.origin == pytest.approx(origin, abs=1e-9)
        assert np.allclose(np.reshape(info.direction, (ndim, ndim)), np.eye(ndim))
        assert info.split in (("train", "val", "test") if layout == "manifest" else (None,))
        case = cohort.load_case(info.case_id)
        assert case.image.shape == (1, *shape) and case.raters.shape == (3, *shape)
        assert case.spacing == pytest.approx(spacing) and case.origin == pytest.approx(origin)
    if layout == "manifest":
        split = cohort.manifest_split()
        assert sorted(map(len, split.values())) == [1, 1, 3]
    if layout != "npz":
        assert len({info.spacing for info in cohort}) == 5 and len({info.origin for info in cohort}) == 5


@pytest.mark.parametrize("layout", ["generic", "npz", "manifest"])
def test_several_channels_load_with_load_cohort(tmp_path, layout):
    from napari_seg_uncertainty.core.cohort import load_cohort

    source = make_phantom_cohort(2, tmp_path, ndim=2, layout=layout, channels=4, shape=(16, 16), seed=1)
    cohort = load_cohort(source)
    assert cohort.channels == 4 and all(info.channels == 4 for info in cohort)
    image = cohort.load_case(0).image
    assert image.shape == (4, 16, 16)
    assert len({round(float(c.mean()), 3) for c in image}) == 4  # four contrasts


# ----------------------------------------------------------------------------------------------
# real-image cases (scans shipped inside installed packages)
# ----------------------------------------------------------------------------------------------


def _installed(package: str, *parts: str) -> bool:
    from napari_seg_uncertainty.core.cohort.real_cases import _package_dir

    base = _package_dir(package)
    return base is not None and base.joinpath(*parts).is_file()


_HAS_NIBABEL = _installed("nibabel", "tests", "data", "anatomical.nii")
_HAS_PYDICOM = _installed("pydicom", "data", "test_files", "CT_small.dcm")
_HAS_NILEARN = _installed("nilearn", "datasets", "data", "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")


def _real(out_dir, **kwargs):
    from napari_seg_uncertainty.core.cohort.real_cases import real_image_cases

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = real_image_cases(out_dir, **kwargs)
    return source, [str(w.message) for w in caught]


@pytest.mark.skipif(not (_HAS_NIBABEL or _HAS_PYDICOM), reason="neither nibabel's nor pydicom's test scans")
@pytest.mark.parametrize("layout", ["generic", "qubiq", "msseg", "manifest"])
def test_real_cases_2d_load_as_a_cohort(tmp_path, layout):
    from napari_seg_uncertainty.core.cohort import load_cohort

    source, messages = _real(tmp_path, ndim=2, layout=layout)
    cohort = load_cohort(source)
    expected = (["nibabel_anatomical", "nibabel_reoriented"] if _HAS_NIBABEL else []) + (
        ["pydicom_ct_small", "pydicom_mr_small"] if _HAS_PYDICOM else [])
    assert [i for i in cohort.case_ids if not i.startswith("mni152")] == expected
    assert cohort.ndim == 2 and cohort.num_raters == 3 and cohort.num_classes() == 3
    if not _HAS_NILEARN:
        assert any("nilearn (not installed)" in m for m in messages)
    for info in cohort:
        case = cohort.load_case(info.case_id)
        volumes = [(case.raters[r] > 0).sum() for r in range(3)]
        assert min(volumes) > 0 and len(set(volumes)) > 1  # the raters disagree
    if _HAS_PYDICOM:  # the scan's geometry is kept
        original = read_image(Path(__import__("pydicom").__file__).parent / "data" / "test_files" / "CT_small.dcm")[1]
        ct = cohort["pydicom_ct_small"]
        assert ct.spacing == pytest.approx(original.spacing, rel=1e-5)
        assert ct.origin == pytest.approx(original.origin, abs=1e-3)
        body = cohort.load_case("pydicom_ct_small").raters > 0
        assert body[0].sum() >= body[1].sum() >= body[2].sum()  # lenient to strict


@pytest.mark.skipif(not _HAS_NIBABEL, reason="nibabel's test scans are not installed")
def test_real_cases_3d_keep_each_scans_geometry(tmp_path):
    from napari_seg_uncertainty.core.cohort import load_cohort
    from napari_seg_uncertainty.core.cohort.real_cases import _package_dir

    source, _ = _real(tmp_path, ndim=3, num_raters=2)
    cohort = load_cohort(source)
    assert cohort.ndim == 3 and cohort.num_raters == 2
    info = cohort["nibabel_reoriented"]
    original = read_image(_package_dir("nibabel") / "tests" / "data" / "reoriented_anat_moved.nii")[1]
    assert info.shape == (22, 26, 21)
    assert info.spacing == pytest.approx(original.spacing)
    assert info.origin == pytest.approx(original.origin, abs=1e-3)
    assert np.allclose(np.reshape(info.direction, (3, 3)), original.direction, atol=1e-4)
    assert not np.allclose(np.reshape(info.direction, (3, 3)), np.eye(3))  # a reoriented scan
    with pytest.raises(FileExistsError, match="already exists"):
        _real(tmp_path, ndim=3, num_raters=2)
    _real(tmp_path, ndim=3, num_raters=2, overwrite=True)


@pytest.mark.skipif(not _HAS_NILEARN, reason="nilearn (MNI152 template) is not installed")
@pytest.mark.parametrize("ndim", [2, 3])
def test_real_cases_mni152_tissue_raters(tmp_path, ndim):
    from napari_seg_uncertainty.core.cohort import load_cohort

    source, _ = _real(tmp_path, ndim=ndim)
    cohort = load_cohort(source)
    mni = [i for i in cohort.case_ids if i.startswith("mni152")]
    assert len(mni) == 3
    for case_id in mni:
        info = cohort[case_id]
        assert max(info.shape) <= 120 and min(info.spacing) >= 2.0
        raters = cohort.load_case(case_id).raters
        grey = [(raters[r] == 1).sum() for r in range(3)]
        assert grey[0] > grey[2] > 0  # thresholds from lenient (0.3) to strict (0.7)
    assert len({cohort[i].spacing for i in mni}) == (1 if ndim == 2 else 3)


def test_real_cases_arguments_and_nothing_installed(tmp_path, monkeypatch):
    from napari_seg_uncertainty.core.cohort import real_cases

    with pytest.raises(ValueError, match="layout='npz'"):
        real_cases.real_image_cases(tmp_path, layout="npz")
    with pytest.raises(ValueError, match="layout"):
        real_cases.real_image_cases(tmp_path, layout="folders")
    with pytest.raises(ValueError, match="ndim"):
        real_cases.real_image_cases(tmp_path, ndim=4)
    with pytest.raises(ValueError, match="num_raters"):
        real_cases.real_image_cases(tmp_path, num_raters=0)
    with pytest.raises(TypeError, match="overwrite"):
        real_cases.real_image_cases(tmp_path, overwrite=None)
    with pytest.raises(TypeError, match="out_dir"):
        real_cases.real_image_cases(None)
    monkeypatch.setattr(real_cases, "_package_dir", lambda package: None)
    with pytest.raises(FileNotFoundError, match="no real 3-D scan.*nilearn \\(not installed\\).*nibabel"):
        real_cases.real_image_cases(tmp_path / "none", ndim=3)
    assert not (tmp_path / "none").exists()


# ----------------------------------------------------------------------------------------------
# benchmarks/bench_cohort.py
# ----------------------------------------------------------------------------------------------


def test_bench_cohort_scan_smoke(tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cohort.py"
    spec = importlib.util.spec_from_file_location("bench_cohort", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.bench_scan(6, repeats=1, folder=str(tmp_path), shape=(8, 8))
    assert result["cases"] == 6 and result["files"] == 6 * 4
    assert len(result["scan_s"]) == 1 and result["scan_median_s"] > 0 and result["full_read_s"] > 0
    assert list(tmp_path.iterdir()) == []  # the temporary cohort is gone
    bench._print_scan(result)
