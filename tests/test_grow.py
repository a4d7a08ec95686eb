"""Growing a too-small mask to the image's half-contrast edge (inference/grow.py)."""

import numpy as np
import pytest

from napari_miqsam.inference.grow import grow_to_edge


def _ball(shape, centre, radius):
    z, y, x = np.ogrid[tuple(slice(0, n) for n in shape)]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def _scene(contrast=-0.2, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    shape = (28, 28, 28)
    lesion = _ball(shape, (14, 14, 14), 5)
    image = 0.3 + contrast * lesion + noise * rng.standard_normal(shape)
    core = _ball(shape, (14, 14, 14), 2.5)
    logits = np.where(core, 2.0, -3.0).astype(np.float32)
    return image.astype(np.float32), logits, lesion, core


def test_a_core_inside_a_clear_lesion_grows_to_its_edge():
    image, logits, lesion, core = _scene()
    out = grow_to_edge(image, logits, 0.0, spacing=(1.0, 1.0, 1.0), reach_mm=4.0)
    mask = out > 0
    inter = (mask & lesion).sum()
    assert core.sum() < 0.2 * lesion.sum()
    assert inter / (mask | lesion).sum() > 0.85  # was ~0.12 before growing
    assert np.array_equal(out[core], logits[core])  # the core's logits are left alone
    # a brighter-than-surroundings lesion (a hyperdense one, or a cell in microscopy) grows the same way
    bright, logits_b, lesion_b, _ = _scene(contrast=+0.2)
    mask_b = grow_to_edge(bright, logits_b, 0.0, reach_mm=4.0) > 0
    assert (mask_b & lesion_b).sum() / (mask_b | lesion_b).sum() > 0.85


def test_no_growth_without_contrast_into_a_leak_or_onto_another_instance():
    image, logits, lesion, core = _scene(contrast=-0.002, noise=0.02)  # a tenth of the noise: under it even smoothed
    assert np.array_equal(grow_to_edge(image, logits, 0.0, reach_mm=4.0), logits)
    assert (grow_to_edge(image, logits, 0.0, reach_mm=4.0, min_contrast=0.0) > 0).sum() > 2 * (logits > 0).sum()
    # the dark region goes on past the reach all round: no edge within reach, so no growth
    image, logits, _, core = _scene()
    wide = np.where(_ball(image.shape, (14, 14, 14), 7.5), 0.1, 0.3).astype(np.float32)
    assert np.array_equal(grow_to_edge(wide, logits, 0.0, reach_mm=4.0), logits)
    assert (grow_to_edge(wide, logits, 0.0, reach_mm=4.0, leak=1.01) > 0).sum() > 2 * core.sum()
    # voxels of another instance are never added
    image, logits, lesion, core = _scene()
    other = lesion & (np.indices(image.shape)[2] > 16)
    out = grow_to_edge(image, logits, 0.0, other, reach_mm=4.0)
    assert not (out[other] > 0).any()
    assert ((out > 0) & lesion & ~other).sum() > 2 * core.sum()
    # fat / air far darker than the lesion, next to it, is not lesion-like (smoothed, its edge would be)
    image, logits, lesion, core = _scene()
    fat = np.indices(image.shape)[2] >= 18
    image[fat] = -1.0
    out = grow_to_edge(image, logits, 0.0, reach_mm=4.0)
    assert not (out[fat] > 0).any()
    assert ((out > 0) & ~_ball(image.shape, (14, 14, 14), 5.5)).sum() <= 3  # a noise voxel or two
    assert ((out > 0) & lesion).sum() > 3 * core.sum()


def test_grow_checks_shapes_and_keeps_an_empty_core_empty():
    image, logits, _, _ = _scene()
    with pytest.raises(ValueError, match="same shape"):
        grow_to_edge(image, logits[:-1])
    empty = np.full(image.shape, -3.0, np.float32)
    assert np.array_equal(grow_to_edge(image, empty), empty)


def test_the_predictor_grows_an_instance_from_its_own_box_with_the_image_around_it():
    """Predictor._grow reads the model-grid image around an instance's box (offsets, margins, the
    other instances' cells) and hands back logits for that box only."""
    import torch

    from napari_miqsam.inference.predictor import Predictor

    predictor = Predictor.from_config("tiny")
    predictor.set_model_spacing(1.0)
    shape = (40, 40, 40)
    lesion = _ball(shape, (21, 19, 20), 4)
    image = np.where(lesion, 0.1, 0.3).astype(np.float32)
    image += 0.01 * np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    predictor._model_vol = torch.from_numpy(image)
    ids = np.zeros((20, 20, 20), np.int32)
    ids[10, 9:11, 10] = 1  # instance 1: a core of two stride-2 cells inside the lesion
    ids[11:13, 7:13, 10:16] = 2  # instance 2 owns one side of the lesion
    lo, hi = (9, 8, 9), (12, 12, 12)  # instance 1's cells dilated by one
    vox = tuple(slice(2 * a, 2 * b) for a, b in zip(lo, hi))
    core = np.zeros(shape, bool)
    core[20:22, 18:22, 20:22] = True
    logits = np.where(core[vox], 2.0, -3.0).astype(np.float32)
    out = predictor._grow(logits, ids, 1, lo)
    assert out.shape == logits.shape
    grown = out > 0
    want = lesion[vox] & (ids.repeat(2, 0).repeat(2, 1).repeat(2, 2)[vox] != 2)
    assert grown.sum() > 3 * core.sum()
    assert (grown & ~want).sum() <= 2  # stays inside the lesion and off instance 2
    assert (grown & want).sum() / want.sum() > 0.8


def test_an_instance_drawn_empty_grows_from_its_seed_cells():
    image, logits, lesion, core = _scene()
    empty = np.full(image.shape, -3.0, np.float32)
    out = grow_to_edge(image, empty, 0.0, seed=core, reach_mm=4.0)
    mask = out > 0
    assert core.sum() and mask[core].all()
    assert (mask & lesion).sum() / (mask | lesion).sum() > 0.85
