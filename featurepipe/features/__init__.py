"""Handcrafted feature extractors (image → vector), one module per feature family."""

from .curvelet import CurveletFeatures, curvelet_features  # noqa: E402
from .shape import ShapeFeatures, shape_features  # noqa: E402
from .bovw import BagOfVisualWords, dense_descriptors  # noqa: E402
from .bank import DEFAULT_FAMILIES, FeatureBank, default_handcrafted_bank, make_feature_bank  # noqa: E402
from .firstorder import FirstOrderFeatures, first_order_features  # noqa: E402
from .glcm import GLCMFeatures, cooccurrence_matrix, glcm_features  # noqa: E402
from .hog import HOGFeatures, hog_features  # noqa: E402
from .lbp import LBPFeatures, lbp_features  # noqa: E402
