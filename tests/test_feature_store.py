"""The feature engine (featurepipe.feature_store), issue 12 point 1: one engine, statelessness declared once."""

import numpy as np
import pytest
from imblearn.over_sampling import SMOTE
from PIL import Image
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from featurepipe import FeatureExtractor, FeatureStore, ImageStep, Sample, is_stateless
from featurepipe.cache import clear_memory_cache
from featurepipe.feature_store import FeatureResult
from featurepipe.features import FeatureBank, FirstOrderFeatures, GLCMFeatures
from featurepipe.io import ImageReadError
from featurepipe.preprocessing import GaussianFilter
from featurepipe.search import grid_list, step_is_stateless

CALLS = {"blur": 0, "a": 0, "b": 0}


class CountingBlur(ImageStep):
    """A 3x3 box blur that counts the images it really computes."""

    def _transform_image(self, image, mask):
        CALLS["blur"] += 1
        padded = np.pad(image, 1, mode="edge")
        out = sum(padded[i:i + image.shape[0], j:j + image.shape[1]] for i in range(3) for j in range(3)) / 9.0
        return out.astype(np.float32), mask


class CountingStats(FeatureExtractor):
    """Mean and standard deviation of the image, times ``scale``; counts the images it really computes."""

    def __init__(self, name="a", scale=1.0, cache=True, n_jobs=None):
        self.name = name
        self.scale = scale
        self.cache = cache
        self.n_jobs = n_jobs

    def _extract(self, image, mask):
        CALLS[self.name] += 1
        return [self.scale * float(image.mean()), self.scale * float(image.std())]

    def _feature_names(self):
        return [f"{self.name}_mean", f"{self.name}_std"]


class Learner(CountingStats):
    _stateless = False  # the one declaration a step that learns makes


@pytest.fixture(autouse=True)
def _fresh():
    clear_memory_cache()
    for key in CALLS:
        CALLS[key] = 0


@pytest.fixture
def samples(rng):
    return np.array([Sample.from_array(rng.random((12, 10)).astype(np.float32), label=i % 2) for i in range(7)],
                    dtype=object)


def _chain(cache):
    """An image step, then a union of a GLCM and a first-order extractor."""
    return Pipeline([("blur", GaussianFilter(sigma=1.0)),
                     ("union", FeatureUnion([("glcm", GLCMFeatures(levels=8, cache=cache)),
                                             ("fo", FirstOrderFeatures(use_mask=False, cache=cache))]))])


def test_engine_features_equal_the_uncached_per_sample_computation(samples, tmp_path):
    reference = np.vstack([_chain(cache=False).transform([s]) for s in samples])
    for cache in (True, str(tmp_path / "cache")):
        store = FeatureStore(_chain(cache), chunk_size=3)  # chunks of 3, 3 and 1
        first = store.transform(samples)
        again = store.transform(samples)  # every sample from the cache now
        clear_memory_cache()
        from_disk = store.transform(samples) if cache is not True else again
        for result in (first, again, from_disk):
            assert isinstance(result, FeatureResult) and result.errors == {}
            # exact: the same float operations on the same pixels; the cache stores the computed bytes.
            np.testing.assert_array_equal(result.features, reference)
            np.testing.assert_array_equal(result.index, np.arange(len(samples)))  # exact: integer positions
    # A feature extractor's own transform is the engine on that extractor alone.
    bank = FeatureBank([("glcm", GLCMFeatures(levels=8)), ("fo", FirstOrderFeatures(use_mask=False))])
    blurred = GaussianFilter(sigma=1.0).transform(samples)
    np.testing.assert_array_equal(bank.transform(blurred), reference)  # exact: the same computation as above


def test_each_sample_is_computed_once_across_calls_and_cached_samples_skip_preprocessing(samples):
    prefix = Pipeline([("blur", CountingBlur()),
                       ("union", FeatureUnion([("a", CountingStats("a")), ("b", CountingStats("b", scale=2.0))]))])
    store = FeatureStore(prefix, chunk_size=2)
    first = store.transform(samples[:5])
    assert CALLS == {"blur": 5, "a": 5, "b": 5}  # the blur once per image, shared by both extractors
    second = store.transform(samples)  # 5 cached, 2 new
    assert CALLS == {"blur": 7, "a": 7, "b": 7}
    np.testing.assert_array_equal(second.features[:5], first.features)  # exact: read back from the cache
    # Changing a parameter of one extractor is a new cache entry for it alone; the images it needs
    # are blurred again (the other extractor's entries are still found).
    prefix.set_params(union__b__scale=3.0)
    third = FeatureStore(prefix).transform(samples)
    assert CALLS == {"blur": 14, "a": 7, "b": 14}
    np.testing.assert_allclose(third.features[:, 2:], 1.5 * second.features[:, 2:], rtol=1e-12)
    # Without a cache, everything is computed on every call.
    uncached = Pipeline([("blur", CountingBlur()), ("a", CountingStats("a", cache=False))])
    for _ in range(2):
        FeatureStore(uncached).transform(samples)
    assert CALLS["a"] == 7 + 2 * len(samples)


def test_the_prefix_passed_in_is_not_changed_and_its_fitted_copy_is_kept(samples):
    prefix = Pipeline([("blur", CountingBlur()), ("a", CountingStats("a"))])
    store = FeatureStore(prefix)
    assert store.fitted_prefix is None
    store.transform(samples)
    assert store.fitted_prefix is not prefix and store.fitted_prefix.get_params()["a__scale"] == 1.0


def test_failing_samples_are_excluded_and_named(samples, tmp_path):
    paths = []
    for i in range(4):
        path = tmp_path / f"ok{i}.png"
        Image.fromarray((np.arange(80, dtype=np.uint8).reshape(8, 10) * (i + 1))).save(path)
        paths.append(path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    files = np.array([Sample.from_path(p) for p in paths[:2]] + [Sample.from_path(broken)]
                     + [Sample.from_path(p) for p in paths[2:]], dtype=object)
    prefix = Pipeline([("blur", CountingBlur()), ("a", CountingStats("a"))])

    result = FeatureStore(prefix, chunk_size=2).transform(files, on_error="exclude")
    assert list(result.errors) == [2]
    assert isinstance(result.errors[2], ImageReadError) and "broken.png" in str(result.errors[2])
    np.testing.assert_array_equal(result.index, [0, 1, 3, 4])  # exact: integer positions
    reference = np.vstack([Pipeline([("blur", CountingBlur()), ("a", CountingStats("a", cache=False))])
                           .transform([s]) for s in files[result.index]])
    # exact: the same float operations on the same decoded pixels.
    np.testing.assert_array_equal(result.features, reference)

    with pytest.raises(ImageReadError, match="broken.png"):
        FeatureStore(prefix, chunk_size=2).transform(files)
    with pytest.raises(ValueError, match=r"on_error must be one of \['raise', 'exclude'\]; got 'skip'"):
        FeatureStore(prefix).transform(files, on_error="skip")
    with pytest.raises(ValueError, match="chunk_size must be a positive number of samples or None; got 0"):
        FeatureStore(prefix, chunk_size=0)


def test_timings_and_outputs_of_other_prefixes(samples, rng):
    no_image_steps = FeatureStore(Pipeline([("a", CountingStats("a"))])).transform(samples)
    assert no_image_steps.preprocess_s == 0.0 and no_image_steps.features.shape == (7, 2)
    # Only image steps: the derived samples themselves, under their derived keys.
    derived = FeatureStore(Pipeline([("blur", CountingBlur())]), chunk_size=4).transform(samples).features
    assert [d.key for d in derived] == [d.key for d in CountingBlur().transform(samples)]
    # A stateless scikit-learn transformer on feature rows: chunks of a 2-D array.
    X = rng.random((9, 4))
    rows = FeatureStore(Normalizer(), chunk_size=4).transform(X).features
    np.testing.assert_allclose(rows, Normalizer().transform(X), rtol=1e-15)
    empty = FeatureStore(CountingStats("a")).transform(samples[:0]).features
    assert empty.shape == (0, 2)


def test_statelessness_is_the_requires_fit_tag_read_in_one_place():
    assert is_stateless(CountingStats()) and CountingStats().__sklearn_tags__().requires_fit is False
    assert not is_stateless(Learner()) and Learner().__sklearn_tags__().requires_fit is True
    assert is_stateless(CountingBlur()) and is_stateless(Normalizer())  # scikit-learn's own tag
    assert not is_stateless(StandardScaler()) and not is_stateless(SMOTE())
    assert is_stateless("passthrough") and is_stateless(None) and not is_stateless("drop")
    union = FeatureUnion([("a", CountingStats()), ("gone", "drop")])
    assert is_stateless(union) and is_stateless(Pipeline([("blur", CountingBlur()), ("u", union)]))
    assert not is_stateless(FeatureUnion([("a", CountingStats()), ("l", Learner())]))
    assert not is_stateless(FeatureUnion([("gone", "drop")]))
    bank = FeatureBank([("a", CountingStats()), ("l", Learner())])
    assert not is_stateless(bank) and bank.__sklearn_tags__().requires_fit is True
    assert step_is_stateless is is_stateless  # the search's name for the same function


def test_grid_list_is_public_and_names_the_bad_item():
    assert grid_list({"svc__C": [1]}) == [{"svc__C": [1]}] and grid_list(None) == []
    with pytest.raises(TypeError, match=r"param_grid\[1\] must be a dict; got str"):
        grid_list([{"svc__C": [1]}, "svc__C"])
