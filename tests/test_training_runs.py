"""Training data named on the command line: each kind of target fits and runs end to
end, real-world sets fit to their own train split, the not-fitted mark, run files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main, parse_with_config, run_parser, spec_from_args
from bench.fitdata import TrainingPlan, split_halves
from bench.store import Store
from tests._shared import smooth_images

SMOKE = ["--profile", "smoke", "--no-timing", "--jobs", "1"]


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([*args, *SMOKE])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _variants(out: Path) -> dict:
    s = Store(out / "results.sqlite", readonly=True)
    try:
        return {k[0] + "|" + k[1]: v for k, v in s.variants().items()}
    finally:
        s.close()


def _realsr_layout(root: Path, n_train: int = 3, n_test: int = 2) -> Path:
    """RealSR (V3): {Canon,Nikon}/{Train,Test}/4/{Cam}_{NNN}_HR.png + _LR4.png."""
    from PIL import Image

    rng = np.random.default_rng(7)
    for split, n in (("Train", n_train), ("Test", n_test)):
        for cam in ("Canon", "Nikon"):
            d = root / cam / split / "4"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(1, n + 1):
                base = rng.random((8, 8, 3))
                hr = Image.fromarray((base * 255).astype(np.uint8)).resize((64, 64), Image.BICUBIC)
                hr.save(d / f"{cam}_{i:03d}_HR.png")
                hr.resize((16, 16), Image.BICUBIC).save(d / f"{cam}_{i:03d}_LR4.png")
    return root


def test_synthetic_target_is_made_from_the_half_the_source_never_holds(tmp_path):
    from bench.adapter import REGISTRY
    from bench.degrade import get_suite

    src = smooth_images(tmp_path / "src", [(64, 64)] * 6, seed=1)
    plan = TrainingPlan(source=f"mine={src}", profile="smoke", seed=3, data_root=None, allow_partial=False,
                        suite_lookup=get_suite)
    fssr = plan.data_for(REGISTRY.get("fssr").info, 4, "mixed")
    a, b = split_halves(6, 3)
    assert len(fssr.source_hr) == len(a) == 3 and len(fssr.target_lr) == len(b) == 3
    src_digests = {fssr.source_hr.base.digest(i) for i in range(3)}  # the mod-cropped pool's base: half A
    assert not src_digests & {fssr.target_lr.base.digest(i) for i in range(3)}
    assert all(x.shape == (16, 16, 3) for x in fssr.target_lr)
    # fitted per scale: the whole pool, no target; the oracle: the whole pool and the degradation
    dasr = plan.data_for(REGISTRY.get("dasr-wang").info, 4, "mixed")
    assert len(dasr.source_hr) == 6 and len(dasr.target_lr) == 0 and dasr.degradation is None
    oracle = plan.data_for(REGISTRY.get("oracle").info, 4, "mixed")
    assert len(oracle.source_hr) == 6 and oracle.degradation is not None and len(oracle.target_lr) == 0
    # another seed, another split
    assert split_halves(6, 4) != (a, b)


def test_named_source_with_a_suite_target_and_an_lr_folder_target(tmp_path, capsys):
    src = smooth_images(tmp_path / "src", [(64, 72)] * 4, seed=1)
    test = smooth_images(tmp_path / "test", [(48, 48)] * 2, seed=2)
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "--methods", "bicubic,fssr", "--datasets", f"t={test}", "--suites", "bicubic",
                             "--source", f"mine={src}", "--target", "mixed", "--metrics", "psnr", "--out", str(out))
    assert code == 0, err
    assert "leakage audit" in stdout
    md = (out / "results.md").read_text()
    assert "mine half A" in md and "synthetic mixed target made from mine half B" in md
    # real LR photos as the target: fitted to the folder, scored on the test suites
    lr = smooth_images(tmp_path / "phone", [(20, 24)] * 3, seed=3)
    out2 = tmp_path / "out2"
    code, stdout, err = _run(capsys, "--methods", "fssr", "--datasets", f"t={test}", "--suites", "bicubic",
                             "--source", f"mine={src}", "--target", f"lr:{lr}", "--metrics", "psnr", "--out", str(out2))
    assert code == 0, err
    fssr = [v for k, v in _variants(out2).items() if k.startswith("fssr|")]
    assert len(fssr) == 1 and str(lr) in fssr[0]["domain"]
    assert "3 images" in fssr[0]["info"]["training"]["target"]


def test_given_lr_without_a_known_target_is_marked_not_fitted(tmp_path, capsys):
    lr = smooth_images(tmp_path / "phone", [(32, 32)] * 2, seed=3)
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "--methods", "bicubic,fssr,oracle", "--datasets", f"phone=lr:{lr}",
                             "--metrics", "niqe", "--out", str(out))
    assert code == 0, err  # a mark, not a failure
    assert "fssr on phone x4: not fitted: no target-domain LR (pass --target)" in stdout
    md = (out / "results.md").read_text()
    assert "`fssr` on phone x4: not fitted: no target-domain LR (pass --target)." in md
    assert "`oracle` on phone x4: not fitted" in md
    s = Store(out / "results.sqlite", readonly=True)
    try:
        assert {c["method"] for c in s.not_fitted()} == {"fssr", "oracle"}
    finally:
        s.close()


def test_realsr_layout_fits_to_its_own_train_split_and_gets_a_paired_oracle(tmp_path, capsys):
    root = _realsr_layout(tmp_path / "RealSR")
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "--methods", "fssr,oracle", "--datasets", f"RealSR={root}", "--metrics", "psnr",
                             "--allow-partial", "--out", str(out))
    assert code == 0, err
    v = {k.split("|")[0]: m for k, m in _variants(out).items()}
    assert v["fssr"]["domain"] == "RealSR-V3 target"
    assert "6 images" in v["fssr"]["info"]["training"]["target"]  # 3 Canon + 3 Nikon train LR, never the test LR
    assert "pairs" in v["oracle"]["info"]["training"] and "target" not in v["oracle"]["info"]["training"]
    md = (out / "results.md").read_text()
    assert "fitted to" in md and "RealSR-V3 target" in md


def test_a_test_image_in_the_source_pool_is_refused_naming_both_files(tmp_path, capsys):
    test = smooth_images(tmp_path / "test", [(48, 48)] * 2, seed=2)
    src = smooth_images(tmp_path / "src", [(64, 64)] * 3, seed=1)
    (src / "renamed.png").write_bytes((test / "im1.png").read_bytes())
    code, stdout, err = _run(capsys, "--methods", "edsr-bicubic", "--datasets", f"t={test}", "--suites", "bicubic",
                             "--source", f"mine={src}", "--metrics", "psnr", "--out", str(tmp_path / "out"))
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "renamed.png" in lines[0] and "im1.png" in lines[0]


def test_a_run_file_and_the_flags_give_the_same_spec(tmp_path, capsys):
    flags = ["--methods", "fssr,pdm", "--profile", "smoke", "--source", "DIV2K-train", "--target", "NTIRE2020-T1",
             "--datasets", "NTIRE2020-T1", "--data-root", str(tmp_path), "--scales", "4", "--seed", "3",
             "--allow-partial", "--out", str(tmp_path / "o")]
    direct = spec_from_args(run_parser().parse_args(flags))
    assert main([*flags, "--print-config"]) == 0
    text = capsys.readouterr().out
    cfg = tmp_path / "run.toml"
    cfg.write_text(text)
    from_file = spec_from_args(parse_with_config(run_parser(), ["--config", str(cfg)]))
    assert from_file == direct and from_file.hash() == direct.hash()
    # a flag overrides the file
    over = spec_from_args(parse_with_config(run_parser(), ["--config", str(cfg), "--seed", "5"]))
    assert over.seed == 5 and over.source == "DIV2K-train"
    # a misspelt key is one line with a suggestion
    cfg.write_text(text + 'sorce = "x"\n')
    assert main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sorce" in err[0] and "source" in err[0]


def test_the_run_file_is_kept_in_the_provenance(tmp_path, capsys):
    test = smooth_images(tmp_path / "test", [(48, 48)], seed=2)
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'methods = ["bicubic"]\ndatasets = "t={test}"\nsuites = "bicubic"\nmetrics = "psnr"\n'
                   f'out = "{tmp_path / "out"}"\n')
    code, _, err = _run(capsys, "--config", str(cfg))
    assert code == 0, err
    s = Store(tmp_path / "out" / "results.sqlite", readonly=True)
    try:
        prov = json.loads(s.runs()[-1]["provenance_json"])
    finally:
        s.close()
    assert prov["config"]["text"] == cfg.read_text()


def _ntire_t1_layout(root: Path) -> Path:
    """DIV2K_train_HR + NTIRE2020/{Corrupted-tr-x, Corrupted-tr-y, Corrupted-va-x, Corrupted-va-y}, miniature."""
    from PIL import Image

    smooth_images(root / "DIV2K_train_HR", [(64, 64)] * 3, seed=11)
    nt = root / "NTIRE2020"
    smooth_images(nt / "Corrupted-tr-y", [(64, 64)] * 3, seed=11)  # the clean DIV2K train images again
    tr = smooth_images(nt / "Corrupted-tr-x", [(64, 64)] * 3, seed=12)
    for i, f in enumerate(sorted(tr.glob("*.png"))):  # corrupted Flickr2K, full size, named Flickr2K_*.png
        f.rename(tr / f"Flickr2K_{i:06d}.png")
    va = smooth_images(nt / "Corrupted-va-y", [(64, 64)] * 2, seed=13)
    (nt / "Corrupted-va-x").mkdir()
    for f in sorted(va.glob("*.png")):
        Image.open(f).resize((16, 16), Image.BICUBIC).save(nt / "Corrupted-va-x" / f.name)
    return root


def test_ntire2020_track1_source_and_target_on_a_miniature_layout(tmp_path, capsys):
    root = _ntire_t1_layout(tmp_path / "data")
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "--methods", "fssr,pdm", "--source", "DIV2K-train", "--target", "NTIRE2020-T1",
                             "--datasets", "NTIRE2020-T1", "--data-root", str(root), "--metrics", "psnr",
                             "--allow-partial", "--out", str(out))
    assert code == 0, err
    md = (out / "results.md").read_text()
    assert "NTIRE2020-T1 target, 3 images" in md
    v = {k.split("|")[0]: m for k, m in _variants(out).items()}
    assert v["fssr"]["info"]["training"]["source"].startswith("DIV2K-train source, 3 images")


def test_the_same_fit_with_and_without_loader_workers_gives_identical_weights(tmp_path, capsys):
    src = smooth_images(tmp_path / "src", [(64, 64)] * 4, seed=1)
    test = smooth_images(tmp_path / "test", [(48, 48)], seed=2)
    sums = []
    for workers in ("0", "2", "0"):
        out = tmp_path / f"out{len(sums)}"
        code, _, err = _run(capsys, "--methods", "fssr", "--datasets", f"t={test}", "--suites", "bicubic",
                            "--source", f"mine={src}", "--target", "mixed", "--metrics", "psnr",
                            "--loader-workers", workers, "--out", str(out))
        assert code == 0, err
        (fit,) = [d for d in (out / "cache" / "fits").iterdir() if (d / "fit.json").is_file()]
        model = fit / "model"
        files = [model] if model.is_file() else sorted(p for p in model.rglob("*") if p.is_file())
        sums.append({p.name: p.read_bytes() for p in files})
    assert sums[0] == sums[1] == sums[2]


def test_one_scene_in_the_source_and_the_target_folder_is_refused(tmp_path, capsys):
    from PIL import Image

    src = smooth_images(tmp_path / "src", [(64, 64)] * 3, seed=1)
    test = smooth_images(tmp_path / "test", [(48, 48)], seed=2)
    lr = smooth_images(tmp_path / "phone", [(16, 16)] * 2, seed=3)
    Image.open(src / "im2.png").resize((16, 16), Image.BICUBIC).save(lr / "IMG_0042.png")
    code, _, err = _run(capsys, "--methods", "fssr", "--datasets", f"t={test}", "--suites", "bicubic",
                        "--source", f"mine={src}", "--target", f"lr:{lr}", "--metrics", "psnr",
                        "--out", str(tmp_path / "out"))
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "im2.png" in lines[0] and "IMG_0042.png" in lines[0] and "same scene" in lines[0]
