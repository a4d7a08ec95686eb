"""The widget's state without Qt or napari: one object a test can drive with plain Python.

:class:`Session` holds what the dock widget remembers between clicks:

- the predictor cache: one predictor per image (a weak reference to any object, in the widget a
  napari layer), valid for the current :class:`Settings` and the image's data version;
- newest prompt wins: every request gets a sequence number; a run in flight is superseded and the
  newest request runs after it; a result that is not the newest is dropped;
- the current :class:`~napari_miqsam.inference.prediction.Prediction`, the instance ids the user
  deleted, and the step threshold / min volume -> label volume and table rows (no model call);
- what the output showed after each of the widget's writes, so that an undo / redo of the output
  layer brings the rows back (matched by the voxel count of each label).

It talks to the inference layer only through ``Predictor`` / ``Prediction`` public API (via
:mod:`._worker`), imports neither Qt nor napari nor torch, and never touches a tensor.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_miqsam.errors import MiqsamError
from napari_miqsam.inference.options import PredictOptions
from napari_miqsam.inference.prediction import DEFAULT_MIN_VOLUME, DEFAULT_THRESHOLD

from ._worker import Job, JobResult, ProgressFn, load_predictor, run_job

MAX_SNAPSHOTS = 64

#: What became of a finished run (:attr:`Finished.status`).
SHOWN = "shown"  # the newest run's prediction is now the session's prediction
STALE = "stale"  # the image's data changed during the run: its result is dropped and it runs again
FAILED = "failed"  # the newest run stopped with an error (cancelled included), see Finished.error
DROPPED = "dropped"  # superseded by a newer request, or its image is gone: nothing to show


@dataclass(frozen=True)
class Settings:
    """What a predictor is built from; a change makes every cached predictor stale.

    ``weights``: a .safetensors path, None for the shipped default. ``device``: auto, cpu, cuda,
    mps. ``fast``: the predictor runs on a grid 15% coarser than the weights ask for.
    ``modality``: how the image's intensities are read: 'auto' (CT when the values look like HU),
    'ct' (the HU window), 'other' (MR, microscopy: percentiles).
    """

    weights: str | None = None
    device: str = "auto"
    fast: bool = False
    modality: str = "auto"


@dataclass
class _Cached:
    """The cached predictor of one image and the data version it has embedded."""

    source: weakref.ref
    predictor: Any | None = None
    embedded_version: int | None = None
    data_version: int = 0


@dataclass(frozen=True)
class _Snapshot:
    """What the output showed after one write: its rows, prediction and deleted ids."""

    counts: dict[int, int]
    rows: list[dict]
    prediction: Any
    deleted: frozenset


@dataclass(frozen=True)
class Finished:
    """What :meth:`Session.finish` made of a run: a status, and whether to run again now."""

    job: Job
    status: str
    error: BaseException | None = None
    #: the run loaded untrained weights, first time for these (weights, device): tell the user
    untrained: bool = False
    #: a newer request (or a stale result) is waiting: start a run for the current prompts
    rerun: bool = False


def label_counts(labels: np.ndarray) -> dict[int, int]:
    """Voxels per non-zero label id of a label volume."""
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64, copy=False))
    return {int(i): int(counts[i]) for i in np.flatnonzero(counts) if i != 0}


def unsupported_volume(name: str, shape: Sequence[int], rgb: bool = False) -> str | None:
    """Why an image of ``shape`` cannot be segmented (with what to do), or None for 3D grey values."""
    shape = tuple(int(n) for n in shape)
    if rgb:
        return (
            f"MIQ-SAM3D needs a 3D (z, y, x) grey-value volume; '{name}' is an RGB image {shape}. "
            "Right-click the layer, choose 'Split RGB' and pick one channel as Image."
        )
    if len(shape) == 4:
        return (
            f"MIQ-SAM3D needs a 3D (z, y, x) volume; '{name}' is 4D {shape}, e.g. several channels. "
            "Choose one channel: right-click the layer, choose 'Split Stack' and pick one channel as Image."
        )
    if len(shape) != 3:
        return (
            f"MIQ-SAM3D needs a 3D (z, y, x) image; '{name}' has {len(shape)} "
            f"dimension{'s' if len(shape) != 1 else ''} {shape}."
        )
    return None


def is_out_of_memory(error: BaseException) -> bool:
    """Host or device out of memory (torch reports CUDA / MPS exhaustion as a RuntimeError)."""
    return isinstance(error, MemoryError) or "out of memory" in str(error).lower()


def error_message(error: BaseException, device: str) -> str:
    """The sentence a user reads for a failed run on ``device`` (what happened, what to do)."""
    if is_out_of_memory(error):
        if device == "cpu":
            return (
                "MIQ-SAM3D ran out of memory on the CPU: crop the image to a smaller window around the "
                "lesions (or close other programs), then run again."
            )
        return (
            f"MIQ-SAM3D ran out of memory (device '{device}'): choose 'cpu' as Device, or crop the image "
            "to a smaller window around the lesions, then run again."
        )
    if isinstance(error, MiqsamError):
        return str(error)
    return f"MIQ-SAM3D failed unexpectedly ({type(error).__name__}: {error})."


def rows_from_labels(labels: np.ndarray, voxel_mm3: float, known: Sequence[dict] = ()) -> list[dict]:
    """Table rows of a label volume; a label whose (id, voxels) matches a ``known`` row keeps its
    score, any other gets NaN (an edit nobody scored)."""
    from scipy import ndimage

    counts = label_counts(labels)
    scores = {(int(r["id"]), int(r["voxels"])): float(r["score"]) for r in known}
    ids = sorted(counts)
    data = np.asarray(labels)
    centroids = ndimage.center_of_mass(np.ones(data.shape, bool), data, ids) if ids else []
    return [
        {
            "id": i,
            "score": scores.get((i, counts[i]), float("nan")),
            "voxels": counts[i],
            "volume_mm3": counts[i] * voxel_mm3,
            "centroid": tuple(float(c) for c in centroid),
        }
        for i, centroid in zip(ids, centroids)
    ]


class Session:
    """Predictor cache, newest-prompt-wins sequencing, current prediction and its shown instances.

    A run's life: :meth:`request` (a new prompt; False while a run is in flight, which it
    supersedes), :meth:`start` (a :class:`Job` for an image), :meth:`execute` on any thread,
    :meth:`finish` back on the caller's thread. Images are any weak-referenceable objects; the
    session keys its cache on their identity and never reads them.
    """

    def __init__(self, predictor_factory: Callable[[str | None, str], Any] = load_predictor) -> None:
        #: ``(weights, device) -> Predictor``; :meth:`execute` calls it on the worker thread when
        #: an image has no cached predictor. Tests may pass e.g. an untrained tiny model's factory.
        self.predictor_factory = predictor_factory
        self.prediction: Any | None = None
        #: ids of the current prediction's instances the user removed
        self.deleted: set[int] = set()
        #: the table rows shown now (dicts with id, score, voxels, volume_mm3, centroid)
        self.rows: list[dict] = []
        self.job: Job | None = None
        self.pending = False
        self.user_cancelled = False
        self.seq = 0
        self._settings = Settings()
        self._cache: dict[int, _Cached] = {}
        self._snapshots: list[_Snapshot] = []
        self._warned_untrained: set[tuple] = set()
        #: the data set folder "Add to data set" writes and "Adapt to my data" trains on (the widget
        #: sets its default, ``user_weights.user_dataset_dir()``, and the user's choice)
        self.dataset_dir: str | None = None

    # ------------------------------------------------------------ predictor cache
    @property
    def settings(self) -> Settings:
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        """Other weights, device, grid or intensity reading: every cached predictor is forgotten."""
        if settings != self._settings:
            self._cache.clear()
        self._settings = settings

    def forget_predictors(self) -> None:
        self._cache.clear()

    def predictor(self, image: Any) -> Any | None:
        """The cached predictor of ``image`` (None until a run on it has loaded one)."""
        entry = self._cache.get(id(image))
        return entry.predictor if entry is not None and entry.source() is image else None

    def needs_embedding(self, image: Any) -> bool:
        """True when a run on ``image`` must embed it first (no predictor, or new data)."""
        entry = self._cache.get(id(image))
        if entry is None or entry.source() is not image:
            return True
        return entry.predictor is None or entry.embedded_version != entry.data_version

    def image_changed(self, image: Any) -> None:
        """``image``'s data was replaced: its embedding is stale (and so is a run on it in flight)."""
        entry = self._cache.get(id(image))
        if entry is not None and entry.source() is image:
            entry.data_version += 1

    def forget_image(self, image: Any) -> None:
        """``image`` is gone: drop its predictor, cancel a run on it and the run queued after it."""
        self._cache.pop(id(image), None)
        if self.job is not None and self.job.image_key == id(image):
            self.pending = False
            self.job.cancel()

    def _entry(self, image: Any) -> _Cached:
        entry = self._cache.get(id(image))
        if entry is None or entry.source() is not image:
            entry = _Cached(source=weakref.ref(image))
            self._cache[id(image)] = entry
        return entry

    # ------------------------------------------------------------ newest prompt wins
    @property
    def running(self) -> bool:
        """True while a run is in flight."""
        return self.job is not None

    @property
    def busy(self) -> bool:
        """True while a run is in flight or queued behind it."""
        return self.job is not None or self.pending

    def request(self) -> bool:
        """A new prompt. True: start a run now. False: a run is in flight; it is superseded (its
        embedding still finishes) and the newest request runs when it returns."""
        self.seq += 1
        if self.job is not None:
            self.pending = True
            self.job.supersede()
            return False
        return True

    def start(self, image: Any, volume: Any, spacing: Sequence[float], positive: Sequence, negative: Sequence = (),
              *, options: PredictOptions | None = None) -> Job:
        """The job for the newest request on ``image``: ``volume`` its (z, y, x) array, ``spacing``
        in mm, prompt points in (z, y, x) voxel coordinates of ``volume``; ``options`` for
        ``predict`` (None: the defaults; the widget's: ``PredictOptions.from_widget``)."""
        entry = self._entry(image)
        settings = self._settings
        self.job = Job(
            seq=self.seq,
            image_key=id(image),
            image_ref=weakref.ref(image),
            image_version=entry.data_version,
            volume=volume,
            spacing=tuple(float(s) for s in spacing),
            positive=list(positive),
            negative=list(negative),
            predictor=entry.predictor,
            embed=self.needs_embedding(image),
            weights=settings.weights,
            device=settings.device,
            options=PredictOptions() if options is None else options,
            fast=settings.fast,
            modality=settings.modality,
        )
        self.user_cancelled = False
        return self.job

    def execute(self, job: Job, report: ProgressFn | None = None) -> JobResult:
        """Run ``job`` (any thread); never raises, the error comes back in the result."""
        return run_job(job, report, loader=self.predictor_factory)

    def cancel(self) -> bool:
        """The user stops the run in flight (True when there was one) and drops the queued one."""
        self.pending = False
        if self.job is None:
            return False
        self.user_cancelled = True
        self.job.cancel()
        return True

    def shutdown(self) -> None:
        """Stop everything without it counting as the user's cancel."""
        self.pending = False
        if self.job is not None:
            self.job.cancel()

    def finish(self, result: JobResult, image: Any | None, volume: Any | None = None) -> Finished:
        """Take a run's result back. ``image``: its image if that still exists (else None);
        ``volume``: the array that image holds now (a different one: the result is stale)."""
        job = result.job
        self.job = None
        entry = self._cache.get(job.image_key)
        same_settings = Settings(job.weights, job.device, job.fast, job.modality) == self._settings
        if image is not None and entry is not None and entry.source() is image and same_settings:
            if result.predictor is not None:
                entry.predictor = result.predictor
            if result.embedded:
                entry.embedded_version = job.image_version
            elif job.embed:
                entry.embedded_version = None  # a cancelled or failed embedding
        untrained = False
        if result.predictor is not None and not getattr(result.predictor, "trained", True):
            untrained = (job.weights, job.device) not in self._warned_untrained
            self._warned_untrained.add((job.weights, job.device))
        current = job.seq == self.seq and not job.superseded()
        status, error = DROPPED, None
        if current and image is not None and not job.cancelled() and self._is_stale(job, volume, entry):
            status = STALE
            self.pending = True
        elif current and result.error is not None:
            status, error = FAILED, result.error
        elif current and result.prediction is not None and image is not None:
            status = SHOWN
            self.accept(result.prediction)
        rerun, self.pending = self.pending, False
        return Finished(job, status, error, untrained, rerun)

    @staticmethod
    def _is_stale(job: Job, volume: Any | None, entry: _Cached | None) -> bool:
        replaced = volume is not None and volume is not job.volume
        return replaced or (entry is not None and entry.data_version != job.image_version)

    # ------------------------------------------------------------ instances shown
    def accept(self, prediction: Any) -> None:
        """Make ``prediction`` the current one, with none of its instances deleted."""
        self.prediction = prediction
        self.deleted = set()

    def clear(self) -> None:
        """No prediction, nothing shown, no history (the output layer is gone)."""
        self.prediction = None
        self.deleted = set()
        self.rows = []
        self._snapshots.clear()

    def labels(self, threshold: float = DEFAULT_THRESHOLD,
               min_volume: float = DEFAULT_MIN_VOLUME) -> tuple[np.ndarray, list[dict]]:
        """The label volume and rows of the current prediction at ``threshold`` (score) and
        ``min_volume`` (mm³), deleted instances left out; they become :attr:`rows`. Label id k is
        always instance k of the prediction, whatever the threshold. No model call."""
        if self.prediction is None:
            raise RuntimeError("no prediction yet: accept one (a finished run) before thresholding")
        labels, rows = self.prediction.labels(threshold, min_volume)
        labels = np.asarray(labels)
        dropped = [int(r["id"]) for r in rows if int(r["id"]) in self.deleted]
        if dropped:
            lut = np.arange(int(labels.max()) + 1, dtype=labels.dtype)
            lut[dropped] = 0
            labels = lut[labels]
            rows = [r for r in rows if int(r["id"]) not in self.deleted]
        self.rows = list(rows)
        return labels, list(rows)

    def summary(self, threshold: float, min_volume: float) -> str:
        """One line on what is shown: the count, the thresholds and the kind the click was read as."""
        n = len(self.rows)
        volume = f" and volume ≥ {min_volume:g} mm³" if min_volume > 0 else ""
        kind = self.prediction.kind_summary() if self.prediction is not None else None
        looked_for = f" Click read as {kind}." if kind else ""
        hidden = self.prediction.hidden_by_kind_gate(threshold, min_volume) if self.prediction is not None else 0
        gate = (f" The kind gate hid {hidden} more read as another kind (untick it to see them)." if hidden else "")
        empty = self.prediction.empty_clicks() if self.prediction is not None else 0
        missed = (f" Nothing found under {empty} of your clicks: the model read {'that spot' if empty == 1 else 'those spots'} "
                  "as background (README: When a click finds nothing)." if empty else "")
        values = self.prediction.values_read() if self.prediction is not None and self._settings.modality == "auto" else None
        read = f" Values read as {values}." if values else ""
        floor = self.prediction.below_window_note() if self.prediction is not None else None
        below = f" {floor[0].upper()}{floor[1:]}." if floor else ""
        return (f"{n} instance{'s' if n != 1 else ''} with confidence ≥ {threshold:.2f}{volume}."
                f"{looked_for}{read}{gate}{missed}{below}")

    def row(self, instance_id: int) -> dict | None:
        return next((r for r in self.rows if int(r["id"]) == int(instance_id)), None)

    def delete(self, instance_id: int) -> None:
        """Leave instance ``instance_id`` out of what is shown, at any threshold, until a new result."""
        self.deleted.add(int(instance_id))
        self.rows = [r for r in self.rows if int(r["id"]) != int(instance_id)]

    # ------------------------------------------------------------ undo / redo
    def remember(self, labels: np.ndarray) -> None:
        """The output now shows ``labels``: remember the rows, prediction and deletions that go with it."""
        self._snapshots.append(_Snapshot(label_counts(labels), list(self.rows), self.prediction,
                                         frozenset(self.deleted)))
        del self._snapshots[:-MAX_SNAPSHOTS]

    def forget_history(self) -> None:
        self._snapshots.clear()

    def restore(self, labels: np.ndarray, voxel_mm3: float) -> list[dict]:
        """The output shows ``labels`` after an undo or redo: take back the state remembered with
        them (the newest with the same voxels per label), else rows read from the labels."""
        counts = label_counts(labels)
        for snapshot in reversed(self._snapshots):
            if snapshot.counts == counts:
                self.prediction = snapshot.prediction
                self.deleted = set(snapshot.deleted)
                self.rows = list(snapshot.rows)
                return list(self.rows)
        known = [r for s in self._snapshots for r in s.rows]
        self.rows = rows_from_labels(labels, voxel_mm3, known)
        return list(self.rows)
