"""The shared warm starts: trained once per key, on bicubic pairs of source HR only."""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest


def _digest(a: np.ndarray) -> str:
    a = getattr(a, "pixels", a)  # a test Picture, or a pool array
    return hashlib.sha256(np.ascontiguousarray(np.round(np.asarray(a, np.float32) * 255)).tobytes()).hexdigest()


@pytest.fixture()
def spied(monkeypatch):
    """Every warm-start training: (stream, the pairs it was handed)."""
    import bench.warmstart as ws

    calls = []
    real = ws.train_on_pairs

    def spy(net, pairs, scale, budget, **kw):
        if kw["stream"].startswith("warm-start|"):  # (the EDSR baselines' own fits run the same loop)
            calls.append((kw["stream"], pairs))
        return real(net, pairs, scale, budget, **kw)

    monkeypatch.setattr(ws, "train_on_pairs", spy)
    return calls


def test_warm_start_sees_only_source_bicubic_pairs_and_is_trained_once_per_key(tmp_path, spied):
    from bench.degrade import get_suite, synthesize
    from bench.runner import Runner, RunSpec

    spec = RunSpec(methods=("edsr-bicubic", "oracle", "pdm"), profile="smoke", device="cpu", out=str(tmp_path),
                   suites="mixed", metrics=("psnr",), timing=False, datasets="embedded")
    r = Runner(spec, log=lambda *a: None)
    assert r.run() == 0
    # edsr-bicubic and oracle share one EDSR warm start, pdm's EDSR (other width, 0..255) is its own
    streams = [s for s, _ in spied]
    assert len(streams) == 2 and len(set(streams)) == 2, streams
    assert any("PDM" in s for s in streams)

    source = r.plan.per_scale(4).source_hr
    allowed = {_digest(a) for a in source}
    target_half = {_digest(a) for _, tgt in [(None, r.plan._procedural_target)] for a in tgt}
    test_hr = {_digest(r.hr_for(ds, item, 4)) for ds in r.datasets for item in ds.items_at(4) if ds.has_hr}
    bicubic = get_suite("bicubic")
    for _, pairs in spied:
        assert len(pairs) == 1  # one LR per HR: bicubic draws nothing
        hr_pool, lr_pool = pairs[0]
        seen = [_digest(hr_pool[i]) for i in range(len(hr_pool))]
        assert set(seen) <= allowed  # source HR only, by content
        assert not set(seen) & (target_half | test_hr)
        for i in (0, len(hr_pool) - 1):  # and the LR is the bicubic downscale of that HR, nothing else
            want = np.asarray(synthesize(bicubic, hr_pool[i], 4, "any id", 12345)[0], np.float32) / 255.0
            assert np.abs(np.asarray(lr_pool[i], np.float32) - want).max() < 1e-6

    notes = {m: v["info"]["notes"] for (m, _), v in r.store.variants().items() if m != "bicubic"}
    assert any(n.startswith("is the shared warm start") for n in notes["edsr-bicubic"])
    assert any(n.startswith("started from the shared warm start") for n in notes["oracle"])

    # a rerun finds every warm start (and fit) in the cache: nothing is trained again
    spied.clear()
    assert Runner(spec, log=lambda *a: None).run() == 0
    assert spied == []


def test_warm_start_key_enters_the_fit_key_and_init_replaces_it(tmp_path):
    import bench.warmstart as ws
    from bench.adapter import Budget
    from bench.runner import Runner, RunSpec

    base = RunSpec(methods=("oracle",), profile="smoke", device="cpu", out=str(tmp_path))
    r = Runner(base)
    r.prepare([])
    _, meta = r.variant_for("oracle", 4, "mixed", frozenset())
    assert meta["warm"] is not None and meta["warm_key"]
    old = ws.WARM_BUDGETS["smoke"]
    try:
        ws.WARM_BUDGETS["smoke"] = dataclasses.replace(old, iterations=old.iterations + 1)
        r._variants = {}
        _, longer = r.variant_for("oracle", 4, "mixed", frozenset())
    finally:
        ws.WARM_BUDGETS["smoke"] = old
    assert longer["warm_key"] != meta["warm_key"] and longer["fit_key"] != meta["fit_key"]
    # a fit seed moves the warm start as well (its initial weights and patch draws)
    r._variants = {}
    _, seeded = r.variant_for("oracle", 4, "mixed", frozenset(), fit_seed=1)
    assert seeded["warm_key"] != meta["warm_key"]
    # --init gives the recipe's file instead: no warm start, the file's digest in the key
    init = tmp_path / "edsr.pt"
    init.write_bytes(b"stand-in")
    r.spec, r._variants = dataclasses.replace(base, init=(("oracle", str(init)),)), {}
    _, given = r.variant_for("oracle", 4, "mixed", frozenset())
    assert given["warm"] is None and given["init"] == str(init) and given["fit_key"] != meta["fit_key"]
    assert isinstance(ws.warm_budget("gpu"), Budget) and ws.warm_budget("gpu").iterations == 4 * ws.WARM_BUDGETS[
        "quick"].iterations


def test_gpu_profile_runs_the_quick_networks_longer_and_is_the_cuda_default(monkeypatch, tmp_path):
    from bench import cli, runner
    from bench.adapter import MethodContext, create_method

    gpu, quick = (create_method("oracle", 4, MethodContext(profile=p)) for p in ("gpu", "quick"))
    assert gpu.profile == "quick" and gpu.n_feats == quick.n_feats
    assert gpu.default_budget().iterations == 4 * quick.default_budget().iterations
    # a whole run plans at the gpu profile: the quick pools, 4x the iterations, gpu in the label and key
    r = runner.Runner(runner.RunSpec(methods=("oracle",), profile="gpu", device="cpu", out=str(tmp_path)))
    r.prepare([])
    label, meta = r.variant_for("oracle", 4, "mixed", frozenset())
    assert label.startswith("gpu:fit-") and meta["budget"].iterations == 4 * quick.default_budget().iterations
    assert len(meta["data"].source_hr) == 32  # the quick procedural pool
    assert cli.default_profile(None, "cpu") == "quick"
    monkeypatch.setattr(runner, "resolve_device", lambda name: "cuda")
    assert cli.default_profile(None, "auto") == "gpu" and cli.default_profile("paper", "auto") == "paper"


def test_fit_seeds_fit_each_learned_method_once_per_seed(tmp_path):
    from bench.runner import Runner, RunSpec

    spec = RunSpec(methods=("bicubic", "oracle"), profile="smoke", device="cpu", out=str(tmp_path), suites="mixed",
                   metrics=("psnr",), timing=False, datasets="embedded", fit_seeds=(0, 1))
    r = Runner(spec, log=lambda *a: None)
    assert r.run() == 0
    variants = {v: meta for (m, v), meta in r.store.variants().items() if m == "oracle"}
    assert len(variants) == 2 and sum("+seed1:" in v for v in variants) == 1
    seeds = sorted(meta["info"]["training"]["fit_seed"] for meta in variants.values())
    groups = {meta["info"]["training"]["seed_group"] for meta in variants.values()}
    assert seeds == [0, 1] and len(groups) == 1  # one recipe, two seeds
    assert len([k for k in r.planned if k.method == "bicubic"]) == 1  # classical methods are not repeated
    s0, s1 = (r.model_for("oracle", 4, "mixed", r.test_ids, f).method.net.state_dict() for f in (0, 1))
    assert any(not (s0[k] == s1[k]).all() for k in s0)  # the seeds are different networks
    from bench.tables import write_all

    write_all(r.store, tmp_path, r.planned)
    md = (tmp_path / "results.md").read_text()
    assert "oracle (2 seeds)" in md and "(s.d. " in md  # one row: the mean over seeds and their spread


def test_two_initial_weight_seeds_of_one_architecture_are_two_warm_starts(tmp_path):
    """fssr draws its RRDBNet from init seed 1, mssr and pdm.rrdb from 0: same arch, different nets."""
    from bench.adapter import Budget, TrainingData
    from bench.warmstart import WarmStart

    data = TrainingData(scale=4, source_hr=[np.zeros((32, 32, 3), np.float32)])
    a, b = (WarmStart("net", 1.0, Budget(1, 1, 8), seed=s, make=lambda: __import__("torch").nn.Conv2d(3, 3, 1))
            for s in (0, 1))
    assert a.key(4, data) != b.key(4, data)
    assert not (a.build().weight == b.build().weight).all() and (a.build().weight == a.build().weight).all()
