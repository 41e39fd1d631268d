"""Named pipeline recipes: the published methods as ready-made imbalanced-learn pipelines.

Each recipe is a factory with a one-line description, a citation and a
default parameter grid (full-pipeline parameter names)::

    >>> from featurepipe import recipes
    >>> pipe = recipes.make("hog_svm", preprocessing="clahe", balancing="smote")
    >>> [name for name, _ in pipe.steps]
    ['clahe', 'features', 'scale', 'balance', 'classifier']
    >>> sorted(recipes.grid("hog_svm"))
    ['classifier__estimator__C']
    >>> pipe.named_steps["classifier"].estimator.class_weight
    'balanced'
    >>> type(pipe.named_steps["classifier"]).__name__, pipe.named_steps["classifier"].method
    ('CalibratedClassifierCV', 'temperature')

Pipeline layout (step names are fixed, so the grids stay valid whatever the
options): optional preprocessing steps (``"median"``, ``"clahe"``,
``"otsu_roi"``), ``"roi"`` (crop to the mask, only with ``use_mask=True`` and
features that cannot read masks), ``"features"`` (a feature extractor or
:class:`~featurepipe.features.FeatureBank`), ``"scale"``
(:class:`~sklearn.preprocessing.StandardScaler`), optional ``"balance"``
(random oversampling or SMOTE — *after* feature extraction, inside the
imbalanced-learn pipeline, so it only ever sees training folds) and
``"classifier"``. The end-to-end Keras recipes have no feature step: their
only learned step is ``"classifier"``. The fusion recipe's ``"classifier"``
is a soft vote over whole member pipelines (see "Fusion").

How the defaults were chosen
----------------------------
Each :class:`Recipe` states it in ``Recipe.defaults``: by the cited paper,
by the library's documented default, or by a stated principle — never by
scores on a benchmark's test folds (the same recipes are judged on
ultrasound, mammography, thermography and histopathology data). Default
grids are small (at most nine points, so nested CV over a cached prefix
takes minutes) and spaced on decades. One default has a known BUSI history
(the ELM's ridge penalty); its ``defaults`` text says so.

Imbalanced classes
------------------
Every classifier that supports it weights classes inversely to their
training frequency by default (``class_weight="balanced"``: SVMs, random
forests, logistic regression, Keras heads), because medical data sets are
rarely balanced and an unweighted RBF SVM with ``C=1`` can give up a
minority class entirely (it predicted only the majority class of a
mammography task). :class:`~featurepipe.classifiers.ELMClassifier` takes
no class weights: use ``balancing=`` with ``convnet_elm``. Pass
``class_weight=None`` for the published, unweighted classifiers. The
temperature calibration (below) is fitted unweighted, on the data's own
class prior, but a single temperature cannot undo the weighting's shift of
the decision values: probabilities lean towards the minority classes.

Lesion-region tasks (``use_mask=True``)
---------------------------------------
Recipes describe the whole image by default (``use_mask=False``) because
images to classify in practice come without expert lesion masks.
``use_mask=True`` is honoured by every recipe, never silently ignored:
handcrafted features describe the masked region themselves, and the
recipes whose features cannot read a mask (CNN, hybrid, Keras,
autoencoder) crop each image to the mask's bounding box with
:data:`ROI_MARGIN` pixels of context first (a ``"roi"`` step,
:class:`~featurepipe.preprocessing.CropToMask`). Samples without a mask or
with an empty one are refused with an error naming the sample.

Known trap (BUSI and any data set whose normal images have empty masks):
in BUSI's 3-class task the normal images have no lesion, so their masks
are empty. Cropping the other images only (or describing "the region"
only where there is one) lets a classifier read "was a region
annotated?", which is the label itself. With ``use_mask=True`` those
images are refused (empty masks); do not work around that by giving them
a stand-in region (the whole image, a random box): the crop's size and
content would still tell normal from lesion. The lesion-region task is
benign-vs-malignant, on images that all have a lesion.

Paired images (``pair_asymmetry``)
----------------------------------
For data that pair images (thermography's hot-spot and contralateral
crops, one label per pair; :mod:`featurepipe.pairs`), ``make(name,
pair_asymmetry=True)`` makes the ``"features"`` step a
:class:`~featurepipe.pairs.PairAsymmetry` around the recipe's own
extractor: ``[f(a), |f(a) - f(b)|]`` of the two crops. Off by default; the
principle (bilateral asymmetry) is in :func:`make`'s docstring.

Fusion
------
``fusion_soft_vote`` averages the calibrated probabilities of three member
recipes of different feature families (a scikit-learn
:class:`~sklearn.ensemble.VotingClassifier` with ``voting="soft"`` and
equal weights), each a full recipe pipeline with its own scaler and
calibrated classifier. Members' feature extractors cache per sample, so in
a benchmark or grid search every image goes through the CNN once however
often the vote is refitted. Options (``balancing``, ``use_mask``,
``class_weight``, ``backbone``, ``random_state``) are passed to every
member that accepts them (``backbone`` to the CNN member only);
``preprocessing`` steps run once, before the vote. Member parameters are
``classifier__<member>__<parameter>`` (e.g.
``classifier__deep__classifier__estimator__C``).

``fusion_stack`` combines the same members by stacking (scikit-learn's
:class:`~sklearn.ensemble.StackingClassifier`): a multinomial logistic
regression is fitted on the members' class probabilities for the
training images, each predicted by members fitted on the other four fifths
of the training part (5 stratified inner folds), so it learns how far to
trust each member; the members used for prediction are then refitted on the
whole training part. The inner folds are not grouped by patient or
duplicate cluster: near-duplicate training images can make the
meta-learner trust the members slightly too much. A fit costs six fits of
every member.

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

Recipes as data, options, your own recipes
------------------------------------------
:data:`RECIPES` is a :class:`~featurepipe.registry.Registry` of
:class:`Recipe` entries: name, description, citation, a keyword-only
builder, the default grid and how its defaults were chosen. The builder's
parameters are the recipe's options (``Recipe.options``, with their
defaults in ``Recipe.option_defaults``): the shared ones of
:data:`SHARED_OPTIONS` that it uses, and its own, such as ``epochs``,
``fine_tune_epochs``, ``unfreeze`` and ``patience`` of the Keras recipes.
:func:`make` refuses any other option with an error naming the recipe, the
option and the accepted ones (a handcrafted recipe has no ``backbone``; the
ELM recipe takes no ``class_weight``)::

    >>> recipes.get("hog_svm").options
    ('preprocessing', 'balancing', 'use_mask', 'class_weight', 'random_state')
    >>> recipes.make("keras_head", epochs=5).named_steps["classifier"].epochs
    5

Add your own recipe with :func:`register_recipe` (an example is there); it
is then listed by ``featurepipe recipes`` and built by :func:`make` like the
built-in ones.
"""

from __future__ import annotations

import builtins
import functools
import inspect
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

from .registry import Registry

__all__ = ["BALANCING", "CLASS_WEIGHTS", "CNN_FEATURE_OPTIONS", "DEFAULT_BACKBONE", "ENSEMBLE_EXTRA_BACKBONES",
           "FEATURE_NORMS", "PREPROCESSING", "RECIPES", "ROI_MARGIN", "SHARED_OPTIONS", "WHITEN_VARIANCE",
           "Recipe", "RecipeParts", "get", "grid", "list", "make", "register_recipe"]

#: Preprocessing options accepted by :func:`make` (applied in the order given).
PREPROCESSING = ("median", "clahe", "otsu_roi")
#: Balancing options accepted by :func:`make`.
BALANCING = (None, "random", "smote")
#: Class weightings accepted by :func:`make`.
CLASS_WEIGHTS = ("balanced", None)
#: Pixels of context kept around the mask's bounding box when ``use_mask=True`` crops the image
#: for features that cannot read masks (CNNs): enough for the lesion's margin and immediate
#: surroundings (margin and posterior features are diagnostic, BI-RADS) at the 500-1000 px
#: resolution of ultrasound and mammography images, small enough that the lesion stays the
#: subject of the crop. Chosen by that principle, not by any benchmark score.
ROI_MARGIN = 32
#: CNN backbone of the CNN and Keras recipes when none is given: its ImageNet weights need no network.
DEFAULT_BACKBONE = "efficientnet_lite0"
#: The options shared by recipes, each with the value :func:`make` uses when it is not given (see
#: :func:`make` for their meaning). Which of them a recipe accepts is ``Recipe.options``.
SHARED_OPTIONS = {"preprocessing": None, "balancing": None, "backbone": DEFAULT_BACKBONE, "use_mask": False,
                  "class_weight": "balanced", "random_state": 0}

_COMBINERS = ("soft_vote", "stack")


class RecipeParts(NamedTuple):
    """What a recipe's builder returns (a plain ``(features, classifier)`` tuple is accepted too).

    Attributes
    ----------
    features : transformer or None
        The ``"features"`` step; ``None`` for recipes without one (end-to-end
        networks, fusions), which then get no ``"scale"`` step either.
    classifier : estimator
        The ``"classifier"`` step.
    image_steps : tuple of (str, transformer), default=()
        Image steps of the recipe itself, placed after the preprocessing
        (and the ``"roi"`` crop) and before the features, e.g.
        ``shape_texture_rf``'s Otsu ``"region"`` without ``use_mask``.
    scaled_steps : tuple of (str, transformer), default=()
        Steps fitted on the training part, placed after the ``"scale"`` step
        and before balancing and the classifier, e.g. the CNN recipes'
        ``"whiten"`` (PCA whitening) with ``whiten=True``. Only with features.
    """

    features: object
    classifier: object
    image_steps: tuple = ()
    scaled_steps: tuple = ()


@dataclass(frozen=True)
class Recipe:
    """A named pipeline recipe, declared as data: its builder, default grid and the options it accepts.

    Attributes
    ----------
    name, description, citation : str
    build : callable
        The builder, ``build(*, <options>) -> RecipeParts`` (or a
        ``(features, classifier)`` tuple). Its parameters must be keyword-only;
        they declare the options the recipe accepts. Parameters named like a
        shared option (``backbone``, ``use_mask``, ``class_weight``,
        ``random_state``, ``balancing``; see :data:`SHARED_OPTIONS`) receive
        :func:`make`'s value, or its default, so they need no default of
        their own; any other parameter is a recipe-specific option (e.g.
        ``epochs`` of the Keras recipes) and must have a default, which is the
        recipe's. ``preprocessing`` is always applied by :func:`make`, never
        by a builder. A builder that takes ``balancing`` applies it itself
        (fusions pass it to their members); otherwise :func:`make` adds the
        ``"balance"`` step after the features. Omit ``build`` for a fusion
        recipe (see ``members``).
    param_grid : dict
        Default grid for nested CV, keyed by full-pipeline parameter names.
    end_to_end : bool
        No separate feature step (Keras recipes): no scaler, no balancing.
    crops_to_mask : bool
        With ``use_mask=True``, crop each image to its mask first (a ``"roi"``
        step, for features that cannot read masks: CNN, Keras, autoencoder).
        Recipes whose builder takes ``use_mask`` read the mask themselves.
    defaults : str
        How the default parameters and the default grid were chosen (by
        principle or by the cited paper; never by a benchmark's test folds).
    members : tuple of (alias, recipe name)
        Fusion recipes only: the member recipes whose calibrated
        probabilities are combined (see "Fusion" in the module docstring).
        Each member gets the fusion's shared options that it accepts.
    combiner : {"soft_vote", "stack"}
        Fusion recipes only: average the members' probabilities, or feed
        their out-of-fold probabilities to a logistic regression.

    Derived, read-only:

    options : tuple of str
        **The option names** :func:`make` **accepts for this recipe** (the
        shared ones it uses, in :data:`SHARED_OPTIONS` order, then its own);
        any other option is refused with an error naming the recipe, the
        option and these names. ``preprocessing`` is always accepted;
        ``balancing`` unless the recipe is end-to-end; ``use_mask`` when the
        builder reads the mask or the recipe crops to it; ``random_state``
        when the builder takes it or ``balancing`` applies.
    option_defaults : dict
        ``{option: value make() uses when it is not given}``, in ``options``
        order: the resolved options of a default :func:`make` call.
    uses_cnn : bool
        Whether the recipe runs a CNN backbone (it accepts ``backbone``).

    Examples
    --------
    >>> from featurepipe import recipes
    >>> keras_head = recipes.get("keras_head")
    >>> keras_head.options
    ('preprocessing', 'backbone', 'use_mask', 'class_weight', 'random_state', 'epochs', 'patience')
    >>> keras_head.option_defaults["epochs"], keras_head.option_defaults["backbone"]
    (20, 'efficientnet_lite0')
    """

    name: str
    description: str
    citation: str
    build: object = field(default=None, repr=False)
    param_grid: dict = field(default_factory=dict)
    end_to_end: bool = False
    crops_to_mask: bool = False
    defaults: str = ""
    members: tuple = ()
    combiner: str = "soft_vote"

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"recipe name must be a non-empty string; got {self.name!r}")
        if self.members:
            if self.build is not None:
                raise ValueError(f"recipe {self.name!r}: give either build or members (a fusion), not both")
            if self.combiner not in _COMBINERS:
                raise ValueError(f"recipe {self.name!r}: combiner must be one of {builtins.list(_COMBINERS)}; "
                                 f"got {self.combiner!r}")
            object.__setattr__(self, "members", tuple(tuple(m) for m in self.members))
            # Its options follow from the members' (looked up when first needed).
            object.__setattr__(self, "build", _Fusion(self.members, self.combiner))
            return
        if not callable(self.build):
            raise TypeError(f"recipe {self.name!r}: build must be a callable build(*, <options>); got {self.build!r}")
        for parameter in self._builder_parameters.values():
            if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"recipe {self.name!r}: the builder's parameter {parameter.name!r} must be "
                                f"keyword-only (def build(*, {parameter.name}, ...)); its parameters are the "
                                "recipe's options")
            if parameter.name == "preprocessing":
                raise ValueError(f"recipe {self.name!r}: the builder must not take 'preprocessing' (make() adds "
                                 "the preprocessing steps of every recipe)")
            if parameter.name not in SHARED_OPTIONS and parameter.default is inspect.Parameter.empty:
                raise ValueError(f"recipe {self.name!r}: the builder's own option {parameter.name!r} needs a "
                                 "default (the recipe's default)")

    @cached_property
    def _builder_parameters(self):
        return dict(inspect.signature(self.build).parameters)

    @cached_property
    def options(self):
        taken = self._builder_parameters
        balances = "balancing" in taken or not self.end_to_end
        accepted = {
            "preprocessing": True,
            "balancing": balances,
            "backbone": "backbone" in taken,
            "use_mask": "use_mask" in taken or self.crops_to_mask,
            "class_weight": "class_weight" in taken,
            "random_state": "random_state" in taken or balances,
        }
        return tuple([name for name, ok in accepted.items() if ok] + [p for p in taken if p not in SHARED_OPTIONS])

    @property
    def option_defaults(self):
        taken = self._builder_parameters
        return {name: SHARED_OPTIONS[name] if name in SHARED_OPTIONS else taken[name].default
                for name in self.options}

    @property
    def uses_cnn(self):
        return "backbone" in self.options


class _Fusion:
    """Builder of a fusion recipe: each member recipe built with the fusion's options it accepts.

    Its signature (the fusion's options) is every shared option but
    ``preprocessing`` that some member accepts, then the CNN-feature options
    (:data:`CNN_FEATURE_OPTIONS`) of its CNN members, with their defaults;
    ``preprocessing`` runs once, before the members.
    """

    def __init__(self, members, combiner):
        self.members = members
        self.combiner = combiner

    @property
    def __signature__(self):
        member_options = {o for _, member in self.members for o in get(member).options}
        shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY)
                  for name in SHARED_OPTIONS if name != "preprocessing" and name in member_options]
        cnn = {}
        for _, member in self.members:
            defaults = get(member).option_defaults
            cnn.update((name, defaults[name]) for name in CNN_FEATURE_OPTIONS if name in defaults and name not in cnn)
        return inspect.Signature(shared + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value)
                                           for name, value in cnn.items()])

    def __call__(self, **options):
        # Each member is a whole recipe pipeline (own features, scaler, calibrated classifier): the
        # vote averages calibrated probabilities. Members' feature extractors cache per sample, so
        # images are described once however often the vote is refitted.
        members = []
        for alias, member in self.members:
            accepted = get(member).options
            members.append((alias, make(member, **{k: v for k, v in options.items() if k in accepted})))
        if self.combiner == "stack":
            from sklearn.ensemble import StackingClassifier

            # cv=5: stratified inner folds of the training part only (not grouped by patient or
            # duplicate cluster; see "Fusion").
            class_weight = options.get("class_weight", SHARED_OPTIONS["class_weight"])
            combined = StackingClassifier(members, final_estimator=_logistic(class_weight), cv=5,
                                          stack_method="predict_proba")
        else:
            from sklearn.ensemble import VotingClassifier

            combined = VotingClassifier(members, voting="soft")
        return RecipeParts(None, combined)


# ----------------------------------------------------------------------------- builders
#: The CNN recipes' feature options (see :func:`make`); fusions pass them to their CNN members.
CNN_FEATURE_OPTIONS = ("extra_backbones", "layers", "pooling", "tta", "feature_norm", "whiten")
#: Per-sample post-processing of CNN features accepted by the CNN recipes' ``feature_norm`` option
#: (applied to each backbone's features before they are concatenated and standardised).
FEATURE_NORMS = (None, "l2", "power_l2")
#: Fraction of the training part's variance that ``whiten=True`` keeps: the upper end of Jolliffe's
#: (2002, sec. 6.1.1) 70-90 % rule for the components that carry the structure. Whitening scales
#: every kept component to unit variance, so components at the noise floor, kept, would weigh as
#: much as the leading ones; a variance fraction (not a count) adapts to data sets of a hundred or
#: of thousands of images and to 1000-4000 features.
WHITEN_VARIANCE = 0.9
#: The second backbone of ``convnet_ensemble_svm`` (the other offline ImageNet network, at 260 px).
ENSEMBLE_EXTRA_BACKBONES = ("efficientnet_lite2",)


def _cnn(backbone, *, extra_backbones=(), layers=None, pooling="avg", tta=None, feature_norm=None):
    """The ``"features"`` step of the CNN recipes.

    With the defaults, one :class:`~featurepipe.cnn.CNNFeatures` of ``backbone`` (average-pooled
    last feature map, one view). ``extra_backbones`` concatenate more backbones' features after
    ``backbone``'s (a :class:`~featurepipe.features.FeatureBank` with one member per backbone,
    each cached per sample); ``layers``, ``pooling`` and ``tta`` are the CNNFeatures parameters
    ``layer``, ``pooling`` and ``tta`` of every backbone; ``feature_norm`` post-processes each
    backbone's vector per sample (``"l2"``: unit Euclidean norm; ``"power_l2"``: signed square root
    first, Perronnin et al. 2010), so that backbones with more or larger activations do not dominate
    the concatenation: each member is then ``Pipeline([("cnn", CNNFeatures), ("power",
    PowerNormalizer), ("l2", Normalizer)])``, in a FeatureBank even for one backbone.
    """
    from ._validation import check_choice, invalid_value_message
    from .cnn import CNNFeatures

    extra = (extra_backbones,) if isinstance(extra_backbones, str) else tuple(extra_backbones or ())
    names = (backbone, *extra)
    if not all(isinstance(n, str) and n for n in extra) or len(set(names)) != len(names):
        raise ValueError(invalid_value_message("extra_backbones", extra_backbones,
                                               f"backbone names other than backbone={backbone!r}, each once"))
    if feature_norm is not None:
        check_choice("feature_norm", feature_norm, [n for n in FEATURE_NORMS if n is not None])
    # TOML and the command line give sequences as lists; CNNFeatures takes either.
    layer = tuple(layers) if isinstance(layers, builtins.list) else layers
    tta = tuple(tta) if isinstance(tta, builtins.list) else tta
    members = []
    for name in names:
        extractor = CNNFeatures(backbone=name, weights="imagenet", pooling=pooling, layer=layer, tta=tta)
        if feature_norm is not None:
            from sklearn.pipeline import Pipeline
            from sklearn.preprocessing import Normalizer

            from .normalization import PowerNormalizer

            norm = [("power", PowerNormalizer(alpha=0.5))] if feature_norm == "power_l2" else []
            extractor = Pipeline([("cnn", extractor), *norm, ("l2", Normalizer(norm="l2"))])
        members.append((name, extractor))
    if len(members) == 1 and feature_norm is None:
        return members[0][1]
    from .features import FeatureBank

    # A FeatureBank also around one normalised backbone: imbalanced-learn's Pipeline refuses a
    # Pipeline as an intermediate step.

    return FeatureBank(members)


def _n_cnn_features(features):
    """Length of the vectors a CNN ``"features"`` step (of :func:`_cnn`) gives."""
    from .cnn import CNNFeatures

    extractors = [v for v in features.get_params(deep=True).values() if isinstance(v, CNNFeatures)]
    if isinstance(features, CNNFeatures):
        extractors = [features]
    from .cnn import get_backbone

    total = 0
    for extractor in extractors:
        try:
            spec = get_backbone(extractor.backbone)
        except ValueError as exc:
            raise ValueError(f"backbone: {exc}") from None
        if extractor.layer is None:  # the registry knows the last map's channels: no model to build
            total += spec.output_dim
            continue
        try:  # tapped layers: their channels are read from the (cached) model
            total += len(extractor.get_feature_names_out())
        except ValueError as exc:
            raise ValueError(f"layers: {exc}") from None
    return total


def _whitening(whiten):
    """The ``scaled_steps`` of ``whiten``: PCA whitening fitted on the training part, then L2 normalisation.

    Whitening decorrelates the standardised features and gives each kept principal component
    unit variance (:data:`WHITEN_VARIANCE` of the variance kept); the L2 normalisation after it
    follows Jégou & Chum (2012, "Negative evidences and co-occurrences in image retrieval: the
    benefit of PCA and whitening", ECCV), and makes every vector's squared norm 1, which the linear
    SVM's C rule uses.
    """
    from ._validation import invalid_value_message

    if not isinstance(whiten, bool):
        raise TypeError(invalid_value_message("whiten", whiten, "True or False"))
    if not whiten:
        return ()
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import Normalizer

    return (("whiten", PCA(n_components=WHITEN_VARIANCE, whiten=True, svd_solver="full")),
            ("whiten_l2", Normalizer(norm="l2")))


def _cnn_parts(classifier, *, backbone, extra_backbones, layers, pooling, tta, feature_norm, whiten):
    """:class:`RecipeParts` of a CNN recipe: its features, ``classifier(features)``, and the whitening."""
    features = _cnn(backbone, extra_backbones=extra_backbones, layers=layers, pooling=pooling, tta=tta,
                    feature_norm=feature_norm)
    scaled = _whitening(whiten)
    return RecipeParts(features, classifier(features, bool(scaled)), scaled_steps=scaled)


def _convnet_svm_linear(*, backbone, random_state, class_weight, extra_backbones=(), layers=None, pooling="avg",
                        tta=None, feature_norm=None, whiten=False):
    # SVMlight's C = 1 / mean squared norm of the vectors the SVM sees: n_features after the scaler
    # (summed over backbones and tapped layers), 1 after whitening and its L2 normalisation.
    return _cnn_parts(lambda features, whitened: _linear_svm(random_state, class_weight,
                                                             1 if whitened else _n_cnn_features(features)),
                      backbone=backbone, extra_backbones=extra_backbones, layers=layers, pooling=pooling, tta=tta,
                      feature_norm=feature_norm, whiten=whiten)


def _convnet_svm_rbf(*, backbone, random_state, class_weight, extra_backbones=(), layers=None, pooling="avg",
                     tta=None, feature_norm=None, whiten=False):
    return _cnn_parts(lambda features, whitened: _svc("rbf", random_state, class_weight), backbone=backbone,
                      extra_backbones=extra_backbones, layers=layers, pooling=pooling, tta=tta,
                      feature_norm=feature_norm, whiten=whiten)


def _convnet_elm(*, backbone, random_state, extra_backbones=(), layers=None, pooling="avg", tta=None,
                 feature_norm=None, whiten=False):
    return _cnn_parts(lambda features, whitened: _elm(random_state), backbone=backbone,
                      extra_backbones=extra_backbones, layers=layers, pooling=pooling, tta=tta,
                      feature_norm=feature_norm, whiten=whiten)


def _convnet_rf(*, backbone, random_state, class_weight, extra_backbones=(), layers=None, pooling="avg", tta=None,
                feature_norm=None, whiten=False):
    return _cnn_parts(lambda features, whitened: _rf(random_state, class_weight), backbone=backbone,
                      extra_backbones=extra_backbones, layers=layers, pooling=pooling, tta=tta,
                      feature_norm=feature_norm, whiten=whiten)


def _hybrid_svm(*, backbone, use_mask, random_state, class_weight, extra_backbones=(), layers=None, pooling="avg",
                tta=None, feature_norm=None, whiten=False):
    from .features import FeatureBank

    deep = _cnn(backbone, extra_backbones=extra_backbones, layers=layers, pooling=pooling, tta=tta,
                feature_norm=feature_norm)
    features = FeatureBank([("cnn", deep)] + [(f, _family(f, use_mask)) for f in ("firstorder", "glcm", "lbp")])
    return RecipeParts(features, _svc("rbf", random_state, class_weight), scaled_steps=_whitening(whiten))


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


def _svc(kernel, random_state, class_weight):
    from sklearn.svm import SVC

    # No ``probability=`` (deprecated): probabilities come from the calibration wrapper.
    return _calibrated(SVC(kernel=kernel, C=1.0, class_weight=class_weight, random_state=random_state))


def _linear_svm(random_state, class_weight, n_features):
    from sklearn.svm import LinearSVC

    # LinearSVC rather than SVC(kernel="linear"): one-vs-rest, so there is one weight vector per
    # class (coef_ of shape (n_classes, n_features), or (1, n_features) for two classes) whose
    # argmax is the prediction. SVC's one-vs-one weights (one row per pair of classes) cannot be
    # read per class, which class activation maps (featurepipe.cnn.cam) need.
    # C = 1 / mean(|x|^2), SVMlight's default (Joachims 1999), which is 1 / n_features on
    # standardised features: 1/1280 for EfficientNet-Lite0 (the caller passes the real count of
    # concatenated backbones and layers, or 1 for whitened, L2-normalised vectors). At C=1
    # liblinear's dual solver hit max_iter=10000 on 1280 Lite0 features of 624 images (18 s a fit,
    # 0.1 s at 1e-3): the data are nearly separable, so a large C only slows the solver down.
    return _calibrated(LinearSVC(C=1.0 / n_features, max_iter=10000, class_weight=class_weight,
                                 random_state=random_state))


def _rf(random_state, class_weight):
    from sklearn.ensemble import RandomForestClassifier

    # Vote fractions of a forest are under-confident (Niculescu-Mizil & Caruana 2005): calibrate.
    # 300 trees: past a few hundred trees the vote fractions barely change (Probst & Boulesteix 2018).
    return _calibrated(RandomForestClassifier(n_estimators=300, class_weight=class_weight,
                                              random_state=random_state))


def _elm(random_state):
    from .classifiers import ELMClassifier

    # ELMClassifier has no class_weight / sample_weight, so convnet_elm does not accept class_weight
    # (use balancing="random" or "smote" for imbalanced data). Strong ridge regularisation (alpha=10):
    # 500 random hidden units read out from a few hundred training images would interpolate them
    # with the ELM's own default (1e-3). Historical note: this value was first seen to help on
    # BUSI (balanced accuracy 0.74 against 0.54), so convnet_elm's BUSI numbers are optimistic by
    # that choice; it is the middle of the log-spaced default grid [1, 10, 100] that nested CV
    # searches. ELM scores are ridge-regression outputs, not log-odds: calibrate.
    return _calibrated(ELMClassifier(n_hidden=500, alpha=10.0, random_state=random_state))


#: Why first-order, GLCM and LBP features run on a capped grid (their family default, see
#: :data:`featurepipe.features.bank.ANALYSIS_MAX_SIDE`).
_WHY_ANALYSIS_GRID = ("texture at a fixed analysis scale: first-order, GLCM and LBP features on a grid of at most "
                      "512 px along the longer side (larger images shrunk, never enlarged), so pixel offsets "
                      "describe the same fraction of every image and the cost per image stops growing past 512 px")

#: The recipes' settings of handcrafted families, beyond each family's defaults
#: (:data:`featurepipe.features.bank.FAMILIES`): Haralick's distances 1, 2 and 4 px, and Ojala et
#: al.'s two smallest LBP operators. One table for every recipe that uses these families.
_FAMILY_SETTINGS = {"glcm": {"distances": (1, 2, 4)}, "lbp": {"scales": ((8, 1), (16, 2))}}


def _family(name, use_mask):
    """Feature family ``name`` at the recipes' settings (whole image, or the masked region)."""
    from .features.bank import FAMILIES

    return FAMILIES[name](use_mask=use_mask, **_FAMILY_SETTINGS.get(name, {}))


def _handcrafted(*families, use_mask):
    """One extractor, or a FeatureBank when several families are asked for."""
    from .features import make_feature_bank

    # Shape always describes a mask: the expert one with use_mask=True, otherwise the Otsu
    # region that shape_texture_rf puts before its features.
    extractors = [_family(f, use_mask) for f in families]
    return extractors[0] if len(extractors) == 1 else make_feature_bank(*extractors)


def _bovw(use_mask, random_state):
    from .features import BagOfVisualWords

    return BagOfVisualWords(n_words=64, roi="mask" if use_mask else "image", random_state=random_state)


#: The tiled recipe's geometry (see ``_WHY_TILES``): half-tile overlap, and a tile kept when the
#: breast covers at least a tenth of it.
_TILE_OVERLAP = 0.5
_TILE_MIN_BREAST = 0.1


def _convnet_tiles_svm(*, backbone, use_mask, random_state, class_weight, scales=(1.0, 0.5)):
    """Breast region (or, with ``use_mask``, the lesion crop), CNN features of native-size tiles, max-pooled; SVM."""
    from .cnn import CNNFeatures, get_backbone
    from .preprocessing import CropToMask, OtsuROI
    from .tiling import TiledFeatures

    try:
        spec = get_backbone(backbone)
    except ValueError as exc:
        raise ValueError(f"backbone: {exc}") from None
    features = TiledFeatures(CNNFeatures(backbone=backbone, weights="imagenet"), tile=spec.default_input_size,
                             overlap=_TILE_OVERLAP, scales=scales, pooling="max", min_foreground=_TILE_MIN_BREAST)
    # SVMlight's C = 1 / n_features (see _linear_svm), for one block of backbone features per scale.
    classifier = _linear_svm(random_state, class_weight, spec.output_dim * max(1, len(scales)))
    if use_mask:
        # The annotated region instead of the breast: its crop with the recipes' context, tiled at its own
        # pixels; tiles showing less than _TILE_MIN_BREAST of the region are skipped alike.
        return RecipeParts(features, classifier, image_steps=(("roi", CropToMask(margin=ROI_MARGIN)),))
    # The breast region becomes the mask (labels and markers outside it blanked), then the crop to its box
    # carries it along, so that tiles of background (coverage below _TILE_MIN_BREAST) are never computed.
    breast = (("breast", OtsuROI(output="mask", clear_outside=True)), ("breast_crop", CropToMask()))
    return RecipeParts(features, classifier, image_steps=breast)


def _shape_texture_rf(*, use_mask, random_state, class_weight):
    features = _handcrafted("shape", "firstorder", "glcm", use_mask=use_mask)
    if use_mask:
        return RecipeParts(features, _rf(random_state, class_weight))
    from .preprocessing import OtsuROI

    # Shape descriptors need a region: without expert masks, the Otsu foreground region of each
    # image (computed per image, no fitting).
    return RecipeParts(features, _rf(random_state, class_weight), image_steps=(("region", OtsuROI(output="mask")),))


def _keras(backbone, random_state, class_weight, **params):
    from .classifiers import KerasTransferClassifier

    return KerasTransferClassifier(backbone=backbone, weights="imagenet", class_weight=class_weight,
                                   random_state=random_state, **params)


def _keras_builder(*, patience):
    """Builder of the fine-tuning Keras recipes: the head, then the last ``unfreeze`` backbone layers."""

    def build(*, backbone, random_state, class_weight, epochs=20, fine_tune_epochs=10, unfreeze=20,
              patience=patience):
        return None, _keras(backbone, random_state, class_weight, epochs=epochs, fine_tune_epochs=fine_tune_epochs,
                            unfreeze=unfreeze, patience=patience)

    return build


def _autoencoder(random_state):
    from .classifiers import StackedAutoencoder

    return StackedAutoencoder(input_size=32, hidden_units=(256, 64), random_state=random_state)


# Calibrated classifiers: their parameters are ``classifier__estimator__<name>``. Every grid is
# small (at most 9 points, so nested CV on a cached prefix takes minutes) and spaced by principle:
# regularisation constants on decades (Hsu, Chang & Lin, "A practical guide to support vector
# classification", 2003), the RBF width left at "scale" (1 / n_features on standardised
# features, which adapts the kernel to each feature family's dimension; a fixed gamma grid would
# be too wide for 1280 CNN features and too narrow for 30 texture features).
_LINEAR_SVM_GRID = {"classifier__estimator__C": [1e-4, 1e-3, 1e-2, 1e-1]}
_SVM_RBF_GRID = {"classifier__estimator__C": [0.1, 1.0, 10.0, 100.0]}
_RF_GRID = {"classifier__estimator__max_features": ["sqrt", 0.2],
            "classifier__estimator__min_samples_leaf": [1, 3]}
_ELM_GRID = {"classifier__estimator__n_hidden": [200, 500, 1000], "classifier__estimator__alpha": [1.0, 10.0, 100.0]}

_RAZAVIAN = ("Razavian, Azizpour, Sullivan & Carlsson (2014), CNN features off-the-shelf: an astounding "
             "baseline for recognition, CVPR Workshops")
_HUYNH = ("Huynh, Li & Giger (2016), Digital mammographic tumor classification using transfer learning from deep "
          "convolutional neural networks, J. Med. Imaging 3(3):034501")

# How the defaults were chosen (one sentence each, shared by the recipes that use them). None of
# them was picked by scores on BUSI's (or any benchmark's) test folds, except where said.
_WHY_BALANCED = ("class_weight='balanced' (weights inversely proportional to class frequencies) so that "
                 "a minority class is not sacrificed to the majority on imbalanced medical data")
_WHY_CNN = ("features: EfficientNet-Lite0 (the ImageNet backbone that works offline) at its native 224 px, "
            "global average pooling of the last feature map, as in Razavian et al. (off-the-shelf features)")
_WHY_CNN_OPTIONS = ("feature options off by default (one backbone, one view, average pooling of the last map, no "
                    "post-processing: extra_backbones=(), tta=None, pooling='avg', layers=None, feature_norm=None, "
                    "whiten=False), so the recipe is the published off-the-shelf method; they are opt-in, and "
                    "what each adds on BUSI was measured (benchmarks/frozen_features.py), not used to choose "
                    "any default")
_WHY_LINEAR_SVM = (f"C = 1 / the number of features (1/1280 for EfficientNet-Lite0; the sum over concatenated "
                   f"backbones and tapped layers; 1 with whiten=True, whose vectors have unit norm), i.e. 1 / the "
                   f"mean squared norm of the vectors the SVM sees, SVMlight's default (Joachims 1999), "
                   f"{_WHY_BALANCED}; grid: C on decades 1e-4 to 0.1, around 1/n_features of ImageNet backbones "
                   f"(1000-2000 features)")
_WHY_ENSEMBLE = ("convnet_svm_linear's features made stronger by the three generic means of issue 14 #1 whose "
                 "principle holds for any modality, fixed before any measurement: (1) a second offline ImageNet "
                 "network at another native resolution (EfficientNet-Lite2, 260 px, beside Lite0 at 224 px; "
                 "networks trained alike at two scales err differently), (2) the mirror image averaged in "
                 "feature space (left-right mirroring keeps the diagnosis in every modality we target; corner "
                 "crops are left out because they can cut off a lesion at the image border), (3) signed square "
                 "root then L2 normalisation of each network's vector before concatenation (Perronnin et al. "
                 "2010), so that neither network dominates by the scale of its activations. Left out on "
                 "principle: PCA whitening (a covariance of thousands of features estimated from a few hundred "
                 "training images amplifies noise directions), GeM pooling and intermediate-layer taps (their "
                 "useful exponent and layers depend on the backbone). Linear SVM: " + _WHY_LINEAR_SVM)
_WHY_RBF_SVM = (f"C=1 and gamma='scale' (scikit-learn's defaults: 1 / n_features on standardised features), "
                f"{_WHY_BALANCED}; grid: C on decades 0.1-100 (gamma stays 'scale')")
_WHY_RF = (f"300 trees (vote fractions stable past a few hundred), max_features='sqrt' (Breiman's default), "
           f"{_WHY_BALANCED}; grid: max_features x min_samples_leaf, the most tunable forest parameters "
           f"(Probst, Wright & Boulesteix 2019)")
_WHY_ELM = ("500 sigmoid hidden units, ridge alpha=10 (a strong penalty: 500 random units read out from a few "
            "hundred images interpolate them otherwise; this value was also seen to help on BUSI, so BUSI "
            "numbers of this recipe are optimistic by that choice); no class weighting (ELMClassifier does not "
            "support class or sample weights: use balancing='random' or 'smote'); grid: n_hidden x alpha on "
            "decades")
_WHY_KERAS = (f"Adam with the published learning rates (head 1e-3, fine-tuning 1e-5), {_WHY_BALANCED}; grid: "
              f"learning rate / unfrozen depth on decades and halvings")


_WHY_TILES = (f"resizing a 1024 px mammogram to a CNN's 224 px input shrinks a median MIAS mass (radius ~40 px at "
              f"200 um) to ~9 px and erases calcifications, and global pooling averages mostly background; so: the "
              f"breast region (Otsu, labels blanked) cut into tiles of the backbone's own input size (224 px for "
              f"EfficientNet-Lite0, no resizing of a tile), overlapping by half a tile so that any object up to "
              f"half a tile across lies whole inside some tile: at scale 1.0 (the image's own pixels) lesions up to "
              f"112 px across (radius 56, most MIAS masses) at full resolution, at scale 0.5 up to 224 px of the "
              f"image (radius 112), the largest masses (radius ~200) spanning a few tiles; tiles with less than "
              f"10% breast tissue (about the area of a median lesion in a tile) skipped; features max-pooled over "
              f"the tiles (a lesion is local: the strongest tile response, not the average, marks it), scales "
              f"concatenated. Scales are relative to the image as given: for a finer pixel pitch than mini-MIAS's "
              f"200 um pass smaller scales (e.g. (0.25, 0.125) at 50 um). With use_mask=True the annotated region's "
              f"crop (ROI_MARGIN px of context) replaces the breast region, tiled alike (tiles showing at least 10% "
              f"of the region), so a large lesion keeps its full resolution. None of these was tuned on any data "
              f"set's test folds; {_WHY_LINEAR_SVM}, with C = 1 / (feature dimension x number of scales)")


#: Every recipe by name: the built-in ones below, then any registered with :func:`register_recipe`.
RECIPES = Registry("recipe")
for _recipe in [
    Recipe("convnet_svm_linear", "Frozen CNN features (global average pool) + standardisation + linear SVM "
                                 "(one-vs-rest)",
           f"{_HUYNH}; {_RAZAVIAN}",
           _convnet_svm_linear, _LINEAR_SVM_GRID, crops_to_mask=True,
           defaults=f"{_WHY_CNN}; {_WHY_CNN_OPTIONS}; {_WHY_LINEAR_SVM}"),
    Recipe("convnet_svm_rbf", "Frozen CNN features + standardisation + RBF-kernel SVM", _HUYNH,
           _convnet_svm_rbf, _SVM_RBF_GRID, crops_to_mask=True,
           defaults=f"{_WHY_CNN}; {_WHY_CNN_OPTIONS}; {_WHY_RBF_SVM}"),
    Recipe("convnet_elm", "Frozen CNN features + standardisation + Extreme Learning Machine",
           "Huang, Zhu & Siew (2006), Extreme learning machine: theory and applications, Neurocomputing "
           "70:489-501",
           _convnet_elm, _ELM_GRID, crops_to_mask=True,
           defaults=f"{_WHY_CNN}; {_WHY_CNN_OPTIONS}; {_WHY_ELM}"),
    Recipe("convnet_rf", "Frozen CNN features + standardisation + random forest",
           "Breiman (2001), Random forests, Machine Learning 45:5-32; " + _RAZAVIAN,
           _convnet_rf, _RF_GRID, crops_to_mask=True,
           defaults=f"{_WHY_CNN}; {_WHY_CNN_OPTIONS}; {_WHY_RF}"),
    Recipe("convnet_tiles_svm", "Whole mammograms: breast region (or the lesion crop with use_mask), frozen CNN "
                                "features of native-size tiles at two scales, max-pooled over the tiles + "
                                "standardisation + linear SVM",
           "Shen, Margolies, Rothstein, Fluder, McBride & Sieh (2019), Deep learning to improve breast cancer "
           "detection on screening mammography, Sci. Rep. 9:12495 (patch classifiers pooled over the whole "
           f"image); {_RAZAVIAN}",
           _convnet_tiles_svm, _LINEAR_SVM_GRID,
           defaults=_WHY_TILES),
    Recipe("firstorder_glcm_svm", "First-order statistics + Haralick GLCM texture + RBF SVM",
           "Haralick, Shanmugam & Dinstein (1973), Textural features for image classification, IEEE Trans. SMC "
           "3(6):610-621",
           lambda *, use_mask, random_state, class_weight: (_handcrafted("firstorder", "glcm", use_mask=use_mask),
                                                            _svc("rbf", random_state, class_weight)),
           _SVM_RBF_GRID,
           defaults=f"features: first-order statistics and Haralick's GLCM statistics at distances 1, 2, 4 px "
                    f"(mean and range over 4 angles, as in the paper); {_WHY_ANALYSIS_GRID}; {_WHY_RBF_SVM}"),
    Recipe("glcm_svm", "Haralick GLCM texture (distances 1, 2, 4; mean and range over angles) + RBF SVM",
           "Haralick, Shanmugam & Dinstein (1973), IEEE Trans. SMC 3(6):610-621",
           lambda *, use_mask, random_state, class_weight: (_handcrafted("glcm", use_mask=use_mask),
                                                            _svc("rbf", random_state, class_weight)),
           _SVM_RBF_GRID,
           defaults=f"features: distances 1, 2, 4 px, mean and range over 4 angles (Haralick 1973); "
                    f"{_WHY_ANALYSIS_GRID}; {_WHY_RBF_SVM}"),
    Recipe("lbp_svm", "Uniform rotation-invariant LBP histograms (P,R = 8,1 and 16,2) + RBF SVM",
           "Ojala, Pietikainen & Maenpaa (2002), Multiresolution gray-scale and rotation invariant texture "
           "classification with local binary patterns, IEEE TPAMI 24(7):971-987",
           lambda *, use_mask, random_state, class_weight: (_handcrafted("lbp", use_mask=use_mask),
                                                            _svc("rbf", random_state, class_weight)),
           _SVM_RBF_GRID,
           defaults=f"features: the two smallest operators of Ojala et al. (8,1 and 16,2); {_WHY_ANALYSIS_GRID}; "
                    f"{_WHY_RBF_SVM}"),
    Recipe("hog_svm", "Histogram of oriented gradients (128x128, 16-px cells) + RBF SVM",
           "Dalal & Triggs (2005), Histograms of oriented gradients for human detection, CVPR",
           lambda *, use_mask, random_state, class_weight: (_handcrafted("hog", use_mask=use_mask),
                                                            _svc("rbf", random_state, class_weight)),
           _SVM_RBF_GRID,
           defaults=f"features: Dalal & Triggs' 9 orientations and 2x2-cell L2-Hys blocks, on a 128 px image "
                    f"with 16 px cells (8x8 cells: coarse enough for speckled images); {_WHY_RBF_SVM}"),
    Recipe("curvelet_svm", "Curvelet sub-band statistics (4 scales) + RBF SVM",
           "Eltoukhy, Faye & Samir (2010), Breast cancer diagnosis in digital mammogram using multiscale "
           "curvelet transform, Comput. Med. Imaging Graph. 34(4):269-276",
           lambda *, use_mask, random_state, class_weight: (_handcrafted("curvelet", use_mask=use_mask),
                                                            _svc("rbf", random_state, class_weight)),
           _SVM_RBF_GRID,
           defaults=f"features: 4 scales, as in Eltoukhy et al.; {_WHY_RBF_SVM}"),
    Recipe("bovw_svm", "Bag of visual words (dense ORB descriptors, 64-word k-means vocabulary) + RBF SVM",
           "Csurka, Dance, Fan, Willamowski & Bray (2004), Visual categorization with bags of keypoints, "
           "ECCV Workshop on Statistical Learning in Computer Vision",
           lambda *, use_mask, random_state, class_weight: (_bovw(use_mask, random_state),
                                                            _svc("rbf", random_state, class_weight)),
           {**_SVM_RBF_GRID, "features__n_words": [32, 64]},
           defaults=f"features: 64 words (a vocabulary several times smaller than the descriptors of a few "
                    f"hundred images), also halved in the grid (8 points with C); {_WHY_RBF_SVM}"),
    Recipe("shape_texture_rf", "Region shape (Otsu region, or the mask with use_mask=True) + first-order + GLCM "
                               "texture + random forest",
           "Cheng, Shi, Min, Hu, Cai & Du (2006), Approaches for automated detection and classification of "
           "masses in mammograms, Pattern Recognition 39(4):646-668",
           _shape_texture_rf, _RF_GRID,
           defaults=f"features: the region's shape (native pixels) with first-order and GLCM texture, as in Cheng et "
                    f"al.; {_WHY_ANALYSIS_GRID}; {_WHY_RF}"),
    Recipe("convnet_ensemble_svm", "Two frozen CNNs (EfficientNet-Lite0 and -Lite2), mirror test-time augmentation, "
                                   "signed-root + L2 normalisation per network, concatenated + linear SVM",
           f"{_RAZAVIAN}; Perronnin, Sánchez & Mensink (2010), Improving the Fisher kernel for large-scale "
           "image classification, ECCV",
           functools.partial(_convnet_svm_linear, extra_backbones=ENSEMBLE_EXTRA_BACKBONES, tta="flip",
                             feature_norm="power_l2"),
           _LINEAR_SVM_GRID, crops_to_mask=True,
           defaults=_WHY_ENSEMBLE),
    Recipe("hybrid_svm", "Frozen CNN features + first-order, GLCM and LBP texture, concatenated + RBF SVM",
           "Antropova, Huynh & Giger (2017), A deep feature fusion methodology for breast cancer diagnosis "
           "demonstrated on three imaging modality datasets, Med. Phys. 44(10):5162-5171",
           _hybrid_svm, _SVM_RBF_GRID, crops_to_mask=True,
           defaults=f"{_WHY_CNN} ({_WHY_CNN_OPTIONS}), concatenated with the texture families at their recipes' "
                    "settings "
                    f"(Antropova et al. concatenate deep and handcrafted features); {_WHY_ANALYSIS_GRID}; "
                    f"{_WHY_RBF_SVM}"),
    Recipe("fusion_soft_vote", "Soft vote (mean of calibrated probabilities) of convnet_svm_linear, hog_svm "
                               "and firstorder_glcm_svm",
           "Kittler, Hatef, Duin & Matas (1998), On combining classifiers, IEEE TPAMI 20(3):226-239; "
           "Kuncheva (2004), Combining pattern classifiers, Wiley",
           None, {"classifier__deep__classifier__estimator__C": [0.01, 0.1, 1.0]},
           members=(("deep", "convnet_svm_linear"), ("hog", "hog_svm"), ("texture", "firstorder_glcm_svm")),
           defaults="members: one recipe per feature family (deep, gradient, texture), each at its own "
                    "defaults, because members whose errors differ are what averaging helps (Kuncheva 2004); "
                    "the deep member's " + _WHY_CNN_OPTIONS + "; "
                    "equal weights and the mean rule (Kittler et al.'s most robust rule), so the fusion fits "
                    "nothing beyond its members and needs no data of its own; grid: the deep member's C on "
                    "decades"),
    Recipe("fusion_stack", "Stacking: logistic regression on the out-of-fold calibrated probabilities of "
                           "convnet_svm_linear, hog_svm and firstorder_glcm_svm",
           "Wolpert (1992), Stacked generalization, Neural Networks 5(2):241-259; Ting & Witten (1999), Issues "
           "in stacked generalization, JAIR 10:271-289",
           None, {"classifier__final_estimator__C": [0.1, 1.0, 10.0]},
           members=(("deep", "convnet_svm_linear"), ("hog", "hog_svm"), ("texture", "firstorder_glcm_svm")),
           combiner="stack",
           defaults=f"members as fusion_soft_vote; meta-learner: multinomial logistic regression (C=1, "
                    f"scikit-learn's default) on class probabilities, the combination Ting & Witten found "
                    f"reliable, fitted on 5-fold out-of-fold member probabilities of the training part (5 "
                    f"folds: each member still sees 80% of it), {_WHY_BALANCED}; grid: the meta-learner's C "
                    f"on decades"),
    Recipe("keras_head", "End-to-end Keras transfer learning: frozen backbone, new dense head trained",
           "Yosinski, Clune, Bengio & Lipson (2014), How transferable are features in deep neural networks?, "
           "NeurIPS",
           lambda *, backbone, random_state, class_weight, epochs=20, patience=None: (
               None, _keras(backbone, random_state, class_weight, unfreeze=0, epochs=epochs, patience=patience)),
           {"classifier__learning_rate": [1e-3, 1e-4], "classifier__dropout": [0.2, 0.5]},
           end_to_end=True, crops_to_mask=True, defaults=_WHY_KERAS),
    Recipe("keras_finetune", "End-to-end Keras transfer learning: head, then the last 20 backbone layers "
                             "fine-tuned (fixed epochs)",
           "Tajbakhsh et al. (2016), Convolutional neural networks for medical image analysis: full training "
           "or fine tuning?, IEEE TMI 35(5):1299-1312",
           _keras_builder(patience=None),
           {"classifier__fine_tune_learning_rate": [1e-5, 1e-4], "classifier__unfreeze": [10, 20]},
           end_to_end=True, crops_to_mask=True,
           defaults=f"the last 20 layers (about the last block) unfrozen for 10 epochs (Tajbakhsh et al.'s "
                    f"shallow fine-tuning); {_WHY_KERAS}"),
    Recipe("keras_finetune_earlystop", "As keras_finetune, with early stopping on a validation split and "
                                       "learning-rate reduction on plateau",
           "Al-Dhabyani, Gomaa, Khaled & Fahmy (2019), Deep learning approaches for data augmentation and "
           "classification of breast masses using ultrasound images, IJACSA 10(5)",
           _keras_builder(patience=5),
           {"classifier__fine_tune_learning_rate": [1e-5, 1e-4], "classifier__unfreeze": [10, 20]},
           end_to_end=True, crops_to_mask=True,
           defaults=f"as keras_finetune, with patience 5 epochs on a validation split as published; {_WHY_KERAS}"),
    Recipe("stacked_autoencoder", "Greedy layer-wise stacked autoencoder on 32x32 pixels + softmax "
                                  "(logistic regression) on the codes",
           "Vincent, Larochelle, Lajoie, Bengio & Manzagol (2010), Stacked denoising autoencoders, JMLR "
           "11:3371-3408",
           lambda *, random_state, class_weight: (_autoencoder(random_state), _logistic(class_weight)),
           {"features__hidden_units": [(256, 64), (128, 32)], "classifier__C": [0.1, 1.0, 10.0]}, crops_to_mask=True,
           defaults=f"32x32 input and two layers (256, 64) halving the code size per layer, the usual "
                    f"halving of a stacked autoencoder; logistic regression C=1 (scikit-learn's default), "
                    f"{_WHY_BALANCED}; grid: layer widths halved, C on decades"),
]:
    RECIPES.register(_recipe.name, _recipe, built_in=True)
del _recipe


def _logistic(class_weight):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000, class_weight=class_weight)

# ----------------------------------------------------------------------------- API
def get(name):
    """The :class:`Recipe` called ``name`` (``ValueError`` naming the known ones otherwise)."""
    try:
        recipe = RECIPES.get(name)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe {name!r} is registered as {type(recipe).__name__}, not a Recipe; register "
                        "recipes with featurepipe.recipes.register_recipe(Recipe(...))")
    return recipe


def list():
    """Rows ``(name, description, citation)``, one per recipe, in registry order."""
    return [(name, recipe.description, recipe.citation) for name, recipe in RECIPES.items()]


def grid(name):
    """A copy of the default parameter grid of recipe ``name`` (full-pipeline parameter names)."""
    return {k: builtins.list(v) for k, v in get(name).param_grid.items()}


def register_recipe(recipe, *, overwrite=False):
    """Add your own :class:`Recipe` to :data:`RECIPES`; :func:`make`, :func:`grid`, :func:`list` and
    ``featurepipe recipes`` then know it like a built-in one.

    ``RECIPES.register(recipe.name, recipe)`` does the same without this
    function's checks. Built-in names cannot be replaced; another taken
    name needs ``overwrite=True``. Returns ``recipe``.

    Examples
    --------
    A builder's keyword-only parameters are the recipe's options (``C`` is
    this recipe's own, with its default):

    >>> from sklearn.linear_model import LogisticRegression
    >>> from featurepipe import recipes
    >>> from featurepipe.features import LBPFeatures
    >>> def lbp_logistic(*, use_mask, class_weight, C=1.0):
    ...     return LBPFeatures(use_mask=use_mask), LogisticRegression(C=C, class_weight=class_weight)
    >>> recipe = recipes.register_recipe(recipes.Recipe(
    ...     "lbp_logistic", "LBP histograms + logistic regression", "Ojala et al. (2002)", lbp_logistic,
    ...     {"classifier__C": [0.1, 1.0, 10.0]}, defaults="C=1, scikit-learn's default; grid: C on decades"))
    >>> recipe.options
    ('preprocessing', 'balancing', 'use_mask', 'class_weight', 'random_state', 'C')
    >>> pipe = recipes.make("lbp_logistic", C=10.0, balancing="random")
    >>> [name for name, _ in pipe.steps], pipe.named_steps["classifier"].C
    (['features', 'scale', 'balance', 'classifier'], 10.0)
    >>> recipes.make("lbp_logistic", backbone="vgg16")
    Traceback (most recent call last):
    ...
    ValueError: recipe 'lbp_logistic' does not accept the option backbone='vgg16' ... class_weight, random_state, C
    >>> recipes.register_recipe(recipes.Recipe("hog_svm", "mine", "", lbp_logistic))
    Traceback (most recent call last):
    ...
    ValueError: recipe 'hog_svm' is built in and cannot be replaced; choose another name
    >>> recipes.RECIPES.unregister("lbp_logistic")
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"register_recipe expects a featurepipe.recipes.Recipe; got {type(recipe).__name__}")
    for _, member in recipe.members:
        get(member)  # a fusion's members must be known (they define its options)
    return RECIPES.register(recipe.name, recipe, overwrite=overwrite)


def _why_refused(recipe, option):
    """Why ``recipe`` does not accept ``option`` (said in the refusal)."""
    return {
        "balancing": f"balancing is not available for the end-to-end recipe {recipe.name!r} (it has no feature "
                     "step to oversample after); use its class_weight='balanced' instead",
        "backbone": "it runs no CNN backbone",
        "use_mask": "its features cannot read a mask and it does not crop to one",
        "class_weight": "its classifier takes no class weights; use balancing= for imbalanced classes",
        "random_state": "nothing in it is random",
    }.get(option, "not an option of this recipe")


def _resolve_options(recipe, options):
    """``recipe.option_defaults`` updated with ``options``, checked; refuses options the recipe does not accept."""
    for option, value in options.items():
        # A shared option left at None asks for nothing, so one options dict (e.g. the command
        # line's) can be given to several recipes; a value the recipe cannot use is refused.
        if option not in recipe.options and not (option in SHARED_OPTIONS and value is None):
            raise ValueError(f"recipe {recipe.name!r} does not accept the option {option}={value!r} "
                             f"({_why_refused(recipe, option)}); its options are: {', '.join(recipe.options)}")
    resolved = recipe.option_defaults
    resolved.update((option, value) for option, value in options.items() if option in recipe.options)
    if not isinstance(resolved.get("use_mask", False), bool):
        raise TypeError(f"use_mask must be True or False; got {resolved['use_mask']!r}")
    if resolved.get("class_weight") not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {builtins.list(CLASS_WEIGHTS)}; "
                         f"got {resolved['class_weight']!r}")
    if "backbone" in resolved:
        backbone = resolved["backbone"]
        if backbone is None:
            resolved["backbone"] = DEFAULT_BACKBONE
        elif not isinstance(backbone, str) or not backbone:
            raise ValueError(f"backbone must be a backbone name (see featurepipe.cnn.list_backbones()); "
                             f"got {backbone!r}")
    return resolved


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


def _pair_asymmetry_features(recipe, features, combine):
    """The ``"features"`` step of :func:`make`'s ``pair_asymmetry`` option: ``features`` wrapped for pairs."""
    from .feature_store import is_stateless
    from .pairs import PAIR_COMBINATIONS, PairAsymmetry

    given = combine
    combine = "concat_absdiff" if combine is True else combine
    if combine not in PAIR_COMBINATIONS:
        raise ValueError(f"pair_asymmetry must be None, True or one of {builtins.list(PAIR_COMBINATIONS)}; "
                         f"got {given!r}")
    if features is None or not is_stateless(features):
        what = ("it has no feature step (end-to-end or fusion)" if features is None else
                f"its features ({type(features).__name__}) learn from the training data")
        raise ValueError(f"recipe {recipe.name!r} does not accept the option pair_asymmetry={given!r}: {what}; "
                         "pair asymmetry wraps stateless features (handcrafted, CNN, hybrid recipes)")
    return PairAsymmetry(features, combine=combine)


def make(name, *, pair_asymmetry=None, **options):
    """Build recipe ``name`` as an :class:`imblearn.pipeline.Pipeline` (unfitted).

    Each recipe accepts the options named in its ``Recipe.options``
    (``get(name).options``); any other option is refused with a
    ``ValueError`` naming the recipe, the option and the accepted ones,
    never silently ignored. A shared option given as ``None`` (e.g.
    ``backbone=None`` for a handcrafted recipe) asks for nothing and is
    accepted by every recipe. Options not given take the recipe's
    ``option_defaults``.

    Parameters
    ----------
    name : str
        A recipe name from :func:`list`.
    preprocessing : None, str or list of str, default=None
        Image steps before the features, in order: ``"median"`` (3x3 median
        filter), ``"clahe"`` (CLAHE, clip limit 2, 8x8 tiles), ``"otsu_roi"``
        (crop to the largest Otsu foreground region). Every recipe.
    balancing : {None, "random", "smote"}, default=None
        Oversampling of the training part, placed after feature extraction
        and scaling inside the pipeline (never before the split). Not for
        the end-to-end (Keras) recipes, which have no feature step.
    backbone : str, optional
        CNN backbone of the CNN, hybrid, Keras and fusion recipes (default
        ``"efficientnet_lite0"``, whose ImageNet weights need no network).
    use_mask : bool, default=False
        Describe the annotated region (the sample's mask) instead of the
        whole image; see "Lesion-region tasks" in the module docstring.
        Handcrafted features read the mask themselves; the recipes whose
        features cannot (CNN, hybrid, Keras, autoencoder) get a ``"roi"``
        step, :class:`~featurepipe.preprocessing.CropToMask` with
        :data:`ROI_MARGIN` pixels of context, before them. A sample without a
        mask, or with an empty one, is then refused (never silently kept
        whole). Only for data whose images to classify come with masks.
    class_weight : {"balanced", None}, default="balanced"
        Class weighting of the classifier: ``"balanced"`` weights each
        class inversely to its frequency in the training part (SVMs, random
        forests, logistic regression, Keras). The ELM recipe cannot weight
        classes (:class:`~featurepipe.classifiers.ELMClassifier` takes no
        weights) and does not accept it: use ``balancing=`` there.
    random_state : int or None, default=0
        Seed of the stochastic steps (SVM, forests, ELM, k-means, samplers, Keras).
    **recipe_options
        A recipe's own options, e.g. ``epochs`` and ``patience`` of
        ``keras_head``, and also ``fine_tune_epochs`` and ``unfreeze`` of
        ``keras_finetune`` and ``keras_finetune_earlystop``.
    pair_asymmetry : {None, True, "concat_absdiff", "absdiff", "diff"}, default=None
        For data that pair images (thermography's hot-spot crop with the
        contralateral crop of the same patient, one label per pair; see
        :mod:`featurepipe.pairs`): the ``"features"`` step becomes
        :class:`~featurepipe.pairs.PairAsymmetry` around the recipe's own
        extractor, describing each pair by ``[f(a), |f(a) - f(b)|]`` (``True``
        or ``"concat_absdiff"``), ``|f(a) - f(b)|`` or ``f(a) - f(b)``.
        Default ``None``: the recipe's features of the sample's (primary)
        image only. Why: breast thermography is read by bilateral
        asymmetry, since a tumour warms one breast while skin temperature
        varies far more between women than between a healthy woman's two
        sides; the difference of the two crops' features removes what the
        sides share (the woman, the room, the camera) and keeps what one
        side has alone. Recipes with a feature step whose features learn
        nothing from the data accept it (handcrafted, CNN, hybrid); the
        others (end-to-end, fusion, bag of words, autoencoder) refuse it.
        Unpaired samples are refused when features are computed, naming
        the sample. Image steps (preprocessing, ``"roi"``) apply to both
        images of a pair.

        The CNN-feature options of ``convnet_svm_linear``, ``convnet_svm_rbf``,
        ``convnet_elm``, ``convnet_rf`` and ``hybrid_svm``, and of the
        fusions, which pass them to their CNN member (all off by
        default: the published single-backbone, single-view, average-pooled
        features; every one is stateless and cached per sample, except
        ``whiten``, which is fitted on the training part):

        * ``extra_backbones`` (sequence of str, default ``()``): backbones
          whose features are concatenated after ``backbone``'s, e.g.
          ``("efficientnet_lite2",)``, each at its native input size.
        * ``tta`` (None, ``"flip"``, ``"flip_crops"`` or a sequence of view
          names, default None): test-time augmentation, features averaged
          over views of each image (``CNNFeatures(tta=...)``).
        * ``pooling`` (``"avg"``, ``"max"``, ``"gem"``, default ``"avg"``):
          global pooling of each feature map (GeM with p=3).
        * ``layers`` (None, a layer name or depth, or a sequence of them,
          default None): tap these layers of every backbone and concatenate
          their pooled maps (``CNNFeatures(layer=...)``) instead of the last
          map.
        * ``feature_norm`` (None, ``"l2"``, ``"power_l2"``, default None):
          per-sample normalisation of each backbone's vector before the
          scaler: unit L2 norm, or the signed square root then unit L2 norm
          (:class:`~featurepipe.normalization.PowerNormalizer`; Perronnin et
          al. 2010).
        * ``whiten`` (bool, default False): after the scaler, PCA whitening
          keeping :data:`WHITEN_VARIANCE` of the training part's variance,
          then unit L2 norm (Jégou & Chum 2012), both fitted in-fold
          (``"whiten"``, ``"whiten_l2"`` steps).

        ``convnet_svm_linear``'s C stays SVMlight's 1 / mean squared norm:
        1 / the total feature count (backbones and layers summed), or 1 with
        ``whiten=True``.

    Returns
    -------
    imblearn.pipeline.Pipeline

    Examples
    --------
    >>> from featurepipe import recipes
    >>> recipes.make("keras_finetune", epochs=5, unfreeze=10).named_steps["classifier"].unfreeze
    10
    >>> recipes.make("hog_svm", epochs=5)
    Traceback (most recent call last):
    ...
    ValueError: recipe 'hog_svm' does not accept the option epochs=5 (not an option of this recipe); ...
    >>> pipe = recipes.make("convnet_svm_linear", extra_backbones=("efficientnet_lite2",), tta="flip",
    ...                     feature_norm="power_l2", whiten=True)
    >>> [name for name, _ in pipe.steps], [name for name, _ in pipe.named_steps["features"].transformer_list]
    (['features', 'scale', 'whiten', 'whiten_l2', 'classifier'], ['efficientnet_lite0', 'efficientnet_lite2'])
    >>> pipe.named_steps["whiten"].n_components, pipe.named_steps["classifier"].estimator.C
    (0.9, 1.0)
    >>> pipe = recipes.make("convnet_svm_linear", extra_backbones=["efficientnet_lite2"])
    >>> pipe.named_steps["classifier"].estimator.C == 1 / (1280 + 1280)  # Lite0's and Lite2's last maps
    True
    """
    from imblearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    recipe = get(name)
    resolved = _resolve_options(recipe, options)
    steps = _preprocessing_steps(resolved["preprocessing"])
    taken = recipe._builder_parameters
    # A builder that takes ``balancing`` applies it itself (a fusion passes it to its members).
    sampler = None if "balancing" in taken else _sampler(resolved.get("balancing"), resolved.get("random_state"))
    parts = recipe.build(**{option: resolved[option] for option in taken})
    if not isinstance(parts, tuple) or len(parts) not in (2, 3, 4):
        raise TypeError(f"recipe {name!r}: its builder must return (features, classifier) or RecipeParts; "
                        f"got {type(parts).__name__}")
    parts = RecipeParts(*parts)
    if resolved.get("use_mask") and recipe.crops_to_mask:
        from .preprocessing import CropToMask

        steps.append(("roi", CropToMask(margin=ROI_MARGIN)))
    steps += builtins.list(parts.image_steps)
    if pair_asymmetry not in (None, False):
        parts = parts._replace(features=_pair_asymmetry_features(recipe, parts.features, pair_asymmetry))
    if parts.features is not None:
        steps += [("features", parts.features), ("scale", StandardScaler())]
    elif parts.scaled_steps:
        raise TypeError(f"recipe {name!r}: its builder returned scaled_steps without a feature step")
    steps += builtins.list(parts.scaled_steps)
    if sampler is not None:
        if parts.features is None:
            raise ValueError(f"recipe {name!r} built no feature step to oversample after, so balancing="
                             f"{resolved['balancing']!r} cannot apply; declare it end_to_end=True")
        steps.append(("balance", sampler))
    steps.append(("classifier", parts.classifier))
    return Pipeline(steps)
