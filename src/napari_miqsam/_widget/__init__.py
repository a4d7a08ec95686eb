"""The MIQ-SAM3D dock widget (the napari adapter of :mod:`napari_miqsam.inference`).

:class:`MiqsamWidget` is imported on first use, so that the Qt-free session
(:mod:`._session`) imports neither Qt nor napari.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MiqsamWidget"]


def __getattr__(name: str) -> Any:
    if name == "MiqsamWidget":
        from ._dock import MiqsamWidget

        return MiqsamWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
