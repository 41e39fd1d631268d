"""The CNN recipes' feature options (issue 14 #1): each builds what it says, computes what it says
(against CNNFeatures, NumPy and scikit-learn by hand), and the linear SVM's C follows the real
feature count."""

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from featurepipe import PowerNormalizer, recipes
from featurepipe.cnn import CNNFeatures, get_backbone
from featurepipe.cnn.preprocessing import input_size_pair
from featurepipe.feature_store import is_stateless
from featurepipe.features import FeatureBank

CNN_RECIPES = ["convnet_svm_linear", "convnet_svm_rbf", "convnet_elm", "convnet_rf", "hybrid_svm"]
OPTIONS = ("extra_backbones", "layers", "pooling", "tta", "feature_norm", "whiten")


def _identity(batch):
    return batch


@pytest.fixture(scope="module")
def tiny_backbones():
    """Two registered random-weight CNNs (fixed seeds, 32x32): 8 channels over two layers, and 6 channels."""
    from featurepipe.cnn import register_backbone, unregister_backbone

    inputs = keras.Input((32, 32, 3))
    init = keras.initializers.GlorotUniform
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1", kernel_initializer=init(0))(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv2", kernel_initializer=init(1))(x)
    register_backbone("tiny_ff_a", keras.Model(inputs, x), preprocess=_identity, overwrite=True)
    y = keras.layers.Conv2D(6, 5, strides=2, activation="relu", name="conv", kernel_initializer=init(2))(inputs)
    register_backbone("tiny_ff_b", keras.Model(inputs, y), preprocess=_identity, overwrite=True)
    yield "tiny_ff_a", "tiny_ff_b"
    unregister_backbone("tiny_ff_a")
    unregister_backbone("tiny_ff_b")


def _images(n, seed):
    """Bright-square (class 1) or plain noise (class 0) 32x32 grayscale images."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for i in range(n):
        image = rng.uniform(0, 0.5, (32, 32)).astype(np.float32)
        if i % 2:
            r, c = rng.integers(4, 20, 2)
            image[r:r + 8, c:c + 8] += 0.5
        X.append(image)
        y.append(i % 2)
    return X, np.array(y)


@pytest.mark.parametrize("name", CNN_RECIPES)
def test_every_cnn_recipe_takes_the_feature_options_off_by_default(name):
    recipe = recipes.get(name)
    assert recipe.options[-len(OPTIONS):] == OPTIONS
    assert [recipe.option_defaults[o] for o in OPTIONS] == [(), None, "avg", None, None, False]
    assert "extra_backbones" in recipe.defaults and "benchmarks/frozen_features.py" in recipe.defaults
    default = recipes.make(name)
    explicit = recipes.make(name, **{o: recipe.option_defaults[o] for o in OPTIONS})
    assert repr(default) == repr(explicit)  # exact: the same construction, the same string
    assert "whiten" not in default.named_steps


def test_options_reach_the_extractors_and_steps():
    pipe = recipes.make("convnet_svm_rbf", tta="flip_crops", pooling="gem", layers=["block10_add", "top_activation"],
                        feature_norm="l2")
    bank = pipe.named_steps["features"]  # imbalanced-learn refuses a Pipeline as a step: a bank of one
    assert isinstance(bank, FeatureBank) and [n for n, _ in bank.transformer_list] == ["efficientnet_lite0"]
    features = bank.transformer_list[0][1]
    assert isinstance(features, Pipeline) and [n for n, _ in features.steps] == ["cnn", "l2"]
    cnn = features.named_steps["cnn"]
    assert (cnn.tta, cnn.pooling, cnn.layer, cnn.backbone) == ("flip_crops", "gem", ("block10_add", "top_activation"),
                                                               "efficientnet_lite0")
    assert is_stateless(features)  # so the runner computes and caches it once per sample
    hybrid = recipes.make("hybrid_svm", extra_backbones="efficientnet_lite2", feature_norm="power_l2", whiten=True)
    deep = hybrid.named_steps["features"].get_params()["cnn"]
    assert isinstance(deep, FeatureBank) and [n for n, _ in deep.transformer_list] == ["efficientnet_lite0",
                                                                                        "efficientnet_lite2"]
    assert [n for n, _ in deep.transformer_list[1][1].steps] == ["cnn", "power", "l2"]
    assert [n for n, _ in hybrid.steps] == ["features", "scale", "whiten", "whiten_l2", "classifier"]
    whiten = hybrid.named_steps["whiten"]
    assert (whiten.n_components, whiten.whiten) == (recipes.WHITEN_VARIANCE, True)


def test_native_resolution_of_lite1_and_lite2():
    # input_size=None: each backbone at the resolution its weights were trained at.
    pipe = recipes.make("convnet_svm_linear", backbone="efficientnet_lite1", extra_backbones=["efficientnet_lite2"])
    sizes = [input_size_pair(m.input_size, get_backbone(m.backbone).default_input_size)
             for _, m in pipe.named_steps["features"].transformer_list]
    assert sizes == [(240, 240), (260, 260)]


def test_linear_svm_c_is_one_over_the_real_feature_count(tiny_backbones):
    a, b = tiny_backbones

    def c(**options):
        return recipes.make("convnet_svm_linear", backbone=a, **options).named_steps["classifier"].estimator.C

    assert c() == 1 / 8
    assert c(extra_backbones=[b]) == 1 / (8 + 6)
    assert c(layers=["conv1", "conv2"]) == 1 / (4 + 8)           # channels of the tapped layers, read from the model
    assert c(layers=[-1], extra_backbones=[b], pooling="max") == 1 / (8 + 6)  # the last layer of each
    with pytest.raises(ValueError, match=r"layers: CNNFeatures: layer 'conv1' is not a layer of backbone 'tiny_ff_b'"):
        c(layers=["conv1"], extra_backbones=[b])  # layers apply to every backbone
    assert c(whiten=True) == 1.0  # whitened, L2-normalised vectors: mean squared norm 1
    assert recipes.make("convnet_svm_linear").named_steps["classifier"].estimator.C == 1 / 1280


def test_features_with_power_l2_and_two_backbones_by_hand(tiny_backbones):
    a, b = tiny_backbones
    X, _ = _images(6, seed=0)
    pipe = recipes.make("convnet_svm_linear", backbone=a, extra_backbones=[b], feature_norm="power_l2", tta="flip")
    assert [n for n, _ in pipe.named_steps["features"].transformer_list] == [a, b]
    got = pipe.named_steps["features"].transform(X)
    blocks = []
    for name in (a, b):
        raw = CNNFeatures(backbone=name, weights="imagenet", tta="flip", cache=False).transform(X)
        powered = np.sign(raw) * np.sqrt(np.abs(raw))
        blocks.append(powered / np.linalg.norm(powered, axis=1, keepdims=True))
    # the same float32 network outputs, then sqrt and a norm (a few ulp apart)
    np.testing.assert_allclose(got, np.hstack(blocks), rtol=1e-12, atol=1e-15)
    assert got.shape == (6, 14)


def test_whitening_is_fitted_on_the_training_part_only(tiny_backbones):
    a, _ = tiny_backbones
    X_train, y_train = _images(24, seed=1)
    X_test, _ = _images(8, seed=2)
    pipe = recipes.make("convnet_svm_linear", backbone=a, whiten=True).fit(X_train, y_train)
    extractor = CNNFeatures(backbone=a, weights="imagenet", cache=False)
    scaler = StandardScaler().fit(extractor.transform(X_train))
    pca = PCA(n_components=0.9, whiten=True, svd_solver="full").fit(scaler.transform(extractor.transform(X_train)))
    expected = Normalizer().transform(pca.transform(scaler.transform(extractor.transform(X_test))))
    # the same LAPACK SVD of the same matrix; signs fixed by scikit-learn's svd_flip
    np.testing.assert_allclose(pipe[:-1].transform(X_test), expected, rtol=1e-9, atol=1e-9)
    assert pipe.named_steps["whiten"].n_components_ == pca.n_components_ < 8
    assert np.mean(pipe.predict(X_test) == np.array([0, 1] * 4)) >= 0.75


@pytest.mark.parametrize("options, error, message", [
    ({"feature_norm": "l1"}, ValueError, r"feature_norm must be one of 'l2', 'power_l2'; got 'l1'"),
    ({"whiten": "yes"}, TypeError, r"whiten must be True or False; got 'yes'"),
    ({"extra_backbones": ["efficientnet_lite0"]}, ValueError,
     r"extra_backbones must be backbone names other than backbone='efficientnet_lite0', each once"),
    ({"extra_backbones": ["no_such_net"]}, ValueError, r"backbone: .*no_such_net"),
])
def test_bad_option_values_are_named(options, error, message):
    with pytest.raises(error, match=message):
        recipes.make("convnet_svm_linear", **options)


def test_a_power_normalizer_in_the_features_is_the_documented_class():
    features = recipes.make("convnet_elm", feature_norm="power_l2").named_steps["features"].transformer_list[0][1]
    assert isinstance(features.named_steps["power"], PowerNormalizer) and features.named_steps["power"].alpha == 0.5


def test_a_feature_option_in_an_experiment_file_reaches_the_benchmark(tiny_backbones, tmp_path, monkeypatch):
    from featurepipe.cli import main
    from featurepipe.demo import load_demo

    a, _ = tiny_backbones
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.toml").write_text(f"""\
output = "results"
plots = false
cache = "memory"

[dataset]
demo = true

[cv]
splits = 3
seed = 0

[[pipelines]]
name = "cnn_tta"
recipe = "convnet_svm_linear"
backbone = "{a}"
tta = "flip"
feature_norm = "power_l2"
""")
    assert main(["benchmark", "--config", "exp.toml"]) == 0
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    params = results["pipelines"]["cnn_tta"]["params"]
    assert params[f"features__{a}__cnn__tta"] == "flip" and f"features__{a}__power__alpha" in params
    assert results["pipelines"]["cnn_tta"]["stateless_prefix"] == ["features"]
    # The first fold's predictions are those of the recipe built by hand with the same options.
    fold = next(f for f in results["folds"] if f["fold"] == 0)
    demo = load_demo()
    test = np.asarray(fold["test_index"])
    train = np.setdiff1d(np.arange(len(demo.y)), test)
    pipe = recipes.make("convnet_svm_linear", backbone=a, tta="flip", feature_norm="power_l2", random_state=0)
    pipe.fit(demo.X[train], np.asarray(demo.y)[train])
    assert [str(p) for p in pipe.predict(demo.X[test])] == [str(p) for p in fold["y_pred"]]


@pytest.mark.parametrize("name", CNN_RECIPES)
def test_every_cnn_recipe_learns_with_all_options_combined(name, tiny_backbones):
    a, b = tiny_backbones
    X_train, y_train = _images(30, seed=5)
    X_test, y_test = _images(10, seed=6)
    pipe = recipes.make(name, backbone=a, extra_backbones=[b], tta="flip", pooling="gem", layers=[-1],
                        feature_norm="power_l2", whiten=True)
    if name == "convnet_elm":
        pipe.set_params(classifier__estimator__n_hidden=50, classifier__estimator__alpha=0.1)  # 30 images
    pipe.fit(X_train, y_train)
    proba = pipe.predict_proba(X_test)
    # exact: predict is documented as the argmax of predict_proba
    np.testing.assert_array_equal(pipe.predict(X_test), pipe.classes_[np.argmax(proba, axis=1)])
    assert np.mean(pipe.predict(X_test) == y_test) >= 0.8, name


@pytest.mark.parametrize("name", ["fusion_soft_vote", "fusion_stack"])
def test_fusions_pass_the_feature_options_to_their_cnn_member(name):
    recipe = recipes.get(name)
    assert recipe.options[-len(OPTIONS):] == OPTIONS
    assert [recipe.option_defaults[o] for o in OPTIONS] == [(), None, "avg", None, None, False]
    fusion = recipes.make(name, tta="flip", whiten=True)
    members = dict(fusion.named_steps["classifier"].estimators)
    assert members["deep"].named_steps["features"].tta == "flip" and "whiten" in members["deep"].named_steps
    assert "whiten" not in members["hog"].named_steps and "whiten" not in members["texture"].named_steps
    assert repr(recipes.make(name)) == repr(recipes.make(name, **{o: recipe.option_defaults[o] for o in OPTIONS}))
