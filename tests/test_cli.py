"""The command line: one clear line per user error, the calibrated bicubic acceptance run."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._shared import requires_shared

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, UNPAIRED_SR_BENCH_NO_PROGRESS="1")
    return subprocess.run([sys.executable, "run_bench.py", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("args,words", [
    (["--methods", "bicubc"], "did you mean 'bicubic'"),
    (["--methods", "bicubic", "--datasets", "x=/nonexistent/folder"], "/nonexistent/folder"),
    (["--methods", "bicubic", "--suites", "anisso"], "did you mean"),
    (["--methods", "bicubic", "--metrics", "psnrr"], "did you mean 'psnr'"),
    (["--methods", "bicubic", "--checkpoint", "bicubic"], "NAME=PATH"),
])
def test_user_errors_are_one_line(args, words, tmp_path, capsys):
    from bench.cli import main

    code = main([*args, "--out", str(tmp_path), "--no-timing"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert words in lines[0]


def test_list_commands(capsys):
    from bench.cli import main

    for what, word in [("methods", "dasr-wang"), ("suites", "dasr-iso"), ("metrics", "niqe"), ("datasets", "Set14")]:
        assert main(["--list", what]) == 0
        assert word in capsys.readouterr().out


def test_bicubic_set5_summary_matches_published(tmp_path):
    set5 = requires_shared("datasets", "Set5")
    r = run("--methods", "bicubic", "--datasets", f"Set5={set5}", "--suites", "bicubic", "--scales", "4",
            "--metrics", "psnr,ssim", "--out", str(tmp_path), "--no-timing")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {row["metric"]: row for row in csv.DictReader(open(tmp_path / "summary.csv"))}
    assert abs(float(rows["psnr"]["value"]) - 28.42) <= 0.03
    assert abs(float(rows["ssim"]["value"]) - 0.8104) <= 0.001
    assert rows["psnr"]["variant"] == "-" and rows["psnr"]["n_images"] == "5"
    assert rows["psnr"]["suite"] == "bicubic" and rows["psnr"]["protocol"] == "paper-y"


def test_each_scale_is_cropped_by_its_own_scale(tmp_path):
    """--scales 2,4 in one run: x2 and x4 match the published bicubic rows (crop = scale each)."""
    set5 = requires_shared("datasets", "Set5")
    r = run("--methods", "bicubic", "--datasets", f"Set5={set5}", "--suites", "bicubic", "--scales", "2,4",
            "--metrics", "psnr", "--out", str(tmp_path), "--no-timing")
    assert r.returncode == 0, r.stderr[-2000:]
    psnr = {row["scale"]: float(row["value"]) for row in csv.DictReader(open(tmp_path / "summary.csv"))}
    assert abs(psnr["2"] - 33.66) <= 0.03 and abs(psnr["4"] - 28.42) <= 0.03, psnr
    # x4 alone must give exactly the same value (a crop of 2 at x4 reads 28.4248 instead of 28.4314)
    alone = run("--methods", "bicubic", "--datasets", f"Set5={set5}", "--suites", "bicubic", "--scales", "4",
                "--metrics", "psnr", "--out", str(tmp_path / "x4"), "--no-timing")
    assert alone.returncode == 0, alone.stderr[-2000:]
    (row,) = list(csv.DictReader(open(tmp_path / "x4" / "summary.csv")))
    assert float(row["value"]) == psnr["4"]
