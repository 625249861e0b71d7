"""Training schedules the methods share: how a Budget's iterations split over
consecutive stages (the stages themselves run in ``bench.train.run_stages``),
learning-rate rules, and the DASR-style two-stage epoch recipe.

Each stage gets its share of the iterations, so every stage runs however short the budget.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn


def split_iterations(total: int, shares: Sequence[float]) -> list[int]:
    """Split ``total`` over stages in proportion to ``shares`` (one per stage, summing to 1).

    Every stage gets at least one iteration whenever ``total`` is at least the number of
    stages (the last takes what the others leave); below that the last stage gets them all.
    """
    n = len(shares)
    if total < n:
        return [0] * (n - 1) + [total]
    counts: list[int] = []
    for k, share in enumerate(shares[:-1]):
        room = total - sum(counts) - (n - 1 - k)  # keep one for each later stage
        counts.append(min(room, max(1, round(total * share))))
    counts.append(total - sum(counts))
    return counts


def descend(opt: torch.optim.Optimizer, loss: torch.Tensor, module: nn.Module) -> None:
    """One optimiser step of ``module`` on ``loss``, with gradient into its (trainable)
    parameters only: a GAN's generator loss also reaches the discriminator, whose own
    optimiser must not see that gradient."""
    opt.zero_grad()
    loss.backward(inputs=[p for p in module.parameters() if p.requires_grad])
    opt.step()


def linear_decay(total: int, decay_fraction: float) -> Callable[[int], float]:
    """LR factor: 1 until the last ``decay_fraction`` of the steps, then linear to 0
    (the DSGAN/DSN schedule: 300 epochs, decayed over the last 150)."""
    start = int(total * (1 - decay_fraction))
    span = max(1, total - start)
    return lambda i: 1.0 if i < start else max(0.0, 1.0 - (i - start) / span)


def multistep(milestones: Sequence[int], gamma: float) -> Callable[[int], float]:
    return lambda i: gamma ** sum(i >= m for m in milestones)


def scaled_milestones(paper_steps: Sequence[int], paper_total: int, total: int) -> list[int]:
    """The official MultiStepLR milestones mapped onto a shorter run, in proportion."""
    return [max(1, round(s * total / paper_total)) for s in paper_steps]


@dataclass(frozen=True)
class Recipe:
    """DASR-Wang's schedule in epochs of the official run (1000 iterations each): an
    encoder stage, then a joint stage, with step decays in each. A budget of any length
    is mapped onto it proportionally so both stages and every decay happen."""

    epochs_encoder: int = 100
    epochs_sr: int = 500
    lr_encoder: float = 1e-3
    lr_decay_encoder: int = 60
    gamma_encoder: float = 0.1
    lr_decay_sr: int = 125
    gamma_sr: float = 0.5

    def epoch(self, i: int, iterations: int) -> int:
        return 1 + (i * (self.epochs_encoder + self.epochs_sr)) // max(1, iterations)

    def stage(self, i: int, iterations: int) -> str:
        return "encoder" if self.epoch(i, iterations) <= self.epochs_encoder else "joint"

    def lr(self, i: int, iterations: int, lr_sr: float) -> float:
        e = self.epoch(i, iterations)
        if e <= self.epochs_encoder:
            return self.lr_encoder * self.gamma_encoder ** (e // self.lr_decay_encoder)
        return lr_sr * self.gamma_sr ** ((e - self.epochs_encoder) // self.lr_decay_sr)
