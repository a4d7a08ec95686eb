"""napari reader for NIfTI volumes (.nii, .nii.gz), in their own geometry.

A volume opens as an Image layer with ``scale`` = voxel spacing (z, y, x) in mm; a segmentation
(file name with seg / label / mask, or integer data with few distinct values) opens as a Labels
layer. The NIfTI affine, header and axis order go into the layer's ``metadata``, so that our
writer saves labels drawn on it with exactly the source geometry. The file IO itself is
:func:`napari_miqsam.data.io.read_volume`; a bad file raises its ``ReadError``, which napari
shows as a notification.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Names that mark a segmentation file (whole words or parts: "liver_seg", "labelsTr", "mask").
SEGMENTATION_NAME = re.compile(r"seg|label|mask", re.IGNORECASE)
#: Integer data with at most this many distinct values is a segmentation.
MAX_SEGMENTATION_VALUES = 32
#: Display window (HU) used when the data look like CT.
CT_WINDOW = (-160.0, 240.0)

LayerData = tuple[Any, dict, str]


def get_reader(path: str | Sequence[str]) -> Callable[[str | Sequence[str]], list[LayerData]] | None:
    """Our reader when every path is a NIfTI file, else None (napari tries other readers)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(str(p).lower().endswith(NIFTI_SUFFIXES) for p in paths):
        return None
    return read_nifti


def read_nifti(path: str | Sequence[str]) -> list[LayerData]:
    """One layer per file: Image, or Labels for a segmentation."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return [volume_layer_data(p) for p in paths]


def volume_layer_data(path: str | Path) -> LayerData:
    """napari layer data of one NIfTI file (raises ``ReadError`` for a bad file)."""
    from napari_miqsam.data.io import read_volume

    volume = read_volume(path)
    name = _stem(Path(path))
    metadata = {
        "affine": volume.affine,
        "header": volume.header,
        "axes": tuple(volume.axes),
        "spacing": tuple(volume.spacing),
        "format": volume.format,
        "source_path": str(volume.path),
    }
    kwargs: dict[str, Any] = {"name": name, "scale": tuple(volume.spacing), "metadata": metadata}
    data = volume.data
    if is_segmentation(name, data):
        return _as_labels(data), kwargs, "labels"
    if _looks_like_ct(data):
        kwargs["contrast_limits"] = CT_WINDOW
    return data, kwargs, "image"


def is_segmentation(name: str, data: np.ndarray) -> bool:
    """A segmentation: named like one (and integral), or integer data with few distinct values."""
    integral = np.issubdtype(data.dtype, np.integer) or data.dtype == bool
    if not integral and SEGMENTATION_NAME.search(name):
        sample = _sample(data)
        integral = bool(np.all(np.isfinite(sample)) and np.array_equal(sample, np.round(sample)))
    if not integral:
        return False
    if SEGMENTATION_NAME.search(name):
        return True
    if len(np.unique(_sample(data))) > MAX_SEGMENTATION_VALUES:
        return False
    return len(np.unique(data)) <= MAX_SEGMENTATION_VALUES


def _as_labels(data: np.ndarray) -> np.ndarray:
    if np.issubdtype(data.dtype, np.integer):
        return data
    if data.dtype == bool:
        return data.astype(np.uint8)
    top = float(np.max(data)) if data.size else 0.0
    return data.astype(np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.int32)


def _sample(data: np.ndarray, target: int = 1 << 18) -> np.ndarray:
    """A strided subsample of about ``target`` voxels (a cheap first look at big volumes)."""
    step = max(1, int(round((data.size / target) ** (1 / 3)))) if data.size else 1
    return np.asarray(data[::step, ::step, ::step])


def _looks_like_ct(data: np.ndarray) -> bool:
    sample = _sample(data)
    if sample.size == 0 or not np.issubdtype(sample.dtype, np.number):
        return False
    return float(np.min(sample)) <= -500.0 and float(np.max(sample)) >= 100.0


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
