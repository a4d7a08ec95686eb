"""Volume preparation: input checks, intensity normalisation, and the original <-> model grid map.

Conventions: arrays are (z, y, x); spacing is (z, y, x) in mm; voxel k covers [k, k+1) and its
centre is at k + 0.5 in edge units, so both grids span the same physical box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


def as_volume(volume: np.ndarray, channel: int | None = None) -> np.ndarray:
    """Return a 3D view of ``volume`` or raise InputError with what to do.

    Singleton axes are dropped; a 4D array needs ``channel`` (index of the channel to use on the
    smallest axis, e.g. RGB or multichannel microscopy).
    """
    arr = np.asarray(volume)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"the image has dtype {arr.dtype}; a numeric (integer or float) volume is needed")
    if arr.ndim == 4:
        axis = int(np.argmin(arr.shape))
        if arr.shape[axis] == 1:
            arr = np.take(arr, 0, axis=axis)
        elif channel is None:
            raise InputError(
                f"the image is 4D {arr.shape}: a multichannel volume; choose one channel (channel=0..{arr.shape[axis] - 1})"
            )
        else:
            if not 0 <= channel < arr.shape[axis]:
                raise InputError(f"channel {channel} does not exist; the image has {arr.shape[axis]} channels")
            arr = np.take(arr, channel, axis=axis)
    if arr.ndim != 3:
        raise InputError(f"MIQ-SAM3D segments 3D volumes; this image is {arr.ndim}D with shape {arr.shape}")
    if min(arr.shape) < 2:
        raise InputError(f"the volume {arr.shape} has a side of one voxel; it is a 2D image, not a volume")
    return arr


def check_spacing(spacing) -> tuple[float, float, float]:
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise InputError(f"spacing must be three numbers (z, y, x) in mm, got {spacing!r}") from None
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise InputError(f"spacing must be three positive numbers (z, y, x) in mm, got {spacing!r}")
    return sp  # type: ignore[return-value]


def looks_like_ct(volume: np.ndarray) -> bool:
    """Hounsfield units: air near -1000 and soft tissue/bone above 0 (checked on a subsample)."""
    sample = volume[:: max(1, volume.shape[0] // 32), :: max(1, volume.shape[1] // 64), :: max(1, volume.shape[2] // 64)]
    sample = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample.ravel()
    if sample.size == 0:
        return False
    lo, hi = np.percentile(sample, [1, 99.5])
    return bool(lo < -500 and hi > 0 and sample.min() >= -3100 and hi < 4000)


def normalise_intensity(volume: np.ndarray, level: float = 40.0, half_width: float = 200.0, modality: str = "auto") -> np.ndarray:
    """Map intensities to about [-1, 1] as float32 (a new array; the input is not modified).

    CT (detected from the value range, or ``modality='ct'``): the window level +- half_width HU.
    Otherwise (microscopy, MR): the 0.5 and 99.5 percentiles. NaN/Inf become the lowest finite
    value; a constant volume becomes all zeros.
    """
    return normalise_and_read(volume, level, half_width, modality)[0]


def normalise_and_read(volume: np.ndarray, level: float = 40.0, half_width: float = 200.0,
                       modality: str = "auto") -> tuple[np.ndarray, str]:
    """:func:`normalise_intensity` and how the volume was read: ``'ct'`` (the HU window) or
    ``'other'`` (percentiles), which is what ``modality='auto'`` decided."""
    vol = np.asarray(volume)
    out = vol.astype(np.float32, copy=True)
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        finite = np.isfinite(out)
        fill = float(out[finite].min()) if finite.any() else 0.0
        out[~finite] = fill
    if modality not in ("auto", "ct", "other"):
        raise InputError(f"modality must be 'auto', 'ct' or 'other', got {modality!r}")
    ct = modality == "ct" or (modality == "auto" and looks_like_ct(out))
    if ct:
        lo, hi = level - half_width, level + half_width
    else:
        sample = out[:: max(1, out.shape[0] // 32), :: max(1, out.shape[1] // 64), :: max(1, out.shape[2] // 64)]
        lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    read_as = "ct" if ct else "other"
    if hi - lo <= 1e-12:
        out[...] = 0.0
        return out, read_as
    out -= (lo + hi) / 2
    out *= 2.0 / (hi - lo)
    np.clip(out, -1.0, 1.0, out=out)
    return out, read_as


def extra_channels(volume: np.ndarray, windows, read_as: str, first: np.ndarray):
    """The model's input channels after the first (``MIQSAMConfig.ct_extra_windows``), one at a time
    (a generator, so a large volume holds one more float32 copy at most): each (level, half_width)
    window's normalisation when the volume was read as CT (``read_as == 'ct'``), else ``first`` (the
    normalised volume) again: percentiles have no second window to show."""
    for level, half_width in windows:
        yield normalise_intensity(volume, level, half_width, modality="ct") if read_as == "ct" else first


@dataclass(frozen=True)
class GridMap:
    """Maps between the original voxel grid and the model grid (resampled to the model spacing)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    model_shape: tuple[int, int, int]

    @classmethod
    def build(cls, shape, spacing, model_spacing) -> "GridMap":
        model_shape = tuple(max(2, int(round(n * s / m))) for n, s, m in zip(shape, spacing, model_spacing))
        return cls(tuple(int(n) for n in shape), tuple(float(s) for s in spacing), model_shape)

    @property
    def scale(self) -> np.ndarray:
        """Original voxels per model voxel, per axis."""
        return np.asarray(self.shape, float) / np.asarray(self.model_shape, float)

    @property
    def model_spacing(self) -> tuple[float, float, float]:
        return tuple(float(s * f) for s, f in zip(self.spacing, self.scale))

    def to_model(self, points) -> np.ndarray:
        """(P, 3) original voxel coordinates (z, y, x) -> continuous model voxel coordinates."""
        pts = np.asarray(points, float).reshape(-1, 3)
        return (pts + 0.5) / self.scale - 0.5

    def to_original(self, points) -> np.ndarray:
        """(P, 3) continuous model voxel coordinates -> original voxel coordinates."""
        pts = np.asarray(points, float).reshape(-1, 3)
        return (pts + 0.5) * self.scale - 0.5

    def cell_coords(self, axis: int, start: int, stop: int, stride: int) -> np.ndarray:
        """Continuous index, in a stride-``stride`` model map, of original voxels start..stop-1 on ``axis``."""
        k = np.arange(start, stop, dtype=float)
        return (k + 0.5) / (self.scale[axis] * stride) - 0.5

    def cells_to_original(self, axis: int, lo: int, hi: int, stride: int) -> tuple[int, int]:
        """Original voxel range [a, b) covered by model cells [lo, hi) of a stride-``stride`` map."""
        f = self.scale[axis] * stride
        return max(0, int(np.floor(lo * f))), min(self.shape[axis], int(np.ceil(hi * f)))
