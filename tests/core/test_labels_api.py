"""The public API of core.labels: keyword-only num_classes, exports, no leftover module."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import napari_seg_uncertainty as nsu
from napari_seg_uncertainty.core import labels

LABELS = np.zeros((4, 4), dtype=int)
RATERS = np.stack([LABELS, LABELS])


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: labels.one_hot(LABELS, 2), id="one_hot"),
        pytest.param(lambda: labels.label_smoothing(LABELS, 2), id="label_smoothing"),
        pytest.param(lambda: labels.svls(LABELS, 2), id="svls"),
        pytest.param(lambda: labels.msvls(RATERS, 2), id="msvls"),
        pytest.param(lambda: labels.rater_mean(RATERS, 2), id="rater_mean"),
        pytest.param(lambda: labels.majority_vote(RATERS, 2), id="majority_vote"),
        pytest.param(lambda: labels.staple(RATERS, 2), id="staple"),
        pytest.param(lambda: labels.compute_soft_labels(RATERS, 2), id="compute_soft_labels"),
        pytest.param(lambda: labels.RandomRaterSampler(RATERS, 2), id="RandomRaterSampler"),
    ],
)
def test_num_classes_is_keyword_only(call):
    with pytest.raises(TypeError, match="positional argument"):
        call()


def test_keyword_num_classes_gives_the_documented_shapes():
    assert labels.one_hot(LABELS, num_classes=3).shape == (3, 4, 4)
    assert labels.label_smoothing(LABELS, num_classes=3, alpha=0.2).shape == (3, 4, 4)
    assert labels.svls(LABELS, num_classes=3).shape == (3, 4, 4)
    assert labels.msvls(RATERS, num_classes=3).shape == (3, 4, 4)
    assert labels.rater_mean(RATERS, num_classes=3).shape == (3, 4, 4)
    assert labels.compute_soft_labels(RATERS, num_classes=3, method="svls").shape == (3, 4, 4)
    assert labels.RandomRaterSampler(RATERS, num_classes=3).sample().shape == (3, 4, 4)


@pytest.mark.parametrize("name", sorted(set(labels.__all__) - {"SINGLE_MAP_METHODS", "SamplerTarget"}))
def test_public_names_are_exported_from_the_package(name):
    assert getattr(nsu, name) is getattr(labels, name)


def test_result_types_are_exported():
    assert nsu.StapleResult is labels.fusion.StapleResult
    assert nsu.SoftLabelComparison is labels.methods.SoftLabelComparison


def test_the_old_module_is_gone():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("napari_seg_uncertainty.core.soft_labels")
