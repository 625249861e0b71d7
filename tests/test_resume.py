"""Crash safety: SIGKILL at seeded moments (mid-fit, mid-LR-write, mid-cell-write),
rerun each time, and end with the same summary.csv as an uninterrupted run."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests._shared import run_isolated, smooth_images

REPO = Path(__file__).resolve().parents[1]


def _dataset(root: Path) -> Path:
    return smooth_images(root / "tiny", [(48, 64), (40, 52)], seed=3)


def _run(data: Path, out: Path, kill: str | None) -> tuple[int, str, str]:
    env = dict(os.environ, UNPAIRED_SR_BENCH_NO_PROGRESS="1")
    env.pop("UNPAIRED_SR_BENCH_KILL_AT", None)
    if kill:
        env["UNPAIRED_SR_BENCH_KILL_AT"] = kill
    args = ["--methods", "bicubic,edsr-bicubic,oracle", "--profile", "smoke",
            "--datasets", f"tiny={data}", "--suites", "bicubic;noise:sigma=5", "--metrics", "psnr,ssim",
            "--no-timing", "--device", "cpu", "--out", str(out)]
    return run_isolated(args, out, env, timeout=600)


@pytest.mark.slow
def test_sigkill_at_seeded_moments_then_resume(tmp_path):
    data = _dataset(tmp_path)
    code, _, err = _run(data, tmp_path / "ref", None)
    assert code == 0, err[-2000:]
    out = tmp_path / "killed"
    # order matters: each kill must find its event still ahead (LR is cached once written)
    for kill in ["lr-write:3", "fit-step:2", "cell-write:1", "cell-write:3"]:
        code, _, err = _run(data, out, kill)
        assert code == -9, f"{kill}: expected SIGKILL, got {code}\n{err[-1500:]}"
    code, _, err = _run(data, out, None)
    assert code == 0, err[-2000:]
    assert (out / "summary.csv").read_text() == (tmp_path / "ref" / "summary.csv").read_text()
    _, stdout, _ = _run(data, out, None)  # nothing left to do
    assert "0 to compute" in stdout
