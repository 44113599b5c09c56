"""The cross-validated test, worded: ``crossval.md`` beside ``crossval.json``."""

from __future__ import annotations

from allwen.evaluation.crossval import CrossvalResult, PredictionSets
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
    short = "image" if stats.unit == "image" else ("subject" if stats.clusters in (None, "subjects") else "pseudo-patient")
    for sets in result.prediction_sets:
        lines += sets_markdown(sets, short)
    return "\n".join(lines) + "\n"


def _ci(value: float, ci: list) -> str:
    text = fmt_ci(tuple(ci) if ci else None)
    return fmt_num(value) + (f" {text}" if text else "")


def sets_markdown(sets: PredictionSets, unit: str) -> list[str]:
    """One role's prediction sets on the held-out patients: a table per level, unsupported levels named."""
    lines = ["", f"## Prediction sets of the {role_label(sets.role)}", "",
             f"Calibration: {sets.calibration}; {sets.method}. A set as served holds every class the calibration "
             "cannot rule out, and the predicted class; a raw set is the conformal set alone (it is empty when every "
             "class is ruled out). A set that always holds the predicted class covers at least the model's accuracy, "
             "so where a class's accuracy is above the level its coverage cannot come down to the level.",
             f"Intervals: as above, over {unit}s."]
    for lv in sets.levels:
        lines += ["", f"### Level {lv.level:.0%}", "",
                  f"Coverage {_ci(lv.coverage, lv.coverage_ci)}, mean set size {_ci(lv.mean_size, lv.mean_size_ci)}, "
                  f"empty raw sets {fmt_num(lv.raw_empty)} of the images "
                  f"(raw coverage {fmt_num(lv.raw_coverage)})."]
        if not lv.supported:
            lines.append(f"**Not supported:** sets need at least {lv.min_calibration_clusters} calibration {unit}s "
                         "per class (evaluation.min_clusters); " + ", ".join(f"{c} had {n}" for c, n in lv.short.items())
                         + ". A bundle calibrated on so few shows no set at this level.")
        lines += ["", f"| true class | images | {unit}s | calibration {unit}s (fewest) | accuracy | coverage | "
                  "mean set size | raw coverage | empty raw sets |", "|---|---|---|---|---|---|---|---|---|"]
        for name, c in lv.per_class.items():
            lines.append(f"| {name} | {c.n} | {c.clusters} | {c.calibration_clusters} | {fmt_num(c.accuracy)} | "
                         f"{_ci(c.coverage, c.coverage_ci)} | {_ci(c.mean_size, c.mean_size_ci)} | "
                         f"{fmt_num(c.raw_coverage)} | {fmt_num(c.raw_empty)} |")
    return lines
