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

16-bit colour PNG/TIFF files (RGB, RGBA, gray+alpha) and float32 colour
TIFF files, which Pillow reduces to 8 bits or cannot open, are decoded with
OpenCV (``IMREAD_UNCHANGED``) so that they keep their full precision.

Guards (checked before anything is decoded)
-------------------------------------------
* Only regular files are read (after following symbolic links): a FIFO, a
  device such as ``/dev/zero``, a socket or a directory is refused, and
  opening never blocks.
* ``max_bytes`` (default :data:`DEFAULT_MAX_BYTES`, 1 GiB) bounds the file
  size, checked before reading.
* ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`, 50 Mpixels) bounds the
  pixel count the header declares, checked before decoding, so a file that
  is small on disk but huge decoded (a 80 KB 9000x9000 PNG) is refused
  without allocating its pixels.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageReadError",
    "read_image",
    "read_mask",
    "to_float_image",
    "to_gray",
    "convert_channels",
    "check_image",
    "read_file_bytes",
    "open_regular_file",
    "IMAGE_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_BYTES",
]

#: File name extensions treated as images by folder scanners.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm", ".pnm", ".webp"}
)

#: Images whose header declares more pixels than this are refused before decoding
#: (decompression-bomb guard). 50 Mpixels is above the largest mammography formats
#: (about 30 Mpixels for digitised DDSM films) and bounds the float32 RGB result to 600 MB.
DEFAULT_MAX_PIXELS = 50_000_000

#: Files larger than this (bytes) are refused before they are read.
DEFAULT_MAX_BYTES = 1 << 30

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


def _check_float_pixels(arr, path):
    """Float pixels read from a file must be finite and in [0, 1] (the convention itself)."""
    if not np.all(np.isfinite(arr)):
        raise ImageReadError(path, "floating-point image contains NaN or infinite values")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ImageReadError(
            path,
            f"floating-point image with values in [{arr.min():g}, {arr.max():g}]; featurepipe "
            "expects float images in [0, 1]: rescale it or save it as 8/16-bit integers",
        )


def _composite_alpha(arr):
    """``(H, W, C)`` with the alpha as last channel (C = 2 or 4) -> colour times alpha, alpha dropped."""
    return arr[..., :-1] * arr[..., -1:]


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
        arr = np.asarray(im, dtype=np.float32)
        arr /= 255.0  # in place: a large image needs one float copy, not two
    elif pil_mode.startswith("I;16") or pil_mode == "I":
        arr = np.asarray(im).astype(np.float64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageReadError(path, f"32-bit integer pixels outside the 16-bit range [0, 65535] "
                                       f"(min {arr.min():g}, max {arr.max():g})")
        arr = (arr / 65535.0).astype(np.float32)
    elif pil_mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        _check_float_pixels(arr, path)
    else:
        raise ImageReadError(path, f"unsupported Pillow image mode {pil_mode!r}")

    if arr.ndim == 3:
        n_channels = arr.shape[2]
        if n_channels in (2, 4):  # composite onto black
            arr = _composite_alpha(arr)
        if arr.shape[2] == 1:
            arr = arr[..., 0]
        elif pil_mode in ("P", "PA") and np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(
            arr[..., 0], arr[..., 2]
        ):
            arr = arr[..., 0]  # a gray palette stores a grayscale image
    return np.ascontiguousarray(arr, dtype=np.float32)


def _opencv_to_array(data, path, gray):
    """Decode with OpenCV at the stored depth -> float32 in [0, 1], (H, W) or (H, W, 3).

    Used for what Pillow reduces to 8 bits (16-bit colour PNG/TIFF) or cannot open (float
    colour TIFF). ``gray``: the file stores gray + alpha (OpenCV returns it as BGRA).
    """
    import cv2  # OpenCV is a dependency; imported here because few files need it

    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ImageReadError(path, "corrupt image data (OpenCV could not decode it)")
    if arr.ndim == 3:
        order = {3: [2, 1, 0], 4: [2, 1, 0, 3]}.get(arr.shape[2])
        if order is None:
            raise ImageReadError(path, f"unsupported number of channels ({arr.shape[2]})")
        arr = arr[..., order]  # OpenCV stores BGR(A)
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / np.float32(255)
    elif arr.dtype == np.uint16:
        out = (arr.astype(np.float64) / 65535.0).astype(np.float32)
    elif arr.dtype in (np.float32, np.float64):
        out = arr.astype(np.float32)
        _check_float_pixels(out, path)
    else:
        raise ImageReadError(path, f"unsupported pixel type {arr.dtype} (use 8/16-bit integers or float in [0, 1])")
    if out.ndim == 3 and out.shape[2] == 4:
        out = _composite_alpha(out)
        if gray:
            out = out[..., 0]
    return np.ascontiguousarray(out, dtype=np.float32)


def convert_channels(arr, mode):
    """``arr`` in the channel layout ``mode`` asks for: the one conversion of every read and image step.

    ``"gray"``: ``(H, W, 3)`` RGB → float32 BT.601 luma ``0.299 R + 0.587 G +
    0.114 B`` (computed in float64), ``(H, W)`` unchanged; ``"rgb"``: ``(H, W)``
    replicated to ``(H, W, 3)``, RGB unchanged; ``None``: unchanged.
    """
    if mode is None:
        return arr
    if mode == "gray":
        if arr.ndim == 3:
            arr = (arr.astype(np.float64) @ _BT601).astype(np.float32)
        return arr
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return arr


def check_image(image, name):
    """``image`` as an array after checking shape and values; errors start with ``name``.

    Accepts real-valued ``(H, W)`` and ``(H, W, 3)`` arrays without NaN/inf
    (any range: image steps work on standardised images too).
    """
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        hint = ""
        if arr.ndim == 3 and arr.shape[2] == 4:
            hint = " (RGBA: composite the alpha first, e.g. with featurepipe.io.to_float_image)"
        raise ValueError(f"{name}: image must have shape (H, W) or (H, W, 3); got {arr.shape}{hint}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise ValueError(f"{name}: image must be a real-valued array; got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        n_bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if n_bad:
            raise ValueError(f"{name}: image contains {n_bad} NaN or infinite value{'s' if n_bad > 1 else ''}; "
                             "featurepipe images hold finite intensities")
    return arr


def to_gray(image, *, name="to_gray"):
    """Grayscale float32 ``(H, W)``: RGB ``(H, W, 3)`` → BT.601 luma (as ``read_image(path, "gray")``), gray unchanged.

    Parameters
    ----------
    image : array-like, shape (H, W) or (H, W, 3)
        Real-valued, finite, non-empty.
    name : str, default="to_gray"
        Start of error messages.

    Returns
    -------
    ndarray of float32, shape (H, W)

    Examples
    --------
    >>> import numpy as np
    >>> to_gray(np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]], np.float32)).tolist()
    [[0.29899999499320984, 0.7009999752044678]]
    """
    arr = check_image(image, name)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: image has zero area (shape {arr.shape})")
    return np.ascontiguousarray(convert_channels(arr, "gray"), dtype=np.float32)


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _tile_rawmode(im):
    """Pillow's raw mode of the first tile (e.g. ``"RGB;16B"``), or ``""``."""
    if not getattr(im, "tile", None):
        return ""
    args = im.tile[0][3]
    if isinstance(args, tuple):
        args = args[0] if args else ""
    return args if isinstance(args, str) else ""


def _check_size(path, width, height, max_pixels):
    if width == 0 or height == 0:
        raise ImageReadError(path, f"the image has zero area ({width}x{height} pixels)")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageReadError(
            path,
            f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels} "
            "(decompression-bomb guard, checked on the header before decoding; raise max_pixels "
            "if the image is genuine)",
        )


def _tiff_size(data, path):
    """(width, height) from a TIFF header Pillow cannot open (read by tifffile; nothing decoded)."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            return int(page.imagewidth), int(page.imagelength)
    except Exception as exc:  # tifffile raises many types for corrupt headers
        raise ImageReadError(path, f"corrupt TIFF header ({type(exc).__name__}: {exc})") from None


def _decode(data, path, max_pixels):
    """Decode file bytes -> float32 array (see the module docstring), checking the size first."""
    if len(data) == 0:
        raise ImageReadError(path, "the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                im = Image.open(io.BytesIO(data))
            except UnidentifiedImageError:
                if data[:4] not in _TIFF_MAGIC:
                    raise
                # e.g. float32 RGB TIFF written by OpenCV: Pillow has no mode for it
                _check_size(path, *_tiff_size(data, path), max_pixels)
                return _opencv_to_array(data, path, gray=False)
            width, height = im.size
            _check_size(path, width, height, max_pixels)
            rawmode = _tile_rawmode(im)
            if im.format in ("PNG", "TIFF") and im.mode in ("RGB", "RGBA", "LA") and ";16" in rawmode:
                # Pillow would keep only the high byte of each 16-bit colour sample
                return _opencv_to_array(data, path, gray=rawmode.startswith("LA"))
            im.seek(0)
            im.load()
            if im.format == "JPEG" or im.format == "MPO":
                im = ImageOps.exif_transpose(im)
            return _pil_to_array(im, path)
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


_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO, i.e. a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(path, st_mode):
    if stat.S_ISDIR(st_mode):
        return ImageReadError(path, "is a directory, not an image file")
    kind = next((what for test, what in _FILE_KINDS if test(st_mode)), "a special file")
    return ImageReadError(path, f"not a regular file ({kind}); only regular files are read")


def open_regular_file(path):
    """Open ``path`` for reading in binary mode, refusing anything but a regular file.

    Symbolic links are followed; what they point to must be a regular file. A
    FIFO, a device (``/dev/zero``), a socket or a directory is refused without
    blocking: the file is opened non-blocking and checked with ``fstat`` on the
    open descriptor, so it cannot be swapped between the check and the read.

    Returns
    -------
    file : binary file object (close it, e.g. with ``with``)
    size : int
        File size in bytes.

    Raises
    ------
    ImageReadError
        Naming the file: missing (or a dangling link), not a regular file, or
        not openable (permissions).
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageReadError(path, "no such file (a dangling symbolic link)") from None
        raise ImageReadError(path, "no such file") from None
    except OSError as exc:
        raise ImageReadError(path, f"the file cannot be opened ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ImageReadError(path, f"the file cannot be opened ({exc.strerror or exc})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # swapped since the stat above
        os.close(fd)
        raise _not_regular(path, st.st_mode)
    return os.fdopen(fd, "rb"), st.st_size


def read_file_bytes(path, max_bytes=DEFAULT_MAX_BYTES):
    """The bytes of a regular file of at most ``max_bytes`` bytes (see :func:`open_regular_file`).

    Raises
    ------
    ImageReadError
        As :func:`open_regular_file`, or when the file is larger than
        ``max_bytes`` (checked before reading; ``None``: no limit).
    """
    fh, size = open_regular_file(path)
    with fh:
        if max_bytes is not None and size > max_bytes:
            raise ImageReadError(path, f"the file has {size} bytes, more than max_bytes={max_bytes} "
                                       "(size guard; raise max_bytes if the file is genuine)")
        try:
            # read(n) allocates n bytes up front: ask for what fstat reported (+1 to see growth)
            data = fh.read(size + 1)
            if len(data) > size:  # the file grew while being read: take the rest, still bounded
                data += fh.read() if max_bytes is None else fh.read(max_bytes + 1 - len(data))
        except OSError as exc:
            raise ImageReadError(path, f"the file cannot be read ({exc.strerror or exc})") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageReadError(path, f"the file grew past max_bytes={max_bytes} while it was read")
    return data


def read_image(source, mode=None, *, max_pixels=DEFAULT_MAX_PIXELS, max_bytes=DEFAULT_MAX_BYTES, name=None):
    """Read an image file into featurepipe's array convention.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        File path, or the encoded file content (then ``name`` is used in errors).
    mode : {None, "gray", "rgb"}, default=None
        ``None`` keeps the stored channels (``(H, W)`` for single-channel
        files, ``(H, W, 3)`` otherwise); ``"gray"`` and ``"rgb"`` convert.
    max_pixels : int or None, default=50_000_000
        Refuse images whose header declares more pixels, before decoding
        (decompression-bomb guard); ``None``: no limit of ours.
    max_bytes : int or None, default=1 GiB
        Refuse files larger than this, before reading them; ``None``: no limit.
    name : str, optional
        Name to report in errors when ``source`` is bytes.

    Returns
    -------
    image : ndarray of float32, shape (H, W) or (H, W, 3), values in [0, 1]

    Raises
    ------
    ImageReadError
        Naming the file and the reason: missing, not a regular file (FIFO,
        device, directory), too large, empty, not an image, truncated/corrupt,
        zero-area, decompression-bomb sized, or float pixels outside [0, 1].
    """
    _check_mode(mode)
    if isinstance(source, (bytes, bytearray, memoryview)):
        path = name or "<bytes>"
        data = bytes(source)
    else:
        path = os.fspath(source)
        data = read_file_bytes(path, max_bytes)
    try:
        arr = _decode(data, path, max_pixels)
    except ImageReadError:
        raise
    except (OSError, ValueError) as exc:
        raise ImageReadError(path, f"corrupt image data ({exc})") from None
    return convert_channels(arr, mode)


def read_mask(source, *, max_pixels=DEFAULT_MAX_PIXELS, max_bytes=DEFAULT_MAX_BYTES, name=None):
    """Read a mask file: ``True`` where the (grayscale) value is non-zero.

    Returns
    -------
    mask : ndarray of bool, shape (H, W)
    """
    return read_image(source, mode="gray", max_pixels=max_pixels, max_bytes=max_bytes, name=name) > 0


def to_float_image(array, *, name="image", unit_range=False):
    """Convert an in-memory array to the featurepipe convention.

    ``uint8`` is divided by 255, ``uint16`` by 65535, ``bool`` becomes 0/1;
    floating-point arrays are kept (cast to float32) and must be finite.
    ``(H, W, 1)`` is squeezed, ``(H, W, 4)`` has its alpha composited onto black.

    Parameters
    ----------
    array : array-like, shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)
    name : str, default="image"
        Name used in error messages.
    unit_range : bool, default=False
        Also require floating-point pixels to lie in ``[0, 1]``, the
        convention for images (``True`` at the public edge,
        :meth:`featurepipe.sample.Sample.from_array`). ``False`` accepts any
        finite floats, e.g. an image after :class:`~featurepipe.preprocessing.Standardize`.

    Raises
    ------
    ValueError
        For other dtypes or shapes, empty arrays, NaN/inf values and (with
        ``unit_range``) floats outside ``[0, 1]``, naming ``name``.

    Examples
    --------
    >>> import numpy as np
    >>> to_float_image(np.array([[0, 51, 255]], np.uint8)).tolist()
    [[0.0, 0.20000000298023224, 1.0]]
    >>> to_float_image(np.array([[0.0, 127.5]]), unit_range=True)
    Traceback (most recent call last):
    ...
    ValueError: image has values in [0, 127.5]; expected float intensities in [0, 1] (divide 8-bit values by 255, or pass the uint8 array)
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
        if unit_range:
            lo, hi = float(out.min()), float(out.max())
            if lo < 0.0 or hi > 1.0:
                hint = ("divide 8-bit values by 255, or pass the uint8 array" if 2.0 < hi <= 255.0 and lo >= 0.0
                        else "rescale or clip it")
                raise ValueError(f"{name} has values in [{lo:g}, {hi:g}]; expected float intensities in [0, 1] ({hint})")
    else:
        raise ValueError(
            f"{name}: unsupported dtype {arr.dtype}; use uint8, uint16, bool or float (in [0, 1])"
        )
    if out.ndim == 3 and out.shape[2] == 4:
        out = out[..., :3] * out[..., 3:]
    return np.ascontiguousarray(out, dtype=np.float32)
