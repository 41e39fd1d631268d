"""Metrics: hand-computed values, and scikit-learn / imbalanced-learn as references."""

import numpy as np
import pytest
from imblearn.metrics import specificity_score as imb_specificity
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

from featurepipe.metrics import (
    METRIC_NAMES,
    check_metric_names,
    compute_metrics,
    specificity_score,
)

# Binary case: TP=3, FN=1, TN=4, FP=2 (positive class "malignant").
B_TRUE = ["malignant"] * 4 + ["benign"] * 6
B_PRED = ["malignant", "malignant", "malignant", "benign", "benign", "benign", "benign", "benign",
          "malignant", "malignant"]
B_SCORE = [0.9, 0.8, 0.7, 0.3, 0.2, 0.1, 0.4, 0.35, 0.6, 0.65]  # score of "malignant"


def test_binary_metrics_match_hand_computation():
    m = compute_metrics(B_TRUE, B_PRED, B_SCORE)
    assert m["labels"] == ["benign", "malignant"]
    assert m["pos_label"] == "malignant" and m["average"] == "binary"
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    # MCC = (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (12 − 2) / sqrt(5·4·6·5)
    assert m["mcc"] == pytest.approx(10 / np.sqrt(600))
    # kappa: p_o = 0.7, p_e = 0.4·0.5 + 0.6·0.5 = 0.5
    assert m["kappa"] == pytest.approx((0.7 - 0.5) / (1 - 0.5))
    # ROC-AUC: 20 of the 24 (positive, negative) pairs are ordered correctly.
    assert m["roc_auc"] == pytest.approx(20 / 24)
    # Average precision: positives at ranks 1, 2, 3 and 8 -> (1 + 1 + 1 + 4/8) / 4.
    assert m["pr_auc"] == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    assert m["confusion_matrix"] == [[4, 2], [1, 3]]
    benign = m["per_class"]["benign"]
    assert benign["sensitivity"] == pytest.approx(4 / 6) and benign["specificity"] == pytest.approx(3 / 4)
    assert benign["precision"] == pytest.approx(4 / 5) and benign["support"] == 6
    # The negative class's AUC from the negated score is the same ranking seen from the other side.
    assert benign["roc_auc"] == pytest.approx(20 / 24)


def test_binary_two_column_scores_and_explicit_pos_label():
    scores = np.column_stack([1 - np.array(B_SCORE), B_SCORE])
    a = compute_metrics(B_TRUE, B_PRED, scores)
    b = compute_metrics(B_TRUE, B_PRED, B_SCORE)
    for name in METRIC_NAMES:
        assert a[name] == pytest.approx(b[name])
    flipped = compute_metrics(B_TRUE, B_PRED, scores, pos_label="benign")
    assert flipped["sensitivity"] == pytest.approx(4 / 6)
    assert flipped["specificity"] == pytest.approx(3 / 4)
    assert flipped["precision"] == pytest.approx(4 / 5)
    assert flipped["pr_auc"] == pytest.approx(
        average_precision_score(np.array(B_TRUE) == "benign", scores[:, 0]))
    # label-only metrics do not depend on which class is positive
    assert flipped["mcc"] == pytest.approx(a["mcc"]) and flipped["kappa"] == pytest.approx(a["kappa"])


def test_multiclass_hand_computation_and_sklearn_reference():
    y_true = list("aaabbbccc")
    y_pred = list("aabbbccca")
    # confusion: a->a 2, a->b 1; b->b 2, b->c 1; c->c 2, c->a 1
    m = compute_metrics(y_true, y_pred)
    assert m["average"] == "macro" and m["pos_label"] is None
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 1], [1, 0, 2]]
    assert m["accuracy"] == pytest.approx(6 / 9)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # each class: 6 negatives, one of them predicted as that class -> 5/6
    assert m["specificity"] == pytest.approx(5 / 6)
    for label in "abc":
        assert m["per_class"][label]["specificity"] == pytest.approx(5 / 6)
    # multi-class MCC: (c·s − Σ p_k t_k) / sqrt((s² − Σ p_k²)(s² − Σ t_k²)) = (54 − 27) / 54
    assert m["mcc"] == pytest.approx(0.5)
    # kappa: p_o = 2/3, p_e = 3 · (1/3 · 1/3) = 1/3
    assert m["kappa"] == pytest.approx(0.5)
    assert np.isnan(m["roc_auc"]) and np.isnan(m["pr_auc"])  # no scores given


def test_multiclass_scores_match_sklearn_ovr_macro(rng):
    labels = ["benign", "malignant", "normal"]
    y_true = rng.choice(labels, 60)
    proba = rng.dirichlet([1, 1, 1], 60)
    proba[np.arange(60), [labels.index(v) for v in y_true]] += 0.3  # informative scores
    proba /= proba.sum(axis=1, keepdims=True)
    y_pred = np.array(labels)[proba.argmax(axis=1)]
    m = compute_metrics(y_true, y_pred, proba, labels=labels)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y_true, proba, multi_class="ovr", average="macro",
                                                       labels=labels))
    onehot = np.array([[v == c for c in labels] for v in y_true])
    assert m["pr_auc"] == pytest.approx(average_precision_score(onehot, proba, average="macro"))
    for j, c in enumerate(labels):
        assert m["per_class"][c]["roc_auc"] == pytest.approx(roc_auc_score(y_true == c, proba[:, j]))
    # specificity agrees with imbalanced-learn's implementation
    assert m["specificity"] == pytest.approx(imb_specificity(y_true, y_pred, average="macro"))
    np.testing.assert_allclose([m["per_class"][c]["specificity"] for c in labels],
                               imb_specificity(y_true, y_pred, labels=labels, average=None))
    # decision values that do not sum to 1 work too (AUC depends on ranking only)
    m2 = compute_metrics(y_true, y_pred, 5.0 * np.log(proba) - 3.0, labels=labels)
    assert m2["roc_auc"] == pytest.approx(m["roc_auc"])


def test_class_absent_from_test_part_gives_nan_auc_not_a_shifted_average():
    labels = ["a", "b", "c"]
    y_true = ["a", "a", "b", "b"]
    y_pred = ["a", "b", "b", "b"]
    scores = np.array([[0.8, 0.1, 0.1], [0.4, 0.5, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    m = compute_metrics(y_true, y_pred, scores, labels=labels)
    # Issue 10 #3 changed the macro value: it averages the classes present in y_true ("a", "b"), so the
    # undefined AUC of the absent "c" is nan per class and the macro AUC is the mean of the other two.
    assert np.isnan(m["per_class"]["c"]["roc_auc"])
    assert m["roc_auc"] == pytest.approx(np.mean([m["per_class"]["a"]["roc_auc"], m["per_class"]["b"]["roc_auc"]]))
    assert m["per_class"]["a"]["roc_auc"] == pytest.approx(1.0)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)  # mean recall of the classes present
    assert m["per_class"]["c"]["support"] == 0


def test_specificity_score_function():
    assert specificity_score(B_TRUE, B_PRED, pos_label="malignant") == pytest.approx(4 / 6)
    assert specificity_score(B_TRUE, B_PRED, average="macro") == pytest.approx((4 / 6 + 3 / 4) / 2)
    with pytest.raises(ValueError, match="pos_label='x'"):
        specificity_score(B_TRUE, B_PRED, pos_label="x")
    with pytest.raises(ValueError, match="average"):
        specificity_score(B_TRUE, B_PRED, average="micro")


def test_bad_inputs_have_clear_errors():
    with pytest.raises(ValueError, match="y_true has 3 labels but y_pred has 2"):
        compute_metrics([0, 1, 0], [0, 1])
    with pytest.raises(ValueError, match="shape"):
        compute_metrics([0, 1, 0], [0, 1, 0], [[0.1, 0.9]])
    with pytest.raises(ValueError, match="1-D but there are 3 classes"):
        compute_metrics([0, 1, 2], [0, 1, 2], [0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match="pos_label=5"):
        compute_metrics([0, 1, 0], [0, 1, 0], pos_label=5)
    with pytest.raises(ValueError, match="only applies to binary"):
        compute_metrics([0, 1, 2], [0, 1, 2], pos_label=1)
    with pytest.raises(ValueError, match=r"not in labels \[0, 1\]"):
        compute_metrics([0, 1, 2], [0, 1, 0], labels=[0, 1])
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics([0, 1], [0, 1], [np.nan, 0.5])
    with pytest.raises(ValueError, match="unknown metric"):
        check_metric_names(["accuracy", "auc"])
    assert check_metric_names(["mcc", "roc_auc"]) == ("mcc", "roc_auc")
    m = compute_metrics([0, 1, 1], [0, 1, 0], metrics=["mcc"])
    assert "accuracy" not in m and m["mcc"] == pytest.approx(0.5)


def test_fold_without_a_class_macro_metrics_agree_with_accuracy():
    """A perfect fold that lacks "benign": every macro metric is 1 (classes present in y_true), like accuracy."""
    labels = ["benign", "malignant", "normal"]
    y_true = np.array(["malignant"] * 3 + ["normal"] * 4)
    scores = np.array([[0.1, 0.8, 0.1]] * 3 + [[0.2, 0.1, 0.7]] * 4)
    m = compute_metrics(y_true, y_true, scores, labels=labels)
    for name in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc",
                 "pr_auc", "mcc", "kappa"):
        assert m[name] == pytest.approx(1.0), name
    assert np.isnan(m["per_class"]["benign"]["sensitivity"]) and np.isnan(m["per_class"]["benign"]["f1"])
    assert m["per_class"]["benign"]["specificity"] == pytest.approx(1.0)  # no false "benign": defined, 1
    assert m["classes_in_macro"] == ["malignant", "normal"]
    # an imperfect fold: macro recall over the present classes equals balanced accuracy
    y_pred = np.array(["malignant", "benign", "malignant", "normal", "normal", "malignant", "normal"])
    m = compute_metrics(y_true, y_pred, scores, labels=labels)
    assert m["sensitivity"] == pytest.approx(m["balanced_accuracy"]) == pytest.approx((2 / 3 + 3 / 4) / 2)
    precision = precision_recall_fscore_support(y_true, y_pred, labels=["malignant", "normal"], zero_division=0)[0]
    assert m["precision"] == pytest.approx(precision.mean())
    # binary: a fold without the positive class has no defined sensitivity (not 0)
    b = compute_metrics(["benign"] * 4, ["benign", "benign", "malignant", "benign"], labels=["benign", "malignant"])
    assert np.isnan(b["sensitivity"]) and b["specificity"] == pytest.approx(0.75)
