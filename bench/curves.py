"""Learning curves: a method's test scores at evenly spaced points of its own fit.

``python run_bench.py curves`` fits a learned method exactly as the main run does (same
training pools, same seeds, same code path through ``Method.fit``) and, through a
:class:`~bench.train.TrainingProbe`, pauses it at ``--points`` evenly spaced steps to score:

- SR quality: PSNR (the run's protocol, default ``paper-y``) of ``upscale`` on the
  embedded test split for each ``--suites`` entry, the number the main tables report;
- for methods with a learned degradation model, its fidelity on the domain it is
  fitted to (:mod:`bench.fidelity`: deterministic PSNR and generated noise sigma).

``--factors 1,4`` runs the profile's budget and a 4x longer one (iterations only; the
learning-rate schedules stretch with it, as they would for a longer profile). The
probe evaluates under ``torch.no_grad`` with the global RNG forked and restores every
module's train/eval mode, so a probed fit takes the same optimisation steps as an
unprobed one: the factor-1 curve ends at the model the main run scores.

Rows go to the ``curves`` table of the store under ``--out``; ``curves.md``,
``curves.csv`` and one PNG per (method, domain) are rendered from it, with the
bicubic PSNR of each suite drawn as the reference line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tabulate import tabulate
from torch import nn

from .adapter import PROFILES, REGISTRY, BenchError
from .fidelity import MIN_DRAWS, PSNR_CAP

CURVES_VERSION = "2"  # bump when a row's meaning changes: stored rows are keyed by it

SCHEMA = """
CREATE TABLE IF NOT EXISTS curves (
    method TEXT, domain TEXT, scale INTEGER, profile TEXT, factor REAL, iterations INTEGER, step INTEGER,
    stage TEXT, metric TEXT, suite TEXT, value REAL, n_images INTEGER, device TEXT, seed INTEGER, version TEXT,
    wall_s REAL,
    PRIMARY KEY (method, domain, scale, profile, factor, step, metric, suite, device, seed, version)
);
"""


def probe_steps(total: int, points: int) -> list[int]:
    """``points`` evenly spaced step counts in 1..total, always ending at ``total``."""
    if total < 1:
        return []
    points = max(1, min(points, total))
    return sorted({max(1, round(total * k / points)) for k in range(1, points + 1)})


def _modules(method) -> list[nn.Module]:
    """Every nn.Module the adapter holds (attributes, and dict values such as loss nets)."""
    found: dict[int, nn.Module] = {}
    for v in vars(method).values():
        items = v.values() if isinstance(v, dict) else (v,)
        for m in items:
            if isinstance(m, nn.Module):
                found[id(m)] = m
    return list(found.values())


class _ModeGuard:
    """Remember each submodule's train/eval flag and put it back (upscale() switches to eval)."""

    def __init__(self, method):
        self.flags = [(sub, sub.training) for m in _modules(method) for sub in m.modules()]

    def restore(self) -> None:
        for sub, flag in self.flags:
            sub.training = flag


@dataclasses.dataclass(frozen=True)
class CurveJob:
    method: str
    domain: str  # the suite per-domain methods are fitted to ('' for blind/per-scale methods)
    scale: int
    factor: float
    suites: tuple[str, ...]  # where SR PSNR is measured


def _psnr_of(method, lrs, hrs, metric, upscale) -> float:
    """Mean PSNR of ``upscale(method, lr)`` against ``hrs`` = [(uint8 HR, gray)], as the tables score it."""
    return float(np.mean(metric.batch([(upscale(method, lr), hr, gray) for lr, (hr, gray) in zip(lrs, hrs)])))


def _test_references(runner, scale: int):
    """The embedded test split, its HR pictures, their (uint8, gray) scoring form and the PSNR metric."""
    from .data import embedded_test
    from .metrics import create_metric
    from .runner import hr_uint8

    ds = embedded_test()
    pictures = [runner.hr_for(ds, it, scale) for it in ds.items]
    hrs = [(hr_uint8(p), bool(p.gray)) for p in pictures]
    return ds, pictures, hrs, create_metric("psnr", protocol=runner.spec.protocol, scale=scale, device="cpu")


def run_curve(runner, job: CurveJob, points: int, draws: int, store_rows, fidelity_images: int = 0) -> list[dict]:
    """Fit ``job.method`` once with a probe; return (and hand to ``store_rows``) the scored rows."""
    from .fidelity import has_degradation_model, method_sampler, model_kernel, score_image
    from .runner import fit_input
    from .train import TrainingProbe, probing

    cls = REGISTRY.get(job.method)
    if not cls.info.learned:
        raise BenchError(f"{job.method} is not trained, so it has no learning curve; pick a learned method")
    ds, pictures, hrs, metric = _test_references(runner, job.scale)
    items = list(ds.items)
    test_ids = frozenset(i.id for i in items)
    runner.test_ids = test_ids
    spec = runner.spec
    per_domain = cls.info.fit_per == "domain"
    domain = job.domain if per_domain else ""
    # the fit the main run would make: same pools, budget and key (the key is reused below)
    variant, meta = runner.variant_for(job.method, job.scale, domain, test_ids)
    data = meta["data"]
    if data.ids & test_ids:
        raise BenchError(f"training data for {job.method} contains test images")
    method = runner.build(job.method, job.scale)
    started = runner.start_fit(method, meta)  # the main run's start: --init or the shared warm start
    base = meta["budget"]
    budget = dataclasses.replace(base, iterations=max(1, round(base.iterations * job.factor)))
    lrs = {s: [runner.lr_for(ds, it, s, job.scale) for it in items] for s in job.suites}
    fid_suite = runner.suite(job.domain) if (per_domain and has_degradation_model(cls)) else None
    fid_items = items[:fidelity_images] if fidelity_images else items
    fid_hr = [(it.id, p.pixels) for it, p in zip(fid_items, pictures)] if fid_suite else []
    rows: list[dict] = []
    t0 = time.perf_counter()
    fit_clock = [0.0]  # seconds spent in the fit itself, probes excluded

    def row(step: int, stage: str, metric_name: str, suite: str, value: float | None) -> dict:
        n = len(items) if metric_name == "psnr" else len(fid_hr)
        return dict(method=job.method, domain=domain, scale=job.scale, profile=spec.profile, factor=job.factor,
                    iterations=budget.iterations, step=step, stage=stage, metric=metric_name, suite=suite,
                    value=value, n_images=n, device=runner.device, seed=spec.seed, version=CURVES_VERSION,
                    wall_s=round(fit_clock[0], 2))

    last = [time.perf_counter()]

    def evaluate(step: int, stage: str) -> None:
        fit_clock[0] += time.perf_counter() - last[0]
        guard = _ModeGuard(method)
        new = []
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            for s in job.suites:
                new.append(row(step, stage, "psnr", s, _psnr_of(method, lrs[s], hrs, metric, runner.upscale)))
            if fid_suite is not None:
                kernel = model_kernel(method)
                scores = [score_image(method_sampler(method, fid_suite.name, iid, spec.seed), hr, fid_suite,
                                      job.scale, iid, spec.seed, draws, kernel=kernel) for iid, hr in fid_hr]
                new.append(row(step, stage, "det_psnr", fid_suite.name, float(np.mean([s.det_psnr for s in scores]))))
                new.append(row(step, stage, "sigma_gen", fid_suite.name, float(np.mean([s.sigma_gen for s in scores]))))
                if kernel is not None and scores[0].kernel_l1 is not None:
                    new.append(row(step, stage, "kernel_l1", fid_suite.name,
                                   float(np.mean([s.kernel_l1 for s in scores]))))
        guard.restore()
        rows.extend(new)
        store_rows(new)
        shown = ", ".join(f"{r['metric']} {r['suite']} {r['value']:.2f}" for r in new)
        runner.log(f"  {job.method} {job.factor:g}x step {step}/{budget.iterations} [{stage}]: {shown}")
        last[0] = time.perf_counter()

    runner.log(f"curve: {job.method} x{job.scale}" + (f" on {domain}" if domain else "")
               + f", {job.factor:g}x budget ({budget.describe()}), {points} points")
    with probing(TrainingProbe(probe_steps(budget.iterations, points), evaluate)) as probe:
        report = method.fit(fit_input(job.method, data), budget)
    report.notes[:0] = started
    fit_clock[0] += time.perf_counter() - last[0]
    if probe.steps != budget.iterations:
        runner.log(f"  note: {job.method} ran {probe.steps} probed steps for a budget of {budget.iterations}")
    if budget == base and not (runner.fit_folder(meta) / "fit.json").exists():
        # a probed fit is the unprobed fit (tests/test_curves.py): the main run and `fidelity`
        # with the same --out reuse it instead of training again
        runner.save_fit(method, meta, report, fit_clock[0])
        runner.log(f"  cached as {variant} for run/fidelity with --out {spec.out}")
    runner.log(f"  {job.method}: done in {time.perf_counter() - t0:.0f}s (fit {fit_clock[0]:.0f}s)")
    return rows


def baseline_rows(runner, suites: Sequence[str], scale: int, fidelity_suites: Sequence[str] = ()) -> list[dict]:
    """Reference rows: bicubic interpolation's PSNR per suite, and the bicubic assumption's
    deterministic fidelity on each domain a degradation model was scored on."""
    from .fidelity import bicubic_sampler, score_image

    bic = REGISTRY.get("bicubic")(scale, profile=runner.spec.profile, device="cpu")
    ds, pictures, hrs, metric = _test_references(runner, scale)

    def row(metric_name: str, suite: str, value: float) -> dict:
        return dict(method="bicubic", domain="", scale=scale, profile="-", factor=0.0, iterations=0, step=0,
                    stage="-", metric=metric_name, suite=suite, value=value, n_images=len(ds.items), device="cpu",
                    seed=runner.spec.seed, version=CURVES_VERSION, wall_s=0.0)

    out = [row("psnr", s, _psnr_of(bic, [runner.lr_for(ds, it, s, scale) for it in ds.items], hrs, metric,
                                   runner.upscale)) for s in suites]
    for s in fidelity_suites:
        suite = runner.suite(s)
        scores = [score_image(bicubic_sampler(scale), p.pixels, suite, scale, it.id, runner.spec.seed,
                              MIN_DRAWS)
                  for it, p in zip(ds.items, pictures)]
        out.append(row("det_psnr", s, float(np.mean([x.det_psnr for x in scores]))))
    return out


# ---------------------------------------------------------------- store + rendering
def ensure_table(store) -> None:
    store.add_table(SCHEMA)


def put_rows(store, rows: Sequence[dict]) -> None:
    store.put_rows("curves", list(rows))


def curve_rows(store) -> pd.DataFrame:
    return pd.DataFrame(store.rows("curves", {"version": CURVES_VERSION},
                                   order=("method", "domain", "factor", "step", "metric", "suite")),
                        columns=store.columns("curves"))


def markdown(frame: pd.DataFrame) -> str:
    """One table per (method, domain, scale): rows = probe steps, columns = scores, per factor."""
    out = ["# Learning curves", "",
           "PSNR (dB) of `upscale` on the embedded test split at evenly spaced steps of one fit; "
           "`det_psnr` / `sigma_gen` are the learned degradation model's fidelity on the domain it is fitted to "
           "(see `fidelity.md`), on all 6 test images unless `curves.csv` gives a smaller `n_images`. "
           "`wall` is fit time up to that step, probes excluded. Reference rows: bicubic interpolation on the "
           "same LR.", ""]
    base = frame[frame.method == "bicubic"]
    if len(base):
        out.append("Bicubic PSNR: " + ", ".join(f"`{r.suite}` x{r.scale} {r.value:.2f}"
                                                for r in base[base.metric == "psnr"].itertuples()))
        fid = base[base.metric == "det_psnr"]
        if len(fid):
            out.append("")
            out.append("Bicubic assumption, deterministic fidelity PSNR: "
                       + ", ".join(f"`{r.suite}` x{r.scale} {r.value:.2f}" for r in fid.itertuples()))
        out.append("")
    learned = frame[frame.method != "bicubic"]
    for (m, dom, scale, dev), g in learned.groupby(["method", "domain", "scale", "device"], sort=True):
        out.append(f"## {m} x{scale}" + (f" on `{dom}`" if dom else "") + f" ({dev})")
        out.append("")
        for factor, gf in g.groupby("factor"):
            gf = gf.assign(col=gf.metric + " " + gf.suite)
            wide = gf.pivot_table(index=["step", "stage", "wall_s"], columns="col", values="value",
                                  aggfunc="first").reset_index()
            iters = int(gf.iterations.iloc[0])
            out.append(f"Budget {factor:g}x ({iters} iterations):")
            out.append("")
            wide = wide.rename(columns={"wall_s": "wall s"})
            out.append(tabulate(wide, headers="keys", tablefmt="github", showindex=False, floatfmt=".2f"))
            out.append("")
    return "\n".join(out)


def plot(frame: pd.DataFrame, out: Path) -> list[Path]:
    """One PNG per (method, domain, scale): PSNR per suite vs step (x = fraction of the 1x budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    base = frame[(frame.method == "bicubic") & (frame.metric == "psnr")]
    learned = frame[(frame.method != "bicubic")]
    for (m, dom, scale), g in learned.groupby(["method", "domain", "scale"], sort=True):
        has_fid = (g.metric == "det_psnr").any()
        fig, axes = plt.subplots(1, 2 if has_fid else 1, figsize=(10 if has_fid else 5.5, 3.6), squeeze=False)
        ax = axes[0][0]
        one_x = g[g.factor == 1.0].iterations.max() if (g.factor == 1.0).any() else g.iterations.min()
        suites = sorted(g[g.metric == "psnr"].suite.unique())
        colour = {su: f"C{i % 10}" for i, su in enumerate(suites)}  # one colour per suite, line style per budget
        for (factor, suite), gs in g[g.metric == "psnr"].groupby(["factor", "suite"]):
            ax.plot(gs.step / one_x, gs.value, marker="o", ms=3, color=colour[suite],
                    ls="-" if factor == g.factor.min() else "--", label=f"{suite} ({factor:g}x)")
        for suite in suites:
            b = base[(base.suite == suite) & (base.scale == scale)]
            if len(b):
                ax.axhline(float(b.value.iloc[0]), color=colour[suite], lw=0.8, ls=":")
        ax.set_xlabel("training steps / quick budget")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"{m} x{scale}" + (f" on {dom}" if dom else "") + " (solid 1x, dashed 4x, dotted: bicubic)",
                     fontsize=9)
        ax.legend(fontsize=7)
        if has_fid:
            ax2 = axes[0][1]
            for factor, gs in g[g.metric == "det_psnr"].groupby("factor"):
                ax2.plot(gs.step / one_x, gs.value, marker="o", ms=3, color="C0",
                         ls="-" if factor == g.factor.min() else "--", label=f"deterministic PSNR ({factor:g}x)")
            b = frame[(frame.method == "bicubic") & (frame.metric == "det_psnr") & (frame.suite == dom)]
            if len(b) and float(b.value.iloc[0]) < PSNR_CAP:
                ax2.axhline(float(b.value.iloc[0]), color="k", lw=0.8, ls=":", label="bicubic assumption")
            elif len(b):  # the domain's clean LR is bicubic: the baseline is exact (the 100 dB cap)
                ax2.set_title("learned degradation vs the true clean LR\n(the bicubic assumption is exact here)",
                              fontsize=9)
            ax2.set_xlabel("training steps / quick budget")
            ax2.set_ylabel("fidelity PSNR (dB)")
            if not ax2.get_title():
                ax2.set_title("learned degradation vs the true clean LR", fontsize=9)
            ax2.legend(fontsize=7)
        fig.tight_layout()
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{m}_{dom or 'blind'}_x{scale}")
        path = out / f"curve_{safe}.png"
        fig.savefig(path, dpi=110)
        fig.savefig(path.with_suffix(".pdf"))  # vector, for LaTeX
        plt.close(fig)
        paths.append(path)
    return paths


def write_outputs(store, out: Path) -> list[Path]:
    frame = curve_rows(store)
    out.mkdir(parents=True, exist_ok=True)
    (out / "curves.csv").write_text(frame.to_csv(index=False))
    (out / "curves.md").write_text(markdown(frame))
    return [out / "curves.md", out / "curves.csv", *plot(frame, out)]


# ---------------------------------------------------------------- command
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_bench.py curves",
        description="Learning curves: fit a learned method and score it at evenly spaced steps of the fit.",
        epilog="examples:\n"
               "  python run_bench.py curves --methods dasr-wang,daa --suites 'dasr-iso:sigma=2.4;aniso' \\\n"
               "      --factors 1,4\n"
               "  python run_bench.py curves --methods fssr,pdm --domain mixed --factors 1,4\n"
               "Blind (per-scale) methods are fitted once and scored on every --suites entry; per-domain methods\n"
               "(oracle, unpaired) are fitted to --domain and scored there (and on --suites if given).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", required=True, help="comma list of learned methods")
    p.add_argument("--domain", default="mixed", help="target domain for per-domain methods [mixed]")
    p.add_argument("--suites", default=None,
                   help="';'-separated suites to score SR on [the domain for per-domain methods]")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--factors", default="1", help="comma list of budget multipliers, e.g. 1,4 [1]")
    p.add_argument("--points", type=int, default=8, help="probe points per fit [8]")
    p.add_argument("--draws", type=int, default=MIN_DRAWS, help="noise draws for the fidelity scores [%(default)s]")
    p.add_argument("--fidelity-images", type=int, default=0,
                   help="score fidelity on the first N test images only (CPU time; 0 = all) [0]")
    p.add_argument("--profile", default="quick", choices=PROFILES)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/curves")
    p.add_argument("--debug", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from .degrade import parse_suites
    from .fidelity import has_degradation_model
    from .runner import Runner, RunSpec

    a = parser().parse_args(list(argv or []))
    try:
        factors = tuple(float(f) for f in a.factors.split(",") if f.strip())
    except ValueError:
        raise BenchError(f"--factors {a.factors!r}: give numbers such as 1,4") from None
    if not factors or any(f <= 0 for f in factors):
        raise BenchError(f"--factors {a.factors!r}: give positive multipliers such as 1,4")
    if a.points < 1:
        raise BenchError("--points must be at least 1")
    names = [n.strip() for n in a.methods.split(",") if n.strip()]
    for n in names:
        REGISTRY.get(n)  # unknown names: did-you-mean error before any work
    domain = parse_suites(a.domain, a.scale)
    if len(domain) != 1:
        raise BenchError(f"--domain {a.domain!r} names {len(domain)} suites; name exactly one, e.g. 'aniso:k=5'")
    domain_name = domain[0].name
    spec = RunSpec(methods=tuple(names), profile=a.profile, device=a.device, out=a.out, seed=a.seed,
                   scales=(a.scale,), timing=False)
    runner = Runner(spec, log=lambda s: print(s, flush=True))
    ensure_table(runner.store)
    failures = []
    all_suites: set[str] = set()
    fid_suites: set[str] = set()
    for name in names:
        cls = REGISTRY.get(name)
        per_domain = cls.info.fit_per == "domain"
        suites = [s.name for s in parse_suites(a.suites, a.scale)] if a.suites else [domain_name]
        if per_domain and domain_name not in suites:
            suites = [domain_name, *suites]
        all_suites.update(suites)
        if per_domain and has_degradation_model(cls):
            fid_suites.add(domain_name)
        for f in factors:
            job = CurveJob(name, domain_name, a.scale, f, tuple(suites))
            try:
                run_curve(runner, job, a.points, a.draws, lambda rows: put_rows(runner.store, rows), a.fidelity_images)
            except Exception as exc:
                if a.debug:
                    raise
                failures.append(f"{name} {f:g}x: {type(exc).__name__}: {exc}")
                runner.log(f"FAILED {failures[-1]}")
    put_rows(runner.store, baseline_rows(runner, sorted(all_suites), a.scale, sorted(fid_suites)))
    paths = write_outputs(runner.store, Path(a.out))
    print("wrote " + ", ".join(str(p) for p in paths))
    if failures:
        print(json.dumps(failures, indent=1))
    return 1 if failures else 0
