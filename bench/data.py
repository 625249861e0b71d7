"""Image IO, dataset layouts, the embedded default and unpaired training splits.

Conventions (DESIGN.md section 4): pictures are RGB float32 in [0, 1]; a file stored
single-channel is remembered as ``gray`` so metrics can score it on one channel; HR is
mod-cropped to a multiple of the scale. Every user mistake surfaces as one
:class:`DataError` line naming the file and the fix.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import warnings
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import tomllib
from PIL import Image, ImageOps, UnidentifiedImageError

from bench.adapter import BenchError, BenchWarning, read_toml, unknown_name

#: The dataset specs ship inside the package (a wheel carries package data, not a top-level
#: folder); they cannot be a top-level ``datasets`` package: pyiqa imports the PyPI one.
SPECS_DIR = Path(__file__).resolve().parent / "datasets"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"})
LAYOUTS = ("folder", "selfexsr", "edsr-benchmark", "realsr-v3", "drealsr", "div2krk", "ntire2020", "lr-only")
SKIMAGE_PREFIX = "skimage:"
# skimage name -> file in skimage/data. The sha256 of each lives in bench/datasets/embedded.toml.
SKIMAGE_FILES: Mapping[str, str] = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "immunohistochemistry": "ihc.png",
    "stereo_motorcycle[0]": "motorcycle_left.png",
    "camera": "camera.png",
    "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "retina": "retina.jpg",
}
EMBEDDED_TEST = ("astronaut", "chelsea", "coffee", "immunohistochemistry", "stereo_motorcycle[0]", "camera")
EMBEDDED_REAL = ("rocket", "hubble_deep_field", "retina")
#: The real photos are used as LR at their centre 160x160: x4 SR of the whole 1411x1411
#: retina is 32 MPix, which alone would exceed the default run's CPU budget.
EMBEDDED_REAL_CROP = 160


class DataError(BenchError):
    """A dataset or image the harness cannot use; the message says which and what to do."""


class DataWarning(BenchWarning):
    """A dataset the harness can use but that differs from its spec (e.g. a partial download)."""


# ---------------------------------------------------------------------------
# reading and writing pictures
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Picture:
    """An image as the harness sees it: float32 H x W x 3 RGB in [0, 1].

    ``gray``: the file stores one channel (replicated here to three); metrics score it
    on one channel. ``bit_depth``: bits per sample in the file (1, 8 or 16).
    """

    pixels: np.ndarray
    gray: bool
    bit_depth: int
    path: str

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def skimage_file(name: str) -> Path:
    """Path of a bundled scikit-image sample (read locally; never fetched)."""
    import skimage.data

    if name not in SKIMAGE_FILES:
        raise DataError(unknown_name("scikit-image sample", name, SKIMAGE_FILES))
    p = Path(skimage.data.__file__).parent / SKIMAGE_FILES[name]
    if not p.is_file():
        raise DataError(
            f"scikit-image sample {name!r} is not bundled at {p}; install scikit-image>=0.21 "
            "(its wheel ships these files) or name a dataset with --datasets"
        )
    return p


def _local_path(path: str | os.PathLike) -> Path:
    s = str(path)
    return skimage_file(s[len(SKIMAGE_PREFIX):]) if s.startswith(SKIMAGE_PREFIX) else Path(s)


def _png_header(raw: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, or None when not a PNG."""
    if raw[:8] != b"\x89PNG\r\n\x1a\n" or len(raw) < 26:
        return None
    return raw[24], raw[25]


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an H x W (x C) array, as ImageOps.exif_transpose does."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops[orientation](arr)) if orientation in ops else arr


def _read_deep_color(raw: bytes, where: str, orientation: int) -> np.ndarray:
    """16-bit RGB(A): Pillow would truncate it to 8 bits, so decode with OpenCV."""
    import cv2  # opencv-python-headless comes with pyiqa

    arr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.ndim != 3 or arr.dtype != np.uint16:
        raise DataError(f"cannot decode 16-bit colour image {where}; re-save it as an 8- or 16-bit RGB PNG")
    rgb = arr[..., 2::-1]  # BGR(A) -> RGB, alpha dropped
    return _orient(rgb, orientation).astype(np.float32) / 65535.0


def read_image(path: str | os.PathLike) -> Picture:
    """Read an image file (or ``skimage:<name>``) as a :class:`Picture`.

    EXIF orientation is applied. 16-bit files are divided by 65535, 8-bit by 255, 1-bit
    maps to {0, 1}. Alpha is dropped (not composited), as ``cv2.imread(IMREAD_COLOR)``
    does in the BasicSR/EDSR readers the papers used, so pixels match theirs. Palette,
    CMYK, YCbCr and LAB files are converted to RGB; only files stored as one channel
    (L, LA, 1, I;16) count as gray.
    """
    where = str(path)
    p = _local_path(path)
    if not p.exists():
        raise DataError(f"image {where} does not exist; check the path (or --data-root)")
    if p.is_dir():
        raise DataError(f"image {where} is a folder, not an image file")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read image {where} ({exc.strerror or exc}); check its permissions") from None
    if not raw:
        raise DataError(f"image {where} is an empty file; replace it with the original image")
    try:
        img = Image.open(io.BytesIO(raw))
        img.load()  # decode now: truncated and corrupt files fail here, not later
        orientation = int(img.getexif().get(0x0112, 1) or 1)
        header = _png_header(raw)
        tiff16 = img.format == "TIFF" and img.mode in ("RGB", "RGBA") and _tiff_bits(img) == 16
        if (header is not None and header[0] == 16 and header[1] in (2, 6)) or tiff16:
            return Picture(_read_deep_color(raw, where, orientation), False, 16, where)
        img = ImageOps.exif_transpose(img)
        return _picture_from_pil(img, where)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise DataError(
            f"cannot decode image {where} ({reason}); the file is corrupt or truncated: "
            "replace it with a complete copy or remove it from the dataset"
        ) from None


def _tiff_bits(img: Image.Image) -> int:
    bits = getattr(img, "tag_v2", {}).get(258, (8,))
    return int(bits[0] if isinstance(bits, tuple) else bits)


def _picture_from_pil(img: Image.Image, where: str) -> Picture:
    mode = img.mode
    if mode == "1":
        arr, gray, depth = np.asarray(img.convert("L"), np.float32) / 255.0, True, 1
    elif mode in ("L", "LA", "La"):
        arr, gray, depth = np.asarray(img.getchannel(0), np.float32) / 255.0, True, 8
    elif mode.startswith("I;16") or mode == "I":
        a = np.asarray(img).astype(np.float64)
        if mode == "I" and (a.min() < 0 or a.max() > 65535):
            raise DataError(f"image {where} holds 32-bit integers; save it as an 8- or 16-bit PNG")
        arr, gray, depth = (a / 65535.0).astype(np.float32), True, 16
    elif mode == "F":
        raise DataError(f"image {where} holds floating-point samples; save it as an 8- or 16-bit PNG")
    else:
        # P, PA, RGBA, RGBX, CMYK, YCbCr, LAB, HSV -> RGB. Alpha is dropped, not composited.
        rgb = img.convert("RGBA").convert("RGB") if mode in ("P", "PA") else img.convert("RGB")
        arr, gray, depth = np.asarray(rgb, np.float32) / 255.0, False, 8
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return Picture(np.ascontiguousarray(arr, dtype=np.float32), gray, depth, where)


def check_size(picture: Picture, scale: int) -> None:
    """Raise when an HR picture cannot give even one LR pixel at ``scale``."""
    if picture.height < scale or picture.width < scale:
        raise DataError(
            f"image {picture.path} is {picture.width}x{picture.height}, smaller than the scale x{scale}; "
            f"HR images need at least {scale} pixels per side: remove it or use a smaller --scales"
        )


def mod_crop(picture: Picture, scale: int) -> Picture:
    """Crop bottom/right so both sides are multiples of ``scale`` (the papers' convention)."""
    check_size(picture, scale)
    h = picture.height - picture.height % scale
    w = picture.width - picture.width % scale
    if (h, w) == (picture.height, picture.width):
        return picture
    return Picture(np.ascontiguousarray(picture.pixels[:h, :w]), picture.gray, picture.bit_depth, picture.path)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> 8-bit levels: round half to even (np.round, like torch.round in
    BasicSR's tensor2img), then clip. MATLAB's im2uint8 rounds halves away from zero; exact
    halves do not occur for computed outputs, so both agree in practice."""
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an 8-bit H x W x 3 (or H x W gray) array as PNG, creating parent folders."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise DataError(f"write_png({path}): expected uint8 pixels, got {arr.dtype}; convert with to_uint8 first")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise DataError(f"write_png({path}): expected H x W x 3 or H x W, got shape {arr.shape}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG")


# ---------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One test image. ``hr``: path of the ground truth (None for LR-only sets);
    ``lr``: scale -> path of a provided LR file; ``gray``: None until read.
    ``hr_at``: scale -> an HR stored per scale (SelfExSR keeps one mod-cropped copy per
    scale; ``load_hr`` prefers it). ``scales``: when non-empty, the only scales this item
    exists at (real-world sets pair each HR with one scale). ``lr_crop``: centre crop of
    the provided LR (the embedded real photos, so the default run stays within its CPU
    budget)."""

    id: str
    hr: str | None
    lr: Mapping[int, str] = field(default_factory=dict)
    gray: bool | None = None
    hr_at: Mapping[int, str] = field(default_factory=dict)
    scales: tuple[int, ...] = ()
    lr_crop: int = 0  # > 0: provided LR is centre-cropped to at most this many pixels per side

    def at(self, scale: int) -> bool:
        return not self.scales or scale in self.scales


@dataclass(frozen=True)
class Dataset:
    name: str
    layout: str
    root: str
    items: tuple[Item, ...]
    has_hr: bool
    spec: str | None

    def items_at(self, scale: int) -> tuple[Item, ...]:
        """The items that exist at ``scale`` (all of them except for real-world pairs)."""
        return tuple(it for it in self.items if it.at(scale))

    def manifest_hash(self) -> str:
        """sha256 over the layout, ids and the bytes of every file (not names or mtimes)."""
        h = hashlib.sha256(f"{self.layout}|{int(self.has_hr)}".encode())
        for it in sorted(self.items, key=lambda i: i.id):
            h.update(f"\n{it.id}|{it.scales}|{it.lr_crop}|hr:{_content_hash(it.hr) if it.hr else '-'}".encode())
            for s in sorted(it.hr_at):
                h.update(f"|hr{s}:{_content_hash(it.hr_at[s])}".encode())
            for s in sorted(it.lr):
                h.update(f"|lr{s}:{_content_hash(it.lr[s])}".encode())
        return h.hexdigest()


def _content_hash(path: str) -> str:
    p = _local_path(path)
    st = p.stat()
    return _file_sha256(str(p.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    # keyed by size and mtime too, so an edited file is hashed again
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_hr(item: Item, scale: int) -> Picture:
    """The item's ground truth, mod-cropped to a multiple of ``scale``."""
    path = item.hr_at.get(scale, item.hr)
    if path is None:
        raise DataError(f"{item.id} has no ground truth (LR-only dataset); only no-reference metrics apply")
    return mod_crop(read_image(path), scale)


def load_lr(item: Item, scale: int) -> Picture:
    """The LR file the dataset provides for ``scale``."""
    if scale not in item.lr:
        have = ", ".join(f"x{s}" for s in sorted(item.lr)) or "none"
        raise DataError(
            f"{item.id} has no provided LR at x{scale} (provided: {have}); "
            "use a synthetic degradation suite or another --scales"
        )
    pic = read_image(item.lr[scale])
    if item.lr_crop:
        h, w = pic.pixels.shape[:2]
        ch, cw = min(h, item.lr_crop), min(w, item.lr_crop)
        y, x = (h - ch) // 2, (w - cw) // 2
        pic = replace(pic, pixels=np.ascontiguousarray(pic.pixels[y:y + ch, x:x + cw]))
    return pic


def _is_image(p: Path) -> bool:
    # dotfiles include macOS "._name.png" resource forks, which are not images
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_image(p)) if folder.is_dir() else []


def list_images(folder: Path) -> list[Path]:
    """Images directly in ``folder``; when it has none, those in its subfolders (walked).

    Subfolders beside top-level images are ignored: they usually hold other versions
    (thumbnails, LR copies) of the same pictures."""
    top = _images_in(folder)
    if top:
        return top
    return sorted(
        p for p in folder.rglob("*")
        if _is_image(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


_SRF = re.compile(r"image_SRF_(\d+)$")
_NTIRE = re.compile(r"^(Corrupted|DPEDiphone)-")


def detect_layout(path: str | os.PathLike) -> str:
    """Which of :data:`LAYOUTS` a folder follows (``lr-only`` is never guessed: it is
    chosen with ``NAME=lr:PATH``)."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"dataset folder {root} does not exist; check the path or --data-root")
    if not root.is_dir():
        raise DataError(f"dataset path {root} is a file; pass the folder that holds the images")
    names = {d.name for d in _subdirs(root)}
    if any(_SRF.match(n) for n in names):
        return "selfexsr"
    if "HR" in names:
        return "edsr-benchmark"
    if "gt" in names and any(n in names for n in ("lr_x2", "lr_x3", "lr_x4")):
        return "div2krk"
    if any(_NTIRE.match(n) for n in names):
        return "ntire2020"
    if any((root / cam / "Test").is_dir() for cam in ("Canon", "Nikon")) or _realsr_test_dirs(root):
        return "realsr-v3"
    if _drealsr_dirs(root):
        return "drealsr"
    if list_images(root):
        return "folder"
    raise DataError(
        f"dataset folder {root} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, "
        "also in subfolders); point to the folder with the images"
    )


def _realsr_test_dirs(root: Path) -> list[tuple[int, Path]]:
    """(scale, folder) pairs of a RealSR V3 tree, for both cameras or one."""
    tests = [root / cam / "Test" for cam in ("Canon", "Nikon") if (root / cam / "Test").is_dir()]
    if not tests and (root / "Test").is_dir():
        tests = [root / "Test"]
    return [(int(d.name), d) for t in tests for d in _subdirs(t) if d.name.isdigit()]


def _drealsr_dirs(root: Path) -> list[tuple[int, Path]]:
    """(scale, Test_x<s> folder) pairs of a DRealSR tree (root = the set or one x<s> folder)."""
    found = []
    for cand in [root, *(_subdirs(root))]:
        for d in (_subdirs(cand) if cand.is_dir() else []):
            m = re.fullmatch(r"Test_x(\d+)", d.name)
            if m and (d / "test_HR").is_dir():
                found.append((int(m.group(1)), d))
    return sorted(set(found))


def _read_layout(root: Path, layout: str, scales: Sequence[int]) -> tuple[list[Item], bool]:
    """Items of ``root`` read as ``layout``, and whether they carry ground truth."""
    if layout == "folder":
        files = list_images(root)
        items = [Item(_rel_id(root, f), str(f), lr=_div2k_lr(root, f, scales)) for f in files]
        return items, True
    if layout == "lr-only":
        files = list_images(root)
        return [Item(_rel_id(root, f), None, lr={s: str(f) for s in scales}) for f in files], False
    if layout == "selfexsr":
        return _read_selfexsr(root), True
    if layout == "edsr-benchmark":
        return _read_edsr(root), True
    if layout == "div2krk":
        return _read_div2krk(root), True
    if layout == "realsr-v3":
        return _read_pairs(
            ((s, d, d, r"(.+)_HR", r"(.+)_LR{s}") for s, d in _realsr_test_dirs(root)), root
        ), True
    if layout == "drealsr":
        return _read_pairs(
            ((s, d / "test_HR", d / "test_LR", r"(.+)_x{s}", r"(.+)_x1") for s, d in _drealsr_dirs(root)), root
        ), True
    if layout == "ntire2020":
        return _read_ntire(root)
    raise DataError(f"unknown layout {layout!r}; one of {', '.join(LAYOUTS)}")


def _rel_id(root: Path, f: Path) -> str:
    return f.relative_to(root).with_suffix("").as_posix()


def _div2k_lr(root: Path, f: Path, scales: Sequence[int]) -> dict[int, str]:
    """DIV2K_valid_HR/0801.png pairs with DIV2K_valid_LR_bicubic/X4/0801x4.png beside it."""
    if not root.name.endswith("_HR"):
        return {}
    lr_root = root.parent / (root.name[: -len("HR")] + "LR_bicubic")
    out = {}
    for s in scales:
        cand = lr_root / f"X{s}" / f"{f.stem}x{s}{f.suffix}"
        if cand.is_file():
            out[s] = str(cand)
    return out


def _read_selfexsr(root: Path) -> list[Item]:
    hr: dict[str, dict[int, str]] = {}
    lr: dict[str, dict[int, str]] = {}
    for d in _subdirs(root):
        m = _SRF.match(d.name)
        if not m:
            continue
        s = int(m.group(1))
        for f in _images_in(d):
            mm = re.fullmatch(rf"(.+)_SRF_{s}_(HR|LR)", f.stem)
            if mm:
                (hr if mm.group(2) == "HR" else lr).setdefault(mm.group(1), {})[s] = str(f)
    # the HR copy of the smallest scale is the one the item names; load_hr takes the
    # copy stored for the scale asked (mod-cropping the original differs per scale)
    return [Item(k, hr[k][min(hr[k])], lr=lr.get(k, {}), hr_at=hr[k]) for k in sorted(hr)]


def _read_edsr(root: Path) -> list[Item]:
    items = []
    lr_root = root / "LR_bicubic"
    scale_dirs = [(int(d.name[1:]), d) for d in _subdirs(lr_root) if re.fullmatch(r"X\d+", d.name)] if lr_root.is_dir() else []
    for f in _images_in(root / "HR"):
        lr = {}
        for s, d in scale_dirs:
            for cand in (d / f"{f.stem}x{s}{f.suffix}", d / f"{f.stem}x{s}.png", d / f.name):
                if cand.is_file():
                    lr[s] = str(cand)
                    break
        items.append(Item(f.stem, str(f), lr=lr))
    return items


def _read_div2krk(root: Path) -> list[Item]:
    items = []
    for f in _images_in(root / "gt"):
        m = re.fullmatch(r"img_(\d+)_gt", f.stem)
        if not m:
            continue
        i = m.group(1)
        lr = {}
        for s in (2, 3, 4):
            cand = root / f"lr_x{s}" / f"im_{i}.png"
            if cand.is_file():
                lr[s] = str(cand)
        items.append(Item(f"img_{i}", str(f), lr=lr))
    return items


def _read_pairs(groups: Iterable[tuple[int, Path, Path, str, str]], root: Path) -> list[Item]:
    """Real-world pairs: one item per (scale, HR file), id ``<stem>-x<s>``."""
    items = []
    for s, hr_dir, lr_dir, hr_pat, lr_pat in groups:
        lrs = {}
        for f in _images_in(lr_dir):
            m = re.fullmatch(lr_pat.format(s=s), f.stem)
            if m:
                lrs[m.group(1)] = str(f)
        for f in _images_in(hr_dir):
            m = re.fullmatch(hr_pat.format(s=s), f.stem)
            if not m:
                continue
            key = m.group(1)
            if key not in lrs:
                raise DataError(f"{f} has no LR partner in {lr_dir}; restore the pair or remove the HR file")
            items.append(Item(f"{key}-x{s}", str(f), lr={s: lrs[key]}, scales=(s,)))
    return items


# NTIRE 2020 Real-World SR (x4): the validation split with ground truth first.
_NTIRE_SPLITS = (
    ("Corrupted-va-x", "Corrupted-va-y"),
    ("Corrupted-te-x", None),
    ("DPEDiphone-va", None),
    ("DPEDiphone-crop-te-x", None),
)


def _read_ntire(root: Path) -> tuple[list[Item], bool]:
    for lr_name, hr_name in _NTIRE_SPLITS:
        lr_dir = root / lr_name
        if not _images_in(lr_dir):
            continue
        hr_dir = root / hr_name if hr_name else None
        hrs = {f.stem: str(f) for f in _images_in(hr_dir)} if hr_dir else {}
        files = _images_in(lr_dir)
        if hrs:
            missing = [f.name for f in files if f.stem not in hrs]
            if missing:
                raise DataError(f"{lr_dir / missing[0]} has no ground truth in {hr_dir}; restore it or remove {hr_dir}")
            return [Item(f.stem, hrs[f.stem], lr={4: str(f)}, scales=(4,)) for f in files], True
        return [Item(f.stem, None, lr={4: str(f)}, scales=(4,)) for f in files], False
    raise DataError(
        f"{root} looks like NTIRE 2020 Real-World SR but has no test split with images "
        f"(looked for {', '.join(n for n, _ in _NTIRE_SPLITS)})"
    )


def load_dataset(name: str, path: str | os.PathLike, scales: Sequence[int], *, layout: str | None = None,
                 spec: "DatasetSpec | None" = None) -> Dataset:
    """Read a dataset folder (layout auto-detected unless given)."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"dataset {name}: {root} does not exist; check the path or --data-root")
    if not root.is_dir():
        raise DataError(f"dataset {name}: {root} is a file; pass the folder that holds the images")
    layout = layout or detect_layout(root)
    items, has_hr = _read_layout(root, layout, scales)
    if not items:
        raise DataError(f"dataset {name}: no images found in {root} (layout {layout}); point to the folder with the images")
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"dataset {name}: two files give the image id {dup!r} in {root}; remove one")
    ds = Dataset(name, layout, str(root), tuple(items), has_hr, spec.path if spec else None)
    if spec is not None:
        spec.check_count(ds, scales)
    return ds


# ---------------------------------------------------------------------------
# specs and name resolution
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSpec:
    """One ``bench/datasets/<name>.toml``: where a standard set lives and what it holds."""

    name: str
    aliases: tuple[str, ...]
    folders: tuple[str, ...]
    layouts: tuple[str, ...]
    expected_count: int
    count_strict: bool
    per_scale: bool
    source: str
    licence: str
    path: str

    def check_count(self, ds: Dataset, scales: Sequence[int]) -> None:
        counts = {s: len(ds.items_at(s)) for s in scales} if self.per_scale else {0: len(ds.items)}
        bad = {s: n for s, n in counts.items() if n != self.expected_count and (n or not self.per_scale)}
        if not bad:
            return
        s, n = next(iter(bad.items()))
        where = f" at x{s}" if self.per_scale else ""
        msg = (
            f"dataset {self.name} at {ds.root} has {n} images{where}, its spec {Path(self.path).name} expects "
            f"{self.expected_count}; complete the download, or give a subset another name (e.g. --datasets my{self.name}=PATH)"
        )
        if self.count_strict:
            raise DataError(msg)
        warnings.warn(msg, DataWarning, stacklevel=3)


def specs_dir() -> Path:
    return SPECS_DIR


@functools.lru_cache(maxsize=1)
def load_specs() -> tuple[DatasetSpec, ...]:
    """Every dataset spec shipped in ``bench/datasets/`` (read once)."""
    out = []
    for f in sorted(specs_dir().glob("*.toml")):
        d = read_toml(f, "dataset spec", error=DataError)
        if "images" in d:  # the embedded set: resolved in code, not under --data-root
            continue
        out.append(DatasetSpec(
            name=d["name"], aliases=tuple(d.get("aliases", ())), folders=tuple(d.get("folders", (d["name"],))),
            layouts=tuple(d.get("layouts", ())), expected_count=int(d["expected_count"]),
            count_strict=bool(d.get("count_strict", True)), per_scale=bool(d.get("count_per_scale", False)),
            source=d.get("source", ""), licence=d.get("licence", ""), path=str(f),
        ))
    return tuple(out)


def embedded_spec() -> dict:
    """The parsed ``bench/datasets/embedded.toml`` (the sha256 of every embedded image)."""
    f = specs_dir() / "embedded.toml"
    if not f.is_file():
        raise DataError(f"{f} is missing; the embedded default needs it to verify its images: reinstall "
                        "unpaired-sr-bench (the file is package data of bench)")
    return tomllib.loads(f.read_text())


def _find_spec(name: str) -> DatasetSpec | None:
    key = name.casefold()
    for sp in load_specs():
        if key in {n.casefold() for n in (sp.name, *sp.aliases)}:
            return sp
    return None


def standard_names() -> list[str]:
    return ["embedded", "embedded-real"] + [n for sp in load_specs() for n in (sp.name, *sp.aliases)]


def list_datasets() -> list[dict[str, str]]:
    """One row per standard dataset (for ``--list datasets``)."""
    rows = [{"dataset": "embedded", "aliases": "", "layout": "skimage.data", "images": str(len(EMBEDDED_TEST)),
             "source": "scikit-image sample images (default, full-reference)"},
            {"dataset": "embedded-real", "aliases": "", "layout": "lr-only", "images": str(len(EMBEDDED_REAL)),
             "source": "scikit-image JPEG photographs (default, no-reference)"}]
    for sp in load_specs():
        rows.append({"dataset": sp.name, "aliases": ", ".join(sp.aliases), "layout": " | ".join(sp.layouts),
                     "images": str(sp.expected_count), "source": sp.source})
    return rows


def _embedded(name: str, names: Sequence[str], has_hr: bool, scales: Sequence[int] = ()) -> Dataset:
    spec = embedded_spec()
    sums = {img["skimage"]: img["sha256"] for img in spec["images"]}
    items = []
    for n in names:
        path = skimage_file(n)
        digest = _content_hash(SKIMAGE_PREFIX + n)
        if sums.get(n) != digest:
            raise DataError(
                f"scikit-image sample {path} has sha256 {digest[:12]}..., bench/datasets/embedded.toml expects "
                f"{str(sums.get(n))[:12]}...; the embedded set changed: install the scikit-image the spec "
                "names or pass --datasets explicitly"
            )
        ref = SKIMAGE_PREFIX + n
        items.append(Item(n, ref) if has_hr else Item(n, None, lr={s: ref for s in scales}, lr_crop=EMBEDDED_REAL_CROP))
    layout = "folder" if has_hr else "lr-only"
    return Dataset(name, layout, "skimage.data", tuple(items), has_hr, str(specs_dir() / "embedded.toml"))


def embedded_test() -> Dataset:
    """Six bundled scikit-image photographs, full size, with ground truth (camera is gray)."""
    return _embedded("embedded", EMBEDDED_TEST, True)


def embedded_real(scales: Sequence[int] = (2, 3, 4)) -> Dataset:
    """Three bundled JPEG photographs used as LR inputs (no ground truth: NR metrics only)."""
    return _embedded("embedded-real", EMBEDDED_REAL, False, scales)


def resolve_datasets(text: str | None, data_root: str | None, scales: Sequence[int]) -> list[Dataset]:
    """``--datasets``: comma-separated ``NAME``, ``NAME=PATH`` or ``NAME=lr:PATH``.

    Empty -> the embedded default. Standard names are looked up under ``data_root``.
    """
    if not text or not text.strip():
        return [embedded_test(), embedded_real(scales)]
    out: list[Dataset] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, _, target = entry.partition("=")
        name = name.strip()
        if not name:
            raise DataError(f"--datasets entry {entry!r} has no name; write NAME, NAME=PATH or NAME=lr:PATH")
        if any(d.name == name for d in out):
            raise DataError(f"--datasets names {name!r} twice; give each dataset once")
        out.append(_resolve_one(name, target.strip(), data_root, scales))
    if not out:
        return [embedded_test(), embedded_real(scales)]
    return out


def _resolve_one(name: str, target: str, data_root: str | None, scales: Sequence[int]) -> Dataset:
    key = name.casefold()
    if not target and key == "embedded":
        return embedded_test()
    if not target and key == "embedded-real":
        return embedded_real(scales)
    spec = _find_spec(name)
    if target:
        lr_only = target.startswith("lr:")
        path = _existing(target[3:] if lr_only else target, data_root, name)
        return load_dataset(name, path, scales, layout="lr-only" if lr_only else None, spec=None if lr_only else spec)
    if spec is None:
        raise DataError(unknown_name("dataset", name, standard_names()) + "; or give a folder as NAME=PATH (NAME=lr:PATH for LR only)")
    if not data_root:
        raise DataError(f"dataset {name} is looked up under --data-root, which is not set; pass --data-root DIR or {name}=PATH")
    root = Path(data_root)
    tried = [root / f for f in spec.folders] + [root / "benchmark" / f for f in spec.folders]
    for cand in tried:
        if cand.is_dir():
            return load_dataset(spec.name, cand, scales, spec=spec)
    raise DataError(
        f"dataset {spec.name} not found under --data-root {root} (looked for {', '.join(spec.folders)}, "
        f"also under benchmark/); put it there or pass {spec.name}=PATH"
    )


def _existing(target: str, data_root: str | None, name: str) -> Path:
    p = Path(target).expanduser()
    if p.exists():
        return p
    if data_root and not p.is_absolute() and (Path(data_root) / p).exists():
        return Path(data_root) / p
    also = f" or under --data-root {data_root}" if data_root else ""
    raise DataError(f"dataset {name}: path {target} does not exist (looked here{also}); give an existing folder")


# ---------------------------------------------------------------------------
# procedural training pools and the unpaired split
# ---------------------------------------------------------------------------
def _pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """n x n noise with a 1/f amplitude spectrum (natural images' texture statistics), unit std."""
    f = np.sqrt(np.fft.fftfreq(n)[:, None] ** 2 + np.fft.rfftfreq(n)[None, :] ** 2)
    f[0, 0] = 1.0
    spec = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) / f
    spec[0, 0] = 0.0
    out = np.fft.irfft2(spec, s=(n, n))
    return (out / (out.std() + 1e-12)).astype(np.float32)


def dead_leaves(size: int, rng: np.random.Generator, *, alpha: float = 3.0, supersample: int = 2,
                max_disks: int = 50_000, texture: float = 0.2) -> np.ndarray:
    """A textured dead-leaves image: occluding disks with radii ~ r^-alpha (alpha 3 gives
    the scale invariance of natural images), each a random colour carrying 1/f texture of
    its own strength (up to ``texture``); rendered ``supersample`` times larger and
    box-averaged so edges are antialiased like a camera's.

    Why textured: flat-colour leaves teach a restoration network to flatten everything,
    which costs PSNR on real textures (Achddou et al., "Synthetic images as a regularity
    prior for image restoration neural networks", SSVM 2021)."""
    if size < 4:
        raise DataError(f"dead_leaves size {size} is too small; use at least 4 pixels")
    n = size * supersample
    rmin, rmax = max(1.0, 0.01 * n), 0.5 * n
    canvas = np.zeros((n, n, 3), np.float32)
    strength = np.zeros((n, n), np.float32)
    free = np.ones((n, n), bool)
    a1 = 1.0 - alpha
    lo, hi = rmin ** a1, rmax ** a1
    left = n * n
    for _ in range(max_disks):
        r = (lo + rng.random() * (hi - lo)) ** (1.0 / a1)  # inverse CDF of the truncated power law
        cy, cx = rng.uniform(-r, n + r, size=2)
        colour = rng.random(3).astype(np.float32)
        amp = np.float32(rng.random() * texture)
        y0, y1 = max(0, int(cy - r)), min(n, int(cy + r) + 1)
        x0, x1 = max(0, int(cx - r)), min(n, int(cx + r) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        # first-fallen leaf stays on top: paint only uncovered pixels, stop when full
        hit = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & free[y0:y1, x0:x1]
        k = int(hit.sum())
        if not k:
            continue
        canvas[y0:y1, x0:x1][hit] = colour
        strength[y0:y1, x0:x1][hit] = amp
        free[y0:y1, x0:x1][hit] = False
        left -= k
        if left == 0:
            break
    if left:
        canvas[free] = canvas[~free].mean(axis=0)
    if texture > 0:
        canvas += (strength * _pink_noise(n, rng))[..., None]
        np.clip(canvas, 0.0, 1.0, out=canvas)
    img = canvas.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    return np.ascontiguousarray(img, dtype=np.float32)


_POOL_KINDS = {"source": 1, "target": 2}


def training_pool(n: int, size: int, seed: int, kind: str = "source") -> list[tuple[str, np.ndarray]]:
    """``n`` seeded dead-leaves images; "source" and "target" pools draw from separate
    seed streams and carry different ids, so they never share an image. Rendered once per
    process for each (n, size, seed, kind) (the images are a pure function of those), and
    handed out as copies."""
    if kind not in _POOL_KINDS:
        raise DataError(unknown_name("training pool kind", kind, _POOL_KINDS))
    return [(name, im.copy()) for name, im in _rendered_pool(n, size, seed, kind)]


@functools.lru_cache(maxsize=4)
def _rendered_pool(n: int, size: int, seed: int, kind: str) -> tuple[tuple[str, np.ndarray], ...]:
    out = []
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _POOL_KINDS[kind], i]))
        out.append((f"deadleaves-{kind}-{seed}-{i}", dead_leaves(size, rng)))
    return tuple(out)
