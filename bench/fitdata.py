"""What each fit learns from: the run's source pool, its target domains, and who gets what.

Roles (DESIGN's vocabulary): **source** = clean HR images the SR network learns to
produce; **target** = LR images of the domain to super-resolve, never paired with any
HR; **pairs** = aligned real HR/LR train pairs, for the paired upper bound only.

A *domain* is what a per-domain method (unpaired methods, the oracle) is fitted to, as
one string in every cell and fit key:

- a suite name (``mixed``, ``aniso:k=5``, a TOML suite): a synthetic domain. With a
  named source pool, a seeded half of it (half B) is degraded by the suite into the
  target LR and the other half (half A) is the source of every per-domain method, so
  no clean image of the target's scenes is ever on the source side. The procedural
  default keeps its two independent dead-leaves streams as the two halves.
- ``lr:PATH``: a folder of unpaired real LR images (``--target lr:PATH``).
- ``train:NAME``: a standard training set's target role (``NTIRE2020-T1``), with its
  train pairs where the set has them (RealSR-V3, DRealSR).
- :data:`NO_TARGET`: a dataset with its own LR and no known training split: the
  per-domain methods' cells are marked not fitted instead of being fitted to an
  unrelated synthetic domain.

Who gets which images: methods fitted per scale (baselines, blind-synthetic methods)
get the whole source pool and no target; unpaired methods get the source (half A for a
synthetic domain) and the target LR; the oracle gets the whole source pool with the
true degradation on a synthetic domain, or the real train pairs on a real one (and no
row where a real domain has no pairs).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .adapter import PROFILE_SPECS, BenchError, MethodInfo, TrainingData
from .pools import ArrayPool, DerivedPool, ImagePool, SubsetPool

NO_TARGET = "none"
#: source pool when none is named: seeded dead-leaves images, per profile
#: (source images, target-half images, HR side)
PROCEDURAL = {"smoke": (4, 4, 64), "quick": (32, 32, 192), "paper": (800, 800, 480)}
PROCEDURAL_NAME = "deadleaves"
REAL_PREFIXES = ("lr:", "train:")


class NotFitted(BenchError):
    """A per-domain method has nothing to be fitted to for this cell (not a failure)."""


def is_real(domain: str) -> bool:
    return domain.startswith(REAL_PREFIXES)


def target_domain(text: str | None, suite_lookup: Callable[[str], object]) -> str | None:
    """``--target`` as a domain string: ``lr:ABSPATH``, ``train:NAME`` or a suite's canonical name."""
    if not text or not text.strip():
        return None
    text = text.strip()
    if text.startswith("lr:"):
        path = Path(text[3:]).expanduser()
        if not path.is_dir():
            raise BenchError(f"--target {text}: {path} is not a folder; give a folder of unpaired LR images")
        return "lr:" + str(path.resolve())
    from .training_sets import find_training_spec

    spec = find_training_spec(text)
    if spec is not None:
        return f"train:{spec.name}"
    try:
        return suite_lookup(text).name
    except BenchError as exc:
        raise BenchError(f"--target {text!r} is neither lr:PATH, a standard training set (see --list datasets) "
                         f"nor a suite: {exc}") from None


def domain_label(domain: str) -> str:
    if domain.startswith("train:"):
        return f"{domain[6:]} target"
    if domain.startswith("lr:"):
        return f"LR folder {domain[3:]}"
    return domain


@dataclass(frozen=True)
class PoolInfo:
    """What a table footnote and report.md say of one pool."""

    role: str
    name: str
    count: int
    manifest: str
    licence: str = ""

    def describe(self) -> str:
        return f"{self.name}, {self.count:,} images, manifest {self.manifest[:8]}…"


class _ModCrop:
    """HR cropped to a multiple of the scale (picklable, for loader workers)."""

    #: it drops fewer than ``scale`` rows and columns: the leakage audit reads the base image
    same_scene = True

    def __init__(self, scale: int):
        self.scale = scale

    def __call__(self, im: np.ndarray, image_id: str) -> np.ndarray:
        h, w = im.shape[:2]
        return im[: h - h % self.scale, : w - w % self.scale]


class SynthesizedLR:
    """A source HR image degraded by a suite into LR (float [0, 1]): deterministic per
    (suite, image id, seed, draw), picklable for loader workers. ``draw`` > 0 gives other
    noise draws of the same image (the supervised baselines' extra pairs)."""

    #: the LR shows its HR's scene: the leakage audit compares the HR (already read for the
    #: source side) instead of degrading every image of a 2K pool before the first fit
    same_scene = True

    def __init__(self, suite, scale: int, seed: int, draw: int | None = None):
        self.suite, self.scale, self.seed, self.draw = suite, scale, seed, draw

    def key(self) -> str:
        return f"synth:{self.suite.fingerprint()}|x{self.scale}|seed{self.seed}|draw{self.draw}"

    def __call__(self, im: np.ndarray, image_id: str) -> np.ndarray:
        from .degrade import synthesize

        iid = image_id if self.draw is None else f"{image_id}#train{self.draw}"
        lr, _ = synthesize(self.suite, _ModCrop(self.scale)(im, image_id), self.scale, iid, self.seed)
        return np.asarray(lr, np.float32) / 255.0


def synthesized(pool: ImagePool, suite, scale: int, seed: int, *, draw: int | None = None, name: str = "",
                store: Path | str | None = None) -> ImagePool:
    """``pool`` degraded image by image, lazily (each image once per process, or once ever
    when ``store`` is a folder: a 2K image's degradation is then not redone per patch)."""
    fn = SynthesizedLR(suite, scale, seed, draw)
    return DerivedPool(pool, fn, fn.key(), name=name or f"{pool.name} {suite.name} x{scale}", store=store)


def degraded_pairs(hr: ImagePool, suite, scale: int, seed: int, draws: int,
                   cache_dir: str | Path | None) -> list[tuple[ImagePool, ImagePool]]:
    """(HR, LR) couples of ``hr`` (mod-cropped) degraded by ``suite``, one LR pool per draw,
    made lazily and written once under ``cache_dir/derived`` (keyed by content): the
    supervised pairs of the EDSR baselines and the warm starts."""
    hr = mod_cropped(hr, scale)
    store = Path(cache_dir) / "derived" if cache_dir else None
    return [(hr, synthesized(hr, suite, scale, seed, draw=d, store=store)) for d in range(draws)]


def mod_cropped(pool: ImagePool, scale: int) -> ImagePool:
    # a view of the base image (cached there), so no second cache: cache_bytes=0
    return DerivedPool(pool, _ModCrop(scale), f"modcrop:{scale}", name=pool.name, cache_bytes=0)


def split_halves(n: int, seed: int) -> tuple[list[int], list[int]]:
    """A seeded permutation of ``range(n)`` cut in two: (source half A, target half B)."""
    digest = hashlib.sha256(f"target-split|{seed}".encode()).digest()
    order = np.random.default_rng(int.from_bytes(digest[:8], "little")).permutation(n)
    half = (n + 1) // 2
    return sorted(order[:half].tolist()), sorted(order[half:].tolist())


class TrainingPlan:
    """The run's training inputs, each built once and reused for every fit that needs it.

    ``source``: the ``--source`` text (None: the procedural pool); ``roots``: folders of
    the run's test datasets by training-set name, where a dataset's own train split lives
    beside its test split (RealSR-V3, DRealSR given as NAME=PATH).
    """

    def __init__(self, *, source: str | None, profile: str, seed: int, data_root: str | None,
                 allow_partial: bool, suite_lookup: Callable[[str], object], roots: dict[str, str] | None = None,
                 subimages: int = 0, cache_dir: Path | None = None):
        self.source_text = source
        self.profile, self.seed, self.data_root = profile, seed, data_root
        self.allow_partial = allow_partial
        self.suite_lookup = suite_lookup
        self.roots = dict(roots or {})
        self.subimages = subimages
        self.cache_dir = cache_dir
        self._source: ImagePool | None = None
        self._procedural_target: ImagePool | None = None
        self._targets: dict[tuple[str, int], object] = {}
        self._data: dict[tuple, TrainingData] = {}
        self._tiles: dict[int, ImagePool] = {}
        self._split: tuple[ImagePool, ImagePool] | None = None
        self.pools: dict[str, PoolInfo] = {}

    # -- pools ---------------------------------------------------------
    @property
    def procedural(self) -> bool:
        return not self.source_text

    def source(self) -> ImagePool:
        if self._source is None:
            if self.procedural:
                from .data import training_pool

                n_src, n_tgt, size = PROCEDURAL[PROFILE_SPECS[self.profile].base]  # gpu: the quick pool
                src = training_pool(n_src, size, self.seed, "source")
                tgt = training_pool(n_tgt, size, self.seed, "target")
                self._source = ArrayPool([a for _, a in src], [i for i, _ in src], name=f"{PROCEDURAL_NAME} source")
                self._procedural_target = ArrayPool([a for _, a in tgt], [i for i, _ in tgt],
                                                    name=f"{PROCEDURAL_NAME} target half")
            else:
                from .training_sets import resolve_source

                self._source = resolve_source(self.source_text, self.data_root, allow_partial=self.allow_partial)
            self._note("source", self._source, self._source_licence())
        return self._source

    def tiled(self, pool: ImagePool) -> ImagePool:
        """``pool`` cut into ``--subimages`` tiles (cached by content), or as it is. Applied
        after the split into halves, so the tiles of one image never fall on both sides."""
        if not self.subimages or self.procedural:
            return pool
        from .pools import SubImagePool

        if id(pool) not in self._tiles:  # one tiling per pool: it reads every image's header
            self._tiles[id(pool)] = SubImagePool(pool, crop=self.subimages, cache_dir=self.cache_dir, name=pool.name)
        return self._tiles[id(pool)]

    def _source_licence(self) -> str:
        """The licences of the standard sets named in ``--source`` (a folder has none on record)."""
        from .training_sets import find_training_spec

        specs = [find_training_spec(e.split("=", 1)[0].strip()) for e in (self.source_text or "").split(",")]
        return "; ".join(dict.fromkeys(sp.licence for sp in specs if sp is not None and sp.licence))

    def _note(self, role: str, pool: ImagePool, licence: str = "") -> None:
        self.pools[role] = PoolInfo(role, pool.name or role, len(pool), pool.manifest(), licence)

    def real_target(self, domain: str, scale: int):
        """(target LR pool, pairs or None, licence) of a real domain, resolved once."""
        k = (domain, scale)
        if k not in self._targets:
            from .training_sets import resolve_training_target

            if domain.startswith("lr:"):
                got = resolve_training_target(domain, self.data_root, scale=scale, allow_partial=self.allow_partial)
            else:
                name = domain[len("train:"):]
                root = self.roots.get(name)
                text = f"{name}={root}" if root else name
                got = resolve_training_target(text, self.data_root, scale=scale, allow_partial=self.allow_partial)
            if got is None:
                raise NotFitted(f"not fitted: no target-domain LR for {domain_label(domain)} (pass --target)")
            self._targets[k] = got
            self._note(f"target {domain_label(domain)} x{scale}", got.target, getattr(got, "licence", ""))
        return self._targets[k]

    # -- what one fit gets -----------------------------------------------
    def data_for(self, info: MethodInfo, scale: int, domain: str) -> TrainingData:
        domain = domain if info.fit_per == "domain" else ""
        return self._memo(info, scale, domain, info.needs_target_lr, info.upper_bound)

    def per_scale(self, scale: int) -> TrainingData:
        """What a method fitted per scale gets: the whole source pool, no target."""
        return self._memo(None, scale, "", False, False)

    def _memo(self, info: MethodInfo | None, scale: int, domain: str, target: bool, bound: bool) -> TrainingData:
        """One TrainingData per (scale, domain, gets target LR, upper bound): the fits that
        share these share their pools (and the leakage audit reads each pool once)."""
        key = (scale, domain, target, bound)
        if key not in self._data:
            self._data[key] = self._build(info, scale, domain)
        return self._data[key]

    def _build(self, info: MethodInfo | None, scale: int, domain: str) -> TrainingData:
        source = self.source()
        if not domain:  # fitted per scale: the whole source pool, nothing of any target
            return TrainingData(scale=scale, source_hr=mod_cropped(self.tiled(source), scale), seed=self.seed)
        if domain == NO_TARGET:
            raise NotFitted("not fitted: no target-domain LR (pass --target)")
        if is_real(domain):
            got = self.real_target(domain, scale)
            label = domain_label(domain)
            if info.upper_bound:
                if got.pairs is None:
                    raise NotFitted(f"no oracle: {label} has no train pairs, so there is no paired upper bound")
                hr, lr = got.pairs
                return TrainingData(scale=scale, source_hr=(), pairs=(mod_cropped(hr, scale), lr), domain=label,
                                    seed=self.seed)
            target = got.target if info.needs_target_lr else ()
            return TrainingData(scale=scale, source_hr=mod_cropped(self.tiled(source), scale), target_lr=target,
                                domain=label, seed=self.seed)
        suite = self.suite_lookup(domain)
        if info.upper_bound:  # told the degradation: pairs from every source image
            return TrainingData(scale=scale, source_hr=mod_cropped(self.tiled(source), scale), degradation=suite,
                                domain=domain, seed=self.seed)
        half_a, half_b = (self.tiled(h) for h in self._halves(source))
        target = ()
        if info.needs_target_lr:
            # written once under the cache (keyed by content): sampling re-reads it, never re-degrades
            target = synthesized(half_b, suite, scale, self.seed,
                                 name=f"synthetic {domain} target made from {half_b.name}",
                                 store=None if self.procedural or self.cache_dir is None
                                 else self.cache_dir.parent / "derived")
        return TrainingData(scale=scale, source_hr=mod_cropped(half_a, scale), target_lr=target, domain=domain,
                            seed=self.seed)

    def _halves(self, source: ImagePool) -> tuple[ImagePool, ImagePool]:
        if self.procedural:
            return source, self._procedural_target
        if len(source) < 2:
            raise BenchError(f"source pool {source.name} has {len(source)} image(s); a synthetic target needs at "
                             "least two (one half degraded into the target, the other half as source)")
        if self._split is None:
            a, b = split_halves(len(source), self.seed)
            self._split = (SubsetPool(source, a, name=f"{source.name} half A"),
                           SubsetPool(source, b, name=f"{source.name} half B"))
        return self._split

    def built(self) -> list[TrainingData]:
        """Every fit input built so far (the leakage audit reads their pools)."""
        return list(self._data.values())

    def describe(self, data: TrainingData) -> dict:
        """The pools one fit saw, for footnotes: {'source': ..., 'target': ..., 'pairs': ...}.
        Manifests are of the images as stored (a mod-crop is not a new pool), so they match
        report.md's training-set table."""
        out = {}
        if len(data.source_hr):
            out["source"] = _pool_text(data.source_hr, data.source_hr.name or "source")
        if len(data.target_lr):
            name = data.target_lr.name if data.target_lr.name.startswith("synthetic") else data.domain
            out["target"] = _pool_text(data.target_lr, name or data.target_lr.name)
        if data.pairs is not None:
            out["pairs"] = _pool_text(data.pairs[1], f"{data.domain} train pairs")
        if data.degradation is not None:
            out["degradation"] = getattr(data.degradation, "name", str(data.degradation))
        return out


def _stored(pool: ImagePool) -> ImagePool:
    while isinstance(pool, DerivedPool) and isinstance(pool.fn, _ModCrop):
        pool = pool.base
    return pool


def _pool_text(pool: ImagePool, name: str) -> str:
    return PoolInfo("", name, len(pool), _stored(pool).manifest()).describe()

