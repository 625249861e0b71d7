"""DASR-Wang: official equivalence, release layout, checkpoint errors, training terms."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.adapter import CheckpointError, TrainingData, count_parameters
from bench.train import torch_generator
from methods.dasr_wang import BlindSR, DASRWang
from tests._shared import requires_shared

TOL = 1e-5


def fixture_dir():
    return requires_shared("reference", "official", "fixtures", "dasr-wang")


def fixture_method() -> tuple[DASRWang, dict]:
    fx = fixture_dir()
    cfg = json.loads((fx / "fixture.json").read_text())
    m = DASRWang(cfg["scale"], profile="paper", **cfg["reduced"])
    m.load_checkpoint(fx / cfg["release_file"])
    return m, cfg


def test_official_equivalence():
    m, _ = fixture_method()
    ref = np.load(fixture_dir() / "reference.npz")
    lr = torch.from_numpy(ref["lr"])
    sr = m.forward_unclamped(lr).numpy()
    emb = m.embedding(lr).numpy()
    d_sr = float(np.abs(sr - ref["sr"]).max())
    d_emb = float(np.abs(emb - ref["embedding"]).max() / np.abs(ref["embedding"]).max())
    print(f"dasr-wang fixture: max|sr diff| {d_sr:.3g}, max|embedding diff|/max|embedding| {d_emb:.3g}")
    assert sr.shape == ref["sr"].shape
    assert d_sr <= TOL, f"SR differs from the official output by {d_sr}"
    assert d_emb <= TOL, f"embedding differs from the official one by {d_emb} (relative)"
    # upscale is the same path, clamped
    up = m.upscale(lr).numpy()
    assert np.abs(up - np.clip(ref["sr"], 0, 1)).max() <= TOL


def test_full_size_keys_and_parameters():
    keys = json.loads((fixture_dir() / "keys.json").read_text())
    m = DASRWang(4, profile="paper")
    state = {k: v for k, v in m.net.state_dict().items() if not DASRWang._dropped_by_release(k)}
    want = {t["key"]: tuple(t["shape"]) for t in keys["tensors"]}
    assert {k: tuple(v.shape) for k, v in state.items()} == want
    params = {k: p for k, p in m.net.named_parameters() if not DASRWang._dropped_by_release(k)}
    n = sum(p.numel() for p in params.values())
    n_g = sum(p.numel() for k, p in params.items() if k.startswith("G."))
    print(f"dasr-wang x4 paper: {n:,} parameters (G {n_g:,}); keys.json {keys['n_parameters']:,}")
    assert n == keys["n_parameters"] == 5_969_307
    assert n_g == keys["parameters_by_prefix"]["G"]
    # the dropped MoCo parts exist in the training network
    assert "E.queue" in m.net.state_dict() and m.net.E.queue.shape == (256, 8192)


@pytest.mark.parametrize("scale,shape", [(2, (256, 64, 3, 3)), (3, (576, 64, 3, 3))])
def test_other_scales_follow_the_release_layout(scale, shape):
    net = BlindSR(scale, n_groups=1, n_blocks=1)
    state = net.state_dict()
    assert tuple(state["G.tail.0.0.weight"].shape) == shape
    assert "G.tail.0.2.weight" not in state  # one upsampling stage at x2 and x3
    out = net.eval()(torch.rand(1, 3, 9, 11) * 255)
    assert out.shape == (1, 3, 9 * scale, 11 * scale)


def test_wrong_key_is_named(tmp_path):
    fx = fixture_dir()
    state = torch.load(fx / "model_600.pt", map_location="cpu", weights_only=True)
    state["G.head.0.weight_renamed"] = state.pop("G.head.0.weight")
    bad = tmp_path / "model_600.pt"
    torch.save(state, bad)
    m = DASRWang(4, profile="paper", n_groups=2, n_blocks=2)
    with pytest.raises(CheckpointError) as err:
        m.load_checkpoint(bad)
    assert "G.head.0.weight" in str(err.value) and "G.head.0.weight_renamed" in str(err.value)
    # the release's own omissions are allowed, and nothing else
    del state["G.head.0.weight_renamed"]
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="G.head.0.weight"):
        m.load_checkpoint(bad)


def _data(seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    hr = tuple(rng.random((64, 64, 3)).astype(np.float32) for _ in range(4))
    return TrainingData(scale=4, source_hr=hr, source_ids=tuple(f"s{i}" for i in range(4)), seed=seed)


@pytest.fixture(scope="module")
def fitted():
    m = DASRWang(4, profile="smoke", degradation="aniso")
    report = m.fit(_data(), m.default_budget())
    return m, report


def test_smoke_fit_runs_both_stages(fitted):
    m, report = fitted
    assert report.iterations == m.default_budget().iterations
    first, last = report.history[0], report.history[-1]
    assert set(first) == {"iteration", "contrastive"}  # encoder warm-up
    assert set(last) == {"iteration", "contrastive", "sr_l1"}  # joint stage
    out = m.upscale(torch.rand(2, 3, 13, 17))
    assert out.shape == (2, 3, 52, 68) and torch.isfinite(out).all()
    assert 0 <= out.min() and out.max() <= 1
    assert int(m.net.E.queue_ptr) == (report.iterations * 2) % 8192  # keys were enqueued


def test_every_loss_term_is_nonzero_and_reaches_its_parameters():
    m = DASRWang(4, profile="smoke")
    m.net.train()
    g = torch_generator(0, "test")
    hr = torch.rand(2, 2, 3, 64, 64, generator=g)
    batch = m.make_batch(hr, g)
    assert batch["lr"].shape == (2, 2, 3, 16, 16)
    terms = m.loss_terms(batch, "joint")
    assert set(terms) == {"contrastive", "sr_l1"}
    named = {k: p for k, p in m.net.named_parameters() if p.requires_grad}
    groups = {
        "G": [k for k in named if k.startswith("G.")],
        "E": [k for k in named if k.startswith("E.encoder_q.E.")],
        "mlp": [k for k in named if k.startswith("E.encoder_q.mlp.")],
    }
    reach = {"contrastive": {"E", "mlp"}, "sr_l1": {"G", "E"}}
    for name, term in terms.items():
        assert term.item() > 0, f"{name} is zero"
        grads = torch.autograd.grad(term, list(named.values()), retain_graph=True, allow_unused=True)
        got = {k: g for k, g in zip(named, grads)}
        for group, keys in groups.items():
            hit = [k for k in keys if got[k] is not None and got[k].abs().sum() > 0]
            if group in reach[name]:
                assert len(hit) == len(keys), f"{name} sends no gradient to {set(keys) - set(hit)}"
            else:
                assert not hit, f"{name} should not reach {group} ({hit[:2]})"
    assert not any(p.requires_grad for p in m.net.E.encoder_k.parameters())  # key encoder: momentum only


def test_pairs_share_one_degradation():
    """Both patches of an image get the same kernel: identical HR patches differ only by noise."""
    m = DASRWang(4, profile="smoke", degradation="iso")
    g = torch_generator(1, "test")
    hr = torch.rand(3, 1, 3, 64, 64, generator=g).expand(3, 2, 3, 64, 64)
    lr = m.make_batch(hr.contiguous(), g)["lr"]
    assert torch.equal(lr[:, 0], lr[:, 1])  # iso releases are noise-free
    assert not torch.equal(lr[0, 0], lr[1, 0])


def test_checkpoint_round_trip(fitted, tmp_path):
    m, _ = fitted
    path = tmp_path / "model_600.pt"
    m.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)
    assert not any(k.startswith(("E.encoder_k.", "E.queue")) for k in saved)
    m2 = DASRWang(4, profile="smoke", degradation="aniso")
    m2.load_checkpoint(path)
    lr = torch.rand(2, 3, 15, 12)
    assert torch.equal(m.forward_unclamped(lr), m2.forward_unclamped(lr))
    assert count_parameters(m2.net.E.encoder_k) == count_parameters(m2.net.E.encoder_q)
    assert all(torch.equal(a, b) for a, b in zip(m2.net.E.encoder_k.parameters(), m2.net.E.encoder_q.parameters()))
