"""FCA (Ji, Tao, Cao, Tai, Lu, Wang, Li, Huang; AAAI 2021, arXiv 2012.10102, "Frequency
Consistent Adaptation for Real World Super Resolution"). No public code or weights:
implemented from the paper's text and figures.

Idea: bicubic LR images have a different *frequency density* (the spectrum's fall-off)
from real LR images. FCA learns a per-image blur kernel applied after bicubic
downsampling so that generated LR images have the target domain's frequency density,
then trains an SR network on the resulting pairs.

Paper module / equation -> code (``[inferred]`` = not stated in the paper, our choice):

- Adaptation Generator G (Fig. 2): ``AdaptationGenerator``. G(x) = bicubic_down(x) (*) k(x),
  the kernel convolved with the bicubically downsampled image (``apply_kernels``;
  reflect padding [inferred]).
- Kernel Estimator (Fig. 2): ``KernelEstimator``: 1x3 / 3x1 / 3x3 conv branches
  concatenated to 48 channels -> conv k3 n64 s2 -> 5 "Residual Ds Blocks" -> 2 residual
  blocks -> MaxPool -> conv k1 n64 -> ReLU -> conv k1 n1. [inferred]: the Residual Ds
  Block is the ESRGAN residual dense block (``_esrgan.ResidualDenseBlock``), the residual
  block is the DSGAN PReLU block (``_blocks.PReLUResBlock``), the max-pool is adaptive to the kernel
  size (13 x 13), and the kernel is a softmax over its taps (non-negative, sums to 1),
  its logits predicted as a residual over a centred Gaussian prior (sigma 0.5 LR px) with
  the last conv zero-initialised, so G starts at the bicubic assumption.
- Frequency Density Comparator (Fig. 3): ``FDCEncoder`` + ``FrequencyDensityComparator``:
  C(a, b) = E(a) - E(b), E = three conv branches -> 3 x [conv k3 n64 s2, BatchNorm,
  LeakyReLU] -> conv k3 n1 (a 16 x 16 map for a 128 x 128 patch). [inferred]: the
  three input branches are 1x3 / 3x1 / 3x3 as in the kernel estimator (the figure
  prints "1*3conv" three times).
- FDC training (``fdc_terms``): x^D = x downscaled by 1/s and cropped, x^U = x upscaled
  by s and cropped, x' = another patch of the same domain. [inferred] targets
  C(x^D, x) = +1 (denser), C(x', x) = 0, C(x^U, x) = -1 with an L1 loss; curriculum:
  s goes linearly from 3.5 to 1.2 over the FDC stage (the paper names the scales 3.5
  and 1.2 and a curriculum). The FDC is trained first, then frozen [inferred].
- L_FDC (Fig. 2; ``adaptation_terms``): L_FDC(G(x), x) + L_FDC(G(x), x^U) + L_FDC(G(x), x^D),
  i.e. |C(G(x), x)|, |C(G(x), x^U) - 1|, |C(G(x), x^D) + 1| [targets inferred from the
  antisymmetry above; s ~ U[1.2, 3.5] inferred], weight 1.
- Wavelet Discriminator L_WD (Fig. 2; ``adaptation_terms``): Haar detail bands
  (``_unpaired.wavelet_high``) into a four-layer LSGAN discriminator (``_unpaired.FSDNet``
  via ``_unpaired.FSDiscriminator('wavelet')``), weight 0.001.
- SR model: "easy-implemented CNN SR models" trained on (G(x), x) pairs. [inferred]:
  ESRGAN (``_esrgan.RRDBNet``) with ESRGAN's losses (L1 0.01, VGG 1, RaGAN 0.005 with
  ``_esrgan.VGGDiscriminator``: FSSR's SR stage, ``_esrgan.esrgan_fs_step``), generated
  LR rounded to 8 bit.

Benchmark mapping [inferred]: the paper adapts downsampled real images toward
themselves; here G degrades ``TrainingData.source_hr`` and the frequency-density
references x, x', x^U, x^D are patches of ``TrainingData.target_lr``. Optimiser Adam
1e-4, betas (0.5, 0.999) for G/FDC/WD, (0.9, 0.999) for the SR stage; stage lengths
are [inferred].
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.adapter import (MethodContext, Budget, CheckpointError, FitReport, MethodInfo, TrainingData, load_state_dict_checked,
                           load_torch_file, register_method)
from bench import ddp
from bench.ddp import parallel
from bench.degrade.resize import imresize_torch
from bench.resume import TrainState
from bench.train import adam, PatchSampler, PerceptualLoss, run_stages, set_requires_grad, Stage, torch_generator

from ._blocks import PReLUResBlock, seeded
from ._esrgan import (ESRGAN, ESRGAN_FS_W, ResidualDenseBlock, RRDBNet, VGGDiscriminator, esrgan_fs_step, ragan_d,
                      ragan_g)
from ._stages import descend, split_iterations
from ._unpaired import DegradationSRMethod, FSDiscriminator, arch_with


class InceptionStem(nn.Module):
    """1x3, 3x1 and 3x3 conv branches, concatenated (48 channels at full width)."""

    def __init__(self, branch: int):
        super().__init__()
        self.b13 = nn.Conv2d(3, branch, (1, 3), padding=(0, 1))
        self.b31 = nn.Conv2d(3, branch, (3, 1), padding=(1, 0))
        self.b33 = nn.Conv2d(3, branch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.b13(x), self.b31(x), self.b33(x)), 1)


class KernelEstimator(nn.Module):
    """HR image -> one k x k blur kernel per image (softmax-normalised)."""

    def __init__(self, width: int = 64, branch: int = 16, n_dense: int = 5, n_res: int = 2, kernel_size: int = 13,
                 prior_sigma: float = 0.5):
        super().__init__()
        self.kernel_size = kernel_size
        self.stem = InceptionStem(branch)
        self.down = nn.Conv2d(3 * branch, width, 3, stride=2, padding=1)
        self.dense = nn.Sequential(*[ResidualDenseBlock(width, max(1, width // 2)) for _ in range(n_dense)])
        self.res = nn.Sequential(*[PReLUResBlock(width) for _ in range(n_res)])
        self.pool = nn.AdaptiveMaxPool2d(kernel_size)
        self.head = nn.Sequential(nn.Conv2d(width, width, 1), nn.ReLU(), nn.Conv2d(width, 1, 1))
        # [inferred] the logits are predicted on top of a centred narrow Gaussian (sigma
        # prior_sigma LR px; 0.5 is close to the identity) and the last conv starts at
        # zero, so G starts at the bicubic assumption instead of a near-uniform 13x13 box
        # blur (20.6 dB deterministic fidelity on `mixed`, where the bicubic assumption
        # scores 29.5)
        r = torch.arange(kernel_size, dtype=torch.float32) - kernel_size // 2
        prior = -(r[:, None] ** 2 + r[None, :] ** 2) / (2 * prior_sigma ** 2)
        self.register_buffer("prior", prior.view(1, 1, kernel_size, kernel_size), persistent=False)
        nn.init.zeros_(self.head[2].weight)
        nn.init.zeros_(self.head[2].bias)

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.pool(self.res(self.dense(self.down(self.stem(hr)))))) + self.prior
        n, k = hr.shape[0], self.kernel_size
        return torch.softmax(logits.view(n, -1), dim=1).view(n, 1, k, k)


def apply_kernels(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Blur each image of ``x`` (N x C x h x w) with its own kernel (N x 1 x k x k), reflect padding."""
    n, c, h, w = x.shape
    k = kernels.shape[-1]
    pad = k // 2
    mode = "reflect" if min(h, w) > pad else "replicate"
    xp = F.pad(x, (pad, pad, pad, pad), mode=mode).reshape(1, n * c, h + 2 * pad, w + 2 * pad)
    weight = kernels.repeat_interleave(c, dim=0)  # (N*C, 1, k, k)
    return F.conv2d(xp, weight, groups=n * c).view(n, c, h, w)


class AdaptationGenerator(nn.Module):
    """G(x) = bicubic_down(x) (*) k(x): the learned HR -> LR degradation."""

    def __init__(self, scale: int, estimator: KernelEstimator):
        super().__init__()
        self.scale = scale
        self.estimator = estimator

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        lr = imresize_torch(hr, 1.0 / self.scale).clamp(0, 1)
        return apply_kernels(lr, self.estimator(hr))


class FDCEncoder(nn.Module):
    """Branches -> 3 x (conv k3 s2, BN, LeakyReLU) -> conv k3 n1: a frequency-density map at 1/8 size."""

    def __init__(self, width: int = 64, branch: int = 16):
        super().__init__()
        self.stem = InceptionStem(branch)
        layers: list[nn.Module] = []
        prev = 3 * branch
        for _ in range(3):
            layers += [nn.Conv2d(prev, width, 3, 2, 1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2)]
            prev = width
        layers.append(nn.Conv2d(width, 1, 3, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.stem(x))


class FrequencyDensityComparator(nn.Module):
    """C(a, b) = E(a) - E(b) with one shared encoder: > 0 where ``a`` is denser in high frequencies."""

    def __init__(self, width: int = 64, branch: int = 16):
        super().__init__()
        self.encoder = FDCEncoder(width, branch)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.encoder(a) - self.encoder(b)


def rescaled_patches(images: Sequence[torch.Tensor], n: int, patch: int, scale: float,
                     generator: torch.Generator) -> torch.Tensor:
    """``n`` random patches resampled by ``scale`` (< 1 shrinks: x^D; > 1 enlarges: x^U).

    A crop of side round(patch / scale) is taken (replicate-padded if the image is
    smaller) and MATLAB-bicubic resized to ``patch`` x ``patch``.
    """
    side = max(1, int(round(patch / scale)))
    out = []
    for _ in range(n):
        im = images[int(torch.randint(len(images), (1,), generator=generator))]
        h, w = im.shape[-2:]
        if h < side or w < side:
            im = F.pad(im[None], (0, max(0, side - w), 0, max(0, side - h)), mode="replicate")[0]
            h, w = im.shape[-2:]
        y = int(torch.randint(h - side + 1, (1,), generator=generator))
        x = int(torch.randint(w - side + 1, (1,), generator=generator))
        out.append(im[:, y:y + side, x:x + side])
    crops = torch.stack(out)
    return imresize_torch(crops, out_shape=(patch, patch)).clamp(0, 1)


def curriculum_scale(i: int, total: int, start: float = 3.5, end: float = 1.2) -> float:
    """The FDC's scale gap at iteration ``i``: from easy (3.5) to hard (1.2), linearly [inferred]."""
    return start + (end - start) * (i / max(1, total - 1))


@dataclass(frozen=True)
class FCAArch:
    est_width: int = 64
    est_branch: int = 16
    est_dense: int = 5
    est_res: int = 2
    kernel_size: int = 13
    fdc_width: int = 64
    fdc_branch: int = 16
    wd_width: int = 64
    nf: int = 64
    nb: int = 23
    gc: int = 32
    vgg_d_width: int = 64
    #: adaptation-stage LR patch = this x the budget's SR LR patch (512 HR / 128 LR in the paper)
    deg_patch_factor: int = 4
    #: width (LR px) of the centred Gaussian the kernel logits start from [inferred]
    kernel_prior_sigma: float = 0.5


FCA_ARCH = {
    "paper": FCAArch(),
    "quick": FCAArch(est_width=8, est_branch=4, est_dense=2, est_res=1, fdc_width=16, fdc_branch=4, wd_width=8,
                     nf=24, nb=2, gc=12, vgg_d_width=8, deg_patch_factor=2),
    "smoke": FCAArch(est_width=4, est_branch=2, est_dense=1, est_res=1, kernel_size=5, fdc_width=4, fdc_branch=2,
                     wd_width=4, nf=8, nb=1, gc=4, vgg_d_width=4, deg_patch_factor=2),
}
#: FDC pre-training, adaptation, SR [inferred proportions; the paper gives no iteration counts].
FCA_STAGE_FRACTIONS = (0.1, 0.4, 0.5)
FCA_W = {"fdc/down": 1.0, "fdc/self": 1.0, "fdc/up": 1.0, "wd/g": 0.001, **ESRGAN_FS_W}
FCA_SCALES = (1.2, 3.5)


@register_method
class FCA(DegradationSRMethod):
    #: bump on any change that changes outputs or fits (see Method.code_version)
    code_version = "1"
    """Frequency Consistent Adaptation: learned kernel after bicubic, FDC + wavelet GAN, ESRGAN on the pairs."""

    info = MethodInfo(
        name="fca",
        init_from="scratch (no official training code released)",
        title="Frequency Consistent Adaptation for Real World Super Resolution",
        citation="X. Ji, G. Tao, Y. Cao, Y. Tai, T. Lu, C. Wang, J. Li, F. Huang. Frequency Consistent Adaptation "
                 "for Real World Super Resolution. AAAI 2021 (arXiv 2012.10102).",
        family="unpaired",
        objective="perceptual",  # ESRGAN losses: L1 0.01, VGG 1, RaGAN 0.005
        scales=(4,),
        code_url="",
        checkpoints=(),
        gaps=(
            "No official code or checkpoints: implemented from the paper; every detail the paper leaves open is "
            "marked [inferred] in methods/fca.py (FDC targets and curriculum, kernel normalisation and size, "
            "Residual Ds Block, SR losses, stage lengths).",
            "No reported numbers are in ../shared/reference/paper_numbers.csv for FCA, so there is no "
            "paper-vs-reproduced row yet.",
            "The paper adapts real images toward themselves; the benchmark degrades clean source HR toward the "
            "target LR domain.",
        ),
        notes=(
            "Inference = the SR network (ESRGAN RRDBNet, ESRGAN-FS key names) on the LR input; "
            "degrade() = bicubic x1/4 then the per-image learned kernel.",
            "Data in the paper: NTIRE 2020 Real-World SR (track 1 synthetic corruption, track 2 DPED iPhone) "
            "and AIM 2019-style source/target splits (from the project brief; the full paper text was not "
            "available offline to confirm the list).",
            "The adaptation generator is deterministic: degrade() has no noise to switch off.",
            "Checkpoint format (ours, no release exists): one file with 'generator' and 'sr' state dicts.",
        ),
    )
    budgets = {
        "smoke": Budget(iterations=6, batch_size=2, patch_size=8),
        "quick": Budget(iterations=1150, batch_size=4, patch_size=16, lr=1e-4),
        "paper": Budget(iterations=120000, batch_size=16, patch_size=32, lr=1e-4),
    }
    LOSS_OWNERS = {"fdc/pos": "fdc", "fdc/zero": "fdc", "fdc/neg": "fdc",
                   "fdc/down": "generator", "fdc/self": "generator", "fdc/up": "generator", "wd/g": "generator",
                   "wd/d": "wd", "sr/pix": "sr", "sr/fea": "sr", "sr/gan": "sr", "sr/d": "sr_d"}

    def __init__(self, scale: int, context: MethodContext | None = None, *, profile: str | None = None,
                 device: str | torch.device | None = None,
                 weights_dir: str | Path | None = None, **arch):
        super().__init__(scale, context, profile=profile, device=device)
        profile = self.profile
        self.arch = arch_with(FCA_ARCH[profile], arch, "fca")
        self.weights_dir = weights_dir if weights_dir is not None else self.context.weights_dir
        a = self.arch
        self.generator = seeded(self.init_seed(0), lambda: AdaptationGenerator(scale, KernelEstimator(
            a.est_width, a.est_branch, a.est_dense, a.est_res, a.kernel_size, a.kernel_prior_sigma))).to(self.device)
        self.sr = seeded(self.init_seed(1), lambda: RRDBNet(3, 3, a.nf, a.nb, a.gc, keys=ESRGAN)).to(self.device)
        self._train: dict[str, nn.Module] = {}

    # -- inference -------------------------------------------------------
    def network(self) -> nn.Module:
        return self.sr

    def degrader(self) -> nn.Module:
        return self.generator

    @torch.no_grad()
    def kernels(self, hr: torch.Tensor) -> torch.Tensor:
        """The estimated LR-level blur kernel of each HR image (N x 1 x k x k)."""
        self.generator.eval()
        return self.generator.estimator(hr.to(self.device, torch.float32))

    # -- checkpoints -----------------------------------------------------
    def load_checkpoint(self, path: str | Path) -> None:
        obj = load_torch_file(path)
        if not isinstance(obj, Mapping) or not {"generator", "sr"} <= set(obj):
            found = sorted(obj)[:6] if isinstance(obj, Mapping) else type(obj).__name__
            raise CheckpointError(f"fca checkpoint {path} must be a dict with 'generator' and 'sr' state dicts "
                                  f"(as save_checkpoint writes; FCA has no official release); found {found}")
        load_state_dict_checked(self.generator, obj["generator"], what=f"fca checkpoint {path} ['generator']")
        load_state_dict_checked(self.sr, obj["sr"], what=f"fca checkpoint {path} ['sr']")

    def save_checkpoint(self, path: str | Path) -> None:
        torch.save({"generator": self.generator.state_dict(), "sr": self.sr.state_dict()}, path)

    # -- training --------------------------------------------------------
    def build_training_modules(self, seed: int) -> dict[str, nn.Module]:
        a = self.arch
        return {
            "fdc": seeded(seed + 11, lambda: FrequencyDensityComparator(a.fdc_width, a.fdc_branch)),
            "wd": seeded(seed + 12, lambda: FSDiscriminator("wavelet", width=a.wd_width, norm="batch")),
            "sr_d": seeded(seed + 13, lambda: VGGDiscriminator(3, a.vgg_d_width)),
            "perceptual": PerceptualLoss(self.profile, self.weights_dir, verify=self.context.verify_weights),
        }

    def trainables(self) -> dict[str, nn.Module]:
        t = self._training_modules(0)
        return {"generator": self.generator, "fdc": t["fdc"], "wd": t["wd"], "sr": self.sr, "sr_d": t["sr_d"]}

    def fdc_terms(self, x: torch.Tensor, x_other: torch.Tensor, x_down: torch.Tensor,
                  x_up: torch.Tensor, fdc: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """FDC training: C(x^D, x) -> +1, C(x', x) -> 0, C(x^U, x) -> -1 (L1) [targets inferred]
        (``fdc``: its data-parallel wrapper in a multi-rank fit)."""
        fdc = fdc or self._training_modules(0)["fdc"]
        return {
            "fdc/pos": (fdc(x_down, x) - 1).abs().mean(),
            "fdc/zero": fdc(x_other, x).abs().mean(),
            "fdc/neg": (fdc(x_up, x) + 1).abs().mean(),
        }

    def adaptation_terms(self, fake: torch.Tensor, x: torch.Tensor, x_down: torch.Tensor,
                         x_up: torch.Tensor, wd: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """L_FDC(G(x), x), L_FDC(G(x), x^U), L_FDC(G(x), x^D) and the LSGAN wavelet terms
        (``wd``: the wavelet discriminator's data-parallel wrapper for its own loss; the
        generator's terms go through the bare frozen FDC and the bare discriminator)."""
        t = self._training_modules(0)
        fdc, bare = t["fdc"], t["wd"]
        wd = wd or bare
        return {
            "fdc/self": fdc(fake, x).abs().mean(),
            "fdc/up": (fdc(fake, x_up) - 1).abs().mean(),
            "fdc/down": (fdc(fake, x_down) + 1).abs().mean(),
            "wd/g": ((bare(fake) - 1) ** 2).mean(),
            "wd/d": 0.5 * (((wd(x) - 1) ** 2).mean() + (wd(fake.detach()) ** 2).mean()),
        }

    def make_pairs(self, hr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.generator.eval()
            return torch.round(self.generator(hr).clamp(0, 1) * 255.0) / 255.0

    def sr_terms(self, lr: torch.Tensor, hr: torch.Tensor, sr: nn.Module | None = None,
                 d: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """ESRGAN: L1, VGG feature L1, RaGAN on SR vs HR (``sr``/``d``: data-parallel wrappers
        for the networks' own losses; the generator's RaGAN term goes through the bare
        discriminator, see esrgan_fs_step)."""
        t = self._training_modules(0)
        out = (sr or self.sr)(lr)
        bare = t["sr_d"]
        d = d or bare
        real_logits = d(hr)
        return {
            "sr/pix": F.l1_loss(out, hr),
            "sr/fea": t["perceptual"](out, hr),
            "sr/gan": ragan_g(real_logits.detach(), bare(out)),
            "sr/d": ragan_d(real_logits, d(out.detach())),
        }

    def loss_terms(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every term on ``batch`` = {'hr', 'target_lr'}; x', x^D, x^U are resampled target patches."""
        hr, target = batch["hr"].to(self.device), batch["target_lr"].to(self.device)
        g = torch_generator(0, "fca", "loss-terms")
        pool = list(target)
        p = target.shape[-1]
        x_other = target.roll(1, 0)  # another patch of the same domain
        x_down = rescaled_patches(pool, target.shape[0], p, 1 / 2.0, g)
        x_up = rescaled_patches(pool, target.shape[0], p, 2.0, g)
        t = self._training_modules(0)
        t["fdc"].train()
        terms = self.fdc_terms(target, x_other, x_down, x_up)
        self.generator.train()
        fake = self.generator(hr)
        terms.update(self.adaptation_terms(fake, F.interpolate(target, size=fake.shape[-2:]),
                                           F.interpolate(x_down, size=fake.shape[-2:]),
                                           F.interpolate(x_up, size=fake.shape[-2:])))
        terms.update(self.sr_terms(self.make_pairs(hr), hr))
        return terms

    def fit(self, data: TrainingData, budget: Budget) -> FitReport:
        t, report = self.begin_fit(data)
        n_fdc, n_adapt, n_sr = split_iterations(budget.iterations, FCA_STAGE_FRACTIONS)
        s, p, bs = self.scale, budget.patch_size, budget.batch_size
        p_deg = self.arch.deg_patch_factor * p
        targets = [torch.from_numpy(np.ascontiguousarray(im, dtype=np.float32)).permute(2, 0, 1).to(self.device)
                   for im in data.target_lr]
        rng = torch_generator(data.seed, "fca", "resample")
        fdc, wd = t["fdc"], t["wd"]

        def resampled(scale: float) -> torch.Tensor:
            # drawn for the step's whole batch, then this rank's slice: N ranks see what one process sees
            return ddp.shard(rescaled_patches(targets, bs, p_deg, scale, rng))

        # Stage 1: FDC on target LR, scale curriculum 3.5 -> 1.2.
        opt = adam(fdc.parameters(), 1e-4, (0.5, 0.999))
        # Stage 2: adaptation generator against the frozen FDC and the wavelet discriminator.
        hr_pool = PatchSampler(data.source_hr, s * p_deg, torch_generator(data.seed, "fca", "adapt-hr"))
        opt_g = adam(self.generator.parameters(), 1e-4, (0.5, 0.999))
        opt_d = adam(wd.parameters(), 1e-4, (0.5, 0.999))
        lo, hi = FCA_SCALES
        # Stage 3: ESRGAN on the adapted pairs [inferred recipe: FSSR's SR stage].
        sr_pool = PatchSampler(data.source_hr, s * p, torch_generator(data.seed, "fca", "sr-hr"))
        state = TrainState(generator=self.generator, sr=self.sr, fdc=fdc, wd=wd, sr_d=t["sr_d"], fdc_opt=opt,
                           adapt_opt_g=opt_g, adapt_opt_d=opt_d, hr_pool=hr_pool, sr_pool=sr_pool, resample=rng)
        fdc_ddp, gen_ddp, wd_ddp = parallel(fdc), parallel(self.generator), parallel(wd)  # DDP under torchrun

        def fdc_step(i: int) -> dict[str, float]:
            fdc.train()
            sc = curriculum_scale(i, n_fdc, FCA_SCALES[1], FCA_SCALES[0])
            x, x_other = resampled(1.0), resampled(1.0)
            terms = self.fdc_terms(x, x_other, resampled(1 / sc), resampled(sc), fdc_ddp)
            opt.zero_grad()
            sum(terms.values()).backward()
            opt.step()
            return {**{k: v.item() for k, v in terms.items()}, "fdc/scale": sc}

        def adapt_step(i: int) -> dict[str, float]:
            fdc.eval()
            set_requires_grad(fdc, False)
            self.generator.train()
            wd.train()
            hr = hr_pool.sample(bs).to(self.device)
            sc = lo + (hi - lo) * float(torch.rand((), generator=rng))
            x = resampled(1.0)
            terms = self.adaptation_terms(gen_ddp(hr), x, resampled(1 / sc), resampled(sc), wd_ddp)
            descend(opt_g, sum(FCA_W[k] * terms[k] for k in ("fdc/self", "fdc/up", "fdc/down", "wd/g")),
                    self.generator)
            descend(opt_d, terms["wd/d"], wd)
            return {k: v.item() for k, v in terms.items()}

        def sr_batch() -> tuple[torch.Tensor, torch.Tensor]:
            hr = sr_pool.sample(bs).to(self.device)
            return self.make_pairs(hr), hr

        sr_step = esrgan_fs_step(self.sr, t["sr_d"], budget.lr, n_sr, sr_batch, self.sr_terms, state)
        stages = [Stage("FDC", fdc_step, n_fdc), Stage("adaptation", adapt_step, n_adapt), Stage("SR", sr_step, n_sr)]
        report = run_stages(stages, budget, desc=f"fit fca x{self.scale}", state=state, report=report)
        self.sr.eval()
        self.generator.eval()
        report.notes.append(f"FDC {n_fdc} it, adaptation {n_adapt} it (LR patch {p_deg}), SR {n_sr} it (LR patch {p})")
        return report

    def extra_fingerprint(self) -> str:
        return repr(self.arch)
