"""``python run_bench.py paper NAME[:TABLE] | all | --list``: regenerate paper tables.

Writes, under ``--out``: ``tables/<paper>_<table>.{md,csv,tex}`` (the paper's layout with
reported, reproduced and Δ per cell), ``summary.csv`` (and the other views of the store,
as every run), ``figures/`` and ``report.md``.
"""
from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
import warnings
from pathlib import Path

from bench.adapter import PROFILES, REGISTRY, BenchError

from .run import CHECKPOINT_PROFILE, Options, TablePlan, plan_table, run_table
from .spec import GIVEN, load_specs, select

EPILOG = f"""\
examples:
  python run_bench.py paper --list
  python run_bench.py paper dasr-wang:T2 --data-root DATA --scales 4
  python run_bench.py paper cdsr:T2 --data-root DATA --checkpoint cdsr=model_492_psnr_36.17.pt
  python run_bench.py paper daa --data-root DATA --checkpoint daa=model_pth/model/model_best.pt
  python run_bench.py paper all --data-root DATA
  python run_bench.py paper dasr-wei:T3 --datasets AIM2019-val=~/data/AIM2019/val

A method given a checkpoint runs at the '{CHECKPOINT_PROFILE}' profile (the official architecture the
released file fits); the others are trained at --profile. Output: OUT/tables/*.md|csv|tex,
OUT/summary.csv, OUT/figures/, OUT/report.md.
"""


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _scales(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(t) for t in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scales takes integers like 2,3,4, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"--scales takes positive integers, got {text!r}")
    return vals


def _pairs(items, flag: str) -> tuple[tuple[str, str], ...]:
    out = []
    for it in items or []:
        for part in ([it] if flag == "--checkpoint" else _csv(it)):
            if "=" not in part:
                raise BenchError(f"{flag} {part!r} must look like NAME=PATH")
            name, path = part.split("=", 1)
            out.append((name.strip(), os.path.expanduser(path.strip())))
    return tuple(out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_bench.py paper",
        description="Regenerate the tables of the reproduced papers under each paper's own protocol, with the "
                    "reported values beside the reproduced ones, figures and a report.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", nargs="?", help="PAPER (all its tables), PAPER:TABLE, or 'all' (see --list)")
    p.add_argument("--list", action="store_true", help="list the table specs and exit")
    p.add_argument("--data-root", default=os.environ.get("UNPAIRED_SR_DATA"),
                   help="folder holding the standard datasets (Set5, Set14, B100, Urban100, ...) [$UNPAIRED_SR_DATA]")
    p.add_argument("--datasets", action="append", default=[], metavar="NAME=PATH",
                   help="where a table's dataset lives (for sets without a standard location, e.g. AIM2019-val); "
                        "comma list or repeatable")
    p.add_argument("--scales", type=_scales, default=None, help="only these scales of each table (default: all)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                   help=f"released weights for a method (runs at the '{CHECKPOINT_PROFILE}' profile); repeatable")
    p.add_argument("--methods", default=None, help="run only these methods' rows (comma list); the other rows "
                                                   "show their reported values")
    p.add_argument("--profile", choices=PROFILES, default="quick",
                   help="training profile for learned methods without a checkpoint [%(default)s]")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="[%(default)s]")
    p.add_argument("--out", default="results/papers", help="output folder [%(default)s]")
    p.add_argument("--seed", type=int, default=0, help="run seed for LR synthesis and training [%(default)s]")
    p.add_argument("--weights-dir", default=os.environ.get("UNPAIRED_SR_WEIGHTS"),
                   help="folder with the LPIPS / ImageNet weight files [$UNPAIRED_SR_WEIGHTS]")
    p.add_argument("--jobs", type=int, default=2, help="parallel workers for scoring [%(default)s]")
    p.add_argument("--tile", type=int, default=None, help="upscale in tiles of this many LR pixels")
    p.add_argument("--no-figures", action="store_true", help="skip the figures (and the SR images they need)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def list_specs() -> int:
    from tabulate import tabulate

    known = set(REGISTRY.names())
    rows = []
    for s in load_specs():
        statuses = sorted({r.status for r in s.reported})
        rows.append((s.id, s.protocol.family + ("" if s.protocol.status == "documented" else " (assumed)"),
                     s.protocol.metric_protocol, "/".join(s.protocol.metrics),
                     ",".join(f"x{x}" for x in s.scales), ", ".join(d.name for d in s.datasets),
                     ", ".join(r.id + ("" if r.method in known else "*") for r in s.rows), ",".join(statuses)))
    print(tabulate(rows, headers=["table", "suites", "protocol", "metrics", "scales", "datasets", "rows",
                                  "reported"], tablefmt="github", disable_numparse=True))
    print("\n* = reported only (not in this harness, or no method registered under that name)")
    return 0


def _options(a: argparse.Namespace) -> Options:
    methods = None
    if a.methods:
        methods = _csv(a.methods)
        for m in methods:
            REGISTRY.get(m)  # did-you-mean on unknown names, before any work
    ckpts = _pairs(a.checkpoint, "--checkpoint")
    for name, path in ckpts:
        REGISTRY.get(name)
        if not Path(path).exists():
            raise BenchError(f"--checkpoint {name}={path}: no such file or folder; pass the released file")
    return Options(data_root=a.data_root, dataset_paths=_pairs(a.datasets, "--datasets"), scales=a.scales,
                   checkpoints=ckpts, out=a.out, profile=a.profile, device=a.device, methods=methods, seed=a.seed,
                   weights_dir=a.weights_dir, jobs=a.jobs, tile=a.tile, figures=not a.no_figures)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parser().parse_args(argv)
    if a.list:
        return list_specs()
    if not a.table:
        raise BenchError("name a table (e.g. `paper dasr-wang:T2`), a paper, or `all`; `paper --list` shows them")
    specs = select(a.table)
    opts = _options(a)
    if opts.scales is not None and a.table != "all" and not any(set(s.scales) & set(opts.scales) for s in specs):
        have = sorted({x for s in specs for x in s.scales})
        raise BenchError(f"{a.table} has no table at --scales {','.join(map(str, opts.scales))}; "
                         f"it has x{', x'.join(map(str, have))}")
    plans = [plan_table(s, opts) for s in specs]
    skipped = [(p.spec.id, p.skip) for p in plans if p.skip]
    todo = [p for p in plans if not p.skip]
    if not todo and a.table != "all" and len(plans) == 1:
        raise BenchError(f"paper {plans[0].spec.id}: {plans[0].skip}")
    command = "python run_bench.py paper " + " ".join(shlex.quote(x) for x in argv)
    return produce(todo, skipped, opts, command)


def produce(todo: list[TablePlan], skipped: list[tuple[str, str]], opts: Options, command: str) -> int:
    """Run the planned tables, then write their files, the figures and report.md."""
    from bench.report import TableSection, write_report
    from bench.store import Store
    from bench.tables import summarize, write_all

    from .render import CSV_COLUMNS, render

    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [run_table(p, opts, log=lambda s: print(s, flush=True)) for p in todo]
    store = Store(out / "results.sqlite")
    all_cells = list(dict.fromkeys(c for r in runs for c in r.cells))
    extra = []
    if runs:
        paths = write_all(store, out, all_cells, title="UnpairedSR-Bench paper tables: all cells")
        extra = [paths["summary"], paths["markdown"]]
    # fit and checkpoint variants are unique across methods; classical ones ('-') carry no model
    variants = {v: meta for (_, v), meta in store.variants().items()}
    cells_status, metric_notes = store.cells(), store.metric_notes()
    sections, used, gaps, failures = [], set(), {}, []
    for r in runs:
        plan, spec = r.plan, r.plan.spec
        views = summarize(store, r.cells)
        used |= set(views.summary["variant"])
        methods = sorted({rp.row.method for rp in plan.rows if rp.runs})
        tgaps = {m: tuple(REGISTRY.get(m).info.gaps) for m in methods if REGISTRY.get(m).info.gaps}
        gaps.update(tgaps)
        rendered = render(plan, r, views.summary, variants, cells_status, metric_notes, tgaps)
        tdir = out / "tables"
        tdir.mkdir(parents=True, exist_ok=True)
        files = {"Markdown": tdir / f"{spec.file_stem}.md", "CSV": tdir / f"{spec.file_stem}.csv",
                 "LaTeX": tdir / f"{spec.file_stem}.tex"}
        files["Markdown"].write_text(f"# {spec.id} — {spec.title}\n\n{spec.citation}.\n\n{rendered.markdown}\n",
                                     encoding="utf-8")
        with open(files["CSV"], "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            w.writeheader()
            w.writerows(rendered.rows)
        files["LaTeX"].write_text(rendered.latex, encoding="utf-8")
        figs = _figures(plan, r, store, views.summary, opts) if opts.figures else []
        sections.append(TableSection(spec.id, spec.title, spec.citation, rendered.markdown, files, tuple(figs)))
        failures += r.failures
        print(f"\n## {spec.id} — {spec.title}\n\n{rendered.markdown}\nwrote {files['Markdown']}", flush=True)
    report = write_report(out, command=command, sections=sections, skipped=skipped,
                          runs=[x for x in store.runs() if any(x["run_id"] in r.run_ids for r in runs)],
                          variants=variants, used_variants=used, metric_notes=metric_notes, gaps=gaps,
                          extra_files=extra)
    store.close()
    for tid, why in skipped:
        print(f"skipped {tid}: {why}")
    print(f"report: {report}")
    if failures:
        print(f"{len(failures)} cell(s) failed:", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    return 0


def _figures(plan: TablePlan, run, store, summary, opts: Options) -> list:
    from bench.data import resolve_datasets
    from bench.figures import crop_figures, strength_plots

    spec = plan.spec
    dsmap = {}
    for d in plan.datasets:
        if d.kind:
            with warnings.catch_warnings():  # already said by the run
                warnings.simplefilter("ignore")
                (ds,) = resolve_datasets(d.entry, opts.data_root, d.scales)
            dsmap[d.store_name] = ds
    order = [rp.row.method for rp in plan.rows if rp.runs]
    figs = crop_figures(opts.out, run.cells, store, dsmap, order, group=spec.file_stem)
    points = []
    runs_by_row = {rp.row.id: rp for rp in plan.rows}
    for (row, block_id, ds, label, metric), (text, _) in spec.reported_cells().items():
        rp = runs_by_row[row]
        if not rp.runs:
            continue
        col = spec.block(block_id).column(label)
        if len(col.suites) == 1 and col.suites[0] != GIVEN:
            st = plan.dataset(ds)
            points.append((rp.row.method, st.store_name, spec.block(block_id).scale, col.suites[0], metric,
                           float(text)))
    figs += strength_plots(opts.out, summary, points, prefix=f"{spec.file_stem}_")
    return figs

