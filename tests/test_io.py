"""NIfTI / TIFF reading and atomic writing."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_miqsam.data import io as io_mod
from napari_miqsam.data.io import Volume, read_volume, write_image, write_labels
from napari_miqsam.errors import ReadError, WriteError


def _nifti(path, shape_xyz=(12, 10, 6), affine=None, dtype=np.int16):
    rng = np.random.default_rng(0)
    arr = rng.integers(-100, 100, size=shape_xyz).astype(dtype)
    if affine is None:
        affine = np.array([[-0.7, 0, 0, 10.5], [0, -0.8, 0, -3.25], [0, 0, 2.5, 7.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return arr, affine


def test_nifti_read_is_zyx(tmp_path):
    arr, aff = _nifti(tmp_path / "a.nii.gz")
    v = read_volume(tmp_path / "a.nii.gz")
    assert isinstance(v, Volume) and v.format == "nifti"
    assert v.data.shape == (6, 10, 12)
    assert np.array_equal(v.data, arr.transpose(2, 1, 0))
    assert v.spacing == pytest.approx((2.5, 0.8, 0.7))
    assert v.data.flags.c_contiguous


def test_nifti_affine_round_trip_exact(tmp_path):
    _nifti(tmp_path / "a.nii.gz")
    v = read_volume(tmp_path / "a.nii.gz")
    labels = (v.data > 0).astype(np.uint16)
    out = write_labels(tmp_path / "lab.nii.gz", labels, like=v)
    back = nib.load(str(out))
    src = nib.load(str(tmp_path / "a.nii.gz"))
    assert np.array_equal(back.affine, src.affine)
    assert np.array_equal(back.header.get_sform(), src.header.get_sform())
    assert np.array_equal(back.header.get_qform(), src.header.get_qform())
    assert back.header.get_data_dtype() == np.uint8
    w = read_volume(out)
    assert np.array_equal(w.data, labels) and w.spacing == v.spacing


def test_slice_first_nifti_is_permuted_and_restored(tmp_path):
    # KiTS stores (z, y, x) with the slice axis first in nibabel order
    aff = np.array([[0, 0, -0.78, 0], [0, -0.78, 0, 0], [-3.0, 0, 0, 0], [0, 0, 0, 1.0]])
    arr, _ = _nifti(tmp_path / "k.nii.gz", shape_xyz=(5, 8, 9), affine=aff)
    v = read_volume(tmp_path / "k.nii.gz")
    assert v.data.shape == (5, 8, 9) and v.spacing == pytest.approx((3.0, 0.78, 0.78))
    write_labels(tmp_path / "kl.nii.gz", (v.data > 0), like=v)
    back = nib.load(str(tmp_path / "kl.nii.gz"))
    assert back.shape == arr.shape
    assert np.array_equal(np.asarray(back.dataobj), (arr > 0).astype(np.uint8))
    assert np.array_equal(back.affine, nib.load(str(tmp_path / "k.nii.gz")).affine)


def test_tiff_spacing_round_trip(tmp_path):
    labels = np.zeros((4, 5, 6), np.uint16)
    labels[1:3, 1:4, 2:5] = 300
    write_labels(tmp_path / "l.tif", labels, spacing=(2.5, 0.5, 0.25))
    v = read_volume(tmp_path / "l.tif")
    assert v.format == "tiff" and v.data.dtype == np.uint16
    assert np.array_equal(v.data, labels)
    assert v.spacing == pytest.approx((2.5, 0.5, 0.25), rel=1e-5)


def test_tiff_imagej_micron_and_no_metadata(tmp_path):
    data = np.zeros((3, 4, 5), np.uint8)
    tifffile.imwrite(tmp_path / "um.tif", data, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"spacing": 1.5, "unit": "um", "axes": "ZYX"})
    v = read_volume(tmp_path / "um.tif")
    assert v.spacing == pytest.approx((1.5e-3, 0.2e-3, 0.2e-3), rel=1e-5)
    tifffile.imwrite(tmp_path / "plain.tif", data)
    assert read_volume(tmp_path / "plain.tif").spacing == (1.0, 1.0, 1.0)


def test_write_image_float_and_int16(tmp_path):
    img = np.linspace(-1000, 1000, 4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    write_image(tmp_path / "f.nii.gz", img, spacing=(2.0, 0.5, 0.5))
    v = read_volume(tmp_path / "f.nii.gz")
    assert np.array_equal(v.data, img) and v.spacing == (2.0, 0.5, 0.5)
    write_image(tmp_path / "i.nii", img.astype(np.int16), spacing=(2.0, 0.5, 0.5))
    assert read_volume(tmp_path / "i.nii").data.dtype == np.int16


def test_missing_and_unsupported(tmp_path):
    with pytest.raises(ReadError, match="no such file"):
        read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "x.png").write_bytes(b"123")
    with pytest.raises(ReadError, match="unsupported"):
        read_volume(tmp_path / "x.png")


def test_corrupt_gzip_and_not_nifti(tmp_path):
    _nifti(tmp_path / "a.nii.gz", shape_xyz=(40, 40, 20))
    raw = (tmp_path / "a.nii.gz").read_bytes()
    (tmp_path / "trunc.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ReadError):
        read_volume(tmp_path / "trunc.nii.gz")
    (tmp_path / "garbage.nii.gz").write_bytes(b"not gzip at all" * 10)
    with pytest.raises(ReadError):
        read_volume(tmp_path / "garbage.nii.gz")
    with gzip.open(tmp_path / "text.nii.gz", "wb") as fh:
        fh.write(b"hello" * 100)
    with pytest.raises(ReadError):
        read_volume(tmp_path / "text.nii.gz")
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ReadError):
        read_volume(tmp_path / "bad.tif")


def test_not_3d(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.uint8), np.eye(4)), str(tmp_path / "2d.nii"))
    with pytest.raises(ReadError, match="3D"):
        read_volume(tmp_path / "2d.nii")
    # a 4D file with one frame is fine
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 1), np.uint8), np.eye(4)), str(tmp_path / "4d.nii"))
    assert read_volume(tmp_path / "4d.nii").data.shape == (6, 5, 4)


def test_bad_spacing_warns(tmp_path):
    img = nib.Nifti1Image(np.zeros((4, 5, 6), np.uint8), np.eye(4))
    img.header["pixdim"][1:4] = [0.0, -2.0, 1.5]
    nib.save(img, str(tmp_path / "s.nii"))
    with pytest.warns(UserWarning, match="spacing"):
        v = read_volume(tmp_path / "s.nii")
    assert v.spacing == (1.5, 2.0, 1.0)


def test_write_refuses_existing_and_missing_folder(tmp_path):
    lab = np.zeros((2, 3, 4), np.uint8)
    write_labels(tmp_path / "a.nii.gz", lab)
    with pytest.raises(WriteError, match="exists"):
        write_labels(tmp_path / "a.nii.gz", lab)
    write_labels(tmp_path / "a.nii.gz", lab + 1, overwrite=True)
    assert read_volume(tmp_path / "a.nii.gz").data.max() == 1
    with pytest.raises(WriteError, match="does not exist"):
        write_labels(tmp_path / "nope" / "a.nii.gz", lab)
    with pytest.raises(WriteError):
        write_labels(tmp_path / "a.png", lab)
    with pytest.raises(WriteError):
        write_labels(tmp_path / "b.nii.gz", np.zeros((2, 3), np.uint8))
    with pytest.raises(WriteError):
        write_labels(tmp_path / "c.nii.gz", np.full((2, 2, 2), 70000, np.int32))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores modes")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(WriteError, match="not writable"):
            write_labels(ro / "a.nii.gz", np.zeros((2, 2, 2), np.uint8))
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("name", ["a.nii.gz", "a.tif"])
def test_atomic_write_keeps_old_file(tmp_path, monkeypatch, name):
    target = tmp_path / name
    old = np.ones((2, 3, 4), np.uint8)
    write_labels(target, old)
    before = target.read_bytes()

    def broken(tmp, *args, **kwargs):
        with open(tmp, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(io_mod, "_write_nifti", broken)
    monkeypatch.setattr(io_mod, "_write_tiff", broken)
    with pytest.raises(WriteError, match="disk full"):
        write_labels(target, old * 2, overwrite=True)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary left behind
