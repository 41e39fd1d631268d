"""Class activation maps (CAM; Zhou et al., CVPR 2016) for linear classifiers on CNN features.

When a linear classifier scores globally average-pooled feature maps,

    score_k = b_k + sum_c w_kc * mean_xy F(x, y, c) = b_k + mean_xy M_k(x, y),
    M_k(x, y) = sum_c w_kc * F(x, y, c),

so ``M_k`` — the classifier's weight vector applied at every position of the
last convolutional feature map — shows where the evidence for class ``k``
lies: its spatial mean plus the bias is exactly the classifier's decision
score. A :class:`~sklearn.preprocessing.StandardScaler` between the features
and the classifier is folded into ``w`` and ``b`` (it is affine), so
``Pipeline([CNNFeatures, StandardScaler, LinearSVC])`` works as it is.

The map explains the class the model predicts only when there is one weight
vector per class and the prediction is the largest score: one-vs-rest or
multinomial linear classifiers (LinearSVC, LogisticRegression …), binary
linear SVMs, and such a classifier inside
:class:`~sklearn.calibration.CalibratedClassifierCV` with ``ensemble=False``
and temperature or sigmoid calibration (monotone maps of each decision value,
so the calibrated logits are still linear in the features with the same
argmax) — the recipe ``convnet_svm_linear`` is one. Everything else is refused
with a ValueError that says why: kernel SVMs, ``SVC(kernel="linear")`` with
three or more classes (its weights are one-vs-one, one row per *pair* of
classes), forests, ELMs, isotonic or ensembled calibration.

:func:`class_activation_map` returns the map at the feature-map resolution
and bilinearly upsampled to the image; :func:`cam_overlay` /
:func:`save_cam_overlay` blend it over the image as a colour heatmap (PNG).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from ..sample import as_samples
from .extractor import CNNFeatures
from .preprocessing import input_size_pair, prepare_image
from .specs import get_backbone, load_backbone

__all__ = ["ClassActivationMap", "cam_overlay", "class_activation_map", "linear_head", "save_cam_overlay"]


@dataclass(frozen=True)
class ClassActivationMap:
    """A class activation map and what it explains.

    Attributes
    ----------
    heatmap : ndarray of float64, shape (H, W)
        The map at image resolution (bilinear upsampling of ``coarse``), in
        units of the classifier's decision score.
    coarse : ndarray of float64, shape (h, w)
        The map at the resolution of the last feature map.
    target : object
        The class label explained.
    score : float
        The classifier's linear score for ``target``: ``coarse.mean() + bias``
        (the decision function; for a calibrated classifier the calibrated
        logit, see :func:`linear_head`). The predicted class has the largest
        score (binary: the positive one).
    bias : float
        The (scaler-folded) intercept for ``target``.
    predicted : object
        The class the model predicts for the image (``target`` by default).
    image : ndarray, shape (H, W) or (H, W, 3)
        The image the map explains: the input after the pipeline's image steps
        (a crop, filter or resize), the one to overlay ``heatmap`` on.
    """

    heatmap: np.ndarray
    coarse: np.ndarray
    target: object
    score: float
    bias: float
    predicted: object = None
    image: np.ndarray | None = None


def _is_sampler(step):
    """An imbalanced-learn sampler: it resamples training data and is skipped at prediction time."""
    return hasattr(step, "fit_resample") and not hasattr(step, "transform")


def _affine_of(step, n_features):
    """``(scale, shift)`` with ``step.transform(f) == f * scale + shift``; ValueError when not affine."""
    from sklearn.preprocessing import StandardScaler

    if step is None or step == "passthrough" or _is_sampler(step):
        return np.ones(n_features), np.zeros(n_features)
    if isinstance(step, StandardScaler):
        if step.n_features_in_ != n_features:
            raise ValueError(f"class_activation_map: the StandardScaler was fitted on {step.n_features_in_} "
                             f"features but the CNN features have {n_features}")
        scale = np.ones(n_features) if step.scale_ is None else 1.0 / np.asarray(step.scale_, dtype=np.float64)
        mean = np.zeros(n_features) if step.mean_ is None else np.asarray(step.mean_, dtype=np.float64)
        return scale, -mean * scale
    raise ValueError(f"class_activation_map: the step {type(step).__name__} between the CNN features and the "
                     "classifier is not supported; only StandardScaler (or 'passthrough', or an "
                     "imbalanced-learn sampler, which does nothing at prediction time) can be folded into "
                     "the linear classifier's weights")


def _kernel_svms():
    from sklearn.svm import SVC, NuSVC

    return SVC, NuSVC


def _linear_classifiers():
    """scikit-learn classifiers whose prediction is the argmax of ``X @ coef_.T + intercept_`` (binary: sign)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import (
        LogisticRegression,
        LogisticRegressionCV,
        PassiveAggressiveClassifier,
        Perceptron,
        RidgeClassifier,
        RidgeClassifierCV,
        SGDClassifier,
    )
    from sklearn.svm import LinearSVC

    return (LinearSVC, LogisticRegression, LogisticRegressionCV, SGDClassifier, RidgeClassifier,
            RidgeClassifierCV, Perceptron, PassiveAggressiveClassifier, LinearDiscriminantAnalysis)


def _linear_rows(classifier):
    """``(coef, intercept, classes)`` of a linear classifier whose prediction is the argmax of its rows.

    ``coef`` has one row per class, or one row for two classes (positive
    means ``classes[1]``). Anything else is refused with a ValueError that
    says why: CAM is only exact for a decision that is linear in the pooled
    features, and it must explain the class the model predicts.
    """
    name = type(classifier).__name__
    if isinstance(classifier, _kernel_svms()):
        kernel = classifier.get_params().get("kernel")
        if kernel != "linear":
            raise ValueError(f"class_activation_map cannot explain {name}(kernel={kernel!r}): its decision is not "
                             "linear in the pooled CNN features; use a linear classifier (LinearSVC, "
                             "LogisticRegression, or the recipe convnet_svm_linear)")
        if len(classifier.classes_) > 2:
            raise ValueError(f"class_activation_map cannot explain {name}(kernel='linear') with "
                             f"{len(classifier.classes_)} classes: its weights are one-vs-one (one row per pair "
                             "of classes, prediction by voting), not one row per class; use LinearSVC "
                             "(one-vs-rest) or LogisticRegression")
    elif not isinstance(classifier, _linear_classifiers()):
        raise ValueError(f"class_activation_map needs a fitted linear classifier whose decision is linear in the "
                         f"pooled features (LinearSVC, LogisticRegression, SGDClassifier, RidgeClassifier, "
                         f"binary SVC(kernel='linear'), or one of them in CalibratedClassifierCV); got {name}")
    if not hasattr(classifier, "coef_"):
        raise ValueError(f"class_activation_map needs a fitted classifier; {name} has no coef_ (not fitted?)")
    coef = np.atleast_2d(np.asarray(classifier.coef_, dtype=np.float64))
    classes = np.asarray(classifier.classes_)
    intercept = np.broadcast_to(np.asarray(classifier.intercept_, dtype=np.float64), (coef.shape[0],)).copy()
    expected = 1 if len(classes) == 2 else len(classes)
    if coef.shape[0] != expected:
        raise ValueError(f"class_activation_map: {name} has {coef.shape[0]} weight rows for {len(classes)} "
                         f"classes (expected {expected}); it is not one-vs-rest and cannot be explained per class")
    return coef, intercept, classes


def _calibrated_rows(calibrated):
    """Linear rows of a :class:`~sklearn.calibration.CalibratedClassifierCV` whose argmax is its prediction.

    With ``ensemble=False`` there is one fitted classifier and monotone
    calibration maps of its decision values ``d``:

    * ``method="temperature"``: probabilities ``softmax(beta * d)`` (binary:
      logits ``(-beta d, beta d)``), so ``beta * d`` is linear with the same
      argmax;
    * ``method="sigmoid"``: class ``k`` gets ``expit(-(a_k d_k + b_k))``
      (normalised over classes for three or more), so ``-(a_k d_k + b_k)``
      is linear and its argmax (binary: sign) is the prediction.

    Isotonic calibration (a step function) and ``ensemble=True`` (an average
    of several models' probabilities) are not linear in the features.
    """
    name = "CalibratedClassifierCV"
    if not hasattr(calibrated, "calibrated_classifiers_"):
        raise ValueError(f"class_activation_map needs a fitted classifier; the {name} is not fitted")
    if len(calibrated.calibrated_classifiers_) != 1:
        raise ValueError(f"class_activation_map cannot explain a {name} with ensemble=True: its probabilities "
                         f"average {len(calibrated.calibrated_classifiers_)} models and are not linear in the "
                         "pooled features; fit it with ensemble=False (as the featurepipe recipes do)")
    pair = calibrated.calibrated_classifiers_[0]
    coef, intercept, inner_classes = _linear_rows(pair.estimator)
    # The inner classifier is fitted on class indices into the wrapper's classes_.
    classes = np.asarray(calibrated.classes_)[np.asarray(inner_classes, dtype=int)]
    if pair.method == "temperature":
        beta = float(np.asarray(pair.calibrators[0].beta_))
        return beta * coef, beta * intercept, classes
    if pair.method == "sigmoid":
        a = np.array([float(c.a_) for c in pair.calibrators])
        b = np.array([float(c.b_) for c in pair.calibrators])
        return -a[:, None] * coef, -(a * intercept + b), classes
    raise ValueError(f"class_activation_map cannot explain a {name} with method={pair.method!r}: the map from "
                     "decision values to probabilities is not linear; use method='temperature' or 'sigmoid'")


def linear_head(estimator, n_features):
    """Weights and biases of a linear classifier (after folding scalers) on the pooled features.

    Parameters
    ----------
    estimator : fitted classifier or Pipeline
        A linear classifier with one-vs-rest (or multinomial) weights
        (LinearSVC, LogisticRegression, SGDClassifier, RidgeClassifier,
        binary ``SVC(kernel="linear")`` …), the same inside a fitted
        :class:`~sklearn.calibration.CalibratedClassifierCV` with
        ``ensemble=False`` and temperature or sigmoid calibration (as the
        recipes use), or a Pipeline of optional StandardScaler steps (and
        samplers, inactive at prediction time) ending in one of them.
        Refused with a ValueError: kernel SVMs, one-vs-one ``SVC`` with three
        or more classes, forests, ELMs, isotonic or ensemble calibration.
    n_features : int
        Length of the pooled feature vector.

    Returns
    -------
    weights : ndarray, shape (n_rows, n_features)
        One row per class, or one row for binary problems (positive score
        means ``classes[1]``). The prediction of ``estimator`` is the class
        of the largest row score (binary: the sign). For a calibrated
        classifier the rows score the calibrated logits (temperature:
        ``beta * decision``; sigmoid: ``-(a * decision + b)``).
    biases : ndarray, shape (n_rows,)
    classes : ndarray
        The class label of each row (binary: the two classes).
    """
    from sklearn.calibration import CalibratedClassifierCV

    steps = [s for _, s in estimator.steps] if hasattr(estimator, "steps") else [estimator]
    classifier, transforms = steps[-1], steps[:-1]
    if isinstance(classifier, CalibratedClassifierCV):
        coef, intercept, classes = _calibrated_rows(classifier)
    else:
        coef, intercept, classes = _linear_rows(classifier)
    scale, shift = np.ones(n_features), np.zeros(n_features)
    for step in transforms:  # compose f -> f * scale + shift, step by step
        s, t = _affine_of(step, n_features)
        scale, shift = scale * s, shift * s + t
    if coef.shape[1] != n_features:
        raise ValueError(f"class_activation_map: the classifier has {coef.shape[1]} weights per class but the "
                         f"CNN features have {n_features}; was it fitted on these CNN features?")
    weights = coef * scale
    biases = intercept + coef @ shift
    return weights, biases, classes


def _predict_pooled(estimator, pooled):
    """What ``estimator`` (classifier or scaler/sampler pipeline) predicts for one pooled feature vector."""
    steps = [s for _, s in estimator.steps] if hasattr(estimator, "steps") else [estimator]
    x = pooled[None, :]
    for step in steps[:-1]:
        if step is None or step == "passthrough" or _is_sampler(step):
            continue
        x = step.transform(x)
    return steps[-1].predict(x)[0]


@dataclass(frozen=True)
class _Steps:
    """The fitted steps after CNNFeatures (a plain holder: samplers cannot sit in a sklearn Pipeline)."""

    steps: list


def _split(estimator, extractor):
    """``(image steps, CNNFeatures, linear part)`` of what the user passed."""
    from ..base import ImageStep

    image_steps = []
    if extractor is None:
        steps = [s for _, s in estimator.steps] if hasattr(estimator, "steps") else []
        at = next((i for i, s in enumerate(steps) if isinstance(s, CNNFeatures)), None)
        if at is None:
            raise ValueError("class_activation_map: pass extractor=CNNFeatures(...) (the features the "
                             "classifier was trained on), or a Pipeline that contains CNNFeatures")
        image_steps = steps[:at]
        bad = [type(s).__name__ for s in image_steps if not isinstance(s, ImageStep)]
        if bad:
            raise ValueError(f"class_activation_map: only image steps may come before CNNFeatures; found {bad}")
        extractor = steps[at]
        rest = estimator.steps[at + 1:]
        if not rest:
            raise ValueError("class_activation_map: the Pipeline has no classifier after CNNFeatures")
        estimator = _Steps(rest) if len(rest) > 1 else rest[0][1]
    if not isinstance(extractor, CNNFeatures):
        raise TypeError(f"class_activation_map: extractor must be a CNNFeatures; got {type(extractor).__name__}")
    extractor._validate_params_once()
    if extractor.pooling != "avg" or extractor.layer is not None:
        raise ValueError(f"class_activation_map needs global average pooling of the last feature map "
                         f"(pooling='avg', layer=None); the extractor has pooling={extractor.pooling!r}, "
                         f"layer={extractor.layer!r}")
    if extractor.tta is not None:
        # The features average several views; a map of the one image would not explain them.
        raise ValueError(f"class_activation_map explains the features of the image itself (tta=None); the "
                         f"extractor averages the views tta={extractor.tta!r}")
    return image_steps, extractor, estimator


def class_activation_map(estimator, image, *, target=None, extractor=None):
    """Class activation map of ``image`` for a linear classifier on average-pooled CNN features.

    Parameters
    ----------
    estimator : fitted Pipeline or classifier
        ``Pipeline([(image steps …), CNNFeatures(pooling="avg"),
        (StandardScaler), linear classifier])``, or the classifier part with
        ``extractor`` given. Image steps before CNNFeatures are applied to
        ``image`` first, so the map is at the resolution of their output.
    image : ndarray, path or Sample
        One image (featurepipe convention: float in [0, 1], uint8 … see
        :func:`featurepipe.sample.as_samples`).
    target : class label, optional
        The class to explain; default the class the model predicts (checked:
        the map's top class always equals ``estimator``'s prediction).
    extractor : CNNFeatures, optional
        Needed when ``estimator`` does not start with CNNFeatures.

    Returns
    -------
    ClassActivationMap
        ``heatmap`` (H, W) at image resolution, ``coarse`` (h, w), the
        ``target`` label, its linear ``score``, ``bias`` and the
        ``predicted`` class.

    Raises
    ------
    ValueError
        For a classifier whose decision is not linear in the pooled
        features or not one row per class (see :func:`linear_head`), other
        steps than StandardScaler/samplers after the features, or pooling
        other than global average.
    """
    image_steps, extractor, head = _split(estimator, extractor)
    samples = as_samples([image])
    for step in image_steps:  # e.g. ROI crop, CLAHE: the map explains the image the network saw
        samples = step.transform(samples)
    pixels, _ = samples[0].load()
    spec = get_backbone(extractor.backbone)
    size = input_size_pair(extractor.input_size, spec.default_input_size)
    model = load_backbone(extractor.backbone, extractor.weights, size)
    batch = prepare_image(pixels, size)[None]
    feature_map = np.asarray(model(spec.preprocess(batch), training=False), dtype=np.float64)[0]  # (h, w, C)
    weights, biases, classes = linear_head(head, feature_map.shape[-1])

    rows = feature_map.reshape(-1, feature_map.shape[-1])
    pooled = rows.mean(axis=0)
    scores = weights @ pooled + biases
    if weights.shape[0] == 1:  # binary: one decision function, positive for classes[1]
        argmax = classes[1] if scores[0] > 0 else classes[0]
    else:
        argmax = classes[int(np.argmax(scores))]
    predicted = _predict_pooled(head, pooled)
    if predicted != argmax:
        # Only reachable at an exact tie or a calibration edge case (all sigmoid outputs 0):
        # a map of another class than the predicted one must not be shown as its explanation.
        raise ValueError(f"class_activation_map: the linear head's top class {argmax!r} differs from the model's "
                         f"prediction {predicted!r} for this image (a tie or degenerate calibration); the map "
                         "would not explain the prediction")
    target = predicted if target is None else target
    if target not in list(classes):
        raise ValueError(f"class_activation_map: target {target!r} is not one of the classes {list(classes)}")
    if weights.shape[0] == 1:
        sign = 1.0 if target == classes[1] else -1.0
        w, b = sign * weights[0], sign * biases[0]
    else:
        k = list(classes).index(target)
        w, b = weights[k], biases[k]
    coarse = (rows @ w).reshape(feature_map.shape[:2])
    height, width = pixels.shape[:2]
    heatmap = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    return ClassActivationMap(heatmap=heatmap, coarse=coarse, target=target, score=float(coarse.mean() + b),
                              bias=float(b), predicted=predicted, image=pixels)


def cam_overlay(image, heatmap, *, alpha=0.5, colormap="jet"):
    """Blend a heatmap over an image: ``(1 - alpha) * image + alpha * colormap(normalised heatmap)``.

    Parameters
    ----------
    image : ndarray, (H, W) or (H, W, 3), float in [0, 1] (or uint8)
    heatmap : ndarray, (H, W)
        Min-max normalised to [0, 1] before colouring (a constant map is 0).
    alpha : float in [0, 1]
        Weight of the heatmap colour.
    colormap : str
        A Matplotlib colormap name.

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)
    """
    import matplotlib

    from ..io import to_float_image

    img = to_float_image(image, name="image")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.shape != img.shape[:2]:
        raise ValueError(f"cam_overlay: heatmap shape {heat.shape} does not match the image {img.shape[:2]} "
                         "(H, W)")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"cam_overlay: alpha must be in [0, 1]; got {alpha!r}")
    span = heat.max() - heat.min()
    norm = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    colours = matplotlib.colormaps[colormap](norm)[..., :3]
    blended = (1.0 - alpha) * np.clip(img, 0.0, 1.0) + alpha * colours
    return np.round(np.clip(blended, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_cam_overlay(path, image, heatmap, *, alpha=0.5, colormap="jet"):
    """Write :func:`cam_overlay` of ``image`` and ``heatmap`` as a PNG file; returns the path."""
    from PIL import Image

    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"save_cam_overlay: the output file must end in .png; got {path!r}")
    overlay = cam_overlay(image, heatmap, alpha=alpha, colormap=colormap)
    Image.fromarray(overlay).save(path, format="PNG")
    return path
