"""Classifiers scikit-learn lacks but the published comparisons need.

* :class:`ELMClassifier` / :class:`ELMRegressor` — Extreme Learning Machine
  (random hidden layer + closed-form ridge read-out) on 2-D feature arrays.
* :class:`KerasTransferClassifier` — end-to-end transfer learning of a CNN
  backbone from :mod:`featurepipe.cnn.specs` on image samples.
* :class:`StackedAutoencoder` and :func:`make_autoencoder_pipeline` — a dense
  stacked-autoencoder feature learner on flattened images plus any
  scikit-learn classifier.

Every name is imported from its module on first use, so ``import
featurepipe.classifiers`` for the ELM does not load TensorFlow.
"""

from .._lazy import lazy_attributes

_LAZY = {
    "ELMClassifier": ".elm",
    "ELMRegressor": ".elm",
    "KerasTransferClassifier": ".keras_transfer",
    "StackedAutoencoder": ".autoencoder",
    "make_autoencoder_pipeline": ".autoencoder",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
