"""Where training cases come from: generated phantoms or a real dataset on disk, through a small
pool of prepared cases that is refreshed as training goes (cases sharded across ranks)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..model.config import MIQSAMConfig
from .sampling import PreparedCase, prepare_case

TRAIN_SEED_OFFSET = 1_000_000  # phantom seeds used for training start here; evaluation uses 0..999_999


def case_loader(data: str, fmt: str = "auto", seed: int = 0, cases: int = 2000,
                phantom_shape: tuple | None = None) -> tuple[int, Callable[[int], tuple]]:
    """(number of cases, load(i) -> (image, labels, spacing, name)) for ``data``: 'phantom' or a folder."""
    if data == "phantom":
        from ..data.phantom import make_phantom

        def load(i: int):
            c = make_phantom(TRAIN_SEED_OFFSET + seed * 100_000 + i, shape=phantom_shape)
            return c.image, c.labels, c.spacing, c.name
        return cases, load
    from ..data.datasets import list_cases

    refs = list_cases(Path(data), fmt)

    def load_ref(i: int):
        c = refs[i].load()
        return c.image, c.labels, c.spacing, c.name
    return len(refs), load_ref


class CasePool:
    """Keeps ``size`` prepared cases; ``refresh()`` swaps the oldest for the next case of this rank."""

    def __init__(self, n_cases: int, load, cfg: MIQSAMConfig, size: int, rank: int = 0, world: int = 1, seed: int = 0):
        self.load, self.cfg, self.size = load, cfg, size
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
            case = prepare_case(image, labels, spacing, self.cfg, name)
            if len(case.instance_class) > 1:
                self.cases.append(case)
                return
        raise ValueError("ten cases in a row had no lesion; check the labels of the dataset")

    def refresh(self) -> None:
        if len(self.indices) > len(self.cases):
            self.cases.pop(0)
            self._add()

    def pick(self) -> PreparedCase:
        return self.cases[self.rng.integers(len(self.cases))]
