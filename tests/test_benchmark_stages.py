"""The staged runner (issue 12): plan → compute_features → execute → summarise → write_report.

Each stage is tested on its own against an independent reference (scikit-learn's splitter, fitting
the whole pipeline per fold, compute_metrics, NumPy), and run_benchmark against the stages called by hand.
"""

import ast
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import featurepipe.benchmark as benchmark
from featurepipe import FeatureExtractor, Sample
from featurepipe.benchmark import (
    BenchmarkResult,
    CVSpec,
    FoldResult,
    compute_features,
    execute,
    make_splits,
    merge_groups,
    plan,
    results_table,
    run_benchmark,
    summarise,
    write_report,
)
from featurepipe.benchmark.store import FOLD_RECORD_KEYS
from featurepipe.cache import clear_memory_cache
from featurepipe.dataset import Dataset
from featurepipe.metrics import METRIC_NAMES, compute_metrics
from featurepipe.model_selection import group_labels

CV = {"n_splits": 3, "n_repeats": 2, "random_state": 0}
FITS = []


class Moments(FeatureExtractor):
    """Mean, standard deviation and the mean of the top rows of an image."""

    def __init__(self, cache=True, n_jobs=None):
        self.cache = cache
        self.n_jobs = n_jobs

    def _extract(self, image, mask):
        return [image.mean(), image.std(), image[:2].mean()]

    def _feature_names(self):
        return ["mean", "std", "top"]


class CountingLR(LogisticRegression):
    """Counts its fits (which folds ran and which were reused)."""

    def fit(self, X, y, sample_weight=None):
        FITS.append(1)
        return super().fit(X, y, sample_weight)


@pytest.fixture(autouse=True)
def _fresh():
    clear_memory_cache()
    FITS.clear()


def make_dataset(n=30, seed=0, copy_of=None):
    """Two classes of 8x8 images, two images per patient; ``copy_of=(i, j)`` makes image j a copy of image i."""
    rng = np.random.default_rng(seed)
    images = [(rng.random((8, 8)) * 0.7 + 0.08 * (i % 2)).astype(np.float32) for i in range(n)]
    if copy_of is not None:
        i, j = copy_of
        images[j] = images[i].copy()
    return Dataset([Sample.from_array(images[i], label=("benign", "malignant")[i % 2], group=f"patient{i // 2}")
                    for i in range(n)], name="stages")


def pipes():
    return {
        "lr": Pipeline([("moments", Moments()), ("scale", StandardScaler()), ("lr", CountingLR())]),
        "lr_c": Pipeline([("moments", Moments()), ("lr", LogisticRegression(C=0.1))]),
    }


def _by_hand(ds, pipelines, out_dir=None, **kwargs):
    p = compute_features(plan(ds, pipelines, cv=CV, **kwargs), progress=False)
    folds = execute(p, output_dir=out_dir, progress=False)
    result = summarise(p, folds)
    if out_dir is not None:
        write_report(result, out_dir, p, plots=False)
    return p, folds, result


# ----------------------------------------------------------------------------- composition
def test_run_benchmark_equals_its_stages_called_by_hand(tmp_path):
    ds = make_dataset(seed=1)
    composed = run_benchmark(ds, pipes(), cv=CV, output_dir=tmp_path / "a", plots=False, progress=False)
    clear_memory_cache()
    _, folds, staged = _by_hand(ds, pipes(), out_dir=tmp_path / "b")
    assert [(f["pipeline"], f["repeat"], f["fold"]) for f in composed.folds] == \
        [(f.pipeline, f.repeat, f.fold) for f in folds]
    for a, b in zip(composed.folds, staged.folds):
        assert a["test_index"] == b["test_index"] and a["y_pred"] == b["y_pred"]
        np.testing.assert_allclose([math.nan if a["metrics"][m] is None else a["metrics"][m] for m in METRIC_NAMES],
                                   [math.nan if b["metrics"][m] is None else b["metrics"][m] for m in METRIC_NAMES],
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(a["y_score"], b["y_score"], rtol=1e-12, atol=1e-12)
    for name in composed.summary:
        for m in METRIC_NAMES:
            for key in ("mean", "std", "ci_low", "ci_high"):
                np.testing.assert_allclose(composed.summary[name][m][key], staged.summary[name][m][key], rtol=1e-12,
                                           atol=1e-12, equal_nan=True)
        assert composed.pooled[name]["confusion_matrix"] == staged.pooled[name]["confusion_matrix"]
    assert composed.splits == staged.splits and composed.pipelines == staged.pipelines
    assert composed.comparisons.keys() == staged.comparisons.keys()
    assert composed.leakage == staged.leakage
    # the same files, the same experiment recorded (one identity for both ways of running)
    assert sorted(Path(f).name for f in composed.files) == sorted(Path(f).name for f in staged.files)
    experiments = [json.loads((tmp_path / d / "experiment.json").read_text()) for d in ("a", "b")]
    assert experiments[0] == experiments[1]


# ----------------------------------------------------------------------------- plan
def test_plan_groups_patients_and_duplicates_and_its_splits_are_the_splitters():
    ds = make_dataset(seed=2, copy_of=(0, 7))  # image 7 (patient3) is a copy of image 0 (patient0)
    p = plan(ds, pipes(), cv=CV, duplicates="exact")
    assert p.features is None and len(p.samples) == 30 and p.labels == ["benign", "malignant"]
    assert p.pos_label == "malignant"
    # the copy joins patient0 and patient3 into one group (named after the smaller id)
    assert p.groups[0] == p.groups[1] == p.groups[6] == p.groups[7] == "patient0"
    patients = [s.group for s in ds.samples]
    clusters = np.arange(30)
    clusters[7] = 0
    reference = make_splits(ds.y, group_labels(patients, merge_groups(patients, clusters)), CVSpec(**CV))
    assert [s.id for s in p.splits] == [s.id for s in reference] == [(r, f) for r in range(2) for f in range(3)]
    for ours, theirs in zip(p.splits, reference):
        # exact: integer indices
        np.testing.assert_array_equal(ours.test, theirs.test)
        assert set(p.groups[ours.train]).isdisjoint(p.groups[ours.test])  # no group on both sides
    for repeat in range(2):  # every image tested once per repeat
        tested = np.sort(np.concatenate([s.test for s in p.splits if s.repeat == repeat]))
        # exact: integer indices
        np.testing.assert_array_equal(tested, np.arange(30))
    assert p.structure["n_independent_groups"] == 14
    assert p.experiment["pipelines"] == p.config_hashes and set(p.config_hashes) == {"lr", "lr_c"}


def test_plan_identity_is_stable_and_names_what_changed():
    ds = make_dataset(seed=3)
    first = plan(ds, pipes(), cv=CV, duplicates="none")
    again = plan(make_dataset(seed=3), pipes(), cv=CV, duplicates="none")
    assert again.config_hashes == first.config_hashes and again.experiment["id"] == first.experiment["id"]
    # another parameter of one pipeline changes that pipeline's hash only
    changed = pipes()
    changed["lr_c"].set_params(lr__C=0.2)
    other = plan(ds, changed, cv=CV, duplicates="none")
    assert other.config_hashes["lr"] == first.config_hashes["lr"]
    assert other.config_hashes["lr_c"] != first.config_hashes["lr_c"]
    # where features are cached is not part of the identity; the seed of the splits is
    uncached = pipes()
    uncached["lr"].set_params(moments__cache=False)
    assert plan(ds, uncached, cv=CV, duplicates="none").config_hashes == first.config_hashes
    reseeded = plan(ds, pipes(), cv={**CV, "random_state": 1}, duplicates="none")
    assert reseeded.split_fingerprint != first.split_fingerprint
    assert reseeded.experiment["id"] != first.experiment["id"]


def test_stages_refuse_what_they_cannot_use():
    p = plan(make_dataset(seed=4), pipes(), cv=CV, duplicates="none")
    with pytest.raises(ValueError, match=r"compute_features\(plan\)"):
        execute(p)
    with pytest.raises(ValueError, match="on_error must be one of 'skip', 'record', 'raise'; got 'ignore'"):
        compute_features(p, on_error="ignore")
    with pytest.raises(ValueError, match="rank_by must be one of .*; got 'auc'"):
        summarise(p, [], rank_by="auc")


class RefusesFlatImages(Moments):
    """Moments that cannot describe an image without contrast (like GLCM on a 1x1 image)."""

    def _extract(self, image, mask):
        if image.std() == 0:
            raise ValueError("no contrast")
        return super()._extract(image, mask)


def test_compute_features_excludes_an_image_for_every_pipeline_and_replans():
    ds = make_dataset(seed=8)
    flat = Sample.from_array(np.full((8, 8), 0.5, dtype=np.float32), label="benign", group="patient-flat")
    with_flat = Dataset(list(ds.samples[:4]) + [flat] + list(ds.samples[4:]), name="stages")
    pipelines = {"strict": Pipeline([("m", RefusesFlatImages()), ("lr", LogisticRegression())]),
                 "lenient": Pipeline([("m", Moments()), ("lr", LogisticRegression())])}
    before = plan(with_flat, pipelines, cv=CV, duplicates="none")
    assert len(before.samples) == 31
    with pytest.warns(UserWarning, match=r"1 image\(s\) excluded for every pipeline"):
        after = compute_features(before, progress=False)
    [excluded] = after.excluded
    assert excluded["index"] == 4 and excluded["reason"].startswith("strict: ValueError: RefusesFlatImages on sample")
    assert excluded["reason"].endswith("no contrast")
    # the plan of the images that remain: the splits and the identity of planning them directly
    clean = plan(Dataset(list(ds.samples), name="stages"), pipelines, cv=CV, duplicates="none")
    assert len(after.samples) == 30 and after.experiment == clean.experiment
    for ours, theirs in zip(after.splits, clean.splits):
        # exact: integer indices
        np.testing.assert_array_equal(ours.test, theirs.test)
    for name in pipelines:  # one feature row per remaining sample, in order, for both pipelines
        np.testing.assert_allclose(after.features[name].Z, Moments(cache=False).fit_transform(ds.samples), rtol=1e-6)


# ----------------------------------------------------------------------------- execute
def test_execute_gives_typed_fold_results_equal_to_fitting_the_whole_pipeline(tmp_path):
    ds = make_dataset(seed=5)
    pipelines = pipes()
    p = compute_features(plan(ds, pipelines, cv=CV, duplicates="none"), progress=False)
    # the features are the extractor's output on every sample, once
    np.testing.assert_allclose(p.features["lr"].Z, Moments(cache=False).fit_transform(ds.samples), rtol=1e-6)
    folds = execute(p, progress=False)
    assert all(isinstance(f, FoldResult) for f in folds) and len(folds) == 2 * 6
    assert [(f.pipeline, f.repeat, f.fold) for f in folds] == [(n, r, k) for n in ("lr", "lr_c") for r in range(2)
                                                              for k in range(3)]
    X, y = ds.samples, ds.y
    for fold in folds:
        split = dict((s.id, s) for s in p.splits)[fold.split_id]
        # exact: integer indices
        np.testing.assert_array_equal(fold.train_index, split.train)
        # exact: integer indices
        np.testing.assert_array_equal(fold.test_index, split.test)
        assert (fold.status, fold.n_train, fold.n_test) == ("ok", len(split.train), len(split.test))
        assert fold.config == p.config_hashes[fold.pipeline] and fold.error is None and not fold.resumed
        assert fold.best_params is None and set(fold.timings) == {"fit_s", "predict_s"}
        assert fold.feature_timings == p.features[fold.pipeline].timings
        # the reference: the whole pipeline fitted on the training part, as scikit-learn would
        model = clone(pipelines[fold.pipeline]).fit(X[split.train], y[split.train])
        assert fold.y_true == y[split.test].tolist()
        assert fold.y_pred == model.predict(X[split.test]).tolist()
        np.testing.assert_allclose(fold.y_score, model.predict_proba(X[split.test]), rtol=1e-9, atol=1e-12)
        expected = compute_metrics(fold.y_true, fold.y_pred, fold.y_score, labels=p.labels, pos_label=p.pos_label)
        np.testing.assert_allclose([fold.metrics[m] for m in METRIC_NAMES], [expected[m] for m in METRIC_NAMES],
                                   rtol=1e-12)
        # its folds.jsonl line and back
        record = fold.to_record()
        assert set(FOLD_RECORD_KEYS) <= set(record) and record["kind"] == "fold"
        back = FoldResult.from_record(json.loads(json.dumps(record)), train_index=split.train)
        assert back.to_record() == record


def test_execute_resumes_verified_folds_and_reruns_edited_ones(tmp_path, capsys):
    ds = make_dataset(seed=6)
    p = compute_features(plan(ds, {"lr": pipes()["lr"]}, cv=CV, duplicates="none"), progress=False)
    first = execute(p, output_dir=tmp_path, progress=False)
    assert len(FITS) == 6
    lines = [json.loads(line) for line in (tmp_path / "folds.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in lines] == ["prefix"] + ["fold"] * 6
    assert [r for r in lines if r["kind"] == "fold"] == [f.to_record() for f in first]  # one serialisation
    FITS.clear()
    again = execute(p, output_dir=tmp_path, progress=False)
    assert len(FITS) == 0 and all(f.resumed for f in again)
    assert "resuming: 6 of 6 folds done" in capsys.readouterr().err
    assert [f.to_record() for f in again] == [f.to_record() for f in first]
    assert again[0].feature_timings == first[0].feature_timings  # the stored prefix record's timings
    # an edited prediction: that fold runs again, the others are reused
    lines[3]["y_pred"] = ["malignant" if v == "benign" else "benign" for v in lines[3]["y_pred"]]
    (tmp_path / "folds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    FITS.clear()
    with pytest.warns(UserWarning, match=r"1 record\(s\) of folds.jsonl are inconsistent"):
        third = execute(p, output_dir=tmp_path, progress=False)
    assert len(FITS) == 1 and [f.resumed for f in third].count(False) == 1

    def untimed(folds):  # the refitted fold took another wall time; everything else is the same
        return [{k: v for k, v in f.to_record().items() if k != "time"} for f in folds]

    assert untimed(third) == untimed(first)


def test_a_fold_record_in_the_earlier_format_loads_unchanged():
    """folds.jsonl lines as featurepipe 0.1 wrote them (before FoldResult) read back and serialise identically."""
    ok = {"kind": "fold", "schema": 1, "pipeline": "lr", "config": "0123456789abcdef", "repeat": 0, "fold": 2,
          "n_train": 4, "n_test": 2, "status": "ok",
          "metrics": {m: (None if m == "roc_auc" else 0.5) for m in METRIC_NAMES},
          "per_class": {"a": {"f1": 0.5}, "b": {"f1": 0.5}}, "confusion_matrix": [[1, 0], [1, 0]],
          "test_index": [3, 5], "y_true": ["a", "b"], "y_pred": ["a", "a"], "y_score": [[0.75, 0.25], [0.5, None]],
          "score_kind": "predict_proba", "time": {"fit_s": 0.01, "predict_s": 0.002},
          "best_params": {"lr__C": 1.0}, "inner_best_score": 0.75, "history": None}
    failed = {"kind": "fold", "schema": 1, "pipeline": "lr", "config": "0123456789abcdef", "repeat": 1, "fold": 0,
              "n_train": 4, "n_test": 2, "status": "failed", "error": "ValueError: no", "traceback": "Traceback ..."}
    for record in (ok, failed):
        fold = FoldResult.from_record(record)
        assert fold.to_record() == record and list(fold.to_record()) == list(record)
    fold = FoldResult.from_record(ok)
    assert fold.y_score.shape == (2, 2) and math.isnan(fold.y_score[1, 1]) and fold.timings["fit_s"] == 0.01
    assert fold.train_index is None and fold.split_id == (0, 2)


# ----------------------------------------------------------------------------- summarise
def test_summarise_tidy_table_equals_the_fold_metrics(tmp_path):
    ds = make_dataset(seed=7)
    p, folds, result = _by_hand(ds, pipes(), out_dir=tmp_path, duplicates="none")
    table = result.table
    assert list(table.columns) == ["pipeline", "repeat", "fold", "status", "metric", "value"]
    assert len(table) == len(folds) * len(METRIC_NAMES) == 2 * 6 * len(METRIC_NAMES)
    for fold in folds:
        rows = table[(table["pipeline"] == fold.pipeline) & (table["repeat"] == fold.repeat)
                     & (table["fold"] == fold.fold)]
        assert rows["metric"].tolist() == list(METRIC_NAMES)
        expected = [math.nan if fold.metrics[m] is None else fold.metrics[m] for m in METRIC_NAMES]
        # exact: the table holds the fold's stored floats, copied
        np.testing.assert_array_equal(rows["value"].to_numpy(), expected)
    # the summary is the mean ± std of those values over the folds, and the pooled metrics those of all predictions
    for name in p.pipelines:
        for m in ("accuracy", "mcc", "roc_auc"):
            values = [f.metrics[m] for f in folds if f.pipeline == name]
            np.testing.assert_allclose(result.summary[name][m]["mean"], np.mean(values), rtol=1e-12)
            np.testing.assert_allclose(result.summary[name][m]["std"], np.std(values, ddof=1), rtol=1e-9)
        mine = [f for f in folds if f.pipeline == name]
        pooled = compute_metrics(sum((f.y_true for f in mine), []), sum((f.y_pred for f in mine), []),
                                 np.concatenate([f.y_score for f in mine]), labels=p.labels, pos_label=p.pos_label)
        np.testing.assert_allclose(result.pooled[name]["metrics"]["roc_auc"], pooled["roc_auc"], rtol=1e-12)
        assert result.pooled[name]["confusion_matrix"] == pooled["confusion_matrix"]
    assert result.config["resumed_folds"] == 0 and result.timings["lr"]["n_folds"] == 6
    # fold_metrics.csv renders the same table; a result read back from results.json gives it again
    with open(tmp_path / "fold_metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(table) and rows[0].keys() == {"pipeline", "repeat", "fold", "status", "metric", "value"}
    np.testing.assert_allclose([float(r["value"]) for r in rows], table["value"].to_numpy(), rtol=1e-15)
    loaded = BenchmarkResult.load(tmp_path)
    assert loaded.table.equals(table)
    assert [f.to_record() for f in loaded.fold_results()] == [f.to_record() for f in folds]
    # the report re-rendered from the stored result alone is the same report
    summary_md, recorded = (tmp_path / "summary.md").read_text(), json.loads((tmp_path / "experiment.json").read_text())
    write_report(loaded, tmp_path)
    assert (tmp_path / "summary.md").read_text() == summary_md
    assert json.loads((tmp_path / "experiment.json").read_text()) == recorded


def test_failed_folds_are_rows_without_values():
    folds = [FoldResult("a", 0, 0, "h", 4, 2, metrics={m: 0.25 for m in METRIC_NAMES}),
             FoldResult("a", 0, 1, "h", 4, 2, status="failed", error="ValueError: no")]
    table = results_table(folds)
    assert table["status"].tolist() == ["ok"] * len(METRIC_NAMES) + ["failed"] * len(METRIC_NAMES)
    assert np.isnan(table["value"].to_numpy()[len(METRIC_NAMES):]).all()
    assert table["value"].to_numpy()[:len(METRIC_NAMES)].tolist() == [0.25] * len(METRIC_NAMES)


# ----------------------------------------------------------------------------- module structure
def _benchmark_imports():
    """{module: set of featurepipe.benchmark modules it imports (anywhere in its body)}."""
    package = Path(benchmark.__file__).parent
    graph = {}
    for path in package.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps.add(node.module or "__init__")
        graph[path.stem] = deps & {p.stem for p in package.glob("*.py")}
    return graph


def test_reports_render_what_they_are_given_without_importing_the_runner():
    graph = _benchmark_imports()
    for module in ("report", "html", "plots", "results", "store", "leakage"):
        assert "runner" not in graph[module], module

    def reaches(start, target, seen=()):
        return any(dep == target or (dep not in seen and reaches(dep, target, (*seen, dep))) for dep in graph[start])

    cycles = sorted(m for m in graph if reaches(m, m))
    assert cycles == [], f"import cycles among featurepipe.benchmark modules: {cycles}"
