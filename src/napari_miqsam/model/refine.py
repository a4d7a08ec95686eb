"""Mask refiner: one instance's stride-2 mask, redrawn at the model grid's full resolution.

The decoder's masks live on a stride-2 map (3 mm cells at the ``cpu`` config's 1.5 mm spacing), which
caps how well a boundary can follow the lesion: a 6 mm lesion is two cells across, and a
surface-distance tolerance of 1 mm is a third of a cell. The refiner is a small 3D CNN that runs at
stride 1, per instance, inside the instance's box only (so a click costs time in proportion to the
lesions found, not to the volume). It sees two channels:

- the normalised image at the model spacing (where the edges are), and
- the instance's own stride-2 mask logit, trilinearly upsampled (which lesion, and roughly where),

and adds a correction to that upsampled logit. Its last layer starts at zero, so an untrained
refiner reproduces the plain upsampling. Trained as its own stage on a frozen network
(``training --refine-only``), with the instances the network actually finds as its inputs.

This is our addition to MIQ-SAM3D (the paper's masks are not described at this level).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOGIT_CLAMP = 8.0  # coarse logits are clipped to +-this (probabilities 0.9997)
OTHER_LOGIT = -8.0  # cells of another instance: certainly not this one
INPUT_SCALE = 0.25  # the coarse logit enters the convolutions scaled to about unit range


class MaskRefiner(nn.Module):
    def __init__(self, width: int = 12):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(2, width, 3, padding=1), nn.GELU(),
            nn.Conv3d(width, width, 3, padding=1), nn.GELU(),
            nn.Conv3d(width, 1, 3, padding=1),
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, image: torch.Tensor, coarse_logits: torch.Tensor) -> torch.Tensor:
        """image: (B, 1, D, H, W) model-grid intensities; coarse_logits: (B, 1, ceil(D/2), ...) one
        instance's stride-2 mask logits -> (B, 1, D, H, W) refined logits."""
        up = F.interpolate(coarse_logits, scale_factor=2, mode="trilinear", align_corners=False)
        up = up[(..., *(slice(0, n) for n in image.shape[2:]))]
        h = torch.cat([image, up * INPUT_SCALE], dim=1)
        for layer in self.body:
            h = conv3d(h, layer) if isinstance(layer, nn.Conv3d) else layer(h)
        return up + h


def conv3d(x: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
    """``conv(x)``, on a CPU through oneDNN directly (same weights, same result to float rounding).

    For one small volume (batch 1 and batch x channels x depth x height <= 20480, i.e. every crop
    the refiner sees of a lesion under about 60 mm), PyTorch's dispatcher picks its slow im2col 3D
    convolution instead of oneDNN: 12 -> 12 channels on 32^3 voxels, one thread, 37 vs 2.2 ms
    (``python benchmarks/refiner_conv.py``). Elsewhere (CUDA, other dtypes) the module itself runs.
    """
    if x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available():
        return torch.mkldnn_convolution(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups)
    return conv(x)


def instance_logits(fg: torch.Tensor, ids: torch.Tensor, k: int) -> torch.Tensor:
    """Stride-2 mask logits of instance ``k`` from the foreground probability ``fg`` and the
    instance-id map ``ids`` (same shape): cells of other instances are set to ``OTHER_LOGIT``."""
    p = fg.float().clamp(1e-6, 1 - 1e-6)
    logit = torch.log(p / (1 - p)).clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
    return torch.where((ids != 0) & (ids != k), torch.full_like(logit, OTHER_LOGIT), logit)


def refine_instance(refiner: MaskRefiner, image: torch.Tensor, fg: torch.Tensor, ids: torch.Tensor, k: int,
                    lo: tuple[int, int, int], hi: tuple[int, int, int]) -> torch.Tensor:
    """Refined logits of instance ``k`` over stride-2 cells [lo, hi) (one crop; train and inference).

    image: (D, H, W) model-grid volume (D >= 2 * hi[0] etc.); fg, ids: (d2, h2, w2) stride-2 maps.
    Returns (2 * (hi - lo)) logits at stride 1, voxel 0 being model voxel 2 * lo.
    """
    dev = refiner.body[0].weight.device
    cells = tuple(slice(a, b) for a, b in zip(lo, hi))
    vox = tuple(slice(2 * a, 2 * b) for a, b in zip(lo, hi))
    coarse = instance_logits(fg[cells].to(dev), ids[cells].to(dev), k)
    crop = image[vox].to(dev, torch.float32)
    # the image may end one voxel short of 2 * hi on an odd-sized axis: pad like the model's padding
    short = [2 * (b - a) - n for a, b, n in zip(lo, hi, crop.shape)]
    if any(short):
        crop = F.pad(crop, [0, short[2], 0, short[1], 0, short[0]], value=-1.0)
    return refiner(crop[None, None], coarse[None, None])[0, 0]
