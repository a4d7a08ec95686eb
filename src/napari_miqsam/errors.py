"""The project's documented exceptions.

Every error a user can provoke (bad file, wrong dimensionality, point outside the volume, bad
weights) is one of these, with a sentence that says what happened and what to do. The napari
widget turns them into notifications; the CLI prints them and exits with status 2.
"""

from __future__ import annotations


class MiqsamError(Exception):
    """Base class of every error the project raises on purpose."""


class InputError(MiqsamError, ValueError):
    """The image, spacing or prompt points cannot be used (2D image, point outside, ...)."""


class ReadError(MiqsamError, OSError):
    """A file is missing, truncated or not in the expected format."""


class WriteError(MiqsamError, OSError):
    """An output file cannot be written (folder missing or read-only, file exists, ...)."""


class WeightsError(MiqsamError, ValueError):
    """A weights file is missing, truncated, or made for another architecture."""


class NotReadyError(MiqsamError, RuntimeError):
    """An operation was called out of order (e.g. ``predict`` before ``set_image``)."""


class CancelledError(MiqsamError):
    """A long operation was cancelled by the user between two steps."""


class OutOfMemoryError(MiqsamError, MemoryError):
    """The device ran out of memory; a smaller window or the CPU may help."""
