"""The widget's side of the viewer's layer list: the Image / Prompts / Labels pickers kept in step
with the layers, the layer events the widget listens to, and one prompt layer per image.

The prompt layer is made (on the image's grid, selected, in add mode) as soon as an image is
selected, when the widget docks and again when the selected image changes, so that the first click
on the canvas is a prompt.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points
from napari.utils.events import Event
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox

from ._prompts import PROMPTS_NAME, make_prompt_layer, set_next_kind
from ._session import unsupported_volume


def unsupported(image: Image) -> str | None:
    """Why ``image`` cannot be segmented (with what to do), or None."""
    return unsupported_volume(image.name, image.data.shape, image.rgb)


NONE = "none"  # item data of the "no layer" entry of a picker
NEW_TARGET = "a new Labels layer"  # the commit picker's "no layer" entry: Commit makes one


def fill(combo: QComboBox, names: list[str], preferred: str, allow_none: bool = False, none_text: str = "") -> None:
    """Offer ``names`` in ``combo``, keeping its choice if it is still there (no signals); with
    ``allow_none`` a first entry ``none_text`` stands for no layer."""
    current = combo.currentText() if combo.currentData() != NONE else None
    combo.blockSignals(True)
    try:
        combo.clear()
        if allow_none:
            combo.addItem(none_text, NONE)
        combo.addItems(names)
        choice = current if current in names else preferred
        if choice in names:
            combo.setCurrentText(choice)
        elif names and not allow_none:
            combo.setCurrentText(names[-1])
        else:
            combo.setCurrentIndex(0)
    finally:
        combo.blockSignals(False)


class ViewerLayers:
    """Keeps the pickers in step with ``viewer.layers`` and calls the widget back on layer events.

    ``is_output(layer)``: the widget's own output layer (never offered as a commit target).
    ``negative()``: whether new prompt points are negative. ``on_points(event)``: the chosen prompt
    layer's data changed. ``on_image_data(image)``: an image's data was replaced. ``on_removed``:
    a layer left the viewer.
    """

    def __init__(self, viewer: Any, image_combo: QComboBox, prompts_combo: QComboBox, target_combo: QComboBox,
                 *, is_output: Callable[[Any], bool], negative: Callable[[], bool],
                 on_points: Callable[[Event], None], on_image_data: Callable[[Any], None],
                 on_removed: Callable[[Any], None]) -> None:
        self.viewer = viewer
        self.image_combo, self.prompts_combo, self.target_combo = image_combo, prompts_combo, target_combo
        self._is_output, self._negative = is_output, negative
        self._on_points, self._on_image_data, self._on_removed = on_points, on_image_data, on_removed
        self._prompt_layers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Image -> Points
        self._prompted: Callable[[], Image | None] = lambda: None  # the image the prompts were made for
        self._queued = False
        self.closed = False

    # ------------------------------------------------------------ the chosen layers
    def named(self, name: str, kind: type) -> Any | None:
        if not name or name not in self.viewer.layers:
            return None
        layer = self.viewer.layers[name]
        return layer if isinstance(layer, kind) else None

    def image(self) -> Image | None:
        return self.named(self.image_combo.currentText(), Image)

    def prompts(self) -> Points | None:
        return self.named(self.prompts_combo.currentText(), Points)

    def target(self) -> Labels | None:
        """The chosen commit target; None for the "new layer" entry."""
        if self.target_combo.currentData() == NONE:
            return None
        return self.named(self.target_combo.currentText(), Labels)

    # ------------------------------------------------------------ events
    def connect(self) -> None:
        events = self.viewer.layers.events
        events.inserted.connect(self._inserted)
        events.removed.connect(self._removed)
        events.moved.connect(self.refresh)
        for layer in self.viewer.layers:
            self._watch(layer)
        self.refresh()

    def disconnect(self) -> None:
        self.closed = True
        events = self.viewer.layers.events
        events.inserted.disconnect(self._inserted)
        events.removed.disconnect(self._removed)
        events.moved.disconnect(self.refresh)
        for layer in self.viewer.layers:
            self._unwatch(layer)

    def _watch(self, layer: Any) -> None:
        layer.events.name.connect(self.refresh)
        if isinstance(layer, Image):
            layer.events.data.connect(self._image_data)

    def _unwatch(self, layer: Any) -> None:
        layer.events.name.disconnect(self.refresh)
        if isinstance(layer, Points):
            layer.events.data.disconnect(self._on_points)
        if isinstance(layer, Image):
            layer.events.data.disconnect(self._image_data)

    def _image_data(self, event: Event) -> None:
        self._on_image_data(event.source)

    def _inserted(self, event: Event) -> None:
        self._watch(event.value)
        self.refresh()

    def _removed(self, event: Event) -> None:
        self._unwatch(event.value)
        self._on_removed(event.value)
        self.refresh()

    def refresh(self, event: Event | None = None) -> None:
        """Offer the viewer's layers in the pickers; an image newly selected gets its prompt layer."""
        layers = list(self.viewer.layers)
        images = [ly.name for ly in layers if isinstance(ly, Image)]
        points = [ly.name for ly in layers if isinstance(ly, Points)]
        labels = [ly.name for ly in layers if isinstance(ly, Labels) and not self._is_output(ly)]
        preferred_image = next(
            (ly.name for ly in reversed(layers) if isinstance(ly, Image) and ly.ndim == 3 and not ly.rgb),
            images[-1] if images else "",
        )
        fill(self.image_combo, images, preferred_image)
        fill(self.prompts_combo, points, PROMPTS_NAME if PROMPTS_NAME in points else "", allow_none=True)
        fill(self.target_combo, labels, "", allow_none=True, none_text=NEW_TARGET)
        self.prompts_chosen()
        if self.image() is not self._prompted() and not self._queued:
            # once napari has finished the layer event that is being handled
            self._queued = True
            QTimer.singleShot(0, self.ensure_prompts)

    # ------------------------------------------------------------ prompts
    def ensure_prompts(self, *_: Any) -> Points | None:
        """Give the selected image its prompt layer (made on its grid if it has none), selected in
        add mode; None without a 3D image. Idempotent while the image stays the same."""
        self._queued = False
        image = self.image()
        if image is not None and image is self._prompted():
            return self.prompts()
        if self.closed or image is None or unsupported(image) is not None:
            return None
        self._prompted = weakref.ref(image)
        points = self._prompt_layers.get(image)
        if points is None or points not in self.viewer.layers:
            current = self.prompts()  # a prompt layer the user chose and no other image owns
            owned = any(p is current for p in self._prompt_layers.values())
            points = current if current is not None and not owned else None
        if points is None:
            points = make_prompt_layer(image, self._negative())
            self.viewer.add_layer(points)
        self._prompt_layers[image] = points
        self.prompts_combo.setCurrentText(points.name)
        self.prompts_chosen()
        self.viewer.layers.selection.active = points
        points.mode = "add"
        return points

    def prompts_chosen(self, *_: Any) -> None:
        """Listen to the chosen prompt layer's points only; new points get the chosen kind."""
        points = self.prompts()
        for layer in self.viewer.layers:
            if isinstance(layer, Points):
                layer.events.data.disconnect(self._on_points)
        if points is not None:
            points.events.data.connect(self._on_points)
            set_next_kind(points, self._negative())


def centre_view(viewer: Any, layer: Any, voxel: Any) -> None:
    """Move the current slice and the camera to ``voxel`` ((z, y, x) data coordinates of ``layer``)."""
    world = np.asarray(layer.data_to_world(np.asarray(voxel, dtype=float)), dtype=float)
    ndim = viewer.dims.ndim
    full = np.asarray(viewer.dims.point, dtype=float)
    full[ndim - len(world) :] = world
    viewer.dims.set_point(range(ndim), tuple(full))
    # the camera is viewer.scene.camera since napari 0.9, viewer.camera before
    scene = getattr(viewer, "scene", None)
    camera = scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera
    camera.center = tuple(full[list(viewer.dims.displayed)])


def bind_keys(viewer: Any, widget: Any, keys: dict[str, str]) -> None:
    """Bind each key (e.g. "Shift-R") on ``viewer`` to the ``widget`` method named with it; the
    viewer keeps only a weak reference, and a widget whose Qt side is gone is not called."""
    me = weakref.ref(widget)

    def call(method: str) -> Callable[[Any], None]:
        def _handler(_viewer: Any) -> None:
            target = me()
            if target is None:
                return
            try:
                target.objectName()
            except RuntimeError:  # the Qt side of the widget is gone (dock removed)
                return
            getattr(target, method)()

        return _handler

    for key, method in keys.items():
        viewer.bind_key(key, call(method), overwrite=True)
