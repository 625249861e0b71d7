"""MSSR: exact match with the official outputs (both RRDBs and the validation ensemble, both
noise-injecting degradation generators with replayed draws), the official key layout,
strict loading, and a two-stage training loop in which every loss term works."""
from __future__ import annotations

import json
import operator
import shutil

import numpy as np
import pytest
import torch

from bench.adapter import BenchError, CheckpointError, count_parameters
from bench.conformance import smoke_training_data
from methods.mssr import GEN_FILES, MSSR, NoiseDraws
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
    return requires_shared("reference", "official", "fixtures", "mssr")


def fixture_method() -> MSSR:
    """fixture.json fixture_config: RRDB 1 block, HAN 2 RCAB per group at 16 features; DeResnet full."""
    cfg = json.loads((fixture_dir() / "fixture.json").read_text())["fixture_config"]
    m = MSSR(4, profile="paper", rrdb_nb=cfg["rrdb_nb"], han_nb=cfg["han_nresblocks"], han_nf=cfg["han_nfeats"])
    m.load_checkpoint(fixture_dir())
    return m


def maxdiff(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


def test_sr_ensemble_matches_official():
    m = fixture_method()
    r = np.load(fixture_dir() / "reference_RRDBNet_ensemble.npz")
    lr = torch.from_numpy(r["lr"])
    g1, g2 = m.branches(lr)
    diffs = {"g1": maxdiff(g1, r["sr_g1"]), "g2": maxdiff(g2, r["sr_g2"]),
             "upscale vs sr_ensemble_val": maxdiff(m.upscale(lr), r["sr_ensemble_val"]),
             "test path vs sr_ensemble": maxdiff(m.forward_test_path(lr[1:]), r["sr_ensemble"][1:])}
    print("mssr max|diff| " + ", ".join(f"{k} {v:.3g}" for k, v in diffs.items()))
    assert max(diffs.values()) <= TOL
    assert float(r["ensemble_weight"]) == 0.5


@pytest.mark.parametrize("which,ref", [("deresnet", "reference_DeResnet.npz"), ("han", "reference_HAN.npz")])
def test_degradation_generators_match_official(which, ref):
    m = fixture_method()
    r = np.load(fixture_dir() / ref)
    hr = torch.from_numpy(r["hr"])
    assert float(r["noise_std"]) == pytest.approx(0.1)
    draws = list(torch.from_numpy(r["noise_draws"]))
    diffs = {
        "lr (stored draws)": maxdiff(m.degrade(hr, which=which, clamp=False, draws=draws), r["lr"]),
        # torch.manual_seed(1234) right before the forward, CPU draws in forward order
        "lr (seed 1234 replay)": maxdiff(m.degrade(hr, torch.Generator().manual_seed(1234), which=which,
                                                   clamp=False), r["lr"]),
        "lr_nonoise": maxdiff(m.degrade(hr, which=which, noise=False, clamp=False), r["lr_nonoise"]),
    }
    print(f"mssr {which} max|diff| " + ", ".join(f"{k} {v:.3g}" for k, v in diffs.items()))
    assert max(diffs.values()) <= TOL


def test_degradation_pair_shares_one_stream():
    """ContSR.train(): HAN (img1) then DeResnet (img2) on one seeded CPU stream."""
    m = fixture_method()
    r = np.load(fixture_dir() / "reference_degradation_pair.npz")
    hr = torch.from_numpy(r["hr"])
    draws = NoiseDraws(torch.Generator().manual_seed(1234))
    with torch.no_grad():
        img1, img2 = m.han(hr, draws), m.deresnet(hr, draws)
    d1, d2 = maxdiff(img1, r["img1_han"]), maxdiff(img2, r["img2_deresnet"])
    print(f"mssr pair max|diff| img1 {d1:.3g} img2 {d2:.3g}")
    assert max(d1, d2) <= TOL
    mix = m.degrade(hr, torch.Generator().manual_seed(1234))  # each image is one of the two
    for i in range(hr.shape[0]):
        assert min(maxdiff(mix[i], img1[i].clamp(0, 1)), maxdiff(mix[i], img2[i].clamp(0, 1))) <= TOL


def test_paper_networks_have_official_keys_and_counts():
    files = {f["file"]: f for f in json.loads((fixture_dir() / "keys.json").read_text())["files"]}
    with torch.device("meta"):  # shapes only: the full HAN alone has 63M parameters
        m = MSSR(4, profile="paper", device="meta")
    nets = {("300g1.ckpt", None): m.g1, ("300g2.ckpt", None): m.g2,
            (GEN_FILES["deresnet"], "model_g_state_dict"): m.deresnet,
            (GEN_FILES["han"], "model_g_state_dict"): m.han,
            (GEN_FILES["deresnet"], "models_d_state_dict"): m.d_deresnet}
    for (name, entry), net in nets.items():
        spec = files[name] if entry is None else files[name][entry]
        want = {k: tuple(s) for k, s, _ in spec["tensors"]}
        assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == want, (name, entry)
        print(f"mssr {name} {entry or ''}: {count_parameters(net):,} params (official {spec['n_params']:,})")
        assert count_parameters(net) == spec["n_params"]


@pytest.mark.parametrize("which", ["g1", "han"])
def test_wrong_key_is_named(tmp_path, which):
    shutil.copytree(fixture_dir(), tmp_path / "run")
    if which == "g1":
        f, entry, key = tmp_path / "run" / "300g1.ckpt", "params", "conv_first.weight"
    else:
        f, entry, key = tmp_path / "run" / GEN_FILES["han"], "model_g_state_dict", "model.la.gamma"
    blob = torch.load(f, weights_only=True)
    blob[entry][key.replace("weight", "wieght").replace("gamma", "gama")] = blob[entry].pop(key)
    torch.save(blob, f)
    m = MSSR(4, profile="paper", rrdb_nb=1, han_nb=2, han_nf=16)
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        m.load_checkpoint(tmp_path / "run")


def test_bad_inputs_get_one_clear_error(tmp_path):
    m = MSSR(4, profile="smoke")
    with pytest.raises(CheckpointError, match="folder"):
        m.load_checkpoint(fixture_dir() / "300g1.ckpt")
    with pytest.raises(CheckpointError, match="g1.ckpt"):
        m.load_checkpoint(tmp_path)
    with pytest.raises(BenchError, match="fit"):
        m.degrade(torch.rand(1, 3, 16, 16))
    with pytest.raises(BenchError, match="target_lr"):
        m.fit(smoke_training_data(MSSR, 4).without_target(), m.default_budget())


@pytest.fixture(scope="module")
def fitted():
    m = MSSR(4, profile="smoke")
    report = m.fit(smoke_training_data(MSSR, 4), m.default_budget())
    return m, report


def test_smoke_fit_runs_both_stages(fitted):
    m, report = fitted
    assert report.iterations == m.default_budget().iterations
    first, last = report.history[0], report.history[-1]
    assert "han_color" in first and "g1_sup" not in first  # degradation generators first
    assert "g1_sup" in last and "han_color" not in last  # then the SR networks
    assert set(m.loss_targets()) <= set().union(*report.history)
    out = m.upscale(torch.rand(2, 3, 11, 13))
    assert out.shape == (2, 3, 44, 52) and torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    for which in ("han", "deresnet", "mixture"):
        lr = m.degrade(torch.rand(2, 3, 32, 40), which=which)
        assert lr.shape == (2, 3, 8, 10) and torch.isfinite(lr).all()


def test_every_loss_term_is_nonzero_and_sends_gradient(fitted):
    m, _ = fitted
    g = torch.Generator().manual_seed(3)
    batch = {"hr": torch.rand(2, 3, 32, 32, generator=g), "lr": torch.rand(2, 3, 8, 8, generator=g)}
    terms = m.loss_terms(batch, generator=g)
    targets = m.loss_targets()
    assert set(terms) == set(targets)
    for name, term in terms.items():
        assert torch.isfinite(term) and float(term.detach()) != 0.0, name
        for mod in (m.g1, m.g2, m.han, m.deresnet, m.d_han, m.d_deresnet):
            mod.zero_grad(set_to_none=True)
        term.backward(retain_graph=True)
        for path in targets[name]:
            grads = [p.grad for p in operator.attrgetter(path)(m).parameters() if p.grad is not None]
            assert any(gr.abs().sum() > 0 for gr in grads), f"{name} sends no gradient to {path}"
    # the noise-injection weights are trained too (their own learning rate upstream)
    terms = m.loss_terms(batch, generator=g)
    m.deresnet.zero_grad(set_to_none=True)
    terms["deresnet_color"].backward()
    assert m.deresnet.noises[0].w.grad.abs().sum() > 0


def test_checkpoint_round_trip(fitted, tmp_path):
    m, _ = fitted
    m.save_checkpoint(tmp_path / "ckpt")
    for rel in (f"{m.sr_iterations}g1.ckpt", f"{m.sr_iterations}g2.ckpt", *GEN_FILES.values()):
        assert (tmp_path / "ckpt" / rel).is_file(), rel
    m2 = MSSR(4, profile="smoke")
    m2.load_checkpoint(tmp_path / "ckpt")
    lr, hr = torch.rand(1, 3, 12, 12), torch.rand(2, 3, 32, 32)
    assert torch.equal(m.upscale(lr), m2.upscale(lr))
    for which in ("han", "deresnet", "mixture"):
        assert torch.equal(m.degrade(hr, which=which), m2.degrade(hr, which=which))
