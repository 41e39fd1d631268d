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


def load_busi_for_run(parser, data, cache, limit=None):
    """BUSI from ``data`` for a benchmark run: the folder checked (a parser error naming it otherwise),
    the feature-cache folder ``cache`` created, and at most ``limit`` images per class when given."""
    from featurepipe.datasets import load_busi

    if not data.is_dir():
        parser.error(f"--data {data}: no such folder (see /work/shared/data/README.md)")
    cache.mkdir(parents=True, exist_ok=True)
    busi = load_busi(data)
    return limit_per_class(busi, limit) if limit else busi
