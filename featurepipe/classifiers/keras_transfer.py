"""End-to-end transfer learning of a CNN backbone, as a scikit-learn classifier on image samples.

:class:`KerasTransferClassifier` reproduces the fine-tuned CNN baselines of
the published comparisons (e.g. MobileNetV2, VGG16, ResNet50 or DenseNet121
transfer learning on breast ultrasound, mammography or histopathology
images): an ImageNet backbone from :mod:`featurepipe.cnn.specs` with its
classification top removed is frozen, a new head (global average pooling,
batch normalisation, dropout, dense layers, softmax or sigmoid) is trained
on it, and optionally the last layers of the backbone are unfrozen and
fine-tuned with a lower learning rate — the recipe of the Keras transfer
learning guide (https://keras.io/guides/transfer_learning/).

It is a plain scikit-learn classifier over a sequence of samples, so it
sits in ``cross_validate``, ``GridSearchCV`` and the benchmark runner next
to the "frozen features + SVM/ELM" pipelines. What it does not train — the
frozen trunk up to the first unfrozen layer — is a stateless function of
the image, so by default (``cache_trunk="auto"`` without augmentation) its
activations are computed once per image and cached per sample like any
feature, and each fit trains only the unfrozen top and the head on them:
fine-tuning costs its unfrozen layers, not the whole network.
"""

from __future__ import annotations

import os
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Options, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import check_is_fitted

from .._validation import ParamValidationMixin, StrictInterval, invalid_parameter, is_int, is_real
from ..base import step_token
from ..cache import cached_per_sample, get_cache
from ..cnn.preprocessing import INPUT_SCALINGS
from ..sample import as_samples
from ._images import KerasImageEstimatorMixin, check_samples_and_labels, load_resized
from ._keras_serialization import model_from_bytes, model_to_bytes

__all__ = ["FLIP_MODES", "OPTIMIZERS", "KerasTransferClassifier", "valid_cut_indices"]

OPTIMIZERS = ("adam", "rmsprop", "sgd")
FLIP_MODES = (None, "horizontal", "vertical", "horizontal_and_vertical")




class KerasTransferClassifier(ParamValidationMixin, KerasImageEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Transfer learning of a CNN backbone (frozen base + new head, optional fine-tuning).

    Training runs in up to two phases, each with early stopping on the
    validation loss (best weights restored) and learning-rate reduction on
    plateau:

    1. *head only*: the backbone is frozen, the new head is trained for up
       to ``epochs`` epochs at ``learning_rate``;
    2. *fine-tuning* (when ``unfreeze`` is not 0 and ``fine_tune_epochs``
       > 0): the last ``unfreeze`` layers of the backbone (or every layer
       from the one named ``unfreeze``) become trainable and the whole model
       is trained for up to ``fine_tune_epochs`` more epochs at
       ``fine_tune_learning_rate``. The backbone's batch-normalisation
       layers stay frozen and in inference mode (moving statistics, scale
       and offset unchanged: small medical batches would corrupt them), as
       the Keras transfer-learning guide recommends. If fine-tuning never
       beats the head-only monitored loss, the head-only weights are kept.

    When to use it: as the end-to-end baseline of a comparison, or when
    there are enough images (hundreds per class) for the backbone's features
    to adapt; on small datasets frozen features + SVM/ELM are usually as
    good and far cheaper. On CPU keep ``input_size`` and ``unfreeze`` small.

    Parameters
    ----------
    backbone : str, default="mobilenet_v2"
        Registered backbone name (:func:`featurepipe.cnn.list_backbones`).
    weights : "imagenet", None or path, default="imagenet"
        Backbone weights (see :mod:`featurepipe.cnn.weights`). ``None``
        (random) is for tests only.
    input_size : int or None, default=None
        Side in pixels of the square network input; images are resized to
        it. ``None`` uses the backbone's default (e.g. 224).
    dense_units : int or sequence of int, default=(256,)
        Units of the ReLU dense layers of the head between the pooled
        features and the output layer (each followed by dropout); ``()`` or
        0 for none.
    dropout : float, default=0.5
        Dropout rate in [0, 1) after the batch normalisation and after each
        dense layer of the head.
    optimizer : {"adam", "rmsprop", "sgd"}, default="adam"
        Keras optimiser of both phases (SGD uses ``momentum``).
    momentum : float, default=0.9
        Momentum of the SGD optimiser, in [0, 1).
    learning_rate : float, default=1e-3
        Learning rate of the head-only phase (> 0).
    fine_tune_learning_rate : float, default=1e-5
        Learning rate of the fine-tuning phase (> 0), typically 10-100
        times lower.
    unfreeze : int or str, default=0
        Backbone layers to fine-tune: the last ``unfreeze`` entries of the
        backbone's ``layers`` list (weightless layers count), or the name of
        the first layer to unfreeze. 0 trains the head only. Batch
        normalisation layers among them stay frozen.
    epochs : int, default=20
        Maximum epochs of the head-only phase.
    fine_tune_epochs : int, default=10
        Maximum epochs of the fine-tuning phase (0 skips it).
    batch_size : int, default=32
        Images per gradient step (and per prediction batch).
    patience : int or None, default=5
        Early stopping: stop a phase after this many epochs without a lower
        monitored loss, then restore the best epoch's weights. ``None``
        disables early stopping (all epochs run; last weights kept).
    min_delta : float, default=1e-4
        Smallest decrease of the monitored loss that counts as an
        improvement, for early stopping and the plateau schedule (>= 0).
    reduce_lr_patience : int or None, default=3
        Multiply the learning rate by ``reduce_lr_factor`` after this many
        epochs without improvement (Keras ``ReduceLROnPlateau``); ``None``
        disables it.
    reduce_lr_factor : float, default=0.2
        Factor in (0, 1) applied by the plateau schedule.
    class_weight : None, "balanced" or dict, default=None
        Weights of the training loss per class; ``"balanced"`` weights
        classes inversely to their frequency in the training part; a dict
        must give a weight for every class label.
    augment_flip : {None, "horizontal", "vertical", "horizontal_and_vertical"}, default=None
        Random flips during training.
    augment_rotation : float, default=0.0
        Random rotations up to this fraction of a full turn (0.05 = ±18°).
    augment_zoom : float, default=0.0
        Random zoom in/out up to this fraction, in [0, 1).
    augment_brightness : float, default=0.0
        Random brightness shifts up to this fraction of the intensity range, in [0, 1].
    cache_trunk : {"auto", True, False}, default="auto"
        Train on cached trunk activations: the backbone is cut after the
        last frozen layer (the one before the first ``unfreeze`` layer; the
        backbone's output when only the head is trained), that layer's
        spatial output is computed once per image (per-sample cache keyed by
        the sample key, backbone, weights, input size and cut layer) and
        only the layers after the cut plus the head are trained on it. Same
        architecture, initialisation, batches and frozen batch
        normalisation as ``False`` (end to end on images), so for the same
        ``random_state`` the results agree up to float rounding. The cut
        must be a layer whose output is the only tensor the unfrozen top
        needs (:func:`valid_cut_indices`); a cut that a residual connection
        crosses is refused naming the layer and the nearest valid
        ``unfreeze`` values. Augmentation is unavailable in this mode (see
        Notes): ``True`` with augmentation is refused; ``"auto"`` caches
        exactly when no augmentation is asked for.
    cache : bool or path, default=True
        Where trunk activations are cached (``True`` process memory, a
        directory for memory plus disk, ``False`` recompute them at every
        fit and prediction); see :func:`featurepipe.cache.get_cache`.
    validation_fraction : float, default=0.1
        Fraction of the training data (the fold passed to ``fit``) held out,
        stratified by class, to monitor the loss for early stopping and the
        plateau schedule. 0 uses no validation data and monitors the
        training loss instead.
    random_state : int, RandomState instance or None, default=None
        Seeds the split, the shuffling, the head initialisation and the
        augmentation. An int calls ``keras.utils.set_random_seed`` (which
        also seeds Python's and NumPy's global generators). Multi-threaded
        CPU kernels can still make repeated fits differ in the last digits.
    verbose : int, default=0
        Keras training verbosity (0 silent, 1 progress bar, 2 one line per epoch).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    model_ : keras.Model
        The trained network; input float32 ``(None, input_size, input_size, 3)``
        already scaled by the backbone's ``preprocess``.
    preprocess_ : callable
        The backbone's preprocessing (float32 RGB in [0, 255] → network input).
    input_size_ : int
    n_channels_in_ : int
        Channels of the training images (1 or 3); prediction images must match.
    history_ : dict of str to list
        Per-epoch ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy`` and
        ``learning_rate`` of both phases, concatenated (for learning curves).
    n_head_epochs_, n_fine_tune_epochs_ : int
        Epochs run in each phase.
    n_unfrozen_layers_ : int
        Backbone layers made trainable for fine-tuning (0 when the phase did not run).
    fine_tune_kept_ : bool
        Whether the fine-tuned weights were kept: ``False`` when fine-tuning
        did not run or did not reach a lower monitored loss than the
        head-only phase (then the head-only weights are restored).
    validation_indices_ : ndarray of int
        Positions in the ``X`` given to ``fit`` of the samples held out for validation.
    trunk_cut_layer_ : str or None
        Name of the backbone layer whose cached output the top was trained
        on (``None`` when trained end to end on images).
    trunk_activation_shape_ : tuple of int or None
        Shape ``(h, w, c)`` of one sample's cached trunk activations.

    Notes
    -----
    The head's own batch normalisation uses momentum 0.9 (Keras default
    0.99) so that its running statistics settle within the few dozen
    gradient steps a small dataset gives.

    Images (featurepipe convention: float32 in [0, 1], ``(H, W)`` or
    ``(H, W, 3)``) are resized to ``input_size`` (area interpolation when
    shrinking), grayscale is replicated to three channels, and the result
    times 255 goes through the backbone's own ``preprocess``. Augmentation
    layers act on that [0, 255] batch and only in ``fit``.

    Why augmentation is not moved to the cached activations: the cache
    holds one activation map per image, and an augmented image is a new
    image. Transforming the cached map instead is exact only for trunks
    that commute with the transform; a horizontal flip commutes with a CNN
    only when every kernel is left-right symmetric (ImageNet kernels are
    not), and rotations, zooms and brightness changes pass through the
    trunk's nonlinearities, so no transform of the map reproduces them.
    Hence augmentation needs end-to-end training (``cache_trunk=False``),
    which recomputes the whole backbone for every image at every epoch.

    With cached activations, prediction in the fitting process reads (or
    computes and caches) the test images' trunk activations and runs the
    top; ``model_`` (the whole network, the same weights) is what pickles
    and what predicts after reloading. Memory: one float32 map per image,
    e.g. 7x7x1280 (250 kB) for the output of a 224-pixel MobileNetV2 or
    EfficientNet-Lite0.

    The fitted estimator pickles with its trained network (as the bytes of
    a ``.keras`` file), so it reloads without network access and without
    the backbone registry and predicts identically; a built-in input
    scaling (:data:`featurepipe.cnn.preprocessing.INPUT_SCALINGS`) is stored
    by name, so the safe model loader loads it without ``--trust``; a
    backbone's own preprocessing function is pickled by reference.

    References
    ----------
    M. Sandler, A. Howard, M. Zhu, A. Zhmoginov, L.-C. Chen. MobileNetV2:
    Inverted residuals and linear bottlenecks. CVPR 2018.
    J. Yosinski, J. Clune, Y. Bengio, H. Lipson. How transferable are
    features in deep neural networks? NeurIPS 2014.
    W. Al-Dhabyani, M. Gomaa, H. Khaled, A. Fahmy. Dataset of breast
    ultrasound images. Data in Brief 28 (2020) 104863 (BUSI, the dataset on
    which such fine-tuned baselines are commonly reported).
    """

    def __init__(self, backbone="mobilenet_v2", weights="imagenet", input_size=None, dense_units=(256,),
                 dropout=0.5, optimizer="adam", momentum=0.9, learning_rate=1e-3, fine_tune_learning_rate=1e-5,
                 unfreeze=0, epochs=20, fine_tune_epochs=10, batch_size=32, patience=5, min_delta=1e-4,
                 reduce_lr_patience=3, reduce_lr_factor=0.2, class_weight=None, augment_flip=None, augment_rotation=0.0,
                 augment_zoom=0.0, augment_brightness=0.0, validation_fraction=0.1, cache_trunk="auto",
                 cache=True, random_state=None, verbose=0):
        self.backbone = backbone
        self.weights = weights
        self.input_size = input_size
        self.dense_units = dense_units
        self.dropout = dropout
        self.optimizer = optimizer
        self.momentum = momentum
        self.learning_rate = learning_rate
        self.fine_tune_learning_rate = fine_tune_learning_rate
        self.unfreeze = unfreeze
        self.epochs = epochs
        self.fine_tune_epochs = fine_tune_epochs
        self.batch_size = batch_size
        self.patience = patience
        self.min_delta = min_delta
        self.reduce_lr_patience = reduce_lr_patience
        self.reduce_lr_factor = reduce_lr_factor
        self.class_weight = class_weight
        self.augment_flip = augment_flip
        self.augment_rotation = augment_rotation
        self.augment_zoom = augment_zoom
        self.augment_brightness = augment_brightness
        self.validation_fraction = validation_fraction
        self.cache_trunk = cache_trunk
        self.cache = cache
        self.random_state = random_state
        self.verbose = verbose

    # -- validation -----------------------------------------------------------------------------
    _parameter_constraints = {
        "backbone": [str],
        "weights": [StrOptions({"imagenet"}), None, str, os.PathLike],
        "input_size": [None, StrictInterval(Integral, 1, None, closed="left")],
        "dense_units": [StrictInterval(Integral, 0, None, closed="left"), list, tuple],
        "dropout": [StrictInterval(Real, 0, 1, closed="left")],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "momentum": [StrictInterval(Real, 0, 1, closed="left")],
        "learning_rate": [StrictInterval(Real, 0, None, closed="neither")],
        "fine_tune_learning_rate": [StrictInterval(Real, 0, None, closed="neither")],
        "unfreeze": [StrictInterval(Integral, 0, None, closed="left"), str],
        "epochs": [StrictInterval(Integral, 1, None, closed="left")],
        "fine_tune_epochs": [StrictInterval(Integral, 0, None, closed="left")],
        "batch_size": [StrictInterval(Integral, 1, None, closed="left")],
        "patience": [None, StrictInterval(Integral, 0, None, closed="left")],
        "min_delta": [StrictInterval(Real, 0, None, closed="left")],
        "reduce_lr_patience": [None, StrictInterval(Integral, 0, None, closed="left")],
        "reduce_lr_factor": [StrictInterval(Real, 0, 1, closed="neither")],
        "class_weight": [None, StrOptions({"balanced"}), dict],
        "augment_flip": [None, StrOptions({mode for mode in FLIP_MODES if mode is not None})],
        "augment_rotation": [StrictInterval(Real, 0, None, closed="left")],  # fraction of a full turn
        "augment_zoom": [StrictInterval(Real, 0, 1, closed="left")],
        "augment_brightness": [StrictInterval(Real, 0, 1, closed="both")],
        "validation_fraction": [StrictInterval(Real, 0, 1, closed="left")],
        "cache_trunk": [StrOptions({"auto"}), Options(bool, {True, False})],
        "cache": ["boolean", None, str, bytes, os.PathLike],
        "random_state": ["random_state"],
        "verbose": [Options(Integral, {0, 1, 2})],
    }

    def _validate_param_rules(self):
        from ..cnn.specs import get_backbone

        try:
            spec = get_backbone(self.backbone)
        except ValueError as exc:
            raise invalid_parameter(self, "backbone", f"a registered backbone ({exc})") from None
        if self.input_size is not None and self.input_size < spec.min_input_size:
            raise invalid_parameter(self, "input_size", f"None or an integer >= {spec.min_input_size} (the "
                                                        f"smallest input {spec.name!r} takes)")
        if self._dense_units() is None:
            raise invalid_parameter(self, "dense_units", "an integer >= 0 or a sequence of positive integers")
        if self.unfreeze == "":
            raise invalid_parameter(self, "unfreeze", "an integer >= 0 or the name of a backbone layer")
        get_cache(self.cache)  # an empty path is refused, naming the parameter
        if self.cache_trunk is True and self._augments():
            raise ValueError(
                f"{type(self).__name__}: cache_trunk=True cannot be combined with augmentation "
                f"(augment_flip={self.augment_flip!r}, augment_rotation={self.augment_rotation!r}, "
                f"augment_zoom={self.augment_zoom!r}, augment_brightness={self.augment_brightness!r}): "
                "the frozen trunk's activations are computed once per image, so an image transformed at "
                "each epoch has no cached activations (see the class notes). Turn augmentation off, or "
                "pass cache_trunk=False (or 'auto') to train end to end on augmented images."
            )

    def _augments(self):
        return (self.augment_flip is not None or self.augment_rotation > 0 or self.augment_zoom > 0
                or self.augment_brightness > 0)

    def _uses_cached_trunk(self):
        return self.cache_trunk is True or (self.cache_trunk == "auto" and not self._augments())

    def _dense_units(self):
        value = self.dense_units
        if is_int(value):
            return () if value == 0 else ((int(value),) if value > 0 else None)
        if isinstance(value, (list, tuple)) and all(is_int(v) and v > 0 for v in value):
            return tuple(int(v) for v in value)
        return None

    def _class_weights(self, y_idx, n_classes):
        """Per-class loss weights indexed by class position, or None."""
        cw = self.class_weight
        if cw is None:
            return None
        if cw == "balanced":
            present = np.unique(y_idx)
            weights = np.ones(n_classes)
            weights[present] = compute_class_weight("balanced", classes=present, y=y_idx)
            return weights
        labels = list(self.classes_)
        unknown = [k for k in cw if not any(_same_label(k, c) for c in labels)]
        missing = [c for c in labels if not any(_same_label(k, c) for k in cw)]
        if unknown or missing:
            raise ValueError(
                f"{type(self).__name__}: class_weight keys must be exactly the class labels "
                f"{[np.asarray(c).item() for c in labels]}; unknown keys: {unknown}, missing classes: "
                f"{[np.asarray(c).item() for c in missing]}"
            )
        weights = np.empty(n_classes)
        for key, value in cw.items():
            if not is_real(value) or value < 0:
                raise ValueError(f"{type(self).__name__}: class_weight[{key!r}] must be a number >= 0; got {value!r}")
            weights[next(i for i, c in enumerate(labels) if _same_label(key, c))] = value
        return weights

    # -- model ----------------------------------------------------------------------------------
    def _build(self, spec, units, size, n_classes):
        import keras

        base = spec.builder(self.weights, (size, size, 3))
        base.trainable = False
        inputs = keras.Input(shape=(size, size, 3), name="image")
        # training=False states the intent (backbone in inference mode); Keras 3 fit() overrides it for
        # nested models, so _unfreeze also keeps the backbone's BatchNormalization layers frozen.
        x = base(inputs, training=False)
        outputs = self._add_head(x, units, n_classes)
        return keras.Model(inputs, outputs, name=f"transfer_{spec.name}"), base

    def _add_head(self, x, units, n_classes):
        """The new head (pooling, batch normalisation, dropout, dense layers, output) applied to ``x``."""
        import keras

        x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
        # momentum 0.9 (Keras default 0.99): the running statistics used at prediction must settle within
        # the few dozen steps a small medical dataset gives.
        x = keras.layers.BatchNormalization(momentum=0.9, name="head_bn")(x)
        x = keras.layers.Dropout(self.dropout, name="head_dropout")(x)
        for i, n in enumerate(units):
            x = keras.layers.Dense(n, activation="relu", name=f"head_dense_{i}")(x)
            x = keras.layers.Dropout(self.dropout, name=f"head_dense_{i}_dropout")(x)
        if n_classes == 2:
            outputs = keras.layers.Dense(1, activation="sigmoid", name="head_output")(x)
        else:
            outputs = keras.layers.Dense(n_classes, activation="softmax", name="head_output")(x)
        return outputs

    def _build_cached(self, spec, units, size, n_classes, seed):
        """The transfer model split at the last frozen layer: ``(model, base, top, cut layer name, trunk)``.

        ``model`` maps images to probabilities (the backbone nested as in
        :meth:`_build`, the head as a nested model); ``top`` maps the cut
        layer's activations to the same probabilities through the same layer
        objects (trained, it trains ``model``); ``trunk`` is the per-process
        frozen backbone of :func:`featurepipe.cnn.load_backbone` cut at that
        layer, whose weights ``base`` starts from.
        """
        import keras

        from ..cnn.specs import load_backbone

        shared = load_backbone(self.backbone, self.weights, size)
        if seed is not None:  # building ``shared`` (first use in this process) may have drawn random numbers
            keras.utils.set_random_seed(seed)
        # Built like _build's base (same random draws, so the head starts from the same weights for the
        # same seed), then given the shared model's weights: the cached activations come from that model.
        base = spec.builder(self.weights, (size, size, 3))
        base.set_weights(shared.get_weights())
        base.trainable = False
        fine_tunes = self.unfreeze != 0 and self.fine_tune_epochs > 0
        start = self._unfreeze_start(base) if fine_tunes else len(base.layers)
        cut_index = max(start - 1, 0)
        valid = valid_cut_indices(base)
        if cut_index not in valid:
            raise ValueError(self._invalid_cut_message(base, cut_index, valid))
        cut = base.layers[cut_index]
        head_input = keras.Input(shape=tuple(base.output.shape[1:]), name="features")
        head = keras.Model(head_input, self._add_head(head_input, units, n_classes), name="head")
        inputs = keras.Input(shape=(size, size, 3), name="image")
        model = keras.Model(inputs, head(base(inputs, training=False)), name=f"transfer_{spec.name}")
        top = keras.Model(cut.output, head(base.output), name=f"transfer_{spec.name}_top")
        trunk = keras.Model(shared.input, shared.get_layer(cut.name).output, name=f"{spec.name}_trunk")
        return model, base, top, cut.name, trunk

    def _invalid_cut_message(self, base, cut_index, valid):
        layers = base.layers
        n = len(layers)
        below = [i for i in valid if i < cut_index]
        above = [i for i in valid if i > cut_index]
        options = [f"unfreeze={n - 1 - i} (first unfrozen layer {layers[i + 1].name!r})"
                   for i in (below[-1:] + above[:1]) if i + 1 < n]
        return (
            f"{type(self).__name__}: unfreeze={self.unfreeze!r} cuts backbone {self.backbone!r} after layer "
            f"{layers[cut_index].name!r}, but the unfrozen layers also need an earlier tensor (a residual "
            f"connection crosses the cut), so the frozen trunk's activations cannot be cached there. Nearest "
            f"valid choices: {', '.join(options) or 'none'}; or pass cache_trunk=False to train end to end."
        )

    def _trunk_token(self, cut_name, size):
        """Cache token of the trunk activations: backbone, weights, input size, cut layer, version."""
        from ..cnn.extractor import CNNFeatures

        # CNNFeatures' token already identifies backbone, weights (files, random networks, user models) and
        # input size; the suffix tells these unpooled maps apart from its pooled features.
        tapped = CNNFeatures(backbone=self.backbone, weights=self.weights, input_size=size, layer=cut_name)
        return step_token(tapped) + "|unpooled-trunk-activations"

    def _trunk_activations(self, samples, trunk_fn, token, shape, size, n_channels=None):
        """``(activations (n, *shape) float32, channel count of the computed images or None)``."""
        name = type(self).__name__
        seen = []

        def compute(missing):
            out = []
            channels = n_channels
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start:start + self.batch_size]
                batch, channels = load_resized(chunk, size, owner=name, n_channels=channels)
                out.extend(np.asarray(trunk_fn(batch * np.float32(255.0)), dtype=np.float32))
            seen.append(channels)
            return out

        found = cached_per_sample(get_cache(self.cache), token, samples, compute, expected_shape=shape,
                                  dtype=np.float32)
        acts = np.empty((len(samples),) + tuple(shape), dtype=np.float32)
        for i, sample in enumerate(samples):
            acts[i] = found[sample.key]
        return acts, (seen[0] if seen else None)

    def _make_optimizer(self, learning_rate):
        import keras

        if self.optimizer == "adam":
            return keras.optimizers.Adam(learning_rate=learning_rate)
        if self.optimizer == "rmsprop":
            return keras.optimizers.RMSprop(learning_rate=learning_rate)
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=self.momentum)

    def _augmenter(self, seed):
        import keras

        layers = []
        if self.augment_flip is not None:
            layers.append(keras.layers.RandomFlip(self.augment_flip, seed=seed))
        if self.augment_rotation > 0:
            layers.append(keras.layers.RandomRotation(self.augment_rotation, fill_mode="reflect", seed=seed + 1))
        if self.augment_zoom > 0:
            layers.append(keras.layers.RandomZoom(self.augment_zoom, fill_mode="reflect", seed=seed + 2))
        if self.augment_brightness > 0:
            layers.append(keras.layers.RandomBrightness(self.augment_brightness, value_range=(0.0, 255.0),
                                                        seed=seed + 3))
        return keras.Sequential(layers, name="augmentation") if layers else None

    def _unfreeze(self, base):
        layers = base.layers
        start = self._unfreeze_start(base)
        base.trainable = True
        for layer in layers[:start]:
            layer.trainable = False
        # Keep every BatchNormalization frozen, hence in inference mode. Calling the base with
        # training=False is not enough in Keras 3: fit() passes training=True to the nested model and
        # overrides it (keras-team/keras#20285); a BN layer with trainable=False always uses its
        # moving statistics and keeps its scale and offset.
        import keras

        for layer in layers[start:]:
            for sub in _walk_layers(layer):
                if isinstance(sub, keras.layers.BatchNormalization):
                    sub.trainable = False
        return len(layers) - start

    def _unfreeze_start(self, base):
        """Index in ``base.layers`` of the first layer that ``unfreeze`` makes trainable."""
        layers = base.layers
        if isinstance(self.unfreeze, str):
            names = [layer.name for layer in layers]
            if self.unfreeze not in names:
                shown = ", ".join(names[-8:])
                raise ValueError(f"{type(self).__name__}: unfreeze={self.unfreeze!r} is not a layer of backbone "
                                 f"{self.backbone!r} ({len(names)} layers; the last ones are: {shown})")
            start = names.index(self.unfreeze)
        else:
            if self.unfreeze > len(layers):
                raise ValueError(f"{type(self).__name__}: unfreeze={self.unfreeze} but backbone {self.backbone!r} "
                                 f"has only {len(layers)} layers")
            start = len(layers) - self.unfreeze
        return start

    def _validation_split(self, y_idx, classes, seed):
        """Sorted ``(train_idx, val_idx)``: a stratified hold-out of the data passed to ``fit`` only."""
        name = type(self).__name__
        n_samples, n_classes = len(y_idx), len(classes)
        indices = np.arange(n_samples)
        if self.validation_fraction == 0:
            return indices, indices[:0]
        n_val = int(np.ceil(self.validation_fraction * n_samples))
        counts = np.bincount(y_idx, minlength=n_classes)
        if n_val < n_classes or n_samples - n_val < n_classes or counts.min() < 2:
            raise ValueError(
                f"{name}: validation_fraction={self.validation_fraction} cannot hold out a stratified "
                f"validation set from {n_samples} samples with class counts "
                f"{dict(zip([np.asarray(c).item() for c in classes], counts.tolist()))} (each class needs "
                "at least 2 samples and the held-out part at least one per class); use more data or "
                "validation_fraction=0"
            )
        train_idx, val_idx = train_test_split(indices, test_size=n_val, stratify=y_idx, random_state=seed)
        return np.sort(train_idx), np.sort(val_idx)

    # -- fit ------------------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train the head (and optionally fine-tune the backbone) on image samples.

        Parameters
        ----------
        X : sequence of Sample, file paths or image arrays, or a Dataset
            Training images (see :func:`featurepipe.as_samples`); all
            grayscale or all colour.
        y : array-like of shape (n_samples,)
            Class labels; at least two classes.

        Returns
        -------
        self
        """
        import keras
        import tensorflow as tf

        name = type(self).__name__
        from ..cnn.specs import get_backbone

        spec, units = get_backbone(self.backbone), self._dense_units()
        samples, y, classes = check_samples_and_labels(X, y, name)
        self.classes_ = classes
        n_classes = len(classes)
        y_idx = np.searchsorted(classes, y)
        class_weights = self._class_weights(y_idx, n_classes)

        rng = check_random_state(self.random_state)
        seed = int(rng.randint(0, 2**31 - 1))
        if self.random_state is not None:
            keras.utils.set_random_seed(seed)

        size = int(self.input_size or spec.default_input_size)
        train_idx, val_idx = self._validation_split(y_idx, classes, seed)

        def targets(idx):
            t = y_idx[idx]
            return t.astype(np.float32)[:, None] if n_classes == 2 else t.astype(np.int32)

        weights = (np.ones(len(train_idx), np.float32) if class_weights is None
                   else class_weights[y_idx[train_idx]].astype(np.float32))
        preprocess = spec.preprocess
        bs = self.batch_size
        top = None
        if self._uses_cached_trunk():
            build_seed = seed if self.random_state is not None else None
            model, base, top, cut_name, trunk = self._build_cached(spec, units, size, n_classes, build_seed)
            trunk_fn = _compiled(lambda x: trunk(preprocess(x), training=False), (None, size, size, 3))
            token = self._trunk_token(cut_name, size)
            shape = tuple(int(d) for d in trunk.output.shape[1:])
            inputs, n_channels = self._trunk_activations(samples, trunk_fn, token, shape, size)
            if n_channels is None:  # every activation was cached: read one image for the channel count
                n_channels = load_resized(samples[:1], size, owner=name)[1]
            train_ds = (tf.data.Dataset.from_tensor_slices((inputs[train_idx], targets(train_idx), weights))
                        .shuffle(len(train_idx), seed=seed, reshuffle_each_iteration=True)
                        .batch(bs)
                        .prefetch(tf.data.AUTOTUNE))
            val_data = (inputs[val_idx], targets(val_idx)) if len(val_idx) else None
            trained = top
        else:
            images, n_channels = load_resized(samples, size, owner=name)
            images *= np.float32(255.0)
            augmenter = self._augmenter(seed % (2**31 - 8))

            def prepare(x, t, w):
                if augmenter is not None:
                    x = augmenter(x, training=True)
                return preprocess(x), t, w

            train_ds = (tf.data.Dataset.from_tensor_slices((images[train_idx], targets(train_idx), weights))
                        .shuffle(len(train_idx), seed=seed, reshuffle_each_iteration=True)
                        .batch(bs)
                        .map(prepare)
                        .prefetch(tf.data.AUTOTUNE))
            val_data = None
            if len(val_idx):
                val_data = (np.asarray(preprocess(images[val_idx]), dtype=np.float32), targets(val_idx))
            del images
            model, base = self._build(spec, units, size, n_classes)
            trained = model
            cut_name = token = shape = None
        loss = "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"
        monitor = "val_loss" if val_data is not None else "loss"
        history = {}

        def run_phase(learning_rate, n_epochs, initial_epoch):
            trained.compile(optimizer=self._make_optimizer(learning_rate), loss=loss, metrics=["accuracy"])
            callbacks = []
            if self.patience is not None:
                callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=self.patience,
                                                               min_delta=self.min_delta,
                                                               restore_best_weights=True))
            if self.reduce_lr_patience is not None:
                callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=self.reduce_lr_factor,
                                                                   patience=self.reduce_lr_patience,
                                                                   min_delta=self.min_delta))
            hist = trained.fit(train_ds, validation_data=val_data, epochs=initial_epoch + n_epochs,
                               initial_epoch=initial_epoch, callbacks=callbacks, shuffle=False,  # tf.data shuffles
                               verbose=self.verbose)
            logged = dict(hist.history)
            if "learning_rate" not in logged:  # only ReduceLROnPlateau logs it; the rate was constant
                logged["learning_rate"] = [learning_rate] * len(logged[monitor])
            for key, values in logged.items():
                history.setdefault(key, []).extend(float(v) for v in values)
            return hist.history[monitor]

        head_losses = run_phase(self.learning_rate, self.epochs, 0)
        self.n_head_epochs_ = len(head_losses)
        self.n_fine_tune_epochs_ = 0
        if self.unfreeze != 0 and self.fine_tune_epochs > 0:
            best_head = min(head_losses) if self.patience is not None else head_losses[-1]
            head_weights = model.get_weights()
            self.n_unfrozen_layers_ = self._unfreeze(base)
            tune_losses = run_phase(self.fine_tune_learning_rate, self.fine_tune_epochs, self.n_head_epochs_)
            self.n_fine_tune_epochs_ = len(tune_losses)
            best_tune = min(tune_losses) if self.patience is not None else tune_losses[-1]
            self.fine_tune_kept_ = bool(best_tune < best_head)
            if not self.fine_tune_kept_:
                model.set_weights(head_weights)  # fine-tuning did not help: keep the head-only checkpoint
        else:
            self.n_unfrozen_layers_ = 0
            self.fine_tune_kept_ = False
        model.trainable = False

        self.model_ = model
        self.preprocess_ = preprocess
        self.input_size_ = size
        self.n_channels_in_ = n_channels
        self.history_ = history
        self.validation_indices_ = val_idx
        self.trunk_cut_layer_ = cut_name
        self.trunk_activation_shape_ = shape
        self._trunk_cache_token = token
        self._top_model = top
        self._infer = None
        self._top_infer = None
        return self

    # -- prediction -----------------------------------------------------------------------------
    def _inference_fn(self):
        infer = getattr(self, "_infer", None)
        if infer is None:
            import tensorflow as tf

            model = self.model_
            infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
            self._infer = infer
        return infer

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in ``classes_`` order.

        Images are streamed in batches of ``batch_size``, so memory does not
        grow with the number of samples.
        """
        from ..metrics import score_columns

        check_is_fitted(self, "model_")
        samples = as_samples(X)
        out = np.empty((len(samples), len(self.classes_)), dtype=np.float64)
        if self._cached_trunk_usable():
            acts, _ = self._trunk_activations(samples, self._trunk_fn(), self._trunk_cache_token,
                                              self.trunk_activation_shape_, self.input_size_,
                                              n_channels=self.n_channels_in_)
            infer = self._top_inference_fn()
            for start in range(0, len(samples), self.batch_size):
                out[start:start + self.batch_size] = score_columns(infer(acts[start:start + self.batch_size]),
                                                                   kind="proba")
            return out
        infer = self._inference_fn()
        for start in range(0, len(samples), self.batch_size):
            chunk = samples[start:start + self.batch_size]
            batch, _ = load_resized(chunk, self.input_size_, owner=type(self).__name__,
                                    n_channels=self.n_channels_in_)
            batch = np.asarray(self.preprocess_(batch * np.float32(255.0)), dtype=np.float32)
            out[start:start + len(chunk)] = score_columns(infer(batch), kind="proba")
        return out

    def _cached_trunk_usable(self):
        """Whether prediction can use cached trunk activations and the top model (same process, same trunk).

        After unpickling, or once the backbone registry rebuilt the shared
        model (e.g. random weights after ``clear_model_cache``), the whole
        network ``model_`` predicts from the images instead.
        """
        if getattr(self, "_top_model", None) is None:
            return False
        try:
            return self._trunk_token(self.trunk_cut_layer_, self.input_size_) == self._trunk_cache_token
        except ValueError:  # the backbone is no longer registered
            return False

    def _trunk_fn(self):
        import keras

        from ..cnn.specs import load_backbone

        shared = load_backbone(self.backbone, self.weights, self.input_size_)
        trunk = keras.Model(shared.input, shared.get_layer(self.trunk_cut_layer_).output)
        preprocess = self.preprocess_
        size = self.input_size_
        return _compiled(lambda x: trunk(preprocess(x), training=False), (None, size, size, 3))

    def _top_inference_fn(self):
        infer = getattr(self, "_top_infer", None)
        if infer is None:
            top = self._top_model
            infer = _compiled(lambda x: top(x, training=False), (None,) + tuple(self.trunk_activation_shape_))
            self._top_infer = infer
        return infer

    def predict(self, X):
        """Most probable class of each sample, shape (n_samples,)."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]

    # -- pickling -------------------------------------------------------------------------------
    def __getstate__(self):
        state = super().__getstate__()
        state = dict(state)
        for transient in ("_infer", "_top_infer", "_top_model"):  # the whole model_ predicts after reloading
            state.pop(transient, None)
        model = state.pop("model_", None)
        if model is not None:
            state["_model_keras_bytes"] = model_to_bytes(model)
        # A built-in input scaling is stored by name (a string), so the safe loader, which trusts
        # classes and never functions, loads the model without --trust; a user's own function stays
        # a reference that must be trusted by name.
        preprocess = state.get("preprocess_")
        name = getattr(preprocess, "__name__", None)
        if preprocess is not None and INPUT_SCALINGS.get(name) is preprocess:
            state["preprocess_"] = None
            state["_input_scaling_name"] = name
        return state

    def __setstate__(self, state):
        state = dict(state)
        data = state.pop("_model_keras_bytes", None)
        scaling = state.pop("_input_scaling_name", None)
        if scaling is not None:
            if scaling not in INPUT_SCALINGS:  # only featurepipe's own functions are looked up by name
                raise ValueError(f"KerasTransferClassifier: unknown input scaling {scaling!r} in the saved state; "
                                 f"expected one of {sorted(INPUT_SCALINGS)}")
            state["preprocess_"] = INPUT_SCALINGS[scaling]
        super().__setstate__(state)
        if data is not None:
            self.model_ = model_from_bytes(data)
        self._infer = None
        self._top_infer = None
        self._top_model = None


def valid_cut_indices(model):
    """Positions ``k`` in ``model.layers`` after which the model splits into a trunk and a top.

    A cut after layer ``k`` is valid when the output of ``model.layers[k]``
    is the only tensor that the later layers need from the earlier ones:
    no residual (skip) connection crosses it. The model's layers must be in
    topological order (as Keras lists a functional model's layers) and each
    called once.

    Parameters
    ----------
    model : keras.Model
        A functional model with one input and one output.

    Returns
    -------
    list of int
        Increasing; always contains ``len(model.layers) - 1`` (the output layer).

    Examples
    --------
    >>> import keras
    >>> x0 = keras.Input((8, 8, 3), name="x"); x1 = keras.layers.Conv2D(3, 1, name="a")(x0)
    >>> x2 = keras.layers.ReLU(name="b")(x1); x3 = keras.layers.Add(name="c")([x1, x2])
    >>> x4 = keras.layers.ReLU(name="d")(x3)
    >>> m = keras.Model(x0, x4)
    >>> [m.layers[k].name for k in valid_cut_indices(m)]  # "b" is not a cut: "c" also needs "a"'s output
    ['x', 'a', 'c', 'd']
    """
    import keras

    layers = model.layers
    producer = {}
    for i, layer in enumerate(layers):
        for tensor in keras.tree.flatten(layer.output):
            producer[id(tensor)] = i
    last_use = list(range(len(layers)))  # index of the last layer that reads each layer's output
    for i, layer in enumerate(layers):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        for tensor in keras.tree.flatten(layer.input):
            j = producer.get(id(tensor))
            if j is not None:
                last_use[j] = max(last_use[j], i)
    valid, reach = [], -1
    for k, layer in enumerate(layers):
        # earlier layers' outputs must all be consumed by layer k at the latest, and layer k has one output
        if reach <= k and len(keras.tree.flatten(layer.output)) == 1:
            valid.append(k)
        reach = max(reach, last_use[k])
    return valid


def _compiled(function, shape):
    """``function`` as a ``tf.function`` traced once for float32 batches of ``shape``."""
    import tensorflow as tf

    return tf.function(function, input_signature=[tf.TensorSpec(shape, tf.float32)], reduce_retracing=True)


def _walk_layers(layer):
    """``layer`` and, recursively, the layers of nested models."""
    yield layer
    for sub in getattr(layer, "layers", None) or ():
        yield from _walk_layers(sub)


def _same_label(a, b):
    """Whether a class_weight key denotes the class label ``b`` (NumPy scalars compare by value)."""
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False
