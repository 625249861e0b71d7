#!/usr/bin/env python3
"""Seconds per training iteration of each learned method at a profile, on this machine:
how the quick budgets were sized (each quick fit at most about two minutes on a 2-core CPU).

    python benchmarks/fit_speed.py --profile quick --iterations 10 --out results/reference/fit_speed_cpu.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("UNPAIRED_SR_BENCH_NO_PROGRESS", "1")

from bench.adapter import REGISTRY  # noqa: E402
from bench.runner import Runner, RunSpec  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--methods", default="all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--target", default="mixed")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    runner = Runner(RunSpec(profile=a.profile, out="/tmp/fit_speed_store", target=a.target), log=lambda s: None)
    names = REGISTRY.names() if a.methods == "all" else a.methods.split(",")
    rows = []
    for name in names:
        cls = REGISTRY.get(name)
        if not cls.info.learned or 4 not in cls.info.scales:
            continue
        m = cls(4, profile=a.profile)
        budget = m.default_budget()
        data = runner.training_data(cls, 4, a.target, frozenset())
        short = dataclasses.replace(budget, iterations=a.iterations)
        t0 = time.perf_counter()
        rep = m.fit(data, short)
        dt = time.perf_counter() - t0
        per_it = dt / max(1, rep.iterations)
        row = {"method": name, "s_per_it": per_it, "measured_iterations": rep.iterations,
               "budget_iterations": budget.iterations, "projected_fit_s": per_it * budget.iterations,
               "batch": budget.batch_size, "patch": budget.patch_size}
        rows.append(row)
        print(f"{name:14s} {per_it:6.3f} s/it  budget {budget.iterations:5d} it -> {row['projected_fit_s']:6.1f} s",
              flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"threads": a.threads, "load": os.getloadavg(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
