"""The widget's output layer ("MIQ-SAM3D instances"): writes, the threshold preview, and undo.

Every write is one undo step of the layer (:mod:`._history`). While the confidence slider is
dragged, :meth:`OutputLayer.preview` paints without history; the next undoable write (or an undo)
first turns the preview into one normal step, so the layer's history never holds half a drag.
After the layer's own undo / redo (Ctrl+Z with it selected) the ``on_history`` callback runs, so
the widget can bring its table back in step with the voxels.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from napari.layers import Image, Labels

from ._grid import placement
from ._history import merge_labels, replace_labels
from ._session import label_counts

OUTPUT_NAME = "MIQ-SAM3D instances"
# Metadata keys of an image layer (set by our reader) that describe its file geometry; copied to
# the output layer so that saving the instances as NIfTI reuses the source affine and header.
GEOMETRY_KEYS = ("affine", "header", "axes", "spacing", "format", "source_path")


def features(rows: list[dict]) -> dict[str, np.ndarray]:
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


class OutputLayer:
    """Owns the output Labels layer of one widget (made on the first result, again if deleted)."""

    def __init__(self, viewer: Any, on_history: Callable[[], None]) -> None:
        self.viewer = viewer
        self._on_history = on_history
        self._layer: Labels | None = None
        self._preview_base: np.ndarray | None = None

    @property
    def layer(self) -> Labels | None:
        """The layer, if it is still in the viewer."""
        if self._layer is not None and self._layer not in self.viewer.layers:
            self._layer = None
        return self._layer

    def owns(self, layer: Any) -> bool:
        """True for the widget's own output layer (even while it is being inserted)."""
        return layer is not None and layer is self._layer

    def forget(self) -> None:
        """The layer was removed from the viewer."""
        self._layer = None
        self._preview_base = None

    def voxel_mm3(self) -> float:
        layer = self.layer
        return float(np.prod(np.asarray(layer.scale[-3:], dtype=float))) if layer is not None else 1.0

    def ensure(self, shape: tuple[int, ...], image: Image | None, before: Any | None = None) -> tuple[Labels, bool]:
        """The layer, made on ``image``'s grid (inserted below ``before``) if there is none;
        True with it when its history was started over (a new layer, or another grid)."""
        output = self.layer
        geometry = placement(image) if image is not None else {}
        metadata = {k: image.metadata[k] for k in GEOMETRY_KEYS if image is not None and k in image.metadata}
        if output is None:
            output = Labels(np.zeros(shape, dtype=np.uint16), name=OUTPUT_NAME, metadata=metadata, **geometry)
            self._install_history_hooks(output)
            index = self.viewer.layers.index(before) if before in self.viewer.layers else len(self.viewer.layers)
            self._layer = output  # before inserting, so the widget's insert handler knows it as ours
            self._preview_base = None
            self._insert(index, output)
            return output, True
        if tuple(output.data.shape) != tuple(shape):
            # Another image (another grid): start the layer over; its history cannot span grids.
            output.data = np.zeros(shape, dtype=np.uint16)
            for name, value in geometry.items():
                setattr(output, name, value)
            output.metadata.update(metadata)
            self._preview_base = None
            return output, True
        return output, False

    def write(self, labels: np.ndarray) -> None:
        """Show ``labels`` as one undo step."""
        self.flush_preview(refresh=False)
        replace_labels(self._layer, labels)

    def preview(self, labels: np.ndarray) -> None:
        """Show ``labels`` without an undo step (a threshold being dragged)."""
        output = self._layer
        if self._preview_base is None:
            self._preview_base = np.array(output.data, copy=True)
        output.data[...] = labels
        output.refresh()

    def flush_preview(self, refresh: bool = True) -> None:
        """Turn a live threshold preview into a normal state before an undoable write."""
        output = self.layer
        if self._preview_base is None or output is None:
            self._preview_base = None
            return
        shown = np.array(output.data, copy=True)
        output.data[...] = self._preview_base
        self._preview_base = None
        replace_labels(output, shown)
        if refresh:
            output.refresh()

    def erase(self, instance_id: int) -> None:
        """Remove one instance's voxels as one undo step."""
        self.flush_preview()
        output = self._layer
        where = np.nonzero(np.asarray(output.data) == instance_id)
        if where[0].size:
            output.data_setitem(where, 0)

    def set_rows(self, rows: list[dict]) -> None:
        if self.layer is not None:
            self._layer.features = features(rows)

    def new_target(self, name: str) -> Labels:
        """A new empty Labels layer on the output's grid and geometry (NIfTI metadata included),
        added to the viewer above the output, for a commit with no target chosen."""
        out = self._layer
        layer = Labels(np.zeros(out.data.shape, dtype=np.uint16), name=name, metadata=dict(out.metadata),
                       **placement(out))
        self._insert(self.viewer.layers.index(out) + 1, layer)
        return layer

    def _insert(self, index: int, layer: Labels) -> None:
        """Insert ``layer`` at ``index`` without taking the selection from the active layer."""
        active = self.viewer.layers.selection.active
        self.viewer.layers.insert(index, layer)
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active

    def commit_into(self, target: Labels, value: int | None) -> tuple[int, int]:
        """Copy the shown instances into ``target`` where it is still 0, one undo step of
        ``target`` (``value``: None, a new label per instance; an int, that label everywhere).
        Returns (instances, voxels written); a ValueError says why it cannot."""
        self.flush_preview()
        data = np.asarray(self._layer.data)
        written = merge_labels(target, data, value)
        return len(label_counts(data)), written

    def _install_history_hooks(self, layer: Labels) -> None:
        """After the layer's own undo / redo, call ``on_history`` (the preview flushed first)."""
        me = weakref.ref(self)
        undo, redo = layer.undo, layer.redo

        def _after(step: Callable[[], Any]) -> Callable[[], None]:
            def _run() -> None:
                owner = me()
                if owner is not None:
                    owner.flush_preview()
                step()
                if owner is not None and owner._layer is layer:
                    owner._on_history()

            return _run

        layer.undo = _after(undo)
        layer.redo = _after(redo)
