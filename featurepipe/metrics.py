"""Classification metrics for binary and multi-class problems, from scikit-learn.

One call, :func:`compute_metrics`, returns every metric the benchmark
reports for one set of predictions:

* from the predicted labels: accuracy, balanced accuracy, sensitivity
  (recall), specificity, precision, F1, Matthews correlation coefficient
  (MCC), Cohen's kappa and the confusion matrix;
* from scores (probabilities or decision values): ROC-AUC and PR-AUC
  (average precision).

Averaging
---------
*Binary* problems (two labels) report sensitivity, precision, F1, ROC-AUC and
PR-AUC for the positive class ``pos_label`` (by default the second label in
sorted order, scikit-learn's convention: ``"malignant"`` of
``("benign", "malignant")``, ``1`` of ``(0, 1)``) and specificity as the
recall of the negative class.

*Multi-class* problems report the unweighted mean over classes ("macro") of
the per-class one-vs-rest values: the specificity of class ``c`` is
``TN / (TN + FP)`` with ``c`` as the positive class, ROC-AUC is the
one-vs-rest macro AUC of :func:`sklearn.metrics.roc_auc_score`
(``multi_class="ovr"``) and PR-AUC the macro average precision. Accuracy,
balanced accuracy, MCC and kappa are defined for any number of classes and
need no averaging.

Per-class values are always returned as well (``result["per_class"]``).

Classes missing from a test fold
--------------------------------
A fold of a grouped split can lack a class. Its per-class sensitivity
(recall), F1, ROC-AUC and PR-AUC are then undefined: those per-class values
are ``nan`` (not 0), and so is its specificity when ``y_true`` has no other
class. The multi-class macro averages are taken over **the classes present
in that fold's** ``y_true`` (listed in ``result["classes_in_macro"]``), so a
perfect fold without "benign" scores 1 on every metric, as its accuracy
does (counting the absent class as recall 0 would report 0.667 beside an
accuracy of 1). Macro sensitivity then equals balanced accuracy, which
scikit-learn also computes over the classes present. For a binary problem
a fold without the positive class has ``nan`` sensitivity, F1, ROC-AUC
and PR-AUC (and without the negative class, ``nan`` specificity).
The benchmark reports how many folds lie behind every mean, and pooled
out-of-fold metrics beside the fold means.

Precision of a class present in ``y_true`` but never predicted is 0
(``zero_division=0``).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    matthews_corrcoef,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
    recall_score,
    roc_auc_score,
)

__all__ = [
    "METRIC_NAMES",
    "METRIC_LABELS",
    "METRIC_RANGES",
    "SCORE_METRICS",
    "compute_metrics",
    "specificity_score",
    "per_class_scores",
    "score_columns",
    "check_metric_names",
]

#: Scalar metrics reported by :func:`compute_metrics`, in report order.
METRIC_NAMES = (
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "f1",
    "roc_auc",
    "pr_auc",
    "mcc",
    "kappa",
)

#: Metrics that need scores (probabilities or decision values), not only labels.
SCORE_METRICS = frozenset({"roc_auc", "pr_auc"})

#: Range of each metric (confidence intervals are clipped to it).
METRIC_RANGES = {name: (-1.0, 1.0) if name in ("mcc", "kappa") else (0.0, 1.0) for name in METRIC_NAMES}

#: Human-readable metric names for reports.
METRIC_LABELS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "precision": "precision",
    "f1": "F1",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "mcc": "MCC",
    "kappa": "Cohen's kappa",
}


def check_metric_names(metrics, *, name="metrics"):
    """Validate a list of metric names; return it as a tuple in the given order.

    ``None`` means all of :data:`METRIC_NAMES`.
    """
    if metrics is None:
        return METRIC_NAMES
    if isinstance(metrics, str):
        metrics = [metrics]
    try:
        metrics = tuple(metrics)
    except TypeError:
        raise TypeError(f"{name} must be a list of metric names; got {metrics!r}") from None
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"{name} contains unknown metric(s) {unknown}; allowed: {list(METRIC_NAMES)}")
    if len(set(metrics)) != len(metrics):
        raise ValueError(f"{name} lists a metric more than once: {list(metrics)}")
    if not metrics:
        raise ValueError(f"{name} is empty; choose from {list(METRIC_NAMES)}")
    return metrics


def specificity_score(y_true, y_pred, *, labels=None, pos_label=1, average="binary"):
    """Specificity ``TN / (TN + FP)``: the recall of "not this class".

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
    labels : array-like, optional
        Class order (default: sorted union of ``y_true`` and ``y_pred``).
    pos_label : label, default=1
        The positive class when ``average="binary"``.
    average : {"binary", "macro", None}, default="binary"
        ``"binary"``: specificity for ``pos_label`` as the positive class;
        ``"macro"``: unweighted mean of the one-vs-rest values; ``None``:
        one value per class (in ``labels`` order).

    Returns
    -------
    float or ndarray of shape (n_classes,)
        A class whose negatives are all absent (``TN + FP == 0``) gets 0.
    """
    if average not in ("binary", "macro", None):
        raise ValueError(f"average must be 'binary', 'macro' or None; got {average!r}")
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if labels is None:
        labels = np.unique(np.concatenate([y_true, y_pred]))
    labels = np.asarray(labels)
    mcm = multilabel_confusion_matrix(y_true, y_pred, labels=labels)
    tn, fp = mcm[:, 0, 0].astype(np.float64), mcm[:, 0, 1].astype(np.float64)
    denom = tn + fp
    per_class = np.divide(tn, denom, out=np.zeros_like(tn), where=denom > 0)
    if average is None:
        return per_class
    if average == "macro":
        return float(per_class.mean())
    matches = np.flatnonzero(labels == pos_label)
    if len(matches) != 1:
        raise ValueError(f"pos_label={pos_label!r} is not one of the labels {labels.tolist()}")
    return float(per_class[matches[0]])


def score_columns(scores, *, kind="decision"):
    """One score column per class from a binary classifier's single column; other scores unchanged.

    A binary classifier scores only its second class (``classes_[1]``): ``decision_function``
    returns shape ``(n_samples,)`` and a sigmoid output layer ``(n_samples, 1)``. The first class
    then gets the complement: the negated decision value (``kind="decision"``; the same ROC and
    PR curves, mirrored) or ``1 - p`` (``kind="proba"``; rows sum to one).

    Parameters
    ----------
    scores : array-like of shape (n_samples,), (n_samples, 1) or (n_samples, n_classes)
    kind : {"decision", "proba"}, default="decision"

    Returns
    -------
    ndarray of float64, shape (n_samples, n_columns)
        Two columns for a single-column input, else the input as a float64 array.

    Examples
    --------
    >>> score_columns([2.0, -0.5]).tolist()
    [[-2.0, 2.0], [0.5, -0.5]]
    >>> score_columns([[0.75], [0.25]], kind="proba").tolist()
    [[0.25, 0.75], [0.75, 0.25]]
    """
    if kind not in ("decision", "proba"):
        raise ValueError(f"kind must be one of 'decision', 'proba'; got {kind!r}")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    elif scores.ndim != 1:
        return scores
    other = 1.0 - scores if kind == "proba" else -scores
    return np.column_stack([other, scores])


def _scores_matrix(y_score, labels, n_samples):
    """Scores as (n_samples, n_classes) aligned with ``labels``."""
    scores = np.asarray(y_score, dtype=np.float64)
    n_classes = len(labels)
    if scores.ndim == 1:
        if n_classes != 2:
            raise ValueError(
                f"y_score is 1-D but there are {n_classes} classes; pass one column per class "
                f"(shape (n_samples, {n_classes}))"
            )
        scores = score_columns(scores)  # the score of labels[1]; labels[0] gets its negation
    if scores.ndim != 2 or scores.shape != (n_samples, n_classes):
        raise ValueError(
            f"y_score must have shape ({n_samples},) for a binary problem or ({n_samples}, {n_classes}) "
            f"with columns in label order {list(labels)}; got shape {scores.shape}"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError("y_score contains NaN or infinite values")
    return scores


def per_class_scores(y_true, y_score, labels):
    """One-vs-rest ROC-AUC and average precision of each class.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    y_score : array-like of shape (n_samples, n_classes) or (n_samples,) for two classes
        Column ``j`` scores class ``labels[j]`` (higher means more likely).
    labels : sequence
        Class order of the score columns.

    Returns
    -------
    roc_auc, pr_auc : ndarray of shape (n_classes,)
        ``nan`` for a class absent from ``y_true`` or present in every sample.
    """
    y_true = np.asarray(y_true)
    labels = list(labels)
    scores = _scores_matrix(y_score, labels, len(y_true))
    roc = np.full(len(labels), np.nan)
    ap = np.full(len(labels), np.nan)
    onehot = np.column_stack([y_true == label for label in labels])
    defined = onehot.any(axis=0) & ~onehot.all(axis=0)
    if defined.any():
        # One multilabel call per metric (per-column one-vs-rest values): the same numbers as
        # calling roc_auc_score / average_precision_score on each column, with less overhead.
        cols = np.flatnonzero(defined)
        roc[cols] = roc_auc_score(onehot[:, cols], scores[:, cols], average=None)
        ap[cols] = average_precision_score(onehot[:, cols], scores[:, cols], average=None)
    return roc, ap


def compute_metrics(y_true, y_pred, y_score=None, *, labels=None, pos_label=None, metrics=None):
    """Every metric of one set of predictions (binary or multi-class).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and predicted labels.
    y_score : array-like of shape (n_samples, n_classes) or (n_samples,), optional
        Probabilities or decision values, one column per class in ``labels``
        order (for two classes a 1-D array is the score of ``labels[1]``).
        Without it ROC-AUC and PR-AUC are ``nan``.
    labels : sequence, optional
        The classes, in the order of the score columns; default: the sorted
        union of ``y_true`` and ``y_pred``. Required when the test set may
        lack a class (a fold of a CV split).
    pos_label : label, optional
        Positive class of a binary problem; default ``labels[1]``. Ignored
        (must be ``None``) for multi-class problems.
    metrics : sequence of str, optional
        Subset of :data:`METRIC_NAMES` to compute (default: all).

    Returns
    -------
    dict
        One float per requested metric name, plus ``"per_class"``
        (``{label: {"sensitivity", "specificity", "precision", "f1",
        "roc_auc", "pr_auc", "support"}}``), ``"confusion_matrix"`` (list of
        lists; rows are true labels, columns predicted, in ``labels`` order),
        ``"labels"``, ``"average"`` (``"binary"`` or ``"macro"``),
        ``"pos_label"`` and ``"classes_in_macro"`` (multi-class: the classes
        present in ``y_true``, over which the macro means are taken).
    """
    metrics = check_metric_names(metrics)
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim != 1 or y_pred.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D; got shapes {y_true.shape} and {y_pred.shape}")
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("y_true is empty: no predictions to score")
    if labels is None:
        labels = np.unique(np.concatenate([y_true, y_pred]))
    labels = np.asarray(labels)
    if len(np.unique(labels)) != len(labels):
        raise ValueError(f"labels must be distinct; got {labels.tolist()}")
    if len(labels) < 2:
        raise ValueError(f"at least two classes are needed; got labels {labels.tolist()}")
    extra = sorted(set(np.unique(y_true).tolist() + np.unique(y_pred).tolist()) - set(labels.tolist()), key=str)
    if extra:
        raise ValueError(f"y_true/y_pred contain labels {extra} that are not in labels {labels.tolist()}")

    binary = len(labels) == 2
    if binary:
        if pos_label is None:
            pos_label = labels[1]
        if pos_label not in labels.tolist():
            raise ValueError(f"pos_label={pos_label!r} is not one of the labels {labels.tolist()}")
        pos_index = labels.tolist().index(pos_label)
    elif pos_label is not None:
        raise ValueError(f"pos_label={pos_label!r} only applies to binary problems; there are {len(labels)} classes")

    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None,
                                                               zero_division=0)
    specificity = specificity_score(y_true, y_pred, labels=labels, average=None)
    if y_score is not None:
        roc, ap = per_class_scores(y_true, y_score, labels)
    else:
        roc = ap = np.full(len(labels), np.nan)
    support = np.array([(y_true == label).sum() for label in labels])
    present = support > 0
    predicted = np.array([(y_pred == label).any() for label in labels])
    # Undefined per-class values are nan, not 0: recall and F1 of a class absent from y_true, precision of a
    # class neither present nor predicted, specificity when y_true holds no other class.
    recall = np.where(present, recall, np.nan)
    f1 = np.where(present, f1, np.nan)
    precision = np.where(present | predicted, precision, np.nan)
    specificity = np.where(support < len(y_true), specificity, np.nan)

    def pick(per_class):
        # Binary: the positive class; multi-class: macro mean over the classes present in y_true.
        return float(per_class[pos_index]) if binary else float(np.mean(per_class[present]))

    values = {
        "accuracy": lambda: float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": lambda: float(_balanced_accuracy(y_true, y_pred, labels)),
        "sensitivity": lambda: pick(recall),
        "specificity": lambda: pick(specificity),
        "precision": lambda: pick(precision),
        "f1": lambda: pick(f1),
        "roc_auc": lambda: pick(roc),
        "pr_auc": lambda: pick(ap),
        "mcc": lambda: float(matthews_corrcoef(y_true, y_pred)),
        "kappa": lambda: float(cohen_kappa_score(y_true, y_pred, labels=labels)),
    }
    out = {name: values[name]() for name in metrics}
    out["per_class"] = {
        _label_key(label): {
            "sensitivity": float(recall[j]),
            "specificity": float(specificity[j]),
            "precision": float(precision[j]),
            "f1": float(f1[j]),
            "roc_auc": float(roc[j]),
            "pr_auc": float(ap[j]),
            "support": int(support[j]),
        }
        for j, label in enumerate(labels)
    }
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    out["labels"] = [_plain(label) for label in labels]
    out["classes_in_macro"] = None if binary else [_plain(label) for label in labels[present]]
    out["average"] = "binary" if binary else "macro"
    out["pos_label"] = _plain(pos_label) if binary else None
    return out


def _balanced_accuracy(y_true, y_pred, labels):
    # balanced_accuracy_score ignores classes absent from y_true (it warns when y_pred has extra
    # ones); it equals the mean recall over the classes present in y_true.
    present = [label for label in labels if np.any(y_true == label)]
    if len(present) == len(labels):
        return balanced_accuracy_score(y_true, y_pred)
    return float(np.mean(recall_score(y_true, y_pred, labels=present, average=None, zero_division=0)))


def _plain(value):
    """A NumPy scalar as the matching Python scalar (JSON-friendly)."""
    return value.item() if isinstance(value, np.generic) else value


def _label_key(label):
    return str(_plain(label))
