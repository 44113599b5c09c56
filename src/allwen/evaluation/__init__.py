"""Evaluation: metrics from probability arrays and honest statistics around them."""

from allwen.evaluation.metrics import (
    ALL_METRIC_NAMES,
    EXTRA_METRIC_NAMES,
    METRIC_NAMES,
    check_inputs,
    compute_metrics,
    confusion,
    metric_stack,
    per_class_table,
    predict_labels,
    roc_curves,
)
from allwen.evaluation.stats import (
    bootstrap_ci,
    bootstrap_distribution,
    bootstrap_distributions,
    bootstrap_weights,
    cluster_codes,
    delong_auc_variance,
    delong_test,
    holm,
    mcnemar_exact,
    subject_permutation_test,
)

__all__ = [
    "ALL_METRIC_NAMES",
    "EXTRA_METRIC_NAMES",
    "METRIC_NAMES",
    "bootstrap_ci",
    "bootstrap_distribution",
    "bootstrap_distributions",
    "bootstrap_weights",
    "check_inputs",
    "cluster_codes",
    "compute_metrics",
    "confusion",
    "delong_auc_variance",
    "delong_test",
    "holm",
    "mcnemar_exact",
    "metric_stack",
    "per_class_table",
    "predict_labels",
    "roc_curves",
    "subject_permutation_test",
]
