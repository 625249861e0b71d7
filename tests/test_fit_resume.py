"""Resumable fits: every learned method declares its training state (bench/resume.py), and
a fit interrupted at a seeded step, then run again, resumes there and ends with the same
weights, bit for bit, as a fit that was never interrupted.

In-process here (the interruption is an exception raised after a seeded step, before that
step's save); tests/test_fit_command.py kills real processes with SIGKILL."""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.adapter import REGISTRY, MethodContext, TrainingData, create_method
from bench.train import LoopOptions, TrainingProbe, loop_options, probing
from tests._shared import flat_state, same_leaf

ITERATIONS = 6  # long enough for a mid-stage step in each of two stages


class Crash(Exception):
    pass


def learned() -> list[str]:
    """Every learned method but the oracle (edsr-bicubic's fit) and the two that
    tests/test_fit_command.py kills with SIGKILL mid-stage and at their boundaries."""
    return [c.info.name for c in REGISTRY.all() if c.info.learned and c.info.name not in ("oracle", "fssr",
                                                                                         "dasr-wang")]


def data_for(name: str) -> TrainingData:
    cls = REGISTRY.get(name)
    rng = np.random.default_rng(7)
    hr = tuple(rng.random((64, 64, 3), dtype=np.float32) for _ in range(4))
    kw = {}
    if cls.info.needs_target_lr:
        kw = dict(target_lr=tuple(rng.random((16, 16, 3), dtype=np.float32) for _ in range(4)),
                  target_ids=tuple(f"t{i}" for i in range(4)))
    return TrainingData(scale=4, source_hr=hr, source_ids=tuple(f"s{i}" for i in range(4)), seed=0, **kw)


def fit(name: str, folder: Path | None, *, save_every: int = 1, crash_at: int | None = None,
        log: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The final weights of a fresh smoke fit of ``name`` (None if it crashed)."""
    method = create_method(name, 4, MethodContext(profile="smoke"))
    budget = dataclasses.replace(method.default_budget(), iterations=ITERATIONS)
    opts = LoopOptions(resume_dir=str(folder) if folder else None, save_every=save_every,
                       log=(log.append if log is not None else lambda s: None))

    def crash(n: int, desc: str) -> None:
        raise Crash(n)

    with loop_options(opts), probing(TrainingProbe([crash_at] if crash_at else [], crash)):
        try:
            method.fit(data_for(name), budget)
        except Crash:
            return None
    path = Path(tempfile.mkdtemp()) / "weights.pt"
    method.save_checkpoint(path)
    files = sorted(path.rglob("*")) if path.is_dir() else [path]  # a release layout is a folder
    return {f"{f.name}:{k}": v for f in files if f.is_file()
            for k, v in flat_state(torch.load(f, map_location="cpu", weights_only=True))}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert same_leaf(a[k], b[k]), f"{k} differs after resume"


@pytest.mark.parametrize("name", learned())
def test_resume_mid_stage_is_bit_exact(name, tmp_path):
    whole = fit(name, None)
    k = int(np.random.default_rng(sum(map(ord, name))).integers(2, ITERATIONS - 1))  # a seeded moment
    assert fit(name, tmp_path / "state", crash_at=k) is None
    log: list[str] = []
    resumed = fit(name, tmp_path / "state", log=log)
    assert any(f"resumed from iteration {k - 1} of {ITERATIONS}" in line for line in log), log
    assert_same(resumed, whole)


def test_state_files_are_atomic_and_the_newest_two_kept(tmp_path):
    from bench.resume import StateFiles

    files = StateFiles(tmp_path)
    for step in range(5):
        files.save(step, {"x": torch.tensor([step])})
    assert [p.name for p in files.files()] == ["state-0000000003.pt", "state-0000000004.pt"]
    files.files()[-1].write_bytes(b"truncated")  # a damaged newest file falls back to the one before
    notes: list[str] = []
    assert int(files.latest(notes.append)["x"]) == 3 and "does not load" in notes[0]


def test_resuming_with_another_thread_count_says_it_is_not_bit_exact(tmp_path):
    n = torch.get_num_threads()
    assert fit("edsr-bicubic", tmp_path / "state", crash_at=3) is None
    log: list[str] = []
    torch.set_num_threads(n + 1)
    try:
        fit("edsr-bicubic", tmp_path / "state", log=log)
    finally:
        torch.set_num_threads(n)
    assert any(f"saved with {n} torch threads and resumes with {n + 1}" in line and f"--threads {n}" in line
               for line in log), log
