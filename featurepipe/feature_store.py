"""The feature engine: a stateless prefix computed over samples once, per sample.

Most of the expensive work of a pipeline learns nothing from the training
data: decoding, image filters, a frozen CNN, GLCM. :class:`FeatureStore`
computes such a *stateless prefix* on a set of samples once, and is the one
place that does so — a feature extractor's ``transform``, the prefix-cached
grid search (:mod:`featurepipe.search`), the benchmark runner and the Dask
workers (:mod:`featurepipe.cluster`) all call it:

* **per sample, with the cache**: every feature extractor looks each sample
  up in the per-sample cache (:mod:`featurepipe.cache`, keyed by
  ``(step token, sample key)``) and computes only the misses;
* **image steps once**: the pixels of the leading image steps (filters,
  CLAHE, ROI …) are computed once per sample and shared by all the feature
  steps after them (a hybrid of CNN and handcrafted features preprocesses
  each image once, not once per family), and not at all for samples whose
  features are already cached;
* **chunks, progress, timings**: samples are processed ``chunk_size`` at a
  time (bounded memory, a progress bar), and the seconds spent on image
  steps and on feature steps are reported apart;
* **parallelism**: each feature extractor parallelises over the images of
  a chunk with its own ``n_jobs`` (joblib, under the active joblib backend);
* **per-sample errors**: with ``on_error="exclude"`` a chunk that fails is
  redone one sample at a time and the samples that still fail are returned
  with their exception (which names the file) instead of stopping the run.

Statelessness is declared once, with scikit-learn's ``requires_fit=False``
estimator tag, and read in one place: :func:`is_stateless`.

The features are those of the plain, uncached computation, bit for bit: the
cache stores exactly what the extractor returned, and precomputed pixels are
the very arrays the lazy path would compute.
"""

from __future__ import annotations

import abc
import time
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils import get_tags
from tqdm.auto import tqdm

from .cache import cached_per_sample, get_cache, step_token
from .sample import PixelSource, Sample, as_samples

__all__ = ["FeatureStore", "FeatureResult", "ImageStepKind", "FeatureExtractorKind", "is_stateless", "stack_rows"]

ON_ERROR = ("raise", "exclude")


# ----------------------------------------------------------------------------- statelessness
def is_stateless(step):
    """Whether ``step``'s output for a sample is independent of the data it was fitted on.

    This is the one definition every part of featurepipe asks (the search,
    the runner, the feature bank, the cluster). A step is stateless when

    * it declares scikit-learn's estimator tag ``requires_fit=False`` and
      can ``transform`` (featurepipe's image steps and feature extractors,
      and scikit-learn's own ``Normalizer``, ``Binarizer`` …), and is not a
      resampler (anything with ``fit_resample`` must only see training data)
      nor a ``FunctionTransformer`` (its function may combine rows, e.g.
      standardise by batch statistics, which computed on all samples at
      once would let test images shape the training features);
    * or it is ``"passthrough"`` / ``None``;
    * or it is a :class:`~sklearn.pipeline.Pipeline` or
      :class:`~sklearn.pipeline.FeatureUnion` (e.g. a
      :class:`~featurepipe.features.FeatureBank`) whose parts (other than
      ``"drop"``) are all stateless, and at least one.

    Parameters
    ----------
    step : estimator, "passthrough", "drop" or None

    Returns
    -------
    bool

    Examples
    --------
    >>> from sklearn.pipeline import FeatureUnion, make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from featurepipe.features import GLCMFeatures, HOGFeatures
    >>> from featurepipe.preprocessing import CLAHE
    >>> is_stateless(make_pipeline(CLAHE(), FeatureUnion([("glcm", GLCMFeatures()), ("hog", HOGFeatures())])))
    True
    >>> is_stateless(StandardScaler()), is_stateless("passthrough"), is_stateless("drop")
    (False, True, False)
    >>> from sklearn.preprocessing import FunctionTransformer, Normalizer
    >>> is_stateless(Normalizer()), is_stateless(FunctionTransformer(lambda X: X - X.mean(axis=0)))
    (True, False)
    """
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return True
    if isinstance(step, str):  # "drop" is handled by the union that holds it
        return False
    if hasattr(step, "fit_resample") or isinstance(step, FunctionTransformer):
        return False
    try:
        if isinstance(step, FeatureUnion):
            parts = [t for _, t in step.transformer_list if not (isinstance(t, str) and t == "drop")]
            return bool(parts) and all(is_stateless(t) for t in parts)
        if isinstance(step, Pipeline):
            return bool(step.steps) and all(is_stateless(s) for _, s in step.steps)
    except (TypeError, ValueError):  # a malformed list of parts: its own fit/transform says what is wrong
        return False
    if not hasattr(step, "transform") or not hasattr(step, "__sklearn_tags__"):
        return False
    return get_tags(step).requires_fit is False


# ----------------------------------------------------------------------------- the engine's two kinds of step
class ImageStepKind(abc.ABC):
    """Image → image steps whose ``transform`` returns lazy derived samples.

    The engine computes their pixels once per sample (timed as
    preprocessing) before the feature steps that follow them.
    :class:`featurepipe.base.ImageStep` is registered as one.
    """


class FeatureExtractorKind(abc.ABC):
    """Image → vector steps that the engine computes per sample through the cache.

    Such a step has a ``cache`` parameter (see
    :func:`featurepipe.cache.get_cache`), ``get_feature_names_out()``, and
    the protected hook ``_extract_many(samples) -> array (n_samples,
    n_features)`` that computes a batch without the cache (parallel over
    images as the step's ``n_jobs`` says). :class:`featurepipe.base.FeatureExtractor`
    is registered as one.
    """


# ----------------------------------------------------------------------------- results
class FeatureResult(NamedTuple):
    """What :meth:`FeatureStore.transform` returns (a named tuple: it also unpacks in this order).

    Attributes
    ----------
    features : ndarray, sparse matrix, object array of samples, or None
        The prefix's output for the samples of ``index``, in input order:
        ``(len(index), n_features)`` float64 for feature steps (CSR when the
        prefix returns sparse rows), derived samples when the prefix only
        has image steps; ``None`` when no sample worked.
    index : ndarray of int64
        Positions, in the input, of the rows of ``features`` (all positions
        unless some samples failed).
    errors : dict
        ``{position: exception}`` of the samples that failed
        (``on_error="exclude"``; always empty with ``"raise"``). The
        exception names the file or sample and the reason.
    preprocess_s : float or None
        Seconds spent computing the pixels of the leading image steps
        (0.0 without image steps; ``None`` where they were not timed apart,
        e.g. on Dask workers).
    features_s : float
        Seconds spent in the feature steps.
    """

    features: object
    index: np.ndarray
    errors: dict
    preprocess_s: float | None
    features_s: float


def stack_rows(parts):
    """Stack the outputs of consecutive chunks of samples into one (``None`` when there is none).

    Dense parts are concatenated into a C-ordered array, sparse ones into a
    CSR matrix; a single part that is neither (a DataFrame) is returned as is.
    """
    if not parts:
        return None
    if any(sp.issparse(p) for p in parts):
        return sp.vstack(parts).tocsr()
    if len(parts) == 1 and not isinstance(parts[0], np.ndarray):
        return parts[0]
    return np.concatenate([np.asarray(p) for p in parts], axis=0)


def _n_rows(X):
    return X.shape[0] if hasattr(X, "shape") else len(X)


def _rows(X, start, stop):
    return X.iloc[start:stop] if hasattr(X, "iloc") else X[start:stop]


# ----------------------------------------------------------------------------- the engine
class FeatureStore:
    """Compute a stateless prefix over samples once per sample: cache, chunks, timings, errors.

    Parameters
    ----------
    prefix : estimator
        Stateless steps (see :func:`is_stateless`): a feature extractor, an
        image step, a :class:`~sklearn.pipeline.Pipeline` of them (image
        steps first), or a :class:`~sklearn.pipeline.FeatureUnion` /
        :class:`~featurepipe.features.FeatureBank` of feature extractors.
        Anything but a single feature extractor is cloned and fitted on the
        first sample before use (fitting a stateless step only validates its
        parameters), so the object passed in is never changed; the fitted
        copy is :attr:`fitted_prefix`. A single feature extractor is
        computed as it is (its own ``transform`` calls this engine).
    chunk_size : int, optional
        Samples per chunk (memory, progress updates, and the unit redone
        sample by sample when a chunk fails). ``None``: all in one chunk.

    Attributes
    ----------
    fitted_prefix : estimator or None
        The prefix that computed the last :meth:`transform` (``None`` before).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from featurepipe.features import FirstOrderFeatures
    >>> from featurepipe.preprocessing import GaussianFilter
    >>> images = [np.random.default_rng(i).random((16, 16)).astype(np.float32) for i in range(5)]
    >>> store = FeatureStore(make_pipeline(GaussianFilter(sigma=1.0), FirstOrderFeatures()), chunk_size=2)
    >>> Z, index, errors, preprocess_s, features_s = store.transform(images)
    >>> Z.shape, index.tolist(), errors
    ((5, 27), [0, 1, 2, 3, 4], {})
    >>> reference = make_pipeline(GaussianFilter(sigma=1.0), FirstOrderFeatures(cache=False)).transform(images)
    >>> bool(np.array_equal(Z, reference))  # the same computation, chunked and cached
    True
    """

    def __init__(self, prefix, *, chunk_size=None):
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
                                       or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive number of samples or None; got {chunk_size!r}")
        self.prefix = prefix
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.fitted_prefix = None

    # -- public --------------------------------------------------------------------------
    def transform(self, X, *, on_error="raise", progress=False, desc=None):
        """The prefix's output on every sample of ``X``, chunk by chunk.

        Parameters
        ----------
        X : sequence of samples (or of paths or images), or what the prefix's first step takes
            A list, tuple or 1-D object array is processed as it is; another
            collection (e.g. a :class:`~featurepipe.dataset.Dataset`) is
            converted with :func:`~featurepipe.sample.as_samples` first.
        on_error : {"raise", "exclude"}, default="raise"
            ``"raise"`` stops at the first sample that fails. ``"exclude"``
            redoes a failing chunk sample by sample and returns the samples
            that still fail in ``errors``, without a row in ``features``.
        progress : bool, default=False
            Show a progress bar (one update per chunk).
        desc : str, optional
            The progress bar's label.

        Returns
        -------
        FeatureResult
            ``(features, index, errors, preprocess_s, features_s)``.
        """
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {list(ON_ERROR)}; got {on_error!r}")
        if not (isinstance(X, (list, tuple, np.ndarray)) or sp.issparse(X) or hasattr(X, "iloc")):
            X = as_samples(X)
        n = _n_rows(X)
        image_part, rest, run_rest = self._prepare(X)
        times = {"preprocess": 0.0, "features": 0.0}

        def run(chunk):
            t0 = time.perf_counter()
            data = chunk
            if image_part is not None:
                data = image_part.transform(chunk)
                if rest is not None:
                    data = self._precomputed(data, rest)
            t1 = time.perf_counter()
            out = run_rest(data) if rest is not None else data
            t2 = time.perf_counter()
            times["preprocess"] += t1 - t0 if image_part is not None else 0.0
            times["features"] += t2 - t1
            return out

        parts, index, errors = [], [], {}
        if n == 0:
            parts.append(run(X))
        step = n if self.chunk_size is None else self.chunk_size
        with tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False) as bar:
            for start in range(0, n, max(step, 1)):
                chunk = _rows(X, start, start + step)
                stop = start + _n_rows(chunk)
                try:
                    parts.append(run(chunk))
                    index.extend(range(start, stop))
                except Exception:
                    if on_error == "raise":
                        raise
                    for k in range(start, stop):
                        try:
                            parts.append(run(_rows(X, k, k + 1)))
                            index.append(k)
                        except Exception as exc:  # this sample only: reported, left out of the rows
                            errors[k] = exc
                bar.update(stop - start)
        return FeatureResult(stack_rows(parts), np.asarray(index, dtype=np.int64), errors, times["preprocess"],
                             times["features"])

    # -- the prefix, split into leading image steps and the feature steps ------------------
    def _prepare(self, X):
        """``(image_part, rest, run_rest)``: leading image steps, what follows them, and how to run it."""
        prefix = self.prefix
        if isinstance(prefix, FeatureExtractorKind):
            self.fitted_prefix = prefix
            return None, prefix, lambda samples: self._extract(prefix, samples)
        prefix = clone(prefix)
        prefix.fit(_rows(X, 0, 1))  # stateless: fit only validates the parameters
        self.fitted_prefix = prefix
        if isinstance(prefix, ImageStepKind):
            return prefix, None, None
        if not isinstance(prefix, Pipeline):
            return None, prefix, prefix.transform
        steps = list(prefix.steps)
        n_image = 0
        while n_image < len(steps) and isinstance(steps[n_image][1], ImageStepKind):
            n_image += 1
        image_part = Pipeline(steps[:n_image]) if n_image else None
        rest = Pipeline(steps[n_image:]) if n_image < len(steps) else None
        return image_part, rest, None if rest is None else rest.transform

    def _precomputed(self, derived, rest):
        """``derived`` samples with their pixels computed now (same keys), except those ``rest`` has cached.

        Computing the image steps here times them apart from the features and
        lets every feature step after them share one computation per sample.
        """
        cached = _cached_keys(rest, [d.key for d in derived])
        out = np.empty(len(derived), dtype=object)
        for i, d in enumerate(derived):
            if d.key in cached:
                out[i] = d  # its features come from the cache: its pixels are never needed
            else:
                image, mask = d.load()
                out[i] = Sample(d.key, PixelSource(image, mask, d.path or "<array>"), label=d.label, group=d.group,
                                meta=d.meta, partner=d.partner)
        return out

    # -- one feature extractor, per sample through the cache ----------------------------------
    @staticmethod
    def _extract(extractor, X):
        """Feature matrix ``(n_samples, n_features)`` float64 of one extractor: cache hits, misses computed once."""
        samples = as_samples(X)
        n_features = len(extractor.get_feature_names_out())
        cache = get_cache(getattr(extractor, "cache", True))
        token = step_token(extractor) if cache is not None else None

        def compute(missing):
            computed = np.asarray(extractor._extract_many(missing), dtype=np.float64)
            if computed.shape != (len(missing), n_features):
                raise RuntimeError(
                    f"{type(extractor).__name__} produced features of shape {computed.shape}; "
                    f"expected {(len(missing), n_features)}"
                )
            return computed

        found = cached_per_sample(cache, token, samples, compute, expected_shape=(n_features,), dtype=np.float64)
        out = np.empty((len(samples), n_features), dtype=np.float64)
        for i, sample in enumerate(samples):
            out[i] = found[sample.key]
        return out


def _cached_keys(step, keys):
    """Keys of ``keys`` whose output the feature step ``step`` already has cached (else empty).

    A pipeline asks its first step; a union the keys all its members have.
    """
    if isinstance(step, Pipeline):
        return _cached_keys(step.steps[0][1], keys) if step.steps else set()
    if isinstance(step, FeatureUnion):
        members = [t for _, t in step.transformer_list if not (isinstance(t, str) and t == "drop")]
        if not members:
            return set()
        found = _cached_keys(members[0], keys)
        for member in members[1:]:
            if not found:
                break
            found &= _cached_keys(member, list(found))
        return found
    if not isinstance(step, FeatureExtractorKind):
        return set()
    cache = get_cache(getattr(step, "cache", True))
    if cache is None:
        return set()
    return set(cache.get_many(step_token(step), keys))
