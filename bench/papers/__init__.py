"""Reproduced papers' tables as data (one TOML file per table) and the ``paper`` command.

``load_specs()`` reads every shipped table; ``select("dasr-wang:T2")`` picks some;
``python run_bench.py paper --list`` shows them.
"""
from .spec import TableSpec, load_specs, read_table, select

__all__ = ["TableSpec", "load_specs", "read_table", "select"]
