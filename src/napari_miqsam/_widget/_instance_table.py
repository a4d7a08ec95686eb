"""The instance table of the dock widget: one row per shown instance (id, score, volume)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QKeySequence, QShortcut
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

COLUMNS = ("id", "score", "volume (mm³)")


class _NumberItem(QTableWidgetItem):
    """A cell that sorts by its number, not its text."""

    def __init__(self, value: float, text: str) -> None:
        super().__init__(text)
        self.setData(Qt.ItemDataRole.UserRole, float(value))
        self.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine = self.data(Qt.ItemDataRole.UserRole)
        theirs = other.data(Qt.ItemDataRole.UserRole)
        if mine is None or theirs is None:
            return super().__lt__(other)
        return float(mine) < float(theirs)


class InstanceTable(QTableWidget):
    """Rows of instances; emits the instance id on selection and on Delete.

    Signals
    -------
    instance_selected(int)
        A row was selected (the instance id).
    delete_requested(int)
        The user pressed Delete / Backspace on a selected row (the instance id).
    """

    instance_selected = Signal(int)
    delete_requested = Signal(int)

    def __init__(self, parent: Any = None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(list(COLUMNS))
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSortingEnabled(True)
        self.sortItems(1, Qt.SortOrder.DescendingOrder)  # best score first until the user re-sorts
        self.setMinimumHeight(120)
        self.itemSelectionChanged.connect(self._on_selection)
        for key in (QKeySequence.StandardKey.Delete, QKeySequence(Qt.Key.Key_Backspace)):
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetShortcut)
            shortcut.activated.connect(self.request_delete)

    def set_instances(self, rows: Sequence[dict]) -> None:
        """Show ``rows`` (dicts with id, score, volume_mm3); keeps the sort order."""
        self.blockSignals(True)
        try:
            self.setSortingEnabled(False)
            self.setRowCount(len(rows))
            for r, row in enumerate(rows):
                self.setItem(r, 0, _NumberItem(row["id"], str(int(row["id"]))))
                self.setItem(r, 1, _NumberItem(row["score"], f"{float(row['score']):.3f}"))
                self.setItem(r, 2, _NumberItem(row["volume_mm3"], f"{float(row['volume_mm3']):.1f}"))
            self.setSortingEnabled(True)
        finally:
            self.blockSignals(False)

    def instance_ids(self) -> list[int]:
        """The ids in display order."""
        return [int(self.item(r, 0).data(Qt.ItemDataRole.UserRole)) for r in range(self.rowCount())]

    def selected_id(self) -> int | None:
        rows = self.selectionModel().selectedRows() if self.selectionModel() else []
        if not rows:
            return None
        item = self.item(rows[0].row(), 0)
        return None if item is None else int(item.data(Qt.ItemDataRole.UserRole))

    def select_id(self, instance_id: int) -> None:
        """Select the row of ``instance_id`` (emits ``instance_selected``)."""
        for r in range(self.rowCount()):
            if int(self.item(r, 0).data(Qt.ItemDataRole.UserRole)) == instance_id:
                self.selectRow(r)
                return

    def request_delete(self) -> None:
        instance_id = self.selected_id()
        if instance_id is not None:
            self.delete_requested.emit(instance_id)

    def _on_selection(self) -> None:
        instance_id = self.selected_id()
        if instance_id is not None:
            self.instance_selected.emit(instance_id)
