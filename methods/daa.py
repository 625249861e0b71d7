"""DAA (Wang et al., ACCV 2022): blind SR with degradation-aware adaptation.

An IMDN backbone (6 information multi-distillation blocks) gets a degradation-aware
adapter (DAB) after its first conv and after every IMDB; each adapter's DA convs pick,
per pixel, one of 4 region-specific kernels / attentions by a hard argmax over a guide
conv. The degradation representation comes from DASR's encoder
(:class:`methods.dasr_wang.DegradationEncoder`, without the projection head), trained
with a ranker whose scores must order degradations by blur widths and noise level.
Module names follow ``wangyue7777/blindsr_daa`` so ``model_best.pt`` loads unchanged.

Data parallel: the six LR views of a step draw their noise from one generator in turn,
so every rank makes the views of the whole step's batch (all ranks' patches gathered in
rank order) as one process does, and keeps its own slice.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench.adapter import (MethodContext, sha256_file, BenchError, Budget, CheckpointInfo, FitReport, Method, MethodInfo, TrainingData,
                           load_state_dict_checked, load_torch_file, register_method)
from bench.ddp import gather, parallel, shard, world
from bench.resume import TrainState
from bench.train import run_training, torch_generator
from bench.warmstart import WarmStart, warm_budget

from ._blocks import default_conv
from ._stages import Recipe
from .dasr_wang import RGB_RANGE, DegradationEncoder, DegradationSpec, PairSampler, degrade_to_255, uniform

REGIONS = 4


# ---------------------------------------------------------------------------
# IMDN backbone
# ---------------------------------------------------------------------------
def _mean(x: torch.Tensor) -> torch.Tensor:
    return x.sum(3, keepdim=True).sum(2, keepdim=True) / (x.shape[2] * x.shape[3])


def _population_std(x: torch.Tensor) -> torch.Tensor:
    # CCA divides by H*W, not H*W-1 (torch.std's default)
    return ((x - _mean(x)).pow(2).sum(3, keepdim=True).sum(2, keepdim=True) / (x.shape[2] * x.shape[3])).pow(0.5)


class CCALayer(nn.Module):
    """Contrast-aware channel attention: (std + mean) -> 1x1 -> ReLU -> 1x1 -> sigmoid."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(_population_std(x) + _mean(x))


class IMDModule(nn.Module):
    """Information multi-distillation block: three 3x3 convs each keep a quarter of
    the channels, a fourth conv makes the last quarter, CCA, 1x1 fuse, skip."""

    def __init__(self, nf: int):
        super().__init__()
        self.d, self.r = nf // 4, nf - nf // 4
        self.c1 = default_conv(nf, nf, 3)
        self.c2 = default_conv(self.r, nf, 3)
        self.c3 = default_conv(self.r, nf, 3)
        self.c4 = default_conv(self.r, self.d, 3)
        self.c5 = default_conv(nf, nf, 1)
        self.cca = CCALayer(self.d * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1, r1 = torch.split(F.leaky_relu(self.c1(x), 0.05), (self.d, self.r), dim=1)
        d2, r2 = torch.split(F.leaky_relu(self.c2(r1), 0.05), (self.d, self.r), dim=1)
        d3, r3 = torch.split(F.leaky_relu(self.c3(r2), 0.05), (self.d, self.r), dim=1)
        out = torch.cat([d1, d2, d3, self.c4(r3)], dim=1)
        return self.c5(self.cca(out)) + x


# ---------------------------------------------------------------------------
# degradation-aware adapters with region selection
# ---------------------------------------------------------------------------
class SelectRegion(torch.autograd.Function):
    """Forward: per pixel, keep the candidate (of R) whose guide logit is largest (ties:
    first). Backward: straight gradient to the chosen candidate; the guide gets the
    gradient of a softmax-weighted sum (a surrogate, as in DRConv / the official code)."""

    @staticmethod
    def forward(ctx, candidates: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:  # (b,R,c,h,w), (b,R,h,w)
        mask = torch.zeros_like(guide).scatter_(1, guide.argmax(dim=1, keepdim=True), 1).unsqueeze(2)
        ctx.save_for_backward(candidates, guide, mask)
        return (candidates * mask).sum(dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        candidates, guide, mask = ctx.saved_tensors
        g = grad.unsqueeze(1)
        d_guide = (g * candidates).sum(dim=2)
        p = F.softmax(guide, dim=1)
        d_guide = p * (d_guide - (p * d_guide).sum(dim=1, keepdim=True))
        return g * mask, d_guide


class RegionCALayer(nn.Module):
    """Per-region channel attention from the representation (groups=R second conv)."""

    def __init__(self, nf: int):
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(nf, REGIONS * REGIONS, 1, bias=False), nn.LeakyReLU(0.1, True),
            nn.Conv2d(REGIONS * REGIONS, nf * REGIONS, 1, groups=REGIONS, bias=False), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor, rep: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        att = self.conv_du(rep[:, :, None, None]).view(b, REGIONS, c, 1, 1)
        return x.unsqueeze(1) * att  # b, R, c, h, w


class RegionDAConv(nn.Module):
    """DA conv with R region-specific depthwise kernels (region-major from a grouped
    Conv1d) and R channel attentions, each chosen per pixel by its own guide conv."""

    def __init__(self, nf: int, kernel_size: int = 3):
        super().__init__()
        self.k = kernel_size
        self.kernel = nn.Sequential(
            nn.Conv1d(nf, REGIONS * REGIONS, 1, bias=False), nn.LeakyReLU(0.1, True),
            nn.Conv1d(REGIONS * REGIONS, nf * REGIONS * kernel_size ** 2, 1, groups=REGIONS, bias=False),
        )
        self.conv = default_conv(nf, nf, 1)
        self.ca = RegionCALayer(nf)
        self.conv_guide1 = nn.Conv2d(nf, REGIONS, kernel_size, padding=kernel_size // 2)
        self.conv_guide2 = nn.Conv2d(nf, REGIONS, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, rep: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        kernel = self.kernel(rep.unsqueeze(2)).squeeze(2)
        # (b, R, c, k, k) -> (b, c, R, k, k): each input channel's group makes its R outputs
        kernel = kernel.view(b, REGIONS, c, self.k, self.k).transpose(1, 2).reshape(-1, 1, self.k, self.k)
        out = F.leaky_relu(F.conv2d(x.view(1, -1, h, w), kernel, groups=b * c, padding=(self.k - 1) // 2), 0.1)
        out = out.view(b, c, REGIONS, h, w).transpose(1, 2)
        out = self.conv(SelectRegion.apply(out, self.conv_guide1(x)))
        return out + SelectRegion.apply(self.ca(x, rep), self.conv_guide2(x))


class DAB(nn.Module):
    """Degradation-aware adapter: its own compress MLP, two region DA convs, two convs.
    Returns the correction only; IMDN adds it."""

    def __init__(self, nf: int, rep_dim: int = 256):
        super().__init__()
        self.compress = nn.Sequential(
            nn.Linear(rep_dim, nf, bias=False), nn.LeakyReLU(0.1, True),
            nn.Linear(nf, nf, bias=False), nn.LeakyReLU(0.1, True),
        )
        self.da_conv1 = RegionDAConv(nf)
        self.da_conv2 = RegionDAConv(nf)
        self.conv1 = default_conv(nf, nf, 3)
        self.conv2 = default_conv(nf, nf, 3)

    def forward(self, x: torch.Tensor, rep: torch.Tensor) -> torch.Tensor:
        r = self.compress(rep)
        out = F.leaky_relu(self.da_conv1(x, r), 0.1)
        out = F.leaky_relu(self.conv1(out), 0.1)
        out = F.leaky_relu(self.da_conv2(out, r), 0.1)
        return self.conv2(out)


class AdaptedIMDN(nn.Module):
    """G: IMDN with adapters ``adapt0..N`` after ``fea_conv`` and each ``IMDBk``; input
    and output on [0,1]. ``forward`` returns (sr, adapter outputs)."""

    def __init__(self, scale: int = 4, nf: int = 64, num_modules: int = 6, rep_dim: int = 256):
        super().__init__()
        self.num_modules = num_modules
        self.fea_conv = default_conv(3, nf, 3)
        # registration order = the official state dict's key order
        self.adapt0 = DAB(nf, rep_dim)
        for k in range(1, num_modules + 1):
            setattr(self, f"IMDB{k}", IMDModule(nf))
            setattr(self, f"adapt{k}", DAB(nf, rep_dim))
        self.c = nn.Sequential(nn.Conv2d(nf * num_modules, nf, 1), nn.LeakyReLU(0.05, True))
        self.LR_conv = default_conv(nf, nf, 3)
        self.upsampler = nn.Sequential(default_conv(nf, 3 * scale * scale, 3), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor, rep: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``rep=None`` runs the plain IMDN (adapters off), for bicubic backbone training."""
        fea = self.fea_conv(x)
        diffs: list[torch.Tensor] = []
        if rep is not None:
            diffs.append(self.adapt0(fea, rep))
            fea = fea + diffs[0]
        outs, prev = [], fea
        for k in range(1, self.num_modules + 1):
            b = getattr(self, f"IMDB{k}")(prev)
            if rep is not None:
                diffs.append(getattr(self, f"adapt{k}")(b, rep))
                b = b + diffs[-1]
            prev = b
            outs.append(prev)
        out_lr = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea  # the adapted head features
        return self.upsampler(out_lr), diffs


class BicubicIMDN(AdaptedIMDN):
    """G as a plain SR network (adapters off, the SR image only): the warm start's
    network, whose state dict is G's."""

    def forward(self, x: torch.Tensor, rep: None = None) -> torch.Tensor:
        return super().forward(x, None)[0]


class PlainIMDN(nn.Module):
    """G's IMDN without its adapters, as a module of its own over the same parameters:
    what the bicubic backbone stage trains (``G(x, None)``). A data-parallel wrapper of
    all of G would wait there for adapter gradients that never come."""

    def __init__(self, g: AdaptedIMDN):
        super().__init__()
        self.parts = nn.ModuleDict({k: m for k, m in g.named_children() if not k.startswith("adapt")})
        self._g = [g]  # in a list: not a submodule, so the adapters stay out of this module's parameters

    def forward(self, x: torch.Tensor, rep: None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self._g[0](x, None)


# ---------------------------------------------------------------------------
# encoder + ranker
# ---------------------------------------------------------------------------
class Ranker(nn.Module):
    """Scores a representation: larger = more degraded (bicubic-only = 0)."""

    def __init__(self, dim: int = 256):
        super().__init__()
        # not in place: the caller keeps using the encoder output (see RankedEncoder.forward)
        self.R = nn.Sequential(
            nn.LeakyReLU(0.1), nn.Linear(dim, dim // 2), nn.LeakyReLU(0.1),
            nn.Linear(dim // 2, dim // 4), nn.LeakyReLU(0.1), nn.Linear(dim // 4, dim // 8),
            nn.LeakyReLU(0.1), nn.Linear(dim // 8, 1),
        )

    def forward(self, fea: torch.Tensor) -> torch.Tensor:
        """Score of the raw encoder output (R starts with its own LeakyReLU)."""
        return self.R(fea).squeeze(-1)


class RankedEncoder(nn.Module):
    """``E``: DASR's degradation encoder (``encoder_q``) and the ranker (``ranker_q``).
    The official class keeps MoCo's name but has no key encoder and no queue."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.encoder_q = DegradationEncoder(width, with_mlp=False)
        self.ranker_q = Ranker(self.encoder_q.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The representation G receives: LeakyReLU(0.1) of the encoder output. The
        official ranker's first LeakyReLU is in place, so scoring the embedding
        activates the very tensor that is then handed to G (in training and test)."""
        return represent(self.encoder_q(x))


def represent(fea: torch.Tensor) -> torch.Tensor:
    """Encoder output -> what G's adapters receive (see RankedEncoder.forward)."""
    return F.leaky_relu(fea, 0.1)


class BlindSR(nn.Module):
    """``G`` + ``E``; ``forward`` takes the LR on 0..255 (E's range) and returns SR on [0,1]."""

    def __init__(self, scale: int = 4, nf: int = 64, num_modules: int = 6, enc_width: int = 64):
        super().__init__()
        self.G = AdaptedIMDN(scale, nf, num_modules, rep_dim=4 * enc_width)
        self.E = RankedEncoder(enc_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.G(x / RGB_RANGE, self.E(x))[0]


# ---------------------------------------------------------------------------
# ranking objective (official moco/builder1_rank_nn_sep.py, re-expressed)
# ---------------------------------------------------------------------------
RANK_MARGIN = 0.5


def _ordered_pairs(s_a: torch.Tensor, s_b: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Margin ranking of s_a vs s_b in the direction of d = param_a - param_b: mean
    over the images with d > 0, plus mean over those with d < 0 (ties skipped)."""
    total = s_a.new_zeros(())
    for sign in (1.0, -1.0):
        idx = d * sign > 0
        if idx.any():
            total = total + F.margin_ranking_loss(s_a[idx], s_b[idx], torch.full_like(s_a[idx], sign),
                                                  margin=RANK_MARGIN)
    return total


def rank_loss_terms(scores: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The five parts of DAA's ranking loss (unweighted, as named here):

    - rank_lambda1 / rank_lambda2 / rank_noise: q vs a key differing only in that parameter;
    - rank_bicubic: every degraded patch scores above its bicubic-only version (x 0.2 summed);
    - score_equal: q and k (same degradation, other patch) score alike (two-sided L1);
    - score_bicubic_zero: bicubic-only patches score 0.
    """
    q, k, kb = scores["q"], scores["k"], scores["bic"]
    ones = torch.ones_like(q)
    return {
        "rank_lambda1": _ordered_pairs(q, scores["k1"], params["sigma1"] - params["sigma1_n"]),
        "rank_lambda2": _ordered_pairs(q, scores["k2"], params["sigma2"] - params["sigma2_n"]),
        "rank_noise": _ordered_pairs(q, scores["k3"], params["noise"] - params["noise_n"]),
        "rank_bicubic": 0.2 * sum(F.margin_ranking_loss(scores[n], kb, ones, margin=RANK_MARGIN)
                                  for n in ("q", "k", "k1", "k2", "k3")),
        "score_equal": F.l1_loss(q, k.detach()) + F.l1_loss(k, q.detach()),
        "score_bicubic_zero": F.l1_loss(kb, torch.zeros_like(kb)),
    }


#: weights of the parts in the official total ranking loss
RANK_WEIGHTS = {"rank_lambda1": 1.0, "rank_lambda2": 1.0, "rank_noise": 1.0, "rank_bicubic": 1.0,
                "score_equal": 5.0, "score_bicubic_zero": 2.0}


# ---------------------------------------------------------------------------
# the adapter
# ---------------------------------------------------------------------------
#: (nf, num_modules, enc_width) per profile; paper = the released network.
ARCH = {"smoke": (16, 1, 8), "quick": (32, 3, 16), "paper": (64, 6, 64)}

#: official option_IMBD_nn_tt.py: aniso Gaussian, lambda in [0.2, 4], noise up to 25
TRAINING_DEGRADATION = DegradationSpec("aniso", (0.2, 4.0), 25.0)


@dataclass(frozen=True)
class DAARecipe(Recipe):
    """DASR-Wang's epoch schedule with DAA's lengths and rates (1000 iterations an epoch),
    plus the joint stage's ranking weight and the stand-in backbone stage."""

    epochs_sr: int = 700
    lr_encoder: float = 1e-4
    rank_weight_joint: float = 0.2
    #: without imdn_init: this share of the budget pre-trains the plain IMDN on bicubic
    #: pairs, standing in for the bicubic IMDN_x4.pth the official run starts from
    backbone_fraction: float = 0.2
    lr_backbone: float = 2e-4  # IMDN's own initial learning rate


@register_method
class DAA(Method):
    #: bump on any change that changes outputs or fits (see Method.code_version)
    code_version = "1"
    info = MethodInfo(
        name="daa",
        init_from=("SR generator: IMDN_x4.pth (option_IMBD_nn_tt.py --model_pre_train, loaded with strict=False: the adaptation layers start random); MoCo encoder and ranker from scratch"),
        title="DAA: Blind Image Super-Resolution with Degradation-Aware Adaptation",
        citation="Wang, Ming, Jia, Elder, Lu. ACCV 2022",
        family="blind-synthetic",
        home_suites=("aniso",),
        scales=(4,),
        code_url="https://github.com/wangyue7777/blindsr_daa",
        checkpoints=(
            CheckpointInfo("model_pth/model/model_best.pt", "state dict (G.*, E.encoder_q.*, E.ranker_q.*), strict",
                           "x4; pass the file or the model_pth folder"),
        ),
        gaps=(
            ("DAA fine-tunes an IMDN x4 pre-trained on bicubic LR (IMDN_x4.pth, not downloadable here): pass "
             "--init daa=PATH (imdn_init=PATH in code) to use it; otherwise the first 20% of the fit budget pre-trains the plain IMDN on "
             "bicubic pairs of the source pool (a short stand-in for the 1M-iteration IMDN training)."),
            "Only x4 is released and supported.",
            ("Region choice is a hard argmax; outputs can differ from the official ones in small patches where two guide "
             "logits nearly tie (float-noise flips)."),
        ),
        notes=(
            "E sees the LR on 0..255, G sees LR/255 and returns SR on [0,1], as in the official code.",
            "The official encoder is trained by the ranking loss only (no MoCo queue or InfoNCE, despite the class name).",
            ("Training: [bicubic IMDN backbone stage without imdn_init]; stage 1 (1/8 of the rest) trains encoder + "
             "ranker with the ranking loss; stage 2 freezes the ranker and trains E+G with L1 (0..255) + 0.2 x ranking "
             "loss; schedules scaled to the budget."),
        ),
    )
    budgets: ClassVar[dict[str, Budget]] = {
        "smoke": Budget(iterations=4, batch_size=2, patch_size=16, lr=1e-4),
        "quick": Budget(iterations=650, batch_size=4, patch_size=24, lr=1e-4),
        # official: 100 encoder + 700 joint epochs of 1000 iterations, batch 32, LR patch 48
        "paper": Budget(iterations=800_000, batch_size=32, patch_size=48, lr=1e-4),
    }
    recipe: ClassVar[DAARecipe] = DAARecipe()

    def __init__(self, scale: int = 4, context: MethodContext | None = None, *, profile: str | None = None,
                 device: str | torch.device | None = None, nf: int | None = None,
                 num_modules: int | None = None, enc_width: int | None = None, imdn_init: str | Path | None = None):
        super().__init__(scale, context, profile=profile, device=device)
        profile = self.profile
        a, b, c = ARCH[profile]
        self.arch = {"nf": nf or a, "num_modules": num_modules or b, "enc_width": enc_width or c}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.init_seed())  # deterministic initial weights
            self.net = BlindSR(scale, **self.arch).to(self.device)
        imdn_init = imdn_init or self.context.init_file(self.info.name)  # --init daa=IMDN_x4.pth
        self.imdn_init = Path(imdn_init) if imdn_init else None
        if self.imdn_init:
            self.load_imdn(self.imdn_init)
        self.net.eval()

    def network(self) -> nn.Module:
        return self.net

    def extra_fingerprint(self) -> str:
        a = self.arch
        # by content: two files of one name are two starting points
        init = f"-init{sha256_file(self.imdn_init)[:16]}" if self.imdn_init else ""
        return f"nf{a['nf']}-m{a['num_modules']}-e{a['enc_width']}{init}"

    # -- inference --------------------------------------------------------
    @torch.no_grad()
    def forward_unclamped(self, lr: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        return self.net(lr.to(self.device, torch.float32) * RGB_RANGE).to(lr.device)

    @torch.no_grad()
    def embedding(self, lr: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        return self.net.E(lr.to(self.device, torch.float32) * RGB_RANGE).to(lr.device)

    @torch.no_grad()
    def score(self, lr: torch.Tensor) -> torch.Tensor:
        """The ranker's degradation score (G does not use it)."""
        self.net.eval()
        x = lr.to(self.device, torch.float32) * RGB_RANGE
        return self.net.E.ranker_q(self.net.E.encoder_q(x)).to(lr.device)

    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        return self.forward_unclamped(lr).clamp(0, 1)

    # -- checkpoints ------------------------------------------------------
    @staticmethod
    def _release_file(path: str | Path) -> Path:
        p = Path(path)
        # the official loader takes the model_pth folder and reads model/model_best.pt in it
        if p.is_dir() and (p / "model" / "model_best.pt").is_file():
            return p / "model" / "model_best.pt"
        return p

    def load_checkpoint(self, path: str | Path) -> None:
        f = self._release_file(path)
        load_state_dict_checked(self.net, load_torch_file(f), what=f"daa checkpoint {f}")
        self.net.eval()

    def save_checkpoint(self, path: str | Path) -> None:
        torch.save(self.net.state_dict(), path)

    def warm_start(self) -> WarmStart:
        """G's IMDN starts from the bicubic ``IMDN_x4.pth``: here the shared warm start of
        this IMDN (G with its adapters off), built as the constructor builds G."""
        a, scale = self.arch, self.scale
        return WarmStart(f"IMDN nf{a['nf']} m{a['num_modules']} (DAA's G, adapters off)", 1.0,
                         warm_budget(self.context.profile),
                         seed=self.init_seed(), make=lambda: BicubicIMDN(
                             scale, a["nf"], a["num_modules"], rep_dim=4 * a["enc_width"]))

    def load_init(self, path: str | Path) -> None:
        """``--init daa=IMDN_x4.pth``: the recipe's start of G's backbone (the constructor reads
        the same file from the context; loading it again is harmless). With it the bicubic
        backbone stage is skipped, as in the official recipe."""
        self.imdn_init = Path(path)
        self.load_imdn(self.imdn_init)

    def load_imdn(self, path: str | Path) -> None:
        """Initialise G's IMDN part from an IMDN checkpoint (keys ``module.*``), as the
        official training does; the adapters stay at their initial weights."""
        state = load_torch_file(path)
        state = {k.split(".", 1)[1] if k.startswith("module.") else k: v for k, v in state.items()}
        # IMDN files have no adapters; a warm start's G has untrained ones: G keeps its own
        state = {k: v for k, v in state.items() if not k.startswith("adapt")}
        load_state_dict_checked(self.net.G, state, what=f"IMDN initialisation {path}",
                                allow_missing=lambda k: k.startswith("adapt"))

    # -- training ---------------------------------------------------------
    def make_batch(self, hr_pairs: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Six LR views per image (official trainer): q (patch 0) and k (patch 1) share
        (lambda1, lambda2, theta, noise level); k1 / k2 / k3 (patch 1) redraw lambda1 /
        lambda2 / noise only; bic (patch 1) is bicubic-only. All on 0..255, rounded."""
        n, spec = hr_pairs.shape[0], TRAINING_DEGRADATION
        (lo, hi), g = spec.sigma_range, generator
        # draw order as the official trainer: q/k parameters, then the redrawn ones
        p = {"sigma1": uniform(n, lo, hi, g), "sigma2": uniform(n, lo, hi, g),
             "noise": uniform(n, 0.0, spec.noise_max, g), "theta": uniform(n, 0.0, math.pi, g)}
        p.update(sigma1_n=uniform(n, lo, hi, g), sigma2_n=uniform(n, lo, hi, g),
                 noise_n=uniform(n, 0.0, spec.noise_max, g))
        hr0, hr1 = hr_pairs[:, 0], hr_pairs[:, 1]

        def view(hr, s1, s2, nz):
            return degrade_to_255(hr, self.scale, s1, s2, p["theta"], nz, generator, spec.kernel_size)

        lr = {
            "q": view(hr0, p["sigma1"], p["sigma2"], p["noise"]),
            "k": view(hr1, p["sigma1"], p["sigma2"], p["noise"]),
            "k1": view(hr1, p["sigma1_n"], p["sigma2"], p["noise"]),
            "k2": view(hr1, p["sigma1"], p["sigma2_n"], p["noise"]),
            "k3": view(hr1, p["sigma1"], p["sigma2"], p["noise_n"]),
            "bic": degrade_to_255(hr1, self.scale, None, None, None, torch.zeros(n), generator),
        }
        batch = {f"lr_{k}": v.to(self.device) for k, v in lr.items()}
        batch.update({k: v.to(self.device) for k, v in p.items()})
        batch["hr"] = hr0.to(self.device)
        return batch

    def make_bicubic_batch(self, hr: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """HR patches -> bicubic-only LR (0..255, rounded) for the backbone stage."""
        lr = degrade_to_255(hr, self.scale, None, None, None, torch.zeros(hr.shape[0]), generator)
        return {"lr_bic": lr.to(self.device), "hr": hr.to(self.device)}

    def loss_terms(self, batch: Mapping[str, torch.Tensor], stage: str = "joint", *, g: nn.Module | None = None,
                   imdn: nn.Module | None = None, encoder: nn.Module | None = None,
                   ranker: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """``backbone``: L1 (0..255) of the plain IMDN on bicubic LR. ``encoder``: the
        unweighted parts of the ranking loss; ``joint``: those plus ``sr_l1`` on 0..255.

        ``g``/``imdn``/``encoder``/``ranker``: data-parallel wrappers of G, of its
        :class:`PlainIMDN`, of the encoder and of the ranker, each called where it learns;
        the joint stage's frozen ranker is called bare (see ``bench.ddp.parallel``)."""
        if stage == "backbone":
            sr, _ = (imdn or self.net.G)(batch["lr_bic"] / RGB_RANGE, None)
            return {"backbone_l1": F.l1_loss(sr, batch["hr"]) * RGB_RANGE}
        E = self.net.E
        enc = encoder or E.encoder_q
        rank = (ranker or E.ranker_q) if stage == "encoder" else E.ranker_q
        views = ("q", "k", "k1", "k2", "k3", "bic")
        feas = {v: enc(batch[f"lr_{v}"]) for v in views}
        scores = {v: rank(f) for v, f in feas.items()}
        terms = rank_loss_terms(scores, batch)
        if stage == "joint":
            sr, _ = (g or self.net.G)(batch["lr_q"] / RGB_RANGE, represent(feas["q"]))
            terms["sr_l1"] = F.l1_loss(sr, batch["hr"]) * RGB_RANGE
        return terms

    def total_loss(self, terms: Mapping[str, torch.Tensor], stage: str) -> torch.Tensor:
        if stage == "backbone":
            return terms["backbone_l1"]
        rank = sum(RANK_WEIGHTS[k] * terms[k] for k in RANK_WEIGHTS)
        if stage == "encoder":
            return rank
        return self.recipe.rank_weight_joint * rank + terms["sr_l1"]

    def fit(self, data: TrainingData, budget: Budget) -> FitReport:
        if self.scale != 4:
            raise BenchError("daa trains only at x4")
        n_backbone = 0 if self.imdn_init else max(1, round(budget.iterations * self.recipe.backbone_fraction))
        n_daa = budget.iterations - n_backbone
        if n_daa < 2:
            raise BenchError(f"daa needs a budget of at least {n_backbone + 2} iterations "
                             "(bicubic backbone stage, encoder stage, joint stage)")
        sampler = PairSampler(data.source_hr, budget.patch_size * self.scale,
                              torch_generator(data.seed, self.info.name, "patches"))
        deg_gen = torch_generator(data.seed, self.info.name, "degradations")
        E, G = self.net.E, self.net.G
        backbone = [p for k, p in G.named_parameters() if not k.startswith("adapt")]
        opt_backbone = torch.optim.Adam(backbone, lr=self.recipe.lr_backbone)
        opt_eg = torch.optim.Adam(list(E.encoder_q.parameters()) + list(G.parameters()), lr=self.recipe.lr_encoder)
        opt_r = torch.optim.Adam(E.ranker_q.parameters(), lr=self.recipe.lr_encoder)
        state = TrainState(net=self.net, opt_backbone=opt_backbone, opt_eg=opt_eg, opt_r=opt_r, sampler=sampler,
                           deg_gen=deg_gen)
        # DDP wrappers under torchrun, one per set of parameters a stage trains
        nets = dict(g=parallel(G), imdn=parallel(PlainIMDN(G)), encoder=parallel(E.encoder_q),
                    ranker=parallel(E.ranker_q))
        self.net.train()

        def lr_views(hr_pairs: torch.Tensor) -> dict[str, torch.Tensor]:
            """This rank's slice of the whole batch's LR views, drawn as one process draws them."""
            if world().size == 1:
                return self.make_batch(hr_pairs, deg_gen)
            whole = self.make_batch(gather(hr_pairs.to(self.device)).cpu(), deg_gen)  # NCCL gathers on the GPU
            return {k: shard(v) for k, v in whole.items()}

        def step(i: int) -> dict[str, float]:
            if i < n_backbone:  # bicubic-only LR draws nothing: this rank's patches suffice
                terms = self.loss_terms(self.make_bicubic_batch(sampler.sample(budget.batch_size), deg_gen), "backbone",
                                        **nets)
                opt_backbone.zero_grad()
                terms["backbone_l1"].backward()
                opt_backbone.step()
                return {k: v.item() for k, v in terms.items()}
            j = i - n_backbone
            stage = self.recipe.stage(j, n_daa)
            lr = self.recipe.lr(j, n_daa, budget.lr)
            for group in opt_eg.param_groups + opt_r.param_groups:
                group["lr"] = lr
            # the official joint stage freezes the ranker (it still passes gradient to E)
            for p in E.ranker_q.parameters():
                p.requires_grad_(stage == "encoder")
            terms = self.loss_terms(lr_views(sampler.sample_pairs(budget.batch_size)), stage, **nets)
            loss = self.total_loss(terms, stage)
            opt_eg.zero_grad()
            opt_r.zero_grad()
            loss.backward()
            opt_eg.step()
            if stage == "encoder":
                opt_r.step()
            return {k: v.item() for k, v in terms.items()}

        try:
            report = run_training(step, budget, desc=f"fit daa x{self.scale}", state=state)
        finally:
            for p in E.ranker_q.parameters():
                p.requires_grad_(True)
            self.net.eval()
        if self.imdn_init is None:
            report.notes.append(f"G's IMDN backbone pre-trained here on bicubic pairs for {n_backbone} iterations "
                                "(the official run starts from the released bicubic IMDN_x4.pth)")
        return report
