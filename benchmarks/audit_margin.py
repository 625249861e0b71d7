"""The leakage audit's threshold and its margin, measured on real and generated images.

Positive control from real data: Set14 ``img_006`` (276 x 276) is a crop of Set5
``img_004`` (279 x 279, offset 2 px, pixel-identical), so the audit must flag that pair
and no other Set5 x Set14 pair. Also measured: the distance of each image to its own
JPEG q90, 2-pixel crop and x4 (MATLAB bicubic) downscale, which must stay below the
threshold, and the closest distinct pair, which must stay above it.

    python benchmarks/audit_margin.py --shared ../shared --json results/reference/audit_margin.json
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def variants(im: np.ndarray) -> dict[str, np.ndarray]:
    from PIL import Image

    from bench.degrade import get_suite, synthesize

    q = (np.clip(im, 0, 1) * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(q).save(buf, format="JPEG", quality=90)
    jpeg = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32) / 255.0
    h, w = im.shape[:2]
    lr, _ = synthesize(get_suite("bicubic"), im[: h - h % 4, : w - w % 4], 4, "audit", 0)
    return {"jpeg q90": jpeg, "crop 2 px": im[2:, 2:], "crop 2 px one side": im[:, : w - 2],
            "x4 bicubic": np.asarray(lr, np.float32) / 255.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from bench.audit import THRESHOLD, distance, thumbnail
    from bench.data import read_image
    from tests._shared import smooth_images

    def hr(ds: str) -> dict[str, np.ndarray]:
        folder = a.shared / "datasets" / ds / "image_SRF_4"
        return {f.name.split("_SRF")[0]: read_image(f).pixels for f in sorted(folder.glob("*_HR.png"))}

    set5, set14 = hr("Set5"), hr("Set14")
    t5 = {k: thumbnail(v) for k, v in set5.items()}
    t14 = {k: thumbnail(v) for k, v in set14.items()}
    pairs = sorted(((float(distance(t5[i], t14[j])[0, 0]), i, j) for i in t5 for j in t14))
    dup = next(d for d, i, j in pairs if (i, j) == ("img_004", "img_006"))
    distinct = [(d, i, j) for d, i, j in pairs if (i, j) != ("img_004", "img_006")]
    within = sorted((float(distance(t14[i], t14[j])[0, 0]), f'Set14 {i}', f'Set14 {j}') for i in t14 for j in t14 if i < j)
    w5 = sorted((float(distance(t5[i], t5[j])[0, 0]), f'Set5 {i}', f'Set5 {j}') for i in t5 for j in t5 if i < j)
    # more natural photographs: scikit-image's samples (offline), each a distinct scene
    import skimage.data as skd

    sk = {}
    for n in ("astronaut", "chelsea", "coffee", "camera", "rocket", "retina", "hubble_deep_field", "immunohistochemistry",
              "motorcycle_left", "brick", "grass", "gravel", "colorwheel", "coins", "page", "text", "horse"):  # not "cat": it is chelsea
        if hasattr(skd, n):
            x = np.asarray(getattr(skd, n)(), np.float32)
            x = x / 255.0 if x.max() > 1 else x
            sk[f"skimage {n}"] = np.repeat(x[..., None], 3, 2) if x.ndim == 2 else x[..., :3]
    tall = {**{f"Set5 {k}": t5[k] for k in t5}, **{f"Set14 {k}": t14[k] for k in t14},
            **{k: thumbnail(v) for k, v in sk.items()}}
    names = list(tall)
    every = sorted((float(distance(tall[x], tall[y])[0, 0]), x, y) for i, x in enumerate(names) for y in names[i + 1:]
                   if {x, y} != {"Set5 img_004", "Set14 img_006"})
    closest_distinct = every[0]
    print(f"{len(names)} natural images, {len(every)} distinct pairs; closest: {every[:3]}")
    near = {}
    import tempfile

    gen = smooth_images(Path(tempfile.mkdtemp()) / "gen", [(96, 128)] * 4, seed=5)
    images = {**{f"Set14/{k}": v for k, v in set14.items()}, **sk,
              **{f"generated/{f.stem}": read_image(f).pixels for f in sorted(gen.glob("*.png"))}}
    for name, im in images.items():
        t = thumbnail(im)
        for kind, v in variants(im).items():
            near.setdefault(kind, []).append((float(distance(t, thumbnail(v))[0, 0]), name))
    worst_near = {k: max(v) for k, v in near.items()}
    print(f"Set5 img_004 vs Set14 img_006 (2-px-offset crop): distance {dup:.4f}")
    print(f"closest distinct pair: {closest_distinct[1]} vs {closest_distinct[2]}: {closest_distinct[0]:.4f}")
    for k, (d, n) in worst_near.items():
        print(f"worst {k}: {d:.4f} ({n})")
    worst = max(dup, *(d for d, _ in worst_near.values()))
    print(f"threshold {THRESHOLD}: duplicates up to {worst:.4f} below it (margin x{THRESHOLD / max(worst, 1e-9):.1f}), "
          f"closest distinct pair {closest_distinct[0]:.4f} above it (margin x{closest_distinct[0] / THRESHOLD:.1f})")
    flagged = [(i, j) for d, i, j in pairs if d < THRESHOLD]
    print(f"Set5 x Set14 pairs flagged: {flagged}")
    ok = flagged == [("img_004", "img_006")] and worst < THRESHOLD < closest_distinct[0]
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({
            "threshold": THRESHOLD, "positive_control": {"pair": "Set5 img_004 / Set14 img_006", "distance": dup},
            "closest_distinct": {"pair": f"{closest_distinct[1]} / {closest_distinct[2]}",
                                 "distance": closest_distinct[0]},
            "worst_near_duplicate": {k: {"distance": d, "image": n} for k, (d, n) in worst_near.items()},
            "set5_x_set14_flagged": [list(p) for p in flagged], "pass": ok}, indent=2) + "\n")
        print(f"wrote {a.json}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
