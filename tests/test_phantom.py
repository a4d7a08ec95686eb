"""The synthetic CT phantom: content, reproducibility, speed-independent properties."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_miqsam.data.instances import instances_of
from napari_miqsam.data.phantom import (
    CYST, FOV_MM, SMALL_SHAPE, TUMOUR, Case, make_phantom, sample_spacing, write_phantoms,
)
from napari_miqsam.errors import InputError

# one default-size case shared by the tests of this module
@pytest.fixture(scope="module")
def case() -> Case:
    return make_phantom(3)


def test_default_case_geometry(case):
    assert isinstance(case, Case)
    assert case.image.dtype == np.float32 and case.labels.dtype == np.uint8
    assert case.image.shape == case.labels.shape
    sz, sy, sx = case.spacing
    assert 0.8 <= sz <= 5.0 and 0.6 <= sy <= 1.0 and sy == sx
    for n, s, f in zip(case.image.shape, case.spacing, FOV_MM):
        assert abs(n * s - f) <= s  # the field of view is ~120 x 180 x 180 mm
    assert case.affine.shape == (4, 4)
    assert np.allclose(np.abs(np.diag(case.affine)[:3]), case.spacing[::-1])


def test_reproducible():
    a = make_phantom(11, shape=SMALL_SHAPE)
    b = make_phantom(11, shape=SMALL_SHAPE)
    c = make_phantom(12, shape=SMALL_SHAPE)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert a.spacing == b.spacing
    assert not np.array_equal(a.image, c.image)


def test_same_seed_same_anatomy_at_other_spacing():
    a = make_phantom(5, spacing=(3.0, 1.0, 1.0))
    b = make_phantom(5, spacing=(3.0, 1.0, 1.0))
    assert a.meta["organ_hu"] == b.meta["organ_hu"]
    c = make_phantom(5, spacing=(2.0, 0.9, 0.9))
    assert c.meta["organ_hu"] == a.meta["organ_hu"]  # anatomy depends on the seed only


def test_classes_and_instances(case):
    values = set(np.unique(case.labels).tolist())
    assert values <= {0, 1, 2, 3} and 1 in values
    meta = case.meta
    for cls, key in ((TUMOUR, "n_tumours"), (CYST, "n_cysts")):
        _, n = instances_of(case.labels, cls)
        assert n == meta[key]
        assert 0 <= n <= 8
    # every lesion is its own 26-connected component, tumours and cysts included together
    _, n_all = instances_of(case.labels, [2, 3])
    assert n_all == meta["n_tumours"] + meta["n_cysts"] == len(meta["lesions"])
    # lesions lie inside the organ: every lesion voxel's neighbourhood is organ or lesion
    les = case.labels >= 2
    ring = ndimage.binary_dilation(les, np.ones((3, 3, 3), bool)) & ~les
    assert np.isin(case.labels[ring], [1, 2, 3]).mean() > 0.9


def test_hu_ranges(case):
    img = case.image
    assert img[0, 0, 0] < -900 and img[-1, -1, -1] < -900  # air in the corners
    assert np.percentile(img, 99.9) > 400  # bone
    organ = case.labels == 1
    assert 30 < float(np.median(img[organ])) < 145
    for les in case.meta["lesions"]:
        if les["class"] == CYST:
            assert 0.0 <= les["hu"] <= 20.0
        else:
            assert 15.0 <= les["contrast_hu"] <= 50.0
            assert les["hu"] == pytest.approx(case.meta["organ_hu"] - les["contrast_hu"])
        assert 2.0 <= les["diameter_mm"] <= 65.0
    assert 8.0 <= case.meta["noise_sigma"] <= 25.0
    assert 40.0 <= case.meta["organ_hu"] <= 130.0


def test_cyst_and_tumour_intensity_in_image():
    # measured in the image (noise averages out over the lesion core)
    c = make_phantom(21)
    inst, n = instances_of(c.labels, CYST)
    core = ndimage.binary_erosion(inst > 0, iterations=1)
    if core.sum() > 50:
        assert -12 < float(c.image[core].mean()) < 32
    t = ndimage.binary_erosion(c.labels == TUMOUR, iterations=1)
    if t.sum() > 50:
        assert float(c.image[t].mean()) < c.meta["organ_hu"]


def test_most_cases_have_both_classes():
    both = 0
    for seed in range(40):
        c = make_phantom(seed, shape=(30, 64, 64), spacing=(4.0, 2.8, 2.8))
        both += c.meta["n_tumours"] > 0 and c.meta["n_cysts"] > 0
    assert both >= 34  # >= 85 %


def test_small_shape_and_given_spacing():
    c = make_phantom(0, shape=SMALL_SHAPE)
    assert c.image.shape == SMALL_SHAPE
    assert (c.labels == 1).any()
    d = make_phantom(0, spacing=(5.0, 1.0, 1.0))
    assert d.image.shape == (24, 180, 180)
    e = make_phantom(0, shape=(16, 32, 32), spacing=(2.0, 2.0, 2.0))
    assert e.image.shape == (16, 32, 32) and e.spacing == (2.0, 2.0, 2.0)


def test_sample_spacing_distribution():
    rng = np.random.default_rng(0)
    zs = np.array([sample_spacing(rng)[0] for _ in range(400)])
    assert zs.min() >= 0.8 and zs.max() <= 5.0
    assert 0.5 < np.mean((zs >= 1.0) & (zs <= 3.0))


@pytest.mark.parametrize("bad", [(0, 64, 64), (32, 64), "abc"])
def test_bad_shape(bad):
    with pytest.raises(InputError):
        make_phantom(0, shape=bad)


def test_write_phantoms_kits_layout(tmp_path):
    from napari_miqsam.data.datasets import detect_format, list_cases

    folders = write_phantoms(tmp_path / "ph", 2, seed=7, shape=(16, 32, 32), progress=False)
    assert [f.name for f in folders] == ["case_00000", "case_00001"]
    assert detect_format(tmp_path / "ph") == "kits"
    refs = list_cases(tmp_path / "ph")
    loaded = refs[1].load()
    ref = make_phantom(8, shape=(16, 32, 32))
    assert np.array_equal(loaded.labels, ref.labels)
    assert np.allclose(loaded.image, np.round(ref.image), atol=0.5)
    assert np.allclose(loaded.spacing, ref.spacing, rtol=1e-6)


# --- instances and simulated clicks (shared by evaluation and training) ----------------------

def test_instances_of_26_connectivity_and_min_size():
    lab = np.zeros((5, 5, 5), np.uint8)
    lab[0, 0, 0] = 2
    lab[1, 1, 1] = 2  # diagonal neighbour: same 26-connected instance
    lab[4, 4, 4] = 3
    lab[3, 0, 4] = 2  # single voxel
    inst, n = instances_of(lab, 2)
    assert inst.dtype == np.int32 and n == 2 and inst[0, 0, 0] == inst[1, 1, 1]
    inst, n = instances_of(lab, 2, min_size=2)
    assert n == 1 and inst[3, 0, 4] == 0 and set(np.unique(inst)) == {0, 1}
    inst, n = instances_of(lab, [2, 3])
    assert n == 3


def test_simulate_click_modes():
    from napari_miqsam.data.prompts import CLICK_MODES, simulate_click

    m = np.zeros((20, 40, 40), bool)
    z, y, x = np.ogrid[:20, :40, :40]
    m[((z - 10) * 2.0) ** 2 + ((y - 20) * 1.0) ** 2 + ((x - 22) * 1.0) ** 2 <= 100] = True
    rng = np.random.default_rng(0)
    assert CLICK_MODES == ("center", "interior", "boundary")
    assert simulate_click(m, "center", rng, (2.0, 1.0, 1.0)) == (10, 20, 22)
    dist = ndimage.distance_transform_edt(np.pad(m, 1), sampling=(2.0, 1.0, 1.0))[1:-1, 1:-1, 1:-1]
    for _ in range(20):
        p = simulate_click(m, "interior", rng, (2.0, 1.0, 1.0))
        assert m[p] and dist[p] >= 0.4 * dist.max() - 1e-9
        b = simulate_click(m, "boundary", rng, (2.0, 1.0, 1.0))
        assert m[b] and dist[b] <= 2.0 + 1e-9
        assert all(isinstance(v, int) for v in b)
    one = np.zeros((4, 4, 4), bool)
    one[3, 0, 2] = True
    for mode in CLICK_MODES:
        assert simulate_click(one, mode, rng) == (3, 0, 2)
    with pytest.raises(InputError):
        simulate_click(np.zeros((3, 3, 3), bool), "center", rng)
    with pytest.raises(InputError):
        simulate_click(one, "random", rng)


def test_varied_tumours_are_also_round_sharp_and_homogeneous_and_the_default_is_untouched():
    """``look="varied"`` (training only) draws tumours that are round, sharp-edged or homogeneous too;
    the cysts keep their look and the default phantoms stay what the golden tests pin."""
    rows = [les for seed in range(6) for les in make_phantom(seed, shape=(48, 64, 64), look="varied").meta["lesions"]]
    tumours = [r for r in rows if r["class"] == TUMOUR]
    assert tumours and all(0.0 <= r["soft_mm"] <= 3.0 and 0.0 <= r["texture_hu"] <= 8.0 for r in tumours)
    assert any(r["round"] for r in tumours) and not all(r["round"] for r in tumours)
    assert min(r["soft_mm"] for r in tumours) < 1.0 and min(r["texture_hu"] for r in tumours) < 3.0  # new looks
    assert all(0.0 <= r["hu"] <= 20.0 for r in rows if r["class"] == CYST)
    plain = make_phantom(3, shape=(48, 64, 64))
    assert np.array_equal(plain.image, make_phantom(3, shape=(48, 64, 64), look="default").image)
    assert "round" not in str(plain.meta["lesions"])


def test_wide_phantoms_change_the_look_not_the_anatomy():
    """``look="wide"`` (training only, ``--data phantom-wide``) keeps the anatomy of ``varied`` (the
    lesions land elsewhere: their look draws shift the stream) and widens the look: tumour edges up
    to 5 mm and texture up to 12 HU, extra organ texture, noise 5-40 HU with an in-plane grain."""
    for seed in range(4):
        varied = make_phantom(seed, shape=(48, 64, 64), look="varied")
        wide = make_phantom(seed, shape=(48, 64, 64), look="wide")
        assert np.array_equal(varied.labels > 0, wide.labels > 0)
        assert not np.array_equal(varied.image, wide.image)
        assert 5.0 <= wide.meta["noise_sigma"] <= 40.0
    rows = [les for seed in range(8) for les in make_phantom(seed, shape=(48, 64, 64), look="wide").meta["lesions"]]
    tumours = [r for r in rows if r["class"] == TUMOUR]
    assert all(0.0 <= r["soft_mm"] <= 5.0 and 0.0 <= r["texture_hu"] <= 12.0 for r in tumours)
    assert max(r["texture_hu"] for r in tumours) > 8.0  # beyond what varied draws


def test_an_unknown_look_is_refused():
    with pytest.raises(InputError, match="look must be one of default, varied, wide"):
        make_phantom(0, shape=(16, 16, 16), look="wild")
