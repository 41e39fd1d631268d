"""Histogram of oriented gradients (HOG) of an image resized to a fixed size.

``skimage.feature.hog`` computes the descriptor; this module prepares the
image (gray, optional mask, fixed size) and names the values. Functional
core :func:`hog_features`, estimator :class:`HOGFeatures`.

Preparation
-----------
1. Colour images are converted to BT.601 gray.
2. With a mask, the image is cropped to the mask's bounding box and the
   pixels outside the mask are set to 0, so the descriptor sees only the
   region (and its outline, which is part of the lesion's shape); pixels
   outside the mask never change the features.
3. The image is resized to ``size`` (rows, cols) with OpenCV: ``INTER_AREA``
   when both sides shrink (anti-aliased, the usual choice for downsizing),
   ``INTER_LINEAR`` otherwise. The aspect ratio is not kept, as in the
   published HOG + SVM pipelines that resize every image to one size.

The descriptor is scikit-image's, with its parameters exposed; its length
is ``n_blocks_row * n_blocks_col * cells_per_block[0] * cells_per_block[1] *
orientations`` with ``n_blocks = size // pixels_per_cell - cells_per_block
+ 1`` per axis.

Resolution policy: always the fixed ``size`` (no ``max_side``): cells of
``pixels_per_cell`` pixels are fractions of that grid, and the cost per image
is that of one ``size`` descriptor plus the resize, almost independent of the
input size.
"""

from __future__ import annotations

import functools
from numbers import Integral

import cv2
import numpy as np
from skimage.feature import hog
from sklearn.utils._param_validation import StrOptions

from .._validation import StrictInterval, invalid_parameter, is_int
from ..base import FeatureExtractor
from .firstorder import REGION_CONSTRAINTS, EmptyRegion, resolve_region, to_gray

__all__ = ["HOGFeatures", "hog_feature_names", "hog_features", "resize_gray"]

_BLOCK_NORMS = ("L2-Hys", "L2", "L1", "L1-sqrt")


def _pair(value):
    if isinstance(value, Integral):
        return int(value), int(value)
    return int(value[0]), int(value[1])


def resize_gray(gray, size):
    """Resize a 2-D float image to ``size = (rows, cols)`` (INTER_AREA when shrinking, else INTER_LINEAR)."""
    rows, cols = size
    if gray.shape == (rows, cols):
        return np.ascontiguousarray(gray, dtype=np.float32)
    shrink = rows <= gray.shape[0] and cols <= gray.shape[1]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(gray, dtype=np.float32), (cols, rows), interpolation=interpolation)


def _grid(size, pixels_per_cell, cells_per_block):
    rows, cols = _pair(size)
    pr, pc = _pair(pixels_per_cell)
    br, bc = _pair(cells_per_block)
    return rows // pr - br + 1, cols // pc - bc + 1, br, bc


def hog_feature_names(size=(128, 128), orientations=9, pixels_per_cell=(16, 16), cells_per_block=(2, 2),
                      prefix="hog"):
    """Names of the values :func:`hog_features` returns, in scikit-image's order.

    ``hog_b<block row>_<block col>_c<cell row>_<cell col>_o<orientation>``.
    """
    return list(_hog_names(_pair(size), int(orientations), _pair(pixels_per_cell), _pair(cells_per_block), prefix))


@functools.lru_cache(maxsize=32)
def _hog_names(size, orientations, pixels_per_cell, cells_per_block, prefix):
    # cached: building ~2000 strings costs more than the descriptor itself
    n_br, n_bc, br, bc = _grid(size, pixels_per_cell, cells_per_block)
    idx = np.indices((n_br, n_bc, br, bc, orientations)).reshape(5, -1).T
    wr, wc, wo = len(str(max(n_br - 1, 0))), len(str(max(n_bc - 1, 0))), len(str(orientations - 1))
    return tuple(f"{prefix}_b{a:0{wr}d}_{b:0{wc}d}_c{c}_{d}_o{o:0{wo}d}" for a, b, c, d, o in idx)


def hog_features(image, mask=None, *, size=(128, 128), orientations=9, pixels_per_cell=(16, 16),
                 cells_per_block=(2, 2), block_norm="L2-Hys", transform_sqrt=False, empty_mask="error",
                 prefix="hog"):
    """HOG descriptor of an image (or of its masked region) resized to ``size``.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3)
        Float image; colour is converted to BT.601 gray.
    mask : ndarray of bool, shape (H, W), optional
        Crop to the mask's bounding box and zero the pixels outside it.
    size : int or (int, int), default=(128, 128)
        ``(rows, cols)`` the image is resized to.
    orientations, pixels_per_cell, cells_per_block, block_norm, transform_sqrt
        Passed to ``skimage.feature.hog``.
    empty_mask : {"error", "nan", "image"}, default="error"
        Policy for an empty mask.
    prefix : str, default="hog"

    Returns
    -------
    values : ndarray of float64, shape (n_features,)
    names : list of str
        See :func:`hog_feature_names`.
    """
    size = _pair(size)
    names = hog_feature_names(size, orientations, pixels_per_cell, cells_per_block, prefix)
    gray = to_gray(image)
    try:
        region = resolve_region(gray.shape, mask, empty_mask)
    except EmptyRegion:
        return np.full(len(names), np.nan), names
    if region is not None:
        rows = np.flatnonzero(region.any(axis=1))
        cols = np.flatnonzero(region.any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        gray = np.where(region[box], gray[box], np.float32(0))
    resized = resize_gray(gray, size)
    if transform_sqrt and resized.min() < 0:
        raise ValueError(f"transform_sqrt=True needs non-negative intensities; the image has values down to "
                         f"{float(resized.min()):g}")
    values = hog(resized, orientations=orientations, pixels_per_cell=_pair(pixels_per_cell),
                 cells_per_block=_pair(cells_per_block), block_norm=block_norm, transform_sqrt=transform_sqrt,
                 feature_vector=True)
    return values.astype(np.float64, copy=False), names


class HOGFeatures(FeatureExtractor):
    """HOG descriptor of each image (or its masked region) resized to a fixed size.

    Stateless and cached per sample. See :func:`hog_features` and the module
    docstring.

    Parameters
    ----------
    size : int or (int, int), default=(128, 128)
    orientations : int, default=9
    pixels_per_cell : int or (int, int), default=(16, 16)
    cells_per_block : int or (int, int), default=(2, 2)
    block_norm : {"L2-Hys", "L2", "L1", "L1-sqrt"}, default="L2-Hys"
    transform_sqrt : bool, default=False
        Power-law compression (square root) of the image before processing
        (needs non-negative intensities).
    use_mask : bool, default=True
    empty_mask : {"error", "nan", "image"}, default="error"
    cache : bool or path, default=True
    n_jobs : int, optional

    Examples
    --------
    >>> from featurepipe.features import HOGFeatures
    >>> len(HOGFeatures().get_feature_names_out())
    1764
    """

    def __init__(self, size=(128, 128), orientations=9, pixels_per_cell=(16, 16), cells_per_block=(2, 2),
                 block_norm="L2-Hys", transform_sqrt=False, use_mask=True, empty_mask="error", cache=True,
                 n_jobs=None):
        self.size = size
        self.orientations = orientations
        self.pixels_per_cell = pixels_per_cell
        self.cells_per_block = cells_per_block
        self.block_norm = block_norm
        self.transform_sqrt = transform_sqrt
        self.use_mask = use_mask
        self.empty_mask = empty_mask
        self.cache = cache
        self.n_jobs = n_jobs

    _parameter_constraints = {
        **REGION_CONSTRAINTS,
        "size": [StrictInterval(Integral, 1, None, closed="left"), tuple, list],
        "orientations": [StrictInterval(Integral, 1, None, closed="left")],
        "pixels_per_cell": [StrictInterval(Integral, 1, None, closed="left"), tuple, list],
        "cells_per_block": [StrictInterval(Integral, 1, None, closed="left"), tuple, list],
        "block_norm": [StrOptions(set(_BLOCK_NORMS))],
        "transform_sqrt": ["boolean"],
    }

    def _validate_param_rules(self):
        for name in ("size", "pixels_per_cell", "cells_per_block"):
            value = getattr(self, name)
            if not is_int(value) and not (len(value) == 2 and all(is_int(v) and v >= 1 for v in value)):
                raise invalid_parameter(self, name, "a positive integer or a pair of positive integers")
        (rows, cols), (pr, pc), (br, bc) = (_pair(self.size), _pair(self.pixels_per_cell),
                                            _pair(self.cells_per_block))
        if rows // pr < br or cols // pc < bc:
            raise invalid_parameter(
                self, "size", f"large enough for one block of cells_per_block={self.cells_per_block!r} cells of "
                              f"pixels_per_cell={self.pixels_per_cell!r}; it holds {rows // pr}x{cols // pc} cells, "
                              "fewer than one block (enlarge size or shrink the cells)")

    def _feature_names(self):
        return hog_feature_names(self.size, self.orientations, self.pixels_per_cell, self.cells_per_block)

    def _extract(self, image, mask):
        values, _ = hog_features(
            image, mask if self.use_mask else None, size=self.size, orientations=self.orientations,
            pixels_per_cell=self.pixels_per_cell, cells_per_block=self.cells_per_block,
            block_norm=self.block_norm, transform_sqrt=self.transform_sqrt, empty_mask=self.empty_mask,
        )
        return values
