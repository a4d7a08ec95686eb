"""Phantoms on disk, in the KiTS21 layout that ``miqsam evaluate`` and the dataset readers read."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import InputError
from .generator import make_phantom

__all__ = ["write_phantoms"]


def write_phantoms(
    out: Path | str,
    cases: int,
    seed: int,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``cases`` phantoms in the KiTS21 layout; case ``i`` uses seed ``seed + i``.

    Files: ``out/case_XXXXX/imaging.nii.gz`` (int16 HU) and ``segmentation.nii.gz`` (uint8),
    spacing and affine in the headers. Returns the case folders.
    """
    from tqdm import tqdm

    from ..io import write_image, write_labels

    out = Path(out)
    if cases < 0:
        raise InputError(f"cases must be >= 0, got {cases}")
    out.mkdir(parents=True, exist_ok=True)
    folders: list[Path] = []
    for i in tqdm(range(int(cases)), desc="phantoms", unit="case", disable=not progress):
        case = make_phantom(seed + i, shape=shape, spacing=spacing)
        folder = out / f"case_{i:05d}"
        folder.mkdir(exist_ok=True)
        hu = np.round(case.image).astype(np.int16)
        write_image(folder / "imaging.nii.gz", hu, spacing=case.spacing, affine=case.affine,
                    overwrite=overwrite)
        write_labels(folder / "segmentation.nii.gz", case.labels, spacing=case.spacing,
                     affine=case.affine, overwrite=overwrite)
        folders.append(folder)
    return folders
