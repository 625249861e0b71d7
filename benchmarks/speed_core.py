#!/usr/bin/env python
"""Images per second for LR synthesis and each metric on this machine, beside pyiqa.

Not a test. pyiqa is the reference for values; pyiqa and BasicSR's numpy functions are
the references for speed: every row that has a counterpart runs it on the same images
in the same run and reports ms/image, the speed-up and the largest value difference.
BasicSR is not a dependency: --basicsr PATH imports its metric files from a source tree
(without it that column is skipped). Prints a table and writes JSON (with provenance).

    python benchmarks/speed_core.py --threads 2 --basicsr ~/src/BasicSR   # CPU, and CUDA when present
    python benchmarks/speed_core.py --device cpu --repeats 5
    python benchmarks/speed_core.py --device cuda --niqe-throughput        # NIQE images/s on 100 images
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SUITES = (
    "bicubic",
    "dasr-iso:sigma=2.4",
    "dasr-aniso:k=5,noise=10",
    "gaussian8:sigma=2.6",
    "manet-si:k=5,noise=15",
    "mixed",
    "realistic",
    "div2krk",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch/BLAS and joblib workers (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the images; the median is reported")
    p.add_argument("--device", choices=("all", "cpu", "cuda"), default="all", help="all = CPU, plus CUDA when present")
    p.add_argument("--images", type=int, default=4, help="how many 1024x768 RGB test images")
    p.add_argument("--budget-s", type=float, default=20.0, help="stop repeating one measurement after this many seconds")
    p.add_argument("--suites", default=";".join(DEFAULT_SUITES), help="';'-separated suite names to time")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/reference/speed_core_<device>.json)")
    p.add_argument("--basicsr", type=Path, default=None,
                   help="folder with BasicSR's source tree (basicsr/metrics/niqe.py ...): adds BasicSR's numpy "
                        "PSNR, SSIM, NIQE and imresize as a second reference")
    p.add_argument("--niqe-images", type=int, default=100, help="images for the NIQE batch throughput row (CUDA)")
    p.add_argument("--niqe-throughput", action="store_true",
                   help="only measure NIQE images/s on --niqe-images images (on CUDA when present) and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Thread pools read these at import time, so they are set before numpy/torch load.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]
    import torch

    torch.set_num_threads(args.threads)
    # imported after the thread settings: numpy/BLAS read them on import
    from _speed_impl import run

    return run(args, repo=REPO)


if __name__ == "__main__":
    raise SystemExit(main())
