"""Every failure path ends in one line naming the thing and the fix, exit code 2, and
nothing already computed is lost (store failures, checks before work, concurrent runs)."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.store import Store
from bench.tables import summarize
from tests._shared import smooth_images

REPO = Path(__file__).resolve().parents[1]


def _images(folder: Path, n: int = 2, seed: int = 0) -> Path:
    return smooth_images(folder, [(40, 48)] * n, seed)


def _one_line(capsys, code: int, *words: str) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def _bicubic(data: Path, out: Path, *extra: str) -> int:
    return main(["--methods", "bicubic", "--datasets", f"d={data}", "--suites", "bicubic", "--metrics", "psnr",
                 "--no-timing", "--jobs", "1", "--out", str(out), *extra])


def _psnr(out: Path, readonly: bool = False) -> list[float]:
    s = Store(out / "results.sqlite", readonly=readonly)
    try:
        return sorted(summarize(s).summary.value.tolist())
    finally:
        s.close()


@contextlib.contextmanager
def _mount(where: Path):
    """A small tmpfs at ``where`` that the test can switch to read-only (needs root, as CI has)."""
    where.mkdir(parents=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "none", str(where)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc}); run as root to test read-only media")
    try:
        yield lambda: subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_read_only_out(tmp_path, capsys):
    data = _images(tmp_path / "d")
    with _mount(tmp_path / "media") as make_read_only:
        out = tmp_path / "media" / "res"
        assert _bicubic(data, out) == 0
        before = _psnr(out)
        capsys.readouterr()
        make_read_only()
        # a run cannot write there: one line, nothing changed
        _one_line(capsys, _bicubic(data, out, "--suites", "noise:sigma=5"), str(out), "--out")
        # tables still read the store (immutable mode) and write elsewhere
        assert main(["tables", "--out", str(out), "--to", str(tmp_path / "tables")]) == 0
        assert "bicubic" in (tmp_path / "tables" / "results.md").read_text()
        capsys.readouterr()
        _one_line(capsys, main(["tables", "--out", str(out)]), "--to")
        assert _psnr(out, readonly=True) == before


def test_corrupt_store_is_refused_never_overwritten_and_repairable(tmp_path, capsys):
    data = _images(tmp_path / "d")
    out = tmp_path / "out"
    assert _bicubic(data, out) == 0
    assert _bicubic(data, out, "--suites", "jpeg:q=30") == 0
    capsys.readouterr()
    db = out / "results.sqlite"
    shutil.copy(db, tmp_path / "good.sqlite")
    # WAL mode: checkpointed on close; the main file now holds every row
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "results.sqlite").write_bytes(os.urandom(8192))
    raw = (garbage / "results.sqlite").read_bytes()
    _one_line(capsys, _bicubic(data, garbage), "not a readable results store", "repair")
    assert (garbage / "results.sqlite").read_bytes() == raw  # never overwritten
    _one_line(capsys, main(["tables", "--out", str(garbage)]), "not a readable results store")

    # partly overwritten: the header and the schema survive, some pages do not
    part = tmp_path / "part"
    part.mkdir()
    b = bytearray((tmp_path / "good.sqlite").read_bytes())
    page = 4096
    b[-page:] = os.urandom(page)
    (part / "results.sqlite").write_bytes(bytes(b))
    code = main(["repair", "--out", str(part), "--to", str(tmp_path / "fixed")])
    assert code == 0, capsys.readouterr().err
    assert "copied into" in capsys.readouterr().out
    assert Store(tmp_path / "fixed" / "results.sqlite").runs()


def test_disk_full_stops_cleanly_and_keeps_cells(tmp_path, capsys):
    from bench.adapter import BenchError
    from bench.runner import Runner, RunSpec

    data = _images(tmp_path / "d", n=30)  # enough per-image rows to outgrow the pages the store has
    out = tmp_path / "out"
    assert _bicubic(data, out) == 0
    capsys.readouterr()
    spec = RunSpec(methods=("bicubic",), datasets=f"d={data}", suites="bicubic;noise;jpeg", metrics=("psnr",),
                   timing=False, jobs=1, device="cpu", out=str(out))
    runner = Runner(spec, log=lambda s: None)
    pages = runner.store.db.execute("PRAGMA page_count").fetchone()[0]
    runner.store.db.execute(f"PRAGMA max_page_count={pages}")  # not one page more
    with pytest.raises(BenchError) as e:
        runner.run()
    assert "full" in str(e.value) and "rerun" in str(e.value) and "\n" not in str(e.value)
    runner.store.close()
    s = Store(out / "results.sqlite")
    assert len([c for c in s.cells() if c["status"] == "done"]) >= 1  # the first run's cell is intact
    assert summarize(s).summary.value.notna().all()


def test_missing_and_misnamed_checkpoints_and_empty_plans(tmp_path, capsys):
    data = _images(tmp_path / "d")
    out = tmp_path / "out"
    assert _bicubic(data, out) == 0
    before = _psnr(out)
    capsys.readouterr()
    base = ["--datasets", f"d={data}", "--suites", "bicubic", "--no-timing", "--out", str(out)]
    _one_line(capsys, main(["--methods", "dasr-wang", "--checkpoint", f"dasr-wang={tmp_path / 'nope.pt'}", *base]),
              "nope.pt", "no such file")
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"0")
    _one_line(capsys, main(["--methods", "dasr-wang", "--checkpoint", f"dasrwang={ckpt}", *base]),
              "dasrwang", "did you mean 'dasr-wang'")
    _one_line(capsys, main(["--methods", "bicubic", "--scales", "5", *base]), "--scales 5", "x4")
    lr_only = _images(tmp_path / "phone")
    _one_line(capsys, main(["--methods", "bicubic", "--datasets", f"phone=lr:{lr_only}", "--metrics", "psnr,ssim",
                            "--no-timing", "--out", str(out)]), "no HR images", "niqe")
    assert _psnr(out) == before


def test_paper_fit_without_vgg_is_refused_before_any_pool(tmp_path, capsys, monkeypatch):
    import bench.data

    def boom(*a, **k):
        raise AssertionError("a training pool was built before the VGG19 check")

    monkeypatch.setattr(bench.data, "training_pool", boom)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))  # no hub cache to find the file in
    data = _images(tmp_path / "d")
    code = main(["--methods", "fssr", "--profile", "paper", "--datasets", f"d={data}", "--suites", "bicubic",
                 "--no-timing", "--out", str(tmp_path / "out"), "--weights-dir", str(tmp_path)])
    _one_line(capsys, code, "vgg19-dcbb9e9d.pth", "--weights-dir")


def test_two_concurrent_runs_never_compute_one_cell_twice(tmp_path):
    """Run A holds mid-cell (seeded hold point) while run B works on the same --out: B
    leaves A's claimed cell to A, computes the rest, and picks up A's result."""
    data = _images(tmp_path / "d")
    out = tmp_path / "out"
    release = tmp_path / "release"
    args = ["--methods", "bicubic", "--datasets", f"d={data}", "--suites", "bicubic;noise;jpeg", "--metrics", "psnr",
            "--no-timing", "--jobs", "1", "--device", "cpu", "--out", str(out)]
    env = dict(os.environ, UNPAIRED_SR_BENCH_NO_PROGRESS="1", UNPAIRED_SR_BENCH_HOLD_AT=f"cell-start:2:{release}")
    a = subprocess.Popen([sys.executable, "run_bench.py", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while not Path(str(release) + ".held").exists():
            assert a.poll() is None and time.time() < deadline, a.stdout.read() if a.poll() is not None else "timeout"
            time.sleep(0.1)
        from bench.runner import Runner

        from bench.cli import run_parser, spec_from_args

        logs: list[str] = []

        def let_a_go():
            while not any("waiting" in x for x in logs):
                time.sleep(0.05)
            release.write_text("go")

        t = threading.Thread(target=let_a_go, daemon=True)
        t.start()
        b = Runner(spec_from_args(run_parser().parse_args(args)), log=logs.append)
        assert b.run() == 0
        out_a = a.communicate(timeout=120)[0]
    finally:
        release.write_text("go")
        if a.poll() is None:
            a.kill()
    assert a.returncode == 0, out_a
    n = len(b.planned)
    done_a = next(x for x in out_a.splitlines() if x.startswith("computed"))
    done_b = next(x for x in logs if x.startswith("computed"))
    computed_a, computed_b = int(done_a.split()[1]), int(done_b.split()[1])
    assert computed_a + computed_b == n, (out_a, logs)  # every cell once, by one of the two
    assert computed_a >= 2 and "picked up" in done_b  # A's held cell came to B through the store
    s = Store(out / "results.sqlite")
    assert len([c for c in s.cells() if c["status"] == "done"]) == n
    assert not s.db.execute("SELECT * FROM claims").fetchall()


def test_recompute_forces_matching_cells(tmp_path, capsys):
    data = _images(tmp_path / "d")
    out = tmp_path / "out"
    assert _bicubic(data, out, "--suites", "bicubic;jpeg") == 0
    capsys.readouterr()
    assert _bicubic(data, out, "--suites", "bicubic;jpeg", "--recompute", "bicubic/d/jpeg*") == 0
    printed = capsys.readouterr().out
    assert "1 already" in printed and "3 to compute" in printed and "computed 3 cell" in printed  # jpeg = 3 suites
