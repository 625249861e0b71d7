"""Named degradation suites: frozen specs with canonical names ``family:key=value,...``.

Keys appear in the order the family declares them, numbers as ``format(x, 'g')``
(``sigma=1.2``, ``sigma=0``, ``q=30``). A family name alone expands to its standard set
for the scale. Users declare more suites in TOML (see :func:`load_toml_suites`).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from bench.adapter import BenchError, read_toml, unknown_name
from bench.degrade.steps import Blur, Jpeg, Noise, Realistic, Resize, Step

Value = float | int | str
PIPELINE_VERSION = "1"  # bump when a step's numerics change, so caches keyed by fingerprint() refresh


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    keys: tuple[tuple[str, type], ...]
    standard: Callable[[int], list[dict[str, Value]]]
    build: Callable[[dict[str, Value]], tuple[Step, ...]]
    check: Callable[[dict[str, Value]], None] = lambda p: None


def _fmt(v: Value) -> str:
    return format(v, "g") if isinstance(v, (int, float)) else str(v)


def _per_scale(table: Mapping[int, list], family: str, key: str) -> Callable[[int], list[dict[str, Value]]]:
    def standard(scale: int) -> list[dict[str, Value]]:
        if scale not in table:
            raise BenchError(
                f"{family} has standard {key} values for x{', x'.join(map(str, table))} only; "
                f"name one for x{scale}, e.g. '{family}:{key}=1.2'"
            )
        return [{key: v} for v in table[scale]]
    return standard


def _in_range(key: str, lo: float, hi: float, family: str) -> Callable[[dict[str, Value]], None]:
    def check(p: dict[str, Value]) -> None:
        if not lo <= float(p[key]) <= hi:
            raise BenchError(f"{family}: {key}={_fmt(p[key])} is out of range; use {_fmt(lo)}..{_fmt(hi)}")
    return check


def _both(*checks: Callable[[dict[str, Value]], None]) -> Callable[[dict[str, Value]], None]:
    def check(p: dict[str, Value]) -> None:
        for c in checks:
            c(p)
    return check


def _noise(sigma: Value) -> tuple[Step, ...]:
    return (Noise("gaussian", float(sigma)),) if float(sigma) > 0 else ()


MATLAB = Resize("matlab")
DASR_ISO_WIDTHS = {2: [0, 0.6, 1.2, 1.8], 3: [0, 0.8, 1.6, 2.4], 4: [0, 1.2, 2.4, 3.6]}
# IKC Gaussian8: 8 widths evenly spaced; x4 [1.8, 3.2] (IKC), x2 [0.8, 1.6] and x3 [1.35, 2.4] (as DAN/IKC report).
GAUSSIAN8_WIDTHS = {s: [float(format(v, "g")) for v in np.linspace(lo, hi, 8)]
                    for s, (lo, hi) in {2: (0.8, 1.6), 3: (1.35, 2.4), 4: (1.8, 3.2)}.items()}

_FAMILIES: tuple[Family, ...] = (
    Family("bicubic", "MATLAB bicubic (antialiased) downsampling only", (),
           lambda s: [{}], lambda p: (MATLAB,)),
    Family("dasr-iso", "DASR-Wang Table 2: isotropic Gaussian (std sigma, 21x21, reflect) + MATLAB bicubic; sigma=0 is bicubic",
           (("sigma", float),), _per_scale(DASR_ISO_WIDTHS, "dasr-iso", "sigma"),
           lambda p: ((Blur("iso", sigma=float(p["sigma"])),) if float(p["sigma"]) > 0 else ()) + (MATLAB,),
           _in_range("sigma", 0, 20, "dasr-iso")),
    Family("dasr-aniso", "DASR-Wang Table 3: anisotropic kernel k=1..9 + MATLAB bicubic + AWGN noise (0-255)",
           (("k", int), ("noise", float)),
           lambda s: [{"k": k, "noise": n} for k in range(1, 10) for n in (0, 5, 10)],
           lambda p: (Blur("table3", k=int(p["k"])), MATLAB) + _noise(p["noise"]),
           _both(_in_range("k", 1, 9, "dasr-aniso"), _in_range("noise", 0, 255, "dasr-aniso"))),
    Family("gaussian8", "IKC Gaussian8: isotropic Gaussian (21x21, reflect) + PIL bicubic on 8-bit levels",
           (("sigma", float),), _per_scale(GAUSSIAN8_WIDTHS, "gaussian8", "sigma"),
           lambda p: (Blur("iso", sigma=float(p["sigma"])), Resize("pil-ikc")),
           _in_range("sigma", 0.01, 20, "gaussian8")),
    Family("manet-si", "MANet/CDSR spatially-invariant: 9 shifted kernels (variances), replicate pad, s-fold, AWGN",
           (("k", int), ("noise", float)),
           lambda s: [{"k": k, "noise": n} for n in ((0, 15) if s == 4 else (0,)) for k in range(1, 10)],
           lambda p: (Blur("manet", k=int(p["k"]), padding="replicate"), Resize("sfold")) + _noise(p["noise"]),
           _both(_in_range("k", 1, 9, "manet-si"), _in_range("noise", 0, 255, "manet-si"))),
    Family("aniso", "three DASR Table 3 kernels (k=2 mild, 5, 8 strong) + MATLAB bicubic, no noise",
           (("k", int),), lambda s: [{"k": k} for k in (2, 5, 8)],
           lambda p: (Blur("table3", k=int(p["k"])), MATLAB), _in_range("k", 1, 9, "aniso")),
    Family("noise", "MATLAB bicubic then AWGN (sigma on 0-255)", (("sigma", float),),
           lambda s: [{"sigma": v} for v in (5, 15, 25)], lambda p: (MATLAB,) + _noise(p["sigma"]),
           _in_range("sigma", 0, 255, "noise")),
    Family("jpeg", "MATLAB bicubic then JPEG (Pillow) at quality q", (("q", int),),
           lambda s: [{"q": v} for v in (30, 50, 70)], lambda p: (MATLAB, Jpeg(int(p["q"]))),
           _in_range("q", 1, 100, "jpeg")),
    Family("mixed", "Table 3 kernel 5 blur + MATLAB bicubic + AWGN 10 + JPEG q60 (default unknown target domain)", (),
           lambda s: [{}], lambda p: (Blur("table3", k=5), MATLAB, Noise("gaussian", 10.0), Jpeg(60))),
    Family("realistic", "Real-ESRGAN-style second-order pipeline, parameters drawn per image", (),
           lambda s: [{}], lambda p: (Realistic(),)),
    Family("div2krk", "DIV2KRK-style random anisotropic kernel per image (KernelGAN recipe) + s-fold", (),
           lambda s: [{}], lambda p: (Blur("div2krk", padding="symmetric"), Resize("sfold"))),
)
FAMILIES: Mapping[str, Family] = MappingProxyType({f.name: f for f in _FAMILIES})


def _normalise(family: Family, params: Mapping[str, Value]) -> tuple[tuple[str, Value], ...]:
    declared = dict(family.keys)
    extra = set(params) - set(declared)
    if extra:
        keys = ", ".join(declared) or "none"
        raise BenchError(f"suite family {family.name!r} has no key(s) {', '.join(sorted(extra))}; its keys: {keys}")
    out = []
    for key, typ in family.keys:
        if key not in params:
            raise BenchError(f"suite {family.name!r} needs {key}=...; give it, or name the family alone for its standard set")
        raw = params[key]
        try:
            if typ is int:
                as_float = float(raw)
                if as_float != int(as_float):
                    raise ValueError
                value: Value = int(as_float)
            elif typ is float:
                value = float(format(float(raw), "g"))  # the name is the truth: 6 significant digits
            else:
                value = str(raw)
        except (TypeError, ValueError):
            raise BenchError(f"suite {family.name!r}: {key}={raw!r} is not a valid {typ.__name__}") from None
        out.append((key, value))
    family.check(dict(out))
    return tuple(out)


@dataclass(frozen=True)
class Suite:
    """A degradation spec. Built-ins: ``family`` + ``params``. TOML suites: ``custom_steps``."""

    family: str
    params: tuple[tuple[str, Value], ...] = ()
    custom_steps: tuple[Step, ...] = ()

    def __post_init__(self) -> None:
        if self.custom_steps:
            if self.params:
                raise BenchError(f"TOML suite {self.family!r} takes no key=value parameters")
            return
        if self.family not in FAMILIES:
            raise BenchError(unknown_name("degradation suite family", self.family, FAMILIES))
        object.__setattr__(self, "params", _normalise(FAMILIES[self.family], dict(self.params)))

    @property
    def name(self) -> str:
        if not self.params:
            return self.family
        return self.family + ":" + ",".join(f"{k}={_fmt(v)}" for k, v in self.params)

    def steps(self) -> tuple[Step, ...]:
        if self.custom_steps:
            return self.custom_steps
        return FAMILIES[self.family].build(dict(self.params))

    def fingerprint(self) -> str:
        """Hash of everything that shapes the LR bytes (name, steps, pipeline version): a cache key."""
        text = f"{PIPELINE_VERSION}|{self.name}|{self.steps()!r}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def is_random(self) -> bool:
        """Whether images draw anything (noise, JPEG ranges, random kernels) from the seed."""
        return any(isinstance(s, (Noise, Realistic)) or (isinstance(s, Blur) and s.kernel == "div2krk")
                   or (isinstance(s, Jpeg) and isinstance(s.q, tuple)) for s in self.steps())


def list_families(extra_toml: Path | None = None) -> dict[str, str]:
    """Family name -> one-line description (built-ins, then TOML suites)."""
    out = {f.name: f.description for f in _FAMILIES}
    if extra_toml is not None:
        out.update({name: desc for name, (_, desc) in _read_toml(Path(extra_toml)).items()})
    return out


# ---------------------------------------------------------------- parsing names

_KV = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*=\s*(.+?)\s*$")


def _split_items(text: str) -> list[str]:
    """Split a suite list on ';' or '+', and on ',' unless the comma continues ``key=value``s."""
    items: list[str] = []
    for chunk in re.split(r"[;+]", text):
        for token in chunk.split(","):
            token = token.strip()
            if not token:
                continue
            if "=" in token and ":" not in token and items and ":" in items[-1]:
                items[-1] += "," + token  # a further key=value of the previous family
            else:
                items.append(token)
    return items


def _parse_item(item: str) -> tuple[str, dict[str, str]]:
    family, _, rest = item.partition(":")
    params: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        m = _KV.match(part)
        if not m:
            raise BenchError(f"cannot read {part!r} in suite {item!r}: write key=value, e.g. 'dasr-iso:sigma=1.2'")
        params[m.group(1)] = m.group(2)
    return family.strip(), params


def _expand(family: Family, given: dict[str, str], scale: int) -> list[Suite]:
    keys = [k for k, _ in family.keys]
    unknown = set(given) - set(keys)
    if unknown:
        raise BenchError(f"suite family {family.name!r} has no key(s) {', '.join(sorted(unknown))}; its keys: {', '.join(keys) or 'none'}")
    if len(given) == len(keys):
        return [Suite(family.name, tuple(given.items()))]
    missing = [k for k in keys if k not in given]
    combos: list[tuple] = []
    for p in family.standard(scale):
        combo = tuple(p[k] for k in missing)
        if combo not in combos:
            combos.append(combo)
    return [Suite(family.name, tuple({**given, **dict(zip(missing, c))}.items())) for c in combos]


def parse_suites(text: str, scale: int, extra_toml: Path | None = None) -> list[Suite]:
    """Read a list of suites, e.g. ``"bicubic,aniso,dasr-iso:sigma=2.4"``.

    Items are separated by ``;``, ``+`` or ``,``; a comma followed by ``key=value``
    (no ``:``) continues the previous item, so canonical names such as
    ``dasr-aniso:k=1,noise=5`` can be listed as they are. A family name alone gives its
    standard set for ``scale``; a family with some keys fixed gives the standard values
    of the others (``dasr-aniso:noise=5`` = 9 kernels at noise 5). Names declared in
    ``extra_toml`` are accepted too. Duplicates are dropped, order kept.
    """
    custom = load_toml_suites(extra_toml) if extra_toml is not None else {}
    out: list[Suite] = []
    for item in _split_items(text):
        fam, given = _parse_item(item)
        if fam in custom:
            if given:
                raise BenchError(f"TOML suite {fam!r} takes no key=value parameters (got {item!r})")
            found = [custom[fam]]
        elif fam in FAMILIES:
            found = _expand(FAMILIES[fam], given, scale)
        else:
            raise BenchError(unknown_name("degradation suite family", fam, [*FAMILIES, *custom]))
        out.extend(s for s in found if s not in out)
    if not out:
        raise BenchError(f"no suites in {text!r}; name at least one, e.g. 'bicubic' (known: {', '.join(FAMILIES)})")
    return out


def get_suite(name: str, extra_toml: Path | None = None) -> Suite:
    """Parse one full canonical name, e.g. ``dasr-iso:sigma=1.2`` (all keys given)."""
    fam, given = _parse_item(name.strip())
    if extra_toml is not None:
        custom = load_toml_suites(extra_toml)
        if fam in custom and not given:
            return custom[fam]
    if fam not in FAMILIES:
        raise BenchError(unknown_name("degradation suite family", fam, FAMILIES))
    return Suite(fam, tuple(given.items()))


# ---------------------------------------------------------------- TOML suites

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_STEP_FIELDS: dict[str, tuple[type, dict[str, str]]] = {
    # op -> (step class, TOML field -> dataclass field)
    "blur": (Blur, {"kernel": "kernel", "sigma": "sigma", "theta": "theta", "l1": "l1", "l2": "l2",
                    "k": "k", "size": "size", "padding": "padding"}),
    "resize": (Resize, {"method": "method"}),
    "noise": (Noise, {"kind": "kind", "sigma": "level", "scale": "level", "gray": "gray"}),
    "jpeg": (Jpeg, {"q": "q"}),
    "realistic": (Realistic, {}),
}


def _toml_value(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _make_step(suite: str, i: int, spec: Any) -> Step:
    where = f"suite {suite!r} step {i + 1}"
    if not isinstance(spec, dict) or "op" not in spec:
        raise BenchError(f"{where}: each step is a table with op = one of {', '.join(_STEP_FIELDS)}")
    op = spec["op"]
    if op not in _STEP_FIELDS:
        raise BenchError(f"{where}: " + unknown_name("step op", str(op), _STEP_FIELDS))
    cls, fields = _STEP_FIELDS[op]
    kwargs = {}
    for key, value in spec.items():
        if key == "op":
            continue
        if key not in fields:
            raise BenchError(f"{where}: {op} has no field {key!r}; fields: {', '.join(fields) or 'none'}")
        kwargs[fields[key]] = _toml_value(value)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise BenchError(f"{where}: {exc}") from None


def _read_toml(path: Path) -> dict[str, tuple[Suite, str]]:
    data = read_toml(path, "suite file", missing="pass the path of a TOML file with [suite.NAME] tables")
    tables = data.get("suite")
    if not isinstance(tables, dict) or not tables:
        raise BenchError(f"suite file {path} declares no suites; add a [suite.NAME] table with steps = [...]")
    out: dict[str, tuple[Suite, str]] = {}
    for name, table in tables.items():
        if not _NAME.match(name) or name in FAMILIES:
            why = "is a built-in family" if name in FAMILIES else "must be lower-case letters, digits, '-', '_' or '.'"
            raise BenchError(f"suite name {name!r} in {path} {why}; choose another")
        raw_steps = table.get("steps") if isinstance(table, dict) else None
        if not isinstance(raw_steps, list) or not raw_steps:
            raise BenchError(f"suite {name!r} in {path} needs steps = [ {{ op = \"resize\" }}, ... ]")
        steps = tuple(_make_step(name, i, s) for i, s in enumerate(raw_steps))
        n_down = sum(isinstance(s, (Resize, Realistic)) for s in steps)
        if n_down != 1:
            raise BenchError(f"suite {name!r} in {path} must downsample exactly once (one resize or realistic step), found {n_down}")
        out[name] = (Suite(name, (), steps), str(table.get("description", "user suite from " + path.name)))
    return out


def load_toml_suites(path: Path | None) -> dict[str, Suite]:
    """Suites declared in a TOML file::

        [suite.my-camera]
        description = "mild motion-free blur, sensor noise, JPEG"
        steps = [
          { op = "blur", kernel = "aniso", theta = 30, l1 = 2.5, l2 = 1.0 },  # or iso/sigma, table3/k, manet/k, div2krk
          { op = "resize", method = "matlab" },                             # matlab | pil | pil-ikc | sfold
          { op = "noise", kind = "gaussian", sigma = [5, 15] },             # a [low, high] pair is drawn per image
          { op = "jpeg", q = [40, 80] },
        ]
    """
    if path is None:
        return {}
    return {name: suite for name, (suite, _) in _read_toml(Path(path)).items()}
