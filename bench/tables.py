"""Views of the results store: Markdown, LaTeX, CSV, JSON, and the tidy ``summary.csv``.

Nothing here recomputes a number: every value is a mean over per-image records in the
store. Each learned method's profile, budget and model source go in a footnote;
metrics that could not run show ``n/a`` with their reason.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import pandas as pd
from tabulate import tabulate

from .metrics import METRICS
from .report import training_text
from .stats import Bootstrap, Resampler
from .store import CellKey, Store

GAP_COLUMNS = ["dataset", "scale", "protocol", "metric", "method", "variant", "domain", "value", "n_images",
               "baseline", "bound", "delta", "delta_low", "delta_high", "delta_significant", "gap", "gap_low",
               "gap_high", "gap_significant", "closed", "closed_low", "closed_high"]
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
    boot: Bootstrap = Bootstrap()
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
              versus: str | None = BICUBIC, boot: Bootstrap = Bootstrap()) -> Views:
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
    per_image = {k: part.set_index("image")["value"] for k, part in img.groupby(KEYS, sort=False, dropna=False)}
    summary["n_images"] = [len(per_image.get(k, ())) for k in _keys(summary)]
    summary["objective"] = [objective(variants.get((m, v)), m) for m, v in zip(summary.method, summary.variant)]
    return summary, per_image


def objective(meta: Mapping | None, method: str) -> str:
    """A row's training objective ("psnr", "perceptual"; "" classical), as stored with the variant,
    else (stored before it was recorded) the installed method's."""
    info = (meta or {}).get("info") or {}
    if "objective" in info:
        return str(info["objective"] or "")
    from .adapter import BenchError, objective_of

    try:
        return objective_of(method)
    except (BenchError, KeyError, ValueError):
        return ""


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
        rows.append([ds, int(scale), proto, metric, method, variant, suite, float(values[k]), len(common), base[1],
                     bound[0], g.delta.value, g.delta.low, g.delta.high,
                     g.delta.excludes_zero if g.delta.defined else None, g.gap.value, g.gap.low, g.gap.high,
                     g.gap.excludes_zero if g.gap.defined else None, g.closed.value, g.closed.low, g.closed.high])
    return pd.DataFrame(rows, columns=GAP_COLUMNS)


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
    out = set()
    for meta in variants.values():
        info = meta.get("info") or {}
        if "upper_bound" in info:
            flag = bool(info["upper_bound"])
        else:  # stored before the flag existed: ask the method's current info, if it is installed
            flag = _registered_upper_bound(meta["method"])
        if flag:
            out.add(meta["method"])
    return out


def _registered_upper_bound(method: str) -> bool:
    from .adapter import REGISTRY, BenchError

    try:
        return REGISTRY.get(method).info.upper_bound
    except BenchError:
        return False


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "Δ": r"$\Delta$", "σ": r"$\sigma$", "θ": r"$\theta$", "×": r"$\times$", "−": r"$-$", "…": r"\ldots{}",
    "–": "--", "—": "---", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "°": r"$^\circ$", "²": r"$^2$",
}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIAL))


def latex_escape(text: object) -> str:
    """Plain text -> LaTeX: the ten special characters escaped in one pass (so an
    escape is never escaped again), the few non-ASCII symbols tables use as math."""
    # whitespace runs (newlines included) become one space: a blank line would end a LaTeX paragraph
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group(0)], re.sub(r"\s+", " ", str(text)))


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
                    + (f", target domain `{meta['domain']}`" if meta["domain"] else "") + training_text(meta))
        else:
            line = f"`{meta['method']}` x{meta['scale']} ({v}): checkpoint sha256 {meta['sha256']}"
        extra = [n for n in meta["info"].get("notes", []) if n]
        if extra:
            line += "; " + "; ".join(extra)
        notes.append(line)
    for m, reason in sorted(views.metric_notes.items()):
        if m in set(views.summary["metric"]):
            notes.append(f"{metric_label(m)} n/a: {reason}")
    if "given" in set(views.summary["suite"]):
        notes.append("suite `given`: the dataset's own LR images; methods fitted per domain use their fit to the "
                     "dataset's own training split where it has one, else to `--target` (the embedded photos: the "
                     "synthetic `mixed` domain), since test images never enter training.")
    for c in views.not_fitted:
        notes.append(f"`{c['method']}` on {c['dataset']} x{c['scale']}: {c['error']}.")
    shown = set(views.summary["method"])
    for m in sorted(upper_bounds(views) & shown):
        notes.append(f"`{m}` is an upper bound (it is told what the other methods are not, e.g. the true "
                     "degradation) and is never marked best.")
    if len(views.rendered) > 1:
        notes.append("Rendered: " + rendered_line(views) + ".")
    return notes


#: a cell the run did not plan (e.g. a per-domain method on a suite that is not its domain)
NOT_RUN = "–"


def _rank(order: Sequence[str], key=lambda x: x):
    where = {x: i for i, x in enumerate(order)}
    return lambda x: (0, where[x], ()) if x in where else (1, len(where), key(x))


def grids(views: Views) -> list[tuple[str, str, int, str, pd.DataFrame, pd.DataFrame]]:
    """(dataset, protocol, scale, metric, methods x suites means, methods x suites ran?),
    datasets, metrics and suite columns in ``views``' orders."""
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
        out.append((ds, proto, int(scale), metric, frame, ran))
    return out


def row_labels(part: pd.DataFrame) -> pd.Series:
    """One row per (method, variant): the method's name alone when the table holds one
    variant of it, ``name (variant)`` when it holds several (a quick fit and a checkpoint)."""
    n = part.groupby("method")["variant"].transform("nunique")
    return part["method"].where(n <= 1, part["method"] + " (" + part["variant"] + ")")


def _bold_best(frame: pd.DataFrame, ran: pd.DataFrame, metric: str, wrap, bounds: set[str] = frozenset(),
               esc=str, not_run: str = NOT_RUN) -> pd.DataFrame:
    """Cell texts (``esc`` applied before ``wrap``, so the wrapping markup stays markup), the best
    competing value per column wrapped; upper bounds (``bounds``) are never best."""
    text = frame.apply(lambda col: col.map(lambda v: esc(_fmt(metric, v)))).astype(object)
    text = text.where(ran, not_run)
    for col in frame.columns:
        comp = frame[col].drop([r for r in frame.index if r.split(" (")[0] in bounds]).dropna()
        if len(comp) > 1:
            best = comp.idxmin() if lower_better(metric) else comp.idxmax()
            text.loc[best, col] = wrap(text.loc[best, col])
    return text


def markdown(views: Views, title: str = "Results") -> str:
    lines = [f"# {title}", ""]
    any_not_run = False
    bounds = upper_bounds(views)
    for ds, proto, scale, metric, frame, ran in grids(views):
        arrow = "↓" if lower_better(metric) else "↑"
        lines.append(f"### {ds} x{scale} — {metric_label(metric)} {arrow} ({proto})")
        lines.append("")
        text = _bold_best(frame, ran, metric, lambda s: f"**{s}**", bounds)
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
    bounds = upper_bounds(views)
    esc = latex_escape
    for ds, proto, scale, metric, frame, ran in grids(views):
        arrow = r"$\downarrow$" if lower_better(metric) else r"$\uparrow$"
        text = _bold_best(frame, ran, metric, lambda s: rf"\textbf{{{s}}}", bounds, esc=esc, not_run="--")
        cols = "l" + "c" * len(text.columns)
        rows = [" & ".join([esc(m), *map(str, r)]) + r" \\" for m, r in zip(text.index, text.values.tolist())]
        parts.append("\n".join([
            r"\begin{table}[t]\centering",
            rf"\caption{{{esc(ds)} $\times{scale}$, {esc(metric_label(metric))} {arrow} ({esc(proto)})}}",
            rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
            " & ".join(["Method", *[esc(c) for c in text.columns]]) + r" \\", r"\midrule", *rows,
            r"\bottomrule", r"\end{tabular}", r"\end{table}",
        ]))
    notes = _footnotes(views)
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
