"""napari sample data: a small multi-lesion CT phantom, generated on the fly (no download)."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Phantom parameters of the sample: (z, y, x) voxels and mm; a fixed seed with several tumours.
SAMPLE_SEED = 5
SAMPLE_SHAPE = (48, 96, 96)
SAMPLE_SPACING = (2.0, 1.0, 1.0)
#: Soft-tissue CT window (HU) for display.
CT_WINDOW = (-160.0, 240.0)


def make_phantom_sample() -> list[tuple[Any, dict, str]]:
    """The "Multi-lesion CT phantom": a CT image (HU) and its ground-truth classes.

    Ground truth follows KiTS: 0 background, 1 organ, 2 tumour, 3 cyst; hovering it shows the
    class name. Both layers have ``scale`` = spacing (z, y, x) mm and the NIfTI affine in their
    metadata, so the instances found on the image save with the phantom's geometry.
    """
    return phantom_layer_data(SAMPLE_SEED, SAMPLE_SHAPE, SAMPLE_SPACING)


def phantom_layer_data(
    seed: int, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> list[tuple[Any, dict, str]]:
    """napari layer data (image, ground truth) of one phantom; see :func:`make_phantom_sample`."""
    from napari_miqsam.data.phantom import CLASS_NAMES, make_phantom

    case = make_phantom(seed, shape=shape, spacing=spacing, name="phantom")
    metadata = {
        "affine": np.asarray(case.affine, dtype=float),  # NIfTI affine, nibabel axis order
        "axes": (2, 1, 0),
        "spacing": tuple(case.spacing),
        "format": "nifti",
    }
    classes = sorted(CLASS_NAMES)
    image = (
        case.image,
        {
            "name": "phantom CT",
            "scale": case.spacing,
            "colormap": "gray",
            "contrast_limits": CT_WINDOW,
            "metadata": dict(metadata),
        },
        "image",
    )
    truth = (
        case.labels,
        {
            "name": "phantom ground truth",
            "scale": case.spacing,
            "opacity": 0.35,
            "features": {"index": np.array(classes), "class": np.array([CLASS_NAMES[c] for c in classes])},
            "metadata": dict(metadata),
        },
        "labels",
    )
    return [image, truth]
