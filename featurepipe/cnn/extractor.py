"""``CNNFeatures``: a frozen CNN backbone as an image → vector feature extractor.

Functional core: :func:`featurepipe.cnn.preprocessing.prepare_batch` turns
images into the network's input batch, :func:`pool_feature_map` pools feature
maps (average, max, GeM), and
:func:`get_runner` returns the per-process ``tf.function`` that runs a
backbone and pools its output. :class:`CNNFeatures` adds the scikit-learn
contract and the per-sample cache of :class:`featurepipe.base.FeatureExtractor`.

Speed and memory
----------------
* The backbone is built once per process (:func:`featurepipe.cnn.load_backbone`)
  and shared by every clone of the estimator, and so is the compiled
  function (both live in :data:`featurepipe.cnn.model_cache.MODEL_CACHE`);
  neither is pickled or part of a cache key.
* Each batch goes through one ``tf.function`` (preprocessing, network,
  pooling) traced once for a ``(None, H, W, 3)`` input, never through
  ``Model.predict`` (about 0.5 s of overhead per call here). XLA is not used:
  on CPU it was several times slower for depthwise-convolution networks.
* ``runtime="auto"`` runs that function converted to ONNX Runtime or
  OpenVINO when installed (:mod:`featurepipe.cnn.runtimes`; same features
  within ``runtimes.FLOAT32_RTOL``); ``precision="bfloat16"`` opts in to
  OpenVINO's faster, approximate bf16 inference.
* Images are read and resized batch by batch in a background thread while
  the network runs on the previous batch, so memory holds at most two
  batches of pixels whatever the number of images.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Options, StrOptions

from .._validation import StrictInterval, invalid_parameter, is_int, is_int_or_pair
from .._version import __version__
from ..base import FeatureExtractor
from . import runtimes
from .model_cache import MODEL_CACHE
from .preprocessing import (TTA_CROP_FRACTION, TTA_PRESETS, TTA_VIEWS, input_size_pair, prepare_image, tta_view,
                            tta_view_names)
from .specs import get_backbone, load_backbone
from .weights import weights_file_token, weights_identity

__all__ = [
    "GEM_EPS",
    "POOLINGS",
    "PRECISIONS",
    "CNNFeatures",
    "get_runner",
    "pool_feature_map",
]

POOLINGS = ("avg", "max", "gem")
#: Feature-map values are clipped to at least this before GeM pooling (Radenović et al. 2018).
GEM_EPS = 1e-6


# ---------------------------------------------------------------------------------------------
# Functional core
def pool_feature_map(feature_map, pooling="avg", gem_p=3.0):
    """Global pooling of feature maps over the spatial axes (NumPy reference implementation).

    Parameters
    ----------
    feature_map : ndarray, shape (n, h, w, c)
    pooling : {"avg", "max", "gem"}
        ``gem`` is generalised-mean pooling ``(mean(max(x, eps) ** p)) ** (1/p)``
        (Radenović et al. 2018): ``p = 1`` is average pooling, ``p → ∞`` max pooling.
    gem_p : float
        The GeM exponent ``p`` (> 0).

    Returns
    -------
    ndarray, shape (n, c)
    """
    x = np.asarray(feature_map, dtype=np.float64)
    if pooling == "avg":
        return x.mean(axis=(1, 2))
    if pooling == "max":
        return x.max(axis=(1, 2))
    if pooling == "gem":
        return np.power(np.power(np.maximum(x, GEM_EPS), gem_p).mean(axis=(1, 2)), 1.0 / gem_p)
    raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")


def _tf_pool(x, pooling, gem_p):
    import tensorflow as tf

    if pooling == "avg":
        return tf.reduce_mean(x, axis=[1, 2])
    if pooling == "max":
        return tf.reduce_max(x, axis=[1, 2])
    p = tf.constant(gem_p, dtype=x.dtype)
    return tf.pow(tf.reduce_mean(tf.pow(tf.maximum(x, tf.constant(GEM_EPS, x.dtype)), p), axis=[1, 2]), 1.0 / p)


class _Forward:
    """Preprocess, run the network, pool: the body of the per-batch ``tf.function``.

    A callable object rather than a closure: TensorFlow counts traces per
    code object, and one code object shared by many runners would trigger
    its "frequent retracing" warning although each runner traces only once.
    """

    def __init__(self, model, preprocess, pooling, gem_p):
        self.model = model
        self.preprocess = preprocess
        self.pooling = pooling
        self.gem_p = gem_p

    def __call__(self, batch):
        import tensorflow as tf

        outputs = self.model(self.preprocess(batch), training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        pooled = [_tf_pool(tf.cast(o, tf.float32), self.pooling, self.gem_p) for o in outputs]
        return pooled[0] if len(pooled) == 1 else tf.concat(pooled, axis=1)


class _Runner:
    """A compiled batch function plus what feature names need (tapped layer names and channels).

    ``key`` identifies the runner in this process (sessions of the other
    runtimes are cached under it); ``size`` is the input ``(height, width)``.
    """

    def __init__(self, function, layer_names, channels, model, key=None, size=None):
        self.function = function
        self.layer_names = layer_names
        self.channels = channels
        self.model = model  # keeps the model alive as long as the runner is cached
        self.key = key
        self.size = size


#: ``"bfloat16"`` is OpenVINO's bf16 inference (opt-in, fast on CPUs with bf16 units); the ``mixed_*``
#: values are Keras mixed-precision policies (TensorFlow runtime only; for GPUs).
PRECISIONS = ("float32", "bfloat16", "mixed_float16", "mixed_bfloat16")


def _with_precision(model, precision):
    """``model`` itself for float32, else a copy whose layers compute in the mixed-precision policy.

    Keras keeps the variables (and numerically sensitive layers such as batch
    normalisation) in float32 and casts activations to float16/bfloat16.
    """
    if precision == "float32":
        return model
    import keras

    def clone(layer):
        config = layer.get_config()
        if not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = precision
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _resolve_layers(model, backbone, layer):
    """Layer objects for ``layer`` (name, depth, or list of them), each with a 4-D output."""
    items = layer if isinstance(layer, (list, tuple)) else [layer]
    resolved = []
    for item in items:
        if isinstance(item, str):
            try:
                found = model.get_layer(item)
            except ValueError:
                names = [lyr.name for lyr in model.layers]
                raise ValueError(f"CNNFeatures: layer {item!r} is not a layer of backbone {backbone!r}; "
                                 f"its layers are {names[:3]} … {names[-3:]} ({len(names)} in all; "
                                 "see load_backbone(...).summary())") from None
        else:
            n = len(model.layers)
            if not -n <= item < n:
                raise ValueError(f"CNNFeatures: layer depth {item} is out of range for backbone {backbone!r}, "
                                 f"which has {n} layers (use -{n} … {n - 1})")
            found = model.layers[item]
        shape = tuple(found.output.shape)
        if len(shape) != 4:
            raise ValueError(f"CNNFeatures: layer {found.name!r} of backbone {backbone!r} outputs shape "
                             f"{shape}; a 4-D feature map (batch, height, width, channels) is needed")
        resolved.append(found)
    return resolved


def get_runner(backbone, weights, input_size, layer=None, pooling="avg", gem_p=3.0, precision="float32"):
    """The per-process compiled function ``f(batch in [0, 255]) -> pooled features`` for these settings.

    Returns
    -------
    runner : object
        ``runner.function(tf.Tensor (n, H, W, 3) float32) -> tf.Tensor (n, D)``;
        ``runner.layer_names`` (tapped layer names, ``None`` for the default
        last feature map) and ``runner.channels`` (channels per tapped map).
    """
    import tensorflow as tf

    if precision == "bfloat16":  # OpenVINO's inference hint: the graph itself stays float32
        precision = "float32"
    generation = MODEL_CACHE.generation(backbone)
    spec = get_backbone(backbone)
    size = input_size_pair(input_size, spec.default_input_size)
    layer_key = None if layer is None else tuple(layer) if isinstance(layer, (list, tuple)) else (layer,)
    identity = (generation, weights_identity(weights), size)
    key = ("runner", backbone, *identity, layer_key, pooling, float(gem_p), precision)

    def build():
        shared = load_backbone(backbone, weights, size)
        base = shared if precision == "float32" else MODEL_CACHE.get_or_build(
            ("precision copy", backbone, *identity, precision), lambda: _with_precision(shared, precision))
        if layer is None:
            model, names = base, None
            channels = [int(base.output.shape[-1])]
        else:
            import keras

            layers = _resolve_layers(base, backbone, layer)
            names = [lyr.name for lyr in layers]
            channels = [int(lyr.output.shape[-1]) for lyr in layers]
            model = keras.Model(base.input, [lyr.output for lyr in layers], name=f"{base.name}_taps")
        forward = _Forward(model, spec.preprocess, pooling, float(gem_p))
        # One trace for any batch size; jit_compile=False: XLA was 4-7x slower on CPU for depthwise convs.
        run = tf.function(forward, input_signature=[tf.TensorSpec((None, size[0], size[1], 3), tf.float32)],
                          jit_compile=False)
        return _Runner(run, names, channels, model, key=key, size=size)

    return MODEL_CACHE.get_or_build(key, build)


# ---------------------------------------------------------------------------------------------


def _safe(name):
    return "".join(ch if ch.isalnum() else "_" for ch in str(name)).strip("_") or "layer"


class CNNFeatures(FeatureExtractor):
    """Pooled feature maps of a frozen ImageNet CNN (the "ConvNet + SVM" feature extractor).

    Stateless: ``fit`` learns nothing; features are cached per sample
    (keyed by the sample key and every parameter below that can change them).

    Parameters
    ----------
    backbone : str, default="efficientnet_lite0"
        A name from :func:`featurepipe.cnn.list_backbones` (or registered with
        :func:`featurepipe.cnn.register_backbone`). The default works offline.
    weights : {"imagenet", None} or path, default="imagenet"
        Pretrained weights, a weights file (identified in cache keys by its
        path, size and modification time), or ``None`` for random weights
        (tests only: a warning says the features are meaningless).
    input_size : int or (int, int), optional
        Side (or ``(height, width)``) in pixels the images are resized to;
        default the backbone's own (224 for most, 299 for Inception/Xception).
    pooling : {"avg", "max", "gem"}, default="avg"
        Global pooling of each feature map: average, maximum, or generalised
        mean with exponent ``gem_p`` (values clipped at ``GEM_EPS`` first).
    gem_p : float, default=3.0
        GeM exponent (> 0); ignored for the other poolings.
    layer : str, int or list, optional
        Tap intermediate layers instead of the last feature map: a layer name,
        a depth (index into ``model.layers``, negative from the end), or a
        list of those whose pooled maps are concatenated in order.
    tta : None, {"flip", "flip_crops"} or sequence of str, default=None
        Test-time augmentation pooled in feature space: the features are the
        mean of the features of several views of each image, made on the
        image before it is resized for the network (so every runtime runs
        them). ``"flip"`` averages the image and its left-right mirror image;
        ``"flip_crops"`` adds five crops of
        :data:`~featurepipe.cnn.preprocessing.TTA_CROP_FRACTION` (90 %) of the
        image's height and width (centre and four corners); a sequence
        picks views from :data:`~featurepipe.cnn.preprocessing.TTA_VIEWS`
        (``"identity"``, ``"hflip"``, ``"crop_center"``, ``"crop_top_left"``,
        ``"crop_top_right"``, ``"crop_bottom_left"``, ``"crop_bottom_right"``).
        Costs one network pass per view. Only for data whose label does not
        change under these views (a left-right flip of an ultrasound or a
        mammogram keeps its diagnosis; a crop may cut a lesion at the edge).
    batch_size : int, default=32
        Images per network call (memory grows with it, not with the dataset).
    precision : {"float32", "bfloat16", "mixed_float16", "mixed_bfloat16"}, default="float32"
        Compute precision of the network (features are returned as float64
        in any case). ``"bfloat16"`` (opt-in, OpenVINO only) runs the network
        with OpenVINO's bf16 inference hint: about 2x faster than float32 on
        CPUs with bfloat16 units (AVX-512 BF16, AMX), features within ~10 %
        relative of float32 ones (cosine >= 0.99; ``benchmarks/cnn.py``
        prints the agreement); on CPUs without them OpenVINO computes in
        float32 (a warning says so). ``"mixed_float16"``/``"mixed_bfloat16"``
        are Keras mixed-precision policies (TensorFlow runtime only) that
        speed up GPUs with tensor cores; on CPUs they are slower. Reduced
        precisions are part of the feature-cache key.
    runtime : {"auto", "tensorflow", "onnxruntime", "openvino"}, default="auto"
        What runs the network (see :mod:`featurepipe.cnn.runtimes`):
        ``"auto"`` picks the fastest installed runtime whose float32
        features equal TensorFlow's within
        :data:`featurepipe.cnn.runtimes.FLOAT32_RTOL` (ONNX Runtime, then
        OpenVINO; TensorFlow when neither is installed — ``pip install
        featurepipe[fast]`` —, when TensorFlow sees a GPU, or for random
        ``weights=None`` networks, whose conversion could not be kept), OpenVINO
        for ``precision="bfloat16"``. The network is converted once per process
        and kept on disk (:func:`featurepipe.cnn.runtimes.model_cache_dir`).
        Not part of the feature-cache key (float32 runtimes agree within
        that tolerance). The runtime used is in ``runtime_`` after ``fit``
        or ``transform``.
    cache : bool or path, default=True
        Per-sample cache (see :mod:`featurepipe.cache`).
    n_jobs : int, optional
        Threads that read and resize images (default 1, running ahead of
        the network by one batch; -1 for one per CPU). TensorFlow's own
        thread pool runs the network.

    Notes
    -----
    Images are converted to float32 RGB in ``[0, 255]`` (grayscale replicated
    to three channels), resized to ``input_size`` without keeping the
    aspect ratio (area interpolation when shrinking, bilinear when
    enlarging), and passed through the backbone's own preprocessing.
    A GPU is used automatically when TensorFlow sees one.

    Feature names are ``cnn_<backbone>_<0000>`` for the last feature map and
    ``cnn_<backbone>_<layer>_<0000>`` for tapped layers (the same with ``tta``).

    Examples
    --------
    Test-time augmentation averages the features of the views:

    >>> import warnings
    >>> import numpy as np
    >>> image = np.random.default_rng(0).uniform(0, 1, (40, 48)).astype(np.float32)
    >>> plain = CNNFeatures("mobilenet", weights=None, input_size=32, cache=False)
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")  # random weights: features for this example only
    ...     mirrored = plain.transform([image, image[:, ::-1]]).mean(axis=0)
    ...     averaged = plain.set_params(tta="flip").transform([image])[0]
    >>> bool(np.allclose(averaged, mirrored, rtol=1e-5, atol=1e-6))
    True
    """

    # runtime: the float32 runtimes give equal features within runtimes.FLOAT32_RTOL (tested for every
    # backbone); bfloat16 is a precision, which is part of the key.
    _non_key_params = ("cache", "n_jobs", "batch_size", "verbose", "runtime")

    def __init__(self, backbone="efficientnet_lite0", weights="imagenet", input_size=None, pooling="avg",
                 gem_p=3.0, layer=None, tta=None, batch_size=32, precision="float32", runtime="auto", cache=True,
                 n_jobs=None):
        self.backbone = backbone
        self.weights = weights
        self.input_size = input_size
        self.pooling = pooling
        self.gem_p = gem_p
        self.layer = layer
        self.tta = tta
        self.batch_size = batch_size
        self.precision = precision
        self.runtime = runtime
        self.cache = cache
        self.n_jobs = n_jobs

    # -- validation ---------------------------------------------------------------------------
    _parameter_constraints = {
        **FeatureExtractor._parameter_constraints,
        "backbone": [str],
        "weights": [StrOptions({"imagenet"}), None, str, os.PathLike],
        "input_size": [None, StrictInterval(Integral, 1, None, closed="left"), tuple, list],
        "pooling": [StrOptions(set(POOLINGS))],
        "gem_p": [StrictInterval(Real, 0, None, closed="neither")],
        "layer": [None, str, StrictInterval(Integral, None, None, closed="neither"), list, tuple],
        "tta": [None, StrOptions(set(TTA_PRESETS)), list, tuple],
        "batch_size": [StrictInterval(Integral, 1, None, closed="left")],
        "precision": [StrOptions(set(PRECISIONS))],
        "runtime": [StrOptions(set(runtimes.RUNTIMES))],
        "n_jobs": [None, Options(Integral, {-1}), StrictInterval(Integral, 1, None, closed="left")],
    }

    def _validate_param_rules(self):
        try:
            spec = get_backbone(self.backbone)
        except ValueError as exc:
            raise invalid_parameter(self, "backbone", f"a registered backbone ({exc})") from None
        if self.weights not in (None, "imagenet") and not os.path.isfile(self.weights):
            raise invalid_parameter(self, "weights", "'imagenet', None or the path of an existing weights file "
                                                     "(no such file)")
        if self.input_size is not None and not is_int_or_pair(self.input_size, spec.min_input_size):
            raise invalid_parameter(self, "input_size", f"None, an integer or a (height, width) pair of integers >= "
                                                        f"{spec.min_input_size} (the smallest input {spec.name!r} "
                                                        "takes)")
        layer = self.layer
        items = layer if isinstance(layer, (list, tuple)) else [layer]
        if layer is not None and (not items or not all((isinstance(v, str) and v) or is_int(v) for v in items)):
            raise invalid_parameter(self, "layer", "None, a layer name, a layer depth (int), or a non-empty list "
                                                   "of those")
        if isinstance(self.tta, (list, tuple)):
            try:
                tta_view_names(self.tta)
            except ValueError:
                raise invalid_parameter(self, "tta", f"None, one of {sorted(TTA_PRESETS)}, or a non-empty sequence "
                                                     f"of distinct views from {list(TTA_VIEWS)}") from None
        if self.precision.startswith("mixed_") and self.runtime not in ("auto", "tensorflow"):
            raise invalid_parameter(self, "precision", f"'float32' or 'bfloat16' with runtime={self.runtime!r} "
                                                       "(the mixed_* Keras policies need runtime='tensorflow')")
        if self.precision == "bfloat16" and self.runtime not in ("auto", "openvino"):
            raise invalid_parameter(self, "precision", f"'float32' with runtime={self.runtime!r} (bfloat16 runs "
                                                       "on runtime='openvino' or 'auto')")

    def _cache_token_extra(self):
        """Identify what the parameters alone cannot: weights files, random networks, user models."""
        weights = self.weights
        if weights is None:
            # A random network is different in every process (and after clear_model_cache()).
            extra = f"|weights:random:{MODEL_CACHE.random_weights_token()}"
        elif weights == "imagenet":
            extra = "|weights:imagenet"
        else:
            extra = f"|weights:{weights_file_token(weights)}"
        fingerprint = get_backbone(self.backbone).fingerprint
        if fingerprint:
            extra += f"|{fingerprint}"
        return extra

    # -- scikit-learn API -------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Validate the parameters and pick the runtime (``runtime_``; nothing is learned). Returns ``self``."""
        self._warn_random()
        self.runtime_ = self._resolved_runtime()
        return self

    def transform(self, X):
        """Feature matrix ``(n_samples, n_features)``, float64, cached per sample."""
        self._validate_params_once()
        self._warn_random()
        self.runtime_ = self._resolved_runtime()
        return super().transform(X)

    def _resolved_runtime(self):
        if self.runtime == "auto" and self.weights is None and self.precision == "float32":
            # A random network differs in every process, so its conversion could not be kept on disk
            # and would cost more (~10 s) than the test-sized runs random weights are meant for.
            return "tensorflow"
        runtime = runtimes.resolve_runtime(self.runtime, self.precision)
        if self.precision == "bfloat16" and not runtimes.bf16_supported():
            warnings.warn("CNNFeatures(precision='bfloat16'): this CPU has no bfloat16 units, so OpenVINO "
                          "computes in float32 (same features as precision='float32', not faster)",
                          UserWarning, stacklevel=4)
        return runtime

    def _session(self):
        """The per-process ``session(batch) -> features`` of the resolved runtime (converted once)."""
        runner = self._runner()
        runtime = getattr(self, "runtime_", None) or self._resolved_runtime()
        disk_key = None
        if self.weights is not None:  # random networks differ in every process: never kept on disk
            layer = self.layer if self.layer is None or isinstance(self.layer, (list, tuple)) else [self.layer]
            disk_key = (f"{self.backbone}|size={list(runner.size)}|layer={layer}|pooling={self.pooling}|"
                        f"gem_p={float(self.gem_p)}{self._cache_token_extra()}|featurepipe-{__version__}")
        return runtimes.get_session(runner, runner.key, runtime, self.precision, disk_key)

    def _warn_random(self):
        if self.weights is None:
            warnings.warn(f"CNNFeatures(backbone={self.backbone!r}, weights=None): the network has random "
                          "weights, so its features are meaningless for classification (use weights=None "
                          "only for tests)", UserWarning, stacklevel=3)

    def _runner(self):
        return get_runner(self.backbone, self.weights, self.input_size, self.layer, self.pooling, self.gem_p,
                          self.precision)

    def _feature_names(self):
        prefix = f"cnn_{self.backbone}"
        if self.layer is None:
            dim = get_backbone(self.backbone).output_dim
            return [f"{prefix}_{i:04d}" for i in range(dim)]
        runner = self._runner()
        names = []
        for layer_name, channels in zip(runner.layer_names, runner.channels):
            names.extend(f"{prefix}_{_safe(layer_name)}_{i:04d}" for i in range(channels))
        return names

    # -- batched extraction -----------------------------------------------------------------------
    def _load_one(self, sample, size, views):
        """The network inputs ``(len(views), H, W, 3)`` of one sample: each view, resized and scaled."""
        image = sample.image  # the network never sees the mask: leave mask files undecoded
        try:
            # Views are made at the image's own resolution, then resized like any image (a crop keeps
            # the detail the resize to the network input would otherwise lose first).
            return [prepare_image(np.ascontiguousarray(tta_view(image, view, TTA_CROP_FRACTION)), size)
                    for view in views]
        except ValueError as exc:
            raise ValueError(f"CNNFeatures on sample {sample.name!r}: {exc}") from exc

    def _load_batch(self, pool, samples, size, views):
        out = np.empty((len(samples) * len(views), size[0], size[1], 3), dtype=np.float32)
        for i, sample_views in enumerate(pool.map(lambda s: self._load_one(s, size, views), samples)):
            out[i * len(views):(i + 1) * len(views)] = sample_views
        return out

    def _extract_many(self, samples):
        runner = self._runner()
        session = self._session()
        spec = get_backbone(self.backbone)
        size = input_size_pair(self.input_size, spec.default_input_size)
        n_out = sum(runner.channels)
        out = np.empty((len(samples), n_out), dtype=np.float64)
        if not len(samples):
            return out
        views = tta_view_names(self.tta)
        # batch_size counts network inputs (memory), so a batch holds batch_size // n_views samples.
        batch = max(1, int(self.batch_size) // len(views))
        starts = list(range(0, len(samples), batch))
        threads = 1 if self.n_jobs is None else (os.cpu_count() or 1) if self.n_jobs == -1 else int(self.n_jobs)
        # Readers (threads; OpenCV and Pillow release the GIL) prepare the next batch while the
        # network runs on this one: at most two batches of pixels are alive at any time.
        with ThreadPoolExecutor(max_workers=threads) as readers, ThreadPoolExecutor(max_workers=1) as ahead:
            pending = ahead.submit(self._load_batch, readers, samples[0:batch], size, views)
            for k, start in enumerate(starts):
                pixels = pending.result()  # re-raises a reader's ImageReadError (naming the file)
                if k + 1 < len(starts):
                    nxt = starts[k + 1]
                    pending = ahead.submit(self._load_batch, readers, samples[nxt:nxt + batch], size, views)
                values = np.asarray(session(pixels), dtype=np.float64)
                n = len(pixels) // len(views)
                # Test-time augmentation pooled in feature space: the mean over each sample's views.
                out[start:start + n] = values.reshape(n, len(views), -1).mean(axis=1)
                del pixels
        if not np.all(np.isfinite(out)):
            raise RuntimeError(f"CNNFeatures({self.backbone!r}) produced non-finite features; the backbone "
                               "weights may be corrupt")
        return out
