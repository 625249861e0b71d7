"""Learning curves for every learned method, many fits at once on one GPU machine.

Runs ``python run_bench.py curves`` as independent jobs (one method x domain x budget
factor each, so a slow job holds one worker only), ``--workers`` at a time, each with
its own store under ``OUT/jobs/``; at the end (or at ``--deadline`` seconds, when jobs
still running are stopped and their finished probe points kept) it merges every job's
rows into ``OUT/curves.sqlite``, renders ``curves.md``/``curves.csv``/PNGs and packs
them into ``OUT/curves.tgz``.

Used for the 4x-budget runs of issues 4 and 5, which would take hours on the 2-core
reference CPU. The device is named in every row.

    python benchmarks/gpu_curves.py --out $OUT --workers 12 --deadline 540
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BLIND_SUITES = "dasr-iso:sigma=2.4;aniso"
DOMAINS = ("mixed", "aniso:k=5", "noise:sigma=15")
UNPAIRED = ("pdm", "fssr", "dasr-wei", "fca", "mssr", "usr-da")
BLIND = ("dasr-wang", "daa", "crl-sr", "cdsr")


def jobs(factors: tuple[float, ...]) -> list[tuple[str, list[str]]]:
    """(name, curves arguments), most important first: issue 3, 4, then 5 by domain."""
    out = []
    for f in factors:
        out.append((f"edsr-bicubic_blind_{f:g}x", ["--methods", "edsr-bicubic", "--suites",
                                                   f"mixed;noise:sigma=15;{BLIND_SUITES}", "--factors", f"{f:g}"]))
    for dom in DOMAINS:
        for f in factors:
            out.append((f"oracle_{dom}_{f:g}x", ["--methods", "oracle", "--domain", dom, "--factors", f"{f:g}"]))
    for m in BLIND:
        for f in factors:
            out.append((f"{m}_blind_{f:g}x", ["--methods", m, "--suites", BLIND_SUITES, "--factors", f"{f:g}"]))
    for dom in DOMAINS:
        for m in UNPAIRED:
            for f in factors:
                out.append((f"{m}_{dom}_{f:g}x", ["--methods", m, "--domain", dom, "--factors", f"{f:g}"]))
    return out


def safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--deadline", type=float, default=540.0, help="seconds before unfinished jobs are stopped")
    p.add_argument("--factors", default="4", help="budget multipliers [4]: the 1x curves run on the reference CPU")
    p.add_argument("--points", type=int, default=8)
    p.add_argument("--device", default="cuda")
    p.add_argument("--profile", default="quick")
    p.add_argument("--only", default=None, help="comma list of job-name prefixes to run")
    a = p.parse_args()
    out = Path(a.out)
    (out / "jobs").mkdir(parents=True, exist_ok=True)
    factors = tuple(float(f) for f in a.factors.split(","))
    todo = jobs(factors)
    if a.only:
        todo = [j for j in todo if any(j[0].startswith(o) for o in a.only.split(","))]
    env = {**os.environ, "UNPAIRED_SR_BENCH_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.time()
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    queue = list(todo)
    status: dict[str, str] = {}
    while queue or running:
        while queue and len(running) < a.workers:
            name, args = queue.pop(0)
            jd = out / "jobs" / safe(name)
            cmd = [sys.executable, str(ROOT / "run_bench.py"), "curves", *args, "--points", str(a.points),
                   "--device", a.device, "--profile", a.profile, "--out", str(jd)]
            jd.mkdir(parents=True, exist_ok=True)
            log = open(jd / "log.txt", "w")
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            running[name] = (proc, time.time())
        time.sleep(2)
        for name, (proc, t0) in list(running.items()):
            if proc.poll() is not None:
                status[name] = f"rc {proc.returncode} in {time.time() - t0:.0f}s"
                print(f"[{time.time() - start:5.0f}s] {name}: {status[name]}", flush=True)
                del running[name]
        if time.time() - start > a.deadline:
            for name, (proc, t0) in running.items():
                proc.kill()
                status[name] = f"stopped at the deadline after {time.time() - t0:.0f}s"
                print(f"[{time.time() - start:5.0f}s] {name}: {status[name]}", flush=True)
            for name, _ in queue:
                status[name] = "not started (deadline)"
            running, queue = {}, []
    merge(out, status)
    return 0


def merge(out: Path, status: dict[str, str]) -> None:
    import torch

    from bench.curves import curve_rows, ensure_table, put_rows, write_outputs
    from bench.store import Store

    merged = Store(out / "curves.sqlite")
    ensure_table(merged)
    for db in sorted((out / "jobs").glob("*/results.sqlite")):
        try:
            s = Store(db)
            ensure_table(s)
            rows = curve_rows(s).to_dict("records")
        except Exception as exc:  # a job killed mid-write: keep what the others made
            print(f"skip {db}: {exc}")
            continue
        put_rows(merged, rows)
    render = out / "render"
    paths = write_outputs(merged, render)
    merged.close()  # checkpoint the WAL into curves.sqlite before it is packed (else the copy is empty)
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    (render / "jobs.txt").write_text(f"device: {dev}\n" + "\n".join(f"{k}: {v}" for k, v in status.items()) + "\n")
    with tarfile.open(out / "curves.tgz", "w:gz") as tar:
        tar.add(out / "curves.sqlite", arcname="curves.sqlite")
        tar.add(render, arcname="render")
        for log in sorted((out / "jobs").glob("*/log.txt")):
            tar.add(log, arcname=f"logs/{log.parent.name}.txt")
    print("wrote", out / "curves.tgz", "with", ", ".join(p.name for p in paths))


if __name__ == "__main__":
    raise SystemExit(main())
