"""Report files of a benchmark run: CSV tables and the Markdown summary.

``results.json`` (everything) is written by the runner; this module writes

* ``folds.csv`` — one row per pipeline and fold: every metric, timings,
  tuned parameters;
* ``fold_metrics.csv`` — the tidy results table
  (:attr:`~featurepipe.benchmark.results.BenchmarkResult.table`): one row per
  pipeline × repeat × fold × metric, ``status`` and ``value`` (empty: undefined);
* ``summary.csv`` — one row per pipeline and metric: mean, std, CI, n;
* ``per_class.csv`` — the same per class for the one-vs-rest metrics;
* ``comparisons.csv`` — paired tests between pipelines;
* ``summary.md`` — the tables a paper needs, sorted by the chosen metric,
  with the statistics, the leakage report, links to every figure with its
  caption, and a synthetic-data warning when the dataset is generated;
* ``report.html`` — all of that in one self-contained page with sortable
  tables and the figures embedded (:mod:`featurepipe.benchmark.html`).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import NamedTuple

from ..metrics import METRIC_LABELS, METRIC_NAMES
from .html import write_html_report
from .plots import figure_caption, figure_files

__all__ = ["write_reports", "markdown_summary", "report_sections", "report_tables", "tuning_lines", "tuning_rows",
           "Table", "Cell"]


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


class Cell(NamedTuple):
    """One table cell: the ``text`` shown and the number it sorts by (``None``: not a number, sorts last)."""

    text: str
    sort_key: float | None = None


class Table(NamedTuple):
    """A report table, rendered as Markdown by :func:`markdown_summary` and as HTML by :mod:`.html`."""

    title: str | None
    intro: str | None
    header: list
    rows: list  # of lists of Cell
    intro_first: bool = True  # the intro reads before the table (False: a note below it)


def _num_key(value):
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _stat_cell(stats, n_ok):
    return Cell(_cell(stats, n_ok), _num_key(stats["mean"]) if stats["n"] else None)


def _shown_metrics(result, metric):
    shown = list(result.config["metrics"])
    if metric not in shown:
        shown.insert(0, metric)
    return shown


def report_tables(result, metric=None):
    """The tables of the report, sorted by ``metric``: fold means, pooled, confidence intervals, comparisons, per class.

    Returns a list of :class:`Table`; every number cell carries its value as ``sort_key``
    (the mean for ``mean ± std`` cells) so that an HTML table can be sorted by it.
    """
    metric = metric or result.config["rank_by"]
    if metric not in METRIC_NAMES:
        raise ValueError(f"metric must be one of {list(METRIC_NAMES)}; got {metric!r}")
    shown = _shown_metrics(result, metric)
    cv = result.config["cv"]
    n_folds_total = cv["n_splits"] * cv["n_repeats"]
    order = result.ranking(metric)
    tables = []

    header = ["#", "pipeline"] + [METRIC_LABELS[m] for m in shown] + [
        "preprocess ms/img", "features ms/img", "fit s/fold", "predict ms/img", "total s", "folds"]
    rows = []
    for rank, name in enumerate(order, 1):
        n_ok = _n_ok(result, name)
        t = result.timings[name]
        rows.append([Cell(str(rank), rank), Cell(name)] + [_stat_cell(result.summary[name][m], n_ok) for m in shown]
                    + [Cell(_ms(t["preprocess_ms_per_image"]), _num_key(t["preprocess_ms_per_image"])),
                       Cell(_ms(t["features_ms_per_image"]), _num_key(t["features_ms_per_image"])),
                       Cell(_s(t["fit_s_per_fold"]), _num_key(t["fit_s_per_fold"])),
                       Cell(_ms(t["predict_ms_per_image"]), _num_key(t["predict_ms_per_image"])),
                       Cell(_s(t["total_s"]), _num_key(t["total_s"])), Cell(f"{n_ok}/{n_folds_total}", n_ok)])
    tables.append(Table(None, (
        "Times (wall clock): *preprocess* runs the image steps of the stateless prefix and "
        "*features* its feature extractors, each once per image for the whole run; a pipeline whose "
        "features were already computed by an earlier one (same extractor, same images) reads them "
        "from the cache and shows almost no feature time. *fit* is per outer fold and includes inner "
        "tuning for nested CV; *predict* covers prediction and scores of the test part."), header, rows,
        intro_first=False))

    if result.pooled:
        header = ["pipeline", "predictions"] + [METRIC_LABELS[m] for m in shown] + ["confusion matrix (rows: true)"]
        rows = []
        for name in order:
            p = result.pooled.get(name) or {}
            if not p.get("n_predictions"):
                rows.append([Cell(name), Cell("0", 0)] + [Cell("n/a")] * (len(header) - 2))
                continue
            cm = "; ".join(f"{label}: {row}" for label, row in zip(p["labels"], p["confusion_matrix"]))
            rows.append([Cell(name), Cell(str(p["n_predictions"]), p["n_predictions"])]
                        + [Cell(_fmt(p["metrics"].get(m)), _num_key(p["metrics"].get(m))) for m in shown]
                        + [Cell(cm)])
        tables.append(Table(
            "Pooled out-of-fold predictions",
            "All test predictions of the finished folds pooled into one set (each image counted once per "
            "repeat): one confusion matrix and one ROC-AUC per pipeline, beside the fold means above. "
            "Scores of different fold models are ranked together (comparable for calibrated probabilities).",
            header, rows))

    header = ["pipeline"] + [METRIC_LABELS[m] for m in shown]
    rows = []
    for name in order:
        row = [Cell(name)]
        for m in shown:
            s = result.summary[name][m]
            row.append(Cell(f"[{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}]", _num_key(s["ci_low"])))
        rows.append(row)
    tables.append(Table(f"{int(round(100 * result.config['confidence']))}% confidence intervals", None, header, rows))

    for cmp_metric, cmp_rows in result.comparisons.items():
        if not cmp_rows or cmp_metric != metric and cmp_metric != result.config["rank_by"]:
            continue  # the other metrics' comparisons are in comparisons.csv and results.json
        rope = result.config.get("rope")
        intro = (f"{cmp_rows[0]['test']}; p-values Holm-adjusted over all {cmp_rows[0]['n_pairs']} pairs "
                 "(family-wise α = 0.05)."
                 + (f" Bayesian correlated t-test (Benavoli et al. 2017) with a region of practical "
                    f"equivalence of ±{rope}: posterior probabilities that A is better, that they are "
                    "practically equivalent, that B is better." if rope is not None else ""))
        header = ["A", "B", "mean A−B", "t", "p", "p (Holm)", "significant"]
        if rope is not None:
            header += ["P(A better)", "P(equivalent)", "P(B better)"]
        rows = []
        for row in cmp_rows:
            cells = [Cell(row["a"]), Cell(row["b"]), Cell(_fmt(row.get("mean_diff")), _num_key(row.get("mean_diff"))),
                     Cell(_fmt(row.get("t"), 2), _num_key(row.get("t"))),
                     Cell(_fmt_p(row.get("p_value")), _num_key(row.get("p_value"))),
                     Cell(_fmt_p(row.get("p_holm")), _num_key(row.get("p_holm"))),
                     Cell("yes" if row.get("significant") else "no")]
            if rope is not None:
                b = row.get("bayes") or {}
                cells += [Cell(_fmt(b.get(k)), _num_key(b.get(k))) for k in ("p_a_better", "p_rope", "p_b_better")]
            rows.append(cells)
        tables.append(Table(f"Paired comparisons: {METRIC_LABELS[cmp_metric]}", intro, header, rows))

    if result.per_class:
        # The one-vs-rest metrics the result holds, in its order (the runner decides which).
        per_class_metrics = next((list(stats) for by_label in result.per_class.values()
                                  for stats in by_label.values()), [])
        header = ["pipeline", "class"] + [METRIC_LABELS[m] for m in per_class_metrics]
        rows = []
        for name in order:
            n_ok = _n_ok(result, name)
            for label, stats in result.per_class.get(name, {}).items():
                rows.append([Cell(name), Cell(str(label))] + [_stat_cell(stats[m], n_ok) for m in per_class_metrics])
        tables.append(Table("Per class (one-vs-rest)", None, header, rows))
    return tables


def description_lines(result, metric=None):
    """The Markdown paragraphs describing the data, the splits and the table cells (synthetic-data warning first)."""
    metric = metric or result.config["rank_by"]
    ds = result.dataset
    cv = result.config["cv"]
    lines = []
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
    notes = {name: info["backbone_note"] for name, info in result.pipelines.items() if info.get("backbone_note")}
    if notes:
        lines.append("- **Backbones**: " + "; ".join(f"{_md_escape(name)}: {_md_escape(note)}"
                                                    for name, note in notes.items()) + ".")
    if ds.get("skipped"):
        lines.append(f"- **Skipped files**: {len(ds['skipped'])} (listed in results.json).")
    if ds.get("excluded"):
        lines.append(f"- **Excluded images**: {len(ds['excluded'])} could not be processed and were left out of "
                     "every pipeline alike (all pipelines are compared on the same images): "
                     + "; ".join(f"{_md_escape(e['name'])} ({_md_escape(e['reason'])})" for e in ds["excluded"]) + ".")
    return lines


def leakage_lines(result):
    """The leakage report as Markdown lines (bullets, then the warnings)."""
    leak = result.leakage
    lines = []
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
    return lines


def tuning_rows(result):
    """``(pipeline, repeat, fold, chosen parameters, inner CV score)`` of every tuned fold, sorted; 1-based
    repeat and fold numbers, the parameters as sorted JSON, the score ``None`` when not recorded."""
    return [(r["pipeline"], r["repeat"] + 1, r["fold"] + 1, json.dumps(r["best_params"], sort_keys=True),
             r.get("inner_best_score"))
            for r in sorted(result.folds, key=lambda r: (r["pipeline"], r["repeat"], r["fold"]))
            if r.get("status") == "ok" and r.get("best_params")]


def tuning_lines(result):
    """The hyper-parameters nested CV chose in every fold, as Markdown lines (empty when nothing was tuned)."""
    rows = tuning_rows(result)
    if not rows:
        return []
    lines = [f"Nested cross-validation: each outer fold's training part was searched with "
             f"{result.config['inner_cv']}-fold inner CV scored by {result.config['inner_scoring']}; the best "
             "parameters were refitted on the whole training part. Grids: "
             + "; ".join(f"{_md_escape(name)} `{json.dumps(info['param_grid'])}`"
                         for name, info in result.pipelines.items() if info.get("param_grid")) + ".", "",
             "| pipeline | repeat | fold | chosen parameters | inner CV score |", "|---|---|---|---|---|"]
    lines += [f"| {_md_escape(name)} | {repeat} | {fold} | `{_md_escape(params)}` | {_fmt(score)} |"
              for name, repeat, fold, params, score in rows]
    return lines


def failed_fold_lines(result):
    """One Markdown bullet per failed fold."""
    return [f"- {_md_escape(r['pipeline'])}, repeat {r['repeat']} fold {r['fold']}: {_md_escape(r['error'])}"
            for r in result.folds if r.get("status") == "failed"]


def environment_line(result):
    """Package versions and platform, one line."""
    versions = ", ".join(f"{k} {v}" for k, v in result.versions.items() if k != "platform")
    return f"{versions}; {result.versions.get('platform', '')}."


def markdown_summary(result, metric=None):
    """The Markdown report of a :class:`~featurepipe.benchmark.BenchmarkResult`, sorted by ``metric``."""
    metric = metric or result.config["rank_by"]
    if metric not in METRIC_NAMES:
        raise ValueError(f"metric must be one of {list(METRIC_NAMES)}; got {metric!r}")
    lines = [f"# Benchmark on {result.dataset['name']}", ""] + description_lines(result, metric) + [""]
    for table in report_tables(result, metric):
        if table.title:
            lines += [f"## {table.title}", ""]
        if table.intro and table.intro_first:
            lines += [table.intro, ""]
        lines.append("| " + " | ".join(table.header) + " |")
        lines.append("|" + "|".join(["---"] * len(table.header)) + "|")
        lines += ["| " + " | ".join(_md_escape(cell.text) for cell in row) + " |" for row in table.rows]
        lines.append("")
        if table.intro and not table.intro_first:
            lines += [table.intro, ""]

    others = [METRIC_LABELS[m] for m, rows in result.comparisons.items()
              if rows and m not in (metric, result.config["rank_by"])]
    if others:
        lines += [f"Paired comparisons of {', '.join(others)}: comparisons.csv.", ""]

    figures = figure_files(result.output_dir) if result.output_dir is not None else []
    if figures:
        lines += ["## Figures", "", "Every figure also as SVG (vector) where listed; report.html embeds them all "
                  "with these captions.", ""]
        for png in figures:
            svg = png.with_suffix(".svg")
            twin = f" ([SVG]({svg.name}))" if svg.is_file() else ""
            lines.append(f"- [{png.name}]({png.name}){twin}: {figure_caption(result, png.name)}")
        lines.append("")
    tuning = tuning_lines(result)
    if tuning:
        lines += ["## Hyper-parameters chosen per fold", ""] + tuning + [""]
    lines += ["## Leakage report", ""] + leakage_lines(result) + [""]
    failed = failed_fold_lines(result)
    if failed:
        lines += ["## Failed folds", ""] + failed + [""]
    lines += ["## Environment", "", environment_line(result), ""]
    return "\n".join(lines)


def report_sections(result, metric=None):
    """What ``summary.md`` and ``report.html`` both show, computed once here and rendered by each.

    Returns ``{"metric", "description", "tables", "tuning", "leakage", "failed", "environment"}``: the
    sort metric (default the run's ``rank_by``), the description lines, :func:`report_tables`, the
    chosen parameters per fold (:func:`tuning_rows`), the leakage report lines, the failed-fold lines
    and the environment line.
    """
    metric = metric or result.config["rank_by"]
    if metric not in METRIC_NAMES:
        raise ValueError(f"metric must be one of {list(METRIC_NAMES)}; got {metric!r}")
    return {"metric": metric, "description": description_lines(result, metric),
            "tables": report_tables(result, metric), "tuning": tuning_rows(result), "leakage": leakage_lines(result),
            "failed": failed_fold_lines(result), "environment": environment_line(result)}


def write_reports(result, out_dir):
    """Write ``folds.csv``, ``fold_metrics.csv``, ``summary.csv``, ``per_class.csv``, ``comparisons.csv``,
    ``summary.md`` and ``report.html``.

    The figures already in ``out_dir`` (:func:`~featurepipe.benchmark.plots.write_plots`, run first) are
    linked from ``summary.md`` and embedded in ``report.html``; to re-render both from a finished run:
    ``write_reports(BenchmarkResult.load(folder), folder)``.

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

    path = out_dir / "fold_metrics.csv"
    result.table.to_csv(path, index=False)  # the tidy table: one row per pipeline × repeat × fold × metric
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
    files.append(write_html_report(result, report_sections(result), out_dir))
    files.append(str(out_dir / "results.json"))
    files.append(str(out_dir / "folds.jsonl"))
    return files


def _csv_num(value):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(float(value))
