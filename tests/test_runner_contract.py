"""The runner holds every ``upscale`` output to the contract check-adapter verifies."""
from __future__ import annotations

import csv

import numpy as np
import torch
from PIL import Image

from bench.adapter import Method, MethodInfo


class _Learned(Method):
    """A third-party learned method (a network, a no-op fit)."""

    def __init__(self, scale, context=None, **kw):
        super().__init__(scale, context, **kw)
        self.net = torch.nn.Conv2d(3, 3, 1)

    def network(self):
        return self.net


class TooBright(_Learned):
    """Overshoots to 1.6, e.g. a forgotten final clamp."""

    info = MethodInfo(name="my-sr", title="overshooting test adapter", citation="test", family="baseline",
                      scales=(4,))

    def upscale(self, lr):
        out = torch.nn.functional.interpolate(lr, scale_factor=self.scale, mode="nearest")
        out[..., 0, 0] = 1.6
        return out


class WrongSize(_Learned):
    info = MethodInfo(name="my-sr-size", title="test adapter, one pixel short", citation="test",
                      family="baseline", scales=(4,))

    def upscale(self, lr):
        return torch.nn.functional.interpolate(lr, scale_factor=self.scale, mode="nearest")[..., :-1]


def _folder(tmp_path):
    folder = tmp_path / "hr"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def test_out_of_range_output_fails_its_cell_and_keeps_earlier_results(tmp_path, capsys):
    from bench.cli import main
    from bench.store import Store

    data, out = _folder(tmp_path), tmp_path / "out"
    common = ["--datasets", f"tiny={data}", "--suites", "bicubic", "--metrics", "psnr", "--no-timing",
              "--profile", "smoke", "--jobs", "1", "--out", str(out)]
    assert main(["--methods", "bicubic", *common]) == 0
    before = sorted(map(tuple, (r.values() for r in Store(out / "results.sqlite").records())))
    assert before

    code = main(["--methods", "bicubic", "--adapter", "tests.test_runner_contract:TooBright",
                 "--adapter", "tests.test_runner_contract:WrongSize", *common])
    err = capsys.readouterr().err
    assert code == 1, err
    assert ("my-sr on tiny bicubic x4: my-sr returned values up to 1.6, outside [0,1]; upscale must return [0,1]"
            in err), err
    assert "my-sr-size on tiny bicubic x4: my-sr-size returned shape (1, 3, 32, 39)" in err, err
    store = Store(out / "results.sqlite")
    assert sorted(map(tuple, (r.values() for r in store.records()))) == before  # nothing scored, nothing lost
    failed = {c["method"]: c["error"] for c in store.cells() if c["status"] == "failed"}
    assert set(failed) == {"my-sr", "my-sr-size"} and "outside [0,1]" in failed["my-sr"]
    assert [c["method"] for c in store.cells() if c["status"] == "done"] == ["bicubic"]
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert {r["method"] for r in rows} == {"bicubic"}
