"""``report.md``: a run's provenance, its paper tables, figures and footnotes, in
GitHub-flavoured Markdown with relative links (it renders on GitHub as it is)."""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from .figures import Figure


@dataclass(frozen=True)
class TableSection:
    id: str
    title: str
    citation: str
    markdown: str  # the rendered table (layout + its own numbered notes)
    files: Mapping[str, Path]  # kind -> file written for the table
    figures: tuple[Figure, ...]


def _rel(path: Path, out: Path) -> str:
    return Path(path).resolve().relative_to(out.resolve()).as_posix()


def _anchor_safe(text: str) -> str:
    return text.replace("|", "\\|")


def provenance_lines(runs: Sequence[Mapping]) -> list[str]:
    if not runs:
        return ["No run in this invocation computed anything (every table was skipped).", ""]
    import json

    last = runs[-1]
    prov = json.loads(last["provenance_json"] or "{}")
    rows = [("git commit", prov.get("git_commit")), ("bench version", prov.get("bench_version")),
            ("python", prov.get("python")), ("platform", prov.get("platform")),
            ("device", f"{prov.get('device')} ({prov.get('device_name')})"),
            ("torch threads", prov.get("torch_threads")), ("seed", prov.get("seed")),
            ("cuDNN", json.dumps(prov.get("cudnn"))),
            ("packages", ", ".join(f"{k} {v}" for k, v in sorted((prov.get("versions") or {}).items()) if v))]
    lines = [tabulate([(k, "" if v is None else str(v)) for k, v in rows], headers=["", "value"], tablefmt="github",
                      disable_numparse=True), ""]
    body = []
    datasets: dict[str, dict] = {}
    training: dict[tuple, dict] = {}
    for r in runs:
        spec = json.loads(r["spec_json"] or "{}")
        p = json.loads(r["provenance_json"] or "{}")
        datasets.update(p.get("datasets") or {})
        training.update({(t["role"], t["manifest"]): t for t in p.get("training") or ()})
        body.append((r["run_id"], r["spec_hash"], ",".join(spec.get("methods", [])), spec.get("profile"),
                     ",".join(f"x{s}" for s in spec.get("scales", [])), spec.get("protocol"), r["status"]))
    lines += ["Runs (one per scale, profile and kind of dataset; the spec of each is stored in `results.sqlite`):", "",
              tabulate(body, headers=["run", "spec hash", "methods", "profile", "scales", "protocol", "status"],
                       tablefmt="github", disable_numparse=True), ""]
    if datasets:
        lines += ["Datasets:", "", tabulate(
            [(n, d.get("layout"), d.get("n_images"), d.get("root"), str(d.get("manifest"))[:16])
             for n, d in sorted(datasets.items())],
            headers=["dataset", "layout", "images", "root", "manifest sha256"], tablefmt="github",
            disable_numparse=True), ""]
    if training:
        lines += ["Training sets (what the learned methods were fitted to; never a test image):", "", tabulate(
            [(t["role"], t["name"], f"{t['count']:,}", t.get("licence") or "", t["manifest"][:16])
             for t in sorted(training.values(), key=lambda t: (t["role"], t["name"]))],
            headers=["role", "pool", "images", "licence", "manifest sha256"], tablefmt="github",
            disable_numparse=True), ""]
    return lines


def training_text(meta: Mapping) -> str:
    """", fitted to …" for a fit's footnote: the pools it saw, with counts and manifests."""
    t = dict((meta.get("info") or {}).get("training") or {})
    t.pop("seed_group", None)  # for the tables' seed rows, not for readers
    if "fit_seed" in t:
        t["fit seed"] = t.pop("fit_seed")
    # what the fit is *to* first (its target, the oracle's pairs or degradation), then its source
    lead = next((t.pop(k) for k in ("target", "pairs", "degradation") if k in t), None)
    rest = [f"{role}: {desc}" for role, desc in t.items()]
    if lead is None:  # fitted per scale: only a source pool
        return ("; trained on " + "; ".join(rest)) if rest else ""
    return "; fitted to " + "; ".join([lead] + rest)


def model_lines(variants: Mapping[str, Mapping], used: set[str]) -> list[str]:
    out = []
    for v in sorted(used):
        meta = variants.get(v)
        if not meta or meta["source"] == "classical":
            continue
        if meta["source"] == "checkpoint":
            out.append(f"- `{meta['method']}` x{meta['scale']} ({v}): official checkpoint, sha256 `{meta['sha256']}`, "
                       f"profile {meta['profile']}")
        else:
            wall = f", fit {meta['wall_s']:.0f}s" if meta.get("wall_s") else ""
            dom = f", target domain `{meta['domain']}`" if meta.get("domain") else ""
            dom += training_text(meta)
            extra = "; ".join(n for n in (meta.get("info") or {}).get("notes", []) if n)
            out.append(f"- `{meta['method']}` x{meta['scale']} ({v}): trained here, profile {meta['profile']}, budget "
                       f"{meta['budget']}{wall}{dom}, weights sha256 `{meta['sha256'][:16]}…`"
                       + (f"; {extra}" if extra else ""))
    return out


def write_report(out: str | Path, *, command: str, sections: Sequence[TableSection],
                 skipped: Sequence[tuple[str, str]], runs: Sequence[Mapping], variants: Mapping[str, Mapping],
                 used_variants: set[str], metric_notes: Mapping[str, str], gaps: Mapping[str, Sequence[str]],
                 extra_files: Sequence[Path] = ()) -> Path:
    out = Path(out)
    lines = ["# UnpairedSR-Bench — paper tables", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by `{command}`.", "",
             ("Each table is laid out as the paper prints it. Per row: **paper** = the value as printed (or quoted, "
              "with its status), **ours** = this run, **Δ** = ours − paper. Rows the harness does not contain show "
              "the reported values only; rows the paper did not print are computed baselines."), ""]
    files = [p for p in extra_files if Path(p).exists()]
    if files:
        lines += ["Files: " + " · ".join(f"[{Path(p).name}]({_rel(p, out)})" for p in files), ""]
    if sections:
        lines += ["Tables: " + ", ".join(f"`{s.id}`" for s in sections), ""]
    lines += ["## Provenance", ""] + provenance_lines(runs)
    for s in sections:
        lines += [f"## {s.id} — {s.title}", "", f"{s.citation}.", ""]
        if s.files:
            lines += ["Files: " + " · ".join(f"[{k}]({_rel(p, out)})" for k, p in s.files.items()), ""]
        lines += [s.markdown, ""]
        curves = [f for f in s.figures if f.kind == "curves"]
        crops = [f for f in s.figures if f.kind == "crops"]
        if curves:
            lines += ["**PSNR against degradation strength** (solid: this run; dashed: the paper):", ""]
            lines += [f"![{_anchor_safe(f.caption)}]({_rel(f.path, out)}) ([PDF]({_rel(f.pdf, out)}))"
                      for f in curves] + [""]
        if crops:
            lines += [f"<details><summary>Crops, HR / bicubic / methods ({len(crops)} figures)</summary>", ""]
            for f in crops:
                lines += [f.caption, "", f"![{f.dataset} x{f.scale}]({_rel(f.path, out)}) ([PDF]({_rel(f.pdf, out)}))",
                          ""]
            lines += ["</details>", ""]
    if skipped:
        lines += ["## Skipped tables", ""] + [f"- `{tid}`: {why}" for tid, why in skipped] + [""]
    models = model_lines(variants, used_variants)
    lines += ["## Footnotes", "", "### Models (profiles and budgets)", ""]
    lines += models or ["Only classical methods ran (no training, no checkpoints)."]
    lines += [""]
    if metric_notes:
        lines += ["### n/a metrics", ""] + [f"- {m}: {r}" for m, r in sorted(metric_notes.items())] + [""]
    if gaps:
        lines += ["### Known reproduction gaps (from each method's `MethodInfo`)", ""]
        for m, gs in sorted(gaps.items()):
            lines += [f"- `{m}`: " + " ".join(gs)]
        lines += [""]
    path = out / "report.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
