"""PNG plots of a benchmark run (matplotlib, Agg renderer, no global pyplot state).

* ``roc_curves.png`` and ``pr_curves.png`` (each with an ``.svg`` twin whose
  text stays text) — per pipeline, the one-vs-rest ROC and precision-recall
  curves of every class (binary problems: the positive class), as the mean
  over the folds (all repeats) of each fold's curve interpolated on a common
  grid, with a ±1 standard deviation band. The AUC printed for a class is the
  per-class table's value (``result.per_class``: the mean of the per-fold
  values), and the panel title gives the summary table's ROC-AUC / PR-AUC
  (``result.summary``), with the number of folds behind each: the plots print
  exactly the table's numbers. Curves of one fold use that fold's model only,
  so scores of different models are never pooled into one curve;
* ``confusion_matrices.png`` — per pipeline, counts summed over the folds of
  the first repeat, coloured by row (recall) fraction;
* ``fold_scores.png`` — per metric, the distribution of the per-fold scores
  of each pipeline (box plot and points);
* ``misclassified_<pipeline>.png`` — the most confidently misclassified
  images of the first repeat, with true and predicted labels;
* ``intensity_distributions.png`` — per class, the mean histogram of pixel
  intensities (a quick check of acquisition differences between classes);
* ``learning_curves.png`` — training histories, for pipelines whose final
  estimator exposes ``history_`` (Keras baselines).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from matplotlib.figure import (
    Figure,  # used without pyplot: PNGs render with Agg, no global state
)
from sklearn.metrics import precision_recall_curve, roc_curve

from ..metrics import METRIC_LABELS

__all__ = ["CURVE_GRID", "FIGURE_NAMES", "OKABE_ITO", "curve_summary", "figure_caption", "figure_files",
           "fold_curve", "mean_curve", "plot_curves", "slug",
           "write_plots"]

_MAX_PANELS_PER_ROW = 4
#: Okabe & Ito (2008) colour-blind-safe palette (blue, vermillion, bluish green, reddish purple, orange,
#: sky blue, yellow, black), used for every plot's colour cycle.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
#: Common abscissa of the mean curves: false-positive rate (ROC) or recall (PR), 0 to 1 in steps of 0.01.
CURVE_GRID = np.linspace(0.0, 1.0, 101)
_CURVE_METRIC = {"roc": "roc_auc", "pr": "pr_auc"}


def slug(name):
    """A file-name-safe version of a pipeline name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "pipeline"


def _grid(n, size=(4.0, 3.6), max_cols=_MAX_PANELS_PER_ROW):
    cols = min(n, max_cols)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(size[0] * cols, size[1] * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.set_prop_cycle(color=OKABE_ITO)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _first_repeat(result, name):
    return [r for r in result.folds if r["pipeline"] == name and r.get("status") == "ok" and r["repeat"] == 0]


def _pooled(recs):
    y_true, y_pred, scores, index = [], [], [], []
    for r in recs:
        y_true += r["y_true"]
        y_pred += r["y_pred"]
        index += r["test_index"]
        if r.get("y_score") is not None:
            scores += r["y_score"]
    scores = np.array(scores, dtype=np.float64) if len(scores) == len(y_true) and scores else None
    return np.array(y_true, dtype=object), np.array(y_pred, dtype=object), scores, np.array(index, dtype=int)


def _title(result, name):
    return name if len(name) <= 40 else name[:37] + "..."


def _suptitle(fig, result, text):
    if result.dataset.get("synthetic"):
        text += "  [SYNTHETIC DATA]"
    fig.suptitle(f"{text} — {result.dataset['name']}", fontsize=11)


#: The figures a benchmark writes, in report order (``misclassified_<pipeline>.png``: one per pipeline).
FIGURE_NAMES = ("roc_curves.png", "pr_curves.png", "confusion_matrices.png", "confusion_matrices_normalised.png",
                "fold_scores.png", "intensity_distributions.png", "learning_curves.png")


def figure_files(directory):
    """The benchmark figures (PNG) present in ``directory``, in report order; each may have an SVG twin."""
    directory = Path(directory)
    named = [directory / n for n in FIGURE_NAMES if (directory / n).is_file()]
    return named + sorted(directory.glob("misclassified_*.png"))


def figure_caption(result, filename):
    """What the figure ``filename`` (a name from :func:`figure_files`) shows and how it was computed."""
    name = Path(filename).name
    cv = result.config["cv"]
    folds = f"{cv['n_splits']} folds × {cv['n_repeats']} repeat(s)"
    synthetic = " Synthetic data: says nothing about clinical performance." if result.dataset.get("synthetic") else ""
    if name in ("roc_curves.png", "pr_curves.png"):
        what = ("ROC curves (sensitivity against 1 − specificity)" if name.startswith("roc")
                else "Precision-recall curves")
        how = ("linearly interpolated" if name.startswith("roc")
               else "as the step function whose area is the average precision")
        text = (f"{what} per pipeline, one-vs-rest per class (binary: the positive class). Each fold's curve is "
                f"computed from that fold's model's calibrated test scores, evaluated on a common grid of 101 "
                f"points ({how}); the line is the mean over the {folds} and the band ±1 standard deviation. The AUC "
                "printed for each class and in the panel title is the table's value: the mean ± std of the "
                "per-fold AUCs, with the number of folds in which it was defined.")
    elif name == "confusion_matrices.png":
        text = ("Confusion matrices per pipeline: counts of test images (rows: true class, columns: predicted), "
                "summed over the folds of the first repeat, so every image is counted once. Colour and colour bar: "
                "the count.")
    elif name == "confusion_matrices_normalised.png":
        text = ("Row-normalised confusion matrices: each row of the first repeat's summed confusion matrix divided "
                "by its total, so the diagonal is each class's recall (sensitivity) and a row sums to 1. Colour "
                "bar: fraction of the true class.")
    elif name == "fold_scores.png":
        text = (f"Per-fold test scores of every pipeline ({folds}): box plots (median, quartiles, whiskers at "
                "1.5 IQR) with each fold as a point (horizontal jitter only). One panel per metric, pipelines in "
                "table order.")
    elif name == "intensity_distributions.png":
        counts = ", ".join(f"{k}: {v}" for k, v in result.dataset["class_counts"].items())
        text = ("Mean per-class histogram of pixel intensities (grey level, 0 = black, 1 = white; colour images "
                f"converted with ITU-R 601 luma weights), each image's histogram normalised to unit area and then "
                f"averaged over all images of the class ({counts}). A check for acquisition differences that a "
                "classifier could exploit.")
    elif name == "learning_curves.png":
        text = ("Training histories of the Keras pipelines, one row per pipeline: loss (left) and accuracy "
                "(right) per epoch, mean over the folds with a ±1 std band; solid: training, dashed: validation. "
                "The vertical line marks the epoch where fine-tuning of the backbone starts.")
    elif name.startswith("misclassified_"):
        text = ("Misclassified test images of the first repeat (every image was tested once), most confident "
                "mistakes first: the title gives the file, the true and the predicted class and p(predicted), the "
                "calibrated probability the fold's model gave the predicted class (or its decision score when "
                "the model has no probabilities).")
    else:
        raise ValueError(f"{filename!r} is not a benchmark figure (expected one of {FIGURE_NAMES} or "
                         "misclassified_<pipeline>.png)")
    return text + synthetic


def fold_curve(kind, positive, scores, grid=CURVE_GRID):
    """One fold's ROC or precision-recall curve, evaluated on ``grid``.

    Parameters
    ----------
    kind : {"roc", "pr"}
    positive : array-like of bool, shape (n_samples,)
        Whether each test sample belongs to the class (both values must occur).
    scores : array-like of float, shape (n_samples,)
        The class's score (probability or decision value) of each sample.
    grid : ndarray, shape (n_points,)
        Increasing abscissae in [0, 1]: false-positive rates (ROC) or recalls (PR).

    Returns
    -------
    ndarray, shape (n_points,)
        ROC: the true-positive rate at each false-positive rate, linear
        between the curve's points (the trapezoids of ROC-AUC) and, on a
        vertical step, its top. PR: the precision at each recall, as the step
        function whose area is the average precision (the precision of the
        first threshold that reaches that recall).
    """
    positive = np.asarray(positive, dtype=bool)
    if kind == "roc":
        fpr, tpr, _ = roc_curve(positive, scores)
        last = np.clip(np.searchsorted(fpr, grid, side="right") - 1, 0, len(fpr) - 1)  # last point x <= g
        following = np.minimum(last + 1, len(fpr) - 1)
        x0, x1 = fpr[last], fpr[following]
        step = np.divide(grid - x0, x1 - x0, out=np.zeros_like(grid, dtype=np.float64), where=x1 > x0)
        return tpr[last] + step * (tpr[following] - tpr[last])
    if kind == "pr":
        precision, recall, _ = precision_recall_curve(positive, scores)
        recall, precision = recall[::-1], precision[::-1]  # recall increasing, thresholds decreasing
        first = np.clip(np.searchsorted(recall, grid, side="left"), 0, len(recall) - 1)  # first point x >= g
        return precision[first]
    raise ValueError(f"kind must be 'roc' or 'pr'; got {kind!r}")


def mean_curve(curves):
    """Point-wise mean and standard deviation (ddof=0) of curves on one grid; ``(mean, std)``."""
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim != 2 or len(curves) == 0:
        raise ValueError(f"curves must be a non-empty (n_folds, n_points) array; got shape {curves.shape}")
    return curves.mean(axis=0), curves.std(axis=0)


def _table_cell(stats):
    """The mean, std and fold count of one table cell (:func:`featurepipe.stats.summarize` output)."""
    stats = stats or {}
    mean, std = stats.get("mean"), stats.get("std")
    return {"mean": float("nan") if mean is None else float(mean),
            "std": float("nan") if std is None else float(std), "n": int(stats.get("n") or 0)}


def curve_summary(result, kind, grid=CURVE_GRID):
    """What :func:`plot_curves` draws and prints, per pipeline.

    Returns
    -------
    dict
        ``{pipeline: {"summary": cell, "classes": {label: {"auc": cell,
        "mean": ndarray, "std": ndarray, "n_curves": int}}}}`` where a
        ``cell`` is ``{"mean", "std", "n"}`` of the table
        (``result.summary[pipeline][metric]`` and
        ``result.per_class[pipeline][label][metric]``, metric ``roc_auc`` or
        ``pr_auc``), and ``mean``/``std`` the curve over the ``n_curves``
        folds (all repeats) whose test part has the class and another one
        and whose model gave scores. Binary problems list the positive
        class only.
    """
    metric = _CURVE_METRIC.get(kind)
    if metric is None:
        raise ValueError(f"kind must be 'roc' or 'pr'; got {kind!r}")
    labels = result.dataset["labels"]
    shown = [result.dataset["pos_label"]] if len(labels) == 2 else labels
    out = {}
    for name in result.ranking():
        recs = sorted((r for r in result.folds if r["pipeline"] == name and r.get("status") == "ok"
                       and r.get("y_score") is not None), key=lambda r: (r["repeat"], r["fold"]))
        classes = {}
        for label in shown:
            j = labels.index(label)
            curves = []
            for r in recs:
                positive = np.array([v == label for v in r["y_true"]], dtype=bool)
                if positive.all() or not positive.any():
                    continue  # undefined on this fold, as in the table
                curves.append(fold_curve(kind, positive, np.asarray(r["y_score"], dtype=np.float64)[:, j], grid))
            mean, std = mean_curve(curves) if curves else (None, None)
            classes[label] = {"auc": _table_cell(result.per_class.get(name, {}).get(str(label), {}).get(metric)),
                              "mean": mean, "std": std, "n_curves": len(curves)}
        out[name] = {"summary": _table_cell(result.summary.get(name, {}).get(metric)), "classes": classes}
    return out


def _auc_text(cell):
    if cell["n"] == 0 or not np.isfinite(cell["mean"]):
        return "n/a"
    spread = f" ± {cell['std']:.3f}" if np.isfinite(cell["std"]) else ""
    return f"{cell['mean']:.3f}{spread}"


def plot_curves(result, kind, path, grid=CURVE_GRID):
    """Draw the mean ROC (``kind="roc"``) or PR (``"pr"``) curves; write ``path`` (PNG) and its SVG twin.

    Returns
    -------
    files : list of str
        The PNG and SVG written.
    printed : dict
        :func:`curve_summary` output: the numbers the plot prints are its
        table cells, formatted with three decimals.
    """
    import matplotlib

    summary = curve_summary(result, kind, grid)
    metric = _CURVE_METRIC[kind]
    names = list(summary)
    fig, axes = _grid(len(names))
    for ax, name in zip(axes, names):
        info = summary[name]
        ax.set_title(f"{_title(result, name)}\n{METRIC_LABELS[metric]} {_auc_text(info['summary'])} "
                     f"({info['summary']['n']} folds)", fontsize=8)
        if kind == "roc":
            ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
            ax.set_xlabel("1 − specificity")
            ax.set_ylabel("sensitivity")
        else:
            ax.set_xlabel("recall (sensitivity)")
            ax.set_ylabel("precision")
        drawn = False
        for label, curve in info["classes"].items():
            if curve["mean"] is None:
                continue
            drawn = True
            line, = ax.plot(grid, curve["mean"], lw=1.5,
                            label=f"{label}: AUC {_auc_text(curve['auc'])} ({curve['auc']['n']} folds)")
            ax.fill_between(grid, np.clip(curve["mean"] - curve["std"], 0, 1),
                            np.clip(curve["mean"] + curve["std"], 0, 1), color=line.get_color(), alpha=0.15,
                            lw=0)
        if not drawn:
            ax.text(0.5, 0.5, "no scores\n(no predict_proba /\ndecision_function)", ha="center", va="center")
            continue
        ax.legend(fontsize=7, loc="lower right" if kind == "roc" else "lower left", title_fontsize=7,
                  title="AUC: mean ± std of the fold values")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
    what = "ROC" if kind == "roc" else "Precision-recall"
    _suptitle(fig, result, f"{what} curves (mean ± 1 std over folds)")
    path = Path(path)
    fig.savefig(path, dpi=100)
    svg = path.with_suffix(".svg")
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "featurepipe"}):  # text stays text
        fig.savefig(svg)
    return [str(path), str(svg)], summary


def plot_roc(result, path):
    """:func:`plot_curves` with ``kind="roc"``; returns the files written."""
    return plot_curves(result, "roc", path)[0]


def plot_pr(result, path):
    """:func:`plot_curves` with ``kind="pr"``; returns the files written."""
    return plot_curves(result, "pr", path)[0]


def plot_confusion(result, path):
    names = list(result.ranking())
    labels = result.dataset["labels"]
    fig, axes = _grid(len(names), size=(3.6, 3.4))
    for ax, name in zip(axes, names):
        recs = _first_repeat(result, name)
        cm = np.zeros((len(labels), len(labels)), dtype=int)
        for r in recs:
            cm += np.array(r["confusion_matrix"], dtype=int)
        rows = cm.sum(axis=1, keepdims=True)
        frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if frac[i, j] > 0.6 else "black", fontsize=9)
        ax.set_xticks(range(len(labels)), [str(v) for v in labels], rotation=30, fontsize=8)
        ax.set_yticks(range(len(labels)), [str(v) for v in labels], fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(_title(result, name), fontsize=9)
    _suptitle(fig, result, "Confusion matrices (repeat 1, counts; colour = row fraction)")
    fig.savefig(path, dpi=100)
    return path


def plot_fold_scores(result, path):
    names = list(result.ranking())
    metrics = list(dict.fromkeys([result.config["rank_by"]] + [
        m for m in result.config["metrics"] if m in ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "mcc")]))
    # Wide panels when there are many pipelines: fewer of them per row.
    fig, axes = _grid(len(metrics), size=(max(3.5, 0.9 * len(names) + 1.5), 3.8),
                      max_cols=4 if len(names) <= 4 else 2)
    rng = np.random.default_rng(0)  # jitter only
    for ax, metric in zip(axes, metrics):
        data = [result.fold_scores(name, metric) for name in names]
        data = [d[np.isfinite(d)] for d in data]
        positions = np.arange(1, len(names) + 1)
        ax.boxplot([d if len(d) else [np.nan] for d in data], positions=positions, widths=0.5, showfliers=False)
        for pos, d in zip(positions, data):
            ax.scatter(pos + rng.uniform(-0.12, 0.12, len(d)), d, s=12, alpha=0.7, zorder=3)
        ax.set_xticks(positions, [_title(result, n)[:18] for n in names], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.set_title(METRIC_LABELS[metric], fontsize=10)
    _suptitle(fig, result, "Per-fold scores")
    fig.savefig(path, dpi=100)
    return path


def _show_image(ax, image):
    image = np.asarray(image)
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.clip(image, 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])


def plot_misclassified(result, name, samples, path, max_images=16):
    """Gallery of misclassified test images; returns ``path`` or ``None`` when nothing was misclassified."""
    labels = result.dataset["labels"]
    y_true, y_pred, scores, index = _pooled(_first_repeat(result, name))
    wrong = np.flatnonzero(np.array([a != b for a, b in zip(y_true, y_pred)], dtype=bool))
    if len(wrong) == 0:
        return None
    if scores is not None:
        conf = np.array([scores[i, labels.index(y_pred[i])] for i in wrong])
        wrong = wrong[np.argsort(-conf, kind="stable")]
    wrong = wrong[:max_images]
    cols = min(4, len(wrong))
    rows = int(np.ceil(len(wrong) / cols))
    fig = Figure(figsize=(2.6 * cols, 2.9 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(wrong):]:
        ax.set_visible(False)
    for ax, i in zip(axes, wrong):
        sample = samples[index[i]]
        _show_image(ax, sample.image)
        score = "" if scores is None else f" ({scores[i, labels.index(y_pred[i])]:.2f})"
        ax.set_title(f"{sample.name[:22]}\ntrue {y_true[i]} → {y_pred[i]}{score}", fontsize=7)
    _suptitle(fig, result, f"Misclassified images, most confident first: {name}")
    fig.savefig(path, dpi=100)
    return path


def plot_intensities(result, samples, path, per_class=40, bins=64):
    """Mean per-class histogram of grey levels of up to ``per_class`` images per class."""
    labels = result.dataset["labels"]
    edges = np.linspace(0, 1, bins + 1)
    centers = 0.5 * (edges[1:] + edges[:-1])
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.set_prop_cycle(color=OKABE_ITO)
    for label in labels:
        members = [s for s in samples if s.label == label][:per_class]
        hists = []
        for s in members:
            image = np.asarray(s.image, dtype=np.float64)
            if image.ndim == 3:
                image = image @ np.array([0.299, 0.587, 0.114])
            hist, _ = np.histogram(np.clip(image, 0, 1), bins=edges, density=True)
            hists.append(hist)
        if hists:
            ax.plot(centers, np.mean(hists, axis=0), lw=1.5, label=f"{label} (n={len(hists)})")
    ax.set_xlabel("intensity (0 = black, 1 = white)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    _suptitle(fig, result, "Per-class intensity distributions")
    fig.savefig(path, dpi=100)
    return path


def plot_learning_curves(result, path):
    """Training histories (``history_``) per pipeline; ``None`` when no pipeline has one."""
    with_history = {}
    for r in result.folds:
        if r.get("status") == "ok" and r.get("history"):
            with_history.setdefault(r["pipeline"], []).append(r)
    if not with_history:
        return None
    fig, axes = _grid(len(with_history))
    for ax, (name, recs) in zip(axes, with_history.items()):
        for r in recs:
            for key, values in sorted(r["history"].items()):
                if "loss" not in key and "acc" not in key:
                    continue
                ax.plot(np.arange(1, len(values) + 1), values, lw=0.9, alpha=0.8,
                        ls="--" if key.startswith("val_") else "-",
                        label=f"{key} r{r['repeat'] + 1}f{r['fold'] + 1}")
        ax.set_xlabel("epoch")
        ax.set_title(_title(result, name), fontsize=9)
        ax.legend(fontsize=6, ncol=2)
    _suptitle(fig, result, "Learning curves")
    fig.savefig(path, dpi=100)
    return path


def write_plots(result, out_dir, samples):
    """Write every plot into ``out_dir``; return the paths written."""
    out_dir = Path(out_dir)
    files = [*plot_roc(result, out_dir / "roc_curves.png"), *plot_pr(result, out_dir / "pr_curves.png"),
             plot_confusion(result, out_dir / "confusion_matrices.png"),
             plot_fold_scores(result, out_dir / "fold_scores.png"),
             plot_intensities(result, samples, out_dir / "intensity_distributions.png")]
    used = set()
    for name in result.summary:
        stem = slug(name)
        if stem in used:  # two names that differ only in characters a file name cannot hold
            stem = f"{stem}_{len(used)}"
        used.add(stem)
        files.append(plot_misclassified(result, name, samples, out_dir / f"misclassified_{stem}.png"))
    files.append(plot_learning_curves(result, out_dir / "learning_curves.png"))
    return [str(f) for f in files if f is not None]
