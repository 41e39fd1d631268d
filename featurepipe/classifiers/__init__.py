"""Classifiers scikit-learn lacks but the published comparisons need.

* :class:`ELMClassifier` / :class:`ELMRegressor` — Extreme Learning Machine
  (random hidden layer + closed-form ridge read-out) on 2-D feature arrays.
* :class:`KerasTransferClassifier` — end-to-end transfer learning of a CNN
  backbone from :mod:`featurepipe.cnn.registry` on image samples.
* :class:`StackedAutoencoder` and :func:`make_autoencoder_pipeline` — a dense
  stacked-autoencoder feature learner on flattened images plus any
  scikit-learn classifier.

The Keras-based estimators are imported lazily, so ``import
featurepipe.classifiers`` for the ELM does not load TensorFlow.
"""

from .elm import ELMClassifier, ELMRegressor

__all__ = [
    "ELMClassifier",
    "ELMRegressor",
    "KerasTransferClassifier",
    "StackedAutoencoder",
    "make_autoencoder_pipeline",
]

_LAZY = {
    "KerasTransferClassifier": ".keras_transfer",
    "StackedAutoencoder": ".autoencoder",
    "make_autoencoder_pipeline": ".autoencoder",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
