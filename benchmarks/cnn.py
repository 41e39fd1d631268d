"""Frozen-CNN features: speed against raw Keras, memory when streaming, cached grid search, BUSI accuracy.

Sections (all by default, or choose with ``--only``):

``throughput``
    Images/s of ``CNNFeatures.transform`` (cache off) against the raw Keras
    model called on the same pre-made batches in the same run — eagerly
    (``model(x, training=False)``, what a user would write) and through a
    plain ``tf.function(model)`` (the best one can do with the same graph) —
    for MobileNetV2, EfficientNet-Lite0 and ResNet50 at 224×224, batch 32.
    Images are 224×224 RGB arrays already in memory, so CNNFeatures does no
    resizing and its overhead (sample handling, preparation, pooling) is
    what the ratio shows. Passes alternate between the methods; the best
    pass of each is reported. MobileNetV2 and ResNet50 run with random
    weights when the ImageNet ones cannot be downloaded (speed does not
    depend on the weight values).
``memory``
    Peak resident memory (``VmHWM``) of a fresh process that streams N
    PNG files from disk through ``CNNFeatures("efficientnet_lite0")`` at
    224 px, for N = 500 and N = 2000: flat when batches are streamed.
``grid``
    A 6-setting × 5-fold SVM grid search (``SVC`` C ∈ {0.1, 1, 10} ×
    kernel ∈ {linear, rbf}) over ``Pipeline([CNNFeatures, StandardScaler,
    SVC])`` on BUSI images, timed three ways: with the per-sample cache
    (plain ``GridSearchCV``, features computed once then looked up), with
    ``cache=False`` (a plain scikit-learn pipeline recomputing the features
    for every fit), and the lower bound (one feature extraction + the same
    grid search on the feature matrix).
``busi``
    Cross-validated macro one-vs-rest ROC-AUC of ``CNNFeatures(efficientnet_lite0)
    → StandardScaler → SVC`` (probabilities by Platt scaling,
    ``CalibratedClassifierCV(SVC(), ensemble=False)``) on all 780 BUSI images (gray
    replicated to three channels), 5-fold stratified, with ImageNet weights
    and with random weights (``weights=None``); also with the folds grouped
    by duplicate clusters (:func:`featurepipe.duplicates.group_duplicates`),
    since BUSI holds near-duplicate images.

Run ``python benchmarks/cnn.py`` (``--help`` for options). The machine is
shared: each section is sized to take a few minutes on 2 cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BUSI = ROOT.parent / "shared" / "data" / "busi"

from featurepipe.cache import clear_memory_cache
from featurepipe.cnn import (
    BackboneWeightsError,
    CNNFeatures,
    get_backbone,
    load_backbone,
)
from featurepipe.sample import Sample


def _weights_for(name):
    """ImageNet weights when they can be had here, else random (speed does not depend on values)."""
    try:
        load_backbone(name, "imagenet", 224)
        return "imagenet"
    except BackboneWeightsError:
        return None


# ----------------------------------------------------------------------------------------------
def bench_throughput(n_images, batch_size, repeats):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 1, (n_images, 224, 224, 3)).astype(np.float32)
    samples = [Sample.from_array(p) for p in pixels]
    print(f"\n== throughput: {n_images} images 224x224 RGB in memory, batch {batch_size}, best of {repeats} ==")
    results = {}
    for name in ("mobilenet_v2", "efficientnet_lite0", "resnet50"):
        weights = _weights_for(name)
        spec = get_backbone(name)
        model = load_backbone(name, weights, 224)
        extractor = CNNFeatures(name, weights=weights, batch_size=batch_size, cache=False)
        compiled = tf.function(lambda x, m=model: m(x, training=False), jit_compile=False)
        batches = [pixels[s:s + batch_size] for s in range(0, n_images, batch_size)]

        def ours(extractor=extractor):
            return extractor.transform(samples)

        def raw_eager(model=model, prep=spec.preprocess, batches=batches):
            return np.vstack([model(prep(b * np.float32(255)), training=False).numpy().mean(axis=(1, 2))
                              for b in batches])

        def raw_function(compiled=compiled, prep=spec.preprocess, batches=batches):
            return np.vstack([compiled(tf.constant(prep(b * np.float32(255)))).numpy().mean(axis=(1, 2))
                              for b in batches])

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for fn in (ours, raw_eager, raw_function):  # warm-up: trace, first-call allocations
                fn()
            times = {"ours": [], "raw_eager": [], "raw_function": []}
            outputs = {}
            for _ in range(repeats):
                for key, fn in (("ours", ours), ("raw_eager", raw_eager), ("raw_function", raw_function)):
                    t0 = time.perf_counter()
                    outputs[key] = fn()
                    times[key].append(time.perf_counter() - t0)
        best = {k: min(v) for k, v in times.items()}
        scale = np.abs(outputs["raw_eager"]).max()
        diff = np.abs(outputs["ours"] - outputs["raw_eager"]).max() / scale
        rate = {k: n_images / v for k, v in best.items()}
        print(f"{name:18s} weights={weights!s:8s} CNNFeatures {rate['ours']:6.1f} img/s | raw eager "
              f"{rate['raw_eager']:6.1f} img/s | raw tf.function {rate['raw_function']:6.1f} img/s | "
              f"ratio ours/eager {rate['ours'] / rate['raw_eager']:.2f}, ours/tf.function "
              f"{rate['ours'] / rate['raw_function']:.2f} | max rel. diff {diff:.1e}")
        results[name] = {"weights": weights, **{f"{k}_img_per_s": v for k, v in rate.items()}}
    return results


# ----------------------------------------------------------------------------------------------
def _write_pngs(folder, n, size=256, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.uniform(0, 255, (size, size)).astype(np.float32), (0, 0), 3)
    paths = []
    for i in range(n):
        image = np.clip(np.roll(base, i * 7, axis=i % 2) + rng.normal(0, 20, (size, size)), 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"img{i:05d}.png")
        cv2.imwrite(path, image)
        paths.append(path)
    return paths


def _peak_rss_kb():
    """This process's peak resident set size (kB): VmHWM, which, unlike ru_maxrss, restarts at exec."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # (Linux: kB; carries the parent's peak)


def _rss_child(folder, n, batch_size):
    """Run in a fresh process: stream the first n PNGs of folder, print peak RSS and timings as JSON."""
    before = _peak_rss_kb()
    paths = sorted(Path(folder).glob("*.png"))[:n]
    extractor = CNNFeatures("efficientnet_lite0", batch_size=batch_size, cache=False)
    warm = extractor.transform([str(paths[0])])  # build + trace: the fixed cost
    after_build = _peak_rss_kb()
    t0 = time.perf_counter()
    features = extractor.transform([str(p) for p in paths])
    elapsed = time.perf_counter() - t0
    peak = _peak_rss_kb()
    assert features.shape == (n, 1280) and np.isfinite(features).all() and warm.shape == (1, 1280)
    print(json.dumps({"n": n, "rss_start_kb": before, "rss_after_build_kb": after_build, "rss_peak_kb": peak,
                      "seconds": elapsed}))


def bench_memory(sizes, batch_size):
    print(f"\n== memory: peak RSS streaming PNG files (256x256 gray) through efficientnet_lite0 at 224, "
          f"batch {batch_size}, one fresh process per N ==")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        _write_pngs(folder, max(sizes))
        print(f"wrote {max(sizes)} PNGs in {time.perf_counter() - t0:.1f} s")
        for n in sizes:
            out = subprocess.run([sys.executable, __file__, "--rss-child", folder, str(n), str(batch_size)],
                                 check=True, capture_output=True, text=True)
            info = json.loads(out.stdout.strip().splitlines()[-1])
            results[n] = info
            all_pixels = n * 224 * 224 * 3 * 4 / 2**20
            print(f"N={n:5d}: peak RSS {info['rss_peak_kb'] / 1024:7.1f} MiB (after building the model "
                  f"{info['rss_after_build_kb'] / 1024:7.1f} MiB), {n / info['seconds']:.1f} img/s; "
                  f"all N inputs at once would be {all_pixels:7.1f} MiB")
    first, last = results[min(sizes)], results[max(sizes)]
    growth = (last["rss_peak_kb"] - first["rss_peak_kb"]) / 1024
    print(f"peak RSS growth from N={min(sizes)} to N={max(sizes)}: {growth:+.1f} MiB "
          f"(the {max(sizes)}x1280 float64 feature matrix alone is {max(sizes) * 1280 * 8 / 2**20:.1f} MiB)")
    return results


# ----------------------------------------------------------------------------------------------
def _busi(n=None, seed=0):
    from featurepipe.datasets.busi import load_busi

    dataset = load_busi(BUSI, validate=False)
    X, y = dataset.X, dataset.y
    if n is not None and n < len(X):
        from sklearn.model_selection import train_test_split

        X, _, y, _ = train_test_split(X, y, train_size=n, stratify=y, random_state=seed)
    return dataset, X, y


def bench_grid(n_images):
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    _, X, y = _busi(n_images)
    grid = {"svc__C": [0.1, 1.0, 10.0], "svc__kernel": ["linear", "rbf"]}
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    print(f"\n== grid search: {len(X)} BUSI images, 6 settings x 5 folds (+ refit), efficientnet_lite0 at 224 ==")

    def pipeline(cache):
        return Pipeline([("cnn", CNNFeatures("efficientnet_lite0", cache=cache)), ("scale", StandardScaler()),
                         ("svc", SVC())])

    load_backbone("efficientnet_lite0", "imagenet", 224)  # model build excluded from every timing
    CNNFeatures("efficientnet_lite0", cache=False).transform(X[:1])  # and the trace

    clear_memory_cache()
    t0 = time.perf_counter()
    cached = GridSearchCV(pipeline(True), grid, cv=cv, scoring="accuracy").fit(X, y)
    t_cached = time.perf_counter() - t0

    clear_memory_cache()
    t0 = time.perf_counter()
    features = CNNFeatures("efficientnet_lite0", cache=False).transform(X)
    t_extract = time.perf_counter() - t0
    t0 = time.perf_counter()
    on_features = GridSearchCV(Pipeline([("scale", StandardScaler()), ("svc", SVC())]), grid, cv=cv,
                               scoring="accuracy").fit(features, y)
    t_fits = time.perf_counter() - t0

    t0 = time.perf_counter()
    plain = GridSearchCV(pipeline(False), grid, cv=cv, scoring="accuracy").fit(X, y)
    t_plain = time.perf_counter() - t0

    assert np.allclose(cached.cv_results_["mean_test_score"], plain.cv_results_["mean_test_score"])
    assert np.allclose(cached.cv_results_["mean_test_score"], on_features.cv_results_["mean_test_score"])
    lower = t_extract + t_fits
    print(f"cached GridSearchCV        {t_cached:8.1f} s")
    print(f"plain Pipeline (no cache)  {t_plain:8.1f} s   -> cached is {t_plain / t_cached:.1f}x faster")
    print(f"lower bound: 1 extraction {t_extract:.1f} s + SVM fits {t_fits:.1f} s = {lower:.1f} s "
          f"-> cached / lower bound = {t_cached / lower:.2f}")
    print(f"identical CV scores in all three; best {cached.best_params_} accuracy {cached.best_score_:.3f}")
    return {"cached_s": t_cached, "plain_s": t_plain, "extract_s": t_extract, "fits_s": t_fits}


# ----------------------------------------------------------------------------------------------
def bench_busi(n_images=None):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import (
        StratifiedGroupKFold,
        StratifiedKFold,
        cross_val_score,
    )
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from featurepipe.duplicates import group_duplicates

    dataset, X, y = _busi()
    if n_images is not None and n_images < len(X):
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(np.arange(len(X)), train_size=n_images, stratify=y, random_state=0)
        dataset = type(dataset)(list(X[keep]), name=dataset.name, root=dataset.root)
        X, y = dataset.X, dataset.y
    print(f"\n== BUSI: {len(X)} images {dict(zip(*np.unique(y, return_counts=True)))}, "
          "CNNFeatures -> StandardScaler -> SVC (Platt-calibrated), macro one-vs-rest ROC-AUC ==")
    t0 = time.perf_counter()
    grouped = group_duplicates(dataset)
    groups = grouped.groups
    print(f"duplicate clusters: {len(set(groups.tolist()))} groups for {len(X)} images "
          f"({time.perf_counter() - t0:.1f} s)")
    results = {}
    for weights in ("imagenet", None):
        pipe = Pipeline([("cnn", CNNFeatures("efficientnet_lite0", weights=weights)),
                         ("scale", StandardScaler()),
                         # Platt-scaled SVC probabilities (what SVC(probability=True) did before 1.9)
                         ("svc", CalibratedClassifierCV(SVC(), ensemble=False))])
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"CNNFeatures\(.*weights=None")
            pipe.steps[0][1].transform(X)  # fill the cache once; both CV schemes reuse it
            t_extract = time.perf_counter() - t0
            strat = cross_val_score(pipe, X, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                                    scoring="roc_auc_ovr")
            grp = cross_val_score(pipe, X, y, groups=groups, cv=StratifiedGroupKFold(5, shuffle=True, random_state=0),
                                  scoring="roc_auc_ovr")
        label = "ImageNet (offline)" if weights else "random weights"
        print(f"{label:20s} ROC-AUC stratified 5-fold {strat.mean():.3f} ± {strat.std():.3f} | grouped by "
              f"duplicates {grp.mean():.3f} ± {grp.std():.3f} | extraction {t_extract:.0f} s "
              f"({len(X) / t_extract:.1f} img/s incl. PNG decoding)")
        results[str(weights)] = {"stratified": strat.tolist(), "grouped": grp.tolist()}
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=["throughput", "memory", "grid", "busi"],
                        default=["throughput", "memory", "grid", "busi"])
    parser.add_argument("--n-throughput", type=int, default=128, help="images per throughput pass")
    parser.add_argument("--repeats", type=int, default=2, help="throughput passes per method")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--memory-sizes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--n-grid", type=int, default=120, help="BUSI images in the grid search")
    parser.add_argument("--n-busi", type=int, default=None, help="BUSI images in the evaluation (default all)")
    parser.add_argument("--rss-child", nargs=3, metavar=("FOLDER", "N", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        _rss_child(args.rss_child[0], int(args.rss_child[1]), int(args.rss_child[2]))
        return
    import tensorflow as tf

    print(f"TensorFlow {tf.__version__}, devices {[d.device_type for d in tf.config.list_physical_devices()]}, "
          f"{os.cpu_count()} CPUs")
    needs_busi = {"grid", "busi"} & set(args.only)
    if needs_busi and not BUSI.is_dir():
        print(f"skipping {sorted(needs_busi)}: BUSI not found at {BUSI}")
        args.only = [s for s in args.only if s not in needs_busi]
    if "throughput" in args.only:
        bench_throughput(args.n_throughput, args.batch_size, args.repeats)
    if "memory" in args.only:
        bench_memory(sorted(args.memory_sizes), args.batch_size)
    if "grid" in args.only:
        bench_grid(args.n_grid)
    if "busi" in args.only:
        bench_busi(args.n_busi)


if __name__ == "__main__":
    main()
