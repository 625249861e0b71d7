"""Training pools and patch sampling: lazy, bounded, content-keyed, and the same patches
whatever the number of loader workers."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from bench.adapter import TrainingData
from bench.pools import ArrayPool, FilePool, SubImagePool
from bench.train import PairedPatchSampler, PatchSampler, loading, torch_generator
from tests._shared import smooth_images


class CountingPool(FilePool):
    """A file pool that counts decodes (what laziness is about)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.decoded: list[int] = []

    def _load(self, i):
        self.decoded.append(i)
        return super()._load(i)


def _files(tmp_path, n=6, size=(40, 56), seed=1, cache_bytes=1 << 30) -> CountingPool:
    folder = smooth_images(tmp_path / f"pool{seed}", [size] * n, seed=seed)
    paths = sorted(folder.glob("*.png"))
    return CountingPool(paths, [p.stem for p in paths], name="pool", cache_bytes=cache_bytes)


def test_a_sampler_decodes_only_what_it_draws_and_the_cache_is_bounded(tmp_path):
    pool = _files(tmp_path, n=12)
    s = PatchSampler(pool, 16, torch_generator(0, "t"))
    assert pool.decoded == []  # building a sampler reads nothing
    s.sample(2)
    assert 1 <= len(set(pool.decoded)) <= 2
    one = pool.load(0).nbytes
    small = _files(tmp_path, n=12, seed=2, cache_bytes=3 * one)
    for _ in range(10):
        PatchSampler(small, 16, torch_generator(1, "t")).sample(4)
        assert small._cached <= 3 * one and len(small._cache) <= 3


def test_patches_are_a_pure_function_of_seed_and_call_whatever_the_workers(tmp_path):
    pool = _files(tmp_path)

    def draw(workers: int) -> list[torch.Tensor]:
        with loading(workers):
            s = PatchSampler(pool, 16, torch_generator(3, "src"))
            return [s.sample(3) for _ in range(6)] + [s.sample(1)]  # a new batch size restarts the prefetch

    a, b = draw(0), draw(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # resume: a sampler told it is at call 4 gives call 4's patches
    s = PatchSampler(pool, 16, torch_generator(3, "src"))
    s.load_state_dict({"calls": 4})
    assert torch.equal(s.sample(3), a[4])
    # another seed, other patches; the source and target samplers of a fit never share a stream
    other = PatchSampler(pool, 16, torch_generator(3, "tgt"))
    assert not torch.equal(other.sample(3), a[0])


def test_pools_pickle_without_their_cache(tmp_path):
    pool = _files(tmp_path)
    pool.load(0)
    copy = pickle.loads(pickle.dumps(pool))
    assert copy._cached == 0 and not copy._cache
    assert copy.manifest() == pool.manifest() and np.array_equal(copy.load(0), pool.load(0))


def test_paired_patches_stay_aligned(tmp_path):
    rng = np.random.default_rng(0)
    hr = [rng.random((48, 40, 3)).astype(np.float32) for _ in range(3)]
    lr = [h.reshape(12, 4, 10, 4, 3).mean((1, 3)) for h in hr]  # LR pixel = mean of its 4 x 4 HR block
    s = PairedPatchSampler([(ArrayPool(hr), ArrayPool(lr))], 6, 4, torch_generator(0, "pairs"))
    lp, hp = s.sample(8)
    assert lp.shape == (8, 3, 6, 6) and hp.shape == (8, 3, 24, 24)
    assert torch.allclose(torch.nn.functional.avg_pool2d(hp, 4), lp, atol=1e-6)  # flips keep blocks aligned


def test_sub_images_tile_the_pool_once_and_reload_identically(tmp_path):
    pool = _files(tmp_path, n=2, size=(100, 130))
    tiles = SubImagePool(pool, crop=48, cache_dir=tmp_path / "tiles")
    assert len(tiles) == 2 * 3 * 3  # rows 0, 48, 52 x columns 0, 48, 82
    first = [tiles.load(i) for i in range(len(tiles))]
    assert sorted(set(pool.decoded)) == [0, 1] and len(pool.decoded) == 2  # each image decoded once
    again = SubImagePool(pool, crop=48, cache_dir=tmp_path / "tiles")
    pool.decoded.clear()
    assert all(np.array_equal(a, again.load(i)) for i, a in enumerate(first)) and pool.decoded == []
    assert again.manifest() == tiles.manifest() != SubImagePool(pool, crop=32).manifest()
    im = pool.load(0)
    assert np.array_equal(first[1], im[0:48, 48:96])


def test_arrays_still_work_for_third_party_adapters():
    rng = np.random.default_rng(1)
    data = TrainingData(scale=2, source_hr=[rng.random((20, 20, 3)) for _ in range(2)])
    assert len(data.source_hr) == 2 and data.source_hr[0].dtype == np.float32
    patches = PatchSampler(data.source_hr, 8, torch_generator(0, "x")).sample(2)
    assert patches.shape == (2, 3, 8, 8)
    with pytest.raises(Exception, match="empty"):
        PatchSampler([], 8, torch_generator(0, "x"))
