"""The benchmark runner: many pipelines, one dataset, the same honest splits.

See :func:`run_benchmark`.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils.parallel import Parallel, delayed
from tqdm.auto import tqdm

from .._version import __version__, package_versions
from ..base import set_feature_cache
from ..cluster import extract_on_cluster
from ..dataset import Dataset
from ..feature_store import FeatureStore
from ..metrics import METRIC_NAMES, METRIC_RANGES, check_metric_names, compute_metrics
from ..sample import Sample, as_samples, decode_once
from ..search import grid_list, split_stateless_prefix
from ..stats import CI_LABEL, NB_TEST_LABEL, pairwise_comparisons, summarize
from .leakage import leakage_report, mask_cue_probe, single_class_predictions
from ..duplicates import find_duplicates
from ..model_selection import group_labels, merge_groups
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

__all__ = ["run_benchmark", "BenchmarkResult"]

_SCHEMA = 1
#: One-vs-rest metrics summarised per class.
PER_CLASS_METRICS = ("sensitivity", "specificity", "precision", "f1", "roc_auc", "pr_auc")
_DUPLICATE_METHODS = ("near", "exact", "none")
#: A test fold larger than this multiple of the mean test fold makes the splits degenerate (refused).
MAX_FOLD_RATIO = 2.0

# ----------------------------------------------------------------------------- results
@dataclass
class BenchmarkResult:
    """Everything a benchmark run produced (also written to ``output_dir``).

    Attributes
    ----------
    dataset : dict
        Name, size, class counts, groups, skipped files and ``info`` (a
        synthetic dataset says so here).
    config : dict
        CV spec, metrics, grids, positive label … (what defines the run).
    pipelines : dict
        Per pipeline: description, stateless prefix steps, suffix steps,
        configuration hash.
    splits : list of dict
        ``repeat``, ``fold``, ``train`` and ``test`` sample indices.
    folds : list of dict
        One record per pipeline and fold (metrics, predictions, timings).
    summary : dict
        ``summary[pipeline][metric]`` = :func:`featurepipe.stats.summarize` output.
    per_class : dict
        ``per_class[pipeline][label][metric]`` for the one-vs-rest metrics
        (sensitivity, specificity, precision, F1, ROC-AUC, PR-AUC), same form.
    pooled : dict
        ``pooled[pipeline]``: metrics of all out-of-fold test predictions
        pooled together (one confusion matrix, one ROC-AUC …; every sample
        counted once per repeat), from :func:`featurepipe.metrics.compute_metrics`,
        plus ``n_predictions`` and ``n_folds``.
    timings : dict
        Per pipeline: features (stateless prefix) seconds, fit/predict
        seconds per fold and per image.
    comparisons : dict
        ``comparisons[metric]`` = :func:`featurepipe.stats.pairwise_comparisons` rows.
    leakage : dict
        :func:`featurepipe.benchmark.leakage.leakage_report`.
    versions : dict
        Python, platform and package versions.
    output_dir : pathlib.Path or None
    files : list of str
        Files written (reports and plots).
    """

    dataset: dict
    config: dict
    pipelines: dict
    splits: list
    folds: list
    summary: dict
    timings: dict
    comparisons: dict
    leakage: dict
    versions: dict
    per_class: dict = field(default_factory=dict)
    pooled: dict = field(default_factory=dict)
    output_dir: Path | None = None
    files: list = field(default_factory=list)

    def ranking(self, metric=None):
        """Pipeline names sorted by the mean of ``metric`` (default: the run's ``rank_by``), best first."""
        metric = metric or self.config["rank_by"]
        if metric not in METRIC_NAMES:
            raise ValueError(f"metric must be one of {list(METRIC_NAMES)}; got {metric!r}")

        def key(name):
            mean = self.summary.get(name, {}).get(metric, {}).get("mean")
            return -np.inf if mean is None or not np.isfinite(mean) else mean

        return sorted(self.summary, key=key, reverse=True)

    def to_markdown(self, metric=None):
        """The Markdown summary (tables sorted by ``metric``)."""
        from .report import markdown_summary

        return markdown_summary(self, metric)

    def fold_scores(self, pipeline, metric):
        """Per-fold values of ``metric`` for ``pipeline``, ordered by (repeat, fold)."""
        recs = sorted((r for r in self.folds if r["pipeline"] == pipeline and r.get("status") == "ok"),
                      key=lambda r: (r["repeat"], r["fold"]))
        return np.array([_num(r["metrics"].get(metric)) for r in recs])

    @classmethod
    def load(cls, path):
        """Read a result back from ``results.json`` (or the output directory holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"no benchmark results at {str(path)!r} (expected results.json)")
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema") != _SCHEMA:
            raise ValueError(f"{path}: results schema {data.get('schema')!r} is not the supported {_SCHEMA}")
        fields = ("dataset", "config", "pipelines", "splits", "folds", "summary", "timings", "comparisons",
                  "leakage", "versions", "per_class", "pooled")
        return cls(**{k: data.get(k, {}) for k in fields}, output_dir=path.parent)

    def to_dict(self):
        return to_jsonable({
            "schema": _SCHEMA, "dataset": self.dataset, "config": self.config, "pipelines": self.pipelines,
            "splits": self.splits, "summary": self.summary, "timings": self.timings,
            "per_class": self.per_class, "pooled": self.pooled, "comparisons": self.comparisons,
            "leakage": self.leakage, "versions": self.versions,
            "folds": self.folds,
        })


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


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


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


def _check_choice(value, name, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}; got {value!r}")


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
    if raw.ndim == 1:
        if len(classes) != 2:
            raise ValueError(f"{kind} returned a 1-D array for {len(classes)} classes")
        raw = np.column_stack([-raw, raw])
    out = np.full((raw.shape[0], len(labels)), 0.0 if kind == "predict_proba" else raw.min() - 1.0)
    index = {label: j for j, label in enumerate(labels)}
    for j, label in enumerate(classes):
        out[:, index[_plain(label)]] = raw[:, j]
    return out, kind


def _evaluate_fold(name, config, estimator, grid, Z, y, split, labels, pos_label, inner_spec, inner_groups,
                   inner_scoring, on_error):
    """Fit on the training part of one split, predict its test part, score it."""
    record = {"kind": "fold", "schema": _SCHEMA, "pipeline": name, "config": config, "repeat": split.repeat,
              "fold": split.fold, "n_train": len(split.train), "n_test": len(split.test)}
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
        record.update(
            status="ok",
            metrics={m: result[m] for m in METRIC_NAMES},
            per_class=result["per_class"],
            confusion_matrix=result["confusion_matrix"],
            test_index=split.test,
            y_true=[_plain(v) for v in y_test],
            y_pred=[_plain(v) for v in y_pred],
            y_score=None if scores is None else scores,
            score_kind=kind,
            time={"fit_s": fit_s, "predict_s": predict_s},
            best_params=(None if grid is None else {k: repr(v) if not isinstance(v, (int, float, str, bool, type(None)))
                                                    else v for k, v in model.best_params_.items()}),
            inner_best_score=None if grid is None else float(model.best_score_),
            history=_history(model),
        )
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
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc(limit=5))
    return to_jsonable(record)


def _take(Z, index):
    if isinstance(Z, np.ndarray) or sp.issparse(Z):
        return Z[index]
    return [Z[i] for i in index]


def _mask_probe(samples, n_probe=2, max_scan=200):
    """Up to ``n_probe`` (image, mask) pairs with a partial mask (some pixels in, some out)."""
    found = []
    for sample in samples[:max_scan]:
        meta = sample.meta
        source = getattr(sample, "_source", None)
        if not meta.get("mask_paths") and getattr(source, "mask", None) is None and \
                not hasattr(source, "parent"):
            continue  # a file sample without mask files, or an array sample without a mask
        try:
            image, mask = sample.load()
        except Exception:  # an unreadable image is reported elsewhere; the probe only needs two good ones
            continue
        if mask is not None and mask.any() and not mask.all():
            found.append((image, mask))
            if len(found) == n_probe:
                break
    return found


def _outputs_differ(a, b):
    if isinstance(a, np.ndarray) and a.dtype != object:
        return not np.allclose(a, b, equal_nan=True)
    return any(not np.array_equal(x.image, z.image) for x, z in zip(a, b))


def _uses_masks(prefix, probe):
    """Whether the stateless prefix's output changes when the probe images lose their masks.

    ``True``/``False``, or a string saying why it could not be checked.
    """
    if prefix is None:
        return "not checked (no stateless prefix to probe)"
    if not probe:
        return False
    try:
        step = clone(prefix)
        with_mask = as_samples([Sample.from_array(image, mask) for image, mask in probe])
        without = as_samples([Sample.from_array(image) for image, _ in probe])
        step.fit(with_mask)
        masked = step.transform(with_mask)
    except Exception as exc:  # the probe must never stop a benchmark
        return f"not checked ({type(exc).__name__}: {exc})"
    try:
        unmasked = step.transform(without)
    except Exception:  # works with masks, refuses without them (CropToMask): it reads them
        return True
    try:
        return bool(_outputs_differ(masked, unmasked))
    except Exception as exc:
        return f"not checked ({type(exc).__name__}: {exc})"


def _mask_fractions(samples):
    """Fraction of each sample's pixels inside its mask (0 without a mask), for the mask-cue probe."""
    out = np.zeros(len(samples), dtype=np.float64)
    for i, sample in enumerate(samples):
        try:
            mask = sample.mask
        except Exception:  # unreadable images were excluded before; the probe must never stop a benchmark
            continue
        if mask is not None and mask.size:
            out[i] = float(np.count_nonzero(mask)) / mask.size
    return out


# ----------------------------------------------------------------------------- output folder
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
        ``results.json``, ``folds.csv``, ``summary.csv``, ``summary.md`` and
        the PNG plots go. Without it nothing is written and nothing resumes.
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
    args = dict(locals())
    # Each image file is decoded once for the duplicate search, every feature family and the plots
    # (bounded: see featurepipe.sample.decode_once).
    with decode_once():
        if output_dir is None:
            return _run_benchmark(**args)
        with output_lock(output_dir):
            return _run_benchmark(**args)


def _run_benchmark(dataset, pipelines, *, cv, param_grids, inner_cv, inner_scoring, metrics, rank_by, pos_label,
                   duplicates, duplicate_threshold, output_dir, resume, overwrite, n_jobs, backend, scheduler, rope,
                   confidence, plots, progress, on_error, feature_chunk_size):
    """The body of :func:`run_benchmark` (with the output folder locked)."""
    ds = _as_dataset(dataset)
    pipelines = _check_pipelines(pipelines)
    grids = _check_grids(param_grids, pipelines)
    spec = CVSpec.coerce(cv)
    inner_spec = CVSpec.coerce(inner_cv, name="inner_cv")
    inner_spec = CVSpec(inner_spec.n_splits, 1, spec.random_state)
    shown_metrics = check_metric_names(metrics)
    _check_choice(rank_by, "rank_by", METRIC_NAMES)
    _check_choice(on_error, "on_error", ("skip", "record", "raise"))
    for flag, value in (("resume", resume), ("overwrite", overwrite)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{flag} must be True or False; got {value!r}")
    if rope is not None and not (isinstance(rope, (int, float)) and rope >= 0):
        raise ValueError(f"rope must be a number >= 0 or None; got {rope!r}")
    if not (isinstance(feature_chunk_size, (int, np.integer)) and feature_chunk_size >= 1):
        raise ValueError(f"feature_chunk_size must be a positive integer; got {feature_chunk_size!r}")
    if scheduler is not None:
        if backend not in (None, "dask"):
            raise ValueError(f"scheduler={scheduler!r} needs backend='dask'; got backend={backend!r}")
        backend = "dask"
    if plots and output_dir is None:
        plots = False

    samples = ds.samples
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

    # groups: patients + duplicate clusters, merged into connected components
    patient = [s.group for s in samples]
    exclusions = {}  # sample index -> reasons it could not be processed
    if duplicate_threshold is not None and duplicates != "near":
        raise ValueError(f"duplicate_threshold={duplicate_threshold!r} only applies to duplicates='near'; got "
                         f"duplicates={duplicates!r}")
    if isinstance(duplicates, str):
        _check_choice(duplicates, "duplicates", _DUPLICATE_METHODS)
    if duplicates in ("near", "exact"):
        kwargs = {} if duplicate_threshold is None else {"threshold": duplicate_threshold}
        report = find_duplicates(samples, method=duplicates, on_error="raise" if on_error == "raise" else "report",
                                 **kwargs)
        for i, _, reason in report.unreadable:
            exclusions.setdefault(int(i), []).append(f"duplicate detection: {reason}")
        clusters = np.asarray(report.cluster_ids, dtype=object)
        dup_method = report.description
    elif duplicates is None or (isinstance(duplicates, str) and duplicates == "none"):
        clusters, dup_method = None, "none"
    elif hasattr(duplicates, "cluster_ids"):  # a featurepipe.duplicates.DuplicateReport
        clusters = np.asarray(duplicates.cluster_ids, dtype=object)
        if clusters.shape != (len(samples),):
            raise ValueError(f"duplicates: the report covers {len(clusters)} samples but the dataset has "
                             f"{len(samples)}")
        dup_method = f"duplicate report: {duplicates.description}"
    else:
        clusters = np.asarray(duplicates, dtype=object)
        if clusters.shape != (len(samples),):
            raise ValueError(f"duplicates must give one cluster id per sample ({len(samples)}); "
                             f"got shape {clusters.shape}")
        dup_method = "user-supplied cluster ids"
    def grouped_splits():
        patient_or_self = [g if g is not None else f"sample:{s.key}" for g, s in zip(patient, samples)]
        merged = merge_groups(patient_or_self, clusters) if clusters is not None else merge_groups(patient_or_self)
        # Merged groups named after their smallest patient id: without merging these are the patient ids
        # themselves, so the folds equal RepeatedStratifiedGroupKFold's on the user's groups.
        merged = group_labels(patient_or_self, merged)
        return (merged, *_guarded_splits(samples, y, merged, spec))

    # Refuse degenerate folds before any feature is computed; recomputed below if images are excluded.
    merged, splits, structure = grouped_splits()

    # Stateless prefixes, computed once on all samples. An image that fails (unreadable, or degenerate for
    # a feature: a 1x1 image in GLCM, no Otsu foreground) is excluded for EVERY pipeline alike, so all are
    # still compared on the same images; on_error="raise" stops at the first such error instead.
    prefixes, suffixes = {}, {}
    for name, est in pipelines.items():
        if isinstance(est, Pipeline):
            prefixes[name], suffixes[name] = split_stateless_prefix(est, grids.get(name))
        else:
            prefixes[name], suffixes[name] = None, est
    computed, prefix_failures = {}, {}
    # Feature extractors with their own n_jobs run inside the chosen joblib backend (Dask workers too).
    with _parallel_context(backend, scheduler, n_jobs):
        for name in pipelines:
            if prefixes[name] is None:
                continue
            try:
                if backend == "dask":  # the workers extract their shards' features; the client gathers matrices only
                    computed_prefix = extract_on_cluster(
                        prefixes[name], samples, int(feature_chunk_size), progress, f"{name}: features",
                        per_sample_errors=on_error != "raise")
                else:
                    computed_prefix = FeatureStore(prefixes[name], chunk_size=int(feature_chunk_size)).transform(
                        samples, on_error="raise" if on_error == "raise" else "exclude", progress=progress,
                        desc=f"{name}: features")
                Z_ok, ok_index, errors, pre_s, feat_s = computed_prefix
                if errors and len(errors) == len(samples):
                    raise next(iter(errors.values()))  # fails on every image: the pipeline's fault, not the images'
            except Exception as exc:
                if on_error != "record":
                    raise
                # Every fold of this pipeline fails for the same reason; the others go on.
                trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=5))
                prefix_failures[name] = (f"stateless prefix failed: {type(exc).__name__}: {exc}", trace)
                continue
            for i, exc in errors.items():
                exclusions.setdefault(i, []).append(f"{name}: {type(exc).__name__}: {exc}")
            computed[name] = (Z_ok, ok_index, pre_s, feat_s)

    excluded = [{"index": i, "name": samples[i].name, "path": None if samples[i].path is None else str(samples[i].path),
                 "reason": "; ".join(exclusions[i])} for i in sorted(exclusions)]
    if exclusions:
        keep = np.array([i for i in range(len(samples)) if i not in exclusions], dtype=np.int64)
        warnings.warn(f"{len(excluded)} image(s) excluded for every pipeline (listed in the report): "
                      + "; ".join(f"{e['name']} ({e['reason']})" for e in excluded[:5])
                      + (" ..." if len(excluded) > 5 else ""), UserWarning, stacklevel=3)
        samples = as_samples([samples[i] for i in keep])
        y = y[keep]
        patient = [patient[i] for i in keep]
        clusters = None if clusters is None else clusters[keep]
        left = sorted(set(y.tolist()), key=lambda v: (str(type(v)), v))
        if left != labels:
            raise ValueError(f"after excluding {len(excluded)} image(s) that could not be processed, the classes "
                             f"{sorted(set(labels) - set(left), key=str)} have no image left: "
                             + "; ".join(f"{e['name']}: {e['reason']}" for e in excluded[:10]))
        for name, (Z_ok, ok_index, pre_s, feat_s) in computed.items():
            position = np.full(len(exclusions) + len(keep), -1, dtype=np.int64)
            position[ok_index] = np.arange(len(ok_index))
            computed[name] = (_take(Z_ok, position[keep]), keep, pre_s, feat_s)
        merged, splits, structure = grouped_splits()
    fingerprint = splits_fingerprint(splits, y, merged)
    data_id = joblib.hash([s.key for s in samples])

    # configuration per pipeline (what must match for a finished fold to be reused)
    descriptions, configs = {}, {}
    for name, est in pipelines.items():
        prefix, suffix = prefixes[name], suffixes[name]
        # Where features are cached never changes them: the experiment is identified (and described)
        # with every feature cache reset, so `--cache DIR` or `--no-cache` resumes the same run.
        est = _without_cache_location(est)
        configs[name] = joblib.hash({
            "featurepipe": __version__, "schema": _SCHEMA, "estimator": _estimator_hash(est),
            "grid": repr(grids.get(name)), "inner_cv": inner_spec.as_dict() if name in grids else None,
            "inner_scoring": repr(inner_scoring) if name in grids else None, "splits": fingerprint,
            "data": data_id, "labels": repr(labels), "pos_label": repr(pos_label),
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

    out_dir = None if output_dir is None else Path(output_dir)
    store = None
    done = {}
    prefix_records = {}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        experiment = {
            "data": data_id, "n_samples": len(samples), "splits": fingerprint, "cv": spec.as_dict(),
            "duplicates": dup_method, "pipelines": {name: configs[name] for name in pipelines},
        }
        experiment["id"] = joblib.hash(experiment)[:16]
        _claim_output_dir(out_dir, experiment, resume=resume, overwrite=overwrite)
        store = FoldStore(out_dir / "folds.jsonl")
        if resume:
            split_of = {s.id: s for s in splits}
            rejected = {}
            for rec in store.load():
                name = rec.get("pipeline")
                if name not in configs or rec.get("config") != configs[name]:
                    continue
                if rec.get("kind") == "prefix":
                    prefix_records[name] = rec
                elif rec.get("kind") == "fold" and rec.get("status") == "ok":
                    split = split_of.get((rec.get("repeat"), rec.get("fold")))
                    if split is None:
                        continue
                    why = check_fold_record(rec, test_index=split.test, y_true=y[split.test], labels=labels,
                                            pos_label=pos_label)
                    if why is None:
                        done[(name, split.repeat, split.fold)] = rec
                    else:
                        rejected[(name, split.repeat, split.fold)] = why
            rejected = {k: v for k, v in rejected.items() if k not in done}
            if rejected:
                detail = "; ".join(f"{n} repeat {r} fold {f}: {why}" for (n, r, f), why in sorted(rejected.items()))
                warnings.warn(f"{len(rejected)} record(s) of folds.jsonl are inconsistent or incomplete and their "
                              f"folds run again: {detail}", UserWarning, stacklevel=2)

    records = dict(done)
    failures = {}
    if done:
        print(f"resuming: {len(done)} of {len(splits) * len(pipelines)} folds done (from {out_dir / 'folds.jsonl'})",
              file=sys.stderr)
    with _parallel_context(backend, scheduler, n_jobs):
        for name in pipelines:
            pending = [s for s in splits if (name, s.repeat, s.fold) not in done]
            if not pending:
                continue
            if name in prefix_failures:
                message, trace = prefix_failures[name]
                warnings.warn(f"pipeline {name!r}: {message}", UserWarning, stacklevel=2)
                for split in pending:
                    rec = to_jsonable({"kind": "fold", "schema": _SCHEMA, "pipeline": name,
                                       "config": configs[name], "repeat": split.repeat, "fold": split.fold,
                                       "n_train": len(split.train), "n_test": len(split.test),
                                       "status": "failed", "error": message, "traceback": trace})
                    failures[(name, split.repeat, split.fold)] = rec
                    if store is not None:
                        store.append(rec)
                continue
            if name in computed:
                Z, _, preprocess_s, features_s = computed[name]
            else:
                Z, preprocess_s, features_s = samples, 0.0, 0.0
            prefix_rec = to_jsonable({"kind": "prefix", "schema": _SCHEMA, "pipeline": name, "config": configs[name],
                                      "preprocess_s": preprocess_s, "features_s": features_s,
                                      "n_samples": len(samples), "steps": descriptions[name]["stateless_prefix"],
                                      "n_features": int(Z.shape[1]) if getattr(Z, "ndim", 1) == 2 else None})
            prefix_records[name] = prefix_rec
            if store is not None:
                store.append(prefix_rec)
            grid = grids.get(name)
            tasks = (delayed(_evaluate_fold)(name, configs[name], suffixes[name], grid, Z, y, split, labels,
                                             pos_label, inner_spec, merged, inner_scoring, on_error)
                     for split in pending)
            with tqdm(total=len(splits), initial=len(splits) - len(pending), desc=f"{name}: folds",
                      unit="fold", disable=not progress, leave=False) as bar:
                for rec in Parallel(n_jobs=n_jobs, return_as="generator_unordered")(tasks):
                    if store is not None:
                        store.append(rec)
                    if rec["status"] == "ok":
                        records[(name, rec["repeat"], rec["fold"])] = rec
                    else:
                        failures[(name, rec["repeat"], rec["fold"])] = rec
                        warnings.warn(f"pipeline {name!r} failed on repeat {rec['repeat']} fold {rec['fold']}: "
                                      f"{rec['error']}", UserWarning, stacklevel=2)
                    bar.update(1)

    folds = sorted(list(records.values()) + list(failures.values()),
                   key=lambda r: (list(pipelines).index(r["pipeline"]), r["repeat"], r["fold"]))
    # Nadeau-Bengio correction with the real size of every fold (grouped folds are unequal).
    ratio_of_split = {s.id: len(s.test) / len(s.train) for s in splits}
    split_ratios = np.array([ratio_of_split[s.id] for s in splits])
    ratio = float(split_ratios.mean())

    summary, timings, per_class, pooled = {}, {}, {}, {}
    for name in pipelines:
        recs = sorted((r for r in folds if r["pipeline"] == name and r["status"] == "ok"),
                      key=lambda r: (r["repeat"], r["fold"]))
        rec_ratios = np.array([ratio_of_split[(r["repeat"], r["fold"])] for r in recs])
        summary[name] = {m: summarize([_num(r["metrics"].get(m)) for r in recs], test_train_ratio=rec_ratios,
                                      confidence=confidence, bounds=METRIC_RANGES[m]) for m in METRIC_NAMES}
        per_class[name] = {
            str(label): {m: summarize([_num(r["per_class"][str(label)].get(m)) for r in recs],
                                      test_train_ratio=rec_ratios, confidence=confidence, bounds=(0.0, 1.0))
                         for m in PER_CLASS_METRICS}
            for label in labels
        }
        timings[name] = _timings(recs, prefix_records.get(name), len(samples))
        pooled[name] = _pooled_metrics(recs, labels, pos_label)
    comparisons = {}
    for metric in dict.fromkeys([rank_by] + [m for m in shown_metrics if m in ("mcc", "roc_auc", "accuracy")]):
        scores = {}
        for name in pipelines:
            by_split = {(r["repeat"], r["fold"]): _num(r["metrics"].get(metric))
                        for r in folds if r["pipeline"] == name and r["status"] == "ok"}
            scores[name] = np.array([by_split.get(s.id, np.nan) for s in splits])
        comparisons[metric] = pairwise_comparisons(scores, test_train_ratio=split_ratios, rope=rope)

    probe = _mask_probe(samples)
    mask_use = {name: _uses_masks(prefixes[name], probe) for name in pipelines}
    # "Was it cropped?": only worth decoding every mask when some pipeline reads them.
    mask_cue = (mask_cue_probe(_mask_fractions(samples), y, splits)
                if probe and any(v is True for v in mask_use.values()) else None)
    single_class = {name: single_class_predictions([r for r in folds if r["pipeline"] == name])
                    for name in pipelines}
    leak = leakage_report(
        splits, patient_groups=patient, duplicate_clusters=clusters, duplicates_method=dup_method,
        pipelines=pipelines, prefixes={n: d["stateless_prefix"] for n, d in descriptions.items()},
        tuned={n: n in grids for n in pipelines}, mask_use=mask_use, has_masks=bool(probe), structure=structure,
        excluded=excluded, single_class=single_class, mask_cue=mask_cue,
    )
    for message in leak["warnings"]:
        warnings.warn(f"leakage report: {message}", UserWarning, stacklevel=2)

    merged_counts = np.unique(np.asarray(merged, dtype=str), return_counts=True)[1]
    dataset_info = {
        "name": ds.name, "n_samples": len(samples), "root": ds.root,
        "class_counts": {str(label): int(np.sum(y == label)) for label in labels},
        "excluded": excluded,
        "labels": labels, "pos_label": pos_label, "task": "binary" if len(labels) == 2 else "multi-class",
        "n_patient_groups": len({g for g in patient if g is not None}),
        "n_samples_without_group": sum(g is None for g in patient),
        "n_independent_groups": len(merged_counts),
        "largest_group": structure["largest_groups"][0],
        "largest_groups": structure["largest_groups"],
        "skipped": [list(s) for s in ds.skipped], "info": to_jsonable(ds.info),
        "synthetic": bool(ds.info.get("synthetic", False)),
    }
    config = {
        "cv": spec.as_dict(), "cv_description": (
            f"{spec.n_repeats} × stratified grouped {spec.n_splits}-fold (groups: patients + duplicate clusters)"),
        "inner_cv": inner_spec.n_splits, "inner_scoring": repr(inner_scoring), "metrics": list(shown_metrics),
        "rank_by": rank_by, "pos_label": pos_label, "duplicates": dup_method, "confidence": confidence,
        "ci_method": CI_LABEL, "test": NB_TEST_LABEL, "multiple_comparisons": "Holm over all pairs of pipelines",
        "rope": rope, "test_train_ratio": ratio, "test_train_ratio_note": (
            "mean over the folds of n_test / n_train (real fold sizes)"),
        "fold_sizes": structure["fold_sizes"], "n_jobs": n_jobs, "backend": backend or "joblib default",
        "split_fingerprint": fingerprint, "resumed_folds": len(done),
    }
    result = BenchmarkResult(
        dataset=dataset_info, config=config, pipelines=descriptions,
        splits=[{"repeat": s.repeat, "fold": s.fold, "train": s.train.tolist(), "test": s.test.tolist()}
                for s in splits],
        folds=folds, summary=summary, timings=timings, comparisons=comparisons, leakage=leak,
        versions=package_versions(), per_class=per_class, pooled=pooled, output_dir=out_dir,
    )
    if out_dir is not None:
        from .plots import write_plots
        from .report import write_reports

        # Plots first: summary.md links them and report.html embeds them.
        result.files = write_plots(result, out_dir, samples, pipelines) if plots else []
        result.files = write_reports(result, out_dir) + result.files
        (out_dir / "results.json").write_text(json.dumps(result.to_dict(), indent=1, allow_nan=False) + "\n",
                                              encoding="utf-8")
        write_experiment(out_dir, {**experiment, "files": [Path(f).name for f in result.files]})
    if failures and on_error == "record":
        warnings.warn(f"{len(failures)} fold(s) failed and were recorded; see the report", UserWarning, stacklevel=2)
    return result


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

