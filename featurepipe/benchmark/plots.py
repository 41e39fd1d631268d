"""PNG plots of a benchmark run (matplotlib, Agg renderer, no global pyplot state).

* ``roc_curves.png`` — per pipeline, one-vs-rest ROC curves of the pooled
  out-of-fold scores of the first repeat (every image scored once, by the
  model that did not see it); binary problems show the positive class;
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
from sklearn.metrics import auc as _auc
from sklearn.metrics import roc_curve

from ..metrics import METRIC_LABELS

__all__ = ["write_plots", "slug"]

_MAX_PANELS_PER_ROW = 4


def slug(name):
    """A file-name-safe version of a pipeline name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "pipeline"


def _grid(n, size=(4.0, 3.6), max_cols=_MAX_PANELS_PER_ROW):
    cols = min(n, max_cols)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(size[0] * cols, size[1] * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
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


def plot_roc(result, path):
    names = list(result.ranking())
    labels = result.dataset["labels"]
    fig, axes = _grid(len(names))
    for ax, name in zip(axes, names):
        y_true, _, scores, _ = _pooled(_first_repeat(result, name))
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        ax.set_title(_title(result, name), fontsize=9)
        ax.set_xlabel("1 − specificity")
        ax.set_ylabel("sensitivity")
        if scores is None or len(y_true) == 0:
            ax.text(0.5, 0.5, "no scores\n(no predict_proba /\ndecision_function)", ha="center", va="center")
            continue
        classes = [result.dataset["pos_label"]] if len(labels) == 2 else labels
        for label in classes:
            j = labels.index(label)
            positive = np.array([v == label for v in y_true])
            if positive.all() or not positive.any():
                continue
            fpr, tpr, _ = roc_curve(positive, scores[:, j])
            auc = float(_auc(fpr, tpr))
            ax.plot(fpr, tpr, lw=1.4, label=f"{label} (AUC {auc:.3f})")
        ax.legend(fontsize=7, loc="lower right")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
    _suptitle(fig, result, "ROC curves (pooled out-of-fold scores, repeat 1)")
    fig.savefig(path, dpi=100)
    return path


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
    files = [plot_roc(result, out_dir / "roc_curves.png"),
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
