"""The stateless-prefix grid search gives exactly what plain GridSearchCV gives."""

import pickle

import numpy as np
import pytest
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline as ImbPipeline
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from featurepipe import FeatureExtractor, ImageStep, Sample
from featurepipe.cache import clear_memory_cache
from featurepipe.search import (
    PrefixCachedGridSearchCV,
    split_stateless_prefix,
    step_is_stateless,
)

CALLS = []


class Blur(ImageStep):
    def __init__(self, passes=1):
        self.passes = passes

    def _transform_image(self, image, mask):
        out = image.copy()
        for _ in range(self.passes):
            out[1:-1, 1:-1] = (out[:-2, 1:-1] + out[2:, 1:-1] + out[1:-1, :-2] + out[1:-1, 2:]) / 4
        return out.astype(np.float32), mask


class Stats(FeatureExtractor):
    """Mean, std, 90th percentile and top-rows mean, scaled."""

    def __init__(self, scale=1.0, cache=True, n_jobs=None):
        self.scale = scale
        self.cache = cache
        self.n_jobs = n_jobs

    def _extract(self, image, mask):
        CALLS.append(1)
        return self.scale * np.array([image.mean(), image.std(), np.percentile(image, 90), image[:3].mean()])

    def _feature_names(self):
        return ["mean", "std", "p90", "top"]


@pytest.fixture(autouse=True)
def _fresh():
    clear_memory_cache()
    CALLS.clear()


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    y = np.array([0, 1] * (n // 2))
    samples = [Sample.from_array((rng.random((10, 10)) * 0.7 + 0.03 * label).astype(np.float32))
               for label in y]
    groups = np.repeat(np.arange(n // 2), 2)
    return np.array(samples, dtype=object), y, groups


GRID = {"svc__C": [0.1, 1.0, 10.0], "svc__gamma": ["scale", 0.3]}


def _pipe(cache=False):
    return Pipeline([("blur", Blur()), ("stats", Stats(cache=cache)), ("scale", StandardScaler()),
                     ("svc", SVC())])


def _assert_same_search(plain, ours):
    assert ours.best_params_ == plain.best_params_
    assert ours.best_score_ == pytest.approx(plain.best_score_, abs=1e-12)
    assert ours.best_index_ == plain.best_index_
    assert [p for p in ours.cv_results_["params"]] == [p for p in plain.cv_results_["params"]]
    for key in ("mean_test_score", "std_test_score", "rank_test_score"):
        np.testing.assert_allclose(ours.cv_results_[key], plain.cv_results_[key], atol=1e-12)
    for i in range(ours.n_splits_):
        np.testing.assert_allclose(ours.cv_results_[f"split{i}_test_score"],
                                   plain.cv_results_[f"split{i}_test_score"], atol=1e-12)


def test_same_results_as_plain_grid_search_with_prefix_computed_once():
    X, y, _ = _data()
    cv = StratifiedKFold(4, shuffle=True, random_state=0)
    plain = GridSearchCV(_pipe(), GRID, cv=cv).fit(X, y)
    calls_plain = len(CALLS)
    CALLS.clear()
    ours = PrefixCachedGridSearchCV(_pipe(), GRID, cv=cv).fit(X, y)
    _assert_same_search(plain, ours)
    assert 0.5 < ours.best_score_ < 1.0  # a non-trivial case: the grid points differ
    assert len(set(np.round(ours.cv_results_["mean_test_score"], 6))) > 1
    # the prefix (blur + stats, cache off) ran once per image; plain search re-ran it per fit and score
    assert ours.prefix_steps_ == ["blur", "stats"]
    assert len(CALLS) == len(X)
    assert calls_plain >= 6 * len(X)
    # refitted full pipeline: prefix + best suffix, same predictions and decision values
    assert [n for n, _ in ours.best_estimator_.steps] == ["blur", "stats", "scale", "svc"]
    assert ours.best_estimator_.named_steps["svc"].C == plain.best_params_["svc__C"]
    # exact: predicted class labels
    np.testing.assert_array_equal(ours.predict(X), plain.predict(X))
    np.testing.assert_allclose(ours.decision_function(X), plain.decision_function(X), atol=1e-10)
    assert ours.score(X, y) == pytest.approx(plain.score(X, y))
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(ours.classes_, [0, 1])


def test_group_splitter_and_multimetric_refit():
    X, y, groups = _data(seed=1)
    cv = StratifiedGroupKFold(3, shuffle=True, random_state=2)
    scoring = {"acc": "accuracy", "auc": "roc_auc"}
    plain = GridSearchCV(_pipe(), GRID, cv=cv, scoring=scoring, refit="auc").fit(X, y, groups=groups)
    ours = PrefixCachedGridSearchCV(_pipe(), GRID, cv=cv, scoring=scoring, refit="auc").fit(X, y, groups=groups)
    assert ours.best_params_ == plain.best_params_
    for key in ("mean_test_acc", "mean_test_auc", "rank_test_auc"):
        np.testing.assert_allclose(ours.cv_results_[key], plain.cv_results_[key], atol=1e-12)
    assert ours.score(X, y) == pytest.approx(plain.score(X, y))


def test_grid_on_a_stateless_step_ends_the_prefix():
    X, y, _ = _data(seed=2)
    grid = {"blur__passes": [0, 2], "svc__C": [0.5, 5.0]}
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    plain = GridSearchCV(_pipe(), grid, cv=cv).fit(X, y)
    ours = PrefixCachedGridSearchCV(_pipe(), grid, cv=cv).fit(X, y)
    assert ours.prefix_steps_ == []  # the first step is searched: nothing can be precomputed
    _assert_same_search(plain, ours)
    grid2 = {"stats__scale": [1.0, 2.0], "svc__C": [0.5, 5.0]}
    ours2 = PrefixCachedGridSearchCV(_pipe(), grid2, cv=cv).fit(X, y)
    assert ours2.prefix_steps_ == ["blur"]
    _assert_same_search(GridSearchCV(_pipe(), grid2, cv=cv).fit(X, y), ours2)


def test_imblearn_pipeline_sampler_stays_in_the_suffix():
    X, y, _ = _data(n=60, seed=3)
    keep = np.r_[np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:12]]  # imbalanced: 30 vs 12
    X, y = X[keep], y[keep]
    pipe = ImbPipeline([("stats", Stats()), ("smote", SMOTE(k_neighbors=3, random_state=0)),
                        ("scale", StandardScaler()), ("svc", SVC())])
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    plain = GridSearchCV(pipe, {"svc__C": [0.1, 1.0, 10.0]}, cv=cv, scoring="balanced_accuracy").fit(X, y)
    ours = PrefixCachedGridSearchCV(pipe, {"svc__C": [0.1, 1.0, 10.0]}, cv=cv,
                                    scoring="balanced_accuracy").fit(X, y)
    assert ours.prefix_steps_ == ["stats"]
    assert type(ours.search_.best_estimator_) is ImbPipeline
    _assert_same_search(plain, ours)


def test_split_stateless_prefix_rules():
    smote = SMOTE()
    union = FeatureUnion([("a", Stats()), ("b", Stats(scale=2.0))])
    pipe = ImbPipeline([("blur", Blur()), ("union", union), ("pass", "passthrough"), ("smote", smote),
                        ("svc", SVC())])
    prefix, suffix = split_stateless_prefix(pipe)
    assert [n for n, _ in prefix.steps] == ["blur", "union", "pass"]
    assert [n for n, _ in suffix.steps] == ["smote", "svc"] and type(suffix) is ImbPipeline
    assert not step_is_stateless(smote)
    assert not step_is_stateless(FeatureUnion([("a", Stats()), ("s", StandardScaler())]))
    # the final step always stays in the suffix, even when it is stateless
    prefix, suffix = split_stateless_prefix(Pipeline([("blur", Blur()), ("stats", Stats())]))
    assert [n for n, _ in suffix.steps] == ["stats"]
    # a grid key that addresses no step (a pipeline parameter) disables the prefix
    prefix, _ = split_stateless_prefix(_pipe(), {"verbose": [False]})
    assert prefix is None
    with pytest.raises(TypeError, match="Pipeline"):
        split_stateless_prefix(SVC())


def test_estimator_contract_and_errors():
    search = PrefixCachedGridSearchCV(_pipe(), GRID, cv=3)
    assert clone(search).get_params()["param_grid"] == GRID
    X, y, _ = _data(n=24)
    with pytest.raises(TypeError, match="Pipeline"):
        PrefixCachedGridSearchCV(SVC(), {"C": [1]}).fit(X[:0], y[:0])
    with pytest.raises(ValueError, match="non-empty"):
        PrefixCachedGridSearchCV(_pipe(), {}).fit(X, y)
    with pytest.raises(ValueError, match="stateless prefix"):
        PrefixCachedGridSearchCV(_pipe(), GRID, cv=3).fit(X, y, stats__sample_weight=np.ones(len(y)))
    fitted = PrefixCachedGridSearchCV(_pipe(), GRID, cv=3).fit(X, y)
    again = pickle.loads(pickle.dumps(fitted))
    # exact: predicted class labels
    np.testing.assert_array_equal(again.predict(X), fitted.predict(X))
    no_refit = PrefixCachedGridSearchCV(_pipe(), GRID, cv=3, refit=False).fit(X, y)
    assert not hasattr(no_refit, "best_estimator_")
    assert not hasattr(no_refit, "predict")
