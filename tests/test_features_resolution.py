"""Working resolution (``max_side``) of the native-resolution feature families (issue 15 #3).

``cap_resolution`` is the one policy: shrink with OpenCV ``INTER_AREA`` so the longer side is at
most ``max_side``, the mask with pixel-centre nearest neighbour, never enlarge. Every family that
takes ``max_side`` must give, with a cap, its own features of the image shrunk by that helper,
and with ``max_side=None`` its native-resolution features.
"""

import cv2
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

from featurepipe import Sample
from featurepipe.features import (
    ANALYSIS_MAX_SIDE,
    FAMILIES,
    BagOfVisualWords,
    FirstOrderFeatures,
    GLCMFeatures,
    LBPFeatures,
    cap_resolution,
    dense_descriptors,
    first_order_features,
    glcm_features,
    lbp_features,
)

#: (estimator class, functional core, extra parameters) of each family with ``max_side``.
FAMILY_CASES = {
    "firstorder": (FirstOrderFeatures, first_order_features, {}),
    "glcm": (GLCMFeatures, glcm_features, {"distances": (1, 2, 4)}),
    "lbp": (LBPFeatures, lbp_features, {"scales": ((8, 1), (16, 2))}),
}


def _texture(shape, seed=0):
    """Smoothed noise plus a bright disc, float32 in [0, 1], and the disc as mask."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.random(shape, dtype=np.float32), (0, 0), 2.0)
    image = (image - image.min()) / np.ptp(image)
    rows, cols = np.indices(shape)
    mask = (rows - shape[0] * 0.45) ** 2 + (cols - shape[1] * 0.55) ** 2 < (min(shape) * 0.3) ** 2
    image = np.clip(0.6 * image + 0.3 * mask, 0.0, 1.0).astype(np.float32)
    return image, mask


@pytest.fixture(scope="module")
def large():
    return _texture((600, 420))


# ------------------------------------------------------------------------------------------------
# the helper
# ------------------------------------------------------------------------------------------------
def test_cap_resolution_is_opencv_area_and_nearest_mask(large):
    image, mask = large
    small, small_mask = cap_resolution(image, mask, 300)
    assert small.shape == small_mask.shape == (300, 210)  # longer side 300, aspect kept (420 * 0.5)
    # exact: the same OpenCV call on the same bytes
    assert_array_equal(small, cv2.resize(image, (210, 300), interpolation=cv2.INTER_AREA))
    assert small_mask.dtype == bool
    # exact: nearest neighbour copies mask pixels, so the result is binary and OpenCV's own
    assert_array_equal(small_mask, cv2.resize(mask.astype(np.uint8), (210, 300),
                                              interpolation=cv2.INTER_NEAREST_EXACT).astype(bool))
    # exact: booleans; a factor-2 nearest shrink keeps one pixel of every 2x2 block, never a blend
    assert_array_equal(small_mask, mask[1::2, 1::2])


def test_cap_resolution_rounds_the_shorter_side_and_never_enlarges(large):
    image, mask = large
    assert cap_resolution(image, None, 256)[0].shape == (256, round(420 * 256 / 600))
    for max_side in (600, 1000, None):
        same_image, same_mask = cap_resolution(image, mask, max_side)
        assert same_image is image and same_mask is mask  # not copied, not resampled


def test_cap_resolution_refuses_a_mask_of_another_shape(large):
    image, mask = large
    with pytest.raises(ValueError, match=r"mask has shape \(600, 419\) but the image is \(600, 420\)"):
        cap_resolution(image, mask[:, :-1], 300)


# ------------------------------------------------------------------------------------------------
# every family with max_side
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(FAMILY_CASES))
def test_native_resolution_is_the_default_and_unchanged(family, large):
    estimator, core, params = FAMILY_CASES[family]
    image, mask = large
    assert estimator().max_side is None
    native = estimator(cache=False, **params).fit_transform([Sample.from_array(image, mask)])[0]
    # exact: max_side=None runs the same code on the same pixels as the core without the parameter
    assert_array_equal(native, core(image, mask, **params)[0])
    at_native_side = estimator(max_side=600, cache=False, **params).fit_transform([Sample.from_array(image, mask)])
    # exact: a cap at the image's own size is no resampling at all
    assert_array_equal(at_native_side[0], native)


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("family", sorted(FAMILY_CASES))
def test_capped_features_are_the_features_of_the_shrunk_image(family, use_mask, large):
    estimator, core, params = FAMILY_CASES[family]
    image, mask = large
    capped = estimator(max_side=200, use_mask=use_mask, cache=False, **params)
    got = capped.fit_transform([Sample.from_array(image, mask)])[0]
    small, small_mask = cap_resolution(image, mask, 200)
    assert small.shape == (200, 140)
    expected = estimator(use_mask=use_mask, cache=False, **params).fit_transform(
        [Sample.from_array(small, small_mask)])[0]
    assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    native = estimator(use_mask=use_mask, cache=False, **params).fit_transform([Sample.from_array(image, mask)])[0]
    assert not np.allclose(got, native)  # the cap did change the grid


@pytest.mark.parametrize("family", sorted(FAMILY_CASES))
def test_smaller_images_are_not_enlarged(family):
    estimator, _, params = FAMILY_CASES[family]
    image, mask = _texture((120, 90), seed=1)
    sample = Sample.from_array(image, mask)
    native = estimator(cache=False, **params).fit_transform([sample])
    # exact: below the cap the image is used as it is
    assert_array_equal(estimator(max_side=ANALYSIS_MAX_SIDE, cache=False, **params).fit_transform([sample]), native)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "512"])
@pytest.mark.parametrize("estimator", [FirstOrderFeatures, GLCMFeatures, LBPFeatures, BagOfVisualWords])
def test_bad_max_side_is_refused_naming_the_parameter(estimator, bad):
    image, _ = _texture((40, 40))
    with pytest.raises(InvalidParameterError, match=r"'max_side' parameter .* must be None or an int in the range "
                                                     r"\[1, inf\)"):
        estimator(max_side=bad, cache=False).fit([image])


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_dense_descriptors_refuse_a_bad_max_side(bad):
    image, _ = _texture((64, 64))
    with pytest.raises(ValueError, match="max_side"):
        dense_descriptors(image, max_side=bad)


def test_the_cap_is_part_of_the_cache_key(large):
    image, mask = large
    sample = Sample.from_array(image, mask)
    native = GLCMFeatures(use_mask=False).fit_transform([sample])  # in the memory cache now
    capped = clone(GLCMFeatures(use_mask=False)).set_params(max_side=200).fit_transform([sample])
    assert_allclose(capped, GLCMFeatures(use_mask=False, max_side=200, cache=False).fit_transform([sample]))
    assert not np.allclose(capped, native)


# ------------------------------------------------------------------------------------------------
# bag of visual words
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("roi", ["image", "mask"])
def test_dense_descriptors_on_the_capped_grid(roi, large):
    image, mask = large
    got = dense_descriptors(image, mask, roi=roi, max_side=200)
    small, small_mask = cap_resolution(image, mask, 200)
    # exact: the same 8-bit image and keypoints reach OpenCV's ORB
    assert_array_equal(got, dense_descriptors(small, small_mask, roi=roi))
    assert got.shape[0] < dense_descriptors(image, mask, roi=roi).shape[0]
    # exact: no cap and a cap at the native size are the native descriptors
    assert_array_equal(dense_descriptors(image, mask, roi=roi, max_side=600), dense_descriptors(image, mask, roi=roi))


def test_bovw_histograms_on_the_capped_grid(large):
    image, mask = large
    images = [image, _texture((500, 640), seed=3)[0], _texture((380, 380), seed=4)[0]]
    capped = BagOfVisualWords(n_words=4, max_side=200, random_state=0, cache=False).fit(images)
    shrunk = [cap_resolution(im, None, 200)[0] for im in images]
    reference = BagOfVisualWords(n_words=4, random_state=0, cache=False).fit(shrunk)
    assert_allclose(capped.kmeans_.cluster_centers_, reference.kmeans_.cluster_centers_)
    assert_allclose(capped.transform(images), reference.transform(shrunk))


# ------------------------------------------------------------------------------------------------
# the family defaults
# ------------------------------------------------------------------------------------------------
def test_family_factories_cap_the_native_resolution_families():
    assert ANALYSIS_MAX_SIDE == 512
    for name in ("firstorder", "glcm", "lbp"):
        assert FAMILIES[name]().max_side == ANALYSIS_MAX_SIDE
        assert FAMILIES[name](max_side=None).max_side is None  # the caller's value wins
    assert FAMILIES["hog"]().size == (128, 128)  # fixed size: no cap needed
    assert "max_side" not in FAMILIES["shape"]().get_params()  # native pixels (areas, perimeters)
