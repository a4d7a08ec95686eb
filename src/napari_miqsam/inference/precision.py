"""The number format the encoder runs in: float32, or bfloat16 where the CPU computes it natively.

The embedding is most of the time a volume costs on a CPU, and most of the embedding is 3D
convolutions on the stride-2 maps. On a CPU with native bfloat16 (AVX512-BF16 or AMX; oneDNN then
runs bfloat16 convolutions at about twice the float32 rate) the encoder runs under
``torch.autocast`` in bfloat16 and its outputs are kept as float32; everything after it (the
decoder, the refiner, the post-processing) stays float32. Measured on the shipped weights (2 CPU
cores, docs/results.md, issue #33): 512x512x200 embedding 7.2 -> 5.2 s, 128^3 0.47 -> 0.34 s, and
``miqsam compare`` against float32 within noise on phantom:40:0 and ood:40:0 (Dice differences
under 0.01 with intervals under +-0.01). On a CPU without native bfloat16 it would be emulated and
slower, so ``auto`` keeps float32 there, and on GPUs (not measured yet).

Training asks the same question (:func:`native_bf16`): it autocasts the whole step to bfloat16 on
CUDA and on a CPU with native bfloat16, 1.4x the steps per second of float32 on 2 cores here
(docs/training.md, ``benchmarks/train_precision.py``).
"""

from __future__ import annotations

import torch

from ..errors import InputError

PRECISIONS = ("auto", "float32", "bfloat16")


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bfloat16 natively on this CPU (PyTorch's own check; False if unknown)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the check
        return False


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU, or a CPU with AVX512-BF16 / AMX.
    Training autocasts to bfloat16 there (``miqsam train --no-amp`` keeps float32)."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


def embed_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the encoder computes in for ``precision`` ('auto', 'float32', 'bfloat16') on ``device``.

    auto: bfloat16 on a CPU with native bfloat16, float32 otherwise. InputError for another name."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "float32":
        return torch.float32
    if precision == "bfloat16":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32
