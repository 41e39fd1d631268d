"""BUSI accuracy table (issue 14): what each new recipe capability adds, against the goal.

Two tasks, each one :func:`featurepipe.benchmark.run_benchmark` call (5-fold,
stratified, near-duplicate clusters kept on one side of every split, the
runner's own duplicate handling):

``3class``
    normal / benign / malignant on whole images (780 BUSI images). Rows:
    the recipes before and after ``class_weight="balanced"`` became the
    default, ``fusion_soft_vote`` and ``fusion_stack``; each frozen-feature
    option of issue 14 #1 alone on ``convnet_svm_linear`` (TTA, stage-end
    taps, GeM, power/L2, in-fold whitening, a second backbone), the named
    ``convnet_ensemble_svm`` that combines the ones fixed by principle,
    ``convnet_tiles_svm`` (#5), stacking with the ensemble as its deep
    member (#3) and the tuned rows (#2).
``roi``
    benign vs malignant (647 images, every one has a lesion mask), whole
    image against the annotated lesion region (``use_mask=True``: CNN
    features on the mask crop with context, handcrafted features on the
    masked region). Normal images are left out on purpose: their masks are
    empty, so "was a region cropped?" would give the label away.

Columns: accuracy, MCC, macro one-vs-rest ROC-AUC, PR-AUC (means over the
outer folds), and the runner's total seconds for the row (features are
computed once per image and cached on disk under ``--cache``, so a row
whose features an earlier row already computed shows only its fitting
time). The goal rows are issue 14's (3-class: accuracy >= 0.85, MCC >= 0.75,
ROC-AUC >= 0.95; ROI: ROC-AUC >= 0.95); the fraction of the goal reached is
the best named recipe's value divided by the goal, per metric.

Every row runs a recipe at its stated defaults (see ``Recipe.defaults``),
chosen by principle and never by these folds, except the rows marked
``tuned``: those choose among the recipe's default grid (``recipes.grid``)
by nested CV (an inner grouped 3-fold CV on each outer training part, as
``featurepipe benchmark --tune`` does), and the parameters chosen per outer
fold are listed under the table. The outer test folds never choose anything.

Run ``python benchmarks/accuracy.py`` (``--help`` for options; ``--limit``
runs a small stratified subset as a smoke test). The CNN is
EfficientNet-Lite0 (and Lite2 where a row says so) with its offline
ImageNet weights.

Measured 2026-11-27 on the 2-core development machine (CNN features of the
single-option rows were already in the disk cache from
``benchmarks/frozen_features.py``, so their seconds are fitting time; 917 s
and 175 s wall for the two tasks; the two ``keras_`` rows were added later
and run with ``--only 3class --rows convnet_svm_linear keras_head
keras_finetune_earlystop`` on the same splits, 230 s wall, the trunk's
activations computed once and cached):

### BUSI 3-class (normal/benign/malignant), whole images — 5-fold, near-duplicates grouped (this invocation: 917 s wall; folds resumed from an earlier run are not rerun)

| row | capability | acc | MCC | macro ROC-AUC | PR-AUC | bal. acc | time (s) |
|---|---|---|---|---|---|---|---|
| convnet_svm_linear, unweighted | before (published classifier) | 0.736 | 0.581 | 0.880 | 0.795 | 0.756 | 2 |
| convnet_svm_linear | class_weight='balanced' (default) | 0.729 | 0.581 | 0.883 | 0.800 | 0.759 | 2 |
| hog_svm, unweighted | before | 0.664 | 0.375 | 0.776 | 0.639 | 0.498 | 8 |
| hog_svm | class_weight='balanced' (default) | 0.662 | 0.404 | 0.783 | 0.636 | 0.593 | 4 |
| firstorder_glcm_svm | class_weight='balanced' (default) | 0.587 | 0.367 | 0.764 | 0.602 | 0.616 | 16 |
| hybrid_svm, unweighted | before | 0.731 | 0.517 | 0.861 | 0.765 | 0.621 | 45 |
| hybrid_svm | class_weight='balanced' (default) | 0.737 | 0.554 | 0.862 | 0.773 | 0.715 | 3 |
| fusion_soft_vote | fusion: soft vote of deep + HOG + texture | 0.728 | 0.530 | 0.873 | 0.788 | 0.688 | 6 |
| fusion_stack | fusion: stacking, logistic regression on out-of-fold probabilities | 0.740 | 0.582 | 0.890 | 0.817 | 0.753 | 24 |
| convnet_svm_linear, tta flip_crops | #1 TTA: mean of 7 views (mirror, 5 crops of 90 %) | 0.744 | 0.608 | 0.894 | 0.822 | 0.774 | 3 |
| convnet_svm_linear, stage-end taps | #1 multi-layer taps (stride 16, 32, head), average-pooled | 0.740 | 0.601 | 0.900 | 0.830 | 0.776 | 3 |
| convnet_svm_linear, GeM | #1 GeM pooling (p = 3) | 0.724 | 0.572 | 0.884 | 0.800 | 0.756 | 2 |
| convnet_svm_linear, power_l2 | #1 signed root + L2 normalisation | 0.728 | 0.574 | 0.886 | 0.810 | 0.753 | 2 |
| convnet_svm_linear, whiten | #1 PCA whitening fitted in-fold (90 % variance) + L2 | 0.699 | 0.502 | 0.864 | 0.770 | 0.680 | 2 |
| convnet_svm_linear, + Lite2 | #1 two backbones concatenated (Lite0 224 px + Lite2 260 px) | 0.746 | 0.623 | 0.902 | 0.830 | 0.799 | 4 |
| convnet_ensemble_svm | #1 named: Lite0 + Lite2, mirror TTA, power_l2 (fixed by principle) | 0.750 | 0.627 | 0.915 | 0.856 | 0.801 | 33 |
| convnet_tiles_svm | #5 tiles of 224 px at scales 1 and 0.5, max-pooled (a mammography recipe) | 0.577 | 0.336 | 0.769 | 0.617 | 0.580 | 65 |
| fusion_stack, ensemble deep member | #3 stacking with convnet_ensemble_svm's features as the deep member | 0.771 | 0.630 | 0.912 | 0.851 | 0.783 | 35 |
| keras_head | #8 fine-tuned baseline: new head on the frozen trunk's cached activations | 0.728 | 0.559 | 0.878 | 0.787 | 0.732 | 44 |
| keras_finetune_earlystop | #8 fine-tuned baseline: last 20 layers unfrozen, early stopping | 0.733 | 0.568 | 0.876 | 0.786 | 0.742 | 176 |
| convnet_svm_linear, tuned | #2 tuned: default grid by nested CV (--tune) | 0.703 | 0.549 | 0.885 | 0.802 | 0.738 | 56 |
| hybrid_svm, tuned | #2 tuned: default grid by nested CV (--tune) | 0.737 | 0.554 | 0.862 | 0.773 | 0.715 | 19 |
| convnet_ensemble_svm, tuned | #2 tuned: default grid by nested CV (--tune) | 0.737 | 0.600 | 0.911 | 0.849 | 0.780 | 270 |
| fusion_stack, tuned | #2 tuned: default grid by nested CV (--tune) | 0.738 | 0.582 | 0.891 | 0.816 | 0.752 | 291 |
| **goal** | issue 14 | ≥ 0.85 | ≥ 0.75 | ≥ 0.95 |  | | |

Parameters chosen by the inner CV, per outer fold:

- convnet_svm_linear, tuned: {"classifier__estimator__C": 0.001}; {"classifier__estimator__C": 0.0001}; {"classifier__estimator__C": 0.001}; {"classifier__estimator__C": 0.001}; {"classifier__estimator__C": 0.0001}
- hybrid_svm, tuned: {"classifier__estimator__C": 1.0}; {"classifier__estimator__C": 1.0}; {"classifier__estimator__C": 1.0}; {"classifier__estimator__C": 1.0}; {"classifier__estimator__C": 1.0}
- convnet_ensemble_svm, tuned: {"classifier__estimator__C": 0.0001}; {"classifier__estimator__C": 0.0001}; {"classifier__estimator__C": 0.001}; {"classifier__estimator__C": 0.001}; {"classifier__estimator__C": 0.001}
- fusion_stack, tuned: {"classifier__final_estimator__C": 1.0}; {"classifier__final_estimator__C": 10.0}; {"classifier__final_estimator__C": 1.0}; {"classifier__final_estimator__C": 10.0}; {"classifier__final_estimator__C": 1.0}

Fraction of the goal reached (best row by MCC: fusion_stack, ensemble deep member): accuracy 0.771/0.85 = 90.6% (short by 0.079), mcc 0.630/0.75 = 84.0% (short by 0.120), roc_auc 0.912/0.95 = 96.0% (short by 0.038).

### BUSI benign vs malignant, whole image vs lesion region — 5-fold, near-duplicates grouped (this invocation: 175 s wall; folds resumed from an earlier run are not rerun)

| row | capability | acc | MCC | macro ROC-AUC | PR-AUC | bal. acc | time (s) |
|---|---|---|---|---|---|---|---|
| convnet_svm_linear, whole image | whole-image baseline | 0.781 | 0.558 | 0.862 | 0.772 | 0.794 | 1 |
| convnet_svm_linear, use_mask | use_mask: CNN on the lesion crop (+32 px) | 0.805 | 0.609 | 0.905 | 0.811 | 0.821 | 14 |
| hog_svm, whole image | whole-image baseline | 0.787 | 0.502 | 0.801 | 0.740 | 0.738 | 4 |
| hog_svm, use_mask | use_mask: HOG of the masked region | 0.865 | 0.700 | 0.928 | 0.861 | 0.848 | 7 |
| hybrid_svm, use_mask | use_mask: CNN on the crop + region texture | 0.836 | 0.627 | 0.903 | 0.828 | 0.812 | 22 |
| fusion_soft_vote, use_mask | fusion (soft vote) + use_mask | 0.866 | 0.717 | 0.948 | 0.895 | 0.869 | 8 |
| fusion_stack, use_mask | fusion (stacking) + use_mask | 0.870 | 0.723 | 0.952 | 0.899 | 0.870 | 11 |
| convnet_ensemble_svm, use_mask | #1 + #4: the named ensemble on the lesion crop | 0.850 | 0.690 | 0.932 | 0.868 | 0.861 | 71 |
| fusion_stack, ensemble deep member, use_mask | #3 + #4: stacking with the ensemble's features | 0.875 | 0.733 | 0.955 | 0.914 | 0.876 | 18 |
| **goal** | issue 14 |  |  | ≥ 0.95 |  | | |

Fraction of the goal reached (best row by ROC-AUC: fusion_stack, ensemble deep member, use_mask): roc_auc 0.955/0.95 = 100.0% (reached).
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
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BUSI = ROOT.parent / "shared" / "data" / "busi"

from featurepipe import recipes  # noqa: E402
from featurepipe.benchmark import run_benchmark  # noqa: E402
from featurepipe.base import set_feature_cache  # noqa: E402
from _common import load_busi_for_run  # noqa: E402

#: Issue 14's goal, per task (metric -> target).
GOALS = {"3class": {"accuracy": 0.85, "mcc": 0.75, "roc_auc": 0.95}, "roi": {"roc_auc": 0.95}}
COLUMNS = ("accuracy", "mcc", "roc_auc", "pr_auc")

#: Stage ends of EfficientNet-Lite0: the last blocks of the stride-16 and stride-32 stages and the head.
LITE0_STAGE_ENDS = ("block10_add", "block14_add", "top_activation")
#: convnet_ensemble_svm's feature options, given to a fusion's deep member.
ENSEMBLE_OPTIONS = {"extra_backbones": ("efficientnet_lite2",), "tta": "flip", "feature_norm": "power_l2"}


class Row(NamedTuple):
    """One table row: a recipe with ``make()`` options, optionally tuned by nested CV."""

    name: str
    capability: str
    recipe: str
    options: dict
    #: Tune the recipe's default grid (``recipes.grid``) by an inner grouped CV on each outer training part.
    tune: bool = False


#: The rows of each task, in table order.
ROWS = {
    "3class": [
        Row("convnet_svm_linear, unweighted", "before (published classifier)", "convnet_svm_linear",
         {"class_weight": None}),
        Row("convnet_svm_linear", "class_weight='balanced' (default)", "convnet_svm_linear", {}),
        Row("hog_svm, unweighted", "before", "hog_svm", {"class_weight": None}),
        Row("hog_svm", "class_weight='balanced' (default)", "hog_svm", {}),
        Row("firstorder_glcm_svm", "class_weight='balanced' (default)", "firstorder_glcm_svm", {}),
        Row("hybrid_svm, unweighted", "before", "hybrid_svm", {"class_weight": None}),
        Row("hybrid_svm", "class_weight='balanced' (default)", "hybrid_svm", {}),
        Row("fusion_soft_vote", "fusion: soft vote of deep + HOG + texture", "fusion_soft_vote", {}),
        Row("fusion_stack", "fusion: stacking, logistic regression on out-of-fold probabilities", "fusion_stack", {}),
        Row("convnet_svm_linear, tta flip_crops", "#1 TTA: mean of 7 views (mirror, 5 crops of 90 %)",
            "convnet_svm_linear", {"tta": "flip_crops"}),
        Row("convnet_svm_linear, stage-end taps", "#1 multi-layer taps (stride 16, 32, head), average-pooled",
            "convnet_svm_linear", {"layers": LITE0_STAGE_ENDS}),
        Row("convnet_svm_linear, GeM", "#1 GeM pooling (p = 3)", "convnet_svm_linear", {"pooling": "gem"}),
        Row("convnet_svm_linear, power_l2", "#1 signed root + L2 normalisation", "convnet_svm_linear",
            {"feature_norm": "power_l2"}),
        Row("convnet_svm_linear, whiten", "#1 PCA whitening fitted in-fold (90 % variance) + L2",
            "convnet_svm_linear", {"whiten": True}),
        Row("convnet_svm_linear, + Lite2", "#1 two backbones concatenated (Lite0 224 px + Lite2 260 px)",
            "convnet_svm_linear", {"extra_backbones": ("efficientnet_lite2",)}),
        Row("convnet_ensemble_svm", "#1 named: Lite0 + Lite2, mirror TTA, power_l2 (fixed by principle)",
            "convnet_ensemble_svm", {}),
        Row("convnet_tiles_svm", "#5 tiles of 224 px at scales 1 and 0.5, max-pooled (a mammography recipe)",
            "convnet_tiles_svm", {}),
        Row("fusion_stack, ensemble deep member", "#3 stacking with convnet_ensemble_svm's features as the deep member",
            "fusion_stack", ENSEMBLE_OPTIONS),
        Row("keras_head", "#8 fine-tuned baseline: new head on the frozen trunk's cached activations", "keras_head",
            {}),
        Row("keras_finetune_earlystop", "#8 fine-tuned baseline: last 20 layers unfrozen, early stopping",
            "keras_finetune_earlystop", {}),
        Row("convnet_svm_linear, tuned", "#2 tuned: default grid by nested CV (--tune)", "convnet_svm_linear", {},
            tune=True),
        Row("hybrid_svm, tuned", "#2 tuned: default grid by nested CV (--tune)", "hybrid_svm", {}, tune=True),
        Row("convnet_ensemble_svm, tuned", "#2 tuned: default grid by nested CV (--tune)", "convnet_ensemble_svm", {},
            tune=True),
        Row("fusion_stack, tuned", "#2 tuned: default grid by nested CV (--tune)", "fusion_stack", {}, tune=True),
    ],
    "roi": [
        Row("convnet_svm_linear, whole image", "whole-image baseline", "convnet_svm_linear", {}),
        Row("convnet_svm_linear, use_mask", "use_mask: CNN on the lesion crop (+32 px)", "convnet_svm_linear",
         {"use_mask": True}),
        Row("hog_svm, whole image", "whole-image baseline", "hog_svm", {}),
        Row("hog_svm, use_mask", "use_mask: HOG of the masked region", "hog_svm", {"use_mask": True}),
        Row("hybrid_svm, use_mask", "use_mask: CNN on the crop + region texture", "hybrid_svm", {"use_mask": True}),
        Row("fusion_soft_vote, use_mask", "fusion (soft vote) + use_mask", "fusion_soft_vote", {"use_mask": True}),
        Row("fusion_stack, use_mask", "fusion (stacking) + use_mask", "fusion_stack", {"use_mask": True}),
        Row("convnet_ensemble_svm, use_mask", "#1 + #4: the named ensemble on the lesion crop", "convnet_ensemble_svm",
            {"use_mask": True}),
        Row("fusion_stack, ensemble deep member, use_mask", "#3 + #4: stacking with the ensemble's features",
            "fusion_stack", {**ENSEMBLE_OPTIONS, "use_mask": True}),
    ],
}


def _subset(dataset, keep):
    return dataset[np.flatnonzero(keep)]


def run_task(task, dataset, *, cv, cache_dir, out_dir, only_rows=None):
    """Run the rows of ``task`` (those named in ``only_rows``, if given) in one benchmark; returns a list of row dicts."""
    rows = [row for row in ROWS[task] if only_rows is None or row.name in only_rows]
    pipelines = {row.name: set_feature_cache(recipes.make(row.recipe, **row.options), str(cache_dir)) for row in rows}
    param_grids = {row.name: recipes.grid(row.recipe) for row in rows if row.tune}
    pos_label = "malignant" if task == "roi" else None
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        result = run_benchmark(dataset, pipelines, cv=cv, param_grids=param_grids, pos_label=pos_label, output_dir=out_dir / task,
                               plots=False, progress=True, resume=True)
    wall = time.perf_counter() - started
    table = []
    for row in rows:
        summary = result.summary[row.name]
        folds = [fold for fold in result.folds if fold.get("pipeline") == row.name]
        predicted = {label for fold in folds for label in fold.get("y_pred", [])}
        table.append({"row": row.name, "capability": row.capability, "recipe": row.recipe, "options": row.options,
                      "tuned": row.tune, "chosen_params": [fold.get("best_params") for fold in folds if row.tune],
                      **{m: summary[m]["mean"] for m in COLUMNS},
                      **{f"{m}_std": summary[m]["std"] for m in COLUMNS},
                      "balanced_accuracy": summary["balanced_accuracy"]["mean"],
                      "seconds": result.timings[row.name]["total_s"],
                      "predicted_classes": sorted(map(str, predicted))})
    print(f"[{task}] {len(dataset)} images, classes {dataset.class_counts()}, wall {wall:.0f} s", flush=True)
    return table, wall


def goal_rows(task, table):
    """The goal row and the fraction of it reached by the best named recipe (by the goal's first metric)."""
    goal = GOALS[task]
    rank = "mcc" if "mcc" in goal else "roc_auc"
    best = max(table, key=lambda r: r[rank])
    fractions = {m: min(best[m] / target, 1.0) for m, target in goal.items()}
    return goal, best, fractions


def markdown(task, table, wall, cv):
    goal, best, fractions = goal_rows(task, table)
    n_classes = 3 if task == "3class" else 2
    title = {"3class": "BUSI 3-class (normal/benign/malignant), whole images",
             "roi": "BUSI benign vs malignant, whole image vs lesion region"}[task]
    lines = [f"### {title} — {cv}-fold, near-duplicates grouped (this invocation: {wall:.0f} s wall; folds "
             f"resumed from an earlier run are not rerun)", "",
             "| row | capability | acc | MCC | macro ROC-AUC | PR-AUC | bal. acc | time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        if len(r["predicted_classes"]) < n_classes:
            r = {**r, "row": f"{r['row']} ⚠ predicts only {', '.join(r['predicted_classes'])}"}
        lines.append(f"| {r['row']} | {r['capability']} | {r['accuracy']:.3f} | {r['mcc']:.3f} | "
                     f"{r['roc_auc']:.3f} | {r['pr_auc']:.3f} | {r['balanced_accuracy']:.3f} | "
                     f"{r['seconds']:.0f} |")
    cells = {m: f"≥ {goal[m]:.2f}" if m in goal else "" for m in COLUMNS}
    lines.append(f"| **goal** | issue 14 | {cells['accuracy']} | {cells['mcc']} | {cells['roc_auc']} | "
                 f"{cells['pr_auc']} | | |")
    reached = ", ".join(f"{m} {best[m]:.3f}/{goal[m]:.2f} = {fractions[m]:.1%}"
                        f" ({'reached' if best[m] >= goal[m] else f'short by {goal[m] - best[m]:.3f}'})"
                        for m in goal)
    tuned = [r for r in table if r.get("tuned")]
    if tuned:
        lines += ["", "Parameters chosen by the inner CV, per outer fold:", ""]
        lines += [f"- {r['row']}: " + "; ".join(json.dumps(p, sort_keys=True) for p in r["chosen_params"])
                  for r in tuned]
    lines += ["", f"Fraction of the goal reached (best row by {'MCC' if 'mcc' in goal else 'ROC-AUC'}: "
                  f"{best['row']}): {reached}.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=BUSI, help="BUSI folder (benign/, malignant/, normal/)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/fp-cache"), help="per-sample feature cache")
    parser.add_argument("--out", type=Path, default=Path("/tmp/fp-accuracy"), help="benchmark output folder")
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--only", choices=sorted(ROWS), action="append", help="run only this task")
    parser.add_argument("--rows", nargs="+", metavar="ROW",
                        choices=sorted({row.name for rows in ROWS.values() for row in rows}),
                        help="run only these rows (their splits are every row's; use a new --out: a results "
                             "folder refuses pipelines it did not start with)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per class (smoke)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite accuracy.md from the accuracy.json of an earlier run in --out")
    args = parser.parse_args(argv)
    if args.report_only:
        raw = json.loads((args.out / "accuracy.json").read_text())
        report = "\n".join(markdown(task, r["rows"], r["wall_s"], args.cv) for task, r in raw.items())
        (args.out / "accuracy.md").write_text(report)
        print(report)
        return
    busi = load_busi_for_run(parser, args.data, args.cache, args.limit)
    report, raw = [], {}
    for task in args.only or ["3class", "roi"]:
        if args.rows and not any(row.name in args.rows for row in ROWS[task]):
            continue
        dataset = busi if task == "3class" else _subset(busi, np.asarray(busi.y) != "normal")
        table, wall = run_task(task, dataset, cv=args.cv, cache_dir=args.cache, out_dir=args.out,
                               only_rows=args.rows)
        raw[task] = {"rows": table, "wall_s": wall}
        report.append(markdown(task, table, wall, args.cv))
        print(report[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy.md").write_text("\n".join(report))
    (args.out / "accuracy.json").write_text(json.dumps(raw, indent=1, default=str))
    print(f"written: {args.out / 'accuracy.md'}, {args.out / 'accuracy.json'}")


if __name__ == "__main__":
    main()
