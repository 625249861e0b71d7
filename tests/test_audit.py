"""The leakage audit compares content, not names: copies, re-encodings, crops, downscales
and one scene on both sides are refused with one line naming both files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.audit import LeakError, audit_pools
from bench.data import load_dataset
from bench.pools import FilePool
from tests._shared import requires_shared, smooth_images


def _pool(folder: Path, name: str = "mine") -> FilePool:
    files = sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg"))
    return FilePool(files, [p.name for p in files], name=name)


@pytest.fixture()
def layout(tmp_path):
    test = smooth_images(tmp_path / "test", [(96, 96)] * 3, seed=2)
    src = smooth_images(tmp_path / "src", [(96, 96)] * 3, seed=1)
    tgt = smooth_images(tmp_path / "tgt", [(24, 24)] * 3, seed=3)
    return tmp_path, load_dataset("t", test, [4]), src, tgt


def _refused(pools, ds, cross=()) -> str:
    with pytest.raises(LeakError) as exc:
        audit_pools(pools, [ds], [4], cross=cross)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_distinct_images_pass_and_the_summary_says_what_was_compared(layout):
    tmp, ds, src, tgt = layout
    rep = audit_pools({"source mine": _pool(src), "target phone": _pool(tgt, "phone")}, [ds], [4],
                      cross=[("source mine", "target phone")], cache_dir=tmp / "cache")
    assert rep.n_training == 6 and rep.n_test == 3 and rep.n_cross == 1
    assert rep.closest > rep.threshold and "no copy or near-duplicate" in rep.summary()


def test_a_test_image_under_another_name_is_refused(layout):
    tmp, ds, src, _ = layout
    (src / "renamed.png").write_bytes((tmp / "test" / "im1.png").read_bytes())
    msg = _refused({"source mine": _pool(src)}, ds)
    assert "renamed.png" in msg and "im1.png" in msg and "a copy" in msg


@pytest.mark.parametrize("edit", ["jpeg q90", "crop 2 px"])
def test_a_re_encoded_or_cropped_test_image_is_refused(layout, edit):
    tmp, ds, src, _ = layout
    im = Image.open(tmp / "test" / "im2.png")
    if edit == "jpeg q90":
        im.save(src / "holiday.jpg", quality=90)
    else:
        im.crop((2, 2, 96, 96)).save(src / "holiday.png")
    msg = _refused({"source mine": _pool(src)}, ds)
    assert "holiday" in msg and "im2.png" in msg and "near-duplicate" in msg


def test_a_test_lr_image_in_the_target_folder_is_refused(layout):
    tmp, ds, _, tgt = layout
    Image.open(tmp / "test" / "im0.png").resize((24, 24), Image.BICUBIC).save(tgt / "phone_017.png")
    msg = _refused({"target phone": _pool(tgt, "phone")}, ds)
    assert "phone_017.png" in msg and "im0.png" in msg


def test_one_scene_in_source_and_target_is_refused_with_the_ntire_fix(layout):
    tmp, ds, src, tgt = layout
    clean = np.asarray(Image.open(src / "im1.png"), np.float32)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 8, clean.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(tgt / "Flickr2K_000123.png")  # corrupted copy of a source scene
    pools = {"source DF2K": _pool(src, "DF2K"), "target NTIRE2020-T1 target": _pool(tgt, "NTIRE2020-T1 target")}
    msg = _refused(pools, ds, cross=[("source DF2K", "target NTIRE2020-T1 target")])
    assert "im1.png" in msg and "Flickr2K_000123.png" in msg and "use DIV2K-train" in msg


def test_features_are_cached_by_content(layout):
    tmp, ds, src, _ = layout

    class Counting(FilePool):
        loads = 0

        def _load(self, i):
            Counting.loads += 1
            return super()._load(i)

    files = sorted(src.glob("*.png"))
    audit_pools({"s": Counting(files, [f.name for f in files])}, [ds], [4], cache_dir=tmp / "c")
    first = Counting.loads
    audit_pools({"s": Counting(files, [f.name for f in files])}, [ds], [4], cache_dir=tmp / "c")
    assert first == 3 and Counting.loads == first  # the second audit decodes nothing
    Image.open(files[0]).rotate(90).save(files[0])  # edited content: read again
    audit_pools({"s": Counting(files, [f.name for f in files])}, [ds], [4], cache_dir=tmp / "c")
    assert Counting.loads == first + 3


def test_set14_img_006_is_flagged_as_a_crop_of_set5_img_004_and_nothing_else_is():
    shared = requires_shared("datasets")
    set5 = load_dataset("Set5", shared / "Set5", [4])
    hr14 = sorted((shared / "Set14" / "image_SRF_4").glob("*_HR.png"))
    pool = FilePool(hr14, [f.name for f in hr14], name="Set14 as source")
    with pytest.raises(LeakError) as exc:
        audit_pools({"source Set14": pool}, [set5], [4])
    assert "img_006" in str(exc.value) and "img_004" in str(exc.value)
    rest = [f for f in hr14 if "img_006" not in f.name]
    rep = audit_pools({"source Set14": FilePool(rest, [f.name for f in rest])}, [set5], [4])
    assert rep.closest > rep.threshold
