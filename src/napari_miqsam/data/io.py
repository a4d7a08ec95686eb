"""NIfTI and TIFF volumes in, label volumes out, in the image's own geometry.

Arrays are always (z, y, x) in memory with ``spacing`` (z, y, x) in mm.

NIfTI: nibabel stores arrays as (i, j, k), usually (x, y, z). On read the array axes are
permuted (never flipped) so that axis 0 is the one closest to the world's superior axis, axis 1
to anterior-posterior and axis 2 to left-right; for the usual diagonal affines this is
``transpose(2, 1, 0)``. KiTS stores its volumes slice-first; the permutation handles that too.
The permutation, the affine and the header are kept in the :class:`Volume`, and writing with
``like=volume`` undoes the permutation and reuses affine and header, so the geometry round
trips exactly.

TIFF: tifffile; (Z, Y, X) order as written by ImageJ/Fiji; spacing from ImageJ metadata
(``spacing`` for z, XResolution / YResolution for x / y, ``unit``) or OME (PhysicalSize*),
converted to mm when the unit is known, else (1, 1, 1).

All writes are atomic: a temporary file in the target folder, fsync, then ``os.replace``, so an
interrupted save never leaves a half-written file at the target path.
"""

from __future__ import annotations

import os
import re
import struct
import uuid
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ReadError, WriteError

__all__ = [
    "NIFTI_SUFFIXES",
    "TIFF_SUFFIXES",
    "Volume",
    "file_format",
    "read_volume",
    "write_image",
    "write_labels",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
TIFF_SUFFIXES = (".tif", ".tiff")
_UNIT_TO_MM = {
    "mm": 1.0, "millimeter": 1.0, "millimetre": 1.0,
    "cm": 10.0, "centimeter": 10.0, "m": 1000.0, "meter": 1000.0,
    "um": 1e-3, "µm": 1e-3, "\u00b5m": 1e-3, "micron": 1e-3, "microns": 1e-3,
    "micrometer": 1e-3, "micrometre": 1e-3, "nm": 1e-6, "nanometer": 1e-6,
}


@dataclass
class Volume:
    """A 3D image or label volume with its geometry.

    Attributes:
        data: (z, y, x) array.
        spacing: voxel size (z, y, x) in mm (positive).
        affine: NIfTI 4x4 affine in nibabel's axis order (None for TIFF).
        header: the nibabel header (None for TIFF), reused when writing results.
        path: the file it was read from.
        format: ``'nifti'`` or ``'tiff'``.
        axes: NIfTI only: ``data = stored_array.transpose(axes)``.
        meta: extra information (original unit, ...).
    """

    data: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray | None = None
    header: object | None = None
    path: Path | None = None
    format: str = "nifti"
    axes: tuple[int, int, int] = (2, 1, 0)
    meta: dict = field(default_factory=dict)


def file_format(path: Path | str) -> str:
    """``'nifti'`` or ``'tiff'`` from the file name; ReadError otherwise."""
    name = Path(path).name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    raise ReadError(
        f"{path}: unsupported file type; napari-miqsam reads .nii, .nii.gz, .tif and .tiff"
    )


def _clean_spacing(values: Sequence[float], path: Path | str) -> tuple[float, float, float]:
    out = []
    bad = False
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = float("nan")
        if not np.isfinite(f) or f == 0.0:
            out.append(1.0)
            bad = True
        elif f < 0:
            out.append(-f)
            bad = True
        else:
            out.append(f)
    if bad:
        warnings.warn(
            f"{path}: voxel spacing {tuple(values)} is zero, negative or not a number; "
            f"using {tuple(out)} mm",
            stacklevel=3,
        )
    return tuple(out)  # type: ignore[return-value]


def _squeeze_to_3d(data: np.ndarray, path: Path | str) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 3:
        raise ReadError(
            f"{path}: the image has shape {data.shape}; napari-miqsam needs a single-channel "
            f"3D volume"
        )
    return data


def _nifti_axes(affine: np.ndarray) -> tuple[int, int, int]:
    """Permutation of the stored axes that puts (S-I, A-P, L-R) first, second, third."""
    import nibabel as nib

    try:
        ornt = nib.orientations.io_orientation(affine)
    except Exception:  # noqa: BLE001 - a degenerate affine: keep the plain convention
        return (2, 1, 0)
    if np.isnan(ornt).any():
        return (2, 1, 0)
    world_of = [int(w) for w in ornt[:, 0]]
    try:
        axes = tuple(world_of.index(2 - a) for a in range(3))
    except ValueError:
        return (2, 1, 0)
    return axes  # type: ignore[return-value]


def read_volume(path: Path | str) -> Volume:
    """Read a 3D NIfTI (.nii, .nii.gz) or TIFF (.tif, .tiff) volume.

    Returns:
        A :class:`Volume` with ``data`` (z, y, x) and ``spacing`` (z, y, x) mm.

    Raises:
        ReadError: missing file, unsupported suffix, truncated/corrupt file, not 3D.
    """
    path = Path(path)
    fmt = file_format(path)
    if not path.exists():
        raise ReadError(f"{path}: no such file")
    if path.is_dir():
        raise ReadError(f"{path}: is a folder, not an image file")
    if fmt == "nifti":
        return _read_nifti(path)
    return _read_tiff(path)


def _raw_zooms(path: Path, img) -> tuple[float, ...]:
    """pixdim[1:4] as stored (nibabel silently fixes zero/negative values on load)."""
    import nibabel as nib
    from nibabel.openers import ImageOpener

    try:
        klass = nib.Nifti2Header if isinstance(img, nib.Nifti2Image) else nib.Nifti1Header
        with ImageOpener(str(path)) as fh:
            raw = klass.from_fileobj(fh, check=False)
        return tuple(float(v) for v in raw["pixdim"][1:4])
    except Exception:  # noqa: BLE001 - fall back to nibabel's (already fixed) zooms
        return tuple(float(v) for v in img.header.get_zooms()[:3])


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    errors = (ImageFileError, OSError, EOFError, zlib.error, ValueError, struct.error)
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise ReadError(f"{path}: not a NIfTI image")
        stored = np.asanyarray(img.dataobj)
    except ReadError:
        raise
    except errors as exc:
        raise ReadError(
            f"{path}: cannot read this NIfTI file ({type(exc).__name__}: {exc}); it may be "
            f"truncated or not a NIfTI image"
        ) from exc
    except MemoryError as exc:
        raise ReadError(f"{path}: the volume does not fit in memory") from exc
    if stored.dtype == np.float64 and img.get_data_dtype() != np.float64:
        stored = stored.astype(np.float32)  # scaled integers (scl_slope): float32 is plenty
    squeezed = _squeeze_to_3d(stored, path)
    affine = np.array(img.affine, dtype=float)
    axes = _nifti_axes(affine)
    data = np.ascontiguousarray(squeezed.transpose(axes))
    zooms = _raw_zooms(path, img)
    spacing = _clean_spacing([zooms[a] for a in axes], path)
    return Volume(
        data=data,
        spacing=spacing,
        affine=affine,
        header=img.header,
        path=path,
        format="nifti",
        axes=axes,
        meta={"stored_shape": tuple(int(n) for n in stored.shape)},
    )


def _tiff_spacing(tif, path: Path) -> tuple[tuple[float, float, float], dict]:
    """(spacing mm, meta) from ImageJ or OME metadata; (1, 1, 1) when there is none."""
    meta: dict = {}
    page = tif.pages[0]
    if tif.is_ome and tif.ome_metadata:
        xml = tif.ome_metadata
        m = re.search(r"<(?:\w+:)?Pixels\b([^>]*)>", xml)
        if m:
            attrs = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            vals = []
            for ax in ("Z", "Y", "X"):
                size = attrs.get(f"PhysicalSize{ax}")
                unit = attrs.get(f"PhysicalSize{ax}Unit", "µm")
                if size is None:
                    vals.append(1.0)
                    continue
                vals.append(float(size) * _UNIT_TO_MM.get(unit.strip().lower(), 1.0))
            meta["unit_source"] = "ome"
            return _clean_spacing(vals, path), meta
    ij = tif.imagej_metadata or {}
    res = []
    for tag in ("YResolution", "XResolution"):
        t = page.tags.get(tag)
        if t is None:
            res.append(None)
            continue
        num, den = t.value if isinstance(t.value, tuple) else (t.value, 1)
        res.append(float(den) / float(num) if num else None)
    if not ij and all(r is None for r in res):
        return (1.0, 1.0, 1.0), meta
    unit = str(ij.get("unit", "")).strip().lower().replace("\\u00b5", "µ")
    factor = _UNIT_TO_MM.get(unit, 1.0)
    meta["unit"] = unit or None
    z = float(ij.get("spacing", 1.0)) * (factor if "spacing" in ij else 1.0)
    y = res[0] * factor if res[0] is not None and ij else 1.0
    x = res[1] * factor if res[1] is not None and ij else 1.0
    return _clean_spacing((z, y, x), path), meta


def _read_tiff(path: Path) -> Volume:
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            data = tif.asarray()
            spacing, meta = _tiff_spacing(tif, path)
    except ReadError:
        raise
    except (tifffile.TiffFileError, OSError, EOFError, ValueError, struct.error, KeyError,
            IndexError, zlib.error) as exc:
        raise ReadError(
            f"{path}: cannot read this TIFF file ({type(exc).__name__}: {exc}); it may be "
            f"truncated or not a TIFF image"
        ) from exc
    data = _squeeze_to_3d(np.asarray(data), path)
    return Volume(data=data, spacing=spacing, affine=None, header=None, path=path,
                  format="tiff", meta=meta)


# ---------------------------------------------------------------------------------------------
# writing


def _default_affine(spacing: Sequence[float]) -> np.ndarray:
    """RAS-ish ``diag(sx, sy, sz, 1)`` for a (z, y, x) array stored as (x, y, z)."""
    sz, sy, sx = (float(s) for s in spacing)
    return np.diag([sx, sy, sz, 1.0])


def _check_target(path: Path, overwrite: bool) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.exists():
        raise WriteError(f"{path}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise WriteError(f"{path}: {folder} is not a folder")
    if path.is_dir():
        raise WriteError(f"{path}: is a folder")
    if path.exists() and not overwrite:
        raise WriteError(f"{path}: the file exists; choose another name or allow overwriting")
    if not os.access(folder, os.W_OK):
        raise WriteError(f"{path}: the folder {folder} is not writable")


def _tmp_name(path: Path) -> Path:
    name = path.name
    lower = name.lower()
    suffix = next((s for s in (".nii.gz",) + (".nii",) + TIFF_SUFFIXES if lower.endswith(s)), "")
    stem = name[: len(name) - len(suffix)] if suffix else name
    return path.parent / f".{stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"


def atomic_write(path: Path, writer, overwrite: bool) -> Path:
    """Call ``writer(tmp_path)`` then move the finished file onto ``path`` (fsync + ``os.replace``).

    Shared by every writer of the project: an interrupted write never leaves a half file at ``path``.
    """
    path = Path(path)
    _check_target(path, overwrite)
    tmp = _tmp_name(path)
    try:
        writer(tmp)
        try:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        except OSError:
            pass
        if path.exists() and not overwrite:  # appeared meanwhile
            raise WriteError(f"{path}: the file exists; choose another name or allow overwriting")
        os.replace(tmp, path)
    except WriteError:
        _unlink_quiet(tmp)
        raise
    except (OSError, ValueError, TypeError) as exc:
        _unlink_quiet(tmp)
        raise WriteError(f"{path}: cannot write ({type(exc).__name__}: {exc})") from exc
    except BaseException:
        _unlink_quiet(tmp)
        raise
    return path


def _unlink_quiet(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass


def _geometry(
    like: Volume | None, spacing: Sequence[float] | None, affine: np.ndarray | None
) -> tuple[tuple[float, float, float], np.ndarray, object | None, tuple[int, int, int]]:
    if like is not None:
        sp = tuple(float(s) for s in like.spacing)
        if like.format == "nifti" and like.affine is not None:
            return sp, np.asarray(like.affine, float), like.header, tuple(like.axes)  # type: ignore
        return sp, (np.asarray(affine, float) if affine is not None else _default_affine(sp)), None, (2, 1, 0)  # type: ignore
    sp = _clean_spacing(spacing if spacing is not None else (1.0, 1.0, 1.0), "spacing")
    aff = np.asarray(affine, float) if affine is not None else _default_affine(sp)
    return sp, aff, None, (2, 1, 0)  # type: ignore[return-value]


def _write_nifti(tmp: Path, data: np.ndarray, affine: np.ndarray, header, axes) -> None:
    import nibabel as nib

    inv = np.argsort(axes)
    stored = data.transpose(inv)
    if header is not None:
        hdr = header.copy()
        hdr.set_data_dtype(data.dtype)
        # the stored shape may differ from the source's (e.g. a 4D source with one frame)
        img_cls = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
        img = img_cls(stored, affine, hdr)
        img.header.set_slope_inter(1.0, 0.0)
    else:
        img = nib.Nifti1Image(stored, affine)
        img.header.set_data_dtype(data.dtype)
        img.header.set_xyzt_units("mm")
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    img.to_filename(str(tmp))


def _write_tiff(tmp: Path, data: np.ndarray, spacing: Sequence[float]) -> None:
    import tifffile

    sz, sy, sx = (float(s) for s in spacing)
    tifffile.imwrite(
        str(tmp),
        data,
        imagej=True,
        resolution=(1.0 / sx, 1.0 / sy),
        metadata={"spacing": sz, "unit": "mm", "axes": "ZYX"},
    )


def _check_3d(data: np.ndarray, path: Path) -> np.ndarray:
    data = np.asarray(data)
    if data.ndim != 3:
        raise WriteError(f"{path}: expected a 3D (z, y, x) array, got shape {data.shape}")
    return data


def write_labels(
    path: Path | str,
    labels: np.ndarray,
    like: Volume | None = None,
    spacing: Sequence[float] | None = None,
    overwrite: bool = False,
    *,
    affine: np.ndarray | None = None,
) -> Path:
    """Write a (z, y, x) label volume to NIfTI or TIFF, atomically.

    Args:
        path: target ``.nii``, ``.nii.gz``, ``.tif`` or ``.tiff``.
        labels: integer/bool (z, y, x) volume; stored as uint8 when the labels fit, else uint16.
        like: the source image: its affine, header and axis order are reused (NIfTI), its
            spacing is written (TIFF).
        spacing: (z, y, x) mm when there is no ``like`` (default 1 mm).
        overwrite: replace an existing file.
        affine: NIfTI affine (nibabel order) when there is no ``like``; default ``diag(spacing)``.

    Raises:
        WriteError: the file exists (without ``overwrite``), the folder is missing or read-only,
            the array is not 3D, or more than 65535 labels.
    """
    path = Path(path)
    fmt = file_format(path) if path.name.lower().endswith(NIFTI_SUFFIXES + TIFF_SUFFIXES) else None
    if fmt is None:
        raise WriteError(f"{path}: unsupported file type; use .nii, .nii.gz, .tif or .tiff")
    labels = _check_3d(labels, path)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        if labels.size and not np.array_equal(labels, np.round(labels)):
            raise WriteError(f"{path}: labels must be integers, got {labels.dtype}")
    lo = int(labels.min()) if labels.size else 0
    hi = int(labels.max()) if labels.size else 0
    if lo < 0 or hi > 65535:
        raise WriteError(f"{path}: label values must be in 0..65535, got {lo}..{hi}")
    out = labels.astype(np.uint8 if hi <= 255 else np.uint16, copy=False)
    sp, aff, header, axes = _geometry(like, spacing, affine)
    if fmt == "nifti":
        return atomic_write(path, lambda tmp: _write_nifti(tmp, out, aff, header, axes), overwrite)
    return atomic_write(path, lambda tmp: _write_tiff(tmp, out, sp), overwrite)


def write_image(
    path: Path | str,
    image: np.ndarray,
    like: Volume | None = None,
    spacing: Sequence[float] | None = None,
    overwrite: bool = False,
    *,
    affine: np.ndarray | None = None,
) -> Path:
    """Write a (z, y, x) intensity volume (int16 / float32 kept; others -> float32), atomically.

    Same geometry rules and errors as :func:`write_labels`. TIFF (ImageJ) stores int16 as
    float32, since ImageJ has no signed 16-bit type.
    """
    path = Path(path)
    if not path.name.lower().endswith(NIFTI_SUFFIXES + TIFF_SUFFIXES):
        raise WriteError(f"{path}: unsupported file type; use .nii, .nii.gz, .tif or .tiff")
    fmt = file_format(path)
    image = _check_3d(image, path)
    if image.dtype not in (np.int16, np.uint8, np.uint16, np.float32):
        image = image.astype(np.float32)
    if fmt == "tiff" and image.dtype == np.int16:
        image = image.astype(np.float32)
    sp, aff, header, axes = _geometry(like, spacing, affine)
    if fmt == "nifti":
        return atomic_write(path, lambda tmp: _write_nifti(tmp, image, aff, header, axes), overwrite)
    return atomic_write(path, lambda tmp: _write_tiff(tmp, image, sp), overwrite)
