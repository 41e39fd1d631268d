"""Fold statistics: hand computations and SciPy as the reference."""

import numpy as np
import pytest
from scipy import stats as sps

from featurepipe.stats import (
    bayesian_correlated_ttest,
    corrected_resampled_ttest,
    holm,
    pairwise_comparisons,
    summarize,
)

A = np.array([0.80, 0.75, 0.70, 0.85, 0.78])
B = np.array([0.70, 0.70, 0.70, 0.70, 0.68])  # differences 0.10, 0.05, 0.00, 0.15, 0.10


def test_summarize_without_correction_is_scipy_t_interval():
    s = summarize(A)
    lo, hi = sps.t.interval(0.95, len(A) - 1, loc=A.mean(), scale=sps.sem(A))
    assert s["mean"] == pytest.approx(A.mean())
    assert s["std"] == pytest.approx(A.std(ddof=1))
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((lo, hi))
    assert s["n"] == 5 and s["n_missing"] == 0


def test_summarize_corrected_interval_by_hand():
    # 5-fold CV: n_test / n_train = 1/4; corrected variance (1/5 + 1/4) s^2
    s = summarize(A, test_train_ratio=0.25, confidence=0.9)
    half = sps.t.ppf(0.95, 4) * np.sqrt((0.2 + 0.25) * A.var(ddof=1))
    assert s["ci_low"] == pytest.approx(A.mean() - half)
    assert s["ci_high"] == pytest.approx(A.mean() + half)
    assert "Nadeau" in s["method"]


def test_summarize_clips_the_interval_to_the_metric_range():
    values = [1.0, 0.95, 1.0, 0.9, 1.0]
    free = summarize(values, test_train_ratio=0.25)
    clipped = summarize(values, test_train_ratio=0.25, bounds=(0.0, 1.0))
    assert free["ci_high"] > 1.0 and clipped["ci_high"] == 1.0
    assert clipped["ci_low"] == pytest.approx(free["ci_low"])
    with pytest.raises(ValueError, match="bounds"):
        summarize(values, bounds=(1.0, 0.0))


def test_summarize_ignores_and_counts_nan():
    s = summarize([0.5, np.nan, 0.7])
    assert s["mean"] == pytest.approx(0.6) and s["n"] == 2 and s["n_missing"] == 1
    single = summarize([0.5])
    assert single["mean"] == 0.5 and np.isnan(single["std"]) and np.isnan(single["ci_low"])
    with pytest.raises(ValueError, match="test_train_ratio"):
        summarize(A, test_train_ratio=-1)
    with pytest.raises(ValueError, match="confidence"):
        summarize(A, confidence=95)


def test_nb_test_without_correction_equals_paired_t_test():
    res = corrected_resampled_ttest(A, B, test_train_ratio=0)
    ref = sps.ttest_rel(A, B)
    assert res.t == pytest.approx(ref.statistic)
    assert res.p_value == pytest.approx(ref.pvalue)
    assert res.df == 4


def test_nb_test_by_hand():
    # d = [0.10, 0.05, 0.00, 0.15, 0.10]: mean 0.08, squared deviations sum 0.013 -> s^2 = 0.00325
    res = corrected_resampled_ttest(A, B, test_train_ratio=0.25)
    se = np.sqrt((1 / 5 + 0.25) * 0.00325)
    assert res.mean_diff == pytest.approx(0.08)
    assert res.std_diff == pytest.approx(np.sqrt(0.00325))
    assert res.t == pytest.approx(0.08 / se)
    assert res.p_value == pytest.approx(2 * sps.t.sf(0.08 / se, 4))
    assert (res.ci_low, res.ci_high) == pytest.approx((0.08 - sps.t.ppf(0.975, 4) * se,
                                                        0.08 + sps.t.ppf(0.975, 4) * se))
    # the correction makes the test more conservative than the naive paired t-test
    assert res.p_value > corrected_resampled_ttest(A, B, test_train_ratio=0).p_value


def test_nb_test_degenerate_and_errors():
    same = corrected_resampled_ttest(A, A, test_train_ratio=0.25)
    assert same.t == 0 and same.p_value == 1.0
    shifted = corrected_resampled_ttest(A + 0.1, A, test_train_ratio=0.25)
    assert shifted.t == np.inf and shifted.p_value == 0.0
    with pytest.raises(ValueError, match="at least 2 folds"):
        corrected_resampled_ttest([0.5, np.nan], [0.4, 0.3], test_train_ratio=0.25)
    with pytest.raises(ValueError, match="5 and 4"):
        corrected_resampled_ttest(A, B[:4], test_train_ratio=0.25)


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])
    out = holm([0.01, np.nan, 0.02])
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.02)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.5])


def test_bayesian_correlated_ttest_matches_nb_one_sided_p_with_zero_rope():
    # With a flat prior the posterior P(delta < 0) equals the one-sided p-value of the
    # corrected t-test (same Student-t, same corrected scale).
    bayes = bayesian_correlated_ttest(A, B, test_train_ratio=0.25, rope=0.0)
    freq = corrected_resampled_ttest(A, B, test_train_ratio=0.25)
    assert bayes["p_b_better"] == pytest.approx(freq.p_value / 2)
    assert bayes["p_a_better"] == pytest.approx(1 - freq.p_value / 2)
    assert bayes["p_rope"] == pytest.approx(0.0, abs=1e-12)
    assert bayes["scale"] == pytest.approx(np.sqrt((0.2 + 0.25) * 0.00325))


def test_bayesian_correlated_ttest_rope_and_symmetry():
    res = bayesian_correlated_ttest(A, B, test_train_ratio=0.25, rope=0.05)
    post = sps.t(4, loc=0.08, scale=np.sqrt(0.45 * 0.00325))
    assert res["p_a_better"] == pytest.approx(post.sf(0.05))
    assert res["p_b_better"] == pytest.approx(post.cdf(-0.05))
    assert res["p_a_better"] + res["p_rope"] + res["p_b_better"] == pytest.approx(1.0)
    swapped = bayesian_correlated_ttest(B, A, test_train_ratio=0.25, rope=0.05)
    assert swapped["p_a_better"] == pytest.approx(res["p_b_better"])
    assert swapped["p_rope"] == pytest.approx(res["p_rope"])
    point = bayesian_correlated_ttest(A, A, test_train_ratio=0.25, rope=0.01)
    assert point["p_rope"] == 1.0
    with pytest.raises(ValueError, match="rope"):
        bayesian_correlated_ttest(A, B, test_train_ratio=0.25, rope=-1)


def test_pairwise_comparisons_holm_over_all_pairs():
    C = np.array([0.60, 0.62, 0.58, 0.61, 0.60])
    rows = pairwise_comparisons({"A": A, "B": B, "C": C}, test_train_ratio=0.25, rope=0.01)
    assert [(r["a"], r["b"]) for r in rows] == [("A", "B"), ("A", "C"), ("B", "C")]
    raw = [corrected_resampled_ttest(x, y, test_train_ratio=0.25).p_value for x, y in ((A, B), (A, C), (B, C))]
    np.testing.assert_allclose([r["p_value"] for r in rows], raw)
    np.testing.assert_allclose([r["p_holm"] for r in rows], holm(raw))
    assert all(r["n_pairs"] == 3 and "Nadeau" in r["test"] for r in rows)
    assert [r["significant"] for r in rows] == [p < 0.05 for p in holm(raw)]
    assert rows[0]["bayes"]["rope"] == 0.01
