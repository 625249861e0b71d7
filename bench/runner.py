"""Plan cells, obtain each method's model once, synthesise LR, infer, score, store.

A *cell* is method x dataset x suite x scale (x protocol). The runner skips cells the
store already has, fits each learned method once per what it adapts to (classical
methods never; scale-fitted methods once per scale; oracle and unpaired methods once
per target domain), caches fits and LR images on disk (atomically: a kill never leaves
a half-written cache entry), and writes each finished cell in one transaction.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
import errno
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__, faults
from .adapter import (
    REGISTRY,
    BenchError,
    FitReport,
    Method,
    MethodContext,
    TrainingData,
    check_checkpoint_variant,
    create_method,
    load_adapter,
    method_fingerprint,
    objective_of,
    resolve_variant,
    sha256_file,
    split_name,
    unknown_name,
)
from .store import CellKey, Store, StoreError, matches
from .fitdata import NO_TARGET, NotFitted, TrainingPlan, domain_label, is_real, target_domain
from . import ddp
from .train import TRAIN_CODE_VERSION, LoopOptions, loading, loop_options, precision_label

#: Suites run on the embedded default (issue 3): methods fitted per scale or not at all
#: get every synthetic family; methods fitted per domain get the target domain only.
#: the default columns: bicubic, the three Table-3 kernels (the home of the blind methods
#: trained on blur + bicubic), one MANet s-fold kernel (CDSR's training degradation: without
#: it the default table shows CDSR only far outside it), noise, JPEG and the target domain
DEFAULT_SUITES = ("bicubic", "aniso", "manet-si:k=5,noise=0", "noise", "jpeg", "mixed")
DEFAULT_TARGET = "mixed"
GIVEN = "given"  # the dataset's own LR images (real-world and LR-only sets)
#: layouts scored on their own LR files (real captures, or kernels we cannot resynthesise)
GIVEN_LAYOUTS = ("realsr-v3", "drealsr", "ntire2020", "div2krk")

LR_CACHE_VERSION = "2"  # 2: keyed by the suite's fingerprint (its steps), not its name
CLAIM_POLL_S = 2.0  # how often a run re-reads cells another run is computing


@dataclass(frozen=True)
class RunSpec:
    methods: tuple[str, ...] = ("all",)
    datasets: str | None = None
    data_root: str | None = None
    suites: str | None = None
    scales: tuple[int, ...] = (4,)
    metrics: tuple[str, ...] = ("psnr", "ssim", "lpips", "niqe")
    protocol: str = "paper-y"
    profile: str = "quick"
    device: str = "auto"
    out: str = "results"
    jobs: int = 2
    seed: int = 0
    checkpoints: tuple[tuple[str, str], ...] = ()
    adapters: tuple[str, ...] = ()
    weights_dir: str | None = None
    timing: bool = True
    tile: int | None = None
    #: what per-domain methods are fitted to: a suite, lr:PATH or a standard training set;
    #: None: a real-world dataset's own train split, else the synthetic DEFAULT_TARGET
    target: str | None = None
    #: clean HR pool(s), NAME|NAME=PATH[,...]; None: the procedural dead-leaves pool
    source: str | None = None
    allow_partial: bool = False  # standard training sets with fewer images than their spec: warn, not refuse
    loader_workers: int = 0  # DataLoader workers for patch sampling (never changes a patch)
    subimages: int = 0  # > 0: train on pre-cropped sub-images of this side (BasicSR extract_subimages)
    suite_file: str | None = None
    save_sr: bool = False  # also write SR PNGs under out/sr/ (figures read them)
    init: tuple[tuple[str, str], ...] = ()  # (method, file): pretrained starting points
    precision: str = "fp32"
    #: training switches (they enter the fit key and the variant label)
    iterations: int | None = None  # overrides the profile's length
    batch_size: int | None = None  # overrides the profile's (total) batch
    amp: str | None = None  # "bf16": autocast in training
    channels_last: bool = False
    #: how a fit is run and watched (no number changes)
    save_every: int = 5000  # steps between saves of the training state (and at each stage boundary)
    val_every: int = 0  # steps between monitoring rows in train_log.csv (0: none)
    tensorboard: bool = False
    verify_weights: bool = True  # sha256 of ImageNet weight files; off only in tests with stand-ins
    recompute: tuple[str, ...] = ()  # method/dataset/suite/xSCALE patterns computed again even if stored
    #: each learned method is fitted once per seed (``--fit-seeds``); 0 is the default fit
    fit_seeds: tuple[int, ...] = (0,)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        d = self.to_dict()
        d.pop("jobs")  # how many workers does not change any number
        d.pop("recompute")  # nor does forcing a recomputation
        d.pop("loader_workers")  # nor how many processes cut the (seeded, per-iteration) patches
        for k in ("save_every", "val_every", "tensorboard"):  # nor saving and watching a fit
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Model:
    """A method instance ready for inference, and where its weights came from."""

    method: Method
    variant: str
    source: str  # classical | fit | checkpoint
    domain: str
    budget: str = ""
    sha256: str = ""
    wall_s: float | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Cell:
    method: str
    dataset: str
    suite: str  # canonical suite name or GIVEN
    scale: int
    domain: str  # what the method is fitted to ('' for never / per scale)
    fit_seed: int = 0  # which of --fit-seeds fitted the model (0 for classical methods and checkpoints)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda asked for, but torch sees no CUDA device; use --device cpu or auto")
    return name


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def provenance(spec: RunSpec, device: str) -> dict:
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "torchvision", "pyiqa", "numpy", "scipy", "pillow", "scikit-image", "pandas", "joblib"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {
        "bench_version": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cudnn": {"enabled": torch.backends.cudnn.enabled, "benchmark": torch.backends.cudnn.benchmark,
                  "deterministic": torch.backends.cudnn.deterministic},
        "seed": spec.seed,
        "profile": spec.profile,
    }


def method_names(spec: RunSpec) -> list[str]:
    """The run's methods, ``name`` or ``name.tag``, checked before any work (did-you-mean)."""
    for a in spec.adapters:
        load_adapter(a)
    names = REGISTRY.names() if "all" in spec.methods else list(spec.methods)
    for n in names:
        resolve_variant(n)
    extra = [load_adapter(a).info.name for a in spec.adapters]
    names = list(dict.fromkeys(names + extra))
    for flag, pairs in (("--checkpoint", spec.checkpoints), ("--init", spec.init)):
        for name, path in pairs:
            if name not in names:
                known = list(names) + [f"{n}.{t}" for n in names for t in REGISTRY.get(split_name(n)[0]).variants if t]
                raise BenchError(unknown_name(f"method in {flag} {name}={path} (not in this run's --methods)",
                                              name, known))
            if not Path(path).exists():
                raise BenchError(f"{flag} {name}={path}: no such file; pass the path of the released file")
            if flag == "--checkpoint":
                check_checkpoint_variant(name, path)
    return names


def plan_cells(spec: RunSpec, methods: Sequence[str], datasets: Sequence, scales: Sequence[int]) -> list[Cell]:
    from .degrade import get_suite, parse_suites

    cells = []
    extra = Path(spec.suite_file) if spec.suite_file else None
    target = target_domain(spec.target, lambda n: get_suite(n, extra))
    checkpoints = dict(spec.checkpoints)
    for scale in scales:
        explicit = [s.name for s in parse_suites(spec.suites, scale, extra)] if spec.suites else None
        default = [s.name for fam in DEFAULT_SUITES for s in parse_suites(fam, scale)]
        for name in methods:
            info = resolve_variant(name)[0].info
            if scale not in info.scales:
                continue
            per_domain = info.fit_per == "domain"
            for ds in datasets:
                if not ds.has_hr or ds.layout in GIVEN_LAYOUTS:
                    cells.append(Cell(name, ds.name, GIVEN, scale, given_domain(ds, target) if per_domain else ""))
                    continue
                if per_domain and target is not None:
                    # fitted to --target; scored on the suites asked for, else on every default suite
                    # (real LR) or on the target suite itself (a synthetic domain)
                    suites = explicit or (default if is_real(target) else [target])
                    cells += [Cell(name, ds.name, s, scale, target) for s in suites]
                    continue
                suites = explicit or ([target or DEFAULT_TARGET] if per_domain else default)
                for s in suites:
                    cells.append(Cell(name, ds.name, s, scale, s if per_domain else ""))
    # --fit-seeds: one cell per seed for every fitted method (classical ones and released files have none)
    return [dataclasses.replace(c, fit_seed=f) for c in cells
            for f in (spec.fit_seeds if resolve_variant(c.method)[0].info.learned and c.method not in checkpoints
                      else (0,))]


def given_domain(ds, target: str | None) -> str:
    """What per-domain methods are fitted to for a dataset scored on its own LR: ``--target``;
    else the dataset's own training split (RealSR-V3, DRealSR, NTIRE 2020, AIM 2019); else,
    for the embedded photos, the synthetic default; else nothing (cells marked not fitted)."""
    if target is not None:
        return target
    from .training_sets import matching_training_set

    name = matching_training_set(ds)
    if name:
        return f"train:{name}"
    if ds.name == "embedded-real":
        return DEFAULT_TARGET
    return NO_TARGET


class Runner:
    def __init__(self, spec: RunSpec, *, log=print, store=None, cache: str | Path | None = None):
        self.spec = spec
        self.log = log
        self.device = ddp.device_for(resolve_device(spec.device))  # cuda:LOCAL_RANK under torchrun
        self.out = Path(spec.out)
        # --cache: LR and fit caches on storage every cluster worker sees (bench/distributed.py)
        self.cache = Path(cache) if cache else self.out / "cache"
        # a cluster worker's runner records what it would store; only the driver writes the store
        self.store = store if store is not None else Store(self.out / "results.sqlite")
        # the clock names the run for people; the random part keeps two runs of one second apart
        self.run_id = time.strftime("%Y%m%d-%H%M%S-") + spec.hash()[:8] + "-" + uuid.uuid4().hex[:6]
        self.checkpoints = dict(spec.checkpoints)
        self.failures: list[str] = []
        self.not_fitted: list[str] = []
        self.config_file: str | None = None  # the --config file, when the run came from one
        self._models: dict[tuple[str, int, str, int], Model] = {}
        self._variants: dict[tuple[str, int, str, int], tuple[str, dict]] = {}
        self._hr_cache: dict[tuple[str, str, int], object] = {}
        self._digests: dict[str, str] = {}
        self.plan: TrainingPlan | None = None
        self.datasets: list = []  # the run's test datasets (plan_run)
        #: ids of every test image in play; no training pool may contain one
        self.test_ids: frozenset[str] = frozenset()
        #: the content keys of the cells this run planned (tables render these)
        self.planned: list[CellKey] = []

    def context(self, device: str | None = None, fit_seed: int = 0) -> MethodContext:
        """The one object every method is built with: documented flags reach the code that needs them."""
        spec = self.spec
        return MethodContext(profile=spec.profile, device=device or self.device, precision=spec.precision,
                             weights_dir=spec.weights_dir, verify_weights=spec.verify_weights, seed=spec.seed,
                             init=spec.init, loader_workers=spec.loader_workers,
                             cache_dir=str(self.cache), fit_seed=fit_seed)

    def build(self, name: str, scale: int, device: str | None = None, fit_seed: int = 0) -> Method:
        """``name`` (a method or ``method.tag``) built with this run's context."""
        return create_method(name, scale, self.context(device, fit_seed))

    def cell_key(self, name: str, variant: str, ds, suite_name: str, scale: int) -> CellKey:
        """The content key of a cell: names for the tables, digests for identity."""
        cls = resolve_variant(name)[0]
        if suite_name == GIVEN:
            suite_fp, seed = "", None
        else:
            suite = self.suite(suite_name)
            suite_fp, seed = suite.fingerprint(), (self.spec.seed if suite.is_random else None)
        return CellKey(name, variant, ds.name, suite_name, scale, self.spec.protocol,
                       method_fp=f"{method_fingerprint(cls)}|{self.spec.precision}",
                       dataset_digest=self.dataset_digest(ds), suite_fp=suite_fp, seed=seed)

    def dataset_digest(self, ds) -> str:
        if ds.name not in self._digests:
            self._digests[ds.name] = ds.manifest_hash()
        return self._digests[ds.name]

    def suite(self, name: str):
        from .degrade import get_suite

        return get_suite(name, Path(self.spec.suite_file) if self.spec.suite_file else None)

    # -- model acquisition ----------------------------------------------
    def prepare(self, datasets) -> None:
        """Know the run's test data: its image ids, and the training plan (pools are built lazily)."""
        from .training_sets import matching_training_set

        self.test_ids = frozenset(i.id for ds in datasets for i in ds.items)
        roots = {}
        for ds in datasets:
            name = matching_training_set(ds)
            if name and ds.root:
                roots[name] = ds.root
        spec = self.spec
        self.plan = TrainingPlan(source=spec.source, profile=spec.profile, seed=spec.seed, data_root=spec.data_root,
                                 allow_partial=spec.allow_partial, suite_lookup=self.suite, roots=roots,
                                 subimages=spec.subimages, cache_dir=self.cache / "subimages")

    def training_data(self, cls, scale: int, domain: str, test_ids: frozenset[str], fit_seed: int = 0) -> TrainingData:
        """The pools a method learns from (see bench/fitdata.py for who gets which images);
        fit seed ``f`` keeps the pools and moves every draw of the fit to seed ``--seed + f``."""
        if self.plan is None:
            self.prepare([])
        data = self.plan.data_for(cls.info, scale, domain)
        return dataclasses.replace(data, seed=data.seed + fit_seed) if fit_seed else data

    def warm_data(self, data: TrainingData, scale: int) -> TrainingData:
        """What a warm start learns from: the fit's source pool, bicubic pairs only (made by
        the trainer); a fit with no source pool (the oracle on a real set's train pairs)
        starts from the run's whole source pool."""
        src = data if len(data.source_hr) else self.plan.per_scale(scale)
        return TrainingData(scale=scale, source_hr=src.source_hr, seed=data.seed)

    def variant_for(self, name: str, scale: int, domain: str, test_ids: frozenset[str],
                    fit_seed: int = 0) -> tuple[str, dict]:
        """The model's fingerprint, computed without training or loading it."""
        k = (name, scale, domain, fit_seed)
        if k in self._variants:
            return self._variants[k]
        cls = resolve_variant(name)[0]
        if name in self.checkpoints:
            sha = sha256_file(self.checkpoints[name])
            v = (f"{self.spec.profile}:ckpt-{sha[:8]}", {"source": "checkpoint", "sha256": sha})
        elif not cls.info.learned:
            v = ("-", {"source": "classical"})
        else:
            data = self.training_data(cls, scale, domain, test_ids, fit_seed)
            probe = self.build(name, scale, device="cpu", fit_seed=fit_seed)
            budget = probe.default_budget()
            if self.spec.iterations:
                budget = dataclasses.replace(budget, iterations=self.spec.iterations)
            if self.spec.batch_size:
                budget = dataclasses.replace(budget, batch_size=self.spec.batch_size)
            switches = self.training_switches()
            init = dict(self.spec.init).get(name)
            warm = None if init else probe.warm_start()  # --init replaces the shared warm start
            base = self.training_data(cls, scale, domain, test_ids)  # fit seed 0's

            def fit_key(data: TrainingData, seed: int, warm) -> tuple[str, str]:
                """(fit key, warm-start key) of the fit of ``data`` with fit seed ``seed``, from ``warm``."""
                warm_key = warm.key(scale, self.warm_data(data, scale), switches.values()) if warm else ""
                return hashlib.sha256("|".join([
                    name, self.spec.profile, probe.extra_fingerprint(), str(scale), budget.key(), data.fingerprint(),
                    TRAIN_CODE_VERSION, __version__, method_fingerprint(cls), self.spec.precision, *switches.values(),
                    *self.fit_files(cls, name), *([f"warm:{warm_key}"] if warm else []),
                    *([f"fit-seed:{seed}"] if seed else []),
                ]).encode()).hexdigest(), warm_key

            key, warm_key = fit_key(data, fit_seed, warm)
            # what the seeds of one --fit-seeds run share: seed 0's key
            group = key if not fit_seed else fit_key(base, 0, warm and self.build(name, scale, "cpu").warm_start())[0]
            training = {**self.plan.describe(data), **switches}
            if len(self.spec.fit_seeds) > 1:
                training.update(fit_seed=fit_seed, seed_group=group[:16])
            v = (f"{self.variant_tag()}{f'+seed{fit_seed}' if fit_seed else ''}:fit-{key[:8]}",
                 {"source": "fit", "fit_key": key, "data": data, "budget": budget, "init": init,
                  "warm": warm, "warm_key": warm_key, "training": training})
        self._variants[k] = v
        return v

    def training_switches(self) -> dict[str, str]:
        """What a fit's numbers depend on besides its data and budget: the training
        precision (on CUDA with the TF32 flags: cuDNN convolutions use TF32 by default, so
        "fp32" says which) and the memory format."""
        return {"train_precision": precision_label(self.device, self.spec.amp),
                "memory_format": "channels_last" if self.spec.channels_last else "contiguous"}

    def variant_tag(self) -> str:
        """The profile, and every training switch that differs from it: ``quick@500it@batch32+bf16``."""
        spec = self.spec
        tag = spec.profile + (f"@{spec.iterations}it" if spec.iterations else "")
        tag += f"@batch{spec.batch_size}" if spec.batch_size else ""
        if spec.amp:
            tag += f"+{spec.amp}"
        elif self.device.startswith("cuda") and "TF32 conv on" in precision_label(self.device, None):
            tag += "+tf32"
        return tag + ("+channels-last" if spec.channels_last else "")

    def load_release(self, method: Method, name: str, scale: int, path: str) -> None:
        """Load a released file; where it does not fit but another variant's network does
        (keys and shapes tell them apart, spandrel-style), say which variant to run."""
        from .adapter import CheckpointError

        try:
            method.load_checkpoint(path)
        except CheckpointError:
            cls = resolve_variant(name)[0]
            base, tag = split_name(name)
            for other in cls.variants.values():
                if other.tag == tag:
                    continue
                other_name = f"{base}.{other.tag}" if other.tag else base
                try:
                    self.build(other_name, scale, device="cpu").load_checkpoint(path)
                except (CheckpointError, BenchError):
                    continue
                raise CheckpointError(f"checkpoint {path} does not fit {name} but fits {other_name} "
                                      f"({other.about}); run --methods {other_name} --checkpoint {other_name}={path}") \
                    from None
            raise

    def fit_files(self, cls, name: str) -> list[str]:
        """Every file a fit reads, by content: ImageNet weights (or their absence, which
        means a stand-in loss) and the ``--init`` starting point."""
        from .train import resolve_weight_file

        out = [f"{f}:{resolve_weight_file(f, self.spec.weights_dir, verify=self.spec.verify_weights)[1]}"
               for f in cls.weight_files]
        init = dict(self.spec.init).get(name)
        if init:
            out.append(f"init:{sha256_file(init)}")
        return out

    def model_for(self, name: str, scale: int, domain: str, test_ids: frozenset[str], fit_seed: int = 0) -> Model:
        k = (name, scale, domain, fit_seed)
        if k in self._models:
            return self._models[k]
        cls = resolve_variant(name)[0]
        variant, meta = self.variant_for(name, scale, domain, test_ids, fit_seed)
        method = self.build(name, scale, fit_seed=fit_seed)
        model = Model(method, variant, meta["source"], domain_label(domain) if domain else "")
        if meta["source"] == "checkpoint":
            self.load_release(method, name, scale, self.checkpoints[name])
            model.sha256 = meta["sha256"]
        elif meta["source"] == "fit":
            model.budget = meta["budget"].describe()
            self._fit_cached(model, meta)
        self.store.put_variant(variant, name, self.spec.profile, scale, model.source, model.domain, model.budget,
                               model.sha256, model.wall_s, {"notes": model.notes, "gaps": list(cls.info.gaps),
                                                            "title": cls.info.title, "family": cls.info.family,
                                                            "upper_bound": cls.info.upper_bound,
                                                            "objective": objective_of(name),
                                                            "home_suites": list(cls.info.home_suites),
                                                            "code": method_fingerprint(cls),
                                                            "training": meta.get("training", {})})
        self._models[k] = model
        return model

    def _fit_cached(self, model: Model, meta: dict) -> None:
        folder = self.fit_folder(meta)
        # in a data-parallel fit rank 0 holds the lock and decides; the other ranks follow it
        with fit_lock(folder, self.log) if ddp.world().main else contextlib.nullcontext():
            self._fit_or_load(model, meta, folder)

    def resume_folder(self, meta: dict) -> Path:
        """Where a fit's training state lives until the fit is in the cache (``save_fit``
        replaces the fit folder, so the state cannot live there)."""
        return self.cache / "resume" / meta["fit_key"]

    def _fit_or_load(self, model: Model, meta: dict, folder: Path) -> None:
        ckpt = folder / "model"
        report_path = folder / "fit.json"
        data: TrainingData = meta["data"]
        w = ddp.world()
        if ddp.all_objects(report_path.exists())[0]:
            model.method.load_checkpoint(ckpt)
            rep = json.loads(report_path.read_text())
        else:
            name = model.method.info.name
            if w.main:
                self.log(f"fitting {name} x{model.method.scale}"
                         + (f" on domain {model.domain}" if model.domain else "") + f" ({meta['budget'].describe()}"
                         + (f", {w.size} ranks" if w.size > 1 else "") + ")")
            started = self.start_fit(model.method, meta)  # a warm start's own time is in its note
            t0 = time.perf_counter()
            with loading(model.method.context.loader_workers), loop_options(self.loop_options(model, meta)):
                report = model.method.fit(fit_input(name, data), meta["budget"])
            report.notes[:0] = started
            wall = time.perf_counter() - t0
            if w.size > 1:
                report.notes.append(f"trained data-parallel on {w.size} ranks ({torch.distributed.get_backend()}): "
                                    f"batch {meta['budget'].batch_size} in total, {meta['budget'].batch_size // w.size} "
                                    "per rank, batch norm per rank")
            if w.main:
                self.save_fit(model.method, meta, report, wall)
                shutil.rmtree(self.resume_folder(meta), ignore_errors=True)  # the fit is whole: its state goes
            ddp.barrier()
            rep = json.loads(report_path.read_text())
            # reload what was saved so a fresh fit and a cached one infer from identical weights
            model.method.load_checkpoint(ckpt)
            if w.main:
                self.log(f"  {name}: {report.iterations} iterations in {wall:.1f}s")
        model.wall_s = rep.get("fit_wall_s")
        model.notes = list(dict.fromkeys(rep.get("notes", [])))
        model.sha256 = sha256_file(ckpt)

    def start_fit(self, method: Method, meta: dict) -> list[str]:
        """Load a fit's starting point into ``method`` before ``fit``: the ``--init`` file, or
        the shared warm start of its network (trained now if the cache lacks it), through
        the method's ``load_init`` key maps. Returns the footnote notes."""
        if meta.get("init"):  # the recipe's own file
            method.load_init(meta["init"])
            return [f"started from {Path(meta['init']).name} (sha256 {sha256_file(meta['init'])[:12]})"]
        if meta.get("warm"):
            warm = self.warm_file(meta["warm"], meta["warm_key"], self.warm_data(meta["data"], method.scale),
                                  method.scale)
            method.load_init(warm.path)
            return [warm.note(itself=meta["budget"].iterations == 0)]
        return []

    def warm_file(self, warm, key: str, data: TrainingData, scale: int):
        """The trained warm start of ``key``: from the cache, or trained now (once: the
        lock makes a second process wait and then read it; under torchrun every rank
        trains it data-parallel and rank 0 writes it)."""
        from .warmstart import cached, train_warm_start

        folder, w = self.cache / "warm" / key, ddp.world()
        with fit_lock(folder, self.log) if w.main else contextlib.nullcontext():
            found = cached(folder, key)
            if ddp.all_objects(found is not None)[0]:
                return found
            resume = self.cache / "resume" / f"warm-{key}"
            if w.main:
                self.log(f"training the shared warm start {warm.label()} x{scale} ({warm.budget.describe()}, "
                         f"{len(data.source_hr)} source images, bicubic pairs)")
            spec = self.spec
            with loop_options(LoopOptions(resume_dir=str(resume), save_every=spec.save_every, amp=spec.amp,
                                          channels_last=spec.channels_last, log=self.log)):
                got = train_warm_start(warm, key, data, scale, folder, device=torch.device(self.device),
                                       cache_dir=str(self.cache), main=w.main)
            if w.main:
                shutil.rmtree(resume, ignore_errors=True)
                self.log(f"  warm start {key[:12]}: {got.about['iterations']} iterations in "
                         f"{got.about['wall_s']:.1f}s")
            ddp.barrier()
            return cached(folder, key) or got

    def loop_options(self, model: Model, meta: dict) -> LoopOptions:
        spec, resume = self.spec, self.resume_folder(meta)
        return LoopOptions(resume_dir=str(resume), save_every=spec.save_every, amp=spec.amp,
                           channels_last=spec.channels_last, val_every=spec.val_every,
                           monitor=self.monitor(model) if spec.val_every else None,
                           log_file=str(resume / "train_log.csv"),
                           tensorboard=str(resume / "tensorboard") if spec.tensorboard else None, log=self.log)

    def monitor(self, model: Model, n: int = 3):
        """For watching a fit only (never for choosing a checkpoint: ``valid`` is the test
        split): PSNR on the first ``n`` images of the run's first dataset with HR, in the
        domain the method is fitted to (bicubic for per-scale fits); NIQE on an LR-only set."""
        from .data import resolve_datasets
        from .metrics import create_metric

        spec, method = self.spec, model.method
        # the datasets plan_run resolved (a cluster worker's runner, which plans nothing, resolves them)
        ds = (self.datasets or resolve_datasets(spec.datasets, spec.data_root, spec.scales))[0]
        items = ds.items_at(method.scale)[:n]
        if ds.layout in GIVEN_LAYOUTS or not ds.has_hr:
            suite = GIVEN
        else:
            suite = model.domain if model.domain and self.is_suite(model.domain) else "bicubic"
        name = "psnr" if ds.has_hr else "niqe"
        metric = create_metric(name, protocol=spec.protocol, scale=method.scale, device="cpu")
        lrs = [(item, self.lr_for(ds, item, suite, method.scale)) for item in items]

        def watch() -> dict[str, float]:
            srs = [(item.id, self.upscale(method, lr)) for item, lr in lrs]
            refs = [self.hr_for(ds, item, method.scale) if ds.has_hr else None for item, _ in lrs]
            values = score_cell(srs, refs, [name], {name: metric}, 1)
            return {f"{name}/{ds.name}/{suite}": float(np.mean(list(values.values())))}

        return watch

    def is_suite(self, name: str) -> bool:
        try:
            self.suite(name)
        except BenchError:
            return False
        return True

    def fit_folder(self, meta: dict) -> Path:
        return self.cache / "fits" / meta["fit_key"]

    def save_fit(self, method: Method, meta: dict, report: FitReport, wall: float) -> dict:
        """Put a finished fit in the cache under its key; atomic (a kill leaves no fit or a whole one)."""
        folder = self.fit_folder(meta)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        method.save_checkpoint(tmp / "model")
        rep = {**report.to_dict(), "fit_wall_s": wall, "budget": meta["budget"].describe(),
               "ranks": ddp.world().size, **{k: v for k, v in meta.get("training", {}).items()
                                              if k in ("train_precision", "memory_format")}}
        (tmp / "fit.json").write_text(json.dumps(rep, indent=1, default=str))
        resume = self.resume_folder(meta)
        for watched in ("train_log.csv", "tensorboard"):  # the fit's log travels with it
            if (resume / watched).is_file():
                shutil.copy2(resume / watched, tmp / watched)
            elif (resume / watched).is_dir():
                shutil.copytree(resume / watched, tmp / watched)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        return rep

    # -- LR synthesis ----------------------------------------------------
    def hr_for(self, ds, item, scale: int):
        from .data import load_hr

        k = (ds.name, item.id, scale)
        if k not in self._hr_cache:
            self._hr_cache[k] = load_hr(item, scale)
        return self._hr_cache[k]

    def lr_for(self, ds, item, suite_name: str, scale: int) -> np.ndarray:
        from .data import load_lr, read_image, to_uint8, write_png
        from .degrade import synthesize

        if suite_name == GIVEN:
            return to_uint8(load_lr(item, scale).pixels)
        hr = self.hr_for(ds, item, scale)
        suite = self.suite(suite_name)
        digest = hashlib.sha256(
            f"{LR_CACHE_VERSION}|{suite.fingerprint()}|{scale}|{self.spec.seed}|{item.id}|".encode()
            + hashlib.sha256(np.ascontiguousarray(hr.pixels).tobytes()).digest()
        ).hexdigest()
        path = self.cache / "lr" / ds.name / f"{item.id}-{digest[:16]}.png"
        if path.exists():
            return to_uint8(read_image(path).pixels)
        lr, meta = synthesize(suite, hr.pixels, scale, item.id, self.spec.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.png")
        write_png(tmp, lr)
        (path.with_suffix(".json")).write_text(json.dumps(meta, default=str))
        faults.reached("lr-write")
        os.replace(tmp, path)
        return lr

    # -- inference -------------------------------------------------------
    def upscale(self, method: Method, lr: np.ndarray) -> np.ndarray:
        """uint8 H x W x 3 -> uint8 sH x sW x 3, tiled when asked or on out-of-memory."""
        x = torch.from_numpy(lr.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        tile = self.spec.tile
        while True:
            try:
                sr = upscale_tiled(method, x, tile) if tile else method.upscale(x)
                break
            except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
                if "out of memory" not in str(exc).lower():
                    raise
                if self.device == "cuda":
                    torch.cuda.empty_cache()
                tile = (tile or max(x.shape[-2:])) // 2
                if tile < 16:
                    raise BenchError(f"{method.info.name}: out of memory even with 16-px tiles; use a smaller --tile or the CPU") from None
                self.log(f"  out of memory: retrying {method.info.name} with --tile {tile}")
        name, s = method.info.name, method.scale
        tol = 1e-6  # float rounding of an output that is meant to be in [0, 1]
        want = (x.shape[0], 3, x.shape[2] * s, x.shape[3] * s)
        # the contract check-adapter verifies, enforced on every output: a violation fails
        # the cell instead of being clipped into a plausible-looking score
        if not torch.is_tensor(sr):
            raise BenchError(f"{name} returned {type(sr).__name__}, not a tensor; upscale must return a "
                             f"float tensor N x 3 x sH x sW in [0,1]")
        if tuple(sr.shape) != want:
            raise BenchError(f"{name} returned shape {tuple(sr.shape)} for LR {tuple(x.shape)} at x{s}; upscale "
                             f"must return N x 3 x {s}h x {s}w = {want}")
        sr = sr.detach().float().cpu()
        if not torch.isfinite(sr).all():
            bad = int((~torch.isfinite(sr)).sum())
            raise BenchError(f"{name} returned {bad} NaN/inf values; upscale must return finite values in [0,1]")
        lo, hi = float(sr.min()), float(sr.max())
        if lo < -tol or hi > 1 + tol:
            where = f"up to {hi:.4g}" if hi > 1 + tol else f"down to {lo:.4g}"
            raise BenchError(f"{name} returned values {where}, outside [0,1]; upscale must return [0,1] "
                             f"(this output spans [{lo:.4g}, {hi:.4g}])")
        return np.clip(np.round(sr[0].permute(1, 2, 0).numpy() * 255.0), 0, 255).astype(np.uint8)

    # -- the run ---------------------------------------------------------
    def plan_run(self) -> tuple[list[str], list, list[Cell]]:
        """The run's methods, datasets and cells, checked before any work."""
        from .data import resolve_datasets

        spec = self.spec
        names = method_names(spec)
        datasets = resolve_datasets(spec.datasets, spec.data_root, spec.scales)
        self.prepare(datasets)
        cells = plan_cells(spec, names, datasets, spec.scales)
        self.check_before_work(names, datasets, cells)
        self.datasets = datasets
        return names, datasets, cells

    def run(self) -> int:
        from .metrics import create_metric

        spec = self.spec
        names, datasets, cells = self.plan_run()
        prov = provenance(spec, self.device)
        prov["datasets"] = {ds.name: {"layout": ds.layout, "root": ds.root, "n_images": len(ds.items),
                                      "manifest": ds.manifest_hash()} for ds in datasets}
        if self.config_file:  # the run file as written, beside the resolved spec
            prov["config"] = {"path": self.config_file, "text": Path(self.config_file).read_text()}
        self.store.begin_run(self.run_id, spec.to_dict(), spec.hash(), prov)
        # one metric object per scale: the crop border is the scale (DESIGN.md 4)
        metrics = {(m, s): create_metric(m, protocol=spec.protocol, scale=s, weights_dir=spec.weights_dir,
                                         device=self.device) for m in spec.metrics for s in spec.scales}
        for m in spec.metrics:
            first = metrics[(m, spec.scales[0])]
            self.store.put_metric_note(m, first.available, first.unavailable_reason)
        by_name = {ds.name: ds for ds in datasets}
        todo = []
        self.planned = []
        for c in cells:
            ds = by_name[c.dataset]
            try:
                variant, _ = self.variant_for(c.method, c.scale, c.domain, self.test_ids, c.fit_seed)
            except NotFitted as exc:  # nothing to fit this method to here: marked, not failed
                key = self.cell_key(c.method, "not-fitted", ds, c.suite, c.scale)
                self.store.mark_not_fitted(key, self.run_id, str(exc))
                self.planned.append(key)
                self.not_fitted.append(f"{c.method} on {c.dataset} x{c.scale}: {exc}")
                continue
            except BenchError as exc:
                self._fail(self.cell_key(c.method, "?", ds, c.suite, c.scale), str(exc))
                continue
            wanted = [m for m in spec.metrics if ds.has_hr or not metrics[(m, c.scale)].spec.full_reference]
            key = self.cell_key(c.method, variant, ds, c.suite, c.scale)
            self.planned.append(key)
            versions = {m: metrics[(m, c.scale)].spec.version for m in wanted}
            forced = bool(spec.recompute) and matches(key, spec.recompute)
            missing = wanted if forced else [m for m in wanted if m not in self.store.done_metrics(key, versions)]
            if missing:
                todo.append((c, key, missing))
        self.log(f"{len(cells)} cells planned, {len(cells) - len(todo) - len(self.not_fitted)} already in "
                 f"{self.store.path}, {len(todo)} to compute (device {self.device}, profile {spec.profile})")
        for line in self.not_fitted:
            self.log(f"  {line}")
        self.audit(datasets, todo)
        self.store.add_provenance(self.run_id, {"training": [dataclasses.asdict(p) for p in self.plan.pools.values()]})
        try:
            self._compute(todo, by_name, metrics)
        finally:
            self.store.release_claims()
        if spec.timing:
            self._time_models(names, datasets)
        status = "failed" if self.failures else "done"
        self.store.end_run(self.run_id, status)
        return 1 if self.failures else 0

    def fit_only(self) -> int:
        """``run_bench.py fit``: train (or find cached) every learned method's fits that the
        benchmark run with the same flags would use, and evaluate nothing."""
        spec = self.spec
        names, datasets, cells = self.plan_run()
        fits: dict[tuple[str, int, str, int], Cell] = {}
        for c in cells:
            if resolve_variant(c.method)[0].info.learned and c.method not in self.checkpoints:
                fits.setdefault((c.method, c.scale, c.domain, c.fit_seed), c)
        todo = []
        for c in fits.values():
            try:
                self.variant_for(c.method, c.scale, c.domain, self.test_ids, c.fit_seed)
                todo.append((c, None, None))
            except NotFitted as exc:
                self.log(f"  not fitted: {c.method} x{c.scale}: {exc}")
            except BenchError as exc:
                self.failures.append(f"{c.method} x{c.scale}: {exc}")
                self.log(f"FAILED {c.method} x{c.scale}: {exc}")
        self.log(f"{len(todo)} fit(s) to train or find in {self.cache / 'fits'} (device {self.device}, profile "
                 f"{spec.profile}{', ' + str(ddp.world().size) + ' ranks' if ddp.world().size > 1 else ''})")
        self.audit(datasets, todo)
        for c, _, _ in todo:
            variant, meta = self.variant_for(c.method, c.scale, c.domain, self.test_ids, c.fit_seed)
            try:
                self.model_for(c.method, c.scale, c.domain, self.test_ids, c.fit_seed)
            except BenchError as exc:
                self.failures.append(f"{c.method} x{c.scale}: {exc}")
                self.log(f"FAILED {c.method} x{c.scale}: {exc}")
                continue
            self.log(f"  {c.method} x{c.scale}{' on ' + c.domain if c.domain else ''}: {variant} in "
                     f"{self.fit_folder(meta)}")
        return 1 if self.failures else 0

    def audit(self, datasets, todo: list) -> None:
        """Every training pool a fit of this run will read, compared by content with every test
        image and with each other before any fit (bench/audit.py); a hit stops the run."""
        from .audit import audit_pools

        if not any(resolve_variant(c.method)[0].info.learned and c.method not in self.checkpoints
                   for c, _, _ in todo):
            return
        pools: dict[str, object] = {}
        cross: list[tuple[str, str]] = []

        def key(role: str, pool) -> str:  # one key per pool object, unique even where names repeat
            known = next((k for k, p in pools.items() if p is pool), None)
            if known is None:
                known = f"{role} {pool.name}".strip()
                known = known if known not in pools else f"{known} #{len(pools)}"
                pools[known] = pool
            return known

        for data in self.plan.built():
            roles = [("source", data.source_hr), ("target", data.target_lr)]
            if data.pairs is not None:
                roles += [("pairs-hr", data.pairs[0]), ("pairs-lr", data.pairs[1])]
            keys = {role: key(role, pool) for role, pool in roles if len(pool)}
            # one fit's source and target must not share a scene (per-scale methods see the
            # whole source pool but no target, so only pools handed to the same fit are crossed)
            if "source" in keys and "target" in keys:
                cross.append((keys["source"], keys["target"]))
        if not pools:
            return
        report = audit_pools(pools, datasets, self.spec.scales, cache_dir=self.cache / "audit",
                             cross=list(dict.fromkeys(cross)))
        self.log(f"leakage audit: {report.summary()}")

    def _compute(self, todo: list, by_name: dict, metrics: dict) -> None:
        """Every cell of ``todo`` once: a cell another live process has claimed is left to it,
        and its result is picked up from the store when that process writes it."""
        bar = tqdm(total=len(todo), desc="cells", dynamic_ncols=True,
                   disable=os.environ.get("UNPAIRED_SR_BENCH_NO_PROGRESS") == "1")
        computed, picked, waiting = 0, 0, list(todo)
        announced = False
        while waiting:
            still = []
            for c, key, missing in waiting:
                bar.set_postfix_str(f"{c.method} {c.dataset} {c.suite} x{c.scale}")
                need = {m: metrics[(m, c.scale)].spec.version for m in missing}
                forced = bool(self.spec.recompute) and matches(key, self.spec.recompute)
                got = self.store.claim(key, self.run_id, need, force=forced)
                if got == "busy":
                    still.append((c, key, missing))
                    continue
                if got == "done":
                    picked += 1  # another run on this --out stored it meanwhile
                else:
                    self._run_cell(c, key, missing, by_name[c.dataset], metrics)
                    computed += 1
                bar.update()
            waiting = still
            if waiting:
                if not announced:
                    self.log(f"{len(waiting)} cell(s) are being computed by another run on {self.out}; "
                             "waiting for them")
                    announced = True
                time.sleep(CLAIM_POLL_S)
        bar.close()
        self.log(f"computed {computed} cell(s)" + (f", {picked} picked up from another run" if picked else ""))

    def check_before_work(self, names: Sequence[str], datasets, cells: Sequence[Cell]) -> None:
        """What would otherwise fail after minutes or hours of work, refused before any of it."""
        from .metrics import METRICS
        from .train import resolve_weight_file

        spec = self.spec
        if not cells:
            supported = {n: resolve_variant(n)[0].info.scales for n in names}
            raise BenchError(
                f"--scales {','.join(map(str, spec.scales))} plans no cells: "
                + "; ".join(f"{n} supports {','.join(f'x{s}' for s in sc)}" for n, sc in supported.items())
                + "; or the datasets have no images at these scales")
        for ds in datasets:
            if not ds.has_hr and all(METRICS[m].full_reference for m in spec.metrics):
                raise BenchError(
                    f"dataset {ds.name} has no HR images, so none of --metrics {','.join(spec.metrics)} can score it; "
                    "add a no-reference metric (--metrics niqe) or give a dataset with HR images")
        if spec.profile == "paper":
            for n in names:
                cls = resolve_variant(n)[0]
                if not cls.info.learned or n in self.checkpoints:
                    continue
                for f in cls.weight_files:
                    path, _ = resolve_weight_file(f, spec.weights_dir, verify=spec.verify_weights)
                    if path is None:
                        raise BenchError(
                            f"{n} at the paper profile trains with a perceptual loss that needs ImageNet weights {f}; "
                            f"place it in --weights-dir or {Path(torch.hub.get_dir()) / 'checkpoints'}, or pass "
                            f"--checkpoint {n}=RELEASED_FILE")

    def _fail(self, key: CellKey, error: str) -> None:
        msg = f"{key.method} on {key.dataset} {key.suite} x{key.scale}: {error}"
        self.failures.append(msg)
        self.store.fail_cell(key, self.run_id, error)
        self.log(f"FAILED {msg}")

    def _run_cell(self, c: Cell, key: CellKey, missing: list[str], ds, metrics) -> None:
        faults.reached("cell-start")
        t0 = time.perf_counter()
        try:
            model = self.model_for(c.method, c.scale, c.domain, self.test_ids, c.fit_seed)
            srs, refs = [], []
            items = ds.items_at(c.scale)
            if not items:
                raise BenchError(f"dataset {ds.name} has no images at x{c.scale}")
            for item in items:
                lr = self.lr_for(ds, item, c.suite, c.scale)
                sr = self.upscale(model.method, lr)
                hr = self.hr_for(ds, item, c.scale) if ds.has_hr else None
                srs.append((item.id, sr))
                if self.spec.save_sr:
                    self._save_sr(key, item.id, sr)
                refs.append(hr)
            values = score_cell(srs, refs, missing, {m: metrics[(m, c.scale)] for m in missing}, self.spec.jobs)
        except StoreError:
            raise  # the store cannot take results (disk full, locked): stop the run, keep what is stored
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise StoreError(f"the disk is full ({exc.filename or self.out}); the cells finished so far are kept: "
                                 "free space and rerun the same command to resume") from None
            self._fail(key, f"{type(exc).__name__}: {exc}"[:300])
            return
        except BenchError as exc:
            self._fail(key, str(exc))
            return
        except Exception as exc:  # a broken method fails its cells; the run goes on
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            self._fail(key, detail[:300])
            return
        versions = {m: metrics[(m, c.scale)].spec.version for m in missing}
        self.store.write_cell(key, self.run_id, versions, values, len(items), time.perf_counter() - t0)

    def sr_path(self, key: CellKey, image_id: str) -> Path:
        return sr_path(self.out, key, image_id)

    def _save_sr(self, key: CellKey, image_id: str, sr: np.ndarray) -> None:
        from .data import write_png

        path = self.sr_path(key, image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.png")
        write_png(tmp, sr)
        os.replace(tmp, path)

    def _time_models(self, names: Sequence[str], datasets) -> None:
        from .timing import time_model

        for (name, scale, domain, fit_seed), model in list(self._models.items()):
            if fit_seed:  # one network shape and code: the first seed's timing stands for every seed
                continue
            try:
                time_model(self.store, model.method, model.variant, self.device, self.run_id, full=False)
            except Exception as exc:
                self.log(f"timing {name} failed: {exc}")


def fit_input(name: str, data: TrainingData) -> TrainingData:
    """What ``fit`` receives: only the oracle is told the true degradation."""
    return data if resolve_variant(name)[0].info.upper_bound else data.without_degradation()


def sr_path(out: str | Path, key: CellKey, image_id: str) -> Path:
    """Where ``save_sr`` puts one SR image: out/sr/<method>/<variant>/<dataset>/<suite>/x<scale>/<cell>/<image>.png
    (the cell id keeps two contents of one name apart)."""
    safe = lambda s: "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in str(s))  # noqa: E731
    return (Path(out) / "sr" / safe(key.method) / safe(key.variant) / safe(key.dataset) / safe(key.suite)
            / f"x{key.scale}" / key.cell_id[:12] / f"{safe(image_id)}.png")


def score_cell(srs, refs, metric_names, metrics, jobs: int) -> dict[tuple[str, str], float | None]:
    """Per-image metric values; unavailable metrics are stored as None (shown n/a)."""
    values: dict[tuple[str, str], float | None] = {}
    for m in metric_names:
        metric = metrics[m]
        if not metric.available:
            for iid, _ in srs:
                values[(iid, m)] = None
            continue
        pairs = [(sr, None if hr is None else hr_uint8(hr), bool(hr is not None and hr.gray)) for (iid, sr), hr in zip(srs, refs)]
        if not metric.spec.full_reference:
            pairs = [(sr, None, False) for sr, _, _ in pairs]
        out = metric.batch(pairs, jobs=jobs, ids=[iid for iid, _ in srs])
        for (iid, _), v in zip(srs, out):
            if v is None or not math.isfinite(v):
                raise BenchError(f"metric {m} gave {v} on {iid}")
            values[(iid, m)] = float(v)
    return values


def hr_uint8(picture) -> np.ndarray:
    from .data import to_uint8

    return to_uint8(picture.pixels)


def upscale_tiled(method: Method, x: torch.Tensor, tile: int, overlap: int = 8) -> torch.Tensor:
    """Upscale N x 3 x h x w in tiles of ``tile`` LR pixels with ``overlap`` context each side."""
    s = method.scale
    n, c, h, w = x.shape
    out = torch.zeros(n, c, h * s, w * s)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(0, y0 - overlap), max(0, x0 - overlap)
            yb, xb = min(h, y1 + overlap), min(w, x1 + overlap)
            sr = method.upscale(x[:, :, ya:yb, xa:xb]).cpu()
            out[:, :, y0 * s:y1 * s, x0 * s:x1 * s] = sr[:, :, (y0 - ya) * s:(y1 - ya) * s, (x0 - xa) * s:(x1 - xa) * s]
    return out


@contextlib.contextmanager
def fit_lock(folder: Path, log=print):
    """One process trains a given fit key at a time; another waits, then loads the result.

    A lock per fit key, not per ``--out``: a days-long fit must not block other runs.
    (The kernel drops an flock when its process dies, so a killed fit holds nothing.)
    """
    import fcntl

    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"  another process is training fit {folder.name[:12]}; waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
