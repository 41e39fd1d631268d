"""PowerNormalizer: scikit-learn's estimator checks, the formula by hand, statelessness."""

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer
from sklearn.utils.estimator_checks import check_estimator

from featurepipe import PowerNormalizer
from featurepipe.feature_store import is_stateless


def test_passes_check_estimator():
    check_estimator(PowerNormalizer())
    check_estimator(PowerNormalizer(alpha=0.3))


def test_signed_power_by_hand():
    X = np.array([[4.0, -9.0, 0.0, 0.25], [-0.01, 1.0, 2.0, -1e6]])
    expected = np.array([[2.0, -3.0, 0.0, 0.5], [-0.1, 1.0, np.sqrt(2.0), -1e3]])
    # sqrt is correctly rounded (IEEE) but np.power may go through exp/log: a few ulp
    np.testing.assert_allclose(PowerNormalizer().transform(X), expected, rtol=1e-14, atol=0)
    np.testing.assert_allclose(PowerNormalizer(alpha=1.0).transform(X), X, rtol=1e-14, atol=0)
    third = PowerNormalizer(alpha=1 / 3).fit_transform(np.array([[27.0, -8.0]]))
    np.testing.assert_allclose(third, [[3.0, -2.0]], rtol=1e-14)


def test_power_then_l2_normalises_each_row():
    X = np.array([[9.0, 16.0, 0.0], [-1.0, 4.0, 4.0]])
    out = make_pipeline(PowerNormalizer(), Normalizer()).fit_transform(X)
    np.testing.assert_allclose(out, [[0.6, 0.8, 0.0], [-1 / 3, 2 / 3, 2 / 3]], rtol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-14)


def test_stateless_rows_independent_and_float32_kept():
    X = np.random.default_rng(0).normal(size=(6, 4))
    assert is_stateless(PowerNormalizer()) and is_stateless(make_pipeline(PowerNormalizer(), Normalizer()))
    whole = PowerNormalizer().transform(X)
    # exact: the same elementwise function of each value, whatever the other rows
    np.testing.assert_array_equal(np.vstack([PowerNormalizer().transform(X[i:i + 1]) for i in range(6)]), whole)
    assert PowerNormalizer().transform(X.astype(np.float32)).dtype == np.float32
    names = PowerNormalizer().fit(X).get_feature_names_out()
    assert list(names) == ["x0", "x1", "x2", "x3"]


@pytest.mark.parametrize("alpha", [0, -0.5, 1.5, "half"])
def test_bad_alpha_is_named(alpha):
    with pytest.raises(ValueError, match=r"'alpha' parameter of PowerNormalizer must be .*Got"):
        PowerNormalizer(alpha=alpha).fit(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"'alpha' parameter"):
        PowerNormalizer(alpha=alpha).transform(np.ones((2, 2)))
