"""Readers for the public lesion data sets as they lie on a user's disk.

Layouts (all NIfTI):

* LiTS: ``volume-N.nii[.gz]`` + ``segmentation-N.nii[.gz]`` (0 bg, 1 liver, 2 tumour), in one
  folder or spread over sub-folders (the challenge ships "Training Batch 1/2").
* KiTS19/21: ``case_XXXXX/imaging.nii.gz`` + ``aggregated_MAJ_seg.nii.gz`` (KiTS21) or
  ``segmentation.nii.gz`` (KiTS19, and our phantoms): 1 kidney, 2 tumour, 3 cyst.
* MSD / nnU-Net: ``imagesTr/<id>[_0000].nii.gz`` + ``labelsTr/<id>.nii.gz`` (e.g. Task03_Liver:
  1 liver, 2 tumour). The root may also be the folder that holds one ``TaskXX_*``/``DatasetXXX_*``.
  macOS resource forks (``._*``) shipped inside the MSD tarballs are skipped.

Label values are kept as they are: LiTS and MSD liver already use 1 organ / 2 tumour, which is
the KiTS convention used across the project.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ReadError
from .contrast_probes import CONTRAST_PROBES
from .io import read_volume
from .phantom import CLASS_NAMES, Case, make_phantom

__all__ = [
    "FORMATS",
    "CONTRAST_PROBES",
    "OOD_SITES",
    "CaseRef",
    "OodPhantomRef",
    "PhantomRef",
    "classes_of",
    "detect_format",
    "lesion_classes_in",
    "lesion_names",
    "list_cases",
    "ood_phantom_cases",
    "phantom_cases",
]

FORMATS = ("lits", "kits", "msd")
_NII = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
_LITS_VOL = re.compile(r"^volume-(\d+)\.nii(\.gz)?$", re.IGNORECASE)
_LITS_SEG = re.compile(r"^segmentation-(\d+)\.nii(\.gz)?$", re.IGNORECASE)


@dataclass
class CaseRef:
    """A labelled case on disk; :meth:`load` reads it.

    Attributes:
        name: case identifier (``volume-3``, ``case_00012``, ``liver_7``).
        image_path: the image file.
        label_path: the label file (same grid).
        format: ``'lits'``, ``'kits'`` or ``'msd'``.
    """

    name: str
    image_path: Path
    label_path: Path
    format: str = "kits"

    def load(self) -> Case:
        """Read image and labels; ReadError if unreadable or the grids differ.

        Returns a :class:`Case` with ``image`` float32 (z, y, x), ``labels`` uint8 (uint16 when
        values exceed 255), the image's spacing (z, y, x) mm and NIfTI affine.
        """
        img = read_volume(self.image_path)
        lab = read_volume(self.label_path)
        if img.data.shape != lab.data.shape:
            raise ReadError(
                f"{self.name}: image {img.data.shape} and labels {lab.data.shape} have different "
                f"shapes ({self.image_path}, {self.label_path})"
            )
        labels = np.asarray(lab.data)
        if not np.issubdtype(labels.dtype, np.integer):
            labels = np.rint(labels)
        if labels.size and labels.min() < 0:
            raise ReadError(f"{self.label_path}: negative label values")
        hi = int(labels.max()) if labels.size else 0
        labels = labels.astype(np.uint8 if hi <= 255 else np.uint16)
        return Case(
            image=np.asarray(img.data, dtype=np.float32),
            labels=labels,
            spacing=img.spacing,
            affine=img.affine if img.affine is not None else np.eye(4),
            name=self.name,
            meta={"format": self.format, "image_path": str(self.image_path),
                  "label_path": str(self.label_path)},
        )




def _probe(case: Case, contrast: str | None) -> Case:
    """``case`` with its image rewritten by the probe ``contrast`` (None: unchanged); labels untouched."""
    if contrast is None:
        return case
    _check_probe(contrast)
    scale, offset = CONTRAST_PROBES[contrast]
    case.image = case.image.astype(np.float32) * np.float32(scale) + np.float32(offset)
    # still CT: read through the CT window, though mirrored air and bone no longer look like HU
    case.meta = {**case.meta, "modality": "ct", "contrast_probe": {"name": contrast, "scale": scale, "offset": offset}}
    return case


@dataclass
class PhantomRef:
    """A phantom generated on demand (``phantom:N:SEED`` in the CLI); ``contrast``: one of
    :data:`CONTRAST_PROBES` applied to its image (``phantom-mirrored:N:SEED``), or None."""

    name: str
    seed: int
    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    format: str = "phantom"
    extra: dict = field(default_factory=dict)
    contrast: str | None = None

    def load(self) -> Case:
        return _probe(make_phantom(self.seed, shape=self.shape, spacing=self.spacing, name=self.name), self.contrast)


def phantom_cases(
    n: int,
    seed: int,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    contrast: str | None = None,
) -> list[PhantomRef]:
    """``n`` phantom references with seeds ``seed .. seed + n - 1`` (``contrast``: a :data:`CONTRAST_PROBES` name)."""
    suffix = _probe_suffix(contrast)
    return [
        PhantomRef(
            name=f"phantom_{seed + i:05d}{suffix}",
            seed=seed + i,
            shape=tuple(shape) if shape is not None else None,  # type: ignore[arg-type]
            spacing=tuple(spacing) if spacing is not None else None,  # type: ignore[arg-type]
            contrast=contrast,
        )
        for i in range(int(n))
    ]


def _check_probe(contrast: str | None) -> None:
    if contrast is not None and contrast not in CONTRAST_PROBES:
        raise ValueError(f"unknown contrast probe {contrast!r}; use one of {', '.join(CONTRAST_PROBES)}")


def _probe_suffix(contrast: str | None) -> str:
    """The case-name suffix of a probe (``_mirrored``; '' for None), after checking its name."""
    _check_probe(contrast)
    return f"_{contrast}" if contrast else ""


#: the out-of-family validation sites: ``ood:N:SEED`` (abdomen, :mod:`.ood_phantom`) and
#: ``ood-thorax:N:SEED`` (lung nodules, :mod:`.ood_thorax`)
OOD_SITES = ("abdomen", "thorax")


@dataclass
class OodPhantomRef:
    """An out-of-family validation phantom generated on demand (``ood:N:SEED`` or
    ``ood-thorax:N:SEED`` in the CLI; see :mod:`.ood_phantom` and :mod:`.ood_thorax`, never used in
    training)."""

    name: str
    seed: int
    format: str = "phantom"  # the KiTS labelling: 1 organ, 2 and 3 two lesion kinds
    contrast: str | None = None  # a CONTRAST_PROBES name (ood-mirrored:N:SEED), or None
    site: str = "abdomen"  # one of OOD_SITES

    def load(self) -> Case:
        if self.site == "thorax":
            from .ood_thorax import make_ood_thorax as make
        else:
            from .ood_phantom import make_ood_phantom as make
        return _probe(make(self.seed, name=self.name), self.contrast)


def ood_phantom_cases(n: int, seed: int, contrast: str | None = None, site: str = "abdomen") -> list[OodPhantomRef]:
    """``n`` out-of-family phantom references with seeds ``seed .. seed + n - 1`` (``contrast``: a
    :data:`CONTRAST_PROBES` name; ``site``: one of :data:`OOD_SITES`)."""
    if site not in OOD_SITES:
        raise ValueError(f"unknown out-of-family site {site!r}; use one of {', '.join(OOD_SITES)}")
    suffix = _probe_suffix(contrast)
    stem = "ood" if site == "abdomen" else f"ood_{site}"
    return [OodPhantomRef(name=f"{stem}_{seed + i:05d}{suffix}", seed=seed + i, contrast=contrast, site=site)
            for i in range(int(n))]


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def _msd_root(root: Path) -> Path | None:
    if (root / "imagesTr").is_dir() and (root / "labelsTr").is_dir():
        return root
    subs = [
        d for d in sorted(root.iterdir())
        if d.is_dir() and _visible(d) and (d / "imagesTr").is_dir() and (d / "labelsTr").is_dir()
    ]
    return subs[0] if len(subs) == 1 else None


def _kits_dirs(root: Path) -> list[Path]:
    return [
        d for d in sorted(root.glob("case_*"))
        if d.is_dir() and any((d / f).exists() for f in ("imaging.nii.gz", "imaging.nii"))
    ]


def _lits_files(root: Path, pattern: re.Pattern, max_depth: int = 3) -> dict[int, Path]:
    found: dict[int, Path] = {}
    frontier = [root]
    for _ in range(max_depth):
        nxt = []
        for d in frontier:
            try:
                entries = sorted(d.iterdir())
            except OSError:
                continue
            for p in entries:
                if not _visible(p):
                    continue
                if p.is_dir():
                    nxt.append(p)
                    continue
                m = pattern.match(p.name)
                if m:
                    found.setdefault(int(m.group(1)), p)
        frontier = nxt
    return found


def detect_format(root: Path | str) -> str:
    """``'lits'``, ``'kits'`` or ``'msd'`` from the folder layout; ReadError if none fits."""
    root = Path(root)
    if not root.exists():
        raise ReadError(f"{root}: no such folder")
    if not root.is_dir():
        raise ReadError(f"{root}: not a folder (expected a LiTS, KiTS or MSD data set folder)")
    if _msd_root(root) is not None:
        return "msd"
    if _kits_dirs(root):
        return "kits"
    if _lits_files(root, _LITS_VOL):
        return "lits"
    raise ReadError(
        f"{root}: no known layout found (LiTS: volume-N.nii + segmentation-N.nii; KiTS: "
        f"case_*/imaging.nii.gz + segmentation.nii.gz; MSD: imagesTr/ + labelsTr/)"
    )


def list_cases(root: Path | str, format: str = "auto") -> list[CaseRef]:
    """Every labelled case under ``root``, sorted by name (numerically for LiTS).

    Unlabelled images (test sets) are skipped with a warning. ReadError if the folder has no
    case in the given layout.
    """
    root = Path(root)
    fmt = detect_format(root) if format in (None, "auto") else format.lower()
    if fmt not in FORMATS:
        raise ReadError(f"unknown data set format {format!r}; use auto, {', '.join(FORMATS)}")
    if not root.is_dir():
        raise ReadError(f"{root}: no such folder")
    cases: list[CaseRef] = []
    skipped = 0
    if fmt == "lits":
        vols = _lits_files(root, _LITS_VOL)
        segs = _lits_files(root, _LITS_SEG)
        for n in sorted(vols):
            if n in segs:
                cases.append(CaseRef(f"volume-{n}", vols[n], segs[n], "lits"))
            else:
                skipped += 1
    elif fmt == "kits":
        for d in _kits_dirs(root):
            img = d / "imaging.nii.gz" if (d / "imaging.nii.gz").exists() else d / "imaging.nii"
            lab = next(
                (d / f for f in ("aggregated_MAJ_seg.nii.gz", "segmentation.nii.gz",
                                 "segmentation.nii") if (d / f).exists()),
                None,
            )
            if lab is None:
                skipped += 1
                continue
            cases.append(CaseRef(d.name, img, lab, "kits"))
    else:
        mroot = _msd_root(root)
        if mroot is None:
            raise ReadError(f"{root}: no imagesTr/ and labelsTr/ folders (MSD / nnU-Net layout)")
        labels = {
            _NII.sub("", p.name): p
            for p in (mroot / "labelsTr").iterdir()
            if _visible(p) and _NII.search(p.name)
        }
        images: dict[str, Path] = {}
        for p in sorted((mroot / "imagesTr").iterdir()):
            if not (_visible(p) and _NII.search(p.name)):
                continue
            base = _NII.sub("", p.name)
            m = re.match(r"^(.*)_(\d{4})$", base)
            if m:
                if m.group(2) != "0000":
                    continue  # another channel of a multi-modal case: use channel 0
                base = m.group(1)
            images.setdefault(base, p)
        for base in sorted(images):
            if base in labels:
                cases.append(CaseRef(base, images[base], labels[base], "msd"))
            else:
                skipped += 1
    if skipped:
        warnings.warn(f"{root}: {skipped} image(s) without labels skipped", stacklevel=2)
    if not cases:
        raise ReadError(f"{root}: no labelled case found in the {fmt} layout")
    return cases


def lesion_classes_in(labels: np.ndarray) -> list[int]:
    """Lesion classes present in a label volume: every value >= 2, or [1] if 1 is the only one."""
    present = np.flatnonzero(np.bincount(np.asarray(labels).ravel().astype(np.intp)))
    lesions = [int(v) for v in present if v >= 2]
    if lesions:
        return lesions
    return [1] if 1 in present else []


def classes_of(format: str, labels: np.ndarray | None = None) -> list[int] | None:
    """Lesion classes of a data set format.

    ``lits``: [2] (tumour); ``kits`` and ``phantom``: [2, 3] (tumour, cyst); ``msd``: the
    values >= 2 present in ``labels`` (or [1] if 1 is the only one); None for ``msd`` without
    ``labels`` (decided per case).
    """
    fmt = format.lower()
    if fmt == "lits":
        return [2]
    if fmt in ("kits", "phantom"):
        return [2, 3]
    if fmt == "msd":
        return lesion_classes_in(labels) if labels is not None else None
    raise ReadError(f"unknown data set format {format!r}")


def _format_of(data: str | Path, format: str | None) -> str:
    if str(data) in ("phantom", "phantom-varied", "phantom-wide"):  # the training generator's data names
        return "phantom"
    return detect_format(Path(data)) if format in (None, "auto") else format.lower()


def _msd_label_names(data: str | Path) -> dict[int, str] | None:
    """value -> name (lower-case) of every label an MSD / nnU-Net ``dataset.json`` names, in
    either the MSD ``{"2": "cancer"}`` or the nnU-Net v2 ``{"cancer": 2}`` form; None when the
    file is missing or unreadable."""
    try:
        msd = _msd_root(Path(data))
        labels = json.loads((msd / "dataset.json").read_text()).get("labels", {}) if msd else None
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(labels, dict):
        return None
    names: dict[int, str] = {}
    for key, value in labels.items():
        value_, name = (key, value) if str(key).strip().isdigit() else (value, key)
        if isinstance(value_, (int, str)) and str(value_).strip().isdigit() and isinstance(name, str) and name.strip():
            names[int(value_)] = name.strip().lower()
    return names


def dataset_lesion_classes(data: str | Path, format: str = "auto") -> list[int] | None:
    """The lesion label values of a whole data set, in order: ``'phantom'`` and KiTS [2, 3], LiTS
    [2]; MSD / nnU-Net by the per-case rule (:func:`lesion_classes_in`) applied to the labels its
    ``dataset.json`` names: the values >= 2 (Task03 Liver: [2], cancer), or [1] where 1 is the only
    label besides background (Task06 Lung, Task10 Colon: cancer); None for an MSD set without a
    readable ``dataset.json`` (then only its label volumes can tell)."""
    fmt = _format_of(data, format)
    if fmt != "msd":
        return classes_of(fmt)
    names = _msd_label_names(data)
    return _named_lesions(names) if names else None


def _named_lesions(names: dict[int, str]) -> list[int]:
    """The lesion values among the labels a ``dataset.json`` names (:func:`lesion_classes_in`)."""
    return lesion_classes_in(np.asarray(sorted({0, *names}), dtype=np.intp))


def lesion_names(data: str | Path, format: str = "auto") -> dict[int, str]:
    """Names of the lesion label values of a data set (:func:`dataset_lesion_classes`):
    ``'phantom'`` and KiTS 2 tumour, 3 cyst; LiTS 2 tumour; MSD / nnU-Net from the data set's
    ``dataset.json`` ``labels``, lower-cased; a value without a name is left out. Never raises for
    a missing or unreadable ``dataset.json``: names are only for display."""
    fmt = _format_of(data, format)
    if fmt != "msd":  # the KiTS labelling (classes_of), named as the phantoms name it
        return {c: CLASS_NAMES[c] for c in classes_of(fmt)}
    names = _msd_label_names(data) or {}  # dataset.json read once
    return {v: names[v] for v in _named_lesions(names)} if names else {}
