"""First-order (intensity histogram) statistics inside an optional mask.

Functional core :func:`first_order_features` and the estimator
:class:`FirstOrderFeatures`. This module also holds the small helpers that
every handcrafted family of this package shares (colour policy, mask and
empty-region policy, intensity range, parameter checks), so that the
families behave the same way.

Shared conventions of the handcrafted extractors
------------------------------------------------
* **Colour**: a colour image ``(H, W, 3)`` is converted to gray with the
  ITU-R BT.601 luma weights (0.299, 0.587, 0.114), exactly as
  ``featurepipe.io.read_image(path, mode="gray")`` does; grayscale images are
  used as they are.
* **Mask**: with ``use_mask=True`` (default) and a sample mask, only the
  pixels inside the mask are described (each family documents exactly which
  pixels or pixel pairs count). ``use_mask=False`` ignores the mask.
* **Empty region** (an empty mask, or a region that leaves nothing to
  compute on): ``empty_mask="error"`` (default) raises ``ValueError``;
  ``"nan"`` returns a vector of NaN (impute or drop them yourself);
  ``"image"`` describes the whole image instead. Never a silent zero.
* **Intensity range**: histogram-based features quantise intensities over a
  fixed ``intensity_range=(lo, hi)`` (default ``(0, 1)``, the featurepipe
  image convention) so that bins mean the same thing in every image, or over
  the region's own ``[min, max]`` with ``intensity_range="region"``.
* **Working resolution** (``max_side``): the families that otherwise run at
  the image's native resolution (first-order, GLCM, LBP, bag of visual
  words) take ``max_side`` (pixels, or ``None`` = native, the class
  default): the gray image is shrunk with area interpolation (OpenCV
  ``INTER_AREA``, aspect ratio kept) so that its longer side is at most
  ``max_side``, and the mask with pixel-centre nearest neighbour (it stays
  binary); an image already that small is used as it is, never enlarged
  (:func:`featurepipe.preprocessing.cap_resolution`). Pixel distances (GLCM ``distances``, LBP radii,
  BoVW grid and patches) then count pixels of that grid. HOG and curvelet
  features always resize to their fixed ``size``; shape features always run
  on the mask at its native resolution (their areas and perimeters are in
  native pixels).

First-order statistics, resolution policy: ``max_side`` (class default
``None``: native; family default in
:data:`featurepipe.features.bank.FAMILIES`: 512 px). Their cost grows with
the number of pixels (the percentiles sort them); at a capped ``max_side``
the intensities are those
of the area-averaged image, which narrows the tails of the histogram
(``min``, ``max``, outer percentiles) slightly and leaves the mean unchanged
up to rounding.
"""

from __future__ import annotations

import functools
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import StrOptions

from .._validation import StrictInterval, invalid_parameter
from ..base import FeatureExtractor
from ..io import to_gray  # re-exported: glcm, lbp and hog take it from here
from ..preprocessing import cap_resolution

__all__ = ["first_order_features", "first_order_feature_names", "FirstOrderFeatures", "to_gray"]

EMPTY_MASK_POLICIES = ("error", "nan", "image")
# Values at most this far outside a fixed intensity range are clipped (float rounding in
# earlier steps, e.g. a filter returning 1.0000001); anything further is an error.
_RANGE_TOLERANCE = 1e-5


# ----------------------------------------------------------------------------------------------
# helpers shared by the handcrafted families (firstorder, glcm, lbp, hog)
# ----------------------------------------------------------------------------------------------
def _check_mask_shape(mask, shape):
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask has shape {mask.shape} but the image is {tuple(shape)} (H, W); they must match")
    return mask.astype(bool, copy=False)


#: ``max_side``: the working resolution's longest side in pixels, or None for the native resolution.
MAX_SIDE_CONSTRAINT = [None, StrictInterval(Integral, 1, None, closed="left")]


class EmptyRegion(Exception):
    """Internal signal: the region has nothing to compute on and the policy is ``"nan"``."""


def resolve_region(shape, mask, empty_mask, what="the mask"):
    """Apply the empty-region policy to a mask.

    Returns the bool mask to use, or ``None`` for "the whole image" (no mask
    given, or an empty mask under ``empty_mask="image"``). Raises
    ``ValueError`` under ``"error"`` and :class:`EmptyRegion` under ``"nan"``.
    """
    if mask is None:
        return None
    mask = _check_mask_shape(mask, shape)
    if mask.any():
        return mask
    return empty_region(empty_mask, f"{what} is empty (no pixel inside)")


def empty_region(empty_mask, reason):
    """Act on an empty region: raise, signal NaN, or return ``None`` (use the whole image)."""
    if empty_mask == "nan":
        raise EmptyRegion(reason)
    if empty_mask == "image":
        return None
    raise ValueError(
        f"{reason}; set empty_mask='nan' to get NaN features or empty_mask='image' to describe "
        "the whole image instead"
    )


def intensity_bounds(values, intensity_range):
    """``(lo, hi)`` of the quantisation range; checks that ``values`` lie inside a fixed range.

    ``values`` are the intensities that will be quantised (the region's
    pixels). Values less than 1e-5 outside a fixed range are accepted (and
    clipped by the callers); others raise ``ValueError``.
    """
    if isinstance(intensity_range, str):  # "region" (the estimators validate intensity_range)
        lo = float(values.min())
        hi = float(values.max())
        return lo, hi
    lo, hi = float(intensity_range[0]), float(intensity_range[1])
    vmin = float(values.min())
    vmax = float(values.max())
    if vmin < lo - _RANGE_TOLERANCE or vmax > hi + _RANGE_TOLERANCE:
        raise ValueError(
            f"intensities in [{vmin:g}, {vmax:g}] fall outside intensity_range=({lo:g}, {hi:g}); "
            "featurepipe images are in [0, 1] — pass intensity_range='region' (quantise each "
            "region between its own min and max) or the range your images use"
        )
    return lo, hi


def quantize(values, levels, lo, hi):
    """Integer levels ``floor((v - lo) / (hi - lo) * levels)`` clipped to ``[0, levels - 1]``.

    With ``(lo, hi) = (0, 1)`` and ``levels = 256`` an 8-bit image read by
    featurepipe (``v / 255``) gets back exactly its original uint8 values;
    with ``levels = 2**k`` it gets ``uint8_value >> (8 - k)``. A constant
    region (``hi == lo``) gets level 0 everywhere.

    Returns
    -------
    q : ndarray of uint8 (levels ≤ 256) or uint16, same shape as ``values``
    """
    values = np.asarray(values)
    dtype = np.uint8 if levels <= 256 else np.uint16
    if hi <= lo:
        return np.zeros(values.shape, dtype=dtype)
    if lo == 0.0 and hi == 1.0:
        scaled = values * np.float64(levels)  # no subtraction/division: keeps v/255*256 exact
    else:
        scaled = (values.astype(np.float64) - lo) * (levels / (hi - lo))
    q = np.floor(scaled, out=scaled if scaled.dtype == np.float64 else None)
    np.clip(q, 0, levels - 1, out=q)
    return q.astype(dtype)


#: ``_parameter_constraints`` shared by the region-aware handcrafted extractors (firstorder, glcm, lbp, hog).
REGION_CONSTRAINTS = {
    **FeatureExtractor._parameter_constraints,
    "use_mask": ["boolean"],
    "empty_mask": [StrOptions(set(EMPTY_MASK_POLICIES))],
}
#: ``intensity_range``: "region" or a (low, high) pair (checked by :func:`validate_intensity_range`).
INTENSITY_RANGE_CONSTRAINT = [StrOptions({"region"}), tuple, list, np.ndarray]
#: ``log_base`` of entropies: a finite number > 1 (2 for bits, e for nats).
LOG_BASE_CONSTRAINT = [StrictInterval(Real, 1, None, closed="neither")]


#: ``levels``: gray levels of the quantised image, an int in [2, 65536].
GRAY_LEVELS_CONSTRAINT = [StrictInterval(Integral, 2, 65536, closed="both")]


def validate_intensity_range(estimator):
    """``estimator.intensity_range`` is "region" or a finite (low, high) pair with low < high."""
    value = estimator.intensity_range
    if isinstance(value, str):
        return
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        lo = hi = np.nan
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise invalid_parameter(estimator, "intensity_range", "'region' or a finite (low, high) pair with low < high")


def shannon_entropy(p, log_base):
    """``-sum(p * log(p))`` over the non-zero entries of ``p``, in base ``log_base``."""
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(log_base))


# ----------------------------------------------------------------------------------------------
# first-order statistics
# ----------------------------------------------------------------------------------------------
_BASE_NAMES = (
    "mean", "std", "variance", "skewness", "kurtosis", "energy", "rms", "min", "max", "range",
    "median", "iqr", "mad", "entropy", "uniformity",
)


def _percentile_label(q):
    q = float(q)
    return f"p{int(q)}" if q == int(q) else "p" + f"{q:g}".replace(".", "p")


def first_order_feature_names(percentiles=(10, 25, 75, 90), histogram_bins=8, prefix="firstorder"):
    """Names of the values :func:`first_order_features` returns, in order."""
    return list(_first_order_names(tuple(float(q) for q in percentiles), int(histogram_bins), prefix))


@functools.lru_cache(maxsize=32)
def _first_order_names(percentiles, histogram_bins, prefix):
    names = [f"{prefix}_{n}" for n in _BASE_NAMES]
    names += [f"{prefix}_{_percentile_label(q)}" for q in percentiles]
    names += [f"{prefix}_hist{k:02d}" for k in range(histogram_bins)]
    return tuple(names)


def first_order_features(image, mask=None, *, bins=64, histogram_bins=8, percentiles=(10, 25, 75, 90),
                         intensity_range=(0.0, 1.0), log_base=2.0, max_side=None, empty_mask="error",
                         prefix="firstorder"):
    """First-order statistics of the intensities inside ``mask``.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3)
        Float image (featurepipe convention: values in [0, 1]); colour is
        converted to BT.601 gray.
    mask : ndarray of bool, shape (H, W), optional
        Region to describe; ``None`` describes the whole image.
    bins : int, default=64
        Number of equal-width histogram bins over ``intensity_range`` used
        for ``entropy`` and ``uniformity``.
    histogram_bins : int, default=8
        Number of equal-width bins of the normalised intensity histogram
        returned as features ``hist00 …`` (fraction of region pixels per bin,
        summing to 1); 0 returns none.
    percentiles : sequence of float in [0, 100], default=(10, 25, 75, 90)
        Extra percentiles returned as ``p10 …`` (NumPy's linear
        interpolation). The median and IQR are always returned.
    intensity_range : (float, float) or "region", default=(0.0, 1.0)
        Range the histograms cover (see the module docstring); pixel values
        up to 1e-5 outside it are clipped, others raise.
    log_base : float, default=2
        Base of the entropy logarithm (2: bits, as pyradiomics and mahotas).
    max_side : int, optional
        Longest side, in pixels, of the grid the features are computed on:
        a larger image (and its mask) is shrunk to it, never enlarged
        (see :func:`featurepipe.preprocessing.cap_resolution`);
        ``None`` (default): the native resolution.
    empty_mask : {"error", "nan", "image"}, default="error"
        What an empty mask gives (see the module docstring).
    prefix : str, default="firstorder"
        Prefix of the feature names.

    Returns
    -------
    values : ndarray of float64, shape (n_features,)
    names : list of str
        ``prefix_mean``, ``prefix_std`` … (see :func:`first_order_feature_names`).

    Notes
    -----
    With ``x`` the region's intensities (``N`` pixels, float64), ``m_k`` the
    central moments (``1/N`` normalisation, no bias correction), and ``p``
    the normalised ``bins``-bin histogram:

    * ``variance = m_2``, ``std = sqrt(m_2)``;
    * ``skewness = m_3 / m_2**1.5`` and ``kurtosis = m_4 / m_2**2 - 3``
      (excess kurtosis, equal to ``scipy.stats.skew``/``kurtosis`` with
      ``bias=True``; pyradiomics reports ``kurtosis + 3``). Both are 0 for a
      constant region, as in pyradiomics;
    * ``energy = mean(x**2)`` (per pixel, so regions of different sizes are
      comparable; pyradiomics' ``Energy`` is ``N`` times this for unshifted
      intensities) and ``rms = sqrt(energy)``;
    * ``range = max - min``, ``iqr = p75 - p25``,
      ``mad = mean(|x - mean|)``;
    * ``entropy = -sum(p log p)`` in base ``log_base`` and
      ``uniformity = sum(p**2)``.
    """
    gray, mask = cap_resolution(to_gray(image), mask, max_side)
    try:
        region = resolve_region(gray.shape, mask, empty_mask)
    except EmptyRegion:
        names = first_order_feature_names(percentiles, histogram_bins, prefix)
        return np.full(len(names), np.nan), names
    x = (gray if region is None else gray[region]).astype(np.float64).ravel()
    lo, hi = intensity_bounds(x, intensity_range)

    n = x.size
    mean = x.mean()
    d = x - mean
    d2 = d * d
    m2 = d2.mean()
    m3 = (d2 * d).mean()
    m4 = (d2 * d2).mean()
    # a constant region has no defined skewness/kurtosis; 0 (pyradiomics' convention), not NaN
    degenerate = m2 <= (1e-14 * max(abs(mean), 1.0)) ** 2
    skew = 0.0 if degenerate else m3 / m2**1.5
    kurt = 0.0 if degenerate else m4 / (m2 * m2) - 3.0
    energy = float(np.einsum("i,i->", x, x)) / n  # not BLAS ddot: see glcm._dot
    qs = np.concatenate(([25.0, 50.0, 75.0], np.asarray(percentiles, dtype=np.float64)))
    pct = np.percentile(x, qs)
    vmin = x.min()
    vmax = x.max()

    hist = np.bincount(quantize(x, bins, lo, hi), minlength=bins) / n
    uniformity = float(np.einsum("i,i->", hist, hist))
    entropy = shannon_entropy(hist, log_base)
    if histogram_bins:
        coarse = np.bincount(quantize(x, histogram_bins, lo, hi), minlength=histogram_bins) / n
    else:
        coarse = np.empty(0)
    values = np.concatenate((
        [mean, np.sqrt(m2), m2, skew, kurt, energy, np.sqrt(energy), vmin, vmax, vmax - vmin,
         pct[1], pct[2] - pct[0], np.abs(d).mean(), entropy, uniformity],
        pct[3:],
        coarse,
    ))
    return values, first_order_feature_names(percentiles, histogram_bins, prefix)


class FirstOrderFeatures(FeatureExtractor):
    """First-order intensity statistics of each image (inside its mask) as a feature vector.

    Stateless and cached per sample. See :func:`first_order_features` for
    the definitions and the module docstring for the colour, mask and
    empty-region conventions.

    Parameters
    ----------
    bins : int, default=64
        Histogram bins for ``entropy`` and ``uniformity``.
    histogram_bins : int, default=8
        Bins of the normalised histogram returned as features (0: none).
    percentiles : tuple of float, default=(10, 25, 75, 90)
        Extra percentiles returned (median and IQR always are).
    intensity_range : (float, float) or "region", default=(0.0, 1.0)
        Range the histograms cover.
    log_base : float, default=2
        Entropy logarithm base.
    max_side : int, optional
        Working resolution: longest side in pixels (larger images are shrunk
        with area interpolation, never enlarged); ``None``: native.
    use_mask : bool, default=True
        Describe only the pixels inside the sample's mask (when it has one).
    empty_mask : {"error", "nan", "image"}, default="error"
        Policy for an empty mask.
    cache : bool or path, default=True
        Per-sample cache (see :mod:`featurepipe.cache`).
    n_jobs : int, optional
        Images processed in parallel (joblib).

    Examples
    --------
    >>> import numpy as np
    >>> from featurepipe.features import FirstOrderFeatures
    >>> X = [np.full((8, 8), 0.5, dtype=np.float32)]
    >>> float(FirstOrderFeatures(cache=False).fit_transform(X)[0, 0])
    0.5
    """

    def __init__(self, bins=64, histogram_bins=8, percentiles=(10, 25, 75, 90), intensity_range=(0.0, 1.0),
                 log_base=2.0, max_side=None, use_mask=True, empty_mask="error", cache=True, n_jobs=None):
        self.bins = bins
        self.histogram_bins = histogram_bins
        self.percentiles = percentiles
        self.intensity_range = intensity_range
        self.log_base = log_base
        self.max_side = max_side
        self.use_mask = use_mask
        self.empty_mask = empty_mask
        self.cache = cache
        self.n_jobs = n_jobs

    _parameter_constraints = {
        **REGION_CONSTRAINTS,
        "bins": [StrictInterval(Integral, 1, 65536, closed="both")],
        "histogram_bins": [StrictInterval(Integral, 0, 65536, closed="both")],
        "percentiles": [tuple, list, np.ndarray],
        "intensity_range": INTENSITY_RANGE_CONSTRAINT,
        "log_base": LOG_BASE_CONSTRAINT,
        "max_side": MAX_SIDE_CONSTRAINT,
    }

    def _validate_param_rules(self):
        try:
            q = np.asarray(self.percentiles, dtype=np.float64)
        except (TypeError, ValueError):
            q = None
        if q is None or q.ndim != 1 or not np.all((q >= 0) & (q <= 100)):
            raise invalid_parameter(self, "percentiles", "a sequence of numbers in [0, 100]")
        labels = [_percentile_label(v) for v in q]
        if len(set(labels)) != len(labels):
            raise invalid_parameter(self, "percentiles", "a sequence of distinct numbers (no repeated value)")
        validate_intensity_range(self)

    def _feature_names(self):
        return first_order_feature_names(self.percentiles, self.histogram_bins)

    def _extract(self, image, mask):
        values, _ = first_order_features(
            image, mask if self.use_mask else None, bins=self.bins, histogram_bins=self.histogram_bins,
            percentiles=self.percentiles, intensity_range=self.intensity_range, log_base=self.log_base,
            max_side=self.max_side, empty_mask=self.empty_mask,
        )
        return values
