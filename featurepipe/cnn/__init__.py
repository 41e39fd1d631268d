"""Frozen CNN backbones as feature extractors.

* :class:`CNNFeatures` — pooled feature maps of a frozen backbone, cached per
  sample, as a scikit-learn transformer.
* :mod:`featurepipe.cnn.registry` — backbone registry (:func:`get_backbone`,
  :func:`list_backbones`, :func:`register_backbone`, :func:`load_backbone`).
* :mod:`featurepipe.cnn.efficientnet_lite` — EfficientNet-Lite0/1/2 in Keras
  with ImageNet weights that need no network.
* :mod:`featurepipe.cnn.cam` — class activation maps for linear classifiers
  on average-pooled CNN features.

TensorFlow/Keras are imported only when a model is built, and the names
above on first use (so ``import featurepipe.cnn`` stays light).
"""

from .._lazy import lazy_attributes

_LAZY = {
    "CNNFeatures": ".extractor",
    "OFFLINE_BACKBONE": ".registry",
    "BackboneSpec": ".registry",
    "BackboneWeightsError": ".registry",
    "clear_model_cache": ".registry",
    "get_backbone": ".registry",
    "list_backbones": ".registry",
    "load_backbone": ".registry",
    "register_backbone": ".registry",
    "unregister_backbone": ".registry",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
