"""A whole Keras model as bytes and back, so estimators holding a trained network pickle.

The bytes are those of a native ``.keras`` file (architecture as JSON and
weights; no Python code): :func:`model_from_bytes` loads them with Keras'
safe mode on, which refuses to deserialise lambdas, so unpickling a model
runs nothing the file could smuggle in.
"""

from __future__ import annotations

import os
import tempfile

__all__ = ["model_from_bytes", "model_to_bytes"]


def model_to_bytes(model):
    """The whole Keras ``model`` (architecture + weights) as the bytes of a ``.keras`` file."""
    with tempfile.TemporaryDirectory(prefix="featurepipe-") as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        with open(path, "rb") as fh:
            return fh.read()


def model_from_bytes(data):
    """The Keras model saved by :func:`model_to_bytes` (not compiled: featurepipe runs inference or refits)."""
    import keras

    with tempfile.TemporaryDirectory(prefix="featurepipe-") as tmp:
        path = os.path.join(tmp, "model.keras")
        with open(path, "wb") as fh:
            fh.write(data)
        return keras.saving.load_model(path, compile=False)
