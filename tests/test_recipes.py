"""Recipes: every one builds, clones, has a valid grid; the fast ones learn a separable task."""

import pickle

import numpy as np
import pytest
from imblearn.over_sampling import SMOTE, RandomOverSampler
from imblearn.pipeline import Pipeline
from sklearn.base import clone
from sklearn.model_selection import ParameterGrid
from sklearn.svm import SVC

from featurepipe import recipes
from featurepipe.preprocessing import CLAHE, MedianFilter, OtsuROI

NAMES = [name for name, _, _ in recipes.list()]
EXPECTED = {
    "convnet_svm_linear", "convnet_svm_rbf", "convnet_elm", "convnet_rf", "firstorder_glcm_svm", "glcm_svm",
    "lbp_svm", "hog_svm", "curvelet_svm", "bovw_svm", "shape_texture_rf", "hybrid_svm", "keras_head",
    "keras_finetune", "keras_finetune_earlystop", "stacked_autoencoder",
}


def _images(n_per_class, size=32, seed=0):
    """Bright disc on a dark background: smooth inside (class "smooth") or strongly textured ("rough")."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, labels = [], []
    for label in ("smooth", "rough"):
        for _ in range(n_per_class):
            cy, cx = rng.uniform(size * 0.4, size * 0.6, 2)
            r = rng.uniform(size * 0.25, size * 0.35)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
            # Smooth: noise-free gentle ramp (no texture at all); rough: strong pixel noise in the disc.
            img = (0.1 + 0.1 * xx / size).astype(np.float32)
            inside = 0.7 + (rng.normal(0, 0.15, (size, size)) if label == "rough" else 0.05 * yy / size)
            img[disc] = inside[disc]
            images.append(np.clip(img, 0, 1).astype(np.float32))
            labels.append(label)
    return images, np.array(labels)


def test_registry_lists_every_recipe_with_description_and_citation():
    assert set(NAMES) == EXPECTED
    for name, description, citation in recipes.list():
        assert description and citation and "(" in citation  # author (year) form
        assert recipes.get(name).name == name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_recipe_builds_clones_and_accepts_its_first_grid_point(name):
    pipe = recipes.make(name)
    assert isinstance(pipe, Pipeline)
    assert pipe.steps[-1][0] == "classifier"
    copy = clone(pipe)
    grid = recipes.grid(name)
    assert grid, f"{name} has no default grid"
    first = ParameterGrid(grid)[0]
    copy.set_params(**first)
    params = copy.get_params()
    for key, value in first.items():
        assert params[key] == value
    pickle.loads(pickle.dumps(copy))
    # SVC must not be asked for probability= (deprecated in scikit-learn 1.9).
    if isinstance(pipe.steps[-1][1], SVC):
        assert pipe.steps[-1][1].get_params()["probability"] in ("deprecated", False)


def test_handcrafted_recipes_do_not_read_masks_by_default():
    for name in ("firstorder_glcm_svm", "glcm_svm", "lbp_svm", "hog_svm"):
        feats = recipes.make(name).named_steps["features"]
        flags = [v for k, v in feats.get_params().items() if k.endswith("use_mask")]
        assert flags and not any(flags), name
        feats = recipes.make(name, use_mask=True).named_steps["features"]
        assert all(v for k, v in feats.get_params().items() if k.endswith("use_mask")), name
    assert recipes.make("curvelet_svm").named_steps["features"].roi == "image"
    assert recipes.make("bovw_svm").named_steps["features"].roi == "image"
    # Shape features need a region: the Otsu region replaces the (absent) expert mask.
    region = recipes.make("shape_texture_rf").named_steps["region"]
    assert isinstance(region, OtsuROI) and region.output == "mask"
    assert "region" not in recipes.make("shape_texture_rf", use_mask=True).named_steps


def test_options_preprocessing_balancing_backbone():
    pipe = recipes.make("hog_svm", preprocessing=["median", "clahe", "otsu_roi"], balancing="smote")
    names = [n for n, _ in pipe.steps]
    assert names == ["median", "clahe", "otsu_roi", "features", "scale", "balance", "classifier"]
    assert isinstance(pipe.named_steps["median"], MedianFilter)
    assert isinstance(pipe.named_steps["clahe"], CLAHE)
    assert isinstance(pipe.named_steps["balance"], SMOTE)
    # Oversampling sits after the feature step, inside the pipeline.
    assert names.index("balance") > names.index("features")
    assert isinstance(recipes.make("glcm_svm", balancing="random").named_steps["balance"], RandomOverSampler)
    assert recipes.make("convnet_elm", backbone="mobilenet_v2").named_steps["features"].backbone == "mobilenet_v2"
    assert recipes.make("convnet_elm").named_steps["features"].backbone == "efficientnet_lite0"
    assert recipes.make("keras_head", backbone="resnet50").named_steps["classifier"].backbone == "resnet50"
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        recipes.make("nope")
    with pytest.raises(ValueError, match="balancing must be one of"):
        recipes.make("hog_svm", balancing="adasyn")
    with pytest.raises(ValueError, match="preprocessing: unknown step 'sharpen'"):
        recipes.make("hog_svm", preprocessing="sharpen")
    with pytest.raises(ValueError, match="not available for the end-to-end recipe 'keras_head'"):
        recipes.make("keras_head", balancing="smote")
    with pytest.raises(TypeError, match="use_mask must be True or False"):
        recipes.make("hog_svm", use_mask="yes")


def test_smote_runs_on_features_of_the_training_part():
    X, y = _images(16)
    X, y = X[:24], y[:24]  # 16 smooth, 8 rough
    pipe = recipes.make("firstorder_glcm_svm", balancing="smote")
    pipe.fit(X, y)
    feats = pipe.named_steps["scale"].transform(pipe.named_steps["features"].transform(X))
    Xr, yr = clone(pipe.named_steps["balance"]).fit_resample(feats, y)
    assert Xr.shape[1] == feats.shape[1]  # oversampled in feature space
    assert (yr == "smooth").sum() == (yr == "rough").sum() == 16
    assert pipe.predict(X).shape == (24,)


FAST = ["firstorder_glcm_svm", "glcm_svm", "lbp_svm", "hog_svm", "curvelet_svm", "bovw_svm", "shape_texture_rf"]


@pytest.mark.parametrize("name", FAST)
def test_handcrafted_recipes_learn_a_separable_texture_task(name):
    # ORB patches need images larger than 2 x patch_size: 64 px for the bag of words.
    size = 64 if name == "bovw_svm" else 32
    X_train, y_train = _images(20, size=size, seed=1)
    X_test, y_test = _images(10, size=size, seed=2)
    pipe = recipes.make(name)
    if name == "bovw_svm":
        pipe.set_params(features__n_words=16)
    if name == "shape_texture_rf":
        pipe.set_params(region__opening_radius=2)  # the default (15 px) is for full-size images
    pipe.fit(X_train, y_train)
    accuracy = float(np.mean(pipe.predict(X_test) == y_test))
    assert accuracy >= 0.9, (name, accuracy)


def _identity(batch):
    return batch


@pytest.fixture
def tiny_backbone():
    """A registered one-convolution backbone (fixed seed), so CNN recipes run in a second."""
    import keras

    from featurepipe.cnn import list_backbones, register_backbone, unregister_backbone

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="feat",
                            kernel_initializer=keras.initializers.GlorotUniform(seed=0))(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    register_backbone("tiny_recipe_net", model, preprocess=_identity, overwrite=True)
    yield "tiny_recipe_net"
    if "tiny_recipe_net" in list_backbones():
        unregister_backbone("tiny_recipe_net")


@pytest.mark.parametrize("name", ["convnet_elm", "convnet_svm_linear", "hybrid_svm"])
def test_convnet_recipes_with_a_tiny_backbone_learn_the_task(name, tiny_backbone):
    X_train, y_train = _images(20, seed=3)
    X_test, y_test = _images(10, seed=4)
    pipe = recipes.make(name, backbone=tiny_backbone)
    prefix = "features__cnn__" if name == "hybrid_svm" else "features__"
    pipe.set_params(**{prefix + "cache": False})
    if name == "convnet_elm":
        pipe.set_params(classifier__n_hidden=50, classifier__alpha=0.1)  # 20 images: light ridge
    pipe.fit(X_train, y_train)
    accuracy = float(np.mean(pipe.predict(X_test) == y_test))
    assert accuracy >= 0.9, (name, accuracy)


def test_run_benchmark_accepts_recipe_names_and_matches_the_built_pipeline():
    from featurepipe.benchmark import run_benchmark

    X, y = _images(10, seed=6)
    groups = [f"p{i}" for i in range(len(y))]
    by_name = run_benchmark((X, y, groups), ["glcm_svm"], cv=2, duplicates=None, progress=False, plots=False)
    by_object = run_benchmark((X, y, groups), {"glcm_svm": recipes.make("glcm_svm")}, cv=2, duplicates=None,
                              progress=False, plots=False)
    assert list(by_name.summary) == ["glcm_svm"]
    for a, b in zip(by_name.folds, by_object.folds, strict=True):
        assert a["y_pred"] == b["y_pred"]
    assert by_name.summary["glcm_svm"]["accuracy"]["mean"] == by_object.summary["glcm_svm"]["accuracy"]["mean"]
    # The separable task is learned, so the recipe really ran.
    assert by_name.summary["glcm_svm"]["accuracy"]["mean"] >= 0.9
    with pytest.raises(TypeError, match=r"pipelines\['x'\] is the string 'hog\+svm', which is not a recipe name"):
        run_benchmark((X, y, groups), {"x": "hog+svm"})
