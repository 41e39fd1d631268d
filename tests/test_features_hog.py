"""HOG features against scikit-image's ``hog`` on OpenCV-resized images.

Tolerances: the same scikit-image call on the same float32 pixels, so the
values are compared exactly.
"""

import pickle

import cv2
import numpy as np
import pytest
from numpy.testing import assert_array_equal
from skimage.feature import hog
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from featurepipe import Sample
from featurepipe.cache import clear_memory_cache
from featurepipe.features.hog import HOGFeatures, hog_feature_names, hog_features, resize_gray

SMALL = dict(size=(32, 32), pixels_per_cell=(8, 8), cells_per_block=(2, 2), orientations=6)


def test_equals_skimage_when_already_at_size(rng):
    x = rng.random((32, 32)).astype(np.float32)
    values, names = hog_features(x, **SMALL)
    ref = hog(x, orientations=6, pixels_per_cell=(8, 8), cells_per_block=(2, 2), block_norm="L2-Hys")
    # exact: the library computes both sides from identical input (ours calls it)
    assert_array_equal(values, ref)
    assert len(names) == len(values) == 3 * 3 * 2 * 2 * 6


@pytest.mark.parametrize("shape, interpolation", [((80, 60), cv2.INTER_AREA), ((20, 50), cv2.INTER_LINEAR)])
def test_resizes_with_opencv_then_skimage_hog(rng, shape, interpolation):
    x = rng.random(shape).astype(np.float32)
    values, _ = hog_features(x, size=(40, 48), pixels_per_cell=(8, 8), block_norm="L1", transform_sqrt=True)
    resized = cv2.resize(x, (48, 40), interpolation=interpolation)
    # exact: the library computes both sides from identical input (ours calls it)
    assert_array_equal(resize_gray(x, (40, 48)), resized)
    ref = hog(resized, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), block_norm="L1",
              transform_sqrt=True)
    # exact: the library computes both sides from identical input (ours calls it)
    assert_array_equal(values, ref)


def test_names_follow_skimage_layout(rng):
    x = rng.random((32, 40)).astype(np.float32)
    size = (32, 40)
    values, names = hog_features(x, size=size, pixels_per_cell=(8, 8), cells_per_block=(2, 3), orientations=4)
    blocks = hog(x, orientations=4, pixels_per_cell=(8, 8), cells_per_block=(2, 3), feature_vector=False)
    assert blocks.shape == (3, 3, 2, 3, 4)
    lookup = dict(zip(names, values))
    assert lookup["hog_b2_1_c1_2_o3"] == blocks[2, 1, 1, 2, 3]
    assert lookup["hog_b0_0_c0_0_o0"] == blocks[0, 0, 0, 0, 0]
    assert len(HOGFeatures().get_feature_names_out()) == 7 * 7 * 2 * 2 * 9  # 1764 at the defaults
    assert hog_feature_names(**{k: v for k, v in SMALL.items()})[-1] == "hog_b2_2_c1_1_o5"


def test_mask_crops_and_zeroes_outside(rng):
    x = rng.random((50, 60)).astype(np.float32)
    mask = np.zeros((50, 60), bool)
    yy, xx = np.mgrid[:50, :60]
    mask[(yy - 25) ** 2 + (xx - 30) ** 2 < 15**2] = True
    values, _ = hog_features(x, mask, **SMALL)
    crop = np.where(mask, x, 0)[11:40, 16:45]  # bounding box of the disc: |dy|, |dx| <= 14
    assert mask[11:40, 16:45].sum() == mask.sum() and mask[11].any() and mask[:, 16].any() and mask[39].any()
    # the 29x29 box is enlarged to 32x32: INTER_LINEAR
    ref = hog(cv2.resize(crop, (32, 32), interpolation=cv2.INTER_LINEAR), orientations=6, pixels_per_cell=(8, 8),
              cells_per_block=(2, 2))
    # exact: the library computes both sides from identical input (ours calls it)
    assert_array_equal(values, ref)
    other = x.copy()
    other[~mask] = rng.random(int((~mask).sum()))
    # exact: pixels outside the mask never enter the arithmetic
    assert_array_equal(hog_features(other, mask, **SMALL)[0], values)


def test_empty_mask_policies(rng):
    x = rng.random((32, 32)).astype(np.float32)
    empty = np.zeros((32, 32), bool)
    with pytest.raises(ValueError, match="empty"):
        hog_features(x, empty, **SMALL)
    values, names = hog_features(x, empty, empty_mask="nan", **SMALL)
    assert len(values) == len(names) and np.isnan(values).all()
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal(hog_features(x, empty, empty_mask="image", **SMALL)[0], hog_features(x, **SMALL)[0])


def test_colour_policy_and_negative_values(rng):
    rgb = rng.integers(0, 256, size=(32, 32, 3)).astype(np.uint8)
    image = Sample.from_array(rgb).image
    gray = (image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.float32)
    # exact: the test's gray is the very expression to_gray uses (same arithmetic)
    assert_array_equal(hog_features(image, **SMALL)[0], hog_features(gray, **SMALL)[0])
    with pytest.raises(ValueError, match="transform_sqrt"):
        hog_features(gray - 0.5, transform_sqrt=True, **SMALL)


@pytest.mark.parametrize("params, match", [
    ({"size": 0}, "size"),
    ({"size": (32, 32, 3)}, "size"),
    ({"pixels_per_cell": (8.5, 8)}, "pixels_per_cell"),
    ({"cells_per_block": "2"}, "cells_per_block"),
    ({"orientations": 0}, "orientations"),
    ({"block_norm": "L3"}, "block_norm"),
    ({"transform_sqrt": 1}, "transform_sqrt"),
    ({"size": 16, "pixels_per_cell": 16, "cells_per_block": 2}, "fewer than one block"),
    ({"empty_mask": None}, "empty_mask"),
])
def test_bad_parameters_are_named(params, match):
    ext = HOGFeatures(**params)
    with pytest.raises(ValueError, match=match):
        ext.fit([np.zeros((8, 8), np.float32)])


def test_estimator_cache_clone_pickle_grid_search(rng):
    clear_memory_cache()
    X, y = [], []
    for k in range(12):  # horizontal vs vertical stripes, random phase and noise
        phase = rng.integers(0, 8)
        stripes = ((np.arange(48) + phase) % 8 < 4).astype(np.float32)
        img = np.tile(stripes, (48, 1)) if k % 2 else np.tile(stripes[:, None], (1, 48))
        X.append((0.8 * img + 0.2 * rng.random((48, 48))).astype(np.float32))
        y.append(k % 2)
    y = np.array(y)
    ext = HOGFeatures(**SMALL)
    out = ext.fit_transform(X)
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal(out, np.vstack([hog_features(x, **SMALL)[0] for x in X]))
    # exact: the cache returns the very bytes it stored
    assert_array_equal(ext.transform(X), out)
    # exact: pickle/clone round trip of the same fitted object
    assert_array_equal(pickle.loads(pickle.dumps(ext)).transform(X), out)
    assert clone(ext).set_params(orientations=4).orientations == 4 and ext.orientations == 6
    pipe = Pipeline([("hog", HOGFeatures(size=(32, 32), cells_per_block=(1, 1))), ("clf", LinearSVC())])
    search = GridSearchCV(pipe, {"hog__pixels_per_cell": [(8, 8), (16, 16)], "hog__orientations": [4, 8]},
                          cv=StratifiedKFold(3))
    search.fit(X, y)
    assert search.best_score_ == 1.0  # exact: mean of accuracies that are all 1
    # exact: predicted class labels
    assert_array_equal(search.predict(X), y)
