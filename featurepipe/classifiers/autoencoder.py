"""Stacked (denoising) autoencoder feature learner on flattened images, and its classification pipeline.

The stacked-autoencoder baseline of the breast-imaging literature: images
are resized to a small square, flattened, and a stack of dense encoder
layers is trained without labels to reconstruct them — greedily one layer
at a time (each layer learns to reconstruct the codes of the layer below,
optionally from a noise-corrupted copy: a *denoising* autoencoder), then
end to end. The codes of the top layer are the features; any scikit-learn
classifier (logistic regression plays the part of the softmax layer) sits
on top. Unlike a frozen CNN it learns from the training fold, so it is an
ordinary stateful transformer, not a cached
:class:`~featurepipe.base.FeatureExtractor`.

References
----------
P. Vincent, H. Larochelle, I. Lajoie, Y. Bengio, P.-A. Manzagol. Stacked
denoising autoencoders: learning useful representations in a deep network
with a local denoising criterion. JMLR 11 (2010) 3371-3408.
Y. Bengio, P. Lamblin, D. Popovici, H. Larochelle. Greedy layer-wise
training of deep networks. NeurIPS 2006.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Options, StrOptions
from sklearn.utils.validation import check_is_fitted

from .._validation import ParamValidationMixin, StrictInterval, invalid_parameter, is_int
from ..sample import as_samples
from ._images import KerasImageEstimatorMixin, load_resized
from ._keras_serialization import model_from_bytes, model_to_bytes

__all__ = ["AE_ACTIVATIONS", "StackedAutoencoder", "make_autoencoder_pipeline"]

AE_ACTIVATIONS = ("relu", "sigmoid", "tanh", "elu")




class StackedAutoencoder(ParamValidationMixin, KerasImageEstimatorMixin, TransformerMixin, BaseEstimator):
    """Dense stacked (denoising) autoencoder: flattened resized images → learned codes.

    ``fit`` learns the encoder from the images alone (``y`` is ignored);
    ``transform`` returns the codes of the top encoder layer. Small and
    CPU-friendly: with the defaults (32x32 grayscale input, layers of 256
    and 64 units) the network has about 0.6 million weights.

    When to use it: as the "learned features without a pretrained CNN"
    baseline of a comparison (see :func:`make_autoencoder_pipeline`). It
    ignores spatial structure beyond what a dense layer can learn, so on
    real images it usually trails CNN features; it is here so the
    comparison table can show by how much.

    Parameters
    ----------
    input_size : int, default=32
        Images are resized to ``input_size`` x ``input_size`` pixels and
        flattened (``input_size**2`` values per grayscale image, three times
        that for colour; grayscale and colour are not mixed).
    hidden_units : sequence of int, default=(256, 64)
        Units of the encoder layers, input side first; the last entry is
        the number of output features. The decoder mirrors the encoder.
    activation : {"relu", "sigmoid", "tanh", "elu"}, default="relu"
        Activation of the encoder and of the decoder's hidden layers; the
        decoder's output layer is a sigmoid (pixels are in [0, 1]).
    layerwise : bool, default=True
        Greedy layer-wise pretraining (Bengio et al. 2006; Vincent et al.
        2010): layer k is trained as a one-hidden-layer autoencoder of the
        codes of layer k-1 for ``epochs`` epochs. Then the whole stack is
        trained end to end for ``fine_tune_epochs`` epochs. With ``False``
        the stack is trained end to end only, for ``epochs`` epochs.
    noise : float, default=0.0
        Standard deviation of the Gaussian noise added to each layer's
        input during training (denoising autoencoder); 0 disables it. In
        units of pixel intensity (images are in [0, 1]) for the first layer.
    epochs : int, default=30
        Epochs per greedy layer (or of the end-to-end training when
        ``layerwise=False``).
    fine_tune_epochs : int, default=10
        Epochs of end-to-end training after the greedy phase (0 skips it).
    batch_size : int, default=32
        Images per gradient step and per transform batch.
    learning_rate : float, default=1e-3
        Adam learning rate (> 0).
    random_state : int, RandomState instance or None, default=None
        Seeds the weights, the noise and the shuffling (an int calls
        ``keras.utils.set_random_seed``).
    verbose : int, default=0
        Keras verbosity (0, 1 or 2).

    Attributes
    ----------
    encoder_ : keras.Model
        Flattened image (float32 in [0, 1]) → codes.
    autoencoder_ : keras.Model
        Flattened image → reconstruction.
    n_channels_in_ : int
        Channels of the training images (1 or 3); transform images must match.
    n_features_out_ : int
    history_ : dict of str to list
        Per-epoch training loss (mean squared reconstruction error):
        ``"layer_1_loss"`` … for the greedy phase, ``"loss"`` for the
        end-to-end phase.

    References
    ----------
    P. Vincent, H. Larochelle, I. Lajoie, Y. Bengio, P.-A. Manzagol. Stacked
    denoising autoencoders: learning useful representations in a deep
    network with a local denoising criterion. JMLR 11 (2010) 3371-3408.
    """

    def __init__(self, input_size=32, hidden_units=(256, 64), activation="relu", layerwise=True, noise=0.0,
                 epochs=30, fine_tune_epochs=10, batch_size=32, learning_rate=1e-3, random_state=None,
                 verbose=0):
        self.input_size = input_size
        self.hidden_units = hidden_units
        self.activation = activation
        self.layerwise = layerwise
        self.noise = noise
        self.epochs = epochs
        self.fine_tune_epochs = fine_tune_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.verbose = verbose

    _parameter_constraints = {
        "input_size": [StrictInterval(Integral, 2, None, closed="left")],  # pixels
        "hidden_units": [list, tuple],
        "activation": [StrOptions(set(AE_ACTIVATIONS))],
        "layerwise": ["boolean"],
        "noise": [StrictInterval(Real, 0, None, closed="left")],  # noise standard deviation
        "epochs": [StrictInterval(Integral, 1, None, closed="left")],
        "fine_tune_epochs": [StrictInterval(Integral, 0, None, closed="left")],
        "batch_size": [StrictInterval(Integral, 1, None, closed="left")],
        "learning_rate": [StrictInterval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
        "verbose": [Options(Integral, {0, 1, 2})],
    }

    def _validate_param_rules(self):
        if not self.hidden_units or not all(is_int(u) and u > 0 for u in self.hidden_units):
            raise invalid_parameter(self, "hidden_units", "a non-empty sequence of positive integers")

    def _flat(self, samples, n_channels=None):
        images, n_channels = load_resized(samples, self.input_size, owner=type(self).__name__,
                                          n_channels=n_channels, rgb=False)
        return images.reshape(len(images), -1), n_channels

    def _train(self, model, inputs, targets, epochs, key, history):
        import keras

        model.compile(optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate), loss="mse")
        hist = model.fit(inputs, targets, epochs=epochs, batch_size=self.batch_size, shuffle=True,
                         verbose=self.verbose)
        history[key] = [float(v) for v in hist.history["loss"]]

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the encoder from the images (``y`` is ignored).

        Parameters
        ----------
        X : sequence of Sample, file paths or image arrays, or a Dataset
            Float images in [0, 1], all grayscale or all colour.
        y : ignored

        Returns
        -------
        self
        """
        import keras

        units = tuple(int(u) for u in self.hidden_units)
        samples = as_samples(X)
        if len(samples) < 2:
            raise ValueError(f"{type(self).__name__}.fit needs at least 2 images; got {len(samples)}")
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(0, 2**31 - 1))
        if self.random_state is not None:
            keras.utils.set_random_seed(seed)
        data, n_channels = self._flat(samples)
        n_in = data.shape[1]
        act = self.activation

        inputs = keras.Input((n_in,), name="pixels")
        encoders = [keras.layers.Dense(u, activation=act, name=f"encoder_{k + 1}") for k, u in enumerate(units)]
        # decoder_k maps the codes of layer k back to the input of layer k
        sizes = (n_in,) + units
        decoders = [keras.layers.Dense(sizes[k], activation="sigmoid" if k == 0 else act, name=f"decoder_{k + 1}")
                    for k in range(len(units))]
        history = {}

        def noisy(x, k):
            if self.noise > 0:
                return keras.layers.GaussianNoise(self.noise, seed=seed + k, name=f"noise_{k + 1}")(x)
            return x

        if self.layerwise:
            codes = data
            for k, (enc, dec) in enumerate(zip(encoders, decoders)):
                layer_in = keras.Input((sizes[k],))
                single = keras.Model(layer_in, dec(enc(noisy(layer_in, k))))
                self._train(single, codes, codes, self.epochs, f"layer_{k + 1}_loss", history)
                codes = np.asarray(enc(codes), dtype=np.float32)
            end_to_end_epochs = self.fine_tune_epochs
        else:
            end_to_end_epochs = self.epochs

        x = inputs
        for k, enc in enumerate(encoders):
            x = enc(noisy(x, k) if k == 0 else x)
        code = x
        for dec in reversed(decoders):
            x = dec(x)
        autoencoder = keras.Model(inputs, x, name="stacked_autoencoder")
        if end_to_end_epochs > 0:
            self._train(autoencoder, data, data, end_to_end_epochs, "loss", history)

        self.autoencoder_ = autoencoder
        self.encoder_ = keras.Model(inputs, code, name="encoder")
        self.n_channels_in_ = n_channels
        self.n_features_out_ = units[-1]
        self.history_ = history
        return self

    def _batches(self, samples):
        for start in range(0, len(samples), self.batch_size):
            flat, _ = self._flat(samples[start:start + self.batch_size], n_channels=self.n_channels_in_)
            yield start, flat

    def transform(self, X):
        """Codes of the top encoder layer, shape (n_samples, hidden_units[-1]), float64."""
        check_is_fitted(self, "encoder_")
        samples = as_samples(X)
        out = np.empty((len(samples), self.n_features_out_))
        for start, flat in self._batches(samples):
            out[start:start + len(flat)] = np.asarray(self.encoder_(flat, training=False))
        return out

    def reconstruction_error(self, X):
        """Mean squared error between each flattened (resized) image and its reconstruction, shape (n_samples,)."""
        check_is_fitted(self, "autoencoder_")
        samples = as_samples(X)
        out = np.empty(len(samples))
        for start, flat in self._batches(samples):
            recon = np.asarray(self.autoencoder_(flat, training=False), dtype=np.float64)
            out[start:start + len(flat)] = ((recon - flat) ** 2).mean(axis=1)
        return out

    def get_feature_names_out(self, input_features=None):
        """``sae_0000``, ``sae_0001``, … one per code unit."""
        check_is_fitted(self, "encoder_")
        return np.asarray([f"sae_{i:04d}" for i in range(self.n_features_out_)], dtype=object)

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("encoder_", None)
        model = state.pop("autoencoder_", None)
        if model is not None:
            state["_autoencoder_keras_bytes"] = model_to_bytes(model)
        return state

    def __setstate__(self, state):
        state = dict(state)
        data = state.pop("_autoencoder_keras_bytes", None)
        super().__setstate__(state)
        if data is not None:
            import keras

            model = model_from_bytes(data)
            self.autoencoder_ = model
            top = model.get_layer(f"encoder_{len(self.hidden_units)}")
            self.encoder_ = keras.Model(model.input, top.output, name="encoder")


def make_autoencoder_pipeline(classifier=None, **autoencoder_params):
    """Stacked autoencoder → standardisation → classifier, as one scikit-learn pipeline.

    Parameters
    ----------
    classifier : scikit-learn classifier, optional
        Default ``LogisticRegression(max_iter=1000)``, the multinomial
        "softmax layer" on top of the codes of the stacked-autoencoder papers.
        Any classifier works (SVC, ELMClassifier, random forest …).
    **autoencoder_params
        Parameters of :class:`StackedAutoencoder`.

    Returns
    -------
    sklearn.pipeline.Pipeline
        Steps ``"autoencoder"``, ``"scale"`` and ``"classifier"``; it takes a
        sequence of samples/paths/images as ``X`` (grid-search the
        autoencoder with ``autoencoder__hidden_units`` etc.).

    Examples
    --------
    >>> from sklearn.svm import SVC
    >>> pipe = make_autoencoder_pipeline(SVC(), hidden_units=(128, 32), random_state=0)
    >>> [name for name, _ in pipe.steps]
    ['autoencoder', 'scale', 'classifier']
    """
    if classifier is None:
        classifier = LogisticRegression(max_iter=1000)
    return Pipeline([
        ("autoencoder", StackedAutoencoder(**autoencoder_params)),
        ("scale", StandardScaler()),
        ("classifier", classifier),
    ])
