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
  (HR, target-LR) example, and only the ``oracle`` baseline gets ``degradation``.
"""
from __future__ import annotations

import abc
import dataclasses
import difflib
import hashlib
import importlib
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch
from torch import nn

ENTRY_POINT_GROUP = "unpaired_sr_bench.methods"
PROFILES = ("smoke", "quick", "paper")
FAMILIES = ("classical", "baseline", "blind-synthetic", "unpaired")


class BenchError(Exception):
    """An error a user can fix; the CLI prints its message as one line, no traceback."""


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

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"MethodInfo.family must be one of {FAMILIES}, got {self.family!r}")

    @property
    def learned(self) -> bool:
        return self.family != "classical"

    @property
    def fit_per(self) -> str:
        """What one fit adapts to: 'never', 'scale', or 'domain' (a target suite)."""
        if self.family == "classical":
            return "never"
        if self.family == "unpaired" or self.name == "oracle":
            return "domain"
        return "scale"

    @property
    def needs_target_lr(self) -> bool:
        return self.family == "unpaired"


@dataclass(frozen=True)
class Budget:
    """How much training a fit may spend. Profiles change only these numbers."""

    iterations: int
    batch_size: int
    patch_size: int  # LR patch side
    lr: float = 2e-4

    def key(self) -> str:
        return f"it{self.iterations}-b{self.batch_size}-p{self.patch_size}"

    def describe(self) -> str:
        return f"{self.iterations} it x batch {self.batch_size} x LR patch {self.patch_size}"


@dataclass(frozen=True)
class TrainingData:
    """What a method may learn from. Never a test image, never a paired target example.

    ``source_hr``: clean HR images (float32 H x W x 3 in [0,1]).
    ``target_lr``: LR images of the target domain, made with the domain's degradation
    from an HR pool disjoint from ``source_hr`` (unpaired methods only).
    ``degradation``: the target domain's true degradation (``oracle`` only).
    ``ids``: the image ids behind every array, for leak checks.
    """

    scale: int
    source_hr: tuple[np.ndarray, ...]
    target_lr: tuple[np.ndarray, ...] = ()
    degradation: Any = None
    domain: str = ""
    source_ids: tuple[str, ...] = ()
    target_ids: tuple[str, ...] = ()
    seed: int = 0

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self.source_ids) | frozenset(self.target_ids)

    def fingerprint(self) -> str:
        """Hash of the content, so cached fits are keyed by the data they saw."""
        h = hashlib.sha256()
        h.update(f"{self.scale}|{self.domain}|{self.seed}|{self.degradation!r}".encode())
        for arr in self.source_hr + self.target_lr:
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def without_degradation(self) -> "TrainingData":
        return dataclasses.replace(self, degradation=None)

    def without_target(self) -> "TrainingData":
        return dataclasses.replace(self, target_lr=(), target_ids=(), degradation=None)


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

    def __init__(self, scale: int, *, profile: str = "quick", device: str | torch.device = "cpu"):
        if profile not in PROFILES:
            raise BenchError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
        if scale not in self.info.scales:
            raise BenchError(
                f"{self.info.name} does not support x{scale}; it supports "
                + ", ".join(f"x{s}" for s in self.info.scales)
            )
        self.scale = scale
        self.profile = profile
        self.device = torch.device(device)

    # -- training --------------------------------------------------------
    def default_budget(self) -> Budget:
        if self.profile not in self.budgets:
            return Budget(iterations=0, batch_size=1, patch_size=0)
        return self.budgets[self.profile]

    def fit(self, data: TrainingData, budget: Budget) -> FitReport:
        """Learn from unpaired data; classical methods do nothing."""
        return FitReport()

    # -- checkpoints -----------------------------------------------------
    def load_checkpoint(self, path: str | Path) -> None:
        net = self.network()
        if net is None:
            raise CheckpointError(f"{self.info.name} has no weights to load")
        load_state_dict_checked(net, load_torch_file(path), what=f"{self.info.name} checkpoint {path}")

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


# ---------------------------------------------------------------------------
# checkpoint helpers
# ---------------------------------------------------------------------------
def load_torch_file(path: str | Path) -> Any:
    """torch.load with weights_only=True: never unpickles code. One clear error otherwise."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist; pass an existing file with --checkpoint NAME=PATH")
    if p.is_dir():
        raise CheckpointError(f"checkpoint {p} is a folder; this method takes a single file")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, pickle with code, truncated file
        raise CheckpointError(
            f"cannot read checkpoint {p} as tensors ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            "is it the released file, and not truncated?"
        ) from None


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
        if name in self._classes and self._classes[name] is not cls:
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
    cls = getattr(mod, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise BenchError(f"{spec}: {cls_name!r} is not a Method subclass in {mod_name}")
    return REGISTRY.add(cls)


def create_method(name: str, scale: int, *, profile: str = "quick", device: str = "cpu") -> Method:
    return REGISTRY.get(name)(scale, profile=profile, device=device)


def unknown_name(kind: str, name: str, known: Sequence[str] | Mapping[str, Any]) -> str:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}{hint} Known: {', '.join(sorted(known))}"
