"""KerasTransferClassifier: training phases, early stopping, grid search, pickling, bad input.

A tiny functional CNN (two 3x3 convolutions and a batch normalisation) is
registered as a backbone so that every fit takes a few seconds on CPU;
one test uses the built-in MobileNetV2 registry entry (random weights,
32x32) without training to check the unfreezing of a real backbone.
"""

import math
import pickle

import numpy as np
import pytest

keras = pytest.importorskip("keras")

# the module fixtures train Keras models: keep this file on one worker under `pytest -n --dist loadgroup`
pytestmark = pytest.mark.xdist_group("keras_transfer")

from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedShuffleSplit
from sklearn.utils.class_weight import compute_class_weight

from featurepipe import Sample
from featurepipe.classifiers import KerasTransferClassifier
from featurepipe.cnn import (
    get_backbone,
    preprocess_tf,
    register_backbone,
    unregister_backbone,
)

TINY = "fp_test_transfer_tiny"


def _tiny_cnn():
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, use_bias=False, name="conv1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, use_bias=False, name="conv2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    return keras.Model(inp, x, name="tiny_cnn")


@pytest.fixture(scope="module")
def tiny_backbone():
    keras.utils.set_random_seed(0)
    model = _tiny_cnn()
    # non-trivial running statistics, to see that fine-tuning leaves them alone
    bn = model.get_layer("bn1")
    bn.moving_mean.assign(np.full(8, 0.1, np.float32))
    bn.moving_variance.assign(np.full(8, 2.0, np.float32))
    register_backbone(TINY, model, preprocess=preprocess_tf, overwrite=True)
    yield model
    unregister_backbone(TINY)


def _squares(n, seed):
    """Gray 32x32 noise images; odd ones carry a bright 12x12 square (class "square")."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        image = rng.uniform(0.2, 0.4, (32, 32)).astype(np.float32)
        if i % 2:
            r, c = rng.integers(0, 20, 2)
            image[r:r + 12, c:c + 12] = 0.9
        images.append(image)
        labels.append("square" if i % 2 else "none")
    return images, np.array(labels)


def _small(**params):
    defaults = {"backbone": TINY, "weights": None, "input_size": 32, "dense_units": (8,), "epochs": 10,
                "batch_size": 4, "validation_fraction": 0.25, "patience": 4, "reduce_lr_patience": 2,
                "random_state": 0}
    defaults.update(params)
    return KerasTransferClassifier(**defaults)


def _base(model):
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


@pytest.fixture(scope="module")
def grid(tiny_backbone):
    X, y = _squares(32, seed=0)
    estimator = _small(fine_tune_epochs=2, fine_tune_learning_rate=1e-3, augment_flip="horizontal",
                       augment_rotation=0.05, augment_zoom=0.1)
    # one stratified 16/16 split keeps the test at 4 + 1 fits
    search = GridSearchCV(estimator, {"learning_rate": [1e-2, 3e-2], "unfreeze": [0, 2]},
                          cv=StratifiedShuffleSplit(n_splits=1, test_size=0.5, random_state=0))
    return search.fit(X, y)


def test_grid_search_fits_and_predicts_with_high_accuracy(grid):
    X_test, y_test = _squares(40, seed=1)
    results = grid.cv_results_
    assert [(p["learning_rate"], p["unfreeze"]) for p in results["params"]] == [
        (1e-2, 0), (1e-2, 2), (3e-2, 0), (3e-2, 2)]
    assert np.all(np.isfinite(results["mean_test_score"]))
    assert grid.best_score_ >= 0.9
    best = grid.best_estimator_
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(best.classes_, ["none", "square"])
    pred = grid.predict(X_test)
    assert set(pred) <= {"none", "square"}
    assert (pred == y_test).mean() >= 0.95
    proba = grid.predict_proba(X_test)
    assert proba.shape == (40, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    # exact: predicted class labels
    np.testing.assert_array_equal(best.classes_[proba.argmax(axis=1)], pred)
    # history: one entry per epoch run, for both phases
    n = best.n_head_epochs_ + best.n_fine_tune_epochs_
    assert set(best.history_) >= {"loss", "val_loss", "accuracy", "val_accuracy", "learning_rate"}
    assert all(len(v) == n for v in best.history_.values())
    assert 1 <= best.n_head_epochs_ <= 10 and 0 <= best.n_fine_tune_epochs_ <= 2


def test_validation_split_is_stratified_and_from_the_training_fold(grid):
    best = grid.best_estimator_
    _, y = _squares(32, seed=0)
    val = best.validation_indices_
    assert len(val) == 8  # ceil(0.25 * 32) of the 32 samples the refit saw
    assert (y[val] == "square").sum() == 4 and (y[val] == "none").sum() == 4
    y_idx = (y == "square").astype(int)
    classes = np.array(["none", "square"])
    train, held = best._validation_split(y_idx, classes, seed=5)
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(np.sort(np.concatenate([train, held])), np.arange(32))
    np.testing.assert_array_equal(best._validation_split(y_idx, classes, seed=5)[1], held)  # deterministic
    assert not np.array_equal(best._validation_split(y_idx, classes, seed=6)[1], held)
    no_val = clone(best).set_params(validation_fraction=0.0)
    train, held = no_val._validation_split(y_idx, classes, seed=5)
    assert len(held) == 0 and len(train) == 32


def test_pickled_classifier_reloads_and_predicts_identically(grid):
    best = grid.best_estimator_
    X_test, _ = _squares(12, seed=2)
    expected = best.predict_proba(X_test)
    blob = pickle.dumps(best)
    again = pickle.loads(blob)
    # exact: pickle/clone round trip of the same fitted object
    np.testing.assert_array_equal(again.predict_proba(X_test), expected)
    # exact: predicted class labels
    np.testing.assert_array_equal(again.predict(X_test), best.predict(X_test))
    assert again.get_params() == best.get_params()
    assert again.history_ == best.history_
    # predictions are the network applied to the backbone-preprocessed [0, 255] RGB image
    # (no augmentation at prediction time)
    batch = np.stack([np.repeat(im[:, :, None], 3, axis=2) for im in X_test]) * 255.0
    direct = np.asarray(again.model_(preprocess_tf(batch.astype(np.float32)), training=False))[:, 0]
    np.testing.assert_allclose(expected[:, 1], direct, rtol=1e-5, atol=1e-6)


def test_pickle_round_trip_needs_no_registry_entry(grid, tiny_backbone):
    best = grid.best_estimator_
    X_test, _ = _squares(6, seed=3)
    blob = pickle.dumps(best)
    unregister_backbone(TINY)
    try:
        again = pickle.loads(blob)
        # exact: pickle/clone round trip of the same fitted object
        np.testing.assert_array_equal(again.predict_proba(X_test), best.predict_proba(X_test))
    finally:
        register_backbone(TINY, tiny_backbone, preprocess=preprocess_tf, overwrite=True)


def test_saved_model_names_its_built_in_input_scaling_and_loads_without_trust(grid, tmp_path):
    # Before: the fitted classifier held preprocess_tf itself, which the safe loader (classes only)
    # refused unless the user passed --trust featurepipe.cnn.preprocessing.preprocess_tf.
    from featurepipe.models import load_model, save_model, untrusted_types

    best = grid.best_estimator_
    state = best.__getstate__()
    assert state["preprocess_"] is None and state["_input_scaling_name"] == "preprocess_tf"
    path = tmp_path / "keras.skops"
    save_model(best, path)
    assert untrusted_types(path) == []
    again = load_model(path)
    assert again.preprocess_ is preprocess_tf
    X_test, _ = _squares(6, seed=4)
    # exact: the same network weights and the same input scaling
    np.testing.assert_array_equal(again.predict_proba(X_test), best.predict_proba(X_test))


def test_a_saved_state_naming_an_unknown_input_scaling_is_refused(grid):
    state = grid.best_estimator_.__getstate__()
    state["_input_scaling_name"] = "system"  # only featurepipe's own scalings are looked up by name
    with pytest.raises(ValueError, match="unknown input scaling 'system'"):
        KerasTransferClassifier().__setstate__(state)


def test_fine_tuning_unfreezes_from_named_layer_and_keeps_batchnorm_statistics(tiny_backbone):
    # full-batch descent with a small rate and no dropout: the fine-tuning phase lowers the training loss
    X, y = _squares(24, seed=4)
    clf = _small(weights="imagenet", unfreeze="bn1", epochs=2, fine_tune_epochs=3, learning_rate=1e-2,
                 fine_tune_learning_rate=1e-3, dropout=0.0, batch_size=24, validation_fraction=0.0,
                 patience=None, reduce_lr_patience=None, class_weight="balanced").fit(X, y)
    assert clf.n_unfrozen_layers_ == 4  # bn1, relu1, conv2, relu2
    assert clf.n_head_epochs_ == 2 and clf.n_fine_tune_epochs_ == 3
    assert clf.history_["learning_rate"] == pytest.approx([1e-2] * 2 + [1e-3] * 3)
    assert "val_loss" not in clf.history_
    assert clf.fine_tune_kept_ and clf.history_["loss"][-1] < clf.history_["loss"][1]
    base = _base(clf.model_)
    # frozen layer untouched; unfrozen convolution trained; the backbone's batch norm, although inside
    # the unfrozen range, kept its running statistics, scale and offset (inference mode)
    # exact: weights are copied, not computed
    np.testing.assert_array_equal(base.get_layer("conv1").get_weights()[0],
                                  tiny_backbone.get_layer("conv1").get_weights()[0])
    assert not np.allclose(base.get_layer("conv2").get_weights()[0], tiny_backbone.get_layer("conv2").get_weights()[0])
    for got, registered in zip(base.get_layer("bn1").get_weights(), tiny_backbone.get_layer("bn1").get_weights()):
        # exact: weights are copied, not computed
        np.testing.assert_array_equal(got, registered)
    np.testing.assert_array_equal(base.get_layer("bn1").get_weights()[2], np.full(8, 0.1, np.float32))


def test_fine_tuning_that_does_not_help_is_rolled_back(tiny_backbone):
    # a huge SGD step in the fine-tuning phase blows the loss up: the head-only weights come back
    X, y = _squares(24, seed=4)
    clf = _small(weights="imagenet", unfreeze=3, epochs=2, fine_tune_epochs=2, optimizer="sgd",
                 learning_rate=1e-2, fine_tune_learning_rate=1e3, dropout=0.0, batch_size=24,
                 validation_fraction=0.0, patience=None, reduce_lr_patience=None).fit(X, y)
    assert clf.n_fine_tune_epochs_ == 2 and not clf.fine_tune_kept_
    assert clf.history_["loss"][-1] > clf.history_["loss"][1]
    base = _base(clf.model_)
    # exact: weights are copied, not computed
    np.testing.assert_array_equal(base.get_layer("conv2").get_weights()[0],
                                  tiny_backbone.get_layer("conv2").get_weights()[0])
    assert np.all(np.isfinite(clf.predict_proba(X)))


def test_early_stopping_stops_on_a_plateau(tiny_backbone):
    # Constant mid-grey images become exact zeros after preprocess_tf, so the random-weight backbone
    # (convolutions without bias, fresh batch norm) outputs zeros; with balanced full batches and no
    # dropout every gradient is zero up to rounding, and the validation loss stays at log(2).
    X = [np.full((32, 32), 0.5, np.float32) for _ in range(20)]
    y = np.array([0, 1] * 10)
    clf = _small(dense_units=(), dropout=0.0, batch_size=16, validation_fraction=0.2, epochs=20, patience=2,
                 min_delta=1e-3, reduce_lr_patience=1, reduce_lr_factor=0.5, learning_rate=0.01).fit(X, y)
    # best at epoch 1, then 2 epochs without improvement: 3 of the 20 allowed epochs
    assert len(clf.history_["loss"]) == 3
    assert clf.n_head_epochs_ == 3
    np.testing.assert_allclose(clf.history_["val_loss"], math.log(2), atol=1e-4)
    # the plateau schedule halved the rate after each epoch without improvement
    assert clf.history_["learning_rate"] == pytest.approx([0.01, 0.01, 0.005])
    np.testing.assert_allclose(clf.predict_proba(X[:3]), 0.5, atol=1e-4)


def test_three_classes_softmax_rmsprop_and_class_weight_dict(tiny_backbone):
    # dark / mid-grey / bright images: separable by mean intensity
    rng = np.random.default_rng(5)
    levels = {"dark": 0.15, "grey": 0.5, "bright": 0.85}
    X, y = [], []
    for i in range(24):
        label = list(levels)[i % 3]
        X.append(np.clip(levels[label] + rng.normal(0, 0.03, (32, 32)), 0, 1).astype(np.float32))
        y.append(label)
    y = np.array(y)
    clf = _small(optimizer="rmsprop", learning_rate=3e-2, epochs=15, batch_size=6, validation_fraction=0.25,
                 class_weight={"dark": 1.0, "grey": 2.0, "bright": 1.0}).fit(X, y)
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(clf.classes_, ["bright", "dark", "grey"])
    assert clf.model_.output_shape == (None, 3)
    proba = clf.predict_proba(X)
    assert proba.shape == (24, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    # exact: predicted class labels
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
    assert min(clf.history_["val_loss"]) < 0.5 * clf.history_["val_loss"][0]  # measured 0.91 -> 0.11
    assert clf.score(X, y) >= 0.9  # measured 1.0


def test_augmentation_layers_act_only_in_training():
    clf = _small(augment_flip="horizontal_and_vertical", augment_rotation=0.1, augment_zoom=0.2,
                 augment_brightness=0.2)
    augmenter = clf._augmenter(seed=1)
    assert [type(layer).__name__ for layer in augmenter.layers] == [
        "RandomFlip", "RandomRotation", "RandomZoom", "RandomBrightness"]
    batch = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    # exact: pixels copied or selected, no arithmetic
    np.testing.assert_array_equal(np.asarray(augmenter(batch, training=False)), batch)
    trained = np.asarray(augmenter(batch, training=True))
    assert trained.shape == batch.shape and not np.allclose(trained, batch)
    assert trained.min() >= 0.0 and trained.max() <= 255.0  # brightness clipped to the value range
    assert _small()._augmenter(seed=1) is None


def test_class_weight_matches_sklearn_balanced_and_dicts():
    clf = _small(class_weight="balanced")
    clf.classes_ = np.array(["a", "b", "c"])
    y_idx = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2])
    np.testing.assert_allclose(clf._class_weights(y_idx, 3),
                               compute_class_weight("balanced", classes=np.arange(3), y=y_idx))
    clf.set_params(class_weight={"b": 2.0, "a": 1.0, "c": 0.5})
    np.testing.assert_allclose(clf._class_weights(y_idx, 3), [1.0, 2.0, 0.5])
    clf.set_params(class_weight={"a": 1.0, "b": 2.0, "benign": 3.0})
    with pytest.raises(ValueError, match=r"class_weight keys must be exactly the class labels \['a', 'b', 'c'\]; "
                                         r"unknown keys: \['benign'\], missing classes: \['c'\]"):
        clf._class_weights(y_idx, 3)


def test_unfreeze_of_a_registry_backbone_by_name_and_count():
    spec = get_backbone("mobilenet_v2")
    clf = KerasTransferClassifier(backbone="mobilenet_v2", weights=None, input_size=32, unfreeze="block_16_project")
    clf._validate_params()
    units = clf._dense_units()
    model, base = clf._build(spec, units, 32, 3)
    assert model.output_shape == (None, 3)
    assert not any(layer.trainable for layer in base.layers)
    names = [layer.name for layer in base.layers]
    n = clf._unfreeze(base)
    assert n == len(names) - names.index("block_16_project")
    bn = keras.layers.BatchNormalization
    trainable = [layer.name for layer in base.layers if layer.trainable]
    assert trainable == [layer.name for layer in base.layers[names.index("block_16_project"):]
                         if not isinstance(layer, bn)]
    assert trainable == ["block_16_project", "Conv_1", "out_relu"]  # block_16_project_BN, Conv_1_bn stay frozen
    clf.set_params(unfreeze=5)
    assert clf._unfreeze(base) == 5
    assert [layer.name for layer in base.layers if layer.trainable] == [
        layer.name for layer in base.layers[-5:] if not isinstance(layer, bn)]
    clf.set_params(unfreeze="no_such_layer")
    with pytest.raises(ValueError, match="unfreeze='no_such_layer' is not a layer of backbone 'mobilenet_v2'"):
        clf._unfreeze(base)
    clf.set_params(unfreeze=10_000)
    with pytest.raises(ValueError, match=f"unfreeze=10000 but backbone 'mobilenet_v2' has only {len(names)} layers"):
        clf._unfreeze(base)


# ---------------------------------------------------------------------------------------------
# bad input (all refused before any training)
# ---------------------------------------------------------------------------------------------
def test_fit_rejects_one_class_and_mismatched_lengths(tiny_backbone):
    X, y = _squares(8, seed=0)
    with pytest.raises(ValueError, match="at least 2 classes in y; got only one class: 'none'"):
        _small().fit(X, ["none"] * 8)
    with pytest.raises(ValueError, match="X has 8 samples but y has 7 labels"):
        _small().fit(X, y[:7])
    with pytest.raises(ValueError, match="requires y"):
        _small().fit(X, None)


def test_fit_rejects_mixed_channel_counts_and_out_of_range_images(tiny_backbone):
    X, y = _squares(8, seed=0)
    rgb = np.repeat(X[3][:, :, None], 3, axis=2)
    mixed = X[:3] + [Sample.from_array(rgb, meta={"path": "case_0003.png"})] + X[4:]
    with pytest.raises(ValueError, match=r"mixed channel counts: sample 'case_0003.png' \(X\[3\]\) has 3 channel"
                                         r"\(s\) but the first sample .* has 1"):
        _small().fit(mixed, y)
    bad = list(X)
    bad[2] = X[2] * 255.0
    with pytest.raises(ValueError, match=r"\(X\[2\]\) has values in \[.*\]; expected float intensities in \[0, 1\]"):
        _small().fit(bad, y)


def test_fit_rejects_impossible_validation_split_and_bad_class_weight(tiny_backbone):
    X, y = _squares(6, seed=0)
    y = np.array(["none"] * 5 + ["square"])
    with pytest.raises(ValueError, match="cannot hold out a stratified validation set from 6 samples"):
        _small(validation_fraction=0.25).fit(X, y)
    X, y = _squares(8, seed=0)
    with pytest.raises(ValueError, match=r"unknown keys: \['malignant'\]"):
        _small(class_weight={"none": 1.0, "square": 1.0, "malignant": 2.0}).fit(X, y)


def test_predict_rejects_other_channel_count(grid):
    X, _ = _squares(2, seed=0)
    rgb = [np.repeat(im[:, :, None], 3, axis=2) for im in X]
    with pytest.raises(ValueError, match="mixed channel counts.*the images it was fitted on has 1"):
        grid.best_estimator_.predict(rgb)


@pytest.mark.parametrize("param, value, message", [
    ("backbone", "alexnet", r"KerasTransferClassifier: backbone must be a registered backbone \(unknown "
                            r"backbone 'alexnet'.*; "
                            "got 'alexnet'"),
    ("weights", 3, r"'weights' parameter of KerasTransferClassifier must be a str among \{'imagenet'\}, None, "
                   r".*Got 3 instead"),
    ("input_size", 16, r"KerasTransferClassifier: input_size must be None or an integer >= 32 .*; got 16"),
    ("dense_units", (8, 0), r"KerasTransferClassifier: dense_units must be an integer >= 0 or a sequence of "
                            r"positive integers; "
                            r"got \(8, 0\)"),
    ("dropout", 1.0, r"'dropout' parameter of KerasTransferClassifier must be a float in the range \[0\.0, "
                     r"1\.0\)\. Got 1\.0"),
    ("optimizer", "adagrad", r"'optimizer' parameter of KerasTransferClassifier must be a str among "
                             r"\{.*'adam'.*\}\. Got 'adagrad'"),
    ("learning_rate", 0, r"'learning_rate' parameter of KerasTransferClassifier must be a float in the range "
                         r"\(0\.0, inf\)\. Got 0 "),
    ("unfreeze", -1, r"'unfreeze' parameter of KerasTransferClassifier must be an int in the range \[0, inf\) "
                     r"or an instance of 'str'\. "
                     "Got -1"),
    ("epochs", 0, r"'epochs' parameter of KerasTransferClassifier must be an int in the range \[1, inf\)\. Got "
                  r"0 instead"),
    ("patience", 1.5, r"'patience' parameter of KerasTransferClassifier must be None or an int in the range "
                      r"\[0, inf\)\. Got 1\.5"),
    ("min_delta", -0.1, r"'min_delta' parameter of KerasTransferClassifier must be a float in the range \[0\.0, "
                        r"inf\)\. Got -0\.1"),
    ("reduce_lr_factor", 1.0, r"'reduce_lr_factor' parameter of KerasTransferClassifier must be a float in the range "
                              r"\(0\.0, 1\.0\)\. Got 1\.0"),
    ("class_weight", "auto", r"'class_weight' parameter of KerasTransferClassifier must be None, a str among "
                             r"\{'balanced'\} or an "
                             r"instance of 'dict'\. Got 'auto'"),
    ("augment_flip", "diagonal", r"'augment_flip' parameter of KerasTransferClassifier must be None or a str among "
                                 r"\{(?=.*'horizontal')(?=.*'vertical').*\}\. Got 'diagonal'"),
    ("augment_zoom", 1.0, r"'augment_zoom' parameter of KerasTransferClassifier must be a float in the range "
                          r"\[0\.0, 1\.0\)\. "
                          r"Got 1\.0"),
    ("validation_fraction", 1.0, r"'validation_fraction' parameter of KerasTransferClassifier must be a float "
                                 r"in the range "
                                 r"\[0\.0, 1\.0\)\. Got 1\.0"),
])
def test_bad_parameters_are_named(tiny_backbone, param, value, message):
    X, y = _squares(8, seed=0)
    with pytest.raises(ValueError, match=message):
        _small(**{param: value}).fit(X, y)


def test_unfitted_predict_raises():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        _small().predict([np.zeros((32, 32), np.float32)])


# ---------------------------------------------------------------------------------------------
# cache_trunk: frozen trunk activations cached per sample, only the unfrozen top + head trained
# ---------------------------------------------------------------------------------------------
MOBILE = "fp_test_transfer_mobilenet_v2"


@pytest.fixture(scope="module")
def mobile_backbone():
    """A random-weights MobileNetV2 at 32x32, registered with fixed weights (``weights="imagenet"``
    then means these weights in every build) and non-trivial BN statistics in its last blocks."""
    keras.utils.set_random_seed(1)
    model = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3))
    rng = np.random.default_rng(0)
    for layer in model.layers[-20:]:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
    register_backbone(MOBILE, model, preprocess=preprocess_tf, overwrite=True)
    yield model
    unregister_backbone(MOBILE)


def _fit_both(X, y, **params):
    plain = _small(cache_trunk=False, **params).fit(X, y)
    cached = _small(cache_trunk=True, **params).fit(X, y)
    return plain, cached


def test_cached_trunk_matches_end_to_end_training_head_only(tiny_backbone):
    X, y = _squares(24, seed=6)
    X_test, _ = _squares(10, seed=7)
    plain, cached = _fit_both(X, y, weights="imagenet", epochs=4)
    assert plain.trunk_cut_layer_ is None and cached.trunk_cut_layer_ == "relu2"  # the backbone's output
    assert cached.trunk_activation_shape_ == (7, 7, 8)
    assert cached.n_head_epochs_ == plain.n_head_epochs_
    # same seed, same architecture, same initial weights, same batches: the same training up to float rounding
    np.testing.assert_allclose(cached.history_["loss"], plain.history_["loss"], rtol=1e-4)
    np.testing.assert_allclose(cached.predict_proba(X_test), plain.predict_proba(X_test), atol=1e-4)
    # the cached-activation prediction is the whole network's on the image
    batch = np.stack([np.repeat(im[:, :, None], 3, axis=2) for im in X_test]).astype(np.float32) * 255.0
    direct = np.asarray(cached.model_(preprocess_tf(batch), training=False))[:, 0]
    np.testing.assert_allclose(cached.predict_proba(X_test)[:, 1], direct, rtol=1e-5, atol=1e-6)


def test_cached_trunk_matches_end_to_end_fine_tuning_with_residuals_and_frozen_bn(mobile_backbone):
    # last block of MobileNetV2 (block_16: expand, depthwise, project, each with BN) and the top 1x1 conv:
    # the cut is block_15_add, the output of the last residual connection
    X, y = _squares(24, seed=8)
    X_test, _ = _squares(10, seed=9)
    names = [layer.name for layer in mobile_backbone.layers]
    unfreeze = len(names) - 1 - names.index("block_15_add")
    plain, cached = _fit_both(X, y, backbone=MOBILE, weights="imagenet", unfreeze=unfreeze, epochs=2,
                              fine_tune_epochs=2, learning_rate=1e-2, fine_tune_learning_rate=1e-3,
                              patience=None, reduce_lr_patience=None)
    assert cached.trunk_cut_layer_ == "block_15_add" and cached.trunk_activation_shape_ == (1, 1, 160)
    assert cached.n_unfrozen_layers_ == plain.n_unfrozen_layers_ == 11
    np.testing.assert_allclose(cached.history_["loss"], plain.history_["loss"], rtol=1e-3)
    np.testing.assert_allclose(cached.predict_proba(X_test), plain.predict_proba(X_test), atol=1e-4)
    cached_base, plain_base = _base(cached.model_), _base(plain.model_)
    for name in ("block_16_project", "Conv_1", "block_16_project_BN", "block_15_project"):
        for got, expected in zip(cached_base.get_layer(name).get_weights(), plain_base.get_layer(name).get_weights()):
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    # the frozen BN of the unfrozen top kept its statistics (inference mode) in the cached path
    for got, registered in zip(cached_base.get_layer("Conv_1_bn").get_weights(),
                               mobile_backbone.get_layer("Conv_1_bn").get_weights()):
        # exact: weights are copied, not computed
        np.testing.assert_array_equal(got, registered)


def test_cut_crossed_by_a_residual_connection_is_refused_by_name(mobile_backbone):
    names = [layer.name for layer in mobile_backbone.layers]
    # cutting after block_15_project_BN leaves block_15_add needing block_14_add's output
    unfreeze = len(names) - 1 - names.index("block_15_project_BN")
    X, y = _squares(8, seed=0)
    clf = _small(backbone=MOBILE, weights="imagenet", unfreeze=unfreeze, cache_trunk=True, validation_fraction=0)
    with pytest.raises(ValueError, match=r"after layer 'block_15_project_BN'.*residual connection crosses the cut"
                                         r".*unfreeze=\d+ \(first unfrozen layer 'block_15_expand'\)"
                                         r".*cache_trunk=False"):
        clf.fit(X, y)


def test_valid_cut_indices_of_mobilenet_v2_exclude_the_inside_of_residual_blocks(mobile_backbone):
    from featurepipe.classifiers.keras_transfer import valid_cut_indices

    names = [layer.name for layer in mobile_backbone.layers]
    valid = {names[i] for i in valid_cut_indices(mobile_backbone)}
    assert {names[0], "block_14_add", "block_15_add", "block_16_project_BN", "Conv_1", "out_relu"} <= valid
    # inside block 15 (its input feeds block_15_add) nothing is a cut; block 16 has no residual connection
    assert not valid & {n for n in names if n.startswith("block_15_") and n != "block_15_add"}
    assert {n for n in names if n.startswith("block_16_")} <= valid


def test_trunk_activations_are_cached_per_sample_on_disk(tiny_backbone, tmp_path):
    from featurepipe.cache import FeatureCache

    X, y = _squares(16, seed=10)
    clf = _small(weights="imagenet", unfreeze="conv2", epochs=1, fine_tune_epochs=1, cache=str(tmp_path),
                 cache_trunk=True).fit(X, y)
    assert clf.trunk_cut_layer_ == "relu1"
    (step_dir,) = list(tmp_path.iterdir())
    assert "layer='relu1'" in (step_dir / "STEP.txt").read_text()
    entries = sorted(step_dir.glob("*/*.npz"))
    assert len(entries) == 16
    # each entry is the frozen trunk's (conv1 -> bn1 -> relu1) spatial output for its image
    trunk = keras.Model(tiny_backbone.input, tiny_backbone.get_layer("relu1").output)
    batch = np.stack([np.repeat(im[:, :, None], 3, axis=2) for im in X]).astype(np.float32) * 255.0
    expected = np.asarray(trunk(preprocess_tf(batch), training=False))
    got = {path.stem: FeatureCache.read_entry_unverified(path)[0] for path in entries}
    from featurepipe import as_samples

    for sample, want in zip(as_samples(X), expected):
        np.testing.assert_allclose(got[sample.key], want, rtol=1e-5, atol=1e-5)
    # a clone refits from the cache: same predictions
    again = clone(clf).fit(X, y)
    np.testing.assert_allclose(again.predict_proba(X), clf.predict_proba(X), atol=1e-5)


def test_pickled_cached_trunk_classifier_predicts_from_images(tiny_backbone):
    X, y = _squares(16, seed=11)
    clf = _small(weights="imagenet", epochs=2, cache_trunk=True).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    assert not again._cached_trunk_usable()  # no top model after reloading: the whole network runs
    np.testing.assert_allclose(again.predict_proba(X), clf.predict_proba(X), rtol=1e-5, atol=1e-6)


def test_augmentation_is_refused_with_cache_trunk_and_turns_auto_off(tiny_backbone):
    X, y = _squares(16, seed=12)
    with pytest.raises(ValueError, match=r"cache_trunk=True cannot be combined with augmentation "
                                         r"\(augment_flip='horizontal'"):
        _small(cache_trunk=True, augment_flip="horizontal").fit(X, y)
    auto = _small(augment_zoom=0.1, epochs=1)
    assert not auto._uses_cached_trunk() and _small()._uses_cached_trunk()
    with pytest.raises(ValueError, match=r"'cache_trunk' parameter of KerasTransferClassifier must be a str among "
                                         r"\{'auto'\} or a bool among \{False, True\}\. Got 'yes'"):
        _small(cache_trunk="yes").fit(X, y)
