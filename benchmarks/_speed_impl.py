"""The measurements behind benchmarks/speed_core.py (imported after the thread settings)."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

# The issues' acceptance bars (CPU, same run): (name, row, reference, speed-up at least,
# largest value difference at most). "before" is the previous NIQE (pyiqa's calculate_niqe
# under our input handling), timed in the row "NIQE before".
ACCEPT = (
    ("resize x4 down", "resize x4 down", "pyiqa", 5.0, 1e-3),
    ("SSIM-Y", "SSIM-Y", "pyiqa", 10.0, 1e-5),
    ("NIQE vs BasicSR", "NIQE", "basicsr", 3.0, None),
    ("NIQE vs before", "NIQE", "before", 3.0, 1e-4),
)
BASICSR_HINT = ("BasicSR column skipped: pass --basicsr PATH, a folder holding BasicSR's source tree "
                "(basicsr/metrics/niqe.py, psnr_ssim.py, metric_util.py, niqe_pris_params.npz, "
                "basicsr/utils/matlab_functions.py, color_util.py), e.g. a git checkout of XPixelGroup/BasicSR")


# ---------------------------------------------------------------------------
# BasicSR (not a dependency: its metric files are imported from --basicsr PATH)
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BasicSR:
    """BasicSR's numpy metric functions, imported from a source tree."""

    root: Path
    version: str
    files: dict  # path relative to root -> sha256, for the record
    calculate_psnr: Callable
    calculate_ssim: Callable
    calculate_niqe: Callable
    imresize: Callable


_BASICSR_FILES = (
    "basicsr/utils/color_util.py",
    "basicsr/utils/matlab_functions.py",
    "basicsr/metrics/metric_util.py",
    "basicsr/metrics/psnr_ssim.py",
    "basicsr/metrics/niqe.py",
    "basicsr/metrics/niqe_pris_params.npz",
)


def load_basicsr(path: Path) -> BasicSR:
    """Import BasicSR's metric modules from ``path`` (a folder with ``basicsr/`` in it, or
    the ``basicsr`` package folder) without its package ``__init__`` files, which import
    the whole training framework: the packages are bare stand-ins with the right search
    path, and ``basicsr.utils.registry`` a stand-in whose ``register()`` returns the
    function unchanged. The functions themselves are BasicSR's, unmodified."""
    import hashlib
    import importlib
    import types

    root = Path(path).expanduser().resolve()
    if not (root / "basicsr").is_dir() and (root / "metrics" / "niqe.py").is_file():
        root = root.parent
    missing = [f for f in _BASICSR_FILES if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"--basicsr {path}: missing {', '.join(missing)}")

    class _Registry:
        def register(self, *args, **kwargs):
            return lambda fn: fn

    def package(name: str, folder: Path | None = None) -> types.ModuleType:
        mod = types.ModuleType(name)
        if folder is not None:
            mod.__path__ = [str(folder)]
        sys.modules[name] = mod
        return mod

    for name in [m for m in sys.modules if m == "basicsr" or m.startswith("basicsr.")]:
        del sys.modules[name]  # an installed BasicSR must not mix in
    package("basicsr", root / "basicsr")
    utils = package("basicsr.utils", root / "basicsr" / "utils")
    package("basicsr.utils.registry").METRIC_REGISTRY = _Registry()
    package("basicsr.metrics", root / "basicsr" / "metrics")
    color = importlib.import_module("basicsr.utils.color_util")
    utils.bgr2ycbcr = color.bgr2ycbcr  # what basicsr/utils/__init__.py exports to metric_util
    mf = importlib.import_module("basicsr.utils.matlab_functions")
    ps = importlib.import_module("basicsr.metrics.psnr_ssim")
    nq = importlib.import_module("basicsr.metrics.niqe")
    version = "unknown"
    for cand in (root / "VERSION", root / "basicsr" / "version.py"):
        if cand.is_file():
            m = re.search(r"(\d+\.\d+\.\d+)", cand.read_text())
            version = m.group(1) if m else version
            break
    files = {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in _BASICSR_FILES}
    return BasicSR(root, version, files, ps.calculate_psnr, ps.calculate_ssim, nq.calculate_niqe, mf.imresize)


# ---------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------
def progress(row: "Row") -> "Row":
    ours = f"{1e3 * row.ours_s:.1f} ms" if row.ours_s else "-"
    ref = f"{1e3 * row.ref_s:.1f} ms" if row.ref_s else "-"
    bsr = f", BasicSR {1e3 * row.basicsr_s:.1f} ms" if row.basicsr_s else ""
    print(f"  {row.device:4s} {row.task}: ours {ours}, pyiqa {ref}{bsr}", file=sys.stderr, flush=True)
    return row


@dataclass
class Row:
    task: str
    device: str
    ours_s: float | None  # seconds per image
    ref_s: float | None  # pyiqa, seconds per image
    max_diff: float | None = None  # against pyiqa
    diff_unit: str = ""
    note: str = ""
    basicsr_s: float | None = None  # BasicSR's numpy function, seconds per image
    basicsr_diff: float | None = None  # largest |ours - BasicSR|, in diff_unit
    before_s: float | None = None  # our previous implementation, where one is kept
    before_diff: float | None = None  # largest |ours - previous|

    @property
    def speedup(self) -> float | None:
        return self.ref_s / self.ours_s if self.ours_s and self.ref_s else None

    @property
    def speedup_basicsr(self) -> float | None:
        return self.basicsr_s / self.ours_s if self.ours_s and self.basicsr_s else None

    @property
    def speedup_before(self) -> float | None:
        return self.before_s / self.ours_s if self.ours_s and self.before_s else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(
            ours_img_per_s=1 / self.ours_s if self.ours_s else None,
            ref_img_per_s=1 / self.ref_s if self.ref_s else None,
            speedup=self.speedup,
            basicsr_img_per_s=1 / self.basicsr_s if self.basicsr_s else None,
            speedup_basicsr=self.speedup_basicsr,
            speedup_before=self.speedup_before,
        )
        return d


def timed(fn: Callable[[list], list], items: list, args: argparse.Namespace, sync: Callable[[], None]) -> tuple[float, list]:
    """Median seconds per item of ``fn(items)`` over up to ``--repeats`` passes, after a
    two-item warm-up (allocations, both joblib workers, CUDA kernels); returns the last outputs."""
    fn(items[:2])
    sync()
    times, spent, out = [], 0.0, []
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        out = fn(items)
        sync()
        dt = time.perf_counter() - t0
        times.append(dt / len(items))
        spent += dt
        if spent > args.budget_s:
            break
    return statistics.median(times), out


def max_abs(a: Sequence, b: Sequence) -> float:
    return max(float(np.max(np.abs(np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)))) for x, y in zip(a, b))


# ---------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------
def bench_images(n: int, size: tuple[int, int] = (768, 1024)) -> list[np.ndarray]:
    """``n`` natural 8-bit RGB images of ``size`` (H, W), from scikit-image's bundled data."""
    from skimage import data

    from bench.degrade.resize import imresize

    names = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
    out = []
    for k in range(n):
        img = getattr(data, names[k % len(names)])()[..., :3].astype(np.float64) / 255.0
        if (k // len(names)) % 2:
            img = img[:, ::-1]  # more images than sources: mirror rather than repeat
        out.append(np.clip(np.round(imresize(img, out_shape=size) * 255.0), 0, 255).astype(np.uint8))
    return out


def to_tensor(img: np.ndarray, dtype: torch.dtype, device: str = "cpu") -> torch.Tensor:
    """What pyiqa builds from an 8-bit file: 1 x 3 x H x W in [0,1]."""
    return torch.from_numpy(img.transpose(2, 0, 1)[None].copy()).to(device=device, dtype=dtype) / 255.0


def standin_lpips_dir(folder: Path) -> Path:
    """Random AlexNet features and linear layers under the release names: LPIPS's cost does
    not depend on the weight values, so they time it; they never give a score."""
    from torchvision.models import alexnet

    from bench import metrics as M

    g = torch.Generator().manual_seed(0)
    feats = {f"features.{k}": torch.randn(v.shape, generator=g) * 0.05 for k, v in alexnet(weights=None).features.state_dict().items()}
    torch.save(feats, folder / M.ALEXNET_FILE)
    lins = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(lins, folder / M.LPIPS_LIN_FILE)
    return folder


def pyiqa_niqe(folder: Path, device: str):
    """pyiqa's own NIQE module, reading the parameters this package ships (it would download them)."""
    import scipy.io
    from pyiqa.archs.niqe_arch import NIQE

    from bench.metrics import load_niqe_params

    mu, cov = load_niqe_params()
    mat = folder / "niqe_params.mat"
    scipy.io.savemat(mat, {"mu_prisparam": mu.numpy()[None], "cov_prisparam": cov.numpy()})
    return NIQE(test_y_channel=True, color_space="ycbcr", crop_border=4, pretrained_model_path=str(mat)).to(device)


# ---------------------------------------------------------------------------
# the measurements
# ---------------------------------------------------------------------------
def cpu_rows(hrs: list[np.ndarray], srs: list[np.ndarray], args: argparse.Namespace, tmp: Path,
             bsr: BasicSR | None = None) -> list[Row]:
    import pyiqa
    from pyiqa.matlab_utils import imresize as pyiqa_imresize

    from bench import metrics as M
    from bench.degrade import get_suite, synthesize
    from bench.degrade.resize import imresize

    def sync() -> None:
        return None

    rows: list[Row] = []
    hr_f = [h.astype(np.float64) / 255.0 for h in hrs]
    hr_t = [to_tensor(h, torch.float32) for h in hrs]
    sr_t = [to_tensor(s, torch.float32) for s in srs]
    lrs = [imresize(h, 0.25) for h in hr_f]
    lr_t = [torch.from_numpy(lr.transpose(2, 0, 1)[None].astype(np.float32)) for lr in lrs]
    pairs = list(zip(srs, hrs))

    for task, xs, xt, s in (("resize x4 down", hr_f, hr_t, 0.25), ("resize x4 up", lrs, lr_t, 4)):
        t_ours, o = timed(lambda b: [imresize(x, s) for x in b], xs, args, sync)
        t_ref, r = timed(lambda b: [pyiqa_imresize(x, scale=s) for x in b], xt, args, sync)
        diff = max_abs([x * 255 for x in o], [y[0].numpy().transpose(1, 2, 0) * 255 for y in r])
        row = Row(task, "cpu", t_ours, t_ref, diff, "grey levels", "MATLAB bicubic; pyiqa and BasicSR on float32")
        if bsr is not None:
            row.basicsr_s, rb = timed(lambda b: [bsr.imresize(x, s) for x in b], xs, args, sync)
            row.basicsr_diff = max_abs([x * 255 for x in o], [y * 255 for y in rb])
        rows.append(progress(row))

    for name in args.suites.split(";"):
        suite = get_suite(name.strip())
        hr32 = [h.astype(np.float32) for h in hr_f]
        ids = list(range(len(hr32)))
        t, _ = timed(lambda b: [synthesize(suite, hr32[i], 4, f"img{i:03d}", 0) for i in b], ids, args, sync)
        rows.append(progress(Row(f"synthesize {suite.name}", "cpu", t, None, note="x4, HR -> 8-bit LR")))

    ref_p = pyiqa.create_metric("psnr", test_y_channel=True, color_space="ycbcr", crop_border=4, device="cpu")
    ref_s = pyiqa.create_metric("ssim", test_y_channel=True, color_space="ycbcr", crop_border=4, device="cpu")
    # BasicSR reads OpenCV's BGR order; the copies are made before timing
    bgr = [(np.ascontiguousarray(s[..., ::-1]), np.ascontiguousarray(h[..., ::-1])) for s, h in pairs]
    bsr_fns = {"PSNR-Y": bsr.calculate_psnr, "SSIM-Y": bsr.calculate_ssim} if bsr is not None else {}
    for task, fn, ref in (("PSNR-Y", M.psnr, ref_p), ("SSIM-Y", M.ssim, ref_s)):
        t_ours, o = timed(lambda b: [fn(s, h, crop=4, channel="y") for s, h in b], pairs, args, sync)
        idx = list(range(len(pairs)))
        t_ref, r = timed(lambda b: [float(ref(sr_t[i], hr_t[i])) for i in b], idx, args, sync)
        note = "paper-y, crop 4; one process" + ("; BasicSR SSIM on unrounded Y" if task == "SSIM-Y" and bsr else "")
        row = Row(task, "cpu", t_ours, t_ref, max_abs(o, r), "abs", note)
        if task in bsr_fns:
            bf = bsr_fns[task]
            row.basicsr_s, rb = timed(
                lambda b: [float(bf(s, h, crop_border=4, input_order="HWC", test_y_channel=True)) for s, h in b], bgr, args, sync)
            row.basicsr_diff = max_abs(o, rb)
        rows.append(progress(row))
    if args.threads > 1:
        m = M.create_metric("ssim", scale=4)
        batch = [(s, h, False) for s, h in pairs]
        t, _ = timed(lambda b: m.batch(b, jobs=args.threads), batch, args, sync)
        rows.append(progress(Row("SSIM-Y batch", "cpu", t, None, note=f"joblib, {args.threads} processes")))

    niqe_m = M.create_metric("niqe", scale=4)
    ref_n = pyiqa_niqe(tmp, "cpu")
    mu, cov = M.load_niqe_params()
    t_ours, o = timed(lambda b: niqe_m.batch([(s, None, False) for s in b], jobs=1), srs, args, sync)
    with torch.inference_mode():
        t_ref, r = timed(lambda b: [float(ref_n(x)) for x in b], sr_t, args, sync)
        # the previous implementation: pyiqa's calculate_niqe on our cropped input
        t_before, ob = timed(lambda b: [float(M._niqe_tensor_pyiqa(M._niqe_input(s, 4, "SR image"), mu, cov)[0]) for s in b],
                             srs, args, sync)
    row = Row("NIQE", "cpu", t_ours, t_ref, max_abs(o, r), "abs", "Y-BT.601, crop 4; vectorised blocks, one process")
    before = Row("NIQE before", "cpu", t_before, t_ref, max_abs(ob, r), "abs", "previous: pyiqa's calculate_niqe, one process")
    if bsr is not None:
        bsr_srs = [b for b, _ in bgr]
        row.basicsr_s, rb = timed(
            lambda b: [float(bsr.calculate_niqe(s, 4, input_order="HWC", convert_to="y")) for s in b], bsr_srs, args, sync)
        row.basicsr_diff = max_abs(o, rb)
        before.basicsr_s, before.basicsr_diff = row.basicsr_s, max_abs(ob, rb)
    row.before_s, row.before_diff = t_before, max_abs(o, ob)
    rows.append(progress(row))
    rows.append(progress(before))
    if args.threads > 1:
        t, _ = timed(lambda b: niqe_m.batch([(s, None, False) for s in b], jobs=args.threads), srs, args, sync)
        rows.append(progress(Row("NIQE batch", "cpu", t, None, note=f"joblib, {args.threads} processes")))

    rows.append(progress(lpips_row("cpu", pairs, args, tmp, sync)))
    return rows


def lpips_row(device: str, pairs: list, args: argparse.Namespace, tmp: Path, sync: Callable[[], None]) -> Row:
    from bench import metrics as M

    m = M.create_metric("lpips", device=device)
    note = "AlexNet v0.1, verified weights"
    if not m.available:
        folder = tmp / "lpips-standin"
        folder.mkdir(exist_ok=True)
        m = M.create_metric("lpips", weights_dir=standin_lpips_dir(folder), device=device, verify_sha256=False)
        note = "stand-in random weights: timing only (real weights absent)"
    batch = [(s, h, False) for s, h in pairs]
    t, _ = timed(lambda b: m.batch(b, jobs=1), batch, args, sync)
    return Row("LPIPS", device, t, None, note=note)


def cuda_rows(hrs: list[np.ndarray], srs: list[np.ndarray], args: argparse.Namespace, tmp: Path) -> list[Row]:
    import pyiqa
    from pyiqa.matlab_utils import imresize as pyiqa_imresize

    from bench import metrics as M
    from bench.degrade.resize import imresize_torch

    dev = "cuda"
    sync = torch.cuda.synchronize
    rows: list[Row] = []
    hr_g = [to_tensor(h, torch.float32, dev) for h in hrs]
    lr_g = [imresize_torch(x, 0.25) for x in hr_g]
    for task, xs, s in (("resize x4 down", hr_g, 0.25), ("resize x4 up", lr_g, 4)):
        t_ours, o = timed(lambda b: [imresize_torch(x, s) for x in b], xs, args, sync)
        t_ref, r = timed(lambda b: [pyiqa_imresize(x, scale=s) for x in b], xs, args, sync)
        diff = max_abs([x.cpu().numpy() * 255 for x in o], [y.cpu().numpy() * 255 for y in r])
        rows.append(progress(Row(task, dev, t_ours, t_ref, diff, "grey levels", "float32 tensors on the GPU, one image per call")))

    # pyiqa gets the whole set as one batch already on the GPU; ours starts from uint8 arrays.
    sr_b = torch.cat([to_tensor(s, torch.float32, dev) for s in srs])
    hr_b = torch.cat(hr_g)
    batch = [(s, h, False) for s, h in zip(srs, hrs)]
    one = [0]
    for task, name in (("PSNR-Y", "psnr"), ("SSIM-Y", "ssim")):
        m = M.create_metric(name, scale=4, device=dev)
        ref = pyiqa.create_metric(name, test_y_channel=True, color_space="ycbcr", crop_border=4, device=dev)
        t_ours, o = timed(lambda b: m.batch(b, jobs=1), batch, args, sync)
        t_ref, r = timed(lambda b: ref(sr_b, hr_b).flatten().tolist(), one, args, sync)
        rows.append(progress(Row(task, dev, t_ours, t_ref / len(srs), max_abs(o, r), "abs", "batched; ours from uint8 arrays")))
    m = M.create_metric("niqe", scale=4, device=dev)
    ref_n = pyiqa_niqe(tmp, dev)
    t_ours, o = timed(lambda b: m.batch([(s, None, False) for s in b], jobs=1), srs, args, sync)
    with torch.inference_mode():
        t_ref, r = timed(lambda b: ref_n(sr_b).flatten().tolist(), one, args, sync)
    rows.append(progress(Row("NIQE", dev, t_ours, t_ref / len(srs), max_abs(o, r), "abs", "batched torch path vs pyiqa's module")))
    rows.append(progress(niqe_throughput_row(dev, args.niqe_images, args)))
    rows.append(progress(lpips_row(dev, list(zip(srs, hrs)), args, tmp, sync)))
    return rows


def niqe_throughput_row(device: str, n: int, args: argparse.Namespace) -> Row:
    """Images per second of NIQE's batched path on ``n`` 1024x768 RGB images (uint8 arrays
    in, values out, uploads included): ``--niqe-throughput --device cuda`` runs only this."""
    from bench import metrics as M

    imgs = bench_images(n)
    m = M.create_metric("niqe", scale=4, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    batch = [(x, None, False) for x in imgs]
    t, vals = timed(lambda b: m.batch(b, jobs=1), batch, args, sync)
    finite = all(np.isfinite(vals))
    return Row(f"NIQE x{n} batch", device, t, None,
               note=f"{1 / t:.1f} images/s, {'batched torch path' if device != 'cpu' else 'numpy path'}"
               + ("" if finite else "; NON-FINITE VALUES"))


def provenance(args: argparse.Namespace, devices: list[str], n: int, repo: Path, bsr: BasicSR | None = None) -> dict:
    import numpy
    import pyiqa
    import scipy
    import torchvision

    def cmd(*c: str) -> str:
        try:
            return subprocess.run(c, cwd=repo, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {
        "script": "benchmarks/speed_core.py",
        "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": cmd("git", "rev-parse", "HEAD") or None,
        "git_dirty": bool(cmd("git", "status", "--porcelain")),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if "cuda" in devices else None,
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__, "pyiqa": pyiqa.__version__,
                     "numpy": numpy.__version__, "scipy": scipy.__version__},
        "basicsr": ({"path": str(bsr.root), "version": bsr.version, "sha256": bsr.files} if bsr is not None
                    else "not run (pass --basicsr PATH)"),
        "threads": args.threads,
        "repeats": args.repeats,
        "budget_s": args.budget_s,
        "images": n,
        "image_size_hw": [768, 1024],
        "scale": 4,
        "timing": "median over passes of (pass time / images), after a two-image warm-up",
    }


def acceptance(rows: list[Row]) -> dict:
    out = {}
    for name, task, ref, bar, tol in ACCEPT:
        row = next((r for r in rows if r.task == task and r.device == "cpu"), None)
        if row is None:
            continue
        speedup, diff = {"pyiqa": (row.speedup, row.max_diff), "basicsr": (row.speedup_basicsr, row.basicsr_diff),
                         "before": (row.speedup_before, row.before_diff)}[ref]
        if speedup is None:
            continue  # that reference was not run (BasicSR without --basicsr)
        ok = speedup >= bar and (tol is None or (diff is not None and diff <= tol))
        out[name] = {"row": task, "reference": ref, "speedup": speedup, "required_speedup": bar,
                     "max_diff": diff, "tolerance": tol, "pass": ok}
    return out


def render(rows: list[Row]) -> str:
    from tabulate import tabulate

    def ms(x: float | None) -> str:
        return f"{1e3 * x:.1f}" if x else "-"

    def times(x: float | None) -> str:
        return f"{x:.1f}x" if x else "-"

    def diff(x: float | None, unit: str) -> str:
        return f"{x:.1e}" if x is not None else "-"

    table = [
        [r.task, r.device, ms(r.ours_s), f"{1 / r.ours_s:.2f}" if r.ours_s else "-",
         ms(r.ref_s), times(r.speedup), diff(r.max_diff, r.diff_unit),
         ms(r.basicsr_s), times(r.speedup_basicsr), diff(r.basicsr_diff, r.diff_unit),
         ms(r.before_s), times(r.speedup_before), diff(r.before_diff, r.diff_unit),
         r.diff_unit, r.note]
        for r in rows
    ]
    headers = ["task", "device", "ours ms/img", "ours img/s", "pyiqa ms/img", "x pyiqa", "|diff| pyiqa",
               "BasicSR ms/img", "x BasicSR", "|diff| BasicSR", "before ms/img", "x before", "|diff| before",
               "diff unit", "note"]
    return tabulate(table, headers=headers, disable_numparse=True)


def run(args: argparse.Namespace, repo: Path) -> int:
    from bench.adapter import BenchError

    devices = ["cpu"] if args.device != "cuda" else []
    if args.device in ("all", "cuda"):
        if torch.cuda.is_available():
            devices.append("cuda")
        elif args.device == "cuda":
            print("--device cuda: CUDA is not available on this machine; use --device cpu", file=sys.stderr)
            return 2
    if args.niqe_throughput:
        dev = "cuda" if "cuda" in devices else "cpu"
        row = niqe_throughput_row(dev, args.niqe_images, args)
        print(render([row]))
        return 0
    bsr = None
    if args.basicsr is not None:
        try:
            bsr = load_basicsr(args.basicsr)
        except (ImportError, OSError) as exc:
            print(f"error: BasicSR from {args.basicsr}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
    else:
        print(BASICSR_HINT, file=sys.stderr)
    hrs = bench_images(args.images)
    from bench.degrade.resize import imresize

    srs = [np.clip(np.round(imresize(imresize(h / 255.0, 0.25), 4) * 255.0), 0, 255).astype(np.uint8) for h in hrs]
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if "cpu" in devices:
                rows += cpu_rows(hrs, srs, args, Path(tmp), bsr)
            if "cuda" in devices:
                rows += cuda_rows(hrs, srs, args, Path(tmp))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0) if "cuda" in devices else None
    print(f"{len(hrs)} images 1024x768 RGB, x4, {args.threads} CPU threads, {args.repeats} passes" + (f", GPU {gpu}" if gpu else ""))
    print(render(rows))
    if bsr is None:
        print(BASICSR_HINT)
    acc = acceptance(rows)
    for task, a in acc.items():
        verdict = "PASS" if a["pass"] else "FAIL"
        tol = f", max diff {a['max_diff']:.2e} (need <= {a['tolerance']:g})" if a["tolerance"] is not None else ""
        print(f"acceptance {task}: {a['speedup']:.1f}x (need >= {a['required_speedup']:g}x){tol}: {verdict}")
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") if gpu else "cpu"
    out = args.out or repo / "results" / "reference" / f"speed_core_{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"provenance": provenance(args, devices, len(hrs), repo, bsr), "rows": [r.to_dict() for r in rows],
              "acceptance": acc}
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if all(a["pass"] for a in acc.values()) else 1
