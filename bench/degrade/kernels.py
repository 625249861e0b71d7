"""Blur kernels of the reproduced protocols, and the blur itself.

Conventions (read from the official code; see PROTOCOLS.md):
- DASR-Wang: grid ``arange(size) - size // 2`` (-10..10 for 21), x = column index,
  y = row index (pointing down); covariance ``R diag(l1^2, l2^2) R^T`` with
  ``R = [[cos, -sin], [sin, cos]]`` and l1, l2 standard deviations; kernel normalised.
  Applied with ``F.conv2d`` (a correlation) after ``ReflectionPad2d`` (no edge repeat).
- MANet (manet-si, used by CDSR): parameters are *variances*; see :func:`manet_kernel`.
- DIV2KRK (KernelGAN / BlindSR_dataset_generator): see :func:`div2krk_kernel`.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, signal

from bench.adapter import BenchError

# DASR-Wang Table 3 (x4, Set14): (theta in degrees, l1, l2), l1/l2 standard deviations.
DASR_TABLE3: tuple[tuple[float, float, float], ...] = (
    (0.0, 2.0, 0.5),
    (10.0, 2.0, 1.0),
    (30.0, 3.5, 1.5),
    (45.0, 3.5, 2.0),
    (90.0, 3.5, 2.0),
    (120.0, 4.0, 1.5),
    (135.0, 4.0, 2.0),
    (165.0, 4.0, 3.0),
    (180.0, 4.0, 4.0),
)

PADDINGS = {"reflect": "reflect", "replicate": "edge", "symmetric": "symmetric"}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ax = np.arange(size, dtype=np.float64) - size // 2
    return ax[None, :], ax[:, None]  # x (column), y (row)


def _gaussian_from_inverse(x: np.ndarray, y: np.ndarray, inv: np.ndarray) -> np.ndarray:
    q = inv[0, 0] * x * x + (inv[0, 1] + inv[1, 0]) * x * y + inv[1, 1] * y * y
    k = np.exp(-0.5 * q)
    return k / k.sum()


def covariance(theta_rad: float, v1: float, v2: float) -> np.ndarray:
    """``R(theta) diag(v1, v2) R(theta)^T`` (v1, v2 are variances)."""
    c, s = math.cos(theta_rad), math.sin(theta_rad)
    rot = np.array([[c, -s], [s, c]])
    return rot @ np.diag([v1, v2]) @ rot.T


def isotropic_gaussian(sigma: float, size: int = 21) -> np.ndarray:
    """DASR-Wang isotropic kernel: std ``sigma`` on the grid ``-size//2 .. size//2``."""
    if sigma <= 0:
        raise BenchError(f"isotropic_gaussian: sigma must be > 0 (sigma=0 means no blur), got {sigma}")
    x, y = _grid(size)
    k = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    return k / k.sum()


def anisotropic_gaussian(theta_rad: float, l1: float, l2: float, size: int = 21) -> np.ndarray:
    """DASR-Wang anisotropic kernel: covariance ``R diag(l1^2, l2^2) R^T``, l1/l2 std devs."""
    if l1 <= 0 or l2 <= 0:
        raise BenchError(f"anisotropic_gaussian: l1 and l2 must be > 0, got {l1}, {l2}")
    x, y = _grid(size)
    inv = np.linalg.inv(covariance(theta_rad, l1 * l1, l2 * l2))
    return _gaussian_from_inverse(x, y, inv)


def dasr_aniso_table3(k: int, size: int = 21) -> np.ndarray:
    """Kernel ``k`` (1..9) of DASR-Wang Table 3."""
    if not 1 <= int(k) <= len(DASR_TABLE3):
        raise BenchError(f"DASR Table 3 has kernels k=1..{len(DASR_TABLE3)}, got k={k}")
    theta, l1, l2 = DASR_TABLE3[int(k) - 1]
    return anisotropic_gaussian(math.radians(theta), l1, l2, size)


def manet_params(scale: int) -> tuple[tuple[float, float, float], ...]:
    """The 9 spatially-invariant test kernels of MANet's ``prepare_testset.py``.

    Returned as (variance 1, variance 2, theta in radians) in the script's loop order:
    ``sig1 in [1, 1+s, 1+2s]``, ``sig2 in range(1, 1+sig1, s)``, ``theta in [0, pi/4]``,
    skipping ``theta > 0`` when ``sig1 == sig2``.
    """
    s = int(scale)
    out = []
    for v1 in (1, 1 + s, 1 + 2 * s):
        for v2 in range(1, 1 + v1, s):
            for theta in (0.0, math.pi / 4):
                if v1 == v2 and theta > 0:
                    continue
                out.append((float(v1), float(v2), theta))
    return tuple(out)


def manet_kernel(k: int, scale: int, size: int = 21) -> np.ndarray:
    """Kernel ``k`` (1..9) of MANet's test set at ``scale``, shifted as MANet shifts it.

    Source: MANet (JingyunLiang/MANet) ``codes/prepare_testset.py`` with
    ``options/test/prepare_testset.yml`` (kernel_size 21, rate_iso 0, i.e. always the
    anisotropic generator) and ``codes/utils/util.py``:
    ``stable_batch_kernel`` draws the Gaussian on a ``L = size - scale + 1`` grid centred
    at ``L/2 - 0.5`` (``anisotropic_gaussian_kernel_matlab``: covariance from variances
    ``[[v1 c^2 + v2 s^2, (v1 - v2) c s], [., v1 s^2 + v2 c^2]]``, first coordinate =
    column, values below ``eps * max`` zeroed, normalised) and writes it into the
    *top-left* ``L x L`` corner of a ``size x size`` zero kernel. That moves the centre
    of mass by ``(scale - 1) / 2`` pixels up and left of the 21x21 centre; it is then
    applied as a correlation (``F.conv2d``) with replicate padding and followed by
    s-fold subsampling ``[0::s, 0::s]``.
    """
    params = manet_params(scale)
    if not 1 <= int(k) <= len(params):
        raise BenchError(f"manet-si has kernels k=1..{len(params)}, got k={k}")
    v1, v2, theta = params[int(k) - 1]
    side = size - int(scale) + 1
    centre = side / 2.0 - 0.5
    coords = np.arange(side, dtype=np.float64) - centre
    x, y = coords[None, :], coords[:, None]
    c, s = math.cos(theta), math.sin(theta)
    cov = np.array([[v1 * c * c + v2 * s * s, (v1 - v2) * c * s], [(v1 - v2) * c * s, v1 * s * s + v2 * c * c]])
    inv = np.linalg.inv(cov)
    small = np.exp(-0.5 * (inv[0, 0] * x * x + 2 * inv[0, 1] * x * y + inv[1, 1] * y * y))
    small[small < np.finfo(np.float64).eps * small.max()] = 0.0
    small /= small.sum()
    kernel = np.zeros((size, size), dtype=np.float64)
    kernel[:side, :side] = small
    return kernel


DIV2KRK_SIZES = {2: 11, 3: 21, 4: 31}


def div2krk_kernel(rng: np.random.Generator, scale: int, size: int | None = None) -> tuple[np.ndarray, dict]:
    """A DIV2KRK-style random kernel (KernelGAN's BlindSR_dataset_generator recipe).

    Eigenvalue *variances* ~ U[0.175 s, 2.5 s], theta ~ U[0, pi), multiplicative
    per-tap noise U[-0.4, 0.4]; Gaussian centred at ``size//2 + 0.5 (s - size%2)``, then
    shifted (cubic spline) so its centre of mass sits at ``size/2 + 0.5 (s - size%2)``
    as the generator does; normalised. Sizes 11 (x2) and 31 (x4) as DIV2KRK ships;
    21 at x3 is our choice. Apply as a correlation, then s-fold subsampling.
    """
    s = int(scale)
    size = int(size or DIV2KRK_SIZES.get(s, 4 * s + 9))
    lo, hi = 0.175 * s, 2.5 * s
    lam1 = lo + rng.random() * (hi - lo)
    lam2 = lo + rng.random() * (hi - lo)
    theta = rng.random() * math.pi
    noise = -0.4 + rng.random((size, size)) * 0.8
    inv = np.linalg.inv(covariance(theta, lam1, lam2))
    mu = size // 2 + 0.5 * (s - size % 2)
    grid = np.arange(size, dtype=np.float64) - mu
    x, y = grid[None, :], grid[:, None]
    raw = np.exp(-0.5 * (inv[0, 0] * x * x + 2 * inv[0, 1] * x * y + inv[1, 1] * y * y)) * (1.0 + noise)
    wanted = np.array(raw.shape) / 2.0 + 0.5 * (s - raw.shape[0] % 2)
    shifted = ndimage.shift(raw, wanted - np.array(ndimage.center_of_mass(raw)))
    kernel = shifted / shifted.sum()
    return kernel, {"lambda1": lam1, "lambda2": lam2, "theta": theta, "size": size}


def blur(img: np.ndarray, kernel: np.ndarray, padding: str = "reflect") -> np.ndarray:
    """Correlate each channel with ``kernel`` (as ``F.conv2d`` does), same output size.

    ``padding``: ``reflect`` (torch ``ReflectionPad2d``: edge not repeated),
    ``replicate`` (edge repeated), ``symmetric`` (mirror with the edge repeated, scipy's
    ``reflect``). Even kernels pad ``k//2`` before and ``k//2 - 1`` after, as the
    official ``BatchBlur`` modules do.
    """
    if padding not in PADDINGS:
        raise BenchError(f"unknown blur padding {padding!r}; use one of {sorted(PADDINGS)}")
    arr = np.asarray(img, dtype=np.float64)
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[:, :, None]
    kh, kw = kernel.shape
    pads = ((kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2), (0, 0))
    padded = np.pad(arr, pads, mode=PADDINGS[padding])
    flipped = np.asarray(kernel, dtype=np.float64)[::-1, ::-1, None]
    out = signal.fftconvolve(padded, flipped, mode="valid", axes=(0, 1))
    return out[:, :, 0] if squeeze else out
