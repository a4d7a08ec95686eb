"""The dock's "My data set" panel: collect the user's committed instances, adapt the model to them.

- **Add to data set**: the committed instances (the commit target Labels layer; without one, the
  shown output) and the image they belong to, with its spacing and source geometry (the affine our
  reader or sample keeps in the layer's metadata), become one case of a KiTS-layout data set folder
  (:func:`napari_miqsam.data.user_dataset.add_case`, in a napari thread worker); the same image
  again updates its case. The folder is remembered in the session (default:
  :func:`napari_miqsam.user_weights.user_dataset_dir`).
- **Adapt to my data**: a short fine-tune from the selected weights in a spawned process
  (:class:`napari_miqsam.training.adapt_job.AdaptJob`) that a QTimer polls for the progress bar;
  the new weights join the Weights list, selected, and the held-out check is shown. Closing the
  widget or the viewer terminates a running adaptation; no weights file is left.

Nothing here touches a tensor; the library is imported on first use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox, QFileDialog, QFormLayout, QGroupBox, QLabel, QLineEdit, QProgressBar, QPushButton, QSpinBox, QWidget,
)

from napari_miqsam.data.phantom.case import CLASS_NAMES
from napari_miqsam.errors import CancelledError, MiqsamError
from napari_miqsam.training.adapt import STEPS_PER_VOLUME  # a constant: the module imports torch only inside adapt()

from ._forms import side_by_side
from ._layers import unsupported
from ._runner import volume
from ._session import Session

log = logging.getLogger(__name__)

AUTO_STEPS = 0  # the steps box's "auto": training.adapt.STEPS_PER_VOLUME per labelled volume
#: (label, ``adapt(train=...)``); the first is the default: the encoder frozen, cheaper steps, safer with few volumes.
TRAIN_CHOICES = (("decoder only", "decoder"), ("whole network", "all"))
POLL_MS = 200
PROGRESS_STEPS = 1000  # the bar's range: fractions of the step limit or the time budget


def add_user_weights(combo: QComboBox) -> None:
    """Offer the user's adapted weights (``user_weights.list_user_weights``) in a Weights combo,
    by name, with their card as the tooltip; files already offered are left as they are."""
    from napari_miqsam.user_weights import list_user_weights

    offered = {_resolved(combo.itemData(i)) for i in range(combo.count()) if combo.itemData(i)}
    for path, card in reversed(list_user_weights()):  # oldest first: the newest ends up last
        if _resolved(path) not in offered:
            combo.addItem(path.stem, str(path))
            combo.setItemData(combo.count() - 1, _card_tip(path, card), Qt.ItemDataRole.ToolTipRole)


def _resolved(path: Any) -> Path:
    return Path(path).expanduser().resolve()


def _card_tip(path: Path, card: dict | None) -> str:
    if not card:
        return str(path)
    check = (card.get("held_out_check") or {}).get("summary", "")
    return (f"{path}\nadapted from {Path(card.get('base', {}).get('path', '?')).name} ({card.get('train', '?')}) on "
            f"{len(card.get('cases', []))} volume(s) of {card.get('data', '?')}, {card.get('steps', '?')} steps, "
            f"{card.get('minutes', '?')} min" + (f"\n{check}" if check else ""))


def collect(root: str, image: Any, instances: np.ndarray, spacing: tuple, kind: int, metadata: dict,
            label_spacing: tuple, source: str) -> Any:
    """``add_case`` for an image layer's data and committed instance ids (any thread): every
    instance becomes lesion ``kind``; the image's file geometry (``metadata``) is kept when it
    describes the same spacing."""
    from napari_miqsam._writer import source_volume
    from napari_miqsam.data.user_dataset import add_case, class_labels

    data = np.asarray(image)
    like = source_volume(metadata, data)
    if like is not None and not np.allclose(like.spacing, spacing, rtol=1e-3):
        like = None  # the layer was rescaled after reading: its scale wins, the file's affine does not fit
    return add_case(root, data, class_labels(instances, kind), spacing, like=like, label_spacing=label_spacing,
                    source=source)


def _duration(minutes: float) -> str:
    return f"{minutes * 60:.0f} s" if minutes < 1 else f"{minutes:.1f} min"


class AdaptPanel(QGroupBox):
    """"Add to data set" and "Adapt to my data" (see the module docstring).

    ``image()``: the image being segmented; ``target()``: the commit target Labels layer (or None);
    ``output()``: the widget's output layer (or None); ``weights_combo``: the dock's Weights list
    (item data: a .safetensors path, None for the shipped default), whose selection is the base of
    an adaptation and receives the new weights.
    """

    def __init__(self, session: Session, viewer: Any, weights_combo: QComboBox, *, image: Callable[[], Image | None],
                 target: Callable[[], Labels | None], output: Callable[[], Labels | None],
                 parent: QWidget | None = None) -> None:
        super().__init__("My data set", parent)
        from napari_miqsam.user_weights import user_dataset_dir

        self.session, self.viewer, self.weights_combo = session, viewer, weights_combo
        self._image, self._target, self._output = image, target, output
        if session.dataset_dir is None:
            session.dataset_dir = str(user_dataset_dir())
        self.job: Any | None = None
        self._task: Any | None = None
        self.add_worker: Any | None = None
        self._build_ui()
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.poll)
        add_user_weights(weights_combo)

    def _build_ui(self) -> None:
        form = QFormLayout(self)
        self.folder_edit = QLineEdit(self.session.dataset_dir)
        self.folder_edit.setToolTip("The data set folder (KiTS layout: one case_XXXXX folder per image) that "
                                    "'Add to data set' writes and 'Adapt to my data' trains on.")
        self.folder_button = QPushButton("Choose…")
        form.addRow("Folder", side_by_side(self.folder_edit, self.folder_button))
        self.kind_spin = QSpinBox()
        self.kind_spin.setRange(2, 255)
        self.kind_spin.setPrefix("kind ")
        self.kind_spin.valueChanged.connect(self._name_kind)
        self._name_kind(self.kind_spin.value())
        longest = max((f"kind {v} ({n})" for v, n in CLASS_NAMES.items() if v >= self.kind_spin.minimum()),
                      key=len, default="kind 255")
        # napari's style draws the - and + buttons on either side of the text: room for both
        self.kind_spin.setMinimumWidth(self.kind_spin.fontMetrics().horizontalAdvance(longest) + 80)
        self.kind_spin.setToolTip("The label value the instances get in the data set (KiTS: 2 tumour, 3 cyst; "
                                  "your own lesion kinds from 2 on; 1 is the organ).")
        self.add_button = QPushButton("Add to data set")
        self.add_button.setToolTip("Add the committed instances (the commit layer; without one, the shown "
                                   "instances) and the image to the data set; the same image again updates its case.")
        form.addRow("Lesions", side_by_side(self.kind_spin, self.add_button))
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(AUTO_STEPS, 100_000)
        self.steps_spin.setSingleStep(10)
        self.steps_spin.setSpecialValueText("auto")  # the tooltip says what auto is; a longer text is cut off
        self.steps_spin.setSuffix(" steps")
        self.steps_spin.setValue(AUTO_STEPS)
        self.steps_spin.setToolTip(f"Training steps; auto: {STEPS_PER_VOLUME} per labelled volume trained on. More "
                                   "steps over-fit a few volumes (measured: docs/results.md, adaptation curve). "
                                   "Scoring the held-out volume before and after comes on top.")
        self.train_combo = QComboBox()
        for text, value in TRAIN_CHOICES:
            self.train_combo.addItem(text, value)
        self.train_combo.setToolTip("decoder only: the encoder stays frozen (faster steps, safe with few volumes). "
                                    "whole network: the encoder learns too.")
        form.addRow("Adapt", side_by_side(self.steps_spin, self.train_combo))
        self.adapt_button = QPushButton("Adapt to my data")
        self.adapt_button.setToolTip("Fine-tune the selected weights on the data set in a separate process; the "
                                     "new weights are a new file in your weights folder, added to Weights.")
        self.adapt_cancel_button = QPushButton("Cancel")
        self.adapt_cancel_button.setEnabled(False)
        form.addRow(side_by_side(self.adapt_button, self.adapt_cancel_button))
        self.adapt_progress = QProgressBar()
        self.adapt_progress.setRange(0, PROGRESS_STEPS)
        self.adapt_progress.setValue(0)
        self.adapt_progress.setTextVisible(False)
        self.adapt_status = QLabel("Commit instances, add them to the data set, adapt.")
        self.adapt_status.setWordWrap(True)
        form.addRow(self.adapt_progress)
        form.addRow(self.adapt_status)
        self.folder_edit.editingFinished.connect(lambda: self.set_dataset_dir(self.folder_edit.text()))
        self.folder_button.clicked.connect(self._choose_folder)
        self.add_button.clicked.connect(lambda: self.add_to_dataset())
        self.adapt_button.clicked.connect(lambda: self.start())
        self.adapt_cancel_button.clicked.connect(self.cancel)

    # ------------------------------------------------------------ data set
    def _name_kind(self, value: int) -> None:
        """Name the KiTS label values the data set layout gives a meaning (2 tumour, 3 cyst); the
        spin box starts at 2, past background and organ."""
        name = CLASS_NAMES.get(int(value))
        self.kind_spin.setSuffix(f" ({name})" if name else "")

    @property
    def dataset_dir(self) -> Path:
        return Path(self.session.dataset_dir).expanduser()

    def set_dataset_dir(self, path: str | Path) -> None:
        """Collect into (and adapt to) ``path`` from now on."""
        text = str(path).strip()
        if text:
            self.session.dataset_dir = text
        self.folder_edit.setText(self.session.dataset_dir)

    def _choose_folder(self) -> None:
        start = next((p for p in (self.dataset_dir, *self.dataset_dir.parents) if p.is_dir()), Path.home())
        path = QFileDialog.getExistingDirectory(self, "Data set folder", str(start))
        if path:
            self.set_dataset_dir(path)

    def labels_layer(self) -> Labels | None:
        """The labels to add: the commit target if it holds any, else the shown output."""
        for layer in (self._target(), self._output()):
            if layer is not None and np.any(np.asarray(layer.data)):
                return layer
        return None

    def add_to_dataset(self) -> Any | None:
        """Add the committed instances and their image to the data set in a thread worker (returned,
        already started); None when there is nothing to add, or an add is still running."""
        if self.add_worker is not None:
            show_info("The previous volume is still being added to the data set.")
            return None
        image, labels = self._image(), self.labels_layer()
        if image is None:
            show_warning("Open a 3D image first: there is no image to add to the data set.")
            return None
        if (why := unsupported(image)) is not None:
            show_error(why)
            return None
        if labels is None:
            show_info("There are no instances to add yet: segment, then commit the instances you want to keep.")
            return None
        meta = dict(image.metadata or {})
        source = str(meta.get("source_path") or image.name)
        worker = create_worker(
            collect, self.session.dataset_dir, volume(image), np.array(labels.data, copy=True),
            tuple(float(s) for s in image.scale[-3:]), self.kind_spin.value(), meta,
            tuple(float(s) for s in labels.scale[-3:]), source,
            _connect={"returned": self._on_added, "errored": self._on_add_failed}, _start_thread=False)
        worker.finished.connect(self._on_add_finished)
        self.add_worker = worker
        self.add_button.setEnabled(False)
        self.adapt_status.setText(f"Adding '{labels.name}' on '{image.name}' to {self.session.dataset_dir}…")
        worker.start()
        return worker

    def _on_added(self, result: Any) -> None:
        verb = "added" if result.created else "updated"
        text = (f"Case {result.name} {verb}: {sum(result.voxels.values())} labelled voxels; {result.cases} "
                f"labelled volume{'s' * (result.cases != 1)} in {result.case.parent}.")
        self.adapt_status.setText(text)
        show_info(text)

    def _on_add_failed(self, error: BaseException) -> None:
        if not isinstance(error, MiqsamError):
            log.debug("adding to the data set failed", exc_info=error)
        message = str(error) if isinstance(error, MiqsamError) else \
            f"Could not add the volume to the data set ({type(error).__name__}: {error})."
        self.adapt_status.setText(message)
        show_error(message)

    def _on_add_finished(self) -> None:
        self.add_worker = None
        self.add_button.setEnabled(True)

    # ------------------------------------------------------------ adapt
    @property
    def running(self) -> bool:
        """True while an adaptation runs."""
        return self.job is not None

    def start(self, **overrides: Any) -> Any | None:
        """Adapt the selected weights to the data set for the chosen steps (``overrides``: more
        ``training.adapt.adapt`` arguments, e.g. ``steps=2`` in tests); the started ``AdaptJob``,
        or None when it was refused (one runs already, no labelled volume)."""
        if self.job is not None:
            show_warning("An adaptation is already running; wait for it or cancel it before starting another.")
            return None
        from napari_miqsam.data.datasets import list_cases
        from napari_miqsam.training.adapt_job import AdaptJob
        from napari_miqsam.user_weights import new_weights_path

        data = self.dataset_dir
        try:
            n = len(list_cases(data)) if data.is_dir() else 0
        except MiqsamError:
            n = 0
        if n == 0:
            show_warning(f"{data} holds no labelled volume yet: commit instances and 'Add to data set' first.")
            return None
        base = self.weights_combo.currentData() or "default"
        kwargs = dict(data=str(data), base=str(base), out=str(new_weights_path()), steps=self.steps_spin.value(),
                      train=self.train_combo.currentData())
        kwargs.update(overrides)
        self.job = AdaptJob(**kwargs).start()
        self._register_task(self.job)
        self.adapt_cancel_button.setEnabled(True)
        self.adapt_progress.setRange(0, 0)  # busy until the first step
        self.adapt_status.setText(f"Adapting {Path(str(base)).name if base != 'default' else 'the shipped weights'} "
                                  f"to {n} labelled volume{'s' * (n != 1)}: starting…")
        self._timer.start()
        return self.job

    def cancel(self) -> None:
        """Stop the adaptation at its next step; no weights file is written."""
        if self.job is not None:
            self.job.cancel()
            self.adapt_status.setText("Cancelling the adaptation…")

    def poll(self) -> None:
        """Take the job's events (the QTimer calls this)."""
        if self.job is None:
            return
        for event in self.job.poll():
            if event[0] == "log":
                self.adapt_status.setText(str(event[1]))
            elif event[0] == "progress":
                self._on_progress(*event[1:])
            elif event[0] == "done":
                self._done()
                self._on_adapted(event[1])
            elif event[0] == "error":
                self._done()
                self._on_adapt_failed(event[1])
        if self.job is not None and not self.job.running:  # terminated (the viewer closes)
            self._done()

    def _on_progress(self, step: int, total: int | None, minutes: float) -> None:
        fraction = step / total if total else 0.0
        self.adapt_progress.setRange(0, PROGRESS_STEPS)
        self.adapt_progress.setValue(round(min(fraction, 1.0) * PROGRESS_STEPS))
        limit = f" of {total}" if total else ""
        self.adapt_status.setText(f"Adapting: step {step}{limit}, {_duration(minutes)}…")

    def _on_adapted(self, result: Any) -> None:
        path = Path(result.weights)
        add_user_weights(self.weights_combo)
        index = next((i for i in range(self.weights_combo.count()) if self.weights_combo.itemData(i)
                      and _resolved(self.weights_combo.itemData(i)) == _resolved(path)), -1)
        if index < 0:  # outside the user weights folder (a test, a changed environment)
            self.weights_combo.addItem(path.stem, str(path))
            index = self.weights_combo.count() - 1
        self.weights_combo.setCurrentIndex(index)
        summary = result.summary()
        text = (f"New weights '{path.stem}' ({result.steps} steps in {_duration(result.minutes)}) are selected in "
                f"Weights. {summary[:1].upper()}{summary[1:]}.")
        self.adapt_status.setText(text)
        show_info(text)

    def _on_adapt_failed(self, error: BaseException) -> None:
        if isinstance(error, CancelledError):
            self.adapt_status.setText("Adaptation cancelled; no weights were written.")
            show_info("Adaptation cancelled; no weights were written.")
            return
        message = str(error) if isinstance(error, MiqsamError) else f"The adaptation failed: {error}"
        self.adapt_status.setText(message)
        show_error(message)

    def _done(self) -> None:
        self._timer.stop()
        self._finish_task()
        self.job = None
        self.adapt_cancel_button.setEnabled(False)
        self.adapt_progress.setRange(0, PROGRESS_STEPS)
        self.adapt_progress.setValue(0)

    def shutdown(self) -> None:
        """The widget closes: terminate a running adaptation (what it wrote is removed)."""
        if self.job is not None:
            self.job.terminate()
            self._done()
            self.adapt_status.setText("Adaptation stopped: the widget was closed.")

    # ------------------------------------------------------------ the viewer's task list
    def _register_task(self, job: Any) -> None:
        """List the job among the viewer's running tasks, as napari's own thread workers are: closing
        the viewer then asks first and terminates it (the callback holds only the job)."""
        window = getattr(self.viewer, "window", None)
        register = getattr(window, "_register_task_status", None)
        if register is None:
            return
        from napari.utils.task_status import Status

        def stop(job: Any = job) -> bool:
            if job.running:
                job.terminate()
            return True

        try:
            self._task = (window, register("napari-miqsam", Status.BUSY, "adapting the model to your data", stop))
        except Exception:  # noqa: BLE001 - a napari without this hook: closing the widget still stops it
            self._task = None

    def _finish_task(self) -> None:
        if self._task is None:
            return
        window, task = self._task
        self._task = None
        from napari.utils.task_status import Status

        try:
            window._update_task_status(task, Status.COMPLETED)
        except Exception:  # noqa: BLE001 - the window is gone
            pass
