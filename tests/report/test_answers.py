"""Every model an answer names, and every number it quotes, is in the report's tables with the same value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from allwen.evaluation.results import load_summary
from allwen.evaluation.synthetic import write_synthetic_run
from allwen.pipeline import rebuild_report
from allwen.report.build import report_document
from allwen.report.view import Table
from allwen.report.questions import answer_questions

NUMBER = re.compile(r"(?<![\w=.])[+-]?\d+\.\d+(?:e-?\d+)?")


def _tables(doc) -> list[Table]:
    blocks = list(doc.headline) + [b for s in doc.sections for b in s.blocks]
    return [b for b in blocks if isinstance(b, Table)]


def _row_texts(table: Table) -> list[list[str]]:
    return [[t for c in row.cells for t in (c.text, c.sub or "", *c.lines)] for row in table.rows]


def check_answers(run_dir: Path) -> int:
    """Assert the answers of ``run_dir``'s report quote its tables; return how many (name, number) pairs."""
    summary = load_summary(run_dir)
    doc = report_document(run_dir, summary)
    answers = [b.text for b in doc.answers.blocks if b.kind == "para"]
    assert answers, "the report answers nothing"
    rows = [texts for t in _tables(doc) for texts in _row_texts(t)]
    in_tables = {n for texts in rows for text in texts for n in NUMBER.findall(text)}
    names = sorted({m.name for m in (*summary.single_models, *summary.champions, *summary.ensembles)}
                   | {s.name for s in summary.scenarios}, key=len, reverse=True)
    pairs = 0
    for text in answers:
        found = []  # (start, end, name), longest names first, no overlaps
        for name in names:
            for m in re.finditer(re.escape(name), text):
                if not any(s < m.end() and m.start() < e for s, e, _ in found):
                    found.append((m.start(), m.end(), name))
        found.sort()
        for i, (start, end, name) in enumerate(found):
            assert any(name in texts for texts in rows), f"{name!r} is named in an answer but in no table: {text}"
            stop = found[i + 1][0] if i + 1 < len(found) else len(text)
            after = re.split(r"[;:]|\. ", text[end:stop], maxsplit=1)[0]
            quoted = NUMBER.findall(after)
            if quoted:
                pairs += 1
                assert any(name in texts and quoted[0] in texts for texts in rows), (
                    f"{name} {quoted[0]} (in {text!r}) is in no table row with that name and value")
        bare = text
        for _, _, name in found:
            bare = bare.replace(name, " ")
        for number in NUMBER.findall(bare):
            assert number in in_tables, f"{number} (in {text!r}) is in no table of the report"
    return pairs


SMALL = {"n_test": 120, "n_test_subjects": 6, "n_pool": 240, "n_pool_subjects": 12, "bootstrap": 50}


def test_the_demos_answers_quote_its_tables(tmp_path):
    run = tmp_path / "demo"
    write_synthetic_run(run, **SMALL, lrs=(1e-2, 1e-3, 3e-3), folds=3,
                        overrides=["ensemble.weightings=[accuracy, f1, kappa, auc, uniform, vote, greedy]"])
    rebuild_report(run)
    summary = load_summary(run)
    assert check_answers(run) >= 3  # best single, best intra and best inter, each with its accuracy
    # the intra question is about the very ensembles the summary table shows as best of their kind
    headline = {role: m.name for role, m in summary.headline_models()}
    intra = next(a for a in answer_questions(summary) if a.id == "intra_best").answer
    assert f"intra-LR ensemble {headline['best intra ensemble (by validation accuracy)']} " in intra
    assert f"inter-LR ensemble {headline['best inter ensemble (by validation accuracy)']} " in intra


def test_a_grid_runs_answers_quote_its_tables(tmp_path):
    run = tmp_path / "grid"
    write_synthetic_run(run, **SMALL, lrs=(1e-2, 1e-3), folds=1)
    rebuild_report(run)
    assert load_summary(run).grid_winner
    assert check_answers(run) >= 1


def test_a_sweeps_answers_quote_its_tables(synth_root, tmp_path):
    from allwen.config import load_config
    from allwen.pipeline import run_pipeline

    cfg = load_config("demo", [
        f"data.path={synth_root / 'training_data'}", "data.image_size=32", "data.augment=none", "split.folds=1",
        "split.val_fraction=0.3", "split.test=0.3", "split.group_by=image", "train.stage1.epochs=1", "train.stage2=null",
        "evaluation.bootstrap=20", "scenarios={}", "sweep=[{train.lr: [0.01, 0.001]}, {train.batch_size: [8, 16]}]"])
    run_pipeline(cfg, tmp_path / "sweep", quiet=True)
    assert load_summary(tmp_path / "sweep").sweep.steps
    assert check_answers(tmp_path / "sweep") >= 1
