"""Plan cells, obtain each method's model once, synthesise LR, infer, score, store.

A *cell* is method x dataset x suite x scale (x protocol). The runner skips cells the
store already has, fits each learned method once per what it adapts to (classical
methods never; scale-fitted methods once per scale; oracle and unpaired methods once
per target domain), caches fits and LR images on disk (atomically: a kill never leaves
a half-written cache entry), and writes each finished cell in one transaction.
"""
from __future__ import annotations

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__, faults
from .adapter import REGISTRY, BenchError, FitReport, Method, TrainingData, load_adapter, sha256_file
from .store import CellKey, Store
from .train import TRAIN_CODE_VERSION

#: Suites run on the embedded default (issue 3): methods fitted per scale or not at all
#: get every synthetic family; methods fitted per domain get the target domain only.
DEFAULT_SUITES = ("bicubic", "aniso", "noise", "jpeg", "mixed")
DEFAULT_TARGET = "mixed"
GIVEN = "given"  # the dataset's own LR images (real-world and LR-only sets)
#: layouts scored on their own LR files (real captures, or kernels we cannot resynthesise)
GIVEN_LAYOUTS = ("realsr-v3", "drealsr", "ntire2020", "div2krk")

#: training pool per profile: (source HR images, target LR images, HR side)
POOLS = {"smoke": (4, 4, 64), "quick": (32, 32, 192), "paper": (800, 800, 480)}
LR_CACHE_VERSION = "1"


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
    target: str = DEFAULT_TARGET
    suite_file: str | None = None
    save_sr: bool = False  # also write SR PNGs under out/sr/ (figures read them)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        d = self.to_dict()
        d.pop("jobs")  # how many workers does not change any number
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
    for a in spec.adapters:
        load_adapter(a)
    names = REGISTRY.names() if "all" in spec.methods else list(spec.methods)
    for n in names:
        REGISTRY.get(n)  # did-you-mean on unknown names, before any work
    extra = [load_adapter(a).info.name for a in spec.adapters]
    return list(dict.fromkeys(names + extra))


def plan_cells(spec: RunSpec, methods: Sequence[str], datasets: Sequence, scales: Sequence[int]) -> list[Cell]:
    from .degrade import get_suite, parse_suites

    cells = []
    extra = Path(spec.suite_file) if spec.suite_file else None
    target = get_suite(spec.target, extra).name if spec.target else DEFAULT_TARGET
    for scale in scales:
        explicit = [s.name for s in parse_suites(spec.suites, scale, extra)] if spec.suites else None
        default = [s.name for fam in DEFAULT_SUITES for s in parse_suites(fam, scale)]
        for name in methods:
            info = REGISTRY.get(name).info
            if scale not in info.scales:
                continue
            per_domain = info.fit_per == "domain"
            for ds in datasets:
                if not ds.has_hr or ds.layout in GIVEN_LAYOUTS:
                    cells.append(Cell(name, ds.name, GIVEN, scale, target if per_domain else ""))
                    continue
                suites = explicit or ([target] if per_domain else default)
                for s in suites:
                    cells.append(Cell(name, ds.name, s, scale, s if per_domain else ""))
    return cells


class Runner:
    def __init__(self, spec: RunSpec, *, log=print):
        self.spec = spec
        self.log = log
        self.device = resolve_device(spec.device)
        self.out = Path(spec.out)
        self.cache = self.out / "cache"
        self.store = Store(self.out / "results.sqlite")
        self.run_id = time.strftime("%Y%m%d-%H%M%S-") + spec.hash()[:8]
        self.checkpoints = dict(spec.checkpoints)
        self.failures: list[str] = []
        self._models: dict[tuple[str, int, str], Model] = {}
        self._variants: dict[tuple[str, int, str], tuple[str, dict]] = {}
        self._hr_cache: dict[tuple[str, str, int], object] = {}
        self._pools: dict[tuple, TrainingData] = {}
        #: ids of every test image in play; no training pool may contain one
        self.test_ids: frozenset[str] = frozenset()

    def suite(self, name: str):
        from .degrade import get_suite

        return get_suite(name, Path(self.spec.suite_file) if self.spec.suite_file else None)

    # -- model acquisition ----------------------------------------------
    def training_data(self, cls, scale: int, domain: str, test_ids: frozenset[str]) -> TrainingData:
        """The pools a method learns from; built once per kind of need and reused (the
        procedural pools take seconds to draw, and every fingerprint needs them)."""
        from .data import make_training_data

        n_src, n_tgt, size = POOLS[self.spec.profile]
        per_domain = cls.info.fit_per == "domain"
        key = (scale, domain if per_domain else "", cls.info.needs_target_lr, cls.info.name == "oracle")
        if key not in self._pools:
            self._pools[key] = make_training_data(
                scale, suite=self.suite(domain) if per_domain else None, seed=self.spec.seed,
                n_source=n_src, n_target=n_tgt if cls.info.needs_target_lr else 0, size=size, test_ids=test_ids,
                with_degradation=cls.info.name == "oracle",
            )
        return self._pools[key]

    def variant_for(self, name: str, scale: int, domain: str, test_ids: frozenset[str]) -> tuple[str, dict]:
        """The model's fingerprint, computed without training or loading it."""
        k = (name, scale, domain)
        if k in self._variants:
            return self._variants[k]
        cls = REGISTRY.get(name)
        if name in self.checkpoints:
            sha = sha256_file(self.checkpoints[name])
            v = (f"{self.spec.profile}:ckpt-{sha[:8]}", {"source": "checkpoint", "sha256": sha})
        elif not cls.info.learned:
            v = ("-", {"source": "classical"})
        else:
            data = self.training_data(cls, scale, domain, test_ids)
            probe = cls(scale, profile=self.spec.profile, device="cpu")
            budget = probe.default_budget()
            key = hashlib.sha256("|".join([
                name, self.spec.profile, probe.extra_fingerprint(), str(scale), budget.key(), data.fingerprint(),
                TRAIN_CODE_VERSION, __version__,
            ]).encode()).hexdigest()
            v = (f"{self.spec.profile}:fit-{key[:8]}",
                 {"source": "fit", "fit_key": key, "data": data, "budget": budget})
        self._variants[k] = v
        return v

    def model_for(self, name: str, scale: int, domain: str, test_ids: frozenset[str]) -> Model:
        k = (name, scale, domain)
        if k in self._models:
            return self._models[k]
        cls = REGISTRY.get(name)
        variant, meta = self.variant_for(name, scale, domain, test_ids)
        method = cls(scale, profile=self.spec.profile, device=self.device)
        model = Model(method, variant, meta["source"], domain)
        if meta["source"] == "checkpoint":
            method.load_checkpoint(self.checkpoints[name])
            model.sha256 = meta["sha256"]
        elif meta["source"] == "fit":
            model.budget = meta["budget"].describe()
            self._fit_cached(model, meta)
        self.store.put_variant(variant, name, self.spec.profile, scale, model.source, domain, model.budget,
                               model.sha256, model.wall_s, {"notes": model.notes, "gaps": list(cls.info.gaps),
                                                            "title": cls.info.title, "family": cls.info.family})
        self._models[k] = model
        return model

    def _fit_cached(self, model: Model, meta: dict) -> None:
        folder = self.fit_folder(meta)
        ckpt = folder / "model"
        report_path = folder / "fit.json"
        data: TrainingData = meta["data"]
        leaked = data.ids & self.test_ids
        if leaked:  # make_training_data already refuses this; the runner checks again before any fit
            raise BenchError(f"training data for {model.method.info.name} contains test images {sorted(leaked)[:3]}")
        if report_path.exists():
            model.method.load_checkpoint(ckpt)
            rep = json.loads(report_path.read_text())
        else:
            name = model.method.info.name
            self.log(f"fitting {name} x{model.method.scale}"
                     + (f" on domain {model.domain}" if model.domain else "") + f" ({meta['budget'].describe()})")
            t0 = time.perf_counter()
            report = model.method.fit(fit_input(name, data), meta["budget"])
            wall = time.perf_counter() - t0
            rep = self.save_fit(model.method, meta, report, wall)
            # reload what was saved so a fresh fit and a cached one infer from identical weights
            model.method.load_checkpoint(ckpt)
            self.log(f"  {name}: {report.iterations} iterations in {wall:.1f}s")
        model.wall_s = rep.get("fit_wall_s")
        model.notes = list(dict.fromkeys(rep.get("notes", [])))
        model.sha256 = sha256_file(ckpt)

    def fit_folder(self, meta: dict) -> Path:
        return self.cache / "fits" / meta["fit_key"]

    def save_fit(self, method: Method, meta: dict, report: FitReport, wall: float) -> dict:
        """Put a finished fit in the cache under its key; atomic (a kill leaves no fit or a whole one)."""
        folder = self.fit_folder(meta)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        method.save_checkpoint(tmp / "model")
        rep = {**report.to_dict(), "fit_wall_s": wall, "budget": meta["budget"].describe()}
        (tmp / "fit.json").write_text(json.dumps(rep, indent=1, default=str))
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
        digest = hashlib.sha256(
            f"{LR_CACHE_VERSION}|{suite_name}|{scale}|{self.spec.seed}|{item.id}|".encode()
            + hashlib.sha256(np.ascontiguousarray(hr.pixels).tobytes()).digest()
        ).hexdigest()
        path = self.cache / "lr" / ds.name / f"{item.id}-{digest[:16]}.png"
        if path.exists():
            return to_uint8(read_image(path).pixels)
        lr, meta = synthesize(self.suite(suite_name), hr.pixels, scale, item.id, self.spec.seed)
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
        sr = sr[0].detach().float().cpu()
        if not torch.isfinite(sr).all():
            raise BenchError(f"{method.info.name} returned NaN/inf")
        return np.clip(np.round(sr.permute(1, 2, 0).numpy() * 255.0), 0, 255).astype(np.uint8)

    # -- the run ---------------------------------------------------------
    def run(self) -> int:
        from .data import resolve_datasets
        from .metrics import create_metric

        spec = self.spec
        names = method_names(spec)
        datasets = resolve_datasets(spec.datasets, spec.data_root, spec.scales)
        self.test_ids = frozenset(i.id for ds in datasets for i in ds.items)
        cells = plan_cells(spec, names, datasets, spec.scales)
        prov = provenance(spec, self.device)
        prov["datasets"] = {ds.name: {"layout": ds.layout, "root": ds.root, "n_images": len(ds.items),
                                      "manifest": ds.manifest_hash()} for ds in datasets}
        self.store.begin_run(self.run_id, spec.to_dict(), spec.hash(), prov)
        # one metric object per scale: the crop border is the scale (DESIGN.md 4)
        metrics = {(m, s): create_metric(m, protocol=spec.protocol, scale=s, weights_dir=spec.weights_dir,
                                         device=self.device) for m in spec.metrics for s in spec.scales}
        for m in spec.metrics:
            first = metrics[(m, spec.scales[0])]
            self.store.put_metric_note(m, first.available, first.unavailable_reason)
        by_name = {ds.name: ds for ds in datasets}
        todo = []
        self.planned_keys: list[tuple] = []
        for c in cells:
            try:
                variant, _ = self.variant_for(c.method, c.scale, c.domain, self.test_ids)
            except BenchError as exc:
                self._fail(c, "?", str(exc))
                continue
            ds = by_name[c.dataset]
            wanted = [m for m in spec.metrics if ds.has_hr or not metrics[(m, c.scale)].spec.full_reference]
            key = CellKey(variant, c.dataset, c.suite, c.scale, spec.protocol)
            self.planned_keys.append(tuple(vars(key).values()))
            missing = [m for m in wanted if m not in self.store.done_metrics(key)]
            if missing:
                todo.append((c, key, missing))
        self.log(f"{len(cells)} cells planned, {len(cells) - len(todo)} already in {self.store.path}, "
                 f"{len(todo)} to compute (device {self.device}, profile {spec.profile})")
        bar = tqdm(todo, desc="cells", dynamic_ncols=True, disable=os.environ.get("UNPAIRED_SR_BENCH_NO_PROGRESS") == "1")
        for c, key, missing in bar:
            bar.set_postfix_str(f"{c.method} {c.dataset} {c.suite} x{c.scale}")
            self._run_cell(c, key, missing, by_name[c.dataset], metrics)
        bar.close()
        if spec.timing:
            self._time_models(names, datasets)
        status = "failed" if self.failures else "done"
        self.store.end_run(self.run_id, status)
        return 1 if self.failures else 0

    def _fail(self, c: Cell, variant: str, error: str) -> None:
        msg = f"{c.method} on {c.dataset} {c.suite} x{c.scale}: {error}"
        self.failures.append(msg)
        self.store.fail_cell(CellKey(variant, c.dataset, c.suite, c.scale, self.spec.protocol), c.method,
                             self.run_id, error)
        self.log(f"FAILED {msg}")

    def _run_cell(self, c: Cell, key: CellKey, missing: list[str], ds, metrics) -> None:
        t0 = time.perf_counter()
        try:
            model = self.model_for(c.method, c.scale, c.domain, self.test_ids)
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
        except BenchError as exc:
            self._fail(c, key.variant, str(exc))
            return
        except Exception as exc:  # a broken method fails its cells; the run goes on
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            self._fail(c, key.variant, detail[:300])
            return
        self.store.write_cell(key, c.method, self.run_id, missing, values, len(items), time.perf_counter() - t0)

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

        for (name, scale, domain), model in list(self._models.items()):
            try:
                time_model(self.store, model.method, model.variant, self.device, self.run_id, full=False)
            except Exception as exc:
                self.log(f"timing {name} failed: {exc}")


def fit_input(name: str, data: TrainingData) -> TrainingData:
    """What ``fit`` receives: only the oracle is told the true degradation."""
    return data if name == "oracle" else data.without_degradation()


def sr_path(out: str | Path, key: CellKey, image_id: str) -> Path:
    """Where ``save_sr`` puts one SR image: out/sr/<variant>/<dataset>/<suite>/x<scale>/<image>.png."""
    safe = lambda s: "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in str(s))  # noqa: E731
    return (Path(out) / "sr" / safe(key.variant) / safe(key.dataset) / safe(key.suite) / f"x{key.scale}"
            / f"{safe(image_id)}.png")


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
