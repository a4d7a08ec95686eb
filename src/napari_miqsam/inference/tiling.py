"""Sliding windows over the model grid: placement with overlap and disjoint ownership regions."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """One window: ``start``/``stop`` in model voxels per axis (stop - start <= window size) and the
    ``own_start``/``own_stop`` region this window is responsible for (windows' regions tile the volume)."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    own_start: tuple[int, int, int]
    own_stop: tuple[int, int, int]

    def contains_owned(self, point) -> bool:
        return all(a <= p < b for p, a, b in zip(point, self.own_start, self.own_stop))


def axis_windows(n: int, size: int, overlap: int, align: int = 2) -> list[tuple[int, int, int, int]]:
    """(start, stop, own_start, own_stop) along one axis of ``n`` voxels; starts are multiples of ``align``."""
    if n <= size:
        return [(0, n, 0, n)]
    step = size - overlap
    k = math.ceil((n - overlap) / step)
    starts = [min(n - size, int(round(i * (n - size) / (k - 1) / align)) * align) for i in range(k)]
    starts[-1] = n - size
    starts = sorted(set(starts))
    stops = [s + size for s in starts]
    cuts = [0] + [((starts[i] + stops[i - 1]) // 2) // align * align for i in range(1, len(starts))] + [n]
    return [(s, e, cuts[i], cuts[i + 1]) for i, (s, e) in enumerate(zip(starts, stops))]


def plan_windows(shape: tuple[int, int, int], size: int, overlap: int) -> list[Window]:
    """All windows covering a model-grid volume of ``shape``."""
    per_axis = [axis_windows(n, size, overlap) for n in shape]
    out = []
    for wz in per_axis[0]:
        for wy in per_axis[1]:
            for wx in per_axis[2]:
                ws = (wz, wy, wx)
                out.append(Window(tuple(w[0] for w in ws), tuple(w[1] for w in ws),
                                  tuple(w[2] for w in ws), tuple(w[3] for w in ws)))
    return out
