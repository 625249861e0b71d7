"""A paper table in the paper's layout: reported, reproduced and Δ per cell.

Each printed row becomes three lines (``paper``, ``ours``, ``Δ``); rows the harness
cannot run show the reported line only; rows the paper did not print (a computed
bicubic baseline) show the ``ours`` line only. Footnotes are numbered per table and
attached as superscripts, so the Markdown renders on GitHub unchanged. Every value is a
view of the store's per-image records (``bench.tables.summarize``); reported values are
the text the spec holds.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
from tabulate import tabulate

from bench.tables import latex_escape, metric_digits, metric_label

from .run import TablePlan, TableRun
from .spec import Block, Reported, TableSpec

CSV_COLUMNS = ["table", "block", "scale", "row", "row_label", "method", "dataset", "column", "setting", "metric",
               "reported", "reported_status", "reported_source", "csv_method", "csv_protocol", "csv_noise",
               "reproduced", "delta", "n_images", "model", "notes"]


@dataclass
class Notes:
    """Numbered footnotes, each text once."""

    texts: list[str] = field(default_factory=list)

    def mark(self, text: str) -> int:
        if text not in self.texts:
            self.texts.append(text)
        return self.texts.index(text) + 1

    @staticmethod
    def sup(numbers: Sequence[int]) -> str:
        nums = sorted(set(numbers))
        return f"<sup>{','.join(map(str, nums))}</sup>" if nums else ""


@dataclass(frozen=True)
class Rendered:
    spec: TableSpec
    markdown: str  # the table section without its heading
    latex: str
    rows: list[dict]  # CSV rows (CSV_COLUMNS)
    notes: tuple[str, ...]


def _fmt(metric: str, v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{metric_digits(metric)}f}"


def _delta(metric: str, v: float) -> str:
    text = f"{abs(v):.{metric_digits(metric)}f}"
    if float(text) == 0:
        return text  # no sign on a difference that rounds to zero
    return ("+" if v > 0 else "−") + text


def _model_text(variants: Sequence[dict]) -> tuple[str, str]:
    """(short label for the 'ours' line, footnote text) for the variants behind one row/scale."""
    if not variants:
        return "ours", ""
    v = variants[0]
    if all(x["source"] == "classical" for x in variants):
        return "ours", ""
    if v["source"] == "checkpoint":
        return (f"ours (checkpoint {v['sha256'][:8]}…)",
                (f"`{v['method']}` x{v['scale']}: official checkpoint, sha256 {v['sha256']} "
                 f"(profile {v['profile']}, variant {v['variant']})."))
    parts = []
    for x in variants:
        doms = f", target domain `{x['domain']}`" if x.get("domain") else ""
        wall = f", {x['wall_s']:.0f}s" if x.get("wall_s") else ""
        parts.append(f"{x['variant']} (budget {x['budget']}{wall}{doms})")
    label = f"ours (trained, {v['profile']})"
    return label, (f"`{v['method']}` x{v['scale']}: trained here, profile {v['profile']}: " + "; ".join(parts)
                   + ". Profiles other than `paper` are reduced models and budgets, not the paper's recipe.")


class _Index:
    """Per-suite means of this table's cells, and why a cell is absent."""

    def __init__(self, summary: pd.DataFrame, cells_status: Sequence[Mapping], variants: Mapping[str, dict]):
        self.values: dict[tuple, tuple[float, int, str]] = {}
        for r in summary.itertuples(index=False):
            self.values[(r.method, r.dataset, r.suite, int(r.scale), r.metric)] = (
                float(r.value) if r.value is not None else float("nan"), int(r.n_images), r.variant)
        self.errors = {(c["method"], c["dataset"], c["suite"], int(c["scale"])): c["error"]
                       for c in cells_status if c.get("status") == "failed"}
        self.variants = variants

    def cell(self, method: str, dataset: str, suites: Sequence[str], scale: int, metric: str):
        """(mean value or None, n_images, variants, reason when absent)."""
        vals, ns, used = [], [], []
        for s in suites:
            key = (method, dataset, s, scale, metric)
            if key not in self.values:
                err = self.errors.get(key[:4])
                return None, 0, used, (f"failed: {err}" if err else "not computed")
            v, n, var = self.values[key]
            vals.append(v)
            ns.append(n)
            used.append(var)
        return (sum(vals) / len(vals) if vals else None), (min(ns) if ns else 0), used, ""


def _metrics_for(spec: TableSpec, dataset: str) -> tuple[str, ...]:
    rep = [m for r in spec.reported if dataset in r.values for m in r.metrics]
    got = tuple(m for m in spec.protocol.metrics if m in rep)
    return got or spec.protocol.metrics


def render(plan: TablePlan, run: TableRun | None, summary: pd.DataFrame, variants: Mapping[str, dict],
           cells_status: Sequence[Mapping], metric_notes: Mapping[str, str], gaps: Mapping[str, Sequence[str]]) -> Rendered:
    spec = plan.spec
    notes = Notes()
    idx = _Index(summary, cells_status, variants)
    reported = spec.reported_cells()
    ds_metrics = {d.name: _metrics_for(spec, d.name) for d in spec.datasets}
    differ = len(set(ds_metrics.values())) > 1
    out_md: list[str] = []
    out_tex: list[str] = []
    csv_rows: list[dict] = []
    status_of = {d.ref.name: d for d in plan.datasets}

    for block in spec.blocks:
        if block.scale not in plan.scales:
            continue
        cols = [(d.name, c) for d in spec.datasets for c in block.columns if not c.datasets or d.name in c.datasets]
        header = ["Method", ""]
        for ds, c in cols:
            st = status_of.get(ds)
            ref = spec.dataset(ds)
            marks = []
            if st is not None and (not st.kind or block.scale not in st.scales):
                why = st.missing or f"no images at x{block.scale}"
                marks.append(notes.mark(f"{ds}: not available in this run ({why})."))
            if ref.note and not any(ref.note in notes.texts[m - 1] for m in marks):
                marks.append(notes.mark(f"{ds}: {ref.note}"))
            mark = Notes.sup(marks)
            single = len([1 for d2, _ in cols if d2 == ds]) == 1 and len(block.columns) == 1
            h = ds + mark + ("" if single else f"<br>{c.label}")
            if differ:
                h += "<br>(" + "/".join(metric_label(m) for m in ds_metrics[ds]) + ")"
            header.append(h)
        lines: list[list[str]] = []
        for rp in plan.rows:
            row = rp.row
            printed = row.printed
            runs = rp.runs and block.scale in rp.scales and run is not None
            if not printed and not runs:
                continue
            row_notes = [notes.mark(row.note)] if row.note else []
            paper_line, ours_line, delta_line = [], [], []
            used_variants: list[str] = []
            sources: set[tuple[str, str]] = set()
            for ds, c in cols:
                metrics = ds_metrics[ds]
                st = status_of.get(ds)
                texts, statuses = [], set()
                for m in metrics:
                    got = reported.get((row.id, block.id, ds, c.label, m))
                    texts.append(got[0] if got else None)
                    if got:
                        statuses.add(got[1].status)
                        sources.add((got[1].source, got[1].status))
                nt = [r for r in spec.reported if r.row == row.id and r.block == block.id
                      and r.status == "not transcribed" and c.label in r.columns]
                if all(t is None for t in texts):
                    ptext = "n.t." if nt else "–"
                    if nt:
                        row_notes.append(notes.mark("n.t.: not transcribed; the paper's value is not in this project's "
                                                    "reference data yet (never invented)."))
                else:
                    ptext = "/".join(t if t is not None else "–" for t in texts)
                spec_notes = [notes.mark(f.text) for f in spec.footnotes if f.applies(row.id, block.id, ds, c.key)]
                cell_notes: list[int] = []
                ours_vals, deltas = [], []
                absent = ""
                n_img = 0
                if runs:
                    if st is None or not st.kind or block.scale not in st.scales:
                        absent = "missing"
                    for m in metrics:
                        if absent:
                            ours_vals.append(None)
                            continue
                        v, n, used, why = idx.cell(row.method, st.store_name, c.suites, block.scale, m)
                        used_variants += used
                        n_img = max(n_img, n)
                        if why:
                            cell_notes.append(notes.mark(f"{row.label} on {ds} ({c.label}, x{block.scale}): {why}"))
                            absent = absent or ("failed" if why.startswith("failed") else "—")
                        elif v is not None and math.isnan(v) and m in metric_notes:
                            cell_notes.append(notes.mark(f"{metric_label(m)} n/a: {metric_notes[m]}"))
                        ours_vals.append(v)
                    for m, t, v in zip(metrics, texts, ours_vals):
                        deltas.append(None if (t is None or v is None or math.isnan(v)) else v - float(t))
                sup = Notes.sup(cell_notes)
                has_delta = any(d is not None for d in deltas)
                # a spec footnote explains a difference: it sits on the Δ cell, or on the only line shown
                spec_sup = Notes.sup(spec_notes)
                paper_line.append(ptext + ("" if runs and printed else spec_sup))
                if runs:
                    ours_sup = sup + ("" if printed or absent else spec_sup)
                    if absent and all(v is None for v in ours_vals):
                        ours_line.append(absent + sup)
                    else:
                        ours_line.append("/".join(_fmt(m, v) for m, v in zip(metrics, ours_vals)) + ours_sup)
                    delta_line.append("/".join("–" if d is None else _delta(m, d) for m, d in zip(metrics, deltas))
                                      + spec_sup if has_delta else "–")
                for i, m in enumerate(metrics):
                    rep = reported.get((row.id, block.id, ds, c.label, m))
                    entry: Reported | None = rep[1] if rep else None
                    csv_rows.append({
                        "table": spec.id, "block": block.id, "scale": block.scale, "row": row.id,
                        "row_label": row.label, "method": row.method if runs else "", "dataset": ds,
                        "column": c.label, "setting": c.key, "metric": m,
                        "reported": texts[i] if texts[i] is not None else ("not transcribed" if nt else ""),
                        "reported_status": entry.status if entry else ("not transcribed" if nt else ""),
                        "reported_source": entry.source if entry else "",
                        "csv_method": entry.csv.method if entry and entry.csv else "",
                        "csv_protocol": entry.csv.protocol if entry and entry.csv else "",
                        "csv_noise": entry.csv.noise if entry and entry.csv else "",
                        "reproduced": "" if not runs or ours_vals[i] is None else repr(float(ours_vals[i])),
                        "delta": "" if not runs or deltas[i] is None else repr(float(deltas[i])),
                        "n_images": n_img if runs else "",
                        "model": ",".join(sorted(set(used_variants))) if runs else "",
                        "notes": " | ".join(notes.texts[n - 1] for n in sorted(set(cell_notes + spec_notes))),
                    })
            vmeta = [variants[v] for v in dict.fromkeys(used_variants) if v in variants]
            model_label, model_note = _model_text(vmeta)
            model_mark = Notes.sup([notes.mark(model_note)]) if model_note else ""
            src_marks = [notes.mark(f"{row.label}, reported values: {src} (status: {stat}).")
                         for src, stat in sorted(sources)]
            label = row.label + Notes.sup(row_notes)
            if printed and runs:
                lines.append([label, "paper" + Notes.sup(src_marks), *paper_line])
                lines.append(["", model_label + model_mark, *ours_line])
                lines.append(["", "Δ", *delta_line])
            elif printed:
                lines.append([f"{label} — {rp.why_not}", "paper" + Notes.sup(src_marks), *paper_line])
            else:
                lines.append([f"{label} (computed here; not printed in the paper)", model_label + model_mark,
                              *ours_line])
        caption = block.label + " — " + ("/".join(metric_label(m) for m in spec.protocol.metrics)
                                         if not differ else "metrics per column")
        out_md += [f"#### {caption}", "", tabulate(lines, headers=header, tablefmt="github", disable_numparse=True), ""]
        out_tex.append(_latex_block(spec, block, caption, header, lines))

    for m in sorted({r.row.method for r in plan.rows if r.runs}):
        for g in gaps.get(m, ()):
            notes.mark(f"Known reproduction gap (`{m}`): {g}")
    md = [f"_{spec.caption}_", "",
          f"Protocol ({spec.protocol.status}): {spec.protocol.description}", "",
          f"Source: {spec.source}. Cells: paper = as printed; ours = this run; Δ = ours − paper.", ""]
    md += out_md
    if notes.texts:
        md += ["Notes:", ""] + [f"{i}. {t}" for i, t in enumerate(notes.texts, 1)] + [""]
    tex = "\n\n".join(out_tex) + ("\n\n% Notes:\n" + "\n".join(f"% {i}. {t}" for i, t in enumerate(notes.texts, 1))
                                  if notes.texts else "") + "\n"
    return Rendered(spec, "\n".join(md), tex, csv_rows, tuple(notes.texts))


def _tex(s: str) -> str:
    """Cell or caption text (Markdown with <sup> footnote marks and <br>) -> LaTeX: the text
    escaped, the marks as superscripts (footnote numbers only, so nothing in them needs escaping)."""
    import re

    parts = re.split(r"<sup>([^<]*)</sup>", str(s).replace("<br>", " "))
    return "".join(latex_escape(p) if i % 2 == 0 else f"$^{{{latex_escape(p)}}}$" for i, p in enumerate(parts))


def _latex_block(spec: TableSpec, block: Block, caption: str, header: list[str], lines: list[list[str]]) -> str:
    cols = "ll" + "c" * (len(header) - 2)
    body = [" & ".join(_tex(x) for x in ln) + r" \\" for ln in lines]
    return "\n".join([
        r"\begin{table}[t]\centering\small",
        rf"\caption{{{_tex(spec.id)}: {_tex(caption)}}}",
        rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
        " & ".join(_tex(h) for h in header) + r" \\", r"\midrule", *body, r"\bottomrule", r"\end{tabular}",
        r"\end{table}",
    ])
