"""CRL-SR (no public code, no fixture): training terms, degradations, fit and round trip."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from bench.adapter import BenchError, CheckpointError, TrainingData
from methods.crl_sr import CRLSR, patch_nce

os.environ.setdefault("UNPAIRED_SR_BENCH_NO_PROGRESS", "1")


def tiny_data(seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    hr = tuple(rng.random((64, 64, 3), dtype=np.float32) for _ in range(4))
    return TrainingData(scale=4, source_hr=hr, source_ids=tuple(f"hr{i}" for i in range(4)), seed=seed)


def test_patch_nce_prefers_matching_locations():
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(2, 8, 16, generator=g), dim=-1)
    matched = patch_nce(q, q)
    shuffled = patch_nce(q, q[:, torch.randperm(8, generator=g)])
    assert matched < 0.1 < shuffled
    # the conditional negative only ever adds to the loss
    assert patch_nce(q, q, extra_neg=q) > matched


def test_degradations_are_multimodal_and_spatially_variant():
    m = CRLSR(4, profile="smoke")
    m.sv_fraction = 1.0
    hr = torch.full((4, 3, 64, 64), 0.5)
    hr[..., ::2, :] = 0.9  # a fine pattern that blur removes to different degrees
    lr = m.degrade(hr, torch.Generator().manual_seed(3))
    assert lr.shape == (4, 3, 16, 16) and 0 <= lr.min() and lr.max() <= 1
    # noise and blur differ per image
    assert len({round(float(x.std()), 4) for x in lr}) == 4
    # with every image spatially variant, the residual pattern differs between image halves somewhere
    left, right = lr[..., :, :6], lr[..., :, -6:]
    assert (left.std(dim=(1, 2, 3)) - right.std(dim=(1, 2, 3))).abs().max() > 1e-3


def test_loss_terms_nonzero_and_send_gradient_where_they_should():
    m = CRLSR(4, profile="smoke")
    m.net.train()
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 64, 64, generator=g)
    lr = m.degrade(hr, g)
    terms = m.loss_terms(lr, hr, g)
    assert set(terms) == {"l1", "bidirectional", "conditional"}
    net = dict(m.net.named_parameters())
    heads = dict(m.heads.named_parameters())
    expect = {
        # term: (parameters that must get gradient, parameters that must not)
        "l1": (["encoder.head.weight", "body.0.body.0.weight", "refine.0.body.2.weight", "tail.weight"],
               ["encoder_hr.head.weight", "proj_hr.mlp.0.weight"]),
        "bidirectional": (["encoder.head.weight", "encoder_hr.head.weight", "proj_lr.mlp.2.weight",
                           "proj_hr.mlp.2.weight"], ["tail.weight", "refine.0.body.0.weight"]),
        "conditional": (["encoder.head.weight", "body.0.body.0.weight", "refine.0.body.2.weight", "tail.weight"],
                        ["encoder_hr.head.weight", "proj_hr.mlp.2.weight", "proj_lr.mlp.0.weight"]),
    }
    every = {**net, **heads}
    for name, term in terms.items():
        assert term.item() > 0, name
        yes, no = expect[name]
        grads = torch.autograd.grad(term, [every[p] for p in yes + no], retain_graph=True, allow_unused=True)
        for p, gr in zip(yes, grads[: len(yes)]):
            assert gr is not None and gr.abs().sum() > 0, f"{name} sends no gradient to {p}"
        for p, gr in zip(no, grads[len(yes):]):
            assert gr is None or gr.abs().sum() == 0, f"{name} must not train {p}"
    assert all(p.requires_grad for p in m.heads.parameters())  # restored after the CFR term


def test_smoke_fit_and_round_trip(tmp_path):
    m = CRLSR(4, profile="smoke")
    lr = torch.rand(2, 3, 9, 13, generator=torch.Generator().manual_seed(2))
    before = m.forward_unclamped(lr)
    rep = m.fit(tiny_data(), m.default_budget())
    assert rep.iterations == m.default_budget().iterations
    assert {"l1", "bidirectional", "conditional"} <= set(rep.history[-1])
    out = m.upscale(lr)
    assert out.shape == (2, 3, 36, 52) and torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    assert not torch.equal(before, m.forward_unclamped(lr))
    path = tmp_path / "crl_sr.pt"
    m.save_checkpoint(path)
    m2 = CRLSR(4, profile="smoke")
    m2.load_checkpoint(path)
    assert torch.equal(m.forward_unclamped(lr), m2.forward_unclamped(lr))
    # a checkpoint of another configuration is refused with the key named
    with pytest.raises(CheckpointError, match="body"):
        CRLSR(4, profile="smoke", n_body=2).load_checkpoint(path)


def test_bad_options_are_clear():
    with pytest.raises(BenchError, match="unknown architecture options"):
        CRLSR(4, profile="smoke", width=3)


def test_conformance():
    from bench.conformance import check_adapter

    failures = [r for r in check_adapter("crl-sr", scale=4, profile="smoke") if not r.ok]
    assert not failures, "; ".join(f"{r.name}: {r.detail}" for r in failures)
