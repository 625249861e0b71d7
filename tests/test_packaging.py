"""The wheel a user installs carries everything the harness reads at run time.

Builds the wheel from a copy of the source tree, installs it with ``--no-deps`` in a
fresh venv (``--system-site-packages`` supplies torch, pyiqa, ...), and runs the
``unpaired-sr-bench`` console script from a folder outside the source tree, where
nothing but the installed package can be found.
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests._shared import shared_dir

REPO = Path(__file__).resolve().parents[1]
#: what a source distribution holds; copying only these keeps build/ and *.egg-info out of the tree
SOURCES = ("bench", "methods", "pyproject.toml", "README.md", "LICENSE")


def _clean_env() -> dict[str, str]:
    """The environment without anything that points back at the source tree."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "UNPAIRED_SR_DATA")}
    env["UNPAIRED_SR_BENCH_NO_PROGRESS"] = "1"
    return env


def _build_and_install(tmp: Path) -> Path:
    """The venv's ``bin`` folder with the freshly built wheel installed; skips when pip or venv cannot run."""
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        p = REPO / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif p.exists():
            shutil.copy2(p, src / name)
    wheels = tmp / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), "."], cwd=src, capture_output=True, text=True, timeout=120)
    if build.returncode != 0 and "No module named pip" in build.stderr:
        pytest.skip("pip is not available in this interpreter, so no wheel can be built")
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("unpaired_sr_bench-*.whl")
    env_dir = tmp / "venv"
    try:
        # no pip of its own: the system pip (visible through system site-packages) installs into it
        venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    except Exception as exc:  # e.g. a distribution's python without the venv module's support files
        pytest.skip(f"cannot create a virtual environment here ({type(exc).__name__}: {exc})")
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    py = bindir / ("python.exe" if os.name == "nt" else "python")
    _assert_data_files_ship(wheel)
    # --force-reinstall: the same version may already be installed (editable) in the system site-packages
    inst = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--force-reinstall", "-q",
                           "--disable-pip-version-check", str(wheel)], env=_clean_env(), capture_output=True,
                          text=True, timeout=120)
    if inst.returncode != 0 and "No module named pip" in inst.stderr:
        pytest.skip("the venv cannot see a pip to install the wheel with")
    assert inst.returncode == 0, inst.stderr[-2000:]
    return bindir


def _assert_data_files_ship(wheel: Path) -> None:
    """Every non-Python file of the packages (NIQE parameters, paper and dataset specs) is in the wheel."""
    names = set(zipfile.ZipFile(wheel).namelist())
    data = [p.relative_to(REPO).as_posix() for pkg in ("bench", "methods") for p in (REPO / pkg).rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert any(d.startswith("bench/datasets/") for d in data) and "bench/niqe_pris_params.npz" in data
    missing = sorted(set(data) - names)
    assert not missing, f"package data left out of the wheel (add it to [tool.setuptools.package-data]): {missing}"


def _hr_folder(tmp: Path) -> tuple[str, Path]:
    """Set5 from the shared calibration data when present, else three generated HR images
    (under another name: a folder called Set5 must hold Set5's five images)."""
    set5 = shared_dir() / "datasets" / "Set5"
    if set5.is_dir():
        return "Set5", set5
    folder = tmp / "hr"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):  # 200 px: NIQE needs 96x96 blocks after the crop border
        Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return "tiny", folder


def test_installed_wheel_runs_outside_the_source_tree(tmp_path):
    bindir = _build_and_install(tmp_path)
    exe = bindir / ("unpaired-sr-bench.exe" if os.name == "nt" else "unpaired-sr-bench")
    assert exe.exists(), "the wheel installs no unpaired-sr-bench console script"
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _clean_env()
    where = subprocess.run([str(bindir / "python"), "-c", "import importlib.util as u; "
                            "print(u.find_spec('bench').origin); print(u.find_spec('methods').origin)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr[-2000:]
    for line in where.stdout.split():  # the installed copy, not the source tree or an editable install
        assert Path(line).resolve().is_relative_to((tmp_path / "venv").resolve()), where.stdout

    listed = subprocess.run([str(exe), "--list", "datasets"], cwd=work, env=env, capture_output=True, text=True,
                            timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    for name in ("embedded", "Set5", "Set14", "Urban100", "DIV2KRK", "RealSR"):
        assert f"| {name} " in listed.stdout, listed.stdout

    name, hr = _hr_folder(tmp_path)
    out = tmp_path / "out"
    ran = subprocess.run([str(exe), "--methods", "bicubic", "--datasets", f"{name}={hr}", "--suites", "bicubic",
                          "--metrics", "psnr", "--no-timing", "--jobs", "1", "--out", str(out)], cwd=work, env=env,
                         capture_output=True, text=True, timeout=180)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    rows = {r["metric"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    if name == "Set5":
        assert abs(float(rows["psnr"]["value"]) - 28.42) <= 0.03, rows["psnr"]
    assert (out / "results.md").is_file()
    assert not list(work.iterdir()), "the run wrote into the working directory instead of --out"


def _cff_top_level(text: str) -> dict[str, str]:
    """Top-level ``key: value`` pairs of a CFF file (YAML; nested lists are read by the test itself)."""
    out = {}
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith(("#", "-")) and ":" in line:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip().strip('"')
    return out


def test_license_and_citation_match_pyproject():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lic = (REPO / "LICENSE").read_text()
    assert project["license"]["text"] == "MIT" and lic.startswith("MIT License")
    assert "Copyright (c)" in lic and "UnpairedSR-Bench contributors" in lic
    text = (REPO / "CITATION.cff").read_text()
    cff = _cff_top_level(text)
    # CFF 1.2.0 requires cff-version, message, title and authors
    assert cff["cff-version"] == "1.2.0" and cff["message"] and "UnpairedSR-Bench" in cff["title"]
    assert cff["version"] == project["version"], "CITATION.cff version differs from pyproject.toml"
    assert cff["license"] == "MIT" and cff["type"] == "software"
    assert "authors:\n  - name: \"UnpairedSR-Bench contributors\"" in text
