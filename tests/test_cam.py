"""Class activation maps on a synthetic problem whose answer is known: a bright square decides the class."""

import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from PIL import Image
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from featurepipe import recipes
from featurepipe.classifiers import ELMClassifier
from featurepipe.cnn import CNNFeatures, register_backbone, unregister_backbone
from featurepipe.cnn.cam import (
    cam_overlay,
    class_activation_map,
    linear_head,
    save_cam_overlay,
)
from featurepipe.cnn import preprocess_tf

SIZE, SIDE = 64, 14
NAME = "cam_test_net"


@pytest.fixture(scope="module")
def tiny_backbone():
    """A fixed random-weight two-layer CNN (stride 4 overall: 16x16 feature map).

    The kernels are non-negative (smoothed-brightness responses, no edge detectors), so the
    evidence for "bright square" sits inside the square: with signed random kernels the map is
    still confined to the square's cells but peaks on corner cells that straddle its border.
    """
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 5, strides=2, padding="same", activation="relu",
                            kernel_initializer=keras.initializers.RandomUniform(0.0, 0.1, seed=0))(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu",
                            kernel_initializer=keras.initializers.RandomUniform(0.0, 0.1, seed=1))(x)
    register_backbone(NAME, keras.Model(inputs, x), preprocess=preprocess_tf, overwrite=True)
    yield NAME
    unregister_backbone(NAME)


def _dataset(n, seed, kinds=(0, 1)):
    """Noise images; kind 1 has a bright square, kind 2 a dark one, kind 0 none. Returns images, y, boxes."""
    rng = np.random.default_rng(seed)
    images, labels, boxes = [], [], []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        img = rng.uniform(0.35, 0.55, (SIZE, SIZE)).astype(np.float32)
        top, left = rng.integers(2, SIZE - SIDE - 2, size=2)
        if kind:
            img[top:top + SIDE, left:left + SIDE] = 0.95 if kind == 1 else 0.02
        images.append(img)
        labels.append(kind)
        boxes.append((top, left))
    return images, np.array(labels), boxes


@pytest.fixture(scope="module")
def fitted(tiny_backbone):
    images, y, _ = _dataset(40, seed=0)
    pipe = make_pipeline(CNNFeatures(tiny_backbone, weights="imagenet", cache=False), StandardScaler(),
                         LogisticRegression(C=1.0, max_iter=5000))
    pipe.fit(images, y)
    return pipe


def test_heatmap_peak_lies_in_the_deciding_square(fitted):
    images, y, boxes = _dataset(12, seed=1)
    assert (fitted.predict(images) == y).all()
    for image, label, (top, left) in zip(images, y, boxes):
        if label != 1:
            continue
        cam = class_activation_map(fitted, image, target=1)
        assert cam.heatmap.shape == (SIZE, SIZE) and cam.coarse.shape == (16, 16)
        r, c = np.unravel_index(np.argmax(cam.heatmap), cam.heatmap.shape)
        assert top <= r < top + SIDE and left <= c < left + SIDE
        # The square holds the evidence: it is hotter on average than the rest of the image.
        inside = np.zeros((SIZE, SIZE), bool)
        inside[top:top + SIDE, left:left + SIDE] = True
        assert cam.heatmap[inside].mean() > cam.heatmap[~inside].mean() + 3 * cam.heatmap[~inside].std()


def test_map_mean_plus_bias_is_the_decision_score(fitted):
    images, _, _ = _dataset(4, seed=2)
    decision = fitted.decision_function(images)
    for image, score in zip(images, decision):
        cam1 = class_activation_map(fitted, image, target=1)
        assert cam1.score == pytest.approx(score, rel=1e-4, abs=1e-4)
        assert cam1.coarse.mean() + cam1.bias == pytest.approx(score, rel=1e-4, abs=1e-4)
        cam0 = class_activation_map(fitted, image, target=0)  # the negative class: the negated map
        np.testing.assert_allclose(cam0.coarse, -cam1.coarse)
        default = class_activation_map(fitted, image)
        assert default.target == (1 if score > 0 else 0)


def test_multiclass_and_linear_svc_with_separate_extractor(tiny_backbone):
    images, y, _ = _dataset(45, seed=3, kinds=(0, 1, 2))
    extractor = CNNFeatures(tiny_backbone, weights="imagenet", cache=False)
    features = extractor.fit_transform(images)
    for classifier in (LogisticRegression(max_iter=5000), LinearSVC(C=0.1, max_iter=20000)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # LinearSVC convergence chatter
            classifier.fit(features, y)
        decision = classifier.decision_function(features[:3])
        for i in range(3):
            for k, label in enumerate(classifier.classes_):
                cam = class_activation_map(classifier, images[i], target=label, extractor=extractor)
                assert cam.score == pytest.approx(decision[i, k], rel=1e-4, abs=1e-4)


def test_scaler_folding_by_hand():
    rng = np.random.default_rng(4)
    X = rng.normal(3.0, 2.0, size=(30, 5))
    y = (X[:, 0] + X[:, 1] > 6).astype(int)
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    w, b, classes = linear_head(pipe, 5)
    np.testing.assert_allclose(X @ w[0] + b[0], pipe.decision_function(X), rtol=1e-10, atol=1e-10)
    assert list(classes) == [0, 1]


def test_unsupported_models_are_refused(fitted, tiny_backbone):
    images, y, _ = _dataset(10, seed=5)
    with pytest.raises(ValueError, match=r"pooling='avg', layer=None.*pooling='max'"):
        class_activation_map(LogisticRegression(), images[0],
                             extractor=CNNFeatures(tiny_backbone, pooling="max"))
    features = fitted.steps[0][1].transform(images)
    rbf = SVC().fit(features, y)
    with pytest.raises(ValueError, match=r"cannot explain SVC\(kernel='rbf'\): its decision is not linear"):
        class_activation_map(rbf, images[0], extractor=fitted.steps[0][1])
    pca = make_pipeline(CNNFeatures(tiny_backbone, cache=False), PCA(3), LogisticRegression()).fit(images, y)
    with pytest.raises(ValueError, match="the step PCA .* is not supported"):
        class_activation_map(pca, images[0])
    with pytest.raises(ValueError, match="target 7 is not one of the classes"):
        class_activation_map(fitted, images[0], target=7)


def test_overlay_png(tmp_path, fitted):
    import matplotlib

    images, _, _ = _dataset(2, seed=6)
    cam = class_activation_map(fitted, images[1], target=1)
    path = save_cam_overlay(tmp_path / "cam.png", images[1], cam.heatmap, alpha=0.4)
    written = np.asarray(Image.open(path))
    assert written.shape == (SIZE, SIZE, 3) and written.dtype == np.uint8
    # exact: the same function on the same input (one code path, one process)
    np.testing.assert_array_equal(written, cam_overlay(images[1], cam.heatmap, alpha=0.4))
    r, c = np.unravel_index(np.argmax(cam.heatmap), cam.heatmap.shape)
    hot = np.asarray(matplotlib.colormaps["jet"](1.0)[:3])
    expected = np.round(np.clip(0.6 * images[1][r, c] + 0.4 * hot, 0, 1) * 255)
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(written[r, c], expected.astype(np.uint8))
    with pytest.raises(ValueError, match="must end in .png"):
        save_cam_overlay(tmp_path / "cam.jpg", images[1], cam.heatmap)
    with pytest.raises(ValueError, match=r"heatmap shape \(2, 2\) does not match the image \(64, 64\)"):
        cam_overlay(images[1], np.zeros((2, 2)))


def test_image_steps_before_the_extractor_are_applied(tiny_backbone):
    from featurepipe.preprocessing import Resize

    images, y, boxes = _dataset(40, seed=7)
    big = [np.kron(im, np.ones((2, 2), np.float32)) for im in images]  # 128x128, square doubled
    pipe = make_pipeline(Resize(SIZE), CNNFeatures(tiny_backbone, cache=False), StandardScaler(),
                         LogisticRegression(max_iter=5000)).fit(big, y)
    i = int(np.flatnonzero(y == 1)[0])
    cam = class_activation_map(pipe, big[i], target=1)
    assert cam.heatmap.shape == (SIZE, SIZE)  # the resolution of the image the network saw
    assert cam.score == pytest.approx(pipe.decision_function([big[i]])[0], rel=1e-4, abs=1e-4)
    r, c = np.unravel_index(np.argmax(cam.heatmap), cam.heatmap.shape)
    top, left = boxes[i]
    assert top <= r < top + SIDE and left <= c < left + SIDE


def _three_class_pipeline(tiny_backbone, classifier, balancing=None):
    """CNN features + scaler (+ sampler) + ``classifier`` (a recipe name or an estimator), fitted on 3 classes."""
    images, y, _ = _dataset(45, seed=8, kinds=(0, 1, 2))
    if isinstance(classifier, str):
        pipe = recipes.make(classifier, backbone=tiny_backbone, balancing=balancing)
        pipe.set_params(features__cache=False)
    else:
        pipe = make_pipeline(CNNFeatures(tiny_backbone, cache=False), StandardScaler(), classifier)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LinearSVC convergence chatter
        return pipe.fit(images, y)


LINEAR_HEADS = {
    "recipe convnet_svm_linear (calibrated LinearSVC)": "convnet_svm_linear",
    "LogisticRegression": LogisticRegression(max_iter=5000),
    "LinearSVC": LinearSVC(C=0.1, max_iter=20000),
    "sigmoid-calibrated LinearSVC": CalibratedClassifierCV(LinearSVC(C=0.1, max_iter=20000), method="sigmoid",
                                                           ensemble=False),
}


@pytest.mark.parametrize("head", list(LINEAR_HEADS))
def test_the_explained_class_is_the_predicted_class_for_every_linear_head(tiny_backbone, head):
    pipe = _three_class_pipeline(tiny_backbone, LINEAR_HEADS[head])
    # Test images that are hard to call: faint squares, so that predictions are not all right.
    images, y, _ = _dataset(12, seed=9, kinds=(0, 1, 2))
    images = [np.clip(0.45 + 0.35 * (im - 0.45), 0, 1) for im in images]
    predicted = pipe.predict(images)
    for image, label in zip(images, predicted):
        cam = class_activation_map(pipe, image)
        assert cam.target == cam.predicted == label
        # The predicted class has the largest linear score of all classes.
        scores = {k: class_activation_map(pipe, image, target=k).score for k in (0, 1, 2)}
        assert max(scores, key=scores.get) == label
    if hasattr(pipe, "predict_proba") and isinstance(pipe[-1], CalibratedClassifierCV):
        # The calibrated rows are exactly the calibrated logits: their softmax (temperature) or
        # normalised sigmoids (Platt) give predict_proba back.
        from scipy.special import expit, softmax

        scores = np.array([[class_activation_map(pipe, im, target=k).score for k in (0, 1, 2)] for im in images[:4]])
        proba = softmax(scores, axis=1) if pipe[-1].method == "temperature" else (
            expit(scores) / expit(scores).sum(axis=1, keepdims=True))
        np.testing.assert_allclose(proba, pipe.predict_proba(images[:4]), rtol=1e-3, atol=1e-4)


def test_calibrated_binary_recipe_and_a_sampler_in_the_pipeline(tiny_backbone):
    images, y, _ = _dataset(40, seed=10)
    pipe = recipes.make("convnet_svm_linear", backbone=tiny_backbone, balancing="random")
    pipe.set_params(features__cache=False).fit(images, y)
    test, _, _ = _dataset(6, seed=11)
    decision = pipe.predict_proba(test)
    for image, label, p in zip(test, pipe.predict(test), decision):
        cam = class_activation_map(pipe, image)
        assert cam.target == cam.predicted == label
        # Binary temperature scaling: P(classes_[1]) = expit(2 * score of classes_[1]).
        positive = class_activation_map(pipe, image, target=1)
        assert positive.score == pytest.approx(np.log(p[1] / p[0]) / 2, rel=1e-3, abs=1e-4)


def test_recipe_map_peaks_in_the_bright_square_with_three_classes(tiny_backbone):
    pipe = _three_class_pipeline(tiny_backbone, "convnet_svm_linear")
    images, y, boxes = _dataset(12, seed=12, kinds=(0, 1, 2))
    predicted = pipe.predict(images)
    # The bright square is what this brightness-sensitive backbone sees (a dark one is faint in it).
    np.testing.assert_array_equal(predicted == 1, y == 1)  # exact: booleans
    for image, label, (top, left) in zip(images, y, boxes):
        if label != 1:
            continue
        cam = class_activation_map(pipe, image)
        assert cam.target == cam.predicted == 1
        r, c = np.unravel_index(np.argmax(cam.heatmap), cam.heatmap.shape)
        assert top <= r < top + SIDE and left <= c < left + SIDE


def test_heads_that_cannot_be_explained_are_refused(tiny_backbone):
    images, y, _ = _dataset(45, seed=13, kinds=(0, 1, 2))
    extractor = CNNFeatures(tiny_backbone, cache=False)
    features = extractor.fit_transform(images)
    refused = [
        # The bug of the old convnet_svm_linear: one-vs-one rows read as one row per class.
        (SVC(kernel="linear"), r"SVC\(kernel='linear'\) with 3 classes: its weights are one-vs-one"),
        (SVC(kernel="rbf"), r"SVC\(kernel='rbf'\): its decision is not linear"),
        (RandomForestClassifier(n_estimators=5, random_state=0), "needs a fitted linear classifier .* got "
                                                                 "RandomForestClassifier"),
        (ELMClassifier(n_hidden=20, random_state=0), "needs a fitted linear classifier .* got ELMClassifier"),
        (CalibratedClassifierCV(LinearSVC(), ensemble=True), "ensemble=True: its probabilities average 5 models"),
        (CalibratedClassifierCV(LinearSVC(), method="isotonic", ensemble=False), "method='isotonic'"),
        (CalibratedClassifierCV(SVC(), ensemble=False), r"cannot explain SVC\(kernel='rbf'\)"),
    ]
    for classifier, message in refused:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            classifier.fit(features, y)
        with pytest.raises(ValueError, match=message):
            class_activation_map(classifier, images[0], extractor=extractor)
    # The recipes with kernel, forest or ELM heads are refused too.
    for name in ("convnet_svm_rbf", "convnet_elm", "convnet_rf"):
        pipe = recipes.make(name, backbone=tiny_backbone).set_params(features__cache=False)
        if name == "convnet_rf":
            pipe.set_params(classifier__estimator__n_estimators=5)
        pipe.fit(images, y)
        with pytest.raises(ValueError, match="cannot explain|needs a fitted linear classifier"):
            class_activation_map(pipe, images[0])
    # A binary linear SVC has one row: it is explained (and its default target is its prediction).
    binary = y != 2
    svc = SVC(kernel="linear").fit(features[binary], y[binary])
    image = images[int(np.flatnonzero(binary)[1])]
    cam = class_activation_map(svc, image, extractor=extractor)
    assert cam.target == cam.predicted == svc.predict(extractor.transform([image]))[0]


def test_the_map_carries_the_image_it_explains(tiny_backbone):
    """``image`` is the picture the network saw (after the pipeline's image steps), at the heatmap's size: an
    overlay on the original would not line up when a step crops or resizes."""
    from featurepipe.preprocessing import Resize

    images, y, _ = _dataset(20, seed=9)
    big = [np.kron(im, np.ones((2, 2), np.float32)) for im in images]
    pipe = make_pipeline(Resize(SIZE), CNNFeatures(tiny_backbone, cache=False), StandardScaler(),
                         LogisticRegression(max_iter=5000)).fit(big, y)
    cam = class_activation_map(pipe, big[0])
    seen, _ = Resize(SIZE).transform([big[0]])[0].load()
    assert cam.image.shape == cam.heatmap.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(cam.image, seen)  # exact: the same step on the same pixels, the same bytes
