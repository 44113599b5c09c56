"""Audit a dataset before training: counts, subjects, sizes, unreadable files, duplicates.

A bad file is listed with its reason and never stops the audit.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from allwen.data.table import ImageTable
from allwen.progress import track

log = logging.getLogger(__name__)


def check_image(path: str | Path) -> tuple[tuple[int, int, str] | None, str]:
    """((width, height, mode), "") for a readable image, else (None, reason)."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return None, "empty file (0 bytes)"
        with Image.open(path) as im:
            im.load()  # decodes fully: truncated or corrupt data fails here
            return (im.width, im.height, im.mode), ""
    except Exception as exc:  # PIL raises many error types for bad files
        return None, f"{type(exc).__name__}: {exc}"


@dataclass
class AuditReport:
    """What ``allwen inspect`` found; ``to_json`` is the machine-readable form."""

    source: str
    root: str
    n_images: int
    classes: dict[str, int]
    n_subjects: dict[str, int] | None
    images_per_subject: dict[str, int] | None
    sizes: dict[str, int]
    modes: dict[str, int]
    source_splits: dict[str, int]
    imbalance: float | None
    unreadable: dict[str, str]
    duplicate_groups: list[list[str]]
    duplicate_spans: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    grid_png: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "root": self.root,
            "n_images": self.n_images,
            "classes": self.classes,
            "n_subjects": self.n_subjects,
            "images_per_subject": self.images_per_subject,
            "sizes": self.sizes,
            "modes": self.modes,
            "source_splits": self.source_splits,
            "imbalance": self.imbalance,
            "unreadable": sorted(self.unreadable),
            "unreadable_reasons": self.unreadable,
            "duplicate_groups": self.duplicate_groups,
            "duplicate_spans": self.duplicate_spans,
            "notes": self.notes,
            "grid_png": self.grid_png,
        }


def audit_table(table: ImageTable) -> AuditReport:
    """Read every image once and summarise the dataset."""
    frame = table.frame
    sizes: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    unreadable: dict[str, str] = {}
    for path in track(frame["path"], len(frame), "auditing images"):
        info, reason = check_image(path)
        if info is None:
            unreadable[path] = reason
        else:
            sizes[f"{info[0]}x{info[1]}"] += 1
            modes[info[2]] += 1
    labelled = frame[frame["label"] != ""]
    classes = {c: int((labelled["label"] == c).sum()) for c in table.classes}
    if frame["label"].eq("").any():
        classes["(unlabelled)"] = int(frame["label"].eq("").sum())
    counts = [v for k, v in classes.items() if k != "(unlabelled)" and v > 0]
    imbalance = round(max(counts) / min(counts), 3) if counts else None

    n_subjects = per_subject = None
    if table.has_subjects:
        with_subject = labelled[labelled["subject"] != ""]
        n_subjects = {c: int(with_subject.loc[with_subject["label"] == c, "subject"].nunique()) for c in table.classes}
        per_subject = {str(k): int(v) for k, v in frame[frame["subject"] != ""].groupby("subject").size().items()}

    groups, spans = [], []
    readable = frame[~frame["path"].isin(unreadable) & (frame["sha256"] != "")]
    for digest, idx in readable.groupby("sha256").indices.items():
        if len(idx) < 2:
            continue
        rows = readable.iloc[idx]
        groups.append(sorted(rows["path"]))
        spans.append({
            "sha256": digest,
            "size": len(idx),
            "classes": sorted(set(rows["label"])),
            "subjects": sorted(set(rows["subject"]) - {""}),
            "spans_classes": rows["label"].nunique() > 1,
            "spans_subjects": rows.loc[rows["subject"] != "", "subject"].nunique() > 1,
        })
    order = np.argsort([g[0] for g in groups], kind="stable")
    return AuditReport(
        source=table.source,
        root=str(table.root),
        n_images=len(frame),
        classes=classes,
        n_subjects=n_subjects,
        images_per_subject=per_subject,
        sizes=dict(sizes.most_common()),
        modes=dict(modes.most_common()),
        source_splits={str(k or "(none)"): int(v) for k, v in frame.groupby("source_split").size().items()},
        imbalance=imbalance,
        unreadable=unreadable,
        duplicate_groups=[groups[i] for i in order],
        duplicate_spans=[spans[i] for i in order],
        notes=list(table.notes),
    )


def sample_grid(table: ImageTable, out_png: Path, per_class: int = 8, tile: int = 96, seed: int = 0,
                skip: set[str] | None = None) -> Path:
    """A PNG with a row of random sample cells per class, to eyeball the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    skip = skip or set()
    classes = [c for c in table.classes if (table.frame["label"] == c).any()]
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 1.2, len(classes) * 1.3), squeeze=False)
    for r, name in enumerate(classes):
        paths = [p for p in table.frame.loc[table.frame["label"] == name, "path"] if p not in skip]
        chosen = rng.choice(len(paths), size=min(per_class, len(paths)), replace=False) if paths else []
        for c in range(per_class):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(chosen):
                with Image.open(paths[chosen[c]]) as im:
                    ax.imshow(im.convert("RGB").resize((tile, tile)))
        axes[r][0].set_title(name, loc="left", fontsize=9)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    from allwen.io import atomic_write

    atomic_write(out_png, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
    return out_png


def format_report(report: AuditReport) -> str:
    """Human-readable audit text."""
    lines = [f"{report.n_images} images from {report.root} (source: {report.source})"]
    lines.append("classes: " + ", ".join(f"{k} {v}" for k, v in report.classes.items()))
    if report.imbalance is not None:
        lines.append(f"class imbalance (largest / smallest): {report.imbalance:.2f} : 1")
    if report.n_subjects is None:
        lines.append("subjects: none in the file names (only image-level or duplicate-aware splits are possible)")
    else:
        lines.append("subjects: " + ", ".join(f"{k} {v}" for k, v in report.n_subjects.items()))
    lines.append("parts: " + ", ".join(f"{k} {v}" for k, v in report.source_splits.items()))
    lines.append("sizes: " + ", ".join(f"{k} ({v})" for k, v in list(report.sizes.items())[:5]))
    lines.append("modes: " + ", ".join(f"{k} ({v})" for k, v in report.modes.items()))
    lines.append(f"unreadable files: {len(report.unreadable)}")
    lines += [f"  {p}: {why}" for p, why in sorted(report.unreadable.items())]
    cross = sum(s["spans_subjects"] for s in report.duplicate_spans)
    mixed = sum(s["spans_classes"] for s in report.duplicate_spans)
    lines.append(
        f"exact duplicate groups: {len(report.duplicate_groups)} "
        f"({cross} span subjects, {mixed} span classes)"
    )
    for group in report.duplicate_groups[:10]:
        lines.append("  " + " = ".join(Path(p).name for p in group))
    if len(report.duplicate_groups) > 10:
        lines.append(f"  ... {len(report.duplicate_groups) - 10} more (see --json)")
    lines += [f"note: {n}" for n in report.notes[:10]]
    if report.grid_png:
        lines.append(f"sample grid: {report.grid_png}")
    return "\n".join(lines)
