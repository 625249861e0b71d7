"""Learning curves: a probed fit trains exactly like an unprobed one, and the command writes its outputs."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from bench.adapter import REGISTRY
from bench.cli import main as cli_main
from bench.conformance import smoke_training_data
from bench.curves import _ModeGuard, probe_steps
from bench.train import TrainingProbe, probing


def test_probe_steps_are_even_and_end_at_the_budget():
    assert probe_steps(250, 5) == [50, 100, 150, 200, 250]
    assert probe_steps(3, 8) == [1, 2, 3]
    assert probe_steps(0, 4) == []


def _smoke_fit(name: str, callback=None):
    """Fit ``name`` at smoke; with ``callback`` it is called after every step (as a probe)."""
    cls = REGISTRY.get(name)
    m = cls(4, profile="smoke")
    data = smoke_training_data(cls, 4, seed=1)
    data = data if name == "oracle" else data.without_degradation()
    budget = m.default_budget()
    if callback is None:
        m.fit(data, budget)
        return m, None
    probe = TrainingProbe(range(1, budget.iterations + 1), lambda step, desc: callback(m, step))
    with probing(probe):
        m.fit(data, budget)
    assert probe.steps == budget.iterations
    return m, probe


@pytest.mark.parametrize("name", ["edsr-bicubic", "fssr", "pdm"])
def test_probed_fit_equals_unprobed_fit(name):
    """The probe scores the model mid-fit the way ``curves`` does (eval mode via upscale and
    degrade, under a forked global RNG); the weights at the end must be bit-identical to
    those of a fit nobody watched."""
    seen = []

    def look(m, step):
        guard = _ModeGuard(m)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            m.upscale(torch.rand(1, 3, 9, 11))
            if hasattr(m, "degrade"):
                m.degrade(torch.rand(1, 3, 36, 44), generator=torch.Generator().manual_seed(step))
        guard.restore()
        seen.append(step)

    plain, _ = _smoke_fit(name)
    probed, probe = _smoke_fit(name, look)
    assert seen == list(range(1, probe.steps + 1))
    a, b = plain.network().state_dict(), probed.network().state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{name}: {k} differs after a probed fit"


def test_curves_command_writes_tables_and_plots(tmp_path, capsys):
    out = tmp_path / "cv"
    rc = cli_main(["curves", "--methods", "fssr", "--domain", "noise:sigma=15", "--profile", "smoke",
                   "--points", "2", "--draws", "8", "--out", str(out), "--device", "cpu"])
    assert rc == 0
    frame = pd.read_csv(out / "curves.csv")
    fssr = frame[frame.method == "fssr"]
    assert sorted(fssr.step.unique()) == [2, 4]
    assert {"psnr", "det_psnr", "sigma_gen"} <= set(fssr.metric)
    base = frame[frame.method == "bicubic"]
    assert sorted(base.metric) == ["det_psnr", "psnr"]  # bicubic PSNR, and the bicubic assumption's fidelity
    assert base[base.metric == "det_psnr"].value.iloc[0] == 100.0  # noise:sigma=15's clean LR is bicubic
    assert (out / "curves.md").read_text().count("## fssr x4 on `noise:sigma=15`") == 1
    assert list(out.glob("curve_fssr_*.png"))


def test_curves_rejects_classical_methods_and_bad_factors(tmp_path, capsys):
    assert cli_main(["curves", "--methods", "edsr-bicubic", "--factors", "0", "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "--factors '0'" in err and "Traceback" not in err
    rc = cli_main(["curves", "--methods", "bicubic", "--profile", "smoke", "--out", str(tmp_path / "b"),
                   "--device", "cpu"])
    assert rc == 1  # the job fails with "not trained"; the command still renders what it has
