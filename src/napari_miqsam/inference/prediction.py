"""Prediction results: per-instance masks and scores in the ORIGINAL voxel grid.

Thresholding is a pure function of a cached ``Prediction`` (no model call): ``labels(threshold)``
paints the instances whose score >= threshold, higher scores winning overlaps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Default confidence threshold, chosen for the shipped weights on 20 validation phantoms (seeds
#: 900000+; ``python benchmarks/tune_threshold.py --cases 20 --clicks 3 --kind-scoring both``).
#: Used by the widget, the CLI and evaluation.
DEFAULT_THRESHOLD = 0.3


@dataclass
class Instance:
    """One predicted instance.

    score: confidence in [0, 1]. bbox: (z, y, x) slices into the original volume.
    mask: bool array of the bbox's shape.
    """

    score: float
    bbox: tuple[slice, slice, slice]
    mask: np.ndarray

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())

    def centroid(self) -> tuple[float, float, float]:
        idx = np.nonzero(self.mask)
        return tuple(float(i.mean() + s.start) for i, s in zip(idx, self.bbox))


@dataclass
class Prediction:
    """All instances found for one prompt, sorted by descending score.

    Label id k (1-based) always denotes ``instances[k - 1]``, whatever the threshold, so ids stay
    stable while a user moves the threshold.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    instances: list[Instance] = field(default_factory=list)
    positive: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    negative: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))

    def __post_init__(self) -> None:
        self.instances.sort(key=lambda inst: -inst.score)

    def __len__(self) -> int:
        return len(self.instances)

    @property
    def scores(self) -> np.ndarray:
        return np.array([inst.score for inst in self.instances], dtype=float)

    def count(self, threshold: float = DEFAULT_THRESHOLD) -> int:
        return int((self.scores >= threshold).sum())

    def labels(self, threshold: float = DEFAULT_THRESHOLD) -> tuple[np.ndarray, list[dict]]:
        """Label volume (uint16, original shape; 0 = background) and one table row per shown instance.

        Rows: ``id``, ``score``, ``voxels``, ``volume_mm3``, ``centroid`` (z, y, x voxel floats).
        Overlapping voxels go to the instance with the higher score.
        """
        out = np.zeros(self.shape, dtype=np.uint16)
        shown = [k for k, inst in enumerate(self.instances) if inst.score >= threshold]
        for k in reversed(shown):  # lowest score first, so higher scores overwrite
            inst = self.instances[k]
            out[inst.bbox][inst.mask] = k + 1
        voxel_mm3 = float(np.prod(self.spacing))
        rows = []
        for k in shown:
            inst = self.instances[k]
            own = (out[inst.bbox] == k + 1)
            n = int(own.sum())
            if n == 0:
                continue
            idx = np.nonzero(own)
            centroid = tuple(float(i.mean() + s.start) for i, s in zip(idx, inst.bbox))
            rows.append({"id": k + 1, "score": float(inst.score), "voxels": n,
                         "volume_mm3": n * voxel_mm3, "centroid": centroid})
        return out, rows
