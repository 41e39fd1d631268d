"""Frozen CNN backbones as feature extractors.

* :mod:`featurepipe.cnn.registry` — backbone registry (:func:`get_backbone`,
  :func:`list_backbones`, :func:`register_backbone`, :func:`load_backbone`).

TensorFlow/Keras are imported only when a model is built.
"""

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
    "clear_model_cache",
    "get_backbone",
    "list_backbones",
    "load_backbone",
    "register_backbone",
    "unregister_backbone",
]
