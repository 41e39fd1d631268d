"""Grid search that computes a pipeline's stateless prefix once.

A pipeline such as ``[CLAHE, CNNFeatures, StandardScaler, SVC]`` spends
nearly all of its time in steps that learn nothing from the training data
(the image filter and the frozen CNN). Plain :class:`~sklearn.model_selection.GridSearchCV`
recomputes them for every fold and every parameter setting.
:class:`PrefixCachedGridSearchCV` instead

1. splits the pipeline into its *stateless prefix* — the leading steps for
   which :func:`featurepipe.feature_store.is_stateless` holds and that the
   grid does not touch (the first stateless step whose parameters are
   searched ends the prefix, and so does any step that is not stateless) —
   and the learned *suffix*;
2. computes the prefix once on all samples with the feature engine
   (:class:`~featurepipe.feature_store.FeatureStore`; fitting a stateless
   step learns nothing, so its output on a sample is the same whichever
   fold it was fitted on);
3. runs :class:`~sklearn.model_selection.GridSearchCV` on the suffix with
   the very same CV splits, and refits the best suffix on all samples;
4. exposes the scikit-learn search attributes with the full pipeline's
   parameter names and a refitted full pipeline (prefix + best suffix).

The scores are those of plain ``GridSearchCV`` on the whole pipeline
(tests compare them); only the wasted recomputation is gone.

What counts as stateless is :func:`~featurepipe.feature_store.is_stateless`'s
answer: steps tagged ``requires_fit=False`` (featurepipe's image steps and
feature extractors), ``"passthrough"``, and a
:class:`~sklearn.pipeline.FeatureUnion` or nested
:class:`~sklearn.pipeline.Pipeline` made only of stateless parts (e.g. a
hybrid of CNN and handcrafted features). A resampler (anything with
``fit_resample``, e.g. SMOTE) is never part of the prefix: it must only see
training folds.

Scoring callables receive the suffix and the prefix output (features), not
images; strings such as ``"accuracy"`` or ``"roc_auc"`` are unaffected.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, _fit_context, clone, is_classifier
from sklearn.model_selection import GridSearchCV, check_cv
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags
from sklearn.utils.metaestimators import available_if

from ._validation import ParamValidationMixin, invalid_parameter
from .feature_store import FeatureStore, is_stateless

__all__ = ["PrefixCachedGridSearchCV", "split_stateless_prefix", "step_is_stateless", "grid_step_names", "grid_list"]


#: The name this module has always exported for :func:`featurepipe.feature_store.is_stateless` (the same function).
step_is_stateless = is_stateless


def grid_list(param_grid):
    """``param_grid`` as a list of dicts (``[]`` for ``None``), checking its shape.

    Parameters
    ----------
    param_grid : dict, list of dict or None
        A scikit-learn parameter grid.

    Returns
    -------
    list of dict

    Raises
    ------
    TypeError
        When ``param_grid`` is neither a dict nor a sequence of dicts (the message names the bad item).

    Examples
    --------
    >>> grid_list({"svc__C": [1, 10]})
    [{'svc__C': [1, 10]}]
    >>> grid_list(None)
    []
    """
    if param_grid is None:
        return []
    if isinstance(param_grid, dict):
        return [param_grid]
    try:
        grids = list(param_grid)
    except TypeError:
        raise TypeError(f"param_grid must be a dict or a list of dicts; got {type(param_grid).__name__}") from None
    for i, grid in enumerate(grids):
        if not isinstance(grid, dict):
            raise TypeError(f"param_grid[{i}] must be a dict; got {type(grid).__name__}")
    return grids


def grid_step_names(pipeline, param_grid):
    """Names of the pipeline steps that ``param_grid`` sets (or replaces).

    Returns ``None`` when a key addresses no step (a pipeline-level
    parameter such as ``memory``): then no step can safely be precomputed.
    """
    names = {name for name, _ in pipeline.steps}
    touched = set()
    for grid in grid_list(param_grid):
        for key in grid:
            head = key.split("__", 1)[0]
            if head not in names:
                return None
            touched.add(head)
    return touched


def split_stateless_prefix(pipeline, param_grid=None):
    """Split ``pipeline`` into the stateless prefix and the learned suffix.

    Parameters
    ----------
    pipeline : sklearn or imblearn Pipeline
    param_grid : dict or list of dict, optional
        Parameters that will be searched; a step they touch ends the prefix.

    Returns
    -------
    prefix : Pipeline or None
        An (unfitted) :class:`sklearn.pipeline.Pipeline` of the prefix steps
        (the step objects themselves, not copies), ``None`` when empty.
    suffix : Pipeline
        A pipeline of the same class as ``pipeline`` (so imblearn samplers
        keep working) holding the remaining steps under their original
        names — parameter names such as ``svc__C`` mean the same thing in
        the suffix and in the full pipeline. The final step is always in
        the suffix.
    """
    if not isinstance(pipeline, Pipeline):
        raise TypeError(
            f"expected a sklearn or imblearn Pipeline; got {type(pipeline).__name__}. Wrap a single estimator "
            "with sklearn.pipeline.make_pipeline(...) to use the stateless-prefix search."
        )
    steps = list(pipeline.steps)
    if not steps:
        raise ValueError("the pipeline has no steps")
    touched = grid_step_names(pipeline, param_grid)
    k = 0
    if touched is not None:
        while k < len(steps) - 1:
            name, step = steps[k]
            if name in touched or not is_stateless(step):
                break
            k += 1
    prefix = Pipeline(steps[:k]) if k else None
    suffix = clone(pipeline, safe=False)
    suffix.steps = steps[k:]
    # clone() above copied the other pipeline parameters (memory, verbose, ...); the steps
    # list now holds the original (unfitted) step objects, which GridSearchCV clones anyway.
    return prefix, suffix


class PrefixCachedGridSearchCV(ParamValidationMixin, MetaEstimatorMixin, BaseEstimator):
    """Exhaustive grid search that computes the pipeline's stateless prefix once.

    Same parameters and fitted attributes as
    :class:`~sklearn.model_selection.GridSearchCV` (see the module
    docstring for how the pipeline is split); the scores are identical to
    plain ``GridSearchCV`` on the full pipeline with the same splits.

    Parameters
    ----------
    estimator : Pipeline
        The full pipeline (sklearn or imblearn).
    param_grid : dict or list of dict
        Grid with full-pipeline parameter names (``"svc__C"``).
    scoring, refit, error_score, return_train_score, verbose, pre_dispatch, n_jobs :
        As in :class:`~sklearn.model_selection.GridSearchCV`, applied to the
        suffix search.
    cv : int, cross-validation generator or iterable, default=None
        As in ``GridSearchCV``. The splits are drawn once from ``(X, y,
        groups)`` and reused, so group-aware splitters work unchanged.

    Attributes
    ----------
    best_estimator_ : Pipeline
        The full pipeline: fitted prefix steps followed by the refitted best
        suffix (only with ``refit``).
    best_params_, best_score_, best_index_, cv_results_, scorer_, n_splits_,
    multimetric_, refit_time_ :
        As in ``GridSearchCV`` (parameter names are the full pipeline's).
    prefix_ : Pipeline or None
        The fitted stateless prefix.
    prefix_steps_ : list of str
        Names of the steps computed once.
    prefix_time_ : float
        Seconds spent computing the prefix on all samples.
    search_ : GridSearchCV
        The search run on the suffix.
    classes_ : ndarray
        Class labels (classifiers, with ``refit``).
    """

    def __init__(self, estimator, param_grid, *, scoring=None, n_jobs=None, refit=True, cv=None, verbose=0,
                 pre_dispatch="2*n_jobs", error_score=np.nan, return_train_score=False):
        self.estimator = estimator
        self.param_grid = param_grid
        self.scoring = scoring
        self.n_jobs = n_jobs
        self.refit = refit
        self.cv = cv
        self.verbose = verbose
        self.pre_dispatch = pre_dispatch
        self.error_score = error_score
        self.return_train_score = return_train_score

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = get_tags(self.estimator).estimator_type
        tags.input_tags.two_d_array = False
        return tags

    # GridSearchCV's constraints, with the estimator narrowed to a (sklearn or imblearn) Pipeline.
    _parameter_constraints: dict = {**GridSearchCV._parameter_constraints, "estimator": [Pipeline]}

    def _validate_param_rules(self):
        grids = grid_list(self.param_grid)
        if not grids or not all(grids):
            raise invalid_parameter(self, "param_grid", "a non-empty dict or list of non-empty dicts")

    @_fit_context(prefer_skip_nested_validation=False)  # the pipeline's own steps validate in their fit
    def fit(self, X, y=None, groups=None, **fit_params):
        """Compute the prefix once, search the suffix, refit the best full pipeline.

        Parameters
        ----------
        X : sequence of samples (or whatever the pipeline's first step takes)
        y : array-like of shape (n_samples,)
        groups : array-like of shape (n_samples,), optional
            For group-aware ``cv`` splitters.
        **fit_params :
            Passed to the suffix's ``fit`` (``"step__param"`` names of suffix
            steps only).

        Returns
        -------
        self
        """
        prefix, suffix = split_stateless_prefix(self.estimator, self.param_grid)
        prefix_names = [] if prefix is None else [name for name, _ in prefix.steps]
        bad = [k for k in fit_params if k.split("__", 1)[0] in prefix_names]
        if bad:
            raise ValueError(f"fit parameters {bad} address stateless prefix steps, which learn nothing")
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        splits = [(np.asarray(train), np.asarray(test)) for train, test in cv.split(X, y, groups)]

        start = time.perf_counter()
        if prefix is not None:
            # one pass: each sample through the stateless steps once (cached per sample)
            store = FeatureStore(prefix)
            Z = store.transform(X).features
            prefix = store.fitted_prefix
        else:
            Z = X
        self.prefix_time_ = time.perf_counter() - start

        search = GridSearchCV(
            suffix, self.param_grid, scoring=self.scoring, n_jobs=self.n_jobs, refit=self.refit, cv=splits,
            verbose=self.verbose, pre_dispatch=self.pre_dispatch, error_score=self.error_score,
            return_train_score=self.return_train_score,
        )
        search.fit(Z, y, **fit_params)
        self.search_ = search
        self.prefix_ = prefix
        self.prefix_steps_ = prefix_names
        self.cv_results_ = search.cv_results_
        self.scorer_ = search.scorer_
        self.n_splits_ = search.n_splits_
        self.multimetric_ = search.multimetric_
        if hasattr(search, "best_index_"):
            self.best_index_ = search.best_index_
            self.best_params_ = search.best_params_
        if hasattr(search, "best_score_"):
            self.best_score_ = search.best_score_
        if self.refit:
            full = clone(self.estimator, safe=False)
            head = [] if prefix is None else list(prefix.steps)
            full.steps = head + list(search.best_estimator_.steps)
            self.best_estimator_ = full
            self.refit_time_ = search.refit_time_
            if hasattr(search.best_estimator_, "classes_"):
                self.classes_ = search.best_estimator_.classes_
            if hasattr(search, "n_features_in_"):
                self.n_features_in_ = search.n_features_in_
        return self

    # -- delegation to the refitted full pipeline (like GridSearchCV) -----------------
    def _has(name):
        def check(self):
            if not self.refit:
                return False
            target = getattr(self, "best_estimator_", self.estimator)
            return hasattr(target, name)

        return check

    def _best(self):
        if not self.refit:
            raise AttributeError("refit=False: no best_estimator_ to predict with; fit with refit=True")
        if not hasattr(self, "best_estimator_"):
            raise AttributeError("this PrefixCachedGridSearchCV is not fitted yet; call fit first")
        return self.best_estimator_

    @available_if(_has("predict"))
    def predict(self, X):
        """Predictions of the refitted full pipeline."""
        return self._best().predict(X)

    @available_if(_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities of the refitted full pipeline, columns in ``classes_`` order."""
        return self._best().predict_proba(X)

    @available_if(_has("predict_log_proba"))
    def predict_log_proba(self, X):
        return self._best().predict_log_proba(X)

    @available_if(_has("decision_function"))
    def decision_function(self, X):
        return self._best().decision_function(X)

    @available_if(_has("transform"))
    def transform(self, X):
        return self._best().transform(X)

    def score(self, X, y=None):
        """Score of the refitted full pipeline with the search's scorer (``refit`` metric)."""
        best = self._best()
        if self.multimetric_:
            if not isinstance(self.refit, str):
                raise AttributeError("score needs refit=<metric name> with multi-metric scoring")
            scorer = self.scorer_[self.refit]
        else:
            scorer = self.scorer_
        # The scorer was built for the suffix; it only calls predict/predict_proba/decision_function,
        # which the full pipeline offers on raw samples.
        return scorer(best, X, y)

    del _has
