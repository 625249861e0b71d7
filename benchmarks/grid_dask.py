#!/usr/bin/env python
"""Cells per second of a bicubic grid locally and on a Dask LocalCluster, and the scheduler's cost per task.

Not a test. The grid: ``--datasets`` generated datasets of ``--images`` B100-sized
(481x321) pictures each, times ``--suites`` noise suites (``noise:sigma=1..N``), x4,
PSNR and SSIM: 10 x 20 = 200 cells by default. Each mode computes the whole grid from
cold caches in a fresh --out; the two summary.csv files must be identical. The per-task
overhead is measured on its own as the round trip of as many no-op tasks through the
same cluster (submitted at once, collected with ``as_completed``, as the driver does).

    python benchmarks/grid_dask.py                     # local, then --cluster local:2
    python benchmarks/grid_dask.py --workers 4 --out results/reference/grid_dask_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", type=int, default=10)
    p.add_argument("--images", type=int, default=2, help="481x321 images per dataset")
    p.add_argument("--suites", type=int, default=20)
    p.add_argument("--workers", type=int, default=2, help="worker processes of the LocalCluster")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per cluster task [CPUs / workers: no oversubscription]; the local run keeps "
                        "torch's default")
    p.add_argument("--out", type=Path, default=REPO / "results" / "reference" / "grid_dask_cpu.json")
    return p.parse_args(argv)


def make_data(root: Path, n_sets: int, n_images: int) -> str:
    from PIL import Image

    rng = np.random.default_rng(0)
    parts = []
    for d in range(n_sets):
        folder = root / f"b{d}"
        folder.mkdir(parents=True)
        for i in range(n_images):
            # smooth colour fields plus fine texture: what a photo's PSNR/SSIM see, at B100's size
            base = rng.random((321 // 16 + 1, 481 // 16 + 1, 3))
            img = np.asarray(Image.fromarray((base * 255).astype(np.uint8)).resize((481, 321), Image.BICUBIC),
                             dtype=np.float32)
            img += rng.normal(0, 6, img.shape)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"im{i}.png")
        parts.append(f"b{d}={folder}")
    return ",".join(parts)


def timed_run(spec, cluster=None) -> dict:
    from bench.runner import Runner

    stamps = []

    def log(line):
        stamps.append((time.perf_counter(), line))

    t0 = time.perf_counter()
    if cluster:
        from bench.distributed import ClusterRunner

        runner = ClusterRunner(spec, cluster, log=log)
    else:
        runner = Runner(spec, log=log)
    code = runner.run()
    wall = time.perf_counter() - t0
    from bench.tables import write_all

    write_all(runner.store, spec.out, runner.planned)
    n = len(runner.planned)
    # the compute phase: from the plan (local) or from the cluster being up (its start-up is wall_s - compute_s)
    marker = "started a local Dask" if cluster else " to compute ("
    start = next(t for t, s in stamps if marker in s)
    end = next(t for t, s in stamps if s.startswith("computed "))
    cell_s = sum(c["wall_s"] for c in runner.store.cells())
    runner.store.close()
    return {"exit": code, "cells": n, "wall_s": round(wall, 3), "compute_s": round(end - start, 3),
            "cells_per_s": round(n / (end - start), 2), "sum_cell_wall_s": round(cell_s, 3),
            "log": [s for _, s in stamps]}


def noop_overhead(address_or_cluster, n: int) -> dict:
    from distributed import Client, as_completed

    from bench.distributed import noop_task

    with Client(address_or_cluster) as client:
        import importlib

        client.run(importlib.import_module, "bench.distributed")  # every worker imports torch before the clock
        client.submit(noop_task, -1, pure=False).result()
        t0 = time.perf_counter()
        futs = [client.submit(noop_task, i, key=f"noop-{i}") for i in range(n)]
        for f in as_completed(futs):
            f.result()
        dt = time.perf_counter() - t0
    return {"tasks": n, "wall_s": round(dt, 4), "ms_per_task": round(1000 * dt / n, 3)}


def main(argv=None) -> int:
    a = parse_args(argv)
    os.environ["UNPAIRED_SR_BENCH_NO_PROGRESS"] = "1"
    import dask
    import distributed
    import torch

    from bench.distributed import ClusterSpec
    from bench.runner import RunSpec, provenance

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        datasets = make_data(root / "data", a.datasets, a.images)
        suites = ";".join(f"noise:sigma={s}" for s in range(1, a.suites + 1))

        def spec(out):
            return RunSpec(methods=("bicubic",), datasets=datasets, suites=suites, scales=(4,),
                           metrics=("psnr", "ssim"), profile="smoke", device="cpu", out=str(root / out),
                           timing=False)

        local = timed_run(spec("local"))
        cl = ClusterSpec(address=f"local:{a.workers}", cache=str(root / "dist" / "cache"),
                         threads=a.threads or max(1, (os.cpu_count() or 1) // a.workers))
        dist = timed_run(spec("dist"), cl)
        same = (root / "local" / "summary.csv").read_text() == (root / "dist" / "summary.csv").read_text()
        with dask.config.set({"distributed.scheduler.allowed-failures": 2}):
            lc = distributed.LocalCluster(n_workers=a.workers, threads_per_worker=1, dashboard_address=None)
        try:
            noop = noop_overhead(lc, local["cells"])
        finally:
            lc.close()
    n_tasks = dist["cells"] + a.datasets * a.suites  # cells + LR tasks
    result = {
        "grid": {"method": "bicubic", "datasets": a.datasets, "images_per_dataset": a.images, "image": "481x321",
                 "suites": a.suites, "scale": 4, "metrics": ["psnr", "ssim"], "cells": local["cells"],
                 "tasks_on_cluster": n_tasks},
        "local": local,
        f"local:{a.workers}": {**dist, "threads_per_task": cl.threads},
        "summary_identical": same,
        "noop_round_trip": noop,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "distributed": distributed.__version__,
                    **{k: v for k, v in provenance(spec("x"), "cpu").items() if k in ("git_commit", "versions")}},
    }
    for mode in ("local", f"local:{a.workers}"):
        result[mode].pop("log")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("local", f"local:{a.workers}", "summary_identical", "noop_round_trip")},
                     indent=1))
    print(f"wrote {a.out}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
