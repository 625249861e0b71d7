"""check-adapter: passes for every registered method, fails clearly on broken ones."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bench.adapter import REGISTRY, Method, MethodInfo
from bench.conformance import check_adapter

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", REGISTRY.names())
def test_registered_method_conforms(name):
    cls = REGISTRY.get(name)
    scale = 4 if 4 in cls.info.scales else cls.info.scales[0]
    results = check_adapter(name, scale=scale, profile="smoke")
    failed = [f"{r.name}: {r.detail}" for r in results if not r.ok]
    assert not failed, failed


def _info(name):
    return MethodInfo(name=name, title=name, citation="test", family="classical", scales=(2,))


class WrongShape(Method):
    info = _info("broken-shape")

    def upscale(self, lr):
        return lr.clamp(0, 1)


class OutOfRange(Method):
    info = _info("broken-range")

    def upscale(self, lr):
        return torch.nn.functional.interpolate(lr, scale_factor=2) * 3 - 1


class MakesNaN(Method):
    info = _info("broken-nan")

    def upscale(self, lr):
        out = torch.nn.functional.interpolate(lr, scale_factor=2)
        out[..., 0, 0] = float("nan")
        return out


class BatchDependent(Method):
    info = _info("broken-batch")

    def upscale(self, lr):  # normalises by batch statistics: images leak into each other
        out = torch.nn.functional.interpolate(lr, scale_factor=2)
        return (out - out.mean() + 0.5).clamp(0, 1)


class Random(Method):
    info = _info("broken-random")

    def upscale(self, lr):
        out = torch.nn.functional.interpolate(lr, scale_factor=2)
        return (out + 0.01 * torch.rand_like(out)).clamp(0, 1)


class BadCheckpoint(Method):
    info = MethodInfo(name="broken-ckpt", title="x", citation="x", family="baseline", scales=(2,))
    budgets = {"smoke": __import__("bench.adapter", fromlist=["Budget"]).Budget(1, 1, 8)}

    def __init__(self, scale, **kw):
        super().__init__(scale, **kw)
        self.net = torch.nn.Conv2d(3, 12, 3, padding=1)
        torch.nn.init.uniform_(self.net.weight, -0.1, 0.1)

    def network(self):
        return self.net

    def save_checkpoint(self, path):  # forgets the weights: a reload gives other outputs
        torch.save({k: torch.zeros_like(v) for k, v in self.net.state_dict().items()}, path)

    @torch.no_grad()
    def upscale(self, lr):
        return torch.nn.functional.pixel_shuffle(self.net(lr), 2).sigmoid()


@pytest.mark.parametrize("cls,check,words", [
    (WrongShape, "output shape", "expected (2, 3, 42, 54)"),
    (OutOfRange, "output shape", "expected within [0,1]"),
    (MakesNaN, "output shape", "NaN"),
    (BatchDependent, "batch of two", "differs from two single calls"),
    (Random, "deterministic", "outputs"),
    (BadCheckpoint, "checkpoint", "round trip changed outputs"),
])
def test_broken_adapter_fails_with_reason(cls, check, words):
    results = check_adapter(cls, scale=2)
    bad = [r for r in results if r.name.startswith(check)]
    assert bad and not bad[0].ok, [(r.name, r.ok) for r in results]
    assert words in bad[0].detail


def test_cli_check_adapter_exit_codes():
    ok = subprocess.run([sys.executable, "run_bench.py", "check-adapter", "bicubic"], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 failed" in ok.stdout
    bad = subprocess.run([sys.executable, "run_bench.py", "check-adapter", "tests.test_conformance:WrongShape",
                          "--scale", "2"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert "FAIL  output shape" in bad.stdout
    unknown = subprocess.run([sys.executable, "run_bench.py", "check-adapter", "bicubc"], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert unknown.returncode == 2 and "did you mean 'bicubic'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
