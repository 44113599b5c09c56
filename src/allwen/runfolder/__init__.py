"""The run-folder layer: one owner for every name and format of a run folder.

Everything else asks a :class:`RunFolder` for paths, typed records (``unit.json``,
``ensemble.json``, ``sweep.json``) and predictions; no other module joins those names.
"""

from allwen.runfolder.crossval import CrossvalFolder
from allwen.runfolder.checks import SPLIT_FIX, SplitTruth, check_recorded_files, redo_hint
from allwen.runfolder.layout import RunFolder, UnitFolder, parse_unit_name, safe_name, unit_name
from allwen.runfolder.predictions import MissingPredictionsError, UnitPredictions, write_predictions
from allwen.runfolder.records import EnsembleRecord, SweepRecord, SweepStep, SweepValue, UnitInfo

__all__ = [
    "CrossvalFolder", "EnsembleRecord", "MissingPredictionsError", "RunFolder", "SPLIT_FIX", "SplitTruth", "SweepRecord",
    "SweepStep", "SweepValue", "UnitFolder", "UnitInfo", "UnitPredictions", "check_recorded_files", "parse_unit_name", "redo_hint",
    "safe_name", "unit_name", "write_predictions",
]
