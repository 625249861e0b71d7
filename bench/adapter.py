"""The one interface every SR method sits behind, and the registry that finds them.

A method is a subclass of :class:`Method` with a :class:`MethodInfo` describing it
(the model card travels with the model, as in timm). It is registered with
``@register_method``, discovered through the entry-point group
``unpaired_sr_bench.methods`` when it lives in another package, or named on the
command line as ``--adapter module:Class``.

Data contract (DESIGN.md section 3):
- ``upscale`` takes N x 3 x h x w float32 in [0, 1] and returns N x 3 x (s h) x (s w)
  float32 in [0, 1]. Value-range conventions of the official code (0..255, mean
  shifts) stay inside the method.
- ``fit`` receives a :class:`TrainingData`; it never holds a test image or a paired
  (HR, target-LR) example, and only the ``oracle`` baseline gets ``degradation`` or
  a real set's train ``pairs``.
- Training pools are lazy :class:`ImagePool` objects (``bench/pools.py``, re-exported
  here: ids, content digests, length, bounded-cache loading, content manifest) that
  are also sequences of float32 arrays, so adapters written against arrays keep working;
  ``bench.train.PatchSampler`` draws seeded patches from them without loading a pool.
"""
from __future__ import annotations

import abc
import dataclasses
import difflib
import hashlib
import importlib
import importlib.metadata
import inspect
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .pools import ArrayPool, FilePool, ImagePool, as_pool  # noqa: F401  (the pool API of TrainingData)

if TYPE_CHECKING:
    from .warmstart import WarmStart

ENTRY_POINT_GROUP = "unpaired_sr_bench.methods"
PROFILES = ("smoke", "quick", "gpu", "paper")


@dataclass(frozen=True)
class Profile:
    """A profile: the architecture widths and budgets of ``base`` (each method's ARCH and
    ``budgets`` tables have a row for smoke, quick and paper), with every fit's iterations
    (and the warm starts') multiplied by ``iterations_factor``."""

    name: str
    base: str
    iterations_factor: float = 1.0
    about: str = ""


PROFILE_SPECS = {
    "smoke": Profile("smoke", "smoke", about="tiny networks, a few iterations: tests and CI"),
    "quick": Profile("quick", "quick", about="small networks sized for a 2-core CPU (the default there): "
                     "about 20 minutes for --methods all"),
    # quick widths (the paper widths would need hours per fit to leave their random start);
    # 4x the quick iterations: the 4x learning curves (results/reference/curves_h100) still rise
    "gpu": Profile("gpu", "quick", 4.0, "quick widths, 4x the quick iterations: the default where --device "
                   "auto finds CUDA (sized to about 30 s per fit on an H100-class GPU)"),
    "paper": Profile("paper", "paper", about="the official architectures and training recipes (GPU days)"),
}


def scaled_budget(budget: "Budget", factor: float) -> "Budget":
    """``budget`` with ``factor`` times its iterations (a profile's iterations_factor)."""
    if factor == 1:
        return budget
    return dataclasses.replace(budget, iterations=max(1, round(budget.iterations * factor)))
FAMILIES = ("classical", "baseline", "blind-synthetic", "unpaired")
#: what a method's SR network is trained to optimise: "psnr" (pixel losses only: L1/L2, plus
#: terms that do not pull the output away from the pixel target, such as a contrastive
#: degradation loss) or "perceptual" (a perceptual and/or adversarial term on the SR
#: output, which trades PSNR for realism by design); "" for classical methods
OBJECTIVES = ("psnr", "perceptual", "")


class BenchError(Exception):
    """An error a user can fix; the CLI prints its message as one line, no traceback."""


class BenchWarning(UserWarning):
    """Something a user should know but the run survives (e.g. a partial dataset); the CLI
    prints its message as one ``warning:`` line on stderr, without the warnings module's
    file and source line."""


class CheckpointError(BenchError):
    """A checkpoint file does not match what the method expects."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One file of an official release: name, format, and what it holds."""

    file: str
    format: str
    note: str = ""


@dataclass(frozen=True)
class MethodInfo:
    name: str
    title: str
    citation: str
    family: str
    scales: tuple[int, ...] = (2, 3, 4)
    code_url: str = ""
    checkpoints: tuple[CheckpointInfo, ...] = ()
    gaps: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    #: told what the other methods are not (e.g. the true degradation): tables show it but
    #: never mark it best
    upper_bound: bool = False
    #: what the official training recipe starts each network from (a released file, e.g.
    #: "ESRGAN-FS: RRDB_ESRGAN_x4.pth (train_SDSR.yml pretrain_model_G)"); "" = from scratch.
    #: ``--init NAME=PATH`` supplies such a file (``Method.load_init``).
    init_from: str = ""
    #: the SR network's training objective (OBJECTIVES; None: "psnr" for a learned method,
    #: "" for a classical one); a variant may override it
    objective: str | None = None
    #: suite-name prefixes a per-scale method is judged on (its training degradations,
    #: e.g. ("aniso",)); a per-domain method's home is the domain it was fitted to
    home_suites: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"MethodInfo.family must be one of {FAMILIES}, got {self.family!r}")
        if self.objective is None:
            object.__setattr__(self, "objective", "" if self.family == "classical" else "psnr")
        if self.objective not in OBJECTIVES or (self.objective == "") != (self.family == "classical"):
            raise ValueError(f"MethodInfo.objective must be one of 'psnr', 'perceptual' (learned methods) or '' "
                             f"(classical ones), got {self.objective!r} for a {self.family} method")

    @property
    def learned(self) -> bool:
        return self.family != "classical"

    @property
    def fit_per(self) -> str:
        """What one fit adapts to: 'never', 'scale', or 'domain' (a target suite)."""
        if self.family == "classical":
            return "never"
        if self.family == "unpaired" or self.upper_bound:
            return "domain"
        return "scale"

    @property
    def needs_target_lr(self) -> bool:
        return self.family == "unpaired"


@dataclass(frozen=True)
class MethodVariant:
    """A named variant of a method (timm's ``arch.tag``): ``dasr-wang.aniso``.

    ``options`` are constructor keyword arguments; ``checkpoints`` the released files
    (path fragments as the release lays them out) that belong to this variant, so that a
    file of another variant is refused with a line naming the right one.
    """

    tag: str
    about: str
    options: tuple[tuple[str, Any], ...] = ()
    checkpoints: tuple[str, ...] = ()
    #: the variant's training objective where it differs from the method's ("" = the same)
    objective: str = ""


@dataclass(frozen=True)
class MethodContext:
    """Everything a run hands to a method besides its scale: one frozen object, so that a
    documented flag reaches the code that needs it. New options extend this class, never
    the constructor (DESIGN section 3).

    ``variant``: the tag chosen (``""`` = the method's default); ``weights_dir``: where
    ImageNet weight files are looked up; ``verify_weights``: check their sha256 (off only
    in tests with stand-in files); ``init``: (method name, file) starting points;
    ``loader_workers``: DataLoader worker processes for patch sampling (``bench.train.loading``;
    never changes a patch); ``cache_dir``: where derived training images (the bicubic LR of
    a source pool) may be written once, keyed by their content (None: memory only).
    Neither of the last two enters a fit key: they change how fast a fit runs, not what it learns.
    """

    profile: str = "quick"
    device: str = "cpu"
    precision: str = "fp32"
    variant: str = ""
    weights_dir: str | None = None
    verify_weights: bool = True
    seed: int = 0
    init: tuple[tuple[str, str], ...] = ()
    loader_workers: int = 0
    cache_dir: str | None = None
    #: which of ``--fit-seeds`` this fit is: moves the initial weights (:meth:`Method.init_seed`)
    #: and, through ``TrainingData.seed``, every draw of the fit; 0 is the default fit
    fit_seed: int = 0

    def init_file(self, name: str) -> str | None:
        return dict(self.init).get(name)


@dataclass(frozen=True)
class Budget:
    """How much training a fit may spend. Profiles change only these numbers."""

    iterations: int
    batch_size: int
    patch_size: int  # LR patch side
    lr: float = 2e-4

    def key(self) -> str:
        """Every field, so that no change to the budget can reuse a stale fit."""
        return "-".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))

    def describe(self) -> str:
        return f"{self.iterations} it x batch {self.batch_size} x LR patch {self.patch_size}, lr {self.lr:g}"


@dataclass(frozen=True)
class TrainingData:
    """What a method may learn from. Never a test image, never a paired target example.

    ``source_hr``: clean HR images, a :class:`bench.pools.ImagePool` (a lazy ``Sequence``
    of float32 H x W x 3 arrays in [0,1]: index or iterate it like a tuple of arrays; pass
    arrays and they are wrapped in an in-memory pool).
    ``target_lr``: LR images of the target domain, never paired with any HR: real LR photos
    (``--target lr:PATH``, a standard training set) or LR synthesised from a half of the
    source images that ``source_hr`` never holds (unpaired methods only).
    ``pairs``: (HR pool, LR pool) of real train pairs, aligned by index: given to the
    upper bound (``oracle``) only, where a real-world set has them (RealSR, DRealSR).
    ``degradation``: the target domain's true degradation (``oracle`` only).
    ``domain``: what the target is, for labels ("mixed", "NTIRE2020-T1 target").
    ``ids``: the image ids behind every image, for leak checks (pool ids by default).
    """

    scale: int
    source_hr: Any
    target_lr: Any = ()
    degradation: Any = None
    domain: str = ""
    source_ids: tuple[str, ...] = ()
    target_ids: tuple[str, ...] = ()
    seed: int = 0
    pairs: Any = None

    def __post_init__(self) -> None:
        from .pools import as_pool

        # arrays (third-party adapters, tests) become in-memory pools; pools stay lazy
        src = as_pool(self.source_hr, "source", self.source_ids or None)
        tgt = as_pool(self.target_lr, "target", self.target_ids or None)
        object.__setattr__(self, "source_hr", src)
        object.__setattr__(self, "target_lr", tgt)
        object.__setattr__(self, "source_ids", tuple(src.ids))
        object.__setattr__(self, "target_ids", tuple(tgt.ids))
        if self.pairs is not None:
            hr, lr = (as_pool(p, n) for p, n in zip(self.pairs, ("pairs-hr", "pairs-lr")))
            if len(hr) != len(lr):
                raise BenchError(f"training pairs: {len(hr)} HR images but {len(lr)} LR images; pair every HR with one LR")
            object.__setattr__(self, "pairs", (hr, lr))

    @property
    def ids(self) -> frozenset[str]:
        out = frozenset(self.source_ids) | frozenset(self.target_ids)
        if self.pairs is not None:
            out |= frozenset(self.pairs[0].ids) | frozenset(self.pairs[1].ids)
        return out

    def fingerprint(self) -> str:
        """Hash of the content (each pool's manifest of image digests), so cached fits are
        keyed by the data they saw."""
        h = hashlib.sha256()
        h.update(f"{self.scale}|{self.domain}|{self.seed}|{self.degradation!r}".encode())
        for pool in (self.source_hr, self.target_lr, *(self.pairs or ())):
            h.update(f"|{len(pool)}:{pool.manifest()}".encode())
        return h.hexdigest()

    def without_degradation(self) -> "TrainingData":
        return dataclasses.replace(self, degradation=None, pairs=None)

    def without_target(self) -> "TrainingData":
        return dataclasses.replace(self, target_lr=(), target_ids=(), degradation=None, pairs=None)


@dataclass
class FitReport:
    iterations: int = 0
    wall_s: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Method(abc.ABC):
    """Base class of every SR method. See the module docstring for the data contract."""

    info: ClassVar[MethodInfo]
    #: per-profile training budgets; learned methods override.
    budgets: ClassVar[Mapping[str, Budget]] = {}
    #: named variants (``name.tag``); the default variant has no tag.
    variants: ClassVar[Mapping[str, MethodVariant]] = {}
    #: Part of every cell and fit key of this method. Bump it when a change to the
    #: method's code changes its outputs or what a fit learns (an architecture detail, a
    #: loss weight, a schedule); leave it for refactors that keep every number. A method
    #: that declares none (``None``) is fingerprinted by the bytes of its module files.
    code_version: ClassVar[str | None] = None
    #: ImageNet weight files the method's training reads when present (perceptual
    #: losses); their digests, or their absence, are part of the fit key.
    weight_files: ClassVar[tuple[str, ...]] = ()

    def __init__(self, scale: int, context: MethodContext | None = None, *, profile: str | None = None,
                 device: str | torch.device | None = None):
        context = context or MethodContext()
        over = {k: str(v) for k, v in (("profile", profile), ("device", device)) if v is not None}
        if over:
            context = dataclasses.replace(context, **over)
        if context.profile not in PROFILES:
            raise BenchError(f"unknown profile {context.profile!r}; choose one of {', '.join(PROFILES)}")
        if scale not in self.info.scales:
            raise BenchError(
                f"{self.info.name} does not support x{scale}; it supports "
                + ", ".join(f"x{s}" for s in self.info.scales)
            )
        self.scale = scale
        self.context = context
        #: the architecture profile: the row of the method's ARCH and ``budgets`` tables
        #: (``gpu`` runs the quick networks; ``context.profile`` is the profile asked for)
        self.profile = PROFILE_SPECS[context.profile].base
        self.device = torch.device(context.device)

    def init_seed(self, k: int = 0) -> int:
        """The seed of initial weights number ``k`` (methods draw their networks' initial
        weights from fixed seeds, so a fit never depends on the global RNG); fit seed ``f``
        of ``--fit-seeds`` moves every one of them, and fit seed 0 leaves them as they were."""
        return k + 1000 * self.context.fit_seed

    # -- training --------------------------------------------------------
    def default_budget(self) -> Budget:
        if self.profile not in self.budgets:
            return Budget(iterations=0, batch_size=1, patch_size=0)
        return scaled_budget(self.budgets[self.profile], PROFILE_SPECS[self.context.profile].iterations_factor)

    def warm_start(self) -> WarmStart | None:
        """The shared PSNR-trained starting network (``bench.warmstart.WarmStart``) of a
        method whose official recipe starts its SR network from a pretrained file; the
        runner trains it once per key (or takes ``--init``) and hands it to :meth:`load_init`
        before :meth:`fit`. None (the default): the recipe trains from scratch."""
        return None

    def fit(self, data: TrainingData, budget: Budget) -> FitReport:
        """Learn from unpaired data; classical methods do nothing."""
        return FitReport()

    # -- checkpoints -----------------------------------------------------
    def load_checkpoint(self, path: str | Path) -> None:
        net = self.network()
        if net is None:
            raise CheckpointError(f"{self.info.name} has no weights to load")
        load_state_dict_checked(net, load_torch_file(path), what=f"{self.info.name} checkpoint {path}")

    def load_init(self, path: str | Path) -> None:
        """Start the next fit from a pretrained file (``--init NAME=PATH``), before ``fit``.

        By default the method's own checkpoint format; a method whose recipe starts one
        network from a general SR model (ESRGAN's ``RRDB_ESRGAN_x4.pth``, EDSR's
        ``edsr_baseline_x4``) overrides this to load that network through its key-family
        map. The runner keys the fit by the file's sha256 and notes it in the footnote."""
        self.load_checkpoint(path)

    def save_checkpoint(self, path: str | Path) -> None:
        net = self.network()
        if net is None:
            raise CheckpointError(f"{self.info.name} has no weights to save")
        torch.save(net.state_dict(), path)

    # -- inference -------------------------------------------------------
    @abc.abstractmethod
    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        """N x 3 x h x w float32 in [0,1] -> N x 3 x sh x sw float32 in [0,1]."""

    def network(self) -> nn.Module | None:
        """The module timing and FLOP counting measure (None for classical methods)."""
        return None

    def extra_fingerprint(self) -> str:
        """Anything beyond (name, profile, scale) that changes the model (e.g. options)."""
        return ""


class DegradationModel:
    """Declared (by subclassing) by methods that learn an HR -> LR model of their target
    domain, so that ``fidelity`` can score it and ``check-adapter`` verifies it; nothing
    is probed by attribute name.

    ``degrade``: N x 3 x H x W in [0,1] (H, W multiples of the scale) -> N x 3 x H/s x W/s
    in [0,1]; a stochastic model draws only from ``generator``. ``kernel``: the model's
    estimate of its (mean) HR-grid blur kernel as a 2-D tensor, or None if it has none.
    """

    def degrade(self, hr: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} declares DegradationModel but does not define degrade()")

    def kernel(self, generator: torch.Generator | None = None) -> torch.Tensor | None:
        return None


# ---------------------------------------------------------------------------
# checkpoint helpers
# ---------------------------------------------------------------------------
#: how files written by ``torch.save`` begin: the zip format (torch >= 1.6) and the legacy
#: pickle, whose first object is torch's magic number 0x1950a86a20f9469cfc6c
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_EXPECTED = "expected the file as released (written by torch.save: a state dict of tensors), complete and unmodified"


def load_torch_file(path: str | Path) -> Any:
    """torch.load with weights_only=True: never unpickles code. One clear line otherwise."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist; pass an existing file with --checkpoint NAME=PATH")
    if p.is_dir():
        raise CheckpointError(f"checkpoint {p} is a folder; this method takes a single file")
    try:
        # torch warns (UserWarning) about legacy formats and storages while it reads; the
        # outcome is reported below in one line, so its warnings would only repeat it in part
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except OSError as exc:
        if not p.is_file() or not os.access(p, os.R_OK):
            raise CheckpointError(f"cannot read checkpoint {p} ({exc.strerror or exc}); check its permissions") from None
        error: Exception = exc
    except Exception as exc:  # corrupt zip, pickle with code, truncated file, not a checkpoint at all
        error = exc
    with open(p, "rb") as fh:
        head = fh.read(len(_LEGACY_MAGIC))
    if not head.startswith(_ZIP_MAGIC) and head != _LEGACY_MAGIC:
        raise CheckpointError(f"checkpoint {p} is not a PyTorch checkpoint (it is neither torch.save's zip format "
                              f"nor its legacy one); {_EXPECTED}")
    text = " ".join(str(error).split())
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        raise CheckpointError(
            f"checkpoint {p} holds a pickled Python object ({found.group(1)}), not only tensors, and is not "
            f"unpickled (weights_only=True never runs code from a file); {_EXPECTED}, or re-save its "
            "state_dict() with torch.save"
        )
    # torch's own first sentence (its later ones are about miniz internals or weights_only advice)
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".") or type(error).__name__
    raise CheckpointError(f"checkpoint {p} is a damaged PyTorch checkpoint ({first}); {_EXPECTED}: is it "
                          "truncated? download it again")


def load_state_dict_checked(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    what: str,
    allow_missing: Callable[[str], bool] = lambda k: False,
) -> None:
    """Load ``state`` into ``module`` strictly, except for keys ``allow_missing`` accepts.

    Raises :class:`CheckpointError` naming missing, unexpected and mis-shaped keys.
    """
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{what}: expected a state dict, got {type(state).__name__}")
    own = module.state_dict()
    missing = [k for k in own if k not in state and not allow_missing(k)]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"wrong shapes: {', '.join(shapes[:3])}")
        raise CheckpointError(
            f"{what} does not fit the network: " + "; ".join(parts)
            + ". Is it the release for this method, scale and configuration?"
        )
    module.load_state_dict({k: v for k, v in state.items()}, strict=False)


def count_parameters(state_or_module: nn.Module | Mapping[str, torch.Tensor], *, buffers: bool = False) -> int:
    if isinstance(state_or_module, nn.Module):
        n = sum(p.numel() for p in state_or_module.parameters())
        if buffers:
            n += sum(b.numel() for b in state_or_module.buffers())
        return n
    return sum(v.numel() for v in state_or_module.values() if torch.is_tensor(v))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------
class Registry:
    """Name -> Method class. One instance per process lives in ``REGISTRY``; it is
    filled by imports (decorators), not mutated at run time otherwise."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Method]] = {}
        self._discovered = False

    def add(self, cls: type[Method]) -> type[Method]:
        if not isinstance(getattr(cls, "info", None), MethodInfo):
            raise TypeError(f"{cls.__name__} needs a class attribute `info = MethodInfo(...)`")
        name = cls.info.name
        old = self._classes.get(name)
        reloaded = old is not None and (old.__module__, old.__qualname__) == (cls.__module__, cls.__qualname__)
        if old is not None and old is not cls and not reloaded:  # a reloaded module replaces its own class
            raise ValueError(f"method name {name!r} registered twice ({self._classes[name].__module__}, {cls.__module__})")
        self._classes[name] = cls
        return cls

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        importlib.import_module("methods")  # the built-in methods register on import
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            obj = ep.load()
            if isinstance(obj, type) and issubclass(obj, Method):
                self.add(obj)

    def names(self) -> list[str]:
        self._discover()
        return list(self._classes)

    def get(self, name: str) -> type[Method]:
        self._discover()
        if name not in self._classes:
            raise BenchError(unknown_name("method", name, self._classes))
        return self._classes[name]

    def all(self) -> list[type[Method]]:
        self._discover()
        return list(self._classes.values())


REGISTRY = Registry()


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: ``@register_method`` makes the method available by ``info.name``."""
    return REGISTRY.add(cls)


def load_adapter(spec: str) -> type[Method]:
    """``module:Class`` -> the Method subclass (registered as a side effect)."""
    if ":" not in spec:
        raise BenchError(f"--adapter {spec!r} must look like module:Class (e.g. mypkg.sr:MyMethod)")
    mod_name, cls_name = spec.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise BenchError(f"cannot import {mod_name!r} for --adapter {spec} ({exc}); is the package installed?") from None
    here = sorted(n for n, v in vars(mod).items()
                  if isinstance(v, type) and issubclass(v, Method) and v is not Method and not inspect.isabstract(v))
    have = f"Method subclasses in it: {', '.join(here)}" if here else "it defines no Method subclass"
    if not hasattr(mod, cls_name):
        hint = difflib.get_close_matches(cls_name, here, n=1, cutoff=0.5)
        raise BenchError(f"--adapter {spec}: module {mod_name} has no attribute {cls_name!r}"
                         + (f"; did you mean {hint[0]!r}?" if hint else "") + f" ({have})")
    cls = getattr(mod, cls_name)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise BenchError(f"--adapter {spec}: {mod_name}.{cls_name} is a {type(cls).__name__}, not a subclass of "
                         f"bench.adapter.Method ({have})")
    return REGISTRY.add(cls)


def split_name(name: str) -> tuple[str, str]:
    """``"dasr-wang.aniso"`` -> ``("dasr-wang", "aniso")``; no tag -> ``(name, "")``."""
    base, _, tag = name.partition(".")
    return base, tag


def resolve_variant(name: str) -> tuple[type[Method], MethodVariant | None]:
    """The class and the declared variant behind ``name``: its tag's, or the declared
    default (tag ``""``) for a plain name, or None where the method declares none
    (did-you-mean on unknown tags)."""
    base, tag = split_name(name)
    cls = REGISTRY.get(base)
    if not tag:
        return cls, cls.variants.get("")
    if tag not in cls.variants:
        known = [f"{base}.{t}" for t in cls.variants] or [f"(none: {base} has no variants)"]
        raise BenchError(unknown_name("method variant", name, known))
    return cls, cls.variants[tag]


def objective_of(name: str) -> str:
    """The training objective of ``name`` (a method or ``method.tag``): its variant's, else its method's."""
    cls, variant = resolve_variant(name)
    return (variant.objective if variant is not None else "") or cls.info.objective


def create_method(name: str, scale: int, context: MethodContext | None = None, *, profile: str | None = None,
                  device: str | None = None) -> Method:
    """Build ``name`` (a method or ``method.tag``) with the variant's options and ``context``."""
    cls, variant = resolve_variant(name)
    context = context or MethodContext()
    context = dataclasses.replace(context, variant=variant.tag if variant else "")
    options = dict(variant.options) if variant else {}
    return cls(scale, context, profile=profile, device=device, **options)


def check_checkpoint_variant(name: str, path: str | Path) -> None:
    """Refuse a released file that the release layout says belongs to another variant.

    The iso and aniso DASR-Wang files have identical keys and shapes, so only where the
    release put them tells them apart; the variant is declared, never guessed.
    """
    cls, chosen = resolve_variant(name)
    text = Path(path).as_posix()
    mine = chosen.checkpoints if chosen else ()
    for v in cls.variants.values():
        if v is chosen:
            continue
        if any(frag in text for frag in v.checkpoints) and not any(frag in text for frag in mine):
            other = f"{cls.info.name}.{v.tag}" if v.tag else cls.info.name
            raise CheckpointError(f"checkpoint {path} is the release of {other} ({v.about}); "
                                  f"run it as --methods {other} --checkpoint {other}={path}")


def method_fingerprint(cls: type[Method]) -> str:
    """What identifies the method's code: its declared ``code_version``, or else the
    digests of its module files and of every loaded module beside them (its helpers:
    the class source alone misses an edited helper function)."""
    if cls.code_version is not None:
        return f"{cls.info.name}@v{cls.code_version}"
    h = hashlib.sha256(cls.info.name.encode())
    for f in module_files(cls):
        h.update(f"|{f.name}|".encode())
        h.update(f.read_bytes())
    return f"{cls.info.name}@src-{h.hexdigest()[:16]}"


def module_files(cls: type) -> list[Path]:
    """The source files of ``cls``'s module and of every loaded module beside it: the
    whole top-level package when it is one, else the modules in the same folder."""
    mod = sys.modules.get(cls.__module__)
    src = getattr(mod, "__file__", None) or inspect.getsourcefile(cls)
    if not src:
        return []
    top = sys.modules.get(cls.__module__.split(".")[0])
    if top is not None and getattr(top, "__path__", None) and getattr(top, "__file__", None):
        root = Path(top.__file__).resolve().parent
        inside = lambda p: root in p.parents  # noqa: E731
    else:
        root = Path(src).resolve().parent
        inside = lambda p: p.parent == root  # noqa: E731
    files = {Path(src).resolve()}
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None)
        if f and f.endswith(".py") and inside(Path(f).resolve()):
            files.add(Path(f).resolve())
    return sorted(files)


def unknown_name(kind: str, name: str, known: Sequence[str] | Mapping[str, Any]) -> str:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}{hint} Known: {', '.join(sorted(known))}"


def read_toml(path: str | os.PathLike, what: str, *, missing: str | None = None, error: type = BenchError) -> dict:
    """A TOML file as a dict. A missing file (when ``missing`` says what to pass instead)
    or an invalid one is one ``error`` line naming the file and the fix."""
    import tomllib

    path = Path(path)
    if missing is not None and not path.is_file():
        raise error(f"{what} {path} not found; {missing}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path} is not valid TOML ({exc}); fix the file") from None

