"""Figures of a benchmark run (matplotlib, no global pyplot state): each a PNG with an SVG twin.

Every figure uses one style (:data:`STYLE`: 8-9 pt text for a journal column,
the colour-blind-safe Okabe-Ito palette), says "SYNTHETIC DATA" once in its
title for generated data, and is enlarged before saving when text would be
cut off at its edge (:func:`texts_outside`). :func:`figure_caption` says what
each shows and how it was computed (``report.html`` and ``summary.md`` print it).

* ``roc_curves`` and ``pr_curves`` — per pipeline, the one-vs-rest ROC and
  precision-recall curves of every class (binary problems: the positive
  class), as the mean over the folds (all repeats) of each fold's curve
  interpolated on a common grid, with a ±1 standard deviation band. The AUC
  printed for a class is the per-class table's value (``result.per_class``:
  the mean of the per-fold values), and the panel title gives the summary
  table's ROC-AUC / PR-AUC (``result.summary``), with the number of folds
  behind each: the plots print exactly the table's numbers. Curves of one fold
  use that fold's model only, so scores of different models are never pooled;
* ``confusion_matrices`` (counts) and ``confusion_matrices_normalised`` (row
  fractions: recall on the diagonal) — per pipeline, summed over the folds of
  the first repeat, with a colour bar;
* ``fold_scores`` — one panel per metric in one row, horizontal box plots and
  points of every pipeline's per-fold scores, full pipeline names;
* ``misclassified_<pipeline>`` — the most confidently misclassified images of
  the first repeat, titled with true and predicted class and ``p(predicted)``;
* ``intensity_distributions`` — per class, the mean histogram of pixel
  intensities over all its images (a check of acquisition differences);
* ``learning_curves`` — training histories, for pipelines whose final
  estimator exposes ``history_`` (Keras baselines): loss and accuracy on
  separate axes, mean ± std over folds, the start of fine-tuning marked.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import numpy as np
from cycler import cycler
from matplotlib.figure import (
    Figure,  # used without pyplot: PNGs render with Agg, no global state
)
from sklearn.metrics import precision_recall_curve, roc_curve

from ..metrics import METRIC_LABELS

_MPL_VERSION = tuple(int(p) for p in re.findall(r"\d+", matplotlib.__version__)[:2])

__all__ = ["CURVE_GRID", "FIGURE_NAMES", "OKABE_ITO", "STYLE", "curve_summary", "figure_caption", "figure_files",
           "fold_curve", "mean_curve", "plot_confusion", "plot_curves", "plot_fold_scores", "plot_intensities",
           "plot_cam_examples", "plot_learning_curves", "plot_misclassified", "slug", "texts_outside", "write_plots"]

_MAX_PANELS_PER_ROW = 4
#: Okabe & Ito (2008) colour-blind-safe palette (blue, vermillion, bluish green, reddish purple, orange,
#: sky blue, yellow, black), used for every plot's colour cycle.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
#: Common abscissa of the mean curves: false-positive rate (ROC) or recall (PR), 0 to 1 in steps of 0.01.
CURVE_GRID = np.linspace(0.0, 1.0, 101)
_CURVE_METRIC = {"roc": "roc_auc", "pr": "pr_auc"}


def slug(name, *, separator="_", lower=False, default="pipeline"):
    """A file-name-safe version of ``name``: runs of other characters become ``separator``.

    >>> slug("hog svm/clahe")
    'hog_svm_clahe'
    >>> slug("BUSI (3 classes)", separator="-", lower=True)
    'busi-3-classes'
    """
    text = str(name).lower() if lower else str(name)
    allowed = "a-z0-9._-" if lower else "A-Za-z0-9._-"
    return re.sub(f"[^{allowed}]+", separator, text).strip(separator) or default


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


#: One style for every figure: sizes readable when a figure is printed at a journal column or page width
#: (8-9 pt text), the Okabe-Ito colour cycle, light grid, no top/right spines.
STYLE = {
    "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 7.5, "ytick.labelsize": 7.5,
    "legend.fontsize": 7.5, "figure.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.color": "0.9", "grid.linewidth": 0.6, "axes.axisbelow": True,
    "axes.prop_cycle": cycler(color=list(OKABE_ITO)), "savefig.dpi": 200,
    "svg.fonttype": "none", "svg.hashsalt": "featurepipe",  # SVG text stays text; ids are reproducible
}


def _styled(plot):
    """Draw ``plot`` under :data:`STYLE` (rc parameters are read when artists are created)."""
    import functools

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return plot(*args, **kwargs)

    return wrapper


def texts_outside(fig, tolerance=1.0):
    """The drawn texts of ``fig`` (titles, labels, tick labels, legends) that reach outside it (cut off).

    Returns a list of the strings, empty when everything fits; ``tolerance`` in pixels.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()  # lays out (constrained layout) before measuring
    renderer = canvas.get_renderer()
    box = fig.bbox
    drawn = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)  # only what was drawn, in pixels
    if (drawn.x0 >= box.x0 - tolerance and drawn.y0 >= box.y0 - tolerance and drawn.x1 <= box.x1 + tolerance
            and drawn.y1 <= box.y1 + tolerance):
        return []
    out = []
    for text in fig.findobj(lambda a: hasattr(a, "get_text") and hasattr(a, "get_window_extent")):
        if not text.get_visible() or not text.get_text():
            continue
        ext = text.get_window_extent(renderer)
        if (ext.x0 < box.x0 - tolerance or ext.y0 < box.y0 - tolerance or ext.x1 > box.x1 + tolerance
                or ext.y1 > box.y1 + tolerance):
            out.append(text.get_text())
    return out or [f"drawn area {drawn.bounds} exceeds the figure {box.bounds}"]


def _save(fig, path):
    """Write ``fig`` as ``path`` (PNG) and its SVG twin; returns both paths.

    A figure whose drawn text reaches past its edge is enlarged by the overflow first (constrained layout
    then re-places everything); if text is still cut off, a warning names it.
    """
    import warnings

    path = Path(path)
    cut = texts_outside(fig)  # each check draws the whole figure: check once per layout, not twice
    for _ in range(3):
        if not cut:
            break
        drawn = fig.get_tightbbox(fig.canvas.get_renderer())  # inches
        width, height = fig.get_size_inches()
        fig.set_size_inches(width + max(0.0, -drawn.x0) + max(0.0, drawn.x1 - width) + 0.1,
                            height + max(0.0, -drawn.y0) + max(0.0, drawn.y1 - height) + 0.1)
        cut = texts_outside(fig)
    if cut:
        warnings.warn(f"{path.name}: text cut off at the figure's edge: {cut[:5]}", UserWarning, stacklevel=3)
    fig.savefig(path)
    svg = path.with_suffix(".svg")
    fig.savefig(svg)
    return [str(path), str(svg)]


def _suptitle(fig, result, text):
    """Figure title with the dataset's name, "SYNTHETIC DATA" once for generated data, wrapped to the figure's width."""
    import textwrap

    name = result.dataset["name"]
    if result.dataset.get("synthetic") and "synthetic" not in name.lower():
        name += " [SYNTHETIC DATA]"
    chars = max(30, int(fig.get_figwidth() * 72 / (STYLE["figure.titlesize"] * 0.6)))  # ~0.6 em per character
    fig.suptitle(textwrap.fill(f"{text} — {name}", chars))


#: The figures a benchmark writes, in report order (``misclassified_<pipeline>.png``: one per pipeline).
FIGURE_NAMES = ("roc_curves.png", "pr_curves.png", "confusion_matrices.png", "confusion_matrices_normalised.png",
                "fold_scores.png", "intensity_distributions.png", "learning_curves.png")


def figure_files(directory):
    """The benchmark figures (PNG) present in ``directory``, in report order; each may have an SVG twin."""
    directory = Path(directory)
    named = [directory / n for n in FIGURE_NAMES if (directory / n).is_file()]
    return named + sorted(directory.glob("misclassified_*.png")) + sorted(directory.glob("cam_*.png"))


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
    elif name.startswith("cam_"):
        text = ("Class activation maps of the pipeline's linear head on its CNN features, for test images of the "
                "first fold (first row: correctly classified, second row: misclassified): the model refitted on "
                "that fold's training part (the cached features make this cheap) explains its own predicted "
                "class; red = regions whose features raise that class's score. Shown only for pipelines whose "
                "head featurepipe.cnn.cam can explain (linear, one weight row per class).")
    else:
        raise ValueError(f"{filename!r} is not a benchmark figure (expected one of {FIGURE_NAMES}, "
                         "misclassified_<pipeline>.png or cam_<pipeline>.png)")
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


@_styled
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
    return _save(fig, path), summary


def plot_roc(result, path):
    """:func:`plot_curves` with ``kind="roc"``; returns the files written."""
    return plot_curves(result, "roc", path)[0]


def plot_pr(result, path):
    """:func:`plot_curves` with ``kind="pr"``; returns the files written."""
    return plot_curves(result, "pr", path)[0]


def _first_repeat_confusion(result, name):
    """Counts summed over the first repeat's folds (each image once), shape (n_labels, n_labels), rows true."""
    labels = result.dataset["labels"]
    cm = np.zeros((len(labels), len(labels)), dtype=int)
    for r in _first_repeat(result, name):
        cm += np.array(r["confusion_matrix"], dtype=int)
    return cm


@_styled
def plot_confusion(result, path, normalise=False):
    """Confusion matrices of the first repeat with a colour bar: counts, or with ``normalise`` row fractions.

    Returns the PNG and SVG written.
    """
    names = list(result.ranking())
    labels = [str(v) for v in result.dataset["labels"]]
    side = 1.1 + 0.45 * len(labels)
    fig, axes = _grid(len(names), size=(side + 1.3, side + 0.6))
    for ax, name in zip(axes, names):
        cm = _first_repeat_confusion(result, name)
        rows = cm.sum(axis=1, keepdims=True)
        frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
        shown = frac if normalise else cm
        image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalise else max(1, int(cm.max())))
        for i in range(len(labels)):
            for j in range(len(labels)):
                text = f"{frac[i, j]:.2f}" if normalise else str(cm[i, j])
                dark = frac[i, j] > 0.6 if normalise else cm[i, j] > 0.6 * max(1, cm.max())
                ax.text(j, i, text, ha="center", va="center", color="white" if dark else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.grid(False)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(_title(result, name))
        bar = fig.colorbar(image, ax=ax, shrink=0.8)
        bar.set_label("fraction of true class" if normalise else "images")
    what = "row-normalised (recall on the diagonal)" if normalise else "counts"
    _suptitle(fig, result, f"Confusion matrices, repeat 1, {what}")
    return _save(fig, path)


@_styled
def plot_fold_scores(result, path):
    """Per metric, box plot and points of every pipeline's per-fold scores; returns the PNG and SVG written.

    One row of panels (one per metric) sharing the pipeline axis, so no panel is empty; full pipeline names
    label the rows of the first panel.
    """
    names = list(result.ranking())
    metrics = list(dict.fromkeys([result.config["rank_by"]] + [
        m for m in result.config["metrics"] if m in ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "mcc")]))
    longest = max(len(_title(result, n)) for n in names)
    label_in = 0.3 + 0.055 * longest  # room for the names at 7.5 pt
    fig = Figure(figsize=(label_in + 1.9 * len(metrics), 0.9 + 0.32 * len(names)), layout="constrained")
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False).ravel()
    rng = np.random.default_rng(0)  # vertical jitter of the points only
    positions = np.arange(len(names), 0, -1)  # best (first in the table) at the top
    for ax, metric in zip(axes, metrics):
        data = [result.fold_scores(name, metric) for name in names]
        data = [d[np.isfinite(d)] for d in data]
        # Matplotlib >= 3.10 names it orientation; vert=False (older) is deprecated there.
        horizontal = {"orientation": "horizontal"} if _MPL_VERSION >= (3, 10) else {"vert": False}
        ax.boxplot([d if len(d) else [np.nan] for d in data], positions=positions, widths=0.5, showfliers=False,
                   medianprops={"color": OKABE_ITO[1]}, **horizontal)
        for pos, d in zip(positions, data):
            ax.scatter(d, pos + rng.uniform(-0.12, 0.12, len(d)), s=10, alpha=0.8, color=OKABE_ITO[0], zorder=3)
        ax.set_yticks(positions, [_title(result, n) for n in names])
        ax.set_xlabel(METRIC_LABELS[metric])
        ax.set_title(METRIC_LABELS[metric])
    cv = result.config["cv"]
    _suptitle(fig, result, f"Per-fold test scores ({cv['n_splits']} folds × {cv['n_repeats']} repeat(s))")
    return _save(fig, path)


# Longest side of an image shown in a gallery panel, in pixels: a panel is about two inches wide at
# savefig.dpi=200, so more pixels are invisible yet resampled for the PNG and embedded in the SVG twin.
THUMBNAIL_MAX_SIDE = 400


def _show_image(ax, image):
    from ..preprocessing import cap_resolution

    image, _ = cap_resolution(np.asarray(image, dtype=np.float32), None, THUMBNAIL_MAX_SIDE)
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.clip(image, 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _score_text(result, name, label, value):
    """``p(label)=0.83`` for calibrated probabilities, ``score(label)=2.25`` for decision values."""
    kinds = {r.get("score_kind") for r in _first_repeat(result, name)}
    return f"{'p' if kinds == {'predict_proba'} else 'score'}({label})={value:.2f}"


@_styled
def plot_misclassified(result, name, samples, path, max_images=16):
    """Gallery of misclassified test images, most confident first; the PNG and SVG written, or ``None``.

    ``None`` when nothing was misclassified. Each title: file name, ``true → predicted`` and
    ``p(predicted)`` (the fold model's probability of the predicted class; ``score(...)`` for decision values).
    """
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
    fig = Figure(figsize=(max(4.0, 1.8 * cols), 0.8 + 2.1 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(wrong):]:
        ax.set_visible(False)
    for ax, i in zip(axes, wrong):
        sample = samples[index[i]]
        _show_image(ax, sample.image)
        score = "" if scores is None else "\n" + _score_text(result, name, y_pred[i],
                                                            scores[i, labels.index(y_pred[i])])
        ax.set_title(f"{sample.name[:20]}\ntrue {y_true[i]} → {y_pred[i]}{score}", fontsize=7)
    _suptitle(fig, result, f"Misclassified test images (repeat 1), most confident first: {name}")
    return _save(fig, path)


@_styled
def plot_intensities(result, samples, path, bins=64):
    """Mean per-class histogram of grey levels over every image of the class; returns the PNG and SVG written."""
    labels = result.dataset["labels"]
    edges = np.linspace(0, 1, bins + 1)
    centers = 0.5 * (edges[1:] + edges[:-1])
    fig = Figure(figsize=(4.5, 3.2), layout="constrained")
    ax = fig.subplots()
    for label in labels:
        hists = []
        for s in samples:
            if s.label != label:
                continue
            image = np.asarray(s.image, dtype=np.float64)
            if image.ndim == 3:
                image = image @ np.array([0.299, 0.587, 0.114])
            hist, _ = np.histogram(np.clip(image, 0, 1), bins=edges, density=True)
            hists.append(hist)
        if hists:
            ax.plot(centers, np.mean(hists, axis=0), lw=1.5, label=f"{label} (mean of {len(hists)} images)")
    ax.set_xlabel("intensity (0 = black, 1 = white)")
    ax.set_ylabel("probability density")
    fig.legend(loc="outside lower center", ncol=min(2, len(labels)))  # below the axes: never over a curve
    _suptitle(fig, result, "Mean grey-level histogram per class")
    return _save(fig, path)


#: Key of a fold's ``history`` giving the epoch (1-based) where fine-tuning started (set by the runner).
FINE_TUNE_KEY = "fine_tuning_start_epoch"


def _mean_history(recs, key):
    """Mean and std over folds of one history series, truncated to the shortest fold; ``(epochs, mean, std)``."""
    series = [r["history"][key] for r in recs if r["history"].get(key)]
    if not series:
        return None
    n = min(len(v) for v in series)
    values = np.array([v[:n] for v in series], dtype=np.float64)
    return np.arange(1, n + 1), values.mean(axis=0), values.std(axis=0)


@_styled
def plot_learning_curves(result, path):
    """Training histories (``history_``): per pipeline, loss and accuracy on separate axes; ``None`` if none.

    Mean over the folds (truncated to the fold with the fewest epochs) with a ±1 std band; training solid,
    validation dashed; a vertical line where fine-tuning started. Returns the PNG and SVG written.
    """
    with_history = {}
    for r in result.folds:
        if r.get("status") == "ok" and r.get("history"):
            with_history.setdefault(r["pipeline"], []).append(r)
    if not with_history:
        return None
    fig = Figure(figsize=(6.5, 0.6 + 2.3 * len(with_history)), layout="constrained")
    axes = fig.subplots(len(with_history), 2, squeeze=False)
    for (loss_ax, acc_ax), (name, recs) in zip(axes, with_history.items()):
        starts = sorted({r["history"][FINE_TUNE_KEY][0] for r in recs if r["history"].get(FINE_TUNE_KEY)})
        for ax, kind, ylabel in ((loss_ax, "loss", "loss (cross-entropy)"), (acc_ax, "accuracy", "accuracy")):
            for key, style, colour, label in ((kind, "-", OKABE_ITO[0], "training"),
                                              (f"val_{kind}", "--", OKABE_ITO[1], "validation")):
                curve = _mean_history(recs, key)
                if curve is None:
                    continue
                epochs, mean, std = curve
                ax.plot(epochs, mean, ls=style, color=colour, lw=1.4, label=label)
                ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.15, lw=0)
            for k, start in enumerate(starts):
                ax.axvline(start - 0.5, color="0.3", lw=0.9, ls=":",
                           label="fine-tuning starts" if k == 0 else None)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{_title(result, name)}: {kind} ({len(recs)} folds)")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="best")
        acc_ax.set_ylim(0, 1.02)
    _suptitle(fig, result, "Learning curves (mean ± 1 std over folds)")
    return _save(fig, path)


@_styled
def plot_cam_examples(result, name, estimator, samples, path, per_row=4):
    """Class activation maps of correctly and wrongly classified test images of the first fold.

    ``estimator`` (the unfitted pipeline) is refitted on the first fold's training part (the same
    images the fold's model saw) and each map explains the class that model predicts. Returns the
    PNG and SVG written, or ``None`` when the pipeline's head cannot be explained by
    :func:`featurepipe.cnn.cam.class_activation_map` (it raises ``ValueError`` for such heads).
    """
    from sklearn.base import clone

    from ..cnn.cam import cam_overlay, class_activation_map

    records = sorted(_first_repeat(result, name), key=lambda r: r["fold"])
    if not records or not any(type(step).__name__ == "CNNFeatures"
                              for _, step in getattr(estimator, "steps", [])):
        return None
    record = records[0]
    test = np.asarray(record["test_index"], dtype=int)
    train = np.setdiff1d(np.arange(len(samples)), test)  # the fold's training part (samples after exclusions)
    y = np.array([s.label for s in samples], dtype=object)
    model = clone(estimator).fit(samples[train], y[train])
    correct = [i for i, t, p in zip(test, record["y_true"], record["y_pred"]) if t == p][:per_row]
    wrong = [i for i, t, p in zip(test, record["y_true"], record["y_pred"]) if t != p][:per_row]
    maps = []
    for row, chosen in enumerate((correct, wrong)):
        for i in chosen:
            try:
                cam = class_activation_map(model, samples[i])
            except ValueError:
                return None  # a head the maps cannot explain: no panel rather than a wrong one
            maps.append((row, samples[i], cam))
    if not maps:
        return None
    cols = max(len(correct), len(wrong), 1)
    fig = Figure(figsize=(max(4.0, 1.9 * cols), 0.9 + 2.2 * 2), layout="constrained")
    axes = fig.subplots(2, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_visible(False)
    used = [0, 0]
    for row, sample, cam in maps:
        ax = axes[row, used[row]]
        used[row] += 1
        ax.set_visible(True)
        # The image the network saw (after crops and resizes), which the map lines up with.
        _show_image(ax, cam_overlay(cam.image, cam.heatmap, alpha=0.45) / 255.0)
        ax.set_title(f"{sample.name[:18]}\ntrue {sample.label} → {cam.predicted}", fontsize=7)
    _suptitle(fig, result, f"Class activation maps, fold 1 (top: correct, bottom: wrong): {name}")
    return _save(fig, path)


def write_plots(result, out_dir, samples, pipelines=None):
    """Write every plot into ``out_dir`` (PNG with an SVG twin each); return the paths written.

    ``pipelines`` (``{name: unfitted estimator}``) adds a class-activation-map panel for each
    pipeline whose head can be explained (:func:`plot_cam_examples`).
    """
    out_dir = Path(out_dir)
    files = [*plot_roc(result, out_dir / "roc_curves.png"), *plot_pr(result, out_dir / "pr_curves.png"),
             *plot_confusion(result, out_dir / "confusion_matrices.png"),
             *plot_confusion(result, out_dir / "confusion_matrices_normalised.png", normalise=True),
             *plot_fold_scores(result, out_dir / "fold_scores.png"),
             *plot_intensities(result, samples, out_dir / "intensity_distributions.png")]
    used = set()
    for name in result.summary:
        stem = slug(name)
        if stem in used:  # two names that differ only in characters a file name cannot hold
            stem = f"{stem}_{len(used)}"
        used.add(stem)
        files += plot_misclassified(result, name, samples, out_dir / f"misclassified_{stem}.png") or []
        if pipelines is not None and name in pipelines:
            files += plot_cam_examples(result, name, pipelines[name], samples, out_dir / f"cam_{stem}.png") or []
    files += plot_learning_curves(result, out_dir / "learning_curves.png") or []
    return [str(f) for f in files]
