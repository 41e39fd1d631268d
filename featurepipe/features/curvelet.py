"""Curvelet-transform texture statistics (per scale and angular wedge).

The transform is the *uniform discrete curvelet transform* (UDCT, Nguyen &
Chauris 2010) of the ``curvelets`` package (MIT licence, NumPy only), used
in its default ``"real"`` kind: a tight frame (Parseval: the squared
coefficient magnitudes sum to the squared norm of the image) whose
coefficients are complex; we use their magnitudes.

The transform is trusted because the tests check it: forward then backward
reproduces random images to ~1e-15 (float64; 3 wedges per direction),
~1e-8 (6 wedges) and ~1e-5 (12 wedges), and to float32 round-off (~4e-7)
for float32 input, and the band energies add up to the image's squared norm.

Not the same numbers as CurveLab / FDCT papers
----------------------------------------------
Curvelet-texture papers on mammograms and breast thermograms mostly use the
fast discrete curvelet transform (FDCT via wrapping, CurveLab). The UDCT has
different windows, decimation, normalisation and wedge layout (its wedge
count per scale is ``2 * wedges_per_direction * 2**(scale - 1)``; FDCT's
default is 16, 32 … wedges over the full circle), so the values computed
here are curvelet statistics of the same kind, **not** numerically equal to
those papers' features. Compare classifiers, not feature values.

Layout
------
* Scale 0 is the low-pass band (one band, named ``lowpass``).
* Scale ``s >= 1`` has ``M = 2 * wedges_per_direction * 2**(s - 1)`` wedges
  covering the half-circle of frequency directions (the real transform
  merges each direction with its opposite). We order them by increasing
  angle of the wave vector of the grating a wedge responds to most,
  measured from the column axis (x, to the right) towards the row axis
  (y, downward), starting at 45°. The UDCT's wedges are uniform in *slope*
  within each of its two direction groups (pseudo-polar), not uniform in
  angle: wedge ``k = g * M/2 + j`` (group ``g`` in {0, 1}) is centred at
  ``90° g + 90° - arctan(1 - (2j + 1) / (M/2))``
  (:func:`curvelet_wedge_angles`). The package's own order (two direction
  groups, the second running backwards) is rearranged accordingly; a test
  checks every wedge with a grating at its centre angle.

Rotation by 90°
---------------
Rotating an image by 90° shifts the wedges of every scale cyclically by
``M / 2``. For the *periodic* rotation ``x'[i, j] = x[j, -i mod n]`` (what
the DFT sees) every statistic is shifted exactly (to float32 round-off).
``numpy.rot90`` differs from it by a one-pixel circular shift, and the
decimated coefficients are not shift-invariant: under ``numpy.rot90`` the
band energies still shift exactly (Parseval per band), while mean, std,
entropy, skewness and kurtosis of the magnitudes change slightly (entropy
by ~1e-2 bits, kurtosis by up to ~0.5 on a 64×64 noise image).

Statistics per band (on the coefficient magnitudes ``a = |c|``, ``n`` of them)
----------------------------------------------------------------------------
``mean``      mean of ``a``;
``std``       population standard deviation of ``a`` (``ddof=0``);
``energy``    mean of ``a**2`` (mean squared magnitude; times ``n`` it is the
              band's share of the image's squared norm);
``entropy``   Shannon entropy, in bits, of the normalised energy
              ``p = a**2 / sum(a**2)``: ``-sum(p log2 p)`` (0 for a band with
              no energy);
``skewness``  ``m3 / m2**1.5`` of ``a`` (``scipy.stats.skew``, ``bias=True``);
``kurtosis``  excess kurtosis ``m4 / m2**2 - 3`` of ``a``
              (``scipy.stats.kurtosis``, Fisher, ``bias=True``).

A band whose standard deviation is below ``1e-7`` (images are in ``[0, 1]``;
that is float32 round-off) is *flat*: its skewness and kurtosis are
undefined and reported as 0, as pyradiomics does for flat regions.

Rotation invariance (``rotation_invariant=True``): at each scale the wedges
are cyclically shifted so that the one with the largest energy comes first
(ties go to the lowest wedge index); names then use ``r00``, ``r01`` …
(orientation relative to the dominant one) instead of ``w00``, ``w01`` ….
With the rotation rule above, the invariant features of an image rotated by
a multiple of 90° are equal (exactly for energies; to the shift-variance
of the decimated transform for the other statistics). Other angles are only
approximately invariant (the wedges are not uniform in angle).

Images: grayscale is used as is; colour images are converted to gray with
the ITU-R BT.601 luma weights (as :mod:`featurepipe.io` does), then resized
to the fixed ``size`` (OpenCV ``INTER_AREA``; the aspect ratio is not
kept). The UDCT requires each side to be a multiple of its largest
decimation ratio (``2**(num_scales - 1) * wedges_per_direction / 3``
in practice); an incompatible ``size`` is refused, because the transform
would silently lose perfect reconstruction.

Resolution policy: always the fixed ``size`` (no ``max_side``): the
transform's scales are fractions of that grid, and the cost per image is
that of one ``size`` transform plus the resize, almost independent of the
input size.
"""

from __future__ import annotations

import functools
import numbers

import cv2
import numpy as np
from scipy.special import entr
from sklearn.utils._param_validation import StrOptions

from .._validation import StrictInterval, check_choice, invalid_value_message
from ..base import FeatureExtractor
from ..io import convert_channels, to_float_image

__all__ = [
    "CURVELET_STATS",
    "CurveletFeatures",
    "curvelet_coefficients",
    "curvelet_feature_names",
    "curvelet_features",
    "curvelet_wedge_angles",
]

#: Statistics computed per band, in output order.
CURVELET_STATS = ("mean", "std", "energy", "entropy", "skewness", "kurtosis")

_ROI_CHOICES = ("image", "mask_bbox")
_EMPTY_MASK_CHOICES = ("error", "nan", "image")
# A band whose magnitudes have a smaller standard deviation is flat (float32
# round-off of a constant region): higher moments would be noise / 0.
_FLAT_STD = 1e-7


# --------------------------------------------------------------------------- validation
def _check_size(size):
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (int(size), int(size))
    elif (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in size)
    ):
        size = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"size must be a positive int or a pair (height, width) of positive ints; got {size!r}")
    if min(size) < 16:
        raise ValueError(f"size must be at least 16 pixels on each side; got {size!r}")
    return size


def _check_transform_params(size, num_scales, wedges_per_direction):
    size = _check_size(size)
    if not isinstance(num_scales, numbers.Integral) or isinstance(num_scales, bool) or not 2 <= num_scales <= 8:
        raise ValueError(f"num_scales must be an int in [2, 8] (low-pass band included); got {num_scales!r}")
    if (
        not isinstance(wedges_per_direction, numbers.Integral)
        or isinstance(wedges_per_direction, bool)
        or wedges_per_direction < 3
        or wedges_per_direction % 3
    ):
        raise ValueError(
            "wedges_per_direction must be a positive multiple of 3 (3, 6, 12 …; the UDCT's decimation "
            f"requires it); got {wedges_per_direction!r}"
        )
    udct = _udct(size, int(num_scales), int(wedges_per_direction))
    need = np.max(np.vstack([np.atleast_2d(r) for r in udct.decimation_ratios]), axis=0)
    if size[0] % need[0] or size[1] % need[1]:
        raise ValueError(
            f"size={size!r} is not compatible with num_scales={num_scales}, wedges_per_direction="
            f"{wedges_per_direction}: height must be a multiple of {int(need[0])} and width a multiple of "
            f"{int(need[1])} (the transform's decimation ratios), e.g. size=({_round_up(size[0], need[0])}, "
            f"{_round_up(size[1], need[1])})"
        )
    return size, udct


def _round_up(value, multiple):
    return int(-(-value // multiple) * multiple)


@functools.lru_cache(maxsize=8)
def _udct(size, num_scales, wedges_per_direction):
    """The UDCT object for these parameters, built once per process (its windows take ~0.1-0.3 s)."""
    from curvelets.numpy import UDCT

    return UDCT(shape=tuple(size), num_scales=num_scales, wedges_per_direction=wedges_per_direction)


def _wedges_per_scale(num_scales, wedges_per_direction):
    """Number of bands of scales 0 … num_scales-1 (scale 0: the low-pass band)."""
    return [1] + [2 * wedges_per_direction * 2 ** (s - 1) for s in range(1, num_scales)]


# --------------------------------------------------------------------------- functional core
def curvelet_wedge_angles(num_scales=4, wedges_per_direction=3):
    """Centre angle (degrees) of each wedge of each band-pass scale, in output order.

    Returns
    -------
    angles : list of ndarray
        ``angles[s - 1][k]`` for scale ``s >= 1`` and wedge ``k``: the angle
        of the wave vector (from the column axis towards the row axis) of
        the grating the wedge responds to most, in [45, 225).
    """
    out = []
    for n_bands in _wedges_per_scale(num_scales, wedges_per_direction)[1:]:
        half = n_bands // 2
        j = np.arange(half)
        within = 90.0 - np.degrees(np.arctan(1.0 - (2 * j + 1) / half))
        out.append(np.concatenate([within, within + 90.0]))
    return out


def curvelet_feature_names(num_scales=4, wedges_per_direction=3, rotation_invariant=False):
    """Names of :func:`curvelet_features`' outputs, e.g. ``curvelet_s2_w05_energy``.

    Order: scale by scale (0 = low-pass), wedge by wedge (by angle, or
    relative to the dominant wedge when ``rotation_invariant``), then the
    statistics of :data:`CURVELET_STATS`.
    """
    tag = "r" if rotation_invariant else "w"
    names = []
    for s, n_bands in enumerate(_wedges_per_scale(num_scales, wedges_per_direction)):
        for k in range(n_bands):
            band = "lowpass" if s == 0 else f"{tag}{k:02d}"
            names.extend(f"curvelet_s{s}_{band}_{stat}" for stat in CURVELET_STATS)
    return names


def _band_stats(bands):
    """Statistics of a stack of bands, shape (n_bands, n_coefficients) complex -> (n_bands, 6)."""
    mag = np.abs(bands).astype(np.float64)
    mean = mag.mean(axis=1)
    dev = mag - mean[:, None]
    dev2 = dev * dev
    m2 = dev2.mean(axis=1)
    m3 = (dev2 * dev).mean(axis=1)
    m4 = (dev2 * dev2).mean(axis=1)
    power = mag * mag
    energy = power.mean(axis=1)
    total = power.sum(axis=1)
    safe_total = np.where(total > 0, total, 1.0)
    entropy = entr(power / safe_total[:, None]).sum(axis=1) / np.log(2.0)
    entropy = np.where(total > 0, entropy, 0.0)
    std = np.sqrt(m2)
    flat = std < _FLAT_STD
    safe_m2 = np.where(flat, 1.0, m2)
    skewness = np.where(flat, 0.0, m3 / safe_m2**1.5)
    kurtosis = np.where(flat, 0.0, m4 / safe_m2**2 - 3.0)
    return np.column_stack([mean, std, energy, entropy, skewness, kurtosis])


def _prepare(image, mask, size, roi, empty_mask):
    """Gray float image cropped (roi) and resized to ``size``; ``None`` when the NaN policy applies."""
    image = to_float_image(image, name="image")
    if roi == "mask_bbox" and (mask is None or not np.any(mask)):
        if empty_mask == "nan":
            return None
        if empty_mask == "error":
            what = "no mask" if mask is None else "an empty mask (no True pixel)"
            raise ValueError(
                f"roi='mask_bbox' needs a non-empty mask but the image has {what}; pass masks, use "
                "roi='image', or set empty_mask='nan' (NaN features) or empty_mask='image' (whole image) "
                "for such images"
            )
    elif roi == "mask_bbox":
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask has shape {mask.shape} but the image is {image.shape[:2]} (H, W)")
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        image = image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    gray = convert_channels(image, "gray")
    if gray.shape != tuple(size):
        gray = cv2.resize(gray, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(gray, dtype=np.float32)


def curvelet_coefficients(image, size=128, num_scales=4, wedges_per_direction=3):
    """Curvelet bands of a (resized, gray) image, in this module's angular order.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3)
        Float image in [0, 1] (or uint8/uint16, converted); colour is
        converted to BT.601 gray; resized to ``size``.
    size, num_scales, wedges_per_direction
        As in :func:`curvelet_features`.

    Returns
    -------
    bands : list of list of ndarray (complex64)
        ``bands[s][k]``: the decimated coefficients of scale ``s``, wedge
        ``k`` (``bands[0][0]`` is the low-pass band).
    """
    size, udct = _check_transform_params(size, num_scales, wedges_per_direction)
    gray = _prepare(image, None, size, "image", "error")
    return _ordered_bands(udct.forward(gray))


def _ordered_bands(coeffs):
    # The package gives, per scale, two direction groups of wedges; the
    # second runs backwards in angle. Reverse it so wedges go round by angle.
    out = [[coeffs[0][0][0]]]
    for scale in coeffs[1:]:
        out.append(list(scale[0]) + list(scale[1])[::-1])
    return out


def curvelet_features(image, mask=None, *, size=128, num_scales=4, wedges_per_direction=3,
                      rotation_invariant=False, roi="image", empty_mask="error"):
    """Curvelet texture statistics of one image.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3)
        Float image in [0, 1] (uint8/uint16 are converted); colour is
        converted to gray with BT.601 weights.
    mask : ndarray of bool, shape (H, W), optional
        Region of interest; used only when ``roi="mask_bbox"``.
    size : int or (int, int), default=128
        ``(height, width)`` the image is resized to before the transform
        (an int means a square). Must be compatible with the transform (see
        the module docstring); an error names the nearest valid size.
    num_scales : int, default=4
        Number of scales including the low-pass band (2 … 8).
    wedges_per_direction : int, default=3
        Wedges per direction group at the coarsest band-pass scale (a
        multiple of 3); scale ``s`` has ``2 * wedges_per_direction *
        2**(s-1)`` wedges over 180°.
    rotation_invariant : bool, default=False
        Cyclically shift each scale's wedges to start at the most energetic one.
    roi : {"image", "mask_bbox"}, default="image"
        ``"image"``: the whole image; ``"mask_bbox"``: the bounding box of
        the mask (then resized to ``size``).
    empty_mask : {"error", "nan", "image"}, default="error"
        With ``roi="mask_bbox"``, what a missing or empty mask gives: a
        ``ValueError``, a vector of NaN (to impute or drop explicitly), or
        the features of the whole image.

    Returns
    -------
    values : ndarray of float64, shape (n_features,)
    names : list of str
        See :func:`curvelet_feature_names`.
    """
    check_choice("roi", roi, _ROI_CHOICES)
    check_choice("empty_mask", empty_mask, _EMPTY_MASK_CHOICES)
    if not isinstance(rotation_invariant, (bool, np.bool_)):
        raise ValueError(invalid_value_message("rotation_invariant", rotation_invariant, "True or False"))
    size, udct = _check_transform_params(size, num_scales, wedges_per_direction)
    names = curvelet_feature_names(num_scales, wedges_per_direction, rotation_invariant)
    gray = _prepare(image, mask, size, roi, empty_mask)
    if gray is None:
        return np.full(len(names), np.nan), names
    coeffs = udct.forward(gray)
    rows = [_band_stats(coeffs[0][0][0].reshape(1, -1))]
    for scale in coeffs[1:]:
        # Wedges of one direction group share a shape: stack them for vectorised statistics.
        first = _band_stats(np.stack(scale[0]).reshape(len(scale[0]), -1))
        second = _band_stats(np.stack(scale[1]).reshape(len(scale[1]), -1))[::-1]
        stats = np.vstack([first, second])
        if rotation_invariant:
            dominant = int(np.argmax(stats[:, CURVELET_STATS.index("energy")]))
            stats = np.roll(stats, -dominant, axis=0)
        rows.append(stats)
    values = np.concatenate([r.ravel() for r in rows])
    return values, names


# --------------------------------------------------------------------------- estimator
class CurveletFeatures(FeatureExtractor):
    """Curvelet texture statistics per scale and wedge (stateless, cached per sample).

    Thin scikit-learn shell around :func:`curvelet_features`; see the
    module docstring for the transform, the wedge order, the statistics and
    why the values differ from FDCT/CurveLab-based papers.

    Parameters
    ----------
    size : int or (int, int), default=128
        Resize target ``(height, width)`` before the transform.
    num_scales : int, default=4
        Scales including the low-pass band.
    wedges_per_direction : int, default=3
        Wedges per direction group at the coarsest band-pass scale (multiple of 3).
    rotation_invariant : bool, default=False
        Cyclic shift of each scale's wedges to start at the most energetic one.
    roi : {"image", "mask_bbox"}, default="image"
        Whole image, or the bounding box of the sample's mask.
    empty_mask : {"error", "nan", "image"}, default="error"
        With ``roi="mask_bbox"``: a missing/empty mask raises, gives NaN
        features, or the whole image is used.
    cache : bool or path, default=True
        Per-sample cache (see :mod:`featurepipe.cache`).
    n_jobs : int, optional
        Images processed in parallel (joblib) on cache misses.

    Examples
    --------
    >>> import numpy as np
    >>> from featurepipe.features import CurveletFeatures
    >>> X = [np.random.default_rng(i).random((64, 64), dtype=np.float32) for i in range(2)]
    >>> CurveletFeatures(size=64, num_scales=3).fit_transform(X).shape
    (2, 114)
    """

    def __init__(self, size=128, num_scales=4, wedges_per_direction=3, rotation_invariant=False,
                 roi="image", empty_mask="error", cache=True, n_jobs=None):
        self.size = size
        self.num_scales = num_scales
        self.wedges_per_direction = wedges_per_direction
        self.rotation_invariant = rotation_invariant
        self.roi = roi
        self.empty_mask = empty_mask
        self.cache = cache
        self.n_jobs = n_jobs

    _parameter_constraints = {
        **FeatureExtractor._parameter_constraints,
        "size": [StrictInterval(numbers.Integral, 16, None, closed="left"), tuple, list],
        "num_scales": [StrictInterval(numbers.Integral, 2, 8, closed="both")],
        "wedges_per_direction": [StrictInterval(numbers.Integral, 3, None, closed="left")],
        "rotation_invariant": ["boolean"],
        "roi": [StrOptions(set(_ROI_CHOICES))],
        "empty_mask": [StrOptions(set(_EMPTY_MASK_CHOICES))],
    }

    def _validate_param_rules(self):
        # The pair form of size, multiples of 3 and the decimation ratios: the one check the functions use too.
        _check_transform_params(self.size, self.num_scales, self.wedges_per_direction)

    def _feature_names(self):
        return curvelet_feature_names(self.num_scales, self.wedges_per_direction, self.rotation_invariant)

    def _reads_mask(self):
        return self.roi == "mask_bbox"  # the whole-image transform never looks at the mask

    def _extract(self, image, mask):
        values, _ = curvelet_features(
            image, mask, size=self.size, num_scales=self.num_scales,
            wedges_per_direction=self.wedges_per_direction, rotation_invariant=self.rotation_invariant,
            roi=self.roi, empty_mask=self.empty_mask,
        )
        return values
