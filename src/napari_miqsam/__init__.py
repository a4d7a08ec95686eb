"""napari-miqsam: MIQ-SAM3D point-prompted multi-instance 3D segmentation.

Importing this package imports neither torch nor napari; the heavy parts load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"
