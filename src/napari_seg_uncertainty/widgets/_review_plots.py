"""The *Cohort plots* dock of the *Cohort review* widget: pooled reliability, study table, quality control.

Three tabs, each a themed matplotlib canvas (:class:`FigurePanel`, the Calibration dock's
:class:`~napari_seg_uncertainty.widgets._calibration_plot.CalibrationPlot` drawing any figure): the pooled
reliability diagram of every candidate (``ReviewSession.reliability_results()``, drawn by
:func:`~napari_seg_uncertainty.workflow.figures.draw_reliability`), the study table
(``draw_study_table``) and the segment-entropy-versus-Dice quality control (``draw_quality_control``).
Each figure is drawn and rasterised in a worker thread, as the Calibration dock's plot is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from ._calibration_plot import CalibrationPlot
from ._common import run_in_thread

if TYPE_CHECKING:
    import napari

__all__ = [
    "PLOTS_DOCK",
    "FigurePanel",
    "ReviewPlots",
    "draw_message",
    "draw_pooled_reliability",
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

    with mplstyle.context(style):
        figure = Figure(figsize=size, dpi=dpi, layout="constrained")
        canvas = FigureCanvasAgg(figure)
        drawing(figure)
        canvas.draw()
    return figure, canvas, {}


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

    def show_drawing(self, drawing: Callable[[Any], Any], *, done: Callable[[], None] | None = None) -> None:
        """Show ``drawing`` (drawn and rasterised in a worker); ``done()`` once it is on the canvas."""
        self.drawing = drawing
        if done is not None:
            self._when_rendered.append(done)
        self._generation += 1
        generation = self._generation
        figure = self.canvas.figure
        self.rendering = True
        run_in_thread(
            render_drawing, drawing, size=tuple(figure.get_size_inches()), dpi=float(figure.dpi),
            style=self.napari_theme_style_sheet, action="Cohort plot",
            returned=lambda out: self._adopt(out, generation, getattr(figure, "_original_dpi", figure.dpi)),
            errored=lambda _exc: self._rendered(generation),
        )

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
        for name, empty in self.TABS:
            panel = FigurePanel(viewer, empty=empty)
            self.panels[name] = panel
            if name in ("Study table", "Quality control"):  # drawn at a size that reads, scrolled in a narrow dock
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

    def show_session(self, session: Any) -> None:
        """Draw the pooled reliability, the study table and the quality control of ``session``."""
        split = getattr(getattr(session, "saved", None), "split", "test")
        title = f"Pooled reliability, {split} cases"
        self.panels["Reliability"].show_drawing(
            partial(draw_pooled_reliability, results=session.reliability_results(), title=title))
        table = session.study_table()
        if table is None:
            self.panels["Study table"].show_drawing(partial(
                draw_message, text="No study table: this is an evaluation folder (a study writes study.csv)."))
        else:
            from ..workflow.study.table import draw_study_table, study_figure

            panel = self.panels["Study table"]
            panel.set_inches(*study_figure(table).get_size_inches())  # every cell at 10 pt
            panel.show_drawing(partial(draw_study_table, table=table))
        quality = session.quality()
        if not quality:
            self.panels["Quality control"].show_drawing(partial(
                draw_message, text="No quality control: the evaluation holds no foreground Dice."))
        else:
            from ..workflow.study.quality import draw_quality_control

            panel = self.panels["Quality control"]
            panel.set_inches(QC_PANEL_INCHES[0] * len({item.structure for item in quality}), QC_PANEL_INCHES[1])
            panel.show_drawing(partial(draw_quality_control, items=quality))
