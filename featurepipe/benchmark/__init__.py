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
modules); the function to call is ``featurepipe.benchmark.run_benchmark``. Names are
imported from their modules on first use.

``run_benchmark`` composes five public stages that can be called (and tested) one by one::

    from featurepipe.benchmark import plan, compute_features, execute, summarise, write_report

    p = compute_features(plan(dataset, pipelines, cv=5))   # splits, identity; features once
    folds = execute(p, output_dir="results/busi")           # list of FoldResult (resumable)
    result = summarise(p, folds)                            # result.table: pipeline × repeat × fold × metric
    write_report(result, "results/busi", p)
"""

from .._lazy import lazy_attributes

_LAZY = {
    "run_benchmark": ".runner",
    "plan": ".runner",
    "compute_features": ".runner",
    "execute": ".runner",
    "summarise": ".runner",
    "write_report": ".runner",
    "BenchmarkPlan": ".runner",
    "PrefixOutput": ".runner",
    "ExecutionOptions": ".runner",
    "SummaryOptions": ".runner",
    "BenchmarkResult": ".results",
    "FoldResult": ".results",
    "results_table": ".results",
    "CVSpec": ".splits",
    "Split": ".splits",
    "make_splits": ".splits",
    "merge_groups": "..model_selection",
    "exact_duplicate_clusters": ".splits",
    "leakage_report": ".leakage",
    "find_samplers": ".leakage",
    "FoldStore": ".store",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
