"""Training examples drawn in background worker processes (``--workers N``).

On a GPU the network step takes a fraction of the time one whole-case example takes to prepare on
one CPU core (phantom generation, resampling, cropping, click simulation, augmentation: about 0.1 s
per whole-phantom example of the `cpu` config, more for larger grids), so the loop would wait on the CPU. ``example_batches`` hands that work to a
torch ``DataLoader`` over an endless :class:`ExampleStream`: each worker keeps its own
:class:`~.sources.CasePool` over its own shard of the cases (shards are ``rank x workers``, so no two
workers of any rank prepare the same case) and yields augmented examples; the loader collates them
into batches. With ``workers == 0`` the batches are sampled in the training process from one pool
(:func:`in_process_batches`), as on a CPU, where the network step takes far longer than sampling.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..model.config import MIQSAMConfig
from .sampling import LESION_CLASSES, Example, augment, collate, draw_patch, sample_example
from .sources import CasePool


class ExampleStream(IterableDataset):
    """Endless augmented examples from a worker's own case pool.

    ``pool`` is the pool size of the whole process, split across its workers. A case is swapped out
    every ``draws_per_refresh`` examples a worker draws, so each case serves about that many
    examples, whatever the number of workers.
    """

    def __init__(self, n_cases: int, load: Callable[[int], tuple], cfg: MIQSAMConfig, patch: int | Sequence[int], pool: int,
                 draws_per_refresh: int, seed: int, rank: int = 0, world: int = 1, scale_jitter: float = 0.0,
                 lesion_classes: Sequence[int] = LESION_CLASSES, batch: int = 1, clicks: dict | None = None,
                 random_contrast: float = 0.0):
        super().__init__()
        if draws_per_refresh < 1:
            raise ValueError(f"draws_per_refresh must be >= 1, got {draws_per_refresh}")
        self.n_cases, self.load, self.cfg, self.patch, self.batch = n_cases, load, cfg, patch, batch
        self.pool, self.draws_per_refresh, self.seed = pool, draws_per_refresh, seed
        self.rank, self.world, self.scale_jitter = rank, world, scale_jitter
        self.lesion_classes = tuple(lesion_classes)
        self.clicks = dict(clicks or {})
        self.random_contrast = random_contrast

    def shard(self) -> tuple[int, int, int]:
        """(this worker's shard, number of shards, workers in this process)."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * workers + worker, self.world * workers, workers

    def __iter__(self) -> Iterator[Example]:
        shard, shards, workers = self.shard()
        if get_worker_info() is not None:
            torch.set_num_threads(1)  # the workers share the machine's cores
        pool = CasePool(self.n_cases, self.load, self.cfg, max(1, self.pool // workers), shard, shards,
                        seed=self.seed, scale_jitter=self.scale_jitter, lesion_classes=self.lesion_classes)
        rng = np.random.default_rng([self.seed, shard])
        for drawn, ex in enumerate(examples(pool, self.patch, rng, self.batch, self.clicks, self.random_contrast), start=1):
            yield ex
            if drawn % self.draws_per_refresh == 0:
                pool.refresh()


def examples(pool: CasePool, patch: int | Sequence[int], rng: np.random.Generator, per: int = 1,
             clicks: dict | None = None, random_contrast: float = 0.0) -> Iterator[Example]:
    """Endless augmented examples from ``pool`` (a case without a lesion is drawn again). ``patch``:
    a side, or sides of which one is drawn for every ``per`` consecutive examples (a batch: a
    worker's batches are its consecutive examples), see :func:`.sampling.draw_patch`. ``clicks``:
    :func:`.sampling.sample_example`'s click keywords (``extra_pos_prob``, ``extra_pos_max``);
    ``random_contrast``: :func:`.sampling.augment`'s probability of a random transfer curve."""
    made = 0
    while True:
        if made % per == 0:
            side = draw_patch(patch, rng)
        ex = sample_example(pool.pick(), side, rng, **(clicks or {}))
        if ex is not None:
            made += 1
            yield augment(ex, rng, random_contrast)


def example_batches(stream: ExampleStream, batch: int, workers: int) -> Iterator[dict]:
    """Endless collated batches of ``batch`` examples, prepared by ``workers`` processes."""
    if workers < 1:
        raise ValueError(f"example_batches needs at least one worker, got {workers}")
    if stream.world * workers > stream.n_cases:
        raise ValueError(f"{workers} workers x {stream.world} processes make more shards than the {stream.n_cases} "
                         "cases; use fewer workers")
    # fork: the case loader may be a closure (phantom seeds), which the other start methods cannot pickle
    loader = DataLoader(stream, batch_size=batch, collate_fn=collate, num_workers=workers,
                        prefetch_factor=4, persistent_workers=True, multiprocessing_context="fork")
    return iter(loader)


def in_process_batches(pool: CasePool, patch: int | Sequence[int], batch: int, rng: np.random.Generator,
                       refresh_every: int, step: int = 0, clicks: dict | None = None,
                       random_contrast: float = 0.0) -> Iterator[dict]:
    """Endless collated batches sampled in this process from ``pool`` (one patch side per batch, see
    :func:`examples`); a case is swapped every ``refresh_every`` batches (counted from training step
    ``step``, so a resumed run keeps the rhythm)."""
    draw = examples(pool, patch, rng, batch, clicks, random_contrast)
    while True:
        yield collate([next(draw) for _ in range(batch)])
        step += 1
        if step % refresh_every == 0:
            pool.refresh()
