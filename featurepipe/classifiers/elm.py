"""Extreme Learning Machine (ELM): a random hidden layer and a ridge read-out.

An ELM (Huang, Zhu & Siew, "Extreme learning machine: theory and
applications", *Neurocomputing* 70 (2006) 489-501) is a single-hidden-layer
feed-forward network whose hidden weights and biases are drawn at random
and never trained; only the output weights are learnt, in closed form, by
(ridge-regularised) least squares. Training therefore costs one matrix
product and one symmetric positive-definite solve — no iterations, no
learning rate. In the medical-imaging literature it is the usual fast
alternative to an SVM on top of frozen CNN or handcrafted features
("ConvNet + ELM").

Functional core
---------------
* :func:`elm_random_layer` draws the hidden layer,
* :func:`elm_hidden` maps inputs through it,
* :func:`ridge_output_weights` solves for the output weights, choosing the
  smaller of the two Gram forms.

:class:`ELMClassifier` and :class:`ELMRegressor` add the scikit-learn
contract on top.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from scipy import linalg
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .._validation import ParamValidationMixin, StrictInterval

__all__ = [
    "ACTIVATIONS",
    "ELMClassifier",
    "ELMRegressor",
    "elm_hidden",
    "elm_random_layer",
    "ridge_output_weights",
]

#: Hidden-unit activations. "gaussian" is an alias of "rbf".
ACTIVATIONS = ("sigmoid", "tanh", "relu", "rbf", "gaussian", "identity")

# Rows of the hidden matrix processed at once when accumulating H^T H, so the
# (n_samples, n_hidden) matrix never has to exist in full (bytes ~ 8 * rows * n_hidden).
_ROW_BLOCK = 4096


# ---------------------------------------------------------------------------------------------
# functional core
# ---------------------------------------------------------------------------------------------
def elm_random_layer(X, n_hidden, activation="sigmoid", weight_scale=1.0, gamma="scale", random_state=None):
    """Draw the random hidden layer of an ELM.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Training inputs. Only the ``"rbf"`` activation looks at them (its
        centres are training rows and ``gamma="scale"`` uses their variance);
        projection activations use only ``n_features``.
    n_hidden : int
        Number of hidden units.
    activation : str, default="sigmoid"
        One of :data:`ACTIVATIONS`.
    weight_scale : float, default=1.0
        Projection activations: input weights are drawn from
        ``N(0, weight_scale**2 / n_features)`` and biases from
        ``N(0, weight_scale**2)``, so a standardised input gives
        pre-activations of about ``weight_scale`` standard deviation.
        RBF: multiplies ``gamma``.
    gamma : "scale" or float, default="scale"
        RBF width, ``h = exp(-gamma * ||x - c||**2)``. ``"scale"`` is
        scikit-learn's SVC convention ``1 / (n_features * X.var())``.
    random_state : int, RandomState instance or None

    Returns
    -------
    layer : dict
        ``{"activation", "weights" (n_features, n_hidden), "biases" (n_hidden,)}``
        for projection activations, ``{"activation", "centers" (n_hidden,
        n_features), "gamma" (float)}`` for RBF.
    """
    rng = check_random_state(random_state)
    X = np.asarray(X, dtype=np.float64)
    n_samples, n_features = X.shape
    activation = "rbf" if activation == "gaussian" else activation
    if activation == "rbf":
        # Centres on training rows (without replacement when there are enough)
        # keep every unit inside the data's support.
        idx = rng.choice(n_samples, size=n_hidden, replace=n_hidden > n_samples)
        if gamma == "scale":
            var = X.var()
            gamma_value = 1.0 / (n_features * var) if var > 0 else 1.0
        else:
            gamma_value = float(gamma)
        return {"activation": "rbf", "centers": X[idx].copy(), "gamma": gamma_value * weight_scale}
    weights = rng.standard_normal((n_features, n_hidden)) * (weight_scale / np.sqrt(n_features))
    biases = rng.standard_normal(n_hidden) * weight_scale
    return {"activation": activation, "weights": weights, "biases": biases}


def elm_hidden(X, layer):
    """Hidden-layer outputs ``H`` of shape (n_samples, n_hidden), float64."""
    X = np.asarray(X, dtype=np.float64)
    activation = layer["activation"]
    if activation == "rbf":
        sq = euclidean_distances(X, layer["centers"], squared=True)
        return np.exp(-layer["gamma"] * sq)
    Z = X @ layer["weights"]
    Z += layer["biases"]
    if activation == "sigmoid":
        return expit(Z)
    if activation == "tanh":
        return np.tanh(Z)
    if activation == "relu":
        return np.maximum(Z, 0.0)
    if activation == "identity":
        return Z
    raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}")


def _spd_solve(A, B):
    """Solve ``A x = B`` for symmetric positive semi-definite ``A`` without forming an inverse.

    Cholesky-based ``solve`` first; if ``A`` is numerically singular (e.g.
    ``alpha=0`` with a rank-deficient hidden layer) fall back to the
    minimum-norm least-squares solution.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", linalg.LinAlgWarning)
            return linalg.solve(A, B, assume_a="pos", overwrite_a=True, check_finite=False)
    except (linalg.LinAlgError, linalg.LinAlgWarning, ValueError):
        return linalg.lstsq(A, B, check_finite=False, lapack_driver="gelsd")[0]


def ridge_output_weights(X, T, layer, alpha):
    """Output weights ``beta`` minimising ``||H beta - T||**2 + alpha * ||beta||**2``.

    With ``n_samples <= n_hidden`` the dual form
    ``beta = H^T (H H^T + alpha I)^{-1} T`` needs an (n_samples, n_samples)
    system; otherwise the primal form ``(H^T H + alpha I) beta = H^T T``
    needs an (n_hidden, n_hidden) system, accumulated over row blocks so
    the full hidden matrix is never held in memory. Both are solved with
    a Cholesky-based solver, never an explicit inverse.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    T : ndarray of shape (n_samples, n_outputs)
        Targets.
    layer : dict
        From :func:`elm_random_layer`.
    alpha : float
        Ridge penalty (>= 0).

    Returns
    -------
    beta : ndarray of shape (n_hidden, n_outputs)
    """
    X = np.asarray(X, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    n_samples = X.shape[0]
    n_hidden = (layer["centers"].shape[0] if layer["activation"] == "rbf" else layer["weights"].shape[1])
    if n_samples <= n_hidden:
        H = elm_hidden(X, layer)
        K = H @ H.T
        K.flat[:: n_samples + 1] += alpha
        return H.T @ _spd_solve(K, T)
    G = np.zeros((n_hidden, n_hidden))
    HT = np.zeros((n_hidden, T.shape[1]))
    for start in range(0, n_samples, _ROW_BLOCK):
        H = elm_hidden(X[start:start + _ROW_BLOCK], layer)
        G += H.T @ H
        HT += H.T @ T[start:start + _ROW_BLOCK]
    G.flat[:: n_hidden + 1] += alpha
    return _spd_solve(G, HT)


def _predict_scores(X, layer, beta):
    scores = np.empty((X.shape[0], beta.shape[1]))
    for start in range(0, X.shape[0], _ROW_BLOCK):
        scores[start:start + _ROW_BLOCK] = elm_hidden(X[start:start + _ROW_BLOCK], layer) @ beta
    return scores


# ---------------------------------------------------------------------------------------------
# estimators
# ---------------------------------------------------------------------------------------------
class _BaseELM(ParamValidationMixin, BaseEstimator):
    def __init__(self, n_hidden=500, activation="sigmoid", alpha=1e-3, weight_scale=1.0, gamma="scale",
                 random_state=None):
        self.n_hidden = n_hidden
        self.activation = activation
        self.alpha = alpha
        self.weight_scale = weight_scale
        self.gamma = gamma
        self.random_state = random_state

    _parameter_constraints = {
        "n_hidden": [StrictInterval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "alpha": [StrictInterval(Real, 0, None, closed="left")],  # ridge penalty; finite
        "weight_scale": [StrictInterval(Real, 0, None, closed="neither")],
        "gamma": [StrOptions({"scale"}), StrictInterval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
    }

    def _fit_layer(self, X, T):
        self.layer_ = elm_random_layer(X, self.n_hidden, self.activation, self.weight_scale, self.gamma,
                                       self.random_state)
        self.coef_ = ridge_output_weights(X, T, self.layer_, float(self.alpha))

    def _scores(self, X):
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return _predict_scores(X, self.layer_, self.coef_)


class ELMClassifier(ClassifierMixin, _BaseELM):
    """Extreme Learning Machine classifier (Huang, Zhu & Siew, 2006).

    A hidden layer of ``n_hidden`` units with random, untrained input
    weights and biases, followed by a linear read-out fitted in closed form
    by ridge regression onto ±1 class indicator targets (one column per
    class; a single column for binary problems, as in
    :class:`~sklearn.linear_model.RidgeClassifier`).

    When to use it: as a fast non-linear classifier on fixed feature vectors
    (frozen CNN features, handcrafted texture features) — the "ConvNet +
    ELM" pipelines of the literature. Training is one linear solve, so grid
    searches over ``n_hidden`` / ``alpha`` are cheap.

    Input scaling: projection activations see ``X @ W + b`` with weights
    ``~ N(0, weight_scale**2 / n_features)``, which is tuned for
    standardised inputs. Put a :class:`~sklearn.preprocessing.StandardScaler`
    (or :class:`~sklearn.preprocessing.MinMaxScaler`) in front of it, as for
    an SVM; unscaled features with large values saturate sigmoid/tanh units.

    Parameters
    ----------
    n_hidden : int, default=500
        Number of random hidden units. More units give a more flexible
        model; ``alpha`` keeps it from overfitting.
    activation : {"sigmoid", "tanh", "relu", "rbf", "gaussian", "identity"}, default="sigmoid"
        Hidden-unit non-linearity. ``"rbf"`` (alias ``"gaussian"``) units
        compute ``exp(-gamma * ||x - c||**2)`` around centres ``c`` drawn
        from the training rows; the others compute ``g(x @ w + b)``.
    alpha : float, default=1e-3
        Ridge penalty on the output weights (>= 0; 0 gives the minimum-norm
        least-squares solution of the original ELM). Larger values
        regularise more.
    weight_scale : float, default=1.0
        Standard deviation of the hidden pre-activations on standardised
        input (input weights ``~ N(0, weight_scale**2 / n_features)``,
        biases ``~ N(0, weight_scale**2)``); for ``"rbf"`` it multiplies
        ``gamma``.
    gamma : "scale" or float, default="scale"
        RBF width only; ``"scale"`` means ``1 / (n_features * X.var())``
        as in :class:`~sklearn.svm.SVC`.
    random_state : int, RandomState instance or None, default=None
        Seed of the random hidden layer; fix it for reproducible results.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    layer_ : dict
        The random hidden layer (see :func:`elm_random_layer`).
    coef_ : ndarray of shape (n_hidden, n_outputs)
        Output weights; ``n_outputs`` is 1 for binary problems.
    n_features_in_ : int
    feature_names_in_ : ndarray of str, only when X has string column names.

    Notes
    -----
    The output weights solve ``(H^T H + alpha I) beta = H^T T`` or, when
    there are fewer samples than hidden units, the equivalent
    ``beta = H^T (H H^T + alpha I)^{-1} T`` — whichever system is smaller —
    with a Cholesky solver (minimum-norm least squares if singular).

    ``predict_proba`` is the softmax of the output scores (for binary
    problems, the logistic function of twice the single score), so it ranks
    samples exactly like ``decision_function`` and is suitable for ROC-AUC,
    but it is *not* calibrated: ELM scores are regression outputs, not
    log-odds. Wrap the classifier in
    :class:`~sklearn.calibration.CalibratedClassifierCV` when calibrated
    probabilities matter.

    References
    ----------
    G.-B. Huang, Q.-Y. Zhu, C.-K. Siew. Extreme learning machine: theory and
    applications. Neurocomputing 70 (2006) 489-501.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import MinMaxScaler
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = make_pipeline(MinMaxScaler(), ELMClassifier(n_hidden=1000, random_state=0))
    >>> clf.fit(X[:1500], y[:1500]).score(X[1500:], y[1500:]) > 0.9
    True
    """

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Draw the hidden layer and solve for the output weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Finite feature values (NaN/inf are refused).
        y : array-like of shape (n_samples,)
            Class labels; at least two classes.

        Returns
        -------
        self
        """
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=False)
        check_classification_targets(y)
        binarizer = LabelBinarizer(neg_label=-1, pos_label=1)
        T = binarizer.fit_transform(y)
        self.classes_ = binarizer.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in y; got only one class: "
                f"{np.asarray(self.classes_[0]).item()!r}"
            )
        self._fit_layer(X, T)
        return self

    def decision_function(self, X):
        """Output scores: shape (n_samples,) for binary problems (positive means ``classes_[1]``),
        (n_samples, n_classes) otherwise."""
        scores = self._scores(X)
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict(self, X):
        """Class with the largest output score, shape (n_samples,)."""
        scores = self._scores(X)
        if scores.shape[1] == 1:
            idx = (scores[:, 0] > 0).astype(int)
        else:
            idx = scores.argmax(axis=1)
        return self.classes_[idx]

    def predict_proba(self, X):
        """Softmax of the output scores, shape (n_samples, n_classes) — uncalibrated (see Notes)."""
        scores = self._scores(X)
        if scores.shape[1] == 1:
            scores = np.hstack([-scores, scores])
        return softmax(scores, axis=1)

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`."""
        scores = self._scores(X)
        if scores.shape[1] == 1:
            scores = np.hstack([-scores, scores])
        return scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)


class ELMRegressor(RegressorMixin, _BaseELM):
    """Extreme Learning Machine regressor (Huang, Zhu & Siew, 2006).

    Same random hidden layer and closed-form ridge read-out as
    :class:`ELMClassifier`, fitted to real-valued targets (one or several
    outputs). Targets are centred before the solve (the mean is added back
    at prediction), so ``alpha`` does not shrink predictions towards zero.

    Parameters
    ----------
    n_hidden, activation, alpha, weight_scale, gamma, random_state
        As in :class:`ELMClassifier`.

    Attributes
    ----------
    layer_ : dict
    coef_ : ndarray of shape (n_hidden, n_outputs)
    intercept_ : ndarray of shape (n_outputs,)
        Mean of the training targets.
    n_features_in_ : int

    References
    ----------
    G.-B. Huang, Q.-Y. Zhu, C.-K. Siew. Extreme learning machine: theory and
    applications. Neurocomputing 70 (2006) 489-501.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Draw the hidden layer and solve for the output weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Finite real targets.

        Returns
        -------
        self
        """
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True, multi_output=True)
        y = np.asarray(y, dtype=np.float64)
        self._y_1d = y.ndim == 1
        T = y.reshape(len(y), -1)
        self.intercept_ = T.mean(axis=0)
        self._fit_layer(X, T - self.intercept_)
        return self

    def predict(self, X):
        """Predicted targets, shape (n_samples,) or (n_samples, n_outputs) like the training ``y``."""
        pred = self._scores(X) + self.intercept_
        return pred.ravel() if self._y_1d else pred
