"""The grid on a Dask cluster: the same summary.csv as the local path, with a worker killed
mid-fit (its task rerun elsewhere, the rerun in the log) and with the driver killed mid-run
(the rerun computes only the missing cells). One LocalCluster serves the tests that can share it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

distributed = pytest.importorskip(
    "distributed", reason='dask.distributed is not installed; pip install -e ".[dist]" to run the cluster tests')

from tests._shared import run_isolated, smooth_images

REPO = Path(__file__).resolve().parents[1]
KILL = "UNPAIRED_SR_BENCH_WORKER_KILL_AT"


def _dataset(root: Path) -> Path:
    return smooth_images(root / "tiny", [(48, 64), (40, 52)], seed=3)


def _run(data: Path, out: Path, *extra: str, kill: str | None = None) -> tuple[int, str, str]:
    env = dict(os.environ, UNPAIRED_SR_BENCH_NO_PROGRESS="1")
    env.pop("UNPAIRED_SR_BENCH_KILL_AT", None)
    env.pop(KILL, None)
    if kill:
        env["UNPAIRED_SR_BENCH_KILL_AT"] = kill
    args = ["--methods", "bicubic,edsr-bicubic", "--profile", "smoke",
            "--datasets", f"tiny={data}", "--suites", "bicubic;noise:sigma=5", "--metrics", "psnr,ssim",
            "--no-timing", "--device", "cpu", "--out", str(out), *extra]
    return run_isolated(args, out, env, timeout=300)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The tiny dataset and the local path's summary (no cluster) every cluster run must equal."""
    root = tmp_path_factory.mktemp("dist")
    data = _dataset(root)
    code, _, err = _run(data, root / "local")
    assert code == 0, err[-2000:]
    return root, data, (root / "local" / "summary.csv").read_text()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two worker processes that die once, at the count written to ``armed`` (bench/faults.py)."""
    import dask

    armed = tmp_path_factory.mktemp("arm") / "armed"
    armed.write_text("")
    with dask.config.set({"distributed.scheduler.allowed-failures": 2}):
        lc = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                      env={KILL: f"fit-step:{armed}"})
    try:
        yield lc.scheduler_address, armed
    finally:
        lc.close()


@pytest.mark.slow
def test_local_cluster_gives_the_local_summary(grid):
    root, data, ref = grid
    out = root / "local2"
    code, stdout, err = _run(data, out, "--cluster", "local:2")
    assert code == 0, err[-2000:]
    assert "started a local Dask cluster of 2 worker processes" in stdout
    assert "computed 4 cell(s) on the cluster (0 failed)" in stdout
    assert (out / "summary.csv").read_text() == ref
    assert (out / "cache" / "fits").is_dir()  # --cache defaults under --out for local:N


@pytest.mark.slow
def test_worker_killed_mid_fit_reruns_it_elsewhere(grid, cluster):
    root, data, ref = grid
    address, armed = cluster
    armed.write_text("2")  # the second training step on any worker kills that worker
    out = root / "workerkill"
    code, stdout, err = _run(data, out, "--cluster", address, "--cache", str(root / "shared-cache-a"))
    assert code == 0, err[-2000:]
    assert armed.read_text() == "", "the seeded worker kill never happened"
    assert "retried fit task fit-" in stdout and "died while computing it; rerun on" in stdout, stdout
    assert "(0 failed, 1 task(s) rerun after a worker died)" in stdout, stdout
    assert (out / "summary.csv").read_text() == ref


@pytest.mark.slow
def test_driver_killed_resumes_with_only_the_missing_cells(grid, cluster):
    root, data, ref = grid
    address, armed = cluster
    armed.write_text("")
    out, cache = root / "driverkill", str(root / "shared-cache-b")
    code, _, err = _run(data, out, "--cluster", address, "--cache", cache, kill="cell-write:3")
    assert code == -9, f"expected the driver's SIGKILL, got {code}\n{err[-1500:]}"
    code, stdout, err = _run(data, out, "--cluster", address, "--cache", cache)
    assert code == 0, err[-2000:]
    assert "4 cells planned, 2 already in" in stdout and "2 to compute" in stdout, stdout
    assert "computed 2 cell(s) on the cluster (0 failed)" in stdout
    assert "fitting " not in stdout  # the fit is in the shared cache
    assert (out / "summary.csv").read_text() == ref


@pytest.mark.slow
def test_every_try_killed_stores_the_cells_as_failed_with_the_reason(grid, cluster):
    import sqlite3

    root, data, _ = grid
    address, armed = cluster
    armed.write_text("1\n1\n1")  # the fit's first step, on each of its 1 + allowed-failures (2) tries
    out = root / "exhausted"
    code, stdout, err = _run(data, out, "--cluster", address, "--cache", str(root / "shared-cache-c"))
    assert code == 1, err[-2000:]
    assert armed.read_text() == ""
    assert "every try died with its worker" in stdout, stdout
    rows = sqlite3.connect(out / "results.sqlite").execute("SELECT method, status, error FROM cells").fetchall()
    assert sorted((m, s) for m, s, _ in rows) == [("bicubic", "done")] * 2 + [("edsr-bicubic", "failed")] * 2
    assert all("killed its worker on each of 3 tries" in e and "allowed-failures exhausted" in e
               for m, _, e in rows if m == "edsr-bicubic")


def test_cuda_without_gpu_workers_is_refused_before_any_work(grid, cluster, tmp_path):
    from bench.adapter import BenchError
    from bench.distributed import ClusterRunner, cluster_spec
    from bench.runner import RunSpec

    address, _ = cluster
    spec = RunSpec(methods=("edsr-bicubic",), device="cuda", out=str(tmp_path), profile="smoke")
    runner = ClusterRunner(spec, cluster_spec(address, str(tmp_path / "cache"), spec.out, None), log=lambda s: None)
    with distributed.Client(address) as client:
        with pytest.raises(BenchError, match=r"no worker offers a GPU.*--resources GPU=1"):
            runner._gpu(client)
    runner.store.close()


def test_cluster_flags_fail_in_one_line(tmp_path):
    from bench.adapter import BenchError
    from bench.distributed import cluster_spec

    with pytest.raises(BenchError, match="local:N takes a number"):
        cluster_spec("local:x", None, str(tmp_path), None)
    with pytest.raises(BenchError, match="pass --cache DIR"):
        cluster_spec("tcp://head:8786", None, str(tmp_path), None)
    assert cluster_spec("local:2", None, str(tmp_path), 3).cache == str((tmp_path / "cache").resolve())
