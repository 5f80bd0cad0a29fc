"""The cohort controls of the *Train* dock: where the cohort is, its case table, skipped cases and split.

:class:`CohortControls` is composed into :class:`~napari_seg_uncertainty.widgets._train_form.TrainForm`
(*Train on: cohort*): the Cohort path field with Browse and Load, the split settings (fractions,
the manifest's split column or k-fold), the loader workers, and below them the cohort's summary, the
split sizes, the case table (:class:`CaseTable`) and the skipped cases with their problems. Loading
scans the headers in a worker thread (:func:`~napari_seg_uncertainty.widgets._train_cohort.scan_cohort`);
every change of a split setting recomputes the split (case ids only) and refills the table. The
Qt-free work lives in :mod:`~napari_seg_uncertainty.widgets._train_cohort`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, LineEdit, PushButton, SpinBox

from ._common import run_in_thread, show_info, show_warning
from ._train_cohort import COHORT_SUFFIXES, CohortScan, scan_cohort, split_cases, split_summary, table_rows

if TYPE_CHECKING:
    from ..core.cohort import Cohort

__all__ = [
    "CASE_COLUMNS",
    "ERROR_COLOR",
    "MAX_TABLE_HEIGHT",
    "MAX_TABLE_WIDTH",
    "NOTHING_HELD_OUT",
    "NO_SPLIT",
    "SPLIT_CHOICES",
    "WARNING_COLOR",
    "CaseTable",
    "CohortControls",
]

#: "Split" choices for a cohort (see :func:`~napari_seg_uncertainty.widgets._train_cohort.split_cases`).
SPLIT_CHOICES = (("val/test fractions", "fractions"), ("manifest split", "manifest"), ("k-fold", "kfold"))
#: Columns of the cohort's case table.
CASE_COLUMNS = ("case", "split", "shape", "spacing (mm)", "ch.", "raters")
#: Most pixels the case table takes before it scrolls on its own.
MAX_TABLE_HEIGHT = 250
#: Widest the case table asks the dock to be (pixels); beyond it the table scrolls sideways.
MAX_TABLE_WIDTH = 440
#: Colour of problems and errors in the dock.
ERROR_COLOR = "#ff6060"
#: Colour of warnings in the dock (the Train dock's grid warning has it too).
WARNING_COLOR = "#f0a030"
#: Shown (in :data:`WARNING_COLOR`) when the split holds no validation and no test case.
NOTHING_HELD_OUT = (
    "⚠ Nothing is held out: no validation and no test case. The run is not validated, and the prediction "
    "at its end is of a training case; raise Validation share or Test share to hold cases out."
)
#: The split column of the case table while the split settings are invalid (no split is in use).
NO_SPLIT = "—"


class CaseTable:
    """The cohort's case table: a Qt table view over a plain model, fast for a thousand cases.

    (magicgui's ``Table`` sets one item per cell and re-measures its columns each time: 0.3 s for
    100 cases, 37 s for 1,000.) Read-only; columns as wide as their contents; at most
    :data:`MAX_TABLE_HEIGHT` pixels tall, scrolling beyond.
    """

    def __init__(self, columns: Sequence[str]) -> None:
        from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt
        from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableView

        self.columns = tuple(columns)
        self.rows: list[list[Any]] = []
        table = self

        class _Model(QAbstractTableModel):
            def rowCount(self, parent: Any = QModelIndex()) -> int:  # noqa: N802, B008 - Qt's names
                return 0 if parent.isValid() else len(table.rows)

            def columnCount(self, parent: Any = QModelIndex()) -> int:  # noqa: N802, B008
                return 0 if parent.isValid() else len(table.columns)

            def data(self, index: Any, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
                if role == Qt.ItemDataRole.DisplayRole and index.isValid():
                    return str(table.rows[index.row()][index.column()])
                return None

            def headerData(self, section: int, orientation: Any, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
                if role != Qt.ItemDataRole.DisplayRole:
                    return None
                if orientation == Qt.Orientation.Horizontal:
                    return table.columns[section]
                return str(section + 1)

        self.model = _Model()
        self.native = QTableView()
        self.native.setModel(self.model)
        self.native.setToolTip("The cohort's cases and the split each is in.")
        self.native.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.native.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.native.setWordWrap(False)
        self.native.verticalHeader().setVisible(False)
        self.native.verticalHeader().setDefaultSectionSize(self.native.fontMetrics().height() + 6)
        header = self.native.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)  # "16×40×40" whole, not "16…40"
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)  # the case ids take the spare width
        header.setResizeContentsPrecision(200)  # measure 200 rows, not all of a large cohort
        header.setStretchLastSection(False)
        self.native.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.native.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.native.setMinimumWidth(0)
        self.native.setFixedHeight(60)

    @property
    def visible(self) -> bool:
        return not self.native.isHidden()

    @visible.setter
    def visible(self, value: bool) -> None:
        self.native.setVisible(bool(value))

    def set_rows(self, rows: list[list[Any]]) -> None:
        """Show ``rows`` (one list per case, in :attr:`columns` order)."""
        self.model.beginResetModel()
        self.rows = [list(row) for row in rows]
        self.model.endResetModel()
        view = self.native
        header = view.horizontalHeader()
        height = header.sizeHint().height() + 2 * view.frameWidth() + 2
        height += view.verticalHeader().defaultSectionSize() * len(self.rows)
        view.setFixedHeight(min(max(height, 60), MAX_TABLE_HEIGHT))
        # as wide as its columns (the dock widens up to its maximum width rather than hide a column)
        width = 2 * view.frameWidth() + len(self.columns) + 4  # frame, grid lines
        width += sum(max(view.sizeHintForColumn(i), header.sectionSizeHint(i)) for i in range(len(self.columns)))
        if height > MAX_TABLE_HEIGHT:
            width += view.verticalScrollBar().sizeHint().width()
        view.setMinimumWidth(min(width, MAX_TABLE_WIDTH) if self.rows else 0)
        self.needed_width = width


class CohortControls:
    """The cohort controls of the *Train* dock and the cohort they loaded (composed into ``TrainForm``).

    Parameters
    ----------
    seed : callable
        The form's seed (the random split uses it).
    status : magicgui Label
        The dock's status line.
    state, set_state : callable
        The dock's state (``"idle"``, ``"loading"``, ``"training"`` …) and its setter; loading sets
        ``"loading"`` and back to ``"idle"``.
    fit_width : callable
        Called after the case table is filled: widen the settings so that every column shows.

    Attributes
    ----------
    scan : CohortScan or None
        The cohort loaded, with its problems (``None`` before one was).
    error : str or None
        Why the last load failed.
    split : dict or None
        The case split the settings describe (``None`` without a cohort or when the settings are invalid).
    active : bool
        Whether the dock trains on the cohort (*Train on: cohort*); the controls show only then.
    """

    def __init__(
        self,
        *,
        seed: Callable[[], int],
        status: Any,
        state: Callable[[], str],
        set_state: Callable[[str], None],
        fit_width: Callable[[], None],
    ) -> None:
        self._seed, self._status, self._state, self._set_state = seed, status, state, set_state
        self._fit_width = fit_width
        self.scan: CohortScan | None = None
        self.error: str | None = None
        self.split: dict[str, list[str]] | None = None
        self.active = False
        self._generation = 0
        self.worker: Any = None
        self.path = LineEdit(
            value="", tooltip="A folder of case folders, a LIDC-style .npz, or a .csv/.yaml manifest; Enter loads it."
        )
        self.path.native.setPlaceholderText("folder, .csv, .yaml or .npz")
        self.path.native.setMinimumWidth(60)  # the path scrolls in its field; the dock does not widen
        self.browse = PushButton(text="Browse…", tooltip="Choose a folder of cases, or a manifest or .npz file.")
        self.load_button = PushButton(text="Load", tooltip="Scan the cohort (headers only) and list its cases.")
        self.row = Container(
            layout="horizontal", labels=False, label="Cohort", widgets=[self.path, self.browse, self.load_button],
        )
        self.row.margins = (0, 0, 0, 0)
        self.split_mode = ComboBox(
            label="Split", choices=list(SPLIT_CHOICES), value="fractions",
            tooltip="Random validation/test fractions (the seed below), the manifest's split column, or k-fold.",
        )
        self.val = FloatSpinBox(label="Validation share", value=0.2, min=0.0, max=0.9, step=0.05)
        self.test = FloatSpinBox(label="Test share", value=0.2, min=0.0, max=0.9, step=0.05)
        self.folds = SpinBox(label="Folds", value=5, min=2, max=50)
        self.fold = SpinBox(label="Fold", value=0, min=0, max=4, tooltip="The fold validated on (from 0).")
        self.workers = SpinBox(
            label="Loader workers", value=2, min=0, max=32,
            tooltip="Processes reading and preparing cases; 0 reads them in the training thread.",
        )
        # full width below the split settings (placed by the form)
        self.message = Label(value="")
        self.message.native.setWordWrap(True)
        self.split_sizes = Label(value="")
        self.split_sizes.native.setWordWrap(True)  # "⚠ val + test must be below 1 …" shows whole in a narrow dock
        #: Orange warning while the split holds out nothing (no validation, no test case).
        self.holdout_warning = Label(value=NOTHING_HELD_OUT)
        self.holdout_warning.native.setWordWrap(True)
        self.holdout_warning.native.setStyleSheet(f"color: {WARNING_COLOR};")
        self.holdout_warning.visible = False
        self.table = CaseTable(CASE_COLUMNS)
        self.problems = Label(value="")
        self.problems.native.setWordWrap(True)
        self.problems.native.setStyleSheet(f"color: {ERROR_COLOR};")
        for label in (self.message, self.split_sizes, self.holdout_warning, self.problems):
            label.native.setMinimumWidth(120)  # wraps (a long path is clipped) instead of widening the dock
        self.split_mode.changed.connect(self._on_split_mode_changed)
        for control in (self.val, self.test, self.folds, self.fold):
            control.changed.connect(self.refresh_split)
        self.folds.changed.connect(self._on_folds_changed)
        self.browse.changed.connect(self._on_browse)

    @property
    def settings(self) -> list[Any]:
        """The labelled rows, in order: the Cohort path row, the split settings, the loader workers."""
        return [self.row, self.split_mode, self.val, self.test, self.folds, self.fold, self.workers]

    @property
    def full_width(self) -> list[Any]:
        """Shown over the settings' width below :attr:`settings`: summary, split sizes, the nothing-held-out
        warning, case table, problems."""
        return [self.message, self.split_sizes, self.holdout_warning, self.table, self.problems]

    @property
    def cohort(self) -> Cohort | None:
        """The cohort loaded (``None`` before one was)."""
        return self.scan.cohort if self.scan is not None else None

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The case table as shown: one dict per row, keyed by :data:`CASE_COLUMNS`."""
        return [dict(zip(CASE_COLUMNS, row)) for row in self.table.rows]

    def show(self, active: bool) -> None:
        """Show the controls when the dock trains on a cohort (``active``), hide them otherwise."""
        self.active = bool(active)
        for control in (self.row, self.split_mode, self.workers, self.message):
            control.visible = self.active
        self._on_split_mode_changed()

    def set_enabled(self, enabled: bool) -> None:
        """Enable the path, Browse and Load (disabled while training)."""
        for control in (self.path, self.browse, self.load_button):
            control.enabled = enabled

    def _on_split_mode_changed(self, _value: Any = None) -> None:
        mode = self.split_mode.value
        self.val.visible = self.active and mode == "fractions"
        self.test.visible = self.active and mode in ("fractions", "kfold")
        self.folds.visible = self.fold.visible = self.active and mode == "kfold"
        loaded = self.active and self.scan is not None
        self.split_sizes.visible = self.table.visible = loaded
        self.problems.visible = loaded and bool(self.scan.problems)  # type: ignore[union-attr]
        self.refresh_split()
        self._show_holdout_warning()

    @property
    def nothing_held_out(self) -> bool:
        """Whether the split in use holds no validation and no test case (every case trains)."""
        return self.split is not None and not self.split.get("val") and not self.split.get("test")

    def _show_holdout_warning(self) -> None:
        self.holdout_warning.visible = self.active and self.scan is not None and self.nothing_held_out

    def _on_folds_changed(self, value: int) -> None:
        self.fold.max = max(0, int(value) - 1)

    def _on_browse(self, _value: Any = None) -> None:
        """A menu: a folder of case folders, or a manifest / .npz file."""
        from qtpy.QtGui import QCursor
        from qtpy.QtWidgets import QMenu

        menu = QMenu(self.browse.native)
        menu.addAction("Folder of cases…", self._browse_folder)
        menu.addAction("Manifest (.csv, .yaml) or .npz…", self._browse_file)
        menu.exec_(QCursor.pos())

    def _browse_folder(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.browse.native, "Folder of case folders")
        if folder:
            self.load(folder)

    def _browse_file(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        patterns = " ".join(f"*{suffix}" for suffix in COHORT_SUFFIXES)
        path, _ = QFileDialog.getOpenFileName(
            self.browse.native, "Cohort manifest or .npz", "", f"Cohorts ({patterns});;All files (*)"
        )
        if path:
            self.load(path)

    def say(self, message: str, *, error: bool = False) -> None:
        """Show ``message`` under the split settings (in red for an ``error``)."""
        self.message.value = message
        self.message.native.setStyleSheet(f"color: {ERROR_COLOR};" if error else "")
        self.message.visible = bool(message) and self.active

    def load(self, source: Any = None) -> Any:
        """Scan the cohort at ``source`` (default: the path field) in a worker; returns it (``None`` while
        training). See :meth:`~napari_seg_uncertainty.widgets._train_form.TrainForm.load_cohort`."""
        if self._state() not in ("idle", "loading"):
            show_info("Training is running; load the cohort once it has ended.")
            return None
        if source is not None:
            self.path.value = str(source)
        path = str(self.path.value).strip()
        self._generation += 1
        generation = self._generation
        self.error = None
        self._set_state("loading")
        self.say(f"Loading {path or '…'} …")
        self._status.value = "Loading the cohort (reading headers)…"

        def returned(scan: CohortScan) -> None:
            if generation != self._generation:
                return
            self._set_state("idle")
            self._show_scan(scan)

        def errored(exc: BaseException) -> None:
            if generation != self._generation:
                return
            self.error = str(exc)
            self._forget()  # Start must not train on the previous cohort while the field shows another path
            self._set_state("idle")
            self.say(f"⚠ Could not load the cohort: {exc}", error=True)
            self._status.value = f"Failed: {exc}"

        self.worker = run_in_thread(scan_cohort, path, action="Load cohort", returned=returned, errored=errored)
        return self.worker

    def _forget(self) -> None:
        """Drop the loaded cohort: its table, split, split sizes and skipped cases (a load failed)."""
        self.scan = None
        self.split = None
        self.split_sizes.value = ""
        self.split_sizes.native.setStyleSheet("")
        self.problems.value = ""
        self.table.set_rows([])
        self._on_split_mode_changed()  # hides the table, sizes, problems and the held-out warning

    def _show_scan(self, scan: CohortScan) -> None:
        self.scan = scan
        cohort = scan.cohort
        skipped = len(scan.problems)
        text = f"{len(cohort)} cases ({cohort.ndim}-D, {cohort.channels} channel(s), up to {cohort.num_raters} raters)"
        if skipped:
            text += f"; {skipped} skipped (see below)"
        self.say(text + f" from {Path(scan.source).name}.")
        self.problems.value = (
            f"Skipped {skipped} case(s):\n" + "\n".join(f"• {p}" for p in scan.problems) if skipped else ""
        )
        with self.split_mode.changed.blocked():
            if scan.has_manifest_split:
                self.split_mode.value = "manifest"
            elif self.split_mode.value == "manifest":
                self.split_mode.value = "fractions"
        self._on_split_mode_changed()
        self._status.value = f"Cohort loaded: {len(cohort)} cases" + (f", {skipped} skipped." if skipped else ".")
        if skipped:
            show_warning(f"Train: {skipped} case(s) of the cohort skipped; the dock lists why.")

    def checked_split(self) -> dict[str, list[str]]:
        """The split the settings describe, checked (ValueError saying what to change)."""
        if self.cohort is None:
            raise ValueError("no cohort loaded; choose a folder or manifest and press Load.")
        return split_cases(
            self.cohort, self.split_mode.value, val=float(self.val.value), test=float(self.test.value),
            seed=int(self._seed()), folds=int(self.folds.value), fold=int(self.fold.value),
        )

    def refresh_split(self, _value: Any = None) -> None:
        """Recompute the split (cheap: case ids only) and show it in the table and the sizes line."""
        if self.cohort is None or not self.active:
            return
        try:
            self.split = self.checked_split()
        except (TypeError, ValueError) as exc:
            self.split = None
            self.split_sizes.value = f"⚠ {exc}"
            self.split_sizes.native.setStyleSheet(f"color: {ERROR_COLOR};")
            rows = [[row[0], NO_SPLIT, *row[2:]] for row in table_rows(self.cohort, None)]  # no split in use
        else:
            self.split_sizes.value = "Split: " + split_summary(self.split)
            self.split_sizes.native.setStyleSheet("")
            rows = table_rows(self.cohort, self.split)
        self._show_holdout_warning()
        self.table.set_rows(rows)
        self._fit_width()

    def config(self) -> dict[str, Any]:
        """The TrainConfig settings a cohort run takes (loader workers, the split's fractions)."""
        settings: dict[str, Any] = {"num_workers": int(self.workers.value)}
        if self.split_mode.value in ("fractions", "kfold"):
            settings["test_fraction"] = float(self.test.value)
        if self.split_mode.value == "fractions":
            settings["val_fraction"] = float(self.val.value)
        return settings
