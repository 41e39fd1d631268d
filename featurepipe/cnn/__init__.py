"""Frozen CNN backbones as feature extractors.

* :class:`CNNFeatures` — pooled feature maps of a frozen backbone, cached per
  sample, as a scikit-learn transformer.
* :mod:`featurepipe.cnn.registry` — backbone registry (:func:`get_backbone`,
  :func:`list_backbones`, :func:`register_backbone`, :func:`load_backbone`).
* :mod:`featurepipe.cnn.efficientnet_lite` — EfficientNet-Lite0/1/2 in Keras
  with ImageNet weights that need no network.
* :mod:`featurepipe.cnn.cam` — class activation maps for linear classifiers
  on average-pooled CNN features.

TensorFlow/Keras are imported only when a model is built.
"""

from .extractor import CNNFeatures
from .registry import (
    OFFLINE_BACKBONE,
    BackboneSpec,
    BackboneWeightsError,
    clear_model_cache,
    get_backbone,
    list_backbones,
    load_backbone,
    register_backbone,
    unregister_backbone,
)

__all__ = [
    "OFFLINE_BACKBONE",
    "BackboneSpec",
    "BackboneWeightsError",
    "CNNFeatures",
    "clear_model_cache",
    "get_backbone",
    "list_backbones",
    "load_backbone",
    "register_backbone",
    "unregister_backbone",
]
