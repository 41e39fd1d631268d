"""Stateless-prefix grid search vs plain GridSearchCV on a CNN-feature pipeline.

The pipeline is ``CNNFeatures -> StandardScaler -> SVC`` (ConvNet + SVM),
searched over ``svc__C`` × ``svc__kernel`` with stratified k-fold CV. Three
ways of running the same search are timed in one process, on the same
images and splits:

* **plain**: :class:`sklearn.model_selection.GridSearchCV` on the full
  pipeline with the per-sample cache off (``CNNFeatures(cache=False)``) —
  what a naive scikit-learn pipeline does: the CNN runs for every fit and
  every scoring call;
* **plain + cache**: the same with featurepipe's in-memory per-sample cache
  (the CNN runs once per image, later calls are cache look-ups);
* **prefix**: :class:`featurepipe.search.PrefixCachedGridSearchCV` (cache
  off): the CNN runs once on all images, the grid searches the suffix.

It checks that all three give the same best parameters and the same
cross-validation scores, and prints the speed-up ratios (plain / prefix is
the number the design asks to be ≥ 10).

Images: the synthetic demo set (:mod:`featurepipe.demo`, generated offline;
NOT medical data) or, with ``--busi``, images from ``../shared/data/busi``.
Needs :class:`featurepipe.cnn.CNNFeatures`; the default backbone
``efficientnet_lite0`` loads its ImageNet weights offline.

Run ``python benchmarks/search.py`` (``--help`` for options).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

from featurepipe.cache import clear_memory_cache  # noqa: E402
from featurepipe.search import PrefixCachedGridSearchCV  # noqa: E402


def _images(args):
    if args.busi:
        root = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi"
        if not root.is_dir():
            sys.exit(f"--busi: {root} not found")
        from featurepipe.sample import Sample

        samples, labels = [], []
        per_class = args.n_images // 3
        for label in ("benign", "malignant", "normal"):
            files = sorted(p for p in (root / label).glob("*.png") if "_mask" not in p.name)[:per_class]
            samples += [Sample.from_path(p, mode="gray", label=label) for p in files]
            labels += [label] * len(files)
        return np.array(samples, dtype=object), np.array(labels), "BUSI (real ultrasound images)"
    from featurepipe.demo import load_demo

    per_class = max(2, args.n_images // 3 // 2 * 2)
    ds = load_demo(n_per_class=per_class, n_duplicates=0)
    return ds.samples, ds.y, f"{ds.name}: {SYNTHETIC}"


SYNTHETIC = "synthetic demo images, not medical data"


def _pipe(cnn_cls, args, cache):
    cnn = cnn_cls(backbone=args.backbone, weights=args.weights, input_size=args.input_size, cache=cache)
    return Pipeline([("cnn", cnn), ("scale", StandardScaler()), ("svc", SVC())])


def _timed(search, X, y):
    clear_memory_cache()
    start = time.perf_counter()
    search.fit(X, y)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=60, help="images (split evenly over 3 classes)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet", help="'imagenet', a weights file, or 'none' (random)")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--busi", action="store_true", help="use ../shared/data/busi instead of the demo set")
    args = parser.parse_args(argv)
    if args.weights == "none":
        args.weights = None
    try:
        from featurepipe.cnn import CNNFeatures
    except ImportError as exc:
        sys.exit(f"featurepipe.cnn.CNNFeatures is not available ({exc}); this benchmark needs it")

    X, y, source = _images(args)
    grid = {"svc__C": [0.1, 1.0, 10.0], "svc__kernel": ["linear", "rbf"]}
    cv = StratifiedKFold(args.folds, shuffle=True, random_state=0)
    n_points = len(grid["svc__C"]) * len(grid["svc__kernel"])
    print(f"data: {len(X)} images ({source}); backbone {args.backbone} (weights={args.weights}), "
          f"input {args.input_size}px; grid {n_points} points x {args.folds} folds")

    # Warm-up: build the model once (shared by all three runs) so that no run pays for it.
    _pipe(CNNFeatures, args, cache=False)[0].transform(X[:2])

    ours = PrefixCachedGridSearchCV(_pipe(CNNFeatures, args, cache=False), grid, cv=cv)
    t_ours = _timed(ours, X, y)
    print(f"prefix search (CNN once):           {t_ours:8.1f} s  (prefix {ours.prefix_time_:.1f} s)")
    cached = GridSearchCV(_pipe(CNNFeatures, args, cache=True), grid, cv=cv)
    t_cached = _timed(cached, X, y)
    print(f"plain GridSearchCV + per-sample cache: {t_cached:6.1f} s")
    plain = GridSearchCV(_pipe(CNNFeatures, args, cache=False), grid, cv=cv)
    t_plain = _timed(plain, X, y)
    print(f"plain GridSearchCV (no cache):      {t_plain:8.1f} s")

    for name, other in (("plain", plain), ("plain + cache", cached)):
        same_params = other.best_params_ == ours.best_params_
        same_scores = np.allclose(other.cv_results_["mean_test_score"], ours.cv_results_["mean_test_score"],
                                  atol=1e-9)
        print(f"same best parameters as {name}: {same_params}; same CV scores: {same_scores}")
        if not (same_params and same_scores):
            sys.exit("MISMATCH: the prefix search must reproduce plain GridSearchCV")
    print(f"best {ours.best_params_}, CV accuracy {ours.best_score_:.3f}")
    print(f"speed-up plain / prefix:           {t_plain / t_ours:6.1f}x")
    print(f"speed-up (plain + cache) / prefix: {t_cached / t_ours:6.1f}x")


if __name__ == "__main__":
    main()
