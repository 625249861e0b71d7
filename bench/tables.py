"""Views of the results store: Markdown, LaTeX, CSV, JSON, and the tidy ``summary.csv``.

Nothing here recomputes a number: every value is a mean over per-image records in the
store. Each learned method's profile, budget and model source go in a footnote;
metrics that could not run show ``n/a`` with their reason.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd
from tabulate import tabulate

from .store import CellKey, Store

SUMMARY_COLUMNS = ["method", "variant", "dataset", "suite", "scale", "protocol", "metric", "value", "n_images"]
DISPLAY = ["method", "variant", "dataset", "suite", "scale", "protocol"]
METRIC_LABEL = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "niqe": "NIQE"}
LOWER_BETTER = {"lpips", "niqe"}
DIGITS = {"psnr": 2, "ssim": 4, "lpips": 4, "niqe": 3}


@dataclass(frozen=True)
class Views:
    summary: pd.DataFrame
    variants: dict
    metric_notes: dict
    runs: list
    #: run id -> how many of the rendered cells it wrote
    rendered: dict


def not_competing(views: "Views") -> set[str]:
    """Methods shown but never marked best: upper bounds, told what others are not."""
    return {m for (m, _), meta in views.variants.items() if meta["info"].get("upper_bound")}


def summarize(store: Store, cells: Iterable[CellKey] | None = None, run: str | None = None) -> Views:
    """Mean over images per (method, variant, dataset, suite, scale, protocol, metric).

    ``cells``: exactly these content keys (what a run planned); ``run``: the cells that
    run wrote; neither: for every name, the latest stored content (a dataset edited
    between runs leaves its older cells in the store, and they are not averaged in).
    """
    rec = pd.DataFrame(store.records(), columns=[*DISPLAY, "image", "metric", "value", "cell_id", "run_id",
                                                 "finished"])
    if cells is not None:
        rec = rec[rec.cell_id.isin({c.cell_id for c in cells})]
    elif run is not None:
        rec = rec[rec.run_id == run]
    if not rec.empty:
        latest = rec.sort_values("finished", na_position="first").groupby(DISPLAY, sort=False)["cell_id"].last()
        rec = rec[rec.cell_id.isin(set(latest))]
    rendered = rec.groupby("run_id")["cell_id"].nunique().to_dict() if not rec.empty else {}
    keys = ["method", "variant", "dataset", "suite", "scale", "protocol", "metric"]
    if rec.empty:
        summary = pd.DataFrame(columns=SUMMARY_COLUMNS)
    else:
        g = rec.groupby(keys, sort=True, dropna=False)
        summary = g["value"].agg(lambda v: v.mean() if v.notna().all() else float("nan")).rename("value").to_frame()
        summary["n_images"] = g["image"].nunique()
        summary = summary.reset_index()[SUMMARY_COLUMNS]
    return Views(summary, store.variants(), store.metric_notes(), store.runs(), rendered)


def rendered_line(views: Views) -> str:
    """Which runs a table shows, for the reader of a store that several runs wrote."""
    if not views.rendered:
        return "no cells"
    parts = [f"{r} ({n} cells)" for r, n in sorted(views.rendered.items())]
    return f"cells from {len(parts)} run(s): " + ", ".join(parts)


def _fmt(metric: str, v: float) -> str:
    return "n/a" if pd.isna(v) else f"{v:.{DIGITS.get(metric, 4)}f}"


def _footnotes(views: Views) -> list[str]:
    notes = []
    used = set(zip(views.summary["method"], views.summary["variant"])) if not views.summary.empty else set()
    for mv in sorted(used):
        v = mv[1]
        meta = views.variants.get(mv)
        if not meta or meta["source"] == "classical":
            continue
        if meta["source"] == "fit":
            line = (f"`{meta['method']}` x{meta['scale']} ({v}): trained here, profile {meta['profile']}, "
                    f"budget {meta['budget']}" + (f", {meta['wall_s']:.0f}s" if meta["wall_s"] else "")
                    + (f", target domain `{meta['domain']}`" if meta["domain"] else ""))
        else:
            line = f"`{meta['method']}` x{meta['scale']} ({v}): checkpoint sha256 {meta['sha256']}"
        extra = [n for n in meta["info"].get("notes", []) if n]
        if extra:
            line += "; " + "; ".join(extra)
        notes.append(line)
    for m, reason in sorted(views.metric_notes.items()):
        if m in set(views.summary["metric"]):
            notes.append(f"{METRIC_LABEL.get(m, m)} n/a: {reason}")
    if "given" in set(views.summary["suite"]):
        notes.append("suite `given`: the dataset's own LR images; methods fitted per domain use their fit to the run's "
                     "target domain (`--target`), since test images never enter training.")
    for m in sorted(not_competing(views) & set(views.summary["method"])):
        notes.append(f"`{m}` is told the true degradation (an upper bound) and is never marked best.")
    if len(views.rendered) > 1:
        notes.append("Rendered: " + rendered_line(views) + ".")
    return notes


#: a cell the run did not plan (e.g. a per-domain method on a suite that is not its domain)
NOT_RUN = "–"


def grids(views: Views) -> list[tuple[str, str, int, str, pd.DataFrame, pd.DataFrame]]:
    """(dataset, protocol, scale, metric, methods x suites means, methods x suites ran?)."""
    s = views.summary
    out = []
    if s.empty:
        return out
    for (ds, proto, scale, metric), part in s.groupby(["dataset", "protocol", "scale", "metric"], sort=False):
        part = part.assign(row=row_labels(part))
        frame = part.pivot_table(index="row", columns="suite", values="value", aggfunc="first", dropna=False)
        ran = part.pivot_table(index="row", columns="suite", values="n_images", aggfunc="size",
                               fill_value=0).reindex_like(frame).fillna(0) > 0
        frame.index.name = ran.index.name = "method"
        out.append((ds, proto, int(scale), metric, frame, ran))
    return out


def row_labels(part: pd.DataFrame) -> pd.Series:
    """One row per (method, variant): the method's name alone when the table holds one
    variant of it, ``name (variant)`` when it holds several (a quick fit and a checkpoint)."""
    n = part.groupby("method")["variant"].transform("nunique")
    return part["method"].where(n <= 1, part["method"] + " (" + part["variant"] + ")")


def _bold_best(frame: pd.DataFrame, ran: pd.DataFrame, metric: str, wrap, skip: set[str] = frozenset()) -> pd.DataFrame:
    text = frame.apply(lambda col: col.map(lambda v: _fmt(metric, v))).astype(object)
    text = text.where(ran, NOT_RUN)
    for col in frame.columns:
        comp = frame[col].drop([m for m in frame.index if m.split(" (")[0] in skip]).dropna()
        if len(comp) > 1:
            best = comp.idxmin() if metric in LOWER_BETTER else comp.idxmax()
            text.loc[best, col] = wrap(text.loc[best, col])
    return text


def markdown(views: Views, title: str = "Results") -> str:
    lines = [f"# {title}", ""]
    any_not_run = False
    for ds, proto, scale, metric, frame, ran in grids(views):
        arrow = "↓" if metric in LOWER_BETTER else "↑"
        lines.append(f"### {ds} x{scale} — {METRIC_LABEL.get(metric, metric)} {arrow} ({proto})")
        lines.append("")
        text = _bold_best(frame, ran, metric, lambda s: f"**{s}**", not_competing(views))
        any_not_run |= not bool(ran.values.all())
        lines.append(tabulate(text.reset_index().values.tolist(), headers=["method", *map(str, text.columns)],
                              tablefmt="github", disable_numparse=True))
        lines.append("")
    notes = _footnotes(views)
    if any_not_run:
        notes.append(f"{NOT_RUN} = not run: methods fitted per target domain (oracle, unpaired) run on their "
                     "target domain only.")
    if notes:
        lines += ["Notes:", ""] + [f"{i}. {n}" for i, n in enumerate(notes, 1)] + [""]
    return "\n".join(lines)


def latex(views: Views) -> str:
    parts = []
    for ds, proto, scale, metric, frame, ran in grids(views):
        arrow = r"$\downarrow$" if metric in LOWER_BETTER else r"$\uparrow$"
        text = _bold_best(frame, ran, metric, lambda s: rf"\textbf{{{s}}}", not_competing(views)).replace(NOT_RUN, "--")
        cols = "l" + "c" * len(text.columns)
        esc = lambda s: str(s).replace("_", r"\_").replace("%", r"\%")  # noqa: E731
        rows = [" & ".join([esc(m), *map(str, r)]) + r" \\" for m, r in zip(text.index, text.values.tolist())]
        parts.append("\n".join([
            r"\begin{table}[t]\centering",
            rf"\caption{{{esc(ds)} $\times{scale}$, {METRIC_LABEL.get(metric, metric)} {arrow} ({esc(proto)})}}",
            rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
            " & ".join(["Method", *[esc(c) for c in text.columns]]) + r" \\", r"\midrule", *rows,
            r"\bottomrule", r"\end{tabular}", r"\end{table}",
        ]))
    notes = _footnotes(views)
    if notes:
        parts.append("% Notes:\n" + "\n".join(f"% {i}. {n}" for i, n in enumerate(notes, 1)))
    return "\n\n".join(parts) + "\n"


def runtime_markdown(store: Store) -> str:
    rows = store.timings()
    if not rows:
        return ""
    head = ["method", "variant", "device", "input", "precision", "ms (median)", "IQR ms", "MPix/s", "GFLOPs",
            "params", "peak MiB", "repeats"]
    body = [[r["method"], r["variant"], r["device"], r["input"], r["precision"], f"{r['ms_median']:.2f}",
             f"{r['ms_iqr']:.2f}", f"{r['mpix_s']:.3f}", "n/a" if r["gflops"] is None else f"{r['gflops']:.2f}",
             "n/a" if r["params"] is None else f"{r['params']:,}",
             "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}", r["repeats"]] for r in rows]
    out = ["# Runtime", "", tabulate(body, headers=head, tablefmt="github", disable_numparse=True), ""]
    kern = store.kernels()
    if kern:
        out += ["## Top kernels by device time", ""]
        df = pd.DataFrame(kern)
        for (method, variant, device, inp, prec), part in df.groupby(["method", "variant", "device", "input",
                                                                       "precision"]):
            out += [f"### {method} ({variant}) {device} {inp} {prec}", ""]
            out.append(tabulate([[k["name"][:80], k["calls"], f"{k['total_ms']:.3f}", f"{100 * k['share']:.1f}%"]
                                 for k in part.to_dict("records")],
                                headers=["kernel", "calls", "total ms", "share"], tablefmt="github",
                                disable_numparse=True))
            out.append("")
    return "\n".join(out)


def write_all(store: Store, out: str | Path, cells: Iterable[CellKey] | None = None,
              title: str = "UnpairedSR-Bench results", run: str | None = None) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    views = summarize(store, cells, run)
    paths = {
        "summary": out / "summary.csv",
        "markdown": out / "results.md",
        "latex": out / "results.tex",
        "json": out / "results.json",
    }
    views.summary.to_csv(paths["summary"], index=False, float_format="%.6f")
    paths["markdown"].write_text(markdown(views, title))
    paths["latex"].write_text(latex(views))
    paths["json"].write_text(json.dumps({
        "runs": views.runs,
        "variants": list(views.variants.values()),
        "rendered": views.rendered,
        "metric_notes": views.metric_notes,
        "footnotes": _footnotes(views),
        "summary": json.loads(views.summary.to_json(orient="records")),
    }, indent=1, default=str))
    rt = runtime_markdown(store)
    if rt:
        paths["runtime"] = out / "runtime.md"
        paths["runtime"].write_text(rt)
    return paths
