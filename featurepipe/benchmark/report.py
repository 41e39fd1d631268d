"""Report files of a benchmark run: CSV tables and the Markdown summary.

``results.json`` (everything) is written by the runner; this module writes

* ``folds.csv`` — one row per pipeline and fold: every metric, timings,
  tuned parameters;
* ``summary.csv`` — one row per pipeline and metric: mean, std, CI, n;
* ``per_class.csv`` — the same per class for the one-vs-rest metrics;
* ``comparisons.csv`` — paired tests between pipelines;
* ``summary.md`` — the tables a paper needs, sorted by the chosen metric,
  with the statistics, the leakage report and a synthetic-data warning
  when the dataset is generated.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from ..metrics import METRIC_LABELS, METRIC_NAMES

__all__ = ["write_reports", "markdown_summary"]


def _fmt(value, digits=3):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _fmt_p(p):
    if p is None or (isinstance(p, float) and not math.isfinite(p)):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _ms(value):
    return "n/a" if value is None else f"{value:.1f}"


def _s(value):
    return "n/a" if value is None else f"{value:.2f}"


def _md_escape(text):
    return str(text).replace("|", "\\|")


def _largest(ds):
    largest = ds.get("largest_group")
    return "" if not largest else f" (largest: {largest['n_samples']} images)"


def _fold_sizes(config):
    sizes = config.get("fold_sizes")
    if not sizes:
        return ""
    return "; train/test images per fold: " + ", ".join(f"{f['n_train']}/{f['n_test']}" for f in sizes)


def _n_ok(result, name):
    return sum(1 for r in result.folds if r["pipeline"] == name and r.get("status") == "ok")


def _cell(stats, n_ok):
    """``mean ± std``, with the fold count when the metric was defined in fewer than the ``n_ok`` folds."""
    if not stats["n"]:
        return "n/a"
    text = f"{_fmt(stats['mean'])} ± {_fmt(stats['std'])}"
    if stats["n"] < n_ok:
        text += f" ({stats['n']}/{n_ok} folds)"
    return text


def markdown_summary(result, metric=None):
    """The Markdown report of a :class:`~featurepipe.benchmark.BenchmarkResult`, sorted by ``metric``."""
    metric = metric or result.config["rank_by"]
    if metric not in METRIC_NAMES:
        raise ValueError(f"metric must be one of {list(METRIC_NAMES)}; got {metric!r}")
    shown = list(result.config["metrics"])
    if metric not in shown:
        shown.insert(0, metric)
    ds = result.dataset
    cv = result.config["cv"]
    lines = [f"# Benchmark on {ds['name']}", ""]
    if ds.get("synthetic"):
        note = ds.get("info", {}).get("note") or "generated images, not real medical data"
        lines += [f"> **SYNTHETIC DATA** — {note}. These numbers say nothing about clinical performance.", ""]
    counts = ", ".join(f"{k}: {v}" for k, v in ds["class_counts"].items())
    task = (f"binary (positive class: {ds['pos_label']})" if ds["task"] == "binary"
            else "multi-class (sensitivity, specificity, precision, F1, ROC-AUC and PR-AUC are macro averages "
                 "of one-vs-rest values)")
    n_folds_total = cv["n_splits"] * cv["n_repeats"]
    lines += [
        f"- **Data**: {ds['n_samples']} images ({counts}); task: {task}.",
        (f"- **Splits**: {result.config['cv_description']}, seed {cv['random_state']}; "
         f"{ds['n_independent_groups']} independent groups{_largest(ds)}; duplicates: {result.config['duplicates']}. "
         f"Every pipeline is evaluated on the same splits{_fold_sizes(result.config)}."),
        (f"- **Cells**: mean ± standard deviation over the folds of the last column (*folds*) (of {n_folds_total}); a "
         "cell over fewer folds says so, e.g. (4/5 folds): the metric was undefined in the others (a class "
         "missing from a test fold). Multi-class macro metrics of a fold average the classes present in its "
         f"test part. 95% confidence intervals below use the {result.config['ci_method']} (mean per-fold "
         f"test/train ratio {result.config['test_train_ratio']:.3f})."),
        f"- **Sorted by**: {METRIC_LABELS[metric]}.",
    ]
    if ds.get("skipped"):
        lines.append(f"- **Skipped files**: {len(ds['skipped'])} (listed in results.json).")
    if ds.get("excluded"):
        lines.append(f"- **Excluded images**: {len(ds['excluded'])} could not be processed and were left out of "
                     "every pipeline alike (all pipelines are compared on the same images): "
                     + "; ".join(f"{_md_escape(e['name'])} ({_md_escape(e['reason'])})" for e in ds["excluded"]) + ".")
    lines.append("")

    order = result.ranking(metric)
    header = ["#", "pipeline"] + [METRIC_LABELS[m] for m in shown] + [
        "preprocess ms/img", "features ms/img", "fit s/fold", "predict ms/img", "total s", "folds"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    for rank, name in enumerate(order, 1):
        n_ok = _n_ok(result, name)
        cells = [str(rank), _md_escape(name)]
        for m in shown:
            cells.append(_cell(result.summary[name][m], n_ok))
        t = result.timings[name]
        cells += [_ms(t["preprocess_ms_per_image"]), _ms(t["features_ms_per_image"]), _s(t["fit_s_per_fold"]),
                  _ms(t["predict_ms_per_image"]), _s(t["total_s"]), f"{n_ok}/{n_folds_total}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", ("Times (wall clock): *preprocess* runs the image steps of the stateless prefix and "
                   "*features* its feature extractors, each once per image for the whole run; a pipeline whose "
                   "features were already computed by an earlier one (same extractor, same images) reads them "
                   "from the cache and shows almost no feature time. *fit* is per outer fold and includes inner "
                   "tuning for nested CV; *predict* covers prediction and scores of the test part."), ""]

    if result.pooled:
        lines += ["## Pooled out-of-fold predictions", "",
                  "All test predictions of the finished folds pooled into one set (each image counted once per "
                  "repeat): one confusion matrix and one ROC-AUC per pipeline, beside the fold means above. "
                  "Scores of different fold models are ranked together (comparable for calibrated probabilities).",
                  ""]
        header = ["pipeline", "predictions"] + [METRIC_LABELS[m] for m in shown] + ["confusion matrix (rows: true)"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] * len(header)) + "|")
        for name in order:
            p = result.pooled.get(name) or {}
            if not p.get("n_predictions"):
                lines.append("| " + " | ".join([_md_escape(name), "0"] + ["n/a"] * (len(header) - 2)) + " |")
                continue
            cm = "; ".join(f"{label}: {row}" for label, row in zip(p["labels"], p["confusion_matrix"]))
            cells = [_md_escape(name), str(p["n_predictions"])] + [_fmt(p["metrics"].get(m)) for m in shown]
            lines.append("| " + " | ".join(cells + [_md_escape(cm)]) + " |")
        lines.append("")

    lines += [f"## {int(round(100 * result.config['confidence']))}% confidence intervals", ""]
    header = ["pipeline"] + [METRIC_LABELS[m] for m in shown]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    for name in order:
        cells = [_md_escape(name)]
        for m in shown:
            s = result.summary[name][m]
            cells.append(f"[{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}]")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")

    for cmp_metric, rows in result.comparisons.items():
        if not rows or cmp_metric != metric and cmp_metric != result.config["rank_by"]:
            continue  # the other metrics' comparisons are in comparisons.csv and results.json
        rope = result.config.get("rope")
        lines += [f"## Paired comparisons: {METRIC_LABELS[cmp_metric]}", "",
                  f"{rows[0]['test']}; p-values Holm-adjusted over all {rows[0]['n_pairs']} pairs "
                  "(family-wise α = 0.05)."
                  + (f" Bayesian correlated t-test (Benavoli et al. 2017) with a region of practical "
                     f"equivalence of ±{rope}: posterior probabilities that A is better, that they are "
                     "practically equivalent, that B is better." if rope is not None else ""), ""]
        header = ["A", "B", "mean A−B", "t", "p", "p (Holm)", "significant"]
        if rope is not None:
            header += ["P(A better)", "P(equivalent)", "P(B better)"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] * len(header)) + "|")
        for row in rows:
            cells = [_md_escape(row["a"]), _md_escape(row["b"]), _fmt(row.get("mean_diff")),
                     _fmt(row.get("t"), 2), _fmt_p(row.get("p_value")), _fmt_p(row.get("p_holm")),
                     "yes" if row.get("significant") else "no"]
            if rope is not None:
                b = row.get("bayes") or {}
                cells += [_fmt(b.get("p_a_better")), _fmt(b.get("p_rope")), _fmt(b.get("p_b_better"))]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    if result.per_class:
        from .runner import PER_CLASS_METRICS

        lines += ["## Per class (one-vs-rest)", ""]
        header = ["pipeline", "class"] + [METRIC_LABELS[m] for m in PER_CLASS_METRICS]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] * len(header)) + "|")
        for name in order:
            n_ok = _n_ok(result, name)
            for label, stats in result.per_class.get(name, {}).items():
                cells = [_md_escape(name), _md_escape(label)]
                cells += [_cell(stats[m], n_ok) for m in PER_CLASS_METRICS]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    others = [METRIC_LABELS[m] for m, rows in result.comparisons.items()
              if rows and m not in (metric, result.config["rank_by"])]
    if others:
        lines += [f"Paired comparisons of {', '.join(others)}: comparisons.csv.", ""]

    leak = result.leakage
    lines += ["## Leakage report", ""]
    dup = leak["duplicates"]
    if dup["status"] == "not checked":
        lines.append("- **Duplicate images**: NOT CHECKED (duplicates='none').")
    else:
        lines.append(f"- **Duplicate images** ({dup['method']}): {dup['n_clusters_with_copies']} cluster(s) "
                     f"with copies, {dup['n_samples_in_such_clusters']} images; clusters split between train "
                     f"and test: **{dup['straddling']}** ({dup['status']}).")
        if dup.get("note"):
            lines[-1] += f" Note: {dup['note']}."
    grp = leak["groups"]
    if grp["n_groups"] == 0:
        lines.append("- **Patient groups**: none given (every image is its own group, apart from duplicates).")
    else:
        lines.append(f"- **Patient groups**: {grp['n_groups']} group id(s), {grp['n_groups_with_several_samples']} "
                     f"with several images; groups split between train and test: **{grp['straddling']}** "
                     f"({grp['status']}).")
    if leak.get("splits"):
        sp = leak["splits"]
        groups = "; ".join(f"{g['n_samples']} images ({', '.join(g['members'])})" for g in sp["largest_groups"])
        lines.append(f"- **Folds**: {sp['n_independent_groups']} independent groups after merging patients and "
                     f"duplicate clusters; largest: {groups}; train/test images per fold: "
                     + ", ".join(f"{f['n_train']}/{f['n_test']}" for f in sp["fold_sizes"])
                     + f"; largest test fold / mean: {sp['max_test_over_mean']:.2f} ({sp['status']}).")
    for name, info in leak["pipelines"].items():
        samplers = ", ".join(f"{s['step']} ({s['class']})" for s in info["resampling"])
        resampling = f"{samplers} — {info['resampling_summary']}" if samplers else "none"
        prefix = ", ".join(info["stateless_prefix_computed_once"]) or "none"
        masks = info.get("uses_annotation_masks")
        masks = {True: "**yes** (test images' masks are used)", False: "no"}.get(masks, masks)
        lines.append(f"- **{_md_escape(name)}**: resampling/augmentation: {resampling}; computed once on all "
                     f"images (stateless, learns nothing): {prefix}; {info['tuning']}; uses annotation masks: "
                     f"{masks}.")
    for e in leak.get("excluded_images", []):
        lines.append(f"- **Excluded image** {_md_escape(e['name'])}: {_md_escape(e['reason'])} (left out of every "
                     "pipeline).")
    lines.append(f"- {leak['undetectable']}")
    if leak["warnings"]:
        lines += ["", "**Warnings:**"] + [f"- {w}" for w in leak["warnings"]]
    lines.append("")

    failed = [r for r in result.folds if r.get("status") == "failed"]
    if failed:
        lines += ["## Failed folds", ""]
        lines += [f"- {_md_escape(r['pipeline'])}, repeat {r['repeat']} fold {r['fold']}: "
                  f"{_md_escape(r['error'])}" for r in failed]
        lines.append("")
    versions = ", ".join(f"{k} {v}" for k, v in result.versions.items() if k != "platform")
    lines += ["## Environment", "", f"{versions}; {result.versions.get('platform', '')}.", ""]
    return "\n".join(lines)


def write_reports(result, out_dir):
    """Write ``folds.csv``, ``summary.csv``, ``per_class.csv``, ``comparisons.csv`` and ``summary.md``.

    Returns the paths written (plus ``results.json`` and ``folds.jsonl``, which the runner writes).
    """
    out_dir = Path(out_dir)
    files = []

    path = out_dir / "folds.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["pipeline", "repeat", "fold", "status", "n_train", "n_test", *METRIC_NAMES,
                         "fit_s", "predict_s", "score_kind", "best_params", "error"])
        for r in result.folds:
            ok = r.get("status") == "ok"
            writer.writerow([
                r["pipeline"], r["repeat"], r["fold"], r.get("status"), r["n_train"], r["n_test"],
                *[("" if not ok or r["metrics"].get(m) is None else repr(float(r["metrics"][m])))
                  for m in METRIC_NAMES],
                repr(r["time"]["fit_s"]) if ok else "", repr(r["time"]["predict_s"]) if ok else "",
                r.get("score_kind") or "", json.dumps(r.get("best_params")) if r.get("best_params") else "",
                r.get("error", ""),
            ])
    files.append(str(path))

    path = out_dir / "summary.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["pipeline", "metric", "mean", "std", "ci_low", "ci_high", "n_folds", "n_missing",
                         "confidence", "ci_method"])
        for name in result.ranking():
            for m in METRIC_NAMES:
                s = result.summary[name][m]
                writer.writerow([name, m, *[_csv_num(s[k]) for k in ("mean", "std", "ci_low", "ci_high")],
                                 s["n"], s["n_missing"], s["confidence"], s["method"]])
    files.append(str(path))

    path = out_dir / "per_class.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["pipeline", "class", "metric", "mean", "std", "ci_low", "ci_high", "n_folds", "n_missing"])
        for name in result.ranking():
            for label, stats in result.per_class.get(name, {}).items():
                for m, s in stats.items():
                    writer.writerow([name, label, m, *[_csv_num(s[k]) for k in ("mean", "std", "ci_low", "ci_high")],
                                     s["n"], s["n_missing"]])
    files.append(str(path))

    path = out_dir / "comparisons.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["metric", "a", "b", "mean_diff", "t", "df", "p_value", "p_holm", "significant",
                         "p_a_better", "p_rope", "p_b_better", "test"])
        for metric, rows in result.comparisons.items():
            for row in rows:
                b = row.get("bayes") or {}
                writer.writerow([metric, row["a"], row["b"], _csv_num(row.get("mean_diff")), _csv_num(row.get("t")),
                                 row.get("df", ""), _csv_num(row.get("p_value")), _csv_num(row.get("p_holm")),
                                 row.get("significant"), _csv_num(b.get("p_a_better")), _csv_num(b.get("p_rope")),
                                 _csv_num(b.get("p_b_better")), row["test"]])
    files.append(str(path))

    path = out_dir / "summary.md"
    path.write_text(markdown_summary(result), encoding="utf-8")
    files.append(str(path))
    files.append(str(out_dir / "results.json"))
    files.append(str(out_dir / "folds.jsonl"))
    return files


def _csv_num(value):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(float(value))
