"""DASR (Wang et al., CVPR 2021): unsupervised degradation representation learning.

A MoCo-trained degradation encoder E maps an LR image to a 256-d representation; the
degradation-aware SR network G (DA convolutions: per-image predicted depthwise kernels
plus channel attention) consumes it. Module names follow the official code
(``G.*``, ``E.encoder_q.*``) so the released ``model_600.pt`` loads unchanged.

Training (paper / official ``trainer.py``): two LR patches per HR image share one
degradation; stage 1 trains E alone with the MoCo InfoNCE loss (queue 8192, T 0.07,
momentum 0.999); stage 2 trains E and G with L1 (0..255 scale) + InfoNCE.
The degradation encoder and MoCo live here; DAA (methods/daa.py) imports the encoder.
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

from bench.adapter import (MethodContext, MethodVariant, BenchError, Budget, CheckpointInfo, FitReport, Method, MethodInfo, TrainingData,
                           load_state_dict_checked, load_torch_file, register_method)
from bench.degrade import ops_torch
from bench import ddp
from bench.ddp import parallel
from bench.resume import TrainState
from bench.train import PatchSampler, Stage, run_stages, torch_generator

from ._blocks import MeanShift, Upsampler, default_conv
from ._stages import Recipe

RGB_RANGE = 255.0  # the official networks work on 0..255 end to end


# ---------------------------------------------------------------------------
# degradation encoder and MoCo (shared with DAA)
# ---------------------------------------------------------------------------
class DegradationEncoder(nn.Module):
    """Six conv-BN-LeakyReLU(0.1) layers (two stride-2) + global average pooling.

    ``width`` 64 gives the official 64-64-128-128-256-256 stack and a 256-d
    representation. ``with_mlp`` adds the projection head DASR's contrastive loss uses
    (DAA's encoder has none).
    """

    def __init__(self, width: int = 64, with_mlp: bool = True):
        super().__init__()
        w = width
        chans = [(3, w, 1), (w, w, 1), (w, 2 * w, 2), (2 * w, 2 * w, 1), (2 * w, 4 * w, 2), (4 * w, 4 * w, 1)]
        layers: list[nn.Module] = []
        for cin, cout, stride in chans:
            layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1, True)]
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.E = nn.Sequential(*layers)
        self.dim = 4 * w
        self.mlp = (
            nn.Sequential(nn.Linear(self.dim, self.dim), nn.LeakyReLU(0.1, True), nn.Linear(self.dim, self.dim))
            if with_mlp else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The representation G receives: pooled features, before the mlp head."""
        return self.E(x).flatten(1)

    def project(self, fea: torch.Tensor) -> torch.Tensor:
        if self.mlp is None:
            raise BenchError("this degradation encoder was built without the contrastive projection head")
        return self.mlp(fea)


class MoCo(nn.Module):
    """Momentum contrast over degradations (He et al. 2020, as DASR uses it).

    A positive pair is two patches of one image under one degradation; negatives are
    the queued keys of earlier batches (other degradations, mostly).
    """

    def __init__(self, width: int = 64, queue_size: int = 32 * 256, momentum: float = 0.999,
                 temperature: float = 0.07):
        super().__init__()
        self.K, self.m, self.T = queue_size, momentum, temperature
        self.encoder_q = DegradationEncoder(width, with_mlp=True)
        self.encoder_k = DegradationEncoder(width, with_mlp=True)
        self.sync_key_encoder()
        dim = self.encoder_q.dim
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def sync_key_encoder(self) -> None:
        """Key encoder := query encoder (MoCo's initialisation; also after loading a
        release, which does not contain the key encoder)."""
        for pq, pk in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            pk.data.copy_(pq.data)
            pk.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder_q(x)

    @torch.no_grad()
    def _momentum_update(self) -> None:
        for pq, pk in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            pk.data.mul_(self.m).add_(pq.data, alpha=1.0 - self.m)

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        # data parallel: every rank enqueues the whole step's keys in rank order, so all
        # ranks keep one queue, as one process would (DASR's own code has this gather
        # commented out; MoCo's concat_all_gather does it)
        keys = ddp.gather(keys)
        n = keys.shape[0]
        if self.K % n:
            raise BenchError(f"MoCo queue size {self.K} must be a multiple of the total batch size {n}; change the "
                             "batch size")
        ptr = int(self.queue_ptr)
        self.queue[:, ptr:ptr + n] = keys.t()
        self.queue_ptr[0] = (ptr + n) % self.K

    def contrast(self, im_q: torch.Tensor, im_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training step of MoCo: (query representation, InfoNCE loss). Updates the key
        encoder and the queue as a side effect, as the official forward does."""
        fea = self.encoder_q(im_q)
        q = F.normalize(self.encoder_q.project(fea), dim=1)
        with torch.no_grad():
            self._momentum_update()
            k = F.normalize(self.encoder_k.project(self.encoder_k(im_k)), dim=1)
        l_pos = (q * k).sum(1, keepdim=True)
        l_neg = q @ self.queue.clone().detach()
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        self._enqueue(k)
        return fea, F.cross_entropy(logits, labels)


# ---------------------------------------------------------------------------
# degradation-aware SR network G
# ---------------------------------------------------------------------------
class CALayer(nn.Module):
    """Channel attention driven by the degradation representation."""

    def __init__(self, n_feats: int, reduction: int):
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(n_feats, n_feats // reduction, 1, bias=False), nn.LeakyReLU(0.1, True),
            nn.Conv2d(n_feats // reduction, n_feats, 1, bias=False), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor, rep: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(rep[:, :, None, None])


class DAConv(nn.Module):
    """DA conv: a per-image depthwise kernel predicted from the representation, then a
    1x1 conv; plus representation-driven channel attention."""

    def __init__(self, n_feats: int, kernel_size: int = 3, reduction: int = 8):
        super().__init__()
        self.k = kernel_size
        self.kernel = nn.Sequential(
            nn.Linear(n_feats, n_feats, bias=False), nn.LeakyReLU(0.1, True),
            nn.Linear(n_feats, n_feats * kernel_size * kernel_size, bias=False),
        )
        self.conv = default_conv(n_feats, n_feats, 1)
        self.ca = CALayer(n_feats, reduction)

    def forward(self, x: torch.Tensor, rep: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        kernel = self.kernel(rep).view(-1, 1, self.k, self.k)
        # one group per (image, channel): every image gets its own kernels
        out = F.leaky_relu(F.conv2d(x.view(1, -1, h, w), kernel, groups=b * c, padding=(self.k - 1) // 2), 0.1)
        return self.conv(out.view(b, -1, h, w)) + self.ca(x, rep)


class DAB(nn.Module):
    def __init__(self, n_feats: int, kernel_size: int = 3, reduction: int = 8):
        super().__init__()
        self.da_conv1 = DAConv(n_feats, kernel_size, reduction)
        self.da_conv2 = DAConv(n_feats, kernel_size, reduction)
        self.conv1 = default_conv(n_feats, n_feats, kernel_size)
        self.conv2 = default_conv(n_feats, n_feats, kernel_size)

    def forward(self, x: torch.Tensor, rep: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.da_conv1(x, rep), 0.1)
        out = F.leaky_relu(self.conv1(out), 0.1)
        out = F.leaky_relu(self.da_conv2(out, rep), 0.1)
        return self.conv2(out) + x


class DAG(nn.Module):
    """``n_blocks`` DABs + a closing conv, with a group skip (``body.{0..n-1}``, ``body.n``)."""

    def __init__(self, n_feats: int, n_blocks: int, kernel_size: int = 3, reduction: int = 8):
        super().__init__()
        self.body = nn.Sequential(*[DAB(n_feats, kernel_size, reduction) for _ in range(n_blocks)],
                                  default_conv(n_feats, n_feats, kernel_size))

    def forward(self, x: torch.Tensor, rep: torch.Tensor) -> torch.Tensor:
        res = x
        for block in self.body[:-1]:
            res = block(res, rep)
        return self.body[-1](res) + x


class DASRNet(nn.Module):
    """G: head, ``n_groups`` DAGs + conv with a long skip, upsampler tail; 0..255 in and out."""

    def __init__(self, scale: int, n_groups: int = 5, n_blocks: int = 5, n_feats: int = 64, rep_dim: int = 256,
                 reduction: int = 8):
        super().__init__()
        self.sub_mean = MeanShift(RGB_RANGE)
        self.add_mean = MeanShift(RGB_RANGE, sign=1)
        self.head = nn.Sequential(default_conv(3, n_feats, 3))
        self.compress = nn.Sequential(nn.Linear(rep_dim, n_feats, bias=False), nn.LeakyReLU(0.1, True))
        self.body = nn.Sequential(*[DAG(n_feats, n_blocks, 3, reduction) for _ in range(n_groups)],
                                  default_conv(n_feats, n_feats, 3))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), default_conv(n_feats, 3, 3))

    def forward(self, x: torch.Tensor, rep: torch.Tensor) -> torch.Tensor:
        rep = self.compress(rep)  # computed once, shared by every DA conv
        x = self.head(self.sub_mean(x))
        res = x
        for group in self.body[:-1]:
            res = group(res, rep)
        res = self.body[-1](res) + x
        return self.add_mean(self.tail(res))


class BlindSR(nn.Module):
    """``G`` + ``E`` as in the release; ``forward`` is the inference path on 0..255."""

    def __init__(self, scale: int, n_groups: int = 5, n_blocks: int = 5, n_feats: int = 64, enc_width: int = 64,
                 queue_size: int = 32 * 256):
        super().__init__()
        self.G = DASRNet(scale, n_groups, n_blocks, n_feats, rep_dim=4 * enc_width)
        self.E = MoCo(enc_width, queue_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.G(x, self.E(x))


# ---------------------------------------------------------------------------
# training data: paired patches sharing one synthetic degradation
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DegradationSpec:
    """The training degradation family (paper Sec. 4.1; official option.py/main.sh)."""

    kind: str = "iso"  # 'iso' | 'aniso'
    sigma_range: tuple[float, float] = (0.2, 4.0)  # iso sigma, or aniso lambda_1/lambda_2 (std devs)
    noise_max: float = 0.0  # AWGN sigma ~ U[0, noise_max] on 0..255
    kernel_size: int = 21


def training_degradation(kind: str, scale: int) -> DegradationSpec:
    """Paper Sec. 4.1: iso widths U[0.2, 2/3/4] at x2/x3/x4, noise-free (the iso
    releases); aniso lambda_1, lambda_2 U[0.2, 4], theta U[0, pi), noise U[0, 25]
    (the x4 aniso release)."""
    if kind == "iso":
        return DegradationSpec("iso", ops_torch.DASR_ISO_RANGE[scale], 0.0)
    if kind == "aniso":
        return DegradationSpec("aniso", ops_torch.DASR_ANISO_RANGE, 25.0)
    raise BenchError(f"dasr-wang degradation={kind!r} is unknown; choose 'iso' or 'aniso'")


class PairSampler(PatchSampler):
    """Two HR patches from one image (after one flip/transpose of the whole image),
    as the official loader does: N x 2 x 3 x p x p."""

    def _draw_pairs(self, n: int) -> torch.Tensor:
        out = []
        for _ in range(n):
            im = self._image(self._randint(len(self.pool)))
            if self.augment:
                im = self._augment(im)
            h, w = im.shape[1:]
            pair = []
            for _ in range(2):
                y, x = self._randint(h - self.patch + 1), self._randint(w - self.patch + 1)
                pair.append(im[:, y:y + self.patch, x:x + self.patch])
            out.append(torch.stack(pair))
        return torch.stack(out).contiguous()


def uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def degrade_to_255(hr: torch.Tensor, scale: int, sigma1: torch.Tensor | None, sigma2: torch.Tensor | None,
                   theta: torch.Tensor | None, noise: torch.Tensor, generator: torch.Generator,
                   kernel_size: int = 21) -> torch.Tensor:
    """HR (N x 3 x H x W, [0,1]) -> LR on 0..255, rounded and clamped as the official
    ``SRMDPreprocessing``: Gaussian blur (reflect padding; none when ``sigma1`` is None),
    MATLAB bicubic downsampling, AWGN with per-image sigma on 0..255, then rounding."""
    x = hr
    if sigma1 is not None:
        kernels = ops_torch.gaussian_kernels(sigma1, sigma2, theta, size=kernel_size)
        x = ops_torch.blur(x, kernels, padding="reflect")
    x = ops_torch.bicubic_down(x, scale)
    if bool((noise > 0).any()):
        x = ops_torch.add_awgn(x, noise, generator)
    return (x * RGB_RANGE).round().clamp(0, RGB_RANGE)


def sample_degradation(spec: DegradationSpec, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-image parameters: sigma1, sigma2 (std devs), theta (radians), noise (0..255)."""
    lo, hi = spec.sigma_range
    if spec.kind == "iso":
        s = uniform(n, lo, hi, g)
        p = {"sigma1": s, "sigma2": s.clone(), "theta": torch.zeros(n)}
    else:
        p = {"sigma1": uniform(n, lo, hi, g), "sigma2": uniform(n, lo, hi, g), "theta": uniform(n, 0.0, math.pi, g)}
    p["noise"] = uniform(n, 0.0, spec.noise_max, g)
    return p


# ---------------------------------------------------------------------------
# the adapter
# ---------------------------------------------------------------------------
#: (n_groups, n_blocks, n_feats, enc_width) per profile; paper = the official network.
ARCH = {"smoke": (1, 1, 16, 8), "quick": (2, 2, 32, 16), "paper": (5, 5, 64, 64)}


class _Objective(nn.Module):
    """One stage's training forward (``loss_terms``) as a module: what DistributedDataParallel
    wraps, since the step calls the encoder's ``contrast`` rather than a ``forward``. The
    encoder stage holds only E, so G is not an unused parameter of that stage's wrapper."""

    def __init__(self, method: "DASRWang", stage: str):
        super().__init__()
        self.stage = stage
        self.trained = method.net.E if stage == "encoder" else method.net
        self._terms = method.loss_terms

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._terms(batch, self.stage)


@register_method
class DASRWang(Method):
    #: bump on any change that changes outputs or fits (see Method.code_version)
    code_version = "1"
    info = MethodInfo(
        name="dasr-wang",
        init_from="scratch (main.sh: no --pre_train; the encoder stage runs first in the same fit)",
        title="DASR: Unsupervised Degradation Representation Learning for Blind Super-Resolution",
        citation="Wang, Wang, Yin, Dong, Wang, An, Guo. CVPR 2021",
        family="blind-synthetic",
        home_suites=("aniso",),
        scales=(2, 3, 4),
        code_url="https://github.com/The-Learning-And-Vision-Atelier-LAVA/DASR",
        checkpoints=(
            CheckpointInfo("experiment/blindsr_x{2,3,4}_bicubic_iso/model/model_600.pt", "state dict (G.*, E.encoder_q.*)",
                           "iso releases, trained noise-free; MoCo key encoder and queue dropped"),
            CheckpointInfo("experiment/blindsr_x4_bicubic_aniso/model/model_600.pt", "state dict (G.*, E.encoder_q.*)",
                           "x4 aniso release, trained with noise U[0,25]; use degradation='aniso'"),
        ),
        gaps=(
            ("Retrained DASR-Wang x4 falls 0.4-0.8 dB short of the paper and the released model_600.pt: official "
             "issue #75 (Set14 x4 iso sigma 3.6: 27.01 vs 27.45 dB), #41 (Set5 x4 iso, ~0.8 dB), #38 (x2); the authors "
             "attribute it to run-to-run variance of the unsupervised encoder. Quick/smoke fits here are far shorter."),
            ("Iso training widths follow the paper (U[0.2, 2/3/4] at x2/x3/x4); the official main.sh example shows "
             "sig_max 4.0 even for x2."),
            "The paper's Table 2 Bicubic row matches the official degradation pipeline only at kernel width 0.",
            "The paper states 5.8M parameters; the released x4 state dict holds 5,969,307 (G 4,690,523 + encoder 1,278,784).",
        ),
        notes=(
            "E sees the LR on 0..255 and G works on 0..255 with DIV2K mean shift, as in the official code.",
            ("Training: 2 LR patches per image share one degradation; stage 1 (1/6 of the budget) trains E with MoCo "
             "(queue 8192, T 0.07, m 0.999), stage 2 trains E+G with L1 + InfoNCE; schedules scaled to the budget."),
        ),
    )
    budgets: ClassVar[dict[str, Budget]] = {
        "smoke": Budget(iterations=4, batch_size=2, patch_size=16, lr=1e-4),
        "quick": Budget(iterations=700, batch_size=8, patch_size=24, lr=1e-4),
        # official: 100 encoder + 500 joint epochs of 1000 iterations, batch 32, LR patch 48
        "paper": Budget(iterations=600_000, batch_size=32, patch_size=48, lr=1e-4),
    }
    recipe: ClassVar[Recipe] = Recipe()
    variants = {
        "": MethodVariant("", "isotropic Gaussian kernels, noise-free (the iso releases)",
                          (("degradation", "iso"),), ("_bicubic_iso/",)),
        "aniso": MethodVariant("aniso", "anisotropic Gaussian kernels with noise U[0,25] (the x4 aniso release)",
                               (("degradation", "aniso"),), ("blindsr_x4_bicubic_aniso/",)),
    }

    def __init__(self, scale: int, context: MethodContext | None = None, *, profile: str | None = None,
                 device: str | torch.device | None = None, degradation: str = "iso",
                 n_groups: int | None = None, n_blocks: int | None = None, n_feats: int | None = None,
                 enc_width: int | None = None, queue_size: int = 32 * 256):
        super().__init__(scale, context, profile=profile, device=device)
        profile = self.profile
        self.degradation = training_degradation(degradation, scale)
        g, b, f, e = ARCH[profile]
        self.arch = {"n_groups": n_groups or g, "n_blocks": n_blocks or b, "n_feats": n_feats or f,
                     "enc_width": enc_width or e, "queue_size": queue_size}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.init_seed())  # deterministic initial weights and queue
            self.net = BlindSR(scale, **self.arch).to(self.device)
        self.net.eval()

    # -- description ------------------------------------------------------
    def network(self) -> nn.Module:
        return self.net

    def extra_fingerprint(self) -> str:
        a = self.arch
        return (f"{self.degradation.kind}-g{a['n_groups']}-b{a['n_blocks']}-f{a['n_feats']}-e{a['enc_width']}"
                f"-q{a['queue_size']}")

    # -- inference --------------------------------------------------------
    @torch.no_grad()
    def forward_unclamped(self, lr: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        x = lr.to(self.device, torch.float32) * RGB_RANGE
        return (self.net(x) / RGB_RANGE).to(lr.device)

    @torch.no_grad()
    def embedding(self, lr: torch.Tensor) -> torch.Tensor:
        """The degradation representation G receives (N x 256 at full width)."""
        self.net.eval()
        return self.net.E(lr.to(self.device, torch.float32) * RGB_RANGE).to(lr.device)

    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        return self.forward_unclamped(lr).clamp(0, 1)

    # -- checkpoints ------------------------------------------------------
    @staticmethod
    def _dropped_by_release(key: str) -> bool:
        # official trainer.py deletes the MoCo key encoder and the queue before saving
        return key.startswith("E.encoder_k.") or key in ("E.queue", "E.queue_ptr")

    def load_checkpoint(self, path: str | Path) -> None:
        state = load_torch_file(path)
        load_state_dict_checked(self.net, state, what=f"dasr-wang checkpoint {path}",
                                allow_missing=self._dropped_by_release)
        if not any(k.startswith("E.encoder_k.") for k in state):
            self.net.E.sync_key_encoder()
        self.net.eval()

    def save_checkpoint(self, path: str | Path) -> None:
        state = {k: v for k, v in self.net.state_dict().items() if not self._dropped_by_release(k)}
        torch.save(state, path)

    # -- training ---------------------------------------------------------
    def make_batch(self, hr_pairs: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """HR pairs (N x 2 x 3 x H x W, [0,1]) -> LR pairs on 0..255 sharing one
        degradation per image (independent noise draws), and the HR targets on 0..255."""
        n = hr_pairs.shape[0]
        p = sample_degradation(self.degradation, n, generator)
        rep = {k: v.repeat_interleave(2) for k, v in p.items()}
        lr = degrade_to_255(hr_pairs.flatten(0, 1), self.scale, rep["sigma1"], rep["sigma2"], rep["theta"],
                            rep["noise"], generator, self.degradation.kernel_size)
        return {"lr": lr.view(n, 2, *lr.shape[1:]).to(self.device),
                "hr": (hr_pairs[:, 0] * RGB_RANGE).to(self.device)}

    def loss_terms(self, batch: Mapping[str, torch.Tensor], stage: str = "joint") -> dict[str, torch.Tensor]:
        """``encoder`` stage: InfoNCE only; ``joint``: L1 (0..255) on the query patch's SR + InfoNCE.
        Updates the MoCo key encoder and queue (as every official training forward does)."""
        lr = batch["lr"]
        fea, contrastive = self.net.E.contrast(lr[:, 0], lr[:, 1])
        terms = {"contrastive": contrastive}
        if stage == "joint":
            terms["sr_l1"] = F.l1_loss(self.net.G(lr[:, 0], fea), batch["hr"])
        return terms

    def fit(self, data: TrainingData, budget: Budget) -> FitReport:
        if budget.iterations < 2:
            raise BenchError("dasr-wang needs a budget of at least 2 iterations (encoder stage + joint stage)")
        gen = torch_generator(data.seed, self.info.name, self.scale, "patches")
        deg_gen = torch_generator(data.seed, self.info.name, self.scale, "degradations")
        # the whole batch on every rank: its degradations are drawn from deg_gen as one
        # process draws them, then each rank keeps its share (bench/ddp.py)
        sampler = PairSampler(data.source_hr, budget.patch_size * self.scale, gen, shard=False)
        params = [p for n, p in self.net.named_parameters() if not n.startswith("E.encoder_k.") and p.requires_grad]
        opt = torch.optim.Adam(params, lr=self.recipe.lr_encoder, betas=(0.9, 0.999), eps=1e-8)
        state = TrainState(net=self.net, opt=opt, sampler=sampler, degradations=deg_gen)
        total = budget.iterations
        n_encoder = sum(self.recipe.stage(i, total) == "encoder" for i in range(total))
        objective = {stage: parallel(_Objective(self, stage)) for stage in ("encoder", "joint")}
        self.net.train()

        def stage_step(stage: str, offset: int):
            def step(i: int) -> dict[str, float]:
                for group in opt.param_groups:
                    group["lr"] = self.recipe.lr(offset + i, total, budget.lr)
                batch = ddp.shard(self.make_batch(sampler.sample_pairs(budget.batch_size), deg_gen))
                terms = objective[stage](batch)
                loss = sum(terms.values())
                opt.zero_grad()
                loss.backward()
                opt.step()
                return {k: v.item() for k, v in terms.items()}
            return step

        stages = [Stage("encoder", stage_step("encoder", 0), n_encoder),
                  Stage("joint", stage_step("joint", n_encoder), total - n_encoder)]
        try:
            report = run_stages(stages, budget, desc=f"fit {self.info.name} x{self.scale}", state=state)
        finally:
            self.net.eval()
        d = self.degradation
        report.notes.append(f"trained on {d.kind} Gaussian blur, width U{list(d.sigma_range)}, noise U[0, {d.noise_max:g}]")
        return report
