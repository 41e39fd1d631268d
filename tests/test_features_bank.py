"""FeatureBank: concatenation, names, nested parameters, per-member caching, GridSearchCV, default bank.

Values are compared exactly with the members' own outputs (the bank only
concatenates them).
"""

import pickle

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from featurepipe import Sample, is_stateless
from featurepipe.cache import clear_memory_cache
from featurepipe.features import (
    ANALYSIS_MAX_SIDE,
    FeatureBank,
    FirstOrderFeatures,
    GLCMFeatures,
    HOGFeatures,
    LBPFeatures,
    DEFAULT_FAMILIES,
    CurveletFeatures,
    ShapeFeatures,
    cap_resolution,
    default_handcrafted_bank,
    first_order_features,
    glcm_features,
    hog_features,
    lbp_features,
    make_feature_bank,
)

HOG_SMALL = dict(size=(32, 32), pixels_per_cell=(8, 8), orientations=6)


class CountingFirstOrder(FirstOrderFeatures):
    """FirstOrderFeatures that counts how many images it really computes (cache misses)."""

    calls = 0

    def _extract(self, image, mask):
        type(self).calls += 1
        return super()._extract(image, mask)


def textures(rng, n=12, size=24):
    X, y = [], []
    for k in range(n):
        if k % 2:
            img = rng.random((size, size))
        else:
            img = np.tile(((np.arange(size) + rng.integers(0, 6)) % 6 < 3), (size, 1)) * 0.7 + 0.3 * rng.random(
                (size, size))
        mask = np.zeros((size, size), bool)
        mask[3:-3, 2:-2] = True
        X.append(Sample.from_array(img.astype(np.float32), mask=mask))
        y.append(k % 2)
    return X, np.array(y)


def small_bank(**kw):
    return FeatureBank([
        ("firstorder", FirstOrderFeatures()),
        ("glcm", GLCMFeatures(levels=16)),
        ("lbp", LBPFeatures()),
        ("hog", HOGFeatures(**HOG_SMALL)),
    ], **kw)


def test_concatenates_members_exactly(rng):
    X, _ = textures(rng, n=3)
    bank = small_bank()
    out = bank.fit_transform(X)
    ref = np.vstack([
        np.concatenate([first_order_features(s.image, s.mask)[0], glcm_features(s.image, s.mask, levels=16)[0],
                        lbp_features(s.image, s.mask)[0], hog_features(s.image, s.mask, **HOG_SMALL)[0]])
        for s in X
    ])
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal(out, ref)
    # exact: the cache returns the very bytes it stored
    assert_array_equal(bank.transform(X), ref)
    names = bank.get_feature_names_out()
    assert len(names) == out.shape[1]
    assert names[0] == "firstorder_mean" and "glcm_contrast_d1_mean" in names
    assert "lbp_uniform_p8_r1_b0" in names and names[-1].startswith("hog_b")
    # arrays and paths work as X too (converted once)
    arrays = [s.image for s in X]
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal(FeatureBank([("glcm", GLCMFeatures(levels=16))]).transform(arrays),
                       np.vstack([glcm_features(a, levels=16)[0] for a in arrays]))


def test_names_are_prefixed_only_when_needed():
    bank = FeatureBank([("glcm", GLCMFeatures(levels=8)), ("coarse", GLCMFeatures(levels=4)),
                        ("glcm_fine", GLCMFeatures(levels=32))])
    names = bank.get_feature_names_out().tolist()
    n = len(GLCMFeatures().get_feature_names_out())
    assert names[0] == "glcm_asm_d1_mean"
    assert names[n] == "coarse_glcm_asm_d1_mean"
    assert names[2 * n] == "glcm_fine_glcm_asm_d1_mean"
    # prefixing can collide: "first" + "x_firstorder_mean" == "first_x" + "firstorder_mean"
    clash = FeatureBank([("first", RenamedFirstOrder()), ("first_x", FirstOrderFeatures())])
    with pytest.raises(ValueError, match="not unique"):
        clash.get_feature_names_out()


class RenamedFirstOrder(FirstOrderFeatures):
    """First-order features whose first name is 'x_firstorder_mean'."""

    def _feature_names(self):
        return ["x_firstorder_mean"] + super()._feature_names()[1:]


def test_nested_params_clone_and_drop(rng):
    X, _ = textures(rng, n=2)
    bank = small_bank()
    params = bank.get_params()
    assert params["glcm__levels"] == 16 and params["hog__size"] == (32, 32)
    twin = clone(bank).set_params(glcm__levels=8, hog="drop")
    assert bank.get_params()["glcm__levels"] == 16
    out = twin.fit_transform(X)
    ref = np.hstack([FirstOrderFeatures().transform(X), GLCMFeatures(levels=8).transform(X),
                     LBPFeatures().transform(X)])
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal(out, ref)
    assert len(twin.get_feature_names_out()) == ref.shape[1]
    restored = pickle.loads(pickle.dumps(bank.fit(X)))
    # exact: pickle/clone round trip of the same fitted object
    assert_array_equal(restored.transform(X), bank.transform(X))


def test_each_member_keeps_its_cache(rng):
    clear_memory_cache()
    X, _ = textures(rng, n=4)
    CountingFirstOrder.calls = 0
    bank = FeatureBank([("firstorder", CountingFirstOrder()), ("glcm", GLCMFeatures(levels=16))])
    first = bank.fit_transform(X)
    assert CountingFirstOrder.calls == 4
    bank.set_params(glcm__levels=8)  # only GLCM changes: first-order features come from the cache
    second = bank.transform(X)
    assert CountingFirstOrder.calls == 4
    # exact: the cache returns the very bytes it stored
    assert_array_equal(second[:, :27], first[:, :27])
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal(second[:, 27:], GLCMFeatures(levels=8, cache=False).transform(X))
    CountingFirstOrder.calls = 0
    FeatureBank([("firstorder", CountingFirstOrder(cache=False))]).transform(X)
    assert CountingFirstOrder.calls == 4


def test_threads_give_the_same_result(rng):
    X, _ = textures(rng, n=3)
    clear_memory_cache()
    sequential = small_bank().transform(X)
    clear_memory_cache()
    threaded = small_bank(n_jobs=2).transform(X)
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal(sequential, threaded)


def test_weights_stateless_tag_and_errors(rng):
    X, _ = textures(rng, n=2)
    bank = FeatureBank([("firstorder", FirstOrderFeatures()), ("glcm", GLCMFeatures(levels=8))],
                       transformer_weights={"glcm": 2.0})
    out = bank.fit_transform(X)
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal(out[:, 27:], 2.0 * GLCMFeatures(levels=8).transform(X))
    assert is_stateless(bank) and bank.__sklearn_tags__().requires_fit is False
    with pytest.raises(ValueError, match="passthrough"):
        FeatureBank([("a", "passthrough")]).fit(X)
    with pytest.raises(ValueError, match="transformer_list"):
        FeatureBank([]).fit(X)
    with pytest.raises(ValueError, match="__"):
        FeatureBank([("a__b", GLCMFeatures())]).fit(X)
    with pytest.raises(TypeError, match="fit parameters"):
        bank.fit(X, sample_weight=np.ones(2))


def test_make_feature_bank_names():
    bank = make_feature_bank(FirstOrderFeatures(), GLCMFeatures(), GLCMFeatures(levels=8), HOGFeatures())
    assert [name for name, _ in bank.transformer_list] == ["firstorder", "glcm", "glcm2", "hog"]
    assert bank.get_feature_names_out()[0] == "firstorder_mean"
    with pytest.raises(ValueError, match="at least one"):
        make_feature_bank()


def test_default_bank(rng):
    bank = default_handcrafted_bank()
    assert [name for name, _ in bank.transformer_list] == ["firstorder", "glcm", "lbp", "hog", "curvelet"]
    assert bank.get_params()["glcm__empty_mask"] == "error" and bank.get_params()["curvelet__roi"] == "image"
    names = bank.get_feature_names_out()
    assert len(names) == sum(len(est.get_feature_names_out()) for _, est in bank.transformer_list)
    assert names[-1].startswith("curvelet_")
    with_shape = default_handcrafted_bank(families=DEFAULT_FAMILIES + ("shape",), empty_mask="nan")
    assert with_shape.get_params()["shape__empty_mask"] == "nan"
    with pytest.raises(ValueError, match="shape"):
        default_handcrafted_bank(families=("glcm", "shape"), empty_mask="image")
    nan_bank = default_handcrafted_bank(empty_mask="nan", families=("firstorder", "glcm"))
    empty = Sample.from_array(rng.random((40, 40)).astype(np.float32), mask=np.zeros((40, 40), bool))
    out = nan_bank.transform([empty])
    assert out.shape == (1, len(nan_bank.get_feature_names_out())) and np.isnan(out).all()
    with pytest.raises(ValueError, match="empty"):
        default_handcrafted_bank(families=("glcm",)).transform([empty])
    with pytest.raises(ValueError, match="unknown family"):
        default_handcrafted_bank(families=("glcm", "wavelet"))


def test_grid_search_over_nested_params(rng):
    clear_memory_cache()
    X, y = textures(rng)
    pipe = Pipeline([("features", small_bank()), ("scale", StandardScaler()), ("clf", LogisticRegression())])
    grid = {"features__glcm__levels": [8, 16], "features__hog": ["drop", HOGFeatures(**HOG_SMALL)]}
    search = GridSearchCV(pipe, grid, cv=StratifiedKFold(3))
    search.fit(X, y)
    assert search.best_score_ == 1.0  # exact: mean of accuracies that are all 1
    # exact: predicted class labels
    assert_array_equal(search.predict(X), y)
    assert_array_equal(pickle.loads(pickle.dumps(search)).predict(X), y)


@pytest.mark.realdata
def test_default_bank_on_busi(shared_data):
    from featurepipe.io import read_image, read_mask

    folder = shared_data / "busi" / "benign"
    image = read_image(folder / "benign (1).png", mode="gray")
    mask = read_mask(folder / "benign (1)_mask.png")
    sample = Sample.from_array(image, mask=mask)
    bank = default_handcrafted_bank(families=DEFAULT_FAMILIES + ("shape",), cache=False)
    out = bank.transform([sample])[0]
    names = bank.get_feature_names_out()
    assert out.shape == names.shape and np.isfinite(out).all()
    got = dict(zip(names, out))
    # the bank's first-order and GLCM families work on the ANALYSIS_MAX_SIDE grid (this image is larger)
    assert max(image.shape) > ANALYSIS_MAX_SIDE
    fo, fo_names = first_order_features(image, mask, max_side=ANALYSIS_MAX_SIDE)
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal([got[n] for n in fo_names], fo)
    gl, gl_names = glcm_features(image, mask, max_side=ANALYSIS_MAX_SIDE)
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal([got[n] for n in gl_names], gl)
    assert_array_equal([got[n] for n in bank.named_transformers["curvelet"].get_feature_names_out()],
                       CurveletFeatures(cache=False).transform([sample])[0])
    # exact: the same function on the same input (one code path, one process)
    assert_array_equal([got[n] for n in ShapeFeatures().get_feature_names_out()],
                       ShapeFeatures(cache=False).transform([sample])[0])
    small, small_mask = cap_resolution(image, mask, ANALYSIS_MAX_SIDE)
    assert got["firstorder_mean"] == pytest.approx(float(small[small_mask].astype(np.float64).mean()), rel=1e-12)
