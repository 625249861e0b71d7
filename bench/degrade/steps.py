"""The operations a suite chains: blur, resize, noise, JPEG, and the realistic pipeline.

Each step is a frozen, hashable spec with ``apply(img, scale, rng, clean)`` returning the
new float image and a JSON-serialisable record of what it drew. A numeric field may be a
``(low, high)`` pair: it is then drawn uniformly per image from the step's own generator.
``clean=True`` skips noise and JPEG (the deterministic part, for fidelity scores).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.adapter import BenchError
from bench.degrade import kernels, noise, realistic, resize

Num = float | tuple[float, float]
KERNELS = ("iso", "aniso", "table3", "manet", "div2krk")
RESIZE_METHODS = ("matlab", "pil", "pil-ikc", "sfold")
NOISE_KINDS = ("gaussian", "poisson")
SMALL_KERNEL = 31  # kernels up to this side travel in the meta record


def _draw(value: Num, rng: np.random.Generator) -> float:
    if isinstance(value, tuple):
        lo, hi = value
        return float(rng.uniform(lo, hi))
    return float(value)


def _low(value: Num) -> float:
    return float(value[0] if isinstance(value, tuple) else value)


def _check_num(owner: str, field: str, value: Any) -> None:
    ok = isinstance(value, (int, float)) or (
        isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value) and value[0] <= value[1]
    )
    if not ok:
        raise BenchError(f"{owner}: {field} must be a number or a [low, high] pair, got {value!r}")


@dataclass(frozen=True)
class Blur:
    kernel: str
    sigma: Num = 0.0  # iso: standard deviation
    theta: Num = 0.0  # aniso: degrees
    l1: Num = 0.0  # aniso: standard deviations
    l2: Num = 0.0
    k: int = 0  # table3 / manet: kernel index (1-based)
    size: int = 21
    padding: str = "reflect"

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise BenchError(f"blur kernel {self.kernel!r} unknown; use one of {', '.join(KERNELS)}")
        if self.padding not in kernels.PADDINGS:
            raise BenchError(f"blur padding {self.padding!r} unknown; use one of {', '.join(kernels.PADDINGS)}")
        for f in ("sigma", "theta", "l1", "l2"):
            _check_num("blur", f, getattr(self, f))
        if self.kernel in ("table3", "manet") and not 1 <= int(self.k) <= 9:
            raise BenchError(f"blur kernel {self.kernel!r} needs k = 1..9, got k={self.k}")
        if self.kernel == "iso" and _low(self.sigma) <= 0:
            raise BenchError("blur kernel 'iso' needs sigma > 0 (leave the blur step out for no blur)")
        if self.kernel == "aniso" and min(_low(self.l1), _low(self.l2)) <= 0:
            raise BenchError("blur kernel 'aniso' needs l1 > 0 and l2 > 0 (standard deviations) and theta in degrees")

    def make_kernel(self, scale: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        if self.kernel == "iso":
            sigma = _draw(self.sigma, rng)
            return kernels.isotropic_gaussian(sigma, self.size), {"sigma": sigma}
        if self.kernel == "aniso":
            theta, l1, l2 = (_draw(v, rng) for v in (self.theta, self.l1, self.l2))
            return kernels.anisotropic_gaussian(math.radians(theta), l1, l2, self.size), {
                "theta_deg": theta, "l1": l1, "l2": l2}
        if self.kernel == "table3":
            theta, l1, l2 = kernels.DASR_TABLE3[self.k - 1] if 1 <= self.k <= 9 else (0, 0, 0)
            return kernels.dasr_aniso_table3(self.k, self.size), {"k": self.k, "theta_deg": theta, "l1": l1, "l2": l2}
        if self.kernel == "manet":
            ker = kernels.manet_kernel(self.k, scale, self.size)
            v1, v2, theta = kernels.manet_params(scale)[self.k - 1]
            return ker, {"k": self.k, "var1": v1, "var2": v2, "theta_rad": theta}
        ker, info = kernels.div2krk_kernel(rng, scale)
        return ker, info

    def apply(self, img: np.ndarray, scale: int, rng: np.random.Generator, clean: bool) -> tuple[np.ndarray, dict]:
        ker, info = self.make_kernel(scale, rng)
        rec: dict[str, Any] = {"op": "blur", "kernel": self.kernel, "padding": self.padding, **info}
        if ker.shape[0] <= SMALL_KERNEL:
            rec["kernel_values"] = ker.tolist()
        return kernels.blur(img, ker, self.padding), rec


@dataclass(frozen=True)
class Resize:
    method: str = "matlab"

    def __post_init__(self) -> None:
        if self.method not in RESIZE_METHODS:
            raise BenchError(f"resize method {self.method!r} unknown; use one of {', '.join(RESIZE_METHODS)}")

    def apply(self, img: np.ndarray, scale: int, rng: np.random.Generator, clean: bool) -> tuple[np.ndarray, dict]:
        if self.method == "matlab":
            out = resize.imresize(img, 1.0 / scale)
        elif self.method == "sfold":
            out = resize.sfold(img, scale)
        else:
            out = resize.pil_bicubic(img, 1.0 / scale, ikc_uint8=self.method == "pil-ikc").astype(np.float64)
        return out, {"op": "resize", "method": self.method, "factor": scale}


@dataclass(frozen=True)
class Noise:
    kind: str = "gaussian"
    level: Num = 0.0  # gaussian: sigma on 0-255; poisson: scale
    gray: bool = False

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise BenchError(f"noise kind {self.kind!r} unknown; use one of {', '.join(NOISE_KINDS)}")
        _check_num("noise", "level", self.level)

    def apply(self, img: np.ndarray, scale: int, rng: np.random.Generator, clean: bool) -> tuple[np.ndarray, dict]:
        if clean:
            return img, {"op": "noise", "skipped": True}
        level = _draw(self.level, rng)
        key = "sigma" if self.kind == "gaussian" else "scale"
        fn = noise.add_awgn if self.kind == "gaussian" else noise.add_poisson
        return fn(img, level, rng, self.gray), {"op": "noise", "kind": self.kind, key: level, "gray": self.gray}


@dataclass(frozen=True)
class Jpeg:
    q: int | tuple[int, int] = 75

    def __post_init__(self) -> None:
        qs = self.q if isinstance(self.q, tuple) else (self.q,)
        if not all(isinstance(v, int) and 1 <= v <= 100 for v in qs):
            raise BenchError(f"jpeg q must be an integer 1..100 or a [low, high] pair of them, got {self.q!r}")

    def apply(self, img: np.ndarray, scale: int, rng: np.random.Generator, clean: bool) -> tuple[np.ndarray, dict]:
        if clean:
            return img, {"op": "jpeg", "skipped": True}
        q = int(rng.integers(self.q[0], self.q[1] + 1)) if isinstance(self.q, tuple) else self.q
        return noise.jpeg(img, q), {"op": "jpeg", "q": q}


@dataclass(frozen=True)
class Realistic:
    """Real-ESRGAN-style second-order degradation (parameters drawn per image)."""

    def apply(self, img: np.ndarray, scale: int, rng: np.random.Generator, clean: bool) -> tuple[np.ndarray, dict]:
        out, info = realistic.second_order(img, scale, rng, clean=clean)
        return out, {"op": "realistic", **info}


Step = Blur | Resize | Noise | Jpeg | Realistic
