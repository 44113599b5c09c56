"""Training curves (train vs validation loss and accuracy per epoch, both stages) as a PNG."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from allwen.io import atomic_write


def plot_history(history: pd.DataFrame, out_png: Path, title: str = "", monitor: str = "accuracy") -> Path:
    """Two panels: train vs val loss, train vs val accuracy (and the validation monitor when it
    is another metric); stage 2 continues stage 1's x axis, a dashed line marks the change."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(8, 3))
    if len(history):
        x = range(1, len(history) + 1)
        ax_loss.plot(x, history["train_loss"], label="train loss")
        ax_loss.plot(x, history["val_loss"], label="val loss")
        if "train_accuracy" in history:  # histories written before training accuracy was recorded lack it
            ax_metric.plot(x, history["train_accuracy"], label="train accuracy")
        ax_metric.plot(x, history["val_accuracy"], label="val accuracy")
        if monitor not in ("accuracy", "loss") and f"val_{monitor}" in history:
            ax_metric.plot(x, history[f"val_{monitor}"], label=f"val {monitor}", linestyle=":")
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
