"""Where a layer lies in world space, so that a new layer can be made on the same grid."""

from __future__ import annotations

from typing import Any


def placement(layer: Any) -> dict[str, Any]:
    """``layer``'s scale, translation, rotation, shear and affine, as layer keyword arguments."""
    return {"scale": layer.scale, "translate": layer.translate, "rotate": layer.rotate,
            "shear": layer.shear, "affine": layer.affine.affine_matrix}
