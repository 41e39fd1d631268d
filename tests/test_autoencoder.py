"""StackedAutoencoder: training lowers reconstruction error, codes match a hand-computed forward pass,
the pipeline beats chance, pickling, bad input."""

import pickle

import numpy as np
import pytest

pytest.importorskip("keras")

# the module fixtures train Keras models: keep this file on one worker under `pytest -n --dist loadgroup`
pytestmark = pytest.mark.xdist_group("autoencoder")

from scipy.special import expit
from sklearn.base import clone
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from featurepipe.classifiers import StackedAutoencoder, make_autoencoder_pipeline


def _images(n, seed):
    """16x16 gray noise; odd images carry a bright 6x6 square at a random place (class 1)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        image = rng.uniform(0.0, 0.1, (16, 16)).astype(np.float32)
        if i % 2:
            r, c = rng.integers(0, 10, 2)
            image[r:r + 6, c:c + 6] += 0.8
        images.append(image)
        labels.append(i % 2)
    return images, np.array(labels)


@pytest.fixture(scope="module")
def fitted():
    X, y = _images(60, seed=0)
    pipe = make_autoencoder_pipeline(input_size=16, hidden_units=(32, 8), epochs=15, fine_tune_epochs=10,
                                     batch_size=5, learning_rate=3e-3, noise=0.02, random_state=0)
    return pipe.fit(X, y)


def test_pipeline_beats_chance_clearly(fitted):
    X_test, y_test = _images(60, seed=1)
    assert [name for name, _ in fitted.steps] == ["autoencoder", "scale", "classifier"]
    chance = DummyClassifier(strategy="prior").fit(np.zeros((60, 1)), y_test).score(np.zeros((60, 1)), y_test)
    assert chance == pytest.approx(0.5)
    assert fitted.score(X_test, y_test) >= 0.9
    proba = fitted.predict_proba(X_test)
    assert proba.shape == (60, 2)


def test_training_lowers_reconstruction_error(fitted):
    ae = fitted.named_steps["autoencoder"]
    assert set(ae.history_) == {"layer_1_loss", "layer_2_loss", "loss"}
    assert len(ae.history_["layer_1_loss"]) == 15 and len(ae.history_["loss"]) == 10
    for key in ("layer_1_loss", "layer_2_loss"):
        assert ae.history_[key][-1] < 0.7 * ae.history_[key][0]
    # end to end starts from the greedy weights and improves on them
    assert ae.history_["loss"][-1] < ae.history_["loss"][0]
    # on unseen images the reconstruction beats the best constant guess (the mean training image)
    X_train, _ = _images(60, seed=0)
    X_test, _ = _images(60, seed=1)
    flat_train = np.stack(X_train).reshape(60, -1)
    flat_test = np.stack(X_test).reshape(60, -1)
    baseline = ((flat_test - flat_train.mean(axis=0)) ** 2).mean(axis=1)
    error = ae.reconstruction_error(X_test)
    assert error.shape == (60,)
    assert error.mean() < 0.75 * baseline.mean()


def test_transform_is_the_encoder_forward_pass(fitted):
    ae = fitted.named_steps["autoencoder"]
    X, _ = _images(7, seed=2)
    codes = ae.transform(X)
    assert codes.shape == (7, 8) and codes.dtype == np.float64
    # images are already 16x16: no resizing, so flattening is the whole preprocessing
    h = np.stack(X).reshape(7, -1).astype(np.float64)
    for k in (1, 2):
        W, b = ae.encoder_.get_layer(f"encoder_{k}").get_weights()
        h = np.maximum(h @ W + b, 0.0)  # relu
    np.testing.assert_allclose(codes, h, rtol=1e-4, atol=1e-5)
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(ae.get_feature_names_out(), [f"sae_{i:04d}" for i in range(8)])
    # the decoder's output layer is a sigmoid over the pixels
    W2, b2 = ae.autoencoder_.get_layer("decoder_2").get_weights()  # codes (8) -> layer-1 codes (32), relu
    W1, b1 = ae.autoencoder_.get_layer("decoder_1").get_weights()  # layer-1 codes -> 256 pixels, sigmoid
    recon = expit(np.maximum(codes @ W2 + b2, 0.0) @ W1 + b1)
    expected = ((recon - np.stack(X).reshape(7, -1)) ** 2).mean(axis=1)
    np.testing.assert_allclose(ae.reconstruction_error(X), expected, rtol=1e-4)


def test_pickle_round_trip_gives_identical_transform(fitted):
    X, _ = _images(12, seed=3)
    again = pickle.loads(pickle.dumps(fitted))
    # exact: pickle/clone round trip of the same fitted object
    np.testing.assert_array_equal(again.named_steps["autoencoder"].transform(X),
                                  fitted.named_steps["autoencoder"].transform(X))
    # exact: predicted class labels
    np.testing.assert_array_equal(again.predict(X), fitted.predict(X))
    assert again.named_steps["autoencoder"].get_params() == fitted.named_steps["autoencoder"].get_params()


def test_end_to_end_only_training_and_other_classifier():
    X, y = _images(20, seed=4)
    pipe = make_autoencoder_pipeline(SVC(), input_size=8, hidden_units=(16,), layerwise=False, epochs=3,
                                     batch_size=10, activation="tanh", random_state=0)
    assert isinstance(pipe, Pipeline) and isinstance(pipe.named_steps["classifier"], SVC)
    pipe.fit(X, y)
    ae = pipe.named_steps["autoencoder"]
    assert set(ae.history_) == {"loss"} and len(ae.history_["loss"]) == 3
    # 16x16 images are resized to 8x8 (area averaging) before the encoder
    codes = ae.transform(X[:2])
    import cv2

    small = np.stack([cv2.resize(im, (8, 8), interpolation=cv2.INTER_AREA) for im in X[:2]]).reshape(2, -1)
    W, b = ae.encoder_.get_layer("encoder_1").get_weights()
    np.testing.assert_allclose(codes, np.tanh(small @ W + b), rtol=1e-4, atol=1e-5)
    assert pipe.predict(X[:4]).shape == (4,)


def test_clone_keeps_parameters_only():
    ae = StackedAutoencoder(hidden_units=(10, 4), noise=0.1, random_state=3)
    twin = clone(ae)
    assert twin.get_params() == ae.get_params()
    assert not hasattr(twin, "encoder_")


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_fit_rejects_mixed_channels_and_too_few_images():
    X, _ = _images(4, seed=0)
    mixed = X[:2] + [np.repeat(X[2][:, :, None], 3, axis=2)] + X[3:]
    with pytest.raises(ValueError, match=r"mixed channel counts: sample .* \(X\[2\]\) has 3 channel"):
        StackedAutoencoder(input_size=8).fit(mixed)
    with pytest.raises(ValueError, match="needs at least 2 images; got 1"):
        StackedAutoencoder(input_size=8).fit(X[:1])
    bad = list(X)
    bad[1] = X[1] * 100
    with pytest.raises(ValueError, match=r"\(X\[1\]\) has values in .* expected float intensities in \[0, 1\]"):
        StackedAutoencoder(input_size=8).fit(bad)


def test_transform_rejects_other_channel_count_and_unfitted(fitted):
    from sklearn.exceptions import NotFittedError

    X, _ = _images(2, seed=0)
    with pytest.raises(ValueError, match="the images it was fitted on has 1"):
        fitted.named_steps["autoencoder"].transform([np.repeat(im[:, :, None], 3, axis=2) for im in X])
    with pytest.raises(NotFittedError):
        StackedAutoencoder().transform(X)


@pytest.mark.parametrize("param, value, message", [
    ("input_size", 1, r"'input_size' parameter of StackedAutoencoder must be an int in the range \[2, inf\)\. "
                      r"Got 1 instead"),
    ("hidden_units", (), r"StackedAutoencoder: hidden_units must be a non-empty sequence of positive integers; "
                         r"got \(\)"),
    ("hidden_units", (8, 0), r"StackedAutoencoder: hidden_units must be a non-empty sequence of positive "
                             r"integers; got \(8, 0\)"),
    ("activation", "softmax", r"'activation' parameter of StackedAutoencoder must be a str among "
                              r"\{.*'relu'.*\}\. Got 'softmax'"),
    ("layerwise", "yes", r"'layerwise' parameter of StackedAutoencoder must be an instance of 'bool'.*Got 'yes'"),
    ("noise", -0.1, r"'noise' parameter of StackedAutoencoder must be a float in the range \[0\.0, inf\)\. Got -0\.1"),
    ("epochs", 0, r"'epochs' parameter of StackedAutoencoder must be an int in the range \[1, inf\)\. Got 0 instead"),
    ("learning_rate", 0.0, r"'learning_rate' parameter of StackedAutoencoder must be a float in the range "
                           r"\(0\.0, inf\)\. "
                           r"Got 0\.0"),
])
def test_bad_parameters_are_named(param, value, message):
    X, _ = _images(4, seed=0)
    with pytest.raises(ValueError, match=message):
        StackedAutoencoder(**{param: value}).fit(X)
