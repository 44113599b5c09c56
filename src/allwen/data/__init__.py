"""Datasets in their native layouts, audit, splits, preprocessing and synthetic cells.

The names below load on first use (PEP 562): importing a submodule such as ``allwen.data.splits``
must not import pandas through ``sources``, so that ``allwen report`` starts fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "SOURCES": "allwen.data.sources", "DataSourceError": "allwen.data.sources", "binary_view": "allwen.data.sources",
    "cnmc_subject": "allwen.data.sources", "detect_source": "allwen.data.sources", "load_source": "allwen.data.sources",
    "ImageTable": "allwen.data.table",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'allwen.data' has no attribute {name!r}")
