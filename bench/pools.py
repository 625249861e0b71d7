"""Training image pools: what a fit may learn from, read lazily.

A pool is an ordered, immutable list of images that knows each image's id, a content
digest, and how to load it, without holding the pixels: a DF2K pool is 3,450 files of
up to 2040 x 1356 pixels (about 115 GB as float32), so images are decoded on demand into
a small bounded cache. Every pool is also a ``Sequence`` of float32 H x W x 3 arrays, so
an adapter written against arrays (``for hr in data.source_hr``) keeps working; it just
decodes what it touches.

Pools are picklable (``DataLoader`` workers receive a copy; each copy has its own cache)
and their :meth:`ImagePool.manifest` is the content key a fit is cached under: image
digests in order, never names or paths.
"""
from __future__ import annotations

import abc
import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

#: decoded bytes a file-backed pool keeps per process (a 2040 x 1356 float32 image is
#: 33 MB, so about three of them): bounded so that a pool of any size fits in memory.
#: Random patches from hundreds of 2K images rarely hit a larger cache anyway; what keeps
#: sampling fast is --subimages (small tiles) and loader workers.
DEFAULT_CACHE_BYTES = 96 << 20


def array_digest(a: np.ndarray) -> str:
    """sha256 of an array's shape, dtype and bytes."""
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.shape}|{a.dtype}|".encode() + a.tobytes()).hexdigest()


class ImagePool(Sequence, abc.ABC):
    """An ordered pool of training images. Subclasses give ``ids``, ``digest``, ``label``
    and ``_load``; loading goes through a per-process LRU cache bounded in bytes."""

    #: what the pool is, for labels and messages ("DIV2K-train source", "mixed target")
    name: str = ""

    def __init__(self, name: str = "", cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.name = name
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached = 0

    # -- what every pool declares ------------------------------------------------
    @property
    @abc.abstractmethod
    def ids(self) -> tuple[str, ...]:
        """One id per image, unique within the pool."""

    @abc.abstractmethod
    def digest(self, i: int) -> str:
        """Content digest of image ``i`` (sha256 of the file's bytes or of the array)."""

    @abc.abstractmethod
    def _load(self, i: int) -> np.ndarray:
        """Decode image ``i`` as float32 H x W x 3 in [0, 1] (uncached)."""

    def label(self, i: int) -> str:
        """Where image ``i`` comes from, for messages (a file path where there is one)."""
        return f"{self.name or 'pool'}[{self.ids[i]}]"

    def size(self, i: int) -> tuple[int, int]:
        """(height, width) of image ``i``; file pools read it from the header, not the pixels."""
        return tuple(self.load(i).shape[:2])

    # -- derived ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):  # Sequence protocol: arrays, lazily
        if isinstance(i, slice):
            return [self.load(k) for k in range(len(self))[i]]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"pool index {i} out of range (pool of {n})")
        return self.load(i % n)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.load(i) for i in range(len(self)))

    def load(self, i: int) -> np.ndarray:
        """Image ``i`` (float32 H x W x 3 in [0, 1]); treat it as read-only."""
        hit = self._cache.get(i)
        if hit is not None:
            self._cache.move_to_end(i)
            return hit
        arr = self._load(i)
        arr.setflags(write=False)
        if arr.nbytes <= self.cache_bytes:
            self._cache[i] = arr
            self._cached += arr.nbytes
            while self._cached > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= old.nbytes
        return arr

    def manifest(self) -> str:
        """sha256 over the image digests in order: the pool's content key."""
        h = hashlib.sha256(f"pool|{len(self)}".encode())
        for i in range(len(self)):
            h.update(b"\n" + self.digest(i).encode())
        return h.hexdigest()

    def __getstate__(self) -> dict:
        # a worker process gets the recipe, not the parent's decoded images
        state = self.__dict__.copy()
        state["_cache"], state["_cached"] = OrderedDict(), 0
        return state

    def __eq__(self, other) -> bool:  # Sequence would compare element-wise (decoding everything)
        return self is other

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self)} images)"


class ArrayPool(ImagePool):
    """Images already in memory (the procedural pools, tests, third-party arrays)."""

    def __init__(self, arrays: Sequence[np.ndarray], ids: Sequence[str] | None = None, name: str = ""):
        super().__init__(name, cache_bytes=0)
        self._arrays = tuple(np.asarray(a, np.float32) for a in arrays)
        self._ids = tuple(ids) if ids is not None else tuple(f"{name or 'image'}-{i}" for i in range(len(arrays)))
        if len(self._ids) != len(self._arrays):
            raise ValueError(f"{len(self._ids)} ids for {len(self._arrays)} arrays")
        self._digests = tuple(array_digest(a) for a in self._arrays)

    @property
    def ids(self) -> tuple[str, ...]:
        return self._ids

    def digest(self, i: int) -> str:
        return self._digests[i]

    def _load(self, i: int) -> np.ndarray:
        return self._arrays[i]

    def load(self, i: int) -> np.ndarray:
        return self._arrays[i]


class FilePool(ImagePool):
    """Image files on disk, decoded on demand (``bench.data.read_image``)."""

    def __init__(self, paths: Sequence[str], ids: Sequence[str], name: str = "",
                 cache_bytes: int = DEFAULT_CACHE_BYTES):
        super().__init__(name, cache_bytes)
        self.paths = tuple(str(p) for p in paths)
        self._ids = tuple(ids)
        if len(self._ids) != len(self.paths):
            raise ValueError(f"{len(self._ids)} ids for {len(self.paths)} files")
        self._digests: dict[int, str] = {}

    @property
    def ids(self) -> tuple[str, ...]:
        return self._ids

    def digest(self, i: int) -> str:
        if i not in self._digests:
            from .data import _content_hash

            self._digests[i] = _content_hash(self.paths[i])
        return self._digests[i]

    def label(self, i: int) -> str:
        return self.paths[i]

    def size(self, i: int) -> tuple[int, int]:
        from PIL import Image

        try:
            with Image.open(self.paths[i]) as im:
                w, h = im.size
                swap = int(im.getexif().get(0x0112, 1) or 1) in (5, 6, 7, 8)  # EXIF rotations by 90 degrees
        except (OSError, SyntaxError, ValueError):
            return super().size(i)  # the decoder gives the one-line error
        return (w, h) if swap else (h, w)

    def _load(self, i: int) -> np.ndarray:
        from .data import read_image

        return np.ascontiguousarray(read_image(self.paths[i]).pixels, dtype=np.float32)


#: open LMDB environments by (process, real path). py-lmdb refuses to open one environment
#: twice in a process, and two pools (or an unpickled copy) may name the same folder; the
#: pid in the key keeps a forked worker from using its parent's handle.
_LMDB_ENVS: dict[tuple[int, str], object] = {}


class LmdbPool(ImagePool):
    """A BasicSR-style LMDB folder (``NAME.lmdb`` holding ``data.mdb`` and ``meta_info.txt``,
    one ``key.png (h,w,c) compression`` line per image), read lazily.

    The environment is opened on first use, read-only and without locks (many readers, no
    writer), and dropped when pickled, so each ``DataLoader`` worker opens its own: an LMDB
    handle must not cross a fork."""

    def __init__(self, path: str | os.PathLike, name: str = "", cache_bytes: int = DEFAULT_CACHE_BYTES):
        super().__init__(name, cache_bytes)
        self.path = str(path)
        self._env = None
        self._digests: dict[int, str] = {}
        meta = Path(self.path) / "meta_info.txt"
        if meta.is_file():
            keys = [_lmdb_key(line) for line in meta.read_text().splitlines() if line.strip()]
        else:  # no meta_info.txt: every key stored, in byte order (LMDB's own)
            with self.env().begin() as txn:
                keys = [k.decode() for k, _ in txn.cursor()]
        self._ids = tuple(keys)

    def env(self):
        if self._env is None:
            from .data import DataError

            try:
                import lmdb
            except ImportError:
                raise DataError(f"{self.path} is an LMDB; reading it needs the lmdb package: "
                                'pip install "unpaired-sr-bench[lmdb]"') from None
            key = (os.getpid(), os.path.realpath(self.path))
            env = _LMDB_ENVS.get(key)
            if env is None:
                try:
                    env = lmdb.open(self.path, readonly=True, lock=False, readahead=False, meminit=False)
                except lmdb.Error as exc:
                    raise DataError(f"cannot open LMDB {self.path} ({exc}); rebuild it or point to the image folder") from None
                _LMDB_ENVS[key] = env
            self._env = env
        return self._env

    @property
    def ids(self) -> tuple[str, ...]:
        return self._ids

    def _bytes(self, i: int) -> bytes:
        with self.env().begin() as txn:
            raw = txn.get(self._ids[i].encode())
        if raw is None:
            from .data import DataError

            raise DataError(f"{self.label(i)} is listed in meta_info.txt but not stored; rebuild the LMDB")
        return bytes(raw)

    def digest(self, i: int) -> str:
        if i not in self._digests:
            self._digests[i] = hashlib.sha256(self._bytes(i)).hexdigest()
        return self._digests[i]

    def label(self, i: int) -> str:
        return f"{self.path}:{self._ids[i]}"

    def _load(self, i: int) -> np.ndarray:
        import io
        import zlib

        from PIL import Image, UnidentifiedImageError

        from .data import DataError, _picture_from_pil

        where = self.label(i)
        try:
            img = Image.open(io.BytesIO(self._bytes(i)))
            img.load()
        except (OSError, SyntaxError, ValueError, EOFError, zlib.error, UnidentifiedImageError) as exc:
            raise DataError(f"cannot decode {where} ({str(exc)[:120] or type(exc).__name__}); "
                            "the LMDB entry is corrupt: rebuild the LMDB") from None
        return np.ascontiguousarray(_picture_from_pil(img, where).pixels, dtype=np.float32)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_env"] = None  # reopened lazily in the receiving process
        return state


def _lmdb_key(line: str) -> str:
    """``0001.png (1356,2040,3) 1`` -> ``0001``: BasicSR stores each image under its name
    without the extension (its readers take ``line.split('.')[0]``)."""
    first = line.split(" ")[0]
    return first.rsplit(".", 1)[0] if "." in first else first


class SubsetPool(ImagePool):
    """Some images of another pool, in the given order (the two halves of a split)."""

    def __init__(self, base: ImagePool, indices: Sequence[int], name: str = ""):
        super().__init__(name or base.name, cache_bytes=0)
        self.base = base
        self.indices = tuple(int(i) for i in indices)

    @property
    def ids(self) -> tuple[str, ...]:
        ids = self.base.ids
        return tuple(ids[i] for i in self.indices)

    def digest(self, i: int) -> str:
        return self.base.digest(self.indices[i])

    def label(self, i: int) -> str:
        return self.base.label(self.indices[i])

    def _load(self, i: int) -> np.ndarray:
        return self.base.load(self.indices[i])

    def load(self, i: int) -> np.ndarray:  # the base caches
        return self.base.load(self.indices[i])


class ConcatPool(ImagePool):
    """Several pools one after another (``--source DIV2K-train,Flickr2K``); ids are
    prefixed with each part's name where two parts would otherwise share one."""

    def __init__(self, parts: Sequence[ImagePool], name: str = ""):
        super().__init__(name or "+".join(p.name for p in parts), cache_bytes=0)
        self.parts = tuple(parts)
        self._where = tuple((k, i) for k, p in enumerate(self.parts) for i in range(len(p)))
        flat = [p.ids[i] for p in self.parts for i in range(len(p))]
        if len(set(flat)) != len(flat):
            flat = [f"{p.name}/{p.ids[i]}" for p in self.parts for i in range(len(p))]
        self._ids = tuple(flat)

    @property
    def ids(self) -> tuple[str, ...]:
        return self._ids

    def digest(self, i: int) -> str:
        k, j = self._where[i]
        return self.parts[k].digest(j)

    def label(self, i: int) -> str:
        k, j = self._where[i]
        return self.parts[k].label(j)

    def _load(self, i: int) -> np.ndarray:
        k, j = self._where[i]
        return self.parts[k].load(j)

    load = _load


class DerivedPool(ImagePool):
    """Another pool's images through a deterministic function (mod-crop, a synthetic
    degradation). ``key`` names the function and all its parameters: it enters every
    digest, so a changed degradation is a different pool. ``fn(image, id)`` must be a
    module-level callable (or a picklable object) so that loader workers can run it.

    ``store``: a folder where each derived image is written once under its digest (an
    expensive function, e.g. a synthetic degradation of a 2K image, is then run once per
    image, not once per sampled patch)."""

    def __init__(self, base: ImagePool, fn: Callable[[np.ndarray, str], np.ndarray], key: str, name: str = "",
                 cache_bytes: int = DEFAULT_CACHE_BYTES, store: str | os.PathLike | None = None):
        super().__init__(name or base.name, cache_bytes)
        self.base, self.fn, self.key = base, fn, key
        self.store = Path(store) if store is not None else None

    @property
    def ids(self) -> tuple[str, ...]:
        return self.base.ids

    def digest(self, i: int) -> str:
        return hashlib.sha256(f"{self.key}|{self.base.digest(i)}".encode()).hexdigest()

    def label(self, i: int) -> str:
        return self.base.label(i)

    def _load(self, i: int) -> np.ndarray:
        path = self.store / f"{self.digest(i)}.npy" if self.store is not None else None
        if path is not None and path.is_file():
            return np.load(path)
        out = np.asarray(self.fn(self.base.load(i), self.base.ids[i]), dtype=np.float32)  # a view stays a view
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npy")
            np.save(tmp, out)
            os.replace(tmp, path)  # atomic: a kill leaves the whole file or none
        return out


class SubImagePool(ImagePool):
    """Every image of ``base`` cut into ``crop`` x ``crop`` tiles, as BasicSR's
    ``extract_subimages`` does (tiles every ``step`` pixels, plus one flush with the
    bottom and right edges), so that sampling a patch decodes a small tile, not a 2K image.

    Tiles are written once under ``cache_dir`` in a folder per base image content digest
    (PNG where the image is 8-bit, which reloads to the same float32 values; ``.npy``
    otherwise): a pool of any size is cut once, and an edited image is cut again. Without
    ``cache_dir`` tiles are cut from the decoded base image on every cache miss.
    Images smaller than ``crop`` are one tile of their own size.
    """

    def __init__(self, base: ImagePool, crop: int = 480, step: int | None = None,
                 cache_dir: str | os.PathLike | None = None, name: str = "",
                 cache_bytes: int = DEFAULT_CACHE_BYTES):
        super().__init__(name or f"{base.name} ({crop}px tiles)", cache_bytes)
        if crop < 1:
            raise ValueError(f"sub-image crop must be positive, got {crop}")
        self.base, self.crop, self.step = base, int(crop), int(step or crop)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._tiles: list[tuple[int, int, int]] = []  # (base index, y, x), image by image
        self._first: list[int] = []  # index of each base image's first tile
        for b in range(len(base)):
            self._first.append(len(self._tiles))
            h, w = base.size(b)
            for y in self._starts(h):
                for x in self._starts(w):
                    self._tiles.append((b, y, x))
        self._first.append(len(self._tiles))
        self._ids = tuple(f"{base.ids[b]}@{y},{x}" for b, y, x in self._tiles)

    def _starts(self, n: int) -> list[int]:
        if n <= self.crop:
            return [0]
        out = list(range(0, n - self.crop + 1, self.step))
        if out[-1] + self.crop < n:
            out.append(n - self.crop)
        return out

    @property
    def ids(self) -> tuple[str, ...]:
        return self._ids

    def digest(self, i: int) -> str:
        b, y, x = self._tiles[i]
        return hashlib.sha256(f"tile:{self.crop}|{y},{x}|{self.base.digest(b)}".encode()).hexdigest()

    def label(self, i: int) -> str:
        b, y, x = self._tiles[i]
        return f"{self.base.label(b)} (tile at y={y}, x={x})"

    def _tile_path(self, i: int) -> Path | None:
        if self.cache_dir is None:
            return None
        b, y, x = self._tiles[i]
        return self.cache_dir / f"c{self.crop}" / self.base.digest(b) / f"{y}_{x}"

    def _load(self, i: int) -> np.ndarray:
        path = self._tile_path(i)
        if path is not None:
            for suffix in (".png", ".npy"):
                if path.with_suffix(suffix).is_file():
                    return _read_tile(path.with_suffix(suffix))
        b, y, x = self._tiles[i]
        im = self.base.load(b)
        if path is not None:  # cut every tile of this image at once: the decode is the cost
            for k in range(self._first[b], self._first[b + 1]):
                _, yy, xx = self._tiles[k]
                _write_tile(self._tile_path(k), im[yy:yy + self.crop, xx:xx + self.crop])
        return np.ascontiguousarray(im[y:y + self.crop, x:x + self.crop])


def _read_tile(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.float32) / 255.0


def _write_tile(path: Path, tile: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    q = np.clip(np.round(tile * 255.0), 0, 255).astype(np.uint8)
    exact = np.array_equal(np.asarray(q, np.float32) / 255.0, tile)  # 8-bit source: PNG is lossless
    final = path.with_suffix(".png" if exact else ".npy")
    tmp = final.with_name(f"{final.stem}.tmp{os.getpid()}{final.suffix}")
    if exact:
        from PIL import Image

        Image.fromarray(q).save(tmp, compress_level=1)
    else:
        np.save(tmp, np.ascontiguousarray(tile, np.float32))
    os.replace(tmp, final)  # atomic: a kill leaves a whole tile or none


def as_pool(images, name: str = "", ids: Sequence[str] | None = None) -> ImagePool:
    """A pool as it is, or arrays wrapped in an :class:`ArrayPool` (the documented path for
    adapters and tests that build their training data from arrays)."""
    if isinstance(images, ImagePool):
        return images
    return ArrayPool(tuple(images), ids=ids or None, name=name)
