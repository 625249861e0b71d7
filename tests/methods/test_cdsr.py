"""CDSR: exact equivalence with the official code's outputs, release layout, training terms."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from bench.adapter import BenchError, CheckpointError, TrainingData, count_parameters
from methods.cdsr import CDSRMethod, manet_kernels
from tests._shared import requires_shared

os.environ.setdefault("UNPAIRED_SR_BENCH_NO_PROGRESS", "1")
RELEASE = "model_492_psnr_36.17.pt"


def fixture_dir():
    return requires_shared("reference", "official", "fixtures", "cdsr")


def fixture_method() -> CDSRMethod:
    fx = fixture_dir()
    cfg = json.loads((fx / "fixture.json").read_text())
    m = CDSRMethod(cfg["scale"], profile="paper", **cfg["reduced"])
    m.load_checkpoint(fx / RELEASE)
    return m


def tiny_data(seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    hr = tuple(rng.random((64, 64, 3), dtype=np.float32) for _ in range(4))
    return TrainingData(scale=4, source_hr=hr, source_ids=tuple(f"hr{i}" for i in range(4)), seed=seed)


def test_official_equivalence():
    fx = fixture_dir()
    m = fixture_method()
    ref = np.load(fx / "reference.npz")
    lr = torch.from_numpy(ref["lr"])
    sr_diff = (m.forward_unclamped(lr) - torch.from_numpy(ref["sr"])).abs().max().item()
    emb = torch.from_numpy(ref["embedding"])
    emb_rel = ((m.embedding(lr) - emb).abs().max() / emb.abs().max()).item()
    print(f"cdsr fixture: sr max abs diff {sr_diff:.3g}, embedding max rel diff {emb_rel:.3g}")
    assert sr_diff <= 1e-5
    assert emb_rel <= 1e-5


def test_paper_network_matches_release_keys_and_counts():
    keys = json.loads((fixture_dir() / "keys.json").read_text())
    m = CDSRMethod(4, profile="paper")
    state = m.network().state_dict()
    want = [(t["key"], tuple(t["shape"])) for t in keys["tensors"]]
    assert [(k, tuple(v.shape)) for k, v in state.items()] == want
    assert count_parameters(m.network()) == keys["n_parameters"] == 13_253_330
    assert count_parameters(state) == keys["n_values"]
    # parameters that reach the SR output (official/cdsr.md: 13,121,746 at x4; E.encoder_q.mlp is unused)
    net = m.network().eval()
    net(torch.rand(1, 3, 12, 12)).sum().backward()
    used = sum(p.numel() for p in net.parameters() if p.grad is not None)
    print(f"cdsr x4 paper: {count_parameters(net)} parameters, {used} reach the output, "
          f"MoCo key encoder (dropped by the release) {count_parameters(m.moco.encoder_k)}")
    assert used == 13_121_746
    assert count_parameters(m.moco.encoder_k) == 2_934_592


def test_wrong_key_is_named(tmp_path):
    state = torch.load(fixture_dir() / RELEASE, map_location="cpu", weights_only=True)
    key = "G.RRDB_trunk.0.SFT.dab.da_conv1.sf_attn.gamma"
    state["G.RRDB_trunk.0.SFT.dab.da_conv1.sf_attn.gama"] = state.pop(key)
    bad = tmp_path / "model_1_psnr_0.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match=r"sf_attn\.gam"):
        CDSRMethod(4, profile="paper", nb=2).load_checkpoint(bad)


def test_full_training_dict_also_loads(tmp_path):
    """A state dict that still holds the MoCo key encoder and queue (strict=False in the official loader)."""
    m = fixture_method()
    full = dict(m.network().state_dict())
    full.update({f"E.{k}": v * 0 + 1 for k, v in m.moco.state_dict().items() if k != "queue_ptr"})
    full["E.queue_ptr"] = torch.tensor([3])
    path = tmp_path / "model_2_full.pt"
    torch.save(full, path)
    m2 = CDSRMethod(4, profile="paper", nb=2)
    m2.load_checkpoint(path)
    assert int(m2.moco.queue_ptr) == 3 and torch.all(m2.moco.queue == 1)


def test_kernels_match_the_benchmark_manet_kernels():
    from bench.degrade.kernels import manet_kernel, manet_params

    for s in (2, 3, 4):
        params = manet_params(s)
        v1, v2, th = (torch.tensor([p[i] for p in params], dtype=torch.float64) for i in range(3))
        ours = manet_kernels(v1, v2, th, s).numpy()
        ref = np.stack([manet_kernel(i + 1, s) for i in range(len(params))])
        assert np.abs(ours - ref).max() < 1e-7


def test_small_input_is_a_clear_error():
    with pytest.raises(BenchError, match="12 pixels"):
        CDSRMethod(4, profile="smoke").upscale(torch.rand(1, 3, 11, 20))


def test_loss_terms_nonzero_and_send_gradient():
    m = CDSRMethod(4, profile="smoke")
    m.net.train()
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(3, 2, 3, 96, 96, generator=g)
    lr = m.degrade_pairs(hr, g)
    assert lr.shape == (3, 2, 3, 24, 24)
    # a few queue updates so that the queue holds real keys, as in training
    for _ in range(3):
        terms, k = m.loss_terms(lr, hr[:, 0])
        m.moco.enqueue(k)
    groups = {
        "l1": ["G.conv_first.weight", "G.RRDB_trunk.0.SFT.dab.da_conv1.kernel.2.weight", "G.upsampler.0.weight",
               "E.encoder_q.feature_bank.weight", "E.encoder_q.fc_q.weight", "E.encoder_q.pconv1.conv1.weight"],
        "contrastive": ["E.encoder_q.mlp.2.weight", "E.encoder_q.feature_bank.weight",
                        "E.encoder_q.conv1.conv1.weight"],
    }
    params = dict(m.net.named_parameters())
    for name, term in terms.items():
        assert term.item() > 0, name
        grads = torch.autograd.grad(term, [params[p] for p in groups[name]], retain_graph=True, allow_unused=True)
        for p, gr in zip(groups[name], grads):
            assert gr is not None and gr.abs().sum() > 0, f"{name} sends no gradient to {p}"
    # the contrastive term must not reach the generator, nor anything the key encoder
    g_grad = torch.autograd.grad(terms["contrastive"], [params["G.conv_first.weight"]], retain_graph=True,
                                 allow_unused=True)[0]
    assert g_grad is None
    assert all(not p.requires_grad for p in m.moco.encoder_k.parameters())


def test_smoke_fit_and_round_trip(tmp_path):
    m = CDSRMethod(4, profile="smoke")
    before = m.upscale(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)))
    rep = m.fit(tiny_data(), m.default_budget())
    assert rep.iterations == m.default_budget().iterations
    assert all(np.isfinite(v) for h in rep.history for v in h.values())
    lr = torch.rand(2, 3, 13, 17, generator=torch.Generator().manual_seed(2))
    out = m.upscale(lr)
    assert out.shape == (2, 3, 52, 68) and torch.isfinite(out).all()
    assert 0 <= out.min() and out.max() <= 1
    assert not torch.equal(before, m.upscale(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))))
    path = tmp_path / "model_3_psnr_0.00.pt"
    m.save_checkpoint(path)
    assert set(torch.load(path, weights_only=True)) == set(m.network().state_dict())
    m2 = CDSRMethod(4, profile="smoke")
    m2.load_checkpoint(path)
    assert torch.equal(m.forward_unclamped(lr), m2.forward_unclamped(lr))


def test_fit_is_deterministic():
    outs = []
    for _ in range(2):
        m = CDSRMethod(4, profile="smoke")
        m.fit(tiny_data(3), m.default_budget())
        outs.append(m.forward_unclamped(torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))))
    assert torch.equal(outs[0], outs[1])


def test_conformance():
    from bench.conformance import check_adapter

    failures = [r for r in check_adapter("cdsr", scale=4, profile="smoke") if not r.ok]
    assert not failures, "; ".join(f"{r.name}: {r.detail}" for r in failures)
