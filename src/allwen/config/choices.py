"""The names of what the config builds from a registry, in one place.

The schema's ``Literal`` choices are these tuples, and each registry checks at import that its
keys are exactly them (:data:`allwen.models.heads.HEADS`, the ensemble weightings, the selection
rules), so a name added to a registry and forgotten here (or the reverse) fails at once
instead of being refused or accepted by a stale copy. The metric names are the metric registry's
(:mod:`allwen.evaluation.metric_registry`, which imports numpy only). Kept free of torch: ``allwen
config`` starts fast.
"""

from __future__ import annotations

from allwen.evaluation.metric_registry import metric_names, selectable_names

#: classifier heads (allwen.models.heads.HEADS)
HEAD_NAMES: tuple[str, ...] = ("sigmoid", "softmax", "mlp256", "mlp128", "fc_relu", "fc_relu_softmax")
#: ensemble weightings, in the order reports list them (allwen.ensemble.weighting)
WEIGHTING_NAMES: tuple[str, ...] = ("accuracy", "f1", "kappa", "auc", "uniform", "vote", "greedy")
#: where champions and every other choice are scored (allwen.evaluation.selection)
CHAMPION_BY: tuple[str, ...] = ("validation", "test", "test_all")
#: the metrics a choice can rank by (allwen.evaluation.selection): the registry's selectable ones
SELECTION_METRICS: tuple[str, ...] = selectable_names()
#: the metrics a paper's number can name: every registered metric
PAPER_METRICS: tuple[str, ...] = metric_names()


def check_registry(what: str, keys, names: tuple[str, ...]) -> None:
    """A registry's keys must be the config's names (same set)."""
    if set(keys) != set(names):
        raise RuntimeError(f"{what}: registry {sorted(keys)} and allwen.config.choices {sorted(names)} differ; "
                           "add the name in both places")
