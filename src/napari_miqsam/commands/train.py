"""``miqsam train``: train MIQ-SAM3D on phantoms or a real dataset (LiTS / KiTS / MSD layouts).

Runs unchanged under ``torchrun --nproc_per_node=K`` (DistributedDataParallel; only rank 0 writes).
"""

from __future__ import annotations

import argparse
import json

HELP = "train on generated phantoms or a dataset folder (LiTS, KiTS21, MSD); torchrun-ready"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..training.loop import TrainOptions

    d = TrainOptions()
    p.add_argument("--config", default=d.config, choices=["tiny", "cpu", "paper"], help="model preset")
    p.add_argument("--data", default=d.data, help="generated on the fly: 'phantom' (tumours and cysts), 'randomized' (1-4 lesion kinds of random "
                   "look per volume, randomized anatomy and acquisition; for relative kinds), 'phantom+randomized' "
                   "(alternating), 'phantom-varied' (the phantoms with tumours that are also round, sharp or "
                   "homogeneous) or 'phantom-wide' (varied, with wider tumour edges and textures, organ texture and "
                   "scanner noise); or a dataset folder")
    p.add_argument("--format", default=d.format, choices=["auto", "lits", "kits", "msd"], help="dataset layout")
    p.add_argument("--out", default=d.out, help="run folder: checkpoint.pt, log.jsonl, miqsam_<config>.safetensors")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch, help="patches per step per process")
    p.add_argument("--patch", type=int, default=d.patch, help="patch side in model voxels (multiple of 16); a case side smaller than it is taken whole (rounded up to 8)")
    p.add_argument("--patch-sizes", default="", metavar="SIDES",
                   help="variable patch sizes: comma-separated sides (multiples of 8), one drawn per step, e.g. "
                   "96,128,160, so the network sees the window sizes inference uses (default: every patch is --patch)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--cases", type=int, default=d.cases, help="number of phantom cases to draw from")
    p.add_argument("--pool", type=int, default=d.pool, help="prepared cases kept in memory")
    p.add_argument("--refresh-every", type=int, default=d.refresh_every, help="steps between pool refreshes")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--val-every", type=int, default=d.val_every,
                   help="steps between quick validations (0: off); on a data set folder they score its last "
                   "--val-cases cases, which are then not trained on; on phantoms, held-out phantoms")
    p.add_argument("--val-cases", type=int, default=d.val_cases,
                   help=f"cases per validation (default {d.val_cases}; of a folder at most a fifth of its cases)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--init", default=d.init, help="start from these weights (.safetensors; 'default': the shipped ones)")
    p.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0: default)")
    p.add_argument("--ablation", default="{}", help='JSON of config switches, e.g. \'{"gating": false}\'')
    p.add_argument("--refine-only", action="store_true",
                   help="train only the mask refiner on the frozen network of --init (a last stage)")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="keep the encoder (CNN, ViT, pixel decoder, kind head) as --init has it; train the query generator and decoder")
    p.add_argument("--scale-jitter", type=float, default=d.scale_jitter,
                   help="scale augmentation: each case on a model grid of the config's spacing times [1/(1+J), 1+J] (0: off)")
    p.add_argument("--extra-clicks", type=int, default=d.extra_clicks,
                   help=f"at most this many more positive clicks per example, on other lesions of the kind (default {d.extra_clicks})")
    p.add_argument("--extra-click-prob", type=float, default=d.extra_click_prob,
                   help=f"the probability of each extra positive click (default {d.extra_click_prob})")
    p.add_argument("--random-contrast", type=float, default=d.random_contrast, metavar="P",
                   help="probability that an example's intensities pass a random monotone transfer curve, half of them "
                   "reversed (SynthSeg-like contrast randomisation; 0: off)")
    p.add_argument("--instance-weight", type=float, default=d.instance_weight,
                   help="weight of a per-lesion likelihood term, so small lesions weigh as much as large ones (0: off)")
    p.add_argument("--kind-weight", type=float, default=d.kind_weight,
                   help="weight of the encoder's lesion-kind loss (tumour vs cyst vs background; default %(default)s)")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="processes preparing training examples per training process (0: in the training process; a GPU needs several)")
    p.add_argument("--minutes", type=float, default=d.minutes,
                   help="time budget: stop after --steps or this many minutes, whichever comes first; the cosine schedule ends there (0: steps only)")
    p.add_argument("--no-amp", dest="amp", action="store_false",
                   help="train in float32 (default: bf16 autocast where the device computes it natively: CUDA, "
                   "or a CPU with AVX512-BF16 / AMX, 1.4x the steps per second on 2 cores; GPUs before Ampere lack bf16)")
    p.add_argument("--refine-pieces", type=int, default=d.refine_pieces, help="found instances per patch the refiner trains on")
    p.add_argument("--new-lr-mult", type=float, default=d.new_lr_mult,
                   help="with --init: learning rate of the tensors the init file lacks (e.g. added mask_blocks), "
                   "times this (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..model.weights import DEFAULT_WEIGHTS
    from ..training.loop import TrainOptions, train

    if args.val_every < 0 or (args.val_every and args.val_cases < 1):
        raise InputError(f"--val-every must be >= 0 and --val-cases >= 1, got {args.val_every} and {args.val_cases}")
    if args.extra_clicks < 0 or not 0.0 <= args.extra_click_prob <= 1.0:
        raise InputError(f"--extra-clicks must be >= 0 and --extra-click-prob in [0, 1], got {args.extra_clicks} "
                         f"and {args.extra_click_prob}")

    try:
        sides = tuple(int(v) for v in args.patch_sizes.split(",") if v.strip())
    except ValueError:
        raise InputError(f"--patch-sizes must be comma-separated whole numbers, got {args.patch_sizes!r}") from None
    if any(v < 16 or v % 8 for v in sides):
        raise InputError(f"--patch-sizes must be multiples of 8 (>= 16), got {args.patch_sizes!r}")

    opt = TrainOptions(
        config=args.config, data=args.data, format=args.format, out=args.out, steps=args.steps,
        batch=args.batch, patch=args.patch, patch_sizes=sides, lr=args.lr, warmup=args.warmup, seed=args.seed,
        cases=args.cases, pool=args.pool, refresh_every=args.refresh_every,
        checkpoint_every=args.checkpoint_every, val_every=args.val_every, val_cases=args.val_cases, resume=args.resume,
        init=str(DEFAULT_WEIGHTS) if args.init == "default" else args.init,
        device=args.device, threads=args.threads, ablation=json.loads(args.ablation),
        refine_only=args.refine_only, refine_pieces=args.refine_pieces, scale_jitter=args.scale_jitter,
        extra_clicks=args.extra_clicks, extra_click_prob=args.extra_click_prob, random_contrast=args.random_contrast,
        instance_weight=args.instance_weight, kind_weight=args.kind_weight, workers=args.workers, minutes=args.minutes,
        amp=args.amp, new_lr_mult=args.new_lr_mult, freeze_encoder=args.freeze_encoder,
    )
    train(opt)
    return 0
