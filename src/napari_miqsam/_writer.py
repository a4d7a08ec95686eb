"""napari writers for Labels layers: NIfTI (.nii, .nii.gz) and TIFF (.tif, .tiff).

A layer that came from a NIfTI file (our reader, our sample, or the MIQ-SAM3D output of such an
image) carries the source affine, header and axis order in its ``metadata``; the NIfTI writer
reuses them, so the saved labels overlay the source exactly in any viewer. Otherwise the layer's
``scale`` is written as the spacing (z, y, x) mm. Writes are atomic (temporary file + rename) by
:func:`napari_miqsam.data.io.write_labels`; napari asked about overwriting before calling us.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def write_labels_nifti(path: str, data: Any, attributes: dict) -> list[str]:
    """Save one Labels layer as NIfTI in its source geometry; returns the written path."""
    return [_write(path, data, attributes, use_source_geometry=True)]


def write_labels_tiff(path: str, data: Any, attributes: dict) -> list[str]:
    """Save one Labels layer as an ImageJ TIFF with its spacing; returns the written path."""
    return [_write(path, data, attributes, use_source_geometry=False)]


def _write(path: str, data: Any, attributes: dict, *, use_source_geometry: bool) -> str:
    from napari_miqsam.data.io import write_labels

    labels = np.asarray(data)
    spacing = tuple(float(s) for s in np.asarray(attributes.get("scale", (1.0, 1.0, 1.0)))[-3:])
    like = source_volume(attributes.get("metadata") or {}, labels) if use_source_geometry else None
    written = write_labels(path, labels, like=like, spacing=None if like else spacing, overwrite=True)
    return str(written)


def source_volume(metadata: dict, labels: np.ndarray) -> Any | None:
    """The source geometry kept in a layer's metadata as a ``Volume`` (None if there is none)."""
    from napari_miqsam.data.io import Volume

    if metadata.get("affine") is None or "spacing" not in metadata:
        return None
    return Volume(
        data=labels,
        spacing=tuple(float(s) for s in metadata["spacing"]),
        affine=np.asarray(metadata["affine"], dtype=float),
        header=metadata.get("header"),
        format=str(metadata.get("format", "nifti")),
        axes=tuple(int(a) for a in metadata.get("axes", (2, 1, 0))),
    )
