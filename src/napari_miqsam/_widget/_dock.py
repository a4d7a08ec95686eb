"""The MIQ-SAM3D dock widget: one click, every lesion of that kind, each with a score.

The widget is a thin adapter between napari and :class:`napari_miqsam.inference.predictor.Predictor`:
it turns prompt points into (z, y, x) voxel coordinates of the chosen image, runs the predictor on a
napari ``thread_worker`` (one run at a time; the newest prompt wins), and shows the cached
``Prediction`` at the confidence threshold as a Labels layer with a ``features`` table. A result
whose image data was replaced during the run is dropped and the run repeated on the new data. It
never imports torch.

Layers it writes to: only its own output layer ("MIQ-SAM3D instances") and, on "Commit", the
Labels layer the user chose in the commit picker. Every write is one undo step of that layer
(``Labels.data_setitem``; see :mod:`._history`).
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Points
from napari.qt.threading import create_worker
from napari.utils.events import Event
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from napari_miqsam.errors import CancelledError, MiqsamError
from napari_miqsam.inference.prediction import DEFAULT_MIN_VOLUME, DEFAULT_THRESHOLD

from ._history import merge_labels, replace_labels
from ._instance_table import InstanceTable
from ._worker import Job, JobResult, load_predictor, run_job

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)

PROMPTS_NAME = "MIQ-SAM3D prompts"
OUTPUT_NAME = "MIQ-SAM3D instances"
POSITIVE, NEGATIVE = "positive", "negative"
PROMPT_COLORS = {POSITIVE: "lime", NEGATIVE: "red"}
DEVICES = ("auto", "cpu", "cuda", "mps")
KEY_RUN, KEY_NEGATIVE, KEY_COMMIT = "Shift-R", "Shift-N", "Shift-C"
# Metadata keys of an image layer (set by our reader) that describe its file geometry; copied to
# the output layer so that saving the instances as NIfTI reuses the source affine and header.
GEOMETRY_KEYS = ("affine", "header", "axes", "spacing", "format", "source_path")
MAX_SNAPSHOTS = 64


class _ProgressRelay(QObject):
    """Carries progress reports from the worker thread to the GUI thread (queued signal)."""

    progress = Signal(str, int, int)


@dataclass
class _PredictorEntry:
    """The cached predictor of one image layer and the data version it has embedded."""

    layer: weakref.ref
    predictor: Any | None = None
    embedded_version: int | None = None
    data_version: int = 0


@dataclass
class _Snapshot:
    """What the output layer showed after one of our writes; restored on undo / redo."""

    rows: list[dict]
    prediction: Any
    deleted: frozenset
    counts: dict[int, int] = field(default_factory=dict)


def _features(rows: list[dict]) -> dict[str, np.ndarray]:
    """The output layer's ``features`` table: one row per instance, keyed by label id."""
    centroids = np.array([r["centroid"] for r in rows], dtype=float).reshape(-1, 3)
    return {
        "index": np.array([int(r["id"]) for r in rows], dtype=int),
        "score": np.array([float(r["score"]) for r in rows], dtype=float),
        "volume_mm3": np.array([float(r["volume_mm3"]) for r in rows], dtype=float),
        "centroid_z": centroids[:, 0],
        "centroid_y": centroids[:, 1],
        "centroid_x": centroids[:, 2],
    }


def _camera(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def _unsupported_image(image: Image) -> str | None:
    """Why ``image`` cannot be segmented (with what to do), or None for a 3D grey-value volume."""
    shape = tuple(int(n) for n in image.data.shape)
    if image.rgb:
        return (
            f"MIQ-SAM3D needs a 3D (z, y, x) grey-value volume; '{image.name}' is an RGB image {shape}. "
            "Right-click the layer, choose 'Split RGB' and pick one channel as Image."
        )
    if image.ndim == 4:
        return (
            f"MIQ-SAM3D needs a 3D (z, y, x) volume; '{image.name}' is 4D {shape}, e.g. several channels. "
            "Choose one channel: right-click the layer, choose 'Split Stack' and pick one channel as Image."
        )
    if image.ndim != 3:
        return (
            f"MIQ-SAM3D needs a 3D (z, y, x) image; '{image.name}' has {image.ndim} "
            f"dimension{'s' if image.ndim != 1 else ''} {shape}."
        )
    return None


def _volume(image: Image) -> Any:
    """The full-resolution array of ``image`` (level 0 of a multiscale layer)."""
    return image.data[0] if image.multiscale else image.data


def _is_out_of_memory(error: BaseException) -> bool:
    """Host or device out of memory (torch reports CUDA / MPS exhaustion as a RuntimeError)."""
    return isinstance(error, MemoryError) or "out of memory" in str(error).lower()


def _out_of_memory_message(device: str) -> str:
    if device == "cpu":
        return (
            "MIQ-SAM3D ran out of memory on the CPU: crop the image to a smaller window around the "
            "lesions (or close other programs), then run again."
        )
    return (
        f"MIQ-SAM3D ran out of memory (device '{device}'): choose 'cpu' as Device, or crop the image "
        "to a smaller window around the lesions, then run again."
    )


def _label_counts(data: np.ndarray) -> dict[int, int]:
    counts = np.bincount(np.asarray(data).ravel().astype(np.int64, copy=False))
    return {int(i): int(counts[i]) for i in np.flatnonzero(counts) if i != 0}


class MiqsamWidget(QWidget):
    """Dock widget: pick an image, click a lesion, get every lesion of that kind with a score."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # napari hands plugins a PublicOnlyProxy of the viewer, which also wraps every layer in a
        # new proxy on each access; the widget keys its caches on layer identity, so it keeps the
        # viewer itself (and still uses only public napari API).
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        #: ``(weights, device) -> Predictor``; runs on the worker thread. Tests and scripts may
        #: replace it (e.g. with an untrained ``Predictor.from_config('tiny')``).
        self.predictor_factory: Callable[[str | None, str], Any] = load_predictor
        self._predictors: dict[int, _PredictorEntry] = {}
        self._job: Job | None = None
        self._worker: Any | None = None
        self._pending = False
        self._scheduled = False  # an automatic run is queued on the event loop
        self._user_cancelled = False
        self._latest_seq = 0
        self._prediction: Any | None = None
        self._deleted: set[int] = set()  # ids of the current prediction removed by the user
        self._rows: list[dict] = []
        self._output: Labels | None = None
        self._preview_base: np.ndarray | None = None
        self._snapshots: list[_Snapshot] = []
        self._warned_untrained: set[tuple] = set()
        self._relay = _ProgressRelay(self)
        self._relay.progress.connect(self._on_progress)
        self._build_ui()
        self._connect_viewer()
        self._refresh_layer_choices()
        self._bind_keys()

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The 3D image layer to segment, (z, y, x).")
        form.addRow("Image", self.image_combo)

        prompt_row = QHBoxLayout()
        self.prompts_combo = QComboBox()
        self.prompts_combo.setToolTip("Points layer holding the prompt points.")
        self.add_points_button = QPushButton("Add points")
        self.add_points_button.setToolTip(
            f"Create or select the '{PROMPTS_NAME}' layer and switch it to add mode."
        )
        prompt_row.addWidget(self.prompts_combo, 1)
        prompt_row.addWidget(self.add_points_button)
        form.addRow("Prompts", prompt_row)

        self.negative_check = QCheckBox(f"negative point ({KEY_NEGATIVE})")
        self.negative_check.setToolTip(
            "New points mark what is NOT the lesion (red). Unchecked: positive points (green)."
        )
        form.addRow("", self.negative_check)

        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        form.addRow("Device", self.device_combo)

        weights_row = QHBoxLayout()
        self.weights_combo = QComboBox()
        self.weights_combo.addItem("shipped default", None)
        self.weights_button = QPushButton("Choose…")
        self.weights_button.setToolTip("Load a .safetensors weights file.")
        weights_row.addWidget(self.weights_combo, 1)
        weights_row.addWidget(self.weights_button)
        form.addRow("Weights", weights_row)

        self.detail_combo = QComboBox()
        self.detail_combo.addItem("accurate", False)
        self.detail_combo.addItem("fast", True)
        self.detail_combo.setToolTip(
            "accurate: the model grid the weights ask for (shipped weights: 1.3 mm). fast: a grid 15% "
            "coarser (1.5 mm): 0.65x the voxels and fewer windows, about 1.3-7x faster on a CPU, for "
            "somewhat lower accuracy (README: Speed). Changing it embeds the image again.")
        form.addRow("Detail", self.detail_combo)
        layout.addLayout(form)

        self.auto_check = QCheckBox("Run on each new point")
        self.auto_check.setChecked(True)
        layout.addWidget(self.auto_check)
        self.same_kind_check = QCheckBox("Only the clicked kind")
        self.same_kind_check.setChecked(True)
        self.same_kind_check.setToolTip(
            "Drop instances the model reads as another lesion kind than the one clicked "
            "(e.g. cysts when a tumour is clicked). Unchecked: every lesion the queries find.")
        layout.addWidget(self.same_kind_check)
        self.grow_check = QCheckBox("Grow small masks to edges")
        self.grow_check.setChecked(True)
        self.grow_check.setToolTip(
            "Grow each small instance out to the image's half-contrast edge around it: the network "
            "tends to draw small lesions too small (README: How it works). Unchecked: masks as the "
            "network draws them.")
        layout.addWidget(self.grow_check)

        run_row = QHBoxLayout()
        self.run_button = QPushButton(f"Run ({KEY_RUN})")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        run_row.addWidget(self.run_button, 1)
        run_row.addWidget(self.cancel_button)
        layout.addLayout(run_row)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(False)
        self.status_label = QLabel("Click a lesion to start.")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)

        threshold_row = QHBoxLayout()
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, 100)
        self.threshold_slider.setValue(round(DEFAULT_THRESHOLD * 100))
        self.threshold_slider.setTracking(False)  # valueChanged on release: one undo step
        self.threshold_slider.setToolTip("Hide instances whose confidence is below this value.")
        self.threshold_label = QLabel(f"{DEFAULT_THRESHOLD:.2f}")
        self.threshold_label.setMinimumWidth(32)
        threshold_row.addWidget(QLabel("Confidence ≥"))
        threshold_row.addWidget(self.threshold_slider, 1)
        threshold_row.addWidget(self.threshold_label)
        layout.addLayout(threshold_row)
        volume_row = QHBoxLayout()
        self.min_volume_spin = QDoubleSpinBox()
        self.min_volume_spin.setRange(0.0, 1e7)
        self.min_volume_spin.setDecimals(0)
        self.min_volume_spin.setSingleStep(10.0)
        self.min_volume_spin.setValue(DEFAULT_MIN_VOLUME)
        self.min_volume_spin.setSuffix(" mm³")
        self.min_volume_spin.setKeyboardTracking(False)  # valueChanged on Enter / arrows: one undo step
        self.min_volume_spin.setToolTip(
            "Hide instances smaller than this volume (the clicked one is always kept); 0 shows all.")
        volume_row.addWidget(QLabel("Volume ≥"))
        volume_row.addWidget(self.min_volume_spin, 1)
        layout.addLayout(volume_row)

        self.table = InstanceTable()
        layout.addWidget(self.table, 1)
        self.delete_button = QPushButton("Delete instance")
        self.delete_button.setToolTip("Remove the selected instance (Delete key in the table).")
        layout.addWidget(self.delete_button)

        commit_box = QGroupBox("Commit instances to")
        commit_form = QFormLayout(commit_box)
        self.target_combo = QComboBox()
        self.target_combo.setToolTip("Labels layer that receives the instances; its voxels are kept.")
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
        self.prompts_combo.currentIndexChanged.connect(self._on_prompts_choice)
        self.device_combo.currentIndexChanged.connect(self._forget_predictors)
        self.weights_combo.currentIndexChanged.connect(self._forget_predictors)
        self.detail_combo.currentIndexChanged.connect(self._on_detail_changed)
        self.weights_button.clicked.connect(self._choose_weights)
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button.clicked.connect(self.cancel)
        self.same_kind_check.toggled.connect(self._on_choice_toggled)
        self.grow_check.toggled.connect(self._on_choice_toggled)
        self.threshold_slider.sliderMoved.connect(self._on_threshold_moved)
        self.threshold_slider.valueChanged.connect(self._on_threshold_changed)
        self.min_volume_spin.valueChanged.connect(lambda _value: self._show(commit=True))
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
        if self._output is not None and self._output not in self.viewer.layers:
            self._output = None
        return self._output

    @property
    def busy(self) -> bool:
        """True while a run is in flight or queued."""
        return self._job is not None or self._pending or self._scheduled

    def image_layer(self) -> Image | None:
        return self._layer_named(self.image_combo.currentText(), Image)

    def prompts_layer(self) -> Points | None:
        return self._layer_named(self.prompts_combo.currentText(), Points)

    def target_layer(self) -> Labels | None:
        return self._layer_named(self.target_combo.currentText(), Labels)

    def activate_prompts(self) -> Points | None:
        """Select the prompt layer (created on demand) in add mode, ready for a click."""
        image = self.image_layer()
        if image is None:
            show_warning("Open a 3D image first: there is no image layer to prompt.")
            return None
        unsupported = _unsupported_image(image)
        if unsupported is not None:
            show_error(unsupported)
            return None
        points = self.prompts_layer()
        if points is None:
            points = self._create_prompts(image)
        self.viewer.layers.selection.active = points
        points.mode = "add"
        return points

    def set_negative(self, negative: bool) -> None:
        """Make new prompt points negative (red) or positive (green)."""
        self.negative_check.setChecked(bool(negative))

    def run(self, *, auto: bool = False) -> None:
        """Predict for the current prompts; a run in flight is superseded (newest prompt wins)."""
        self._latest_seq += 1
        if self._job is not None:
            self._pending = True
            self._job.supersede()
            return
        self._start_run(auto=auto)

    def cancel(self) -> None:
        """Stop the run in flight (between windows) and drop any queued run."""
        self._pending = False
        self._scheduled = False  # a run queued by a new point but not started yet
        if self._job is not None:
            self._user_cancelled = True
            self._job.cancel()
            self.status_label.setText("Cancelling…")

    def commit(self) -> None:
        """Merge the shown instances into the chosen Labels layer without overwriting its voxels."""
        output = self.output_layer
        target = self.target_layer()
        if output is None or not np.any(np.asarray(output.data)):
            show_info("There are no instances to commit yet.")
            return
        if target is None or target is output:
            show_warning("Choose a Labels layer to commit the instances to.")
            return
        self._flush_preview()
        value = None
        if self.commit_value_combo.currentData() == "selected":
            value = int(target.selected_label)
        try:
            written = merge_labels(target, np.asarray(output.data), value)
        except ValueError as exc:
            show_error(f"Cannot commit to '{target.name}': {exc}.")
            return
        n = len(_label_counts(output.data))
        if written == 0:
            show_info(f"Nothing new to commit: '{target.name}' already labels those voxels.")
        else:
            show_info(f"Committed {n} instance(s), {written} voxels, to '{target.name}' (Ctrl+Z there undoes it).")

    def delete_instance(self, instance_id: int) -> None:
        """Remove one instance from the output layer (one undo step)."""
        output = self.output_layer
        if output is None:
            return
        self._flush_preview()
        where = np.nonzero(np.asarray(output.data) == instance_id)
        if where[0].size:
            output.data_setitem(where, 0)
        self._deleted.add(int(instance_id))
        self._set_rows([r for r in self._rows if int(r["id"]) != int(instance_id)])
        self._push_snapshot(_label_counts(output.data))

    def go_to_instance(self, instance_id: int) -> None:
        """Centre the view (camera and current slice) on an instance's centroid."""
        row = next((r for r in self._rows if int(r["id"]) == int(instance_id)), None)
        layer = self.output_layer or self.image_layer()
        if row is None or layer is None:
            return
        world = np.asarray(layer.data_to_world(np.asarray(row["centroid"], dtype=float)), dtype=float)
        ndim = self.viewer.dims.ndim
        full = np.asarray(self.viewer.dims.point, dtype=float)
        full[ndim - len(world) :] = world
        self.viewer.dims.set_point(range(ndim), tuple(full))
        _camera(self.viewer).center = tuple(full[list(self.viewer.dims.displayed)])
        if self.output_layer is not None:
            self.output_layer.selected_label = int(instance_id)

    # ------------------------------------------------------------ viewer
    def _connect_viewer(self) -> None:
        events = self.viewer.layers.events
        events.inserted.connect(self._on_layer_inserted)
        events.removed.connect(self._on_layer_removed)
        events.moved.connect(self._refresh_layer_choices)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_layer_choices)

    def _disconnect_viewer(self) -> None:
        events = self.viewer.layers.events
        for emitter, callback in (
            (events.inserted, self._on_layer_inserted),
            (events.removed, self._on_layer_removed),
            (events.moved, self._refresh_layer_choices),
        ):
            emitter.disconnect(callback)
        for layer in self.viewer.layers:
            layer.events.name.disconnect(self._refresh_layer_choices)
            if isinstance(layer, Points):
                layer.events.data.disconnect(self._on_points_changed)
            if isinstance(layer, Image):
                layer.events.data.disconnect(self._on_image_data)

    def _bind_keys(self) -> None:
        me = weakref.ref(self)

        def call(method: str):
            def _handler(viewer: Any) -> None:
                widget = me()
                if widget is None:
                    return
                try:
                    widget.objectName()
                except RuntimeError:  # the Qt side of the widget is gone (dock removed)
                    return
                getattr(widget, method)()

            return _handler

        self._keys = {KEY_RUN: "run", KEY_NEGATIVE: "toggle_negative", KEY_COMMIT: "commit"}
        for key, method in self._keys.items():
            self.viewer.bind_key(key, call(method), overwrite=True)

    def toggle_negative(self) -> None:
        self.set_negative(not self.negative_check.isChecked())

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt name
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Cancel the run in flight and let go of the viewer (keys, events)."""
        self._pending = False
        self._scheduled = False
        if self._job is not None:
            self._job.cancel()
        for key in getattr(self, "_keys", {}):
            self.viewer.bind_key(key, None, overwrite=True)
        self._keys = {}
        try:
            self._disconnect_viewer()
        except (RuntimeError, ValueError, AttributeError):  # pragma: no cover - viewer gone
            pass

    def _layer_named(self, name: str, kind: type) -> Any | None:
        if not name or name not in self.viewer.layers:
            return None
        layer = self.viewer.layers[name]
        return layer if isinstance(layer, kind) else None

    def _on_layer_inserted(self, event: Event) -> None:
        layer = event.value
        layer.events.name.connect(self._refresh_layer_choices)
        self._refresh_layer_choices()

    def _on_layer_removed(self, event: Event) -> None:
        layer = event.value
        layer.events.name.disconnect(self._refresh_layer_choices)
        if isinstance(layer, Points):
            layer.events.data.disconnect(self._on_points_changed)
        if isinstance(layer, Image):
            layer.events.data.disconnect(self._on_image_data)
            entry = self._predictors.pop(id(layer), None)
            if self._job is not None and self._job.image_key == id(layer):
                self._pending = False
                self._job.cancel()
            del entry
        if layer is self._output:
            self._output = None
            self._prediction = None
            self._preview_base = None
            self._snapshots.clear()
            self._set_rows([])
        self._refresh_layer_choices()

    def _refresh_layer_choices(self, event: Event | None = None) -> None:
        output = self._output
        layers = list(self.viewer.layers)
        images = [ly.name for ly in layers if isinstance(ly, Image)]
        points = [ly.name for ly in layers if isinstance(ly, Points)]
        labels = [ly.name for ly in layers if isinstance(ly, Labels) and ly is not output]
        preferred_image = next(
            (ly.name for ly in reversed(layers) if isinstance(ly, Image) and ly.ndim == 3 and not ly.rgb),
            images[-1] if images else "",
        )
        preferred_points = PROMPTS_NAME if PROMPTS_NAME in points else ""
        self._fill(self.image_combo, images, preferred_image)
        self._fill(self.prompts_combo, points, preferred_points, allow_none=True)
        self._fill(self.target_combo, labels, "", allow_none=True)
        self._on_prompts_choice()

    @staticmethod
    def _fill(combo: QComboBox, names: list[str], preferred: str, allow_none: bool = False) -> None:
        current = combo.currentText()
        combo.blockSignals(True)
        try:
            combo.clear()
            if allow_none:
                combo.addItem("")
            combo.addItems(names)
            choice = current if current in names else preferred
            combo.setCurrentText(choice if choice in names else (names[-1] if names and not allow_none else ""))
        finally:
            combo.blockSignals(False)

    # ------------------------------------------------------------ prompts
    def _create_prompts(self, image: Image) -> Points:
        extent = np.asarray(image.extent.world[1] - image.extent.world[0], dtype=float)
        size = float(max(2.0, 0.025 * float(np.max(extent[-2:]))))
        points = Points(
            np.empty((0, 3)),
            ndim=3,
            name=PROMPTS_NAME,
            scale=image.scale,
            translate=image.translate,
            rotate=image.rotate,
            shear=image.shear,
            affine=image.affine.affine_matrix,
            features={"prompt": np.array([], dtype=object)},
            feature_defaults={"prompt": NEGATIVE if self.negative_check.isChecked() else POSITIVE},
            face_color="prompt",
            face_color_cycle=PROMPT_COLORS,
            border_color="white",
            border_width=0.15,
            size=size,
        )
        self.viewer.add_layer(points)
        self._refresh_layer_choices()
        self.prompts_combo.setCurrentText(points.name)
        self._on_prompts_choice()
        return points

    def _on_prompts_choice(self, *_: Any) -> None:
        points = self.prompts_layer()
        for layer in self.viewer.layers:
            if isinstance(layer, Points):
                layer.events.data.disconnect(self._on_points_changed)
        if points is not None:
            points.events.data.connect(self._on_points_changed)
            self._on_negative_toggled(self.negative_check.isChecked())

    def _on_negative_toggled(self, negative: bool) -> None:
        points = self.prompts_layer()
        if points is not None and "prompt" in points.features:
            points.feature_defaults = {"prompt": NEGATIVE if negative else POSITIVE}

    def _on_points_changed(self, event: Event) -> None:
        action = getattr(event, "action", None)
        if str(action) not in ("added", "removed", "changed"):
            return
        if self.auto_check.isChecked() and not self._scheduled:
            # after napari has finished adding the point (features, selection)
            self._scheduled = True
            QTimer.singleShot(0, self._run_scheduled)

    def _run_scheduled(self) -> None:
        if not self._scheduled:  # cancelled before it started
            return
        self._scheduled = False
        self.run(auto=True)

    def _prompt_voxels(self, image: Image) -> tuple[list, list]:
        """Positive and negative prompt points as (z, y, x) voxel coordinates of ``image``."""
        points = self.prompts_layer()
        if points is None or len(points.data) == 0:
            return [], []
        if points.ndim != image.ndim:
            raise MiqsamError(
                f"The prompt layer '{points.name}' has {points.ndim} dimensions but the image has "
                f"{image.ndim}; delete it and click 'Add points' to make a matching one."
            )
        kinds = (
            np.asarray(points.features["prompt"], dtype=object)
            if "prompt" in points.features
            else np.full(len(points.data), POSITIVE, dtype=object)
        )
        positive, negative = [], []
        for coord, kind in zip(np.asarray(points.data, dtype=float), kinds):
            world = points.data_to_world(coord)
            voxel = tuple(float(v) for v in np.asarray(image.world_to_data(world))[-3:])
            (negative if kind == NEGATIVE else positive).append(voxel)
        return positive, negative

    # ----------------------------------------------------------------- run
    def _weights(self) -> str | None:
        return self.weights_combo.currentData()

    def _device(self) -> str:
        return self.device_combo.currentText()

    def _fast(self) -> bool:
        return bool(self.detail_combo.currentData())

    def _choose_weights(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "MIQ-SAM3D weights", str(Path.home()), "Weights (*.safetensors);;All files (*)"
        )
        if path:
            self.set_weights(path)

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

    def _forget_predictors(self, *_: Any) -> None:
        self._predictors.clear()

    def _on_image_data(self, event: Event) -> None:
        entry = self._predictors.get(id(event.source))
        if entry is not None:
            entry.data_version += 1

    def _entry(self, image: Image) -> _PredictorEntry:
        entry = self._predictors.get(id(image))
        if entry is None or entry.layer() is not image:
            entry = _PredictorEntry(layer=weakref.ref(image))
            self._predictors[id(image)] = entry
            image.events.data.connect(self._on_image_data)
        return entry

    def _start_run(self, *, auto: bool = False) -> None:
        image = self.image_layer()
        if image is None:
            if not auto:
                show_warning("Open a 3D image first: there is no image layer to segment.")
            return
        unsupported = _unsupported_image(image)
        if unsupported is not None:
            show_error(unsupported)
            return
        try:
            positive, negative = self._prompt_voxels(image)
        except MiqsamError as exc:
            show_error(str(exc))
            return
        if not positive:
            if not auto or negative:
                show_info("Place a positive (green) point on a lesion first.")
            return
        data = _volume(image)
        entry = self._entry(image)
        embed = entry.predictor is None or entry.embedded_version != entry.data_version
        job = Job(
            seq=self._latest_seq,
            image_key=id(image),
            image_ref=weakref.ref(image),
            image_version=entry.data_version,
            volume=data,
            spacing=tuple(float(s) for s in image.scale[-3:]),
            positive=positive,
            negative=negative,
            predictor=entry.predictor,
            embed=embed,
            weights=self._weights(),
            device=self._device(),
            same_kind_only=self.same_kind_check.isChecked(),
            grow_edges=self.grow_check.isChecked(),
            fast=self._fast(),
        )
        self._job = job
        self._user_cancelled = False
        relay = self._relay
        worker = create_worker(run_job, job, relay.progress.emit, loader=self.predictor_factory, _start_thread=False)
        worker.returned.connect(self._on_job_done)
        self._worker = worker
        self._set_busy(True, "Embedding volume…" if embed else "Predicting…")
        worker.start()

    def _set_busy(self, busy: bool, message: str | None = None) -> None:
        self.cancel_button.setEnabled(busy)
        if busy:
            self.progress_bar.setRange(0, 0)  # busy indicator until the first report
        else:
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(0)
        if message is not None:
            self.status_label.setText(message)

    def _on_progress(self, stage: str, done: int, total: int) -> None:
        if self._job is None:
            return
        if total > 0:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(min(done, total))
            self.status_label.setText(f"{stage} {done}/{total}…")
        else:
            self.progress_bar.setRange(0, 0)
            self.status_label.setText(f"{stage}…")

    def _on_job_done(self, result: JobResult) -> None:
        job = result.job
        self._job = None
        self._worker = None
        image = self._image_of(job)
        entry = self._predictors.get(job.image_key)
        settings_unchanged = (job.weights, job.device, job.fast) == (self._weights(), self._device(), self._fast())
        if image is not None and entry is not None and entry.layer() is image and settings_unchanged:
            if result.predictor is not None:
                entry.predictor = result.predictor
            if result.embedded:
                entry.embedded_version = job.image_version
            elif job.embed:
                entry.embedded_version = None  # a cancelled or failed embedding
        if result.predictor is not None:
            self._warn_if_untrained(result.predictor, job)
        current = job.seq == self._latest_seq and not job.superseded()
        if current and image is not None and not job.cancelled() and self._is_stale(job, image, entry):
            # The layer's data was replaced during the run: the result belongs to the old data.
            self._pending = True
            self.status_label.setText(f"'{image.name}' changed during the run; running again on its new data…")
        elif current and result.error is not None:
            self._report(result.error, job.device)
        elif current and result.prediction is not None and image is not None:
            self._accept(result.prediction, image)
        if self._pending:
            self._pending = False
            self._start_run(auto=True)
        if self._job is None:
            self._set_busy(False)

    def _image_of(self, job: Job) -> Image | None:
        """The image layer a job ran on, if it is still in the viewer."""
        image = job.image_ref() if job.image_ref is not None else None
        return image if image is not None and image in self.viewer.layers else None

    @staticmethod
    def _is_stale(job: Job, image: Image, entry: _PredictorEntry | None) -> bool:
        """True when ``image`` no longer holds the data ``job`` ran on."""
        replaced = _volume(image) is not job.volume
        return replaced or (entry is not None and entry.data_version != job.image_version)

    def _warn_if_untrained(self, predictor: Any, job: Job) -> None:
        key = (job.weights, job.device)
        if getattr(predictor, "trained", True) or key in self._warned_untrained:
            return
        self._warned_untrained.add(key)
        show_warning(
            "These MIQ-SAM3D weights are untrained: instances and scores are not meaningful. "
            "Train or choose a trained .safetensors file."
        )

    def _report(self, error: BaseException, device: str) -> None:
        self._set_busy(False)
        if isinstance(error, CancelledError):
            self.status_label.setText("Cancelled.")
            if self._user_cancelled:
                show_info("MIQ-SAM3D run cancelled.")
            return
        if _is_out_of_memory(error):
            log.debug("MIQ-SAM3D ran out of memory", exc_info=error)
            message = _out_of_memory_message(device)
        elif isinstance(error, MiqsamError):
            message = str(error)
        else:
            log.debug("MIQ-SAM3D run failed", exc_info=error)
            message = f"MIQ-SAM3D failed unexpectedly ({type(error).__name__}: {error})."
        self.status_label.setText(message)
        show_error(message)

    # ------------------------------------------------------------- output
    def _accept(self, prediction: Any, image: Image) -> None:
        self._prediction = prediction
        self._deleted = set()
        self._show(commit=True, image=image)

    def _thresholded(self) -> tuple[np.ndarray, list[dict]]:
        labels, rows = self._prediction.labels(self.threshold, self.min_volume)
        labels = np.asarray(labels)
        # Label id k is always instance k of the prediction, whatever the threshold.
        dropped = [int(r["id"]) for r in rows if int(r["id"]) in self._deleted]
        if dropped:
            lut = np.arange(int(labels.max()) + 1, dtype=labels.dtype)
            lut[dropped] = 0
            labels = lut[labels]
            rows = [r for r in rows if int(r["id"]) not in self._deleted]
        return labels, list(rows)

    def _show(self, *, commit: bool, image: Image | None = None) -> None:
        """Show the cached prediction at the current threshold (no model call)."""
        if self._prediction is None:
            return
        labels, rows = self._thresholded()
        output = self._ensure_output(labels.shape, image or self.image_layer())
        if commit:
            self._flush_preview(refresh=False)
            replace_labels(output, labels)
            self._set_rows(rows)
            self._push_snapshot(_label_counts(labels))
        else:
            if self._preview_base is None:
                self._preview_base = np.array(output.data, copy=True)
            output.data[...] = labels
            output.refresh()
            self._set_rows(rows)
        n = len(rows)
        volume = f" and volume ≥ {self.min_volume:g} mm³" if self.min_volume > 0 else ""
        kind = self._prediction.kind_summary()
        looked_for = f" Click read as {kind}." if kind else ""
        self.status_label.setText(
            f"{n} instance{'s' if n != 1 else ''} with confidence ≥ {self.threshold:.2f}{volume}.{looked_for}")

    def _flush_preview(self, refresh: bool = True) -> None:
        """Turn a live threshold preview into a normal state before an undoable write."""
        output = self.output_layer
        if self._preview_base is None or output is None:
            self._preview_base = None
            return
        shown = np.array(output.data, copy=True)
        output.data[...] = self._preview_base
        self._preview_base = None
        replace_labels(output, shown)
        if refresh:
            output.refresh()

    def _ensure_output(self, shape: tuple[int, ...], image: Image | None) -> Labels:
        output = self.output_layer
        geometry: dict[str, Any] = {}
        if image is not None:
            geometry = {
                "scale": image.scale,
                "translate": image.translate,
                "rotate": image.rotate,
                "shear": image.shear,
                "affine": image.affine.affine_matrix,
            }
        metadata = {k: image.metadata[k] for k in GEOMETRY_KEYS if image is not None and k in image.metadata}
        if output is None:
            output = Labels(np.zeros(shape, dtype=np.uint16), name=OUTPUT_NAME, metadata=metadata, **geometry)
            self._install_history_hooks(output)
            active = self.viewer.layers.selection.active
            prompts = self.prompts_layer()
            index = self.viewer.layers.index(prompts) if prompts is not None else len(self.viewer.layers)
            self.viewer.layers.insert(index, output)
            self._output = output
            self._refresh_layer_choices()
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
        elif tuple(output.data.shape) != tuple(shape):
            # Another image (another grid): start the layer over; its history cannot span grids.
            output.data = np.zeros(shape, dtype=np.uint16)
            for name, value in geometry.items():
                setattr(output, name, value)
            output.metadata.update(metadata)
            self._snapshots.clear()
            self._preview_base = None
        return output

    def _set_rows(self, rows: list[dict]) -> None:
        self._rows = list(rows)
        output = self.output_layer
        if output is not None:
            output.features = _features(self._rows)
        self.table.set_instances(self._rows)

    # ------------------------------------------------------ undo / redo
    def _install_history_hooks(self, layer: Labels) -> None:
        """After the layer's own undo / redo, bring the table and features back in step."""
        me = weakref.ref(self)
        undo, redo = layer.undo, layer.redo

        def _after(step: Any) -> Any:
            def _run() -> None:
                widget = me()
                if widget is not None:
                    widget._flush_preview()
                step()
                if widget is not None and widget._output is layer:
                    widget._sync_to_data()

            return _run

        layer.undo = _after(undo)
        layer.redo = _after(redo)

    def _push_snapshot(self, counts: dict[int, int]) -> None:
        """Remember what the output layer shows now, keyed by its voxel counts per label."""
        self._snapshots.append(_Snapshot(list(self._rows), self._prediction, frozenset(self._deleted), counts))
        del self._snapshots[:-MAX_SNAPSHOTS]

    def _sync_to_data(self) -> None:
        """Match the table to what the output layer holds now (after an undo or redo)."""
        output = self.output_layer
        if output is None:
            return
        counts = _label_counts(output.data)
        for snapshot in reversed(self._snapshots):
            if snapshot.counts == counts:
                self._prediction = snapshot.prediction
                self._deleted = set(snapshot.deleted)
                self._set_rows(snapshot.rows)
                return
        self._set_rows(self._rows_from_data(output, counts))

    def _rows_from_data(self, output: Labels, counts: dict[int, int]) -> list[dict]:
        """Rows for a state no snapshot describes: scores kept where the instance is unchanged."""
        from scipy import ndimage

        known = {(int(r["id"]), int(r["voxels"])): r for s in self._snapshots for r in s.rows}
        ids = sorted(counts)
        data = np.asarray(output.data)
        centroids = ndimage.center_of_mass(np.ones(data.shape, bool), data, ids) if ids else []
        voxel_mm3 = float(np.prod(np.asarray(output.scale[-3:], dtype=float)))
        rows = []
        for i, centroid in zip(ids, centroids):
            old = known.get((i, counts[i]))
            rows.append(
                {
                    "id": i,
                    "score": float(old["score"]) if old else float("nan"),
                    "voxels": counts[i],
                    "volume_mm3": counts[i] * voxel_mm3,
                    "centroid": tuple(float(c) for c in centroid),
                }
            )
        return rows

    def _on_detail_changed(self, *_: Any) -> None:
        """Another model grid: the embeddings are of the old one; run again when a result is shown."""
        self._forget_predictors()
        if self._prediction is not None:
            self.run()

    def _on_choice_toggled(self, _checked: bool) -> None:
        """*Only the clicked kind* or *Grow small masks to edges* changed: run again for the current
        prompts when a result is shown (the choice changes it)."""
        if self._prediction is not None:
            self.run()

    # ---------------------------------------------------------- threshold
    def _on_threshold_moved(self, value: int) -> None:
        self.threshold_label.setText(f"{value / 100:.2f}")
        self._show(commit=False)

    def _on_threshold_changed(self, value: int) -> None:
        self.threshold_label.setText(f"{value / 100:.2f}")
        self._show(commit=True)
