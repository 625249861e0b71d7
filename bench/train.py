"""What learned methods share for training: patch sampling, the budgeted loop,
stand-ins for ImageNet-weighted losses, and optimiser helpers.

Every method's ``fit`` is a loop of ``step(i) -> {loss name: value}`` run by
:func:`run_training`, which enforces the :class:`~bench.adapter.Budget`, shows a
progress bar and records the loss history in the :class:`~bench.adapter.FitReport`.
"""
from __future__ import annotations

import hashlib
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import faults
from .adapter import BenchError, Budget, FitReport

#: Bump when a change to shared training code changes what a fit produces; it is part
#: of every cached fit's key.
TRAIN_CODE_VERSION = "2"  # 2: lazy pools, patches drawn per call from (seed, call index)


def torch_generator(seed: int, *parts: object) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and any labels (no global RNG state)."""
    digest = hashlib.sha256(("|".join(map(str, (seed, *parts)))).encode()).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return g


def numpy_rng(seed: int, *parts: object) -> np.random.Generator:
    digest = hashlib.sha256(("|".join(map(str, (seed, *parts)))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


# ---------------------------------------------------------------------------
# patch sampling: lazy, and a pure function of (stream seed, call index)
# ---------------------------------------------------------------------------
_WORKERS: ContextVar[int] = ContextVar("unpaired_sr_bench_loader_workers", default=0)
_OPEN: ContextVar[list | None] = ContextVar("unpaired_sr_bench_open_samplers", default=None)


@contextmanager
def loading(workers: int) -> Iterator[None]:
    """Samplers made inside the block prefetch their batches with ``workers`` DataLoader
    worker processes (0: in the calling process); their workers stop when it ends.

    A context variable, like :func:`probing`, so ``Method.fit(data, budget)`` keeps its
    signature and third-party methods built on :class:`PatchSampler` get workers too."""
    opened: list = []
    t1, t2 = _WORKERS.set(max(0, int(workers))), _OPEN.set(opened)
    try:
        yield
    finally:
        _WORKERS.reset(t1)
        _OPEN.reset(t2)
        for s in opened:
            s.close()


class _Calls(torch.utils.data.Dataset):
    """Call ``i`` of a sampler as item ``i``: what a loader worker computes."""

    def __init__(self, sampler: "PatchSampler", kind: str, n: int):
        self.sampler, self.kind, self.n = sampler, kind, n

    def __len__(self) -> int:
        return 1 << 62

    def __getitem__(self, call: int):
        return self.sampler._compute(self.kind, self.n, call)


class PatchSampler:
    """Random square patches from a pool of H x W x 3 float images, as N x 3 x p x p tensors.

    ``images``: an :class:`~bench.pools.ImagePool` (read lazily: only the images a call
    draws are decoded, through the pool's bounded cache) or a sequence of arrays.

    Reproducible whatever the loader: call ``k`` (the k-th ``sample``/``sample_pairs``)
    draws from its own generator, seeded by (``generator``'s seed, k), so the patch
    sequence is a pure function of (seed, call index). With workers (:func:`loading`)
    calls are computed ahead in worker processes and consumed in order: the same patches,
    bit for bit, as with none. Images smaller than the patch are replicate-padded so that
    tiny pools still train (the smoke profile uses them). Each sampler has its own seed,
    so a source and a target sampler never pair images by index or name.
    """

    def __init__(self, images, patch: int, generator: torch.Generator, augment: bool = True, *, shard: bool = True):
        from .pools import as_pool

        self.pool = as_pool(images)
        if not len(self.pool):
            raise BenchError("training pool is empty: the method got no images to learn from")
        self.patch = patch
        self.seed = generator.initial_seed()
        self.augment = augment
        #: in a data-parallel fit, return this rank's share of each call (False: the whole
        #: batch, for a method that draws more per batch, e.g. degradations, and shards after)
        self.shard = shard
        self.calls = 0  # the sampler's whole state: which call comes next
        self.workers = _WORKERS.get()
        self._g: torch.Generator | None = None
        self._ahead: tuple[str, int, Iterator] | None = None
        opened = _OPEN.get()
        if opened is not None and self.workers:
            opened.append(self)

    # -- what a call draws from ---------------------------------------------
    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self._g))

    def _padded(self, i: int) -> np.ndarray:
        im = self.pool.load(i)
        h, w = im.shape[:2]
        ph, pw = max(0, self.patch - h), max(0, self.patch - w)
        return np.pad(im, ((0, ph), (0, pw), (0, 0)), mode="edge") if ph or pw else im

    @staticmethod
    def _chw(a: np.ndarray) -> torch.Tensor:
        # copy H x W x 3 into a contiguous 3 x H x W tensor: flips and stacks of a strided
        # (permuted) view are many times slower than of a contiguous one
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 0), dtype=np.float32))

    def _image(self, i: int) -> torch.Tensor:
        """Image ``i`` as a contiguous 3 x H x W tensor (a copy), padded up to the patch;
        for samplers that cut several patches of one image (the pair samplers)."""
        return self._chw(self._padded(i))

    def _crop(self, i: int) -> torch.Tensor:
        """A random patch of image ``i``, cut before any copy (a 2K image is not copied)."""
        im = self._padded(i)
        h, w = im.shape[:2]
        y, x = self._randint(h - self.patch + 1), self._randint(w - self.patch + 1)
        return self._chw(im[y:y + self.patch, x:x + self.patch])

    def _draw_patches(self, n: int) -> torch.Tensor:
        out = []
        for _ in range(n):
            p = self._crop(self._randint(len(self.pool)))
            out.append(self._augment(p) if self.augment else p)
        return torch.stack(out).contiguous()

    def _augment(self, t: torch.Tensor, *more: torch.Tensor):
        """Random horizontal flip, vertical flip and transpose of the last two axes, in that
        order (three draws), the same for ``t`` and every tensor in ``more`` (an aligned LR
        and HR patch); subclasses apply it to a whole image or a stack of patches."""
        ts = (t, *more)
        if self._randint(2):
            ts = tuple(x.flip(-1) for x in ts)
        if self._randint(2):
            ts = tuple(x.flip(-2) for x in ts)
        if self._randint(2):
            ts = tuple(x.transpose(-1, -2) for x in ts)
        return ts if more else ts[0]

    # -- calls ------------------------------------------------------------------
    def _compute(self, kind: str, n: int, call: int):
        self._g = torch_generator(self.seed, "call", call)
        return getattr(self, f"_draw_{kind}")(n)

    def _call(self, kind: str, n: int):
        """Call ``self.calls`` of ``n`` items: in a data-parallel fit ``n`` is the step's
        total batch and this rank gets its slice (bench/ddp.py)."""
        from . import ddp

        w = ddp.world()
        if w.size == 1 or not self.shard:
            return self._next(kind, n)
        ddp.rank_batch(n)  # refuses a batch that does not split
        return ddp.shard(self._next(kind, n), w)

    def _next(self, kind: str, n: int):
        call = self.calls
        self.calls += 1
        if not self.workers:
            return self._compute(kind, n, call)
        if self._ahead is None or self._ahead[:2] != (kind, n):
            self.close()  # a new kind of call (another stage): prefetch from here
            loader = torch.utils.data.DataLoader(
                _Calls(self, kind, n), batch_size=None, sampler=range(call, 1 << 62), num_workers=self.workers,
                prefetch_factor=2)
            self._ahead = (kind, n, iter(loader))
        return next(self._ahead[2])

    def sample(self, n: int) -> torch.Tensor:
        return self._call("patches", n)

    def sample_pairs(self, n: int) -> torch.Tensor:
        """Two patches of one image per item (subclasses define ``_draw_pairs``): N x 2 x 3 x p x p."""
        return self._call("pairs", n)

    def close(self) -> None:
        """Stop this sampler's loader workers (the next call restarts them where it is)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            it = ahead[2]
            if hasattr(it, "_shutdown_workers"):
                it._shutdown_workers()

    def state_dict(self) -> dict:
        return {"calls": self.calls, "seed": self.seed}

    def load_state_dict(self, state: Mapping) -> None:
        self.close()
        self.calls = int(state["calls"])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_ahead"], state["_g"] = None, None  # a worker gets the recipe, not the parent's loader
        return state


class TrainingProbe:
    """Watches one fit from outside: ``callback(n, desc)`` runs after the n-th optimisation
    step (counted over every stage of the fit) whenever n is in ``at``.

    It reaches the loop through a context variable rather than through ``Method.fit``'s
    signature, so the adapter interface stays ``fit(data, budget)`` and any method that
    trains through :func:`run_training` (third-party ones included) can be probed.
    """

    def __init__(self, at: Sequence[int], callback: Callable[[int, str], None]):
        self.at = frozenset(int(a) for a in at)
        self.callback = callback
        self.steps = 0

    def after_step(self, desc: str) -> None:
        self.steps += 1
        if self.steps in self.at:
            self.callback(self.steps, desc)


_PROBE: ContextVar[TrainingProbe | None] = ContextVar("unpaired_sr_bench_training_probe", default=None)


@contextmanager
def _scoped(var: ContextVar, value):
    """``var`` holds ``value`` inside the ``with`` block (and what it held before after it)."""
    token = var.set(value)
    try:
        yield value
    finally:
        var.reset(token)


def probing(probe: TrainingProbe):
    """Attach ``probe`` to every :func:`run_training` loop run inside the ``with`` block."""
    return _scoped(_PROBE, probe)


@dataclass(frozen=True)
class Stage:
    """One stage of a fit (e.g. a degradation model, then the SR network): ``step(i)`` is
    called with the iteration index within the stage and returns {loss name: value}."""

    name: str
    step: Callable[[int], Mapping[str, float]]
    iterations: int


@dataclass(frozen=True)
class LoopOptions:
    """How the loop runs a fit; set around ``Method.fit`` with :func:`loop_options` (a
    context variable, like :func:`probing`, so ``fit(data, budget)`` keeps its signature).

    ``resume_dir``: where the training state is saved and found again (None: not saved);
    ``save_every``: steps between saves (each stage boundary is saved as well);
    ``amp``: ``"bf16"`` runs every step under autocast (bf16 needs no loss scaling);
    ``channels_last``: registered networks in channels-last memory format;
    ``val_every`` / ``monitor``: every so many steps rank 0 calls ``monitor()`` (RNG and
    train/eval modes are restored after it, so watching never changes the fit);
    ``log_file``: the long-format ``train_log.csv``; ``tensorboard``: a SummaryWriter folder.
    """

    resume_dir: str | None = None
    save_every: int = 0
    amp: str | None = None
    channels_last: bool = False
    val_every: int = 0
    monitor: Callable[[], Mapping[str, float]] | None = None
    log_file: str | None = None
    tensorboard: str | None = None
    log: Callable[[str], None] = print


_OPTIONS: ContextVar[LoopOptions] = ContextVar("unpaired_sr_bench_loop_options", default=LoopOptions())


def loop_options(options: LoopOptions):
    """Run the fits inside the ``with`` block with ``options``."""
    return _scoped(_OPTIONS, options)


class TrainLog:
    """``train_log.csv`` (iteration, stage, kind, name, value, elapsed_s; one row per value,
    so stages with other losses share one file) and TensorBoard scalars when installed.
    A resumed fit first drops the rows of the steps it is about to run again."""

    HEADER = "iteration,stage,kind,name,value,elapsed_s\n"

    def __init__(self, path: str | None, tensorboard: str | None, resume_at: int):
        self.path = Path(path) if path else None
        self.tb = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            kept = []
            if self.path.exists():
                for line in self.path.read_text().splitlines()[1:]:
                    it, _, kind = (line.split(",", 3) + ["", ""])[:3]
                    # loss rows of the steps done, validation rows up to the save (both come again after it)
                    if it.isdigit() and (int(it) < resume_at or (kind == "valid" and int(it) <= resume_at)):
                        kept.append(line + "\n")
            self.path.write_text(self.HEADER + "".join(kept))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                pass  # optional extra: pip install -e ".[tensorboard]"
            else:
                self.tb = SummaryWriter(tensorboard, purge_step=resume_at + 1)

    def write(self, iteration: int, stage: str, kind: str, values: Mapping[str, float], elapsed: float) -> None:
        if self.path is not None:
            with self.path.open("a") as fh:
                fh.writelines(f"{iteration},{stage},{kind},{k},{v:.6g},{elapsed:.2f}\n" for k, v in values.items())
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{kind}/{k}", v, iteration)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _watch(monitor: Callable[[], Mapping[str, float]], modules: Sequence[nn.Module]) -> dict[str, float]:
    """Run the monitor without touching the fit: the same RNG streams and train/eval modes after it."""
    from .resume import rng_state, set_rng_state

    modes = [(m, m.training) for top in modules for m in top.modules()]
    rng = rng_state()
    try:
        with torch.no_grad():
            return {k: float(v) for k, v in monitor().items()}
    finally:
        set_rng_state(rng)
        for m, mode in modes:
            m.training = mode


def run_stages(stages: Sequence[Stage], budget: Budget, *, desc: str, state=None,
               report: FitReport | None = None, log_every: int = 10) -> FitReport:
    """Run ``stages`` in order, each for its own iterations, with one progress bar (it/s,
    ETA over the whole fit). History rows carry the step index over the whole fit.

    ``state`` (a :class:`bench.resume.TrainState`): what the fit registered. With it and a
    ``resume_dir`` in the :class:`LoopOptions`, the state is saved every ``save_every``
    steps and at each stage boundary, and a rerun resumes from the newest save. Without it
    the fit runs but cannot resume. One fit runs one ``run_stages`` call (all its stages)."""
    from . import ddp
    from .resume import StateFiles, rng_state, set_rng_state

    report = report or FitReport()
    opts = _OPTIONS.get()
    w = ddp.world()
    plan = [[s.name, int(s.iterations)] for s in stages]
    total = sum(max(0, n) for _, n in plan)
    modules = state.modules() if state is not None else []
    if opts.channels_last:
        for m in modules:
            m.to(memory_format=torch.channels_last)
    files = StateFiles(opts.resume_dir) if opts.resume_dir and state is not None else None
    start_k, start_i, done, prior_wall = 0, 0, 0, 0.0
    saved = files.latest(opts.log) if files is not None else None
    if saved is not None:
        if saved["desc"] != desc or saved["plan"] != plan:
            raise BenchError(f"the training state in {files.folder} is of {saved['desc']} {saved['plan']}, not of "
                             f"{desc} {plan}; delete that folder to start this fit over")
        if len(saved["rng"]) != w.size:
            raise BenchError(f"the training state in {files.folder} was saved by {len(saved['rng'])} rank(s); "
                             f"resume it with as many (torchrun --nproc_per_node), or delete the folder")
        state.load_state_dict(saved["objects"])
        set_rng_state(saved["rng"][w.rank])
        report.history = [dict(r) for r in saved["history"]]
        start_k, start_i, done, prior_wall = saved["stage"], saved["iteration"], saved["done"], saved["wall_s"]
        threads = saved.get("threads")
        if w.main and threads is not None and threads != torch.get_num_threads():
            opts.log(f"warning: {desc} was saved with {threads} torch threads and resumes with "
                     f"{torch.get_num_threads()}: it continues correctly but not bit for bit; pass --threads {threads} "
                     "for an exact continuation")
        if w.main:
            where = f"stage {plan[start_k][0]} iteration {start_i}/{plan[start_k][1]}" if start_k < len(plan) else "the end"
            opts.log(f"{desc}: resumed from iteration {done} of {total} ({where}), saved in {files.folder}")
    log = TrainLog(opts.log_file, opts.tensorboard, done) if w.main else TrainLog(None, None, 0)
    start = time.perf_counter()
    disable = os.environ.get("UNPAIRED_SR_BENCH_NO_PROGRESS") == "1" or not w.main
    bar = tqdm(total=total, initial=done, desc=desc, leave=False, disable=disable, dynamic_ncols=True)
    probe = _PROBE.get()
    amp = torch.autocast(device_type=_device_type(modules), dtype=torch.bfloat16) if opts.amp == "bf16" else None

    def save(k: int, i: int) -> None:
        rng = ddp.all_objects(rng_state())  # every rank's streams: a collective, so every rank calls it
        if w.main:
            files.save(done, {"desc": desc, "plan": plan, "stage": k, "iteration": i, "done": done,
                              "objects": state.state_dict(), "rng": rng, "history": report.history,
                              "threads": torch.get_num_threads(),  # CPU float reductions follow it
                              "wall_s": prior_wall + time.perf_counter() - start})

    try:
        for k, stage in enumerate(stages):
            if k < start_k or stage.iterations <= 0:
                continue
            bar.set_description(f"{desc} [{stage.name}]" if len(stages) > 1 else desc)
            for i in range(start_i if k == start_k else 0, stage.iterations):
                faults.reached("fit-step")
                if amp is not None:
                    with amp:
                        out = stage.step(i)
                else:
                    out = stage.step(i)
                losses = {name: float(v) for name, v in out.items()}
                for name, v in losses.items():
                    if not np.isfinite(v):
                        raise BenchError(f"{desc}: loss {name} became {v} at iteration {done}; lower the learning "
                                         "rate or check the data")
                last = i == stage.iterations - 1
                if i % log_every == 0 or last:
                    report.history.append({"iteration": done, **losses})
                    bar.set_postfix({name: f"{v:.4g}" for name, v in list(losses.items())[:3]})
                    log.write(done, stage.name, "loss", losses, prior_wall + time.perf_counter() - start)
                done += 1
                report.iterations = done
                bar.update(1)
                if probe is not None:
                    probe.after_step(desc)
                if opts.val_every and opts.monitor is not None and done % opts.val_every == 0:
                    if w.main:
                        log.write(done, stage.name, "valid", _watch(opts.monitor, modules),
                                  prior_wall + time.perf_counter() - start)
                    ddp.barrier()
                if files is not None and (last or (opts.save_every and done % opts.save_every == 0)):
                    save(k + 1, 0) if last else save(k, i + 1)
    finally:
        bar.close()
        log.close()
    report.iterations = done
    report.wall_s += prior_wall + time.perf_counter() - start
    return report


def _device_type(modules: Sequence[nn.Module]) -> str:
    for m in modules:
        for p in m.parameters():
            return p.device.type
    return "cpu"


def precision_label(device: str, amp: str | None) -> str:
    """What a fit computes in: ``fp32`` or ``bf16 autocast``, and on CUDA the TF32 flags
    (cuDNN convolutions use TF32 unless ``torch.backends.cudnn.allow_tf32`` is off; matmuls
    only if ``torch.backends.cuda.matmul.allow_tf32`` is on)."""
    label = f"{amp} autocast" if amp else "fp32"
    if str(device).startswith("cuda"):
        on = lambda flag: "on" if flag else "off"  # noqa: E731
        label += (f" (TF32 conv {on(torch.backends.cudnn.allow_tf32)}, "
                  f"matmul {on(torch.backends.cuda.matmul.allow_tf32)})")
    return label


def run_training(step: Callable[[int], Mapping[str, float]], budget: Budget, *, desc: str, state=None,
                 log_every: int = 10, report: FitReport | None = None) -> FitReport:
    """A fit of one stage: ``step(i)`` for ``budget.iterations`` (see :func:`run_stages`)."""
    return run_stages([Stage("train", step, budget.iterations)], budget, desc=desc, state=state, report=report,
                      log_every=log_every)


def to_batch(images: Sequence[np.ndarray]) -> torch.Tensor:
    """Same-size H x W x 3 arrays -> N x 3 x H x W float32 tensor."""
    return torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in images])).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------------
# perceptual losses: real VGG when its ImageNet weights are present, else a stand-in
# ---------------------------------------------------------------------------
VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's ImageNet VGG19
#: torchvision names hub files "<name>-<first 8 hex of sha256>.pth" and publishes only that prefix
VGG19_SHA256_PREFIX = "dcbb9e9d"
EXPECTED_PREFIX = {VGG19_FILE: VGG19_SHA256_PREFIX}


def find_weight_file(name: str, weights_dir: str | Path | None = None) -> Path | None:
    """Look for ``name`` in ``weights_dir``, then the torch hub checkpoint cache."""
    candidates = []
    if weights_dir:
        candidates.append(Path(weights_dir) / name)
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / name)
    for c in candidates:
        if c.is_file():
            return c
    return None


def resolve_weight_file(name: str, weights_dir: str | Path | None, *, verify: bool = True) -> tuple[Path | None, str]:
    """(path or None, sha256 or 'absent') of an ImageNet weight file; a file whose digest
    does not match the published prefix is refused with one line (``verify=False`` is for
    tests with stand-in files only)."""
    path = find_weight_file(name, weights_dir)
    if path is None:
        return None, "absent"
    from .adapter import sha256_file

    digest = sha256_file(path)
    expected = EXPECTED_PREFIX.get(name)
    if verify and expected and not digest.startswith(expected):
        raise BenchError(f"{path} has sha256 {digest[:16]}..., but {name} must start with {expected}: it is not "
                         f"torchvision's file; replace it with the original or remove it from --weights-dir")
    return path, digest


def _laplacian_pyramid(x: torch.Tensor, levels: int = 3) -> list[torch.Tensor]:
    out = []
    for _ in range(levels):
        down = F.avg_pool2d(x, 2, ceil_mode=True)
        up = F.interpolate(down, size=x.shape[-2:], mode="bilinear", align_corners=False)
        out.append(x - up)
        x = down
    out.append(x)
    return out


class PerceptualLoss(nn.Module):
    """VGG19 feature L1 (conv5_4 before activation, ESRGAN-style) with ImageNet weights,
    or, where those cannot be had and the profile allows it, a Laplacian-pyramid L1
    stand-in (``self.stand_in`` names it so tables can say so).

    The ``paper`` profile requires the real weights and raises naming the file.
    """

    def __init__(self, profile: str, weights_dir: str | Path | None = None, layer: int = 35, *,
                 verify: bool = True):
        super().__init__()
        path, _ = resolve_weight_file(VGG19_FILE, weights_dir, verify=verify)
        self.stand_in: str | None = None
        self.vgg: nn.Module | None = None
        #: the file the loss was built from (None: the stand-in)
        self.weights_path: Path | None = path
        if path is not None:
            from torchvision.models import vgg as tv_vgg

            from .adapter import load_state_dict_checked, load_torch_file

            # only the convolutional trunk is used: build and load just that (the full file's
            # classifier holds 120M parameters nobody reads here)
            features = tv_vgg.make_layers(tv_vgg.cfgs["E"])
            state = load_torch_file(path)
            trunk = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")} \
                if isinstance(state, Mapping) else state
            load_state_dict_checked(features, trunk, what=f"VGG19 weights {path}")
            self.vgg = features[:layer].eval()
            for p in self.vgg.parameters():
                p.requires_grad = False
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        elif profile == "paper":
            raise BenchError(
                f"the paper profile needs ImageNet VGG19 weights {VGG19_FILE}: place it in --weights-dir "
                f"or {Path(torch.hub.get_dir()) / 'checkpoints'}"
            )
        else:
            self.stand_in = f"Laplacian-pyramid L1 (stand-in: {VGG19_FILE} not available offline)"

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """Inputs in [0,1]."""
        if self.vgg is not None:
            return F.l1_loss(self.vgg((sr - self.mean) / self.std), self.vgg((hr - self.mean) / self.std))
        return sum(F.l1_loss(a, b) for a, b in zip(_laplacian_pyramid(sr), _laplacian_pyramid(hr)))


def adam(params, lr: float, betas=(0.9, 0.999)) -> torch.optim.Optimizer:
    return torch.optim.Adam([p for p in params if p.requires_grad], lr=lr, betas=betas)


def gan_loss(pred: torch.Tensor, real: bool, kind: str = "vanilla") -> torch.Tensor:
    """Discriminator/generator objective: 'vanilla' (BCE with logits) or 'lsgan'."""
    target = torch.ones_like(pred) if real else torch.zeros_like(pred)
    if kind == "lsgan":
        return F.mse_loss(pred, target)
    return F.binary_cross_entropy_with_logits(pred, target)


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad = flag


class PairedPatchSampler(PatchSampler):
    """Aligned (LR, HR) patches: LR patch p <-> HR patch p*scale, read lazily like
    :class:`PatchSampler` (one seeded generator per call).

    ``pairs``: (HR pool, LR pool) couples aligned by index (several: e.g. one LR pool per
    noise draw); image k of the sampler is image j of couple c, counted couple by couple.
    For the supervised baselines only (``edsr-bicubic`` on bicubic pairs of the source
    pool, ``oracle`` on pairs of the true target degradation or a real set's train pairs).
    """

    def __init__(self, pairs: Sequence[tuple], patch: int, scale: int, generator: torch.Generator):
        from .pools import as_pool

        couples = [(as_pool(hr), as_pool(lr)) for hr, lr in pairs]
        for hr, lr in couples:
            if len(hr) != len(lr):
                raise BenchError(f"training pairs: {len(hr)} HR images but {len(lr)} LR images; pair every HR "
                                 "with one LR")
        self.couples = couples
        self._where = [(c, j) for c, (hr, _) in enumerate(couples) for j in range(len(hr))]
        if not self._where:
            raise BenchError("no training pairs: the pool is empty")
        super().__init__(couples[0][0], patch, generator)
        self.scale = scale

    def _draw_patches(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        lrs, hrs = [], []
        p, s = self.patch, self.scale
        for _ in range(n):
            c, j = self._where[self._randint(len(self._where))]
            hr_pool, lr_pool = self.couples[c]
            lr, hr = lr_pool.load(j), hr_pool.load(j)
            if lr.shape[0] < p or lr.shape[1] < p:  # replicate-padded as PatchSampler pads (tiny smoke pools)
                ph, pw = max(0, p - lr.shape[0]), max(0, p - lr.shape[1])
                lr = np.pad(lr, ((0, ph), (0, pw), (0, 0)), mode="edge")
                hr = np.pad(hr[: (lr.shape[0] - ph) * s, : (lr.shape[1] - pw) * s],
                            ((0, ph * s), (0, pw * s), (0, 0)), mode="edge")
            y, x = self._randint(lr.shape[0] - p + 1), self._randint(lr.shape[1] - p + 1)
            if hr.shape[0] < (y + p) * s or hr.shape[1] < (x + p) * s:
                raise BenchError(f"training pair {hr_pool.label(j)} / {lr_pool.label(j)}: HR {hr.shape[1]}x"
                                 f"{hr.shape[0]} is smaller than {s} x LR {lr.shape[1]}x{lr.shape[0]}; "
                                 "the pair is misaligned or at another scale")
            a, b = self._chw(lr[y:y + p, x:x + p]), self._chw(hr[y * s:(y + p) * s, x * s:(x + p) * s])
            a, b = self._augment(a, b)
            lrs.append(a)
            hrs.append(b)
        return torch.stack(lrs).contiguous(), torch.stack(hrs).contiguous()
