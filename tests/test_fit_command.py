"""``run_bench.py fit`` in real processes: SIGKILL at seeded moments mid-stage and at stage
boundaries of a two-stage GAN method (fssr) and a MoCo method (dasr-wang), each rerun
resuming where the last save left it, ending bit-identical to an uninterrupted fit; then
torchrun with two gloo ranks, and the 1-process benchmark run that finds those fits."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._shared import flat_state, run_isolated, same_leaf

REPO = Path(__file__).resolve().parents[1]
N = 6  # iterations of each fit
FIT = ["fit", "--methods", "fssr,dasr-wang", "--profile", "smoke", "--iterations", str(N), "--device", "cpu"]


def _env(**extra) -> dict:
    return dict(os.environ, UNPAIRED_SR_BENCH_NO_PROGRESS="1", **extra)


def _fits(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every cached fit's saved tensors, by fit key."""
    found = {}
    for folder in sorted((out / "cache" / "fits").iterdir()):
        if folder.is_dir():
            found[folder.name] = {f"{f.relative_to(folder)}:{k}": v for f in sorted(folder.rglob("*"))
                                  if f.is_file() and f.suffix not in (".json", ".csv")
                                  for k, v in flat_state(torch.load(f, map_location="cpu", weights_only=True))}
    return found


def _boundaries() -> tuple[int, int]:
    """Where each method's first stage ends in an N-iteration fit."""
    from methods._stages import split_iterations
    from methods.dasr_wang import DASRWang
    from methods.fssr import FSSR

    n_dsgan = split_iterations(N, FSSR(4, profile="smoke").arch.stage_fractions())[0]
    recipe = DASRWang(4, profile="smoke").recipe
    n_encoder = sum(recipe.stage(i, N) == "encoder" for i in range(N))
    return n_dsgan, n_encoder


def test_sigkill_mid_stage_and_at_boundaries_resumes_bit_exact(tmp_path):
    ref = tmp_path / "ref"
    # the uninterrupted fits, in a process of their own like the others: the same torch thread
    # count (another test may have changed this process's), so the same float reductions
    code, out, err = run_isolated([*FIT, "--out", str(ref)], ref, _env())
    assert code == 0, err
    reference = _fits(ref)
    assert len(reference) == 2

    n_dsgan, n_encoder = _boundaries()
    rng = np.random.default_rng(12)
    mid_dsgan = int(rng.integers(2, n_dsgan + 1))  # the step killed: 2..n_dsgan (steps before it saved)
    mid_joint = int(rng.integers(n_encoder + 2, N))  # inside dasr-wang's joint stage
    work = tmp_path / "work"
    # (fit-step occurrence that SIGKILLs the run, --save-every, the resume line the NEXT run must print)
    # fit-steps count the steps each process runs, fssr's then dasr-wang's
    from bench.warmstart import WARM_BUDGETS

    warm = WARM_BUDGETS["smoke"].iterations  # the first process trains fssr's warm start first (then it is cached)
    kills = [
        (warm + mid_dsgan, 1, f"fit fssr x4: resumed from iteration {mid_dsgan - 1} of {N} (stage DSGAN"),
        # from mid_dsgan - 1, one step past the boundary; only boundaries saved
        (n_dsgan - (mid_dsgan - 1) + 2, 0, f"fit fssr x4: resumed from iteration {n_dsgan} of {N} (stage ESRGAN-FS "
                                           "iteration 0"),
        # fssr's rest, then one step into dasr-wang's joint stage
        ((N - n_dsgan) + n_encoder + 2, 0, f"fit dasr-wang x4: resumed from iteration {n_encoder} of {N} (stage "
                                           "joint iteration 0"),
        (mid_joint - n_encoder + 1, 1, f"fit dasr-wang x4: resumed from iteration {mid_joint} of {N} (stage joint"),
    ]
    expect = None
    for step, save_every, resume_line in kills:
        code, out, err = run_isolated([*FIT, "--out", str(work), "--save-every", str(save_every)], work,
                                      _env(UNPAIRED_SR_BENCH_KILL_AT=f"fit-step:{step}"))
        assert code == -9, (step, out, err)
        if expect:
            assert expect in out, (expect, out)
        expect = resume_line
    code, out, err = run_isolated([*FIT, "--out", str(work)], work, _env())
    assert code == 0, err
    assert expect in out, (expect, out)
    resumed = _fits(work)
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert resumed[key].keys() == reference[key].keys()
        for name, t in reference[key].items():
            assert same_leaf(resumed[key][name], t), f"{name} differs after resuming"
    assert not any((work / "cache" / "resume").iterdir()), "a finished fit leaves no training state behind"


def _torchrun(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    # --standalone: a rendezvous on a free local port (two test runs on one machine do not collide)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "run_bench.py", *args], cwd=REPO, env=_env(OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=timeout)


def test_two_gloo_ranks_match_one_process_and_the_benchmark_finds_their_fits(tmp_path, capsys):
    from bench.cli import main

    common = ["--profile", "smoke", "--batch-size", "4", "--iterations", "5", "--device", "cpu", "--val-every", "5"]
    ddp_out, one_out = tmp_path / "ddp", tmp_path / "one"
    proc = _torchrun(["fit", "--methods", "edsr-bicubic,fssr,dasr-wang", *common, "--out", str(ddp_out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("fitting ") == 3, proc.stdout  # rank 0 alone speaks (and writes)
    assert main(["fit", "--methods", "edsr-bicubic", *common, "--out", str(one_out)]) == 0

    ddp_fits, one_fits = _fits(ddp_out), _fits(one_out)
    (key,) = one_fits  # world size is not part of the fit key: the same recipe and total batch
    for name, t in one_fits[key].items():  # 2 ranks x batch 2 vs 1 process x batch 4, 5 steps
        assert torch.allclose(ddp_fits[key][name], t, atol=1e-5, rtol=0), name
    for folder in (ddp_out / "cache" / "fits").iterdir():
        if folder.is_dir():
            rep = json.loads((folder / "fit.json").read_text())
            assert rep["ranks"] == 2 and any("data-parallel on 2 ranks (gloo)" in n for n in rep["notes"])
            log = (folder / "train_log.csv").read_text().splitlines()
            assert len(log) == len(set(log)), "one writer: no row twice"
            assert any(",valid,psnr/" in row for row in log)
    assert not list((ddp_out / "cache" / "fits").glob("*.tmp*")), "no half-written fit"

    # a 1-process benchmark run with the same flags finds the three fits and trains nothing
    capsys.readouterr()
    assert main(["--methods", "edsr-bicubic,fssr,dasr-wang", *common, "--out", str(ddp_out), "--metrics", "psnr",
                 "--no-timing", "--suites", "mixed", "--datasets", "embedded"]) == 0
    assert "fitting " not in capsys.readouterr().out
    summary = (ddp_out / "summary.csv").read_text()
    for method in ("edsr-bicubic", "fssr", "dasr-wang"):
        assert f"{method},smoke@5it@batch4:fit-" in summary


def test_training_switches_enter_the_key_and_label(tmp_path):
    import dataclasses

    from bench.runner import Runner, RunSpec

    base = RunSpec(methods=("edsr-bicubic",), profile="smoke", device="cpu", out=str(tmp_path))
    r = Runner(base)
    r.prepare([])
    seen = {}
    for over in ({}, {"amp": "bf16"}, {"channels_last": True}, {"batch_size": 4}, {"iterations": 7},
                 {"save_every": 1, "val_every": 3}):
        r.spec, r._variants = dataclasses.replace(base, **over), {}  # one runner: its pools are built once
        label, meta = r.variant_for("edsr-bicubic", 4, "", frozenset())
        seen[tuple(over)] = (label.split(":")[0], meta["fit_key"], meta["training"]["train_precision"],
                             meta["budget"])
    assert seen[()][0] == "smoke" and seen[()][2] == "fp32"
    assert seen[("amp",)][0] == "smoke+bf16" and seen[("amp",)][2] == "bf16 autocast"
    assert seen[("channels_last",)][0] == "smoke+channels-last"
    assert seen[("batch_size",)][0] == "smoke@batch4" and seen[("batch_size",)][3].batch_size == 4
    assert seen[("iterations",)][0] == "smoke@7it" and seen[("iterations",)][3].iterations == 7
    assert len({v[1] for k, v in seen.items() if k != ("save_every", "val_every")}) == 5  # five fit keys
    assert seen[("save_every", "val_every")][:2] == seen[()][:2]  # saving and watching change no number


def test_bf16_channels_last_fit_and_tensorboard(tmp_path):
    """Both switches train (bf16 autocast runs on the CPU too) and the fit keeps its log."""
    pytest.importorskip("torch.utils.tensorboard")
    from bench.cli import main

    # (edsr-bicubic is its warm start; --iterations trains it further, through the fit loop)
    assert main(["fit", "--methods", "edsr-bicubic", "--profile", "smoke", "--device", "cpu", "--amp", "bf16",
                 "--iterations", "4", "--channels-last", "--val-every", "2", "--tensorboard", "--out", str(tmp_path)]) == 0
    (folder,) = [f for f in (tmp_path / "cache" / "fits").iterdir() if f.is_dir()]
    rep = json.loads((folder / "fit.json").read_text())
    assert rep["train_precision"] == "bf16 autocast" and rep["memory_format"] == "channels_last"
    log = (folder / "train_log.csv").read_text()
    assert ",valid,psnr/embedded/bicubic," in log and ",loss,l1," in log
    assert list((folder / "tensorboard").glob("events.out.tfevents.*"))


def test_init_starts_fssr_from_a_released_rrdbnet_in_any_key_family(tmp_path):
    from bench.adapter import CheckpointError
    from bench.cli import main
    from bench.runner import Runner, RunSpec
    from methods._esrgan import BASICSR, RRDBNet
    from methods.fssr import FSSR

    m = FSSR(4, profile="smoke")
    trunk = m.sr.RRDB_trunk
    released = RRDBNet(num_feat=m.sr.conv_first.out_channels, num_block=len(trunk),
                       num_grow_ch=trunk[0].RDB1.conv1.out_channels, keys=BASICSR)
    torch.nn.init.normal_(released.conv_last.weight)
    path = tmp_path / "RRDB_x4.pth"
    torch.save({"params_ema": {f"module.{k}": v for k, v in released.state_dict().items()}}, path)  # BasicSR layout
    m.load_init(path)  # into ESRGAN-FS's new-arch names
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(m.sr(x), released(x))
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="fssr --init .*does not fit"):
        m.load_init(bad)

    keys = {}
    for init in ((), (("fssr", str(path)),)):
        r = Runner(RunSpec(methods=("fssr",), profile="smoke", device="cpu", out=str(tmp_path / "o"), init=init))
        r.prepare([])
        keys[init] = r.variant_for("fssr", 4, "mixed", frozenset())[1]["fit_key"]
    assert len(set(keys.values())) == 2  # the starting file is part of the fit key
    assert main(["fit", "--methods", "fssr", "--profile", "smoke", "--device", "cpu", "--init", f"fssr={path}",
                 "--out", str(tmp_path / "o")]) == 0
    (folder,) = [f for f in (tmp_path / "o" / "cache" / "fits").iterdir() if f.is_dir()]
    assert json.loads((folder / "fit.json").read_text())["notes"][0].startswith("started from RRDB_x4.pth (sha256 ")


@pytest.mark.parametrize("name,nets", [("mssr", ("g1", "g2")), ("pdm.rrdb", ("net_sr",))])
def test_init_loads_the_recipes_rrdbnet_into_each_sr_net(name, nets, tmp_path):
    from bench.adapter import MethodContext, create_method

    m = create_method(name, 4, MethodContext(profile="smoke"))
    own = getattr(m, nets[0]).state_dict()
    released = {k: torch.randn_like(v) for k, v in own.items()}
    path = tmp_path / "released.pth"
    torch.save({"params": released}, path)  # BasicSR's wrapper, as ESRGAN_PSNR_SRx4_DF2K_official is saved
    m.load_init(path)
    for net in nets:
        assert all(torch.equal(getattr(m, net).state_dict()[k], v) for k, v in released.items())
