"""``run_bench.py degrade``: write LR test sets as PNGs plus a manifest, so other
codebases can evaluate on exactly the benchmark's inputs.

``manifest.json`` is self-checking: every HR file is listed once with its sha256 (so a
reader knows it degraded the same pictures), every LR file carries its own sha256, and
every blur kernel is listed once under ``kernels`` with an id that the per-image step
records refer to (a 21x21 kernel repeated per image and suite would dwarf the rest).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from . import __version__
from .adapter import BenchError, sha256_file as _sha256

MANIFEST_VERSION = "2"


def _folder_name(suite_name: str) -> str:
    return suite_name.replace(":", "_").replace(",", "_").replace("=", "")


class _Kernels:
    """Each distinct kernel once; ids are content hashes, so they are stable across exports."""

    def __init__(self) -> None:
        self.table: dict[str, dict[str, Any]] = {}

    def ref(self, values: list) -> str:
        text = json.dumps(values, separators=(",", ":"))
        digest = hashlib.sha256(text.encode()).hexdigest()
        kid = f"k-{digest[:16]}"
        if kid not in self.table:
            self.table[kid] = {"id": kid, "shape": [len(values), len(values[0]) if values else 0],
                               "sha256_json": digest, "values": values}
        return kid


def _dedup_kernels(meta: dict, kernels: _Kernels) -> dict:
    """The per-image record with kernel values replaced by ``kernel_id`` references."""
    out = {k: v for k, v in meta.items() if k != "kernel"}
    steps = []
    for rec in meta.get("steps", []):
        rec = dict(rec)
        if "kernel_values" in rec:
            rec["kernel_id"] = kernels.ref(rec.pop("kernel_values"))
        steps.append(rec)
    out["steps"] = steps
    if "kernel" in meta:  # synthesize's shortcut to the first blur's kernel
        out["kernel_id"] = kernels.ref(meta["kernel"])
    return out


def export_lr(suites: str | None, scales: Sequence[int], datasets: str | None, data_root: str | None, seed: int,
              out: Path, suite_file: str | os.PathLike | None = None) -> int:
    """Write every (dataset, scale, suite) LR set under ``out`` and ``out/manifest.json``;
    returns the number of LR images. ``suite_file``: TOML-declared suites (all of them
    when ``suites`` is empty)."""
    from .data import _content_hash, load_hr, resolve_datasets, write_png
    from .degrade import load_toml_suites, parse_suites, synthesize

    extra = Path(suite_file) if suite_file else None
    if not suites or not suites.strip():
        if extra is None:
            raise BenchError("degrade needs --suites (e.g. 'bicubic;noise') or --suite-file with [suite.NAME] tables")
        suites = ";".join(load_toml_suites(extra))
    out.mkdir(parents=True, exist_ok=True)
    sets = [ds for ds in resolve_datasets(datasets, data_root, scales) if ds.has_hr]
    if not sets:
        raise BenchError("degrade needs datasets with ground truth (HR images); LR-only sets have nothing to degrade")
    kernels = _Kernels()
    hr_files: dict[tuple[str, str], dict[str, Any]] = {}
    manifest: dict[str, Any] = {"manifest_version": MANIFEST_VERSION, "bench_version": __version__, "seed": seed}
    if extra is not None:
        manifest["suite_file"] = {"path": str(extra), "sha256": _sha256(extra)}
    manifest.update({"hr_files": [], "kernels": [], "sets": []})
    n = 0
    jobs = [(ds, scale, suite) for scale in scales for suite in parse_suites(suites, scale, extra) for ds in sets]
    for ds, scale, suite in tqdm(jobs, desc="export", disable=os.environ.get("UNPAIRED_SR_BENCH_NO_PROGRESS") == "1"):
        folder = out / ds.name / f"x{scale}" / _folder_name(suite.name)
        folder.mkdir(parents=True, exist_ok=True)
        entries = []
        for item in ds.items_at(scale):
            src = item.hr_at.get(scale, item.hr)
            key = (ds.name, str(src))
            if key not in hr_files:
                hr_files[key] = {"id": f"hr-{len(hr_files)}", "dataset": ds.name, "image": item.id,
                                 "path": str(src), "sha256": _content_hash(str(src))}
            hr = load_hr(item, scale)
            lr, meta = synthesize(suite, hr.pixels, scale, item.id, seed)
            name = f"{item.id.replace('/', '_')}.png"
            write_png(folder / name, lr)
            entries.append({"image": item.id, "file": name, "hr": hr_files[key]["id"],
                            "lr_sha256": _sha256(folder / name), **_dedup_kernels(meta, kernels)})
            n += 1
        manifest["sets"].append({"dataset": ds.name, "scale": scale, "suite": suite.name,
                                 "fingerprint": suite.fingerprint(), "folder": folder.relative_to(out).as_posix(),
                                 "images": entries})
    manifest["hr_files"] = list(hr_files.values())
    manifest["kernels"] = list(kernels.table.values())
    tmp = out / f"manifest.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1, default=str))
    os.replace(tmp, out / "manifest.json")  # a reader never sees half a manifest
    return n
