"""Degradation fidelity: how close a learned HR -> LR model is to the true degradation.

On synthetic target domains the harness knows the degradation that made the target LR,
so the learned degradation models of the unpaired methods can be scored against it,
with the *bicubic assumption* (MATLAB bicubic x1/s, no noise) as the baseline row.

Definitions (every score per test image, then the mean over images):

- Images: the embedded test split (evaluation images only; no fit ever sees them),
  HR mod-cropped to the scale; ``image_id`` and ``--seed`` as the main run uses them.
- Draws: the method's ``degrade(hr, generator=g_k)`` for k = 1..n (n >= 8), each with
  its own seeded CPU generator. A model whose first two draws agree bit for bit is
  deterministic and is drawn once (its sigma is 0).
- (a) Deterministic part: RGB PSNR on the 0..255 scale, float values (no quantisation),
  of the mean over the n draws against ``degrade_clean`` (blur + downsample, before
  noise and JPEG). ``crop = scale`` LR pixels on each side are ignored, because the
  suites pad with reflect/replicate and the models with their own padding and a 21-tap
  HR kernel reaches 2.5 LR pixels at x4. The mean of n draws still holds 1/n of the
  model's noise variance, which would penalise a good noise model against a noiseless
  one; the MSE is therefore corrected by that term, ``MSE(mean, clean) - var/n`` with
  ``var`` the per-pixel unbiased variance over the draws (an unbiased estimate of the
  MSE of the model's expected output). PSNR is capped at 100 dB (MSE floor
  ``255^2 * 1e-10``): a noisy model that matches exactly can score any value above
  about 50 dB within the estimate's sampling error, and 100 means "no error left".
  The uncorrected MSE is stored too (``det_mse_raw``).
- (b) Stochastic part: ``sigma_gen`` = sqrt of the mean per-pixel variance of the draws
  about their mean, times n/(n-1), on 0..255 (same crop). ``sigma_true`` is the Gaussian
  noise level the suite applied to that image (sqrt of the sum of squares when several);
  score ``|sigma_gen - sigma_true|``, lower is better. JPEG (``mixed``: q60) adds a
  non-Gaussian error that ``sigma_true`` does not count; ``sigma_obs``, the measured
  std of the suite's 8-bit LR about its clean LR (noise + rounding + JPEG), is stored
  and printed under the table for that reason. Poisson or realistic noise: n/a.
- (c) Kernel: for suites whose deterministic part is one blur then one strided
  resize (MATLAB bicubic or s-fold), the true *effective* HR-grid kernel is the blur
  kernel convolved with the resizer's kernel (a delta for s-fold; for MATLAB bicubic
  the antialiased cubic stretched by s, centred (s-1)/2 pixels after the sampled HR
  pixel). Methods that expose ``kernel()`` (PDM) and the bicubic assumption are compared
  with it: both are normalised to sum 1, the estimate is moved so its centre of mass
  lands on the true one (integer part exactly, the sub-pixel rest with a cubic spline,
  then clipped at 0 and renormalised), and the score is the L1 distance (0..2). The
  centre-of-mass offset (estimate minus truth, HR pixels) is stored as the shift.

Plain PSNR of a noisy generated LR against the noisy true LR is deliberately not used:
a perfect noise model loses to a noiseless one there.

``main(argv)`` is the ``fidelity`` command: it obtains each fitted model through
``Runner.model_for`` (the cache of the main run, so fits are reused), writes one row per
(variant, suite, scale, image) to the ``fidelity`` table of the store, and renders
``fidelity.md`` and ``fidelity.csv`` from the store.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from tabulate import tabulate

from .adapter import PROFILES, REGISTRY, BenchError, DegradationModel

BASELINE = "bicubic-assumption"
BASELINE_LABEL = "bicubic assumption"
PSNR_CAP = 100.0
DEFAULT_SUITES = "aniso:k=5;noise:sigma=15;mixed"
MIN_DRAWS = 8
FIDELITY_VERSION = "1"  # bump when a score's definition changes: stored rows are keyed by it

SCHEMA = """
CREATE TABLE IF NOT EXISTS fidelity (
    variant TEXT, method TEXT, suite TEXT, scale INTEGER, image TEXT, seed INTEGER, draws INTEGER,
    version TEXT, det_mse REAL, det_mse_raw REAL, det_psnr REAL, sigma_gen REAL, sigma_true REAL,
    sigma_obs REAL, kernel_l1 REAL, kernel_l1_raw REAL, shift_y REAL, shift_x REAL, draws_used INTEGER,
    wall_s REAL, written REAL,
    PRIMARY KEY (variant, suite, scale, image, seed, draws, version));
"""

Sampler = Callable[[np.ndarray, int], np.ndarray]  # (HR H x W x 3, draw index) -> LR h x w x 3, [0,1] floats


# ---------------------------------------------------------------- scores
@dataclass(frozen=True)
class DrawStats:
    mean: np.ndarray  # per-pixel mean over draws, [0,1] scale
    var: np.ndarray  # per-pixel unbiased variance over draws (zeros for one draw)
    n: int


def draw_statistics(draws: Iterable[np.ndarray]) -> DrawStats:
    """Mean and unbiased variance per pixel, accumulated one draw at a time."""
    ref = s1 = s2 = None
    n = 0
    for d in draws:
        d = np.asarray(d, dtype=np.float64)
        if ref is None:
            ref, s1, s2 = d, np.zeros_like(d), np.zeros_like(d)
        elif d.shape != ref.shape:
            raise BenchError(f"draw {n + 1} has shape {d.shape}, the first {ref.shape}; degrade() must keep its size")
        diff = d - ref  # about the first draw: no cancellation in the variance
        s1 += diff
        s2 += diff * diff
        n += 1
    if n == 0:
        raise BenchError("no draws to score; pass --draws 8 or more")
    mean = ref + s1 / n
    var = np.maximum(s2 - s1 * s1 / n, 0.0) / (n - 1) if n > 1 else np.zeros_like(ref)
    return DrawStats(mean, var, n)


def crop(img: np.ndarray, border: int) -> np.ndarray:
    if border <= 0:
        return img
    if img.shape[0] <= 2 * border or img.shape[1] <= 2 * border:
        raise BenchError(f"LR of {img.shape[0]}x{img.shape[1]} is too small for a {border}-pixel crop")
    return img[border:-border, border:-border]


def psnr_from_mse(mse255: float, cap: float = PSNR_CAP) -> float:
    """PSNR for an MSE on the 0..255 scale, capped (an exact match is ``cap``)."""
    floor = 255.0 ** 2 * 10.0 ** (-cap / 10.0)
    return float(10.0 * math.log10(255.0 ** 2 / max(mse255, floor)))


def deterministic_mse(stats: DrawStats, clean: np.ndarray, border: int) -> tuple[float, float]:
    """(bias-corrected MSE, raw MSE) of the draws' mean against the clean LR, 0..255 scale."""
    mean, var, clean = (crop(a, border) for a in (stats.mean, stats.var, np.asarray(clean, np.float64)))
    if mean.shape != clean.shape:
        raise BenchError(f"generated LR is {mean.shape[:2]}, the true clean LR {clean.shape[:2]}; "
                         "degrade() must return HR size / scale")
    raw = float(np.mean((mean - clean) ** 2)) * 255.0 ** 2
    return raw - float(np.mean(var)) * 255.0 ** 2 / stats.n, raw


def noise_sigma(stats: DrawStats, border: int) -> float:
    """RMS deviation of a draw about the expected output, 0..255 (0 for one draw)."""
    return float(math.sqrt(float(np.mean(crop(stats.var, border))))) * 255.0


def true_sigma(meta: dict) -> float | None:
    """Gaussian noise the suite applied to one image (0..255), from synthesize()'s meta."""
    total = 0.0
    for rec in meta.get("steps", []):
        if rec.get("op") == "realistic":
            return None
        if rec.get("op") == "noise" and not rec.get("skipped"):
            if rec.get("kind") != "gaussian":
                return None
            total += float(rec["sigma"]) ** 2
    return math.sqrt(total)


# ---------------------------------------------------------------- kernels
def bicubic_kernel(scale: int) -> np.ndarray:
    """The HR-grid correlation kernel of MATLAB bicubic x1/s, offset 0 at the centre.

    Output pixel Y of ``imresize(x, 1/s)`` is centred on HR coordinate ``s*Y + (s-1)/2``
    (0-based) with weights ``cubic(t/s)/s``: a correlation with this kernel followed by
    s-fold subsampling gives the same values away from the image border.
    """
    from bench.degrade.resize import _cubic

    s = int(scale)
    c = (s - 1) / 2.0
    lo, hi = math.floor(c - 2 * s), math.ceil(c + 2 * s)
    half = max(-lo, hi)
    d = np.arange(-half, half + 1, dtype=np.float64)
    w = _cubic((d - c) / s)
    w /= w.sum()
    return np.outer(w, w)


def compose(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The single kernel of correlating with ``first`` then ``second`` (centres at size//2)."""
    from scipy import signal

    out = signal.convolve(first, second, mode="full")
    # centre of a full convolution of centred kernels sits at (a//2 + b//2); make it the middle
    cy = first.shape[0] // 2 + second.shape[0] // 2
    cx = first.shape[1] // 2 + second.shape[1] // 2
    hy = max(cy, out.shape[0] - 1 - cy)
    hx = max(cx, out.shape[1] - 1 - cx)
    canvas = np.zeros((2 * hy + 1, 2 * hx + 1))
    canvas[hy - cy:hy - cy + out.shape[0], hx - cx:hx - cx + out.shape[1]] = out
    return canvas


def effective_kernel(suite, scale: int, meta: dict) -> np.ndarray | None:
    """True HR-grid kernel of a blur + strided-resize suite for one image, or None."""
    from bench.degrade.steps import Blur, Jpeg, Noise, Resize

    steps = suite.steps()
    lin = [s for s in steps if not isinstance(s, (Noise, Jpeg))]
    if not lin or not isinstance(lin[-1], Resize) or lin[-1].method not in ("matlab", "sfold"):
        return None
    if any(not isinstance(s, Blur) for s in lin[:-1]) or len(lin) > 2:
        return None
    if lin[:-1]:
        values = meta.get("kernel")
        if values is None:
            return None  # kernels larger than the meta record keeps
        blur = np.asarray(values, dtype=np.float64)
        if blur.shape[0] % 2 == 0 or blur.shape[1] % 2 == 0:
            return None  # even kernels pad asymmetrically; no centred offset frame
    else:
        blur = np.ones((1, 1))
    resize = bicubic_kernel(scale) if lin[-1].method == "matlab" else np.ones((1, 1))
    return compose(blur, resize)


def _centred(k: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    out = np.zeros(size)
    oy, ox = size[0] // 2 - k.shape[0] // 2, size[1] // 2 - k.shape[1] // 2
    out[oy:oy + k.shape[0], ox:ox + k.shape[1]] = k
    return out


def _centre_offset(k: np.ndarray) -> np.ndarray:
    """Centre of mass relative to the middle pixel (offset 0), as (y, x)."""
    ys, xs = np.indices(k.shape)
    com = np.array([(k * ys).sum(), (k * xs).sum()]) / k.sum()
    return com - np.array([k.shape[0] // 2, k.shape[1] // 2])


@dataclass(frozen=True)
class KernelScore:
    l1: float  # after centre-of-mass alignment
    l1_raw: float  # as placed (offset 0 at the centre)
    shift: tuple[float, float]  # centre of mass of estimate minus truth, HR pixels (y, x)


def kernel_error(estimate: np.ndarray, truth: np.ndarray) -> KernelScore:
    """L1 between sum-1 kernels after moving the estimate's centre of mass onto the truth's."""
    est, ref = (np.asarray(k, dtype=np.float64) for k in (estimate, truth))
    for name, k in (("estimated", est), ("true", ref)):
        if k.ndim != 2 or not np.isfinite(k).all() or abs(k.sum()) < 1e-12:
            raise BenchError(f"{name} kernel must be a finite 2-D array with a non-zero sum, got shape {k.shape}")
    est, ref = est / est.sum(), ref / ref.sum()
    shift = _centre_offset(est) - _centre_offset(ref)
    margin = int(np.ceil(np.abs(shift).max())) + 3
    size = (max(est.shape[0], ref.shape[0]) + 2 * margin, max(est.shape[1], ref.shape[1]) + 2 * margin)
    size = (size[0] | 1, size[1] | 1)  # odd: offset 0 sits on the middle pixel
    e, r = _centred(est, size), _centred(ref, size)
    raw = float(np.abs(e - r).sum())
    whole = np.round(shift).astype(int)
    moved = np.roll(e, tuple(-whole), axis=(0, 1))  # the margin keeps the roll from wrapping mass around
    frac = shift - whole
    if np.abs(frac).max() > 1e-9:
        moved = np.clip(ndimage.shift(moved, -frac, order=3, mode="constant"), 0.0, None)
        moved /= moved.sum()
    return KernelScore(float(np.abs(moved - r).sum()), raw, (float(shift[0]), float(shift[1])))


# ---------------------------------------------------------------- one image
@dataclass(frozen=True)
class ImageScore:
    image: str
    det_mse: float
    det_mse_raw: float
    det_psnr: float
    sigma_gen: float
    sigma_true: float | None
    sigma_obs: float
    kernel_l1: float | None
    kernel_l1_raw: float | None
    shift_y: float | None
    shift_x: float | None
    draws_used: int


def score_image(sample: Sampler, hr: np.ndarray, suite, scale: int, image_id: str, seed: int, draws: int, *,
                kernel: np.ndarray | None = None, deterministic_check: bool = True) -> ImageScore:
    """All fidelity scores of one model on one HR image (H x W x 3 float in [0,1])."""
    from bench.degrade import degrade_clean, mod_crop, synthesize

    if draws < 2:
        raise BenchError(f"fidelity needs at least 2 draws to measure noise, got {draws}; use --draws {MIN_DRAWS}")
    hr = mod_crop(np.asarray(hr, dtype=np.float32), scale)
    clean = degrade_clean(suite, hr, scale, image_id, seed).astype(np.float64)
    lr8, meta = synthesize(suite, hr, scale, image_id, seed)
    border = int(scale)
    obs = float(np.sqrt(np.mean((crop(lr8 / 255.0, border) - crop(clean, border)) ** 2))) * 255.0

    first = np.asarray(sample(hr, 0), dtype=np.float64)
    second = np.asarray(sample(hr, 1), dtype=np.float64)
    if deterministic_check and first.shape == second.shape and np.array_equal(first, second):
        stats = DrawStats(first, np.zeros_like(first), 1)
    else:
        stats = draw_statistics([first, second, *(sample(hr, k) for k in range(2, draws))])
    mse, raw = deterministic_mse(stats, clean, border)
    truth = effective_kernel(suite, scale, meta) if kernel is not None else None
    ks = kernel_error(kernel, truth) if truth is not None else None
    return ImageScore(image_id, mse, raw, psnr_from_mse(mse), noise_sigma(stats, border), true_sigma(meta), obs,
                      None if ks is None else ks.l1, None if ks is None else ks.l1_raw,
                      None if ks is None else ks.shift[0], None if ks is None else ks.shift[1], stats.n)


def bicubic_sampler(scale: int) -> Sampler:
    from bench.degrade import imresize

    return lambda hr, k: imresize(np.asarray(hr, np.float64), 1.0 / scale)


def _draw_seed(*parts: object) -> int:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def method_sampler(method, suite_name: str, image_id: str, seed: int) -> Sampler:
    """Draw k of ``method.degrade`` with its own seeded CPU generator."""
    name = method.info.name

    def sample(hr: np.ndarray, k: int) -> np.ndarray:
        g = torch.Generator().manual_seed(_draw_seed("fidelity", name, suite_name, image_id, seed, k))
        x = torch.from_numpy(np.ascontiguousarray(hr, dtype=np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            lr = method.degrade(x, generator=g)
        lr = torch.as_tensor(lr).detach().float().cpu()
        if lr.dim() != 4 or lr.shape[:2] != (1, 3):
            raise BenchError(f"{name}.degrade returned shape {tuple(lr.shape)}; it must return N x 3 x h x w")
        if not torch.isfinite(lr).all():
            raise BenchError(f"{name}.degrade returned NaN/inf")
        return lr[0].permute(1, 2, 0).numpy().astype(np.float64)

    return sample


def has_degradation_model(cls) -> bool:
    """A learned HR -> LR model of the target domain, declared as :class:`DegradationModel`."""
    return issubclass(cls, DegradationModel)


def model_kernel(method) -> np.ndarray | None:
    """The method's estimate of the (mean) HR-grid kernel, when it has one."""
    if not isinstance(method, DegradationModel):
        return None
    g = torch.Generator().manual_seed(_draw_seed("fidelity-kernel", method.info.name))
    k = method.kernel(generator=g)
    return None if k is None else torch.as_tensor(k).detach().double().cpu().numpy().squeeze()


# ---------------------------------------------------------------- store
def ensure_table(store) -> None:
    store.add_table(SCHEMA)


def put_rows(store, variant: str, method: str, suite: str, scale: int, seed: int, draws: int,
             scores: Sequence[ImageScore], wall_s: float) -> None:
    now = time.time()
    store.put_rows("fidelity", [dict(
        variant=variant, method=method, suite=suite, scale=scale, image=s.image, seed=seed, draws=draws,
        version=FIDELITY_VERSION, det_mse=s.det_mse, det_mse_raw=s.det_mse_raw, det_psnr=s.det_psnr,
        sigma_gen=s.sigma_gen, sigma_true=s.sigma_true, sigma_obs=s.sigma_obs, kernel_l1=s.kernel_l1,
        kernel_l1_raw=s.kernel_l1_raw, shift_y=s.shift_y, shift_x=s.shift_x, draws_used=s.draws_used,
        wall_s=wall_s / max(len(scores), 1), written=now) for s in scores])


def stored_images(store, variant: str, suite: str, scale: int, seed: int, draws: int) -> set[str]:
    where = dict(variant=variant, suite=suite, scale=scale, seed=seed, draws=draws, version=FIDELITY_VERSION)
    return {r["image"] for r in store.rows("fidelity", where)}


def fidelity_rows(store) -> pd.DataFrame:
    return pd.DataFrame(store.rows("fidelity", {"version": FIDELITY_VERSION}), columns=store.columns("fidelity"))


# ---------------------------------------------------------------- tables
COLUMNS = ["method", "variant", "suite", "scale", "budget", "fit wall s", "det PSNR", "sigma gen", "sigma true",
           "|d sigma|", "kernel L1", "n images"]


def summarize(rows: pd.DataFrame, variants: dict, keep: Iterable[tuple] | None = None) -> pd.DataFrame:
    """One line per (variant, suite, scale, seed, draws): means over the stored images."""
    if keep is not None:
        keep = list(keep)
        want = set(keep)
        rows = rows[[k in want for k in zip(rows.variant, rows.suite, rows.scale, rows.seed, rows.draws)]]
    out = []
    for (variant, suite, scale, seed, draws), g in rows.groupby(["variant", "suite", "scale", "seed", "draws"],
                                                                sort=False):
        meta = variants.get(variant, {})
        st = g["sigma_true"]
        dsig = (g["sigma_gen"] - st).abs()
        out.append({
            "method": g["method"].iloc[0], "variant": variant, "suite": suite, "scale": int(scale),
            "budget": meta.get("budget") or "-", "fit wall s": meta.get("wall_s"),
            "det PSNR": g["det_psnr"].mean(), "sigma gen": g["sigma_gen"].mean(),
            "sigma true": st.mean() if st.notna().all() else float("nan"),
            "|d sigma|": dsig.mean() if st.notna().all() else float("nan"),
            "kernel L1": g["kernel_l1"].mean() if g["kernel_l1"].notna().all() else float("nan"),
            "sigma obs": g["sigma_obs"].mean(), "shift y": g["shift_y"].mean(), "shift x": g["shift_x"].mean(),
            "seed": int(seed), "draws": int(draws), "n images": len(g),
        })
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    # suites in the order asked for (first seen), the baseline first within each
    order = {}
    for k in (keep if keep is not None else zip(frame.variant, frame.suite, frame.scale)):
        order.setdefault((k[1], k[2]), len(order))
    frame["_suite"] = [order.get((s, sc), len(order)) for s, sc in zip(frame.suite, frame.scale)]
    frame["_base"] = frame["variant"] != BASELINE
    return (frame.sort_values(["_suite", "_base", "method"], kind="stable").drop(columns=["_suite", "_base"])
            .reset_index(drop=True))


def _num(v, fmt: str) -> str:
    return "n/a" if v is None or pd.isna(v) else format(v, fmt)


def _wall(v) -> str:
    if v is None or pd.isna(v):
        return "-"
    return f"{v:.1f} s" if v < 100 else f"{v:.0f} s"


def _beats(frame: pd.DataFrame) -> list[str]:
    lines = []
    for (suite, scale), g in frame.groupby(["suite", "scale"], sort=False):
        base = g[g.variant == BASELINE]
        models = g[g.variant != BASELINE]
        if base.empty or models.empty:
            continue
        b = base.iloc[0]
        det = [m for m, v in zip(models.method, models["det PSNR"]) if v > b["det PSNR"]]
        sig = [m for m, v in zip(models.method, models["|d sigma|"]) if pd.notna(v) and v < b["|d sigma|"]]
        ker = [m for m, v in zip(models.method, models["kernel L1"]) if pd.notna(v) and pd.notna(b["kernel L1"])
               and v < b["kernel L1"]]
        text = (f"`{suite}` x{scale}: beat the bicubic assumption on det PSNR: {', '.join(det) or 'none'}; "
                f"on |Δσ|: {', '.join(sig) or 'none'}")
        if pd.notna(b["kernel L1"]):
            text += f"; on kernel L1: {', '.join(ker) or 'none'}"
        fixed = [m for m, v in zip(models.method, models["sigma gen"]) if v == 0]
        if fixed and pd.notna(b["sigma true"]) and b["sigma true"] > 0:
            # said outright so a reader does not take it for an undertrained noise model
            text += (f"; deterministic (σ gen 0 by construction, so |Δσ| equals the bicubic assumption's): "
                     f"{', '.join(fixed)}")
        lines.append(text)
    return lines


def markdown(frame: pd.DataFrame, no_model: Sequence[str], profile: str) -> str:
    intro = (f"Profile `{profile}`; {int(frame['n images'].max())} embedded test image(s), RGB 0..255, crop = scale "
             "LR pixels. det PSNR ↑: mean of the draws vs the true LR before noise/JPEG (noise-corrected, capped at "
             "100 dB); σ: noise std of the generated LR vs the suite's; |Δσ| ↓; kernel L1 ↓ (0..2) after "
             "centre-of-mass alignment.")
    lines = ["# Degradation fidelity", "", intro, ""]
    # a bare '|' would split the column in a pipe table
    head = ["method", "variant", "suite", "budget", "fit wall time", "det PSNR", "σ gen", "σ true", r"\|Δσ\|",
            "kernel error"]
    body = []
    for (suite, scale), g in frame.groupby(["suite", "scale"], sort=False):
        best = {}  # column -> rows that share the best value (ties all bold)
        for col, higher in (("det PSNR", True), ("|d sigma|", False), ("kernel L1", False)):
            vals = g[col].dropna()
            if len(vals) > 1 and vals.max() - vals.min() > 1e-9:
                top = vals.max() if higher else vals.min()
                best[col] = set(vals.index[(vals - top).abs() <= 1e-9])
        for i, r in g.iterrows():
            cells = {"det PSNR": _num(r["det PSNR"], ".2f"), "|d sigma|": _num(r["|d sigma|"], ".2f"),
                     "kernel L1": _num(r["kernel L1"], ".3f")}
            for col, rows in best.items():
                if i in rows:
                    cells[col] = f"**{cells[col]}**"
            label = BASELINE_LABEL if r.variant == BASELINE else r.method
            wall = _wall(r["fit wall s"])
            body.append([label, "-" if r.variant == BASELINE else r.variant, f"{suite} x{scale}", r.budget, wall,
                         cells["det PSNR"], _num(r["sigma gen"], ".2f"), _num(r["sigma true"], ".2f"),
                         cells["|d sigma|"], cells["kernel L1"]])
    lines.append(tabulate(body, headers=head, tablefmt="github", disable_numparse=True))
    lines += ["", "Notes:", ""]
    notes = _beats(frame)
    for (suite, scale), g in frame.groupby(["suite", "scale"], sort=False):
        notes.append(f"`{suite}` x{scale}: measured std of the suite's 8-bit LR about its clean LR "
                     f"{g['sigma obs'].iloc[0]:.2f} (noise + rounding" + (" + JPEG, which σ true does not count)"
                                                                         if "mixed" in suite or "jpeg" in suite
                                                                         else ")"))
        for _, r in g[g["kernel L1"].notna()].iterrows():
            notes.append(f"{BASELINE_LABEL if r.variant == BASELINE else r.method} on `{suite}`: kernel centre of "
                         f"mass off by ({r['shift y']:+.2f}, {r['shift x']:+.2f}) HR px (y, x) before alignment")
    notes.append("draws: " + ", ".join(sorted({str(d) for d in frame.draws})) + " per image; deterministic models "
                 "(first two draws identical) are drawn once and have σ gen 0.")
    if no_model:
        notes.append("no degradation model (not scored): " + ", ".join(no_model))
    lines += [f"{i}. {n}" for i, n in enumerate(notes, 1)] + [""]
    return "\n".join(lines)


def write_tables(store, out: Path, keep: Iterable[tuple] | None, no_model: Sequence[str],
                 profile: str) -> dict[str, Path]:
    frame = summarize(fidelity_rows(store), {v: meta for (_, v), meta in store.variants().items()}, keep)
    if frame.empty:
        raise BenchError("no fidelity rows in the store to tabulate; name methods with a degradation model")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "fidelity.md", "csv": out / "fidelity.csv"}
    paths["markdown"].write_text(markdown(frame, no_model, profile))
    frame.to_csv(paths["csv"], index=False, float_format="%.6f")
    return paths


# ---------------------------------------------------------------- command
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_bench.py fidelity",
        description="Score learned degradation models against the true degradation of synthetic target domains "
                    "(deterministic part, noise level, kernel), next to the bicubic assumption.")
    p.add_argument("--methods", default="all",
                   help="'all' (every unpaired method with a degradation model) or a comma list [%(default)s]")
    p.add_argument("--suites", default=DEFAULT_SUITES, help="target domains, ';'-separated [%(default)s]")
    p.add_argument("--scales", default="4", help="comma list of scale factors [%(default)s]")
    p.add_argument("--profile", choices=PROFILES, default="quick", help="[%(default)s]")
    p.add_argument("--out", default="results", help="output folder (store, fit cache, tables) [%(default)s]")
    p.add_argument("--seed", type=int, default=0, help="run seed (LR synthesis, training, draws) [%(default)s]")
    p.add_argument("--draws", type=int, default=MIN_DRAWS, help="noise draws per image (>= 8) [%(default)s]")
    p.add_argument("--images", default=None, help="comma list of embedded test image ids (default: all)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="[%(default)s]")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _scales(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise BenchError(f"--scales takes integers like 4 or 2,4, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise BenchError(f"--scales takes positive integers, got {text!r}")
    return vals


def _select_methods(text: str) -> tuple[list[str], list[str]]:
    """(methods to score, names listed as having no degradation model)."""
    names = REGISTRY.names() if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    scored, none = [], []
    for n in names:
        cls = REGISTRY.get(n)
        if has_degradation_model(cls):
            scored.append(n)
        elif cls.info.family == "unpaired" or text.strip() != "all":
            none.append(n)
    return scored, none


def _test_items(images: str | None) -> tuple[list, frozenset[str]]:
    """(items to score, ids of the whole test split: training must avoid all of them)."""
    from .data import embedded_test

    items = list(embedded_test().items)
    all_ids = frozenset(i.id for i in items)
    if images:
        want = [t.strip() for t in images.split(",") if t.strip()]
        unknown = [w for w in want if w not in all_ids]
        if unknown:
            raise BenchError(f"--images: {', '.join(unknown)} not in the embedded test split "
                             f"({', '.join(i.id for i in items)})")
        items = [i for i in items if i.id in want]
    return items, all_ids


def _score_one(runner, name: str, suite, scale: int, hrs: list[tuple[str, np.ndarray]], seed: int, draws: int,
               test_ids: frozenset[str]) -> tuple[str, str]:
    """Score one (model, suite, scale) on the images not yet stored; returns (variant, method label)."""
    store = runner.store
    variant = BASELINE if name == BASELINE else runner.variant_for(name, scale, suite.name, test_ids)[0]
    done = stored_images(store, variant, suite.name, scale, seed, draws)
    todo = [(i, hr) for i, hr in hrs if i not in done]
    if not todo:
        return variant, name
    t0 = time.perf_counter()
    if name == BASELINE:
        def sampler_for(image_id: str) -> Sampler:
            return bicubic_sampler(scale)
        kernel = bicubic_kernel(scale)
    else:
        method = runner.model_for(name, scale, suite.name, test_ids).method

        def sampler_for(image_id: str) -> Sampler:
            return method_sampler(method, suite.name, image_id, seed)
        kernel = model_kernel(method)
    runner.log(f"fidelity: {name} on {suite.name} x{scale} ({len(todo)} images, {draws} draws)")
    scores = [score_image(sampler_for(iid), hr, suite, scale, iid, seed, draws, kernel=kernel) for iid, hr in todo]
    put_rows(store, variant, name, suite.name, scale, seed, draws, scores, time.perf_counter() - t0)
    return variant, name


def main(argv: Sequence[str] | None = None) -> int:
    """The ``fidelity`` command; 0 when every (model, suite) was scored, 1 when some failed."""
    from .data import load_hr
    from .degrade import parse_suites
    from .runner import Runner, RunSpec

    a = parser().parse_args(list(argv or []))
    if a.draws < MIN_DRAWS:
        raise BenchError(f"--draws {a.draws} is too few: the protocol averages at least {MIN_DRAWS} draws; "
                         f"use --draws {MIN_DRAWS} or more")
    scales = _scales(a.scales)
    scored, no_model = _select_methods(a.methods)
    items, test_ids = _test_items(a.images)
    spec = RunSpec(methods=tuple(scored) or ("bicubic",), profile=a.profile, device=a.device, out=a.out, seed=a.seed,
                   scales=scales, timing=False)
    runner = Runner(spec, log=lambda s: print(s, flush=True))
    runner.test_ids = test_ids  # _fit_cached asserts training never overlaps it
    ensure_table(runner.store)
    keep, failures = [], []
    for scale in scales:
        suites = parse_suites(a.suites, scale)
        hrs = [(it.id, load_hr(it, scale).pixels) for it in items]
        names = [BASELINE] + [m for m in scored if scale in REGISTRY.get(m).info.scales]
        for suite in suites:
            for name in names:
                try:
                    variant, _ = _score_one(runner, name, suite, scale, hrs, a.seed, a.draws, test_ids)
                except Exception as exc:  # a broken method fails its rows; the others still get scored
                    if a.debug:
                        raise
                    failures.append(f"{name} on {suite.name} x{scale}: {type(exc).__name__}: {exc}")
                    runner.log(f"FAILED {failures[-1]}")
                    continue
                keep.append((variant, suite.name, scale, a.seed, a.draws))
    paths = write_tables(runner.store, Path(a.out), keep, no_model, a.profile)
    print(f"tables: {', '.join(str(p) for p in paths.values())}")
    return 1 if failures else 0


__all__ = [
    "BASELINE", "DrawStats", "ImageScore", "KernelScore", "bicubic_kernel", "bicubic_sampler", "deterministic_mse",
    "draw_statistics", "effective_kernel", "kernel_error", "main", "method_sampler", "noise_sigma", "psnr_from_mse",
    "score_image", "true_sigma",
]
