"""Memory and speed of training on a DF2K-sized pool (issue "Learn from real data").

Generates 2040 x 1356 PNGs (DIV2K's size; smooth random content, written once under
--workdir), then measures:

- peak RSS of a smoke fit of edsr-bicubic and fssr (source pool, a synthetic ``mixed``
  target from its other half, the leakage audit first) and of the whole smoke benchmark
  run around it, with the pool at N/2 and at N images: bounded memory means the peak
  barely moves when the pool doubles;
- patches per second of an x4 HR patch sampler (LR patch 32 -> HR 128, batch 16) with
  0 and 2 loader workers, cold (whole PNGs decoded on demand) and from the sub-image
  cache (480-pixel tiles cut once, as BasicSR's extract_subimages).

    python benchmarks/pool_memory.py --images 200 --workdir /tmp/pool_bench \
        --json results/reference/pool_memory_cpu.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
H, W = 1356, 2040


def _write(path: Path, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = (rng.random((H // 12, W // 12, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(base).resize((W, H), Image.BICUBIC)
    noise = rng.normal(0, 3, (H, W, 3))  # a little texture, so PNGs are not trivially compressible
    arr = np.clip(np.asarray(im, np.float64) + noise, 0, 255).astype(np.uint8)
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(arr).save(tmp)
    os.replace(tmp, path)


def make_pool(folder: Path, n: int) -> Path:
    from joblib import Parallel, delayed

    folder.mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(n) if not (folder / f"{i:04d}.png").is_file()]
    Parallel(n_jobs=2)(delayed(_write)(folder / f"{i:04d}.png", 1000 + i) for i in todo)
    return folder


def link_subset(src: Path, dst: Path, n: int) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        link = dst / f"{i:04d}.png"
        if not link.exists():
            link.symlink_to(src / f"{i:04d}.png")
    return dst


FIT_ONLY = """
import resource, sys
from bench.cli import run_parser, spec_from_args
from bench.data import load_dataset
from bench.runner import Cell, Runner
spec = spec_from_args(run_parser().parse_args(sys.argv[1:]))
runner = Runner(spec, log=lambda *a: None)
test = [load_dataset("t", spec.datasets.split("=", 1)[1], spec.scales)]
runner.prepare(test)
cells = [Cell("edsr-bicubic", "t", "bicubic", 4, ""), Cell("fssr", "t", "mixed", 4, "mixed")]
for c in cells:
    runner.variant_for(c.method, c.scale, c.domain, runner.test_ids)
runner.audit(test, [(c, None, None) for c in cells])
for c in cells:
    runner.model_for(c.method, c.scale, c.domain, runner.test_ids)
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss(source: Path, test: Path, out: Path, *, fit_only: bool) -> dict:
    """Peak RSS of a child process from the kernel's accounting: the fits alone (plan,
    leakage audit, edsr-bicubic and fssr fits: what a smoke fit holds) or the whole run
    (which also imports pyiqa, about 200 MiB, and scores)."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)  # cold: no audit features, fits or derived images cached
    args = ["--methods", "edsr-bicubic,fssr", "--source", f"pool={source}", "--target", "mixed",
            "--datasets", f"t={test}", "--suites", "bicubic", "--metrics", "psnr", "--profile", "smoke",
            "--no-timing", "--jobs", "1", "--out", str(out)]
    code = FIT_ONLY if fit_only else (
        "import resource, sys; from bench.cli import main; rc = main(sys.argv[1:]); "
        "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    env = dict(os.environ, UNPAIRED_SR_BENCH_NO_PROGRESS="1")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"smoke run on {source} failed:\n{proc.stderr[-2000:]}")
    kb = int(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("PEAK_KB")))
    return {"peak_rss_mib": round(kb / 1024, 1), "wall_s": round(wall, 1)}


def patches_per_second(pool, workers: int, calls: int, batch: int = 16, hr_patch: int = 128) -> float:
    from bench.train import PatchSampler, loading, torch_generator

    with loading(workers):
        s = PatchSampler(pool, hr_patch, torch_generator(0, "bench"))
        s.sample(batch)  # start the workers (and the first decode) outside the timing
        t0 = time.perf_counter()
        for _ in range(calls):
            s.sample(batch)
        dt = time.perf_counter() - t0
    return round(calls * batch / dt, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200, help="pool size N (the run at N/2 is the baseline)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/pool_bench"))
    ap.add_argument("--calls", type=int, default=20, help="timed sampler calls of 16 patches")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from tests._shared import smooth_images

    from bench.pools import FilePool, SubImagePool

    t0 = time.perf_counter()
    full = make_pool(a.workdir / "pool", a.images)
    print(f"pool: {a.images} PNGs of {W}x{H} in {full} ({time.perf_counter() - t0:.0f}s to make)")
    half = link_subset(full, a.workdir / f"half{a.images // 2}", a.images // 2)
    test = smooth_images(a.workdir / "test", [(96, 96)] * 2, seed=99)
    rss: dict[str, dict] = {}
    for what in ("fit", "run"):
        for n, folder in ((a.images // 2, half), (a.images, full)):
            r = peak_rss(folder, test, a.workdir / f"out{what}{n}", fit_only=what == "fit")
            rss[f"{what} {n}"] = r
            print(f"smoke {what}, pool of {n}: peak RSS {r['peak_rss_mib']} MiB ({r['wall_s']}s)")
    growth = {w: rss[f"{w} {a.images}"]["peak_rss_mib"] / rss[f"{w} {a.images // 2}"]["peak_rss_mib"] - 1
              for w in ("fit", "run")}

    paths = sorted(full.glob("*.png"))
    speed = {}
    for workers in (0, 2):
        pool = FilePool(paths, [p.stem for p in paths], name="pool")
        speed[f"cold, {workers} workers"] = patches_per_second(pool, workers, a.calls)
    tiles_dir = a.workdir / "tiles"
    import shutil

    shutil.rmtree(tiles_dir, ignore_errors=True)
    t0 = time.perf_counter()
    tiles = SubImagePool(FilePool(paths, [p.stem for p in paths]), crop=480, cache_dir=tiles_dir)
    for i in range(len(tiles)):  # cut every tile once (what the first epoch would do)
        tiles.load(i)
    cut_s = time.perf_counter() - t0
    for workers in (0, 2):
        pool = SubImagePool(FilePool(paths, [p.stem for p in paths]), crop=480, cache_dir=tiles_dir)
        speed[f"sub-image cache, {workers} workers"] = patches_per_second(pool, workers, a.calls)
    for k, v in speed.items():
        print(f"patches/s (LR 32 / x4, batch 16), {k}: {v}")
    for w, g in growth.items():
        print(f"smoke {w}: peak RSS growth when the pool doubles {g * 100:.1f}% (bar: < 10%, fit under 1536 MiB)")
    result = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU",
        "images": a.images, "image_size": f"{W}x{H}",
        "peak_rss": rss, "peak_rss_growth_pct": {w: round(g * 100, 2) for w, g in growth.items()},
        "patches_per_s": speed, "tiles": len(tiles), "tile_cut_s": round(cut_s, 1),
        "pass": bool(max(growth.values()) < 0.10
                     and max(v["peak_rss_mib"] for k, v in rss.items() if k.startswith("fit")) < 1536),
    }
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {a.json}")


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
