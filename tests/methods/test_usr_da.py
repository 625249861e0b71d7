"""USR-DA: exact match with the reference (unofficial) implementation's outputs, its
checkpoint layout, and a training loop in which every loss term works."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.adapter import Budget, CheckpointError, TrainingData, count_parameters
from methods.usr_da import USRDA, Discriminators
from tests._shared import requires_shared

TOL = 1e-5


def fixture_dir():
    return requires_shared("reference", "official", "fixtures", "usr-da")


def fixture_method() -> USRDA:
    """The fixture's configuration: full widths, 1 RRDB in each decoder (fixture.json)."""
    d = fixture_dir()
    cfg = json.loads((d / "fixture.json").read_text())["networks"]
    m = USRDA(4, profile="paper", n_blocks=cfg["decoder_sr"]["reduced"]["fixture"],
              n_blocks_id=cfg["decoder_id (training only, no reference output)"]["reduced"]["fixture"])
    m.load_checkpoint(d / "epoch_50.pth")
    return m


def test_matches_reference_outputs():
    ref = np.load(fixture_dir() / "reference_usr_da.npz")
    m = fixture_method()
    x = torch.from_numpy(ref["input"])
    d_feat = np.abs(m.features(x).numpy() - ref["feat"]).max()
    d_out = np.abs(m.forward_unclamped(x).numpy() - ref["output"]).max()
    print(f"usr-da max|diff| feat {d_feat:.3g} output {d_out:.3g}")
    assert d_feat <= TOL and d_out <= TOL
    sr = m.upscale(x)
    # upscale is exactly the clamped network output, and that output is the official one within
    # TOL (a bit-exact comparison with the official output failed on this CPU at b704a58 already:
    # one value 0.9458 vs 0.9459, float reordering in the convolutions)
    assert torch.equal(sr, m.forward_unclamped(x).clamp(0, 1))
    assert (sr - torch.from_numpy(ref["output"]).clamp(0, 1)).abs().max().item() <= TOL


def test_paper_network_has_reference_keys_and_counts():
    spec = json.loads((fixture_dir() / "keys.json").read_text())
    top = spec["files"]["epoch_50.pth"]["top_level"]
    m = USRDA(4, profile="paper")
    # reference default LR patch 64 sizes the discriminators' Linear layers in keys.json
    discs = Discriminators(64, 64, 4, 64)
    nets = {"model_Enc": m.enc, "model_Dec_SR": m.dec_sr, "model_Dec_Id": m.dec_id,
            "model_Disc_feat": discs.feat, "model_Disc_img_LR": discs.img_lr, "model_Disc_img_HR": discs.img_hr}
    for entry, net in nets.items():
        want = [(t["key"], tuple(t["shape"])) for t in top[entry]["tensors"]]
        got = [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
        assert got == want, entry
        assert count_parameters(net) == top[entry]["n_params"], entry
    counts = spec["parameter_counts_full"]
    assert count_parameters(m.network()) == counts["inference (Encoder_RRDB + Decoder_SR_RRDB)"] == 16_882_627


def test_renamed_key_is_named(tmp_path):
    ckpt = torch.load(fixture_dir() / "epoch_50.pth", weights_only=True)
    sd = dict(ckpt["model_Dec_SR"])
    sd["conv_hr.weight_renamed"] = sd.pop("conv_hr.weight")
    ckpt["model_Dec_SR"] = sd
    bad = tmp_path / "bad.pth"
    torch.save(ckpt, bad)
    m = USRDA(4, profile="paper", n_blocks=1, n_blocks_id=1)
    with pytest.raises(CheckpointError, match=r"conv_hr\.weight"):
        m.load_checkpoint(bad)
    torch.save(ckpt["model_Enc"], tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="model_Dec_SR"):
        m.load_checkpoint(tmp_path / "bare.pth")


def _images(n: int, size: int, seed: int) -> tuple[np.ndarray, ...]:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, size // 8, size // 8, generator=g)
    up = F.interpolate(base, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return tuple(im.permute(1, 2, 0).numpy().copy() for im in up)


def _training_data() -> TrainingData:
    hr = _images(4, 128, 0)
    # target domain: blur + x4 average-pool of a disjoint HR pool (unpaired with `hr`)
    t = torch.from_numpy(np.stack(_images(4, 128, 1))).permute(0, 3, 1, 2)
    t = F.avg_pool2d(F.avg_pool2d(t, 3, 1, 1, count_include_pad=False), 4)
    tgt = tuple(im.permute(1, 2, 0).numpy().copy() for im in t)
    return TrainingData(scale=4, source_hr=hr, target_lr=tgt, source_ids=("s0", "s1", "s2", "s3"),
                        target_ids=("t0", "t1", "t2", "t3"), seed=3)


def test_smoke_fit_and_round_trip(tmp_path):
    m = USRDA(4, profile="smoke")
    budget = USRDA.budgets["smoke"]
    before = {k: v.clone() for k, v in m.network().state_dict().items()}
    rep = m.fit(_training_data(), budget)
    assert rep.iterations == budget.iterations
    assert all(np.isfinite(v) for h in rep.history for v in h.values())
    assert any(not torch.equal(before[k], v) for k, v in m.network().state_dict().items())
    lr = torch.rand(2, 3, 11, 13, generator=torch.Generator().manual_seed(0))
    out = m.upscale(lr)
    assert out.shape == (2, 3, 44, 52) and torch.isfinite(out).all()
    m.save_checkpoint(tmp_path / "epoch_2.pth")
    m2 = USRDA(4, profile="smoke")
    m2.load_checkpoint(tmp_path / "epoch_2.pth")
    assert torch.equal(m2.forward_unclamped(lr), m.forward_unclamped(lr))
    assert all(torch.equal(a, b) for a, b in zip(m.dec_id.state_dict().values(), m2.dec_id.state_dict().values()))


def test_fit_is_deterministic():
    data, budget = _training_data(), Budget(iterations=1, batch_size=2, patch_size=32, lr=1e-4)
    a, b = USRDA(4, profile="smoke"), USRDA(4, profile="smoke")
    a.fit(data, budget)
    b.fit(data, budget)
    assert all(torch.equal(x, y) for x, y in zip(a.network().state_dict().values(),
                                                  b.network().state_dict().values()))


# which networks each term must train (reference train.py)
G_REACH = {
    "align": {"enc"}, "rec_l1": {"enc", "dec_sr"}, "rec_percept": {"enc", "dec_sr"}, "rec_adv": {"enc", "dec_sr"},
    "res": {"enc", "dec_id"}, "sty": {"enc", "dec_id"}, "idt": {"enc", "dec_id"},
    "cyc_l1": {"enc", "dec_id", "dec_sr"}, "cyc_percept": {"enc", "dec_id", "dec_sr"},
    "cyc_adv": {"enc", "dec_id", "dec_sr"},
}
D_REACH = {"d_feat": {"feat"}, "d_rec": {"img_hr"}, "d_sty": {"img_lr"}, "d_cyc": {"img_hr"}}


def test_every_loss_term_is_nonzero_and_trains_its_networks():
    m = USRDA(4, profile="smoke")
    m.prepare_training(32, seed=0)
    g = torch.Generator().manual_seed(0)
    batch = {"x_t": torch.rand(2, 3, 32, 32, generator=g), "y_s": torch.rand(2, 3, 128, 128, generator=g)}
    m.net.train()
    m.dec_id.train()
    terms = m.loss_terms(batch)
    assert set(terms) == set(G_REACH) | set(D_REACH)
    gens = {"enc": m.enc, "dec_sr": m.dec_sr, "dec_id": m.dec_id}
    discs = {"feat": m.discs.feat, "img_lr": m.discs.img_lr, "img_hr": m.discs.img_hr}
    for name, value in terms.items():
        assert value.item() > 0, name
        nets = {**gens, **discs}
        params = [p for net in nets.values() for p in net.parameters()]
        grads = torch.autograd.grad(value, params, allow_unused=True, retain_graph=True)
        reached, i = set(), 0
        for key, net in nets.items():
            n = len(list(net.parameters()))
            if any(gr is not None and gr.abs().sum() > 0 for gr in grads[i:i + n]):
                reached.add(key)
            i += n
        want = G_REACH.get(name) or D_REACH[name]
        # generator terms also reach the critic they are scored by; only generator reach is checked for them
        got = reached & (set(gens) if name in G_REACH else set(discs))
        assert got == want, (name, reached)
    assert m.generator_total({k: terms[k] for k in G_REACH}).item() > 0
