"""Prediction results: per-instance masks and scores in the ORIGINAL voxel grid.

Thresholding is a pure function of a cached ``Prediction`` (no model call):
``labels(threshold, min_volume)`` paints the instances whose score >= threshold and whose volume
>= min_volume (the instance under a positive click is always kept), higher scores winning overlaps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

#: Default confidence threshold: where instance F1 peaks on validation phantoms (seeds 900000+;
#: ``python benchmarks/tune_threshold.py --cases 20 --clicks 3 --thresholds 0.1,0.15,0.2,0.25,0.3,0.4``)
#: with Dice near its best, re-checked when the weights and the model grid changed (evidence:
#: docs/experiments.md). Used by the widget, the CLI and evaluation.
DEFAULT_THRESHOLD = 0.2

#: Default smallest instance shown, in the spacing's units cubed (mm³ for CT): 50 mm³ is a sphere
#: of 4.6 mm diameter, under the ~5 mm below which a CT report calls a focal lesion "too small to
#: characterise". Most false pieces under it are crumbs of a lesion already found or specks of
#: background, so hiding them raises precision without losing a found lesion; a higher floor starts
#: to hide real ones (``python benchmarks/tune_threshold.py --cases 20 --clicks 3 --min-volume
#: 0,10,20,30,50,80``; evidence: docs/experiments.md). The instance under a positive click is never
#: hidden by it; 0 shows all.
DEFAULT_MIN_VOLUME = 50.0

#: Names of the lesion kinds of weights with two and no ``kind_names`` of their own (files written
#: before training recorded the names, all trained on the KiTS labelling our phantoms share): training
#: maps label 2 to kind 0 and label 3 to kind 1 (``training.sampling.LESION_CLASSES``).
KIND_NAMES = ("tumour", "cyst")


def named_kinds(n_kinds: int, metadata: dict | None = None) -> tuple[str, ...]:
    """The names of weights' ``n_kinds`` lesion kinds: their ``kind_names`` metadata (a JSON list,
    written by training from the data set's labels), else :data:`KIND_NAMES` for two, else none
    (then kinds go by number, 1..n). Names are lower-case; unusable metadata counts as none."""
    value = (metadata or {}).get("kind_names")
    if value is not None:
        try:
            names = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            names = None
        if (isinstance(names, (list, tuple)) and len(names) == n_kinds
                and all(isinstance(n, str) and n.strip() for n in names)
                and len({n.strip().lower() for n in names}) == n_kinds):
            return tuple(n.strip().lower() for n in names)
    return KIND_NAMES if n_kinds == len(KIND_NAMES) else ()


@dataclass
class Instance:
    """One predicted instance.

    score: confidence in [0, 1]. bbox: (z, y, x) slices into the original volume.
    mask: bool array of the bbox's shape (treated as read-only: its voxel count and centroid are
    computed once, so re-thresholding a cached Prediction does not recount them).
    """

    score: float
    bbox: tuple[slice, slice, slice]
    mask: np.ndarray

    @cached_property
    def voxels(self) -> int:
        return int(np.count_nonzero(self.mask))

    @cached_property
    def _centroid(self) -> tuple[float, float, float]:
        return mask_centroid(self.mask, self.bbox)

    def centroid(self) -> tuple[float, float, float]:
        return self._centroid


def mask_centroid(mask: np.ndarray, bbox) -> tuple[float, float, float]:
    """Mean (z, y, x) of a bbox-local mask, in the full volume's voxel coordinates."""
    # from the mask's projections onto the axes: ~7x faster than np.nonzero's index arrays, which
    # the re-threshold of a large volume spent a third of its time in
    n = np.count_nonzero(mask)
    yx = np.count_nonzero(mask, axis=0)
    profiles = (np.count_nonzero(mask, axis=(1, 2)), yx.sum(axis=1), yx.sum(axis=0))
    return tuple(float(p @ np.arange(len(p)) / n + s.start) for p, s in zip(profiles, bbox))


@dataclass
class Prediction:
    """All instances found for one prompt, sorted by descending score.

    Label id k (1-based) always denotes ``instances[k - 1]``, whatever the threshold, so ids stay
    stable while a user moves the threshold. ``kind``: the lesion-kind distribution the prediction
    looked for (read by the model at the clicks, or given), one probability per kind of the
    weights; None for weights without a kind head. ``kind_names``: the weights' names of those
    kinds (``Predictor.kind_names``); empty: :func:`named_kinds`'s fallback. ``gated``: (score,
    volume mm³) of each piece the kind gate dropped as another kind (:meth:`hidden_by_kind_gate`).
    ``read_as``: how the image's values were read, 'ct' (HU window) or 'other' (percentiles).
    ``below_window``: how many positive clicks lie where the CT window clips the image to its floor
    (``window_floor_hu``): the network reads that spot as flat as air (:meth:`below_window_note`).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    instances: list[Instance] = field(default_factory=list)
    positive: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    negative: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    kind: tuple[float, ...] | None = None
    kind_names: tuple[str, ...] = ()
    gated: tuple[tuple[float, float], ...] = ()
    read_as: str | None = None
    below_window: int = 0
    window_floor_hu: float | None = None

    def __post_init__(self) -> None:
        self.instances.sort(key=lambda inst: -inst.score)

    def __len__(self) -> int:
        return len(self.instances)

    def kind_summary(self) -> str | None:
        """The kind looked for and its probability, e.g. ``"tumour (0.93)"``; None without a kind
        head or with a single lesion kind (nothing to tell apart)."""
        if self.kind is None or len(self.kind) < 2:
            return None
        k = int(np.argmax(self.kind))
        names = self.kind_names if len(self.kind_names) == len(self.kind) else named_kinds(len(self.kind))
        name = names[k] if names else f"kind {k + 1} of {len(self.kind)}"
        return f"{name} ({self.kind[k]:.2f})"

    def values_read(self) -> str | None:
        """How the image's values were read, for a user: ``'CT (HU window)'`` or ``'not CT
        (percentiles)'``; None when unknown."""
        return {"ct": "CT (HU window)", "other": "not CT (percentiles)"}.get(self.read_as)

    def below_window_note(self) -> str | None:
        """For a user, when positive clicks lie below the CT window's floor (lung, ground glass,
        anything under about -160 HU reads as flat as air to the network): what that means; else
        None."""
        if not self.below_window or self.window_floor_hu is None:
            return None
        n = self.below_window
        where = "the click lies" if n == 1 and len(self.positive) == 1 else f"{n} of the positive clicks lie"
        return (f"{where} below the CT window (under {self.window_floor_hu:g} HU), where the network sees only a "
                "flat floor: it cannot find a lesion there (ground glass in lung is one)")

    def hidden_by_kind_gate(self, threshold: float = DEFAULT_THRESHOLD,
                            min_volume: float = DEFAULT_MIN_VOLUME) -> int:
        """How many pieces the kind gate dropped that would be shown without it at ``threshold``
        and ``min_volume`` (their volume measured on the model's stride-2 grid): what a user
        misses if the model splits one kind of lesion in two (on scans unlike its training data
        it can: docs/experiments.md, "Exemplar-relative rescue")."""
        return sum(1 for score, volume in self.gated if score >= threshold and volume >= min_volume)

    @property
    def scores(self) -> np.ndarray:
        return np.array([inst.score for inst in self.instances], dtype=float)

    @property
    def volumes(self) -> np.ndarray:
        """Each instance's own volume (voxels times the voxel volume of ``spacing``), (n,)."""
        voxel = float(np.prod(self.spacing))
        return np.array([inst.voxels * voxel for inst in self.instances], dtype=float)

    def _holds(self) -> np.ndarray:
        """(instances, positive clicks) bool: the instance contains the click (rounded to the nearest voxel)."""
        pts = np.round(np.asarray(self.positive, dtype=float)).astype(int).reshape(-1, 3)
        out = np.zeros((len(self.instances), len(pts)), dtype=bool)
        for k, inst in enumerate(self.instances):
            for j, p in enumerate(pts):
                local = tuple(int(p[a]) - inst.bbox[a].start for a in range(3))
                out[k, j] = all(0 <= local[a] < inst.mask.shape[a] for a in range(3)) and bool(inst.mask[local])
        return out

    def clicked(self) -> np.ndarray:
        """(n,) bool: the instance contains a positive click (rounded to the nearest voxel)."""
        return self._holds().any(axis=1)

    def empty_clicks(self) -> int:
        """How many positive clicks lie in no instance at all (at any threshold): the model read
        the clicked spot as background. Out of family this happens to about half of the clicks
        (README, "When a click finds nothing")."""
        return int(np.count_nonzero(~self._holds().any(axis=0)))

    def shown(self, threshold: float = DEFAULT_THRESHOLD, min_volume: float = DEFAULT_MIN_VOLUME) -> list[int]:
        """Indices of the instances shown: score >= threshold and (volume >= min_volume or clicked)."""
        if not self.instances:
            return []
        keep = self.scores >= threshold
        small = keep & (self.volumes < min_volume)
        if small.any():  # only then does it matter which instance holds the click
            keep &= ~small | self.clicked()
        return [int(k) for k in np.nonzero(keep)[0]]

    def count(self, threshold: float = DEFAULT_THRESHOLD, min_volume: float = DEFAULT_MIN_VOLUME) -> int:
        return len(self.shown(threshold, min_volume))

    def labels(self, threshold: float = DEFAULT_THRESHOLD,
               min_volume: float = DEFAULT_MIN_VOLUME) -> tuple[np.ndarray, list[dict]]:
        """Label volume (uint16, original shape; 0 = background) and one table row per shown instance.

        Shown: score >= ``threshold`` and own volume >= ``min_volume`` (spacing units cubed; the
        instance under a positive click is always kept). Rows: ``id``, ``score``, ``voxels``,
        ``volume_mm3``, ``centroid`` (z, y, x voxel floats). Overlapping voxels go to the instance
        with the higher score.
        """
        out = np.zeros(self.shape, dtype=np.uint16)
        shown = self.shown(threshold, min_volume)
        for k in reversed(shown):  # lowest score first, so higher scores overwrite
            inst = self.instances[k]
            np.copyto(out[inst.bbox], np.uint16(k + 1), where=inst.mask)
        voxel_mm3 = float(np.prod(self.spacing))
        rows = []
        # only a higher-scoring shown instance whose box meets this one's can have taken voxels from
        # it; any other instance's row is its own cached count and centroid
        lo = np.array([[b.start for b in self.instances[k].bbox] for k in shown]).reshape(-1, 3)
        hi = np.array([[b.stop for b in self.instances[k].bbox] for k in shown]).reshape(-1, 3)
        meets = np.all((lo[:, None] < hi[None]) & (lo[None] < hi[:, None]), axis=2)
        for j, k in enumerate(shown):
            inst = self.instances[k]
            own = out[inst.bbox] == k + 1 if meets[j, :j].any() else None
            n = inst.voxels if own is None else int(np.count_nonzero(own))
            if n == 0:
                continue
            centroid = inst.centroid() if own is None else mask_centroid(own, inst.bbox)
            rows.append({"id": k + 1, "score": float(inst.score), "voxels": n,
                         "volume_mm3": n * voxel_mm3, "centroid": centroid})
        return out, rows
