"""One validation style: scikit-learn ``_parameter_constraints`` + ``_fit_context`` for every estimator.

Parameters are validated in ``fit``; a stateless step used without ``fit``
validates once per parameter state (not on every ``transform``).
"""

import pickle
from numbers import Integral, Real

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError

from featurepipe._validation import StrictInterval
from featurepipe.augment import AugmentingSampler
from featurepipe.classifiers.autoencoder import StackedAutoencoder
from featurepipe.classifiers.elm import ELMClassifier, ELMRegressor
from featurepipe.classifiers.keras_transfer import KerasTransferClassifier
from featurepipe.cnn.extractor import CNNFeatures
from featurepipe.features import (
    BagOfVisualWords,
    CurveletFeatures,
    FirstOrderFeatures,
    GLCMFeatures,
    HOGFeatures,
    LBPFeatures,
    ShapeFeatures,
)
from featurepipe.models import ImageModel
from featurepipe.preprocessing import (
    CLAHE,
    BilateralFilter,
    CropToMask,
    GaussianFilter,
    MedianFilter,
    OtsuROI,
    Resize,
    Standardize,
)

ESTIMATORS = [
    FirstOrderFeatures, GLCMFeatures, LBPFeatures, HOGFeatures, ShapeFeatures, CurveletFeatures, BagOfVisualWords,
    CNNFeatures, Resize, MedianFilter, GaussianFilter, BilateralFilter, CLAHE, Standardize, OtsuROI, CropToMask,
    AugmentingSampler, ELMClassifier, ELMRegressor, KerasTransferClassifier, StackedAutoencoder, ImageModel,
]


def _image():
    return np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)


@pytest.mark.parametrize("Est", ESTIMATORS, ids=lambda c: c.__name__)
def test_every_parameter_has_a_constraint(Est):
    assert set(Est._parameter_constraints) == set(Est().get_params(deep=False))


@pytest.mark.parametrize("make, call, message", [
    (lambda: GLCMFeatures(levels=1, cache=False), "transform",
     r"'levels' parameter of GLCMFeatures must be an int in the range \[2, 65536\]\. Got 1 instead"),
    (lambda: GLCMFeatures(distances=(1, 1), cache=False), "transform",
     r"GLCMFeatures: distances must be a sequence of distinct positive integers \(no repeat\); got \(1, 1\)"),
    (lambda: HOGFeatures(orientations=0), "get_feature_names_out",
     r"'orientations' parameter of HOGFeatures must be an int in the range \[1, inf\)\. Got 0 instead"),
    (lambda: MedianFilter(size=4), "transform", r"MedianFilter: size must be an odd integer >= 1; got 4"),
    (lambda: FirstOrderFeatures(log_base=np.inf, cache=False), "transform",
     r"'log_base' parameter of FirstOrderFeatures must be a float in the range \(1\.0, inf\)\. Got inf instead"),
    (lambda: GaussianFilter(sigma=float("nan")), "transform",
     r"'sigma' parameter of GaussianFilter must be a float in the range \(0\.0, inf\)\. Got nan instead"),
])
def test_stateless_step_without_fit_rejects_bad_parameters(make, call, message):
    step = make()
    method = getattr(step, call)
    with pytest.raises(InvalidParameterError, match=message) as info:
        method([_image()]) if call == "transform" else method()
    assert isinstance(info.value, ValueError)  # what callers catch, as before


@pytest.mark.parametrize("Est, param", [
    (GLCMFeatures, "levels"), (HOGFeatures, "orientations"), (BagOfVisualWords, "n_words"),
    (MedianFilter, "size"), (OtsuROI, "nbins"), (AugmentingSampler, "n_copies"), (ELMClassifier, "n_hidden"),
    (StackedAutoencoder, "epochs"), (KerasTransferClassifier, "epochs"), (CNNFeatures, "batch_size"),
])
@pytest.mark.parametrize("flag", [True, np.True_])
def test_a_bool_is_not_a_count(Est, param, flag):
    est = Est(**{param: flag})
    with pytest.raises(InvalidParameterError, match=rf"'{param}' parameter of {Est.__name__} must be an int .*"
                                                    rf"Got {flag!r} instead"):
        est._validate_params()


def test_strict_interval_refuses_bools_and_keeps_sklearn_semantics():
    count = StrictInterval(Integral, 1, None, closed="left")
    assert [count.is_satisfied_by(v) for v in (1, np.int64(7), True, np.True_, 1.0, 0)] == [
        True, True, False, False, False, False]
    finite = StrictInterval(Real, None, None, closed="neither")
    assert [finite.is_satisfied_by(v) for v in (0.5, -3, np.inf, np.nan, False)] == [True, True, False, False, False]
    assert str(count) == "an int in the range [1, inf)"


class _Counter:
    """Counts calls of ``_validate_params`` on a class, delegating to the real one."""

    def __init__(self, monkeypatch, cls):
        self.calls = 0
        real = cls._validate_params

        def counting(est):
            self.calls += 1
            return real(est)

        monkeypatch.setattr(cls, "_validate_params", counting)


def test_transform_validates_once_per_parameter_state(monkeypatch):
    counter = _Counter(monkeypatch, GLCMFeatures)
    ext = GLCMFeatures(levels=8, cache=False)
    first = ext.transform([_image()])
    second = ext.transform([_image()])
    ext.get_feature_names_out()
    assert counter.calls == 1
    np.testing.assert_array_equal(first, second)  # exact: same input, same code path, no cache
    ext.set_params(levels=16)  # a new state: validated again, once
    ext.transform([_image()])
    ext.transform([_image()])
    assert counter.calls == 2
    ext.levels = 1  # assigning another object is a new state too, and it is refused
    with pytest.raises(InvalidParameterError, match="'levels' parameter of GLCMFeatures"):
        ext.transform([_image()])
    assert counter.calls == 3


def test_fit_validates_and_transform_then_does_not(monkeypatch):
    counter = _Counter(monkeypatch, MedianFilter)
    step = MedianFilter(size=3).fit([_image()])
    assert counter.calls == 1
    step.transform([_image()])
    step.transform([_image()])
    assert counter.calls == 1
    clone(step).transform([_image()])  # a clone is a new instance: it validates its own parameters once
    assert counter.calls == 2


def test_validation_follows_sklearn_skip_parameter_validation():
    with sklearn.config_context(skip_parameter_validation=True):
        # Nothing validates: the bad value only fails when the extractor computes with it.
        assert len(HOGFeatures(block_norm="L3").get_feature_names_out()) == 1764
    with pytest.raises(InvalidParameterError, match="'block_norm' parameter of HOGFeatures"):
        HOGFeatures(block_norm="L3").get_feature_names_out()


def test_the_validated_state_is_not_pickled():
    ext = GLCMFeatures(levels=8, cache=False)
    fresh = pickle.dumps(ext)
    ext.transform([_image()])
    assert "_validated_params" in vars(ext)
    assert pickle.dumps(ext) == fresh  # exact: the same state must give the same pickle
    reloaded = pickle.loads(pickle.dumps(ext))
    assert "_validated_params" not in vars(reloaded)
    reloaded.levels = 1
    with pytest.raises(InvalidParameterError, match="'levels' parameter of GLCMFeatures"):
        reloaded.transform([_image()])


def test_meta_estimator_validates_its_own_parameters_and_the_wrapped_ones():
    X = np.empty(4, dtype=object)
    X[:] = [_image() * s for s in (0.2, 1.0, 0.2, 1.0)]
    with pytest.raises(InvalidParameterError, match=r"'mode' parameter of ImageModel must be None or a str among "
                                                    r"\{(?=.*'gray')(?=.*'rgb').*\}\. Got 'rgba'"):
        ImageModel(ELMClassifier(n_hidden=5, random_state=0), mode="rgba").fit(X, [0, 1, 0, 1])
    with pytest.raises(InvalidParameterError, match=r"'use_mask' parameter of ImageModel must be a bool among "
                                                    r"\{False, True\}\. Got np\.True_"):
        ImageModel(ELMClassifier(n_hidden=5, random_state=0), use_mask=np.True_).fit(X, [0, 1, 0, 1])
    with pytest.raises(InvalidParameterError, match="'estimator' parameter of ImageModel must be an object "
                                                    "implementing 'fit' and 'predict'. Got None"):
        ImageModel().fit(X, [0, 1, 0, 1])
    # The wrapped pipeline's steps still validate (ImageModel does not skip nested validation).
    bad = make_pipeline(FirstOrderFeatures(bins=0, cache=False), ELMClassifier(n_hidden=5, random_state=0))
    with pytest.raises(InvalidParameterError, match=r"'bins' parameter of FirstOrderFeatures must be an int in the "
                                                    r"range \[1, 65536\]\. Got 0 instead"):
        ImageModel(bad).fit(X, [0, 1, 0, 1])


def test_a_subclass_written_with_the_old_check_params_still_validates_and_is_warned():
    from featurepipe.base import ImageStep

    with pytest.warns(FutureWarning, match=r"LegacyGain\._check_params\(\) is deprecated.*_parameter_constraints"):
        class LegacyGain(ImageStep):
            def __init__(self, gain=1.0):
                self.gain = gain

            def _check_params(self):
                if not self.gain > 0:
                    raise ValueError(f"gain must be > 0; got {self.gain!r}")

            def _transform_image(self, image, mask):
                return (self.gain * image).astype(np.float32), mask

    with pytest.raises(ValueError, match="gain must be > 0; got -1"):
        LegacyGain(gain=-1).fit([_image()])
    with pytest.raises(ValueError, match="gain must be > 0; got 0"):
        LegacyGain(gain=0).transform([_image()])
    out = LegacyGain(gain=0.5).transform([_image()])[0].image
    np.testing.assert_allclose(out, 0.5 * _image(), rtol=1e-7)
