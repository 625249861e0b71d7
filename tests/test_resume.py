"""Crash safety: SIGKILL at seeded moments (mid-fit, mid-LR-write, mid-cell-write),
rerun each time, and end with the same summary.csv as an uninterrupted run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _dataset(root: Path) -> Path:
    rng = np.random.default_rng(3)
    d = root / "tiny"
    d.mkdir()
    for i, (h, w) in enumerate([(48, 64), (40, 52)]):
        base = rng.random((h // 8, w // 8, 3))
        img = Image.fromarray((base * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
        img.save(d / f"im{i}.png")
    return d


def _run(data: Path, out: Path, kill: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ, UNPAIRED_SR_BENCH_NO_PROGRESS="1")
    env.pop("UNPAIRED_SR_BENCH_KILL_AT", None)
    if kill:
        env["UNPAIRED_SR_BENCH_KILL_AT"] = kill
    cmd = [sys.executable, "run_bench.py", "--methods", "bicubic,edsr-bicubic,oracle", "--profile", "smoke",
           "--datasets", f"tiny={data}", "--suites", "bicubic;noise:sigma=5", "--metrics", "psnr,ssim",
           "--no-timing", "--device", "cpu", "--out", str(out)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sigkill_at_seeded_moments_then_resume(tmp_path):
    data = _dataset(tmp_path)
    ref = _run(data, tmp_path / "ref", None)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "killed"
    for kill in ["fit-step:2", "lr-write:3", "cell-write:1", "cell-write:3"]:
        r = _run(data, out, kill)
        assert r.returncode == -9, f"{kill}: expected SIGKILL, got {r.returncode}\n{r.stderr[-1500:]}"
    final = _run(data, out, None)
    assert final.returncode == 0, final.stderr[-2000:]
    assert (out / "summary.csv").read_text() == (ref / "summary.csv").read_text()
    again = _run(data, out, None)  # nothing left to do
    assert "0 to compute" in again.stdout
