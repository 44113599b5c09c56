"""Building bundles: one model of a finished run as a self-contained folder (``allwen export``).

The write side of :mod:`allwen.bundle`: the choice (:mod:`~allwen.export.choice`), each member's
spec and files (:mod:`~allwen.export.members`), calibration, referral, sets, the OOD detector and the
patient call (:mod:`~allwen.export.sections`), the model card (:mod:`~allwen.export.card`), its
figures (:mod:`~allwen.export.plots`) and the ONNX graphs (:mod:`~allwen.export.onnx`).
:mod:`allwen.serve` runs what this writes and never imports it.
"""

from allwen.export.build import FORMATS, default_format, export_bundle
from allwen.export.choice import DEFAULT_MODEL, ModelChoice, open_run, resolve_model
from allwen.export.sections import AbstainSettings

__all__ = ["AbstainSettings", "DEFAULT_MODEL", "FORMATS", "ModelChoice", "default_format", "export_bundle", "open_run",
           "resolve_model"]
