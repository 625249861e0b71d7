"""EDSR-baseline trained on bicubic pairs of the source pool: the non-blind reference.

Every blind method should beat it on degradations other than bicubic; it shares its
network and training loop with ``oracle`` (methods/oracle.py), which differs only in
how its training pairs are made.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from bench.adapter import Budget, FitReport, Method, MethodInfo, TrainingData, register_method, MethodContext
from bench.warmstart import WarmStart, train_on_pairs, warm_budget

from ._blocks import EDSR

#: (n_resblocks, n_feats) per profile; paper = EDSR-baseline (Lim et al. 2017).
ARCH = {"smoke": (2, 16), "quick": (8, 48), "paper": (16, 64)}


class EDSRTrained(Method):
    """Shared body of the supervised EDSR baselines; subclasses choose the pairs."""
    #: bump on any change that changes outputs or fits (see Method.code_version)
    code_version = "2"  # 2: starts from the shared warm start (edsr-bicubic: is it)

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
            torch.manual_seed(self.init_seed())  # deterministic initial weights, independent of global RNG use elsewhere
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
        from bench.fitdata import degraded_pairs

        if data.pairs is not None:
            return [data.pairs]
        return degraded_pairs(data.source_hr, self.training_suite(data), self.scale, data.seed, self.pair_draws,
                              self.context.cache_dir)

    def warm_start(self) -> WarmStart:
        """The shared EDSR-baseline of this width trained on bicubic pairs of the source pool:
        ``edsr-bicubic`` is that network itself; the ``oracle`` starts from it."""
        nb, nf, scale = self.n_resblocks, self.n_feats, self.scale
        return WarmStart(f"EDSR-baseline nb{nb} nf{nf}", 1.0, warm_budget(self.context.profile),
                         seed=self.init_seed(), make=lambda: EDSR(scale, nb, nf, rgb_range=1.0))

    def fit(self, data: TrainingData, budget: Budget) -> FitReport:
        return train_on_pairs(self.net, self.make_pairs(data), self.scale, budget, seed=data.seed,
                              stream=self.info.name, device=self.device, desc=f"fit {self.info.name} x{self.scale}")

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
        init_from="scratch: it is the shared EDSR warm start of its width (bench/warmstart.py)",
    )
    pair_draws = 1  # bicubic is deterministic: one LR per image
    #: its training is the warm start's (bench.warmstart.WARM_BUDGETS); ``--iterations N``
    #: trains N more iterations of the same loop from there
    budgets = {p: dataclasses.replace(b, iterations=0) for p, b in EDSRTrained.budgets.items()}

    def training_suite(self, data: TrainingData):
        from bench.degrade import get_suite

        return get_suite("bicubic")
