"""The benchmark runner: many pipelines, one dataset, the same honest splits.

A run is four stages, each a public function that can be called and tested on its own;
:func:`run_benchmark` is their composition::

    from featurepipe.benchmark import runner

    p = runner.plan(dataset, pipelines, cv=5)         # samples, groups, guarded splits, identity
    p = runner.compute_features(p)                     # each stateless prefix once (images that fail: excluded)
    folds = runner.execute(p, output_dir="results")   # list of FoldResult (resumes from folds.jsonl)
    result = runner.summarise(p, folds)               # tidy table, pooled metrics, CIs, tests, leakage
    runner.write_report(result, "results", p)         # CSV, Markdown, HTML, plots

Options are grouped in two small validated dataclasses, :class:`ExecutionOptions` (how
features and folds are computed: never part of an experiment's identity) and
:class:`SummaryOptions` (how the results are summarised).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import joblib
import numpy as np
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils.parallel import Parallel, delayed
from tqdm.auto import tqdm

from .._validation import check_choice, invalid_value_message
from .._version import __version__, package_versions
from ..base import set_feature_cache
from ..cluster import extract_on_cluster
from ..dataset import Dataset
from ..feature_store import FeatureStore
from ..metrics import METRIC_NAMES, METRIC_RANGES, check_metric_names, compute_metrics, score_columns
from ..sample import as_samples, decode_once
from ..search import grid_list, split_stateless_prefix
from ..stats import CI_LABEL, NB_TEST_LABEL, pairwise_comparisons, summarize
from .leakage import (
    leakage_report,
    mask_cue_probe,
    mask_fractions,
    mask_probe_images,
    prefix_uses_masks,
    single_class_predictions,
)
from ..duplicates import find_duplicates
from ..model_selection import group_labels, merge_groups
from .results import PER_CLASS_METRICS, SCHEMA, BenchmarkResult, FoldResult, results_table
from .splits import CVSpec, make_splits, splits_fingerprint
from .store import (
    FoldStore,
    check_fold_record,
    clear_outputs,
    output_lock,
    read_experiment,
    to_jsonable,
    write_experiment,
)

__all__ = ["run_benchmark", "plan", "compute_features", "execute", "summarise", "write_report", "BenchmarkPlan",
           "PrefixOutput", "ExecutionOptions", "SummaryOptions", "BenchmarkResult", "FoldResult",
           "PER_CLASS_METRICS"]

_DUPLICATE_METHODS = ("near", "exact", "none")
_ON_ERROR = ("skip", "record", "raise")
#: A test fold larger than this multiple of the mean test fold makes the splits degenerate (refused).
MAX_FOLD_RATIO = 2.0


# ----------------------------------------------------------------------------- options
@dataclass(frozen=True)
class ExecutionOptions:
    """How features and folds are computed (validated here; never part of an experiment's identity).

    Parameters are those of :func:`run_benchmark` with the same names; ``scheduler`` implies
    ``backend="dask"`` (resolved in :attr:`backend`).

    >>> ExecutionOptions(scheduler="tcp://127.0.0.1:8786").backend
    'dask'
    """

    n_jobs: int | None = None
    backend: str | None = None
    scheduler: str | None = None
    progress: bool = True
    on_error: str = "skip"
    feature_chunk_size: int = 64

    def __post_init__(self):
        check_choice("on_error", self.on_error, _ON_ERROR)
        if not (isinstance(self.feature_chunk_size, (int, np.integer)) and self.feature_chunk_size >= 1):
            raise ValueError(f"feature_chunk_size must be a positive integer; got {self.feature_chunk_size!r}")
        if self.scheduler is not None:
            if self.backend not in (None, "dask"):
                raise ValueError(f"scheduler={self.scheduler!r} needs backend='dask'; got backend={self.backend!r}")
            object.__setattr__(self, "backend", "dask")


@dataclass(frozen=True)
class SummaryOptions:
    """How fold results are summarised: metrics shown, ranking metric, ROPE and confidence level.

    Parameters are those of :func:`run_benchmark` with the same names; ``metrics`` is resolved
    to the tuple of metric names shown (default: all of :data:`featurepipe.metrics.METRIC_NAMES`).

    >>> SummaryOptions(metrics=["mcc", "accuracy"]).metrics
    ('mcc', 'accuracy')
    """

    metrics: tuple | None = None
    rank_by: str = "mcc"
    rope: float | None = 0.01
    confidence: float = 0.95

    def __post_init__(self):
        object.__setattr__(self, "metrics", tuple(check_metric_names(self.metrics)))
        check_choice("rank_by", self.rank_by, METRIC_NAMES)
        if self.rope is not None and not (isinstance(self.rope, (int, float)) and self.rope >= 0):
            raise ValueError(invalid_value_message("rope", self.rope, "a number >= 0 or None"))


def _check_flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(invalid_value_message(name, value, "True or False"))


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True, eq=False)
class PrefixOutput:
    """A pipeline's stateless prefix computed on all samples of a plan (:func:`compute_features`).

    Attributes
    ----------
    Z : ndarray, sparse matrix or array of Sample, or None
        One row per sample of the plan (the samples themselves when the pipeline has no
        stateless prefix); ``None`` when the prefix failed.
    preprocess_s, features_s : float
        Seconds spent in the image steps and in the feature extractors of the prefix.
    error, traceback : str or None
        Why the prefix failed (``on_error="record"``): every fold of the pipeline fails with it.
    """

    Z: object
    preprocess_s: float = 0.0
    features_s: float = 0.0
    error: str | None = None
    traceback: str | None = None

    @property
    def timings(self):
        """``{"preprocess_s", "features_s"}``."""
        return {"preprocess_s": self.preprocess_s, "features_s": self.features_s}


@dataclass(frozen=True, eq=False)
class BenchmarkPlan:
    """What a benchmark evaluates, decided before any model is fitted (:func:`plan`).

    Attributes
    ----------
    dataset : Dataset
        The dataset as given (name, root, skipped files, info).
    samples : ndarray of Sample
        The samples evaluated (without the images :attr:`excluded`).
    y : ndarray
        Label per sample; ``labels`` the sorted classes, ``pos_label`` the positive class of a
        binary problem (else ``None``).
    patient_groups : list
        Patient / group id per sample as given (``None``: no group).
    duplicate_clusters : ndarray or None
        Duplicate-cluster id per sample (``None`` when duplicates were not searched);
        ``duplicates_method`` says how they were found.
    groups : ndarray
        The group of each sample in the splits: patients and duplicate clusters merged.
    splits : list of Split
        The outer splits every pipeline is evaluated on (guarded: degenerate folds are refused);
        ``structure`` describes what the grouping left (independent groups, fold sizes).
    pipelines, param_grids : dict
        Resolved pipelines (recipe names built) and their grids (nested CV).
    prefixes, suffixes : dict
        Per pipeline: the stateless prefix (a Pipeline, or ``None``) and the learned suffix.
    cv, inner_cv : CVSpec
        Outer and inner (tuning) cross-validation; ``inner_scoring`` the tuning score.
    estimator_hashes : dict
        Hash of each pipeline's parameters, with feature-cache locations reset (they never change results).
    exclusions : dict
        Sample index -> reasons, for images found unusable but not yet excluded (the duplicate
        search could not read them); :func:`compute_features` excludes them.
    excluded : list of dict
        Images left out of every pipeline: ``index`` (in :attr:`dataset`), ``name``, ``path``, ``reason``.
    features : dict or None
        :class:`PrefixOutput` per pipeline once :func:`compute_features` ran, else ``None``.
    split_fingerprint, data_id : str
        Hashes of the splits (with labels and groups) and of the sample keys.
    config_hashes : dict
        Configuration hash per pipeline: what must match for a stored fold to be reused.
    descriptions : dict
        Per pipeline: estimator, class, parameters, prefix and suffix steps, grid, ``config_hash``.
    experiment : dict
        The experiment's identity as recorded in ``experiment.json`` (``id`` included).
    """

    dataset: Dataset
    samples: np.ndarray
    y: np.ndarray
    labels: list
    pos_label: object
    patient_groups: list
    duplicate_clusters: np.ndarray | None
    duplicates_method: str
    groups: np.ndarray
    splits: list
    structure: dict
    pipelines: dict
    param_grids: dict
    prefixes: dict
    suffixes: dict
    cv: CVSpec
    inner_cv: CVSpec
    inner_scoring: object
    estimator_hashes: dict
    exclusions: dict
    excluded: list
    features: dict | None
    split_fingerprint: str
    data_id: str
    config_hashes: dict
    descriptions: dict
    experiment: dict

    def __repr__(self):
        return (f"BenchmarkPlan({self.dataset.name!r}: {len(self.samples)} samples, {len(self.splits)} splits, "
                f"pipelines {list(self.pipelines)}, experiment {self.experiment['id']})")


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _num(value):
    return float("nan") if value is None else float(value)


# ----------------------------------------------------------------------------- inputs
def _as_dataset(dataset):
    if isinstance(dataset, Dataset):
        return dataset
    if isinstance(dataset, tuple) and len(dataset) in (2, 3):
        X, y = dataset[0], dataset[1]
        groups = dataset[2] if len(dataset) == 3 else None
        samples = as_samples(X)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(samples):
            raise ValueError(f"dataset: y must be 1-D with one label per sample ({len(samples)}); got shape {y.shape}")
        if groups is not None:
            groups = list(groups)
            if len(groups) != len(samples):
                raise ValueError(f"dataset: groups has {len(groups)} entries for {len(samples)} samples")
        items = [s.replace(label=_plain(y[i]), group=(s.group if groups is None else groups[i]))
                 for i, s in enumerate(samples)]
        return Dataset(items, name="dataset")
    if isinstance(dataset, (str, Path)):
        raise TypeError(
            f"dataset={str(dataset)!r}: pass a featurepipe.dataset.Dataset (load folders and manifests with "
            "featurepipe.datasets) or a tuple (X, y[, groups])"
        )
    raise TypeError(f"dataset must be a featurepipe Dataset or a tuple (X, y[, groups]); got {type(dataset).__name__}")


def _check_pipelines(pipelines):
    # A list of recipe names stands for {name: featurepipe.recipes.make(name)}.
    if isinstance(pipelines, (list, tuple)) and pipelines and all(isinstance(p, str) for p in pipelines):
        pipelines = {p: p for p in pipelines}
    if not isinstance(pipelines, dict) or not pipelines:
        raise TypeError("pipelines must be a non-empty dict {name: estimator or recipe name}")
    pipelines = dict(pipelines)
    for name, est in pipelines.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"pipeline names must be non-empty strings; got {name!r}")
        if isinstance(est, str):
            from .. import recipes

            if est not in recipes.RECIPES:
                raise TypeError(f"pipelines[{name!r}] is the string {est!r}, which is not a recipe name "
                                f"(choose from {list(recipes.RECIPES)}); pass an estimator object or a recipe name")
            pipelines[name] = est = recipes.make(est)
        if not (hasattr(est, "fit") and hasattr(est, "predict") and hasattr(est, "get_params")):
            raise TypeError(f"pipelines[{name!r}] is a {type(est).__name__}, not a scikit-learn classifier "
                            "(it needs fit, predict and get_params)")
    return dict(pipelines)


def _check_grids(param_grids, pipelines):
    if param_grids is None:
        return {}
    if not isinstance(param_grids, dict):
        raise TypeError(f"param_grids must be a dict {{pipeline name: grid}}; got {type(param_grids).__name__}")
    unknown = sorted(set(param_grids) - set(pipelines))
    if unknown:
        raise ValueError(f"param_grids names pipelines {unknown} that are not in pipelines {sorted(pipelines)}")
    out = {}
    for name, grid in param_grids.items():
        if grid is None:
            continue
        grids = grid_list(grid)
        if not grids or not all(grids):
            raise ValueError(f"param_grids[{name!r}] must be a non-empty dict or list of non-empty dicts")
        out[name] = grid
    return out


def _estimator_hash(estimator):
    try:
        return joblib.hash(clone(estimator, safe=False))
    except Exception as exc:  # unpicklable parameters: fall back on the full textual description
        warnings.warn(f"could not hash {type(estimator).__name__} by value ({exc}); resuming keys on its repr",
                      UserWarning, stacklevel=3)
        return joblib.hash(_full_repr(estimator))


def _without_cache_location(estimator):
    """A clone of ``estimator`` whose feature extractors all use the default cache (``cache=True``)."""
    try:
        return set_feature_cache(clone(estimator), True)
    except (TypeError, AttributeError, ValueError):  # not a scikit-learn estimator: described as given
        return estimator


def _full_repr(estimator):
    from sklearn import config_context

    with config_context(print_changed_only=False):
        return repr(estimator)


# ----------------------------------------------------------------------------- stage 1: plan
def plan(dataset, pipelines, *, cv=5, param_grids=None, inner_cv=3, inner_scoring="balanced_accuracy",
         pos_label=None, duplicates="near", duplicate_threshold=None, on_error="skip"):
    """Stage 1: resolve the inputs, group the samples and fix the splits, before any feature is computed.

    Validates the dataset, pipelines (recipe names are built), grids and CV; finds duplicate
    clusters and merges them with the patient groups; makes the outer splits and refuses
    degenerate ones (see :func:`run_benchmark`, ``duplicate_threshold``); hashes the
    configuration of every pipeline (the experiment's identity). Parameters are those of
    :func:`run_benchmark` with the same names (``on_error="raise"`` makes an unreadable image
    stop the duplicate search; otherwise it is marked for exclusion).

    Returns
    -------
    BenchmarkPlan

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.random.default_rng(0).random((12, 4, 4)); y = [0, 1] * 6  # twelve 4x4 images
    >>> p = plan((X, y, [f"patient{i // 2}" for i in range(12)]), {"lr": LogisticRegression()}, cv=3,
    ...          duplicates="none")
    >>> [len(s.test) for s in p.splits], p.labels, p.pos_label
    ([4, 4, 4], [0, 1], 1)
    >>> all(set(p.groups[s.train]).isdisjoint(p.groups[s.test]) for s in p.splits)  # patients on one side
    True
    """
    ds = _as_dataset(dataset)
    pipelines = _check_pipelines(pipelines)
    grids = _check_grids(param_grids, pipelines)
    spec = CVSpec.coerce(cv)
    inner_spec = CVSpec.coerce(inner_cv, name="inner_cv")
    inner_spec = CVSpec(inner_spec.n_splits, 1, spec.random_state)
    check_choice("on_error", on_error, _ON_ERROR)

    samples = ds.samples
    y, labels, pos_label = _labels(samples, pos_label)
    clusters, dup_method, exclusions = _duplicate_clusters(samples, duplicates, duplicate_threshold, on_error)
    prefixes, suffixes = {}, {}
    for name, est in pipelines.items():
        if isinstance(est, Pipeline):
            prefixes[name], suffixes[name] = split_stateless_prefix(est, grids.get(name))
        else:
            prefixes[name], suffixes[name] = None, est
    # Where features are cached never changes them: the experiment is identified (and described)
    # with every feature cache reset, so `--cache DIR` or `--no-cache` resumes the same run.
    hashes = {name: _estimator_hash(_without_cache_location(est)) for name, est in pipelines.items()}
    return _make_plan(
        dataset=ds, samples=samples, y=y, labels=labels, pos_label=pos_label,
        patient_groups=[s.group for s in samples], duplicate_clusters=clusters, duplicates_method=dup_method,
        pipelines=pipelines, param_grids=grids, prefixes=prefixes, suffixes=suffixes, cv=spec, inner_cv=inner_spec,
        inner_scoring=inner_scoring, estimator_hashes=hashes, exclusions=exclusions, excluded=[], features=None)


def _labels(samples, pos_label):
    """Labels per sample, the sorted classes and the positive class (checked)."""
    y = np.array([_plain(s.label) for s in samples], dtype=object)
    labels = sorted(set(y.tolist()), key=lambda v: (str(type(v)), v))
    y = np.array(y.tolist())
    if len(labels) < 2:
        raise ValueError(f"the dataset has a single class {labels}; a classification benchmark needs two or more")
    if pos_label is not None:
        if len(labels) != 2:
            raise ValueError(f"pos_label={pos_label!r} only applies to binary problems; classes are {labels}")
        if pos_label not in labels:
            raise ValueError(f"pos_label={pos_label!r} is not one of the classes {labels}")
    elif len(labels) == 2:
        pos_label = labels[1]
    return y, labels, pos_label


def _duplicate_clusters(samples, duplicates, duplicate_threshold, on_error):
    """Duplicate-cluster id per sample (or ``None``), how they were found, and unreadable images."""
    exclusions = {}  # sample index -> reasons it could not be processed
    if duplicate_threshold is not None and duplicates != "near":
        raise ValueError(f"duplicate_threshold={duplicate_threshold!r} only applies to duplicates='near'; got "
                         f"duplicates={duplicates!r}")
    if isinstance(duplicates, str):
        check_choice("duplicates", duplicates, _DUPLICATE_METHODS)
    if duplicates in ("near", "exact"):
        kwargs = {} if duplicate_threshold is None else {"threshold": duplicate_threshold}
        report = find_duplicates(samples, method=duplicates, on_error="raise" if on_error == "raise" else "report",
                                 **kwargs)
        for i, _, reason in report.unreadable:
            exclusions.setdefault(int(i), []).append(f"duplicate detection: {reason}")
        return np.asarray(report.cluster_ids, dtype=object), report.description, exclusions
    if duplicates is None or (isinstance(duplicates, str) and duplicates == "none"):
        return None, "none", exclusions
    if hasattr(duplicates, "cluster_ids"):  # a featurepipe.duplicates.DuplicateReport
        clusters = np.asarray(duplicates.cluster_ids, dtype=object)
        if clusters.shape != (len(samples),):
            raise ValueError(f"duplicates: the report covers {len(clusters)} samples but the dataset has "
                             f"{len(samples)}")
        return clusters, f"duplicate report: {duplicates.description}", exclusions
    clusters = np.asarray(duplicates, dtype=object)
    if clusters.shape != (len(samples),):
        raise ValueError(f"duplicates must give one cluster id per sample ({len(samples)}); "
                         f"got shape {clusters.shape}")
    return clusters, "user-supplied cluster ids", exclusions


def _make_plan(**parts):
    """A :class:`BenchmarkPlan` from its inputs: grouped, guarded splits and the identity hashes.

    Called by :func:`plan` and again by :func:`compute_features` when images are excluded (other
    samples: other splits, other identity).
    """
    samples, y = parts["samples"], parts["y"]
    patient_or_self = [g if g is not None else f"sample:{s.key}" for g, s in zip(parts["patient_groups"], samples)]
    clusters = parts["duplicate_clusters"]
    merged = merge_groups(patient_or_self, clusters) if clusters is not None else merge_groups(patient_or_self)
    # Merged groups named after their smallest patient id: without merging these are the patient ids
    # themselves, so the folds equal RepeatedStratifiedGroupKFold's on the user's groups.
    merged = group_labels(patient_or_self, merged)
    splits, structure = _guarded_splits(samples, y, merged, parts["cv"])
    fingerprint = splits_fingerprint(splits, y, merged)
    data_id = joblib.hash([s.key for s in samples])
    grids, inner_spec, inner_scoring = parts["param_grids"], parts["inner_cv"], parts["inner_scoring"]

    # configuration per pipeline (what must match for a finished fold to be reused)
    configs, descriptions = {}, {}
    for name, est in parts["pipelines"].items():
        prefix, suffix = parts["prefixes"][name], parts["suffixes"][name]
        est = _without_cache_location(est)
        configs[name] = joblib.hash({
            "featurepipe": __version__, "schema": SCHEMA, "estimator": parts["estimator_hashes"][name],
            "grid": repr(grids.get(name)), "inner_cv": inner_spec.as_dict() if name in grids else None,
            "inner_scoring": repr(inner_scoring) if name in grids else None, "splits": fingerprint,
            "data": data_id, "labels": repr(parts["labels"]), "pos_label": repr(parts["pos_label"]),
        })[:16]
        descriptions[name] = {
            "estimator": repr(est),
            "class": f"{type(est).__module__}.{type(est).__qualname__}",
            "params": to_jsonable({k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)
                                   for k, v in est.get_params(deep=True).items()}),
            "stateless_prefix": [] if prefix is None else [n for n, _ in prefix.steps],
            "suffix": [n for n, _ in suffix.steps] if isinstance(suffix, Pipeline) else [type(suffix).__name__],
            "param_grid": to_jsonable(grids.get(name)) if name in grids else None,
            "config_hash": configs[name],
        }
    experiment = {
        "data": data_id, "n_samples": len(samples), "splits": fingerprint, "cv": parts["cv"].as_dict(),
        "duplicates": parts["duplicates_method"], "pipelines": dict(configs),
    }
    experiment["id"] = joblib.hash(experiment)[:16]
    return BenchmarkPlan(**parts, groups=merged, splits=splits, structure=structure, split_fingerprint=fingerprint,
                         data_id=data_id, config_hashes=configs, descriptions=descriptions, experiment=experiment)


# ----------------------------------------------------------------------------- split guard
def _largest_groups(samples, y, merged, n_largest=3, n_names=5):
    """The ``n_largest`` merged groups by size: size, class counts and a few member names."""
    values, inverse, counts = np.unique(np.asarray(merged, dtype=str), return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:n_largest]
    out = []
    for g in order:
        members = np.flatnonzero(inverse == g)
        classes = {}
        for label in y[members].tolist():
            classes[str(label)] = classes.get(str(label), 0) + 1
        out.append({"n_samples": int(counts[g]), "classes": classes,
                    "members": [samples[i].name for i in members[:n_names]]})
    return out


def _describe_groups(groups):
    return "; ".join(f"{g['n_samples']} images ({', '.join(f'{k}: {v}' for k, v in g['classes'].items())}; "
                     f"e.g. {', '.join(g['members'])})" for g in groups)


_SPLIT_OPTIONS = ("Options: duplicates='exact' or 'none' (CLI --duplicates exact|none) if the duplicate "
                  "clusters join distinct images; a higher duplicate_threshold (--duplicate-threshold) for "
                  "stricter verification of near duplicates; fewer folds (cv / --splits); or check the patient ids.")


def _guarded_splits(samples, y, merged, spec):
    """The outer splits, with what the grouping left; refuses degenerate folds.

    Refused (``ValueError`` listing the largest groups and the options):
    fewer independent groups than folds, a class in fewer groups than folds,
    or a test fold larger than :data:`MAX_FOLD_RATIO` times the mean test fold.

    Returns
    -------
    splits, structure
        ``structure``: ``n_independent_groups``, ``largest_groups``,
        ``fold_sizes`` (repeat, fold, n_train, n_test per split), ``max_test_over_mean``.
    """
    largest = _largest_groups(samples, y, merged)
    n_groups = len(np.unique(np.asarray(merged, dtype=str)))
    head = (f"{n_groups} independent groups for {len(samples)} images after merging patients and duplicate "
            f"clusters; largest: {_describe_groups(largest)}")
    try:
        splits = make_splits(y, merged, spec)
    except ValueError as exc:
        raise ValueError(f"cannot split the data into {spec.n_splits} grouped folds: {exc} {head}. "
                         f"{_SPLIT_OPTIONS}") from None
    sizes = [{"repeat": s.repeat, "fold": s.fold, "n_train": len(s.train), "n_test": len(s.test)} for s in splits]
    mean_test = len(samples) / spec.n_splits
    worst = max(sizes, key=lambda f: f["n_test"])
    if worst["n_test"] > MAX_FOLD_RATIO * mean_test:
        listing = ", ".join(f"{f['n_train']}/{f['n_test']}" for f in sizes)
        raise ValueError(
            f"degenerate folds: repeat {worst['repeat']} fold {worst['fold']} tests {worst['n_test']} images, more "
            f"than twice the mean test fold ({mean_test:.1f}); train/test images per fold: {listing}. {head}. "
            f"{_SPLIT_OPTIONS}")
    structure = {"n_independent_groups": n_groups, "largest_groups": largest, "fold_sizes": sizes,
                 "max_test_over_mean": worst["n_test"] / mean_test}
    return splits, structure


# ----------------------------------------------------------------------------- stage 2: features (stateless prefix)
def compute_features(plan, *, n_jobs=None, backend=None, scheduler=None, progress=True, on_error="skip",
                     feature_chunk_size=64):
    """Stage 2: every pipeline's stateless prefix, computed once on all samples of ``plan``.

    Image steps and feature extractors learn nothing, so they run once per image for the whole
    run; :func:`execute` fits only the learned suffix per fold. An image that fails (unreadable,
    or degenerate for a feature: a 1x1 image in GLCM, no Otsu foreground) is excluded for EVERY
    pipeline alike, together with the images the duplicate search could not read, so all are
    still compared on the same images: the returned plan then has other samples, splits and
    identity (``on_error="raise"`` stops at the first such error instead; ``"record"`` records a
    prefix that fails on every image as that pipeline's failure). Parameters are those of
    :func:`run_benchmark` with the same names (:class:`ExecutionOptions`).

    Returns
    -------
    BenchmarkPlan
        ``plan`` with :attr:`~BenchmarkPlan.features` (a :class:`PrefixOutput` per pipeline).
    """
    options = ExecutionOptions(n_jobs=n_jobs, backend=backend, scheduler=scheduler, progress=progress,
                               on_error=on_error, feature_chunk_size=feature_chunk_size)
    samples = plan.samples
    exclusions = {i: list(reasons) for i, reasons in plan.exclusions.items()}
    computed = {}  # name -> (Z_ok, ok_index, preprocess_s, features_s) or PrefixOutput of a failure
    # Feature extractors with their own n_jobs run inside the chosen joblib backend (Dask workers too).
    with _parallel_context(options.backend, options.scheduler, options.n_jobs):
        for name, prefix in plan.prefixes.items():
            if prefix is None:
                continue
            # ---- the feature engine: one call per pipeline computes its stateless prefix on all samples ----
            try:
                if options.backend == "dask":  # the workers extract their shards' features; the client gathers matrices only
                    computed_prefix = extract_on_cluster(
                        prefix, samples, int(options.feature_chunk_size), options.progress, f"{name}: features",
                        per_sample_errors=options.on_error != "raise")
                else:
                    computed_prefix = FeatureStore(prefix, chunk_size=int(options.feature_chunk_size)).transform(
                        samples, on_error="raise" if options.on_error == "raise" else "exclude",
                        progress=options.progress, desc=f"{name}: features")
                Z_ok, ok_index, errors, pre_s, feat_s = computed_prefix
                if errors and len(errors) == len(samples):
                    raise next(iter(errors.values()))  # fails on every image: the pipeline's fault, not the images'
            except Exception as exc:
                if options.on_error != "record":
                    raise
                # Every fold of this pipeline fails for the same reason; the others go on.
                trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=5))
                computed[name] = PrefixOutput(None, error=f"stateless prefix failed: {type(exc).__name__}: {exc}",
                                              traceback=trace)
                continue
            # ---- end of the feature engine call ----
            for i, exc in errors.items():
                exclusions.setdefault(i, []).append(f"{name}: {type(exc).__name__}: {exc}")
            computed[name] = (Z_ok, ok_index, pre_s, feat_s)

    keep = np.array([i for i in range(len(samples)) if i not in exclusions], dtype=np.int64)
    features = {}
    for name, out in computed.items():
        if isinstance(out, PrefixOutput):
            features[name] = out
            continue
        Z_ok, ok_index, pre_s, feat_s = out
        if exclusions:  # rows of the kept samples, in their order
            position = np.full(len(samples), -1, dtype=np.int64)
            position[ok_index] = np.arange(len(ok_index))
            Z_ok = _take(Z_ok, position[keep])
        features[name] = PrefixOutput(Z_ok, pre_s, feat_s)
    if exclusions:
        plan = _excluding(plan, exclusions, keep)
    features.update({name: PrefixOutput(plan.samples) for name, prefix in plan.prefixes.items() if prefix is None})
    return replace(plan, features={name: features[name] for name in plan.pipelines})


def _excluding(plan, exclusions, keep):
    """``plan`` without the samples of ``exclusions`` (index -> reasons), with new splits (warned, refused
    when a class has no image left)."""
    samples = plan.samples
    excluded = [{"index": i, "name": samples[i].name, "path": None if samples[i].path is None else str(samples[i].path),
                 "reason": "; ".join(exclusions[i])} for i in sorted(exclusions)]
    warnings.warn(f"{len(excluded)} image(s) excluded for every pipeline (listed in the report): "
                  + "; ".join(f"{e['name']} ({e['reason']})" for e in excluded[:5])
                  + (" ..." if len(excluded) > 5 else ""), UserWarning, stacklevel=4)
    y = plan.y[keep]
    left = sorted(set(y.tolist()), key=lambda v: (str(type(v)), v))
    if left != plan.labels:
        raise ValueError(f"after excluding {len(excluded)} image(s) that could not be processed, the classes "
                         f"{sorted(set(plan.labels) - set(left), key=str)} have no image left: "
                         + "; ".join(f"{e['name']}: {e['reason']}" for e in excluded[:10]))
    clusters = plan.duplicate_clusters
    return _make_plan(
        dataset=plan.dataset, samples=as_samples([samples[i] for i in keep]), y=y, labels=plan.labels,
        pos_label=plan.pos_label, patient_groups=[plan.patient_groups[i] for i in keep],
        duplicate_clusters=None if clusters is None else clusters[keep], duplicates_method=plan.duplicates_method,
        pipelines=plan.pipelines, param_grids=plan.param_grids, prefixes=plan.prefixes, suffixes=plan.suffixes,
        cv=plan.cv, inner_cv=plan.inner_cv, inner_scoring=plan.inner_scoring, estimator_hashes=plan.estimator_hashes,
        exclusions={}, excluded=plan.excluded + excluded, features=None)


# ----------------------------------------------------------------------------- per fold
def _final_estimator(fitted):
    est = fitted
    if isinstance(est, GridSearchCV):
        est = est.best_estimator_
    while isinstance(est, Pipeline):
        est = est.steps[-1][1]
    return est


def _history(fitted):
    hist = getattr(_final_estimator(fitted), "history_", None)
    if hist is None:
        return None
    if hasattr(hist, "history"):  # a keras.callbacks.History
        hist = hist.history
    if not isinstance(hist, dict):
        return None
    out = {str(k): [float(v) for v in np.ravel(vals)] for k, vals in hist.items()}
    # Learning-curve plots mark where fine-tuning began (KerasTransferClassifier's phase lengths).
    final = _final_estimator(fitted)
    if getattr(final, "n_fine_tune_epochs_", 0) and getattr(final, "n_head_epochs_", None) is not None:
        out["fine_tuning_start_epoch"] = [float(final.n_head_epochs_ + 1)]
    return out


def _aligned_scores(est, Z, labels):
    """Scores with one column per label (``labels`` order) and which method produced them."""
    if hasattr(est, "predict_proba"):
        raw, kind = np.asarray(est.predict_proba(Z), dtype=np.float64), "predict_proba"
    elif hasattr(est, "decision_function"):
        raw, kind = np.asarray(est.decision_function(Z), dtype=np.float64), "decision_function"
    else:
        return None, None
    classes = list(getattr(est, "classes_", labels))
    if (raw.ndim == 1 or raw.shape[1] == 1) and len(classes) != 2:
        raise ValueError(f"{kind} returned one score column for {len(classes)} classes")
    raw = score_columns(raw, kind="proba" if kind == "predict_proba" else "decision")
    out = np.full((raw.shape[0], len(labels)), 0.0 if kind == "predict_proba" else raw.min() - 1.0)
    index = {label: j for j, label in enumerate(labels)}
    for j, label in enumerate(classes):
        out[:, index[_plain(label)]] = raw[:, j]
    return out, kind


def _evaluate_fold(name, config, estimator, grid, Z, y, split, labels, pos_label, inner_spec, inner_groups,
                   inner_scoring, on_error):
    """Fit on the training part of one split, predict its test part, score it: a :class:`FoldResult`."""
    fold = dict(pipeline=name, repeat=split.repeat, fold=split.fold, config=config, n_train=len(split.train),
                n_test=len(split.test), train_index=split.train, test_index=split.test)
    try:
        Z_train, Z_test = _take(Z, split.train), _take(Z, split.test)
        y_train, y_test = y[split.train], y[split.test]
        start = time.perf_counter()
        if grid is not None:
            inner = make_splits(y_train, inner_groups[split.train], inner_spec)
            model = GridSearchCV(clone(estimator), grid, scoring=inner_scoring, refit=True,
                                 cv=[(s.train, s.test) for s in inner], n_jobs=1, error_score="raise")
        else:
            model = clone(estimator)
        model.fit(Z_train, y_train)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        y_pred = np.asarray(model.predict(Z_test))
        scores, kind = _aligned_scores(model, Z_test, labels)
        predict_s = time.perf_counter() - start
        result = compute_metrics(y_test, y_pred, scores, labels=labels, pos_label=pos_label)
    except Exception as exc:
        if on_error != "record":
            if not isinstance(exc, ValueError):
                raise
            # Name the pipeline, the fold and what its training part held: a bare estimator error
            # ("less than 3 examples for at least one class") does not say where or why.
            counts = ", ".join(f"{label}: {int(np.sum(y[split.train] == label))}" for label in labels)
            raise ValueError(f"pipeline {name!r}, repeat {split.repeat} fold {split.fold}: {type(exc).__name__}: "
                             f"{exc} (training part: {len(split.train)} images; {counts}). Inner cross-validation "
                             "(calibration, grids) needs several images of every class in each training part: "
                             "use fewer outer folds, or more data.") from exc
        return FoldResult(**fold, status="failed", error=f"{type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc(limit=5))
    return FoldResult(
        **fold, status="ok",
        # JSON values from the start: a fold computed now and one read back from folds.jsonl look alike.
        metrics=to_jsonable({m: result[m] for m in METRIC_NAMES}), per_class=to_jsonable(result["per_class"]),
        confusion_matrix=to_jsonable(result["confusion_matrix"]),
        y_true=[_plain(v) for v in y_test], y_pred=[_plain(v) for v in y_pred], y_score=scores, score_kind=kind,
        timings={"fit_s": fit_s, "predict_s": predict_s},
        best_params=(None if grid is None else {k: repr(v) if not isinstance(v, (int, float, str, bool, type(None)))
                                                else v for k, v in model.best_params_.items()}),
        inner_best_score=None if grid is None else float(model.best_score_),
        history=_history(model),
    )


# ----------------------------------------------------------------------------- stage 3: execute
def execute(plan, *, output_dir=None, resume=True, overwrite=False, n_jobs=None, backend=None, scheduler=None,
            progress=True, on_error="skip"):
    """Stage 3: fit every pipeline's learned suffix on every outer training part and score its test part.

    ``plan`` must come from :func:`compute_features` (it carries the features). With
    ``output_dir``, the folder is claimed for the plan's experiment, folds already in its
    ``folds.jsonl`` are verified and reused (``resume``), and every fold is appended as it
    finishes. Parameters are those of :func:`run_benchmark` with the same names.

    Returns
    -------
    list of FoldResult
        One per pipeline and split, ordered by pipeline (as in ``plan.pipelines``), repeat, fold.
    """
    options = ExecutionOptions(n_jobs=n_jobs, backend=backend, scheduler=scheduler, progress=progress,
                               on_error=on_error)
    _check_flag("resume", resume)
    _check_flag("overwrite", overwrite)
    if plan.features is None:
        raise ValueError("execute(plan): the plan has no features yet; pass the plan returned by "
                         "compute_features(plan)")
    out_dir = None if output_dir is None else Path(output_dir)
    with contextlib.ExitStack() as stack:
        store, done = None, {}
        if out_dir is not None:
            stack.enter_context(_folder_lock(out_dir))
            store, done = _open_store(plan, out_dir, resume=resume, overwrite=overwrite)
        results = dict(done)
        if done:
            print(f"resuming: {len(done)} of {len(plan.splits) * len(plan.pipelines)} folds done "
                  f"(from {out_dir / 'folds.jsonl'})", file=sys.stderr)
        with _parallel_context(options.backend, options.scheduler, options.n_jobs):
            for name in plan.pipelines:
                pending = [s for s in plan.splits if (name, s.repeat, s.fold) not in done]
                for fold in _run_pipeline(plan, name, pending, store, options):
                    results[(name, fold.repeat, fold.fold)] = fold
    order = list(plan.pipelines)
    return sorted(results.values(), key=lambda f: (order.index(f.pipeline), f.repeat, f.fold))


def _run_pipeline(plan, name, pending, store, options):
    """The fold results of ``pending`` splits of pipeline ``name`` (appended to ``store`` as they finish)."""
    if not pending:
        return
    prefix = plan.features[name]
    config = plan.config_hashes[name]
    if prefix.error is not None:
        warnings.warn(f"pipeline {name!r}: {prefix.error}", UserWarning, stacklevel=4)
        for split in pending:
            fold = FoldResult(name, split.repeat, split.fold, config, len(split.train), len(split.test),
                              status="failed", train_index=split.train, error=prefix.error,
                              traceback=prefix.traceback)
            if store is not None:
                store.append(fold.to_record())
            yield fold
        return
    Z = prefix.Z
    if store is not None:
        store.append({"kind": "prefix", "schema": SCHEMA, "pipeline": name, "config": config,
                      "preprocess_s": prefix.preprocess_s, "features_s": prefix.features_s,
                      "n_samples": len(plan.samples), "steps": plan.descriptions[name]["stateless_prefix"],
                      "n_features": int(Z.shape[1]) if getattr(Z, "ndim", 1) == 2 else None})
    tasks = (delayed(_evaluate_fold)(name, config, plan.suffixes[name], plan.param_grids.get(name), Z, plan.y, split,
                                     plan.labels, plan.pos_label, plan.inner_cv, plan.groups, plan.inner_scoring,
                                     options.on_error)
             for split in pending)
    n_splits = len(plan.splits)
    with tqdm(total=n_splits, initial=n_splits - len(pending), desc=f"{name}: folds", unit="fold",
              disable=not options.progress, leave=False) as bar:
        for fold in Parallel(n_jobs=options.n_jobs, return_as="generator_unordered")(tasks):
            fold.feature_timings = prefix.timings
            if store is not None:
                store.append(fold.to_record())
            if not fold.ok:
                warnings.warn(f"pipeline {name!r} failed on repeat {fold.repeat} fold {fold.fold}: {fold.error}",
                              UserWarning, stacklevel=4)
            bar.update(1)
            yield fold


def _open_store(plan, out_dir, *, resume, overwrite):
    """Claim ``out_dir`` for the plan's experiment; the store and the verified finished folds (resume).

    Returns
    -------
    store, done
        The :class:`FoldStore` of ``out_dir/folds.jsonl`` and ``{(pipeline, repeat, fold): FoldResult}``
        of the stored folds that pass :func:`~featurepipe.benchmark.store.check_fold_record`.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    _claim_output_dir(out_dir, plan.experiment, resume=resume, overwrite=overwrite)
    store = FoldStore(out_dir / "folds.jsonl")
    if not resume:
        return store, {}
    split_of = {s.id: s for s in plan.splits}
    prefix_timings, accepted, rejected = {}, {}, {}
    for rec in store.load():
        name = rec.get("pipeline")
        if name not in plan.config_hashes or rec.get("config") != plan.config_hashes[name]:
            continue
        if rec.get("kind") == "prefix":
            prefix_timings[name] = {"preprocess_s": rec.get("preprocess_s"), "features_s": rec.get("features_s")}
        elif rec.get("kind") == "fold" and rec.get("status") == "ok":
            split = split_of.get((rec.get("repeat"), rec.get("fold")))
            if split is None:
                continue
            why = check_fold_record(rec, test_index=split.test, y_true=plan.y[split.test], labels=plan.labels,
                                    pos_label=plan.pos_label)
            if why is None:
                accepted[(name, split.repeat, split.fold)] = (rec, split)
            else:
                rejected[(name, split.repeat, split.fold)] = why
    rejected = {k: v for k, v in rejected.items() if k not in accepted}
    if rejected:
        detail = "; ".join(f"{n} repeat {r} fold {f}: {why}" for (n, r, f), why in sorted(rejected.items()))
        warnings.warn(f"{len(rejected)} record(s) of folds.jsonl are inconsistent or incomplete and their "
                      f"folds run again: {detail}", UserWarning, stacklevel=4)
    done = {key: FoldResult.from_record(rec, train_index=split.train, resumed=True,
                                        feature_timings=prefix_timings.get(key[0]))
            for key, (rec, split) in accepted.items()}
    return store, done


# ----------------------------------------------------------------------------- output folder
@contextlib.contextmanager
def _folder_lock(out_dir):
    """The output folder's lock, taken once per call stack: the stages inside :func:`run_benchmark`
    share the lock it holds, a stage called on its own takes it."""
    key = str(Path(out_dir).resolve())
    if key in _HELD_LOCKS.get():
        yield
        return
    with output_lock(out_dir):
        token = _HELD_LOCKS.set(_HELD_LOCKS.get() | {key})
        try:
            yield
        finally:
            _HELD_LOCKS.reset(token)


_HELD_LOCKS = contextvars.ContextVar("featurepipe_benchmark_held_locks", default=frozenset())


def _take(Z, index):
    if isinstance(Z, np.ndarray) or sp.issparse(Z):
        return Z[index]
    return [Z[i] for i in index]


def _claim_output_dir(out_dir, experiment, *, resume, overwrite):
    """Make ``out_dir`` hold ``experiment``: refuse another one, clear it on ``overwrite``, record it."""
    previous = read_experiment(out_dir)
    has_results = any((out_dir / name).exists() for name in ("folds.jsonl", "results.json"))
    if overwrite or (not resume and previous is not None and previous["id"] == experiment["id"]):
        clear_outputs(out_dir)
    elif previous is None and has_results:
        raise ValueError(
            f"output folder {str(out_dir)!r} holds benchmark results without a recorded configuration "
            "(experiment.json): choose another output folder, or pass overwrite=True (CLI --overwrite) to replace "
            "them")
    elif previous is not None and previous["id"] != experiment["id"]:
        raise ValueError(
            f"output folder {str(out_dir)!r} holds another experiment "
            f"({_experiment_difference(previous, experiment)}); "
            "choose another output folder, or pass overwrite=True (CLI --overwrite) to delete its results and "
            "start this one")
    write_experiment(out_dir, experiment)


def _experiment_difference(old, new):
    parts = []
    old_p, new_p = old.get("pipelines", {}), new["pipelines"]
    added = sorted(set(new_p) - set(old_p))
    removed = sorted(set(old_p) - set(new_p))
    changed = sorted(n for n in set(old_p) & set(new_p) if old_p[n] != new_p[n])
    if added:
        parts.append(f"pipelines added: {added}")
    if removed:
        parts.append(f"pipelines missing: {removed}")
    if changed:
        parts.append(f"pipelines configured differently: {changed}")
    if old.get("data") != new["data"]:
        parts.append(f"other images ({old.get('n_samples')} before, {new['n_samples']} now)")
    if old.get("cv") != new["cv"]:
        parts.append(f"cv {old.get('cv')} before, {new['cv']} now")
    if old.get("duplicates") != new["duplicates"]:
        parts.append(f"duplicates {old.get('duplicates')!r} before, {new['duplicates']!r} now")
    if old.get("splits") != new["splits"] and not parts:
        parts.append("other splits (labels or groups changed)")
    return "; ".join(parts) or "another configuration"


# ----------------------------------------------------------------------------- stage 4: summarise
def summarise(plan, fold_results, *, metrics=None, rank_by="mcc", rope=0.01, confidence=0.95, n_jobs=None,
              backend=None):
    """Stage 4: statistics of the fold results, the leakage report and the run's description.

    The per-fold metrics come from the tidy table (:func:`~featurepipe.benchmark.results.results_table`,
    also :attr:`BenchmarkResult.table`): mean ± std with confidence intervals per pipeline and
    metric (Nadeau–Bengio corrected with the real fold sizes), per-class one-vs-rest summaries,
    metrics of the pooled out-of-fold predictions, paired comparisons between pipelines, and the
    leakage report (whose warnings are also issued). ``metrics``, ``rank_by``, ``rope`` and
    ``confidence`` are those of :func:`run_benchmark` (:class:`SummaryOptions`); ``n_jobs`` and
    ``backend`` are only recorded in ``result.config`` (how the folds ran).

    Returns
    -------
    BenchmarkResult
        Not yet written anywhere (:func:`write_report`).
    """
    options = SummaryOptions(metrics=metrics, rank_by=rank_by, rope=rope, confidence=confidence)
    order = list(plan.pipelines)
    folds = sorted(fold_results, key=lambda f: (order.index(f.pipeline), f.repeat, f.fold))
    records = [f.to_record() for f in folds]
    table = results_table(records)
    # Nadeau-Bengio correction with the real size of every fold (grouped folds are unequal).
    ratio_of_split = {s.id: len(s.test) / len(s.train) for s in plan.splits}
    split_ratios = np.array([ratio_of_split[s.id] for s in plan.splits])

    summary, timings, per_class, pooled, by_split = {}, {}, {}, {}, {}
    for name in order:
        recs = [r for r in records if r["pipeline"] == name and r["status"] == "ok"]  # by (repeat, fold)
        values = table[(table["pipeline"] == name) & (table["status"] == "ok")].pivot(
            index=["repeat", "fold"], columns="metric", values="value")  # one row per finished fold, sorted
        by_split[name] = values
        rec_ratios = np.array([ratio_of_split[split_id] for split_id in values.index])
        summary[name] = {m: summarize(values[m].tolist() if m in values else [], test_train_ratio=rec_ratios,
                                      confidence=options.confidence, bounds=METRIC_RANGES[m]) for m in METRIC_NAMES}
        per_class[name] = {
            str(label): {m: summarize([_num(r["per_class"][str(label)].get(m)) for r in recs],
                                      test_train_ratio=rec_ratios, confidence=options.confidence, bounds=(0.0, 1.0))
                         for m in PER_CLASS_METRICS}
            for label in plan.labels
        }
        timings[name] = _timings(recs, _feature_timings([f for f in folds if f.pipeline == name]), len(plan.samples))
        pooled[name] = _pooled_metrics(recs, plan.labels, plan.pos_label)
    comparisons = {}
    compared = [options.rank_by] + [m for m in options.metrics if m in ("mcc", "roc_auc", "accuracy")]
    for metric in dict.fromkeys(compared):
        scores = {}
        for name in order:
            fold_values = dict(zip(by_split[name].index, by_split[name][metric])) if metric in by_split[name] else {}
            scores[name] = np.array([fold_values.get(s.id, np.nan) for s in plan.splits])
        comparisons[metric] = pairwise_comparisons(scores, test_train_ratio=split_ratios, rope=options.rope)

    leak = _leakage(plan, records)
    spec = plan.cv
    config = {
        "cv": spec.as_dict(), "cv_description": (
            f"{spec.n_repeats} × stratified grouped {spec.n_splits}-fold (groups: patients + duplicate clusters)"),
        "inner_cv": plan.inner_cv.n_splits, "inner_scoring": repr(plan.inner_scoring),
        "metrics": list(options.metrics), "rank_by": options.rank_by, "pos_label": plan.pos_label,
        "duplicates": plan.duplicates_method, "confidence": options.confidence,
        "ci_method": CI_LABEL, "test": NB_TEST_LABEL, "multiple_comparisons": "Holm over all pairs of pipelines",
        "rope": options.rope, "test_train_ratio": float(split_ratios.mean()), "test_train_ratio_note": (
            "mean over the folds of n_test / n_train (real fold sizes)"),
        "fold_sizes": plan.structure["fold_sizes"], "n_jobs": n_jobs, "backend": backend or "joblib default",
        "split_fingerprint": plan.split_fingerprint, "resumed_folds": sum(f.resumed for f in folds),
    }
    return BenchmarkResult(
        dataset=_dataset_description(plan), config=config, pipelines=plan.descriptions,
        splits=[{"repeat": s.repeat, "fold": s.fold, "train": s.train.tolist(), "test": s.test.tolist()}
                for s in plan.splits],
        folds=records, summary=summary, timings=timings, comparisons=comparisons, leakage=leak,
        versions=package_versions(), per_class=per_class, pooled=pooled,
    )


def _dataset_description(plan):
    """``result.dataset``: name, size, classes, groups, excluded and skipped images, synthetic or not."""
    merged_counts = np.unique(np.asarray(plan.groups, dtype=str), return_counts=True)[1]
    ds, patient, y = plan.dataset, plan.patient_groups, plan.y
    return {
        "name": ds.name, "n_samples": len(plan.samples), "root": ds.root,
        "class_counts": {str(label): int(np.sum(y == label)) for label in plan.labels},
        "excluded": plan.excluded,
        "labels": plan.labels, "pos_label": plan.pos_label,
        "task": "binary" if len(plan.labels) == 2 else "multi-class",
        "n_patient_groups": len({g for g in patient if g is not None}),
        "n_samples_without_group": sum(g is None for g in patient),
        "n_independent_groups": len(merged_counts),
        "largest_group": plan.structure["largest_groups"][0],
        "largest_groups": plan.structure["largest_groups"],
        "skipped": [list(s) for s in ds.skipped], "info": to_jsonable(ds.info),
        "synthetic": bool(ds.info.get("synthetic", False)),
    }


def _feature_timings(folds):
    """Timings of a pipeline's stateless prefix: this run's when it computed folds, else the stored run's."""
    fresh = [f.feature_timings for f in folds if not f.resumed and f.feature_timings is not None]
    stored = [f.feature_timings for f in folds if f.resumed and f.feature_timings is not None]
    return (fresh or stored or [None])[0]


def _leakage(plan, records):
    """The leakage report of the run (its warnings issued), with the mask probes."""
    probe = mask_probe_images(plan.samples)
    mask_use = {name: prefix_uses_masks(plan.prefixes[name], probe) for name in plan.pipelines}
    # "Was it cropped?": only worth decoding every mask when some pipeline reads them.
    mask_cue = (mask_cue_probe(mask_fractions(plan.samples), plan.y, plan.splits)
                if probe and any(v is True for v in mask_use.values()) else None)
    single_class = {name: single_class_predictions([r for r in records if r["pipeline"] == name])
                    for name in plan.pipelines}
    leak = leakage_report(
        plan.splits, patient_groups=plan.patient_groups, duplicate_clusters=plan.duplicate_clusters,
        duplicates_method=plan.duplicates_method, pipelines=plan.pipelines,
        prefixes={n: d["stateless_prefix"] for n, d in plan.descriptions.items()},
        tuned={n: n in plan.param_grids for n in plan.pipelines}, mask_use=mask_use, has_masks=bool(probe),
        structure=plan.structure, excluded=plan.excluded, single_class=single_class, mask_cue=mask_cue,
    )
    for message in leak["warnings"]:
        warnings.warn(f"leakage report: {message}", UserWarning, stacklevel=4)
    return leak


def _pooled_metrics(recs, labels, pos_label):
    """Metrics of all test predictions of ``recs`` (the finished folds of one pipeline) pooled together.

    Scores enter only when every fold has them (and then ROC-AUC/PR-AUC rank
    scores of different fold models together: comparable for calibrated
    probabilities, indicative for raw decision values; ``score_kinds`` says which).
    """
    if not recs:
        return {"n_predictions": 0, "n_folds": 0}
    y_true = np.array([v for r in recs for v in r["y_true"]], dtype=object)
    y_pred = np.array([v for r in recs for v in r["y_pred"]], dtype=object)
    have_scores = all(r.get("y_score") is not None for r in recs)
    scores = None
    if have_scores:
        scores = np.array([[np.nan if v is None else v for v in row] for r in recs for row in r["y_score"]],
                          dtype=np.float64)
        if not np.all(np.isfinite(scores)):
            scores = None
    result = compute_metrics(y_true.tolist(), y_pred.tolist(), scores, labels=labels, pos_label=pos_label)
    return to_jsonable({"metrics": {m: result[m] for m in METRIC_NAMES}, "per_class": result["per_class"],
                        "confusion_matrix": result["confusion_matrix"], "labels": result["labels"],
                        "n_predictions": len(y_true), "n_folds": len(recs),
                        "score_kinds": sorted({str(r.get("score_kind")) for r in recs})})


def _timings(recs, prefix_rec, n_samples):
    fit = np.array([r["time"]["fit_s"] for r in recs]) if recs else np.array([])
    pred = np.array([r["time"]["predict_s"] for r in recs]) if recs else np.array([])
    n_train = np.array([r["n_train"] for r in recs]) if recs else np.array([])
    n_test = np.array([r["n_test"] for r in recs]) if recs else np.array([])
    features_s = None if prefix_rec is None else prefix_rec.get("features_s")
    preprocess_s = None if prefix_rec is None else prefix_rec.get("preprocess_s")
    out = {
        "preprocess_s": preprocess_s,
        "preprocess_ms_per_image": None if preprocess_s is None else 1000.0 * preprocess_s / max(n_samples, 1),
        "features_s": features_s,
        "features_ms_per_image": None if features_s is None else 1000.0 * features_s / max(n_samples, 1),
        "fit_s_per_fold": float(fit.mean()) if len(fit) else None,
        "fit_ms_per_training_image": float(1000.0 * fit.sum() / n_train.sum()) if len(fit) else None,
        "predict_s_per_fold": float(pred.mean()) if len(pred) else None,
        "predict_ms_per_image": float(1000.0 * pred.sum() / n_test.sum()) if len(pred) else None,
        "total_s": (preprocess_s or 0.0) + (features_s or 0.0) + float(fit.sum() + pred.sum()),
        "n_folds": len(recs),
    }
    # Per-image cost of classifying one new image: preprocessing + features + prediction.
    if out["features_ms_per_image"] is not None and out["predict_ms_per_image"] is not None:
        out["ms_per_image"] = (out["preprocess_ms_per_image"] or 0.0) + out["features_ms_per_image"] + \
            out["predict_ms_per_image"]
    else:
        out["ms_per_image"] = None
    return out


# ----------------------------------------------------------------------------- stage 5: report
def write_report(result, out_dir, plan=None, *, plots=True):
    """Stage 5: write the result into ``out_dir``: plots, CSV tables, ``summary.md``, ``report.html``, ``results.json``.

    ``plan`` (the run's :class:`BenchmarkPlan`) gives the images and pipelines the figures need
    (misclassified images, intensities, class-activation maps) and the experiment recorded in
    ``experiment.json``; without it (re-rendering a loaded result: ``write_report(BenchmarkResult.load(d), d)``)
    no plots are drawn, the figures already there are linked and the folder's recorded experiment is kept.
    Sets ``result.output_dir`` and ``result.files``.

    Returns
    -------
    list of str
        The files written.
    """
    from .plots import write_plots
    from .report import write_reports

    out_dir = Path(out_dir)
    with _folder_lock(out_dir):
        result.output_dir = out_dir
        # Plots first: summary.md links them and report.html embeds them.
        files = write_plots(result, out_dir, plan.samples, plan.pipelines) if plots and plan is not None else []
        files = write_reports(result, out_dir) + files
        (out_dir / "results.json").write_text(json.dumps(result.to_dict(), indent=1, allow_nan=False) + "\n",
                                              encoding="utf-8")
        experiment = plan.experiment if plan is not None else read_experiment(out_dir)
        if experiment is not None:
            # Without the plan, the figures drawn before stay the folder's (clear_outputs deletes what is listed).
            kept = [] if plan is not None else [f for f in experiment.get("files", []) if isinstance(f, str)]
            names = list(dict.fromkeys(kept + [Path(f).name for f in files]))
            write_experiment(out_dir, {**experiment, "files": names})
    result.files = files
    return files


# ----------------------------------------------------------------------------- main entry
def run_benchmark(dataset, pipelines, *, cv=5, param_grids=None, inner_cv=3, inner_scoring="balanced_accuracy",
                  metrics=None, rank_by="mcc", pos_label=None, duplicates="near", duplicate_threshold=None,
                  output_dir=None,
                  resume=True, overwrite=False, n_jobs=None, backend=None, scheduler=None, rope=0.01,
                  confidence=0.95, plots=True, progress=True, on_error="skip", feature_chunk_size=64):
    """Evaluate several pipelines on one dataset with the same leakage-proof splits.

    Every pipeline sees the same outer splits: stratified by class, grouped
    so that all images of a patient and all copies of an image (duplicate
    clusters) stay on one side, optionally repeated. Each pipeline's
    stateless prefix (image steps and feature extractors) is computed once
    on all samples; only the learned suffix (scaler, sampler, classifier) is
    fitted per fold — the scores are those of fitting the whole pipeline
    per fold, without the waste. With a parameter grid, the suffix is tuned
    by an inner grouped CV on each outer training part (nested CV).

    The run is the composition of the stages :func:`plan` → :func:`compute_features` →
    :func:`execute` → :func:`summarise` → :func:`write_report`, which can also be called one by one.

    Parameters
    ----------
    dataset : Dataset or tuple (X, y[, groups])
        Labelled samples; ``Sample.group`` (or ``groups``) holds patient ids.
    pipelines : dict {name: estimator}
        scikit-learn / imbalanced-learn classifiers, usually pipelines that
        take samples (images) as ``X``. Resampling (SMOTE …) belongs inside an
        imblearn Pipeline so it runs on training folds only.
    cv : int, dict or CVSpec, default=5
        Outer CV: ``n_splits`` (int) or ``{"n_splits", "n_repeats", "random_state"}``.
    param_grids : dict {name: grid}, optional
        Grids (full-pipeline parameter names) for nested CV of those pipelines.
    inner_cv : int, default=3
        Folds of the inner (tuning) CV, grouped and stratified like the outer one.
    inner_scoring : str or callable, default="balanced_accuracy"
        scikit-learn scoring used to pick hyper-parameters.
    metrics : list of str, optional
        Metrics shown in the reports (default: all of
        :data:`featurepipe.metrics.METRIC_NAMES`; every metric is stored anyway).
    rank_by : str, default="mcc"
        Metric that sorts the summary table and is used for the paired comparisons.
    pos_label : label, optional
        Positive class of a binary problem (default: the second label in sorted order).
    duplicates : {"near", "exact", "none"}, DuplicateReport, array-like or None, default="near"
        How to find copies of an image, with
        :func:`featurepipe.duplicates.find_duplicates`: ``"near"``
        bit-identical pixels plus perceptual-hash candidates verified on the
        pixels (re-saved, rescaled or annotated copies; see
        ``docs/duplicates.md``); ``"exact"`` bit-identical decoded images only;
        a :class:`featurepipe.duplicates.DuplicateReport` or an array gives a
        cluster id per sample; ``"none"`` (or ``None``) disables the check
        (reported as a warning in the leakage report).
    duplicate_threshold : float, optional
        Verification threshold of near duplicates (``duplicates="near"``
        only): the least fine-detail correlation of an aligned pair, passed
        to :func:`featurepipe.duplicates.find_duplicates` as ``threshold``;
        default: its own (:data:`featurepipe.duplicates.DEFAULT_THRESHOLD`).

        After grouping, the run reports the number of independent groups, the
        largest ones and every fold's train/test size, and **refuses**
        (``ValueError`` listing the largest groups and these options) when the
        folds are degenerate: fewer independent groups than folds, a class in
        fewer groups than folds, or a test fold larger than twice the mean.
    output_dir : str or path, optional
        Where ``folds.jsonl`` (per-fold results, written as folds finish),
        ``results.json``, ``folds.csv``, ``fold_metrics.csv`` (the tidy table),
        ``summary.csv``, ``summary.md``, ``report.html`` and the plots go. Without it nothing
        is written and nothing resumes.
    resume : bool, default=True
        Skip folds already in ``output_dir/folds.jsonl`` under the same
        configuration (pipeline parameters, grid, splits, dataset, version),
        after verifying each stored record (see
        :func:`featurepipe.benchmark.store.check_fold_record`); says
        "resuming: 18 of 20 folds done" on stderr. ``False`` starts the
        same experiment over (its old result files are deleted).
    overwrite : bool, default=False
        One output folder holds one experiment: ``output_dir/experiment.json``
        records its data, splits and pipelines. A run with another
        configuration is refused (``ValueError`` saying what differs) unless
        ``overwrite=True``, which deletes the old result files and plots
        first. While a run writes the folder it holds a lock
        (``.featurepipe.lock``); a second run on the same folder is refused
        with :class:`~featurepipe.benchmark.store.OutputLockedError`.
    n_jobs : int, optional
        Folds evaluated in parallel through joblib (default 1; with the Dask
        backend, all workers).
    backend : str, optional
        joblib backend for the folds (``"loky"``, ``"threading"``, ``"dask"`` …).
        ``"dask"`` uses the running ``distributed.Client``, or connects to
        ``scheduler``. Fold tasks carry the precomputed features, so workers
        need no access to the image files; feature extractors run with their
        own ``n_jobs`` inside the same joblib context, and then the workers
        must be able to read the images.
    scheduler : str, optional
        Address of a Dask scheduler (``"tcp://host:8786"``); implies ``backend="dask"``.
    rope : float or None, default=0.01
        Region of practical equivalence of the Bayesian correlated t-test
        (``None``: skip that test).
    confidence : float, default=0.95
        Level of the confidence intervals.
    plots : bool, default=True
        Write PNG plots (needs ``output_dir``).
    progress : bool, default=True
        Show tqdm progress bars.
    on_error : {"skip", "record", "raise"}, default="skip"
        ``"skip"``: an image that cannot be processed (unreadable, or
        degenerate for a feature such as a 1×1 image in GLCM or an image
        without Otsu foreground) is excluded for **every** pipeline alike, so
        all are compared on the same images, and listed with the reason in
        the report and the leakage section; a failing fold still stops the
        run. ``"record"``: the same, and a failing fold (or a stateless
        prefix that fails on every image) is recorded as failed instead
        (reported; retried on the next run). ``"raise"``: the first error
        stops the run (finished folds stay saved).
    feature_chunk_size : int, default=64
        Samples per chunk when computing a stateless prefix (progress granularity).

    Returns
    -------
    BenchmarkResult

    Examples
    --------
    Run the folds on a Dask cluster (here a local one)::

        from distributed import Client
        from featurepipe.benchmark import run_benchmark

        with Client(n_workers=4) as client:
            result = run_benchmark(dataset, pipelines, cv={"n_splits": 5, "n_repeats": 3},
                                   backend="dask", output_dir="results")

    Notes
    -----
    Confidence intervals and paired tests use the Nadeau–Bengio corrected
    variance (see :mod:`featurepipe.stats`); p-values are Holm-adjusted over
    all pairs of pipelines. Wall time per stage: "preprocess" is the image
    steps of the stateless prefix and "features" its feature extractors
    (each computed once per image), "fit" the suffix fit per outer fold
    (with inner tuning when nested), "predict" prediction and scoring of
    the test part.

    Oversampling or augmentation done *before* the data reach the runner
    cannot be detected (see :mod:`featurepipe.benchmark.leakage`): put
    samplers inside an imblearn Pipeline instead.
    """
    execution = ExecutionOptions(n_jobs=n_jobs, backend=backend, scheduler=scheduler, progress=progress,
                                 on_error=on_error, feature_chunk_size=feature_chunk_size)
    summary_options = SummaryOptions(metrics=metrics, rank_by=rank_by, rope=rope, confidence=confidence)
    _check_flag("resume", resume)
    _check_flag("overwrite", overwrite)
    run = {"n_jobs": n_jobs, "backend": execution.backend, "scheduler": scheduler, "progress": progress,
           "on_error": on_error}
    # Each image file is decoded once for the duplicate search, every feature family and the plots
    # (bounded: see featurepipe.sample.decode_once).
    with decode_once(), contextlib.ExitStack() as stack:
        if output_dir is not None:
            stack.enter_context(_folder_lock(output_dir))
        planned = plan(dataset, pipelines, cv=cv, param_grids=param_grids, inner_cv=inner_cv,
                       inner_scoring=inner_scoring, pos_label=pos_label, duplicates=duplicates,
                       duplicate_threshold=duplicate_threshold, on_error=on_error)
        planned = compute_features(planned, feature_chunk_size=feature_chunk_size, **run)
        folds = execute(planned, output_dir=output_dir, resume=resume, overwrite=overwrite, **run)
        result = summarise(planned, folds, n_jobs=n_jobs, backend=execution.backend,
                           **{k: getattr(summary_options, k) for k in ("metrics", "rank_by", "rope", "confidence")})
        if output_dir is not None:
            write_report(result, output_dir, planned, plots=plots)
    failed = sum(not f.ok for f in folds)
    if failed and on_error == "record":
        warnings.warn(f"{failed} fold(s) failed and were recorded; see the report", UserWarning, stacklevel=2)
    return result


@contextlib.contextmanager
def _parallel_context(backend, scheduler, n_jobs):
    if backend is None:
        yield
        return
    client = None
    if backend == "dask":
        try:
            import distributed
        except ImportError:
            raise ImportError("backend='dask' needs dask[distributed]: pip install 'featurepipe[dask]'") from None
        if scheduler is not None:
            client = distributed.Client(scheduler)
        else:
            try:
                distributed.get_client()
            except ValueError:
                raise ValueError(
                    "backend='dask' needs a running distributed.Client, or scheduler='<address>'") from None
    try:
        # On a cluster the default is "as many tasks as the workers take" rather than joblib's 1.
        jobs = -1 if backend == "dask" and n_jobs is None else n_jobs
        with joblib.parallel_config(backend=backend, n_jobs=jobs):
            yield
    finally:
        if client is not None:
            client.close()

