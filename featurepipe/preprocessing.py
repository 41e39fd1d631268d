"""Image → image preprocessing steps from the published pipelines.

Every step is an :class:`~featurepipe.base.ImageStep`: stateless, lazy
(``transform`` returns derived samples whose pixels are computed on
demand), and all parameters are plain values that ``GridSearchCV`` can
search. The maths lives in module-level functions (``median_filter``,
``clahe``, ``otsu_roi`` …) that take and return arrays in the
:mod:`featurepipe.io` convention; the classes add the scikit-learn contract.

Conventions
-----------
* Images are ``float32`` of shape ``(H, W)`` or ``(H, W, 3)``; masks are
  ``bool`` ``(H, W)`` or ``None``. Filters keep the mask; geometric steps
  (``Resize``, ``OtsuROI``, ``CropToMask``) carry it along.
* Steps do **not** quantise unless the underlying algorithm needs integer
  input: only :class:`CLAHE` does (OpenCV's CLAHE is histogram based and
  accepts only ``uint8``/``uint16``). Median, Gaussian and bilateral filters
  run on the float32 pixels, so a 16-bit mammogram keeps its precision.
* :class:`Standardize` produces values outside ``[0, 1]``; put it last
  among the image steps (CLAHE refuses such input with a clear error).
* An error raised while a step processes an image is a
  :class:`PreprocessingError` that names the step and the sample (its file
  path, or its key for in-memory images).
* The functions check their input first: an image that is not ``(H, W)``
  or ``(H, W, 3)`` (e.g. RGBA ``(H, W, 4)``: composite the alpha first, as
  :func:`featurepipe.io.to_float_image` does) or that holds NaN or infinite
  values is refused with a ``ValueError`` naming the function, never passed
  on to OpenCV/NumPy to fail obscurely or to return garbage.
"""

from __future__ import annotations

from numbers import Integral, Real

import cv2
import numpy as np
import scipy.ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.morphology import disk
from sklearn.utils._param_validation import Options, StrOptions

from ._validation import StrictInterval, invalid_parameter, is_int, is_int_or_pair
from .base import ImageStep, ImageStepError
from .io import check_image, convert_channels, to_gray

__all__ = [
    "PreprocessingError",
    "ToGray",
    "ToRGB",
    "Resize",
    "MedianFilter",
    "GaussianFilter",
    "BilateralFilter",
    "CLAHE",
    "Standardize",
    "OtsuROI",
    "CropToMask",
    "to_gray",
    "to_rgb",
    "resize_image",
    "cap_resolution",
    "median_filter",
    "gaussian_filter",
    "gaussian_kernel_size",
    "bilateral_filter",
    "clahe",
    "standardize",
    "otsu_roi",
    "mask_bbox",
    "mask_crop_box",
    "context_margin",
]

#: Standard deviations below this (in image intensity units) count as a constant image.
CONSTANT_STD = 1e-8

_INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    # INTER_NEAREST_EXACT samples pixel centres (like Pillow and scikit-image);
    # plain INTER_NEAREST is shifted by half a pixel.
    "nearest": cv2.INTER_NEAREST_EXACT,
}


#: Errors of preprocessing steps name the step and the sample (see :class:`featurepipe.base.ImageStepError`).
PreprocessingError = ImageStepError


# ----------------------------------------------------------------------------------------
# parameter constraints (scikit-learn's; see featurepipe._validation.ParamValidationMixin)
# ----------------------------------------------------------------------------------------
_POSITIVE_INT = StrictInterval(Integral, 1, None, closed="left")
_NON_NEGATIVE_INT = StrictInterval(Integral, 0, None, closed="left")
_POSITIVE_REAL = StrictInterval(Real, 0, None, closed="neither")
_FINITE_REAL = StrictInterval(Real, None, None, closed="neither")


def _as_pair(value):
    """A validated int-or-pair parameter as ``(height, width)``."""
    return (int(value), int(value)) if is_int(value) else (int(value[0]), int(value[1]))


def _validate_pair(step, name):
    if not is_int_or_pair(getattr(step, name), 1):
        raise invalid_parameter(step, name, "an integer >= 1 or a pair (height, width) of such integers")


def _validate_odd(step, name):
    value = getattr(step, name)
    if value is not None and value % 2 == 0:
        raise invalid_parameter(step, name, "an odd integer >= 1")


def _require_unit_range(image, what):
    lo, hi = float(image.min()), float(image.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{what} needs intensities in [0, 1] (the featurepipe convention); got values in "
            f"[{lo:.4g}, {hi:.4g}] (did a Standardize step run before it?)"
        )


# ----------------------------------------------------------------------------------------
# functional core
# ----------------------------------------------------------------------------------------
def to_rgb(image):
    """Gray ``(H, W)`` replicated to ``(H, W, 3)``; RGB images unchanged. Returns float32."""
    image = check_image(image, "to_rgb")
    return np.ascontiguousarray(convert_channels(np.asarray(image, dtype=np.float32), "rgb"))


def _resize_mask(mask, width, height):
    out = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    return out.astype(bool)


def resize_image(image, mask, size, keep_aspect=False, pad_value=0.0, interpolation="area"):
    """Resize to ``size = (height, width)`` pixels, stretching or letterboxing.

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
    mask : ndarray of bool, shape (H, W), or None
        Resized with (pixel-centre) nearest neighbour; padding is ``False``.
    size : (int, int)
        Output ``(height, width)``.
    keep_aspect : bool
        ``False`` stretches to ``size``. ``True`` scales by
        ``min(height / H, width / W)`` (each side rounded, at least 1 pixel)
        and centres the result on a canvas of ``pad_value`` (extra odd pixel
        at the bottom/right).
    pad_value : float
        Intensity of the padding (all channels).
    interpolation : {"area", "linear", "cubic", "nearest"}
        OpenCV ``INTER_AREA`` / ``INTER_LINEAR`` / ``INTER_CUBIC`` /
        ``INTER_NEAREST_EXACT``. Cubic output is clipped to the input's value
        range (cubic kernels overshoot at edges; clipping keeps ``[0, 1]``).

    Returns
    -------
    image : ndarray of float32, shape (height, width[, 3])
    mask : ndarray of bool, shape (height, width), or None
    """
    image = check_image(image, "resize_image")
    out_h, out_w = size
    in_h, in_w = image.shape[:2]
    flag = _INTERPOLATIONS[interpolation]
    if keep_aspect:
        scale = min(out_h / in_h, out_w / in_w)
        new_h = min(out_h, max(1, int(round(in_h * scale))))
        new_w = min(out_w, max(1, int(round(in_w * scale))))
    else:
        new_h, new_w = out_h, out_w
    src = np.ascontiguousarray(image, dtype=np.float32)
    resized = cv2.resize(src, (new_w, new_h), interpolation=flag)
    if resized.ndim == 2 and image.ndim == 3:  # OpenCV drops a channel axis only for 1 channel
        resized = resized[:, :, None]
    if interpolation == "cubic":
        resized = np.clip(resized, float(src.min()), float(src.max()))
    new_mask = None if mask is None else _resize_mask(mask, new_w, new_h)
    if not keep_aspect:
        return resized.astype(np.float32, copy=False), new_mask
    top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
    canvas = np.full((out_h, out_w) + image.shape[2:], pad_value, dtype=np.float32)
    canvas[top:top + new_h, left:left + new_w] = resized
    if new_mask is not None:
        full = np.zeros((out_h, out_w), dtype=bool)
        full[top:top + new_h, left:left + new_w] = new_mask
        new_mask = full
    return canvas, new_mask


def cap_resolution(gray, mask, max_side):
    """The working-resolution policy: shrink ``gray`` (and ``mask``) so the longer side is at most ``max_side``.

    Parameters
    ----------
    gray : ndarray, shape (H, W)
        Gray image.
    mask : ndarray of bool, shape (H, W), or None
    max_side : int or None
        Longest side in pixels after shrinking; ``None`` keeps the native
        resolution. Never enlarges: an image whose longer side is at most
        ``max_side`` comes back unchanged (the same objects).

    Returns
    -------
    gray : ndarray, shape (h, w)
        ``h = round(H * s)``, ``w = round(W * s)`` (at least 1) with
        ``s = max_side / max(H, W)``; shrunk with
        :func:`resize_image` (OpenCV ``INTER_AREA``,
        float32).
    mask : ndarray of bool, shape (h, w), or None
        Pixel-centre nearest neighbour (stays binary).

    >>> import numpy as np
    >>> gray, mask = cap_resolution(np.ones((1000, 500), np.float32), np.ones((1000, 500), bool), 256)
    >>> gray.shape, mask.shape, mask.dtype
    ((256, 128), (256, 128), dtype('bool'))
    >>> cap_resolution(np.ones((100, 50), np.float32), None, 256)[0].shape  # never enlarged
    (100, 50)
    """
    height, width = gray.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return gray, mask
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != (height, width):
            raise ValueError(f"mask has shape {mask.shape} but the image is {(height, width)} (H, W); they must match")
        mask = mask.astype(bool, copy=False)
    scale = max_side / max(height, width)
    size = (max(1, int(round(height * scale))), max(1, int(round(width * scale))))
    return resize_image(gray, mask, size, interpolation="area")


def median_filter(image, size):
    """Median over a ``size`` x ``size`` window, per channel, edges replicated.

    Exact on the float32 pixels (a median selects a value, so nothing is
    quantised), whatever the bit depth:

    * ``size`` 3 and 5: OpenCV's ``medianBlur`` on float32 (the only sizes it
      supports for float);
    * larger sizes, image exactly representable in 8 bit (every value is
      ``k / 255``, as for images read from 8-bit files): ``medianBlur`` on
      the ``uint8`` values, divided back — identical output, ~50x faster;
    * otherwise (16-bit or processed images): :func:`scipy.ndimage.median_filter`
      with ``mode="nearest"``.

    All three replicate the edge pixels, so results equal ``cv2.medianBlur``
    on the 8-bit image divided by 255 for every size.
    """
    image = check_image(image, "median_filter")
    image = np.ascontiguousarray(image, dtype=np.float32)
    if size == 1:
        return image.copy()
    if size in (3, 5):
        return cv2.medianBlur(image, size)
    levels = np.rint(image * np.float32(255))
    if levels.min() >= 0 and levels.max() <= 255:
        as_u8 = levels.astype(np.uint8)
        if np.array_equal(as_u8 / np.float32(255), image):
            return cv2.medianBlur(as_u8, size) / np.float32(255)
    footprint = (size, size) if image.ndim == 2 else (size, size, 1)
    return ndi.median_filter(image, size=footprint, mode="nearest")


def gaussian_kernel_size(sigma, size=None):
    """Odd kernel side used by :func:`gaussian_filter`: ``size`` or ``2 * int(4 * sigma + 0.5) + 1``."""
    if size is not None:
        return int(size)
    return 2 * int(4.0 * sigma + 0.5) + 1


def gaussian_filter(image, sigma, size=None):
    """Gaussian blur with standard deviation ``sigma`` pixels (OpenCV ``GaussianBlur``, float32).

    ``size=None`` truncates the kernel at 4 sigma (radius ``int(4 * sigma + 0.5)``),
    SciPy's default, so the result equals ``scipy.ndimage.gaussian_filter(...,
    mode="mirror")``. Borders are reflected without repeating the edge pixel
    (``BORDER_REFLECT_101``).
    """
    image = check_image(image, "gaussian_filter")
    k = gaussian_kernel_size(sigma, size)
    image = np.ascontiguousarray(image, dtype=np.float32)
    return cv2.GaussianBlur(image, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def bilateral_filter(image, diameter, sigma_color, sigma_space):
    """Edge-preserving bilateral filter (OpenCV ``bilateralFilter`` on float32).

    ``sigma_color`` is in image intensity units, i.e. fractions of the
    ``[0, 1]`` range: OpenCV's common 8-bit setting ``sigmaColor=75``
    corresponds to ``75 / 255``. ``sigma_space`` and ``diameter`` are pixels.
    Colour images use OpenCV's colour distance (sum of absolute channel
    differences).
    """
    image = check_image(image, "bilateral_filter")
    image = np.ascontiguousarray(image, dtype=np.float32)
    return cv2.bilateralFilter(image, int(diameter), float(sigma_color), float(sigma_space),
                               borderType=cv2.BORDER_REFLECT_101)


def clahe(image, clip_limit=2.0, tile_grid_size=(8, 8), bit_depth=8):
    """Contrast-limited adaptive histogram equalisation (OpenCV ``createCLAHE``).

    OpenCV's CLAHE only accepts ``uint8`` and ``uint16``, so the ``[0, 1]``
    image is quantised as ``rint(x * (2**bit_depth - 1))`` and the result is
    divided back. Quantising an image that came from an 8-bit (16-bit) file
    at ``bit_depth=8`` (16) is lossless, so the output equals OpenCV's on the
    original integers divided by 255 (65535).

    Why 8 bit by default: OpenCV computes the histogram with ``2**bit_depth``
    bins and the clip limit as ``max(1, clip_limit * tile_pixels / bins)``
    counts. With 65536 bins a typical tile (a few thousand pixels) gets a
    clip of 1 count whatever ``clip_limit`` is, so the values used in the
    literature (2, 3, 40 …) only mean what they say at 8 bit. Use
    ``bit_depth=16`` for 16-bit images with large tiles, knowing this.

    Colour images: CLAHE is applied to the lightness channel of CIE L*a*b*
    (OpenCV's 8-bit Lab conversion at ``bit_depth=8``; the float32 conversion
    with ``L`` scaled from [0, 100] to 16 bit at ``bit_depth=16``), the usual
    recipe that keeps the hues.

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3), values in [0, 1]
    clip_limit : float
        OpenCV ``clipLimit`` (relative to the mean bin count).
    tile_grid_size : (int, int)
        Number of tiles ``(rows, columns)``.
    bit_depth : {8, 16}

    Returns
    -------
    ndarray of float32, same shape, values in [0, 1]
    """
    image = check_image(image, "clahe")
    _require_unit_range(image, "CLAHE")
    rows, cols = tile_grid_size
    op = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(cols), int(rows)))
    top = float(2**bit_depth - 1)
    itype = np.uint8 if bit_depth == 8 else np.uint16
    image = np.ascontiguousarray(image, dtype=np.float32)
    if image.ndim == 2:
        q = np.rint(image.astype(np.float64) * top).astype(itype)
        return (op.apply(q).astype(np.float64) / top).astype(np.float32)
    if bit_depth == 8:
        q = np.rint(image.astype(np.float64) * top).astype(np.uint8)
        lab = cv2.cvtColor(q, cv2.COLOR_RGB2LAB)
        lab[:, :, 0] = op.apply(np.ascontiguousarray(lab[:, :, 0]))
        rgb = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
        return (rgb.astype(np.float64) / top).astype(np.float32)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2Lab)  # float32: L in [0, 100]
    lightness = np.rint(np.clip(lab[:, :, 0].astype(np.float64) / 100.0, 0.0, 1.0) * top).astype(np.uint16)
    lab[:, :, 0] = (op.apply(lightness).astype(np.float64) / top * 100.0).astype(np.float32)
    rgb = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def standardize(image, mask=None, within_mask=False, per_channel=False, on_constant="error"):
    """Zero-mean, unit-variance intensities: ``(x - mean) / std`` (population std, ``ddof=0``).

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
    mask : ndarray of bool, shape (H, W), or None
    within_mask : bool
        Compute mean and std over the pixels inside ``mask`` only (every
        pixel is still transformed). Requires a non-empty mask.
    per_channel : bool
        Separate statistics per colour channel (no effect on gray images).
    on_constant : {"error", "zero"}
        When the std is below :data:`CONSTANT_STD` the image carries no
        contrast: raise ``ValueError`` (default), or return ``x - mean``
        (all zeros for a constant image).

    Returns
    -------
    ndarray of float32, same shape (values no longer in [0, 1])
    """
    image = check_image(image, "standardize")
    x = np.asarray(image, dtype=np.float64)
    if within_mask:
        if mask is None:
            raise ValueError("within_mask=True but the sample has no mask")
        if not mask.any():
            raise ValueError("within_mask=True but the sample's mask is empty")
        values = x[mask]  # (n,) or (n, 3)
    else:
        values = x.reshape(-1, x.shape[2]) if x.ndim == 3 else x.ravel()
    if per_channel and x.ndim == 3:
        mean, std = values.mean(axis=0), values.std(axis=0)
    else:
        mean, std = values.mean(), values.std()
    std = np.asarray(std)
    if np.any(std < CONSTANT_STD):
        if on_constant == "error":
            where = " inside the mask" if within_mask else ""
            raise ValueError(
                f"the image is constant{where} (std {float(np.min(std)):.3g} < {CONSTANT_STD:g}), so it "
                "cannot be scaled to unit variance; use on_constant='zero' to map it to zeros"
            )
        std = np.where(std < CONSTANT_STD, 1.0, std)
    return ((x - mean) / std).astype(np.float32)


def mask_bbox(mask):
    """Bounding box ``(row0, row1, col0, col1)`` (end-exclusive) of the ``True`` pixels, or ``None``."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _expand_bbox(bbox, margin, shape):
    r0, r1, c0, c1 = bbox
    return max(0, r0 - margin), min(shape[0], r1 + margin), max(0, c0 - margin), min(shape[1], c1 + margin)


def context_margin(size, margin=0, context=0.0):
    """Pixels of context around an object ``size`` pixels across: ``max(margin, ceil(context * size))``.

    The one rule of lesion-size-adaptive crops (:class:`CropToMask`, and the
    MIAS patches of :func:`featurepipe.datasets.load_mias`): at least
    ``margin`` pixels, and at least ``context`` times the object's size.
    ``context * size`` is rounded to 9 decimals before rounding up, so that
    ``0.1 * 30`` is 3, not 4.

    >>> context_margin(10, margin=3, context=0.5), context_margin(7, context=0.5), context_margin(30, context=0.1)
    (5, 4, 3)
    """
    return max(int(margin), int(np.ceil(round(float(context) * int(size), 9))))


def _fit_axis(start, stop, length):
    """Shift ``[start, stop)`` inside ``[0, length)`` keeping its size; clip it when it is longer."""
    size = stop - start
    if size >= length:
        return 0, length
    start = min(max(start, 0), length - size)
    return start, start + size


def mask_crop_box(mask, margin=0, context=0.0, square=False):
    """Crop box ``(row0, row1, col0, col1)`` (end-exclusive) around a mask's ``True`` pixels, or ``None``.

    1. the bounding box of the mask, ``h x w`` pixels (:func:`mask_bbox`);
    2. with ``square``, its shorter side grown to ``max(h, w)`` around its
       centre (the odd extra pixel at the bottom / right);
    3. grown by ``context_margin(max(h, w), margin, context)`` pixels on
       every side (:func:`context_margin`);
    4. fitted to the image: clipped at the border (``square=False``, the
       original behaviour), or shifted inside it to stay square
       (``square=True``; clipped only along an axis shorter than the box).

    Parameters
    ----------
    mask : ndarray of bool, shape (H, W)
    margin : int >= 0
    context : float >= 0
    square : bool

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((40, 50), bool)
    >>> mask[10:14, 20:25] = True  # rows 10-13, columns 20-24
    >>> mask_crop_box(mask, margin=3), mask_crop_box(mask, context=0.5), mask_crop_box(mask, square=True)
    ((7, 17, 17, 28), (7, 17, 17, 28), (10, 15, 20, 25))
    """
    bbox = mask_bbox(mask)
    if bbox is None:
        return None
    r0, r1, c0, c1 = bbox
    size = max(r1 - r0, c1 - c0)
    if square:
        r0 -= (size - (r1 - r0)) // 2
        c0 -= (size - (c1 - c0)) // 2
        r1, c1 = r0 + size, c0 + size
    pad = context_margin(size, margin, context)
    r0, r1, c0, c1 = r0 - pad, r1 + pad, c0 - pad, c1 + pad
    height, width = mask.shape[:2]
    if square:
        (r0, r1), (c0, c1) = _fit_axis(r0, r1, height), _fit_axis(c0, c1, width)
        return r0, r1, c0, c1
    return max(0, r0), min(height, r1), max(0, c0), min(width, c1)


def otsu_roi(image, opening_radius=15, foreground="bright", fill_holes=True, nbins=256):
    """Region of interest: the largest Otsu-foreground component after a morphological opening.

    1. gray image (BT.601 for colour); Otsu threshold
       (:func:`skimage.filters.threshold_otsu`, ``nbins`` bins); foreground is
       ``gray > t`` (``foreground="bright"``), or ``-gray > t'`` with ``t'``
       the Otsu threshold of ``-gray`` (``"dark"``, the mirror image);
    2. opening with a disk of radius ``opening_radius`` pixels
       (:func:`skimage.morphology.disk`, via OpenCV; pixels outside the image
       count as foreground for the erosion, so regions touching the border are
       not eaten from that side) removes labels, markers and thin artefacts
       narrower than the disk;
    3. the largest 8-connected component is kept (ties: first in raster order);
       holes in it are filled when ``fill_holes``.

    Returns
    -------
    roi : ndarray of bool, shape (H, W)
    threshold : float

    Raises
    ------
    ValueError
        When no foreground pixel survives (constant image, or an opening radius
        larger than every object), saying which stage left nothing; or, naming
        ``otsu_roi``, for an image that is not ``(H, W)``/``(H, W, 3)`` or holds NaN/inf.
    """
    gray = to_gray(check_image(image, "otsu_roi"))
    # "dark" thresholds the negated image, so both polarities follow scikit-image's rule exactly
    # (foreground = strictly past the threshold, which is the centre of the last background bin).
    sign = 1.0 if foreground == "bright" else -1.0
    work = gray if sign > 0 else -gray
    threshold = sign * float(threshold_otsu(work, nbins=nbins))
    fg = work > sign * threshold
    n_fg = int(fg.sum())
    if n_fg == 0:
        raise ValueError(
            f"OtsuROI found no foreground: no pixel is {'above' if sign > 0 else 'below'} "
            f"the Otsu threshold {threshold:.4g} (intensities in [{gray.min():.4g}, {gray.max():.4g}]; "
            "a constant image has no foreground)"
        )
    fg = fg.astype(np.uint8)
    if opening_radius > 0:
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, disk(opening_radius).astype(np.uint8))
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n_labels <= 1:
        raise ValueError(
            f"OtsuROI found no foreground: the {n_fg} pixels past the Otsu threshold {threshold:.4g} "
            f"all vanish in the opening with opening_radius={opening_radius}; use a smaller radius"
        )
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    roi = labels == largest
    if fill_holes:
        roi = ndi.binary_fill_holes(roi)
    return roi, threshold


# ----------------------------------------------------------------------------------------
# estimator shells
# ----------------------------------------------------------------------------------------
class ToGray(ImageStep):
    """Convert RGB to gray with BT.601 weights (as :func:`featurepipe.io.read_image` does); gray passes through."""

    def _transform_image(self, image, mask):
        return to_gray(image), mask


class ToRGB(ImageStep):
    """Replicate a gray image to three channels (for RGB-only backbones); RGB passes through."""

    def _transform_image(self, image, mask):
        return to_rgb(image), mask


class Resize(ImageStep):
    """Resize to a fixed size, stretching or keeping the aspect ratio with centred padding.

    Parameters
    ----------
    size : int or (int, int)
        Output ``(height, width)`` in pixels; an int means a square.
    keep_aspect : bool, default=False
        ``True`` letterboxes: scale to fit inside ``size`` and pad, centred.
    pad_value : float, default=0.0
        Padding intensity when ``keep_aspect`` (all channels).
    interpolation : {"area", "linear", "cubic", "nearest"}, default="area"
        OpenCV interpolation; see :func:`resize_image`. Masks always use
        nearest neighbour.
    """

    def __init__(self, size=224, keep_aspect=False, pad_value=0.0, interpolation="area"):
        self.size = size
        self.keep_aspect = keep_aspect
        self.pad_value = pad_value
        self.interpolation = interpolation

    _parameter_constraints = {
        "size": [_POSITIVE_INT, tuple, list],
        "keep_aspect": ["boolean"],
        "pad_value": [_FINITE_REAL],
        "interpolation": [StrOptions(set(_INTERPOLATIONS))],
    }

    def _validate_param_rules(self):
        _validate_pair(self, "size")

    def _transform_image(self, image, mask):
        return resize_image(image, mask, _as_pair(self.size), bool(self.keep_aspect),
                            float(self.pad_value), self.interpolation)


class MedianFilter(ImageStep):
    """Median filter over a ``size`` x ``size`` window (exact on float32; see :func:`median_filter`).

    Parameters
    ----------
    size : odd int >= 1, default=3
        Window side in pixels (1 is the identity).
    """

    def __init__(self, size=3):
        self.size = size

    _parameter_constraints = {"size": [_POSITIVE_INT]}

    def _validate_param_rules(self):
        _validate_odd(self, "size")

    def _transform_image(self, image, mask):
        return median_filter(image, int(self.size)), mask


class GaussianFilter(ImageStep):
    """Gaussian blur (OpenCV on float32; see :func:`gaussian_filter`).

    Parameters
    ----------
    sigma : float > 0, default=1.0
        Standard deviation in pixels.
    size : odd int >= 1 or None, default=None
        Kernel side in pixels; ``None`` truncates at 4 sigma (SciPy's rule).
    """

    def __init__(self, sigma=1.0, size=None):
        self.sigma = sigma
        self.size = size

    _parameter_constraints = {"sigma": [_POSITIVE_REAL], "size": [_POSITIVE_INT, None]}

    def _validate_param_rules(self):
        _validate_odd(self, "size")

    def _transform_image(self, image, mask):
        return gaussian_filter(image, float(self.sigma), self.size), mask


class BilateralFilter(ImageStep):
    """Edge-preserving bilateral filter (OpenCV on float32; see :func:`bilateral_filter`).

    Parameters
    ----------
    diameter : int >= 1, default=9
        Neighbourhood diameter in pixels.
    sigma_color : float > 0, default=0.1
        Intensity scale in ``[0, 1]`` units (OpenCV's 8-bit ``75`` is ``75 / 255``).
    sigma_space : float > 0, default=75.0
        Spatial scale in pixels.
    """

    def __init__(self, diameter=9, sigma_color=0.1, sigma_space=75.0):
        self.diameter = diameter
        self.sigma_color = sigma_color
        self.sigma_space = sigma_space

    _parameter_constraints = {
        "diameter": [_POSITIVE_INT],
        "sigma_color": [_POSITIVE_REAL],
        "sigma_space": [_POSITIVE_REAL],
    }

    def _transform_image(self, image, mask):
        return bilateral_filter(image, self.diameter, self.sigma_color, self.sigma_space), mask


class CLAHE(ImageStep):
    """Contrast-limited adaptive histogram equalisation (OpenCV; see :func:`clahe` for quantisation).

    Parameters
    ----------
    clip_limit : float > 0, default=2.0
        OpenCV ``clipLimit``.
    tile_grid_size : int or (int, int), default=8
        Number of tiles ``(rows, columns)``; an int means a square grid.
    bit_depth : {8, 16}, default=8
        Quantisation before OpenCV's integer-only CLAHE.
    """

    def __init__(self, clip_limit=2.0, tile_grid_size=8, bit_depth=8):
        self.clip_limit = clip_limit
        self.tile_grid_size = tile_grid_size
        self.bit_depth = bit_depth

    _parameter_constraints = {
        "clip_limit": [_POSITIVE_REAL],
        "tile_grid_size": [_POSITIVE_INT, tuple, list],
        "bit_depth": [Options(Integral, {8, 16})],
    }

    def _validate_param_rules(self):
        _validate_pair(self, "tile_grid_size")

    def _transform_image(self, image, mask):
        tiles = _as_pair(self.tile_grid_size)
        return clahe(image, float(self.clip_limit), tiles, int(self.bit_depth)), mask


class Standardize(ImageStep):
    """Zero-mean, unit-variance intensities per image (see :func:`standardize`).

    Parameters
    ----------
    within_mask : bool, default=False
        Statistics from the pixels inside the sample's mask only.
    per_channel : bool, default=False
        Separate statistics per colour channel.
    on_constant : {"error", "zero"}, default="error"
        Policy for images with (near-)zero variance.
    """

    def __init__(self, within_mask=False, per_channel=False, on_constant="error"):
        self.within_mask = within_mask
        self.per_channel = per_channel
        self.on_constant = on_constant

    _parameter_constraints = {
        "within_mask": ["boolean"],
        "per_channel": ["boolean"],
        "on_constant": [StrOptions({"error", "zero"})],
    }

    def _transform_image(self, image, mask):
        return standardize(image, mask, bool(self.within_mask), bool(self.per_channel), self.on_constant), mask


class OtsuROI(ImageStep):
    """Otsu region of interest: drop labels and artefacts, keep the largest foreground region.

    See :func:`otsu_roi` for the algorithm.

    Parameters
    ----------
    opening_radius : int >= 0, default=15
        Radius in pixels of the disk used for the morphological opening
        (0: no opening). Objects narrower than the disk disappear. The
        default suits ~1000-pixel mammograms (on mini-MIAS it removes the
        film labels and the bright scanner band that joins them to the
        breast; 5 does not); scale it with the image resolution.
    margin : int >= 0, default=0
        Pixels added on every side of the region's bounding box (clipped to
        the image) when ``output="crop"``.
    output : {"crop", "mask"}, default="crop"
        ``"crop"``: crop image and mask to the box (the mask is carried
        along, cropped). ``"mask"``: keep the full image and *replace* the
        mask with the region (for mask-aware feature extractors).
    foreground : {"bright", "dark"}, default="bright"
        Which side of the threshold is the object (mammograms: bright).
    fill_holes : bool, default=True
        Fill holes inside the kept region.
    clear_outside : bool, default=False
        Set pixels outside the kept region to 0 (after cropping): removes
        labels that fall inside the box.
    nbins : int >= 2, default=256
        Histogram bins for Otsu's threshold.
    """

    def __init__(self, opening_radius=15, margin=0, output="crop", foreground="bright", fill_holes=True,
                 clear_outside=False, nbins=256):
        self.opening_radius = opening_radius
        self.margin = margin
        self.output = output
        self.foreground = foreground
        self.fill_holes = fill_holes
        self.clear_outside = clear_outside
        self.nbins = nbins

    _parameter_constraints = {
        "opening_radius": [_NON_NEGATIVE_INT],
        "margin": [_NON_NEGATIVE_INT],
        "output": [StrOptions({"crop", "mask"})],
        "foreground": [StrOptions({"bright", "dark"})],
        "fill_holes": ["boolean"],
        "clear_outside": ["boolean"],
        "nbins": [StrictInterval(Integral, 2, None, closed="left")],
    }

    def _transform_image(self, image, mask):
        roi, _ = otsu_roi(image, int(self.opening_radius), self.foreground, bool(self.fill_holes),
                          int(self.nbins))
        image = np.asarray(image, dtype=np.float32)
        if self.clear_outside:
            image = image * (roi[:, :, None] if image.ndim == 3 else roi)
        if self.output == "mask":
            return np.ascontiguousarray(image), roi
        r0, r1, c0, c1 = _expand_bbox(mask_bbox(roi), int(self.margin), roi.shape)
        new_mask = None if mask is None else np.ascontiguousarray(mask[r0:r1, c0:c1])
        return np.ascontiguousarray(image[r0:r1, c0:c1]), new_mask


class CropToMask(ImageStep):
    """Crop image and mask to the bounding box of the mask, plus context (fixed and/or lesion-relative).

    See :func:`mask_crop_box` for how the box is computed.

    Parameters
    ----------
    margin : int >= 0, default=0
        Pixels of context added on every side, at least.
    context : float >= 0, default=0.0
        Context relative to the lesion: on every side, at least ``context``
        times the longer side of the mask's bounding box (rounded up), e.g.
        ``0.5`` gives a crop twice the lesion's size, whatever its size in
        pixels. The margin used is the larger of ``margin`` and this
        (default ``0.0``: ``margin`` alone, as before ``context`` existed).
    square : bool, default=False
        Make the box square (side = the longer side of the mask's box, the
        shorter side grown evenly around its centre) before adding context,
        and keep it square at the image border by shifting it inside the
        image rather than clipping it (clipped only along an axis shorter
        than the box). CNNs resize crops to a square input without keeping
        the aspect ratio: a square crop is not distorted.

    A sample without a mask, or with an empty mask, raises
    :class:`PreprocessingError` naming the sample.

    Examples
    --------
    >>> import numpy as np
    >>> from featurepipe.sample import Sample
    >>> mask = np.zeros((40, 50), bool)
    >>> mask[10:14, 20:30] = True  # a 4 x 10 lesion
    >>> sample = Sample.from_array(np.zeros(mask.shape, np.float32), mask)
    >>> image, crop_mask = CropToMask(context=0.5).fit_transform([sample])[0].load()
    >>> image.shape, int(crop_mask.sum())  # 5 px (0.5 x 10) of context on every side
    ((14, 20), 40)
    >>> CropToMask(context=0.5, square=True).fit_transform([sample])[0].image.shape  # 10 x 10, then 5 px
    (20, 20)
    """

    def __init__(self, margin=0, context=0.0, square=False):
        self.margin = margin
        self.context = context
        self.square = square

    _parameter_constraints = {
        "margin": [_NON_NEGATIVE_INT],
        "context": [StrictInterval(Real, 0, None, closed="left")],
        "square": ["boolean"],
    }

    def _transform_image(self, image, mask):
        if mask is None:
            raise ValueError("the sample has no mask to crop to (give the dataset masks, or use OtsuROI)")
        box = mask_crop_box(mask, int(self.margin), float(self.context), bool(self.square))
        if box is None:
            raise ValueError("the sample's mask is empty (no True pixel), so there is no box to crop to")
        r0, r1, c0, c1 = box
        return np.ascontiguousarray(image[r0:r1, c0:c1]), np.ascontiguousarray(mask[r0:r1, c0:c1])
