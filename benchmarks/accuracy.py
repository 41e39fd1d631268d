"""BUSI accuracy table (issue 14): what each new recipe capability adds, against the goal.

Two tasks, each one :func:`featurepipe.benchmark.run_benchmark` call (5-fold,
stratified, near-duplicate clusters kept on one side of every split, the
runner's own duplicate handling):

``3class``
    normal / benign / malignant on whole images (780 BUSI images). Rows:
    the recipes before and after ``class_weight="balanced"`` became the
    default, ``fusion_soft_vote`` and ``fusion_stack``.
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
EfficientNet-Lite0 with its offline ImageNet weights.
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
from featurepipe.datasets import load_busi  # noqa: E402

#: Issue 14's goal, per task (metric -> target).
GOALS = {"3class": {"accuracy": 0.85, "mcc": 0.75, "roc_auc": 0.95}, "roi": {"roc_auc": 0.95}}
COLUMNS = ("accuracy", "mcc", "roc_auc", "pr_auc")

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
        Row("convnet_svm_linear, tuned", "tuned: default grid by nested CV (--tune)", "convnet_svm_linear", {},
            tune=True),
        Row("hybrid_svm, tuned", "tuned: default grid by nested CV (--tune)", "hybrid_svm", {}, tune=True),
        Row("fusion_stack, tuned", "tuned: default grid by nested CV (--tune)", "fusion_stack", {}, tune=True),
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
    ],
}


def _with_disk_cache(pipe, cache_dir):
    """``pipe`` with every per-sample feature cache (``...cache=True``) on disk under ``cache_dir``."""
    keys = {k: str(cache_dir) for k, v in pipe.get_params(deep=True).items()
            if (k == "cache" or k.endswith("__cache")) and v is True}
    return pipe.set_params(**keys)


def _subset(dataset, keep):
    return dataset[np.flatnonzero(keep)]


def _limit(dataset, n_per_class, seed=0):
    """A stratified random subset with at most ``n_per_class`` images of each class (smoke runs)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(dataset.y)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n_per_class] for c in np.unique(y)])
    return dataset[np.sort(chosen)]


def run_task(task, dataset, *, cv, cache_dir, out_dir):
    """Run the rows of ``task`` in one benchmark; returns a list of row dicts."""
    rows = ROWS[task]
    pipelines = {row.name: _with_disk_cache(recipes.make(row.recipe, **row.options), cache_dir) for row in rows}
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
    if not args.data.is_dir():
        parser.error(f"--data {args.data}: no such folder (see /work/shared/data/README.md)")
    args.cache.mkdir(parents=True, exist_ok=True)
    busi = load_busi(args.data)
    if args.limit:
        busi = _limit(busi, args.limit)
    report, raw = [], {}
    for task in args.only or ["3class", "roi"]:
        dataset = busi if task == "3class" else _subset(busi, np.asarray(busi.y) != "normal")
        table, wall = run_task(task, dataset, cv=args.cv, cache_dir=args.cache, out_dir=args.out)
        raw[task] = {"rows": table, "wall_s": wall}
        report.append(markdown(task, table, wall, args.cv))
        print(report[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy.md").write_text("\n".join(report))
    (args.out / "accuracy.json").write_text(json.dumps(raw, indent=1, default=str))
    print(f"written: {args.out / 'accuracy.md'}, {args.out / 'accuracy.json'}")


if __name__ == "__main__":
    main()
