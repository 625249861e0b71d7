"""bench.metrics: values equal pyiqa's under the named protocols, known answers on
Set5/Set14, NIQE offline, LPIPS weight resolution and its code path (stand-in weights)."""
from __future__ import annotations

import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import metrics as M
from bench.adapter import BenchError
from tests._shared import requires_shared

torch.set_num_threads(1)


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def _bicubic_up(lr: np.ndarray, s: int) -> np.ndarray:
    """MATLAB-bicubic upscaling by pyiqa, rounded to 8-bit: the 'bicubic' SR."""
    from pyiqa.matlab_utils import imresize

    rgb = lr if lr.ndim == 3 else np.repeat(lr[..., None], 3, axis=2)  # loaders give RGB
    t = torch.from_numpy(rgb.transpose(2, 0, 1)[None].astype(np.float64) / 255.0)
    sr = imresize(t, scale=s).clamp(0, 1)[0].numpy().transpose(1, 2, 0)
    return np.round(sr * 255.0).astype(np.uint8)


def _pair(set_name: str, s: int, idx: int) -> tuple[np.ndarray, np.ndarray]:
    folder = requires_shared("datasets", set_name, f"image_SRF_{s}")
    hr = _read(folder / f"img_{idx:03d}_SRF_{s}_HR.png")
    lr = _read(folder / f"img_{idx:03d}_SRF_{s}_LR.png")
    return _bicubic_up(lr, s), hr


def _noisy(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=shape)
    smooth = np.cumsum(np.cumsum(base - 127.5, axis=0), axis=1)  # structure, not just noise
    a = np.clip((smooth - smooth.min()) / np.ptp(smooth) * 255, 0, 255).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-25, 26, size=shape), 0, 255).astype(np.uint8)
    return a, b


def _t(img: np.ndarray) -> torch.Tensor:
    """What pyiqa itself builds from an 8-bit file: float32 N x C x H x W in [0,1]."""
    a = img if img.ndim == 3 else img[..., None]
    return torch.from_numpy(a.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)


# ---------------------------------------------------------------------------
# specs and conversions
# ---------------------------------------------------------------------------
def test_specs_are_read_only_and_carry_direction():
    assert M.PROTOCOLS == ("paper-y", "rgb")
    assert set(M.METRICS) == {"psnr", "ssim", "lpips", "niqe"}
    assert [M.METRICS[k].lower_better for k in ("psnr", "ssim", "lpips", "niqe")] == [False, False, True, True]
    assert not M.METRICS["niqe"].full_reference and M.METRICS["lpips"].full_reference
    with pytest.raises(TypeError):
        M.METRICS["psnr"] = M.METRICS["ssim"]  # type: ignore[index]
    m = M.create_metric("ssim", scale=3)
    assert m.available and m.unavailable_reason is None and m.crop == 3 and not m.spec.lower_better


def test_y_bt601_and_luma_values():
    px = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0]]], dtype=np.uint8)
    y = M.to_y_bt601(px)[0]
    np.testing.assert_allclose(y, [235.0, 16.0, 16.0 + 65.481], atol=1e-9)
    np.testing.assert_allclose(M.to_luma(px)[0], [255.0, 0.0, 0.299 * 255], atol=1e-9)
    np.testing.assert_allclose(M.to_y_bt601(px.astype(np.float64) / 255.0), M.to_y_bt601(px), atol=1e-9)
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(M.to_luma(gray), gray)


def test_bad_inputs_give_one_clear_error():
    a, b = _noisy((40, 40, 3), 0)
    with pytest.raises(BenchError, match="differ in size"):
        M.psnr(a, b[:-4], crop=0, channel="y")
    with pytest.raises(BenchError, match=r"\[0, 1\]"):
        M.psnr(a.astype(np.float32), b.astype(np.float32) / 255, crop=0, channel="y")
    with pytest.raises(BenchError, match="dtype"):
        M.psnr(a.astype(np.int16), b, crop=0, channel="y")
    with pytest.raises(BenchError, match="did you mean 'ssim'"):
        M.create_metric("ssmi")
    with pytest.raises(BenchError, match="protocol"):
        M.create_metric("psnr", protocol="yiq")
    with pytest.raises(BenchError, match="gray=True"):
        M.psnr(a, b[..., 0], crop=0, channel="y")
    with pytest.raises(BenchError, match="full-reference"):
        M.create_metric("psnr")(a)
    with pytest.raises(BenchError, match="NIQE needs at least 96x96"):
        M.niqe(a, crop=0)


# ---------------------------------------------------------------------------
# equal to pyiqa
# ---------------------------------------------------------------------------
def _pyiqa_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = [_noisy((70, 90, 3), 1), _noisy((64, 64, 3), 2)]
    try:
        sr, hr = _pair("Set5", 4, 1)
        pairs.append((sr[100:220, 60:200], hr[100:220, 60:200]))  # pyiqa's SSIM is slow: a crop
    except pytest.skip.Exception:
        pass
    return pairs


@pytest.mark.parametrize("protocol", M.PROTOCOLS)
def test_psnr_ssim_equal_pyiqa(protocol):
    import pyiqa

    y = protocol == "paper-y"
    for crop in (0, 4):
        ref_p = pyiqa.create_metric("psnr", test_y_channel=y, color_space="ycbcr", crop_border=crop, device="cpu")
        ref_s = pyiqa.create_metric("ssim", test_y_channel=y, color_space="ycbcr", crop_border=crop, device="cpu")
        assert ref_s.net.downsample is False
        for sr, hr in _pyiqa_pairs():
            ch = "y" if y else "rgb"
            assert abs(M.psnr(sr, hr, crop=crop, channel=ch) - float(ref_p(_t(sr), _t(hr)))) < 1e-5
            assert abs(M.ssim(sr, hr, crop=crop, channel=ch) - float(ref_s(_t(sr), _t(hr)))) < 1e-5
            m = M.create_metric("ssim", protocol=protocol, scale=crop or 1)
            if crop:
                assert m(sr, hr) == M.ssim(sr, hr, crop=crop, channel=ch)


def test_gray_rule_equals_pyiqa_on_the_luma_channel():
    """gray=True scores SR luma against the one HR channel, as pyiqa scores 1-channel images."""
    import pyiqa

    sr, hr3 = _noisy((80, 72, 3), 3)
    hr = hr3[..., 1]  # a single-channel "file"
    luma = M.to_luma(sr)
    t_sr = torch.from_numpy(luma[None, None] / 255.0)
    # SSIM rounds the luma to 8-bit levels, half to even, on exact ties (299 R + 587 G + 114 B) / 1000
    t_sr8 = torch.from_numpy(np.round(luma)[None, None] / 255.0)
    assert np.any(np.abs(luma - np.floor(luma) - 0.5) < 1e-12)  # ties occur: the rule matters
    ref_p = pyiqa.create_metric("psnr", test_y_channel=True, color_space="ycbcr", crop_border=4, device="cpu")
    ref_s = pyiqa.create_metric("ssim", test_y_channel=True, color_space="ycbcr", crop_border=4, device="cpu")
    for protocol in M.PROTOCOLS:
        p = M.create_metric("psnr", protocol=protocol, scale=4)
        s = M.create_metric("ssim", protocol=protocol, scale=4)
        assert abs(p(sr, hr) - float(ref_p(t_sr, _t(hr)))) < 1e-5
        assert abs(s(sr, hr) - float(ref_s(t_sr8, _t(hr)))) < 1e-5
        # HR replicated to RGB but flagged gray: same value (its luma is the channel)
        assert abs(p(sr, np.repeat(hr[..., None], 3, 2), gray=True) - p(sr, hr)) < 1e-9


def test_ssim_torch_and_float_input_match_numpy():
    sr, hr = _noisy((50, 61, 3), 4)
    for ch in M.CHANNELS:
        ref = M.ssim(sr, hr, crop=2, channel=ch)
        a = M._pair_planes(sr, hr, 2, ch)
        t = [torch.from_numpy(p[None].copy()) for p in a]
        assert abs(float(M.ssim_torch(*t)[0]) - ref) < 1e-12
        assert abs(M.ssim(sr / 255.0, hr / 255.0, crop=2, channel=ch) - ref) < 1e-12
        assert abs(M.psnr(sr / 255.0, hr, crop=2, channel=ch) - M.psnr(sr, hr, crop=2, channel=ch)) < 1e-9


def test_batch_keeps_order_and_matches_single_calls():
    pairs = [(*_noisy((40 + 4 * k, 48, 3), 10 + k), False) for k in range(4)]
    m = M.create_metric("psnr", scale=2)
    single = [m(sr, hr) for sr, hr, _ in pairs]
    assert m.batch(pairs, jobs=1) == single
    assert m.batch(pairs, jobs=2) == single  # joblib across processes
    assert len(set(single)) == 4


# ---------------------------------------------------------------------------
# known answers (MATLAB-calibrated files in ../shared)
# ---------------------------------------------------------------------------
KNOWN = {  # (set, scale): (PSNR, SSIM) of bicubic upscaling, paper-y
    ("Set5", 2): (33.66, 0.9299),
    ("Set5", 3): (30.39, 0.8682),
    ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688),
    ("Set14", 3): (27.55, 0.7742),
    ("Set14", 4): (26.00, 0.7027),
}


@pytest.mark.parametrize("set_name,s", sorted(KNOWN))
def test_bicubic_known_answers(set_name, s):
    folder = requires_shared("datasets", set_name, f"image_SRF_{s}")
    n = len(list(folder.glob("*_HR.png")))
    p, q = M.create_metric("psnr", scale=s), M.create_metric("ssim", scale=s)
    pairs = [(*_pair(set_name, s, i), False) for i in range(1, n + 1)]
    psnr, ssim = np.mean(p.batch(pairs)), np.mean(q.batch(pairs))
    want_p, want_s = KNOWN[(set_name, s)]
    assert abs(psnr - want_p) <= 0.03, psnr
    assert abs(ssim - want_s) <= 0.001, ssim
    if (set_name, s) == ("Set5", 4):  # PROTOCOLS.md: measured 28.43 / 0.8102
        assert round(psnr, 2) == 28.43 and round(ssim, 4) == 0.8102
    if (set_name, s) == ("Set14", 4):
        # img_003 is single-channel: scored as Y of replicated RGB the mean reads 26.09.
        sr, hr = pairs[2][0], pairs[2][1]
        assert hr.ndim == 2
        as_rgb = np.repeat(hr[..., None], 3, axis=2)
        alt = psnr + (M.psnr(sr, as_rgb, crop=s, channel="y") - p(sr, hr)) / n
        assert abs(alt - 26.09) <= 0.03, alt


# ---------------------------------------------------------------------------
# NIQE
# ---------------------------------------------------------------------------
def test_niqe_known_answer_offline(monkeypatch):
    hr = _read(requires_shared("datasets", "Set14", "image_SRF_4", "img_001_SRF_4_HR.png"))

    def no_network(*args, **kwargs):
        raise AssertionError("NIQE tried to open a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    value = M.niqe(hr, crop=0)
    assert abs(value - 5.730) <= 0.01, value  # BasicSR 5.7296, MATLAB R2021a 5.72957
    m = M.create_metric("niqe", scale=4)
    assert m.spec.lower_better and m.crop == 4
    assert m(hr) == M.niqe(hr, crop=4)


def test_niqe_params_match_pyiqa_window():
    from pyiqa.matlab_utils import fspecial

    mu, cov = M.load_niqe_params()
    assert mu.shape == (36,) and cov.shape == (36, 36)
    assert torch.allclose(cov, cov.T)
    with np.load(Path(M.__file__).with_name("niqe_pris_params.npz")) as z:
        np.testing.assert_allclose(z["gaussian_window"], fspecial(7, 7 / 6).numpy()[0, 0], atol=1e-8)


def _niqe_cases() -> list[tuple[str, np.ndarray]]:
    """Natural images (scikit-image's bundled data) and the cases NIQE is fragile on:
    flat areas (the normalised value is a rounding residue), black areas (exact zeros),
    noise, a single-channel plane, and blocks whose second scale is not a whole block."""
    from skimage import data

    rng = np.random.default_rng(7)
    flat = np.full((200, 300, 3), 128, np.uint8)
    flat[40:160, 60:250] = rng.integers(0, 256, (120, 190, 3))
    half_black = np.zeros((250, 330), np.uint8)
    half_black[:, 100:] = rng.integers(0, 256, (250, 230))
    sky = np.clip(data.astronaut()[:300, :400].astype(int) // 16 * 16, 0, 255).astype(np.uint8)  # posterised
    return [
        ("astronaut", data.astronaut()[:360, :480]),
        ("coffee", data.coffee()),
        ("chelsea", data.chelsea()),
        ("camera (gray)", data.camera()[:300, :410]),
        ("posterised", sky),
        ("flat + noise", flat),
        ("half black", half_black),
        ("noise", rng.integers(0, 256, (196, 292, 3)).astype(np.uint8)),
    ]


def test_niqe_fast_paths_equal_the_previous_pyiqa_path():
    """The vectorised NIQE (numpy on the CPU, torch batched) against pyiqa's calculate_niqe,
    which the metric used before and which matches MATLAB: within 1e-4 on every image
    (in practice about 1e-8 on natural images, 1e-6 on the synthetic ones)."""
    mu, cov = M.load_niqe_params()
    for name, img in _niqe_cases():
        x = M._niqe_input(img, 4, name)
        with torch.inference_mode():
            before = float(M._niqe_tensor_pyiqa(x, mu, cov)[0])
            batched = float(M.niqe_torch(x, mu, cov)[0])
        now = M.niqe(img, crop=4, params=(mu, cov))
        assert math.isfinite(before), name
        assert abs(now - before) <= 1e-4, (name, now, before)
        assert abs(batched - before) <= 1e-4, (name, batched, before)
        assert abs(batched - now) <= 1e-9, (name, batched, now)


def test_niqe_steps_keep_pyiqa_arithmetic():
    """The steps NIQE is sensitive to reproduce pyiqa's exactly: the half-size image
    (float32, bit for bit), the grid lookup (pyiqa's argmin, ties and NaN included), the
    7x7 window, and the block products (pyiqa rolls each block)."""
    from pyiqa.archs.func_util import estimate_aggd_param
    from pyiqa.matlab_utils import fspecial
    from pyiqa.matlab_utils import imresize as pyiqa_imresize

    rng = np.random.default_rng(3)
    y = torch.from_numpy(np.round(rng.random((2, 192, 288)) * 255))
    ref = (pyiqa_imresize(y[:, None] / 255.0, scale=0.5, antialiasing=True) * 255.0)[:, 0]
    assert torch.equal(M._niqe_half(y), ref)
    assert np.array_equal(M._niqe_half_np(y[0].numpy()), ref[0].numpy())
    assert np.array_equal(M._niqe_window(), fspecial(7, 7 / 6).numpy()[0, 0].astype(np.float64))
    g = M._niqe_window_1d()
    assert abs(g.sum() ** 2 - M._niqe_window().sum()) < 1e-15 and np.abs(np.outer(g, g) - M._niqe_window()).max() < 3e-9

    table = M._niqe_aggd_table()
    f = torch.from_numpy(rng.standard_normal((40, 1, 24, 24)) * rng.random((40, 1, 1, 1)) ** 3)
    f[0] = f[0].abs()  # no negative values: NaN in pyiqa
    f[1] = 0.0
    f[2] = torch.sign(f[2])  # rhat exactly 1: beyond the grid's end
    alpha, left, right = estimate_aggd_param(f, return_sigma=True)
    idx, l2, r2 = M._niqe_aggd(f.reshape(40, -1), table)
    np.testing.assert_array_equal(table[0][idx].numpy(), alpha.numpy())
    torch.testing.assert_close(l2, left.reshape(-1), rtol=1e-13, atol=0, equal_nan=True)
    torch.testing.assert_close(r2, right.reshape(-1), rtol=1e-13, atol=0, equal_nan=True)
    idx_np, _, _ = M._niqe_aggd_np(f.reshape(40, -1).numpy(), [t.numpy() for t in table])
    np.testing.assert_array_equal(idx_np, idx.numpy())

    blocks = torch.from_numpy(rng.standard_normal((3, 6, 6)))
    for shift in M._NIQE_SHIFTS:
        assert torch.equal(M._rolled_product(blocks, shift), blocks * torch.roll(blocks, shift, dims=(1, 2)))


def test_niqe_batch_names_a_too_small_image():
    m = M.create_metric("niqe", scale=4)
    ok = _noisy((120, 120, 3), 50)[0]
    small = _noisy((90, 140, 3), 51)[0]
    with pytest.raises(BenchError, match=r"SR image img_002: NIQE needs at least 96x96 .* got 82x132"):
        m.batch([(ok, None, False), (small, None, False)], ids=["img_001", "img_002"])
    with pytest.raises(BenchError, match=r"SR image img_002: NIQE needs"):
        m._torch_batch(m._prepare([(ok, None, False), (small, None, False)]), ["SR image img_001", "SR image img_002"])
    with pytest.raises(BenchError, match="one id per image"):
        m.batch([(ok, None, False)], ids=["a", "b"])
    assert m.batch([(ok, None, False)], ids=["img_001"]) == [m(ok)]


# ---------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------
@pytest.fixture()
def empty_hub(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def _standin_weights(folder: Path) -> None:
    """Deterministic random AlexNet features and positive linear layers, saved under the
    release names: they exercise the code path and are never a score."""
    from torchvision.models import alexnet

    g = torch.Generator().manual_seed(0)
    net = alexnet(weights=None)
    feats = {}
    for k, v in net.features.state_dict().items():
        feats[f"features.{k}"] = torch.randn(v.shape, generator=g) * (0.05 if v.ndim > 1 else 0.01)
    torch.save(feats, folder / M.ALEXNET_FILE)
    lins = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(lins, folder / M.LPIPS_LIN_FILE)


def test_lpips_unavailable_names_both_files(tmp_path, empty_hub):
    m = M.create_metric("lpips", weights_dir=tmp_path)
    assert not m.available
    assert M.ALEXNET_FILE in m.unavailable_reason and M.LPIPS_LIN_FILE in m.unavailable_reason
    assert str(tmp_path) in m.unavailable_reason
    a, b = _noisy((32, 32, 3), 5)
    with pytest.raises(M.MetricUnavailable, match="alexnet-owt-7be5be79.pth"):
        m(a, b)


def test_lpips_standin_runs_and_hashes_are_checked(tmp_path, empty_hub):
    _standin_weights(tmp_path)
    # verified: the stand-ins do not carry the release digests
    alex, _lin, reason = M.resolve_lpips_weights(tmp_path)
    assert alex is None and "sha256" in reason and M.ALEXNET_FILE in reason
    assert not M.create_metric("lpips", weights_dir=tmp_path).available

    m = M.create_metric("lpips", weights_dir=tmp_path, verify_sha256=False)
    assert m.available and m.spec.lower_better and m.crop == 0
    a, b = _noisy((64, 80, 3), 6)
    assert abs(m(a, a)) < 1e-6
    d = m(a, b)
    assert d > 1e-4
    assert m.batch([(a, b, False), (a, a, False)], jobs=2) == pytest.approx([d, m(a, a)], abs=1e-6)
    assert abs(m(a / 255.0, b / 255.0) - d) < 1e-5


def test_lpips_network_equals_pyiqa_arch(tmp_path, monkeypatch):
    """Our LPIPS module gives pyiqa's LPIPS value for the same (stand-in) weights."""
    from pyiqa.archs import lpips_arch
    from torchvision.models import alexnet

    _standin_weights(tmp_path)
    ours = M.LpipsAlex(tmp_path / M.ALEXNET_FILE, tmp_path / M.LPIPS_LIN_FILE)
    # pyiqa's constructor fetches ImageNet weights; give it a bare AlexNet instead
    monkeypatch.setattr(lpips_arch.models, "alexnet", lambda **kw: alexnet(weights=None))
    ref = lpips_arch.LPIPS(pretrained=False, net="alex", version="0.1")
    feats = torch.load(tmp_path / M.ALEXNET_FILE, weights_only=True)
    state = dict(torch.load(tmp_path / M.LPIPS_LIN_FILE, weights_only=True))
    for k, (lo, hi) in enumerate(M._ALEX_STAGES):
        for i in range(lo, hi):
            for p in ("weight", "bias"):
                if f"features.{i}.{p}" in feats:
                    state[f"net.slice{k + 1}.{i}.{p}"] = feats[f"features.{i}.{p}"]
    missing, unexpected = ref.load_state_dict(state, strict=False)
    # pyiqa lists lin0..lin4 twice (as attributes and in `lins`); the scaling constants are buffers
    assert not unexpected and all(k.startswith(("scaling_layer.", "lins.")) for k in missing)
    ref.eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 3, 64, 72, generator=g), torch.rand(2, 3, 64, 72, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, y), ref(x, y).flatten(), rtol=1e-5, atol=1e-7)


def test_lpips_linear_layers_from_the_lpips_package(empty_hub):
    pytest.importorskip("lpips")
    _alex, lin, reason = M.resolve_lpips_weights(None)
    assert lin is not None and lin.name == "alex.pth"  # full sha256 matched
    assert M.ALEXNET_FILE in reason and M.LPIPS_LIN_FILE in reason


def test_torch_batch_path_matches_cpu_path():
    """The path used on CUDA (shape groups, torch SSIM, batched NIQE), run here on the CPU."""
    pairs = [(*_noisy((40, 44, 3), 20), False), (*_noisy((36, 44, 3), 21), False), (*_noisy((40, 44, 3), 22), False)]
    sr, hr = pairs[0][0], pairs[0][1]
    pairs.append((sr, hr[..., 0], True))
    for name in ("psnr", "ssim"):
        for protocol in M.PROTOCOLS:
            m = M.create_metric(name, protocol=protocol, scale=2)
            np.testing.assert_allclose(m._torch_batch(m._prepare(pairs)), m.batch(pairs), rtol=0, atol=1e-10)
    big = [(*_noisy((200, 200, 3), 23), False), (*_noisy((200, 200, 3), 24), True)]
    m = M.create_metric("niqe", scale=4)
    np.testing.assert_allclose(m._torch_batch(m._prepare(big)), m.batch(big), rtol=0, atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_matches_cpu(tmp_path, empty_hub):
    pairs = [(*_noisy((200, 208, 3), 30 + k), False) for k in range(3)] + [(*_noisy((200, 200, 3), 33), True)]
    for name in ("psnr", "ssim", "niqe"):
        for protocol in M.PROTOCOLS:
            cpu = M.create_metric(name, protocol=protocol, scale=4).batch(pairs)
            gpu = M.create_metric(name, protocol=protocol, scale=4, device="cuda").batch(pairs)
            # NIQE: pyiqa's pinv and reductions on the GPU move the 8th significant digit
            tol = dict(rtol=1e-6, atol=0) if name == "niqe" else dict(rtol=0, atol=1e-7)
            np.testing.assert_allclose(gpu, cpu, **tol)
    _standin_weights(tmp_path)
    cpu = M.create_metric("lpips", weights_dir=tmp_path, verify_sha256=False).batch(pairs)
    gpu = M.create_metric("lpips", weights_dir=tmp_path, verify_sha256=False, device="cuda").batch(pairs)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-6)  # needs TF32 off


def test_threaded_ssim_strips_equal_single_thread():
    sr, hr = _noisy((300, 170, 3), 40)
    for ch in ("y", "rgb"):
        pa, pb = M._pair_planes(sr, hr, 3, ch)
        one = M._ssim_planes(pa, pb, threads=1)
        assert abs(M._ssim_planes(pa, pb, threads=2) - one) < 1e-12
        assert abs(M._ssim_planes(pa, pb, threads=3) - one) < 1e-12
