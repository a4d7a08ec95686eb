"""Classical baselines on simple synthetic scenes and on a phantom."""

from __future__ import annotations

import numpy as np
import pytest

from napari_miqsam.data.instances import instances_of
from napari_miqsam.data.phantom import make_phantom
from napari_miqsam.data.prompts import simulate_click
from napari_miqsam.errors import InputError
from napari_miqsam.evaluation.baselines import region_grow, threshold_cc
from napari_miqsam.evaluation.metrics import dice


def scene(seed=0):
    """Organ at 100 HU with three 10 HU 'cysts' (radius 4 voxels) and noise sigma 5."""
    rng = np.random.default_rng(seed)
    img = np.full((24, 48, 48), -1000.0, np.float32)
    img[2:22, 4:44, 4:44] = 100.0
    z, y, x = np.ogrid[:24, :48, :48]
    truth = np.zeros(img.shape, np.int32)
    for i, (cz, cy, cx) in enumerate([(12, 14, 14), (12, 32, 30), (8, 30, 12)], start=1):
        ball = (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= 16
        img[ball] = 10.0
        truth[ball] = i
    img += rng.normal(0, 5, img.shape).astype(np.float32)
    return img, truth


def test_region_grow_finds_the_clicked_lesion():
    img, truth = scene()
    m = region_grow(img, (12, 14, 14), (1, 1, 1))
    assert m.dtype == bool and m[12, 14, 14]
    assert dice(m, truth == 1) > 0.85
    assert not (m & (truth > 1)).any()  # one instance only


def test_threshold_cc_finds_all_lesions():
    img, truth = scene()
    lab = threshold_cc(img, (12, 14, 14), (1, 1, 1))
    assert lab.dtype == np.int32
    assert lab.max() >= 3
    for i in (1, 2, 3):
        hit = np.unique(lab[truth == i])
        assert hit[hit > 0].size >= 1
    assert dice(lab > 0, truth > 0) > 0.75


def test_region_grow_leak_is_capped():
    img = np.zeros((20, 40, 40), np.float32)  # flat: everything is "the lesion"
    m = region_grow(img, (10, 20, 20), (1, 1, 1), max_diameter_mm=10)
    assert m[10, 20, 20]
    assert m.sum() < 20 * 40 * 40  # a ball around the click, not the whole volume


def test_bad_point():
    img, _ = scene()
    with pytest.raises(InputError):
        region_grow(img, (30, 0, 0), (1, 1, 1))
    with pytest.raises(InputError):
        threshold_cc(img[0], (0, 0), (1, 1))


def test_on_phantom_cyst_is_reasonable():
    c = make_phantom(1, spacing=(2.5, 1.0, 1.0))
    inst, n = instances_of(c.labels, 3)
    if n == 0:
        pytest.skip("no cyst in this phantom")
    sizes = np.bincount(inst.ravel())[1:]
    target = inst == int(sizes.argmax()) + 1
    p = simulate_click(target, "center", np.random.default_rng(0), c.spacing)
    m = region_grow(c.image, p, c.spacing)
    assert dice(m, target) > 0.6
