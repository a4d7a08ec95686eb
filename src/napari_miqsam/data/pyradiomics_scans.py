"""Real scans of other organs and another modality as out-of-family yardsticks, never training data.

LiTS 117 (:mod:`.real_ct`) is a liver CT: the organ and lesion type the model was made for. A user's
scan may be neither. The source distribution of ``pyradiomics`` 2.2.0 on PyPI (BSD-3-Clause package)
ships the test cases of its feature extractor, each a scan with one labelled finding, as NRRD files:

* ``lung-ct``: ``lung1`` (512 x 512 x 48, 0.57 x 0.57 x 5 mm, one lung nodule of about 14 mm) and
  ``lung2`` (512 x 512 x 61, 0.63 x 0.63 x 5 mm, one lung tumour of about 45 mm); CT, HU.
* ``brain-mr``: ``brain1`` (256 x 256 x 25, 0.78 x 0.78 x 6.5 mm, a brain tumour labelled as two
  pieces) and ``brain2`` (256 x 256 x 23, one small tumour); MR, arbitrary units.

The package does not say which patients or collections they come from. Each label marks one finding
of interest, not every lesion of the scan, so a second nodule found on a lung scan counts as a false
instance: precision on these scans is a lower bound. The lesions are brighter than their host tissue
(a nodule in aerated lung, an enhancing tumour in brain), unlike anything in the training phantoms.

:func:`fetch_pyradiomics_scans` downloads the 34 MB source distribution once from PyPI's file host
(checked against its published SHA-256), reads the NRRD pairs of one set (``pynrrd``) and writes
them in the KiTS layout that :func:`napari_miqsam.data.datasets.list_cases` reads::

    <cache>/real_lung_ct/case_lung1/imaging.nii.gz        float32 (HU for CT)
    <cache>/real_lung_ct/case_lung1/segmentation.nii.gz   uint8: 0 background, 2 the finding

Orientation: the files are in LPS space with axis-aligned directions; each axis whose direction is
negative is flipped, so the (z, y, x) array runs inferior -> superior, anterior -> posterior and
right -> left, the phantom's convention (:func:`..phantom.affine_from_spacing`).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from ..errors import InputError, ReadError
from .real_ct import default_cache

__all__ = ["SCAN_SETS", "SDIST_SHA256", "SDIST_URL", "fetch_pyradiomics_scans", "read_nrrd", "write_kits_pair"]

#: The source distribution that holds the scans, and its SHA-256 as PyPI publishes it.
SDIST_NAME = "pyradiomics-2.2.0.tar.gz"
SDIST_URL = ("https://files.pythonhosted.org/packages/ac/1d/5c1f83b03abf37f91389046f54844231f048c29974eb11b0d68b203d32c9/"
             + SDIST_NAME)
SDIST_SHA256 = "7435a912aa860660c1ab960dde72a5be2fc8394fd4fa2bd249fe2387b10a205f"
_MEMBER = "pyradiomics-2.2.0/data/{}_{}.nrrd"
#: Set name -> (folder in the cache, the scans' names in the package).
SCAN_SETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "lung-ct": ("real_lung_ct", ("lung1", "lung2")),
    "brain-mr": ("real_brain_mr", ("brain1", "brain2")),
}
#: The label value the finding is written with: the KiTS "tumour" class, as in LiTS.
FINDING_LABEL = 2


def read_nrrd(path: Path | str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A 3D NRRD volume as a (z, y, x) array in the phantom's orientation, and its spacing (z, y, x) mm.

    Raises:
        ReadError: unreadable, not 3D, or oblique (directions not along the axes).
    """
    import nrrd  # pynrrd: the NRRD reader of the field, a pure-Python package

    try:
        data, header = nrrd.read(str(path), index_order="C")
    except (OSError, EOFError, zlib.error, nrrd.NRRDError, ValueError) as exc:  # zlib, EOF: a damaged gzip body
        raise ReadError(f"{path}: cannot read as NRRD ({exc})") from None
    if data.ndim != 3:
        raise ReadError(f"{path}: a {data.ndim}D NRRD file; a 3D volume is needed")
    directions = np.asarray(header.get("space directions", np.eye(3)), float)  # one row per axis (x, y, z)
    if directions.shape != (3, 3) or np.count_nonzero(np.abs(directions) > 1e-6 * np.abs(directions).max()) != 3:
        raise ReadError(f"{path}: oblique or missing space directions {directions.tolist()}; only axis-aligned "
                        "volumes are read")
    if np.argmax(np.abs(directions), axis=1).tolist() != [0, 1, 2]:
        raise ReadError(f"{path}: the volume's axes are permuted against its space; only x, y, z order is read")
    steps = np.diag(directions)  # signed step of the file's axes x, y, z
    if header.get("space", "left-posterior-superior") not in ("left-posterior-superior", "LPS"):
        raise ReadError(f"{path}: space {header.get('space')!r}; only left-posterior-superior is read")
    flips = tuple(axis for axis, step in zip((2, 1, 0), steps) if step < 0)  # array axis of x is 2
    if flips:
        data = np.flip(data, axis=flips)
    spacing = tuple(float(abs(s)) for s in steps[::-1])
    return np.ascontiguousarray(data), spacing  # type: ignore[return-value]


def write_kits_pair(image_nrrd: Path | str, label_nrrd: Path | str, folder: Path | str) -> Path:
    """Convert one NRRD image + label pair to ``folder/imaging.nii.gz`` + ``segmentation.nii.gz``.

    Every labelled voxel becomes :data:`FINDING_LABEL`. Returns ``folder``.
    """
    from .io import write_image, write_labels
    from .phantom import affine_from_spacing

    image, spacing = read_nrrd(image_nrrd)
    labels, label_spacing = read_nrrd(label_nrrd)
    if image.shape != labels.shape or not np.allclose(spacing, label_spacing, rtol=1e-4):
        raise ReadError(f"{image_nrrd} and {label_nrrd}: different grids {image.shape} / {labels.shape}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    affine = affine_from_spacing(spacing, image.shape)
    write_image(folder / "imaging.nii.gz", image.astype(np.float32), spacing=spacing, affine=affine, overwrite=True)
    write_labels(folder / "segmentation.nii.gz", np.where(labels > 0, FINDING_LABEL, 0).astype(np.uint8),
                 spacing=spacing, affine=affine, overwrite=True)
    return folder


def _download_sdist(folder: Path) -> Path:
    """Download the source distribution into ``folder`` (via a temporary file, checked against
    :data:`SDIST_SHA256` before it takes its name); returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / SDIST_NAME
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".download-", delete=False) as tmp:
        try:
            with urllib.request.urlopen(SDIST_URL, timeout=60) as response:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    tmp.write(chunk)
        except (urllib.error.URLError, OSError) as exc:
            tmp.close()
            os.unlink(tmp.name)
            raise ReadError(f"cannot download {SDIST_NAME} from PyPI ({exc}); check the network") from None
    if digest.hexdigest() != SDIST_SHA256:
        os.unlink(tmp.name)
        raise ReadError(f"{SDIST_NAME}: the download's SHA-256 is not the one PyPI publishes; nothing was kept")
    os.replace(tmp.name, target)
    return target


def fetch_pyradiomics_scans(which: str, cache_dir: Path | str | None = None) -> Path:
    """The data set folder of one set of :data:`SCAN_SETS` (KiTS layout), made on first use.

    Downloads the source distribution into ``<cache>/sdist`` only when none is cached there,
    extracts the set's NRRD pairs and converts them (:func:`write_kits_pair`). A finished
    conversion is reused.

    Raises:
        InputError: an unknown set.
        ReadError: the download fails, or the cached file is damaged (delete it and rerun).
    """
    if which not in SCAN_SETS:
        raise InputError(f"unknown scan set {which!r}; one of {', '.join(SCAN_SETS)}")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache()
    name, scans = SCAN_SETS[which]
    root = cache / name
    cases = [root / f"case_{scan}" for scan in scans]
    if all((c / "imaging.nii.gz").is_file() and (c / "segmentation.nii.gz").is_file() for c in cases):
        return root
    cached = cache / "sdist" / SDIST_NAME
    sdist = cached if cached.is_file() else _download_sdist(cache / "sdist")
    with tempfile.TemporaryDirectory(dir=cache, prefix=".pyradiomics-") as tmp:
        try:
            with tarfile.open(sdist, "r:gz") as tar:
                for scan in scans:
                    for part in ("image", "label"):
                        member = tar.getmember(_MEMBER.format(scan, part))
                        src = tar.extractfile(member)
                        if src is None:
                            raise KeyError(member.name)
                        (Path(tmp) / f"{scan}_{part}.nrrd").write_bytes(src.read())
        except (tarfile.TarError, KeyError, OSError, EOFError) as exc:
            raise ReadError(f"{sdist}: cannot extract the scans ({exc}); delete the file and rerun") from None
        for scan, case in zip(scans, cases):
            write_kits_pair(Path(tmp) / f"{scan}_image.nrrd", Path(tmp) / f"{scan}_label.nrrd", case)
    return root
