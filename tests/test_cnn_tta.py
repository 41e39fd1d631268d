"""CNNFeatures(tta=...): test-time augmentation pooled in feature space, against hand-made views."""

import warnings

import numpy as np
import pytest

pytest.importorskip("keras")

from sklearn.base import clone

from featurepipe.base import step_token
from featurepipe.cache import clear_memory_cache
from featurepipe.cnn import CNNFeatures
from featurepipe.cnn.preprocessing import TTA_PRESETS, TTA_VIEWS, tta_view, tta_view_names

# Features of one image computed in two network batches of different composition: float32
# convolutions may be summed in another order (another BLAS kernel per batch size), so values
# agree to a few float32 ulp of the largest feature; we allow 1e-5 of it.
RTOL = 1e-5


@pytest.fixture(autouse=True)
def _quiet_random_weights():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"CNNFeatures\(.*weights=None", category=UserWarning)
        yield


def _extractor(**params):
    # A tiny random network at 32x32: features only need to be a fixed function of the pixels.
    return CNNFeatures("mobilenet", weights=None, input_size=32, cache=False, **params)


def _images():
    rng = np.random.default_rng(3)
    return [rng.uniform(0, 1, (40, 48)).astype(np.float32),       # grayscale, not square
            rng.uniform(0, 1, (50, 30, 3)).astype(np.float32)]    # colour, portrait


def _hand_made_views(image):
    """identity, mirror, then the 90 % crops (centre, top-left, top-right, bottom-left, bottom-right)."""
    h, w = image.shape[:2]
    ch, cw = round(0.9 * h), round(0.9 * w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return [image, np.fliplr(image), image[top:top + ch, left:left + cw], image[:ch, :cw], image[:ch, w - cw:],
            image[h - ch:, :cw], image[h - ch:, w - cw:]]


def _assert_close(got, expected):
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=RTOL * scale)


def test_views_are_the_hand_made_flip_and_crops():
    image = np.arange(40 * 48, dtype=np.float32).reshape(40, 48)
    assert TTA_PRESETS["flip_crops"] == TTA_VIEWS and len(TTA_VIEWS) == 7
    for view, expected in zip(TTA_VIEWS, _hand_made_views(image)):
        # exact: views copy or select pixels, nothing is interpolated
        np.testing.assert_array_equal(tta_view(image, view), expected)
    assert tta_view(image, "crop_center").shape == (36, 43)  # round(0.9 * 40), round(0.9 * 48)


@pytest.mark.parametrize("tta, n_views", [("flip", 2), ("flip_crops", 7), (("hflip", "crop_bottom_left"), None)])
def test_tta_features_are_the_mean_over_hand_made_views(tta, n_views):
    images = _images()
    plain = _extractor()
    with_tta = _extractor(tta=tta).transform(images)
    for row, image in zip(with_tta, images):
        views = _hand_made_views(image)
        if n_views is None:  # the chosen views: mirror (1) and bottom-left crop (5)
            views = [views[1], views[5]]
        else:
            views = views[:n_views]
        _assert_close(row, plain.transform(views).mean(axis=0))
    assert with_tta.shape == (2, 1024) and with_tta.dtype == np.float64


def test_batch_size_smaller_than_the_views():
    images = _images() * 2
    one = _extractor(tta="flip_crops", batch_size=1).transform(images)  # one view per network call
    many = _extractor(tta="flip_crops", batch_size=32, n_jobs=2).transform(images)
    _assert_close(one, many)


def test_identity_only_equals_no_tta():
    images = _images()
    # exact: the same network calls on the same batches, and the mean of one view is that view
    np.testing.assert_array_equal(_extractor(tta=["identity"]).transform(images), _extractor().transform(images))
    assert tta_view_names(None) == ("identity",)


def test_tta_enters_the_cache_key():
    clear_memory_cache()
    images = _images()
    cached = CNNFeatures("mobilenet", weights=None, input_size=32)
    plain = cached.transform(images)
    flipped = clone(cached).set_params(tta="flip").transform(images)  # must not be served the plain entries
    assert step_token(cached) != step_token(clone(cached).set_params(tta="flip"))
    assert step_token(clone(cached).set_params(tta="flip")) != step_token(clone(cached).set_params(tta="flip_crops"))
    # (random-weight features are tiny, ~1e-21, so compare relative to their scale)
    assert np.abs(plain - flipped).max() > 1e-3 * np.abs(plain).max()
    _assert_close(flipped, _extractor(tta="flip").transform(images))
    assert list(cached.get_feature_names_out()) == list(clone(cached).set_params(tta="flip").get_feature_names_out())


@pytest.mark.parametrize("tta", ["flips", (), ("hflip", "hflip"), ("rotate90",), 3])
def test_bad_tta_is_named(tta):
    with pytest.raises(ValueError, match=r"tta"):
        _extractor(tta=tta).fit(_images())


def test_class_activation_map_refuses_tta():
    from sklearn.linear_model import LogisticRegression

    from featurepipe.cnn.cam import class_activation_map

    with pytest.raises(ValueError, match=r"class_activation_map .*tta=None.*tta='flip'"):
        class_activation_map(LogisticRegression(), _images()[0], extractor=_extractor(tta="flip"))
