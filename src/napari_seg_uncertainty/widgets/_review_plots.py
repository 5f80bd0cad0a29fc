"""The *Cohort plots* dock of the *Cohort review* widget: pooled reliability, study table, quality control.

What they show is read and computed in a worker (:func:`plot_inputs`). Three tabs: the pooled
reliability diagram of every candidate (``ReviewSession.reliability_results()``,
drawn by :func:`~napari_seg_uncertainty.workflow.figures.draw_reliability`) and the
segment-entropy-versus-Dice quality control (``draw_quality_control``), each a themed matplotlib canvas
(:class:`FigurePanel`, the Calibration dock's
:class:`~napari_seg_uncertainty.widgets._calibration_plot.CalibrationPlot` drawing any figure, drawn and
rasterised in a worker thread), and the study table as a Qt table (:class:`StudyTablePanel`: it reads
at the dock's width and font, where a drawn table would shrink to a few pixels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from ._calibration_plot import CalibrationPlot

if TYPE_CHECKING:
    import napari

__all__ = [
    "PLOTS_DOCK",
    "FigurePanel",
    "PlotInputs",
    "ReviewPlots",
    "StudyTablePanel",
    "draw_message",
    "draw_pooled_reliability",
    "plot_inputs",
    "render_drawing",
]

#: Title of the plots dock.
PLOTS_DOCK = "Cohort plots"
#: Least height of a plot (pixels): the plots dock shares the column with the review dock at 1280×800.
MIN_PANEL_HEIGHT = 100
#: The size a plot asks for (inches at 100 dpi): no wider than the review dock, so the docks' column stays narrow.
FIGURE_INCHES = (3.6, 4.0)
#: Size of one structure's panel of the quality control (inches): the panels sit side by side.
QC_PANEL_INCHES = (4.2, 5.6)
#: Smallest figure (inches) laid out by matplotlib's constrained layout: below it the axes would collapse.
MIN_LAYOUT_INCHES = (1.6, 1.2)
#: Width (pixels) added to a study table column's widest line: the cell's margins and the grid line.
CELL_PADDING = 28
#: The arrow after a metric's label: which way is better.
ARROWS = {"higher": "↑", "lower": "↓"}


def draw_pooled_reliability(figure: Any, results: Sequence[Any], *, title: str) -> None:
    """The reliability diagram of ``results`` (``ModelResult`` per candidate) titled ``title``."""
    from ..workflow.figures import draw_reliability

    if not results:
        draw_message(figure, "No pooled reliability in this folder (reliability.csv is missing).")
        return
    draw_reliability(figure, results)
    figure.suptitle(title, fontsize="medium")


def draw_message(figure: Any, text: str) -> None:
    """An empty figure saying ``text`` (what is missing and where it would come from)."""
    import textwrap

    figure.clear()
    axes = figure.add_subplot(1, 1, 1)
    axes.set_axis_off()
    axes.text(0.5, 0.5, textwrap.fill(text, 48), ha="center", va="center", transform=axes.transAxes)


def render_drawing(
    drawing: Callable[[Any], Any], *, size: tuple[float, float], dpi: float, style: Any
) -> tuple[Any, Any, dict[str, Any]]:
    """Draw ``drawing(figure)`` on a new Agg figure and rasterise it (for a worker: no Qt object is touched).

    Returns the figure, its Agg canvas (holding the pixels) and no artists, as
    :func:`~napari_seg_uncertainty.workflow.calibration.render_figure` does.
    """
    from matplotlib import style as mplstyle
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    laid_out = all(a >= b for a, b in zip(size, MIN_LAYOUT_INCHES))  # a tiny (floated, squeezed) dock: no layout
    with mplstyle.context(style):
        figure = Figure(figsize=size, dpi=dpi, layout="constrained" if laid_out else None)
        canvas = FigureCanvasAgg(figure)
        drawing(figure)
        canvas.draw()
    return figure, canvas, {}


def _draw_quietly(draw: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``draw()`` without matplotlib's warning that a canvas too small for its axes (a dock floated or
    squeezed to a few pixels) was not laid out: the next resize lays it out again."""
    import warnings

    with warnings.catch_warnings():  # the GUI thread's draw: the workers never draw a canvas of the dock
        warnings.filterwarnings("ignore", message=".*not applied because axes sizes collapsed", category=UserWarning)
        return draw(*args, **kwargs)


class FigurePanel(CalibrationPlot):
    """A themed matplotlib canvas showing one drawing (a callable that draws on a figure).

    :meth:`show_drawing` draws in a worker and swaps the pixels onto the canvas; a theme change
    redraws on the GUI thread.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, *, empty: str, parent: Any = None) -> None:
        self.drawing: Callable[[Any], Any] = partial(draw_message, text=empty)
        super().__init__(napari_viewer, parent=parent)
        self.setMinimumHeight(MIN_PANEL_HEIGHT)
        self.canvas.figure.set_size_inches(*FIGURE_INCHES)  # the canvas asks for this size, not 6.4 × 4.8 in
        self.canvas.draw = partial(_draw_quietly, self.canvas.draw)

    def show_drawing(self, drawing: Callable[[Any], Any], *, done: Callable[[], None] | None = None) -> None:
        """Show ``drawing`` (drawn and rasterised in a worker); ``done()`` once it is on the canvas."""
        self.drawing = drawing
        self.render_in_worker(render_drawing, drawing, action="Cohort plot", done=done)

    def set_inches(self, width: float, height: float) -> None:
        """Fix the canvas at ``width`` × ``height`` inches (at the figure's 100 % dpi); the tab scrolls."""
        figure = self.canvas.figure
        dpi = getattr(figure, "_original_dpi", figure.dpi)
        self.canvas.setFixedSize(int(round(width * dpi)), int(round(height * dpi)))
        figure.set_size_inches(width, height)  # the next drawing is drawn at this size
        self.adjustSize()  # the toolbar and the canvas: the scroll area shows the panel at that size

    def draw(self) -> None:
        """Draw :attr:`drawing` on the canvas's figure (on the GUI thread: theme changes)."""
        self.drawing(self.figure)


def percent_keys(metrics: Sequence[str], percent: Sequence[str]) -> set[str]:
    """The metric keys of ``metrics`` shown in percent: those named in ``percent`` or whose metric name starts
    with an entry of it (``"ece"``), as the study's ``table.percent`` selects them for ``study.md``."""
    return {key for key in metrics for item in percent if key == item or key.partition(":")[2].startswith(item)}


@dataclass(frozen=True)
class PlotInputs:
    """What the *Cohort plots* dock shows of a session, read from its folder (in a worker).

    Attributes
    ----------
    title : str
        Title of the reliability diagram.
    reliability : list of ModelResult
        The pooled reliability of every candidate.
    table : StudyTable or None
        The study table (None for an evaluation folder).
    percent : tuple of str
        The study's ``table.percent``.
    quality : tuple of QualityControl or None
        Quality control of every candidate and structure (None without foreground Dice).
    """

    title: str
    reliability: list[Any]
    table: Any
    percent: tuple[str, ...]
    quality: Any


def plot_inputs(session: Any) -> PlotInputs:
    """Read and compute what the plots dock shows of ``session`` (files and statistics: for a worker)."""
    split = getattr(getattr(session, "saved", None), "split", "test")
    return PlotInputs(title=f"Pooled reliability, {split} cases", reliability=session.reliability_results(),
                      table=session.study_table(), percent=session.table_percent(), quality=session.quality())


class StudyTablePanel:
    """The study table as a Qt table: one row per candidate, one column per metric, the footnote below.

    Cells read "mean [low, high]" (× 100 for the metrics in percent), bold where
    :attr:`~napari_seg_uncertainty.workflow.study.table.StudyTable.marked`, " *" where significantly
    different from the reference (without one, from the column's best); each cell's tooltip gives n, the
    p-value and the Holm-adjusted p-value.

    Attributes
    ----------
    native : QWidget
    table : QTableWidget
    footnote : QLabel
    """

    def __init__(self, *, empty: str) -> None:
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QAbstractItemView, QLabel, QTableWidget, QVBoxLayout, QWidget

        self.native = QWidget()
        layout = QVBoxLayout(self.native)
        layout.setContentsMargins(4, 4, 4, 4)
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(True)  # "mean" over "[low, high]" in a narrow column
        self.table.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.footnote = QLabel(empty)
        self.footnote.setWordWrap(True)
        self.footnote.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.footnote)
        self.table.hide()

    def show_message(self, text: str) -> None:
        """No table: ``text`` says why."""
        self.table.setRowCount(0)
        self.table.setColumnCount(0)
        self.table.hide()
        self.footnote.setText(text)

    def show_table(self, table: Any, *, percent: Sequence[str] = ()) -> None:
        """Show ``table`` (a ``StudyTable``), the metrics matched by ``percent`` × 100."""
        from qtpy.QtWidgets import QTableWidgetItem

        scaled = percent_keys(table.metrics, percent)
        cmp = table.comparison
        view = self.table
        view.clear()
        view.setRowCount(len(table.candidates))
        view.setColumnCount(len(table.metrics))
        view.setVerticalHeaderLabels([str(c) for c in table.candidates])
        view.setHorizontalHeaderLabels([
            f"{label.replace(' (', chr(10) + '(')}{' %' if key in scaled else ''}\n{ARROWS.get(direction, '')}"
            for key, label, direction in zip(table.metrics, table.labels, table.directions)])
        star = np.asarray(cmp.significant, dtype=bool)  # against the reference, else against the column's best
        for i, candidate in enumerate(table.candidates):
            for j, key in enumerate(table.metrics):
                factor = 100.0 if key in scaled else 1.0
                text = cell_text(*(factor * float(a[i, j]) for a in (table.mean, table.low, table.high)))
                # a no-break space inside the interval: a narrow column wraps before "[", not inside it
                item = QTableWidgetItem(text.replace(", ", ",\u00a0") + (" *" if star[i, j] else ""))
                font = item.font()
                font.setBold(bool(table.marked[i, j]))
                item.setFont(font)
                against = cmp.compared_to[j] or "the others"
                item.setToolTip(f"{candidate}, {table.labels[j]}: n = {int(table.n[i, j])} cases; "
                                f"p = {float(cmp.p_value[i, j]):.3g} against {against}, Holm-adjusted "
                                f"p = {float(cmp.adjusted_p_value[i, j]):.3g}")
                view.setItem(i, j, item)
        self._fit_columns()
        view.show()
        self.footnote.setText(table.to_markdown(percent=sorted(scaled)).rstrip().split("\n\n")[-1])

    def _fit_columns(self) -> None:
        """Each column as wide as its widest line ("mean" and "[low, high]" wrap onto two lines)."""
        view = self.table
        metrics = view.fontMetrics()
        bold = view.font()
        bold.setBold(True)
        from qtpy.QtGui import QFontMetrics

        wide = QFontMetrics(bold)
        for j in range(view.columnCount()):
            lines = view.horizontalHeaderItem(j).text().split("\n")
            for i in range(view.rowCount()):
                lines += view.item(i, j).text().split(" [", 1)
            width = max(max(metrics.horizontalAdvance(t), wide.horizontalAdvance(t)) for t in lines)
            view.setColumnWidth(j, width + CELL_PADDING)
        view.resizeRowsToContents()


def cell_text(mean: float, low: float, high: float, *, digits: int = 3) -> str:
    """"mean [low, high]" at ``digits`` decimals, as ``study.md`` has it; "–" without a value.

    Examples
    --------
    >>> cell_text(0.81234, 0.75, 0.9)
    '0.812 [0.750, 0.900]'
    """
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


class ReviewPlots:
    """The tabs of the *Cohort plots* dock: Reliability, Study table, Quality control.

    Attributes
    ----------
    native : QTabWidget
    panels : dict
        Tab name → :class:`FigurePanel`.
    """

    TABS = (
        ("Reliability", "Open a study or evaluation folder to see the pooled reliability diagram."),
        ("Study table", "Open a study folder to see its study table."),
        ("Quality control", "Open a study folder to see segment entropy against Dice."),
    )

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from qtpy.QtWidgets import QFrame, QScrollArea, QTabWidget

        self.native = QTabWidget()
        self.native.setMinimumHeight(MIN_PANEL_HEIGHT + 30)
        self.panels: dict[str, FigurePanel] = {}
        self.study = StudyTablePanel(empty=dict(self.TABS)["Study table"])
        for name, empty in self.TABS:
            if name == "Study table":
                self.native.addTab(self.study.native, name)
                continue
            panel = FigurePanel(viewer, empty=empty)
            self.panels[name] = panel
            if name == "Quality control":  # drawn at a size that reads, scrolled in a narrow dock
                area = QScrollArea()
                area.setWidgetResizable(False)  # the panel keeps its size (set_inches), top left
                area.setFrameShape(QFrame.Shape.NoFrame)
                area.setWidget(panel)
                self.native.addTab(area, name)
            else:
                self.native.addTab(panel, name)

    def show_tab(self, name: str) -> None:
        """Bring tab ``name`` ("Reliability", "Study table" or "Quality control") to the front."""
        self.native.setCurrentIndex([tab for tab, _ in self.TABS].index(name))

    @property
    def rendering(self) -> bool:
        """Whether a plot is still being drawn."""
        return any(panel.rendering for panel in self.panels.values())

    def show_inputs(self, inputs: PlotInputs) -> None:
        """Show the pooled reliability, the study table and the quality control of :func:`plot_inputs`."""
        self.panels["Reliability"].show_drawing(
            partial(draw_pooled_reliability, results=inputs.reliability, title=inputs.title))
        if inputs.table is None:
            self.study.show_message("No study table: this is an evaluation folder (a study writes study.csv).")
        else:
            self.study.show_table(inputs.table, percent=inputs.percent)
        quality = inputs.quality
        if not quality:
            self.panels["Quality control"].show_drawing(partial(
                draw_message, text="No quality control: the evaluation holds no foreground Dice."))
        else:
            from ..workflow.study.quality import draw_quality_control

            panel = self.panels["Quality control"]
            panel.set_inches(QC_PANEL_INCHES[0] * len({item.structure for item in quality}), QC_PANEL_INCHES[1])
            panel.show_drawing(partial(draw_quality_control, items=quality))
