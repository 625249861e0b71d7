"""The benchmark grid on a Dask cluster (DESIGN section 8), as ``dask.distributed`` futures.

The plan is the local runner's (``Runner.run`` plans, claims and skips stored cells); only
``_compute`` differs. Its cells become a graph of independent, picklable tasks:

* ``lr-*``   LR synthesis per (dataset, suite, scale), written to the shared ``--cache``;
* ``fit-*``  one fit per fingerprint (its training pools are drawn inside it), to the cache;
* ``cell-*`` one per cell, after its LR and its fit, placed where the fit ran when that
  worker is free (``workers=[...]``, ``allow_other_workers=True``).

Task keys are the content keys (cell id, fit key, LR digest): resubmitting a plan to a
scheduler that still holds a result reuses it. Tasks are module-level functions of the
RunSpec and plain values; each worker builds its own storeless ``Runner`` once (kept on the
worker) whose store only *records* what it would write, so the cell code is the local
path's own. The tasks return those records with the worker's device and package versions,
and the driver alone writes the SQLite store, one transaction per finished cell, as locally:
a crash loses at most the cells in flight.

A worker that dies mid-task has the task rerun elsewhere by the scheduler (its
``allowed-failures``, bounded); each try is noted in ``cache/attempts/<run>/<key>``, so a
rerun shows in the log, and a cell whose every try died is stored as failed with the reason.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .adapter import BenchError, resolve_variant
from .runner import GIVEN, LR_CACHE_VERSION, Cell, Runner, RunSpec, provenance
from .store import CellKey, StoreError, matches

#: tries per task before it is given up (the scheduler's ``allowed-failures`` for ``local:N``)
ALLOWED_FAILURES = 2
INSTALL = 'pip install "unpaired-sr-bench[dist]"'
#: how often the progress line is logged when the bar is off
PROGRESS_EVERY_S = 10.0
_STATE = "unpaired_sr_bench_runners"  # attribute on the dask Worker holding its runners


@dataclass(frozen=True)
class ClusterSpec:
    """Where the tasks run and what every task is given besides the RunSpec."""

    address: str  # "local:N" or a running scheduler's address
    cache: str  # LR and fit caches on storage every worker sees
    threads: int  # torch intra-op threads in every task (the nanny sets OMP_NUM_THREADS=1)
    allowed_failures: int = ALLOWED_FAILURES


def require_distributed():
    try:
        import distributed
    except ImportError:
        raise BenchError(f"--cluster needs dask.distributed, which is not installed: {INSTALL}") from None
    return distributed


def parse_cluster(text: str) -> str:
    if text.startswith("local:"):
        n = text.partition(":")[2]
        if not n.isdigit() or int(n) < 1:
            raise BenchError(f"--cluster {text}: local:N takes a number of worker processes, e.g. local:4")
    return text


def connect(cluster: ClusterSpec, log=print):
    """A Client on ``cluster`` and what closes it (and the LocalCluster we started)."""
    distributed = require_distributed()
    import dask

    if cluster.address.startswith("local:"):
        n = int(cluster.address.partition(":")[2])
        # one task per worker process: torch's own threads are the parallelism inside a task
        with dask.config.set({"distributed.scheduler.allowed-failures": cluster.allowed_failures}):
            lc = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                          dashboard_address=None)
        client = distributed.Client(lc)
        log(f"started a local Dask cluster of {n} worker processes")

        def close():
            client.close()
            lc.close()
        return client, close
    try:
        client = distributed.Client(cluster.address, timeout=30)
    except (OSError, TimeoutError) as exc:
        raise BenchError(f"--cluster {cluster.address}: no Dask scheduler answers there ({exc}); start one with "
                         "`dask-scheduler` and pass the address it prints (tcp://HOST:8786)") from None
    n = len(client.scheduler_info().get("workers", {}))
    log(f"connected to the Dask scheduler {cluster.address} ({n} workers)")
    return client, client.close


# -- the worker side -------------------------------------------------------------
class RecordingStore:
    """What a worker's Runner would write to the store, kept as calls for the driver."""

    def __init__(self, timed: frozenset = frozenset()):
        self.calls: list[tuple[str, tuple]] = []
        self.timed = timed

    def put_variant(self, *args) -> None:
        self.calls.append(("put_variant", args))

    def write_cell(self, *args) -> None:
        self.calls.append(("write_cell", args))

    def fail_cell(self, *args) -> None:
        self.calls.append(("fail_cell", args))

    def put_timing(self, *args) -> None:
        self.calls.append(("put_timing", args))

    def has_timing(self, *key) -> bool:
        return tuple(key) in self.timed


class WorkerState:
    """One worker's runner for one run spec: datasets, metrics, pools and models built once."""

    def __init__(self, spec: RunSpec, cache: str):
        from .data import resolve_datasets
        from .metrics import create_metric

        self.lock = threading.Lock()  # one task at a time shares this runner
        self.lines: list[str] = []
        self.runner = Runner(spec, log=self.lines.append, store=RecordingStore(), cache=cache)
        datasets = resolve_datasets(spec.datasets, spec.data_root, spec.scales)
        self.by_name = {ds.name: ds for ds in datasets}
        self.runner.prepare(datasets)
        self.metrics = {(m, s): create_metric(m, protocol=spec.protocol, scale=s, weights_dir=spec.weights_dir,
                                              device=self.runner.device) for m in spec.metrics for s in spec.scales}
        prov = provenance(spec, self.runner.device)
        self.env = {k: prov[k] for k in ("bench_version", "git_commit", "python", "versions", "device",
                                         "device_name")}
        self.env["host"] = socket.gethostname()


def _state(spec: RunSpec, cache: str) -> WorkerState:
    from distributed import get_worker

    worker = get_worker()
    states = getattr(worker, _STATE, None)
    if states is None:
        states = {}
        setattr(worker, _STATE, states)
    k = (spec, cache)
    if k not in states:
        states.clear()  # a worker serves one run spec at a time; drop the previous one's models
        states[k] = WorkerState(spec, cache)
    return states[k]


@contextlib.contextmanager
def _task(spec: RunSpec, cluster: ClusterSpec, run_id: str, key: str, timed: frozenset = frozenset()):
    from distributed import get_worker

    state = _state(spec, cluster.cache)
    with state.lock:
        torch.set_num_threads(cluster.threads)  # as on the driver: CPU numbers do not depend on where
        tries = _note_try(Path(cluster.cache), run_id, key, get_worker().address)
        state.runner.store = RecordingStore(timed)
        state.lines.clear()
        record: dict[str, Any] = {}
        yield state, record
        record.update(worker=get_worker().address, tries=tries, env=state.env, log=list(state.lines),
                      calls=state.runner.store.calls, threads=torch.get_num_threads())


def _note_try(cache: Path, run_id: str, key: str, worker: str) -> list[str]:
    """Append this worker to the task's tries (one short O_APPEND write: atomic on POSIX)."""
    path = cache / "attempts" / run_id / key
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(worker + "\n")
    return path.read_text().split()


def lr_task(spec: RunSpec, cluster: ClusterSpec, run_id: str, key: str, dataset: str, suite: str,
            scale: int) -> dict:
    with _task(spec, cluster, run_id, key) as (state, record):
        ds = state.by_name[dataset]
        items = ds.items_at(scale)
        for item in items:
            state.runner.lr_for(ds, item, suite, scale)
        record["n_images"] = len(items)
    return record


def fit_task(spec: RunSpec, cluster: ClusterSpec, run_id: str, key: str, name: str, scale: int,
             domain: str, fit_seed: int = 0) -> dict:
    with _task(spec, cluster, run_id, key) as (state, record):
        try:
            state.runner.model_for(name, scale, domain, state.runner.test_ids, fit_seed)
        except StoreError:
            raise
        except BenchError as exc:
            record["error"] = str(exc)
        except Exception as exc:  # a broken method fails its cells; the run goes on
            record["error"] = traceback.format_exception_only(type(exc), exc)[-1].strip()[:300]
    return record


def cell_task(spec: RunSpec, cluster: ClusterSpec, run_id: str, key: str, cell: Cell, ckey: CellKey,
              missing: list[str], *after) -> dict:
    """``after``: the LR and fit results this cell waits for (their files are in the cache)."""
    with _task(spec, cluster, run_id, key) as (state, record):
        state.runner._run_cell(cell, ckey, missing, state.by_name[cell.dataset], state.metrics)
    return record


def timing_task(spec: RunSpec, cluster: ClusterSpec, run_id: str, key: str, name: str, scale: int, domain: str,
                timed: frozenset) -> dict:
    from .timing import time_model

    with _task(spec, cluster, run_id, key, timed) as (state, record):
        r = state.runner
        model = r.model_for(name, scale, domain, r.test_ids)
        time_model(r.store, model.method, model.variant, r.device, run_id, full=False)
    return record


def noop_task(x):
    """For benchmarks/grid_dask.py: the scheduler's round trip with no work."""
    return x


# -- the driver side -------------------------------------------------------------
def task_key(kind: str, *parts) -> str:
    return f"{kind}-" + hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


class ClusterRunner(Runner):
    """The local Runner's plan, computed on a Dask cluster; the store stays with this process."""

    def __init__(self, spec: RunSpec, cluster: ClusterSpec, *, log=print):
        require_distributed()
        local_spec = spec
        if spec.device == "cuda" and not torch.cuda.is_available():
            # the GPUs are the workers'; this process only plans, writes the store and scores nothing
            local_spec = dataclasses.replace(spec, device="auto")
        super().__init__(local_spec, log=log, cache=cluster.cache)
        self.spec = spec
        self.cluster = cluster
        # workers score one cell each: the cluster is the parallelism, not joblib inside a task
        self.worker_spec = dataclasses.replace(spec, jobs=1)
        self.worker_envs: dict[str, dict] = {}
        self.retried: list[str] = []
        self._variant_cells: dict[str, tuple[str, int, str]] = {}

    def _compute(self, todo: list, by_name: dict, metrics: dict) -> None:
        if not todo:
            self.log("computed 0 cell(s)")
            return
        client, close = connect(self.cluster, self.log)
        try:
            busy = self._compute_on(client, todo, by_name, metrics)
            if self.spec.timing:
                self._time_on(client)
        finally:
            close()
        if busy:  # cells another run on this --out holds: wait for them as the local path does
            super()._compute(busy, by_name, metrics)
        self._note_workers()

    def _gpu(self, client) -> bool:
        """Learned methods' fits and cells ask for a GPU when the run wants one and workers offer it."""
        if self.spec.device == "cpu":
            return False
        offered = any(w.get("resources", {}).get("GPU") for w in client.scheduler_info()["workers"].values())
        if self.spec.device == "cuda" and not offered:
            raise BenchError("--device cuda under --cluster: no worker offers a GPU; start the GPU workers with "
                             "`dask-worker ADDRESS --nthreads 1 --resources GPU=1`, or use --device cpu")
        return offered

    def _compute_on(self, client, todo: list, by_name: dict, metrics: dict) -> list:
        from distributed import as_completed

        spec, cl, run_id = self.worker_spec, self.cluster, self.run_id
        gpu = {"resources": {"GPU": 1}} if self._gpu(client) else {}
        lr: dict[tuple, Any] = {}
        fits: dict[str, Any] = {}  # fit key -> future
        waiting: dict[str, list] = {}  # fit key -> cells waiting for it
        what: dict[str, tuple] = {}  # future key -> (kind, payload)
        picked, busy, first = 0, [], []
        for c, key, missing in todo:
            need = {m: metrics[(m, c.scale)].spec.version for m in missing}
            forced = bool(self.spec.recompute) and matches(key, self.spec.recompute)
            got = self.store.claim(key, self.run_id, need, force=forced)
            if got == "done":
                picked += 1
                continue
            if got == "busy":
                busy.append((c, key, missing))
                continue
            deps = []
            if c.suite != GIVEN:
                lk = (c.dataset, c.suite, c.scale)
                if lk not in lr:
                    # the cache path holds the dataset's name: two names of one content are two tasks
                    k = task_key("lr", LR_CACHE_VERSION, c.dataset, key.dataset_digest, key.suite_fp, c.scale,
                                 self.spec.seed)
                    lr[lk] = client.submit(lr_task, spec, cl, run_id, k, *lk, key=k, pure=False)
                    what[k] = ("lr", lk)
                    first.append(lr[lk])
                deps.append(lr[lk])
            _, meta = self.variant_for(c.method, c.scale, c.domain, self.test_ids, c.fit_seed)
            learned = resolve_variant(c.method)[0].info.learned
            res = gpu if learned else {}
            if meta["source"] == "fit":
                fk = meta["fit_key"]
                if fk not in fits:
                    k = task_key("fit", fk)
                    fits[fk] = client.submit(fit_task, spec, cl, run_id, k, c.method, c.scale, c.domain,
                                             c.fit_seed, key=k, pure=False, **gpu)
                    what[k] = ("fit", fk)
                    first.append(fits[fk])
                    waiting[fk] = []
                waiting[fk].append((c, key, missing, deps, res))
                continue
            first.append(self._submit_cell(client, c, key, missing, deps, res, what))
        self.log(f"submitted {len(lr)} LR, {len(fits)} fit and {sum(len(w) for w in waiting.values())}"
                 f"+{sum(1 for f in first if what[f.key][0] == 'cell')} cell task(s)")

        n_cells = len(todo) - picked - len(busy)
        bar = tqdm(total=n_cells, desc="cells", dynamic_ncols=True,
                   disable=os.environ.get("UNPAIRED_SR_BENCH_NO_PROGRESS") == "1")
        failed = finished = 0
        last = last_log = time.monotonic()
        ac = as_completed(first)
        for fut in ac:
            kind, payload = what.pop(fut.key)
            record, reason = self._collect(fut, kind, payload)
            if kind == "lr":
                continue  # its cells hold it as a dependency and fail with its reason
            if kind == "fit":
                fk = payload
                cells = waiting.pop(fk)
                if reason is None and record.get("error"):
                    reason = record["error"]
                for c, key, missing, deps, res in cells:
                    if reason is not None:
                        self._fail(key, reason)
                        failed += 1
                        finished += 1
                        bar.update()
                        continue
                    # where the fit ran has its model loaded; go there if it is free
                    ac.add(self._submit_cell(client, c, key, missing, deps + [fut], res, what,
                                             workers=[record["worker"]]))
                fut.release()
                continue
            c, key = payload
            if reason is not None:
                self._fail(key, reason)
            failed += int(reason is not None or any(call == "fail_cell" for call, _ in record.get("calls", ())))
            finished += 1
            bar.update()
            fut.release()
            if time.monotonic() - last > 1.0 or finished == n_cells:
                running = self._running(client, what)
                bar.set_postfix_str(f"running {running}, failed {failed}, retried {len(self.retried)}")
                if bar.disable and time.monotonic() - last_log > PROGRESS_EVERY_S:
                    self.log(f"cells: {finished}/{n_cells} finished ({failed} failed), {running} running, "
                             f"{len(self.retried)} task(s) retried")
                    last_log = time.monotonic()
                last = time.monotonic()
        bar.close()
        self.log(f"computed {finished} cell(s) on the cluster ({failed} failed"
                 + (f", {len(self.retried)} task(s) rerun after a worker died" if self.retried else "") + ")"
                 + (f", {picked} picked up from another run" if picked else ""))
        return busy

    def _submit_cell(self, client, c: Cell, key: CellKey, missing: list, deps: list, res: dict, what: dict,
                     workers=None):
        k = f"cell-{key.cell_id}"
        what[k] = ("cell", (c, key))
        place = {"workers": workers, "allow_other_workers": True} if workers else {}
        return client.submit(cell_task, self.worker_spec, self.cluster, self.run_id, k, c, key, missing, *deps,
                             key=k, pure=False, **res, **place)

    def _running(self, client, what: dict) -> int:
        try:
            processing = client.processing()
        except Exception:
            return 0
        return sum(1 for keys in processing.values() for k in keys if str(k).startswith("cell-") and k in what)

    def _collect(self, fut, kind: str, payload) -> tuple[dict, str | None]:
        """The task's record replayed into the store, or why it failed."""
        from distributed import KilledWorker

        try:
            record = fut.result()
        except KilledWorker:
            tries = self._tries(fut.key)
            self.log(f"{kind} task {fut.key}: every try died with its worker ({', '.join(tries) or 'unknown'})")
            return {}, (f"its {kind} task {fut.key[:16]} killed its worker on each of {len(tries) or 'its'} tries "
                        "(Dask's allowed-failures exhausted; see the workers' logs, then rerun the same command)")
        except StoreError:
            raise
        except Exception as exc:
            return {}, traceback.format_exception_only(type(exc), exc)[-1].strip()[:300]
        tries = record["tries"]
        if len(tries) > 1:
            self.retried.append(fut.key)
            self.log(f"retried {kind} task {fut.key}: worker(s) {', '.join(tries[:-1])} died while computing it; "
                     f"rerun on {tries[-1]}")
        self.worker_envs.setdefault(record["worker"], {**record["env"], "threads": record["threads"]})
        for line in record["log"]:
            if not line.startswith("FAILED "):  # the driver logs failures as it stores them
                self.log(line)
        for call, args in record["calls"]:
            if call == "put_variant":
                self.store.put_variant(*args)
            elif call == "write_cell":
                key, _, versions, values, n, wall = args
                self.store.write_cell(key, self.run_id, versions, values, n, wall)
            elif call == "fail_cell":
                key, _, error = args
                self._fail(key, error)
            elif call == "put_timing":
                row, *rest = args
                self.store.put_timing({**row, "run_id": self.run_id}, *rest)
        return record, None

    def _tries(self, key: str) -> list[str]:
        path = Path(self.cluster.cache) / "attempts" / self.run_id / key
        return path.read_text().split() if path.exists() else []

    def _time_on(self, client) -> None:
        """The runtime rows of every model this run planned, measured on a worker."""
        from distributed import wait

        timed = frozenset(tuple(r[k] for k in ("method", "variant", "device", "input", "precision"))
                          for r in self.store.timings())
        gpu = {"resources": {"GPU": 1}} if self._gpu(client) else {}
        planned = {(k.method, k.variant) for k in self.planned}
        seen = set()
        for (name, scale, domain, fit_seed), (variant, _) in list(self._variants.items()):
            if (name, variant) not in planned or (name, variant) in seen or fit_seed:
                continue
            seen.add((name, variant))
            k = task_key("timing", name, variant, self.run_id)
            learned = resolve_variant(name)[0].info.learned
            # one at a time: a latency measured beside other tasks on the same cores measures them too
            f = client.submit(timing_task, self.worker_spec, self.cluster, self.run_id, k, name, scale, domain,
                              timed, key=k, pure=False, **(gpu if learned else {}))
            wait([f])
            _, reason = self._collect(f, "timing", None)
            if reason:
                self.log(f"timing {name} failed: {reason}")

    def _time_models(self, names, datasets) -> None:
        pass  # measured on the workers in _compute (this process holds no models)

    def _note_workers(self) -> None:
        """The workers' devices and versions go with the run; a version unlike the driver's is said."""
        mine = provenance(self.spec, self.device)["versions"]
        for addr, env in sorted(self.worker_envs.items()):
            differ = {p: v for p, v in env["versions"].items() if v != mine.get(p)}
            if differ:
                self.log(f"worker {addr} runs other package versions than this process: "
                         + ", ".join(f"{p} {v} (here {mine.get(p)})" for p, v in differ.items()))
        if self.worker_envs:
            self.store.add_provenance(self.run_id, {"cluster": self.cluster.address, "workers": self.worker_envs})


def cluster_spec(address: str, cache: str | None, out: str, threads: int | None) -> ClusterSpec:
    """``--cluster``/``--cache``/``--threads`` as one spec; the cache defaults under --out for local:N."""
    address = parse_cluster(address)
    if cache is None:
        if not address.startswith("local:"):
            raise BenchError(f"--cluster {address}: pass --cache DIR on storage every worker sees (fits and LR "
                             "images are written there)")
        cache = str(Path(out) / "cache")
    return ClusterSpec(address=address, cache=str(Path(cache).resolve()),
                       threads=threads or torch.get_num_threads())
