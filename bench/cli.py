"""Command line: ``python run_bench.py [COMMAND] [options]``.

Without a command it runs the benchmark (``run``). Every user error is one line on
stderr, no traceback (``--debug`` shows it).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

from .adapter import PROFILE_SPECS, PROFILES, BenchError, BenchWarning

COMMANDS = ("run", "fit", "check-adapter", "timing", "degrade", "tables", "paper", "fidelity", "curves", "repair")

EPILOG = """\
examples:
  python run_bench.py --methods all
      every registered method on the embedded default data (quick profile on a CPU)
  python run_bench.py --methods bicubic,edsr-bicubic --datasets Set5,Set14 --data-root DATA --suites dasr-iso
  python run_bench.py --methods bicubic --datasets Set5=../shared/datasets/Set5 --suites bicubic --metrics psnr,ssim
  python run_bench.py --datasets photos=lr:~/phone_pictures --metrics niqe
  python run_bench.py --methods fssr,pdm --source DIV2K-train --target NTIRE2020-T1 --datasets NTIRE2020-T1 --data-root DATA
      unpaired methods fitted to NTIRE 2020 Track 1's corrupted training images, clean DIV2K as source
  python run_bench.py --methods all --source mine=~/hr_photos --target lr:~/phone_pictures --datasets phone=lr:~/phone_test
  python run_bench.py --config run.toml --print-config      the resolved run, as a run file
  python run_bench.py check-adapter mypkg.sr:MyMethod
  python run_bench.py timing --methods all --device cuda
  python run_bench.py degrade --suites dasr-aniso --scales 4 --datasets Set14 --data-root DATA --out lr_sets/
  python run_bench.py --list suites
  python run_bench.py --methods all --cluster local:4
  python run_bench.py --methods all --cluster tcp://head:8786 --cache /shared/usrb-cache --out results

Results go to --out (default results/): results.sqlite (the store), summary.csv
(method,variant,dataset,suite,scale,protocol,metric,value,n_images), results.md,
results.tex, results.json, runtime.md. A second run computes only what is missing.

other commands: fit, check-adapter, timing, degrade, tables, repair, paper, fidelity, curves (each has --help)
"""


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _scales(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(t) for t in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scales takes integers like 2,3,4, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"--scales takes positive integers, got {text!r}")
    return vals


def _pairs(items: list[str], flag: str) -> tuple[tuple[str, str], ...]:
    out = []
    for it in items or []:
        if "=" not in it:
            raise BenchError(f"{flag} {it!r} must look like NAME=PATH")
        name, path = it.split("=", 1)
        out.append((name.strip(), os.path.expanduser(path.strip())))
    return tuple(out)


def add_common(p: argparse.ArgumentParser, *, methods_default: str = "all") -> None:
    p.add_argument("--methods", default=methods_default,
                   help="'all' or a comma list of method names; a variant is NAME.TAG, e.g. dasr-wang.aniso or "
                        "pdm.rrdb (see --list methods) [%(default)s]")
    p.add_argument("--datasets", default=None,
                   help="comma list of NAME (standard set under --data-root), NAME=PATH (any supported layout, "
                        "auto-detected), or NAME=lr:PATH (LR-only folder: no-reference metrics). "
                        "Default: the embedded images shipped with scikit-image")
    p.add_argument("--data-root", default=os.environ.get("UNPAIRED_SR_DATA"),
                   help="folder holding standard datasets (Set5, Set14, B100, Urban100, ...) [$UNPAIRED_SR_DATA]")
    p.add_argument("--scales", type=_scales, default=(4,), help="comma list of scale factors [4]")
    p.add_argument("--profile", choices=PROFILES, default=None,
                   help="model size and training budget: "
                        + "; ".join(f"{n} ({spec.about})" for n, spec in PROFILE_SPECS.items())
                        + ". Official checkpoints load at paper [gpu where --device auto finds CUDA, else quick]")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="[%(default)s]")
    p.add_argument("--out", default="results", help="output folder (store, caches, tables) [%(default)s]")
    p.add_argument("--seed", type=int, default=0, help="run seed for LR synthesis and training [%(default)s]")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                   help="use released weights for a method (a file, or a folder laid out like the release); "
                        "repeatable")
    p.add_argument("--init", action="append", default=[], metavar="NAME=PATH",
                   help="start a method's fit from a pretrained network file (e.g. daa=IMDN_x4.pth); keyed by its "
                        "sha256; repeatable")
    p.add_argument("--adapter", action="append", default=[], metavar="MODULE:CLASS",
                   help="add a method from any importable module; repeatable")
    p.add_argument("--weights-dir", default=os.environ.get("UNPAIRED_SR_WEIGHTS"),
                   help="folder with ImageNet/LPIPS weight files (alexnet-owt-7be5be79.pth, "
                        "LPIPS_v0.1_alex-df73285e.pth, vgg19-dcbb9e9d.pth) [$UNPAIRED_SR_WEIGHTS]")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _seeds(text: str) -> tuple[int, ...]:
    """``--fit-seeds 0,1,2`` -> (0, 1, 2): distinct non-negative integers."""
    try:
        seeds = tuple(dict.fromkeys(int(t) for t in text.split(",") if t.strip()))
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"takes a comma list of seeds >= 0 such as 0,1,2, got {text!r}")
    return seeds


def default_profile(profile: str | None, device: str) -> str:
    """``--profile`` unset: the GPU profile where the run's device is CUDA, else quick."""
    if profile:
        return profile
    from .runner import resolve_device

    return "gpu" if resolve_device(device).startswith("cuda") else "quick"


def _at_least(lo: int, what: str):
    """An argparse type: an integer >= ``lo``."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = lo - 1
        if v < lo:
            raise argparse.ArgumentTypeError(f"takes {what}, got {text!r}")
        return v
    return parse


_positive, _count = _at_least(1, "a positive integer"), _at_least(0, "a count >= 0")


def set_threads(threads: int | None) -> None:
    """``--threads``: torch's thread count in this process (and, through the spec, in cluster tasks)."""
    if threads is None:
        return
    if threads < 1:
        raise BenchError(f"--threads takes a positive number, got {threads}")
    import torch

    torch.set_num_threads(threads)


def add_training(p: argparse.ArgumentParser) -> None:
    """How fits are trained, saved and watched (the benchmark run fits too)."""
    g = p.add_argument_group(
        "training", "Budget.batch_size is the TOTAL batch of a step: under torchrun each of N ranks takes 1/N of "
                    "it, so N ranks see what one process would and the learning rate is never rescaled. "
                    "--iterations, --batch-size, --amp and --channels-last change the fit key and the table label.")
    g.add_argument("--iterations", type=_positive, default=None, metavar="N",
                   help="train for N iterations instead of the profile's length [the profile's]")
    g.add_argument("--batch-size", type=_positive, default=None, metavar="N",
                   help="total batch of a training step instead of the profile's (the learning rate stays the "
                        "profile's) [the profile's]")
    g.add_argument("--amp", choices=("bf16",), default=None,
                   help="train under bf16 autocast (no loss scaling needed; fp16 is not offered) [fp32; on CUDA "
                        "the TF32 flags are recorded with it]")
    g.add_argument("--channels-last", action="store_true", help="train in channels-last memory format")
    g.add_argument("--fit-seeds", type=_seeds, default=(0,), metavar="S,S,...",
                   help="fit every learned method once per seed (e.g. 0,1,2; released checkpoints are not refitted): a "
                        "seed moves the initial weights (the shared warm start's too), the patch draws and every "
                        "noise/degradation draw of the fit, never the training pools; tables show the mean over seeds "
                        "with its standard deviation [0]")
    g.add_argument("--save-every", type=_count, default=5000, metavar="N",
                   help="save the training state every N steps and at each stage boundary (newest two kept, "
                        "under OUT/cache/resume/<fit key>); rerunning a killed command resumes from it; 0: stage "
                        "boundaries only [%(default)s]")
    g.add_argument("--val-every", type=_count, default=0, metavar="N",
                   help="every N steps, PSNR (NIQE on an LR-only set) of 3 images of the first dataset, written to "
                        "train_log.csv beside the losses; for watching only, never for choosing a checkpoint [off]")
    g.add_argument("--tensorboard", action="store_true",
                   help="also write the losses and monitoring values for TensorBoard (the [tensorboard] extra)")


def add_table_options(p: argparse.ArgumentParser) -> None:
    """How results.md and results.tex are rendered (the CSV and JSON always carry the intervals and tests)."""
    from .stats import MIN_CI_IMAGES
    from .tables import BICUBIC

    g = p.add_argument_group("tables")
    g.add_argument("--ci", action="store_true",
                   help=f"show each value's 95%% bootstrap interval over images as ±half-width (n<{MIN_CI_IMAGES} "
                        f"below {MIN_CI_IMAGES} images) [off; always in summary.csv and results.json]")
    g.add_argument("--versus", default=BICUBIC, metavar="METHOD|none",
                   help="mark values whose paired bootstrap difference to this method's row on the same column "
                        "excludes 0; 'none' turns the test off [%(default)s]")


def _versus(a: argparse.Namespace) -> str | None:
    return None if str(a.versus).lower() in ("none", "") else a.versus


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_bench.py",
        description="UnpairedSR-Bench: benchmark unpaired / blind super-resolution methods under identical "
                    "degradations and calibrated metrics.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--suites", default=None,
                   help="degradation suites: family names (bicubic, dasr-iso, dasr-aniso, gaussian8, manet-si, aniso, "
                        "noise, jpeg, mixed, realistic) or canonical names like 'aniso:k=5', separated by ';' "
                        "(see --list suites). Default on the embedded data: bicubic, aniso, manet-si:k=5,noise=0, noise, jpeg and the "
                        "target domain mixed")
    p.add_argument("--suite-file", default=None, help="TOML file declaring extra suites")
    p.add_argument("--source", default=None, metavar="NAME|NAME=PATH[,...]",
                   help="clean HR training pool(s), concatenated: a standard training set under --data-root "
                        "(DIV2K-train, Flickr2K, DF2K, ...; see --list datasets) or NAME=PATH (a folder of images or a "
                        "BasicSR LMDB). Default: seeded procedural dead-leaves images")
    p.add_argument("--target", default=None, metavar="SPEC",
                   help="what per-domain methods (unpaired methods, the oracle) are fitted to: a suite (mixed, "
                        "aniso:k=5, a --suite-file suite; made from a seeded half of the source pool that the other "
                        "half never sees), lr:PATH (a folder of unpaired real LR photos) or a standard training set "
                        "(NTIRE2020-T1, RealSR-V3, ...). Default: a real-world dataset's own train split; on the embedded data "
                        "the synthetic mixed; else the cells are marked 'not fitted'")
    p.add_argument("--allow-partial", action="store_true",
                   help="accept a standard training set with fewer images than its spec (a warning names the counts "
                        "instead of an error; for subsets and test layouts)")
    p.add_argument("--loader-workers", type=int, default=0,
                   help="DataLoader worker processes cutting training patches; the patch sequence is a function of "
                        "the seed and iteration only, so this never changes a result [%(default)s]")
    p.add_argument("--subimages", type=int, default=0, metavar="SIDE",
                   help="train on SIDE x SIDE tiles of the source images (stride SIDE, plus tiles flush with the "
                        "edges), cut once and cached under OUT/cache by content, as BasicSR's extract_subimages "
                        "(480 for DIV2K): a patch then decodes a tile, not a 2K image. Changes the fit key [off]")
    add_training(p)
    add_table_options(p)
    p.add_argument("--metrics", default="psnr,ssim,lpips,niqe", help="comma list [%(default)s]")
    p.add_argument("--protocol", choices=("paper-y", "rgb"), default="paper-y",
                   help="PSNR/SSIM protocol: paper-y = Y of BT.601, crop = scale (RCAN/EDSR/DASR tables); "
                        "rgb = RGB, crop = scale (FSSR/MSSR/PDM) [%(default)s]")
    p.add_argument("--jobs", type=int, default=2, help="parallel workers for scoring [%(default)s]")
    p.add_argument("--tile", type=int, default=None,
                   help="upscale in tiles of this many LR pixels (automatic on out-of-memory)")
    p.add_argument("--no-timing", action="store_true", help="skip the runtime measurement")
    p.add_argument("--recompute", action="append", default=[], metavar="PATTERN",
                   help="compute matching cells again even if stored: shell pattern over METHOD/DATASET/SUITE/xSCALE, "
                        "e.g. 'bicubic/*' or '*/Set5/noise*/x4'; repeatable")
    p.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="compute the cells on a Dask cluster: a running dask-scheduler's address (tcp://HOST:8786) "
                        "or local:N (N worker processes here); needs the [dist] extra. The store stays here")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="LR and fit caches; under --cluster ADDRESS on storage every worker sees [OUT/cache]")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process, here and in every cluster task [torch's default here]")
    p.add_argument("--list", choices=("methods", "suites", "datasets", "metrics"), default=None,
                   help="list what is available and exit")
    p.add_argument("--config", default=None, metavar="RUN.toml",
                   help="read the run from a TOML file: the same keys as the flags (methods = \"fssr,pdm\" or a "
                        "list, data_root = ...); flags given as well override it")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved run as TOML (a --config file) and exit")
    return p


#: flags that are not part of a run file (they act, or say where the run file is)
_NOT_IN_CONFIG = {"config", "print_config", "list", "debug"}


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Flags over a ``--config`` TOML file over the defaults: the file's keys become the
    parser's defaults, so a flag given on the command line always wins."""
    from .adapter import read_toml

    first = parser.parse_args(argv)
    if not first.config:
        return first
    path = Path(first.config).expanduser()
    data = read_toml(path, "--config", missing="give the path of a run TOML file")
    dests = {a.dest: a for a in parser._actions if a.dest not in _NOT_IN_CONFIG and a.dest != "help"}
    defaults = {}
    for key, value in data.items():
        dest = key.replace("-", "_")
        if dest not in dests:
            from .adapter import unknown_name

            raise BenchError(unknown_name(f"key in {path}", key, sorted(dests)) + "; the keys are the flags' names")
        defaults[dest] = _config_value(dests[dest], value, key, path)
    parser.set_defaults(**defaults)
    ns = parser.parse_args(argv)
    ns.config_file = str(path.resolve())
    return ns


def _config_value(action: argparse.Action, value, key: str, path: Path):
    """A TOML value as the flag would have given it (lists become comma lists)."""
    if isinstance(action, argparse._AppendAction):
        return [str(v) for v in (value if isinstance(value, list) else [value])]
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise BenchError(f"{path}: {key} takes true or false, got {value!r}")
        return value
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    if action.type is not None and not isinstance(value, bool):
        try:
            return action.type(str(value))
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise BenchError(f"{path}: {key} = {value!r}: {exc}") from None
    if action.choices and value not in action.choices:
        raise BenchError(f"{path}: {key} = {value!r}; choose one of {', '.join(map(str, action.choices))}")
    return value


def config_toml(spec) -> str:
    """The resolved run as a ``--config`` file (keys as the flags' names)."""
    flags = {"checkpoints": "checkpoint", "adapters": "adapter", "timing": None}
    dests = {a.dest for a in run_parser()._actions}
    lines = ["# UnpairedSR-Bench run file: python run_bench.py --config THIS_FILE"]
    for k, v in spec.to_dict().items():
        name = flags.get(k, k)
        if k != "timing" and name not in dests:  # set by other commands or by tests, not by a run's flags
            continue
        if name is None or v is None or v == () or v == []:
            if k == "timing" and v is False:
                lines.append("no_timing = true")
            continue
        if k in ("checkpoints", "init"):
            v = [f"{a}={b}" for a, b in v]
        elif k in ("methods", "metrics", "scales", "recompute") and isinstance(v, (list, tuple)):
            v = ",".join(map(str, v)) if k != "recompute" else list(v)
        lines.append(f"{name} = {_toml(v)}")
    return "\n".join(lines) + "\n"


def _toml(v) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def do_list(what: str) -> int:
    from tabulate import tabulate

    if what == "methods":
        from .adapter import REGISTRY, objective_of

        rows = []
        for c in REGISTRY.all():
            scales = ",".join(f"x{s}" for s in c.info.scales)
            default = c.variants.get("")
            files = lambda v: f" [release: {', '.join(v.checkpoints)}]" if v.checkpoints else ""  # noqa: E731
            start = (c.info.init_from or "scratch") if c.info.learned else ""
            rows.append((c.info.name, c.info.family, objective_of(c.info.name), scales,
                         c.info.title + (f" — default: {default.about}{files(default)}" if default else ""), start))
            rows += [(f"{c.info.name}.{v.tag}", c.info.family, objective_of(f"{c.info.name}.{v.tag}"), scales,
                      f"variant: {v.about}{files(v)}", "") for v in c.variants.values() if v.tag]
        print(tabulate(rows, headers=["method", "family", "objective", "scales", "title",
                                      "official recipe starts from"], tablefmt="github"))
        print("\nWhere the recipe starts from a pretrained network and no --init file is given, the fit starts "
              "from the shared warm start of that network (L1 on bicubic pairs of the source pool, trained once "
              "per key).")
    elif what == "suites":
        from .degrade import list_families

        print(tabulate(sorted(list_families().items()), headers=["family", "what it does"], tablefmt="github"))
    elif what == "datasets":
        from .data import list_datasets

        from .training_sets import list_training_sets

        print(tabulate(list_datasets(), headers="keys", tablefmt="github"))
        print("\ntraining sets (--source / --target):")
        print(tabulate(list_training_sets(), headers="keys", tablefmt="github"))
    else:
        from .metrics import METRICS

        print(tabulate([(m.name, "lower" if m.lower_better else "higher", "yes" if m.full_reference else "no",
                         m.description) for m in METRICS.values()],
                       headers=["metric", "better", "needs HR", "what"], tablefmt="github"))
    return 0


def spec_from_args(a: argparse.Namespace, **over):
    from .runner import RunSpec

    return RunSpec(
        methods=_csv(a.methods), datasets=a.datasets, data_root=a.data_root, suites=getattr(a, "suites", None),
        scales=a.scales, metrics=_csv(getattr(a, "metrics", "psnr,ssim,lpips,niqe")),
        protocol=getattr(a, "protocol", "paper-y"), profile=default_profile(a.profile, a.device), device=a.device,
        out=a.out, fit_seeds=getattr(a, "fit_seeds", (0,)),
        jobs=getattr(a, "jobs", 2), seed=a.seed, checkpoints=_pairs(a.checkpoint, "--checkpoint"),
        init=_pairs(a.init, "--init"),
        adapters=tuple(a.adapter), weights_dir=a.weights_dir, timing=not getattr(a, "no_timing", False),
        tile=getattr(a, "tile", None), target=getattr(a, "target", None), source=getattr(a, "source", None),
        allow_partial=getattr(a, "allow_partial", False), loader_workers=getattr(a, "loader_workers", 0),
        subimages=getattr(a, "subimages", 0), iterations=getattr(a, "iterations", None),
        batch_size=getattr(a, "batch_size", None),
        amp=getattr(a, "amp", None), channels_last=getattr(a, "channels_last", False),
        save_every=getattr(a, "save_every", 5000), val_every=getattr(a, "val_every", 0),
        tensorboard=getattr(a, "tensorboard", False),
        suite_file=getattr(a, "suite_file", None), recompute=tuple(getattr(a, "recompute", ())), **over,
    )


def cmd_run(argv: list[str]) -> int:
    a = parse_with_config(run_parser(), argv)
    if a.list:
        return do_list(a.list)
    from .metrics import METRICS
    from .runner import Runner
    from .tables import write_all

    for m in _csv(a.metrics):
        if m not in METRICS:
            from .adapter import unknown_name

            raise BenchError(unknown_name("metric", m, METRICS))
    spec = spec_from_args(a)
    if a.print_config:
        print(config_toml(spec), end="")
        return 0
    t0 = time.perf_counter()
    set_threads(a.threads)  # the same count in cluster tasks (bench/distributed.py)
    log = lambda s: print(s, flush=True)  # noqa: E731
    if a.cluster:
        from .distributed import ClusterRunner, cluster_spec

        runner = ClusterRunner(spec, cluster_spec(a.cluster, a.cache, spec.out, a.threads), log=log)
    else:
        runner = Runner(spec, log=log, cache=a.cache)
    if getattr(a, "config_file", None):
        runner.config_file = a.config_file  # its text goes into the run's provenance
    code = runner.run()
    paths = write_all(runner.store, spec.out, runner.planned or None, ci=a.ci, versus=_versus(a))
    runner.store.close()
    print(f"tables: {', '.join(str(p) for p in paths.values())}")
    print(f"done in {time.perf_counter() - t0:.1f}s")
    if runner.failures:
        print(f"{len(runner.failures)} cell(s) failed:", file=sys.stderr)
        for f in runner.failures:
            print(f"  {f}", file=sys.stderr)
    return code


FIT_EPILOG = """\
examples:
  python run_bench.py fit --methods fssr,dasr-wang --profile paper --source DF2K --target NTIRE2020-T1 \\
      --data-root DATA --datasets NTIRE2020-T1 --val-every 5000
  torchrun --nproc_per_node 8 run_bench.py fit --methods fssr --profile paper --source DIV2K-train ...
  torchrun --nnodes 2 --node_rank 0 --rdzv_backend c10d --rdzv_endpoint HEAD:29500 --nproc_per_node 8 \\
      run_bench.py fit ...        (the same on the second node with --node_rank 1)

A fit killed at any point resumes when the same command is run again (from its newest
saved state). The benchmark run with the same flags then finds the fits in OUT/cache/fits
and evaluates them. Each fit folder holds model, fit.json and train_log.csv.
"""


def cmd_fit(argv: list[str]) -> int:
    """Train without evaluating: for jobs that run for days, on one process or under torchrun."""
    p = run_parser()
    p.prog, p.epilog = "run_bench.py fit", FIT_EPILOG
    for action in p._actions:  # evaluation flags: accepted (one run file serves both), not shown
        if action.dest in ("metrics", "protocol", "jobs", "tile", "no_timing", "recompute", "cluster"):
            action.help = argparse.SUPPRESS
    p.description = ("Train the fits a benchmark run with the same flags would use, and evaluate nothing. Under "
                     "torchrun every rank runs this command; rank 0 alone writes state, fits and the store.")
    a = parse_with_config(p, argv)
    if a.list:
        return do_list(a.list)
    spec = spec_from_args(a)
    if a.print_config:
        print(config_toml(spec), end="")
        return 0
    from . import ddp
    from .runner import Runner, resolve_device

    set_threads(a.threads)
    t0 = time.perf_counter()
    w = ddp.init(resolve_device(spec.device))
    try:
        if w.main:
            runner = Runner(spec, log=lambda s: print(s, flush=True), cache=a.cache)
        else:
            from .distributed import RecordingStore

            runner = Runner(spec, log=lambda s: None, store=RecordingStore(), cache=a.cache)
        code = runner.fit_only()
        if w.main:
            runner.store.close()
            print(f"done in {time.perf_counter() - t0:.1f}s")
            for f in runner.failures:
                print(f"  failed: {f}", file=sys.stderr)
        return code
    finally:
        ddp.shutdown()


def cmd_check_adapter(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run_bench.py check-adapter",
                                description="Check that a method adapter meets the benchmark's interface contract: "
                                            "output shape and range, odd sizes, batching, determinism, no test "
                                            "images in fit(), checkpoint round-trip.")
    p.add_argument("target", help="module:Class, or a registered method name")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--profile", choices=PROFILES, default="smoke")
    p.add_argument("--device", default="cpu")
    p.add_argument("--debug", action="store_true")
    a = p.parse_args(argv)
    from .conformance import check_adapter

    results = check_adapter(a.target, scale=a.scale, profile=a.profile, device=a.device,
                            progress=lambda r: print(f"{'PASS' if r.ok else 'FAIL'}  {r.name}"
                                                     + (f": {r.detail}" if r.detail else ""), flush=True))
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_timing(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run_bench.py timing",
                                description="Full runtime measurement: LR 64x64 and 256x256, median/IQR latency, "
                                            "MPix/s, GFLOPs, parameters, peak memory; on CUDA also the top kernels.")
    add_common(p)
    p.add_argument("--amp", choices=("bf16",), default=None, help="autocast precision (CUDA)")
    p.add_argument("--repeats", type=int, default=None, help="repeats (CUDA: at least 30)")
    a = p.parse_args(argv)
    from .adapter import resolve_variant
    from .runner import Runner, method_names, resolve_device
    from .tables import runtime_markdown
    from .timing import time_model

    spec = spec_from_args(a)
    device = resolve_device(spec.device)
    runner = Runner(spec, log=print)
    runner.store.begin_run(runner.run_id, spec.to_dict(), spec.hash(), {"command": "timing"})
    for name in method_names(spec):
        cls = resolve_variant(name)[0]
        for scale in spec.scales:
            if scale not in cls.info.scales:
                continue
            m = runner.build(name, scale, device=device)
            variant = f"{spec.profile}:arch" if cls.info.learned else "-"
            if name in runner.checkpoints:
                m.load_checkpoint(runner.checkpoints[name])
            rows = time_model(runner.store, m, variant, device, runner.run_id, full=True, amp=a.amp,
                              repeats=a.repeats, force=True)
            for r in rows:
                print(f"{name:14s} x{scale} {r['input']:12s} {r['ms_median']:9.2f} ms  {r['mpix_s']:.3f} MPix/s")
    runner.store.end_run(runner.run_id, "done")
    path = Path(spec.out) / "runtime.md"
    path.write_text(runtime_markdown(runner.store))
    print(f"wrote {path}")
    return 0


def cmd_degrade(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run_bench.py degrade",
                                description="Export LR test sets as PNGs plus manifest.json (each HR file and its "
                                            "sha256; per image the LR sha256, noise, JPEG quality, seed and the id "
                                            "of its kernel; each kernel once), so other codebases can use exactly "
                                            "these sets.")
    p.add_argument("--suites", default=None,
                   help="suites as in the main command; with --suite-file and no --suites, every suite the file "
                        "declares")
    p.add_argument("--suite-file", default=None, help="TOML file declaring extra suites ([suite.NAME] tables)")
    p.add_argument("--scales", type=_scales, default=(4,))
    p.add_argument("--datasets", default=None)
    p.add_argument("--data-root", default=os.environ.get("UNPAIRED_SR_DATA"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--debug", action="store_true")
    a = p.parse_args(argv)
    from .export import export_lr

    n = export_lr(a.suites, a.scales, a.datasets, a.data_root, a.seed, Path(a.out), suite_file=a.suite_file)
    print(f"wrote {n} LR images and manifest.json under {a.out}")
    return 0


def cmd_tables(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run_bench.py tables",
                                description="Re-render the tables from a results store. A cell whose inputs changed "
                                            "between runs (an edited dataset, suite or method) has one stored "
                                            "version per content; by default the latest of each is shown.")
    p.add_argument("--out", default="results")
    p.add_argument("--run", default=None, metavar="RUN_ID",
                   help="render only the cells written by this run (run ids are listed in results.json)")
    p.add_argument("--to", default=None, metavar="DIR",
                   help="write the tables here instead of --out (for a store on read-only media)")
    add_table_options(p)
    p.add_argument("--debug", action="store_true")
    a = p.parse_args(argv)
    from .store import Store, writable
    from .tables import BICUBIC, rendered_line, summarize, write_all

    db = Path(a.out) / "results.sqlite"
    if not db.exists():
        raise BenchError(f"no results store at {db}; run the benchmark with --out {a.out} first")
    dest = Path(a.to or a.out)
    # a store on read-only media is opened in SQLite's immutable mode, which writes nothing
    store = Store(db, readonly=not writable(db.parent))
    if not writable(dest):
        raise BenchError(f"cannot write tables to {dest}: it is not writable; pass --to A_WRITABLE_FOLDER")
    runs = [r["run_id"] for r in store.runs()]
    if a.run and a.run not in runs:
        from .adapter import unknown_name

        raise BenchError(unknown_name("run", a.run, runs))
    versus = _versus(a)
    stored = sorted({c["method"] for c in store.cells()})
    if versus and versus not in stored and versus != BICUBIC:
        from .adapter import unknown_name

        raise BenchError(unknown_name("--versus method", versus, stored) + "; or pass --versus none")
    paths = write_all(store, dest, run=a.run, ci=a.ci, versus=versus)
    print(f"rendered {rendered_line(summarize(store, run=a.run, versus=None))}")
    for path in paths.values():
        print(path)
    return 0


def cmd_repair(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run_bench.py repair",
                                description="Copy every readable record of a damaged results store into a new "
                                            "store; the damaged file is only read, never changed.")
    p.add_argument("--out", required=True, help="folder of the damaged results.sqlite")
    p.add_argument("--to", required=True, help="new folder for the repaired store (must not hold one)")
    p.add_argument("--debug", action="store_true")
    a = p.parse_args(argv)
    from .store import repair

    src, dest = Path(a.out) / "results.sqlite", Path(a.to) / "results.sqlite"
    if not src.exists():
        raise BenchError(f"no results store at {src}")
    counts = repair(src, dest)
    print(f"copied into {dest}: " + ", ".join(f"{n} {t}" for t, n in counts.items()))
    print(f"render its tables with: run_bench.py tables --out {a.to}")
    return 0


def cmd_paper(argv: list[str]) -> int:
    from .papers.cli import main as paper_main

    return paper_main(argv)


def cmd_fidelity(argv: list[str]) -> int:
    from .fidelity import main as fidelity_main

    return fidelity_main(argv)


def cmd_curves(argv: list[str]) -> int:
    from .curves import main as curves_main

    return curves_main(argv)


HANDLERS = {"fidelity": cmd_fidelity, "curves": cmd_curves, "run": cmd_run, "fit": cmd_fit, "check-adapter": cmd_check_adapter, "timing": cmd_timing, "degrade": cmd_degrade,
            "tables": cmd_tables, "paper": cmd_paper, "repair": cmd_repair}


def _show_warning(message, category, filename, lineno, file=None, line=None, *, _default=warnings.showwarning):
    """BenchWarnings are messages for the user: one line, no source file or code line."""
    if issubclass(category, BenchWarning):
        print(f"warning: {message}", file=sys.stderr, flush=True)
    else:
        _default(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = "run"
    if argv and argv[0] in COMMANDS:
        cmd = argv.pop(0)
    debug = "--debug" in argv
    try:
        with warnings.catch_warnings():  # restores showwarning afterwards (main is also called in-process)
            warnings.showwarning = _show_warning
            warnings.simplefilter("always", BenchWarning)  # each one names a different dataset or file
            return HANDLERS[cmd](argv)
    except BenchError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stdout = open(os.devnull, "w")
        return 0
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept in the store; rerun the same command to resume",
              file=sys.stderr)
        return 130
