"""bench.data: image reading, layouts, the embedded default, unpaired splits, bad inputs."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import tomllib
from PIL import Image, ImageOps

from bench import data as D
from bench.data import DataError
from tests._shared import requires_shared


def _rgb(h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png(path: Path, arr: np.ndarray | None = None, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(_rgb() if arr is None else arr)
    (img.convert(mode) if mode else img).save(path)
    return path


def _one_line_error(fn, *args, **kw) -> str:
    with pytest.raises(DataError) as ei:
        fn(*args, **kw)
    msg = str(ei.value)
    assert "\n" not in msg and msg.strip() == msg and len(msg) > 20
    return msg


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------
def test_read_rgb_8bit_exact(tmp_path):
    a = _rgb()
    pic = D.read_image(_png(tmp_path / "a.png", a))
    assert pic.pixels.dtype == np.float32 and pic.pixels.shape == (12, 16, 3)
    assert not pic.gray and pic.bit_depth == 8
    np.testing.assert_array_equal(D.to_uint8(pic.pixels), a)


def test_read_gray_8bit_and_1bit(tmp_path):
    g = _rgb()[..., 0]
    pic = D.read_image(_png(tmp_path / "g.png", g))
    assert pic.gray and pic.bit_depth == 8
    for c in range(3):
        np.testing.assert_array_equal(D.to_uint8(pic.pixels[..., c]), g)
    b = D.read_image(_png(tmp_path / "b.png", (g > 127).astype(np.uint8) * 255, mode="1"))
    assert b.gray and b.bit_depth == 1 and set(np.unique(b.pixels)) <= {0.0, 1.0}


def test_read_16bit_gray_and_rgb(tmp_path):
    import cv2

    rng = np.random.default_rng(1)
    g16 = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    pic = D.read_image(tmp_path / "g16.png")
    assert pic.gray and pic.bit_depth == 16
    np.testing.assert_allclose(pic.pixels[..., 0], g16 / 65535.0, atol=1e-7)
    rgb16 = rng.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[..., ::-1])  # cv2 writes BGR
    pic = D.read_image(tmp_path / "c16.png")
    assert not pic.gray and pic.bit_depth == 16
    # Pillow alone would keep only the high byte; the reader must keep all 16 bits
    np.testing.assert_allclose(pic.pixels, rgb16 / 65535.0, atol=1e-7)
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "c16.tif", rgb16, photometric="rgb")
    pic = D.read_image(tmp_path / "c16.tif")
    assert pic.bit_depth == 16 and not pic.gray
    np.testing.assert_allclose(pic.pixels, rgb16 / 65535.0, atol=1e-7)


def test_read_palette_rgba_cmyk(tmp_path):
    a = _rgb()
    pal = Image.fromarray(a).quantize(colors=16)
    pal.save(tmp_path / "p.png")
    pic = D.read_image(tmp_path / "p.png")
    assert not pic.gray and pic.pixels.shape == (12, 16, 3)
    np.testing.assert_array_equal(D.to_uint8(pic.pixels), np.asarray(pal.convert("RGB")))

    rgba = np.dstack([a, np.full(a.shape[:2], 7, np.uint8)])  # nearly transparent
    pic = D.read_image(_png(tmp_path / "rgba.png", rgba))
    np.testing.assert_array_equal(D.to_uint8(pic.pixels), a)  # alpha dropped, not composited

    Image.fromarray(a).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    pic = D.read_image(tmp_path / "c.jpg")
    assert not pic.gray and pic.pixels.shape == (12, 16, 3)
    assert np.abs(D.to_uint8(pic.pixels).astype(int) - a).mean() < 12  # JPEG is lossy


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_read_exif_orientation(tmp_path, suffix):
    a = np.zeros((4, 6, 3), np.uint8)
    a[0, 0] = 255  # a marker in the top-left corner
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / f"r{suffix}"
    img.save(path, exif=exif, **({"quality": 100} if suffix == ".jpg" else {}))
    pic = D.read_image(path)
    assert pic.pixels.shape == (6, 4, 3)
    assert pic.pixels[0, -1].mean() > 0.8  # the marker moved to the top-right


def test_orient_matches_pillow_for_all_orientations():
    a = _rgb(5, 7)
    for o in range(1, 9):
        img = Image.fromarray(a)
        exif = img.getexif()
        exif[0x0112] = o
        buf = io.BytesIO()
        img.save(buf, format="PNG", exif=exif)
        ref = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))))
        np.testing.assert_array_equal(D._orient(a, o), ref, err_msg=f"orientation {o}")


def test_to_uint8_rounds_and_clips_and_write_png(tmp_path):
    x = np.array([-0.2, 0.0, 0.4 / 255, 0.6 / 255, 1.45 / 255, 254.6 / 255, 1.3], np.float32)
    np.testing.assert_array_equal(D.to_uint8(x), [0, 0, 0, 1, 1, 255, 255])
    y = np.random.default_rng(0).random((7, 5, 3), dtype=np.float32)
    np.testing.assert_array_equal(D.to_uint8(y), np.clip(np.round(y * 255), 0, 255).astype(np.uint8))
    a = _rgb()
    D.write_png(tmp_path / "sub" / "o.png", a)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "sub" / "o.png")), a)
    _one_line_error(D.write_png, tmp_path / "f.png", a.astype(np.float32))


# ---------------------------------------------------------------------------
# bad inputs: one clear line each
# ---------------------------------------------------------------------------
def test_bad_inputs_give_one_line(tmp_path):
    good = _png(tmp_path / "good.png").read_bytes()
    corrupt = bytearray(good)
    mid = len(corrupt) // 2
    corrupt[mid:mid + 16] = b"\xff" * 16
    (tmp_path / "corrupt.png").write_bytes(bytes(corrupt))
    (tmp_path / "garbage.png").write_bytes(b"not an image at all" * 10)
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, format="JPEG", quality=90)
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    for name in ("corrupt.png", "garbage.png", "trunc.jpg"):
        msg = _one_line_error(D.read_image, tmp_path / name)
        assert name in msg and ("replace" in msg or "remove" in msg)

    msg = _one_line_error(D.read_image, tmp_path / "missing.png")
    assert "missing.png" in msg and "does not exist" in msg

    empty = tmp_path / "empty"
    empty.mkdir()
    msg = _one_line_error(D.resolve_datasets, f"mine={empty}", None, [4])
    assert str(empty) in msg and "no images" in msg
    msg = _one_line_error(D.resolve_datasets, f"mine={tmp_path / 'nope'}", str(tmp_path), [4])
    assert "nope" in msg and "--data-root" in msg

    tiny = D.read_image(_png(tmp_path / "tiny.png", _rgb(3, 8)))
    msg = _one_line_error(D.check_size, tiny, 4)
    assert "tiny.png" in msg and "x4" in msg
    item = D.Item("tiny", str(tmp_path / "tiny.png"))
    _one_line_error(D.load_hr, item, 4)
    assert D.load_hr(item, 3).pixels.shape == (3, 6, 3)


def test_name_errors(tmp_path):
    msg = _one_line_error(D.resolve_datasets, "Set6", str(tmp_path), [4])
    assert "did you mean 'Set5'" in msg and "Urban100" in msg
    msg = _one_line_error(D.resolve_datasets, "Urban100", None, [4])
    assert "--data-root" in msg
    msg = _one_line_error(D.resolve_datasets, "Urban100", str(tmp_path), [4])
    assert "Urban100" in msg and str(tmp_path) in msg
    _one_line_error(D.resolve_datasets, "embedded,embedded", None, [4])


# ---------------------------------------------------------------------------
# layouts
# ---------------------------------------------------------------------------
def _tree(root: Path, files: list[str], size: tuple[int, int] = (12, 16)) -> Path:
    for i, f in enumerate(files):
        _png(root / f, _rgb(*size, seed=i))
    return root


def test_detect_and_read_each_layout(tmp_path):
    t = tmp_path
    cases = {
        "folder": _tree(t / "plain", ["a.png", "b.jpg.png", "notes/ignored.png"]),
        "selfexsr": _tree(t / "sx", [f"image_SRF_{s}/img_00{i}_SRF_{s}_{k}.png" for s in (2, 4) for i in (1, 2) for k in ("HR", "LR")]),
        "edsr-benchmark": _tree(t / "edsr", ["HR/baby.png", "HR/bird.png", "LR_bicubic/X2/babyx2.png", "LR_bicubic/X2/birdx2.png"]),
        "realsr-v3": _tree(t / "rsr", [f"{c}/Test/{s}/{c}_00{i}_{k}.png" for c in ("Canon", "Nikon") for s in (2, 4) for i in (1, 2) for k in ("HR", f"LR{s}")]),
        "drealsr": _tree(t / "drsr", ["x4/Test_x4/test_HR/p1_x4.png", "x4/Test_x4/test_LR/p1_x1.png"]),
        "div2krk": _tree(t / "krk", ["gt/img_1_gt.png", "gt/img_2_gt.png", "lr_x2/im_1.png", "lr_x2/im_2.png", "lr_x4/im_1.png", "lr_x4/im_2.png"]),
        "ntire2020": _tree(t / "ntire", ["Corrupted-va-x/0801.png", "Corrupted-va-y/0801.png", "Corrupted-tr-x/1.png"]),
    }
    expect = {"folder": 2, "selfexsr": 2, "edsr-benchmark": 2, "realsr-v3": 8, "drealsr": 1, "div2krk": 2, "ntire2020": 1}
    for layout, root in cases.items():
        assert D.detect_layout(root) == layout
        (ds,) = D.resolve_datasets(f"x={root}", None, [2, 4])
        assert ds.layout == layout and len(ds.items) == expect[layout] and ds.has_hr, layout
        assert len({it.id for it in ds.items}) == len(ds.items)
        for it in ds.items:
            assert Path(it.hr).is_file() and all(Path(p).is_file() for p in it.lr.values())
    sx = D.resolve_datasets(f"x={cases['selfexsr']}", None, [2, 4])[0]
    assert sorted(sx.items[0].lr) == [2, 4] and sorted(sx.items[0].hr_at) == [2, 4]
    assert sorted(D.resolve_datasets(f"x={cases['div2krk']}", None, [2])[0].items[0].lr) == [2, 4]
    rsr = D.resolve_datasets(f"x={cases['realsr-v3']}", None, [2, 4])[0]
    assert len(rsr.items_at(4)) == 4 and {it.id for it in rsr.items_at(4)} >= {"Canon_001-x4", "Nikon_002-x4"}
    assert rsr.items_at(3) == ()
    plain = D.resolve_datasets(f"x={cases['folder']}", None, [4])[0]
    assert [it.id for it in plain.items] == ["a", "b.jpg"]  # nested folder beside images ignored


def test_folder_walks_subfolders_and_lr_only(tmp_path):
    root = _tree(tmp_path / "nested", ["day/a.png", "night/b.png", ".hidden/c.png"])
    (root / "day" / "._a.png").write_bytes(b"\x00\x05AppleDouble")  # macOS metadata, not an image
    (root / "night" / "readme.txt").write_text("not an image")
    assert D.detect_layout(root) == "folder"
    (ds,) = D.resolve_datasets(f"nested={root}", None, [4])
    assert [it.id for it in ds.items] == ["day/a", "night/b"]
    (lr,) = D.resolve_datasets(f"phone=lr:{root}", None, [2, 4])
    assert lr.layout == "lr-only" and not lr.has_hr and lr.items[0].hr is None
    assert sorted(lr.items[0].lr) == [2, 4] and D.load_lr(lr.items[0], 4).pixels.shape == (12, 16, 3)
    _one_line_error(D.load_hr, lr.items[0], 4)
    _one_line_error(D.load_lr, lr.items[0], 3)


def test_div2k_valid_hr_folder_finds_bicubic_lr(tmp_path):
    root = _tree(tmp_path / "DIV2K", ["DIV2K_valid_HR/0801.png", "DIV2K_valid_LR_bicubic/X4/0801x4.png"])
    (ds,) = D.resolve_datasets(f"d={root / 'DIV2K_valid_HR'}", None, [2, 4])
    assert ds.layout == "folder" and ds.items[0].lr == {4: str(root / "DIV2K_valid_LR_bicubic/X4/0801x4.png")}


def test_standard_name_under_data_root_and_count_check(tmp_path):
    _tree(tmp_path / "benchmark" / "Set5", [f"HR/{n}.png" for n in ("baby", "bird", "butterfly", "head", "woman")])
    (ds,) = D.resolve_datasets("set5", str(tmp_path), [4])
    assert ds.name == "Set5" and ds.layout == "edsr-benchmark" and ds.spec.endswith("Set5.toml")
    (tmp_path / "benchmark" / "Set5" / "HR" / "woman.png").unlink()
    msg = _one_line_error(D.resolve_datasets, "Set5", str(tmp_path), [4])
    assert "expects 5" in msg


def test_manifest_hash_follows_content(tmp_path):
    root = _tree(tmp_path / "m", ["a.png", "b.png"])
    h1 = D.resolve_datasets(f"m={root}", None, [2])[0].manifest_hash()
    assert h1 == D.resolve_datasets(f"m={root}", None, [2])[0].manifest_hash()
    _png(root / "b.png", _rgb(seed=9))
    assert D.resolve_datasets(f"m={root}", None, [2])[0].manifest_hash() != h1


def test_selfexsr_shared_set5_and_set14_gray():
    base = requires_shared("datasets")
    set5, set14 = D.resolve_datasets("Set5,Set14", str(base), [2, 3, 4])
    assert set5.layout == "selfexsr" and len(set5.items) == 5 and len(set14.items) == 14
    for it in set5.items:
        assert sorted(it.lr) == [2, 3, 4]
        for s in (2, 3, 4):
            hr, lr = D.load_hr(it, s), D.load_lr(it, s)
            assert hr.pixels.shape == (lr.height * s, lr.width * s, 3)
    bridge = next(it for it in set14.items if it.id == "img_003")
    assert D.read_image(bridge.hr).gray and D.load_lr(bridge, 4).gray
    assert not D.read_image(set14.items[0].hr).gray


# ---------------------------------------------------------------------------
# the embedded default and specs
# ---------------------------------------------------------------------------
def test_embedded_default_matches_spec():
    test, real = D.resolve_datasets(None, None, [2, 4])
    assert (test.name, test.has_hr, len(test.items)) == ("embedded", True, 6)
    assert (real.name, real.layout, real.has_hr, len(real.items)) == ("embedded-real", "lr-only", False, 3)
    spec = tomllib.loads((D.specs_dir() / "embedded.toml").read_text())
    by_name = {img["skimage"]: img for img in spec["images"]}
    assert set(by_name) == set(D.EMBEDDED_TEST) | set(D.EMBEDDED_REAL)
    for it in test.items + real.items:
        path = D.skimage_file(it.id)
        entry = by_name[it.id]
        assert path.name == entry["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        pic = D.read_image(it.hr or it.lr[4])
        assert (pic.width, pic.height) == tuple(entry["size"]) and pic.gray == entry["gray"]
    assert [it.id for it in test.items if D.read_image(it.hr).gray] == ["camera"]
    assert D.load_hr(test.items[1], 4).pixels.shape == (300, 448, 3)  # chelsea mod-cropped


def test_every_spec_is_complete():
    specs = D.load_specs()
    assert {"Set5", "Set14", "B100", "Urban100", "Manga109", "DIV2K-val", "DIV2KRK", "RealSR", "DRealSR"} <= {s.name for s in specs}
    for s in specs:
        assert s.expected_count > 0 and s.source and s.licence and s.folders, s.name
        assert set(s.layouts) <= set(D.LAYOUTS), s.name
    assert D._find_spec("BSD100").name == "B100"


# ---------------------------------------------------------------------------
# training pools and the unpaired split
# ---------------------------------------------------------------------------
def test_training_pools_deterministic_and_disjoint():
    a = D.training_pool(3, 32, seed=5)
    b = D.training_pool(3, 32, seed=5)
    t = D.training_pool(3, 32, seed=5, kind="target")
    assert [i for i, _ in a] == ["deadleaves-source-5-0", "deadleaves-source-5-1", "deadleaves-source-5-2"]
    for (ia, xa), (ib, xb) in zip(a, b):
        assert ia == ib and np.array_equal(xa, xb)
        assert xa.shape == (32, 32, 3) and xa.dtype == np.float32 and 0 <= xa.min() and xa.max() <= 1
    assert not {i for i, _ in a} & {i for i, _ in t}
    digests = {x.tobytes() for _, x in a}
    assert len(digests) == 3 and not digests & {x.tobytes() for _, x in t}
    assert not np.array_equal(a[0][1], D.training_pool(1, 32, seed=6)[0][1])
    # not flat: many leaves, antialiased edges (intermediate values)
    assert a[0][1].std() > 0.1 and len(np.unique(a[0][1][..., 0])) > 50
