"""The results store: one SQLite file (WAL) under ``--out``; tables are views of it.

Every finished cell (method x dataset x suite x scale x protocol) is written in one
transaction, so killing the process loses at most the cell in flight. Records are
keyed by the method's *variant* (its fingerprint: profile plus fit hash or checkpoint
sha256), never by the run, so a resumed run and an uninterrupted one produce the
same rows; ``run_id`` only says which run wrote a row.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
import re
import socket
import sqlite3
import time
import contextlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from . import faults
from .adapter import BenchError

#: Bump when the tables change; ``Store`` migrates older stores it knows how to read.
SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started REAL, finished REAL, spec_json TEXT, spec_hash TEXT,
    provenance_json TEXT, status TEXT);
CREATE TABLE IF NOT EXISTS variants (
    method TEXT, variant TEXT, profile TEXT, scale INTEGER, source TEXT,
    domain TEXT, budget TEXT, sha256 TEXT, wall_s REAL, info_json TEXT, PRIMARY KEY (method, variant));
CREATE TABLE IF NOT EXISTS cells (
    cell_id TEXT PRIMARY KEY, method TEXT, method_fp TEXT, variant TEXT, dataset TEXT, dataset_digest TEXT,
    suite TEXT, suite_fp TEXT, seed INTEGER, scale INTEGER, protocol TEXT,
    status TEXT, error TEXT, n_images INTEGER, wall_s REAL, run_id TEXT, metrics TEXT, finished REAL);
CREATE TABLE IF NOT EXISTS records (
    cell_id TEXT, image TEXT, metric TEXT, value REAL, metric_version TEXT, run_id TEXT,
    PRIMARY KEY (cell_id, image, metric));
CREATE TABLE IF NOT EXISTS claims (
    cell_id TEXT PRIMARY KEY, owner TEXT, run_id TEXT, since REAL);
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

#: a claim by a process on another host (whose liveness cannot be checked) expires after this
CLAIM_STALE_S = 12 * 3600.0
#: status of a cell a per-domain method has nothing to be fitted to (see Store.mark_not_fitted)
NOT_FITTED = "not-fitted"

#: the columns a table row is labelled by; several cells (content keys) can share them
DISPLAY = ("method", "variant", "dataset", "suite", "scale", "protocol")


@dataclass(frozen=True)
class CellKey:
    """Everything that makes a cell's numbers (DESIGN section 5), not only its names.

    ``method_fp``: the method's code identity (declared ``code_version`` or its module
    digests) and precision; ``variant``: the model source (fit key or checkpoint sha256);
    ``dataset_digest``: the dataset's content manifest; ``suite_fp``: the suite's steps;
    ``seed``: the run seed where the suite draws anything (else ``None``).
    """

    method: str
    variant: str
    dataset: str
    suite: str
    scale: int
    protocol: str
    method_fp: str = ""
    dataset_digest: str = ""
    suite_fp: str = ""
    seed: int | None = None

    @property
    def cell_id(self) -> str:
        content = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("dataset", "suite")}
        content["suite"] = self.suite if not self.suite_fp else ""  # named suites are keyed by fingerprint
        content["dataset"] = self.dataset if not self.dataset_digest else ""
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:32]

    @property
    def display(self) -> tuple:
        return tuple(getattr(self, k) for k in DISPLAY)


class StoreError(BenchError):
    """The store cannot be opened or written; the message says why and what to do."""


class Store:
    def __init__(self, path: str | Path, *, readonly: bool = False, log=None):
        self.path = Path(path)
        self.readonly = readonly
        with store_errors(self.path, "open"):
            if readonly:
                wal = self.path.with_name(self.path.name + "-wal")
                if wal.exists() and wal.stat().st_size:
                    raise StoreError(f"{self.path} has results still in its write-ahead log {wal.name}, which a "
                                     "read-only reader cannot see; copy the folder to writable storage and run "
                                     "run_bench.py tables there")
                # immutable=1: read a store on read-only media (no WAL or lock files are made)
                self.db = sqlite3.connect(f"file:{self.path}?immutable=1", uri=True, isolation_level=None)
                self._check_schema(log, migrate=False)
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the output folder {self.path.parent} ({exc.strerror}); "
                                 "pass a writable --out") from None
            if not writable(self.path.parent):
                raise StoreError(f"the output folder {self.path.parent} is not writable; pass a writable --out "
                                 f"(to render tables from a store there: run_bench.py tables --out "
                                 f"{self.path.parent} --to NEW_FOLDER)")
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._check_schema(log, migrate=True)
            self.db.executescript(SCHEMA)
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _tables(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def _check_schema(self, log, *, migrate: bool) -> None:
        tables = self._tables()
        if "cells" not in tables:
            return  # a new store
        version = 1
        if "meta" in tables:
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 1
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer UnpairedSR-Bench (store schema {version}, this one reads up to "
                f"{SCHEMA_VERSION}); upgrade the package, or use another --out")
        if version < SCHEMA_VERSION:
            if not migrate:
                raise StoreError(
                    f"{self.path} has the old store schema {version}; open it once without read-only access "
                    f"(any run_bench.py command with --out {self.path.parent}) to migrate it")
            migrate_v1(self.db)
            if log:
                log(f"migrated {self.path} from store schema 1 to {SCHEMA_VERSION}: its records are kept under "
                    "their old names and are never reused for new cells (they carry no content keys)")

    def close(self) -> None:
        """Fold the write-ahead log into the file, so that the store is one self-contained
        file (what read-only media and ``immutable`` readers see)."""
        if not self.readonly:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with store_errors(self.path, "write"):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                if self.db.in_transaction:
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

    def add_provenance(self, run_id: str, extra: Mapping) -> None:
        """Merge ``extra`` into a run's provenance (a cluster run adds its workers' devices and versions)."""
        with self.transaction() as db:
            row = db.execute("SELECT provenance_json FROM runs WHERE run_id=?", (run_id,)).fetchone()
            prov = {**json.loads(row[0] or "{}"), **extra} if row else dict(extra)
            db.execute("UPDATE runs SET provenance_json=? WHERE run_id=?",
                       (json.dumps(prov, sort_keys=True, default=str), run_id))

    def runs(self) -> list[dict]:
        cur = self.db.execute("SELECT * FROM runs ORDER BY started")
        return [dict(zip([c[0] for c in cur.description], r)) for r in cur.fetchall()]

    # -- variants (model sources) ---------------------------------------
    def put_variant(self, variant: str, method: str, profile: str, scale: int, source: str, domain: str,
                    budget: str, sha256: str, wall_s: float | None, info: Mapping) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO variants VALUES (?,?,?,?,?,?,?,?,?,?)",
                (method, variant, profile, scale, source, domain, budget, sha256, wall_s,
                 json.dumps(info, sort_keys=True, default=str)),
            )

    def variants(self) -> dict[tuple[str, str], dict]:
        """(method, variant) -> what the model is and where it came from."""
        cur = self.db.execute("SELECT * FROM variants")
        cols = [c[0] for c in cur.description]
        out = {}
        for r in cur.fetchall():
            d = dict(zip(cols, r))
            d["info"] = json.loads(d.pop("info_json") or "{}")
            out[(d["method"], d["variant"])] = d
        return out

    # -- cells -----------------------------------------------------------
    def done_metrics(self, key: CellKey, versions: Mapping[str, str] | None = None) -> set[str]:
        """Metrics stored for a finished cell, at the given metric code versions (empty when not finished)."""
        row = self.db.execute("SELECT status, metrics FROM cells WHERE cell_id=?", (key.cell_id,)).fetchone()
        if not row or row[0] != "done":
            return set()
        stored = json.loads(row[1] or "{}")
        if isinstance(stored, list):  # migrated schema-1 cells: no versions
            stored = {m: None for m in stored}
        return {m for m, v in stored.items() if versions is None or versions.get(m) == v}

    def write_cell(self, key: CellKey, run_id: str, metrics: Mapping[str, str],
                   values: Mapping[tuple[str, str], float | None], n_images: int, wall_s: float) -> None:
        """One transaction: the per-image values of ``metrics`` (name -> code version) and the cell's status."""
        row = self.db.execute("SELECT status, metrics FROM cells WHERE cell_id=?", (key.cell_id,)).fetchone()
        prior = json.loads(row[1] or "{}") if row and row[0] == "done" else {}
        if isinstance(prior, list):
            prior = {}
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO records VALUES (?,?,?,?,?,?)",
                [
                    (key.cell_id, image, metric,
                     None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v),
                     metrics.get(metric), run_id)
                    for (image, metric), v in sorted(values.items())
                ],
            )
            self._put_cell(db, key, "done", None, n_images, wall_s, run_id, {**prior, **metrics})
            db.execute("DELETE FROM claims WHERE cell_id=?", (key.cell_id,))
            faults.reached("cell-write")  # inside the transaction: a kill here must lose the whole cell

    def _put_cell(self, db, key: CellKey, status: str, error: str | None, n_images: int, wall_s: float,
                  run_id: str, metrics: Mapping[str, str | None]) -> None:
        db.execute(
            "INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (key.cell_id, key.method, key.method_fp, key.variant, key.dataset, key.dataset_digest, key.suite,
             key.suite_fp, key.seed, key.scale, key.protocol, status, error, n_images, wall_s, run_id,
             json.dumps(dict(sorted(metrics.items()))), time.time()),
        )

    def fail_cell(self, key: CellKey, run_id: str, error: str) -> None:
        with self.transaction() as db:
            self._put_cell(db, key, "failed", error, 0, 0.0, run_id, {})
            db.execute("DELETE FROM claims WHERE cell_id=?", (key.cell_id,))

    def mark_not_fitted(self, key: CellKey, run_id: str, reason: str) -> None:
        """A per-domain method's cell that has nothing to be fitted to (no target-domain LR):
        recorded with its reason for the tables, and never counted as a failure."""
        with self.transaction() as db:
            self._put_cell(db, key, NOT_FITTED, reason, 0, 0.0, run_id, {})

    def not_fitted(self, run: str | None = None) -> list[dict]:
        """The not-fitted cells (of one run, or all), with their reason."""
        return [c for c in self.cells() if c["status"] == NOT_FITTED and (run is None or c["run_id"] == run)]

    # -- claims: one process computes a cell at a time ------------------------
    def claim(self, key: CellKey, run_id: str, need: Mapping[str, str], *, force: bool = False) -> str:
        """Try to take ``key`` for this process, in one transaction with the check that
        no other run has stored it meanwhile: ``"done"`` (the metrics ``need`` names are
        stored at these code versions), ``"busy"`` (another live process holds it), or
        ``"mine"``. ``force`` (``--recompute``) takes a stored cell all the same."""
        me = owner_id()
        with self.transaction() as db:
            if not force and set(need) <= self.done_metrics(key, need):
                return "done"
            row = db.execute("SELECT owner, since FROM claims WHERE cell_id=?", (key.cell_id,)).fetchone()
            if row and row[0] != me and claim_alive(row[0], row[1]):
                return "busy"
            db.execute("INSERT OR REPLACE INTO claims VALUES (?,?,?,?)", (key.cell_id, me, run_id, time.time()))
        return "mine"

    def release_claims(self) -> None:
        """Drop this process's claims (a run that stops leaves nothing held)."""
        with self.transaction() as db:
            db.execute("DELETE FROM claims WHERE owner=?", (owner_id(),))

    def cells(self) -> list[dict]:
        cur = self.db.execute("SELECT * FROM cells")
        return [dict(zip([c[0] for c in cur.description], r)) for r in cur.fetchall()]

    def records(self) -> list[dict]:
        """Per-image values with their cell's names, content key, run and time."""
        cur = self.db.execute(
            "SELECT c.method, c.variant, c.dataset, c.suite, c.scale, c.protocol, r.image, r.metric, r.value, "
            "r.cell_id, r.run_id, c.finished FROM records r JOIN cells c USING (cell_id)"
        )
        return [dict(zip([c[0] for c in cur.description], r)) for r in cur.fetchall()]

    # -- the side commands' own tables (fidelity, curves) -----------------
    def add_table(self, ddl: str) -> None:
        """Create a side command's table (``CREATE TABLE IF NOT EXISTS ...``) in this store."""
        with store_errors(self.path, "write"):
            self.db.executescript(ddl)

    def columns(self, table: str) -> list[str]:
        return [r[1] for r in self.db.execute(f"PRAGMA table_info({_ident(table)})")]

    def put_rows(self, table: str, rows: Sequence[Mapping]) -> None:
        """Insert or replace ``rows`` (dicts keyed by column) in one transaction."""
        if not rows:
            return
        cols = [_ident(c) for c in rows[0]]
        with self.transaction() as db:
            db.executemany(f"INSERT OR REPLACE INTO {_ident(table)} ({','.join(cols)}) VALUES "
                           f"({','.join('?' * len(cols))})", [tuple(r[c] for c in rows[0]) for r in rows])

    def rows(self, table: str, where: Mapping | None = None, order: Sequence[str] = ()) -> list[dict]:
        """The rows of ``table`` whose columns equal ``where``'s values, in ``order``."""
        where = dict(where or {})
        sql = f"SELECT * FROM {_ident(table)}"
        if where:
            sql += " WHERE " + " AND ".join(f"{_ident(k)}=?" for k in where)
        if order:
            sql += " ORDER BY " + ", ".join(_ident(c) for c in order)
        cur = self.db.execute(sql, tuple(where.values()))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

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


def migrate_v1(db: sqlite3.Connection) -> None:
    """Schema 1 (cells keyed by names) -> 2, in one transaction, every record kept.

    Old cells carry no content keys, so their ids are derived from their old names with
    a ``v1:`` mark: ``tables`` still shows them, and no new cell ever matches one.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        for t in ("cells", "records", "variants"):
            db.execute(f"ALTER TABLE {t} RENAME TO {t}_v1")
        for stmt in SCHEMA.split(";"):  # not executescript: it would commit the open transaction
            if stmt.strip():
                db.execute(stmt)
        old_id = ("'v1:' || variant || '|' || dataset || '|' || suite || '|' || scale || '|' || protocol")
        db.execute(
            "INSERT INTO cells SELECT " + old_id + ", method, '', variant, dataset, '', suite, '', NULL, scale, "
            "protocol, status, error, n_images, wall_s, run_id, metrics, NULL FROM cells_v1")
        db.execute("INSERT OR REPLACE INTO records SELECT " + old_id + ", image, metric, value, NULL, run_id "
                   "FROM records_v1")
        db.execute("INSERT OR REPLACE INTO variants SELECT method, variant, profile, scale, source, domain, budget, "
                   "sha256, wall_s, info_json FROM variants_v1")
        for t in ("cells", "records", "variants"):
            db.execute(f"DROP TABLE {t}_v1")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


@contextmanager
def store_errors(path: Path, doing: str) -> Iterator[None]:
    """SQLite's errors as one line naming the store and the fix; the file is never touched."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "full" in text:
            raise StoreError(f"the disk holding {path} is full ({text}); the cells finished so far are kept: free "
                             "space and rerun the same command to resume") from None
        if "readonly" in text or "unable to open" in text:
            raise StoreError(f"cannot {doing} the results store {path} ({text}): pass a writable --out (to render "
                             f"tables from it: run_bench.py tables --out {path.parent} --to NEW_FOLDER)") from None
        if "locked" in text:
            raise StoreError(f"the results store {path} stayed locked by another process for 60 s ({text}); "
                             "rerun when it is idle") from None
        raise StoreError(f"the results store {path} failed to {doing} ({text})") from None
    except sqlite3.DatabaseError as exc:
        raise StoreError(
            f"{path} is not a readable results store ({exc}); it was left unchanged: use a new --out, or copy "
            f"its readable records with run_bench.py repair --out {path.parent} --to NEW_FOLDER") from None


def repair(src: Path, dest: Path, log=print) -> dict[str, int]:
    """Copy every readable row of a damaged store into a new one at ``dest`` (the source is only read)."""
    if dest.exists():
        raise StoreError(f"{dest} exists already; name a new file or folder for the repaired store")
    try:
        old = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        old.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{src} cannot be read at all ({exc}); nothing can be recovered from it") from None
    new = Store(dest)
    counts: dict[str, int] = {}
    for table in ("runs", "variants", "cells", "records", "metric_notes", "timings", "kernels"):
        n = 0
        try:
            cur = old.execute(f"SELECT * FROM {table}")
            while True:
                try:
                    row = cur.fetchone()
                except sqlite3.DatabaseError:
                    break  # the rest of this table is unreadable
                if row is None:
                    break
                try:
                    new.db.execute(f"INSERT OR IGNORE INTO {table} VALUES ({','.join('?' * len(row))})", row)
                    n += 1
                except sqlite3.Error:
                    continue
        except sqlite3.DatabaseError as exc:
            log(f"  {table}: unreadable ({exc})")
        counts[table] = n
    new.close()
    old.close()
    return counts


def writable(folder: Path) -> bool:
    """Whether files can be made in ``folder`` (tried, not guessed: root passes every
    permission check, but not a read-only mount)."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_alive(owner: str, since: float) -> bool:
    """A claim holds while its process lives (same host) or, elsewhere, until it is stale."""
    host, _, pid = owner.rpartition(":")
    if host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except (ProcessLookupError, ValueError):
            return False
        except PermissionError:
            return True
        return True
    return time.time() - since < CLAIM_STALE_S


def matches(key: CellKey, patterns) -> bool:
    """``--recompute`` patterns (shell-style) against ``method/dataset/suite/xSCALE``."""
    name = f"{key.method}/{key.dataset}/{key.suite}/x{key.scale}"
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _ident(name: str) -> str:
    """A table or column name, refused unless it is a plain identifier (they go into SQL text)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"not a table or column name: {name!r}")
    return name
