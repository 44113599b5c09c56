"""The cross-validated test, worded: ``crossval.md`` beside ``crossval.json``."""

from __future__ import annotations

from allwen.evaluation.crossval import CrossvalResult
from allwen.report.format import fmt_ci, fmt_num

METRICS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"), ("kappa", "kappa"),
           ("f1_macro", "F1 (macro)"), ("auc", "AUC"))


def role_label(role: str) -> str:
    if role == "default_export":
        return "default export (chosen on validation)"
    if role == "best_single":
        return "best single model"
    kind, _, what = role.partition(":")
    return f"best {what} ensemble" if kind == "best_ensemble" else f"champion of {what}"


def crossval_markdown(result: CrossvalResult, name: str) -> str:
    """Every pooled role with its interval; the statistics' warnings beside them."""
    stats = result.statistics
    unit = "image" if stats.unit == "image" else (
        "subject" if stats.clusters in (None, "subjects") else f"pseudo-patient ({stats.clusters})")
    lines = [
        f"# Cross-validated test: {name}",
        "",
        f"{len(result.parts)} test parts; each of the {result.n_test} images was tested once, by models that never "
        f"saw its {unit}. Each part's run chose its "
        "models on its own validation data; a row pools, over the parts, the test predictions of the model that "
        "row's role chose in each part.",
        "",
        f"Intervals: {stats.interval_method}.",
    ]
    if stats.clusters_per_class:
        lines.append("Test clusters per class: " + ", ".join(f"{c} {n}" for c, n in stats.clusters_per_class.items())
                     + ".")
    for w in stats.warnings:
        lines.append(f"**Warning ({w.kind}):** {w.what}; {w.consequence}.")
    lines += ["", "| role | model in each part | " + " | ".join(label for _, label in METRICS) + " |",
              "|---|---|" + "---|" * len(METRICS)]
    for model in result.models:
        cells = []
        for key, _ in METRICS:
            value = getattr(model.metrics, key)
            ci = fmt_ci(model.metrics.ci.get(key))
            cells.append(fmt_num(value) + (f" {ci}" if ci else ""))
        lines.append(f"| {role_label(model.role)} | {', '.join(f'`{m}`' for m in model.models)} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Parts: " + "; ".join(f"{p.part}: `{p.run}` ({p.n_test} test images)" for p in result.parts) + "."]
    return "\n".join(lines) + "\n"
