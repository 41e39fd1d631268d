"""Per-sample normalisation of feature vectors that scikit-learn lacks.

:class:`PowerNormalizer` — signed power normalisation ``x -> sign(x) |x|^alpha``
of every feature, the first half of the "power + L2" normalisation of image
descriptors (Perronnin, Sánchez & Mensink 2010, "Improving the Fisher kernel
for large-scale image classification", ECCV): it damps the few very large
activations ("burstiness") that dominate dot products, which linear
classifiers on CNN features are sensitive to. The L2 half is scikit-learn's
:class:`~sklearn.preprocessing.Normalizer`.

Both are stateless (each row is transformed on its own; scikit-learn's tag
``requires_fit=False``), so featurepipe's feature store computes them once
per sample with the features before them, like any feature extractor.

Examples
--------
>>> import numpy as np
>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.preprocessing import Normalizer
>>> PowerNormalizer().transform(np.array([[4.0, -9.0, 0.0]])).tolist()
[[2.0, -3.0, 0.0]]
>>> power_l2 = make_pipeline(PowerNormalizer(alpha=0.5), Normalizer())
>>> np.round(power_l2.fit_transform(np.array([[9.0, 16.0]])), 3).tolist()
[[0.6, 0.8]]
"""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import validate_data

__all__ = ["PowerNormalizer"]


class PowerNormalizer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Signed power normalisation of each feature: ``sign(x) * |x| ** alpha``.

    Stateless: ``fit`` only validates the parameters and records the number
    of features; ``transform`` works without ``fit`` (scikit-learn tag
    ``requires_fit=False``), row by row.

    Parameters
    ----------
    alpha : float, default=0.5
        Exponent in ``(0, 1]``: ``0.5`` is the signed square root of
        Perronnin et al. (2010); ``1`` leaves the features unchanged, smaller
        values compress large magnitudes more.

    Attributes
    ----------
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Names of the features seen in ``fit`` (only when ``X`` has string column names).

    Examples
    --------
    >>> import numpy as np
    >>> PowerNormalizer(alpha=0.25).fit_transform(np.array([[16.0, -1.0]])).tolist()
    [[2.0, -1.0]]
    """

    _parameter_constraints: dict = {"alpha": [Interval(Real, 0, 1, closed="right")]}

    def __init__(self, alpha=0.5):
        self.alpha = alpha

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Validate ``alpha`` and ``X``; nothing is learned. Returns ``self``."""
        validate_data(self, X, dtype=[np.float64, np.float32])
        return self

    def transform(self, X):
        """``sign(X) * |X| ** alpha``, same shape and float dtype as ``X``."""
        # Stateless: validate the parameter here too, so transform works without fit.
        self._validate_params()
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False, copy=True)
        return np.sign(X) * np.power(np.abs(X), self.alpha, dtype=X.dtype)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.allow_nan = False
        return tags
