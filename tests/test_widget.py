"""The MIQ-SAM3D dock widget in real napari (pytest-qt, Xvfb), with the real tiny Predictor."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.layers import Points  # noqa: E402

from napari_miqsam._widget import MiqsamWidget  # noqa: E402
from napari_miqsam._widget._dock import KEY_COMMIT, KEY_NEGATIVE, KEY_RUN, OUTPUT_NAME, PROMPTS_NAME  # noqa: E402
from widget_helpers import WAIT_MS, TinyPredictors, click, n_labels, segment, tumour_voxel, wait_done  # noqa: E402

pytestmark = pytest.mark.gui


def test_point_on_tumour_gives_instance_layer_with_scores(sample_widget, qtbot, notifications):
    viewer, widget = sample_widget
    segment(qtbot, widget, tumour_voxel(viewer))
    out = viewer.layers[OUTPUT_NAME]
    image = viewer.layers["phantom CT"]
    assert out is widget.output_layer
    np.testing.assert_allclose(out.scale, image.scale)
    assert out.data.shape == image.data.shape
    # the source geometry travels with the instances, so a NIfTI save reuses the image's affine
    np.testing.assert_allclose(out.metadata["affine"], image.metadata["affine"])
    assert "score" in out.features.columns and "volume_mm3" in out.features.columns
    assert len(out.features) == n_labels(out) > 0
    assert widget.table.rowCount() == len(out.features)
    assert ((out.features["score"] >= widget.threshold) & (out.features["score"] <= 1)).all()
    # the prompt layer stays the active one, so the next click adds a point
    assert viewer.layers.selection.active is viewer.layers[PROMPTS_NAME]
    assert len(widget.predictors.predict_calls) == 1
    # the status says which lesion kind the click was read as (the tiny weights have two kinds)
    assert " Click read as tumour (" in widget.status_label.text() or " Click read as cyst (" in widget.status_label.text()
    assert not [n for n in notifications() if n[0] == "error"]
    # untrained tiny weights: the user is told, once
    assert sum("untrained" in m for _, m in notifications()) == 1


def test_docking_on_an_image_makes_the_prompt_layer_so_the_first_click_runs(phantom_widget, qtbot, notifications):
    viewer, widget = phantom_widget
    points = viewer.layers[PROMPTS_NAME]  # made when the widget docked: no "Add points" needed
    image = viewer.layers["phantom CT"]
    assert widget.prompts_layer() is points and widget.prompts_combo.currentText() == PROMPTS_NAME
    assert viewer.layers.selection.active is points and points.mode == "add"  # a canvas click adds a point
    np.testing.assert_allclose(points.scale, image.scale)
    assert len(points.data) == 0
    points.add(np.asarray(tumour_voxel(viewer), dtype=float))  # what a click on the canvas does
    qtbot.waitUntil(lambda: widget.output_layer is not None and not widget.busy, timeout=WAIT_MS)
    assert len(widget.predictors.predict_calls) == 1
    np.testing.assert_allclose(widget.predictors.predict_calls[0][0], [tumour_voxel(viewer)], atol=1e-6)
    assert len(widget.output_layer.features) == n_labels(widget.output_layer)
    assert [ly for ly in viewer.layers if isinstance(ly, Points)] == [points]  # one prompt layer
    assert not [n for n in notifications() if n[0] == "error"]


def test_selecting_another_image_gives_it_its_own_prompt_layer(phantom_widget, qtbot):
    viewer, widget = phantom_widget
    ct = viewer.layers["phantom CT"]
    first = viewer.layers[PROMPTS_NAME]
    other = viewer.add_image(np.random.default_rng(1).normal(size=(16, 32, 32)).astype(np.float32),
                             name="other", scale=(1.5, 1.0, 1.0))
    qtbot.wait(50)  # the layer events settle
    assert widget.image_layer() is ct and widget.prompts_layer() is first  # a new layer is not a choice
    widget.image_combo.setCurrentText("other")
    points = widget.prompts_layer()
    assert points is not None and points is not first and points in viewer.layers and first in viewer.layers
    np.testing.assert_allclose(points.scale, other.scale)
    assert viewer.layers.selection.active is points and points.mode == "add"
    points.add([8.0, 16.0, 16.0])
    qtbot.waitUntil(lambda: widget.output_layer is not None and not widget.busy, timeout=WAIT_MS)
    assert widget.output_layer.data.shape == other.data.shape
    assert widget.predictors.predict_calls[-1][0] == [(8.0, 16.0, 16.0)]
    widget.image_combo.setCurrentText("phantom CT")  # back: its own prompt layer again, not a new one
    assert widget.prompts_layer() is first and viewer.layers.selection.active is first


def test_an_image_opened_after_docking_gets_its_prompt_layer(make_napari_viewer, qtbot, notifications):
    viewer = make_napari_viewer()
    widget = MiqsamWidget(viewer)
    widget.predictors = widget.predictor_factory = TinyPredictors()
    assert widget.prompts_layer() is None and len(viewer.layers) == 0
    viewer.add_image(np.zeros((32, 32), np.float32), name="flat")  # nothing to prompt on a 2D image
    qtbot.wait(50)
    assert widget.prompts_layer() is None and len(viewer.layers) == 1
    viewer.layers.remove("flat")
    viewer.add_image(np.random.default_rng(0).normal(size=(16, 32, 32)).astype(np.float32), name="vol")
    assert widget.image_layer() is viewer.layers["vol"]
    qtbot.waitUntil(lambda: widget.prompts_layer() is not None, timeout=WAIT_MS)
    points = widget.prompts_layer()
    assert points.name == PROMPTS_NAME and viewer.layers.selection.active is points and points.mode == "add"
    points.add([8.0, 16.0, 16.0])
    qtbot.waitUntil(lambda: widget.output_layer is not None and not widget.busy, timeout=WAIT_MS)
    assert not [n for n in notifications() if n[0] in ("error", "warning") and "untrained" not in n[1]]
    widget.shutdown()


def test_threshold_updates_instances_without_model_call(phantom_widget, qtbot):
    viewer, widget = phantom_widget
    segment(qtbot, widget, tumour_voxel(viewer))
    out = widget.output_layer
    calls = len(widget.predictors.predict_calls)
    widget.threshold_slider.setValue(0)
    n_all = n_labels(out)
    assert len(out.features) == n_all == widget.table.rowCount()
    widget.threshold_slider.setValue(100)
    assert n_labels(out) < n_all
    assert len(out.features) == n_labels(out) == widget.table.rowCount()
    # a live drag (slider position without release) previews without touching the model either
    widget.threshold_slider.setSliderDown(True)  # the user holds the handle
    widget.threshold_slider.setSliderPosition(0)  # sliderMoved, no valueChanged until release
    assert n_labels(out) == n_all
    widget.threshold_slider.setSliderDown(False)
    assert len(widget.predictors.predict_calls) == calls
    assert widget.predictors.set_image_calls == 1


def test_min_volume_hides_small_instances_without_model_call(phantom_widget, qtbot):
    from napari_miqsam.inference.prediction import Instance, Prediction

    viewer, widget = phantom_widget
    segment(qtbot, widget, tumour_voxel(viewer))
    out = widget.output_layer
    calls = len(widget.predictors.predict_calls)
    # a prediction with sizes chosen for the test, on the image's grid (spacing 2 x 1 x 1: 2 mm³ voxels)
    box = np.ones((4, 4, 4), bool)  # 128 mm³
    dot = np.ones((2, 2, 2), bool)  # 16 mm³
    prediction = Prediction(out.data.shape, (2.0, 1.0, 1.0), [
        Instance(0.9, (slice(0, 4),) * 3, box), Instance(0.8, (slice(10, 12),) * 3, dot),
        Instance(0.7, (slice(20, 22), slice(5, 7), slice(5, 7)), dot)], positive=np.array([[21, 6, 6]]))
    widget.show_prediction(prediction, widget.image_layer())
    widget.min_volume_spin.setValue(0)
    assert widget.table.rowCount() == n_labels(out) == 3
    widget.min_volume_spin.setValue(30)  # the clicked small one stays
    assert widget.table.rowCount() == n_labels(out) == 2 and out.data[11, 11, 11] == 0
    assert "volume ≥ 30 mm³" in widget.status_label.text()
    widget.min_volume_spin.setValue(1000)
    assert n_labels(out) == 1 and out.data[21, 6, 6] == 3
    viewer.layers.selection.active = out
    out.undo()  # each change is one undo step
    assert n_labels(out) == 2
    assert len(widget.predictors.predict_calls) == calls


def test_kind_gate_check_sets_the_kind_gate_and_runs_again(phantom_widget, qtbot):
    from napari_miqsam.inference.options import KIND_GATE, PredictOptions

    viewer, widget = phantom_widget
    segment(qtbot, widget, tumour_voxel(viewer))
    options = widget.predictors.predict_options
    assert widget.kind_gate_check.text() == "Kind gate: only the clicked kind"
    assert widget.kind_gate_check.isChecked() and options[-1].kind_gate == KIND_GATE > 0
    assert options[-1] == PredictOptions()  # the widget's defaults are the library's
    calls = len(widget.predictors.predict_calls)
    widget.kind_gate_check.setChecked(False)
    qtbot.waitUntil(lambda: len(widget.predictors.predict_calls) == calls + 1, timeout=WAIT_MS)
    wait_done(qtbot, widget)
    assert options[-1].kind_gate == 0.0 and options[-1].grow is True
    assert widget.predictors.set_image_calls == 1  # the embedding is reused


def test_grow_small_masks_sets_the_grow_option_and_runs_again(phantom_widget, qtbot):
    viewer, widget = phantom_widget
    segment(qtbot, widget, tumour_voxel(viewer))
    options = widget.predictors.predict_options
    assert widget.grow_check.isChecked() and options[-1].grow is True
    calls = len(widget.predictors.predict_calls)
    widget.grow_check.setChecked(False)
    qtbot.waitUntil(lambda: len(widget.predictors.predict_calls) == calls + 1, timeout=WAIT_MS)
    wait_done(qtbot, widget)
    assert options[-1].grow is False and options[-1].kind_gate > 0
    assert widget.predictors.set_image_calls == 1  # the embedding is reused


def test_negative_point_is_passed_and_removes_its_instance(phantom_widget, qtbot):
    viewer, widget = phantom_widget
    positive = tumour_voxel(viewer)
    segment(qtbot, widget, positive)
    out = widget.output_layer
    ids = [i for i in np.unique(out.data) if i]
    assert ids
    # a voxel of some shown instance that is not the positive click itself
    candidates = np.argwhere(np.asarray(out.data) == ids[-1])
    negative = next(tuple(c) for c in candidates if tuple(c) != tuple(positive))
    widget.toggle_negative()  # what Shift-N does
    assert widget.negative_check.isChecked()
    points = viewer.layers[PROMPTS_NAME]
    points.add(np.asarray(negative, dtype=float))
    assert list(points.features["prompt"]) == ["positive", "negative"]
    assert points.face_color[0].tolist() != points.face_color[1].tolist()
    wait_done(qtbot, widget)
    qtbot.waitUntil(lambda: len(widget.predictors.predict_calls) == 2, timeout=WAIT_MS)
    wait_done(qtbot, widget)
    pos_arg, neg_arg = widget.predictors.predict_calls[-1]
    np.testing.assert_allclose(pos_arg, [positive], atol=1e-6)
    np.testing.assert_allclose(neg_arg, [negative], atol=1e-6)
    assert out.data[negative] == 0  # no instance contains the negative click
    assert widget.predictors.set_image_calls == 1  # the embedding is cached per image layer


def test_newest_prompt_wins_while_a_run_is_in_flight(phantom_widget, qtbot, notifications):
    viewer, widget = phantom_widget
    widget.predictors.delay_first_predict = 1.0
    first = tumour_voxel(viewer)
    second = first + np.array([0, 1, 0])
    click(widget, first)
    qtbot.waitUntil(lambda: widget.session.running, timeout=WAIT_MS)
    viewer.layers[PROMPTS_NAME].add(np.asarray(second, dtype=float))
    qtbot.waitUntil(lambda: widget.output_layer is not None and not widget.busy, timeout=WAIT_MS)
    last_positive, _ = widget.predictors.predict_calls[-1]
    assert len(last_positive) == 2
    np.testing.assert_allclose(widget.session.prediction.positive, [first, second])
    assert not [n for n in notifications() if n[0] == "error"]


def test_widget_survives_image_layer_deletion(phantom_widget, qtbot, notifications):
    viewer, widget = phantom_widget
    widget.predictors.delay_first_predict = 0.5
    click(widget, tumour_voxel(viewer))
    qtbot.waitUntil(lambda: widget.session.running, timeout=WAIT_MS)
    viewer.layers.remove("phantom CT")  # during a run
    wait_done(qtbot, widget)
    assert widget.output_layer is None  # the stale result is dropped, nothing written
    assert widget.image_layer() is None
    viewer.layers[PROMPTS_NAME].add([10.0, 10.0, 10.0])  # a click with no image: silent no-op
    widget.run()
    wait_done(qtbot, widget)
    assert not [n for n in notifications() if n[0] == "error"]
    assert any("image" in m for s, m in notifications() if s == "warning")


def test_output_layer_deleted_between_runs_is_recreated(phantom_widget, qtbot):
    viewer, widget = phantom_widget
    segment(qtbot, widget, tumour_voxel(viewer))
    viewer.layers.remove(widget.output_layer)
    assert widget.output_layer is None and widget.table.rowCount() == 0
    widget.threshold_slider.setValue(30)  # nothing to show: no error, no layer
    assert OUTPUT_NAME not in viewer.layers
    widget.run()
    qtbot.waitUntil(lambda: widget.output_layer is not None and not widget.busy, timeout=WAIT_MS)
    assert len(widget.output_layer.features) == n_labels(widget.output_layer)


def test_new_run_and_deletion_are_single_undo_steps(phantom_widget, qtbot):
    viewer, widget = phantom_widget
    widget.threshold_slider.setValue(95)  # start high, so that lowering it later shows more instances
    segment(qtbot, widget, tumour_voxel(viewer))
    out = widget.output_layer
    first = np.array(out.data, copy=True)
    first_rows = len(out.features)
    widget.threshold_slider.setValue(0)
    second = np.array(out.data, copy=True)
    assert not np.array_equal(first, second)
    # delete the selected row: one instance gone
    widget.table.selectRow(0)
    removed = widget.table.selected_id()
    widget.table.request_delete()
    assert not np.any(out.data == removed)
    assert removed not in list(out.features["index"])
    out.undo()  # the deletion
    np.testing.assert_array_equal(out.data, second)
    assert removed in list(out.features["index"])
    out.undo()  # the threshold change
    np.testing.assert_array_equal(out.data, first)
    assert len(out.features) == first_rows == widget.table.rowCount()
    out.redo()
    np.testing.assert_array_equal(out.data, second)


def test_selecting_a_row_moves_the_view_to_the_instance(phantom_widget, qtbot):
    viewer, widget = phantom_widget
    segment(qtbot, widget, tumour_voxel(viewer))
    out = widget.output_layer
    widget.table.selectRow(widget.table.rowCount() - 1)
    instance = widget.table.selected_id()
    row = out.features[out.features["index"] == instance].iloc[0]
    world_z = row["centroid_z"] * out.scale[0]
    assert viewer.dims.point[0] == pytest.approx(world_z, abs=out.scale[0])
    assert out.selected_label == instance


def test_commit_keeps_existing_voxels_and_is_undoable(phantom_widget, qtbot, notifications):
    viewer, widget = phantom_widget
    segment(qtbot, widget, tumour_voxel(viewer))
    out = np.asarray(widget.output_layer.data).copy()
    existing = tuple(np.argwhere(out)[0])
    target_data = np.zeros(out.shape, dtype=np.uint16)
    target_data[existing] = 7
    target = viewer.add_labels(target_data, name="my annotations", scale=viewer.layers["phantom CT"].scale)
    viewer.layers.selection.active = viewer.layers[PROMPTS_NAME]
    widget.target_combo.setCurrentText("my annotations")
    assert widget.target_layer() is target
    assert widget.target_combo.findText(OUTPUT_NAME) < 0  # never commit into itself
    widget.commit()  # what Shift-C does
    merged = np.asarray(target.data)
    assert merged[existing] == 7
    assert np.all(merged[out != 0] != 0)
    assert np.all(merged[out == 0] == 0)
    assert widget.output_layer.data[existing] == out[existing]  # the output itself is untouched
    target.undo()
    expected = np.zeros(out.shape, dtype=np.uint16)
    expected[existing] = 7
    np.testing.assert_array_equal(target.data, expected)
    assert not [n for n in notifications() if n[0] == "error"]


def test_commit_with_no_layer_chosen_makes_one_on_the_image_grid(phantom_widget, qtbot, notifications):
    """The commit picker starts on "a new Labels layer": Commit makes one (the image's grid and
    geometry), copies the instances into it, and picks it for the next commit."""
    viewer, widget = phantom_widget
    segment(qtbot, widget, tumour_voxel(viewer))
    assert widget.target_layer() is None and widget.target_combo.currentText() == "a new Labels layer"
    before = {ly.name for ly in viewer.layers}
    widget.commit()
    made = [ly for ly in viewer.layers if ly.name not in before]
    assert len(made) == 1 and made[0].name == "phantom CT lesions"
    new = made[0]
    out = np.asarray(widget.output_layer.data)
    assert np.any(out)
    np.testing.assert_array_equal(np.asarray(new.data) != 0, out != 0)
    image = viewer.layers["phantom CT"]
    np.testing.assert_allclose(new.scale, image.scale)
    np.testing.assert_allclose(new.affine.affine_matrix, image.affine.affine_matrix)
    assert widget.target_layer() is new  # the next commit goes to the same layer
    widget.commit()
    assert len(viewer.layers) == len(before) + 1
    assert not [n for n in notifications() if n[0] == "error"]


def test_save_selected_layers_writes_the_instances_as_nifti_in_the_image_geometry(phantom_widget, qtbot, tmp_path):
    """README step 9: File > Save Selected Layers... with a .nii.gz name (napari picks the writer)."""
    import nibabel as nib

    viewer, widget = phantom_widget
    segment(qtbot, widget, tumour_voxel(viewer))
    out = widget.output_layer
    viewer.layers.selection = {out}
    path = tmp_path / "instances.nii.gz"
    assert viewer.layers.save(str(path), selected=True) == [str(path)]  # no plugin named, as the menu does
    saved = nib.load(str(path))
    np.testing.assert_array_equal(np.asarray(saved.dataobj).transpose(2, 1, 0), out.data)
    np.testing.assert_allclose(saved.affine, viewer.layers["phantom CT"].metadata["affine"], atol=1e-6)


def test_2d_image_and_outside_point_become_notifications(make_napari_viewer, qtbot, notifications):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), dtype=np.float32), name="flat")
    widget = MiqsamWidget(viewer)
    widget.predictor_factory = TinyPredictors()
    widget.run()
    errors = [m for s, m in notifications() if s == "error"]
    assert len(errors) == 1 and "3D" in errors[0]
    assert widget.output_layer is None
    # a 3D image and a point outside it: the library's InputError becomes a notification
    viewer.add_image(np.random.default_rng(0).normal(size=(24, 32, 32)).astype(np.float32), name="vol")
    widget.image_combo.setCurrentText("vol")
    points = widget.activate_prompts()
    points.add([5.0, 500.0, 5.0])
    wait_done(qtbot, widget)
    errors = [m for s, m in notifications() if s == "error"]
    assert len(errors) == 2 and "outside" in errors[1].lower(), errors
    assert widget.run_button.isEnabled() and widget.output_layer is None
    widget.shutdown()


def test_bad_weights_and_unexpected_errors_become_notifications(make_napari_viewer, qtbot, tmp_path, notifications):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((24, 32, 32), dtype=np.float32), name="vol")
    widget = MiqsamWidget(viewer)
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    widget.set_weights(str(bad))  # the real loader
    widget.activate_prompts().add([12.0, 16.0, 16.0])
    wait_done(qtbot, widget)
    errors = [m for s, m in notifications() if s == "error"]
    assert len(errors) == 1 and "weights" in errors[0].lower()
    widget.predictor_factory = TinyPredictors(error=RuntimeError("boom"))
    widget.run()
    wait_done(qtbot, widget)
    errors = [m for s, m in notifications() if s == "error"]
    assert len(errors) == 2 and "boom" in errors[1]
    widget.set_weights(str(tmp_path / "weights.pt"))  # not .safetensors: refused at once
    assert len([m for s, m in notifications() if s == "error"]) == 3
    widget.shutdown()


def test_keyboard_shortcuts_are_bound_on_the_viewer(phantom_widget):
    from app_model.types import KeyBinding

    viewer, widget = phantom_widget
    widget.activate_prompts()
    bound = {KeyBinding.from_str(key.replace("-", "+")) for key in (KEY_RUN, KEY_NEGATIVE, KEY_COMMIT)}
    assert bound <= set(viewer.keymap)
    viewer.keymap[KeyBinding.from_str(KEY_NEGATIVE.replace("-", "+"))](viewer)
    assert widget.negative_check.isChecked()
    assert viewer.layers[PROMPTS_NAME].feature_defaults["prompt"][0] == "negative"
    widget.shutdown()
    assert not bound & set(viewer.keymap)


def test_detail_fast_runs_on_a_coarser_grid_and_embeds_again(phantom_widget, qtbot):
    """'Detail: fast' loads the predictor on a grid FAST_SPACING_FACTOR coarser than the one the
    weights ask for; switching re-embeds and runs the shown prompt again."""
    from napari_miqsam.inference.predictor import FAST_SPACING_FACTOR, Predictor

    viewer, widget = phantom_widget
    made = []
    tiny = widget.predictors

    def finer(weights, device):  # the tiny model asking for a 0.8 mm grid
        p = tiny(weights, device)
        p.set_model_spacing(0.8)
        made.append(p)
        return p

    widget.predictor_factory = finer
    assert widget.detail_combo.currentText() == "accurate"
    segment(qtbot, widget, tumour_voxel(viewer))
    assert made[-1].model_spacing == (0.8, 0.8, 0.8)
    calls = tiny.set_image_calls
    widget.detail_combo.setCurrentText("fast")
    qtbot.waitUntil(lambda: tiny.set_image_calls == calls + 1, timeout=10000)
    wait_done(qtbot, widget)
    assert len(made) == 2 and made[-1].model_spacing == pytest.approx((0.8 * FAST_SPACING_FACTOR,) * 3)
    assert widget.session.predictor(widget.image_layer()) is made[-1]
    assert isinstance(made[-1], Predictor) and widget.output_layer is not None


def test_intensities_choice_reads_the_image_as_chosen_and_embeds_again(phantom_widget, qtbot, monkeypatch):
    """'Intensities' reaches set_image's modality; changing it re-embeds and runs the shown prompt
    again, and 'CT (HU)' on a CT the auto guess would read as percentiles changes the model's input."""
    from napari_miqsam.inference import predictor as predictor_module

    viewer, widget = phantom_widget
    tiny = widget.predictors
    seen = []
    real = predictor_module.normalise_and_read

    def spy(volume, level=40.0, half_width=200.0, modality="auto"):
        out, read_as = real(volume, level, half_width, modality)
        seen.append((modality, float(out.mean())))
        return out, read_as

    monkeypatch.setattr(predictor_module, "normalise_and_read", spy)
    assert widget.modality_combo.currentData() == "auto"
    segment(qtbot, widget, tumour_voxel(viewer))
    assert tiny.set_image_modalities == ["auto"]
    assert "Values read as CT (HU window)." in widget.status_label.text()  # what 'auto' decided
    for text, modality in (("CT (HU)", "ct"), ("other (MR, microscopy)", "other")):
        calls = tiny.set_image_calls
        widget.modality_combo.setCurrentText(text)
        qtbot.waitUntil(lambda calls=calls: tiny.set_image_calls == calls + 1, timeout=10000)
        wait_done(qtbot, widget)
        assert tiny.set_image_modalities[-1] == modality and widget.output_layer is not None
        assert "Values read as" not in widget.status_label.text()  # the user chose: nothing to report
    assert [m for m, _ in seen] == ["auto", "ct", "other"]
    assert seen[1][1] != pytest.approx(seen[2][1], abs=1e-3)  # the HU window and percentiles differ
