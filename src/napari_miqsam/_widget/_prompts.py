"""The prompt Points layer: made on an image's grid, read back as (z, y, x) voxels of that image.

Each point carries a ``prompt`` feature, "positive" (green, on the lesion) or "negative" (red, not
the lesion); the widget sets ``feature_defaults`` so that the next click gets the chosen kind.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Points

from napari_miqsam.errors import MiqsamError

from ._grid import placement

PROMPTS_NAME = "MIQ-SAM3D prompts"
POSITIVE, NEGATIVE = "positive", "negative"
PROMPT_COLORS = {POSITIVE: "lime", NEGATIVE: "red"}


def make_prompt_layer(image: Image, negative: bool = False) -> Points:
    """An empty prompt layer on ``image``'s grid; new points are negative when ``negative``."""
    extent = np.asarray(image.extent.world[1] - image.extent.world[0], dtype=float)
    size = float(max(2.0, 0.025 * float(np.max(extent[-2:]))))
    return Points(
        np.empty((0, 3)),
        ndim=3,
        name=PROMPTS_NAME,
        **placement(image),
        features={"prompt": np.array([], dtype=object)},
        feature_defaults={"prompt": NEGATIVE if negative else POSITIVE},
        face_color="prompt",
        face_color_cycle=PROMPT_COLORS,
        border_color="white",
        border_width=0.15,
        size=size,
    )


def set_next_kind(points: Points, negative: bool) -> None:
    """The next point added to ``points`` is negative (True) or positive (False)."""
    if "prompt" in points.features:
        points.feature_defaults = {"prompt": NEGATIVE if negative else POSITIVE}


def prompt_voxels(points: Points | None, image: Image) -> tuple[list, list]:
    """Positive and negative points of ``points`` as (z, y, x) voxel coordinates of ``image``."""
    if points is None or len(points.data) == 0:
        return [], []
    if points.ndim != image.ndim:
        raise MiqsamError(
            f"The prompt layer '{points.name}' has {points.ndim} dimensions but the image has "
            f"{image.ndim}; delete it and click 'Add points' to make a matching one."
        )
    kinds = (
        np.asarray(points.features["prompt"], dtype=object)
        if "prompt" in points.features
        else np.full(len(points.data), POSITIVE, dtype=object)
    )
    positive, negative = [], []
    for coord, kind in zip(np.asarray(points.data, dtype=float), kinds):
        world = points.data_to_world(coord)
        voxel = tuple(float(v) for v in np.asarray(image.world_to_data(world))[-3:])
        (negative if kind == NEGATIVE else positive).append(voxel)
    return positive, negative
