"""Bad input gets a clear, documented error and loses nothing (library side; fuzzed with hypothesis)."""

import gzip

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_miqsam.data.io import read_volume
from napari_miqsam.errors import InputError, MiqsamError, ReadError
from napari_miqsam.inference.predictor import Predictor


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_config("tiny", seed=0)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64, bool])
def test_any_numeric_dtype(predictor, dtype):
    rng = np.random.default_rng(0)
    vol = (rng.random((10, 12, 14)) * 200).astype(dtype)
    predictor.set_image(vol, (1, 1, 1))
    lab, _ = predictor.predict([(5, 6, 7)]).labels(0.0)
    assert lab.shape == vol.shape


def test_constant_empty_nan_tiny_thin(predictor):
    for vol in (np.zeros((8, 8, 8)), np.full((8, 8, 8), 1e6, np.float32)):
        predictor.set_image(vol, (1, 1, 1))
        predictor.predict([(4, 4, 4)])  # no crash; whatever it finds is in the right grid
    vol = np.random.default_rng(1).normal(size=(9, 9, 9)).astype(np.float32)
    vol[0] = np.nan
    vol[1] = np.inf
    vol[2] = -np.inf
    predictor.set_image(vol, (1, 1, 1))
    assert predictor.predict([(5, 5, 5)]).labels(0.0)[0].shape == (9, 9, 9)
    predictor.set_image(np.ones((2, 5, 5)), (1, 1, 1))  # tiny and thin: padded to the model's size
    predictor.set_image(np.random.default_rng(2).normal(size=(3, 200, 180)), (5.0, 0.7, 0.7))  # few slices
    pred = predictor.predict([(1, 100, 90), (2, 10, 10), (0, 0, 0), (2, 199, 179)])  # many points, edges
    assert pred.labels(0.5)[0].shape == (3, 200, 180)


def test_multichannel_needs_a_channel(predictor):
    rgb = np.zeros((10, 12, 14, 3), np.uint8)
    with pytest.raises(InputError, match="channel"):
        predictor.set_image(rgb, (1, 1, 1))
    predictor.set_image(rgb, (1, 1, 1), channel=1)
    predictor.set_image(np.zeros((1, 10, 12, 14)), (1, 1, 1))  # a singleton axis is dropped
    with pytest.raises(InputError, match="channel 5"):
        predictor.set_image(rgb, (1, 1, 1), channel=5)


def test_bad_input_keeps_the_previous_cache(predictor):
    predictor.set_image(np.zeros((8, 8, 8)), (1, 1, 1))
    for bad in (np.zeros((8, 8)), np.array(["a"] * 8)):
        with pytest.raises(InputError):
            predictor.set_image(bad, (1, 1, 1))
    assert predictor.is_image_set
    with pytest.raises(InputError):
        predictor.set_image(np.zeros((8, 8, 8)), (1, -1, 1))
    assert predictor.is_image_set and predictor.grid.shape == (8, 8, 8)


shapes = st.one_of(
    st.tuples(st.integers(1, 12), st.integers(1, 12)),
    st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(1, 12)),
    st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6), st.integers(1, 4)),
)
dtypes = st.sampled_from([np.uint8, np.int16, np.float32, np.float64])
spacing_value = st.one_of(st.floats(0.2, 6.0), st.sampled_from([0.0, -1.0, float("nan"), float("inf")]))
point = st.tuples(st.one_of(st.floats(-3, 15), st.just(float("nan"))), st.floats(-3, 15), st.floats(-3, 15))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(shape=shapes, dtype=dtypes, spacing=st.tuples(spacing_value, spacing_value, spacing_value),
       pos=st.lists(point, min_size=0, max_size=4), neg=st.lists(point, max_size=2), seed=st.integers(0, 3))
def test_fuzz_predictor(predictor, shape, dtype, spacing, pos, neg, seed):
    vol = (np.random.default_rng(seed).normal(0, 100, shape)).astype(dtype)
    try:
        predictor.set_image(vol, spacing)
        pred = predictor.predict(pos, neg)
    except MiqsamError:
        return  # a documented, explained refusal
    lab, rows = pred.labels(0.5)
    assert lab.shape == predictor.grid.shape
    assert all(0.0 <= r["score"] <= 1.0 for r in rows)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=600), suffix=st.sampled_from([".nii", ".nii.gz", ".tif", ".tiff"]), gz=st.booleans())
def test_fuzz_readers(tmp_path, payload, suffix, gz):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(gzip.compress(payload) if gz else payload)
    try:
        vol = read_volume(path)
    except ReadError:
        return
    assert vol.data.ndim == 3
