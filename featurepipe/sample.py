"""The sample: one image plus what travels with it.

A :class:`Sample` is small and immutable. It holds a *source* that produces
the pixels on demand (an in-memory array, a file, or a parent sample plus an
image step), a stable ``key`` that identifies those pixels, a ``label``, a
``group`` (patient or duplicate cluster) and free-form ``meta`` data (the
source ``path`` among them). Because pixels are produced lazily, a sequence
of samples costs almost no memory, and a feature extractor whose cache
already holds a sample's key never touches the pixels at all.

Keys
----
* file: hash of the file bytes, the channel ``mode`` and the mask file bytes;
* array: hash of the array's dtype, shape and bytes (image and mask);
* derived: hash of (parent key, step token), where the step token names the
  step class, its parameters and the featurepipe version;
* pair: hash of (``"pair"``, primary key, partner key).

Paired images
-------------
Some datasets give two images per labelled case, e.g. thermography's crop
of the hot spot and the crop of the contralateral (mirror) region of the
same patient. Such a case is *one* sample (one label, one group): the
primary crop is the sample's image, and the other crop is its
:attr:`Sample.partner`, a sample of its own (decoded lazily; its errors name
its file). :meth:`Sample.with_partner` makes the pair; its key covers both
images, so anything cached per pair changes when either file does. Image
steps (:meth:`Sample.derive`) apply to both images of a pair, so a pair
keeps two images that went through the same preprocessing; feature
extractors read the primary image, and
:class:`~featurepipe.pairs.PairAsymmetry` combines the features of both.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path
from types import MappingProxyType

import numpy as np

from .io import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    read_file_bytes,
    read_image,
    read_mask,
    to_float_image,
)

__all__ = ["PixelSource", "Sample", "as_samples", "derive_key", "hash_bytes", "decode_once", "DecodeCache",
           "DEFAULT_DECODE_CACHE_BYTES"]

#: Default byte budget of :func:`decode_once` (decoded float32 pixels and bool masks).
DEFAULT_DECODE_CACHE_BYTES = 1 << 30


def hash_bytes(*chunks):
    """Hex SHA-1 of the concatenated byte chunks (separated, so splits are unambiguous)."""
    h = hashlib.sha1()
    for chunk in chunks:
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        h.update(len(chunk).to_bytes(8, "little"))
        h.update(chunk)
    return h.hexdigest()


def array_digest(arr):
    """Hex digest of an array's dtype, shape and bytes: equal digests mean identical arrays."""
    arr = np.ascontiguousarray(arr)
    return hash_bytes(str(arr.dtype), repr(arr.shape), arr.tobytes())


def derive_key(parent_key, token):
    """Key of the output of a step with cache token ``token`` applied to ``parent_key``."""
    return hash_bytes(parent_key, token)[:32]


def _check_mask(mask, image, where):
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"{where}: the mask must be 2-D (H, W); got shape {mask.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(
            f"{where}: the mask has shape {mask.shape} but the image is {image.shape[:2]} (H, W); they must match"
        )
    return mask.astype(bool, copy=False)


class DecodeCache:
    """Decoded file pixels kept for one run, up to ``max_bytes`` (see :func:`decode_once`).

    Admission stops when the budget is full (nothing is evicted): a run reads
    its images in the same order several times (validation, duplicate
    search, each feature family, the plots), and with that order a
    least-recently-used cache smaller than the data would never hit, while
    this one keeps hitting on the images that fit.

    Attributes
    ----------
    max_bytes : int
    nbytes : int
        Bytes held now.
    """

    def __init__(self, max_bytes=DEFAULT_DECODE_CACHE_BYTES):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
            raise ValueError(f"max_bytes must be a non-negative integer (bytes); got {max_bytes!r}")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._arrays = {}
        self._lock = threading.Lock()

    def get_or_decode(self, key, decode):
        """A private copy of the array stored under ``key``, decoded by ``decode()`` on a miss."""
        array = self._arrays.get(key)
        if array is None:
            array = decode()
            with self._lock:
                if key not in self._arrays and self.nbytes + array.nbytes <= self.max_bytes:
                    self._arrays[key] = array
                    self.nbytes += array.nbytes
        # A copy: callers may write into their pixels without changing what later readers get.
        return array.copy()


_ACTIVE_DECODE_CACHE = None


@contextlib.contextmanager
def decode_once(max_bytes=DEFAULT_DECODE_CACHE_BYTES):
    """Decode every image and mask file at most once inside the ``with`` block (bounded memory).

    While active, file samples keep their decoded pixels in a
    :class:`DecodeCache` of ``max_bytes`` bytes and hand out copies, so the
    stages of one run (validation, duplicate search, feature families,
    plots) share one decode per file. The pixels are dropped when the block
    ends; a nested ``decode_once`` reuses the outer cache.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "a.png")
    >>> Image.fromarray(np.full((4, 5), 255, np.uint8)).save(path)
    >>> with decode_once(max_bytes=1000) as cache:
    ...     image = Sample.from_path(path).image
    ...     again = Sample.from_path(path).image
    ...     print(cache.nbytes, float(again.max()))
    80 1.0
    """
    global _ACTIVE_DECODE_CACHE
    if _ACTIVE_DECODE_CACHE is not None:
        yield _ACTIVE_DECODE_CACHE
        return
    cache = DecodeCache(max_bytes)
    _ACTIVE_DECODE_CACHE = cache
    try:
        yield cache
    finally:
        _ACTIVE_DECODE_CACHE = None


def _decoded(key, decode):
    cache = _ACTIVE_DECODE_CACHE
    return decode() if cache is None else cache.get_or_decode(key, decode)


class PixelSource:
    """Sample source holding decoded pixels in memory (arrays given by the user, tiles, computed images).

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
    mask : ndarray of bool, shape (H, W), or None
    where : str
        What error messages and :meth:`Sample.__repr__` name as the pixels' origin.
    """

    __slots__ = ("image", "mask", "where")

    def __init__(self, image, mask, where="<array>"):
        self.image = image
        self.mask = mask
        self.where = where

    def load(self):
        return self.image, self.mask

    def load_image(self):
        return self.image

    def describe(self):
        return self.where


class _FileSource:
    __slots__ = ("path", "mask_paths", "mode", "max_pixels", "max_bytes")

    def __init__(self, path, mask_paths, mode, max_pixels, max_bytes=DEFAULT_MAX_BYTES):
        self.path = path
        self.mask_paths = mask_paths
        self.mode = mode
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes

    def load_image(self):
        limits = {"max_pixels": self.max_pixels, "max_bytes": self.max_bytes}
        return _decoded(("image", os.fspath(self.path), self.mode, self.max_pixels, self.max_bytes),
                        lambda: read_image(self.path, self.mode, **limits))

    def load(self):
        limits = {"max_pixels": self.max_pixels, "max_bytes": self.max_bytes}
        image = self.load_image()
        mask = None
        for mask_path in self.mask_paths:
            part = _decoded(("mask", os.fspath(mask_path), self.max_pixels, self.max_bytes),
                            lambda mask_path=mask_path: read_mask(mask_path, **limits))
            if part.shape != image.shape[:2]:
                raise ImageReadError(
                    mask_path, f"mask is {part.shape[1]}x{part.shape[0]} but its image {self.path!r} "
                               f"is {image.shape[1]}x{image.shape[0]} (W x H)"
                )
            mask = part if mask is None else (mask | part)
        return image, mask

    def describe(self):
        return self.path


class _DerivedSource:
    __slots__ = ("parent", "func")

    def __init__(self, parent, func):
        self.parent = parent
        self.func = func

    def load(self):
        image, mask = self.parent.load()
        return self.func(image, mask)

    def describe(self):
        return self.parent._source.describe()


class Sample:
    """One image (produced on demand), its optional mask, key, label, group and metadata.

    Build samples with :meth:`from_path` or :meth:`from_array`; image steps
    build derived samples with :meth:`derive`. Samples are immutable and
    picklable; equality and hashing use ``(key, label, group)``.

    Attributes
    ----------
    key : str
        Identifies the pixels (see the module docstring).
    label : object or None
        Class label (``None`` when unknown, e.g. at prediction time).
    group : object or None
        Patient / duplicate-cluster id for grouped splitting.
    meta : mapping
        Read-only metadata; ``meta["path"]`` is the source file if any.
    partner : Sample or None
        The other image of a paired case (see "Paired images" in the module
        docstring; made by :meth:`with_partner`), ``None`` for a single image.
    """

    __slots__ = ("key", "label", "group", "_meta", "_source", "partner")

    def __init__(self, key, source, *, label=None, group=None, meta=None, partner=None):
        if partner is not None and (not isinstance(partner, Sample) or partner.partner is not None):
            raise TypeError(f"partner must be a Sample without a partner of its own; got {partner!r}")
        object.__setattr__(self, "key", str(key))
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "group", group)
        object.__setattr__(self, "_meta", dict(meta or {}))
        object.__setattr__(self, "_source", source)
        object.__setattr__(self, "partner", partner)

    def __setattr__(self, name, value):
        raise AttributeError("Sample is immutable; use Sample.replace(...) to make a modified copy")

    def __reduce__(self):
        return (_rebuild_sample, (self.key, self._source, self.label, self.group, self._meta, self.partner))

    def __eq__(self, other):
        if not isinstance(other, Sample):
            return NotImplemented
        return (self.key, self.label, self.group) == (other.key, other.label, other.group)

    def __hash__(self):
        return hash((self.key, self.label, self.group))

    def __repr__(self):
        where = self._source.describe()
        paired = "" if self.partner is None else f", partner={self.partner._source.describe()!r}"
        return f"Sample(key={self.key[:12]!r}, label={self.label!r}, group={self.group!r}, source={where!r}{paired})"

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_path(cls, path, mask=None, *, mode=None, label=None, group=None, meta=None,
                  max_pixels=DEFAULT_MAX_PIXELS, max_bytes=DEFAULT_MAX_BYTES):
        """A sample read from an image file (and optional mask file or files).

        Only the file bytes are read now (to compute the key); decoding happens
        when the pixels are needed, and decoding errors name the file.
        Several mask files are merged with logical OR (lesions of one image).
        ``max_pixels`` and ``max_bytes`` are the guards of
        :func:`~featurepipe.io.read_image`; a path that is not a regular file
        (FIFO, device) or is larger than ``max_bytes`` raises
        :class:`~featurepipe.io.ImageReadError` here, before anything is read.
        """
        path = os.fspath(path)
        if mode not in (None, "gray", "rgb"):
            raise ValueError(f"mode must be None, 'gray' or 'rgb'; got {mode!r}")
        if mask is None:
            mask_paths = ()
        elif isinstance(mask, (str, os.PathLike)):
            mask_paths = (os.fspath(mask),)
        else:
            mask_paths = tuple(os.fspath(m) for m in mask)
        chunks = [read_file_bytes(path, max_bytes), str(mode)]
        for mask_path in mask_paths:
            chunks.append(read_file_bytes(mask_path, max_bytes))
        key = hash_bytes(*chunks)[:32]
        info = {"path": path}
        if mask_paths:
            info["mask_paths"] = mask_paths
        info.update(meta or {})
        return cls(key, _FileSource(path, mask_paths, mode, max_pixels, max_bytes), label=label, group=group, meta=info)

    @classmethod
    def from_array(cls, image, mask=None, *, label=None, group=None, meta=None, name="image"):
        """A sample holding an in-memory image (converted with :func:`~featurepipe.io.to_float_image`).

        ``uint8``/``uint16``/``bool`` arrays are scaled to ``[0, 1]``; float
        arrays must already be in ``[0, 1]`` (the featurepipe convention): a
        float image in 0-255 is refused with a ``ValueError`` naming ``name``
        and the range, never silently taken as intensities up to 255.

        >>> import numpy as np
        >>> Sample.from_array(np.array([[0, 255]], np.uint8)).image.tolist()
        [[0.0, 1.0]]
        >>> Sample.from_array(np.array([[0.0, 255.0]]))
        Traceback (most recent call last):
        ...
        ValueError: image has values in [0, 255]; expected float intensities in [0, 1] (divide 8-bit values by 255, or pass the uint8 array)
        """
        image = to_float_image(image, name=name, unit_range=True)
        mask = _check_mask(mask, image, name)
        parts = [array_digest(image)]
        if mask is not None:
            parts.append(array_digest(mask))
        key = hash_bytes(*parts)[:32]
        image.setflags(write=False)
        if mask is not None:
            mask = mask.copy()
            mask.setflags(write=False)
        return cls(key, PixelSource(image, mask), label=label, group=group, meta=meta)

    def derive(self, token, func, *, partner_func=None):
        """The sample produced by ``func(image, mask) -> (image, mask)``, keyed by ``token``.

        ``func`` must be picklable and deterministic; ``token`` must change
        whenever ``func``'s output can change (step class and parameters).
        A paired sample's partner is derived by the same step: with
        ``partner_func`` when given (the same computation, e.g. with errors
        that name the partner's file), else with ``func``.
        """
        partner = self.partner
        if partner is not None:
            partner = partner.derive(token, func if partner_func is None else partner_func)
        return Sample(derive_key(self.key, token), _DerivedSource(self, func),
                      label=self.label, group=self.group, meta=self._meta, partner=partner)

    def with_partner(self, partner):
        """The paired sample: this image as the primary one, ``partner`` as the other (see "Paired images").

        The pair keeps this sample's label, group and metadata (plus
        ``meta["partner_path"]``, the partner's file if any); its key is a
        hash of both keys.

        >>> import numpy as np
        >>> hot = Sample.from_array(np.eye(3, dtype=np.uint8) * 255, label="sick", group="P1")
        >>> contra = Sample.from_array(np.zeros((3, 3), np.uint8))
        >>> pair = hot.with_partner(contra)
        >>> pair.label, pair.group, pair.partner is contra, pair.key not in (hot.key, contra.key)
        ('sick', 'P1', True, True)
        >>> float(pair.image.sum()), float(pair.partner.image.sum())
        (3.0, 0.0)
        """
        if not isinstance(partner, Sample):
            raise TypeError(f"partner must be a Sample; got {type(partner).__name__}")
        if self.partner is not None or partner.partner is not None:
            raise ValueError(f"sample {self.name!r}: a pair holds two single images; "
                             f"{'it' if self.partner is not None else 'the partner'} is already paired")
        meta = dict(self._meta)
        if partner.path is not None:
            meta["partner_path"] = partner.path
        return Sample(hash_bytes("pair", self.key, partner.key)[:32], self._source, label=self.label,
                      group=self.group, meta=meta, partner=partner)

    def replace(self, **changes):
        """A copy with ``label``, ``group`` or ``meta`` replaced (pixels, key and partner unchanged)."""
        unknown = set(changes) - {"label", "group", "meta"}
        if unknown:
            raise TypeError(f"Sample.replace() got unexpected fields {sorted(unknown)}")
        return Sample(self.key, self._source, label=changes.get("label", self.label),
                      group=changes.get("group", self.group), meta=changes.get("meta", self._meta),
                      partner=self.partner)

    # -- access ---------------------------------------------------------------------
    @property
    def meta(self):
        return MappingProxyType(self._meta)

    @property
    def path(self):
        """The source file path, or ``None`` for in-memory images."""
        return self._meta.get("path")

    @property
    def name(self):
        """A short human-readable name: the file name or the key prefix."""
        path = self.path
        return Path(path).name if path else self.key[:12]

    def load(self):
        """Produce ``(image, mask)``: float32 image (see :mod:`featurepipe.io`), bool mask or ``None``."""
        return self._source.load()

    @property
    def image(self):
        """The image alone (a file sample's masks are not decoded)."""
        load_image = getattr(self._source, "load_image", None)
        return self.load()[0] if load_image is None else load_image()

    @property
    def mask(self):
        return self.load()[1]


def _rebuild_sample(key, source, label, group, meta, partner=None):
    return Sample(key, source, label=label, group=group, meta=meta, partner=partner)


def as_samples(X, *, mode=None):
    """Convert what users pass as ``X`` into a 1-D object array of :class:`Sample`.

    Accepted: a sequence or 1-D object array of samples, file paths or 2-D/3-D
    image arrays (mixed is fine); a :class:`~featurepipe.dataset.Dataset`; a
    3-D array ``(n, H, W)`` or 4-D array ``(n, H, W, C)`` of images.
    ``mode`` applies to paths only.
    """
    if hasattr(X, "samples") and not isinstance(X, np.ndarray):
        X = X.samples
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim not in (3, 4):
            raise ValueError(
                "X as a numeric array must hold a stack of images, shape (n, H, W) or (n, H, W, C); "
                f"got shape {X.shape}. Pass a list of samples, paths or images instead."
            )
        items = list(X)
    elif isinstance(X, (str, os.PathLike, Sample)):
        raise TypeError(f"X must be a sequence of samples, paths or images, not a single {type(X).__name__}")
    else:
        try:
            items = list(X)
        except TypeError:
            raise TypeError(f"X must be a sequence of samples, paths or images; got {type(X).__name__}") from None
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        if isinstance(item, Sample):
            out[i] = item
        elif isinstance(item, (str, os.PathLike)):
            out[i] = Sample.from_path(item, mode=mode)
        elif isinstance(item, np.ndarray):
            out[i] = Sample.from_array(item, name=f"image (X[{i}])")
        else:
            raise TypeError(
                f"X[{i}] is a {type(item).__name__}; expected a Sample, a file path or an image array"
            )
    return out
