#!/usr/bin/env python3
"""The main job on a GPU machine, as one prepared check: ``python run_bench.py --methods all``
with ``--device auto`` finding CUDA (so the ``gpu`` profile), its wall time, the second
run's (which must compute nothing), the table re-rendered with ``--ci``, and the oracle's
bound per domain, all under ``OUT``.

    python benchmarks/gpu_default.py --out $OUT/default_gpu           # on the GPU machine
    python benchmarks/gpu_default.py --out /tmp/g --profile smoke --device cpu   # tried on a CPU

Writes OUT/run_log.txt (both runs' output and wall times), OUT/wall.json, and the run's
results.md/.tex/.json, summary.csv, runtime.md and results_ci.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str], log, timeout: float) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "run_bench.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, UNPAIRED_SR_BENCH_NO_PROGRESS="1"))
    wall = time.perf_counter() - t0
    log.write(f"$ python run_bench.py {' '.join(args)}\n{proc.stdout}{proc.stderr}# rc {proc.returncode}, "
              f"wall {wall:.1f} s\n\n")
    log.flush()
    return proc.returncode, wall, proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--profile", default=None, help="[the default: gpu where CUDA is found]")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--methods", default="all")
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds for the first run [%(default)s]")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    args = ["--methods", a.methods, "--device", a.device, "--out", str(out)]
    if a.profile:
        args += ["--profile", a.profile]
    import torch

    info = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    with open(out / "run_log.txt", "w") as log:
        log.write(f"# {json.dumps(info)}\n")
        rc1, wall1, _ = run(args, log, a.timeout)
        rc2, wall2, text2 = run(args, log, 120)
        run(["tables", "--out", str(out), "--ci"], log, 120)
    if (out / "results.md").is_file():
        (out / "results_ci.md").write_bytes((out / "results.md").read_bytes())
        # the plain table again, as the run left it
        subprocess.run([sys.executable, "run_bench.py", "tables", "--out", str(out)], cwd=REPO, capture_output=True)
    second_line = next((ln for ln in text2.splitlines() if "cells planned" in ln), "")
    info.update(rc=rc1, wall_s=round(wall1, 1), second_rc=rc2, second_wall_s=round(wall2, 1),
                second_run=second_line)
    (out / "wall.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))
    return 0 if rc1 == 0 and rc2 == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
