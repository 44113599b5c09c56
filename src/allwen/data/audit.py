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

from allwen.data.images import DEFAULT_MAX_PIXELS, ImageReadError, read_rgb
from allwen.data.table import ImageTable
from allwen.progress import track

log = logging.getLogger(__name__)


def check_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[tuple[int, int, str] | None, str]:
    """((width, height, mode), conversion note) for a usable image, else (None, reason).

    Decodes exactly as training will (:func:`allwen.data.images.read_rgb`), so an image the
    audit accepts is one training can read, and every conversion is known up front.
    """
    try:
        decoded = read_rgb(path, max_pixels)
    except ImageReadError as exc:
        return None, str(exc).removeprefix(f"{path}: ")
    return (decoded.width, decoded.height, decoded.mode), decoded.note


@dataclass
class AuditReport:
    """What ``allwen inspect`` found; ``to_json`` is the machine-readable form."""

    source: str
    root: str
    n_images: int  # readable images; the unreadable are counted apart
    classes: dict[str, int]
    n_subjects: dict[str, int] | None
    images_per_subject: dict[str, int] | None
    sizes: dict[str, int]
    modes: dict[str, int]
    source_splits: dict[str, int]
    imbalance: float | None
    unreadable: dict[str, str]
    unreadable_classes: dict[str, int]
    converted: dict[str, str]
    max_pixels: int | None
    duplicate_groups: list[list[str]]
    duplicate_spans: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    grid_png: str | None = None
    near_duplicate_groups: list[dict[str, Any]] = field(default_factory=list)
    phash_distance: int | None = None
    phashes: np.ndarray | None = field(default=None, repr=False)  # one per table row; not in the JSON

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "root": self.root,
            "n_images": self.n_images,
            "n_files": self.n_images + len(self.unreadable),
            "classes": self.classes,
            "n_subjects": self.n_subjects,
            "images_per_subject": self.images_per_subject,
            "sizes": self.sizes,
            "modes": self.modes,
            "source_splits": self.source_splits,
            "imbalance": self.imbalance,
            "unreadable": sorted(self.unreadable),
            "unreadable_reasons": self.unreadable,
            "unreadable_classes": self.unreadable_classes,
            "converted": self.converted,
            "max_pixels": self.max_pixels,
            "duplicate_groups": self.duplicate_groups,
            "duplicate_spans": self.duplicate_spans,
            "near_duplicate_phash_distance": self.phash_distance,
            "near_duplicate_groups": self.near_duplicate_groups,
            "notes": self.notes,
            "grid_png": self.grid_png,
        }


def audit_table(table: ImageTable, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                phash_distance: int | None = 24) -> AuditReport:
    """Read every image once and summarise the dataset; class totals count readable images.

    Near-duplicate groups come from perceptual hashes within ``phash_distance`` bits (the
    schema's ``split.phash_distance`` default; null = none)."""
    sizes: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    unreadable: dict[str, str] = {}
    converted: dict[str, str] = {}
    from allwen.data.neardup import WORDS, phash_words

    hashes = np.zeros((len(table.frame), WORDS), dtype=np.uint64)
    for i, path in enumerate(track(table.frame["path"], len(table.frame), "auditing images")):
        try:
            decoded = read_rgb(path, max_pixels)
        except ImageReadError as exc:
            unreadable[path] = str(exc).removeprefix(f"{path}: ")
            continue
        sizes[f"{decoded.width}x{decoded.height}"] += 1
        modes[decoded.mode] += 1
        if decoded.note:
            converted[path] = decoded.note
        if phash_distance is not None and table.frame["sha256"].iat[i] != "":
            hashes[i] = phash_words(decoded.image)
    bad = table.frame["path"].isin(set(unreadable))
    unreadable_classes = {str(k or "(unlabelled)"): int(v) for k, v in table.frame[bad].groupby("label").size().items()}
    frame = table.frame[~bad]
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
    readable = frame[frame["sha256"] != ""]
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
    near_groups = _near_duplicate_groups(table, hashes, phash_distance)
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
        unreadable_classes=unreadable_classes,
        converted=converted,
        max_pixels=max_pixels,
        duplicate_groups=[groups[i] for i in order],
        duplicate_spans=[spans[i] for i in order],
        notes=list(table.notes),
        near_duplicate_groups=near_groups,
        phash_distance=phash_distance,
        phashes=hashes,
    )


def _near_duplicate_groups(table: ImageTable, hashes: np.ndarray, max_distance: int | None) -> list[dict[str, Any]]:
    """Groups of images whose perceptual hashes lie within ``max_distance`` bits, byte-identical
    copies merged (a group of exact copies only is an exact duplicate group, listed apart)."""
    from allwen.data.neardup import groups_from_pairs, hash_pairs

    if max_distance is None:
        return []
    frame = table.frame
    digests = frame["sha256"].to_numpy()
    pairs = hash_pairs(hashes, max_distance)
    distance: dict[int, int] = {}
    groups = groups_from_pairs(len(frame), pairs)
    root = {i: k for k, members in enumerate(groups) for i in members}
    for i, j, d in pairs:
        distance[root[i]] = max(distance.get(root[i], 0), d)
    out = []
    for k, members in enumerate(groups):
        if len({digests[i] for i in members}) < 2:
            continue  # only byte-identical copies
        rows = frame.iloc[members]
        out.append({
            "paths": rows["path"].tolist(),
            "size": len(members),
            "max_distance": distance.get(k, 0),
            "classes": sorted(set(rows["label"])),
            "spans_classes": rows["label"].nunique() > 1,
        })
    return out


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
                ax.imshow(read_rgb(paths[chosen[c]], None).image.resize((tile, tile)))
        axes[r][0].set_title(name, loc="left", fontsize=9)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    from allwen.io import atomic_write

    atomic_write(out_png, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
    return out_png


def format_report(report: AuditReport) -> str:
    """Human-readable audit text."""
    lines = [f"{report.n_images} readable images from {report.root} (source: {report.source})"]
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
    lines.append(f"unreadable files (left out, not in the counts above): {len(report.unreadable)}"
                 + (" (" + ", ".join(f"{k} {v}" for k, v in report.unreadable_classes.items()) + ")" if report.unreadable else ""))
    lines += [f"  {p}: {why}" for p, why in sorted(report.unreadable.items())]
    lines.append(f"converted to 8-bit RGB: {len(report.converted)}")
    lines += [f"  {p}: {why}" for p, why in sorted(report.converted.items())[:20]]
    if len(report.converted) > 20:
        lines.append(f"  ... {len(report.converted) - 20} more (see --json)")
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
    if report.phash_distance is not None:
        near = report.near_duplicate_groups
        lines.append(f"near-duplicate groups (perceptual hash within {report.phash_distance} of 256 bits): {len(near)} "
                     f"({sum(g['size'] for g in near)} images, {sum(g['spans_classes'] for g in near)} span classes)")
        for group in near[:10]:
            lines.append("  " + " ~ ".join(Path(p).name for p in group["paths"]) + f" (distance <= {group['max_distance']})")
        if len(near) > 10:
            lines.append(f"  ... {len(near) - 10} more (see --json)")
    lines += [f"note: {n}" for n in report.notes[:10]]
    if report.grid_png:
        lines.append(f"sample grid: {report.grid_png}")
    return "\n".join(lines)
