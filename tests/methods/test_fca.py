"""FCA (no official code): the paper's modules behave as specified (normalised kernel
applied after bicubic, antisymmetric frequency-density comparator), strict loading of
our checkpoint format, and a training loop in which every loss term works."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.adapter import CheckpointError, TrainingData, count_parameters
from bench.degrade.resize import imresize, imresize_torch
from methods.fca import (FCA, FDCEncoder, FrequencyDensityComparator, KernelEstimator, apply_kernels,
                         curriculum_scale, rescaled_patches)


def test_kernels_are_normalised_for_any_input_size():
    est = KernelEstimator(width=8, branch=2, n_dense=1, n_res=1, kernel_size=13)
    for h, w in ((64, 64), (37, 50)):
        k = est(torch.rand(2, 3, h, w))
        assert k.shape == (2, 1, 13, 13)
        assert (k >= 0).all() and torch.allclose(k.sum((-2, -1)), torch.ones(2, 1), atol=1e-6)


def test_untrained_generator_starts_at_the_kernel_prior():
    """The kernel logits start at a centred Gaussian (the last conv is zero), so an
    untrained G is bicubic downsampling plus a slight blur, not a 13x13 box."""
    est = KernelEstimator(width=8, branch=2, n_dense=1, n_res=1, kernel_size=13, prior_sigma=0.5)
    k = est(torch.rand(1, 3, 48, 40))[0, 0]
    r = torch.arange(13.0) - 6
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 0.5 ** 2))
    assert torch.allclose(k, g / g.sum(), atol=1e-6)
    assert k[6, 6] > 0.6  # close to the identity


def test_apply_kernels_is_a_per_image_convolution():
    x = torch.rand(2, 3, 9, 11)
    delta = torch.zeros(2, 1, 5, 5)
    delta[:, :, 2, 2] = 1
    assert torch.allclose(apply_kernels(x, delta), x, atol=1e-6)
    box = torch.full((1, 1, 3, 3), 1 / 9)
    kernels = torch.cat([delta[:1, :, 1:4, 1:4], box])  # image 0 untouched, image 1 box-blurred
    out = apply_kernels(x, kernels)
    want = F.avg_pool2d(F.pad(x[1:], (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    assert torch.allclose(out[:1], x[:1], atol=1e-6) and torch.allclose(out[1:], want, atol=1e-6)


def test_degrade_is_bicubic_then_the_estimated_kernel():
    m = FCA(4, profile="smoke")
    hr = torch.rand(2, 3, 40, 36)
    lr = m.degrade(hr)
    want = apply_kernels(imresize_torch(hr, 0.25).clamp(0, 1), m.kernels(hr))
    assert lr.shape == (2, 3, 10, 9) and torch.allclose(lr, want, atol=1e-6)


def test_comparator_is_antisymmetric_with_a_16x16_map_for_128_patches():
    fdc = FrequencyDensityComparator(width=8, branch=2).eval()
    a, b = torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        ab, ba, aa = fdc(a, b), fdc(b, a), fdc(a, a)
    assert ab.shape == (1, 1, 16, 16)
    assert torch.allclose(ab, -ba, atol=1e-6) and aa.abs().max() == 0
    assert isinstance(fdc.encoder, FDCEncoder)


def test_scale_curriculum_and_resampled_patches():
    assert curriculum_scale(0, 10) == pytest.approx(3.5) and curriculum_scale(9, 10) == pytest.approx(1.2)
    g = torch.Generator().manual_seed(0)
    pool = [torch.rand(3, 20, 24), torch.rand(3, 30, 16)]
    for s in (1 / 3.5, 1.0, 1.2, 3.5):
        out = rescaled_patches(pool, 3, 16, s, g)
        assert out.shape == (3, 3, 16, 16) and out.min() >= 0 and out.max() <= 1


def training_data(seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    hr = tuple(rng.random((64, 64, 3), dtype=np.float32) for _ in range(4))
    target = tuple(imresize(rng.random((64, 64, 3), dtype=np.float32), 0.25).astype(np.float32)
                   for _ in range(4))
    return TrainingData(scale=4, source_hr=hr, target_lr=target, seed=seed,
                        source_ids=tuple(f"s{i}" for i in range(4)), target_ids=tuple(f"t{i}" for i in range(4)))


def test_smoke_fit_then_infer_and_degrade():
    m = FCA(4, profile="smoke")
    rep = m.fit(training_data(), m.budgets["smoke"])
    assert rep.iterations == m.budgets["smoke"].iterations
    assert any(h.get("fdc/scale") for h in rep.history)
    sr = m.upscale(torch.rand(2, 3, 9, 11))
    assert sr.shape == (2, 3, 36, 44) and torch.isfinite(sr).all()
    lr = m.degrade(torch.rand(1, 3, 40, 44))
    assert lr.shape == (1, 3, 10, 11) and torch.isfinite(lr).all()


def test_every_loss_term_is_nonzero_and_reaches_its_network():
    m = FCA(4, profile="smoke")
    g = torch.Generator().manual_seed(0)
    batch = {"hr": torch.rand(2, 3, 64, 64, generator=g), "target_lr": torch.rand(2, 3, 16, 16, generator=g)}
    terms = m.loss_terms(batch)
    assert set(terms) == set(FCA.LOSS_OWNERS)
    nets = m.trainables()
    for name, value in terms.items():
        assert value.item() != 0, name
        params = [p for p in nets[FCA.LOSS_OWNERS[name]].parameters() if p.requires_grad]
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        assert any(gr is not None and gr.abs().sum() > 0 for gr in grads), name


def test_paper_size_parameter_counts():
    m = FCA(4, profile="paper")
    n_g, n_sr = count_parameters(m.generator), count_parameters(m.network())
    print(f"fca params: adaptation generator {n_g:,}, SR (ESRGAN) {n_sr:,}")
    assert n_sr == 16_697_987  # ESRGAN x4, the same network as ESRGAN-FS


def test_checkpoint_round_trip_and_wrong_key(tmp_path):
    m = FCA(4, profile="smoke")
    m.fit(training_data(1), m.budgets["smoke"])
    m.save_checkpoint(tmp_path / "fca.pth")
    m2 = FCA(4, profile="smoke")
    m2.load_checkpoint(tmp_path / "fca.pth")
    lr, hr = torch.rand(1, 3, 12, 10), torch.rand(1, 3, 32, 36)
    assert torch.equal(m.upscale(lr), m2.upscale(lr))
    assert torch.equal(m.degrade(hr), m2.degrade(hr))
    obj = torch.load(tmp_path / "fca.pth", weights_only=True)
    obj["sr"]["HRconv.w"] = obj["sr"].pop("HRconv.weight")
    torch.save(obj, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"HRconv\.weight"):
        FCA(4, profile="smoke").load_checkpoint(tmp_path / "bad.pth")
    torch.save(obj["sr"], tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="'generator' and 'sr'"):
        FCA(4, profile="smoke").load_checkpoint(tmp_path / "bare.pth")
