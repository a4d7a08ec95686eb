"""The napari reader (NIfTI), writers (NIfTI, TIFF) and sample data of the plugin."""

from __future__ import annotations

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
pytest.importorskip("napari")

from napari_miqsam._reader import get_reader  # noqa: E402
from napari_miqsam._writer import write_labels_nifti, write_labels_tiff  # noqa: E402
from napari_miqsam.errors import ReadError, WriteError  # noqa: E402

SPACING = (2.5, 0.8, 0.7)  # (z, y, x) mm
SHAPE = (12, 20, 16)  # (z, y, x)


def oblique_affine() -> np.ndarray:
    """A NIfTI affine (nibabel order: x, y, z) with flips, an offset and a small rotation."""
    sz, sy, sx = SPACING
    c, s = np.cos(0.1), np.sin(0.1)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-sx, -sy, sz])
    affine[:3, 3] = (101.5, -37.25, 12.0)
    return affine


def write_nifti(path, zyx: np.ndarray, affine: np.ndarray) -> None:
    nib.Nifti1Image(zyx.transpose(2, 1, 0), affine).to_filename(str(path))


@pytest.fixture
def ct_and_seg(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(40, 200, SHAPE).astype(np.int16)
    image[:, :4] = -1000  # air: looks like CT
    seg = np.zeros(SHAPE, np.uint8)
    seg[3:6, 5:9, 4:8] = 2
    seg[8:10, 12:15, 9:12] = 3
    affine = oblique_affine()
    write_nifti(tmp_path / "case.nii.gz", image, affine)
    write_nifti(tmp_path / "case_seg.nii.gz", seg, affine)
    write_nifti(tmp_path / "case_prediction.nii", seg.astype(np.int32), affine)  # integer, few values
    return tmp_path, image, seg, affine


def read(path):
    reader = get_reader(str(path))
    assert callable(reader)
    return reader(str(path))


def test_reader_claims_only_nifti(tmp_path):
    assert get_reader(str(tmp_path / "a.nii")) is not None
    assert get_reader([str(tmp_path / "a.nii.gz"), str(tmp_path / "b.NII")]) is not None
    for name in ("a.tif", "a.png", "a.nii.zip"):
        assert get_reader(str(tmp_path / name)) is None
    assert get_reader([str(tmp_path / "a.nii"), str(tmp_path / "b.tif")]) is None


def test_nifti_opens_as_image_with_spacing_and_geometry(ct_and_seg):
    folder, image, _, affine = ct_and_seg
    [(data, kwargs, kind)] = read(folder / "case.nii.gz")
    assert kind == "image"
    np.testing.assert_array_equal(data, image)  # (z, y, x)
    np.testing.assert_allclose(kwargs["scale"], SPACING, rtol=1e-6)
    np.testing.assert_allclose(kwargs["metadata"]["affine"], affine)
    assert kwargs["name"] == "case"
    assert kwargs["contrast_limits"] == (-160.0, 240.0)


def test_segmentations_open_as_labels(ct_and_seg):
    folder, _, seg, _ = ct_and_seg
    for name in ("case_seg.nii.gz", "case_prediction.nii"):
        [(data, kwargs, kind)] = read(folder / name)
        assert kind == "labels", name
        np.testing.assert_array_equal(data, seg)
        np.testing.assert_allclose(kwargs["scale"], SPACING, rtol=1e-6)


def test_bad_nifti_raises_read_error(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ReadError):
        read(bad)


def test_labels_nifti_round_trip_keeps_data_and_affine(ct_and_seg, tmp_path):
    folder, _, seg, affine = ct_and_seg
    [(data, kwargs, _)] = read(folder / "case_seg.nii.gz")
    edited = np.array(data, copy=True)
    edited[0, 0, 0] = 5
    out = tmp_path / "out" / "edited.nii.gz"
    out.parent.mkdir()
    attributes = {"scale": kwargs["scale"], "metadata": kwargs["metadata"], "name": "edited"}
    assert write_labels_nifti(str(out), edited, attributes) == [str(out)]
    saved = nib.load(str(out))
    np.testing.assert_allclose(saved.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(saved.dataobj).transpose(2, 1, 0), edited)
    # and back through our reader
    [(again, again_kwargs, kind)] = read(out)
    assert kind == "labels"
    np.testing.assert_array_equal(again, edited)
    np.testing.assert_allclose(again_kwargs["metadata"]["affine"], affine, atol=1e-6)
    assert [p.name for p in out.parent.iterdir()] == ["edited.nii.gz"]  # no temporary file left


def test_labels_tiff_keeps_spacing(tmp_path):
    from napari_miqsam.data.io import read_volume

    labels = np.zeros(SHAPE, np.uint16)
    labels[2:5, 3:6, 4:7] = 300
    out = tmp_path / "labels.tif"
    write_labels_tiff(str(out), labels, {"scale": SPACING, "metadata": {}})
    volume = read_volume(out)
    np.testing.assert_array_equal(volume.data, labels)
    np.testing.assert_allclose(volume.spacing, SPACING, rtol=1e-4)


def test_writer_errors_are_write_errors(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    with pytest.raises(WriteError):
        write_labels_nifti(str(tmp_path / "missing" / "x.nii.gz"), labels, {"scale": SPACING, "metadata": {}})
    with pytest.raises(WriteError):
        write_labels_tiff(str(tmp_path / "flat.tif"), labels[0], {"scale": SPACING[1:], "metadata": {}})


def test_napari_open_and_save_round_trip(make_napari_viewer, ct_and_seg, tmp_path):
    folder, image, seg, affine = ct_and_seg
    viewer = make_napari_viewer()
    viewer.open([str(folder / "case.nii.gz"), str(folder / "case_seg.nii.gz")], plugin="napari-miqsam")
    ct, labels = viewer.layers["case"], viewer.layers["case_seg"]
    assert type(ct).__name__ == "Image" and type(labels).__name__ == "Labels"
    np.testing.assert_allclose(ct.scale, SPACING, rtol=1e-6)
    out = tmp_path / "saved_seg.nii.gz"
    labels.save(str(out), plugin="napari-miqsam")
    saved = nib.load(str(out))
    np.testing.assert_allclose(saved.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(saved.dataobj).transpose(2, 1, 0), seg)
    tif = tmp_path / "saved_seg.tif"
    labels.save(str(tif), plugin="napari-miqsam")
    assert tif.exists()


def test_sample_phantom_has_image_and_truth_in_geometry(make_napari_viewer, tmp_path):
    from napari_miqsam._sample_data import SAMPLE_SHAPE, SAMPLE_SPACING

    viewer = make_napari_viewer()
    viewer.open_sample("napari-miqsam", "phantom")
    image, truth = viewer.layers["phantom CT"], viewer.layers["phantom ground truth"]
    assert image.data.shape == truth.data.shape == SAMPLE_SHAPE
    np.testing.assert_allclose(image.scale, SAMPLE_SPACING)
    assert set(np.unique(truth.data)) <= {0, 1, 2, 3} and np.any(truth.data == 2)
    assert list(truth.features["class"]) == ["background", "organ", "tumour", "cyst"]
    out = tmp_path / "truth.nii.gz"
    write_labels_nifti(str(out), truth.data, {"scale": truth.scale, "metadata": truth.metadata})
    saved = nib.load(str(out))
    np.testing.assert_allclose(saved.affine, image.metadata["affine"])
    np.testing.assert_allclose(saved.header.get_zooms(), SAMPLE_SPACING[::-1])
