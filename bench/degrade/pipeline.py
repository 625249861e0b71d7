"""HR -> LR for a suite, seeded per (suite, image, run seed).

Order (DASR-Wang): mod-crop -> the suite's steps (blur, downsample, noise, JPEG) ->
round and clamp to 8-bit levels. Every step draws from its own child of one generator
seeded by ``sha256(f"{suite.name}|{image_id}|{seed}")``, so the same spec gives the
same bytes on any machine, and skipping noise/JPEG leaves the other draws unchanged.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from bench.adapter import BenchError
from bench.degrade.noise import to_uint8
from bench.degrade.suites import Suite


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so height and width are multiples of ``scale``."""
    s = int(scale)
    h, w = img.shape[:2]
    return img[: h - h % s, : w - w % s, ...]


def generators(suite: Suite, image_id: str, seed: int, n: int) -> list[np.random.Generator]:
    """``n`` independent generators for one (suite, image, seed)."""
    digest = hashlib.sha256(f"{suite.name}|{image_id}|{seed}".encode()).digest()
    root = np.random.SeedSequence(int.from_bytes(digest, "little"))
    return [np.random.default_rng(child) for child in root.spawn(n)]


def _check_hr(hr: np.ndarray, scale: int) -> np.ndarray:
    arr = np.asarray(hr)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise BenchError(
            f"HR image must be H x W x 3 (RGB), got shape {arr.shape}; replicate a gray image with np.repeat(img[..., None], 3, -1)"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise BenchError(f"HR image must be float in [0, 1], got dtype {arr.dtype}; divide 8-bit images by 255")
    if arr.size and (arr.min() < -1e-6 or arr.max() > 1 + 1e-6):
        raise BenchError(f"HR image values must lie in [0, 1], got {arr.min():.4g}..{arr.max():.4g}; divide 8-bit images by 255")
    if int(scale) < 1 or arr.shape[0] < scale or arr.shape[1] < scale:
        raise BenchError(f"scale {scale} does not fit an HR image of {arr.shape[0]}x{arr.shape[1]}")
    return mod_crop(arr, scale).astype(np.float64)


def _run(suite: Suite, hr: np.ndarray, scale: int, image_id: str, seed: int, clean: bool) -> tuple[np.ndarray, list[dict]]:
    img = _check_hr(hr, scale)
    steps = suite.steps()
    records = []
    for step, rng in zip(steps, generators(suite, image_id, seed, len(steps))):
        img, rec = step.apply(img, int(scale), rng, clean)
        records.append(rec)
    return img, records


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def synthesize(suite: Suite, hr: np.ndarray, scale: int, image_id: str, seed: int) -> tuple[np.ndarray, dict]:
    """Degrade float HR (H x W x 3 in [0, 1]) to 8-bit LR; returns (LR uint8, meta).

    ``meta`` is JSON-serialisable: suite name and fingerprint, image id, seed, shapes,
    and one record per step (kernel parameters and values, noise level, JPEG quality).
    """
    img, records = _run(suite, hr, scale, image_id, seed, clean=False)
    lr = to_uint8(img)
    h, w = hr.shape[:2]
    expected = (h // scale, w // scale)
    if lr.shape[:2] != expected:
        raise BenchError(f"suite {suite.name!r} produced {lr.shape[:2]} from {h}x{w} at x{scale}, expected {expected}")
    meta = {
        "suite": suite.name,
        "fingerprint": suite.fingerprint(),
        "image_id": image_id,
        "seed": int(seed),
        "scale": int(scale),
        "hr_shape": [h - h % scale, w - w % scale],
        "lr_shape": list(lr.shape[:2]),
        "steps": records,
    }
    kernels = [r["kernel_values"] for r in records if "kernel_values" in r]
    if kernels:
        meta["kernel"] = kernels[0]
    return lr, _jsonable(meta)


def degrade_clean(suite: Suite, hr: np.ndarray, scale: int, image_id: str, seed: int) -> np.ndarray:
    """The deterministic part: blur + downsample with noise and JPEG skipped, float32, not quantised.

    Random kernels (div2krk, realistic) are drawn exactly as :func:`synthesize` draws them.
    """
    img, _ = _run(suite, hr, scale, image_id, seed, clean=True)
    return img.astype(np.float32)
