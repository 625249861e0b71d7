"""DAA: official equivalence (full-size fixture), release layout, checkpoint errors, training terms."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.adapter import CheckpointError, TrainingData
from bench.train import torch_generator
from methods.daa import DAA, RANK_WEIGHTS
from tests._shared import requires_shared

TOL = 1e-5


def fixture_dir():
    return requires_shared("reference", "official", "fixtures", "daa")


@pytest.fixture(scope="module")
def official():
    fx = fixture_dir()
    m = DAA(4, profile="paper")
    m.load_checkpoint(fx / "model_best.pt")
    return m, json.loads((fx / "fixture.json").read_text()), np.load(fx / "reference.npz")


def near_tie_explains(diff: np.ndarray, cfg: dict) -> bool:
    """A mismatch above TOL is acceptable only where the fixture lists a near-tie argmax
    decision: confined to images that hold one, and no larger than those flips move SR."""
    sites = cfg["guide_argmax"]["one_flipped_decision_at_each_gap_below_1e-5"]
    for img in range(diff.shape[0]):
        bad = diff[img] > TOL
        if not bad.any():
            continue
        listed = [s for s in sites if s["image"] == img]
        if not listed or diff[img].max() > sum(s["sr_max_change"] for s in listed):
            return False
        if bad.sum() > sum(s["sr_values_changed_gt_1e-5"] for s in listed):
            return False
    return True


def test_official_equivalence(official):
    m, cfg, ref = official
    lr = torch.from_numpy(ref["lr"])
    sr = m.forward_unclamped(lr).numpy()
    emb = m.embedding(lr).numpy()
    score = m.score(lr).numpy()
    diff = np.abs(sr - ref["sr"])
    d_emb = float(np.abs(emb - ref["embedding"]).max() / np.abs(ref["embedding"]).max())
    d_score = float(np.abs(score - ref["score"]).max())
    print(f"daa fixture: max|sr diff| {diff.max():.3g} ({int((diff > TOL).sum())} values > {TOL}), "
          f"embedding rel {d_emb:.3g}, score {d_score:.3g}")
    assert sr.shape == ref["sr"].shape
    assert diff.max() <= TOL or near_tie_explains(diff, cfg), (
        f"SR differs from the official output by {diff.max()} and not only at the fixture's near-tie sites")
    assert d_emb <= TOL, f"embedding differs by {d_emb} (relative): G must get LeakyReLU(0.1) of the encoder output"
    assert d_score <= TOL


def test_full_size_keys_and_parameters(official):
    m = official[0]
    keys = json.loads((fixture_dir() / "keys.json").read_text())
    state = m.net.state_dict()
    assert [k for k in state] == [t["key"] for t in keys["tensors"]]
    assert {k: tuple(v.shape) for k, v in state.items()} == {t["key"]: tuple(t["shape"]) for t in keys["tensors"]}
    n = sum(p.numel() for p in m.net.parameters())
    by = {p: sum(v.numel() for k, v in m.net.named_parameters() if k.startswith(p + "."))
          for p in ("G", "E.encoder_q", "E.ranker_q")}
    print(f"daa paper: {n:,} parameters {by}; keys.json {keys['n_parameters']:,}")
    assert n == keys["n_parameters"] == 2_860_889
    assert by == keys["parameters_by_prefix"]


def test_wrong_key_is_named(tmp_path):
    state = torch.load(fixture_dir() / "model_best.pt", map_location="cpu", weights_only=True)
    state["E.ranker_q.R.7.bias_renamed"] = state.pop("E.ranker_q.R.7.bias")
    bad = tmp_path / "model_best.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError) as err:
        DAA(4, profile="paper").load_checkpoint(bad)
    assert "E.ranker_q.R.7.bias" in str(err.value) and "E.ranker_q.R.7.bias_renamed" in str(err.value)


def test_release_folder_layout_loads(tmp_path, official):
    m, _, ref = official
    (tmp_path / "model").mkdir()
    m.save_checkpoint(tmp_path / "model" / "model_best.pt")
    m2 = DAA(4, profile="paper")
    m2.load_checkpoint(tmp_path)  # the official loader takes the model_pth folder
    lr = torch.from_numpy(ref["lr"][:1])
    assert torch.equal(m.forward_unclamped(lr), m2.forward_unclamped(lr))


def _data(seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    hr = tuple(rng.random((64, 64, 3)).astype(np.float32) for _ in range(4))
    return TrainingData(scale=4, source_hr=hr, source_ids=tuple(f"s{i}" for i in range(4)), seed=seed)


@pytest.fixture(scope="module")
def fitted():
    m = DAA(4, profile="smoke")
    report = m.fit(_data(), m.default_budget())
    return m, report


def test_smoke_fit_runs_every_stage(fitted):
    m, report = fitted
    assert report.iterations == m.default_budget().iterations
    # log_every=10: the history holds the first and the last iteration
    assert set(report.history[0]) == {"iteration", "backbone_l1"}  # bicubic IMDN stage (no imdn_init)
    assert set(report.history[-1]) == {"iteration", "sr_l1", *RANK_WEIGHTS}
    assert any("bicubic" in n for n in report.notes)
    out = m.upscale(torch.rand(2, 3, 13, 17))
    assert out.shape == (2, 3, 52, 68) and torch.isfinite(out).all()
    assert all(p.requires_grad for p in m.net.E.ranker_q.parameters())  # unfrozen again after fit


def test_every_loss_term_is_nonzero_and_reaches_its_parameters():
    # nf 32: at the smoke width 16, CCA's bottleneck is a single ReLU unit that can sit dead
    m = DAA(4, profile="smoke", nf=32)
    m.net.train()
    g = torch_generator(0, "test")
    batch = m.make_batch(torch.rand(3, 2, 3, 64, 64, generator=g), g)
    for v in ("q", "k", "k1", "k2", "k3", "bic"):
        assert batch[f"lr_{v}"].shape == (3, 3, 16, 16)
    terms = m.loss_terms(batch, "joint")
    assert set(terms) == set(RANK_WEIGHTS) | {"sr_l1"}
    named = dict(m.net.named_parameters())
    groups = {"G": [k for k in named if k.startswith("G.")],
              "encoder": [k for k in named if k.startswith("E.encoder_q.")],
              "ranker": [k for k in named if k.startswith("E.ranker_q.")]}
    for name, term in terms.items():
        assert term.item() > 0, f"{name} is zero"
        reach = {"G", "encoder"} if name == "sr_l1" else {"encoder", "ranker"}
        grads = torch.autograd.grad(term, list(named.values()), retain_graph=True, allow_unused=True)
        got = dict(zip(named, grads))
        for group, keys in groups.items():
            hit = [k for k in keys if got[k] is not None and got[k].abs().sum() > 0]
            if group in reach:
                # a score difference cancels the ranker's biases (exactly, for the last one), so
                # ranking terms must reach every ranker weight; everything else, every tensor
                need = [k for k in keys if not (group == "ranker" and k.endswith(".bias"))]
                miss = sorted(set(need) - set(hit))
                assert not miss, f"{name} sends no gradient to {miss[:3]}"
            else:
                assert not hit, f"{name} should not reach {group} ({hit[:2]})"


def test_backbone_stage_trains_the_plain_imdn_only():
    m = DAA(4, profile="smoke", nf=32)
    m.net.train()
    g = torch_generator(3, "test")
    batch = m.make_bicubic_batch(torch.rand(2, 3, 64, 64, generator=g), g)
    term = m.loss_terms(batch, "backbone")["backbone_l1"]
    assert term.item() > 0
    named = dict(m.net.named_parameters())
    grads = dict(zip(named, torch.autograd.grad(term, list(named.values()), allow_unused=True)))
    for k, gr in grads.items():
        reached = gr is not None and gr.abs().sum() > 0
        assert reached == (k.startswith("G.") and not k.startswith("G.adapt")), k


def test_key_views_differ_in_one_parameter_only():
    """k1/k2 redraw lambda1/lambda2 of k (noise: k3); bic is bicubic-only, noise-free."""
    m = DAA(4, profile="smoke")
    g = torch_generator(2, "test")
    hr = torch.rand(2, 2, 3, 64, 64, generator=g)
    b = m.make_batch(hr, g)
    assert not torch.equal(b["lr_k1"], b["lr_k"]) and not torch.equal(b["lr_k2"], b["lr_k"])
    assert torch.equal(b["lr_bic"], m.make_batch(hr, g)["lr_bic"])  # bicubic-only: no random draw
    assert (b["sigma1"] != b["sigma1_n"]).all() and (b["noise"] != b["noise_n"]).all()


def test_checkpoint_round_trip(fitted, tmp_path):
    m, _ = fitted
    m.save_checkpoint(tmp_path / "model_best.pt")
    m2 = DAA(4, profile="smoke")
    m2.load_checkpoint(tmp_path / "model_best.pt")
    lr = torch.rand(2, 3, 15, 12)
    assert torch.equal(m.forward_unclamped(lr), m2.forward_unclamped(lr))


def test_imdn_initialisation_loads_backbone_only(tmp_path):
    m = DAA(4, profile="smoke")
    backbone = {f"module.{k}": v + 1 for k, v in m.net.G.state_dict().items() if not k.startswith("adapt")}
    torch.save(backbone, tmp_path / "IMDN_x4.pth")
    m2 = DAA(4, profile="smoke", imdn_init=tmp_path / "IMDN_x4.pth")
    assert torch.equal(m2.net.G.fea_conv.weight, m.net.G.fea_conv.weight + 1)
    assert torch.equal(m2.net.G.adapt0.conv1.weight, m.net.G.adapt0.conv1.weight)
    backbone["module.IMDB1.c1.extra"] = torch.zeros(1)
    torch.save(backbone, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="IMDB1.c1.extra"):
        DAA(4, profile="smoke", imdn_init=tmp_path / "bad.pth")
