"""Named pipeline recipes: the published methods as ready-made imbalanced-learn pipelines.

Each recipe is a factory with a one-line description, a citation and a
default parameter grid (full-pipeline parameter names)::

    >>> from featurepipe import recipes
    >>> pipe = recipes.make("hog_svm", preprocessing="clahe", balancing="smote")
    >>> [name for name, _ in pipe.steps]
    ['clahe', 'features', 'scale', 'balance', 'classifier']
    >>> sorted(recipes.grid("hog_svm"))
    ['classifier__estimator__C', 'classifier__estimator__gamma']
    >>> type(pipe.named_steps["classifier"]).__name__, pipe.named_steps["classifier"].method
    ('CalibratedClassifierCV', 'temperature')

Pipeline layout (step names are fixed, so the grids stay valid whatever the
options): optional preprocessing steps (``"median"``, ``"clahe"``,
``"otsu_roi"``), ``"features"`` (a feature extractor or
:class:`~featurepipe.features.FeatureBank`), ``"scale"``
(:class:`~sklearn.preprocessing.StandardScaler`), optional ``"balance"``
(random oversampling or SMOTE — *after* feature extraction, inside the
imbalanced-learn pipeline, so it only ever sees training folds) and
``"classifier"``. The end-to-end Keras recipes have no feature step: their
only learned step is ``"classifier"``.

Handcrafted recipes describe the whole image by default (``use_mask=False``)
because images to classify in practice come without expert lesion masks;
``use_mask=True`` makes them describe the masked region instead.

Probabilities
-------------
Every recipe pipeline has ``predict_proba``: one column per class (in
``classes_`` order), values in [0, 1], rows summing to 1, and ``predict``
is always its row-wise argmax.

* SVM, ELM and random-forest recipes wrap their classifier in
  :class:`~sklearn.calibration.CalibratedClassifierCV` (``method=
  "temperature"``, ``cv=3``, ``ensemble=False``): the classifier itself is
  fitted on the whole training part, exactly as published, and one
  temperature (a single positive factor on its decision values, then a
  softmax; Guo et al. 2017) is fitted by log-loss on the decision values
  that three inner models, each trained on two thirds of the training part,
  give to the third they did not see. Everything ``fit`` is given and
  nothing else: inside a benchmark or ``GridSearchCV`` fold the calibrator
  never sees that fold's test images. The map is monotone and
  argmax-preserving, so calibration changes no decision of the published
  classifier: ``predict`` is the argmax of its decision values (binary:
  their sign), and the probability of the predicted class is the largest.
  (The one exception is an RBF/linear ``SVC`` with three or more classes,
  whose own ``predict`` is a one-vs-one vote that breaks exact vote ties
  by class order, while the calibrated argmax breaks them by the summed
  confidences.) Platt's per-class sigmoid was not chosen because its
  per-class intercepts move the decision threshold, so the calibrated model
  would no longer make the published classifier's decisions, and because
  normalising one-vs-rest sigmoids is not a probability model for three or
  more classes. Measured on the synthetic demo set (5 folds; hog_svm,
  firstorder_glcm_svm, convnet_svm_linear, convnet_elm), temperature scaling
  had the lower top-label calibration error (ECE 0.188, 0.045, 0.028, 0.047
  against 0.215, 0.079, 0.074, 0.053 for the sigmoid) and the sigmoid the
  lower log-loss (0.995, 0.946, 0.305, 0.232 against 1.171, 1.018, 0.349,
  0.260). The inner split is stratified, not grouped by patient:
  calibration never sees test images, but near-duplicate training images
  can make it slightly over-confident. With ``balancing=`` the calibration
  is fitted on the oversampled training set: the probabilities then answer
  for the balanced class prior, not the data's, and copies made by
  ``"random"`` oversampling fall on both sides of the inner split, which
  makes the temperature over-confident. Use ``balancing=None`` when the
  probabilities themselves matter ("% malignant").
* ``stacked_autoencoder`` (logistic regression) and the Keras recipes
  (softmax head trained with cross-entropy) already output probabilities
  fitted by log-loss on the training part; they are not wrapped, since a
  Keras recalibration would cost three more network trainings per fit.

Parameter names of a wrapped classifier carry the wrapper:
``classifier__estimator__C`` (the default grids use them).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field

__all__ = ["BALANCING", "PREPROCESSING", "RECIPES", "Recipe", "get", "grid", "list", "make"]

#: Preprocessing options accepted by :func:`make` (applied in the order given).
PREPROCESSING = ("median", "clahe", "otsu_roi")
#: Balancing options accepted by :func:`make`.
BALANCING = (None, "random", "smote")
_DEFAULT_BACKBONE = "efficientnet_lite0"


@dataclass(frozen=True)
class Recipe:
    """A named pipeline factory.

    Attributes
    ----------
    name, description, citation : str
    build : callable ``(backbone, use_mask, random_state) -> (feature_step or None, classifier)``
    param_grid : dict
        Default grid for nested CV, keyed by full-pipeline parameter names.
    uses_cnn : bool
        Whether the recipe runs a CNN backbone (``backbone=`` applies).
    end_to_end : bool
        No separate feature step (Keras recipes): no scaler, no balancing.
    """

    name: str
    description: str
    citation: str
    build: object = field(repr=False)
    param_grid: dict = field(default_factory=dict)
    uses_cnn: bool = False
    end_to_end: bool = False


# ----------------------------------------------------------------------------- builders
def _cnn(backbone):
    from .cnn import CNNFeatures

    return CNNFeatures(backbone=backbone, weights="imagenet")


def _calibrated(classifier):
    """``classifier`` with temperature-scaled probabilities fitted on inner folds of the training part.

    See "Probabilities" in the module docstring for why temperature scaling,
    three inner folds and ``ensemble=False`` (the classifier used for
    predictions is the one fitted on the whole training part).
    """
    from sklearn.calibration import CalibratedClassifierCV

    # cv=3: at least 3 training images of every class are needed (small medical datasets), and a
    # fit costs 4 classifier fits rather than 6 with 5 folds (it runs inside nested grid searches).
    return CalibratedClassifierCV(classifier, method="temperature", cv=3, ensemble=False)


def _svc(kernel, random_state):
    from sklearn.svm import SVC

    # No ``probability=`` (deprecated): probabilities come from the calibration wrapper.
    return _calibrated(SVC(kernel=kernel, C=1.0, random_state=random_state))


def _linear_svm(random_state):
    from sklearn.svm import LinearSVC

    # LinearSVC rather than SVC(kernel="linear"): one-vs-rest, so there is one weight vector per
    # class (coef_ of shape (n_classes, n_features), or (1, n_features) for two classes) whose
    # argmax is the prediction. SVC's one-vs-one weights (one row per pair of classes) cannot be
    # read per class, which class activation maps (featurepipe.cnn.cam) need.
    return _calibrated(LinearSVC(C=1.0, max_iter=10000, random_state=random_state))


def _rf(random_state):
    from sklearn.ensemble import RandomForestClassifier

    # Vote fractions of a forest are under-confident (Niculescu-Mizil & Caruana 2005): calibrate.
    return _calibrated(RandomForestClassifier(n_estimators=300, random_state=random_state))


def _elm(random_state):
    from .classifiers import ELMClassifier

    # Strong ridge regularisation: on 1280-d standardised CNN features of BUSI (624 training
    # images a fold) alpha=10 gave balanced accuracy 0.74 against 0.54 at the ELM's default 1e-3.
    # ELM scores are ridge-regression outputs, not log-odds: calibrate.
    return _calibrated(ELMClassifier(n_hidden=500, alpha=10.0, random_state=random_state))


def _handcrafted(*families, use_mask):
    """One extractor, or a FeatureBank when several families are asked for."""
    from .features import (
        CurveletFeatures,
        FirstOrderFeatures,
        GLCMFeatures,
        HOGFeatures,
        LBPFeatures,
        ShapeFeatures,
        make_feature_bank,
    )

    makers = {
        "firstorder": lambda: FirstOrderFeatures(use_mask=use_mask),
        "glcm": lambda: GLCMFeatures(distances=(1, 2, 4), use_mask=use_mask),
        "lbp": lambda: LBPFeatures(scales=((8, 1), (16, 2)), use_mask=use_mask),
        "hog": lambda: HOGFeatures(use_mask=use_mask),
        "curvelet": lambda: CurveletFeatures(roi="mask_bbox" if use_mask else "image"),
        # Shape always describes a mask: the expert one with use_mask=True,
        # otherwise the Otsu region that make() inserts (see "shape_texture_rf").
        "shape": lambda: ShapeFeatures(),
    }
    extractors = [makers[f]() for f in families]
    return extractors[0] if len(extractors) == 1 else make_feature_bank(*extractors)


def _bovw(use_mask, random_state):
    from .features import BagOfVisualWords

    return BagOfVisualWords(n_words=64, roi="mask" if use_mask else "image", random_state=random_state)


def _hybrid(backbone, use_mask):
    from .features import FeatureBank, FirstOrderFeatures, GLCMFeatures, LBPFeatures

    return FeatureBank([
        ("cnn", _cnn(backbone)),
        ("firstorder", FirstOrderFeatures(use_mask=use_mask)),
        ("glcm", GLCMFeatures(distances=(1, 2, 4), use_mask=use_mask)),
        ("lbp", LBPFeatures(scales=((8, 1), (16, 2)), use_mask=use_mask)),
    ])


def _keras(backbone, random_state, **params):
    from .classifiers import KerasTransferClassifier

    return KerasTransferClassifier(backbone=backbone, weights="imagenet", random_state=random_state, **params)


def _autoencoder(random_state):
    from .classifiers import StackedAutoencoder

    return StackedAutoencoder(input_size=32, hidden_units=(256, 64), random_state=random_state)


# Calibrated classifiers: their parameters are ``classifier__estimator__<name>``.
_LINEAR_SVM_GRID = {"classifier__estimator__C": [0.001, 0.01, 0.1, 1.0]}
_SVM_RBF_GRID = {"classifier__estimator__C": [0.1, 1.0, 10.0, 100.0],
                 "classifier__estimator__gamma": ["scale", 1e-3, 1e-2]}
_RF_GRID = {"classifier__estimator__max_features": ["sqrt", 0.2],
            "classifier__estimator__min_samples_leaf": [1, 3]}
_ELM_GRID = {"classifier__estimator__n_hidden": [200, 500, 1000], "classifier__estimator__alpha": [1.0, 10.0, 100.0]}

_RAZAVIAN = ("Razavian, Azizpour, Sullivan & Carlsson (2014), CNN features off-the-shelf: an astounding "
             "baseline for recognition, CVPR Workshops")
_HUYNH = ("Huynh, Li & Giger (2016), Digital mammographic tumor classification using transfer learning from deep "
          "convolutional neural networks, J. Med. Imaging 3(3):034501")

RECIPES = {r.name: r for r in [
    Recipe("convnet_svm_linear", "Frozen CNN features (global average pool) + standardisation + linear SVM "
                                 "(one-vs-rest)",
           f"{_HUYNH}; {_RAZAVIAN}",
           lambda b, m, rs: (_cnn(b), _linear_svm(rs)), _LINEAR_SVM_GRID, uses_cnn=True),
    Recipe("convnet_svm_rbf", "Frozen CNN features + standardisation + RBF-kernel SVM", _HUYNH,
           lambda b, m, rs: (_cnn(b), _svc("rbf", rs)), _SVM_RBF_GRID, uses_cnn=True),
    Recipe("convnet_elm", "Frozen CNN features + standardisation + Extreme Learning Machine",
           "Huang, Zhu & Siew (2006), Extreme learning machine: theory and applications, Neurocomputing "
           "70:489-501",
           lambda b, m, rs: (_cnn(b), _elm(rs)), _ELM_GRID, uses_cnn=True),
    Recipe("convnet_rf", "Frozen CNN features + standardisation + random forest",
           "Breiman (2001), Random forests, Machine Learning 45:5-32; " + _RAZAVIAN,
           lambda b, m, rs: (_cnn(b), _rf(rs)), _RF_GRID, uses_cnn=True),
    Recipe("firstorder_glcm_svm", "First-order statistics + Haralick GLCM texture + RBF SVM",
           "Haralick, Shanmugam & Dinstein (1973), Textural features for image classification, IEEE Trans. SMC "
           "3(6):610-621",
           lambda b, m, rs: (_handcrafted("firstorder", "glcm", use_mask=m), _svc("rbf", rs)), _SVM_RBF_GRID),
    Recipe("glcm_svm", "Haralick GLCM texture (distances 1, 2, 4; mean and range over angles) + RBF SVM",
           "Haralick, Shanmugam & Dinstein (1973), IEEE Trans. SMC 3(6):610-621",
           lambda b, m, rs: (_handcrafted("glcm", use_mask=m), _svc("rbf", rs)), _SVM_RBF_GRID),
    Recipe("lbp_svm", "Uniform rotation-invariant LBP histograms (P,R = 8,1 and 16,2) + RBF SVM",
           "Ojala, Pietikainen & Maenpaa (2002), Multiresolution gray-scale and rotation invariant texture "
           "classification with local binary patterns, IEEE TPAMI 24(7):971-987",
           lambda b, m, rs: (_handcrafted("lbp", use_mask=m), _svc("rbf", rs)), _SVM_RBF_GRID),
    Recipe("hog_svm", "Histogram of oriented gradients (128x128, 16-px cells) + RBF SVM",
           "Dalal & Triggs (2005), Histograms of oriented gradients for human detection, CVPR",
           lambda b, m, rs: (_handcrafted("hog", use_mask=m), _svc("rbf", rs)), _SVM_RBF_GRID),
    Recipe("curvelet_svm", "Curvelet sub-band statistics (4 scales) + RBF SVM",
           "Eltoukhy, Faye & Samir (2010), Breast cancer diagnosis in digital mammogram using multiscale "
           "curvelet transform, Comput. Med. Imaging Graph. 34(4):269-276",
           lambda b, m, rs: (_handcrafted("curvelet", use_mask=m), _svc("rbf", rs)), _SVM_RBF_GRID),
    Recipe("bovw_svm", "Bag of visual words (dense ORB descriptors, 64-word k-means vocabulary) + RBF SVM",
           "Csurka, Dance, Fan, Willamowski & Bray (2004), Visual categorization with bags of keypoints, "
           "ECCV Workshop on Statistical Learning in Computer Vision",
           lambda b, m, rs: (_bovw(m, rs), _svc("rbf", rs)),
           {**_SVM_RBF_GRID, "features__n_words": [32, 64, 128]}),
    Recipe("shape_texture_rf", "Region shape (Otsu region, or the mask with use_mask=True) + first-order + GLCM "
                               "texture + random forest",
           "Cheng, Shi, Min, Hu, Cai & Du (2006), Approaches for automated detection and classification of "
           "masses in mammograms, Pattern Recognition 39(4):646-668",
           lambda b, m, rs: (_handcrafted("shape", "firstorder", "glcm", use_mask=m), _rf(rs)), _RF_GRID),
    Recipe("hybrid_svm", "Frozen CNN features + first-order, GLCM and LBP texture, concatenated + RBF SVM",
           "Antropova, Huynh & Giger (2017), A deep feature fusion methodology for breast cancer diagnosis "
           "demonstrated on three imaging modality datasets, Med. Phys. 44(10):5162-5171",
           lambda b, m, rs: (_hybrid(b, m), _svc("rbf", rs)), _SVM_RBF_GRID, uses_cnn=True),
    Recipe("keras_head", "End-to-end Keras transfer learning: frozen backbone, new dense head trained",
           "Yosinski, Clune, Bengio & Lipson (2014), How transferable are features in deep neural networks?, "
           "NeurIPS",
           lambda b, m, rs: (None, _keras(b, rs, unfreeze=0, patience=None)),
           {"classifier__learning_rate": [1e-3, 1e-4], "classifier__dropout": [0.2, 0.5]},
           uses_cnn=True, end_to_end=True),
    Recipe("keras_finetune", "End-to-end Keras transfer learning: head, then the last 20 backbone layers "
                             "fine-tuned (fixed epochs)",
           "Tajbakhsh et al. (2016), Convolutional neural networks for medical image analysis: full training "
           "or fine tuning?, IEEE TMI 35(5):1299-1312",
           lambda b, m, rs: (None, _keras(b, rs, unfreeze=20, fine_tune_epochs=10, patience=None)),
           {"classifier__fine_tune_learning_rate": [1e-5, 1e-4], "classifier__unfreeze": [10, 20]},
           uses_cnn=True, end_to_end=True),
    Recipe("keras_finetune_earlystop", "As keras_finetune, with early stopping on a validation split and "
                                       "learning-rate reduction on plateau",
           "Al-Dhabyani, Gomaa, Khaled & Fahmy (2019), Deep learning approaches for data augmentation and "
           "classification of breast masses using ultrasound images, IJACSA 10(5)",
           lambda b, m, rs: (None, _keras(b, rs, unfreeze=20, fine_tune_epochs=10, patience=5)),
           {"classifier__fine_tune_learning_rate": [1e-5, 1e-4], "classifier__unfreeze": [10, 20]},
           uses_cnn=True, end_to_end=True),
    Recipe("stacked_autoencoder", "Greedy layer-wise stacked autoencoder on 32x32 pixels + softmax "
                                  "(logistic regression) on the codes",
           "Vincent, Larochelle, Lajoie, Bengio & Manzagol (2010), Stacked denoising autoencoders, JMLR "
           "11:3371-3408",
           lambda b, m, rs: (_autoencoder(rs), _logistic()),
           {"features__hidden_units": [(256, 64), (128, 32)], "classifier__C": [0.1, 1.0, 10.0]}),
]}


def _logistic():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000)


# ----------------------------------------------------------------------------- API
def get(name):
    """The :class:`Recipe` called ``name`` (``ValueError`` naming the known ones otherwise)."""
    if not isinstance(name, str) or name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {builtins.list(RECIPES)}")
    return RECIPES[name]


def list():
    """Rows ``(name, description, citation)``, one per recipe, in registry order."""
    return [(r.name, r.description, r.citation) for r in RECIPES.values()]


def grid(name):
    """A copy of the default parameter grid of recipe ``name`` (full-pipeline parameter names)."""
    return {k: builtins.list(v) for k, v in get(name).param_grid.items()}


def _preprocessing_steps(preprocessing):
    from .preprocessing import CLAHE, MedianFilter, OtsuROI

    if preprocessing is None:
        return []
    items = [preprocessing] if isinstance(preprocessing, str) else preprocessing
    if not isinstance(items, (builtins.list, tuple)):
        raise TypeError(f"preprocessing must be None, one of {builtins.list(PREPROCESSING)} or a list of them; "
                         f"got {preprocessing!r}")
    steps = []
    for item in items:
        if item == "median":
            steps.append(("median", MedianFilter(size=3)))
        elif item == "clahe":
            steps.append(("clahe", CLAHE()))
        elif item == "otsu_roi":
            steps.append(("otsu_roi", OtsuROI()))
        else:
            raise ValueError(f"preprocessing: unknown step {item!r}; choose from {builtins.list(PREPROCESSING)}")
    names = [n for n, _ in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"preprocessing must not repeat a step; got {preprocessing!r}")
    return steps


def _sampler(balancing, random_state):
    if balancing is None:
        return None
    if balancing == "random":
        from imblearn.over_sampling import RandomOverSampler

        return RandomOverSampler(random_state=random_state)
    if balancing == "smote":
        from imblearn.over_sampling import SMOTE

        return SMOTE(random_state=random_state)
    raise ValueError(f"balancing must be one of {builtins.list(BALANCING)}; got {balancing!r}")


def make(name, *, preprocessing=None, balancing=None, backbone=None, use_mask=False, random_state=0):
    """Build recipe ``name`` as an :class:`imblearn.pipeline.Pipeline` (unfitted).

    Parameters
    ----------
    name : str
        A recipe name from :func:`list`.
    preprocessing : None, str or list of str, default=None
        Image steps before the features, in order: ``"median"`` (3x3 median
        filter), ``"clahe"`` (CLAHE, clip limit 2, 8x8 tiles), ``"otsu_roi"``
        (crop to the largest Otsu foreground region).
    balancing : {None, "random", "smote"}, default=None
        Oversampling of the training part, placed after feature extraction
        and scaling inside the pipeline (never before the split).
    backbone : str, optional
        CNN backbone of the CNN and Keras recipes (default
        ``"efficientnet_lite0"``, whose ImageNet weights need no network).
        Ignored by the handcrafted recipes.
    use_mask : bool, default=False
        Handcrafted features describe the lesion mask's region instead of the
        whole image. Only for data whose images to classify come with masks.
    random_state : int or None, default=0
        Seed of the stochastic steps (SVM, forests, ELM, k-means, samplers, Keras).

    Returns
    -------
    imblearn.pipeline.Pipeline
    """
    from imblearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    recipe = get(name)
    if not isinstance(use_mask, bool):
        raise TypeError(f"use_mask must be True or False; got {use_mask!r}")
    if backbone is None:
        backbone = _DEFAULT_BACKBONE
    elif not isinstance(backbone, str) or not backbone:
        raise ValueError(f"backbone must be a backbone name (see featurepipe.cnn.list_backbones()); got {backbone!r}")
    steps = _preprocessing_steps(preprocessing)
    sampler = _sampler(balancing, random_state)
    if name == "shape_texture_rf" and not use_mask:
        from .preprocessing import OtsuROI

        # Shape descriptors need a region: without expert masks, the Otsu
        # foreground region of each image (computed per image, no fitting).
        steps.append(("region", OtsuROI(output="mask")))
    features, classifier = recipe.build(backbone, use_mask, random_state)
    if recipe.end_to_end:
        if sampler is not None:
            raise ValueError(f"balancing={balancing!r} is not available for the end-to-end recipe {name!r} (it has "
                             "no feature step to oversample after); use its class_weight='balanced' instead")
        steps.append(("classifier", classifier))
    else:
        steps += [("features", features), ("scale", StandardScaler())]
        if sampler is not None:
            steps.append(("balance", sampler))
        steps.append(("classifier", classifier))
    return Pipeline(steps)
