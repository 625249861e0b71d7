#!/usr/bin/env python3
"""The CUDA checks, as one script for a lent GPU: per-method latency (fp32 and bf16),
top kernels, FLOPs, parameters and peak memory at the paper profile, plus one timed
training step per learned method. Writes runtime tables and JSON to --out.

    python benchmarks/gpu_checks.py --out results/reference/gpu

Each method module is imported on its own, so one broken module does not stop the
others; failures are listed in the output.
"""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.adapter import REGISTRY, Budget  # noqa: E402
from bench.store import Store  # noqa: E402
from bench.tables import runtime_markdown  # noqa: E402
from bench.timing import time_model  # noqa: E402


def import_methods() -> dict[str, str]:
    import methods

    errors = {}
    for mod in pkgutil.iter_modules(methods.__path__):
        if mod.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"methods.{mod.name}")
        except Exception as exc:
            errors[mod.name] = f"{type(exc).__name__}: {exc}"
    REGISTRY._discovered = True  # the modules above did the registering
    return errors


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--train-iters", type=int, default=3)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    assert torch.cuda.is_available(), "no CUDA device"
    gpu = torch.cuda.get_device_name()
    store = Store(out / "gpu.sqlite")
    log = {"gpu": gpu, "torch": torch.__version__, "import_errors": import_methods(), "timing_errors": {},
           "train_step": {}}
    run_id = time.strftime("gpu-%Y%m%d-%H%M%S")
    store.begin_run(run_id, {"command": "benchmarks/gpu_checks.py"}, "-", {"gpu": gpu, "torch": torch.__version__})
    for cls in REGISTRY.all():
        name = cls.info.name
        if a.scale not in cls.info.scales:
            continue
        try:
            m = cls(a.scale, profile="paper", device="cuda")
            variant = "paper:arch" if cls.info.learned else "-"
            for amp in (None, "bf16"):  # full=True: LR 64x64 and 256x256, >= 30 repeats each
                for r in time_model(store, m, variant, "cuda", run_id, full=True, amp=amp, force=True):
                    print(f"{name:14s} {r['input']:12s} {r['precision']:5s} {r['ms_median']:8.3f} ms "
                          f"{r['mpix_s']:9.2f} MPix/s peak {r['peak_mib']:.0f} MiB", flush=True)
            del m
            torch.cuda.empty_cache()
        except Exception as exc:
            log["timing_errors"][name] = traceback.format_exception_only(type(exc), exc)[-1].strip()
            print(f"{name}: timing failed: {log['timing_errors'][name]}", flush=True)
        if not cls.info.learned:
            continue
        try:  # one short fit at the quick profile on CUDA: the training path runs on the GPU
            from bench.conformance import smoke_training_data

            m = cls(a.scale, profile="quick", device="cuda")
            b = m.default_budget()
            data = smoke_training_data(cls, a.scale)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            rep = m.fit(data, Budget(a.train_iters, b.batch_size, b.patch_size, lr=b.lr))
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            last = rep.history[-1] if rep.history else {}
            log["train_step"][name] = {"iterations": rep.iterations, "s_per_it": dt / max(1, rep.iterations),
                                       "batch": b.batch_size, "lr_patch": b.patch_size,
                                       "peak_mib": torch.cuda.max_memory_allocated() / 2**20,
                                       "last_losses": last}
            print(f"{name:14s} train {dt / max(1, rep.iterations):.3f} s/it (quick arch, batch {b.batch_size})", flush=True)
            del m
            torch.cuda.empty_cache()
        except Exception as exc:
            log["train_step"][name] = {"error": traceback.format_exception_only(type(exc), exc)[-1].strip()}
            print(f"{name}: train step failed: {log['train_step'][name]['error']}", flush=True)
    store.end_run(run_id, "done")
    md = runtime_markdown(store).replace("# Runtime", f"# Runtime on {gpu} (torch {torch.__version__})", 1)
    rows = [f"| {k} | " + (f"{v['s_per_it']:.3f} | {v['batch']} | {v['lr_patch']} | {v['peak_mib']:.0f} |"
                           if "error" not in v else f"failed: {v['error']} | | | |")
            for k, v in log["train_step"].items()]
    md += ("\n## Training step on the GPU (quick architecture, smoke data)\n\n| method | s/it | batch | LR patch | peak MiB |\n"
           "|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    (out / "runtime_cuda.md").write_text(md)
    (out / "gpu_checks.json").write_text(json.dumps(log, indent=1, default=str))
    print(json.dumps({k: log[k] for k in ("import_errors", "timing_errors")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
