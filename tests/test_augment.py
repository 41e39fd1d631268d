"""AugmentingSampler: pixels against numpy / OpenCV / hand computation, determinism, and no leak into test folds."""

import pickle

import cv2
import numpy as np
import pytest
from imblearn.base import is_sampler
from imblearn.pipeline import Pipeline
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_validate

from featurepipe import FeatureExtractor, Sample, as_samples
from featurepipe.augment import Augmentation, AugmentingSampler
from featurepipe.preprocessing import ToGray
from featurepipe.sample import derive_key


def _images(n, shape=(12, 12), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random(shape).astype(np.float32) for _ in range(n)]


def _samples(n, shape=(12, 12), seed=0, labels=None, with_mask=False):
    out = []
    for i, image in enumerate(_images(n, shape, seed)):
        mask = None
        if with_mask:
            mask = np.zeros(shape[:2], bool)
            mask[1:4, 2:7] = True
        out.append(Sample.from_array(image, mask, label=None if labels is None else labels[i], group=f"p{i}"))
    return out


def _copies(X_res, n_original):
    return list(X_res[n_original:])


# ---------------------------------------------------------------------------------- pixels
def test_rotation_by_90_equals_numpy_rot90():
    X = _samples(3, shape=(10, 10), with_mask=True)
    X_res, _ = AugmentingSampler(1, horizontal_flip=False, rotation_range=(90, 90),
                                 random_state=0).fit_resample(X, np.array([0, 1, 1]))
    for parent, copy in zip(X, _copies(X_res, 3)):
        assert copy.meta["augmentation"]["angle"] == 90.0  # exact: the drawn angle is stored, not computed
        image, mask = copy.load()
        # positive angles turn counter-clockwise as displayed, like np.rot90
        np.testing.assert_allclose(image, np.rot90(parent.image), atol=1e-6)
        # exact: pixels copied or selected, no arithmetic
        np.testing.assert_array_equal(mask, np.rot90(parent.mask))


def test_rotation_by_180_of_non_square_rgb_equals_double_flip():
    X = _samples(2, shape=(7, 11, 3))
    X_res, _ = AugmentingSampler(1, horizontal_flip=False, rotation_range=(180, 180),
                                 random_state=0).fit_resample(X, [0, 1])
    for parent, copy in zip(X, _copies(X_res, 2)):
        np.testing.assert_allclose(copy.image, parent.image[::-1, ::-1], atol=1e-6)


def test_flips_equal_numpy_flips():
    X = _samples(8, shape=(6, 9), with_mask=True)
    X_res, _ = AugmentingSampler(2, horizontal_flip=True, vertical_flip=True,
                                 random_state=3).fit_resample(X, [0, 1] * 4)
    copies = _copies(X_res, 8)
    seen = set()
    for i, copy in enumerate(copies):
        parent = X[i // 2]
        params = copy.meta["augmentation"]
        expected, expected_mask = parent.image, parent.mask
        if params["flip_horizontal"]:
            expected, expected_mask = expected[:, ::-1], expected_mask[:, ::-1]
        if params["flip_vertical"]:
            expected, expected_mask = expected[::-1], expected_mask[::-1]
        image, mask = copy.load()
        # exact: pixels copied or selected, no arithmetic
        np.testing.assert_array_equal(image, expected)  # flips are exact
        np.testing.assert_array_equal(mask, expected_mask)
        seen.add((params["flip_horizontal"], params["flip_vertical"]))
    assert seen == {(False, False), (False, True), (True, False), (True, True)}


def test_integer_shift_by_hand():
    image = np.arange(64, dtype=np.float32).reshape(8, 8) / 64
    X_res, _ = AugmentingSampler(1, horizontal_flip=False, shift_range=(0.25, 0.25), fill_value=0.5,
                                 random_state=0).fit_resample([image, image], [0, 1])
    expected = np.full((8, 8), 0.5, np.float32)
    expected[2:, 2:] = image[:-2, :-2]  # 0.25 x 8 = 2 pixels down and right
    np.testing.assert_allclose(X_res[2].image, expected, atol=1e-6)


def test_zoom_of_a_ramp_by_hand():
    # linear interpolation of a linear ramp is exact: zoom z about the centre c maps column j to c + (j - c) / z
    ramp = np.tile(np.arange(9, dtype=np.float32) / 10, (9, 1))
    X_res, _ = AugmentingSampler(1, horizontal_flip=False, zoom_range=(2.0, 2.0),
                                 random_state=0).fit_resample([ramp, ramp], [0, 1])
    cols = 4 + (np.arange(9) - 4) / 2.0
    np.testing.assert_allclose(X_res[2].image, np.tile(cols / 10, (9, 1)), atol=1e-5)


_CV_FLAGS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}
_CV_BORDERS = {"reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT,
               "nearest": cv2.BORDER_REPLICATE, "wrap": cv2.BORDER_WRAP}


@pytest.mark.parametrize("interpolation, fill_mode",
                         [("linear", "reflect"), ("cubic", "constant"), ("nearest", "nearest"), ("linear", "wrap")])
def test_random_augmentations_equal_opencv_called_directly(interpolation, fill_mode):
    X = _samples(4, shape=(15, 19, 3), with_mask=True, seed=4)
    sampler = AugmentingSampler(3, horizontal_flip=True, vertical_flip=True, rotation_range=25,
                                zoom_range=0.2, shift_range=0.1, brightness_range=(0.7, 1.3),
                                fill_mode=fill_mode, fill_value=0.25, interpolation=interpolation,
                                random_state=42)
    X_res, y_res = sampler.fit_resample(X, [0, 1, 0, 1])
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(y_res, [0, 1, 0, 1] + [0] * 3 + [1] * 3 + [0] * 3 + [1] * 3)
    for i, copy in enumerate(_copies(X_res, 4)):
        parent = X[i // 3]
        p = copy.meta["augmentation"]
        assert copy.meta["augmented_from"] == parent.key
        assert -25 <= p["angle"] <= 25 and 0.8 <= p["zoom"] <= 1.2 and 0.7 <= p["brightness"] <= 1.3
        assert abs(p["shift_x"]) <= 0.1 and abs(p["shift_y"]) <= 0.1
        image, mask = parent.load()
        if p["flip_horizontal"]:
            image, mask = np.fliplr(image), np.fliplr(mask)
        if p["flip_vertical"]:
            image, mask = np.flipud(image), np.flipud(mask)
        matrix = cv2.getRotationMatrix2D((9.0, 7.0), p["angle"], p["zoom"])  # centre ((W-1)/2, (H-1)/2)
        matrix[:, 2] += (p["shift_x"] * 19, p["shift_y"] * 15)
        ref = cv2.warpAffine(np.ascontiguousarray(image), matrix, (19, 15), flags=_CV_FLAGS[interpolation],
                             borderMode=_CV_BORDERS[fill_mode], borderValue=(0.25, 0.25, 0.25))
        if interpolation == "cubic":  # documented: cubic overshoot clipped to the input / fill range
            ref = np.clip(ref, min(image.min(), 0.25), max(image.max(), 0.25))
        ref = np.clip(ref * np.float32(p["brightness"]), 0, 1)
        ref_mask = cv2.warpAffine(np.ascontiguousarray(mask).astype(np.uint8), matrix, (19, 15),
                                  flags=cv2.INTER_NEAREST, borderMode=_CV_BORDERS[fill_mode]) > 0
        got, got_mask = copy.load()
        np.testing.assert_allclose(got, ref, atol=1e-6)
        # exact: integer, boolean or string values
        np.testing.assert_array_equal(got_mask, ref_mask)
        assert copy.label == parent.label and copy.group == parent.group


# ---------------------------------------------------------------------------------- determinism and keys
def test_same_random_state_same_keys_and_pixels():
    X = _samples(5, seed=1)
    y = [0, 0, 1, 1, 1]
    kwargs = dict(rotation_range=30, zoom_range=0.1, shift_range=0.1, brightness_range=(0.8, 1.2))
    a, ya = AugmentingSampler(2, random_state=7, **kwargs).fit_resample(X, y)
    b, yb = AugmentingSampler(2, random_state=7, **kwargs).fit_resample(X, y)
    c, _ = AugmentingSampler(2, random_state=8, **kwargs).fit_resample(X, y)
    assert [s.key for s in a] == [s.key for s in b]
    # exact: integer, boolean or string values
    np.testing.assert_array_equal(ya, yb)
    for s, t in zip(a, b):
        # exact: same random_state, same code path
        np.testing.assert_array_equal(s.image, t.image)
    assert [s.key for s in a[:5]] == [s.key for s in c[:5]] == [s.key for s in X]  # originals untouched
    assert not set(s.key for s in a[5:]) & set(s.key for s in c[5:])
    assert len({s.key for s in a[5:]}) == 10  # continuous random parameters: all copies distinct
    # the key is exactly hash(parent key, parameters)
    for s in a[5:]:
        parent_key = s.meta["augmented_from"]
        assert s.key == derive_key(parent_key, Augmentation(**s.meta["augmentation"]).token())
    # a pickled copy produces the same pixels
    # exact: pickle/clone round trip of the same fitted object
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(a[7])).image, a[7].image)


def test_identity_parameters_share_a_key_and_keep_pixels():
    # no flip, no rotation: every copy is the identity, so copies of one parent share one key
    X = _samples(2, seed=2)
    X_res, _ = AugmentingSampler(3, horizontal_flip=False, random_state=0).fit_resample(X, [0, 1])
    keys = [s.key for s in X_res[2:]]
    assert keys[:3] == [keys[0]] * 3 and keys[3:] == [keys[3]] * 3 and keys[0] != keys[3]
    # exact: pixels copied or selected, no arithmetic
    np.testing.assert_array_equal(X_res[2].image, X[0].image)


# ---------------------------------------------------------------------------------- sampling strategy
@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("all", {"a": 2, "b": 2, "c": 2}),
        ("minority", {"a": 0, "b": 0, "c": 2}),
        ("majority", {"a": 2, "b": 0, "c": 0}),
        ("not majority", {"a": 0, "b": 2, "c": 2}),
        ("not minority", {"a": 2, "b": 2, "c": 0}),
        (["b"], {"a": 0, "b": 2, "c": 0}),
        ({"a": 1, "c": 4}, {"a": 1, "b": 0, "c": 4}),
    ],
)
def test_sampling_strategy(strategy, expected):
    y = np.array(["a"] * 5 + ["b"] * 3 + ["c"] * 2)
    X = _samples(10, shape=(4, 4))
    sampler = AugmentingSampler(2, sampling_strategy=strategy, random_state=0)
    X_res, y_res = sampler.fit_resample(X, y)
    assert sampler.sampling_strategy_ == expected
    counts = {c: int(np.sum(y_res == c)) for c in "abc"}
    assert counts == {c: int(np.sum(y == c)) * (1 + expected[c]) for c in "abc"}
    assert len(X_res) == len(y_res)
    for sample, label in zip(X_res[10:], y_res[10:]):  # each copy's label is its parent's
        parent_index = next(i for i, s in enumerate(X) if s.key == sample.meta["augmented_from"])
        assert y[parent_index] == label


def test_input_types_and_outputs(tmp_path):
    from PIL import Image

    paths = []
    for i, image in enumerate(_images(3, (5, 6), seed=9)):
        path = tmp_path / f"img{i}.png"
        Image.fromarray((image * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    # the output container follows the input's (imbalanced-learn's rule): object array -> object array
    X_res, y_res = AugmentingSampler(1, random_state=0).fit_resample(np.array(paths, dtype=object), [0, 1, 0])
    assert isinstance(X_res, np.ndarray) and X_res.dtype == object and len(X_res) == 6
    assert [s.key for s in X_res[:3]] == [s.key for s in as_samples(paths)]
    assert X_res[4].path == paths[1]  # a copy keeps its source path for error messages
    X_list, y_list = AugmentingSampler(1, random_state=0).fit_resample(paths, [0, 1, 0])
    assert isinstance(X_list, list) and y_list == [0, 1, 0, 0, 1, 0]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"n_copies": 0}, r"'n_copies' parameter of AugmentingSampler must be an int in the range \[1, inf\)\. Got 0"),
        ({"rotation_range": -5}, r"'rotation_range' parameter of AugmentingSampler must be a float in the range "
                                 r"\[0\.0, inf\), an instance of 'tuple' or an instance of 'list'\. Got -5"),
        ({"rotation_range": (10, -10)}, r"AugmentingSampler: rotation_range must be .*low <= high; got \(10, -10\)"),
        ({"zoom_range": 1.0}, r"AugmentingSampler: zoom_range must be a range of values > 0 \(it gives \(0, 2\)\); "
                              r"got 1\.0"),
        ({"brightness_range": 0.2}, r"'brightness_range' parameter of AugmentingSampler must be None, .*'tuple'.*"
                                    r"Got 0\.2"),
        ({"fill_mode": "mirror"}, r"'fill_mode' parameter of AugmentingSampler must be a str among "
                                  r"\{(?=.*'reflect')(?=.*'constant').*\}\. Got 'mirror'"),
        ({"interpolation": "area"}, r"'interpolation' parameter of AugmentingSampler must be a str among "
                                    r"\{(?=.*'linear')(?=.*'cubic').*\}\. Got 'area'"),
        ({"horizontal_flip": "yes"}, r"'horizontal_flip' parameter of AugmentingSampler must be an instance of 'bool'"
                                     r".*Got 'yes'"),
        ({"sampling_strategy": "auto"}, r"'sampling_strategy' parameter of AugmentingSampler must be a str among "
                                        r"\{(?=.*'all')(?=.*'minority').*\}, an instance of 'list'.*Got 'auto'"),
        ({"sampling_strategy": ["z"]}, r"sampling_strategy names classes \['z'\] that are not in y"),
        ({"sampling_strategy": {"a": -1}}, r"sampling_strategy\['a'\] must be an integer >= 0 .*; got -1"),
    ],
)
def test_bad_parameters_are_named(params, message):
    X, y = _samples(4, shape=(4, 4)), ["a", "a", "b", "b"]
    with pytest.raises(ValueError, match=message):
        AugmentingSampler(**params).fit_resample(X, y)


def test_bad_inputs():
    X = _samples(3, shape=(4, 4))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        AugmentingSampler().fit_resample(X, [0, 1])
    with pytest.raises(ValueError, match="Unknown label type"):
        AugmentingSampler().fit_resample(X, [0.5, 1.5, 2.5])
    with pytest.raises(TypeError, match=r"X\[1\] is a int"):
        AugmentingSampler().fit_resample([X[0], 3, X[2]], [0, 1, 0])


def test_sklearn_contract():
    sampler = AugmentingSampler(2, rotation_range=(5, 10), sampling_strategy={"a": 1}, random_state=3)
    assert is_sampler(sampler) and not hasattr(sampler, "transform")
    params = sampler.get_params()
    assert clone(sampler).get_params() == params
    assert pickle.loads(pickle.dumps(sampler)).get_params() == params
    assert sampler.set_params(n_copies=4).n_copies == 4
    stored = (5, 10)
    assert AugmentingSampler(rotation_range=stored).rotation_range is stored


# ---------------------------------------------------------------------------------- no leak into test folds
class _KeySpy(TransformerMixin, BaseEstimator):
    """Pass-through step recording the sample keys it sees while fitting and at predict time."""

    def fit(self, X, y=None):
        return self

    def fit_transform(self, X, y=None):
        self.fit_keys_ = [s.key for s in X]
        self.fit_parents_ = [s.meta.get("augmented_from") for s in X]
        self.predict_keys_ = []
        return X

    def transform(self, X):
        self.predict_keys_.append([s.key for s in X])
        return X


class _Tiny(FeatureExtractor):
    """Tiny extractor for tests: mean, std and left-minus-right mean of the (gray) image."""

    def __init__(self, cache=True, n_jobs=None):
        self.cache = cache
        self.n_jobs = n_jobs

    def _extract(self, image, mask):
        half = image.shape[1] // 2
        return [image.mean(), image.std(), image[:, :half].mean() - image[:, half:].mean()]

    def _feature_names(self):
        return ["mean", "std", "left_minus_right"]


def _toy(n=18):
    rng = np.random.default_rng(5)
    X, y = [], []
    for i in range(n):
        label = i % 3 == 0  # imbalanced: 6 positives, 12 negatives
        image = rng.random((10, 10, 3)) * 0.4
        image[2:8, 2:8] += 0.5 * label
        X.append(Sample.from_array(image.astype(np.float32)))
        y.append(int(label))
    return np.array(X, dtype=object), np.array(y)


def test_test_folds_are_never_augmented_under_cross_validate():
    X, y = _toy()
    pipe = Pipeline([
        ("gray", ToGray()),
        ("augment", AugmentingSampler(2, rotation_range=20, vertical_flip=True, random_state=0)),
        ("spy", _KeySpy()),
        ("features", _Tiny()),
        ("clf", LogisticRegression()),
    ])
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    result = cross_validate(pipe, X, y, cv=cv, return_estimator=True, return_indices=True)
    gray_keys = np.array([s.key for s in ToGray().transform(X)], dtype=object)
    for fitted, train, test in zip(result["estimator"], result["indices"]["train"], result["indices"]["test"]):
        spy = fitted.named_steps["spy"]
        # at predict time the model saw exactly the test fold, un-augmented, in order
        assert spy.predict_keys_ == [list(gray_keys[test])]
        # while fitting: the training fold followed by 2 augmented copies of each training image
        assert spy.fit_keys_[: len(train)] == list(gray_keys[train])
        assert len(spy.fit_keys_) == 3 * len(train)
        assert set(spy.fit_parents_[len(train):]) == set(gray_keys[train])
        assert not set(spy.fit_keys_) & set(gray_keys[test])
        assert not set(spy.fit_parents_) & set(gray_keys[test])
        # and its predictions are those of the classifier on the plain test images' features
        plain = _Tiny().transform(ToGray().transform(X[test]))
        # exact: predicted class labels
        np.testing.assert_array_equal(fitted.predict(X[test]), fitted.named_steps["clf"].predict(plain))


def test_augmentation_inside_grid_search_only_touches_training_folds():
    X, y = _toy()
    pipe = Pipeline([
        ("augment", AugmentingSampler(1, random_state=0, sampling_strategy="minority")),
        ("spy", _KeySpy()),
        ("features", _Tiny()),
        ("clf", LogisticRegression()),
    ])
    search = GridSearchCV(pipe, {"augment__n_copies": [1, 3]}, cv=StratifiedKFold(3), refit=True).fit(X, y)
    spy = search.best_estimator_.named_steps["spy"]
    n_copies = search.best_params_["augment__n_copies"]
    # refit on all 18 images: 6 minority images get n_copies copies each
    assert len(spy.fit_keys_) == 18 + 6 * n_copies
    search.predict(X)
    assert spy.predict_keys_[-1] == [s.key for s in X]
    # the fitted model equals one trained by hand on the explicit augmented set
    X_aug, y_aug = AugmentingSampler(n_copies, random_state=0, sampling_strategy="minority").fit_resample(X, y)
    manual = LogisticRegression().fit(_Tiny().transform(X_aug), y_aug)
    np.testing.assert_allclose(search.best_estimator_.named_steps["clf"].coef_, manual.coef_, rtol=1e-6)
