"""Bootstrap intervals over test images: of a cell's mean, of a paired difference, and of
the share of a gap closed.

Percentile bootstrap, resampling images with replacement. Resample indices depend only on
the number of images and the seed (``numpy.random.default_rng([seed, n])``), so a table is
reproducible to the last digit, the order cells are computed in changes nothing, and the
three rows a gap needs (method, reference, bound) are resampled with the same indices.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: below this many images an interval says more about the resampling than about the method
MIN_CI_IMAGES = 5


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are drawn: ``resamples`` draws of the images, ``level`` coverage."""

    resamples: int = 2000
    seed: int = 0
    level: float = 0.95
    min_images: int = MIN_CI_IMAGES

    @property
    def percent(self) -> str:
        return f"{100 * self.level:g}%"

    def describe(self) -> str:
        """The resampling in a few words, for footnotes."""
        return f"percentile bootstrap over images, B = {self.resamples} resamples, seed {self.seed}"


#: the default resampling (frozen, so sharing it is safe)
DEFAULT_BOOTSTRAP = Bootstrap()


@dataclass(frozen=True)
class Interval:
    """A statistic and its bootstrap interval (NaN bounds below ``min_images`` or with a missing value)."""

    value: float
    low: float
    high: float
    n: int

    @property
    def defined(self) -> bool:
        return not (np.isnan(self.low) or np.isnan(self.high))

    @property
    def excludes_zero(self) -> bool:
        return self.defined and (self.low > 0 or self.high < 0)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class GapClosed:
    """``delta`` = method − reference, ``gap`` = bound − reference (both paired over images), and
    ``closed`` = 100 · delta / gap (its interval from the same resamples; NaN unless the gap's
    interval excludes 0, where the ratio would be a ratio of noise)."""

    delta: Interval
    gap: Interval
    closed: Interval


class Resampler:
    """Resample indices per image count, drawn once per table render (a local cache, not global state)."""

    def __init__(self, boot: Bootstrap = DEFAULT_BOOTSTRAP):
        self.boot = boot
        self._indices: dict[int, np.ndarray] = {}

    def indices(self, n: int) -> np.ndarray:
        """``resamples x n`` image indices, a function of (seed, n) only."""
        if n not in self._indices:
            rng = np.random.default_rng([self.boot.seed, n])
            self._indices[n] = rng.integers(0, n, size=(self.boot.resamples, n))
        return self._indices[n]

    def _bounds(self, draws: np.ndarray) -> tuple[float, float]:
        tail = (1 - self.boot.level) / 2
        low, high = np.quantile(draws, [tail, 1 - tail])
        return float(low), float(high)

    def _usable(self, *arrays: np.ndarray) -> bool:
        n = len(arrays[0])
        return n >= self.boot.min_images and not any(np.isnan(a).any() for a in arrays)

    def mean(self, values) -> Interval:
        """The mean over images and its interval."""
        v = np.asarray(values, dtype=float)
        point = float(v.mean()) if len(v) else float("nan")
        if not self._usable(v):
            return Interval(point, float("nan"), float("nan"), len(v))
        return Interval(point, *self._bounds(v[self.indices(len(v))].mean(axis=1)), len(v))

    def paired(self, a, b) -> Interval:
        """Mean of ``a − b`` over images matched by position (the caller aligns them by image id)."""
        return self.mean(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))

    def gap_closed(self, method, reference, bound) -> GapClosed:
        """Where ``method`` sits between ``reference`` (0%) and ``bound`` (100%), all aligned by image."""
        m, r, u = (np.asarray(x, dtype=float) for x in (method, reference, bound))
        delta, gap = self.paired(m, r), self.paired(u, r)
        nan = float("nan")
        point = 100 * delta.value / gap.value if gap.value else nan
        if not (self._usable(m, r, u) and gap.excludes_zero):
            return GapClosed(delta, gap, Interval(point if gap.excludes_zero else nan, nan, nan, len(m)))
        idx = self.indices(len(m))
        d, g = (m - r)[idx].mean(axis=1), (u - r)[idx].mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):  # a resample may hit a zero gap: +-inf, at the tails
            ratio = 100 * d / g
        return GapClosed(delta, gap, Interval(point, *self._bounds(ratio[~np.isnan(ratio)]), len(m)))
