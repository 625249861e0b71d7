"""A result's identity is its content: no cell is overwritten by another method, and no
stale number is reused after the data, the suite, the seed, the code or the budget changed."""
from __future__ import annotations

import importlib
import re
import sqlite3
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.adapter import BenchError, CheckpointError, resolve_variant
from bench.runner import Runner, RunSpec
from bench.store import CellKey, Store
from bench.tables import markdown, summarize
from tests._shared import requires_shared, smooth_images


def _images(folder: Path, n: int, seed: int) -> Path:
    return smooth_images(folder, [(40, 48)] * n, seed)


def _run(out: Path, **kw) -> tuple[Runner, dict]:
    """One run; returns the runner and its plan line as numbers (planned, already, to compute)."""
    lines: list[str] = []
    spec = RunSpec(**{"metrics": ("psnr",), "timing": False, "jobs": 1, "device": "cpu", "out": str(out), **kw})
    runner = Runner(spec, log=lines.append)
    code = runner.run()
    runner.store.close()
    plan = next(x for x in lines if "cells planned" in x)
    planned, already, todo = map(int, re.match(r"(\d+) cells planned, (\d+) already .*, (\d+) to compute", plan).groups())
    return runner, {"code": code, "planned": planned, "already": already, "todo": todo, "log": lines}


def _module(tmp_path: Path, monkeypatch, name: str, body: str, helper: str = "FACTOR = 1.0\n"):
    """A third-party adapter module ``name`` (and its helper module) importable from tmp_path."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    (tmp_path / f"{name}_helper.py").write_text(helper)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


NEAREST = '''
    import torch
    from bench.adapter import Method, MethodInfo
    import {name}_helper as helper

    class Nearest(Method):
        info = MethodInfo(name="{method}", title="nearest", citation="-", family="classical", scales=(4,))

        def upscale(self, lr):
            up = torch.nn.functional.interpolate(lr, scale_factor=self.scale, mode="nearest")
            return (up * helper.FACTOR).clamp(0, 1)
'''


def test_two_classical_methods_keep_their_own_rows_in_either_order(tmp_path, monkeypatch):
    data = _images(tmp_path / "d", 2, 0)
    mod = _module(tmp_path, monkeypatch, "nn_" + uuid.uuid4().hex[:8],
                  NEAREST.format(name="{name}", method="my-nearest"))
    (tmp_path / f"{mod}.py").write_text((tmp_path / f"{mod}.py").read_text().replace("{name}", mod))
    ds = f"mine={data}"
    for first, second in (("bicubic", "my-nearest"), ("my-nearest", "bicubic")):
        out = tmp_path / f"out-{first}"
        _, a = _run(out, methods=(first,), adapters=(f"{mod}:Nearest",) if first != "bicubic" else (),
                    datasets=ds, suites="bicubic")
        assert a["todo"] == 1
        _, b = _run(out, methods=(second,), adapters=(f"{mod}:Nearest",), datasets=ds, suites="bicubic")
        # --adapter adds its method to the run: the first method's cell is "already", the second is computed
        # (before content keys, bicubic and my-nearest shared one key and the second was reported as done)
        assert b["todo"] == 1, b
        s = summarize(Store(out / "results.sqlite")).summary
        assert sorted(s.method) == ["bicubic", "my-nearest"]
        assert s.value.nunique() == 2

    # an edited helper module (not the class) makes the adapter's cells stale
    out = tmp_path / "out-bicubic"
    _, same = _run(out, methods=("my-nearest",), adapters=(f"{mod}:Nearest",), datasets=ds, suites="bicubic")
    assert same["todo"] == 0
    (tmp_path / f"{mod}_helper.py").write_text("FACTOR = 0.5\n")
    importlib.reload(sys.modules[f"{mod}_helper"])
    importlib.reload(sys.modules[mod])
    _, edited = _run(out, methods=("my-nearest",), adapters=(f"{mod}:Nearest",), datasets=ds, suites="bicubic")
    assert edited["todo"] == 1
    s = summarize(Store(out / "results.sqlite")).summary
    assert len(s[s.method == "my-nearest"]) == 1  # the table shows the latest content only


def test_edited_images_suites_and_seeds_recompute_exactly_their_cells(tmp_path):
    a, b = _images(tmp_path / "a", 2, 1), _images(tmp_path / "b", 2, 2)
    suites_file = tmp_path / "suites.toml"
    toml = ('[suite.cam]\nsteps = [ {{ op = "blur", kernel = "iso", sigma = {s} }}, {{ op = "resize", '
            'method = "matlab" }} ]\n')
    suites_file.write_text(toml.format(s=2.0))
    out = tmp_path / "out"
    kw = dict(methods=("bicubic",), datasets=f"a={a},b={b}", suites="bicubic;noise:sigma=15;cam",
              suite_file=str(suites_file))
    _, first = _run(out, **kw)
    assert first["planned"] == 6 and first["todo"] == 6 and first["code"] == 0
    _, again = _run(out, **kw)
    assert again["todo"] == 0  # an unchanged rerun computes nothing

    # one image of dataset a edited: a's three cells, none of b's
    img = Image.open(a / "im0.png")
    Image.fromarray(255 - np.asarray(img)).save(a / "im0.png")
    runner, edited = _run(out, **kw)
    assert edited["todo"] == 3
    assert {k.dataset for k in runner.planned} == {"a", "b"}
    recent = {(c["dataset"], c["suite"]) for c in Store(out / "results.sqlite").cells() if c["run_id"] == runner.run_id}
    assert recent == {("a", "bicubic"), ("a", "noise:sigma=15"), ("a", "cam")}

    # a TOML suite's steps edited (same name): its LR and its cells, on both datasets
    lr_before = set((out / "cache" / "lr").rglob("*.png"))
    suites_file.write_text(toml.format(s=3.5))
    runner, suite_edit = _run(out, **kw)
    assert suite_edit["todo"] == 2
    assert len(set((out / "cache" / "lr").rglob("*.png")) - lr_before) == 4  # new LR images, 2 per dataset
    s = summarize(Store(out / "results.sqlite"), runner.planned).summary
    blurred = s[s.suite == "cam"].set_index("dataset").value
    assert (blurred < s[s.suite == "bicubic"].set_index("dataset").value).all()

    # another run seed: only the suite that draws (noise) is recomputed for a classical method
    runner, seeded = _run(out, seed=1, **kw)
    assert seeded["todo"] == 2
    assert {k.suite for k in runner.planned if k.seed is not None} == {"noise:sigma=15"}


TINY_FIT = '''
    import torch
    from bench.adapter import Budget, FitReport, Method, MethodInfo

    class TinyFit(Method):
        info = MethodInfo(name="tiny-fit", title="one learned gain", citation="-", family="baseline", scales=(4,))
        code_version = "1"
        budgets = {"smoke": Budget(iterations=2, batch_size=1, patch_size=8, lr=1e-3)}

        def __init__(self, scale, context=None, **kw):
            super().__init__(scale, context, **kw)
            self.net = torch.nn.Conv2d(3, 3, 1)
            torch.nn.init.dirac_(self.net.weight)
            torch.nn.init.zeros_(self.net.bias)

        def network(self):
            return self.net

        def fit(self, data, budget):
            with torch.no_grad():
                self.net.bias.fill_(budget.lr)
            return FitReport(iterations=budget.iterations)

        def upscale(self, lr):
            with torch.no_grad():
                up = torch.nn.functional.interpolate(lr, scale_factor=self.scale, mode="nearest")
                return self.net(up).clamp(0, 1)
'''


def test_code_version_and_budget_lr_refit(tmp_path, monkeypatch):
    from bench.adapter import Budget

    mod = _module(tmp_path, monkeypatch, "tf_" + uuid.uuid4().hex[:8], TINY_FIT)
    data = _images(tmp_path / "d", 1, 3)
    kw = dict(methods=("tiny-fit",), adapters=(f"{mod}:TinyFit",), datasets=f"d={data}", suites="bicubic",
              profile="smoke")
    out = tmp_path / "out"
    _, first = _run(out, **kw)
    assert first["todo"] == 1 and sum("fitting tiny-fit" in x for x in first["log"]) == 1
    _, again = _run(out, **kw)
    assert again["todo"] == 0 and not any("fitting" in x for x in again["log"])
    cls = resolve_variant("tiny-fit")[0]
    monkeypatch.setattr(cls, "code_version", "2")
    _, bumped = _run(out, **kw)
    assert bumped["todo"] == 1 and any("fitting tiny-fit" in x for x in bumped["log"])
    monkeypatch.setattr(cls, "budgets", {"smoke": Budget(iterations=2, batch_size=1, patch_size=8, lr=2e-3)})
    _, lr = _run(out, **kw)
    assert lr["todo"] == 1 and any("fitting tiny-fit" in x for x in lr["log"])


def _old_store(path: Path) -> None:
    """A schema-1 store as b704a58 wrote it (cells keyed by names)."""
    db = sqlite3.connect(path)
    db.executescript("""
    CREATE TABLE runs (run_id TEXT PRIMARY KEY, started REAL, finished REAL, spec_json TEXT, spec_hash TEXT,
        provenance_json TEXT, status TEXT);
    CREATE TABLE variants (variant TEXT PRIMARY KEY, method TEXT, profile TEXT, scale INTEGER, source TEXT,
        domain TEXT, budget TEXT, sha256 TEXT, wall_s REAL, info_json TEXT);
    CREATE TABLE cells (variant TEXT, dataset TEXT, suite TEXT, scale INTEGER, protocol TEXT, method TEXT,
        status TEXT, error TEXT, n_images INTEGER, wall_s REAL, run_id TEXT, metrics TEXT,
        PRIMARY KEY (variant, dataset, suite, scale, protocol));
    CREATE TABLE records (variant TEXT, dataset TEXT, suite TEXT, scale INTEGER, protocol TEXT, image TEXT,
        metric TEXT, value REAL, method TEXT, run_id TEXT, PRIMARY KEY (variant, dataset, suite, scale, protocol,
        image, metric));
    INSERT INTO runs VALUES ('old', 1, 2, '{}', 'h', '{}', 'done');
    INSERT INTO variants VALUES ('-', 'bicubic', 'quick', 4, 'classical', '', '', '', NULL, '{}');
    INSERT INTO cells VALUES ('-', 'Set5', 'bicubic', 4, 'paper-y', 'bicubic', 'done', NULL, 2, 0.1, 'old',
        '["psnr"]');
    INSERT INTO records VALUES ('-', 'Set5', 'bicubic', 4, 'paper-y', 'a', 'psnr', 28.0, 'bicubic', 'old');
    INSERT INTO records VALUES ('-', 'Set5', 'bicubic', 4, 'paper-y', 'b', 'psnr', 30.0, 'bicubic', 'old');
    """)
    db.commit()
    db.close()


def test_old_store_migrates_with_records_intact_and_is_never_reused(tmp_path):
    path = tmp_path / "results.sqlite"
    _old_store(path)
    logs: list[str] = []
    s = Store(path, log=logs.append)
    assert any("migrated" in x for x in logs)
    v = summarize(s).summary
    assert list(v.value) == [29.0] and list(v.n_images) == [2]
    # the migrated cell answers no content key
    assert s.done_metrics(CellKey("bicubic", "-", "Set5", "bicubic", 4, "paper-y", dataset_digest="d")) == set()
    s.close()
    assert summarize(Store(path)).summary.value.tolist() == [29.0]  # a second open does not migrate twice


def test_newer_store_is_refused_in_one_line(tmp_path):
    path = tmp_path / "results.sqlite"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(BenchError) as e:
        Store(path)
    msg = str(e.value)
    assert "\n" not in msg and "newer" in msg and "--out" in msg


def test_aniso_release_needs_the_aniso_variant(tmp_path):
    fixture = requires_shared("reference", "official", "fixtures", "dasr-wang", "model_600.pt")
    ckpt = tmp_path / "experiment" / "blindsr_x4_bicubic_aniso" / "model" / "model_600.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(fixture.read_bytes())
    data = _images(tmp_path / "d", 1, 4)
    base = dict(datasets=f"d={data}", suites="bicubic", profile="paper", out=str(tmp_path / "out"),
                metrics=("psnr",), timing=False)
    with pytest.raises(CheckpointError) as e:
        Runner(RunSpec(methods=("dasr-wang",), checkpoints=(("dasr-wang", str(ckpt)),), **base)).run()
    assert "dasr-wang.aniso" in str(e.value) and "\n" not in str(e.value)
    # with the variant named, the checkpoint is accepted and loads into the aniso network
    from bench.adapter import MethodContext, check_checkpoint_variant

    check_checkpoint_variant("dasr-wang.aniso", ckpt)
    # the fixture is the release format at reduced depth: build the variant at that depth
    cls, variant = resolve_variant("dasr-wang.aniso")
    m = cls(4, MethodContext(profile="paper", variant="aniso"), **dict(variant.options), n_groups=2, n_blocks=2)
    m.load_checkpoint(ckpt)
    assert m.degradation.kind == "aniso"


def _features_file(path: Path) -> Path:
    """A stand-in VGG19 trunk file (random weights, torchvision's key names)."""
    from torchvision.models import vgg as tv_vgg

    torch.manual_seed(0)
    trunk = tv_vgg.make_layers(tv_vgg.cfgs["E"])
    torch.save({f"features.{k}": v for k, v in trunk.state_dict().items()}, path)
    return path


def test_weights_dir_reaches_the_perceptual_loss(tmp_path):
    from bench.adapter import MethodContext, create_method
    from bench.train import VGG19_FILE, PerceptualLoss

    wdir = tmp_path / "w"
    wdir.mkdir()
    f = _features_file(wdir / VGG19_FILE)
    # the real file's sha256 starts with dcbb9e9d; this one does not: refused with one line
    m = create_method("fssr", 4, MethodContext(profile="smoke", weights_dir=str(wdir)))
    with pytest.raises(BenchError) as e:
        PerceptualLoss(m.profile, m.weights_dir, verify=m.context.verify_weights)
    assert str(f) in str(e.value) and "dcbb9e9d" in str(e.value) and "\n" not in str(e.value)
    # verification off (stand-in file for the test): the loss is built from exactly that file
    m = create_method("fssr", 4, MethodContext(profile="smoke", weights_dir=str(wdir), verify_weights=False))
    loss = PerceptualLoss(m.profile, m.weights_dir, verify=m.context.verify_weights)
    assert loss.weights_path == f and loss.stand_in is None and loss.vgg is not None
    first = next(loss.vgg.parameters()).detach()
    assert torch.equal(first, torch.load(f, weights_only=True)["features.0.weight"])


def test_tables_show_a_fit_and_a_checkpoint_of_one_method_as_two_rows(tmp_path):
    s = Store(tmp_path / "r.sqlite")
    for variant, source, base in (("quick:fit-aaaa1111", "fit", 24.0), ("paper:ckpt-bbbb2222", "checkpoint", 26.0)):
        s.put_variant(variant, "dasr-wang", variant.split(":")[0], 4, source, "", "10 it" if source == "fit" else "",
                      "b" * 64, 1.0, {})
        key = CellKey("dasr-wang", variant, "Set5", "bicubic", 4, "paper-y")
        s.write_cell(key, "r1", {"psnr": "1"}, {("a", "psnr"): base}, 1, 0.1)
    md = markdown(summarize(s))
    assert "dasr-wang (quick:fit-aaaa1111)" in md and "dasr-wang (paper:ckpt-bbbb2222)" in md
    assert "24.00" in md and "26.00" in md
