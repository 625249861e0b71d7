"""Degradations: kernels, resizers (MATLAB bicubic, PIL, s-fold), noise, JPEG, named suites.

``synthesize(suite, hr, scale, image_id, seed)`` turns a float HR image into 8-bit LR,
bit-identically for the same arguments; ``parse_suites`` reads suite lists such as
``"bicubic;dasr-iso;dasr-aniso:k=1,noise=5"``.
"""
from bench.degrade.pipeline import degrade_clean, generators, mod_crop, synthesize
from bench.degrade.resize import imresize, imresize_torch, pil_bicubic, sfold
from bench.degrade.suites import (
    FAMILIES,
    Suite,
    get_suite,
    list_families,
    load_toml_suites,
    parse_suites,
)

__all__ = [
    "FAMILIES",
    "Suite",
    "degrade_clean",
    "generators",
    "get_suite",
    "imresize",
    "imresize_torch",
    "list_families",
    "load_toml_suites",
    "mod_crop",
    "parse_suites",
    "pil_bicubic",
    "sfold",
    "synthesize",
]
