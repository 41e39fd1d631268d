"""Tiled, multi-scale features: any image feature extractor run on tiles, pooled over them.

A mammogram of 1024 x 1024 pixels resized to a CNN's 224 px input shrinks a
median lesion (radius ~40 px) to ~9 px and erases calcifications, and global
pooling then averages mostly background. :class:`TiledFeatures` instead cuts
the image into tiles of a fixed size in pixels at one or more scales, runs an
inner feature extractor (a :class:`~featurepipe.cnn.CNNFeatures` at its native
input size, or a handcrafted family) on every tile, and pools the tile
features element-wise (max, mean, or both), concatenating the scales.

Functional core: :func:`tile_starts` / :func:`tile_boxes` (where the tiles
are), :func:`cut_tiles` (the tiles of one image, with their mask), and
:func:`rescale` (one scale of the image). :class:`TiledFeatures` adds the
:class:`~featurepipe.base.FeatureExtractor` contract: stateless, cached per
sample (the key holds the inner extractor's parameters), clone and pickle.

Geometry (per axis of length ``L`` at a scale, tile side ``T``)
-----------------------------------------------------------------
* The stride is ``S = max(1, round(T * (1 - overlap)))``; tiles start at
  ``0, S, 2S, …`` and the last one is moved back to end exactly at the image
  border, so every tile is ``T`` pixels long, the tiles cover the image and
  none extends past it (the last two overlap more when ``L - T`` is not a
  multiple of ``S``): ``n = ceil((L - T) / S) + 1`` tiles, starting at
  ``min(i * S, L - T)``. With overlap ``o`` any object up to ``o * T``
  pixels across lies entirely inside some tile.
* An image shorter than ``T`` along an axis gives one tile along it:
  ``undersized="pad"`` (default) pads it with zeros at the bottom / right to
  ``T`` pixels (the mask with ``False``), so every tile has the same size and
  the same pixel scale (zero is the background of mammograms and ultrasound
  in featurepipe's ``[0, 1]`` convention); ``"keep"`` passes the shorter tile
  as it is (a CNN then resizes it to its input like any image).
* Scale ``s`` resizes the whole image (and mask) to ``round(H * s) x round(W * s)``
  first (area interpolation when shrinking, bilinear when enlarging, the
  mask nearest-neighbour), so at scale 0.5 a tile covers 2T x 2T pixels of the
  input.

Masks and background
--------------------
Tiles carry their part of the sample's mask, for inner extractors that read
masks (e.g. texture inside the breast region). ``min_foreground`` keeps only
the tiles whose mask covers at least that fraction of the tile (a sample
without a mask counts as fully covered): with the breast region as mask
(:class:`~featurepipe.preprocessing.OtsuROI` ``output="mask"``), background
tiles are neither computed nor pooled. When no tile of a scale reaches it,
the tile with the largest coverage (the first, on ties) is used, so every
sample and scale has at least one tile.

Cost
----
The tiles of several images are handed to the inner extractor in one call
(``batch_size`` tiles at least, whole images at a time), so a CNN runs them
in full batches; the inner extractor's own cache is not used (tiles are
never seen twice), only this extractor's per-sample cache.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real

import numpy as np
from sklearn.base import clone
from sklearn.utils._param_validation import StrOptions

from ._validation import StrictInterval, invalid_parameter, is_int_or_pair, is_real
from .base import FeatureExtractor, describe_sample, is_stateless
from .io import ImageReadError
from .preprocessing import resize_image
from .sample import Sample, derive_key

__all__ = ["POOLINGS", "TiledFeatures", "cut_tiles", "rescale", "tile_boxes", "tile_starts"]

#: Element-wise poolings of tile features.
POOLINGS = ("max", "mean")
_UNDERSIZED = ("pad", "keep")


# ----------------------------------------------------------------------------- functional core
def tile_starts(length, tile, stride):
    """Start offsets of the tiles along one axis of ``length`` pixels (see the module docstring).

    Parameters
    ----------
    length, tile, stride : int
        Axis length, tile side and stride in pixels (all >= 1).

    Returns
    -------
    list of int
        ``[0]`` when ``length <= tile``; otherwise ``min(i * stride, length -
        tile)`` for ``i = 0 … ceil((length - tile) / stride)``.

    Examples
    --------
    >>> tile_starts(10, 4, 2), tile_starts(11, 4, 2), tile_starts(3, 4, 2)
    ([0, 2, 4, 6], [0, 2, 4, 6, 7], [0])
    """
    length, tile, stride = int(length), int(tile), int(stride)
    if length <= tile:
        return [0]
    n = -(-(length - tile) // stride) + 1  # ceil without floats
    return [min(i * stride, length - tile) for i in range(n)]


def _stride(tile, overlap):
    return max(1, int(round(tile * (1.0 - overlap))))


def tile_boxes(shape, tile, overlap):
    """Tile boxes ``(row0, row1, col0, col1)`` (end-exclusive, inside the image) in raster order.

    Parameters
    ----------
    shape : (int, int)
        Image ``(height, width)``.
    tile : int or (int, int)
        Tile side, or ``(height, width)``, in pixels.
    overlap : float in [0, 1)
        Fraction of a tile shared with its neighbour; the stride is
        ``max(1, round(tile * (1 - overlap)))``.

    Returns
    -------
    list of tuple
        A box shorter than ``tile`` only along an axis shorter than ``tile``.

    Examples
    --------
    >>> tile_boxes((6, 10), 4, 0.5)
    [(0, 4, 0, 4), (0, 4, 2, 6), (0, 4, 4, 8), (0, 4, 6, 10), (2, 6, 0, 4), (2, 6, 2, 6), (2, 6, 4, 8), (2, 6, 6, 10)]
    """
    tile_h, tile_w = (tile, tile) if np.ndim(tile) == 0 else tile
    height, width = int(shape[0]), int(shape[1])
    rows = tile_starts(height, tile_h, _stride(tile_h, overlap))
    cols = tile_starts(width, tile_w, _stride(tile_w, overlap))
    return [(r, min(r + tile_h, height), c, min(c + tile_w, width)) for r in rows for c in cols]


def _pad_to(array, height, width):
    pad_h, pad_w = height - array.shape[0], width - array.shape[1]
    if pad_h <= 0 and pad_w <= 0:
        return array
    widths = [(0, max(pad_h, 0)), (0, max(pad_w, 0))] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths)  # zeros; False for a bool mask


def cut_tiles(image, mask, tile, overlap, undersized="pad"):
    """The tiles of one image: ``[(tile_image, tile_mask or None, box), …]`` in raster order.

    ``box`` is the tile's ``(row0, row1, col0, col1)`` in ``image``
    (:func:`tile_boxes`). With ``undersized="pad"`` a tile shorter than
    ``tile`` (only along an image axis shorter than it) is zero-padded at the
    bottom / right to the full tile size (mask padded with ``False``); with
    ``"keep"`` it stays shorter. Tiles are views of ``image`` unless padded.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.arange(30, dtype=np.float32).reshape(5, 6) / 30
    >>> tiles = cut_tiles(image, None, 4, 0.0)
    >>> [box for _, _, box in tiles]
    [(0, 4, 0, 4), (0, 4, 2, 6), (1, 5, 0, 4), (1, 5, 2, 6)]
    >>> bool(np.array_equal(tiles[3][0], image[1:5, 2:6]))
    True
    >>> [t.shape for t, _, _ in cut_tiles(image[:3], None, 4, 0.0)]  # 3 rows < 4: padded to 4
    [(4, 4), (4, 4)]
    """
    if undersized not in _UNDERSIZED:
        raise ValueError(f"undersized must be one of {list(_UNDERSIZED)}; got {undersized!r}")
    tile_h, tile_w = (int(tile), int(tile)) if np.ndim(tile) == 0 else (int(tile[0]), int(tile[1]))
    out = []
    for box in tile_boxes(image.shape[:2], (tile_h, tile_w), overlap):
        r0, r1, c0, c1 = box
        part = image[r0:r1, c0:c1]
        part_mask = None if mask is None else mask[r0:r1, c0:c1]
        if undersized == "pad":
            part = _pad_to(part, tile_h, tile_w)
            part_mask = None if part_mask is None else _pad_to(part_mask, tile_h, tile_w)
        out.append((part, part_mask, box))
    return out


def rescale(image, mask, scale):
    """``(image, mask)`` resized by the factor ``scale`` (each side rounded, at least 1 pixel).

    Area interpolation when shrinking, bilinear when enlarging (as
    :class:`~featurepipe.cnn.CNNFeatures` resizes), the mask nearest
    neighbour; ``scale == 1`` returns the inputs unchanged.

    >>> import numpy as np
    >>> small, _ = rescale(np.ones((10, 7), np.float32), None, 0.5)
    >>> small.shape
    (5, 4)
    """
    if scale == 1:
        return image, mask
    height, width = image.shape[:2]
    size = (max(1, int(round(height * scale))), max(1, int(round(width * scale))))
    return resize_image(image, mask, size, interpolation="area" if scale < 1 else "linear")


def _scale_label(scale):
    """``s1`` for 1.0, ``s0p5`` for 0.5 (feature-name part)."""
    text = f"{float(scale):g}"
    return "s" + text.replace(".", "p").replace("-", "m")


class _TileSource:
    """Pixels of one tile, held in memory (a picklable sample source)."""

    __slots__ = ("image", "mask", "where")

    def __init__(self, image, mask, where):
        self.image = image
        self.mask = mask
        self.where = where

    def load(self):
        return self.image, self.mask

    def load_image(self):
        return self.image

    def describe(self):
        return self.where


# ----------------------------------------------------------------------------- the estimator
class TiledFeatures(FeatureExtractor):
    """Features of an inner extractor on tiles of each image at one or more scales, pooled over the tiles.

    Stateless and cached per sample: the cache key holds every parameter
    below that changes the output, the inner extractor's included (its own
    cache token, e.g. its backbone and weights). See the module docstring for
    the tile geometry, masks and cost.

    Parameters
    ----------
    extractor : FeatureExtractor
        A stateless featurepipe feature extractor run on every tile, e.g.
        ``CNNFeatures()`` (give it the tile size as input size, or leave its
        native size equal to ``tile``) or a handcrafted family. Its own
        ``cache`` setting is not used for tiles.
    tile : int or (int, int), default=224
        Tile side (or ``(height, width)``) in pixels of the image at each scale.
    overlap : float in [0, 1), default=0.5
        Fraction of a tile shared with its neighbour along each axis.
    scales : tuple of float, default=(1.0,)
        Resize factors of the image before tiling (1.0: its own pixels; 0.5:
        half the resolution, each tile covering twice the side). Distinct,
        each > 0; features of the scales are concatenated in this order.
    pooling : {"max", "mean"} or tuple of them, default="max"
        Element-wise pooling of the tile features of a scale; a tuple
        concatenates several (e.g. ``("max", "mean")``). NaN tile features
        (an inner ``empty_mask="nan"``) are ignored; a feature that is NaN on
        every tile stays NaN.
    min_foreground : float in [0, 1], default=0.0
        Keep only tiles whose mask covers at least this fraction of the tile
        (0: all tiles; samples without a mask count as fully covered).
    undersized : {"pad", "keep"}, default="pad"
        A tile shorter than ``tile`` (image shorter than a tile along an
        axis): zero-padded to the full size, or kept shorter.
    batch_size : int, default=256
        Tiles handed to the inner extractor per call (whole images at a
        time, so a single larger image is one call). Memory grows with it.
    cache : bool or path, default=True
        Per-sample cache of the pooled features (see :mod:`featurepipe.cache`).
    n_jobs : int, optional
        Threads that load and cut the images (default 1); the inner
        extractor parallelises as its own ``n_jobs`` says.

    Examples
    --------
    >>> import numpy as np
    >>> from featurepipe.features import FirstOrderFeatures
    >>> inner = FirstOrderFeatures(cache=False)
    >>> tiled = TiledFeatures(inner, tile=8, overlap=0.0, scales=(1.0, 0.5), cache=False)
    >>> image = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    >>> Z = tiled.transform([image])
    >>> Z.shape == (1, 2 * len(inner.get_feature_names_out()))
    True
    >>> str(tiled.get_feature_names_out()[0])
    'tiles_s1_max_firstorder_mean'
    >>> four = [image[:8, :8], image[:8, 8:], image[8:, :8], image[8:, 8:]]
    >>> bool(np.allclose(Z[0, :Z.shape[1] // 2], inner.transform(four).max(axis=0)))
    True
    """

    def __init__(self, extractor, tile=224, overlap=0.5, scales=(1.0,), pooling="max", min_foreground=0.0,
                 undersized="pad", batch_size=256, cache=True, n_jobs=None):
        self.extractor = extractor
        self.tile = tile
        self.overlap = overlap
        self.scales = scales
        self.pooling = pooling
        self.min_foreground = min_foreground
        self.undersized = undersized
        self.batch_size = batch_size
        self.cache = cache
        self.n_jobs = n_jobs

    _parameter_constraints = {
        **FeatureExtractor._parameter_constraints,
        "extractor": [FeatureExtractor],
        "tile": [StrictInterval(Integral, 1, None, closed="left"), tuple, list],
        "overlap": [StrictInterval(Real, 0, 1, closed="left")],
        "scales": [tuple, list],
        "pooling": [StrOptions(set(POOLINGS)), tuple, list],
        "min_foreground": [StrictInterval(Real, 0, 1, closed="both")],
        "undersized": [StrOptions(set(_UNDERSIZED))],
        "batch_size": [StrictInterval(Integral, 1, None, closed="left")],
    }

    def _validate_param_rules(self):
        if not is_int_or_pair(self.tile, 1):
            raise invalid_parameter(self, "tile", "an integer >= 1 or a (height, width) pair of such integers")
        scales = list(self.scales)
        if not scales or not all(is_real(s) and s > 0 for s in scales) or len(set(scales)) != len(scales):
            raise invalid_parameter(self, "scales", "a non-empty sequence of distinct numbers > 0 (resize factors)")
        poolings = self._poolings()
        if not poolings or not all(isinstance(p, str) and p in POOLINGS for p in poolings) or (
                len(set(poolings)) != len(poolings)):
            raise invalid_parameter(self, "pooling", f"one of {list(POOLINGS)} or a non-empty tuple of distinct ones")
        if not is_stateless(self.extractor):
            raise invalid_parameter(self, "extractor", "a stateless feature extractor (one that learns in fit, "
                                                       "such as a bag of visual words, cannot run on tiles)")
        self.extractor._validate_params()  # the inner extractor's own rules, named by its class

    def _poolings(self):
        return (self.pooling,) if isinstance(self.pooling, str) else tuple(self.pooling)

    def _tile_pair(self):
        return (int(self.tile), int(self.tile)) if np.ndim(self.tile) == 0 else (int(self.tile[0]),
                                                                                 int(self.tile[1]))

    def _reads_mask(self):
        return self.min_foreground > 0 or self.extractor._reads_mask()

    def _feature_names(self):
        inner = list(self.extractor.get_feature_names_out())
        return [f"tiles_{_scale_label(s)}_{p}_{name}" for s in self.scales for p in self._poolings()
                for name in inner]

    # -- extraction ------------------------------------------------------------------------
    def _tiles_of(self, sample):
        """``[(scale index, [tile samples])]`` of one sample (tiles filtered by ``min_foreground``)."""
        try:
            image, mask = sample.load() if self._reads_mask() else (sample.image, None)
            out = []
            for k, scale in enumerate(self.scales):
                scaled, scaled_mask = rescale(image, mask, scale)
                tiles = cut_tiles(scaled, scaled_mask, self._tile_pair(), float(self.overlap), self.undersized)
                tiles = self._kept(tiles)
                where = sample.path or "<array>"
                meta = {"path": sample.path} if sample.path else {}
                out.append((k, [Sample(derive_key(sample.key, f"tile(scale={float(scale)!r},box={box})"),
                                       _TileSource(part, part_mask, f"{where} tile {box} at scale {scale:g}"),
                                       meta=meta)
                                for part, part_mask, box in tiles]))
            return out
        except (ImageReadError, ValueError) as exc:
            if isinstance(exc, ImageReadError):
                raise
            raise ValueError(f"TiledFeatures on sample {describe_sample(sample)}: {exc}") from exc

    def _kept(self, tiles):
        if self.min_foreground <= 0 or tiles[0][1] is None:
            return tiles
        coverage = [float(np.mean(m)) for _, m, _ in tiles]
        kept = [t for t, c in zip(tiles, coverage) if c >= self.min_foreground]
        return kept or [tiles[int(np.argmax(coverage))]]

    def _threads(self):
        n_jobs = self.n_jobs
        if n_jobs is None or n_jobs in (0, 1):
            return 1
        return int(n_jobs) if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + int(n_jobs))

    def _pool(self, features):
        parts = []
        with warnings.catch_warnings():  # a feature NaN on every tile stays NaN, without a RuntimeWarning
            warnings.simplefilter("ignore", RuntimeWarning)
            for pooling in self._poolings():
                parts.append(np.nanmax(features, axis=0) if pooling == "max" else np.nanmean(features, axis=0))
        return np.concatenate(parts)

    def _extract_many(self, samples):
        inner = clone(self.extractor).set_params(cache=False)  # tiles are never seen twice
        n_inner = len(inner.get_feature_names_out())
        n_scales = len(self.scales)
        width = n_inner * len(self._poolings())
        out = np.empty((len(samples), n_scales * width), dtype=np.float64)
        pending = []  # (sample position, scale index, number of tiles)
        tiles = []

        def flush():
            if not tiles:
                return
            features = np.asarray(inner.transform(tiles), dtype=np.float64)
            start = 0
            for position, k, count in pending:
                out[position, k * width:(k + 1) * width] = self._pool(features[start:start + count])
                start += count
            pending.clear()
            tiles.clear()

        threads = self._threads()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            # Images are cut in order, ``threads`` at a time (memory holds a window of images, not the
            # data set); their tiles go to the inner extractor at least batch_size tiles per call.
            for window in range(0, len(samples), threads):
                chunk = samples[window:window + threads]
                cut = map(self._tiles_of, chunk) if threads == 1 else pool.map(self._tiles_of, chunk)
                for offset, per_scale in enumerate(cut):
                    for k, scale_tiles in per_scale:
                        pending.append((window + offset, k, len(scale_tiles)))
                        tiles.extend(scale_tiles)
                    if len(tiles) >= self.batch_size:
                        flush()
            flush()
        return out
