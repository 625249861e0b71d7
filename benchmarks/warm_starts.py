#!/usr/bin/env python3
"""Each warm-started method's fit next to its own shared warm start (the network alone, as
trained on bicubic pairs), on the method's home cells of a finished run: its target domain
for per-domain methods, its ``home_suites`` for per-scale ones. Perceptual methods trade
PSNR for realism from that start on, so their PSNR is read against their own start.

Reads the fits and warm starts of a finished run from its ``--out`` (nothing is trained
when they are cached) and prints a Markdown table; ``--json`` writes the numbers.

    python run_bench.py --methods all
    python benchmarks/warm_starts.py --out results --json results/warm_starts.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("UNPAIRED_SR_BENCH_NO_PROGRESS", "1")

from bench.adapter import objective_of, resolve_variant  # noqa: E402
from bench.metrics import create_metric  # noqa: E402
from bench.runner import Runner, RunSpec, score_cell  # noqa: E402


class WarmNet:
    """The warm start's network on its own, with the ``upscale`` the runner scores."""

    def __init__(self, spec, path: Path, name: str, scale: int):
        import torch

        self.net = spec.build()
        self.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.net.eval()
        self.info = SimpleNamespace(name=f"{name} warm start")
        self.scale = scale

    def upscale(self, x):
        import torch

        with torch.no_grad():
            return self.net(x).clamp(0, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results", help="the run's output folder [%(default)s]")
    ap.add_argument("--methods", default="all", help="comma list, or all [%(default)s]")
    ap.add_argument("--objective", default="any", choices=("perceptual", "psnr", "any"),
                    help="which warm-started methods to show [%(default)s]")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--metrics", default="psnr,niqe")
    ap.add_argument("--json", default=None, help="also write the rows here")
    a = ap.parse_args()
    spec = RunSpec(methods=tuple(a.methods.split(",")), profile=a.profile, out=a.out, timing=False,
                   metrics=tuple(a.metrics.split(",")))
    r = Runner(spec, log=lambda s: None)
    _, datasets, cells = r.plan_run()
    by_name = {ds.name: ds for ds in datasets}
    metrics = {m: create_metric(m, protocol=spec.protocol, scale=4, device="cpu") for m in spec.metrics}
    rows = []
    for c in cells:
        cls = resolve_variant(c.method)[0]
        ds = by_name[c.dataset]
        if not cls.info.learned or not ds.has_hr or (a.objective != "any" and objective_of(c.method) != a.objective):
            continue
        variant, meta = r.variant_for(c.method, c.scale, c.domain, r.test_ids)
        if not meta.get("warm"):
            continue
        home = cls.info.home_suites
        if c.suite != (c.domain or c.suite) or (not c.domain and not c.suite.startswith(tuple(home) or ("\0",))):
            continue  # not one of the method's home cells
        warm = r.warm_file(meta["warm"], meta["warm_key"], r.warm_data(meta["data"], c.scale), c.scale)
        start = WarmNet(meta["warm"], warm.path, c.method, c.scale)
        fitted = r.model_for(c.method, c.scale, c.domain, r.test_ids).method
        items = ds.items_at(c.scale)
        refs = [r.hr_for(ds, item, c.scale) for item in items]
        row = {"method": c.method, "objective": objective_of(c.method), "dataset": c.dataset, "suite": c.suite,
               "warm_start": warm.about["label"], "warm_key": warm.key[:12], "fit": variant}
        for tag, method in (("start", start), ("fit", fitted)):
            srs = [(item.id, r.upscale(method, r.lr_for(ds, item, c.suite, c.scale))) for item in items]
            values = score_cell(srs, refs, list(spec.metrics), metrics, 1)
            for m in spec.metrics:
                row[f"{m}_{tag}"] = float(np.mean([values[(item.id, m)] for item in items]))
        rows.append(row)
    head = ["method", "objective", "dataset", "suite", "warm start"] + [
        f"{m.upper()} {t}" for m in spec.metrics for t in ("start", "fit", "Δ")]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        vals = []
        for m in spec.metrics:
            s, f = row[f"{m}_start"], row[f"{m}_fit"]
            vals += [f"{s:.2f}", f"{f:.2f}", f"{f - s:+.2f}"]
        print("| " + " | ".join([row["method"], row["objective"], row["dataset"], row["suite"],
                                 f"{row['warm_start']} ({row['warm_key']})", *vals]) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
