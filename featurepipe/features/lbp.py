"""Local binary pattern (LBP) histograms, at several (P, R) scales, inside an optional mask.

The codes are computed by ``skimage.feature.local_binary_pattern``; this
module chooses which pixels count, builds the normalised histograms and
names the bins. Functional core :func:`lbp_features`, estimator
:class:`LBPFeatures`.

Methods (scikit-image's names) and their histogram bins
------------------------------------------------------
``"uniform"``      rotation-invariant uniform patterns (Ojala et al. 2002,
                   riu2): ``P + 2`` bins; bin ``k ≤ P`` counts uniform
                   patterns with ``k`` neighbours ≥ the centre, bin
                   ``P + 1`` all non-uniform patterns.
``"ror"``          rotation-invariant patterns (the minimum over the ``P``
                   bit rotations): one bin per distinct minimal code, in
                   increasing code order (36 bins for P = 8, 4116 for
                   P = 16). P ≤ 16.
``"nri_uniform"``  non-rotation-invariant uniform patterns: ``P (P - 1) + 3``
                   bins, scikit-image's code order.
``"default"``      the raw ``P``-bit code: ``2**P`` bins. P ≤ 16.

Which pixels count
------------------
A pixel's code depends on the pixels its ``P`` circular samples are
interpolated from. A pixel is counted only when *all* of those pixels (its
exact sampling footprint) lie inside the image and inside the mask, so that
pixels outside the mask never change the histogram and the image border
(where scikit-image pads with zeros) never adds spurious patterns. The
footprint is at most ``ceil(R)`` pixels away, so the counted region is the
mask eroded by roughly ``R``; a region with no such pixel is "empty" (see
``empty_mask``).

Resolution policy: ``max_side`` (class default ``None``: the native
resolution; the family default of :data:`featurepipe.features.bank.FAMILIES`
is 512 px). A larger image and its mask are shrunk (area interpolation, mask
nearest neighbour, never enlarged) before the codes are computed, so the
radii ``R`` are pixels of that grid and the cost (linear in the pixel count,
the most expensive family per pixel) stops growing past ``max_side``; see
:func:`featurepipe.preprocessing.cap_resolution`.

Intensities: the gray image (colour → BT.601 luma) is quantised to
``levels`` gray levels (default 256, see
:func:`featurepipe.features.firstorder.quantize`) before the codes are
computed, so an 8-bit image read by featurepipe gives exactly the codes of
``local_binary_pattern`` on the original ``uint8`` array and tiny float
differences between neighbours do not flip bits.
"""

from __future__ import annotations

import functools
import numbers

import cv2
import numpy as np
from skimage.feature import local_binary_pattern

from sklearn.utils._param_validation import StrOptions

from .._validation import invalid_parameter
from ..base import FeatureExtractor
from ..preprocessing import cap_resolution
from .firstorder import (
    GRAY_LEVELS_CONSTRAINT,
    INTENSITY_RANGE_CONSTRAINT,
    MAX_SIDE_CONSTRAINT,
    REGION_CONSTRAINTS,
    EmptyRegion,
    empty_region,
    intensity_bounds,
    quantize,
    resolve_region,
    to_gray,
    validate_intensity_range,
)

__all__ = ["LBPFeatures", "lbp_feature_names", "lbp_features", "lbp_footprint", "lbp_n_bins"]

_METHODS = ("uniform", "ror", "nri_uniform", "default")
_MAX_P_DENSE = 16  # 'default' and 'ror' histograms have up to 2**P bins
_MAX_P = 32


def _sample_points(P, R):
    """The ``(row, col)`` offsets of the P samples, rounded as scikit-image rounds them."""
    angles = 2 * np.pi * np.arange(P, dtype=np.float64) / P
    rp = np.round(-R * np.sin(angles), 5)
    cp = np.round(R * np.cos(angles), 5)
    return rp, cp


@functools.lru_cache(maxsize=64)
def lbp_footprint(P, R):
    """Bool array ``(2e+1, 2e+1)``: the pixels a code depends on (centre at ``[e, e]``).

    These are the centre and, for every sample point, the (up to four)
    pixels bilinear interpolation reads: rows ``floor(r) … ceil(r)`` and
    columns ``floor(c) … ceil(c)`` of its offset ``(r, c)``.
    """
    rp, cp = _sample_points(P, float(R))
    e = int(max(np.ceil(np.abs(rp)).max(), np.ceil(np.abs(cp)).max(), 0))
    fp = np.zeros((2 * e + 1, 2 * e + 1), dtype=bool)
    fp[e, e] = True
    for r, c in zip(rp, cp):
        fp[e + int(np.floor(r)):e + int(np.ceil(r)) + 1, e + int(np.floor(c)):e + int(np.ceil(c)) + 1] = True
    fp.setflags(write=False)
    return fp


@functools.lru_cache(maxsize=16)
def _ror_lookup(P):
    """(code → bin index LUT of length 2**P, sorted distinct rotation-minimal codes)."""
    codes = np.arange(2**P, dtype=np.int64)
    best = codes.copy()
    rot = codes.copy()
    top = P - 1
    for _ in range(P - 1):
        rot = (rot >> 1) | ((rot & 1) << top)
        np.minimum(best, rot, out=best)
    distinct = np.unique(best)
    lut = np.full(2**P, -1, dtype=np.int64)
    lut[distinct] = np.arange(distinct.size)
    lut.setflags(write=False)
    distinct.setflags(write=False)
    return lut, distinct


def lbp_n_bins(P, method):
    """Number of histogram bins of one (P, R) scale."""
    if method == "uniform":
        return P + 2
    if method == "nri_uniform":
        return P * (P - 1) + 3
    if method == "default":
        return 2**P
    return _ror_lookup(P)[1].size


def _radius_label(R):
    R = float(R)
    return f"r{int(R)}" if R == int(R) else "r" + f"{R:g}".replace(".", "p")


def lbp_feature_names(scales=((8, 1),), method="uniform", prefix="lbp"):
    """Names of the values :func:`lbp_features` returns: ``lbp_uniform_p8_r1_b00`` …"""
    return list(_lbp_names(tuple((int(P), float(R)) for P, R in scales), method, prefix))


@functools.lru_cache(maxsize=32)
def _lbp_names(scales, method, prefix):
    names = []
    for P, R in scales:
        n = lbp_n_bins(P, method)
        width = len(str(n - 1))
        stem = f"{prefix}_{method}_p{P}_{_radius_label(R)}"
        names += [f"{stem}_b{k:0{width}d}" for k in range(n)]
    return tuple(names)


def _eroded_region(region, footprint):
    """Pixels whose whole sampling footprint is inside the region and the image (bool, same shape)."""
    # erosion with a zero border: the footprint must fit inside the mask *and* the image
    eroded = cv2.erode(region.view(np.uint8), footprint.astype(np.uint8), borderType=cv2.BORDER_CONSTANT,
                       borderValue=0)
    return eroded.view(bool)


def lbp_features(image, mask=None, *, scales=((8, 1),), method="uniform", levels=256,
                 intensity_range=(0.0, 1.0), max_side=None, empty_mask="error", prefix="lbp"):
    """Normalised LBP histograms at one or several (P, R) scales, inside an optional mask.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3)
        Float image (values in [0, 1]); colour is converted to BT.601 gray.
    mask : ndarray of bool, shape (H, W), optional
        Region to describe (see the module docstring for which pixels count).
    scales : sequence of (int, float), default=((8, 1),)
        ``(P, R)`` pairs: number of circular samples and radius in pixels.
    method : {"uniform", "ror", "nri_uniform", "default"}, default="uniform"
        LBP variant (see the module docstring).
    levels : int, default=256
        Gray levels the image is quantised to before computing the codes.
    intensity_range : (float, float) or "region", default=(0.0, 1.0)
        Intensity range mapped onto the levels.
    max_side : int, optional
        Longest side, in pixels, of the grid the features are computed on:
        a larger image (and its mask) is shrunk to it, never enlarged
        (see :func:`featurepipe.preprocessing.cap_resolution`);
        ``None`` (default): the native resolution.
        Radii ``R`` are in pixels of that grid.
    empty_mask : {"error", "nan", "image"}, default="error"
        Policy when the mask is empty or no pixel's footprint fits inside it.
    prefix : str, default="lbp"

    Returns
    -------
    values : ndarray of float64, shape (n_features,)
        One histogram per scale, each summing to 1 (fraction of counted
        pixels per bin).
    names : list of str
        ``prefix_<method>_p<P>_r<R>_b<bin>``.
    """
    names = lbp_feature_names(scales, method, prefix)
    gray, mask = cap_resolution(to_gray(image), mask, max_side)
    try:
        region = resolve_region(gray.shape, mask, empty_mask)
        quantised = {}  # the quantised image, per region used (the whole image: key None)
        values = []
        for P, R in scales:
            P, R = int(P), float(R)
            footprint = lbp_footprint(P, R)
            e = footprint.shape[0] // 2
            use, valid = region, None
            if use is not None:
                valid = _eroded_region(use, footprint)
                if not valid.any():
                    reason = (f"no pixel of the mask is at least R={R:g} pixels from its edge (needed for LBP "
                              f"with P={P}, R={R:g})")
                    use = empty_region(empty_mask, reason)  # raises, signals NaN, or None: the whole image
            if use is None and (gray.shape[0] <= 2 * e or gray.shape[1] <= 2 * e):
                raise ValueError(f"the image {gray.shape} is too small for LBP with P={P}, R={R:g}: no pixel is "
                                 f"{e} pixels away from the border")
            key = None if use is None else id(use)
            if key not in quantised:
                lo, hi = intensity_bounds(gray if use is None else gray[use], intensity_range)
                quantised[key] = quantize(gray, levels, lo, hi)
            values.append(_histogram(quantised[key], None if use is None else valid, P, R, method, e))
    except EmptyRegion:
        return np.full(len(names), np.nan), names
    return np.concatenate(values), names


def _histogram(q, valid, P, R, method, e):
    """Normalised histogram of the codes of the counted pixels (``valid``; ``None``: the image interior)."""
    h, w = q.shape
    if valid is None:
        codes = local_binary_pattern(q, P, R, method)[e:h - e, e:w - e]
    else:
        rows = np.flatnonzero(valid.any(axis=1))
        cols = np.flatnonzero(valid.any(axis=0))
        # codes are only needed around the counted pixels: crop (keeping the footprint's margin)
        r0, r1 = max(rows[0] - e, 0), min(rows[-1] + e + 1, h)
        c0, c1 = max(cols[0] - e, 0), min(cols[-1] + e + 1, w)
        codes = local_binary_pattern(q[r0:r1, c0:c1], P, R, method)[valid[r0:r1, c0:c1]]
    codes = codes.astype(np.intp).ravel()
    if method == "ror":
        lut, distinct = _ror_lookup(P)
        codes = lut[codes]
        n_bins = distinct.size
    else:
        n_bins = lbp_n_bins(P, method)
    hist = np.bincount(codes, minlength=n_bins).astype(np.float64)
    hist /= codes.size
    return hist


class LBPFeatures(FeatureExtractor):
    """Normalised LBP histograms of each image (inside its mask) at one or several (P, R) scales.

    Stateless and cached per sample. See :func:`lbp_features` and the module
    docstring for methods, bins and which pixels count.

    Parameters
    ----------
    scales : tuple of (int, float), default=((8, 1),)
        ``(P, R)`` pairs.
    method : {"uniform", "ror", "nri_uniform", "default"}, default="uniform"
    levels : int, default=256
        Gray levels before the codes are computed.
    intensity_range : (float, float) or "region", default=(0.0, 1.0)
    max_side : int, optional
        Working resolution: longest side in pixels (larger images are shrunk
        with area interpolation, never enlarged); ``None``: native.
    use_mask : bool, default=True
    empty_mask : {"error", "nan", "image"}, default="error"
    cache : bool or path, default=True
    n_jobs : int, optional

    Examples
    --------
    >>> from featurepipe.features import LBPFeatures
    >>> LBPFeatures(scales=((8, 1),)).get_feature_names_out()[:2].tolist()
    ['lbp_uniform_p8_r1_b0', 'lbp_uniform_p8_r1_b1']
    """

    def __init__(self, scales=((8, 1),), method="uniform", levels=256, intensity_range=(0.0, 1.0), max_side=None,
                 use_mask=True, empty_mask="error", cache=True, n_jobs=None):
        self.scales = scales
        self.method = method
        self.levels = levels
        self.intensity_range = intensity_range
        self.max_side = max_side
        self.use_mask = use_mask
        self.empty_mask = empty_mask
        self.cache = cache
        self.n_jobs = n_jobs

    _parameter_constraints = {
        **REGION_CONSTRAINTS,
        "scales": [tuple, list],
        "method": [StrOptions(set(_METHODS))],
        "levels": GRAY_LEVELS_CONSTRAINT,
        "intensity_range": INTENSITY_RANGE_CONSTRAINT,
        "max_side": MAX_SIDE_CONSTRAINT,
    }

    def _validate_param_rules(self):
        try:
            items = [tuple(s) for s in self.scales]
        except TypeError:
            items = None

        def is_scale(s):
            return (len(s) == 2 and isinstance(s[0], numbers.Integral) and not isinstance(s[0], (bool, np.bool_))
                    and s[0] >= 1 and isinstance(s[1], numbers.Real) and not isinstance(s[1], (bool, np.bool_))
                    and np.isfinite(s[1]) and s[1] > 0)

        if not items or not all(is_scale(s) for s in items):
            raise invalid_parameter(self, "scales", "a non-empty sequence of (P, R) pairs with integer P >= 1 "
                                                    "and R > 0")
        labels = [(int(P), _radius_label(R)) for P, R in items]
        if len(set(labels)) != len(labels):
            raise invalid_parameter(self, "scales", "distinct (P, R) pairs (no repeat)")
        max_p = _MAX_P_DENSE if self.method in ("default", "ror") else _MAX_P
        if max(P for P, _ in items) > max_p:
            why = (f" (method={self.method!r} has 2**P histogram bins; use method='uniform' for larger P)"
                   if max_p == _MAX_P_DENSE else "")
            raise invalid_parameter(self, "scales", f"(P, R) pairs with P <= {max_p}{why}")
        validate_intensity_range(self)

    def _feature_names(self):
        return lbp_feature_names(self.scales, self.method)

    def _extract(self, image, mask):
        values, _ = lbp_features(
            image, mask if self.use_mask else None, scales=self.scales, method=self.method, levels=self.levels,
            intensity_range=self.intensity_range, max_side=self.max_side, empty_mask=self.empty_mask,
        )
        return values
