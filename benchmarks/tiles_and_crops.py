"""Tiles for whole mammograms, lesion-size-adaptive and multi-context crops (issue 14 #4, #5).

Two tasks, each one :func:`featurepipe.benchmark.run_benchmark` call
(stratified, grouped folds; the runner's near-duplicate handling):

``mias``
    mini-MIAS sample (mdb001-060, 1024 px at 200 um), normal vs abnormal on
    whole mammograms, 5-fold x 3 repeats (the two breasts of a woman in one
    fold). Rows: ``convnet_svm_linear`` on the whole image resized to 224 px,
    the same on the Otsu breast crop, and ``convnet_tiles_svm`` (breast
    region, 224 px tiles at scales 1 and 0.5, max-pooled), also with scale
    0.5 alone.
``busi``
    BUSI benign vs malignant (647 images, every one with a lesion mask),
    5-fold: CNN features of the lesion crop with the recipes' fixed 32 px
    margin (``use_mask=True``), with a lesion-relative context (half the
    lesion's longer side on every side), the same as a square crop, and the
    crop at two contexts concatenated (``MultiContextFeatures``, 0.25 and 1.0).

Columns: accuracy, MCC, ROC-AUC, PR-AUC (means over the outer folds) and the
runner's total seconds for the row. Every row runs at stated defaults; nothing
is tuned here, and no default was chosen from these numbers.

A third part times the tiles of a few MIAS images through the CNN: one
``TiledFeatures`` call (the CNN's own batches of 32, or of 1) against one
``CNNFeatures`` call per tile.

Run ``python benchmarks/tiles_and_crops.py`` (``--limit N`` for a smoke run
with at most N images per class). The CNN is EfficientNet-Lite0 with its
offline ImageNet weights.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"

from featurepipe import MultiContextFeatures, recipes  # noqa: E402
from featurepipe.benchmark import run_benchmark  # noqa: E402
from featurepipe.cnn import CNNFeatures  # noqa: E402
from featurepipe.datasets import load_busi, load_mias  # noqa: E402
from featurepipe.base import set_feature_cache  # noqa: E402
from _common import limit_per_class  # noqa: E402

COLUMNS = ("accuracy", "mcc", "roc_auc", "pr_auc")


def _multi_context_svm(contexts):
    """convnet_svm_linear's scaler and classifier on CNN features of the lesion crop at ``contexts``."""
    pipe = recipes.make("convnet_svm_linear")
    n_features = 1280 * len(contexts)  # EfficientNet-Lite0
    pipe.set_params(features=MultiContextFeatures(CNNFeatures(), contexts=contexts),
                    classifier__estimator__C=1.0 / n_features)
    return pipe


def pipelines(task):
    """``{row name: (what it shows, pipeline)}`` of ``task``."""
    if task == "mias":
        return {
            "convnet_svm_linear": ("whole mammogram resized to 224 px", recipes.make("convnet_svm_linear")),
            "convnet_svm_linear, otsu_roi": ("breast crop resized to 224 px",
                                             recipes.make("convnet_svm_linear", preprocessing="otsu_roi")),
            "convnet_tiles_svm": ("breast tiles 224 px at scales 1, 0.5; max pool",
                                  recipes.make("convnet_tiles_svm")),
            "convnet_tiles_svm, scale 0.5": ("breast tiles at scale 0.5 only",
                                             recipes.make("convnet_tiles_svm", scales=(0.5,))),
        }
    fixed = recipes.make("convnet_svm_linear", use_mask=True)
    relative = recipes.make("convnet_svm_linear", use_mask=True).set_params(roi__margin=0, roi__context=0.5)
    square = recipes.make("convnet_svm_linear", use_mask=True).set_params(roi__margin=0, roi__context=0.5,
                                                                          roi__square=True)
    return {
        "crop, fixed 32 px margin": ("use_mask=True (recipe default)", fixed),
        "crop, context 0.5": ("margin = half the lesion's longer side", relative),
        "crop, context 0.5, square": ("as above, square crop (no CNN distortion)", square),
        "crops at contexts 0.25 + 1.0": ("MultiContextFeatures, concatenated", _multi_context_svm((0.25, 1.0))),
    }


def run_task(task, dataset, *, cv, pos_label, cache_dir, out_dir):
    rows = pipelines(task)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        result = run_benchmark(dataset, {name: set_feature_cache(pipe, str(cache_dir)) for name, (_, pipe) in rows.items()},
                               cv=cv, pos_label=pos_label, output_dir=out_dir / task, plots=False, progress=True,
                               resume=True)
    wall = time.perf_counter() - started
    lines = [f"### {task}: {len(dataset)} images {dataset.class_counts()}, cv {cv}, wall {wall:.0f} s", "",
             "| row | what | acc | MCC | ROC-AUC | PR-AUC | time (s) |", "|---|---|---|---|---|---|---|"]
    for name, (what, _) in rows.items():
        s = result.summary[name]
        cells = " | ".join(f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}" for m in COLUMNS)
        lines.append(f"| {name} | {what} | {cells} | {result.timings[name]['total_s']:.0f} |")
    return "\n".join(lines) + "\n"


def time_batching(mias, n_images=3):
    """Seconds for the tiles of ``n_images`` mammograms: one batched TiledFeatures call vs one CNN call per tile."""
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline

    from featurepipe.preprocessing import CropToMask, OtsuROI
    from featurepipe.sample import Sample
    from featurepipe.tiling import cut_tiles, rescale

    pipe = recipes.make("convnet_tiles_svm")
    breast = make_pipeline(OtsuROI(output="mask", clear_outside=True), CropToMask())
    tiled = pipe.named_steps["features"].set_params(cache=False)
    samples = [s for s in breast.fit_transform(list(mias.samples[:n_images]))]
    pixels = [s.load() for s in samples]
    cnn = CNNFeatures(cache=False)
    cnn.transform([np.zeros((224, 224), np.float32)] * 33)  # build and warm the network (both batch shapes)
    tiles = []
    for image, mask in pixels:
        for scale in tiled.scales:
            scaled, scaled_mask = rescale(image, mask, scale)
            cut = cut_tiles(scaled, scaled_mask, tiled.tile, tiled.overlap)
            coverage = [float(tm.mean()) for _, tm, _ in cut]
            kept = [t for (t, _, _), c in zip(cut, coverage) if c >= tiled.min_foreground]
            tiles += kept or [cut[int(np.argmax(coverage))][0]]
    inputs = [Sample.from_array(im, m) for im, m in pixels]
    batch_1 = clone(tiled).set_params(extractor__batch_size=1)
    seconds = {"batched": [], "batched, CNN batch_size=1": [], "per tile": []}
    for _ in range(2):  # the best of two runs of each (the machine is shared: load varies)
        t0 = time.perf_counter()
        batched = tiled.transform(inputs)
        t1 = time.perf_counter()
        batch_1.transform(inputs)
        t2 = time.perf_counter()
        for tile in tiles:
            cnn.transform([tile])
        t3 = time.perf_counter()
        for key, value in zip(seconds, (t1 - t0, t2 - t1, t3 - t2)):
            seconds[key].append(value)
    best = {key: min(values) for key, values in seconds.items()}
    return (f"### batching: {n_images} MIAS breast crops, {len(tiles)} tiles, {batched.shape[1]} features "
            f"(best of two runs each)\n\n"
            f"TiledFeatures, all tiles in one CNN call (CNNFeatures batch_size=32): {best['batched']:.1f} s; "
            f"the same with CNNFeatures batch_size=1: {best['batched, CNN batch_size=1']:.1f} s; "
            f"one CNNFeatures call per tile: {best['per tile']:.1f} s\n")

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with busi/ and mias_sample/")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/fp-cache-tiles"), help="per-sample feature cache")
    parser.add_argument("--out", type=Path, default=Path("/tmp/fp-tiles-crops"), help="benchmark output folder")
    parser.add_argument("--only", choices=("mias", "busi", "batching"), action="append")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per class (smoke)")
    parser.add_argument("--splits", type=int, default=5, help="outer folds")
    args = parser.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    report = []
    parts = args.only or ["batching", "mias", "busi"]
    mias = load_mias(args.data / "mias_sample", task="normal-abnormal")
    if "batching" in parts:
        report.append(time_batching(mias))
        print(report[-1], flush=True)
    if "mias" in parts:
        data = limit_per_class(mias, args.limit) if args.limit else mias
        report.append(run_task("mias", data, cv={"n_splits": args.splits, "n_repeats": 3}, pos_label="abnormal",
                               cache_dir=args.cache, out_dir=args.out))
        print(report[-1], flush=True)
    if "busi" in parts:
        busi = load_busi(args.data / "busi")
        busi = busi[np.flatnonzero(np.asarray(busi.y) != "normal")]
        if args.limit:
            busi = limit_per_class(busi, args.limit)
        report.append(run_task("busi", busi, cv=args.splits, pos_label="malignant", cache_dir=args.cache, out_dir=args.out))
        print(report[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tiles_and_crops.md").write_text("\n".join(report))


if __name__ == "__main__":
    main()
