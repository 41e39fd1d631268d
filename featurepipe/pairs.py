"""Features of paired images: the asymmetry between a case's two crops.

Breast thermography reads *asymmetry*: a tumour warms its breast, and the
cue a reader looks for is a hot spot with no counterpart in the same region
of the other breast, because overall skin temperature varies much more
between women (room, season, cycle) than between a healthy woman's two
sides. Thermography datasets therefore often give two crops per patient,
the suspicious region and the contralateral (mirror) region, with one
label. A dataset pairs them as one :class:`~featurepipe.sample.Sample`
whose :attr:`~featurepipe.sample.Sample.partner` is the contralateral crop
(``load_dmr_ir(..., pairs=True)``, a manifest's ``partner`` column; see
``docs/pairs.md``).

:class:`PairAsymmetry` wraps any stateless image feature extractor ``f``
(a handcrafted family, :class:`~featurepipe.cnn.CNNFeatures`, a
:class:`~featurepipe.features.FeatureBank`) and describes a pair ``(a, b)``
(``a`` the primary image, ``b`` its partner) by

==================  ====================================  ==============================
``combine``         features                              names
==================  ====================================  ==============================
``"concat_absdiff"``  ``[f(a), |f(a) - f(b)|]``             ``primary_<n>``, ``absdiff_<n>``
``"absdiff"``       ``|f(a) - f(b)|``                     ``absdiff_<n>``
``"diff"``          ``f(a) - f(b)``                       ``diff_<n>``
==================  ====================================  ==============================

``"absdiff"`` is symmetric (the order of the two crops does not matter);
``"diff"`` keeps the sign (which side is warmer), which only means
something when the primary crop is chosen by a rule that holds for every
case (e.g. "the side the radiologist marked"). ``"concat_absdiff"`` (the
default) keeps the primary crop's own description beside the asymmetry.

``f(a)`` and ``f(b)`` come from the wrapped extractor through the feature
engine (so through its per-sample cache), and the combination is cached per
pair like any feature (:class:`~featurepipe.base.FeatureExtractor`).
"""

from __future__ import annotations

import numpy as np
from sklearn.utils._param_validation import HasMethods, StrOptions

from ._validation import invalid_parameter
from .base import FeatureExtractor, describe_sample
from .feature_store import FeatureStore, is_stateless

__all__ = ["PAIR_COMBINATIONS", "PairAsymmetry", "UnpairedSampleError", "pair_features", "pair_feature_names"]

#: The combinations of :class:`PairAsymmetry` (see the module docstring).
PAIR_COMBINATIONS = ("concat_absdiff", "absdiff", "diff")


class UnpairedSampleError(ValueError):
    """A sample without a partner reached a step that needs paired images; the message names the sample."""


def pair_features(primary, partner, combine="concat_absdiff"):
    """Combine the feature rows of the primary images and of their partners.

    Parameters
    ----------
    primary, partner : array-like of shape (n_pairs, n_features)
        ``f(a)`` and ``f(b)`` for each pair, row by row.
    combine : {"concat_absdiff", "absdiff", "diff"}, default="concat_absdiff"
        See the module docstring.

    Returns
    -------
    ndarray of shape (n_pairs, 2 * n_features) for ``"concat_absdiff"``, else (n_pairs, n_features), float64

    Examples
    --------
    >>> pair_features([[1.0, 5.0]], [[3.0, 4.0]]).tolist()
    [[1.0, 5.0, 2.0, 1.0]]
    >>> pair_features([[1.0, 5.0]], [[3.0, 4.0]], "diff").tolist()
    [[-2.0, 1.0]]
    """
    primary = np.asarray(primary, dtype=np.float64)
    partner = np.asarray(partner, dtype=np.float64)
    if primary.ndim != 2 or primary.shape != partner.shape:
        raise ValueError(f"primary and partner features must be 2-D arrays of one shape; got {primary.shape} and "
                         f"{partner.shape}")
    if combine == "diff":
        return primary - partner
    absdiff = np.abs(primary - partner)
    if combine == "absdiff":
        return absdiff
    if combine == "concat_absdiff":
        return np.hstack([primary, absdiff])
    raise ValueError(f"combine must be one of {list(PAIR_COMBINATIONS)}; got {combine!r}")


def pair_feature_names(names, combine="concat_absdiff"):
    """Names of :func:`pair_features`' columns for the wrapped extractor's feature ``names``.

    >>> pair_feature_names(["glcm_contrast", "glcm_asm"], "concat_absdiff")
    ['primary_glcm_contrast', 'primary_glcm_asm', 'absdiff_glcm_contrast', 'absdiff_glcm_asm']
    """
    names = [str(n) for n in names]
    if combine == "concat_absdiff":
        return [f"primary_{n}" for n in names] + [f"absdiff_{n}" for n in names]
    if combine in ("absdiff", "diff"):
        return [f"{combine}_{n}" for n in names]
    raise ValueError(f"combine must be one of {list(PAIR_COMBINATIONS)}; got {combine!r}")


def partners_of(samples, step="PairAsymmetry"):
    """The partner of every sample, or an :class:`UnpairedSampleError` naming the first sample without one."""
    partners = []
    for sample in samples:
        if sample.partner is None:
            raise UnpairedSampleError(
                f"{step} needs paired images, but sample {describe_sample(sample)} has no partner: load the "
                "data with a layout that pairs images (load_dmr_ir(..., pairs=True), a manifest with a "
                "'partner' column) or pair samples with Sample.with_partner; see docs/pairs.md")
        partners.append(sample.partner)
    return partners


class PairAsymmetry(FeatureExtractor):
    """Features of a pair's asymmetry: the wrapped extractor on both images, combined.

    Parameters
    ----------
    extractor : transformer
        A stateless image feature extractor (handcrafted family,
        :class:`~featurepipe.cnn.CNNFeatures`, :class:`~featurepipe.features.FeatureBank`
        of them, or a pipeline of image steps and such extractors), applied to
        the primary image and to the partner image of each sample. An
        extractor that learns from the training data (e.g.
        :class:`~featurepipe.features.BagOfVisualWords`) is refused.
    combine : {"concat_absdiff", "absdiff", "diff"}, default="concat_absdiff"
        How ``f(a)`` (primary) and ``f(b)`` (partner) are combined (see the
        module docstring): ``[f(a), |f(a) - f(b)|]``, ``|f(a) - f(b)|`` or
        ``f(a) - f(b)``.
    cache : bool or path, default=True
        Per-pair cache of the combined features (the wrapped extractor has
        its own ``cache``).
    n_jobs : int, optional
        Not used by the combination itself (it is a subtraction); the wrapped
        extractor parallelises with its own ``n_jobs``. Accepted, like every
        feature extractor's, and never part of the cache key.

    Every sample must be paired (:attr:`~featurepipe.sample.Sample.partner`);
    one without a partner is refused with an :class:`UnpairedSampleError`
    naming it. Output: ``(n_samples, n_features)`` float64, ``n_features``
    twice the wrapped extractor's for ``"concat_absdiff"``, the same otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from featurepipe.features import FirstOrderFeatures
    >>> from featurepipe.sample import Sample
    >>> warm = np.full((8, 8), 0.5, np.float32)
    >>> warm[2:5, 2:5] = 0.9
    >>> pair = Sample.from_array(warm).with_partner(Sample.from_array(np.full((8, 8), 0.5, np.float32)))
    >>> step = PairAsymmetry(FirstOrderFeatures(), combine="absdiff")
    >>> Z = step.transform([pair])
    >>> names = step.get_feature_names_out().tolist()
    >>> round(float(Z[0, names.index("absdiff_firstorder_mean")]), 4)  # 9 of 64 pixels 0.4 warmer
    0.0562
    >>> step.transform([Sample.from_array(warm)])
    Traceback (most recent call last):
    ...
    featurepipe.pairs.UnpairedSampleError: PairAsymmetry needs paired images, but sample key ... has no partner: ...
    """

    _parameter_constraints: dict = {
        **FeatureExtractor._parameter_constraints,
        "extractor": [HasMethods(["transform", "get_feature_names_out"])],
        "combine": [StrOptions(set(PAIR_COMBINATIONS))],
    }

    def __init__(self, extractor, *, combine="concat_absdiff", cache=True, n_jobs=None):
        self.extractor = extractor
        self.combine = combine
        self.cache = cache
        self.n_jobs = n_jobs

    def _validate_param_rules(self):
        if not is_stateless(self.extractor):
            raise invalid_parameter(self, "extractor", "a stateless image feature extractor (one that learns "
                                                       "nothing from the training data), e.g. a handcrafted "
                                                       "family or CNNFeatures",
                                    value=type(self.extractor).__name__)

    def _extract_many(self, samples):
        partners = partners_of(samples)
        engine = FeatureStore(self.extractor)
        primary = np.asarray(engine.transform(list(samples)).features, dtype=np.float64)
        partner = np.asarray(engine.transform(partners).features, dtype=np.float64)
        return pair_features(primary, partner, self.combine)

    def _feature_names(self):
        return pair_feature_names(self.extractor.get_feature_names_out(), self.combine)
