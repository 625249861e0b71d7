"""CRL-SR (Zhang, Lu, Zhan, Yu, arXiv 2107.00708, 2021): blind SR via contrastive
representation learning. No public code: implemented from the paper's description.

Source and its limits. Only the abstract and the opening of the introduction could be
read here (ar5iv 2107.00708v1); the method section, equations, network sizes and
training recipe were not available. What the abstract states:

[stated] S1. Two parts: *contrastive decoupling encoding* (CDE) and *contrastive
    feature refinement* (CFR).
[stated] S2. CDE "extracts resolution-invariant embedding and discards resolution-variant
    embedding under the guidance of a bidirectional contrastive loss".
[stated] S3. CFR "generates lost or corrupted high-frequency details under the guidance
    of a conditional contrastive loss".
[stated] S4. Targets multi-modal, spatially variant, unknown degradations; trained on
    synthetic data (blind, no degradation estimation).

How each is implemented (everything not in S1-S4 is [inferred] and can be swapped):

- CDE encoder, S2 -> :class:`DecouplingEncoder` (``net.encoder``): LR -> per-pixel
  content embedding z_L on the LR grid. [inferred] A twin :class:`HREncoder` (training
  only) maps the HR image to the same grid (pixel-unshuffle by s) -> z_H. What LR and HR
  share at a location is the resolution-invariant content; what only the LR holds (blur,
  noise) is resolution-variant and is what the loss teaches z_L to drop.
- Bidirectional contrastive loss, S2 -> :func:`bidirectional_contrastive`.
  [inferred] Patch-wise InfoNCE (CUT/PatchNCE style, temperature 0.07) on projected,
  L2-normalised features at M sampled locations: LR->HR (query z_L at location i,
  positive z_H at i, negatives z_H at the other sampled locations of the image) plus
  HR->LR (roles swapped), averaged. Per-location pairs keep it valid for spatially
  variant degradation (S4).
- SR reconstruction -> ``net.body`` (EDSR residual blocks on z_L) + ``net.upsample``.
  [inferred] sizes.
- CFR, S3 -> ``net.refine``: residual blocks on the upsampled features at HR resolution
  that add the high-frequency residual before ``net.tail``. [inferred] placement.
- Conditional contrastive loss, S3 -> :func:`conditional_contrastive`. [inferred] The
  SR output is embedded by the HR encoder + projection (frozen for this term), query =
  SR feature at location i, positive = HR feature at i, negatives = HR features at the
  other sampled locations *and* the feature of the bicubically upsampled LR input at i:
  the negative is conditioned on the input, which pushes the refined output away from
  the blurry/noisy reading of its own input. (A VGG feature space, as contrastive
  regularisation in dehazing uses, is the obvious alternative; a learned space needs no
  ImageNet weights.)
- Total objective -> :meth:`CRLSR.loss_terms`: L1(SR, HR) + 0.1 L_bi + 0.05 L_cc
  [inferred weights], joint training from iteration 0 [inferred: no stated stages].
- Training degradations, S4 -> :meth:`CRLSR.degrade`. [inferred] Multi-modal: per
  image isotropic or anisotropic Gaussian blur (DASR-Wang ranges), MATLAB bicubic
  downsampling, AWGN sigma ~ U[0, 25]; spatially variant: for half the images two such
  degradations are blended with a random linear-ramp mask.

The inference network (``CRLSRNet``) is encoder -> body -> upsample -> refine -> tail,
on [0,1] with a DIV2K mean shift; the HR encoder and projection heads are training
only and are not saved.

Data parallel: the training degradation draws per image and per subset of the batch
from one generator, so every rank degrades the whole step's batch (all ranks' patches
gathered in rank order) as one process does, and keeps its own slice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.adapter import (MethodContext, BenchError, Budget, FitReport, Method, MethodInfo, TrainingData, load_state_dict_checked,
                           load_torch_file, register_method)
from bench.ddp import gather, parallel, shard, world
from bench.resume import TrainState
from bench.train import PatchSampler, adam, run_training, set_requires_grad, torch_generator

from ._blocks import MeanShift, ResBlock, Upsampler, default_conv

TEMPERATURE = 0.07  # [inferred] the usual InfoNCE temperature (MoCo, CUT)


@dataclass(frozen=True)
class CRLArch:
    """Widths and depths; all [inferred] (the paper's sizes were not available)."""

    n_feats: int = 64
    n_enc: int = 4       # residual blocks per decoupling encoder
    n_body: int = 16     # residual blocks of the reconstruction body
    n_refine: int = 2    # residual blocks of the feature refinement (HR resolution)
    proj: int = 128      # projection width for the contrastive losses
    n_samples: int = 64  # sampled locations per image for the contrastive losses


ARCH = {
    "smoke": CRLArch(n_feats=16, n_enc=1, n_body=1, n_refine=1, proj=16, n_samples=16),
    "quick": CRLArch(n_feats=32, n_enc=2, n_body=4, n_refine=1, proj=32, n_samples=32),
    "paper": CRLArch(),
}


# ---------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------
def _res_stack(n_feats: int, n_blocks: int) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(n_feats) for _ in range(n_blocks)], default_conv(n_feats, n_feats, 3))


class DecouplingEncoder(nn.Module):
    """CDE encoder: LR (mean-shifted) -> resolution-invariant content embedding z_L."""

    def __init__(self, arch: CRLArch):
        super().__init__()
        self.head = default_conv(3, arch.n_feats, 3)
        self.body = _res_stack(arch.n_feats, arch.n_enc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        return self.body(h) + h


class HREncoder(nn.Module):
    """Training-only twin of the CDE encoder for HR-size images: pixel-unshuffle by the
    scale so that z_H lies on the LR grid, location for location with z_L."""

    def __init__(self, scale: int, arch: CRLArch):
        super().__init__()
        self.scale = scale
        self.head = default_conv(3 * scale * scale, arch.n_feats, 3)
        self.body = _res_stack(arch.n_feats, arch.n_enc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(F.pixel_unshuffle(x, self.scale))
        return self.body(h) + h


class Projection(nn.Module):
    """Per-location 2-layer MLP (1x1 convs) onto the unit sphere."""

    def __init__(self, n_feats: int, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(n_feats, n_feats, 1), nn.ReLU(True), nn.Conv2d(n_feats, dim, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(z), dim=1)


class CRLSRNet(nn.Module):
    """Inference network on [0,1]: encoder -> body -> upsample -> refine (CFR) -> tail."""

    def __init__(self, scale: int, arch: CRLArch):
        super().__init__()
        self.sub_mean = MeanShift(1.0)
        self.encoder = DecouplingEncoder(arch)
        self.body = _res_stack(arch.n_feats, arch.n_body)
        self.upsample = Upsampler(scale, arch.n_feats)
        self.refine = _res_stack(arch.n_feats, arch.n_refine)
        self.tail = default_conv(arch.n_feats, 3, 3)
        self.add_mean = MeanShift(1.0, sign=1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.sub_mean(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        u = self.upsample(self.body(z) + z)
        return self.add_mean(self.tail(self.refine(u) + u))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class ContrastiveHeads(nn.Module):
    """Training-only modules: the HR encoder and the two projection heads."""

    def __init__(self, scale: int, arch: CRLArch):
        super().__init__()
        self.sub_mean = MeanShift(1.0)
        self.encoder_hr = HREncoder(scale, arch)
        self.proj_lr = Projection(arch.n_feats, arch.proj)
        self.proj_hr = Projection(arch.n_feats, arch.proj)

    def embed_hr(self, img: torch.Tensor) -> torch.Tensor:
        """HR-size image in [0,1] -> projected features on the LR grid."""
        return self.proj_hr(self.encoder_hr(self.sub_mean(img)))


class TrainedPass(nn.Module):
    """The forward pass of everything CRL-SR's loss trains: (z_L, SR, projected z_L,
    projected z_H). One module, because DistributedDataParallel wraps a module's
    ``forward`` and both the network and the heads learn from this pass (the frozen
    CFR pass goes through the bare heads)."""

    def __init__(self, net: CRLSRNet, heads: ContrastiveHeads):
        super().__init__()
        self.net, self.heads = net, heads

    def forward(self, lr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z_lr = self.net.encode(lr)
        return z_lr, self.net.decode(z_lr), self.heads.proj_lr(z_lr), self.heads.embed_hr(hr)


# ---------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------
def sample_locations(h: int, w: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """n distinct flat indices into an h x w grid (all of them if the grid is smaller)."""
    return torch.randperm(h * w, generator=generator)[: min(n, h * w)]


def _gather(f: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """N x C x h x w features -> N x M x C at the flat locations ``idx``."""
    return f.flatten(2)[:, :, idx.to(f.device)].transpose(1, 2)


def patch_nce(q: torch.Tensor, k: torch.Tensor, extra_neg: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE per image: q[:, i] against k[:, i] (positive) and k[:, j != i] (negatives),
    plus ``extra_neg[:, i]`` as one more negative for q[:, i] when given. N x M x D inputs."""
    logits = torch.bmm(q, k.transpose(1, 2))  # N, M, M: diagonal = positives
    if extra_neg is not None:
        logits = torch.cat([logits, (q * extra_neg).sum(-1, keepdim=True)], dim=2)
    n, m = q.shape[:2]
    labels = torch.arange(m, device=q.device).repeat(n)
    return F.cross_entropy(logits.reshape(n * m, -1) / TEMPERATURE, labels)


def bidirectional_contrastive(p_lr: torch.Tensor, p_hr: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """L_bi [inferred form]: LR->HR and HR->LR patch InfoNCE on projected z_L, z_H."""
    q, k = _gather(p_lr, idx), _gather(p_hr, idx)
    return 0.5 * (patch_nce(q, k) + patch_nce(k, q))


def conditional_contrastive(p_sr: torch.Tensor, p_hr: torch.Tensor, p_cond: torch.Tensor,
                            idx: torch.Tensor) -> torch.Tensor:
    """L_cc [inferred form]: SR feature vs HR positive, other HR locations and the
    input-conditioned negative (upsampled LR feature at the same location)."""
    return patch_nce(_gather(p_sr, idx), _gather(p_hr, idx).detach(), _gather(p_cond, idx).detach())


# ---------------------------------------------------------------------------
# the adapter
# ---------------------------------------------------------------------------
@register_method
class CRLSR(Method):
    #: bump on any change that changes outputs or fits (see Method.code_version)
    code_version = "1"
    info = MethodInfo(
        name="crl-sr",
        init_from="scratch (no official training code released)",
        title="Blind Image Super-Resolution via Contrastive Representation Learning",
        citation="Zhang, Lu, Zhan, Yu. arXiv 2107.00708, 2021",
        family="blind-synthetic",
        home_suites=("aniso",),
        scales=(2, 3, 4),
        code_url="",
        gaps=(
            "No public code or weights; only the abstract could be read. Architecture sizes, the exact form and "
            "weights of the bidirectional and conditional contrastive losses, the feature space of the conditional "
            "loss, and the training degradations/recipe are our inference (see the module docstring); numbers "
            "are not expected to match the paper's.",
        ),
        notes=(
            "Contrastive decoupling encoding: patch-wise LR<->HR InfoNCE on a learned HR twin encoder.",
            "Contrastive feature refinement: SR vs HR positive, input-conditioned negative, in the HR encoder's space.",
            "No degradation representation: CRL-SR discards the resolution-variant part by design.",
        ),
    )

    budgets = {
        "smoke": Budget(iterations=3, batch_size=2, patch_size=16, lr=1e-4),
        "quick": Budget(iterations=380, batch_size=8, patch_size=24, lr=2e-4),
        "paper": Budget(iterations=500_000, batch_size=32, patch_size=48, lr=1e-4),  # [inferred]
    }
    w_bi = 0.1          # [inferred]
    w_cc = 0.05         # [inferred]
    noise_range = (0.0, 25.0)  # [inferred] AWGN on 0..255
    sv_fraction = 0.5   # [inferred] share of spatially variant training images

    def __init__(self, scale: int, context: MethodContext | None = None, *, profile: str | None = None,
                 device: str | torch.device | None = None, **arch: int):
        super().__init__(scale, context, profile=profile, device=device)
        profile = self.profile
        unknown = set(arch) - set(CRLArch.__dataclass_fields__)
        if unknown:
            raise BenchError(f"crl-sr: unknown architecture options {sorted(unknown)}; "
                             f"use {', '.join(CRLArch.__dataclass_fields__)}")
        self.arch = replace(ARCH[profile], **arch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.init_seed())  # deterministic initial weights without touching the global RNG
            self.net = CRLSRNet(scale, self.arch).to(self.device)
            self.heads = ContrastiveHeads(scale, self.arch).to(self.device)
        self.net.eval()

    # -- interface -------------------------------------------------------
    def network(self) -> nn.Module:
        return self.net

    def extra_fingerprint(self) -> str:
        a = self.arch
        return (f"f{a.n_feats}-e{a.n_enc}-b{a.n_body}-r{a.n_refine}-p{a.proj}-m{a.n_samples}"
                f"-w{self.w_bi:g},{self.w_cc:g}")

    @torch.no_grad()
    def forward_unclamped(self, lr: torch.Tensor) -> torch.Tensor:
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise BenchError(f"crl-sr: expected N x 3 x h x w input, got {tuple(lr.shape)}")
        self.net.eval()
        return self.net(lr.to(self.device, torch.float32)).cpu()

    @torch.no_grad()
    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        return self.forward_unclamped(lr).clamp_(0, 1)

    def load_checkpoint(self, path: str | Path) -> None:
        load_state_dict_checked(self.net, load_torch_file(path), what=f"crl-sr checkpoint {path}")
        self.net.eval()

    def save_checkpoint(self, path: str | Path) -> None:
        torch.save(self.net.state_dict(), path)  # inference network only; the heads are training state

    # -- training --------------------------------------------------------
    def degrade(self, hr: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Multi-modal, partly spatially variant synthetic LR for N x 3 x H x W HR [inferred]."""
        from bench.degrade.ops_torch import random_blind_degrade

        n = hr.shape[0]

        def one_draw() -> torch.Tensor:
            iso = torch.rand(n, generator=generator) < 0.5
            lr = torch.empty(n, 3, hr.shape[2] // self.scale, hr.shape[3] // self.scale)
            for mask, kind in ((iso, "iso"), (~iso, "aniso")):
                if mask.any():
                    lr[mask] = random_blind_degrade(hr[mask], self.scale, kind=kind, noise_range=self.noise_range,
                                                    generator=generator)[0]
            return lr

        a, b = one_draw(), one_draw()
        h, w = a.shape[-2:]
        # a linear ramp at a random angle and offset; images not chosen as spatially variant get mask 1
        angle = torch.rand(n, generator=generator) * 2 * math.pi
        offset = torch.rand(n, generator=generator) - 0.5
        width = 0.05 + 0.45 * torch.rand(n, generator=generator)
        ys = torch.linspace(-0.5, 0.5, h).view(1, h, 1)
        xs = torch.linspace(-0.5, 0.5, w).view(1, 1, w)
        proj = xs * torch.cos(angle).view(-1, 1, 1) + ys * torch.sin(angle).view(-1, 1, 1)
        mask = ((proj - offset.view(-1, 1, 1)) / width.view(-1, 1, 1) + 0.5).clamp(0, 1)
        sv = (torch.rand(n, generator=generator) < self.sv_fraction).view(-1, 1, 1)
        mask = torch.where(sv, mask, torch.ones_like(mask))[:, None]
        return mask * a + (1 - mask) * b

    def loss_terms(self, lr: torch.Tensor, hr: torch.Tensor, generator: torch.Generator,
                   trained: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """L1, bidirectional contrastive (CDE) and conditional contrastive (CFR) terms
        (``trained``: the data-parallel wrapper of :class:`TrainedPass` in a multi-rank fit)."""
        z_lr, sr, p_lr, p_hr = (trained or TrainedPass(self.net, self.heads))(lr, hr)
        h, w = z_lr.shape[-2:]
        idx = sample_locations(h, w, self.arch.n_samples, generator)
        terms = {"l1": F.l1_loss(sr, hr), "bidirectional": bidirectional_contrastive(p_lr, p_hr, idx)}
        # CFR: the embedding space is a fixed yardstick for this term, so only the SR network learns from it
        set_requires_grad(self.heads, False)
        try:
            lr_up = F.interpolate(lr, size=hr.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
            p_sr = self.heads.embed_hr(sr)
            with torch.no_grad():
                p_cond = self.heads.embed_hr(lr_up)
            idx_cc = sample_locations(h, w, self.arch.n_samples, generator)
            terms["conditional"] = conditional_contrastive(p_sr, p_hr, p_cond, idx_cc)
        finally:
            set_requires_grad(self.heads, True)
        return terms

    def fit(self, data: TrainingData, budget: Budget) -> FitReport:
        sampler = PatchSampler(data.source_hr, budget.patch_size * self.scale,
                               torch_generator(data.seed, self.info.name, "patches"))
        gen = torch_generator(data.seed, self.info.name, "degrade")
        gen_loc = torch_generator(data.seed, self.info.name, "locations")
        params = list(self.net.parameters()) + list(self.heads.parameters())
        opt = adam(params, budget.lr)
        quarter = max(1, budget.iterations // 4)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 ** (i // quarter))  # [inferred]
        state = TrainState(net=self.net, heads=self.heads, opt=opt, sched=sched, sampler=sampler, gen=gen,
                           gen_loc=gen_loc)
        trained = parallel(TrainedPass(self.net, self.heads))  # DDP wrapper under torchrun
        self.net.train()
        self.heads.train()

        def step(i: int) -> dict[str, float]:
            hr = sampler.sample(budget.batch_size)  # this rank's share
            if world().size > 1:  # degrade the whole batch (gathered on the fit's device: NCCL) as one process does
                lr = shard(self.degrade(gather(hr.to(self.device)).cpu(), gen))
            else:
                lr = self.degrade(hr, gen)
            terms = self.loss_terms(lr.to(self.device), hr.to(self.device), gen_loc, trained)
            loss = terms["l1"] + self.w_bi * terms["bidirectional"] + self.w_cc * terms["conditional"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            return {k: v.item() for k, v in terms.items()}

        try:
            report = run_training(step, budget, desc=f"fit crl-sr x{self.scale}", state=state)
        finally:
            self.net.eval()
        report.notes.append("CRL-SR re-implemented from the abstract only; losses, sizes and recipe inferred")
        return report
