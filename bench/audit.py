"""Leakage audit by content: no training image may be a test image, a near-duplicate of
one, or the same scene on both the source and the target side.

Names prove nothing (a test image copied into a training folder under another name, or
re-saved as JPEG, is still a test image), so every image is reduced to two features:

- a **pixel digest**: sha256 of the image rounded to 8-bit levels (exact copies, whatever
  the file name or container);
- a **thumbnail**: the luma, area-averaged to 32 x 32, and its detail (the thumbnail minus
  a smoothing of itself), each centred and scaled to unit norm. Two images' *distance* is
  the larger of 1 - correlation of the two parts: re-encoding (JPEG q90), noise,
  a few pixels cropped off an edge and rescaling (a test image downscaled into an LR
  folder) barely move it, while distinct photographs sit far apart.

Every training pool is compared with every test image (HR, per-scale HR, and the LR
files the dataset provides at the run's scales), and every (source, target) pool pair
of the run with each other. Features are cached under ``cache_dir`` keyed by each image's
content digest, so a DF2K pool is decoded once, not once per run; comparisons are one
matrix product per pool pair.

The threshold and its margin are measured by ``benchmarks/audit_margin.py`` (Set14
``img_006`` is a 2-pixel-offset crop of Set5 ``img_004``; no other Set5 x Set14 pair may
be flagged); see ``results/reference/audit_margin.json``.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .adapter import BenchError

#: thumbnail side; 32 keeps enough structure to tell photographs apart, while a 2-pixel
#: crop of a 276-pixel image moves its content by a fifth of a thumbnail pixel
THUMB = 32
#: distance below which two images are the same scene: copies, JPEG q90, 2-pixel crops
#: and x4 downscales measure at most 0.07, distinct Set5/Set14 photographs at least 0.82
#: (benchmarks/audit_margin.py, results/reference/audit_margin.json)
THRESHOLD = 0.2
#: bump when the features change (it keys the cache)
FEATURE_VERSION = "1"


class LeakError(BenchError):
    """A training image is (a near-duplicate of) a test image, or one scene is on both sides."""


@dataclass(frozen=True)
class AuditReport:
    """What the audit compared and how close the closest distinct pair came."""

    n_training: int
    n_test: int
    test_views: str
    n_cross: int
    closest: float
    closest_pair: tuple[str, str]
    threshold: float = THRESHOLD

    def summary(self) -> str:
        cross = f" and {self.n_cross} source x target pool pair(s)" if self.n_cross else ""
        close = (f"closest distance {self.closest:.3f} ({Path(self.closest_pair[0]).name} vs "
                 f"{Path(self.closest_pair[1]).name})" if np.isfinite(self.closest) else "nothing to compare")
        return (f"{self.n_training} training images vs {self.n_test} test images ({self.test_views}){cross}: "
                f"no copy or near-duplicate ({close}, threshold {self.threshold})")


# ---------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------
def pixel_digest(im: np.ndarray) -> str:
    """sha256 of the image at 8-bit levels (a PNG and its pixel-identical copy agree)."""
    q = np.clip(np.round(np.asarray(im, np.float32) * 255.0), 0, 255).astype(np.uint8)
    return hashlib.sha256(f"{q.shape}|".encode() + np.ascontiguousarray(q).tobytes()).hexdigest()


def _unit(v: np.ndarray) -> np.ndarray:
    v = v - v.mean()
    n = np.linalg.norm(v)
    return v / n if n > 1e-8 else np.zeros_like(v)


def thumbnail(im: np.ndarray) -> np.ndarray:
    """Two unit vectors side by side: the luma area-averaged to THUMB x THUMB, and its
    detail (minus a 4 x 4 smoothing of itself). Distinct photographs can share their
    coarse layout (a sky over a field), rarely their detail; copies share both."""
    from PIL import Image

    a = np.asarray(im, np.float32)
    y = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114 if a.ndim == 3 else a
    t = Image.fromarray(np.ascontiguousarray(y, np.float32), mode="F").resize((THUMB, THUMB), Image.BOX)
    low = t.resize((4, 4), Image.BOX).resize((THUMB, THUMB), Image.BILINEAR)
    t, low = np.asarray(t, np.float64), np.asarray(low, np.float64)
    return np.concatenate([_unit(t.ravel()), _unit((t - low).ravel())]).astype(np.float32)


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows of ``a`` x rows of ``b``: the larger of (1 - correlation) of layout and of
    detail. 0 for copies; about 0.8 and more for distinct photographs."""
    k = THUMB * THUMB
    a, b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    return np.maximum(1.0 - a[:, :k] @ b[:, :k].T, 1.0 - a[:, k:] @ b[:, k:].T)


@dataclass(frozen=True)
class Features:
    """Per image: label (a file), pixel digest, thumbnail row."""

    labels: tuple[str, ...]
    pixels: tuple[str, ...]
    thumbs: np.ndarray  # n x 2 THUMB**2

    def __len__(self) -> int:
        return len(self.labels)


def _features(entries: Sequence[tuple[str, str, Callable[[], np.ndarray]]], cache: Path | None,
              what: str) -> Features:
    """(label, content digest, loader) per image -> features, cached by the digests."""
    path = None
    if cache is not None and entries:
        key = hashlib.sha256(f"audit{FEATURE_VERSION}|{THUMB}".encode()
                             + "\n".join(d for _, d, _ in entries).encode()).hexdigest()
        path = cache / f"{key[:40]}.npz"
        if path.is_file():
            try:
                z = np.load(path)
                return Features(tuple(e[0] for e in entries), tuple(str(p) for p in z["pixels"]), z["thumbs"])
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache file is recomputed
    from tqdm.auto import tqdm

    pixels, thumbs = [], []
    bar = tqdm(entries, desc=f"audit {what}", leave=False, dynamic_ncols=True,
               disable=os.environ.get("UNPAIRED_SR_BENCH_NO_PROGRESS") == "1" or len(entries) < 50)
    for _, _, load in bar:
        im = load()
        pixels.append(pixel_digest(im))
        thumbs.append(thumbnail(im))
    feats = Features(tuple(e[0] for e in entries), tuple(pixels),
                     np.stack(thumbs) if thumbs else np.zeros((0, 2 * THUMB * THUMB), np.float32))
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")
            np.savez(tmp, pixels=np.array(feats.pixels), thumbs=feats.thumbs)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache only costs time
    return feats


def _audited(pool):
    """The pool whose images the audit reads: a derived pool that keeps its base's scenes
    (a mod-crop, a synthetic degradation) is audited on its base, so one source pool is
    read once for all scales and the synthetic target is its half B itself."""
    from .pools import DerivedPool

    while isinstance(pool, DerivedPool) and getattr(pool.fn, "same_scene", False):
        pool = pool.base
    return pool


def pool_features(pool, cache: Path | None) -> Features:
    pool = _audited(pool)
    entries = [(pool.label(i), pool.digest(i), (lambda i=i: pool.load(i))) for i in range(len(pool))]
    return _features(entries, cache, pool.name or "pool")


def test_entries(datasets, scales: Sequence[int]) -> tuple[list[tuple[str, str, Callable]], list[str]]:
    """Every test file of the run: HR, per-scale HR and provided LR at the run's scales,
    labelled 'path (dataset, view)'."""
    from .data import _content_hash, read_image

    seen, out, views = set(), [], []
    for ds in datasets:
        for it in ds.items:
            files = [(it.hr, "HR")] if it.hr else []
            files += [(it.hr_at[s], f"HR x{s}") for s in sorted(it.hr_at) if s in scales]
            files += [(it.lr[s], f"LR x{s}") for s in sorted(it.lr) if s in scales]
            for path, view in files:
                if path in seen:
                    continue
                seen.add(path)
                views.append(view)
                out.append((f"{path} ({ds.name}, {view})", _content_hash(path),
                            (lambda p=path: read_image(p).pixels)))
    return out, sorted(set(views))


# ---------------------------------------------------------------------------
# comparisons
# ---------------------------------------------------------------------------
def closest_pairs(a: Features, b: Features) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``a``: the distance to its nearest image in ``b`` and which one."""
    if not len(a) or not len(b):
        return np.full(len(a), np.inf), np.zeros(len(a), int)
    d = distance(a.thumbs, b.thumbs)
    # a flat image (zero thumbnail) is like nothing but an identical flat image
    flat_a, flat_b = ~a.thumbs.any(1), ~b.thumbs.any(1)
    d[np.ix_(flat_a, ~flat_b)] = d[np.ix_(~flat_a, flat_b)] = 1.0
    j = d.argmin(1)
    return d[np.arange(len(a)), j], j


def _first_hit(a: Features, b: Features, threshold: float) -> tuple[int, int, str] | None:
    where = {p: k for k, p in enumerate(b.pixels)}
    for i, p in enumerate(a.pixels):
        if p in where:
            return i, where[p], "a copy"
    dist, j = closest_pairs(a, b)
    if len(dist) and dist.min() < threshold:
        i = int(dist.argmin())
        return i, int(j[i]), f"a near-duplicate (distance {dist[i]:.3f} < {threshold})"
    return None


def _cross_fix(source_role: str, target_role: str, target_label: str) -> str:
    if "NTIRE2020" in target_role or "Flickr2K" in Path(target_label).name:
        return ("use DIV2K-train as source: NTIRE 2020's target is corrupted Flickr2K, whose clean images "
                "DF2K and Flickr2K hold")
    return "remove the scene from one of the two pools (an unpaired method must not see it on both sides)"


def audit_pools(pools: Mapping[str, object], tests, scales: Sequence[int], *, cache_dir: str | Path | None = None,
                cross: Sequence[tuple[str, str]] = (), threshold: float = THRESHOLD) -> AuditReport:
    """Compare every pool with every test image and each ``cross`` pair of pools with each
    other; raise :class:`LeakError` (one line naming both files) on the first hit."""
    cache = Path(cache_dir) if cache_dir is not None else None
    feats: dict[str, Features] = {}
    by_base: dict[int, Features] = {}
    for role, pool in pools.items():
        base = _audited(pool)
        if id(base) not in by_base:
            by_base[id(base)] = pool_features(base, cache)
        feats[role] = by_base[id(base)]
    entries, views = test_entries(tests, scales)
    test = _features(entries, cache, "test images")
    closest, pair = np.inf, ("", "")
    for role, f in feats.items():
        hit = _first_hit(f, test, threshold)
        if hit is not None:
            i, j, how = hit
            raise LeakError(f"leakage: training image {f.labels[i]} ({role}) is {how} of test image {test.labels[j]}; "
                            "remove it from the training pool (a method must never train on the test split)")
        dist, j = closest_pairs(f, test)
        if len(dist) and dist.min() < closest:
            i = int(dist.argmin())
            closest, pair = float(dist[i]), (f.labels[i], test.labels[int(j[i])])
    n_cross = 0
    for a, b in cross:
        if a not in feats or b not in feats or feats[a] is feats[b]:
            continue
        n_cross += 1
        hit = _first_hit(feats[a], feats[b], threshold)
        if hit is not None:
            i, j, how = hit
            raise LeakError(f"leakage: source image {feats[a].labels[i]} ({a}) and target image {feats[b].labels[j]} "
                            f"({b}) show the same scene ({how}); {_cross_fix(a, b, feats[b].labels[j])}")
        dist, j = closest_pairs(feats[a], feats[b])
        if len(dist) and dist.min() < closest:
            i = int(dist.argmin())
            closest, pair = float(dist[i]), (feats[a].labels[i], feats[b].labels[int(j[i])])
    n_train = sum(len(f) for f in by_base.values())
    return AuditReport(n_train, len(test), ", ".join(views) or "none", n_cross, closest, pair, threshold)
