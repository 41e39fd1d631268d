"""Extreme Learning Machine: maths against scikit-learn references, contract, accuracy."""

import pickle

import numpy as np
import pytest
from scipy.special import expit
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_digits, make_classification, make_regression
from sklearn.linear_model import Ridge
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from featurepipe.classifiers import ELMClassifier, ELMRegressor
from featurepipe.classifiers import elm as elm_module
from featurepipe.classifiers.elm import (
    elm_hidden,
    elm_random_layer,
    ridge_output_weights,
)


@parametrize_with_checks([
    ELMClassifier(random_state=0),
    ELMClassifier(activation="rbf", n_hidden=50, random_state=0),
    ELMRegressor(random_state=0),
    ELMRegressor(activation="tanh", n_hidden=50, random_state=0),
])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------------------------
# functional core against references
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation, func", [
    ("sigmoid", expit),
    ("tanh", np.tanh),
    ("relu", lambda z: np.maximum(z, 0)),
    ("identity", lambda z: z),
])
def test_projection_hidden_layer_matches_hand_computation(activation, func):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 7))
    layer = elm_random_layer(X, 40, activation, weight_scale=2.0, random_state=3)
    assert layer["weights"].shape == (7, 40) and layer["biases"].shape == (40,)
    expected = func(X @ layer["weights"] + layer["biases"])
    np.testing.assert_allclose(elm_hidden(X, layer), expected, rtol=1e-12, atol=1e-12)
    # weights ~ N(0, weight_scale**2 / n_features): check the spread over many draws
    big = elm_random_layer(X, 20000, activation, weight_scale=2.0, random_state=3)
    assert np.std(big["weights"]) == pytest.approx(2.0 / np.sqrt(7), rel=0.02)
    assert np.std(big["biases"]) == pytest.approx(2.0, rel=0.03)


def test_rbf_hidden_layer_matches_sklearn_rbf_kernel():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 5)) * 3.0
    layer = elm_random_layer(X, 20, "gaussian", random_state=0)
    assert layer["activation"] == "rbf"
    # centres are distinct training rows; gamma="scale" is SVC's 1 / (n_features * X.var())
    assert len({row.tobytes() for row in layer["centers"]}) == 20
    assert all(any(np.array_equal(c, x) for x in X) for c in layer["centers"])
    assert layer["gamma"] == pytest.approx(1.0 / (5 * X.var()))
    np.testing.assert_allclose(elm_hidden(X, layer), rbf_kernel(X, layer["centers"], gamma=layer["gamma"]),
                               rtol=1e-10)
    fixed = elm_random_layer(X, 20, "rbf", gamma=0.25, weight_scale=2.0, random_state=0)
    assert fixed["gamma"] == pytest.approx(0.5)


@pytest.mark.parametrize("n_samples, n_hidden", [(30, 80), (120, 25)])  # dual form, primal form
@pytest.mark.parametrize("alpha", [1e-3, 2.5])
def test_ridge_output_weights_match_sklearn_ridge(n_samples, n_hidden, alpha):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(n_samples, 6))
    T = rng.normal(size=(n_samples, 3))
    layer = elm_random_layer(X, n_hidden, "sigmoid", random_state=0)
    H = elm_hidden(X, layer)
    reference = Ridge(alpha=alpha, fit_intercept=False, solver="svd").fit(H, T).coef_.T
    np.testing.assert_allclose(ridge_output_weights(X, T, layer, alpha), reference, rtol=1e-6, atol=1e-8)


def test_primal_form_accumulates_row_blocks_exactly(monkeypatch):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(103, 4))
    T = rng.normal(size=(103, 2))
    layer = elm_random_layer(X, 10, "tanh", random_state=0)
    whole = ridge_output_weights(X, T, layer, 0.1)
    monkeypatch.setattr(elm_module, "_ROW_BLOCK", 16)  # 7 blocks, the last one partial
    blocked = ridge_output_weights(X, T, layer, 0.1)
    np.testing.assert_allclose(blocked, whole, rtol=1e-10)
    H = elm_hidden(X, layer)
    np.testing.assert_allclose(blocked, Ridge(alpha=0.1, fit_intercept=False).fit(H, T).coef_.T, rtol=1e-6)


def test_alpha_zero_gives_minimum_norm_least_squares():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(20, 3))
    T = rng.normal(size=(20, 1))
    layer = elm_random_layer(X, 60, "identity", random_state=0)  # rank 4 < 20: singular Gram matrix
    beta = ridge_output_weights(X, T, layer, 0.0)
    H = elm_hidden(X, layer)
    np.testing.assert_allclose(H @ beta, H @ np.linalg.pinv(H) @ T, atol=1e-6)
    assert np.all(np.isfinite(beta))


# ---------------------------------------------------------------------------------------------
# estimator behaviour
# ---------------------------------------------------------------------------------------------
def test_digits_accuracy_within_three_points_of_default_svc():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0  # pixel values 0..16 -> [0, 1]; SVC's gamma="scale" makes it indifferent
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    svc = cross_val_score(SVC(), X, y, cv=cv).mean()
    elm = cross_val_score(ELMClassifier(n_hidden=1000, random_state=0), X, y, cv=cv).mean()
    # measured: SVC 0.9872, ELM(n_hidden=1000, sigmoid, alpha=1e-3) 0.9900
    assert svc == pytest.approx(0.9872, abs=0.002)
    assert elm == pytest.approx(0.9900, abs=0.005)
    assert elm >= svc - 0.03


def test_deterministic_with_fixed_random_state():
    X, y = make_classification(n_samples=150, n_features=8, n_classes=3, n_informative=5, random_state=0)
    a = ELMClassifier(n_hidden=60, random_state=7).fit(X, y)
    b = ELMClassifier(n_hidden=60, random_state=7).fit(X, y)
    c = ELMClassifier(n_hidden=60, random_state=8).fit(X, y)
    # exact: same random_state, same code path
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))
    assert not np.allclose(a.decision_function(X), c.decision_function(X))
    rs = np.random.RandomState(5)
    d = clone(ELMClassifier(n_hidden=60, random_state=rs)).fit(X, y)
    assert d.decision_function(X).shape == (150, 3)


def test_alpha_regularises_noisy_problem():
    # 30% of labels flipped: with 400 hidden units and 200 training samples a tiny alpha interpolates
    X, y = make_classification(n_samples=400, n_features=10, n_informative=4, flip_y=0.3, random_state=0)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.5, stratify=y, random_state=0)
    gaps, norms = [], []
    for alpha in (1e-8, 1.0, 100.0):
        clf = ELMClassifier(n_hidden=400, alpha=alpha, random_state=0).fit(Xtr, ytr)
        gaps.append(clf.score(Xtr, ytr) - clf.score(Xte, yte))
        norms.append(np.linalg.norm(clf.coef_))
    # measured gaps 0.365, 0.160, 0.015
    assert gaps[0] > 0.3
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 0.05
    assert norms[0] > norms[1] > norms[2]


def test_binary_decision_function_proba_and_predict_agree():
    X, y = make_classification(n_samples=120, n_features=6, random_state=1)
    labels = np.where(y == 1, "malignant", "benign")
    clf = ELMClassifier(n_hidden=50, random_state=0).fit(X, labels)
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(clf.classes_, ["benign", "malignant"])
    d = clf.decision_function(X)
    assert d.shape == (120,)
    # single ±1 output: score = H @ coef_
    np.testing.assert_allclose(d, elm_hidden(X, clf.layer_) @ clf.coef_[:, 0], rtol=1e-10)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba[:, 1], expit(2 * d), rtol=1e-10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, rtol=1e-10)
    # exact: predicted class labels
    np.testing.assert_array_equal(clf.predict(X), np.where(d > 0, "malignant", "benign"))
    assert clf.score(X, labels) == pytest.approx(0.883, abs=0.01)  # measured; 1% of labels flipped


def test_multiclass_proba_is_softmax_of_scores():
    X, y = make_classification(n_samples=150, n_features=8, n_classes=3, n_informative=5, random_state=0)
    clf = ELMClassifier(n_hidden=80, activation="relu", random_state=0).fit(X, y)
    s = clf.decision_function(X)
    expected = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=1e-10)
    # exact: predicted class labels
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[s.argmax(axis=1)])
    # targets are ±1 indicators, fitted by ridge: compare the scores with sklearn's Ridge on H
    H = elm_hidden(X, clf.layer_)
    T = np.where(y[:, None] == np.arange(3), 1.0, -1.0)
    np.testing.assert_allclose(s, Ridge(alpha=1e-3, fit_intercept=False).fit(H, T).predict(H), rtol=1e-5, atol=1e-6)


def test_calibrated_wrapper_gives_probabilities():
    X, y = make_classification(n_samples=200, n_features=6, random_state=2)
    cal = CalibratedClassifierCV(ELMClassifier(n_hidden=40, random_state=0), cv=3).fit(X, y)
    p = cal.predict_proba(X)
    assert p.shape == (200, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert ((p[:, 1] > 0.5) == (y == 1)).mean() > 0.85


def test_regressor_fits_smooth_function_and_multioutput():
    X, y = make_regression(n_samples=200, n_features=4, noise=1.0, random_state=0)
    y2 = np.column_stack([y, -2 * y + 3])
    reg = ELMRegressor(n_hidden=150, alpha=1e-4, random_state=0).fit(X / X.std(), y2)
    pred = reg.predict(X / X.std())
    assert pred.shape == (200, 2)
    assert reg.score(X / X.std(), y2) > 0.98
    np.testing.assert_allclose(reg.intercept_, y2.mean(axis=0))
    single = ELMRegressor(n_hidden=150, alpha=1e-4, random_state=0).fit(X / X.std(), y)
    assert single.predict(X / X.std()).shape == (200,)
    np.testing.assert_allclose(single.predict(X / X.std()), pred[:, 0], rtol=1e-8)


def test_pickle_round_trip_predicts_identically():
    X, y = make_classification(n_samples=80, n_features=5, random_state=3)
    clf = ELMClassifier(n_hidden=30, activation="rbf", random_state=0).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    # exact: pickle/clone round trip of the same fitted object
    np.testing.assert_array_equal(again.decision_function(X), clf.decision_function(X))


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("Est", [ELMClassifier, ELMRegressor])
def test_fit_rejects_nan_inf_and_mismatched_lengths(Est):
    X = np.random.default_rng(0).normal(size=(10, 3))
    y = np.array([0, 1] * 5)
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Est().fit(bad, y)
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        Est().fit(bad, y)
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[10, 9\]"):
        Est().fit(X, y[:9])


def test_classifier_rejects_one_class():
    X = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="at least 2 classes.*only one class: 'a'"):
        ELMClassifier().fit(X, ["a"] * 10)


@pytest.mark.parametrize("param, value, message", [
    ("n_hidden", 0, r"'n_hidden' parameter of ELMClassifier must be an int in the range \[1, inf\)\. Got 0 instead"),
    ("n_hidden", 2.5, r"'n_hidden' parameter of ELMClassifier must be an int in the range \[1, inf\)\. Got 2\.5"),
    ("n_hidden", True, r"'n_hidden' parameter of ELMClassifier must be an int in the range \[1, inf\)\. Got True"),
    ("activation", "softplus", r"'activation' parameter of ELMClassifier must be a str among \{.*'sigmoid'.*\}\. "
                               "Got 'softplus'"),
    ("alpha", -1.0, r"'alpha' parameter of ELMClassifier must be a float in the range \[0\.0, inf\)\. Got -1\.0"),
    ("alpha", float("inf"), r"'alpha' parameter of ELMClassifier must be a float in the range \[0\.0, inf\)\. "
                            "Got inf"),
    ("weight_scale", 0, r"'weight_scale' parameter of ELMClassifier must be a float in the range \(0\.0, inf\)\. "
                        "Got 0 instead"),
    ("gamma", "auto", r"'gamma' parameter of ELMClassifier must be a str among \{'scale'\} or a float in the range "
                      r"\(0\.0, inf\)\. Got 'auto'"),
])
def test_bad_parameters_are_named(param, value, message):
    X, y = make_classification(n_samples=20, n_features=4, random_state=0)
    with pytest.raises(ValueError, match=message):
        ELMClassifier(**{param: value}).fit(X, y)


def test_predict_rejects_wrong_feature_count():
    X, y = make_classification(n_samples=20, n_features=4, random_state=0)
    clf = ELMClassifier(n_hidden=10, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="3 features, but ELMClassifier is expecting 4"):
        clf.predict(X[:, :3])
