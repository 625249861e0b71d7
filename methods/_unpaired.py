"""What the DSGAN-family unpaired methods share (FSSR, DASR-Wei, FCA): the degradation
generator, the frequency-separation filters and discriminator, the Haar high-pass, and
the helpers for the released ``train.py`` training dicts.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.adapter import (BenchError, CheckpointError, DegradationModel, FitReport, Method, TrainingData,
                           load_torch_file)
from bench.train import VGG19_FILE

from ._blocks import PReLUResBlock


class DegradationSRMethod(Method, DegradationModel):
    """The DSGAN family's shape (FSSR, DASR-Wei, FCA): a learned HR -> LR network
    (``degrader()``) makes the LR half of the pairs the SR network (``network()``) learns from.

    Subclasses list their training-only modules (discriminators, filters, the perceptual
    loss as 'perceptual') in ``build_training_modules``; one fit keeps one set.
    """

    _train: dict[str, nn.Module]
    #: every member trains with bench.train.PerceptualLoss: its ImageNet file enters the fit key
    weight_files = (VGG19_FILE,)

    def degrader(self) -> nn.Module:
        raise NotImplementedError

    def build_training_modules(self, seed: int) -> dict[str, nn.Module]:
        raise NotImplementedError

    @torch.no_grad()
    def forward_unclamped(self, lr: torch.Tensor) -> torch.Tensor:
        net = self.network()
        net.eval()
        return net(lr.to(self.device, torch.float32))

    def upscale(self, lr: torch.Tensor) -> torch.Tensor:
        return self.forward_unclamped(lr).clamp(0, 1)

    @torch.no_grad()
    def degrade(self, hr: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The learned HR -> LR model on HR; deterministic (``generator`` unused)."""
        g = self.degrader()
        g.eval()
        return g(hr.to(self.device, torch.float32))

    def _training_modules(self, seed: int) -> dict[str, nn.Module]:
        if not self._train:
            self._train = {k: m.to(self.device) for k, m in self.build_training_modules(seed).items()}
        return self._train

    def begin_fit(self, data: TrainingData) -> tuple[dict[str, nn.Module], FitReport]:
        """Fresh training modules seeded from the data seed, and a report that names a
        perceptual stand-in when one is used."""
        check_unpaired(data, self.info.name)
        self._train = {}
        t = self._training_modules(data.seed)
        report = FitReport()
        if t["perceptual"].stand_in:
            report.notes.append(t["perceptual"].stand_in)
        return t, report


class DSGANGenerator(nn.Module):
    """DSGAN (official names ``block_input``/``res_blocks``/``block_output``): conv+PReLU,
    ``n_blocks`` PReLU residual blocks, conv to RGB, sigmoid; same size in and out.

    ``down`` stride-2 conv+PReLU stages after the trunk (``down_sample.N``) make DASR-Wei's
    DSN (codes/DSN/model.py De_resnet), which works on HR and outputs LR; DSGAN has none.
    """

    def __init__(self, n_blocks: int = 8, n_feats: int = 64, down: int = 0):
        super().__init__()
        self.block_input = nn.Sequential(nn.Conv2d(3, n_feats, 3, padding=1), nn.PReLU())
        self.res_blocks = nn.ModuleList([PReLUResBlock(n_feats) for _ in range(n_blocks)])
        self.down_sample = nn.Sequential(*[m for _ in range(down)
                                           for m in (nn.Conv2d(n_feats, n_feats, 3, stride=2, padding=1), nn.PReLU())])
        self.block_output = nn.Conv2d(n_feats, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block_input(x)
        for block in self.res_blocks:
            h = block(h)
        return torch.sigmoid(self.block_output(self.down_sample(h)))


# ---------------------------------------------------------------------------
# frequency separation: filters and the high-pass discriminator
# ---------------------------------------------------------------------------
class GaussianFilter(nn.Module):
    """Depthwise Gaussian blur stored as a frozen conv (``gaussian_filter.weight``, as the
    official discriminators save it). ``variance``: DSGAN/DSN use (k/6)^2, ESRGAN-FS ((k-1)/6)^2."""

    def __init__(self, kernel_size: int = 5, padding: int = 2, variance: float | None = None):
        super().__init__()
        var = (kernel_size / 6.0) ** 2 if variance is None else variance
        c = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2.0
        g = torch.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * var))
        g = (g / g.sum()).view(1, 1, kernel_size, kernel_size).repeat(3, 1, 1, 1)
        self.gaussian_filter = nn.Conv2d(3, 3, kernel_size, padding=padding, groups=3, bias=False)
        self.gaussian_filter.weight.data.copy_(g)
        self.gaussian_filter.weight.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gaussian_filter(x)


class FilterLow(nn.Module):
    """Low-pass: k x k box (``AvgPool2d``) or Gaussian; ``padding=False`` keeps the valid region."""

    def __init__(self, kernel_size: int = 5, padding: bool = True, include_pad: bool = True,
                 gaussian: bool = False, variance: float | None = None):
        super().__init__()
        pad = (kernel_size - 1) // 2 if padding else 0
        if gaussian:
            self.filter: nn.Module = GaussianFilter(kernel_size, pad, variance)
        else:
            self.filter = nn.AvgPool2d(kernel_size, stride=1, padding=pad, count_include_pad=include_pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.filter(x)


class FilterHigh(nn.Module):
    """High-pass = image minus low-pass, mapped to [0, 1] as ``0.5 + 0.5 * h``."""

    def __init__(self, kernel_size: int = 5, include_pad: bool = True, gaussian: bool = False,
                 variance: float | None = None, normalize: bool = True):
        super().__init__()
        self.filter_low = FilterLow(kernel_size, True, include_pad, gaussian, variance)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x - self.filter_low(x)
        return 0.5 + 0.5 * h if self.normalize else h


def haar_dwt(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One level of the orthonormal Haar DWT: (LL, LH, HL, HH), each half size.

    Follows pytorch_wavelets' ``DWTForward(J=1, wave='haar', mode='reflect')`` band order
    (LH: low-pass along width, high-pass along height); an odd side is reflect-padded
    by one sample at its end, as that package does for a two-tap filter.
    """
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="reflect")
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    ll = (a + b + c + d) * 0.5
    lh = (a + b - c - d) * 0.5
    hl = (a - b + c - d) * 0.5
    hh = (a - b - c + d) * 0.5
    return ll, lh, hl, hh


def wavelet_high(x: torch.Tensor, norm: bool = True) -> torch.Tensor:
    """The three Haar detail bands concatenated (9 channels), each mapped by ``0.5 h + 0.5``."""
    _, lh, hl, hh = haar_dwt(x)
    bands = torch.cat((lh, hl, hh), 1)
    return bands * 0.5 + 0.5 if norm else bands


def wavelet_low(x: torch.Tensor, norm: bool = True) -> torch.Tensor:
    ll = haar_dwt(x)[0]
    return ll * 0.5 if norm else ll


FS_TYPES = ("avg_pool", "gau", "wavelet")


class FSDNet(nn.Module):
    """The FSSR discriminator body (``net.N``): 5x5 convs 3->w->2w->4w, then 1x1 to a patch map.

    ``norm``: 'batch' (DSGAN) or 'instance' (DASR-Wei's FSD; affine-free, so no keys).
    """

    def __init__(self, in_ch: int = 3, width: int = 64, norm: str = "batch"):
        super().__init__()
        if norm not in ("batch", "instance"):
            raise ValueError(f"norm must be 'batch' or 'instance', got {norm!r}")
        norm_layer = nn.BatchNorm2d if norm == "batch" else nn.InstanceNorm2d
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, width, 5, padding=2), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 5, padding=2), norm_layer(2 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 5, padding=2), norm_layer(4 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * width, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FSDiscriminator(nn.Module):
    """High-pass filter then ``FSDNet``; returns logits (the official applies the sigmoid
    inside; our GAN losses use logits, ``prob`` gives the official output).

    ``fs_type``: 'avg_pool' (image minus k x k box, border average over valid pixels),
    'gau' (Gaussian low-pass, zero padding; adds ``filter.filter_low.filter.gaussian_filter.weight``)
    or 'wavelet' (9 Haar detail channels at half size).
    """

    def __init__(self, fs_type: str = "avg_pool", kernel_size: int = 5, width: int = 64, norm: str = "batch"):
        super().__init__()
        if fs_type not in FS_TYPES:
            raise BenchError(f"unknown frequency-separation filter {fs_type!r}; choose one of {', '.join(FS_TYPES)}")
        self.fs_type = fs_type
        if fs_type == "wavelet":
            self.filter: nn.Module | None = None
            in_ch = 9
        else:
            self.filter = FilterHigh(kernel_size, include_pad=False, gaussian=fs_type == "gau")
            in_ch = 3
        self.net = FSDNet(in_ch, width, norm)

    def highpass(self, x: torch.Tensor) -> torch.Tensor:
        return wavelet_high(x) if self.filter is None else self.filter(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.highpass(x))

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(x))


def truncate_uint8(x: torch.Tensor) -> torch.Tensor:
    """What ``TF.to_pil_image(x).save(png)`` stores: ``(x*255)`` truncated to uint8."""
    return torch.floor(x.clamp(0, 1) * 255.0).clamp(max=255.0) / 255.0


# ---------------------------------------------------------------------------
# checkpoints and arguments
# ---------------------------------------------------------------------------
def release_pair(folder: str | Path, what: str) -> tuple[Path, Path]:
    """The ``.tar`` (degradation network) and ``.pth`` (SR network) in a release folder."""
    p = Path(folder)
    if not p.is_dir():
        raise CheckpointError(
            f"{what} checkpoint {p} must be a folder holding the released .tar (degradation network) "
            "and .pth (SR network) side by side, as the release lays them out")
    tars, pths = sorted(p.glob("*.tar")), sorted(p.glob("*.pth"))
    if len(tars) != 1 or len(pths) != 1:
        raise CheckpointError(
            f"{what} checkpoint folder {p} must hold exactly one .tar and one .pth; found "
            f"{[t.name for t in tars]} and {[q.name for q in pths]}")
    return tars[0], pths[0]


def training_dict_entry(path: Path, key: str, what: str) -> Mapping[str, torch.Tensor]:
    """``key`` of an official ``.tar`` training dict, with one clear error if it is not one."""
    obj = load_torch_file(path)
    if not isinstance(obj, Mapping) or key not in obj:
        found = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{what} {path} is not a training dict with '{key}' (found {found}); "
                              "pass the released .tar unchanged")
    return obj[key]


def strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BasicSR's ``load_network`` strips a DataParallel ``module.`` prefix; so do we."""
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


def fresh_training_dict(g: nn.Module, d: nn.Module, *, lr: float, betas: tuple[float, float],
                        epoch: int, iteration: int, extra: Mapping[str, object] = ()) -> dict:
    """A ``train.py``-style ``.tar``: epoch, iteration, extras, G/D states, fresh Adam and LambdaLR."""
    opt_g = torch.optim.Adam(g.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=lr, betas=betas)
    sch_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lambda e: 1.0)
    sch_d = torch.optim.lr_scheduler.LambdaLR(opt_d, lambda e: 1.0)
    out: dict = {"epoch": epoch, "iteration": iteration, **dict(extra),
                 "model_g_state_dict": g.state_dict(), "models_d_state_dict": d.state_dict(),
                 "optimizer_g_state_dict": opt_g.state_dict(), "optimizer_d_state_dict": opt_d.state_dict()}
    sg, sd = sch_g.state_dict(), sch_d.state_dict()
    sg["lr_lambdas"], sd["lr_lambdas"] = [None], [None]
    out["scheduler_g_state_dict"], out["scheduler_d_state_dict"] = sg, sd
    return out


def check_unpaired(data: TrainingData, name: str) -> None:
    if not data.source_hr:
        raise BenchError(f"{name} needs clean HR images (TrainingData.source_hr is empty)")
    if not data.target_lr:
        raise BenchError(f"{name} is unpaired: it needs target-domain LR images (TrainingData.target_lr is empty)")


def arch_with(defaults, overrides: Mapping[str, object], name: str):
    """``dataclasses.replace`` with one clear error for an unknown architecture keyword."""
    fields = {f.name for f in dataclasses.fields(defaults)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise BenchError(f"{name} has no architecture option {', '.join(bad)}; known: {', '.join(sorted(fields))}")
    return dataclasses.replace(defaults, **overrides)
