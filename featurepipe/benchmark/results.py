"""What a benchmark run produces: typed fold results, the tidy results table, the run's result.

* :class:`FoldResult` — one pipeline evaluated on one outer split (the
  :func:`~featurepipe.benchmark.runner.execute` stage); serialised as one
  ``folds.jsonl`` line (:meth:`FoldResult.to_record` /
  :meth:`FoldResult.from_record`), the same JSON as earlier versions wrote.
* :func:`results_table` — the tidy table: one row per pipeline × repeat ×
  fold × metric.
* :class:`BenchmarkResult` — everything a run produced (the
  :func:`~featurepipe.benchmark.runner.summarise` stage), read back with
  :meth:`BenchmarkResult.load`.

This module computes nothing: it holds and converts results. Reports render
them (:mod:`featurepipe.benchmark.report`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..metrics import METRIC_NAMES
from .store import to_jsonable

__all__ = ["FoldResult", "BenchmarkResult", "results_table", "PER_CLASS_METRICS", "SCHEMA"]

#: Version of the JSON written into ``folds.jsonl`` and ``results.json``.
SCHEMA = 1
#: One-vs-rest metrics summarised per class.
PER_CLASS_METRICS = ("sensitivity", "specificity", "precision", "f1", "roc_auc", "pr_auc")


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _num(value):
    return float("nan") if value is None else float(value)


@dataclass(eq=False)
class FoldResult:
    """One pipeline fitted on the training part of one outer split and scored on its test part.

    Attributes
    ----------
    pipeline : str
        Name of the pipeline.
    repeat, fold : int
        Which split (``Split.id == (repeat, fold)``).
    config : str
        Configuration hash of the pipeline (what must match for a stored fold to be reused).
    n_train, n_test : int
        Sizes of the training and test parts.
    status : {"ok", "failed"}
    train_index, test_index : ndarray of int or None
        Sample indices (into the plan's samples) of the two parts; ``train_index`` is not
        stored in ``folds.jsonl`` (it follows from the split) and is ``None`` when a record
        is read without its split.
    y_true, y_pred : list or None
        True and predicted labels of the test part, in ``test_index`` order.
    y_score : ndarray of shape (n_test, n_classes) or None
        Scores, one column per class in the plan's label order.
    score_kind : {"predict_proba", "decision_function"} or None
    metrics : dict or None
        :data:`featurepipe.metrics.METRIC_NAMES` -> value (``None`` where undefined).
    per_class, confusion_matrix
        From :func:`featurepipe.metrics.compute_metrics`.
    timings : dict or None
        ``fit_s`` (including inner tuning) and ``predict_s`` (prediction and scores), seconds.
    best_params : dict or None
        Parameters chosen by the inner grid search (nested CV), else ``None``.
    inner_best_score : float or None
    history : dict or None
        Training history of the final estimator (Keras classifiers).
    error, traceback : str or None
        Why a failed fold failed.
    resumed : bool
        Read back from ``folds.jsonl`` rather than computed in this run (not stored).
    feature_timings : dict or None
        ``preprocess_s`` and ``features_s`` of the pipeline's stateless prefix on all samples,
        from the run that computed the fold (not stored in the fold's line: the pipeline's
        ``"prefix"`` line holds them).
    """

    pipeline: str
    repeat: int
    fold: int
    config: str
    n_train: int
    n_test: int
    status: str = "ok"
    train_index: np.ndarray | None = None
    test_index: np.ndarray | None = None
    y_true: list | None = None
    y_pred: list | None = None
    y_score: np.ndarray | None = None
    score_kind: str | None = None
    metrics: dict | None = None
    per_class: dict | None = None
    confusion_matrix: list | None = None
    timings: dict | None = None
    best_params: dict | None = None
    inner_best_score: float | None = None
    history: dict | None = None
    error: str | None = None
    traceback: str | None = None
    resumed: bool = False
    feature_timings: dict | None = None

    @property
    def ok(self):
        """Whether the fold finished (``status == "ok"``)."""
        return self.status == "ok"

    @property
    def split_id(self):
        """``(repeat, fold)``."""
        return (self.repeat, self.fold)

    def to_record(self):
        """The ``folds.jsonl`` line of this fold (strict JSON values, keys in the order earlier versions wrote).

        >>> fr = FoldResult("lr", 0, 1, "abc", 8, 4, status="failed", error="ValueError: no")
        >>> rec = fr.to_record()
        >>> list(rec)[:8], rec["status"], rec["error"]
        (['kind', 'schema', 'pipeline', 'config', 'repeat', 'fold', 'n_train', 'n_test'], 'failed', 'ValueError: no')
        >>> FoldResult.from_record(rec).to_record() == rec
        True
        """
        record = {"kind": "fold", "schema": SCHEMA, "pipeline": self.pipeline, "config": self.config,
                  "repeat": self.repeat, "fold": self.fold, "n_train": self.n_train, "n_test": self.n_test}
        if self.ok:
            record.update(
                status="ok", metrics=self.metrics, per_class=self.per_class, confusion_matrix=self.confusion_matrix,
                test_index=self.test_index, y_true=self.y_true, y_pred=self.y_pred, y_score=self.y_score,
                score_kind=self.score_kind, time=self.timings, best_params=self.best_params,
                inner_best_score=self.inner_best_score, history=self.history)
        else:
            record.update(status="failed", error=self.error, traceback=self.traceback)
        return to_jsonable(record)

    @classmethod
    def from_record(cls, record, *, train_index=None, resumed=False, feature_timings=None):
        """A fold result from its ``folds.jsonl`` line (a dict as :meth:`to_record` writes it).

        The record is taken as it is: verify a stored record against the current split with
        :func:`featurepipe.benchmark.store.check_fold_record` before reusing it.
        """
        ok = record.get("status") == "ok"
        test = record.get("test_index")
        scores = record.get("y_score")
        return cls(
            pipeline=record["pipeline"], repeat=record["repeat"], fold=record["fold"], config=record.get("config"),
            n_train=record.get("n_train"), n_test=record.get("n_test"), status=record.get("status", "failed"),
            train_index=None if train_index is None else np.asarray(train_index, dtype=np.int64),
            test_index=None if test is None else np.asarray(test, dtype=np.int64),
            y_true=record.get("y_true"), y_pred=record.get("y_pred"),
            y_score=None if scores is None else np.array([[np.nan if v is None else v for v in row] for row in scores],
                                                         dtype=np.float64).reshape(len(scores), -1),
            score_kind=record.get("score_kind"), metrics=record.get("metrics"), per_class=record.get("per_class"),
            confusion_matrix=record.get("confusion_matrix"), timings=record.get("time") if ok else None,
            best_params=record.get("best_params"), inner_best_score=record.get("inner_best_score"),
            history=record.get("history"), error=record.get("error"), traceback=record.get("traceback"),
            resumed=resumed, feature_timings=feature_timings,
        )


def results_table(folds):
    """The tidy results table: one row per pipeline × repeat × fold × metric.

    Parameters
    ----------
    folds : iterable of FoldResult or of fold records (dicts, as in ``BenchmarkResult.folds``)

    Returns
    -------
    pandas.DataFrame
        Columns ``pipeline``, ``repeat``, ``fold``, ``status``, ``metric``, ``value`` (float;
        NaN where the metric is undefined or the fold failed), one row per metric of
        :data:`featurepipe.metrics.METRIC_NAMES` for every fold, in the order of ``folds``.

    Examples
    --------
    >>> fr = FoldResult("lr", 0, 0, "abc", 8, 4, metrics={m: 0.5 for m in METRIC_NAMES})
    >>> table = results_table([fr])
    >>> table.shape == (len(METRIC_NAMES), 6), float(table["value"].sum()) == 0.5 * len(METRIC_NAMES)
    (True, True)
    """
    import pandas as pd

    rows = []
    for fold in folds:
        rec = fold.to_record() if isinstance(fold, FoldResult) else fold
        values = rec.get("metrics") if rec.get("status") == "ok" else None
        for metric in METRIC_NAMES:
            rows.append((rec["pipeline"], rec["repeat"], rec["fold"], rec.get("status"), metric,
                         _num(None if values is None else values.get(metric))))
    table = pd.DataFrame(rows, columns=["pipeline", "repeat", "fold", "status", "metric", "value"])
    return table.astype({"pipeline": str, "repeat": np.int64, "fold": np.int64, "status": str, "metric": str,
                         "value": np.float64})


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
        One record per pipeline and fold (metrics, predictions, timings): the
        :meth:`FoldResult.to_record` JSON; :meth:`fold_results` gives them typed.
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

    @property
    def table(self):
        """The tidy results table of :attr:`folds` (:func:`results_table`): pipeline × repeat × fold × metric."""
        return results_table(self.folds)

    def fold_results(self):
        """:attr:`folds` as :class:`FoldResult` objects (with their training indices from :attr:`splits`)."""
        train = {(s["repeat"], s["fold"]): s["train"] for s in self.splits}
        return [FoldResult.from_record(r, train_index=train.get((r["repeat"], r["fold"]))) for r in self.folds]

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
        if data.get("schema") != SCHEMA:
            raise ValueError(f"{path}: results schema {data.get('schema')!r} is not the supported {SCHEMA}")
        fields = ("dataset", "config", "pipelines", "splits", "folds", "summary", "timings", "comparisons",
                  "leakage", "versions", "per_class", "pooled")
        return cls(**{k: data.get(k, {}) for k in fields}, output_dir=path.parent)

    def to_dict(self):
        """The ``results.json`` content (strict JSON values)."""
        return to_jsonable({
            "schema": SCHEMA, "dataset": self.dataset, "config": self.config, "pipelines": self.pipelines,
            "splits": self.splits, "summary": self.summary, "timings": self.timings,
            "per_class": self.per_class, "pooled": self.pooled, "comparisons": self.comparisons,
            "leakage": self.leakage, "versions": self.versions,
            "folds": self.folds,
        })
