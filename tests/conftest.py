import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
    """Root of the real datasets (../shared/data); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _feature_cache_in_tmp(tmp_path_factory, monkeypatch):
    """The command line's default disk cache ($FEATUREPIPE_CACHE) is a fresh folder per test, never ~/.cache."""
    monkeypatch.setenv("FEATUREPIPE_CACHE", str(tmp_path_factory.mktemp("feature-cache")))
