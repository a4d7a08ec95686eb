"""The randomized training phantom (SynthSeg principle): labels, kinds, geometry, acquisition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from napari_miqsam.data.phantom import Case, affine_from_spacing
from napari_miqsam.data.randomized import (
    FOV_YX_MM,
    FOV_Z_MM,
    INPLANE_MM,
    MAX_KINDS,
    MAX_LESIONS,
    SLICE_MM,
    MODEL_WINDOW_HU,
    ROSE_K,
    VISIBLE_HU,
    _drop_unseen_lesions,
    kind_differences,
    lesion_contrast,
    make_randomized_phantom,
    sample_randomized_spacing,
)
from napari_miqsam.errors import InputError

SEEDS = range(8)  # default-size cases; among them K takes every value 1..4, and 1 and 6 are aerated
FULL = np.ones((3, 3, 3), bool)


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return [make_randomized_phantom(s) for s in SEEDS]


def test_types_and_geometry(cases):
    for case in cases:
        assert case.image.dtype == np.float32 and case.labels.dtype == np.uint8
        assert case.image.shape == case.labels.shape
        assert np.allclose(case.affine, affine_from_spacing(case.spacing, case.shape))
        assert -1024.0 <= float(case.image.min()) and float(case.image.max()) <= 3000.0
        assert case.meta["generator"] == "napari_miqsam.data.randomized"


def test_deterministic():
    a, b, c = make_randomized_phantom(5), make_randomized_phantom(5), make_randomized_phantom(6)
    assert a.spacing == b.spacing and a.shape == b.shape
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert a.meta["kinds"] == b.meta["kinds"]
    assert a.shape != c.shape or not np.array_equal(a.image, c.image)


def test_kinds_and_label_values(cases):
    seen = set()
    for case in cases:
        k = case.meta["n_kinds"]
        seen.add(k)
        assert 1 <= k <= MAX_KINDS and len(case.meta["kinds"]) == k
        values = set(np.unique(case.labels).tolist())
        assert values - {0, 1} == set(range(2, 2 + k))  # every kind has a lesion, labels 2..1+K
        assert 1 in values  # the host organs
        assert [kd["label"] for kd in case.meta["kinds"]] == list(range(2, 2 + k))
    assert seen == set(range(1, MAX_KINDS + 1))


def test_each_lesion_is_its_own_component(cases):
    for case in cases:
        lesions = case.meta["lesions"]
        assert 1 <= len(lesions) <= MAX_LESIONS
        # lesions of different kinds do not touch either: the union has one component per lesion
        _, n_all = ndimage.label(case.labels >= 2, structure=FULL)
        assert n_all == len(lesions)
        for kd in case.meta["kinds"]:
            _, n = ndimage.label(case.labels == kd["label"], structure=FULL)
            assert n == kd["n_placed"] == sum(1 for les in lesions if les["label"] == kd["label"])
            assert 1 <= n <= 8


def test_lesions_lie_in_the_hosts(cases):
    les_vox = host_vox = 0.0
    shell_host = shell_all = 0
    for case in cases:
        for les in case.meta["lesions"]:
            les_vox += les["n_voxels"]
            host_vox += les["n_voxels"] * les["host_fraction"]
        # independently of the meta: the voxels around the lesions are mostly host (or lesion)
        lesion = case.labels >= 2
        shell = ndimage.binary_dilation(lesion, FULL) & ~lesion
        shell_all += int(shell.sum())
        shell_host += int((case.labels[shell] == 1).sum())
    assert host_vox / les_vox >= 0.8
    assert shell_host / shell_all >= 0.8


def test_kinds_within_a_volume_differ_by_the_rule(cases):
    n_pairs = 0
    for case in cases:
        kinds = case.meta["kinds"]
        for i, a in enumerate(kinds):
            for b in kinds[i + 1:]:
                n_pairs += 1
                assert kind_differences(a, b), (case.name, a, b)
                # the rule spelled out on the raw parameters
                contrast = abs(a["delta_hu"] - b["delta_hu"]) >= 20.0
                tex = sorted((a["texture_hu"], b["texture_hu"]))
                texture = tex[0] <= 4.0 and tex[1] >= 12.0
                rim = (a["rim"] is None) != (b["rim"] is None)
                (alo, ahi), (blo, bhi) = a["size_range_mm"], b["size_range_mm"]
                size = ahi * 1.2 <= blo or bhi * 1.2 <= alo
                assert contrast or texture or rim or size
    assert n_pairs > 0


def test_kind_parameters_in_range(cases):
    for case in cases:
        for kd in case.meta["kinds"]:
            if kd.get("aerated"):  # soft tissue or ground glass in a lung-like host: test_aerated_hosts
                assert 250.0 <= kd["delta_hu"] <= 1100.0
            elif kd["rim"] is None:
                assert 10.0 <= abs(kd["delta_hu"]) <= 120.0
            else:
                assert abs(kd["delta_hu"]) <= 120.0 and 1.0 <= kd["rim"]["thickness_mm"] <= 3.0
            assert 0.0 <= kd["texture_hu"] <= 30.0 and 0.0 <= kd["edge_sigma_mm"] <= 2.5
            lo, hi = kd["size_range_mm"]
            assert 3.0 <= lo < hi <= 60.0
            for les in case.meta["lesions"]:
                if les["label"] == kd["label"]:
                    assert lo * 0.999 <= les["nominal_diameter_mm"] <= hi * 1.001


def test_spacing_and_field_of_view_ranges(cases):
    rng = np.random.default_rng(0)
    for _ in range(500):
        sz, sy, sx = sample_randomized_spacing(rng)
        assert SLICE_MM[0] <= sz <= SLICE_MM[1] and INPLANE_MM[0] <= sy <= INPLANE_MM[1] and sy == sx
    for case in cases:
        sz, sy, sx = case.spacing
        assert SLICE_MM[0] <= sz <= SLICE_MM[1] and INPLANE_MM[0] <= sy <= INPLANE_MM[1]
        extent = [n * s for n, s in zip(case.shape, case.spacing)]
        assert FOV_Z_MM[0] - sz <= extent[0] <= FOV_Z_MM[1] + sz
        for e, s in zip(extent[1:], case.spacing[1:]):
            assert FOV_YX_MM[0] - s <= e <= FOV_YX_MM[1] + s
        acq = case.meta["acquisition"]
        assert 3.0 <= acq["noise_sigma_hu"] <= 30.0 and abs(acq["offset_hu"]) <= 30.0
        assert acq["bias_amplitude"] <= 0.1


@pytest.mark.parametrize("shape, spacing", [((24, 48, 48), (2.0, 1.0, 1.0)), ((20, 40, 36), None),
                                            (None, (5.0, 1.5, 1.5)), (None, (0.6, 0.5, 0.5))])
def test_given_shape_and_spacing_are_honoured(shape, spacing):
    case = make_randomized_phantom(8, shape=shape, spacing=spacing, name="given")
    assert case.name == "given"
    if shape is not None:
        assert case.shape == shape
    if spacing is not None:
        assert case.spacing == spacing
    k = case.meta["n_kinds"]
    assert set(np.unique(case.labels).tolist()) - {0, 1} == set(range(2, 2 + k))


def test_bad_arguments_raise_input_error():
    with pytest.raises(InputError):
        make_randomized_phantom(0, shape=(2, 32, 32), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(InputError):
        make_randomized_phantom(0, spacing=(1.0, -1.0, 1.0))


def test_feeds_the_training_pipeline(cases):
    from napari_miqsam.model.config import get_config
    from napari_miqsam.training.sampling import prepare_case

    cfg = get_config("cpu", spacing=(1.3, 1.3, 1.3))
    case = cases[0]
    prepared = prepare_case(case.image, case.labels, case.spacing, cfg, case.name, lesion_classes=(2, 3, 4, 5))
    assert all(70 <= n <= 130 for n in prepared.image.shape)  # ~90-165 mm at 1.3 mm
    kinds = sorted(set(prepared.instance_class[1:].tolist()))
    assert kinds == list(range(2, 2 + case.meta["n_kinds"]))
    assert len(prepared.instance_class) - 1 == len(case.meta["lesions"])
    assert math.isclose(float(prepared.image.max()), 1.0, abs_tol=0.5)


def test_aerated_hosts(cases):
    """About a fifth of the volumes are lung-like: dark hosts, soft-tissue vessels and lesions; the
    others are exactly what the generator made before the option existed (its rng streams)."""
    aerated = [c for c in cases if c.meta["aerated"]]
    assert 1 <= len(aerated) < len(cases)
    for case in aerated:
        host = case.labels == 1
        lesion = case.labels >= 2
        assert all(-920.0 <= o["base_hu"] <= -700.0 for o in case.meta["organs"])
        assert all(kd["aerated"] for kd in case.meta["kinds"])
        spread = np.ptp([o["base_hu"] for o in case.meta["organs"]])  # kinds are drawn on the mean host
        for les in case.meta["lesions"]:  # soft tissue, as painted (ground glass would be below the window)
            assert -80.0 - spread <= les["hu"] <= 90.0 + spread
        # as acquired: the host reads as lung, its lesions hundreds of HU brighter
        assert np.median(case.image[host]) < -500.0
        assert np.median(case.image[lesion]) - np.median(case.image[host]) > 250.0
    for case in cases:
        if not case.meta["aerated"]:
            assert all(-20.0 <= o["base_hu"] <= 180.0 for o in case.meta["organs"])
            assert not any(kd.get("aerated") for kd in case.meta["kinds"])


def test_model_window_is_the_predictors():
    from napari_miqsam.inference.preprocess import normalise_intensity

    lo, hi = MODEL_WINDOW_HU
    ramp = np.linspace(-1000.0, 1000.0, 2001, dtype=np.float32).reshape(1, 1, -1).repeat(2, 0).repeat(2, 1)
    out = normalise_intensity(ramp, modality="ct")[0, 0]
    assert np.isclose(out[int(lo) + 1000], -1.0) and out[int(lo) + 1001] > -1.0
    assert np.isclose(out[int(hi) + 1000], 1.0) and out[int(hi) + 999] < 1.0


def _ball(shape, centre, radius):
    zz, yy, xx = np.indices(shape)
    return (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius ** 2


def test_lesion_contrast_reads_core_and_rim():
    shape = (24, 24, 24)
    lesion = _ball(shape, (12, 12, 12), 5)
    none = np.zeros(shape, bool)
    flat = np.full(shape, 50.0, np.float32)
    assert lesion_contrast(flat, lesion, none, (1, 1, 1)) == 0.0
    dark = flat.copy()
    dark[lesion] -= 30.0
    assert lesion_contrast(dark, lesion, none, (1, 1, 1)) == pytest.approx(30.0)
    rim = flat.copy()  # iso-dense inside, a bright rim: seen by its rim
    rim[lesion & ~ndimage.binary_erosion(lesion)] += 40.0
    assert lesion_contrast(rim, lesion, none, (1, 1, 1)) == pytest.approx(40.0)


def test_unseen_lesions_get_back_what_they_were_painted_over():
    """A lesion below the window's floor (ground glass in lung) or too faint for the noise is
    unlabelled; a clear one stays, with its contrast in the table."""
    shape = (40, 40, 40)
    clear, glass, faint = _ball(shape, (10, 10, 10), 4), _ball(shape, (28, 28, 28), 4), _ball(shape, (10, 28, 28), 2)
    img = np.full(shape, 40.0, np.float32)
    img[:, :, :] = np.where(np.indices(shape)[0] >= 20, -850.0, 40.0)  # lung below, soft tissue above
    img[clear] = 90.0
    img[glass] = -500.0  # brighter than the lung by 350 HU, but both below -160
    img[faint] = 46.0
    labels = np.ones(shape, np.uint8)
    under = labels.copy()
    table = []
    for m, lab in ((clear, 2), (glass, 3), (faint, 4)):
        labels[m] = lab
        table.append({"_voxel": tuple(int(v) for v in np.argwhere(m)[0]), "label": lab})
    kept, unseen = _drop_unseen_lesions(img.copy(), labels, under, table, (0.4, 0.5, 0.5), noise_sigma=10.0)
    assert unseen == 2 and [les["label"] for les in kept] == [2]
    assert kept[0]["contrast_hu"] >= max(VISIBLE_HU, ROSE_K * 10.0 / np.sqrt(clear.sum()))
    assert set(np.unique(labels).tolist()) == {1, 2}
    assert (labels[glass] == 1).all() and (labels[faint] == 1).all() and (labels[clear] == 2).all()


def test_every_labelled_lesion_is_visible(cases):
    for case in cases:
        assert case.meta["unseen_lesions"] >= 0
        for les in case.meta["lesions"]:
            assert les["contrast_hu"] is None or les["contrast_hu"] >= VISIBLE_HU
            assert "_voxel" not in les
