"""featurepipe: classical medical-image classification pipelines as scikit-learn estimators.

The public names are imported on first use (PEP 562), so ``import
featurepipe`` and ``featurepipe --help`` do not load scikit-learn.
"""

from ._lazy import lazy_attributes
from ._version import __version__

_LAZY = {
    "FeatureExtractor": ".base",
    "FeatureStore": ".feature_store",
    "ImageStep": ".base",
    "PairAsymmetry": ".pairs",
    "is_stateless": ".base",
    "step_token": ".base",
    "ImageReadError": ".io",
    "read_image": ".io",
    "read_mask": ".io",
    "PowerNormalizer": ".normalization",
    "Sample": ".sample",
    "as_samples": ".sample",
    "MultiContextFeatures": ".tiling",
    "TiledFeatures": ".tiling",
}

__all__ = ["__version__", *_LAZY]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
