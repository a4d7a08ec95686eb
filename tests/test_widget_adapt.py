"""The widget's "My data set" panel in real napari (pytest-qt, Xvfb): commit -> add to data set ->
adapt for two steps of a tiny model in a spawned process -> the new weights are listed, load and
segment; cancel, a second start and closing the viewer leave no weights behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_miqsam._widget import MiqsamWidget  # noqa: E402
from napari_miqsam._widget._worker import load_predictor  # noqa: E402
from napari_miqsam.data.datasets import list_cases  # noqa: E402
from napari_miqsam.data.io import read_volume  # noqa: E402
from napari_miqsam.data.user_dataset import add_case  # noqa: E402
from napari_miqsam.model.weights import DEFAULT_WEIGHTS  # noqa: E402
from napari_miqsam.training.adapt import file_sha256  # noqa: E402
from widget_helpers import segment, tumour_voxel  # noqa: E402

pytestmark = pytest.mark.gui

ADAPT_WAIT_MS = 180_000  # a spawned interpreter imports torch first; two tiny steps take seconds
#: two steps of the tiny model on small patches, one simulated click, one thread (the machine is shared)
FAST = dict(steps=2, patch=32, clicks=1, threads=1)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    import torch

    from napari_miqsam.model.config import get_config
    from napari_miqsam.model.miqsam import MIQSAM3D
    from napari_miqsam.model.weights import save_weights

    torch.manual_seed(0)
    return save_weights(MIQSAM3D(get_config("tiny")), tmp_path_factory.mktemp("base") / "tiny.safetensors", trained=True)


@pytest.fixture
def weights_dir(tmp_path, monkeypatch) -> Path:
    """The user weights folder of the test (set before the widget lists it)."""
    folder = tmp_path / "user_weights"
    monkeypatch.setenv("NAPARI_MIQSAM_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("NAPARI_MIQSAM_DATASET_DIR", str(tmp_path / "default_dataset"))
    return folder


def messages(notifications, severity: str) -> list[str]:
    return [m for s, m in notifications() if s == severity]


def test_commit_add_adapt_then_the_new_weights_load_and_segment(weights_dir, tiny_base, phantom_widget, qtbot,
                                                                  notifications, tmp_path):
    viewer, widget = phantom_widget
    panel = widget.adapt_panel
    shipped = file_sha256(DEFAULT_WEIGHTS)
    assert panel.dataset_dir == tmp_path / "default_dataset"  # the default, before the user picks one
    assert panel.steps_spin.value() == 0 and panel.steps_spin.text() == "auto" and "12 per labelled volume" in panel.steps_spin.toolTip()
    assert panel.train_combo.currentData() == "decoder"
    assert panel.kind_spin.text() == "kind 2 (tumour)"  # the KiTS label values are named
    panel.kind_spin.setValue(3)
    assert panel.kind_spin.text() == "kind 3 (cyst)"
    panel.kind_spin.setValue(4)
    assert panel.kind_spin.text() == "kind 4"
    panel.kind_spin.setValue(2)
    # segment and commit into a Labels layer of the user's
    widget.threshold_slider.setValue(0)
    segment(qtbot, widget, tumour_voxel(viewer))
    image = viewer.layers["phantom CT"]
    mine = viewer.add_labels(np.zeros(image.data.shape, np.uint16), name="my lesions", scale=image.scale)
    widget.target_combo.setCurrentText("my lesions")
    widget.commit()
    assert np.any(mine.data)
    # add to a data set folder of the user's choice (remembered in the session), in a thread worker
    panel.set_dataset_dir(tmp_path / "ds")
    assert widget.session.dataset_dir == str(tmp_path / "ds")
    worker = panel.add_to_dataset()
    assert worker is not None
    qtbot.waitUntil(lambda: panel.add_worker is None, timeout=ADAPT_WAIT_MS)
    assert any("case_00000 added" in m for m in messages(notifications, "info")), notifications()
    [case] = list_cases(tmp_path / "ds")
    loaded = case.load()
    np.testing.assert_array_equal(loaded.labels, np.where(np.asarray(mine.data) > 0, 2, 0))
    np.testing.assert_allclose(loaded.spacing, image.scale)
    np.testing.assert_allclose(read_volume(case.image_path).affine, image.metadata["affine"])
    # the same image again: its case is updated, not duplicated
    panel.add_to_dataset()
    qtbot.waitUntil(lambda: panel.add_worker is None, timeout=ADAPT_WAIT_MS)
    assert any("case_00000 updated" in m for m in messages(notifications, "info"))
    assert len(list_cases(tmp_path / "ds")) == 1

    # adapt the selected (tiny) weights for two steps; a second start meanwhile is refused
    widget.set_weights(str(tiny_base))
    assert panel.start(**FAST) is not None
    assert panel.start(**FAST) is None
    assert any("already running" in m for m in messages(notifications, "warning"))
    qtbot.waitUntil(lambda: not panel.running, timeout=ADAPT_WAIT_MS)
    assert not messages(notifications, "error"), notifications()
    [new] = list(weights_dir.glob("*.safetensors"))
    assert sorted(p.name for p in weights_dir.iterdir()) == sorted([new.name, new.with_suffix(".json").name])
    card = json.loads(new.with_suffix(".json").read_text())
    assert card["base"]["path"] == str(tiny_base) and card["train"] == "decoder" and card["steps"] == 2
    # listed by name and selected; the held-out check says why there was none (one volume)
    assert widget.weights_combo.currentText() == new.stem
    assert Path(widget.weights_combo.currentData()).resolve() == new.resolve()
    assert widget.session.settings.weights == widget.weights_combo.currentData()
    assert "No held-out check was possible" in panel.adapt_status.text()
    # the new weights load (the real loader) and segment
    loads = []
    widget.predictor_factory = lambda weights, device: (loads.append(weights), load_predictor(weights, device))[1]
    before = widget.session.prediction
    segment(qtbot, widget, tumour_voxel(viewer))  # a new point: a new run
    assert [Path(w).resolve() for w in loads] == [new.resolve()]
    assert widget.session.prediction is not before and widget.output_layer is not None
    assert not messages(notifications, "error"), notifications()
    # a new widget lists the user's weights by name
    other = MiqsamWidget(viewer)
    assert other.weights_combo.findText(new.stem) > 0
    other.shutdown()
    assert file_sha256(DEFAULT_WEIGHTS) == shipped


def test_cancel_and_closing_the_viewer_leave_no_weights(weights_dir, tiny_base, make_napari_viewer, qtbot,
                                                        notifications, tmp_path):
    from napari_miqsam.data.phantom import make_phantom

    c = make_phantom(3, shape=(24, 48, 48), spacing=(2.0, 1.0, 1.0))
    add_case(tmp_path / "ds", c.image, c.labels, c.spacing, affine=c.affine)
    viewer = make_napari_viewer()
    viewer.add_image(c.image, name="ct", scale=c.spacing)
    widget = MiqsamWidget(viewer)
    panel = widget.adapt_panel
    panel.set_dataset_dir(tmp_path / "ds")
    widget.set_weights(str(tiny_base))
    many = {**FAST, "steps": 10_000}

    def stepping() -> bool:
        return "step " in panel.adapt_status.text()

    # an empty data set is refused at once, with what to do
    panel.set_dataset_dir(tmp_path / "empty")
    assert panel.start(**many) is None
    assert any("no labelled volume" in m for m in messages(notifications, "warning"))
    panel.set_dataset_dir(tmp_path / "ds")
    # cancel: the job ends, no weights file, card, lock or run folder
    panel.start(**many)
    qtbot.waitUntil(stepping, timeout=ADAPT_WAIT_MS)
    assert panel.adapt_progress.maximum() > 0 and panel.adapt_cancel_button.isEnabled()
    panel.cancel()
    qtbot.waitUntil(lambda: not panel.running, timeout=ADAPT_WAIT_MS)
    assert any("cancelled" in m for m in messages(notifications, "info"))
    assert not weights_dir.exists() or list(weights_dir.iterdir()) == []
    assert widget.weights_combo.count() == 2  # the shipped default and the tiny base: nothing new
    # closing the viewer terminates a running adaptation and removes what it had begun
    job = panel.start(**many)
    qtbot.waitUntil(stepping, timeout=ADAPT_WAIT_MS)
    assert any(weights_dir.iterdir())  # its lock and run folder
    viewer.close()
    assert not job.running and not job._process.is_alive()
    assert list(weights_dir.iterdir()) == []
    widget.shutdown()
