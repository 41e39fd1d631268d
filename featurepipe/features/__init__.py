"""Handcrafted feature extractors (image → vector), one module per feature family.

Each family has a function that does the maths (``glcm_features(image, mask,
...) -> (values, names)``) and a :class:`~featurepipe.base.FeatureExtractor`
that adds the scikit-learn contract and the per-sample cache.
:class:`FeatureBank` concatenates families with readable prefixes.

Each name is imported from its module on first use, so a recipe that needs
HOG does not load the curvelet or bag-of-visual-words code.
"""

from .._lazy import lazy_attributes

_LAZY = {
    "ANALYSIS_MAX_SIDE": ".bank",
    "DEFAULT_FAMILIES": ".bank",
    "FAMILIES": ".bank",
    "FeatureBank": ".bank",
    "default_handcrafted_bank": ".bank",
    "make_feature_bank": ".bank",
    "BagOfVisualWords": ".bovw",
    "dense_descriptors": ".bovw",
    "CurveletFeatures": ".curvelet",
    "curvelet_features": ".curvelet",
    "FirstOrderFeatures": ".firstorder",
    "cap_resolution": "..preprocessing",
    "first_order_features": ".firstorder",
    "GLCMFeatures": ".glcm",
    "cooccurrence_matrix": ".glcm",
    "glcm_features": ".glcm",
    "HOGFeatures": ".hog",
    "hog_features": ".hog",
    "LBPFeatures": ".lbp",
    "lbp_features": ".lbp",
    "ShapeFeatures": ".shape",
    "shape_features": ".shape",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
