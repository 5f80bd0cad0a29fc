"""The calibration step without a window: metrics of several models, temperature scaling, the plots.

:func:`compute_calibration` gives, for each probability map (a model or a method), the calibration
summary (ECE, TACE, NLL, Brier), the per-class TACE and Brier score and, against several raters, the
agreement between prediction entropy and rater entropy; :func:`temperature_scale` fits one
temperature per model; :func:`draw_results` and :func:`render_figure` draw the reliability diagram
or the entropy scatter plot of the results. The *Calibration* dock runs these in a worker thread.

References
----------
.. [1] A. Mehrtash, W. M. Wells, C. M. Tempany, P. Abolmaesumi, T. Kapur, "Confidence calibration and
   predictive uncertainty estimation for deep medical image segmentation", IEEE TMI 39(12), 2020
   (ECE, reliability diagrams, the foreground box).
.. [2] C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On calibration of modern neural networks", ICML 2017
   (temperature scaling).
.. [3] J. Nixon, M. Dusenberry, L. Zhang, G. Jerfel, D. Tran, "Measuring calibration in deep learning",
   CVPR Workshops 2019 (TACE).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.calibration import (
    apply_temperature,
    brier_score_per_class,
    calibration_summary,
    fit_temperature,
    foreground_box_mask,
    thresholded_adaptive_ce_per_class,
)
from ..core.uncertainty import entropy_agreement
from .figures import ModelResult, draw_entropy_scatter, draw_reliability

__all__ = [
    "ENTROPY_SCATTER",
    "RELIABILITY",
    "TemperatureResult",
    "compute_calibration",
    "draw_results",
    "render_figure",
    "temperature_scale",
]

#: The two plots of the calibration step.
RELIABILITY = "Reliability diagram"
ENTROPY_SCATTER = "Entropy: prediction vs raters"
#: Probabilities are clipped below at this value before taking logs to recover logits.
LOG_FLOOR = 1e-12


def _evaluation_mask(
    target: np.ndarray,
    *,
    target_is_raters: bool,
    restrict_to_box: bool,
    spacing: tuple[float, ...] | None,
    in_plane_margin: float,
    slice_margin: int,
) -> np.ndarray | None:
    """The dilated foreground box of ``target`` (of any rater), or ``None`` to evaluate everywhere."""
    if not restrict_to_box:
        return None
    foreground = target.max(axis=0) if target_is_raters else target
    return foreground_box_mask(
        foreground, spacing=spacing, in_plane_margin=in_plane_margin, slice_margin=slice_margin
    )


@dataclass(frozen=True)
class TemperatureResult:
    """A fitted temperature and the probabilities rescaled with it."""

    source: str
    temperature: float
    probs: np.ndarray


def temperature_scale(
    models: Mapping[str, Any],
    target: Any,
    *,
    target_is_raters: bool,
    restrict_to_box: bool = False,
    spacing: tuple[float, ...] | None = None,
    in_plane_margin: float = 8.0,
    slice_margin: int = 2,
) -> list[TemperatureResult]:
    """Fit one temperature per model on the target and rescale its probabilities; runs off the GUI thread.

    The logits are recovered as ``ln p`` (exact up to a per-voxel constant, which the softmax ignores;
    probabilities are clipped at 1e-12 first), then
    :func:`~napari_seg_uncertainty.core.calibration.fit_temperature` and
    :func:`~napari_seg_uncertainty.core.calibration.apply_temperature` are applied.
    """
    target = np.asarray(target)
    mask = _evaluation_mask(target, target_is_raters=target_is_raters, restrict_to_box=restrict_to_box,
                            spacing=spacing, in_plane_margin=in_plane_margin, slice_margin=slice_margin)
    results = []
    for name, probs in models.items():
        try:
            p = np.asarray(probs)
            if not np.issubdtype(p.dtype, np.floating):
                raise TypeError(f"probabilities must be floating point, got dtype {p.dtype}.")
            logits = np.log(np.maximum(p.astype(np.float64), LOG_FLOOR))
            t = fit_temperature(logits, target, mask=mask, target_kind="raters" if target_is_raters else "labels")
            results.append(TemperatureResult(name, t, apply_temperature(logits, temperature=t)))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer {name!r}: {exc}") from exc
    return results


def compute_calibration(
    models: Mapping[str, Any],
    target: Any,
    *,
    target_is_raters: bool,
    num_bins: int = 10,
    closed: str = "right",
    tace_num_bins: int = 10,
    tace_threshold: float = 1e-3,
    restrict_to_box: bool = False,
    spacing: tuple[float, ...] | None = None,
    in_plane_margin: float = 8.0,
    slice_margin: int = 2,
    entropy_unit: str = "voxel",
) -> list[ModelResult]:
    """Calibration summary (and entropy agreement for raters) of every model; runs off the GUI thread.

    Parameters
    ----------
    models : mapping of str to array_like
        Layer name -> probabilities ``(C, *spatial)``.
    target : array_like
        Labels ``(*spatial)`` or, with ``target_is_raters``, a rater stack ``(R, *spatial)``.
    target_is_raters : bool
        Whether ``target`` is a rater stack (soft target = rater mean; entropy agreement computed).
    num_bins, closed, tace_num_bins, tace_threshold
        Bins of the ECE, their closed side, bins and threshold of the TACE; see
        :func:`~napari_seg_uncertainty.core.calibration.calibration_summary`.
    restrict_to_box : bool
        Evaluate inside the dilated bounding box of the foreground (of any rater).
    spacing, in_plane_margin, slice_margin
        See :func:`~napari_seg_uncertainty.core.calibration.foreground_box_mask`.
    entropy_unit : {"voxel", "slice", "image"}
        Points of the entropy scatter plot.

    Returns
    -------
    list of ModelResult
        One per model, in the order given, with the per-class TACE and Brier score.
    """
    target = np.asarray(target)
    mask = _evaluation_mask(target, target_is_raters=target_is_raters, restrict_to_box=restrict_to_box,
                            spacing=spacing, in_plane_margin=in_plane_margin, slice_margin=slice_margin)
    kind = "raters" if target_is_raters else "labels"
    results = []
    for name, probs in models.items():
        try:
            summary = calibration_summary(
                probs,
                target,
                num_bins=num_bins,
                tace_num_bins=tace_num_bins,
                tace_threshold=tace_threshold,
                mask=mask,
                closed=closed,  # type: ignore[arg-type]
                target_kind=kind,
            )
            agreement = (
                entropy_agreement(probs, target, unit=entropy_unit, mask=mask)  # type: ignore[arg-type]
                if target_is_raters
                else None
            )
            class_tace = thresholded_adaptive_ce_per_class(
                probs, target, num_bins=tace_num_bins, threshold=tace_threshold, mask=mask, target_kind=kind
            )
            class_brier = brier_score_per_class(probs, target, mask=mask, target_kind=kind)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer {name!r}: {exc}") from exc
        results.append(
            ModelResult(
                name=name,
                summary=summary,
                entropy=agreement,
                class_tace=np.asarray(class_tace, dtype=np.float64),
                class_brier=np.asarray(class_brier, dtype=np.float64),
            )
        )
    return results


def draw_results(figure: Any, results: list[ModelResult], *, kind: str, min_count: int) -> dict[str, Any]:
    """Draw ``kind`` (reliability diagram or entropy scatter plot) of ``results`` onto ``figure``; the artists."""
    figure.clear()
    message = None
    if not results:
        message = "Select probability and target layers,\nthen press Compute."
    elif kind == ENTROPY_SCATTER and all(r.entropy is None for r in results):
        message = "Select two or more rater Labels layers as the target\nto compare prediction and rater entropy."
    if message is not None:
        figure.text(0.5, 0.5, message, ha="center", va="center")
        return {}
    if kind == ENTROPY_SCATTER:
        return draw_entropy_scatter(figure, results)
    return draw_reliability(figure, results, min_count=min_count)


def render_figure(
    results: list[ModelResult],
    *,
    kind: str,
    min_count: int,
    size: tuple[float, float],
    dpi: float,
    style: Any,
) -> tuple[Any, Any, dict[str, Any]]:
    """Draw and rasterise the plot on a new Agg figure (runs in a worker: no Qt object is touched).

    Returns the figure, its Agg canvas (holding the rendered pixels) and the artists.
    """
    from matplotlib import style as mplstyle
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with mplstyle.context(style):
        figure = Figure(figsize=size, dpi=dpi, layout="constrained")
        canvas = FigureCanvasAgg(figure)
        artists = draw_results(figure, results, kind=kind, min_count=min_count)
        canvas.draw()
    return figure, canvas, artists
