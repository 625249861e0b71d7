"""Layers several methods share, with the module names of the code they come from.

EDSR-PyTorch's names (``sub_mean``, ``head.0``, ``body.N.body.{0,2}``, ``tail.0.*``,
``tail.1``, ``add_mean``) are the ones DASR-Wang, CDSR, DAA's and PDM's released files
use, so the modules here keep them: a released state dict loads without renaming.
DSGAN's PReLU residual block (``conv1``/``prelu``/``conv2``) is in FSSR's, DASR-Wei's
and MSSR's generators.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

#: DIV2K RGB mean used by EDSR-family code (on [0,1]; scaled by rgb_range in MeanShift).
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


def default_conv(in_ch: int, out_ch: int, kernel_size: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Conv2d):
    """1x1 conv that subtracts (sign=-1) or adds (sign=+1) ``rgb_range * mean``.

    Stored as conv weights in released checkpoints; frozen unless ``trainable``
    (PDM trains them, EDSR-PyTorch does not).
    """

    def __init__(self, rgb_range: float, rgb_mean=DIV2K_MEAN, rgb_std=(1.0, 1.0, 1.0), sign: int = -1,
                 trainable: bool = False):
        super().__init__(3, 3, kernel_size=1)
        std = torch.tensor(rgb_std)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(rgb_mean) / std
        for p in self.parameters():
            p.requires_grad = trainable


def seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """Build a module with its initial weights drawn from ``seed`` (no global RNG change)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class PReLUResBlock(nn.Module):
    """DSGAN's residual block: conv3x3 -> PReLU (one slope) -> conv3x3, plus identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.prelu = nn.PReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.prelu(self.conv1(x)))


class ResBlock(nn.Module):
    """conv-ReLU-conv with a scaled identity skip (``body.{0,2}`` as in EDSR-PyTorch)."""

    def __init__(self, n_feats: int, kernel_size: int = 3, res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(
            default_conv(n_feats, n_feats, kernel_size), nn.ReLU(True), default_conv(n_feats, n_feats, kernel_size)
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mul(self.res_scale) + x


class Upsampler(nn.Sequential):
    """x2^n: [conv C->4C, PixelShuffle(2)] per factor 2; x3: conv C->9C, PixelShuffle(3)."""

    def __init__(self, scale: int, n_feats: int, bias: bool = True):
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [default_conv(n_feats, 4 * n_feats, 3, bias), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [default_conv(n_feats, 9 * n_feats, 3, bias), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"Upsampler supports x2^n and x3, not x{scale}")
        super().__init__(*layers)


class EDSR(nn.Module):
    """EDSR (Lim et al. 2017); the baseline is n_resblocks=16, n_feats=64, res_scale=1.

    Works on ``rgb_range`` (255 in the official code): ``forward`` takes and returns
    images on that range.
    """

    def __init__(self, scale: int, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0,
                 rgb_range: float = 255.0, trainable_mean: bool = False):
        super().__init__()
        self.sub_mean = MeanShift(rgb_range, trainable=trainable_mean)
        self.head = nn.Sequential(default_conv(3, n_feats, 3))
        self.body = nn.Sequential(
            *[ResBlock(n_feats, 3, res_scale) for _ in range(n_resblocks)], default_conv(n_feats, n_feats, 3)
        )
        self.tail = nn.Sequential(Upsampler(scale, n_feats), default_conv(n_feats, 3, 3))
        self.add_mean = MeanShift(rgb_range, sign=1, trainable=trainable_mean)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x))
        x = self.body(x) + x
        return self.add_mean(self.tail(x))
