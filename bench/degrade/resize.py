"""Resizers: MATLAB ``imresize`` bicubic (numpy and torch), PIL bicubic, s-fold subsampling.

MATLAB's bicubic is separable: each output pixel along one axis is a weighted sum of
a few input pixels, with the cubic (a = -0.5) stretched by 1/scale when shrinking
(antialiasing) and symmetric ("edge pixel used twice") boundary handling. We build
each axis once as an ``out x in`` matrix with the boundary folded into the columns,
then resize as two matrix products. Values equal ``pyiqa.matlab_utils.imresize`` and
MATLAB's own LR files (see tests/test_degrade.py).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import scipy.sparse as sp
import torch
from PIL import Image

from bench.adapter import BenchError


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


@functools.lru_cache(maxsize=256)
def _weights(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """Dense ``out_len x in_len`` float64 matrix of MATLAB's bicubic contributions."""
    width = 4.0
    shrink = antialias and scale < 1
    if shrink:
        width = width / scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    # Output pixel x (1-based) maps to input coordinate u, as MATLAB's contributions().
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = math.ceil(width) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if shrink else _cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    # Symmetric boundary: indices reflect with the edge pixel repeated (MATLAB's aux).
    period = 2 * in_len
    m = np.mod(idx.astype(np.int64) - 1, period)
    col = np.where(m < in_len, m, period - 1 - m)
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), taps)
    np.add.at(mat, (rows, col.ravel()), w.ravel())
    mat.setflags(write=False)
    return mat


@functools.lru_cache(maxsize=256)
def _sparse_weights(in_len: int, out_len: int, scale: float) -> sp.csr_matrix:
    return sp.csr_matrix(_weights(in_len, out_len, scale))


def _plan(shape: tuple[int, int], scale: float | None, out_shape) -> tuple[tuple[int, int], tuple[float, float]]:
    h, w = shape
    if (scale is None) == (out_shape is None):
        raise BenchError("imresize: give exactly one of scale= or out_shape=")
    if scale is not None:
        if scale <= 0:
            raise BenchError(f"imresize: scale must be positive, got {scale}")
        # MATLAB: output size = ceil(scale * input size), the scale itself drives the weights.
        return (math.ceil(h * scale), math.ceil(w * scale)), (float(scale), float(scale))
    oh, ow = int(out_shape[0]), int(out_shape[1])
    return (oh, ow), (oh / h, ow / w)


def imresize(img: np.ndarray, scale: float | None = None, out_shape=None) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` (antialiased when shrinking).

    ``img``: H x W or H x W x C float array on any value scale; ``scale`` < 1 shrinks
    (0.25 = down x4). Returns float64 for float64 input, float32 otherwise.
    """
    arr = np.asarray(img)
    if arr.ndim not in (2, 3):
        raise BenchError(f"imresize: expected an H x W or H x W x C array, got shape {arr.shape}")
    out_dtype = np.float64 if arr.dtype == np.float64 else np.float32
    x = arr.astype(np.float64, copy=False)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[:, :, None]
    h, w, c = x.shape
    (oh, ow), (sh, sw) = _plan((h, w), scale, out_shape)
    if (oh, ow) != (h, w) or sh != 1 or sw != 1:
        if sh != 1:
            x = (_sparse_weights(h, oh, sh) @ x.reshape(h, w * c)).reshape(oh, w, c)
        if sw != 1:
            xt = np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(w, oh * c)
            x = (_sparse_weights(w, ow, sw) @ xt).reshape(ow, oh, c).transpose(1, 0, 2)
    out = np.ascontiguousarray(x, dtype=out_dtype)
    return out[:, :, 0] if squeeze else out


def imresize_torch(x: torch.Tensor, scale: float | None = None, out_shape=None) -> torch.Tensor:
    """Same as :func:`imresize` for N x C x H x W tensors; differentiable, any device."""
    if x.dim() != 4:
        raise BenchError(f"imresize_torch: expected N x C x H x W, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    (oh, ow), (sh, sw) = _plan((h, w), scale, out_shape)
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    x = x.to(dtype)
    if sh != 1:
        wh = torch.tensor(_weights(h, oh, sh), device=x.device, dtype=dtype)
        x = torch.matmul(wh, x)
    if sw != 1:
        ww = torch.tensor(_weights(w, ow, sw), device=x.device, dtype=dtype)
        x = torch.matmul(x, ww.t())
    return x


def pil_bicubic(img: np.ndarray, scale: float, *, ikc_uint8: bool = False) -> np.ndarray:
    """PIL ``Image.resize(..., BICUBIC)`` to ``int(H * scale) x int(W * scale)``, per channel.

    ``img`` is float in [0, 1]. ``ikc_uint8=True`` reproduces IKC's path
    (``to_pil_image`` of a float tensor: ``mul(255).byte()``, i.e. truncation to
    uint8, then an 8-bit PIL resize and ``/255``); otherwise PIL's float mode is used.
    """
    arr = np.asarray(img, dtype=np.float32)
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[:, :, None]
    h, w, c = arr.shape
    oh, ow = int(h * scale), int(w * scale)
    if oh < 1 or ow < 1:
        raise BenchError(f"pil_bicubic: {h}x{w} image is too small for scale {scale}")
    out = np.empty((oh, ow, c), dtype=np.float32)
    for ch in range(c):
        if ikc_uint8:
            plane = Image.fromarray(np.clip(arr[:, :, ch] * 255.0, 0, 255).astype(np.uint8), mode="L")
            out[:, :, ch] = np.asarray(plane.resize((ow, oh), Image.BICUBIC), dtype=np.float32) / 255.0
        else:
            plane = Image.fromarray(np.ascontiguousarray(arr[:, :, ch]), mode="F")
            out[:, :, ch] = np.asarray(plane.resize((ow, oh), Image.BICUBIC), dtype=np.float32)
    return out[:, :, 0] if squeeze else out


def sfold(img: np.ndarray, scale: int) -> np.ndarray:
    """s-fold subsampling ``img[0::s, 0::s]``: keep the top-left pixel of every s x s block.

    Offset 0 as in MANet's ``BatchSubsample`` (``input[:, :, 0::scale, 0::scale]``) and
    DASR-Wang's ``s-fold`` mode (``view(..., H//s, s, W//s, s)[..., 0, :, 0]``); the
    half-pixel alignment is carried by the shifted kernel instead (see kernels.manet_kernel).
    """
    s = int(scale)
    if s < 1:
        raise BenchError(f"sfold: scale must be a positive integer, got {scale}")
    return np.ascontiguousarray(np.asarray(img)[0::s, 0::s])
