"""The store keeps per-image records per cell; tables are views of it."""
from __future__ import annotations

import math

from bench.store import CellKey, Store
from bench.tables import SUMMARY_COLUMNS, markdown, summarize, write_all, latex


def _fill(store: Store):
    store.put_variant("-", "bicubic", "quick", 4, "classical", "", "", "", None, {})
    store.put_variant("quick:fit-abcd1234", "edsr-bicubic", "quick", 4, "fit", "", "10 it", "f" * 64, 12.0,
                      {"notes": ["stand-in loss"]})
    for variant, method, base in [("-", "bicubic", 20.0), ("quick:fit-abcd1234", "edsr-bicubic", 21.0)]:
        key = CellKey(method, variant, "embedded", "bicubic", 4, "paper-y")
        vals = {("a", "psnr"): base, ("b", "psnr"): base + 2, ("a", "lpips"): None, ("b", "lpips"): None,
                ("a", "niqe"): 5.0 - (base - 20), ("b", "niqe"): 6.0}
        store.write_cell(key, "run1", dict.fromkeys(["psnr", "lpips", "niqe"], "1"), vals, 2, 0.1)
    store.put_metric_note("lpips", False, "needs alexnet-owt-7be5be79.pth and LPIPS_v0.1_alex-df73285e.pth")


def test_cells_and_resume(tmp_path):
    s = Store(tmp_path / "r.sqlite")
    _fill(s)
    key = CellKey("bicubic", "-", "embedded", "bicubic", 4, "paper-y")
    assert s.done_metrics(key) == {"psnr", "lpips", "niqe"}
    assert s.done_metrics(key, {"psnr": "1", "niqe": "2"}) == {"psnr"}  # a new NIQE code version recomputes NIQE
    assert s.done_metrics(CellKey("bicubic", "-", "embedded", "noise:sigma=5", 4, "paper-y")) == set()
    s.fail_cell(CellKey("bicubic", "-", "embedded", "jpeg:q=30", 4, "paper-y"), "run1", "boom")
    assert s.done_metrics(CellKey("bicubic", "-", "embedded", "jpeg:q=30", 4, "paper-y")) == set()
    # the same names with other content are another cell
    assert s.done_metrics(CellKey("bicubic", "-", "embedded", "bicubic", 4, "paper-y", dataset_digest="x")) == set()
    assert s.done_metrics(CellKey("my-sr", "-", "embedded", "bicubic", 4, "paper-y")) == set()
    s.close()
    s2 = Store(tmp_path / "r.sqlite")  # reopened: everything is still there
    assert s2.done_metrics(key) == {"psnr", "lpips", "niqe"}


def test_summary_and_tables(tmp_path):
    s = Store(tmp_path / "r.sqlite")
    _fill(s)
    v = summarize(s)
    assert list(v.summary.columns) == SUMMARY_COLUMNS
    row = v.summary[(v.summary.method == "bicubic") & (v.summary.metric == "psnr")].iloc[0]
    assert row.value == 21.0 and row.n_images == 2
    assert math.isnan(v.summary[(v.summary.metric == "lpips")].value.iloc[0])
    md = markdown(v)
    assert "**22.00**" in md  # best PSNR bold (edsr-bicubic mean 22)
    assert "**5.000**" in md  # NIQE: lower is better -> edsr-bicubic 5.0 bold
    assert "NIQE ↓" in md and "PSNR ↑" in md
    assert "n/a" in md and "alexnet-owt-7be5be79.pth" in md
    assert "budget 10 it" in md and "stand-in loss" in md
    tex = latex(v)
    assert r"\textbf{22.00}" in tex and r"\toprule" in tex
    paths = write_all(s, tmp_path / "out")
    assert paths["summary"].read_text().splitlines()[0] == ",".join(SUMMARY_COLUMNS)
