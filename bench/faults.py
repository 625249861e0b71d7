"""Fault injection for the crash-safety tests.

``UNPAIRED_SR_BENCH_KILL_AT=EVENT:N`` makes the process SIGKILL itself at the N-th
occurrence of EVENT (``fit-step``, ``lr-write``, ``cell-start``, ``cell-write``): the test
kills a run at exact, seeded moments (mid-fit, mid-write) rather than after a wall-clock
guess. ``UNPAIRED_SR_BENCH_HOLD_AT=EVENT:N:FILE`` instead holds the process there (it
writes ``FILE.held``, then waits until FILE exists), so a test can run a second process
against a first one that is mid-work. Unset, ``reached`` costs two dictionary lookups.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from collections import Counter

_ENV = "UNPAIRED_SR_BENCH_KILL_AT"
_HOLD = "UNPAIRED_SR_BENCH_HOLD_AT"
_counts: Counter[str] = Counter()


def reached(event: str) -> None:
    hold = os.environ.get(_HOLD)
    if hold:
        _hold(event, hold)
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
