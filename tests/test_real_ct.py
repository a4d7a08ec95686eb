"""The real-CT yardstick (``data.real_ct``, ``miqsam fetch-real-ct``) and ``evaluate --target``.

Nothing here uses the network: the MRC files and the wheel are synthetic, the download is
monkeypatched.
"""

from __future__ import annotations

import json
import subprocess
import zipfile

import numpy as np
import pytest

from napari_miqsam.data import real_ct
from napari_miqsam.data.datasets import list_cases
from napari_miqsam.data.instances import instances_of
from napari_miqsam.data.phantom import Case
from napari_miqsam.data.real_ct import ASSUMED_SPACING, fetch_real_ct, read_mrc
from napari_miqsam.errors import InputError, ReadError
from napari_miqsam.evaluation.compare import paired_rows
from napari_miqsam.evaluation.evaluate import evaluate, format_markdown_table, merge_results

_MODES = {np.dtype(np.float32): 2, np.dtype(np.uint16): 6}


def _mrc_bytes(data: np.ndarray, extended: bytes = b"", order: str = "<", mode: int | None = None) -> bytes:
    """An MRC2014 file of the (NZ, NY, NX) array ``data``, as mrcfile writes it."""
    nz, ny, nx = data.shape
    header = bytearray(1024)
    words = np.array([nx, ny, nz, _MODES[data.dtype] if mode is None else mode], f"{order}i4")
    header[0:16] = words.tobytes()
    header[64:76] = np.array([1, 2, 3], f"{order}i4").tobytes()  # MAPC, MAPR, MAPS
    header[92:96] = np.array([len(extended)], f"{order}i4").tobytes()  # NSYMBT
    header[208:212] = b"MAP "
    header[212:216] = b"\x44\x44\x00\x00" if order == "<" else b"\x11\x11\x00\x00"
    return bytes(header) + extended + data.astype(data.dtype.newbyteorder(order)).tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
@pytest.mark.parametrize("extended", [b"", b"\x07" * 80])
@pytest.mark.parametrize("order", ["<", ">"])
def test_read_mrc_round_trip(tmp_path, dtype, extended, order):
    data = (np.arange(3 * 4 * 5).reshape(3, 4, 5) * 7).astype(dtype)  # (NZ, NY, NX)
    path = tmp_path / "v.mrc"
    path.write_bytes(_mrc_bytes(data, extended, order))
    out = read_mrc(path)
    assert out.shape == (3, 4, 5) and out.dtype == dtype
    np.testing.assert_array_equal(out, data)


def test_read_mrc_refuses_bad_files(tmp_path):
    data = np.ones((3, 4, 5), np.float32)
    path = tmp_path / "v.mrc"
    path.write_bytes(_mrc_bytes(data)[:-7])
    with pytest.raises(ReadError, match="truncated"):
        read_mrc(path)
    path.write_bytes(_mrc_bytes(data)[:500])
    with pytest.raises(ReadError, match="truncated"):
        read_mrc(path)
    path.write_bytes(_mrc_bytes(data, mode=4))  # complex: not a volume this project reads
    with pytest.raises(ReadError, match="mode 4"):
        read_mrc(path)
    with pytest.raises(ReadError, match="cannot read"):
        read_mrc(tmp_path / "missing.mrc")


def _synthetic_case(shape=(12, 10, 8)):
    """Stored (a0, a1, a2) arrays: an image with a marker at high a2 (the head) and labels 0/1/2."""
    rng = np.random.default_rng(0)
    image = rng.normal(60, 20, shape).astype(np.float32)
    image[:, :, -1] = 1000.0  # the top slice in the project's (z, y, x): z = a2
    labels = np.zeros(shape, np.uint16)
    labels[2:10, 2:8, 1:7] = 1
    labels[3:5, 3:5, 2:4] = 2
    return image, labels


def _fake_download(image, labels, calls):
    def download(folder):
        calls.append(folder)
        folder.mkdir(parents=True, exist_ok=True)
        wheel = folder / "liver_ct_segmentation_package-1.6.0-py2.py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr("liver_ct_segmentation_package/data/img_117.mrc", _mrc_bytes(image))
            zf.writestr("liver_ct_segmentation_package/data/lab_117.mrc", _mrc_bytes(labels))
            zf.writestr("liver_ct_segmentation_package/__init__.py", "")
        return wheel

    return download


def test_fetch_converts_to_a_kits_case(tmp_path, monkeypatch):
    image, labels = _synthetic_case()
    calls = []
    monkeypatch.setattr(real_ct, "_download_wheel", _fake_download(image, labels, calls))
    root = fetch_real_ct(tmp_path / "cache")
    assert root == tmp_path / "cache" / "real_ct" and len(calls) == 1
    refs = list_cases(root)
    assert [r.name for r in refs] == ["case_00117"] and refs[0].format == "kits"
    case = refs[0].load()
    assert case.image.shape == (8, 10, 12)  # (z, y, x) = stored (a2, a1, a0)
    assert case.spacing == pytest.approx(ASSUMED_SPACING)
    np.testing.assert_array_equal(case.labels, labels.transpose(2, 1, 0))
    np.testing.assert_allclose(case.image, image.transpose(2, 1, 0))
    assert np.all(case.image[-1] == 1000.0)  # the head end is the last z slice
    assert set(np.unique(case.labels)) == {0, 1, 2}
    # a finished conversion is reused; a removed one is redone from the cached wheel
    assert fetch_real_ct(tmp_path / "cache") == root and len(calls) == 1
    for f in (root / "case_00117").iterdir():
        f.unlink()
    assert fetch_real_ct(tmp_path / "cache") == root and len(calls) == 1
    assert (root / "case_00117" / "segmentation.nii.gz").is_file()


def test_cli_fetch_real_ct_prints_the_folder(tmp_path, monkeypatch, capsys):
    from napari_miqsam.cli import main

    image, labels = _synthetic_case()
    monkeypatch.setattr(real_ct, "_download_wheel", _fake_download(image, labels, []))
    assert main(["fetch-real-ct", "--cache", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "real_ct")


def test_failed_download_and_damaged_wheel_are_read_errors(tmp_path, monkeypatch, capsys):
    from napari_miqsam.cli import main

    def no_network(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(real_ct.subprocess, "run", no_network)
    with pytest.raises(ReadError, match="No matching distribution"):
        fetch_real_ct(tmp_path / "a")
    assert not list((tmp_path / "a" / "wheel").iterdir())  # no partial download left behind
    wheel = tmp_path / "b" / "wheel" / "liver_ct_segmentation_package-1.6.0-py2.py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"not a zip")
    assert main(["fetch-real-ct", "--cache", str(tmp_path / "b")]) == 2
    assert "delete the file" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# evaluate --target


class _Prediction:
    def __init__(self, labels):
        self._labels = labels

    def labels(self, threshold, min_volume=0.0):
        return self._labels.astype(np.uint16), []


class _ClickedInstance:
    """A stand-in predictor: returns only the ground-truth instance under the click."""

    def __init__(self, labels):
        self.labels = labels

    def set_image(self, volume, spacing=(1.0, 1.0, 1.0)):
        pass

    def predict(self, positive, negative=()):
        inst, _ = instances_of(self.labels, int(self.labels[tuple(positive[0])]))
        return _Prediction(inst == inst[tuple(positive[0])])


@pytest.fixture(scope="module")
def sized_case():
    """Four tumours of 8 (under min_size 10), 27, 125 and 64 voxels, and one cyst."""
    labels = np.zeros((24, 24, 24), np.uint8)
    labels[1:23, 1:23, 1:23] = 1
    labels[2:4, 2:4, 2:4] = 2      # 8
    labels[2:5, 10:13, 10:13] = 2  # 27
    labels[10:15, 2:7, 2:7] = 2    # 125
    labels[16:20, 16:20, 16:20] = 2  # 64
    labels[16:19, 3:6, 16:19] = 3  # 27 (its only instance)
    image = np.where(labels == 1, 100.0, 0.0).astype(np.float32)
    image[labels >= 2] = 40.0
    return Case(image=image, labels=labels, spacing=(1.0, 1.0, 1.0), affine=np.eye(4), name="sized")


def test_target_picks_the_largest_median_and_smallest_instance(sized_case):
    model = _ClickedInstance(sized_case.labels)
    kw = dict(clicks=3, seed=0, progress=False, baselines=False, min_size=10)
    res = evaluate([sized_case], model, targets=["largest", "median", "smallest"], **kw)
    tumour = {r["target"]: r for r in res["cases"] if r["class"] == 2}
    assert {t: r["target_voxels"] for t, r in tumour.items()} == {"largest": 125, "median": 64, "smallest": 27}
    inst, _ = instances_of(sized_case.labels, 2, 10)
    for row in tumour.values():  # every click lies on the chosen instance
        clicked = {int(inst[tuple(p["point"])]) for p in row["points"]}
        assert len(clicked) == 1 and int((inst == clicked.pop()).sum()) == row["target_voxels"]
        assert row["methods"]["model"]["dice"] == pytest.approx(2 * row["target_voxels"] / (row["target_voxels"] + 224))
    assert res["n_rows"] == 6 and res["targets"] == ["largest", "median", "smallest"]
    assert set(res["by_target"]) == {"largest", "median", "smallest"}
    for target, part in res["by_target"].items():
        assert part["model"]["n_rows"] == 2
        assert part["by_class"]["2"]["model"]["dice"] == pytest.approx(tumour[target]["methods"]["model"]["dice"])
    assert res["model"]["dice"] == pytest.approx(np.mean([r["methods"]["model"]["dice"] for r in res["cases"]]))
    table = format_markdown_table(res)
    assert "Target median alone:" in table and "clicked instance: largest, median, smallest" in table
    # rows stay uniquely keyed: merging and pairing keep one row per (case, class, seed, target)
    merged = merge_results([res, res])
    assert merged["n_rows"] == 6 and merged["by_target"]["smallest"]["model"] == pytest.approx(
        res["by_target"]["smallest"]["model"])
    assert len(paired_rows(res, merged)) == 6


def test_random_target_rows_are_todays_rows(sized_case):
    """``random`` alongside other targets gives the rows of a plain run; old results (no
    ``target`` field) pair with new ``random`` ones."""
    kw = dict(clicks=2, seed=[0, 3], progress=False, baselines=False, min_size=10)
    plain = evaluate([sized_case], _ClickedInstance(sized_case.labels), **kw)
    both = evaluate([sized_case], _ClickedInstance(sized_case.labels), targets=["random", "smallest"], **kw)
    random_rows = [r for r in both["cases"] if r["target"] == "random"]
    assert [r["points"] for r in random_rows] == [r["points"] for r in plain["cases"]]
    assert both["by_target"]["random"]["model"] == pytest.approx(plain["model"])
    assert "by_target" not in plain and plain["targets"] == ["random"]
    old = json.loads(json.dumps(plain))
    for row in old["cases"]:
        del row["target"]
    assert len(paired_rows(old, plain)) == plain["n_rows"]
    with pytest.raises(InputError, match="different rows"):
        paired_rows(plain, both)
    with pytest.raises(InputError, match="targets"):
        evaluate([sized_case], None, targets=["largest", "largest"], progress=False)


def test_cli_evaluate_target(tmp_path, capsys):
    from napari_miqsam.cli import main

    out = tmp_path / "e.json"
    assert main(["evaluate", "phantom:1:40", "--no-model", "--clicks", "1", "--target", "largest,smallest",
                 "--quiet", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["targets"] == ["largest", "smallest"] and {r["target"] for r in res["cases"]} == {"largest", "smallest"}
    assert "Target smallest alone:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["evaluate", "phantom:1:40", "--target", "biggest"])
    assert "not a target" in capsys.readouterr().err
