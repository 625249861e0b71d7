"""Batched torch degradations for training on a device (DASR-Wang's recipe).

Same conventions as the numpy path (kernels.py, resize.py): grid ``-size//2..size//2``,
x = column, covariance ``R diag(s1^2, s2^2) R^T``, correlation after reflection padding,
MATLAB bicubic. Differentiable in the image and the kernel parameters.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bench.adapter import BenchError
from bench.degrade.resize import imresize_torch

# DASR-Wang paper (Sec. 4.1, following IKC): isotropic widths [0.2, 2], [0.2, 3], [0.2, 4] for x2, x3, x4.
DASR_ISO_RANGE = {2: (0.2, 2.0), 3: (0.2, 3.0), 4: (0.2, 4.0)}
DASR_ANISO_RANGE = (0.2, 4.0)
_PAD = {"reflect": "reflect", "replicate": "replicate"}


def gaussian_kernels(sigma1: torch.Tensor, sigma2: torch.Tensor, theta: torch.Tensor, size: int = 21) -> torch.Tensor:
    """N anisotropic Gaussians (std ``sigma1``, ``sigma2``, angle ``theta`` radians) -> N x size x size."""
    s1, s2, th = (t.reshape(-1, 1, 1) for t in (sigma1, sigma2, theta))
    ax = torch.arange(size, dtype=s1.dtype, device=s1.device) - size // 2
    x, y = ax.view(1, 1, -1), ax.view(1, -1, 1)
    c, s = torch.cos(th), torch.sin(th)
    i1, i2 = 1.0 / (s1 * s1), 1.0 / (s2 * s2)
    # Inverse covariance R diag(1/s1^2, 1/s2^2) R^T, written out.
    a, b, d = c * c * i1 + s * s * i2, c * s * (i1 - i2), s * s * i1 + c * c * i2
    k = torch.exp(-0.5 * (a * x * x + 2 * b * x * y + d * y * y))
    return k / k.sum(dim=(1, 2), keepdim=True)


def blur(x: torch.Tensor, kernels: torch.Tensor, padding: str = "reflect") -> torch.Tensor:
    """Correlate N x C x H x W with one k x k kernel or one per image (N x k x k)."""
    if padding not in _PAD:
        raise BenchError(f"unknown blur padding {padding!r}; use 'reflect' or 'replicate'")
    n, c, h, w = x.shape
    k = kernels.shape[-1]
    ker = kernels.to(x.dtype).reshape(-1, 1, k, k)
    if ker.shape[0] not in (1, n):
        raise BenchError(f"blur: {ker.shape[0]} kernels for a batch of {n}; give one kernel or one per image")
    ker = ker.expand(n, 1, k, k).repeat_interleave(c, dim=0)
    lo, hi = k // 2, k - 1 - k // 2
    xp = F.pad(x.reshape(1, n * c, h, w), (lo, hi, lo, hi), mode=_PAD[padding])
    return F.conv2d(xp, ker, groups=n * c).reshape(n, c, h, w)


def bicubic_down(x: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB bicubic (antialiased) downsampling by the integer ``scale``."""
    return imresize_torch(x, 1.0 / int(scale))


def add_awgn(x: torch.Tensor, sigma255: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add Gaussian noise with per-image std ``sigma255`` (0-255 scale) to [0, 1] images."""
    gen_device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype).to(x.device)
    return x + noise * (sigma255.to(x).reshape(-1, 1, 1, 1) / 255.0)


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None, device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return (torch.rand(n, generator=generator, device=gen_device) * (hi - lo) + lo).to(device)


def random_blind_degrade(
    hr: torch.Tensor,
    scale: int,
    *,
    kind: str = "iso",
    sigma_range: tuple[float, float] | None = None,
    noise_range: tuple[float, float] = (0.0, 0.0),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DASR-Wang training degradation of N x 3 x H x W HR in [0, 1] -> (LR float in [0, 1], params).

    ``iso``: sigma ~ U[sigma_range] (default: the paper's range for the scale, [0.2, 4] at
    x4); ``aniso``: l1, l2 ~ U[sigma_range or (0.2, 4)], theta ~ U[0, pi). Noise sigma
    ~ U[noise_range] on 0-255. Params: ``sigma1``, ``sigma2``, ``theta``, ``noise`` (N each).
    LR is clamped, not quantised.
    """
    if kind not in ("iso", "aniso"):
        raise BenchError(f"random_blind_degrade: kind must be 'iso' or 'aniso', got {kind!r}")
    if hr.dim() != 4:
        raise BenchError(f"random_blind_degrade: expected N x C x H x W, got shape {tuple(hr.shape)}")
    n, dev = hr.shape[0], hr.device
    s = int(scale)
    h, w = hr.shape[-2:]
    hr = hr[..., : h - h % s, : w - w % s]
    if kind == "iso":
        lo, hi = sigma_range or DASR_ISO_RANGE.get(s, (0.2, float(s)))
        sigma1 = _uniform(n, lo, hi, generator, dev)
        sigma2, theta = sigma1, torch.zeros(n, device=dev)
    else:
        lo, hi = sigma_range or DASR_ANISO_RANGE
        sigma1 = _uniform(n, lo, hi, generator, dev)
        sigma2 = _uniform(n, lo, hi, generator, dev)
        theta = _uniform(n, 0.0, math.pi, generator, dev)
    noise = _uniform(n, noise_range[0], noise_range[1], generator, dev)
    kernels = gaussian_kernels(sigma1.to(hr.dtype), sigma2.to(hr.dtype), theta.to(hr.dtype))
    lr = bicubic_down(blur(hr, kernels), s)
    if noise_range[1] > 0:
        lr = add_awgn(lr, noise, generator)
    params = {"sigma1": sigma1, "sigma2": sigma2, "theta": theta, "noise": noise}
    return lr.clamp(0.0, 1.0), params
