"""The two kinds of pipeline step and the cache token that identifies them.

* :class:`ImageStep` — image → image (filters, CLAHE, ROI, resize …).
  ``transform`` returns *lazy* derived samples: no pixel is touched until a
  feature extractor needs it, and then only on a cache miss.
* :class:`FeatureExtractor` — image → vector. ``transform`` hands the
  samples to the feature engine (:class:`~featurepipe.feature_store.FeatureStore`),
  which looks each sample up in the per-sample cache and computes only the
  misses (in parallel over images with joblib when ``n_jobs`` is set).

Both follow imbalanced-learn's template-method style: the public method
validates and orchestrates, and subclasses implement one protected
per-image method (``_transform_image`` / ``_extract``). Parameters are
validated the scikit-learn way (``_parameter_constraints``, see
:class:`featurepipe._validation.ParamValidationMixin`): in ``fit``, or once
per parameter state when a stateless step is used without ``fit``. Both
kinds are stateless — their output for a sample does not depend on the
data seen in ``fit`` — and say so with scikit-learn's ``requires_fit=False``
tag (a subclass that learns sets the class attribute ``_stateless =
False``); :func:`is_stateless` reads it, and the benchmark runner and the
search compute the stateless prefix of a pipeline once per dataset.
"""

from __future__ import annotations

import os
from numbers import Integral

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone

from ._validation import ParamValidationMixin, StrictInterval
from .cache import step_token
from .feature_store import FeatureExtractorKind, FeatureStore, ImageStepKind, is_stateless
from .io import ImageReadError
from .sample import as_samples

__all__ = ["ImageStep", "ImageStepError", "FeatureExtractor", "step_token", "is_stateless", "set_feature_cache"]


class ImageStepError(ValueError):
    """An image step failed on one sample; ``step``, ``sample`` and ``reason`` say where and why."""

    def __init__(self, step, sample, reason):
        self.step = step
        self.sample = sample
        self.reason = reason
        super().__init__(f"{step} on sample {sample}: {reason}")

    def __reduce__(self):
        return (type(self), (self.step, self.sample, self.reason))


def describe_sample(sample):
    """How errors name a sample: its file path, or its key for in-memory images."""
    return repr(sample.path) if sample.path else f"key {sample.key[:12]!r} (in-memory image)"


class _StepCall:
    """Picklable per-sample call of a frozen step; its errors name the step and the sample."""

    __slots__ = ("step", "sample_name")

    def __init__(self, step, sample_name):
        self.step = step
        self.sample_name = sample_name

    def __call__(self, image, mask):
        try:
            return self.step._apply(image, mask)
        except ImageStepError:
            raise
        except ValueError as exc:
            raise ImageStepError(type(self.step).__name__, self.sample_name, str(exc).strip()) from exc




class _StatelessTagsMixin:
    """Declares statelessness as scikit-learn's ``requires_fit=False`` tag, from the class attribute ``_stateless``.

    ``_stateless`` is the declaration (``True`` for image steps and feature
    extractors; a step that learns, such as a bag of visual words, sets it to
    ``False``); everything else reads the tag through :func:`is_stateless`.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = not self._stateless
        tags.input_tags.two_d_array = False
        return tags

    def __sklearn_is_fitted__(self):
        return is_stateless(self) or getattr(self, "_is_fitted", False)


class ImageStep(ParamValidationMixin, _StatelessTagsMixin, TransformerMixin, BaseEstimator):
    """Base class of image → image steps.

    Subclasses implement ``_transform_image(image, mask) -> (image, mask)``
    for one image in the :mod:`featurepipe.io` convention (mask may be
    ``None``), declare ``_parameter_constraints`` (scikit-learn constraints
    per ``__init__`` parameter) and, only for rules those cannot express
    (odd sizes, elements of pairs, relations between parameters), override
    ``_validate_param_rules()`` raising
    :func:`featurepipe._validation.invalid_parameter`. ``fit`` validates;
    ``transform`` without ``fit`` validates once per parameter state.
    ``transform`` returns a 1-D object array of derived
    :class:`~featurepipe.sample.Sample` whose pixels are computed on demand.
    """

    _stateless = True
    _non_key_params = ()
    _parameter_constraints: dict = {}

    def _transform_image(self, image, mask):
        raise NotImplementedError  # abstract: every concrete step defines it

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Validate the parameters; stateless steps learn nothing. Returns ``self``."""
        return self

    def transform(self, X):
        """Lazy derived samples: ``(image, mask)`` of each sample passed through this step."""
        samples = as_samples(X)
        self._validate_params_once()
        frozen = clone(self)
        token = step_token(frozen)
        out = np.empty(len(samples), dtype=object)
        for i, sample in enumerate(samples):
            partner = sample.partner  # a paired sample's other image goes through the step too
            out[i] = sample.derive(token, _StepCall(frozen, describe_sample(sample)),
                                   partner_func=None if partner is None else _StepCall(frozen, describe_sample(partner)))
        return out

    def _apply(self, image, mask):
        new_image, new_mask = self._transform_image(image, mask)
        new_image = np.asarray(new_image)
        if new_image.dtype != np.float32 or new_image.ndim not in (2, 3):
            raise RuntimeError(
                f"{type(self).__name__} broke the image convention: returned dtype {new_image.dtype}, "
                f"shape {new_image.shape}"
            )
        if new_mask is not None and new_mask.shape != new_image.shape[:2]:
            raise RuntimeError(f"{type(self).__name__} returned a mask of shape {new_mask.shape} "
                               f"for an image of shape {new_image.shape}")
        return new_image, new_mask

    def get_feature_names_out(self, input_features=None):
        raise AttributeError(f"{type(self).__name__} outputs images, not named features")


class FeatureExtractor(ParamValidationMixin, _StatelessTagsMixin, TransformerMixin, BaseEstimator):
    """Base class of image → vector steps, with the per-sample cache.

    Subclasses implement

    * ``_extract(image, mask) -> 1-D array`` for one image (or override
      ``_extract_many(samples) -> 2-D array`` to batch, as CNNs do);
    * ``_feature_names() -> list of str`` (readable names, fixed length);
    * ``_parameter_constraints``: ``{**FeatureExtractor._parameter_constraints,
      ...}`` (scikit-learn constraints per ``__init__`` parameter), plus
      ``_validate_param_rules()`` for rules those cannot express (elements
      of sequences, relations between parameters), raising
      :func:`featurepipe._validation.invalid_parameter`;

    and declare ``cache`` (``True``: process memory; a directory: also on
    disk; ``False``: off) and ``n_jobs`` among their ``__init__`` parameters.
    ``fit`` validates the parameters; ``transform`` and
    ``get_feature_names_out`` without ``fit`` validate them once per
    parameter state (not on every call).
    Cached and uncached outputs are identical: the cache stores exactly what
    ``_extract`` returned (as float64).
    """

    _stateless = True
    _non_key_params = ("cache", "n_jobs", "batch_size", "verbose")
    _parameter_constraints: dict = {
        "cache": ["boolean", None, str, bytes, os.PathLike],
        "n_jobs": [None, StrictInterval(Integral, None, None, closed="neither")],
    }

    def _extract(self, image, mask):
        raise NotImplementedError  # abstract: every concrete extractor defines it (or _extract_many)

    def _feature_names(self):
        raise NotImplementedError  # abstract

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Validate the parameters; stateless extractors learn nothing. Returns ``self``."""
        return self

    def transform(self, X):
        """Feature matrix of shape ``(n_samples, n_features)``, float64, cached per sample."""
        samples = as_samples(X)
        self._validate_params_once()
        # The feature engine looks every sample up in the cache and computes only the misses.
        return FeatureStore(self).transform(samples).features

    def _extract_many(self, samples):
        n_jobs = getattr(self, "n_jobs", None)
        if n_jobs in (None, 1) or len(samples) < 2:
            rows = [self._extract_sample(s) for s in samples]
        else:
            rows = Parallel(n_jobs=n_jobs)(delayed(self._extract_sample)(s) for s in samples)
        return np.vstack(rows) if rows else np.empty((0, len(self._feature_names())))

    def _reads_mask(self):
        """Whether ``_extract`` looks at the mask; when not, mask files are not decoded at all.

        Default: the value of a ``use_mask`` parameter, and ``True`` for
        extractors without one (a shape descriptor reads only the mask).
        """
        return bool(getattr(self, "use_mask", True))

    def _extract_sample(self, sample):
        # Decoding a mask nobody reads costs time (and memory): ask for the image alone then.
        image, mask = sample.load() if self._reads_mask() else (sample.image, None)
        try:
            values = self._extract(image, mask)
        except (ImageReadError, ImageStepError):
            raise
        except ValueError as exc:
            raise ValueError(f"{type(self).__name__} on sample {describe_sample(sample)}: {exc}") from exc
        return np.asarray(values, dtype=np.float64).ravel()

    def get_feature_names_out(self, input_features=None):
        """Readable output feature names, e.g. ``glcm_contrast_d1_a0``."""
        self._validate_params_once()
        return np.asarray(self._feature_names(), dtype=object)


# The feature engine's two kinds of step (it cannot import this module: this module uses it).
ImageStepKind.register(ImageStep)
FeatureExtractorKind.register(FeatureExtractor)


def set_feature_cache(estimator, cache):
    """Set ``cache`` on every :class:`FeatureExtractor` inside ``estimator`` (itself included); returns it.

    ``estimator`` is any scikit-learn estimator (pipelines, feature unions,
    voting/stacking ensembles, ...); its nested parameters are walked with
    ``get_params(deep=True)``. ``cache`` is what a feature extractor's
    ``cache`` parameter takes: ``True`` (process memory), ``False`` (off) or
    a directory (verified disk entries, see :mod:`featurepipe.cache`). The
    cache never changes the features, only whether they are recomputed.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.svm import SVC
    >>> from featurepipe.features import HOGFeatures
    >>> pipe = set_feature_cache(make_pipeline(HOGFeatures(), SVC()), False)
    >>> pipe.get_params()["hogfeatures__cache"]
    False
    """
    if isinstance(estimator, FeatureExtractor):
        estimator.set_params(cache=cache)
    params = estimator.get_params(deep=True)
    updates = {key: cache for key in params
               if key.endswith("__cache") and isinstance(params[key.rpartition("__")[0]], FeatureExtractor)}
    if updates:
        estimator.set_params(**updates)
    return estimator
