"""Benchmark several pipelines on one dataset, honestly, and write a publishable report.

Public API::

    from featurepipe.benchmark import run_benchmark

    result = run_benchmark(dataset, {"hog+svm": pipe_a, "glcm+svm": pipe_b},
                           cv={"n_splits": 5, "n_repeats": 2, "random_state": 0},
                           output_dir="results/busi")
    print(result.to_markdown())

:func:`run_benchmark` evaluates every pipeline on the same stratified,
grouped (patients and duplicate clusters) splits, computes each pipeline's
stateless prefix once, tunes by nested CV when grids are given, and writes
per-fold results as they finish (``folds.jsonl``; a rerun with the same
output directory and configuration resumes), ``results.json``, CSV tables,
``summary.md``, ``report.html`` and PNG + SVG figures. ``featurepipe.benchmark`` is a package (the
runner, reports, plots, the leakage report and the fold store live in its
modules); the function to call is ``featurepipe.benchmark.run_benchmark``.
"""

from .leakage import find_samplers, leakage_report
from .runner import BenchmarkResult, run_benchmark
from ..model_selection import merge_groups
from .splits import CVSpec, Split, exact_duplicate_clusters, make_splits
from .store import FoldStore

__all__ = [
    "run_benchmark",
    "BenchmarkResult",
    "CVSpec",
    "Split",
    "make_splits",
    "merge_groups",
    "exact_duplicate_clusters",
    "leakage_report",
    "find_samplers",
    "FoldStore",
]
