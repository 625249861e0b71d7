"""Consecutive training stages sharing one Budget (e.g. degradation model, then SR network).

Each stage gets its share of the iterations and of the wall-clock cap, so a capped fit
still runs every stage instead of spending the whole cap on the first one.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bench.adapter import Budget, FitReport
from bench.train import run_training


@dataclass(frozen=True)
class Stage:
    name: str
    step: Callable[[int], Mapping[str, float]]  # called with the iteration index within the stage
    iterations: int


def split_iterations(total: int, first_share: float) -> tuple[int, int]:
    """(first, second) with both >= 1 whenever total >= 2."""
    if total < 2:
        return 0, total
    first = min(total - 1, max(1, round(total * first_share)))
    return first, total - first


def run_stages(stages: Sequence[Stage], budget: Budget, *, desc: str, report: FitReport | None = None) -> FitReport:
    """Run the stages in order; history rows carry the global iteration index."""
    report = report or FitReport()
    total = sum(s.iterations for s in stages) or 1
    done = 0
    for stage in stages:
        if stage.iterations <= 0:
            continue
        start_row = len(report.history)
        run_training(stage.step, dataclasses.replace(budget, iterations=stage.iterations),
                     desc=f"{desc} [{stage.name}]", report=report)
        for row in report.history[start_row:]:
            row["iteration"] += done
        done += report.iterations
        report.iterations = done
    return report
