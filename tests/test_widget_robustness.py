"""The dock widget under bad input, interruptions and memory failures: it keeps working, loses nothing.

Real napari (pytest-qt, Xvfb) and the real tiny Predictor. "In flight" is deterministic: the test
holds the predictor inside ``set_image`` / ``predict`` (``TinyPredictors.hold``) until it has acted.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.layers import Labels  # noqa: E402

from napari_miqsam._widget import MiqsamWidget  # noqa: E402
from napari_miqsam._widget._dock import OUTPUT_NAME, PROMPTS_NAME  # noqa: E402
from napari_miqsam.errors import OutOfMemoryError  # noqa: E402
from widget_helpers import WAIT_MS, TinyPredictors, click, n_labels, segment, tumour_voxel, wait_done  # noqa: E402

pytestmark = pytest.mark.gui


def errors(notifications) -> list[str]:
    return [m for s, m in notifications() if s == "error"]


def layer_copies(viewer, skip=()) -> dict[str, np.ndarray]:
    """A copy of every layer's data except ``skip`` (by name), to prove nothing else was written."""
    return {ly.name: np.array(ly.data, copy=True) for ly in viewer.layers if ly.name not in skip}


def assert_unchanged(viewer, before: dict[str, np.ndarray]) -> None:
    for name, data in before.items():
        np.testing.assert_array_equal(np.asarray(viewer.layers[name].data), data, err_msg=name)


def hold_runs(widget) -> threading.Event:
    """From now on the predictor waits inside set_image / predict until the returned Event is set."""
    widget.predictors.entered.clear()
    widget.predictors.hold = threading.Event()
    return widget.predictors.hold


def wait_entered(qtbot, widget) -> None:
    """Wait (processing Qt events, so a scheduled run starts) until the run is held in the predictor."""
    qtbot.waitUntil(widget.predictors.entered.is_set, timeout=WAIT_MS)
    assert widget.busy


def volume_widget(make_napari_viewer, data: np.ndarray, **kwargs) -> tuple:
    viewer = make_napari_viewer()
    viewer.add_image(data, name="vol", **kwargs)
    widget = MiqsamWidget(viewer)
    widget.predictors = TinyPredictors()
    widget.predictor_factory = widget.predictors
    return viewer, widget


# ------------------------------------------------------------------ out of memory
@pytest.mark.parametrize(
    "error",
    [
        OutOfMemoryError("out of memory"),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        MemoryError(),
    ],
    ids=["OutOfMemoryError", "cuda-RuntimeError", "MemoryError"],
)
def test_out_of_memory_while_embedding_is_a_notification_and_the_widget_recovers(
    phantom_widget, qtbot, monkeypatch, notifications, error
):
    from napari_miqsam.inference.predictor import Predictor

    viewer, widget = phantom_widget

    def out_of_memory(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(Predictor, "set_image", out_of_memory)
    click(widget, tumour_voxel(viewer))
    wait_done(qtbot, widget)
    messages = errors(notifications)
    assert len(messages) == 1, messages
    text = messages[0].lower()
    assert "out of memory" in text and "cpu" in text and "smaller" in text, messages[0]
    assert "unexpectedly" not in text
    assert widget.output_layer is None
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert widget.progress_bar.maximum() == 1 and widget.progress_bar.value() == 0
    # the memory is back (or the user switched device): the next run works
    monkeypatch.undo()
    widget.run()
    qtbot.waitUntil(lambda: widget.output_layer is not None and not widget.busy, timeout=WAIT_MS)
    assert widget.output_layer.data.shape == viewer.layers["phantom CT"].data.shape
    assert len(errors(notifications)) == 1


# -------------------------------------------------------------- runs interrupted
def test_image_data_replaced_during_a_run_never_writes_the_stale_result(phantom_widget, qtbot, notifications):
    viewer, widget = phantom_widget
    image = viewer.layers["phantom CT"]
    release = hold_runs(widget)
    voxel = tumour_voxel(viewer)
    click(widget, voxel)
    wait_entered(qtbot, widget)
    new_data = np.flip(np.asarray(image.data)[:, :40, :40], axis=2).copy()  # another grid
    image.data = new_data
    before = layer_copies(viewer, skip=(OUTPUT_NAME,))
    release.set()
    wait_done(qtbot, widget)
    # the old grid's result is dropped and the run repeated on the new data
    out = widget.output_layer
    assert widget.predictors.set_image_shapes == [(24, 48, 48), new_data.shape]
    assert out is not None and out.data.shape == new_data.shape
    assert len(out.features) == n_labels(out)
    assert_unchanged(viewer, before)
    assert image.data is new_data
    assert not errors(notifications)


def test_output_layer_deleted_during_a_run_is_recreated_not_redirected(phantom_widget, qtbot, notifications):
    viewer, widget = phantom_widget
    segment(qtbot, widget, tumour_voxel(viewer))
    release = hold_runs(widget)
    widget.threshold_slider.setValue(0)
    widget.run()
    wait_entered(qtbot, widget)
    viewer.layers.remove(widget.output_layer)
    # a user layer that takes over the output's name while the run is in flight
    impostor = viewer.add_labels(np.zeros((24, 48, 48), np.uint16), name=OUTPUT_NAME)
    before = layer_copies(viewer)
    release.set()
    wait_done(qtbot, widget)
    assert_unchanged(viewer, before)
    out = widget.output_layer
    assert out is not None and out is not impostor and out in viewer.layers
    assert len(out.features) == n_labels(out) > 0
    assert widget.target_combo.findText(out.name) < 0  # never offered as a commit target
    assert widget.target_combo.findText(OUTPUT_NAME) >= 0  # the user's layer is
    assert not errors(notifications)


def test_cancel_button_stops_the_run_and_the_widget_stays_usable(phantom_widget, qtbot, notifications):
    viewer, widget = phantom_widget
    release = hold_runs(widget)
    click(widget, tumour_voxel(viewer))
    wait_entered(qtbot, widget)
    assert widget.cancel_button.isEnabled()
    widget.cancel_button.click()
    release.set()
    wait_done(qtbot, widget)
    assert widget.output_layer is None  # nothing written
    assert widget.predictors.predict_calls == []  # stopped before the prediction
    assert widget.progress_bar.maximum() == 1 and widget.progress_bar.value() == 0
    assert not widget.cancel_button.isEnabled()
    assert "cancel" in widget.status_label.text().lower()
    assert any("cancelled" in m for s, m in notifications() if s == "info")
    assert not errors(notifications)
    widget.predictors.hold = None
    # a new point queues a run; cancelling before it starts drops it
    widget.prompts_layer().add(np.asarray(tumour_voxel(viewer), dtype=float))
    widget.cancel()
    qtbot.wait(100)
    assert not widget.busy and widget.output_layer is None and widget.predictors.set_image_calls == 1
    widget.run()
    qtbot.waitUntil(lambda: widget.output_layer is not None and not widget.busy, timeout=WAIT_MS)
    assert n_labels(widget.output_layer) > 0
    assert not errors(notifications)


# ------------------------------------------------------------------ bad images
@pytest.mark.parametrize(
    ("data", "rgb", "hint"),
    [
        (np.zeros((3, 16, 32, 32), np.float32), False, "channel"),
        (np.zeros((16, 32, 32, 3), np.uint8), True, "rgb"),
    ],
    ids=["4D-multichannel", "RGB"],
)
def test_4d_and_rgb_images_become_a_clear_notification(make_napari_viewer, qtbot, notifications, data, rgb, hint):
    viewer, widget = volume_widget(make_napari_viewer, data, rgb=rgb)
    assert widget.image_layer() is viewer.layers["vol"]
    widget.activate_prompts()  # "Add points" on an image it cannot segment
    widget.run()
    wait_done(qtbot, widget)
    messages = errors(notifications) + [m for s, m in notifications() if s == "warning"]
    assert messages, notifications()
    assert all(hint in m.lower() for m in messages), messages
    assert any("3d" in m.lower() for m in messages), messages
    assert widget.output_layer is None and widget.predictors.set_image_calls == 0
    assert widget.run_button.isEnabled()
    widget.shutdown()


def test_empty_volume_runs_without_error(make_napari_viewer, qtbot, notifications):
    viewer, widget = volume_widget(make_napari_viewer, np.zeros((16, 32, 32), np.float32))
    segment(qtbot, widget, (8, 16, 16))
    # the tiny model is untrained, so how many instances it finds in nothing is not meaningful;
    # the run itself must complete and the table must match the layer
    assert len(widget.output_layer.features) == n_labels(widget.output_layer) == widget.table.rowCount()
    assert not errors(notifications)
    widget.shutdown()


def test_nan_voxels_do_not_break_a_run(make_napari_viewer, qtbot, notifications):
    data = np.random.default_rng(0).normal(size=(16, 32, 32)).astype(np.float32)
    data[:4] = np.nan
    data[8, 10:20, 10:20] = np.inf
    viewer, widget = volume_widget(make_napari_viewer, data)
    segment(qtbot, widget, (10, 16, 16))
    assert len(widget.output_layer.features) == n_labels(widget.output_layer)
    assert np.isnan(viewer.layers["vol"].data[:4]).all()  # the user's image is not "repaired"
    assert not errors(notifications)
    widget.shutdown()


# ---------------------------------------------------------------------- prompts
def test_only_negative_points_is_a_plain_notification(phantom_widget, qtbot, notifications):
    viewer, widget = phantom_widget
    widget.set_negative(True)
    click(widget, tumour_voxel(viewer))
    click(widget, (5.0, 10.0, 10.0))
    wait_done(qtbot, widget)
    infos = [m for s, m in notifications() if s == "info"]
    assert infos and all("positive" in m for m in infos), infos
    assert not errors(notifications) and not [m for s, m in notifications() if s == "warning"]
    assert widget.output_layer is None
    assert widget.predictors.predict_calls == [] and widget.predictors.set_image_calls == 0


def test_many_points_added_at_once_make_one_run_with_all_of_them(phantom_widget, qtbot, notifications):
    viewer, widget = phantom_widget
    points = widget.activate_prompts()
    rng = np.random.default_rng(0)
    many = np.column_stack([rng.integers(1, n - 1, 20) for n in (24, 48, 48)]).astype(float)
    points.add(many)
    qtbot.waitUntil(lambda: widget.output_layer is not None and not widget.busy, timeout=WAIT_MS)
    assert len(widget.predictors.predict_calls) == 1
    positive, negative = widget.predictors.predict_calls[0]
    np.testing.assert_allclose(positive, many, atol=1e-6)
    assert negative == []
    assert len(widget.output_layer.features) == n_labels(widget.output_layer)
    assert not errors(notifications)


# ------------------------------------------------------------- the user's data
def test_users_labels_layers_are_never_modified_by_runs(phantom_widget, qtbot, notifications):
    viewer, widget = phantom_widget
    mine = np.zeros((24, 48, 48), np.uint16)
    mine[10:14, 20:30, 20:30] = 3
    annotations = viewer.add_labels(mine.copy(), name="my annotations", scale=(2.0, 1.0, 1.0))
    viewer.layers.selection.active = annotations  # selected, and the commit target too
    widget.target_combo.setCurrentText("my annotations")
    before = layer_copies(viewer)
    segment(qtbot, widget, tumour_voxel(viewer))
    widget.threshold_slider.setValue(0)
    click(widget, tumour_voxel(viewer) + np.array([0, 1, 0]))
    qtbot.waitUntil(lambda: len(widget.predictors.predict_calls) == 2 and not widget.busy, timeout=WAIT_MS)
    assert n_labels(widget.output_layer) > 0
    for layer in viewer.layers:
        if isinstance(layer, Labels) and layer is not widget.output_layer:
            np.testing.assert_array_equal(np.asarray(layer.data), before[layer.name], err_msg=layer.name)
    np.testing.assert_array_equal(annotations.data, mine)
    assert viewer.layers[PROMPTS_NAME].data.shape == (2, 3)
    assert not errors(notifications)
