"""CNN branch of the hybrid encoder: residual 3D conv stages at strides 2, 4 and 8.

It keeps local boundary detail (skips for the pixel decoder) and predicts a boundary-saliency map
``s`` in (0, 1) at stride 8, one value per ViT token.
"""

from __future__ import annotations

import torch
from torch import nn


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class PointwiseConv3d(nn.Conv3d):
    """A 1x1x1 ``nn.Conv3d`` (same parameters, same state-dict keys) computed as one matrix product
    over the voxels: on 2 CPU cores oneDNN's 1x1x1 convolution of a 76^3 stride-2 map took 3-8x the
    time of the product."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        w = self.weight.view(1, self.out_channels, c).expand(b, -1, -1)
        v = x.reshape(b, c, -1)
        y = torch.bmm(w, v) if self.bias is None else torch.baddbmm(self.bias.view(1, -1, 1), w, v)
        return y.view(b, self.out_channels, *x.shape[2:])


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = norm(channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = norm(channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.act(x + y)


class CNNBranch(nn.Module):
    """(B, C_in, D, H, W) -> features at strides 2, 4, 8 and the saliency logits at stride 8."""

    def __init__(self, in_channels: int, channels: tuple[int, int, int], blocks: tuple[int, int, int]):
        super().__init__()
        c2, c4, c8 = channels
        self.stem = nn.Sequential(nn.Conv3d(in_channels, c2, 2, stride=2), norm(c2), nn.GELU())
        self.stage2 = nn.Sequential(*[ResBlock(c2) for _ in range(blocks[0])])
        self.down4 = nn.Sequential(nn.Conv3d(c2, c4, 2, stride=2), norm(c4), nn.GELU())
        self.stage4 = nn.Sequential(*[ResBlock(c4) for _ in range(blocks[1])])
        self.down8 = nn.Sequential(nn.Conv3d(c4, c8, 2, stride=2), norm(c8), nn.GELU())
        self.stage8 = nn.Sequential(*[ResBlock(c8) for _ in range(blocks[2])])
        self.saliency = PointwiseConv3d(c8, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        f2 = self.stage2(self.stem(x))
        f4 = self.stage4(self.down4(f2))
        f8 = self.stage8(self.down8(f4))
        return f2, f4, f8, self.saliency(f8)
