"""LiTS / KiTS / MSD readers on tiny files written in each layout."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_miqsam.data.datasets import (
    classes_of, detect_format, lesion_classes_in, list_cases, phantom_cases,
)
from napari_miqsam.errors import ReadError


def _pair(img_path, lab_path, seed=0, lesion=2):
    rng = np.random.default_rng(seed)
    img = rng.normal(50, 10, size=(8, 9, 5)).astype(np.float32)  # nibabel order (x, y, z)
    lab = np.zeros((8, 9, 5), np.uint8)
    lab[1:7, 1:8, 1:4] = 1
    lab[2:4, 2:4, 2:3] = lesion
    aff = np.diag([0.7, 0.7, 2.5, 1.0])
    img_path.parent.mkdir(parents=True, exist_ok=True)
    lab_path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(img, aff), str(img_path))
    nib.save(nib.Nifti1Image(lab, aff), str(lab_path))
    return img, lab


def test_lits_same_folder_and_subfolders(tmp_path):
    _pair(tmp_path / "batch1" / "volume-10.nii", tmp_path / "batch1" / "segmentation-10.nii")
    _pair(tmp_path / "batch1" / "volume-2.nii", tmp_path / "batch1" / "segmentation-2.nii")
    _pair(tmp_path / "vols" / "volume-3.nii.gz", tmp_path / "segs" / "segmentation-3.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)),
             str(tmp_path / "vols" / "volume-99.nii"))  # a test volume without labels
    assert detect_format(tmp_path) == "lits"
    with pytest.warns(UserWarning, match="without labels"):
        cases = list_cases(tmp_path)
    assert [c.name for c in cases] == ["volume-2", "volume-3", "volume-10"]
    case = cases[0].load()
    assert case.image.shape == (5, 9, 8) and case.labels.dtype == np.uint8
    assert case.spacing == pytest.approx((2.5, 0.7, 0.7))
    assert set(np.unique(case.labels)) == {0, 1, 2}
    assert classes_of("lits") == [2]


def test_kits_layout_prefers_aggregated(tmp_path):
    _pair(tmp_path / "case_00000" / "imaging.nii.gz", tmp_path / "case_00000" / "segmentation.nii.gz")
    _pair(tmp_path / "case_00001" / "imaging.nii.gz",
          tmp_path / "case_00001" / "aggregated_MAJ_seg.nii.gz", lesion=3)
    _pair(tmp_path / "case_00001" / "imaging.nii.gz",
          tmp_path / "case_00001" / "segmentation.nii.gz", lesion=2)
    assert detect_format(tmp_path) == "kits"
    cases = list_cases(tmp_path, "kits")
    assert [c.name for c in cases] == ["case_00000", "case_00001"]
    assert cases[1].label_path.name == "aggregated_MAJ_seg.nii.gz"
    assert 3 in np.unique(cases[1].load().labels)
    assert classes_of("kits") == [2, 3]


def test_msd_layout_with_channel_suffix_and_resource_forks(tmp_path):
    root = tmp_path / "Task03_Liver"
    _pair(root / "imagesTr" / "liver_0_0000.nii.gz", root / "labelsTr" / "liver_0.nii.gz")
    _pair(root / "imagesTr" / "liver_1.nii.gz", root / "labelsTr" / "liver_1.nii.gz", lesion=1)
    (root / "imagesTr" / "._liver_0.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    (root / "labelsTr" / "._liver_0.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    for r in (root, tmp_path):  # the task folder or its parent
        assert detect_format(r) == "msd"
        cases = list_cases(r)
        assert [c.name for c in cases] == ["liver_0", "liver_1"]
    c0 = cases[0].load()
    assert classes_of("msd", c0.labels) == [2]
    assert classes_of("msd", cases[1].load().labels) == [1]
    assert classes_of("msd") is None


def test_errors(tmp_path):
    with pytest.raises(ReadError):
        detect_format(tmp_path / "missing")
    with pytest.raises(ReadError, match="no known layout"):
        detect_format(tmp_path)
    with pytest.raises(ReadError):
        list_cases(tmp_path, "nonsense")
    _pair(tmp_path / "case_00000" / "imaging.nii.gz", tmp_path / "x" / "y.nii.gz")
    with pytest.warns(UserWarning):
        with pytest.raises(ReadError, match="no labelled case"):
            list_cases(tmp_path, "kits")


def test_shape_mismatch(tmp_path):
    _pair(tmp_path / "case_00000" / "imaging.nii.gz", tmp_path / "case_00000" / "segmentation.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.uint8), np.eye(4)),
             str(tmp_path / "case_00000" / "segmentation.nii.gz"))
    with pytest.raises(ReadError, match="different"):
        list_cases(tmp_path)[0].load()


def test_lesion_classes_in_and_phantom_refs():
    lab = np.zeros((3, 3, 3), np.uint8)
    assert lesion_classes_in(lab) == []
    lab[0, 0, 0] = 1
    assert lesion_classes_in(lab) == [1]
    lab[1, 1, 1] = 3
    assert lesion_classes_in(lab) == [3]
    refs = phantom_cases(2, 5, shape=(16, 32, 32))
    assert [r.seed for r in refs] == [5, 6]
    case = refs[1].load()
    assert case.name == "phantom_00006" and case.image.shape == (16, 32, 32)


def test_lesion_labels_of_a_whole_data_set(tmp_path):
    from napari_miqsam.data.datasets import dataset_lesion_classes, lesion_names

    assert dataset_lesion_classes("phantom") == [2, 3] and dataset_lesion_classes(tmp_path, "lits") == [2]
    root = tmp_path / "Task06_Lung"
    _pair(root / "imagesTr" / "lung_0.nii.gz", root / "labelsTr" / "lung_0.nii.gz", lesion=1)
    assert dataset_lesion_classes(root) is None  # no dataset.json: only the label volumes can tell
    (root / "dataset.json").write_text('{"labels": {"0": "background", "1": "Cancer"}}')  # MSD Task06 / Task10
    assert dataset_lesion_classes(root) == [1] and lesion_names(root) == {1: "cancer"}
    (root / "dataset.json").write_text('{"labels": {"background": 0, "cancer": 1}}')  # nnU-Net v2 form
    assert dataset_lesion_classes(tmp_path) == [1]
    (root / "dataset.json").write_text('{"labels": {"0": "background", "1": "liver", "2": "cancer"}}')  # Task03
    assert dataset_lesion_classes(root) == [2] and lesion_names(root) == {2: "cancer"}
    (root / "dataset.json").write_text('{"labels": {"0": "bg", "1": "edema", "2": "non-enhancing", "3": "enhancing"}}')
    assert dataset_lesion_classes(root) == [2, 3]


def test_lesion_labels_without_dataset_json_look_at_several_cases():
    from napari_miqsam.training.sources import lesion_labels

    liver_only, with_tumour, lung = (np.array([0, 1]), np.array([0, 1, 2]), np.array([0, 1]))
    cases = [liver_only, with_tumour]  # Task03 without dataset.json: the first case has no tumour
    assert lesion_labels("/nonexistent", "msd", load=lambda i: (None, cases[i], None, None), n_cases=2) == (2,)
    assert lesion_labels("/nonexistent", "msd", load=lambda i: (None, cases[i], None, None), n_cases=1) == (1,)
    assert lesion_labels("/nonexistent", "msd", load=lambda i: (None, lung, None, None), n_cases=1) == (1,)
    assert lesion_labels("phantom", kinds=1) == (2,)


def test_evaluate_scores_only_the_data_sets_lesion_labels(tmp_path, capsys):
    """An MSD Task03 case without a tumour shows only its liver (label 1); with the data set's
    dataset.json saying the lesion is 2, that case gives no row (not a row on the liver)."""
    import json

    from napari_miqsam.cli import main

    root = tmp_path / "Task03_Liver"
    _pair(root / "imagesTr" / "liver_0.nii.gz", root / "labelsTr" / "liver_0.nii.gz", lesion=2)
    _pair(root / "imagesTr" / "liver_1.nii.gz", root / "labelsTr" / "liver_1.nii.gz", lesion=1)  # liver only
    (root / "dataset.json").write_text('{"labels": {"0": "background", "1": "liver", "2": "cancer"}}')
    out = tmp_path / "e.json"
    assert main(["evaluate", str(root), "--no-model", "--clicks", "1", "--min-size", "1", "--quiet",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["cases"]
    assert [(r["case"], r["class"]) for r in rows] == [("liver_0", 2)]


def test_contrast_probes_rewrite_the_image_only():
    """phantom-mirrored / -halved and ood-...: the same phantoms, HU -> scale * HU + offset, read as CT."""
    from napari_miqsam.commands.evaluate import resolve_cases
    from napari_miqsam.data.datasets import CONTRAST_PROBES, ood_phantom_cases

    plain = phantom_cases(1, 5, shape=(16, 32, 32))[0].load()
    for name, (scale, offset) in CONTRAST_PROBES.items():
        ref = phantom_cases(1, 5, shape=(16, 32, 32), contrast=name)[0]
        case = ref.load()
        assert ref.name == case.name == f"phantom_00005_{name}"
        np.testing.assert_array_equal(case.labels, plain.labels)
        np.testing.assert_allclose(case.image, scale * plain.image + offset, atol=1e-3)
        assert case.meta["modality"] == "ct" and case.meta["contrast_probe"]["name"] == name
    refs = resolve_cases("phantom-halved:2:7")
    assert [r.seed for r in refs] == [7, 8] and {r.contrast for r in refs} == {"halved"}
    refs = resolve_cases("ood-mirrored:1:3")
    assert refs[0].name == "ood_00003_mirrored" and refs[0].contrast == "mirrored"
    assert resolve_cases("phantom:1:7")[0].contrast is None and "modality" not in plain.meta
    with pytest.raises(ValueError):
        phantom_cases(1, 0, contrast="inverted")
    with pytest.raises(ValueError):
        ood_phantom_cases(1, 0, contrast="inverted")
    with pytest.raises(ReadError):  # not a probe: read as a folder, which is not there
        resolve_cases("phantom-inverted:1:0")


def test_evaluate_reads_a_contrast_probe_as_ct():
    from napari_miqsam.evaluation.evaluate import evaluate
    from napari_miqsam.inference.predictor import Predictor

    class Spy:
        def __init__(self):
            self.inner, self.seen = Predictor.from_config("tiny"), []

        def set_image(self, image, spacing, **kw):
            self.seen.append(kw.get("modality"))
            self.inner.set_image(image, spacing=spacing, **kw)

        def predict(self, *a, **kw):
            return self.inner.predict(*a, **kw)

    spy = Spy()
    for contrast in ("mirrored", None):
        evaluate(phantom_cases(1, 40, shape=(16, 48, 48), contrast=contrast), spy, clicks=1, progress=False,
                 baselines=False)
    assert spy.seen == ["ct", None]
