"""Compare two run folders' probabilities: every unit's validation, test (and TTA) rows.

Written for the ``train.frozen_runtime`` check: the same config run with ``torch`` and with
``auto`` must give every probability within 1e-4. Units are matched by their folder
(``units/<scenario>/fold_<k>``), rows by image path; a unit, a file or a row that only one run
has is an error, not a silent skip. Prints one line per unit and file (largest difference,
each run's chosen L2 when the head was solved by lbfgs, accuracies), then the overall largest
difference; with ``--json`` the last line is one JSON object. Exits 1 when ``--tol`` is given
and exceeded.

    python tools/compare_probabilities.py RUN_A RUN_B [--tol 1e-4] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from allwen.runfolder import RunFolder, UnitFolder

WHICH = ("val", "test", "tta")  # UnitFolder.predictions: validation, test, test-time-augmented test


def units(run: Path) -> dict[str, UnitFolder]:
    """The run's finished units by name (``<scenario>/fold_<k>``)."""
    folders = RunFolder(run).unit_folders()
    return {f"{scenario}/{d.name}": UnitFolder(d) for scenario, folds in folders.items() for _, d in folds
            if UnitFolder(d).done}


def _l2(unit: UnitFolder) -> str:
    """The L2 strength of the kept history row (lbfgs heads; '-' for other solvers)."""
    kept = json.loads(unit.info_path.read_text()).get("train_metrics") or {}
    history = pd.read_csv(unit.history) if unit.history.exists() else pd.DataFrame()
    if "l2" not in history or kept.get("epoch") is None:
        return "-"
    row = history[(history["stage"] == kept.get("stage")) & (history["epoch"] == kept["epoch"])]
    return f"{row['l2'].iloc[0]:g}" if len(row) else "-"


def compare_file(a: Path, b: Path) -> tuple[float, int, float, float]:
    """(largest difference, rows, accuracy of a, accuracy of b) of one predictions CSV."""
    fa, fb = pd.read_csv(a), pd.read_csv(b)
    keys = [c for c in ("path", "view") if c in fa.columns]
    if sorted(map(tuple, fa[keys].to_numpy())) != sorted(map(tuple, fb[keys].to_numpy())):
        raise SystemExit(f"{a} and {b} hold different images; compare runs of the same config and split")
    fa, fb = fa.sort_values(keys).reset_index(drop=True), fb.sort_values(keys).reset_index(drop=True)
    cols = [c for c in fa.columns if c.startswith("prob_")]
    pa, pb = fa[cols].to_numpy(np.float64), fb[cols].to_numpy(np.float64)
    accuracy = [float((p.argmax(1) == f["y_true"].to_numpy()).mean()) for p, f in ((pa, fa), (pb, fb))]
    return float(np.abs(pa - pb).max()) if len(pa) else 0.0, len(pa), *accuracy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--tol", type=float, default=None, help="exit 1 when any difference exceeds this")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    ua, ub = units(args.run_a), units(args.run_b)
    if not ua or ua.keys() != ub.keys():
        raise SystemExit(f"the runs' finished units differ: {sorted(ua)} vs {sorted(ub)}")
    worst, rows, per_unit = 0.0, 0, {}
    for name in ua:
        for which in WHICH:
            a, b = ua[name].predictions(which), ub[name].predictions(which)
            file = a.name
            if a.exists() != b.exists():
                raise SystemExit(f"{name}/{file} exists in only one of the runs")
            if not a.exists():
                continue
            diff, n, acc_a, acc_b = compare_file(a, b)
            worst, rows = max(worst, diff), rows + n
            per_unit[f"{name}/{file}"] = diff
            print(f"{name:40s} {file:26s} rows {n:5d}  max diff {diff:.2e}  L2 {_l2(ua[name])} / {_l2(ub[name])}"
                  f"  accuracy {acc_a:.4f} / {acc_b:.4f}")
    print(f"largest probability difference over {len(ua)} units, {rows} rows: {worst:.3g}")
    if args.json:
        print(json.dumps({"units": len(ua), "rows": rows, "max_diff": worst, "per_file": per_unit}))
    return 1 if args.tol is not None and worst > args.tol else 0


if __name__ == "__main__":
    sys.exit(main())
