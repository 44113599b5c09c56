"""Weighted Ensembles of Networks (WEN) built from the units' predictions, in memory."""

from allwen.ensemble.build import EnsembleResult, build_ensembles, scenario_predictions
from allwen.ensemble.weighting import (
    WEIGHTING_NAMES,
    WEIGHTINGS,
    get_weighting,
    normalise_weights,
)
from allwen.ensemble.wen import WeightedEnsemble

__all__ = [
    "WEIGHTINGS",
    "WEIGHTING_NAMES",
    "EnsembleResult",
    "WeightedEnsemble",
    "build_ensembles",
    "get_weighting",
    "normalise_weights",
    "scenario_predictions",
]
