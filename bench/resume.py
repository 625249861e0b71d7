"""Training state a fit declares, and its files: what makes a fit resumable.

A method's ``fit`` builds its networks, optimisers, schedulers, samplers and random
generators, registers them in a :class:`TrainState`, and hands that to the loop
(:func:`bench.train.run_stages`). The loop saves the whole state (every registered
object, the RNG streams of every rank, the loss history, where it is) through
:class:`StateFiles`, and on a rerun loads the newest one before its first step, so a
killed fit continues where its last save left it, bit for bit on the CPU.

Files are ``state-<step>.pt`` in a folder of their own (``<cache>/resume/<fit key>``),
written to a temporary name and renamed (a kill mid-write leaves the previous file),
the newest two kept, read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from .adapter import BenchError

STATE_VERSION = 1
KEEP = 2  # newest state files kept: the last one may be from a kill that followed a full disk


class TrainState:
    """The objects a fit registers with the loop, by name.

    Anything with ``state_dict``/``load_state_dict`` (modules, optimisers, schedulers,
    :class:`~bench.train.PatchSampler`) or a ``torch.Generator``. Whatever a training step
    changes must be registered (or be a pure function of the iteration index), or a resumed
    fit drifts from an uninterrupted one; the resume tests check the built-in methods.
    """

    def __init__(self, **objects: Any):
        self.objects: dict[str, Any] = {}
        self.register(**objects)

    def register(self, **objects: Any) -> "TrainState":
        for name, obj in objects.items():
            if name in self.objects:
                raise ValueError(f"training state {name!r} is registered twice")
            if not isinstance(obj, torch.Generator) and not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise TypeError(f"training state {name!r}: a {type(obj).__name__} has no state_dict/load_state_dict")
            self.objects[name] = obj
        return self

    def modules(self) -> list[nn.Module]:
        return [o for o in self.objects.values() if isinstance(o, nn.Module)]

    def state_dict(self) -> dict[str, Any]:
        return {name: (o.get_state() if isinstance(o, torch.Generator) else o.state_dict())
                for name, o in self.objects.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if set(state) != set(self.objects):
            raise BenchError(f"saved training state holds {sorted(state)}, but this fit registers "
                             f"{sorted(self.objects)}: it is from other code; delete the resume folder to start over")
        for name, o in self.objects.items():
            if isinstance(o, torch.Generator):
                o.set_state(state[name])
            else:
                o.load_state_dict(state[name])


def rng_state() -> dict[str, Any]:
    """The process-wide random streams (torch CPU and CUDA, NumPy's legacy global, Python's)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out = {"torch": torch.get_rng_state(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                      cached), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StateFiles:
    """The resume folder of one fit: atomic writes, the newest :data:`KEEP` kept."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("state-*.pt"))

    def save(self, step: int, state: Mapping[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"state-{step:010d}.pt"
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        try:
            torch.save({"version": STATE_VERSION, **state}, tmp)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise BenchError(f"cannot write training state {path}: {exc.strerror or exc}; free space there (the "
                             f"previous state is kept) and rerun to resume") from None
        for old in self.files()[:-KEEP]:
            old.unlink(missing_ok=True)
        return path

    def latest(self, log=print) -> dict[str, Any] | None:
        """The newest state that loads (an unreadable newest file falls back to the one before)."""
        for tmp in self.folder.glob("state-*.pt.tmp*"):
            tmp.unlink(missing_ok=True)  # a write that a kill interrupted
        for path in reversed(self.files()):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - a damaged file: try the previous one
                log(f"warning: training state {path} does not load ({type(exc).__name__}); trying the previous one")
                continue
            if state.get("version") != STATE_VERSION:
                raise BenchError(f"training state {path} is of format {state.get('version')}, this code reads "
                                 f"{STATE_VERSION}; delete {self.folder} to start the fit over")
            return state
        return None

    def clear(self) -> None:
        for path in self.files():
            path.unlink(missing_ok=True)
