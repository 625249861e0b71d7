"""The adapter conformance check: what every method must satisfy to be benchmarked.

Runnable as ``python run_bench.py check-adapter module:Class`` (or a registered name)
and from pytest (``tests/test_conformance.py`` runs it for every registered method).
Each check returns a one-line failure reason or ``None``; nothing here trains beyond
the method's ``smoke`` budget.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .adapter import REGISTRY, Budget, DegradationModel, FitReport, Method, TrainingData, load_adapter

#: A batch of two must equal two single calls to this absolute tolerance on [0,1]
#: (float reordering in batched convolutions stays far below it; per-image state
#: leaking across the batch does not).
BATCH_TOL = 1e-4
#: The same input twice must give the same output to this tolerance.
REPEAT_TOL = 1e-6


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str = ""
    seconds: float = 0.0


def _rng_images(n: int, h: int, w: int, seed: int) -> tuple[np.ndarray, ...]:
    """Smooth random images (low-pass noise) so SR networks see image-like input."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.random((h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
        t = torch.from_numpy(base).permute(2, 0, 1)[None]
        up = torch.nn.functional.interpolate(t, size=(h, w), mode="bicubic", align_corners=False)[0]
        out.append(up.permute(1, 2, 0).clamp(0, 1).numpy().copy())
    return tuple(out)


def smoke_training_data(cls: type[Method], scale: int, seed: int = 0) -> TrainingData:
    """Tiny synthetic training data of the right kind for ``cls`` (never a test image)."""
    hr = _rng_images(4, 64, 64, seed)
    source_ids = tuple(f"conformance-source-{i}" for i in range(len(hr)))
    target_lr: tuple[np.ndarray, ...] = ()
    target_ids: tuple[str, ...] = ()
    degradation = None
    if cls.info.fit_per == "domain":
        from .degrade import get_suite, synthesize

        suite = get_suite("noise:sigma=5")
        tgt_hr = _rng_images(4, 64, 64, seed + 1)
        target_ids = tuple(f"conformance-target-{i}" for i in range(len(tgt_hr)))
        target_lr = tuple(
            synthesize(suite, im, scale, tid, seed)[0].astype(np.float32) / 255.0
            for im, tid in zip(tgt_hr, target_ids)
        )
        if cls.info.upper_bound:
            degradation = suite
    if not cls.info.needs_target_lr:
        target_lr, target_ids = (), ()
    return TrainingData(scale=scale, source_hr=hr, target_lr=target_lr, degradation=degradation,
                        domain="noise:sigma=5" if degradation or target_lr else "", source_ids=source_ids,
                        target_ids=target_ids, seed=seed)


def check_adapter(target: str | type[Method], scale: int = 4, profile: str = "smoke",
                  device: str = "cpu", test_ids: tuple[str, ...] = ("conformance-test-0",),
                  progress: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
    """Run every conformance check on ``target`` (a registered name, ``module:Class``, or a class)."""
    if isinstance(target, str):
        cls = load_adapter(target) if ":" in target else REGISTRY.get(target)
    else:
        cls = target
    results: list[CheckResult] = []

    def record(name: str, fn: Callable[[], str | None]) -> bool:
        t0 = time.perf_counter()
        try:
            detail = fn()
        except Exception as exc:  # a broken adapter is a failed check, not a crash
            detail = f"raised {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        r = CheckResult(name, detail is None, detail or "", time.perf_counter() - t0)
        results.append(r)
        if progress:
            progress(r)
        return r.ok

    state: dict[str, object] = {}

    def construct() -> str | None:
        if not hasattr(cls, "info"):
            return "class has no `info` MethodInfo"
        state["m"] = cls(scale, profile=profile, device=device)
        return None

    if not record("construct", construct):
        return results
    m: Method = state["m"]  # type: ignore[assignment]

    def info() -> str | None:
        i = cls.info
        missing = [f for f in ("name", "title", "citation") if not getattr(i, f)]
        if missing:
            return f"MethodInfo lacks {', '.join(missing)}"
        if i.learned and profile not in cls.budgets:
            return f"learned method has no budget for profile {profile!r} in `budgets`"
        return None

    record("method info", info)

    def fit() -> str | None:
        if not cls.info.learned:
            rep = m.fit(smoke_training_data(cls, scale), Budget(0, 1, 0))
            return None if isinstance(rep, FitReport) else "fit() must return a FitReport"
        data = smoke_training_data(cls, scale)
        seen: list[TrainingData] = []
        orig_fit = m.fit

        def spy(d: TrainingData, b: Budget) -> FitReport:
            seen.append(d)
            return orig_fit(d, b)

        budget = m.default_budget()
        rep = spy(data, budget)
        if not isinstance(rep, FitReport):
            return "fit() must return a FitReport"
        leaked = set(test_ids) & seen[0].ids
        if leaked:
            return f"fit() received test images {sorted(leaked)}"
        if seen[0].degradation is not None and not cls.info.upper_bound:
            return "fit() received the true degradation; only oracle may"
        return None

    record("fit (smoke budget, no test images)", fit)

    lr = torch.from_numpy(np.stack(_rng_images(2, 21, 27, 7))).permute(0, 3, 1, 2).contiguous()

    def shapes() -> str | None:
        out = m.upscale(lr)
        want = (2, 3, 21 * scale, 27 * scale)
        if tuple(out.shape) != want:
            return f"upscale of {tuple(lr.shape)} gave {tuple(out.shape)}, expected {want} (odd sizes must work)"
        if out.dtype != torch.float32:
            return f"upscale returned {out.dtype}, expected float32"
        if not torch.isfinite(out).all():
            return "upscale returned NaN or inf"
        if out.min() < 0 or out.max() > 1:
            return f"upscale values span [{out.min():.4f}, {out.max():.4f}], expected within [0,1]"
        state["out"] = out
        return None

    record("output shape, dtype, range, finite (odd 21x27 input)", shapes)

    def batch() -> str | None:
        full = m.upscale(lr)
        singles = torch.cat([m.upscale(lr[i:i + 1]) for i in range(2)])
        d = (full - singles).abs().max().item()
        return None if d <= BATCH_TOL else f"batch of two differs from two single calls by {d:.3g} (> {BATCH_TOL})"

    record(f"batch of two == two single calls (tol {BATCH_TOL})", batch)

    def repeat() -> str | None:
        a, b = m.upscale(lr), m.upscale(lr)
        d = (a - b).abs().max().item()
        return None if d <= REPEAT_TOL else f"same input gave outputs {d:.3g} apart (> {REPEAT_TOL})"

    record(f"deterministic (tol {REPEAT_TOL})", repeat)

    def roundtrip() -> str | None:
        if m.network() is None:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ckpt"
            m.save_checkpoint(path)
            m2 = cls(scale, profile=profile, device=device)
            m2.load_checkpoint(path)
            d = (m.upscale(lr) - m2.upscale(lr)).abs().max().item()
        return None if d <= REPEAT_TOL else f"save/load round trip changed outputs by {d:.3g}"

    record("checkpoint save/load round-trip", roundtrip)

    warm = m.warm_start() if cls.info.learned else None
    if warm is not None:
        def warm_start() -> str | None:
            net = warm.build()
            out = net(lr[:1])
            if tuple(out.shape) != (1, 3, 21 * scale, 27 * scale):
                return f"warm_start().build() maps {tuple(lr[:1].shape)} to {tuple(out.shape)}; it must be an x{scale} SR net"
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "warm.pt"
                torch.save(net.state_dict(), path)
                cls(scale, profile=profile, device=device).load_init(path)
            return None

        record(f"declared warm start: its network is x{scale} SR and load_init takes its state dict", warm_start)

    if isinstance(m, DegradationModel):
        hr = torch.from_numpy(np.stack(_rng_images(2, 8 * scale, 6 * scale, 11))).permute(0, 3, 1, 2).contiguous()

        def degradation() -> str | None:
            outs = [m.degrade(hr, generator=torch.Generator().manual_seed(5)) for _ in range(2)]
            want = (2, 3, 8, 6)
            if tuple(outs[0].shape) != want:
                return f"degrade of {tuple(hr.shape)} gave {tuple(outs[0].shape)}, expected {want}"
            if not torch.isfinite(outs[0]).all() or outs[0].min() < 0 or outs[0].max() > 1:
                return "degrade must return finite values in [0,1]"
            d = (outs[0] - outs[1]).abs().max().item()
            if d > REPEAT_TOL:
                return f"degrade with one generator seed gave outputs {d:.3g} apart: draw only from `generator`"
            k = m.kernel(generator=torch.Generator().manual_seed(5))
            if k is not None:
                k = torch.as_tensor(k).squeeze()
                if k.dim() != 2 or not torch.isfinite(k).all():
                    return f"kernel() must return a finite 2-D tensor, got shape {tuple(k.shape)}"
            return None

        record("declared DegradationModel: degrade shape, range, seeded draws; kernel", degradation)
    return results


def format_results(results: list[CheckResult]) -> str:
    lines = [f"{'PASS' if r.ok else 'FAIL'}  {r.name}" + (f": {r.detail}" if r.detail else "") for r in results]
    return "\n".join(lines)
