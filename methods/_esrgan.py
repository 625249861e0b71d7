"""ESRGAN (Wang et al. 2018): the residual-in-residual dense network, its init and its
discriminator and RaGAN losses, under every key family the releases use.

One residual dense block serves all of them; only the state-dict names differ:

- BasicSR (``BASICSR``: ``conv_first``, ``body.N.rdb{1,2,3}.conv{1..5}``, ``conv_body``,
  ``conv_up1/2``, ``conv_hr``, ``conv_last``): PDM's ``PDM_Real_ESRGAN.pth``, MSSR's
  ``*g{1,2}.ckpt``, the USR-DA decoders.
- ESRGAN new arch (``ESRGAN``: ``conv_first``, ``RRDB_trunk.N.RDB{1,2,3}.conv{1..5}``,
  ``trunk_conv``, ``upconv1/2``, ``HRconv``, ``conv_last``): FSSR's ESRGAN-FS, FCA; CDSR's
  blocks use the ``RDB{1,2,3}`` names.
- ESRGAN old arch (each conv inside a ``Sequential``, ``conv{1..5}.0``): DASR-Wei's SRN
  builds its flattened ``model.N`` layout from ``RRDB(..., wrapped=True)``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.ddp import parallel
from bench.resume import TrainState
from bench.train import adam, gan_loss

from ._stages import descend, multistep, scaled_milestones


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def scaled_kaiming_(convs: Sequence[nn.Module], scale: float = 0.1) -> None:
    """ESRGAN's init of the dense trunk (BasicSR ``default_init_weights``): Kaiming-normal
    (fan_in) times ``scale``, zero bias; keeps the deep trunk near identity at the start."""
    for conv in convs:
        nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
        conv.weight.data.mul_(scale)
        if conv.bias is not None:
            conv.bias.data.zero_()


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs (``conv1``..``conv5``), LeakyReLU 0.2 after all but
    the last; the output is scaled by 0.2 and added to the input.

    ``wrapped``: each conv sits in a ``Sequential`` (old-arch keys ``convK.0.*``).
    """

    def __init__(self, nf: int = 64, gc: int = 32, wrapped: bool = False):
        super().__init__()
        convs = [nn.Conv2d(nf + k * gc, gc if k < 4 else nf, 3, 1, 1) for k in range(5)]
        for k, conv in enumerate(convs):
            setattr(self, f"conv{k + 1}", nn.Sequential(conv) if wrapped else conv)
        scaled_kaiming_(convs, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for k in range(1, 5):
            feats.append(lrelu(getattr(self, f"conv{k}")(torch.cat(feats, 1))))
        return self.conv5(torch.cat(feats, 1)) * 0.2 + x


@dataclass(frozen=True)
class KeyFamily:
    """The state-dict names of one RRDBNet layout."""

    rdb: tuple[str, str, str]   # the three dense blocks of an RRDB
    trunk: str                  # the Sequential of RRDBs
    trunk_conv: str
    up: tuple[str, str]         # the convs after each nearest x2
    hr: str
    first: str = "conv_first"
    last: str = "conv_last"


BASICSR = KeyFamily(("rdb1", "rdb2", "rdb3"), "body", "conv_body", ("conv_up1", "conv_up2"), "conv_hr")
ESRGAN = KeyFamily(("RDB1", "RDB2", "RDB3"), "RRDB_trunk", "trunk_conv", ("upconv1", "upconv2"), "HRconv")


class RRDB(nn.Module):
    """Three residual dense blocks; output scaled by 0.2 and added to the input."""

    def __init__(self, nf: int, gc: int = 32, names: tuple[str, str, str] = BASICSR.rdb, wrapped: bool = False):
        super().__init__()
        self.names = names
        for name in names:
            setattr(self, name, ResidualDenseBlock(nf, gc, wrapped))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for name in self.names:
            out = getattr(self, name)(out)
        return out * 0.2 + x


class RRDBNet(nn.Module):
    """conv, ``num_block`` RRDBs and a conv with a global skip, then per factor 2 a nearest
    x2 and a conv (``scale`` 4: two; 1: none, USR-DA's Dec_Id), an HR conv and a last conv.

    No normalisation and no clamp (the releases clamp only when saving).
    """

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 23,
                 num_grow_ch: int = 32, scale: int = 4, keys: KeyFamily = BASICSR):
        super().__init__()
        if scale not in (1, 4):
            raise ValueError(f"RRDBNet is built for x4 (or x1) here, not x{scale}")
        self.keys = keys
        self.n_up = 2 if scale == 4 else 0
        setattr(self, keys.first, nn.Conv2d(num_in_ch, num_feat, 3, 1, 1))
        setattr(self, keys.trunk, nn.Sequential(*[RRDB(num_feat, num_grow_ch, keys.rdb) for _ in range(num_block)]))
        setattr(self, keys.trunk_conv, nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        for name in keys.up[:self.n_up]:
            setattr(self, name, nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        setattr(self, keys.hr, nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        setattr(self, keys.last, nn.Conv2d(num_feat, num_out_ch, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.keys
        feat = getattr(self, k.first)(x)
        feat = feat + getattr(self, k.trunk_conv)(getattr(self, k.trunk)(feat))
        for name in k.up[:self.n_up]:
            feat = lrelu(getattr(self, name)(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return getattr(self, k.last)(lrelu(getattr(self, k.hr)(feat)))


#: the ESRGAN old-arch flattened Sequential (``model.N``) and where each RRDBNet part sits in it
OLD_ARCH = {"first": "model.0", "up1": "model.3", "up2": "model.6", "hr": "model.8", "last": "model.10"}


def _neutral(key: str, fam: KeyFamily | None) -> str | None:
    """An RRDBNet key in a layout-free form (``trunk.3.1.conv2.weight``), or None."""
    import re

    if fam is None:  # old arch: model.1.sub.N.RDBk.convM.0.* and model.1.sub.<nb>.* (the trunk conv)
        m = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)", key)
        if m:
            return f"trunk.{m[1]}.{int(m[2]) - 1}.conv{m[3]}.{m[4]}"
        m = re.fullmatch(r"model\.1\.sub\.(\d+)\.(weight|bias)", key)
        if m:
            return f"trunk_conv@{m[1]}.{m[2]}"
        for part, prefix in OLD_ARCH.items():
            if key.startswith(prefix + "."):
                return part + key[len(prefix):]
        return None
    head, _, rest = key.partition(".")
    if head == fam.trunk:
        n, rdb, tail = rest.split(".", 2)
        return f"trunk.{n}.{fam.rdb.index(rdb)}.{tail}" if rdb in fam.rdb else None
    parts = {fam.first: "first", fam.trunk_conv: "trunk_conv", fam.up[0]: "up1", fam.up[1]: "up2", fam.hr: "hr",
             fam.last: "last"}
    return parts[head] + "." + rest if head in parts else None


def rrdb_state(state: Mapping[str, torch.Tensor], net: RRDBNet, what: str) -> dict[str, torch.Tensor]:
    """A released RRDBNet state dict in ``net``'s key family, whatever family it was saved
    in (spandrel-style key maps): BasicSR (``body.N.rdbK``; ``{'params_ema'|'params': ...}``
    wrappers unwrapped, EMA first), ESRGAN new arch (``RRDB_trunk.N.RDBK``, e.g.
    ``RRDB_ESRGAN_x4.pth``) or ESRGAN old arch (``model.1.sub.N.RDBK.convM.0``); a
    ``module.`` prefix is dropped. Keys of no family are kept as they are, so the strict
    load that follows names them."""
    from bench.adapter import CheckpointError

    if not isinstance(state, Mapping):
        raise CheckpointError(f"{what}: expected a state dict, got {type(state).__name__}")
    for wrapper in ("params_ema", "params", "state_dict"):
        if isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
            break
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if any(k.startswith("model.1.sub.") for k in state):
        src = None
    else:
        src = next((f for f in (BASICSR, ESRGAN) if any(k.startswith(f.trunk + ".") for k in state)), net.keys)
    dst = net.keys
    names = {_neutral(k, dst): k for k in net.state_dict()}
    out = {}
    for k, v in state.items():
        n = _neutral(k, src)
        if n is not None and n.startswith("trunk_conv@"):
            n = "trunk_conv" + n[n.index("."):]
        out[names.get(n, k)] = v
    return out


class VGGDiscriminator(nn.Module):
    """ESRGAN's ``discriminator_vgg_128``: 10 convs (BN after all but the first, every other
    one stride 2), then two linear layers on a ``side`` x ``side`` map.

    ``down_kernel``: 4 in ESRGAN; USR-DA's variant uses 3. The official needs a 128 x 128
    input (4 x 4 after five stride-2 convs); an adaptive average pool to ``side`` (the
    identity at the official size) lets the reduced profiles use smaller patches.
    """

    def __init__(self, in_ch: int = 3, nf: int = 64, down_kernel: int = 4, side: int = 4):
        super().__init__()
        chans = [nf, nf, 2 * nf, 2 * nf, 4 * nf, 4 * nf, 8 * nf, 8 * nf, 8 * nf, 8 * nf]
        layers: list[nn.Module] = [nn.Conv2d(in_ch, nf, 3, 1, 1), nn.LeakyReLU(0.2)]
        prev = nf
        for i, c in enumerate(chans[1:]):
            stride_two = i % 2 == 0
            layers += [nn.Conv2d(prev, c, down_kernel if stride_two else 3, 2 if stride_two else 1, 1, bias=False),
                       nn.BatchNorm2d(c), nn.LeakyReLU(0.2)]
            prev = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(side)
        self.classifier = nn.Sequential(nn.Linear(8 * nf * side * side, 100), nn.LeakyReLU(0.2), nn.Linear(100, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def ragan_g(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic average GAN, generator side (BasicSR ``ragan``), on logits."""
    return (gan_loss(real_logits - fake_logits.mean(), False) + gan_loss(fake_logits - real_logits.mean(), True)) / 2


def ragan_d(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return (gan_loss(real_logits - fake_logits.mean(), True) + gan_loss(fake_logits - real_logits.mean(), False)) / 2


#: ESRGAN-FS's generator loss terms (train_SDSR.yml: pixel, feature, GAN) and their weights.
ESRGAN_FS_W = {"sr/pix": 1e-2, "sr/fea": 1.0, "sr/gan": 5e-3}


def esrgan_fs_step(sr: nn.Module, sd: nn.Module, lr: float, iterations: int,
                   batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                   terms: Callable[..., Mapping[str, torch.Tensor]], state: TrainState
                   ) -> Callable[[int], dict[str, float]]:
    """The training step of ESRGAN-FS's SR stage (FSSR; FCA's SR stage reuses it [inferred]).

    ``batch()`` gives (LR, HR) patches; ``terms(lr, hr, sr=, d=)`` the ESRGAN_FS_W terms and
    ``sr/d``, computing the SR output with ``sr`` and the discriminator's own loss with
    ``d`` (their data-parallel wrappers under torchrun; the generator's adversarial term
    goes through the bare discriminator, see ``bench.ddp.parallel``).
    Adam at ``lr`` for the SR network ``sr`` and its discriminator ``sd``, MultiStepLR
    [5k, 10k, 20k, 30k] of 51k (gamma 0.5) scaled onto ``iterations``; G steps, then D.
    The optimisers and schedulers are registered in ``state`` (``sr_opt_g`` ...).
    """
    opt_g, opt_d = adam(sr.parameters(), lr), adam(sd.parameters(), lr)
    rule = multistep(scaled_milestones([5000, 10000, 20000, 30000], 51000, iterations), 0.5)
    sched = [torch.optim.lr_scheduler.LambdaLR(o, rule) for o in (opt_g, opt_d)]
    state.register(sr_opt_g=opt_g, sr_opt_d=opt_d, sr_sched_g=sched[0], sr_sched_d=sched[1])
    g_ddp, d_ddp = parallel(sr), parallel(sd)

    def step(i: int) -> dict[str, float]:
        lr_patch, hr = batch()
        sr.train()
        sd.train()
        t = terms(lr_patch, hr, sr=g_ddp, d=d_ddp)
        descend(opt_g, sum(w * t[k] for k, w in ESRGAN_FS_W.items()), sr)
        descend(opt_d, t["sr/d"], sd)
        for sc in sched:
            sc.step()
        return {k: v.item() for k, v in t.items()}

    return step
