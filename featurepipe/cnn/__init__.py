"""Frozen CNN backbones as feature extractors.

* :class:`CNNFeatures` — pooled feature maps of a frozen backbone, cached per
  sample, as a scikit-learn transformer (:mod:`featurepipe.cnn.extractor`).
* :mod:`featurepipe.cnn.specs` — the backbone table :data:`~featurepipe.cnn.specs.BACKBONES`
  (:func:`get_backbone`, :func:`list_backbones`, :func:`register_backbone`,
  :func:`load_backbone`).
* :mod:`featurepipe.cnn.preprocessing` — images to network input, and each
  backbone's input scaling (``preprocess_tf``, ``preprocess_caffe`` …).
* :mod:`featurepipe.cnn.weights` — where weights come from, and the errors
  that say what to download when they cannot be had.
* :mod:`featurepipe.cnn.model_cache` — the per-process cache of built models
  (:func:`clear_model_cache`), the only global state of this package.
* :mod:`featurepipe.cnn.efficientnet_lite` — EfficientNet-Lite0/1/2 in Keras
  with ImageNet weights that need no network.
* :mod:`featurepipe.cnn.runtimes` — ONNX Runtime / OpenVINO inference.
* :mod:`featurepipe.cnn.cam` — class activation maps for linear classifiers
  on average-pooled CNN features.

TensorFlow/Keras are imported only when a model is built, and the names
above on first use (so ``import featurepipe.cnn`` stays light).
"""

from .._lazy import lazy_attributes

_LAZY = {
    "CNNFeatures": ".extractor",
    "BACKBONES": ".specs",
    "BackboneSpec": ".specs",
    "get_backbone": ".specs",
    "list_backbones": ".specs",
    "load_backbone": ".specs",
    "register_backbone": ".specs",
    "unregister_backbone": ".specs",
    "preprocess_caffe": ".preprocessing",
    "preprocess_identity": ".preprocessing",
    "preprocess_lite": ".preprocessing",
    "preprocess_tf": ".preprocessing",
    "preprocess_torch": ".preprocessing",
    "OFFLINE_BACKBONE": ".weights",
    "BackboneWeightsError": ".weights",
    "clear_model_cache": ".model_cache",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
