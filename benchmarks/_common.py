"""What several benchmark scripts share (they run as ``python benchmarks/<script>.py``, so this folder is on the path)."""

import numpy as np


def limit_per_class(dataset, n_per_class, seed=0):
    """A stratified random subset of ``dataset`` with at most ``n_per_class`` images of each class (smoke runs).

    The samples keep their original order; ``seed`` fixes which ones are drawn.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(dataset.y)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n_per_class] for c in np.unique(y)])
    return dataset[np.sort(chosen)]
