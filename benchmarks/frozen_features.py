"""What each stronger-frozen-features option adds on BUSI (issue 14 #1), measured, not tuned.

One :func:`featurepipe.benchmark.run_benchmark` call on BUSI's 3-class task
(normal / benign / malignant, whole images, 780 images; 5-fold, stratified,
near-duplicate clusters kept on one side of every split: the runner's own
duplicate handling, as in ``benchmarks/accuracy.py``), every row the
``convnet_svm_linear`` recipe with one CNN-feature option changed from its
default, then all of them combined:

========================  =====================================================================
row                       options given to ``recipes.make("convnet_svm_linear", ...)``
========================  =====================================================================
baseline                  none (EfficientNet-Lite0, 224 px, average pooling, one view)
tta flip                  ``tta="flip"`` (image and mirror image averaged)
tta flip+crops            ``tta="flip_crops"`` (plus five 90 % crops: 7 views)
gem pooling               ``pooling="gem"`` (p = 3)
multi-layer taps          ``layers=LITE0_TAPS`` (ends of the stride-16 and -32 stages + the head)
l2                        ``feature_norm="l2"``
power_l2                  ``feature_norm="power_l2"``
whiten                    ``whiten=True`` (PCA whitening, 90 % variance, fitted in-fold; then L2)
lite0 + lite2             ``extra_backbones=("efficientnet_lite2",)`` (Lite2 at its native 260 px)
all combined              lite0 + lite2, each with its own stage-end taps, GeM, tta flip, power_l2, whiten
all but whiten            the same without whitening (whitening alone lowered MCC; an ablation, not a choice)
========================  =====================================================================

Columns: accuracy, MCC, macro one-vs-rest ROC-AUC, macro PR-AUC (means over
the 5 outer folds), balanced accuracy, and the runner's seconds for the row
(features are cached on disk under ``--cache``, so a row whose features an
earlier row (or run) already computed shows only its fitting time; the
extraction seconds of a row are in the runner's ``timings``).

Nothing here chooses anything: the options' values are stated by principle
in ``featurepipe.recipes`` and ``featurepipe.cnn``, every other setting is
the recipe's default (C = 1 / the number of features, SVMlight's rule), and
no default was changed after seeing these numbers.

Measured 2026-11-27 on the shared 2-core development machine (load ~8),
EfficientNet-Lite0/Lite2 with their offline ImageNet weights, ONNX Runtime;
780 images, 5 folds; time = the row's runner seconds with a cold feature
cache ("all but whiten" ran afterwards on the same splits, its features
already cached)::

    row               acc            MCC            ROC-AUC  PR-AUC  bal.acc  dMCC    s
    baseline          0.729 ± 0.057  0.581 ± 0.086  0.883    0.800   0.759    +0.000   38
    tta flip          0.732 ± 0.051  0.587 ± 0.077  0.884    0.807   0.767    +0.006   61
    tta flip+crops    0.744 ± 0.052  0.608 ± 0.079  0.894    0.822   0.774    +0.027  147
    gem pooling       0.724 ± 0.041  0.572 ± 0.065  0.884    0.800   0.756    -0.009   34
    multi-layer taps  0.740 ± 0.054  0.601 ± 0.073  0.900    0.830   0.776    +0.020   32
    l2                0.732 ± 0.056  0.586 ± 0.086  0.883    0.798   0.762    +0.005    5
    power_l2          0.728 ± 0.052  0.574 ± 0.084  0.886    0.810   0.753    -0.006    6
    whiten            0.699 ± 0.034  0.502 ± 0.055  0.864    0.770   0.680    -0.079   36
    lite0 + lite2     0.746 ± 0.060  0.623 ± 0.078  0.902    0.830   0.799    +0.042   50
    all combined      0.782 ± 0.044  0.643 ± 0.071  0.922    0.862   0.785    +0.063  178
    all but whiten    0.768 ± 0.042  0.652 ± 0.058  0.925    0.866   0.816    +0.071   (10)

The fold-to-fold standard deviations (0.04-0.09 in MCC) are larger than
most single-option differences: only the backbone concatenation, the
stage-end taps, the seven-view TTA and the combinations move MCC by more
than 0.02; whitening alone lowers it. Issue 14's goal (accuracy 0.85, MCC
0.75, ROC-AUC 0.95) is not reached by frozen features alone.

Run ``python benchmarks/frozen_features.py`` (``--help``; ``--rows`` runs a
subset; ``--limit N`` a stratified subset of N images per class as a smoke
test; ``--report-only`` rewrites the table from an earlier run's JSON).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BUSI = ROOT.parent / "shared" / "data" / "busi"

from featurepipe import recipes  # noqa: E402
from featurepipe.base import set_feature_cache  # noqa: E402
from featurepipe.benchmark import run_benchmark  # noqa: E402
from _common import load_busi_for_run  # noqa: E402

COLUMNS = ("accuracy", "mcc", "roc_auc", "pr_auc", "balanced_accuracy")

#: Stage-end taps: the last block of the stride-16 stage and of the stride-32 stage (mid-level
#: texture at two scales) and the head's activation (the default feature map).
LITE0_TAPS = ("block10_add", "block14_add", "top_activation")   # 112 + 192 + 1280 channels
LITE2_TAPS = ("block14_add", "block19_add", "top_activation")   # 120 + 208 + 1280 channels

#: (row, make() options), in the order run.
ROWS = [
    ("baseline", {}),
    ("tta flip", {"tta": "flip"}),
    ("gem pooling", {"pooling": "gem"}),
    ("multi-layer taps", {"layers": LITE0_TAPS}),
    ("l2", {"feature_norm": "l2"}),
    ("power_l2", {"feature_norm": "power_l2"}),
    ("whiten", {"whiten": True}),
    ("lite0 + lite2", {"extra_backbones": ("efficientnet_lite2",)}),
    ("all combined", {"extra_backbones": ("efficientnet_lite2",), "tta": "flip", "pooling": "gem",
                      "feature_norm": "power_l2", "whiten": True}),
    ("all but whiten", {"extra_backbones": ("efficientnet_lite2",), "tta": "flip", "pooling": "gem",
                        "feature_norm": "power_l2"}),
    ("tta flip+crops", {"tta": "flip_crops"}),
]


def build(row, options):
    """The row's pipeline: the recipe with ``options`` (the combined row taps each backbone's own stage ends)."""
    pipe = recipes.make("convnet_svm_linear", **options)
    if row in ("all combined", "all but whiten"):
        # The layers option names layers of every backbone; Lite0 and Lite2 name their stage ends
        # differently, so each member gets its own. C is then set by hand: 1 with whitening
        # (whitened, L2-normalised vectors), else 1 / the features of both backbones' taps.
        pipe.set_params(features__efficientnet_lite0__cnn__layer=LITE0_TAPS,
                        features__efficientnet_lite2__cnn__layer=LITE2_TAPS)
        if "whiten" not in pipe.named_steps:
            n_features = (112 + 192 + 1280) + (120 + 208 + 1280)
            pipe.set_params(classifier__estimator__C=1.0 / n_features)
    return pipe


def run(dataset, rows, *, cv, cache_dir, out_dir):
    """Run ``rows`` in one benchmark (same splits for every row); returns the table rows."""
    options = dict(ROWS)
    pipelines = {row: set_feature_cache(build(row, options[row]), str(cache_dir)) for row in rows}
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        result = run_benchmark(dataset, pipelines, cv=cv, output_dir=out_dir, plots=False, progress=True,
                               resume=True)
    wall = time.perf_counter() - started
    table = []
    for row in rows:
        summary = result.summary[row]
        table.append({"row": row, "options": {k: list(v) if isinstance(v, tuple) else v
                                              for k, v in options[row].items()},
                      **{m: summary[m]["mean"] for m in COLUMNS}, **{f"{m}_std": summary[m]["std"] for m in COLUMNS},
                      "seconds": result.timings[row]["total_s"], "timings": result.timings[row]})
    return table, wall


def markdown(table, wall, cv, n_images):
    base = next((r for r in table if r["row"] == "baseline"), None)
    lines = [f"### BUSI 3-class, whole images, convnet_svm_linear — {cv}-fold, near-duplicates grouped, "
             f"{n_images} images (this invocation: {wall:.0f} s wall)", "",
             "| row | acc | MCC | macro ROC-AUC | PR-AUC | bal. acc | ΔMCC vs baseline | time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        delta = f"{r['mcc'] - base['mcc']:+.3f}" if base else ""
        lines.append(f"| {r['row']} | {r['accuracy']:.3f} ± {r['accuracy_std']:.3f} | {r['mcc']:.3f} ± "
                     f"{r['mcc_std']:.3f} | {r['roc_auc']:.3f} | {r['pr_auc']:.3f} | {r['balanced_accuracy']:.3f} | "
                     f"{delta} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=BUSI, help="BUSI folder (benign/, malignant/, normal/)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/fp-cache"), help="per-sample feature cache")
    parser.add_argument("--out", type=Path, default=Path("/tmp/fp-frozen-features"), help="benchmark output folder")
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--rows", nargs="+", choices=[r for r, _ in ROWS], metavar="ROW",
                        help=f"run only these rows (default all): {', '.join(repr(r) for r, _ in ROWS)}")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per class (smoke)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite frozen_features.md from the frozen_features.json of an earlier run in --out")
    args = parser.parse_args(argv)
    if args.report_only:
        raw = json.loads((args.out / "frozen_features.json").read_text())
        report = markdown(raw["rows"], raw["wall_s"], raw["cv"], raw["n_images"])
        (args.out / "frozen_features.md").write_text(report)
        print(report)
        return
    busi = load_busi_for_run(parser, args.data, args.cache, args.limit)
    rows = args.rows or [r for r, _ in ROWS]
    table, wall = run(busi, rows, cv=args.cv, cache_dir=args.cache, out_dir=args.out)
    report = markdown(table, wall, args.cv, len(busi.y))
    print(report, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "frozen_features.md").write_text(report)
    (args.out / "frozen_features.json").write_text(json.dumps(
        {"rows": table, "wall_s": wall, "cv": args.cv, "n_images": len(busi.y)}, indent=1, default=str))
    print(f"written: {args.out / 'frozen_features.md'}, {args.out / 'frozen_features.json'}")


if __name__ == "__main__":
    main()
