"""Weighted Ensembles of Networks (WEN) built from the units' saved predictions."""

from allwen.ensemble.build import (
    EnsembleResult,
    MissingPredictionsError,
    UnitPredictions,
    build_ensembles,
    discover_units,
    load_unit_predictions,
    safe_name,
    select_champion,
    select_champions,
    write_ensemble,
)
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
    "MissingPredictionsError",
    "UnitPredictions",
    "WeightedEnsemble",
    "build_ensembles",
    "discover_units",
    "get_weighting",
    "load_unit_predictions",
    "normalise_weights",
    "safe_name",
    "select_champion",
    "select_champions",
    "write_ensemble",
]
