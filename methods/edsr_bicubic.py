"""EDSR-baseline trained on bicubic pairs of the source pool: the non-blind reference.

Every blind method should beat it on degradations other than bicubic; it shares its
network and training loop with ``oracle`` (methods/oracle.py), which differs only in
how its training pairs are made.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from bench.adapter import Budget, FitReport, Method, MethodInfo, TrainingData, register_method, MethodContext
from bench.ddp import parallel
from bench.resume import TrainState
from bench.train import PairedPatchSampler, adam, run_training, torch_generator

from ._blocks import EDSR

#: (n_resblocks, n_feats) per profile; paper = EDSR-baseline (Lim et al. 2017).
ARCH = {"smoke": (2, 16), "quick": (8, 48), "paper": (16, 64)}


class EDSRTrained(Method):
    """Shared body of the supervised EDSR baselines; subclasses choose the pairs."""
    #: bump on any change that changes outputs or fits (see Method.code_version)
    code_version = "1"

    budgets = {
        "smoke": Budget(iterations=4, batch_size=2, patch_size=16),
        "quick": Budget(iterations=250, batch_size=16, patch_size=24, lr=5e-4),
        "paper": Budget(iterations=300_000, batch_size=16, patch_size=48, lr=1e-4),
    }
    #: noisy suites: how many LR versions (noise draws) of each source image to make
    pair_draws = 4

    def __init__(self, scale: int, context: MethodContext | None = None, *, profile: str | None = None,
                 device: str | torch.device | None = None, n_resblocks: int | None = None,
                 n_feats: int | None = None):
        super().__init__(scale, context, profile=profile, device=device)
        profile = self.profile
        nb, nf = ARCH[profile]
        self.n_resblocks, self.n_feats = n_resblocks or nb, n_feats or nf
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # deterministic initial weights, independent of global RNG use elsewhere
            self.net = EDSR(scale, self.n_resblocks, self.n_feats, rgb_range=1.0).to(self.device)

    def network(self):
        return self.net

    def extra_fingerprint(self) -> str:
        return f"nb{self.n_resblocks}-nf{self.n_feats}"

    def training_suite(self, data: TrainingData):
        raise NotImplementedError

    def make_pairs(self, data: TrainingData) -> list[tuple]:
        """(HR pool, LR pool) couples, made lazily: a real set's own train pairs where the
        data has them (the oracle on RealSR/DRealSR), else the source pool mod-cropped and
        degraded by :meth:`training_suite`, one LR pool per draw (noise suites draw several)."""
        from bench.fitdata import mod_cropped, synthesized

        if data.pairs is not None:
            return [data.pairs]
        suite = self.training_suite(data)
        hr = mod_cropped(data.source_hr, self.scale)
        store = self.context.cache_dir and Path(self.context.cache_dir) / "derived"
        return [(hr, synthesized(hr, suite, self.scale, data.seed, draw=d, store=store or None))
                for d in range(self.pair_draws)]

    def fit(self, data: TrainingData, budget: Budget) -> FitReport:
        sampler = PairedPatchSampler(self.make_pairs(data), budget.patch_size, self.scale,
                                     torch_generator(data.seed, self.info.name))
        opt = adam(self.net.parameters(), budget.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, budget.iterations))
        state = TrainState(net=self.net, opt=opt, sched=sched, sampler=sampler)
        net = parallel(self.net)  # DistributedDataParallel under torchrun, the network itself otherwise
        self.net.train()

        def step(i: int) -> dict[str, float]:
            lr, hr = sampler.sample(budget.batch_size)
            loss = F.l1_loss(net(lr.to(self.device)), hr.to(self.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            return {"l1": loss.item()}

        report = run_training(step, budget, desc=f"fit {self.info.name} x{self.scale}", state=state)
        self.net.eval()
        return report

    @torch.no_grad()
    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        return self.net(lr.to(self.device, torch.float32)).clamp(0, 1).cpu()

    def save_checkpoint(self, path: str | Path) -> None:
        torch.save(self.net.state_dict(), path)


@register_method
class EDSRBicubic(EDSRTrained):
    info = MethodInfo(
        name="edsr-bicubic",
        title="EDSR-baseline trained on bicubic pairs",
        citation="Lim et al., Enhanced Deep Residual Networks for Single Image Super-Resolution, CVPRW 2017",
        family="baseline",
        scales=(2, 3, 4),
        code_url="https://github.com/sanghyun-son/EDSR-PyTorch",
        notes=("Trained here on bicubic (MATLAB) pairs of the source HR pool; the non-blind reference.",),
    )
    pair_draws = 1  # bicubic is deterministic: one LR per image

    def training_suite(self, data: TrainingData):
        from bench.degrade import get_suite

        return get_suite("bicubic")
