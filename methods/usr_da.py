"""USR-DA (Wang et al., ICCV 2021): unpaired real-world SR from a domain-adaptation view.

Instead of learning a degradation model, USR-DA encodes target-domain LR (x_t) and
bicubic-downscaled source LR (x_s) into one feature space, aligns the two feature
distributions adversarially, and decodes the aligned features to HR (Dec_SR). A second
decoder (Dec_Id) maps features back to target-style LR and anchors the features near the
target domain through restoration, style, identity and cycle terms.

The authors released no code. This module follows the only public implementation,
anse3832/USR_DA (unofficial, commit c9240bd), and keeps its module names so its
``epoch_N.pth`` loads unchanged: ``model_Enc`` (5-conv encoder), ``model_Dec_SR``
(BasicSR-v1 RRDB decoder on features, hard-wired x4), ``model_Dec_Id`` (RRDB decoder
back to LR, training only) and three VGG-style discriminators (feature, LR, HR).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from bench.adapter import (MethodContext, BenchError, Budget, CheckpointError, CheckpointInfo, FitReport, Method, MethodInfo,
                           TrainingData, load_state_dict_checked, load_torch_file, register_method)
from bench import ddp
from bench.ddp import parallel
from bench.resume import TrainState
from bench.train import VGG19_FILE, PatchSampler, PerceptualLoss, run_training, set_requires_grad, torch_generator

from ._esrgan import RRDBNet, VGGDiscriminator


# ---------------------------------------------------------------------------
# specs
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class USRDAArch:
    """Widths and depths; the reference's defaults are the 'paper' profile."""

    n_feats: int = 64  # encoder width = feature channels (reference: --n_hidden_feats)
    dec_feats: int = 64  # RRDB width of both decoders (Decoder_*_RRDB num_feat)
    grow: int = 32  # RDB growth channels
    n_blocks: int = 23  # RRDBs in Dec_SR
    n_blocks_id: int = 10  # RRDBs in Dec_Id
    disc_width: int = 64  # first width d of the VGG discriminators

    def key(self) -> str:
        return (f"f{self.n_feats}-d{self.dec_feats}-g{self.grow}-b{self.n_blocks}-bi{self.n_blocks_id}"
                f"-dw{self.disc_width}")


@dataclass(frozen=True)
class USRDAWeights:
    """Loss weights, the reference's option.py defaults."""

    align: float = 0.01
    rec: float = 1.0
    res: float = 1.0
    sty: float = 0.01
    idt: float = 0.01
    cyc: float = 1.0
    percept: float = 0.01  # inside the rec and cyc terms
    adv: float = 0.01  # inside the rec and cyc terms


@dataclass(frozen=True)
class USRDASchedule:
    """Optimiser and update schedule of the reference train.py."""

    n_disc: int = 1  # D updates per iteration
    n_gen: int = 2  # G updates per iteration (gradients accumulate across them, see fit)
    betas: tuple[float, float] = (0.9, 0.99)
    # MultiStepLR at 250k/350k/450k of the reference; kept as fractions of the budget so
    # every profile decays at the same relative points (500k-iteration paper budget).
    milestones: tuple[float, ...] = (0.5, 0.7, 0.9)
    gamma: float = 0.5


ARCH = {
    "smoke": USRDAArch(n_feats=8, dec_feats=8, grow=4, n_blocks=1, n_blocks_id=1, disc_width=4),
    "quick": USRDAArch(n_feats=32, dec_feats=32, grow=16, n_blocks=2, n_blocks_id=1, disc_width=16),
    "paper": USRDAArch(),
}

#: The discriminators end in five stride-2 convs and a Linear sized for (patch/32)^2.
DISC_STRIDE = 32


# ---------------------------------------------------------------------------
# networks (reference module names)
# ---------------------------------------------------------------------------
class Encoder(nn.Module):
    """Encoder_RRDB: 5 convs, LeakyReLU(0.2) after all but the last (the feature is linear)."""

    def __init__(self, n_feats: int = 64, in_ch: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(5):
            layers.append(nn.Conv2d(in_ch if i == 0 else n_feats, n_feats, 3, 1, 1))
            if i < 4:
                layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.conv_featmap = nn.Sequential(*layers)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.conv_featmap(img)


class USRDANet(nn.Module):
    """The inference network: Dec_SR(Enc(lr))."""

    def __init__(self, enc: Encoder, dec_sr: RRDBNet):
        super().__init__()
        self.enc = enc
        self.dec_sr = dec_sr

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.dec_sr(self.enc(lr))


class Discriminators(nn.Module):
    """The three critics of train.py: features, target-style LR, HR."""

    def __init__(self, n_feats: int, patch: int, scale: int, d: int):
        super().__init__()
        if patch % DISC_STRIDE:
            raise BenchError(f"USR-DA discriminator input size {patch} must be a multiple of {DISC_STRIDE}")
        # the reference's VGG critics: ESRGAN's with 3x3 stride-2 convs, Linear on the (patch/32)^2 map
        self.feat = VGGDiscriminator(n_feats, d, down_kernel=3, side=patch // DISC_STRIDE)
        self.img_lr = VGGDiscriminator(3, d, down_kernel=3, side=patch // DISC_STRIDE)
        self.img_hr = VGGDiscriminator(3, d, down_kernel=3, side=scale * patch // DISC_STRIDE)


def _lsgan(pred: torch.Tensor, target: float) -> torch.Tensor:
    return F.mse_loss(pred, torch.full_like(pred, target))


# ---------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------
REQUIRED_ENTRIES = ("model_Enc", "model_Dec_SR")
#: what else train.py writes; inference and our fits do not need it.
IGNORED_ENTRIES = ("epoch", "model_Disc_feat", "model_Disc_img_LR", "model_Disc_img_HR",
                   "optimizer_D", "optimizer_G", "scheduler_D", "scheduler_G")


@register_method
class USRDA(Method):
    #: bump on any change that changes outputs or fits (see Method.code_version)
    code_version = "1"
    weight_files = (VGG19_FILE,)
    info = MethodInfo(
        name="usr-da",
        init_from="scratch (train.py loads only --checkpoint, default None; an unofficial implementation)",
        title="USR-DA: unsupervised real-world SR by feature-domain adaptation",
        citation=("Wei Wang, Haochen Zhang, Zehuan Yuan, Changhu Wang. Unsupervised Real-World "
                  "Super-Resolution: A Domain Adaptation Perspective. ICCV 2021, pp. 4318-4327"),
        family="unpaired",
        objective="perceptual",  # Dec_SR: VGG and GAN terms beside L1
        scales=(4,),
        code_url="https://github.com/anse3832/USR_DA",
        checkpoints=(
            CheckpointInfo(
                "epoch_50.pth",
                "torch.save dict written by the unofficial train.py: epoch, model_Enc, model_Dec_Id, model_Dec_SR, "
                "model_Disc_{feat,img_LR,img_HR}, optimizer_{D,G}, scheduler_{D,G}",
                "No released weights exist (neither from the authors nor the unofficial repo). Inference reads "
                "model_Enc + model_Dec_SR; model_Dec_Id is loaded when present; discriminators, optimisers and "
                "schedulers are ignored. save_checkpoint writes epoch (our training iterations), model_Enc, "
                "model_Dec_Id, model_Dec_SR.",
            ),
        ),
        gaps=(
            "No official code or weights: the architecture (5-conv encoder, RRDB decoders, VGG discriminators) is "
            "the unofficial anse3832/USR_DA's choice; its README says it does not exactly match the paper, whose "
            "network details are not fully specified. Paper tables are compared against this implementation.",
            "Paper data: the reference trains on NTIRE 2020 Real-World SR track 1 (Corrupted-tr-x as target LR, "
            "Corrupted-tr-y as clean source HR, unpaired). The paper's other data sets could not be checked "
            "offline (paper text unavailable here).",
            "Budget: the reference's comments give the paper's LR patch as 128 and batch as 8 (its defaults are "
            "64 and 4). Neither source gives a total iteration count (epochs=35000 is a nominal cap; LR halves "
            "at 250k/350k/450k iterations). The paper profile uses 500k iterations with milestones at "
            "0.5/0.7/0.9 of the budget.",
            "Reference behaviour reproduced on purpose: x_s is torch bicubic downscaling without antialiasing; "
            "the two G updates per iteration accumulate gradients (zero_grad once per iteration); VGG19 conv5_4 "
            "features see [0,1] RGB without ImageNet normalisation; augmentation = horizontal flip (p 0.5) and a "
            "90-degree rotation (p 0.75, the reference's three rotation branches are identical).",
            "Equivalent reorganisations: shared sub-expressions (Dec_Id(F_s), Enc(Dec_Id(F_s)), D_HR(Y_s)) are "
            "computed once instead of twice, D-step generator passes run without autograd and the "
            "discriminators are frozen during G updates (same gradients; BatchNorm running statistics, which "
            "the critics never use, are updated fewer times).",
            "smoke/quick replace the VGG19 perceptual term with bench.train's Laplacian stand-in when ImageNet "
            "VGG19 weights are absent; paper requires them.",
        ),
        notes=(
            "Decoder is hard-wired to x4, as in the reference.",
            "Inference runs one image at a time, as the reference's inference.py (batched runs differ by ~1e-6).",
            "On CUDA, match the reference to 1e-5 only with torch.backends.cudnn.allow_tf32=False (measured on an "
            "H200: 4.9e-6 fp32, 2.3e-3 with TF32 convolutions).",
            "Full-size training measured on one H200 (perceptual stand-in, not VGG19): batch 4 x LR patch 64 "
            "(reference defaults) 1.04 s/iteration, 11.5 GiB peak; batch 8 x LR patch 128 (paper budget) "
            "5.0 s/iteration, 85 GiB peak, more than an 80 GB H100 holds.",
        ),
    )

    budgets = {
        "smoke": Budget(iterations=2, batch_size=2, patch_size=32, lr=1e-4),
        "quick": Budget(iterations=120, batch_size=2, patch_size=32, lr=1e-4),
        "paper": Budget(iterations=500_000, batch_size=8, patch_size=128, lr=1e-4),
    }

    def __init__(self, scale: int, context: MethodContext | None = None, *, profile: str | None = None,
                 device: str | torch.device | None = None, n_feats: int | None = None,
                 dec_feats: int | None = None, grow: int | None = None, n_blocks: int | None = None,
                 n_blocks_id: int | None = None, disc_width: int | None = None,
                 weights_dir: str | Path | None = None, init_seed: int = 0):
        super().__init__(scale, context, profile=profile, device=device)
        profile = self.profile
        given = dict(n_feats=n_feats, dec_feats=dec_feats, grow=grow, n_blocks=n_blocks,
                     n_blocks_id=n_blocks_id, disc_width=disc_width)
        self.arch = dataclasses.replace(ARCH[profile], **{k: v for k, v in given.items() if v is not None})
        self.weights = USRDAWeights()
        self.schedule = USRDASchedule()
        self.weights_dir = weights_dir if weights_dir is not None else self.context.weights_dir
        a = self.arch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.init_seed(init_seed))  # deterministic initial weights; constructor order as train.py
            enc = Encoder(a.n_feats)
            # Decoder_Id_RRDB: features -> target-style LR at the same size (training only)
            self.dec_id = RRDBNet(a.n_feats, 3, a.dec_feats, a.n_blocks_id, a.grow, scale=1).to(self.device)
            # Decoder_SR_RRDB: features -> HR, hard-wired x4
            dec_sr = RRDBNet(a.n_feats, 3, a.dec_feats, a.n_blocks, a.grow, scale=4)
        self.net = USRDANet(enc, dec_sr).to(self.device).eval()
        self.dec_id.eval()
        self.discs: Discriminators | None = None
        self.percept: PerceptualLoss | None = None
        self.trained_iterations = 0

    # -- convenience views -------------------------------------------------
    @property
    def enc(self) -> Encoder:
        return self.net.enc

    @property
    def dec_sr(self) -> RRDBNet:
        return self.net.dec_sr

    def network(self) -> nn.Module:
        return self.net

    def extra_fingerprint(self) -> str:
        return self.arch.key()

    # -- inference ---------------------------------------------------------
    @torch.no_grad()
    def forward_unclamped(self, lr: torch.Tensor) -> torch.Tensor:
        """SR before the clamp, one image at a time as inference.py."""
        self.net.eval()
        lr = lr.to(self.device, torch.float32)
        return torch.cat([self.net(lr[i:i + 1]) for i in range(lr.shape[0])]).cpu()

    @torch.no_grad()
    def features(self, lr: torch.Tensor) -> torch.Tensor:
        """The aligned 64-channel encoder feature at LR size (reference: feat = model_Enc(img))."""
        self.net.eval()
        lr = lr.to(self.device, torch.float32)
        return torch.cat([self.enc(lr[i:i + 1]) for i in range(lr.shape[0])]).cpu()

    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        return self.forward_unclamped(lr).clamp_(0, 1)

    # -- checkpoints -------------------------------------------------------
    def load_checkpoint(self, path: str | Path) -> None:
        ckpt = load_torch_file(path)
        what = f"usr-da checkpoint {path}"
        if not isinstance(ckpt, Mapping) or any(k not in ckpt for k in REQUIRED_ENTRIES):
            have = ", ".join(map(str, list(ckpt)[:5])) if isinstance(ckpt, Mapping) else type(ckpt).__name__
            raise CheckpointError(
                f"{what} is not a USR_DA train.py checkpoint: it needs entries {', '.join(REQUIRED_ENTRIES)} "
                f"(found {have}); pass the epoch_N.pth file train.py writes")
        unknown = [k for k in ckpt if k not in REQUIRED_ENTRIES + IGNORED_ENTRIES + ("model_Dec_Id",)]
        if unknown:
            raise CheckpointError(f"{what} has unexpected entries {unknown}; is it a USR_DA train.py checkpoint?")
        load_state_dict_checked(self.enc, ckpt["model_Enc"], what=f"{what} [model_Enc]")
        load_state_dict_checked(self.dec_sr, ckpt["model_Dec_SR"], what=f"{what} [model_Dec_SR]")
        if "model_Dec_Id" in ckpt:  # training only; absent from inference-only files
            load_state_dict_checked(self.dec_id, ckpt["model_Dec_Id"], what=f"{what} [model_Dec_Id]")
        self.net.eval()

    def save_checkpoint(self, path: str | Path) -> None:
        # train.py's layout, minus the discriminator side (not needed to resume inference or to re-fit)
        torch.save({
            "epoch": self.trained_iterations,
            "model_Enc": self.enc.state_dict(),
            "model_Dec_Id": self.dec_id.state_dict(),
            "model_Dec_SR": self.dec_sr.state_dict(),
        }, path)

    # -- training ----------------------------------------------------------
    def prepare_training(self, patch_size: int, seed: int) -> None:
        """Build the discriminators (sized by the LR patch) and the perceptual loss."""
        if patch_size % DISC_STRIDE:
            raise BenchError(
                f"usr-da needs an LR patch size that is a multiple of {DISC_STRIDE} (its VGG discriminators "
                f"downsample 32x); got budget patch_size={patch_size}")
        g = torch_generator(seed, self.info.name, "discriminators")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=g)))
            self.discs = Discriminators(self.arch.n_feats, patch_size, self.scale, self.arch.disc_width)
        self.discs.to(self.device).train()
        self.percept = PerceptualLoss(self.profile, self.weights_dir, verify=self.context.verify_weights).to(self.device)

    def source_lr(self, y_s: torch.Tensor) -> torch.Tensor:
        """x_s: the reference's nn.Upsample(scale_factor=1/4, mode='bicubic') (no antialiasing)."""
        return F.interpolate(y_s, scale_factor=1 / self.scale, mode="bicubic", align_corners=False)

    def _perceptual(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        p = self.percept
        if p.vgg is not None:
            # the reference feeds [0,1] RGB to VGG19 unnormalised; undo PerceptualLoss's normalisation
            a, b = a * p.std + p.mean, b * p.std + p.mean
        return p(a, b)

    def _require_training(self) -> tuple[Discriminators, PerceptualLoss]:
        if self.discs is None or self.percept is None:
            raise BenchError("usr-da: call prepare_training(patch_size, seed) before computing losses")
        return self.discs, self.percept

    def generator_terms(self, x_t: torch.Tensor, y_s: torch.Tensor, enc: nn.Module | None = None,
                        dec_id: nn.Module | None = None, dec_sr: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """Every G-side term of train.py, unweighted (x_t target LR, y_s source HR, both in [0,1]).

        ``enc``/``dec_id``/``dec_sr``: the networks' data-parallel wrappers in a multi-rank fit
        (this is their own loss); the critics are called bare (see ``bench.ddp.parallel``)."""
        discs, _ = self._require_training()
        enc, dec_id, dec_sr = enc or self.enc, dec_id or self.dec_id, dec_sr or self.dec_sr
        x_s = self.source_lr(y_s)
        f_t, f_s = enc(x_t), enc(x_s)
        # 1. feature-distribution alignment: both domains pushed to the critic's midpoint (LSGAN c=0.5)
        align = _lsgan(discs.feat(f_t), 0.5) + _lsgan(discs.feat(f_s), 0.5)
        # 2. SR reconstruction of the source
        y_ss = dec_sr(f_s)
        # 3. target LR restoration, 4. target degradation style
        x_tt = dec_id(f_t)
        x_st = dec_id(f_s)
        # 5. feature identity, 6. cycle through target-style LR
        f_s_tilde = enc(x_st)
        y_sts = dec_sr(f_s_tilde)
        return {
            "align": align,
            "rec_l1": F.l1_loss(y_ss, y_s),
            "rec_percept": self._perceptual(y_s, y_ss),
            "rec_adv": _lsgan(discs.img_hr(y_ss), 1.0),
            "res": F.l1_loss(x_tt, x_t),
            "sty": _lsgan(discs.img_lr(x_st), 1.0),
            "idt": F.l1_loss(f_s_tilde, f_s),
            "cyc_l1": F.l1_loss(y_sts, y_s),
            "cyc_percept": self._perceptual(y_s, y_sts),
            "cyc_adv": _lsgan(discs.img_hr(y_sts), 1.0),
        }

    def generator_total(self, t: Mapping[str, torch.Tensor]) -> torch.Tensor:
        w = self.weights
        rec = t["rec_l1"] + w.percept * t["rec_percept"] + w.adv * t["rec_adv"]
        cyc = t["cyc_l1"] + w.percept * t["cyc_percept"] + w.adv * t["cyc_adv"]
        return (w.align * t["align"] + w.rec * rec + w.res * t["res"] + w.sty * t["sty"]
                + w.idt * t["idt"] + w.cyc * cyc)

    def discriminator_terms(self, x_t: torch.Tensor, y_s: torch.Tensor, critics: Any = None) -> dict[str, torch.Tensor]:
        """The four LSGAN critic terms of train.py (generator outputs are constants here).

        ``critics``: the discriminators' data-parallel wrappers in a multi-rank fit (attributes
        ``feat``, ``img_lr``, ``img_hr``, as :class:`Discriminators`)."""
        discs, _ = self._require_training()
        discs = critics or discs
        with torch.no_grad():
            x_s = self.source_lr(y_s)
            f_t, f_s = self.enc(x_t), self.enc(x_s)
            y_ss = self.dec_sr(f_s)
            x_st = self.dec_id(f_s)
            y_sts = self.dec_sr(self.enc(x_st))
        real_hr = _lsgan(discs.img_hr(y_s), 1.0)  # train.py evaluates it twice; same value and gradient
        return {
            "d_feat": (_lsgan(discs.feat(f_t), 0.0) + _lsgan(discs.feat(f_s), 1.0)) / 2,
            "d_rec": (_lsgan(discs.img_hr(y_ss), 0.0) + real_hr) / 2,
            "d_sty": (_lsgan(discs.img_lr(x_st), 0.0) + _lsgan(discs.img_lr(x_t), 1.0)) / 2,
            "d_cyc": (_lsgan(discs.img_hr(y_sts), 0.0) + real_hr) / 2,
        }

    def loss_terms(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """All terms for a batch {'x_t': target LR, 'y_s': source HR}: G terms, then 'd_*' critic terms."""
        x_t, y_s = batch["x_t"].to(self.device), batch["y_s"].to(self.device)
        return {**self.generator_terms(x_t, y_s), **self.discriminator_terms(x_t, y_s)}

    def _g_params(self) -> list[nn.Parameter]:
        return list(self.enc.parameters()) + list(self.dec_id.parameters()) + list(self.dec_sr.parameters())

    def _sampler(self, data: TrainingData, budget: Budget):
        """Unpaired (x_t, y_s) batches with the reference's joint flip/rotation augmentation, and
        what drawing one advances (two samplers and the augmentation generator), to register."""
        p = budget.patch_size
        tgt = PatchSampler(data.target_lr, p, torch_generator(data.seed, self.info.name, "target"), augment=False)
        src = PatchSampler(data.source_hr, self.scale * p, torch_generator(data.seed, self.info.name, "source"),
                           augment=False)
        aug = torch_generator(data.seed, self.info.name, "augment")

        def sample() -> tuple[torch.Tensor, torch.Tensor]:
            x_t, y_s = tgt.sample(budget.batch_size), src.sample(budget.batch_size)
            # drawn for the step's whole batch, then this rank's rows (the samplers give this rank's slice)
            u = ddp.shard(torch.rand(budget.batch_size, 2, generator=aug))
            for i in range(u.shape[0]):
                if u[i, 0] < 0.5:
                    x_t[i], y_s[i] = x_t[i].flip(-1), y_s[i].flip(-1)
                if u[i, 1] < 0.75:
                    x_t[i], y_s[i] = x_t[i].rot90(1, (-2, -1)), y_s[i].rot90(1, (-2, -1))
            return x_t.to(self.device), y_s.to(self.device)

        return sample, {"target_pool": tgt, "source_pool": src, "augment": aug}

    def fit(self, data: TrainingData, budget: Budget) -> FitReport:
        if data.scale != self.scale:
            raise BenchError(f"usr-da was built for x{self.scale} but the training data is x{data.scale}")
        if not data.target_lr:
            raise BenchError("usr-da is unpaired: it needs TrainingData.target_lr (run it with a target suite)")
        if ddp.rank_batch(budget.batch_size) < 2:
            raise BenchError("usr-da needs batch_size >= 2 (per rank in a data-parallel fit): its BatchNorm "
                             "discriminators end at 1x1 spatial size")
        self.prepare_training(budget.patch_size, data.seed)
        discs = self.discs
        report = FitReport()
        if self.percept.stand_in:
            report.notes.append(self.percept.stand_in)
        s = self.schedule
        opt_g = torch.optim.Adam(self._g_params(), lr=budget.lr, betas=s.betas, amsgrad=True)
        opt_d = torch.optim.Adam(discs.parameters(), lr=budget.lr, betas=s.betas, amsgrad=True)
        miles = sorted({max(1, round(f * budget.iterations)) for f in s.milestones})
        sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, miles, s.gamma)
        sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, miles, s.gamma)
        sample, draws = self._sampler(data, budget)
        state = TrainState(net=self.net, dec_id=self.dec_id, discs=discs, opt_g=opt_g, opt_d=opt_d, sched_g=sched_g,
                           sched_d=sched_d, **draws)
        # DDP wrappers under torchrun (the networks themselves otherwise), one per network
        enc, dec_id, dec_sr = parallel(self.enc), parallel(self.dec_id), parallel(self.dec_sr)
        critics = SimpleNamespace(feat=parallel(discs.feat), img_lr=parallel(discs.img_lr),
                                  img_hr=parallel(discs.img_hr))
        self.net.train()
        self.dec_id.train()
        discs.train()

        def step(i: int) -> dict[str, float]:
            x_t, y_s = sample()
            set_requires_grad(discs, True)
            opt_d.zero_grad()
            for _ in range(s.n_disc):
                d_terms = self.discriminator_terms(x_t, y_s, critics)
                d_total = sum(d_terms.values())
                d_total.backward()
                opt_d.step()
            sched_d.step()
            set_requires_grad(discs, False)
            # zero_grad once, then n_gen steps: as train.py, the second step uses accumulated gradients
            opt_g.zero_grad()
            for _ in range(s.n_gen):
                g_terms = self.generator_terms(x_t, y_s, enc, dec_id, dec_sr)
                g_total = self.generator_total(g_terms)
                g_total.backward()
                opt_g.step()
            sched_g.step()
            return {"G": g_total.item(), "D": d_total.item(), **{k: v.item() for k, v in g_terms.items()}}

        try:
            run_training(step, budget, desc=f"fit {self.info.name} x{self.scale}", state=state, report=report)
        finally:
            set_requires_grad(discs, True)
            self.net.eval()
            self.dec_id.eval()
        self.trained_iterations += report.iterations
        return report
