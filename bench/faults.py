"""Fault injection for the crash-safety tests.

``UNPAIRED_SR_BENCH_KILL_AT=EVENT:N`` makes the process SIGKILL itself at the N-th
occurrence of EVENT (``fit-step``, ``lr-write``, ``cell-write``): the test kills a run
at exact, seeded moments (mid-fit, mid-write) rather than after a wall-clock guess.
Unset, ``reached`` costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal
from collections import Counter

_ENV = "UNPAIRED_SR_BENCH_KILL_AT"
_counts: Counter[str] = Counter()


def reached(event: str) -> None:
    spec = os.environ.get(_ENV)
    if not spec:
        return
    want, _, n = spec.partition(":")
    if want != event:
        return
    _counts[event] += 1
    if _counts[event] >= int(n or 1):
        os.kill(os.getpid(), signal.SIGKILL)
