"""Views of the results store: Markdown, LaTeX, CSV, JSON, and the tidy ``summary.csv``.

Nothing here recomputes a number: every value is a mean over per-image records in the
store. Each learned method's profile, budget and model source go in a footnote;
metrics that could not run show ``n/a`` with their reason.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from .metrics import METRICS
from .report import training_text
from .stats import DEFAULT_BOOTSTRAP, Bootstrap, Resampler
from .store import CellKey, Store

GAP_COLUMNS = ["dataset", "scale", "protocol", "metric", "method", "variant", "domain", "value", "n_images", "n_seeds",
               "baseline", "bound", "delta", "delta_low", "delta_high", "delta_significant", "gap", "gap_low",
               "gap_high", "gap_significant", "closed", "closed_low", "closed_high", "bound_undertrained"]
KEYS = ["method", "variant", "dataset", "suite", "scale", "protocol", "metric"]
SUMMARY_COLUMNS = [*KEYS, "value", "n_images", "objective", "ci_low", "ci_high", "n_seeds", "seed_std",
                   "seed_variants", "diff_vs", "diff", "diff_low", "diff_high", "significant", "undertrained"]
DISPLAY = ["method", "variant", "dataset", "suite", "scale", "protocol"]
#: the classical reference: the ``--versus`` default and the floor of the "undertrained" rules
BICUBIC = "bicubic"
#: the learned non-blind baseline: 0% of a domain gap whose 100% is the upper bound (the oracle)
BASELINE = "edsr-bicubic"
#: a PSNR-objective method this far below bicubic on its own home suite did not learn at this profile
UNDERTRAINED_DB = 1.0
#: the metric the undertrained rules read (a dB margin means nothing on another scale)
UNDERTRAINED_METRIC = "psnr"
#: the cell marks (Markdown text; LaTeX has its own, see ``_LATEX_STYLE``)
SIGNIFICANT, UNDERTRAINED = "*", "‡"


def metric_label(metric: str) -> str:
    """Column heading of a metric (its spec's label; the name in capitals for one the store has but this code lacks)."""
    spec = METRICS.get(metric)
    return spec.label if spec else metric.upper()


def metric_digits(metric: str) -> int:
    spec = METRICS.get(metric)
    return spec.digits if spec else 4


def lower_better(metric: str) -> bool:
    spec = METRICS.get(metric)
    return bool(spec and spec.lower_better)


@dataclass(frozen=True)
class Views:
    summary: pd.DataFrame
    variants: dict
    metric_notes: dict
    runs: list
    #: run id -> how many of the rendered cells it wrote
    rendered: dict
    #: the order tables list suites, metrics and datasets in (see :func:`orders`)
    suite_order: tuple[str, ...] = ()
    metric_order: tuple[str, ...] = ()
    dataset_order: tuple[str, ...] = ()
    #: cells marked not fitted (no target-domain LR), with their reason
    not_fitted: tuple[dict, ...] = ()
    #: the method every other row is tested against (``--versus``; None: no tests)
    versus: str | None = BICUBIC
    boot: Bootstrap = DEFAULT_BOOTSTRAP
    #: per-domain methods on their own domain against the baseline and the upper bound (GAP_COLUMNS)
    gaps: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=GAP_COLUMNS))
    #: the cells the undertrained rules flag
    undertrained: tuple[Undertrained, ...] = ()


@dataclass(frozen=True)
class Undertrained:
    """A PSNR cell flagged by the undertrained rules: ``kind`` "bound" (an upper bound below a
    baseline on that column, so it bounds nothing there) or "home" (a PSNR-objective method more
    than ``UNDERTRAINED_DB`` below bicubic on its home suite); ``below``: (reference, its value)."""

    method: str
    variant: str
    dataset: str
    suite: str
    scale: int
    protocol: str
    kind: str
    value: float
    below: tuple[tuple[str, float], ...]


def _run_specs(runs: Sequence[dict]) -> list[dict]:
    """The stored run specs, the latest first (its --suites and --metrics order rule)."""
    out = []
    for r in sorted(runs, key=lambda r: r.get("started") or 0, reverse=True):
        try:
            spec = json.loads(r.get("spec_json") or "{}")
        except ValueError:
            continue
        if isinstance(spec, dict):
            out.append(spec)
    return out


def _spec_suites(spec: dict) -> list[str]:
    """Canonical suite names a run spec asked for, in its --suites order (nothing when it cannot be read now)."""
    from .adapter import BenchError
    from .degrade import parse_suites

    text = spec.get("suites")
    if not text:
        from .runner import DEFAULT_SUITES

        text = ";".join(DEFAULT_SUITES)
    extra = Path(spec["suite_file"]) if spec.get("suite_file") else None
    names: list[str] = []
    for scale in spec.get("scales") or (4,):
        try:
            names += [s.name for s in parse_suites(text, int(scale), extra if extra and extra.is_file() else None)]
        except (BenchError, TypeError, ValueError):
            continue
    return names


def suite_sort_key(name: str) -> tuple:
    """Families in their declared order, then parameters numerically (``noise:sigma=5`` before
    ``sigma=15``); user suites after the built-ins, ``given`` last."""
    from .degrade import FAMILIES

    if name == "given":
        return (2, "", ())
    fam, _, rest = name.partition(":")
    params = []
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        try:
            params.append((key, 0, float(value), ""))
        except ValueError:
            params.append((key, 1, 0.0, value))
    families = list(FAMILIES)
    if fam in families:
        return (0, f"{families.index(fam):03d}", tuple(params))
    return (1, fam, tuple(params))


def _first_seen(*sequences: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(x for seq in sequences for x in seq))


def orders(summary: pd.DataFrame, runs: Sequence[dict], cells: Sequence[CellKey] | None = None
           ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(suites, metrics, datasets) in the order a paper table takes them.

    Suites: as this run planned them (``cells``, i.e. its ``--suites`` order), then as the
    stored runs asked for them (latest first), then :func:`suite_sort_key`. Metrics: the
    latest run's ``--metrics`` order, then the order of ``METRICS`` (PSNR, SSIM, LPIPS,
    NIQE). Datasets: as planned or asked for (``--datasets``), then by name."""
    specs = _run_specs(runs)
    have_s = set(summary["suite"]) if not summary.empty else set()
    have_m = set(summary["metric"]) if not summary.empty else set()
    have_d = set(summary["dataset"]) if not summary.empty else set()
    planned = list(cells or ())
    suites = _first_seen([c.suite for c in planned], *(_spec_suites(sp) for sp in specs),
                         sorted(have_s, key=suite_sort_key))
    metrics = _first_seen(*([str(m) for m in sp.get("metrics") or ()] for sp in specs), METRICS, sorted(have_m))
    asked_ds = [[e.partition("=")[0].strip() for e in (sp.get("datasets") or "").split(",")] for sp in specs]
    datasets = _first_seen([c.dataset for c in planned], *asked_ds, sorted(have_d))
    return (tuple(x for x in suites if x in have_s), tuple(x for x in metrics if x in have_m),
            tuple(x for x in datasets if x in have_d))


def summarize(store: Store, cells: Iterable[CellKey] | None = None, run: str | None = None, *,
              versus: str | None = BICUBIC, boot: Bootstrap = DEFAULT_BOOTSTRAP) -> Views:
    """Mean over images per (method, variant, dataset, suite, scale, protocol, metric), with its
    bootstrap interval, the paired test against ``versus``, the undertrained marks and the gap table.

    ``cells``: exactly these content keys (what a run planned); ``run``: the cells that
    run wrote; neither: for every name, the latest stored content (a dataset edited
    between runs leaves its older cells in the store, and they are not averaged in).
    Fits of one method that differ only by their training seed (``seed_group``) are one row.
    """
    rec = pd.DataFrame(store.records(), columns=[*DISPLAY, "image", "metric", "value", "cell_id", "run_id",
                                                 "finished"])
    cells = list(cells) if cells is not None else None
    if cells is not None:
        rec = rec[rec.cell_id.isin({c.cell_id for c in cells})]
    elif run is not None:
        rec = rec[rec.run_id == run]
    if not rec.empty:
        latest = rec.sort_values("finished", na_position="first").groupby(DISPLAY, sort=False)["cell_id"].last()
        rec = rec[rec.cell_id.isin(set(latest))]
    rendered = rec.groupby("run_id")["cell_id"].nunique().to_dict() if not rec.empty else {}
    variants = store.variants()
    summary, per_image = _rows(rec, variants)
    rs = Resampler(boot)
    bounds = _upper_bound_methods(variants)
    summary = _with_intervals(summary, per_image, rs)
    summary = _with_versus(summary, per_image, rs, versus)
    flagged = undertrained_cells(summary, variants, bounds)
    marked = {(u.method, u.variant, u.dataset, u.suite, u.scale, u.protocol, UNDERTRAINED_METRIC) for u in flagged}
    summary["undertrained"] = [k in marked for k in _keys(summary)]
    gaps = gap_table(summary, per_image, variants, bounds, rs)
    gaps["bound_undertrained"] = [(b, ds, dom, sc, pr) in {(u.method, u.dataset, u.suite, u.scale, u.protocol)
                                                          for u in flagged if u.kind == "bound"}
                                  for b, ds, dom, sc, pr in zip(gaps["bound"], gaps["dataset"], gaps["domain"],
                                                                gaps["scale"], gaps["protocol"])]
    summary = summary[SUMMARY_COLUMNS]
    runs = store.runs()
    planned = {c.cell_id for c in cells} if cells is not None else None
    marked = {(c["method"], c["dataset"], c["scale"]): c for c in sorted(store.not_fitted(run), key=lambda c: c["finished"])
              if planned is None or c["cell_id"] in planned}
    return Views(summary, variants, store.metric_notes(), runs, rendered, *orders(summary, runs, cells),
                 not_fitted=tuple(marked.values()), versus=versus, boot=boot, gaps=gaps, undertrained=tuple(flagged))


def _keys(frame: pd.DataFrame) -> list[tuple]:
    return list(frame[KEYS].itertuples(index=False, name=None))


def seed_group(meta: Mapping | None) -> tuple[str, int] | None:
    """(seed_group, fit_seed) of a fit made once per ``--fit-seeds`` seed, else None. Read from the
    variant's ``training`` record, or from its stored info's (where the runner keeps fit metadata)."""
    if not meta:
        return None
    for t in (meta.get("training"), (meta.get("info") or {}).get("training")):
        if isinstance(t, Mapping) and t.get("seed_group"):
            return str(t["seed_group"]), int(t.get("fit_seed") or 0)
    return None


def row_variants(pairs: Iterable[tuple[str, str]], variants: Mapping) -> dict[tuple[str, str], str]:
    """(method, variant) -> the variant its table row is named by: the fits of one method that share
    a ``seed_group`` are one row, named by the lowest seed's variant; any other variant is its own."""
    members: dict[tuple, list[tuple[int, str]]] = {}
    for m, v in pairs:
        g = seed_group(variants.get((m, v)))
        members.setdefault((m, "group", g[0]) if g else (m, "variant", v), []).append((g[1] if g else 0, v))
    return {(key[0], v): min(vs)[1] for key, vs in members.items() for _, v in vs}


def _rows(rec: pd.DataFrame, variants: Mapping) -> tuple[pd.DataFrame, dict[tuple, pd.Series]]:
    """The summary rows (seeds merged) and, per row key, its per-image values (image id -> value)."""
    if rec.empty:
        return pd.DataFrame(columns=[*KEYS, "value", "n_images", "objective", "n_seeds", "seed_std",
                                     "seed_variants"]), {}
    names = row_variants(set(zip(rec.method, rec.variant)), variants)
    value = rec["value"].astype(float)
    rec = rec.assign(seed_variant=rec["variant"], variant=[names[mv] for mv in zip(rec.method, rec.variant)],
                     value=value, missing=value.isna())
    # per fit seed, its mean over images; a cell with an n/a image is n/a (never a mean of the rest)
    g = rec.groupby([*KEYS, "seed_variant"], sort=True, dropna=False)
    seeds = g["value"].mean().where(~g["missing"].any()).rename("value").reset_index()
    s = seeds.assign(missing=seeds["value"].isna()).groupby(KEYS, sort=True, dropna=False)
    summary = pd.DataFrame({
        "value": s["value"].mean().where(~s["missing"].any()),
        "n_seeds": s.size(),
        "seed_std": s["value"].std(ddof=1),  # NaN for one seed
        "seed_variants": s["seed_variant"].agg(lambda v: ";".join(sorted(v)) if len(v) > 1 else ""),
    }).reset_index()
    # per image, the mean over seeds, on the images every seed has (what the intervals resample)
    gi = rec.groupby([*KEYS, "image"], sort=True, dropna=False)
    img = pd.DataFrame({"value": gi["value"].mean().where(~gi["missing"].any()), "n": gi.size()}).reset_index()
    img = img.merge(summary[[*KEYS, "n_seeds"]], on=KEYS)
    img = img[img["n"] == img["n_seeds"]]
    values, images = img["value"].to_numpy(), img["image"].to_numpy()
    per_image = {k: pd.Series(values[i], index=images[i])
                 for k, i in img.groupby(KEYS, sort=False, dropna=False).indices.items()}
    summary["n_images"] = [len(per_image.get(k, ())) for k in _keys(summary)]
    summary["objective"] = [objective(variants.get((m, v)), m) for m, v in zip(summary.method, summary.variant)]
    return summary, per_image


def _stored_info(meta: Mapping | None, method: str, field: str, installed: Callable[[str], object], default):
    """A variant's stored ``info[field]``, else (stored before the field was recorded) what the
    installed method says (``installed(method)``), else ``default`` (a method not installed here)."""
    from .adapter import BenchError

    info = (meta or {}).get("info") or {}
    if field in info:
        return info[field]
    try:
        return installed(method)
    except (BenchError, KeyError, ValueError):
        return default


def objective(meta: Mapping | None, method: str) -> str:
    """A row's training objective ("psnr", "perceptual"; "" classical)."""
    from .adapter import objective_of

    return str(_stored_info(meta, method, "objective", objective_of, "") or "")


def _with_intervals(summary: pd.DataFrame, per_image: Mapping, rs: Resampler) -> pd.DataFrame:
    ivs = [rs.mean(per_image[k].to_numpy()) if k in per_image else None for k in _keys(summary)]
    return summary.assign(ci_low=[i.low if i else float("nan") for i in ivs],
                          ci_high=[i.high if i else float("nan") for i in ivs])


def _with_versus(summary: pd.DataFrame, per_image: Mapping, rs: Resampler, versus: str | None) -> pd.DataFrame:
    """Each row against ``versus``'s row on the same column: the paired mean difference over the
    images both have, its interval, and whether that interval excludes 0 (None: too few images)."""
    keys = _keys(summary)
    refs: dict[tuple, tuple] = {}
    for k in sorted(keys, key=str):
        if versus and k[0] == versus:
            refs.setdefault(k[2:], k)  # one reference row per column (its first variant)
    nan = float("nan")
    cols: dict[str, list] = {c: [] for c in ("diff_vs", "diff", "diff_low", "diff_high", "significant")}
    for k in keys:
        ref = refs.get(k[2:]) if k[0] != versus else None
        if ref is None or k not in per_image:
            for c, v in zip(cols, ("", nan, nan, nan, None)):
                cols[c].append(v)
            continue
        a, b = per_image[k].align(per_image[ref], join="inner")
        iv = rs.paired(a.to_numpy(), b.to_numpy())
        for c, v in zip(cols, (versus, iv.value, iv.low, iv.high, iv.excludes_zero if iv.defined else None)):
            cols[c].append(v)
    out = summary.assign(**{c: v for c, v in cols.items() if c != "significant"})
    out["significant"] = pd.Series(cols["significant"], index=out.index, dtype=object)
    return out


def home_suite(suite: str, meta: Mapping) -> bool:
    """Whether ``suite`` is a method's home: the domain it was fitted to (per-domain methods), else
    a suite named by one of its ``home_suites`` prefixes (per-scale methods, e.g. ``aniso``)."""
    if meta.get("domain"):
        return suite == meta["domain"]
    return any(suite.startswith(p) for p in (meta.get("info") or {}).get("home_suites") or ())


def undertrained_cells(summary: pd.DataFrame, variants: Mapping, bounds: set[str]) -> list[Undertrained]:
    """PSNR cells a profile was too short for, judged from stored values only: an upper bound below
    ``BASELINE`` or ``BICUBIC`` on a column bounds nothing there; a PSNR-objective learned method more
    than ``UNDERTRAINED_DB`` below ``BICUBIC`` on its own home suite has not learned what it is for."""
    s = summary[(summary["metric"] == UNDERTRAINED_METRIC) & summary["value"].notna()]
    floors: dict[tuple, dict[str, float]] = {}
    for r in s.itertuples(index=False):
        if r.method in (BICUBIC, BASELINE):
            floors.setdefault((r.dataset, r.suite, r.scale, r.protocol), {}).setdefault(r.method, float(r.value))
    out = []
    for r in s.itertuples(index=False):
        refs = floors.get((r.dataset, r.suite, r.scale, r.protocol), {})
        meta = variants.get((r.method, r.variant)) or {}
        if r.method in bounds:
            kind, below = "bound", tuple((m, refs[m]) for m in (BASELINE, BICUBIC) if m in refs and r.value < refs[m])
        elif (r.objective == "psnr" and (meta.get("info") or {}).get("family") != "classical" and BICUBIC in refs
              and home_suite(r.suite, meta) and r.value < refs[BICUBIC] - UNDERTRAINED_DB):
            kind, below = "home", ((BICUBIC, refs[BICUBIC]),)
        else:
            continue
        if below:
            out.append(Undertrained(r.method, r.variant, r.dataset, r.suite, int(r.scale), r.protocol, kind,
                                    float(r.value), below))
    return out


def gap_table(summary: pd.DataFrame, per_image: Mapping, variants: Mapping, bounds: set[str],
              rs: Resampler) -> pd.DataFrame:
    """Per-domain methods (other than the bound) on their own domain's column: Δ vs ``BASELINE`` and
    the share of the ``BASELINE`` -> upper-bound gap closed, from one set of resamples of the images
    all three rows have. Columns without both a baseline and a bound row are left out."""
    keys = sorted(_keys(summary), key=str)
    values = dict(zip(_keys(summary), summary["value"]))
    seeds = dict(zip(_keys(summary), summary["n_seeds"]))
    at: dict[tuple, list[tuple]] = {}
    for k in keys:
        at.setdefault(k[2:], []).append(k)
    rows = []
    for k in keys:
        method, variant, ds, suite, scale, proto, metric = k
        meta = variants.get((method, variant)) or {}
        if method in bounds or not meta.get("domain") or suite != meta["domain"] or k not in per_image:
            continue
        base = next((p for p in at[k[2:]] if p[0] == BASELINE and p in per_image), None)
        bound = next((p for p in at[k[2:]] if p[0] in bounds and p in per_image), None)
        if base is None or bound is None:
            continue
        m, e, o = per_image[k], per_image[base], per_image[bound]
        common = sorted(set(m.index) & set(e.index) & set(o.index))
        g = rs.gap_closed(*(x.loc[common].to_numpy() for x in (m, e, o)))
        rows.append([ds, int(scale), proto, metric, method, variant, suite, float(values[k]), len(common),
                     int(seeds[k]), base[1],
                     bound[0], g.delta.value, g.delta.low, g.delta.high,
                     g.delta.excludes_zero if g.delta.defined else None, g.gap.value, g.gap.low, g.gap.high,
                     g.gap.excludes_zero if g.gap.defined else None, g.closed.value, g.closed.low, g.closed.high])
    return pd.DataFrame(rows, columns=GAP_COLUMNS[:-1])


def rendered_line(views: Views) -> str:
    """Which runs a table shows, for the reader of a store that several runs wrote."""
    if not views.rendered:
        return "no cells"
    parts = [f"{r} ({n} cells)" for r, n in sorted(views.rendered.items())]
    return f"cells from {len(parts)} run(s): " + ", ".join(parts)


def _fmt(metric: str, v: float) -> str:
    return "n/a" if pd.isna(v) else f"{v:.{metric_digits(metric)}f}"


def upper_bounds(views: Views) -> set[str]:
    """Methods whose stored info flags them as upper bounds (``MethodInfo.upper_bound``)."""
    return _upper_bound_methods(views.variants)


def _upper_bound_methods(variants: Mapping) -> set[str]:
    from .adapter import REGISTRY

    return {meta["method"] for meta in variants.values()
            if _stored_info(meta, meta["method"], "upper_bound", lambda m: REGISTRY.get(m).info.upper_bound, False)}


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "Δ": r"$\Delta$", "σ": r"$\sigma$", "θ": r"$\theta$", "×": r"$\times$", "−": r"$-$", "…": r"\ldots{}",
    "–": "--", "—": "---", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "°": r"$^\circ$", "²": r"$^2$",
    "±": r"$\pm$", "‡": r"\ddag{}", "→": r"$\rightarrow$", "·": r"$\cdot$",
}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIAL))


def latex_escape(text: object) -> str:
    """Plain text -> LaTeX: the ten special characters escaped in one pass (so an
    escape is never escaped again), the few non-ASCII symbols tables use as math."""
    # whitespace runs (newlines included) become one space: a blank line would end a LaTeX paragraph
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group(0)], re.sub(r"\s+", " ", str(text)))


def _footnotes(views: Views, ci: bool = False) -> list[str]:
    notes = []
    s = views.summary
    used = set(zip(s["method"], s["variant"])) if not s.empty else set()
    seeds = dict(zip(zip(s["method"], s["variant"]), s["seed_variants"])) if not s.empty else {}
    for mv in sorted(used):
        v = mv[1]
        meta = views.variants.get(mv)
        if not meta or meta["source"] == "classical":
            continue
        if meta["source"] == "fit":
            line = (f"`{meta['method']}` x{meta['scale']} ({v}): trained here, profile {meta['profile']}, "
                    f"budget {meta['budget']}" + (f", {meta['wall_s']:.0f}s" if meta["wall_s"] else "")
                    + (f", target domain `{meta['domain']}`" if meta["domain"] else "") + training_text(meta))
        else:
            line = f"`{meta['method']}` x{meta['scale']} ({v}): checkpoint sha256 {meta['sha256']}"
        if seeds.get(mv):
            fits = seeds[mv].split(";")
            line += f"; one row for its fits with {len(fits)} training seeds ({', '.join(fits)})"
        extra = [n for n in meta["info"].get("notes", []) if n]
        if extra:
            line += "; " + "; ".join(extra)
        notes.append(line)
    for m, reason in sorted(views.metric_notes.items()):
        if m in set(s["metric"]):
            notes.append(f"{metric_label(m)} n/a: {reason}")
    if "given" in set(s["suite"]):
        notes.append("suite `given`: the dataset's own LR images; methods fitted per domain use their fit to the "
                     "dataset's own training split where it has one, else to `--target` (the embedded photos: the "
                     "synthetic `mixed` domain), since test images never enter training.")
    for c in views.not_fitted:
        notes.append(f"`{c['method']}` on {c['dataset']} x{c['scale']}: {c['error']}.")
    shown = set(s["method"])
    for m in sorted(upper_bounds(views) & shown):
        notes.append(f"`{m}` is an upper bound (it is told what the other methods are not, e.g. the true "
                     "degradation) and is never marked best.")
    notes += _stats_notes(views, ci)
    if len(views.rendered) > 1:
        notes.append("Rendered: " + rendered_line(views) + ".")
    return notes


def _stats_notes(views: Views, ci: bool) -> list[str]:
    """What the objective column, the marks, the intervals, the seed rows and the gap tables mean."""
    s, boot, notes = views.summary, views.boot, []
    if s.empty:
        return notes
    if (s["objective"] != "").any():
        notes.append("objective: what a learned method's SR network is trained for: PSNR (pixel losses) or "
                     "perceptual (adds perceptual and/or adversarial terms on its output).")
    perceptual = sorted(set(s.loc[s["objective"] == "perceptual", "method"]))
    if perceptual and "lpips" in views.metric_notes:
        others = " and ".join(metric_label(m) for m in views.metric_order if m != "lpips")
        notes.append(f"perceptual-objective methods ({', '.join(f'`{m}`' for m in perceptual)}) trade PSNR for "
                     f"realism by design; LPIPS, which would measure what they optimise, is unavailable "
                     f"({views.metric_notes['lpips']}), so they are shown by {others or 'no metric'} only.")
    if ci:
        notes.append(f"`±` = half the width of the {boot.percent} interval of the mean over images "
                     f"({boot.describe()}; for seed rows, of the per-image mean over seeds); "
                     f"`n<{boot.min_images}` = fewer than {boot.min_images} images (MIN_CI_IMAGES), no interval.")
    if views.versus and (s["diff_vs"] == views.versus).any():
        notes.append(f"`{SIGNIFICANT}` after a value: the {boot.percent} interval of its mean per-image difference to "
                     f"`{views.versus}` on the same column (images matched by id, only those both have; paired "
                     f"{boot.describe()}) excludes 0; no mark with fewer than {boot.min_images} common images.")
    if (s["n_seeds"] > 1).any():
        notes.append("`(k seeds)` rows: one method and variant fitted once per training seed (`--fit-seeds`); the "
                     "value is the mean over seeds of each seed's mean over images, `s.d.` the standard deviation "
                     "over seeds (n−1); intervals and tests resample images of the per-image mean over seeds.")
    notes += _undertrained_notes(views)
    if not views.gaps.empty:
        bound = ", ".join(f"`{b}`" for b in sorted(set(views.gaps["bound"])))
        notes.append(f"target-domain tables: per-domain methods on the column of the domain they were fitted to. "
                     f"Δ = method − `{BASELINE}` (a negative Δ is the better one on a ↓ metric); % closed = "
                     f"100·Δ/({bound} − `{BASELINE}`), on the raw differences whichever way the metric points, so "
                     f"it is the fraction of the way to the upper bound; [low, high] = {boot.percent} intervals "
                     f"(paired {boot.describe()}, all three rows on the same resamples of the images they all have); "
                     f"`gap n.s.` where the interval of {bound} − `{BASELINE}` includes 0 (no share of it is "
                     f"meaningful); `no bound ({UNDERTRAINED})` where the bound is undertrained on that column.")
    return notes


def _undertrained_notes(views: Views) -> list[str]:
    notes: list[str] = []
    groups: dict[tuple, list[Undertrained]] = {}
    for u in views.undertrained:
        groups.setdefault((u.kind, u.method, u.variant) + ((u.suite,) if u.kind == "bound" else ()), []).append(u)
    for (kind, method, variant, *suite), us in sorted(groups.items()):
        profile = (views.variants.get((method, variant)) or {}).get("profile") or "?"
        where = "; ".join(f"{u.dataset} x{u.scale}" + ("" if suite else f" `{u.suite}`") + f": {u.value:.2f} vs "
                          + ", ".join(f"{m} {v:.2f}" for m, v in u.below) for u in us)
        if kind == "bound":
            below = "/".join(dict.fromkeys(m for u in us for m, _ in u.below))
            notes.append(f"`{method}` on `{suite[0]}`: undertrained at this profile ({profile}) (below {below}: "
                         f"{where}), so it is no bound there; marked `{UNDERTRAINED}`.")
        else:
            homes = ", ".join(f"`{x}`" for x in dict.fromkeys(u.suite for u in us))
            notes.append(f"`{method}`: undertrained at this profile ({profile}) (more than {UNDERTRAINED_DB:.1f} dB "
                         f"below {BICUBIC} on its home suite(s) {homes}: {where}); marked `{UNDERTRAINED}`.")
    return notes


#: a cell the run did not plan (e.g. a per-domain method on a suite that is not its domain)
NOT_RUN = "–"


def _rank(order: Sequence[str], key=lambda x: x):
    where = {x: i for i, x in enumerate(order)}
    return lambda x: (0, where[x], ()) if x in where else (1, len(where), key(x))


@dataclass(frozen=True)
class Grid:
    """One methods x suites table: ``frame`` the values, ``ran`` whether a cell exists, ``cells`` each
    cell's summary row by (row label, suite), ``rows`` per row label its method, objective and seeds."""

    dataset: str
    protocol: str
    scale: int
    metric: str
    frame: pd.DataFrame
    ran: pd.DataFrame
    cells: Mapping[tuple[str, str], dict]
    rows: Mapping[str, dict]


def grids(views: Views) -> list[Grid]:
    """The methods x suites tables, datasets, metrics and suite columns in ``views``' orders."""
    s = views.summary
    out = []
    if s.empty:
        return out
    ds_rank, metric_rank = _rank(views.dataset_order), _rank(views.metric_order)
    suite_rank = _rank(views.suite_order, suite_sort_key)
    groups = sorted(s.groupby(["dataset", "protocol", "scale", "metric"], sort=False),
                    key=lambda g: (ds_rank(g[0][0]), g[0][1], int(g[0][2]), metric_rank(g[0][3])))
    for (ds, proto, scale, metric), part in groups:
        part = part.assign(row=row_labels(part))
        frame = part.pivot_table(index="row", columns="suite", values="value", aggfunc="first", dropna=False)
        frame = frame[sorted(frame.columns, key=suite_rank)]
        ran = part.pivot_table(index="row", columns="suite", values="n_images", aggfunc="size",
                               fill_value=0).reindex_like(frame).fillna(0) > 0
        frame.index.name = ran.index.name = "method"
        cells = {(r["row"], r["suite"]): r for r in part.to_dict("records")}
        rows = {label: {"method": p["method"].iloc[0], "objective": p["objective"].iloc[0],
                        "n_seeds": int(p["n_seeds"].max())} for label, p in part.groupby("row", sort=False)}
        out.append(Grid(ds, proto, int(scale), metric, frame, ran, cells, rows))
    return out


def row_labels(part: pd.DataFrame) -> pd.Series:
    """One row per (method, variant): the method's name alone when the table holds one
    variant of it, ``name (variant)`` when it holds several (a quick fit and a checkpoint);
    a row of several fit seeds says how many: ``name (3 seeds)``, ``name (variant, 3 seeds)``."""
    n = part.groupby("method")["variant"].transform("nunique")
    seeds = part.groupby(["method", "variant"])["n_seeds"].transform("max")
    inner = part["variant"].where(n > 1, "")
    inner = inner.where(seeds <= 1, inner.where(inner == "", inner + ", ") + seeds.astype(str) + " seeds")
    return part["method"].where(inner == "", part["method"] + " (" + inner + ")")


@dataclass(frozen=True)
class Style:
    """How a renderer writes a cell: bold, escaping, the not-run text, the marks and ``n<5``."""

    bold: Callable[[str], str]
    esc: Callable[[object], str]
    not_run: str
    marks: Mapping[str, str]
    sup: Callable[[str], str]  # the marks of one cell, together
    few: str  # format string with {n}


_MARKDOWN_STYLE = Style(lambda x: f"**{x}**", str, NOT_RUN,
                        # escaped: a bare * after **bold** would be read as emphasis markup
                        {SIGNIFICANT: r"\*", UNDERTRAINED: UNDERTRAINED}, str, "n<{n}")
_LATEX_STYLE = Style(lambda x: rf"\textbf{{{x}}}", latex_escape, "--", {SIGNIFICANT: "*", UNDERTRAINED: r"\ddag{}"},
                     lambda x: rf"\textsuperscript{{{x}}}", "($n<{n}$)")

_OBJECTIVES = {"psnr": "PSNR", "perceptual": "perceptual"}


def _flag(x) -> bool:
    """A stored yes/no that may be missing (None: too few images to tell)."""
    return isinstance(x, (bool, np.bool_)) and bool(x)


def _best(grid: Grid, bounds: set[str]) -> set[tuple[str, str]]:
    """(row, suite) of the best competing value per column; upper bounds (``bounds``) are never best."""
    out = set()
    for col in grid.frame.columns:
        comp = grid.frame[col].drop([r for r in grid.frame.index if grid.rows[r]["method"] in bounds]).dropna()
        if len(comp) > 1:
            out.add((comp.idxmin() if lower_better(grid.metric) else comp.idxmax(), col))
    return out


def _cell_text(views: Views, grid: Grid, row: str, suite: str, style: Style, ci: bool, best: bool) -> str:
    """value[marks][ ±half-width | n<5][ (s.d. over seeds)], ``esc`` applied before the markup."""
    if not grid.ran.loc[row, suite]:
        return style.not_run
    r = grid.cells[(row, suite)]
    text = style.esc(_fmt(grid.metric, r["value"]))
    if pd.isna(r["value"]):
        return text
    d = metric_digits(grid.metric)
    text = style.bold(text) if best else text
    marks = [style.marks[m] for m, on in ((SIGNIFICANT, views.versus and _flag(r["significant"])),
                                          (UNDERTRAINED, _flag(r["undertrained"]))) if on]
    text += style.sup("".join(marks)) if marks else ""
    if ci:
        text += " " + (style.few.format(n=views.boot.min_images) if pd.isna(r["ci_low"])
                       else style.esc(f"±{(r['ci_high'] - r['ci_low']) / 2:.{d}f}"))
    if r["n_seeds"] > 1:
        fewer = "" if r["n_seeds"] == grid.rows[row]["n_seeds"] else f", {r['n_seeds']} seeds"
        text += " " + style.esc(f"(s.d. {r['seed_std']:.{d}f}{fewer})")
    return text


def _grid_body(views: Views, grid: Grid, style: Style, ci: bool) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of a grid: method, the objective where a learned method is shown, the suites."""
    best = _best(grid, upper_bounds(views))
    with_objective = any(r["objective"] for r in grid.rows.values())
    head = ["method", *(["objective"] if with_objective else []), *map(str, grid.frame.columns)]
    body = []
    for row in grid.frame.index:
        obj = [_OBJECTIVES.get(grid.rows[row]["objective"], grid.rows[row]["objective"])] if with_objective else []
        body.append([style.esc(row), *map(style.esc, obj),
                     *(_cell_text(views, grid, row, c, style, ci, (row, c) in best) for c in grid.frame.columns)])
    return head, body


def _gap_body(views: Views, grid: Grid, style: Style) -> tuple[list[str], list[list[str]]] | None:
    """The target-domain table of ``grid``'s dataset, scale, protocol and metric (None: nothing to show)."""
    g = views.gaps
    part = g[(g["dataset"] == grid.dataset) & (g["protocol"] == grid.protocol) & (g["scale"] == grid.scale)
             & (g["metric"] == grid.metric)] if not g.empty else g
    if part.empty:
        return None
    d, few = metric_digits(grid.metric), style.few.format(n=views.boot.min_images)
    bounds = sorted(set(part["bound"]))
    bound = bounds[0] if len(bounds) == 1 else "upper bound"
    head = ["method", "domain", metric_label(grid.metric), f"Δ vs {BASELINE}",
            f"% of {BASELINE} → {bound} gap closed"]
    several = part.groupby("method")["variant"].transform("nunique") > 1
    body = []
    for r, many in zip(part.to_dict("records"), several):
        inner = ", ".join(([r["variant"]] if many else []) + ([f"{r['n_seeds']} seeds"] if r["n_seeds"] > 1 else []))
        label = f"{r['method']} ({inner})" if inner else r["method"]
        if pd.isna(r["delta"]):
            delta = closed = style.esc("n/a")
        else:
            interval = f" [{r['delta_low']:+.{d}f}, {r['delta_high']:+.{d}f}]"
            delta = style.esc(f"{r['delta']:+.{d}f}") + (f" {few}" if pd.isna(r["delta_low"]) else style.esc(interval))
            if r["bound_undertrained"]:  # below the baseline there: a "share" of that would read backwards
                closed = style.esc(f"no bound ({UNDERTRAINED})")
            elif r["gap_significant"] is None or pd.isna(r["gap_low"]):
                closed = few  # too few common images to tell whether there is a gap at all
            elif not _flag(r["gap_significant"]):
                closed = style.esc("gap n.s.")
            elif pd.isna(r["closed_low"]):
                closed = few
            else:
                closed = style.esc(f"{r['closed']:.0f}% [{r['closed_low']:.0f}, {r['closed_high']:.0f}]")
        body.append([style.esc(label), style.esc(r["domain"]), style.esc(_fmt(grid.metric, r["value"])), delta,
                     closed])
    return head, body


def markdown(views: Views, title: str = "Results", ci: bool = False) -> str:
    lines = [f"# {title}", ""]
    any_not_run = False
    style = _MARKDOWN_STYLE
    for grid in grids(views):
        arrow = "↓" if lower_better(grid.metric) else "↑"
        where = f"{grid.dataset} x{grid.scale} — {metric_label(grid.metric)} {arrow}"
        lines += [f"### {where} ({grid.protocol})", ""]
        any_not_run |= not bool(grid.ran.values.all())
        head, body = _grid_body(views, grid, style, ci)
        lines += [tabulate(body, headers=head, tablefmt="github", disable_numparse=True), ""]
        gap = _gap_body(views, grid, style)
        if gap:
            lines += [f"### {where} on each method's target domain ({grid.protocol})", "",
                      tabulate(gap[1], headers=gap[0], tablefmt="github", disable_numparse=True), ""]
    notes = _footnotes(views, ci)
    if any_not_run:
        notes.append(f"{NOT_RUN} = not run: methods fitted per target domain (oracle, unpaired) run on their "
                     "target domain only.")
    if notes:
        lines += ["Notes:", ""] + [f"{i}. {n}" for i, n in enumerate(notes, 1)] + [""]
    return "\n".join(lines)


def _latex_table(caption: str, head: list[str], body: list[list[str]], left: int = 1) -> str:
    """A booktabs table: ``left`` text columns, then centred value columns (all cells escaped already)."""
    cols = "l" * left + "c" * (len(head) - left)
    return "\n".join([
        r"\begin{table}[t]\centering", rf"\caption{{{caption}}}", rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule", " & ".join(head) + r" \\", r"\midrule", *(" & ".join(r) + r" \\" for r in body),
        r"\bottomrule", r"\end{tabular}", r"\end{table}"])


def latex(views: Views, ci: bool = False) -> str:
    parts = []
    esc, style = latex_escape, _LATEX_STYLE
    for grid in grids(views):
        arrow = r"$\downarrow$" if lower_better(grid.metric) else r"$\uparrow$"
        where = rf"{esc(grid.dataset)} $\times{grid.scale}$, {esc(metric_label(grid.metric))} {arrow}"
        head, body = _grid_body(views, grid, style, ci)
        left = 2 if head[1:2] == ["objective"] else 1
        head = ["Method", *(["Objective"] if left == 2 else []), *(esc(c) for c in grid.frame.columns)]
        parts.append(_latex_table(f"{where} ({esc(grid.protocol)})", head, body, left))
        gap = _gap_body(views, grid, style)
        if gap:
            head = ["Method", "Domain", *gap[0][2:]]
            parts.append(_latex_table(f"{where} on each method's target domain ({esc(grid.protocol)})",
                                      [esc(h) for h in head], gap[1], left=2))
    notes = _footnotes(views, ci)
    if notes:  # comments: a newline inside a note would end the comment and leak text into the document
        parts.append("% Notes:\n" + "\n".join(f"% {i}. {' '.join(n.split())}" for i, n in enumerate(notes, 1)))
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
              title: str = "UnpairedSR-Bench results", run: str | None = None, *, ci: bool = False,
              versus: str | None = BICUBIC, boot: Bootstrap = DEFAULT_BOOTSTRAP) -> dict[str, Path]:
    """summary.csv, results.md, results.tex, results.json (and runtime.md). The intervals and tests
    are always in the CSV and JSON; ``ci`` also prints ``±half-width`` in the Markdown and LaTeX."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    views = summarize(store, cells, run, versus=versus, boot=boot)
    paths = {
        "summary": out / "summary.csv",
        "markdown": out / "results.md",
        "latex": out / "results.tex",
        "json": out / "results.json",
    }
    views.summary.to_csv(paths["summary"], index=False, float_format="%.6f")
    paths["markdown"].write_text(markdown(views, title, ci=ci))
    paths["latex"].write_text(latex(views, ci=ci))
    paths["json"].write_text(json.dumps({
        "runs": views.runs,
        "variants": list(views.variants.values()),
        "rendered": views.rendered,
        "metric_notes": views.metric_notes,
        "statistics": {"interval": "percentile bootstrap over images", "resamples": boot.resamples,
                       "seed": boot.seed, "level": boot.level, "min_images": boot.min_images, "versus": versus,
                       "baseline": BASELINE, "undertrained_db": UNDERTRAINED_DB,
                       "undertrained_metric": UNDERTRAINED_METRIC},
        "footnotes": _footnotes(views, ci),
        "summary": json.loads(views.summary.to_json(orient="records")),
        "gaps": json.loads(views.gaps.to_json(orient="records")),
        "undertrained": [asdict(u) for u in views.undertrained],
    }, indent=1, default=str))
    rt = runtime_markdown(store)
    if rt:
        paths["runtime"] = out / "runtime.md"
        paths["runtime"].write_text(rt)
    return paths
