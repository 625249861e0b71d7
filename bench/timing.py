"""Runtime of each method's network: latency, throughput, FLOPs, parameters, memory,
and (on CUDA) the top kernels by device time.

On CUDA: CUDA events around the forward, warm-up, synchronisation, median and IQR
over at least 30 repeats, LR inputs 1x3x64x64 and 1x3x256x256, fp32 by default and
``--amp bf16`` optional; per-kernel breakdown from ``torch.profiler``. On CPU:
``torch.utils.benchmark``, labelled CPU; the default run times only the 64x64 input
with a few repeats (cached per method fingerprint in the store).
"""
from __future__ import annotations

import contextlib
import statistics
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from .adapter import Method, count_parameters
from .store import Store

SIZES_FULL = (64, 256)
SIZES_QUICK = (64,)


def forward_fn(method: Method) -> Callable[[torch.Tensor], torch.Tensor]:
    """The network's own forward when it takes one tensor, else the whole ``upscale``."""
    net = method.network()
    if net is None:
        return method.upscale
    probe = torch.rand(1, 3, 8, 8, device=method.device)
    try:
        with torch.no_grad():
            net.eval()
            net(probe)
        return net
    except Exception:  # networks needing extra inputs (representations) are timed via upscale
        return method.upscale


def _autocast(device: str, amp: str | None):
    if amp == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def flops(fn, x: torch.Tensor) -> float | None:
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            fn(x)
        return fc.get_total_flops() / 1e9
    except Exception:
        return None


def _quantiles(ms: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    return statistics.median(ms), q[2] - q[0]


def time_cuda(fn, x: torch.Tensor, repeats: int = 30, warmup: int = 10, amp: str | None = None):
    with torch.no_grad(), _autocast("cuda", amp):
        for _ in range(warmup):
            fn(x)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        ms = []
        for _ in range(repeats):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn(x)
            b.record()
            torch.cuda.synchronize()
            ms.append(a.elapsed_time(b))
        peak = torch.cuda.max_memory_allocated() / 2**20
    return ms, peak


def kernel_profile(fn, x: torch.Tensor, amp: str | None = None, top: int = 10) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), _autocast("cuda", amp), profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            fn(x)
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if getattr(e, "device_time_total", 0) > 0]
    total = sum(e.device_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.device_time_total, reverse=True)
    return [{"name": e.key, "calls": int(e.count), "total_ms": e.device_time_total / 1000.0,
             "share": e.device_time_total / total} for e in events[:top]]


def time_cpu(fn, x: torch.Tensor, repeats: int):
    from torch.utils import benchmark

    with torch.no_grad():
        fn(x)  # warm-up
        t = benchmark.Timer(stmt="fn(x)", globals={"fn": fn, "x": x}, num_threads=torch.get_num_threads(),
                            label="CPU")
        ms = [t.timeit(1).mean * 1000 for _ in range(repeats)]
    return ms


def time_model(store: Store, method: Method, variant: str, device: str, run_id: str, *, full: bool = False,
               amp: str | None = None, repeats: int | None = None, force: bool = False) -> list[dict]:
    """Measure and store one method's timing rows; skipped when the store has them (unless ``force``)."""
    precision = amp or "fp32"
    sizes = SIZES_FULL if (full or device == "cuda") else SIZES_QUICK
    fn = forward_fn(method)
    net = method.network()
    params = count_parameters(net) if net is not None else 0
    rows = []
    for side in sizes:
        desc = f"1x3x{side}x{side}"
        if not force and store.has_timing(method.info.name, variant, device, desc, precision):
            continue
        x = torch.rand(1, 3, side, side, device=method.device)
        kernels: list[dict] = []
        if device == "cuda":
            ms, peak = time_cuda(fn, x, repeats=max(30, repeats or 30), amp=amp)
            kernels = kernel_profile(fn, x, amp=amp)
        else:
            ms, peak = time_cpu(fn, x, repeats or (20 if full else 3)), None
        med, iqr = _quantiles(ms)
        out_pix = (side * method.scale) ** 2
        row = {"variant": variant, "method": method.info.name, "device": device if device == "cuda" else "cpu",
               "input": desc, "precision": precision, "ms_median": med, "ms_iqr": iqr,
               "mpix_s": out_pix / 1e6 / (med / 1000), "gflops": flops(fn, x), "params": params,
               "peak_mib": peak, "repeats": len(ms), "run_id": run_id,
               "extra": {"device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                         "threads": torch.get_num_threads(), "timed": getattr(fn, "__name__", type(fn).__name__)}}
        store.put_timing(row, kernels)
        rows.append(row)
    return rows
