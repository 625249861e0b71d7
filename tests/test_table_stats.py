"""Bootstrap intervals, paired tests, the domain-gap table, undertrained marks and fit-seed rows."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench.stats import MIN_CI_IMAGES, Bootstrap, Resampler
from bench.store import CellKey, Store
from bench.tables import SUMMARY_COLUMNS, latex, markdown, summarize, write_all

IMAGES = [f"im{i}" for i in range(6)]


# -- the statistics, against cases whose answer is known ------------------------------------
def test_bootstrap_mean_matches_the_enumerated_distribution():
    # 5 images, one of them 1: a resample's mean is k/5 with k ~ Binomial(5, 1/5), so
    # P(mean = 0) = 0.8^5 = 0.33 > 2.5% and P(mean >= 0.8) = 0.0067 < 2.5% < P(mean >= 0.6) = 0.058:
    # the 95% percentile interval is exactly [0, 0.6]
    iv = Resampler().mean([0, 0, 0, 0, 1])
    assert (iv.value, iv.low, iv.high, iv.n) == (0.2, 0.0, 0.6, 5)
    same = Resampler().mean([3.5] * 7)
    assert same.low == same.high == 3.5 and same.half_width == 0


def test_paired_difference_known_answers():
    rs = Resampler()
    base = np.array([20.0, 21.5, 19.0, 23.0, 22.0, 20.5])
    up = rs.paired(base + 1, base)  # +1 on every image: a zero-width interval at 1, far from 0
    assert (up.value, up.low, up.high) == (1.0, 1.0, 1.0) and up.excludes_zero
    sym = rs.paired(base + np.array([1, -1, 1, -1, 1, -1]), base)  # +-1: mean 0, the interval straddles it
    assert sym.value == 0 and sym.low < 0 < sym.high and not sym.excludes_zero
    few = rs.paired(base[:MIN_CI_IMAGES - 1] + 1, base[:MIN_CI_IMAGES - 1])
    assert few.value == 1 and math.isnan(few.low) and not few.defined and not few.excludes_zero


def test_intervals_are_reproducible_and_follow_the_seed():
    v = np.random.default_rng(7).normal(25, 2, size=40)
    a, b = Resampler(Bootstrap(seed=0)).mean(v), Resampler(Bootstrap(seed=0)).mean(v)
    assert (a.low, a.high) == (b.low, b.high)
    c = Resampler(Bootstrap(seed=1)).mean(v)
    assert (a.low, a.high) != (c.low, c.high)
    assert a.low < v.mean() < a.high


def test_gap_closed_hand_checkable():
    g = Resampler().gap_closed([21.0] * 6, [20.0] * 6, [22.0] * 6)
    assert (g.delta.value, g.delta.low, g.delta.high) == (1.0, 1.0, 1.0)
    assert (g.closed.value, g.closed.low, g.closed.high) == (50.0, 50.0, 50.0)
    flat = Resampler().gap_closed([21, 20, 21, 20, 21, 20], [20.0] * 6, [21, 19, 21, 19, 21, 19])
    assert not flat.gap.excludes_zero and math.isnan(flat.closed.value)  # no gap: no share of it


# -- tables built from a store written directly -----------------------------------------------
def _variant(s, method, variant, *, family, objective="psnr", domain="", upper=False, home=(), training=None):
    source = "classical" if family == "classical" else "fit"
    s.put_variant(variant, method, "quick", 4, source, domain, "10 it", "f" * 64, 1.0,
                  {"family": family, "objective": "" if family == "classical" else objective, "upper_bound": upper,
                   "home_suites": list(home), "notes": [], "training": training or {}})


def _cell(s, method, variant, suite, values, metric="psnr"):
    key = CellKey(method, variant, "embedded", suite, 4, "paper-y")
    s.write_cell(key, "run1", {metric: "1"}, {(im, metric): v for im, v in zip(IMAGES, values)}, len(values), 0.1)


def _store(tmp_path, *, oracle=22.0, n=6):
    s = Store(tmp_path / "results.sqlite")
    _variant(s, "bicubic", "-", family="classical")
    _variant(s, "edsr-bicubic", "quick:fit-e", family="baseline")
    _variant(s, "oracle", "quick:fit-o", family="baseline", domain="mixed", upper=True)
    _variant(s, "fssr", "quick:fit-f", family="unpaired", objective="perceptual", domain="mixed")
    _variant(s, "usr-da", "quick:fit-u", family="unpaired", domain="mixed")
    _variant(s, "dasr-wang", "quick:fit-d", family="blind-synthetic", home=("aniso",))
    for suite, bic in (("bicubic", 24.0), ("mixed", 19.0), ("aniso:k=5", 23.0)):
        _cell(s, "bicubic", "-", suite, [bic + 0.1 * i for i in range(n)])
        _cell(s, "edsr-bicubic", "quick:fit-e", suite, [bic + 1] * n)
        _cell(s, "dasr-wang", "quick:fit-d", suite, [bic - 2 if suite.startswith("aniso") else bic + 1.5] * n)
    _cell(s, "oracle", "quick:fit-o", "mixed", [oracle] * n)
    _cell(s, "usr-da", "quick:fit-u", "mixed", [21.0] * n)  # edsr 20, oracle 22: half way
    _cell(s, "fssr", "quick:fit-f", "mixed", [19.0 + (0.5 if i % 2 else -0.5) for i in range(n)])
    return s


def test_summary_carries_intervals_tests_and_objective(tmp_path):
    v = summarize(_store(tmp_path))
    s = v.summary.set_index(["method", "suite"])
    assert list(v.summary.columns) == SUMMARY_COLUMNS
    row = s.loc[("edsr-bicubic", "mixed")]
    assert row.ci_low == row.ci_high == 20.0 and row.objective == "psnr" and row.n_seeds == 1
    assert row.diff_vs == "bicubic" and row.significant is True and row["diff"] == pytest.approx(20 - 19.25)
    assert s.loc[("fssr", "mixed")].objective == "perceptual"
    assert s.loc[("bicubic", "mixed")].diff_vs == "" and s.loc[("bicubic", "mixed")].significant is None
    off = summarize(_store(tmp_path / "b"), versus=None).summary
    assert (off["diff_vs"] == "").all() and off["significant"].isna().all()


def test_markdown_ci_marks_and_gap_table(tmp_path):
    s = _store(tmp_path)
    v = summarize(s)
    md = markdown(v)
    assert "±" not in md.split("Notes:")[0]  # intervals only on request
    assert "| method       | objective   |" in md and "| fssr         | perceptual  |" in md
    assert r"20.00\*" in md  # edsr-bicubic on mixed: +0.75 dB on every image over bicubic
    assert "fssr         | perceptual  | –" in md and r"19.00 " in md and r"19.00\*" not in md  # +-0.5: n.s.
    ci = markdown(v, ci=True)
    assert r"20.00\* ±0.00" in ci and "±" in ci and "B = 2000" in ci and "n<5" in ci  # the footnote names it
    heads = [ln for ln in md.splitlines() if "target domain" in ln and ln.startswith("###")]
    assert heads == ["### embedded x4 — PSNR ↑ on each method's target domain (paper-y)"]
    gap = md.split(heads[0])[1].split("Notes:")[0]
    assert "| usr-da   | mixed    | 21.00  | +1.00 [+1.00, +1.00]" in gap and "50% [50, 50]" in gap
    assert "| fssr     | mixed    | 19.00  | -1.00 [" in gap  # Δ is method − edsr-bicubic, also where negative
    assert "% of edsr-bicubic → oracle gap closed" in gap
    tex = latex(v, ci=True)
    assert r"20.00\textsuperscript{*} $\pm$0.00" in tex and r"\% of edsr-bicubic $\rightarrow$ oracle" in tex
    assert "Objective" in tex


def test_below_the_minimum_no_interval_and_no_mark(tmp_path):
    v = summarize(_store(tmp_path, n=MIN_CI_IMAGES - 1))
    assert v.summary["ci_low"].isna().all() and v.summary["significant"].isna().all()
    ci = markdown(v, ci=True)
    table = ci.split("Notes:")[0]
    assert f"20.00 n<{MIN_CI_IMAGES}" in table and "±" not in table and r"\*" not in table
    assert f"+1.00 n<{MIN_CI_IMAGES}" in table
    assert rf"20.00 ($n<{MIN_CI_IMAGES}$)" in latex(v, ci=True)


def test_undertrained_marks(tmp_path):
    # (a) the oracle below edsr-bicubic on its own column; (b) dasr-wang 2 dB below bicubic on aniso
    v = summarize(_store(tmp_path, oracle=19.5))
    md = markdown(v)
    assert r"19.50\*‡" in md
    assert ("`oracle` on `mixed`: undertrained at this profile (quick) (below edsr-bicubic: embedded x4: 19.50 vs "
            "edsr-bicubic 20.00), so it is no bound there") in md
    # dasr-wang on its home suite only (its bicubic column is the first after the objective)
    assert r"21.00\*‡" in md and "‡" not in md.split("dasr-wang")[1].split("|")[2]
    assert ("`dasr-wang`: undertrained at this profile (quick) (more than 1.0 dB below bicubic on its home "
            "suite(s) `aniso:k=5`") in md
    assert "usr-da" not in [u.method for u in v.undertrained]  # on its home domain, above bicubic
    marked = v.summary[v.summary.undertrained][["method", "suite"]].values.tolist()
    assert sorted(marked) == [["dasr-wang", "aniso:k=5"], ["oracle", "mixed"]]
    assert r"19.50\textsuperscript{*\ddag{}}" in latex(v)
    # no share of the gap to a bound that bounds nothing there
    gap = md.split("target domain (paper-y)")[1]
    assert "| usr-da   | mixed    | 21.00  | +1.00 [+1.00, +1.00] | no bound (‡)" in gap
    assert [u.method for u in summarize(_store(tmp_path / "b")).undertrained] == ["dasr-wang"]  # oracle 22 > 20


def test_perceptual_methods_footnote_when_lpips_is_na(tmp_path):
    s = _store(tmp_path)
    assert "trade PSNR for realism" not in markdown(summarize(s))
    s.put_metric_note("lpips", False, "needs alexnet-owt-7be5be79.pth")
    md = markdown(summarize(s))
    assert "perceptual-objective methods (`fssr`) trade PSNR for realism by design" in md
    assert "(needs alexnet-owt-7be5be79.pth), so they are shown by PSNR only" in md


def test_fit_seeds_are_one_row(tmp_path):
    s = _store(tmp_path)
    for k, base in enumerate((21.0, 21.2, 21.4)):
        variant = "quick:fit-s0" if k == 0 else f"quick+seed{k}:fit-s{k}"
        _variant(s, "mssr", variant, family="unpaired", domain="mixed",
                 training={"fit_seed": k, "seed_group": "g1", "target": "mixed"})
        _cell(s, "mssr", variant, "mixed", [base + 0.02 * i for i in range(6)])
    v = summarize(s)
    rows = v.summary[v.summary.method == "mssr"]
    assert len(rows) == 1
    r = rows.iloc[0]
    assert r.variant == "quick:fit-s0" and r.n_seeds == 3 and r.n_images == 6
    assert r.value == pytest.approx(21.25) and r.seed_std == pytest.approx(0.2)
    assert r.seed_variants == "quick+seed1:fit-s1;quick+seed2:fit-s2;quick:fit-s0"
    # the image interval resamples the per-image mean over seeds: 21.2 + 0.02 i, so it lies inside its range
    assert 21.2 <= r.ci_low < r.value < r.ci_high <= 21.3
    md = markdown(v)
    assert "| mssr (3 seeds) |" in md and "**21.25**\\* (s.d. 0.20)" in md
    assert r"**21.25**\* ±0.03 (s.d. 0.20)" in markdown(v, ci=True)
    assert "one row for its fits with 3 training seeds" in md and "`(k seeds)` rows" in md
    assert "| mssr (3 seeds) | mixed    | 21.25  | +1.25 [" in md.split("target domain (paper-y)")[1]


def test_write_all_and_the_tables_command(tmp_path, capsys):
    from bench.cli import main

    s = _store(tmp_path / "out")
    paths = write_all(s, tmp_path / "out", ci=True)
    data = json.loads(paths["json"].read_text())
    assert data["statistics"]["resamples"] == 2000 and data["statistics"]["versus"] == "bicubic"
    (gap,) = [g for g in data["gaps"] if g["method"] == "usr-da"]
    assert gap["delta"] == 1.0 and gap["closed"] == 50.0 and gap["gap_significant"] is True
    assert {"ci_low", "ci_high", "diff", "significant", "n_seeds", "seed_std"} <= set(data["summary"][0])
    assert "±" in paths["markdown"].read_text()
    s.close()
    out = str(tmp_path / "out")
    assert main(["tables", "--out", out, "--versus", "none"]) == 0
    md = (tmp_path / "out" / "results.md").read_text()
    assert r"\*" not in md and "±" not in md.split("Notes:")[0]
    assert main(["tables", "--out", out, "--ci", "--versus", "edsr-bicubic"]) == 0
    md = (tmp_path / "out" / "results.md").read_text()
    assert "±" in md and "to `edsr-bicubic` on the same column" in md
    assert main(["tables", "--out", out, "--versus", "no-such-method"]) != 0
    assert "no-such-method" in capsys.readouterr().err


def test_run_flags_reach_the_tables(tmp_path, capsys):
    from PIL import Image

    from bench.cli import main

    folder = tmp_path / "hr"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(MIN_CI_IMAGES):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    out = tmp_path / "out"
    code = main(["--methods", "bicubic", "--datasets", f"tiny={folder}", "--suites", "bicubic", "--metrics", "psnr",
                 "--profile", "smoke", "--jobs", "1", "--no-timing", "--out", str(out), "--ci", "--versus", "none"])
    assert code == 0, capsys.readouterr().err
    assert "±" in (out / "results.md").read_text()
    assert json.loads((out / "results.json").read_text())["statistics"]["versus"] is None
