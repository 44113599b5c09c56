"""Prediction sets at export: calibrated on untouched test predictions, withheld where the patients are too few."""

from __future__ import annotations

import numpy as np
import pytest

from allwen.bundle.manifest import Conformal
from allwen.evaluation import conformal
from allwen.export.card import card_markdown
from allwen.export.sections import AbstainSettings, _cross_fit_folds, fit_conformal, choices_on_test
from allwen.serve.abstain import Abstainer

CLASSES = ["hem", "all"]


def _clustered(seed: int, clusters_per_class: tuple[int, int], cells: int = 8):
    """Class-pure subjects of ``cells`` correlated cells (a subject effect on the logits)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.r_[np.zeros(clusters_per_class[0], int), np.ones(clusters_per_class[1], int)], cells)
    subject = np.repeat(np.arange(sum(clusters_per_class)), cells)
    logits = rng.normal(size=(len(y), 2)) + rng.normal(scale=0.8, size=(subject.max() + 1, 2))[subject]
    logits[np.arange(len(y)), y] += 1.5
    return y, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), subject


def _settings():
    return AbstainSettings(n_boot=100)


def test_sets_are_calibrated_on_the_given_predictions_and_the_card_cross_fits_them(tmp_path):
    y, p, subject = _clustered(0, (30, 25))
    section, card = fit_conformal(y, p, CLASSES, _settings(), subject)
    Conformal.model_validate(section)
    assert [lv["level"] for lv in section["levels"]] == [0.9, 0.95] and section["withheld"] == []
    for lv, cal in zip(section["levels"], conformal.calibrate(y, p, (0.9, 0.95), mondrian=True, nonempty=True)):
        assert lv["mondrian"] and list(lv["threshold"].values()) == cal.threshold and lv["n_clusters"] == [30, 25]
    folds = _cross_fit_folds(len(y), subject, 0)
    assert len(np.unique(folds)) == 10 and all(len(np.unique(folds[subject == s])) == 1 for s in range(55))
    for entry, fit in zip(card, conformal.cross_fit(y, p, folds, (0.9, 0.95), clusters=subject, nonempty=True)):
        assert entry["coverage"] == pytest.approx(fit.sets[np.arange(len(y)), y].mean())
        assert entry["raw_empty"] == pytest.approx((fit.raw.sum(1) == 0).mean())
        assert entry["cross_fit_groups"] == 10 and entry["unit"] == "subject"
    out = Abstainer(CLASSES, tmp_path, conformal=Conformal.model_validate(section)).apply(p, None)
    assert set(out) == {"set_90", "set_95"} and all(out["set_90"])
    text = card_markdown({"conformal": section, "card": {"conformal": card}})
    assert "Columns `set_90`, `set_95`" in text and "groups of test subjects calibrated on the others" in text


def test_too_few_calibration_subjects_withhold_the_sets_and_say_so():
    y, p, subject = _clustered(1, (30, 5))  # 5 "all" subjects, fewer than evaluation.min_clusters (6)
    section, card = fit_conformal(y, p, CLASSES, _settings(), subject)
    assert section["levels"] == [] and [w["level"] for w in section["withheld"]] == [0.9, 0.95]
    reason = "sets need at least 6 calibration subjects per class (evaluation.min_clusters); all has 5"
    assert all(w["reason"] == reason and w["clusters"] == {"hem": 30, "all": 5} for w in section["withheld"])
    assert card == [{"level": 0.9, "withheld": reason}, {"level": 0.95, "withheld": reason}]
    text = card_markdown({"conformal": section, "card": {"conformal": card}})
    assert "**Prediction sets: none.**" in text and reason in text and "Level 90%" not in text
    # the run's own minimum: 12 subjects pass the default and fail a stricter evaluation.min_clusters
    y, p, subject = _clustered(1, (30, 12))
    assert len(fit_conformal(y, p, CLASSES, _settings(), subject)[0]["levels"]) == 2
    strict = AbstainSettings(n_boot=100, min_clusters=20)
    assert fit_conformal(y, p, CLASSES, strict, subject)[0]["withheld"][0]["clusters"] == {"hem": 30, "all": 12}


@pytest.mark.parametrize("y_given,refused,needle", [
    (True, "the run chose on its test side (ensemble.weights_from=test), so no prediction it holds is untouched by "
           "a choice", "chose on its test side"),
    (False, None, "no labelled images"),
])
def test_no_untouched_predictions_means_no_sets(tmp_path, y_given, refused, needle):
    y, p, subject = _clustered(2, (30, 30))
    section, card = fit_conformal(y if y_given else None, p if y_given else None, CLASSES, _settings(), subject,
                                  refused=refused)
    assert section["levels"] == [] and all(needle in w["reason"] for w in section["withheld"])
    ab = Abstainer(CLASSES, tmp_path, conformal=Conformal.model_validate(section))
    assert ab.set_columns == [] and ab.apply(p, None) == {}
    text = card_markdown({"conformal": section, "card": {"conformal": card}})
    assert "**Prediction sets: none.**" in text and needle in text and "Columns" not in text


def test_what_chooses_on_the_test_side():
    from allwen.config import load_config

    cfg = load_config("demo")
    assert choices_on_test(cfg) == []
    touched = cfg.model_copy(update={"ensemble": cfg.ensemble.model_copy(update={"champion_by": "test",
                                                                                   "weights_from": "test"})})
    assert choices_on_test(touched) == ["ensemble.champion_by=test", "ensemble.weights_from=test"]


def test_the_card_says_when_a_set_is_only_the_label():
    """A very accurate model's 90% sets hold the suggested class alone: the card says so instead of selling a set."""
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(2), 400)
    p = np.where(np.eye(2)[y] == 1, 0.999, 0.001) + rng.uniform(0, 0.0005, (800, 2))
    p /= p.sum(1, keepdims=True)
    subject = np.repeat(np.arange(80), 10)
    section, card = fit_conformal(y, p, CLASSES, _settings(), subject)
    assert card[0]["mean_size"] < 1.01
    text = card_markdown({"conformal": section, "card": {"conformal": card}})
    assert "At 90% the set is the suggested class alone for nearly every cell" in text
    y, p, subject = _clustered(0, (30, 25))  # a weak model: its sets hold two classes often
    section, card = fit_conformal(y, p, CLASSES, _settings(), subject)
    assert card[0]["mean_size"] > 1.01 and "alone for nearly every cell" not in card_markdown(
        {"conformal": section, "card": {"conformal": card}})
