"""How the report writes numbers and names: one formatter each, shared by tables and answers."""

from __future__ import annotations

NA = "n/a"


def fmt_num(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return NA
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def fmt_ci(ci: tuple[float | None, float | None] | None) -> str | None:
    if ci is None or None in ci:
        return None
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def fmt_p(p: float | None) -> str:
    """p-values keep their magnitude when tiny instead of collapsing to 0.000."""
    if p is None:
        return NA
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def fmt_count(value: int | None) -> str:
    return NA if value is None else f"{value:,}"


METRIC_ORDER = ("accuracy", "balanced_accuracy", "precision", "recall", "specificity", "f1", "kappa", "auc")
METRIC_LABELS = {
    "accuracy": "Accuracy", "balanced_accuracy": "Bal. accuracy", "precision": "Precision",
    "recall": "Recall", "specificity": "Specificity", "f1": "F1", "kappa": "Kappa", "auc": "AUC",
}
for _name in ("precision", "recall", "f1"):
    for _avg in ("macro", "weighted"):
        METRIC_LABELS[f"{_name}_{_avg}"] = f"{METRIC_LABELS[_name]} ({_avg})"
HEADLINE_METRICS = ("accuracy", "kappa", "auc", "balanced_accuracy", "precision", "recall", "f1")
TEST_NAMES = {"mcnemar": "McNemar exact", "delong": "DeLong", "permutation": "subject permutation",
              "swap": "cluster swap permutation"}


def fmt_settings(settings: dict, keys: bool = True) -> str:
    """A grid cell's settings: ``batch_size=16, epochs=2`` (``keys=False``: ``16, 2``)."""
    return ", ".join(f"{k.split('.')[-1]}={v}" if keys else str(v) for k, v in settings.items())
