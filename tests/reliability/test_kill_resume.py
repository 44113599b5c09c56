"""kill -9 at every phase of a run, then the same command: the same results as an uninterrupted run.

The kills come from named failpoints (``ALLWEN_KILL_AT``, see ``allwen.failpoints``), so each
lands exactly in its phase instead of wherever a timer happens to fall.
"""

from __future__ import annotations

import signal

import pandas as pd

from allwen.failpoints import POINTS

from .conftest import allwen, comparable_summary, run_args
from allwen.runfolder import RunFolder

# point[:n] -> what must (not) exist right after the kill
KILLS = [
    ("audit_written", lambda out: RunFolder(out).audit_path.exists() and not (out / "splits").exists()),
    ("split_written", lambda out: RunFolder(out).split_csv.exists() and not RunFolder(out).units_dir.exists()),
    # the second unit's weights and predictions are written, its unit.json is not
    ("unit_files_written:2", lambda out: (out / "units/lr=0.01/fold_1/predictions_test.csv").exists()
     and not (out / "units/lr=0.01/fold_1/unit.json").exists()),
    ("ensemble_written:3", lambda out: len(list(out.glob("ensembles/*/ensemble.json"))) == 3
     and not RunFolder(out).summary_path.exists()),
    ("summary_written", lambda out: RunFolder(out).summary_path.exists()
     and not RunFolder(out).report_html.exists()),
]


def test_every_failpoint_is_exercised():
    # sweep_step_written: tests/test_sweep.py kills a sweep there
    assert sorted(p.split(":")[0] for p, _ in KILLS) == sorted(p for p in POINTS if p != "sweep_step_written")


def test_kill_at_every_phase_then_resume_gives_the_uninterrupted_result(synth_root, reference_run, tmp_path):
    out = tmp_path / "killed"
    args = run_args(synth_root / "training_data", out)
    for point, state_after_kill in KILLS:
        killed = allwen(*args, env={"ALLWEN_KILL_AT": point})
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
        assert state_after_kill(out), f"the kill at {point} did not land in its phase"
    resumed = allwen(*args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert comparable_summary(out) == comparable_summary(reference_run)
    for path in sorted(reference_run.glob("units/*/fold_*/predictions_*.csv")):
        rel = path.relative_to(reference_run)
        pd.testing.assert_frame_equal(pd.read_csv(path), pd.read_csv(out / rel), obj=str(rel))
    def report(run):  # report.md but the line that says when it was made
        return [line for line in RunFolder(run).report_md.read_text().splitlines() if "created " not in line]

    assert report(out) == report(reference_run)  # the resumed run's report is the uninterrupted one's
    assert RunFolder(out).report_html.read_text().count("<details") == (
        RunFolder(reference_run).report_html).read_text().count("<details")
