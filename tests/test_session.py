"""The widget's session without Qt or a display: predictor cache, newest prompt wins, thresholding,
deletions and undo states. A stand-in predictor makes the runs instant; one test runs the real tiny
Predictor through the same path the widget's worker thread takes."""

from __future__ import annotations

import math
import subprocess
import sys

from dataclasses import replace

import numpy as np
import pytest

from napari_miqsam._widget._session import (
    DROPPED, FAILED, SHOWN, STALE, Session, Settings, error_message, label_counts, unsupported_volume,
)
from napari_miqsam.errors import CancelledError, OutOfMemoryError, WeightsError
from napari_miqsam.inference.options import PredictOptions
from napari_miqsam.inference.prediction import Instance, Prediction

SHAPE = (24, 16, 16)
SPACING = (2.0, 1.0, 1.0)  # 2 mm³ voxels
BOX = np.ones((4, 4, 4), bool)  # 128 mm³
DOT = np.ones((2, 2, 2), bool)  # 16 mm³


def three_instances(positive=((21, 6, 6),)) -> Prediction:
    """Scores 0.9 / 0.8 / 0.7: a box (id 1), a dot (id 2), and a clicked dot (id 3)."""
    return Prediction(SHAPE, SPACING, [
        Instance(0.9, (slice(0, 4),) * 3, BOX), Instance(0.8, (slice(10, 12),) * 3, DOT),
        Instance(0.7, (slice(20, 22), slice(5, 7), slice(5, 7)), DOT)], positive=np.array(positive, float))


class StandIn:
    """A predictor with the public shape of ``Predictor``: set_image, then predict -> Prediction."""

    def __init__(self, trained: bool = True) -> None:
        self.trained = trained
        self.volumes: list = []

    def set_image(self, volume, spacing=(1.0, 1.0, 1.0), **_) -> None:
        self.volumes.append(volume)

    def predict(self, positive, negative=(), **_) -> Prediction:
        return three_instances(positive)


class Factory:
    """``(weights, device) -> StandIn``, recording what it made (or raising ``error``)."""

    def __init__(self, trained: bool = True, error: BaseException | None = None) -> None:
        self.made: list[StandIn] = []
        self.trained, self.error = trained, error

    def __call__(self, weights, device):
        if self.error is not None:
            raise self.error
        self.made.append(StandIn(self.trained))
        return self.made[-1]


class Image:
    """Any weak-referenceable object stands for an image layer."""


def run(session: Session, image, volume, positive=((21.0, 6.0, 6.0),), **kw):
    """One request run to the end on this thread, as the widget's worker would."""
    assert session.request()
    job = session.start(image, volume, SPACING, positive, **kw)
    return job, session.finish(session.execute(job), image, volume)


@pytest.fixture
def session() -> Session:
    return Session(Factory())


# ------------------------------------------------------------------ predictor cache
def test_one_predictor_per_image_embedded_once_per_data_version(session):
    image, other, volume = Image(), Image(), np.zeros(SHAPE, np.float32)
    job, done = run(session, image, volume)
    assert job.embed and job.predictor is None and done.status == SHOWN
    predictor = session.predictor(image)
    assert predictor is session.predictor_factory.made[0] and predictor.volumes == [volume]
    job, done = run(session, image, volume)
    assert not job.embed and job.predictor is predictor and predictor.volumes == [volume]
    session.image_changed(image)  # the layer's data was replaced
    assert session.needs_embedding(image)
    job, _ = run(session, image, volume)
    assert job.embed and job.predictor is predictor and len(predictor.volumes) == 2
    assert not session.needs_embedding(image)
    run(session, other, volume)
    assert session.predictor(other) is not predictor and session.predictor(image) is predictor
    session.forget_image(other)
    assert session.predictor(other) is None and session.predictor(image) is predictor


def test_other_weights_device_grid_or_modality_forget_every_predictor(session):
    image, volume = Image(), np.zeros(SHAPE, np.float32)
    run(session, image, volume)
    session.settings = Settings()  # the same settings: kept
    assert session.predictor(image) is not None
    for settings in (Settings(device="cpu"), Settings("my.safetensors", "cpu"), Settings("my.safetensors", "cpu", True),
                     Settings("my.safetensors", "cpu", True, "ct")):
        session.settings = settings
        assert session.predictor(image) is None
        job, _ = run(session, image, volume)
        assert (job.weights, job.device, job.fast, job.modality) == (
            settings.weights, settings.device, settings.fast, settings.modality)
        assert session.predictor(image) is not None


def test_a_result_from_before_a_settings_change_is_not_cached(session):
    image, volume = Image(), np.zeros(SHAPE, np.float32)
    assert session.request()
    job = session.start(image, volume, SPACING, [(21, 6, 6)])
    result = session.execute(job)
    session.settings = Settings(device="cpu")
    assert session.finish(result, image, volume).status == SHOWN  # still the newest prompt's answer
    assert session.predictor(image) is None


# ------------------------------------------------------------------ newest prompt wins
def test_a_request_during_a_run_supersedes_it_and_runs_after_it(session):
    image, volume = Image(), np.zeros(SHAPE, np.float32)
    assert session.request()
    first = session.start(image, volume, SPACING, [(21, 6, 6)])
    assert session.running and session.busy
    assert not session.request()  # in flight: no second run now
    assert first.superseded() and session.busy
    result = session.execute(first)
    assert result.embedded and result.prediction is None  # the embedding is kept, the prediction skipped
    done = session.finish(result, image, volume)
    assert done.status == DROPPED and done.rerun and session.prediction is None and not session.busy
    second = session.start(image, volume, SPACING, [(21, 6, 6), (21, 7, 6)])
    assert not second.embed and second.seq == first.seq + 1
    done = session.finish(session.execute(second), image, volume)
    assert done.status == SHOWN and not done.rerun
    np.testing.assert_allclose(session.prediction.positive, [(21, 6, 6), (21, 7, 6)])


def test_data_replaced_during_a_run_is_stale_and_runs_again(session):
    image, volume = Image(), np.zeros(SHAPE, np.float32)
    assert session.request()
    job = session.start(image, volume, SPACING, [(21, 6, 6)])
    done = session.finish(session.execute(job), image, volume.copy())  # another array now
    assert done.status == STALE and done.rerun and session.prediction is None
    assert session.request()
    job = session.start(image, volume, SPACING, [(21, 6, 6)])
    session.image_changed(image)  # the same array, written in place (a data event)
    done = session.finish(session.execute(job), image, volume)
    assert done.status == STALE and done.rerun


def test_a_run_on_an_image_that_is_gone_is_cancelled_and_shows_nothing(session):
    image, volume = Image(), np.zeros(SHAPE, np.float32)
    assert session.request()
    job = session.start(image, volume, SPACING, [(21, 6, 6)])
    session.forget_image(image)
    assert job.cancelled() and not session.user_cancelled
    done = session.finish(session.execute(job), None)
    assert done.status == FAILED and isinstance(done.error, CancelledError) and not done.rerun
    assert session.prediction is None and session.predictor(image) is None
    assert session.request()  # a result that arrives after its image is gone: nothing to show
    job = session.start(image, volume, SPACING, [(21, 6, 6)])
    done = session.finish(session.execute(job), None)
    assert done.status == DROPPED and session.prediction is None and session.predictor(image) is None


def test_cancel_by_the_user_and_shutdown(session):
    image, volume = Image(), np.zeros(SHAPE, np.float32)
    assert not session.cancel()  # nothing in flight
    assert session.request()
    job = session.start(image, volume, SPACING, [(21, 6, 6)])
    assert session.cancel() and job.cancelled() and session.user_cancelled
    done = session.finish(session.execute(job), image, volume)
    assert done.status == FAILED and isinstance(done.error, CancelledError) and not done.rerun
    assert session.request()
    job = session.start(image, volume, SPACING, [(21, 6, 6)])
    assert not session.user_cancelled  # a new run starts uncancelled
    session.shutdown()
    assert job.cancelled() and not session.user_cancelled


def test_errors_come_back_in_the_result_and_untrained_weights_are_told_once():
    image, volume = Image(), np.zeros(SHAPE, np.float32)
    session = Session(Factory(error=WeightsError("weights file not found: x.safetensors")))
    _, done = run(session, image, volume)
    assert done.status == FAILED and isinstance(done.error, WeightsError)
    assert error_message(done.error, "cpu") == "weights file not found: x.safetensors"
    session.predictor_factory = Factory(trained=False)
    _, done = run(session, image, volume)
    assert done.status == SHOWN and done.untrained
    session.image_changed(image)
    _, done = run(session, image, volume)
    assert not done.untrained  # once per (weights, device)
    session.settings = Settings(device="cpu")
    assert run(session, image, volume)[1].untrained


def test_error_messages_say_what_to_do():
    for error in (OutOfMemoryError("out of memory"), MemoryError(), RuntimeError("CUDA out of memory. Tried")):
        assert "smaller" in error_message(error, "cpu") and "out of memory" in error_message(error, "cpu")
        assert "'cpu' as Device" in error_message(error, "cuda")
    assert "unexpectedly (RuntimeError: boom)" in error_message(RuntimeError("boom"), "cpu")
    assert unsupported_volume("ct", (24, 32, 32)) is None
    assert "Split RGB" in unsupported_volume("photo", (16, 32, 32, 3), rgb=True)
    assert "Split Stack" in unsupported_volume("stack", (3, 16, 32, 32))
    assert "2 dimensions" in unsupported_volume("flat", (32, 32))


# ------------------------------------------------------------------ threshold -> labels and rows
def test_threshold_and_min_volume_give_labels_and_rows_without_a_model(session):
    with pytest.raises(RuntimeError, match="no prediction"):
        session.labels(0.0, 0.0)
    session.accept(three_instances())
    labels, rows = session.labels(0.0, 0.0)
    assert labels.dtype == np.uint16 and labels.shape == SHAPE
    assert [r["id"] for r in rows] == [1, 2, 3] and session.rows == rows
    assert label_counts(labels) == {1: 64, 2: 8, 3: 8}
    assert rows[0]["volume_mm3"] == 128.0 and rows[0]["score"] == pytest.approx(0.9)
    _, rows = session.labels(0.0, 30.0)  # the small dot goes, the clicked small dot stays
    assert [r["id"] for r in rows] == [1, 3]
    labels, rows = session.labels(0.85, 0.0)
    assert [r["id"] for r in rows] == [1] and label_counts(labels) == {1: 64}
    assert session.summary(0.85, 0.0) == "1 instance with confidence ≥ 0.85."
    _, rows = session.labels(0.0, 30.0)
    assert session.summary(0.0, 30.0) == "2 instances with confidence ≥ 0.00 and volume ≥ 30 mm³."
    assert session.row(3)["voxels"] == 8 and session.row(2) is None


def test_the_summary_says_how_many_the_kind_gate_hid_at_the_thresholds_shown(session):
    gated = replace(three_instances(), gated=((0.9, 100.0), (0.5, 100.0), (0.9, 10.0)))
    session.accept(gated)
    session.labels(0.85, 0.0)
    assert session.summary(0.85, 0.0) == ("1 instance with confidence ≥ 0.85. The kind gate hid 2 more read as "
                                          "another kind (untick it to see them).")
    session.labels(0.4, 30.0)
    assert session.summary(0.4, 30.0).endswith("The kind gate hid 2 more read as another kind (untick it to see them).")
    session.labels(0.95, 0.0)
    assert "kind gate" not in session.summary(0.95, 0.0)


def test_the_summary_says_when_a_click_found_nothing(session):
    """A positive click in no instance (at any threshold) is said so; one in a hidden instance is not."""
    session.accept(three_instances(positive=((21, 6, 6), (14, 14, 14))))  # the second click: nothing there
    session.labels(0.0, 0.0)
    assert session.summary(0.0, 0.0).endswith("Nothing found under 1 of your clicks: the model read that spot as "
                                              "background (README: When a click finds nothing).")
    session.labels(0.85, 0.0)  # the first click's instance is hidden by the threshold, not missing
    assert "Nothing found under 1 of" in session.summary(0.85, 0.0)
    session.accept(three_instances())
    session.labels(0.85, 0.0)
    assert "Nothing found" not in session.summary(0.85, 0.0)
    assert three_instances(positive=((14, 14, 14), (15, 15, 15))).empty_clicks() == 2
    assert Prediction(SHAPE, SPACING, [], positive=np.array([(1, 1, 1)], float)).empty_clicks() == 1


def test_the_summary_says_when_a_click_is_below_the_ct_window(session):
    session.accept(replace(three_instances(), below_window=1, window_floor_hu=-160.0))
    session.labels(0.0, 0.0)
    assert session.summary(0.0, 0.0).endswith(
        "The click lies below the CT window (under -160 HU), where the network sees only a flat floor: it "
        "cannot find a lesion there (ground glass in lung is one).")
    session.accept(three_instances())
    session.labels(0.0, 0.0)
    assert "CT window" not in session.summary(0.0, 0.0)


def test_deleted_instances_stay_hidden_at_every_threshold_until_a_new_result(session):
    session.accept(three_instances())
    session.labels(0.0, 0.0)
    session.delete(2)
    assert [r["id"] for r in session.rows] == [1, 3]
    for threshold in (0.0, 0.5, 0.75):
        labels, rows = session.labels(threshold, 0.0)
        assert 2 not in label_counts(labels) and 2 not in [r["id"] for r in rows]
    labels, _ = session.labels(0.0, 0.0)
    assert label_counts(labels) == {1: 64, 3: 8}  # ids stay those of the prediction
    session.accept(three_instances())
    assert session.deleted == set() and 2 in label_counts(session.labels(0.0, 0.0)[0])


def test_restore_after_undo_brings_back_rows_prediction_and_deletions(session):
    first = three_instances()
    session.accept(first)
    high, high_rows = session.labels(0.75, 0.0)
    session.remember(high)
    low, low_rows = session.labels(0.0, 0.0)
    session.remember(low)
    session.delete(1)
    deleted = np.where(low == 1, 0, low).astype(low.dtype)
    session.remember(deleted)
    second = three_instances(positive=((1, 1, 1),))
    session.accept(second)
    newest, _ = session.labels(0.85, 0.0)
    session.remember(newest)
    assert session.restore(deleted, 2.0) == [r for r in low_rows if r["id"] != 1]
    assert session.prediction is first and session.deleted == {1}
    assert session.restore(low, 2.0) == low_rows and session.deleted == set()
    assert session.restore(high, 2.0) == high_rows
    assert session.restore(newest, 2.0) and session.prediction is second
    # a state no write of the session made (e.g. the user painted): rows read from the voxels,
    # scores kept where an instance's voxels are unchanged
    painted = low.copy()
    painted[0, 0, 0] = 0
    rows = {r["id"]: r for r in session.restore(painted, 2.0)}
    assert math.isnan(rows[1]["score"]) and rows[1]["voxels"] == 63
    assert rows[2]["score"] == pytest.approx(0.8) and rows[3]["volume_mm3"] == 16.0
    assert rows[3]["centroid"] == pytest.approx((20.5, 5.5, 5.5))
    session.clear()
    assert session.prediction is None and session.rows == []
    assert math.isnan(session.restore(low, 2.0)[0]["score"])  # no history left


# ------------------------------------------------------------------ the real thing
def test_a_run_with_the_real_tiny_predictor():
    from widget_helpers import TinyPredictors

    predictors = TinyPredictors()
    session = Session(predictors)
    image = Image()
    volume = np.random.default_rng(0).normal(size=(16, 32, 32)).astype(np.float32)
    reports = []
    assert session.request()
    options = PredictOptions.from_widget(kind_gate=False, grow=False)
    job = session.start(image, volume, (1.0, 1.0, 1.0), [(8.0, 16.0, 16.0)], options=options)
    done = session.finish(session.execute(job, lambda *r: reports.append(r)), image, volume)
    assert done.status == SHOWN and done.untrained, done.error
    assert predictors.set_image_calls == 1 and len(predictors.predict_calls) == 1
    assert predictors.predict_options == [options] and options.kind_gate == 0.0 and not options.grow
    assert {stage for stage, _, _ in reports} >= {"Loading model", "Embedding volume", "Predicting"}
    labels, rows = session.labels(0.0, 0.0)
    assert labels.shape == volume.shape and len(rows) == len(label_counts(labels))
    assert session.predictor(image) is not None and not session.needs_embedding(image)


def test_the_session_imports_neither_qt_nor_napari():
    code = (
        "import sys; import napari_miqsam._widget._session; "
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'torch'}); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
