"""Nadeau–Bengio statistics with the real, unequal sizes of grouped folds (issue 10 #1)."""

import numpy as np
import pytest
from scipy import stats as sps

from featurepipe.stats import bayesian_correlated_ttest, corrected_resampled_ttest, pairwise_comparisons, summarize

A = np.array([0.80, 0.75, 0.70, 0.85, 0.78])
B = np.array([0.70, 0.70, 0.70, 0.70, 0.68])


def test_per_fold_test_train_ratios_use_the_folds_actually_summarised():
    # Lopsided folds (issue 10 #1): the correction uses the real per-fold n_test / n_train, not the nominal 1/(k-1).
    n_test = np.array([42, 6, 4, 4, 4])
    n_train = 60 - n_test
    ratios = n_test / n_train
    s = summarize(A, test_train_ratio=ratios)
    half = sps.t.ppf(0.975, 4) * np.sqrt((0.2 + ratios.mean()) * A.var(ddof=1))
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((A.mean() - half, A.mean() + half))
    assert ratios.mean() == pytest.approx((42 / 18 + 6 / 54 + 3 * 4 / 56) / 5)
    # a fold whose value is undefined drops out of the ratio too
    values = A.copy()
    values[0] = np.nan
    s = summarize(values, test_train_ratio=ratios)
    half = sps.t.ppf(0.975, 3) * np.sqrt((0.25 + ratios[1:].mean()) * A[1:].var(ddof=1))
    assert s["ci_high"] == pytest.approx(A[1:].mean() + half) and s["n_missing"] == 1
    # the paired tests likewise
    res = corrected_resampled_ttest(A, B, test_train_ratio=ratios)
    d = A - B
    assert res.t == pytest.approx(d.mean() / np.sqrt((0.2 + ratios.mean()) * d.var(ddof=1)))
    assert res.test_train_ratio == pytest.approx(ratios.mean())
    bayes = bayesian_correlated_ttest(A, B, test_train_ratio=ratios, rope=0.0)
    assert bayes["scale"] == pytest.approx(np.sqrt((0.2 + ratios.mean()) * d.var(ddof=1)))
    [row] = pairwise_comparisons({"a": A, "b": B}, test_train_ratio=ratios)
    assert row["t"] == pytest.approx(res.t)
    with pytest.raises(ValueError, match="test_train_ratio has 2 values for 5 folds"):
        summarize(A, test_train_ratio=[0.25, 0.25])
