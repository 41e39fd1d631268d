"""Fine-tuned CNN baselines on BUSI at the cost of their unfrozen layers (issue 14, point 8).

:class:`featurepipe.classifiers.KerasTransferClassifier` with
``cache_trunk=True``: the frozen trunk's activations (the output of the last
frozen layer, a spatial map) are computed once per image and cached per
sample on disk (``--cache``); each fold trains only the unfrozen top and the
new head on them, with early stopping, best-weights checkpoint and
ReduceLROnPlateau. No augmentation (it cannot act on cached activations).

Rows (3-class whole-image BUSI, 780 images, one
:func:`featurepipe.benchmark.run_benchmark` call, stratified folds with
near-duplicate clusters kept on one side):

``finetune_head_only``
    EfficientNet-Lite0 (offline ImageNet weights, 224 px) frozen; the head
    (global average pooling, batch normalisation, dropout 0.5, dense 256,
    softmax) trained on the cached 7x7x1280 maps.
``finetune_last11``
    the same, then the last 11 layers (block 15, the last MBConv block, and
    the top 1x1 convolution; batch normalisation frozen) fine-tuned at a 10x
    lower learning rate, on the cached output of ``block14_add`` (7x7x192).

Settings are the class's defaults (Keras transfer-learning guide: Adam
1e-3 for the head, patience 5, plateau 3, dropout 0.5, dense 256) with
``class_weight="balanced"`` as in every featurepipe recipe, and a
fine-tuning rate of 1e-4, ten times below the head's (the published
MobileNetV2 fine-tuning setups use 1e-4 to 1e-5; the class default 1e-5
barely moves batch-norm-free layers in the 10 epochs allowed); nothing is
tuned on these folds. The cut for ``finetune_last11`` is the last block boundary
(a valid cut: no residual connection crosses it).

Columns: accuracy, MCC, macro one-vs-rest ROC-AUC, PR-AUC (means over the
outer folds) and the runner's seconds per row (the first row to need a cut
layer pays its trunk pass; rows resumed from ``--out`` show their first
run's time). Run ``python benchmarks/finetune.py`` (``--help``).

Measured 2026-11-27 (780 images, 5 folds, 2 shared cores under load ~11,
the test suite running alongside; 1458 s wall in all, both trunk passes
included):

| row | acc | MCC | macro ROC-AUC | PR-AUC | seconds |
|---|---|---|---|---|---|
| finetune_head_only | 0.724 ± 0.063 | 0.554 ± 0.099 | 0.874 ± 0.032 | 0.782 ± 0.053 | 337 |
| finetune_last11 | 0.728 ± 0.064 | 0.554 ± 0.099 | 0.878 ± 0.031 | 0.786 ± 0.047 | 1058 |
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BUSI = ROOT.parent / "shared" / "data" / "busi"

from featurepipe.benchmark import run_benchmark  # noqa: E402
from featurepipe.classifiers import KerasTransferClassifier  # noqa: E402
from featurepipe.datasets import load_busi  # noqa: E402
from _common import limit_per_class  # noqa: E402

COLUMNS = ("accuracy", "mcc", "roc_auc", "pr_auc")

#: (row name, KerasTransferClassifier options beyond the common ones)
ROWS = [
    ("finetune_head_only", {"unfreeze": 0}),
    ("finetune_last11", {"unfreeze": 11, "fine_tune_learning_rate": 1e-4}),
]


def make(options, cache_dir, backbone):
    return KerasTransferClassifier(backbone=backbone, weights="imagenet", input_size=224, class_weight="balanced",
                                   cache_trunk=True, cache=str(cache_dir), random_state=0, **options)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=BUSI)
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per class (smoke run)")
    parser.add_argument("--rows", nargs="*", default=[name for name, _ in ROWS])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/featurepipe-finetune-cache"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/featurepipe-finetune"))
    args = parser.parse_args(argv)

    dataset = load_busi(args.data, require_mask=False)
    if args.limit:
        dataset = limit_per_class(dataset, args.limit)
    pipelines = {name: make(options, args.cache, args.backbone) for name, options in ROWS if name in args.rows}
    started = time.perf_counter()
    result = run_benchmark(dataset, pipelines, cv=args.cv, output_dir=args.out, plots=False, progress=True,
                           resume=True)
    wall = time.perf_counter() - started
    lines = [f"### BUSI 3-class, {args.cv}-fold, near-duplicates grouped, {len(dataset)} images, "
             f"{args.backbone} ImageNet weights; {wall:.0f} s wall",
             "", "| row | acc | MCC | macro ROC-AUC | PR-AUC | seconds |", "|---|---|---|---|---|---|"]
    rows = []
    for name in pipelines:
        summary = result.summary[name]
        row = {"row": name, **{m: summary[m]["mean"] for m in COLUMNS},
               **{f"{m}_std": summary[m]["std"] for m in COLUMNS}, "seconds": result.timings[name]["total_s"]}
        rows.append(row)
        lines.append(f"| {name} | " + " | ".join(f"{row[m]:.3f} ± {row[m + '_std']:.3f}" for m in COLUMNS)
                     + f" | {row['seconds']:.0f} |")
    report = "\n".join(lines)
    print(report, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "finetune.json").write_text(json.dumps({"rows": rows, "wall_s": wall, "cv": args.cv}, indent=1))
    (args.out / "finetune.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
