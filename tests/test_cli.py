"""The miqsam command line: predict round trip keeps the NIfTI geometry, refuses to overwrite."""

import csv

import nibabel as nib
import numpy as np
import pytest

from napari_miqsam.cli import main
from napari_miqsam.inference.predictor import Predictor
from napari_miqsam.model.weights import save_weights


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    p = Predictor.from_config("tiny", seed=0)
    return save_weights(p.model, tmp_path_factory.mktemp("w") / "tiny.safetensors", trained=False)


def nifti(path, shape=(30, 20, 24)):
    rng = np.random.default_rng(0)
    data = rng.normal(0, 50, shape[::-1]).astype(np.float32)  # nibabel order (x, y, z)
    affine = np.array([[-0.8, 0, 0, 120.5], [0, -0.9, 0, -33.0], [0, 0, 2.5, -400.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return affine


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("predict", "phantom", "evaluate", "compare", "train", "benchmark"):
        assert cmd in out


def test_predict_round_trip_keeps_affine(tmp_path, tiny_weights, capsys):
    src = tmp_path / "ct.nii.gz"
    affine = nifti(src)
    out = tmp_path / "labels.nii.gz"
    rc = main(["predict", str(src), "--point", "10", "8", "12", "--negative", "2", "2", "2", "--threshold", "0.0",
               "--weights", str(tiny_weights), "--device", "cpu", "-o", str(out)])
    assert rc == 0
    printed = capsys.readouterr()
    assert "UNTRAINED" in printed.err
    assert "; click read as " in printed.out  # the tiny weights have a kind head with two kinds
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, affine)
    assert img.shape == (24, 20, 30) and np.issubdtype(img.get_data_dtype(), np.integer)
    with open(tmp_path / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    labels = np.asarray(img.dataobj)
    assert len(rows) == len(np.unique(labels[labels > 0]))
    assert set(rows[0]) >= {"id", "score", "voxels", "volume_mm3", "centroid_z"} if rows else True
    # a second run refuses to overwrite, and --overwrite replaces
    rc = main(["predict", str(src), "--point", "10", "8", "12", "--weights", str(tiny_weights), "-o", str(out)])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    assert main(["predict", str(src), "--point", "10", "8", "12", "--weights", str(tiny_weights), "-o", str(out), "--overwrite"]) == 0
    # --kind: the named kind is what the prediction looked for
    assert main(["predict", str(src), "--point", "10", "8", "12", "--weights", str(tiny_weights), "-o", str(out),
                 "--overwrite", "--kind", "cyst"]) == 0
    assert "; click read as cyst (1.00)" in capsys.readouterr().out
    assert main(["predict", str(src), "--point", "10", "8", "12", "--weights", str(tiny_weights), "-o", str(out),
                 "--overwrite", "--kind", "1"]) == 0
    assert "; click read as tumour (1.00)" in capsys.readouterr().out


def test_predict_errors_are_one_sentence(tmp_path, tiny_weights, capsys):
    src = tmp_path / "ct.nii.gz"
    nifti(src)
    cases = [
        (["--point", "99", "1", "1"], "outside"),
        ([], "--point"),
        (["--point", "1", "1", "1", "--weights", str(tmp_path / "nope.safetensors")], "not found"),
        (["--point", "1", "1", "1", "--min-volume", "-5"], "--min-volume"),
        (["--point", "1", "1", "1", "--kind-gate", "1.5"], "--kind-gate"),
        (["--point", "1", "1", "1", "--kind", "polyp"], "--kind must be tumour, cyst or a number 1..2"),
        (["--point", "1", "1", "1", "--kind", "3"], "--kind"),
    ]
    for extra, msg in cases:
        args = ["predict", str(src), *extra, "-o", str(tmp_path / "o.nii.gz")]
        if "--weights" not in extra:
            args += ["--weights", str(tiny_weights)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
    assert main(["predict", str(tmp_path / "missing.nii.gz"), "--point", "1", "1", "1", "--weights", str(tiny_weights),
                 "-o", str(tmp_path / "o.nii.gz")]) == 2
    assert main(["predict", str(src), "--point", "1", "1", "1", "--weights", str(tiny_weights),
                 "-o", str(tmp_path / "no_such_dir" / "o.nii.gz")]) == 2
    assert not (tmp_path / "o.nii.gz").exists()


def test_kind_argument_names_two_kinds_and_numbers_any():
    from napari_miqsam.commands.predict import kind_index
    from napari_miqsam.errors import InputError

    names = ("tumour", "cyst")
    assert kind_index(None, 2, names) is None and kind_index(None, 0) is None
    assert kind_index("Tumour", 2, names) == 0 and kind_index("cyst", 2, names) == 1 and kind_index("2", 2, names) == 1
    assert kind_index("3", 3) == 2
    assert kind_index("cancer", 2, ("cancer", "label 3")) == 0  # the weights' own names
    with pytest.raises(InputError, match="tumour, cyst or a number 1..2"):
        kind_index("cancer", 2, names)
    with pytest.raises(InputError, match="must be a number 1..3"):
        kind_index("tumour", 3)  # weights without names: numbers only
    with pytest.raises(InputError, match="no lesion-kind head"):
        kind_index("1", 0)


def test_predict_modality_reaches_the_predictor(tmp_path, tiny_weights, monkeypatch, capsys):
    """--modality ct reads a crop without air through the HU window (auto would take it for non-CT);
    with auto, the summary says how the values were read."""
    seen = []
    real = Predictor.set_image

    def spy(self, volume, spacing=(1.0, 1.0, 1.0), **kw):
        seen.append(kw.get("modality"))
        return real(self, volume, spacing, **kw)

    monkeypatch.setattr(Predictor, "set_image", spy)
    src = tmp_path / "crop.nii.gz"
    nifti(src)
    said = []
    for modality in ("ct", "auto"):
        assert main(["predict", str(src), "--point", "10", "8", "12", "--weights", str(tiny_weights), "--device", "cpu",
                     "--modality", modality, "-o", str(tmp_path / f"{modality}.nii.gz")]) == 0
        said.append(capsys.readouterr().out)
    assert seen == ["ct", "auto"]
    assert "values read as" not in said[0] and "values read as not CT (percentiles)" in said[1]
    with pytest.raises(SystemExit):
        main(["predict", str(src), "--point", "10", "8", "12", "--modality", "mr", "-o", str(tmp_path / "x.nii.gz")])


def test_predict_says_when_the_click_is_below_the_ct_window(tmp_path, tiny_weights, capsys):
    src = tmp_path / "lung.nii.gz"
    data = np.full((24, 20, 16), -850.0, np.float32)  # nibabel order (x, y, z): lung everywhere ...
    data[:4] = -1000.0  # ... and air
    data[14:20, 8:14, 6:12] = 40.0  # a solid nodule at z 6..11, y 8..13, x 14..19
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(src))
    for point, below in ((("8", "10", "17"), False), (("8", "10", "8"), True)):
        assert main(["predict", str(src), "--point", *point, "--weights", str(tiny_weights), "--device", "cpu",
                     "-o", str(tmp_path / "out.nii.gz"), "--overwrite"]) == 0
        out = capsys.readouterr().out
        assert ("below the CT window (under -160 HU)" in out) == below, out
