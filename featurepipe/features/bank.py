"""Combine feature extractors into one transformer: :class:`FeatureBank` and the default bank.

:class:`FeatureBank` is scikit-learn's ``FeatureUnion`` adapted to
featurepipe's samples:

* ``X`` (samples, paths or arrays) is converted to samples **once** and the
  same sample array is passed to every member, so each member keeps its own
  per-sample cache (a grid search that changes ``glcm__levels`` recomputes
  GLCM features only; first-order, LBP and HOG come from the cache);
* ``n_jobs`` runs the members in threads, not processes, so that the members'
  in-memory caches fill in this process (the heavy lifting of every member
  is NumPy/OpenCV/scikit-image code that largely releases the GIL; each
  member can also parallelise over images with its own ``n_jobs``);
* output feature names keep the members' readable names and add the member
  name only where it is not already there (see
  :meth:`FeatureBank.get_feature_names_out`);
* it is stateless (``requires_fit=False``) exactly when all its members are.

Nested parameters work as for any scikit-learn composite:
``bank.set_params(glcm__levels=32)``, ``GridSearchCV(pipe,
{"features__glcm__levels": [32, 64]})``, ``bank.set_params(hog="drop")``.

Feature families
----------------
:data:`FAMILIES` is the registry of handcrafted feature families: a name
and a factory that builds the family's extractor with the family defaults,
defined once for :func:`default_handcrafted_bank` and the recipes alike
(whole image, empty masks refused, per-sample cache)::

    >>> from featurepipe.features.bank import FAMILIES
    >>> FAMILIES.names()
    ['firstorder', 'glcm', 'lbp', 'hog', 'curvelet', 'shape']
    >>> glcm = FAMILIES["glcm"](distances=(1, 2, 4))
    >>> glcm.distances, glcm.use_mask, glcm.empty_mask
    ((1, 2, 4), False, 'error')
    >>> FAMILIES["curvelet"](use_mask=True).roi  # curvelets read the mask through their ROI
    'mask_bbox'

Working resolution
------------------
The families that would otherwise run at the image's native resolution
(first-order, GLCM, LBP) get ``max_side=ANALYSIS_MAX_SIDE`` (512 px) from
their factory: a larger image, and its mask, is shrunk (area interpolation,
mask nearest neighbour, aspect kept, never enlarged) so that its longer side
is at most 512 px before the features are computed. The principle: texture
is computed at a fixed *analysis scale*. GLCM distances (1, 2, 4 px) and LBP
radii (1, 2 px) are counted in pixels, so at native resolution the same
operator describes ever finer structure as the acquisition grid gets finer
(down to noise and film grain on a 1024² or larger mammogram), and its cost
grows with the pixel count: ``benchmarks/handcrafted_resolution.py``
measured the default bank at 34 / 87 / 337 ms per 224² / 512² / 1024² image
and the ``lbp_svm`` features at 34 / 148 / 558 ms before the cap. A fixed
grid makes an offset of ``d`` pixels at most ``d / 512`` of the image's
longer side, as HOG (128 px) and curvelet (fixed ``size``) already do, and
bounds the per-image cost at its 512² value. Why 512 and not 224 or 256:
typical ultrasound frames are 500–600 px (BUSI's median longer side is
564 px), so they stay at or within a few percent of their native grid and
a one-pixel offset keeps describing micro-texture; a 1024² image is shrunk
2× (``d = 4`` spans 8 native pixels), whereas a 256 cap would make every
offset span 2–4 native pixels on all of these images. Shape features are
not capped: their areas and perimeters are in native pixels and cost little
(the mask only). Pass ``max_side=None`` for the native resolution, e.g.
``FAMILIES["glcm"](max_side=None)`` or ``bank.set_params(glcm__max_side=None)``::

    >>> FAMILIES["lbp"]().max_side, FAMILIES["lbp"](max_side=None).max_side, FAMILIES["hog"]().size
    (512, None, (128, 128))

Your own family joins the same way (the factory takes ``use_mask``,
``empty_mask`` and ``cache``), and :func:`default_handcrafted_bank` then
accepts its name::

    >>> from featurepipe.features import FirstOrderFeatures
    >>> def coarse_histogram(*, use_mask=False, empty_mask="error", cache=True):
    ...     return FirstOrderFeatures(bins=8, use_mask=use_mask, empty_mask=empty_mask, cache=cache)
    >>> _ = FAMILIES.register("coarse_histogram", coarse_histogram)
    >>> bank = default_handcrafted_bank(families=("glcm", "coarse_histogram"))
    >>> [(name, type(member).__name__) for name, member in bank.transformer_list]
    [('glcm', 'GLCMFeatures'), ('coarse_histogram', 'FirstOrderFeatures')]
    >>> FAMILIES.unregister("coarse_histogram")
"""

from __future__ import annotations

import importlib
from collections import Counter

import numpy as np
from joblib import Parallel, delayed
from sklearn.pipeline import FeatureUnion

from ..base import is_stateless
from ..registry import Registry
from ..sample import as_samples

__all__ = ["FAMILIES", "FeatureBank", "default_handcrafted_bank", "make_feature_bank", "DEFAULT_FAMILIES",
           "ANALYSIS_MAX_SIDE"]

#: Families of :func:`default_handcrafted_bank`, in output order.
DEFAULT_FAMILIES = ("firstorder", "glcm", "lbp", "hog", "curvelet")

#: Longest side, in pixels, of the grid on which the native-resolution families (first-order,
#: GLCM, LBP) compute their features when built by :data:`FAMILIES` (their ``max_side``): texture at
#: a fixed analysis scale, per-image cost bounded at its 512² value (see the module docstring).
ANALYSIS_MAX_SIDE = 512


def _family_factory(module, class_name, mask_parameter, defaults):
    """The factory of one feature family: the extractor with the family defaults, defined here once.

    ``mask_parameter`` says how the extractor reads ``use_mask``: its own
    ``use_mask`` parameter, ``roi`` (``"mask_bbox"`` or ``"image"``), or not
    at all (``None``: shape features always describe the sample's mask).
    ``defaults`` are the family's other defaults (``params`` override them).
    """

    def factory(*, use_mask=False, empty_mask="error", cache=True, **params):
        extractor = getattr(importlib.import_module(module, __package__), class_name)
        params = {**defaults, **params}
        if mask_parameter == "use_mask":
            params["use_mask"] = use_mask
        elif mask_parameter == "roi":
            params["roi"] = "mask_bbox" if use_mask else "image"
        return extractor(empty_mask=empty_mask, cache=cache, **params)

    factory.__name__ = factory.__qualname__ = f"{class_name}_family"
    factory.__doc__ = (f"A :class:`~featurepipe.features.{class_name}` with the family defaults (whole image, "
                       "empty masks refused, per-sample cache"
                       + "".join(f", {k}={v!r}" for k, v in defaults.items())
                       + "); ``params`` are its other parameters.")
    return factory


#: Feature family name -> factory ``factory(*, use_mask=False, empty_mask="error", cache=True, **params)``
#: returning the family's extractor. The family defaults are these keyword defaults, the same for
#: every family and every user of them (:func:`default_handcrafted_bank`, the recipes): the whole
#: image (``use_mask=False``; curvelet: ``roi="image"``; shape features always describe the
#: sample's mask), an empty mask refused, the per-sample cache on, and for first-order, GLCM and
#: LBP ``max_side=ANALYSIS_MAX_SIDE`` (512 px analysis grid); ``params`` are the extractor's
#: other parameters (e.g. ``distances=(1, 2, 4)`` for GLCM). Register your own family with
#: ``FAMILIES.register(name, factory)``; its factory takes the same three keywords (see the
#: module docstring).
FAMILIES = Registry("feature family")
_ANALYSIS_GRID = {"max_side": ANALYSIS_MAX_SIDE}
for _name, _module, _class, _mask_parameter, _defaults in [
    ("firstorder", ".firstorder", "FirstOrderFeatures", "use_mask", _ANALYSIS_GRID),
    ("glcm", ".glcm", "GLCMFeatures", "use_mask", _ANALYSIS_GRID),
    ("lbp", ".lbp", "LBPFeatures", "use_mask", _ANALYSIS_GRID),
    ("hog", ".hog", "HOGFeatures", "use_mask", {}),  # resizes to its fixed size
    ("curvelet", ".curvelet", "CurveletFeatures", "roi", {}),  # resizes to its fixed size
    ("shape", ".shape", "ShapeFeatures", None, {}),  # native pixels: areas and perimeters keep their unit
]:
    FAMILIES.register(_name, _family_factory(_module, _class, _mask_parameter, _defaults), built_in=True)
del _name, _module, _class, _mask_parameter, _defaults

#: Families that :func:`default_handcrafted_bank` computes on the whole image whatever its
#: ``use_mask`` (its documented behaviour: the curvelet family describes the whole image).
_WHOLE_IMAGE_IN_DEFAULT_BANK = frozenset({"curvelet"})


def _transform_member(transformer, samples, weight, fit, y):
    if fit:
        out = transformer.fit_transform(samples, y)
    else:
        out = transformer.transform(samples)
    out = np.asarray(out, dtype=np.float64)
    if weight is not None:
        out = out * weight
    return out


class FeatureBank(FeatureUnion):
    """Concatenate the features of several extractors, with readable names and per-member caching.

    Parameters
    ----------
    transformer_list : list of (str, transformer)
        The members, e.g. ``[("glcm", GLCMFeatures()), ("lbp", LBPFeatures())]``.
        A member can be replaced by ``"drop"`` (e.g. through ``set_params``).
        Names must be unique and must not contain ``"__"``.
    n_jobs : int, optional
        Number of members run at the same time, in threads (see the module
        docstring); ``None`` runs them one after the other.
    transformer_weights : dict, optional
        Multiplicative weight per member name.
    verbose : bool, default=False
        Accepted for ``FeatureUnion`` compatibility; unused.

    Examples
    --------
    >>> import numpy as np
    >>> from featurepipe.features import FeatureBank, FirstOrderFeatures, GLCMFeatures
    >>> bank = FeatureBank([("firstorder", FirstOrderFeatures()), ("glcm", GLCMFeatures(levels=8))])
    >>> X = [np.random.default_rng(0).random((16, 16)).astype(np.float32)]
    >>> bank.fit_transform(X).shape
    (1, 59)
    >>> bank.get_feature_names_out()[[0, 27]].tolist()
    ['firstorder_mean', 'glcm_asm_d1_mean']
    """

    def __init__(self, transformer_list, *, n_jobs=None, transformer_weights=None, verbose=False):
        self.transformer_list = transformer_list
        self.n_jobs = n_jobs
        self.transformer_weights = transformer_weights
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.requires_fit = not is_stateless(self)  # a union is stateless when all its members are
        return tags

    def _validate(self):
        if not isinstance(self.transformer_list, (list, tuple)) or not self.transformer_list:
            raise ValueError(f"transformer_list must be a non-empty list of (name, transformer) pairs; "
                             f"got {self.transformer_list!r}")
        for item in self.transformer_list:
            if not isinstance(item, tuple) or len(item) != 2 or not isinstance(item[0], str):
                raise ValueError(f"transformer_list must hold (name, transformer) pairs; got {item!r}")
            if isinstance(item[1], str) and item[1] == "passthrough":
                raise ValueError(f"transformer_list: member {item[0]!r} is 'passthrough', which has no meaning for "
                                 "images; use 'drop' to remove a member")
        self.transformer_list = list(self.transformer_list)
        self._validate_transformers()
        self._validate_transformer_weights()

    def _run(self, X, y, fit):
        samples = as_samples(X)
        self._validate()
        members = list(self._iter())
        if not members:
            return np.empty((len(samples), 0), dtype=np.float64)
        if self.n_jobs in (None, 1) or len(members) == 1:
            outs = [_transform_member(t, samples, w, fit, y) for _, t, w in members]
        else:
            outs = Parallel(n_jobs=self.n_jobs, prefer="threads")(
                delayed(_transform_member)(t, samples, w, fit, y) for _, t, w in members
            )
        for (name, _, _), out in zip(members, outs):
            if out.ndim != 2 or out.shape[0] != len(samples):
                raise RuntimeError(f"FeatureBank member {name!r} returned an array of shape {out.shape}; "
                                   f"expected ({len(samples)}, n_features)")
        return np.hstack(outs)

    def fit(self, X, y=None, **fit_params):
        """Fit every member on the samples (stateless members only validate parameters).

        Returns ``self``.
        """
        if fit_params:
            raise TypeError(f"FeatureBank.fit does not take fit parameters; got {sorted(fit_params)}")
        samples = as_samples(X)
        self._validate()
        for _, transformer, _ in self._iter():
            transformer.fit(samples, y)
        return self

    def fit_transform(self, X, y=None, **fit_params):
        """Fit every member and return the concatenated features, shape ``(n_samples, n_features)``."""
        if fit_params:
            raise TypeError(f"FeatureBank.fit_transform does not take fit parameters; got {sorted(fit_params)}")
        return self._run(X, y, fit=True)

    def transform(self, X, **params):
        """Concatenated features of every member, shape ``(n_samples, n_features)``, float64."""
        if params:
            raise TypeError(f"FeatureBank.transform does not take extra parameters; got {sorted(params)}")
        return self._run(X, None, fit=False)

    def get_feature_names_out(self, input_features=None):
        """Member feature names, prefixed with ``"<member name>_"`` unless they already start with it.

        So ``("glcm", GLCMFeatures())`` keeps ``glcm_contrast_d1_mean``, and a
        second member ``("glcm32", GLCMFeatures(levels=32))`` gives
        ``glcm32_glcm_contrast_d1_mean``. Raises ``ValueError`` if two
        output names coincide.
        """
        names = []
        for name, transformer, _ in self._iter():
            if not hasattr(transformer, "get_feature_names_out"):
                raise AttributeError(f"FeatureBank member {name!r} ({type(transformer).__name__}) does not provide "
                                     "get_feature_names_out")
            for feature in transformer.get_feature_names_out():
                feature = str(feature)
                names.append(feature if feature.startswith(name + "_") else f"{name}_{feature}")
        repeated = sorted(n for n, c in Counter(names).items() if c > 1)
        if repeated:
            raise ValueError(f"FeatureBank output feature names are not unique: {repeated[:5]}; rename the members")
        return np.asarray(names, dtype=object)


def _family_name(estimator):
    name = type(estimator).__name__.lower()
    if name.endswith("features") and len(name) > len("features"):
        name = name[: -len("features")]
    return name


def make_feature_bank(*extractors, n_jobs=None):
    """A :class:`FeatureBank` whose member names are derived from the extractor classes.

    ``GLCMFeatures`` → ``"glcm"``, ``FirstOrderFeatures`` → ``"firstorder"``;
    repeated classes get ``"glcm2"``, ``"glcm3"`` ….

    >>> from featurepipe.features import GLCMFeatures, LBPFeatures, make_feature_bank
    >>> [n for n, _ in make_feature_bank(GLCMFeatures(), GLCMFeatures(levels=8), LBPFeatures()).transformer_list]
    ['glcm', 'glcm2', 'lbp']
    """
    if not extractors:
        raise ValueError("make_feature_bank needs at least one extractor")
    seen = Counter()
    members = []
    for est in extractors:
        base = _family_name(est)
        seen[base] += 1
        members.append((base if seen[base] == 1 else f"{base}{seen[base]}", est))
    return FeatureBank(members, n_jobs=n_jobs)


def default_handcrafted_bank(*, families=DEFAULT_FAMILIES, use_mask=True, empty_mask="error", cache=True,
                             n_jobs=None):
    """The default handcrafted feature bank: each family of :data:`FAMILIES` at its family defaults.

    First-order, GLCM and LBP features are computed on a grid of at most
    :data:`ANALYSIS_MAX_SIDE` (512) pixels along the longer side, HOG and
    curvelet features on their fixed sizes, so the per-image cost stops
    growing past 512 px images (see the module docstring; e.g.
    ``bank.set_params(glcm__max_side=None)`` for the native resolution).

    Parameters
    ----------
    families : sequence of str, default=("firstorder", "glcm", "lbp", "hog", "curvelet")
        Which families, in output order, from :data:`FAMILIES`
        (``"firstorder"``, ``"glcm"``, ``"lbp"``, ``"hog"``, ``"curvelet"``,
        ``"shape"`` and any registered family). Shape features describe the
        lesion mask and need a non-empty mask on every image, so they are not
        in the default; add them for segmented data sets (e.g.
        ``families=DEFAULT_FAMILIES + ("shape",)``).
    use_mask : bool, default=True
        Describe the masked region (this bank is for segmented data, hence
        its default differs from the family default ``False``). Passed to
        every family except curvelet, which describes the whole image here
        (``roi="image"``); shape features always use the mask.
    empty_mask : {"error", "nan", "image"}, default="error"
        Passed to every family (``"image"`` is not available for shape
        features, which have no image to fall back to).
    cache : bool or path, default=True
        Passed to every member.
    n_jobs : int, optional
        The bank's ``n_jobs`` (members in threads).

    Returns
    -------
    FeatureBank
        Members named after the families, e.g. ``bank.set_params(glcm__levels=32)``.
    """
    allowed = FAMILIES.names()
    if isinstance(families, str) or not families:
        raise ValueError(f"families must be a non-empty sequence of names from {allowed}; got {families!r}")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"families: unknown family {unknown[0]!r}; choose from {allowed}")
    if len(set(families)) != len(families):
        raise ValueError(f"families must not repeat a name; got {families!r}")
    if "shape" in families and empty_mask == "image":
        raise ValueError("empty_mask='image' is not available with the 'shape' family (a mask's shape has no "
                         "whole-image fallback); use 'error' or 'nan'")
    members = [(family, FAMILIES[family](use_mask=use_mask and family not in _WHOLE_IMAGE_IN_DEFAULT_BANK,
                                         empty_mask=empty_mask, cache=cache))
               for family in families]
    return FeatureBank(members, n_jobs=n_jobs)
