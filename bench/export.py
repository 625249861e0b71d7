"""``run_bench.py degrade``: write LR test sets as PNGs plus a manifest, so other
codebases can evaluate on exactly the benchmark's inputs."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from . import __version__


def export_lr(suites: str, scales: Sequence[int], datasets: str | None, data_root: str | None, seed: int,
              out: Path) -> int:
    from .data import load_hr, resolve_datasets, write_png
    from .degrade import parse_suites, synthesize

    out.mkdir(parents=True, exist_ok=True)
    sets = [ds for ds in resolve_datasets(datasets, data_root, scales) if ds.has_hr]
    manifest = {"bench_version": __version__, "seed": seed, "sets": []}
    n = 0
    jobs = [(ds, scale, suite) for scale in scales for suite in parse_suites(suites, scale) for ds in sets]
    for ds, scale, suite in tqdm(jobs, desc="export", disable=os.environ.get("UNPAIRED_SR_BENCH_NO_PROGRESS") == "1"):
        folder = out / ds.name / f"x{scale}" / suite.name.replace(":", "_").replace(",", "_").replace("=", "")
        folder.mkdir(parents=True, exist_ok=True)
        entries = []
        for item in ds.items:
            hr = load_hr(item, scale)
            lr, meta = synthesize(suite, hr.pixels, scale, item.id, seed)
            name = f"{item.id.replace('/', '_')}.png"
            write_png(folder / name, lr)
            entries.append({"image": item.id, "file": name, "hr_shape": list(hr.pixels.shape[:2]), **meta})
            n += 1
        manifest["sets"].append({"dataset": ds.name, "scale": scale, "suite": suite.name,
                                 "folder": str(folder.relative_to(out)), "images": entries})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    return n
