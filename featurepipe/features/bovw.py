"""Bag of visual words: dense local descriptors, a k-means codebook, a word histogram per image.

The one *stateful* handcrafted extractor: the codebook is learned in
``fit`` from the training images' descriptors, so a sample's histogram
depends on the training fold. What does not depend on it — the dense
descriptors of each image — is computed once per sample and kept in the
per-sample cache (:mod:`featurepipe.cache`), so refitting the codebook on
another fold, or for another ``n_words``, recomputes nothing but k-means
and the word assignment.

Descriptors (OpenCV)
--------------------
The image is converted to gray (ITU-R BT.601 luma for colour images) and to
8 bits (``round(255 x)``; 16-bit precision is lost). Keypoints lie on a
regular grid: centres at ``margin + k * grid_step`` along each axis, with
``margin = patch_size`` for ORB (OpenCV drops ORB keypoints closer than its
``edgeThreshold = patch_size`` to the border) and ``margin = patch_size // 2``
for SIFT. Every keypoint has angle 0, so the descriptors are upright (not
rotation invariant), as usual for dense bag-of-words, and each describes a
``patch_size`` × ``patch_size`` square around its centre.

* ``"orb"`` (default): ``cv2.ORB_create(patchSize=patch_size,
  edgeThreshold=patch_size).compute``; 256-bit binary descriptors, unpacked
  to 0/1 vectors for k-means (Euclidean distance between them is the square
  root of the Hamming distance). About 1 ms per 224×224 image.
* ``"sift"``: ``cv2.SIFT_create().compute``; 128-D float descriptors. The
  keypoint size is ``patch_size / 6``: OpenCV's SIFT descriptor spans
  4 × 4 cells of 3σ with σ = size / 2, i.e. 6 × size pixels, so this makes
  it cover the patch (as dense SIFT with a bin size of ``patch_size / 4``).
  A keypoint of size ``patch_size`` would sample a window 6 times wider and
  cost ~30 times more. About 3 ms per 224×224 image.

With ``roi="mask"`` only keypoints whose centre pixel lies inside the mask
are used; their patches are not masked, so a keypoint near the mask's edge
also sees pixels just outside it (up to ``patch_size / 2`` plus a few pixels
of OpenCV's smoothing; a test measures it). Images of different sizes give different numbers of descriptors;
histograms are normalised, but resize images first (a preprocessing step)
if the patch should cover the same anatomy.

Resolution: ``max_side`` (default ``None``: native) caps the working
resolution; a larger image (and its mask) is shrunk with area interpolation
so its longer side is ``max_side`` pixels, never enlarged (see
:func:`featurepipe.preprocessing.cap_resolution`). ``grid_step`` and
``patch_size`` are pixels of that grid, so the number of descriptors, and the
cost, stop growing with the image past ``max_side``.

Codebook and histogram
----------------------
``fit`` clusters (at most ``max_descriptors``, sampled uniformly with
``random_state``) training descriptors into ``n_words`` words with
:class:`sklearn.cluster.MiniBatchKMeans` (``random_state`` passed on);
``transform`` assigns every descriptor of an image to its nearest word and
returns the word counts divided by the number of descriptors (each row sums
to 1).
"""

from __future__ import annotations

import numbers

import cv2
import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, _fit_context
from sklearn.cluster import MiniBatchKMeans
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted, check_random_state
from threadpoolctl import threadpool_limits

from .._validation import StrictInterval, check_choice, invalid_parameter, invalid_value_message, is_int
from ..base import FeatureExtractor, describe_sample, step_token
from ..cache import cached_per_sample, get_cache
from ..io import ImageReadError, convert_channels, to_float_image
from ..sample import as_samples
from ..preprocessing import cap_resolution
from .firstorder import MAX_SIDE_CONSTRAINT

__all__ = ["BagOfVisualWords", "dense_descriptors", "dense_keypoints"]

_DESCRIPTORS = ("orb", "sift")
_ROI_CHOICES = ("image", "mask")
_EMPTY_MASK_CHOICES = ("error", "nan", "image")
_DIMENSIONS = {"orb": 256, "sift": 128}  # after unpacking ORB's 32 bytes to bits


def _validate_descriptor_options(descriptor, grid_step, patch_size, roi, empty_mask, max_side=None):
    """The option checks of the descriptor functions (functions, so not ``_parameter_constraints``)."""
    check_choice("descriptor", descriptor, _DESCRIPTORS)
    if max_side is not None and (not is_int(max_side) or max_side < 1):
        raise ValueError(invalid_value_message("max_side", max_side, "None or an int >= 1 (pixels)"))
    if not is_int(grid_step) or grid_step < 1:
        raise ValueError(invalid_value_message("grid_step", grid_step, "an int >= 1 (pixels between keypoint centres)"))
    if not is_int(patch_size) or patch_size < 8:
        raise ValueError(invalid_value_message("patch_size", patch_size, "an int >= 8 (pixels)"))
    check_choice("roi", roi, _ROI_CHOICES)
    check_choice("empty_mask", empty_mask, _EMPTY_MASK_CHOICES)


def _margin(descriptor, patch_size):
    return patch_size if descriptor == "orb" else patch_size // 2


def dense_keypoints(shape, descriptor="orb", grid_step=8, patch_size=16, mask=None):
    """Grid keypoint centres ``(x, y)`` (column, row) used by :func:`dense_descriptors`.

    Parameters
    ----------
    shape : (int, int)
        Image ``(height, width)``.
    descriptor, grid_step, patch_size
        As in :func:`dense_descriptors` (they set the grid's margin and step).
    mask : ndarray of bool, shape (H, W), optional
        Keep only centres whose pixel is ``True``.

    Returns
    -------
    xy : ndarray of float32, shape (n_keypoints, 2)
        Row-major order (top row first, left to right).
    """
    height, width = shape
    margin = _margin(descriptor, patch_size)
    ys = np.arange(margin, height - margin, grid_step)
    xs = np.arange(margin, width - margin, grid_step)
    if ys.size == 0 or xs.size == 0:
        raise ValueError(
            f"the image ({width}x{height} pixels, W x H) is too small for {descriptor} patches of "
            f"patch_size={patch_size}: each side must exceed {2 * margin} pixels; lower patch_size or "
            "resize the images"
        )
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    if mask is not None:
        keep = mask[yy, xx]
        yy, xx = yy[keep], xx[keep]
    return np.column_stack([xx.ravel(), yy.ravel()]).astype(np.float32)


def _float_gray(image):
    return convert_channels(to_float_image(image, name="image"), "gray")


def _to_uint8(gray):
    return np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)


def dense_descriptors(image, mask=None, *, descriptor="orb", grid_step=8, patch_size=16, roi="image",
                      empty_mask="error", max_side=None):
    """Local descriptors on a dense grid of keypoints (stateless; see the module docstring).

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3)
        Float image in [0, 1] (uint8/uint16 converted); colour → BT.601 gray.
    mask : ndarray of bool, shape (H, W), optional
        Used with ``roi="mask"``: keypoints whose centre is inside.
    descriptor : {"orb", "sift"}, default="orb"
    grid_step : int, default=8
        Pixels between neighbouring keypoint centres.
    patch_size : int, default=16
        Side of the square each descriptor describes, in pixels (≥ 8).
    roi : {"image", "mask"}, default="image"
    empty_mask : {"error", "nan", "image"}, default="error"
        With ``roi="mask"``: a missing or empty mask, or one containing no
        grid point, raises ``ValueError``; with ``"nan"`` it gives zero
        descriptors (then :class:`BagOfVisualWords` returns a NaN histogram);
        with ``"image"`` every grid keypoint of the image is used.
    max_side : int, optional
        Working resolution: longest side in pixels (a larger image and its
        mask are shrunk, never enlarged); ``None`` (default): native.

    Returns
    -------
    descriptors : ndarray, shape (n_keypoints, 32) uint8 for ORB, (n_keypoints, 128) float32 for SIFT
        ORB's packed 256-bit strings, as OpenCV returns them.
    """
    _validate_descriptor_options(descriptor, grid_step, patch_size, roi, empty_mask, max_side)
    gray, mask = cap_resolution(_float_gray(image), mask if roi == "mask" else None, max_side)
    gray = _to_uint8(gray)
    width = 32 if descriptor == "orb" else 128
    empty = np.empty((0, width), dtype=np.uint8 if descriptor == "orb" else np.float32)
    use_mask = None
    if roi == "mask":
        problem = None
        if mask is None:
            problem = "the image has no mask"
        else:
            use_mask = np.asarray(mask, dtype=bool)
            if use_mask.shape != gray.shape:
                raise ValueError(f"mask has shape {use_mask.shape} but the image is {gray.shape} (H, W)")
            if not use_mask.any():
                problem = "the mask is empty (no True pixel)"
        if problem is None:
            xy = dense_keypoints(gray.shape, descriptor, grid_step, patch_size, use_mask)
            if len(xy) == 0:
                problem = (f"no keypoint of the grid (grid_step={grid_step}, margin "
                           f"{_margin(descriptor, patch_size)} px) falls inside the mask")
        if problem is not None:
            if empty_mask == "nan":
                return empty
            if empty_mask == "error":
                raise ValueError(
                    f"roi='mask' needs keypoints inside a mask but {problem}; lower grid_step, use roi='image', "
                    "or set empty_mask='nan' (NaN histograms) or empty_mask='image' (all grid keypoints) for "
                    "such images"
                )
            xy = dense_keypoints(gray.shape, descriptor, grid_step, patch_size)
    else:
        xy = dense_keypoints(gray.shape, descriptor, grid_step, patch_size)
    size = float(patch_size) if descriptor == "orb" else patch_size / 6.0
    keypoints = [cv2.KeyPoint(float(x), float(y), size, 0.0) for x, y in xy]
    if descriptor == "orb":
        extractor = cv2.ORB_create(edgeThreshold=patch_size, patchSize=patch_size)
    else:
        extractor = cv2.SIFT_create()
    kept, values = extractor.compute(gray, keypoints)
    if values is None or len(kept) != len(keypoints):
        # The grid margin is chosen so that OpenCV keeps every keypoint; anything else is a bug.
        raise RuntimeError(f"OpenCV {descriptor} kept {len(kept)} of {len(keypoints)} grid keypoints")
    return values


class _DenseDescriptorStep(BaseEstimator):
    """The stateless part of :class:`BagOfVisualWords`: its params make the descriptors' cache token."""

    def __init__(self, descriptor="orb", grid_step=8, patch_size=16, roi="image", empty_mask="error",
                 max_side=None):
        self.descriptor = descriptor
        self.grid_step = grid_step
        self.patch_size = patch_size
        self.roi = roi
        self.empty_mask = empty_mask
        self.max_side = max_side

    def compute(self, sample):
        image, mask = sample.load()
        try:
            return dense_descriptors(image, mask, **self.get_params())
        except ImageReadError:
            raise
        except ValueError as exc:
            raise ValueError(f"BagOfVisualWords on sample {describe_sample(sample)}: {exc}") from exc


def _as_vectors(descriptors, descriptor):
    """Descriptors as float32 vectors for k-means (ORB bits unpacked to 0/1)."""
    if descriptor == "orb":
        return np.unpackbits(descriptors, axis=1).astype(np.float32)
    return np.asarray(descriptors, dtype=np.float32)


class BagOfVisualWords(FeatureExtractor):
    """Bag of visual words over dense ORB/SIFT descriptors (stateful: the codebook is fitted).

    See the module docstring for the descriptors, the codebook and the
    histogram.

    Parameters
    ----------
    n_words : int, default=64
        Codebook size (number of k-means clusters) = number of output features.
    descriptor : {"orb", "sift"}, default="orb"
    grid_step : int, default=8
        Pixels between keypoint centres.
    patch_size : int, default=16
        Side of the square each descriptor describes (pixels, ≥ 8).
    roi : {"image", "mask"}, default="image"
        All grid keypoints, or only those whose centre is inside the mask.
    empty_mask : {"error", "nan", "image"}, default="error"
        With ``roi="mask"``: images without keypoints inside their mask raise,
        get a NaN histogram (and give the codebook nothing), or use all the
        image's grid keypoints.
    max_side : int, optional
        Working resolution: longest side in pixels (larger images are shrunk
        with area interpolation, never enlarged); ``None``: native.
    max_descriptors : int or None, default=50000
        At most this many training descriptors (sampled uniformly) are
        clustered in ``fit``; ``None`` uses all.
    random_state : int, RandomState or None, default=None
        Seeds the subsampling and :class:`~sklearn.cluster.MiniBatchKMeans`.
    cache : bool or path, default=True
        Per-sample cache of the *descriptors* (never of the histograms).
    n_jobs : int, optional
        Images whose descriptors are computed in parallel (joblib).

    Attributes
    ----------
    kmeans_ : MiniBatchKMeans
        The fitted codebook (``kmeans_.cluster_centers_``: one word per row).
    n_descriptors_fit_ : int
        Number of descriptors the codebook was fitted on.

    Examples
    --------
    >>> import numpy as np
    >>> from featurepipe.features import BagOfVisualWords
    >>> X = [np.random.default_rng(i).random((64, 64), dtype=np.float32) for i in range(4)]
    >>> bovw = BagOfVisualWords(n_words=8, random_state=0).fit(X)
    >>> H = bovw.transform(X)
    >>> H.shape, bool(np.allclose(H.sum(axis=1), 1.0))
    ((4, 8), True)
    """

    _stateless = False

    def __init__(self, n_words=64, descriptor="orb", grid_step=8, patch_size=16, roi="image",
                 empty_mask="error", max_side=None, max_descriptors=50000, random_state=None, cache=True,
                 n_jobs=None):
        self.n_words = n_words
        self.descriptor = descriptor
        self.grid_step = grid_step
        self.patch_size = patch_size
        self.roi = roi
        self.empty_mask = empty_mask
        self.max_side = max_side
        self.max_descriptors = max_descriptors
        self.random_state = random_state
        self.cache = cache
        self.n_jobs = n_jobs

    # -- parameters ---------------------------------------------------------------------
    _parameter_constraints = {
        **FeatureExtractor._parameter_constraints,
        "n_words": [StrictInterval(numbers.Integral, 2, None, closed="left")],
        "descriptor": [StrOptions(set(_DESCRIPTORS))],
        "grid_step": [StrictInterval(numbers.Integral, 1, None, closed="left")],
        "patch_size": [StrictInterval(numbers.Integral, 8, None, closed="left")],
        "roi": [StrOptions(set(_ROI_CHOICES))],
        "empty_mask": [StrOptions(set(_EMPTY_MASK_CHOICES))],
        "max_side": MAX_SIDE_CONSTRAINT,
        "max_descriptors": [StrictInterval(numbers.Integral, 2, None, closed="left"), None],
        "random_state": ["random_state"],
    }

    def _validate_param_rules(self):
        if self.max_descriptors is not None and self.max_descriptors < self.n_words:
            raise invalid_parameter(self, "max_descriptors", f"an int >= {self.n_words} (at least n_words) or None")

    def _feature_names(self):
        digits = max(3, len(str(self.n_words - 1)))
        return [f"bovw_{self.descriptor}_{i:0{digits}d}" for i in range(self.n_words)]

    def _descriptor_step(self):
        return _DenseDescriptorStep(self.descriptor, self.grid_step, self.patch_size, self.roi, self.empty_mask,
                                    self.max_side)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "kmeans_")

    # -- descriptors (stateless, cached per sample) -------------------------------------------
    def _descriptors(self, samples):
        """Descriptor arrays of ``samples`` (list, aligned), from the cache where possible."""
        step = self._descriptor_step()
        cache = get_cache(self.cache)
        token = step_token(step) if cache is not None else None

        def compute(missing):
            if self.n_jobs in (None, 1) or len(missing) < 2:
                return [step.compute(s) for s in missing]
            return Parallel(n_jobs=self.n_jobs)(delayed(step.compute)(s) for s in missing)

        found = cached_per_sample(cache, token, samples, compute)
        return [found[s.key] for s in samples]

    # -- codebook --------------------------------------------------------------------------------
    def _fit_codebook(self, descriptors):
        rng = check_random_state(self.random_state)
        n_total = sum(len(d) for d in descriptors)
        if n_total < self.n_words:
            raise ValueError(
                f"n_words={self.n_words} but the training images gave only {n_total} descriptors; lower "
                "n_words or grid_step, or fit on more images"
            )
        stacked = np.concatenate([d for d in descriptors if len(d)], axis=0)
        if self.max_descriptors is not None and n_total > self.max_descriptors:
            stacked = stacked[np.sort(rng.choice(n_total, self.max_descriptors, replace=False))]
        kmeans = MiniBatchKMeans(n_clusters=self.n_words, random_state=rng)
        # One thread: mini-batch steps are small, and MiniBatchKMeans' OpenMP threads
        # collapse when the cores are shared (CV jobs, other processes) - measured 0.08 s
        # with one thread vs 2.5 s with two on a loaded 2-core machine (256 descriptors).
        with threadpool_limits(limits=1):
            kmeans.fit(_as_vectors(stacked, self.descriptor))
        self.kmeans_ = kmeans
        self.n_descriptors_fit_ = len(stacked)
        # What the codebook was learned from; transform refuses descriptors made differently.
        self._fit_signature = (step_token(self._descriptor_step()), self.n_words)

    def _histograms(self, descriptors):
        out = np.empty((len(descriptors), self.n_words), dtype=np.float64)
        for i, d in enumerate(descriptors):
            if len(d) == 0:  # only reachable with empty_mask="nan" (the descriptor step raises otherwise)
                out[i] = np.nan
                continue
            words = self.kmeans_.predict(_as_vectors(d, self.descriptor))
            out[i] = np.bincount(words, minlength=self.n_words) / len(words)
        return out

    # -- public API ------------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the codebook from the dense descriptors of ``X``. Returns ``self``."""
        self._fit_codebook(self._descriptors(list(as_samples(X))))
        return self

    def transform(self, X):
        """Normalised word histograms, shape ``(n_samples, n_words)``, rows sum to 1 (NaN rows: see ``empty_mask``).

        Unlike :meth:`FeatureExtractor.transform`, the *histograms* are never
        cached: the base class keys its cache by the extractor's parameters
        only, and two codebooks fitted with the same parameters on different
        folds give different histograms for the same sample. Only the
        descriptors (a function of the sample and the descriptor parameters)
        are cached.
        """
        check_is_fitted(self)
        self._validate_params_once()
        if self._fit_signature != (step_token(self._descriptor_step()), self.n_words):
            raise NotFittedError(
                "BagOfVisualWords parameters (n_words or descriptor settings) changed since fit; "
                "call fit again"
            )
        return self._histograms(self._descriptors(list(as_samples(X))))

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None, **fit_params):
        """``fit(X).transform(X)``, computing the descriptors of ``X`` once even without a cache."""
        descriptors = self._descriptors(list(as_samples(X)))
        self._fit_codebook(descriptors)
        return self._histograms(descriptors)
