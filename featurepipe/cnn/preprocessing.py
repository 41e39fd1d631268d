"""From featurepipe images to a backbone's input: size, channels, value scaling.

* :func:`input_size_pair` — the ``input_size`` parameter (``None``, a side, or
  ``(height, width)``) as the ``(height, width)`` the network is fed.
* :func:`prepare_image` / :func:`prepare_batch` — float32 images in ``[0, 1]``
  (grayscale or RGB, any size) → float32 RGB ``(n, H, W, 3)`` in ``[0, 255]``.
* :func:`tta_view` / :func:`tta_view_names` — the views of an image that
  test-time augmentation averages features over (identity, horizontal
  flip, corner and centre crops), made on the image before the network.
* ``preprocess_*`` — each backbone's own scaling of that ``[0, 255]`` batch to
  what its weights were trained with (the ``preprocess`` of a
  :class:`~featurepipe.cnn.BackboneSpec`). Plain arithmetic, so NumPy arrays
  and TensorFlow tensors both work (they run inside the extractor's
  ``tf.function``); module-level, so they pickle and have stable names for
  cache keys.

Examples
--------
>>> import numpy as np
>>> gray = np.full((4, 6), 0.5, dtype=np.float32)
>>> batch = prepare_batch([gray], input_size_pair(2, default_size=224))
>>> batch.shape, float(batch[0, 0, 0, 0])
((1, 2, 2, 3), 127.5)
>>> float(preprocess_tf(batch)[0, 0, 0, 0]), float(preprocess_lite(batch)[0, 0, 0, 0])
(0.0, 0.00390625)
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "INPUT_SCALINGS",
    "input_size_pair",
    "prepare_batch",
    "prepare_image",
    "preprocess_caffe",
    "preprocess_identity",
    "preprocess_lite",
    "preprocess_tf",
    "preprocess_torch",
    "resize_image",
    "TTA_CROP_FRACTION",
    "TTA_PRESETS",
    "TTA_VIEWS",
    "tta_view",
    "tta_view_names",
]

_IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# Value scaling: float32 RGB in [0, 255] -> network input
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


#: featurepipe's input scalings by name. A fitted model that needs one stores its name, not the
#: function, so that the safe model loader (classes only, see :mod:`featurepipe.models`) loads it
#: without ``--trust``; a name is resolved only against this table.
INPUT_SCALINGS = {f.__name__: f for f in (preprocess_tf, preprocess_torch, preprocess_caffe, preprocess_identity,
                                          preprocess_lite)}


# ----------------------------------------------------------------------------------------------
# Size and channels
def input_size_pair(input_size, default_size):
    """``(height, width)`` in pixels for an ``input_size`` parameter.

    Parameters
    ----------
    input_size : None, int or (int, int)
        ``None`` for the backbone's default, one side for a square input, or
        ``(height, width)``.
    default_size : int
        The backbone's default side (``BackboneSpec.default_input_size``).

    Returns
    -------
    (int, int)
    """
    if input_size is None:
        return (int(default_size), int(default_size))
    if isinstance(input_size, (int, np.integer)):
        return (int(input_size), int(input_size))
    height, width = input_size
    return (int(height), int(width))


def resize_image(image, size):
    """Resize ``image`` ``(H, W[, 3])`` to ``size`` = ``(height, width)``; the same array when already that size.

    Area interpolation when shrinking (anti-aliased, like averaging the
    pixels that fall in each output pixel), bilinear when enlarging.
    """
    h, w = image.shape[:2]
    if (h, w) == tuple(size):
        return image
    interpolation = cv2.INTER_AREA if (size[0] < h and size[1] < w) else cv2.INTER_LINEAR
    return cv2.resize(image, (int(size[1]), int(size[0])), interpolation=interpolation)


def prepare_image(image, size):
    """One image in featurepipe's convention → float32 RGB ``(H, W, 3)`` in ``[0, 255]`` at ``size``.

    Parameters
    ----------
    image : ndarray, float32 ``(h, w)`` or ``(h, w, 3)`` in ``[0, 1]``
    size : (int, int)
        Output ``(height, width)``; the aspect ratio is not kept (the usual
        practice for frozen-CNN features; crop or letterbox beforehand with
        an image step if it matters).

    Returns
    -------
    ndarray of float32, shape ``(height, width, 3)``
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected an image of shape (H, W) or (H, W, 3); got shape {image.shape}")
    image = resize_image(image, size)
    if image.ndim == 2:  # grayscale -> the three identical channels ImageNet networks expect
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.multiply(image, np.float32(255.0), dtype=np.float32)


def prepare_batch(images, size):
    """Stack :func:`prepare_image` of each image: float32 ``(n, height, width, 3)`` in ``[0, 255]``."""
    size = (int(size[0]), int(size[1]))
    out = np.empty((len(images), size[0], size[1], 3), dtype=np.float32)
    for i, image in enumerate(images):
        out[i] = prepare_image(image, size)
    return out


# ----------------------------------------------------------------------------------------------
# Test-time augmentation: views of one image, made before the network
#: Side of the crop views as a fraction of the image's height and width: small crops (a 10 % shift
#: at most) that keep the whole lesion in view for the usual centred medical images, the size of
#: the crops of the ten-crop evaluation of Krizhevsky et al. (2012; 224 of 256 px = 0.875) rounded.
TTA_CROP_FRACTION = 0.9
#: The views :func:`tta_view` makes. ``"identity"`` is the image itself, ``"hflip"`` its mirror
#: image (left-right), ``"crop_*"`` the sub-image of :data:`TTA_CROP_FRACTION` of its height and
#: width at the centre or a corner.
TTA_VIEWS = ("identity", "hflip", "crop_center", "crop_top_left", "crop_top_right", "crop_bottom_left",
             "crop_bottom_right")
#: Named sets of views: the mirror pair, and the mirror pair plus the five crops.
TTA_PRESETS = {"flip": ("identity", "hflip"), "flip_crops": TTA_VIEWS}


def tta_view_names(tta):
    """The view names of a ``tta`` setting: ``None`` → ``("identity",)``, a preset name → its views,
    a sequence of view names → itself as a tuple.

    >>> tta_view_names("flip"), tta_view_names(None), tta_view_names(["hflip", "crop_center"])
    (('identity', 'hflip'), ('identity',), ('hflip', 'crop_center'))
    """
    if tta is None:
        return ("identity",)
    if isinstance(tta, str):
        if tta not in TTA_PRESETS:
            raise ValueError(f"tta must be None, one of {sorted(TTA_PRESETS)} or a sequence of views from "
                             f"{list(TTA_VIEWS)}; got {tta!r}")
        return TTA_PRESETS[tta]
    names = tuple(tta)
    unknown = [v for v in names if v not in TTA_VIEWS]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"tta views must be distinct names from {list(TTA_VIEWS)}; got {tta!r}")
    return names


def tta_view(image, view, fraction=TTA_CROP_FRACTION):
    """One view of ``image`` ``(H, W[, 3])`` for test-time augmentation (pixels copied, never interpolated).

    Parameters
    ----------
    image : ndarray ``(H, W)`` or ``(H, W, 3)``
    view : str
        One of :data:`TTA_VIEWS`.
    fraction : float
        Crop side as a fraction of each image side (crops are
        ``round(fraction * H) x round(fraction * W)`` pixels, at least 1).

    Returns
    -------
    ndarray
        A view (not a copy) of ``image``: the image itself, its mirror image,
        or a crop, which the extractor then resizes to the network input like
        any image.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.arange(20).reshape(4, 5)
    >>> tta_view(image, "hflip")[0].tolist(), tta_view(image, "crop_bottom_right", 0.5).tolist()
    ([4, 3, 2, 1, 0], [[13, 14], [18, 19]])
    """
    if view == "identity":
        return image
    if view == "hflip":
        return image[:, ::-1]
    if not view.startswith("crop_") or view not in TTA_VIEWS:
        raise ValueError(f"view must be one of {list(TTA_VIEWS)}; got {view!r}")
    height, width = image.shape[:2]
    crop_h, crop_w = max(1, round(fraction * height)), max(1, round(fraction * width))
    where = view[len("crop_"):]
    top = {"center": (height - crop_h) // 2, "top": 0, "bottom": height - crop_h}[where.split("_")[0]]
    left = {"center": (width - crop_w) // 2, "left": 0, "right": width - crop_w}[where.split("_")[-1]]
    return image[top:top + crop_h, left:left + crop_w]
