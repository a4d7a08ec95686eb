"""Small Qt layout helpers shared by the dock widget and its panels."""

from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QHBoxLayout, QWidget


def side_by_side(*widgets: QWidget) -> QHBoxLayout:
    """The widgets side by side; the first one takes the free width."""
    layout = QHBoxLayout()
    for i, widget in enumerate(widgets):
        layout.addWidget(widget, 1 if i == 0 else 0)
    return layout


def checkbox(text: str, tip: str, checked: bool = True) -> QCheckBox:
    box = QCheckBox(text)
    box.setChecked(checked)
    box.setToolTip(tip)
    return box
