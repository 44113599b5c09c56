"""The model card of a bundle: what the model is, what it was tested on, how far to trust it.

Computed once at export from the run's saved files (as JSON in ``bundle.json``, served by
``GET /api/model``) and rendered to ``MODEL_CARD.md``. Test metrics are recomputed from the
members' saved test predictions combined exactly as the bundle combines them, so the card
describes this bundle, whatever the run's summary format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from allwen.serve import calibration
from allwen.serve.runfiles import read_run_config, read_summary

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


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def data_and_split(run_dir: Path) -> dict[str, Any]:
    """Data and split facts from the summary, else from the run's own audit and split files."""
    summary = read_summary(run_dir)
    data = summary.get("data") if isinstance(summary.get("data"), dict) else None
    if data is None:
        audit = _json_file(run_dir / "data" / "audit.json") or {}
        data = {k: audit.get(k) for k in ("source", "n_images", "classes", "n_subjects")}
    split = summary.get("split") if isinstance(summary.get("split"), dict) else None
    if split is None:
        meta = _json_file(run_dir / "splits" / "split.json") or {}
        split = {k: meta.get(k) for k in ("method", "n_test", "folds", "notes")}
        leakage = _json_file(run_dir / "splits" / "leakage.json")
        if isinstance(leakage, list):
            from allwen.data.splits import leakage_summary

            split["leakage_summary"] = leakage_summary(leakage)
    keep = ("method", "n_test", "folds", "notes", "leakage_summary")
    data_keep = ("source", "root", "n_images", "classes", "n_subjects", "n_duplicate_groups", "imbalance")
    return {"data": {k: data.get(k) for k in data_keep if k in data},
            "split": {k: split.get(k) for k in keep if k in split}}


def test_metrics(run_dir: Path, y: np.ndarray, proba: np.ndarray) -> dict[str, Any]:
    """Test metrics with the run's bootstrap intervals (its ``evaluation`` settings)."""
    from allwen.evaluation import ALL_METRIC_NAMES, bootstrap_ci, compute_metrics

    ev = read_run_config(run_dir).get("evaluation") or {}
    n_boot, conf, seed = int(ev.get("bootstrap", 1000)), float(ev.get("confidence", 0.95)), int(ev.get("seed", 0))
    values = compute_metrics(y, proba)
    ci = bootstrap_ci(y, proba, n_boot=n_boot, confidence=conf, seed=seed, metrics=ALL_METRIC_NAMES) if n_boot else {}

    def clean(v: float) -> float | None:
        return float(v) if np.isfinite(v) else None

    return {
        "n_test": int(len(y)), "confidence": conf, "bootstrap": n_boot,
        "metrics": {k: clean(v) for k, v in values.items()},
        "ci": {k: [clean(ci[k][0]), clean(ci[k][1])] for k in values if k in ci},
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
        "| member | weight | backbone | head | image size | CLAHE |", "|---|---|---|---|---|---|",
    ]
    lines += [f"| {m['name']} | {m['weight']:.4f} | {m['backbone']} | {m['head']} | {m['data']['image_size'] or 'native'} "
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
        lines += [f"On the run's held-out test set ({test['n_test']} images), uncalibrated probabilities; "
                  f"{level} percentile bootstrap intervals ({test['bootstrap']} resamples).", "",
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
