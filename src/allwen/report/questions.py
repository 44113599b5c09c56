"""Experiment A's four questions in plain words, from the facts evaluation recorded.

Evaluation decides (tests, Holm, every choice) and records typed facts
(:class:`~allwen.evaluation.results.StudyFacts`); this module only words them. Every model an
answer names is one of the report's tables (the summary table, the grid or the ensemble
table), quoted with the number that table shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from allwen.evaluation.results import BestWeighting, IntraBest, LrEffect, Summary, WenVsSingle
from allwen.report.format import fmt_num, fmt_p

QUESTIONS = {
    "lr_effect": "Does the learning rate change single-model performance significantly?",
    "lr_effect_grid": "Does the scenario ({factor}) change single-model performance significantly?",
    "wen_vs_single": "Does any WEN beat the best single model?",
    "intra_best": "Is the Intra-LR ensemble (of champions) the best ensemble?",
    "best_weighting": "Which weighting (accuracy, F1, kappa) is best?",
}


@dataclass
class Answer:
    id: str
    question: str
    answer: str
    evidence: list[str] = field(default_factory=list)


def _p(p: float | None) -> str:
    """``p=0.031``, written as the report's tables write it."""
    return f"p={fmt_p(p)}"


def _test(s: Summary, adjusted: bool = True) -> str:
    """'Holm-adjusted subject permutation over 5 subjects' / 'Holm-adjusted McNemar'."""
    name = f"{'Holm-adjusted ' if adjusted else ''}{'subject permutation' if s.evaluation.unit == 'subject' else 'McNemar'}"
    return f"{name} over {s.evaluation.n_subjects} subjects" if s.evaluation.n_subjects else name


def _lr_effect(s: Summary, f: LrEffect, alpha: float) -> Answer:
    question = QUESTIONS["lr_effect"] if f.only_lr else QUESTIONS["lr_effect_grid"].format(factor=f.factor)
    evidence = ["; ".join(f"{m.scenario}: mean test accuracy {fmt_num(m.mean)} (sd {fmt_num(m.sd)}, {m.n} folds)"
                          for m in f.scenarios)]
    if len(f.scenarios) < 2:
        return Answer("lr_effect", question, f"Only one scenario was run, so the effect of {f.factor} cannot be tested.",
                      evidence)
    if f.over_folds:  # every fold model of each scenario, A's five metrics, Holm within each metric
        tested = f"all {f.scenarios[0].n if f.scenarios else ''} folds of each scenario ({', '.join(f.metrics)})"
        if f.significant:
            answer = "Yes: " + ", ".join(
                f"{r.a} vs {r.b} differ in {r.metric} (mean over folds {r.diff:+.3f}, Holm-adjusted cluster swap "
                f"test {_p(r.p_holm)})" for r in f.significant) + f"; tested over {tested}."
        else:
            answer = (f"No significant difference between the scenarios over {tested} at the {alpha:.0%} level "
                      f"(smallest Holm-adjusted cluster swap test {_p(f.min_p_holm)}).")
        return Answer("lr_effect", question, answer, evidence)
    if f.significant:
        answer = "Yes: " + ", ".join(
            f"{r.a} vs {r.b} differ (accuracy difference {r.diff:+.3f}, {_test(s)} {_p(r.p_holm)})"
            for r in f.significant) + "."
    else:
        answer = (f"No significant difference between the scenarios' champions at the {alpha:.0%} level "
                  f"(smallest {_test(s)} {_p(f.min_p_holm)}).")
    return Answer("lr_effect", question, answer, evidence)


def _wen_vs_single(s: Summary, f: WenVsSingle) -> Answer:
    sel = s.selection
    evidence = [f"best single model chosen by {sel.champion_by} {sel.champion_metric}: {f.best_single}, "
                f"test accuracy {fmt_num(f.best_single_accuracy)}"]
    if not f.n_ensembles:
        answer = "No ensembles were built (a single scenario with a single fold)."
    elif f.better:
        top = max(f.better, key=lambda r: (r.diff or 0.0, -(r.p_holm or 0.0)))
        answer = (f"Yes: {len(f.better)} of {f.n_ensembles} ensembles are significantly more accurate than the "
                  f"best single model {f.best_single} (largest gain: {top.a}, {top.diff:+.3f} accuracy, "
                  f"{_test(s)} {_p(top.p_holm)}).")
    else:
        answer = (f"No ensemble is significantly more accurate than the best single model {f.best_single} "
                  f"(test accuracy {fmt_num(f.best_single_accuracy)}; {_test(s)}); "
                  f"{f.n_higher} of {f.n_ensembles} have a higher point estimate.")
    if f.better_other:
        answer += (" Significantly higher in another of the study's metrics: " + ", ".join(
            f"{r.a} ({r.metric} {r.diff:+.3f}, Holm {_p(r.p_holm)})" for r in f.better_other) + ".")
    if f.n_baselines:
        answer += (f" The study's WENs (accuracy, F1, kappa weightings) form the tested family; the {f.n_baselines} "
                   "baseline ensembles are tested against the best single model in a family of their own "
                   "(Statistical tests).")
    return Answer("wen_vs_single", QUESTIONS["wen_vs_single"], answer, evidence)


def _intra_best(s: Summary, f: IntraBest | None, alpha: float) -> Answer:
    top = sorted(s.ensembles, key=lambda e: e.metrics.accuracy or 0.0, reverse=True)[:6]
    evidence = [f"{e.name}: accuracy {fmt_num(e.metrics.accuracy)}, kappa {fmt_num(e.metrics.kappa)}" for e in top]
    if f is None:
        return Answer("intra_best", QUESTIONS["intra_best"],
                      "Needs both intra-LR and inter-LR ensembles (at least 2 scenarios and 2 folds).", evidence)
    gap = (f.best_intra_accuracy or 0.0) - (f.best_inter_accuracy or 0.0)
    verdict = "Yes" if gap > 0 else "No" if gap < 0 else "Tied"
    sel = s.selection
    answer = (f"{verdict}: the best intra-LR ensemble {f.best_intra} (test accuracy {fmt_num(f.best_intra_accuracy)}) vs the "
              f"best inter-LR ensemble {f.best_inter} ({fmt_num(f.best_inter_accuracy)})")
    if f.comparison is not None:
        answer += (f": {_test(s, adjusted=False)} {_p(f.comparison.p)}"
                   + (" (not a significant difference)" if f.comparison.p >= alpha else ""))
    answer += (f". Both are the best of their kind by {sel.champion_by} {sel.champion_metric}"
               + (", chosen on the test set, so this p-value is descriptive, not confirmatory."
                  if sel.test_set_selection else ", chosen on validation data."))
    return Answer("intra_best", QUESTIONS["intra_best"], answer, evidence)


def _best_weighting(s: Summary, f: BestWeighting | None, alpha: float) -> Answer:
    if f is None:
        return Answer("best_weighting", QUESTIONS["best_weighting"], "No ensembles were built.")
    means = {m.weighting: m.mean for m in f.means}
    rule = "" if f.chosen_by == "test accuracy" else f" (picked by {f.chosen_by}, the champion rule)"
    answer = (f"Among the study's weightings, {f.best_study}{rule} is best; its ensembles' mean test accuracy "
              f"{fmt_num(means[f.best_study])}; over all weightings incl. baselines, {f.best_overall} "
              f"({fmt_num(means[f.best_overall])}). "
              + ("Differences between weightings of the same members are not significant "
                 if f.min_p_holm is None or f.min_p_holm >= alpha else "Some differences are significant ")
              + f"(smallest {_test(s)} {_p(f.min_p_holm)}).")
    if f.n_study:
        answer += (f" {len(f.uniform_like)} of the {f.n_study} accuracy/F1/kappa-weighted ensembles make exactly "
                   "the test decisions of the plain average: their weights are indistinguishable from uniform.")
    evidence = [f"{m.weighting}: mean test accuracy {fmt_num(m.mean)} over {m.n} ensembles"
                for m in sorted(f.means, key=lambda m: -m.mean)]
    return Answer("best_weighting", QUESTIONS["best_weighting"], answer, evidence)


def answer_questions(summary: Summary) -> list[Answer]:
    """Experiment A's answers in the study's order (none when the run is not shaped like A)."""
    f = summary.questions
    if f is None:
        return []
    out = []
    if f.lr_effect is not None:
        out.append(_lr_effect(summary, f.lr_effect, f.alpha))
    if f.wen_vs_single is not None:
        out.append(_wen_vs_single(summary, f.wen_vs_single))
    out.append(_intra_best(summary, f.intra_best, f.alpha))
    out.append(_best_weighting(summary, f.best_weighting, f.alpha))
    return out
