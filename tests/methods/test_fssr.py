"""FSSR (DSGAN + ESRGAN-FS): exact match with the official outputs, the release's key
layout, strict loading, and a training loop in which every loss term works."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from bench.adapter import CheckpointError, TrainingData, count_parameters
from bench.degrade.resize import imresize
from methods.fssr import FSSR, FSDiscriminator, haar_dwt, wavelet_high
from tests._shared import requires_shared

TOL = 1e-5
DSGAN_TAR, SR_PTH = "DF2K_gaussian.tar", "DF2K_gaussian_SDSR.pth"


def fixture_dir():
    return requires_shared("reference", "official", "fixtures", "fssr")


def fixture_method() -> FSSR:
    """fixture.json: full-size DSGAN, ESRGAN-FS reduced to ``network_G.nb`` RRDB blocks."""
    cfg = json.loads((fixture_dir() / "fixture.json").read_text())["networks"]
    m = FSSR(4, profile="paper", nb=cfg["esrgan_fs"]["reduced"]["fixture"],
             dsgan_blocks=8)
    m.load_checkpoint(fixture_dir())
    return m


def release_copy(tmp_path):
    dst = tmp_path / "release"
    dst.mkdir()
    for name in (DSGAN_TAR, SR_PTH):
        shutil.copy(fixture_dir() / name, dst / name)
    return dst


def test_matches_official_outputs():
    m = fixture_method()
    ref = np.load(fixture_dir() / "reference_dsgan.npz")
    hr = torch.from_numpy(ref["input"])
    d_bic = np.abs(m.bicubic(hr).numpy() - ref["lr_bicubic"]).max()
    d_dsgan = np.abs(m.degrade(hr).numpy() - ref["output"]).max()
    ref = np.load(fixture_dir() / "reference_esrgan_fs.npz")
    lr = torch.from_numpy(ref["input"])
    d_sr = np.abs(m.forward_unclamped(lr).numpy() - ref["output"]).max()
    print(f"fssr max|diff| bicubic {d_bic:.3g} DSGAN {d_dsgan:.3g} ESRGAN-FS {d_sr:.3g}")
    assert max(d_bic, d_dsgan, d_sr) <= TOL
    assert torch.allclose(m.upscale(lr), torch.from_numpy(ref["output"]).clamp(0, 1), atol=TOL, rtol=0)


def test_paper_networks_have_release_keys_and_counts():
    spec = json.loads((fixture_dir() / "keys.json").read_text())
    files = spec["files"]
    m = FSSR(4, profile="paper")
    top = files[DSGAN_TAR]["top_level"]
    nets = {
        "model_g_state_dict": m.dsgan,
        # training-only discriminator, kept in the .tar: same module names (net.net.N, BatchNorm)
        "models_d_state_dict": FSDiscriminator("avg_pool", 5, 64, "batch"),
    }
    for entry, net in nets.items():
        want = [(t["key"], tuple(t["shape"])) for t in top[entry]["tensors"]]
        assert [(k, tuple(v.shape)) for k, v in net.state_dict().items()] == want, entry
        assert count_parameters(net) == top[entry]["n_params"], entry
    want = [(t["key"], tuple(t["shape"])) for t in files[SR_PTH]["tensors"]]
    assert [(k, tuple(v.shape)) for k, v in m.sr.state_dict().items()] == want
    counts = spec["parameter_counts_full"]
    n_g, n_sr = count_parameters(m.dsgan), count_parameters(m.network())
    print(f"fssr params: DSGAN {n_g:,} ESRGAN-FS {n_sr:,}")
    assert n_g == counts["DSGAN generator (inference)"] == 594_380
    assert n_sr == counts["ESRGAN-FS RRDBNet"] == 16_697_987


@pytest.mark.parametrize("which", ["sr", "dsgan"])
def test_wrong_key_is_named(tmp_path, which):
    folder = release_copy(tmp_path)
    if which == "sr":
        state = torch.load(folder / SR_PTH, weights_only=True)
        state["conv_first.weight_renamed"] = state.pop("conv_first.weight")
        torch.save(state, folder / SR_PTH)
        bad = "conv_first.weight"
    else:
        obj = torch.load(folder / DSGAN_TAR, weights_only=True)
        g = obj["model_g_state_dict"]
        g["res_blocks.3.prelu.slope"] = g.pop("res_blocks.3.prelu.weight")
        torch.save(obj, folder / DSGAN_TAR)
        bad = "res_blocks.3.prelu.weight"
    cfg = json.loads((fixture_dir() / "fixture.json").read_text())["networks"]
    m = FSSR(4, profile="paper", nb=cfg["esrgan_fs"]["reduced"]["fixture"])
    with pytest.raises(CheckpointError, match=bad.replace(".", r"\.")):
        m.load_checkpoint(folder)


def test_single_file_is_refused_with_a_fix(tmp_path):
    m = FSSR(4, profile="smoke")
    with pytest.raises(CheckpointError, match="folder"):
        m.load_checkpoint(fixture_dir() / SR_PTH)


def test_haar_bands_are_orthonormal_and_odd_sizes_work():
    x = torch.rand(2, 3, 8, 10, generator=torch.Generator().manual_seed(0))
    bands = haar_dwt(x)
    assert torch.allclose(sum((b ** 2).sum() for b in bands), (x ** 2).sum(), rtol=1e-5)
    assert wavelet_high(torch.rand(1, 3, 9, 7)).shape == (1, 9, 5, 4)


def training_data(seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    hr = tuple(rng.random((64, 64, 3), dtype=np.float32) for _ in range(4))
    target = tuple(imresize(rng.random((64, 64, 3), dtype=np.float32), 0.25).astype(np.float32)
                   for _ in range(4))
    return TrainingData(scale=4, source_hr=hr, target_lr=target, seed=seed,
                        source_ids=tuple(f"s{i}" for i in range(4)), target_ids=tuple(f"t{i}" for i in range(4)))


def test_smoke_fit_then_infer_and_degrade():
    m = FSSR(4, profile="smoke")
    rep = m.fit(training_data(), m.budgets["smoke"])
    assert rep.iterations == m.budgets["smoke"].iterations
    sr = m.upscale(torch.rand(2, 3, 9, 11))
    assert sr.shape == (2, 3, 36, 44) and torch.isfinite(sr).all()
    lr = m.degrade(torch.rand(1, 3, 40, 44))
    assert lr.shape == (1, 3, 10, 11) and torch.isfinite(lr).all()


def test_every_loss_term_is_nonzero_and_reaches_its_network():
    m = FSSR(4, profile="smoke")
    g = torch.Generator().manual_seed(0)
    batch = {"hr": torch.rand(2, 3, 32, 32, generator=g), "target_lr": torch.rand(2, 3, 8, 8, generator=g)}
    terms = m.loss_terms(batch)
    assert set(terms) == set(FSSR.LOSS_OWNERS)
    nets = m.trainables()
    for name, value in terms.items():
        assert value.item() != 0, name
        params = [p for p in nets[FSSR.LOSS_OWNERS[name]].parameters() if p.requires_grad]
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        assert any(gr is not None and gr.abs().sum() > 0 for gr in grads), name


def test_checkpoint_round_trip(tmp_path):
    m = FSSR(4, profile="smoke")
    m.fit(training_data(1), m.budgets["smoke"])
    m.save_checkpoint(tmp_path / "ckpt")
    m2 = FSSR(4, profile="smoke")
    m2.load_checkpoint(tmp_path / "ckpt")
    lr, hr = torch.rand(1, 3, 12, 10), torch.rand(1, 3, 32, 36)
    assert torch.equal(m.upscale(lr), m2.upscale(lr))
    assert torch.equal(m.degrade(hr), m2.degrade(hr))
