"""Bag of visual words: dense descriptors vs OpenCV, codebook, histograms, caching, sklearn contract."""

import pickle

import cv2
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.cluster import MiniBatchKMeans
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

import featurepipe.features.bovw as bovw_module
from featurepipe import Sample
from featurepipe.cache import clear_memory_cache
from featurepipe.features.bovw import BagOfVisualWords, dense_descriptors, dense_keypoints


def _texture(axis, rng, shape=(64, 64), period=40):
    """Sawtooth ramps along columns ("x") or rows ("y"), random phase, light noise.

    Upright ORB descriptors of the two are very different (intensity rises to the
    right vs downwards), so an 8-word codebook gives them disjoint words.
    """
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    coord = xx if axis == "x" else yy
    img = ((coord + rng.uniform(0, period)) % period) / period * 0.8 + 0.1
    img = img + 0.03 * rng.standard_normal(shape)
    return np.clip(img, 0, 1).astype(np.float32)


def _two_class(n_per_class, seed):
    rng = np.random.default_rng(seed)
    X, y = [], []
    for label, axis in enumerate(("x", "y")):
        for _ in range(n_per_class):
            X.append(Sample.from_array(_texture(axis, rng), label=label))
            y.append(label)
    return np.array(X, dtype=object), np.array(y)


# --------------------------------------------------------------------------- descriptors
def test_grid_keypoints():
    xy = dense_keypoints((50, 70), "orb", grid_step=8, patch_size=16)
    xs, ys = np.arange(16, 54, 8), np.arange(16, 34, 8)
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(xy, [[x, y] for y in ys for x in xs])
    xy = dense_keypoints((50, 70), "sift", grid_step=10, patch_size=16)
    assert xy[0].tolist() == [8, 8] and xy[-1].tolist() == [58, 38]
    mask = np.zeros((50, 70), bool)
    mask[20:40, 30:50] = True
    inside = dense_keypoints((50, 70), "orb", 8, 16, mask=mask)
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(inside, [[x, y] for y in (24, 32) for x in (32, 40, 48)])
    with pytest.raises(ValueError, match=r"image \(20x20 pixels, W x H\) is too small .*patch_size=16.*32"):
        dense_keypoints((20, 20), "orb", 8, 16)


@pytest.mark.parametrize("descriptor", ["orb", "sift"])
def test_descriptors_equal_opencv_computed_directly(descriptor):
    rng = np.random.default_rng(0)
    rgb = rng.random((60, 72, 3)).astype(np.float32)
    ours = dense_descriptors(rgb, descriptor=descriptor, grid_step=12, patch_size=16)
    # Reference: BT.601 gray, 8 bits, keypoints built by hand, OpenCV's compute.
    gray = np.clip(np.rint((rgb.astype(np.float64) @ [0.299, 0.587, 0.114]) * 255), 0, 255).astype(np.uint8)
    margin = 16 if descriptor == "orb" else 8
    size = 16.0 if descriptor == "orb" else 16 / 6  # SIFT's descriptor spans 6 x its keypoint size
    keypoints = [cv2.KeyPoint(float(x), float(y), size, 0.0)
                 for y in range(margin, 60 - margin, 12) for x in range(margin, 72 - margin, 12)]
    extractor = (cv2.ORB_create(edgeThreshold=16, patchSize=16) if descriptor == "orb" else cv2.SIFT_create())
    kept, reference = extractor.compute(gray, keypoints)
    assert len(kept) == len(keypoints) == len(ours)
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(ours, reference)
    assert ours.dtype == (np.uint8 if descriptor == "orb" else np.float32)


@pytest.mark.parametrize("descriptor", ["orb", "sift"])
def test_patch_size_is_the_described_neighbourhood(descriptor):
    # One keypoint at (48, 48): pixels more than patch_size / 2 + 7 away (OpenCV's smoothing and
    # SIFT's half-cell interpolation add a few pixels; measured: 10 for ORB, 14 for SIFT) do not
    # change its descriptor; replacing the central patch_size / 2 square does.
    rng = np.random.default_rng(11)
    centre = np.zeros((96, 96), bool)
    centre[48, 48] = True
    img = rng.random((96, 96)).astype(np.float32)
    other = rng.random((96, 96)).astype(np.float32)

    def describe(x):
        return dense_descriptors(x, centre, roi="mask", descriptor=descriptor, grid_step=8, patch_size=16)

    base = describe(img)
    assert base.shape[0] == 1
    near = np.zeros((96, 96), bool)
    near[48 - 15:48 + 16, 48 - 15:48 + 16] = True
    # exact: pixels outside the mask never enter the arithmetic
    np.testing.assert_array_equal(describe(np.where(near, img, other)), base)
    core = np.zeros((96, 96), bool)
    core[48 - 8:48 + 9, 48 - 8:48 + 9] = True
    assert not np.array_equal(describe(np.where(core, other, img)), base)


def test_mask_roi_and_empty_mask_policy():
    rng = np.random.default_rng(1)
    img = rng.random((64, 64)).astype(np.float32)
    mask = np.zeros((64, 64), bool)
    mask[20:44, 20:44] = True
    ours = dense_descriptors(img, mask, roi="mask")
    full = dense_descriptors(img)
    grid = dense_keypoints((64, 64), "orb", 8, 16)
    keep = mask[grid[:, 1].astype(int), grid[:, 0].astype(int)]
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(ours, full[keep])
    # Pixels outside the mask but inside the patches still matter (patches are not masked);
    # pixels farther than the patch radius from every kept keypoint do not.
    other = img.copy()
    other[:4] = rng.random((4, 64))
    # exact: pixels outside the mask never enter the arithmetic
    np.testing.assert_array_equal(dense_descriptors(other, mask, roi="mask"), ours)

    with pytest.raises(ValueError, match="roi='mask' needs keypoints inside a mask but the mask is empty"):
        dense_descriptors(img, np.zeros_like(mask), roi="mask")
    with pytest.raises(ValueError, match="the image has no mask"):
        dense_descriptors(img, None, roi="mask")
    tiny = np.zeros_like(mask)
    tiny[21, 21] = True
    with pytest.raises(ValueError, match="no keypoint of the grid"):
        dense_descriptors(img, tiny, roi="mask")
    assert dense_descriptors(img, tiny, roi="mask", empty_mask="nan").shape == (0, 32)
    for bad_mask in (tiny, None, np.zeros_like(mask)):
        # exact: the same function on the same input (one code path, one process)
        np.testing.assert_array_equal(dense_descriptors(img, bad_mask, roi="mask", empty_mask="image"), full)

    X = [Sample.from_array(img, mask=mask), Sample.from_array(_texture("x", rng), mask=mask),
         Sample.from_array(img * 0.5, mask=np.zeros_like(mask))]
    est = BagOfVisualWords(n_words=4, roi="mask", empty_mask="nan", random_state=0)
    H = est.fit_transform(X)
    assert np.all(np.isnan(H[2])) and np.allclose(H[:2].sum(axis=1), 1.0)
    assert est.n_descriptors_fit_ == 2 * len(ours)  # the empty-mask image gave the codebook nothing
    with pytest.raises(ValueError, match="BagOfVisualWords on sample .*the mask is empty"):
        BagOfVisualWords(n_words=4, roi="mask", random_state=0).fit(X)


# --------------------------------------------------------------------------- codebook and histograms
def test_histograms_are_normalised_word_counts_of_the_codebook():
    X, _ = _two_class(3, seed=2)
    est = BagOfVisualWords(n_words=12, random_state=0, cache=False)
    H = est.fit(X).transform(X)
    assert H.shape == (6, 12)
    np.testing.assert_allclose(H.sum(axis=1), 1.0, rtol=1e-12)
    for row, sample in zip(H, X):
        bits = np.unpackbits(dense_descriptors(sample.image), axis=1).astype(np.float32)
        # Reference assignment: nearest codebook centre by brute force.
        d2 = ((bits[:, None, :] - est.kmeans_.cluster_centers_[None]) ** 2).sum(-1)
        expected = np.bincount(d2.argmin(axis=1), minlength=12) / len(bits)
        np.testing.assert_allclose(row, expected, atol=1e-12)
    # The codebook is scikit-learn's MiniBatchKMeans on all descriptors (fewer than max_descriptors).
    all_bits = np.vstack([np.unpackbits(dense_descriptors(s.image), axis=1) for s in X]).astype(np.float32)
    assert est.n_descriptors_fit_ == len(all_bits)
    with threadpool_limits(limits=1):  # as BagOfVisualWords does (speed only)
        reference = MiniBatchKMeans(n_clusters=12, random_state=np.random.RandomState(0)).fit(all_bits)
    np.testing.assert_allclose(est.kmeans_.cluster_centers_, reference.cluster_centers_)
    assert list(est.get_feature_names_out()[[0, 11]]) == ["bovw_orb_000", "bovw_orb_011"]


def test_determinism_and_subsampling():
    X, _ = _two_class(3, seed=3)
    params = dict(n_words=10, grid_step=2, max_descriptors=500)  # 16 x 16 keypoints per image
    a = BagOfVisualWords(**params, random_state=7).fit_transform(X)
    b = BagOfVisualWords(**params, random_state=7).fit(X).transform(X)
    # exact: same random_state, same code path
    np.testing.assert_array_equal(a, b)
    est = BagOfVisualWords(**params, random_state=8).fit(X)
    assert est.n_descriptors_fit_ == 500
    assert not np.array_equal(est.transform(X), a)


def test_two_texture_image_uses_words_of_both_textures():
    rng = np.random.default_rng(4)
    train = [_texture("x", rng) for _ in range(3)] + [_texture("y", rng) for _ in range(3)]
    est = BagOfVisualWords(n_words=8, random_state=0).fit(train)
    H = est.transform(train)
    words_x, words_y = H[:3].sum(axis=0) > 0, H[3:].sum(axis=0) > 0
    assert not np.any(words_x & words_y)  # the codebook separates the two textures
    # Left half one texture, right half the other: its words come from both regions of the codebook.
    mixed = np.hstack([_texture("x", rng, (64, 48)), _texture("y", rng, (64, 48))])
    h = est.transform([mixed])[0]
    assert h[words_x].sum() > 0.3 and h[words_y].sum() > 0.3
    assert h[words_x | words_y].sum() > 0.9


# --------------------------------------------------------------------------- state, caching
def test_transform_before_fit_and_after_changing_params():
    X, _ = _two_class(2, seed=5)
    with pytest.raises(NotFittedError):
        BagOfVisualWords(n_words=4).transform(X)
    est = BagOfVisualWords(n_words=4, random_state=0).fit(X)
    est.set_params(n_words=5)
    with pytest.raises(NotFittedError, match="changed since fit"):
        est.transform(X)


def test_descriptors_cached_per_sample_histograms_not(monkeypatch):
    clear_memory_cache()
    calls = []
    original = bovw_module.dense_descriptors

    def counting(image, mask=None, **kwargs):
        calls.append(1)
        return original(image, mask, **kwargs)

    monkeypatch.setattr(bovw_module, "dense_descriptors", counting)
    X, _ = _two_class(3, seed=6)
    est = BagOfVisualWords(n_words=6, random_state=0)
    first = est.fit(X[:4]).transform(X)
    assert len(calls) == 6  # 4 in fit, the 2 others in transform
    # Refit on another "fold": no descriptor is recomputed, but the histograms follow the new codebook.
    second = est.fit(X[2:]).transform(X)
    assert len(calls) == 6
    assert not np.array_equal(first, second)
    uncached = BagOfVisualWords(n_words=6, random_state=0, cache=False).fit(X[2:]).transform(X)
    # exact: same random_state, same code path
    np.testing.assert_array_equal(second, uncached)
    assert len(calls) == 6 + 4 + 6
    # A clone with other codebook parameters reuses the same cached descriptors.
    clone(est).set_params(n_words=3).fit(X)
    assert len(calls) == 16
    # Descriptor parameters are part of the descriptors' cache key.
    clone(est).set_params(grid_step=9).fit(X)
    assert len(calls) == 22


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(n_words=1), r"'n_words' parameter of BagOfVisualWords must be an int in the range \[2, inf\)\. Got 1"),
        (dict(descriptor="surf"),
         r"'descriptor' parameter of BagOfVisualWords must be a str among \{(?=.*'orb')(?=.*'sift').*\}\. Got 'surf'"),
        (dict(grid_step=0), r"'grid_step' parameter of BagOfVisualWords must be an int in the range \[1, inf\)\. "
                            "Got 0"),
        (dict(patch_size=4), r"'patch_size' parameter of BagOfVisualWords must be an int in the range \[8, inf\)\. "
                             "Got 4"),
        (dict(roi="bbox"),
         r"'roi' parameter of BagOfVisualWords must be a str among \{(?=.*'image')(?=.*'mask').*\}\. Got 'bbox'"),
        (dict(empty_mask="skip"), r"'empty_mask' parameter of BagOfVisualWords must be a str among "
                                  r"\{(?=.*'error')(?=.*'nan')(?=.*'image').*\}\. Got 'skip'"),
        (dict(max_descriptors=3), r"max_descriptors must be an int >= 64 \(at least n_words\) or None"),
    ],
)
def test_bad_parameters_are_named(params, match):
    with pytest.raises(ValueError, match=match):
        BagOfVisualWords(**params).fit([np.zeros((64, 64), np.float32)])


def test_too_few_descriptors_for_the_codebook():
    with pytest.raises(ValueError, match="n_words=64 but the training images gave only 9 descriptors"):
        BagOfVisualWords(n_words=64).fit([np.zeros((56, 56), np.float32)])


# --------------------------------------------------------------------------- sklearn contract
def test_clone_params_pickle_and_grid_search():
    X, y = _two_class(8, seed=7)
    est = BagOfVisualWords(n_words=8, grid_step=12, random_state=0)
    assert est.get_params()["grid_step"] == 12
    twin = clone(est).set_params(n_words=16)
    assert (twin.n_words, est.n_words) == (16, 8)
    assert not hasattr(clone(est.fit(X)), "kmeans_")  # clone is unfitted
    restored = pickle.loads(pickle.dumps(est))
    # exact: pickle/clone round trip of the same fitted object
    np.testing.assert_array_equal(restored.transform(X), est.transform(X))

    pipe = make_pipeline(BagOfVisualWords(grid_step=8, random_state=0), LogisticRegression(max_iter=2000))
    search = GridSearchCV(pipe, {"bagofvisualwords__n_words": [4, 16]},
                          cv=StratifiedKFold(4, shuffle=True, random_state=0))
    search.fit(X, y)
    assert list(search.cv_results_["param_bagofvisualwords__n_words"]) == [4, 16]
    # Ramps along x vs along y give different upright ORB words.
    assert search.best_score_ == 1.0  # exact: mean of accuracies that are all 1
    # exact: predicted class labels
    np.testing.assert_array_equal(search.predict(X), y)
    assert search.best_estimator_[0].kmeans_.n_clusters == search.best_params_["bagofvisualwords__n_words"]
