"""The report's accuracy-coverage section: one curve per champion and best ensemble, numbers from summary.json."""

from __future__ import annotations

import numpy as np
import pytest

from allwen.evaluation.results import load_summary
from allwen.evaluation.synthetic import write_synthetic_run
from allwen.pipeline import rebuild_report
from allwen.runfolder import RunFolder

SMALL = dict(n_test=120, n_test_subjects=8, n_pool=240, n_pool_subjects=12, lrs=(1e-3, 1e-4), folds=3, bootstrap=200)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sel") / "run"
    write_synthetic_run(run_dir, **SMALL)
    rebuild_report(run_dir)
    return run_dir


def test_each_champion_and_best_ensemble_has_its_curve_and_threshold(run):
    from allwen.evaluation import selective
    from allwen.ensemble.combine import pooled_oof
    from allwen.runfolder import RunFolder

    summary = load_summary(run)
    names = [r.name for r in summary.selective]
    assert names == [c.name for c in summary.champions] + list(summary.best_ensembles.values())
    champion = summary.selective[0]
    scenario, fold = champion.name.split("/fold_")
    unit = RunFolder(run).unit_predictions(scenario, int(fold))
    # calibrated on its scenario's every fold (the recipe), not only on the fold it was chosen on
    folds = [RunFolder(run).unit_predictions(scenario, k) for k in range(SMALL["folds"])]
    _, val_y, val_p = pooled_oof([(list(u.val_paths), u.val_y, u.val_proba, 1.0) for u in folds])
    chosen = selective.choose_threshold(val_y, val_p, champion.target_accuracy)
    assert champion.threshold == chosen.threshold and champion.n_validation == SMALL["n_pool"] == len(val_y)
    accepted = ~selective.refer_mask(unit.test_proba, chosen.threshold)
    assert champion.n_accepted == int(accepted.sum())
    if champion.n_accepted:
        assert champion.accuracy == pytest.approx(float((unit.test_proba.argmax(1) == unit.test_y)[accepted].mean()))
    assert champion.unit == "subject" and champion.curve[-1].coverage == 1.0
    page = RunFolder(run).report_html.read_text(encoding="utf-8")
    assert '<details id="selective">' in page and (RunFolder(run).report_figures_dir / "coverage.svg").is_file()
    section = page[page.index('<details id="selective">'):]
    section = section[:section.index("</details>")]
    assert section.count("<polyline") == len(summary.selective)
    for r in summary.selective:
        assert r.name in section
    assert np.all(np.diff([p.coverage for p in champion.curve]) >= 0)
