"""Degradation fidelity: scores of known models, kernel alignment, and the CLI end to end (smoke)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from bench import fidelity as F
from bench.adapter import BenchError
from bench.data import dead_leaves
from bench.degrade import degrade_clean, get_suite, imresize, synthesize
from bench.degrade.kernels import blur, manet_kernel
from bench.degrade.noise import add_awgn
from bench.degrade.resize import sfold


@pytest.fixture(scope="module")
def hr() -> np.ndarray:
    return dead_leaves(128, np.random.default_rng(7)).astype(np.float32)


@pytest.fixture(scope="module")
def big_hr() -> np.ndarray:
    # noise scores are means over LR pixels: 96 x 96 LR keeps their sampling error small (~0.3 on the MSE)
    return dead_leaves(384, np.random.default_rng(8)).astype(np.float32)


def true_model(suite, image_id: str, sigma: float, bias: float = 0.0):
    """A sampler whose draws ARE the suite's degradation: clean LR (+ bias) + AWGN."""
    def sample(h: np.ndarray, k: int) -> np.ndarray:
        clean = degrade_clean(suite, h, 4, image_id, 0).astype(np.float64) + bias / 255.0
        return add_awgn(clean, sigma, np.random.default_rng([11, k])) if sigma else clean
    return sample


def test_perfect_noisy_model_scores_high_and_matches_sigma(big_hr):
    suite = get_suite("noise:sigma=15")
    s = F.score_image(true_model(suite, "img", 15.0), big_hr, suite, 4, "img", 0, 8)
    assert s.draws_used == 8
    assert s.det_psnr > 45.0  # noise-corrected; the raw mean of 8 draws would read about 33.6 dB
    assert s.det_mse_raw == pytest.approx(15.0 ** 2 / 8, rel=0.15)
    assert s.sigma_true == 15.0
    assert abs(s.sigma_gen - 15.0) < 0.5


def test_correction_keeps_a_real_bias(big_hr):
    # a +2 level offset must survive the noise correction (MSE 4), not be absorbed by it
    suite = get_suite("noise:sigma=15")
    s = F.score_image(true_model(suite, "img", 15.0, bias=2.0), big_hr, suite, 4, "img", 0, 8)
    assert s.det_mse == pytest.approx(4.0, abs=0.8)
    assert s.det_mse_raw > s.det_mse + 20.0


def test_noiseless_model_loses_on_sigma_not_on_det(big_hr):
    suite = get_suite("noise:sigma=15")
    s = F.score_image(true_model(suite, "img", 0.0), big_hr, suite, 4, "img", 0, 8)
    assert s.draws_used == 1 and s.sigma_gen == 0.0
    assert s.det_psnr == F.PSNR_CAP


def test_bicubic_assumption_is_perfect_on_bicubic_suite(hr):
    suite = get_suite("bicubic")
    s = F.score_image(F.bicubic_sampler(4), hr, suite, 4, "img", 0, 8, kernel=F.bicubic_kernel(4))
    assert s.det_psnr == F.PSNR_CAP
    assert s.sigma_gen == 0.0 and s.sigma_true == 0.0
    assert s.kernel_l1 < 1e-9 and s.shift_y == pytest.approx(0.0, abs=1e-9)


def test_bicubic_assumption_is_imperfect_on_blurred_suite(hr):
    suite = get_suite("aniso:k=5")
    s = F.score_image(F.bicubic_sampler(4), hr, suite, 4, "img", 0, 8, kernel=F.bicubic_kernel(4))
    assert s.det_psnr < 35.0 and s.kernel_l1 > 0.1


@pytest.mark.parametrize("sigma", [5.0, 25.0])
def test_noise_sigma_recovered_with_8_draws(sigma):
    clean = np.random.default_rng(3).random((64, 64, 3))
    draws = [add_awgn(clean, sigma, np.random.default_rng([5, k])) for k in range(8)]
    stats = F.draw_statistics(draws)
    assert stats.n == 8
    assert abs(F.noise_sigma(stats, 4) - sigma) < 0.5


def test_true_sigma_from_suite_meta(hr):
    for name, want in (("noise:sigma=15", 15.0), ("mixed", 10.0), ("bicubic", 0.0)):
        _, meta = synthesize(get_suite(name), hr, 4, "img", 0)
        assert F.true_sigma(meta) == pytest.approx(want)
    assert F.true_sigma({"steps": [{"op": "realistic"}]}) is None


def test_kernel_alignment_recovers_shifted_kernel():
    k = manet_kernel(1, 4)
    shifted = np.zeros((27, 27))
    shifted[3 + 2:3 + 2 + 21, 3 - 3:3 - 3 + 21] = k  # moved by (+2, -3) from the centred place
    score = F.kernel_error(shifted, k)
    assert score.l1 < 1e-12
    assert score.shift == pytest.approx((2.0, -3.0), abs=1e-9)
    assert score.l1_raw > 0.5
    sub = np.clip(ndimage.shift(np.pad(k, 3), (0.4, -0.7), order=3), 0, None)
    score = F.kernel_error(sub, k)
    assert score.shift == pytest.approx((0.4, -0.7), abs=0.01)
    assert score.l1 < 0.06 < score.l1_raw
    with pytest.raises(BenchError, match="kernel"):
        F.kernel_error(np.zeros((5, 5)), k)


def test_bicubic_kernel_reproduces_imresize(hr):
    x = hr.astype(np.float64)
    via_kernel = sfold(blur(x, F.bicubic_kernel(4), "reflect"), 4)
    assert np.abs(via_kernel - imresize(x, 0.25))[4:-4, 4:-4].max() < 1e-12


@pytest.mark.parametrize("name", ["aniso:k=5", "manet-si:k=1,noise=0"])
def test_effective_kernel_is_the_suite(hr, name):
    suite = get_suite(name)
    _, meta = synthesize(suite, hr, 4, "img", 0)
    k = F.effective_kernel(suite, 4, meta)
    assert k is not None and k.sum() == pytest.approx(1.0)
    via_kernel = sfold(blur(hr.astype(np.float64), k, "reflect"), 4)
    clean = degrade_clean(suite, hr, 4, "img", 0)
    assert np.abs(via_kernel - clean)[6:-6, 6:-6].max() < 1e-5


def test_cli_smoke_end_to_end(tmp_path, capsys):
    out = tmp_path / "res"
    argv = ["--profile", "smoke", "--methods", "pdm,usr-da", "--suites", "noise:sigma=15", "--images",
            "chelsea,coffee", "--out", str(out), "--device", "cpu"]
    assert F.main(argv) == 0
    md = (out / "fidelity.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "x4" in line]
    assert len(rows) == 2 and rows[0].startswith("| bicubic assumption") and rows[1].startswith("| pdm ")
    assert "no degradation model (not scored): usr-da" in md
    csv = pd.read_csv(out / "fidelity.csv")
    base = csv[csv.variant == F.BASELINE].iloc[0]
    # the clean part of noise:sigma=15 IS bicubic: the baseline is exact there and misses all the noise
    assert base["|d sigma|"] == pytest.approx(15.0) and base["det PSNR"] == F.PSNR_CAP
    pdm = csv[csv.method == "pdm"].iloc[0]
    assert pdm["n images"] == 2 and np.isfinite(pdm["det PSNR"]) and np.isfinite(pdm["kernel L1"])
    assert pdm["variant"].startswith("smoke:fit-") and pdm["fit wall s"] > 0
    capsys.readouterr()
    # a second call reuses the stored rows and the cached fit: nothing is recomputed
    assert F.main(argv) == 0
    assert "fidelity:" not in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(out / "fidelity.csv"), csv)


@pytest.mark.parametrize("argv, match", [
    (["--draws", "4"], "--draws 4 is too few"),
    (["--images", "nosuch"], "not in the embedded test split"),
    (["--methods", "nosuch"], "unknown method"),
    (["--scales", "x"], "--scales"),
])
def test_cli_bad_input(tmp_path, argv, match):
    with pytest.raises(BenchError, match=match):
        F.main(["--profile", "smoke", "--out", str(tmp_path), *argv])


def test_which_methods_have_a_degradation_model():
    from bench.adapter import REGISTRY

    assert F.has_degradation_model(REGISTRY.get("pdm")) and F.has_degradation_model(REGISTRY.get("mssr"))
    # usr-da aligns features; crl-sr's degrade() samples synthetic training data, it models no target domain
    assert not F.has_degradation_model(REGISTRY.get("usr-da"))
    assert not F.has_degradation_model(REGISTRY.get("crl-sr"))


def test_beats_note_names_deterministic_generators_on_noisy_suites():
    frame = pd.DataFrame({
        "suite": ["noise:sigma=15"] * 3, "scale": [4] * 3, "variant": [F.BASELINE, "quick:fit-a", "quick:fit-b"],
        "method": ["-", "fssr", "mssr"], "det PSNR": [100.0, 30.0, 29.0], "|d sigma|": [15.0, 15.0, 7.5],
        "kernel L1": [float("nan")] * 3, "sigma gen": [0.0, 0.0, 7.5], "sigma true": [15.0] * 3})
    (line,) = F._beats(frame)
    assert "on |Δσ|: mssr" in line and line.endswith("assumption's): fssr")
    # on a noiseless suite a deterministic model is not singled out: σ gen 0 is then right
    (line,) = F._beats(frame.assign(**{"sigma true": 0.0, "|d sigma|": [0.0, 0.0, 7.5]}))
    assert "deterministic" not in line
