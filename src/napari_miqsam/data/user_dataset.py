"""The user's own labelled volumes, collected into a data set folder that training reads.

Layout: KiTS (``data.datasets``), one case per image::

    DIR/case_00000/imaging.nii.gz       the image, in its own spacing and affine
    DIR/case_00000/segmentation.nii.gz  0 background, 1 organ (optional), 2.. lesion kinds
    DIR/case_00000/miqsam_case.json     the image's key, where it came from, when it changed

An image is recognised by its key (:func:`image_key`: a hash of its voxel values, shape and
spacing), so adding the same image again updates its case instead of adding a second one. An
update MERGES by default: the new labels' lesion voxels (2..) overwrite what was there, their organ
voxels (1) fill only background, and their background never erases anything; so instances
committed one click at a time accumulate. ``mode="replace"`` writes the new labels whole (how a
user removes a wrong label). New cases are written into a hidden temporary folder and renamed into
place, each file of an update is replaced atomically (``data.io.atomic_write``): a full disk or a
crash never leaves half a case.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from ..errors import InputError, MiqsamError, ReadError, WriteError
from .io import Volume, atomic_write, read_volume, write_image, write_labels

__all__ = ["CASE_FILE", "CollectResult", "add_case", "class_labels", "collect_files", "find_case", "image_key"]

CASE_FILE = "miqsam_case.json"
IMAGE_FILE = "imaging.nii.gz"
LABEL_FILE = "segmentation.nii.gz"
ORGAN = 1
FIRST_LESION = 2  # KiTS: 2 tumour, 3 cyst, ...; the user's lesion kinds from here on
SPACING_TOLERANCE = 1e-3  # relative: labels and image describe the same grid


@dataclass
class CollectResult:
    """What :func:`add_case` did.

    Attributes:
        case: the case folder (``DIR/case_XXXXX``).
        created: True for a new case, False when an existing case (the same image) was updated.
        voxels: label value -> voxel count of the case's labels after the update (0 left out).
        cases: the number of cases in the data set folder now.
    """

    case: Path
    created: bool
    voxels: dict[int, int] = field(default_factory=dict)
    cases: int = 0

    @property
    def name(self) -> str:
        return self.case.name

    def summary(self) -> str:
        kinds = ", ".join(f"label {v}: {n} voxels" for v, n in sorted(self.voxels.items()))
        verb = "added" if self.created else "updated"
        return f"{verb} {self.case} ({kinds}); {self.cases} labelled volume{'s' * (self.cases != 1)} in {self.case.parent}"


def image_key(image: np.ndarray, spacing: Sequence[float]) -> str:
    """A stable key of an image: sha256 of its shape, spacing (rounded to 1e-4 mm) and voxel values
    as float32, so the same scan read as int16 from a file or held as float32 by napari has one key."""
    arr = np.asarray(image)
    h = hashlib.sha256(b"miqsam-case/1")
    h.update(json.dumps([list(arr.shape), [round(float(s), 4) for s in spacing]]).encode())
    for z in range(0, arr.shape[0], 16):  # a few slices at a time: no float32 copy of the whole volume
        h.update(np.ascontiguousarray(arr[z:z + 16], dtype=np.float32).tobytes())
    return h.hexdigest()[:24]


def class_labels(instances: np.ndarray, kind: int | dict[int, int] = FIRST_LESION) -> np.ndarray:
    """Class labels (0 background, ``kind`` for lesions) from an instance label volume (ids 1..K,
    as the widget commits them): every instance gets ``kind``, or ``kind[id]`` per instance (ids
    missing from the dict are dropped)."""
    inst = np.asarray(instances)
    if not np.issubdtype(inst.dtype, np.integer) and inst.dtype != bool:
        raise InputError(f"instance labels must be integers, got {inst.dtype}")
    if isinstance(kind, dict):
        lut = np.zeros(int(inst.max(initial=0)) + 1, np.uint8)
        for i, k in kind.items():
            if 0 < int(i) < len(lut):
                lut[int(i)] = _check_kind(k)
        return lut[inst.astype(np.intp, copy=False)]
    return np.where(inst > 0, _check_kind(kind), 0).astype(np.uint8)


def _check_kind(k: int) -> int:
    if not FIRST_LESION <= int(k) <= 255:
        raise InputError(f"a lesion kind is a label value from {FIRST_LESION} to 255 (KiTS: 2 tumour, 3 cyst), got {k}")
    return int(k)


def _check_labels(labels: np.ndarray, image_shape: tuple, where: str) -> np.ndarray:
    at = f"{where}: " if where else ""
    lab = np.asarray(labels)
    if lab.dtype == bool:
        lab = lab.astype(np.uint8)
    if lab.shape != tuple(image_shape):
        raise InputError(f"{at}the labels have shape {lab.shape}, the image {tuple(image_shape)}; "
                         "they must be drawn on the same voxel grid")
    if not np.issubdtype(lab.dtype, np.integer):
        if not (np.all(np.isfinite(lab)) and np.array_equal(lab, np.round(lab))):
            raise InputError(f"{at}the labels are not integers ({lab.dtype})")
    lo, hi = (int(lab.min()), int(lab.max())) if lab.size else (0, 0)
    if lo < 0 or hi > 255:
        raise InputError(f"{at}label values must be 0..255 (0 background, 1 organ, 2.. lesion kinds), got {lo}..{hi}")
    lab = lab.astype(np.uint8)
    if hi == 0:
        raise InputError(f"{at}the labels are empty; label at least one lesion before adding the volume")
    if hi < FIRST_LESION:
        raise InputError(f"{at}the labels hold no lesion (values {FIRST_LESION} and up; 1 is the organ). "
                         "Lesions numbered from 1 need a kind offset of 1 (--kind-offset 1), instance ids "
                         "of one kind --as-kind 2")
    return lab


def _check_spacing(spacing: Sequence[float], where: str) -> tuple[float, float, float]:
    """``inference.preprocess.check_spacing`` with the file or layer the spacing belongs to named."""
    from ..inference.preprocess import check_spacing

    try:
        return check_spacing(spacing)
    except InputError as err:
        raise InputError(f"{where}: {err}") from None


def _same_spacing(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(abs(x - y) <= SPACING_TOLERANCE * max(abs(x), abs(y)) for x, y in zip(a, b))


def _prepare_root(root: Path) -> Path:
    """The data set folder, created if missing; WriteError when it cannot be written, InputError when
    it holds a data set of another layout."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise WriteError(f"{root}: not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"{root}: cannot create the data set folder ({exc.strerror or exc})") from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise WriteError(f"{root}: the folder is not writable; choose a data set folder you can write to")
    from .datasets import detect_format

    try:
        fmt = detect_format(root)
    except ReadError:
        return root  # empty, or nothing we know: cases are added beside it
    if fmt != "kits":
        raise InputError(f"{root} holds a {fmt.upper()} data set; collect into an empty folder or one in the KiTS "
                         "layout (case_XXXXX/imaging.nii.gz + segmentation.nii.gz)")
    return root


def _case_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.glob("case_*") if d.is_dir())


def _read_card(folder: Path) -> dict:
    try:
        return json.loads((folder / CASE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def find_case(root: Path | str, key: str) -> Path | None:
    """The case folder of ``root`` whose image has ``key`` (:func:`image_key`), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    for d in _case_dirs(root):
        if _read_card(d).get("key") == key:
            return d
    return None


def _write_json(path: Path, obj: dict) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=1)
    atomic_write(path, write, overwrite=True)


def _voxels(labels: np.ndarray) -> dict[int, int]:
    counts = np.bincount(labels.ravel(), minlength=1)
    return {int(v): int(n) for v, n in enumerate(counts) if v and n}


def _merge(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    out = old.copy()
    out[(new == ORGAN) & (old == 0)] = ORGAN
    lesion = new >= FIRST_LESION
    out[lesion] = new[lesion]
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _os_error(exc: OSError, where: Path, kept: str) -> WriteError:
    """A WriteError that says what failed (a full disk, no permission) and what is left as it was."""
    why = str(exc) if isinstance(exc, WriteError) else (exc.strerror or str(exc))
    return WriteError(f"{where}: could not write the labelled volume ({why}); {kept}")


def add_case(
    root: Path | str,
    image: np.ndarray,
    labels: np.ndarray,
    spacing: Sequence[float],
    *,
    like: Volume | None = None,
    affine: np.ndarray | None = None,
    label_spacing: Sequence[float] | None = None,
    source: str = "",
    mode: Literal["merge", "replace"] = "merge",
) -> CollectResult:
    """Add one labelled volume to the data set folder ``root`` (KiTS layout), or update its case.

    Args:
        root: the data set folder (created if missing).
        image: (z, y, x) intensities (CT in HU as they are; written int16 / float32 as given).
        labels: (z, y, x) class labels on the image's grid: 0 background, 1 organ (optional),
            2.. lesion kinds (KiTS: 2 tumour, 3 cyst). Instances from the widget go through
            :func:`class_labels` first.
        spacing: the image's voxel size (z, y, x) in mm.
        like: the image's source ``Volume`` (affine, header and axis order are reused); or
        affine: its NIfTI affine (nibabel order); neither: ``diag(spacing)``.
        label_spacing: the labels' own spacing when they came from elsewhere; must equal ``spacing``.
        source: where the image came from (a path or a layer name), kept in ``miqsam_case.json``.
        mode: ``"merge"`` (new lesion voxels overwrite, nothing is erased) or ``"replace"``.

    Raises:
        InputError: labels of another shape or spacing, empty labels or no lesion, a 2D image,
            a folder holding another layout, an unknown mode.
        WriteError: a folder without write permission, a full disk (nothing half-written remains).
    """
    if mode not in ("merge", "replace"):
        raise InputError(f"mode must be 'merge' or 'replace', got {mode!r}")
    img = np.asarray(image)
    if img.ndim != 3 or min(img.shape) < 2:
        raise InputError(f"the image must be a 3D (z, y, x) volume, got shape {img.shape}")
    if not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
        raise InputError(f"the image has dtype {img.dtype}; a numeric volume is needed")
    sp = _check_spacing(spacing, "the image")
    if label_spacing is not None:
        lsp = _check_spacing(label_spacing, "the labels")
        if not _same_spacing(sp, lsp):
            raise InputError(f"the labels have spacing {lsp} mm, the image {sp} mm; they must describe the same voxel grid")
    lab = _check_labels(labels, img.shape, "")
    root = _prepare_root(Path(root))
    key = image_key(img, sp)
    existing = find_case(root, key)
    if existing is not None:
        voxels = _update(existing, lab, mode, source)
        return CollectResult(existing, False, voxels, len(_case_dirs(root)))
    case = _create(root, img, lab, sp, like, affine, key, source)
    return CollectResult(case, True, _voxels(lab), len(_case_dirs(root)))


def _update(folder: Path, lab: np.ndarray, mode: str, source: str) -> dict[int, int]:
    seg = folder / LABEL_FILE
    try:
        old = read_volume(seg) if seg.exists() else None
    except ReadError:
        old = None  # an unreadable old file is replaced
    if old is not None and old.data.shape != lab.shape:
        raise ReadError(f"{seg}: the stored labels have shape {old.data.shape}, the image {lab.shape}; "
                        "remove this case folder and add the volume again")
    merged = lab if mode == "replace" or old is None else _merge(np.asarray(old.data).astype(np.uint8), lab)
    like = old if old is not None else read_volume(folder / IMAGE_FILE)  # the case's geometry
    card = _read_card(folder)
    card["updated"] = _now()
    card["updates"] = int(card.get("updates", 0)) + 1
    if source and source not in card.setdefault("sources", []):
        card["sources"].append(source)
    try:
        write_labels(seg, merged, like=like, overwrite=True)
        _write_json(folder / CASE_FILE, card)
    except OSError as exc:
        raise _os_error(exc, folder, "the case keeps its previous labels") from exc
    return _voxels(merged)


def _create(root: Path, img, lab, sp, like, affine, key: str, source: str) -> Path:
    tmp = root / f".tmp-case-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # not case_*: never read as a case
    try:
        tmp.mkdir()
        write_image(tmp / IMAGE_FILE, img, like=like, spacing=None if like else sp, affine=affine)
        write_labels(tmp / LABEL_FILE, lab, like=like, spacing=None if like else sp, affine=affine)
        now = _now()
        _write_json(tmp / CASE_FILE, {"key": key, "shape": list(img.shape), "spacing": list(sp),
                                      "sources": [source] if source else [], "added": now, "updated": now,
                                      "updates": 0, "format": "napari-miqsam-case/1"})
        for _ in range(1000):  # another process may take a number between listing and renaming
            n = max((int(d.name[5:]) for d in _case_dirs(root) if d.name[5:].isdigit()), default=-1) + 1
            case = root / f"case_{n:05d}"
            try:
                os.rename(tmp, case)  # atomic; fails when another writer made the same folder meanwhile
                return case
            except OSError:
                if not case.exists():
                    raise
        raise WriteError(f"{root}: could not find a free case number")
    except (OSError, MiqsamError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _os_error(exc, root, "nothing was added") from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def collect_files(
    image_path: Path | str,
    labels_path: Path | str,
    root: Path | str,
    *,
    kind_offset: int = 0,
    as_kind: int | None = None,
    mode: Literal["merge", "replace"] = "merge",
) -> CollectResult:
    """:func:`add_case` for an image and its labels on disk (NIfTI or TIFF, ``data.io.read_volume``).

    ``kind_offset`` is added to every non-zero label (1 for files that number lesion kinds from 1
    with no organ label); ``as_kind`` makes every non-zero voxel that lesion kind (instance ids of
    one kind, or a binary mask). The labels' spacing (and, for two NIfTI files, orientation and
    position) must match the image's; a TIFF without spacing metadata is taken on the image's grid.
    """
    img = read_volume(image_path)
    lab = read_volume(labels_path)
    where = str(labels_path)
    data = np.asarray(lab.data)
    if data.shape != img.data.shape:
        raise InputError(f"{where}: the labels have shape {data.shape}, the image {img.data.shape} ({image_path}); "
                         "they must be drawn on the same voxel grid")
    if not np.issubdtype(data.dtype, np.integer) and data.dtype != bool:
        if not (np.all(np.isfinite(data)) and np.array_equal(data, np.round(data))):
            raise InputError(f"{where}: the labels are not integers ({data.dtype})")
        data = np.round(data).astype(np.int64)
    if as_kind is not None and kind_offset:
        raise InputError("give either a kind offset or one kind for all labels, not both")
    if as_kind is not None:
        data = class_labels(data.astype(np.int64), as_kind)
    elif kind_offset:
        data = np.where(data > 0, data.astype(np.int64) + int(kind_offset), 0)
    spacing_known = lab.format == "nifti" or bool(lab.meta)
    if lab.format == "nifti" and img.format == "nifti":
        _check_same_geometry(img, lab, where)
    return add_case(root, img.data, data, img.spacing, like=img, label_spacing=lab.spacing if spacing_known else None,
                    source=str(Path(image_path).resolve()), mode=mode)


def _check_same_geometry(img: Volume, lab: Volume, where: str) -> None:
    if tuple(img.axes) != tuple(lab.axes) or img.affine is None or lab.affine is None:
        raise InputError(f"{where}: the labels are stored in another orientation than the image; resample them onto the image first")
    a, b = np.asarray(img.affine, float), np.asarray(lab.affine, float)
    half = 0.5 * min(img.spacing)
    if not np.allclose(a[:3, :3], b[:3, :3], atol=SPACING_TOLERANCE * max(img.spacing)) or \
            np.abs(a[:3, 3] - b[:3, 3]).max() > half:
        if _same_spacing(img.spacing, lab.spacing):
            raise InputError(f"{where}: the labels lie in another position or orientation than the image (affines differ)")
        raise InputError(f"the labels have spacing {tuple(lab.spacing)} mm, the image {tuple(img.spacing)} mm; "
                         "they must describe the same voxel grid")
