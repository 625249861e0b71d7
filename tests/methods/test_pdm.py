"""PDM: exact match with the official outputs (SR nets and both netDeg configurations), the
release's key layout, strict loading, and a training loop in which every loss term works."""
from __future__ import annotations

import json
import operator
import shutil

import numpy as np
import pytest
import torch

from bench.adapter import BenchError, CheckpointError, count_parameters
from bench.conformance import smoke_training_data
from methods.pdm import DEG_FILES, PDM, SR_FILES
from tests._shared import requires_shared

TOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add contention on a shared CPU (100x slower under load)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def fixture_dir():
    return requires_shared("reference", "official", "fixtures", "pdm")


def fixture_method(sr: str) -> PDM:
    """fixture.json: EDSR and both netDeg full size; RRDBNet reduced to setting.nb blocks."""
    nets = {n["network"]: n for n in json.loads((fixture_dir() / "fixture.json").read_text())["networks"]}
    kw = {"n_blocks": nets["RRDBNet"]["fixture_config"]["setting"]["nb"]} if sr == "rrdb" else {}
    m = PDM(4, profile="paper", sr=sr, **kw)
    m.load_checkpoint(fixture_dir())
    return m


def maxdiff(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


@pytest.mark.parametrize("sr,ref", [("edsr", "reference_EDSR.npz"), ("rrdb", "reference_RRDBNet.npz")])
def test_sr_matches_official(sr, ref):
    m = fixture_method(sr)
    r = np.load(fixture_dir() / ref)
    lr = torch.from_numpy(r["lr"])
    d = maxdiff(m.forward_unclamped(lr), r["sr"])
    single = PDM(4, profile="paper", sr=sr, n_blocks=m.arch["n_blocks"])
    single.load_checkpoint(fixture_dir() / SR_FILES[sr])  # the bare release file loads too
    d1 = maxdiff(single.forward_unclamped(lr[:1]), r["sr"][:1])
    print(f"pdm {sr} max|diff| batch {d:.3g}, single file + batch 1 {d1:.3g}")
    assert max(d, d1) <= TOL
    assert maxdiff(m.upscale(lr), np.clip(r["sr"], 0, 1)) <= TOL


@pytest.mark.parametrize("sr,deg,ref", [("rrdb", "track1", "reference_netDeg.npz"),
                                        ("edsr", "psnr", "reference_netDeg_psnr.npz")])
def test_degradation_matches_official(sr, deg, ref):
    m = fixture_method(sr)
    assert m.deg_kind == deg and m.deg_ready
    r = np.load(fixture_dir() / ref)
    hr, zk, zn = (torch.from_numpy(r[k]) for k in ("hr", "z_kernel", "z_noise"))
    diffs = {
        "lr": maxdiff(m.degrade(hr, clamp=False, z_kernel=zk, z_noise=zn), r["lr"]),
        # the official draws: torch.manual_seed(1234), then randn for z_kernel, then for z_noise
        "lr (seed 1234 replay)": maxdiff(m.degrade(hr, torch.Generator().manual_seed(1234), clamp=False), r["lr"]),
        "lr_zero_z": maxdiff(m.degrade(hr, noise=False, clamp=False), r["lr_zero_z"]),
    }
    with torch.no_grad():
        lr, k, n = m.net_deg(hr, zk, zn)
        diffs.update(kernel=maxdiff(k, r["kernel"]), noise=maxdiff(n, r["noise"]))
        m.net_deg.train()  # the training-path synthesis: batch-statistics BatchNorm
        lr, k, n = m.net_deg(hr, zk, zn)
        m.net_deg.eval()
    diffs.update(lr_trainbn=maxdiff(lr, r["lr_trainbn"]), kernel_trainbn=maxdiff(k, r["kernel_trainbn"]),
                 noise_trainbn=maxdiff(n, r["noise_trainbn"]))
    print(f"pdm netDeg {deg} max|diff| " + ", ".join(f"{k} {v:.3g}" for k, v in diffs.items()))
    assert max(diffs.values()) <= TOL
    assert torch.equal(m.degrade(hr), m.degrade(hr).clamp(0, 1))


@pytest.mark.parametrize("sr", ["edsr", "rrdb"])
def test_paper_networks_have_release_keys_and_counts(sr):
    files = {f["file"]: f for f in json.loads((fixture_dir() / "keys.json").read_text())["files"]}
    with torch.device("meta"):  # shapes only; full RRDBNet weights are not needed
        m = PDM(4, profile="paper", sr=sr, device="meta")
    for net, name in ((m.net_sr, SR_FILES[sr]), (m.net_deg, DEG_FILES[m.deg_kind])):
        want = {k: tuple(s) for k, s, _ in files[name]["tensors"]}
        assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == want, name
        print(f"pdm {name}: {count_parameters(net):,} params (official {files[name]['n_params']:,})")
        assert count_parameters(net) == files[name]["n_params"]


@pytest.mark.parametrize("which", ["sr", "deg"])
def test_wrong_key_is_named(tmp_path, which):
    name = SR_FILES["edsr"] if which == "sr" else DEG_FILES["psnr"]
    shutil.copytree(fixture_dir(), tmp_path / "release")
    state = torch.load(tmp_path / "release" / name, weights_only=True)
    key = "head.0.weight" if which == "sr" else "deg_noise.deg_noise.11.weight"
    state[key.replace("weight", "wieght")] = state.pop(key)
    torch.save(state, tmp_path / "release" / name)
    m = PDM(4, profile="paper", sr="edsr")
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        m.load_checkpoint(tmp_path / "release")


def test_bad_inputs_get_one_clear_error(tmp_path):
    m = PDM(4, profile="smoke")
    with pytest.raises(CheckpointError, match="2020Track1-PSNR.pt"):
        m.load_checkpoint(tmp_path)  # empty folder
    with pytest.raises(BenchError, match="fit"):
        m.degrade(torch.rand(1, 3, 32, 32))
    with pytest.raises(BenchError, match="target_lr"):
        m.fit(smoke_training_data(PDM, 4).without_target(), m.default_budget())
    with pytest.raises(BenchError, match="sr="):
        PDM(4, sr="swinir")


@pytest.fixture(scope="module", params=["edsr", "rrdb"])
def fitted(request):
    m = PDM(4, profile="smoke", sr=request.param)
    report = m.fit(smoke_training_data(PDM, 4), m.default_budget())
    return m, report


def test_smoke_fit(fitted):
    m, report = fitted
    assert report.iterations == m.default_budget().iterations
    lr = torch.rand(2, 3, 13, 17)
    out = m.upscale(lr)
    assert out.shape == (2, 3, 52, 68) and torch.isfinite(out).all()
    lr_fake = m.degrade(torch.rand(2, 3, 32, 40))
    assert lr_fake.shape == (2, 3, 8, 10) and torch.isfinite(lr_fake).all()
    k = m.kernel()
    assert k.shape == (m.net_deg.deg_kernel.spec.ksize,) * 2 and abs(float(k.sum()) - 1) < 1e-5
    seen = set().union(*report.history)
    assert set(m.loss_targets()) <= seen, set(m.loss_targets()) - seen
    if m.sr_kind == "rrdb":  # two stages: netDeg alone first, then the SR net with netDeg frozen
        first, last = report.history[0], report.history[-1]
        assert "lr_adv" in first and "sr_pix" not in first and "sr_pix" in last and "lr_adv" not in last


def test_every_loss_term_is_nonzero_and_sends_gradient(fitted):
    m, _ = fitted
    g = torch.Generator().manual_seed(3)
    batch = {"hr": torch.rand(2, 3, 32, 32, generator=g), "lr": torch.rand(2, 3, 8, 8, generator=g)}
    terms = m.loss_terms(batch, generator=g)
    targets = m.loss_targets()
    assert set(terms) == set(targets)
    modules = [operator.attrgetter(p)(m) for ps in targets.values() for p in ps]
    for name, term in terms.items():
        assert torch.isfinite(term) and float(term.detach()) != 0.0, name
        for mod in modules:
            mod.zero_grad(set_to_none=True)
        term.backward(retain_graph=True)
        for path in targets[name]:
            grads = [p.grad for p in operator.attrgetter(path)(m).parameters() if p.grad is not None]
            assert any(gr.abs().sum() > 0 for gr in grads), f"{name} sends no gradient to {path}"


def test_checkpoint_round_trip(fitted, tmp_path):
    m, _ = fitted
    m.save_checkpoint(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / SR_FILES[m.sr_kind]).is_file()
    assert (tmp_path / "ckpt" / DEG_FILES[m.deg_kind]).is_file()
    m2 = PDM(4, profile="smoke", sr=m.sr_kind)
    m2.load_checkpoint(tmp_path / "ckpt")
    lr, hr = torch.rand(1, 3, 12, 12), torch.rand(2, 3, 32, 32)
    assert torch.equal(m.upscale(lr), m2.upscale(lr))
    assert torch.equal(m.degrade(hr), m2.degrade(hr))
    assert torch.equal(m.kernel(), m2.kernel())
