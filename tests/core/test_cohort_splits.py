"""Case-level splits of a cohort: fractions, k-fold, the manifest column and explicit lists — no case in two
splits, deterministic per seed, bad arguments refused by name (core/cohort/splits.py and Cohort.*split*)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_seg_uncertainty.core.cohort import load_cohort
from napari_seg_uncertainty.core.cohort.splits import check_split, fraction_split, kfold_split
from napari_seg_uncertainty.core.io import write_image

IDS = [f"case{i}" for i in range(23)]


def _check_partition(split: dict, ids: list[str], *, complete: bool = True) -> None:
    assert set(split) == {"train", "val", "test"}
    listed = split["train"] + split["val"] + split["test"]
    assert len(listed) == len(set(listed)), "a case is in two splits"
    assert set(listed) <= set(ids)
    if complete:
        assert set(listed) == set(ids)
    assert split["train"], "no training case"


@pytest.fixture(scope="module")
def npz_cohort(tmp_path_factory):
    path = tmp_path_factory.mktemp("splits") / "lidc.npz"
    np.savez(path, images=np.zeros((10, 4, 4), np.float32), masks=np.zeros((10, 2, 4, 4), np.uint8))
    return load_cohort(path)


# ----------------------------------------------------------------------------------------------
# fractions
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("val,test", [(0.2, 0.2), (0.0, 0.3), (0.3, 0.0), (0.0, 0.0), (0.45, 0.45)])
def test_fraction_split_is_a_partition(val, test):
    split = fraction_split(IDS, val=val, test=test, seed=3)
    _check_partition(split, IDS)
    assert len(split["val"]) == round(val * len(IDS)) and len(split["test"]) == round(test * len(IDS))


def test_fraction_split_deterministic_per_seed_and_in_cohort_order():
    a = fraction_split(IDS, val=0.2, test=0.2, seed=7)
    assert a == fraction_split(IDS, val=0.2, test=0.2, seed=7)
    assert a != fraction_split(IDS, val=0.2, test=0.2, seed=8)
    for key in a:
        assert a[key] == sorted(a[key], key=IDS.index)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_fraction_split_small_cohorts_keep_a_training_case(n):
    ids = IDS[:n]
    split = fraction_split(ids, val=0.2, test=0.2, seed=0)
    _check_partition(split, ids)
    if n >= 3:
        assert split["val"] and split["test"]


@pytest.mark.parametrize("kwargs,name", [
    ({"val": 1.2}, "val"), ({"val": -0.1}, "val"), ({"test": 1.0}, "test"), ({"test": float("nan")}, "test"),
    ({"val": 0.6, "test": 0.5}, "val + test"),
])
def test_bad_fractions_refused_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name.replace("+", r"\+")):
        fraction_split(IDS, **kwargs)


def test_bad_types_refused():
    with pytest.raises(TypeError, match="val"):
        fraction_split(IDS, val="0.2")
    with pytest.raises(TypeError, match="seed"):
        fraction_split(IDS, seed=1.5)
    with pytest.raises(ValueError, match="seed"):
        fraction_split(IDS, seed=-1)


# ----------------------------------------------------------------------------------------------
# k-fold
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("folds,test", [(5, 0.0), (3, 0.2), (2, 0.0)])
def test_kfold_every_case_in_exactly_one_val_fold(folds, test):
    splits = [kfold_split(IDS, folds, fold=k, test=test, seed=4) for k in range(folds)]
    for s in splits:
        _check_partition(s, IDS)
    tests = {tuple(s["test"]) for s in splits}
    assert len(tests) == 1, "the test set changes between folds"
    vals = sum((s["val"] for s in splits), [])
    non_test = [i for i in IDS if i not in splits[0]["test"]]
    assert sorted(vals) == sorted(non_test) and len(vals) == len(set(vals))
    sizes = [len(s["val"]) for s in splits]
    assert max(sizes) - min(sizes) <= 1


def test_kfold_deterministic_per_seed():
    assert kfold_split(IDS, 4, fold=2, seed=1) == kfold_split(IDS, 4, fold=2, seed=1)
    assert kfold_split(IDS, 4, fold=2, seed=1) != kfold_split(IDS, 4, fold=2, seed=2)


def test_kfold_bad_arguments():
    with pytest.raises(ValueError, match="fold"):
        kfold_split(IDS, 3, fold=3)
    with pytest.raises(ValueError, match="folds"):
        kfold_split(IDS, 1)
    with pytest.raises(ValueError, match="folds=5"):
        kfold_split(IDS[:4], 5)
    with pytest.raises(ValueError, match="test"):
        kfold_split(IDS, 3, test=1.5)
    with pytest.raises(TypeError, match="folds"):
        kfold_split(IDS, 2.0)


# ----------------------------------------------------------------------------------------------
# explicit and manifest
# ----------------------------------------------------------------------------------------------
def test_explicit_split_checked():
    ok = check_split({"train": IDS[:3], "test": IDS[3:5]}, IDS)
    assert ok == {"train": IDS[:3], "val": [], "test": IDS[3:5]}
    _check_partition(ok, IDS, complete=False)
    with pytest.raises(ValueError, match="nobody"):
        check_split({"train": ["nobody"]}, IDS)
    with pytest.raises(ValueError, match="case1.*two|one split"):
        check_split({"train": IDS[:3], "val": ["case1"]}, IDS)
    with pytest.raises(ValueError, match="holdout"):
        check_split({"train": IDS[:3], "holdout": IDS[3:4]}, IDS)
    with pytest.raises(ValueError, match="train"):
        check_split({"val": IDS[:3]}, IDS)
    with pytest.raises(TypeError, match="list of case ids"):
        check_split({"train": "case1"}, IDS)
    with pytest.raises(TypeError, match="dict"):
        check_split(["case1"], IDS)


def test_manifest_split_column(tmp_path):
    lab = np.zeros((4, 4), np.uint8)
    rows = []
    for i, split in enumerate(["train", "validation", "test", "train", "val"]):
        write_image(tmp_path / f"r{i}.nii.gz", lab)
        rows.append([f"m{i}", "", f"r{i}.nii.gz", split])
    with open(tmp_path / "c.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["case_id", "image", "raters", "split"], *rows])
    cohort = load_cohort(tmp_path / "c.csv")
    split = cohort.manifest_split()
    assert split == {"train": ["m0", "m3"], "val": ["m1", "m4"], "test": ["m2"]}
    assert cohort.resolve_split("manifest") == split
    _check_partition(split, cohort.case_ids)
    # a case without a split value
    rows[1][3] = ""
    with open(tmp_path / "d.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["case_id", "image", "raters", "split"], *rows])
    with pytest.raises(ValueError, match="m1"):
        load_cohort(tmp_path / "d.csv").manifest_split()


# ----------------------------------------------------------------------------------------------
# Cohort methods and resolve_split
# ----------------------------------------------------------------------------------------------
def test_cohort_methods_delegate(npz_cohort):
    ids = npz_cohort.case_ids
    assert npz_cohort.split(val=0.2, test=0.2, seed=5) == fraction_split(ids, val=0.2, test=0.2, seed=5)
    assert npz_cohort.kfold(5, fold=1, seed=2) == kfold_split(ids, 5, fold=1, seed=2)
    _check_partition(npz_cohort.split(seed=1), ids)


def test_resolve_split_forms(npz_cohort):
    c = npz_cohort
    assert c.resolve_split(None, seed=3) == c.split(val=0.2, test=0.2, seed=3)
    assert c.resolve_split({"val": 0.3, "test": 0.1}, seed=2) == c.split(val=0.3, test=0.1, seed=2)
    assert c.resolve_split({"val": 0.3, "test": 0.1, "seed": 9}, seed=2) == c.split(val=0.3, test=0.1, seed=9)
    assert c.resolve_split({"folds": 5, "fold": 2, "test": 0.2}, seed=1) == c.kfold(5, fold=2, test=0.2, seed=1)
    explicit = {"train": c.case_ids[:6], "val": c.case_ids[6:8], "test": c.case_ids[8:]}
    assert c.resolve_split(explicit) == explicit
    with pytest.raises(ValueError, match="no split column"):
        c.resolve_split("manifest")
    with pytest.raises(ValueError, match="split"):
        c.resolve_split("random")
    with pytest.raises(TypeError, match="split"):
        c.resolve_split(0.2)
    with pytest.raises(ValueError, match="val"):
        c.resolve_split({"val": 0.9, "test": 0.2})
    with pytest.raises(ValueError, match="unknown"):
        c.resolve_split({"folds": 3, "shuffle": True})
    with pytest.raises(ValueError, match="case000"):
        c.resolve_split({"train": c.case_ids, "val": ["case000"]})


def test_subset_splits_stay_inside_the_subset(npz_cohort):
    sub = npz_cohort.subset(npz_cohort.case_ids[:6])
    _check_partition(sub.split(seed=0), sub.case_ids)
    with pytest.raises(ValueError, match="case009"):
        sub.resolve_split({"train": ["case009"]})
