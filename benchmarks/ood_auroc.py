"""How well the bundle's OOD score tells foreign images from the model's own kind, on real images.

For one unit of a finished run (default: the first finished unit of the first scenario), exactly
as ``allwen export`` fits it (:func:`allwen.export.sections.member_features`): each detector
(Mahalanobis with Ledoit-Wolf covariance, kNN) is fitted on the pooled features of the unit's
training fold (up to ``--max-train`` images), its threshold is the ``--quantile`` of the unit's
validation images, and it scores the run's test side (in distribution) and each ``--ood`` set
(out of distribution). Each detector is measured on the features alone and, as export fits it,
with the input's colour statistics (``+input``: :class:`allwen.evaluation.ood.WithInputStatistics`).
Prints, per detector and OOD set, the AUROC (OOD = positive) with a 95% bootstrap interval
(images of both sides resampled), and the share flagged at the threshold; as the last line one
JSON object with everything.

    python benchmarks/ood_auroc.py RUN --ood taleqani=../shared/data/taleqani/Original \
        --ood cnmc=../shared/data/cnmc2019/samples --limit 400

With ``--bundle B`` it measures an exported bundle's own ``ood_score`` instead (what
``allwen predict B`` writes), on the test side of the run the bundle was exported from and on
each ``--ood`` set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from allwen.evaluation.ood import N_INPUT_STATS, OOD_METHODS, WithInputStatistics, auroc, make_detector, quantile_threshold
from allwen.export.sections import member_features
from allwen.serve.images import expand_inputs


def unit_member(run_dir: Path, unit: str):
    """A bundle member built straight from a run's unit folder (what export would copy)."""
    from allwen.export.members import member_spec
    from allwen.runfolder import RunFolder
    from allwen.serve.predict import Member

    folder = RunFolder(run_dir)
    classes = folder.unit_predictions_of(unit).classes
    spec, unit_folder = member_spec(folder, 0, unit, 1.0)
    return Member(unit, 1.0, unit_folder.path, spec, classes), classes


def fold_rows(run_dir: Path, unit: str) -> dict[str, tuple[list[str], list[str]]]:
    """(paths, labels) of the unit's training fold, validation fold and the test side, from split.csv."""
    from allwen.runfolder import RunFolder

    fold = int(unit.rsplit("fold_", 1)[1])
    split = RunFolder(run_dir).split_truth()
    return {side: ([str(split.paths[i]) for i in split.rows(fold, side)], [str(split.labels[i]) for i in split.rows(fold, side)])
            for side in ("train", "val", "test")}


def subsample(items: list[str], limit: int | None, seed: int) -> list[str]:
    if limit is None or len(items) <= limit:
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size=limit, replace=False))
    return [items[i] for i in keep]


def auroc_interval(in_scores: np.ndarray, out_scores: np.ndarray, seed: int, n_boot: int = 1000) -> tuple[float, float]:
    """95% percentile bootstrap interval of the AUROC, both sides' images resampled (8 OOD images: wide)."""
    rng = np.random.default_rng(seed)
    draws = [auroc(in_scores[rng.integers(0, len(in_scores), len(in_scores))],
                   out_scores[rng.integers(0, len(out_scores), len(out_scores))]) for _ in range(n_boot)]
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def bundle_main(args: argparse.Namespace) -> dict:
    """``--bundle``: the bundle's ood_score on the run's test side (in distribution) and each --ood set."""
    from allwen.serve.bundle import load_bundle
    from allwen.serve.predict import predict_table

    bundle = load_bundle(args.bundle)
    if not bundle.manifest.get("ood"):
        raise SystemExit(f"{args.bundle}: the bundle has no ood section")
    unit = bundle.manifest["ood"]["member"]
    test = subsample(fold_rows(args.run, unit)["test"][0], args.limit, args.seed)
    started = time.perf_counter()
    sets = {"test": test}
    for spec in args.ood:
        name, _, path = spec.partition("=")
        sets[name] = subsample(expand_inputs([path]), args.limit, args.seed)
        if not sets[name]:
            raise SystemExit(f"--ood {spec}: no images found")
    scored = {name: predict_table(bundle, files) for name, files in sets.items()}
    threshold = float(bundle.manifest["ood"]["threshold"])
    test_s = scored["test"]["ood_score"].to_numpy(dtype=float)
    result = {"run": str(args.run), "bundle": str(args.bundle), "member": unit,
              "method": bundle.manifest["ood"]["method"], "input_statistics": bool(bundle.manifest["ood"].get("input_statistics")),
              "threshold": threshold, "n": {k: len(v) for k, v in sets.items()},
              "test_flagged": float((test_s > threshold).mean()), "ood": {},
              "seconds": round(time.perf_counter() - started, 1)}
    for name in sets:
        if name == "test":
            continue
        ood_s = scored[name]["ood_score"].to_numpy(dtype=float)
        result["ood"][name] = {"auroc": round(auroc(test_s, ood_s), 4),
                               "auroc_ci": [round(v, 4) for v in auroc_interval(test_s, ood_s, args.seed)],
                               "flagged": round(float((ood_s > threshold).mean()), 4),
                               "scores": [round(float(v), 3) for v in ood_s[:20]]}
    if not args.json:
        print(f"bundle {args.bundle} (OOD member {unit}): threshold {threshold:.3f}, test flagged "
              f"{result['test_flagged']:.3f} of {len(test_s)}; "
              + "; ".join(f"{n}: AUROC {v['auroc']:.3f} [{v['auroc_ci'][0]:.3f}, {v['auroc_ci'][1]:.3f}], flagged "
                          f"{v['flagged']:.3f}" for n, v in result["ood"].items()))
    print(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--unit", default=None, help="<scenario>/fold_<k> (default: the first finished unit)")
    parser.add_argument("--ood", action="append", default=[], metavar="NAME=PATH",
                        help="an out-of-distribution image set (folder or glob); repeatable")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per set (seeded subset)")
    parser.add_argument("--max-train", type=int, default=2000, help="training images that fit the detector")
    parser.add_argument("--quantile", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="only the JSON line")
    parser.add_argument("--bundle", type=Path, default=None, help="score with this exported bundle's ood_score")
    args = parser.parse_args(argv)
    if args.bundle is not None:
        return bundle_main(args)

    from allwen.runfolder import RunFolder

    unit = args.unit or RunFolder(args.run).finished_units()[0]
    member, classes = unit_member(args.run, unit)
    rows = fold_rows(args.run, unit)
    started = time.perf_counter()
    train_paths = subsample(rows["train"][0], args.max_train, args.seed)
    label_of = dict(zip(*rows["train"]))
    train_y = np.array([classes.index(label_of[p]) for p in train_paths])
    feats = {"train": member_features(member, train_paths),
             "val": member_features(member, subsample(rows["val"][0], args.limit, args.seed)),
             "test": member_features(member, subsample(rows["test"][0], args.limit, args.seed))}
    sets = {}
    for spec in args.ood:
        name, _, path = spec.partition("=")
        files = subsample(expand_inputs([path]), args.limit, args.seed)
        if not files:
            raise SystemExit(f"--ood {spec}: no images found")
        sets[name] = len(files)
        feats[f"ood:{name}"] = member_features(member, files)
    seconds_features = time.perf_counter() - started
    result = {"run": str(args.run), "unit": unit, "backbone": member.spec.backbone,
              "image_size": member.image_size, "quantile": args.quantile,
              "n": {"train": len(train_paths), "val": len(feats["val"]), "test": len(feats["test"]), **sets},
              "seconds_features": round(seconds_features, 1), "detectors": {}}
    plain = {k: v[:, :-N_INPUT_STATS] for k, v in feats.items()}
    for method in [m for base in OOD_METHODS for m in (base, f"{base}+input")]:
        base = method.split("+")[0]
        if method.endswith("+input"):
            det, rows = WithInputStatistics(make_detector(base)).fit(feats["train"], train_y, feats["val"],
                                                                     args.quantile), feats
        else:
            det, rows = make_detector(base).fit(plain["train"], train_y), plain
        val_s, test_s = det.score(rows["val"]), det.score(rows["test"])
        threshold = quantile_threshold(val_s, args.quantile)
        entry = {"threshold": threshold, "test_flagged": float((test_s > threshold).mean()), "ood": {}}
        for name in sets:
            ood_s = det.score(rows[f"ood:{name}"])
            entry["ood"][name] = {"auroc": round(auroc(test_s, ood_s), 4),
                                  "auroc_ci": [round(v, 4) for v in auroc_interval(test_s, ood_s, args.seed)],
                                  "flagged": round(float((ood_s > threshold).mean()), 4)}
        result["detectors"][method] = entry
        if not args.json:
            print(f"{method}: threshold {threshold:.3f}, in-distribution test flagged {entry['test_flagged']:.3f}; "
                  + "; ".join(f"{n}: AUROC {v['auroc']:.3f} [{v['auroc_ci'][0]:.3f}, {v['auroc_ci'][1]:.3f}], "
                              f"flagged {v['flagged']:.3f}" for n, v in entry["ood"].items()))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
