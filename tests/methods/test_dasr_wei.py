"""DASR (Wei et al.): exact match with the official DSN, discriminator and SRN outputs,
the domain-distance map, the release's key layout, strict loading, and a training loop
in which every loss term works."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from bench.adapter import CheckpointError, TrainingData, count_parameters
from bench.degrade.resize import imresize
from methods.dasr_wei import DASRWei, domain_distance_map
from methods.fssr import FSDiscriminator
from tests._shared import requires_shared

TOL = 1e-5
DSN_TAR, SRN_PTH = "AIM_DeResnet_FSD.tar", "AIM_DASR_TDSR_G.pth"


def fixture_dir():
    return requires_shared("reference", "official", "fixtures", "dasr-wei")


def fixture_blocks() -> int:
    cfg = json.loads((fixture_dir() / "fixture.json").read_text())["networks"]
    return cfg["srn"]["reduced"]["fixture"]


def fixture_method() -> DASRWei:
    """fixture.json: full-size DSN and FSD, SRN reduced to ``network_G.nb`` RRDB blocks."""
    m = DASRWei(4, profile="paper", srn_blocks=fixture_blocks())
    m.load_checkpoint(fixture_dir())
    return m


def release_copy(tmp_path):
    dst = tmp_path / "release"
    dst.mkdir()
    for name in (DSN_TAR, SRN_PTH):
        shutil.copy(fixture_dir() / name, dst / name)
    return dst


def receptive_field_weights(d_out: np.ndarray, rf: int = 17) -> np.ndarray:
    """Restatement of the official spreading rule: every output value is added to the
    rf x rf window it sees (clipped at the border); each pixel is divided by how many
    windows cover it."""
    _, _, h, w = d_out.shape
    acc, cnt = np.zeros_like(d_out, dtype=np.float64), np.zeros_like(d_out, dtype=np.float64)
    half = rf // 2
    for i in range(h):
        for j in range(w):
            rows, cols = slice(max(0, i - half), i + rf - half), slice(max(0, j - half), j + rf - half)
            acc[:, :, rows, cols] += d_out[:, :, i:i + 1, j:j + 1]
            cnt[:, :, rows, cols] += 1
    return acc / cnt


def test_matches_official_outputs():
    m = fixture_method()
    ref = np.load(fixture_dir() / "reference_dsn.npz")
    fake = m.degrade(torch.from_numpy(ref["input"]))
    d_dsn = np.abs(fake.numpy() - ref["output"]).max()
    d_d = np.abs(m.discriminator_prob(fake).numpy() - ref["d_out"]).max()
    ref_srn = np.load(fixture_dir() / "reference_srn.npz")
    lr = torch.from_numpy(ref_srn["input"])
    d_srn = np.abs(m.forward_unclamped(lr).numpy() - ref_srn["output"]).max()
    print(f"dasr-wei max|diff| DSN {d_dsn:.3g} D_out {d_d:.3g} SRN {d_srn:.3g}")
    assert max(d_dsn, d_d, d_srn) <= TOL
    assert m.arch.fs_type == "avg_pool"  # read from the .tar


def test_domain_distance_map_spreads_over_the_receptive_field():
    d_out = np.load(fixture_dir() / "reference_dsn.npz")["d_out"]
    ours = domain_distance_map(torch.from_numpy(d_out)).numpy()
    diff = np.abs(ours - receptive_field_weights(d_out)).max()
    print(f"dasr-wei domain-distance map max|diff| {diff:.3g}")
    assert ours.shape == d_out.shape and diff <= 1e-6


def test_paper_networks_have_release_keys_and_counts():
    spec = json.loads((fixture_dir() / "keys.json").read_text())
    files = spec["files"]
    m = DASRWei(4, profile="paper")
    top = files[DSN_TAR]["top_level"]
    for entry, net in {"model_g_state_dict": m.dsn, "models_d_state_dict": m.dsn_d}.items():
        want = [(t["key"], tuple(t["shape"])) for t in top[entry]["tensors"]]
        assert [(k, tuple(v.shape)) for k, v in net.state_dict().items()] == want, entry
        assert count_parameters(net) == top[entry]["n_params"], entry
    want = [(t["key"], tuple(t["shape"])) for t in files[SRN_PTH]["tensors"]]
    assert [(k, tuple(v.shape)) for k, v in m.srn.state_dict().items()] == want
    counts = spec["parameter_counts_full"]
    n_dsn, n_d, n_srn = count_parameters(m.dsn), count_parameters(m.dsn_d), count_parameters(m.network())
    print(f"dasr-wei params: DSN {n_dsn:,} FSD {n_d:,} SRN {n_srn:,}")
    assert n_dsn == counts["DSN De_resnet (inference)"] == 668_238
    assert n_d == counts["DSN discriminator (training / domain-distance maps, inside the .tar)"] == 1_029_505
    assert n_srn == counts["SRN RRDBNet"] == 16_697_987


def test_gaussian_filter_option_adds_the_documented_key():
    base = set(FSDiscriminator("avg_pool", 5, 64, "instance").state_dict())
    gau = FSDiscriminator("gau", 5, 64, "instance").state_dict()
    assert set(gau) - base == {"filter.filter_low.filter.gaussian_filter.weight"}
    assert tuple(gau["filter.filter_low.filter.gaussian_filter.weight"].shape) == (3, 1, 5, 5)
    assert FSDiscriminator("wavelet", 5, 8, "instance")(torch.rand(1, 3, 8, 8)).shape == (1, 1, 4, 4)


@pytest.mark.parametrize("which", ["srn", "dsn", "d"])
def test_wrong_key_is_named(tmp_path, which):
    folder = release_copy(tmp_path)
    if which == "srn":
        state = torch.load(folder / SRN_PTH, weights_only=True)
        state["model.1.sub.0.RDB2.conv3.0.w"] = state.pop("model.1.sub.0.RDB2.conv3.0.weight")
        torch.save(state, folder / SRN_PTH)
        bad = "model.1.sub.0.RDB2.conv3.0.weight"
    else:
        obj = torch.load(folder / DSN_TAR, weights_only=True)
        entry, bad = (("model_g_state_dict", "down_sample.1.weight") if which == "dsn"
                      else ("models_d_state_dict", "net.net.5.bias"))
        obj[entry][bad + "_x"] = obj[entry].pop(bad)
        torch.save(obj, folder / DSN_TAR)
    m = DASRWei(4, profile="paper", srn_blocks=fixture_blocks())
    with pytest.raises(CheckpointError, match=bad.replace(".", r"\.")):
        m.load_checkpoint(folder)


def training_data(seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    hr = tuple(rng.random((64, 64, 3), dtype=np.float32) for _ in range(4))
    target = tuple(imresize(rng.random((64, 64, 3), dtype=np.float32), 0.25).astype(np.float32)
                   for _ in range(4))
    return TrainingData(scale=4, source_hr=hr, target_lr=target, seed=seed,
                        source_ids=tuple(f"s{i}" for i in range(4)), target_ids=tuple(f"t{i}" for i in range(4)))


@pytest.mark.parametrize("fs_type", ["avg_pool", "wavelet"])
def test_smoke_fit_then_infer_and_degrade(fs_type):
    m = DASRWei(4, profile="smoke", fs_type=fs_type)
    rep = m.fit(training_data(), m.budgets["smoke"])
    assert rep.iterations == m.budgets["smoke"].iterations
    sr = m.upscale(torch.rand(2, 3, 9, 11))
    assert sr.shape == (2, 3, 36, 44) and torch.isfinite(sr).all()
    lr = m.degrade(torch.rand(1, 3, 40, 44))
    assert lr.shape == (1, 3, 10, 11) and torch.isfinite(lr).all()
    ddm = m.distance_map(lr)
    assert ddm.shape[-2:] == ((10, 11) if fs_type == "avg_pool" else (5, 6))
    assert ((ddm > 0) & (ddm < 1)).all()


def test_every_loss_term_is_nonzero_and_reaches_its_network():
    m = DASRWei(4, profile="smoke")
    g = torch.Generator().manual_seed(0)
    batch = {"hr": torch.rand(2, 3, 32, 32, generator=g), "target_lr": torch.rand(2, 3, 8, 8, generator=g),
             "hr_unpair": torch.rand(2, 3, 32, 32, generator=g)}
    terms = m.loss_terms(batch)
    assert set(terms) == set(DASRWei.LOSS_OWNERS)
    nets = m.trainables()
    for name, value in terms.items():
        assert value.item() != 0, name
        params = [p for p in nets[DASRWei.LOSS_OWNERS[name]].parameters() if p.requires_grad]
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        assert any(gr is not None and gr.abs().sum() > 0 for gr in grads), name


def test_distance_weights_scale_the_pixel_loss():
    """The SRN's pixel term is the distance-weighted L1: zero weights silence it."""
    m = DASRWei(4, profile="smoke")
    hr = torch.rand(2, 3, 32, 32)
    fake, w = m.make_pairs(hr)
    assert w.shape == (2, 1, 32, 32)
    real = torch.rand(2, 3, 8, 8)
    on = m.srn_terms(fake, w, hr, real, hr)["srn/pix"]
    off = m.srn_terms(fake, torch.zeros_like(w), hr, real, hr)["srn/pix"]
    assert on.item() > 0 and off.item() == 0


def test_checkpoint_round_trip(tmp_path):
    m = DASRWei(4, profile="smoke")
    m.fit(training_data(1), m.budgets["smoke"])
    m.save_checkpoint(tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {DSN_TAR, SRN_PTH}
    m2 = DASRWei(4, profile="smoke")
    m2.load_checkpoint(tmp_path / "ckpt")
    lr, hr = torch.rand(1, 3, 12, 10), torch.rand(1, 3, 32, 36)
    assert torch.equal(m.upscale(lr), m2.upscale(lr))
    fake = m.degrade(hr)
    assert torch.equal(fake, m2.degrade(hr))
    assert torch.equal(m.distance_map(fake), m2.distance_map(fake))
