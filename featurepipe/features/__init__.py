"""Handcrafted feature extractors (image → vector), one module per feature family.

Each family has a function that does the maths (``glcm_features(image, mask,
...) -> (values, names)``) and a :class:`~featurepipe.base.FeatureExtractor`
that adds the scikit-learn contract and the per-sample cache.
:class:`FeatureBank` concatenates families with readable prefixes.
"""

from .bank import DEFAULT_FAMILIES, FeatureBank, default_handcrafted_bank, make_feature_bank
from .bovw import BagOfVisualWords, dense_descriptors
from .curvelet import CurveletFeatures, curvelet_features
from .firstorder import FirstOrderFeatures, first_order_features
from .glcm import GLCMFeatures, cooccurrence_matrix, glcm_features
from .hog import HOGFeatures, hog_features
from .lbp import LBPFeatures, lbp_features
from .shape import ShapeFeatures, shape_features

__all__ = [
    "DEFAULT_FAMILIES",
    "BagOfVisualWords",
    "CurveletFeatures",
    "FeatureBank",
    "FirstOrderFeatures",
    "GLCMFeatures",
    "HOGFeatures",
    "LBPFeatures",
    "ShapeFeatures",
    "cooccurrence_matrix",
    "curvelet_features",
    "default_handcrafted_bank",
    "dense_descriptors",
    "first_order_features",
    "glcm_features",
    "hog_features",
    "lbp_features",
    "make_feature_bank",
    "shape_features",
]
