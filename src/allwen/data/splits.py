"""Splits: held-out test set plus k folds, image-level or subject-grouped, duplicate-aware.

A split is a file in the run folder (``splits/split.csv``, one column per fold) so it can be
reused and inspected; a leakage check runs on every split made and is saved beside it.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from allwen.config.schema import SplitConfig
from allwen.data.groups import leakage_summary  # noqa: F401  (re-exported: callers import it from here)
from allwen.data.table import ImageTable
from allwen.io import RunFileError
from allwen.runfolder import RunFolder

log = logging.getLogger(__name__)


class SplitError(ValueError):
    """A split cannot be made as configured; the message says which setting to change."""


@dataclass
class Split:
    """Row roles for one dataset: ``test`` mask and, per fold, train / val index arrays."""

    test: np.ndarray  # row indices of the held-out test set
    folds: list[tuple[np.ndarray, np.ndarray]]  # (train rows, val rows) per fold
    method: str
    settings: dict[str, Any] = field(default_factory=dict)
    leakage: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # per row: the pseudo-patient standing in for a subject ("" when none), and the near-duplicate group
    pseudo: list[str] | None = None
    near: list[str] | None = None
    grouping: dict[str, Any] = field(default_factory=dict)  # what stood in for patients, near-duplicate counts

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    def roles(self, n_rows: int) -> pd.DataFrame:
        """One column per fold with train/val/test/'' for each row."""
        columns = {}
        for k, (train, val) in enumerate(self.folds):
            col = np.full(n_rows, "", dtype=object)
            col[self.test] = "test"
            col[train] = "train"
            col[np.setdiff1d(val, self.test)] = "val"  # validate_on: test keeps its rows "test"
            columns[f"fold_{k}"] = col
        return pd.DataFrame(columns)


def _stratified_groups(y: np.ndarray, groups: np.ndarray | None, n_splits: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold  # lazy: `allwen report` needs no sklearn

    if groups is None:
        return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    return StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups)


def _check_enough(y: np.ndarray, groups: np.ndarray | None, n_splits: int, what: str) -> None:
    for label in np.unique(y):
        units = len(np.unique(groups[y == label])) if groups is not None else int((y == label).sum())
        if units < n_splits:
            kind = "groups (subjects/duplicate sets)" if groups is not None else "images"
            raise SplitError(
                f"{what}: class {label} has only {units} {kind}, fewer than the {n_splits} parts asked for; "
                f"lower split.folds or the split fraction, or use split.group_by=image"
            )


def test_parts(fraction: float) -> int:
    """How many disjoint test parts a test fraction makes (``split.test_part``): the nearest 1/n."""
    return max(2, int(round(1.0 / fraction)))


def holdout(y: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int, what: str,
            part: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stratified hold-out (positions into y): exact fraction for images, nearest 1/n for groups.

    ``part``: the held-out side is part ``part`` of ``test_parts(fraction)`` stratified (grouped)
    parts instead, so that every part is held out once across ``part = 0..n-1``. For groups,
    part 0 is the same side as the plain hold-out.
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    if part is not None:
        n_splits = test_parts(fraction)
        _check_enough(y, groups, n_splits, what)
        if groups is None or len(np.unique(groups)) == len(groups):
            from sklearn.model_selection import StratifiedKFold

            splits = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(idx, y)
        else:
            splits = _stratified_groups(y, groups, n_splits, seed)
        for k, (rest, held) in enumerate(splits):
            if k == part:
                return np.sort(rest), np.sort(held)
        raise SplitError(f"{what}: part {part} of {n_splits} does not exist")
    if groups is None or len(np.unique(groups)) == len(groups):
        rest, held = train_test_split(idx, test_size=fraction, stratify=y, random_state=seed)
        return np.sort(rest), np.sort(held)
    n_splits = max(2, int(round(1.0 / fraction)))
    _check_enough(y, groups, n_splits, what)
    rest, held = next(_stratified_groups(y, groups, n_splits, seed))
    return np.sort(rest), np.sort(held)


def pseudo_patients(table: ImageTable, cfg: SplitConfig, max_pixels: int | None = None) -> tuple[list[str] | None, dict[str, Any]]:
    """Per-row pseudo-patient labels and what they are.

    For ``group_by: sequence|cluster`` these are the split's groups. For other splits of a
    source whose block size is known (Taleqani), sequence blocks are still made, only to report
    how many of them an image-level split shares across sides.
    """
    from allwen.data import pseudo

    frame = table.frame
    used = cfg.group_by in ("sequence", "cluster")
    if not used and (cfg.group_by == "subject" or table.source not in pseudo.KNOWN_IMAGES_PER_PATIENT):
        return None, {}
    try:
        block = cfg.sequence_block or pseudo.default_block(table.source)
    except pseudo.PseudoPatientError as exc:
        raise SplitError(str(exc)) from None
    labels = frame["label"].tolist()
    method = cfg.group_by if used else "sequence"
    try:
        if method == "sequence":
            keys = [pseudo.sequence_groups([p], [lab], block)[0] if lab else "" for p, lab in zip(frame["path"], labels)]
        else:
            stats = pseudo.colour_statistics(frame["path"].tolist(), max_pixels)
            keys = pseudo.cluster_groups(stats, labels, block)
            keys = [k if lab else "" for k, lab in zip(keys, labels)]
    except pseudo.PseudoPatientError as exc:
        raise SplitError(str(exc)) from None
    described = (f"sequence blocks of {block} consecutive file numbers per class" if method == "sequence" else
                 f"Ward clusters of stain-colour statistics per class (about {block} images each)")
    info = {"pseudo_patients": method, "pseudo_patient_block": block, "pseudo_patients_used": used,
            "pseudo_patients_described": described, "n_pseudo_patients": len(set(keys) - {""})}
    return keys, info


def near_duplicates(table: ImageTable, cfg: SplitConfig, hashes: np.ndarray | None = None,
                    features: list[tuple[str, np.ndarray]] | None = None,
                    max_pixels: int | None = None) -> tuple[list[str], dict[str, Any]]:
    """Per-row near-duplicate group labels from the perceptual hash and, when given, backbone
    features (:mod:`allwen.data.neardup`), and the counts found."""
    from allwen.data import neardup

    n = len(table.frame)
    pairs: list[tuple[int, int, Any]] = []
    info: dict[str, Any] = {"phash_distance": cfg.phash_distance, "feature_cosine": cfg.feature_cosine}
    if cfg.phash_distance is not None:
        digests = table.frame["sha256"].to_numpy()
        unhashed = digests == ""  # a table read without content hashes groups nothing, like exact duplicates
        if hashes is None:
            hashes = neardup.phashes(table.frame["path"].tolist(), max_pixels, skip=unhashed)
        hashes = np.where(unhashed[:, None], np.uint64(0), np.asarray(hashes, dtype=np.uint64))
        found = [p for p in neardup.hash_pairs(hashes, cfg.phash_distance) if digests[p[0]] != digests[p[1]]]
        info["phash_links"] = len(found)  # a spanning set of near pairs (hash_pairs)
        pairs += found
    if cfg.feature_cosine is not None and features:
        for key, values in features:
            found = neardup.feature_pairs(values, cfg.feature_cosine)
            info.setdefault("feature_pairs", {})[key] = len(found)
            pairs += found
    groups = neardup.groups_from_pairs(n, pairs)
    info["near_duplicate_groups"] = len(groups)
    info["images_in_near_duplicate_groups"] = int(sum(len(g) for g in groups))
    return neardup.group_labels(n, groups), info


def make_split(table: ImageTable, cfg: SplitConfig, hashes: np.ndarray | None = None,
               features: list[tuple[str, np.ndarray]] | None = None, max_pixels: int | None = None) -> Split:
    """Build the test set and the folds of the remaining labelled images, then check leakage.

    ``hashes`` (perceptual, one per row) saves decoding the images again when the audit made
    them; ``features`` (cache key, stage-1 features per row) adds feature near-duplicates.
    """
    frame = table.frame
    y_all = table.label_indices()
    labelled = np.flatnonzero(y_all >= 0)
    if cfg.group_by == "subject" and not table.has_subjects:
        raise SplitError(
            f"split.group_by=subject, but the {table.source} source has no subject ids; "
            "use split.group_by=sequence or cluster (pseudo-patients), or image "
            "(duplicate_aware keeps identical and near-identical images together)"
        )
    pseudo, grouping = pseudo_patients(table, cfg, max_pixels)
    near, near_info = near_duplicates(table, cfg, hashes, features, max_pixels)  # reported even when not kept together
    grouping.update(near_info)
    by_group = cfg.group_by in ("subject", "sequence", "cluster")
    subjects = pseudo if cfg.group_by in ("sequence", "cluster") else frame["subject"].tolist()
    from allwen.data.groups import group_keys

    keys = group_keys(subjects, frame["sha256"].tolist(), by_group, cfg.duplicate_aware, near)
    grouped = by_group or cfg.duplicate_aware

    notes: list[str] = []
    if cfg.test == "official":
        is_test = (frame["source_split"] == "prelim_test").to_numpy()
        test = np.intersect1d(labelled, np.flatnonzero(is_test))
        pool = np.intersect1d(labelled, np.flatnonzero(frame["source_split"].str.startswith("fold_").to_numpy()))
        if len(test) == 0:
            raise SplitError(
                "split.test=official needs the labelled C-NMC preliminary test set "
                "(validation_data/C-NMC_test_prelim_phase_data with its labels CSV); none was found"
            )
        if grouped:  # the test side is fixed: keep training images that share a group with it out
            touching = np.isin(keys[pool], keys[test])
            if touching.any():
                notes.append(f"{int(touching.sum())} training images share a subject or duplicate group "
                             "with the official test set and are left out")
                log.warning(notes[-1])
                pool = pool[~touching]
    else:
        rest, held = holdout(y_all[labelled], keys[labelled] if grouped else None, float(cfg.test), cfg.seed, "split.test",
                             cfg.test_part)
        test, pool = labelled[held], labelled[rest]

    folds: list[tuple[np.ndarray, np.ndarray]] = []
    y_pool, g_pool = y_all[pool], keys[pool] if grouped else None
    if cfg.validate_on == "test":  # Experiment C as run: validation = test, training = all the rest
        folds.append((np.sort(pool), np.sort(test)))
        notes.append(f"split.validate_on=test: the {len(test)} test images are also the validation set; every "
                     "choice made on validation (early stopping, kept epoch, champions, weights) saw the test "
                     "images, so the test metrics are optimistic")
    elif cfg.folds == 1:
        train, val = holdout(y_pool, g_pool, cfg.val_fraction, cfg.seed + 1, "split.val_fraction")
        folds.append((pool[train], pool[val]))
    else:
        _check_enough(y_pool, g_pool, cfg.folds, "split.folds")
        for train, val in _stratified_groups(y_pool, g_pool, cfg.folds, cfg.seed + 1):
            folds.append((np.sort(pool[train]), np.sort(pool[val])))

    side = "official" if cfg.test == "official" else "holdout"
    if cfg.test_part is not None:
        side = f"testpart{cfg.test_part}of{test_parts(float(cfg.test))}"
    method = f"{side}+{cfg.folds}fold/{cfg.group_by}"
    method += "/dedup" if cfg.duplicate_aware else ""
    method += "/val=test" if cfg.validate_on == "test" else ""
    split = Split(test=np.sort(test), folds=folds, method=method, settings=cfg.model_dump(mode="json"), notes=notes,
                  pseudo=pseudo, near=near, grouping=grouping)
    split.leakage = leakage_check(table, split)
    return split


def _shared_labels(values: np.ndarray, a: np.ndarray, b: np.ndarray) -> list[str]:
    return sorted((set(values[a]) - {""}) & (set(values[b]) - {""}))


def _shared(frame: pd.DataFrame, a: np.ndarray, b: np.ndarray, split: Split) -> dict[str, Any]:
    subjects = _shared_labels(frame["subject"].to_numpy(), a, b)
    out: dict[str, Any] = {
        "shared_subjects": len(subjects),
        "shared_duplicate_groups": len(_shared_labels(frame["sha256"].to_numpy(), a, b)),
        "examples": subjects[:5],
    }
    if split.near is not None:
        out["shared_near_duplicate_groups"] = len(_shared_labels(np.array(split.near, dtype=object), a, b))
    if split.pseudo is not None:
        shared = _shared_labels(np.array(split.pseudo, dtype=object), a, b)
        out.update(pseudo_patients=split.grouping.get("pseudo_patients"), shared_pseudo_patients=len(shared),
                   pseudo_examples=shared[:5])
    return out


def leakage_check(table: ImageTable, split: Split) -> list[dict[str, Any]]:
    """For every two sides of the split: how many subjects (or pseudo-patients), duplicate groups
    and near-duplicate groups they share."""
    frame = table.frame
    out = []
    for k, (train, val) in enumerate(split.folds):
        sides = {"train": train, "val": val}
        if len(split.test):
            sides["test"] = split.test
        for (na, a), (nb, b) in itertools.combinations(sides.items(), 2):
            if na == "train" and nb == "test" and k > 0:
                continue  # train+val of every fold is the same pool: report train/test once
            if na == "val" and nb == "test" and np.array_equal(a, b):
                continue  # split.validate_on=test: one side, named in the split's notes
            out.append({"fold": k, "a": na, "b": nb, "n_a": len(a), "n_b": len(b), **_shared(frame, a, b, split)})
    return out


def save_split(split: Split, table: ImageTable, folder: RunFolder) -> Path:
    """Write the run's split files (:meth:`RunFolder.write_split_files`): one row per image and one
    column per fold, the split's description and its leakage check."""
    frame = table.frame[["path", "label", "subject", "sha256"]].copy()
    if split.pseudo is not None:
        frame["pseudo_patient"] = split.pseudo
    if split.near is not None:
        frame["near_duplicate_group"] = split.near
    frame = pd.concat([frame, split.roles(len(frame))], axis=1)
    return folder.write_split_files(frame, {
        "method": split.method, "settings": split.settings, "n_test": len(split.test),
        "folds": [{"train": len(t), "val": len(v)} for t, v in split.folds], "notes": split.notes,
        "grouping": split.grouping,
    }, split.leakage)


def load_split(folder: RunFolder, table: ImageTable) -> Split:
    """Read a run's saved split back; the table must list the same images in the same order."""
    fix = "the split is the run's ground truth: restore it, or delete the splits/ folder of a run with no finished unit"
    _, meta, leakage = folder.read_split_files(fix)
    try:
        saved = folder.split_truth()  # the one reading of split.csv's columns (allwen.runfolder.SplitTruth)
    except RunFileError as exc:
        raise SplitError(str(exc)) from None
    if saved.paths.tolist() != list(table.frame["path"]):
        raise SplitError(
            f"{saved.path}: the saved split lists other images than the dataset now has; "
            "use a new --out folder (a run never mixes two datasets)"
        )
    test = saved.indices(saved.folds[0], "test")
    folds = [(saved.indices(k, "train"), saved.indices(k, saved.val_role)) for k in saved.folds]
    return Split(test=test, folds=folds, method=meta["method"], settings=meta["settings"], leakage=leakage,
                 notes=meta.get("notes", []), pseudo=saved.optional("pseudo_patient"),
                 near=saved.optional("near_duplicate_group"), grouping=meta.get("grouping", {}))
