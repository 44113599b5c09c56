"""Compare two bundles exported from one run: member predictions on images, and the card's numbers.

Written to check a faster ``allwen export`` against the one before it: every member's
probabilities on the given images (the run's test images) within ``--tol``, the members'
weights files identical, and the manifest's sections (calibration, referral, prediction sets,
patient call, the card's test metrics, the OOD detector) equal, numbers within ``--rel`` (the
OOD detector may read its rows from another runtime's cache). Prints one JSON object; exits 1 on
a difference.

    python tools/compare_bundles.py BUNDLE_A BUNDLE_B --run RUN [--tol 1e-6] [--rel 1e-4]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

SECTIONS = ("calibration", "selective", "conformal", "patient", "ood")
IGNORED = {"created", "run", "features_onnx", "max_abs_diff_vs_torch", "max_rel_diff_vs_torch", "files"}


def differences(a, b, rel: float, at: str = "") -> list[str]:
    """Paths where two JSON values differ (numbers beyond ``rel``, relative)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key in IGNORED:
                continue
            if key not in a or key not in b:
                out.append(f"{at}.{key}: only in one")
            else:
                out += differences(a[key], b[key], rel, f"{at}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{at}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, rel, f"{at}[{i}]")]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        same = math.isclose(a, b, rel_tol=rel, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))
        return [] if same else [f"{at}: {a} vs {b}"]
    return [] if a == b else [f"{at}: {a!r} vs {b!r}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--run", required=True, help="the run both were exported from (its test images are predicted)")
    parser.add_argument("--tol", type=float, default=1e-6, help="largest difference of a member's probability")
    parser.add_argument("--rel", type=float, default=1e-4, help="relative tolerance of the manifests' numbers")
    args = parser.parse_args(argv)

    from allwen.api import load_bundle
    from allwen.bundle import BundleFolder
    from allwen.io import file_sha256
    from allwen.runfolder import RunFolder

    a, b = load_bundle(args.a), load_bundle(args.b)
    manifests = [json.loads(BundleFolder(p).manifest_path.read_text()) for p in (args.a, args.b)]
    found = []
    for x, y in zip(a.members, b.members):
        if x.name != y.name or file_sha256(BundleFolder(args.a).weights(x.spec.folder)) != file_sha256(
                BundleFolder(args.b).weights(y.spec.folder)):
            found.append(f"member {x.name} vs {y.name}: different weights")
    paths = list(RunFolder(args.run).unit_predictions_of(a.members[0].name).test_paths)
    ta, tb = a.predict(paths), b.predict(paths)
    columns = [c for c in ta.columns if "prob_" in c]
    worst = max(float(np.abs(ta[c].to_numpy(float) - tb[c].to_numpy(float)).max()) for c in columns)
    if worst > args.tol:
        found.append(f"probabilities differ by {worst:.3g} (> {args.tol:g})")
    ood = None
    if "ood_score" in ta.columns and "ood_score" in tb.columns:
        sa, sb = ta["ood_score"].to_numpy(float), tb["ood_score"].to_numpy(float)
        ood = float(np.abs(sa - sb).max() / max(1e-12, float(np.abs(sb).max())))
        if ood > args.rel or (ta["status"] != tb["status"]).any():
            found.append(f"OOD scores differ by {ood:.3g} (relative) or a status differs")
    for section in SECTIONS:
        found += differences(manifests[0].get(section), manifests[1].get(section), args.rel, section)
    found += differences(manifests[0]["card"], manifests[1]["card"], args.rel, "card")
    print(json.dumps({"images": len(paths), "columns": columns, "max_probability_difference": worst,
                      "max_ood_score_difference_relative": ood,
                      "differences": found}, indent=1))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
