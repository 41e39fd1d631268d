"""Exact and near-duplicate detection, clusters across labels, clusters as CV groups."""

import cv2
import imagehash
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from featurepipe.dataset import Dataset
from featurepipe.datasets import load_busi, load_folder
from featurepipe.duplicates import (
    DEFAULT_CANDIDATE_DISTANCE,
    DEFAULT_THRESHOLD,
    MIN_INLIERS,
    find_duplicates,
    group_duplicates,
    hamming_pairs,
    perceptual_hash,
    pixel_digest,
    verify_pair,
)
from featurepipe.io import ImageReadError
from featurepipe.model_selection import RepeatedStratifiedGroupKFold
from featurepipe.sample import Sample


def _texture(seed, size=96):
    noise = np.random.default_rng(seed).random((size, size))
    smooth = ndi.gaussian_filter(noise, 3)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return np.rint(smooth * 255).astype(np.uint8)


def _save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def dup_tree(tmp_path):
    """a/orig, a/copy (exact), b/noisy and b/small (near copies of orig), a/other, b/third (unrelated)."""
    root = tmp_path / "dups"
    original = _texture(1)
    rng = np.random.default_rng(5)
    noisy = np.clip(original + rng.normal(0, 8, original.shape), 0, 255).astype(np.uint8)
    cropped = np.ascontiguousarray(original[4:, 4:])
    small = cv2.resize(cropped, (77, 77), interpolation=cv2.INTER_AREA)  # phash distance 6
    _save(root / "a" / "orig.png", original)
    _save(root / "a" / "copy.png", original)
    _save(root / "b" / "noisy.png", noisy)
    _save(root / "b" / "small.png", small)
    _save(root / "a" / "other.png", _texture(2))
    _save(root / "b" / "third.png", _texture(3))
    return root


def _phash_reference(path):
    return imagehash.phash(Image.open(path).convert("L"))


def test_exact_and_near_duplicates_form_one_cluster_across_labels(dup_tree):
    ds = load_folder(dup_tree)
    names = [s.meta["relpath"] for s in ds]
    assert names == ["a/copy.png", "a/orig.png", "a/other.png", "b/noisy.png", "b/small.png", "b/third.png"]
    report = find_duplicates(ds)
    assert report.n_clusters == 1
    assert [names[i] for i in report.clusters[0]] == ["a/copy.png", "a/orig.png", "b/noisy.png", "b/small.png"]
    assert report.cross_label_clusters == [0] and report.cluster_labels(0) == ["a", "b"]
    # cluster ids: the duplicate cluster is 0, every other image has its own id
    assert report.cluster_ids.tolist() == [0, 0, 1, 0, 0, 2]
    exact = {(names[i], names[j]) for i, j, e in zip(report.pair_i, report.pair_j, report.pair_exact) if e}
    assert exact == {("a/copy.png", "a/orig.png")}
    assert report.cluster_kind(0) == "mixed"
    # distances are imagehash's own phash distances; near pairs passed the pixel verification
    for i, j, d, exact in zip(report.pair_i, report.pair_j, report.pair_distance, report.pair_exact):
        reference = _phash_reference(dup_tree / names[i]) - _phash_reference(dup_tree / names[j])
        assert d == reference <= DEFAULT_CANDIDATE_DISTANCE
    near = ~report.pair_exact
    assert (report.pair_inliers[near] >= MIN_INLIERS).all()
    assert (report.pair_correlation[near] >= DEFAULT_THRESHOLD).all()
    unrelated = _phash_reference(dup_tree / "a/orig.png") - _phash_reference(dup_tree / "a/other.png")
    assert unrelated > 20
    text = report.summary()
    assert "1 clusters span two or more labels" in text and "a/copy.png, a/orig.png, b/noisy.png" in text


@pytest.mark.parametrize("candidate_distance,members", [
    (0, ["a/copy.png", "a/orig.png", "b/noisy.png"]),  # the noisy copy has the same hash
    (4, ["a/copy.png", "a/orig.png", "b/noisy.png"]),
    (6, ["a/copy.png", "a/orig.png", "b/noisy.png", "b/small.png"]),  # the small crop is at distance 6
])
def test_candidate_distance_decides_what_is_verified(dup_tree, candidate_distance, members):
    report = find_duplicates(load_folder(dup_tree), candidate_distance=candidate_distance)
    assert [[report.names[i] for i in c] for c in report.clusters] == [members]
    assert report.cluster_kind(0) == "mixed"
    assert report.n_exact_pairs == 1 and (report.pair_distance <= candidate_distance).all()


def test_exact_method_groups_identical_pixels_only(dup_tree):
    report = find_duplicates(load_folder(dup_tree), method="exact")
    assert [[report.names[i] for i in c] for c in report.clusters] == [["a/copy.png", "a/orig.png"]]
    assert report.candidates["i"].size == 0 and report.description.startswith("exact")


def test_perceptual_hash_and_digest_match_references(rng):
    gray8 = rng.integers(0, 256, size=(40, 50), dtype=np.uint8)
    image = gray8.astype(np.float32) / 255
    expected = imagehash.phash(Image.fromarray(gray8)).hash.ravel()
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(perceptual_hash(image), expected)
    rgb8 = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    # Pillow's own RGB -> L conversion (BT.601, rounded) gives the same hash as our luma
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(perceptual_hash(rgb8.astype(np.float32) / 255),
                                  imagehash.phash(Image.fromarray(rgb8).convert("L")).hash.ravel())
    assert pixel_digest(image) == pixel_digest(np.repeat(image[..., None], 3, axis=2))
    changed = image.copy()
    changed[3, 4] += 1 / 255
    assert pixel_digest(changed) != pixel_digest(image)


@pytest.mark.parametrize("n_bits,block_size", [(64, None), (64, 3), (100, 7), (16, 1000)])
def test_hamming_pairs_equals_brute_force(n_bits, block_size):
    rng = np.random.default_rng(n_bits)
    base = rng.random((6, n_bits)) < 0.5
    bits = np.vstack([base, base ^ (rng.random((6, n_bits)) < 0.08), rng.random((20, n_bits)) < 0.5])
    threshold = n_bits // 6
    i, j, d = hamming_pairs(bits, threshold, block_size=block_size)
    brute = [(a, b, int((bits[a] != bits[b]).sum())) for a in range(len(bits)) for b in range(a + 1, len(bits))
             if (bits[a] != bits[b]).sum() <= threshold]
    assert list(zip(i.tolist(), j.tolist(), d.tolist())) == brute
    assert len(brute) >= 6


def test_unreadable_images_are_reported_or_raised(dup_tree):
    (dup_tree / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    ds = load_folder(dup_tree, validate=False)
    with pytest.raises(ImageReadError, match="broken.png"):
        find_duplicates(ds)
    report = find_duplicates(ds, on_error="report")
    (index, path, reason), = report.unreadable
    assert path.endswith("broken.png") and report.names[index] == "a/broken.png"
    assert report.cluster_ids[index] not in report.cluster_ids[np.arange(len(ds)) != index]
    assert report.n_clusters == 1 and len(report.clusters[0]) == 4


def test_parameter_errors(dup_tree):
    ds = load_folder(dup_tree)
    for kwargs, message in [({"threshold": 10}, "threshold must be a number in .0, 1.*now candidate_distance"),
                            ({"threshold": -0.5}, "threshold"), ({"threshold": 1.5}, "threshold"),
                            ({"threshold": True}, "threshold"), ({"candidate_distance": 65}, "candidate_distance"),
                            ({"candidate_distance": 2.5}, "candidate_distance"), ({"min_inliers": 2}, "min_inliers"),
                            ({"method": "none"}, "method must be 'near' or 'exact'"),
                            ({"on_error": "skip"}, "on_error"), ({"hash_size": 1}, "hash_size")]:
        with pytest.raises(ValueError, match=message):
            find_duplicates(ds, **kwargs)
    with pytest.raises(ValueError, match="method must be one of"):
        group_duplicates(ds, method="fuzzy")
    with pytest.raises(ValueError, match="y has shape"):
        find_duplicates(ds, y=[1, 2])


def test_duplicate_clusters_never_straddle_folds(dup_tree, rng):
    extra = [Sample.from_array(_texture(10 + k, 32), label=("a" if k % 2 else "b")) for k in range(14)]
    ds = load_folder(dup_tree)
    combined = Dataset(list(ds.samples) + extra)
    grouped = group_duplicates(combined)
    report = grouped.info["duplicates"]
    cluster = set(report.clusters[0].tolist())
    assert len({grouped.groups[i] for i in cluster}) == 1
    cv = RepeatedStratifiedGroupKFold(n_splits=3, n_repeats=2, random_state=0)
    for _, test in cv.split(grouped.X, grouped.y, grouped.groups):
        assert cluster <= set(test.tolist()) or not cluster & set(test.tolist())


def test_busi_known_duplicates(shared_data):
    """A BUSI subset: cross-label copies found by `featurepipe data check`, plus images with no duplicate."""
    root = shared_data / "busi"
    wanted = {
        "benign/benign (399).png", "malignant/malignant (93).png",      # near, distance 0
        "benign/benign (433).png", "malignant/malignant (145).png",     # pixel-identical
        "benign/benign (269).png", "normal/normal (1).png",             # near, across benign/normal
        "benign/benign (1).png", "benign/benign (318).png",             # near, same class
        "benign/benign (20).png", "malignant/malignant (100).png", "normal/normal (115).png",  # no duplicate
    }
    full = load_busi(root, validate=False)
    ds = full[np.array([s.meta["relpath"] in wanted for s in full])]
    report = find_duplicates(ds, n_jobs=2)
    found = sorted(sorted(report.names[i] for i in c) for c in report.clusters)
    assert found == [
        ["benign/benign (1).png", "benign/benign (318).png"],
        ["benign/benign (269).png", "normal/normal (1).png"],
        ["benign/benign (399).png", "malignant/malignant (93).png"],
        ["benign/benign (433).png", "malignant/malignant (145).png"],
    ]
    assert len(report.cross_label_clusters) == 3
    exact = [(report.names[i], report.names[j]) for i, j, e in zip(report.pair_i, report.pair_j, report.pair_exact)
             if e]
    assert exact == [("benign/benign (433).png", "malignant/malignant (145).png")]


# --- verification: look-alikes stay apart, copies are found, no chaining through unverified pairs ---

def _breast(seed, size=160):
    """A synthetic mammogram-like image: a bright half-ellipse on black, filled with seed-specific texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disk = (xx / size) ** 2 + ((yy - size / 2) / (0.45 * size)) ** 2 < 0.8 ** 2
    texture = ndi.gaussian_filter(rng.random((size, size)), 2.0)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    return np.where(disk, 0.55 + 0.2 * texture, 0.02).astype(np.float32)


def _jpeg(image, quality=75):
    ok, encoded = cv2.imencode(".jpg", np.rint(image * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255


def _hash_distance(a, b):
    return int(np.count_nonzero(perceptual_hash(a) != perceptual_hash(b)))


@pytest.mark.parametrize("other_seed", [2, 4, 5])
def test_same_layout_different_texture_is_a_candidate_but_not_merged(other_seed):
    a, b = _breast(1), _breast(other_seed)
    assert _hash_distance(a, b) <= DEFAULT_CANDIDATE_DISTANCE  # the hash alone would call them duplicates
    report = find_duplicates([a, b])
    assert report.n_clusters == 0 and report.cluster_ids.tolist() == [0, 1]
    assert report.candidates["i"].tolist() == [0] and report.candidates["j"].tolist() == [1]
    assert not report.candidates["verified"][0] and report.n_rejected_candidates == 1
    inliers, correlation = verify_pair(a, b)
    assert inliers < 30 and abs(correlation) < 0.1  # independent textures: no shared detail, chance matches


def _copies(image):
    rng = np.random.default_rng(7)
    return {
        "resized": cv2.resize(image, (117, 117), interpolation=cv2.INTER_AREA),
        "jpeg": _jpeg(image),
        "noised": np.clip(image + rng.normal(0, 0.01, image.shape), 0, 1).astype(np.float32),
        "resized jpeg": _jpeg(cv2.resize(image, (200, 200), interpolation=cv2.INTER_LINEAR), quality=60),
    }


@pytest.mark.parametrize("kind", ["resized", "jpeg", "noised", "resized jpeg"])
def test_resized_reencoded_or_noised_copy_is_merged(kind):
    original = _breast(1)
    copy = _copies(original)[kind]
    report = find_duplicates([original, copy, _breast(4)])
    assert [c.tolist() for c in report.clusters] == [[0, 1]]
    assert report.pair_i.tolist() == [0] and report.pair_j.tolist() == [1] and not report.pair_exact[0]
    assert report.pair_inliers[0] >= MIN_INLIERS and report.pair_correlation[0] >= DEFAULT_THRESHOLD
    # identical, not close: find_duplicates runs the same deterministic computation as verify_pair
    assert (report.pair_inliers[0], report.pair_correlation[0]) == verify_pair(original, copy)


def test_no_chaining_through_unverified_pairs():
    a = _breast(1)
    b = _jpeg(a)                   # a verified copy of a
    c = _breast(4)                 # same layout as a and b, different texture: a candidate only
    report = find_duplicates([a, b, c])
    cand = {(i, j): v for i, j, v in zip(report.candidates["i"].tolist(), report.candidates["j"].tolist(),
                                          report.candidates["verified"].tolist())}
    assert cand == {(0, 1): True, (0, 2): False, (1, 2): False}
    assert report.cluster_ids[0] == report.cluster_ids[1] != report.cluster_ids[2]
    assert [c.tolist() for c in report.clusters] == [[0, 1]]
    grouped = group_duplicates(Dataset([Sample.from_array(x, label="x") for x in (a, b, c)]))
    assert grouped.groups[0] == grouped.groups[1] != grouped.groups[2]


def test_mias_women_stay_apart(shared_data):
    """Different women are never merged, so the woman groups stay the 30 independent groups (9 before)."""
    from featurepipe.datasets import load_mias
    from featurepipe.model_selection import merge_groups

    mias = load_mias(shared_data / "mias_sample")
    report = find_duplicates(mias, n_jobs=2)
    women = np.asarray(mias.groups, dtype=object)
    for members in report.clusters:
        assert len(set(women[members])) == 1, [report.names[i] for i in members]
    assert len(set(merge_groups(women, report.cluster_ids).tolist())) == len(set(women)) == 30
    # the four different breasts that the hash alone put together
    ids = {report.names[i]: report.cluster_ids[i] for i in range(len(mias))}
    assert len({ids[f"mdb0{k}.png"] for k in ("01", "13", "33", "53")}) == 4
    assert report.n_rejected_candidates > 0  # they were candidates, and verification refused them
