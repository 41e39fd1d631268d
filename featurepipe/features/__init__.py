"""Handcrafted feature extractors (image → vector), one module per feature family."""

from .curvelet import CurveletFeatures, curvelet_features  # noqa: E402
