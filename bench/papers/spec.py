"""Paper table specs: one TOML file per reproduced table, read into frozen dataclasses.

A table is a grid. Its *rows* are methods (run by the harness when registered, shown
with their reported values otherwise); its *blocks* are the sub-tables a paper prints
(one per scale, or per scale and noise level); a block's *columns* are settings, each a
list of canonical suite names whose per-suite means are averaged into the cell (CDSR's
"9 kernels averaged" is one column of nine ``manet-si`` suites). A cell is
(row, block, dataset, column). Reported values keep the text the paper printed, so a
table shows ``21.600`` and not ``21.6``; ``csv`` says which row of the project's
``paper_numbers.csv`` they were copied from (the tests compare the two).
"""
from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from bench.adapter import BenchError, unknown_name

SPEC_DIR = Path(__file__).resolve().parent
STATUSES = ("paper", "issue", "second-hand", "not transcribed")
METRIC_PROTOCOLS = ("paper-y", "rgb")
METRICS = ("psnr", "ssim", "lpips", "niqe")
GIVEN = "given"  # the dataset's own LR images (real-world sets)
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


class SpecError(BenchError):
    """A paper table file is malformed (a bug in the shipped data or a user's own file)."""


@dataclass(frozen=True)
class Column:
    key: str  # the setting as paper_numbers.csv names it: "sigma=1.2", "k3", "9 kernels averaged", "-"
    label: str  # the header the table prints
    suites: tuple[str, ...]  # canonical suite names (or "given"), averaged into one cell
    datasets: tuple[str, ...] = ()  # restricts the column to these datasets (default: all)


@dataclass(frozen=True)
class Block:
    id: str
    scale: int
    label: str
    columns: tuple[Column, ...]

    def column(self, label: str) -> Column:
        for c in self.columns:
            if c.label == label:
                return c
        raise KeyError(label)


@dataclass(frozen=True)
class DatasetRef:
    name: str  # as the paper / paper_numbers.csv names it (the column header)
    resolve: str  # standard dataset name under --data-root ("" when the harness has none)
    note: str = ""


@dataclass(frozen=True)
class Row:
    id: str
    label: str
    method: str  # registered method that reproduces the row ("" = reported only)
    printed: bool = True  # False: a row the harness adds (e.g. a bicubic baseline the paper did not print)
    note: str = ""


@dataclass(frozen=True)
class CsvKey:
    """Which row of paper_numbers.csv a reported entry copies."""

    method: str
    table: str
    protocol: str
    noise: str


@dataclass(frozen=True)
class Reported:
    row: str
    block: str
    columns: tuple[str, ...]  # column labels, in the order of each dataset's value list
    metrics: tuple[str, ...]  # what a "a/b/c" value holds, in order
    values: Mapping[str, tuple[str, ...]]  # dataset name -> printed text per column
    source: str
    status: str
    csv: CsvKey | None = None


@dataclass(frozen=True)
class Footnote:
    text: str
    rows: tuple[str, ...] = ()  # empty: every row
    columns: tuple[str, ...] = ()  # column keys; empty: every column
    blocks: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()

    def applies(self, row: str, block: str, dataset: str, column_key: str) -> bool:
        return ((not self.rows or row in self.rows) and (not self.blocks or block in self.blocks)
                and (not self.datasets or dataset in self.datasets)
                and (not self.columns or column_key in self.columns))


@dataclass(frozen=True)
class Protocol:
    family: str  # suite family (or "given" for real-world sets)
    metric_protocol: str  # paper-y | rgb
    crop: str
    metrics: tuple[str, ...]
    description: str
    status: str  # documented | assumed


@dataclass(frozen=True)
class TableSpec:
    id: str  # "paper:table"
    paper: str
    table: str
    title: str
    citation: str
    caption: str
    source: str
    protocol: Protocol
    datasets: tuple[DatasetRef, ...]
    blocks: tuple[Block, ...]
    rows: tuple[Row, ...]
    reported: tuple[Reported, ...]
    footnotes: tuple[Footnote, ...]
    path: str

    @property
    def scales(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(b.scale for b in self.blocks))

    @property
    def file_stem(self) -> str:
        return f"{self.paper}_{self.table}"

    def block(self, block_id: str) -> Block:
        for b in self.blocks:
            if b.id == block_id:
                return b
        raise KeyError(block_id)

    def row(self, row_id: str) -> Row:
        for r in self.rows:
            if r.id == row_id:
                return r
        raise KeyError(row_id)

    def dataset(self, name: str) -> DatasetRef:
        for d in self.datasets:
            if d.name == name:
                return d
        raise KeyError(name)

    def suites_at(self, scale: int) -> tuple[str, ...]:
        """Every suite the table needs at ``scale``, in table order."""
        out: dict[str, None] = {}
        for b in self.blocks:
            if b.scale == scale:
                for c in b.columns:
                    out.update(dict.fromkeys(c.suites))
        return tuple(out)

    def reported_cells(self) -> dict[tuple[str, str, str, str, str], tuple[str, Reported]]:
        """(row, block, dataset, column label, metric) -> (printed text, its entry)."""
        out: dict[tuple[str, str, str, str, str], tuple[str, Reported]] = {}
        for rep in self.reported:
            for ds, texts in rep.values.items():
                for label, text in zip(rep.columns, texts):
                    parts = text.split("/")
                    for metric, part in zip(rep.metrics, parts):
                        out[(rep.row, rep.block, ds, label, metric)] = (part.strip(), rep)
        return out


# --------------------------------------------------------------------------- reading

def _req(d: Mapping, key: str, where: str, typ: type = str):
    if key not in d:
        raise SpecError(f"{where}: missing field {key!r}")
    v = d[key]
    if not isinstance(v, typ):
        raise SpecError(f"{where}: field {key!r} must be a {typ.__name__}, got {type(v).__name__}")
    return v


def _strs(v, where: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise SpecError(f"{where}: expected a list of strings")
    return tuple(v)


def _check_suite(name: str, where: str) -> None:
    if name == GIVEN:
        return
    from bench.degrade import get_suite

    try:
        suite = get_suite(name)
    except BenchError as exc:
        raise SpecError(f"{where}: suite {name!r}: {exc}") from None
    if suite.name != name:  # the table must name suites canonically, or cached cells would not match
        raise SpecError(f"{where}: write suite {name!r} canonically as {suite.name!r}")


def parse_table(data: Mapping, path: str) -> TableSpec:
    where = Path(path).name
    tid = _req(data, "id", where)
    paper, _, table = tid.partition(":")
    if not table:
        raise SpecError(f"{where}: id {tid!r} must look like paper:table")
    p = _req(data, "protocol", where, dict)
    metrics = _strs(_req(p, "metrics", f"{where} [protocol]", list), f"{where} [protocol] metrics")
    for m in metrics:
        if m not in METRICS:
            raise SpecError(f"{where}: " + unknown_name("metric", m, METRICS))
    proto = Protocol(
        family=_req(p, "family", f"{where} [protocol]"),
        metric_protocol=_req(p, "metric_protocol", f"{where} [protocol]"),
        crop=_req(p, "crop", f"{where} [protocol]"),
        metrics=metrics,
        description=_req(p, "description", f"{where} [protocol]"),
        status=p.get("status", "documented"),
    )
    if proto.metric_protocol not in METRIC_PROTOCOLS:
        raise SpecError(f"{where}: metric_protocol {proto.metric_protocol!r} is not one of {', '.join(METRIC_PROTOCOLS)}")
    if proto.crop != "scale":
        raise SpecError(f"{where}: crop {proto.crop!r}: the harness scores with crop border = scale only")
    if proto.status not in ("documented", "assumed"):
        raise SpecError(f"{where}: protocol status must be 'documented' or 'assumed'")

    datasets = tuple(DatasetRef(_req(d, "name", f"{where} [[dataset]]"), d.get("resolve", d["name"]), d.get("note", ""))
                     for d in _req(data, "dataset", where, list))
    ds_names = [d.name for d in datasets]
    blocks = []
    for b in _req(data, "block", where, list):
        bw = f"{where} block {b.get('id')!r}"
        cols = []
        for c in _req(b, "columns", bw, list):
            suites = _strs(_req(c, "suites", bw, list), f"{bw} suites")
            for s in suites:
                _check_suite(s, bw)
            cds = _strs(c.get("datasets", []), f"{bw} column datasets")
            for d in cds:
                if d not in ds_names:
                    raise SpecError(f"{bw}: column dataset {d!r} is not among the table's datasets {ds_names}")
            cols.append(Column(_req(c, "key", bw), c.get("label", c["key"]), suites, cds))
        if len({c.label for c in cols}) != len(cols):
            raise SpecError(f"{bw}: column labels must be unique")
        blocks.append(Block(_req(b, "id", bw), _req(b, "scale", bw, int), b.get("label", f"x{b['scale']}"), tuple(cols)))
    if len({b.id for b in blocks}) != len(blocks):
        raise SpecError(f"{where}: block ids must be unique")
    rows = tuple(Row(_req(r, "id", f"{where} [[row]]"), _req(r, "label", f"{where} [[row]]"), r.get("method", ""),
                     bool(r.get("printed", True)), r.get("note", "")) for r in _req(data, "row", where, list))
    row_ids = [r.id for r in rows]
    if len(set(row_ids)) != len(row_ids):
        raise SpecError(f"{where}: row ids must be unique")
    block_ids = {b.id: b for b in blocks}
    reported = []
    for i, r in enumerate(data.get("reported", [])):
        rw = f"{where} reported #{i + 1}"
        row = _req(r, "row", rw)
        if row not in row_ids:
            raise SpecError(f"{rw}: row {row!r} is not declared; rows: {', '.join(row_ids)}")
        bid = _req(r, "block", rw)
        if bid not in block_ids:
            raise SpecError(f"{rw}: block {bid!r} is not declared")
        labels = _strs(r["columns"], rw) if "columns" in r else tuple(c.label for c in block_ids[bid].columns)
        for lab in labels:
            try:
                block_ids[bid].column(lab)
            except KeyError:
                raise SpecError(f"{rw}: block {bid!r} has no column {lab!r}") from None
        status = _req(r, "status", rw)
        if status not in STATUSES:
            raise SpecError(f"{rw}: status {status!r} is not one of {', '.join(STATUSES)}")
        rmetrics = _strs(_req(r, "metrics", rw, list), rw)
        values: dict[str, tuple[str, ...]] = {}
        for ds, texts in r.get("values", {}).items():
            if ds not in ds_names:
                raise SpecError(f"{rw}: dataset {ds!r} is not among the table's datasets {ds_names}")
            texts = _strs(texts, f"{rw} values.{ds}")
            if len(texts) != len(labels):
                raise SpecError(f"{rw}: values.{ds} has {len(texts)} entries for {len(labels)} columns")
            for t in texts:
                parts = t.split("/")
                if len(parts) != len(rmetrics) or not all(_NUMBER.match(x.strip()) for x in parts):
                    raise SpecError(f"{rw}: value {t!r} does not read as {'/'.join(rmetrics)}")
            values[ds] = texts
        if status == "not transcribed" and values:
            raise SpecError(f"{rw}: a 'not transcribed' entry carries no values")
        csv = r.get("csv")
        reported.append(Reported(row, bid, labels, rmetrics, values, _req(r, "source", rw), status,
                                 CsvKey(csv.get("method", row), csv.get("table", tid), csv["protocol"], csv["noise"])
                                 if csv else None))
    notes = tuple(Footnote(_req(f, "text", f"{where} [[footnote]]"), tuple(f.get("rows", ())), tuple(f.get("columns", ())),
                           tuple(f.get("blocks", ())), tuple(f.get("datasets", ()))) for f in data.get("footnote", []))
    return TableSpec(tid, paper, table, _req(data, "title", where), _req(data, "citation", where),
                     _req(data, "caption", where), _req(data, "source", where), proto, datasets, tuple(blocks), rows,
                     tuple(reported), notes, str(path))


def read_table(path: str | Path) -> TableSpec:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"paper table file {p} is not valid TOML ({exc}); fix the file") from None
    return parse_table(data, str(p))


@lru_cache(maxsize=1)
def load_specs() -> tuple[TableSpec, ...]:
    """Every table shipped in bench/papers/, sorted by id."""
    specs = [read_table(f) for f in sorted(SPEC_DIR.glob("*.toml"))]
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SpecError(f"two paper table files declare id {dup!r}")
    return tuple(sorted(specs, key=lambda s: s.id))


def select(name: str) -> list[TableSpec]:
    """``all``, ``PAPER`` (every table of that paper) or ``PAPER:TABLE``."""
    specs = load_specs()
    if name == "all":
        return list(specs)
    if ":" in name:
        for s in specs:
            if s.id == name:
                return [s]
        raise BenchError(unknown_name("paper table", name, [s.id for s in specs]) + "; see `paper --list`")
    found = [s for s in specs if s.paper == name]
    if not found:
        raise BenchError(unknown_name("paper", name, sorted({s.paper for s in specs})) + "; see `paper --list`")
    return found
