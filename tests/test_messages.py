"""User-facing messages are whole, self-contained lines that say what was expected."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from bench.adapter import BenchError, CheckpointError, load_adapter, load_torch_file
from bench.metrics import psnr


def test_size_mismatch_message_is_self_contained():
    sr, hr = np.zeros((40, 48, 3), np.uint8), np.zeros((41, 48, 3), np.uint8)
    with pytest.raises(BenchError) as ei:
        psnr(sr, hr, crop=4, channel="y")
    msg = str(ei.value)
    assert "DESIGN" not in msg and "\n" not in msg
    assert "48x40" in msg and "48x41" in msg and "multiple of the scale" in msg


def test_adapter_with_missing_attribute_lists_the_methods_it_has():
    with pytest.raises(BenchError) as ei:
        load_adapter("tests.test_conformance:Missing")
    msg = str(ei.value)
    assert "has no attribute 'Missing'" in msg and "not a Method subclass" not in msg
    assert "WrongShape" in msg and "OutOfRange" in msg  # the Method subclasses the module does define
    with pytest.raises(BenchError) as ei:
        load_adapter("tests.test_conformance:WrongShap")
    assert "did you mean 'WrongShape'" in str(ei.value)
    with pytest.raises(BenchError) as ei:
        load_adapter("tests.test_conformance:REPO")  # exists, but is a path
    assert "not a subclass of bench.adapter.Method" in str(ei.value)


def test_random_bytes_checkpoint_is_one_whole_line_without_warnings(tmp_path, recwarn):
    junk = tmp_path / "model.pth"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError) as ei:
        load_torch_file(junk)
    msg = str(ei.value)
    assert "\n" not in msg and "not a PyTorch checkpoint" in msg and "expected the file as released" in msg
    assert "weights_only" not in msg and "PyTorch 2.6" not in msg  # not torch's advice, cut mid-sentence
    good = tmp_path / "good.pth"
    torch.save({"w": torch.zeros(3)}, good)
    trunc = tmp_path / "trunc.pth"
    trunc.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(CheckpointError) as ei:
        load_torch_file(trunc)
    msg = str(ei.value)
    assert "damaged PyTorch checkpoint" in msg and "truncated" in msg and "miniz" not in msg
    assert not [w for w in recwarn.list if issubclass(w.category, UserWarning)], [str(w.message) for w in recwarn]
    assert set(load_torch_file(good)) == {"w"}


def test_partial_dataset_warning_is_one_clean_line(tmp_path, capsys, monkeypatch):
    """RealSR's spec expects 100 pairs per scale and tolerates fewer (count_strict = false)."""
    from bench.cli import main

    monkeypatch.setenv("UNPAIRED_SR_BENCH_NO_PROGRESS", "1")  # stderr holds only messages, no progress bar

    root = tmp_path / "RealSR"
    rng = np.random.default_rng(0)
    for cam in ("Canon", "Nikon"):
        folder = root / cam / "Test" / "4"
        folder.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{cam}_001_HR.png")
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{cam}_001_LR4.png")
    code = main(["--methods", "bicubic", "--datasets", f"RealSR={root}", "--metrics", "psnr", "--no-timing", "--jobs", "1",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "RealSR" in ln]
    assert len(lines) == 1, err
    assert lines[0].startswith("warning: dataset RealSR") and "expects 100" in lines[0]
    assert "UserWarning" not in err and "warnings.warn" not in err and ".py:" not in err
