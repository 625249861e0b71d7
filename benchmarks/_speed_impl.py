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

# The issue's acceptance bars (CPU, same run): speed-up over pyiqa and largest value difference.
ACCEPT = {"resize x4 down": (5.0, 1e-3), "SSIM-Y": (10.0, 1e-5)}


# ---------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------
def progress(row: "Row") -> "Row":
    ours = f"{1e3 * row.ours_s:.1f} ms" if row.ours_s else "-"
    ref = f"{1e3 * row.ref_s:.1f} ms" if row.ref_s else "-"
    print(f"  {row.device:4s} {row.task}: ours {ours}, pyiqa {ref}", file=sys.stderr, flush=True)
    return row


@dataclass
class Row:
    task: str
    device: str
    ours_s: float | None  # seconds per image
    ref_s: float | None  # pyiqa, seconds per image
    max_diff: float | None = None
    diff_unit: str = ""
    note: str = ""

    @property
    def speedup(self) -> float | None:
        return self.ref_s / self.ours_s if self.ours_s and self.ref_s else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(
            ours_img_per_s=1 / self.ours_s if self.ours_s else None,
            ref_img_per_s=1 / self.ref_s if self.ref_s else None,
            speedup=self.speedup,
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
def cpu_rows(hrs: list[np.ndarray], srs: list[np.ndarray], args: argparse.Namespace, tmp: Path) -> list[Row]:
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
        rows.append(progress(Row(task, "cpu", t_ours, t_ref, diff, "grey levels", "MATLAB bicubic; pyiqa on float32")))

    for name in args.suites.split(";"):
        suite = get_suite(name.strip())
        hr32 = [h.astype(np.float32) for h in hr_f]
        ids = list(range(len(hr32)))
        t, _ = timed(lambda b: [synthesize(suite, hr32[i], 4, f"img{i:03d}", 0) for i in b], ids, args, sync)
        rows.append(progress(Row(f"synthesize {suite.name}", "cpu", t, None, note="x4, HR -> 8-bit LR")))

    ref_p = pyiqa.create_metric("psnr", test_y_channel=True, color_space="ycbcr", crop_border=4, device="cpu")
    ref_s = pyiqa.create_metric("ssim", test_y_channel=True, color_space="ycbcr", crop_border=4, device="cpu")
    for task, fn, ref in (("PSNR-Y", M.psnr, ref_p), ("SSIM-Y", M.ssim, ref_s)):
        t_ours, o = timed(lambda b: [fn(s, h, crop=4, channel="y") for s, h in b], pairs, args, sync)
        idx = list(range(len(pairs)))
        t_ref, r = timed(lambda b: [float(ref(sr_t[i], hr_t[i])) for i in b], idx, args, sync)
        rows.append(progress(Row(task, "cpu", t_ours, t_ref, max_abs(o, r), "abs", "paper-y, crop 4; one process")))
    if args.threads > 1:
        m = M.create_metric("ssim", scale=4)
        batch = [(s, h, False) for s, h in pairs]
        t, _ = timed(lambda b: m.batch(b, jobs=args.threads), batch, args, sync)
        rows.append(progress(Row("SSIM-Y batch", "cpu", t, None, note=f"joblib, {args.threads} processes")))

    niqe_m = M.create_metric("niqe", scale=4)
    ref_n = pyiqa_niqe(tmp, "cpu")
    t_ours, o = timed(lambda b: niqe_m.batch([(s, None, False) for s in b], jobs=1), srs, args, sync)
    with torch.inference_mode():
        t_ref, r = timed(lambda b: [float(ref_n(x)) for x in b], sr_t, args, sync)
    rows.append(progress(Row("NIQE", "cpu", t_ours, t_ref, max_abs(o, r), "abs", "Y-BT.601, crop 4; pyiqa's niqe underneath")))
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
    rows.append(progress(Row("NIQE", dev, t_ours, t_ref / len(srs), max_abs(o, r), "abs", "batched; pyiqa's niqe underneath")))
    rows.append(progress(lpips_row(dev, list(zip(srs, hrs)), args, tmp, sync)))
    return rows


def provenance(args: argparse.Namespace, devices: list[str], n: int, repo: Path) -> dict:
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
    for task, (bar, tol) in ACCEPT.items():
        row = next((r for r in rows if r.task == task and r.device == "cpu"), None)
        if row is None:
            continue
        ok = (row.speedup or 0) >= bar and row.max_diff is not None and row.max_diff <= tol
        out[task] = {"speedup": row.speedup, "required_speedup": bar, "max_diff": row.max_diff, "tolerance": tol, "pass": ok}
    return out


def render(rows: list[Row]) -> str:
    from tabulate import tabulate

    def ms(x: float | None) -> str:
        return f"{1e3 * x:.1f}" if x else "-"

    def ips(x: float | None) -> str:
        return f"{1 / x:.2f}" if x else "-"

    table = [
        [r.task, r.device, ms(r.ours_s), ips(r.ours_s), ms(r.ref_s), ips(r.ref_s),
         f"{r.speedup:.1f}x" if r.speedup else "-",
         f"{r.max_diff:.2e} {r.diff_unit}" if r.max_diff is not None else "-", r.note]
        for r in rows
    ]
    headers = ["task", "device", "ours ms/img", "ours img/s", "pyiqa ms/img", "pyiqa img/s", "speed-up", "max |diff|", "note"]
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
    hrs = bench_images(args.images)
    from bench.degrade.resize import imresize

    srs = [np.clip(np.round(imresize(imresize(h / 255.0, 0.25), 4) * 255.0), 0, 255).astype(np.uint8) for h in hrs]
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if "cpu" in devices:
                rows += cpu_rows(hrs, srs, args, Path(tmp))
            if "cuda" in devices:
                rows += cuda_rows(hrs, srs, args, Path(tmp))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0) if "cuda" in devices else None
    print(f"{len(hrs)} images 1024x768 RGB, x4, {args.threads} CPU threads, {args.repeats} passes" + (f", GPU {gpu}" if gpu else ""))
    print(render(rows))
    acc = acceptance(rows)
    for task, a in acc.items():
        verdict = "PASS" if a["pass"] else "FAIL"
        print(f"acceptance {task}: {a['speedup']:.1f}x (need >= {a['required_speedup']:g}x), "
              f"max diff {a['max_diff']:.2e} (need <= {a['tolerance']:g}): {verdict}")
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") if gpu else "cpu"
    out = args.out or repo / "results" / "reference" / f"speed_core_{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"provenance": provenance(args, devices, len(hrs), repo), "rows": [r.to_dict() for r in rows], "acceptance": acc}
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if all(a["pass"] for a in acc.values()) else 1
