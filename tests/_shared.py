"""Locate the calibration data and official fixtures shared beside the repo.

CI and the developers' machines have them at ``../shared``; a user's clone has not,
so tests that need them skip with a reason (set UNPAIRED_SR_SHARED to point elsewhere).
"""
from __future__ import annotations

import os
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
