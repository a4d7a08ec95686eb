"""Sliding windows over the model grid, sized to the volume: placement with bounded overlap and
disjoint ownership regions."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """One window: ``start``/``stop`` in model voxels per axis (stop - start <= the largest window) and the
    ``own_start``/``own_stop`` region this window is responsible for (windows' regions tile the volume)."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    own_start: tuple[int, int, int]
    own_stop: tuple[int, int, int]

    def contains_owned(self, point) -> bool:
        return all(a <= p < b for p, a, b in zip(point, self.own_start, self.own_stop))


def axis_windows(n: int, max_size: int, overlap: int, align: int = 16,
                 step: int = 2) -> list[tuple[int, int, int, int]]:
    """(start, stop, own_start, own_stop) along one axis of ``n`` voxels.

    The fewest windows of at most ``max_size`` voxels that overlap by at least ``overlap`` cover the
    axis, all of one size: the smallest multiple of ``align`` (the model's input multiple, so the
    encoder pads nothing) that lets them overlap by ``overlap``, about ``(n + (k - 1) * overlap) / k``.
    Windows are spread evenly with starts on multiples of ``step`` (the mask features' stride);
    each owns the axis up to the middle of its overlaps with its neighbours. An axis of at most
    ``max_size`` voxels is one window (the Predictor pads it to the input multiple). So the windows'
    total length is the axis plus the overlaps plus less than ``align`` per window, whatever ``n``.
    ``max_size`` is rounded down to a multiple of ``align``."""
    max_size = max_size // align * align
    if n <= max_size:
        return [(0, n, 0, n)]
    if not 0 <= overlap < max_size // 2:
        raise ValueError(f"overlap {overlap} must be below half of the window size {max_size}")
    k = math.ceil((n - overlap) / (max_size - overlap))
    size = min(max_size, -(-math.ceil((n + (k - 1) * overlap) / k) // align) * align)
    starts = [min(n - size, int(round(i * (n - size) / (k - 1) / step)) * step) for i in range(k)]
    starts[-1] = n - size
    stops = [s + size for s in starts]
    cuts = [0] + [((starts[i] + stops[i - 1]) // 2) // step * step for i in range(1, k)] + [n]
    return [(s, e, cuts[i], cuts[i + 1]) for i, (s, e) in enumerate(zip(starts, stops))]


def plan_windows(shape: tuple[int, int, int], max_size: int, overlap: int, align: int = 16) -> list[Window]:
    """All windows covering a model-grid volume of ``shape`` (per axis :func:`axis_windows`), at most
    ``max_size`` voxels a side; windows of one volume may differ in size from axis to axis."""
    per_axis = [axis_windows(n, max_size, overlap, align) for n in shape]
    out = []
    for wz in per_axis[0]:
        for wy in per_axis[1]:
            for wx in per_axis[2]:
                ws = (wz, wy, wx)
                out.append(Window(tuple(w[0] for w in ws), tuple(w[1] for w in ws),
                                  tuple(w[2] for w in ws), tuple(w[3] for w in ws)))
    return out
