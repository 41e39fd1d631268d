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
from .extractor import CNNFeatures, prepare_image
from .registry import _normalise_size, get_backbone, load_backbone

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
        The classifier's decision score for ``target``: ``coarse.mean() + bias``.
    bias : float
        The (scaler-folded) intercept for ``target``.
    """

    heatmap: np.ndarray
    coarse: np.ndarray
    target: object
    score: float
    bias: float


def _affine_of(step, n_features):
    """``(scale, shift)`` with ``step.transform(f) == f * scale + shift``; ValueError when not affine."""
    from sklearn.preprocessing import StandardScaler

    if step is None or step == "passthrough":
        return np.ones(n_features), np.zeros(n_features)
    if isinstance(step, StandardScaler):
        if step.n_features_in_ != n_features:
            raise ValueError(f"class_activation_map: the StandardScaler was fitted on {step.n_features_in_} "
                             f"features but the CNN features have {n_features}")
        scale = np.ones(n_features) if step.scale_ is None else 1.0 / np.asarray(step.scale_, dtype=np.float64)
        mean = np.zeros(n_features) if step.mean_ is None else np.asarray(step.mean_, dtype=np.float64)
        return scale, -mean * scale
    raise ValueError(f"class_activation_map: the step {type(step).__name__} between the CNN features and the "
                     "classifier is not supported; only StandardScaler (or 'passthrough') can be folded into "
                     "the linear classifier's weights")


def linear_head(estimator, n_features):
    """Weights and biases of a linear classifier (after folding scalers) on the pooled features.

    Parameters
    ----------
    estimator : fitted classifier or Pipeline
        A linear classifier with ``coef_`` and ``intercept_`` (LinearSVC,
        LogisticRegression, SGDClassifier, RidgeClassifier …), or a Pipeline
        of optional StandardScaler steps ending in one.
    n_features : int
        Length of the pooled feature vector.

    Returns
    -------
    weights : ndarray, shape (n_rows, n_features)
        One row per decision function (one row for binary problems, for
        ``classes_[1]``).
    biases : ndarray, shape (n_rows,)
    classes : ndarray
        ``classes_`` of the classifier.
    """
    from sklearn.pipeline import Pipeline

    steps = [s for _, s in estimator.steps] if isinstance(estimator, Pipeline) else [estimator]
    classifier, transforms = steps[-1], steps[:-1]
    if not hasattr(classifier, "coef_") or not hasattr(classifier, "intercept_"):
        raise ValueError(f"class_activation_map needs a fitted linear classifier (with coef_ and intercept_, "
                         f"e.g. LinearSVC or LogisticRegression); got {type(classifier).__name__}")
    scale, shift = np.ones(n_features), np.zeros(n_features)
    for step in transforms:  # compose f -> f * scale + shift, step by step
        s, t = _affine_of(step, n_features)
        scale, shift = scale * s, shift * s + t
    coef = np.atleast_2d(np.asarray(classifier.coef_, dtype=np.float64))
    intercept = np.broadcast_to(np.asarray(classifier.intercept_, dtype=np.float64), (coef.shape[0],)).copy()
    if coef.shape[1] != n_features:
        raise ValueError(f"class_activation_map: the classifier has {coef.shape[1]} weights per class but the "
                         f"CNN features have {n_features}; was it fitted on these CNN features?")
    weights = coef * scale
    biases = intercept + coef @ shift
    return weights, biases, np.asarray(classifier.classes_)


def _split(estimator, extractor):
    """``(image steps, CNNFeatures, linear part)`` of what the user passed."""
    from sklearn.pipeline import Pipeline

    from ..base import ImageStep

    image_steps = []
    if extractor is None:
        steps = [s for _, s in estimator.steps] if isinstance(estimator, Pipeline) else []
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
        estimator = Pipeline(rest) if len(rest) > 1 else rest[0][1]
    if not isinstance(extractor, CNNFeatures):
        raise TypeError(f"class_activation_map: extractor must be a CNNFeatures; got {type(extractor).__name__}")
    extractor._check_params()
    if extractor.pooling != "avg" or extractor.layer is not None:
        raise ValueError(f"class_activation_map needs global average pooling of the last feature map "
                         f"(pooling='avg', layer=None); the extractor has pooling={extractor.pooling!r}, "
                         f"layer={extractor.layer!r}")
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
        The class to explain; default the predicted class.
    extractor : CNNFeatures, optional
        Needed when ``estimator`` does not start with CNNFeatures.

    Returns
    -------
    ClassActivationMap
        ``heatmap`` (H, W) at image resolution, ``coarse`` (h, w), the
        ``target`` label, its decision ``score`` and ``bias``.
    """
    image_steps, extractor, head = _split(estimator, extractor)
    samples = as_samples([image])
    for step in image_steps:  # e.g. ROI crop, CLAHE: the map explains the image the network saw
        samples = step.transform(samples)
    pixels, _ = samples[0].load()
    spec = get_backbone(extractor.backbone)
    size = _normalise_size(extractor.input_size, spec)
    model = load_backbone(extractor.backbone, extractor.weights, size)
    batch = prepare_image(pixels, size)[None]
    feature_map = np.asarray(model(spec.preprocess(batch), training=False), dtype=np.float64)[0]  # (h, w, C)
    weights, biases, classes = linear_head(head, feature_map.shape[-1])

    rows = feature_map.reshape(-1, feature_map.shape[-1])
    pooled = rows.mean(axis=0)
    if weights.shape[0] == 1:  # binary: one decision function, positive for classes_[1]
        decision = float(pooled @ weights[0] + biases[0])
        predicted = classes[1] if decision > 0 else classes[0]
        target = predicted if target is None else target
        if target not in list(classes):
            raise ValueError(f"class_activation_map: target {target!r} is not one of the classes {list(classes)}")
        sign = 1.0 if target == classes[1] else -1.0
        w, b = sign * weights[0], sign * biases[0]
    else:
        scores = weights @ pooled + biases
        target = classes[int(np.argmax(scores))] if target is None else target
        if target not in list(classes):
            raise ValueError(f"class_activation_map: target {target!r} is not one of the classes {list(classes)}")
        k = list(classes).index(target)
        w, b = weights[k], biases[k]
    coarse = (rows @ w).reshape(feature_map.shape[:2])
    height, width = pixels.shape[:2]
    heatmap = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    return ClassActivationMap(heatmap=heatmap, coarse=coarse, target=target, score=float(coarse.mean() + b),
                              bias=float(b))


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
