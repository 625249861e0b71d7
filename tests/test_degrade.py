"""Degradation package: MATLAB-calibrated resizing, protocol kernels, suites, determinism."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage, stats

from bench.adapter import BenchError
from bench.degrade import (
    Suite,
    degrade_clean,
    get_suite,
    imresize,
    imresize_torch,
    kernels,
    list_families,
    mod_crop,
    ops_torch,
    parse_suites,
    realistic,
    sfold,
    synthesize,
)
from tests._shared import requires_shared, shared_dir

torch.set_num_threads(1)


def _pairs(set_name: str, scale: int = 4) -> list[tuple[Path, Path]]:
    folder = requires_shared("datasets", set_name, f"image_SRF_{scale}")
    his = sorted(folder.glob("*_HR.png"))
    assert his, f"no HR files in {folder}"
    return [(p, p.with_name(p.name.replace("_HR", "_LR"))) for p in his]


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def _psnr_paper_y(sr: np.ndarray, hr: np.ndarray, crop: int) -> float:
    """Y-BT.601 PSNR (crop = scale); a single-channel file is scored on the channel itself."""
    sr, hr = sr.astype(np.float64), hr.astype(np.float64)
    if sr.ndim == 3:
        w = np.array([65.481, 128.553, 24.966]) / 255.0
        sr, hr = sr @ w + 16.0, hr @ w + 16.0
    d = sr[crop:-crop, crop:-crop] - hr[crop:-crop, crop:-crop]
    return 10.0 * math.log10(255.0**2 / np.mean(d * d))


# ------------------------------------------------------------------ resizing


@pytest.mark.parametrize("set_name", ["Set5", "Set14"])
def test_matlab_bicubic_matches_shipped_lr(set_name):
    diffs = []
    for hr_path, lr_path in _pairs(set_name):
        hr, ref = _load(hr_path), _load(lr_path)  # Set14 img_003 is single-channel: both stay H x W
        ours = _u8(imresize(hr.astype(np.float64) / 255.0, 0.25))
        assert ours.shape == ref.shape, hr_path.name
        diffs.append(np.abs(ours.astype(int) - ref.astype(int)).ravel())
    mad = float(np.concatenate(diffs).mean())
    assert mad <= 0.2, f"{set_name}: mean |ours - MATLAB| = {mad:.3f} grey levels"


def _pyiqa_resize(img: np.ndarray, scale: float) -> np.ndarray:
    from pyiqa.matlab_utils import imresize as pyiqa_imresize

    x = torch.from_numpy(img.transpose(2, 0, 1).copy()).float()  # pyiqa: torch, C x H x W
    return pyiqa_imresize(x, scale=scale).numpy().transpose(1, 2, 0).astype(np.float64)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 4])
def test_imresize_equals_pyiqa(scale):
    pytest.importorskip("pyiqa")
    images = [np.random.default_rng(1).random((60, 45, 3))]
    real = shared_dir() / "datasets" / "Set5" / "image_SRF_4" / "img_002_SRF_4_HR.png"
    if real.exists():  # a real photo too, where the calibration data is present
        images.append(_load(real)[:120, :96].astype(np.float64) / 255.0)
    for img in images:
        ref = _pyiqa_resize(img, scale)
        ours = imresize(img, scale)
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() * 255 < 1e-3
        t = imresize_torch(torch.from_numpy(img.transpose(2, 0, 1).copy())[None], scale)[0].numpy().transpose(1, 2, 0)
        assert np.abs(t - ref).max() * 255 < 1e-3


def test_imresize_gray_float32_and_out_shape():
    img = np.random.default_rng(2).random((40, 32)).astype(np.float32)
    out = imresize(img, 0.25)
    assert out.shape == (10, 8) and out.dtype == np.float32
    same = imresize(np.repeat(img[..., None], 3, -1), out_shape=(10, 8))
    assert np.allclose(same[..., 1], out, atol=1e-6)
    with pytest.raises(BenchError, match="exactly one"):
        imresize(img)


def test_imresize_faster_than_pyiqa():
    pytest.importorskip("pyiqa")
    from pyiqa.matlab_utils import imresize as pyiqa_imresize

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        img = np.random.default_rng(3).random((768, 1024, 3)).astype(np.float32)
        x = torch.from_numpy(img.transpose(2, 0, 1).copy())

        def best(fn, n=3):
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return min(times)

        ours = best(lambda: imresize(img, 0.25))
        ref = best(lambda: pyiqa_imresize(x, scale=0.25), n=2)
    finally:
        torch.set_num_threads(threads)
    assert ref / ours >= 5, f"imresize {ours * 1e3:.1f} ms vs pyiqa {ref * 1e3:.1f} ms"


def test_sfold_offset_and_mod_crop():
    img = np.arange(9 * 10).reshape(9, 10)
    assert np.array_equal(sfold(mod_crop(img, 4), 4), img[0:8:4, 0:8:4])
    assert mod_crop(np.zeros((9, 10, 3)), 4).shape == (8, 8, 3)


# ------------------------------------------------------------------ DASR-Wang dasr-iso calibration

DASR_ISO_EXPECTED = {  # PROTOCOLS.md: measured with the official pipeline, bicubic down-and-up
    "Set5": {0: 28.42, 1.2: 27.69, 2.4: 25.99, 3.6: 24.45},
    "Set14": {0: 26.00, 1.2: 25.50, 2.4: 24.30, 3.6: 23.15},
}


@pytest.mark.parametrize("set_name", ["Set5", "Set14"])
def test_dasr_iso_bicubic_psnr(set_name):
    pairs = _pairs(set_name)
    for suite in parse_suites("dasr-iso", 4):
        sigma = dict(suite.params)["sigma"]
        scores = []
        for hr_path, _ in pairs:
            hr = _load(hr_path)
            gray = hr.ndim == 2
            x = hr.astype(np.float32) / 255.0
            lr, _ = synthesize(suite, np.repeat(x[..., None], 3, -1) if gray else x, 4, hr_path.stem, 0)
            sr = _u8(imresize(lr.astype(np.float64) / 255.0, 4.0))
            scores.append(_psnr_paper_y(sr[..., 0] if gray else sr, mod_crop(hr, 4), 4))
        got = float(np.mean(scores))
        want = DASR_ISO_EXPECTED[set_name][sigma]
        assert abs(got - want) <= 0.03, f"{set_name} {suite.name}: {got:.3f} dB, expected {want}"


def test_sigma0_is_exactly_bicubic():
    hr = np.random.default_rng(4).random((32, 36, 3)).astype(np.float32)
    a, _ = synthesize(get_suite("dasr-iso:sigma=0"), hr, 4, "x", 0)
    b = _u8(imresize(hr.astype(np.float64), 0.25))
    assert np.array_equal(a, b)


# ------------------------------------------------------------------ kernels and blur


def _second_moments(k: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    ys, xs = np.mgrid[0 : k.shape[0], 0 : k.shape[1]]
    x, y = xs - centre[1], ys - centre[0]
    return np.array([[np.sum(k * x * x), np.sum(k * x * y)], [np.sum(k * x * y), np.sum(k * y * y)]])


def test_dasr_kernel_conventions():
    iso = kernels.isotropic_gaussian(1.2)
    assert iso.shape == (21, 21) and abs(iso.sum() - 1) < 1e-12 and iso.argmax() == 10 * 21 + 10
    # l1 is the standard deviation along x (columns) at theta=0; covariance R diag(l1^2, l2^2) R^T.
    for theta_deg, l1, l2 in [(0, 2.0, 1.0), (90, 2.0, 1.0), (30, 2.5, 1.0), (135, 2.0, 1.2)]:
        k = kernels.anisotropic_gaussian(math.radians(theta_deg), l1, l2)
        want = kernels.covariance(math.radians(theta_deg), l1 * l1, l2 * l2)
        assert np.allclose(_second_moments(k, (10, 10)), want, atol=2e-3), theta_deg
    assert np.allclose(kernels.dasr_aniso_table3(9), kernels.isotropic_gaussian(4.0))
    with pytest.raises(BenchError):
        kernels.dasr_aniso_table3(10)


def test_manet_kernels_shift_and_sum():
    for scale in (2, 3, 4):
        params = kernels.manet_params(scale)
        assert len(params) == 9
        side = 21 - scale + 1
        for k, (v1, v2, theta) in enumerate(params, start=1):
            ker = kernels.manet_kernel(k, scale)
            assert ker.shape == (21, 21) and abs(ker.sum() - 1) < 1e-12
            assert not ker[side:, :].any() and not ker[:, side:].any()  # kernel sits in the top-left corner
            com = ndimage.center_of_mass(ker)
            assert np.allclose(com, (10 - (scale - 1) / 2,) * 2, atol=1e-9)  # shifted (s-1)/2 up-left
            # Independent evaluation as MANet does it: mvn pdf on pos = (column, row) coordinates.
            c = side / 2.0 - 0.5
            gx, gy = np.mgrid[-c : -c + side : 1, -c : -c + side : 1]
            cov = kernels.covariance(theta, v1, v2)
            ref = stats.multivariate_normal.pdf(np.dstack((gy, gx)), mean=[0, 0], cov=cov)
            ref[ref < np.finfo(float).eps * ref.max()] = 0
            assert np.allclose(ker[:side, :side], ref / ref.sum(), atol=1e-12)
    assert kernels.manet_params(4)[0] == (1.0, 1.0, 0.0) and kernels.manet_params(4)[-1] == (9.0, 9.0, 0.0)


def test_blur_is_correlation_with_named_padding():
    rng = np.random.default_rng(5)
    img = rng.random((20, 17, 3))
    ker = rng.random((5, 5))
    ker /= ker.sum()
    for padding, mode in (("reflect", "mirror"), ("replicate", "nearest"), ("symmetric", "reflect")):
        ref = np.stack([ndimage.correlate(img[..., c], ker, mode=mode) for c in range(3)], -1)
        assert np.allclose(kernels.blur(img, ker, padding), ref, atol=1e-12), padding


def test_div2krk_kernel():
    rng = np.random.default_rng(6)
    for scale, size in ((2, 11), (4, 31)):
        k, info = kernels.div2krk_kernel(rng, scale)
        assert k.shape == (size, size) and abs(k.sum() - 1) < 1e-9
        assert 0.175 * scale <= info["lambda1"] <= 2.5 * scale and 0 <= info["theta"] < math.pi


# ------------------------------------------------------------------ torch ops


def test_torch_ops_match_numpy():
    theta = torch.tensor([0.3, 2.0], dtype=torch.float64)
    s1, s2 = torch.tensor([2.0, 1.0], dtype=torch.float64), torch.tensor([0.7, 3.0], dtype=torch.float64)
    ks = ops_torch.gaussian_kernels(s1, s2, theta)
    for i in range(2):
        ref = kernels.anisotropic_gaussian(float(theta[i]), float(s1[i]), float(s2[i]))
        assert np.allclose(ks[i].numpy(), ref, atol=1e-12)
    x = torch.rand(2, 3, 24, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for padding in ("reflect", "replicate"):
        out = ops_torch.blur(x, ks, padding)
        for i in range(2):
            ref = kernels.blur(x[i].numpy().transpose(1, 2, 0), ks[i].numpy(), padding)
            assert np.allclose(out[i].numpy().transpose(1, 2, 0), ref, atol=1e-10)
    down = ops_torch.bicubic_down(x, 4)
    assert np.allclose(down[0].numpy().transpose(1, 2, 0), imresize(x[0].numpy().transpose(1, 2, 0), 0.25), atol=1e-10)


def test_random_blind_degrade():
    hr = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    lr1, p1 = ops_torch.random_blind_degrade(hr, 4, kind="aniso", noise_range=(0, 25), generator=torch.Generator().manual_seed(7))
    lr2, _ = ops_torch.random_blind_degrade(hr, 4, kind="aniso", noise_range=(0, 25), generator=torch.Generator().manual_seed(7))
    assert lr1.shape == (3, 3, 12, 12) and torch.equal(lr1, lr2)
    assert set(p1) == {"sigma1", "sigma2", "theta", "noise"}
    assert bool(((p1["sigma1"] >= 0.2) & (p1["sigma1"] <= 4) & (p1["theta"] < math.pi)).all())
    assert float(lr1.min()) >= 0 and float(lr1.max()) <= 1
    lr3, p3 = ops_torch.random_blind_degrade(hr, 2, kind="iso", generator=torch.Generator().manual_seed(3))
    assert lr3.shape == (3, 3, 24, 24) and torch.equal(p3["sigma1"], p3["sigma2"]) and bool((p3["sigma1"] <= 2).all())
    hr.requires_grad_(True)
    ops_torch.random_blind_degrade(hr, 4)[0].sum().backward()
    assert hr.grad is not None


# ------------------------------------------------------------------ suites: names, determinism, TOML


def test_canonical_names_and_expansion():
    assert [s.name for s in parse_suites("dasr-iso", 4)] == [
        "dasr-iso:sigma=0", "dasr-iso:sigma=1.2", "dasr-iso:sigma=2.4", "dasr-iso:sigma=3.6"]
    assert [s.name for s in parse_suites("dasr-iso", 2)][1] == "dasr-iso:sigma=0.6"
    assert len(parse_suites("dasr-aniso", 4)) == 27
    assert len(parse_suites("manet-si", 4)) == 18 and len(parse_suites("manet-si", 2)) == 9
    assert [s.name for s in parse_suites("aniso", 4)] == ["aniso:k=2", "aniso:k=5", "aniso:k=8"]
    assert [s.name for s in parse_suites("noise;jpeg", 4)] == [
        "noise:sigma=5", "noise:sigma=15", "noise:sigma=25", "jpeg:q=30", "jpeg:q=50", "jpeg:q=70"]
    assert len(parse_suites("gaussian8", 4)) == 8 and get_suite("gaussian8:sigma=2.6") in parse_suites("gaussian8", 4)
    mixed = parse_suites("bicubic,aniso,dasr-iso:sigma=2.4,dasr-aniso:k=1,noise=5+mixed;realistic", 4)
    assert [s.name for s in mixed] == ["bicubic", "aniso:k=2", "aniso:k=5", "aniso:k=8", "dasr-iso:sigma=2.4",
                                       "dasr-aniso:k=1,noise=5", "mixed", "realistic"]
    assert len(parse_suites("dasr-aniso:noise=5", 4)) == 9
    every = [s for fam in list_families() for s in parse_suites(fam, 4)]
    for s in every:
        assert get_suite(s.name).name == s.name and get_suite(s.name) == s
    assert len({s for s in every}) == len(every)  # hashable and distinct
    assert Suite("dasr-iso", (("sigma", "1.20"),)).name == "dasr-iso:sigma=1.2"


def test_bad_names_give_one_clear_error():
    with pytest.raises(BenchError, match="did you mean 'dasr-iso'"):
        parse_suites("dasr_iso", 4)
    with pytest.raises(BenchError, match="has no key"):
        get_suite("dasr-iso:width=1")
    with pytest.raises(BenchError, match="out of range"):
        get_suite("dasr-aniso:k=12,noise=0")
    with pytest.raises(BenchError, match="x2, x3, x4"):
        parse_suites("dasr-iso", 8)


def test_synthesis_is_deterministic_and_seeded():
    hr = np.random.default_rng(8).random((48, 40, 3)).astype(np.float32)
    for name in ("noise:sigma=15", "mixed", "realistic", "div2krk"):
        s = get_suite(name)
        a, meta = synthesize(s, hr, 4, "img_001", 0)
        b, _ = synthesize(s, hr, 4, "img_001", 0)
        assert a.dtype == np.uint8 and a.shape == (12, 10, 3)
        assert a.tobytes() == b.tobytes(), name
        assert a.tobytes() != synthesize(s, hr, 4, "img_002", 0)[0].tobytes(), name
        assert a.tobytes() != synthesize(s, hr, 4, "img_001", 1)[0].tobytes(), name
        json.dumps(meta)
        assert meta["suite"] == name and meta["seed"] == 0
        clean = degrade_clean(s, hr, 4, "img_001", 0)
        assert clean.dtype == np.float32 and clean.shape == (12, 10, 3)
    clean = degrade_clean(get_suite("dasr-aniso:k=3,noise=10"), hr, 4, "i", 0)
    no_noise = synthesize(get_suite("dasr-aniso:k=3,noise=0"), hr, 4, "i", 0)[0]
    assert np.array_equal(_u8(clean), no_noise)
    _, meta = synthesize(get_suite("mixed"), hr, 4, "i", 0)
    assert [st["op"] for st in meta["steps"]] == ["blur", "resize", "noise", "jpeg"] and meta["steps"][3]["q"] == 60
    assert np.array(meta["kernel"]).shape == (21, 21)


def test_synthesize_rejects_bad_input():
    with pytest.raises(BenchError, match="divide 8-bit"):
        synthesize(get_suite("bicubic"), np.zeros((8, 8, 3), np.uint8), 4, "x", 0)
    with pytest.raises(BenchError, match="H x W x 3"):
        synthesize(get_suite("bicubic"), np.zeros((8, 8), np.float32), 4, "x", 0)


def test_realistic_pipeline_records_draws():
    hr = np.random.default_rng(9).random((64, 64, 3))
    out, info = realistic.second_order(hr, 4, np.random.default_rng(0))
    assert out.shape == (16, 16, 3) and 0 <= out.min() and out.max() <= 1
    assert set(info) == {"first", "second", "final"} and 30 <= info["final"]["jpeg_q"] <= 95
    sinc = realistic.sinc_kernel(math.pi / 3, 21)
    assert abs(sinc.sum() - 1) < 1e-12 and np.allclose(sinc, sinc.T)


def test_toml_suite(tmp_path):
    path = tmp_path / "suites.toml"
    path.write_text(
        """
[suite.my-cam]
description = "aniso blur, bicubic, noise drawn per image, JPEG"
steps = [
  { op = "blur", kernel = "aniso", theta = 30, l1 = 2.5, l2 = 1.0 },
  { op = "resize", method = "matlab" },
  { op = "noise", kind = "gaussian", sigma = [5, 15] },
  { op = "jpeg", q = 70 },
]
"""
    )
    suites = parse_suites("bicubic;my-cam", 4, extra_toml=path)
    assert [s.name for s in suites] == ["bicubic", "my-cam"]
    assert "my-cam" in list_families(path)
    cam = suites[1]
    hr = np.random.default_rng(10).random((40, 40, 3))
    a, meta = synthesize(cam, hr, 4, "a", 0)
    assert a.shape == (10, 10, 3) and a.tobytes() == synthesize(cam, hr, 4, "a", 0)[0].tobytes()
    sig_a = meta["steps"][2]["sigma"]
    sig_b = synthesize(cam, hr, 4, "b", 0)[1]["steps"][2]["sigma"]
    assert 5 <= sig_a <= 15 and sig_a != sig_b
    # Same steps as the built-in spelling of that degradation up to the noise draw.
    blur = kernels.anisotropic_gaussian(math.radians(30), 2.5, 1.0)
    expect = imresize(kernels.blur(hr, blur, "reflect"), 0.25)
    assert np.allclose(degrade_clean(cam, hr, 4, "a", 0), expect, atol=1e-6)
    bad = tmp_path / "bad.toml"
    bad.write_text('[suite.x]\nsteps = [ { op = "blurr" } ]\n')
    with pytest.raises(BenchError, match="did you mean 'blur'"):
        parse_suites("x", 4, extra_toml=bad)
    bad.write_text('[suite.x]\nsteps = [ { op = "blur", kernel = "iso", sigma = 1 } ]\n')
    with pytest.raises(BenchError, match="downsample exactly once"):
        parse_suites("x", 4, extra_toml=bad)
