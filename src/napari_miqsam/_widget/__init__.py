"""The MIQ-SAM3D dock widget (the napari adapter of :mod:`napari_miqsam.inference`)."""

from ._dock import MiqsamWidget

__all__ = ["MiqsamWidget"]
