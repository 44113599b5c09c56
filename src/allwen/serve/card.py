"""The model card of a bundle: what the model is, what it was tested on, how far to trust it.

Written once at export (as JSON in ``bundle.json``, served by ``GET /api/model``) and
rendered to ``MODEL_CARD.md``. Test metrics and their intervals are copied from the run's
results model (``report/summary.json``), so the card and the report always agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from allwen.evaluation.results import Summary
from allwen.serve import calibration

INTENDED_USE = (
    "Research on classifying single segmented white-blood-cell images (acute lymphoblastic leukemia blast vs "
    "normal, or the classes listed). Not a medical device: not for diagnosis, screening or treatment decisions."
)
LIMITS = [
    "Trained and tested on one dataset: one lab's staining, microscope and scanner. Images from another lab, "
    "stain or magnification may be classified with confidence and still be wrong; validate on local images first.",
    "Expects one segmented cell per image, like the training images; whole smears, several cells or other "
    "cell types are outside what it was trained on.",
    "Calibration was fitted on the training run's validation folds; it holds for images like those.",
]


def data_and_split(summary: Summary) -> dict[str, Any]:
    """Data and split facts, as the run's results model recorded them."""
    data = summary.data.model_dump(include={"source", "root", "n_images", "classes", "n_subjects",
                                            "n_duplicate_groups", "imbalance"})
    split = summary.split.model_dump(include={"method", "n_test", "folds", "notes", "leakage_summary"})
    return {"data": data, "split": split}


def test_metrics(summary: Summary, name: str) -> dict[str, Any]:
    """Model ``name``'s test metrics and intervals, copied from the results model (never recomputed),
    so the card and the report say the same numbers."""
    model, ev = summary.model(name), summary.evaluation
    metrics = model.metrics.model_dump(exclude={"ci"})
    return {
        "n_test": ev.n_test, "confidence": ev.confidence, "bootstrap": ev.bootstrap, "interval_method": ev.interval_method,
        "metrics": metrics, "ci": {k: list(v) for k, v in model.metrics.ci.items() if k in metrics and v is not None},
    }


def calibration_facts(y: np.ndarray, raw: np.ndarray, calibrated: np.ndarray) -> dict[str, Any]:
    return {
        "ece_before": calibration.ece(raw, y), "ece_after": calibration.ece(calibrated, y),
        "nll_before": calibration.nll(raw, y), "nll_after": calibration.nll(calibrated, y),
    }


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render_markdown(manifest: dict[str, Any]) -> str:
    """``MODEL_CARD.md`` from ``bundle.json``'s contents."""
    card, cal = manifest["card"], manifest["calibration"]
    members = manifest["members"]
    lines = [
        f"# Model card: {manifest['name']}", "",
        f"allwen {manifest['versions']['allwen']} bundle exported {manifest['created']} from run `{card['run']}`.",
        "", "## Intended use", "", card["intended_use"], "",
        "## Model", "",
        f"- Kind: {manifest['kind']}" + (f" ({manifest['weighting']} weighting)" if manifest["kind"] == "ensemble" else ""),
        f"- Classes (index order): {', '.join(manifest['classes'])}",
        "- Input: " + manifest["input"]["description"], "",
        "| member | weight | backbone | pretrained weights (timm tag) | head | image size | CLAHE |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {m['name']} | {m['weight']:.4f} | {m['backbone']} | {m.get('pretrained_tag') or 'n/a'} | {m['head']} "
              f"| {m['data']['image_size'] or 'native'} "
              f"| {'yes' if m['data']['clahe'] else 'no'} |" for m in members]
    data, split = card["data"], card["split"]
    lines += ["", "## Data and split", ""]
    lines += [f"- {k.replace('_', ' ')}: {_fmt(v)}" for k, v in data.items()]
    lines += [f"- split: {_fmt(split.get('method'))}, {_fmt(split.get('n_test'))} test images"]
    lines += [f"- note: {n}" for n in split.get("notes") or []]
    if split.get("leakage_summary"):
        lines += ["", "Leakage check (shared subjects / duplicate groups between split sides):", "", "```",
                  str(split["leakage_summary"]), "```"]
    test = card.get("test")
    lines += ["", "## Test metrics", ""]
    if test:
        level = f"{test['confidence']:.0%}"
        method = test.get("interval_method") or f"{level} percentile bootstrap ({test['bootstrap']} resamples)"
        lines += [f"On the run's held-out test set ({test['n_test']} images), uncalibrated probabilities, as in the "
                  f"run's report; intervals: {method}.", "",
                  "| metric | value | interval |", "|---|---|---|"]
        for k, v in test["metrics"].items():
            lo, hi = (test["ci"].get(k) or [None, None])
            lines.append(f"| {k} | {_fmt(v)} | {_fmt(lo)} - {_fmt(hi)} |")
    else:
        lines.append("The run's test set is unlabelled: no test metrics.")
    lines += ["", "## Calibration", "",
              f"Temperature scaling, T = {cal['temperature']:.4f}, fitted on {cal['n_fit']} out-of-fold validation "
              "predictions of the members (each member's own validation fold), applied to each member's "
              "probabilities before they are combined. `allwen predict --no-calibration` gives the raw ones."]
    if cal.get("test"):
        t = cal["test"]
        lines += ["", "| test set | ECE | NLL |", "|---|---|---|",
                  f"| before | {t['ece_before']:.4f} | {t['nll_before']:.4f} |",
                  f"| after | {t['ece_after']:.4f} | {t['nll_after']:.4f} |", "",
                  "ECE: expected calibration error of the top-class confidence, 15 equal-width bins.", "",
                  "![reliability diagram](reliability.png)"]
    lines += ["", "## Limits", ""] + [f"- {item}" for item in card["limits"]]
    return "\n".join(lines) + "\n"
