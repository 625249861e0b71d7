"""Warm starts: the PSNR-trained networks official recipes start their SR networks from.

Several recipes do not train their SR network from random weights: FSSR's ESRGAN-FS
starts from ``RRDB_ESRGAN_x4.pth``, MSSR's two SR nets from BasicSR's PSNR RRDBNet, PDM's
EDSR from ``edsr_baseline_x4``, DAA's generator from ``IMDN_x4.pth``. Where no such file
is given (``--init``), the harness trains the same network the same way those files were
made: L1 on bicubic pairs of the source pool (no target LR, no test image), once per
:meth:`WarmStart.key`, and every method whose network has that key starts from the one
file (``Method.load_init``, the path ``--init`` takes). The key holds the architecture
and width (``arch``), the value range, the scale, the budget and the source pool's
content, so the quick EDSRs of ``edsr-bicubic`` (48 features, [0,1]) and ``pdm`` (its own
width, 0..255) are two warm starts, and ``edsr-bicubic``/``oracle`` share one.

A fit seed (``--fit-seeds``) moves the warm start too: its initial weights (``seed``
is the method's ``init_seed``) and its patch draws (the fit's data seed); the source pool
itself is the run's. So every seed of a method is a whole recipe run, start included.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .adapter import PROFILE_SPECS, Budget, FitReport, TrainingData, scaled_budget
from .ddp import parallel
from .resume import TrainState
from .train import PairedPatchSampler, adam, run_training, torch_generator

#: bump when the warm-start trainer changes what it learns (loss, schedule, pairs)
WARM_CODE_VERSION = "1"

#: the warm start's training per profile: the quick row is edsr-bicubic's quick recipe
#: (cosine-annealed Adam, L1), the paper row EDSR-baseline's (Lim et al.: 300k x 16 x 48)
WARM_BUDGETS = {
    "smoke": Budget(iterations=4, batch_size=2, patch_size=16, lr=5e-4),
    "quick": Budget(iterations=250, batch_size=16, patch_size=24, lr=5e-4),
    "paper": Budget(iterations=300_000, batch_size=16, patch_size=48, lr=1e-4),
}


@dataclass(frozen=True)
class WarmStart:
    """One starting network: what it is (``arch``, e.g. ``"EDSR-baseline nb8 nf48"``;
    every width and depth that changes its weights), the pixel range it computes in
    (``value_range``: 1.0, or 255.0 for EDSR-PyTorch-style networks that scale [0,1]
    inputs to 0..255 inside, with their mean shift), how long it trains, the seed of its
    initial weights (``Method.init_seed``: part of the key, since two methods may draw one
    architecture from different seeds) and ``make`` (not part of the key: a fresh network
    that takes and returns [0,1] images and whose ``state_dict`` the method's ``load_init``
    accepts; :meth:`build` draws its weights from ``seed``)."""

    arch: str
    value_range: float
    budget: Budget
    seed: int
    make: Callable[[], nn.Module] = field(compare=False, repr=False)

    def build(self) -> nn.Module:
        with torch.random.fork_rng(devices=[]):  # no change to the global RNG
            torch.manual_seed(self.seed)
            return self.make()

    def key(self, scale: int, data: TrainingData, switches: Iterable[str] = ()) -> str:
        """Everything the trained network depends on: ``data``'s source pool content and seed,
        and the training switches (precision, memory format) the fit runs with."""
        return hashlib.sha256("|".join([
            self.arch, f"{self.value_range:g}", f"x{scale}", self.budget.key(), f"init{self.seed}", f"seed{data.seed}",
            f"{len(data.source_hr)}:{data.source_hr.manifest()}", WARM_CODE_VERSION, *switches,
        ]).encode()).hexdigest()

    def label(self) -> str:
        return f"{self.arch}, {'0..255' if self.value_range == 255 else '[0,1]'}"


def warm_budget(profile: str) -> Budget:
    """The warm-start budget of a profile (``gpu``: the quick one with its iterations factor)."""
    spec = PROFILE_SPECS[profile]
    return scaled_budget(WARM_BUDGETS[spec.base], spec.iterations_factor)


def bicubic_pairs(data: TrainingData, scale: int, cache_dir: str | None) -> list[tuple]:
    """(HR, bicubic LR) of the source pool only: the one pair set a warm start sees."""
    from .degrade import get_suite
    from .fitdata import degraded_pairs

    return degraded_pairs(data.source_hr, get_suite("bicubic"), scale, data.seed, 1, cache_dir)


def train_on_pairs(net: nn.Module, pairs: list[tuple], scale: int, budget: Budget, *, seed: int, stream: str,
                   device: torch.device, desc: str) -> FitReport:
    """L1 on aligned (LR, HR) patches in [0,1], Adam with cosine annealing: the supervised
    loop of the warm starts and of the EDSR baselines."""
    sampler = PairedPatchSampler(pairs, budget.patch_size, scale, torch_generator(seed, stream))
    opt = adam(net.parameters(), budget.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, budget.iterations))
    state = TrainState(net=net, opt=opt, sched=sched, sampler=sampler)
    wrapped = parallel(net)  # DistributedDataParallel under torchrun, the network itself otherwise
    net.train()

    def step(i: int) -> dict[str, float]:
        lr, hr = sampler.sample(budget.batch_size)
        loss = F.l1_loss(wrapped(lr.to(device)), hr.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        return {"l1": loss.item()}

    try:
        return run_training(step, budget, desc=desc, state=state)
    finally:
        net.eval()


@dataclass(frozen=True)
class WarmFile:
    """A trained warm start in the cache: ``path`` is what ``load_init`` reads."""

    key: str
    path: Path
    about: dict

    def note(self, itself: bool = False) -> str:
        """The footnote: ``itself`` for a fit that trains no further (``edsr-bicubic``)."""
        a = self.about
        return (f"{'is' if itself else 'started from'} the shared warm start {a['label']} (L1 on bicubic pairs of "
                f"the source pool, {a['budget']}, {a['wall_s']:.0f}s, key {self.key[:12]}; trained once for every "
                "method with this key)")


def cached(folder: Path, key: str) -> WarmFile | None:
    path, about = folder / "net.pt", folder / "warm.json"
    if path.is_file() and about.is_file():
        return WarmFile(key, path, json.loads(about.read_text()))
    return None


def train_warm_start(warm: WarmStart, key: str, data: TrainingData, scale: int, folder: Path, *,
                     device: torch.device, cache_dir: str | None, main: bool = True) -> WarmFile:
    """Train ``warm`` on bicubic pairs of ``data``'s source pool and put it in ``folder``
    atomically (a kill leaves no warm start or a whole one). ``key``: the caller's
    :meth:`WarmStart.key` (with its training switches). ``main``: this process writes."""
    net = warm.build().to(device)
    t0 = time.perf_counter()
    report = train_on_pairs(net, bicubic_pairs(data, scale, cache_dir), scale, warm.budget, seed=data.seed,
                            stream=f"warm-start|{warm.arch}", device=device,
                            desc=f"warm start {warm.arch} x{scale}")
    about = {"label": warm.label(), "arch": warm.arch, "value_range": warm.value_range, "scale": scale,
             "budget": warm.budget.describe(), "iterations": report.iterations,
             "wall_s": time.perf_counter() - t0, "source": data.source_hr.name,
             "source_images": len(data.source_hr), "source_manifest": data.source_hr.manifest()}
    if main:
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, tmp / "net.pt")
        (tmp / "warm.json").write_text(json.dumps(about, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    return WarmFile(key, folder / "net.pt", about)
