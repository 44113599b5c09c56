"""Experiment A's four questions in plain words, from the facts that evaluation computed.

Evaluation decides (tests, Holm, choices); this module only words the result, so every
sentence the report prints about a question lives here.
"""

from __future__ import annotations

from typing import Any

from allwen.evaluation.results import Question

QUESTIONS = {
    "lr_effect": "Does the learning rate change single-model performance significantly?",
    "lr_effect_grid": "Does the scenario ({factor}) change single-model performance significantly?",
    "wen_vs_single": "Does any WEN beat the best single model?",
    "intra_best": "Is the Intra-LR ensemble (of champions) the best ensemble?",
    "best_weighting": "Which weighting (accuracy, F1, kappa) is best?",
}


def fmt_p(p: float) -> str:
    return f"p={p:.3g}" if p >= 1e-4 else "p<1e-4"


def _test(f: dict[str, Any], adjusted: bool = True) -> str:
    """'Holm-adjusted subject permutation' / 'exact McNemar', naming the subjects when used."""
    name = f"{'Holm-adjusted ' if adjusted else ''}{f['test']}"
    return f"{name} over {f['n_subjects']} subjects" if f.get("n_subjects") else name


def _lr_effect(f: dict[str, Any]) -> tuple[str, str, list[str]]:
    question = QUESTIONS["lr_effect"] if f["only_lr"] else QUESTIONS["lr_effect_grid"].format(factor=f["factor"])
    evidence = ["; ".join(f"{s['scenario']}: mean test accuracy {s['mean']:.3f} (sd {s['sd']:.3f}, {s['n']} folds)"
                          for s in f["scenarios"])]
    if len(f["scenarios"]) < 2:
        return question, f"Only one scenario was run, so the effect of {f['factor']} cannot be tested.", evidence
    if f["significant"]:
        answer = "Yes: " + ", ".join(
            f"{r['a']} vs {r['b']} differ (accuracy difference {r['diff']:+.3f}, {_test(f)} {fmt_p(r['p_holm'])})"
            for r in f["significant"]) + "."
    else:
        answer = (f"No significant difference between the scenarios' champions at the {f['alpha']:.0%} level "
                  f"(smallest {_test(f)} {fmt_p(f['min_p_holm'])}).")
    return question, answer, evidence


def _wen_vs_single(f: dict[str, Any]) -> tuple[str, str, list[str]]:
    evidence = [f"best single model chosen by {f['chosen_by']} {f['metric']}: {f['best_single']}, "
                f"test accuracy {f['best_single_accuracy']:.3f}"]
    if not f["n_ensembles"]:
        answer = "No ensembles were built (a single scenario with a single fold)."
    elif f["better"]:
        top = max(f["better"], key=lambda r: (r["diff"], -r["p_holm"]))
        answer = (f"Yes: {len(f['better'])} of {f['n_ensembles']} ensembles are significantly more accurate than the "
                  f"best single model {f['best_single']} (largest gain: {top['a']}, {top['diff']:+.3f} accuracy, "
                  f"{_test(f)} {fmt_p(top['p_holm'])}).")
    else:
        answer = (f"No ensemble is significantly more accurate than the best single model {f['best_single']} "
                  f"(test accuracy {f['best_single_accuracy']:.3f}; {_test(f)}); "
                  f"{f['n_higher']} of {f['n_ensembles']} have a higher point estimate.")
    return QUESTIONS["wen_vs_single"], answer, evidence


def _intra_best(f: dict[str, Any]) -> tuple[str, str, list[str]]:
    evidence = [f"{e['name']}: accuracy {e['accuracy']:.3f}, kappa " + ("n/a" if e["kappa"] is None else f"{e['kappa']:.3f}")
                for e in f["top"]]
    if not f["available"]:
        return QUESTIONS["intra_best"], "Needs both intra-LR and inter-LR ensembles (at least 2 scenarios and 2 folds).", evidence
    gap = f["best_intra_accuracy"] - f["best_inter_accuracy"]
    verdict = "Yes" if gap > 0 else "No" if gap < 0 else "Tied"
    answer = (f"{verdict}: best intra-LR {f['best_intra']} {f['best_intra_accuracy']:.3f} vs best inter-LR "
              f"{f['best_inter']} {f['best_inter_accuracy']:.3f}: {_test(f, adjusted=False)} {fmt_p(f['p'])}"
              + (" (not a significant difference)." if f["p"] >= f["alpha"] else ".")
              + " Both were picked as the most accurate on the test set, so this p-value is descriptive, not confirmatory.")
    return QUESTIONS["intra_best"], answer, evidence


def _best_weighting(f: dict[str, Any]) -> tuple[str, str, list[str]]:
    if not f["means"]:
        return QUESTIONS["best_weighting"], "No ensembles were built.", []
    means = {w: m["mean"] for w, m in f["means"].items()}
    study, best = f["best_study"], f["best_overall"]
    answer = (f"Among the study's weightings, {study} has the highest mean ensemble accuracy ({means[study]:.3f}); "
              f"over all weightings incl. baselines, {best} ({means[best]:.3f}). "
              + ("Differences between weightings of the same members are not significant "
                 if f["min_p_holm"] >= f["alpha"] else "Some differences are significant ")
              + f"(smallest {_test(f)} {fmt_p(f['min_p_holm'])}).")
    if f["n_study"]:
        answer += (f" {len(f['uniform_like'])} of the {f['n_study']} accuracy/F1/kappa-weighted ensembles make exactly "
                   "the test decisions of the plain average: their weights are indistinguishable from uniform.")
    evidence = [f"{w}: mean accuracy {m:.3f} over {f['means'][w]['n']} ensembles"
                for w, m in sorted(means.items(), key=lambda kv: -kv[1])]
    return QUESTIONS["best_weighting"], answer, evidence


_WORDERS = {"lr_effect": _lr_effect, "wen_vs_single": _wen_vs_single, "intra_best": _intra_best,
            "best_weighting": _best_weighting}


def answer_questions(facts: dict[str, dict[str, Any]]) -> list[Question]:
    """One :class:`Question` per fact set, in the study's order."""
    out = []
    for qid, worder in _WORDERS.items():
        if qid in facts:
            question, answer, evidence = worder(facts[qid])
            out.append(Question(id=qid, question=question, answer=answer, evidence=evidence, facts=facts[qid]))
    return out
