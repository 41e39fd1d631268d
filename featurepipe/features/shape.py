"""Shape features of the lesion / region-of-interest mask.

The quantities follow scikit-image's :func:`~skimage.measure.regionprops`
definitions (tests check equality with it on random shapes; Hu moments
follow OpenCV, see below) but are computed
with OpenCV moments and contours, several times faster; units are
**pixels** of the mask as given (no physical spacing: resize steps change
them).

==========================  ==================================================
``shape_area``              number of pixels in the region (holes excluded)
``shape_perimeter``         boundary length in pixels (see ``perimeter``)
``shape_circularity``       ``4 π area / perimeter²`` (1 for a disk; see notes)
``shape_compactness``       ``perimeter² / area`` (4π ≈ 12.57 for a disk)
``shape_eccentricity``      of the ellipse with the region's second moments
                            (0 circle … 1 line)
``shape_solidity``          area / area of the (pixel) convex hull
``shape_extent``            area / area of the axis-aligned bounding box
``shape_major_axis_length`` ``4 sqrt(λ1)``, λ: eigenvalues of the region's
``shape_minor_axis_length`` ``4 sqrt(λ2)``  pixel-coordinate covariance
``shape_axis_ratio``        minor / major axis length (1 circle … 0 line)
``shape_hu1`` … ``hu7``     Hu's seven moment invariants (see below)
==========================  ==================================================

Notes
-----
* **Perimeter.** ``perimeter="crofton"`` (default) is scikit-image's Crofton
  estimate (``perimeter_crofton``, 4 directions); it measures curved
  outlines well: a digital disk of radius ≥ 10 px has circularity within 2 %
  of 1 (a radius-5 disk: 1.06 — circularity may exceed 1 for tiny regions).
  ``perimeter="contour"`` is scikit-image's ``perimeter`` (a 4-connected line
  through the centres of the border pixels; equals OpenCV's ``arcLength`` of
  the traced contour for simple shapes): exact for axis-aligned rectangles
  (``2 (w-1) + 2 (h-1)``) but it overestimates curved outlines (a radius-80
  disk has circularity 0.91).
* **Several connected components** (8-connectivity): ``components="largest"``
  (default) keeps the component with the most pixels (ties: the first in
  raster order); ``"union"`` measures all foreground pixels as one region
  (perimeters add up, the convex hull spans every part).
* **Hu moments** are invariant to translation, scale and rotation (hence
  "orientation-invariant"); ``hu7`` changes sign under reflection. With
  ``hu_log=True`` (default) each is reported as ``-sign(h) log10 |h|`` (the
  usual scaling: the raw values span many orders of magnitude), and an
  exactly zero moment — common for symmetric shapes, e.g. ``hu3`` … ``hu7``
  of a rectangle — as 0. Near-zero moments are numerically unstable in log
  scale; ``hu_log=False`` gives the raw values, equal to ``cv2.HuMoments``
  of the binary region. Coordinates are OpenCV's (x = column, y = row);
  scikit-image's ``regionprops(...).moments_hu`` uses (row, column), a
  reflection, so its ``hu7`` has the opposite sign (``hu1`` … ``hu6`` agree).
* **Empty, missing or degenerate masks.** No mask, a mask without any
  ``True`` pixel, or a region without shape (zero perimeter or zero major
  axis: one or two pixels) raises ``ValueError`` with ``empty_mask="error"``
  (default), or gives a vector of NaN with ``empty_mask="nan"`` (for data
  sets where some images — e.g. BUSI's "normal" class — have empty masks;
  impute or drop them explicitly). Never zeros.
* The image itself is not used.

Resolution policy: always the mask's native resolution; there is no
``max_side``. Area, perimeter and axis lengths are in pixels of the mask, so
shrinking it would change their unit from image to image (an area would be
in native pixels for a small image and in pixels of a coarser grid for a
large one) and quantise thin outlines; the cost is that of contours and
moments of one binary mask, a few ms even at 1024² (see
``benchmarks/handcrafted_resolution.py``). Resize the images in a
preprocessing step if every mask should be measured on one grid.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from skimage.measure import perimeter as _skimage_perimeter

from sklearn.utils._param_validation import StrOptions

from .._validation import check_choice, invalid_value_message
from ..base import FeatureExtractor

__all__ = ["ShapeFeatures", "shape_features", "SHAPE_FEATURE_NAMES"]

#: Output names, in order.
SHAPE_FEATURE_NAMES = tuple(
    f"shape_{n}"
    for n in (
        "area", "perimeter", "circularity", "compactness", "eccentricity", "solidity", "extent",
        "major_axis_length", "minor_axis_length", "axis_ratio",
        "hu1", "hu2", "hu3", "hu4", "hu5", "hu6", "hu7",
    )
)

_PERIMETER_CHOICES = ("crofton", "contour")
_COMPONENT_CHOICES = ("largest", "union")
_EMPTY_MASK_CHOICES = ("error", "nan")

# Crofton perimeter with 4 directions: the weight of each 2x2 pixel configuration
# (code = 1*p[i,j] + 4*p[i,j-1] + 2*p[i-1,j] + 8*p[i-1,j-1]). These are the
# coefficients of skimage.measure.perimeter_crofton(directions=4) (Rivollier
# 2010); a test checks equality with it. Evaluating them with NumPy slices
# instead of calling scikit-image saves ~0.3 ms per mask (its ndimage
# convolution), a fifth of the family's budget.
_S2 = np.sqrt(2.0)
_CROFTON_4 = np.array([
    0, np.pi / 4 * (1 + 1 / _S2), np.pi / (4 * _S2), np.pi / (2 * _S2),
    0, np.pi / 4 * (1 + 1 / _S2), 0, np.pi / (4 * _S2),
    np.pi / 4, np.pi / 2, np.pi / (4 * _S2), np.pi / (4 * _S2),
    np.pi / 4, np.pi / 2, 0, 0,
])
# Each pixel is a diamond of half-width 0.5 for the convex hull, as in
# skimage.morphology.convex_hull_image(offset_coordinates=True).
_DIAMOND = np.array([[-0.5, 0.0], [0.5, 0.0], [0.0, -0.5], [0.0, 0.5]])
_TOL = 1e-9


def _validate_options(perimeter, components, empty_mask, hu_log):
    """The option checks of :func:`shape_features` (a function, so not ``_parameter_constraints``)."""
    check_choice("perimeter", perimeter, _PERIMETER_CHOICES)
    check_choice("components", components, _COMPONENT_CHOICES)
    check_choice("empty_mask", empty_mask, _EMPTY_MASK_CHOICES)
    if not isinstance(hu_log, (bool, np.bool_)):
        raise ValueError(invalid_value_message("hu_log", hu_log, "True or False"))


def _crop(mask):
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _region(mask, components):
    """The selected region (uint8 0/1), cropped to its bounding box."""
    region = _crop(mask).astype(np.uint8)
    if components == "largest":
        n, labels = cv2.connectedComponents(region, connectivity=8)
        if n > 2:
            # OpenCV numbers components in raster-scan order of their first pixel, and
            # argmax returns the first maximum: ties go to the first component met.
            best = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
            region = _crop(labels == best).astype(np.uint8)
    return region


def _crofton_perimeter(padded):
    codes = padded[1:, 1:] + 4 * padded[1:, :-1] + 2 * padded[:-1, 1:] + 8 * padded[:-1, :-1]
    return float(np.bincount(codes.ravel(), minlength=16) @ _CROFTON_4)


def _convex_area(padded):
    """Pixels whose centre lies in (or on) the convex hull of the region's pixel diamonds.

    Equals ``skimage.morphology.convex_hull_image(region).sum()`` (tests check
    it on random shapes): the hull of the boundary pixels' diamonds is found
    with OpenCV, and its pixels are counted row by row (the polygon is
    convex, so each row meets it in one interval) instead of testing every
    pixel of the bounding box.
    """
    contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    # Hull of the pixel centres first (few vertices), then of those vertices' diamonds.
    centres = cv2.convexHull(np.vstack(contours)).reshape(-1, 1, 2).astype(np.float32)  # (x, y)
    diamonds = (centres + _DIAMOND[None].astype(np.float32)).reshape(-1, 2)
    hull = cv2.convexHull(diamonds).reshape(-1, 2).astype(np.float64)
    # Split the convex polygon at its top and bottom vertices into two chains that
    # are monotone in y; each row's interval is between the chains' x at that row.
    top, bottom = int(np.argmin(hull[:, 1])), int(np.argmax(hull[:, 1]))
    n = len(hull)
    chain_a = hull[(top + np.arange((bottom - top) % n + 1)) % n]
    chain_b = hull[(bottom + np.arange((top - bottom) % n + 1)) % n][::-1]
    first = np.ceil(hull[top, 1] - _TOL)
    rows = np.arange(first, np.floor(hull[bottom, 1] + _TOL) + 1)
    xa = np.interp(rows, chain_a[:, 1], chain_a[:, 0])
    xb = np.interp(rows, chain_b[:, 1], chain_b[:, 0])
    left, right = np.minimum(xa, xb), np.maximum(xa, xb)
    # np.interp would see only one end of a horizontal edge, but a convex polygon has
    # those only at its top and bottom, which are diamond tips at half-integer y:
    # no pixel row lies on them.
    return float(np.sum(np.floor(right + _TOL) - np.ceil(left - _TOL) + 1))


def _log_hu(hu):
    # Seven values: plain Python is several times faster than NumPy's per-call overhead here.
    return [-math.copysign(1.0, h) * math.log10(abs(h)) if h != 0 else 0.0 for h in hu]


def shape_features(mask, *, perimeter="crofton", components="largest", hu_log=True, empty_mask="error"):
    """Shape descriptors of a binary mask.

    Parameters
    ----------
    mask : array-like of bool, shape (H, W), or None
        The region (``True`` inside). Non-boolean arrays are read as ``!= 0``.
    perimeter : {"crofton", "contour"}, default="crofton"
        Perimeter estimator (see the module notes).
    components : {"largest", "union"}, default="largest"
        Which connected components (8-connectivity) form the region.
    hu_log : bool, default=True
        Report Hu moments as ``-sign(h) log10|h|`` (0 for ``h == 0``) instead of raw.
    empty_mask : {"error", "nan"}, default="error"
        Missing, empty or degenerate (1–2 pixel) region: raise ``ValueError``
        or return NaN for every feature.

    Returns
    -------
    values : ndarray of float64, shape (17,)
        Lengths in pixels, areas in pixels², the rest dimensionless.
    names : list of str
        :data:`SHAPE_FEATURE_NAMES`.
    """
    _validate_options(perimeter, components, empty_mask, hu_log)
    names = list(SHAPE_FEATURE_NAMES)
    problem = None
    if mask is None:
        problem = "the image has no mask"
    else:
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"mask must be a 2-D (H, W) array; got shape {mask.shape}")
        if mask.dtype != bool:
            mask = mask != 0
        if not mask.any():
            problem = "the mask is empty (no True pixel)"
    if problem is None:
        region = _region(mask, components)
        # A zero border keeps perimeter and contour tracing off the array edge.
        padded = cv2.copyMakeBorder(region, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        moments = cv2.moments(padded, binaryImage=True)
        area = moments["m00"]
        # Eigenvalues of the covariance of pixel coordinates (regionprops' inertia tensor).
        # (closed form for a symmetric 2x2 matrix [[a, b], [b, c]]).
        a, b, c = moments["mu20"] / area, moments["mu11"] / area, moments["mu02"] / area
        half_gap = float(np.hypot((a - c) / 2.0, b))
        large, small = (a + c) / 2.0 + half_gap, max((a + c) / 2.0 - half_gap, 0.0)
        major, minor = 4.0 * np.sqrt(large), 4.0 * np.sqrt(small)
        length = _crofton_perimeter(padded) if perimeter == "crofton" else float(_skimage_perimeter(padded, 4))
        if length <= 0 or major <= 0:
            problem = (f"the region has {int(area)} pixel(s), too few for shape features "
                       f"(perimeter {length:g}, major axis {major:g})")
    if problem is not None:
        if empty_mask == "nan":
            return np.full(len(names), np.nan), names
        raise ValueError(f"shape features need a non-empty mask: {problem}; set empty_mask='nan' to get "
                         "NaN features for such images instead")
    hu = cv2.HuMoments(moments).ravel()
    values = np.array([
        area,
        length,
        4.0 * np.pi * area / length**2,
        length**2 / area,
        np.sqrt(1.0 - small / large),
        area / _convex_area(padded),
        area / region.size,
        major,
        minor,
        minor / major,
        *(_log_hu(hu) if hu_log else hu),
    ], dtype=np.float64)
    return values, names


class ShapeFeatures(FeatureExtractor):
    """Shape descriptors of each sample's mask (stateless, cached per sample).

    Thin scikit-learn shell around :func:`shape_features`; see
    :mod:`featurepipe.features.shape` for definitions, units (pixels) and
    the policies for several components and empty masks.

    Parameters
    ----------
    perimeter : {"crofton", "contour"}, default="crofton"
    components : {"largest", "union"}, default="largest"
    hu_log : bool, default=True
    empty_mask : {"error", "nan"}, default="error"
    cache : bool or path, default=True
    n_jobs : int, optional
    """

    def __init__(self, perimeter="crofton", components="largest", hu_log=True, empty_mask="error",
                 cache=True, n_jobs=None):
        self.perimeter = perimeter
        self.components = components
        self.hu_log = hu_log
        self.empty_mask = empty_mask
        self.cache = cache
        self.n_jobs = n_jobs

    _parameter_constraints = {
        **FeatureExtractor._parameter_constraints,
        "perimeter": [StrOptions(set(_PERIMETER_CHOICES))],
        "components": [StrOptions(set(_COMPONENT_CHOICES))],
        "hu_log": ["boolean"],
        "empty_mask": [StrOptions(set(_EMPTY_MASK_CHOICES))],
    }

    def _feature_names(self):
        return list(SHAPE_FEATURE_NAMES)

    def _extract(self, image, mask):
        values, _ = shape_features(mask, perimeter=self.perimeter, components=self.components,
                                   hu_log=self.hu_log, empty_mask=self.empty_mask)
        return values
