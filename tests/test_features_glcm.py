"""GLCM / Haralick features against hand-computed values, scikit-image, mahotas and pyradiomics.

Tolerances: co-occurrence matrices are integer counts and must be *equal*.
Features are float64 sums over the same probabilities computed in a
different order, so they agree to round-off: ``rtol=1e-9`` (atol 1e-12 for
values that are 0). Hand-computed values are exact fractions: ``rtol=1e-12``.
"""

import logging
import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from skimage.feature import graycomatrix, graycoprops
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from featurepipe import Sample
from featurepipe.cache import clear_memory_cache
from featurepipe.features.glcm import (
    GLCM_FEATURES,
    GLCMFeatures,
    cooccurrence_matrix,
    glcm_feature_names,
    glcm_features,
    glcm_offsets,
)

RTOL = 1e-9
ATOL = 1e-12
ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
# skimage graycoprops name -> ours
SKIMAGE_PROPS = {
    "ASM": "asm", "energy": "energy", "contrast": "contrast", "dissimilarity": "dissimilarity",
    "homogeneity": "homogeneity", "correlation": "correlation", "mean": "mean", "variance": "variance",
    "entropy": "entropy",
}
# mahotas.features.haralick columns, in order
MAHOTAS_ORDER = ("asm", "contrast", "correlation", "variance", "homogeneity", "sum_average", "sum_variance",
                 "sum_entropy", "entropy", "difference_variance", "difference_entropy", "imc1", "imc2")


def levels_to_float(q, levels):
    """A float image whose quantisation to ``levels`` levels gives back ``q`` (bin centres)."""
    return ((np.asarray(q, dtype=np.float64) + 0.5) / levels).astype(np.float32)


def per_direction(values, n_d, n_a):
    return values.reshape(len(GLCM_FEATURES), n_d, n_a)


def smooth_texture(rng, shape, levels):
    """Correlated texture (neighbours similar) so matrices are neither empty nor uniform."""
    noise = rng.random((shape[0] + 4, shape[1] + 4))
    smooth = sum(noise[i:i + shape[0], j:j + shape[1]] for i in range(4) for j in range(4)) / 16
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return np.minimum((smooth * levels).astype(np.int64), levels - 1)


# ---------------------------------------------------------------------------------------------
# hand-computed example
# ---------------------------------------------------------------------------------------------
HAND = np.array([[0, 0, 1, 1],
                 [0, 0, 1, 1],
                 [0, 2, 2, 2],
                 [2, 2, 3, 3]])


def test_hand_computed_4x4_matrix_and_features():
    # Horizontal neighbours (distance 1, angle 0), counted by hand:
    # rows give (0,0) (0,1) (1,1) | (0,0) (0,1) (1,1) | (0,2) (2,2) (2,2) | (2,2) (2,3) (3,3)
    counts = np.array([[2, 2, 1, 0],
                       [0, 2, 0, 0],
                       [0, 0, 3, 1],
                       [0, 0, 0, 1]])
    P = cooccurrence_matrix(HAND, [1], [0], levels=4)
    # exact: integer, boolean or string values
    assert_array_equal(P[:, :, 0, 0], counts)
    sym = counts + counts.T  # [[4,2,1,0],[2,4,0,0],[1,0,6,1],[0,0,1,2]], total 24
    # exact: integer, boolean or string values
    assert_array_equal(cooccurrence_matrix(HAND, [1], [0], levels=4, symmetric=True)[:, :, 0, 0], sym)
    assert_allclose(cooccurrence_matrix(HAND, [1], [0], levels=4, symmetric=True, normed=True)[:, :, 0, 0],
                    sym / 24, rtol=1e-15)

    values, names = glcm_features(levels_to_float(HAND, 4), levels=4, angles=(0.0,), aggregate="none")
    got = dict(zip(names, values))
    # contrast: off-diagonal mass (0,1)+(1,0) = 4 at (i-j)^2 = 1, (0,2)+(2,0) = 2 at 4, (2,3)+(3,2) = 2 at 1
    assert_allclose(got["glcm_contrast_d1_a0"], (4 * 1 + 2 * 4 + 2 * 1) / 24, rtol=1e-12)
    assert_allclose(got["glcm_dissimilarity_d1_a0"], (4 * 1 + 2 * 2 + 2 * 1) / 24, rtol=1e-12)
    # homogeneity: diagonal 4+4+6+2 = 16 at weight 1, then 4/2, 2/5, 2/2
    assert_allclose(got["glcm_homogeneity_d1_a0"], (16 + 4 / 2 + 2 / 5 + 2 / 2) / 24, rtol=1e-12)
    # ASM: squares of 4,2,1,2,4,1,6,1,1,2 = 16+4+1+4+16+1+36+1+1+4 = 84
    assert_allclose(got["glcm_asm_d1_a0"], 84 / 576, rtol=1e-12)
    assert_allclose(got["glcm_energy_d1_a0"], np.sqrt(84 / 576), rtol=1e-12)
    # entropy (bits): probabilities 4/24 twice, 2/24 three times, 1/24 four times, 6/24 once
    entropy = -(2 * (4 / 24) * np.log2(4 / 24) + 3 * (2 / 24) * np.log2(2 / 24) + 4 * (1 / 24) * np.log2(1 / 24)
                + (6 / 24) * np.log2(6 / 24))
    assert_allclose(got["glcm_entropy_d1_a0"], entropy, rtol=1e-12)
    # marginal (row sums of sym): 7, 6, 8, 3 -> mean 31/24
    px = np.array([7, 6, 8, 3]) / 24
    mean = 31 / 24
    var = float(((np.arange(4) - mean) ** 2 * px).sum())
    assert_allclose(got["glcm_mean_d1_a0"], mean, rtol=1e-12)
    assert_allclose(got["glcm_variance_d1_a0"], var, rtol=1e-12)
    # sum average: i+j over the entries: 0*4 + 1*4 + 2*(2+4) + 3*0 + 4*6 + 5*2 + 6*2 = 0+4+12+24+10+12
    assert_allclose(got["glcm_sum_average_d1_a0"], (4 + 12 + 24 + 10 + 12) / 24, rtol=1e-12)
    # correlation: E[ij] = (1*1*4 + 2*(0*1*2 ... )) computed from the entries directly
    e_ij = (0 * 0 * 4 + 2 * 0 * 1 * 2 + 2 * 0 * 2 * 1 + 1 * 1 * 4 + 2 * 2 * 6 + 2 * 2 * 3 * 1 + 3 * 3 * 2) / 24
    assert_allclose(got["glcm_correlation_d1_a0"], (e_ij - mean**2) / var, rtol=1e-12)


def test_hand_computed_mask_counts_only_pairs_inside():
    # mask the last row: its pixels and every pair touching them drop out
    mask = np.ones((4, 4), dtype=bool)
    mask[3] = False
    P = cooccurrence_matrix(HAND, [1], [0, np.pi / 2], levels=4, mask=mask)
    horizontal = np.array([[2, 2, 1, 0], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0]])
    # vertical pairs (r, c) -> (r+1, c) within rows 0..2: (0,0) (0,0) (1,1) (1,1) | (0,0) (0,2) (1,2) (1,2)
    vertical = np.array([[3, 0, 1, 0], [0, 2, 2, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    # exact: integer, boolean or string values
    assert_array_equal(P[:, :, 0, 0], horizontal)
    assert_array_equal(P[:, :, 0, 1], vertical)


def test_brute_force_masked_counts_on_random_image(rng):
    q = rng.integers(0, 5, size=(9, 11))
    mask = rng.random((9, 11)) > 0.3
    distances, angles = [1, 2], [0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4, np.pi / 6]
    P = cooccurrence_matrix(q, distances, angles, levels=5, mask=mask)
    offsets = glcm_offsets(distances, angles)
    for d in range(len(distances)):
        for a in range(len(angles)):
            dr, dc = offsets[d, a]
            ref = np.zeros((5, 5), dtype=np.int64)
            for r in range(9):
                for c in range(11):
                    r2, c2 = r + dr, c + dc
                    if 0 <= r2 < 9 and 0 <= c2 < 11 and mask[r, c] and mask[r2, c2]:
                        ref[q[r, c], q[r2, c2]] += 1
            # exact: integer, boolean or string values
            assert_array_equal(P[:, :, d, a], ref)


# ---------------------------------------------------------------------------------------------
# scikit-image
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [8, 64, 256])
@pytest.mark.parametrize("symmetric", [False, True])
def test_matrix_equals_graycomatrix(rng, levels, symmetric):
    q = smooth_texture(rng, (23, 31), levels).astype(np.uint8)
    distances = [1, 2, 3]
    angles = [0.0, np.pi / 6, np.pi / 4, np.pi / 2, 3 * np.pi / 4, np.pi, -np.pi / 4, 5 * np.pi / 4]
    for normed in (False, True):
        ref = graycomatrix(q, distances, angles, levels=levels, symmetric=symmetric, normed=normed)
        ours = cooccurrence_matrix(q, distances, angles, levels=levels, symmetric=symmetric, normed=normed)
        assert ours.dtype == ref.dtype
        if normed:
            assert_allclose(ours, ref, rtol=1e-12, atol=0)
        else:
            # exact: integer, boolean or string values
            assert_array_equal(ours, ref)


def test_matrix_beyond_256_levels_equals_graycomatrix(rng):
    q = smooth_texture(rng, (20, 20), 1024).astype(np.uint16)
    ref = graycomatrix(q, [1, 2], list(ANGLES), levels=1024, symmetric=True)
    # exact: integer, boolean or string values
    assert_array_equal(cooccurrence_matrix(q, [1, 2], ANGLES, levels=1024, symmetric=True), ref)


@pytest.mark.parametrize("levels", [16, 256])
@pytest.mark.parametrize("symmetric", [False, True])
def test_features_equal_graycoprops(rng, levels, symmetric):
    q = smooth_texture(rng, (40, 37), levels)
    distances = (1, 2)
    P = graycomatrix(q.astype(np.uint8), list(distances), list(ANGLES), levels=levels, symmetric=symmetric)
    values, _ = glcm_features(levels_to_float(q, levels), distances=distances, levels=levels,
                              symmetric=symmetric, aggregate="none", log_base=np.e)
    values = per_direction(values, len(distances), len(ANGLES))
    for prop, ours in SKIMAGE_PROPS.items():
        assert_allclose(values[GLCM_FEATURES.index(ours)], graycoprops(P, prop), rtol=RTOL, atol=ATOL,
                        err_msg=prop)


def test_entropy_log_base_converts_nats_to_bits(rng):
    x = levels_to_float(smooth_texture(rng, (20, 20), 16), 16)
    nats, names = glcm_features(x, levels=16, log_base=np.e, aggregate="none")
    bits, _ = glcm_features(x, levels=16, log_base=2, aggregate="none")
    k = GLCM_FEATURES.index("entropy")
    per = len(ANGLES)
    assert_allclose(bits[k * per:(k + 1) * per], nats[k * per:(k + 1) * per] / np.log(2), rtol=1e-12)


def test_quantisation_reproduces_uint8_and_power_of_two_levels(rng):
    img8 = rng.integers(0, 256, size=(30, 30)).astype(np.uint8)
    img8[0, :4] = [0, 1, 254, 255]
    sample = Sample.from_array(img8)  # featurepipe's float image v / 255
    x = sample.image
    for levels, shift in [(256, 0), (64, 2), (8, 5)]:
        ref = graycomatrix(img8 >> shift, [1], list(ANGLES), levels=levels, symmetric=True)
        values, _ = glcm_features(x, levels=levels, aggregate="none", log_base=np.e)
        values = per_direction(values, 1, len(ANGLES))
        for prop, ours in SKIMAGE_PROPS.items():
            assert_allclose(values[GLCM_FEATURES.index(ours)], graycoprops(ref, prop), rtol=RTOL, atol=ATOL)


def test_colour_image_uses_bt601_gray(rng):
    rgb = rng.integers(0, 256, size=(24, 24, 3)).astype(np.uint8)
    gray = Sample.from_array(rgb).image @ np.array([0.299, 0.587, 0.114])
    a, _ = glcm_features(Sample.from_array(rgb).image, levels=32)
    b, _ = glcm_features(gray.astype(np.float32), levels=32)
    # exact: the test's gray is the very expression to_gray uses (same arithmetic)
    assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# mahotas
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [32, 256])
def test_features_equal_mahotas_haralick(rng, levels):
    mahotas = pytest.importorskip("mahotas")
    q = smooth_texture(rng, (48, 41), levels).astype(np.uint8)
    ref = mahotas.features.haralick(q, use_x_minus_y_variance=True)  # (4 directions, 13)
    values, _ = glcm_features(levels_to_float(q, levels), levels=levels, aggregate="none")
    values = per_direction(values, 1, 4)[:, 0, :]  # (feature, angle)
    for k, name in enumerate(MAHOTAS_ORDER):
        assert_allclose(values[GLCM_FEATURES.index(name)], ref[:, k], rtol=RTOL, atol=ATOL, err_msg=name)
    # mean and range over the directions = mahotas' return_mean_ptp
    ref_mr = mahotas.features.haralick(q, use_x_minus_y_variance=True, return_mean_ptp=True)
    agg, names = glcm_features(levels_to_float(q, levels), levels=levels, aggregate="mean_range")
    got = dict(zip(names, agg))
    for k, name in enumerate(MAHOTAS_ORDER):
        assert_allclose(got[f"glcm_{name}_d1_mean"], ref_mr[k], rtol=RTOL, atol=ATOL)
        assert_allclose(got[f"glcm_{name}_d1_range"], ref_mr[13 + k], rtol=1e-7, atol=1e-10)


def test_mahotas_distance_2_needs_chebyshev_offsets(rng):
    mahotas = pytest.importorskip("mahotas")
    q = smooth_texture(rng, (40, 40), 16).astype(np.uint8)
    ref = mahotas.features.haralick(q, distance=2, use_x_minus_y_variance=True)
    cheb, _ = glcm_features(levels_to_float(q, 16), distances=(2,), levels=16, aggregate="none",
                            offset_metric="chebyshev")
    cheb = per_direction(cheb, 1, 4)[:, 0, :]
    assert_allclose(cheb[GLCM_FEATURES.index("contrast")], ref[:, 1], rtol=RTOL)
    # scikit-image's (euclidean) offsets differ on the diagonals only: (1, 1) instead of (2, 2)
    assert glcm_offsets([2], [np.pi / 4])[0, 0].tolist() == [1, 1]
    assert glcm_offsets([2], [np.pi / 4], "chebyshev")[0, 0].tolist() == [2, 2]
    eucl, _ = glcm_features(levels_to_float(q, 16), distances=(2,), levels=16, aggregate="none")
    eucl = per_direction(eucl, 1, 4)[:, 0, :]
    assert_allclose(eucl[:, [0, 2]], cheb[:, [0, 2]], rtol=1e-12)
    assert not np.allclose(eucl[GLCM_FEATURES.index("contrast"), 1], cheb[GLCM_FEATURES.index("contrast"), 1])


def test_mahotas_default_difference_variance_is_a_different_quantity(rng):
    # documented difference: mahotas' default f10 is the variance of the vector p_{x-y}
    mahotas = pytest.importorskip("mahotas")
    q = smooth_texture(rng, (30, 30), 16).astype(np.uint8)
    p_vec = mahotas.features.haralick(q)[:, 9]
    ours, _ = glcm_features(levels_to_float(q, 16), levels=16, aggregate="none")
    ours = per_direction(ours, 1, 4)[GLCM_FEATURES.index("difference_variance"), 0]
    assert not np.allclose(p_vec, ours)


# ---------------------------------------------------------------------------------------------
# pyradiomics (masked)
# ---------------------------------------------------------------------------------------------
def _pyradiomics_glcm(q, mask):
    radiomics = pytest.importorskip("radiomics")
    sitk = pytest.importorskip("SimpleITK")
    from radiomics import glcm

    radiomics.setVerbosity(logging.ERROR)
    image = sitk.GetImageFromArray(q.astype(np.float64)[None])
    label = sitk.GetImageFromArray(mask.astype(np.uint8)[None])
    ext = glcm.RadiomicsGLCM(image, label, binWidth=1, force2D=True, force2Ddimension=0, symmetricalGLCM=True,
                             distances=[1])
    ext.enableAllFeatures()
    return {k: float(v) for k, v in ext.execute().items()}


# pyradiomics name -> (ours, offset) ; levels are 1-based in pyradiomics
PYRADIOMICS_GLCM = {
    "JointEnergy": ("asm", 0), "Contrast": ("contrast", 0), "DifferenceAverage": ("dissimilarity", 0),
    "Idm": ("homogeneity", 0), "Correlation": ("correlation", 0), "JointAverage": ("mean", 1),
    "SumSquares": ("variance", 0), "JointEntropy": ("entropy", 0), "SumAverage": ("sum_average", 2),
    "ClusterTendency": ("sum_variance", 0), "SumEntropy": ("sum_entropy", 0),
    "DifferenceVariance": ("difference_variance", 0), "DifferenceEntropy": ("difference_entropy", 0),
    "Imc1": ("imc1", 0), "Imc2": ("imc2", 0),
}


def _check_against_pyradiomics(q, mask, levels):
    ref = _pyradiomics_glcm(q, mask)
    # with binWidth=1 pyradiomics numbers the levels from the region's minimum, starting at 1:
    # shift-invariant features are equal, the two averages are shifted (documented)
    values, names = glcm_features(levels_to_float(q, levels), mask, levels=levels, aggregate="mean")
    got = dict(zip(names, values))
    shift = int(q[mask].min())
    for rname, (ours, offset) in PYRADIOMICS_GLCM.items():
        expected = ref[rname]
        if ours == "mean":  # pyradiomics level = our level - shift + 1
            expected = ref[rname] - 1 + shift
        elif ours == "sum_average":
            expected = ref[rname] - 2 + 2 * shift
        assert_allclose(got[f"glcm_{ours}_d1_mean"], expected, rtol=1e-9, atol=1e-12, err_msg=rname)


def test_masked_features_equal_pyradiomics(rng):
    q = smooth_texture(rng, (40, 50), 12)
    yy, xx = np.mgrid[:40, :50]
    mask = ((yy - 20) ** 2 / 15**2 + (xx - 24) ** 2 / 20**2) <= 1
    _check_against_pyradiomics(q, mask, 12)


@pytest.mark.realdata
def test_masked_features_equal_pyradiomics_on_busi(shared_data):
    from featurepipe.io import read_image, read_mask

    image = read_image(shared_data / "busi" / "malignant" / "malignant (1).png", mode="gray")
    mask = read_mask(shared_data / "busi" / "malignant" / "malignant (1)_mask.png")
    q = np.floor(image.astype(np.float64) * 32).clip(0, 31).astype(np.int64)
    _check_against_pyradiomics(q, mask, 32)


# ---------------------------------------------------------------------------------------------
# masks and the empty-region policy
# ---------------------------------------------------------------------------------------------
def test_noise_outside_the_mask_does_not_change_features(rng):
    x = rng.random((40, 40)).astype(np.float32)
    mask = np.zeros((40, 40), dtype=bool)
    mask[8:30, 5:33] = True
    mask[15:20, 10:14] = False  # a hole
    other = x.copy()
    other[~mask] = rng.random(int((~mask).sum()))
    a, _ = glcm_features(x, mask, distances=(1, 3), levels=32, aggregate="none")
    b, _ = glcm_features(other, mask, distances=(1, 3), levels=32, aggregate="none")
    # exact: pixels outside the mask never enter the arithmetic
    assert_array_equal(a, b)
    full, _ = glcm_features(x, None, distances=(1, 3), levels=32, aggregate="none")
    assert not np.allclose(a, full)


def test_masked_features_equal_features_of_the_masked_matrix(rng):
    q = smooth_texture(rng, (30, 30), 16)
    mask = rng.random((30, 30)) > 0.2
    P = cooccurrence_matrix(q, [1], ANGLES, levels=16, mask=mask, symmetric=True)
    values, _ = glcm_features(levels_to_float(q, 16), mask, levels=16, aggregate="none", log_base=np.e)
    values = per_direction(values, 1, 4)
    for prop, ours in SKIMAGE_PROPS.items():
        assert_allclose(values[GLCM_FEATURES.index(ours)], graycoprops(P, prop), rtol=RTOL, atol=ATOL)


def test_empty_mask_policies():
    x = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    empty = np.zeros((10, 10), dtype=bool)
    with pytest.raises(ValueError, match="empty"):
        glcm_features(x, empty)
    values, names = glcm_features(x, empty, empty_mask="nan")
    assert len(values) == len(names) and np.isnan(values).all()
    whole, _ = glcm_features(x, None)
    as_image, _ = glcm_features(x, empty, empty_mask="image")
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal(as_image, whole)


def test_region_without_pairs_in_a_direction():
    x = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    row = np.zeros((10, 10), dtype=bool)
    row[4, 2:8] = True  # horizontal pairs only
    with pytest.raises(ValueError, match="no pixel pair"):
        glcm_features(x, row)
    values, names = glcm_features(x, row, aggregate="none", empty_mask="nan")
    got = dict(zip(names, values))
    assert np.isfinite(got["glcm_contrast_d1_a0"])
    assert np.isnan(got["glcm_contrast_d1_a90"]) and np.isnan(got["glcm_contrast_d1_a45"])


def test_estimator_empty_mask_names_the_sample():
    sample = Sample.from_array(np.zeros((8, 8), np.float32), mask=np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match=r"GLCMFeatures on sample .*empty"):
        GLCMFeatures(cache=False).transform([sample])
    # use_mask=False ignores the (empty) mask
    out = GLCMFeatures(cache=False, use_mask=False).transform([sample])
    assert np.isfinite(out).all()


# ---------------------------------------------------------------------------------------------
# intensity range, names, parameters
# ---------------------------------------------------------------------------------------------
def test_intensity_range_fixed_and_region(rng):
    q = rng.integers(0, 8, size=(20, 20))
    x = levels_to_float(q, 8) * 0.5 + 0.25  # occupies [0.25, 0.75)
    with pytest.raises(ValueError, match="intensity_range"):
        glcm_features(x * 4 - 2, levels=8)
    # "region": min..max of the region mapped onto the levels
    lo, hi = float(x.min()), float(x.max())
    expected_q = np.clip(np.floor((x.astype(np.float64) - lo) / (hi - lo) * 8), 0, 7).astype(np.uint8)
    P = graycomatrix(expected_q, [1], list(ANGLES), levels=8, symmetric=True)
    values, _ = glcm_features(x, levels=8, intensity_range="region", aggregate="none")
    values = per_direction(values, 1, 4)
    assert_allclose(values[GLCM_FEATURES.index("contrast")], graycoprops(P, "contrast"), rtol=RTOL)
    # a fixed range other than [0, 1]
    values2, _ = glcm_features(x * 100, levels=8, intensity_range=(0, 100), aggregate="none")
    values3, _ = glcm_features(x, levels=8, aggregate="none")
    assert_allclose(values2, values3, rtol=1e-12)


def test_feature_names_and_aggregates(rng):
    x = rng.random((16, 16)).astype(np.float32)
    none, names_none = glcm_features(x, distances=(1, 2), levels=8, aggregate="none")
    assert names_none[:4] == ["glcm_asm_d1_a0", "glcm_asm_d1_a45", "glcm_asm_d1_a90", "glcm_asm_d1_a135"]
    assert len(names_none) == len(GLCM_FEATURES) * 2 * 4
    mr, names_mr = glcm_features(x, distances=(1, 2), levels=8)
    assert names_mr[:4] == ["glcm_asm_d1_mean", "glcm_asm_d1_range", "glcm_asm_d2_mean", "glcm_asm_d2_range"]
    per = none.reshape(len(GLCM_FEATURES), 2, 4)
    expected = np.stack([per.mean(axis=2), per.max(axis=2) - per.min(axis=2)], axis=2).ravel()
    assert_allclose(mr, expected, rtol=1e-15)
    mean, names_mean = glcm_features(x, distances=(1, 2), levels=8, aggregate="mean")
    assert_allclose(mean, per.mean(axis=2).ravel(), rtol=1e-15)
    assert names_mean[1] == "glcm_asm_d2_mean"
    assert glcm_feature_names((1,), (0.0, np.pi / 8, -np.pi / 4), "none")[:3] == [
        "glcm_asm_d1_a0", "glcm_asm_d1_a22p5", "glcm_asm_d1_am45"]
    assert GLCMFeatures().get_feature_names_out().tolist() == glcm_feature_names()


@pytest.mark.parametrize("params, match", [
    ({"levels": 1}, "levels"),
    ({"levels": 64.0}, "levels"),
    ({"distances": (0,)}, "distances"),
    ({"distances": (1, 1)}, "distances"),
    ({"angles": ()}, "angles"),
    ({"angles": (0.0, np.pi / 4, 0.0)}, "angles"),
    ({"angles": (0.0, np.inf)}, "angles"),
    ({"aggregate": "max"}, "aggregate"),
    ({"log_base": 1}, "log_base"),
    ({"intensity_range": (1, 0)}, "intensity_range"),
    ({"intensity_range": "auto"}, "intensity_range"),
    ({"offset_metric": "manhattan"}, "offset_metric"),
    ({"symmetric": "yes"}, "symmetric"),
    ({"empty_mask": "zero"}, "empty_mask"),
    ({"use_mask": 1}, "use_mask"),
])
def test_bad_parameters_are_named(params, match):
    ext = GLCMFeatures(**params)  # __init__ only stores
    with pytest.raises(ValueError, match=match):
        ext.fit([np.zeros((8, 8), np.float32)])


def test_bad_level_image_for_matrix():
    with pytest.raises(ValueError, match="integer gray levels"):
        cooccurrence_matrix(np.zeros((4, 4)), [1], [0], levels=4)
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        cooccurrence_matrix(np.full((4, 4), 4), [1], [0], levels=4)


# ---------------------------------------------------------------------------------------------
# estimator contract
# ---------------------------------------------------------------------------------------------
def _two_textures(rng, n=12, size=24):
    """Class 0: smooth texture, class 1: white noise."""
    X, y = [], []
    for k in range(n):
        if k % 2:
            X.append(rng.random((size, size)).astype(np.float32))
        else:
            X.append(levels_to_float(smooth_texture(rng, (size, size), 64), 64))
        y.append(k % 2)
    return X, np.array(y)


def test_estimator_equals_functional_core_and_cache(rng):
    clear_memory_cache()
    X, _ = _two_textures(rng, n=4)
    ext = GLCMFeatures(levels=16, distances=(1, 2))
    out = ext.fit_transform(X)
    ref = np.vstack([glcm_features(x, levels=16, distances=(1, 2))[0] for x in X])
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal(out, ref)
    # exact: the cache returns the very bytes it stored
    assert_array_equal(ext.transform(X), ref)  # served from the cache, identical
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal(GLCMFeatures(levels=16, distances=(1, 2), cache=False).transform(X), ref)


def test_clone_pickle_and_grid_search(rng):
    X, y = _two_textures(rng)
    ext = GLCMFeatures(levels=16, distances=(1,))
    twin = clone(ext).set_params(levels=8)
    assert twin.get_params()["levels"] == 8 and ext.levels == 16
    restored = pickle.loads(pickle.dumps(ext.fit(X)))
    # exact: pickle/clone round trip of the same fitted object
    assert_array_equal(restored.transform(X), ext.transform(X))
    pipe = Pipeline([("glcm", GLCMFeatures(distances=(1,))), ("scale", StandardScaler()),
                     ("clf", LogisticRegression())])
    search = GridSearchCV(pipe, {"glcm__levels": [8, 32], "glcm__aggregate": ["mean", "mean_range"]},
                          cv=StratifiedKFold(3))
    search.fit(X, y)
    assert search.best_params_["glcm__levels"] in (8, 32)
    # smooth vs noise textures are separable by GLCM contrast/homogeneity
    assert search.best_score_ == 1.0  # exact: mean of accuracies that are all 1
    # exact: predicted class labels
    assert_array_equal(search.predict(X), y)
    assert_array_equal(pickle.loads(pickle.dumps(search)).predict(X), y)
