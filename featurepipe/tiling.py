"""Features of several regions of an image: tiles at several scales, lesion crops at several contexts.

:class:`TiledFeatures` (whole-image tasks) and :class:`MultiContextFeatures`
(lesion-region tasks) run any stateless image feature extractor on regions
of each image, batched across images; this docstring is about the tiles (see
:class:`MultiContextFeatures` for the crops).

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
(``batch_size`` tiles at least, whole images at a time), which then runs
them in its own batches (a CNN's ``batch_size``), so the per-call overhead
is paid once per group of images, not per tile; the inner extractor's own
cache is not used (tiles are never seen twice), only this extractor's
per-sample cache. Measured on 71 tiles of three mini-MIAS breasts
(``benchmarks/tiles_and_crops.py``, 2 shared CPU cores, EfficientNet-Lite0
on ONNX Runtime): cutting and pooling add about a tenth to the CNN's own
time on the same tiles, and the CNN's batch size matters more than the
tiling (batches of 1 were about twice as fast per tile as batches of 32
on that CPU).
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
from .preprocessing import mask_crop_box, resize_image
from .sample import PixelSource, Sample, derive_key

__all__ = ["POOLINGS", "MultiContextFeatures", "TiledFeatures", "cut_tiles", "rescale", "tile_boxes", "tile_starts"]

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


def _region_sample(parent, image, mask, box_text):
    """An in-memory sample of one region of ``parent`` (a tile or a crop), keyed by the parent and the region."""
    where = parent.path or "<array>"
    meta = {"path": parent.path} if parent.path else {}
    return Sample(derive_key(parent.key, box_text), PixelSource(image, mask, f"{where} {box_text}"), meta=meta)


def _thread_count(n_jobs):
    if n_jobs is None or n_jobs in (0, 1):
        return 1
    return int(n_jobs) if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + int(n_jobs))


class _RegionFeatures(FeatureExtractor):
    """An inner extractor run on several regions of each image, batched across images.

    Subclasses define ``_regions_of(image, mask, sample) -> [(block, [region samples])]`` (the
    blocks of one sample in output order), ``_combine(features) -> 1-D`` (one block's region
    features, ``(n_regions, n_inner)``, to the block's output), ``_block_width(n_inner)`` and
    ``_needs_mask()``; they have the parameters ``extractor``, ``batch_size`` and ``n_jobs``.
    """

    def _reads_mask(self):
        return self._needs_mask() or self.extractor._reads_mask()

    def _validate_extractor(self):
        if not is_stateless(self.extractor):
            raise invalid_parameter(self, "extractor", "a stateless feature extractor (one that learns in fit, "
                                                       "such as a bag of visual words, cannot run on regions "
                                                       "of an image)")
        self.extractor._validate_params()  # the inner extractor's own rules, named by its class

    def _regions(self, sample):
        try:
            image, mask = sample.load() if self._reads_mask() else (sample.image, None)
            return self._regions_of(image, mask, sample)
        except ImageReadError:
            raise
        except ValueError as exc:
            raise ValueError(f"{type(self).__name__} on sample {describe_sample(sample)}: {exc}") from exc

    def _extract_many(self, samples):
        inner = clone(self.extractor).set_params(cache=False)  # regions are never seen twice
        n_inner = len(inner.get_feature_names_out())
        width = self._block_width(n_inner)
        out = np.empty((len(samples), len(self._feature_names())), dtype=np.float64)
        pending = []  # (sample position, block index, number of regions)
        regions = []

        def flush():
            if not regions:
                return
            features = np.asarray(inner.transform(regions), dtype=np.float64)
            start = 0
            for position, block, count in pending:
                out[position, block * width:(block + 1) * width] = self._combine(features[start:start + count])
                start += count
            pending.clear()
            regions.clear()

        threads = _thread_count(self.n_jobs)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            # Images are cut in order, ``threads`` at a time (memory holds a window of images, not the
            # data set); their regions go to the inner extractor at least batch_size per call.
            for window in range(0, len(samples), threads):
                chunk = samples[window:window + threads]
                cut = map(self._regions, chunk) if threads == 1 else pool.map(self._regions, chunk)
                for offset, blocks in enumerate(cut):
                    for block, block_regions in blocks:
                        pending.append((window + offset, block, len(block_regions)))
                        regions.extend(block_regions)
                    if len(regions) >= self.batch_size:
                        flush()
            flush()
        return out


# ----------------------------------------------------------------------------- the estimator
class TiledFeatures(_RegionFeatures):
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
        self._validate_extractor()

    def _poolings(self):
        return (self.pooling,) if isinstance(self.pooling, str) else tuple(self.pooling)

    def _tile_pair(self):
        return (int(self.tile), int(self.tile)) if np.ndim(self.tile) == 0 else (int(self.tile[0]),
                                                                                 int(self.tile[1]))

    def _needs_mask(self):
        return self.min_foreground > 0

    def _feature_names(self):
        inner = list(self.extractor.get_feature_names_out())
        return [f"tiles_{_scale_label(s)}_{p}_{name}" for s in self.scales for p in self._poolings()
                for name in inner]

    def _block_width(self, n_inner):
        return n_inner * len(self._poolings())

    def _regions_of(self, image, mask, sample):
        out = []
        for k, scale in enumerate(self.scales):
            scaled, scaled_mask = rescale(image, mask, scale)
            tiles = self._kept(cut_tiles(scaled, scaled_mask, self._tile_pair(), float(self.overlap),
                                         self.undersized))
            out.append((k, [_region_sample(sample, part, part_mask, f"tile {box} at scale {float(scale)!r}")
                            for part, part_mask, box in tiles]))
        return out

    def _kept(self, tiles):
        if self.min_foreground <= 0 or tiles[0][1] is None:
            return tiles
        coverage = [float(np.mean(m)) for _, m, _ in tiles]
        kept = [t for t, c in zip(tiles, coverage) if c >= self.min_foreground]
        return kept or [tiles[int(np.argmax(coverage))]]

    def _combine(self, features):
        parts = []
        with warnings.catch_warnings():  # a feature NaN on every tile stays NaN, without a RuntimeWarning
            warnings.simplefilter("ignore", RuntimeWarning)
            for pooling in self._poolings():
                parts.append(np.nanmax(features, axis=0) if pooling == "max" else np.nanmean(features, axis=0))
        return np.concatenate(parts)


def _context_label(context):
    """``c0p25`` for 0.25, ``c1`` for 1.0 (feature-name part)."""
    return "c" + f"{float(context):g}".replace(".", "p")


class MultiContextFeatures(_RegionFeatures):
    """Features of an inner extractor on the lesion crop at several contexts, concatenated.

    For each context ``c`` the image is cropped to the box
    :class:`~featurepipe.preprocessing.CropToMask` ``(margin=margin,
    context=c, square=square)`` cuts (see
    :func:`~featurepipe.preprocessing.mask_crop_box`); the inner extractor
    runs on every crop (the crops of several images in one call) and the
    contexts' features are concatenated in order. The result equals a
    :class:`~sklearn.pipeline.FeatureUnion` of ``CropToMask`` + extractor
    pipelines, one per context, computed in one pass over the images and
    with readable feature names (``context_c1_cnn_efficientnet_lite0_0000``).

    For lesion-region tasks only: a sample without a mask, or with an empty
    one, is refused with an error naming it (see "Lesion-region tasks" in
    :mod:`featurepipe.recipes` for why normal images must not be given a
    stand-in region).

    Parameters
    ----------
    extractor : FeatureExtractor
        A stateless featurepipe feature extractor (e.g. ``CNNFeatures()``).
    contexts : tuple of float, default=(0.25, 1.0)
        Context on every side as a fraction of the lesion's longer side
        (distinct, each >= 0): 0.25 shows the lesion and its margin (whose
        shape BI-RADS reads: circumscribed, spiculated), 1.0 the lesion in
        surroundings three times its size.
    margin : int >= 0, default=0
        Minimum context in pixels at every context.
    square : bool, default=True
        Square crops (not distorted by a CNN's square input).
    batch_size : int, default=256
        Crops handed to the inner extractor per call (whole images at a time).
    cache : bool or path, default=True
    n_jobs : int, optional
        Threads that load and crop the images (default 1).

    Examples
    --------
    >>> import numpy as np
    >>> from featurepipe.features import FirstOrderFeatures
    >>> from featurepipe.sample import Sample
    >>> mask = np.zeros((40, 40), bool)
    >>> mask[10:20, 12:20] = True
    >>> image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    >>> inner = FirstOrderFeatures(use_mask=False, cache=False)
    >>> Z = MultiContextFeatures(inner, contexts=(0.0, 1.0), cache=False).transform([Sample.from_array(image, mask)])
    >>> tight, wide = image[10:20, 11:21], image[0:30, 1:31]  # 10 x 10, then 10 px more on every side
    >>> bool(np.allclose(Z[0], np.concatenate(inner.transform([tight, wide]))))
    True
    """

    def __init__(self, extractor, contexts=(0.25, 1.0), margin=0, square=True, batch_size=256, cache=True,
                 n_jobs=None):
        self.extractor = extractor
        self.contexts = contexts
        self.margin = margin
        self.square = square
        self.batch_size = batch_size
        self.cache = cache
        self.n_jobs = n_jobs

    _parameter_constraints = {
        **FeatureExtractor._parameter_constraints,
        "extractor": [FeatureExtractor],
        "contexts": [tuple, list],
        "margin": [StrictInterval(Integral, 0, None, closed="left")],
        "square": ["boolean"],
        "batch_size": [StrictInterval(Integral, 1, None, closed="left")],
    }

    def _validate_param_rules(self):
        contexts = list(self.contexts)
        if not contexts or not all(is_real(c) and c >= 0 for c in contexts) or len(set(contexts)) != len(contexts):
            raise invalid_parameter(self, "contexts", "a non-empty sequence of distinct numbers >= 0 (fractions of "
                                                      "the lesion's size)")
        self._validate_extractor()

    def _needs_mask(self):
        return True

    def _feature_names(self):
        inner = list(self.extractor.get_feature_names_out())
        return [f"context_{_context_label(c)}_{name}" for c in self.contexts for name in inner]

    def _block_width(self, n_inner):
        return n_inner

    def _regions_of(self, image, mask, sample):
        if mask is None:
            raise ValueError("the sample has no mask to crop to (MultiContextFeatures describes the annotated "
                             "region; give the dataset masks)")
        out = []
        for k, context in enumerate(self.contexts):
            box = mask_crop_box(mask, int(self.margin), float(context), bool(self.square))
            if box is None:
                raise ValueError("the sample's mask is empty (no True pixel), so there is no region to crop to")
            r0, r1, c0, c1 = box
            crop = np.ascontiguousarray(image[r0:r1, c0:c1])
            crop_mask = np.ascontiguousarray(mask[r0:r1, c0:c1])
            out.append((k, [_region_sample(sample, crop, crop_mask, f"crop {box} (context {float(context)!r})")]))
        return out

    def _combine(self, features):
        return features[0]
