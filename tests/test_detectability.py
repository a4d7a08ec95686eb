"""The reference observer of evaluation/detectability.py against cases with a known answer."""

import numpy as np
import pytest
from scipy import ndimage

from napari_miqsam.evaluation.detectability import (
    RING_MM, Visibility, expected_row_f1, lesion_visibility, search_recall,
)


def _organ_with_sphere(contrast: float, sigma: float = 10.0, radius: float = 3.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = (40, 64, 64)
    image = (60.0 + sigma * rng.standard_normal(shape)).astype(np.float32)  # white noise, 1 mm voxels
    labels = np.ones(shape, np.uint8)
    labels[:, :, :4] = 0  # a strip of non-organ
    zz, yy, xx = np.indices(shape)
    sphere = (zz - 20) ** 2 + (yy - 32) ** 2 + (xx - 32) ** 2 <= radius ** 2
    image[sphere] -= contrast
    labels[sphere] = 2
    return image, labels, sphere.astype(np.int32)


def test_d_prime_matches_white_noise_theory():
    image, labels, lesion = _organ_with_sphere(contrast=8.0)
    (v,) = lesion_visibility(image, labels, lesion, (1.0, 1.0, 1.0), placements=200)
    n_in = int(lesion.sum())
    # the ring's voxel count, as the module draws it (1.5-5 mm outside the sphere)
    zz, yy, xx = np.indices((40, 64, 64))
    r = np.sqrt((zz - 20) ** 2 + (yy - 32) ** 2 + (xx - 32) ** 2)
    inside = r <= 3.0
    d = ndimage.distance_transform_edt(~inside)
    n_ring = int(((d > RING_MM[0]) & (d < RING_MM[1])).sum())
    expected = 8.0 / (10.0 * np.sqrt(1 / n_in + 1 / n_ring))
    assert v.label == 1 and v.voxels == n_in and v.n_null == 200
    assert v.contrast == pytest.approx(8.0, abs=3.0)
    assert v.null_mean == pytest.approx(0.0, abs=1.0)
    assert v.d_prime == pytest.approx(expected, rel=0.3)


def test_no_contrast_is_not_visible_and_more_contrast_is():
    image, labels, lesion = _organ_with_sphere(contrast=0.0)
    (flat,) = lesion_visibility(image, labels, lesion, (1.0, 1.0, 1.0))
    image, labels, lesion = _organ_with_sphere(contrast=30.0)
    (dark,) = lesion_visibility(image, labels, lesion, (1.0, 1.0, 1.0))
    assert flat.d_prime < 3.0
    assert dark.d_prime > 10.0
    assert search_recall(flat) < 0.1 < 0.9 < search_recall(dark)


def test_no_room_for_a_null_is_nan_and_counts_as_found():
    image, labels, lesion = _organ_with_sphere(contrast=5.0, radius=18.0)  # fills the organ's depth
    (v,) = lesion_visibility(image, labels, lesion, (1.0, 1.0, 1.0))
    assert v.n_null < 30 and np.isnan(v.d_prime)
    assert search_recall(v) == 1.0


def test_search_recall_falls_with_places_to_look():
    v = Visibility(label=1, voxels=30, diameter_mm=4.0, contrast=5.0, null_mean=0.0, null_std=1.0,
                   n_null=200, places=100.0, d_prime=4.0)
    more = Visibility(**{**v.__dict__, "places": 10000.0})
    assert search_recall(more) < search_recall(v)
    assert search_recall(v, 0.5) > search_recall(v, 0.1)


def test_expected_row_f1():
    assert expected_row_f1([]) == 1.0
    assert expected_row_f1([0.0], 0.0) == 1.0  # the clicked lesion is always found
    assert expected_row_f1([1.0, 1.0, 1.0], 0.0) == 1.0
    assert expected_row_f1([0.0, 0.0], 0.0) == pytest.approx(2 / 3)  # one found, one missed
    # uniform over which lesion is clicked: clicking the invisible one leaves the visible found
    assert expected_row_f1([1.0, 0.0], 0.0) == pytest.approx(1.0 / 2 + (2 / 3) / 2)
    assert expected_row_f1([1.0, 1.0], 0.5) < 1.0


def test_shape_mismatch_is_an_error():
    image, labels, lesion = _organ_with_sphere(contrast=5.0)
    with pytest.raises(ValueError, match="shape mismatch"):
        lesion_visibility(image[:-1], labels, lesion, (1.0, 1.0, 1.0))
