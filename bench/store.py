"""The results store: one SQLite file (WAL) under ``--out``; tables are views of it.

Every finished cell (method x dataset x suite x scale x protocol) is written in one
transaction, so killing the process loses at most the cell in flight. Records are
keyed by the method's *variant* (its fingerprint: profile plus fit hash or checkpoint
sha256), never by the run, so a resumed run and an uninterrupted one produce the
same rows; ``run_id`` only says which run wrote a row.
"""
from __future__ import annotations

import json
import math
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from . import faults

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started REAL, finished REAL, spec_json TEXT, spec_hash TEXT,
    provenance_json TEXT, status TEXT);
CREATE TABLE IF NOT EXISTS variants (
    variant TEXT PRIMARY KEY, method TEXT, profile TEXT, scale INTEGER, source TEXT,
    domain TEXT, budget TEXT, sha256 TEXT, wall_s REAL, info_json TEXT);
CREATE TABLE IF NOT EXISTS cells (
    variant TEXT, dataset TEXT, suite TEXT, scale INTEGER, protocol TEXT,
    method TEXT, status TEXT, error TEXT, n_images INTEGER, wall_s REAL, run_id TEXT, metrics TEXT,
    PRIMARY KEY (variant, dataset, suite, scale, protocol));
CREATE TABLE IF NOT EXISTS records (
    variant TEXT, dataset TEXT, suite TEXT, scale INTEGER, protocol TEXT, image TEXT, metric TEXT,
    value REAL, method TEXT, run_id TEXT,
    PRIMARY KEY (variant, dataset, suite, scale, protocol, image, metric));
CREATE TABLE IF NOT EXISTS metric_notes (
    metric TEXT PRIMARY KEY, available INTEGER, reason TEXT);
CREATE TABLE IF NOT EXISTS timings (
    variant TEXT, method TEXT, device TEXT, input TEXT, precision TEXT, ms_median REAL, ms_iqr REAL,
    mpix_s REAL, gflops REAL, params INTEGER, peak_mib REAL, repeats INTEGER, run_id TEXT, extra_json TEXT,
    PRIMARY KEY (method, variant, device, input, precision));
CREATE TABLE IF NOT EXISTS kernels (
    method TEXT, variant TEXT, device TEXT, input TEXT, precision TEXT, rank INTEGER, name TEXT, calls INTEGER,
    total_ms REAL, share REAL, PRIMARY KEY (method, variant, device, input, precision, rank));
"""


@dataclass(frozen=True)
class CellKey:
    variant: str
    dataset: str
    suite: str
    scale: int
    protocol: str


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    # -- runs ------------------------------------------------------------
    def begin_run(self, run_id: str, spec: Mapping, spec_hash: str, provenance: Mapping) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?)",
                (run_id, time.time(), None, json.dumps(spec, sort_keys=True), spec_hash,
                 json.dumps(provenance, sort_keys=True, default=str), "running"),
            )

    def end_run(self, run_id: str, status: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE runs SET finished=?, status=? WHERE run_id=?", (time.time(), status, run_id))

    def runs(self) -> list[dict]:
        cur = self.db.execute("SELECT * FROM runs ORDER BY started")
        return [dict(zip([c[0] for c in cur.description], r)) for r in cur.fetchall()]

    # -- variants (model sources) ---------------------------------------
    def put_variant(self, variant: str, method: str, profile: str, scale: int, source: str, domain: str,
                    budget: str, sha256: str, wall_s: float | None, info: Mapping) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO variants VALUES (?,?,?,?,?,?,?,?,?,?)",
                (variant, method, profile, scale, source, domain, budget, sha256, wall_s,
                 json.dumps(info, sort_keys=True, default=str)),
            )

    def variants(self) -> dict[str, dict]:
        cur = self.db.execute("SELECT * FROM variants")
        cols = [c[0] for c in cur.description]
        out = {}
        for r in cur.fetchall():
            d = dict(zip(cols, r))
            d["info"] = json.loads(d.pop("info_json") or "{}")
            out[d["variant"]] = d
        return out

    # -- cells -----------------------------------------------------------
    def done_metrics(self, key: CellKey) -> set[str]:
        """Metrics already stored for a finished cell (empty when not finished)."""
        row = self.db.execute(
            "SELECT status, metrics FROM cells WHERE variant=? AND dataset=? AND suite=? AND scale=? AND protocol=?",
            (key.variant, key.dataset, key.suite, key.scale, key.protocol),
        ).fetchone()
        if not row or row[0] != "done":
            return set()
        return set(json.loads(row[1] or "[]"))

    def write_cell(self, key: CellKey, method: str, run_id: str, metrics: Sequence[str],
                   values: Mapping[tuple[str, str], float | None], n_images: int, wall_s: float) -> None:
        """One transaction: the per-image values of ``metrics`` and the cell's status."""
        prior = self.done_metrics(key)
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO records VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (key.variant, key.dataset, key.suite, key.scale, key.protocol, image, metric,
                     None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v), method, run_id)
                    for (image, metric), v in sorted(values.items())
                ],
            )
            db.execute(
                "INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (key.variant, key.dataset, key.suite, key.scale, key.protocol, method, "done", None, n_images,
                 wall_s, run_id, json.dumps(sorted(prior | set(metrics)))),
            )
            faults.reached("cell-write")  # inside the transaction: a kill here must lose the whole cell

    def fail_cell(self, key: CellKey, method: str, run_id: str, error: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (key.variant, key.dataset, key.suite, key.scale, key.protocol, method, "failed", error, 0, 0.0,
                 run_id, "[]"),
            )

    def cells(self) -> list[dict]:
        cur = self.db.execute("SELECT * FROM cells")
        return [dict(zip([c[0] for c in cur.description], r)) for r in cur.fetchall()]

    def records(self) -> list[dict]:
        cur = self.db.execute(
            "SELECT method, variant, dataset, suite, scale, protocol, image, metric, value FROM records"
        )
        return [dict(zip([c[0] for c in cur.description], r)) for r in cur.fetchall()]

    # -- metric availability ---------------------------------------------
    def put_metric_note(self, metric: str, available: bool, reason: str | None) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO metric_notes VALUES (?,?,?)", (metric, int(available), reason))

    def metric_notes(self) -> dict[str, str]:
        return {m: r for m, a, r in self.db.execute("SELECT * FROM metric_notes") if not a and r}

    # -- timing ----------------------------------------------------------
    def put_timing(self, row: Mapping, kernels: Iterable[Mapping] = ()) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO timings VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (row["variant"], row["method"], row["device"], row["input"], row["precision"], row["ms_median"],
                 row["ms_iqr"], row["mpix_s"], row.get("gflops"), row.get("params"), row.get("peak_mib"),
                 row["repeats"], row.get("run_id"), json.dumps(row.get("extra", {}), default=str)),
            )
            db.execute("DELETE FROM kernels WHERE method=? AND variant=? AND device=? AND input=? AND precision=?",
                       (row["method"], row["variant"], row["device"], row["input"], row["precision"]))
            db.executemany(
                "INSERT INTO kernels VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(row["method"], row["variant"], row["device"], row["input"], row["precision"], i, k["name"], k["calls"],
                  k["total_ms"], k["share"]) for i, k in enumerate(kernels)],
            )

    def has_timing(self, method: str, variant: str, device: str, input_desc: str, precision: str) -> bool:
        return self.db.execute(
            "SELECT 1 FROM timings WHERE method=? AND variant=? AND device=? AND input=? AND precision=?",
            (method, variant, device, input_desc, precision),
        ).fetchone() is not None

    def timings(self) -> list[dict]:
        cur = self.db.execute("SELECT * FROM timings ORDER BY method, device, input, precision")
        return [dict(zip([c[0] for c in cur.description], r)) for r in cur.fetchall()]

    def kernels(self) -> list[dict]:
        cur = self.db.execute("SELECT * FROM kernels ORDER BY method, variant, device, input, precision, rank")
        return [dict(zip([c[0] for c in cur.description], r)) for r in cur.fetchall()]
