"""Built-in methods: one module per method, each registering itself on import.

Every public module in this package is imported, so adding a method is adding a file.
"""
import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")
