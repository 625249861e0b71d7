"""Locate the calibration data and official fixtures shared beside the repo.

CI and the developers' machines have them at ``../shared``; a user's clone has not,
so tests that need them skip with a reason (set UNPAIRED_SR_SHARED to point elsewhere).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    return Path(os.environ.get("UNPAIRED_SR_SHARED", REPO.parent / "shared"))


def requires_shared(*parts: str) -> Path:
    """Path under the shared folder, or skip the calling test with the reason."""
    p = shared_dir().joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not found: set UNPAIRED_SR_SHARED to the folder holding datasets/ and reference/")
    return p


def smooth_images(folder: Path, sizes, seed: int) -> Path:
    """PNG ``im{i}.png`` per (h, w) in ``sizes``: low-pass random images (bicubic-enlarged
    noise), so SR methods and metrics see image-like content."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        base = rng.random((h // 8, w // 8, 3))
        Image.fromarray((base * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC).save(folder / f"im{i}.png")
    return folder


def run_isolated(args: list[str], out: Path, env: dict, timeout: int = 600) -> tuple[int, str, str]:
    """``run_bench.py ARGS`` in a session of its own, output to files next to ``out``.

    Files, not pipes: after a SIGKILL the orphaned scoring workers would keep a pipe open;
    their whole process group is killed here instead. Returns (exit code, stdout, stderr).
    """
    log_out, log_err = out.parent / f"{out.name}.out", out.parent / f"{out.name}.err"
    with open(log_out, "w") as fo, open(log_err, "w") as fe:
        proc = subprocess.Popen([sys.executable, "run_bench.py", *args], cwd=REPO, env=env, stdout=fo, stderr=fe,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return code, log_out.read_text(), log_err.read_text()


def flat_state(obj, prefix: str = ""):
    """(dotted name, leaf) of a nested checkpoint (dicts, lists, tensors, numbers), for
    comparing two saved fits leaf by leaf."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from flat_state(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from flat_state(v, f"{prefix}.{i}")
    else:
        yield prefix, obj


def same_leaf(a, b) -> bool:
    import torch

    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and torch.equal(a, b)
    return a == b
