"""Second-order "realistic" degradation with Real-ESRGAN's parameter ranges (numpy, seeded).

Two rounds of blur -> random resize -> Gaussian/Poisson noise -> JPEG, then a resize to
the target size with a sinc filter, the last two in random order. Ranges follow
Real-ESRGAN's x4 training options (blur sigma [0.2, 3] / [0.2, 1.5], resize ranges
[0.15, 1.5] / [0.3, 1.2], noise sigma [1, 30] / [1, 25], Poisson scale [0.05, 3] /
[0.05, 2.5], gray-noise probability 0.4, JPEG q [30, 95], second blur probability 0.8,
final sinc probability 0.8). Resizes use torch's ``interpolate`` (area / bilinear /
bicubic, no antialiasing) as Real-ESRGAN does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import special

from bench.degrade import kernels, noise

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
KERNEL_PROBS = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
RESIZE_MODES = ("area", "bilinear", "bicubic")


@dataclass(frozen=True)
class Order:
    """The ranges of one degradation round."""

    blur_prob: float
    sigma: tuple[float, float]
    sinc_prob: float
    resize_prob: tuple[float, float, float]  # up, down, keep
    resize_range: tuple[float, float]
    gaussian_prob: float
    noise_sigma: tuple[float, float]
    poisson_scale: tuple[float, float]
    gray_prob: float = 0.4
    jpeg_q: tuple[int, int] = (30, 95)


FIRST = Order(1.0, (0.2, 3.0), 0.1, (0.2, 0.7, 0.1), (0.15, 1.5), 0.5, (1.0, 30.0), (0.05, 3.0))
SECOND = Order(0.8, (0.2, 1.5), 0.1, (0.3, 0.4, 0.3), (0.3, 1.2), 0.5, (1.0, 25.0), (0.05, 2.5))
FINAL_SINC_PROB = 0.8


def sinc_kernel(cutoff: float, size: int) -> np.ndarray:
    """Circular low-pass (2-D sinc) kernel with angular cutoff ``cutoff`` (radians/pixel)."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(xx - c, yy - c)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = cutoff * special.j1(cutoff * r) / (2 * math.pi * r)
    k[r == 0] = cutoff * cutoff / (4 * math.pi)
    return k / k.sum()


def _gaussian_family(kind: str, size: int, sigma: tuple[float, float], rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    s1 = rng.uniform(*sigma)
    s2 = s1 if kind.endswith("iso") and not kind.endswith("aniso") else rng.uniform(*sigma)
    theta = 0.0 if s1 == s2 else rng.uniform(-math.pi, math.pi)
    beta = 1.0
    if kind.startswith("generalized"):
        beta = rng.uniform(0.5, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, 4.0)
    elif kind.startswith("plateau"):
        beta = rng.uniform(1.0, 2.0)
    ax = np.arange(size, dtype=np.float64) - size // 2
    x, y = ax[None, :], ax[:, None]
    inv = np.linalg.inv(kernels.covariance(theta, s1 * s1, s2 * s2))
    q = inv[0, 0] * x * x + 2 * inv[0, 1] * x * y + inv[1, 1] * y * y
    k = 1.0 / (1.0 + q**beta) if kind.startswith("plateau") else np.exp(-0.5 * q**beta)
    return k / k.sum(), {"type": kind, "sigma1": s1, "sigma2": s2, "theta": theta, "beta": beta, "size": size}


def random_kernel(order: Order, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    size = int(rng.choice(np.arange(7, 22, 2)))
    if rng.random() < order.sinc_prob:
        cutoff = rng.uniform(math.pi / 3, math.pi) if size < 13 else rng.uniform(math.pi / 5, math.pi)
        return sinc_kernel(cutoff, size), {"type": "sinc", "cutoff": cutoff, "size": size}
    kind = KERNEL_TYPES[int(rng.choice(len(KERNEL_TYPES), p=KERNEL_PROBS))]
    return _gaussian_family(kind, size, order.sigma, rng)


def _interp(img: np.ndarray, out_hw: tuple[int, int], mode: str) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    kw = {} if mode == "area" else {"align_corners": False}
    out = F.interpolate(t, size=out_hw, mode=mode, **kw)[0]
    return out.numpy().transpose(1, 2, 0)


def _noise(img: np.ndarray, order: Order, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    gray = bool(rng.random() < order.gray_prob)
    if rng.random() < order.gaussian_prob:
        sigma = rng.uniform(*order.noise_sigma)
        return noise.add_awgn(img, sigma, rng, gray), {"noise": "gaussian", "sigma": sigma, "gray": gray}
    scale = rng.uniform(*order.poisson_scale)
    return noise.add_poisson(img, scale, rng, gray), {"noise": "poisson", "scale": scale, "gray": gray}


def _round(img: np.ndarray, order: Order, rngs: list[np.random.Generator], clean: bool) -> tuple[np.ndarray, dict]:
    """One degradation round; ``rngs`` = blur, resize, noise, jpeg streams."""
    info: dict = {}
    if rngs[0].random() < order.blur_prob:
        ker, info["blur"] = random_kernel(order, rngs[0])
        img = kernels.blur(img, ker, "reflect")
    way = int(rngs[1].choice(3, p=order.resize_prob))
    factor = (rngs[1].uniform(1.0, order.resize_range[1]), rngs[1].uniform(order.resize_range[0], 1.0), 1.0)[way]
    mode = RESIZE_MODES[int(rngs[1].integers(3))]
    h, w = img.shape[:2]
    img = _interp(img, (max(1, int(h * factor)), max(1, int(w * factor))), mode)
    info["resize"] = {"factor": factor, "mode": mode}
    if not clean:
        img, info["noise"] = _noise(img, order, rngs[2])
        img = np.clip(img, 0.0, 1.0)
        q = int(rngs[3].integers(order.jpeg_q[0], order.jpeg_q[1] + 1))
        img, info["jpeg_q"] = noise.jpeg(img, q), q
    return img, info


def second_order(img: np.ndarray, scale: int, rng: np.random.Generator, clean: bool = False) -> tuple[np.ndarray, dict]:
    """Degrade float HR (H x W x 3, [0, 1]) to ``H/scale x W/scale``; returns (LR float, record).

    Every stage has its own child generator, so ``clean=True`` (no noise, no JPEG) draws
    the same kernels and resizes as the full run.
    """
    streams = rng.spawn(11)
    h, w = img.shape[:2]
    out, first = _round(np.asarray(img, dtype=np.float64), FIRST, streams[0:4], clean)
    out, second = _round(out, SECOND, streams[4:8], clean)
    final: dict = {}
    if streams[8].random() < FINAL_SINC_PROB:
        size = int(streams[8].choice(np.arange(7, 22, 2)))
        cutoff = streams[8].uniform(math.pi / 3, math.pi)
        sinc = sinc_kernel(cutoff, size)
        final["sinc"] = {"cutoff": cutoff, "size": size}
    else:
        sinc = None
    mode = RESIZE_MODES[int(streams[9].integers(3))]
    jpeg_first = bool(streams[10].random() < 0.5)
    q = int(streams[10].integers(SECOND.jpeg_q[0], SECOND.jpeg_q[1] + 1))
    final.update({"mode": mode, "jpeg_first": jpeg_first, "jpeg_q": q})

    def resize_sinc(x: np.ndarray) -> np.ndarray:
        x = _interp(x, (h // scale, w // scale), mode)
        return kernels.blur(x, sinc, "reflect") if sinc is not None else x

    if clean:
        out = resize_sinc(out)
    elif jpeg_first:
        out = resize_sinc(noise.jpeg(out, q))
    else:
        out = noise.jpeg(np.clip(resize_sinc(out), 0.0, 1.0), q)
    return np.clip(out, 0.0, 1.0), {"first": first, "second": second, "final": final}
