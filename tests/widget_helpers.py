"""Helpers shared by the widget tests (test_widget.py, test_widget_robustness.py).

The fixtures built on them (``sample_widget``, ``phantom_widget``) live in conftest.py. This module
imports napari lazily, so collecting the non-GUI tests never needs it.
"""

from __future__ import annotations

import threading
import time

import numpy as np

WAIT_MS = 60_000
WAIT_S = WAIT_MS / 1000


class TinyPredictors:
    """Builds real untrained tiny Predictors and records their ``predict`` calls (the points, and
    in ``predict_options`` the ``PredictOptions`` the session passed).

    ``hold``: while it is an unset Event, every ``set_image`` / ``predict`` call sets ``entered``
    and waits for it, so a test can act while a run is deterministically in flight. The wrapped
    methods are looked up on the class at call time, so a test may monkeypatch ``Predictor``.
    """

    def __init__(self, delay_first_predict: float = 0.0, error: BaseException | None = None) -> None:
        self.predict_calls: list[tuple[list, list]] = []
        self.predict_options: list = []
        self.set_image_calls = 0
        self.set_image_shapes: list[tuple[int, ...]] = []
        self.set_image_modalities: list[str | None] = []
        self.delay_first_predict = delay_first_predict
        self.error = error
        self.hold: threading.Event | None = None
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def _wait_for_release(self) -> None:
        hold = self.hold
        if hold is not None:
            self.entered.set()
            if not hold.wait(WAIT_S):
                raise TimeoutError("the test never released the held run")

    def __call__(self, weights: str | None, device: str):
        from napari_miqsam.inference.predictor import Predictor

        if self.error is not None:
            raise self.error
        predictor = Predictor.from_config("tiny", seed=0)

        def counting_predict(positive, negative=(), **kw):
            with self._lock:
                first = not self.predict_calls
                self.predict_calls.append(([tuple(p) for p in positive], [tuple(p) for p in negative]))
                self.predict_options.append(kw.get("options"))
            if first and self.delay_first_predict:
                time.sleep(self.delay_first_predict)
            self._wait_for_release()
            return type(predictor).predict(predictor, positive, negative, **kw)

        def counting_set_image(volume, *args, **kw):
            with self._lock:
                self.set_image_calls += 1
                self.set_image_shapes.append(tuple(np.shape(volume)))
                self.set_image_modalities.append(kw.get("modality"))
            self._wait_for_release()
            return type(predictor).set_image(predictor, volume, *args, **kw)

        predictor.predict = counting_predict
        predictor.set_image = counting_set_image
        return predictor


def docked(viewer, qtbot):
    """Dock the plugin's widget through npe2 with a TinyPredictors factory; shut it down after."""
    from napari_miqsam._widget import MiqsamWidget

    _, widget = viewer.window.add_plugin_dock_widget("napari-miqsam", "MIQ-SAM3D")
    assert isinstance(widget, MiqsamWidget)
    widget.predictors = TinyPredictors()
    widget.predictor_factory = widget.predictors
    yield viewer, widget
    if widget.predictors.hold is not None:
        widget.predictors.hold.set()
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    widget.shutdown()


def tumour_voxel(viewer, index: int = 0) -> np.ndarray:
    truth = np.asarray(viewer.layers["phantom ground truth"].data)
    from scipy import ndimage

    lesions, n = ndimage.label(truth == 2, structure=np.ones((3, 3, 3)))
    assert n > index
    centre = np.argwhere(lesions == index + 1)
    return centre[len(centre) // 2]


def click(widget, voxel) -> None:
    points = widget.activate_prompts()
    points.add(np.asarray(voxel, dtype=float))


def segment(qtbot, widget, voxel) -> None:
    """Click ``voxel`` and wait until the instances are shown and the widget is idle."""
    click(widget, voxel)
    qtbot.waitUntil(lambda: widget.output_layer is not None and not widget.busy, timeout=WAIT_MS)


def wait_done(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)


def n_labels(layer) -> int:
    return int(np.count_nonzero(np.unique(np.asarray(layer.data))))
