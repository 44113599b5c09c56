"""Evaluation: metrics from probability arrays and honest statistics around them."""

from allwen.evaluation.metrics import (
    ALL_METRIC_NAMES,
    EXTRA_METRIC_NAMES,
    METRIC_NAMES,
    check_inputs,
    compute_metrics,
    confusion,
    per_class_table,
    predict_labels,
    roc_curves,
)
from allwen.evaluation.stats import (
    bootstrap_ci,
    bootstrap_distribution,
    bootstrap_indices,
    delong_auc_variance,
    delong_test,
    holm,
    mcnemar_exact,
    paired_bootstrap_diff,
)

__all__ = [
    "ALL_METRIC_NAMES",
    "EXTRA_METRIC_NAMES",
    "METRIC_NAMES",
    "bootstrap_ci",
    "bootstrap_distribution",
    "bootstrap_indices",
    "check_inputs",
    "compute_metrics",
    "confusion",
    "delong_auc_variance",
    "delong_test",
    "holm",
    "mcnemar_exact",
    "paired_bootstrap_diff",
    "per_class_table",
    "predict_labels",
    "roc_curves",
]
