"""The out-of-family validation phantoms (data/ood_phantom.py) and the ``ood:N:SEED`` data spec."""

import json

import numpy as np
import pytest
from scipy import ndimage

from napari_miqsam.data.ood_phantom import OOD_MODES, make_ood_phantom

SEEDS = range(6)  # both acquisition modes occur among these (checked below)


@pytest.fixture(scope="module")
def cases():
    return [make_ood_phantom(s) for s in SEEDS]


def _lesions(case):
    """26-connected components of the lesion labels and their count."""
    return ndimage.label(case.labels >= 2, np.ones((3, 3, 3), bool))


def test_same_seed_same_case(cases):
    again = make_ood_phantom(SEEDS[0])
    np.testing.assert_array_equal(again.image, cases[0].image)
    np.testing.assert_array_equal(again.labels, cases[0].labels)
    assert again.meta == cases[0].meta and again.spacing == cases[0].spacing
    assert cases[1].meta != cases[0].meta  # another seed, another patient


def test_both_acquisition_modes_and_field_of_view(cases):
    assert {c.meta["mode"] for c in cases} == set(OOD_MODES)
    for c in cases:
        assert c.spacing == OOD_MODES[c.meta["mode"]]
        fov = np.array(c.shape) * np.array(c.spacing)
        assert 100 - 2.5 <= fov[0] <= 140 + 2.5 and all(160 - 1 <= f <= 200 + 1 for f in fov[1:])
        np.testing.assert_allclose(np.abs(np.diag(c.affine))[:3], c.spacing[::-1])
        assert c.image.dtype == np.float32 and c.labels.dtype == np.uint8
        assert c.name == f"ood_{c.meta['seed']:05d}"


def test_label_conventions_and_separate_lesions(cases):
    for c in cases:
        assert set(np.unique(c.labels)) <= {0, 1, 2, 3} and (c.labels == 1).any()
        comps, n = _lesions(c)
        table = c.meta["lesions"]
        assert n == len(table)  # every lesion is its own component: none touch
        kinds = [row["class"] for row in table]
        assert 1 <= kinds.count("tumour") <= 8 and kinds.count("cyst") <= 6
        for k in range(1, n + 1):
            assert len(np.unique(c.labels[comps == k])) == 1  # one class per component
        assert all(2.5 <= row["diameter_mm"] <= 60 for row in table)


def test_lesions_lie_inside_the_organ(cases):
    shells = []
    for c in cases:
        comps, n = _lesions(c)
        for k, sl in enumerate(ndimage.find_objects(comps), start=1):
            sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
            m = comps[sl] == k
            shell = ndimage.binary_dilation(m) & ~m
            shells.append(float(np.mean(c.labels[sl][shell] == 1)))
    # surrounded by organ; a subcapsular lesion is clipped at the organ's surface
    assert min(shells) > 0.4 and np.median(shells) > 0.85


def test_intensities_follow_the_published_ranges(cases):
    darker, cysts = [], []
    for c in cases:
        organ = float(np.median(c.image[c.labels == 1]))
        assert 30 <= organ <= 140
        assert c.image[0, :3, :3].mean() < -900  # air in the corner
        assert (c.image > 300).any()  # bone
        for row in c.meta["lesions"]:
            if row["class"] == "tumour" and row["diameter_mm"] >= 10:
                darker.append(organ - row["mean_hu"])
            if row["class"] == "cyst" and row["diameter_mm"] >= 10:
                cysts.append(row["mean_hu"])
    assert darker and np.mean(darker) >= 15  # 15-50 HU darker, less partial volume at the edge
    assert cysts and all(-15 <= h <= 40 for h in cysts) and -2 <= np.median(cysts) <= 25


def test_ood_spec_resolves_to_lazy_cases(cases):
    from napari_miqsam.commands.evaluate import resolve_cases
    from napari_miqsam.data.datasets import OodPhantomRef

    refs = resolve_cases("ood:3:5")
    assert [r.seed for r in refs] == [5, 6, 7] and all(isinstance(r, OodPhantomRef) for r in refs)
    assert [r.name for r in refs] == ["ood_00005", "ood_00006", "ood_00007"]
    assert [r.seed for r in resolve_cases("ood:2")] == [0, 1]
    assert len(resolve_cases("ood:4:1", limit=2)) == 2
    case = resolve_cases("ood:1:0")[0].load()
    np.testing.assert_array_equal(case.labels, cases[0].labels)


def test_cli_evaluate_ood_baselines(tmp_path, capsys):
    from napari_miqsam.cli import main

    out = tmp_path / "ood.json"
    assert main(["evaluate", "ood:1:0", "--no-model", "--clicks", "1", "--quiet", "--json", str(out)]) == 0
    assert "| region_grow |" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["data"] == "ood:1:0" and res["n_cases"] == 1 and "region_grow" in res["baselines"]


def test_factors_scale_one_property_and_default_to_the_case_as_it_is(cases):
    """``factors`` (diagnostics only) scale a drawn value and leave every other draw where it was."""
    plain = make_ood_phantom(SEEDS[0], factors={})
    np.testing.assert_array_equal(plain.image, cases[0].image)
    quiet = make_ood_phantom(SEEDS[0], factors={"noise": 0.0})
    np.testing.assert_array_equal(quiet.labels, cases[0].labels)  # the same patient and lesions
    organ = cases[0].labels == 1
    assert quiet.image[organ].std() < cases[0].image[organ].std()
    with pytest.raises(ValueError):
        make_ood_phantom(SEEDS[0], factors={"blur": 0.0})
    with pytest.raises(ValueError):
        make_ood_phantom(SEEDS[0], factors={"tumour_edge": 0.0})
