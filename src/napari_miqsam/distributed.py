"""torch.distributed helpers shared by training, evaluation and batch prediction (torchrun-ready).

Under ``torchrun`` the environment holds RANK / WORLD_SIZE / LOCAL_RANK; without it everything
runs as a single process (rank 0 of 1) and these helpers are no-ops.
"""

from __future__ import annotations

import atexit
import os


def context() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init(prefer_nccl: bool = True) -> bool:
    """Initialise the process group when launched by torchrun (nccl on GPUs, gloo on CPU).

    Returns True when running distributed.
    """
    import torch
    import torch.distributed as dist

    _, world, _ = context()
    if world <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if prefer_nccl and torch.cuda.is_available() else "gloo")
        atexit.register(finish)
    return True


def gather_to_rank0(obj):
    """Every rank's ``obj`` as a list on rank 0 (None on other ranks); [obj] without distribution."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    rank, world = dist.get_rank(), dist.get_world_size()
    out = [None] * world if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def finish() -> None:
    """Tear the process group down (a no-op without one); :func:`init` registers it to run at exit.
    A rank that exits with the group still up can abort at interpreter exit ("terminate called
    without an active exception") while its gloo threads are joinable, which turns a finished run's
    exit status into 134."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
