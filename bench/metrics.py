"""Image-quality metrics under named protocols (DESIGN.md section 4), pyiqa underneath.

``create_metric(name, protocol=..., scale=...)`` returns a :class:`Metric`; its
``spec.lower_better`` travels with it, as in pyiqa. pyiqa's own defaults (YIQ luma,
crop 0) are wrong for paper tables, so every choice is made here explicitly:

- ``paper-y``: PSNR/SSIM on Y of BT.601 YCbCr (16 + 65.481 R + 128.553 G + 24.966 B,
  RGB in [0,1]), crop border = scale. Values equal pyiqa's ``psnr``/``ssim`` with
  ``color_space='ycbcr'``, ``test_y_channel=True``, ``crop_border=scale``: PSNR on the
  unrounded Y with pyiqa's 1e-8 added to the MSE on the [0,1] scale, SSIM on Y rounded to
  8-bit levels (11x11 Gaussian window, sigma 1.5, valid region, no downsampling).
- ``rgb``: the same on the three RGB channels (FSSR, MSSR, PDM).
- A file stored single-channel (``gray=True``, or an HR with one channel) is scored on
  one channel, the luma 0.299 R + 0.587 G + 0.114 B of the SR output against the HR
  channel itself, in both protocols.
- NIQE: Y-BT.601 rounded to 8-bit levels, crop border = scale, LIVE pristine model.
- LPIPS: AlexNet, v0.1, RGB in [0,1], whole image (no crop); needs two weight files
  that are verified by sha256 before use, or the metric is unavailable (``n/a``).

Images: ``uint8`` H x W x 3 (or H x W / H x W x 1 for single-channel files), or float
arrays in [0,1], which are used as given (not rounded: the caller rounds SR to 8-bit
levels, DESIGN.md section 4).
"""
from __future__ import annotations

import contextlib
import functools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np
import torch
from scipy.ndimage import correlate1d
from torch import nn

from bench.adapter import (
    BenchError,
    sha256_file as _sha256,
    CheckpointError,
    load_state_dict_checked,
    load_torch_file,
    unknown_name,
)

PROTOCOLS = ("paper-y", "rgb")
CHANNELS = ("y", "rgb", "luma")

# pyiqa's psnr adds this to the MSE on the [0,1] scale; kept so values match it (and
# identical images give a finite 80 dB instead of inf).
PSNR_EPS = 1e-8
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_SSIM_C1 = (0.01 * 255.0) ** 2
_SSIM_C2 = (0.03 * 255.0) ** 2
NIQE_BLOCK = 96

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
LPIPS_LIN_FILE = "LPIPS_v0.1_alex-df73285e.pth"
# torch.hub names files "<name>-<first 8 hex of sha256>.pth" and checks only that prefix
# (torch.hub.HASH_REGEX); pyiqa checks nothing. The linear layers are byte-identical to
# the `lpips` package's weights/v0.1/alex.pth, whose full digest is known, so it is
# checked in full; for AlexNet only torchvision's prefix is published.
EXPECTED_SHA256: Mapping[str, str] = MappingProxyType(
    {
        ALEXNET_FILE: "7be5be79",
        LPIPS_LIN_FILE: "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    }
)
_LPIPS_CHANNELS = (64, 192, 384, 256, 256)
# AlexNet `features` indices that end each LPIPS stage (after relu1..relu5).
_ALEX_STAGES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))

_NIQE_PARAMS = Path(__file__).with_name("niqe_pris_params.npz")


class MetricUnavailable(BenchError):
    """The metric cannot run here (missing weights); the message says what to place where."""


@dataclass(frozen=True)
class MetricSpec:
    """What a metric is and how tables show it (the metadata travels with the metric, as in pyiqa).

    ``label``: the column heading (PSNR); ``digits``: decimals printed; ``lower_better``
    decides the arrow and which value is bold. The order of :data:`METRICS` is the order
    tables list metrics in when a run does not say otherwise."""

    name: str
    lower_better: bool
    full_reference: bool
    description: str
    #: part of every stored value's key: bump when the metric's code changes its numbers
    version: str = "1"
    label: str = ""
    digits: int = 4

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name.upper())


METRICS: Mapping[str, MetricSpec] = MappingProxyType(
    {
        "psnr": MetricSpec("psnr", False, True, "PSNR (dB), pyiqa psnr under the protocol's channel and crop",
                           label="PSNR", digits=2),
        "ssim": MetricSpec("ssim", False, True, "SSIM, 11x11 Gaussian sigma 1.5, 8-bit levels, no downsampling",
                           label="SSIM", digits=4),
        "lpips": MetricSpec("lpips", True, True, "LPIPS v0.1 AlexNet, RGB in [0,1], whole image",
                            label="LPIPS", digits=4),
        "niqe": MetricSpec("niqe", True, False, "NIQE, LIVE pristine model, Y-BT.601, crop = scale",
                           label="NIQE", digits=3,
                           version="2"),  # 2: vectorised over blocks (values within 1e-4 of version 1)
    }
)


# ---------------------------------------------------------------------------
# input conversion
# ---------------------------------------------------------------------------
# Y-BT.601 = 16 + these weights . RGB on 0..255; luma = (299 R + 587 G + 114 B) / 1000.
_Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
_LUMA_WEIGHTS = (299.0, 587.0, 114.0)


def _checked(img: np.ndarray, what: str) -> np.ndarray:
    """H x W x C (C = 1 or 3): uint8 as is (no copy), floats in [0,1] as float64 on 0..255."""
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise BenchError(f"{what}: expected an H x W x 3 (or H x W) image, got shape {arr.shape}; pass channels last")
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise BenchError(
                f"{what}: float values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; clamp and round the SR output first"
            )
        return arr.astype(np.float64) * 255.0
    raise BenchError(f"{what}: dtype {arr.dtype} is not supported; pass uint8 or float in [0, 1]")


def _as_255(img: np.ndarray, what: str) -> np.ndarray:
    return _checked(img, what).astype(np.float64, copy=False)


def _weighted(arr: np.ndarray, w: tuple[float, float, float]) -> np.ndarray:
    # One channel at a time, in place: several times faster than (N x 3) @ w here.
    out = arr[..., 0] * w[0]
    out += arr[..., 1] * w[1]
    out += arr[..., 2] * w[2]
    return out


def _y(arr: np.ndarray) -> np.ndarray:
    out = _weighted(arr, _Y_WEIGHTS)
    out += 16.0
    return out


def _luma(arr: np.ndarray) -> np.ndarray:
    if arr.shape[2] == 1:
        return arr[..., 0].astype(np.float64)
    # Integer weights, then one division: on 8-bit input every x.5 tie stays exact, so
    # rounding for SSIM is half-to-even by definition, not by floating-point noise.
    out = _weighted(arr, _LUMA_WEIGHTS)
    out /= 1000.0
    return out


def to_y_bt601(img: np.ndarray) -> np.ndarray:
    """Y of BT.601 YCbCr, float64 on 0..255 (unrounded), from RGB uint8 or float [0,1]."""
    arr = _checked(img, "image")
    if arr.shape[2] != 3:
        raise BenchError("to_y_bt601: the image has one channel; a single-channel file is scored with channel='luma'")
    return _y(arr)


def to_luma(img: np.ndarray) -> np.ndarray:
    """0.299 R + 0.587 G + 0.114 B on 0..255 (float64); a one-channel image is returned as is."""
    return _luma(_checked(img, "image"))


def _crop(arr: np.ndarray, crop: int) -> np.ndarray:
    if crop < 0:
        raise BenchError(f"crop border must be >= 0, got {crop}")
    return arr[crop:-crop, crop:-crop] if crop else arr


def _checked_pair(a: np.ndarray, b: np.ndarray, crop: int, channel: str) -> tuple[np.ndarray, np.ndarray]:
    """Both images checked and cropped (cropping first: every conversion is per pixel)."""
    if channel not in CHANNELS:
        raise BenchError(unknown_name("channel", channel, CHANNELS))
    ca, cb = _checked(a, "SR image"), _checked(b, "HR image")
    if ca.shape[:2] != cb.shape[:2]:
        raise BenchError(
            f"SR {ca.shape[1]}x{ca.shape[0]} and HR {cb.shape[1]}x{cb.shape[0]} (width x height) differ in size; "
            "score SR against its HR cropped at the bottom/right to a multiple of the scale (bench.data.mod_crop), "
            "and SR must be exactly scale x the LR size"
        )
    if channel != "luma" and 1 in (ca.shape[2], cb.shape[2]):
        which = "SR image" if ca.shape[2] == 1 else "HR image"
        raise BenchError(f"{which} has one channel; score single-channel files with gray=True (channel 'luma')")
    ca, cb = _crop(ca, crop), _crop(cb, crop)
    if ca.shape[0] < 1 or ca.shape[1] < 1:
        raise BenchError(f"image {a.shape[:2]} is too small for crop border {crop}")
    return ca, cb


def _plane(arr: np.ndarray, channel: str) -> np.ndarray:
    """C x H x W float64 on 0..255: the planes a metric compares."""
    if channel == "y":
        return _y(arr)[None]
    if channel == "luma":
        return _luma(arr)[None]
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float64)


def _pair_planes(a: np.ndarray, b: np.ndarray, crop: int, channel: str) -> tuple[np.ndarray, np.ndarray]:
    ca, cb = _checked_pair(a, b, crop, channel)
    return _plane(ca, channel), _plane(cb, channel)


# ---------------------------------------------------------------------------
# PSNR / SSIM
# ---------------------------------------------------------------------------
def _psnr_from_mse255(mse: float) -> float:
    return 10.0 * math.log10(1.0 / (mse / (255.0 * 255.0) + PSNR_EPS))


def psnr(a: np.ndarray, b: np.ndarray, *, crop: int, channel: str) -> float:
    """PSNR in dB of ``a`` against ``b`` on ``channel`` ('y', 'rgb' or 'luma'), ``crop`` pixels off each edge."""
    ca, cb = _checked_pair(a, b, crop, channel)
    if ca.shape[2] == cb.shape[2]:
        # Y and luma are linear in RGB: convert the difference once, not both images.
        d = np.subtract(ca, cb, dtype=np.int16 if ca.dtype == cb.dtype == np.uint8 else np.float64)
        if channel == "y":
            d = _weighted(d, _Y_WEIGHTS)
        elif channel == "luma" and d.shape[2] == 3:
            d = _weighted(d, _LUMA_WEIGHTS) / 1000.0
        else:
            d = d.astype(np.float64)
    else:  # luma of an RGB SR against a single-channel HR
        d = _luma(ca) - _luma(cb)
    return _psnr_from_mse255(float(np.mean(np.square(d))))


def gaussian_window_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The normalised 1-D Gaussian whose outer product is MATLAB's fspecial('gaussian')."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    # Separable: two 11-tap passes instead of one 121-tap 2-D convolution; only the
    # 'valid' region is kept, as pyiqa's filter2(..., 'valid') does.
    r = len(g) // 2
    t = correlate1d(x, g, axis=0, mode="constant")[r:-r]
    return correlate1d(t, g, axis=1, mode="constant")[:, r:-r]


def _ssim_map_sum(x: np.ndarray, y: np.ndarray, g: np.ndarray) -> float:
    """Sum of the SSIM map of two rounded planes over their valid region."""
    mu1, mu2 = _filter_valid(x, g), _filter_valid(y, g)
    # SSIM needs only sigma1^2 + sigma2^2, so x^2 + y^2 is filtered once (4 filters, not 5).
    e_sq = _filter_valid(x * x + y * y, g)
    e_xy = _filter_valid(x * y, g)
    mu12 = mu1 * mu2
    mu_sq = mu1 * mu1
    mu_sq += mu2 * mu2
    e_sq -= mu_sq  # sigma1^2 + sigma2^2
    e_xy -= mu12  # sigma12
    cs = 2.0 * e_xy
    cs += _SSIM_C2
    e_sq += _SSIM_C2
    cs /= e_sq
    np.maximum(cs, 0.0, out=cs)  # pyiqa clamps cs at 0
    lum = 2.0 * mu12
    lum += _SSIM_C1
    mu_sq += _SSIM_C1
    lum /= mu_sq
    lum *= cs
    return float(lum.sum())


def _ssim_planes(pa: np.ndarray, pb: np.ndarray, threads: int | None = None) -> float:
    """Mean SSIM of C x H x W planes; row strips run on ``threads`` threads (scipy and
    numpy release the GIL), by default torch's thread count for this process."""
    # pyiqa rounds the (Y or RGB) planes to 8-bit levels before SSIM, like MATLAB on uint8.
    pa, pb = np.round(pa), np.round(pb)
    c, h, w = pa.shape
    if min(h, w) < SSIM_WINDOW:
        raise BenchError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after cropping, got {h}x{w}")
    g = gaussian_window_1d()
    r = SSIM_WINDOW - 1
    n_out = (h - r) * (w - r)
    threads = max(1, threads if threads is not None else torch.get_num_threads())
    strips = max(1, min(threads, (h - r) // 64))  # a strip re-filters r extra rows
    edges = np.linspace(0, h - r, strips + 1).astype(int)
    jobs = [(k, lo, hi) for k in range(c) for lo, hi in zip(edges[:-1], edges[1:])]

    def one(job: tuple[int, int, int]) -> float:
        k, lo, hi = job
        return _ssim_map_sum(pa[k, lo : hi + r], pb[k, lo : hi + r], g)

    if len(jobs) == 1 or threads == 1:
        sums = [one(j) for j in jobs]
    else:
        with ThreadPoolExecutor(min(threads, len(jobs))) as pool:
            sums = list(pool.map(one, jobs))
    return math.fsum(sums) / (c * n_out)


def ssim(a: np.ndarray, b: np.ndarray, *, crop: int, channel: str) -> float:
    """SSIM of ``a`` against ``b`` on ``channel``; equals pyiqa's ``ssim`` (downsample=False)."""
    return _ssim_planes(*_pair_planes(a, b, crop, channel))


def ssim_torch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM of N x C x H x W planes on 0..255 (any device), one value per image.

    The batched GPU path of :func:`ssim`; the planes are rounded here as there.
    """
    x = torch.round(x.to(torch.float64))
    y = torch.round(y.to(torch.float64))
    n, c = x.shape[:2]
    g = torch.from_numpy(gaussian_window_1d()).to(x)
    gv, gh = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(torch.nn.functional.conv2d(t, gv, groups=c), gh, groups=c)

    mu1, mu2 = filt(x), filt(y)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1, s2, s12 = filt(x * x) - mu1_sq, filt(y * y) - mu2_sq, filt(x * y) - mu12
    cs = torch.relu((2.0 * s12 + _SSIM_C2) / (s1 + s2 + _SSIM_C2))
    smap = ((2.0 * mu12 + _SSIM_C1) / (mu1_sq + mu2_sq + _SSIM_C1)) * cs
    return smap.reshape(n, -1).mean(dim=1)


# ---------------------------------------------------------------------------
# NIQE
# ---------------------------------------------------------------------------
def load_niqe_params(path: str | Path = _NIQE_PARAMS) -> tuple[torch.Tensor, torch.Tensor]:
    """NIQE's pristine multivariate Gaussian (mu 36, cov 36x36), float64.

    Source: Mittal, Soundararajan and Bovik, "Making a completely blind image quality
    analyzer", IEEE Signal Processing Letters 2013 (LIVE ``modelparameters.mat``:
    ``mu_prisparam``, ``cov_prisparam``). The file ``niqe_pris_params.npz`` is taken
    unchanged from the BasicSR 1.4.2 source distribution on PyPI
    (``basicsr/metrics/niqe_pris_params.npz``, Apache-2.0), whose values equal LIVE's.
    """
    p = Path(path)
    if not p.exists():
        raise BenchError(f"NIQE parameters {p} are missing; reinstall the package (it ships niqe_pris_params.npz)")
    with np.load(p) as z:
        mu = np.ravel(z["mu_pris_param"]).astype(np.float64)
        cov = np.asarray(z["cov_pris_param"], dtype=np.float64)
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise BenchError(f"NIQE parameters {p} have shapes {mu.shape}, {cov.shape}; expected (36,), (36, 36)")
    return torch.from_numpy(mu), torch.from_numpy(cov)


def _niqe_checked(img: np.ndarray, crop: int, what: str) -> np.ndarray:
    arr = _crop(_checked(img, what), crop)
    h, w = arr.shape[:2]
    if h < NIQE_BLOCK or w < NIQE_BLOCK:
        raise BenchError(
            f"{what}: NIQE needs at least {NIQE_BLOCK}x{NIQE_BLOCK} pixels after cropping {crop}, got {h}x{w}; "
            f"score a larger image or leave niqe out of --metrics"
        )
    return arr


def _to_nchw(arrays: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """N x C x H x W float64 on 0..255 on ``device``; 8-bit data travels as 8-bit."""
    t = torch.from_numpy(np.stack(arrays)).to(device)
    return t.permute(0, 3, 1, 2).to(torch.float64)


def _niqe_input(img: np.ndarray, crop: int, what: str) -> torch.Tensor:
    """1 x C x h x w float64 in [0,1], cropped, one contiguous plane per channel (the
    per-pixel luma reads them); 3 channels become Y in :func:`_niqe_luma`."""
    planes = np.ascontiguousarray(_niqe_checked(img, crop, what).transpose(2, 0, 1))
    return torch.from_numpy(planes)[None].to(torch.float64) / 255.0


# The values are pyiqa's calculate_niqe (the calibrated reference, equal to MATLAB's
# niqe to 4 digits), computed without its per-block work: pyiqa's float64 7x7 conv2d,
# unfold-based resize and 9801-entry argmin per AGGD fit are most of its time. Each
# step below names the pyiqa arithmetic it keeps, because NIQE is not smooth in its
# input: an AGGD shape is the nearest point of a 0.001 grid, and in flat areas the
# normalised value is a rounding residue whose sign decides which side it counts on.
@functools.lru_cache(maxsize=1)
def _niqe_aggd_table() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """pyiqa's AGGD shape grid (float32 arange, as pyiqa builds it) with, per grid point,
    r(a) = G(2/a)^2 / (G(1/a) G(3/a)) and the two factors the features need:
    sqrt(G(1/a)/G(3/a)) (std -> beta) and G(2/a)/G(1/a) (betas -> mean), float64 on the CPU."""
    gam = torch.arange(0.2, 10 + 0.001, 0.001).to(torch.float64)
    r = (2 * torch.lgamma(2.0 / gam) - (torch.lgamma(1.0 / gam) + torch.lgamma(3.0 / gam))).exp()
    # r is strictly increasing on the grid, so the nearest point is found by bisection
    # (searchsorted) instead of pyiqa's argmin over all 9801 points per block.
    if not bool((r[1:] > r[:-1]).all()):
        raise RuntimeError("NIQE: the AGGD ratio table is not increasing; the lookup would be wrong")
    beta = (torch.lgamma(1.0 / gam) - torch.lgamma(3.0 / gam)).exp().sqrt()
    mean = (torch.lgamma(2.0 / gam) - torch.lgamma(1.0 / gam)).exp()
    return gam, r, beta, mean


def _niqe_window() -> np.ndarray:
    """MATLAB's fspecial('gaussian', 7, 7/6) as pyiqa stores it: float32, so its 49 taps
    sum to 1 + 1.1e-8 rather than 1."""
    s = 7.0 / 6.0
    y, x = np.ogrid[-3:4, -3:4]
    h = np.exp(-(x * x + y * y) / (2.0 * s * s))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    return (h / h.sum()).astype(np.float32).astype(np.float64)


@functools.lru_cache(maxsize=1)
def _niqe_window_1d() -> np.ndarray:
    """1-D factor g of the window (g g^T equals it to 2e-9), scaled so that (sum g)^2
    is the 2-D window's sum: in a flat area the local mean is then c (1 + 1.1e-8) as in
    pyiqa, and the normalised value the same tiny negative number, not 0 or noise.
    Separable: 2 x 7 taps per pixel instead of 49."""
    s = 7.0 / 6.0
    g = np.exp(-((np.arange(7) - 3.0) ** 2) / (2.0 * s * s))
    g *= math.sqrt(float(_niqe_window().sum())) / g.sum()
    g.setflags(write=False)
    return g


def _niqe_filter(x: torch.Tensor) -> torch.Tensor:
    """N x H x W float64 -> the 7x7 window's weighted local mean, edges replicated."""
    g = _niqe_window_1d()
    if x.device.type == "cpu":  # scipy's C loops are several times faster than torch ops here
        t = correlate1d(x.numpy(), g, axis=1, mode="nearest")
        return torch.from_numpy(correlate1d(t, g, axis=2, mode="nearest"))
    h, w = x.shape[-2:]
    xp = torch.nn.functional.pad(x[:, None], (3, 3, 3, 3), mode="replicate")[:, 0]
    acc = xp[:, 0:h] * float(g[0])
    for k in range(1, 7):
        acc = acc + xp[:, k : k + h] * float(g[k])
    out = acc[..., 0:w] * float(g[0])
    for k in range(1, 7):
        out = out + acc[..., k : k + w] * float(g[k])
    return out


def _niqe_normalise(x: torch.Tensor) -> torch.Tensor:
    """pyiqa's normalize_img_with_gauss: (x - mu) / (sqrt(|E[x^2] - mu^2| + eps) + 1)."""
    if x.device.type == "cpu" and torch.get_num_threads() > 1:
        # scipy runs on one core and releases the GIL: the two filters side by side
        with ThreadPoolExecutor(2) as pool:
            mu_f, var_f = pool.submit(_niqe_filter, x), pool.submit(_niqe_filter, x * x)
            mu, var = mu_f.result(), var_f.result()
    else:
        mu, var = _niqe_filter(x), _niqe_filter(x * x)
    var -= mu * mu
    sigma = torch.sqrt(var.abs_() + torch.finfo(x.dtype).eps)
    return (x - mu) / (sigma + 1.0)


def _niqe_aggd(f: torch.Tensor, table: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """pyiqa's estimate_aggd_param on every row of ``f`` (rows = blocks) at once:
    (shape index into the grid, left std, right std). Zeros count on neither side."""
    r = table[1]
    lo, hi = f.clamp(max=0.0), f.clamp(min=0.0)
    n_left = torch.count_nonzero(lo, dim=-1).to(f.dtype)
    n_right = torch.count_nonzero(hi, dim=-1).to(f.dtype)
    sum_left = torch.linalg.vecdot(lo, lo)
    sum_right = torch.linalg.vecdot(hi, hi)
    n = f.shape[-1]
    left_std = torch.sqrt(sum_left / n_left)
    right_std = torch.sqrt(sum_right / n_right)
    g = left_std / right_std
    mean_abs = (hi.sum(-1) - lo.sum(-1)) / n
    rhat = mean_abs * mean_abs / ((sum_left + sum_right) / n)
    rnorm = (rhat * (g * g * g + 1) * (g + 1)) / (g * g + 1) ** 2
    # The grid point nearest rnorm: pyiqa's argmin(|r - rnorm|), first index on a tie;
    # a NaN or inf (a block with no values on one side) gives index 0 there as here.
    i = torch.searchsorted(r, rnorm.contiguous()).clamp_(1, len(r) - 1)
    below, above = (r[i - 1] - rnorm).abs(), (r[i] - rnorm).abs()
    idx = torch.where(above < below, i, i - 1)
    idx = torch.where(torch.isfinite(rnorm), idx, torch.zeros_like(idx))
    return idx, left_std, right_std


# Neighbour products within a block (pyiqa rolls each block, so they wrap at its edges):
# horizontal, vertical, main and anti-diagonal.
_NIQE_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _wrap_ranges(k: int) -> list[tuple[slice, slice]]:
    """(destination, source) index ranges along one axis of ``torch.roll(.., k)``, k in -1..1."""
    if k == 0:
        return [(slice(None), slice(None))]
    if k == 1:
        return [(slice(1, None), slice(None, -1)), (slice(0, 1), slice(-1, None))]
    return [(slice(None, -1), slice(1, None)), (slice(-1, None), slice(0, 1))]


def _rolled_product(blocks: torch.Tensor, shift: tuple[int, int]) -> torch.Tensor:
    """``blocks * torch.roll(blocks, shift, dims=(1, 2))`` without materialising the roll."""
    out = torch.empty_like(blocks)
    for dr, sr in _wrap_ranges(shift[0]):
        for dc, sc in _wrap_ranges(shift[1]):
            torch.mul(blocks[:, dr, dc], blocks[:, sr, sc], out=out[:, dr, dc])
    return out


def _niqe_block_features(z: torch.Tensor, size: int, table: Sequence[torch.Tensor]) -> torch.Tensor:
    """N x nb x 18 features of the ``size`` x ``size`` blocks of normalised N x H x W ``z``."""
    gam, _, beta, mean = table
    n, h, w = z.shape
    nbh, nbw = h // size, w // size
    blocks = z.reshape(n, nbh, size, nbw, size).transpose(2, 3).reshape(n * nbh * nbw, size, size)
    flat = blocks.reshape(n * nbh * nbw, size * size)
    feats = []
    idx, left, right = _niqe_aggd(flat, table)
    b = beta[idx]
    feats += [gam[idx], (left * b + right * b) / 2]
    for shift in _NIQE_SHIFTS:
        prod = _rolled_product(blocks, shift)
        idx, left, right = _niqe_aggd(prod.reshape(flat.shape), table)
        b = beta[idx]
        beta_l, beta_r = left * b, right * b
        feats += [gam[idx], (beta_r - beta_l) * mean[idx], beta_l, beta_r]
    return torch.stack(feats, dim=-1).reshape(n, nbh * nbw, 18)


@functools.lru_cache(maxsize=1)
def _niqe_half_taps() -> tuple[float, ...]:
    """pyiqa's float32 bicubic taps (antialiased, scale 1/2) at distances 4.5 - t, t = 0..9."""
    ax = ((torch.tensor(4.5, dtype=torch.float32) - torch.arange(10, dtype=torch.float32)) * 0.5).abs()
    ax2 = ax * ax
    ax3 = ax * ax2
    a = -0.5
    inner = ((a + 2) * ax3 - (a + 3) * ax2 + 1) * (ax <= 1).to(ax.dtype)
    outer = (a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a) * ((ax > 1) & (ax <= 2)).to(ax.dtype)
    w = inner + outer
    return tuple(float(v) for v in (w / w.sum()).tolist())


def _niqe_half(x: torch.Tensor) -> torch.Tensor:
    """pyiqa's imresize(x / 255, 0.5) * 255 for N x H x W with H, W even, in the same
    float32 arithmetic (pyiqa casts to float32 whatever it gets): each output is the same
    ten taps summed in order, on MATLAB's symmetric padding. Equal to pyiqa's bit for bit;
    a float64 resize would move NIQE by up to 4e-5 through the shape grid."""
    taps = _niqe_half_taps()
    xf = (x / 255.0).to(torch.float32)

    def halve_rows(t: torch.Tensor) -> torch.Tensor:
        m = t.shape[-2] // 2
        tp = torch.cat([t[..., :4, :].flip(-2), t, t[..., -4:, :].flip(-2)], dim=-2)
        acc = None
        for k, wk in enumerate(taps):
            if wk == 0.0:  # the end taps are 0: adding 0 * x leaves pyiqa's sum unchanged
                continue
            term = tp[..., k : k + 2 * m - 1 : 2, :] * wk
            acc = term if acc is None else acc + term
        return acc

    # columns as rows of the transpose: the strided reads stay within contiguous rows
    y = halve_rows(halve_rows(xf).transpose(-1, -2).contiguous()).transpose(-1, -2)
    return y.to(torch.float64) * 255.0


_NIQE_Y_WEIGHTS = tuple(float(np.float32(v)) for v in (65.481, 128.553, 24.966))  # pyiqa's float32 matrix


def _niqe_luma(x: torch.Tensor) -> torch.Tensor:
    """N x C x H x W float64 in [0,1] -> N x H x W on 0..255 rounded to 8-bit levels, as
    pyiqa's calculate_niqe (Y-BT.601 for 3 channels, x 255 for one)."""
    if x.shape[1] == 3:
        w = _NIQE_Y_WEIGHTS
        y = x[:, 0] * w[0] + x[:, 1] * w[1]
        y += x[:, 2] * w[2]
        y += 16.0
        y = y / 255.0 * 255.0
    else:
        y = x[:, 0] * 255.0
    return torch.round(y)


def _niqe_mvg_distance(feats: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """NIQE from N x nb x 36 block features: the nan-mean and the covariance of the rows
    without NaN (pyiqa's nanmean / nancov), then sqrt(d^T pinv((C_p + C_d) / 2) d)."""
    nan = torch.isnan(feats)
    mu_d = torch.where(nan, 0.0, feats).sum(dim=1) / (~nan).sum(dim=1)
    covs = []
    for f, bad in zip(feats, nan.any(dim=2)):
        rows = f[~bad]
        covs.append(torch.cov(rows.T, correction=1 if rows.shape[0] > 1 else 0) if rows.shape[0]
                    else torch.full((f.shape[1], f.shape[1]), float("nan"), dtype=f.dtype, device=f.device))
    covs = torch.stack(covs)
    # an image with no finite block (a flat output: every block has zero variance) has no
    # NIQE; it is NaN (shown n/a) instead of stopping the cell in the pseudo-inverse
    ok = torch.isfinite(covs).flatten(1).all(dim=1) & torch.isfinite(mu_d).all(dim=1)
    out = torch.full((feats.shape[0],), float("nan"), dtype=feats.dtype, device=feats.device)
    if ok.any():
        inv = torch.linalg.pinv((cov.to(feats) + covs[ok]) / 2)
        d = (mu.to(feats) - mu_d[ok]).unsqueeze(1)
        out[ok] = torch.sqrt(torch.bmm(torch.bmm(d, inv), d.transpose(1, 2)).reshape(-1))
    return out


def niqe_torch(x: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """NIQE of N same-size images, one value each, on any device.

    ``x``: N x C x H x W float in [0,1] (C = 3: scored on Y-BT.601; C = 1 as is), already
    cropped, at least 96 x 96. Equal to pyiqa's ``calculate_niqe`` (ycbcr, crop 0) to
    1e-10 or so: blocks are processed all at once and each AGGD shape is looked up on
    pyiqa's grid by bisection, with pyiqa's rounding wherever NIQE is sensitive to it.
    """
    x = x.to(torch.float64).contiguous()
    y = _niqe_luma(x)
    n, h, w = y.shape
    nbh, nbw = h // NIQE_BLOCK, w // NIQE_BLOCK
    if nbh < 1 or nbw < 1:
        raise BenchError(f"NIQE needs at least {NIQE_BLOCK}x{NIQE_BLOCK} pixels, got {h}x{w}")
    table = tuple(t.to(x.device) for t in _niqe_aggd_table())
    y = y[:, : nbh * NIQE_BLOCK, : nbw * NIQE_BLOCK]
    f1 = _niqe_block_features(_niqe_normalise(y), NIQE_BLOCK, table)
    f2 = _niqe_block_features(_niqe_normalise(_niqe_half(y)), NIQE_BLOCK // 2, table)
    return _niqe_mvg_distance(torch.cat([f1, f2], dim=-1), mu, cov)


# -- the CPU path: the same steps in numpy, one image at a time. numpy's single-core
# loops beat torch's here at these sizes and do not slow down when cores are shared;
# the two halves of the blocks run on two threads (numpy releases the GIL).
def _niqe_aggd_np(f: np.ndarray, table: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_niqe_aggd` for a numpy (blocks x values) array."""
    r = table[1]
    # the cheapest numpy forms measured for each sum (einsum for row sums, bool sums for counts)
    n_left = np.less(f, 0.0).sum(axis=1).astype(np.float64)
    n_right = np.greater(f, 0.0).sum(axis=1).astype(np.float64)
    lo = np.minimum(f, 0.0)
    hi = np.maximum(f, 0.0)
    sum_left = np.einsum("ij,ij->i", lo, lo)
    sum_right = np.einsum("ij,ij->i", hi, hi)
    n = f.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):  # an empty side gives NaN, as in pyiqa
        left_std = np.sqrt(sum_left / n_left)
        right_std = np.sqrt(sum_right / n_right)
        g = left_std / right_std
        mean_abs = (np.einsum("ij->i", hi) - np.einsum("ij->i", lo)) / n
        rhat = mean_abs * mean_abs / ((sum_left + sum_right) / n)
        rnorm = (rhat * (g * g * g + 1) * (g + 1)) / (g * g + 1) ** 2
    i = np.clip(np.searchsorted(r, rnorm), 1, len(r) - 1)
    below, above = np.abs(r[i - 1] - rnorm), np.abs(r[i] - rnorm)
    idx = np.where(above < below, i, i - 1)
    idx = np.where(np.isfinite(rnorm), idx, 0)
    return idx, left_std, right_std


def _niqe_block_features_np(blocks: np.ndarray, table: Sequence[np.ndarray]) -> np.ndarray:
    """:func:`_niqe_block_features` for numpy blocks (nb x size x size) -> nb x 18."""
    gam, _, beta, mean = table
    nb, size, _ = blocks.shape
    feats = []
    idx, left, right = _niqe_aggd_np(blocks.reshape(nb, size * size), table)
    b = beta[idx]
    feats += [gam[idx], (left * b + right * b) / 2]
    prod = np.empty_like(blocks)
    for shift in _NIQE_SHIFTS:
        for dr, sr in _wrap_ranges(shift[0]):
            for dc, sc in _wrap_ranges(shift[1]):
                np.multiply(blocks[:, dr, dc], blocks[:, sr, sc], out=prod[:, dr, dc])
        idx, left, right = _niqe_aggd_np(prod.reshape(nb, size * size), table)
        b = beta[idx]
        beta_l, beta_r = left * b, right * b
        feats += [gam[idx], (beta_r - beta_l) * mean[idx], beta_l, beta_r]
    return np.stack(feats, axis=1)


def _niqe_scale_np(y: np.ndarray, size: int, table: Sequence[np.ndarray], pool: ThreadPoolExecutor | None) -> np.ndarray:
    """Normalise an H x W plane and return its blocks' features (nb x 18)."""
    g = _niqe_window_1d()

    def filt(a: np.ndarray) -> np.ndarray:
        return correlate1d(correlate1d(a, g, axis=0, mode="nearest"), g, axis=1, mode="nearest")

    if pool is not None:
        mu_f, var_f = pool.submit(filt, y), pool.submit(filt, y * y)
        mu, var = mu_f.result(), var_f.result()
    else:
        mu, var = filt(y), filt(y * y)
    var -= mu * mu
    np.abs(var, out=var)
    var += np.finfo(np.float64).eps
    sigma = np.sqrt(var, out=var)
    sigma += 1.0
    z = y - mu
    z /= sigma
    h, w = z.shape
    nbh, nbw = h // size, w // size
    blocks = np.ascontiguousarray(z.reshape(nbh, size, nbw, size).transpose(0, 2, 1, 3)).reshape(-1, size, size)
    if pool is None or len(blocks) < 2:
        return _niqe_block_features_np(blocks, table)
    half = len(blocks) // 2
    parts = [pool.submit(_niqe_block_features_np, part, table) for part in (blocks[:half], blocks[half:])]
    return np.concatenate([p.result() for p in parts])


def _niqe_half_np(y: np.ndarray) -> np.ndarray:
    """:func:`_niqe_half` for an H x W numpy plane (the same float32 operations)."""
    taps = [np.float32(t) for t in _niqe_half_taps()]
    xf = (y / 255.0).astype(np.float32)

    def halve_rows(t: np.ndarray) -> np.ndarray:
        m = t.shape[0] // 2
        tp = np.concatenate([t[:4][::-1], t, t[-4:][::-1]], axis=0)
        acc = None
        for k, wk in enumerate(taps):
            if wk == 0.0:
                continue
            term = tp[k : k + 2 * m - 1 : 2] * wk
            acc = term if acc is None else np.add(acc, term, out=acc)
        return acc

    out = halve_rows(np.ascontiguousarray(halve_rows(xf).T)).T
    return out.astype(np.float64) * 255.0


def _niqe_luma_np(arr: np.ndarray) -> np.ndarray:
    """:func:`_niqe_luma` for one H x W x C image (uint8, or float64 on 0..255)."""
    if arr.shape[2] == 3:
        w = _NIQE_Y_WEIGHTS
        y = (arr[..., 0] / 255.0) * w[0]
        y += (arr[..., 1] / 255.0) * w[1]
        y += (arr[..., 2] / 255.0) * w[2]
        y += 16.0
        y = y / 255.0 * 255.0
    else:
        y = (arr[..., 0] / 255.0) * 255.0
    return np.round(y)


def _niqe_numpy(arr: np.ndarray, mu: torch.Tensor, cov: torch.Tensor, threads: int | None = None) -> float:
    """NIQE of one checked, cropped H x W x C image on the CPU; equals :func:`niqe_torch`."""
    table = tuple(t.numpy() for t in _niqe_aggd_table())
    y = _niqe_luma_np(arr)
    h, w = y.shape
    nbh, nbw = h // NIQE_BLOCK, w // NIQE_BLOCK
    y = y[: nbh * NIQE_BLOCK, : nbw * NIQE_BLOCK]
    threads = max(1, threads if threads is not None else torch.get_num_threads())
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(2)) if threads > 1 else None
        f1 = _niqe_scale_np(y, NIQE_BLOCK, table, pool)
        f2 = _niqe_scale_np(_niqe_half_np(y), NIQE_BLOCK // 2, table, pool)
    feats = torch.from_numpy(np.concatenate([f1, f2], axis=1))[None]
    return float(_niqe_mvg_distance(feats, mu, cov)[0])


def _niqe_tensor_pyiqa(x: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """The previous implementation, pyiqa's ``calculate_niqe`` itself: the reference that
    tests check :func:`niqe_torch` against, and the 'before' row of the speed script."""
    from pyiqa.archs.niqe_arch import calculate_niqe  # heavy import, only when used

    # crop 0 here: inputs arrive cropped. pyiqa turns 3 channels into Y-BT.601 (ycbcr),
    # scales to 0..255 and rounds, as MATLAB's niqe does on uint8.
    return calculate_niqe(x, 0, True, "ycbcr", mu.to(x.device), cov.to(x.device)).reshape(-1)


def _niqe_one(img: np.ndarray, crop: int, params: tuple[torch.Tensor, torch.Tensor] | None, what: str) -> float:
    mu, cov = params if params is not None else load_niqe_params()
    with torch.inference_mode():
        return _niqe_numpy(_niqe_checked(img, crop, what), mu, cov)


def niqe(img: np.ndarray, *, crop: int, params: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
    """NIQE of an RGB (scored on Y-BT.601) or single-channel image, ``crop`` pixels off each edge."""
    return _niqe_one(img, crop, params, "image")


# ---------------------------------------------------------------------------
# LPIPS weights
# ---------------------------------------------------------------------------
def _candidates(name: str, weights_dir: str | Path | None) -> list[Path]:
    hub = Path(torch.hub.get_dir())
    out = []
    if weights_dir is not None:
        out.append(Path(weights_dir) / name)
    out += [hub / "checkpoints" / name, hub / "pyiqa" / name]  # torchvision's and pyiqa's caches
    if name == LPIPS_LIN_FILE:
        try:  # the `lpips` package, when installed, ships the same bytes
            import importlib.util

            spec = importlib.util.find_spec("lpips")
            if spec is not None and spec.origin:
                out.append(Path(spec.origin).parent / "weights" / "v0.1" / "alex.pth")
        except (ImportError, ValueError):
            pass
    return out


def lpips_missing_reason(missing: Sequence[str], weights_dir: str | Path | None, notes: Sequence[str] = ()) -> str:
    where = f"{weights_dir}" if weights_dir is not None else "the folder given by --weights-dir"
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    extra = f" ({'; '.join(notes)})" if notes else ""
    return (
        f"LPIPS needs {ALEXNET_FILE} (torchvision's ImageNet AlexNet) and {LPIPS_LIN_FILE} (LPIPS v0.1 linear "
        f"layers; the `lpips` PyPI package ships it as weights/v0.1/alex.pth); missing or unverified: "
        f"{', '.join(missing)}{extra}; place them in {where} or in {hub}"
    )


def resolve_lpips_weights(
    weights_dir: str | Path | None, *, verify_sha256: bool = True
) -> tuple[Path | None, Path | None, str | None]:
    """(alexnet path, linear-layers path, reason) from --weights-dir, the torch hub cache,
    then the `lpips` package. A file whose sha256 does not match is skipped and named in
    the reason. ``verify_sha256=False`` is for tests with stand-in networks only.
    """
    found: dict[str, Path | None] = {}
    notes: list[str] = []
    for name in (ALEXNET_FILE, LPIPS_LIN_FILE):
        found[name] = None
        for cand in _candidates(name, weights_dir):
            if not cand.is_file():
                continue
            if verify_sha256:
                digest = _sha256(cand)
                expected = EXPECTED_SHA256[name]
                if not digest.startswith(expected):
                    notes.append(f"{cand} has sha256 {digest[:16]}..., expected {expected[:16]}...")
                    continue
            found[name] = cand
            break
    missing = [n for n, p in found.items() if p is None]
    reason = lpips_missing_reason(missing, weights_dir, notes) if missing else None
    return found[ALEXNET_FILE], found[LPIPS_LIN_FILE], reason


def download_lpips_weights(dest_dir: str | Path | None = None) -> None:
    """Fetch both LPIPS files (only when the caller allows network use), checking torch.hub's hash prefix."""
    from pyiqa.archs.arch_util import get_url_from_name
    from torchvision.models import AlexNet_Weights

    dest = Path(dest_dir) if dest_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
    dest.mkdir(parents=True, exist_ok=True)
    urls = {ALEXNET_FILE: AlexNet_Weights.IMAGENET1K_V1.url, LPIPS_LIN_FILE: get_url_from_name(LPIPS_LIN_FILE)}
    for name, url in urls.items():
        if not (dest / name).is_file():
            torch.hub.download_url_to_file(url, str(dest / name), hash_prefix=EXPECTED_SHA256[name][:8], progress=False)


# ---------------------------------------------------------------------------
# LPIPS network
# ---------------------------------------------------------------------------
class _LinLayers(nn.Module):
    """Holds lin0..lin4 under the key names of the released linear-layer file."""

    def __init__(self) -> None:
        super().__init__()
        from pyiqa.archs.lpips_arch import NetLinLayer

        for k, c in enumerate(_LPIPS_CHANNELS):
            self.add_module(f"lin{k}", NetLinLayer(c, use_dropout=True))


class LpipsAlex(nn.Module):
    """LPIPS v0.1 on AlexNet, built from pyiqa's layers without its download-on-construct."""

    def __init__(self, alexnet_path: str | Path, lin_path: str | Path) -> None:
        super().__init__()
        from pyiqa.archs.lpips_arch import ScalingLayer
        from torchvision.models import alexnet

        trunk = alexnet(weights=None)
        # LPIPS uses only `features`; the ImageNet classifier may be absent from a file.
        load_state_dict_checked(
            trunk,
            load_torch_file(alexnet_path),
            what=f"AlexNet weights {alexnet_path}",
            allow_missing=lambda k: k.startswith("classifier."),
        )
        self.scaling_layer = ScalingLayer()
        self.stages = nn.ModuleList(nn.Sequential(*trunk.features[a:b]) for a, b in _ALEX_STAGES)
        self.lins = _LinLayers()
        load_state_dict_checked(self.lins, load_torch_file(lin_path), what=f"LPIPS linear layers {lin_path}")
        self.eval()  # the linear layers carry dropout
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W in [0,1] each -> N distances."""
        from pyiqa.archs.lpips_arch import normalize_tensor

        fx, fy = self.scaling_layer(2 * x - 1), self.scaling_layer(2 * y - 1)
        total = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for k, stage in enumerate(self.stages):
            fx, fy = stage(fx), stage(fy)
            d = (normalize_tensor(fx) - normalize_tensor(fy)) ** 2
            total = total + getattr(self.lins, f"lin{k}")(d).mean(dim=(1, 2, 3))
        return total


def _lpips_input(img: np.ndarray, gray: bool, what: str) -> np.ndarray:
    """3 x H x W float32 in [0,1]; single-channel files as their luma, replicated."""
    arr = _as_255(img, what)
    if gray or arr.shape[2] == 1:
        arr = np.repeat(_luma(arr)[..., None], 3, axis=2)
    return (arr / 255.0).astype(np.float32).transpose(2, 0, 1)


# ---------------------------------------------------------------------------
# Metric objects
# ---------------------------------------------------------------------------
def _channel_for(protocol: str, gray: bool) -> str:
    if gray:
        return "luma"
    return "y" if protocol == "paper-y" else "rgb"


def _is_gray(hr: np.ndarray | None, gray: bool) -> bool:
    # An HR with one channel can only be a single-channel file.
    return gray or (hr is not None and (np.ndim(hr) == 2 or np.shape(hr)[-1] == 1))


def _score_full_reference(name: str, sr: np.ndarray, hr: np.ndarray, channel: str, crop: int) -> float:
    fn = psnr if name == "psnr" else ssim
    return fn(sr, hr, crop=crop, channel=channel)


def _niqe_image(sr: np.ndarray, gray: bool) -> np.ndarray:
    # A single-channel file's SR is scored on its luma rounded to 8-bit levels (as pyiqa
    # rounds Y), half to even on exact ties, as for SSIM; RGB is scored on Y inside pyiqa.
    return np.round(to_luma(sr)).astype(np.uint8) if gray else sr


def _planes_torch(x: torch.Tensor, channel: str) -> torch.Tensor:
    """Torch twin of :func:`_plane` for N x C x H x W float64 on 0..255, same operation order."""
    if channel == "rgb":
        return x
    if channel == "luma" and x.shape[1] == 1:
        return x
    w = _Y_WEIGHTS if channel == "y" else _LUMA_WEIGHTS
    out = x[:, 0:1] * w[0] + x[:, 1:2] * w[1]
    out = out + x[:, 2:3] * w[2]
    return out + 16.0 if channel == "y" else out / 1000.0


def _score_niqe(sr: np.ndarray, gray: bool, crop: int, params: tuple[torch.Tensor, torch.Tensor], what: str) -> float:
    return _niqe_one(_niqe_image(sr, gray), crop, params, what)


def _sr_names(n: int, ids: Sequence[str] | None) -> list[str]:
    """How errors name each SR image: by its id when the caller gives ids."""
    if ids is None:
        return ["SR image"] * n
    if len(ids) != n:
        raise BenchError(f"batch: {len(ids)} ids for {n} images; pass one id per image")
    return [f"SR image {i}" for i in ids]


Pair = tuple[np.ndarray, "np.ndarray | None", bool]


class Metric:
    """One metric under one protocol. Call it on (SR, HR), or ``batch`` many pairs."""

    def __init__(
        self,
        spec: MetricSpec,
        *,
        protocol: str,
        scale: int,
        device: str | torch.device,
        crop: int,
        unavailable_reason: str | None = None,
        net: nn.Module | None = None,
        niqe_params: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        self.spec = spec
        self.protocol = protocol
        self.scale = scale
        self.device = torch.device(device)
        self.crop = crop
        self.unavailable_reason = unavailable_reason
        self._net = net
        self._niqe_params = niqe_params

    @property
    def available(self) -> bool:
        return self.unavailable_reason is None

    @property
    def lower_better(self) -> bool:
        return self.spec.lower_better

    def __repr__(self) -> str:
        state = "available" if self.available else "unavailable"
        return f"Metric({self.spec.name!r}, protocol={self.protocol!r}, crop={self.crop}, device={self.device}, {state})"

    def __call__(self, sr: np.ndarray, hr: np.ndarray | None = None, *, gray: bool = False) -> float:
        return self.batch([(sr, hr, gray)], jobs=1)[0]

    def batch(self, pairs: Sequence[Pair], jobs: int = 1, ids: Sequence[str] | None = None) -> list[float]:
        """Scores in the order given; joblib over ``jobs`` CPU processes, or batches on CUDA.
        ``ids`` (one per pair) name the images in errors."""
        if not self.available:
            raise MetricUnavailable(self.unavailable_reason)
        pairs = self._prepare(pairs)
        if not pairs:
            return []
        names = _sr_names(len(pairs), ids)
        name = self.spec.name
        if name == "lpips":
            return self._lpips(pairs)
        if self.device.type == "cuda":
            return self._torch_batch(pairs, names)
        if name == "niqe":
            calls = [(_score_niqe, (sr, gray, self.crop, self._niqe_params, what)) for (sr, _, gray), what in zip(pairs, names)]
        else:
            calls = [
                (_score_full_reference, (name, sr, hr, _channel_for(self.protocol, gray), self.crop))
                for sr, hr, gray in pairs
            ]
        return _run(calls, jobs)

    def _prepare(self, pairs: Sequence[Pair]) -> list[Pair]:
        pairs = [(sr, hr, _is_gray(hr, bool(gray))) for sr, hr, gray in pairs]
        if self.spec.full_reference and any(hr is None for _, hr, _ in pairs):
            raise BenchError(f"{self.spec.name} is full-reference: pass the HR image with each SR image")
        return pairs

    # -- batched torch paths ------------------------------------------------
    @staticmethod
    def _groups(keys: Sequence[Hashable]) -> dict[Hashable, list[int]]:
        """Indices of equal keys (shapes): what can share one batch."""
        groups: dict[Hashable, list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(k, []).append(i)
        return groups

    def _torch_batch(self, pairs: Sequence[Pair], names: Sequence[str] | None = None) -> list[float]:
        """The CUDA path: images grouped by shape, uploaded as 8-bit, converted on the device."""
        out = [0.0] * len(pairs)
        with torch.inference_mode():
            if self.spec.name == "niqe":
                mu, cov = self._niqe_params
                names = names or _sr_names(len(pairs), None)
                imgs = [_niqe_checked(_niqe_image(sr, gray), self.crop, what) for (sr, _, gray), what in zip(pairs, names)]
                for idx in self._groups([(a.shape, a.dtype) for a in imgs]).values():
                    for chunk in _chunks(idx, 16):
                        x = _to_nchw([imgs[i] for i in chunk], self.device) / 255.0
                        for i, v in zip(chunk, niqe_torch(x, mu, cov).tolist()):
                            out[i] = float(v)
                return out
            channels = [_channel_for(self.protocol, gray) for _, _, gray in pairs]
            checked = [_checked_pair(sr, hr, self.crop, ch) for (sr, hr, _), ch in zip(pairs, channels)]
            keys = [(a.shape, b.shape, a.dtype, b.dtype, ch) for (a, b), ch in zip(checked, channels)]
            for idx in self._groups(keys).values():
                ch = channels[idx[0]]
                for chunk in _chunks(idx, 16):
                    a = _planes_torch(_to_nchw([checked[i][0] for i in chunk], self.device), ch)
                    b = _planes_torch(_to_nchw([checked[i][1] for i in chunk], self.device), ch)
                    if self.spec.name == "psnr":
                        mse = ((a - b) ** 2).reshape(len(chunk), -1).mean(dim=1)
                        vals = [_psnr_from_mse255(float(m)) for m in mse.tolist()]
                    else:
                        if min(a.shape[-2:]) < SSIM_WINDOW:
                            raise BenchError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after cropping")
                        vals = ssim_torch(a, b).tolist()
                    for i, v in zip(chunk, vals):
                        out[i] = float(v)
        return out

    def _lpips(self, pairs: Sequence[Pair]) -> list[float]:
        xs = [_lpips_input(sr, gray, "SR image") for sr, _, gray in pairs]
        ys = [_lpips_input(hr, gray, "HR image") for _, hr, gray in pairs]
        for x, y in zip(xs, ys):
            if x.shape != y.shape:
                raise BenchError(f"SR {x.shape[1:]} and HR {y.shape[1:]} differ in size; mod-crop HR to a multiple of the scale")
        per_batch = 8 if self.device.type == "cuda" else 1
        out = [0.0] * len(pairs)
        with torch.inference_mode(), _ieee_fp32(self.device):
            for idx in self._groups([x.shape for x in xs]).values():
                for chunk in _chunks(idx, per_batch):
                    x = torch.from_numpy(np.stack([xs[i] for i in chunk])).to(self.device)
                    y = torch.from_numpy(np.stack([ys[i] for i in chunk])).to(self.device)
                    for i, v in zip(chunk, self._net(x, y).tolist()):
                        out[i] = float(v)
        return out


def _ieee_fp32(device: torch.device) -> contextlib.AbstractContextManager:
    """cuDNN may run float32 convolutions as TF32 (10-bit mantissa), which moves LPIPS in
    the 4th digit; turned off for the call, so the GPU agrees with the CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic, allow_tf32=False)


def _chunks(idx: list[int], n: int) -> list[list[int]]:
    return [idx[k : k + n] for k in range(0, len(idx), n)]


def _run(calls: Sequence[tuple[Callable[..., float], tuple]], jobs: int) -> list[float]:
    if jobs == 1 or len(calls) == 1:
        return [fn(*args) for fn, args in calls]
    from joblib import Parallel, delayed

    return list(Parallel(n_jobs=jobs)(delayed(fn)(*args) for fn, args in calls))


def create_metric(
    name: str,
    *,
    protocol: str = "paper-y",
    scale: int = 4,
    weights_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    allow_download: bool = False,
    verify_sha256: bool = True,
) -> Metric:
    """A :class:`Metric` by name. LPIPS without its weights comes back with
    ``available=False`` and a reason; it downloads them only if ``allow_download``.
    ``verify_sha256=False`` is for tests with stand-in weight files only.
    """
    if name not in METRICS:
        raise BenchError(unknown_name("metric", name, METRICS))
    if protocol not in PROTOCOLS:
        raise BenchError(unknown_name("metric protocol", protocol, PROTOCOLS))
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise BenchError(f"metric scale must be a positive integer (the crop border), got {scale!r}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"device {device} requested for metrics but CUDA is not available; use --device cpu")
    spec = METRICS[name]
    common = dict(protocol=protocol, scale=scale, device=dev)
    if name == "niqe":
        return Metric(spec, crop=scale, niqe_params=load_niqe_params(), **common)
    if name in ("psnr", "ssim"):
        return Metric(spec, crop=scale, **common)
    alex, lin, reason = resolve_lpips_weights(weights_dir, verify_sha256=verify_sha256)
    if reason is not None and allow_download:
        try:
            download_lpips_weights()
        except Exception as exc:  # offline, proxy, hash mismatch: all mean "not available"
            reason = f"{reason}; download failed ({type(exc).__name__}: {str(exc)[:120]})"
        else:
            alex, lin, reason = resolve_lpips_weights(weights_dir, verify_sha256=verify_sha256)
    if reason is not None:
        return Metric(spec, crop=0, unavailable_reason=reason, **common)
    try:
        net = LpipsAlex(alex, lin).to(dev)
    except CheckpointError as exc:
        return Metric(spec, crop=0, unavailable_reason=str(exc), **common)
    return Metric(spec, crop=0, net=net, **common)


__all__ = [
    "CHANNELS",
    "METRICS",
    "PROTOCOLS",
    "Metric",
    "MetricSpec",
    "MetricUnavailable",
    "create_metric",
    "download_lpips_weights",
    "load_niqe_params",
    "niqe",
    "niqe_torch",
    "psnr",
    "resolve_lpips_weights",
    "ssim",
    "ssim_torch",
    "to_luma",
    "to_y_bt601",
]
