"""The bundle's figures, drawn at export: the reliability diagram and the accuracy-coverage curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from allwen.serve.calibration import ece
from allwen.evaluation.metrics import predict_labels


def reliability_bins(proba: np.ndarray, y: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Per confidence bin: mean confidence, accuracy and count (bins with images only)."""
    proba = np.asarray(proba, dtype=np.float64)
    conf, correct = proba.max(axis=1), (predict_labels(proba) == np.asarray(y)).astype(float)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    return [
        {"confidence": float(conf[bins == b].mean()), "accuracy": float(correct[bins == b].mean()),
         "count": int((bins == b).sum())}
        for b in range(n_bins) if (bins == b).any()
    ]


def reliability_diagram(path: Path, y: np.ndarray, before: np.ndarray, after: np.ndarray, title: str) -> Path:
    """A PNG: accuracy against confidence per bin, before and after temperature scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from allwen.io import atomic_write

    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=110)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    for proba, label, marker in ((before, "before", "o"), (after, "after temperature scaling", "s")):
        pts = reliability_bins(proba, y)
        ax.plot([p["confidence"] for p in pts], [p["accuracy"] for p in pts], marker=marker,
                label=f"{label} (ECE {ece(proba, y):.3f})")
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="confidence (top class)", ylabel="accuracy", title=title)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def coverage_plot(path: Path, test: dict[str, Any]) -> Path:
    """``coverage.png``: accuracy on answered test images against coverage, the chosen point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from allwen.io import atomic_write

    pts = test["curve"]
    fig, ax = plt.subplots(figsize=(4.5, 3.4), dpi=110)
    ax.plot([p["coverage"] for p in pts], [p["accuracy"] for p in pts], lw=1.6, label="test set")
    ax.axhline(test["target_accuracy"], color="grey", ls="--", lw=1, label=f"target {test['target_accuracy']:.3f}")
    if test.get("accuracy") is not None:
        ax.plot([test["coverage"]], [test["accuracy"]], "o", color="crimson", label="chosen threshold")
    ax.set_xlabel("coverage (share of images answered)")
    ax.set_ylabel("accuracy on answered images")
    ax.set_xlim(0, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


__all__ = ["coverage_plot", "reliability_bins", "reliability_diagram"]
