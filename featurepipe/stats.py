"""Statistics over cross-validation folds: summaries, confidence intervals, paired tests.

Why a correction
----------------
The scores of the folds of a (repeated) k-fold cross-validation are not
independent: every two training sets share most of their samples. The
naive variance of their mean, ``s² / J`` for ``J`` fold scores, is then far
too small, confidence intervals too narrow and paired t-tests far too
eager to declare a difference (Dietterich 1998; Bouckaert & Frank 2004).
Nadeau & Bengio (2003) proposed the *corrected resampled* variance

.. math::

    \\widehat{\\sigma}^2_{\\text{corr}} = \\Big(\\frac{1}{J} + \\frac{n_\\text{test}}{n_\\text{train}}\\Big) s^2,

with ``s²`` the sample variance (``ddof=1``) of the ``J`` fold scores (or
of the paired differences) and ``n_test / n_train`` the ratio of test to
training set sizes (``1 / (k - 1)`` for k-fold CV with equal folds). Grouped
folds are rarely equal: every function here also takes one ratio per fold
and then uses the mean of the per-fold ratios over the folds it summarises
(the benchmark runner passes the real sizes of its folds). Everything here uses it:

* :func:`summarize`: mean, standard deviation and a 95 % confidence
  interval ``mean ± t_{0.975, J-1} · σ̂_corr`` (Student-t with ``J - 1``
  degrees of freedom). With ``test_train_ratio=None`` (or 0) it is the
  ordinary t-interval of independent samples.
* :func:`corrected_resampled_ttest`: the paired Nadeau–Bengio test of two
  pipelines evaluated on the same folds; with ``test_train_ratio=0`` it is
  exactly :func:`scipy.stats.ttest_rel`.
* :func:`bayesian_correlated_ttest`: the Bayesian correlated t-test of
  Corani & Benavoli (2015) / Benavoli et al. (2017), whose posterior of the
  mean difference is a Student-t with ``J - 1`` degrees of freedom, location
  the mean difference and scale ``σ̂_corr`` (the same correction, written
  there with the correlation ``ρ = n_test / (n_train + n_test)`` as
  ``1/J + ρ/(1-ρ)``); it reports the posterior probabilities that A is
  better, that the difference lies in the region of practical equivalence
  (``|Δ| ≤ rope``), and that B is better.
* :func:`holm`: Holm's step-down adjustment of p-values over all pairs
  (family-wise error rate control).

References
----------
C. Nadeau, Y. Bengio, "Inference for the generalization error", Machine
Learning 52 (2003) 239–281. R. R. Bouckaert, E. Frank, "Evaluating the
replicability of significance tests for comparing learning algorithms",
PAKDD 2004. G. Corani, A. Benavoli, "A Bayesian approach for comparing
cross-validated algorithms on multiple data sets", Machine Learning 100
(2015) 285–304. A. Benavoli, G. Corani, J. Demšar, M. Zaffalon, "Time for a
change: a tutorial for comparing multiple classifiers through Bayesian
analysis", JMLR 18 (2017) 1–36. S. Holm, "A simple sequentially rejective
multiple test procedure", Scand. J. Statist. 6 (1979) 65–70.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _sps

__all__ = [
    "summarize",
    "corrected_resampled_ttest",
    "bayesian_correlated_ttest",
    "holm",
    "pairwise_comparisons",
    "TTestResult",
    "NB_TEST_LABEL",
    "CI_LABEL",
]

#: How reports name the paired test.
NB_TEST_LABEL = "Nadeau–Bengio corrected resampled t-test (two-sided, paired over the same folds)"
#: How reports name the confidence interval.
CI_LABEL = "Student-t interval with the Nadeau–Bengio corrected variance (1/J + n_test/n_train)·s²"


def _check_ratio(test_train_ratio, keep=None):
    """The ratio ``n_test / n_train`` to use: a number, or the mean of per-fold ratios over the kept folds.

    ``keep`` is the boolean mask of the folds whose values are used (the
    others were ``nan``); it must have one entry per fold.
    """
    if test_train_ratio is None:
        return 0.0
    ratios = np.asarray(test_train_ratio, dtype=np.float64)
    if ratios.ndim == 1:
        if keep is None or len(ratios) != len(keep):
            n = "?" if keep is None else len(keep)
            raise ValueError(f"test_train_ratio has {len(ratios)} values for {n} folds; give one n_test / n_train "
                             "per fold, or a single number")
        if not np.all(np.isfinite(ratios)) or np.any(ratios < 0):
            raise ValueError(f"test_train_ratio must hold finite numbers >= 0 (n_test / n_train); got "
                             f"{ratios.tolist()}")
        kept = ratios[keep]
        return float(kept.mean()) if len(kept) else 0.0
    if ratios.ndim != 0:
        raise ValueError(f"test_train_ratio must be a number or one number per fold; got shape {ratios.shape}")
    ratio = float(ratios)
    if not np.isfinite(ratio) or ratio < 0:
        raise ValueError(f"test_train_ratio must be a finite number >= 0 (n_test / n_train); got {test_train_ratio!r}")
    return ratio


def _check_confidence(confidence):
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise ValueError(f"confidence must be a number in (0, 1); got {confidence!r}")
    return float(confidence)


def _as_vector(values, name):
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per fold); got shape {arr.shape}")
    return arr


def summarize(values, *, test_train_ratio=None, confidence=0.95, bounds=None):
    """Mean, standard deviation and confidence interval of per-fold scores.

    Parameters
    ----------
    values : array-like of shape (n_folds,)
        One score per fold (all repeats together). ``nan`` entries (metric
        undefined on that fold) are left out and counted in ``n_missing``.
    test_train_ratio : float or array-like of shape (n_folds,), optional
        ``n_test / n_train`` of the folds: one number, or one per fold (the
        real sizes of grouped folds differ); with per-fold values the mean
        over the folds whose value is finite is used. ``None`` or 0 gives
        the uncorrected t-interval.
    confidence : float, default=0.95
    bounds : (float, float), optional
        Range of the metric (e.g. ``(0, 1)``); the interval is clipped to it
        (a t-interval knows nothing of the range and can overshoot it).

    Returns
    -------
    dict
        ``mean``, ``std`` (sample standard deviation, ``ddof=1``), ``ci_low``,
        ``ci_high``, ``n`` (folds used), ``n_missing``, ``confidence``,
        ``method``. With fewer than two finite values ``std`` and the
        interval are ``nan``.
    """
    confidence = _check_confidence(confidence)
    arr = _as_vector(values, "values")
    ratio = _check_ratio(test_train_ratio, np.isfinite(arr))
    finite = arr[np.isfinite(arr)]
    n = len(finite)
    method = CI_LABEL if ratio > 0 else "Student-t interval (folds treated as independent)"
    out = {"mean": float("nan"), "std": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
           "n": n, "n_missing": int(len(arr) - n), "confidence": confidence, "method": method}
    if n == 0:
        return out
    mean = float(finite.mean())
    out["mean"] = mean
    if n < 2:
        return out
    var = float(finite.var(ddof=1))
    out["std"] = float(np.sqrt(var))
    half = _sps.t.ppf(0.5 + confidence / 2, n - 1) * np.sqrt((1.0 / n + ratio) * var)
    low, high = mean - float(half), mean + float(half)
    if bounds is not None:
        lo_bound, hi_bound = bounds
        if not lo_bound < hi_bound:
            raise ValueError(f"bounds must be (low, high) with low < high; got {bounds!r}")
        low, high = max(low, lo_bound), min(high, hi_bound)
    out["ci_low"], out["ci_high"] = low, high
    return out


@dataclass(frozen=True)
class TTestResult:
    """Result of :func:`corrected_resampled_ttest` (differences are ``a - b``)."""

    mean_diff: float
    std_diff: float
    t: float
    df: int
    p_value: float
    ci_low: float
    ci_high: float
    n: int
    test_train_ratio: float

    def to_dict(self):
        return asdict(self)


def _paired(a, b, test_train_ratio):
    """Finite differences ``a - b`` and the ratio ``n_test / n_train`` over the same folds."""
    a = _as_vector(a, "a")
    b = _as_vector(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must hold one score per shared fold; got {len(a)} and {len(b)} values")
    diff = a - b
    keep = np.isfinite(diff)
    return diff[keep], _check_ratio(test_train_ratio, keep)


def corrected_resampled_ttest(a, b, *, test_train_ratio, confidence=0.95):
    """Paired Nadeau–Bengio corrected resampled t-test of two pipelines on the same folds.

    Parameters
    ----------
    a, b : array-like of shape (n_folds,)
        Scores of pipelines A and B on the same folds, in the same order.
        Folds where either is ``nan`` are left out.
    test_train_ratio : float or array-like of shape (n_folds,)
        ``n_test / n_train`` (0 gives the ordinary paired t-test), or one
        value per fold (averaged over the folds where both scores are defined).
    confidence : float, default=0.95
        Level of the interval on the mean difference.

    Returns
    -------
    TTestResult
        ``t = mean(d) / sqrt((1/J + n_test/n_train) · var(d))`` with ``J - 1``
        degrees of freedom and a two-sided p-value. When every difference is
        the same the variance is 0: the p-value is 1 if that difference is 0
        and 0 otherwise.
    """
    confidence = _check_confidence(confidence)
    diff, ratio = _paired(a, b, test_train_ratio)
    n = len(diff)
    if n < 2:
        raise ValueError(f"the paired t-test needs at least 2 folds where both scores are defined; got {n}")
    mean = float(diff.mean())
    var = float(diff.var(ddof=1))
    df = n - 1
    se = np.sqrt((1.0 / n + ratio) * var)
    if se == 0:
        t = 0.0 if mean == 0 else float(np.sign(mean) * np.inf)
        p = 1.0 if mean == 0 else 0.0
        lo = hi = mean
    else:
        t = mean / se
        p = float(2 * _sps.t.sf(abs(t), df))
        half = _sps.t.ppf(0.5 + confidence / 2, df) * se
        lo, hi = mean - half, mean + half
    return TTestResult(mean_diff=mean, std_diff=float(np.sqrt(var)), t=float(t), df=df, p_value=p,
                       ci_low=float(lo), ci_high=float(hi), n=n, test_train_ratio=ratio)


def bayesian_correlated_ttest(a, b, *, test_train_ratio, rope=0.01):
    """Bayesian correlated t-test (Corani & Benavoli 2015; Benavoli et al. 2017).

    The posterior of the mean difference ``a - b`` is a Student-t with
    ``J - 1`` degrees of freedom, location ``mean(d)`` and scale
    ``sqrt((1/J + n_test/n_train) · var(d))``.

    Parameters
    ----------
    a, b : array-like of shape (n_folds,)
        Scores of A and B on the same folds.
    test_train_ratio : float or array-like of shape (n_folds,)
        ``n_test / n_train`` (``ρ / (1 - ρ)`` with ``ρ`` the correlation), or
        one value per fold (averaged over the folds used).
    rope : float, default=0.01
        Half-width of the region of practical equivalence, in metric units.

    Returns
    -------
    dict
        ``p_a_better = P(Δ > rope)``, ``p_rope = P(|Δ| ≤ rope)``,
        ``p_b_better = P(Δ < -rope)`` (they sum to 1), and the posterior
        ``mean``, ``scale``, ``df``, ``rope``. A zero-variance posterior is
        a point mass at the mean difference.
    """
    if not (isinstance(rope, (int, float)) and np.isfinite(rope) and rope >= 0):
        raise ValueError(f"rope must be a finite number >= 0; got {rope!r}")
    diff, ratio = _paired(a, b, test_train_ratio)
    n = len(diff)
    if n < 2:
        raise ValueError(f"the Bayesian correlated t-test needs at least 2 folds with both scores; got {n}")
    mean = float(diff.mean())
    scale = float(np.sqrt((1.0 / n + ratio) * diff.var(ddof=1)))
    df = n - 1
    if scale == 0:
        p_b = float(mean < -rope)
        p_a = float(mean > rope)
    else:
        dist = _sps.t(df, loc=mean, scale=scale)
        p_b = float(dist.cdf(-rope))
        p_a = float(dist.sf(rope))
    p_rope = max(0.0, 1.0 - p_a - p_b)
    return {"p_a_better": p_a, "p_rope": p_rope, "p_b_better": p_b, "mean": mean, "scale": scale,
            "df": df, "rope": float(rope)}


def holm(pvalues):
    """Holm's step-down adjusted p-values (same order as the input).

    With ``m`` p-values sorted increasingly, the ``i``-th (1-based) becomes
    ``max_{j ≤ i} min(1, (m - j + 1) · p_(j))``. Rejecting where the adjusted
    value is below ``alpha`` controls the family-wise error rate at ``alpha``.
    ``nan`` entries stay ``nan`` and do not count towards ``m``.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be 1-D; got shape {p.shape}")
    finite = np.isfinite(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError(f"p-values must lie in [0, 1]; got {p.tolist()}")
    out = np.full(len(p), np.nan)
    idx = np.flatnonzero(finite)
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def pairwise_comparisons(scores, *, test_train_ratio, rope=None, alpha=0.05):
    """Compare every pair of pipelines on the same folds, Holm-adjusted.

    Parameters
    ----------
    scores : dict
        ``{pipeline name: array of per-fold scores}``, all in the same fold order.
    test_train_ratio : float or array-like of shape (n_folds,)
        ``n_test / n_train`` of the folds (one number, or one per fold).
    rope : float, optional
        When given, the Bayesian correlated t-test is run too with this ROPE.
    alpha : float, default=0.05
        Family-wise level for the ``significant`` flag.

    Returns
    -------
    list of dict
        One entry per unordered pair ``(a, b)`` in input order: ``a``, ``b``,
        the :class:`TTestResult` fields (differences ``a - b``),
        ``p_holm`` (adjusted over all pairs), ``significant``
        (``p_holm < alpha``), ``test`` (label) and, with ``rope``,
        ``bayes`` (:func:`bayesian_correlated_ttest`).
    """
    if not isinstance(scores, dict):
        raise TypeError(f"scores must be a dict name -> per-fold scores; got {type(scores).__name__}")
    if not (0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1); got {alpha!r}")
    names = list(scores)
    rows = []
    for a, b in itertools.combinations(names, 2):
        try:
            res = corrected_resampled_ttest(scores[a], scores[b], test_train_ratio=test_train_ratio).to_dict()
        except ValueError as exc:  # too few shared defined folds: reported, not hidden
            res = {"mean_diff": float("nan"), "p_value": float("nan"), "error": str(exc)}
        row = {"a": a, "b": b, **res, "test": NB_TEST_LABEL}
        if rope is not None and "error" not in res:
            row["bayes"] = bayesian_correlated_ttest(scores[a], scores[b], test_train_ratio=test_train_ratio,
                                                     rope=rope)
        rows.append(row)
    adjusted = holm([r["p_value"] for r in rows]) if rows else []
    for row, p in zip(rows, adjusted):
        row["p_holm"] = float(p)
        row["significant"] = bool(np.isfinite(p) and p < alpha)
        row["n_pairs"] = len(rows)
    return rows
