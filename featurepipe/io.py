"""Reading images and masks from files into one array convention.

Array convention (used everywhere in featurepipe)
-----------------------------------------------
* ``float32``; intensities of images read from files are in ``[0, 1]``
  (8-bit values are divided by 255, 16-bit values by 65535), so a 16-bit
  mammogram keeps its full precision.
* Grayscale images have shape ``(H, W)``; colour images ``(H, W, 3)`` in RGB
  order. There is never a channel axis of length 1 or 4.
* Masks are ``bool`` arrays of shape ``(H, W)``, ``True`` inside the region.

``mode`` chooses the channels explicitly: ``"gray"`` (ITU-R BT.601 luma, the
weights of Pillow and OpenCV), ``"rgb"`` (grayscale replicated to three
channels), or ``None`` to keep what the file stores. Transparency is
composited onto black (a pixel of alpha ``a`` keeps ``a`` times its value);
palette images are expanded through their palette (and stay
grayscale when every used palette entry is gray); CMYK, YCbCr, LAB and HSV
are converted to RGB; JPEG EXIF orientation is applied; only the first frame
of an animated GIF or multi-page TIFF is read.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageReadError",
    "read_image",
    "read_mask",
    "to_float_image",
    "IMAGE_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
]

#: File name extensions treated as images by folder scanners.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm", ".pnm", ".webp"}
)

#: Images with more pixels than this are refused (decompression-bomb guard).
DEFAULT_MAX_PIXELS = 100_000_000

# Truncated files must fail loudly, never decode into half-grey images.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float64)


class ImageReadError(ValueError):
    """An image or mask file could not be read; ``path`` and ``reason`` say why."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path!r}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


def _check_mode(mode):
    if mode not in (None, "gray", "rgb"):
        raise ValueError(f"mode must be None, 'gray' or 'rgb'; got {mode!r}")


def _pil_to_array(im, path):
    """Pillow image -> float32 array in [0, 1], (H, W) or (H, W, 3)."""
    pil_mode = im.mode
    if pil_mode == "1":
        return np.asarray(im, dtype=np.float32)
    if pil_mode in ("L", "P", "PA", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La"):
        if pil_mode in ("P", "PA"):
            im = im.convert("RGBA")
        elif pil_mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
            im = im.convert("RGB")
        elif pil_mode == "RGBa":
            im = im.convert("RGBA")
        elif pil_mode == "La":
            im = im.convert("LA")
        arr = np.asarray(im, dtype=np.float32) / 255.0
    elif pil_mode.startswith("I;16") or pil_mode == "I":
        arr = np.asarray(im).astype(np.float64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageReadError(path, f"32-bit integer pixels outside the 16-bit range [0, 65535] "
                                       f"(min {arr.min():g}, max {arr.max():g})")
        arr = (arr / 65535.0).astype(np.float32)
    elif pil_mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        if not np.all(np.isfinite(arr)):
            raise ImageReadError(path, "floating-point image contains NaN or infinite values")
        if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
            raise ImageReadError(
                path,
                f"floating-point image with values in [{arr.min():g}, {arr.max():g}]; featurepipe "
                "expects float images in [0, 1]: rescale it or save it as 8/16-bit integers",
            )
    else:
        raise ImageReadError(path, f"unsupported Pillow image mode {pil_mode!r}")

    if arr.ndim == 3:
        n_channels = arr.shape[2]
        if n_channels in (2, 4):  # composite onto black
            alpha = arr[..., -1:]
            arr = arr[..., :-1] * alpha
        if arr.shape[2] == 1:
            arr = arr[..., 0]
        elif pil_mode in ("P", "PA") and np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(
            arr[..., 0], arr[..., 2]
        ):
            arr = arr[..., 0]  # a gray palette stores a grayscale image
    return np.ascontiguousarray(arr, dtype=np.float32)


def _convert_channels(arr, mode):
    if mode is None:
        return arr
    if mode == "gray":
        if arr.ndim == 3:
            arr = (arr.astype(np.float64) @ _BT601).astype(np.float32)
        return arr
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return arr


def _open_checked(data, path, max_pixels):
    if len(data) == 0:
        raise ImageReadError(path, "the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            width, height = im.size
            if width == 0 or height == 0:
                raise ImageReadError(path, f"the image has zero area ({width}x{height} pixels)")
            if max_pixels is not None and width * height > max_pixels:
                raise ImageReadError(
                    path,
                    f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels} "
                    "(decompression-bomb guard; raise max_pixels if the image is genuine)",
                )
            im.seek(0)
            im.load()
            if im.format == "JPEG" or im.format == "MPO":
                im = ImageOps.exif_transpose(im)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image file Pillow recognises (unknown or corrupt header)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(path, f"decompression-bomb sized image ({exc})") from None
    except OSError as exc:
        raise ImageReadError(path, f"truncated or corrupt image data ({exc})") from None
    except (ValueError, SyntaxError, EOFError, IndexError, struct.error) as exc:
        raise ImageReadError(path, f"corrupt image data ({type(exc).__name__}: {exc})") from None
    return im


def _read_bytes(path):
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "no such file")
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageReadError(path, f"the file cannot be opened ({exc.strerror or exc})") from None


def read_image(source, mode=None, *, max_pixels=DEFAULT_MAX_PIXELS, name=None):
    """Read an image file into featurepipe's array convention.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        File path, or the encoded file content (then ``name`` is used in errors).
    mode : {None, "gray", "rgb"}, default=None
        ``None`` keeps the stored channels (``(H, W)`` for single-channel
        files, ``(H, W, 3)`` otherwise); ``"gray"`` and ``"rgb"`` convert.
    max_pixels : int or None, default=100_000_000
        Refuse images with more pixels (decompression-bomb guard).
    name : str, optional
        Name to report in errors when ``source`` is bytes.

    Returns
    -------
    image : ndarray of float32, shape (H, W) or (H, W, 3), values in [0, 1]

    Raises
    ------
    ImageReadError
        Naming the file and the reason: missing, empty, not an image,
        truncated/corrupt, zero-area or decompression-bomb sized.
    """
    _check_mode(mode)
    if isinstance(source, (bytes, bytearray, memoryview)):
        path = name or "<bytes>"
        data = bytes(source)
    else:
        path = os.fspath(source)
        data = _read_bytes(path)
    im = _open_checked(data, path, max_pixels)
    try:
        arr = _pil_to_array(im, path)
    except ImageReadError:
        raise
    except (OSError, ValueError) as exc:
        raise ImageReadError(path, f"corrupt image data ({exc})") from None
    return _convert_channels(arr, mode)


def read_mask(source, *, max_pixels=DEFAULT_MAX_PIXELS, name=None):
    """Read a mask file: ``True`` where the (grayscale) value is non-zero.

    Returns
    -------
    mask : ndarray of bool, shape (H, W)
    """
    return read_image(source, mode="gray", max_pixels=max_pixels, name=name) > 0


def to_float_image(array, *, name="image"):
    """Convert an in-memory array to the featurepipe convention.

    ``uint8`` is divided by 255, ``uint16`` by 65535, ``bool`` becomes 0/1;
    floating-point arrays are kept (cast to float32) and must be finite.
    ``(H, W, 1)`` is squeezed, ``(H, W, 4)`` has its alpha composited onto black.

    Raises
    ------
    ValueError
        For other dtypes or shapes, empty arrays and NaN/inf values, naming
        ``name``.
    """
    arr = np.asarray(array)
    if arr.dtype == object:
        raise ValueError(f"{name}: expected a numeric image array, got an object array")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(
            f"{name}: expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: the image has zero area (shape {arr.shape})")
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / 65535.0
    elif arr.dtype == bool:
        out = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32, copy=False)
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{name}: the image contains NaN or infinite values")
    else:
        raise ValueError(
            f"{name}: unsupported dtype {arr.dtype}; use uint8, uint16, bool or float (in [0, 1])"
        )
    if out.ndim == 3 and out.shape[2] == 4:
        out = out[..., :3] * out[..., 3:]
    return np.ascontiguousarray(out, dtype=np.float32)
