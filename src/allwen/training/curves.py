"""Training curves (loss and the monitored metric per epoch, both stages) as a PNG."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from allwen.io import atomic_write


def plot_history(history: pd.DataFrame, out_png: Path, title: str = "", monitor: str = "accuracy") -> Path:
    """Two panels: train/val loss and the validation metric; stage 2 continues stage 1's x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(8, 3))
    if len(history):
        x = range(1, len(history) + 1)
        ax_loss.plot(x, history["train_loss"], label="train loss")
        ax_loss.plot(x, history["val_loss"], label="val loss")
        column = f"val_{monitor}" if f"val_{monitor}" in history else "val_accuracy"
        ax_metric.plot(x, history[column], label=column, color="tab:green")
        n1 = int((history["stage"] == "stage1").sum())
        if 0 < n1 < len(history):
            for ax in (ax_loss, ax_metric):
                ax.axvline(n1 + 0.5, color="grey", linestyle="--", linewidth=0.8)
                ax.text(n1 + 0.6, ax.get_ylim()[1], "fine-tune", fontsize=7, va="top", color="grey")
    for ax in (ax_loss, ax_metric):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
    return out_png
