"""The other-organ / other-modality yardsticks (``data.pyradiomics_scans``, ``miqsam fetch-real-ct --scans``).

No network: the source distribution is a small tar.gz of synthetic NRRD files made here, and the
download is monkeypatched.
"""

from __future__ import annotations

import io
import tarfile
import urllib.request

import nrrd
import numpy as np
import pytest

from napari_miqsam.cli import main
from napari_miqsam.data import pyradiomics_scans as ps
from napari_miqsam.data.datasets import list_cases
from napari_miqsam.errors import ReadError


def _nrrd_bytes(tmp_path, data_zyx: np.ndarray, directions) -> bytes:
    path = tmp_path / "tmp.nrrd"
    header = {"space": "left-posterior-superior", "space directions": np.asarray(directions, float),
              "encoding": "gzip"}
    nrrd.write(str(path), data_zyx, header, index_order="C")
    return path.read_bytes()


def _scan(shape=(4, 6, 8)):
    image = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    label = np.zeros(shape, np.int16)
    label[1:3, 1:3, 5:7] = 1  # towards high y... and high x in the file's own order
    return image, label


def _sdist(tmp_path, directions) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for scan in ("lung1", "lung2", "brain1", "brain2"):
            image, label = _scan()
            for part, arr in (("image", image), ("label", label)):
                raw = _nrrd_bytes(tmp_path, arr, directions)
                info = tarfile.TarInfo(ps._MEMBER.format(scan, part))
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def _fake_download(payload: bytes, calls: list):
    def download(folder):
        calls.append(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ps.SDIST_NAME).write_bytes(payload)
        return folder / ps.SDIST_NAME
    return download


def test_read_nrrd_orients_and_spaces(tmp_path):
    image, _ = _scan()
    path = tmp_path / "v.nrrd"
    path.write_bytes(_nrrd_bytes(tmp_path, image, [[0.7, 0, 0], [0, -0.8, 0], [0, 0, 5.0]]))
    out, spacing = ps.read_nrrd(path)
    assert spacing == pytest.approx((5.0, 0.8, 0.7))
    np.testing.assert_array_equal(out, image[:, ::-1, :])  # y stepped anterior: flipped to run posterior
    path.write_bytes(_nrrd_bytes(tmp_path, image, [[0.7, 0.1, 0], [0, 0.8, 0], [0, 0, 5.0]]))
    with pytest.raises(ReadError, match="oblique"):
        ps.read_nrrd(path)
    path.write_bytes(_nrrd_bytes(tmp_path, image, np.diag([0.7, 0.8, 5.0]))[:-40])  # truncated
    with pytest.raises(ReadError, match="cannot read"):
        ps.read_nrrd(path)
    path.write_bytes(b"NRRD0004\nnonsense\n\n")
    with pytest.raises(ReadError, match="cannot read"):
        ps.read_nrrd(path)


def test_fetch_converts_once_and_reuses(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(ps, "_download_sdist", _fake_download(_sdist(tmp_path, np.diag([0.6, 0.6, 5.0])), calls))
    root = ps.fetch_pyradiomics_scans("lung-ct", tmp_path / "cache")
    assert root == tmp_path / "cache" / "real_lung_ct" and len(calls) == 1
    cases = list_cases(root)
    assert [c.name for c in cases] == ["case_lung1", "case_lung2"]
    case = cases[0].load()
    image, label = _scan()
    np.testing.assert_array_equal(case.image, image.astype(np.float32))
    assert set(np.unique(case.labels)) == {0, ps.FINDING_LABEL}
    np.testing.assert_array_equal(case.labels > 0, label > 0)
    assert case.spacing == pytest.approx((5.0, 0.6, 0.6))
    assert ps.fetch_pyradiomics_scans("lung-ct", tmp_path / "cache") == root and len(calls) == 1
    # the other set comes from the cached file, no second download
    assert ps.fetch_pyradiomics_scans("brain-mr", tmp_path / "cache").name == "real_brain_mr" and len(calls) == 1


def test_download_is_checked_and_never_half_kept(tmp_path, monkeypatch):
    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response(b"not the file"))
    with pytest.raises(ReadError, match="SHA-256"):
        ps.fetch_pyradiomics_scans("lung-ct", tmp_path)
    assert list((tmp_path / "sdist").iterdir()) == []


def test_cli_prints_the_folder_and_refuses_damage(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ps, "_download_sdist", _fake_download(_sdist(tmp_path, np.diag([0.6, 0.6, 5.0])), []))
    assert main(["fetch-real-ct", "--scans", "brain-mr", "--cache", str(tmp_path / "a")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "a" / "real_brain_mr")
    (tmp_path / "b" / "sdist").mkdir(parents=True)
    (tmp_path / "b" / "sdist" / ps.SDIST_NAME).write_bytes(b"damaged")
    assert main(["fetch-real-ct", "--scans", "lung-ct", "--cache", str(tmp_path / "b")]) == 2
    assert "delete the file" in capsys.readouterr().err
