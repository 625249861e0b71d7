"""``degrade``: LR sets from built-in and TOML suites, with a manifest other codebases can check."""
from __future__ import annotations

import hashlib
import json

import numpy as np
from PIL import Image

from bench.cli import main
from bench.data import read_image, resolve_datasets, load_hr
from bench.degrade import load_toml_suites, synthesize

SUITES = """
[suite.cam-a]
description = "a fixed anisotropic blur, bicubic, JPEG"
steps = [
  { op = "blur", kernel = "aniso", theta = 30, l1 = 2.0, l2 = 1.0, size = 11 },
  { op = "resize", method = "matlab" },
  { op = "jpeg", q = 70 },
]

[suite.cam-b]
description = "the same blur, then noise drawn per image"
steps = [
  { op = "blur", kernel = "aniso", theta = 30, l1 = 2.0, l2 = 1.0, size = 11 },
  { op = "resize", method = "matlab" },
  { op = "noise", kind = "gaussian", sigma = [5, 15] },
]
"""


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_degrade_exports_toml_suites_with_hr_digests_and_shared_kernels(tmp_path, capsys):
    hr = tmp_path / "hr"
    hr.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(hr / f"im{i}.png")
    toml = tmp_path / "suites.toml"
    toml.write_text(SUITES)
    out = tmp_path / "lr"
    # no --suites: every suite the file declares
    assert main(["degrade", "--suite-file", str(toml), "--datasets", f"mine={hr}", "--out", str(out)]) == 0
    assert "wrote 6 LR images" in capsys.readouterr().out
    man = json.loads((out / "manifest.json").read_text())
    assert [s["suite"] for s in man["sets"]] == ["cam-a", "cam-b"]
    assert man["suite_file"]["sha256"] == _sha(toml)

    # each HR file once, with the digest of its bytes
    assert sorted(h["image"] for h in man["hr_files"]) == ["im0", "im1", "im2"]
    for h in man["hr_files"]:
        assert h["sha256"] == _sha(hr / f"{h['image']}.png")
    hr_ids = {h["id"] for h in man["hr_files"]}

    # one kernel, listed once, referenced by id from all six images
    assert len(man["kernels"]) == 1
    (kernel,) = man["kernels"]
    assert kernel["shape"] == [11, 11] and abs(sum(map(sum, kernel["values"])) - 1) < 1e-9
    text = (out / "manifest.json").read_text()
    assert text.count('"values"') == 1 and "kernel_values" not in text
    images = [e for s in man["sets"] for e in s["images"]]
    assert len(images) == 6
    for e in images:
        assert e["hr"] in hr_ids and e["kernel_id"] == kernel["id"]
        assert [st.get("kernel_id") for st in e["steps"] if st["op"] == "blur"] == [kernel["id"]]

    # the files are what the benchmark itself synthesises, and their digests are recorded
    suites = load_toml_suites(toml)
    (ds,) = resolve_datasets(f"mine={hr}", None, [4])
    for s in man["sets"]:
        for e in s["images"]:
            path = out / s["folder"] / e["file"]
            assert e["lr_sha256"] == _sha(path)
            item = next(it for it in ds.items if it.id == e["image"])
            want, _ = synthesize(suites[s["suite"]], load_hr(item, 4).pixels, 4, item.id, 0)
            got = np.round(read_image(path).pixels * 255).astype(np.uint8)
            assert np.array_equal(got, want)
    sigmas = {e["image"]: e["steps"][2]["sigma"] for e in man["sets"][1]["images"]}
    assert len(set(sigmas.values())) == 3 and all(5 <= v <= 15 for v in sigmas.values())


def test_degrade_mixes_builtin_and_toml_suites_and_needs_one(tmp_path, capsys):
    hr = tmp_path / "hr"
    hr.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(hr / "a.png")
    toml = tmp_path / "suites.toml"
    toml.write_text(SUITES)
    out = tmp_path / "lr"
    assert main(["degrade", "--suites", "bicubic;cam-a;aniso:k=2", "--suite-file", str(toml),
                 "--datasets", f"one={hr}", "--out", str(out)]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert [s["suite"] for s in man["sets"]] == ["bicubic", "cam-a", "aniso:k=2"]
    assert len(man["hr_files"]) == 1 and len(man["kernels"]) == 2  # cam-a's 11x11 and Table 3 kernel 2
    assert "kernel_id" not in man["sets"][0]["images"][0]  # bicubic has no kernel
    capsys.readouterr()
    assert main(["degrade", "--datasets", f"one={hr}", "--out", str(out)]) == 2
    assert "needs --suites" in capsys.readouterr().err
