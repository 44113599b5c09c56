"""The run report: self-contained HTML, Markdown and a metrics CSV from summary.json.

Reads saved results only (no training code, no torch), so a copied run folder can be
re-reported anywhere.

``allwen.report(run)`` is the Python API's name for ``allwen report RUN`` and this package's name
too; importing the package would replace the function on ``allwen``, so the package itself is
callable and hands the call to :func:`allwen.api.report`.
"""

import sys
from types import ModuleType
from typing import Any

from allwen.report.build import build_report, load_summary


class _CallablePackage(ModuleType):
    def __call__(self, run: Any) -> Any:
        """``allwen.report(run)``: the report rebuilt from a run's saved predictions (see allwen.api)."""
        import importlib

        # by name: the API sits above the report in the layers (.importlinter); it only calls back down
        return importlib.import_module("allwen.api").report(run)


sys.modules[__name__].__class__ = _CallablePackage

__all__ = ["build_report", "load_summary"]
