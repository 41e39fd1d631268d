"""LBP histograms against scikit-image's codes, hand-computed patterns and a brute-force region rule.

Tolerances: histograms are counts divided by the number of counted pixels;
both sides divide the same integers, so they are compared exactly.
"""

import functools
import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from skimage.feature import local_binary_pattern
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from featurepipe import Sample
from featurepipe.cache import clear_memory_cache
from featurepipe.features.lbp import LBPFeatures, lbp_feature_names, lbp_features, lbp_footprint, lbp_n_bins


def u8_image(rng, shape=(40, 36)):
    """A uint8 image with both smooth areas (ties) and noise, and its featurepipe float form."""
    img = rng.integers(0, 256, size=shape).astype(np.uint8)
    img[: shape[0] // 2, : shape[1] // 2] = 100  # flat block: every comparison is a tie
    return img, Sample.from_array(img).image


def interior(arr, e):
    return arr[e:arr.shape[0] - e, e:arr.shape[1] - e]


@functools.lru_cache(maxsize=None)
def ror_codes(P):
    """Brute force: the minimum over the P bit rotations of every P-bit code."""
    codes = set()
    for c in range(2**P):
        codes.add(min(((c >> k) | (c << (P - k))) & (2**P - 1) for k in range(P)))
    return tuple(sorted(codes))


@pytest.mark.parametrize("method", ["uniform", "ror", "nri_uniform", "default"])
@pytest.mark.parametrize("P, R", [(8, 1), (16, 2), (8, 1.5)])
def test_histograms_equal_skimage_codes_on_the_interior(rng, method, P, R):
    img8, x = u8_image(rng)
    values, names = lbp_features(x, scales=((P, R),), method=method)
    codes = local_binary_pattern(img8, P, R, method).astype(np.int64)
    e = lbp_footprint(P, R).shape[0] // 2
    inner = interior(codes, e).ravel()
    if method == "ror":  # bins: the distinct rotation-minimal codes in increasing order
        distinct = ror_codes(P)
        lookup = np.full(2**P, -1)
        lookup[list(distinct)] = np.arange(len(distinct))
        inner = lookup[inner]
        assert (inner >= 0).all()
    expected = np.bincount(inner, minlength=len(values)) / inner.size
    assert len(values) == len(names) == lbp_n_bins(P, method)
    # exact: counts / total, one correctly rounded division
    assert_array_equal(values, expected)


def test_number_of_bins():
    assert lbp_n_bins(8, "uniform") == 10
    assert lbp_n_bins(8, "nri_uniform") == 59
    assert lbp_n_bins(8, "ror") == 36  # binary necklaces of length 8 (OEIS A000031)
    assert lbp_n_bins(16, "ror") == 4116
    assert lbp_n_bins(8, "default") == 256


def test_hand_computed_patterns():
    # one counted pixel (the centre of a 3x3 image) for P=8, R=1
    peak = np.zeros((3, 3), np.float32)
    peak[1, 1] = 1.0  # every neighbour below the centre: code 0 -> uniform bin 0
    values, _ = lbp_features(peak, scales=((8, 1),))
    # exact: zero or one by construction
    assert_array_equal(values, np.eye(10)[0])
    pit = np.ones((3, 3), np.float32)
    pit[1, 1] = 0.0  # every neighbour >= centre: code 255 -> uniform bin P = 8
    values, _ = lbp_features(pit, scales=((8, 1),))
    # exact: zero or one by construction
    assert_array_equal(values, np.eye(10)[8])
    values, _ = lbp_features(pit, scales=((8, 1),), method="default")
    assert values[255] == 1.0  # exact: one counted pixel, fraction 1/1
    edge = np.zeros((3, 3), np.float32)
    edge[:, 2] = 1.0  # right column brighter: neighbours at 315, 0, 45 deg (3 consecutive bits): uniform bin 3
    edge[1, 1] = 0.5
    values, _ = lbp_features(edge, scales=((8, 1),))
    # exact: zero or one by construction
    assert_array_equal(values, np.eye(10)[3])


def test_footprints():
    assert lbp_footprint(8, 1.0).all() and lbp_footprint(8, 1.0).shape == (3, 3)
    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
    # exact: integer, boolean or string values
    assert_array_equal(lbp_footprint(4, 1.0), cross)  # samples fall on pixel centres: no interpolation
    assert lbp_footprint(16, 2.0).shape == (5, 5)


def test_masked_pixels_follow_the_footprint_rule(rng):
    img8, x = u8_image(rng, (30, 30))
    mask = rng.random((30, 30)) > 0.15
    mask[5:25, 5:25] = True
    for P, R in [(8, 1), (12, 2.5)]:
        fp = lbp_footprint(P, R)
        e = fp.shape[0] // 2
        codes = local_binary_pattern(img8, P, R, "uniform").astype(np.int64)
        counted = []
        for r in range(30):
            for c in range(30):
                if e <= r < 30 - e and e <= c < 30 - e and mask[r - e:r + e + 1, c - e:c + e + 1][fp].all():
                    counted.append(codes[r, c])
        values, _ = lbp_features(x, mask, scales=((P, R),))
        # exact: counts / total, one correctly rounded division
        assert_array_equal(values, np.bincount(counted, minlength=P + 2) / len(counted))


def test_noise_outside_the_mask_does_not_change_features(rng):
    _, x = u8_image(rng, (40, 40))
    yy, xx = np.mgrid[:40, :40]
    mask = (yy - 20) ** 2 + (xx - 18) ** 2 < 14**2
    other = x.copy()
    other[~mask] = rng.random(int((~mask).sum()))
    scales = ((8, 1), (16, 2))
    a, _ = lbp_features(x, mask, scales=scales)
    b, _ = lbp_features(other, mask, scales=scales)
    # exact: pixels outside the mask never enter the arithmetic
    assert_array_equal(a, b)
    assert not np.array_equal(a, lbp_features(x, scales=scales)[0])


def test_multiscale_concatenates_and_names():
    x = np.random.default_rng(3).random((20, 20)).astype(np.float32)
    both, names = lbp_features(x, scales=((8, 1), (16, 2)))
    one, _ = lbp_features(x, scales=((8, 1),))
    two, _ = lbp_features(x, scales=((16, 2),))
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal(both, np.concatenate([one, two]))
    assert names[0] == "lbp_uniform_p8_r1_b0" and names[10] == "lbp_uniform_p16_r2_b00"
    assert names[-1] == "lbp_uniform_p16_r2_b17"
    assert lbp_feature_names(((8, 1.5),), "ror")[0] == "lbp_ror_p8_r1p5_b00"
    assert_allclose(both[:10].sum(), 1.0, rtol=1e-12)


def test_empty_and_too_thin_regions():
    x = np.random.default_rng(1).random((12, 12)).astype(np.float32)
    empty = np.zeros((12, 12), bool)
    with pytest.raises(ValueError, match="empty"):
        lbp_features(x, empty)
    thin = np.zeros((12, 12), bool)
    thin[5, :] = True  # no pixel has its 3x3 footprint inside
    with pytest.raises(ValueError, match="at least R=1"):
        lbp_features(x, thin)
    values, names = lbp_features(x, thin, empty_mask="nan")
    assert len(values) == len(names) and np.isnan(values).all()
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal(lbp_features(x, thin, empty_mask="image")[0], lbp_features(x)[0])
    assert_array_equal(lbp_features(x, empty, empty_mask="image")[0], lbp_features(x)[0])
    with pytest.raises(ValueError, match="too small"):
        lbp_features(np.zeros((2, 2), np.float32))


def test_colour_policy_is_bt601(rng):
    rgb = rng.integers(0, 256, size=(16, 16, 3)).astype(np.uint8)
    image = Sample.from_array(rgb).image
    gray = (image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.float32)
    # exact: the test's gray is the very expression to_gray uses (same arithmetic)
    assert_array_equal(lbp_features(image)[0], lbp_features(gray)[0])


@pytest.mark.parametrize("params, match", [
    ({"method": "var"}, "method"),
    ({"scales": ()}, "scales"),
    ({"scales": ((8, 0),)}, "scales"),
    ({"scales": ((8.0, 1),)}, "scales"),
    ({"scales": ((8, 1), (8, 1.0))}, "scales"),
    ({"scales": ((24, 3),), "method": "ror"}, "P <= 16"),
    ({"levels": 1}, "levels"),
    ({"empty_mask": "skip"}, "empty_mask"),
])
def test_bad_parameters_are_named(params, match):
    ext = LBPFeatures(**params)
    with pytest.raises(ValueError, match=match):
        ext.fit([np.zeros((8, 8), np.float32)])


def test_estimator_cache_clone_pickle_grid_search(rng):
    clear_memory_cache()
    X, y = [], []
    for k in range(12):
        if k % 2:  # noise
            X.append(rng.random((20, 20)).astype(np.float32))
        else:  # vertical stripes
            X.append(np.tile((np.arange(20) % 4 < 2).astype(np.float32), (20, 1)) * 0.8
                     + rng.random((20, 20)).astype(np.float32) * 0.1)
        y.append(k % 2)
    y = np.array(y)
    ext = LBPFeatures(scales=((8, 1),))
    out = ext.fit_transform(X)
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal(out, np.vstack([lbp_features(x)[0] for x in X]))
    # exact: the cache returns the very bytes it stored
    assert_array_equal(ext.transform(X), out)
    # exact: pickle/clone round trip of the same fitted object
    assert_array_equal(pickle.loads(pickle.dumps(ext)).transform(X), out)
    assert clone(ext).set_params(method="ror").method == "ror" and ext.method == "uniform"
    pipe = Pipeline([("lbp", LBPFeatures()), ("scale", StandardScaler()), ("clf", LogisticRegression())])
    search = GridSearchCV(pipe, {"lbp__scales": [((8, 1),), ((8, 1), (8, 2))], "lbp__method": ["uniform", "ror"]},
                          cv=StratifiedKFold(3))
    search.fit(X, y)
    assert search.best_score_ == 1.0  # exact: mean of accuracies that are all 1
    # exact: predicted class labels
    assert_array_equal(search.predict(X), y)
