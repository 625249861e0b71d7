"""Fault injection for the crash-safety tests.

``UNPAIRED_SR_BENCH_KILL_AT=EVENT:N`` makes the process SIGKILL itself at the N-th
occurrence of EVENT (``fit-step``, ``lr-write``, ``cell-start``, ``cell-write``): the test
kills a run at exact, seeded moments (mid-fit, mid-write) rather than after a wall-clock
guess. ``UNPAIRED_SR_BENCH_HOLD_AT=EVENT:N:FILE`` instead holds the process there (it
writes ``FILE.held``, then waits until FILE exists), so a test can run a second process
against a first one that is mid-work. ``UNPAIRED_SR_BENCH_WORKER_KILL_AT=EVENT:FILE`` is
for Dask cluster workers only (the driver and the local path ignore it): while FILE holds a
count N, the N-th occurrence of EVENT across all the workers that share FILE SIGKILLs the
worker it happens in, and the count is removed, so exactly one worker dies; further counts
(one a line) arm the kills after it. A test arms it by writing the counts, so one cluster
serves several runs. Unset, ``reached`` costs three
dictionary lookups.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from collections import Counter

_ENV = "UNPAIRED_SR_BENCH_KILL_AT"
_HOLD = "UNPAIRED_SR_BENCH_HOLD_AT"
_WORKER = "UNPAIRED_SR_BENCH_WORKER_KILL_AT"
_counts: Counter[str] = Counter()


def reached(event: str) -> None:
    hold = os.environ.get(_HOLD)
    if hold:
        _hold(event, hold)
    worker = os.environ.get(_WORKER)
    if worker:
        _worker_kill(event, worker)
    spec = os.environ.get(_ENV)
    if not spec:
        return
    want, _, n = spec.partition(":")
    if want != event:
        return
    _counts[event] += 1
    if _counts[event] >= int(n or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _hold(event: str, spec: str) -> None:
    want, n, release = spec.split(":", 2)
    if want != event:
        return
    key = "hold:" + event
    _counts[key] += 1
    if _counts[key] == int(n):
        Path(release + ".held").write_text(str(os.getpid()))
        while not Path(release).exists():
            time.sleep(0.05)


def _worker_kill(event: str, spec: str) -> None:
    want, _, armed = spec.partition(":")
    if want != event or not _in_dask_worker():
        return
    import fcntl

    try:
        fh = open(armed, "r+")
    except FileNotFoundError:
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # one count across every worker process that shares the file
        counts = fh.read().split()
        if not counts:
            return  # disarmed
        n = int(counts[0]) - 1
        counts = ([str(n)] if n > 0 else []) + counts[1:]
        fh.seek(0)
        fh.truncate()
        fh.write("\n".join(counts))
        fh.flush()
        os.fsync(fh.fileno())
        if n <= 0:
            os.kill(os.getpid(), signal.SIGKILL)


def _in_dask_worker() -> bool:
    """True inside a task on a ``dask.distributed`` worker (distributed is never imported for this)."""
    mod = sys.modules.get("distributed")
    if mod is None:
        return False
    try:
        mod.get_worker()
    except ValueError:
        return False
    return True
