"""First-order statistics against hand-computed values, NumPy/SciPy and pyradiomics.

Tolerances: the same float64 sums in a different order, ``rtol=1e-12``
(NumPy/SciPy) and ``rtol=1e-9`` (pyradiomics, which shifts and casts).
Hand-computed values are exact fractions (``rtol=1e-12``).
"""

import logging
import pickle

import numpy as np
import pytest
import scipy.stats
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline

from featurepipe import Sample
from featurepipe.cache import clear_memory_cache
from featurepipe.features.firstorder import (
    FirstOrderFeatures,
    first_order_feature_names,
    first_order_features,
    quantize,
    to_gray,
)


def as_dict(values, names):
    return dict(zip(names, values))


def test_hand_computed_values():
    # four pixels 0, 0.25, 0.5, 1 in a 2x2 image
    x = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    got = as_dict(*first_order_features(x, bins=4, histogram_bins=2, percentiles=(50,)))
    mean = 1.75 / 4  # 0.4375
    dev = np.array([0, 0.25, 0.5, 1.0]) - mean
    m2 = (dev**2).mean()
    assert_allclose(got["firstorder_mean"], 0.4375, rtol=1e-12)
    assert_allclose(got["firstorder_variance"], m2, rtol=1e-12)
    assert_allclose(got["firstorder_std"], np.sqrt(m2), rtol=1e-12)
    assert_allclose(got["firstorder_energy"], (0 + 0.0625 + 0.25 + 1) / 4, rtol=1e-12)
    assert_allclose(got["firstorder_rms"], np.sqrt(1.3125 / 4), rtol=1e-12)
    assert got["firstorder_min"] == 0 and got["firstorder_max"] == 1 and got["firstorder_range"] == 1
    assert_allclose(got["firstorder_median"], 0.375, rtol=1e-12)
    assert_allclose(got["firstorder_mad"], np.abs(dev).mean(), rtol=1e-12)
    # 4 bins over [0, 1]: 0 -> bin 0, 0.25 -> 1, 0.5 -> 2, 1.0 -> clipped into bin 3: uniform
    assert_allclose(got["firstorder_entropy"], 2.0, rtol=1e-12)
    assert_allclose(got["firstorder_uniformity"], 0.25, rtol=1e-12)
    # 2 histogram bins: [0, 0.5) holds 0 and 0.25, [0.5, 1] holds 0.5 and 1
    assert got["firstorder_hist00"] == 0.5 and got["firstorder_hist01"] == 0.5  # exact: counts / total
    assert got["firstorder_p50"] == got["firstorder_median"]


def test_matches_numpy_and_scipy(rng):
    x = rng.beta(2, 5, size=(30, 40)).astype(np.float32)
    mask = rng.random((30, 40)) > 0.4
    percentiles = (5, 10, 33.3, 90)
    got = as_dict(*first_order_features(x, mask, percentiles=percentiles, bins=32, histogram_bins=5))
    v = x[mask].astype(np.float64)
    assert_allclose(got["firstorder_mean"], v.mean(), rtol=1e-12)
    assert_allclose(got["firstorder_variance"], v.var(), rtol=1e-12)
    assert_allclose(got["firstorder_skewness"], scipy.stats.skew(v, bias=True), rtol=1e-10)
    assert_allclose(got["firstorder_kurtosis"], scipy.stats.kurtosis(v, fisher=True, bias=True), rtol=1e-10)
    for q in percentiles:
        label = "p33p3" if q == 33.3 else f"p{q}"
        assert_allclose(got[f"firstorder_{label}"], np.percentile(v, q), rtol=1e-12)
    assert_allclose(got["firstorder_iqr"], np.subtract(*np.percentile(v, [75, 25])), rtol=1e-12)
    hist = np.histogram(v, bins=32, range=(0, 1))[0] / v.size
    assert_allclose(got["firstorder_entropy"], scipy.stats.entropy(hist, base=2), rtol=1e-12)
    assert_allclose(got["firstorder_uniformity"], (hist**2).sum(), rtol=1e-12)
    coarse = np.histogram(v, bins=5, range=(0, 1))[0] / v.size
    assert_allclose([got[f"firstorder_hist{k:02d}"] for k in range(5)], coarse, rtol=1e-12)


def test_matches_pyradiomics_firstorder(rng):
    radiomics = pytest.importorskip("radiomics")
    sitk = pytest.importorskip("SimpleITK")
    from radiomics import firstorder

    radiomics.setVerbosity(logging.ERROR)
    bins = 16
    x = rng.random((30, 30)).astype(np.float32) * 0.999  # no pixel exactly at 1.0 (our top bin is closed)
    yy, xx = np.mgrid[:30, :30]
    mask = (yy - 15) ** 2 + (xx - 14) ** 2 <= 12**2
    # pyradiomics bins by binWidth from the region minimum's floor: feed x * bins with binWidth 1 so both
    # partitions are floor(x * bins)
    scaled = x.astype(np.float64) * bins
    ext = firstorder.RadiomicsFirstOrder(sitk.GetImageFromArray(scaled[None]),
                                         sitk.GetImageFromArray(mask.astype(np.uint8)[None]),
                                         binWidth=1, force2D=True, force2Ddimension=0)
    ext.enableAllFeatures()
    ref = {k: float(v) for k, v in ext.execute().items()}
    got = as_dict(*first_order_features(x, mask, bins=bins))
    n = int(mask.sum())
    assert_allclose(got["firstorder_mean"] * bins, ref["Mean"], rtol=1e-9)
    assert_allclose(got["firstorder_variance"] * bins**2, ref["Variance"], rtol=1e-9)
    assert_allclose(got["firstorder_skewness"], ref["Skewness"], rtol=1e-9)
    assert_allclose(got["firstorder_kurtosis"] + 3, ref["Kurtosis"], rtol=1e-9)  # pyradiomics: not excess
    assert_allclose(got["firstorder_energy"] * bins**2 * n, ref["Energy"], rtol=1e-9)
    assert_allclose(got["firstorder_rms"] * bins, ref["RootMeanSquared"], rtol=1e-9)
    assert_allclose(got["firstorder_min"] * bins, ref["Minimum"], rtol=1e-9)
    assert_allclose(got["firstorder_max"] * bins, ref["Maximum"], rtol=1e-9)
    assert_allclose(got["firstorder_range"] * bins, ref["Range"], rtol=1e-9)
    assert_allclose(got["firstorder_median"] * bins, ref["Median"], rtol=1e-9)
    assert_allclose(got["firstorder_p10"] * bins, ref["10Percentile"], rtol=1e-9)
    assert_allclose(got["firstorder_p90"] * bins, ref["90Percentile"], rtol=1e-9)
    assert_allclose(got["firstorder_iqr"] * bins, ref["InterquartileRange"], rtol=1e-9)
    assert_allclose(got["firstorder_mad"] * bins, ref["MeanAbsoluteDeviation"], rtol=1e-9)
    assert_allclose(got["firstorder_entropy"], ref["Entropy"], rtol=1e-9)
    assert_allclose(got["firstorder_uniformity"], ref["Uniformity"], rtol=1e-9)


def test_constant_region_has_zero_skewness_and_kurtosis():
    got = as_dict(*first_order_features(np.full((6, 6), 0.3, np.float32)))
    assert got["firstorder_skewness"] == 0 and got["firstorder_kurtosis"] == 0
    assert got["firstorder_variance"] == 0 and got["firstorder_entropy"] == 0 and got["firstorder_uniformity"] == 1


def test_quantize_reproduces_uint8():
    v = np.arange(256, dtype=np.uint8)
    x = Sample.from_array(v.reshape(16, 16)).image
    # exact: integer, boolean or string values
    assert_array_equal(quantize(x, 256, 0.0, 1.0).ravel(), v)
    for k in range(1, 8):
        # exact: integer, boolean or string values
        assert_array_equal(quantize(x, 2**k, 0.0, 1.0).ravel(), v >> (8 - k))


def test_noise_outside_the_mask_does_not_change_features(rng):
    x = rng.random((32, 32)).astype(np.float32)
    mask = np.zeros((32, 32), bool)
    mask[5:20, 8:30] = True
    other = x.copy()
    other[~mask] = rng.random(int((~mask).sum()))
    a, _ = first_order_features(x, mask)
    b, _ = first_order_features(other, mask)
    # exact: pixels outside the mask never enter the arithmetic
    assert_array_equal(a, b)
    c, _ = first_order_features(x[5:20, 8:30])  # the masked pixels alone
    assert_allclose(a, c, rtol=1e-12)


def test_empty_mask_policies(rng):
    x = rng.random((8, 8)).astype(np.float32)
    empty = np.zeros((8, 8), bool)
    with pytest.raises(ValueError, match="empty"):
        first_order_features(x, empty)
    values, names = first_order_features(x, empty, empty_mask="nan")
    assert len(values) == len(names) and np.isnan(values).all()
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal(first_order_features(x, empty, empty_mask="image")[0], first_order_features(x)[0])
    with pytest.raises(ValueError, match="mask has shape"):
        first_order_features(x, np.ones((4, 4), bool))


def test_intensity_range():
    x = np.array([[0.0, 50.0], [100.0, 100.0]], dtype=np.float32)
    with pytest.raises(ValueError, match="intensity_range"):
        first_order_features(x)
    got = as_dict(*first_order_features(x, intensity_range=(0, 100), bins=2, histogram_bins=2))
    assert got["firstorder_hist00"] == 0.25 and got["firstorder_hist01"] == 0.75  # exact: counts / total
    got = as_dict(*first_order_features(x, intensity_range="region", bins=2, histogram_bins=2))
    assert got["firstorder_hist00"] == 0.25 and got["firstorder_mean"] == 62.5  # exact: counts / total; a mean of small integers
    # float round-off just above 1 is clipped, not refused
    y = np.array([[0.0, 1.000001]], dtype=np.float32)
    assert as_dict(*first_order_features(y, bins=2))["firstorder_uniformity"] == 0.5  # exact: sum of squared halves


def test_colour_policy_is_bt601(rng):
    rgb = rng.integers(0, 256, size=(10, 12, 3)).astype(np.uint8)
    image = Sample.from_array(rgb).image
    gray = (image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.float32)
    # exact: the test's gray is the very expression to_gray uses (same arithmetic)
    assert_array_equal(to_gray(image), gray)
    assert_array_equal(first_order_features(image)[0], first_order_features(gray)[0])
    with pytest.raises(ValueError, match="shape"):
        to_gray(np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        first_order_features(np.full((4, 4), np.nan, np.float32))


def test_names():
    names = first_order_feature_names(percentiles=(10, 97.5), histogram_bins=3)
    assert names[:3] == ["firstorder_mean", "firstorder_std", "firstorder_variance"]
    assert names[-5:] == ["firstorder_p10", "firstorder_p97p5", "firstorder_hist00", "firstorder_hist01",
                          "firstorder_hist02"]
    assert FirstOrderFeatures().get_feature_names_out().tolist() == first_order_feature_names()


@pytest.mark.parametrize("params, match", [
    ({"bins": 0}, "bins"),
    ({"histogram_bins": -1}, "histogram_bins"),
    ({"percentiles": (10, 101)}, "percentiles"),
    ({"percentiles": (10, 10)}, "percentiles"),
    ({"percentiles": "10"}, "percentiles"),
    ({"intensity_range": (0, 0)}, "intensity_range"),
    ({"log_base": 0.5}, "log_base"),
    ({"empty_mask": "raise"}, "empty_mask"),
    ({"use_mask": "yes"}, "use_mask"),
])
def test_bad_parameters_are_named(params, match):
    ext = FirstOrderFeatures(**params)
    with pytest.raises(ValueError, match=match):
        ext.fit([np.zeros((4, 4), np.float32)])


def test_estimator_cache_clone_pickle_grid_search(rng):
    clear_memory_cache()
    # class 0 darker than class 1, with masks
    X, y = [], []
    for k in range(12):
        img = (rng.random((12, 12)) * 0.5 + 0.4 * (k % 2)).astype(np.float32)
        mask = np.zeros((12, 12), bool)
        mask[2:10, 3:11] = True
        X.append(Sample.from_array(img, mask=mask))
        y.append(k % 2)
    y = np.array(y)
    ext = FirstOrderFeatures()
    out = ext.fit_transform(X)
    ref = np.vstack([first_order_features(s.image, s.mask)[0] for s in X])
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal(out, ref)
    # exact: the cache returns the very bytes it stored
    assert_array_equal(ext.transform(X), ref)
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal(FirstOrderFeatures(use_mask=False, cache=False).transform(X),
                       np.vstack([first_order_features(s.image)[0] for s in X]))
    # exact: pickle/clone round trip of the same fitted object
    assert_array_equal(pickle.loads(pickle.dumps(ext)).transform(X), ref)
    assert clone(ext).set_params(bins=8).bins == 8 and ext.bins == 64
    pipe = Pipeline([("fo", FirstOrderFeatures()), ("clf", LogisticRegression(C=100.0))])
    search = GridSearchCV(pipe, {"fo__bins": [8, 16], "fo__histogram_bins": [0, 4]}, cv=StratifiedKFold(3))
    search.fit(X, y)
    assert search.best_score_ == 1.0  # exact: mean of accuracies that are all 1
    # exact: predicted class labels
    assert_array_equal(search.predict(X), y)
