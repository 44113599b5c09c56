"""A finished run folder with synthetic predictions, for the report benchmark and fast tests.

Writes what ``allwen run`` leaves before evaluation (config, audit, split, every unit's
prediction files, ``unit.json`` and ``curves.png``) without training anything, so evaluation
and the report can be exercised at full size in seconds. Subjects have their own offsets
(cells of one person are easier or harder together), as on C-NMC.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from allwen.config import Config, expand_scenarios, load_config
from allwen.runfolder import RunFolder

CLASSES = ["hem", "all"]
MULTI_CLASSES = ["Benign", "Early", "Pre", "Pro"]


def _curves_png(path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 2.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    epochs = np.arange(1, 11)
    axes[0].plot(epochs, 0.7 * np.exp(-epochs / 4) + 0.2)
    axes[1].plot(epochs, 0.9 - 0.3 * np.exp(-epochs / 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=80)


def write_synthetic_run(
    run_dir: Path,
    n_test: int = 644,
    n_test_subjects: int = 16,
    n_pool: int = 2576,
    n_pool_subjects: int = 60,
    lrs: tuple[float, ...] = (1e-3, 1e-4, 1e-5),
    folds: int = 5,
    bootstrap: int = 1000,
    subjects: bool = True,
    classes: list[str] | None = None,
    seed: int = 0,
    overrides: list[str] | None = None,
) -> Config:
    """Write ``len(lrs)`` scenarios x ``folds`` finished units into ``run_dir``; return the config.

    ``subjects=False`` writes a split without a ``subject`` column, as runs made before
    subjects were kept (evaluation then works over images). ``classes`` (default hem/all)
    may list more than two classes.
    """
    classes = list(classes or CLASSES)
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    rng = np.random.default_rng(seed)
    cfg = load_config("preset:demo", [
        f"data.path={run_dir / 'data'}", f"split.folds={folds}", f"evaluation.bootstrap={bootstrap}",
        f"scenarios={{train.lr: [{', '.join(str(v) for v in lrs)}]}}", *(overrides or []),
    ])
    folder.write_config(cfg)

    n_subj = n_test_subjects + n_pool_subjects
    subject_class = np.arange(n_subj) % len(classes)  # C-NMC: a subject is a patient (all) or a normal donor (hem)
    offsets = rng.normal(0.0, 1.0, n_subj)
    subject = np.r_[np.arange(n_test) % n_test_subjects, n_test_subjects + np.arange(n_pool) % n_pool_subjects]
    y = subject_class[subject]
    n = n_test + n_pool
    paths = [f"/synthetic/{classes[y[i]]}/subject_{subject[i]:03d}/cell_{i:05d}.bmp" for i in range(n)]
    frame = pd.DataFrame({"path": paths, "label": [classes[k] for k in y], "subject": [f"S{s:03d}" for s in subject],
                          "sha256": [hashlib.sha256(p.encode()).hexdigest() for p in paths]})
    if not subjects:
        frame["subject"] = ""
    fold_of = np.r_[np.full(n_test, -1), rng.permutation(np.arange(n_pool) % folds)]
    for k in range(folds):
        frame[f"fold_{k}"] = np.where(fold_of == -1, "test", np.where(fold_of == k, "val", "train"))
    folder.write_split_files(frame.drop(columns=[] if subjects else ["subject"]), {
        "method": f"holdout+{folds}fold/{'subject' if subjects else 'image'}", "settings": {}, "n_test": n_test,
        "folds": [{"train": int(np.sum((fold_of >= 0) & (fold_of != k))), "val": int(np.sum(fold_of == k))}
                  for k in range(folds)], "notes": []}, [
        {"fold": k, "a": "train", "b": "val", "n_a": int(np.sum((fold_of >= 0) & (fold_of != k))),
         "n_b": int(np.sum(fold_of == k)), "shared_subjects": 0, "shared_duplicate_groups": 0, "examples": []}
        for k in range(folds)])
    folder.audit_path.parent.mkdir(parents=True, exist_ok=True)
    folder.write_audit({
        "source": "synthetic", "root": "/synthetic", "n_images": n, "classes": {c: int(np.sum(y == i)) for i, c in enumerate(classes)},
        "n_subjects": {c: int(np.sum(subject_class == i)) for i, c in enumerate(classes)}, "imbalance": 1.0,
        "unreadable": [], "duplicate_groups": []})

    template = folder.cache_dir / "synthetic_curves.png"
    _curves_png(template)
    onehot = np.eye(len(classes))[y]
    for s, (name, _) in enumerate(expand_scenarios(cfg)):
        for k in range(folds):
            unit = folder.unit(name, k)
            unit.path.mkdir(parents=True, exist_ok=True)
            # the true class's logit is raised by a subject offset: a subject's cells are easy or hard together
            logits = (onehot * 2.0 * (1.2 + offsets[subject] - 0.2 * s)[:, None]
                      + rng.normal(0.0, 1.0, (n, len(classes))))
            proba = np.exp(logits - logits.max(axis=1, keepdims=True))
            proba /= proba.sum(axis=1, keepdims=True)
            for rows, which in ((np.flatnonzero(fold_of == k), "val"), (np.arange(n_test), "test")):
                unit.write_predictions(which, [paths[i] for i in rows], y[rows], proba[rows], classes)
            shutil.copyfile(template, unit.curves)
            train_rows = np.flatnonzero((fold_of != k) & (fold_of >= 0))  # the pool outside fold k
            train_metrics = None if train_rows.size == 0 else {  # one fold: the whole pool is validation
                "stage": "stage2", "epoch": 0,
                "accuracy": float(np.mean(proba[train_rows].argmax(axis=1) == y[train_rows])),
                "loss": float(-np.mean(np.log(proba[train_rows, y[train_rows]])))}
            unit.write_info({"fold": k, "best_stage": "stage2", "synthetic": True, "train_metrics": train_metrics},
                            predictions_only=True)
    return cfg
