"""Benchmark curves: mean over folds of per-fold curves, printing exactly the table's AUC values."""

import copy
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from featurepipe import recipes
from featurepipe.benchmark import run_benchmark
from featurepipe.benchmark.plots import (CURVE_GRID, OKABE_ITO, curve_summary, fold_curve, mean_curve, plot_confusion,
                                         plot_curves, plot_fold_scores, plot_intensities, plot_learning_curves,
                                         plot_misclassified)
from featurepipe.features import FirstOrderFeatures
from featurepipe.metrics import METRIC_LABELS

# Two hand-made folds. Fold A: ROC points (0,0) (0,.5) (.5,.5) (.5,1) (1,1), AUC 3/4.
# Fold B (a tie between a positive and a negative): (0,0) (.5,.5) (.5,1) (1,1), AUC 5/8.
FOLD_A = (np.array([1, 1, 0, 0], bool), np.array([0.9, 0.4, 0.6, 0.1]))
FOLD_B = (np.array([1, 0, 1, 0], bool), np.array([0.5, 0.5, 0.2, 0.1]))
GRID = np.array([0.0, 0.25, 0.5, 0.75, 1.0])


def test_mean_roc_of_two_hand_made_folds():
    a = fold_curve("roc", *FOLD_A, grid=GRID)
    b = fold_curve("roc", *FOLD_B, grid=GRID)
    # On a vertical step the curve takes its top; between points it is linear (B's tie diagonal).
    np.testing.assert_allclose(a, [0.5, 0.5, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(b, [0.0, 0.25, 1.0, 1.0, 1.0])
    mean, std = mean_curve([a, b])
    np.testing.assert_allclose(mean, [0.25, 0.375, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(std, [0.25, 0.125, 0.0, 0.0, 0.0])
    # The interpolated curve has the fold's ROC-AUC as its area (trapezoids on a fine grid).
    fine = np.linspace(0, 1, 20001)
    for positive, scores in (FOLD_A, FOLD_B):
        area = np.trapezoid(fold_curve("roc", positive, scores, grid=fine), fine)
        assert area == pytest.approx(roc_auc_score(positive, scores), abs=1e-4)


def test_mean_precision_recall_of_two_hand_made_folds():
    # Fold A ranks P N P N: (recall, precision) = (.5, 1) (.5, .5) (1, 2/3) (1, .5); AP = 5/6.
    a = fold_curve("pr", *FOLD_A, grid=GRID)
    np.testing.assert_allclose(a, [1.0, 1.0, 1.0, 2 / 3, 2 / 3])
    # Fold B: the tie gives (.5, .5) at once, then (1, 2/3); AP = 7/12.
    b = fold_curve("pr", *FOLD_B, grid=GRID)
    np.testing.assert_allclose(b, [1.0, 0.5, 0.5, 2 / 3, 2 / 3])
    mean, std = mean_curve([a, b])
    np.testing.assert_allclose(mean, [1.0, 0.75, 0.75, 2 / 3, 2 / 3])
    np.testing.assert_allclose(std, [0.0, 0.25, 0.25, 0.0, 0.0])
    # The step function's area is the average precision.
    fine = np.linspace(0, 1, 20001)
    for positive, scores in (FOLD_A, FOLD_B):
        area = np.sum(fold_curve("pr", positive, scores, grid=fine)[1:]) * (fine[1] - fine[0])
        assert area == pytest.approx(average_precision_score(positive, scores), abs=1e-4)
    with pytest.raises(ValueError, match="kind must be 'roc' or 'pr'; got 'det'"):
        fold_curve("det", *FOLD_A)


def _images(n_per_class, seed):
    """Three classes of 24x24 images told apart by their brightness, with overlap (AUC below 1)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, level in (("benign", 0.45), ("malignant", 0.5), ("normal", 0.55)):
        for _ in range(n_per_class):
            images.append(np.clip(rng.normal(level + rng.normal(0, 0.03), 0.1, (24, 24)), 0, 1).astype(np.float32))
            labels.append(label)
    return images, np.array(labels)


@pytest.fixture(scope="module")
def result():
    X, y = _images(12, seed=0)
    groups = [f"p{i}" for i in range(len(y))]
    pipelines = {
        "first-order + LR": Pipeline([("features", FirstOrderFeatures()), ("scale", StandardScaler()),
                                      ("classifier", LogisticRegression())]),
        "glcm_svm": recipes.make("glcm_svm"),
    }
    with pytest.warns(UserWarning, match="duplicate images were not checked"):
        return run_benchmark((X, y, groups), pipelines, cv={"n_splits": 3, "n_repeats": 2, "random_state": 0},
                             duplicates=None, progress=False, plots=False)


@pytest.mark.parametrize("kind, metric", [("roc", "roc_auc"), ("pr", "pr_auc")])
def test_plotted_numbers_are_the_table_values_and_curves_are_fold_means(result, kind, metric, tmp_path):
    files, printed = plot_curves(result, kind, tmp_path / f"{kind}.png")
    assert files == [str(tmp_path / f"{kind}.png"), str(tmp_path / f"{kind}.svg")]
    with Image.open(files[0]) as im:
        assert im.format == "PNG"
    svg = (tmp_path / f"{kind}.svg").read_text(encoding="utf-8")
    assert printed.keys() == result.summary.keys()
    for name, info in printed.items():
        recs = [r for r in result.folds if r["pipeline"] == name and r["status"] == "ok"]
        assert len(recs) == 6  # 3 folds x 2 repeats: every fold of every repeat
        # The panel's number is the summary table's cell: the mean of the per-fold values.
        per_fold = [r["metrics"][metric] for r in recs]
        assert info["summary"]["mean"] == result.summary[name][metric]["mean"]  # exact: the same stored float
        assert info["summary"]["mean"] == pytest.approx(np.mean(per_fold), rel=1e-12)
        assert info["summary"]["n"] == 6
        for label, curve in info["classes"].items():
            values = [r["per_class"][label][metric] for r in recs]
            # exact: the plot reads the table's stored float, it does not recompute it
            assert curve["auc"]["mean"] == result.per_class[name][label][metric]["mean"]
            assert curve["auc"]["mean"] == pytest.approx(np.mean(values), rel=1e-12)
            assert curve["auc"]["std"] == result.per_class[name][label][metric]["std"]  # exact: as above
            # ... and that is the text in the figure.
            text = f"{label}: AUC {curve['auc']['mean']:.3f} ± {curve['auc']['std']:.3f} (6 folds)"
            assert text in svg, text
            # The drawn curve is the mean of the per-fold curves on the common grid.
            j = result.dataset["labels"].index(label)
            folds = [fold_curve(kind, np.array(r["y_true"]) == label, np.asarray(r["y_score"])[:, j])
                     for r in recs]
            np.testing.assert_allclose(curve["mean"], np.mean(folds, axis=0), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(curve["std"], np.std(folds, axis=0), rtol=1e-12, atol=1e-12)
            assert curve["n_curves"] == 6 and curve["mean"].shape == CURVE_GRID.shape
        summary_text = f"{'ROC-AUC' if kind == 'roc' else 'PR-AUC'} {info['summary']['mean']:.3f}"
        assert summary_text in svg
    # Okabe-Ito colours draw the class curves.
    assert OKABE_ITO[0].lower() in svg.lower() and OKABE_ITO[1].lower() in svg.lower()


def test_binary_problem_plots_the_positive_class_only(tmp_path):
    X, y = _images(10, seed=1)
    keep = y != "normal"
    X, y = [x for x, k in zip(X, keep) if k], y[keep]
    with pytest.warns(UserWarning, match="duplicate images were not checked"):
        res = run_benchmark((X, y, [f"p{i}" for i in range(len(y))]), ["glcm_svm"], cv=2, duplicates=None,
                            progress=False, plots=False)
    summary = curve_summary(res, "roc")
    assert list(summary["glcm_svm"]["classes"]) == ["malignant"]
    cell = summary["glcm_svm"]["classes"]["malignant"]["auc"]
    # Binary: the summary ROC-AUC is the positive class's, so the two printed numbers agree
    # (exact: both are the table's stored floats, computed once from the same fold values).
    assert cell["mean"] == summary["glcm_svm"]["summary"]["mean"] == res.summary["glcm_svm"]["roc_auc"]["mean"]
    recs = [r for r in res.folds if r["status"] == "ok"]
    assert cell["n"] == len(recs) == 2
    assert cell["mean"] == pytest.approx(np.mean([r["per_class"]["malignant"]["roc_auc"] for r in recs]), rel=1e-12)


# ----------------------------------------------------------------------------- the other figures' content
def _texts(svg_path):
    """The strings drawn in an SVG written with text kept as text."""
    return re.findall(r"<text[^>]*>([^<]*)</text>", Path(svg_path).read_text(encoding="utf-8"))


def _samples(result):
    """The test fixture's images as the runner's samples (image, label, name), in dataset order."""
    X, y = _images(12, seed=0)
    return [SimpleNamespace(image=x, label=label, name=f"img{i:03d}.png") for i, (x, label) in enumerate(zip(X, y))]


@pytest.fixture(autouse=False)
def no_cut_text():
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*text cut off.*")
        yield


@pytest.mark.parametrize("normalise", [False, True])
def test_confusion_matrices_have_a_colour_bar_and_a_row_normalised_variant(result, normalise, tmp_path, no_cut_text):
    files = plot_confusion(result, tmp_path / "cm.png", normalise=normalise)
    assert files == [str(tmp_path / "cm.png"), str(tmp_path / "cm.svg")]
    texts = _texts(files[1])
    assert texts.count("fraction of true class" if normalise else "images") == len(result.summary)  # bar labels
    labels = result.dataset["labels"]
    for name in result.summary:
        cm = sum(np.array(r["confusion_matrix"]) for r in result.folds if r["pipeline"] == name and r["repeat"] == 0)
        assert cm.sum() == len(result.dataset["labels"]) * 12  # the first repeat tests every image once
        cells = (cm / cm.sum(axis=1, keepdims=True)) if normalise else cm
        expected = [f"{v:.2f}" if normalise else str(v) for v in cells.ravel()]
        # The panel's cell texts, drawn one after another in row-major order.
        runs = [texts[i:i + len(expected)] for i in range(len(texts) - len(expected) + 1)]
        assert expected in runs, (name, expected)
        assert name in texts
        if normalise:
            np.testing.assert_allclose(cells.sum(axis=1), np.ones(len(labels)))


def test_fold_scores_one_panel_per_metric_with_full_names(result, tmp_path, no_cut_text):
    long_name = "firstorder_glcm_svm with a long name"
    renamed = copy.deepcopy(result)
    for table in (renamed.summary, renamed.timings, renamed.per_class, renamed.pooled):
        table[long_name] = table.pop("glcm_svm")
    for r in renamed.folds:
        r["pipeline"] = long_name if r["pipeline"] == "glcm_svm" else r["pipeline"]
    files = plot_fold_scores(renamed, tmp_path / "folds.png")
    svg = Path(files[1]).read_text(encoding="utf-8")
    metrics = list(dict.fromkeys([renamed.config["rank_by"]] + [m for m in renamed.config["metrics"] if m in (
        "accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "mcc")]))
    assert len(re.findall(r'<g id="axes_\d+">', svg)) == len(metrics)  # every panel drawn holds a metric
    texts = _texts(files[1])
    assert texts.count(long_name) == 1 and texts.count("first-order + LR") == 1  # full names, once (shared axis)
    for metric in metrics:
        assert METRIC_LABELS[metric] in texts


def test_intensities_average_every_image_of_each_class(result, tmp_path, no_cut_text):
    files = plot_intensities(result, _samples(result), tmp_path / "int.png")
    texts = _texts(files[1])
    for label, count in result.dataset["class_counts"].items():
        assert f"{label} (mean of {count} images)" in texts  # 12 per class: all of them, not a subset
    assert files[0].endswith("int.png") and Path(files[0]).stat().st_size > 0


def test_misclassified_titles_give_the_predicted_class_probability(result, tmp_path, no_cut_text):
    name = "glcm_svm"
    files = plot_misclassified(result, name, _samples(result), tmp_path / "mis.png")
    texts = _texts(files[1])
    labels = result.dataset["labels"]
    wrong = [(r["y_score"][k][labels.index(p)], r["test_index"][k], t, p) for r in result.folds
             if r["pipeline"] == name and r["repeat"] == 0
             for k, (t, p) in enumerate(zip(r["y_true"], r["y_pred"])) if t != p]
    score, index, true, pred = max(wrong, key=lambda w: w[0])  # the most confident mistake comes first
    first = texts.index(f"img{index:03d}.png")
    assert texts[first + 1:first + 3] == [f"true {true} → {pred}", f"p({pred})={score:.2f}"]
    assert sum(t.startswith("p(") for t in texts) == min(16, len(wrong))


def test_learning_curves_loss_and_accuracy_apart_with_fine_tuning_marked(result, tmp_path, no_cut_text):
    keras_like = copy.deepcopy(result)
    for r in keras_like.folds:
        if r["pipeline"] == "glcm_svm":  # a hand-made two-phase history: 3 head epochs, then fine-tuning
            r["history"] = {"loss": [1.0, 0.8, 0.7, 0.5, 0.4], "val_loss": [1.1, 0.9, 0.85, 0.7, 0.65],
                            "accuracy": [0.4, 0.5, 0.6, 0.7, 0.8], "val_accuracy": [0.35, 0.45, 0.5, 0.6, 0.65],
                            "learning_rate": [1e-3] * 3 + [1e-5] * 2, "fine_tuning_start_epoch": [4.0]}
    files = plot_learning_curves(keras_like, tmp_path / "lc.png")
    svg = Path(files[1]).read_text(encoding="utf-8")
    texts = _texts(files[1])
    assert len(re.findall(r'<g id="axes_\d+">', svg)) == 2  # loss and accuracy on their own axes
    assert "loss (cross-entropy)" in texts and "accuracy" in texts
    # One legend per axis: training, validation, fine-tuning start (not one entry per fold and key).
    assert texts.count("training") == texts.count("validation") == texts.count("fine-tuning starts") == 2
    assert "glcm_svm: loss (6 folds)" in texts
    assert plot_learning_curves(result, tmp_path / "none.png") is None  # no history, no figure


def test_synthetic_appears_once_in_a_title(result, tmp_path):
    for name in ("synthetic-lesions (SYNTHETIC)", "made-up"):
        demo = copy.deepcopy(result)
        demo.dataset.update(name=name, synthetic=True)
        files = plot_fold_scores(demo, tmp_path / "f.png")
        title = " ".join(t for t in _texts(files[1]) if "Per-fold" in t or "SYNTHETIC" in t)
        assert title.count("SYNTHETIC") == 1, title  # upper case: the label, not the "synthetic-lesions" name


def test_cam_panel_explains_linear_cnn_heads_and_skips_others(tmp_path):
    """A class-activation-map panel is written for a CNN pipeline with a one-vs-rest linear head (each map
    explains the class the refitted fold model predicts) and not for a head CAM cannot explain."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    from featurepipe import Sample
    from featurepipe.benchmark import run_benchmark
    from featurepipe.benchmark.plots import figure_caption
    from featurepipe.cnn import CNNFeatures

    rng = np.random.default_rng(0)
    X, y, groups = [], [], []
    for k in range(24):
        label = ("bright", "dark", "grey")[k % 3]
        image = rng.uniform(0, 0.2, (32, 32)) + {"bright": 0.7, "dark": 0.0, "grey": 0.35}[label]
        X.append(Sample.from_array(np.clip(image, 0, 1).astype(np.float32)))
        y.append(label)
        groups.append(f"p{k}")
    cnn = CNNFeatures("mobilenet_v2", weights=None, input_size=32)
    pipelines = {"linear": Pipeline([("cnn", cnn), ("scale", StandardScaler()), ("svm", LinearSVC(C=0.1))]),
                 "rbf": Pipeline([("cnn", cnn), ("scale", StandardScaler()), ("svm", SVC())])}
    result = run_benchmark((X, y, groups), pipelines, cv=3, duplicates="none", output_dir=tmp_path,
                           progress=False)
    assert (tmp_path / "cam_linear.png").is_file() and (tmp_path / "cam_linear.svg").is_file()
    assert not (tmp_path / "cam_rbf.png").exists()  # an RBF head is refused by the maps: no panel
    assert "Class activation maps" in figure_caption(result, "cam_linear.png")
    svg = (tmp_path / "cam_linear.svg").read_text()
    fold = sorted((r for r in result.folds if r["pipeline"] == "linear" and r["repeat"] == 0),
                  key=lambda r: r["fold"])[0]
    shown = [f"true {t} → {p}" for t, p in zip(fold["y_true"], fold["y_pred"])]
    assert any(text in svg for text in shown)  # the titles are the fold's own predictions


def test_cam_panel_of_a_pipeline_whose_image_step_changes_the_size(tmp_path):
    """The maps are overlaid on the image the network saw: an image step that crops or resizes (median +
    CLAHE + Otsu crop on mammograms) must not make the panel, and with it the whole run, fail."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from featurepipe import Sample
    from featurepipe.benchmark import run_benchmark
    from featurepipe.cnn import CNNFeatures
    from featurepipe.preprocessing import Resize

    rng = np.random.default_rng(1)
    X, y, groups = [], [], []
    for k in range(18):
        label = ("bright", "dark")[k % 2]
        image = rng.uniform(0, 0.2, (48, 40)) + {"bright": 0.7, "dark": 0.0}[label]
        X.append(Sample.from_array(np.clip(image, 0, 1).astype(np.float32)))
        y.append(label)
        groups.append(f"p{k}")
    pipe = Pipeline([("resize", Resize(32)), ("cnn", CNNFeatures("mobilenet_v2", weights=None, input_size=32)),
                     ("scale", StandardScaler()), ("svm", LinearSVC(C=0.1))])
    run_benchmark((X, y, groups), {"resized": pipe}, cv=3, duplicates="none", output_dir=tmp_path, progress=False)
    assert (tmp_path / "cam_resized.png").is_file() and (tmp_path / "cam_resized.svg").is_file()
