"""The scanner: the slice and pixel spacing, then drift, noise and partial-volume blur."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .geometry import _Grid

__all__ = ["Acquisition", "acquire", "sample_spacing"]


def sample_spacing(rng: np.random.Generator) -> tuple[float, float, float]:
    """Draw a clinical CT spacing (z, y, x) in mm.

    Slice spacing: log-normal around 1.8 mm clipped to [0.8, 5.0] (mostly 1-3 mm, sometimes thick
    5 mm slices); in-plane: uniform in [0.6, 1.0] mm, isotropic in-plane.
    """
    if rng.random() < 0.1:
        z = float(rng.uniform(4.0, 5.0))
    else:
        z = float(np.clip(np.exp(rng.normal(math.log(1.8), 0.42)), 0.8, 5.0))
    xy = float(rng.uniform(0.6, 1.0))
    return (round(z, 4), round(xy, 4), round(xy, 4))


def _gauss_noise_gain(sigma: float, truncate: float = 4.0) -> float:
    """Factor by which a discrete 1D Gaussian filter scales the std of white noise."""
    if sigma <= 0:
        return 1.0
    r = int(truncate * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=float)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    w /= w.sum()
    return float(np.sqrt((w * w).sum()))


@dataclass(frozen=True)
class Acquisition:
    """What :func:`acquire` drew: the noise std after blur (HU) and the blur sigma (voxels, z y x)."""

    noise_sigma: float
    blur_sigma_vox: tuple[float, float, float]


def acquire(
    img: np.ndarray,
    grid: _Grid,
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    wide: bool = False,
) -> Acquisition:
    """Add a smooth intensity drift and noise to ``img`` (HU, in place), then blur and clip it.

    The noise is scaled by the blur's gain so that its std *after* the partial-volume blur is the
    drawn ``noise_sigma`` (8-25 HU); the blur is 0.42 voxel along z and 0.35-0.6 mm in-plane.
    ``wide`` (training only): noise 5-40 HU, correlated in-plane over 0-1.2 mm (a reconstruction
    kernel's grain) before the blur, which is 0.3-0.8 mm in-plane.
    """
    z_ax, y_ax, x_ax = grid.axes
    zn = z_ax / 60.0
    yn = y_ax / 90.0
    xn = x_ax / 90.0
    drift_zy = (rng.uniform(-6, 6) * zn[:, None] + rng.uniform(-6, 6) * yn[None, :]
                + rng.uniform(-8, 2) * (yn[None, :] ** 2)).astype(np.float32)
    drift_x = (rng.uniform(-6, 6) * xn + rng.uniform(-8, 2) * xn ** 2).astype(np.float32)
    sigma_mm_xy = float(rng.uniform(0.3, 0.8) if wide else rng.uniform(0.35, 0.6))
    sig = (0.42, sigma_mm_xy / spacing[1], sigma_mm_xy / spacing[2])
    noise_sigma = float(rng.uniform(5.0, 40.0) if wide else rng.uniform(8.0, 25.0))
    gain = _gauss_noise_gain(sig[0]) * _gauss_noise_gain(sig[1]) * _gauss_noise_gain(sig[2])
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    if wide:
        grain_mm = float(rng.uniform(0.0, 1.2))
        if grain_mm > 0.05:
            for axis in (1, 2):
                g = grain_mm / spacing[axis]
                ndimage.gaussian_filter1d(noise, g, axis=axis, output=noise, mode="wrap")
                # the blur below then takes the grain's std down by less than it takes white noise
                gain *= _gauss_noise_gain(math.hypot(g, sig[axis])) / (_gauss_noise_gain(g) * _gauss_noise_gain(sig[axis]))
            noise /= np.float32(noise.std() + 1e-6)
    noise *= np.float32(noise_sigma / gain)
    img += noise
    del noise
    img += drift_zy[:, :, None]
    img += drift_x[None, None, :]
    for axis in range(3):
        ndimage.gaussian_filter1d(img, sig[axis], axis=axis, output=img, mode="nearest", truncate=4.0)
    np.clip(img, -1024.0, 3071.0, out=img)
    return Acquisition(noise_sigma, tuple(float(s) for s in sig))  # type: ignore[arg-type]
