"""Standard training sets: which folder under ``--data-root`` plays which role.

Roles (DESIGN's vocabulary): **source** = clean HR images the SR network learns to
produce; **target** = LR images of the domain to super-resolve, never paired with any
HR; **pairs-hr** / **pairs-lr** = a real set's aligned train pairs, for the oracle only.
Official codes name source and target the other way round in places; each spec in
``bench/training_sets/*.toml`` says how its folders map to ours (``official_names``).

A role is one or more folders relative to the set's root (``{s}`` = the run's scale),
optionally filtered by a file-stem pattern whose first group aligns pairs by name. Any
role folder may instead be a BasicSR LMDB ``NAME.lmdb`` beside where ``NAME`` would be.
A standard set whose folder holds another number of images than its spec expects is
refused unless ``--allow-partial`` (then warned, and the count is recorded by the pool).
"""
from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping


from .adapter import read_toml, unknown_name
from .data import DataError, DataWarning, list_images
from .pools import ConcatPool, FilePool, ImagePool, LmdbPool, SubsetPool

SPECS_DIR = Path(__file__).resolve().parent / "training_sets"
ROLES = ("source", "target", "pairs-hr", "pairs-lr")


# ---------------------------------------------------------------------------
# specs
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RoleSpec:
    """Where one role's images are: ``folders`` relative to the set's root (all that exist
    are used, in order), ``match`` a regex on the file stem (``{s}`` = scale) whose first
    group is the name pairs are aligned by; ``counts``: scale -> expected images (key 0:
    every scale; 0 images: not checked)."""

    folders: tuple[str, ...]
    match: str = ""
    counts: Mapping[int, int] = field(default_factory=dict)

    def expected(self, scale: int) -> int:
        return int(self.counts.get(scale, self.counts.get(0, 0)))


@dataclass(frozen=True)
class TrainingSetSpec:
    """One ``bench/training_sets/<name>.toml``."""

    name: str
    aliases: tuple[str, ...]
    folders: tuple[str, ...]
    layout: str
    roles: Mapping[str, RoleSpec]
    scales: tuple[int, ...]  # () = every scale
    source: str
    licence: str
    official_names: str = ""
    notes: str = ""
    valid: str = ""
    compose: tuple[str, ...] = ()  # sets concatenated when none of ``folders`` exists (DF2K)
    no_source: str = ""  # why the set has no source role, and what to pass instead
    hints: Mapping[str, str] = field(default_factory=dict)  # role -> what to do when its folder is missing
    count_strict: bool = True  # False: a count mismatch is warned, never refused (counts not verified)
    path: str = ""

    def at(self, scale: int) -> bool:
        return not self.scales or scale in self.scales

    def role(self, role: str) -> RoleSpec | None:
        return self.roles.get(role)


def _role_spec(value, counts) -> RoleSpec:
    if isinstance(value, str):
        value = {"folders": [value]}
    elif isinstance(value, list):
        value = {"folders": value}
    if isinstance(counts, Mapping):
        cmap = {int(k): int(v) for k, v in counts.items()}
    else:
        cmap = {0: int(counts or 0)}
    return RoleSpec(tuple(value["folders"]), str(value.get("match", "")), cmap)


def _parse(f: Path) -> TrainingSetSpec:
    d = read_toml(f, "training-set spec", error=DataError)
    counts = d.get("counts", {})
    bad = set(d.get("roles", {})) - set(ROLES)
    if bad:
        raise DataError(f"training-set spec {f} names unknown role(s) {', '.join(sorted(bad))}; use {', '.join(ROLES)}")
    return TrainingSetSpec(
        name=d["name"], aliases=tuple(d.get("aliases", ())), folders=tuple(d.get("folders", (d["name"],))),
        layout=d.get("layout", "folder"),
        roles={r: _role_spec(v, counts.get(r, 0)) for r, v in d.get("roles", {}).items()},
        scales=tuple(int(s) for s in d.get("scales", ())), source=d.get("source", ""), licence=d.get("licence", ""),
        official_names=d.get("official_names", ""), notes=d.get("notes", ""), valid=d.get("valid", ""),
        compose=tuple(d.get("compose", ())), no_source=d.get("no_source", ""), hints=dict(d.get("hints", {})),
        count_strict=bool(d.get("count_strict", True)), path=str(f),
    )


@functools.lru_cache(maxsize=1)
def load_training_specs() -> tuple[TrainingSetSpec, ...]:
    """Every training-set spec shipped in ``bench/training_sets/`` (read once)."""
    return tuple(_parse(f) for f in sorted(SPECS_DIR.glob("*.toml")))


def training_names() -> list[str]:
    return [n for sp in load_training_specs() for n in (sp.name, *sp.aliases)]


def find_training_spec(name: str) -> TrainingSetSpec | None:
    """The spec called ``name`` or one of its aliases (case-insensitive), else None."""
    key = name.strip().casefold()
    for sp in load_training_specs():
        if key in {n.casefold() for n in (sp.name, *sp.aliases)}:
            return sp
    return None


def _spec_or_raise(name: str, flag: str) -> TrainingSetSpec:
    sp = find_training_spec(name)
    if sp is None:
        raise DataError(unknown_name("training set", name, training_names())
                        + f"; or give a folder as {flag} NAME=PATH (see --list datasets)")
    return sp


def list_training_sets() -> list[dict[str, str]]:
    """One row per standard training set (for ``--list datasets``)."""
    rows = []
    for sp in load_training_specs():
        roles = []
        for r, rs in sp.roles.items():
            n = {s: c for s, c in sorted(rs.counts.items()) if c}
            count = (f" ({', '.join(f'x{s}: {c:,}' if s else f'{c:,}' for s, c in n.items())})" if n else "")
            folders = sp.folders if rs.folders == (".",) else rs.folders  # "." = the set's root itself
            roles.append(f"{r}: {' | '.join(folders)}{count}")
        if sp.compose:
            roles.append("or " + " + ".join(sp.compose))
        rows.append({"training set": sp.name, "aliases": ", ".join(sp.aliases),
                     "scales": ",".join(f"x{s}" for s in sp.scales) or "any",
                     "roles": "; ".join(roles), "source": sp.source, "licence": sp.licence})
    return rows


# ---------------------------------------------------------------------------
# folders -> pools
# ---------------------------------------------------------------------------
def _lmdb_at(p: Path) -> Path | None:
    """``p`` itself when it is an LMDB folder, else ``p.lmdb`` beside it when that is one."""
    for cand in (p, p.with_name(p.name + ".lmdb")):
        if cand.name.endswith(".lmdb") and (cand / "data.mdb").is_file():
            return cand
    return None


def _exists(p: Path) -> bool:
    return p.is_dir() or _lmdb_at(p) is not None


def folder_pool(path: Path, name: str, *, id_root: Path | None = None) -> ImagePool:
    """A folder of images (``bench.data.list_images``; ids = paths relative to ``id_root``)
    or a BasicSR LMDB folder, as one pool called ``name``."""
    lm = _lmdb_at(path)
    if lm is not None:
        return LmdbPool(lm, name=name)
    if not path.is_dir():
        raise DataError(f"{name}: {path} is not a folder; give a folder of images or a NAME.lmdb folder")
    files = list_images(path)
    if not files:
        raise DataError(f"{name}: {path} holds no images (also looked in its subfolders); "
                        "point to the folder with the images")
    base = id_root or path
    return FilePool([str(f) for f in files], [f.relative_to(base).as_posix() for f in files], name=name)


def _resolve_root(sp: TrainingSetSpec, data_root: str | None, role: str, scale: int, flag: str) -> Path:
    """The first candidate root under ``data_root`` where ``role`` is present."""
    if not data_root:
        raise DataError(f"training set {sp.name} is looked up under --data-root, which is not set; "
                        f"pass --data-root DIR or {flag} {sp.name}=PATH")
    root = Path(data_root).expanduser()
    cands = [root / f for f in sp.folders]
    rs = sp.role(role)
    for c in cands:
        if rs is not None and any(_exists(c / f.format(s=scale)) for f in rs.folders):
            return c
    present = next((c for c in cands if c.is_dir()), None)
    if present is not None and rs is not None:
        return present  # the role's own check names what is missing there
    also = f"; or {flag} {sp.name}=PATH"
    raise DataError(f"training set {sp.name} not found under --data-root {root} (looked for "
                    f"{', '.join(sp.folders)}, also as NAME.lmdb){also}")


def _check_count(sp: TrainingSetSpec, where: Path, n: int, expected: int, allow_partial: bool) -> None:
    if not expected or n == expected:
        return
    msg = (f"training set {sp.name} at {where} has {n} images, its spec expects {expected}; complete the "
           "download, or pass --allow-partial to train on what is there (the count is then recorded)")
    if sp.count_strict and not allow_partial:
        raise DataError(msg)
    warnings.warn(msg, DataWarning, stacklevel=4)


def _role_parts(sp: TrainingSetSpec, root: Path, role: str, scale: int, label: str, flag: str
                ) -> list[tuple[int, Path, ImagePool]]:
    """(folder index, folder, pool) for every folder of ``role`` present under ``root``,
    filtered by the role's stem pattern."""
    rs = sp.role(role)
    parts = []
    for k, f in enumerate(rs.folders):
        p = root / f.format(s=scale) if f != "." else root
        if not _exists(p):
            continue
        pool = folder_pool(p, label, id_root=root if p.is_dir() else None)
        if rs.match:
            pat = re.compile(rs.match.format(s=scale))
            keep = [i for i, x in enumerate(pool.ids) if pat.fullmatch(_stem(x))]
            pool = SubsetPool(pool, keep, name=label)
        parts.append((k, p, pool))
    if not parts:
        hint = sp.hints.get(role) or f"put it there or pass {flag} {sp.name}=PATH"
        looked = ", ".join(f.format(s=scale) for f in rs.folders)
        raise DataError(f"training set {sp.name} at {root} has no {role} folder (looked for {looked}, "
                        f"also as .lmdb); {hint}")
    return parts


def _stem(image_id: str) -> str:
    name = image_id.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def _role_pool(sp: TrainingSetSpec, root: Path, role: str, scale: int, *, allow_partial: bool, flag: str
               ) -> ImagePool:
    label = f"{sp.name} {role}"
    parts = _role_parts(sp, root, role, scale, label, flag)
    pool = parts[0][2] if len(parts) == 1 else ConcatPool([p for _, _, p in parts], name=label)
    if not len(pool):
        raise DataError(f"training set {sp.name} at {parts[0][1]} has no {role} images at x{scale}; "
                        "restore them or point to another copy")
    where = parts[0][1] if len(parts) == 1 else root
    _check_count(sp, where, len(pool), sp.role(role).expected(scale), allow_partial)
    return pool


def _pairs(sp: TrainingSetSpec, root: Path, scale: int, *, allow_partial: bool, flag: str
           ) -> tuple[ImagePool, ImagePool]:
    """(HR, LR) of the set's train pairs, aligned by (folder, name key)."""
    sides = {}
    for role in ("pairs-hr", "pairs-lr"):
        pool = _role_pool(sp, root, role, scale, allow_partial=allow_partial, flag=flag)
        pat = re.compile(sp.role(role).match.format(s=scale)) if sp.role(role).match else None
        keyed = {}
        for i, image_id in enumerate(pool.ids):
            stem = _stem(image_id)
            m = pat.fullmatch(stem) if pat else None
            folder = image_id.rsplit("/", 1)[0] if "/" in image_id else ""
            # HR and LR halves may sit in sibling folders (train_HR / train_LR): key by the camera/scale part
            folder = re.sub(r"(train_HR|train_LR)$", "", folder)
            keyed[(folder, m.group(1) if m else stem)] = i
        sides[role] = (pool, keyed)
    (hr, hk), (lr, lk) = sides["pairs-hr"], sides["pairs-lr"]
    missing = [k for k in hk if k not in lk]
    if missing:
        i = hk[missing[0]]
        raise DataError(f"{hr.label(i)} has no LR partner in {sp.name} at {root}; restore the pair or remove the HR file")
    keys = sorted(hk)
    return (SubsetPool(hr, [hk[k] for k in keys], name=f"{sp.name} pairs HR"),
            SubsetPool(lr, [lk[k] for k in keys], name=f"{sp.name} pairs LR"))


# ---------------------------------------------------------------------------
# --source and --target
# ---------------------------------------------------------------------------
def _split_entry(entry: str, flag: str) -> tuple[str, str]:
    name, sep, path = entry.partition("=")
    name, path = name.strip(), path.strip()
    if not name or (sep and not path):
        raise DataError(f"{flag} entry {entry!r} needs a name and, after '=', a path; write NAME or NAME=PATH")
    return name, path


def _standard_source(sp: TrainingSetSpec, data_root: str | None, allow_partial: bool) -> ImagePool:
    if sp.role("source") is None:
        raise DataError(f"training set {sp.name} has no source role: {sp.no_source or 'it holds no clean HR images'}")
    if sp.compose and not _own_copy(sp, data_root):
        parts = [_standard_source(_spec_or_raise(n, "--source"), data_root, allow_partial) for n in sp.compose]
        # each part has passed (or been allowed past) its own count check
        return ConcatPool(parts, name=f"{sp.name} source")
    root = _resolve_root(sp, data_root, "source", 0, "--source")
    return _role_pool(sp, root, "source", 0, allow_partial=allow_partial, flag="--source")


def _own_copy(sp: TrainingSetSpec, data_root: str | None) -> bool:
    return bool(data_root) and any(_exists(Path(data_root).expanduser() / f) for f in sp.folders)


def resolve_source(text: str, data_root: str | None, *, allow_partial: bool) -> ImagePool:
    """``--source``: comma-separated ``NAME`` (a standard set's source role, looked up under
    ``data_root``) or ``NAME=PATH`` (a folder of images or an ``.lmdb`` folder, called
    ``NAME``); several are concatenated in the order given."""
    parts: list[ImagePool] = []
    seen: set[str] = set()
    for entry in (e.strip() for e in (text or "").split(",")):
        if not entry:
            continue
        name, path = _split_entry(entry, "--source")
        if name.casefold() in seen:
            raise DataError(f"--source names {name!r} twice; give each pool once")
        seen.add(name.casefold())
        if path:
            p = _given_path(path, data_root, name, "--source")
            parts.append(folder_pool(p, name))
        else:
            parts.append(_standard_source(_spec_or_raise(name, "--source"), data_root, allow_partial))
    if not parts:
        raise DataError("--source is empty; name a training set (DIV2K-train, DF2K, ...) or NAME=PATH")
    return parts[0] if len(parts) == 1 else ConcatPool(parts)


def _given_path(path: str, data_root: str | None, name: str, flag: str) -> Path:
    p = Path(path).expanduser()
    if not _exists(p) and data_root and not p.is_absolute() and _exists(Path(data_root).expanduser() / p):
        p = Path(data_root).expanduser() / p
    if not _exists(p):
        also = f" or under --data-root {data_root}" if data_root else ""
        raise DataError(f"{flag} {name}: {path} does not exist (looked here{also}); give a folder of images or a NAME.lmdb folder")
    return p


@dataclass(frozen=True)
class TargetSet:
    """A real target domain: its LR pool, the set's aligned train pairs (oracle only) or
    None, and the licence its images are under."""

    name: str
    target: ImagePool
    pairs: tuple[ImagePool, ImagePool] | None
    licence: str


def resolve_training_target(text: str, data_root: str | None, *, scale: int, allow_partial: bool
                            ) -> TargetSet | None:
    """``lr:PATH`` (a folder of unpaired LR images), ``NAME`` (a standard set under
    ``data_root``) or ``NAME=ROOT`` (the set's root given, e.g. the test dataset's own).
    None when the set has no target role at ``scale``."""
    text = text.strip()
    if text.startswith("lr:"):
        p = _given_path(text[3:], None, "lr", "--target")
        return TargetSet(f"lr:{p}", folder_pool(p, f"LR folder {p}"), None, "")
    name, given = _split_entry(text, "--target")
    sp = _spec_or_raise(name, "--target")
    if sp.role("target") is None or not sp.at(scale):
        return None
    if given:
        root = Path(given).expanduser()
        if not root.is_dir():
            raise DataError(f"--target {sp.name}={given}: the folder does not exist; give the set's root folder")
    else:
        root = _resolve_root(sp, data_root, "target", scale, "--target")
    target = _role_pool(sp, root, "target", scale, allow_partial=allow_partial, flag="--target")
    pairs = None
    if sp.role("pairs-hr") is not None and sp.role("pairs-lr") is not None:
        pairs = _pairs(sp, root, scale, allow_partial=allow_partial, flag="--target")
    return TargetSet(sp.name, target, pairs, sp.licence)


# ---------------------------------------------------------------------------
# a test dataset's own train split
# ---------------------------------------------------------------------------
def matching_training_set(ds) -> str | None:
    """The training set whose train split lives beside test dataset ``ds``'s root, when
    that split is there; else None (per-domain methods are then marked not fitted)."""
    root = Path(ds.root)
    if not root.is_dir():
        return None
    if ds.layout == "realsr-v3":
        if any((root / cam / "Train").is_dir() for cam in ("Canon", "Nikon")) or (root / "Train").is_dir():
            return "RealSR-V3"
        return None
    if ds.layout == "drealsr":
        for cand in [root, *(p for p in root.iterdir() if p.is_dir())]:
            if any(d.is_dir() and re.fullmatch(r"Train_x\d+", d.name) for d in cand.iterdir()):
                return "DRealSR"
        return None
    if ds.layout == "ntire2020":
        splits = {Path(p).parent.name for it in ds.items for p in it.lr.values()}
        if splits & {"Corrupted-va-x", "Corrupted-te-x"} and _exists(root / "Corrupted-tr-x"):
            return "NTIRE2020-T1"
        if any(s.startswith("DPEDiphone-") for s in splits) and _exists(root / "DPEDiphone-tr-x"):
            return "NTIRE2020-T2"
    return None
