__version__ = "0.1.0"

#: Installed distributions whose versions every results file and model card records.
RECORDED_PACKAGES = (
    "numpy", "scipy", "scikit-learn", "imbalanced-learn", "joblib", "scikit-image", "opencv-python-headless",
    "pillow", "skops", "tensorflow-cpu", "tensorflow", "keras", "onnxruntime", "openvino", "matplotlib", "dask",
    "distributed",
)


def package_versions():
    """Python, platform, featurepipe and the installed :data:`RECORDED_PACKAGES`: ``{name: version}``."""
    import importlib.metadata
    import platform
    import sys

    out = {"python": sys.version.split()[0], "platform": platform.platform(), "featurepipe": __version__}
    for package in RECORDED_PACKAGES:
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed: nothing to record
    return out
