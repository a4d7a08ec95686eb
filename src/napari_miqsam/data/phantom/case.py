"""The labelled volume every data source returns, and the phantom's label values (KiTS)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["BACKGROUND", "CLASS_NAMES", "CYST", "Case", "ORGAN", "TUMOUR"]

BACKGROUND, ORGAN, TUMOUR, CYST = 0, 1, 2, 3
CLASS_NAMES = {BACKGROUND: "background", ORGAN: "organ", TUMOUR: "tumour", CYST: "cyst"}


@dataclass
class Case:
    """One labelled volume.

    Attributes:
        image: float32 (z, y, x) intensities (Hounsfield units for CT).
        labels: uint8 (z, y, x) classes: 0 background, 1 organ, 2 tumour, 3 cyst (KiTS).
        spacing: voxel size (z, y, x) in mm.
        affine: 4x4 NIfTI affine in nibabel's axis order, i.e. mapping the voxel index
            (x, y, z) = reversed array index to world mm (what ``nibabel`` writes).
        name: case identifier.
        meta: free-form provenance (phantom parameters, lesion table, source paths, ...).
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    name: str = "case"
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.image.shape)  # type: ignore[return-value]
