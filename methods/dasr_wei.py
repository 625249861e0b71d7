"""DASR (Wei et al., CVPR 2021, "Unsupervised Real-world Image Super Resolution via
Domain-distance Aware Training"; official code ShuhangGu/DASR).

Two stages:

1. **DSN** (down-sampling network, ``dsn``): applied directly to HR, 8 PReLU residual
   blocks, two stride-2 conv+PReLU, conv to RGB, sigmoid. Trained like DSGAN:
   L1 between 5x5 low-passes (valid region) of its output and of MATLAB-bicubic(HR),
   perceptual term, and a GAN on the high-passed output against target-domain LR
   (``FSDiscriminator`` from _unpaired.py, InstanceNorm; high-pass 'avg_pool' by default,
   'gau' and 'wavelet' as options).
2. **Domain-distance maps**: the trained discriminator's sigmoid map on a generated LR,
   averaged over each pixel's 17 x 17 receptive field (``domain_distance_map``), then
   bilinearly resized to HR size. **SRN** (RRDB, old-arch ESRGAN names ``model.1.sub...``)
   is trained on half a batch of generated pairs with the distance-weighted L1, an L1
   on the Haar LL bands and a perceptual term, and on half a batch of real target LR
   with a GAN (weight 0.005) on the Haar detail bands of its SR output against clean HR.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from bench.adapter import (MethodContext, BenchError, Budget, CheckpointError, CheckpointInfo, FitReport, MethodInfo, TrainingData,
                           load_state_dict_checked, load_torch_file, register_method)
from bench.ddp import parallel
from bench.degrade.resize import imresize_torch
from bench.resume import TrainState
from bench.train import adam, gan_loss, PatchSampler, PerceptualLoss, run_stages, Stage, torch_generator

from ._blocks import seeded
from ._esrgan import ESRGAN, RRDB
from ._stages import descend, linear_decay, multistep, scaled_milestones, split_iterations
from ._unpaired import (FS_TYPES, DegradationSRMethod, DSGANGenerator, FilterLow, FSDiscriminator, arch_with,
                        fresh_training_dict, release_pair, truncate_uint8, wavelet_high, wavelet_low)


def dsn(scale: int, n_blocks: int = 8, n_feats: int = 64) -> DSGANGenerator:
    """The DSN (codes/DSN/model.py De_resnet): DSGAN's trunk at HR size, then one stride-2
    conv+PReLU per factor 2 (``down_sample``): HR -> LR at 1/4 (or 1/2)."""
    if scale not in (2, 4):
        raise BenchError(f"the DASR-Wei DSN downsamples x2 or x4, not x{scale}")
    return DSGANGenerator(n_blocks, n_feats, down=scale // 2)


# ---------------------------------------------------------------------------
# SRN: RRDBNet in the original ESRGAN "old-arch" flattened-Sequential layout
# ---------------------------------------------------------------------------
class ShortcutBlock(nn.Module):
    """``x + sub(x)``; ``sub`` = the RRDBs then the trunk conv (``model.1.sub.<nb>``)."""

    def __init__(self, sub: nn.Sequential):
        super().__init__()
        self.sub = sub

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sub(x)


class SRN(nn.Module):
    """ESRGAN x4, old-arch names: ``model.0`` fea conv, ``model.1`` shortcut trunk,
    ``model.2/5`` nearest x2, ``model.3/6`` up convs, ``model.8`` HR conv0, ``model.10`` HR conv1."""

    def __init__(self, nf: int = 64, nb: int = 23, gc: int = 32):
        super().__init__()
        trunk = nn.Sequential(*[RRDB(nf, gc, ESRGAN.rdb, wrapped=True) for _ in range(nb)], nn.Conv2d(nf, nf, 3, 1, 1))

        def lrelu() -> nn.Module:
            return nn.LeakyReLU(0.2, inplace=True)

        self.model = nn.Sequential(
            nn.Conv2d(3, nf, 3, 1, 1), ShortcutBlock(trunk),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(nf, nf, 3, 1, 1), lrelu(),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(nf, nf, 3, 1, 1), lrelu(),
            nn.Conv2d(nf, nf, 3, 1, 1), lrelu(), nn.Conv2d(nf, 3, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """The SRN's ``discriminator_patch``: pix2pix NLayerDiscriminator (4x4 convs, InstanceNorm,
    no bias before a norm), here on the 9 Haar detail channels, ``n_layers`` 2."""

    def __init__(self, in_ch: int = 9, ndf: int = 64, n_layers: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=False), nn.InstanceNorm2d(ndf * mult),
                       nn.LeakyReLU(0.2)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=False), nn.InstanceNorm2d(ndf * mult),
                   nn.LeakyReLU(0.2), nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def domain_distance_map(d_prob: torch.Tensor, receptive_field: int = 17) -> torch.Tensor:
    """Spread a discriminator's per-pixel map over each output's receptive field.

    The official ``getWeights`` adds every output value to the ``rf x rf`` window it
    sees (clipped at the border) and divides by the number of windows covering each
    pixel; with stride-1 layers that is a box mean over valid pixels. The FSD has four
    layers counted as 5x5 (the official also counts the final 1x1 conv as 5x5):
    rf = 1 + 4 * 4 = 17.
    """
    return F.avg_pool2d(d_prob, receptive_field, stride=1, padding=receptive_field // 2, count_include_pad=False)


# ---------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DASRWeiArch:
    dsn_blocks: int = 8
    dsn_feats: int = 64
    d_width: int = 64          # FSD discriminator: w, 2w, 4w
    fs_type: str = "avg_pool"  # DSN discriminator high-pass: avg_pool | gau | wavelet
    fs_kernel: int = 5
    srn_nf: int = 64
    srn_blocks: int = 23
    srn_gc: int = 32
    srn_d_width: int = 64      # SRN patch discriminator
    #: DSN LR patch = this x the budget's (SRN) LR patch: the AIM2019 launcher crops 256 HR
    #: (64 LR) for the DSN, the SRN json 128 HR (32 LR).
    deg_patch_factor: int = 2
    #: DSN Adam learning rate: 1e-4 in the official recipe. The quick profile's ~410 DSN
    #: steps leave a width-8 DSN untrained at 1e-4 (colour loss flat, deterministic
    #: fidelity 12.4 dB on `mixed`, results/reference/curves_h100/). At 1e-3 a DSN-only run
    #: reached 25.9 dB in 400 steps (how many steps quick gives the DSN: ``deg_share``).
    dsn_lr: float = 1e-4
    #: share of the budget's iterations spent on the DSN; None = the recipe's proportion
    #: (DASR_WEI_STAGE_FRACTIONS, 0.27). Quick raises it so the DSN runs 4x its proportional
    #: 412 steps while the SRN keeps its 1088: at 412 steps the DSN's deterministic
    #: fidelity was 17.4 dB on `aniso:k=5`, and the 4x curve passed the bicubic
    #: assumption's 29.5 dB by its first probe, 750 DSN steps (30.5; 32.8 at the end of its
    #: 1650). DSN steps cost about 19 ms on the 2-core reference CPU against 58 ms for an
    #: SRN step, so this adds about 23 s to the quick fit. With it the quick DSN scores
    #: 32.8 / 31.7 dB on `aniso:k=5` / `mixed` (results/reference/curves_cpu/).
    deg_share: float | None = None

    def stage_fractions(self) -> tuple[float, float]:
        return DASR_WEI_STAGE_FRACTIONS if self.deg_share is None else (self.deg_share, 1.0 - self.deg_share)


DASR_WEI_ARCH = {
    "paper": DASRWeiArch(),
    "quick": DASRWeiArch(dsn_blocks=2, dsn_feats=8, d_width=8, srn_nf=24, srn_blocks=2, srn_gc=12, srn_d_width=8,
                         deg_patch_factor=1, dsn_lr=1e-3, deg_share=0.6025),
    "smoke": DASRWeiArch(dsn_blocks=1, dsn_feats=8, d_width=4, srn_nf=8, srn_blocks=1, srn_gc=4, srn_d_width=4,
                         deg_patch_factor=1),
}
#: DSN: 400 epochs at batch 8 over the 2,650 AIM2019 source images ~ 132,500 iterations
#: (our estimate: train.py counts epochs); SRN: niter 350,000 (train_DASR_auto_reproduce_aim2019.json).
DASR_WEI_STAGE_FRACTIONS = (132500 / 482500, 350000 / 482500)
#: DSN (AIM2019 launcher: w_tex 0.006, w_col 1, w_per 0.01) and SRN (json) weights.
DASR_WEI_W = {"dsn/col": 1.0, "dsn/tex": 0.006, "dsn/per": 0.01,
              "srn/pix": 1.0, "srn/ll": 1.0, "srn/per": 1.0, "srn/gan": 0.005}
#: Keys of pytorch_wavelets' fixed Haar filter buffers in a 'wavelet' discriminator: constants.
_DWT_BUFFERS = ("DWT2.",)


@register_method
class DASRWei(DegradationSRMethod):
    #: bump on any change that changes outputs or fits (see Method.code_version)
    code_version = "1"
    """DASR (Wei et al.): DSN degradation, domain-distance maps, distance-weighted SRN training."""

    info = MethodInfo(
        name="dasr-wei",
        init_from=("SRN: from scratch in codes/SRN/options/train/train_DASR_auto_reproduce_aim2019.json (pretrain_model_G null); train_DASR.json points at the authors' unreleased premodel/12500_G.pth; DSN from scratch"),
        title="Unsupervised Real-world Image Super Resolution via Domain-distance Aware Training",
        citation="Y. Wei, S. Gu, Y. Li, R. Timofte, L. Jin, H. Song. Unsupervised Real-world Image Super "
                 "Resolution via Domain-distance Aware Training. CVPR 2021.",
        family="unpaired",
        objective="perceptual",  # SRN: distance-weighted L1 + perceptual + GAN
        scales=(4,),
        code_url="https://github.com/ShuhangGu/DASR",
        checkpoints=(
            CheckpointInfo("AIM_DeResnet_FSD.tar", "torch training dict (codes/DSN/train.py)",
                           "DSN: model_g_state_dict (block_input/res_blocks/down_sample/block_output, 668,238 "
                           "params); models_d_state_dict (FSD, 1,029,505 params; read for the domain-distance maps); "
                           "fs_type, fs_kernel_size, D_type; optimizer/scheduler states"),
            CheckpointInfo("AIM_DASR_TDSR_G.pth", "plain state dict",
                           "SRN RRDBNet, old-arch ESRGAN names model.0 / model.1.sub.N.RDBk.convM.0 / model.3 / "
                           "model.6 / model.8 / model.10 (16,697,987 params)"),
        ),
        gaps=(
            "RealSR-V3 Canon x4: the paper reports 26.782/0.7822/0.228 (PSNR/SSIM/LPIPS); a user running the "
            "released checkpoint got 25.79/0.7528/0.2656 (official issue 16). AIM2019 val: paper "
            "21.600/0.5640/0.336, released checkpoint 21.79/0.5731/0.3466.",
            "The DSN and SRN perceptual terms are LPIPS (AlexNet) in the official code; fit() uses "
            "bench.train.PerceptualLoss (VGG19 conv5_4 L1, or its offline stand-in).",
            "Domain-distance maps are computed per training patch, not once per whole image as "
            "create_dataset_modified.py does; border windows differ.",
            "The DSN iteration count of the paper recipe is our estimate (400 epochs x 2,650/8).",
        ),
        notes=(
            "Inference = SRN on the LR input; degrade() = DSN(HR), applied directly to HR (no bicubic pre-step).",
            "Data in the paper: AIM 2019 track 1, NTIRE 2020 track 1 (synthetic unknown corruption) and track 2 "
            "(DPED iPhone), RealSR (Canon/Nikon) and CameraSR.",
            "The DSN is deterministic: degrade() has no noise to switch off.",
        ),
    )
    budgets = {
        "smoke": Budget(iterations=4, batch_size=2, patch_size=8),
        "quick": Budget(iterations=2740, batch_size=4, patch_size=16, lr=1e-4),  # DSN 1651 + SRN 1089
        "paper": Budget(iterations=482500, batch_size=6, patch_size=32, lr=1e-4),
    }
    LOSS_OWNERS = {"dsn/col": "dsn", "dsn/tex": "dsn", "dsn/per": "dsn", "dsn/d": "dsn_d",
                   "srn/pix": "srn", "srn/ll": "srn", "srn/per": "srn", "srn/gan": "srn", "srn/d": "srn_d"}

    def __init__(self, scale: int, context: MethodContext | None = None, *, profile: str | None = None,
                 device: str | torch.device | None = None,
                 weights_dir: str | Path | None = None, **arch):
        super().__init__(scale, context, profile=profile, device=device)
        profile = self.profile
        self.arch = arch_with(DASR_WEI_ARCH[profile], arch, "dasr-wei")
        if self.arch.fs_type not in FS_TYPES:
            raise BenchError(f"dasr-wei: fs_type {self.arch.fs_type!r} unknown; choose one of {', '.join(FS_TYPES)}")
        self.weights_dir = weights_dir if weights_dir is not None else self.context.weights_dir
        a = self.arch
        self.dsn = seeded(self.init_seed(0), lambda: dsn(scale, a.dsn_blocks, a.dsn_feats)).to(self.device)
        self.dsn_d = seeded(self.init_seed(2), lambda: FSDiscriminator(a.fs_type, a.fs_kernel, a.d_width, "instance")).to(self.device)
        self.srn = seeded(self.init_seed(1), lambda: SRN(a.srn_nf, a.srn_blocks, a.srn_gc)).to(self.device)
        self._train: dict[str, nn.Module] = {}

    # -- inference -------------------------------------------------------
    def network(self) -> nn.Module:
        return self.srn

    def degrader(self) -> nn.Module:
        """degrade() = DSN(HR): sigmoid output, unclamped."""
        return self.dsn

    @torch.no_grad()
    def discriminator_prob(self, lr: torch.Tensor) -> torch.Tensor:
        """The DSN discriminator's sigmoid patch map (``D_out`` of create_dataset_modified.py)."""
        self.dsn_d.eval()
        return self.dsn_d.prob(lr.to(self.device, torch.float32))

    def distance_map(self, fake_lr: torch.Tensor) -> torch.Tensor:
        """Domain-distance map of generated LR at LR size (half size for the wavelet filter)."""
        return domain_distance_map(self.discriminator_prob(fake_lr))

    # -- checkpoints -----------------------------------------------------
    def load_checkpoint(self, path: str | Path) -> None:
        tar, pth = release_pair(path, "dasr-wei")
        obj = load_torch_file(tar)
        if not isinstance(obj, Mapping) or "model_g_state_dict" not in obj:
            raise CheckpointError(f"dasr-wei DSN checkpoint {tar} is not a codes/DSN/train.py dict with "
                                  "'model_g_state_dict'; pass the released .tar unchanged")
        load_state_dict_checked(self.dsn, obj["model_g_state_dict"], what=f"dasr-wei DSN checkpoint {tar}")
        if "models_d_state_dict" in obj:
            self._load_discriminator(obj, tar)
        srn_state = load_torch_file(pth)
        if not isinstance(srn_state, Mapping):
            raise CheckpointError(f"dasr-wei SRN checkpoint {pth} is not a state dict")
        load_state_dict_checked(self.srn, srn_state, what=f"dasr-wei SRN checkpoint {pth}")

    def _load_discriminator(self, obj: Mapping, tar: Path) -> None:
        """The FSD as the file describes it (fs_type, kernel size, Batch or Instance norm)."""
        if str(obj.get("D_type", "FSD")).lower() != "fsd":
            raise CheckpointError(f"dasr-wei {tar}: discriminator D_type {obj.get('D_type')!r} is not supported "
                                  "(only the released FSD)")
        fs_type = str(obj.get("fs_type", self.arch.fs_type)).lower()
        kernel = int(obj.get("fs_kernel_size", self.arch.fs_kernel))
        state = {k: v for k, v in obj["models_d_state_dict"].items() if not k.startswith(_DWT_BUFFERS)}
        norm = "batch" if "net.net.3.running_mean" in state else "instance"
        width = int(state["net.net.0.weight"].shape[0]) if "net.net.0.weight" in state else self.arch.d_width
        d = FSDiscriminator(fs_type, kernel, width, norm)
        load_state_dict_checked(d, state, what=f"dasr-wei DSN discriminator in {tar}")
        self.dsn_d = d.to(self.device)
        self.arch = dataclasses.replace(self.arch, fs_type=fs_type, fs_kernel=kernel, d_width=width)

    def save_checkpoint(self, path: str | Path) -> None:
        """A release-style folder: ``AIM_DeResnet_FSD.tar`` (train.py dict) and ``AIM_DASR_TDSR_G.pth``."""
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        extra = {"fs_type": self.arch.fs_type, "fs_kernel_size": self.arch.fs_kernel, "D_type": "FSD"}
        torch.save(fresh_training_dict(self.dsn, self.dsn_d, lr=1e-4, betas=(0.5, 0.999), epoch=0, iteration=0,
                                       extra=extra), p / "AIM_DeResnet_FSD.tar")
        torch.save(self.srn.state_dict(), p / "AIM_DASR_TDSR_G.pth")

    # -- training --------------------------------------------------------
    def build_training_modules(self, seed: int) -> dict[str, nn.Module]:
        a = self.arch
        col = None if a.fs_type == "wavelet" else FilterLow(a.fs_kernel, padding=False, gaussian=a.fs_type == "gau")
        t = {
            "srn_d": seeded(seed + 12, lambda: PatchDiscriminator(9, a.srn_d_width, 2)),
            "perceptual": PerceptualLoss(self.profile, self.weights_dir, verify=self.context.verify_weights),
        }
        if col is not None:
            t["col_filter"] = col
        return t

    def trainables(self) -> dict[str, nn.Module]:
        t = self._training_modules(0)
        return {"dsn": self.dsn, "dsn_d": self.dsn_d, "srn": self.srn, "srn_d": t["srn_d"]}

    def bicubic(self, hr: torch.Tensor) -> torch.Tensor:
        return imresize_torch(hr, 1.0 / self.scale).clamp(0, 1)

    def _colour(self, x: torch.Tensor) -> torch.Tensor:
        """The DSN colour loss filter: 5x5 low-pass, valid region (wavelet option: LL * 0.5)."""
        t = self._training_modules(0)
        return t["col_filter"](x) if "col_filter" in t else wavelet_low(x)

    def dsn_g_terms(self, hr: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """DSN generator terms (the GAN term through the bare discriminator: it trains the DSN only)."""
        bic = self.bicubic(hr)
        t = self._training_modules(0)
        return {
            "dsn/col": F.l1_loss(self._colour(fake), self._colour(bic)),
            "dsn/tex": gan_loss(self.dsn_d(fake), True),
            "dsn/per": t["perceptual"](fake, bic),
        }

    def dsn_d_term(self, fake: torch.Tensor, target_lr: torch.Tensor, d: nn.Module | None = None) -> torch.Tensor:
        """FSD loss: target LR real, DSN output fake (``d``: its data-parallel wrapper in a multi-rank fit)."""
        d = d or self.dsn_d
        return gan_loss(d(target_lr), True) + gan_loss(d(fake.detach()), False)

    def make_pairs(self, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Generated LR (saved as truncated uint8 PNG officially) and its distance weights at HR size."""
        with torch.no_grad():
            self.dsn.eval()
            fake = truncate_uint8(self.dsn(hr))
            weights = F.interpolate(self.distance_map(fake), size=hr.shape[-2:], mode="bilinear",
                                    align_corners=False)
        return fake, weights

    def srn_terms(self, fake_lr: torch.Tensor, weights: torch.Tensor, hr: torch.Tensor,
                  real_lr: torch.Tensor, hr_unpair: torch.Tensor, srn: nn.Module | None = None,
                  d: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """SRN: distance-weighted L1 + LL-band L1 + perceptual on generated pairs; GAN on the
        Haar detail bands of SR(real target LR) against those of unpaired clean HR
        (``srn``/``d``: data-parallel wrappers for the networks' own losses; the SRN's GAN
        term goes through the bare discriminator, see ``bench.ddp.parallel``)."""
        t = self._training_modules(0)
        sr = (srn or self.srn)(torch.cat([fake_lr, real_lr], 0))
        sr_src, sr_tgt = sr[: fake_lr.shape[0]], sr[fake_lr.shape[0]:]
        bare = t["srn_d"]
        d = d or bare
        return {
            "srn/pix": torch.mean(weights * (sr_src - hr).abs()),
            "srn/ll": F.l1_loss(wavelet_low(sr_src), wavelet_low(hr)),
            "srn/per": t["perceptual"](sr_src, hr),
            "srn/gan": gan_loss(bare(wavelet_high(sr_tgt)), True),
            "srn/d": (gan_loss(d(wavelet_high(hr_unpair)), True) + gan_loss(d(wavelet_high(sr_tgt.detach())), False)) / 2,
        }

    def loss_terms(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every loss term on ``batch`` = {'hr', 'target_lr', and for the SRN 'hr_unpair'}."""
        hr = batch["hr"].to(self.device)
        target = batch["target_lr"].to(self.device)
        self.dsn.train()
        fake = self.dsn(hr)
        terms = self.dsn_g_terms(hr, fake)
        terms["dsn/d"] = self.dsn_d_term(fake, F.interpolate(target, size=fake.shape[-2:]))
        fake_lr, weights = self.make_pairs(hr)
        real_lr = F.interpolate(target, size=fake_lr.shape[-2:])
        terms.update(self.srn_terms(fake_lr, weights, hr, real_lr, batch.get("hr_unpair", hr.flip(0)).to(self.device)))
        return terms

    def fit(self, data: TrainingData, budget: Budget) -> FitReport:
        t, report = self.begin_fit(data)
        self.dsn_d = seeded(data.seed + 11, lambda: FSDiscriminator(
            self.arch.fs_type, self.arch.fs_kernel, self.arch.d_width, "instance")).to(self.device)
        n_dsn, n_srn = split_iterations(budget.iterations, self.arch.stage_fractions())
        s, p = self.scale, budget.patch_size
        p_deg = self.arch.deg_patch_factor * p
        bs = budget.batch_size

        # Stage 1: DSN (Adam arch.dsn_lr, officially 1e-4, betas (0.5, 0.999); linear decay
        # over the last 150 of 400 epochs).
        hr_pool = PatchSampler(data.source_hr, s * p_deg, torch_generator(data.seed, "dasr-wei", "dsn-hr"))
        tgt_pool = PatchSampler(data.target_lr, p_deg, torch_generator(data.seed, "dasr-wei", "dsn-target"))
        opt_g = adam(self.dsn.parameters(), self.arch.dsn_lr, (0.5, 0.999))
        opt_d = adam(self.dsn_d.parameters(), self.arch.dsn_lr, (0.5, 0.999))
        sched = [torch.optim.lr_scheduler.LambdaLR(o, linear_decay(n_dsn, 150 / 400)) for o in (opt_g, opt_d)]
        dsn_net, dsn_d = parallel(self.dsn), parallel(self.dsn_d)  # DDP wrappers under torchrun

        def dsn_step(i: int) -> dict[str, float]:
            self.dsn.train()
            self.dsn_d.train()
            hr = hr_pool.sample(bs).to(self.device)
            target = tgt_pool.sample(bs).to(self.device)
            fake = dsn_net(hr)
            d_loss = self.dsn_d_term(fake, target, dsn_d)  # D first, as codes/DSN/train.py
            descend(opt_d, d_loss, self.dsn_d)
            terms = self.dsn_g_terms(hr, fake)
            descend(opt_g, sum(DASR_WEI_W[k] * terms[k] for k in ("dsn/col", "dsn/tex", "dsn/per")), self.dsn)
            for sc in sched:
                sc.step()
            return {**{k: v.item() for k, v in terms.items()}, "dsn/d": d_loss.item()}

        # Stage 2: SRN (Adam 1e-4 beta1 0.9, MultiStepLR [35k, 80k, 100k, 150k] of 350k, gamma 0.5).
        # Half of each batch is generated pairs, half real target LR (LRHR_wavelet_unpair..._EQ).
        n_src = max(1, bs // 2)
        n_tgt = max(1, bs - n_src)
        pair_pool = PatchSampler(data.source_hr, s * p, torch_generator(data.seed, "dasr-wei", "srn-hr"))
        unpair_pool = PatchSampler(data.source_hr, s * p, torch_generator(data.seed, "dasr-wei", "srn-hr-unpair"))
        real_pool = PatchSampler(data.target_lr, p, torch_generator(data.seed, "dasr-wei", "srn-real"))
        sd = t["srn_d"]
        opt_g2, opt_d2 = adam(self.srn.parameters(), budget.lr), adam(sd.parameters(), budget.lr)
        rule = multistep(scaled_milestones([35000, 80000, 100000, 150000], 350000, n_srn), 0.5)
        sched2 = [torch.optim.lr_scheduler.LambdaLR(o, rule) for o in (opt_g2, opt_d2)]
        state = TrainState(dsn=self.dsn, dsn_d=self.dsn_d, srn=self.srn, srn_d=sd, dsn_opt_g=opt_g, dsn_opt_d=opt_d,
                           dsn_sched_g=sched[0], dsn_sched_d=sched[1], srn_opt_g=opt_g2, srn_opt_d=opt_d2,
                           srn_sched_g=sched2[0], srn_sched_d=sched2[1], hr_pool=hr_pool, tgt_pool=tgt_pool,
                           pair_pool=pair_pool, unpair_pool=unpair_pool, real_pool=real_pool)
        srn_net, srn_d = parallel(self.srn), parallel(sd)

        def srn_step(i: int) -> dict[str, float]:
            hr = pair_pool.sample(n_src).to(self.device)
            fake_lr, weights = self.make_pairs(hr)
            self.srn.train()
            sd.train()
            terms = self.srn_terms(fake_lr, weights, hr, real_pool.sample(n_tgt).to(self.device),
                                   unpair_pool.sample(n_tgt).to(self.device), srn_net, srn_d)
            descend(opt_g2, sum(DASR_WEI_W[k] * terms[k] for k in ("srn/pix", "srn/ll", "srn/per", "srn/gan")),
                    self.srn)
            descend(opt_d2, terms["srn/d"], sd)
            for sc in sched2:
                sc.step()
            return {k: v.item() for k, v in terms.items()}

        stages = [Stage("DSN", dsn_step, n_dsn), Stage("SRN", srn_step, n_srn)]
        report = run_stages(stages, budget, desc=f"fit dasr-wei x{self.scale}", state=state, report=report)
        self.srn.eval()
        self.dsn.eval()
        report.notes.append(f"DSN {n_dsn} it (LR patch {p_deg}), SRN {n_srn} it (LR patch {p}, "
                            f"{n_src} generated + {n_tgt} real per batch)")
        return report

    def extra_fingerprint(self) -> str:
        return repr(self.arch)
