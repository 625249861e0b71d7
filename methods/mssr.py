"""MSSR: multiple probabilistic degradation generators (Lee, Ahn, Yoon, ECCV Workshops 2022).

Stage 1 trains two stochastic degradation generators (a DeResnet and a HAN, both with
StyleGAN-style noise injection: ``x + w * n``, n ~ N(0, std^2) per pixel, broadcast over
channels) against real target-domain LR patches, with a discriminator that sees only the
Haar-wavelet high bands, an L1 colour loss on the low band against bicubic HR, and a
perceptual term. Stage 2 trains two RRDB SR networks, each on its own generator's LR,
with a collaborative L1 (0.01) to the other network on the other generator's LR, plus an
adaptation L1 on real target LR towards their averaged output (ramped up over training).
Inference averages the two networks after clamping each, as the official validation
(the path behind the reported numbers) does. Facts: ``reference/official/mssr.md``.

Naming follows the official crossed convention: HAN makes ``img1`` for ``g1``; DeResnet
makes ``img2`` for ``g2``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench.adapter import (MethodContext, DegradationModel, BenchError, Budget, CheckpointError, CheckpointInfo, FitReport, Method, MethodInfo,
                           TrainingData, load_state_dict_checked, load_torch_file, register_method)
from bench import ddp
from bench.degrade.resize import imresize_torch
from bench.resume import TrainState
from bench.train import adam, gan_loss, PatchSampler, PerceptualLoss, run_stages, set_requires_grad, Stage, torch_generator, VGG19_FILE
from bench.warmstart import WarmStart, warm_budget

from ._blocks import PReLUResBlock
from ._esrgan import RRDBNet, rrdb_state
from ._stages import split_iterations
from ._unpaired import FSDNet

NOISE_STD = 0.1  # config_cont*.json / README commands (train.py's default 0.05 is not what was run)


class NoiseDraws:
    """The unit-normal maps the noise injections consume, in forward order.

    One object per forward pass: from a CPU generator (the official code draws on the
    default CPU generator), from stored maps (to replay the official draws), or zeros.
    ``shard`` (fit only): the network runs on this rank's share of the step's batch, so
    each map is drawn for the whole batch and this rank takes its slice (bench/ddp.py):
    N ranks together see the draws of one process.
    """

    def __init__(self, generator: torch.Generator | None = None, stored: Sequence[torch.Tensor] | None = None,
                 zero: bool = False, shard: bool = False):
        self.generator, self.stored, self.zero, self.count = generator, stored, zero, 0
        self.shard = shard

    def __call__(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        i, self.count = self.count, self.count + 1
        if self.zero:
            return torch.zeros(shape, dtype=like.dtype, device=like.device)
        if self.stored is not None:
            if i >= len(self.stored):
                raise BenchError(f"MSSR noise replay: {len(self.stored)} stored draws, the network needs more")
            return torch.as_tensor(self.stored[i]).to(like.device, like.dtype).reshape(shape)
        if self.shard:
            w = ddp.world()
            full = torch.randn((shape[0] * w.size, *shape[1:]), generator=self.generator)
            return ddp.shard(full, w).to(like.device, like.dtype)
        return torch.randn(shape, generator=self.generator).to(like.device, like.dtype)


class NoiseInjection(nn.Module):
    """x + w * (n * std): one noise map per image broadcast over channels, per-channel weight w."""

    def __init__(self, channels: int, std: float = NOISE_STD):
        super().__init__()
        self.std = std
        self.w = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor, draws: NoiseDraws) -> torch.Tensor:
        b, c, h, w = x.shape
        n = (draws((b, 1, h, w), x) * self.std).expand(-1, c, -1, -1)
        return x + self.w * n


# ---------------------------------------------------------------------------
# degradation generator 2: DeResnet (HR-resolution trunk, then two stride-2 convs)
# ---------------------------------------------------------------------------
class DeResnet(nn.Module):
    """HR [0,1] -> LR in (0,1) (sigmoid). Noise is injected before every residual block."""

    def __init__(self, n_res_blocks: int = 8, nf: int = 64, scale: int = 4, noise_std: float = NOISE_STD):
        super().__init__()
        if scale != 4:
            raise ValueError("MSSR's DeResnet is used at x4 only here")
        self.block_input = nn.Sequential(nn.Conv2d(3, nf, 3, padding=1), nn.PReLU())
        self.res_blocks = nn.ModuleList([PReLUResBlock(nf) for _ in range(n_res_blocks)])
        self.noises = nn.ModuleList([NoiseInjection(nf, noise_std) for _ in range(n_res_blocks)])
        self.down_sample = nn.Sequential(nn.Conv2d(nf, nf, 3, 2, 1), nn.PReLU(), nn.Conv2d(nf, nf, 3, 2, 1), nn.PReLU())
        self.block_output = nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, draws: NoiseDraws) -> torch.Tensor:
        x = self.block_input(x)
        for block, noise in zip(self.res_blocks, self.noises):
            x = block(noise(x, draws))
        return torch.sigmoid(self.block_output(self.down_sample(x)))


# ---------------------------------------------------------------------------
# degradation generator 1: HAN (holistic attention network, upsampler removed)
# ---------------------------------------------------------------------------
def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class CALayer(nn.Module):
    def __init__(self, nf: int, reduction: int = 16):
        super().__init__()
        self.conv_du = nn.Sequential(nn.Conv2d(nf, nf // reduction, 1), nn.ReLU(True),
                                     nn.Conv2d(nf // reduction, nf, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(F.adaptive_avg_pool2d(x, 1))


class RCAB(nn.Module):
    def __init__(self, nf: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(_conv(nf, nf), nn.ReLU(True), _conv(nf, nf), CALayer(nf, reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ResidualGroup(nn.Module):
    def __init__(self, nf: int, reduction: int, n_resblocks: int):
        super().__init__()
        self.body = nn.Sequential(*[RCAB(nf, reduction) for _ in range(n_resblocks)], _conv(nf, nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class LAM(nn.Module):
    """Layer attention over the stacked body outputs (B x N x C x H x W -> B x NC x H x W)."""

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c, h, w = x.shape
        q = x.view(b, n, -1)
        energy = torch.bmm(q, q.transpose(1, 2))
        # max - energy, as in HAN: the softmax favours the least similar layers
        att = torch.softmax(energy.max(-1, keepdim=True)[0].expand_as(energy) - energy, dim=-1)
        out = torch.bmm(att, q).view(b, n, c, h, w)
        return (self.gamma * out + x).view(b, -1, h, w)


class CSAM(nn.Module):
    """Channel-spatial attention: x * sigmoid(conv3d(x)). ``gamma`` is stored but unused (as upstream);
    it never gets a gradient, so it is frozen: a data-parallel fit's reducer would wait for one."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 3, 1, 1)
        self.gamma = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x.unsqueeze(1))).view_as(x)


class HAN(nn.Module):
    """HR [0,1] -> LR (unbounded): two stride-2 convs, residual groups with noise after every
    body module, layer attention over all of them, and a noised, CSAM-weighted last output."""

    def __init__(self, n_feats: int = 128, n_resblocks: int = 20, n_resgroups: int = 10, reduction: int = 16,
                 noise_std: float = NOISE_STD):
        super().__init__()
        if n_feats // reduction < 1:
            raise ValueError(f"HAN n_feats {n_feats} leaves no channel-attention channel at reduction {reduction}")
        self.head = nn.Sequential(_conv(3, n_feats, 2), _conv(n_feats, n_feats, 2))
        self.body = nn.Sequential(*[ResidualGroup(n_feats, reduction, n_resblocks) for _ in range(n_resgroups)],
                                  _conv(n_feats, n_feats))
        self.noises = nn.ModuleList([NoiseInjection(n_feats, noise_std) for _ in range(n_resgroups + 2)])
        self.csa = CSAM()
        self.la = LAM()
        self.last_conv = nn.Conv2d(n_feats * (n_resgroups + 1), n_feats, 3, 1, 1)
        self.last = nn.Conv2d(n_feats * 2, n_feats, 3, 1, 1)
        self.tail = nn.Sequential(_conv(n_feats, 3))

    def forward(self, x: torch.Tensor, draws: NoiseDraws) -> torch.Tensor:
        x = self.head(x)
        res, stack = x, []
        for i, module in enumerate(self.body):
            res = self.noises[i](module(res), draws)
            stack.insert(0, res)  # newest first
        # upstream draws this one after LAM and last_conv, which draw nothing: same stream order
        last = self.noises[len(self.body)](res, draws)
        out2 = self.last_conv(self.la(torch.stack(stack, 1)))
        return self.tail(self.last(torch.cat([self.csa(last), out2], 1)) + x)


class HANModel(nn.Module):
    """The ``hanmodel.Model`` wrapper: its only job is the ``model.`` key prefix of the files."""

    def __init__(self, **kw):
        super().__init__()
        self.model = HAN(**kw)

    def forward(self, x: torch.Tensor, draws: NoiseDraws) -> torch.Tensor:
        return self.model(x, draws)


# ---------------------------------------------------------------------------
# discriminator on Haar high bands
# ---------------------------------------------------------------------------
def haar_bands(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-level orthonormal Haar DWT (reflect-padded to even size): LL, LH, HL, HH at half size."""
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="reflect")
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return (a + b + c + d) / 2, (c + d - a - b) / 2, (b + d - a - c) / 2, (a + d - b - c) / 2


class WaveletDiscriminator(nn.Module):
    """Scores the three Haar high bands (each mapped by 0.5 x + 0.5, concatenated); returns logits."""

    def __init__(self, nf: int = 64):
        super().__init__()
        self.net = FSDNet(9, nf, "instance")  # FSSR's discriminator with InstanceNorm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, lh, hl, hh = haar_bands(x)
        return self.net(torch.cat([lh * 0.5 + 0.5, hl * 0.5 + 0.5, hh * 0.5 + 0.5], 1))


class MSSREnsemble(nn.Module):
    """Inference network: 0.5 * clamp(g1(x)) + 0.5 * clamp(g2(x)) (the official validation path)."""

    def __init__(self, g1: nn.Module, g2: nn.Module):
        super().__init__()
        self.g1, self.g2 = g1, g2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.g1(x).clamp(0, 1) + 0.5 * self.g2(x).clamp(0, 1)


# ---------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------
ARCH = {
    "smoke": {"rrdb_nf": 8, "rrdb_nb": 1, "rrdb_gc": 8, "deres_nf": 8, "deres_nb": 2, "han_nf": 16, "han_nb": 1,
              "d_nf": 8, "deg_lr_scale": 1, "deg_share": 0.15},
    # deg_lr_scale multiplies the official generator/discriminator learning rates (1e-4, HAN
    # 1e-5): the quick profile's ~130 degradation steps leave both generators untrained at
    # the official rates (colour loss flat or rising, deterministic fidelity 16 dB on `mixed`).
    # deg_share is the share of the iterations spent on the degradation stage: 0.15 is the
    # official proportion (500 epochs of about 330 iterations before 1e6 SR iterations).
    # Quick gives the generators 4x their proportional 128 steps (513) and keeps the SR
    # stage's 722: after 128 steps their deterministic fidelity was 27.9 dB on `aniso:k=5`
    # and `mixed`, under the bicubic assumption's 29.5; the 4x curve (510 steps) reached
    # 29.9-30.0 (results/reference/curves_h200/). A degradation step costs about 53 ms on
    # the 2-core reference CPU against 88 ms for an SR step: about 20 s more per fit. With it
    # the quick generators score 29.85 / 29.94 dB on `aniso:k=5` / `mixed`
    # (results/reference/curves_cpu/).
    "quick": {"rrdb_nf": 16, "rrdb_nb": 1, "rrdb_gc": 8, "deres_nf": 16, "deres_nb": 4, "han_nf": 16, "han_nb": 1,
              "d_nf": 16, "deg_lr_scale": 10, "deg_share": 0.415},
    "paper": {"rrdb_nf": 64, "rrdb_nb": 23, "rrdb_gc": 32, "deres_nf": 64, "deres_nb": 8, "han_nf": 128, "han_nb": 20,
              "d_nf": 64, "deg_lr_scale": 1, "deg_share": 0.15},
}
HAN_GROUPS = 10  # last_conv takes 11 x n_feats channels in every release

#: degradation stage (degradation/codes/train.py with the README commands)
DEG = {"w_col": 1.0, "w_tex": 0.005, "w_per": 0.01, "noise_lr": 1e-4, "lr": {"deresnet": 1e-4, "han": 1e-5},
       "betas": (0.5, 0.999), "decay_share": 150 / 500}
#: SR stage (sr/config_cont.json)
SR = {"sup": 1.0, "col": 0.01, "col_start": 1, "betas": (0.5, 0.999), "decay_share": 0.2}

SR_PATTERN = re.compile(r"^(\d*)g([12])\.ckpt$")
GEN_FILES = {"deresnet": "DeResnet/checkpoints/last_iteration.tar", "han": "han/checkpoints/last_iteration.tar"}


@register_method
class MSSR(Method, DegradationModel):
    #: bump on any change that changes outputs or fits (see Method.code_version)
    code_version = "1"
    weight_files = (VGG19_FILE,)
    info = MethodInfo(
        name="mssr",
        init_from=("SR nets g1, g2: ESRGAN_PSNR_SRx4_DF2K_official-150ff491.pth (sr/config_cont.json g1_ckpt_path, g2_ckpt_path); degradation generators from scratch"),
        title="MSSR: Learning Multiple Probabilistic Degradation Generators for Unsupervised Real World Image "
              "Super Resolution",
        citation="Lee, Ahn, Yoon. Learning Multiple Probabilistic Degradation Generators for Unsupervised Real "
                 "World Image Super Resolution. ECCV Workshops 2022 (arXiv:2201.10747)",
        family="unpaired",
        objective="psnr",  # SR stage: L1, collaborative L1 and adaptation L1 only
        scales=(4,),
        code_url="https://github.com/sangyun884/MSSR",
        checkpoints=(
            CheckpointInfo("<N>g1.ckpt", "{'params': state_dict}, BasicSR RRDBNet names", "SR network g1 (trained on "
                           "HAN's LR); the newest <N> in the folder is used"),
            CheckpointInfo("<N>g2.ckpt", "{'params': state_dict}, BasicSR RRDBNet names",
                           "SR network g2 (trained on DeResnet's LR)"),
            CheckpointInfo(GEN_FILES["deresnet"], "train.py dict; model_g_state_dict read",
                           "DeResnet degradation generator (no key prefix); optional"),
            CheckpointInfo(GEN_FILES["han"], "train.py dict; model_g_state_dict read",
                           "HAN degradation generator (keys prefixed model.); optional"),
        ),
        gaps=(
            "No checkpoints were released; every number comes from this harness's own fit.",
            ("Official SR training starts both RRDBs from ESRGAN_PSNR_SRx4_DF2K; fit() here starts from random "
            "weights (BasicSR initialisation)."),
            ("The degradation stage's perceptual term is LPIPS (AlexNet) upstream; here it is the VGG19 loss of "
            "bench.train.PerceptualLoss (or its offline stand-in in smoke/quick)."),
        ),
        notes=(
            ("upscale() = 0.5 clamp(g1) + 0.5 clamp(g2), the validation path behind the reported PSNR/LPIPS; the "
            "official phase-test path averages unclamped outputs and truncates to 8 bits when saving "
            "(forward_test_path)."),
            ("config_cont.json's adapt_weight is not used by the official loss: the adaptation L1 is weighted "
            "by iteration / iterations; that is reproduced."),
            ("fit(): the first 15% of the iterations (quick: 41.5%, see ARCH) train both degradation generators, "
            "the rest the two SR networks; both stages share the budget's batch and patch size."),
        ),
    )
    budgets: ClassVar[dict[str, Budget]] = {
        "smoke": Budget(iterations=4, batch_size=2, patch_size=8),
        # lr raised from the official 1e-5 because quick starts from random weights, not a pretrained ESRGAN
        # generators 513 + SR 722 it: 96 s on the idle 2-core reference CPU
        # (results/reference/default_quick/run_log.txt)
        "quick": Budget(iterations=1235, batch_size=4, patch_size=12, lr=2e-4),
        "paper": Budget(iterations=1_000_000, batch_size=1, patch_size=32, lr=1e-5),
    }

    def __init__(self, scale: int, context: MethodContext | None = None, *, profile: str | None = None,
                 device: str | torch.device | None = None, rrdb_nf: int | None = None,
                 rrdb_nb: int | None = None, rrdb_gc: int | None = None, deres_nf: int | None = None,
                 deres_nb: int | None = None, han_nf: int | None = None, han_nb: int | None = None,
                 d_nf: int | None = None, weights_dir: str | None = None):
        super().__init__(scale, context, profile=profile, device=device)
        profile = self.profile
        a = dict(ARCH[profile])
        overrides = {"rrdb_nf": rrdb_nf, "rrdb_nb": rrdb_nb, "rrdb_gc": rrdb_gc, "deres_nf": deres_nf,
                     "deres_nb": deres_nb, "han_nf": han_nf, "han_nb": han_nb, "d_nf": d_nf}
        for key, val in overrides.items():
            if val is not None:
                a[key] = val
        self.arch = a
        self.weights_dir = weights_dir if weights_dir is not None else self.context.weights_dir
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.init_seed())  # deterministic initial weights, independent of the global RNG
            self.g1 = RRDBNet(3, 3, a["rrdb_nf"], a["rrdb_nb"], a["rrdb_gc"], scale=scale)
            self.g2 = RRDBNet(3, 3, a["rrdb_nf"], a["rrdb_nb"], a["rrdb_gc"], scale=scale)
            self.deresnet = DeResnet(a["deres_nb"], a["deres_nf"], scale)
            self.han = HANModel(n_feats=a["han_nf"], n_resblocks=a["han_nb"], n_resgroups=HAN_GROUPS)
            self.d_deresnet = WaveletDiscriminator(a["d_nf"])
            self.d_han = WaveletDiscriminator(a["d_nf"])
        self.ensemble = MSSREnsemble(self.g1, self.g2)
        for m in (self.ensemble, self.deresnet, self.han, self.d_deresnet, self.d_han):
            m.to(self.device).eval()
        self._percep: PerceptualLoss | None = None
        self.deg_ready: set[str] = set()  # generators fitted or loaded
        self.sr_iterations = 0

    # -- bookkeeping -----------------------------------------------------
    def network(self) -> nn.Module:
        return self.ensemble

    def extra_fingerprint(self) -> str:
        return "-".join(f"{k}{v}" for k, v in sorted(self.arch.items()))

    def generators(self) -> dict[str, nn.Module]:
        return {"han": self.han, "deresnet": self.deresnet}

    def discriminators(self) -> dict[str, nn.Module]:
        return {"han": self.d_han, "deresnet": self.d_deresnet}

    def percep(self) -> PerceptualLoss:
        if self._percep is None:
            self._percep = PerceptualLoss(self.profile, self.weights_dir, verify=self.context.verify_weights).to(self.device)
        return self._percep

    # -- inference -------------------------------------------------------
    @torch.no_grad()
    def branches(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (unclamped) outputs of g1 and g2."""
        self.ensemble.eval()
        x = lr.to(self.device, torch.float32)
        return self.g1(x).cpu(), self.g2(x).cpu()

    @torch.no_grad()
    def forward_unclamped(self, lr: torch.Tensor) -> torch.Tensor:
        """The validation ensemble; its branches are clamped by definition, so it lies in [0,1]."""
        self.ensemble.eval()
        return self.ensemble(lr.to(self.device, torch.float32)).cpu()

    def forward_test_path(self, lr: torch.Tensor) -> torch.Tensor:
        """The official phase-test ensemble: 0.5 g1 + 0.5 g2 without clamping."""
        a, b = self.branches(lr)
        return 0.5 * a + 0.5 * b

    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        return self.forward_unclamped(lr).clamp(0, 1)

    def generate(self, which: str, hr: torch.Tensor, draws: NoiseDraws) -> torch.Tensor:
        if which not in GEN_FILES:
            raise BenchError(f"mssr: unknown degradation generator {which!r}; choose 'han' or 'deresnet'")
        return self.generators()[which](hr, draws)

    @torch.no_grad()
    def degrade(self, hr: torch.Tensor, generator: torch.Generator | None = None, noise: bool = True, *,
                which: str = "mixture", clamp: bool = True,
                draws: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """The learned HR -> LR model (eval mode; the noise injection stays on, as upstream).

        ``which``: 'han', 'deresnet', or 'mixture' (both run on the batch, HAN first, one
        noise stream as in the official SR training; each image then takes one of the two
        with probability 1/2). ``noise=False`` zeroes every noise map; ``draws`` replays
        stored unit-normal maps (single generator only). ``generator`` None means a
        fixed-seed generator, so repeated calls agree.
        """
        names = ("han", "deresnet") if which == "mixture" else (which,)
        for name in names:
            if name not in GEN_FILES:
                raise BenchError(f"mssr: unknown degradation generator {name!r}; choose 'han', 'deresnet' or 'mixture'")
            if name not in self.deg_ready:
                raise BenchError(f"mssr has no learned {name} generator: call fit(), or load a folder holding "
                                 f"{GEN_FILES[name]} (MSSR released no checkpoints)")
        if draws is not None and which == "mixture":
            raise BenchError("mssr.degrade: stored draws replay one generator; pass which='han' or 'deresnet'")
        g = generator if generator is not None else torch_generator(0, "mssr-degrade")
        source = NoiseDraws(g, stored=draws, zero=not noise)
        hr = hr.to(self.device, torch.float32)
        outs = {}
        for name in names:
            self.generators()[name].eval()
            outs[name] = self.generate(name, hr, source)
        if which == "mixture":
            pick = (torch.rand(hr.shape[0], generator=g) < 0.5).to(self.device).view(-1, 1, 1, 1)
            lr = torch.where(pick, outs["han"], outs["deresnet"])
        else:
            lr = outs[which]
        return (lr.clamp(0, 1) if clamp else lr).cpu()

    # -- losses ----------------------------------------------------------
    def _g_terms(self, name: str, hr: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """Generator terms against the bicubic-downscaled HR (MATLAB bicubic, as upstream's imresize)."""
        bicubic = imresize_torch(hr, 1 / self.scale)
        return {
            f"{name}_color": F.l1_loss(haar_bands(fake)[0] * 0.5, haar_bands(bicubic)[0] * 0.5),
            f"{name}_tex": gan_loss(self.discriminators()[name](fake), True),
            f"{name}_per": self.percep()(fake, bicubic),
        }

    def _d_term(self, name: str, real_lr: torch.Tensor, fake: torch.Tensor, d: nn.Module | None = None
                ) -> torch.Tensor:
        """``d``: the discriminator's data-parallel wrapper in a multi-rank fit."""
        d = d if d is not None else self.discriminators()[name]
        return gan_loss(d(real_lr), True) + gan_loss(d(fake.detach()), False)

    def _sr_terms(self, hr: torch.Tensor, img1: torch.Tensor, img2: torch.Tensor, target: torch.Tensor
                  ) -> dict[str, torch.Tensor]:
        """Unweighted SR terms; the official step order is kept by :meth:`fit`, this is for inspection."""
        f11, f12 = self.g1(img1).clamp(0, 1), self.g1(img2).clamp(0, 1)
        f22, f21 = self.g2(img2).clamp(0, 1), self.g2(img1).clamp(0, 1)
        ft1, ft2 = self.g1(target).clamp(0, 1), self.g2(target).clamp(0, 1)
        pseudo = (0.5 * ft1 + 0.5 * ft2).detach()
        return {"g1_sup": F.l1_loss(f11, hr), "g1_col": F.l1_loss(f12, f22.detach()),
                "g2_sup": F.l1_loss(f22, hr), "g2_col": F.l1_loss(f21, f11.detach()),
                "g1_adapt": F.l1_loss(pseudo, ft1), "g2_adapt": F.l1_loss(pseudo, ft2)}

    def loss_terms(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None
                   ) -> dict[str, torch.Tensor]:
        """Every training term (unweighted) on one batch {'hr': HR patches, 'lr': real LR patches}."""
        hr, real = batch["hr"].to(self.device), batch["lr"].to(self.device)
        draws = NoiseDraws(generator if generator is not None else torch_generator(0, "mssr-terms"))
        terms: dict[str, torch.Tensor] = {}
        fakes = {}
        for name in ("han", "deresnet"):
            self.generators()[name].train()
            fakes[name] = self.generate(name, hr, draws)
            terms.update(self._g_terms(name, hr, fakes[name]))
            terms[f"d_{name}"] = self._d_term(name, real, fakes[name])
        terms.update(self._sr_terms(hr, fakes["han"].detach(), fakes["deresnet"].detach(), real))
        return terms

    def loss_targets(self) -> dict[str, tuple[str, ...]]:
        """Which attribute modules each term of :meth:`loss_terms` must send gradient to."""
        t: dict[str, tuple[str, ...]] = {}
        for name in ("han", "deresnet"):
            for k in ("color", "tex", "per"):
                t[f"{name}_{k}"] = (name,)
            t[f"d_{name}"] = (f"d_{name}",)
        for g in ("g1", "g2"):
            for k in ("sup", "col", "adapt"):
                t[f"{g}_{k}"] = (g,)
        return t

    # -- training --------------------------------------------------------
    def fit(self, data: TrainingData, budget: Budget) -> FitReport:
        if not data.target_lr:
            raise BenchError("mssr learns from unpaired target-domain LR images: TrainingData.target_lr is empty")
        s, p, n = self.scale, budget.patch_size, budget.batch_size
        hr_pool = PatchSampler(data.source_hr, p * s, torch_generator(data.seed, "mssr", "hr"))
        lr_pool = PatchSampler(data.target_lr, p, torch_generator(data.seed, "mssr", "lr"))
        noise_gen = torch_generator(data.seed, "mssr", "noise")
        n_deg, n_sr = split_iterations(budget.iterations, (self.arch["deg_share"], 1 - self.arch["deg_share"]))
        report = FitReport()
        if self.percep().stand_in:
            report.notes.append(self.percep().stand_in)

        g_opts, d_opts = {}, {}
        for name, gen in self.generators().items():
            noise_params = [q for k, q in gen.named_parameters() if ".noises." in f".{k}"]
            other = [q for k, q in gen.named_parameters() if ".noises." not in f".{k}"]
            k = self.arch["deg_lr_scale"]
            g_opts[name] = torch.optim.Adam([{"params": noise_params, "lr": DEG["noise_lr"] * k},
                                             {"params": other, "lr": DEG["lr"][name] * k}], betas=DEG["betas"])
            d_opts[name] = adam(self.discriminators()[name].parameters(), DEG["lr"][name] * k, betas=DEG["betas"])
        # the groups' starting rates, looked up by position each step: a resumed fit's
        # Optimizer.load_state_dict replaces the param_group dicts
        deg_opts = (*g_opts.values(), *d_opts.values())
        deg_lr0 = [[grp["lr"] for grp in o.param_groups] for o in deg_opts]
        sr_opts = {"g1": adam(self.g1.parameters(), budget.lr, betas=SR["betas"]),
                   "g2": adam(self.g2.parameters(), budget.lr, betas=SR["betas"])}
        state = TrainState(g1=self.g1, g2=self.g2, han=self.han, deresnet=self.deresnet, d_han=self.d_han,
                           d_deresnet=self.d_deresnet, hr_pool=hr_pool, lr_pool=lr_pool, noise_gen=noise_gen,
                           **{f"opt_{k}": o for k, o in g_opts.items()}, **{f"opt_d_{k}": o for k, o in d_opts.items()},
                           **{f"opt_{k}": o for k, o in sr_opts.items()})
        # DistributedDataParallel wrappers under torchrun (the networks themselves otherwise),
        # called where each network's own loss is computed; the generators' adversarial terms
        # go through the bare discriminators
        gens = {name: ddp.parallel(gen) for name, gen in self.generators().items()}
        discs = {name: ddp.parallel(d) for name, d in self.discriminators().items()}
        g1, g2 = ddp.parallel(self.g1), ddp.parallel(self.g2)
        sr_base = self.sr_iterations  # SR iterations done before this fit (a loaded <N>g1.ckpt)

        def deg_step(i: int) -> dict[str, float]:
            # linear decay over the last 150 of 500 epochs
            start = n_deg * (1 - DEG["decay_share"])
            factor = 1.0 - max(0.0, (i - start) / max(1.0, n_deg * DEG["decay_share"]))
            for o, lr0s in zip(deg_opts, deg_lr0):
                for grp, lr0 in zip(o.param_groups, lr0s):
                    grp["lr"] = lr0 * factor
            hr = hr_pool.sample(n).to(self.device)
            real = lr_pool.sample(n).to(self.device)
            out: dict[str, float] = {}
            for name, gen in self.generators().items():
                gen.train()
                d = self.discriminators()[name]
                fake = gens[name](hr, NoiseDraws(noise_gen, shard=True))
                set_requires_grad(d, True)
                d_loss = self._d_term(name, real, fake, discs[name])
                d_opts[name].zero_grad()
                d_loss.backward()
                d_opts[name].step()
                set_requires_grad(d, False)
                t = self._g_terms(name, hr, fake)
                g_loss = DEG["w_col"] * t[f"{name}_color"] + DEG["w_tex"] * t[f"{name}_tex"] \
                    + DEG["w_per"] * t[f"{name}_per"]
                g_opts[name].zero_grad()
                g_loss.backward()
                g_opts[name].step()
                set_requires_grad(d, True)
                out.update({k: v.item() for k, v in t.items()}, **{f"d_{name}": d_loss.item()})
            return out

        def sr_step(it: int) -> dict[str, float]:
            # halve every 200k of 1e6 iterations -> every fifth of the SR stage
            for o in sr_opts.values():
                o.param_groups[0]["lr"] = budget.lr / 2 ** int(it // max(1.0, n_sr * SR["decay_share"]))
            hr = hr_pool.sample(n).to(self.device)
            target = lr_pool.sample(n).to(self.device)
            with torch.no_grad():
                draws = NoiseDraws(noise_gen, shard=True)
                for gen in self.generators().values():
                    gen.eval()
                img1, img2 = self.han(hr, draws), self.deresnet(hr, draws)
            self.g1.train()
            self.g2.train()
            col_on = float(SR["col_start"] < it)
            f11, f12 = g1(img1).clamp(0, 1), g1(img2).clamp(0, 1)
            f22 = g2(img2).clamp(0, 1)
            sup1, col1 = F.l1_loss(f11, hr), F.l1_loss(f12, f22.detach())
            self._sr_update("g1", sr_opts, SR["sup"] * sup1 + SR["col"] * col1 * col_on)
            f21 = g2(img1).clamp(0, 1)
            sup2, col2 = F.l1_loss(f22, hr), F.l1_loss(f21, f11.detach())
            self._sr_update("g2", sr_opts, SR["sup"] * sup2 + SR["col"] * col2 * col_on)
            ft1, ft2 = g1(target).clamp(0, 1), g2(target).clamp(0, 1)
            pseudo = (0.5 * ft1 + 0.5 * ft2).detach()
            ramp = col_on * it / max(1, n_sr)
            ad1, ad2 = F.l1_loss(pseudo, ft1), F.l1_loss(pseudo, ft2)
            self._sr_update("g1", sr_opts, ad1 * ramp)
            self._sr_update("g2", sr_opts, ad2 * ramp)
            self.sr_iterations = sr_base + it + 1  # from the index: a resumed fit counts the steps before it
            return {"g1_sup": sup1.item(), "g1_col": col1.item(), "g2_sup": sup2.item(), "g2_col": col2.item(),
                    "g1_adapt": ad1.item(), "g2_adapt": ad2.item()}

        stages = [Stage("degradation generators", deg_step, n_deg), Stage("sr", sr_step, n_sr)]
        if n_deg:  # the generators being trained are the learned degradation (learning curves read them mid-fit)
            self.deg_ready = {"han", "deresnet"}
        report = run_stages(stages, budget, desc=f"fit mssr x{self.scale}", state=state, report=report)
        self.sr_iterations = sr_base + n_sr  # also when a resumed fit had no SR step left to run
        for m in (self.ensemble, self.deresnet, self.han, self.d_deresnet, self.d_han):
            m.eval()
        report.notes.append(f"degradation generators {n_deg} it, SR networks {n_sr} it")
        return report

    def _sr_update(self, name: str, opts: dict[str, torch.optim.Optimizer], loss: torch.Tensor) -> None:
        # the official code steps each SR optimiser straight after its own backward
        if loss.requires_grad:
            loss.backward(retain_graph=True)
        opts[name].step()
        opts[name].zero_grad()

    # -- checkpoints -----------------------------------------------------
    def warm_start(self) -> WarmStart:
        """Both SR nets start from BasicSR's PSNR RRDBNet: here the shared warm start of this RRDBNet."""
        a, scale = self.arch, self.scale
        return WarmStart(f"RRDBNet nf{a['rrdb_nf']} nb{a['rrdb_nb']} gc{a['rrdb_gc']}", 1.0,
                         warm_budget(self.context.profile),
                         seed=self.init_seed(), make=lambda: RRDBNet(3, 3, a["rrdb_nf"], a["rrdb_nb"],
                                                                              a["rrdb_gc"], scale=scale))

    def load_init(self, path: str | Path) -> None:
        """``--init mssr=ESRGAN_PSNR_SRx4_DF2K_official-150ff491.pth``: the recipe's start of
        both SR nets (sr/config_cont.json ``g1_ckpt_path``/``g2_ckpt_path``, BasicSR
        ``{'params': ...}``; any RRDBNet key family is mapped); the degradation generators
        start from scratch."""
        for idx, net in (("1", self.g1), ("2", self.g2)):
            load_state_dict_checked(net, rrdb_state(load_torch_file(path), net, f"mssr --init {path}"),
                                    what=f"mssr --init {path} for g{idx} (an x4 RRDBNet)")

    def load_checkpoint(self, path: str | Path) -> None:
        """A folder laid out like the official outputs: <N>g1.ckpt, <N>g2.ckpt (required) and the
        generators' last_iteration.tar files (optional)."""
        p = Path(path)
        if not p.is_dir():
            raise CheckpointError(f"mssr checkpoint {p} must be a folder holding <N>g1.ckpt and <N>g2.ckpt "
                                  f"(optionally {GEN_FILES['deresnet']} and {GEN_FILES['han']})")
        for idx, net in (("1", self.g1), ("2", self.g2)):
            f = self._newest_sr_file(p, idx)
            state = load_torch_file(f)
            if not (isinstance(state, Mapping) and "params" in state):
                raise CheckpointError(f"mssr checkpoint {f}: expected {{'params': state_dict}} as written by "
                                      "ContSR.train(); is it an SR file of MSSR?")
            load_state_dict_checked(net, state["params"], what=f"mssr g{idx} checkpoint {f}")
            m = SR_PATTERN.match(f.name)
            self.sr_iterations = int(m.group(1)) if m and m.group(1) else 0
        for name, rel in GEN_FILES.items():
            f = p / rel
            if not f.is_file():
                continue
            state = load_torch_file(f)
            if not (isinstance(state, Mapping) and "model_g_state_dict" in state):
                raise CheckpointError(f"mssr generator {f}: expected a train.py dict with 'model_g_state_dict'")
            load_state_dict_checked(self.generators()[name], state["model_g_state_dict"],
                                    what=f"mssr {name} generator {f}")
            self.deg_ready.add(name)
        self.ensemble.eval()

    @staticmethod
    def _newest_sr_file(folder: Path, idx: str) -> Path:
        found = [(int(m.group(1) or 0), f) for f in folder.glob(f"*g{idx}.ckpt")
                 if (m := SR_PATTERN.match(f.name)) and m.group(2) == idx]
        if not found:
            raise CheckpointError(f"mssr checkpoint folder {folder} has no <N>g{idx}.ckpt (e.g. 300g{idx}.ckpt)")
        return max(found)[1]

    def save_checkpoint(self, path: str | Path) -> None:
        """The official layout: <N>g1.ckpt, <N>g2.ckpt, and each learned generator's train.py dict."""
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        for idx, net in (("1", self.g1), ("2", self.g2)):
            for old in p.glob(f"*g{idx}.ckpt"):  # one SR pair per folder, so the loader's choice is unambiguous
                old.unlink()
            torch.save({"params": {k: v.cpu() for k, v in net.state_dict().items()}},
                       p / f"{self.sr_iterations}g{idx}.ckpt")
        for name in sorted(self.deg_ready):
            f = p / GEN_FILES[name]
            f.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"epoch": 1, "iteration": 1,
                        "model_g_state_dict": {k: v.cpu() for k, v in self.generators()[name].state_dict().items()},
                        "models_d_state_dict": {k: v.cpu() for k, v in
                                                self.discriminators()[name].state_dict().items()}}, f)
