"""Fourier position features for 3D coordinates (size-agnostic, so any window shape works)."""

from __future__ import annotations

import math

import torch


def fourier_features(coords: torch.Tensor, bands: int) -> torch.Tensor:
    """Encode normalised coordinates.

    Args:
        coords: (..., 3) positions (z, y, x) scaled to about [-1, 1].
        bands: number of frequencies per axis.
    Returns:
        (..., 3 * 2 * bands) sin/cos features.
    """
    freqs = (2.0 ** torch.arange(bands, device=coords.device, dtype=coords.dtype)) * math.pi
    ang = coords[..., None] * freqs  # (..., 3, bands)
    return torch.cat([ang.sin(), ang.cos()], dim=-1).flatten(-2)


def grid_coords(shape: tuple[int, int, int], stride: int, half_extent: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Centres of a (d, h, w) token grid (cells of ``stride`` voxels) as (d*h*w, 3) coordinates.

    Coordinates are relative to the centre of the input and divided by ``half_extent`` voxels (a
    fixed length, not the input size), so a token's encoding means the same distance whether the
    model sees a 64^3 training patch or a 128^3 inference window.
    """
    axes = [((torch.arange(n, device=device, dtype=dtype) + 0.5) * stride - n * stride / 2) / half_extent for n in shape]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([zz, yy, xx], dim=-1).reshape(-1, 3)


def centred_points(points: torch.Tensor, shape: tuple[int, int, int], half_extent: float) -> torch.Tensor:
    """Voxel positions (..., 3) (z, y, x) of an input of ``shape`` -> the coordinates of ``grid_coords``."""
    size = torch.tensor(shape, device=points.device, dtype=points.dtype)
    return (points + 0.5 - size / 2) / half_extent


def grid_sample_coords(points: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Voxel positions (..., 3) (z, y, x) -> grid_sample's [-1, 1] (align_corners=False), still (z, y, x)."""
    size = torch.tensor(shape, device=points.device, dtype=points.dtype)
    return (points + 0.5) / size * 2 - 1
