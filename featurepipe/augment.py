"""Training-only image augmentation as an imbalanced-learn sampler.

:class:`AugmentingSampler` adds randomly flipped / rotated / zoomed /
shifted (and optionally brightened) copies of the training images. It is a
*sampler* (``fit_resample``), not a transformer: inside an
:class:`imblearn.pipeline.Pipeline` samplers run only while the pipeline is
fitted and are skipped by ``predict``/``score``/``transform``, so under
``cross_validate`` or ``GridSearchCV`` the test fold is never augmented and
no copy of a training image can be scored.

Copies are lazy derived samples (:meth:`featurepipe.sample.Sample.derive`):
the random parameters of a copy are drawn in ``fit_resample`` and written
into its key, so a copy is identified exactly by (parent key, parameters)
and its features are cached like any other sample's; pixels are computed
only when a feature extractor needs them.
"""

from __future__ import annotations

from collections import Counter
from numbers import Integral, Real

import cv2
import numpy as np
from imblearn.base import BaseSampler
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_consistent_length, column_or_1d

from ._validation import ParamValidationMixin, StrictInterval, invalid_parameter, is_int, is_real
from ._version import __version__
from .sample import as_samples

__all__ = ["AugmentingSampler", "Augmentation"]

_FILL_MODES = {
    "constant": cv2.BORDER_CONSTANT,
    "reflect": cv2.BORDER_REFLECT_101,
    "nearest": cv2.BORDER_REPLICATE,
    "wrap": cv2.BORDER_WRAP,
}
# warpAffine maps pixel centres to pixel centres and rounds for INTER_NEAREST (it has no *_EXACT variant).
_INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}
_STRATEGY_WORDS = ("all", "minority", "not majority", "not minority", "majority")


def _affine_matrix(shape, angle, zoom, shift_y, shift_x):
    """2x3 matrix: rotate by ``angle`` degrees (counter-clockwise on screen) and scale by ``zoom``
    about the image centre, then translate by the fractions ``shift_y``/``shift_x`` of the height/width."""
    height, width = shape[:2]
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, float(angle), float(zoom))
    matrix[0, 2] += shift_x * width
    matrix[1, 2] += shift_y * height
    return matrix


class Augmentation:
    """One fixed augmentation ``(image, mask) -> (image, mask)``: picklable, deterministic.

    Applied in this order: horizontal flip, vertical flip, one affine warp
    (rotation by ``angle`` degrees, counter-clockwise as displayed, and
    scaling by ``zoom`` about the image centre, then a shift by ``shift_y``
    x height and ``shift_x`` x width pixels; skipped when it is the identity;
    cubic output clipped to the range of the input and ``fill_value``), then
    multiplication by ``brightness`` clipped to ``[0, 1]``. The mask is
    flipped and warped with nearest neighbour and the same border rule
    (outside is ``False`` for ``fill_mode="constant"``).
    """

    def __init__(self, flip_horizontal=False, flip_vertical=False, angle=0.0, zoom=1.0, shift_y=0.0,
                 shift_x=0.0, brightness=1.0, fill_mode="constant", fill_value=0.0, interpolation="linear"):
        self.flip_horizontal = bool(flip_horizontal)
        self.flip_vertical = bool(flip_vertical)
        self.angle = float(angle)
        self.zoom = float(zoom)
        self.shift_y = float(shift_y)
        self.shift_x = float(shift_x)
        self.brightness = float(brightness)
        self.fill_mode = fill_mode
        self.fill_value = float(fill_value)
        self.interpolation = interpolation

    def params(self):
        """The parameters as a plain dict (stored in the copy's ``meta["augmentation"]``)."""
        return dict(vars(self))

    def token(self):
        """Exact text of the parameters (floats by ``repr``), used in the copy's key."""
        parts = ",".join(f"{name}={value!r}" for name, value in sorted(vars(self).items()))
        return f"featurepipe.augment.Augmentation({parts})@featurepipe-{__version__}"

    def __call__(self, image, mask):
        image = np.asarray(image, dtype=np.float32)
        if self.flip_horizontal:
            image = image[:, ::-1]
            mask = None if mask is None else mask[:, ::-1]
        if self.flip_vertical:
            image = image[::-1]
            mask = None if mask is None else mask[::-1]
        image = np.ascontiguousarray(image)
        mask = None if mask is None else np.ascontiguousarray(mask)
        if (self.angle, self.zoom, self.shift_y, self.shift_x) != (0.0, 1.0, 0.0, 0.0):
            height, width = image.shape[:2]
            matrix = _affine_matrix(image.shape, self.angle, self.zoom, self.shift_y, self.shift_x)
            border = _FILL_MODES[self.fill_mode]
            low, high = float(image.min()), float(image.max())
            image = cv2.warpAffine(image, matrix, (width, height), flags=_INTERPOLATIONS[self.interpolation],
                                   borderMode=border, borderValue=(self.fill_value,) * 4)
            if self.interpolation == "cubic":  # cubic kernels overshoot at edges: keep the input's range
                image = np.clip(image, min(low, self.fill_value), max(high, self.fill_value))
            if mask is not None:
                mask = cv2.warpAffine(mask.astype(np.uint8), matrix, (width, height),
                                      flags=cv2.INTER_NEAREST, borderMode=border, borderValue=0).astype(bool)
        if self.brightness != 1.0:
            image = np.clip(image * np.float32(self.brightness), 0.0, 1.0)
        return np.ascontiguousarray(image, dtype=np.float32), mask

    def __repr__(self):
        return self.token().split("@")[0]


def _as_range(sampler, name, centre, minimum=None):
    """Parameter ``name`` as a (low, high) range: a number r means centre +/- r; a pair is taken as is."""
    value = getattr(sampler, name)
    if is_real(value) and value >= 0:
        low, high = centre - float(value), centre + float(value)
    elif (isinstance(value, (tuple, list)) and len(value) == 2 and all(is_real(v) for v in value)
          and value[0] <= value[1]):
        low, high = float(value[0]), float(value[1])
    else:
        raise invalid_parameter(sampler, name, f"a number >= 0 (meaning {centre:g} +/- that) or a pair "
                                               "(low, high) of finite numbers with low <= high")
    if minimum is not None and low <= minimum:
        raise invalid_parameter(sampler, name, f"a range of values > {minimum:g} (it gives ({low:g}, {high:g}))")
    return low, high


class AugmentingSampler(ParamValidationMixin, BaseSampler):
    """Add ``n_copies`` randomly augmented copies of each training sample (training folds only).

    An imbalanced-learn sampler: use it as a step of
    :class:`imblearn.pipeline.Pipeline`, before the feature extractor. The
    pipeline calls ``fit_resample`` only when it is fitted, so predictions and
    scores on test folds never see augmented images. Output: the original
    samples (unchanged, same order) followed by the copies, with their labels.

    Parameters
    ----------
    n_copies : int >= 1, default=1
        Copies added per selected sample.
    horizontal_flip, vertical_flip : bool, default=True, False
        Flip each copy left-right / up-down with probability 1/2.
    rotation_range : float or (float, float), default=0.0
        Angle in degrees, uniform in ``[-r, r]`` for a number ``r`` or in
        ``[low, high]`` for a pair; positive turns counter-clockwise as displayed.
    zoom_range : float or (float, float), default=0.0
        Scale factor, uniform in ``[1 - z, 1 + z]`` for a number ``z`` or in
        ``[low, high]``; > 1 enlarges the content (zooms in). Must stay > 0.
    shift_range : float or (float, float), default=0.0
        Translation as a fraction of the height (rows) and width (columns),
        each drawn independently, uniform in ``[-s, s]`` or ``[low, high]``.
    brightness_range : (float, float) or None, default=None
        Multiply intensities by a factor uniform in ``[low, high]`` (then clip
        to ``[0, 1]``); ``None`` leaves intensities alone.
    fill_mode : {"constant", "reflect", "nearest", "wrap"}, default="constant"
        Pixels that come from outside the image: ``fill_value``, mirrored
        (without repeating the edge), the nearest edge pixel, or wrapped.
    fill_value : float, default=0.0
        Intensity used by ``fill_mode="constant"``.
    interpolation : {"linear", "cubic", "nearest"}, default="linear"
        Resampling of the image in the warp (masks: nearest neighbour).
    sampling_strategy : str, list or dict, default="all"
        Which training samples get copies, by class (computed on the ``y``
        passed to ``fit_resample``, i.e. per training fold):

        * ``"all"``: every sample gets ``n_copies``;
        * ``"minority"`` / ``"majority"``: only the class with the fewest /
          most samples (ties: every tied class);
        * ``"not majority"`` / ``"not minority"``: every class but those;
        * a list of class labels: those classes;
        * a dict ``{label: n}``: ``n`` copies for each sample of that class
          (overrides ``n_copies``; unlisted classes get none).

        Unlike imbalanced-learn's over-samplers this does not equalise class
        counts; it multiplies the selected classes by ``1 + n_copies``.
    random_state : int, RandomState or None, default=None
        Seed for the random parameters. With a fixed seed the same input gives
        the same copies (keys and pixels).

    Attributes
    ----------
    sampling_strategy_ : dict
        ``{label: copies per sample}`` used in the last ``fit_resample``.

    Notes
    -----
    Each copy's random parameters are drawn in a fixed order (flips,
    angle, zoom, shifts, brightness) for each selected sample in input order,
    then for each copy. The copy's key is ``hash(parent key, parameters)``,
    so two copies that drew identical parameters (e.g. flips only) share a key
    and pixels. ``meta["augmentation"]`` holds the parameters and
    ``meta["augmented_from"]`` the parent key.
    """

    _sampling_type = "bypass"
    _parameter_constraints = {
        "n_copies": [StrictInterval(Integral, 1, None, closed="left")],
        "horizontal_flip": ["boolean"],
        "vertical_flip": ["boolean"],
        "rotation_range": [StrictInterval(Real, 0, None, closed="left"), tuple, list],
        "zoom_range": [StrictInterval(Real, 0, None, closed="left"), tuple, list],
        "shift_range": [StrictInterval(Real, 0, None, closed="left"), tuple, list],
        "brightness_range": [None, tuple, list],
        "fill_mode": [StrOptions(set(_FILL_MODES))],
        "fill_value": [StrictInterval(Real, None, None, closed="neither")],
        "interpolation": [StrOptions(set(_INTERPOLATIONS))],
        "sampling_strategy": [StrOptions(set(_STRATEGY_WORDS)), list, tuple, dict],
        "random_state": ["random_state"],
    }

    def __init__(self, n_copies=1, *, horizontal_flip=True, vertical_flip=False, rotation_range=0.0,
                 zoom_range=0.0, shift_range=0.0, brightness_range=None, fill_mode="constant",
                 fill_value=0.0, interpolation="linear", sampling_strategy="all", random_state=None):
        self.n_copies = n_copies
        self.horizontal_flip = horizontal_flip
        self.vertical_flip = vertical_flip
        self.rotation_range = rotation_range
        self.zoom_range = zoom_range
        self.shift_range = shift_range
        self.brightness_range = brightness_range
        self.fill_mode = fill_mode
        self.fill_value = fill_value
        self.interpolation = interpolation
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state

    # -- validation -----------------------------------------------------------------
    def _validate_param_rules(self):
        self._ranges()
        if isinstance(self.sampling_strategy, dict):
            for label, n in self.sampling_strategy.items():
                if not is_int(n) or n < 0:
                    raise invalid_parameter(self, f"sampling_strategy[{label!r}]",
                                            "an integer >= 0 (copies per sample)", value=n)

    def _ranges(self):
        """The validated (low, high) ranges of the random parameters."""
        return {
            "rotation": _as_range(self, "rotation_range", 0.0),
            "zoom": _as_range(self, "zoom_range", 1.0, minimum=0.0),
            "shift": _as_range(self, "shift_range", 0.0),
            "brightness": (None if self.brightness_range is None
                           else _as_range(self, "brightness_range", 1.0, minimum=0.0)),
        }

    def _check_X_y(self, X, y, accept_sparse=None):
        # X holds images (samples, paths or arrays), not a 2-D feature matrix, so
        # imbalanced-learn's validate_data is replaced by as_samples; y is checked as usual.
        samples = as_samples(X)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        check_consistent_length(samples, y)
        return samples, y, False

    def _copies_per_class(self, y):
        counts = Counter(y.tolist())
        labels = sorted(counts, key=lambda v: (str(type(v)), v))
        strategy = self.sampling_strategy
        n = int(self.n_copies)
        if isinstance(strategy, dict):
            unknown = [label for label in strategy if label not in counts]
            if unknown:
                raise ValueError(f"{type(self).__name__}: sampling_strategy names classes {unknown} that are "
                                 f"not in y (classes present: {labels})")
            return {label: int(strategy.get(label, 0)) for label in labels}
        if isinstance(strategy, (list, tuple)):
            unknown = [label for label in strategy if label not in counts]
            if unknown:
                raise ValueError(f"{type(self).__name__}: sampling_strategy names classes {unknown} that are "
                                 f"not in y (classes present: {labels})")
            chosen = set(strategy)
        else:
            low, high = min(counts.values()), max(counts.values())
            chosen = {
                "all": set(labels),
                "minority": {c for c in labels if counts[c] == low},
                "majority": {c for c in labels if counts[c] == high},
                "not minority": {c for c in labels if counts[c] != low},
                "not majority": {c for c in labels if counts[c] != high},
            }[strategy]
        return {label: (n if label in chosen else 0) for label in labels}

    # -- imbalanced-learn API -----------------------------------------------------------
    def fit_resample(self, X, y, **params):
        """Return the samples followed by their augmented copies, and the labels.

        Parameters
        ----------
        X : sequence of Sample, paths or image arrays, length n_samples
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        X_resampled : ndarray of object (or list if ``X`` was a list), length n_samples + n_added
            Originals first, in order, then the lazy augmented copies.
        y_resampled : ndarray of shape (n_samples + n_added,)
        """
        return super().fit_resample(X, y, **params)  # imbalanced-learn's _fit_context validates the parameters

    def fit(self, X, y, **params):
        """Validate parameters and inputs (``fit_resample`` is what pipelines call). Returns ``self``."""
        return super().fit(X, y, **params)

    def _fit_resample(self, X, y):
        ranges = self._ranges()
        per_class = self._copies_per_class(y)
        self.sampling_strategy_ = per_class
        rng = check_random_state(self.random_state)
        new_samples, new_labels = [], []
        for sample, label in zip(X, y):
            for _ in range(per_class[label]):
                aug = self._draw(rng, ranges)
                copy = sample.derive(aug.token(), aug)
                meta = dict(sample.meta)
                meta["augmentation"] = aug.params()
                meta["augmented_from"] = sample.key
                new_samples.append(copy.replace(meta=meta))
                new_labels.append(label)
        X_out = np.empty(len(X) + len(new_samples), dtype=object)
        X_out[: len(X)] = list(X)
        for i, sample in enumerate(new_samples):
            X_out[len(X) + i] = sample
        y_out = np.concatenate([y, np.asarray(new_labels, dtype=y.dtype)]) if new_labels else y.copy()
        return X_out, y_out

    def _draw(self, rng, ranges):
        flip_h = bool(rng.random_sample() < 0.5) if self.horizontal_flip else False
        flip_v = bool(rng.random_sample() < 0.5) if self.vertical_flip else False
        angle = rng.uniform(*ranges["rotation"])
        zoom = rng.uniform(*ranges["zoom"])
        shift_y = rng.uniform(*ranges["shift"])
        shift_x = rng.uniform(*ranges["shift"])
        brightness = 1.0 if ranges["brightness"] is None else rng.uniform(*ranges["brightness"])
        return Augmentation(flip_h, flip_v, angle, zoom, shift_y, shift_x, brightness, self.fill_mode,
                            float(self.fill_value), self.interpolation)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # X is a 1-D sequence of images, not a 2-D array / sparse matrix / dataframe.
        tags.input_tags.two_d_array = False
        tags.input_tags.sparse = False
        tags.input_tags.dataframe = False
        return tags
