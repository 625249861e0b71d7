"""FSSR: DSGAN + ESRGAN-FS (Fritsche, Gu and Timofte, ICCVW 2019, "Frequency Separation
for Real-World Super-Resolution"; official code ManuelFritsche/real-world-sr).

Two networks, trained one after the other on unpaired data:

- **DSGAN** (``DSGANGenerator``) learns the HR -> LR degradation. It works at LR
  resolution on ``imresize(HR, 1/4)`` (MATLAB bicubic, clamped to [0, 1]); 8 PReLU
  residual blocks, sigmoid output. Trained with the *frequency separation* losses:
  L1 between low-passed (5x5 box, valid region) output and input, a GAN on the
  high-passed output (image minus 5x5 box, ``FSDiscriminator``) against target-domain
  LR, and a perceptual term.
- **ESRGAN-FS** (``RRDBNet``, ESRGAN "new-arch" names ``conv_first``/``RRDB_trunk``/...)
  is trained on pairs (DSGAN(bicubic(HR)), HR): low-pass L1 (9x9 box), VGG feature
  L1 and a RaGAN on the high-passed SR output.

The pieces DASR-Wei and FCA share with it live in ``_unpaired.py`` (DSGAN generator,
filters, discriminator, release helpers) and ``_esrgan.py`` (RRDBNet, ESRGAN-FS stage).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from bench.adapter import (MethodContext, Budget, CheckpointError, CheckpointInfo, FitReport, MethodInfo, TrainingData,
                           load_state_dict_checked, load_torch_file, register_method)
from bench.ddp import parallel
from bench.degrade.resize import imresize_torch
from bench.resume import TrainState
from bench.train import adam, gan_loss, PatchSampler, PerceptualLoss, run_stages, Stage, torch_generator
from bench.warmstart import WarmStart, warm_budget

from ._blocks import seeded
from ._esrgan import (ESRGAN, ESRGAN_FS_W, RRDBNet, VGGDiscriminator, esrgan_fs_step, ragan_d, ragan_g,
                      rrdb_state)
from ._stages import descend, linear_decay, split_iterations
from ._unpaired import (DegradationSRMethod, DSGANGenerator, FilterHigh, FilterLow, FSDiscriminator, arch_with,
                        fresh_training_dict, release_pair, strip_module, training_dict_entry, truncate_uint8)
from ._unpaired import haar_dwt, wavelet_high  # noqa: F401  (tests/methods/test_fssr.py imports them from here)


# ---------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FSSRArch:
    dsgan_blocks: int = 8
    dsgan_feats: int = 64
    d_width: int = 64      # DSGAN discriminator: w, 2w, 4w channels
    nf: int = 64           # ESRGAN-FS
    nb: int = 23
    gc: int = 32
    vgg_d_width: int = 64  # ESRGAN-FS discriminator
    fs_kernel: int = 5     # DSGAN high-pass / low-pass box size
    sr_fs_kernel: int = 9  # ESRGAN-FS box size
    #: DSGAN LR patch = this x the budget's (SR) LR patch: the paper crops 512 HR (128 LR)
    #: for DSGAN and 128 HR (32 LR) for ESRGAN-FS; reduced profiles use 2 to stay cheap.
    deg_patch_factor: int = 4
    #: share of the budget's iterations spent on DSGAN; None = the paper's proportion
    #: (FSSR_STAGE_FRACTIONS, 0.56). Quick raises it so DSGAN runs about 3x its
    #: proportional 727 steps while ESRGAN-FS keeps its 573: at 727 steps DSGAN's
    #: deterministic fidelity stalled at 28.5 dB on `mixed` and `aniso:k=5`, under the
    #: bicubic assumption's 29.5, and passed it at about 2x (results/reference/curves_h100/).
    #: DSGAN steps are cheap (about 24 ms on the 2-core reference CPU against 84 ms for
    #: ESRGAN-FS), so this adds about 35 s to the quick fit. With it the quick DSGAN scores
    #: 30.6 / 31.2 dB on `aniso:k=5` / `mixed` (results/reference/curves_cpu/).
    deg_share: float | None = None

    def stage_fractions(self) -> tuple[float, float]:
        return FSSR_STAGE_FRACTIONS if self.deg_share is None else (self.deg_share, 1.0 - self.deg_share)


FSSR_ARCH = {
    "paper": FSSRArch(),
    "quick": FSSRArch(dsgan_blocks=4, dsgan_feats=16, d_width=8, nf=24, nb=2, gc=12, vgg_d_width=8,
                      deg_patch_factor=2, deg_share=0.793),
    "smoke": FSSRArch(dsgan_blocks=1, dsgan_feats=8, d_width=4, nf=8, nb=1, gc=4, vgg_d_width=4, deg_patch_factor=2),
}

#: DSGAN: 300 epochs of DF2K at batch 16 ~ 64,800 iterations (the .tar's iteration counter);
#: ESRGAN-FS: niter 51,000 (train_SDSR.yml). The budget's iterations are split in this ratio.
FSSR_STAGE_FRACTIONS = (64800 / 115800, 51000 / 115800)
#: ESRGAN-FS loss weights (train_SDSR.yml) and DSGAN's (train.py defaults).
FSSR_W = {"dsgan/col": 1.0, "dsgan/tex": 0.005, "dsgan/per": 0.01, **ESRGAN_FS_W}


@register_method
class FSSR(DegradationSRMethod):
    #: bump on any change that changes outputs or fits (see Method.code_version)
    code_version = "1"
    """DSGAN degradation + ESRGAN-FS super-resolution, trained with frequency separation."""

    info = MethodInfo(
        name="fssr",
        init_from=("ESRGAN-FS generator: RRDB_ESRGAN_x4.pth (esrgan-fs/codes/options/*/train_SDSR.yml and train_TDSR.yml pretrain_model_G); DSGAN and both discriminators from scratch"),
        title="Frequency Separation for Real-World Super-Resolution (DSGAN + ESRGAN-FS)",
        citation="M. Fritsche, S. Gu, R. Timofte. Frequency Separation for Real-World Super-Resolution. "
                 "ICCV Workshops (AIM) 2019.",
        family="unpaired",
        objective="perceptual",  # ESRGAN-FS: low-pass L1, VGG, high-pass RaGAN
        scales=(4,),
        code_url="https://github.com/ManuelFritsche/real-world-sr",
        checkpoints=(
            CheckpointInfo("DF2K_gaussian.tar", "torch training dict",
                           "DSGAN: model_g_state_dict (block_input/res_blocks/block_output, 594,380 params), "
                           "models_d_state_dict, optimizer/scheduler states; other variants DF2K_jpeg, DPED, AIM2019"),
            CheckpointInfo("DF2K_gaussian_SDSR.pth", "plain state dict",
                           "ESRGAN-FS RRDBNet, new-arch ESRGAN names conv_first/RRDB_trunk.N.RDBk.convM/... "
                           "(16,697,987 params); _TDSR.pth variants have the same keys"),
        ),
        gaps=(
            "Paper numbers are second-hand (SRResCGAN README): DF2K-val AWGN 8 22.52/0.52/0.33, JPEG q30 "
            "20.39/0.50/0.42, AIM2019-test 20.72/0.52/0.40 (RGB PSNR/SSIM/LPIPS).",
            "The official ESRGAN-FS fine-tunes from ESRGAN's released RRDB_ESRGAN_x4.pth; fit() trains from scratch.",
            "DSGAN's official perceptual term is LPIPS (AlexNet); fit() uses bench.train.PerceptualLoss "
            "(VGG19 conv5_4 L1, or its offline stand-in).",
            "The official trains ESRGAN-FS on DSGAN LR images saved as truncated uint8 PNGs of whole images; "
            "fit() makes them per patch on the fly (same truncation).",
        ),
        notes=(
            "Inference = ESRGAN-FS on the LR input; degrade() = DSGAN(MATLAB-bicubic(HR, 1/4) clamped to [0,1]).",
            "Data in the paper: DF2K with AWGN sigma 8 or JPEG q30, DPED iPhone (NTIRE 2020 track 2 setting), "
            "AIM 2019 track 1 (source: corrupted Flickr2K, target: DIV2K HR).",
            "DSGAN and ESRGAN-FS are deterministic: degrade() has no noise to switch off.",
        ),
    )
    budgets = {
        "smoke": Budget(iterations=4, batch_size=2, patch_size=8),
        "quick": Budget(iterations=2775, batch_size=4, patch_size=16, lr=1e-4),  # DSGAN 2201 + ESRGAN-FS 574
        "paper": Budget(iterations=115800, batch_size=16, patch_size=32, lr=1e-4),
    }
    #: which module each loss term must send gradient to (for tests and the report)
    LOSS_OWNERS = {"dsgan/col": "dsgan", "dsgan/tex": "dsgan", "dsgan/per": "dsgan", "dsgan/d": "dsgan_d",
                   "sr/pix": "sr", "sr/fea": "sr", "sr/gan": "sr", "sr/d": "sr_d"}

    def __init__(self, scale: int, context: MethodContext | None = None, *, profile: str | None = None,
                 device: str | torch.device | None = None,
                 weights_dir: str | Path | None = None, **arch):
        super().__init__(scale, context, profile=profile, device=device)
        profile = self.profile
        self.arch = arch_with(FSSR_ARCH[profile], arch, "fssr")
        self.weights_dir = weights_dir if weights_dir is not None else self.context.weights_dir
        a = self.arch
        self.dsgan = seeded(self.init_seed(0), lambda: DSGANGenerator(a.dsgan_blocks, a.dsgan_feats)).to(self.device)
        self.sr = seeded(self.init_seed(1), lambda: RRDBNet(3, 3, a.nf, a.nb, a.gc, keys=ESRGAN)).to(self.device)
        self._train: dict[str, nn.Module] = {}

    # -- inference -------------------------------------------------------
    def network(self) -> nn.Module:
        return self.sr

    def degrader(self) -> nn.Module:
        return self.dsgan

    def bicubic(self, hr: torch.Tensor) -> torch.Tensor:
        """The DSGAN input: MATLAB bicubic x1/scale, clamped to [0,1] as the official copy does."""
        return imresize_torch(hr, 1.0 / self.scale).clamp(0, 1)

    @torch.no_grad()
    def degrade(self, hr: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The learned HR -> LR model: DSGAN(bicubic(HR)); deterministic (``generator`` unused)."""
        self.dsgan.eval()
        return self.dsgan(self.bicubic(hr.to(self.device, torch.float32)))

    # -- checkpoints -----------------------------------------------------
    def load_checkpoint(self, path: str | Path) -> None:
        tar, pth = release_pair(path, "fssr")
        g_state = training_dict_entry(tar, "model_g_state_dict", "fssr DSGAN checkpoint")
        load_state_dict_checked(self.dsgan, g_state, what=f"fssr DSGAN checkpoint {tar}")
        sr_state = load_torch_file(pth)
        if not isinstance(sr_state, Mapping):
            raise CheckpointError(f"fssr ESRGAN-FS checkpoint {pth} is not a state dict")
        load_state_dict_checked(self.sr, strip_module(sr_state), what=f"fssr ESRGAN-FS checkpoint {pth}")

    def warm_start(self) -> WarmStart:
        """ESRGAN-FS starts from ``RRDB_ESRGAN_x4.pth`` (a perceptual ESRGAN; its PSNR
        stage is the PSNR-trained RRDBNet): here the shared PSNR warm start of this RRDBNet."""
        a = self.arch
        return WarmStart(f"RRDBNet nf{a.nf} nb{a.nb} gc{a.gc}", 1.0, warm_budget(self.context.profile),
                         seed=self.init_seed(1), make=lambda: RRDBNet(3, 3, a.nf, a.nb, a.gc, keys=ESRGAN))

    def load_init(self, path: str | Path) -> None:
        """``--init fssr=RRDB_ESRGAN_x4.pth``: the recipe's start of ESRGAN-FS (its
        ``pretrain_model_G``), in any RRDBNet key family; DSGAN starts from scratch."""
        load_state_dict_checked(self.sr, rrdb_state(load_torch_file(path), self.sr, f"fssr --init {path}"),
                                what=f"fssr --init {path} (an x4 RRDBNet, e.g. RRDB_ESRGAN_x4.pth)")

    def save_checkpoint(self, path: str | Path) -> None:
        """A release-style folder: ``fssr.tar`` (train.py dict) and ``fssr_SDSR.pth``."""
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        d = self._train["dsgan_d"] if "dsgan_d" in self._train else \
            FSDiscriminator("avg_pool", self.arch.fs_kernel, self.arch.d_width)
        torch.save(fresh_training_dict(self.dsgan, d, lr=2e-4, betas=(0.5, 0.999), epoch=0, iteration=0),
                   p / "fssr.tar")
        torch.save(self.sr.state_dict(), p / "fssr_SDSR.pth")

    # -- training --------------------------------------------------------
    def build_training_modules(self, seed: int) -> dict[str, nn.Module]:
        a = self.arch
        return {
            "dsgan_d": seeded(seed + 11, lambda: FSDiscriminator("avg_pool", a.fs_kernel, a.d_width, "batch")),
            "sr_d": seeded(seed + 12, lambda: VGGDiscriminator(3, a.vgg_d_width)),
            "col_filter": FilterLow(a.fs_kernel, padding=False),                       # DSGAN colour loss
            "sr_low": FilterLow(a.sr_fs_kernel, padding=True, include_pad=True),        # ESRGAN-FS filters.py
            "sr_high": FilterHigh(a.sr_fs_kernel, include_pad=True),
            "perceptual": PerceptualLoss(self.profile, self.weights_dir, verify=self.context.verify_weights),
        }

    def trainables(self) -> dict[str, nn.Module]:
        t = self._training_modules(0)
        return {"dsgan": self.dsgan, "dsgan_d": t["dsgan_d"], "sr": self.sr, "sr_d": t["sr_d"]}

    def dsgan_g_terms(self, lr_bic: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """DSGAN generator: low-pass L1 to its bicubic input, high-pass GAN, perceptual (through
        the bare discriminator: this loss trains the generator only)."""
        t = self._training_modules(0)
        return {
            "dsgan/col": F.l1_loss(t["col_filter"](fake), t["col_filter"](lr_bic)),
            "dsgan/tex": gan_loss(t["dsgan_d"](fake), True),
            "dsgan/per": t["perceptual"](fake, lr_bic),
        }

    def dsgan_d_term(self, fake: torch.Tensor, target_lr: torch.Tensor, d: nn.Module | None = None) -> torch.Tensor:
        """High-pass discriminator: target-domain LR real, DSGAN output fake (``d``: its
        data-parallel wrapper in a multi-rank fit)."""
        d = d or self._training_modules(0)["dsgan_d"]
        return gan_loss(d(target_lr), True) + gan_loss(d(fake.detach()), False)

    def make_pairs(self, hr: torch.Tensor) -> torch.Tensor:
        """SR training LR for HR patches: DSGAN(bicubic(HR)) saved as truncated uint8."""
        with torch.no_grad():
            return truncate_uint8(self.dsgan(self.bicubic(hr)))

    def sr_terms(self, lr: torch.Tensor, hr: torch.Tensor, sr: nn.Module | None = None,
                 d: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """ESRGAN-FS: low-pass L1, VGG feature L1, RaGAN on the high-pass of SR vs HR
        (``sr``/``d``: data-parallel wrappers for the networks' own losses, see esrgan_fs_step)."""
        t = self._training_modules(0)
        out = (sr or self.sr)(lr)
        bare, high = t["sr_d"], t["sr_high"]
        d = d or bare
        real_logits = d(high(hr))
        return {
            "sr/pix": F.l1_loss(t["sr_low"](out), t["sr_low"](hr)),
            "sr/fea": t["perceptual"](out, hr),
            "sr/gan": ragan_g(real_logits.detach(), bare(high(out))),
            "sr/d": ragan_d(real_logits, d(high(out.detach()))),
        }

    def loss_terms(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every loss term of both stages on ``batch`` = {'hr': N x 3 x H x W, 'target_lr': ...}."""
        hr = batch["hr"].to(self.device)
        lr_bic = self.bicubic(hr)
        fake = self.dsgan(lr_bic)
        terms = self.dsgan_g_terms(lr_bic, fake)
        terms["dsgan/d"] = self.dsgan_d_term(fake, batch["target_lr"].to(self.device))
        terms.update(self.sr_terms(self.make_pairs(hr), hr))
        return terms

    def fit(self, data: TrainingData, budget: Budget) -> FitReport:
        t, report = self.begin_fit(data)  # fresh discriminators per fit, seeded from the data seed
        n_dsgan, n_sr = split_iterations(budget.iterations, self.arch.stage_fractions())
        s, p = self.scale, budget.patch_size
        p_deg = self.arch.deg_patch_factor * p

        # Stage 1: DSGAN (Adam 2e-4, betas (0.5, 0.999), linear decay over the last half).
        hr_pool = PatchSampler(data.source_hr, s * p_deg, torch_generator(data.seed, "fssr", "dsgan-hr"))
        tgt_pool = PatchSampler(data.target_lr, p_deg, torch_generator(data.seed, "fssr", "dsgan-target"))
        d = t["dsgan_d"]
        opt_g, opt_d = adam(self.dsgan.parameters(), 2e-4, (0.5, 0.999)), adam(d.parameters(), 2e-4, (0.5, 0.999))
        sched = [torch.optim.lr_scheduler.LambdaLR(o, linear_decay(n_dsgan, 0.5)) for o in (opt_g, opt_d)]
        sr_pool = PatchSampler(data.source_hr, s * p, torch_generator(data.seed, "fssr", "sr-hr"))
        state = TrainState(dsgan=self.dsgan, sr=self.sr, dsgan_d=d, sr_d=t["sr_d"], dsgan_opt_g=opt_g,
                           dsgan_opt_d=opt_d, dsgan_sched_g=sched[0], dsgan_sched_d=sched[1], hr_pool=hr_pool,
                           tgt_pool=tgt_pool, sr_pool=sr_pool)
        dsgan, d_ddp = parallel(self.dsgan), parallel(d)  # DDP wrappers under torchrun

        def dsgan_step(i: int) -> dict[str, float]:
            self.dsgan.train()
            d.train()
            hr = hr_pool.sample(budget.batch_size).to(self.device)
            target = tgt_pool.sample(budget.batch_size).to(self.device)
            lr_bic = self.bicubic(hr)
            fake = dsgan(lr_bic)
            # The official steps D first, then G through D (in torch 1.1 the saved D
            # weights were updated in place by then): G here sees the updated D.
            d_loss = self.dsgan_d_term(fake, target, d_ddp)
            descend(opt_d, d_loss, d)
            terms = self.dsgan_g_terms(lr_bic, fake)
            terms["dsgan/d"] = d_loss.detach()
            descend(opt_g, sum(FSSR_W[k] * terms[k] for k in ("dsgan/col", "dsgan/tex", "dsgan/per")), self.dsgan)
            for sc in sched:
                sc.step()
            return {k: v.item() for k, v in terms.items()}

        # Stage 2: ESRGAN-FS on (DSGAN(bicubic(HR)), HR) patches.
        def sr_batch() -> tuple[torch.Tensor, torch.Tensor]:
            self.dsgan.eval()
            hr = sr_pool.sample(budget.batch_size).to(self.device)
            return self.make_pairs(hr), hr

        sr_step = esrgan_fs_step(self.sr, t["sr_d"], budget.lr, n_sr, sr_batch, self.sr_terms, state)
        stages = [Stage("DSGAN", dsgan_step, n_dsgan), Stage("ESRGAN-FS", sr_step, n_sr)]
        report = run_stages(stages, budget, desc=f"fit fssr x{self.scale}", state=state, report=report)
        self.dsgan.eval()
        self.sr.eval()
        report.notes.append(f"DSGAN {n_dsgan} it (LR patch {p_deg}), ESRGAN-FS {n_sr} it (LR patch {p})")
        return report

    def extra_fingerprint(self) -> str:
        return repr(self.arch)
