"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from napari_miqsam.evaluation.metrics import (
    dice, instance_scores, match_instances, nsd, wrong_class_rate,
)


def cube(shape=(12, 12, 12), lo=(3, 3, 3), hi=(7, 7, 7)):
    m = np.zeros(shape, bool)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return m


def test_dice_cases():
    a = cube()
    assert dice(a, a) == 1.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0
    b = cube(lo=(3, 3, 4), hi=(7, 7, 8))  # shifted by one voxel along x: overlap 4*4*3
    assert dice(a, b) == pytest.approx(2 * 48 / 128)
    with pytest.raises(ValueError):
        dice(a, a[:5])


def test_nsd_perfect_empty():
    a = cube()
    assert nsd(a, a, (1, 1, 1), 1.0) == 1.0
    z = np.zeros_like(a)
    assert nsd(z, z, (1, 1, 1), 1.0) == 1.0
    assert nsd(a, z, (1, 1, 1), 1.0) == 0.0
    assert nsd(z, a, (1, 1, 1), 1.0) == 0.0


def test_nsd_shift_isotropic():
    a = cube()
    b = cube(lo=(3, 3, 4), hi=(7, 7, 8))
    # every surface voxel of one is within 1 voxel of the other's surface
    assert nsd(a, b, (1, 1, 1), 1.0) == 1.0
    # at 0.5 mm only the shared surface voxels count: 4x4 cube surface = 56 voxels each;
    # a's surface voxels at x=3..6 ... hand count: voxels of a's surface with x in 4..6 that are
    # also b-surface. a surface: all voxels with any coordinate at 3 or 6 (56). b surface: voxels
    # of b with y/z at 3 or 6, or x at 4 or 7.
    sa = {(z, y, x) for z in range(3, 7) for y in range(3, 7) for x in range(3, 7)
          if 3 in (z, y, x) or 6 in (z, y, x)}
    sb = {(z, y, x) for z in range(3, 7) for y in range(3, 7) for x in range(4, 8)
          if z in (3, 6) or y in (3, 6) or x in (4, 7)}
    expected = (len(sa & sb) * 2) / (len(sa) + len(sb))
    assert nsd(a, b, (1, 1, 1), 0.5) == pytest.approx(expected)


def test_nsd_anisotropic():
    a = cube()
    b = cube(lo=(4, 3, 3), hi=(8, 7, 7))  # shifted by one slice
    # one slice = 3 mm: the faces 3 mm apart fail a 2 mm tolerance, pass a 3 mm one
    assert nsd(a, b, (3.0, 1.0, 1.0), 3.0) == 1.0
    assert nsd(a, b, (3.0, 1.0, 1.0), 2.0) < 1.0
    # the same shift in-plane at 0.5 mm passes 1 mm
    c = cube(lo=(3, 3, 4), hi=(7, 7, 8))
    assert nsd(a, c, (3.0, 0.5, 0.5), 1.0) == 1.0
    # far apart: 0
    far = cube(lo=(3, 3, 9), hi=(7, 7, 12))
    assert nsd(cube(lo=(3, 3, 0), hi=(7, 7, 2)), far, (1, 1, 1), 2.0) == 0.0


def test_nsd_touching_volume_border():
    a = np.ones((4, 4, 4), bool)
    assert nsd(a, a, (1, 1, 1), 1.0) == 1.0


def test_match_instances():
    gt = np.zeros((10, 10, 10), np.int32)
    gt[0:3, 0:3, 0:3] = 1
    gt[5:8, 5:8, 5:8] = 2
    gt[0:2, 7:9, 7:9] = 3
    pred = np.zeros_like(gt)
    pred[0:3, 0:3, 0:3] = 7  # perfect match of gt 1, arbitrary id
    pred[5:8, 5:8, 6:9] = 4  # IoU 18/36 = 0.5 with gt 2
    pred[9, 9, 9] = 9  # a false positive
    assert match_instances(pred, gt, 0.5) == (2, 1, 1)
    assert match_instances(pred, gt, 0.6) == (1, 2, 2)
    s = instance_scores(pred, gt)
    assert s["recall"] == pytest.approx(2 / 3) and s["precision"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)


def test_match_is_one_to_one():
    gt = np.zeros((4, 4, 8), np.int32)
    gt[..., :4] = 1
    pred = np.zeros_like(gt)
    pred[..., :4] = 1
    pred[0, 0, 5] = 2
    assert match_instances(pred, gt) == (1, 1, 0)
    merged = np.zeros_like(gt)
    merged[..., :] = 1
    gt2 = gt.copy()
    gt2[..., 4:] = 2
    # one prediction covering two gt instances (IoU exactly 0.5 with each): one match only
    assert match_instances(merged, gt2, 0.5) == (1, 0, 1)
    assert match_instances(merged, gt2, 0.51) == (0, 1, 2)


def test_instance_score_conventions():
    z = np.zeros((3, 3, 3), np.int32)
    one = z.copy()
    one[1, 1, 1] = 1
    assert instance_scores(z, z) == {"recall": 1.0, "precision": 1.0, "f1": 1.0,
                                     "tp": 0, "fp": 0, "fn": 0}
    s = instance_scores(z, one)
    assert (s["recall"], s["precision"], s["f1"]) == (0.0, 0.0, 0.0)
    s = instance_scores(one, z)
    assert (s["recall"], s["precision"], s["f1"]) == (0.0, 0.0, 0.0)


def test_wrong_class_rate():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[0] = 1
    labels[1] = 2
    labels[2] = 3
    pred = np.zeros_like(labels, bool)
    assert wrong_class_rate(pred, labels, 2) == 0.0
    pred[1:3] = True  # half on tumour, half on cyst
    assert wrong_class_rate(pred, labels, 2) == 0.5
    assert wrong_class_rate(pred, labels, 3) == 0.5
    pred[:] = False
    pred[0] = True  # organ only: not a wrong lesion class
    assert wrong_class_rate(pred, labels, 2) == 0.0
