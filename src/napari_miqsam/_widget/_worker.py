"""The part of a widget run that happens off the GUI thread.

A :class:`Job` is a frozen description of one request (which volume, which prompt points, which
predictor); :func:`run_job` loads the predictor if needed, embeds the volume if needed, predicts,
and always *returns* a :class:`JobResult`: exceptions are caught and carried back, so a failing
run becomes a notification in the widget and never a traceback in the console.

Nothing here imports napari, Qt or torch; the model's library is imported lazily on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_miqsam.inference.options import PredictOptions

Point = tuple[float, float, float]
ProgressFn = Callable[[str, int, int], None]


@dataclass
class Job:
    """One prediction request, built on the GUI thread and run on a worker thread.

    ``image_ref`` is a weak reference to the source layer (the worker never touches it).
    ``positive`` / ``negative`` are (z, y, x) voxel coordinates of ``volume``; ``spacing`` is
    (z, y, x) in mm. ``predictor`` is the cached predictor for this image layer (None: load one
    from ``weights`` on ``device``); ``embed`` says whether ``set_image`` must run first.
    ``options``: passed to ``predict`` (the kind gate and growing, from the widget's check boxes:
    ``PredictOptions.from_widget``). ``fast``: a newly loaded predictor runs on
    a grid 15% coarser than the one the weights ask for (``Predictor.fast_spacing``; the shipped
    weights: 1.5 instead of 1.3 mm). ``modality``: how intensities are read (``set_image``'s
    'auto', 'ct' for the HU window, 'other' for percentiles).
    """

    seq: int
    image_key: int
    image_ref: Callable[[], Any] | None
    image_version: int
    volume: Any
    spacing: tuple[float, float, float]
    positive: Sequence[Point]
    negative: Sequence[Point]
    predictor: Any | None
    embed: bool
    weights: str | None
    device: str
    options: PredictOptions = field(default_factory=PredictOptions)
    fast: bool = False
    modality: str = "auto"
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _superseded: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        """Ask the run to stop at its next checkpoint (between windows)."""
        self._cancel.set()

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def supersede(self) -> None:
        """A newer prompt arrived: finish the embedding (still useful) but skip the prediction."""
        self._superseded.set()

    def superseded(self) -> bool:
        return self._superseded.is_set()

    def stopped(self) -> bool:
        """True when the prediction step should not run or should stop."""
        return self._cancel.is_set() or self._superseded.is_set()


@dataclass
class JobResult:
    """What came back from :func:`run_job`: a prediction, or the error that stopped it.

    ``embedded`` is True when the predictor now holds the embedding of ``job``'s volume, so the
    widget can cache the predictor for that image version.
    """

    job: Job
    predictor: Any | None = None
    prediction: Any | None = None
    error: BaseException | None = None
    embedded: bool = False


def load_predictor(weights: str | None, device: str) -> Any:
    """The predictor for ``weights`` (None: shipped default) on ``device``; lazy library import."""
    from napari_miqsam.inference.predictor import Predictor

    return Predictor.from_weights(weights, device=device)


def run_job(job: Job, report: ProgressFn | None = None, loader: Callable[..., Any] = load_predictor) -> JobResult:
    """Run ``job`` to the end; never raises (the error is returned in the result)."""
    result = JobResult(job=job, predictor=job.predictor, embedded=not job.embed)

    def progress(stage: str) -> Callable[[int, int], None]:
        def _report(done: int, total: int) -> None:
            if report is not None:
                report(stage, int(done), int(total))

        return _report

    try:
        if result.predictor is None:
            progress("Loading model")(0, 0)
            result.predictor = loader(job.weights, job.device)
            if job.fast and hasattr(result.predictor, "set_model_spacing"):
                result.predictor.set_model_spacing(result.predictor.fast_spacing())
        if job.embed:
            volume = np.asarray(job.volume)
            result.predictor.set_image(
                volume, spacing=job.spacing, modality=job.modality, progress=progress("Embedding volume"),
                cancel=job.cancelled,
            )
            result.embedded = True
        if job.cancelled():
            from napari_miqsam.errors import CancelledError

            raise CancelledError("The run was cancelled.")
        if job.superseded():
            return result
        progress("Predicting")(0, 0)
        result.prediction = result.predictor.predict(
            job.positive, job.negative, options=job.options, progress=progress("Predicting"), cancel=job.stopped
        )
    except BaseException as exc:  # noqa: BLE001 - every failure is reported to the user
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        result.error = exc
    return result
