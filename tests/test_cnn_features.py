"""CNNFeatures against the raw Keras models, pooling and layer taps by hand, cache, clone and pickle."""

import os
import pickle
import urllib.error
import warnings

import cv2
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from featurepipe.base import step_token
from featurepipe.cache import clear_memory_cache
from featurepipe.cnn import (
    CNNFeatures,
    clear_model_cache,
    get_backbone,
    list_backbones,
    load_backbone,
)
from featurepipe.cnn.extractor import pool_feature_map
from featurepipe.cnn.preprocessing import prepare_image
from featurepipe.io import ImageReadError
from featurepipe.sample import Sample

BUILTINS = [
    "densenet121", "efficientnet_b0", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
    "inception_v3", "mobilenet", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "nasnet_mobile",
    "resnet50", "resnet50_v2", "vgg16", "vgg19", "xception",
]

# Relative tolerance of CNNFeatures (one tf.function per batch) against the eager Keras call pooled
# in NumPy: the graph may fuse or reorder float32 operations, so values agree to ~1e-6 of the
# largest feature; we allow 1e-4 of it.
RTOL = 1e-4


@pytest.fixture(autouse=True)
def _model_cache(tmp_path_factory, monkeypatch):
    """Models converted for a fast runtime (runtime="auto") go to a test folder, not the user's cache."""
    monkeypatch.setenv("FEATUREPIPE_CACHE", str(tmp_path_factory.getbasetemp() / "fpcache"))


def _size(name):
    # Small inputs with a 2x2 (or larger) last feature map where the architecture allows.
    return max(64, get_backbone(name).min_input_size)


def _images(size, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 1, (size, size)).astype(np.float32),      # grayscale
            rng.uniform(0, 1, (size, size, 3)).astype(np.float32)]  # colour


def _raw_feature_maps(name, images, size):
    model = load_backbone(name, None, size)
    rgb = np.stack([np.repeat(im[:, :, None], 3, axis=2) if im.ndim == 2 else im for im in images])
    return model(get_backbone(name).preprocess(rgb * np.float32(255.0)), training=False).numpy()


def _assert_close(got, expected):
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=RTOL * scale)


@pytest.fixture(autouse=True)
def _quiet_random_weights():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"CNNFeatures\(.*weights=None", category=UserWarning)
        yield


def test_every_builtin_backbone_is_covered():
    assert set(BUILTINS) <= set(list_backbones())


@pytest.mark.parametrize("name", BUILTINS)
def test_features_equal_the_raw_keras_pooled_output(name):
    # The slowest part of the suite (building and tracing 16 networks: ~60 s on 2 busy cores).
    size = _size(name)
    images = _images(size)
    features = CNNFeatures(name, weights=None, input_size=size, cache=False).transform(images)
    maps = _raw_feature_maps(name, images, size)
    assert maps.shape[3] == get_backbone(name).output_dim
    expected = maps.mean(axis=(1, 2))
    assert features.shape == (2, get_backbone(name).output_dim)
    # Random networks give tiny features; still, the two images must give clearly different ones.
    assert np.abs(expected[0] - expected[1]).max() > 1e-2 * np.abs(expected).max()
    _assert_close(features, expected)


def test_max_and_gem_pooling_against_hand_computation():
    name, size = "resnet50", 64
    images = _images(size, seed=1)
    maps = _raw_feature_maps(name, images, size).astype(np.float64)
    assert maps.shape[1:3] == (2, 2)
    got_max = CNNFeatures(name, weights=None, input_size=size, pooling="max", cache=False).transform(images)
    _assert_close(got_max, maps.max(axis=(1, 2)))
    for p in (3.0, 1.5):
        got = CNNFeatures(name, weights=None, input_size=size, pooling="gem", gem_p=p, cache=False).transform(images)
        clipped = np.maximum(maps, 1e-6)
        hand = (sum(clipped[:, i, j, :] ** p for i in range(2) for j in range(2)) / 4.0) ** (1.0 / p)
        _assert_close(got, hand)
    # GeM with p = 1 is average pooling of the clipped map.
    np.testing.assert_allclose(pool_feature_map(maps, "gem", 1.0), np.maximum(maps, 1e-6).mean(axis=(1, 2)))


def test_layer_taps_by_name_depth_and_list():
    name, size = "vgg16", 64
    images = _images(size, seed=2)
    model = load_backbone(name, None, size)
    taps = keras.Model(model.input, [model.get_layer("block3_conv3").output, model.get_layer("block4_pool").output])
    rgb = np.stack([np.repeat(images[0][:, :, None], 3, axis=2), images[1]]) * np.float32(255.0)
    block3, block4 = [m.numpy() for m in taps(get_backbone(name).preprocess(rgb), training=False)]
    assert block3.shape == (2, 16, 16, 256) and block4.shape == (2, 4, 4, 512)

    by_name = CNNFeatures(name, weights=None, input_size=size, layer="block3_conv3", cache=False)
    _assert_close(by_name.transform(images), block3.mean(axis=(1, 2)))
    depth = [lyr.name for lyr in model.layers].index("block4_pool")
    by_depth = CNNFeatures(name, weights=None, input_size=size, layer=depth, cache=False)
    _assert_close(by_depth.transform(images), block4.mean(axis=(1, 2)))
    negative = CNNFeatures(name, weights=None, input_size=size, layer=depth - len(model.layers), cache=False)
    _assert_close(negative.transform(images), block4.mean(axis=(1, 2)))

    both = CNNFeatures(name, weights=None, input_size=size, layer=["block3_conv3", depth], pooling="max",
                       cache=False)
    got = both.transform(images)
    _assert_close(got, np.hstack([block3.max(axis=(1, 2)), block4.max(axis=(1, 2))]))
    names = both.get_feature_names_out()
    assert len(names) == 256 + 512 == got.shape[1]
    assert names[0] == "cnn_vgg16_block3_conv3_0000" and names[-1] == "cnn_vgg16_block4_pool_0511"


def test_feature_names():
    f = CNNFeatures("mobilenet_v2", weights=None, input_size=64)
    names = f.get_feature_names_out()
    assert names.shape == (1280,)
    assert names[0] == "cnn_mobilenet_v2_0000" and names[17] == "cnn_mobilenet_v2_0017"


def test_resizing_and_grayscale_conversion():
    rng = np.random.default_rng(3)
    big = rng.uniform(0, 1, (90, 120)).astype(np.float32)
    small = rng.uniform(0, 1, (20, 30, 3)).astype(np.float32)
    got = prepare_image(big, (64, 64))
    shrunk = cv2.resize(big, (64, 64), interpolation=cv2.INTER_AREA) * 255.0
    np.testing.assert_allclose(got, np.repeat(shrunk[:, :, None], 3, axis=2), rtol=1e-6, atol=1e-4)
    grown = cv2.resize(small, (64, 64), interpolation=cv2.INTER_LINEAR) * 255.0
    np.testing.assert_allclose(prepare_image(small, (64, 64)), grown, rtol=1e-6, atol=1e-4)
    # Gray image == the same image replicated to RGB; features of a resized image == resize then extract.
    f = CNNFeatures("mobilenet", weights=None, input_size=64, cache=False)
    gray = rng.uniform(0, 1, (64, 64)).astype(np.float32)
    a, b = f.transform([gray, np.repeat(gray[:, :, None], 3, axis=2)])
    _assert_close(a, b)
    direct = f.transform([big])
    _assert_close(direct, f.transform([np.repeat(shrunk[:, :, None] / 255.0, 3, axis=2).astype(np.float32)]))


def test_batch_size_does_not_change_features():
    images = _images(64, seed=4) + _images(64, seed=5) + _images(64, seed=6)
    one = CNNFeatures("mobilenet_v2", weights=None, input_size=64, batch_size=1, cache=False).transform(images)
    many = CNNFeatures("mobilenet_v2", weights=None, input_size=64, batch_size=4, n_jobs=2,
                       cache=False).transform(images)
    _assert_close(one, many)


def test_cache_hit_returns_identical_values(monkeypatch):
    clear_memory_cache()
    images = _images(64, seed=7)
    f = CNNFeatures("mobilenet_v2", weights=None, input_size=64)
    first = f.transform(images)
    calls = []
    original = CNNFeatures._extract_many
    monkeypatch.setattr(CNNFeatures, "_extract_many", lambda self, s: calls.append(len(s)) or original(self, s))
    again = clone(f).transform(images[::-1])
    assert calls == []  # served from the cache, no network call
    # exact: the cache returns the very bytes it stored
    np.testing.assert_array_equal(again, first[::-1])
    uncached = clone(f).set_params(cache=False).transform(images)
    assert calls == [2]
    # exact: the same function on the same input (one code path, one process)
    np.testing.assert_array_equal(uncached, first)


def test_cache_keys(tmp_path):
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"x")
    a = step_token(CNNFeatures("vgg16", weights=str(weights)))
    os.utime(weights, ns=(1_000_000_000, 1_000_000_000))
    b = step_token(CNNFeatures("vgg16", weights=str(weights)))
    assert a != b and "w.weights.h5" in a  # a changed file is a different network
    random = step_token(CNNFeatures("vgg16", weights=None))
    pretrained = step_token(CNNFeatures("vgg16", weights="imagenet"))
    assert "weights:random" in random and random != pretrained
    # Parameters that cannot change the output are not part of the key.
    assert step_token(CNNFeatures("vgg16", batch_size=3, n_jobs=2, cache=False)) == pretrained


def test_weights_none_warns():
    f = CNNFeatures("mobilenet", weights=None, input_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="random weights, so its features are meaningless"):
            f.fit(_images(32))


@pytest.mark.parametrize("params, message", [
    ({"backbone": "alexnet"}, r"CNNFeatures: backbone must be a registered backbone \(unknown backbone 'alexnet'.*"
                              r"got 'alexnet'"),
    ({"pooling": "sum"}, r"'pooling' parameter of CNNFeatures must be a str among "
                         r"\{(?=.*'avg')(?=.*'max')(?=.*'gem').*\}\. Got 'sum'"),
    ({"gem_p": 0}, r"'gem_p' parameter of CNNFeatures must be a float in the range \(0\.0, inf\)\. Got 0 instead"),
    ({"input_size": 16}, r"input_size must be .*>= 32.*; got 16"),
    ({"backbone": "xception", "input_size": 64}, r"input_size must be .*>= 71 .*'xception'.*; got 64"),
    ({"input_size": (64, "a")}, r"input_size must be .*; got \(64, 'a'\)"),
    ({"layer": []}, r"layer must be None, a layer name.*; got \[\]"),
    ({"layer": 2.5}, r"'layer' parameter of CNNFeatures must be None, an instance of 'str', an int.*Got 2\.5"),
    ({"batch_size": 0}, r"'batch_size' parameter of CNNFeatures must be an int in the range \[1, inf\)\. Got 0"),
    ({"weights": "/no/such/file.h5"}, r"weights must be .*existing weights file.*; got '/no/such/file.h5'"),
    ({"n_jobs": 0}, r"'n_jobs' parameter of CNNFeatures must be None, a int among \{-1\} or an int in "
                    r"the range \[1, inf\)\. Got 0"),
    ({"precision": "float16"}, r"'precision' parameter of CNNFeatures must be a str among "
                               r"\{(?=.*'float32')(?=.*'bfloat16')(?=.*'mixed_float16')(?=.*'mixed_bfloat16').*\}\. "
                               r"Got 'float16'"),
])
def test_bad_parameters_are_named(params, message):
    f = CNNFeatures(**{"weights": None, **params})
    assert f.get_params()[next(iter(params))] == params[next(iter(params))]  # __init__ stores unchanged
    with pytest.raises(ValueError, match=message):
        f.fit(_images(32))


def test_bad_layer_and_bad_file_are_named(tmp_path):
    f = CNNFeatures("mobilenet", weights=None, input_size=64, layer="no_such_layer", cache=False)
    with pytest.raises(ValueError, match=r"layer 'no_such_layer' is not a layer of backbone 'mobilenet'"):
        f.transform(_images(64))
    f = CNNFeatures("mobilenet", weights=None, input_size=64, layer=-1000, cache=False)
    with pytest.raises(ValueError, match=r"layer depth -1000 is out of range"):
        f.transform(_images(64))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageReadError, match="broken.png"):
        CNNFeatures("mobilenet", weights=None, input_size=64, cache=False).transform([Sample.from_path(bad)])


def test_pickled_pipeline_reloads_and_predicts_without_network(monkeypatch, tmp_path):
    import joblib
    from keras.src.utils import file_utils

    rng = np.random.default_rng(8)
    images = [rng.uniform(0, 1, (40, 40)).astype(np.float32) * (0.3 if i % 2 else 1.0) for i in range(8)]
    y = np.arange(8) % 2
    pipe = make_pipeline(CNNFeatures("efficientnet_lite0", input_size=32, cache=False), StandardScaler(),
                         LogisticRegression(max_iter=1000))
    pipe.fit(images, y)
    expected = pipe.decision_function(images)
    blob = pickle.dumps(pipe)
    assert len(blob) < 200_000  # parameters and the fitted scaler/classifier, never the network

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    clear_model_cache()
    reloaded = pickle.loads(blob)
    np.testing.assert_allclose(reloaded.decision_function(images), expected, rtol=1e-6, atol=1e-6)
    joblib.dump(pipe, tmp_path / "pipe.joblib")
    clear_model_cache()
    from_joblib = joblib.load(tmp_path / "pipe.joblib")
    np.testing.assert_allclose(from_joblib.decision_function(images), expected, rtol=1e-6, atol=1e-6)
    twin = clone(pipe)
    assert twin.get_params()["cnnfeatures__backbone"] == "efficientnet_lite0"
    assert twin.steps[0][1].get_params() == pipe.steps[0][1].get_params()


@pytest.mark.parametrize("precision, rtol", [("mixed_float16", 3e-3), ("mixed_bfloat16", 3e-2)])
def test_mixed_precision_is_close_to_float32(precision, rtol):
    images = _images(64, seed=9)
    reference = CNNFeatures("vgg16", weights=None, input_size=64, cache=False).transform(images)
    mixed = CNNFeatures("vgg16", weights=None, input_size=64, precision=precision, cache=False)
    got = mixed.transform(images)
    assert got.dtype == np.float64 and got.shape == reference.shape
    scale = np.abs(reference).max()
    assert np.abs(got - reference).max() <= rtol * scale
    assert not np.array_equal(got, reference)  # it really ran in lower precision
    assert step_token(mixed) != step_token(clone(mixed).set_params(precision="float32"))
