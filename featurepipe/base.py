"""The two kinds of pipeline step and the cache token that identifies them.

* :class:`ImageStep` — image → image (filters, CLAHE, ROI, resize …).
  ``transform`` returns *lazy* derived samples: no pixel is touched until a
  feature extractor needs it, and then only on a cache miss.
* :class:`FeatureExtractor` — image → vector. ``transform`` looks each
  sample up in the per-sample cache and computes only the misses (in
  parallel over images with joblib when ``n_jobs`` is set).

Both follow imbalanced-learn's template-method style: the public method
validates and orchestrates, and subclasses implement one protected
per-image method (``_transform_image`` / ``_extract``). Parameters are
validated the scikit-learn way (``_parameter_constraints``, see
:class:`featurepipe._validation.ParamValidationMixin`): in ``fit``, or once
per parameter state when a stateless step is used without ``fit``. Steps
declare ``_stateless = True`` when their
output for a sample does not depend on the data seen in ``fit``; the
benchmark runner computes the stateless prefix of a pipeline once per
dataset.
"""

from __future__ import annotations

import os
from numbers import Integral
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone

from ._validation import ParamValidationMixin, StrictInterval
from ._version import __version__
from .cache import cached_per_sample, get_cache
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


def _canonical(value, where):
    """A stable text form of a parameter value (same value -> same text across processes)."""
    if isinstance(value, BaseEstimator):
        return step_token(value, include_version=False)
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, np.generic):
        return _canonical(value.item(), where)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_canonical(v, where) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted((repr(k), _canonical(v, where)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if isinstance(value, np.ndarray):
        from .sample import _array_digest

        return f"array({_array_digest(value)})"
    if isinstance(value, os.PathLike):
        return repr(os.fspath(value))
    if callable(value):
        qualname = getattr(value, "__qualname__", "")
        if not qualname or "<lambda>" in qualname or "<locals>" in qualname:
            raise ValueError(
                f"{where}: cannot build a cache key from the callable {value!r}; use a module-level "
                "function (lambdas and local functions have no stable name)"
            )
        return f"{getattr(value, '__module__', '?')}.{qualname}"
    raise TypeError(f"{where}: cannot build a cache key from a parameter of type {type(value).__name__}")


def step_token(step, include_version=True):
    """Text that identifies what ``step`` computes: class, output-relevant params, version.

    Parameters listed in the class attribute ``_non_key_params`` (cache,
    n_jobs, batch size …) are left out because they cannot change the output.
    """
    cls = type(step)
    skip = set(getattr(step, "_non_key_params", ()))
    params = step.get_params(deep=False)
    parts = [
        f"{name}={_canonical(value, f'{cls.__name__}.{name}')}"
        for name, value in sorted(params.items())
        if name not in skip
    ]
    extra = step._cache_token_extra() if hasattr(step, "_cache_token_extra") else ""
    token = f"{cls.__module__}.{cls.__qualname__}({','.join(parts)}){extra}"
    if include_version:
        token += f"@featurepipe-{__version__}"
    return token


def is_stateless(step):
    """Whether ``step``'s output for a sample is independent of the data it was fitted on."""
    return bool(getattr(step, "_stateless", False))


def _file_token(path):
    """Identify a file (e.g. weights) by path, size and modification time."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return f"file({os.fspath(path)!r},missing)"
    return f"file({os.fspath(path)!r},{stat.st_size},{stat.st_mtime_ns})"


class _StatelessTagsMixin:
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        if getattr(self, "_stateless", False):
            tags.requires_fit = False
        tags.input_tags.two_d_array = False
        return tags

    def __sklearn_is_fitted__(self):
        return bool(getattr(self, "_stateless", False)) or getattr(self, "_is_fitted", False)


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
            out[i] = sample.derive(token, _StepCall(frozen, describe_sample(sample)))
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
        n_features = len(self._feature_names())
        cache = get_cache(getattr(self, "cache", True))
        token = step_token(self) if cache is not None else None

        def compute(missing):
            computed = np.asarray(self._extract_many(missing), dtype=np.float64)
            if computed.shape != (len(missing), n_features):
                raise RuntimeError(
                    f"{type(self).__name__} produced features of shape {computed.shape}; "
                    f"expected {(len(missing), n_features)}"
                )
            return computed

        found = cached_per_sample(cache, token, samples, compute, expected_shape=(n_features,), dtype=np.float64)
        out = np.empty((len(samples), n_features), dtype=np.float64)
        for i, sample in enumerate(samples):
            out[i] = found[sample.key]
        return out

    def _extract_many(self, samples):
        n_jobs = getattr(self, "n_jobs", None)
        if n_jobs in (None, 1) or len(samples) < 2:
            rows = [self._extract_sample(s) for s in samples]
        else:
            rows = Parallel(n_jobs=n_jobs)(delayed(self._extract_sample)(s) for s in samples)
        return np.vstack(rows) if rows else np.empty((0, len(self._feature_names())))

    def _extract_sample(self, sample):
        image, mask = sample.load()
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
