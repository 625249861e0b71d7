"""Figures for the paper report, drawn from stored SR images and per-image records.

- :func:`crop_figures`: per (dataset, suite, scale), the same crop from HR, bicubic and
  every method side by side with the image's PSNR under each (the layout SR papers
  use); a thumbnail of the whole HR image shows where the crop is. The image and crop
  are chosen by texture (highest luma standard deviation), so reruns pick the same.
- :func:`strength_plots`: PSNR (and LPIPS where available) against degradation
  strength (blur width, noise sigma, JPEG quality) per method, with the paper's values
  dashed where the table has them.

SR images come from runs with ``save_sr=True`` (``bench.runner.sr_path``).
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from .store import CellKey, Store

TILE = 176  # display side of one crop tile, px
MAX_CROP = 96  # HR crop side, px
PICK_FROM = 20  # images considered when choosing the figure's image
#: family -> (the key that sets the strength, axis label); other keys are averaged
STRENGTH = {
    "dasr-iso": ("sigma", "blur width σ"),
    "gaussian8": ("sigma", "blur width σ"),
    "noise": ("sigma", "noise σ (0–255)"),
    "jpeg": ("q", "JPEG quality"),
    "dasr-aniso": ("noise", "noise σ (0–255), mean over kernels"),
    "manet-si": ("noise", "noise σ (0–255), mean over 9 kernels"),
}


@dataclass(frozen=True)
class Figure:
    path: Path  # the PNG (Markdown shows it); the same figure as PDF lies beside it
    caption: str
    dataset: str
    scale: int
    kind: str  # crops | curves

    @property
    def pdf(self) -> Path:
        return self.path.with_suffix(".pdf")


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", s)


def _font(size: int = 13):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _luma(img: np.ndarray) -> np.ndarray:
    a = img.astype(np.float64)
    return a if a.ndim == 2 else a[..., :3] @ np.array([0.299, 0.587, 0.114])


def _best_window(img: np.ndarray, side: int) -> tuple[float, int, int]:
    """(texture score, y, x) of the side x side window with the highest luma std."""
    y_img = _luma(img)
    h, w = y_img.shape
    step = max(1, side // 2)
    best = (-1.0, 0, 0)
    for y in range(0, max(1, h - side + 1), step):
        for x in range(0, max(1, w - side + 1), step):
            s = float(y_img[y:y + side, x:x + side].std())
            if s > best[0]:
                best = (s, y, x)
    return best


def _rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]


def _tile(img: np.ndarray, caption: str, font, size: int = TILE) -> Image.Image:
    pic = Image.fromarray(_rgb(img)).resize((size, size), Image.NEAREST)
    canvas = Image.new("RGB", (size, size + 34), "white")
    canvas.paste(pic, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(caption.split("\n")[:2]):
        tw = draw.textlength(line, font=font)
        draw.text(((size - tw) / 2, size + 2 + 15 * i), line, fill="black", font=font)
    return canvas


def _thumb(img: np.ndarray, box: tuple[int, int, int], caption: str, font) -> Image.Image:
    y, x, side = box
    h, w = img.shape[:2]
    f = TILE / h
    pic = Image.fromarray(_rgb(img)).resize((max(1, round(w * f)), TILE), Image.BICUBIC)
    d = ImageDraw.Draw(pic)
    d.rectangle([x * f, y * f, (x + side) * f, (y + side) * f], outline=(255, 0, 0), width=2)
    canvas = Image.new("RGB", (pic.width, TILE + 34), "white")
    canvas.paste(pic, (0, 0))
    draw = ImageDraw.Draw(canvas)
    tw = draw.textlength(caption, font=font)
    draw.text(((pic.width - tw) / 2, TILE + 2), caption, fill="black", font=font)
    return canvas


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L") if im.mode in ("L", "I;16", "I") else im.convert("RGB"))


def crop_figures(out: str | Path, cells: Sequence[CellKey], store: Store, datasets: Mapping[str, object],
                 order: Sequence[str] = (), group: str = "") -> list[Figure]:
    """One side-by-side crop figure per (dataset, suite, scale, protocol) of ``cells``,
    under ``figures/crops/<group>/`` (one group per table: tables differ in methods)."""
    from .data import load_hr
    from .runner import sr_path

    out = Path(out)
    rec = pd.DataFrame(store.records())
    if rec.empty:
        return []
    method_of = {(r.variant, r.dataset, r.suite, int(r.scale), r.protocol): r.method
                 for r in rec[["variant", "dataset", "suite", "scale", "protocol", "method"]]
                 .drop_duplicates().itertuples(index=False)}
    score = {(r.variant, r.dataset, r.suite, int(r.scale), r.protocol, r.image, r.metric): r.value
             for r in rec.itertuples(index=False)}
    groups: dict[tuple, list[CellKey]] = defaultdict(list)
    for c in cells:
        groups[(c.dataset, c.suite, c.scale, c.protocol)].append(c)
    rank = {m: i for i, m in enumerate(["bicubic", *order])}
    font = _font()
    figs = []
    for (dsname, suite, scale, proto), keys in sorted(groups.items()):
        ds = datasets.get(dsname)
        if ds is None:
            continue
        entries = []
        for k in keys:
            m = method_of.get((k.variant, k.dataset, k.suite, k.scale, k.protocol))
            if m is not None:
                entries.append((rank.get(m, len(rank)), m, k))
        entries.sort(key=lambda e: (e[0], e[1]))
        items = sorted(ds.items_at(scale), key=lambda it: it.id)[:PICK_FROM]
        if not entries or not items:
            continue
        best = None
        for it in items:
            if ds.has_hr:
                ref = _rgb(np.clip(np.round(load_hr(it, scale).pixels * 255), 0, 255).astype(np.uint8))
            else:
                p = sr_path(out, entries[0][2], it.id)
                if not p.exists():
                    continue
                ref = _read(p)
            side = min(MAX_CROP, ref.shape[0], ref.shape[1])
            s, y, x = _best_window(ref, side)
            if best is None or s > best[0]:
                best = (s, it, ref, (y, x, side))
        if best is None:
            continue
        _, item, ref, (y, x, side) = best
        metric = "psnr" if ds.has_hr else "niqe"
        unit = " dB" if metric == "psnr" else ""
        tiles = [_thumb(ref, (y, x, side), f"{item.id}", font)]
        if ds.has_hr:
            tiles.append(_tile(ref[y:y + side, x:x + side], "HR\n(ground truth)", font))
        shown = 0
        for _, m, k in entries:
            p = sr_path(out, k, item.id)
            if not p.exists():
                continue
            sr = _read(p)
            v = score.get((k.variant, k.dataset, k.suite, k.scale, k.protocol, item.id, metric))
            val = "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}{unit}"
            tiles.append(_tile(sr[y:y + side, x:x + side], f"{m}\n{val}", font))
            shown += 1
        if not shown:
            continue
        width = sum(t.width for t in tiles) + 6 * (len(tiles) - 1)
        canvas = Image.new("RGB", (width, max(t.height for t in tiles)), "white")
        xo = 0
        for t in tiles:
            canvas.paste(t, (xo, 0))
            xo += t.width + 6
        path = out / "figures" / "crops" / _safe(group) / f"{_safe(dsname)}_x{scale}_{_safe(suite)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        canvas.save(path)
        canvas.save(path.with_suffix(".pdf"), "PDF", resolution=110)  # for LaTeX: \includegraphics takes PDF
        figs.append(Figure(path, f"{dsname} x{scale}, `{suite}`: {item.id}, {side}x{side} HR crop; "
                           f"{'PSNR' if metric == 'psnr' else 'NIQE'} of the whole image under each", dsname, scale,
                           "crops"))
    return figs


def _parse_suite(name: str) -> tuple[str, dict[str, float]]:
    fam, _, rest = name.partition(":")
    params = {}
    for part in filter(None, rest.split(",")):
        k, _, v = part.partition("=")
        try:
            params[k] = float(v)
        except ValueError:
            return fam, {}
    return fam, params


def strength_plots(out: str | Path, summary: pd.DataFrame,
                   reported: Sequence[tuple[str, str, int, str, str, float]] = (), prefix: str = "") -> list[Figure]:
    """Line plots of PSNR (and LPIPS when measured) against degradation strength.

    ``reported``: (method, dataset, scale, suite, metric, value) points drawn dashed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    if summary.empty:
        return []
    s = summary.copy()
    parsed = s["suite"].map(_parse_suite)
    s["family"] = parsed.map(lambda p: p[0])
    s["x"] = [p[1].get(STRENGTH[p[0]][0]) if p[0] in STRENGTH else None for p in parsed]
    s = s[s["x"].notna() & s["metric"].isin(["psnr", "lpips"])]
    rep = pd.DataFrame(list(reported), columns=["method", "dataset", "scale", "suite", "metric", "value"])
    if not rep.empty:
        rp = rep["suite"].map(_parse_suite)
        rep["family"] = rp.map(lambda p: p[0])
        rep["x"] = [p[1].get(STRENGTH[p[0]][0]) if p[0] in STRENGTH else None for p in rp]
        rep = rep[rep["x"].notna()]
    figs = []
    for (ds, scale, fam), part in s.groupby(["dataset", "scale", "family"]):
        if part["x"].nunique() < 2:
            continue
        metrics = [m for m in ("psnr", "lpips") if part[part.metric == m]["value"].notna().any()]
        if not metrics:
            continue
        fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.6), squeeze=False)
        for ax, m in zip(axes[0], metrics):
            mp = part[part.metric == m]
            colors = {}
            for method, g in mp.groupby("method", sort=True):
                curve = g.groupby("x")["value"].mean().sort_index()
                (line,) = ax.plot(curve.index, curve.values, marker="o", label=method)
                colors[method] = line.get_color()
            if not rep.empty:
                rsel = rep[(rep.dataset == ds) & (rep.scale == scale) & (rep.family == fam) & (rep.metric == m)]
                for method, g in rsel.groupby("method", sort=True):
                    curve = g.groupby("x")["value"].mean().sort_index()
                    ax.plot(curve.index, curve.values, linestyle="--", marker="x", color=colors.get(method),
                            label=f"{method} (paper)")
            ax.set_xlabel(STRENGTH[fam][1])
            ax.set_ylabel({"psnr": "PSNR (dB) ↑", "lpips": "LPIPS ↓"}[m])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"{ds} x{int(scale)}, {fam}")
        fig.tight_layout()
        path = out / "figures" / "curves" / f"{_safe(prefix + ds)}_x{int(scale)}_{_safe(fam)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        fig.savefig(path.with_suffix(".pdf"))  # vector, for LaTeX
        plt.close(fig)
        figs.append(Figure(path, f"{ds} x{int(scale)}: {', '.join(m.upper() for m in metrics)} against "
                           f"{STRENGTH[fam][1]} ({fam})", ds, int(scale), "curves"))
    return figs
