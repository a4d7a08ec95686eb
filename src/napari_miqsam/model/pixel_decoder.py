"""Light pixel decoder: fused stride-8 tokens + CNN skips -> per-voxel mask features at stride 2."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cnn import PointwiseConv3d, norm


class UpBlock(nn.Module):
    def __init__(self, in_ch: int, skip_ch: int, out_ch: int):
        super().__init__()
        self.reduce = PointwiseConv3d(in_ch, out_ch)
        self.skip = PointwiseConv3d(skip_ch, out_ch)
        self.conv = nn.Sequential(nn.Conv3d(out_ch, out_ch, 3, padding=1, bias=False), norm(out_ch), nn.GELU())

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.reduce(x), size=skip.shape[2:], mode="trilinear", align_corners=False)
        return self.conv(x + self.skip(skip))


class MaskBlock(nn.Module):
    """``x + norm(conv(gelu(norm(conv(x)))))`` at stride 2, the identity when made: the last norm's
    scale and shift start at zero (as in zero-initialised residual branches), so adding blocks to a
    trained network changes nothing until training moves them."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(channels, channels, 3, padding=1, bias=False), norm(channels), nn.GELU(),
            nn.Conv3d(channels, channels, 3, padding=1, bias=False), norm(channels))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PixelDecoder(nn.Module):
    def __init__(self, dim: int, cnn_channels: tuple[int, int, int], mask_dim: int, blocks: int = 0):
        super().__init__()
        c2, c4, _ = cnn_channels
        self.up4 = UpBlock(dim, c4, max(mask_dim, c4))
        self.up2 = UpBlock(max(mask_dim, c4), c2, max(mask_dim, c2))
        self.blocks = nn.Sequential(*[MaskBlock(max(mask_dim, c2)) for _ in range(blocks)])
        self.out = PointwiseConv3d(max(mask_dim, c2), mask_dim)

    def forward(self, fused8: torch.Tensor, f4: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """fused8: (B, dim, d, h, w) -> mask features (B, mask_dim, 4d, 4h, 4w) at stride 2."""
        return self.out(self.blocks(self.up2(self.up4(fused8, f4), f2)))
