"""What learned methods share for training: patch sampling, the budgeted loop,
stand-ins for ImageNet-weighted losses, and optimiser helpers.

Every method's ``fit`` is a loop of ``step(i) -> {loss name: value}`` run by
:func:`run_training`, which enforces the :class:`~bench.adapter.Budget`, shows a
progress bar and records the loss history in the :class:`~bench.adapter.FitReport`.
"""
from __future__ import annotations

import hashlib
import os
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import faults
from .adapter import BenchError, Budget, FitReport

#: Bump when a change to shared training code changes what a fit produces; it is part
#: of every cached fit's key.
TRAIN_CODE_VERSION = "1"


def torch_generator(seed: int, *parts: object) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and any labels (no global RNG state)."""
    digest = hashlib.sha256(("|".join(map(str, (seed, *parts)))).encode()).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return g


def numpy_rng(seed: int, *parts: object) -> np.random.Generator:
    digest = hashlib.sha256(("|".join(map(str, (seed, *parts)))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class PatchSampler:
    """Random square patches from a pool of H x W x 3 float arrays, as N x 3 x p x p tensors.

    Images smaller than the patch are reflect-padded once up front so that tiny pools
    still train (the smoke profile uses them).
    """

    def __init__(self, images: Sequence[np.ndarray], patch: int, generator: torch.Generator,
                 augment: bool = True):
        if not images:
            raise BenchError("training pool is empty: the method got no images to learn from")
        self.patch = patch
        self.generator = generator
        self.augment = augment
        self.images = [self._prepare(im) for im in images]

    def _prepare(self, im: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(im, dtype=np.float32)).permute(2, 0, 1)
        h, w = t.shape[1:]
        ph, pw = max(0, self.patch - h), max(0, self.patch - w)
        if ph or pw:
            t = F.pad(t[None], (0, pw, 0, ph), mode="replicate")[0]
        return t

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    def sample(self, n: int) -> torch.Tensor:
        out = []
        for _ in range(n):
            im = self.images[self._randint(len(self.images))]
            h, w = im.shape[1:]
            y, x = self._randint(h - self.patch + 1), self._randint(w - self.patch + 1)
            p = im[:, y:y + self.patch, x:x + self.patch]
            out.append(self._augment(p) if self.augment else p)
        return torch.stack(out).contiguous()

    def _augment(self, t: torch.Tensor) -> torch.Tensor:
        """Random horizontal flip, vertical flip and transpose of the last two axes, in that
        order (three draws); subclasses apply it to a whole image or a stack of patches."""
        if self._randint(2):
            t = t.flip(-1)
        if self._randint(2):
            t = t.flip(-2)
        if self._randint(2):
            t = t.transpose(-1, -2)
        return t


class TrainingProbe:
    """Watches one fit from outside: ``callback(n, desc)`` runs after the n-th optimisation
    step (counted over every stage of the fit) whenever n is in ``at``.

    It reaches the loop through a context variable rather than through ``Method.fit``'s
    signature, so the adapter interface stays ``fit(data, budget)`` and any method that
    trains through :func:`run_training` (third-party ones included) can be probed.
    """

    def __init__(self, at: Sequence[int], callback: Callable[[int, str], None]):
        self.at = frozenset(int(a) for a in at)
        self.callback = callback
        self.steps = 0

    def after_step(self, desc: str) -> None:
        self.steps += 1
        if self.steps in self.at:
            self.callback(self.steps, desc)


_PROBE: ContextVar[TrainingProbe | None] = ContextVar("unpaired_sr_bench_training_probe", default=None)


@contextmanager
def probing(probe: TrainingProbe) -> Iterator[TrainingProbe]:
    """Attach ``probe`` to every :func:`run_training` loop run inside the ``with`` block."""
    token = _PROBE.set(probe)
    try:
        yield probe
    finally:
        _PROBE.reset(token)


def run_training(step: Callable[[int], Mapping[str, float]], budget: Budget, *, desc: str,
                 log_every: int = 10, report: FitReport | None = None) -> FitReport:
    """Call ``step(i)`` for ``budget.iterations``, with a progress bar."""
    report = report or FitReport()
    start = time.perf_counter()
    disable = os.environ.get("UNPAIRED_SR_BENCH_NO_PROGRESS") == "1"
    bar = tqdm(range(budget.iterations), desc=desc, leave=False, disable=disable, dynamic_ncols=True)
    probe = _PROBE.get()
    for i in bar:
        faults.reached("fit-step")
        losses = {k: float(v) for k, v in step(i).items()}
        for k, v in losses.items():
            if not np.isfinite(v):
                raise BenchError(f"{desc}: loss {k} became {v} at iteration {i}; lower the learning rate or check the data")
        if i % log_every == 0 or i == budget.iterations - 1:
            report.history.append({"iteration": i, **losses})
            bar.set_postfix({k: f"{v:.4g}" for k, v in list(losses.items())[:3]})
        report.iterations = i + 1
        if probe is not None:
            probe.after_step(desc)
    bar.close()
    report.wall_s += time.perf_counter() - start
    return report


def to_batch(images: Sequence[np.ndarray]) -> torch.Tensor:
    """Same-size H x W x 3 arrays -> N x 3 x H x W float32 tensor."""
    return torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in images])).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------------
# perceptual losses: real VGG when its ImageNet weights are present, else a stand-in
# ---------------------------------------------------------------------------
VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's ImageNet VGG19
#: torchvision names hub files "<name>-<first 8 hex of sha256>.pth" and publishes only that prefix
VGG19_SHA256_PREFIX = "dcbb9e9d"
EXPECTED_PREFIX = {VGG19_FILE: VGG19_SHA256_PREFIX}


def find_weight_file(name: str, weights_dir: str | Path | None = None) -> Path | None:
    """Look for ``name`` in ``weights_dir``, then the torch hub checkpoint cache."""
    candidates = []
    if weights_dir:
        candidates.append(Path(weights_dir) / name)
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / name)
    for c in candidates:
        if c.is_file():
            return c
    return None


def resolve_weight_file(name: str, weights_dir: str | Path | None, *, verify: bool = True) -> tuple[Path | None, str]:
    """(path or None, sha256 or 'absent') of an ImageNet weight file; a file whose digest
    does not match the published prefix is refused with one line (``verify=False`` is for
    tests with stand-in files only)."""
    path = find_weight_file(name, weights_dir)
    if path is None:
        return None, "absent"
    from .adapter import sha256_file

    digest = sha256_file(path)
    expected = EXPECTED_PREFIX.get(name)
    if verify and expected and not digest.startswith(expected):
        raise BenchError(f"{path} has sha256 {digest[:16]}..., but {name} must start with {expected}: it is not "
                         f"torchvision's file; replace it with the original or remove it from --weights-dir")
    return path, digest


def _laplacian_pyramid(x: torch.Tensor, levels: int = 3) -> list[torch.Tensor]:
    out = []
    for _ in range(levels):
        down = F.avg_pool2d(x, 2, ceil_mode=True)
        up = F.interpolate(down, size=x.shape[-2:], mode="bilinear", align_corners=False)
        out.append(x - up)
        x = down
    out.append(x)
    return out


class PerceptualLoss(nn.Module):
    """VGG19 feature L1 (conv5_4 before activation, ESRGAN-style) with ImageNet weights,
    or, where those cannot be had and the profile allows it, a Laplacian-pyramid L1
    stand-in (``self.stand_in`` names it so tables can say so).

    The ``paper`` profile requires the real weights and raises naming the file.
    """

    def __init__(self, profile: str, weights_dir: str | Path | None = None, layer: int = 35, *,
                 verify: bool = True):
        super().__init__()
        path, _ = resolve_weight_file(VGG19_FILE, weights_dir, verify=verify)
        self.stand_in: str | None = None
        self.vgg: nn.Module | None = None
        #: the file the loss was built from (None: the stand-in)
        self.weights_path: Path | None = path
        if path is not None:
            from torchvision.models import vgg as tv_vgg

            from .adapter import load_state_dict_checked, load_torch_file

            # only the convolutional trunk is used: build and load just that (the full file's
            # classifier holds 120M parameters nobody reads here)
            features = tv_vgg.make_layers(tv_vgg.cfgs["E"])
            state = load_torch_file(path)
            trunk = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")} \
                if isinstance(state, Mapping) else state
            load_state_dict_checked(features, trunk, what=f"VGG19 weights {path}")
            self.vgg = features[:layer].eval()
            for p in self.vgg.parameters():
                p.requires_grad = False
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        elif profile == "paper":
            raise BenchError(
                f"the paper profile needs ImageNet VGG19 weights {VGG19_FILE}: place it in --weights-dir "
                f"or {Path(torch.hub.get_dir()) / 'checkpoints'}"
            )
        else:
            self.stand_in = f"Laplacian-pyramid L1 (stand-in: {VGG19_FILE} not available offline)"

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """Inputs in [0,1]."""
        if self.vgg is not None:
            return F.l1_loss(self.vgg((sr - self.mean) / self.std), self.vgg((hr - self.mean) / self.std))
        return sum(F.l1_loss(a, b) for a, b in zip(_laplacian_pyramid(sr), _laplacian_pyramid(hr)))


def adam(params, lr: float, betas=(0.9, 0.999)) -> torch.optim.Optimizer:
    return torch.optim.Adam([p for p in params if p.requires_grad], lr=lr, betas=betas)


def gan_loss(pred: torch.Tensor, real: bool, kind: str = "vanilla") -> torch.Tensor:
    """Discriminator/generator objective: 'vanilla' (BCE with logits) or 'lsgan'."""
    target = torch.ones_like(pred) if real else torch.zeros_like(pred)
    if kind == "lsgan":
        return F.mse_loss(pred, target)
    return F.binary_cross_entropy_with_logits(pred, target)


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad = flag


class PairedPatchSampler:
    """Aligned (LR, HR) patches from pre-made pairs: LR patch p <-> HR patch p*scale.

    For the supervised baselines only (``edsr-bicubic`` on bicubic pairs of the source
    pool, ``oracle`` on pairs made with the true target degradation).
    """

    def __init__(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], patch: int, scale: int,
                 generator: torch.Generator):
        if not pairs:
            raise BenchError("no training pairs: the pool is empty")
        self.patch, self.scale, self.generator = patch, scale, generator
        self.pairs = []
        for lr, hr in pairs:
            lr_t = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32)).permute(2, 0, 1)
            hr_t = torch.from_numpy(np.ascontiguousarray(hr, dtype=np.float32)).permute(2, 0, 1)
            if lr_t.shape[1] < patch or lr_t.shape[2] < patch:
                raise BenchError(f"training LR image {tuple(lr_t.shape[1:])} is smaller than the patch {patch}")
            self.pairs.append((lr_t, hr_t[:, : lr_t.shape[1] * scale, : lr_t.shape[2] * scale]))

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        lrs, hrs = [], []
        p, s = self.patch, self.scale
        for _ in range(n):
            lr, hr = self.pairs[self._randint(len(self.pairs))]
            y, x = self._randint(lr.shape[1] - p + 1), self._randint(lr.shape[2] - p + 1)
            a, b = lr[:, y:y + p, x:x + p], hr[:, y * s:(y + p) * s, x * s:(x + p) * s]
            if self._randint(2):
                a, b = a.flip(-1), b.flip(-1)
            if self._randint(2):
                a, b = a.flip(-2), b.flip(-2)
            if self._randint(2):
                a, b = a.transpose(-1, -2), b.transpose(-1, -2)
            lrs.append(a)
            hrs.append(b)
        return torch.stack(lrs).contiguous(), torch.stack(hrs).contiguous()
