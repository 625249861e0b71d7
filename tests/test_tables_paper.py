"""Tables a paper would take: suite and metric order, upper bounds from MethodInfo, LaTeX escaping, PDFs."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
from PIL import Image

from bench.store import CellKey, Store
from bench.tables import latex, latex_escape, markdown, suite_sort_key, summarize


def _header(md: str, dataset: str) -> list[str]:
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"### {dataset} "))
    head = next(ln for ln in lines[start:] if ln.startswith("| method"))
    return [c.strip() for c in head.strip("|").split("|")]


def test_suites_keep_the_order_given_and_sigma_is_numeric(tmp_path, capsys):
    from bench.cli import main

    folder = tmp_path / "hr"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    out = tmp_path / "out"
    code = main(["--methods", "bicubic", "--datasets", f"tiny={folder}", "--suites", "noise;jpeg;bicubic",
                 "--metrics", "psnr", "--profile", "smoke", "--jobs", "1", "--no-timing", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    want = ["method", "noise:sigma=5", "noise:sigma=15", "noise:sigma=25", "jpeg:q=30", "jpeg:q=50", "jpeg:q=70",
            "bicubic"]
    assert _header((out / "results.md").read_text(), "tiny") == want
    tex = (out / "results.tex").read_text()
    assert "Method & noise:sigma=5 & noise:sigma=15 & noise:sigma=25 & jpeg:q=30" in tex
    # re-rendered from the store alone (no planned cells): the stored run spec keeps the order
    assert main(["tables", "--out", str(out)]) == 0
    assert _header((out / "results.md").read_text(), "tiny") == want


def test_suite_sort_key_families_declared_then_numeric():
    names = ["noise:sigma=25", "jpeg:q=30", "noise:sigma=5", "my-camera", "given", "bicubic", "noise:sigma=15",
             "dasr-aniso:k=2,noise=10", "dasr-aniso:k=10,noise=5", "dasr-aniso:k=2,noise=5"]
    assert sorted(names, key=suite_sort_key) == [
        "bicubic", "dasr-aniso:k=2,noise=5", "dasr-aniso:k=2,noise=10", "dasr-aniso:k=10,noise=5",
        "noise:sigma=5", "noise:sigma=15", "noise:sigma=25", "jpeg:q=30", "my-camera", "given"]


def _fill(store: Store, ub_info: dict, *, dataset="embedded", suite="bicubic", method_b="oracle"):
    store.put_variant("-", "bicubic", "quick", 4, "classical", "", "", "", None, {"upper_bound": False})
    store.put_variant("quick:fit-00000001", method_b, "quick", 4, "fit", suite, "10 it", "f" * 64, 1.0, ub_info)
    for variant, method, base in [("-", "bicubic", 20.0), ("quick:fit-00000001", method_b, 25.0)]:
        key = CellKey(method, variant, dataset, suite, 4, "paper-y")
        vals = {("a", "psnr"): base, ("a", "ssim"): base / 100, ("a", "niqe"): 30 - base, ("a", "lpips"): base / 100}
        # written in an order unlike the paper's, so a table that kept it would show it
        store.write_cell(key, "run1", dict.fromkeys(["niqe", "lpips", "ssim", "psnr"], "1"), vals, 1, 0.1)


def test_metrics_in_paper_order_and_upper_bounds_never_best(tmp_path):
    s = Store(tmp_path / "r.sqlite")
    _fill(s, {"upper_bound": True, "notes": []})
    md = markdown(summarize(s))
    heads = re.findall(r"^### embedded x4 — (\w+)", md, flags=re.M)
    assert heads == ["PSNR", "SSIM", "LPIPS", "NIQE"]
    assert "**" not in md.split("Notes:")[0]  # oracle leads everywhere, but only bicubic competes: nothing bold
    assert "`oracle` is an upper bound" in md
    # the flag decides, not the name: an oracle stored without it competes, another flagged method does not
    s2 = Store(tmp_path / "r2.sqlite")
    _fill(s2, {"upper_bound": False, "notes": []})
    assert "**25.00**" in markdown(summarize(s2))
    s3 = Store(tmp_path / "r3.sqlite")
    _fill(s3, {"upper_bound": True, "notes": []}, method_b="my-bound")
    md3 = markdown(summarize(s3))
    assert "**" not in md3.split("Notes:")[0] and "`my-bound` is an upper bound" in md3


def test_metrics_follow_the_runs_metrics_order(tmp_path):
    s = Store(tmp_path / "r.sqlite")
    _fill(s, {"upper_bound": False})
    s.begin_run("run1", {"metrics": ["niqe", "psnr", "ssim", "lpips"], "suites": "bicubic", "scales": [4]}, "h", {})
    heads = re.findall(r"^### embedded x4 — (\w+)", markdown(summarize(s)), flags=re.M)
    assert heads == ["NIQE", "PSNR", "SSIM", "LPIPS"]


def test_oracle_flag_comes_from_method_info():
    from bench.adapter import REGISTRY

    assert REGISTRY.get("oracle").info.upper_bound
    assert not any(REGISTRY.get(n).info.upper_bound for n in REGISTRY.names() if n != "oracle")


def test_latex_escapes_specials_in_captions_and_cells(tmp_path):
    assert latex_escape(r"a_b & 50% $x #1 {y} ~^ \ ") == (
        r"a\_b \& 50\% \$x \#1 \{y\} \textasciitilde{}\textasciicircum{} \textbackslash{} ")
    s = Store(tmp_path / "r.sqlite")
    _fill(s, {"upper_bound": False}, dataset="my_set&50%", suite="cam_1#$", method_b="my_sr")
    tex = latex(summarize(s))
    assert r"\caption{my\_set\&50\% $\times4$, PSNR $\uparrow$ (paper-y)}" in tex
    assert r"Method & cam\_1\#\$ \\" in tex
    assert r"my\_sr & \textbf{25.00} \\" in tex
    body = "\n".join(ln for ln in tex.splitlines() if not ln.startswith("%"))
    unescaped = re.findall(r"(?<!\\)[_%#]", body)
    assert not unescaped, unescaped


def test_paper_table_latex_escapes(tmp_path):
    from bench.papers.render import _tex

    assert _tex("DASR<sup>1,2</sup> & 50% of x_1 Δ σ") == r"DASR$^{1,2}$ \& 50\% of x\_1 $\Delta$ $\sigma$"


def test_strength_plots_write_pdf_beside_png(tmp_path):
    from bench.figures import strength_plots

    rows = [("bicubic", "-", "tiny", f"noise:sigma={s}", 4, "paper-y", "psnr", 30.0 - s / 5, 2) for s in (5, 15, 25)]
    summary = pd.DataFrame(rows, columns=["method", "variant", "dataset", "suite", "scale", "protocol", "metric",
                                          "value", "n_images"])
    (fig,) = strength_plots(tmp_path, summary)
    assert fig.path.suffix == ".png" and fig.path.is_file()
    assert fig.pdf.is_file() and fig.pdf.read_bytes()[:5] == b"%PDF-"
