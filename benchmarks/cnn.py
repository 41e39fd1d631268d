"""Frozen-CNN features: runtimes against raw Keras, memory when streaming, cached grid search, BUSI accuracy.

Run ``python benchmarks/cnn.py`` for the default (``throughput`` and
``memory``, a few minutes on 2 cores, small memory) or ``--full`` for every
section at full size (``--only`` picks sections; ``--help`` for sizes).

``throughput``
    Images/s of a plain ``tf.function`` around the Keras model plus global
    average pooling (what a user would write; the reference) and of
    ``CNNFeatures.transform`` (cache off) on each installed runtime:
    TensorFlow, ONNX Runtime and OpenVINO float32, and OpenVINO with the
    opt-in bfloat16 precision; MobileNetV2 and EfficientNet-Lite0 at
    224×224, batch 32 (ResNet50 too with ``--full``). Images are RGB arrays
    already in memory, so CNNFeatures' overhead (sample handling,
    preparation) is included. Methods alternate within each round (the
    order rotating from round to round); img/s
    are medians over rounds and each ratio is the median of the per-round
    ratios (same round, same machine load), so they stay meaningful on a
    shared machine where absolute img/s are noisy. Feature agreement with
    the reference: max abs diff, max rel diff (to the row's largest
    feature), min cosine. MobileNetV2 runs with random weights when its
    ImageNet weights cannot be downloaded (speed does not depend on the
    weight values).
``memory``
    Peak resident memory (``VmHWM``) of a fresh process that streams N
    PNG files from disk through ``CNNFeatures("efficientnet_lite0")`` at
    224 px, for N = 100 and 400 (``--full``: 500 and 2000): flat when batches are streamed.
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
    ``CalibratedClassifierCV(SVC(), ensemble=False)``) on 200 BUSI images
    (``--full``: all 780; gray replicated to three channels), 5-fold
    stratified, with ImageNet weights in float32 and in the opt-in bfloat16
    (OpenVINO), and with random weights (``weights=None``); also with the folds grouped
    by duplicate clusters (:func:`featurepipe.duplicates.group_duplicates`),
    since BUSI holds near-duplicate images.

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
    clear_model_cache,
    get_backbone,
    load_backbone,
)
from featurepipe.sample import Sample


SECTIONS = ("throughput", "memory", "grid", "busi")


def _weights_for(name):
    """ImageNet weights when they can be had here, else random (speed does not depend on values)."""
    try:
        load_backbone(name, "imagenet", 224)
        return "imagenet"
    except BackboneWeightsError:
        return None


# ----------------------------------------------------------------------------------------------
def _agreement(features, reference):
    """Max abs diff, max rel diff (to the largest |feature| of each row), min row cosine vs ``reference``."""
    diff = np.abs(features - reference)
    scale = np.abs(reference).max(axis=1, keepdims=True)
    cosine = (features * reference).sum(axis=1) / (np.linalg.norm(features, axis=1) * np.linalg.norm(reference, axis=1))
    return {"max_abs": float(diff.max()), "max_rel": float((diff / scale).max()), "min_cosine": float(cosine.min())}


def bench_throughput(n_images, batch_size, rounds, backbones):
    """Img/s of raw Keras tf.function and of CNNFeatures on each runtime, alternating rounds, medians."""
    import tensorflow as tf

    from featurepipe.cnn import runtimes

    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 1, (n_images, 224, 224, 3)).astype(np.float32)
    samples = [Sample.from_array(p) for p in pixels]
    batches = [pixels[s:s + batch_size] * np.float32(255) for s in range(0, n_images, batch_size)]
    installed = runtimes.available_runtimes()
    methods = [("CNNFeatures tensorflow", "tensorflow", "float32")]
    methods += [(f"CNNFeatures {rt}", rt, "float32") for rt in ("onnxruntime", "openvino") if rt in installed]
    if "openvino" in installed:
        methods.append(("CNNFeatures openvino bf16", "openvino", "bfloat16"))
    auto = runtimes.resolve_runtime("auto")
    print(f"\n== throughput: {n_images} images 224x224 RGB in memory, batch {batch_size}, {rounds} alternating "
          f"rounds, medians; runtimes installed {installed}, auto -> {auto!r}, CPU bf16: "
          f"{runtimes.bf16_supported()} ==")
    print("   (the machine may be shared: absolute img/s are noisy, ratios measured in the same rounds less so)")
    results = {}
    for name in backbones:
        weights = _weights_for(name)
        spec = get_backbone(name)
        model = load_backbone(name, weights, 224)
        compiled = tf.function(lambda x, m=model: tf.reduce_mean(m(x, training=False), axis=[1, 2]),
                               jit_compile=False)

        def raw_function(compiled=compiled, prep=spec.preprocess):
            return np.vstack([compiled(tf.constant(prep(b))).numpy() for b in batches])

        fns = {"raw Keras tf.function": raw_function}
        for label, runtime, precision in methods:
            extractor = CNNFeatures(name, weights=weights, batch_size=batch_size, runtime=runtime,
                                    precision=precision, cache=False)
            fns[label] = extractor.transform

        times = {label: [] for label in fns}
        outputs = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for label, fn in fns.items():  # warm-up: trace/convert, first-call allocations
                t0 = time.perf_counter()
                outputs[label] = fn(samples[:batch_size]) if label != "raw Keras tf.function" else fn()
                print(f"  {name}: {label} ready in {time.perf_counter() - t0:.1f} s")
            labels = list(fns)
            for r in range(rounds):
                # Rotate the order each round so that no method always runs right after the same one.
                for label in labels[r % len(labels):] + labels[:r % len(labels)]:
                    fn = fns[label]
                    t0 = time.perf_counter()
                    outputs[label] = fn(samples) if label != "raw Keras tf.function" else fn()
                    times[label].append(time.perf_counter() - t0)
        reference = outputs["raw Keras tf.function"]
        rate = {label: n_images / np.median(v) for label, v in times.items()}
        # Per-round ratios (same round, same load) and their median: robust to load drifting between rounds.
        ratio = {label: float(np.median(np.array(times["raw Keras tf.function"]) / np.array(v)))
                 for label, v in times.items()}
        print(f"{name} (weights={weights}):")
        print(f"  {'method':28s} {'img/s':>7s} {'ratio':>6s} {'max abs diff':>12s} {'max rel diff':>12s} "
              f"{'min cosine':>10s}")
        results[name] = {"weights": weights}
        for label in fns:
            agree = _agreement(outputs[label], reference)
            print(f"  {label:28s} {rate[label]:7.1f} {ratio[label]:6.2f} {agree['max_abs']:12.2e} "
                  f"{agree['max_rel']:12.2e} {agree['min_cosine']:10.6f}")
            results[name][label] = {"img_per_s": rate[label], "ratio": ratio[label], **agree}
        del fns, outputs, model, compiled
        clear_model_cache()  # frees this backbone's model, graphs and sessions before the next one
    print(f"peak RSS so far: {_peak_rss_kb() / 1024:.0f} MiB")
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
    extractor = CNNFeatures("efficientnet_lite0", batch_size=batch_size, cache=False)  # runtime="auto"
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
    from featurepipe.cnn import runtimes

    configs = [("imagenet", "float32")]
    if "openvino" in runtimes.available_runtimes():
        configs.append(("imagenet", "bfloat16"))
    configs.append((None, "float32"))
    results = {}
    for weights, precision in configs:
        pipe = Pipeline([("cnn", CNNFeatures("efficientnet_lite0", weights=weights, precision=precision)),
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
        label = f"ImageNet {precision}" if weights else "random weights"
        print(f"{label:20s} ROC-AUC stratified 5-fold {strat.mean():.3f} ± {strat.std():.3f} | grouped by "
              f"duplicates {grp.mean():.3f} ± {grp.std():.3f} | extraction {t_extract:.0f} s "
              f"({len(X) / t_extract:.1f} img/s incl. PNG decoding)")
        results[f"{weights}-{precision}"] = {"stratified": strat.tolist(), "grouped": grp.tolist()}
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true",
                        help="the long version: all sections, more images and rounds, ResNet50 too, all of BUSI")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="sections to run (default: throughput, "
                        "memory; with --full all)")
    parser.add_argument("--n-throughput", type=int, help="images per throughput round (default 64; --full 256)")
    parser.add_argument("--rounds", type=int, help="alternating throughput rounds (default 5; --full 15)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--memory-sizes", type=int, nargs="+", help="images per memory run (default 100 400; "
                        "--full 500 2000)")
    parser.add_argument("--n-grid", type=int, default=120, help="BUSI images in the grid search")
    parser.add_argument("--n-busi", type=int, default=None, help="BUSI images in the evaluation (default 200; "
                        "--full all)")
    parser.add_argument("--rss-child", nargs=3, metavar=("FOLDER", "N", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        _rss_child(args.rss_child[0], int(args.rss_child[1]), int(args.rss_child[2]))
        return
    full = args.full
    only = args.only or (list(SECTIONS) if full else ["throughput", "memory"])
    n_throughput = args.n_throughput or (256 if full else 64)
    rounds = args.rounds or (15 if full else 5)
    memory_sizes = sorted(args.memory_sizes or ([500, 2000] if full else [100, 400]))
    n_busi = args.n_busi if args.n_busi is not None else (None if full else 200)
    backbones = ("mobilenet_v2", "efficientnet_lite0") + (("resnet50",) if full else ())
    import tensorflow as tf

    print(f"TensorFlow {tf.__version__}, devices {[d.device_type for d in tf.config.list_physical_devices()]}, "
          f"{os.cpu_count()} CPUs")
    needs_busi = {"grid", "busi"} & set(only)
    if needs_busi and not BUSI.is_dir():
        print(f"skipping {sorted(needs_busi)}: BUSI not found at {BUSI}")
        only = [s for s in only if s not in needs_busi]
    if "throughput" in only:
        bench_throughput(n_throughput, args.batch_size, rounds, backbones)
    if "memory" in only:
        bench_memory(memory_sizes, args.batch_size)
    if "grid" in only:
        bench_grid(args.n_grid)
    if "busi" in only:
        bench_busi(n_busi)
    print(f"\npeak RSS of this process: {_peak_rss_kb() / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
