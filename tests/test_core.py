"""Sample keys, lazy derivation, the per-sample cache and the step base classes."""

import pickle
from numbers import Real

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC
from sklearn.utils._param_validation import Interval

from featurepipe import FeatureExtractor, ImageStep, Sample, as_samples, is_stateless, step_token
from featurepipe.cache import FeatureCache, clear_memory_cache
from featurepipe.dataset import Dataset


class Invert(ImageStep):
    _parameter_constraints = {"gain": [Interval(Real, 0, None, closed="neither")]}

    def __init__(self, gain=1.0):
        self.gain = gain

    def _transform_image(self, image, mask):
        return (self.gain * (1.0 - image)).astype(np.float32), mask


CALLS = []


class MeanStd(FeatureExtractor):
    def __init__(self, scale=1.0, cache=True, n_jobs=None):
        self.scale = scale
        self.cache = cache
        self.n_jobs = n_jobs

    def _extract(self, image, mask):
        CALLS.append(1)
        pixels = image[mask] if mask is not None else image
        return [self.scale * pixels.mean(), self.scale * pixels.std()]

    def _feature_names(self):
        return ["mean", "std"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_memory_cache()
    CALLS.clear()


def test_file_key_is_content_hash(tmp_path, rng):
    pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(pixels).save(a)
    Image.fromarray(pixels).save(b)
    sa, sb = Sample.from_path(a), Sample.from_path(b)
    assert sa.key == sb.key  # same bytes, same key, whatever the file name
    assert Sample.from_path(a, mode="rgb").key != sa.key  # different pixels out
    # exact: one correctly rounded division per pixel, identical on every SIMD path
    np.testing.assert_array_equal(sa.image, pixels / np.float32(255))
    assert sa.path == str(a) and sa.name == "a.png"


def test_masks_are_merged_and_keyed(tmp_path, rng):
    Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(tmp_path / "i.png")
    m1, m2 = np.zeros((6, 6), np.uint8), np.zeros((6, 6), np.uint8)
    m1[0, 0], m2[5, 5] = 255, 255
    Image.fromarray(m1).save(tmp_path / "m1.png")
    Image.fromarray(m2).save(tmp_path / "m2.png")
    one = Sample.from_path(tmp_path / "i.png", tmp_path / "m1.png")
    both = Sample.from_path(tmp_path / "i.png", [tmp_path / "m1.png", tmp_path / "m2.png"])
    assert one.key != both.key
    assert both.mask.sum() == 2 and both.mask[0, 0] and both.mask[5, 5]


def test_mask_shape_mismatch_names_files(tmp_path, rng):
    Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(tmp_path / "i.png")
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(ValueError, match=r"m\.png.*i\.png"):
        Sample.from_path(tmp_path / "i.png", tmp_path / "m.png").load()
    with pytest.raises(ValueError, match="mask has shape"):
        Sample.from_array(np.zeros((4, 4)), mask=np.zeros((4, 5), bool))


def test_array_key_depends_on_pixels_only(rng):
    image = rng.random((5, 5)).astype(np.float32)
    assert Sample.from_array(image).key == Sample.from_array(image.copy(), label=1).key
    assert Sample.from_array(image).key != Sample.from_array(image * 0.5).key  # in [0, 1]: floats must be
    assert Sample.from_array(np.zeros((2, 2), np.uint8)).key == Sample.from_array(np.zeros((2, 2), np.float32)).key


def test_sample_is_immutable_and_picklable(rng):
    s = Sample.from_array(rng.random((4, 4)), label="benign", group="p1", meta={"site": "A"})
    with pytest.raises(AttributeError, match="immutable"):
        s.label = "x"
    with pytest.raises(TypeError):
        s.meta["site"] = "B"
    t = pickle.loads(pickle.dumps(s))
    assert t == s and t.meta["site"] == "A"
    # exact: pickle/clone round trip of the same fitted object
    np.testing.assert_array_equal(t.image, s.image)
    assert s.replace(label="malignant").key == s.key


def test_as_samples_accepts_public_edge_inputs(tmp_path, rng):
    Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(tmp_path / "p.png")
    stack = rng.random((3, 4, 4))
    out = as_samples(list(stack) + [str(tmp_path / "p.png")])
    assert out.dtype == object and out.shape == (4,)
    assert len(as_samples(stack)) == 3
    with pytest.raises(ValueError, match=r"shape \(3, 4\)"):
        as_samples(np.zeros((3, 4)))
    with pytest.raises(TypeError, match=r"X\[1\] is a int"):
        as_samples([stack[0], 5])
    with pytest.raises(TypeError, match="single str"):
        as_samples("p.png")


def test_image_step_is_lazy_and_keyed_by_params(rng):
    image = rng.random((4, 4)).astype(np.float32)
    samples = as_samples([image])
    derived = Invert(gain=2.0).transform(samples)
    assert derived[0].key == Invert(gain=2.0).transform(samples)[0].key
    assert derived[0].key != Invert(gain=3.0).transform(samples)[0].key
    assert derived[0].key != samples[0].key
    np.testing.assert_allclose(derived[0].image, 2.0 * (1 - image), rtol=1e-6)
    # changing the step after transform must not change what the derived sample computes
    step = Invert(gain=2.0)
    lazy = step.transform(samples)[0]
    step.set_params(gain=5.0)
    np.testing.assert_allclose(lazy.image, 2.0 * (1 - image), rtol=1e-6)
    with pytest.raises(ValueError, match=r"'gain' parameter of Invert must be a float in the range \(0\.0, inf\)\. "
                                         "Got -1 instead"):
        Invert(gain=-1).fit(samples)


def test_feature_cache_hits_and_identity(rng, tmp_path):
    images = [rng.random((6, 6)).astype(np.float32) for _ in range(5)]
    uncached = MeanStd(cache=False).transform(images)
    assert len(CALLS) == 5
    first = MeanStd().transform(images)
    again = MeanStd().transform(images[::-1])
    assert len(CALLS) == 10  # the second call computed nothing
    # exact: the same function on the same input (one code path, one process)
    np.testing.assert_array_equal(first, uncached)
    # exact: the cache returns the very bytes it stored
    np.testing.assert_array_equal(again, uncached[::-1])
    expected = np.array([[im.mean(), im.std()] for im in images])
    np.testing.assert_allclose(uncached, expected, rtol=1e-6)
    # a parameter change is a different cache entry
    np.testing.assert_allclose(MeanStd(scale=2.0).transform(images), 2 * uncached, rtol=1e-12)
    # duplicates inside one call are computed once
    CALLS.clear()
    MeanStd(cache=False).transform([images[0], images[0]])
    assert len(CALLS) == 1


def test_disk_cache_survives_process_memory(rng, tmp_path):
    images = [rng.random((6, 6)).astype(np.float32) for _ in range(3)]
    a = MeanStd(cache=str(tmp_path)).transform(images)
    clear_memory_cache()
    CALLS.clear()
    b = MeanStd(cache=str(tmp_path)).transform(images)
    assert CALLS == [] and np.array_equal(a, b)
    assert len(list(tmp_path.rglob("*" + FeatureCache.ENTRY_SUFFIX))) == 3
    (step_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert "MeanStd(scale=1.0)" in (step_dir / "STEP.txt").read_text()


def test_cache_keys_ignore_non_output_params():
    assert step_token(MeanStd(cache=True, n_jobs=2)) == step_token(MeanStd(cache="/tmp/x", n_jobs=None))
    assert step_token(MeanStd(scale=1.0)) != step_token(MeanStd(scale=2.0))
    cache = FeatureCache()
    assert cache.step_id(step_token(MeanStd())) == cache.step_id(step_token(clone(MeanStd())))


def test_parallel_equals_sequential(rng):
    images = [rng.random((6, 6)).astype(np.float32) for _ in range(4)]
    # exact: the same function on the same input (one code path, one process)
    np.testing.assert_array_equal(MeanStd(cache=False, n_jobs=2).transform(images),
                                  MeanStd(cache=False).transform(images))


def test_pipeline_grid_search_with_derived_samples(rng):
    bright = [np.clip(rng.normal(0.7, 0.1, (8, 8)), 0, 1) for _ in range(10)]
    dark = [np.clip(rng.normal(0.3, 0.1, (8, 8)), 0, 1) for _ in range(10)]
    X, y = as_samples(bright + dark), np.array([1] * 10 + [0] * 10)
    pipe = Pipeline([("inv", Invert()), ("feat", MeanStd()), ("svm", SVC())])
    search = GridSearchCV(pipe, {"svm__C": [0.1, 1.0], "inv__gain": [1.0, 2.0]}, cv=StratifiedKFold(4))
    search.fit(X, y)
    assert search.best_score_ == 1.0  # exact: mean of accuracies that are all 1
    assert is_stateless(pipe.steps[0][1]) and is_stateless(pipe.steps[1][1])
    # 20 images x 2 gains, each computed exactly once across 4 folds x 4 settings + refit
    assert len(CALLS) == 40
    reloaded = pickle.loads(pickle.dumps(search.best_estimator_))
    # exact: predicted class labels
    np.testing.assert_array_equal(reloaded.predict(X), y)


def test_extractor_errors_name_the_sample(rng):
    class Fails(MeanStd):
        def _extract(self, image, mask):
            raise ValueError("mask is empty")

    s = Sample.from_array(rng.random((3, 3)), meta={"path": "/data/x.png"})
    with pytest.raises(ValueError, match=r"Fails on sample ./data/x.png.: mask is empty"):
        Fails(cache=False).transform([s])


def test_dataset_basics(rng):
    samples = [Sample.from_array(rng.random((3, 3)), label=lab, group=g)
               for lab, g in [("b", "p1"), ("m", "p1"), ("b", None)]]
    ds = Dataset(samples, name="toy", skipped=[("bad.png", "empty")])
    assert ds.class_counts() == {"b": 2, "m": 1}
    assert list(ds.groups[:2]) == ["p1", "p1"] and ds.groups[2].startswith("sample:")
    assert len(ds[[0, 2]]) == 2 and ds.skipped[0].reason == "empty"
    with pytest.raises(ValueError, match="has no label"):
        Dataset([Sample.from_array(rng.random((3, 3)))])
