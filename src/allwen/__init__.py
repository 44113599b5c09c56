"""allwen: Acute Lymphoblastic Leukemia cell classification with Weighted Ensembles of Networks.

The Python API (``allwen.run``, ``allwen.report``, ``allwen.export_bundle``, ``allwen.load_bundle``)
lives in :mod:`allwen.api` and is imported on first use, so ``import allwen`` (and the CLI) stays light.
"""

from typing import Any

__version__ = "0.1.0"

_API = ("run", "report", "export_bundle", "load_bundle")


def __getattr__(name: str) -> Any:
    """``allwen.run`` and friends without importing torch on ``import allwen`` (the CLI must start fast)."""
    import importlib  # by name: every module imports allwen (for __version__), none should depend on the API

    if name == "report":  # the report package, callable as allwen.report(run) (allwen/report/__init__.py)
        return importlib.import_module("allwen.report")
    if name in _API:
        return getattr(importlib.import_module("allwen.api"), name)
    raise AttributeError(f"module 'allwen' has no attribute {name!r}")


__all__ = ["__version__", "export_bundle", "load_bundle", "report", "run"]
