"""allwen: Acute Lymphoblastic Leukemia cell classification with Weighted Ensembles of Networks."""

from typing import Any

__version__ = "0.1.0"

_LAZY = {"load_bundle": "allwen.serve.bundle", "export_bundle": "allwen.export"}


def __getattr__(name: str) -> Any:
    """``allwen.load_bundle`` without importing torch on ``import allwen`` (the CLI must start fast)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'allwen' has no attribute {name!r}")


__all__ = ["__version__", "export_bundle", "load_bundle"]
