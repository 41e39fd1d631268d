"""Shared parts of the Keras-based estimators: image batches, label checks, tags."""

from __future__ import annotations

import cv2
import numpy as np
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

from ..sample import as_samples

__all__ = ["KerasImageEstimatorMixin", "channel_count", "check_samples_and_labels", "load_resized"]

# Images read or converted by featurepipe are in [0, 1]; allow float rounding noise above 1.
_RANGE_TOL = 1e-4


class KerasImageEstimatorMixin:
    """Tags of estimators that take images and train a Keras network."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # X holds images, not a feature matrix
        tags.non_deterministic = True  # TensorFlow kernels may differ across machines
        return tags


def channel_count(image):
    """1 for ``(H, W)`` images, 3 for ``(H, W, 3)`` (the featurepipe convention)."""
    return 1 if image.ndim == 2 else image.shape[2]


def _resize(image, height, width):
    if image.shape[:2] == (height, width):
        return image
    # INTER_AREA averages when shrinking (no aliasing); bilinear when enlarging.
    shrinking = image.shape[0] * image.shape[1] > height * width
    out = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return out.astype(np.float32, copy=False)


def load_resized(samples, size, *, owner, n_channels=None, rgb=True):
    """Load samples and resize them to ``size`` x ``size``.

    Parameters
    ----------
    samples : 1-D object array of Sample
    size : int
        Output side in pixels.
    owner : str
        Estimator name used in error messages.
    n_channels : {None, 1, 3}
        Channel count every image must have (``None``: all must agree with
        the first one). Mixed grayscale and colour images are refused: that
        is almost always a data problem (convert on reading with
        ``mode="gray"`` or ``mode="rgb"``).
    rgb : bool, default=True
        Return ``(n, size, size, 3)`` with grayscale replicated to three
        channels; otherwise ``(n, size, size, C)`` with ``C`` the images' own
        channel count.

    Returns
    -------
    batch : ndarray of float32, values in [0, 1]
    n_channels : int
        The channel count of the input images (1 or 3).
    """
    out = None
    first_name = None
    for i, sample in enumerate(samples):
        image = np.asarray(sample.image)  # mask files stay undecoded
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ValueError(f"{owner}: sample {sample.name!r} (X[{i}]) has shape {image.shape}; expected an "
                             "image of shape (H, W) or (H, W, 3)")
        lo, hi = float(image.min()), float(image.max())
        if lo < -_RANGE_TOL or hi > 1.0 + _RANGE_TOL:
            raise ValueError(
                f"{owner}: sample {sample.name!r} (X[{i}]) has values in [{lo:g}, {hi:g}]; expected float "
                "intensities in [0, 1] (featurepipe's image convention; uint8 arrays are converted "
                "automatically). Do not standardise images before this estimator: it applies the backbone's "
                "own scaling."
            )
        c = channel_count(image)
        if n_channels is None:
            n_channels, first_name = c, f"{sample.name!r} (X[{i}])"
        elif c != n_channels:
            where = f"the first sample {first_name}" if first_name else "the images it was fitted on"
            raise ValueError(
                f"{owner}: images with mixed channel counts: sample {sample.name!r} (X[{i}]) has {c} "
                f"channel(s) but {where} has {n_channels}. Read all images in one mode "
                "(Sample.from_path(..., mode='gray') or mode='rgb') so the model sees consistent input."
            )
        image = _resize(np.clip(image, 0.0, 1.0).astype(np.float32, copy=False), size, size)
        if image.ndim == 2:
            image = image[:, :, None]
        if rgb and image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        if out is None:
            out = np.empty((len(samples),) + image.shape, dtype=np.float32)
        out[i] = image
    if out is None:
        out = np.empty((0, size, size, 3 if rgb else (n_channels or 1)), dtype=np.float32)
    return out, n_channels


def check_samples_and_labels(X, y, owner):
    """``as_samples(X)`` and a validated 1-D label array of the same length, with at least 2 classes.

    Returns
    -------
    samples : 1-D object array of Sample
    y : ndarray of shape (n_samples,)
    classes : ndarray of the sorted unique labels
    """
    samples = as_samples(X)
    if y is None:
        raise ValueError(f"{owner}.fit requires y (the class labels); got None")
    y = column_or_1d(np.asarray(y), warn=True)
    if len(samples) != len(y):
        raise ValueError(f"{owner}.fit: X has {len(samples)} samples but y has {len(y)} labels; they must match")
    if len(samples) == 0:
        raise ValueError(f"{owner}.fit: X is empty (0 samples)")
    check_classification_targets(y)
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError(f"{owner}.fit: y contains NaN or infinite labels")
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"{owner}.fit needs samples of at least 2 classes in y; got only one class: "
                         f"{np.asarray(classes[0]).item()!r}")
    return samples, y, classes
