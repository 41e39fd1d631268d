"""Exact and near-duplicate images, reported as clusters that can serve as CV groups.

Two images are

* **exact duplicates** when their decoded pixels are identical (SHA-1 of the
  pixel array; an RGB image whose three channels are equal is hashed as
  gray, so a gray PNG and its RGB copy match); and
* **near duplicates** when a cheap *candidate* test and a pixel-level
  *verification* both accept the pair:

  1. candidates: the Hamming distance between their perceptual hashes
     (:func:`imagehash.phash`, 64 bits) is at most ``candidate_distance``
     (default 14 of 64);
  2. verification (:func:`verify_pair`): both images are downscaled to
     ``VERIFY_SIDE`` pixels on their longer side; ORB keypoints are matched
     and a similarity transform (shift, scale, rotation) is fitted by RANSAC
     (OpenCV); the pair is verified when at least ``MIN_INLIERS`` matches
     agree with the transform **and** the normalised cross-correlation of
     the fine detail (difference of Gaussians, sigma 1 and 4 px) of the
     aligned images, over their common interior, is at least ``threshold``
     (default 0.3).

Clusters are the connected components of the graph of exact and *verified*
pairs only: a pair that passed the candidate test but failed verification
never joins two images, directly or through a chain. Every sample gets a
cluster id (a sample without duplicates is alone in its cluster), which makes
``report.cluster_ids`` usable directly as ``groups`` in grouped
cross-validation, or merged with patient ids by
:func:`featurepipe.model_selection.merge_groups`.

Why verification, and why these thresholds
------------------------------------------
A perceptual hash sees the coarse layout. On homogeneous modalities every
image has the same layout (a bright half-disk of breast on black in a
mammogram, the fan of an ultrasound probe), so hash distance alone joins
different patients: on the MIAS sample (60 mammograms of 30 women) a Hamming
threshold of 10 merged images of different women into 7 clusters and left 9
independent groups. Correlating the whole downscaled images does not help
either: the shared silhouette gives different women a correlation up to
0.97. What a copy shares and a look-alike does not is the *detail*, in the
*same geometric arrangement*: a re-saved, rescaled, cropped or annotated copy
has hundreds of ORB matches consistent with one similarity transform, while
two different breasts have a handful of chance matches, and once aligned by
such a chance transform their detail does not correlate. Measured (see
``docs/duplicates.md`` and ``benchmarks/duplicates.py``) over all 1740 MIAS
pairs of different women: at most 23 RANSAC inliers (99th percentile 12),
and among the pairs with at least 15 inliers the detail correlation is at
most 0.21. BUSI copies have 200-300 inliers and correlation above 0.95;
re-acquisitions of one lesion (adjacent frames, a moved probe) 15-60 inliers
and correlation 0.38-0.83. ``MIN_INLIERS = 15`` asks for a transform supported
by more matches than chance usually gives (the MIAS 99th percentile is 12);
``threshold = 0.3`` lies above the largest correlation of a chance alignment
of different women (0.21) and below those of the re-acquisitions, so they
stay grouped (one patient) while look-alikes of different patients do not.
Candidates up to Hamming distance 14 (not 10) find copies the old rule
missed (BUSI ``malignant (77)``/``(78)``, ``benign (64)``/``(141)``); 16
doubles the candidates to verify and adds one BUSI pair, no new cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import imagehash
import numpy as np
from joblib import Parallel, delayed
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .io import ImageReadError
from .sample import as_samples, hash_bytes

__all__ = [
    "DEFAULT_CANDIDATE_DISTANCE",
    "DEFAULT_THRESHOLD",
    "DUPLICATE_METHODS",
    "HASH_SIZE",
    "MIN_INLIERS",
    "VERIFY_SIDE",
    "DuplicateReport",
    "cluster_pairs",
    "find_duplicates",
    "group_duplicates",
    "hamming_pairs",
    "perceptual_hash",
    "pixel_digest",
    "verify_pair",
]

#: Default verification threshold: least normalised cross-correlation of the aligned fine detail.
DEFAULT_THRESHOLD = 0.3
#: Default largest Hamming distance (of 64 bits) between perceptual hashes of a candidate pair.
DEFAULT_CANDIDATE_DISTANCE = 14
#: Least number of ORB matches consistent with the fitted similarity transform for a verified pair.
MIN_INLIERS = 15
#: Longer side (pixels) of the copies on which pairs are verified.
VERIFY_SIDE = 256
#: Side of the DCT block whose signs form the perceptual hash (``HASH_SIZE ** 2`` bits).
HASH_SIZE = 8
#: ``method`` values of :func:`find_duplicates` (``"none"`` is for callers that skip the search).
DUPLICATE_METHODS = ("near", "exact", "none")

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Difference-of-Gaussians band (pixels at VERIFY_SIDE) whose correlation verifies a pair: finer than
# the silhouette every image of a modality shares, coarser than speckle and re-encoding noise.
_DETAIL_SIGMAS = (1.0, 4.0)
# Pixels (0-255, after the fine blur) above which a pixel counts as content, not empty background.
_CONTENT_LEVEL = 10.0
# The coarse blur spreads an edge over about 3 sigma: erode the common content by that much so the
# shared outline does not count as shared detail.
_EDGE_MARGIN = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * round(3 * _DETAIL_SIGMAS[1]) + 1,) * 2)
_RANSAC_PIXELS = 3.0
_ORB_FEATURES = 500


def _canonical_pixels(image):
    image = np.ascontiguousarray(image)
    if image.ndim == 3 and np.array_equal(image[..., 0], image[..., 1]) \
            and np.array_equal(image[..., 0], image[..., 2]):
        image = np.ascontiguousarray(image[..., 0])
    return image


def pixel_digest(image):
    """Hex digest of the decoded pixels (dtype, shape and values); equal for pixel-identical images."""
    image = _canonical_pixels(np.asarray(image))
    return hash_bytes(str(image.dtype), repr(image.shape), image.tobytes())


def _gray8(image):
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image @ _LUMA
    return np.clip(np.rint(image * np.float32(255.0)), 0, 255).astype(np.uint8)


def perceptual_hash(image, hash_size=HASH_SIZE):
    """The perceptual hash of an image in the featurepipe convention, as a bool array of ``hash_size**2`` bits.

    The image is converted to gray (ITU-R BT.601 luma), scaled to 8 bits and
    passed to :func:`imagehash.phash`.
    """
    return _phash8(_gray8(image), hash_size)


def _phash8(gray8, hash_size):
    return imagehash.phash(Image.fromarray(gray8), hash_size=hash_size).hash.ravel().astype(bool)


def _thumbnail(gray8):
    """8-bit gray copy with ``VERIFY_SIDE`` pixels on the longer side."""
    h, w = gray8.shape
    scale = VERIFY_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # INTER_AREA averages when shrinking; upscaling small images puts every input on one keypoint scale.
    return cv2.resize(gray8, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


class _Verifiable:
    """An image prepared for :func:`verify_pair`: its thumbnail, ORB features, detail and content."""

    __slots__ = ("gray", "points", "descriptors", "detail", "content")

    def __init__(self, thumbnail):
        self.gray = thumbnail
        orb = cv2.ORB_create(nfeatures=_ORB_FEATURES, edgeThreshold=15, patchSize=15, fastThreshold=5)
        keypoints, self.descriptors = orb.detectAndCompute(thumbnail, None)
        self.points = np.float32([k.pt for k in keypoints]).reshape(-1, 2)
        self.detail, self.content = _detail_and_content(thumbnail)


def _detail_and_content(gray):
    image = gray.astype(np.float32)
    fine = cv2.GaussianBlur(image, (0, 0), _DETAIL_SIGMAS[0])
    # content is decided on the finely blurred image, so its boundary is the true edge (a coarse blur
    # would push it outwards into the background, inside the edge's detail response)
    return fine - cv2.GaussianBlur(image, (0, 0), _DETAIL_SIGMAS[1]), fine > _CONTENT_LEVEL


def _verify(a, b):
    """``(inliers, correlation)`` of two prepared images (see :func:`verify_pair`)."""
    if a.descriptors is None or b.descriptors is None or len(a.points) < 3 or len(b.points) < 3:
        return 0, 0.0
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(b.descriptors, a.descriptors)
    if len(matches) < 3:
        return 0, 0.0
    source = np.float32([b.points[m.queryIdx] for m in matches])
    target = np.float32([a.points[m.trainIdx] for m in matches])
    cv2.setRNGSeed(0)  # RANSAC draws samples: fixed seed, same verdict on every run
    transform, inlier_mask = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC,
                                                         ransacReprojThreshold=_RANSAC_PIXELS, maxIters=2000,
                                                         confidence=0.99)
    if transform is None:
        return 0, 0.0
    inliers = int(inlier_mask.sum())
    height, width = a.gray.shape
    warped = cv2.warpAffine(b.gray, transform, (width, height), flags=cv2.INTER_LINEAR)
    valid = cv2.warpAffine(np.full(b.gray.shape, 255, np.uint8), transform, (width, height),
                           flags=cv2.INTER_NEAREST)
    detail_a, content_a = a.detail, a.content
    detail_b, content_b = _detail_and_content(warped)
    # Compare only the common interior: away from the warped border and from the edge of the content,
    # whose outline (a breast silhouette, an ultrasound fan) every image of a modality shares.
    common = cv2.erode((content_a & content_b & (valid > 0)).astype(np.uint8), _EDGE_MARGIN) > 0
    if common.sum() < 100:
        return inliers, 0.0
    x = detail_a[common].astype(np.float64)
    y = detail_b[common].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    norm = np.sqrt((x * x).sum() * (y * y).sum())
    return inliers, float((x * y).sum() / norm) if norm > 0 else 0.0


def verify_pair(image_a, image_b):
    """Pixel-level check that two images show the same scene: ``(inliers, correlation)``.

    Both images (float in [0, 1], gray or RGB, any sizes) are reduced to 8-bit
    gray with ``VERIFY_SIDE`` pixels on the longer side. ORB keypoints are
    matched (Hamming, cross-checked) and a similarity transform mapping
    ``image_b`` onto ``image_a`` is fitted by RANSAC (3 px). ``inliers`` is
    the number of matches consistent with it; ``correlation`` is the
    normalised cross-correlation of the difference-of-Gaussians detail
    (sigma 1 and 4 px) of ``image_a`` and the aligned ``image_b`` over their
    common content (0.0 when no transform is found).
    :func:`find_duplicates` verifies a pair when ``inliers >= MIN_INLIERS``
    and ``correlation >= threshold``.

    >>> import numpy as np
    >>> from scipy import ndimage as ndi
    >>> image = ndi.gaussian_filter(np.random.default_rng(0).random((120, 160)), 2)
    >>> image = (image - image.min()) / (image.max() - image.min())
    >>> inliers, correlation = verify_pair(image, image[10:, 12:])   # a crop of the same image
    >>> inliers >= MIN_INLIERS and correlation > 0.95
    True
    >>> other = ndi.gaussian_filter(np.random.default_rng(1).random((120, 160)), 2)
    >>> verify_pair(image, (other - other.min()) / (other.max() - other.min()))[0] < MIN_INLIERS
    True
    """
    return _verify(_Verifiable(_thumbnail(_gray8(image_a))), _Verifiable(_thumbnail(_gray8(image_b))))


def _fingerprint(sample, hash_size, method):
    """``(pixel digest, perceptual hash, thumbnail, error)`` of one sample; hash and thumbnail for "near" only."""
    try:
        image = sample.image  # duplicates are judged on the pixels; masks stay undecoded
    except ImageReadError as exc:
        return None, None, None, exc
    if method == "exact":
        return pixel_digest(image), None, None, None
    gray8 = _gray8(image)
    return pixel_digest(image), _phash8(gray8, hash_size), _thumbnail(gray8), None


def hamming_pairs(bits, threshold, block_size=None):
    """All pairs ``i < j`` of bit vectors at Hamming distance ``<= threshold``, computed blockwise.

    Parameters
    ----------
    bits : array-like of bool, shape (n, n_bits)
    threshold : int
    block_size : int, optional
        Rows compared at once (default: keeps the work array near 32 MiB).

    Returns
    -------
    i, j, distance : ndarray of int64, shape (n_pairs,)
        Sorted by ``i`` then ``j``.
    """
    bits = np.asarray(bits, dtype=bool)
    if bits.ndim != 2:
        raise ValueError(f"bits must be 2-D (n, n_bits); got shape {bits.shape}")
    n, n_bits = bits.shape
    packed = np.packbits(bits, axis=1)
    n_words = -(-packed.shape[1] // 8)
    padded = np.zeros((n, n_words * 8), dtype=np.uint8)
    padded[:, :packed.shape[1]] = packed
    words = padded.view(np.uint64)
    if block_size is None:
        block_size = max(1, (1 << 22) // max(1, n * n_words))
    out_i, out_j, out_d = [], [], []
    for start in range(0, n, block_size):
        stop = min(n, start + block_size)
        dist = np.bitwise_count(words[start:stop, None, :] ^ words[None, :, :]).sum(axis=2, dtype=np.int64)
        rows, cols = np.nonzero(dist <= threshold)
        keep = cols > rows + start
        out_i.append(rows[keep] + start)
        out_j.append(cols[keep])
        out_d.append(dist[rows[keep], cols[keep]])
    if not out_i:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy()
    return (np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64),
            np.concatenate(out_d).astype(np.int64))


@dataclass
class DuplicateReport:
    """Duplicate clusters of a set of samples.

    Attributes
    ----------
    method : {"near", "exact"}
        What was searched (see :func:`find_duplicates`).
    threshold : float
        Verification threshold (least detail correlation of a near pair).
    candidate_distance : int
        Largest perceptual-hash Hamming distance of a candidate pair.
    min_inliers : int
        Least RANSAC inliers of a verified near pair.
    cluster_ids : ndarray of int, shape (n_samples,)
        Cluster of each sample: ``0 .. n_clusters - 1`` for clusters with
        duplicates (ordered by first member), then one id per remaining sample.
    clusters : list of ndarray of int
        Sample indices of each cluster with at least two members.
    pair_i, pair_j : ndarray of int
        Every duplicate pair (``i < j``): exact, or a verified candidate.
        Only these pairs form clusters.
    pair_distance : ndarray of int
        Perceptual-hash Hamming distance of each pair (0 for exact pairs).
    pair_exact : ndarray of bool
        Whether the pair is pixel-identical (verified by definition).
    pair_inliers, pair_correlation : ndarray
        Verification of each pair (:func:`verify_pair`); exact pairs are not
        aligned and carry 0 inliers and correlation 1.0.
    candidates : dict of ndarray
        Every candidate pair that was verified, accepted or not: ``i``, ``j``,
        ``distance``, ``inliers``, ``correlation``, ``verified``.
    labels : ndarray or None
        Labels of the samples (to find clusters spanning several labels).
    names : list of str
        Sample names for reports (relative paths when known).
    unreadable : list of (index, path, reason)
        Samples that could not be decoded; each is alone in its cluster.
    """

    threshold: float
    cluster_ids: np.ndarray
    clusters: list
    pair_i: np.ndarray
    pair_j: np.ndarray
    pair_distance: np.ndarray
    pair_exact: np.ndarray
    pair_inliers: np.ndarray = None
    pair_correlation: np.ndarray = None
    method: str = "near"
    candidate_distance: int = DEFAULT_CANDIDATE_DISTANCE
    min_inliers: int = MIN_INLIERS
    candidates: dict = field(default_factory=dict)
    labels: np.ndarray | None = None
    names: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)

    @property
    def n_samples(self):
        return len(self.cluster_ids)

    @property
    def n_clusters(self):
        """Number of clusters with at least two members."""
        return len(self.clusters)

    @property
    def n_duplicate_images(self):
        """Number of samples that belong to a cluster with at least two members."""
        return int(sum(len(c) for c in self.clusters))

    @property
    def n_exact_pairs(self):
        return int(self.pair_exact.sum())

    @property
    def n_near_pairs(self):
        """Verified near pairs that are not pixel-identical."""
        return int((~self.pair_exact).sum())

    @property
    def n_rejected_candidates(self):
        """Candidate pairs (close perceptual hashes) that failed pixel verification."""
        verified = self.candidates.get("verified")
        return 0 if verified is None else int((~verified).sum())

    @property
    def description(self):
        """One line saying what counts as a duplicate."""
        if self.method == "exact":
            return "exact: bit-identical decoded pixels"
        return (f"near: exact pixels, or perceptual-hash candidates (Hamming distance <= {self.candidate_distance} "
                f"of {HASH_SIZE * HASH_SIZE} bits) verified on the pixels (>= {self.min_inliers} ORB/RANSAC "
                f"inliers and aligned detail correlation >= {self.threshold:g})")

    def cluster_labels(self, k):
        """Sorted distinct labels in cluster ``k`` (empty when labels are unknown)."""
        if self.labels is None:
            return []
        return sorted({str(v) for v in self.labels[self.clusters[k]]})

    @property
    def cross_label_clusters(self):
        """Indices (into ``clusters``) of clusters whose members carry different labels."""
        return [k for k in range(len(self.clusters)) if len(self.cluster_labels(k)) > 1]

    def cluster_kind(self, k):
        """``"exact"`` (all members pixel-identical), ``"near"`` or ``"mixed"``."""
        members = set(self.clusters[k].tolist())
        in_cluster = np.array([i in members for i in self.pair_i.tolist()], dtype=bool)
        exact = self.pair_exact[in_cluster]
        if exact.all() and len(exact) == len(members) * (len(members) - 1) // 2:
            return "exact"
        return "mixed" if exact.any() else "near"

    def summary(self, max_clusters=20):
        """A readable report: counts, then the clusters spanning several labels, then the others."""
        lines = [
            f"duplicates ({self.description}) among {self.n_samples} images:",
            f"  {self.n_clusters} clusters holding {self.n_duplicate_images} images "
            f"({self.n_exact_pairs} exact pairs, {self.n_near_pairs} verified near pairs"
            + (f"; {self.n_rejected_candidates} candidate pairs rejected by verification" if self.method == "near"
               else "") + ")",
        ]
        cross = self.cross_label_clusters
        if self.labels is not None:
            lines.append(f"  {len(cross)} clusters span two or more labels" + (":" if cross else ""))
            for k in cross:
                lines.append(self._describe(k))
        others = [k for k in range(self.n_clusters) if k not in set(cross)]
        if others and max_clusters:
            lines.append("  other clusters:" if cross else "  clusters:")
            for k in others[:max_clusters]:
                lines.append(self._describe(k))
            if len(others) > max_clusters:
                lines.append(f"    ... and {len(others) - max_clusters} more")
        if self.unreadable:
            lines.append(f"  {len(self.unreadable)} images could not be decoded and were not compared")
        return "\n".join(lines)

    def _describe(self, k):
        members = self.clusters[k]
        labels = self.cluster_labels(k)
        head = f"    cluster {k} ({self.cluster_kind(k)}"
        head += f"; {' + '.join(labels)})" if labels else ")"
        names = ", ".join(self.names[i] if self.names else str(i) for i in members)
        return f"{head}: {names}"

    def __str__(self):
        return self.summary()


def _sample_name(sample):
    return str(sample.meta.get("relpath") or sample.name)


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_params(method, threshold, candidate_distance, min_inliers, hash_size, on_error):
    if method not in ("near", "exact"):
        raise ValueError(f"method must be 'near' or 'exact'; got {method!r} (to skip the search, do not call "
                         "find_duplicates)")
    if not _is_int(hash_size) or hash_size < 2:
        raise ValueError(f"hash_size must be an integer >= 2; got {hash_size!r}")
    n_bits = hash_size * hash_size
    if not _is_int(candidate_distance) or not 0 <= candidate_distance <= n_bits:
        raise ValueError(f"candidate_distance must be an integer in [0, {n_bits}] (Hamming distance of "
                         f"{n_bits}-bit perceptual hashes); got {candidate_distance!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)) \
            or not 0 < threshold <= 1:
        hint = (" (the perceptual-hash Hamming distance is now candidate_distance)"
                if _is_int(threshold) and threshold != 1 else "")
        raise ValueError(f"threshold must be a number in (0, 1], the least correlation of the aligned detail of "
                         f"a verified near-duplicate pair; got {threshold!r}{hint}")
    if not _is_int(min_inliers) or min_inliers < 3:
        raise ValueError(f"min_inliers must be an integer >= 3 (RANSAC inliers of a verified pair); "
                         f"got {min_inliers!r}")
    if on_error not in ("raise", "report"):
        raise ValueError(f"on_error must be 'raise' or 'report'; got {on_error!r}")


def _run(function, items, n_jobs):
    if n_jobs in (None, 1) or len(items) < 2:
        return [function(*item) for item in items]
    return Parallel(n_jobs=n_jobs, prefer="threads")(delayed(function)(*item) for item in items)


def find_duplicates(X, y=None, *, method="near", threshold=DEFAULT_THRESHOLD,
                    candidate_distance=DEFAULT_CANDIDATE_DISTANCE, min_inliers=MIN_INLIERS, hash_size=HASH_SIZE,
                    n_jobs=None, on_error="raise"):
    """Find exact and verified near-duplicate images and cluster them.

    Parameters
    ----------
    X : Dataset or sequence of samples, paths or image arrays
    y : array-like, optional
        Labels (default: the samples' labels when every sample has one).
    method : {"near", "exact"}, default="near"
        ``"near"``: exact copies plus candidate pairs verified on the pixels
        (module docstring); ``"exact"``: bit-identical decoded pixels only.
    threshold : float, default=0.3
        Verification: least normalised cross-correlation, in (0, 1], of the
        fine detail of the aligned pair (:func:`verify_pair`).
    candidate_distance : int, default=14
        Largest Hamming distance between perceptual hashes of a candidate pair
        (0 .. ``hash_size ** 2``).
    min_inliers : int, default=15
        Verification: least ORB matches consistent with the fitted similarity
        transform.
    hash_size : int, default=8
        Perceptual hash side (``hash_size ** 2`` bits).
    n_jobs : int, optional
        Threads for decoding, hashing and verification.
    on_error : {"raise", "report"}, default="raise"
        What to do with an image that cannot be decoded: raise its
        :class:`~featurepipe.io.ImageReadError`, or list it in
        ``report.unreadable`` and leave it alone in its cluster.

    Returns
    -------
    DuplicateReport
        Clusters are connected components of exact and verified pairs only.
    """
    _check_params(method, threshold, candidate_distance, min_inliers, hash_size, on_error)
    samples = as_samples(X)
    n = len(samples)
    if y is None:
        labels = [s.label for s in samples]
        y = None if any(v is None for v in labels) else np.asarray(labels, dtype=object)
    else:
        y = np.asarray(y, dtype=object)
        if y.shape != (n,):
            raise ValueError(f"y has shape {y.shape}; expected ({n},) to match X")
    results = _run(_fingerprint, [(s, hash_size, method) for s in samples], n_jobs)
    unreadable = []
    digests = [None] * n
    thumbnails = [None] * n
    bits = np.zeros((n, hash_size * hash_size), dtype=bool)
    readable = np.zeros(n, dtype=bool)
    for i, (digest, phash, thumbnail, exc) in enumerate(results):
        if exc is not None:
            if on_error == "raise":
                raise exc
            unreadable.append((i, samples[i].path or samples[i].name, exc.reason))
            continue
        digests[i], thumbnails[i], readable[i] = digest, thumbnail, True
        if phash is not None:
            bits[i] = phash
    del results

    index = np.flatnonzero(readable)
    exact_pairs = set()
    by_digest = {}
    for i in index.tolist():
        by_digest.setdefault(digests[i], []).append(i)
    for members in by_digest.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                exact_pairs.add((members[a], members[b]))

    # pair -> (hash distance, inliers, correlation); exact pairs are verified by definition
    pairs = {p: (0, 0, 1.0) for p in exact_pairs}
    candidates = {"i": np.empty(0, np.int64), "j": np.empty(0, np.int64), "distance": np.empty(0, np.int64),
                  "inliers": np.empty(0, np.int64), "correlation": np.empty(0), "verified": np.empty(0, bool)}
    if method == "near":
        near_i, near_j, near_d = hamming_pairs(bits[index], candidate_distance)
        near_i, near_j = index[near_i], index[near_j]
        todo = [(int(i), int(j), int(d)) for i, j, d in zip(near_i, near_j, near_d)
                if (int(i), int(j)) not in exact_pairs]
        # keypoints only for the images that have a candidate to verify
        involved = sorted({i for i, _, _ in todo} | {j for _, j, _ in todo})
        prepared = dict(zip(involved, _run(_Verifiable, [(thumbnails[i],) for i in involved], n_jobs)))
        checks = _run(_verify, [(prepared[i], prepared[j]) for i, j, _ in todo], n_jobs)
        verified = np.array([k >= min_inliers and c >= threshold for k, c in checks], dtype=bool)
        candidates = {"i": np.array([t[0] for t in todo], dtype=np.int64),
                      "j": np.array([t[1] for t in todo], dtype=np.int64),
                      "distance": np.array([t[2] for t in todo], dtype=np.int64),
                      "inliers": np.array([c[0] for c in checks], dtype=np.int64),
                      "correlation": np.array([c[1] for c in checks], dtype=np.float64),
                      "verified": verified}
        for (i, j, d), (k, c), ok in zip(todo, checks, verified):
            if ok:
                pairs[(i, j)] = (d, k, c)
    ordered = sorted(pairs)
    pair_i = np.array([p[0] for p in ordered], dtype=np.int64)
    pair_j = np.array([p[1] for p in ordered], dtype=np.int64)
    pair_d = np.array([pairs[p][0] for p in ordered], dtype=np.int64)
    pair_inliers = np.array([pairs[p][1] for p in ordered], dtype=np.int64)
    pair_corr = np.array([pairs[p][2] for p in ordered], dtype=np.float64)
    pair_exact = np.array([p in exact_pairs for p in ordered], dtype=bool)

    cluster_ids, clusters = cluster_pairs(n, pair_i, pair_j)
    return DuplicateReport(threshold=float(threshold), cluster_ids=cluster_ids, clusters=clusters, pair_i=pair_i,
                           pair_j=pair_j, pair_distance=pair_d, pair_exact=pair_exact, pair_inliers=pair_inliers,
                           pair_correlation=pair_corr, method=method, candidate_distance=int(candidate_distance),
                           min_inliers=int(min_inliers), candidates=candidates, labels=y,
                           names=[_sample_name(s) for s in samples], unreadable=unreadable)


def cluster_pairs(n, pair_i, pair_j):
    """Connected components of the pairs ``(pair_i[k], pair_j[k])`` among ``n`` samples.

    Returns ``(cluster_ids, clusters)``: an int array of shape ``(n,)`` numbering
    clusters with at least two members first (by first member), then one id
    per remaining sample; and the member indices of each multi-member cluster.

    >>> ids, clusters = cluster_pairs(5, np.array([0, 3]), np.array([3, 4]))
    >>> ids.tolist(), [c.tolist() for c in clusters]
    ([0, 1, 2, 0, 0], [[0, 3, 4]])
    """
    graph = coo_matrix((np.ones(len(pair_i)), (pair_i, pair_j)), shape=(n, n))
    _, components = connected_components(graph, directed=False)
    sizes = np.bincount(components, minlength=n)
    cluster_ids = np.empty(n, dtype=np.int64)
    new_id = {}
    next_id = 0
    for i in range(n):
        c = components[i]
        if sizes[c] > 1 and c not in new_id:
            new_id[c] = next_id
            next_id += 1
    n_clusters = next_id
    for i in range(n):
        c = components[i]
        if sizes[c] > 1:
            cluster_ids[i] = new_id[c]
        else:
            cluster_ids[i] = next_id
            next_id += 1
    clusters = [np.flatnonzero(cluster_ids == k) for k in range(n_clusters)]
    return cluster_ids, clusters


def group_duplicates(dataset, report=None, *, method="near", threshold=DEFAULT_THRESHOLD,
                     candidate_distance=DEFAULT_CANDIDATE_DISTANCE, n_jobs=None):
    """A copy of ``dataset`` whose groups merge its patient groups with its duplicate clusters.

    Samples that share a patient group or a duplicate cluster (directly or
    through a chain of verified pairs and shared patients) end up in one
    group, so a grouped split never puts duplicates on both sides. Pass a
    ``report`` from :func:`find_duplicates` on the same samples to avoid
    recomputing it; otherwise ``method`` (``"near"``, ``"exact"`` or
    ``"none"``), ``threshold``, ``candidate_distance`` and ``n_jobs`` are
    passed to :func:`find_duplicates`.

    Returns
    -------
    Dataset
        With integer groups; ``info["duplicates"]`` holds the report (``None``
        for ``method="none"``).
    """
    from .model_selection import merge_groups

    if report is None:
        if method not in DUPLICATE_METHODS:
            raise ValueError(f"method must be one of {DUPLICATE_METHODS}; got {method!r}")
        if method != "none":
            report = find_duplicates(dataset, method=method, threshold=threshold,
                                     candidate_distance=candidate_distance, n_jobs=n_jobs)
    if report is None:
        grouped = dataset.with_groups(merge_groups(dataset.groups).tolist())
    else:
        if report.n_samples != len(dataset):
            raise ValueError(f"the report covers {report.n_samples} samples but the dataset has {len(dataset)}")
        grouped = dataset.with_groups(merge_groups(dataset.groups, report.cluster_ids).tolist())
    grouped.info = dict(grouped.info, duplicates=report)
    return grouped
