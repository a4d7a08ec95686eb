"""Where training cases come from: generated phantoms or a real dataset on disk, through a small
pool of prepared cases that is refreshed as training goes (cases sharded across ranks)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..model.config import MIQSAMConfig
from .sampling import LESION_CLASSES, PreparedCase, prepare_case

TRAIN_SEED_OFFSET = 1_000_000  # phantom seeds used for training start here; evaluation uses 0..999_999


#: Generated training data (``--data``): the phantoms (two fixed kinds, tumour and cyst), the
#: randomized phantoms (``data.randomized``: 1-4 lesion kinds of random appearance per volume,
#: randomized anatomy and acquisition) or both, alternating case by case; ``phantom-varied``: the
#: phantoms with tumours of varied look (round, sharp-edged or homogeneous too, ``data.phantom.lesions``);
#: ``phantom-wide``: varied, with wider tumour edges and textures, organ texture and scanner noise.
GENERATED = ("phantom", "randomized", "phantom+randomized", "phantom-varied", "phantom-wide")
PHANTOMS = ("phantom", "phantom-varied", "phantom-wide")  # labelled as KiTS: 2 tumour, 3 cyst
RANDOMIZED_CLASSES = (2, 3, 4, 5)  # the randomized phantoms' lesion kinds 1..4


def is_generated(data: str) -> bool:
    """Whether ``--data`` names generated phantoms rather than a data set folder."""
    return data in GENERATED


def _maker(name: str) -> Callable:
    """The generator of one kind of generated phantom: make(seed, shape=...) -> Case."""
    if name in PHANTOMS:
        from functools import partial

        from ..data.phantom import make_phantom
        return partial(make_phantom, look=name.partition("-")[2] or "default")
    from ..data.randomized import make_randomized_phantom
    return make_randomized_phantom


def case_loader(data: str, fmt: str = "auto", seed: int = 0, cases: int = 2000,
                phantom_shape: tuple | None = None, hold_out: int = 0,
                exclude: Sequence[str] = ()) -> tuple[int, Callable[[int], tuple], list]:
    """(number of training cases, load(i) -> (image, labels, spacing, name), held-out cases) for
    ``data``: one of :data:`GENERATED` or a folder. A folder's last cases (:func:`held_out_cases`,
    up to ``hold_out``) are kept for validation: ``load`` reaches only the cases before them, and
    never the cases named in ``exclude``."""
    if is_generated(data):
        makers = tuple(_maker(name) for name in data.split("+"))

        def load(i: int):
            make = makers[i % len(makers)]
            c = make(TRAIN_SEED_OFFSET + seed * 100_000 + i, shape=phantom_shape)
            return c.image, c.labels, c.spacing, c.name
        return cases, load, []
    from ..data.datasets import list_cases

    refs = list_cases(Path(data), fmt)
    held = held_out_cases(refs, hold_out)
    refs = [r for r in refs[:len(refs) - len(held)] if r.name not in set(exclude)]
    if not refs:
        from ..errors import InputError
        raise InputError(f"{data}: no case left to train on ({len(held)} held out, {len(exclude)} excluded)")

    def load_ref(i: int):
        c = refs[i].load()
        return c.image, c.labels, c.spacing, c.name
    return len(refs), load_ref, held


def held_out_cases(refs: list, wanted: int = 4) -> list:
    """The cases of a data set folder (``refs``, in ``data.datasets.list_cases`` order) kept out of
    training to validate on (``--val-every``): its last ``wanted`` cases, at most a fifth of the set
    (none below five cases). Phantoms validate on the held-out seeds 900000+ instead."""
    n = min(wanted, len(refs) // 5) if wanted > 0 else 0
    return refs[len(refs) - n:] if n else []


LABEL_SCAN_CASES = 5  # cases read to find an MSD set's lesion labels when it has no dataset.json


def lesion_labels(data: str, fmt: str = "auto", kinds: int = len(LESION_CLASSES),
                  load: Callable[[int], tuple] | None = None, n_cases: int = LABEL_SCAN_CASES) -> tuple[int, ...]:
    """The label values trained as lesion kinds 0, 1, ... (at most ``kinds``): the data set's own
    (``data.datasets.dataset_lesion_classes``: phantoms and KiTS 2 tumour, 3 cyst; LiTS 2; MSD from
    its ``dataset.json``, so Task06 Lung's and Task10 Colon's cancer, label 1, is a lesion too), or,
    for an MSD set without one, the same rule over the labels found in its first ``n_cases`` cases
    (``load(i)``, so at most the set's size; several, since a Task03 case without a tumour shows
    only its liver, label 1)."""
    from ..data.datasets import dataset_lesion_classes, lesion_classes_in

    if is_generated(data) and data not in PHANTOMS:
        return RANDOMIZED_CLASSES[:kinds]
    classes = dataset_lesion_classes(data, fmt)
    if classes is None and load is not None:
        seen = set()
        for i in range(max(1, n_cases)):
            seen.update(int(v) for v in np.unique(load(i)[1]))
        classes = lesion_classes_in(np.asarray(sorted(seen | {0}), dtype=np.intp))
    if not classes:
        classes = list(LESION_CLASSES)
    return tuple(int(c) for c in classes[:kinds])


def kind_names(data: str, fmt: str = "auto", kinds: int = len(LESION_CLASSES),
               classes: Sequence[int] | None = None) -> list[str]:
    """The names of the ``kinds`` lesion kinds a network trained on ``data`` tells apart, in kind
    order (kind k is label ``classes[k]``, default ``LESION_CLASSES``): from the data set
    (``data.datasets.lesion_names``), ``"label N"`` where it names none, ``"unused kind k"`` for a
    kind the data set has no label for (Task06 Lung trains one kind of two). Written into the
    weights (``kind_names``) so the widget and ``miqsam predict`` say "tumour" or "cancer" as the
    data did."""
    from ..data.datasets import lesion_names

    classes = tuple(LESION_CLASSES if classes is None else classes)
    names = lesion_names(data, fmt)
    return [names.get(classes[k], f"label {classes[k]}") if k < len(classes) else f"unused kind {k + 1}"
            for k in range(kinds)]


class CasePool:
    """Keeps ``size`` prepared cases; ``refresh()`` swaps the oldest for the next case of this rank.

    ``scale_jitter`` J > 0 is scale augmentation: each case is prepared on a model grid of the
    config's spacing times a factor drawn log-uniformly from [1 / (1 + J), 1 + J], so the network
    sees every lesion size at several sizes in cells (real scans come at every spacing, and
    inference may run on a grid other than the training one, ``Predictor(spacing=...)``).
    """

    def __init__(self, n_cases: int, load, cfg: MIQSAMConfig, size: int, rank: int = 0, world: int = 1, seed: int = 0,
                 scale_jitter: float = 0.0, lesion_classes: Sequence[int] = LESION_CLASSES):
        if scale_jitter < 0:
            raise ValueError(f"scale_jitter must be >= 0, got {scale_jitter}")
        self.load, self.cfg, self.size, self.scale_jitter = load, cfg, size, scale_jitter
        self.lesion_classes = tuple(lesion_classes)  # label values of lesion kinds 0, 1, ... (lesion_labels)
        self.rng = np.random.default_rng(seed + 7919 * rank)
        self.indices = np.arange(rank, n_cases, world)  # DistributedSampler-style shard of the cases
        if len(self.indices) == 0:
            raise ValueError(f"rank {rank} of {world} gets no case out of {n_cases}")
        self.order = self.rng.permutation(self.indices)
        self.cursor = 0
        self.cases: list[PreparedCase] = []
        while len(self.cases) < min(size, len(self.indices)):
            self._add()

    def _next_index(self) -> int:
        if self.cursor >= len(self.order):
            self.order, self.cursor = self.rng.permutation(self.indices), 0
        self.cursor += 1
        return int(self.order[self.cursor - 1])

    def _add(self) -> None:
        for _ in range(10):  # skip cases without lesions
            image, labels, spacing, name = self.load(self._next_index())
            case = prepare_case(image, labels, spacing, self.cfg, name, lesion_classes=self.lesion_classes,
                                model_spacing=self.model_spacing())
            if len(case.instance_class) > 1:
                self.cases.append(case)
                return
        raise ValueError(f"ten cases in a row had no lesion (label values {list(self.lesion_classes)}); "
                         "check the labels of the dataset")

    def model_spacing(self) -> tuple[float, float, float]:
        """The model grid (mm) the next case is prepared on: the config's, scaled by the jitter."""
        if not self.scale_jitter:
            return tuple(self.cfg.spacing)
        f = float(np.exp(self.rng.uniform(-np.log1p(self.scale_jitter), np.log1p(self.scale_jitter))))
        return tuple(float(s) * f for s in self.cfg.spacing)

    def refresh(self) -> None:
        if len(self.indices) > len(self.cases):
            self.cases.pop(0)
            self._add()

    def pick(self) -> PreparedCase:
        return self.cases[self.rng.integers(len(self.cases))]
