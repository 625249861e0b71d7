"""Standard training sets: miniature copies of each layout resolve to the right roles."""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import training_sets as ts
from bench.data import DataError, DataWarning, _content_hash, load_dataset, read_image, resolve_datasets
from bench.pools import FilePool


def pngs(folder: Path, names, seed: int = 0, size: int = 8) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for n in names:
        p = folder / n
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


def ids(pool) -> list[str]:
    return list(pool.ids)


@pytest.fixture()
def partial():
    """Miniature sets are partial downloads: allowed, and warned about."""
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        yield got


# -- specs ----------------------------------------------------------------
def test_every_spec_parses_and_names_its_roles():
    names = {sp.name for sp in ts.load_training_specs()}
    assert names == {"DIV2K-train", "Flickr2K", "DF2K", "NTIRE2020-T1", "NTIRE2020-T2", "AIM2019-T2",
                     "RealSR-V3", "DRealSR", "DPED"}
    for sp in ts.load_training_specs():
        assert sp.roles and set(sp.roles) <= set(ts.ROLES) and sp.source and sp.licence and sp.official_names
        assert ("source" in sp.roles) != bool(sp.no_source) or sp.compose
    assert ts.find_training_spec("div2k_train_hr").name == "DIV2K-train"
    assert ts.find_training_spec("nope") is None
    rows = ts.list_training_sets()
    assert any(r["training set"] == "NTIRE2020-T1" and "Corrupted-tr-x (2,650)" in r["roles"] for r in rows)


def test_unknown_name_suggests_one():
    with pytest.raises(DataError, match="did you mean 'DIV2K-train'"):
        ts.resolve_source("DIV2K-trian", "/nowhere", allow_partial=False)


# -- source-only sets ----------------------------------------------------------
def test_div2k_train_count_refused_in_one_line_and_allowed_partial(tmp_path, partial):
    pngs(tmp_path / "DIV2K_train_HR", ["0001.png", "0002.png", "0003.png"])
    with pytest.raises(DataError) as exc:
        ts.resolve_source("DIV2K-train", str(tmp_path), allow_partial=False)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg == (f"training set DIV2K-train at {tmp_path / 'DIV2K_train_HR'} has 3 images, its spec expects 800; "
                   "complete the download, or pass --allow-partial to train on what is there (the count is then recorded)")
    pool = ts.resolve_source("DIV2K-train", str(tmp_path), allow_partial=True)
    assert pool.name == "DIV2K-train source" and ids(pool) == ["0001.png", "0002.png", "0003.png"]
    assert [w.category for w in partial] == [DataWarning]
    assert pool.load(0).dtype == np.float32 and pool.load(0).shape == (8, 8, 3)


def test_full_count_passes_without_warning(tmp_path, monkeypatch):
    pngs(tmp_path / "DIV2K" / "DIV2K_train_HR", [f"{i:04d}.png" for i in range(1, 6)], size=4)
    sp = ts.find_training_spec("DIV2K-train")
    role = sp.roles["source"]
    monkeypatch.setitem(sp.roles, "source", type(role)(role.folders, role.match, {0: 5}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pool = ts.resolve_source("DIV2K-train", str(tmp_path), allow_partial=False)
    assert len(pool) == 5 and pool.label(0).endswith("DIV2K/DIV2K_train_HR/0001.png")


def test_missing_folder_names_what_was_looked_for(tmp_path):
    with pytest.raises(DataError, match=r"training set Flickr2K not found under --data-root .*Flickr2K_HR, "
                                        r"Flickr2K/Flickr2K_HR.*--source Flickr2K=PATH"):
        ts.resolve_source("Flickr2K", str(tmp_path), allow_partial=True)
    with pytest.raises(DataError, match="--data-root, which is not set"):
        ts.resolve_source("Flickr2K", None, allow_partial=True)


def test_df2k_concatenates_div2k_and_flickr2k(tmp_path, partial):
    pngs(tmp_path / "DIV2K_train_HR", ["0001.png", "0002.png"])
    pngs(tmp_path / "Flickr2K" / "Flickr2K_HR", ["000001.png"], seed=1)
    pool = ts.resolve_source("DF2K", str(tmp_path), allow_partial=True)
    assert pool.name == "DF2K source" and ids(pool) == ["0001.png", "0002.png", "000001.png"]
    # its own DF2K_HR folder wins when present
    pngs(tmp_path / "DF2K_HR", ["a.png"])
    assert ids(ts.resolve_source("DF2K", str(tmp_path), allow_partial=True)) == ["a.png"]


def test_name_path_and_concatenation(tmp_path, partial):
    pngs(tmp_path / "DIV2K_train_HR", ["0001.png"])
    mine = tmp_path / "mine"
    pngs(mine / "sub", ["x.png", "y.jpg"])
    pool = ts.resolve_source(f"DIV2K-train,phone={mine}", str(tmp_path), allow_partial=True)
    assert len(pool) == 3 and ids(pool)[1:] == ["sub/x.png", "sub/y.jpg"]
    assert pool.parts[1].name == "phone" and pool.parts[0].name == "DIV2K-train source"
    assert isinstance(ts.resolve_source("phone=mine", str(tmp_path), allow_partial=False), FilePool)
    with pytest.raises(DataError, match="does not exist"):
        ts.resolve_source("x=/no/such/dir", None, allow_partial=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        ts.resolve_source(f"e={tmp_path / 'empty'}", None, allow_partial=False)
    with pytest.raises(DataError, match="twice"):
        ts.resolve_source(f"a={mine},A={mine}", None, allow_partial=False)


def test_unreadable_image_is_one_line(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    pool = ts.resolve_source(f"bad={d}", None, allow_partial=False)
    with pytest.raises(DataError, match="cannot decode image .*broken.png") as exc:
        pool.load(0)
    assert "\n" not in str(exc.value)


# -- NTIRE 2020 ----------------------------------------------------------
def ntire(root: Path, *, train: bool = True) -> Path:
    pngs(root / "Corrupted-va-x", ["0801.png", "0802.png"], seed=5)
    pngs(root / "Corrupted-va-y", ["0801.png", "0802.png"], seed=6, size=32)
    if train:
        pngs(root / "Corrupted-tr-x", ["Flickr2K_000001.png", "Flickr2K_000002.png"], seed=7)
        pngs(root / "Corrupted-tr-y", ["0001.png"], seed=8)
    return root


def test_ntire2020_t1_roles(tmp_path, partial):
    ntire(tmp_path / "NTIRE2020-RWSR")
    got = ts.resolve_training_target("NTIRE2020-T1", str(tmp_path), scale=4, allow_partial=True)
    assert got.name == "NTIRE2020-T1" and got.pairs is None and "academic" in got.licence
    assert got.target.name == "NTIRE2020-T1 target"
    assert ids(got.target) == ["Corrupted-tr-x/Flickr2K_000001.png", "Corrupted-tr-x/Flickr2K_000002.png"]
    src = ts.resolve_source("NTIRE2020-T1", str(tmp_path), allow_partial=True)
    assert src.name == "NTIRE2020-T1 source" and ids(src) == ["Corrupted-tr-y/0001.png"]
    # x4 only: no target role at x2
    assert ts.resolve_training_target("NTIRE2020-T1", str(tmp_path), scale=2, allow_partial=True) is None
    with pytest.raises(DataError, match="has 2 images, its spec expects 2650"):
        ts.resolve_training_target("NTIRE2020-T1", str(tmp_path), scale=4, allow_partial=False)


def test_ntire2020_t1_test_alias_reads_the_valid_split(tmp_path):
    ntire(tmp_path / "NTIRE2020")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # 2 of 100 valid images
        (ds,) = resolve_datasets("NTIRE2020-T1", str(tmp_path), [4])
    assert ds.name == "NTIRE2020" and [i.id for i in ds.items] == ["0801", "0802"] and ds.has_hr
    assert ts.matching_training_set(ds) == "NTIRE2020-T1"
    # the runner passes the test set's own root as NAME=ROOT
    with pytest.warns(DataWarning, match="expects 2650"):
        got = ts.resolve_training_target(f"NTIRE2020-T1={ds.root}", None, scale=4, allow_partial=True)
    assert len(got.target) == 2


def test_ntire_without_train_split_matches_nothing(tmp_path):
    root = ntire(tmp_path / "NTIRE2020", train=False)
    ds = load_dataset("NTIRE2020", root, [4])
    assert ts.matching_training_set(ds) is None
    with pytest.raises(DataError, match=r"has no target folder \(looked for Corrupted-tr-x"):
        ts.resolve_training_target("NTIRE2020-T1", str(tmp_path), scale=4, allow_partial=True)


def test_ntire2020_t2(tmp_path, partial):
    root = tmp_path / "NTIRE2020"
    pngs(root / "DPEDiphone-va", ["1.png"])
    pngs(root / "DPEDiphone-tr-x", ["a.png", "b.png"])
    ds = load_dataset("NTIRE2020", root, [4])
    assert ts.matching_training_set(ds) == "NTIRE2020-T2"
    got = ts.resolve_training_target("NTIRE2020-T2", str(tmp_path), scale=4, allow_partial=False)
    assert ids(got.target) == ["DPEDiphone-tr-x/a.png", "DPEDiphone-tr-x/b.png"]
    with pytest.raises(DataError, match="no DPEDiphone-tr-y.*--source DIV2K-train"):
        ts.resolve_source("NTIRE2020-T2", str(tmp_path), allow_partial=True)


def test_aim2019_and_dped(tmp_path, partial):
    aim = tmp_path / "AIM2019"
    pngs(aim / "TrainingSource", ["s1.png"])
    pngs(aim / "TrainingTarget", ["t1.png"])
    got = ts.resolve_training_target("AIM2019-T2", str(tmp_path), scale=4, allow_partial=False)  # warned, not refused
    assert ids(got.target) == ["TrainingSource/s1.png"]
    assert ids(ts.resolve_source("AIM2019", str(tmp_path), allow_partial=False)) == ["TrainingTarget/t1.png"]
    pngs(tmp_path / "dped" / "iphone" / "training_data" / "iphone", ["0.jpg", "1.jpg"])
    pngs(tmp_path / "dped" / "iphone" / "training_data" / "canon", ["0.jpg"])
    got = ts.resolve_training_target("DPED", str(tmp_path), scale=2, allow_partial=False)
    assert len(got.target) == 2 and got.pairs is None
    with pytest.raises(DataError, match="DPED has no source role"):
        ts.resolve_source("DPED", str(tmp_path), allow_partial=True)


# -- real paired sets ------------------------------------------------------
def realsr(root: Path, *, train: bool = True) -> Path:
    for cam in ("Canon", "Nikon"):
        for split, n in (("Test", 1), ("Train", 2 if train else 0)):
            for s in (2, 4):
                for k in range(n):
                    stem = f"{cam}_{k + (100 if split == 'Test' else 1):03d}"
                    pngs(root / cam / split / str(s), [f"{stem}_HR.png"], seed=k, size=16)
                    pngs(root / cam / split / str(s), [f"{stem}_LR{s}.png"], seed=k + 50, size=16 // s)
    return root


def test_realsr_pairs_aligned_by_name_never_test(tmp_path, partial):
    root = realsr(tmp_path / "RealSR(V3)")
    ds = load_dataset("RealSR", root, [4])
    assert ts.matching_training_set(ds) == "RealSR-V3"
    got = ts.resolve_training_target(f"RealSR-V3={root}", None, scale=4, allow_partial=False)
    assert got.target.name == "RealSR-V3 target"
    assert ids(got.target) == ["Canon/Train/4/Canon_001_LR4.png", "Canon/Train/4/Canon_002_LR4.png",
                               "Nikon/Train/4/Nikon_001_LR4.png", "Nikon/Train/4/Nikon_002_LR4.png"]
    hr, lr = got.pairs
    assert len(hr) == len(lr) == 4
    for a, b in zip(hr.ids, lr.ids):
        assert a.replace("_HR", "") == b.replace("_LR4", "") and "Test" not in a + b
    assert hr.load(0).shape == (16, 16, 3) and lr.load(0).shape == (4, 4, 3)
    assert ts.resolve_training_target("RealSR-V3", str(tmp_path), scale=2, allow_partial=False) is not None
    with pytest.raises(DataError, match="RealSR-V3 has no source role"):
        ts.resolve_source("RealSR-V3", str(tmp_path), allow_partial=True)


def test_realsr_without_train_split(tmp_path):
    root = realsr(tmp_path / "RealSR", train=False)
    assert ts.matching_training_set(load_dataset("RealSR", root, [4])) is None


def test_realsr_missing_lr_partner(tmp_path, partial):
    root = realsr(tmp_path / "RealSR")
    (root / "Nikon" / "Train" / "4" / "Nikon_002_LR4.png").unlink()
    with pytest.raises(DataError, match="Nikon_002_HR.png has no LR partner"):
        ts.resolve_training_target(f"RealSR-V3={root}", None, scale=4, allow_partial=True)


def drealsr(root: Path, *, train: bool = True) -> Path:
    for split, n in (("Test", 1), ("Train", 3 if train else 0)):
        d = root / "x4" / f"{split}_x4"
        for k in range(n):
            pngs(d / f"{split.lower()}_HR", [f"img{k}_x4.png"], seed=k, size=16)
            pngs(d / f"{split.lower()}_LR", [f"img{k}_x1.png"], seed=k + 9, size=4)
    return root


def test_drealsr(tmp_path, partial):
    root = drealsr(tmp_path / "DRealSR")
    ds = load_dataset("DRealSR", root, [4])
    assert ds.layout == "drealsr" and ts.matching_training_set(ds) == "DRealSR"
    got = ts.resolve_training_target("DRealSR", str(tmp_path), scale=4, allow_partial=False)  # non-strict counts
    assert [w.category for w in partial] and all("840" in str(w.message) for w in partial)
    assert ids(got.target) == [f"x4/Train_x4/train_LR/img{k}_x1.png" for k in range(3)]
    hr, lr = got.pairs
    assert [i.split("/")[-1] for i in hr.ids] == [f"img{k}_x4.png" for k in range(3)]
    assert [i.split("/")[-1] for i in lr.ids] == [f"img{k}_x1.png" for k in range(3)]
    # the root may be one x<s> folder, as the test loader allows
    got = ts.resolve_training_target(f"DRealSR={root / 'x4'}", None, scale=4, allow_partial=True)
    assert len(got.target) == 3
    assert ts.matching_training_set(load_dataset("DRealSR", drealsr(tmp_path / "D2", train=False), [4])) is None


def test_lr_folder_target(tmp_path):
    pngs(tmp_path / "phone", ["a.jpg"])
    got = ts.resolve_training_target(f"lr:{tmp_path / 'phone'}", None, scale=4, allow_partial=False)
    assert got.pairs is None and got.licence == "" and ids(got.target) == ["a.jpg"]
    assert ts.resolve_training_target("DIV2K-train", str(tmp_path), scale=4, allow_partial=True) is None


# -- LMDB --------------------------------------------------------------------
def basicsr_lmdb(folder: Path, files: list[Path]) -> Path:
    """An LMDB as BasicSR's make_lmdb_from_imgs writes it: PNG bytes under the stem, and
    a meta_info.txt line per image."""
    lmdb = pytest.importorskip("lmdb", reason="lmdb not installed (pip install 'unpaired-sr-bench[lmdb]')")
    env = lmdb.open(str(folder), map_size=1 << 24)
    lines = []
    with env.begin(write=True) as txn:
        for f in files:
            txn.put(f.stem.encode("ascii"), f.read_bytes())
            h, w = Image.open(f).size[::-1]
            lines.append(f"{f.stem}.png ({h},{w},3) 1")
    env.close()
    (folder / "meta_info.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_lmdb_pool_matches_the_pngs_and_pickles(tmp_path, partial):
    files = pngs(tmp_path / "png", ["0001.png", "0002.png"])
    basicsr_lmdb(tmp_path / "DIV2K_train_HR.lmdb", files)
    pool = ts.resolve_source("DIV2K-train", str(tmp_path), allow_partial=True)
    from bench.pools import LmdbPool

    assert isinstance(pool, LmdbPool) and ids(pool) == ["0001", "0002"]
    assert pool.label(1) == f"{tmp_path / 'DIV2K_train_HR.lmdb'}:0002"
    for i, f in enumerate(files):
        assert np.array_equal(pool.load(i), read_image(f).pixels)
        assert pool.digest(i) == _content_hash(str(f))
    clone = pickle.loads(pickle.dumps(pool))
    assert clone._env is None and np.array_equal(clone.load(1), pool.load(1))
    assert clone.manifest() == pool.manifest()
    # NAME=PATH takes an .lmdb folder too
    assert len(ts.resolve_source(f"mine={tmp_path / 'DIV2K_train_HR.lmdb'}", None, allow_partial=False)) == 2
