"""A run seen from the GUI thread: check the image and prompts, start the session's job on a napari
``thread_worker`` (one at a time), show its progress, and tell the user how it ended.

Every failure a user can cause (no image, a 2D / 4D / RGB image, a point outside the volume, bad
weights, out of memory) ends as a napari notification and a status line, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton

from napari_miqsam.errors import CancelledError, MiqsamError
from napari_miqsam.inference.options import PredictOptions

from ._layers import ViewerLayers, unsupported
from ._prompts import prompt_voxels
from ._session import FAILED, SHOWN, STALE, Session, error_message, is_out_of_memory
from ._worker import JobResult

log = logging.getLogger(__name__)


def volume(image: Image) -> Any:
    """The full-resolution array of ``image`` (level 0 of a multiscale layer)."""
    return image.data[0] if image.multiscale else image.data


class Runner(QObject):
    """Starts runs for the selected image and prompts; ``on_shown(image)`` when a result is the
    session's new prediction. ``options()``: the ``PredictOptions`` of the widget's check boxes,
    passed to :meth:`Session.start`."""

    progress = Signal(str, int, int)  # emitted on the worker thread, delivered on the GUI thread

    def __init__(self, session: Session, layers: ViewerLayers, options: Callable[[], PredictOptions],
                 on_shown: Callable[[Image], None], *, status: QLabel, progress_bar: QProgressBar,
                 cancel_button: QPushButton, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session, self.layers, self._options, self._on_shown = session, layers, options, on_shown
        self.status, self.progress_bar, self.cancel_button = status, progress_bar, cancel_button
        self.worker: Any | None = None
        self.progress.connect(self._on_progress)

    def start(self, *, auto: bool = False) -> None:
        """Run for the selected image's prompts; ``auto`` (a new point): a missing image or no
        positive point is not worth a message."""
        image = self.layers.image()
        if image is None:
            if not auto:
                show_warning("Open a 3D image first: there is no image layer to segment.")
            return
        if (why := unsupported(image)) is not None:
            show_error(why)
            return
        try:
            positive, negative = prompt_voxels(self.layers.prompts(), image)
        except MiqsamError as exc:
            show_error(str(exc))
            return
        if not positive:
            if not auto or negative:
                show_info("Place a positive (green) point on a lesion first.")
            return
        job = self.session.start(image, volume(image), image.scale[-3:], positive, negative,
                                 options=self._options())
        worker = create_worker(self.session.execute, job, self.progress.emit, _start_thread=False)
        worker.returned.connect(self._on_done)
        self.worker = worker
        self.set_busy(True, "Embedding volume…" if job.embed else "Predicting…")
        worker.start()

    def set_busy(self, busy: bool, message: str | None = None) -> None:
        self.cancel_button.setEnabled(busy)
        self.progress_bar.setRange(0, 0 if busy else 1)  # busy: an indicator until the first report
        self.progress_bar.setValue(0)
        if message is not None:
            self.status.setText(message)

    def _on_progress(self, stage: str, done: int, total: int) -> None:
        if not self.session.running:
            return
        self.progress_bar.setRange(0, max(total, 0))
        if total > 0:
            self.progress_bar.setValue(min(done, total))
        self.status.setText(f"{stage} {done}/{total}…" if total > 0 else f"{stage}…")

    def _on_done(self, result: JobResult) -> None:
        self.worker = None
        job = result.job
        image = job.image_ref() if job.image_ref is not None else None
        image = image if image is not None and image in self.layers.viewer.layers else None
        done = self.session.finish(result, image, volume(image) if image is not None else None)
        if done.untrained:
            show_warning("These MIQ-SAM3D weights are untrained: instances and scores are not meaningful. "
                         "Train or choose a trained .safetensors file.")
        if done.status == STALE:  # the layer's data was replaced during the run
            self.status.setText(f"'{image.name}' changed during the run; running again on its new data…")
        elif done.status == FAILED:
            self._report(done.error, job.device)
        elif done.status == SHOWN:
            self._on_shown(image)
        if done.rerun:
            self.start(auto=True)
        if not self.session.running:
            self.set_busy(False)

    def _report(self, error: BaseException, device: str) -> None:
        self.set_busy(False)
        if isinstance(error, CancelledError):
            self.status.setText("Cancelled.")
            if self.session.user_cancelled:
                show_info("MIQ-SAM3D run cancelled.")
            return
        if is_out_of_memory(error) or not isinstance(error, MiqsamError):
            log.debug("MIQ-SAM3D run failed", exc_info=error)
        message = error_message(error, device)
        self.status.setText(message)
        show_error(message)
