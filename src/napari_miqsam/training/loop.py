"""The training loop: AdamW, warm-up + cosine, gradient clipping, AMP on CUDA, checkpoints with
``--resume``, periodic validation, DistributedDataParallel under torchrun (only rank 0 writes)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..distributed import context as distributed_context
from ..distributed import init as init_distributed
from ..inference.precision import native_bf16
from ..model.config import get_config
from ..model.miqsam import MIQSAM3D
from ..model.weights import init_from, save_weights
from .losses import LossWeights, set_criterion
from .refine import refine_loss
from .loader import ExampleStream, example_batches, in_process_batches
from .sources import LABEL_SCAN_CASES, PHANTOMS, CasePool, case_loader, is_generated, kind_names, lesion_labels


@dataclass
class TrainOptions:
    config: str = "cpu"
    data: str = "phantom"
    format: str = "auto"
    out: str = "runs/miqsam"
    steps: int = 4000
    batch: int = 4
    patch: int = 64
    # variable patch sizes: one of these sides (model voxels) drawn per step, e.g. (96, 128, 160), so
    # the network sees the window sizes the Predictor's tiling uses (up to the config's max_window);
    # empty: every patch is ``patch``
    patch_sizes: tuple = ()
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 200
    clip: float = 1.0
    seed: int = 0
    cases: int = 2000
    pool: int = 160
    refresh_every: int = 8
    checkpoint_every: int = 250
    val_every: int = 0
    val_cases: int = 4
    resume: bool = False
    init: str = ""  # weights (.safetensors) to start from, e.g. the shipped default (fine-tuning)
    device: str = "auto"
    threads: int = 0
    ablation: dict = field(default_factory=dict)  # e.g. {"gating": False}
    phantom_shape: tuple | None = None  # phantom size in voxels (None: the generator's default)
    refine_only: bool = False  # train only the mask refiner, on the frozen network (start from --init)
    refine_pieces: int = 6  # pieces per example the refiner trains on
    scale_jitter: float = 0.0  # scale augmentation: model grid x [1/(1+J), 1+J] per case (sources.CasePool)
    extra_clicks: int = 1  # at most this many more positive clicks per example (sampling.sample_example)
    extra_click_prob: float = 0.2  # the probability of each of them
    random_contrast: float = 0.0  # probability of a random monotone transfer curve per example (sampling.augment)
    instance_weight: float = 0.0  # weight of the per-instance likelihood term (losses.LossWeights.instance)
    kind_weight: float = LossWeights.kind  # weight of the encoder's lesion-kind loss (losses.LossWeights.kind)
    workers: int = 0  # processes preparing examples (loader.py); 0: sampled in the training process
    amp: bool = True  # bf16 autocast where the device computes it natively: CUDA, a CPU with AVX512-BF16 / AMX
    minutes: float = 0.0  # time budget: stop at `steps` or after this many minutes, whichever comes first
    new_lr_mult: float = 1.0  # with --init: the learning rate of the tensors the init file lacks, times this
    freeze_encoder: bool = False  # encoder (CNN, ViT, pixel decoder, kind head) frozen: the query generator and decoder learn
    exclude_cases: tuple = ()  # names of a data set folder's cases never trained on (adapt.py's held-out check)


@dataclass
class TrainResult:
    weights: Path
    model: MIQSAM3D
    steps: int
    minutes: float


def budget_used(elapsed: float, opt: TrainOptions) -> float:
    """The fraction of the time budget (``minutes``) spent after ``elapsed`` seconds; 0 without one."""
    return elapsed / (60 * opt.minutes) if opt.minutes > 0 else 0.0


def progress(step: int, elapsed: float, opt: TrainOptions) -> float:
    """How far training is, in [0, 1]: by steps, or by time when a budget (``minutes``) runs out first."""
    return max(step / max(1, opt.steps), budget_used(elapsed, opt))


def lr_at(step: int, opt: TrainOptions, elapsed: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine down to 2% of ``lr`` at the end of training
    (the end by steps, or by the time budget when ``minutes`` is set and comes first)."""
    if step < opt.warmup:
        return opt.lr * (step + 1) / opt.warmup
    t = max((step - opt.warmup) / max(1, opt.steps - opt.warmup), budget_used(elapsed, opt))
    return opt.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def shared_elapsed(t0: float, device: torch.device, across_ranks: bool) -> float:
    """Seconds since ``t0``; ``across_ranks`` (torchrun with a time budget): the largest over the
    ranks, so all ranks agree on the learning rate and on when the budget ends."""
    elapsed = time.perf_counter() - t0
    if across_ranks:
        t = torch.tensor([elapsed], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        elapsed = float(t)
    return elapsed


def param_groups(model: torch.nn.Module, fresh: list[str], new_lr_mult: float = 1.0) -> list[dict]:
    """The trainable parameters as AdamW groups, each with an ``lr_mult`` the schedule multiplies its
    learning rate by: the ``fresh`` ones (tensors the ``--init`` file lacks, e.g. blocks added to a
    trained network) at ``new_lr_mult``, the rest at 1. One group when nothing is fresh."""
    fresh_set = set(fresh)
    old, new = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (new if name in fresh_set and new_lr_mult != 1.0 else old).append(p)
    groups = [{"params": old, "lr_mult": 1.0}, {"params": new, "lr_mult": float(new_lr_mult)}]
    return [g for g in groups if g["params"]]


def save_checkpoint(path: Path, model, optim, step: int, elapsed: float, opt: TrainOptions) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optim": optim.state_dict(), "step": step, "elapsed": elapsed,
                "options": json.dumps(asdict(opt))}, tmp)
    os.replace(tmp, path)


def train(opt: TrainOptions, log=print, on_step=None) -> TrainResult:
    """Train; rank 0 exports ``OUT/miqsam_<config>.safetensors``.

    ``on_step(step, elapsed_seconds)`` is called on rank 0 after every step (progress); an exception
    it raises (``errors.CancelledError``) stops training before any weights file is written."""
    rank, world, local_rank = distributed_context()
    init_distributed(prefer_nccl=opt.device != "cpu")
    if opt.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(f"cuda:{local_rank}" if opt.device == "cuda" else opt.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    torch.manual_seed(opt.seed)  # same initial weights on every rank
    cfg = get_config(opt.config, **opt.ablation)
    model = MIQSAM3D(cfg)
    fresh: list[str] = []
    if opt.init:
        fresh = init_from(model, opt.init)
        log(f"initialised from {opt.init}" + (f"; {len(fresh)} tensors kept fresh: {', '.join(fresh)}" if fresh else ""))
    model = model.to(device)
    refiner = model.refiner
    if opt.refine_only and refiner is None:
        raise ValueError(f"--refine-only needs a config with a mask refiner ({cfg.name!r} has refine=False)")
    # the refiner trains in its own stage: frozen there, and everything else frozen in that stage
    model.requires_grad_(not opt.refine_only)
    if refiner is not None:
        refiner.requires_grad_(opt.refine_only)
    if opt.freeze_encoder:  # no gradient flows into the encoder: its backward pass is skipped too
        model.encoder.requires_grad_(False)
    groups = param_groups(model, fresh, opt.new_lr_mult)
    params = [p for g in groups for p in g["params"]]  # the trainable ones (clipping, gradient averaging)
    optim = torch.optim.AdamW(groups, lr=opt.lr, weight_decay=opt.weight_decay)
    out = Path(opt.out)
    ckpt = out / "checkpoint.pt"
    step, elapsed = 0, 0.0
    if opt.resume and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)  # never unpickles code
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        log(f"resumed from {ckpt} at step {step} ({elapsed / 60:.1f} min so far)")
    if world > 1 and not opt.refine_only:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    else:  # the refiner's gradients are averaged by hand (a variable number of pieces per rank)
        ddp = model
    n_cases, load, val_refs = case_loader(opt.data, opt.format, opt.seed, opt.cases, opt.phantom_shape,
                                          hold_out=opt.val_cases if opt.val_every else 0,  # held out: never trained on
                                          exclude=opt.exclude_cases)
    if opt.val_every and not is_generated(opt.data) and rank == 0:
        log(f"validating on {len(val_refs)} held-out cases ({', '.join(r.name for r in val_refs)}), not trained on"
            if val_refs else "too few cases to hold any out (fewer than five): validating on phantoms")
    classes = lesion_labels(opt.data, opt.format, cfg.kinds, load, min(LABEL_SCAN_CASES, n_cases))  # kinds 0, 1, ...
    if opt.data not in PHANTOMS and rank == 0:
        log(f"lesion label values trained as kinds 1..{len(classes)}: {', '.join(map(str, classes))}")
    rng = np.random.default_rng(opt.seed * 1000 + rank + step)
    patch = tuple(opt.patch_sizes) or opt.patch  # sides drawn per step, or the one side
    clicks = {"extra_pos_prob": opt.extra_click_prob, "extra_pos_max": opt.extra_clicks}
    if opt.workers > 0:  # examples prepared in worker processes (a GPU outruns one core's sampling)
        batches = example_batches(ExampleStream(n_cases, load, cfg, patch, opt.pool, opt.refresh_every * opt.batch,
                                                opt.seed + step, rank, world, opt.scale_jitter, classes, opt.batch, clicks,
                                                opt.random_contrast),
                                  opt.batch, opt.workers)
    else:
        pool = CasePool(n_cases, load, cfg, opt.pool, rank, world, seed=opt.seed + step, scale_jitter=opt.scale_jitter,
                        lesion_classes=classes)
        batches = in_process_batches(pool, patch, opt.batch, rng, opt.refresh_every, step, clicks, opt.random_contrast)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    use_amp = opt.amp and native_bf16(device)  # on a CPU without native bfloat16 it would be emulated: float32
    if rank == 0:
        log(f"training in {'bfloat16 autocast' if use_amp else 'float32'} on {device.type}")
    t0 = time.perf_counter() - elapsed
    from tqdm import tqdm

    quiet = not sys.stderr.isatty()  # a log file (nohup, a GPU job) gets a line every 30 s, not every step
    bar = tqdm(total=opt.steps, initial=step, disable=rank != 0, desc="train", dynamic_ncols=True,
               mininterval=30.0 if quiet else 0.1)
    history = []
    timed_ranks = world > 1 and opt.minutes > 0
    elapsed = shared_elapsed(t0, device, timed_ranks)
    done = progress(step, elapsed, opt) >= 1.0
    while not done:
        model.train()
        for group in optim.param_groups:
            group["lr"] = lr_at(step, opt, elapsed) * group.get("lr_mult", 1.0)  # checkpoints before 2026-12-04 have none
        batch = next(batches)
        if opt.refine_only:
            model.eval()  # the frozen network as the Predictor runs it
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                _, outputs = model(batch["image"].to(device), batch["points"].to(device), batch["labels"].to(device), batch["valid"].to(device))
            # the refiner reads the first input channel, as the Predictor gives it
            losses = refine_loss(refiner, batch["image"][:, :1].to(device), outputs[-1], batch["instances"], rng, opt.refine_pieces)
        else:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                emb, outputs = ddp(batch["image"].to(device), batch["points"].to(device), batch["labels"].to(device), batch["valid"].to(device))
                losses = set_criterion(outputs, [t.to(device) for t in batch["targets"]], emb.saliency_logits,
                                       batch["saliency"].to(device), emb.kind_logits, batch["kinds"].to(device),
                                       LossWeights(instance=opt.instance_weight, kind=opt.kind_weight),
                                       relative_kinds=cfg.relative_kinds)
        optim.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if opt.refine_only and world > 1:
            average_gradients(params, world)
        gnorm = torch.nn.utils.clip_grad_norm_(params, opt.clip)
        optim.step()
        step += 1
        lr_used = optim.param_groups[0]["lr"]
        elapsed = shared_elapsed(t0, device, timed_ranks)
        done = progress(step, elapsed, opt) >= 1.0
        if on_step is not None and rank == 0:
            on_step(step, elapsed)
        if rank == 0:
            row = {k: round(float(v.detach()), 4) for k, v in losses.items()}
            row.update(step=step, lr=lr_used, grad_norm=round(float(gnorm), 3), minutes=round(elapsed / 60, 2))
            history.append(row)
            bar.update(1)
            bar.set_postfix(loss=row["loss"], dice=row["dice"], refresh=False)  # the bar redraws at its own interval
            if step % 50 == 0:
                with open(out / "log.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
            if step % opt.checkpoint_every == 0 or done:
                save_checkpoint(ckpt, model, optim, step, time.perf_counter() - t0, opt)
            if opt.val_every and step % opt.val_every == 0:
                log(f"step {step}: validation {validate(model, opt, val_refs or None, classes if val_refs else None)}")
    bar.close()
    elapsed = time.perf_counter() - t0
    path = out / f"miqsam_{cfg.name}.safetensors"
    if rank == 0:
        hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
        save_weights(model, path, trained=True, extra={
            "steps": str(step), "train_minutes": f"{elapsed / 60:.1f}", "data": opt.data,
            "options": json.dumps(asdict(opt)), "world_size": str(world), "hardware": hardware,
            "precision": "bfloat16 autocast" if use_amp else "float32",
            **({"kind_names": kind_names(opt.data, opt.format, cfg.kinds, classes)}
               if cfg.kind_prior and not cfg.relative_kinds else {})})  # relative kinds are clusters, not names
        peak = f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else ""
        log(f"wrote {path} after {step} steps ({elapsed / 60:.1f} min, {step * opt.batch * world / max(elapsed, 1e-9):.1f} examples/s on {hardware}{peak})")
    if world > 1:
        dist.barrier()
    return TrainResult(path, model, step, elapsed / 60)


def average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """All-reduce and average gradients across ranks (a missing gradient counts as zero)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world


def validate(model: MIQSAM3D, opt: TrainOptions, cases: list | None = None,
             lesion_classes: tuple[int, ...] | None = None) -> dict:
    """Quick validation: on ``cases`` (a data set's held-out cases, ``sources.held_out_cases``,
    scored on its ``lesion_classes``), or on held-out phantoms (seeds 900_000+, never used for
    training or the model card)."""
    from ..data.phantom import make_phantom
    from ..evaluation.evaluate import evaluate
    from ..inference.predictor import Predictor

    predictor = Predictor(model, trained=True, device="cpu" if not torch.cuda.is_available() else "auto")
    if cases is None:
        cases = [make_phantom(900_000 + i) for i in range(opt.val_cases)]
    res = evaluate(cases, predictor, clicks=1, seed=0, progress=False, baselines=False, lesion_classes=lesion_classes)
    model.train()
    return {k: round(v, 3) for k, v in res["model"].items() if k in ("dice", "instance_f1", "nsd_1mm")}
