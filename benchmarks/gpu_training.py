#!/usr/bin/env python3
"""Training at paper size on a GPU, as one script for a lent machine (issue "Paper-scale
training that survives"): for every learned method, training it/s and peak memory in fp32
and bf16 autocast at the recipe's batch and patch (``--warmup`` + ``--steps`` timed steps
through the real fit loop), the projected wall time of each full recipe (iterations / it/s),
a resume after SIGKILL on CUDA, and ``torchrun --nproc_per_node 1`` with NCCL.

    python benchmarks/gpu_training.py --out "$OUT"                       # on the GPU (~5 min)
    python benchmarks/gpu_training.py --device cpu --profile smoke --warmup 1 --steps 2 --out /tmp/g

Offline machines rarely carry ImageNet VGG19: without ``vgg19-dcbb9e9d.pth`` in
``--weights-dir`` the perceptual losses run a randomly initialised VGG19 of the same shape,
for SPEED ONLY, and every row says so. Training data are random images (speed does not
depend on content). Stages run in the recipe's proportions inside the timed steps, so
it/s is the recipe's average.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("UNPAIRED_SR_BENCH_NO_PROGRESS", "1")

from bench.adapter import REGISTRY, MethodContext, TrainingData, create_method  # noqa: E402
from bench.train import VGG19_FILE, LoopOptions, TrainingProbe, loop_options, probing  # noqa: E402


def weights_dir(given: str | None) -> tuple[str, str]:
    """(folder, label) holding a VGG19 file: the real one if given, else random weights."""
    if given and (Path(given) / VGG19_FILE).is_file():
        return given, "ImageNet VGG19"
    from torchvision.models import vgg19

    folder = tempfile.mkdtemp(prefix="vgg_random_")
    torch.save(vgg19(weights=None).state_dict(), Path(folder) / VGG19_FILE)
    return folder, "random VGG19 (speed only)"


def data_for(cls, scale: int, side: int) -> TrainingData:
    rng = np.random.default_rng(0)
    hr = tuple(rng.random((side, side, 3), dtype=np.float32) for _ in range(8))
    kw = {}
    if cls.info.needs_target_lr:
        kw = dict(target_lr=tuple(rng.random((side // scale, side // scale, 3), dtype=np.float32) for _ in range(8)))
    return TrainingData(scale=scale, source_hr=hr, seed=0, **kw)


def time_fit(name: str, a, vgg: str, amp: str | None) -> dict:
    cls = REGISTRY.get(name)
    ctx = MethodContext(profile=a.profile, device=a.device, weights_dir=vgg, verify_weights=False)
    method = create_method(name, 4, ctx)
    recipe = method.default_budget()
    budget = dataclasses.replace(recipe, iterations=a.warmup + a.steps)
    stamps: list[float] = []

    def stamp(n: int, desc: str) -> None:
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    if a.device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    data = data_for(cls, 4, a.side)
    with loop_options(LoopOptions(amp=amp, log=lambda s: None)), \
            probing(TrainingProbe(range(1, budget.iterations + 1), stamp)):
        method.fit(data, budget)
    its = a.steps / (stamps[-1] - stamps[a.warmup - 1])
    peak = torch.cuda.max_memory_allocated() / 2**20 if a.device.startswith("cuda") else None
    return {"it_s": its, "peak_mib": peak, "batch": recipe.batch_size, "patch": recipe.patch_size,
            "recipe_iterations": recipe.iterations, "projected_h": recipe.iterations / its / 3600}


def fit_cmd(out: Path, *extra: str, env: dict | None = None, torchrun: bool = False) -> subprocess.CompletedProcess:
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"] if torchrun \
        else [sys.executable]
    return subprocess.run([*head, "run_bench.py", "fit", "--methods", "edsr-bicubic", "--out", str(out), *extra],
                          cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300)


def resume_check(a, work: Path) -> dict:
    """SIGKILL a CUDA fit at step 13 (saves every 5), rerun it, compare with an uninterrupted fit."""
    common = ["--profile", "smoke", "--device", a.device.split(":")[0], "--iterations", "20", "--save-every", "5"]
    whole = fit_cmd(work / "whole", *common)
    killed = fit_cmd(work / "killed", *common, env={"UNPAIRED_SR_BENCH_KILL_AT": "fit-step:13"})
    resumed = fit_cmd(work / "killed", *common)
    line = next((ln for ln in resumed.stdout.splitlines() if "resumed from" in ln), "")

    def weights(out: Path) -> dict:
        (folder,) = [f for f in (out / "cache" / "fits").iterdir() if f.is_dir()]
        return torch.load(folder / "model", map_location="cpu", weights_only=True)

    diff = None
    if whole.returncode == 0 and resumed.returncode == 0:
        w0, w1 = weights(work / "whole"), weights(work / "killed")
        diff = max(float((w0[k].float() - w1[k].float()).abs().max()) for k in w0)
    return {"killed_rc": killed.returncode, "resumed_rc": resumed.returncode, "resume_line": line,
            "max_abs_weight_diff_vs_uninterrupted": diff,
            "note": "CUDA kernels are not bit-deterministic by default; on the CPU the resume is bit-exact (tests)",
            "stderr_tail": (resumed.stderr or killed.stderr)[-800:]}


def torchrun_check(a, work: Path) -> dict:
    proc = fit_cmd(work / "torchrun", "--profile", "smoke", "--device", a.device.split(":")[0], torchrun=True)
    return {"rc": proc.returncode, "backend_note": next((ln for ln in proc.stdout.splitlines() if "iterations in" in ln), ""),
            "stderr_tail": proc.stderr[-800:] if proc.returncode else ""}


def markdown(log: dict) -> str:
    lines = [f"# Training at `{log['profile']}` size on {log['device_name']}", "",
             f"{log['warmup']} warm-up + {log['steps']} timed steps per method through the fit loop, random "
             f"{log['side']}x{log['side']} images; perceptual losses: **{log['vgg']}**. Projected = the recipe's "
             "iterations / it/s (one GPU).", "",
             "| method | batch | LR patch | fp32 it/s | fp32 peak MiB | bf16 it/s | bf16 peak MiB | recipe it | "
             "projected fp32 h | projected bf16 h |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in log["methods"].items():
        f, b = row.get("fp32", {}), row.get("bf16", {})
        if "it_s" not in f:
            lines.append(f"| {name} | | | failed: {f.get('error', '')[:80]} | | | | | | |")
            continue
        cell = lambda r, k, fmt: (format(r[k], fmt) if isinstance(r.get(k), (int, float)) else  # noqa: E731
                                  ("failed" if "error" in r else ""))
        lines.append(f"| {name} | {f['batch']} | {f['patch']} | {cell(f, 'it_s', '.2f')} | {cell(f, 'peak_mib', '.0f')} "
                     f"| {cell(b, 'it_s', '.2f')} | {cell(b, 'peak_mib', '.0f')} | {f['recipe_iterations']} | "
                     f"{cell(f, 'projected_h', '.1f')} | {cell(b, 'projected_h', '.1f')} |")
    lines += ["", f"Resume after SIGKILL on {log['device']}: `{json.dumps(log.get('resume'))}`", "",
              f"torchrun --nproc_per_node 1: `{json.dumps(log.get('torchrun'))}`", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--methods", default="all")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--side", type=int, default=512, help="side of the random training images")
    ap.add_argument("--weights-dir", default=os.environ.get("UNPAIRED_SR_WEIGHTS"))
    ap.add_argument("--budget-s", type=float, default=420, help="stop timing methods after this many seconds")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import methods  # noqa: F401  (registers the built-in methods)

    vgg, vgg_label = weights_dir(a.weights_dir)
    cuda = a.device.startswith("cuda")
    log = {"device": a.device, "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or "CPU",
           "torch": torch.__version__, "profile": a.profile, "warmup": a.warmup, "steps": a.steps, "side": a.side,
           "vgg": vgg_label, "tf32": {"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                                      "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32},
           "methods": {}}
    names = [c.info.name for c in REGISTRY.all() if c.info.learned and c.info.name != "oracle"] \
        if a.methods == "all" else a.methods.split(",")
    t0 = time.perf_counter()
    for name in names:
        row = log["methods"].setdefault(name, {})
        for amp in (None, "bf16"):
            if time.perf_counter() - t0 > a.budget_s:
                row[amp or "fp32"] = {"error": f"skipped: past --budget-s {a.budget_s:g}"}
                continue
            try:
                row[amp or "fp32"] = time_fit(name, a, vgg, amp)
            except Exception as exc:  # noqa: BLE001 - one method's failure (OOM...) is a row, not the end
                row[amp or "fp32"] = {"error": traceback.format_exception_only(type(exc), exc)[-1].strip()}
            print(name, amp or "fp32", row[amp or "fp32"], flush=True)
        (out / "gpu_training.json").write_text(json.dumps(log, indent=1))
    work = Path(tempfile.mkdtemp(prefix="gpu_training_"))
    for key, check in (("resume", resume_check), ("torchrun", torchrun_check)):
        try:
            log[key] = check(a, work)
        except Exception as exc:  # noqa: BLE001
            log[key] = {"error": traceback.format_exception_only(type(exc), exc)[-1].strip()}
        print(key, log[key], flush=True)
    log["wall_s"] = time.perf_counter() - t0
    (out / "gpu_training.json").write_text(json.dumps(log, indent=1))
    (out / "gpu_training.md").write_text(markdown(log))
    print((out / "gpu_training.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
