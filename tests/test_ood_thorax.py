"""The out-of-family chest phantoms (data/ood_thorax.py) and the ``ood-thorax:N:SEED`` data spec."""

import numpy as np
import pytest
from scipy import ndimage

from napari_miqsam.data.ood_thorax import THORAX_CLASSES, THORAX_MODES, make_ood_thorax

SEEDS = (0, 1, 2, 3)  # both acquisition modes occur among these (checked below)


@pytest.fixture(scope="module")
def cases():
    return [make_ood_thorax(s) for s in SEEDS]


def test_same_seed_same_case(cases):
    again = make_ood_thorax(SEEDS[0])
    np.testing.assert_array_equal(again.image, cases[0].image)
    np.testing.assert_array_equal(again.labels, cases[0].labels)
    assert again.meta == cases[0].meta
    assert cases[1].meta != cases[0].meta


def test_modes_field_of_view_and_types(cases):
    assert {c.meta["mode"] for c in cases} == set(THORAX_MODES)
    for c in cases:
        assert c.spacing == THORAX_MODES[c.meta["mode"]]
        fov = np.array(c.shape) * np.array(c.spacing)
        assert 100 - 5 <= fov[0] <= 140 + 5 and all(200 - 1 <= f <= 240 + 1 for f in fov[1:])
        assert c.image.dtype == np.float32 and c.labels.dtype == np.uint8
        assert c.name == f"ood_thorax_{c.meta['seed']:05d}" and c.meta["validation_only"]


def test_labels_are_lungs_and_separate_nodules_of_two_kinds(cases):
    kinds = set()
    for c in cases:
        assert set(np.unique(c.labels)) <= {0, 1, 2, 3}
        comps, n = ndimage.label(c.labels >= 2, np.ones((3, 3, 3), bool))
        table = c.meta["lesions"]
        assert n == len(table) and any(row["label"] == 2 for row in table)  # one component each, a solid one always
        for k in range(1, n + 1):
            assert len(np.unique(c.labels[comps == k])) == 1
        for row in table:
            assert row["class"] == THORAX_CLASSES[row["label"]]
            kinds.add(row["label"])
    assert kinds == {2, 3}


def test_it_looks_like_a_chest(cases):
    """Aerated lungs; solid nodules at soft-tissue density, ground glass between; both far
    brighter than the lung around them, so they differ from each other by density."""
    solid, ggo = [], []
    for c in cases:
        lung = c.labels == 1
        assert lung.sum() * np.prod(c.spacing) > 200_000  # mm³: lungs, not a sliver
        assert np.median(c.image[lung]) < -700
        for row in c.meta["lesions"]:
            (solid if row["label"] == 2 else ggo).append(row["mean_hu"])
        assert (c.image < -950).any() and (c.image > 300).any()  # air outside, bone
    assert np.median(solid) > -250 and np.median(ggo) < -400  # partial volume pulls small ones down
    assert np.median(solid) - np.median(ggo) > 250


def test_evaluate_resolves_the_thorax_spec():
    from napari_miqsam.commands.evaluate import resolve_cases
    from napari_miqsam.data.datasets import ood_phantom_cases

    refs = resolve_cases("ood-thorax:2:7")
    assert [r.name for r in refs] == ["ood_thorax_00007", "ood_thorax_00008"] and {r.site for r in refs} == {"thorax"}
    assert resolve_cases("ood-thorax-halved:1:3")[0].contrast == "halved"
    assert resolve_cases("ood:1:3")[0].site == "abdomen"
    with pytest.raises(ValueError, match="unknown out-of-family site"):
        ood_phantom_cases(1, 0, site="pelvis")
