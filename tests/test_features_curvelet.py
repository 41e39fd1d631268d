"""Curvelet statistics: the UDCT itself, the per-band statistics, wedge order, rotation, masks, estimator."""

import pickle

import cv2
import numpy as np
import pytest
import scipy.stats
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline

from featurepipe import Sample
from featurepipe.features.curvelet import (
    CURVELET_STATS,
    CurveletFeatures,
    curvelet_coefficients,
    curvelet_feature_names,
    curvelet_features,
    curvelet_wedge_angles,
)

SMALL = dict(size=64, num_scales=3)  # 1 + 6 + 12 bands, fast


def _bands(values, num_scales=3, wedges=3):
    """Split a feature vector into per-scale arrays of shape (n_wedges, n_stats)."""
    counts = [1] + [2 * wedges * 2 ** (s - 1) for s in range(1, num_scales)]
    out, start = [], 0
    for c in counts:
        out.append(values[start:start + c * len(CURVELET_STATS)].reshape(c, len(CURVELET_STATS)))
        start += c * len(CURVELET_STATS)
    assert start == len(values)
    return out


# --------------------------------------------------------------------------- the transform itself
@pytest.mark.parametrize(
    "shape, num_scales, wedges, atol",
    [
        # float64 reconstruction error measured: ~1e-15 (3 wedges), ~1e-8 (6), ~1e-5 (12);
        # tolerances are one to two orders above that.
        ((64, 64), 3, 3, 1e-12),
        ((128, 96), 3, 3, 1e-12),
        ((128, 128), 4, 3, 1e-12),
        ((128, 128), 4, 6, 1e-6),
        ((64, 64), 3, 12, 1e-4),
    ],
)
def test_udct_reconstructs_random_images(shape, num_scales, wedges, atol):
    from curvelets.numpy import UDCT

    x = np.random.default_rng(0).random(shape)
    udct = UDCT(shape=shape, num_scales=num_scales, wedges_per_direction=wedges)
    coeffs = udct.forward(x)
    np.testing.assert_allclose(udct.backward(coeffs), x, rtol=0, atol=atol)
    # Tight frame: the squared magnitudes of all coefficients sum to the squared norm (Parseval).
    total = sum(np.sum(np.abs(w) ** 2) for s in coeffs for d in s for w in d)
    np.testing.assert_allclose(total, np.sum(x**2), rtol=1e-6)


def test_udct_float32_reconstruction():
    from curvelets.numpy import UDCT

    x = np.random.default_rng(1).random((128, 128)).astype(np.float32)
    udct = UDCT(shape=x.shape, num_scales=4, wedges_per_direction=3)
    # float32 round-off only (measured ~4e-7).
    np.testing.assert_allclose(udct.backward(udct.forward(x)), x, rtol=0, atol=5e-6)


def test_incompatible_size_is_refused_with_a_valid_suggestion():
    # UDCT silently loses perfect reconstruction for such shapes (error ~0.17); we refuse them.
    with pytest.raises(ValueError, match=r"size=\(100, 100\).*multiple of 8.*size=\(104, 104\)"):
        curvelet_features(np.zeros((50, 50), np.float32), size=100, num_scales=4)


# --------------------------------------------------------------------------- statistics
def test_statistics_match_scipy_on_each_band():
    x = np.random.default_rng(2).random((80, 70)).astype(np.float32)
    values, names = curvelet_features(x, size=64, num_scales=3)
    bands = curvelet_coefficients(x, size=64, num_scales=3)
    assert names == curvelet_feature_names(3, 3)
    i = 0
    for s, scale in enumerate(bands):
        for k, band in enumerate(scale):
            a = np.abs(band).astype(np.float64).ravel()
            p = a**2 / np.sum(a**2)
            expected = [a.mean(), a.std(), np.mean(a**2), scipy.stats.entropy(p, base=2),
                        scipy.stats.skew(a), scipy.stats.kurtosis(a)]
            band_name = "lowpass" if s == 0 else f"w{k:02d}"
            for stat, want in zip(CURVELET_STATS, expected):
                assert names[i] == f"curvelet_s{s}_{band_name}_{stat}"
                np.testing.assert_allclose(values[i], want, rtol=1e-9, atol=1e-12, err_msg=names[i])
                i += 1
    assert i == len(values) == 19 * 6


def test_constant_image_hand_computed():
    # Constant c on 64x64: only the low-pass band (32x32) carries energy; by Parseval its
    # mean squared magnitude is 64*64*c^2 / (32*32); all its magnitudes are equal, so the
    # normalised energy is uniform (entropy log2(1024) = 10 bits) and std/skew/kurtosis are 0.
    c = 0.7
    values, _ = curvelet_features(np.full((64, 64), c, np.float32), **SMALL)
    low, *rest = _bands(values)
    mean, std, energy, entropy, skew, kurt = low[0]
    np.testing.assert_allclose(energy, 4 * c**2, rtol=1e-6)
    np.testing.assert_allclose(mean, 2 * c, rtol=1e-6)
    np.testing.assert_allclose([std, entropy, skew, kurt], [0, 10, 0, 0], atol=1e-6)
    for scale in rest:  # no energy anywhere else: flat bands, entropy 0 by convention
        # exact: zero or one by construction
        np.testing.assert_array_equal(scale, 0.0)


def test_parseval_over_band_energies():
    x = np.random.default_rng(3).random((64, 64)).astype(np.float32)
    values, _ = curvelet_features(x, **SMALL)
    bands = curvelet_coefficients(x, **SMALL)
    sizes = [np.array([b.size for b in scale]) for scale in bands]
    energy = [scale[:, CURVELET_STATS.index("energy")] for scale in _bands(values)]
    total = sum(float(np.sum(e * n)) for e, n in zip(energy, sizes))
    np.testing.assert_allclose(total, np.sum(x.astype(np.float64) ** 2), rtol=1e-5)


def test_wedges_are_ordered_by_angle():
    # A grating at a wedge's documented centre angle, at that scale's frequency, puts most of
    # the scale's energy in that wedge - for every wedge of every scale.
    n, num_scales, wedges = 64, 3, 3
    yy, xx = np.mgrid[:n, :n]
    angles = curvelet_wedge_angles(num_scales, wedges)
    assert np.all(np.diff(np.concatenate(angles[-1:])) > 0)
    for s in range(1, num_scales):
        freq = 0.4 / 2 ** (num_scales - 1 - s)  # cycles / pixel
        for k, angle in enumerate(angles[s - 1]):
            t = np.radians(angle)
            img = 0.5 + 0.4 * np.cos(2 * np.pi * freq * (xx * np.cos(t) + yy * np.sin(t)))
            bands = curvelet_coefficients(img.astype(np.float32), size=n, num_scales=num_scales,
                                          wedges_per_direction=wedges)
            energy = [np.sum(np.abs(b) ** 2) for b in bands[s]]
            assert int(np.argmax(energy)) == k, (s, k, angle)


def _periodic_rot90(x):
    """x'[i, j] = x[j, -i mod n]: the 90-degree rotation the DFT sees (rot90 plus a 1-pixel roll)."""
    return np.ascontiguousarray(np.roll(np.rot90(x), 1, axis=0))


def test_rotation_by_90_degrees_shifts_wedges_by_half_a_turn():
    x = np.random.default_rng(4).random((64, 64)).astype(np.float32)
    ref = _bands(curvelet_features(x, **SMALL)[0])
    per = _bands(curvelet_features(_periodic_rot90(x), **SMALL)[0])
    plain = _bands(curvelet_features(np.ascontiguousarray(np.rot90(x)), **SMALL)[0])
    e = CURVELET_STATS.index("energy")
    for a, b, c in zip(ref[1:], per[1:], plain[1:]):
        half = len(a) // 2
        # Periodic rotation: every statistic moves by M/2 wedges (float32 round-off, ~1e-6).
        np.testing.assert_allclose(b, np.roll(a, half, axis=0), rtol=1e-5, atol=1e-5)
        # numpy.rot90: band energies move exactly; other statistics only approximately.
        np.testing.assert_allclose(c[:, e], np.roll(a[:, e], half), rtol=1e-5)
        assert not np.allclose(c, a, rtol=1e-3)  # the wedges really did move


def test_rotation_invariant_features():
    x = np.random.default_rng(5).random((64, 64)).astype(np.float32)
    plain, _ = curvelet_features(x, **SMALL)
    inv, names = curvelet_features(x, rotation_invariant=True, **SMALL)
    assert names[6] == "curvelet_s1_r00_mean" and names[-1] == "curvelet_s2_r11_kurtosis"
    e = CURVELET_STATS.index("energy")
    for a, b in zip(_bands(plain)[1:], _bands(inv)[1:]):
        shift = int(np.argmax(a[:, e]))
        # exact: the same function on the same input (one code path, one process)
        np.testing.assert_array_equal(b, np.roll(a, -shift, axis=0))
        assert b[0, e] == a[:, e].max()  # exact: the same number, reordered
    # exact: the same function on the same input (one code path, one process)
    np.testing.assert_array_equal(_bands(plain)[0], _bands(inv)[0])
    for rotated in (_periodic_rot90(x), _periodic_rot90(_periodic_rot90(x))):
        other, _ = curvelet_features(rotated, rotation_invariant=True, **SMALL)
        np.testing.assert_allclose(other, inv, rtol=1e-5, atol=1e-5)
    other, _ = curvelet_features(np.ascontiguousarray(np.rot90(x, 3)), rotation_invariant=True, **SMALL)
    energy_idx = [i for i, n in enumerate(names) if n.endswith("_energy")]
    np.testing.assert_allclose(other[energy_idx], inv[energy_idx], rtol=1e-5)


# --------------------------------------------------------------------------- image conventions, masks
def test_resize_colour_and_dtype_policy():
    rng = np.random.default_rng(6)
    rgb = rng.random((90, 75, 3)).astype(np.float32)
    gray = (rgb.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.float32)
    resized = cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(curvelet_features(rgb, **SMALL)[0], curvelet_features(resized, **SMALL)[0],
                               rtol=1e-6, atol=1e-7)
    u8 = (rng.random((64, 64)) * 255).astype(np.uint8)
    # exact: one correctly rounded division per pixel, identical on every SIMD path
    np.testing.assert_array_equal(curvelet_features(u8, **SMALL)[0],
                                  curvelet_features(u8.astype(np.float32) / 255, **SMALL)[0])
    # A non-square size is (height, width).
    values, _ = curvelet_features(gray, size=(64, 32), num_scales=3)
    bands = curvelet_coefficients(gray, size=(64, 32), num_scales=3)
    assert bands[0][0].shape == (32, 16)
    np.testing.assert_allclose(values[0], np.abs(bands[0][0]).astype(np.float64).mean(), rtol=1e-9)


def test_mask_bbox_ignores_pixels_outside_the_box():
    rng = np.random.default_rng(7)
    inside = rng.random((40, 30)).astype(np.float32)
    mask = np.zeros((100, 90), bool)
    mask[20:60, 35:65] = True
    mask[20, 35] = True
    a = rng.random((100, 90)).astype(np.float32)
    b = rng.random((100, 90)).astype(np.float32)
    a[20:60, 35:65] = inside
    b[20:60, 35:65] = inside
    fa, _ = curvelet_features(a, mask, roi="mask_bbox", **SMALL)
    fb, _ = curvelet_features(b, mask, roi="mask_bbox", **SMALL)
    # exact: pixels outside the mask never enter the arithmetic
    np.testing.assert_array_equal(fa, fb)
    # exact: the same function on the same input (one code path, one process)
    np.testing.assert_array_equal(fa, curvelet_features(inside, **SMALL)[0])
    # roi="image" ignores the mask entirely.
    # exact: the same function on the same input (one code path, one process)
    np.testing.assert_array_equal(curvelet_features(a, mask, **SMALL)[0], curvelet_features(a, **SMALL)[0])


def test_missing_or_empty_mask_policy():
    img = np.random.default_rng(8).random((64, 64)).astype(np.float32)
    empty = np.zeros((64, 64), bool)
    with pytest.raises(ValueError, match="roi='mask_bbox' needs a non-empty mask.*empty mask"):
        curvelet_features(img, empty, roi="mask_bbox", **SMALL)
    with pytest.raises(ValueError, match="no mask"):
        curvelet_features(img, None, roi="mask_bbox", **SMALL)
    values, names = curvelet_features(img, empty, roi="mask_bbox", empty_mask="nan", **SMALL)
    assert len(values) == len(names) == 114 and np.all(np.isnan(values))
    whole, _ = curvelet_features(img, **SMALL)
    for mask in (empty, None):
        # exact: the same function on the same input (one code path, one process)
        np.testing.assert_array_equal(curvelet_features(img, mask, roi="mask_bbox", empty_mask="image", **SMALL)[0],
                                      whole)


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(num_scales=1), r"'num_scales' parameter of CurveletFeatures must be an int in the range \[2, 8\]\. "
                             "Got 1 instead"),
        (dict(wedges_per_direction=4), "wedges_per_direction must be a positive multiple of 3.*got 4"),
        (dict(size=0), r"'size' parameter of CurveletFeatures must be an int in the range \[16, inf\).*Got 0 instead"),
        (dict(size=(64, "a")), r"size must be a positive int or a pair.*got \(64, 'a'\)"),
        (dict(roi="box"),
         r"'roi' parameter of CurveletFeatures must be a str among \{(?=.*'image')(?=.*'mask_bbox').*\}\. Got 'box'"),
        (dict(empty_mask="zero"), r"'empty_mask' parameter of CurveletFeatures must be a str among "
                                  r"\{(?=.*'error')(?=.*'nan')(?=.*'image').*\}\. Got 'zero'"),
        (dict(rotation_invariant="yes"),
         r"'rotation_invariant' parameter of CurveletFeatures must be an instance of 'bool'.*Got 'yes'"),
    ],
)
def test_bad_parameters_are_named(params, match):
    X = [np.zeros((32, 32), np.float32)]
    with pytest.raises(ValueError, match=match):
        CurveletFeatures(**{**SMALL, **params}).fit_transform(X)


# --------------------------------------------------------------------------- estimator
def _stripes(n_per_class, rng):
    """Class 0: horizontal stripes, class 1: vertical stripes, random phase/frequency plus noise."""
    yy, xx = np.mgrid[:64, :64]
    X, y = [], []
    for label in (0, 1):
        for _ in range(n_per_class):
            # Frequencies in the band-pass scales of a 64x64, 3-scale transform.
            f, phase = rng.uniform(0.2, 0.35), rng.uniform(0, 2 * np.pi)
            coord = yy if label == 0 else xx
            img = 0.5 + 0.3 * np.sin(2 * np.pi * f * coord + phase) + 0.1 * rng.standard_normal((64, 64))
            X.append(Sample.from_array(np.clip(img, 0, 1).astype(np.float32), label=label))
            y.append(label)
    return np.array(X, dtype=object), np.array(y)


def test_estimator_matches_functional_core_and_names():
    X, _ = _stripes(3, np.random.default_rng(9))
    est = CurveletFeatures(**SMALL, cache=False)
    out = est.fit_transform(X)
    expected = np.vstack([curvelet_features(s.image, **SMALL)[0] for s in X])
    # exact: the same function on the same input (one code path, one process)
    np.testing.assert_array_equal(out, expected)
    assert list(est.get_feature_names_out()) == curvelet_feature_names(3, 3)
    cached = CurveletFeatures(**SMALL)
    # exact: the same function on the same input (one code path, one process)
    np.testing.assert_array_equal(cached.fit_transform(X), expected)
    # exact: the cache returns the very bytes it stored
    np.testing.assert_array_equal(cached.transform(X), expected)  # second time from the cache


def test_clone_params_pickle_and_grid_search():
    X, y = _stripes(6, np.random.default_rng(10))
    est = CurveletFeatures(size=(64, 64), num_scales=3, rotation_invariant=False)
    params = est.get_params()
    assert params["size"] == (64, 64) and params["num_scales"] == 3
    twin = clone(est).set_params(rotation_invariant=True)
    assert twin.rotation_invariant is True and est.rotation_invariant is False
    restored = pickle.loads(pickle.dumps(est))
    # exact: pickle/clone round trip of the same fitted object
    np.testing.assert_array_equal(restored.fit_transform(X[:2]), est.fit_transform(X[:2]))

    pipe = make_pipeline(CurveletFeatures(size=64, num_scales=3), LogisticRegression(max_iter=5000))
    search = GridSearchCV(pipe, {"curveletfeatures__rotation_invariant": [False, True]},
                          cv=StratifiedKFold(3, shuffle=True, random_state=0))
    search.fit(X, y)
    assert list(search.cv_results_["param_curveletfeatures__rotation_invariant"]) == [False, True]
    # Horizontal vs vertical stripes is exactly what orientation-resolved wedges see, and exactly
    # what the rotation-invariant variant throws away (they differ by a 90-degree rotation).
    assert search.cv_results_["mean_test_score"][0] == 1.0  # exact: mean of accuracies that are all 1
    assert search.cv_results_["mean_test_score"][1] <= 0.5
    assert search.best_params_ == {"curveletfeatures__rotation_invariant": False}
    # exact: predicted class labels
    np.testing.assert_array_equal(search.predict(X), y)
