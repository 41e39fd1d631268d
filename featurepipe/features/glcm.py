"""Gray-level co-occurrence matrices (GLCM) and Haralick texture features.

Functional core: :func:`cooccurrence_matrix` (the matrices, same layout and
values as ``skimage.feature.graycomatrix``, optionally inside a mask) and
:func:`glcm_features` (the features); the estimator :class:`GLCMFeatures`
adds the scikit-learn contract and the per-sample cache.

How it is computed (and why it is fast)
---------------------------------------
The image is quantised to ``levels`` gray levels (see
:func:`featurepipe.features.firstorder.quantize`). For each offset the
pairs of level indices are formed with array slicing (and the mask), encoded
as one integer ``i * levels + j`` per pair and counted with ``np.bincount``.
The features are then computed from the *non-zero* entries of that count
matrix only (a 256-level GLCM of a natural image is mostly empty), as a few
dot products and 1-D histograms; the symmetric matrix ``C + Cᵀ`` is never
built (see :func:`_matrix_features`). There is no per-feature pass over
dense ``levels × levels`` float arrays as in ``graycoprops``, which is why
the 256-level case is an order of magnitude faster than scikit-image.

Resolution policy: ``max_side`` (class default ``None``: the native
resolution; the family default of :data:`featurepipe.features.bank.FAMILIES`
is 512 px). A larger image and its mask are shrunk (area interpolation, mask
nearest neighbour, never enlarged) before quantisation, so ``distances`` are
pixels of that grid and the cost (linear in the pixel count) stops growing
past ``max_side``; see
:func:`featurepipe.preprocessing.cap_resolution`.

Offsets follow scikit-image: angle ``θ`` (radians) and distance ``d`` give
the offset ``(round(sin θ·d), round(cos θ·d))`` (rows, columns; half away
from zero), and the pair is (pixel, pixel + offset): ``P[i, j]`` counts
pixels of level ``i`` whose neighbour at the offset has level ``j``. So 0,
π/4, π/2, 3π/4 are the neighbours (0, 1), (1, 1), (1, 0), (1, -1), the
directions mahotas uses. ``offset_metric="chebyshev"`` instead scales the
direction so that the larger of the two offset components is ``d``, as
mahotas and pyradiomics do (``d = 2`` at π/4 is (2, 2) rather than
scikit-image's (1, 1)).

Definitional notes (``p`` is the normalised matrix, ``i`` its row and
``j`` its column level, 0-based; ``μ_i, σ_i`` / ``μ_j, σ_j`` the means and
standard deviations of the row / column marginals ``p_x`` / ``p_y``;
``p_{x+y}(k)`` and ``p_{x-y}(k)`` the distributions of ``i + j`` and
``|i - j|``; entropies ``H`` use ``log_base``):

==================== ===================================================== ====================================
feature              definition                                            reference equal to it
==================== ===================================================== ====================================
asm                  Σ p²                                                  graycoprops ASM; mahotas f1
energy               sqrt(asm)                                             graycoprops energy
contrast             Σ (i-j)² p                                            graycoprops contrast; mahotas f2
dissimilarity        Σ |i-j| p                                             graycoprops dissimilarity
homogeneity          Σ p / (1 + (i-j)²)                                    graycoprops homogeneity; mahotas f5
correlation          Σ (i-μ_i)(j-μ_j) p / (σ_i σ_j); 1 if σ_i or σ_j is 0  graycoprops correlation; mahotas f3
mean                 μ_i                                                   graycoprops mean
variance             Σ (i-μ_i)² p                                          graycoprops variance; mahotas f4 [1]
entropy              -Σ p log p                                            graycoprops entropy [2]; mahotas f9
sum_average          Σ k p_{x+y}(k), k = 0 … 2·levels-2                    mahotas f6 [3]
sum_variance         Σ (k - sum_average)² p_{x+y}(k)                       mahotas f7
sum_entropy          H(p_{x+y})                                            mahotas f8
difference_variance  Σ (k - dissimilarity)² p_{x-y}(k)                     mahotas f10 [4]
difference_entropy   H(p_{x-y})                                            mahotas f11
imc1                 (H(p) - H(p_x) - H(p_y)) / max(H(p_x), H(p_y))        mahotas f12
imc2                 sqrt(1 - exp(-2 (H(p_x) + H(p_y) - H(p))))            mahotas f13 [5]
==================== ===================================================== ====================================

These are Haralick's 13 features (f1 … f13 in mahotas' order) plus the
properties scikit-image's ``graycoprops`` offers (``std`` is
``sqrt(variance)`` and is left out). Differences to know about:

1. mahotas computes f4 from the column marginal; equal to ours for
   symmetric matrices, which are the only ones mahotas builds.
2. scikit-image's entropy uses the natural logarithm: it equals ours with
   ``log_base=np.e``; mahotas and pyradiomics use base 2 (our default).
3. pyradiomics numbers gray levels from 1, so its ``SumAverage`` is ours + 2
   and its ``JointAverage`` is ``mean`` + 1.
4. mahotas by default returns the variance of the *vector* ``p_{x-y}``
   (which depends on the matrix size, ``image.max() + 1``); ours is the
   variance of ``|i - j|`` (Haralick's definition, pyradiomics'
   ``DifferenceVariance``), equal to mahotas with
   ``use_x_minus_y_variance=True``.
5. The information measures of correlation use ``HXY1 = HXY2 = H(p_x) +
   H(p_y)``, an identity for any matrix; like mahotas and pyradiomics the
   entropies inside ``exp`` use ``log_base`` (bits by default), so imc2
   depends on ``log_base``. A constant region gives imc1 = imc2 = 0.

Haralick's 14th feature (maximal correlation coefficient) needs an
eigen-decomposition per matrix and is not computed.

Masks: a pair counts only when *both* of its pixels are inside the mask, so
pixels outside the mask never influence the features (as in pyradiomics).
"""

from __future__ import annotations

import functools
import numbers

import numpy as np

from sklearn.utils._param_validation import StrOptions

from .._validation import invalid_parameter
from ..base import FeatureExtractor
from ..preprocessing import cap_resolution
from .firstorder import (
    GRAY_LEVELS_CONSTRAINT,
    INTENSITY_RANGE_CONSTRAINT,
    LOG_BASE_CONSTRAINT,
    MAX_SIDE_CONSTRAINT,
    REGION_CONSTRAINTS,
    EmptyRegion,
    intensity_bounds,
    quantize,
    resolve_region,
    to_gray,
    validate_intensity_range,
)

__all__ = [
    "GLCM_FEATURES",
    "GLCMFeatures",
    "cooccurrence_matrix",
    "glcm_feature_names",
    "glcm_features",
    "glcm_offsets",
]

#: Names of the features :func:`glcm_features` computes, in output order.
GLCM_FEATURES = (
    "asm", "energy", "contrast", "dissimilarity", "homogeneity", "correlation", "mean", "variance",
    "entropy", "sum_average", "sum_variance", "sum_entropy", "difference_variance", "difference_entropy",
    "imc1", "imc2",
)
_AGGREGATES = ("mean_range", "mean", "none")
_OFFSET_METRICS = ("euclidean", "chebyshev")
_DEFAULT_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)


def _round_half_away(x):
    # C's round(), which scikit-image's graycomatrix uses (np.round rounds half to even)
    return int(np.sign(x) * np.floor(abs(x) + 0.5))


def glcm_offsets(distances, angles, offset_metric="euclidean"):
    """Pixel offsets ``(d_row, d_col)`` of each (distance, angle), shape ``(n_d, n_a, 2)``.

    ``"euclidean"``: ``(round(sin θ·d), round(cos θ·d))`` as scikit-image.
    ``"chebyshev"``: the direction scaled so that ``max(|d_row|, |d_col|) = d``,
    as mahotas and pyradiomics (only differs on diagonals).
    """
    out = np.zeros((len(distances), len(angles), 2), dtype=np.int64)
    for a, theta in enumerate(angles):
        s, c = np.sin(theta), np.cos(theta)
        scale = 1.0 if offset_metric == "euclidean" else 1.0 / max(abs(s), abs(c))
        for k, d in enumerate(distances):
            out[k, a] = _round_half_away(s * d * scale), _round_half_away(c * d * scale)
    return out


def _offset_codes(q, qi, dr, dc, mask):
    """Pairs (pixel, pixel + (dr, dc)) encoded as ``i * levels + j`` (1-D intp), both pixels in ``mask``.

    ``qi`` is ``q * levels`` as intp, computed once per image and shared by
    the offsets.
    """
    h, w = q.shape
    r0, r1 = max(0, -dr), min(h, h - dr)
    c0, c1 = max(0, -dc), min(w, w - dc)
    if r1 <= r0 or c1 <= c0:
        return np.empty(0, dtype=np.intp)
    a = qi[r0:r1, c0:c1]
    b = q[r0 + dr:r1 + dr, c0 + dc:c1 + dc]
    if mask is None:
        return np.add(a, b, dtype=np.intp).ravel()
    both = mask[r0:r1, c0:c1] & mask[r0 + dr:r1 + dr, c0 + dc:c1 + dc]
    code = a[both]
    code += b[both]
    return code


def _level_codes(q, levels):
    return np.multiply(q, levels, dtype=np.intp)


def _check_level_image(image, levels):
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be a 2-D array of gray levels; got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.integer):
        raise ValueError(f"image must hold integer gray levels in [0, levels - 1]; got dtype {image.dtype} "
                         "(use glcm_features for float images: it quantises them)")
    if image.size and (image.min() < 0 or image.max() >= levels):
        raise ValueError(f"gray levels must lie in [0, {levels - 1}] for levels={levels}; "
                         f"got values in [{image.min()}, {image.max()}]")
    return image


def cooccurrence_matrix(image, distances, angles, levels=256, symmetric=False, normed=False, mask=None,
                        offset_metric="euclidean"):
    """Gray-level co-occurrence matrices of an integer image, optionally inside a mask.

    Same layout and values as ``skimage.feature.graycomatrix`` (which has no
    mask), computed with ``np.bincount``.

    Parameters
    ----------
    image : ndarray of int, shape (H, W)
        Gray levels in ``[0, levels - 1]``.
    distances : sequence of int
        Pixel pair distances.
    angles : sequence of float
        Pixel pair angles in radians.
    levels : int, default=256
        Number of gray levels.
    symmetric : bool, default=False
        Count each pair in both orders (``P + P.T``).
    normed : bool, default=False
        Divide each matrix by its total (an all-zero matrix stays zero).
    mask : ndarray of bool, shape (H, W), optional
        Count only pairs whose two pixels are both inside the mask.
    offset_metric : {"euclidean", "chebyshev"}, default="euclidean"
        How distances map to diagonal offsets (see :func:`glcm_offsets`).

    Returns
    -------
    P : ndarray, shape (levels, levels, n_distances, n_angles)
        ``uint32`` counts, or ``float64`` when ``normed``.
    """
    image = _check_level_image(image, levels)
    offsets = glcm_offsets(distances, angles, offset_metric)
    n_d, n_a = offsets.shape[:2]
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != image.shape:
            raise ValueError(f"mask has shape {mask.shape} but the image is {image.shape}; they must match")
    ll = levels * levels
    qi = _level_codes(image, levels)
    counts = np.empty((n_d, n_a, levels, levels), dtype=np.int64)
    for d in range(n_d):
        for a in range(n_a):
            code = _offset_codes(image, qi, int(offsets[d, a, 0]), int(offsets[d, a, 1]), mask)
            counts[d, a] = np.bincount(code, minlength=ll).reshape(levels, levels)
    if symmetric:
        counts = counts + counts.transpose(0, 1, 3, 2)
    P = counts.transpose(2, 3, 0, 1)
    if normed:
        totals = P.sum(axis=(0, 1), keepdims=True).astype(np.float64)
        totals[totals == 0] = 1
        return np.ascontiguousarray(P / totals)
    return np.ascontiguousarray(P, dtype=np.uint32)


def _angle_label(theta):
    """``a45`` for π/4, ``a22p5`` for π/8, ``am45`` for -π/4 (degrees, to 0.01)."""
    deg = float(np.degrees(theta))
    text = str(int(round(deg))) if abs(deg - round(deg)) < 1e-6 else f"{deg:.2f}".rstrip("0")
    return "a" + text.replace(".", "p").replace("-", "m")


def _distance_label(d):
    return f"d{int(d)}"


def glcm_feature_names(distances=(1,), angles=_DEFAULT_ANGLES, aggregate="mean_range", prefix="glcm"):
    """Names of the values :func:`glcm_features` returns, in order.

    ``prefix_<feature>_d<distance>_a<degrees>`` per direction
    (``aggregate="none"``), or ``prefix_<feature>_d<distance>_mean`` /
    ``_range`` over the angles.
    """
    return list(_glcm_names(tuple(int(d) for d in distances), tuple(float(a) for a in angles), aggregate, prefix))


@functools.lru_cache(maxsize=32)
def _glcm_names(distances, angles, aggregate, prefix):
    suffixes = []
    for d in distances:
        if aggregate == "none":
            suffixes += [f"{_distance_label(d)}_{_angle_label(a)}" for a in angles]
        else:
            suffixes.append(f"{_distance_label(d)}_mean")
            if aggregate == "mean_range":
                suffixes.append(f"{_distance_label(d)}_range")
    return tuple(f"{prefix}_{f}_{s}" for f in GLCM_FEATURES for s in suffixes)


def _dot(a, b, c=None):
    """``sum(a * b)`` or ``sum(a * b * c)`` of 1-D float arrays, as a Python float.

    Short vectors use ``np.dot`` (lowest call overhead). Long ones use
    ``np.einsum``: OpenBLAS runs ``ddot`` on several threads above 10 000
    elements, which costs more than it saves at these sizes and stalls when
    the other cores are busy (e.g. under joblib).
    """
    if a.size <= 8192:
        return float(np.dot(a if c is None else a * c, b))
    if c is None:
        return float(np.einsum("i,i->", a, b))
    return float(np.einsum("i,i,i->", a, b, c))


def _entropy(dist, ln_base):
    """Shannon entropy of a 1-D distribution (empty bins add nothing)."""
    nz = dist[dist > 0]
    return -_dot(nz, np.log(nz)) / ln_base


def _matrix_features(counts, levels, symmetric, ln_base):
    """The features of one co-occurrence matrix, from its flat ``levels²`` (non-symmetrised) counts.

    Works on the non-zero entries only (a 256-level GLCM of a natural image
    is mostly empty) and never builds the symmetric matrix ``C + Cᵀ``: with
    ``p = C / n``, the symmetric matrix is ``(p + pᵀ) / 2``, so every feature
    that is a sum of ``f(i, j)`` weighted by the matrix is a sum over the
    entries of ``C`` with ``(f(i, j) + f(j, i)) / 2``; only ASM and entropy,
    which are not linear in the matrix, need the merged entries
    ``(p_ij + p_ji) / 2``, looked up in ``C`` directly. Sums are
    ``einsum`` products (see :func:`_dot`), so temporaries stay small.
    """
    nz = np.flatnonzero(counts)
    if nz.size == 0:
        return None
    c = counts[nz].astype(np.float64)
    total = c.sum()
    p = c / total
    i = nz // levels
    j = nz - i * levels
    fi = i.astype(np.float64)
    fj = j.astype(np.float64)
    diff = fi - fj
    absdiff = np.abs(diff)
    diff *= diff  # now (i - j)²: symmetric in (i, j), so the weights need no symmetrisation
    contrast = _dot(p, diff)
    dissimilarity = _dot(p, absdiff)
    diff += 1.0
    homogeneity = _dot(p, np.reciprocal(diff, out=diff))
    if symmetric:
        mu_i = mu_j = 0.5 * (_dot(p, fi) + _dot(p, fj))
        fi -= mu_i
        fj -= mu_j
        var_i = var_j = 0.5 * (_dot(p, fi, fi) + _dot(p, fj, fj))
        cov = _dot(p, fi, fj)
        # merged entries of (p + pᵀ) / 2: diagonal once; each off-diagonal value twice, taken from
        # the upper entry (adding its transposed count) or from a lower entry whose transpose is 0
        transposed = counts[j * levels + i]
        upper = i < j
        lone_lower = (i > j) & (transposed == 0)
        off = np.concatenate(((c[upper] + transposed[upper]) / (2.0 * total), c[lone_lower] / (2.0 * total)))
        diag = p[i == j]
        asm = 2.0 * _dot(off, off) + _dot(diag, diag)
        entropy = -(2.0 * _dot(off, np.log(off)) + _dot(diag, np.log(diag))) / ln_base
        p_x = np.bincount(i, weights=p, minlength=levels)
        p_x += np.bincount(j, weights=p, minlength=levels)
        p_x *= 0.5
        hx = hy = _entropy(p_x, ln_base)
    else:
        mu_i = _dot(p, fi)
        mu_j = _dot(p, fj)
        fi -= mu_i
        fj -= mu_j
        var_i = _dot(p, fi, fi)
        var_j = _dot(p, fj, fj)
        cov = _dot(p, fi, fj)
        asm = _dot(p, p)
        entropy = -_dot(p, np.log(p)) / ln_base
        hx = _entropy(np.bincount(i, weights=p, minlength=levels), ln_base)
        hy = _entropy(np.bincount(j, weights=p, minlength=levels), ln_base)
    sd_i, sd_j = np.sqrt(var_i), np.sqrt(var_j)
    # graycoprops' and mahotas' convention for a constant direction: correlation 1
    correlation = 1.0 if sd_i < 1e-15 or sd_j < 1e-15 else cov / (sd_i * sd_j)

    # the distributions of i + j and |i - j| are the same for C and Cᵀ
    n_sum = 2 * levels - 1
    p_sum = np.bincount(i + j, weights=p, minlength=n_sum)
    p_diff = np.bincount(np.abs(i - j), weights=p, minlength=levels)
    k_sum = np.arange(n_sum, dtype=np.float64)
    sum_average = _dot(p_sum, k_sum)
    k_sum -= sum_average
    sum_variance = _dot(p_sum, k_sum, k_sum)
    k_diff = np.arange(levels, dtype=np.float64) - dissimilarity
    difference_variance = _dot(p_diff, k_diff, k_diff)
    hmax = max(hx, hy)
    imc1 = (entropy - hx - hy) / hmax if hmax > 0 else 0.0
    # HX + HY - HXY >= 0 mathematically; clip float round-off before the square root
    imc2 = float(np.sqrt(max(0.0, 1.0 - np.exp(-2.0 * (hx + hy - entropy)))))
    return (asm, np.sqrt(asm), contrast, dissimilarity, homogeneity, correlation, mu_i, var_i, entropy,
            sum_average, sum_variance, _entropy(p_sum, ln_base), difference_variance,
            _entropy(p_diff, ln_base), imc1, imc2)


def glcm_features(image, mask=None, *, distances=(1,), angles=_DEFAULT_ANGLES, levels=64, symmetric=True,
                  aggregate="mean_range", log_base=2.0, intensity_range=(0.0, 1.0), offset_metric="euclidean",
                  max_side=None, empty_mask="error", prefix="glcm"):
    """GLCM / Haralick texture features of an image, inside an optional mask.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3)
        Float image (values in [0, 1] by the featurepipe convention); colour
        is converted to BT.601 gray. Quantised to ``levels`` levels as
        ``floor((x - lo) / (hi - lo) * levels)`` clipped to ``levels - 1``
        (for 8-bit images read by featurepipe and ``levels=256`` this gives
        back the original uint8 values exactly).
    mask : ndarray of bool, shape (H, W), optional
        Only pairs whose two pixels are both inside the mask are counted.
    distances : sequence of int, default=(1,)
        Pixel pair distances (positive integers).
    angles : sequence of float, default=(0, π/4, π/2, 3π/4)
        Pixel pair angles in radians (see the module docstring for the
        offset convention).
    levels : int, default=64
        Number of gray levels (2 … 65536).
    symmetric : bool, default=True
        Count each pair in both orders (``P + P.T``), as mahotas and
        pyradiomics always do.
    aggregate : {"mean_range", "mean", "none"}, default="mean_range"
        Per distance, the mean and range (max - min) of each feature over the
        angles (rotation-tolerant, Haralick's suggestion), only the mean, or
        every direction separately.
    log_base : float, default=2
        Base of the logarithms of the entropies.
    intensity_range : (float, float) or "region", default=(0.0, 1.0)
        Intensity range mapped onto the levels; ``"region"`` uses the min and
        max of the pixels inside the mask.
    offset_metric : {"euclidean", "chebyshev"}, default="euclidean"
        Diagonal offsets as scikit-image (``"euclidean"``) or as mahotas and
        pyradiomics (``"chebyshev"``); identical for distance 1.
    max_side : int, optional
        Longest side, in pixels, of the grid the features are computed on:
        a larger image (and its mask) is shrunk to it, never enlarged
        (see :func:`featurepipe.preprocessing.cap_resolution`);
        ``None`` (default): the native resolution.
        ``distances`` are in pixels of that grid.
    empty_mask : {"error", "nan", "image"}, default="error"
        Policy for an empty mask. A non-empty mask that holds no pair for
        some offset raises under ``"error"`` and gives NaN for that offset's
        features under ``"nan"`` and ``"image"``.
    prefix : str, default="glcm"
        Prefix of the feature names.

    Returns
    -------
    values : ndarray of float64, shape (n_features,)
    names : list of str
        See :func:`glcm_feature_names`, e.g. ``glcm_contrast_d1_mean``.

    Notes
    -----
    Every matrix is normalised to sum 1 before the features are computed
    (as ``graycoprops`` and mahotas do), so the features do not depend on
    the region's size.
    """
    names = glcm_feature_names(distances, angles, aggregate, prefix)
    gray, mask = cap_resolution(to_gray(image), mask, max_side)
    try:
        region = resolve_region(gray.shape, mask, empty_mask)
    except EmptyRegion:
        return np.full(len(names), np.nan), names
    lo, hi = intensity_bounds(gray if region is None else gray[region], intensity_range)
    q = quantize(gray, levels, lo, hi)
    offsets = glcm_offsets(distances, angles, offset_metric)
    n_d, n_a = offsets.shape[:2]
    qi = _level_codes(q, levels)
    ll = levels * levels
    ln_base = np.log(log_base)
    feats = np.full((n_d, n_a, len(GLCM_FEATURES)), np.nan)  # no pair for an offset: NaN, never zero
    # one matrix at a time: its buffers (levels² counts) are reused by the allocator for the next
    for d in range(n_d):
        for a in range(n_a):
            dr, dc = int(offsets[d, a, 0]), int(offsets[d, a, 1])
            code = _offset_codes(q, qi, dr, dc, region)
            if code.size == 0:
                if empty_mask == "error":
                    raise ValueError(
                        f"no pixel pair with both pixels inside the region at distance {distances[d]} and angle "
                        f"{angles[a]:.4g} rad (offset {(dr, dc)}); the region is too small or too thin for "
                        "this GLCM (empty_mask='nan' gives NaN for such offsets)")
                continue
            feats[d, a] = _matrix_features(np.bincount(code, minlength=ll), levels, symmetric, ln_base)
    if aggregate == "none":
        out = feats.transpose(2, 0, 1)  # (feature, distance, angle)
    else:
        mean = feats.mean(axis=1)  # (distance, feature)
        if aggregate == "mean":
            out = mean.T[:, :, None]
        else:
            rng = feats.max(axis=1) - feats.min(axis=1)
            out = np.stack([mean.T, rng.T], axis=2)
    return np.ascontiguousarray(out, dtype=np.float64).ravel(), names


class GLCMFeatures(FeatureExtractor):
    """GLCM / Haralick texture features of each image (inside its mask).

    Stateless and cached per sample. See :func:`glcm_features` for the
    parameters and the module docstring for the feature definitions and how
    they relate to scikit-image, mahotas and pyradiomics.

    Parameters
    ----------
    distances : tuple of int, default=(1,)
    angles : tuple of float, default=(0, π/4, π/2, 3π/4)
    levels : int, default=64
    symmetric : bool, default=True
    aggregate : {"mean_range", "mean", "none"}, default="mean_range"
    log_base : float, default=2
    intensity_range : (float, float) or "region", default=(0.0, 1.0)
    offset_metric : {"euclidean", "chebyshev"}, default="euclidean"
    max_side : int, optional
        Working resolution: longest side in pixels (larger images are shrunk
        with area interpolation, never enlarged); ``None``: native.
    use_mask : bool, default=True
        Count only pairs inside the sample's mask (when it has one).
    empty_mask : {"error", "nan", "image"}, default="error"
    cache : bool or path, default=True
    n_jobs : int, optional

    Examples
    --------
    >>> import numpy as np
    >>> from featurepipe.features import GLCMFeatures
    >>> ext = GLCMFeatures(levels=8, cache=False)
    >>> ext.get_feature_names_out()[:2].tolist()
    ['glcm_asm_d1_mean', 'glcm_asm_d1_range']
    """

    def __init__(self, distances=(1,), angles=_DEFAULT_ANGLES, levels=64, symmetric=True, aggregate="mean_range",
                 log_base=2.0, intensity_range=(0.0, 1.0), offset_metric="euclidean", max_side=None,
                 use_mask=True, empty_mask="error", cache=True, n_jobs=None):
        self.distances = distances
        self.angles = angles
        self.levels = levels
        self.symmetric = symmetric
        self.aggregate = aggregate
        self.log_base = log_base
        self.intensity_range = intensity_range
        self.offset_metric = offset_metric
        self.max_side = max_side
        self.use_mask = use_mask
        self.empty_mask = empty_mask
        self.cache = cache
        self.n_jobs = n_jobs

    _parameter_constraints = {
        **REGION_CONSTRAINTS,
        "distances": [tuple, list, np.ndarray],
        "angles": [tuple, list, np.ndarray],
        "levels": GRAY_LEVELS_CONSTRAINT,
        "symmetric": ["boolean"],
        "aggregate": [StrOptions(set(_AGGREGATES))],
        "log_base": LOG_BASE_CONSTRAINT,
        "intensity_range": INTENSITY_RANGE_CONSTRAINT,
        "offset_metric": [StrOptions(set(_OFFSET_METRICS))],
        "max_side": MAX_SIDE_CONSTRAINT,
    }

    def _validate_param_rules(self):
        try:
            distances = list(self.distances)
        except TypeError:  # a 0-d array
            distances = []
        if not distances or not all(isinstance(d, numbers.Integral) and not isinstance(d, (bool, np.bool_)) and d >= 1
                                    for d in distances):
            raise invalid_parameter(self, "distances", "a non-empty sequence of positive integers")
        if len(set(int(d) for d in distances)) != len(distances):
            raise invalid_parameter(self, "distances", "a sequence of distinct positive integers (no repeat)")
        try:
            angles = [float(a) for a in self.angles]
        except (TypeError, ValueError):
            angles = None
        if not angles or not all(np.isfinite(a) for a in angles):
            raise invalid_parameter(self, "angles", "a non-empty sequence of finite angles in radians")
        labels = [_angle_label(a) for a in angles]
        if len(set(labels)) != len(labels):
            raise invalid_parameter(self, "angles", "distinct angles (to 0.01 degree)")
        validate_intensity_range(self)

    def _feature_names(self):
        return glcm_feature_names(self.distances, self.angles, self.aggregate)

    def _extract(self, image, mask):
        values, _ = glcm_features(
            image, mask if self.use_mask else None, distances=self.distances, angles=self.angles,
            levels=self.levels, symmetric=self.symmetric, aggregate=self.aggregate, log_base=self.log_base,
            intensity_range=self.intensity_range, offset_metric=self.offset_metric, max_side=self.max_side,
            empty_mask=self.empty_mask,
        )
        return values
