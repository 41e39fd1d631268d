"""Recipes: every one builds, clones, has a valid grid; the fast ones learn a separable task."""

import pickle

import numpy as np
import pytest
from imblearn.over_sampling import SMOTE, RandomOverSampler
from imblearn.pipeline import Pipeline
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import ParameterGrid, StratifiedKFold, cross_val_predict
from sklearn.svm import SVC, LinearSVC

from featurepipe import recipes
from featurepipe.preprocessing import CLAHE, MedianFilter, OtsuROI

NAMES = [name for name, _, _ in recipes.list()]
EXPECTED = {
    "convnet_svm_linear", "convnet_svm_rbf", "convnet_elm", "convnet_rf", "firstorder_glcm_svm", "glcm_svm",
    "lbp_svm", "hog_svm", "curvelet_svm", "bovw_svm", "shape_texture_rf", "hybrid_svm", "keras_head",
    "keras_finetune", "keras_finetune_earlystop", "stacked_autoencoder", "fusion_soft_vote", "fusion_stack",
    "convnet_tiles_svm", "convnet_ensemble_svm",
}
FUSION = {"fusion_soft_vote", "fusion_stack"}


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
    classifier = pipe.steps[-1][1]
    if isinstance(classifier, CalibratedClassifierCV):
        # Calibrated on inner folds of the training part; the published classifier itself is kept.
        assert (classifier.method, classifier.cv, classifier.ensemble) == ("temperature", 3, False)
        assert all(key.startswith("classifier__estimator__") for key in grid if key.startswith("classifier__"))
        classifier = classifier.estimator
    # SVC must not be asked for probability= (deprecated in scikit-learn 1.9).
    if isinstance(classifier, SVC):
        assert classifier.get_params()["probability"] in ("deprecated", False)
    assert hasattr(pipe, "predict_proba")


def test_which_recipes_are_calibrated_and_convnet_svm_linear_is_a_one_vs_rest_linear_svm():
    end_to_end_or_logistic = {"keras_head", "keras_finetune", "keras_finetune_earlystop", "stacked_autoencoder"}
    for name in EXPECTED - FUSION:
        calibrated = isinstance(recipes.make(name).named_steps["classifier"], CalibratedClassifierCV)
        assert calibrated == (name not in end_to_end_or_logistic), name
    # The fusion averages calibrated members.
    vote = recipes.make("fusion_soft_vote").named_steps["classifier"]
    assert vote.voting == "soft" and vote.weights is None
    for _, member in vote.estimators:
        assert isinstance(member.named_steps["classifier"], CalibratedClassifierCV)
    # One weight vector per class (class activation maps need it), still a linear SVM.
    assert isinstance(recipes.make("convnet_svm_linear").named_steps["classifier"].estimator, LinearSVC)


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


def test_convnet_ensemble_svm_is_convnet_svm_linear_with_its_stated_feature_options():
    """The named recipe is exactly convnet_svm_linear with the three options its defaults text names."""
    ensemble = recipes.make("convnet_ensemble_svm")
    by_options = recipes.make("convnet_svm_linear", extra_backbones=recipes.ENSEMBLE_EXTRA_BACKBONES, tta="flip",
                              feature_norm="power_l2")
    assert repr(ensemble) == repr(by_options)
    members = ensemble.named_steps["features"].transformer_list
    assert [name for name, _ in members] == ["efficientnet_lite0", "efficientnet_lite2"]
    for name, member in members:
        assert [step for step, _ in member.steps] == ["cnn", "power", "l2"]
        assert (member.named_steps["cnn"].backbone, member.named_steps["cnn"].tta) == (name, "flip")
        assert member.named_steps["power"].alpha == 0.5
    # SVMlight's C: 1 / (1280 + 1280) standardised features of the two networks.
    assert ensemble.named_steps["classifier"].estimator.C == pytest.approx(1 / 2560)
    assert "Perronnin" in recipes.get("convnet_ensemble_svm").defaults


@pytest.mark.parametrize("name", ["convnet_elm", "convnet_svm_linear", "hybrid_svm"])
def test_convnet_recipes_with_a_tiny_backbone_learn_the_task(name, tiny_backbone):
    X_train, y_train = _images(20, seed=3)
    X_test, y_test = _images(10, seed=4)
    pipe = recipes.make(name, backbone=tiny_backbone)
    prefix = "features__cnn__" if name == "hybrid_svm" else "features__"
    pipe.set_params(**{prefix + "cache": False})
    if name == "convnet_elm":
        pipe.set_params(classifier__estimator__n_hidden=50, classifier__estimator__alpha=0.1)  # light ridge
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


def _three_classes(n_per_class, size=32, seed=0):
    """Three classes: the two of :func:`_images` plus a dark, flat disc ("dark")."""
    images, labels = _images(n_per_class, size=size, seed=seed)
    rng = np.random.default_rng(seed + 100)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(n_per_class):
        cy, cx = rng.uniform(size * 0.4, size * 0.6, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(size * 0.25, size * 0.35) ** 2
        img = np.full((size, size), 0.6, np.float32)
        img[disc] = 0.15
        images.append(img)
    return images, np.concatenate([labels, ["dark"] * n_per_class])


def _fast_settings(name, pipe, backbone):
    """Tiny-data settings of recipe ``name`` (small vocabularies, few epochs, no feature cache)."""
    params = {}
    if name == "bovw_svm":
        params["features__n_words"] = 8
    if name == "shape_texture_rf":
        params["region__opening_radius"] = 2
    if name in ("convnet_rf", "shape_texture_rf"):
        params["classifier__estimator__n_estimators"] = 20
    if name == "convnet_elm":
        params.update(classifier__estimator__n_hidden=50, classifier__estimator__alpha=0.1)
    if name in ("convnet_svm_linear", "convnet_svm_rbf", "convnet_elm", "convnet_rf"):
        params["features__cache"] = False
    if name == "hybrid_svm":
        params["features__cnn__cache"] = False
    if name == "convnet_ensemble_svm":  # the second network too is the tiny one (Lite2 would take seconds)
        params.update(**{f"features__{backbone}__cnn__cache": False}, features__efficientnet_lite2__cnn__cache=False,
                      features__efficientnet_lite2__cnn__backbone=backbone)
    if name == "convnet_tiles_svm":  # 32-px images: a small opening, 16-px tiles (several per image)
        params.update(breast__opening_radius=2, features__cache=False, features__tile=16)
    if name.startswith("keras_"):
        params.update(classifier__weights=None, classifier__input_size=32, classifier__dense_units=(8,),
                      classifier__epochs=2, classifier__batch_size=8, classifier__unfreeze=0)
        if name != "keras_head":
            params["classifier__fine_tune_epochs"] = 1
    if name == "stacked_autoencoder":
        params.update(features__input_size=16, features__hidden_units=(16, 8), features__epochs=2,
                      features__fine_tune_epochs=1)
    if name in FUSION:
        params["classifier__deep__features__cache"] = False
    pipe.set_params(**params)
    return pipe


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_recipe_predicts_probabilities_that_agree_with_predict(name, tiny_backbone):
    size = 64 if name == "bovw_svm" else 32
    X, y = _three_classes(8, size=size, seed=11)
    X_test, _ = _three_classes(3, size=size, seed=12)
    backbone = {"backbone": tiny_backbone} if recipes.get(name).uses_cnn else {}  # refused by the others
    pipe = _fast_settings(name, recipes.make(name, **backbone), tiny_backbone)
    pipe.fit(X, y)
    proba = pipe.predict_proba(X_test)
    assert proba.shape == (len(X_test), 3)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    classes = list(pipe.classes_)
    assert classes == sorted(["smooth", "rough", "dark"])
    # predict is the argmax of predict_proba, for every recipe.
    np.testing.assert_array_equal(pipe.predict(X_test), np.asarray(classes)[proba.argmax(axis=1)])  # exact: labels
    classifier = pipe.named_steps["classifier"]
    if isinstance(classifier, CalibratedClassifierCV) and not isinstance(classifier.estimator, SVC):
        # Calibration changes no decision of the published classifier (fitted on all the training part).
        # (The inner classifier is fitted on class indices into classes_.)
        inner = classifier.calibrated_classifiers_[0].estimator
        features = pipe[:-1].transform(X_test)
        # exact: class labels
        np.testing.assert_array_equal(pipe.predict(X_test), classifier.classes_[inner.predict(features)])


def _temperature_by_hand(decision, y, classes):
    """Inverse temperature minimising the multinomial log-loss of ``softmax(beta * decision)`` (SciPy)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    logits = np.column_stack([-decision, decision]) if decision.ndim == 1 else decision
    target = np.searchsorted(classes, y)

    def loss(log_beta):
        return -log_softmax(np.exp(log_beta) * logits, axis=1)[np.arange(len(y)), target].sum()

    return float(np.exp(minimize_scalar(loss, bounds=(-10, 10), method="bounded",
                                        options={"xatol": 1e-10}).x))


@pytest.mark.parametrize("n_classes", [2, 3])
def test_calibration_is_fitted_on_inner_folds_of_the_training_part_only(n_classes):
    X, y = _three_classes(12, seed=21)
    keep = np.isin(y, ["smooth", "rough", "dark"][:n_classes])
    X, y = [x for x, k in zip(X, keep) if k], y[keep]
    # Swap a few labels: on separable data the log-loss optimum is at an infinite temperature.
    y = y.copy()
    y[[1, 5, 14, 18]] = y[[14, 18, 1, 5]]
    train, test = np.arange(len(y)) % 4 != 0, np.arange(len(y)) % 4 == 0
    X_train, y_train = [x for x, t in zip(X, train) if t], y[train]
    pipe = recipes.make("glcm_svm").fit(X_train, y_train)
    calibrated = pipe.named_steps["classifier"]
    beta = calibrated.calibrated_classifiers_[0].calibrators[0].beta_
    # By construction: the temperature is fitted on out-of-fold decision values of the training
    # part (3 stratified inner folds, the split CalibratedClassifierCV uses), so it can be
    # recomputed by hand from the training images alone.
    features = pipe[:-1].transform(X_train)
    oof = cross_val_predict(clone(calibrated.estimator), features, y_train, cv=StratifiedKFold(3),
                            method="decision_function")
    np.testing.assert_allclose(beta, _temperature_by_hand(oof, y_train, calibrated.classes_), rtol=1e-4)
    # The predicting classifier is the one fitted on the whole training part.
    inner = calibrated.calibrated_classifiers_[0].estimator
    full = clone(calibrated.estimator).fit(features, np.searchsorted(calibrated.classes_, y_train))
    np.testing.assert_allclose(inner.decision_function(features), full.decision_function(features), rtol=1e-7,
                               atol=1e-9)
    # And the test images change nothing: predicting them does not refit anything.
    X_test = [x for x, t in zip(X, test) if t]
    before = pipe.predict_proba(X_test)
    refit = recipes.make("glcm_svm").fit(X_train, y_train)
    np.testing.assert_allclose(refit.predict_proba(X_test), before, rtol=1e-10)


# ----------------------------------------------------------------------------- class weights (issue 14 #6)
def _inner_classifiers(pipe):
    """The classifiers a recipe pipeline fits (the members' for a fusion), unwrapped from calibration."""
    from sklearn.ensemble import StackingClassifier, VotingClassifier

    classifier = pipe.named_steps["classifier"]
    if isinstance(classifier, StackingClassifier):
        return [classifier.final_estimator] + [c for _, m in classifier.estimators for c in _inner_classifiers(m)]
    if isinstance(classifier, VotingClassifier):
        return [c for _, member in classifier.estimators for c in _inner_classifiers(member)]
    return [classifier.estimator if isinstance(classifier, CalibratedClassifierCV) else classifier]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_classes_are_weighted_by_default_wherever_the_classifier_supports_it(name):
    from featurepipe.classifiers import ELMClassifier

    for classifier in _inner_classifiers(recipes.make(name)):
        if isinstance(classifier, ELMClassifier):
            # ELMClassifier takes no class or sample weights (use balancing= there).
            assert "class_weight" not in classifier.get_params()
            continue
        assert classifier.get_params()["class_weight"] == "balanced", (name, type(classifier).__name__)
    for classifier in _inner_classifiers(recipes.make(name, class_weight=None)):
        assert classifier.get_params().get("class_weight") is None, name


def test_class_weight_option_is_validated():
    with pytest.raises(ValueError, match=r"class_weight must be one of \['balanced', None\]; got 'auto'"):
        recipes.make("hog_svm", class_weight="auto")


def _imbalanced(n_major, n_minor, seed, size=32, shift=0.05):
    """Noise images; the minority class is slightly brighter, with overlap (per-image brightness jitter)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, n, mean in (("major", n_major, 0.5), ("minor", n_minor, 0.5 + shift)):
        for _ in range(n):
            level = mean + rng.normal(0, 0.02)
            images.append(np.clip(rng.normal(level, 0.1, (size, size)), 0, 1).astype(np.float32))
            labels.append(label)
    return images, np.array(labels)


def test_rbf_svm_recipe_does_not_predict_only_the_majority_class_on_90_10_data():
    from sklearn.metrics import balanced_accuracy_score

    X_train, y_train = _imbalanced(90, 10, seed=1)
    X_test, y_test = _imbalanced(90, 10, seed=2)
    # Without class weights (the old default) the RBF SVM gives up the minority class entirely.
    unweighted = recipes.make("firstorder_glcm_svm", class_weight=None).fit(X_train, y_train)
    assert set(unweighted.predict(X_test)) == {"major"}
    pred = recipes.make("firstorder_glcm_svm").fit(X_train, y_train).predict(X_test)
    assert (pred == "minor").sum() >= 3
    assert balanced_accuracy_score(y_test, pred) >= 0.65


# ----------------------------------------------------------------------------- use_mask (issue 14 #4)
def _region_task(n_per_class, seed, size=64, side=10):
    """The class shows only inside the mask: a bright or dark square on a cluttered background.

    The background is a random brightness level plus large random bright/dark blobs, the same for
    both classes; the masked square is 0.9 ("bright") or 0.1 ("dark").
    """
    from featurepipe.sample import Sample

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    samples, labels = [], []
    for label, value in (("bright", 0.9), ("dark", 0.1)):
        for _ in range(n_per_class):
            img = np.full((size, size), rng.uniform(0.3, 0.7), np.float32)
            for _ in range(4):
                cy, cx = rng.uniform(0, size, 2)
                img[(yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(6, 14) ** 2] = rng.choice([0.05, 0.95])
            r0, c0 = rng.integers(4, size - side - 4, 2)
            mask = np.zeros((size, size), bool)
            mask[r0:r0 + side, c0:c0 + side] = True
            img[mask] = value
            samples.append(Sample.from_array(img, mask))
            labels.append(label)
    return samples, np.array(labels)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_use_mask_is_never_silently_ignored(name):
    from featurepipe.preprocessing import CropToMask

    whole, region = recipes.make(name), recipes.make(name, use_mask=True)
    assert repr(whole.get_params(deep=True)) != repr(region.get_params(deep=True)), name
    pipes = [m for _, m in region.named_steps["classifier"].estimators] if name in FUSION else [region]
    for pipe in pipes:
        crop = pipe.named_steps.get("roi")
        if crop is not None:
            # Features that cannot read masks see the crop, with context.
            assert isinstance(crop, CropToMask) and crop.margin == recipes.ROI_MARGIN
            assert [n for n, _ in pipe.steps].index("roi") < len(pipe.steps) - 1
        else:
            # Mask-aware features describe the region themselves.
            params = pipe.named_steps["features"].get_params()
            flags = [v for k, v in params.items() if k.endswith("use_mask")]
            rois = [v for k, v in params.items() if k.endswith("roi")]
            assert (flags and all(flags)) or (rois and all(r in ("mask", "mask_bbox") for r in rois)) \
                or name == "shape_texture_rf", name
    assert ("roi" in region.named_steps) == (recipes.get(name).uses_cnn and name not in FUSION
                                             or name == "stacked_autoencoder")


def test_cnn_recipe_with_use_mask_describes_the_crop_and_learns_what_only_the_region_shows(tiny_backbone):
    from featurepipe.cnn import CNNFeatures
    from featurepipe.preprocessing import mask_bbox
    from featurepipe.sample import Sample

    X, y = _region_task(12, seed=31)
    X_test, y_test = _region_task(8, seed=32)
    pipe = recipes.make("convnet_svm_linear", backbone=tiny_backbone, use_mask=True)
    pipe.set_params(roi__margin=2, features__cache=False)
    # The features are exactly those of the hand-cropped region (+2 px context).
    image, mask = X[0].load()
    r0, r1, c0, c1 = mask_bbox(mask)
    crop = image[max(r0 - 2, 0):r1 + 2, max(c0 - 2, 0):c1 + 2]
    by_hand = CNNFeatures(backbone=tiny_backbone, weights="imagenet", cache=False).fit_transform(
        [Sample.from_array(crop)])
    np.testing.assert_allclose(pipe[:-2].fit_transform(X[:1]), by_hand, rtol=1e-5, atol=1e-6)
    pipe.fit(X, y)
    assert np.mean(pipe.predict(X_test) == y_test) >= 0.9
    # The same recipe on whole images does worse: the region is a small part of a cluttered image.
    whole = recipes.make("convnet_svm_linear", backbone=tiny_backbone).set_params(features__cache=False).fit(X, y)
    assert np.mean(whole.predict(X_test) == y_test) < np.mean(pipe.predict(X_test) == y_test)


def test_use_mask_refuses_samples_without_a_region(tiny_backbone):
    from featurepipe.sample import Sample

    X, y = _region_task(3, seed=33)
    empty = Sample.from_array(np.full((64, 64), 0.5, np.float32), np.zeros((64, 64), bool))
    pipe = recipes.make("convnet_svm_linear", backbone=tiny_backbone, use_mask=True)
    pipe.set_params(features__cache=False)
    with pytest.raises(ValueError, match="mask is empty"):
        pipe.fit(X + [empty], np.append(y, "dark"))
    with pytest.raises(ValueError, match="no mask"):
        pipe.fit(X + [Sample.from_array(np.full((64, 64), 0.5, np.float32))], np.append(y, "dark"))


# ----------------------------------------------------------------------------- fusion (issue 14 #3)
def test_fusion_soft_vote_averages_its_members_probabilities(tiny_backbone):
    X, y = _three_classes(8, seed=41)
    X_test, _ = _three_classes(3, seed=42)
    fusion = recipes.make("fusion_soft_vote", backbone=tiny_backbone).set_params(
        classifier__deep__features__cache=False).fit(X, y)
    members = [clone(m).fit(X, y) for _, m in fusion.named_steps["classifier"].estimators]
    expected = np.mean([m.predict_proba(X_test) for m in members], axis=0)
    np.testing.assert_allclose(fusion.predict_proba(X_test), expected, rtol=1e-9, atol=1e-12)
    assert list(fusion.classes_) == sorted(set(y))
    # exact: class labels
    np.testing.assert_array_equal(fusion.predict(X_test), fusion.classes_[expected.argmax(axis=1)])


def test_fusion_computes_each_images_cnn_features_once_across_folds(tiny_backbone, monkeypatch):
    from sklearn.model_selection import cross_val_score

    from featurepipe.cache import clear_memory_cache
    from featurepipe.cnn import CNNFeatures
    from featurepipe.sample import as_samples

    computed = []
    original = CNNFeatures._extract_many

    def counting(self, samples):
        computed.extend(s.key for s in samples)
        return original(self, samples)

    monkeypatch.setattr(CNNFeatures, "_extract_many", counting)
    clear_memory_cache()
    X, y = _three_classes(6, seed=43)
    fusion = recipes.make("fusion_soft_vote", backbone=tiny_backbone)  # per-sample memory cache on
    scores = cross_val_score(fusion, X, y, cv=StratifiedKFold(3))
    assert len(scores) == 3
    # 3 outer fits x (1 full + 3 calibration fits) of the deep member, each transforming training
    # and test images: every image went through the network exactly once.
    assert sorted(computed) == sorted({s.key for s in as_samples(X)})


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_recipe_says_how_its_defaults_were_chosen_and_has_a_small_grid(name):
    recipe = recipes.get(name)
    assert len(recipe.defaults) > 60, name
    assert "grid" in recipe.defaults, name  # the default grid is explained too
    assert len(ParameterGrid(recipes.grid(name))) <= 9, name


@pytest.mark.parametrize("name", ["hybrid_svm", "keras_head", "stacked_autoencoder", "fusion_soft_vote",
                                  "fusion_stack"])
def test_recipes_that_crop_to_the_mask_fit_and_predict_on_the_crops(name, tiny_backbone, monkeypatch):
    from featurepipe.preprocessing import CropToMask

    X, y = _region_task(6, seed=51)
    backbone = {"backbone": tiny_backbone} if recipes.get(name).uses_cnn else {}  # refused by the others
    pipe = _fast_settings(name, recipes.make(name, use_mask=True, **backbone), tiny_backbone)
    seen = []
    original = CropToMask._transform_image

    def recording(self, image, mask):
        cropped = original(self, image, mask)
        seen.append(cropped[0].shape[:2])
        return cropped

    monkeypatch.setattr(CropToMask, "_transform_image", recording)
    proba = pipe.fit(X, y).predict_proba(X[:4])
    assert proba.shape == (4, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    # Every image that reached the model was a 10-px region plus at most ROI_MARGIN px on each side.
    assert seen and all(10 <= side <= 10 + 2 * recipes.ROI_MARGIN for shape in seen for side in shape)
    assert min(min(shape) for shape in seen) < 64  # cropped: smaller than the 64-px images


def test_fusion_stack_fits_a_logistic_regression_on_out_of_fold_member_probabilities(tiny_backbone):
    from sklearn.model_selection import cross_val_predict

    X, y = _three_classes(9, seed=61)
    X_test, _ = _three_classes(3, seed=62)
    stack = recipes.make("fusion_stack", backbone=tiny_backbone).set_params(
        classifier__deep__features__cache=False).fit(X, y)
    classifier = stack.named_steps["classifier"]
    # By hand: each member's 5-fold out-of-fold probabilities (stratified, as StackingClassifier
    # splits), side by side, are the meta-learner's training matrix.
    members = [m for _, m in classifier.estimators]
    oof = np.hstack([cross_val_predict(clone(m), X, y, cv=StratifiedKFold(5), method="predict_proba")
                     for m in members])
    meta = clone(classifier.final_estimator).fit(oof, y)
    np.testing.assert_allclose(classifier.final_estimator_.coef_, meta.coef_, rtol=1e-6, atol=1e-8)
    # Predictions: members refitted on all the training images, then the meta-learner.
    refitted = np.hstack([clone(m).fit(X, y).predict_proba(X_test) for m in members])
    np.testing.assert_allclose(stack.predict_proba(X_test), meta.predict_proba(refitted), rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------- recipes as data (issue 12 #3)
def test_an_option_the_recipe_does_not_accept_is_refused_naming_recipe_option_and_accepted_ones():
    with pytest.raises(ValueError, match=r"recipe 'hog_svm' does not accept the option backbone='vgg16' \(it runs no "
                                         r"CNN backbone\); its options are: preprocessing, balancing, use_mask, "
                                         r"class_weight, random_state$"):
        recipes.make("hog_svm", backbone="vgg16")
    with pytest.raises(ValueError, match=r"recipe 'convnet_elm' does not accept the option class_weight='balanced' "
                                         r"\(its classifier takes no class weights; use balancing="):
        recipes.make("convnet_elm", class_weight="balanced")
    with pytest.raises(ValueError, match=r"recipe 'glcm_svm' does not accept the option epochs=3 \(not an option"):
        recipes.make("glcm_svm", epochs=3)
    with pytest.raises(ValueError, match=r"option balancing='random' \(balancing is not available for the "
                                         r"end-to-end recipe 'keras_finetune'.*its options are: preprocessing, "
                                         r"backbone, use_mask, class_weight, random_state, epochs, "
                                         r"fine_tune_epochs, unfreeze, patience$"):
        recipes.make("keras_finetune", balancing="random")
    # A typo is refused even at None (only the shared options take None as "not given").
    with pytest.raises(ValueError, match="does not accept the option balanceing=None"):
        recipes.make("hog_svm", balanceing=None)


def test_a_shared_option_at_none_asks_for_nothing_so_one_options_dict_fits_every_recipe():
    # The command line passes the same options to every recipe it runs.
    cli_options = {"preprocessing": None, "balancing": None, "backbone": None, "use_mask": False}
    for name in EXPECTED:
        accepted = {k: v for k, v in cli_options.items() if k in recipes.get(name).options}
        assert repr(recipes.make(name, **cli_options).get_params(deep=True)) == \
            repr(recipes.make(name, **accepted).get_params(deep=True)), name
    assert recipes.make("hog_svm", backbone=None, class_weight=None).named_steps["classifier"].estimator \
        .class_weight is None


def test_every_recipe_declares_its_options_and_their_defaults():
    for name in EXPECTED:
        recipe = recipes.get(name)
        assert recipe.options[0] == "preprocessing", name
        assert list(recipe.option_defaults) == list(recipe.options), name
        # The defaults are what make() uses: building with them spelled out changes nothing.
        explicit = recipes.make(name, **recipe.option_defaults)
        assert repr(explicit.get_params(deep=True)) == repr(recipes.make(name).get_params(deep=True)), name
        assert recipe.uses_cnn == ("backbone" in recipe.options), name
        assert ("balancing" in recipe.options) == (not recipe.end_to_end), name
        assert {"use_mask", "random_state"} <= set(recipe.options), name  # every built-in honours both
    assert "class_weight" not in recipes.get("convnet_elm").options
    assert recipes.get("keras_finetune_earlystop").option_defaults == {
        "preprocessing": None, "backbone": "efficientnet_lite0", "use_mask": False, "class_weight": "balanced",
        "random_state": 0, "epochs": 20, "fine_tune_epochs": 10, "unfreeze": 20, "patience": 5}
    assert recipes.get("keras_head").option_defaults["patience"] is None


def test_keras_recipe_settings_are_options():
    head = recipes.make("keras_head", epochs=3, patience=2).named_steps["classifier"]
    assert (head.epochs, head.patience, head.unfreeze) == (3, 2, 0)
    tuned = recipes.make("keras_finetune_earlystop", epochs=4, fine_tune_epochs=2, unfreeze=5,
                         patience=None).named_steps["classifier"]
    assert (tuned.epochs, tuned.fine_tune_epochs, tuned.unfreeze, tuned.patience) == (4, 2, 5, None)
    assert recipes.make("keras_finetune").named_steps["classifier"].patience is None


def test_fusion_members_get_only_the_options_they_accept():
    vote = recipes.make("fusion_soft_vote", backbone="mobilenet_v2", class_weight=None, use_mask=True,
                        balancing="random").named_steps["classifier"]
    members = dict(vote.estimators)
    assert members["deep"].named_steps["features"].backbone == "mobilenet_v2"
    assert "roi" in members["deep"].named_steps and "roi" not in members["hog"].named_steps
    assert members["hog"].named_steps["features"].use_mask is True
    assert all(isinstance(m.named_steps["balance"], RandomOverSampler) for m in members.values())
    assert all(m.named_steps["classifier"].estimator.class_weight is None for m in members.values())


def _build_lbp_logistic(*, use_mask, class_weight, C=1.0):
    from sklearn.linear_model import LogisticRegression

    from featurepipe.features import LBPFeatures

    return LBPFeatures(use_mask=use_mask), LogisticRegression(C=C, class_weight=class_weight)


@pytest.fixture
def user_recipe():
    recipe = recipes.register_recipe(recipes.Recipe(
        "test_lbp_logistic", "LBP + logistic regression (a test recipe)", "Ojala et al. (2002)", _build_lbp_logistic,
        {"classifier__C": [0.1, 1.0]}, defaults="C=1, scikit-learn's default; grid: C on decades"))
    yield recipe
    recipes.RECIPES.unregister("test_lbp_logistic")


def test_a_user_recipe_is_made_listed_and_validated_like_a_built_in_one(user_recipe):
    from sklearn.linear_model import LogisticRegression

    assert ("test_lbp_logistic", "LBP + logistic regression (a test recipe)", "Ojala et al. (2002)") \
        in recipes.list()
    assert user_recipe.options == ("preprocessing", "balancing", "use_mask", "class_weight", "random_state", "C")
    pipe = recipes.make("test_lbp_logistic", C=3.0, balancing="smote", random_state=7, preprocessing="clahe")
    assert [n for n, _ in pipe.steps] == ["clahe", "features", "scale", "balance", "classifier"]
    assert isinstance(pipe.named_steps["classifier"], LogisticRegression) and pipe.named_steps["classifier"].C == 3.0
    assert pipe.named_steps["balance"].random_state == 7
    assert recipes.grid("test_lbp_logistic") == {"classifier__C": [0.1, 1.0]}
    X, y = _images(12, seed=5)
    assert np.mean(pipe.fit(X, y).predict(X) == y) >= 0.9  # the textured discs are told apart
    with pytest.raises(ValueError, match="recipe 'test_lbp_logistic' is already registered"):
        recipes.register_recipe(user_recipe)
    with pytest.raises(ValueError, match="recipe 'hog_svm' is built in and cannot be replaced"):
        recipes.register_recipe(recipes.Recipe("hog_svm", "x", "y", _build_lbp_logistic))
    with pytest.raises(ValueError, match=r"unknown recipe 'nope'; known: 'convnet_svm_linear', .*'test_lbp_logistic'"):
        recipes.get("nope")


def test_a_recipe_builder_declares_keyword_only_options_with_defaults():
    with pytest.raises(TypeError, match=r"recipe 'positional': the builder's parameter 'b' must be keyword-only"):
        recipes.Recipe("positional", "x", "y", lambda b, m, rs: (None, None))
    with pytest.raises(ValueError, match=r"recipe 'no_default': the builder's own option 'depth' needs a default"):
        recipes.Recipe("no_default", "x", "y", lambda *, random_state, depth: (None, None))
    with pytest.raises(ValueError, match="must not take 'preprocessing'"):
        recipes.Recipe("pre", "x", "y", lambda *, preprocessing: (None, None))
    with pytest.raises(TypeError, match="expects a featurepipe.recipes.Recipe"):
        recipes.register_recipe(_build_lbp_logistic)
