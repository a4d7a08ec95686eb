"""One real CT case as an out-of-family yardstick: LiTS case 117, never training data.

The MIT-licensed PyPI package ``liver-ct-segmentation-package==1.6.0`` ships one case of the
LiTS challenge inside its wheel: ``liver_ct_segmentation_package/data/img_117.mrc`` (128³ float32,
Hounsfield units) and ``lab_117.mrc`` (128³ uint16: 0 background, 1 liver, 2 tumour), cropped to
the liver and resampled. :func:`fetch_real_ct` downloads the wheel once (``pip download``), reads
the two MRC files (:func:`read_mrc`) and writes them in the KiTS layout that
:func:`napari_miqsam.data.datasets.list_cases` reads::

    <cache>/real_ct/case_00117/imaging.nii.gz        float32 HU
    <cache>/real_ct/case_00117/segmentation.nii.gz   uint8: 0 background, 1 liver, 2 tumour

Orientation (checked by eye on slices of the stored array, (NZ, NY, NX) = (a0, a1, a2)):
slices across a2 are axial (vertebral body with its spinal canal and spinous process, kidneys,
aorta), the liver's cross-section grows with a2 and ends abruptly at the top (the dome) while it
tapers towards a2 = 0 (the right lobe's tip), and on coronal views the kidney lies at low a2
below the liver; across a2 the liver sits at low a0 and the spine at high a1. So the stored
(a0, a1, a2) is (patient right -> left, anterior -> posterior, inferior -> superior), and the
project's (z, y, x) array is ``stored.transpose(2, 1, 0)``, the phantom's convention (z up, y
posterior, x towards the patient's left; :func:`..phantom.affine_from_spacing`).

Spacing: not recorded in the files (the MRC cell size is 0). :data:`ASSUMED_SPACING` 1.4 mm
isotropic is an assumption: it fits the liver (it spans the whole crop, 18 cm along each axis, and
1.7 l with its tumours) and the spine (a vertebra plus its disc every ~21 slices: 29 mm, as in the
lower thoracic spine). The crop was a box around the liver resampled to 128³, so the true spacing
may differ a little per axis; every number measured on this case carries the assumption.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import ReadError

__all__ = [
    "ASSUMED_SPACING",
    "CASE_NAME",
    "PACKAGE",
    "default_cache",
    "fetch_real_ct",
    "read_mrc",
    "write_kits_case",
]

#: The PyPI requirement whose wheel holds the case.
PACKAGE = "liver-ct-segmentation-package==1.6.0"
_WHEEL_GLOB = "liver_ct_segmentation_package-1.6.0-*.whl"
_IMAGE_MEMBER = "liver_ct_segmentation_package/data/img_117.mrc"
_LABEL_MEMBER = "liver_ct_segmentation_package/data/lab_117.mrc"
#: Folder name of the case in the KiTS layout.
CASE_NAME = "case_00117"
#: Assumed voxel size (z, y, x) in mm; the files do not record one (module docstring).
ASSUMED_SPACING: tuple[float, float, float] = (1.4, 1.4, 1.4)

_MRC_HEADER = 1024
_MRC_DTYPES = {0: np.int8, 1: np.int16, 2: np.float32, 6: np.uint16}


def read_mrc(path: Path | str) -> np.ndarray:
    """Read an MRC2014 volume as stored: a (NZ, NY, NX) array (NX varies fastest).

    Reads the 1024-byte main header (NX, NY, NZ, MODE at bytes 0-15, NSYMBT at 92, byte order from
    MACHST at 212, else from a plausible NX), skips NSYMBT bytes of extended header and reads the
    data block. Modes 0 (int8), 1 (int16), 2 (float32) and 6 (uint16).

    Raises:
        ReadError: missing or truncated file, an unsupported mode, or a header that does not fit
            the file size.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ReadError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(raw) < _MRC_HEADER:
        raise ReadError(f"{path}: {len(raw)} bytes, shorter than an MRC header ({_MRC_HEADER}); truncated or not MRC")
    order = _mrc_byte_order(raw, path)
    nx, ny, nz, mode = (int(v) for v in np.frombuffer(raw, f"{order}i4", 4))
    nsymbt = int(np.frombuffer(raw, f"{order}i4", 1, offset=92)[0])
    mapcrs = tuple(int(v) for v in np.frombuffer(raw, f"{order}i4", 3, offset=64))
    if mode not in _MRC_DTYPES:
        raise ReadError(f"{path}: MRC mode {mode} is not supported (0 int8, 1 int16, 2 float32, 6 uint16)")
    if min(nx, ny, nz) < 1 or nsymbt < 0:
        raise ReadError(f"{path}: implausible MRC header (NX, NY, NZ = {nx}, {ny}, {nz}; NSYMBT = {nsymbt})")
    if mapcrs not in ((1, 2, 3), (0, 0, 0)):
        raise ReadError(f"{path}: MRC axis order MAPC/MAPR/MAPS = {mapcrs} is not supported (only 1, 2, 3)")
    dtype = np.dtype(_MRC_DTYPES[mode]).newbyteorder(order)
    start = _MRC_HEADER + nsymbt
    size = nx * ny * nz * dtype.itemsize
    if len(raw) != start + size:
        what = "truncated" if len(raw) < start + size else "longer than its header says"
        raise ReadError(f"{path}: {len(raw)} bytes where the header (NX, NY, NZ = {nx}, {ny}, {nz}, mode {mode}, "
                        f"NSYMBT = {nsymbt}) needs {start + size}: {what}")
    data = np.frombuffer(raw, dtype, nx * ny * nz, offset=start).reshape(nz, ny, nx)
    return data.astype(dtype.newbyteorder("="))  # a native-order copy, writable


def _mrc_byte_order(raw: bytes, path: Path) -> str:
    """``'<'`` or ``'>'`` from MACHST (0x44 0x44 / 0x44 0x41 little, 0x11 0x11 big); where MACHST is
    unset, the byte order in which NX reads as a plausible size."""
    stamp = raw[212:214]
    if stamp in (b"\x44\x44", b"\x44\x41"):
        return "<"
    if stamp == b"\x11\x11":
        return ">"
    for order in ("<", ">"):
        if 0 < int(np.frombuffer(raw, f"{order}i4", 1)[0]) <= 65536:
            return order
    raise ReadError(f"{path}: not an MRC file (no byte-order stamp and no plausible NX)")


def default_cache() -> Path:
    """``$MIQSAM_CACHE``, else ``~/.cache/napari-miqsam``."""
    env = os.environ.get("MIQSAM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "napari-miqsam"


def write_kits_case(image_mrc: Path | str, label_mrc: Path | str, folder: Path | str,
                    spacing: tuple[float, float, float] = ASSUMED_SPACING) -> Path:
    """Convert the case's two MRC files to ``folder/imaging.nii.gz`` + ``segmentation.nii.gz``.

    The stored arrays are turned to (z, y, x) by ``transpose(2, 1, 0)`` (module docstring) and
    written with ``spacing`` and the phantom's affine (x left, y posterior, z superior), atomically.
    Labels are kept as given (1 liver, 2 tumour). Returns ``folder``.
    """
    from .io import write_image, write_labels
    from .phantom import affine_from_spacing

    image = read_mrc(image_mrc).astype(np.float32, copy=False).transpose(2, 1, 0)
    labels = read_mrc(label_mrc).transpose(2, 1, 0)
    if image.shape != labels.shape:
        raise ReadError(f"{image_mrc} and {label_mrc}: different shapes {image.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 2:
        raise ReadError(f"{label_mrc}: labels must be 0 background, 1 liver, 2 tumour")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    affine = affine_from_spacing(spacing, image.shape)
    write_image(folder / "imaging.nii.gz", np.ascontiguousarray(image), spacing=spacing, affine=affine,
                overwrite=True)
    write_labels(folder / "segmentation.nii.gz", np.ascontiguousarray(labels), spacing=spacing, affine=affine,
                 overwrite=True)
    return folder


def _download_wheel(folder: Path) -> Path:
    """``pip download`` the package's wheel into ``folder`` (via a temporary folder, so an
    interrupted download leaves no partial wheel); returns the wheel's path."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", PACKAGE, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob(_WHEEL_GLOB))
        if done.returncode != 0 or not wheels:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise ReadError(f"cannot download {PACKAGE} with pip ({tail[0]}); check the network or the index")
        target = folder / wheels[0].name
        os.replace(wheels[0], target)
    return target


def fetch_real_ct(cache_dir: Path | str | None = None) -> Path:
    """The real-CT data set folder ``<cache>/real_ct`` (KiTS layout, one case), made on first use.

    Downloads the wheel into ``<cache>/wheel`` only when none is cached there, extracts the two MRC
    members and converts them (:func:`write_kits_case`). A finished conversion is reused.

    Args:
        cache_dir: the cache folder; default :func:`default_cache`.

    Raises:
        ReadError: the download fails, or the cached wheel is damaged (delete it and rerun).
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache()
    root = cache / "real_ct"
    case = root / CASE_NAME
    if (case / "imaging.nii.gz").is_file() and (case / "segmentation.nii.gz").is_file():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted((cache / "wheel").glob(_WHEEL_GLOB))
    wheel = wheels[0] if wheels else _download_wheel(cache / "wheel")
    with tempfile.TemporaryDirectory(dir=cache, prefix=".real-ct-") as tmp:
        try:
            with zipfile.ZipFile(wheel) as zf:
                for member in (_IMAGE_MEMBER, _LABEL_MEMBER):
                    with zf.open(member) as src, open(Path(tmp) / Path(member).name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            raise ReadError(f"{wheel}: cannot extract the case ({exc}); delete the file and rerun") from None
        write_kits_case(Path(tmp) / Path(_IMAGE_MEMBER).name, Path(tmp) / Path(_LABEL_MEMBER).name, case)
    return root
