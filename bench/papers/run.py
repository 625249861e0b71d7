"""Plan and run a paper table: which datasets are here, which rows the harness can
reproduce, and one :class:`bench.runner.Runner` per (scale, profile, kind of dataset).

Kinds: ``synthetic`` datasets get the table's suites; ``given`` (real-world) datasets
are scored on their own LR, which the runner does for them whatever the suites.
Methods run with an official checkpoint use the ``paper`` profile, the one whose
architecture the released files fit; the others use ``--profile``.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.adapter import REGISTRY, BenchError
from bench.runner import GIVEN_LAYOUTS
from bench.store import CellKey

from .spec import GIVEN, DatasetRef, Row, TableSpec

#: layouts whose LR is the dataset's own (bench.runner.plan_cells scores them on it)
CHECKPOINT_PROFILE = "paper"


@dataclass(frozen=True)
class Options:
    data_root: str | None = None
    dataset_paths: tuple[tuple[str, str], ...] = ()  # NAME=PATH from --datasets
    scales: tuple[int, ...] | None = None
    checkpoints: tuple[tuple[str, str], ...] = ()
    out: str = "results/papers"
    profile: str = "quick"
    device: str = "auto"
    methods: tuple[str, ...] | None = None  # None: every row
    seed: int = 0
    weights_dir: str | None = None
    jobs: int = 2
    tile: int | None = None
    figures: bool = True


@dataclass(frozen=True)
class DatasetState:
    ref: DatasetRef
    entry: str  # what goes into RunSpec.datasets
    store_name: str  # the name the store records cells under
    kind: str  # synthetic | given | "" when missing
    missing: str  # why it is not available ("" when it is)
    scales: tuple[int, ...] = ()  # scales with at least one image
    short: str = ""  # the reason in a few words, for skip lines


@dataclass(frozen=True)
class RowPlan:
    row: Row
    why_not: str  # "" when the harness runs the row
    scales: tuple[int, ...] = ()  # scales the method supports

    @property
    def runs(self) -> bool:
        return not self.why_not


@dataclass(frozen=True)
class TablePlan:
    spec: TableSpec
    scales: tuple[int, ...]
    datasets: tuple[DatasetState, ...]
    rows: tuple[RowPlan, ...]
    skip: str  # "" when the table runs

    def dataset(self, name: str) -> DatasetState:
        return next(d for d in self.datasets if d.ref.name == name)


@dataclass
class TableRun:
    plan: TablePlan
    cells: list[CellKey] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)  # method -> profile it ran at
    run_ids: list[str] = field(default_factory=list)


def _columns_for(spec: TableSpec, ds: str, scales: Sequence[int]):
    return [c for b in spec.blocks if b.scale in scales for c in b.columns if not c.datasets or ds in c.datasets]


def resolve_dataset(spec: TableSpec, ref: DatasetRef, opts: Options, scales: Sequence[int]) -> DatasetState:
    from bench.data import resolve_datasets

    paths = dict(opts.dataset_paths)
    path = paths.get(ref.name) or (paths.get(ref.resolve) if ref.resolve else None)
    store_name = ref.resolve or ref.name
    if path:
        entry = f"{store_name}={path}"
    elif ref.resolve:
        entry = ref.resolve
    else:
        why = f"no standard location; pass --datasets {ref.name}=PATH" + (f" ({ref.note})" if ref.note else "")
        return DatasetState(ref, "", store_name, "", why, short=f"no standard location, pass --datasets {ref.name}=PATH")
    if not path and not opts.data_root:
        return DatasetState(ref, entry, store_name, "", f"{ref.resolve} is looked up under --data-root, which is not "
                            f"set; pass --data-root DIR or --datasets {ref.name}=PATH",
                            short="looked up under --data-root, which is not set")
    try:
        with warnings.catch_warnings():  # the runner warns (once) when it reads the set for real
            warnings.simplefilter("ignore")
            (ds,) = resolve_datasets(entry, opts.data_root, tuple(scales))
    except BenchError as exc:
        short = f"not found under --data-root {opts.data_root}" if "not found under" in str(exc) else str(exc)
        return DatasetState(ref, entry, store_name, "", str(exc), short=short)
    kind = "given" if (not ds.has_hr or ds.layout in GIVEN_LAYOUTS) else "synthetic"
    cols = _columns_for(spec, ref.name, scales)
    wants_given = bool(cols) and all(c.suites == (GIVEN,) for c in cols)
    if wants_given and kind != "given":
        return DatasetState(ref, entry, store_name, "", f"{ds.root} was read as layout {ds.layout!r} with ground truth "
                            "only; this table scores the set's own LR images: give the real-world release folder")
    if not wants_given and kind == "given":
        return DatasetState(ref, entry, store_name, "", f"{ds.root} (layout {ds.layout!r}) provides its own LR; this "
                            "table synthesises LR from HR: give a folder of HR images")
    present = tuple(s for s in scales if ds.items_at(s))
    if not present:
        return DatasetState(ref, entry, store_name, "", f"{ds.root} has no images at "
                            + ", ".join(f"x{s}" for s in scales))
    return DatasetState(ref, entry, ds.name, kind, "", present)


def plan_table(spec: TableSpec, opts: Options) -> TablePlan:
    scales = tuple(s for s in spec.scales if opts.scales is None or s in opts.scales)
    known = set(REGISTRY.names())
    rows = []
    for r in spec.rows:
        if not r.method:
            rows.append(RowPlan(r, "reported only"))
        elif r.method not in known:
            rows.append(RowPlan(r, "not in this harness"))
        elif opts.methods is not None and r.method not in opts.methods:
            rows.append(RowPlan(r, "not run (--methods)"))
        else:
            sup = tuple(s for s in scales if s in REGISTRY.get(r.method).info.scales)
            rows.append(RowPlan(r, "" if sup else "scale not supported", sup))
    if not scales:
        return TablePlan(spec, scales, (), tuple(rows), "not at the requested --scales (the table has "
                         + ", ".join(f"x{s}" for s in spec.scales) + ")")
    datasets = tuple(resolve_dataset(spec, d, opts, scales) for d in spec.datasets)
    skip = ""
    if not any(d.kind for d in datasets):
        by_reason: dict[str, list[str]] = {}
        for d in datasets:
            by_reason.setdefault(d.short or d.missing, []).append(d.ref.name)
        skip = "no dataset available (" + "; ".join(f"{', '.join(n)}: {r}" for r, n in by_reason.items()) + ")"
    elif not any(r.runs for r in rows):
        skip = "no row the harness can reproduce (" + ", ".join(f"{r.row.label}: {r.why_not}" for r in rows) + ")"
    return TablePlan(spec, scales, datasets, tuple(rows), skip)


def run_table(plan: TablePlan, opts: Options, *, log: Callable[[str], None] = print) -> TableRun:
    """Run every (row, dataset, suite) the table needs; cells already stored are reused."""
    from bench.runner import Runner, RunSpec

    spec = plan.spec
    result = TableRun(plan)
    ckpts = dict(opts.checkpoints)
    for scale in plan.scales:
        methods = [r.row.method for r in plan.rows if r.runs and scale in r.scales]
        if opts.figures and "bicubic" not in methods and "bicubic" in REGISTRY.names():
            methods.insert(0, "bicubic")  # the side-by-side figures show bicubic beside every method
        methods = list(dict.fromkeys(methods))
        groups: dict[str, list[str]] = {}
        for m in methods:
            profile = CHECKPOINT_PROFILE if m in ckpts else opts.profile
            result.profiles[m] = profile
            groups.setdefault(profile, []).append(m)
        for kind in ("synthetic", "given"):
            dsets = [d for d in plan.datasets if d.kind == kind and scale in d.scales
                     and any(b.scale == scale for b in spec.blocks)]
            if not dsets:
                continue
            suites = [s for s in spec.suites_at(scale) if s != GIVEN]
            if kind == "synthetic" and not suites:
                continue
            for profile, names in groups.items():
                rs = RunSpec(
                    methods=tuple(names), datasets=",".join(d.entry for d in dsets), data_root=opts.data_root,
                    suites=";".join(suites) if kind == "synthetic" else None, scales=(scale,),
                    metrics=spec.protocol.metrics, protocol=spec.protocol.metric_protocol, profile=profile,
                    device=opts.device, out=opts.out, jobs=opts.jobs, seed=opts.seed,
                    checkpoints=tuple((m, p) for m, p in opts.checkpoints if m in names),
                    weights_dir=opts.weights_dir, timing=False, tile=opts.tile, save_sr=opts.figures,
                )
                log(f"[{spec.id}] x{scale} {kind}: {', '.join(names)} on {', '.join(d.store_name for d in dsets)}"
                    + (f" (profile {profile})" if profile != opts.profile else ""))
                runner = Runner(rs, log=log)
                runner.run()
                result.run_ids.append(runner.run_id)
                result.cells += list(runner.planned)
                result.failures += runner.failures
                runner.store.close()
    result.cells = list(dict.fromkeys(result.cells))
    return result
