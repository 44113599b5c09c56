"""The headline of a run as Markdown: what ``docs/results.md`` quotes, printed by a command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from allwen.report.build import load_summary

HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "f1", "kappa", "auc")


def _cell(metrics: dict[str, Any], key: str) -> str:
    value, ci = metrics.get(key), (metrics.get("ci") or {}).get(key)
    if value is None:
        return "n/a"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else f"{value:.3f}"


def headline_markdown(run_dir: Path) -> str:
    """Best single model, champions, the best WEN of each kind and the four answers."""
    summary = load_summary(run_dir)
    singles = {s["name"]: s for s in summary.get("single_models", [])}
    rows: list[tuple[str, dict[str, Any]]] = []
    by = (summary.get("selection") or {}).get("champion_by", "validation")
    if summary.get("best_single") in singles:
        rows.append((f"best single model (by {by}): {summary['best_single']}", singles[summary["best_single"]]))
    rows += [(f"champion {c['name']}", c) for c in summary.get("champions", [])]
    ensembles = summary.get("ensembles", [])
    for kind in ("inter", "intra"):
        of_kind = [e for e in ensembles if e.get("kind") == kind]
        if of_kind:
            best = max(of_kind, key=lambda e: e["metrics"].get("accuracy") or 0.0)
            rows.append((f"most accurate {kind}-LR ensemble: {best['name']}", best))
    n_test = (summary.get("evaluation") or {}).get("n_test")
    conf = (summary.get("evaluation") or {}).get("confidence", 0.95)
    lines = [
        f"Test set: {n_test} images; split {summary.get('split', {}).get('method')}; "
        f"values with {conf:.0%} bootstrap intervals.",
        "",
        "| model | " + " | ".join(HEADLINE_METRICS) + " |",
        "|---|" + "---|" * len(HEADLINE_METRICS),
    ]
    lines += [f"| {name} | " + " | ".join(_cell(m["metrics"], k) for k in HEADLINE_METRICS) + " |" for name, m in rows]
    lines.append("")
    for q in summary.get("questions", []):
        lines.append(f"- **{q['question']}** {q['answer']}")
    return "\n".join(lines) + "\n"
