"""compute_metrics and friends agree with scikit-learn and with hand-worked examples."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from allwen.evaluation import (
    ALL_METRIC_NAMES,
    METRIC_NAMES,
    compute_metrics,
    confusion,
    per_class_table,
    predict_labels,
    roc_curves,
)


def _random_case(seed: int, n_classes: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Labels with every class present and informative (not perfect) probabilities."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, n - n_classes)])
    proba = rng.dirichlet(np.ones(n_classes), size=n)
    proba[np.arange(n), y] += rng.uniform(0.0, 0.6, size=n)
    return y, proba / proba.sum(axis=1, keepdims=True)


def _from_confusion(cm: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose argmax reproduces the confusion matrix ``cm`` (rows true, cols predicted)."""
    n_classes = len(cm)
    y, proba = [], []
    for t in range(n_classes):
        for p in range(n_classes):
            row = np.full(n_classes, 0.2 / (n_classes - 1))
            row[p] = 0.8
            y += [t] * cm[t][p]
            proba += [row] * cm[t][p]
    return np.array(y), np.array(proba)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_classes", [2, 4])
def test_every_metric_agrees_with_sklearn(seed: int, n_classes: int) -> None:
    y, proba = _random_case(seed, n_classes)
    y_pred = proba.argmax(axis=1)
    got = compute_metrics(y, proba)
    assert set(got) == set(ALL_METRIC_NAMES)
    avg = "binary" if n_classes == 2 else "macro"
    if n_classes == 2:
        specificity = recall_score(y, y_pred, pos_label=0)
        auc = roc_auc_score(y, proba[:, 1])
    else:
        specificity = np.mean([recall_score(y != k, y_pred != k) for k in range(n_classes)])
        auc = roc_auc_score(y, proba, multi_class="ovr", average="macro")
    expected = {
        "accuracy": accuracy_score(y, y_pred),
        "balanced_accuracy": balanced_accuracy_score(y, y_pred),
        "precision": precision_score(y, y_pred, average=avg, zero_division=0),
        "recall": recall_score(y, y_pred, average=avg, zero_division=0),
        "specificity": specificity,
        "f1": f1_score(y, y_pred, average=avg, zero_division=0),
        "kappa": cohen_kappa_score(y, y_pred),
        "auc": auc,
    }
    for average in ("macro", "weighted"):
        expected[f"precision_{average}"] = precision_score(y, y_pred, average=average, zero_division=0)
        expected[f"recall_{average}"] = recall_score(y, y_pred, average=average, zero_division=0)
        expected[f"f1_{average}"] = f1_score(y, y_pred, average=average, zero_division=0)
    assert set(expected) == set(got)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize("n_classes", [2, 3, 4])
@pytest.mark.parametrize("average", ["binary", "macro", "weighted"])
def test_each_averaging_matches_sklearn_average(n_classes: int, average: str) -> None:
    """``averaged_name(metric, average)`` is scikit-learn's ``average=...`` for P/R/F1, also with a
    class never predicted (its precision 0, zero_division=0) and a predicted class absent from y."""
    from allwen.evaluation.metrics import averaged_name, resolve_average

    if average == "binary" and n_classes != 2:
        with pytest.raises(ValueError, match="needs 2 classes"):
            resolve_average(average, n_classes)
        return
    y, proba = _random_case(7, n_classes)
    proba[:, 0] *= 0.01  # class 0 (almost) never predicted
    y_pred = proba.argmax(axis=1)
    got = compute_metrics(y, proba)
    scorers = {"precision": precision_score, "recall": recall_score, "f1": f1_score}
    for metric, scorer in scorers.items():
        name = averaged_name(metric, resolve_average(average, n_classes))
        assert got[name] == pytest.approx(scorer(y, y_pred, average=average, zero_division=0), abs=1e-12), name
    assert resolve_average("auto", 2) == "binary" and resolve_average("auto", n_classes) in ("binary", "macro")


def test_weighted_recall_is_accuracy() -> None:
    """Experiment B's sign: support-weighted recall equals accuracy (98.48% both in its table)."""
    y, proba = _random_case(3, 4)
    got = compute_metrics(y, proba)
    assert got["recall_weighted"] == pytest.approx(got["accuracy"], abs=1e-12)


def test_macro_average_of_a_binary_hand_example() -> None:
    """Experiment C's averaging: precision (0.96 + 0.95) / 2 over the two classes, by hand."""
    # true\pred   0   1      class 1: precision 3/5, recall 3/4; class 0: precision 4/5, recall 4/6
    #   0         4   2
    #   1         1   3
    y, proba = _from_confusion([[4, 2], [1, 3]])
    got = compute_metrics(y, proba)
    assert got["precision_macro"] == pytest.approx((3 / 5 + 4 / 5) / 2)
    assert got["recall_macro"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert got["precision_weighted"] == pytest.approx((6 * 4 / 5 + 4 * 3 / 5) / 10)


def test_binary_hand_example() -> None:
    # 4 ALL (class 1) and 6 hem (class 0):   pred 0  pred 1
    #                              true 0      4       2      TN=4 FP=2
    #                              true 1      1       3      FN=1 TP=3
    # accuracy 7/10; recall 3/4; precision 3/5; specificity 4/6; f1 = 6/(6+2+1) = 2/3
    # balanced = (3/4 + 4/6)/2 = 17/24
    # kappa: p_o = 0.7; p_e = (6*5 + 4*5)/10^2 = 0.5  ->  (0.7-0.5)/(1-0.5) = 0.4
    y, proba = _from_confusion([[4, 2], [1, 3]])
    got = compute_metrics(y, proba)
    assert got["accuracy"] == pytest.approx(0.7)
    assert got["recall"] == pytest.approx(0.75)
    assert got["precision"] == pytest.approx(0.6)
    assert got["specificity"] == pytest.approx(4 / 6)
    assert got["f1"] == pytest.approx(2 / 3)
    assert got["balanced_accuracy"] == pytest.approx(17 / 24)
    assert got["kappa"] == pytest.approx(0.4)


def test_three_class_hand_example() -> None:
    # true\pred  0  1  2   row sums 6, 6, 8; column sums 7, 5, 8; N = 20
    #   0        5  1  0
    #   1        2  3  1
    #   2        0  1  7
    # accuracy 15/20 = 0.75; p_e = (6*7 + 6*5 + 8*8)/400 = 0.34
    # kappa = (0.75 - 0.34)/(1 - 0.34) = 0.41/0.66
    # specificity one-vs-rest: class 0 TN = 20-6-7+5 = 12, FP = 2 -> 12/14
    #                          class 1 TN = 20-6-5+3 = 12, FP = 2 -> 12/14
    #                          class 2 TN = 20-8-8+7 = 11, FP = 1 -> 11/12
    cm = [[5, 1, 0], [2, 3, 1], [0, 1, 7]]
    y, proba = _from_confusion(cm)
    got = compute_metrics(y, proba)
    assert got["accuracy"] == pytest.approx(0.75)
    assert got["kappa"] == pytest.approx(0.41 / 0.66)
    assert got["specificity"] == pytest.approx((12 / 14 + 12 / 14 + 11 / 12) / 3)
    np.testing.assert_array_equal(confusion(y, predict_labels(proba), 3), cm)
    table = per_class_table(y, proba, ["a", "b", "c"])
    assert [row["class"] for row in table] == ["a", "b", "c"]
    assert [row["support"] for row in table] == [6, 6, 8]
    assert [row["specificity"] for row in table] == pytest.approx([12 / 14, 12 / 14, 11 / 12])
    assert [row["recall"] for row in table] == pytest.approx([5 / 6, 3 / 6, 7 / 8])
    assert [row["precision"] for row in table] == pytest.approx([5 / 7, 3 / 5, 7 / 8])


def test_ties_go_to_the_higher_class_like_the_binary_threshold() -> None:
    rng = np.random.default_rng(0)
    p1 = np.r_[0.5, 0.5, np.round(rng.uniform(size=200), 1)]
    proba = np.c_[1 - p1, p1]
    np.testing.assert_array_equal(predict_labels(proba), (p1 >= 0.5).astype(int))
    np.testing.assert_array_equal(predict_labels([[0.4, 0.3, 0.3], [0.2, 0.4, 0.4]]), [0, 2])


def test_degenerate_inputs_give_documented_values_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one_class = compute_metrics([1, 1, 1], [[0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
        assert np.isnan(one_class["auc"])
        assert one_class["recall"] == pytest.approx(2 / 3)
        assert one_class["specificity"] == 0.0  # no negatives: zero_division -> 0
        never_positive = compute_metrics([0, 1, 0, 1], np.tile([0.9, 0.1], (4, 1)))
        assert never_positive["precision"] == 0.0 and never_positive["f1"] == 0.0
        assert never_positive["auc"] == 0.5
        all_same = compute_metrics([0, 0], [[0.9, 0.1], [0.8, 0.2]])
        assert np.isnan(all_same["kappa"]) and all_same["accuracy"] == 1.0
        missing_class = compute_metrics([0, 1, 1], np.full((3, 3), 1 / 3))
        assert np.isnan(missing_class["auc"])
        assert roc_curves([1, 1], [[0.2, 0.8], [0.6, 0.4]]) == {}


def test_multiclass_auc_accepts_unnormalised_scores() -> None:
    y, proba = _random_case(5, 4)
    scores = proba * np.linspace(1.0, 3.0, len(y))[:, None]  # rows no longer sum to 1
    expected = np.mean([roc_auc_score(y == k, scores[:, k]) for k in range(4)])
    assert compute_metrics(y, scores)["auc"] == pytest.approx(expected)


def test_roc_curves_are_json_ready() -> None:
    y, proba = _random_case(1, 2)
    curves = roc_curves(y, proba)
    assert list(curves) == ["positive"]
    assert curves["positive"]["auc"] == pytest.approx(roc_auc_score(y, proba[:, 1]))
    assert curves["positive"]["fpr"][0] == 0.0 and curves["positive"]["tpr"][-1] == 1.0
    json.dumps(curves, allow_nan=False)
    y4, proba4 = _random_case(1, 4)
    curves4 = roc_curves(y4, proba4)
    assert list(curves4) == ["0", "1", "2", "3"]
    assert curves4["2"]["auc"] == pytest.approx(roc_auc_score(y4 == 2, proba4[:, 2]))
    json.dumps(curves4, allow_nan=False)


@pytest.mark.parametrize("decimals", [None, 1])
def test_roc_points_equal_sklearn_roc_curve(decimals: int | None) -> None:
    from sklearn.metrics import roc_curve

    from allwen.evaluation.metrics import roc_points

    y, proba = _random_case(4, 2)
    score = proba[:, 1] if decimals is None else np.round(proba[:, 1], decimals)
    fpr, tpr = roc_points(y == 1, score)
    ref_fpr, ref_tpr, _ = roc_curve(y, score)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_metric_stack_of_candidates_equals_one_by_one(n_classes: int) -> None:
    from allwen.evaluation import metric_stack

    y, _ = _random_case(6, n_classes, n=80)
    stack = np.stack([_random_case(s, n_classes, n=80)[1] for s in range(5)])
    stack[2] = np.round(stack[2], 1)  # ties in the midrank path
    got = metric_stack(y, stack)
    for b in range(5):
        expected = compute_metrics(y, stack[b])
        for name in ALL_METRIC_NAMES:
            assert got[name][b] == pytest.approx(expected[name], abs=1e-12), name
        assert got["kappa"][b] == pytest.approx(cohen_kappa_score(y, predict_labels(stack[b])))


def test_metric_names_are_the_headline_set() -> None:
    assert METRIC_NAMES == (
        "accuracy", "balanced_accuracy", "precision", "recall",
        "specificity", "f1", "kappa", "auc",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("y", "proba", "message"),
    [
        ([0, 1, 1], [[0.5, 0.5], [0.1, 0.9]], "3 labels"),
        ([0, 1], [0.2, 0.8], "2-D"),
        ([0, 2], [[0.5, 0.5], [0.1, 0.9]], "outside 0..1"),
        ([0, -1], [[0.5, 0.5], [0.1, 0.9]], "unlabelled"),
        ([[0, 1]], [[0.5, 0.5], [0.1, 0.9]], "1-D"),
        ([], np.zeros((0, 2)), "empty"),
        ([0, 1], [[0.5], [0.1]], "at least 2"),
        ([0, 1], [[0.5, np.nan], [0.1, 0.9]], "NaN"),
        ([0.5, 1], [[0.5, 0.5], [0.1, 0.9]], "integer"),
    ],
)
def test_bad_input_raises_value_error(y, proba, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_metrics(y, proba)


def test_bad_input_in_helpers_raises_value_error() -> None:
    with pytest.raises(ValueError, match="2 class names for 3"):
        per_class_table([0, 1], np.full((2, 3), 1 / 3), ["a", "b"])
    with pytest.raises(ValueError, match="y_pred has 3"):
        confusion([0, 1], [0, 1, 1], 2)
    with pytest.raises(ValueError, match="outside"):
        confusion([0, 1], [0, 2], 2)
    with pytest.raises(ValueError, match="2-D"):
        predict_labels([0.1, 0.9])
