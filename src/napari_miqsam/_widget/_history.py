"""Edits of napari Labels layers that the user can undo in one step.

napari's Labels layer keeps an undo history; ``Labels.data_setitem(indices, values)`` writes
voxels *and* records them as one history item, so ``layer.undo()`` (Ctrl+Z with the layer
selected) restores them. Every write the widget makes goes through the helpers below, so a whole
new result, a deleted instance or a commit into another layer is exactly one undo step.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Labels


def replace_labels(layer: Labels, new: np.ndarray) -> int:
    """Make ``layer.data`` equal to ``new`` as one undoable step; returns the voxels changed.

    Only the voxels that differ are recorded, so the history stays small for sparse lesions.
    """
    old = np.asarray(layer.data)
    if old.shape != new.shape:
        raise ValueError(f"label volume shape {new.shape} does not match the layer's {old.shape}")
    changed = np.nonzero(old != new)
    if changed[0].size == 0:
        return 0
    layer.data_setitem(changed, new[changed].astype(old.dtype, copy=False))
    return int(changed[0].size)


def merge_labels(target: Labels, source: np.ndarray, values: np.ndarray | int | None = None) -> int:
    """Write the non-zero voxels of ``source`` into ``target`` where ``target`` is still 0.

    Existing non-zero voxels of ``target`` are never overwritten. ``values`` chooses what is
    written: None keeps the source ids shifted above ``target``'s largest id (each instance a new
    label), an int writes that one value everywhere. One undoable step; returns voxels written.
    """
    data = np.asarray(target.data)
    if data.shape != source.shape:
        raise ValueError(
            f"the target layer '{target.name}' has shape {data.shape}, the instances have {source.shape}"
        )
    where = np.nonzero((source != 0) & (data == 0))
    if where[0].size == 0:
        return 0
    if values is None:
        offset = int(data.max()) if data.size else 0
        ids, rank = np.unique(source[where], return_inverse=True)
        if offset + len(ids) > np.iinfo(data.dtype).max:
            raise ValueError(
                f"{len(ids)} new labels above {offset} do not fit its {data.dtype} data; "
                "commit fewer instances (raise the threshold) or write one label value"
            )
        written = (offset + 1 + rank.ravel()).astype(data.dtype)
    else:
        written = np.full(where[0].size, int(values), dtype=data.dtype)
    target.data_setitem(where, written)
    return int(where[0].size)
