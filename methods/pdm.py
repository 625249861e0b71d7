"""PDM: a probabilistic degradation model learned from unpaired LR images (Luo et al., CVPR 2022).

The degradation model (``DegModel``) maps random codes to a blur kernel (softmax over
ks x ks weights) and to additive noise; HR -> LR is a strided correlation with that
kernel plus the noise, with no bicubic step. It is trained adversarially against real
target-domain LR patches (PatchGAN, LSGAN) with a penalty (x100) on the noise mean, and
the SR network learns from (HR, quantised fake LR) pairs it produces.

Two SR networks were released: EDSR-baseline (``sr="edsr"``, EDSR-PyTorch names with
trained MeanShift layers, ``2020Track1-PSNR.pt``) and RRDBNet (``sr="rrdb"``, BasicSR
names, ``PDM_Real_ESRGAN.pth``). Facts: ``reference/official/pdm.md``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench.adapter import (MethodContext, MethodVariant, DegradationModel, BenchError, Budget, CheckpointError, CheckpointInfo, FitReport, Method, MethodInfo,
                           TrainingData, load_state_dict_checked, load_torch_file, register_method)
from bench import ddp
from bench.resume import TrainState
from bench.train import adam, PatchSampler, PerceptualLoss, run_stages, set_requires_grad, Stage, torch_generator, VGG19_FILE

from bench.warmstart import WarmStart, warm_budget

from ._blocks import EDSR
from ._esrgan import RRDBNet, rrdb_state
from ._stages import split_iterations

# ---------------------------------------------------------------------------
# degradation model
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelSpec:
    """Kernel branch: codes z (nc channels) -> ks*ks softmax weights, one kernel per image."""

    nc: int = 3
    nf: int = 64
    nb: int = 8
    ksize: int = 21
    zero_init: bool = True


@dataclass(frozen=True)
class NoiseSpec:
    """Noise branch: codes z (and, if ``mix``, the blurred LR) -> ``dim``-channel noise.

    ``spatial`` draws z per LR pixel and uses head/body convs of size ``k``; otherwise z is
    one vector per image and every conv is 1x1 (the official code ignores head_k/body_k then).
    """

    nc: int = 3
    nf: int = 32
    nb: int = 8
    dim: int = 1
    mix: bool = False
    spatial: bool = False
    k: int = 3
    zero_init: bool = False


#: The two netDeg configurations of the official code (options/test/2020Track1.yml and the
#: joint run options/train/psnr/2020Track1.yml).
DEG_CONFIGS: dict[str, tuple[KernelSpec, NoiseSpec]] = {
    "track1": (KernelSpec(nf=64, nb=8, ksize=21), NoiseSpec(nf=32, nb=8, dim=1)),
    "psnr": (KernelSpec(nf=64, nb=8, ksize=11), NoiseSpec(nf=64, nb=8, dim=3, mix=True, spatial=True, zero_init=True)),
}
#: Release file of each netDeg configuration, relative to the checkpoint folder.
DEG_FILES = {"track1": "latest_netDeg.pth", "psnr": "2020Track1_psnr/latest_netDeg.pth"}
SR_FILES = {"edsr": "2020Track1-PSNR.pt", "rrdb": "PDM_Real_ESRGAN.pth"}
#: The netDeg each SR release was trained with (the psnr yml trains EDSR jointly with its own netDeg).
DEFAULT_DEG = {"edsr": "psnr", "rrdb": "track1"}


class DegResBlock(nn.Module):
    """conv-BN-ReLU-conv plus identity (``body.{0,1,3}`` as in the release)."""

    def __init__(self, nf: int, k: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(nf, nf, k, 1, k // 2), nn.BatchNorm2d(nf), nn.ReLU(True),
                                  nn.Conv2d(nf, nf, k, 1, k // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _trunk(in_nc: int, nf: int, nb: int, k: int, out_nc: int) -> list[nn.Module]:
    return [nn.Conv2d(in_nc, nf, k, 1, k // 2), nn.BatchNorm2d(nf), nn.ReLU(True),
            *[DegResBlock(nf, k) for _ in range(nb)], nn.Conv2d(nf, out_nc, 1, 1, 0)]


class KernelModel(nn.Module):
    def __init__(self, spec: KernelSpec):
        super().__init__()
        self.spec = spec
        self.deg_kernel = nn.Sequential(*_trunk(spec.nc, spec.nf, spec.nb, 1, spec.ksize ** 2), nn.Softmax(1))
        head = self.deg_kernel[-2]
        if spec.zero_init:
            # a constant logit of 1 at the centre (the official start: a nearly flat kernel)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
            head.bias.data[spec.ksize ** 2 // 2] = 1.0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: B x nc x 1 x 1 -> kernels B x ks x ks (each sums to 1)."""
        ks = self.spec.ksize
        return self.deg_kernel(z).view(z.shape[0], ks, ks)


class NoiseModel(nn.Module):
    def __init__(self, spec: NoiseSpec):
        super().__init__()
        self.spec = spec
        k = spec.k if spec.spatial else 1
        in_nc = spec.nc + (3 if spec.mix else 0)
        self.deg_noise = nn.Sequential(*_trunk(in_nc, spec.nf, spec.nb, k, spec.dim))
        head = self.deg_noise[-1]
        nn.init.zeros_(head.bias)
        if spec.zero_init:
            nn.init.zeros_(head.weight)
        else:
            # the official call is normal_(w, 0.001): mean 0.001, std 1 (not std 0.001)
            nn.init.normal_(head.weight, 0.001, 1.0)

    def forward(self, blurred: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """z: B x nc x h x w (spatial) or B x nc x 1 x 1; returns noise broadcastable to ``blurred``."""
        if self.spec.mix:
            if z.shape[-2:] != blurred.shape[-2:]:
                z = z.expand(-1, -1, *blurred.shape[-2:])
            z = torch.cat([blurred.detach(), z], 1)
        return self.deg_noise(z)


class DegModel(nn.Module):
    """HR [0,1] -> (LR, kernels B x ks x ks, noise). No clamp, no quantisation.

    The blur is a correlation over the reflect-padded HR, window centred on HR pixel
    (s*y, s*x), stride s: output size floor((H-1)/s)+1.
    """

    def __init__(self, scale: int, kernel: KernelSpec, noise: NoiseSpec):
        super().__init__()
        self.scale = scale
        self.deg_kernel = KernelModel(kernel)
        self.deg_noise = NoiseModel(noise)

    def lr_size(self, h: int, w: int) -> tuple[int, int]:
        return (h - 1) // self.scale + 1, (w - 1) // self.scale + 1

    def draw_codes(self, hr_shape: torch.Size, generator: torch.Generator | None,
                   zero: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_kernel, z_noise) in the official draw order, on the CPU (as the official code draws)."""
        b, _, h, w = hr_shape
        ks, ns = self.deg_kernel.spec, self.deg_noise.spec
        zn_shape = (b, ns.nc, *self.lr_size(h, w)) if ns.spatial else (b, ns.nc, 1, 1)
        if zero:
            return torch.zeros(b, ks.nc, 1, 1), torch.zeros(zn_shape)
        zk = torch.randn(b, ks.nc, 1, 1, generator=generator)
        zn = torch.randn(zn_shape, generator=generator)
        return zk, zn

    def blur(self, hr: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        b, c, h, w = hr.shape
        ks = kernels.shape[-1]
        if min(h, w) <= ks // 2:
            raise BenchError(f"PDM degradation needs HR images larger than {ks // 2} pixels (got {h}x{w})")
        x = F.pad(hr.reshape(1, b * c, h, w), (ks // 2,) * 4, mode="reflect")
        weight = kernels.repeat_interleave(c, 0).unsqueeze(1)  # (b*c, 1, ks, ks), one kernel per image
        return F.conv2d(x, weight, stride=self.scale, groups=b * c).view(b, c, *self.lr_size(h, w))

    def forward(self, hr: torch.Tensor, z_kernel: torch.Tensor | None = None, z_noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if z_kernel is None or z_noise is None:
            zk, zn = self.draw_codes(hr.shape, generator)
            z_kernel = zk if z_kernel is None else z_kernel
            z_noise = zn if z_noise is None else z_noise
        kernels = self.deg_kernel(z_kernel.to(hr.device, hr.dtype))
        blurred = self.blur(hr, kernels)
        noise = self.deg_noise(blurred, z_noise.to(hr.device, hr.dtype))
        return blurred + noise, kernels, noise


class Quant(torch.autograd.Function):
    """8-bit quantisation (clamp, round half-to-even) with a straight-through gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return (x.clamp(0, 1) * 255.0).round() / 255.0

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class PatchGANDiscriminator(nn.Module):
    """The official PatchGAN: 3x3 convs, InstanceNorm, LeakyReLU 0.2.

    As in the official code the last conv has ``nf`` output channels, not 1 (users of
    the official repository noticed it, issue #29); every channel is scored.
    """

    def __init__(self, in_c: int = 3, nf: int = 64, nb: int = 3, stride: int = 1):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_c, nf, 3, 1, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, nb):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(nf * prev, nf * mult, 3, stride, 1), nn.InstanceNorm2d(nf * mult),
                       nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** nb, 8)
        layers += [nn.Conv2d(nf * prev, nf * mult, 3, 1, 1), nn.InstanceNorm2d(nf * mult), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(nf * mult, nf, 3, 1, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class EDSR01(EDSR):
    """EDSR-baseline on [0,1] in and out; scales by 255 inside, as PDM's EDSR does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x * 255.0) / 255.0


def lsgan(pred: torch.Tensor, real: bool) -> torch.Tensor:
    return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))


def _strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official loader strips a DataParallel ``module.`` prefix."""
    return {(k.removeprefix("module.")): v for k, v in state.items()}


# ---------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------
#: Per profile: SR trunk (n_feats, n_blocks), RRDB growth, degradation widths/depths, discriminator (nf, nb).
ARCH = {
    "smoke": {"n_feats": 8, "n_blocks": 1, "grow": 8, "deg_nf": 8, "deg_nb": 1, "noise_nf": 8, "noise_nb": 1,
              "d_nf": 8, "d_nb": 2},
    "quick": {"n_feats": 32, "n_blocks": 4, "grow": 16, "deg_nf": 32, "deg_nb": 4, "noise_nf": 16, "noise_nb": 4,
              "d_nf": 16, "d_nb": 2},
    # None: the official value of the chosen SR / netDeg configuration
    "paper": {"n_feats": 64, "n_blocks": None, "grow": 32, "deg_nf": None, "deg_nb": None, "noise_nf": None,
              "noise_nb": None, "d_nf": 64, "d_nb": 3},
}
PAPER_BLOCKS = {"edsr": 16, "rrdb": 23}
#: the degradation model's (and its discriminator's) learning rate over ``budget.lr``: x10
#: in the short quick schedule, as MSSR's quick degradation rates; at x1 its noise branch
#: learns almost nothing in 1250 steps (generated noise sigma 0.6 on `mixed`, whose noise is
#: 10), and the warm-started SR net then unlearns denoising on near-clean fake LR
DEG_LR_SCALE = {"smoke": 1.0, "quick": 10.0, "paper": 1.0}

#: Loss weights of the official ymls: psnr/2020Track1.yml (EDSR, joint) and, for the
#: RRDB, deg/2020Track1.yml then percep/2020Track1.yml (two stages).
WEIGHTS = {
    "edsr": {"lr_adv": 1.0, "noise_mean": 100.0, "sr_pix": 1.0},
    "rrdb": {"lr_adv": 1.0, "noise_mean": 100.0, "sr_pix": 0.01, "sr_percep": 0.05, "sr_adv": 0.005},
}
MAX_GRAD_NORM = 50.0


@register_method
class PDM(Method, DegradationModel):
    #: bump on any change that changes outputs or fits (see Method.code_version)
    code_version = "2"  # 2: quick degradation learning rate x10
    weight_files = (VGG19_FILE,)
    info = MethodInfo(
        name="pdm",
        init_from=("SR net (EDSR): edsr_baseline_x4-new.pt (options/train/psnr/*.yml netSR pretrain.path; percep/2020Track1.yml: scratch); RRDB variant: BSRGAN.pth (percep configs before commit 91c1883); degradation model and discriminators from scratch"),
        title="PDM: Learning the Degradation Distribution for Blind Image Super-Resolution",
        citation="Luo, Huang, Li, Wang, Tan. Learning the Degradation Distribution for Blind Image "
                 "Super-Resolution. CVPR 2022",
        family="unpaired",
        objective="psnr",  # psnr/2020Track1.yml: L1 only (the .rrdb variant adds perceptual and GAN terms)
        scales=(4,),
        code_url="https://github.com/greatlog/UnpairedSR",
        checkpoints=(
            CheckpointInfo("2020Track1-PSNR.pt", "flat state_dict, EDSR-PyTorch names (trained MeanShift)",
                           "EDSR-baseline x4, NTIRE 2020 track 1 (psnr/2020Track1.yml); sr='edsr'"),
            CheckpointInfo("PDM_Real_ESRGAN.pth", "flat state_dict, BasicSR RRDBNet names",
                           "RRDBNet x4 (test/2020Track2.yml); sr='rrdb'"),
            CheckpointInfo("latest_netDeg.pth", "flat state_dict, DegModel (deg_kernel.*, deg_noise.*)",
                           "track-1 netDeg (21x21 kernel, one noise scalar per image); not released (issue #21): "
                           "written by save_checkpoint, optional in a folder"),
            CheckpointInfo("2020Track1_psnr/latest_netDeg.pth", "flat state_dict, DegModel",
                           "netDeg of the joint psnr run (11x11 kernel, spatial noise); not released; optional"),
        ),
        gaps=(
            ("Paper (NTIRE 2020 track 1, x4): 26.80 dB PSNR (RGB); the released 2020Track1-PSNR.pt gives 26.2 dB "
            "on the track-1 validation set (issue #29), and retraining with psnr/2020Track1.yml and the "
            "pretrained EDSR gives 26.2 dB (issue #33; 24.30 dB in issue #29's own retraining)."),
            ("Paper (NTIRE 2020 track 2, DPED): NIQE 3.19; the checkpoint first released gave 3.88 (RGB) / 3.92 (Y) "
            "(issue #6; the author said it was chosen for visual quality and uploaded the paper one later)."),
            ("The degradation models were never released (issue #21), so degrade() of a loaded release needs "
            "a netDeg file written by this harness's fit."),
        ),
        notes=(
            ("Official training initialises EDSR from a bicubic-pretrained edsr_baseline_x4-new.pt; fit() here "
            "starts from random weights."),
            ("sr='edsr' follows psnr/2020Track1.yml (netDeg and EDSR trained jointly, L1 only); sr='rrdb' follows "
            "deg/2020Track1.yml for the first half of the iterations, then percep/2020Track1.yml (L1 0.01, VGG "
            "0.05, LSGAN 0.005) with netDeg frozen. Which recipe made PDM_Real_ESRGAN.pth is not documented."),
            ("Fake LR for SR training comes from netDeg in train mode (batch-statistics BatchNorm) and is "
            "quantised to 8 bits, as in the official code; degrade() is the test path (eval BatchNorm, no "
            "quantisation)."),
        ),
    )
    budgets: ClassVar[dict[str, Budget]] = {
        "smoke": Budget(iterations=4, batch_size=2, patch_size=8),
        # edsr (the default): 70 s on the idle 2-core reference CPU
        # (results/reference/default_quick/run_log.txt); rrdb steps cost about 1.6x an edsr step
        "quick": Budget(iterations=1250, batch_size=8, patch_size=16, lr=2e-4),
        "paper": Budget(iterations=200_000, batch_size=32, patch_size=32, lr=2e-4),
    }

    variants = {
        "": MethodVariant("", "EDSR-baseline SR network, L1 only (psnr/2020Track1.yml)", (("sr", "edsr"),),
                          ("2020Track1-PSNR.pt",)),
        "rrdb": MethodVariant("rrdb", "RRDBNet SR network with the perceptual stage (percep/2020Track1.yml)",
                              (("sr", "rrdb"),), ("PDM_Real_ESRGAN.pth",), objective="perceptual"),
    }

    def __init__(self, scale: int, context: MethodContext | None = None, *, profile: str | None = None,
                 device: str | torch.device | None = None, sr: str = "edsr", deg: str | None = None,
                 n_feats: int | None = None, n_blocks: int | None = None, grow: int | None = None,
                 deg_nf: int | None = None, deg_nb: int | None = None, noise_nf: int | None = None,
                 noise_nb: int | None = None, d_nf: int | None = None, d_nb: int | None = None,
                 weights_dir: str | None = None):
        super().__init__(scale, context, profile=profile, device=device)
        profile = self.profile
        if sr not in SR_FILES:
            raise BenchError(f"pdm: sr={sr!r} is not a PDM release; choose 'edsr' or 'rrdb'")
        deg = deg or DEFAULT_DEG[sr]
        if deg not in DEG_CONFIGS:
            raise BenchError(f"pdm: deg={deg!r} is not an official netDeg config; choose 'track1' or 'psnr'")
        a = dict(ARCH[profile])
        overrides = {"n_feats": n_feats, "n_blocks": n_blocks, "grow": grow, "deg_nf": deg_nf, "deg_nb": deg_nb,
                     "noise_nf": noise_nf, "noise_nb": noise_nb, "d_nf": d_nf, "d_nb": d_nb}
        for key, val in overrides.items():
            if val is not None:
                a[key] = val
        a["n_blocks"] = a["n_blocks"] or PAPER_BLOCKS[sr]
        kspec, nspec = DEG_CONFIGS[deg]
        kspec = dataclasses.replace(kspec, nf=a["deg_nf"] or kspec.nf,
                                    nb=kspec.nb if a["deg_nb"] is None else a["deg_nb"])
        nspec = dataclasses.replace(nspec, nf=a["noise_nf"] or nspec.nf,
                                    nb=nspec.nb if a["noise_nb"] is None else a["noise_nb"])
        a.update(deg_nf=kspec.nf, deg_nb=kspec.nb, noise_nf=nspec.nf, noise_nb=nspec.nb)
        self.sr_kind, self.deg_kind, self.arch = sr, deg, a
        self.weights_dir = weights_dir if weights_dir is not None else self.context.weights_dir
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.init_seed())  # deterministic initial weights, independent of the global RNG
            if sr == "edsr":
                self.net_sr: nn.Module = EDSR01(scale, a["n_blocks"], a["n_feats"], res_scale=1.0, rgb_range=255.0,
                                                trainable_mean=True)
            else:
                self.net_sr = RRDBNet(3, 3, a["n_feats"], a["n_blocks"], a["grow"], scale=scale)
            self.net_deg = DegModel(scale, kspec, nspec)
            # D1 strides: 1 in psnr/2020Track1.yml (joint EDSR run), 2 in deg/2020Track1.yml (RRDB recipe)
            self.net_d1 = PatchGANDiscriminator(3, a["d_nf"], a["d_nb"], stride=1 if sr == "edsr" else 2)
            self.net_d2 = PatchGANDiscriminator(3, a["d_nf"], a["d_nb"], stride=1) if sr == "rrdb" else None
        for m in (self.net_sr, self.net_deg, self.net_d1, self.net_d2):
            if m is not None:
                m.to(self.device)
        self.net_sr.eval()
        self.net_deg.eval()
        self.weights = WEIGHTS[sr]
        self._percep: PerceptualLoss | None = None
        self.deg_ready = False  # set by fit() or by loading a netDeg file

    # -- bookkeeping -----------------------------------------------------
    def network(self) -> nn.Module:
        return self.net_sr

    def extra_fingerprint(self) -> str:
        return f"sr={self.sr_kind}-deg={self.deg_kind}-" + "-".join(f"{k}{v}" for k, v in sorted(self.arch.items()))

    def percep(self) -> PerceptualLoss:
        if self._percep is None:
            self._percep = PerceptualLoss(self.profile, self.weights_dir, verify=self.context.verify_weights).to(self.device)
        return self._percep

    # -- inference -------------------------------------------------------
    @torch.no_grad()
    def forward_unclamped(self, lr: torch.Tensor) -> torch.Tensor:
        self.net_sr.eval()
        return self.net_sr(lr.to(self.device, torch.float32)).cpu()

    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        return self.forward_unclamped(lr).clamp(0, 1)

    @torch.no_grad()
    def degrade(self, hr: torch.Tensor, generator: torch.Generator | None = None, noise: bool = True, *,
                clamp: bool = True, z_kernel: torch.Tensor | None = None,
                z_noise: torch.Tensor | None = None) -> torch.Tensor:
        """The learned HR -> LR map (official test path: eval BatchNorm, no quantisation).

        ``noise=False`` sets every random code to 0 (one fixed kernel and noise per
        image size); otherwise codes come from ``generator`` (a fixed-seed generator if
        None, so repeated calls agree). ``z_kernel``/``z_noise`` inject codes directly.
        """
        self._require_deg()
        self.net_deg.eval()
        hr = hr.to(self.device, torch.float32)
        if z_kernel is None or z_noise is None:
            g = generator if generator is not None else torch_generator(0, "pdm-degrade")
            zk, zn = self.net_deg.draw_codes(hr.shape, g, zero=not noise)
            z_kernel = zk if z_kernel is None else z_kernel
            z_noise = zn if z_noise is None else z_noise
        lr = self.net_deg(hr, z_kernel, z_noise)[0]
        return (lr.clamp(0, 1) if clamp else lr).cpu()

    @torch.no_grad()
    def kernel(self, n: int = 256, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean of the kernel distribution over ``n`` code draws (ks x ks, sums to 1)."""
        self._require_deg()
        self.net_deg.eval()
        g = generator if generator is not None else torch_generator(0, "pdm-kernel")
        z = torch.randn(n, self.net_deg.deg_kernel.spec.nc, 1, 1, generator=g).to(self.device)
        return self.net_deg.deg_kernel(z).mean(0).cpu()

    def _require_deg(self) -> None:
        if not self.deg_ready:
            raise BenchError("pdm has no learned degradation yet: call fit(), or load a checkpoint folder that holds "
                             f"{DEG_FILES[self.deg_kind]} (the official release has none)")

    # -- losses ----------------------------------------------------------
    def _codes(self, hr: torch.Tensor, g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes for this rank's HR patches: drawn for the step's whole batch in the official
        order, then sharded (bench/ddp.py), so N ranks together draw what one process does."""
        w = ddp.world()
        return ddp.shard(self.net_deg.draw_codes((hr.shape[0] * w.size, *hr.shape[1:]), g), w)

    def _deg_terms(self, hr: torch.Tensor, real_lr: torch.Tensor, g: torch.Generator | None,
                   deg: nn.Module | None = None):
        """``deg``: netDeg's data-parallel wrapper in a multi-rank fit."""
        fake, _, noise = (deg if deg is not None else self.net_deg)(hr, *self._codes(hr, g))
        terms = {"lr_adv": lsgan(self.net_d1(fake), True), "noise_mean": F.mse_loss(noise, torch.zeros_like(noise))}
        return fake, terms

    def _d_loss(self, net_d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * (lsgan(net_d(real), True) + lsgan(net_d(fake.detach()), False))

    def _sr_terms(self, hr: torch.Tensor, fake_lr: torch.Tensor, net_sr: nn.Module | None = None
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``net_sr``: the SR network's data-parallel wrapper in a multi-rank fit (the adversarial
        term goes through the bare ``net_d2``)."""
        sr = (net_sr if net_sr is not None else self.net_sr)(Quant.apply(fake_lr).detach())
        terms = {"sr_pix": F.l1_loss(sr, hr)}
        if self.sr_kind == "rrdb":
            terms["sr_percep"] = self.percep()(sr, hr)
            terms["sr_adv"] = lsgan(self.net_d2(sr), True)
        return sr, terms

    def loss_terms(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None
                   ) -> dict[str, torch.Tensor]:
        """Every training term (unweighted) on one batch {'hr': HR patches, 'lr': real LR patches}."""
        hr, real = batch["hr"].to(self.device), batch["lr"].to(self.device)
        self.net_deg.train()
        fake, terms = self._deg_terms(hr, real, generator)
        terms["d1"] = self._d_loss(self.net_d1, real, fake)
        sr, sr_terms = self._sr_terms(hr, fake)
        terms.update(sr_terms)
        if self.net_d2 is not None:
            terms["d2"] = self._d_loss(self.net_d2, hr, sr)
        return terms

    def loss_targets(self) -> dict[str, tuple[str, ...]]:
        """Which attribute modules each term of :meth:`loss_terms` must send gradient to."""
        t = {"lr_adv": ("net_deg.deg_kernel", "net_deg.deg_noise"), "noise_mean": ("net_deg.deg_noise",),
             "d1": ("net_d1",), "sr_pix": ("net_sr",)}
        if self.sr_kind == "rrdb":
            t.update(sr_percep=("net_sr",), sr_adv=("net_sr",), d2=("net_d2",))
        return t

    # -- training --------------------------------------------------------
    def fit(self, data: TrainingData, budget: Budget) -> FitReport:
        if not data.target_lr:
            raise BenchError("pdm learns from unpaired target-domain LR images: TrainingData.target_lr is empty")
        s, p, n = self.scale, budget.patch_size, budget.batch_size
        if ddp.rank_batch(n) < 2:
            raise BenchError("pdm needs batch_size >= 2 per rank (its degradation model uses batch-statistics "
                             "BatchNorm)")
        hr_pool = PatchSampler(data.source_hr, p * s, torch_generator(data.seed, "pdm", "hr"))
        lr_pool = PatchSampler(data.target_lr, p, torch_generator(data.seed, "pdm", "lr"))
        codes = torch_generator(data.seed, "pdm", "codes")
        w = self.weights
        opts = {"deg": adam(self.net_deg.parameters(), budget.lr), "d1": adam(self.net_d1.parameters(), budget.lr),
                "sr": adam(self.net_sr.parameters(), budget.lr)}
        if self.net_d2 is not None:
            opts["d2"] = adam(self.net_d2.parameters(), budget.lr)
        base_lr = {k: budget.lr * (DEG_LR_SCALE[self.profile] if k in ("deg", "d1") else 1.0) for k in opts}
        nets = {"net_sr": self.net_sr, "net_deg": self.net_deg, "net_d1": self.net_d1,
                **({"net_d2": self.net_d2} if self.net_d2 is not None else {})}
        state = TrainState(**nets, hr_pool=hr_pool, lr_pool=lr_pool, codes=codes,
                           **{f"opt_{k}": o for k, o in opts.items()})
        # DistributedDataParallel wrappers under torchrun (the networks themselves otherwise), called
        # where each network's own loss is computed; adversarial terms go through the bare discriminators
        par = {"deg": ddp.parallel(self.net_deg), "d1": ddp.parallel(self.net_d1), "sr": ddp.parallel(self.net_sr),
               "d2": ddp.parallel(self.net_d2) if self.net_d2 is not None else None}
        report = FitReport()
        if self.sr_kind == "rrdb" and self.percep().stand_in:
            report.notes.append(self.percep().stand_in)

        def clip_step(name: str, module: nn.Module, loss: torch.Tensor) -> None:
            opts[name].zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(module.parameters(), MAX_GRAD_NORM)
            opts[name].step()

        def make_step(train_deg: bool, train_sr: bool, iterations: int):
            # MultiStepRestartLR [50k, 100k, 150k] of 200k, gamma 0.5 -> halve at each quarter of the stage
            marks = [max(1, round(iterations * f)) for f in (0.25, 0.5, 0.75)]

            def step(i: int) -> dict[str, float]:
                for name, o in opts.items():
                    for group in o.param_groups:
                        group["lr"] = base_lr[name] * 0.5 ** sum(i >= m for m in marks)
                hr = hr_pool.sample(n).to(self.device)
                real = lr_pool.sample(n).to(self.device)
                out: dict[str, float] = {}
                self.net_deg.train()
                if train_deg:
                    set_requires_grad(self.net_deg, True)
                    set_requires_grad(self.net_d1, False)
                    fake, t = self._deg_terms(hr, real, codes, par["deg"])
                    clip_step("deg", self.net_deg, w["lr_adv"] * t["lr_adv"] + w["noise_mean"] * t["noise_mean"])
                    set_requires_grad(self.net_d1, True)
                    d1 = self._d_loss(par["d1"], real, fake)
                    clip_step("d1", self.net_d1, w["lr_adv"] * d1)
                    out.update({k: v.item() for k, v in t.items()}, d1=d1.item())
                else:
                    with torch.no_grad():  # netDeg frozen, but its BatchNorm still runs on batch statistics
                        fake = self.net_deg(hr, *self._codes(hr, codes))[0]
                if train_sr:
                    set_requires_grad(self.net_deg, False)
                    self.net_sr.train()
                    if self.net_d2 is not None:
                        set_requires_grad(self.net_d2, False)
                    sr, t = self._sr_terms(hr, fake.detach(), par["sr"])
                    clip_step("sr", self.net_sr, sum(w[k] * v for k, v in t.items()))
                    out.update({k: v.item() for k, v in t.items()})
                    if self.net_d2 is not None:
                        set_requires_grad(self.net_d2, True)
                        d2 = self._d_loss(par["d2"], hr, sr)
                        clip_step("d2", self.net_d2, w["sr_adv"] * d2)
                        out["d2"] = d2.item()
                return out

            return step

        if self.sr_kind == "rrdb":  # deg/2020Track1.yml, then percep/2020Track1.yml with netDeg frozen
            n_deg, n_sr = split_iterations(budget.iterations, (0.5, 0.5))
            stages = [Stage("degradation", make_step(True, False, n_deg), n_deg),
                      Stage("sr", make_step(False, True, n_sr), n_sr)]
        else:  # psnr/2020Track1.yml: both every iteration
            stages = [Stage("joint", make_step(True, True, budget.iterations), budget.iterations)]
        self.deg_ready = True  # the model being trained is the learned degradation (learning curves read it mid-fit)
        report = run_stages(stages, budget, desc=f"fit pdm-{self.sr_kind} x{self.scale}", state=state,
                            report=report)
        set_requires_grad(self.net_deg, True)
        self.net_sr.eval()
        self.net_deg.eval()
        return report

    # -- checkpoints -----------------------------------------------------
    def warm_start(self) -> WarmStart:
        """The recipe starts the SR net from ``edsr_baseline_x4-new.pt`` (``.rrdb``: BSRGAN.pth):
        here the shared warm start of this network, built as the constructor builds it."""
        a, scale = self.arch, self.scale
        if self.sr_kind == "edsr":
            return WarmStart(f"EDSR-baseline nb{a['n_blocks']} nf{a['n_feats']} (PDM: trainable mean shift)", 255.0,
                             warm_budget(self.context.profile),
                             seed=self.init_seed(), make=lambda: EDSR01(
                                 scale, a["n_blocks"], a["n_feats"], res_scale=1.0, rgb_range=255.0,
                                 trainable_mean=True))
        return WarmStart(f"RRDBNet nf{a['n_feats']} nb{a['n_blocks']} gc{a['grow']}", 1.0,
                         warm_budget(self.context.profile),
                         seed=self.init_seed(), make=lambda: RRDBNet(3, 3, a["n_feats"], a["n_blocks"],
                                                                              a["grow"], scale=scale))

    def load_init(self, path: str | Path) -> None:
        """``--init pdm=edsr_baseline_x4-new.pt`` (``--init pdm.rrdb=BSRGAN.pth``): the recipe's
        start of the SR net (options/train/psnr/*.yml ``netSR.pretrain.path``); the degradation
        model and the discriminators start from scratch."""
        if self.sr_kind == "rrdb":  # BSRGAN and ESRGAN files: any RRDBNet key family
            load_state_dict_checked(self.net_sr, rrdb_state(load_torch_file(path), self.net_sr, f"pdm --init {path}"),
                                    what=f"pdm.rrdb --init {path} (an x4 RRDBNet)")
        else:
            self._load_sr(Path(path))

    def load_checkpoint(self, path: str | Path) -> None:
        """A release folder (SR file required, netDeg file optional) or a single SR / netDeg file."""
        p = Path(path)
        if p.is_dir():
            sr_file, deg_file = p / SR_FILES[self.sr_kind], p / DEG_FILES[self.deg_kind]
            if not sr_file.is_file():
                raise CheckpointError(f"pdm (sr={self.sr_kind}): {p} has no {SR_FILES[self.sr_kind]}; a PDM folder "
                                      f"holds {SR_FILES[self.sr_kind]} and optionally {DEG_FILES[self.deg_kind]}")
            self._load_sr(sr_file)
            if deg_file.is_file():
                self._load_deg(deg_file)
            return
        state = load_torch_file(p)
        if isinstance(state, Mapping) and any(str(k).startswith(("deg_kernel.", "module.deg_kernel.")) for k in state):
            self._load_deg(p, state)
        else:
            self._load_sr(p, state)

    def _load_sr(self, path: Path, state=None) -> None:
        state = load_torch_file(path) if state is None else state
        if not isinstance(state, Mapping):
            raise CheckpointError(f"pdm checkpoint {path}: expected a state dict, got {type(state).__name__}")
        load_state_dict_checked(self.net_sr, _strip_module(state), what=f"pdm {self.sr_kind} checkpoint {path}")
        self.net_sr.eval()

    def _load_deg(self, path: Path, state=None) -> None:
        state = load_torch_file(path) if state is None else state
        if not isinstance(state, Mapping):
            raise CheckpointError(f"pdm netDeg {path}: expected a state dict, got {type(state).__name__}")
        load_state_dict_checked(self.net_deg, _strip_module(state),
                                what=f"pdm netDeg ({self.deg_kind}) checkpoint {path}")
        self.net_deg.eval()
        self.deg_ready = True

    def save_checkpoint(self, path: str | Path) -> None:
        """A folder laid out like the release: the SR file plus the netDeg file (when learned)."""
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.cpu() for k, v in self.net_sr.state_dict().items()}, p / SR_FILES[self.sr_kind])
        if self.deg_ready:
            deg_file = p / DEG_FILES[self.deg_kind]
            deg_file.parent.mkdir(parents=True, exist_ok=True)
            torch.save({k: v.cpu() for k, v in self.net_deg.state_dict().items()}, deg_file)

