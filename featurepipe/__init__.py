"""featurepipe: classical medical-image classification pipelines as scikit-learn estimators."""

from ._version import __version__
from .base import FeatureExtractor, ImageStep, is_stateless, step_token
from .io import ImageReadError, read_image, read_mask
from .sample import Sample, as_samples

__all__ = [
    "__version__",
    "FeatureExtractor",
    "ImageStep",
    "ImageReadError",
    "Sample",
    "as_samples",
    "is_stateless",
    "read_image",
    "read_mask",
    "step_token",
]
