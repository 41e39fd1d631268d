"""The on-disk feature cache verifies what it returns (issue 11 #4).

Every corruption below is generated on a real cache entry written by a
feature extractor; the next transform must discard the entry, recompute it,
rewrite it, warn once, and return exactly the uncached features.
"""

import os
import warnings

import numpy as np
import pytest

from featurepipe import FeatureExtractor
from featurepipe.cache import CacheWarning, FeatureCache, clear_memory_cache, get_cache

CALLS = []


class MeanStd(FeatureExtractor):
    def __init__(self, scale=1.0, cache=True, n_jobs=None):
        self.scale = scale
        self.cache = cache
        self.n_jobs = n_jobs

    def _extract(self, image, mask):
        CALLS.append(1)
        return [self.scale * image.mean(), self.scale * image.std()]

    def _feature_names(self):
        return ["mean", "std"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_memory_cache()
    CALLS.clear()


@pytest.fixture
def images(rng):
    return [rng.random((6, 6)).astype(np.float32) for _ in range(3)]


def _expected(images):
    return np.array([[im.mean(), im.std()] for im in images], dtype=np.float64)


def _entries(directory):
    return sorted(p for p in directory.rglob("*") if p.name.endswith(FeatureCache.ENTRY_SUFFIX))


def _filled(tmp_path, images):
    directory = tmp_path / "cache"
    first = MeanStd(cache=str(directory)).transform(images)
    np.testing.assert_allclose(first, _expected(images), rtol=1e-6)
    entries = _entries(directory)
    assert len(entries) == len(images)
    clear_memory_cache()
    CALLS.clear()
    return directory, first, entries


def _rewrite_entry(path, values):
    """A well-formed entry (valid checksum) holding ``values``: what a buggy or older step could have stored."""
    FeatureCache.write_entry(path, np.asarray(values))


def _flip_payload_byte(path):
    values, _ = FeatureCache.read_entry_unverified(path)
    data = bytearray(path.read_bytes())
    where = data.find(values.tobytes())
    assert where > 0
    data[where + 3] ^= 0x01  # inside the stored array bytes, headers untouched
    path.write_bytes(bytes(data))


def _edit_values_keep_checksum(path):
    values, digest = FeatureCache.read_entry_unverified(path)
    edited = np.array(values, copy=True)
    edited[0] += 1.0
    FeatureCache.write_entry(path, edited, digest=digest)


def _save_plain_npy(path, values):
    with open(path, "wb") as fh:
        np.save(fh, values)


CORRUPTIONS = {
    "edited values, old checksum": _edit_values_keep_checksum,
    "flipped payload byte": _flip_payload_byte,
    "(1, n) shape": lambda p: _rewrite_entry(p, np.array([[0.5, 0.25]])),
    "int64 dtype": lambda p: _rewrite_entry(p, np.array([1, 2], dtype=np.int64)),
    "wrong length": lambda p: _rewrite_entry(p, np.array([0.5, 0.25, 0.125])),
    "zero bytes": lambda p: p.write_bytes(b""),
    "plain npy (no checksum)": lambda p: _save_plain_npy(p, np.array([0.5, 0.25])),
    "garbage": lambda p: p.write_bytes(os.urandom(300)),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_bad_entry_is_discarded_recomputed_rewritten_and_reported_once(tmp_path, images, corruption):
    directory, first, entries = _filled(tmp_path, images)
    bad = entries[1]
    CORRUPTIONS[corruption](bad)
    with pytest.warns(CacheWarning, match="discarded 1 bad cache entr") as record:
        again = MeanStd(cache=str(directory)).transform(images)
    assert len([w for w in record if issubclass(w.category, CacheWarning)]) == 1
    assert str(bad) in str(record[0].message)
    # exactly the uncached features, recomputed for the bad entry only
    np.testing.assert_array_equal(again, first)  # the cache stores the computed float64 bytes unchanged
    np.testing.assert_array_equal(MeanStd(cache=False).transform(images), first)
    assert len(CALLS) == 1 + len(images)
    # the entry was rewritten: a fresh process reads it back without warning or recomputation
    clear_memory_cache()
    CALLS.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = MeanStd(cache=str(directory)).transform(images)
    np.testing.assert_array_equal(third, first)  # exact: the cache returns the bytes it stored
    assert CALLS == []


def test_directory_in_place_of_an_entry_falls_back_to_computing(tmp_path, images):
    directory, first, entries = _filled(tmp_path, images)
    entries[0].unlink()
    entries[0].mkdir()
    (entries[0] / "keep").write_text("not ours")
    with pytest.warns(CacheWarning) as record:
        again = MeanStd(cache=str(directory)).transform(images)
    np.testing.assert_array_equal(again, first)  # exact: same function on the same input
    text = " ".join(str(w.message) for w in record)
    assert str(entries[0]) in text and "not a regular file" in text
    assert (entries[0] / "keep").read_text() == "not ours"  # never deletes what it did not write


def test_unwritable_cache_computes_with_one_warning(tmp_path, images):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    with pytest.warns(CacheWarning, match="cannot write to the feature cache") as record:
        out = MeanStd(cache=str(blocker)).transform(images)
    assert len(record) == 1 and str(blocker) in str(record[0].message)
    np.testing.assert_allclose(out, _expected(images), rtol=1e-6)
    assert blocker.read_text() == "a file where the cache directory should be"


def test_read_only_cache_directory_computes_with_one_warning(tmp_path, images, monkeypatch):
    directory = tmp_path / "cache"
    directory.mkdir()
    if os.geteuid() != 0:
        directory.chmod(0o555)
    else:  # root ignores permission bits: make every file creation fail as on a read-only mount
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(directory))
        monkeypatch.setattr("featurepipe.cache.tempfile.mkstemp", refuse)
    try:
        with pytest.warns(CacheWarning, match="cannot write to the feature cache") as record:
            out = MeanStd(cache=str(directory)).transform(images)
    finally:
        directory.chmod(0o755)
    assert len(record) == 1 and "Permission denied" in str(record[0].message)
    np.testing.assert_allclose(out, _expected(images), rtol=1e-6)
    assert len(CALLS) == len(images)


@pytest.mark.parametrize("value", ["", b"", "   "])
def test_empty_cache_path_is_refused(value, tmp_path, monkeypatch, images):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"cache=.*empty.*True.*False.*directory"):
        get_cache(value)
    with pytest.raises(ValueError, match="cache="):
        MeanStd(cache=value).transform(images)
    assert list(tmp_path.iterdir()) == []  # nothing written into the current folder


def test_memory_and_off_behaviour_is_unchanged(images, tmp_path):
    assert get_cache(False) is None and get_cache(None) is None
    assert get_cache(True).directory is None
    assert get_cache(str(tmp_path)).directory == tmp_path
    MeanStd().transform(images)
    MeanStd().transform(images)
    assert len(CALLS) == len(images)
    MeanStd(cache=False).transform(images)
    assert len(CALLS) == 2 * len(images)


def test_entry_round_trip_and_checksum(tmp_path):
    values = np.array([0.1, -2.5, np.inf, 3e300])
    path = tmp_path / ("x" + FeatureCache.ENTRY_SUFFIX)
    FeatureCache.write_entry(path, values)
    read, digest = FeatureCache.read_entry_unverified(path)
    np.testing.assert_array_equal(read, values)  # exact: stored bytes are returned unchanged
    assert read.dtype == np.float64 and digest == FeatureCache.checksum(values)
    assert FeatureCache.checksum(values[:2]) != FeatureCache.checksum(values[:2].astype(np.float32))
    assert FeatureCache.checksum(values) != FeatureCache.checksum(values.reshape(1, -1))
