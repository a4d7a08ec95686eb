"""The MIQ-SAM3D dock widget: one click, every lesion of that kind, each with a score.

Layout and signal wiring only; each concern lives in its own module:

- :mod:`._session`: the state between clicks, Qt-free (predictor cache, newest prompt wins, the
  current prediction, deleted instances, threshold -> labels and rows, undo states);
- :mod:`._runner`: a run from the GUI thread (checks, ``thread_worker``, progress, notifications);
- :mod:`._layers`: the layer pickers, layer events, and each image's prompt layer (:mod:`._prompts`);
- :mod:`._output`: the output layer, its threshold preview and undo;
- :mod:`._adapt_panel`: "My data set": add the committed instances to a data set, adapt to it.

Layers it writes to: its own prompt and output ("MIQ-SAM3D instances") layers and, on "Commit"
(copy the shown instances into a Labels layer of the user's), the layer chosen in the commit
picker. Every write into a Labels layer is one undo step of that layer (:mod:`._history`).
It never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Points
from napari.utils.events import Event
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QLabel, QProgressBar, QPushButton, QSlider,
    QVBoxLayout, QWidget,
)

from napari_miqsam.inference.options import PredictOptions
from napari_miqsam.inference.prediction import DEFAULT_MIN_VOLUME, DEFAULT_THRESHOLD

from ._adapt_panel import AdaptPanel
from ._forms import checkbox, side_by_side
from ._instance_table import InstanceTable
from ._layers import ViewerLayers, bind_keys, centre_view, unsupported
from ._output import OUTPUT_NAME, OutputLayer
from ._prompts import PROMPTS_NAME, set_next_kind
from ._runner import Runner
from ._session import Session, Settings

if TYPE_CHECKING:
    import napari

__all__ = ["MiqsamWidget", "OUTPUT_NAME", "PROMPTS_NAME", "KEY_RUN", "KEY_NEGATIVE", "KEY_COMMIT"]

DEVICES = ("auto", "cpu", "cuda", "mps")
KEY_RUN, KEY_NEGATIVE, KEY_COMMIT = "Shift-R", "Shift-N", "Shift-C"


class MiqsamWidget(QWidget):
    """Dock widget: pick an image, click a lesion, get every lesion of that kind with a score."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # napari hands plugins a PublicOnlyProxy of the viewer, which also wraps every layer in a
        # new proxy on each access; the session keys its cache on layer identity, so the widget
        # keeps the viewer itself (and still uses only public napari API).
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        #: the state between clicks (Qt-free): predictors, prediction, shown rows
        self.session = Session()
        self.output = OutputLayer(self.viewer, on_history=self._sync_to_data)
        self._scheduled = False  # an automatic run is queued on the event loop
        self._build_ui()
        self._on_settings_changed()
        self.layers = ViewerLayers(
            self.viewer, self.image_combo, self.prompts_combo, self.target_combo, is_output=self.output.owns,
            negative=self.negative_check.isChecked, on_points=self._on_points_changed,
            on_image_data=self.session.image_changed, on_removed=self._on_layer_removed)
        self.layers.connect()
        self.runner = Runner(self.session, self.layers, self._options, self._show, status=self.status_label,
                             progress_bar=self.progress_bar, cancel_button=self.cancel_button, parent=self)
        self.adapt_panel = AdaptPanel(self.session, self.viewer, self.weights_combo, image=self.image_layer,
                                      target=self.target_layer, output=lambda: self.output_layer, parent=self)
        self.layout().addWidget(self.adapt_panel)
        self.image_combo.currentIndexChanged.connect(self.layers.ensure_prompts)
        self.prompts_combo.currentIndexChanged.connect(self.layers.prompts_chosen)
        self._keys = {KEY_RUN: "run", KEY_NEGATIVE: "toggle_negative", KEY_COMMIT: "commit"}
        bind_keys(self.viewer, self, self._keys)
        self.layers.ensure_prompts()

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The 3D image layer to segment, (z, y, x).")
        form.addRow("Image", self.image_combo)
        self.prompts_combo = QComboBox()
        self.prompts_combo.setToolTip("Points layer holding the prompt points.")
        self.add_points_button = QPushButton("Add points")
        self.add_points_button.setToolTip(f"Create or select the '{PROMPTS_NAME}' layer and switch it to add mode.")
        form.addRow("Prompts", side_by_side(self.prompts_combo, self.add_points_button))
        self.negative_check = checkbox(
            f"negative point ({KEY_NEGATIVE})",
            "New points mark what is NOT the lesion (red). Unchecked: positive points (green).", checked=False)
        form.addRow("", self.negative_check)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        form.addRow("Device", self.device_combo)
        self.weights_combo = QComboBox()
        self.weights_combo.addItem("shipped default", None)
        self.weights_button = QPushButton("Choose…")
        self.weights_button.setToolTip("Load a .safetensors weights file.")
        form.addRow("Weights", side_by_side(self.weights_combo, self.weights_button))
        self.detail_combo = QComboBox()
        self.detail_combo.addItem("accurate", False)
        self.detail_combo.addItem("fast", True)
        self.detail_combo.setToolTip(
            "accurate: the model grid the weights ask for (shipped weights: 1.3 mm). fast: a grid 15% "
            "coarser (1.5 mm): 0.65x the voxels and fewer windows, about 1.3-7x faster on a CPU, for "
            "somewhat lower accuracy (README: Speed). Changing it embeds the image again.")
        form.addRow("Detail", self.detail_combo)
        self.modality_combo = QComboBox()
        self.modality_combo.addItem("auto", "auto")
        self.modality_combo.addItem("CT (HU)", "ct")
        self.modality_combo.addItem("other (MR, microscopy)", "other")
        self.modality_combo.setToolTip(
            "How the image's values are read. auto: CT when they look like Hounsfield units (air near "
            "-1000), then the soft-tissue window; otherwise the 0.5-99.5 percentiles. Choose CT (HU) "
            "for a CT crop without air (e.g. cut to the liver), other for MR or microscopy. "
            "Changing it embeds the image again.")
        form.addRow("Intensities", self.modality_combo)
        layout.addLayout(form)

        self.auto_check = checkbox("Run on each new point", "A new prompt point runs the model at once.")
        self.kind_gate_check = checkbox(
            "Kind gate: only the clicked kind",
            "Drop instances the model reads as another lesion kind than the one clicked (e.g. cysts "
            "when a tumour is clicked; --kind-gate). Unchecked: every lesion the queries find.")
        self.grow_check = checkbox(
            "Grow small masks to edges",
            "Grow each small instance out to the image's half-contrast edge around it: the network "
            "tends to draw small lesions too small (README: How it works). Unchecked: masks as the "
            "network draws them (--no-grow).")
        for box in (self.auto_check, self.kind_gate_check, self.grow_check):
            layout.addWidget(box)

        self.run_button = QPushButton(f"Run ({KEY_RUN})")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        layout.addLayout(side_by_side(self.run_button, self.cancel_button))
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(False)
        self.status_label = QLabel("Click a lesion to start.")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)

        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, 100)
        self.threshold_slider.setValue(round(DEFAULT_THRESHOLD * 100))
        self.threshold_slider.setTracking(False)  # valueChanged on release: one undo step
        self.threshold_slider.setToolTip("Hide instances whose confidence is below this value.")
        self.threshold_label = QLabel(f"{DEFAULT_THRESHOLD:.2f}")
        self.threshold_label.setMinimumWidth(32)
        form = QFormLayout()
        form.addRow("Confidence ≥", side_by_side(self.threshold_slider, self.threshold_label))
        self.min_volume_spin = QDoubleSpinBox()
        self.min_volume_spin.setRange(0.0, 1e7)
        self.min_volume_spin.setDecimals(0)
        self.min_volume_spin.setSingleStep(10.0)
        self.min_volume_spin.setValue(DEFAULT_MIN_VOLUME)
        self.min_volume_spin.setSuffix(" mm³")
        self.min_volume_spin.setKeyboardTracking(False)  # valueChanged on Enter / arrows: one undo step
        self.min_volume_spin.setToolTip(
            "Hide instances smaller than this volume (the clicked one is always kept); 0 shows all.")
        form.addRow("Volume ≥", self.min_volume_spin)
        layout.addLayout(form)

        self.table = InstanceTable()
        layout.addWidget(self.table, 1)
        self.delete_button = QPushButton("Delete instance")
        self.delete_button.setToolTip("Remove the selected instance (Delete key in the table).")
        layout.addWidget(self.delete_button)

        commit_box = QGroupBox("Commit instances to")
        commit_form = QFormLayout(commit_box)
        self.target_combo = QComboBox()
        self.target_combo.setToolTip("Labels layer that receives the instances; its voxels are kept. "
                                     "\"A new Labels layer\": Commit makes one on the image's grid.")
        self.commit_value_combo = QComboBox()
        self.commit_value_combo.addItem("a new label per instance", "new")
        self.commit_value_combo.addItem("the target's selected label", "selected")
        self.commit_button = QPushButton(f"Commit ({KEY_COMMIT})")
        commit_form.addRow("Layer", self.target_combo)
        commit_form.addRow("Write", self.commit_value_combo)
        commit_form.addRow(self.commit_button)
        layout.addWidget(commit_box)

        self.add_points_button.clicked.connect(self.activate_prompts)
        self.negative_check.toggled.connect(self._on_negative_toggled)
        self.device_combo.currentIndexChanged.connect(self._on_settings_changed)
        self.weights_combo.currentIndexChanged.connect(self._on_settings_changed)
        self.detail_combo.currentIndexChanged.connect(self._on_detail_changed)
        self.modality_combo.currentIndexChanged.connect(self._on_detail_changed)
        self.weights_button.clicked.connect(self._choose_weights)
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button.clicked.connect(self.cancel)
        self.kind_gate_check.toggled.connect(self._on_choice_toggled)
        self.grow_check.toggled.connect(self._on_choice_toggled)
        self.threshold_slider.sliderMoved.connect(self._on_threshold_moved)
        self.threshold_slider.valueChanged.connect(self._on_threshold_changed)
        self.min_volume_spin.valueChanged.connect(lambda _value: self._show())
        self.table.instance_selected.connect(self.go_to_instance)
        self.table.delete_requested.connect(self.delete_instance)
        self.delete_button.clicked.connect(self.table.request_delete)
        self.commit_button.clicked.connect(lambda: self.commit())

    # ---------------------------------------------------------- public API
    @property
    def threshold(self) -> float:
        """The confidence threshold in [0, 1] (follows the slider while it is dragged)."""
        return self.threshold_slider.sliderPosition() / 100.0

    @property
    def min_volume(self) -> float:
        """The smallest instance volume shown (mm³, or the image's units cubed)."""
        return float(self.min_volume_spin.value())

    @property
    def output_layer(self) -> Labels | None:
        """The layer showing the instances, if it still exists."""
        return self.output.layer

    @property
    def busy(self) -> bool:
        """True while a run is in flight or queued."""
        return self.session.busy or self._scheduled

    @property
    def predictor_factory(self) -> Callable[[str | None, str], Any]:
        """``(weights, device) -> Predictor``, called on the worker thread. Tests and scripts may
        replace it (e.g. with an untrained ``Predictor.from_config('tiny')``)."""
        return self.session.predictor_factory

    @predictor_factory.setter
    def predictor_factory(self, factory: Callable[[str | None, str], Any]) -> None:
        self.session.predictor_factory = factory

    def image_layer(self) -> Image | None:
        return self.layers.image()

    def prompts_layer(self) -> Points | None:
        return self.layers.prompts()

    def target_layer(self) -> Labels | None:
        return self.layers.target()

    def activate_prompts(self) -> Points | None:
        """Select the prompt layer (created on demand) in add mode, ready for a click."""
        image = self.image_layer()
        if image is None:
            show_warning("Open a 3D image first: there is no image layer to prompt.")
            return None
        if (why := unsupported(image)) is not None:
            show_error(why)
            return None
        points = self.prompts_layer() or self.layers.ensure_prompts()
        self.viewer.layers.selection.active = points
        points.mode = "add"
        return points

    def set_negative(self, negative: bool) -> None:
        """Make new prompt points negative (red) or positive (green)."""
        self.negative_check.setChecked(bool(negative))

    def toggle_negative(self) -> None:
        self.set_negative(not self.negative_check.isChecked())

    def run(self, *, auto: bool = False) -> None:
        """Predict for the current prompts; a run in flight is superseded (newest prompt wins)."""
        if self.session.request():
            self.runner.start(auto=auto)

    def cancel(self) -> None:
        """Stop the run in flight (between windows) and drop any queued run."""
        self._scheduled = False  # a run queued by a new point but not started yet
        if self.session.cancel():
            self.status_label.setText("Cancelling…")

    def show_prediction(self, prediction: Any, image: Image | None = None) -> None:
        """Show ``prediction`` (a ``Prediction`` on ``image``'s grid) as the current result."""
        self.session.accept(prediction)
        self._show(image=image)

    def commit(self) -> None:
        """Copy the shown instances into the chosen Labels layer without overwriting its voxels."""
        output, target = self.output_layer, self.target_layer()
        if output is None or not np.any(np.asarray(output.data)):
            show_info("There are no instances to commit yet.")
            return
        if target is output:
            show_warning("Choose a Labels layer to commit the instances to.")
            return
        made = target is None
        if made:  # "a new Labels layer": made on the image's grid, removing it undoes the commit
            image = self.image_layer()
            target = self.output.new_target(f"{image.name} lesions" if image is not None else "lesions")
            self.target_combo.setCurrentText(target.name)
        selected = self.commit_value_combo.currentData() == "selected"
        try:
            n, written = self.output.commit_into(target, int(target.selected_label) if selected else None)
        except ValueError as exc:
            show_error(f"Cannot commit to '{target.name}': {exc}.")
            return
        if written == 0:
            show_info(f"Nothing new to commit: '{target.name}' already labels those voxels.")
        else:
            where = f"a new layer '{target.name}'" if made else f"'{target.name}'"
            show_info(f"Committed {n} instance(s), {written} voxels, to {where} (Ctrl+Z there undoes it).")

    def delete_instance(self, instance_id: int) -> None:
        """Remove one instance from the output layer (one undo step)."""
        output = self.output_layer
        if output is None:
            return
        self.output.erase(instance_id)
        self.session.delete(instance_id)
        self._set_rows(self.session.rows)
        self.session.remember(np.asarray(output.data))

    def go_to_instance(self, instance_id: int) -> None:
        """Centre the view (camera and current slice) on an instance's centroid."""
        row = self.session.row(instance_id)
        layer = self.output_layer or self.image_layer()
        if row is None or layer is None:
            return
        centre_view(self.viewer, layer, row["centroid"])
        if self.output_layer is not None:
            self.output_layer.selected_label = int(instance_id)

    def set_weights(self, path: str | None) -> None:
        """Use the shipped default (None) or a .safetensors file; takes effect on the next run."""
        if path is None:
            self.weights_combo.setCurrentIndex(0)
            return
        if not str(path).endswith(".safetensors"):
            show_error(f"'{Path(path).name}' is not a .safetensors weights file.")
            return
        index = self.weights_combo.findData(str(path))
        if index < 0:
            self.weights_combo.addItem(Path(path).name, str(path))
            index = self.weights_combo.count() - 1
        self.weights_combo.setCurrentIndex(index)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt name
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Cancel the run in flight, terminate an adaptation, let go of the viewer (keys, events)."""
        self._scheduled = False
        self.session.shutdown()
        if hasattr(self, "adapt_panel"):
            self.adapt_panel.shutdown()
        for key in getattr(self, "_keys", {}):
            self.viewer.bind_key(key, None, overwrite=True)
        self._keys = {}
        try:
            self.layers.disconnect()
        except (RuntimeError, ValueError, AttributeError):  # pragma: no cover - viewer gone
            pass

    # ------------------------------------------------------------ viewer
    def _on_layer_removed(self, layer: Any) -> None:
        if isinstance(layer, Image):
            self.session.forget_image(layer)
        if self.output.owns(layer):
            self.output.forget()
            self.session.clear()
            self._set_rows([])

    def _on_negative_toggled(self, negative: bool) -> None:
        if (points := self.prompts_layer()) is not None:
            set_next_kind(points, negative)

    def _on_points_changed(self, event: Event) -> None:
        if str(getattr(event, "action", None)) not in ("added", "removed", "changed"):
            return
        if self.auto_check.isChecked() and not self._scheduled:
            # after napari has finished adding the point (features, selection)
            self._scheduled = True
            QTimer.singleShot(0, self._run_scheduled)

    def _run_scheduled(self) -> None:
        if self._scheduled:  # not cancelled before it started
            self._scheduled = False
            self.run(auto=True)

    # ----------------------------------------------------------------- run
    def _settings(self) -> Settings:
        return Settings(self.weights_combo.currentData(), self.device_combo.currentText(),
                        bool(self.detail_combo.currentData()), str(self.modality_combo.currentData()))

    def _on_settings_changed(self, *_: Any) -> None:
        self.session.settings = self._settings()

    def _on_detail_changed(self, *_: Any) -> None:
        """Another model grid or intensity reading: the embeddings are of the old one; run again
        when a result is shown."""
        self._on_settings_changed()
        if self.session.prediction is not None:
            self.run()

    def _on_choice_toggled(self, _checked: bool) -> None:
        """*Kind gate* or *Grow small masks to edges* changed: the shown result would
        change, so run again for the current prompts."""
        if self.session.prediction is not None:
            self.run()

    def _options(self) -> PredictOptions:
        return PredictOptions.from_widget(kind_gate=self.kind_gate_check.isChecked(), grow=self.grow_check.isChecked())

    def _choose_weights(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "MIQ-SAM3D weights", str(Path.home()), "Weights (*.safetensors);;All files (*)")
        if path:
            self.set_weights(path)

    # ------------------------------------------------------------- output
    def _show(self, image: Image | None = None, *, preview: bool = False) -> None:
        """Show the session's prediction at the current threshold (no model call); ``preview``:
        a threshold being dragged, no undo step."""
        if self.session.prediction is None:
            return
        labels, rows = self.session.labels(self.threshold, self.min_volume)
        _, new_history = self.output.ensure(labels.shape, image or self.image_layer(), before=self.prompts_layer())
        if new_history:
            self.session.forget_history()
        (self.output.preview if preview else self.output.write)(labels)
        self._set_rows(rows)
        if not preview:
            self.session.remember(labels)
        self.status_label.setText(self.session.summary(self.threshold, self.min_volume))

    def _set_rows(self, rows: list[dict]) -> None:
        self.output.set_rows(rows)
        self.table.set_instances(rows)

    def _sync_to_data(self) -> None:
        """After an undo or redo of the output layer: the rows of what it holds now."""
        if (output := self.output_layer) is not None:
            self._set_rows(self.session.restore(np.asarray(output.data), self.output.voxel_mm3()))

    def _on_threshold_moved(self, value: int) -> None:
        self.threshold_label.setText(f"{value / 100:.2f}")
        self._show(preview=True)

    def _on_threshold_changed(self, value: int) -> None:
        self.threshold_label.setText(f"{value / 100:.2f}")
        self._show()
