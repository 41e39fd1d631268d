"""The benchmark runner: same splits for all, exact per-fold results, nested CV, resume, Dask, reports."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from featurepipe import FeatureExtractor, ImageStep, Sample
from featurepipe.benchmark import (
    BenchmarkResult,
    CVSpec,
    exact_duplicate_clusters,
    make_splits,
    merge_groups,
    run_benchmark,
)
from featurepipe.benchmark.store import FoldStore
from featurepipe.cache import clear_memory_cache
from featurepipe.dataset import Dataset
from featurepipe.metrics import METRIC_NAMES, compute_metrics
from featurepipe.model_selection import group_labels
from featurepipe.stats import corrected_resampled_ttest, summarize


class Stats(FeatureExtractor):
    def __init__(self, cache=True, n_jobs=None):
        self.cache = cache
        self.n_jobs = n_jobs

    def _extract(self, image, mask):
        return [image.mean(), image.std(), np.percentile(image, 90), image[:2].mean()]

    def _feature_names(self):
        return ["mean", "std", "p90", "top"]


class Smooth(ImageStep):
    """3x3 box filter (an image step, lazy like every preprocessing step)."""

    def _transform_image(self, image, mask):
        padded = np.pad(image, 1, mode="edge")
        out = sum(padded[i:i + image.shape[0], j:j + image.shape[1]] for i in range(3) for j in range(3)) / 9
        return out.astype(np.float32), mask


class Broken(Stats):
    def _extract(self, image, mask):
        raise ValueError("cannot describe this image")


FITS = []
FAIL = {"at": None}


class FlakyLR(LogisticRegression):
    """Counts fits; raises at the FAIL["at"]-th fit (simulates an interruption)."""

    def fit(self, X, y, sample_weight=None):
        FITS.append(1)
        if FAIL["at"] is not None and len(FITS) == FAIL["at"]:
            raise RuntimeError("simulated interruption")
        return super().fit(X, y, sample_weight)


class HistoryLR(LogisticRegression):
    """A classifier that records a training history, like the Keras baselines."""

    def fit(self, X, y, sample_weight=None):
        super().fit(X, y, sample_weight)
        self.history_ = {"loss": [0.9, 0.6, 0.4], "val_loss": [1.0, 0.8, 0.7]}
        return self


class AlwaysFails(LogisticRegression):
    def fit(self, X, y, sample_weight=None):
        raise ValueError("this classifier cannot be fitted")


@pytest.fixture(autouse=True)
def _fresh():
    clear_memory_cache()
    FITS.clear()
    FAIL["at"] = None


def make_dataset(n=36, classes=("benign", "malignant"), seed=0, shift=0.06):
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        label = classes[i % len(classes)]
        k = classes.index(label)
        image = (rng.random((8, 8)) * 0.7 + shift * k).astype(np.float32)
        samples.append(Sample.from_array(image, label=label, group=f"patient{i // 2}"))
    return Dataset(samples, name="tiny")


def pipes():
    return {
        "lr": Pipeline([("stats", Stats()), ("scale", StandardScaler()), ("lr", LogisticRegression())]),
        "knn": Pipeline([("smooth", Smooth()), ("stats", Stats()), ("scale", StandardScaler()),
                         ("knn", KNeighborsClassifier(5))]),
    }


CV = {"n_splits": 3, "n_repeats": 2, "random_state": 0}


def _runner_groups(ds):
    # The runner names each merged group after its smallest patient id (so that without duplicates its
    # folds are RepeatedStratifiedGroupKFold's on the patient ids).
    patient = [s.group for s in ds.samples]
    return group_labels(patient, merge_groups(patient, exact_duplicate_clusters(ds.samples)))


def test_per_fold_results_equal_fitting_the_whole_pipeline_per_fold(tmp_path):
    ds = make_dataset()
    res = run_benchmark(ds, pipes(), cv=CV, output_dir=tmp_path, plots=False, progress=False)
    X, y = ds.samples, ds.y
    groups = _runner_groups(ds)
    splits = make_splits(y, groups, CVSpec(**CV))
    assert [(s["repeat"], s["fold"], s["test"]) for s in res.splits] == \
        [(s.repeat, s.fold, s.test.tolist()) for s in splits]
    patients = np.array([s.group for s in ds.samples])
    for s in splits:
        assert not set(patients[s.train]) & set(patients[s.test])  # patients never straddle
    assert len(res.folds) == 2 * 6
    for name, pipe in pipes().items():
        recs = [r for r in res.folds if r["pipeline"] == name]
        for rec, split in zip(recs, splits):
            assert rec["test_index"] == split.test.tolist()  # same splits for every pipeline
            model = clone(pipe).fit(X[split.train], y[split.train])
            proba = model.predict_proba(X[split.test])
            ref = compute_metrics(y[split.test], model.predict(X[split.test]), proba, labels=["benign", "malignant"])
            for m in METRIC_NAMES:
                assert rec["metrics"][m] == pytest.approx(ref[m], abs=1e-12), (name, m)
            assert rec["confusion_matrix"] == ref["confusion_matrix"]
            np.testing.assert_allclose(rec["y_score"], proba, atol=1e-12)
            assert rec["score_kind"] == "predict_proba"
        values = [r["metrics"]["mcc"] for r in recs]
        ratio = np.mean([len(s.test) for s in splits]) / np.mean([len(s.train) for s in splits])
        assert res.summary[name]["mcc"] == pytest.approx(summarize(values, test_train_ratio=ratio, bounds=(-1, 1)))
        assert res.timings[name]["n_folds"] == 6 and res.timings[name]["features_s"] > 0
    [row] = res.comparisons["mcc"]
    ref = corrected_resampled_ttest(res.fold_scores("lr", "mcc"), res.fold_scores("knn", "mcc"),
                                    test_train_ratio=res.config["test_train_ratio"])
    assert row["p_value"] == pytest.approx(ref.p_value) and row["p_holm"] == pytest.approx(ref.p_value)
    assert row["mean_diff"] == pytest.approx(ref.mean_diff)

    # reports
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["versions"]["scikit-learn"] and data["config"]["cv"] == CV
    assert data["dataset"]["class_counts"] == {"benign": 18, "malignant": 18}
    assert data["pipelines"]["lr"]["stateless_prefix"] == ["stats"]
    assert data["pipelines"]["knn"]["stateless_prefix"] == ["smooth", "stats"]
    assert res.timings["knn"]["preprocess_s"] > 0 and res.timings["lr"]["preprocess_s"] == 0
    assert data["summary"]["knn"]["accuracy"]["mean"] == pytest.approx(res.summary["knn"]["accuracy"]["mean"])
    with open(tmp_path / "folds.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and float(rows[0]["mcc"]) == pytest.approx(res.folds[0]["metrics"]["mcc"])
    md = (tmp_path / "summary.md").read_text()
    order = res.ranking("mcc")
    assert md.index(f"| 1 | {order[0]} |") < md.index(f"| 2 | {order[1]} |")
    assert "Nadeau–Bengio" in md and "Holm" in md and "Leakage report" in md
    by_acc = res.to_markdown("accuracy")
    assert "**Sorted by**: accuracy" in by_acc
    # the report can be re-rendered from results.json alone
    loaded = BenchmarkResult.load(tmp_path)
    assert loaded.to_markdown() == md and loaded.to_markdown("accuracy") == by_acc
    assert loaded.ranking("kappa") == res.ranking("kappa")


def test_nested_cv_tunes_on_the_outer_training_part_only():
    ds = make_dataset(seed=3)
    grid = {"svc__C": [0.01, 1.0, 100.0]}
    pipe = Pipeline([("stats", Stats()), ("scale", StandardScaler()), ("svc", SVC())])
    cv = {"n_splits": 3, "n_repeats": 1, "random_state": 1}
    res = run_benchmark(ds, {"svc": pipe}, cv=cv, param_grids={"svc": grid}, inner_cv=3, progress=False)
    X, y = ds.samples, ds.y
    groups = _runner_groups(ds)
    for rec, split in zip(res.folds, make_splits(y, groups, CVSpec(**cv))):
        inner = make_splits(y[split.train], groups[split.train], CVSpec(3, 1, 1))
        ref = GridSearchCV(pipe, grid, cv=[(s.train, s.test) for s in inner], scoring="balanced_accuracy")
        ref.fit(X[split.train], y[split.train])
        assert rec["best_params"] == ref.best_params_
        assert rec["inner_best_score"] == pytest.approx(ref.best_score_)
        assert rec["y_pred"] == ref.predict(X[split.test]).tolist()
        assert rec["score_kind"] == "decision_function"  # SVC without probabilities
    assert "nested CV" in res.leakage["pipelines"]["svc"]["tuning"]


@pytest.mark.filterwarnings("ignore:.*unreadable record")
def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    ds = make_dataset(seed=4)
    pipe = {"flaky": Pipeline([("stats", Stats()), ("lr", FlakyLR())])}
    FAIL["at"] = 4
    with pytest.raises(RuntimeError, match="simulated interruption"):
        run_benchmark(ds, pipe, cv=CV, output_dir=tmp_path, plots=False, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "folds.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in lines].count("fold") == 3  # three folds finished and were saved
    FAIL["at"] = None
    FITS.clear()
    resumed = run_benchmark(ds, pipe, cv=CV, output_dir=tmp_path, plots=False, progress=False)
    assert len(FITS) == 3  # only the three missing folds ran
    assert len(resumed.folds) == 6
    fresh = run_benchmark(ds, pipe, cv=CV, output_dir=None, progress=False)
    for a, b in zip(resumed.folds, fresh.folds):
        assert (a["repeat"], a["fold"]) == (b["repeat"], b["fold"])
        assert a["metrics"] == pytest.approx(b["metrics"]) and a["y_pred"] == b["y_pred"]
    # a record torn by a crash (half a line) is skipped with a warning; complete ones are reused
    with open(tmp_path / "folds.jsonl", "a") as fh:
        fh.write('{"kind": "fold", "pipeline": "fla')
    FITS.clear()
    with pytest.warns(UserWarning, match="unreadable record"):
        again = run_benchmark(ds, pipe, cv=CV, output_dir=tmp_path, plots=False, progress=False)
    assert len(FITS) == 0 and len(again.folds) == 6
    # Another configuration of the same name does not reuse those folds. Issue 10 #7 changed how: it used to be
    # appended beside the old records in the same folder; now the folder's experiment is refused, or replaced.
    FITS.clear()
    changed = {"flaky": Pipeline([("stats", Stats()), ("lr", FlakyLR(C=0.5))])}
    with pytest.raises(ValueError, match="holds another experiment"):
        run_benchmark(ds, changed, cv=CV, output_dir=tmp_path, plots=False, progress=False)
    assert len(FITS) == 0
    # a record appended after the torn line starts on a fresh line
    FoldStore(tmp_path / "folds.jsonl").append({"kind": "note"})
    lines = (tmp_path / "folds.jsonl").read_text().splitlines()
    torn = [line for line in lines if not line.endswith("}")]
    assert torn == ['{"kind": "fold", "pipeline": "fla'] and lines[-1] == '{"kind":"note"}'
    assert sum(json.loads(line)["kind"] == "fold" for line in lines if line not in torn) == 6
    run_benchmark(ds, changed, cv=CV, output_dir=tmp_path, plots=False, progress=False, overwrite=True)
    assert len(FITS) == 6
    lines = (tmp_path / "folds.jsonl").read_text().splitlines()
    assert sum(json.loads(line)["kind"] == "fold" for line in lines) == 6  # the old experiment's records are gone
    # resume=False recomputes everything
    FITS.clear()
    run_benchmark(ds, changed, cv=CV, output_dir=tmp_path, plots=False, progress=False, resume=False)
    assert len(FITS) == 6


def test_dask_backend_gives_the_sequential_results():
    distributed = pytest.importorskip("distributed")
    ds = make_dataset(seed=5)
    sequential = run_benchmark(ds, pipes(), cv=CV, progress=False)
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=2,
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        clear_memory_cache()
        on_dask = run_benchmark(ds, pipes(), cv=CV, progress=False, backend="dask", n_jobs=2)
        # connecting to a scheduler by address (the CLI's --scheduler) gives the same results too
        by_address = run_benchmark(ds, pipes(), cv=CV, progress=False, scheduler=cluster.scheduler_address)
    assert on_dask.config["backend"] == "dask" and by_address.config["backend"] == "dask"
    assert [r["metrics"] for r in by_address.folds] == [r["metrics"] for r in sequential.folds]
    assert len(on_dask.folds) == len(sequential.folds)
    for a, b in zip(sequential.folds, on_dask.folds):
        assert (a["pipeline"], a["repeat"], a["fold"]) == (b["pipeline"], b["repeat"], b["fold"])
        assert a["metrics"] == b["metrics"] and a["y_pred"] == b["y_pred"] and a["y_score"] == b["y_score"]
    with pytest.raises(ValueError, match="distributed.Client"):
        run_benchmark(ds, pipes(), cv=CV, progress=False, backend="dask")


def test_multiclass_report_plots_and_learning_curves(tmp_path):
    ds = make_dataset(n=45, classes=("benign", "malignant", "normal"), seed=6, shift=0.05)
    pipelines = {
        "history lr": Pipeline([("stats", Stats()), ("scale", StandardScaler()), ("lr", HistoryLR())]),
        "svc": Pipeline([("stats", Stats()), ("scale", StandardScaler()), ("svc", SVC())]),
    }
    res = run_benchmark(ds, pipelines, cv={"n_splits": 3, "n_repeats": 1, "random_state": 0},
                        output_dir=tmp_path, progress=False, metrics=["accuracy", "mcc", "roc_auc", "pr_auc"])
    assert res.dataset["task"] == "multi-class" and res.dataset["pos_label"] is None
    rec = res.folds[0]
    assert set(rec["per_class"]) == {"benign", "malignant", "normal"}
    assert rec["history"] == {"loss": [0.9, 0.6, 0.4], "val_loss": [1.0, 0.8, 0.7]}
    macro = np.mean([rec["per_class"][c]["roc_auc"] for c in ("benign", "malignant", "normal")])
    assert rec["metrics"]["roc_auc"] == pytest.approx(macro)
    recall_normal = [r["per_class"]["normal"]["sensitivity"] for r in res.folds if r["pipeline"] == "svc"]
    assert res.per_class["svc"]["normal"]["sensitivity"]["mean"] == pytest.approx(np.mean(recall_normal))
    with open(tmp_path / "per_class.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["pipeline"] == "svc" and r["class"] == "normal"
                and r["metric"] == "sensitivity"]
    assert float(rows[0]["mean"]) == pytest.approx(np.mean(recall_normal))
    for name in ("roc_curves", "confusion_matrices", "fold_scores", "intensity_distributions", "learning_curves",
                 "misclassified_history_lr", "misclassified_svc"):
        path = tmp_path / f"{name}.png"
        assert str(path) in res.files
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 200
    md = (tmp_path / "summary.md").read_text()
    assert "| # | pipeline | accuracy | MCC | ROC-AUC | PR-AUC |" in md
    assert "macro averages" in md and "## Per class (one-vs-rest)" in md


def test_failed_folds_are_recorded_not_hidden(tmp_path):
    ds = make_dataset(seed=7)
    pipelines = {"ok": Pipeline([("stats", Stats()), ("lr", LogisticRegression())]),
                 "broken": Pipeline([("stats", Stats()), ("lr", AlwaysFails())])}
    with pytest.warns(UserWarning) as caught:
        res = run_benchmark(ds, pipelines, cv=CV, output_dir=tmp_path, plots=False, progress=False,
                            on_error="record")
    messages = [str(w.message) for w in caught]
    assert any("pipeline 'broken' failed on repeat 0 fold 0" in m for m in messages)
    assert any("6 fold(s) failed and were recorded" in m for m in messages)
    failed = [r for r in res.folds if r["status"] == "failed"]
    assert len(failed) == 6 and all("cannot be fitted" in r["error"] for r in failed)
    assert res.summary["broken"]["accuracy"]["n"] == 0 and res.summary["ok"]["accuracy"]["n"] == 6
    assert "## Failed folds" in (tmp_path / "summary.md").read_text()
    with pytest.raises(ValueError, match="cannot be fitted"):
        run_benchmark(ds, pipelines, cv=CV, progress=False)
    # a stateless prefix that fails fails every fold of its pipeline only
    pipelines = {"ok": pipelines["ok"], "bad features": Pipeline([("f", Broken()), ("lr", LogisticRegression())])}
    with pytest.warns(UserWarning) as caught:
        res = run_benchmark(ds, pipelines, cv=CV, progress=False, on_error="record")
    assert any("stateless prefix failed: ValueError" in str(w.message) for w in caught)
    assert [r["status"] for r in res.folds if r["pipeline"] == "bad features"] == ["failed"] * 6
    assert res.summary["ok"]["accuracy"]["n"] == 6


def test_synthetic_dataset_is_labelled_in_reports(tmp_path):
    ds = make_dataset(seed=8)
    ds = Dataset(list(ds.samples), name="toy", info={"synthetic": True, "note": "made-up pixels"})
    res = run_benchmark(ds, {"lr": pipes()["lr"]}, cv=CV, output_dir=tmp_path, plots=False, progress=False)
    assert res.dataset["synthetic"] is True
    assert "**SYNTHETIC DATA** — made-up pixels" in (tmp_path / "summary.md").read_text()


def test_input_validation_names_the_parameter():
    ds = make_dataset(n=12)
    good = pipes()
    with pytest.raises(TypeError, match="non-empty dict"):
        run_benchmark(ds, [])
    with pytest.raises(TypeError, match=r"pipelines\['x'\] is the string"):
        run_benchmark(ds, {"x": "hog+svm"})
    with pytest.raises(TypeError, match="not a scikit-learn classifier"):
        run_benchmark(ds, {"x": StandardScaler()})
    with pytest.raises(ValueError, match=r"param_grids names pipelines \['nope'\]"):
        run_benchmark(ds, good, param_grids={"nope": {"C": [1]}})
    with pytest.raises(ValueError, match="cv.n_splits must be an integer >= 2"):
        run_benchmark(ds, good, cv={"n_splits": 1})
    with pytest.raises(ValueError, match="cv has unknown keys"):
        run_benchmark(ds, good, cv={"folds": 3})
    with pytest.raises(ValueError, match="rank_by"):
        run_benchmark(ds, good, rank_by="auc")
    with pytest.raises(ValueError, match="pos_label='x'"):
        run_benchmark(ds, good, pos_label="x")
    with pytest.raises(ValueError, match="duplicates"):
        run_benchmark(ds, good, duplicates="fuzzy")
    with pytest.raises(ValueError, match="only 6 independent groups"):
        run_benchmark(ds, good, cv=7, progress=False)
    with pytest.raises(ValueError, match="needs backend='dask'"):
        run_benchmark(ds, good, backend="loky", scheduler="tcp://127.0.0.1:1")
    with pytest.raises(TypeError, match="featurepipe.datasets"):
        run_benchmark("some/folder", good)
    X = [s.image for s in ds.samples]
    with pytest.raises(ValueError, match="one label per sample"):
        run_benchmark((X, ds.y[:5]), good)


def test_tuple_dataset_and_binary_pos_label():
    ds = make_dataset(seed=9)
    X = [s.image for s in ds.samples]
    y = np.where(ds.y == "malignant", 1, 0)
    groups = [s.group for s in ds.samples]
    res = run_benchmark((X, y, groups), {"lr": pipes()["lr"]}, cv=CV, progress=False, pos_label=0)
    assert res.dataset["labels"] == [0, 1] and res.dataset["pos_label"] == 0
    rec = res.folds[0]
    ref = compute_metrics(rec["y_true"], rec["y_pred"], rec["y_score"], labels=[0, 1], pos_label=0)
    assert rec["metrics"]["sensitivity"] == pytest.approx(ref["sensitivity"])
    assert res.dataset["n_patient_groups"] == 18


def test_demo_dataset_is_deterministic_synthetic_and_self_healing(tmp_path):
    from skimage.measure import label as cc_label
    from skimage.measure import regionprops

    from featurepipe.demo import DEMO_CLASSES, load_demo

    ds = load_demo(tmp_path / "a", n_per_class=8, size=64, n_duplicates=2)
    assert len(ds) == 3 * 8 + 2
    counts = ds.class_counts()
    assert all(8 <= c <= 10 for c in counts.values())  # 8 per class plus the 2 copies
    assert "SYNTHETIC" in ds.name and ds.info["synthetic"] is True and "not real medical data" in ds.info["note"]
    assert tuple(sorted(ds.class_counts())) == DEMO_CLASSES
    root = ds.root
    again = load_demo(tmp_path / "b", n_per_class=8, size=64, n_duplicates=2)
    sums_a = (tmp_path / "a").glob("*/SHA1SUMS")
    sums_b = (tmp_path / "b").glob("*/SHA1SUMS")
    assert next(sums_a).read_text() == next(sums_b).read_text()  # deterministic, byte for byte
    assert [s.key for s in ds] == [s.key for s in again]
    solidity = {"benign": [], "malignant": []}
    for s in ds:
        image, mask = s.load()
        assert image.shape == (64, 64) and image.dtype == np.float32
        if s.label == "normal":
            assert not mask.any()
        else:
            assert mask.any()
            region = max(regionprops(cc_label(mask)), key=lambda r: r.area)
            solidity[s.label].append(region.solidity)
    # smooth benign outlines are more convex than lobulated malignant ones
    assert np.mean(solidity["benign"]) > np.mean(solidity["malignant"])
    clusters = exact_duplicate_clusters(ds.samples)
    assert len(clusters) - len(set(clusters.tolist())) == 2  # the two planted copies
    # an altered file is detected and the set regenerated identically
    victim = next(iter(sorted(Path(root).glob("images/*.png"))))
    original = victim.read_bytes()
    victim.write_bytes(b"not a png")
    healed = load_demo(tmp_path / "a", n_per_class=8, size=64, n_duplicates=2)
    assert victim.read_bytes() == original and len(healed) == len(ds)
    with pytest.raises(ValueError, match="views_per_patient"):
        load_demo(tmp_path / "c", n_per_class=7)


# ----------------------------------------------------------------------------- one splitter (issue 10 #2)
class Pixel0(FeatureExtractor):
    """The first pixel: with images made of the sample index, the feature row says which sample it is."""

    def __init__(self, cache=True, n_jobs=None):
        self.cache = cache
        self.n_jobs = n_jobs

    def _extract(self, image, mask):
        return [float(image[0, 0])]

    def _feature_names(self):
        return ["pixel0"]


TRAINED_ON = []


class RecordingLR(LogisticRegression):
    """Records which rows (first column: sample index) each fit saw."""

    def fit(self, X, y, sample_weight=None):
        TRAINED_ON.append(sorted(np.rint(np.asarray(X)[:, 0] * 1000).astype(int).tolist()))
        return super().fit(X, y, sample_weight)


def test_gridsearch_with_the_splitter_and_run_benchmark_use_the_same_folds():
    from featurepipe.model_selection import RepeatedStratifiedGroupKFold

    rng = np.random.default_rng(11)
    samples = []
    for i in range(40):
        image = np.full((4, 4), i / 1000, dtype=np.float32)
        image[1:] = rng.random((3, 4))
        samples.append(Sample.from_array(image, label=("benign", "malignant")[i % 2], group=f"patient{i // 2}"))
    ds = Dataset(samples, name="indexed")
    X, y, groups = ds.samples, ds.y, [s.group for s in ds.samples]
    res = run_benchmark(ds, {"lr": Pipeline([("f", Pixel0()), ("lr", LogisticRegression())])},
                        cv={"n_splits": 4, "n_repeats": 2, "random_state": 5}, duplicates=None, progress=False)
    cv = RepeatedStratifiedGroupKFold(n_splits=4, n_repeats=2, random_state=5)
    expected = [sorted(train.tolist()) for train, _ in cv.split(X, y, groups)]
    assert [s["train"] for s in res.splits] == expected
    TRAINED_ON.clear()
    GridSearchCV(Pipeline([("f", Pixel0()), ("lr", RecordingLR())]), {"lr__C": [1.0]}, cv=cv, refit=False,
                 n_jobs=1).fit(X, y, groups=groups)
    assert TRAINED_ON == expected


def test_too_few_groups_of_a_class_is_a_clear_error_not_an_svc_error():
    samples = []
    rng = np.random.default_rng(2)
    for i in range(24):
        label = "malignant" if i >= 20 else "benign"
        group = f"m{(i - 20) // 2}" if label == "malignant" else f"b{i}"
        samples.append(Sample.from_array(rng.random((6, 6)).astype(np.float32), label=label, group=group))
    pipe = Pipeline([("stats", Stats()), ("svc", SVC())])
    with pytest.raises(ValueError, match=r"class 'malignant' in 2 group\(s\) only.*n_splits=3"):
        run_benchmark(Dataset(samples, name="few"), {"svc": pipe}, cv=3, progress=False)


# ----------------------------------------------------------------------------- split guard (issue 10 #1)
def _chained_dataset(seed=12):
    """20 one-image patients, and 20 images of 10 two-image patients chained by "near duplicate" clusters."""
    rng = np.random.default_rng(seed)
    samples, clusters = [], []
    for i in range(40):
        group = f"p{i:02d}" if i < 20 else f"q{(i - 20) // 2}"  # q0 = images 20, 21; q1 = 22, 23 ...
        samples.append(Sample.from_array(rng.random((6, 6)).astype(np.float32),
                                         label=("benign", "malignant")[i % 2], group=group))
        # clusters join 21-22, 23-24, ...: through the patients every chain image is linked to every other
        clusters.append(f"c{(i - 21) // 2}" if i >= 21 else f"single{i}")
    return Dataset(samples, name="chained"), clusters


def test_degenerate_folds_are_refused_with_the_largest_clusters_and_options():
    ds, clusters = _chained_dataset()
    merged = merge_groups([s.group for s in ds.samples], clusters)
    assert np.bincount(merged).max() == 20  # the chain is one group of 20 images
    pipe = {"lr": Pipeline([("stats", Stats()), ("lr", LogisticRegression())])}
    with pytest.raises(ValueError) as info:
        run_benchmark(ds, pipe, cv=5, duplicates=clusters, progress=False)
    message = str(info.value)
    assert "degenerate folds" in message and "21 independent groups" in message
    assert "largest: 20 images" in message and "more than twice the mean test fold (8.0)" in message
    assert "duplicates='exact' or 'none'" in message and "--duplicate-threshold" in message and "--splits" in message
    # without the chaining the same data run, and the report states the groups and every fold's sizes
    res = run_benchmark(ds, pipe, cv=5, duplicates="none", progress=False)
    assert res.dataset["n_independent_groups"] == 30  # 20 singles + 10 two-image patients
    assert res.dataset["largest_group"]["n_samples"] == 2
    sizes = res.config["fold_sizes"]
    assert [(f["n_train"], f["n_test"]) for f in sizes] == [(len(s["train"]), len(s["test"])) for s in res.splits]
    assert res.leakage["splits"]["fold_sizes"] == sizes and res.leakage["splits"]["status"] == "ok"


def test_confidence_intervals_use_the_real_fold_sizes(tmp_path):
    ds = make_dataset(n=38, seed=13)  # 19 patients of two images: folds of 14, 12, 12 images
    res = run_benchmark(ds, {"lr": pipes()["lr"]}, cv={"n_splits": 3, "n_repeats": 1, "random_state": 0},
                        output_dir=tmp_path, plots=False, progress=False)
    n_test = np.array([len(s["test"]) for s in res.splits])
    ratios = n_test / (38 - n_test)
    assert sorted(n_test.tolist()) == [12, 12, 14]
    assert res.config["test_train_ratio"] == pytest.approx(ratios.mean())
    assert abs(ratios.mean() - n_test.mean() / (38 - n_test).mean()) > 1e-4  # not the nominal ratio
    mcc = [r["metrics"]["mcc"] for r in res.folds]
    assert res.summary["lr"]["mcc"] == pytest.approx(summarize(mcc, test_train_ratio=ratios, bounds=(-1, 1)))
    md = (tmp_path / "summary.md").read_text()
    assert "19 independent groups (largest: 2 images)" in md
    expected = ", ".join(f"{38 - t}/{t}" for t in n_test)
    assert f"train/test images per fold: {expected}" in md
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["config"]["fold_sizes"][0] == {"repeat": 0, "fold": 0, "n_train": int(38 - n_test[0]),
                                               "n_test": int(n_test[0])}


# ----------------------------------------------------------------------------- missing classes, pooled (issue 10 #3)
def test_pooled_out_of_fold_metrics_and_fold_counts_in_the_tables(tmp_path):
    from sklearn.metrics import confusion_matrix, roc_auc_score

    ds = make_dataset(n=45, classes=("benign", "malignant", "normal"), seed=14, shift=0.05)
    res = run_benchmark(ds, {"lr": pipes()["lr"]}, cv={"n_splits": 3, "n_repeats": 1, "random_state": 0},
                        output_dir=tmp_path, plots=False, progress=False)
    labels = ["benign", "malignant", "normal"]
    y_true = sum((r["y_true"] for r in res.folds), [])
    y_pred = sum((r["y_pred"] for r in res.folds), [])
    scores = np.array(sum((r["y_score"] for r in res.folds), []))
    pooled = res.pooled["lr"]
    assert pooled["n_predictions"] == 45 and pooled["n_folds"] == 3
    assert pooled["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert pooled["confusion_matrix"] == np.sum([r["confusion_matrix"] for r in res.folds], axis=0).tolist()
    assert pooled["metrics"]["accuracy"] == pytest.approx(np.mean(np.array(y_true) == np.array(y_pred)))
    assert pooled["metrics"]["roc_auc"] == pytest.approx(
        roc_auc_score(y_true, scores, multi_class="ovr", average="macro", labels=labels))
    md = (tmp_path / "summary.md").read_text()
    assert "## Pooled out-of-fold predictions" in md
    assert f"| lr | 45 | {pooled['metrics']['accuracy']:.3f} |" in md
    assert BenchmarkResult.load(tmp_path).pooled == json.loads(json.dumps(res.pooled))
    # a metric defined in fewer folds than were run says so in its cell
    res.summary["lr"]["roc_auc"] = summarize([0.8, np.nan, 0.9], test_train_ratio=0.5, bounds=(0, 1))
    md = res.to_markdown()
    assert "0.850 ± 0.071 (2/3 folds)" in md
    assert "| 3/3 |" in md  # the folds column of the row


def test_demo_gives_every_class_enough_groups_for_its_default_benchmark(tmp_path):
    """The default demo (5 folds, near-duplicate grouping) has every class in every test fold."""
    import warnings

    from featurepipe.demo import load_demo
    from featurepipe.duplicates import find_duplicates

    ds = load_demo(tmp_path)
    report = find_duplicates(ds.samples)
    patients = [s.group for s in ds.samples]
    merged = group_labels(patients, merge_groups(patients, np.asarray(report.cluster_ids, dtype=object)))
    y = ds.y
    per_class = {c: len(set(merged[y == c].tolist())) for c in ("benign", "malignant", "normal")}
    assert min(per_class.values()) >= 25, per_class  # 30 synthetic patients per class; few near-duplicate merges
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits = make_splits(y, merged, CVSpec(5, 1, 0))
    for split in splits:
        assert set(y[split.test].tolist()) == {"benign", "malignant", "normal"}
    sizes = [len(s.test) for s in splits]
    assert max(sizes) <= 1.2 * np.mean(sizes)


# ----------------------------------------------------------------------------- verified resume (issue 11 #5)
def test_resume_verifies_the_stored_records(tmp_path):
    ds = make_dataset(seed=15)
    pipe = {"flaky": Pipeline([("stats", Stats()), ("scale", StandardScaler()), ("lr", FlakyLR())])}
    first = run_benchmark(ds, pipe, cv=CV, output_dir=tmp_path, plots=False, progress=False)
    path = tmp_path / "folds.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    folds = [r for r in lines if r["kind"] == "fold"]
    folds[0]["metrics"]["mcc"] = folds[0]["metrics"]["mcc"] + 0.2  # an edited number
    del folds[1]["metrics"]  # an incomplete record (crashed the rerun with KeyError)
    flip = {"benign": "malignant", "malignant": "benign"}
    folds[2]["y_pred"] = [flip[v] for v in folds[2]["y_pred"]]  # edited predictions: the metrics no longer follow
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    FITS.clear()
    with pytest.warns(UserWarning, match=r"3 record\(s\) of folds.jsonl are inconsistent or incomplete") as caught:
        again = run_benchmark(ds, pipe, cv=CV, output_dir=tmp_path, plots=False, progress=False)
    assert sum("inconsistent or incomplete" in str(w.message) for w in caught) == 1  # warned once
    assert len(FITS) == 3  # exactly those three folds ran again
    assert [r["metrics"] for r in again.folds] == pytest.approx([r["metrics"] for r in first.folds])
    assert again.summary["flaky"]["mcc"]["mean"] == pytest.approx(first.summary["flaky"]["mcc"]["mean"])
    # the recomputed records are now the valid ones: a further rerun reuses everything
    FITS.clear()
    run_benchmark(ds, pipe, cv=CV, output_dir=tmp_path, plots=False, progress=False)
    assert len(FITS) == 0


# ----------------------------------------------------------------------------- one folder, one experiment (issue 10 #7)
def test_one_output_folder_holds_one_experiment(tmp_path, capsys):
    ds = make_dataset(seed=16)
    pipe = {"flaky": Pipeline([("stats", Stats()), ("lr", FlakyLR())])}
    FAIL["at"] = 4
    with pytest.raises(RuntimeError, match="simulated interruption"):
        run_benchmark(ds, pipe, cv=CV, output_dir=tmp_path, plots=False, progress=False)
    FAIL["at"] = None
    capsys.readouterr()
    first = run_benchmark(ds, pipe, cv=CV, output_dir=tmp_path, progress=False)  # with plots
    assert "resuming: 3 of 6 folds done" in capsys.readouterr().err
    recorded = json.loads((tmp_path / "experiment.json").read_text())
    assert recorded["pipelines"] == {"flaky": first.pipelines["flaky"]["config_hash"]}
    plots = sorted(p.name for p in tmp_path.glob("*.png"))
    assert plots and set(plots) <= set(recorded["files"])
    (tmp_path / "notes.txt").write_text("mine")
    other = {"other": Pipeline([("stats", Stats()), ("lr", LogisticRegression(C=3.0))])}
    with pytest.raises(ValueError, match=r"holds another experiment \(pipelines added: \['other'\]; pipelines "
                                         r"missing: \['flaky'\]\).*overwrite=True \(CLI --overwrite\)"):
        run_benchmark(ds, other, cv=CV, output_dir=tmp_path, plots=False, progress=False)
    with pytest.raises(ValueError, match=r"cv \{'n_splits': 3, 'n_repeats': 2, 'random_state': 0\} before, "
                                         r"\{'n_splits': 2, 'n_repeats': 2, 'random_state': 0\} now"):
        run_benchmark(ds, pipe, cv={**CV, "n_splits": 2}, output_dir=tmp_path, plots=False, progress=False)
    res = run_benchmark(ds, other, cv=CV, output_dir=tmp_path, plots=False, progress=False, overwrite=True)
    assert not list(tmp_path.glob("*.png"))  # the old experiment's plots are gone
    assert (tmp_path / "notes.txt").read_text() == "mine"  # files the benchmark did not write stay
    assert list(json.loads((tmp_path / "results.json").read_text())["summary"]) == ["other"]
    assert res.config["resumed_folds"] == 0


def test_two_processes_cannot_write_one_folder(tmp_path):
    import subprocess
    import sys

    from featurepipe.benchmark.store import OutputLockedError

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom featurepipe.benchmark.store import output_lock\n"
                               "with output_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)\n",
         str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        ds = make_dataset(seed=17)
        with pytest.raises(OutputLockedError, match=rf"being written by process {holder.pid} on "):
            run_benchmark(ds, {"lr": pipes()["lr"]}, cv=CV, output_dir=tmp_path, plots=False, progress=False)
        assert not (tmp_path / "folds.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone (killed, not cleanly released): the folder is free again
    res = run_benchmark(make_dataset(seed=17), {"lr": pipes()["lr"]}, cv=CV, output_dir=tmp_path, plots=False,
                        progress=False)
    assert len(res.folds) == 6


# ----------------------------------------------------------------------------- bad images (issue 11 #9)
def test_an_image_that_cannot_be_processed_is_excluded_for_every_pipeline(tmp_path):
    from featurepipe.features.glcm import GLCMFeatures

    rng = np.random.default_rng(18)
    good = [Sample.from_array(rng.random((8, 8)).astype(np.float32), label=("benign", "malignant")[i % 2],
                              group=f"patient{i}") for i in range(24)]
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    bad = [Sample.from_path(corrupt, label="malignant", group="patient-x"),
           Sample.from_array(np.full((1, 1), 0.5, dtype=np.float32), label="benign", group="patient-y")]
    ds = Dataset(good[:10] + bad[:1] + good[10:20] + bad[1:] + good[20:], name="with bad images")
    pipelines = {
        "glcm": Pipeline([("glcm", GLCMFeatures(levels=8)), ("scale", StandardScaler()), ("lr", LogisticRegression())]),
        "stats": Pipeline([("stats", Stats()), ("scale", StandardScaler()), ("lr", LogisticRegression())]),
    }
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match=r"2 image\(s\) excluded for every pipeline"):
        res = run_benchmark(ds, pipelines, cv=CV, output_dir=out, plots=False, progress=False)
    excluded = {e["name"]: e["reason"] for e in res.dataset["excluded"]}
    assert set(excluded) == {"corrupt.png", bad[1].name}
    assert "ImageReadError" in excluded["corrupt.png"] and "glcm: ValueError" in excluded[bad[1].name]
    assert "stats:" not in excluded[bad[1].name]  # Stats copes with a 1x1 image, GLCM does not: out of both
    assert res.dataset["n_samples"] == 24
    assert [e["name"] for e in res.leakage["excluded_images"]] == [e["name"] for e in res.dataset["excluded"]]
    md = (out / "summary.md").read_text()
    assert "**Excluded images**: 2" in md and "**Excluded image** corrupt.png: " in md
    # exactly the benchmark of the good images alone, for both pipelines
    clean = run_benchmark(Dataset(good, name="clean"), pipelines, cv=CV, plots=False, progress=False)
    assert [s["test"] for s in res.splits] == [s["test"] for s in clean.splits]
    for a, b in zip(res.folds, clean.folds):
        assert (a["pipeline"], a["repeat"], a["fold"]) == (b["pipeline"], b["repeat"], b["fold"])
        assert a["metrics"] == pytest.approx(b["metrics"], nan_ok=True) and a["y_pred"] == b["y_pred"]
    # on_error="raise" keeps the old behaviour: the first bad image stops the run
    with pytest.raises(Exception, match="cannot read image"):
        run_benchmark(ds, pipelines, cv=CV, progress=False, on_error="raise")


def test_a_fold_whose_training_part_is_too_small_for_the_calibration_is_named(tmp_path):
    """MIAS-like: a class with 2 images in a training part cannot feed a calibrated recipe's inner
    3-fold CV; the error names the pipeline, the fold and the training part's class counts."""
    rng = np.random.default_rng(0)
    X, y, groups = [], [], []
    for k in range(21):
        label = "rare" if k < 3 else ("a" if k % 2 else "b")
        X.append(Sample.from_array(rng.uniform(0, 0.3 + 0.5 * (label == "a"), (16, 16)).astype(np.float32)))
        y.append(label)
        groups.append(f"p{k}")
    with pytest.raises(ValueError) as info:
        run_benchmark((X, y, groups), ["firstorder_glcm_svm"], cv=3, duplicates="none", progress=False, plots=False)
    message = str(info.value)
    assert "pipeline 'firstorder_glcm_svm', repeat 0 fold" in message
    assert "rare: 2" in message and "fewer outer folds" in message


def test_where_features_are_cached_does_not_change_the_experiment(tmp_path, capsys):
    """`--cache DIR` / `--no-cache` only decide whether features are recomputed: a rerun with another
    cache location resumes the same experiment instead of being refused as a different one."""
    ds = make_dataset(seed=9)
    out = tmp_path / "run"
    first = run_benchmark(ds, {"lr": Pipeline([("stats", Stats(cache=str(tmp_path / "c1"))),
                                               ("lr", LogisticRegression())])},
                          cv=CV, output_dir=out, plots=False, progress=False)
    capsys.readouterr()
    again = run_benchmark(ds, {"lr": Pipeline([("stats", Stats(cache=False)), ("lr", LogisticRegression())])},
                          cv=CV, output_dir=out, plots=False, progress=False)
    assert "resuming: 6 of 6 folds done" in capsys.readouterr().err
    assert again.summary["lr"]["mcc"] == first.summary["lr"]["mcc"]  # exact: the stored folds, not refitted
    assert "cache" not in again.pipelines["lr"]["estimator"]
