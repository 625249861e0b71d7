"""Noise, JPEG and 8-bit quantisation on float images in [0, 1] (numpy, seeded generators)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from bench.adapter import BenchError


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Round to 8-bit levels and clamp (round half to even, as torch/numpy ``round``)."""
    return np.clip(np.round(np.asarray(img, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def add_awgn(img: np.ndarray, sigma255: float, rng: np.random.Generator, gray: bool = False) -> np.ndarray:
    """Additive white Gaussian noise with standard deviation ``sigma255`` on the 0-255 scale.

    ``gray=True`` draws one noise plane shared by all channels (Real-ESRGAN's gray noise).
    """
    if sigma255 < 0:
        raise BenchError(f"noise sigma must be >= 0 (0-255 scale), got {sigma255}")
    shape = img.shape[:2] + (1,) if gray and img.ndim == 3 else img.shape
    return img + rng.standard_normal(shape) * (sigma255 / 255.0)


def add_poisson(img: np.ndarray, scale: float, rng: np.random.Generator, gray: bool = False) -> np.ndarray:
    """Poisson (shot) noise, Real-ESRGAN style: counts at ``2^ceil(log2(#levels))``, times ``scale``."""
    if scale < 0:
        raise BenchError(f"poisson noise scale must be >= 0, got {scale}")
    base = np.clip(img, 0.0, 1.0)
    if gray and base.ndim == 3:
        base = base @ np.array([0.299, 0.587, 0.114])
    levels = len(np.unique(np.round(base * 255.0)))
    vals = 2.0 ** np.ceil(np.log2(max(levels, 2)))
    noise = rng.poisson(base * vals) / vals - base
    if gray and img.ndim == 3:
        noise = noise[:, :, None]
    return img + noise * scale


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through Pillow's libjpeg at ``quality`` (Pillow defaults: 4:2:0 chroma)."""
    q = int(quality)
    if not 1 <= q <= 100:
        raise BenchError(f"JPEG quality must be in 1..100, got {quality}")
    u8 = to_uint8(img)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=q)
    buf.seek(0)
    with Image.open(buf) as decoded:
        out = np.asarray(decoded.convert("RGB" if u8.ndim == 3 else "L"), dtype=np.float64)
    return out / 255.0
