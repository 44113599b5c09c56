"""Protocols side by side: the same data evaluated under different splits, and the gap between them.

``allwen compare RUN_A RUN_B ...`` matches the models of finished runs by name (every
scenario/fold, each scenario's champion, every ensemble, the best single model) and puts
their test metrics side by side with intervals. The first run is the reference: each other
run's *gap* is its metric minus the reference's. Comparing an image-level split (second)
with a subject-level one (first) gives the leakage gap: how much the image-level protocol
flatters the models because cells of one person sit on both sides.

The runs' test sets are different samples (different splits), so the interval of a gap
combines the two runs' intervals as independent: half-widths added in quadrature (a normal
approximation of each percentile interval).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict

from allwen.evaluation.results import Interval, ModelResult, Summary, load_summary
from allwen.runfolder import RunFolder

GAP_METRICS = ("accuracy", "kappa", "auc", "balanced_accuracy", "f1")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunInfo(_Record):
    path: str
    report: str  # the run's report/index.html
    label: str  # the split method, e.g. holdout+5fold/subject/dedup
    protocol: str = ""  # what the split grouped by (split.group_by): subject, image, sequence, cluster
    n_test: int
    statistics: str  # how its intervals were computed (subjects or images)
    data_fingerprint: Optional[str] = None


class Side(_Record):
    value: Optional[float]
    ci: Interval = None


class Gap(_Record):
    value: Optional[float]
    ci: Interval = None


class Row(_Record):
    """One matched model: per metric, each run's value and every other run's gap to the first."""

    key: str  # what matched it: the model name, "champion of <scenario>" or "best single model"
    group: str  # headline | single | champion | ensemble
    names: list[str]  # the model's own name in each run (a headline row's model differs between runs)
    metrics: dict[str, list[Side]]
    gaps: dict[str, list[Gap]]  # one per run after the first


class Comparison(_Record):
    runs: list[RunInfo]
    data: str  # what makes the runs comparable: the dataset fingerprint or root
    rows: list[Row]
    unmatched: list[str] = []


def data_fingerprint(run_dir: Path) -> str | None:
    """sha256 over the sorted image hashes of ``splits/split.csv``: same images, same fingerprint."""
    folder = RunFolder(run_dir)
    if not folder.has_split():
        return None
    return hashlib.sha256("\n".join(sorted(folder.split_truth().image_keys().tolist())).encode()).hexdigest()


def _half_width(ci: Interval, value: float | None) -> float | None:
    if ci is None or None in ci or value is None:
        return None
    return (ci[1] - ci[0]) / 2.0


def _gap(ref: Side, other: Side) -> Gap:
    if ref.value is None or other.value is None:
        return Gap(value=None)
    diff = other.value - ref.value
    ha, hb = _half_width(ref.ci, ref.value), _half_width(other.ci, other.value)
    if ha is None or hb is None:
        return Gap(value=diff)
    half = math.hypot(ha, hb)
    return Gap(value=diff, ci=(diff - half, diff + half))


def _matched(summary: Summary) -> dict[str, tuple[str, ModelResult]]:
    """Key -> (group, model) for everything that can be matched across runs."""
    out: dict[str, tuple[str, ModelResult]] = {"best single model": ("headline", summary.model(summary.best_single))}
    for kind, name in summary.best_ensembles.items():
        out[f"best {kind} ensemble"] = ("headline", summary.model(name))
    out["default export"] = ("headline", summary.model(summary.default_export))
    out |= {f"champion of {c.scenario}": ("champion", c) for c in summary.champions}
    out |= {m.name: ("single", m) for m in summary.single_models}
    out |= {e.name: ("ensemble", e) for e in summary.ensembles}
    return out


def compare_runs(run_dirs: list[Path]) -> Comparison:
    """Match the runs' models and compute side-by-side metrics and gaps (first run = reference)."""
    if len(run_dirs) < 2:
        raise ValueError("allwen compare needs at least two run folders")
    summaries = [load_summary(Path(r)) for r in run_dirs]
    prints = [data_fingerprint(Path(r)) for r in run_dirs]
    ref = summaries[0]
    for path, s, fp in zip(run_dirs[1:], summaries[1:], prints[1:]):
        if s.classes != ref.classes:
            raise ValueError(f"{path} has classes {s.classes} but {run_dirs[0]} has {ref.classes}: "
                             "compare runs of the same dataset")
        same = fp == prints[0] if fp and prints[0] else (s.data.root, s.data.n_images) == (ref.data.root, ref.data.n_images)
        if not same:
            raise ValueError(f"{path} was made on other data than {run_dirs[0]} (image hashes of splits/split.csv or "
                             f"data root and count differ); compare runs of the same dataset with different splits")
    runs = [RunInfo(path=str(p), report=str(RunFolder(p).report_html), label=s.split.method,
                    protocol=s.config.split.group_by, n_test=s.evaluation.n_test,
                    statistics=s.evaluation.interval_method, data_fingerprint=fp)
            for p, s, fp in zip(run_dirs, summaries, prints)]
    matched = [_matched(s) for s in summaries]
    rows, unmatched = [], []
    for key, (group, _) in matched[0].items():
        if not all(key in m for m in matched[1:]):
            unmatched.append(key)
            continue
        models = [m[key][1] for m in matched]
        metrics = {k: [Side(value=m.metrics.value(k), ci=m.metrics.interval(k)) for m in models] for k in GAP_METRICS}
        gaps = {k: [_gap(sides[0], other) for other in sides[1:]] for k, sides in metrics.items()}
        rows.append(Row(key=key, group=group, names=[m.name for m in models], metrics=metrics, gaps=gaps))
    unmatched += sorted({k for m in matched[1:] for k in m} - set(matched[0]))
    data = f"same images (fingerprint {prints[0][:12]})" if prints[0] else f"{ref.data.root} ({ref.data.n_images} images)"
    return Comparison(runs=runs, data=data, rows=rows, unmatched=unmatched)
